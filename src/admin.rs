//! The admin endpoint: liveness, readiness and Prometheus metrics on their own listener
//! (default [`DEFAULT_ADDR`], loopback only), apart from the webhook port that vendors reach.
//!
//! - `GET /healthz`: 200 `ok` while the process serves requests at all.
//! - `GET /readyz`: 200 or 503 with a JSON body naming each check; ready means the ledger takes
//!   commits and every system was polled successfully within the configured age.
//! - `GET /metrics`: Prometheus text, after refreshing the ledger-derived gauges and publishing
//!   the connectors' API call counters and rate-limit budgets.
//!
//! The checks come from a [`ReadinessSource`]; [`LedgerSource`] is the real one. Checks run on
//! a blocking thread (SQLite is synchronous) under a time limit, one at a time, so a stuck
//! ledger makes probes fail fast instead of piling up threads.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use chrono::Utc;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::{Map, Value, json};
use tokio::sync::Semaphore;

use crate::connectors::{ApiCallCounts, ApiCounters};
use crate::ledger::Ledger;
use crate::metrics::{self, GaugeSample};
use crate::shutdown::Shutdown;

/// Where the admin endpoint listens unless configured otherwise (9464: the Prometheus
/// exporter convention).
pub const DEFAULT_ADDR: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 9464));

/// The content type of Prometheus text exposition format 0.0.4.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// How long one readiness or gauge check may take before it counts as failed.
const DEFAULT_CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// What the admin endpoint asks the running daemon. Methods block (they may run SQL); the
/// endpoint calls them on a blocking thread.
pub trait ReadinessSource: Send + Sync + 'static {
    /// Whether the ledger takes commits; the error is a short message without PII.
    ///
    /// # Errors
    /// The ledger cannot be written.
    fn ledger_writable(&self) -> Result<(), String>;

    /// Each configured system with the time since its last successful poll (`None`: never).
    ///
    /// # Errors
    /// The list cannot be read; readiness then fails on the ledger check.
    fn systems(&self) -> Result<Vec<(String, Option<Duration>)>, String>;

    /// Gauge values to set just before a scrape is rendered.
    fn gauges(&self) -> Vec<GaugeSample>;

    /// Each connector's API call counts and rate-limit budget, by system name, published just
    /// before a scrape is rendered. Unlike the other methods this one must not block (it reads
    /// atomics): it runs on the async thread, so a stuck ledger does not hold these back.
    fn api_calls(&self) -> Vec<(String, ApiCallCounts)> {
        Vec::new()
    }
}

/// The real source: everything comes from the ledger, except API call counts, which come
/// from the connectors ([`LedgerSource::with_api_counters`]).
#[derive(Debug, Clone)]
pub struct LedgerSource {
    ledger: Arc<Ledger>,
    api: Vec<(String, Arc<ApiCounters>)>,
}

impl LedgerSource {
    pub fn new(ledger: Arc<Ledger>) -> LedgerSource {
        LedgerSource { ledger, api: Vec::new() }
    }

    /// Also publish these connectors' API counters (system name, `Connector::counters()`) on
    /// every scrape.
    #[must_use]
    pub fn with_api_counters(mut self, counters: Vec<(String, Arc<ApiCounters>)>) -> LedgerSource {
        self.api = counters;
        self
    }
}

impl ReadinessSource for LedgerSource {
    fn ledger_writable(&self) -> Result<(), String> {
        self.ledger.writable_check().map_err(|e| e.to_string())
    }

    fn systems(&self) -> Result<Vec<(String, Option<Duration>)>, String> {
        let gauges = self.ledger.gauges().map_err(|e| e.to_string())?;
        let now = Utc::now();
        Ok(gauges
            .systems
            .into_iter()
            .map(|(name, g)| {
                // A poll stamped in the future (clock step) counts as just now.
                let age = g.last_poll_ok_at.map(|at| (now - at).to_std().unwrap_or_default());
                (name, age)
            })
            .collect())
    }

    fn gauges(&self) -> Vec<GaugeSample> {
        match self.ledger.gauges() {
            Ok(g) => metrics::ledger_gauges(&g),
            Err(e) => {
                tracing::warn!(error = %e, "ledger gauges not refreshed");
                Vec::new()
            }
        }
    }
    fn api_calls(&self) -> Vec<(String, ApiCallCounts)> {
        self.api.iter().map(|(name, c)| (name.clone(), c.snapshot())).collect()
    }
}

/// Shared state of the admin router.
#[derive(Clone)]
pub struct AdminState {
    source: Arc<dyn ReadinessSource>,
    metrics: PrometheusHandle,
    max_poll_age: Duration,
    check_timeout: Duration,
    // One blocking check per endpoint at a time; later requests wait (within the time limit).
    ready_gate: Arc<Semaphore>,
    gauges_gate: Arc<Semaphore>,
}

impl std::fmt::Debug for AdminState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminState")
            .field("max_poll_age", &self.max_poll_age)
            .field("check_timeout", &self.check_timeout)
            .finish_non_exhaustive()
    }
}

impl AdminState {
    /// `max_poll_age`: a system is ready while its last good poll is at most this old.
    pub fn new(
        source: Arc<dyn ReadinessSource>,
        metrics: PrometheusHandle,
        max_poll_age: Duration,
    ) -> AdminState {
        AdminState {
            source,
            metrics,
            max_poll_age,
            check_timeout: DEFAULT_CHECK_TIMEOUT,
            ready_gate: Arc::new(Semaphore::new(1)),
            gauges_gate: Arc::new(Semaphore::new(1)),
        }
    }

    /// How long a check may take before it counts as failed (default 2 s).
    #[must_use]
    pub fn with_check_timeout(mut self, timeout: Duration) -> AdminState {
        self.check_timeout = timeout;
        self
    }

    /// Run `f` against the source on a blocking thread, at most one per `gate` at a time,
    /// within the time limit (waiting for the gate included).
    async fn check<T, F>(&self, gate: &Arc<Semaphore>, f: F) -> Result<T, String>
    where
        T: Send + 'static,
        F: FnOnce(&dyn ReadinessSource) -> T + Send + 'static,
    {
        let source = Arc::clone(&self.source);
        let gate = Arc::clone(gate);
        let run = async move {
            let permit = gate.acquire_owned().await.map_err(|e| e.to_string())?;
            tokio::task::spawn_blocking(move || {
                // The permit lives as long as the blocking call, even past a timeout, so a
                // stuck source holds one thread, not one per probe.
                let out = f(source.as_ref());
                drop(permit);
                out
            })
            .await
            .map_err(|e| format!("check failed: {e}"))
        };
        match tokio::time::timeout(self.check_timeout, run).await {
            Ok(out) => out,
            Err(_) => Err(format!("check timed out after {:?}", self.check_timeout)),
        }
    }
}

/// The admin routes.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(state)
}

/// Serve the admin routes on `listener` until `shutdown` fires, then finish open requests.
///
/// # Errors
/// The listener fails.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AdminState,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(%addr, "admin endpoint listening");
    }
    let mut shutdown = shutdown;
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { shutdown.wait().await })
        .await
}

async fn healthz() -> &'static str {
    "ok"
}

type Checked = (Result<(), String>, Result<Vec<(String, Option<Duration>)>, String>);

async fn readyz(State(state): State<AdminState>) -> Response {
    let checked: Result<Checked, String> =
        state.check(&state.ready_gate, |s| (s.ledger_writable(), s.systems())).await;
    let (ledger, systems) = match checked {
        Ok((ledger, systems)) => (ledger, systems),
        Err(e) => (Err(e.clone()), Err(e)),
    };
    let mut ready = true;
    let mut checks = Map::new();
    // A failure to list systems is a failure to read the ledger: report it there.
    let ledger = ledger.and(systems.as_ref().map(|_| ()).map_err(Clone::clone));
    let detail = match &ledger {
        Ok(()) => "writable".to_string(),
        Err(e) => {
            ready = false;
            tracing::warn!(error = %e, "readiness: ledger check failed");
            e.clone()
        }
    };
    checks.insert("ledger".into(), json!({ "ok": ledger.is_ok(), "detail": detail }));
    for (name, age) in systems.unwrap_or_default() {
        let ok = age.is_some_and(|a| a <= state.max_poll_age);
        ready &= ok;
        let secs = age.map(|a| a.as_secs());
        checks.insert(name, json!({ "ok": ok, "last_poll_ok_secs_ago": secs }));
    }
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    let body = json!({ "ready": ready, "checks": Value::Object(checks) });
    (status, axum::Json(body)).into_response()
}

async fn metrics_text(State(state): State<AdminState>) -> Response {
    for (system, counts) in state.source.api_calls() {
        metrics::publish_api_calls(&system, &counts);
    }
    match state.check(&state.gauges_gate, |s| s.gauges()).await {
        Ok(samples) => samples.iter().for_each(GaugeSample::set),
        // Still render: counters are fresh, and stale gauges beat a failed scrape.
        Err(e) => tracing::warn!(error = %e, "gauges not refreshed for this scrape"),
    }
    ([(header::CONTENT_TYPE, PROMETHEUS_CONTENT_TYPE)], state.metrics.render()).into_response()
}

#[cfg(test)]
mod tests;
