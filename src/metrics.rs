//! Every metric leadsync exports, by name, and the one process-wide Prometheus recorder.
//!
//! Names follow `leadsync_<noun>_<unit>` with `_total` on counters (Prometheus naming, Vector's
//! spec). Labels are bounded: [`CONNECTOR`] (the configured system name), [`OUTCOME`] and
//! [`ERROR_CODE`]; never record ids, emails or field values.
//!
//! The recorder is installed once per process ([`install`]) and rendered by the admin
//! endpoint; the exporter's own HTTP listener is not used, so there is one admin port.
//! Queue gauges are not pushed by the pipeline: the admin endpoint reads them from the ledger
//! at scrape time ([`ledger_gauges`]), so they are right even after a restart. API call counts
//! and rate-limit budgets live in each connector's `ApiCounters` and are published at scrape
//! time too ([`publish_api_calls`]).

use std::sync::OnceLock;
use std::time::Duration;

use metrics::Unit;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::connectors::ApiCallCounts;
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
/// Counter: vendor API calls (HTTP requests, token requests included). Labels: connector,
/// outcome ([`OUTCOME_OK`], [`OUTCOME_RATE_LIMITED`], [`OUTCOME_ERROR`]). Published from the
/// connectors' [`ApiCounters`](crate::connectors::ApiCounters) at scrape time
/// ([`publish_api_calls`]).
pub const API_CALLS: &str = "leadsync_api_calls_total";
/// Gauge: calls left in the vendor's rate-limit budget, as last reported (HubSpot: the 10 s
/// window, back to its max once the window has passed; Salesforce: the daily allocation). Absent
/// until the vendor has reported one. Labels: connector.
pub const RATE_LIMIT_REMAINING: &str = "leadsync_rate_limit_remaining_calls";
/// Gauge: unix time of the last successful poll. Labels: connector.
pub const LAST_POLL_SUCCESS: &str = "leadsync_last_poll_success_timestamp_seconds";
/// Counter: records read from a vendor by polling. Labels: connector.
pub const RECORDS_POLLED: &str = "leadsync_records_polled_total";
/// Counter: records written to a vendor, per outcome. Labels: connector, outcome.
pub const RECORDS_PUSHED: &str = "leadsync_records_pushed_total";
/// Histogram: time from a webhook request's arrival to its acknowledgement (verified and
/// committed to the inbox). Labels: connector.
pub const WEBHOOK_ACK_DURATION: &str = "leadsync_webhook_ack_duration_seconds";
/// Histogram: events written by one inbox group commit of the webhook server. No labels.
pub const WEBHOOK_COMMIT_BATCH: &str = "leadsync_webhook_commit_batch_events";
/// Gauge: webhook events received but not yet reconciled, from the ledger at scrape time.
/// Labels: connector.
pub const WEBHOOK_EVENTS_PENDING: &str = "leadsync_webhook_events_pending";
/// Gauge: persons with more than one open record in one system (two HubSpot contacts of one
/// person), from the ledger at scrape time; `leadsync duplicates` lists them. Labels: connector.
pub const SAME_SYSTEM_DUPLICATES: &str = "leadsync_same_system_duplicate_persons";
/// Gauge: vendor-side merges (`identity.merge_at_vendor`) that failed for good and wait for an
/// operator, from the ledger at scrape time. Labels: connector.
pub const VENDOR_MERGES_FAILED: &str = "leadsync_vendor_merges_failed_records";
/// Counter: vendor-side merge attempts, per outcome ([`OUTCOME_OK`], [`OUTCOME_RETRY`],
/// [`OUTCOME_REJECTED`]). Labels: connector, outcome.
pub const VENDOR_MERGES: &str = "leadsync_vendor_merges_total";

/// Counter: changes and webhook notices dropped because they are about an erased person.
/// Labels: connector.
pub const ERASED_CHANGES_DROPPED: &str = "leadsync_erased_changes_dropped_total";
/// Counter: closed-loop objects stored (new or changed; re-reads of unchanged ones are not
/// counted). Labels: connector, object_type ([`OBJECT_OPPORTUNITY`], [`OBJECT_TOUCH`],
/// [`OBJECT_ACTIVITY`]).
pub const CLOSED_LOOP_STORED: &str = "leadsync_closed_loop_objects_stored_total";

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
    WEBHOOK_ACK_DURATION,
    WEBHOOK_COMMIT_BATCH,
    WEBHOOK_EVENTS_PENDING,
    SAME_SYSTEM_DUPLICATES,
    VENDOR_MERGES_FAILED,
    VENDOR_MERGES,
    ERASED_CHANGES_DROPPED,
    CLOSED_LOOP_STORED,
];

/// Label: the configured system name (`crm`, `marketing`), bounded by the config.
pub const CONNECTOR: &str = "connector";
/// Label: one of the `OUTCOME_*` values.
pub const OUTCOME: &str = "outcome";
/// Label: a bounded error code such as `http_429` or `bad_signature`.
pub const ERROR_CODE: &str = "error_code";
/// Label: a bounded object kind, e.g. [`OBJECT_OPPORTUNITY`].
pub const OBJECT_TYPE: &str = "object_type";
pub const OBJECT_OPPORTUNITY: &str = "opportunity";
pub const OBJECT_TOUCH: &str = "campaign_touch";
pub const OBJECT_ACTIVITY: &str = "activity";

pub const OUTCOME_OK: &str = "ok";
pub const OUTCOME_RATE_LIMITED: &str = "rate_limited";
pub const OUTCOME_RETRY: &str = "retry";
pub const OUTCOME_REJECTED: &str = "rejected";
pub const OUTCOME_ERROR: &str = "error";

// Values of [`ERROR_CODE`] on [`EVENTS_REJECTED`] for webhook requests: a bounded set.
/// The request's signature does not verify.
pub const REASON_BAD_SIGNATURE: &str = "bad_signature";
/// The signed timestamp is outside the accepted age (replay protection).
pub const REASON_STALE_TIMESTAMP: &str = "stale_timestamp";
/// The event names an organization or portal other than the configured one.
pub const REASON_WRONG_ORGANIZATION: &str = "wrong_organization";
/// The body does not parse as the vendor's event format.
pub const REASON_MALFORMED: &str = "malformed";
/// The body is over the size limit.
pub const REASON_TOO_LARGE: &str = "too_large";
/// The path names no configured system.
pub const REASON_UNKNOWN_SYSTEM: &str = "unknown_system";
/// The ledger could not take the events; the vendor is asked to retry.
pub const REASON_LEDGER_UNAVAILABLE: &str = "ledger_unavailable";

/// Every `REASON_*` value, for tests and docs.
pub const REASONS: &[&str] = &[
    REASON_BAD_SIGNATURE,
    REASON_STALE_TIMESTAMP,
    REASON_WRONG_ORGANIZATION,
    REASON_MALFORMED,
    REASON_TOO_LARGE,
    REASON_UNKNOWN_SYSTEM,
    REASON_LEDGER_UNAVAILABLE,
];

/// Push batches take from tens of milliseconds to the vendors' timeouts.
const PUSH_BUCKETS: &[f64] = &[0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

/// Webhook acks should take at most 20 ms at p99; the buckets resolve that range finely and
/// still show a stalled commit.
const WEBHOOK_ACK_BUCKETS: &[f64] =
    &[0.0005, 0.001, 0.002, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.1, 0.25, 0.5, 1.0];

/// Group commits hold from one event to the commit's cap, in powers of two.
const COMMIT_BATCH_BUCKETS: &[f64] =
    &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0];

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
    let mut builder = PrometheusBuilder::new();
    for (name, buckets) in [
        (PUSH_DURATION, PUSH_BUCKETS),
        (WEBHOOK_ACK_DURATION, WEBHOOK_ACK_BUCKETS),
        (WEBHOOK_COMMIT_BATCH, COMMIT_BATCH_BUCKETS),
    ] {
        builder = builder
            .set_buckets_for_metric(Matcher::Full(name.to_string()), buckets)
            .map_err(|e| MetricsError::Install(e.to_string()))?;
    }
    let recorder = builder.build_recorder();
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
    describe_gauge!(
        RATE_LIMIT_REMAINING,
        Unit::Count,
        "Calls left in the vendor rate-limit budget"
    );
    describe_gauge!(LAST_POLL_SUCCESS, Unit::Seconds, "Unix time of the last good poll");
    describe_counter!(RECORDS_POLLED, Unit::Count, "Records read by polling");
    describe_counter!(RECORDS_PUSHED, Unit::Count, "Records written, by outcome");
    describe_histogram!(WEBHOOK_ACK_DURATION, Unit::Seconds, "Webhook request to acknowledgement");
    describe_histogram!(WEBHOOK_COMMIT_BATCH, Unit::Count, "Events per webhook group commit");
    describe_gauge!(WEBHOOK_EVENTS_PENDING, Unit::Count, "Webhook events not reconciled yet");
    describe_gauge!(
        SAME_SYSTEM_DUPLICATES,
        Unit::Count,
        "Persons with more than one open record in one system"
    );
    describe_gauge!(VENDOR_MERGES_FAILED, Unit::Count, "Vendor-side merges that failed for good");
    describe_counter!(VENDOR_MERGES, Unit::Count, "Vendor-side merge attempts, by outcome");
    describe_counter!(ERASED_CHANGES_DROPPED, Unit::Count, "Changes of erased persons dropped");
    describe_counter!(CLOSED_LOOP_STORED, Unit::Count, "Closed-loop objects stored, by kind");
    describe_counter!(
        crate::sla::SLA_ALERTS_TOTAL,
        Unit::Count,
        "SLA alerts and recycles, by kind"
    );
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

    /// [`WEBHOOK_EVENTS_PENDING`] of one system, from the ledger's count.
    #[allow(clippy::cast_precision_loss, reason = "counts far below 2^53")]
    pub fn webhook_events_pending(connector: &str, events: u64) -> GaugeSample {
        GaugeSample::for_connector(WEBHOOK_EVENTS_PENDING, connector, events as f64)
    }

    /// Set this value on the installed recorder (a no-op when none is installed).
    pub fn set(&self) {
        metrics::gauge!(self.name, &self.labels).set(self.value);
    }
}

/// The queue and last-poll gauges of every system, from the ledger's counts.
#[allow(clippy::cast_precision_loss, reason = "counts far below 2^53")]
pub fn ledger_gauges(g: &Gauges) -> Vec<GaugeSample> {
    let mut out = Vec::with_capacity(g.systems.len() * 7);
    for (system, s) in &g.systems {
        out.push(GaugeSample::for_connector(INBOX_PENDING, system, s.inbox_pending as f64));
        out.push(GaugeSample::for_connector(OUTBOX_PENDING, system, s.outbox_pending as f64));
        out.push(GaugeSample::for_connector(DEAD_RECORDS, system, s.dead as f64));
        out.push(GaugeSample::webhook_events_pending(
            system,
            u64::try_from(s.notices_pending).unwrap_or(0),
        ));
        out.push(GaugeSample::for_connector(
            SAME_SYSTEM_DUPLICATES,
            system,
            s.same_system_duplicates as f64,
        ));
        out.push(GaugeSample::for_connector(
            VENDOR_MERGES_FAILED,
            system,
            s.vendor_merges_failed as f64,
        ));
        if let Some(at) = s.last_poll_ok_at {
            out.push(GaugeSample::for_connector(LAST_POLL_SUCCESS, system, at.timestamp() as f64));
        }
    }
    out
}

/// A change or notice about an erased person was dropped.
pub fn erased_change_dropped(connector: &str) {
    metrics::counter!(ERASED_CHANGES_DROPPED, CONNECTOR => connector.to_string()).increment(1);
}

/// `n` events were accepted (stored for the first time).
pub fn events_received(connector: &str, n: u64) {
    metrics::counter!(EVENTS_RECEIVED, CONNECTOR => connector.to_string()).increment(n);
}

/// An event was refused; `error_code` must come from a bounded set.
pub fn event_rejected(connector: &str, error_code: &'static str) {
    metrics::counter!(EVENTS_REJECTED, CONNECTOR => connector.to_string(), ERROR_CODE => error_code)
        .increment(1);
}

/// Publish one connector's API counters: [`API_CALLS`] per outcome (as absolute values: the
/// counters live in [`ApiCounters`](crate::connectors::ApiCounters)) and, once the vendor has
/// reported one, the [`RATE_LIMIT_REMAINING`] budget. Called when `/metrics` is rendered.
///
/// The exporter keeps the largest value set on a counter, so publishing counts of a
/// connector that was replaced by a fresh one (tests starting apps in one process) leaves the
/// old, higher values in place until the new ones pass them.
pub fn publish_api_calls(connector: &str, counts: &ApiCallCounts) {
    for (outcome, n) in [
        (OUTCOME_OK, counts.ok),
        (OUTCOME_RATE_LIMITED, counts.rate_limited),
        (OUTCOME_ERROR, counts.failed),
    ] {
        metrics::counter!(API_CALLS, CONNECTOR => connector.to_string(), OUTCOME => outcome)
            .absolute(n);
    }
    if let Some(remaining) = counts.rate_limit_remaining {
        rate_limit_remaining(connector, remaining);
    }
}

/// One vendor-side merge attempt ended with `outcome` (an `OUTCOME_*` value).
pub fn vendor_merge(connector: &str, outcome: &'static str) {
    metrics::counter!(VENDOR_MERGES, CONNECTOR => connector.to_string(), OUTCOME => outcome)
        .increment(1);
}

/// One push batch took `elapsed`.
pub fn push_duration(connector: &str, elapsed: Duration) {
    metrics::histogram!(PUSH_DURATION, CONNECTOR => connector.to_string())
        .record(elapsed.as_secs_f64());
}

/// The vendor reported `remaining` calls left in its budget. [`publish_api_calls`] sets this
/// at scrape time; nothing else needs to.
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

/// `n` closed-loop objects of `object_type` (an `OBJECT_*` value) were stored new or changed.
pub fn closed_loop_stored(connector: &str, object_type: &'static str, n: u64) {
    if n > 0 {
        metrics::counter!(CLOSED_LOOP_STORED, CONNECTOR => connector.to_string(),
            OBJECT_TYPE => object_type)
        .increment(n);
    }
}

/// One webhook request took `elapsed` from arrival to acknowledgement.
pub fn webhook_ack_duration(connector: &str, elapsed: Duration) {
    metrics::histogram!(WEBHOOK_ACK_DURATION, CONNECTOR => connector.to_string())
        .record(elapsed.as_secs_f64());
}

/// One inbox group commit of the webhook server wrote `events` events.
#[allow(clippy::cast_precision_loss, reason = "batch sizes are small")]
pub fn webhook_commit_batch(events: usize) {
    metrics::histogram!(WEBHOOK_COMMIT_BATCH).record(events as f64);
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
        for counter in [
            EVENTS_RECEIVED,
            EVENTS_REJECTED,
            API_CALLS,
            RECORDS_POLLED,
            RECORDS_PUSHED,
            VENDOR_MERGES,
            CLOSED_LOOP_STORED,
        ] {
            assert!(counter.ends_with("_total"), "{counter}");
        }
        let mut sorted = ALL.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), ALL.len(), "names are unique");
    }

    #[test]
    fn reasons_are_bounded_snake_case_codes() {
        for r in REASONS {
            assert!(r.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{r}");
        }
        let mut sorted = REASONS.to_vec();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(sorted.len(), 7);
    }

    #[test]
    fn api_counters_count_outcomes_beside_reads_and_writes() {
        use crate::connectors::{ApiCounters, ApiOutcome, ConnectorError};
        let c = ApiCounters::default();
        c.read();
        c.outcome(ApiOutcome::Ok);
        c.write();
        c.outcome(ApiOutcome::of_error(&ConnectorError::RateLimited { retry_after: None }));
        c.read();
        c.outcome(ApiOutcome::of_error(&ConnectorError::Transient("x".into())));
        c.read();
        c.error();
        let n = c.snapshot();
        assert_eq!((n.reads, n.writes, n.errors), (3, 1, 3));
        assert_eq!((n.ok, n.rate_limited, n.failed), (1, 1, 2));
        assert_eq!(n.rate_limit_remaining, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_windowed_budget_refills_once_its_window_has_passed() {
        use crate::connectors::ApiCounters;
        let c = ApiCounters::default();
        assert_eq!(c.rate_limit_remaining(), None, "unknown before any report");
        c.record_rate_limit(0, Some(100), Some(Duration::from_secs(10)));
        assert_eq!(c.rate_limit_remaining(), Some(0), "a spent budget is not unknown");
        tokio::time::advance(Duration::from_millis(9_999)).await;
        assert_eq!(c.rate_limit_remaining(), Some(0));
        tokio::time::advance(Duration::from_millis(1)).await;
        assert_eq!(c.rate_limit_remaining(), Some(100), "window passed: full again");

        // Without a limit, or without a window (a daily budget), the last report stands.
        c.record_rate_limit(3, None, Some(Duration::from_secs(10)));
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(c.rate_limit_remaining(), Some(3));
        c.record_rate_limit(14_975, Some(15_000), None);
        tokio::time::advance(Duration::from_secs(86_400)).await;
        assert_eq!(c.snapshot().rate_limit_remaining, Some(14_975));
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
                same_system_duplicates: 2,
                vendor_merges_failed: 1,
            },
        );
        g.systems.insert("mkt".into(), SystemGauges::default());
        let s = ledger_gauges(&g);
        assert_eq!(s.len(), 13, "no last-poll gauge for a system never polled");
        assert!(s.contains(&GaugeSample::for_connector(SAME_SYSTEM_DUPLICATES, "crm", 2.0)));
        assert!(s.contains(&GaugeSample::for_connector(VENDOR_MERGES_FAILED, "crm", 1.0)));
        assert!(s.contains(&GaugeSample::for_connector(SAME_SYSTEM_DUPLICATES, "mkt", 0.0)));
        assert!(s.contains(&GaugeSample::for_connector(DEAD_RECORDS, "crm", 3.0)));
        assert!(s.contains(&GaugeSample::for_connector(LAST_POLL_SUCCESS, "crm", 1.7e9)));
        assert!(s.contains(&GaugeSample::for_connector(OUTBOX_PENDING, "mkt", 0.0)));
    }
}
