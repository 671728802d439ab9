//! Every metric leadsync exports, by name, and the one process-wide Prometheus recorder.
//!
//! Names follow `leadsync_<noun>_<unit>` with `_total` on counters (Prometheus naming, Vector's
//! spec). Labels are bounded: [`CONNECTOR`] (the configured system name), [`OUTCOME`] and
//! [`ERROR_CODE`]; never record ids, emails or field values.
//!
//! The recorder is installed once per process ([`install`]) and rendered by the admin
//! endpoint; the exporter's own HTTP listener is not used, so there is one admin port.
//! Queue gauges are not pushed by the pipeline: the admin endpoint reads them from the ledger
//! at scrape time ([`ledger_gauges`]), so they are right even after a restart.

use std::sync::OnceLock;
use std::time::Duration;

use metrics::Unit;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::ledger::Gauges;

/// Counter: webhook or poll events accepted into the inbox. Labels: connector.
pub const EVENTS_RECEIVED: &str = "leadsync_events_received_total";
/// Counter: events refused (bad signature, unparsable, unknown system). Labels: connector,
/// error_code.
pub const EVENTS_REJECTED: &str = "leadsync_events_rejected_total";
/// Gauge: inbox changes not reconciled yet. Labels: connector.
pub const INBOX_PENDING: &str = "leadsync_inbox_pending_records";
/// Gauge: outbox writes waiting to be pushed. Labels: connector.
pub const OUTBOX_PENDING: &str = "leadsync_outbox_pending_records";
/// Gauge: outbox writes given up on (dead letters). Labels: connector.
pub const DEAD_RECORDS: &str = "leadsync_outbox_dead_records";
/// Histogram: wall time of one push batch to a vendor. Labels: connector.
pub const PUSH_DURATION: &str = "leadsync_push_duration_seconds";
/// Counter: vendor API calls. Labels: connector, outcome.
pub const API_CALLS: &str = "leadsync_api_calls_total";
/// Gauge: calls left in the vendor's current rate-limit window, as last reported. Labels:
/// connector.
pub const RATE_LIMIT_REMAINING: &str = "leadsync_rate_limit_remaining_calls";
/// Gauge: unix time of the last successful poll. Labels: connector.
pub const LAST_POLL_SUCCESS: &str = "leadsync_last_poll_success_timestamp_seconds";
/// Counter: records read from a vendor by polling. Labels: connector.
pub const RECORDS_POLLED: &str = "leadsync_records_polled_total";
/// Counter: records written to a vendor, per outcome. Labels: connector, outcome.
pub const RECORDS_PUSHED: &str = "leadsync_records_pushed_total";

/// Every metric name, for tests and docs.
pub const ALL: &[&str] = &[
    EVENTS_RECEIVED,
    EVENTS_REJECTED,
    INBOX_PENDING,
    OUTBOX_PENDING,
    DEAD_RECORDS,
    PUSH_DURATION,
    API_CALLS,
    RATE_LIMIT_REMAINING,
    LAST_POLL_SUCCESS,
    RECORDS_POLLED,
    RECORDS_PUSHED,
];

/// Label: the configured system name (`crm`, `marketing`), bounded by the config.
pub const CONNECTOR: &str = "connector";
/// Label: one of the `OUTCOME_*` values.
pub const OUTCOME: &str = "outcome";
/// Label: a bounded error code such as `http_429` or `bad_signature`.
pub const ERROR_CODE: &str = "error_code";

pub const OUTCOME_OK: &str = "ok";
pub const OUTCOME_RATE_LIMITED: &str = "rate_limited";
pub const OUTCOME_RETRY: &str = "retry";
pub const OUTCOME_REJECTED: &str = "rejected";
pub const OUTCOME_ERROR: &str = "error";

/// Push batches take from tens of milliseconds to the vendors' timeouts.
const PUSH_BUCKETS: &[f64] = &[0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// How often histogram samples are folded in when nobody scrapes, so memory stays bounded.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, thiserror::Error)]
pub enum MetricsError {
    #[error("cannot install the metrics recorder: {0}")]
    Install(String),
}

static HANDLE: OnceLock<Result<PrometheusHandle, MetricsError>> = OnceLock::new();

/// Install the process-wide Prometheus recorder and return a handle to render it. Later calls
/// return the same handle (tests start many apps in one process).
///
/// # Errors
/// Another metrics recorder was installed first; every later call then fails the same way.
pub fn install() -> Result<PrometheusHandle, MetricsError> {
    HANDLE.get_or_init(build_and_install).clone()
}

fn build_and_install() -> Result<PrometheusHandle, MetricsError> {
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(PUSH_DURATION.to_string()), PUSH_BUCKETS)
        .map_err(|e| MetricsError::Install(e.to_string()))?
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).map_err(|e| MetricsError::Install(e.to_string()))?;
    describe();
    let upkeep = handle.clone();
    // A plain thread: install() may run outside a tokio runtime, and the work is tiny.
    let spawned = std::thread::Builder::new().name("metrics-upkeep".into()).spawn(move || {
        loop {
            std::thread::sleep(UPKEEP_EVERY);
            upkeep.run_upkeep();
        }
    });
    if let Err(e) = spawned {
        // Rendering also folds samples in, so scrapes keep memory bounded without it.
        tracing::warn!(error = %e, "metrics upkeep thread not started");
    }
    Ok(handle)
}

fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(EVENTS_RECEIVED, Unit::Count, "Events accepted into the inbox");
    describe_counter!(EVENTS_REJECTED, Unit::Count, "Events refused, by error code");
    describe_gauge!(INBOX_PENDING, Unit::Count, "Inbox changes not reconciled yet");
    describe_gauge!(OUTBOX_PENDING, Unit::Count, "Outbox writes waiting to be pushed");
    describe_gauge!(DEAD_RECORDS, Unit::Count, "Outbox writes given up on");
    describe_histogram!(PUSH_DURATION, Unit::Seconds, "Wall time of one push batch");
    describe_counter!(API_CALLS, Unit::Count, "Vendor API calls, by outcome");
    describe_gauge!(RATE_LIMIT_REMAINING, Unit::Count, "Calls left in the rate-limit window");
    describe_gauge!(LAST_POLL_SUCCESS, Unit::Seconds, "Unix time of the last good poll");
    describe_counter!(RECORDS_POLLED, Unit::Count, "Records read by polling");
    describe_counter!(RECORDS_PUSHED, Unit::Count, "Records written, by outcome");
}

/// One gauge value with its labels, as a readiness source reports it at scrape time.
#[derive(Debug, Clone, PartialEq)]
pub struct GaugeSample {
    pub name: &'static str,
    pub labels: Vec<(&'static str, String)>,
    pub value: f64,
}

impl GaugeSample {
    /// A gauge labelled with one connector.
    pub fn for_connector(name: &'static str, connector: &str, value: f64) -> GaugeSample {
        GaugeSample { name, labels: vec![(CONNECTOR, connector.to_string())], value }
    }

    /// Set this value on the installed recorder (a no-op when none is installed).
    pub fn set(&self) {
        metrics::gauge!(self.name, &self.labels).set(self.value);
    }
}

/// The queue and last-poll gauges of every system, from the ledger's counts.
#[allow(clippy::cast_precision_loss, reason = "counts far below 2^53")]
pub fn ledger_gauges(g: &Gauges) -> Vec<GaugeSample> {
    let mut out = Vec::with_capacity(g.systems.len() * 4);
    for (system, s) in &g.systems {
        out.push(GaugeSample::for_connector(INBOX_PENDING, system, s.inbox_pending as f64));
        out.push(GaugeSample::for_connector(OUTBOX_PENDING, system, s.outbox_pending as f64));
        out.push(GaugeSample::for_connector(DEAD_RECORDS, system, s.dead as f64));
        if let Some(at) = s.last_poll_ok_at {
            out.push(GaugeSample::for_connector(LAST_POLL_SUCCESS, system, at.timestamp() as f64));
        }
    }
    out
}

/// An event was accepted into the inbox.
pub fn event_received(connector: &str) {
    metrics::counter!(EVENTS_RECEIVED, CONNECTOR => connector.to_string()).increment(1);
}

/// An event was refused; `error_code` must come from a bounded set.
pub fn event_rejected(connector: &str, error_code: &'static str) {
    metrics::counter!(EVENTS_REJECTED, CONNECTOR => connector.to_string(), ERROR_CODE => error_code)
        .increment(1);
}

/// One vendor API call finished with `outcome` (an `OUTCOME_*` value).
pub fn api_call(connector: &str, outcome: &'static str) {
    metrics::counter!(API_CALLS, CONNECTOR => connector.to_string(), OUTCOME => outcome)
        .increment(1);
}

/// One push batch took `elapsed`.
pub fn push_duration(connector: &str, elapsed: Duration) {
    metrics::histogram!(PUSH_DURATION, CONNECTOR => connector.to_string())
        .record(elapsed.as_secs_f64());
}

/// The vendor reported `remaining` calls left in its window.
#[allow(clippy::cast_precision_loss, reason = "rate-limit budgets are small")]
pub fn rate_limit_remaining(connector: &str, remaining: u64) {
    metrics::gauge!(RATE_LIMIT_REMAINING, CONNECTOR => connector.to_string()).set(remaining as f64);
}

/// `n` records were read by one poll.
pub fn records_polled(connector: &str, n: u64) {
    metrics::counter!(RECORDS_POLLED, CONNECTOR => connector.to_string()).increment(n);
}

/// `n` records were written with `outcome` (an `OUTCOME_*` value).
pub fn records_pushed(connector: &str, outcome: &'static str, n: u64) {
    metrics::counter!(RECORDS_PUSHED, CONNECTOR => connector.to_string(), OUTCOME => outcome)
        .increment(n);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_house_pattern() {
        for name in ALL {
            assert!(name.starts_with("leadsync_"), "{name}");
            assert!(
                name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{name}: lowercase snake case only"
            );
        }
        for counter in [EVENTS_RECEIVED, EVENTS_REJECTED, API_CALLS, RECORDS_POLLED, RECORDS_PUSHED]
        {
            assert!(counter.ends_with("_total"), "{counter}");
        }
        let mut sorted = ALL.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), ALL.len(), "names are unique");
    }

    #[test]
    fn install_twice_gives_the_same_recorder() {
        let a = install().expect("install");
        let b = install().expect("again");
        // A counter bumped through the global recorder shows in both handles.
        records_polled("install_twice", 3);
        for h in [a, b] {
            let text = h.render();
            assert!(
                text.contains(r#"leadsync_records_polled_total{connector="install_twice"} 3"#),
                "{text}"
            );
        }
    }

    #[test]
    fn ledger_gauges_cover_every_system() {
        use crate::ledger::SystemGauges;
        use chrono::TimeZone;
        let at = chrono::Utc.timestamp_opt(1_700_000_000, 0).single().expect("valid");
        let mut g = Gauges::default();
        g.systems.insert(
            "crm".into(),
            SystemGauges {
                inbox_pending: 1,
                outbox_pending: 2,
                dead: 3,
                last_poll_ok_at: Some(at),
                notices_pending: 0,
            },
        );
        g.systems.insert("mkt".into(), SystemGauges::default());
        let s = ledger_gauges(&g);
        assert_eq!(s.len(), 7, "no last-poll gauge for a system never polled");
        assert!(s.contains(&GaugeSample::for_connector(DEAD_RECORDS, "crm", 3.0)));
        assert!(s.contains(&GaugeSample::for_connector(LAST_POLL_SUCCESS, "crm", 1.7e9)));
        assert!(s.contains(&GaugeSample::for_connector(OUTBOX_PENDING, "mkt", 0.0)));
    }
}
