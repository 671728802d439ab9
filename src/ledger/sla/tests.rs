//! The last-activity touch through the ledger: a CRM record's `LastActivityDate` or
//! `notes_last_contacted` moving during a clock's cycle meets it without counting an attempt;
//! a first read on the start's date, a marketing system's value and old news do not. On the
//! start's own day: the morning's call on a lead that existed before the handover does not
//! meet the clock; a call on the lead leadsync created at the handover does, even when the
//! first poll of it already shows the date.

use std::sync::Arc;

use chrono::{DateTime, NaiveDate, TimeZone, Utc};

use crate::contract::config::{ContractRaw, SlaRaw};
use crate::contract::sla::SlaPhase;
use crate::domain::{
    Change, Field, Fields, LastActivity, PushOp, PushOutcome, RecordFate, RemoteId, SystemName,
};
use crate::ledger::{Ledger, PushRetry};
use crate::reconcile::Rules;

/// 2026-11-20 is a Friday; the default calendar (Mon–Fri 09:00–17:00 UTC).
fn at(day: u32, h: u32, m: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, day, h, m, 0).single().expect("valid")
}

fn november(day: u32) -> LastActivity {
    LastActivity::Date(NaiveDate::from_ymd_opt(2026, 11, day).expect("valid"))
}

fn rules() -> Arc<Rules> {
    let sla = SlaRaw {
        first_touch_business_hours: 4.0,
        grace_business_hours: 2.0,
        escalate: true,
        reassign_to: None,
        recycle_after_business_hours: Some(8.0),
        recycle_reason: "sla_expired".into(),
        disqualify_min_attempts: 1,
        disqualify_min_days: 0,
        alert_webhook: None,
        touch_statuses: Vec::new(),
        last_activity_touches: true,
        check_interval_seconds: 60,
    };
    let mut r = Rules::salesforce_hubspot_defaults();
    let raw = ContractRaw { sla: Some(sla), ..ContractRaw::default() };
    r.contract = Some(Arc::new(raw.validate("contract").expect("valid contract")));
    Arc::new(r)
}

fn change(
    object_type: &str,
    id: &str,
    fields: Fields,
    modified: DateTime<Utc>,
    fetched: DateTime<Utc>,
    last_activity: Option<LastActivity>,
) -> Change {
    Change {
        remote: RemoteId { object_type: object_type.into(), id: id.into() },
        fields,
        ledger_key: None,
        modified_at: modified,
        fetched_at: fetched,
        fate: RecordFate::Live,
        custom: Default::default(),
        last_activity,
    }
}

fn email() -> (Field, String) {
    (Field::Email, "pat@example.test".to_string())
}

/// P1's marketing contact, MQL at `when` (the CRM create is planned: handed over).
fn marketing(when: DateTime<Utc>, last_activity: Option<LastActivity>) -> Change {
    let fields = [email(), (Field::LifecycleStage, "mql".to_string())].into();
    change("contact", "101", fields, when, when, last_activity)
}

/// The CRM lead leadsync created for P1, read at `fetched`.
fn crm(modified: DateTime<Utc>, fetched: DateTime<Utc>, la: Option<LastActivity>) -> Change {
    let fields = [email(), (Field::LeadStatus, "new".to_string())].into();
    let mut c = change("Lead", "00Q1", fields, modified, fetched, la);
    c.ledger_key = Some("P1".into());
    c
}

fn feed(l: &Ledger, r: &Rules, system: &str, c: Change, now: DateTime<Utc>) {
    l.ingest(&SystemName(system.into()), "poll", &[c], None, now).expect("ingest");
    l.reconcile_pending(r, 100, now, &mut || "P1".to_string()).expect("reconcile");
}

fn clock(l: &Ledger) -> crate::contract::sla::SlaClock {
    l.sla_clock("P1").expect("read").expect("a clock").clock
}

#[test]
fn a_last_activity_date_that_moves_during_the_cycle_meets_the_clock_without_an_attempt() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (l, r) = (Ledger::open(&dir.path().join("l.db")).expect("open"), rules());
    feed(&l, &r, "marketing", marketing(at(20, 10, 0), None), at(20, 10, 0));
    assert_eq!(clock(&l).due_at, at(20, 14, 0));
    // The lead as created: no activity; the read came after the start.
    feed(
        &l,
        &r,
        "crm",
        crm(at(20, 10, 30), at(20, 10, 31), Some(LastActivity::Never)),
        at(20, 10, 31),
    );
    assert_eq!(clock(&l).first_touch_at, None);
    // A call logged today: the date moved after a read made during the cycle.
    feed(&l, &r, "crm", crm(at(20, 11, 0), at(20, 11, 1), Some(november(20))), at(20, 11, 1));
    let c = clock(&l);
    assert_eq!((c.first_touch_at, c.attempts), (Some(at(20, 11, 0)), 0), "stamped when seen");
    assert_eq!(c.phase, SlaPhase::Met);
    let touches = l.audit_details("P1", "sla_touch");
    assert_eq!(touches.len(), 1);
    assert_eq!(touches[0]["via"], "last_activity");
    // Read again (the overlap window, a later edit): old news, nothing changes.
    feed(&l, &r, "crm", crm(at(20, 12, 0), at(20, 12, 1), Some(november(20))), at(20, 12, 1));
    assert_eq!(l.audit_details("P1", "sla_touch").len(), 1);
    assert_eq!(clock(&l).first_touch_at, Some(at(20, 11, 0)));
}

#[test]
fn a_first_read_on_the_start_date_proves_nothing_and_a_later_date_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (l, r) = (Ledger::open(&dir.path().join("l.db")).expect("open"), rules());
    feed(&l, &r, "marketing", marketing(at(20, 10, 0), None), at(20, 10, 0));
    // First read of the lead already dated today: the call may predate the clock.
    feed(&l, &r, "crm", crm(at(20, 11, 0), at(20, 11, 1), Some(november(20))), at(20, 11, 1));
    assert_eq!(clock(&l).first_touch_at, None);
    // Monday's call moves the date past the start's date: a touch, after the deadline.
    feed(&l, &r, "crm", crm(at(23, 9, 30), at(23, 9, 31), Some(november(23))), at(23, 9, 31));
    let c = clock(&l);
    assert_eq!((c.first_touch_at, c.attempts), (Some(at(23, 9, 30)), 0));
    assert_eq!(c.phase, SlaPhase::TouchedLate);
}

#[test]
fn only_the_crm_reports_last_activity_touches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (l, r) = (Ledger::open(&dir.path().join("l.db")).expect("open"), rules());
    feed(&l, &r, "marketing", marketing(at(20, 10, 0), None), at(20, 10, 0));
    feed(
        &l,
        &r,
        "crm",
        crm(at(20, 10, 30), at(20, 10, 31), Some(LastActivity::Never)),
        at(20, 10, 31),
    );
    let contacted = Some(LastActivity::At(at(20, 11, 0)));
    feed(&l, &r, "marketing", marketing(at(20, 11, 5), contacted), at(20, 11, 5));
    assert_eq!(clock(&l).first_touch_at, None, "a marketing system's value is no sales touch");
    // The CRM's own instant counts as stamped.
    feed(&l, &r, "crm", crm(at(20, 11, 10), at(20, 11, 11), contacted), at(20, 11, 11));
    assert_eq!(clock(&l).first_touch_at, Some(at(20, 11, 0)));
}

/// The CRM accepts the create leadsync planned at the handover: lead `00Q1`, linked as
/// created by leadsync at `now`.
fn create_accepted(l: &Ledger, r: &Rules, now: DateTime<Utc>) {
    let crm = SystemName("crm".into());
    let due = l.due_pushes(&crm, 10, now).expect("due");
    assert_eq!(due.len(), 1);
    assert!(matches!(due[0].record.op, PushOp::Create { .. }));
    let outcome = PushOutcome::Accepted {
        outbox_id: due[0].record.outbox_id,
        remote: RemoteId { object_type: "Lead".into(), id: "00Q1".into() },
        created: true,
    };
    let tally = l
        .record_push_results(&crm, &due, &[outcome], r, PushRetry::default(), now, now)
        .expect("record");
    assert_eq!(tally.created, 1);
}

#[test]
fn a_call_on_the_lead_created_at_the_handover_counts_on_its_first_read() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (l, r) = (Ledger::open(&dir.path().join("l.db")).expect("open"), rules());
    feed(&l, &r, "marketing", marketing(at(20, 10, 0), None), at(20, 10, 0));
    create_accepted(&l, &r, at(20, 10, 1));
    // The rep called the new lead at once; the first poll of it already shows today. The
    // lead did not exist before the handover, so the call came after it.
    feed(&l, &r, "crm", crm(at(20, 10, 20), at(20, 10, 21), Some(november(20))), at(20, 10, 21));
    let c = clock(&l);
    assert_eq!((c.first_touch_at, c.attempts), (Some(at(20, 10, 20)), 0), "at the modstamp");
    assert_eq!(c.phase, SlaPhase::Met);
    assert_eq!(l.audit_details("P1", "sla_touch").len(), 1);
    // Read again: old news.
    feed(&l, &r, "crm", crm(at(20, 12, 0), at(20, 12, 1), Some(november(20))), at(20, 12, 1));
    assert_eq!(l.audit_details("P1", "sla_touch").len(), 1);
}

#[test]
fn the_mornings_call_on_a_lead_that_existed_before_the_handover_is_no_sla_touch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (l, r) = (Ledger::open(&dir.path().join("l.db")).expect("open"), rules());
    // The lead is in the CRM before anyone qualifies it, and a call this morning dates it
    // today.
    let lead: Fields = [email(), (Field::LifecycleStage, "lead".to_string())].into();
    let early = change("contact", "101", lead, at(20, 8, 0), at(20, 8, 0), None);
    feed(&l, &r, "marketing", early, at(20, 8, 0));
    feed(&l, &r, "crm", crm(at(20, 9, 0), at(20, 9, 1), Some(november(20))), at(20, 9, 1));
    assert!(l.sla_clock("P1").expect("read").is_none(), "no clock before the MQL");
    // That call made them MQL at 10:00: the clock starts, the lead already exists.
    feed(&l, &r, "marketing", marketing(at(20, 10, 0), None), at(20, 10, 0));
    assert_eq!(clock(&l).started_at, at(20, 10, 0));
    // leadsync's stage write moves the modstamp; the read after the start still shows the
    // morning's date: it proves no touch after the handover.
    feed(&l, &r, "crm", crm(at(20, 10, 5), at(20, 10, 6), Some(november(20))), at(20, 10, 6));
    assert_eq!(clock(&l).first_touch_at, None);
    assert!(l.audit_details("P1", "sla_touch").is_empty());
    // Nothing else came: the deadline passes untouched.
    feed(&l, &r, "crm", crm(at(20, 15, 0), at(20, 15, 1), Some(november(20))), at(20, 15, 1));
    let c = clock(&l);
    assert_eq!((c.first_touch_at, c.phase), (None, SlaPhase::Breached));
}
