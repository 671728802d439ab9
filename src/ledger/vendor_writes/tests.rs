//! Contract writes through the ledger: a named transition's reason code is queued once per
//! system that maps it and cleared once the person moves on; an SLA owner reassignment goes to
//! the CRM records only, audited; writes queued onto a create in flight reach the new record.

use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};

use super::*;
use crate::contract::config::ContractRaw;
use crate::contract::lifecycle::{LifecycleStage, NamedMove};
use crate::domain::{Change, Field, Fields, PushOp, PushOutcome, RecordFate, RemoteId};
use crate::ledger::{NamedOutcome, PushRetry, Sweep};

fn t(s: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + s, 0).single().expect("valid")
}

fn rules() -> Rules {
    let mut raw = ContractRaw::default();
    raw.mapping.stage_reason.insert("marketing".into(), "leadsync_reason".into());
    raw.mapping.stage_reason.insert("crm".into(), "LeadSync_Reason__c".into());
    let mut r = Rules::salesforce_hubspot_defaults();
    r.contract = Some(Arc::new(raw.validate("contract").expect("valid")));
    r
}

fn mkt() -> SystemName {
    SystemName("marketing".into())
}

fn crm() -> SystemName {
    SystemName("crm".into())
}

fn change(object_type: &str, id: &str, stage: Option<&str>, at: i64) -> Change {
    let mut fields: Fields = [(Field::Email, "p1@x.test".to_string())].into();
    fields.insert(Field::LastName, "Person".into());
    fields.insert(Field::Company, "Co".into());
    if let Some(s) = stage {
        fields.insert(Field::LifecycleStage, s.to_string());
    }
    Change {
        remote: RemoteId { object_type: object_type.into(), id: id.into() },
        fields,
        ledger_key: None,
        modified_at: t(at),
        fetched_at: t(at),
        fate: RecordFate::Live,
        custom: Default::default(),
        last_activity: None,
    }
}

fn reconcile(l: &Ledger, r: &Rules, system: &SystemName, c: Change, now: i64) {
    l.ingest(system, "poll", &[c], None, t(now)).expect("ingest");
    let mut mint = || "P1".to_string();
    l.reconcile_pending(r, 100, t(now), &mut mint).expect("reconcile");
}

/// Push everything due for `system` and have the vendor accept it (creates get `new_id`).
fn accept_all(l: &Ledger, r: &Rules, system: &SystemName, new_id: &str, now: i64) {
    let due = l.due_pushes(system, 10, t(now)).expect("outbox");
    let outcomes: Vec<PushOutcome> = due
        .iter()
        .map(|d| match &d.record.op {
            PushOp::Create { object_type } => PushOutcome::Accepted {
                outbox_id: d.record.outbox_id,
                remote: RemoteId { object_type: object_type.clone(), id: new_id.into() },
                created: true,
            },
            PushOp::Update { remote } => PushOutcome::Accepted {
                outbox_id: d.record.outbox_id,
                remote: remote.clone(),
                created: false,
            },
        })
        .collect();
    l.record_push_results(system, &due, &outcomes, r, PushRetry::default(), t(now), t(now))
        .expect("results");
}

fn reasons_due(l: &Ledger, system: &SystemName, now: i64) -> Vec<Option<String>> {
    l.due_pushes(system, 10, t(now))
        .expect("outbox")
        .into_iter()
        .map(|d| d.record.stage_reason)
        .collect()
}

fn audits(l: &Ledger, kind: &str) -> Vec<serde_json::Value> {
    let conn = l.conn.lock().expect("lock");
    let mut stmt =
        conn.prepare("SELECT detail FROM audit WHERE kind = ?1 ORDER BY id").expect("sql");
    stmt.query_map([kind], |r| r.get::<_, String>(0))
        .expect("query")
        .map(|d| serde_json::from_str(&d.expect("row")).expect("json"))
        .collect()
}

#[test]
fn a_reason_is_written_once_and_cleared_when_the_person_moves_on() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = Ledger::open(&dir.path().join("l.db")).expect("open");
    let r = rules();
    // An MQL in HubSpot, created in Salesforce: no reason anywhere yet.
    reconcile(&l, &r, &mkt(), change("contact", "1", Some("mql"), 1), 2);
    accept_all(&l, &r, &crm(), "00Q000000000001AAA", 3);
    accept_all(&l, &r, &mkt(), "", 3);
    assert!(reasons_due(&l, &crm(), 4).is_empty());
    assert_eq!(l.lifecycle("P1").expect("read").expect("placed").stage, Some(LifecycleStage::Mql));

    let got =
        l.named_transition("P1", NamedMove::Recycle, "not_ready", None, &r, t(5)).expect("named");
    assert!(matches!(got, NamedOutcome::Applied { .. }), "{got:?}");
    assert_eq!(reasons_due(&l, &crm(), 6), [Some("not_ready".to_string())]);
    assert_eq!(reasons_due(&l, &mkt(), 6), [Some("not_ready".to_string())]);
    accept_all(&l, &r, &crm(), "", 6);
    accept_all(&l, &r, &mkt(), "", 6);

    // A change that does not move the stage writes no reason again.
    let mut c = change("contact", "1", None, 7);
    c.fields.insert(Field::Title, "CTO".into());
    reconcile(&l, &r, &mkt(), c, 8);
    assert!(reasons_due(&l, &mkt(), 9).iter().all(Option::is_none));
    assert!(reasons_due(&l, &crm(), 9).iter().all(Option::is_none));
    accept_all(&l, &r, &crm(), "", 9);
    accept_all(&l, &r, &mkt(), "", 9);

    // The person qualifies again (reported SQL): the reason no longer stands and is cleared.
    reconcile(&l, &r, &mkt(), change("contact", "1", Some("sql"), 10), 11);
    let s = l.lifecycle("P1").expect("read").expect("placed");
    assert_eq!((s.stage, s.reason.as_deref()), (Some(LifecycleStage::Sql), None));
    assert_eq!(reasons_due(&l, &crm(), 12), [Some(String::new())]);
    assert_eq!(reasons_due(&l, &mkt(), 12), [Some(String::new())]);
    assert_eq!(s.reason_sent["crm"], "");
}

#[test]
fn an_owner_reassignment_goes_to_the_crm_records_only_and_is_audited() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = Ledger::open(&dir.path().join("l.db")).expect("open");
    let r = rules();
    let owner = "005000000000002AAA";
    // No CRM record yet: nothing is queued, and the trail says why.
    reconcile(&l, &r, &mkt(), change("contact", "1", Some("lead"), 1), 2);
    accept_all(&l, &r, &mkt(), "", 3);
    assert!(l.sla_reassign("P1", owner, &r, t(3)).expect("reassign").is_empty());
    assert_eq!(audits(&l, "owner_reassign_skipped").len(), 1);
    // Sales enters the same person as a Salesforce lead: linked by email.
    reconcile(&l, &r, &crm(), change("Lead", "00Q000000000009AAA", None, 4), 5);
    accept_all(&l, &r, &crm(), "", 6);
    accept_all(&l, &r, &mkt(), "", 6);

    let got = l.sla_reassign("P1", owner, &r, t(7)).expect("reassign");
    assert_eq!(got, ["crm:Lead/00Q000000000009AAA"]);
    let due = l.due_pushes(&crm(), 10, t(8)).expect("outbox");
    assert_eq!(due.len(), 1, "{due:?}");
    assert_eq!(due[0].record.owner.as_deref(), Some(owner));
    assert!(
        l.due_pushes(&mkt(), 10, t(8)).expect("outbox").iter().all(|d| d.record.owner.is_none())
    );
    let a = audits(&l, "owner_reassigned");
    assert_eq!(a.len(), 1);
    assert_eq!(
        (a[0]["owner"].as_str(), a[0]["remote"].as_str()),
        (Some(owner), Some("Lead/00Q000000000009AAA"))
    );

    // Refused by the vendor: a dead letter with its message, and nothing queued again.
    let outcome = PushOutcome::Rejected {
        outbox_id: due[0].record.outbox_id,
        code: "FIELD_INTEGRITY_EXCEPTION".into(),
        message: "field integrity exception: unknown (OwnerId)".into(),
    };
    l.record_push_results(&crm(), &due, &[outcome], &r, PushRetry::default(), t(9), t(9))
        .expect("results");
    assert!(l.due_pushes(&crm(), 10, t(10)).expect("outbox").is_empty());
    // A later change of the person never writes the owner again.
    let mut c = change("contact", "1", None, 11);
    c.fields.insert(Field::Title, "CTO".into());
    reconcile(&l, &r, &mkt(), c, 12);
    assert!(
        l.due_pushes(&crm(), 10, t(13)).expect("outbox").iter().all(|d| d.record.owner.is_none())
    );
}

#[test]
fn writes_queued_onto_a_create_in_flight_reach_the_created_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = Ledger::open(&dir.path().join("l.db")).expect("open");
    let r = rules();
    reconcile(&l, &r, &mkt(), change("contact", "1", Some("mql"), 1), 2);
    accept_all(&l, &r, &mkt(), "", 3);
    let due = l.due_pushes(&crm(), 10, t(3)).expect("outbox");
    assert_eq!(due.len(), 1, "one create: {due:?}");
    assert!(matches!(due[0].record.op, PushOp::Create { .. }));
    assert_eq!(due[0].record.stage_reason, None);

    // Recycled while the create is in flight: the reason joins the create row.
    l.named_transition("P1", NamedMove::Recycle, "bad_timing", None, &r, t(4)).expect("named");
    let created = RemoteId { object_type: "Lead".into(), id: "00Q000000000001AAA".into() };
    let outcome = PushOutcome::Accepted {
        outbox_id: due[0].record.outbox_id,
        remote: created,
        created: true,
    };
    l.record_push_results(&crm(), &due, &[outcome], &r, PushRetry::default(), t(5), t(5))
        .expect("results");
    let next = l.due_pushes(&crm(), 10, t(6)).expect("outbox");
    let with_reason: Vec<_> = next.iter().filter(|d| d.record.stage_reason.is_some()).collect();
    assert_eq!(with_reason.len(), 1, "{next:?}");
    assert!(
        matches!(&with_reason[0].record.op, PushOp::Update { remote } if remote.id == "00Q000000000001AAA")
    );
    assert_eq!(with_reason[0].record.stage_reason.as_deref(), Some("bad_timing"));
}

#[test]
fn newer_writes_win_and_what_went_out_is_not_sent_again() {
    let mut w = VendorWrites { stage_reason: Some("not_ready".into()), owner: None };
    w.merge(&VendorWrites { stage_reason: None, owner: Some("0051".into()) });
    w.merge(&VendorWrites { stage_reason: Some(String::new()), owner: None });
    assert_eq!(w, VendorWrites { stage_reason: Some(String::new()), owner: Some("0051".into()) });
    let json = to_json(&VendorWrites::default()).expect("json");
    assert_eq!(json, "{}");
    assert!(VendorWrites::from_column(None).expect("null").is_empty());
}

/// An owner reassignment merged onto a row with field changes: a refusal does not take the
/// fields with it into a dead letter. The row goes again without the owner (audited as
/// `owner_dropped`) and its fields land.
#[test]
fn a_refused_owner_does_not_dead_letter_the_fields_it_rode_with() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = Ledger::open(&dir.path().join("l.db")).expect("open");
    let r = rules();
    let owner = "005000000000002AAA";
    reconcile(&l, &r, &mkt(), change("contact", "1", Some("lead"), 1), 2);
    reconcile(&l, &r, &crm(), change("Lead", "00Q000000000009AAA", None, 3), 4);
    accept_all(&l, &r, &crm(), "", 5);
    accept_all(&l, &r, &mkt(), "", 5);
    // Marketing changes the title (a field push to the CRM is pending) and the SLA escalates.
    let mut c = change("contact", "1", Some("lead"), 6);
    c.fields.insert(Field::Title, "CTO".into());
    reconcile(&l, &r, &mkt(), c, 7);
    l.sla_reassign("P1", owner, &r, t(8)).expect("reassign");
    let due = l.due_pushes(&crm(), 10, t(9)).expect("outbox");
    assert_eq!(due.len(), 1, "one row: {due:?}");
    assert_eq!(due[0].record.owner.as_deref(), Some(owner));
    assert_eq!(due[0].record.fields.get(&Field::Title).map(String::as_str), Some("CTO"));
    let outcome = PushOutcome::Rejected {
        outbox_id: due[0].record.outbox_id,
        code: "FIELD_INTEGRITY_EXCEPTION".into(),
        message: "field integrity exception: unknown (OwnerId)".into(),
    };
    l.record_push_results(&crm(), &due, &[outcome], &r, PushRetry::default(), t(10), t(10))
        .expect("results");
    let again = l.due_pushes(&crm(), 10, t(11)).expect("outbox");
    assert_eq!(again.len(), 1, "the fields go again: {again:?}");
    assert_eq!(again[0].record.owner, None, "without the owner");
    assert_eq!(again[0].record.fields.get(&Field::Title).map(String::as_str), Some("CTO"));
    assert_eq!(audits(&l, "owner_dropped").len(), 1);
    accept_all(&l, &r, &crm(), "", 12);
    assert!(l.due_pushes(&crm(), 10, t(13)).expect("outbox").is_empty());
}

/// The pending rows of `system` as (record id, reason, owner).
fn writes_due(
    l: &Ledger,
    system: &SystemName,
    now: i64,
) -> Vec<(String, Option<String>, Option<String>)> {
    l.due_pushes(system, 10, t(now))
        .expect("outbox")
        .into_iter()
        .map(|d| {
            let id = match &d.record.op {
                PushOp::Create { .. } => String::new(),
                PushOp::Update { remote } => remote.id.clone(),
            };
            (id, d.record.stage_reason, d.record.owner)
        })
        .collect()
}

fn deleted(object_type: &str, id: &str, at: i64) -> Change {
    Change { fate: RecordFate::Deleted, ..change(object_type, id, None, at) }
}

/// A reason and an owner queued onto the row of a CRM lead that is then deleted (its pending
/// row dropped before it went out): the owner has no record left and is dropped, audited; the
/// reason is not lost but queued onto the next record the person gets there.
#[test]
fn a_reason_on_a_dropped_row_is_queued_again_for_the_next_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = Ledger::open(&dir.path().join("l.db")).expect("open");
    let r = rules();
    reconcile(&l, &r, &mkt(), change("contact", "1", Some("mql"), 1), 2);
    accept_all(&l, &r, &crm(), "00Q000000000001AAA", 3);
    accept_all(&l, &r, &mkt(), "", 3);
    l.named_transition("P1", NamedMove::Recycle, "not_ready", None, &r, t(4)).expect("named");
    l.sla_reassign("P1", "005000000000002AAA", &r, t(4)).expect("reassign");
    let queued = writes_due(&l, &crm(), 5);
    assert_eq!(
        queued,
        [(
            "00Q000000000001AAA".to_string(),
            Some("not_ready".to_string()),
            Some("005000000000002AAA".to_string())
        )]
    );
    accept_all(&l, &r, &mkt(), "", 5);

    // The lead is deleted in Salesforce before the push: its pending row goes.
    reconcile(&l, &r, &crm(), deleted("Lead", "00Q000000000001AAA", 6), 7);
    assert!(
        writes_due(&l, &crm(), 8).iter().all(|(id, _, _)| id.is_empty()),
        "nothing for the deleted lead"
    );
    let dropped = audits(&l, "owner_dropped");
    assert_eq!(dropped.len(), 1, "{dropped:?}");
    assert_eq!(dropped[0]["reason"], "no_record");

    // A rep makes a new lead for the person: the reason goes to it.
    reconcile(&l, &r, &crm(), change("Lead", "00Q000000000002AAA", None, 9), 10);
    let due = writes_due(&l, &crm(), 11);
    let with_reason: Vec<_> = due.iter().filter(|(_, reason, _)| reason.is_some()).collect();
    assert_eq!(with_reason.len(), 1, "{due:?}");
    assert_eq!(with_reason[0].1.as_deref(), Some("not_ready"));
    assert!(with_reason[0].0 == "00Q000000000002AAA" || with_reason[0].0.is_empty(), "{due:?}");
    assert_eq!(with_reason[0].2, None, "the owner is not carried to a record it was not for");
    // Sent once: it does not come back after it went out.
    accept_all(&l, &r, &crm(), "00Q000000000003AAA", 12);
    let mut again = change("Lead", "00Q000000000002AAA", None, 13);
    again.fields.insert(Field::FirstName, "Pat".into());
    reconcile(&l, &r, &crm(), again, 14);
    assert!(writes_due(&l, &crm(), 15).iter().all(|(_, reason, _)| reason.is_none()));
}

/// `[contract.mapping.stage_reason]` added to a config after a person was recycled by a
/// version whose lifecycle did not keep the standing reason: the re-evaluation sweep the
/// changed rules fingerprint triggers writes it once, to both systems; an owner an old
/// escalation wrote is not written again.
#[test]
fn the_sweep_after_the_mapping_is_added_writes_a_reason_recorded_before_it() {
    the_sweep_writes_an_old_reason(false);
}

/// The same through the pipelined sweep: its read-only scan must see the recovered reason
/// as something to write.
#[test]
fn the_pipelined_sweep_writes_a_reason_recorded_before_the_mapping() {
    the_sweep_writes_an_old_reason(true);
}

fn the_sweep_writes_an_old_reason(pipelined: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = Ledger::open(&dir.path().join("l.db")).expect("open");
    let mut without = Rules::salesforce_hubspot_defaults();
    without.contract = Some(Arc::new(ContractRaw::default().validate("contract").expect("valid")));
    let with = rules();
    let hashes = |r: &Rules| r.contract.as_deref().map(Contract::rules_hash);
    assert_ne!(hashes(&without), hashes(&with), "adding the mapping triggers the sweep");

    reconcile(&l, &without, &mkt(), change("contact", "1", Some("mql"), 1), 2);
    accept_all(&l, &without, &crm(), "00Q000000000001AAA", 3);
    accept_all(&l, &without, &mkt(), "", 3);
    l.named_transition("P1", NamedMove::Recycle, "sla_expired", None, &without, t(4))
        .expect("named");
    l.sla_reassign("P1", "005000000000002AAA", &without, t(4)).expect("reassign");
    accept_all(&l, &without, &crm(), "", 5);
    accept_all(&l, &without, &mkt(), "", 5);
    assert!(writes_due(&l, &crm(), 6).is_empty());
    // What the older version stored: the stage, no standing reason.
    {
        let conn = l.conn.lock().expect("lock");
        conn.execute("UPDATE lifecycle SET state = json_remove(state, '$.reason')", [])
            .expect("old state");
    }

    if pipelined {
        let reader = crate::ledger::LedgerReader::open(&dir.path().join("l.db")).expect("reader");
        let (scanned, ids) =
            reader.sweep_scan(&with, Sweep::Everyone, None, 500, t(7)).expect("scan");
        let ids_only: Vec<&str> = ids.iter().map(|p| p.id.as_str()).collect();
        assert_eq!((scanned.persons, ids_only.as_slice()), (1, ["P1"].as_slice()));
        let budget = std::time::Duration::from_secs(60);
        let done = l.reevaluate_persons(&with, Sweep::Everyone, &ids, budget, t(7)).expect("write");
        assert_eq!(done.persons, 1);
    } else {
        let batch = l.reevaluate_batch(&with, Sweep::Everyone, None, 500, t(7)).expect("sweep");
        assert_eq!(batch.persons, 1);
    }
    let expect = [("00Q000000000001AAA".to_string(), Some("sla_expired".to_string()), None)];
    assert_eq!(writes_due(&l, &crm(), 8), expect, "the reason, and no owner again");
    let mkt_due = writes_due(&l, &mkt(), 8);
    assert_eq!(mkt_due.len(), 1, "{mkt_due:?}");
    assert_eq!(mkt_due[0].1.as_deref(), Some("sla_expired"));
    accept_all(&l, &with, &crm(), "", 9);
    accept_all(&l, &with, &mkt(), "", 9);
    // Once: a second sweep finds it sent.
    l.reevaluate_batch(&with, Sweep::Everyone, None, 500, t(10)).expect("sweep");
    assert!(writes_due(&l, &crm(), 11).is_empty());
    assert!(writes_due(&l, &mkt(), 11).is_empty());
}

/// A person recycled by a report (not a named move) has no reason to backfill.
#[test]
fn the_backfill_takes_only_a_named_move_into_the_current_stage() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = Ledger::open(&dir.path().join("l.db")).expect("open");
    let r = rules();
    reconcile(&l, &r, &mkt(), change("contact", "1", Some("mql"), 1), 2);
    l.named_transition("P1", NamedMove::Recycle, "not_ready", None, &r, t(3)).expect("named");
    let contract = r.contract.as_deref().expect("contract");
    let conn = l.conn.lock().expect("lock");
    let tx = conn.unchecked_transaction().expect("tx");
    let mut state = crate::ledger::lifecycle::load(&tx, "P1").expect("load").expect("state");
    let stored = state.clone();
    state.reason = None;
    state.reason_sent.clear();
    backfill_reason(&tx, contract, "P1", &mut state).expect("backfill");
    assert_eq!(state.reason, stored.reason, "the named recycle's reason");
    // The same audit, but the person is somewhere else now: no reason stands.
    state.reason = None;
    state.stage = Some(LifecycleStage::Disqualified);
    backfill_reason(&tx, contract, "P1", &mut state).expect("backfill");
    assert_eq!(state.reason, None);
}

/// A Peter at Initech, in the matcher's review band with the other one (typo in the last
/// name's first letter, another address): `(email, last name, company, phone)`.
fn peter(remote: &str, id: &str, who: (&str, &str, &str, &str), at: i64) -> Change {
    let (email, last, company, phone) = who;
    let fields: Fields = [
        (Field::Email, email),
        (Field::FirstName, "Peter"),
        (Field::LastName, last),
        (Field::Company, company),
        (Field::Phone, phone),
        (Field::LifecycleStage, "mql"),
    ]
    .iter()
    .map(|(f, v)| (*f, (*v).to_string()))
    .collect();
    Change { fields, ..change(remote, id, None, at) }
}

/// A reason queued onto a pending create that the plan then drops (`write_plan`; here a
/// duplicate review holds the create, because the other person has a record there) is not
/// lost with the row: it is marked unsent (`stage_reason_requeued`), and goes out with the
/// person's next record there (here the create, queued again once the review is rejected),
/// at their next change.
#[test]
fn a_reason_on_a_create_the_plan_drops_is_queued_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = Ledger::open(&dir.path().join("l.db")).expect("open");
    let mut r = rules();
    r.review_holds_creates = true;
    let mut n = 0;
    let mut mint = || {
        n += 1;
        format!("L{n}")
    };
    let gibbons = ("peter@initech.test", "Gibbons", "Initech", "212 555 0143");
    let hibbons = ("p.hibbons@elsewhere.test", "Hibbons", "Initech LLC", "+1 (212) 555-0143");
    // L1: a Salesforce lead at MQL; HubSpot creates everyone, so a contact is queued.
    l.ingest(&crm(), "poll", &[peter("Lead", "00Q1", gibbons, 1)], None, t(1)).expect("ingest");
    l.reconcile_pending(&r, 100, t(1), &mut mint).expect("reconcile");
    accept_all(&l, &r, &crm(), "", 2);
    l.named_transition("L1", NamedMove::Recycle, "not_ready", None, &r, t(3)).expect("named");
    assert_eq!(
        writes_due(&l, &mkt(), 4),
        [(String::new(), Some("not_ready".to_string()), None)],
        "the reason rides on L1's HubSpot create"
    );

    // A HubSpot contact that may be the same human: a review, which holds L1's create.
    l.ingest(&mkt(), "poll", &[peter("contact", "7", hibbons, 5)], None, t(5)).expect("ingest");
    l.reconcile_pending(&r, 100, t(5), &mut mint).expect("reconcile");
    let reviews = l.open_reviews().expect("reviews");
    assert_eq!(reviews.len(), 1, "{reviews:?}");
    assert!(
        writes_due(&l, &mkt(), 6).iter().all(|(id, _, _)| !id.is_empty()),
        "the create waits for the review"
    );
    let requeued = audits(&l, "stage_reason_requeued");
    assert_eq!(requeued.len(), 1, "{requeued:?}");
    assert_eq!(requeued[0]["stage_reason"], "not_ready");

    // Two people: L1's contact is created after all, and the reason goes with it at their
    // next change.
    l.decide_review(reviews[0].id, crate::ledger::ReviewVerdict::Reject, &r, t(7))
        .expect("decided");
    let mut c = peter("Lead", "00Q1", gibbons, 8);
    c.fields.insert(Field::Title, "CTO".into());
    c.fields.remove(&Field::LifecycleStage);
    l.ingest(&crm(), "poll", &[c], None, t(8)).expect("ingest");
    l.reconcile_pending(&r, 100, t(8), &mut mint).expect("reconcile");
    let creates: Vec<_> =
        writes_due(&l, &mkt(), 9).into_iter().filter(|(id, _, _)| id.is_empty()).collect();
    assert_eq!(creates, [(String::new(), Some("not_ready".to_string()), None)]);
}

/// The stage-entry dates on a pending create the plan drops are not lost with the row either
/// (as the reason above): with nowhere to move them they are marked unsent
/// (`stage_dates_requeued`), and go out with the person's next record there.
#[test]
fn stage_dates_on_a_create_the_plan_drops_are_queued_again() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = Ledger::open(&dir.path().join("l.db")).expect("open");
    let mut raw = ContractRaw::default();
    raw.mapping.stage_dates.insert(
        "marketing".into(),
        [(
            "mql".to_string(),
            crate::contract::config::StageDateRaw::Property("leadsync_mql_date".into()),
        )]
        .into(),
    );
    let mut r = Rules::salesforce_hubspot_defaults();
    r.contract = Some(Arc::new(raw.validate("contract").expect("valid")));
    r.review_holds_creates = true;
    let mut n = 0;
    let mut mint = || {
        n += 1;
        format!("L{n}")
    };
    let dates_due = |l: &Ledger, now: i64| -> Vec<(String, Vec<String>)> {
        l.due_pushes(&mkt(), 10, t(now))
            .expect("outbox")
            .into_iter()
            .map(|d| {
                let id = match &d.record.op {
                    PushOp::Create { .. } => String::new(),
                    PushOp::Update { remote } => remote.id.clone(),
                };
                (id, d.record.stage_dates.keys().cloned().collect())
            })
            .collect()
    };
    let gibbons = ("peter@initech.test", "Gibbons", "Initech", "212 555 0143");
    let hibbons = ("p.hibbons@elsewhere.test", "Hibbons", "Initech LLC", "+1 (212) 555-0143");
    // L1: a Salesforce lead placed at MQL; its date rides on L1's HubSpot create.
    l.ingest(&crm(), "poll", &[peter("Lead", "00Q1", gibbons, 1)], None, t(1)).expect("ingest");
    l.reconcile_pending(&r, 100, t(1), &mut mint).expect("reconcile");
    let mql = vec!["mql".to_string()];
    assert_eq!(dates_due(&l, 2), [(String::new(), mql.clone())], "the date rides on the create");

    // A review holds L1's create: the plan drops it, and its date has nowhere to go.
    l.ingest(&mkt(), "poll", &[peter("contact", "7", hibbons, 5)], None, t(5)).expect("ingest");
    l.reconcile_pending(&r, 100, t(5), &mut mint).expect("reconcile");
    let reviews = l.open_reviews().expect("reviews");
    assert_eq!(reviews.len(), 1, "{reviews:?}");
    assert!(dates_due(&l, 6).iter().all(|(id, _)| !id.is_empty()), "the create waits");
    let requeued = audits(&l, "stage_dates_requeued");
    assert_eq!(requeued.len(), 1, "{requeued:?}");
    assert!(requeued[0]["stage_dates"]["mql"].is_string(), "{requeued:?}");
    let state = l.lifecycle("L1").expect("read").expect("placed");
    assert!(!state.dates_sent.contains_key("marketing"), "{:?}", state.dates_sent);

    // Two people: L1's contact is created after all, with the date, at their next change.
    l.decide_review(reviews[0].id, crate::ledger::ReviewVerdict::Reject, &r, t(7))
        .expect("decided");
    let mut c = peter("Lead", "00Q1", gibbons, 8);
    c.fields.insert(Field::Title, "CTO".into());
    c.fields.remove(&Field::LifecycleStage);
    l.ingest(&crm(), "poll", &[c], None, t(8)).expect("ingest");
    l.reconcile_pending(&r, 100, t(8), &mut mint).expect("reconcile");
    let creates: Vec<_> = dates_due(&l, 9).into_iter().filter(|(id, _)| id.is_empty()).collect();
    assert_eq!(creates, [(String::new(), mql)]);
}

/// A dropped create's dates go to the person's record at that system when they have one
/// by then (`rehome`'s target), merged into what that record's row carries.
#[test]
fn stage_dates_on_a_dropped_create_move_to_the_record() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = Ledger::open(&dir.path().join("l.db")).expect("open");
    let r = rules();
    reconcile(&l, &r, &mkt(), change("contact", "1", Some("mql"), 1), 2);
    accept_all(&l, &r, &crm(), "00Q000000000001AAA", 3);
    accept_all(&l, &r, &mkt(), "", 3);
    let conn = l.conn.lock().expect("lock");
    let tx = conn.unchecked_transaction().expect("tx");
    // A create left pending at the CRM beside the record (as a plan drops it).
    tx.execute(
        "INSERT INTO outbox(lead_id, system, object_type, remote_id, fields, stage_dates,
                            state, next_attempt_at, created_at, updated_at)
         VALUES ('P1', 'crm', 'Lead', '', '{}', '{\"mql\":\"2023-11-14T22:13:21Z\"}',
                 'pending', '2023-11-14T22:13:21Z', '2023-11-14T22:13:21Z',
                 '2023-11-14T22:13:21Z')",
        [],
    )
    .expect("insert");
    let carried = carried(&tx, "P1", "crm", "").expect("read");
    assert!(carried.is_some(), "dates alone are carried");
    tx.execute("DELETE FROM outbox WHERE remote_id = '' AND state = 'pending'", []).expect("del");
    let requeued = rehome(&tx, carried, t(5)).expect("rehome");
    assert!(requeued.is_empty(), "{requeued:?}");
    let on_record: Option<String> = tx
        .query_row(
            "SELECT stage_dates FROM outbox WHERE lead_id = 'P1' AND system = 'crm'
             AND remote_id = '00Q000000000001AAA' AND state = 'pending'",
            [],
            |r| r.get(0),
        )
        .expect("the record's row");
    assert_eq!(on_record.as_deref(), Some("{\"mql\":\"2023-11-14T22:13:21Z\"}"));
}
