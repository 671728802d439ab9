//! The transition table end to end through the ledger: every (from, to) pair, asked for as a
//! system's report and as each named transition, is applied (stage, date stamped once,
//! `stage` audit line) exactly when the table allows it, and refused with the table's reason
//! in the audit otherwise.

use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};

use super::*;
use crate::contract::config::ContractRaw;
use crate::contract::lifecycle::{How, Refusal, TransitionTable};
use crate::domain::{Change, Field, RecordFate, RemoteId, SystemName};

fn t(s: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + s, 0).single().expect("valid")
}

fn rules() -> Rules {
    let mut r = Rules::salesforce_hubspot_defaults();
    let contract = ContractRaw::default().validate("contract").expect("default contract");
    r.contract = Some(Arc::new(contract));
    r
}

fn mkt() -> SystemName {
    SystemName("marketing".into())
}

fn change(n: usize, stage: Option<&str>, at: i64) -> Change {
    let mut fields: Fields = [(Field::Email, format!("p{n}@x.test"))].into();
    if let Some(s) = stage {
        fields.insert(Field::LifecycleStage, s.to_string());
    }
    Change {
        remote: RemoteId { object_type: "contact".into(), id: format!("{n}") },
        fields,
        ledger_key: None,
        modified_at: t(at),
        fetched_at: t(at),
        fate: RecordFate::Live,
        custom: Default::default(),
        last_activity: None,
    }
}

fn reconcile(l: &Ledger, r: &Rules, c: Change, n: usize, now: i64) {
    l.ingest(&mkt(), "poll", &[c], None, t(now)).expect("ingest");
    let mut mint = move || format!("P{n}");
    l.reconcile_pending(r, 100, t(now), &mut mint).expect("reconcile");
}

/// A person (ledger id `P{n}`, HubSpot contact `n`) whose governed stage is `from`, entered
/// at t(1); the contact's known stage is unset, so any later stage it reports is news.
fn person_at(l: &Ledger, r: &Rules, n: usize, from: LifecycleStage) -> String {
    reconcile(l, r, change(n, None, 0), n, 1);
    let mut state = PersonLifecycle { stage: Some(from), ..PersonLifecycle::default() };
    state.dates.enter(from, t(1));
    let conn = l.conn.lock().expect("lock");
    conn.execute(
        "UPDATE lifecycle SET stage = ?2, state = ?3 WHERE lead_id = ?1",
        params![format!("P{n}"), from.as_str(), to_json(&state).expect("json")],
    )
    .expect("set stage");
    format!("P{n}")
}

/// The audit lines of one kind for a person, as JSON details.
fn audits(l: &Ledger, lead: &str, kind: &str) -> Vec<serde_json::Value> {
    let conn = l.conn.lock().expect("lock");
    let mut stmt = conn
        .prepare("SELECT detail FROM audit WHERE lead_id = ?1 AND kind = ?2 ORDER BY id")
        .expect("sql");
    stmt.query_map(params![lead, kind], |r| r.get::<_, String>(0))
        .expect("query")
        .map(|d| serde_json::from_str(&d.expect("row")).expect("json"))
        .collect()
}

fn state(l: &Ledger, lead: &str) -> PersonLifecycle {
    l.lifecycle(lead).expect("read").expect("placed")
}

#[test]
fn a_new_person_is_placed_with_a_dated_audited_entry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = Ledger::open(&dir.path().join("l.db")).expect("open");
    let r = rules();
    reconcile(&l, &r, change(1, Some("mql"), 5), 1, 9);
    let s = state(&l, "P1");
    assert_eq!(s.stage, Some(LifecycleStage::Mql));
    let e = s.dates.get(LifecycleStage::Mql).expect("stamped");
    assert_eq!((e.first, e.times), (t(5), 1));
    let placed = audits(&l, "P1", "stage");
    assert_eq!(placed.len(), 1);
    assert_eq!(placed[0]["via"], "placed");
}

#[test]
fn every_move_of_the_table_is_applied_or_refused_with_its_reason() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = Ledger::open(&dir.path().join("l.db")).expect("open");
    let r = rules();
    let table = TransitionTable::default();
    let mut n = 0;
    let (mut applied, mut refused) = (0, 0);
    for from in LifecycleStage::ALL {
        for to in LifecycleStage::ALL {
            // As a system's report (only stages a six-stage system can say; SAL reads as MQL).
            if let Some(domain) = to.to_domain().filter(|d| LifecycleStage::from(*d) == to) {
                n += 1;
                let lead = person_at(&l, &r, n, from);
                reconcile(&l, &r, change(n, Some(domain.as_str()), 20), n, 21);
                let s = state(&l, &lead);
                let moved = audits(&l, &lead, "stage");
                let refusals = audits(&l, &lead, "stage_refused");
                match table.check(from, to, How::Reported) {
                    Ok(_) => {
                        applied += 1;
                        assert_eq!(s.stage, Some(to), "{from} -> {to} reported");
                        let e = s.dates.get(to).expect("stamped");
                        assert_eq!((e.first, e.times), (t(20), 1), "{from} -> {to}");
                        let last = moved.last().expect("audited");
                        assert_eq!(
                            (&last["from"], &last["to"], &last["via"]),
                            (
                                &serde_json::json!(from.as_str()),
                                &serde_json::json!(to.as_str()),
                                &serde_json::json!("reported")
                            )
                        );
                        assert!(refusals.is_empty());
                        // The same report again is no entry: the date stays stamped once.
                        reconcile(&l, &r, change(n, Some(domain.as_str()), 30), n, 31);
                        assert_eq!(state(&l, &lead).dates, s.dates, "{from} -> {to} again");
                    }
                    Err(Refusal::SameStage { .. }) => {
                        assert_eq!(s.stage, Some(from));
                        assert!(refusals.is_empty(), "reporting the same stage is no refusal");
                    }
                    Err(refusal) => {
                        refused += 1;
                        assert_eq!(s.stage, Some(from), "{from} -> {to} must not apply");
                        assert_eq!(s.dates.get(to), None, "no date for a refused move");
                        assert_eq!(refusals.len(), 1, "{from} -> {to}");
                        assert_eq!(refusals[0]["refusal"], refusal.to_string());
                        assert_eq!(refusals[0]["via"], "reported");
                        // Backward moves are refused as needing a named transition.
                        if to.funnel_rank() < from.funnel_rank() && from.funnel_rank().is_some() {
                            assert!(matches!(refusal, Refusal::NeedsNamedTransition { .. }));
                        }
                    }
                }
            }
            // As each named transition, with a configured reason code.
            for name in NamedMove::ALL {
                n += 1;
                let lead = person_at(&l, &r, n, from);
                let reason = table.named(name).reasons[0].as_str().to_string();
                let got =
                    l.named_transition(&lead, name, &reason, Some(to), &r, t(40)).expect("ledger");
                let s = state(&l, &lead);
                let how = How::Named { name, reason: &reason };
                match table.check(from, to, how) {
                    Ok(want) => {
                        applied += 1;
                        assert_eq!(
                            got,
                            NamedOutcome::Applied { lead_id: lead.clone(), transition: want }
                        );
                        assert_eq!(s.stage, Some(to));
                        assert_eq!(s.dates.get(to).map(|e| (e.first, e.times)), Some((t(40), 1)));
                        let last = audits(&l, &lead, "stage").pop().expect("audited");
                        assert_eq!(last["via"], name.as_str());
                        assert_eq!(last["reason"], reason.as_str());
                        // Asking again is refused (already there) and stamps nothing.
                        let again = l
                            .named_transition(&lead, name, &reason, Some(to), &r, t(50))
                            .expect("ledger");
                        assert!(matches!(again, NamedOutcome::Refused { .. }));
                        assert_eq!(state(&l, &lead).dates, s.dates);
                    }
                    Err(refusal) => {
                        refused += 1;
                        let NamedOutcome::Refused { refusal: text, .. } = got else {
                            panic!("{name} {from} -> {to} must be refused, got {got:?}");
                        };
                        assert_eq!(text, refusal.to_string());
                        assert_eq!(s.stage, Some(from));
                        let a = audits(&l, &lead, "stage_refused");
                        assert_eq!(a.len(), 1);
                        assert_eq!(a[0]["refusal"], refusal.to_string());
                        assert_eq!(a[0]["via"], name.as_str());
                    }
                }
            }
        }
    }
    // The default table allows 22 reportable forward moves (5 from subscriber, 4 from lead, 3
    // from MQL, 3 from SAL, 2 from SQL, 1 from opportunity, 4 from recycled) and 11 named
    // ones (recycle 4, disqualify 5, reopen 2); everything else in 81 pairs x (a report where
    // expressible + 3 named) is refused or a same-stage no-op.
    assert_eq!(applied, 22 + 11);
    assert!(refused > 200, "{refused}");
}

#[test]
fn a_reason_outside_the_list_is_refused_and_audited() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = Ledger::open(&dir.path().join("l.db")).expect("open");
    let r = rules();
    let lead = person_at(&l, &r, 1, LifecycleStage::Mql);
    let got = l
        .named_transition(&lead, NamedMove::Recycle, "felt_like_it", None, &r, t(5))
        .expect("ledger");
    let NamedOutcome::Refused { refusal, .. } = got else { panic!("refused: {got:?}") };
    assert!(refusal.contains("needs a reason code"), "{refusal}");
    assert_eq!(state(&l, &lead).stage, Some(LifecycleStage::Mql));
    let a = audits(&l, &lead, "stage_refused");
    assert_eq!(a[0]["reason"], "felt_like_it");
}

#[test]
fn a_stage_entry_date_is_queued_once_for_the_systems_that_map_it() {
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
    let dir = tempfile::tempdir().expect("tempdir");
    let l = Ledger::open(&dir.path().join("l.db")).expect("open");
    reconcile(&l, &r, change(1, Some("lead"), 0), 1, 1);
    assert!(l.due_pushes(&mkt(), 10, t(2)).expect("outbox").is_empty(), "lead is not mapped");

    // HubSpot itself reports MQL: no field goes back to it, the MQL date does.
    reconcile(&l, &r, change(1, Some("mql"), 5), 1, 6);
    let due = l.due_pushes(&mkt(), 10, t(7)).expect("outbox");
    assert_eq!(due.len(), 1, "{due:?}");
    assert!(due[0].record.fields.is_empty());
    assert_eq!(due[0].record.stage_dates, [("mql".to_string(), t(5))].into());
    assert_eq!(state(&l, "P1").dates_sent["marketing"][&LifecycleStage::Mql], t(5));

    // Another change of the person neither queues the date again nor drops the pending row.
    let mut c = change(1, Some("mql"), 8);
    c.fields.insert(Field::Title, "CTO".into());
    reconcile(&l, &r, c, 1, 9);
    let due = l.due_pushes(&mkt(), 10, t(10)).expect("outbox");
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].record.stage_dates, [("mql".to_string(), t(5))].into());
    assert!(due[0].record.fields.is_empty());
}

#[test]
fn dates_queued_onto_a_create_in_flight_move_to_the_created_record() {
    use crate::contract::config::StageDateRaw;
    use crate::domain::{PushOp, PushOutcome};
    use crate::ledger::PushRetry;
    let mut raw = ContractRaw::default();
    raw.mapping.stage_dates.insert(
        "crm".into(),
        [
            ("mql".to_string(), StageDateRaw::Property("MQL_At__c".into())),
            ("sql".to_string(), StageDateRaw::Property("SQL_At__c".into())),
        ]
        .into(),
    );
    let mut r = Rules::salesforce_hubspot_defaults();
    r.contract = Some(Arc::new(raw.validate("contract").expect("valid")));
    let crm = SystemName("crm".into());
    let dir = tempfile::tempdir().expect("tempdir");
    let l = Ledger::open(&dir.path().join("l.db")).expect("open");
    // An MQL reported by marketing: the CRM create is planned with the MQL date on it.
    reconcile(&l, &r, change(1, Some("mql"), 1), 1, 2);
    let due = l.due_pushes(&crm, 10, t(3)).expect("outbox");
    assert_eq!(due.len(), 1);
    assert!(matches!(due[0].record.op, PushOp::Create { .. }));
    assert_eq!(due[0].record.stage_dates, [("mql".to_string(), t(1))].into());

    // While the create is in flight the person becomes SQL: its date joins the create row.
    reconcile(&l, &r, change(1, Some("sql"), 4), 1, 5);
    let created = RemoteId { object_type: "Lead".into(), id: "00Q000000000001AAA".into() };
    let outcome = PushOutcome::Accepted {
        outbox_id: due[0].record.outbox_id,
        remote: created,
        created: true,
    };
    l.record_push_results(&crm, &due, &[outcome], &r, PushRetry::default(), t(6), t(6))
        .expect("results");
    let next = l.due_pushes(&crm, 10, t(7)).expect("outbox");
    let dated: Vec<_> = next.iter().filter(|d| !d.record.stage_dates.is_empty()).collect();
    assert_eq!(dated.len(), 1, "{next:?}");
    assert!(
        matches!(&dated[0].record.op, PushOp::Update { remote } if remote.id == "00Q000000000001AAA")
    );
    assert_eq!(
        dated[0].record.stage_dates,
        [("sql".to_string(), t(4))].into(),
        "only the late one"
    );
}

#[test]
fn dates_on_a_create_made_obsolete_by_a_found_record_go_to_that_record() {
    use crate::contract::config::StageDateRaw;
    use crate::domain::PushOp;
    let mut raw = ContractRaw::default();
    raw.mapping.stage_dates.insert(
        "crm".into(),
        [("mql".to_string(), StageDateRaw::Property("MQL_At__c".into()))].into(),
    );
    let mut r = Rules::salesforce_hubspot_defaults();
    r.contract = Some(Arc::new(raw.validate("contract").expect("valid")));
    let crm = SystemName("crm".into());
    let dir = tempfile::tempdir().expect("tempdir");
    let l = Ledger::open(&dir.path().join("l.db")).expect("open");
    reconcile(&l, &r, change(1, Some("mql"), 1), 1, 2);
    let due = l.due_pushes(&crm, 10, t(3)).expect("outbox");
    assert!(matches!(due[0].record.op, PushOp::Create { .. }));
    assert_eq!(due[0].record.stage_dates, [("mql".to_string(), t(1))].into());

    // Before the create goes out, a read of the CRM finds the person's lead there.
    let mut lead = change(1, None, 4);
    lead.remote = RemoteId { object_type: "Lead".into(), id: "00Q000000000007AAA".into() };
    l.ingest(&crm, "poll", &[lead], None, t(5)).expect("ingest");
    let mut mint = || "PX".to_string();
    l.reconcile_pending(&r, 100, t(5), &mut mint).expect("reconcile");
    let due = l.due_pushes(&crm, 10, t(6)).expect("outbox");
    assert!(due.iter().all(|d| !matches!(d.record.op, PushOp::Create { .. })), "{due:?}");
    let dated: Vec<_> = due.iter().filter(|d| !d.record.stage_dates.is_empty()).collect();
    assert_eq!(dated.len(), 1, "{due:?}");
    assert!(
        matches!(&dated[0].record.op, PushOp::Update { remote } if remote.id == "00Q000000000007AAA")
    );
    assert_eq!(dated[0].record.stage_dates, [("mql".to_string(), t(1))].into());
}
