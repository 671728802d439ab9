//! The SLA clocks end to end through the ledger and the task, with injected time (no sleeps):
//! a clock started Friday 16:00 with four business hours is due Monday 12:00, alerts once per
//! state change to a local webhook, survives a restart without re-alerting, and recycles once;
//! a CRM touch meets it; a disqualification before the minimum attempts becomes a recycle.

use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

use super::*;
use crate::contract::config::{ContractRaw, SlaRaw};
use crate::contract::lifecycle::{LifecycleStage, NamedMove};
use crate::contract::sla::SlaPhase;
use crate::domain::closed_loop::{Activity, ActivityKind};
use crate::domain::{Change, Field, Fields, RecordFate, RemoteId, SystemName};
use crate::ledger::closed_loop::ClosedLoopStored;

/// 2026-11-20 is a Friday. Times are UTC, the default calendar (Mon–Fri 09:00–17:00 UTC).
fn at(day: u32, h: u32, m: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, day, h, m, 0).single().expect("valid")
}

fn sla_raw() -> SlaRaw {
    SlaRaw {
        first_touch_business_hours: 4.0,
        grace_business_hours: 2.0,
        escalate: true,
        reassign_to: None,
        recycle_after_business_hours: Some(8.0),
        recycle_reason: "sla_expired".into(),
        disqualify_min_attempts: 3,
        disqualify_min_days: 5,
        alert_webhook: None,
        touch_statuses: vec!["contacted".into()],
        last_activity_touches: true,
        check_interval_seconds: 60,
    }
}

fn rules_with(sla: Option<SlaRaw>) -> Arc<Rules> {
    let mut r = Rules::salesforce_hubspot_defaults();
    let raw = ContractRaw { sla, ..ContractRaw::default() };
    r.contract = Some(Arc::new(raw.validate("contract").expect("valid contract")));
    Arc::new(r)
}

fn rules() -> Arc<Rules> {
    rules_with(Some(sla_raw()))
}

fn fast() -> RetryPolicy {
    RetryPolicy {
        initial: Duration::from_millis(1),
        max_interval: Duration::from_millis(5),
        max_attempts: 3,
    }
}

fn mkt_change(stage: &str, modified: DateTime<Utc>) -> Change {
    mkt_change_of(1, stage, modified)
}

/// Person `n`'s marketing record (`n = 1`: P1, `pat@example.test`, contact 101).
fn mkt_change_of(n: u32, stage: &str, modified: DateTime<Utc>) -> Change {
    let email =
        if n == 1 { "pat@example.test".to_string() } else { format!("pat{n}@example.test") };
    let fields: Fields = [(Field::Email, email), (Field::LifecycleStage, stage.to_string())].into();
    Change {
        remote: RemoteId { object_type: "contact".into(), id: (100 + n).to_string() },
        fields,
        ledger_key: None,
        modified_at: modified,
        fetched_at: modified,
        fate: RecordFate::Live,
        custom: Default::default(),
        last_activity: None,
    }
}

/// The CRM's record of P1 (linked by the ledger id leadsync stamps on it).
fn crm_change(status: &str, modified: DateTime<Utc>) -> Change {
    crm_change_of(1, status, modified)
}

/// The CRM's record of person `n` (linked by the ledger id `P<n>` leadsync stamps on it).
fn crm_change_of(n: u32, status: &str, modified: DateTime<Utc>) -> Change {
    let email =
        if n == 1 { "pat@example.test".to_string() } else { format!("pat{n}@example.test") };
    let fields: Fields = [(Field::Email, email), (Field::LeadStatus, status.to_string())].into();
    Change {
        remote: RemoteId { object_type: "Lead".into(), id: format!("00Q{n}") },
        fields,
        ledger_key: Some(format!("P{n}")),
        modified_at: modified,
        fetched_at: modified,
        fate: RecordFate::Live,
        custom: Default::default(),
        last_activity: None,
    }
}

fn feed(l: &Ledger, r: &Rules, system: &str, c: Change, now: DateTime<Utc>) {
    feed_as(l, r, system, c, now, 1);
}

/// Feed a change; a new person gets the ledger id `P<n>`.
fn feed_as(l: &Ledger, r: &Rules, system: &str, c: Change, now: DateTime<Utc>, n: u32) {
    l.ingest(&SystemName(system.into()), "poll", &[c], None, now).expect("ingest");
    let mut mint = || format!("P{n}");
    l.reconcile_pending(r, 100, now, &mut mint).expect("reconcile");
}

/// P1 becomes MQL (reported by marketing) at `when`; the CRM create is planned: handed over.
fn mql_at(l: &Ledger, r: &Rules, when: DateTime<Utc>) {
    feed(l, r, "marketing", mkt_change("mql", when), when);
}

fn open(p: &Path) -> Arc<Ledger> {
    Arc::new(Ledger::open(&p.join("l.db")).expect("open"))
}

fn clock(l: &Ledger) -> StoredClockView {
    let s = l.sla_clock("P1").expect("read").expect("clock exists");
    StoredClockView { phase: s.clock.phase, due_at: s.clock.due_at, pending: s.pending.len() }
}

#[derive(Debug, PartialEq)]
struct StoredClockView {
    phase: SlaPhase,
    due_at: DateTime<Utc>,
    pending: usize,
}

fn audit_kinds(p: &Path, kind: &str) -> Vec<serde_json::Value> {
    // A second handle on the same file: sees what the tested handle committed.
    Ledger::open(&p.join("l.db")).expect("open").audit_details("P1", kind)
}

fn stage(l: &Ledger) -> Option<LifecycleStage> {
    l.lifecycle("P1").expect("read").and_then(|s| s.stage)
}

#[tokio::test]
async fn weekend_deadline_alerts_once_per_state_change_survives_restart_and_recycles_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/hook"))
        .respond_with(ResponseTemplate::new(200))
        .mount(&server)
        .await;
    let url = url::Url::parse(&format!("{}/hook", server.uri())).expect("url");
    let alerter = Alerter::new(Some(url), fast()).expect("client");
    let r = rules();

    let l = open(dir.path());
    mql_at(&l, &r, at(20, 16, 0));
    assert_eq!(stage(&l), Some(LifecycleStage::Mql));
    // One business hour on Friday, three on Monday.
    assert_eq!(
        clock(&l),
        StoredClockView { phase: SlaPhase::Waiting, due_at: at(23, 12, 0), pending: 0 }
    );
    assert_eq!(audit_kinds(dir.path(), "sla_started").len(), 1);

    let report = tick(&l, &r, &alerter, at(21, 10, 0)).await.expect("saturday");
    assert_eq!(report.delivered, 0);
    assert_eq!(report.next_wakeup.map(|w| w > at(23, 12, 0) && w < at(23, 12, 1)), Some(true));
    // The deadline itself is still in time.
    assert_eq!(tick(&l, &r, &alerter, at(23, 12, 0)).await.expect("due").delivered, 0);

    let report = tick(&l, &r, &alerter, at(23, 12, 1)).await.expect("breach");
    assert_eq!((report.delivered, report.alerts_sent), (1, 1));
    assert_eq!(clock(&l).phase, SlaPhase::Breached);
    assert_eq!(tick(&l, &r, &alerter, at(23, 12, 2)).await.expect("again").delivered, 0);
    assert_eq!(server.received_requests().await.expect("recorded").len(), 1);

    // Restart in the middle of the clock: same deadline, no second breach alert.
    drop(l);
    let l = open(dir.path());
    assert_eq!(
        clock(&l),
        StoredClockView { phase: SlaPhase::Breached, due_at: at(23, 12, 0), pending: 0 }
    );
    assert_eq!(tick(&l, &r, &alerter, at(23, 13, 0)).await.expect("after restart").delivered, 0);

    // Escalation at deadline + 2 business hours.
    let report = tick(&l, &r, &alerter, at(23, 14, 1)).await.expect("escalate");
    assert_eq!((report.delivered, report.alerts_sent), (1, 1));
    assert_eq!(tick(&l, &r, &alerter, at(23, 15, 0)).await.expect("quiet").delivered, 0);

    // Recycled 8 business hours after the escalation point: Tuesday 14:00.
    assert_eq!(tick(&l, &r, &alerter, at(24, 13, 59)).await.expect("not yet").recycled, 0);
    let report = tick(&l, &r, &alerter, at(24, 14, 1)).await.expect("recycle");
    assert_eq!((report.recycled, report.alerts_sent), (1, 0));
    assert_eq!(stage(&l), Some(LifecycleStage::Recycled));
    let stage_lines = audit_kinds(dir.path(), "stage");
    let last = stage_lines.last().expect("recycle audited");
    assert_eq!(
        (&last["to"], &last["reason"]),
        (&serde_json::json!("recycled"), &serde_json::json!("sla_expired"))
    );
    assert_eq!(tick(&l, &r, &alerter, at(25, 14, 1)).await.expect("done").delivered, 0);
    assert_eq!(clock(&l).phase, SlaPhase::Recycled);
    assert_eq!(report.next_wakeup, None);

    let got = server.received_requests().await.expect("recorded");
    assert_eq!(got.len(), 2, "one alert per state change");
    for req in &got {
        let body: serde_json::Value = serde_json::from_slice(&req.body).expect("json");
        let text = body["text"].as_str().expect("slack text");
        assert!(text.contains("P1"), "{text}");
        assert!(!text.contains("pat@"), "no email in alerts: {text}");
    }
    assert!(
        serde_json::from_slice::<serde_json::Value>(&got[0].body).expect("json")["text"]
            .as_str()
            .is_some_and(|t| t.contains("breached"))
    );
    assert!(
        serde_json::from_slice::<serde_json::Value>(&got[1].body).expect("json")["text"]
            .as_str()
            .is_some_and(|t| t.contains("escalated"))
    );
}

#[tokio::test]
async fn an_action_decided_but_not_delivered_before_a_crash_is_delivered_once_after() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = rules();
    let policy = r.contract.as_ref().and_then(|c| c.sla.clone()).expect("sla");
    let alerter = Alerter::new(None, fast()).expect("client");
    let l = open(dir.path());
    mql_at(&l, &r, at(20, 16, 0));
    // The task decided the breach, then died before delivering it.
    let due = l.sla_due(&policy, at(23, 12, 1), 10).expect("due");
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].pending, vec![Fired::Breached { due_at: at(23, 12, 0) }]);
    drop(l);
    let l = open(dir.path());
    let report = tick(&l, &r, &alerter, at(23, 12, 30)).await.expect("resume");
    assert_eq!(report.delivered, 1);
    assert_eq!(tick(&l, &r, &alerter, at(23, 12, 40)).await.expect("again").delivered, 0);
    assert_eq!(audit_kinds(dir.path(), "sla_action").len(), 1, "decided once");
}

#[tokio::test]
async fn a_crm_status_touch_by_the_deadline_meets_the_sla_without_alerts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(200)).mount(&server).await;
    let url = url::Url::parse(&server.uri()).expect("url");
    let alerter = Alerter::new(Some(url), fast()).expect("client");
    let r = rules();
    let l = open(dir.path());
    mql_at(&l, &r, at(20, 16, 0));
    feed(&l, &r, "crm", crm_change("contacted", at(23, 10, 0)), at(23, 10, 5));
    let c = l.sla_clock("P1").expect("read").expect("clock");
    assert_eq!(c.clock.first_touch_at, Some(at(23, 10, 0)));
    assert_eq!(c.clock.phase, SlaPhase::Met);
    let report = tick(&l, &r, &alerter, at(24, 18, 0)).await.expect("tick");
    assert_eq!((report.delivered, report.alerts_sent), (1, 0), "the met notice only");
    assert_eq!(stage(&l), Some(LifecycleStage::Mql));
    assert!(server.received_requests().await.expect("recorded").is_empty());
}

#[tokio::test]
async fn a_stage_advance_touches_and_settles_the_clock() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = rules();
    let l = open(dir.path());
    mql_at(&l, &r, at(20, 16, 0));
    // Late: after the deadline, before anyone evaluated it.
    feed(&l, &r, "marketing", mkt_change("sql", at(23, 13, 0)), at(23, 13, 0));
    assert_eq!(stage(&l), Some(LifecycleStage::Sql));
    let c = l.sla_clock("P1").expect("read").expect("clock");
    // Evaluated before closing: the late touch is recorded; no alert for a moot breach.
    assert_eq!(c.clock.phase, SlaPhase::TouchedLate);
    assert_eq!(c.pending, vec![Fired::TouchedLate { first_touch_at: at(23, 13, 0) }]);
    assert_eq!(audit_kinds(dir.path(), "sla_closed").len(), 1);
    assert_eq!(l.sla_next_wakeup().expect("wake"), Some(at(23, 13, 0)), "the notice is due");
}

#[tokio::test]
async fn a_recycle_by_hand_closes_the_clock_silently() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = rules();
    let alerter = Alerter::new(None, fast()).expect("client");
    let l = open(dir.path());
    mql_at(&l, &r, at(20, 16, 0));
    l.named_transition("P1", NamedMove::Recycle, "not_ready", None, &r, at(23, 9, 0))
        .expect("recycle");
    let c = l.sla_clock("P1").expect("read").expect("clock");
    assert_eq!((c.clock.phase, c.pending.len()), (SlaPhase::Closed, 0));
    assert_eq!(tick(&l, &r, &alerter, at(30, 9, 0)).await.expect("tick").delivered, 0);
}

#[tokio::test]
async fn a_named_disqualification_before_enough_attempts_becomes_a_recycle() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = rules();
    let l = open(dir.path());
    mql_at(&l, &r, at(20, 16, 0));
    let out = l
        .named_transition("P1", NamedMove::Disqualify, "not_a_fit", None, &r, at(23, 10, 0))
        .expect("named");
    let NamedOutcome::Applied { transition, .. } = out else { panic!("applied: {out:?}") };
    assert_eq!(transition.to, LifecycleStage::Recycled);
    assert_eq!(transition.reason.as_ref().map(|c| c.as_str()), Some(DISQUALIFY_REFUSED));
    let refused = audit_kinds(dir.path(), "sla_disqualify_refused");
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0]["via"], "named");
    assert_eq!(l.sla_clock("P1").expect("read").expect("clock").clock.phase, SlaPhase::Closed);
}

#[tokio::test]
async fn a_named_disqualification_the_policy_allows_goes_through() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = rules_with(Some(SlaRaw {
        disqualify_min_attempts: 0,
        disqualify_min_days: 0,
        ..sla_raw()
    }));
    let l = open(dir.path());
    mql_at(&l, &r, at(20, 16, 0));
    let out = l
        .named_transition("P1", NamedMove::Disqualify, "not_a_fit", None, &r, at(23, 10, 0))
        .expect("named");
    let NamedOutcome::Applied { transition, .. } = out else { panic!("applied: {out:?}") };
    assert_eq!(transition.to, LifecycleStage::Disqualified);
    assert!(audit_kinds(dir.path(), "sla_disqualify_refused").is_empty());
}

#[tokio::test]
async fn a_reported_disqualification_before_enough_attempts_is_recycled_by_the_task() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = rules();
    let alerter = Alerter::new(None, fast()).expect("client");
    let l = open(dir.path());
    mql_at(&l, &r, at(20, 16, 0));
    feed(&l, &r, "crm", crm_change("unqualified", at(23, 10, 0)), at(23, 10, 0));
    let refused = audit_kinds(dir.path(), "sla_disqualify_refused");
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0]["via"], "reported");
    let report = tick(&l, &r, &alerter, at(23, 10, 1)).await.expect("tick");
    assert_eq!(report.recycled, 1);
    assert_eq!(stage(&l), Some(LifecycleStage::Recycled));
    let last = audit_kinds(dir.path(), "stage").last().cloned().expect("stage line");
    assert_eq!(last["reason"], DISQUALIFY_REFUSED);
    assert_eq!(tick(&l, &r, &alerter, at(23, 10, 2)).await.expect("again").recycled, 0);
}

#[tokio::test]
async fn without_an_sla_section_no_clock_starts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = rules_with(None);
    let l = open(dir.path());
    mql_at(&l, &r, at(20, 16, 0));
    assert_eq!(stage(&l), Some(LifecycleStage::Mql));
    assert!(l.sla_clock("P1").expect("read").is_none());
    let alerter = Alerter::new(None, fast()).expect("client");
    assert_eq!(tick(&l, &r, &alerter, at(30, 12, 0)).await.expect("tick"), TickReport::default());
}

#[tokio::test]
async fn a_webhook_5xx_is_retried_and_counts_once() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(200)).mount(&server).await;
    let alerter =
        Alerter::new(Some(url::Url::parse(&server.uri()).expect("url")), fast()).expect("client");
    let alert = Alert {
        kind: "breached",
        lead_id: "P9".into(),
        due_at: at(23, 12, 0),
        reassign_to: None,
        links: vec!["crm:Lead/00Q9".into()],
    };
    alerter.send(&alert).await.expect("sent after a retry");
    assert_eq!(server.received_requests().await.expect("recorded").len(), 2);
}

#[test]
fn sleep_is_bounded_both_ways() {
    let now = at(23, 12, 0);
    let max = Duration::from_secs(60);
    assert_eq!(sleep_for(None, now, max), max);
    assert_eq!(sleep_for(Some(at(23, 13, 0)), now, max), max);
    assert_eq!(sleep_for(Some(at(23, 11, 0)), now, max), Duration::from_secs(1));
    assert_eq!(
        sleep_for(Some(now + chrono::TimeDelta::seconds(10)), now, max),
        Duration::from_secs(10)
    );
}

#[test]
fn sla_ops_are_validated() {
    let bad = |raw: SlaRaw| {
        ContractRaw { sla: Some(raw), ..ContractRaw::default() }
            .validate("contract")
            .expect_err("refused")
            .to_string()
    };
    let e = bad(SlaRaw { alert_webhook: Some("ftp://hooks.example/x".into()), ..sla_raw() });
    assert!(e.contains("contract.sla.alert_webhook"), "{e}");
    let e = bad(SlaRaw { check_interval_seconds: 0, ..sla_raw() });
    assert!(e.contains("contract.sla.check_interval_seconds"), "{e}");
    let ok = ContractRaw {
        sla: Some(SlaRaw { alert_webhook: Some(" https://hooks.example/x ".into()), ..sla_raw() }),
        ..ContractRaw::default()
    }
    .validate("contract")
    .expect("valid");
    assert_eq!(
        ok.sla_ops.alert_webhook.map(|u| u.to_string()),
        Some("https://hooks.example/x".into())
    );
    assert!(ok.sla_ops.touch_statuses.contains("contacted"));
}

#[tokio::test]
async fn a_recycle_decided_before_the_person_moved_on_is_skipped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = rules();
    let policy = r.contract.as_ref().and_then(|c| c.sla.clone()).expect("sla");
    let alerter = Alerter::new(None, fast()).expect("client");
    let l = open(dir.path());
    mql_at(&l, &r, at(20, 16, 0));
    let due = l.sla_due(&policy, at(24, 14, 1), 10).expect("decided");
    assert!(due[0].pending.contains(&Fired::Recycle { reason: "sla_expired".into() }));
    // Sales qualified the person before the task delivered the recycle.
    feed(&l, &r, "marketing", mkt_change("sql", at(24, 14, 2)), at(24, 14, 2));
    let report = tick(&l, &r, &alerter, at(24, 14, 3)).await.expect("tick");
    assert_eq!(report.recycled, 0);
    assert_eq!(stage(&l), Some(LifecycleStage::Sql));
    assert_eq!(audit_kinds(dir.path(), "sla_recycle_skipped").len(), 1);
    assert_eq!(l.sla_clock("P1").expect("read").expect("clock").pending, vec![]);
}

/// `leadsync report sla` against a scripted week whose right answers are worked out by hand
/// below from the script alone (default calendar: Mon–Fri 09:00–17:00 UTC; first touch 4
/// business hours, grace 2, recycle 8 after that; disqualifying needs a day since handover).
#[tokio::test]
async fn the_sla_report_counts_a_scripted_week() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = rules_with(Some(SlaRaw {
        disqualify_min_attempts: 0,
        disqualify_min_days: 1,
        ..sla_raw()
    }));
    let alerter = Alerter::new(None, fast()).expect("client");
    let l = open(dir.path());
    let mql = |n: u32, when: DateTime<Utc>| {
        feed_as(&l, &r, "marketing", mkt_change_of(n, "mql", when), when, n)
    };
    let contacted = |n: u32, when: DateTime<Utc>| {
        feed_as(&l, &r, "crm", crm_change_of(n, "contacted", when), when, n);
    };
    let named = |n: u32, name: NamedMove, when: DateTime<Utc>| {
        l.named_transition(&format!("P{n}"), name, "not_a_fit", None, &r, when).expect("named")
    };

    // P7: handed over Thursday, before the window: never counted.
    mql(7, at(19, 10, 0));
    // P1, P2: Friday 16:00, due Monday 12:00 (1 business hour Friday + 3 Monday).
    mql(1, at(20, 16, 0));
    mql(2, at(20, 16, 0));
    // P3, P4, P5: Monday 09:00, due 13:00; P3 escalates at 15:00 and recycles at Tuesday
    // 15:00 (2 business hours Monday + 6 Tuesday).
    for n in [3, 4, 5] {
        mql(n, at(23, 9, 0));
    }
    contacted(1, at(23, 10, 0)); // met: 66 h after the start
    let refused = named(4, NamedMove::Disqualify, at(23, 10, 0)); // within a day: refused
    assert!(matches!(refused, NamedOutcome::Applied { ref transition, .. }
        if transition.to == LifecycleStage::Recycled));
    contacted(5, at(23, 11, 0)); // met: 2 h
    tick(&l, &r, &alerter, at(23, 12, 30)).await.expect("P2 breached");
    contacted(2, at(23, 13, 0)); // touched late: 69 h
    tick(&l, &r, &alerter, at(23, 13, 30)).await.expect("P3 breached");
    tick(&l, &r, &alerter, at(23, 15, 30)).await.expect("P3 escalated");
    let t = tick(&l, &r, &alerter, at(24, 15, 30)).await.expect("P3 recycled");
    assert_eq!(t.recycled, 1);
    // P6: Tuesday 16:00, due Wednesday 12:00: not due when the report runs.
    mql(6, at(24, 16, 0));
    // P5 disqualified two days after the handover, with no attempts logged.
    let allowed = named(5, NamedMove::Disqualify, at(25, 10, 0));
    assert!(matches!(allowed, NamedOutcome::Applied { ref transition, .. }
        if transition.to == LifecycleStage::Disqualified));

    let got = l.sla_report(at(20, 0, 0), at(25, 11, 0)).expect("report");
    let hours = |h: i64| h * 3600;
    let want = crate::ledger::sla_report::SlaReport {
        from: at(20, 0, 0),
        to: at(25, 11, 0),
        handed_over: 6,          // P1..P6
        met: 2,                  // P1, P5
        touched_late: 1,         // P2
        overdue: 1,              // P3
        not_yet_due: 1,          // P6
        left_before_deadline: 1, // P4 (recycled instead of disqualified at 10:00)
        within_deadline_bp: Some(2 * 10_000 / 4),
        // Times to first touch: 2 h, 66 h, 69 h.
        median_secs_to_first_touch: Some(hours(66)),
        p90_secs_to_first_touch: Some(hours(69)),
        breached: 2, // P2, P3
        escalated: 1,
        recycled: 1,
        disqualified: 1,
        median_attempts_before_disqualification: Some(0),
        min_attempts_before_disqualification: Some(0),
        max_attempts_before_disqualification: Some(0),
        disqualifications_refused: 1,
    };
    assert_eq!(got, want);

    // A window that starts on Monday leaves out Friday's two handovers.
    let monday = l.sla_report(at(23, 0, 0), at(25, 11, 0)).expect("report");
    assert_eq!((monday.handed_over, monday.met, monday.touched_late), (4, 1, 0));
    // Marketing re-qualifies P4 (lead, then MQL): a second cycle of one person counts again.
    feed_as(&l, &r, "marketing", mkt_change_of(4, "lead", at(25, 9, 20)), at(25, 9, 20), 4);
    mql(4, at(25, 9, 30));
    assert_eq!(l.lifecycle("P4").expect("read").and_then(|s| s.stage), Some(LifecycleStage::Mql));
    let again = l.sla_report(at(20, 0, 0), at(25, 11, 0)).expect("report");
    assert_eq!((again.handed_over, again.not_yet_due), (7, 2));
}

/// A logged activity on a Salesforce record as the closed-loop poller reads it.
fn activity(id: &str, who: &str, at_: DateTime<Utc>, completed: bool) -> Activity {
    let (object_type, id_) = who.split_once('/').expect("Type/id");
    Activity {
        activity_id: id.into(),
        who_remote_id: RemoteId { object_type: object_type.into(), id: id_.into() },
        kind: ActivityKind::Call,
        at: at_,
        completed,
        modified_at: at_,
        deleted: false,
    }
}

fn store(l: &Ledger, acts: &[Activity], now: DateTime<Utc>) -> ClosedLoopStored {
    l.store_closed_loop(&SystemName("crm".into()), &[], &[], acts, None, now).expect("store")
}

fn two_attempts_same_day() -> Arc<Rules> {
    rules_with(Some(SlaRaw { disqualify_min_attempts: 2, disqualify_min_days: 0, ..sla_raw() }))
}

#[tokio::test]
async fn a_logged_call_on_the_linked_lead_is_one_attempt_however_often_it_is_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = two_attempts_same_day();
    let policy = r.contract.as_ref().and_then(|c| c.sla.clone()).expect("sla");
    let l = open(dir.path());
    mql_at(&l, &r, at(20, 16, 0));
    // The CRM reports the lead it created (leadsync's id on it links it to P1); no touch.
    feed(&l, &r, "crm", crm_change("new", at(20, 16, 5)), at(20, 16, 5));
    assert_eq!(l.sla_clock("P1").expect("read").expect("clock").clock.attempts, 0);

    let call = activity("00T1", "Lead/00Q1", at(23, 9, 30), true);
    let s = store(&l, std::slice::from_ref(&call), at(23, 9, 31));
    assert_eq!((s.activities, s.attempts), (1, 1));
    let c = l.sla_clock("P1").expect("read").expect("clock").clock;
    assert_eq!((c.attempts, c.first_touch_at), (1, Some(at(23, 9, 30))));
    assert_eq!(c.phase, SlaPhase::Waiting, "evaluated by the task, not here");
    assert!(c.may_disqualify(at(23, 10, 0), &policy).is_err(), "one attempt of two");

    // Read again (the overlap window), and again after the conversion moved it to a Contact
    // that is not linked: the same activity, never a second attempt.
    let s = store(&l, std::slice::from_ref(&call), at(23, 9, 40));
    assert_eq!((s.activities, s.unchanged, s.attempts), (0, 1, 0));
    let moved = Activity {
        who_remote_id: RemoteId { object_type: "Contact".into(), id: "003X".into() },
        modified_at: at(23, 9, 45),
        ..call.clone()
    };
    let s = store(&l, &[moved], at(23, 9, 46));
    assert_eq!((s.activities, s.attempts), (1, 0));
    assert_eq!(l.sla_clock("P1").expect("read").expect("clock").clock.attempts, 1);

    // A to-do is no attempt until it is done; a deleted one never; an unlinked record's never.
    let todo = activity("00T2", "Lead/00Q1", at(23, 9, 50), false);
    let gone = Activity { deleted: true, ..activity("00T3", "Lead/00Q1", at(23, 9, 55), true) };
    let stranger = activity("00T4", "Lead/00Q9", at(23, 9, 56), true);
    let s = store(&l, &[todo.clone(), gone, stranger], at(23, 9, 57));
    assert_eq!((s.activities, s.attempts), (3, 0));
    let done = Activity { completed: true, modified_at: at(23, 9, 58), ..todo };
    assert_eq!(store(&l, &[done], at(23, 9, 59)).attempts, 1);
    let c = l.sla_clock("P1").expect("read").expect("clock").clock;
    assert_eq!(c.attempts, 2);
    assert!(c.may_disqualify(at(23, 10, 0), &policy).is_ok());
    let audited = audit_kinds(dir.path(), "sla_attempt");
    assert_eq!(audited.len(), 2);
    assert_eq!(audited[1]["activity_id"], "00T2");

    // So a disqualification now goes through.
    let out = l
        .named_transition("P1", NamedMove::Disqualify, "not_a_fit", None, &r, at(23, 10, 0))
        .expect("named");
    let NamedOutcome::Applied { transition, .. } = out else { panic!("applied: {out:?}") };
    assert_eq!(transition.to, LifecycleStage::Disqualified);
}

#[tokio::test]
async fn activities_read_before_the_clock_starts_count_when_it_starts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let r = two_attempts_same_day();
    let l = open(dir.path());
    // The CRM lead is known (linked to P1) before P1 is an MQL; the task poll sees two calls
    // on it, one before the handover and one after, before the lead poll reports the MQL.
    feed(&l, &r, "crm", crm_change("new", at(20, 15, 0)), at(20, 15, 0));
    let early = activity("00T1", "Lead/00Q1", at(20, 15, 30), true);
    let late = activity("00T2", "Lead/00Q1", at(20, 16, 30), true);
    let s = store(&l, &[early, late], at(20, 16, 31));
    assert_eq!((s.activities, s.attempts), (2, 0), "no clock yet");
    // Marketing's MQL of 16:00, reconciled at 16:45.
    feed(&l, &r, "marketing", mkt_change("mql", at(20, 16, 0)), at(20, 16, 45));
    assert_eq!(stage(&l), Some(LifecycleStage::Mql));
    let c = l.sla_clock("P1").expect("read").expect("clock").clock;
    assert_eq!(c.started_at, at(20, 16, 0));
    assert_eq!((c.attempts, c.first_touch_at), (1, Some(at(20, 16, 30))), "only the later call");
    let audited = audit_kinds(dir.path(), "sla_attempt");
    assert_eq!(audited.len(), 1);
    assert_eq!(audited[0]["activity_id"], "00T2");
    // Counted once: storing it again adds nothing.
    let again = activity("00T2", "Lead/00Q1", at(20, 16, 30), true);
    assert_eq!(store(&l, &[again], at(20, 17, 0)).attempts, 0);
    assert_eq!(l.sla_clock("P1").expect("read").expect("clock").clock.attempts, 1);
}

#[tokio::test]
async fn an_escalation_with_reassign_to_queues_the_owner_on_the_crm_record_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let owner = "005000000000002AAA";
    let r = rules_with(Some(SlaRaw { reassign_to: Some(owner.into()), ..sla_raw() }));
    let alerter = Alerter::new(None, fast()).expect("client");
    let l = open(dir.path());
    mql_at(&l, &r, at(20, 16, 0));
    // The CRM create went through: P1's Salesforce lead is 00Q1.
    feed(&l, &r, "crm", crm_change("new", at(20, 16, 1)), at(20, 16, 1));
    let crm = SystemName("crm".into());
    let owners = |l: &Ledger, now| -> Vec<Option<String>> {
        l.due_pushes(&crm, 10, now).expect("outbox").into_iter().map(|d| d.record.owner).collect()
    };
    assert!(owners(&l, at(20, 16, 2)).iter().all(Option::is_none));

    // The breach alerts only.
    tick(&l, &r, &alerter, at(23, 12, 1)).await.expect("breach");
    assert!(owners(&l, at(23, 12, 2)).iter().all(Option::is_none));
    assert!(audit_kinds(dir.path(), "owner_reassigned").is_empty());
    // The escalation reassigns the Salesforce lead, once, and says so in the trail.
    let report = tick(&l, &r, &alerter, at(23, 14, 1)).await.expect("escalate");
    assert_eq!(report.delivered, 1);
    let queued = owners(&l, at(23, 14, 2));
    assert_eq!(queued.iter().flatten().collect::<Vec<_>>(), [owner]);
    let trail = audit_kinds(dir.path(), "owner_reassigned");
    assert_eq!(trail.len(), 1);
    assert_eq!(
        (trail[0]["owner"].as_str(), trail[0]["remote"].as_str()),
        (Some(owner), Some("Lead/00Q1"))
    );
    assert_eq!(tick(&l, &r, &alerter, at(23, 15, 0)).await.expect("quiet").delivered, 0);
    assert_eq!(audit_kinds(dir.path(), "owner_reassigned").len(), 1, "once per escalation");
    // The marketing record never gets an owner.
    let mkt = SystemName("marketing".into());
    assert!(
        l.due_pushes(&mkt, 10, at(23, 15, 1))
            .expect("outbox")
            .iter()
            .all(|d| d.record.owner.is_none())
    );
}
