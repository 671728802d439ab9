//! Connectors: one folder per vendor, one trait for all.
//!
//! A connector turns the vendor's API into [`Change`]s (polling, fetch by id) and applies
//! [`PushRecord`]s with per-record outcomes. Errors say what the caller does next.
//! Only a connector's `wire.rs` knows vendor JSON.

pub mod field_map;
pub mod http;
pub mod hubspot;
pub mod salesforce;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

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

/// API calls made by one connector, for `status`, the demo summary and benchmarks.
#[derive(Debug, Default)]
pub struct ApiCounters {
    reads: AtomicU64,
    writes: AtomicU64,
    errors: AtomicU64,
}

impl ApiCounters {
    pub fn read(&self) {
        self.reads.fetch_add(1, Ordering::Relaxed);
    }
    pub fn write(&self) {
        self.writes.fetch_add(1, Ordering::Relaxed);
    }
    pub fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }
    pub fn snapshot(&self) -> ApiCallCounts {
        ApiCallCounts {
            reads: self.reads.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
        }
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApiCallCounts {
    pub reads: u64,
    pub writes: u64,
    pub errors: u64,
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
