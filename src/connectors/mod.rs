//! Connectors: one folder per vendor, one trait for all.
//!
//! A connector turns the vendor's API into [`Change`]s (polling, fetch by id) and applies
//! [`PushRecord`]s with per-record outcomes. Errors say what the caller does next.
//! Only a connector's `wire.rs` knows vendor JSON.

pub mod closed_loop;
pub mod consent;
pub mod contract_props;
pub mod erase;
pub mod field_map;
pub mod http;
pub mod hubspot;
pub mod salesforce;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use crate::domain::{Change, ConnectorKind, PushOutcome, PushRecord, RemoteId};

pub use field_map::FieldMap;

/// A configuration problem, naming the key at fault (`systems.crm.client_id: missing`).
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{key}: {problem}")]
pub struct KeyError {
    pub key: String,
    pub problem: String,
}

impl KeyError {
    pub fn new(key: impl Into<String>, problem: impl Into<String>) -> KeyError {
        KeyError { key: key.into(), problem: problem.into() }
    }
}

/// What the caller does next when a connector call fails.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// Network trouble, 5xx, timeouts: retry with backoff.
    #[error("transient failure: {0}")]
    Transient(String),
    /// The vendor asked us to slow down; wait at least `retry_after` when given.
    #[error("rate limited (retry after {retry_after:?})")]
    RateLimited { retry_after: Option<Duration> },
    /// The vendor refused the request as a whole for good: dead-letter with this code.
    #[error("rejected by vendor: {code}: {message}")]
    Rejected { code: String, message: String },
    /// Credentials refused even after one re-authentication: stop this system and alert.
    #[error("authentication failed: {0}")]
    Auth(String),
    /// Our configuration is wrong (bad URL, unknown field): an operator must fix it.
    #[error("configuration error: {0}")]
    Config(String),
}

impl ConnectorError {
    /// Whether retrying the same call later can succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, ConnectorError::Transient(_) | ConnectorError::RateLimited { .. })
    }

    /// A bounded error code for ledger rows and metric labels.
    pub fn code(&self) -> String {
        match self {
            ConnectorError::Transient(_) => "transient".into(),
            ConnectorError::RateLimited { .. } => "rate_limited".into(),
            ConnectorError::Rejected { code, .. } => code.clone(),
            ConnectorError::Auth(_) => "auth".into(),
            ConnectorError::Config(_) => "config".into(),
        }
    }
}

/// An opaque, connector-defined poll position, persisted by the ledger as text.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cursor(pub Option<String>);

/// One page of polled changes.
#[derive(Debug)]
pub struct Page {
    pub changes: Vec<Change>,
    pub next_cursor: Cursor,
    /// `Duration::ZERO` when more changes are waiting; otherwise how long to wait before the
    /// next poll.
    pub poll_again_after: Duration,
}

/// What a vendor allows per call.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Most records in one write call.
    pub push_batch_max: usize,
    /// Most ids in one fetch call.
    pub fetch_batch_max: usize,
}

/// How one vendor API call (one HTTP request, token requests included) ended, for
/// [`ApiCounters`] and the `leadsync_api_calls_total{outcome}` counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiOutcome {
    /// A 2xx reply the client could use.
    Ok,
    /// The vendor refused for rate reasons: HTTP 429, or Salesforce `403 REQUEST_LIMIT_EXCEEDED`.
    RateLimited,
    /// Anything else: other statuses, transport failures, undecodable replies.
    Error,
}

impl ApiOutcome {
    /// How a call that failed with `e` ended.
    pub fn of_error(e: &ConnectorError) -> ApiOutcome {
        match e {
            ConnectorError::RateLimited { .. } => ApiOutcome::RateLimited,
            _ => ApiOutcome::Error,
        }
    }
}

/// Sentinel for "no budget reported yet"; a real budget of `u64::MAX` calls does not occur.
const UNKNOWN: u64 = u64::MAX;

/// API calls made by one connector, for `status`, the demo summary, benchmarks and the admin
/// `/metrics` endpoint (which reads them at scrape time, so the pipeline needs no system name).
///
/// Every call is counted twice: once as a read or a write when it starts, and once by how it
/// ended ([`ApiOutcome`]), so `reads + writes == ok + rate_limited + failed` once no call is in
/// flight. All fields are atomics: recording never blocks a request.
#[derive(Debug)]
pub struct ApiCounters {
    reads: AtomicU64,
    writes: AtomicU64,
    errors: AtomicU64,
    ok: AtomicU64,
    rate_limited: AtomicU64,
    failed: AtomicU64,
    /// Last reported budget ([`UNKNOWN`] until a vendor reports one) and what came with it.
    /// The four are written one after the other, not as one unit: a reader racing a writer may
    /// mix two reports of the same vendor, which for a gauge is harmless.
    budget_remaining: AtomicU64,
    budget_limit: AtomicU64,
    /// Length of the vendor's window in ms; 0 when the budget does not roll over by itself
    /// in a known time (Salesforce's rolling 24 h).
    budget_window_ms: AtomicU64,
    /// When the budget was reported, in ms since `epoch`.
    budget_at_ms: AtomicU64,
    epoch: Instant,
}

impl Default for ApiCounters {
    fn default() -> ApiCounters {
        ApiCounters {
            reads: AtomicU64::new(0),
            writes: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            ok: AtomicU64::new(0),
            rate_limited: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            budget_remaining: AtomicU64::new(UNKNOWN),
            budget_limit: AtomicU64::new(UNKNOWN),
            budget_window_ms: AtomicU64::new(0),
            budget_at_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }
}

impl ApiCounters {
    /// A read call starts.
    pub fn read(&self) {
        self.reads.fetch_add(1, Ordering::Relaxed);
    }

    /// A write call starts.
    pub fn write(&self) {
        self.writes.fetch_add(1, Ordering::Relaxed);
    }

    /// A call failed; the same as `outcome(ApiOutcome::Error)`.
    pub fn error(&self) {
        self.outcome(ApiOutcome::Error);
    }

    /// A call ended this way. Rate-limited and failed calls also count in `errors`.
    pub fn outcome(&self, outcome: ApiOutcome) {
        let slot = match outcome {
            ApiOutcome::Ok => &self.ok,
            ApiOutcome::RateLimited => &self.rate_limited,
            ApiOutcome::Error => &self.failed,
        };
        slot.fetch_add(1, Ordering::Relaxed);
        if outcome != ApiOutcome::Ok {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The vendor reported `remaining` calls left (of `limit`, when it says). `window`: when
    /// the budget refills by itself (HubSpot's 10 s window); `None` when it does not in a known
    /// time (Salesforce's rolling 24 h).
    pub fn record_rate_limit(&self, remaining: u64, limit: Option<u64>, window: Option<Duration>) {
        let at = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX - 1);
        let window_ms = window.map_or(0, |w| u64::try_from(w.as_millis()).unwrap_or(u64::MAX));
        self.budget_at_ms.store(at, Ordering::Relaxed);
        self.budget_window_ms.store(window_ms, Ordering::Relaxed);
        self.budget_limit.store(limit.unwrap_or(UNKNOWN), Ordering::Relaxed);
        // Last, so a reader that sees a budget also sees (at worst slightly older) context.
        self.budget_remaining.store(remaining.min(UNKNOWN - 1), Ordering::Release);
    }

    /// Calls left as far as we know; `None` until a vendor has reported a budget. Once a
    /// windowed budget's window has passed with no newer report, the window has refilled: the
    /// reported limit is returned then (when known), so an idle connector does not look
    /// starved.
    pub fn rate_limit_remaining(&self) -> Option<u64> {
        let remaining = self.budget_remaining.load(Ordering::Acquire);
        if remaining == UNKNOWN {
            return None;
        }
        let window_ms = self.budget_window_ms.load(Ordering::Relaxed);
        let limit = self.budget_limit.load(Ordering::Relaxed);
        if window_ms > 0 && limit != UNKNOWN {
            let at = self.budget_at_ms.load(Ordering::Relaxed);
            let now = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
            if now.saturating_sub(at) >= window_ms {
                return Some(limit);
            }
        }
        Some(remaining)
    }

    pub fn snapshot(&self) -> ApiCallCounts {
        ApiCallCounts {
            reads: self.reads.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            ok: self.ok.load(Ordering::Relaxed),
            rate_limited: self.rate_limited.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            rate_limit_remaining: self.rate_limit_remaining(),
        }
    }
}

/// A copy of [`ApiCounters`] at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApiCallCounts {
    /// Read calls started.
    pub reads: u64,
    /// Write calls started.
    pub writes: u64,
    /// Calls that did not end [`ApiOutcome::Ok`]: `rate_limited + failed`.
    pub errors: u64,
    /// Calls that ended [`ApiOutcome::Ok`].
    pub ok: u64,
    /// Calls that ended [`ApiOutcome::RateLimited`].
    pub rate_limited: u64,
    /// Calls that ended [`ApiOutcome::Error`].
    pub failed: u64,
    /// Calls left in the vendor's budget as last reported; `None`: never reported.
    pub rate_limit_remaining: Option<u64>,
}

/// The one trait every vendor connector implements. Pipelines are generic over it; the
/// [`AnyConnector`] enum covers configuration-time choice of vendor.
pub trait Connector: Send + Sync + 'static {
    fn kind(&self) -> ConnectorKind;

    fn limits(&self) -> Limits;

    /// Changes after `cursor`, oldest first, and the cursor to continue from.
    fn poll_changes(
        &self,
        cursor: &Cursor,
    ) -> impl Future<Output = Result<Page, ConnectorError>> + Send;

    /// Current state of these records (for webhooks that carry only ids). Ids the vendor does
    /// not know are left out.
    fn fetch(
        &self,
        ids: &[RemoteId],
    ) -> impl Future<Output = Result<Vec<Change>, ConnectorError>> + Send;

    /// Apply a batch (at most `limits().push_batch_max`) and say what happened to each record.
    /// An `Err` means the whole call failed and no record's fate is known.
    fn push(
        &self,
        batch: &[PushRecord],
    ) -> impl Future<Output = Result<Vec<PushOutcome>, ConnectorError>> + Send;

    /// Authenticate and make one cheap read.
    fn healthcheck(&self) -> impl Future<Output = Result<(), ConnectorError>> + Send;

    fn counters(&self) -> Arc<ApiCounters>;
}

/// The configured connector, whichever vendor it is.
pub enum AnyConnector {
    Salesforce(salesforce::SalesforceConnector),
    Hubspot(hubspot::HubspotConnector),
}

macro_rules! delegate {
    ($self:ident, $c:ident => $e:expr) => {
        match $self {
            AnyConnector::Salesforce($c) => $e,
            AnyConnector::Hubspot($c) => $e,
        }
    };
}

impl Connector for AnyConnector {
    fn kind(&self) -> ConnectorKind {
        delegate!(self, c => c.kind())
    }
    fn limits(&self) -> Limits {
        delegate!(self, c => c.limits())
    }
    async fn poll_changes(&self, cursor: &Cursor) -> Result<Page, ConnectorError> {
        delegate!(self, c => c.poll_changes(cursor).await)
    }
    async fn fetch(&self, ids: &[RemoteId]) -> Result<Vec<Change>, ConnectorError> {
        delegate!(self, c => c.fetch(ids).await)
    }
    async fn push(&self, batch: &[PushRecord]) -> Result<Vec<PushOutcome>, ConnectorError> {
        delegate!(self, c => c.push(batch).await)
    }
    async fn healthcheck(&self) -> Result<(), ConnectorError> {
        delegate!(self, c => c.healthcheck().await)
    }
    fn counters(&self) -> Arc<ApiCounters> {
        delegate!(self, c => c.counters())
    }
}

/// Resolve a secret named in config: from an environment variable (`<key>_env`) or a file
/// (`<key>_file`, e.g. a systemd credential). Never from the TOML itself. The value is
/// trimmed of a trailing newline and never printed.
///
/// # Errors
/// Names the config key when neither source is given, both are, or the source is empty or
/// unreadable.
pub fn resolve_secret(
    key: &str,
    env_name: Option<&str>,
    file: Option<&std::path::Path>,
    env: &std::collections::HashMap<String, String>,
) -> Result<secrecy::SecretString, KeyError> {
    let value = match (env_name, file) {
        (Some(_), Some(_)) => {
            return Err(KeyError::new(
                key,
                format!("give either {key}_env or {key}_file, not both"),
            ));
        }
        (None, None) => {
            return Err(KeyError::new(
                format!("{key}_env"),
                format!("missing: set {key}_env (an environment variable name) or {key}_file"),
            ));
        }
        (Some(var), None) => env.get(var).cloned().ok_or_else(|| {
            KeyError::new(format!("{key}_env"), format!("environment variable {var} is not set"))
        })?,
        (None, Some(path)) => std::fs::read_to_string(path).map_err(|e| {
            KeyError::new(format!("{key}_file"), format!("cannot read {}: {e}", path.display()))
        })?,
    };
    let value = value.trim_end_matches(['\r', '\n']).to_string();
    if value.is_empty() {
        return Err(KeyError::new(key, "secret is empty"));
    }
    Ok(secrecy::SecretString::from(value))
}
