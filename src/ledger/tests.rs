//! Ledger tests on a temp file: cursor atomicity, inbox de-duplication, push bookkeeping.

use super::*;
use crate::domain::Field;
use chrono::TimeZone;

fn rules() -> Rules {
    Rules::salesforce_hubspot_defaults()
}

fn t(s: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + s, 0).single().expect("valid")
}

fn change(id: &str, email: &str, stage: &str, at: i64) -> Change {
    Change {
        remote: RemoteId { object_type: "contact".into(), id: id.into() },
        fields: [(Field::Email, email.to_string()), (Field::LifecycleStage, stage.to_string())]
            .into(),
        ledger_key: None,
        modified_at: t(at),
        fetched_at: t(at),
        fate: crate::domain::RecordFate::Live,
        custom: Default::default(),
        last_activity: None,
    }
}

fn open() -> (tempfile::TempDir, Ledger) {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = Ledger::open(&dir.path().join("l.db")).expect("open");
    (dir, l)
}

fn mint() -> impl FnMut() -> String {
    let mut n = 0;
    move || {
        n += 1;
        format!("L{n}")
    }
}

#[test]
fn cursor_commits_with_changes_and_duplicates_are_stored_once() {
    let (_d, l) = open();
    let mkt = SystemName("marketing".into());
    let c = change("1", "a@x.test", "lead", 0);
    let n = l.ingest(&mkt, "poll", &[c.clone(), c.clone()], Some(&Cursor(Some("c1".into()))), t(1));
    assert_eq!(n.expect("ingest"), 1);
    assert_eq!(l.cursor(&mkt).expect("cursor"), Cursor(Some("c1".into())));
    assert_eq!(l.ingest(&mkt, "poll", &[c], None, t(2)).expect("again"), 0);
    assert_eq!(l.backlog().expect("backlog"), (1, 0));
}

#[test]
fn reconcile_links_by_email_and_plans_crm_create_for_mql() {
    let (_d, l) = open();
    let mkt = SystemName("marketing".into());
    let r = rules();
    l.ingest(&mkt, "poll", &[change("1", "A@x.test", "mql", 0)], None, t(1)).expect("ingest");
    let mut m = mint();
    let s = l.reconcile_pending(&r, 100, t(2), &mut m).expect("reconcile");
    assert_eq!((s.processed, s.new_leads, s.new_links), (1, 1, 1));
    let due = l.due_pushes(&SystemName("crm".into()), 10, t(3)).expect("due");
    assert_eq!(due.len(), 1);
    assert!(matches!(due[0].record.op, PushOp::Create { .. }));
    // Processing again changes nothing.
    let s = l.reconcile_pending(&r, 100, t(4), &mut m).expect("again");
    assert_eq!(s.processed, 0);

    // The CRM accepts the create: the person is linked and nothing else is due.
    let crm = SystemName("crm".into());
    let outcome = PushOutcome::Accepted {
        outbox_id: due[0].record.outbox_id,
        remote: RemoteId { object_type: "Lead".into(), id: "00Q1".into() },
        created: true,
    };
    let tally = l
        .record_push_results(&crm, &due, &[outcome], &r, PushRetry::default(), t(5), t(6))
        .expect("record");
    assert_eq!(tally.created, 1);
    assert!(l.due_pushes(&crm, 10, t(7)).expect("due").is_empty());
    let snap = l.snapshot().expect("snapshot");
    assert_eq!(snap.len(), 1);
    assert_eq!(snap[0].links.len(), 2);
}

#[test]
fn rejected_push_is_kept_dead_with_its_reason_and_not_requeued() {
    let (_d, l) = open();
    let mkt = SystemName("marketing".into());
    let crm = SystemName("crm".into());
    let r = rules();
    l.ingest(&mkt, "poll", &[change("1", "a@x.test", "mql", 0)], None, t(1)).expect("ingest");
    l.reconcile_pending(&r, 100, t(2), &mut mint()).expect("reconcile");
    let due = l.due_pushes(&crm, 10, t(3)).expect("due");
    let outcome = PushOutcome::Rejected {
        outbox_id: due[0].record.outbox_id,
        code: "REQUIRED_FIELD_MISSING".into(),
        message: "Required fields are missing: [Company]".into(),
    };
    let tally = l
        .record_push_results(&crm, &due, &[outcome], &r, PushRetry::default(), t(4), t(5))
        .expect("record");
    assert_eq!(tally.dead, 1);
    assert_eq!(l.totals().expect("totals").dead_by_system.get("crm"), Some(&1));
    // A new change of the person does not queue the same doomed create again.
    l.ingest(&mkt, "poll", &[change("1", "a@x.test", "sql", 6)], None, t(7)).expect("ingest");
    l.reconcile_pending(&r, 100, t(8), &mut mint()).expect("reconcile");
    assert!(l.due_pushes(&crm, 10, t(9)).expect("due").is_empty());
}

#[test]
fn retry_outcome_backs_off_then_dead_letters() {
    let (_d, l) = open();
    let mkt = SystemName("marketing".into());
    let crm = SystemName("crm".into());
    let r = rules();
    l.ingest(&mkt, "poll", &[change("1", "a@x.test", "mql", 0)], None, t(1)).expect("ingest");
    l.reconcile_pending(&r, 100, t(2), &mut mint()).expect("reconcile");
    let policy = PushRetry { max_attempts: 2, ..PushRetry::default() };
    let due = l.due_pushes(&crm, 10, t(3)).expect("due");
    let o = PushOutcome::Retry {
        outbox_id: due[0].record.outbox_id,
        code: "UNABLE_TO_LOCK_ROW".into(),
    };
    l.record_push_results(&crm, &due, std::slice::from_ref(&o), &r, policy, t(3), t(3))
        .expect("record");
    assert!(l.due_pushes(&crm, 10, t(3)).expect("due").is_empty(), "backed off");
    let due = l.due_pushes(&crm, 10, t(100)).expect("due later");
    assert_eq!(due.len(), 1);
    l.record_push_results(&crm, &due, &[o], &r, policy, t(100), t(100)).expect("record");
    assert_eq!(l.totals().expect("totals").dead_by_system.get("crm"), Some(&1));
}

#[test]
fn reader_sees_status() {
    let (d, l) = open();
    l.register_systems(&[("crm".into(), "salesforce".into(), "crm".into())]).expect("register");
    l.record_poll_ok(&SystemName("crm".into()), t(1)).expect("ok");
    let r = LedgerReader::open(&d.path().join("l.db")).expect("reader");
    let st = r.status().expect("status");
    assert_eq!(st.len(), 1);
    assert_eq!(st[0].system, "crm");
    assert!(st[0].last_poll_ok_at.is_some());
}

#[test]
fn prune_drops_only_old_processed_inbox_rows() {
    let (_d, l) = open();
    let mkt = SystemName("marketing".into());
    l.ingest(&mkt, "poll", &[change("1", "a@x.test", "lead", 0)], None, t(1)).expect("ingest");
    l.reconcile_pending(&rules(), 100, t(2), &mut mint()).expect("reconcile");
    l.ingest(&mkt, "poll", &[change("2", "b@x.test", "lead", 0)], None, t(3)).expect("ingest");
    assert_eq!(l.prune_inbox(t(10)).expect("prune"), 1, "only the processed row goes");
    assert_eq!(l.backlog().expect("backlog").0, 1, "the unprocessed row stays");
}

#[test]
fn writable_check_passes_then_fails_when_the_writer_refuses_writes() {
    let (_d, l) = open();
    l.writable_check().expect("fresh ledger is writable");
    l.writable_check().expect("and stays so");
    l.set_query_only_for_test(true);
    let err = l.writable_check().expect_err("query_only refuses the heartbeat write");
    assert!(err.to_string().contains("readonly") || err.to_string().contains("read"), "{err}");
    l.set_query_only_for_test(false);
    l.writable_check().expect("writable again");
}

#[test]
fn gauges_count_pending_inbox_outbox_and_dead_per_system() {
    let (_d, l) = open();
    l.register_systems(&[
        ("crm".into(), "salesforce".into(), "crm".into()),
        ("marketing".into(), "hubspot".into(), "marketing".into()),
    ])
    .expect("register");
    let g = l.gauges().expect("gauges");
    assert_eq!(g.systems.len(), 2);
    assert_eq!(g.systems["crm"], SystemGauges::default());

    let mkt = SystemName("marketing".into());
    let crm = SystemName("crm".into());
    let r = rules();
    l.ingest(&mkt, "poll", &[change("1", "a@x.test", "mql", 0)], None, t(1)).expect("ingest");
    l.ingest(&mkt, "poll", &[change("2", "b@x.test", "mql", 0)], None, t(1)).expect("ingest");
    l.record_poll_ok(&mkt, t(2)).expect("poll ok");
    let g = l.gauges().expect("gauges");
    assert_eq!(g.systems["marketing"].inbox_pending, 2);
    assert_eq!(g.inbox_pending(), 2);
    assert_eq!(g.systems["marketing"].last_poll_ok_at, Some(t(2)));
    assert_eq!(g.systems["crm"].last_poll_ok_at, None);

    l.reconcile_pending(&r, 100, t(3), &mut mint()).expect("reconcile");
    let due = l.due_pushes(&crm, 10, t(4)).expect("due");
    assert_eq!(due.len(), 2);
    let g = l.gauges().expect("gauges");
    assert_eq!(g.inbox_pending(), 0);
    assert_eq!(g.systems["crm"].outbox_pending, 2);

    let outcome = PushOutcome::Rejected {
        outbox_id: due[0].record.outbox_id,
        code: "REQUIRED_FIELD_MISSING".into(),
        message: "missing".into(),
    };
    l.record_push_results(&crm, &due[..1], &[outcome], &r, PushRetry::default(), t(5), t(6))
        .expect("record");
    let g = l.gauges().expect("gauges");
    assert_eq!(
        g.systems["crm"],
        SystemGauges {
            inbox_pending: 0,
            outbox_pending: 1,
            dead: 1,
            last_poll_ok_at: None,
            notices_pending: 0,
            ..SystemGauges::default()
        }
    );
}

#[test]
fn a_snapshot_older_than_the_known_state_is_skipped() {
    let (_d, l) = open();
    let mkt = SystemName("marketing".into());
    let r = rules();
    let mut m = mint();
    l.ingest(&mkt, "poll", &[change("1", "a@x.test", "sql", 10)], None, t(11)).expect("ingest");
    l.reconcile_pending(&r, 100, t(12), &mut m).expect("reconcile");
    // A late redelivery of an older state (the stage was "mql" before it became "sql").
    l.ingest(&mkt, "webhook", &[change("1", "a@x.test", "lead", 5)], None, t(13)).expect("late");
    let s = l.reconcile_pending(&r, 100, t(14), &mut m).expect("reconcile late");
    assert_eq!((s.processed, s.stale), (1, 1));
    let snap = l.snapshot().expect("snapshot");
    assert_eq!(snap.len(), 1);
    assert_eq!(snap[0].fields.get(&Field::LifecycleStage).map(String::as_str), Some("sql"));
    // The same vendor time again is not older: it is processed (and changes nothing here).
    l.ingest(&mkt, "webhook", &[change("1", "b@x.test", "sql", 10)], None, t(15)).expect("same");
    let s = l.reconcile_pending(&r, 100, t(16), &mut m).expect("reconcile same");
    assert_eq!((s.processed, s.stale), (1, 0));
}

#[test]
fn a_time_budget_ends_the_reconcile_transaction_early_and_leaves_the_rest_pending() {
    let (_d, l) = open();
    let mkt = SystemName("marketing".into());
    let changes: Vec<Change> =
        (0..5).map(|i| change(&i.to_string(), &format!("p{i}@x.test"), "lead", i)).collect();
    l.ingest(&mkt, "poll", &changes, None, t(10)).expect("ingest");
    let mut m = mint();
    let s = l
        .reconcile_pending_within(&rules(), 100, Some(Duration::ZERO), t(11), &mut m)
        .expect("reconcile");
    assert_eq!(s.processed, 1, "at least one change per call, then the budget is spent");
    let s = l.reconcile_pending_within(&rules(), 100, None, t(12), &mut m).expect("rest");
    assert_eq!(s.processed, 4);
}

fn rec_change(sys_obj: &str, id: &str, f: &[(Field, &str)], at: i64) -> Change {
    Change {
        remote: RemoteId { object_type: sys_obj.into(), id: id.into() },
        fields: f.iter().map(|(k, v)| (*k, (*v).to_string())).collect(),
        ledger_key: None,
        modified_at: t(at),
        fetched_at: t(at),
        fate: crate::domain::RecordFate::Live,
        custom: Default::default(),
        last_activity: None,
    }
}

#[test]
fn a_delete_closes_the_link_leaves_a_tombstone_and_a_restore_reopens_it() {
    let (_d, l) = open();
    let (mkt, crm) = (SystemName("marketing".into()), SystemName("crm".into()));
    let r = rules();
    let mut m = mint();
    let f = [(Field::Email, "a@x.test"), (Field::LifecycleStage, "mql"), (Field::LastName, "Doe")];
    l.ingest(&mkt, "poll", &[rec_change("contact", "1", &f, 0)], None, t(1)).expect("ingest");
    l.ingest(&crm, "poll", &[rec_change("Lead", "00Q1", &f, 0)], None, t(1)).expect("ingest");
    l.reconcile_pending(&r, 100, t(2), &mut m).expect("reconcile");
    assert_eq!(l.snapshot().expect("snap")[0].links.len(), 2);

    let gone =
        Change { fate: crate::domain::RecordFate::Deleted, ..rec_change("Lead", "00Q1", &[], 5) };
    l.ingest(&crm, "poll", &[gone], None, t(6)).expect("ingest");
    l.reconcile_pending(&r, 100, t(6), &mut m).expect("reconcile");
    let snap = l.snapshot().expect("snap");
    assert_eq!(snap[0].links.len(), 1, "the CRM link is closed");
    assert!(
        l.due_pushes(&crm, 10, t(7)).expect("due").is_empty(),
        "no create where it was deleted"
    );

    let reader = LedgerReader::open(l.path()).expect("reader");
    let trace = reader.trace("A@X.test").expect("trace").expect("found");
    assert_eq!(trace.lead_id, "L1");
    let closed: Vec<_> = trace.links.iter().filter(|k| k.closed_at.is_some()).collect();
    assert_eq!(closed[0].closed_reason.as_deref(), Some("deleted"));
    assert!(trace.events.iter().any(|e| e.kind == "change"));
    assert!(trace.fields.iter().any(|f| f.field == "email" && f.value == "a@x.test"));
    assert_eq!(reader.trace("crm:00Q1").expect("trace").map(|t| t.lead_id).as_deref(), Some("L1"));

    // The vendor restores the record: the link reopens, the tombstone goes.
    l.ingest(&crm, "poll", &[rec_change("Lead", "00Q1", &f, 9)], None, t(10)).expect("ingest");
    l.reconcile_pending(&r, 100, t(10), &mut m).expect("reconcile");
    let snap = l.snapshot().expect("snap");
    assert_eq!(snap.len(), 1, "no new person");
    assert_eq!(snap[0].links.len(), 2, "reopened");
}

/// Cause (a) of the convergence notes: a contact deleted before any person held its email
/// was forgotten, and the person later made from a lead with that email was created at
/// HubSpot again. Its email tombstone goes to that person.
#[test]
fn a_record_deleted_before_its_person_existed_keeps_the_person_from_being_created_there() {
    let (_d, l) = open();
    let (mkt, crm) = (SystemName("marketing".into()), SystemName("crm".into()));
    let r = rules();
    let mut m = mint();
    let gone = Change {
        fate: crate::domain::RecordFate::Deleted,
        ..rec_change("contact", "7", &[(Field::Email, "A@x.test")], 0)
    };
    l.ingest(&mkt, "poll", &[gone], None, t(1)).expect("ingest");
    l.reconcile_pending(&r, 100, t(1), &mut m).expect("reconcile");
    assert!(l.snapshot().expect("snap").is_empty(), "a delete makes nobody");

    let f = [(Field::Email, "a@x.test"), (Field::LifecycleStage, "mql"), (Field::LastName, "Doe")];
    l.ingest(&crm, "poll", &[rec_change("Lead", "00Q1", &f, 2)], None, t(3)).expect("ingest");
    // Another address is no business of that tombstone.
    let g = [(Field::Email, "b@x.test"), (Field::LifecycleStage, "mql"), (Field::LastName, "Roe")];
    l.ingest(&crm, "poll", &[rec_change("Lead", "00Q2", &g, 2)], None, t(3)).expect("ingest");
    l.reconcile_pending(&r, 100, t(4), &mut m).expect("reconcile");
    let snap = l.snapshot().expect("snap");
    let a =
        snap.iter().find(|p| p.fields.get(&Field::Email).map(String::as_str) == Some("a@x.test"));
    let a = a.expect("the lead's person");
    assert!(a.tombstoned.contains("marketing"), "{:?}", a.tombstoned);
    let due = l.due_pushes(&mkt, 10, t(5)).expect("due");
    assert_eq!(due.len(), 1, "only b is created at HubSpot: {due:?}");
    assert_ne!(due[0].record.ledger_key, a.id);
}

/// Cause (c) of the convergence notes: an email HubSpot refused because another contact holds
/// it was a dead letter and nothing more. It is a review item naming the contact that holds
/// the address; the email is held (no loop), the push's other fields still go out, and a
/// reviewer's accept gives the person the address the record keeps.
#[test]
fn an_email_another_record_holds_becomes_a_review_item_naming_that_record() {
    let (_d, l) = open();
    let (mkt, crm) = (SystemName("marketing".into()), SystemName("crm".into()));
    let r = rules();
    let mut m = mint();
    let f = [(Field::Email, "a@x.test"), (Field::LifecycleStage, "mql"), (Field::LastName, "Doe")];
    l.ingest(&mkt, "poll", &[rec_change("contact", "1", &f, 0)], None, t(1)).expect("ingest");
    l.ingest(&crm, "poll", &[rec_change("Lead", "00Q1", &f, 0)], None, t(1)).expect("ingest");
    let other = [(Field::Email, "b@x.test"), (Field::LastName, "Roe")];
    l.ingest(&mkt, "poll", &[rec_change("contact", "9", &other, 0)], None, t(1)).expect("ingest");
    l.reconcile_pending(&r, 100, t(2), &mut m).expect("reconcile");
    // The lead's email and title change; the new email is one contact 9 holds.
    let g = [(Field::Email, "b@x.test"), (Field::LastName, "Doe"), (Field::Title, "CTO")];
    l.ingest(&crm, "poll", &[rec_change("Lead", "00Q1", &g, 3)], None, t(4)).expect("ingest");
    l.reconcile_pending(&r, 100, t(4), &mut m).expect("reconcile");
    let due = l.due_pushes(&mkt, 10, t(5)).expect("due");
    assert_eq!(due.len(), 1, "{due:?}");
    assert!(due[0].record.fields.contains_key(&Field::Email));
    let outcome = PushOutcome::Rejected {
        outbox_id: due[0].record.outbox_id,
        code: "CONFLICT".into(),
        message: "http 409: CONFLICT, existing_id=9 (correlation id c)".into(),
    };
    let tally = l
        .record_push_results(&mkt, &due, &[outcome], &r, PushRetry::default(), t(5), t(6))
        .expect("record");
    assert_eq!(tally.dead, 1, "the refused row stays, with the vendor's code");

    let open_items = l.open_reviews().expect("reviews");
    assert_eq!(open_items.len(), 1, "{open_items:?}");
    let item = &open_items[0];
    assert_eq!((item.kind.as_str(), item.field.as_deref()), ("conflict", Some("email")));
    assert_eq!(item.rule.as_deref(), Some("email_taken"));
    assert_eq!(item.detail["held_by"], "contact/9");
    assert_eq!(item.detail["current"], "b@x.test");
    assert_eq!(item.detail["incoming"], "a@x.test");
    let holder = item.detail["held_by_person"].as_str().expect("contact 9 is a person's");
    assert_eq!(item.other_lead_id.as_deref(), Some(holder));

    // No email goes out again while the item is open; the title still does.
    let due = l.due_pushes(&mkt, 10, t(7)).expect("due");
    assert_eq!(due.len(), 1, "{due:?}");
    assert_eq!(due[0].record.fields.keys().copied().collect::<Vec<_>>(), vec![Field::Title]);

    // Accept: the person takes the address the record keeps; it goes to the CRM.
    l.decide_review(item.id, ReviewVerdict::Accept, &r, t(8)).expect("decide");
    let crm_due = l.due_pushes(&crm, 10, t(9)).expect("due");
    assert!(
        crm_due
            .iter()
            .any(|d| d.record.fields.get(&Field::Email).map(String::as_str) == Some("a@x.test")),
        "{crm_due:?}"
    );
}

/// Convergence seed 177 (all ops): a lead merged away before leadsync linked it concerned
/// nobody, and a live state of it read before the merge (a webhook fetch) then linked the
/// dead lead by its email. The merge is noted, so that older state is skipped.
#[test]
fn a_live_state_older_than_an_unlinked_records_merge_does_not_link_it() {
    let (_d, l) = open();
    let crm = SystemName("crm".into());
    let r = rules();
    let mut m = mint();
    let f = [(Field::Email, "a@x.test"), (Field::LastName, "Doe")];
    l.ingest(&crm, "poll", &[rec_change("Lead", "00Q1", &f, 0)], None, t(1)).expect("ingest");
    l.reconcile_pending(&r, 100, t(1), &mut m).expect("reconcile");
    let merged = Change {
        fate: crate::domain::RecordFate::MergedInto { survivor: "00Q1".into() },
        ..rec_change("Lead", "00Q2", &[], 5)
    };
    l.ingest(&crm, "poll", &[merged], None, t(6)).expect("ingest");
    l.reconcile_pending(&r, 100, t(6), &mut m).expect("reconcile");
    let stale = rec_change("Lead", "00Q2", &f, 4);
    l.ingest(&crm, "webhook", &[stale], None, t(7)).expect("ingest");
    l.reconcile_pending(&r, 100, t(7), &mut m).expect("reconcile");
    let snap = l.snapshot().expect("snap");
    assert_eq!(snap.len(), 1);
    let links: Vec<&str> = snap[0].links.iter().map(|(_, r)| r.id.as_str()).collect();
    assert_eq!(links, ["00Q1"], "the merged-away lead is not linked");
}

#[test]
fn a_parked_conflict_waits_for_a_reviewer_and_accept_takes_the_incoming_value() {
    let (_d, l) = open();
    let (mkt, crm) = (SystemName("marketing".into()), SystemName("crm".into()));
    let mut r = rules();
    r.field_rules.insert(Field::Title, crate::reconcile::FieldRule::Review);
    let mut m = mint();
    let f = |title: &'static str| {
        vec![(Field::Email, "a@x.test"), (Field::LifecycleStage, "mql"), (Field::Title, title)]
    };
    l.ingest(&mkt, "poll", &[rec_change("contact", "1", &f("CTO"), 0)], None, t(1)).expect("i");
    l.ingest(&crm, "poll", &[rec_change("Lead", "00Q1", &f("CTO"), 0)], None, t(1)).expect("i");
    l.reconcile_pending(&r, 100, t(2), &mut m).expect("reconcile");
    // Marketing changes the title (one side: taken), then the CRM changes it too before
    // leadsync's push reaches it: both sides moved since they agreed on "CTO".
    l.ingest(&mkt, "poll", &[rec_change("contact", "1", &f("VP"), 3)], None, t(3)).expect("i");
    l.reconcile_pending(&r, 100, t(3), &mut m).expect("reconcile");
    l.ingest(&crm, "poll", &[rec_change("Lead", "00Q1", &f("Head"), 4)], None, t(4)).expect("i");
    l.reconcile_pending(&r, 100, t(4), &mut m).expect("reconcile");
    let open_items = l.open_reviews().expect("reviews");
    assert_eq!(open_items.len(), 1, "{open_items:?}");
    assert_eq!(open_items[0].kind, "conflict");
    assert_eq!(l.snapshot().expect("s")[0].fields[&Field::Title], "VP", "not decided alone");
    for sys in [&mkt, &crm] {
        let due = l.due_pushes(sys, 10, t(5)).expect("due");
        assert!(due.iter().all(|d| !d.record.fields.contains_key(&Field::Title)), "held: {due:?}");
    }
    let item = l.decide_review(open_items[0].id, ReviewVerdict::Accept, &r, t(6)).expect("decided");
    assert_eq!(item.state, "accepted");
    assert_eq!(l.snapshot().expect("s")[0].fields[&Field::Title], "Head");
    let due = l.due_pushes(&mkt, 10, t(7)).expect("due");
    assert_eq!(due[0].record.fields.get(&Field::Title).map(String::as_str), Some("Head"));
    assert!(matches!(
        l.decide_review(open_items[0].id, ReviewVerdict::Reject, &r, t(8)),
        Err(ReviewError::NotOpen { .. })
    ));
}

#[test]
fn an_opt_out_of_a_second_contact_goes_to_its_own_address_and_is_noted_once() {
    let (_d, l) = open();
    let (mkt, crm) = (SystemName("marketing".into()), SystemName("crm".into()));
    let r = rules();
    let mut m = mint();
    let who = [(Field::FirstName, "Ann"), (Field::LastName, "Lee"), (Field::Company, "Acme")];
    let mut first = who.to_vec();
    first.push((Field::Email, "a@x.test"));
    l.ingest(&mkt, "poll", &[rec_change("contact", "1", &first, 0)], None, t(1)).expect("ingest");
    l.reconcile_pending(&r, 100, t(1), &mut m).expect("reconcile");
    // A second contact of the same human under another address, stamped with the ledger id.
    let mut second = who.to_vec();
    second.push((Field::Email, "b@x.test"));
    let c2 = Change { ledger_key: Some("L1".into()), ..rec_change("contact", "2", &second, 2) };
    l.ingest(&mkt, "poll", &[c2], None, t(2)).expect("ingest");
    l.reconcile_pending(&r, 100, t(2), &mut m).expect("reconcile");
    assert_eq!(l.snapshot().expect("snap")[0].links.len(), 2, "one person, two contacts");
    // The CRM opts the person out: both contacts get it, each at its own address (HubSpot
    // keeps consent per address).
    let out = [(Field::Email, "a@x.test"), (Field::EmailOptOut, "true"), (Field::LastName, "Lee")];
    l.ingest(&crm, "poll", &[rec_change("Lead", "00Q1", &out, 3)], None, t(3)).expect("ingest");
    l.reconcile_pending(&r, 100, t(3), &mut m).expect("reconcile");
    let due = l.due_pushes(&mkt, 10, t(4)).expect("due");
    let email_for = |id: &str| {
        let rec = due
            .iter()
            .map(|d| &d.record)
            .find(|rec| matches!(&rec.op, PushOp::Update { remote } if remote.id == id))
            .unwrap_or_else(|| panic!("a push to contact {id}: {due:?}"));
        assert_eq!(rec.fields.get(&Field::EmailOptOut).map(String::as_str), Some("true"));
        rec.person.get(&Field::Email).cloned()
    };
    assert_eq!(email_for("1").as_deref(), Some("a@x.test"));
    assert_eq!(email_for("2").as_deref(), Some("b@x.test"), "the second contact's own address");
    // Accepted: the opt-out is noted for both (the second contact's address did not move),
    // so nothing is planned again.
    let outcomes: Vec<PushOutcome> = due
        .iter()
        .map(|d| PushOutcome::Accepted {
            outbox_id: d.record.outbox_id,
            remote: match &d.record.op {
                PushOp::Update { remote } => remote.clone(),
                PushOp::Create { .. } => panic!("no create expected"),
            },
            created: false,
        })
        .collect();
    l.record_push_results(&mkt, &due, &outcomes, &r, PushRetry::default(), t(5), t(5))
        .expect("record");
    let again = l.due_pushes(&mkt, 10, t(6)).expect("due");
    assert!(again.is_empty(), "no opt-out loop: {again:?}");
}

#[test]
fn the_record_created_with_the_persons_address_is_primary_over_a_fuzzy_match() {
    let (_d, l) = open();
    let (mkt, crm) = (SystemName("marketing".into()), SystemName("crm".into()));
    let r = rules();
    let mut m = mint();
    let who = [(Field::FirstName, "Levi"), (Field::LastName, "Clark"), (Field::Company, "Krusty")];
    let mut lead = who.to_vec();
    lead.extend([(Field::Email, "levi.clark@krusty.test"), (Field::Title, "CTO")]);
    l.ingest(&crm, "poll", &[rec_change("Lead", "00Q1", &lead, 0)], None, t(1)).expect("ingest");
    l.reconcile_pending(&r, 100, t(1), &mut m).expect("reconcile");
    // The create goes out; meanwhile a contact made by hand under another address is read
    // and linked by a fuzzy rule.
    let create = l.due_pushes(&mkt, 10, t(2)).expect("due");
    assert!(matches!(create[0].record.op, PushOp::Create { .. }));
    let mut contact = who.to_vec();
    contact.push((Field::Email, "lc@mail.test"));
    l.ingest(&mkt, "poll", &[rec_change("contact", "7", &contact, 2)], None, t(3)).expect("i");
    l.reconcile_pending(&r, 100, t(3), &mut m).expect("reconcile");
    let snap = l.snapshot().expect("snap");
    assert_eq!(snap.len(), 1, "linked, not a new person");
    let accepted = PushOutcome::Accepted {
        outbox_id: create[0].record.outbox_id,
        remote: RemoteId { object_type: "contact".into(), id: "8".into() },
        created: true,
    };
    l.record_push_results(&mkt, &create, &[accepted], &r, PushRetry::default(), t(4), t(4))
        .expect("record");
    // The created contact holds the person's address: it is the primary. Writing the person's
    // email to the hand-made one would be refused (HubSpot: another contact holds it).
    let marketing: Vec<String> = l.snapshot().expect("snap")[0]
        .links
        .iter()
        .filter(|(s, _)| s == "marketing")
        .map(|(_, r)| r.id.clone())
        .collect();
    assert_eq!(marketing, ["8", "7"]);
    let due = l.due_pushes(&mkt, 10, t(5)).expect("due");
    assert!(
        due.iter().all(|d| !d.record.fields.contains_key(&Field::Email)),
        "no email written over the hand-made contact's: {due:?}"
    );
}

/// The bench's matching figures: a duplicate on its original's person counts as joined, one
/// on another person does not, and a record nobody links is left out.
#[test]
fn match_figures_find_each_seeded_records_person() {
    let (_d, l) = open();
    let mkt = SystemName("marketing".into());
    let changes = [
        change("1", "a@x.test", "lead", 0),
        change("2", "A@x.test", "lead", 0),
        change("3", "b@x.test", "lead", 0),
    ];
    l.ingest(&mkt, "poll", &changes, None, t(1)).expect("ingest");
    l.reconcile_pending(&rules(), 100, t(2), &mut mint()).expect("reconcile");
    let reader = LedgerReader::open(l.path()).expect("reader");
    let dup = |id: &'static str, original: &'static str| SeededDuplicate {
        system: "marketing",
        remote_id: id,
        original_system: "marketing",
        original_id: original,
        within: true,
    };
    let m = reader
        .match_figures([dup("2", "1"), dup("3", "1"), dup("9", "1"), dup("1", "9")])
        .expect("figures");
    assert_eq!((m.joined, m.joined_within, m.in_review), (1, 1, 0));
    assert_eq!(m.links_by_reason.iter().map(|(_, n)| n).sum::<i64>(), 3);
}

/// Plans are fixed at prepare time (`SQLITE_DBCONFIG_ENABLE_QPSG`): without it the bundled
/// SQLite re-prepared `load_lead`'s link query on every run in a large ledger (BENCHMARKS.md,
/// "The re-evaluation applied").
#[test]
fn connections_fix_query_plans_at_prepare_time() {
    let (_d, l) = open();
    let conn = l.conn.lock().expect("lock");
    let qpsg = rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG;
    assert!(conn.db_config(qpsg).expect("db config"));
}

/// A contact read without an email address holds none: an opt-out planned for it carries no
/// address (the connector answers `missing_email`), never the person's address, which belongs
/// to another contact (unsubscribing that one leaves this record as it was).
#[test]
fn an_opt_out_of_a_contact_without_an_address_carries_none() {
    let (_d, l) = open();
    let (mkt, crm) = (SystemName("marketing".into()), SystemName("crm".into()));
    let r = rules();
    let mut m = mint();
    let who = [(Field::FirstName, "Ann"), (Field::LastName, "Lee"), (Field::Company, "Acme")];
    let mut first = who.to_vec();
    first.push((Field::Email, "a@x.test"));
    l.ingest(&mkt, "poll", &[rec_change("contact", "1", &first, 0)], None, t(1)).expect("ingest");
    l.reconcile_pending(&r, 100, t(1), &mut m).expect("reconcile");
    let c2 = Change { ledger_key: Some("L1".into()), ..rec_change("contact", "2", &who, 2) };
    l.ingest(&mkt, "poll", &[c2], None, t(2)).expect("ingest");
    l.reconcile_pending(&r, 100, t(2), &mut m).expect("reconcile");
    let out = [(Field::Email, "a@x.test"), (Field::EmailOptOut, "true"), (Field::LastName, "Lee")];
    l.ingest(&crm, "poll", &[rec_change("Lead", "00Q1", &out, 3)], None, t(3)).expect("ingest");
    l.reconcile_pending(&r, 100, t(3), &mut m).expect("reconcile");
    let due = l.due_pushes(&mkt, 10, t(4)).expect("due");
    let to = |id: &str| {
        due.iter()
            .map(|d| &d.record)
            .find(|rec| matches!(&rec.op, PushOp::Update { remote } if remote.id == id))
            .unwrap_or_else(|| panic!("a push to contact {id}: {due:?}"))
    };
    assert_eq!(to("1").person.get(&Field::Email).map(String::as_str), Some("a@x.test"));
    assert_eq!(to("2").fields.get(&Field::EmailOptOut).map(String::as_str), Some("true"));
    assert_eq!(to("2").person.get(&Field::Email), None, "contact 2 holds no address");
}

/// Persons due a create in `sys` (by ledger key).
fn creates_due(l: &Ledger, sys: &SystemName, at: i64) -> Vec<String> {
    l.due_pushes(sys, 100, t(at))
        .expect("due")
        .into_iter()
        .filter(|d| matches!(d.record.op, crate::domain::PushOp::Create { .. }))
        .map(|d| d.record.ledger_key)
        .collect()
}

/// A record in the matcher's review band becomes a new person, and neither person is created
/// where the other has a record while the review is open: if they are one human, that create
/// would be a second record of them at the vendor. A reject sends both creates out.
#[test]
fn a_duplicate_review_holds_creates_where_the_other_person_has_a_record_until_rejected() {
    for verdict in [ReviewVerdict::Reject, ReviewVerdict::Accept] {
        let (_d, l) = open();
        let (mkt, crm) = (SystemName("marketing".into()), SystemName("crm".into()));
        let mut r = rules();
        r.review_holds_creates = true;
        let mut m = mint();
        // L1: a HubSpot contact, MQL, so a Salesforce lead is queued for them.
        let gibbons = [
            (Field::Email, "peter@initech.test"),
            (Field::FirstName, "Peter"),
            (Field::LastName, "Gibbons"),
            (Field::Company, "Initech"),
            (Field::Phone, "212 555 0143"),
            (Field::LifecycleStage, "mql"),
        ];
        l.ingest(&mkt, "poll", &[rec_change("contact", "1", &gibbons, 0)], None, t(1)).expect("i");
        l.reconcile_pending(&r, 100, t(1), &mut m).expect("reconcile");
        assert_eq!(creates_due(&l, &crm, 2), ["L1"]);
        // L2: a Salesforce lead that may be the same human (typo in the last name's first
        // letter, another address): the review band.
        let hibbons = [
            (Field::Email, "p.hibbons@elsewhere.test"),
            (Field::FirstName, "Peter"),
            (Field::LastName, "Hibbons"),
            (Field::Company, "Initech LLC"),
            (Field::Phone, "+1 (212) 555-0143"),
            (Field::LifecycleStage, "mql"),
        ];
        l.ingest(&crm, "poll", &[rec_change("Lead", "00Q1", &hibbons, 2)], None, t(3)).expect("i");
        l.reconcile_pending(&r, 100, t(3), &mut m).expect("reconcile");
        let open_items = l.open_reviews().expect("reviews");
        assert_eq!(open_items.len(), 1, "{open_items:?}");
        assert_eq!(open_items[0].kind, "duplicate");
        assert!(creates_due(&l, &crm, 4).is_empty(), "L1's queued lead waits for the review");
        assert!(creates_due(&l, &mkt, 4).is_empty(), "L2 is not created in HubSpot meanwhile");
        let snap = l.snapshot().expect("snapshot");
        let held = |id: &str| snap.iter().find(|p| p.id == id).map(|p| p.review_held.clone());
        assert_eq!(held("L1"), Some(["crm".to_string()].into()));
        assert_eq!(held("L2"), Some(["marketing".to_string()].into()));
        // Verification does not count a held create as a person missing there.
        let fetch = |_: &SystemName, _: &RemoteId| None;
        let missing: Vec<_> = crate::verify::compare(&snap, &r, &fetch)
            .into_iter()
            .filter(|d| d.problem == "person missing in this system")
            .collect();
        assert!(missing.is_empty(), "{missing:?}");
        let reader = LedgerReader::open(&_d.path().join("l.db")).expect("reader");
        let held_counts = reader.review_hold_counts().expect("counts");
        assert_eq!(held_counts, [("crm".to_string(), 1), ("marketing".to_string(), 1)].into());
        assert_eq!(
            reader.open_review_counts().expect("counts"),
            [("duplicate".to_string(), 1)].into()
        );

        l.decide_review(open_items[0].id, verdict, &r, t(5)).expect("decided");
        if verdict == ReviewVerdict::Reject {
            assert_eq!(creates_due(&l, &crm, 6), ["L1"], "different people: created after all");
            assert_eq!(creates_due(&l, &mkt, 6), ["L2"]);
        } else {
            assert!(creates_due(&l, &crm, 6).is_empty(), "one human: their lead exists");
            assert!(creates_due(&l, &mkt, 6).is_empty(), "and so does their contact");
        }
    }
}

/// `identity.review_holds_creates = false` (the default): the same review leaves creates alone.
#[test]
fn without_review_holds_a_duplicate_review_leaves_creates_alone() {
    let (_d, l) = open();
    let (mkt, crm) = (SystemName("marketing".into()), SystemName("crm".into()));
    let r = rules();
    assert!(!r.review_holds_creates);
    let mut m = mint();
    let who = |email, last, company, phone| {
        vec![
            (Field::Email, email),
            (Field::FirstName, "Peter"),
            (Field::LastName, last),
            (Field::Company, company),
            (Field::Phone, phone),
            (Field::LifecycleStage, "mql"),
        ]
    };
    let a = who("peter@initech.test", "Gibbons", "Initech", "212 555 0143");
    let b = who("p.hibbons@elsewhere.test", "Hibbons", "Initech LLC", "+1 (212) 555-0143");
    l.ingest(&mkt, "poll", &[rec_change("contact", "1", &a, 0)], None, t(1)).expect("i");
    l.reconcile_pending(&r, 100, t(1), &mut m).expect("reconcile");
    l.ingest(&crm, "poll", &[rec_change("Lead", "00Q1", &b, 2)], None, t(3)).expect("i");
    l.reconcile_pending(&r, 100, t(3), &mut m).expect("reconcile");
    assert_eq!(l.open_reviews().expect("reviews").len(), 1);
    assert_eq!(creates_due(&l, &crm, 4), ["L1"]);
    assert_eq!(creates_due(&l, &mkt, 4), ["L2"]);
}

/// `status` counts the vendor's webhook notices as received, not the engine's own re-reads
/// (which wait in the same table and do count as pending).
#[test]
fn status_counts_rereads_as_pending_but_not_as_received() {
    let (d, l) = open();
    let crm = SystemName("crm".into());
    assert!(REREAD_KEY_PREFIX.starts_with("leadsync-reread:"), "status's SQL spells it out");
    l.register_systems(&[("crm".into(), "salesforce".into(), "crm".into())]).expect("systems");
    let remote = RemoteId { object_type: "Lead".into(), id: "00Q1".into() };
    l.with_tx(|tx| queue_reread(tx, &crm, &remote, t(1))).expect("reread");
    let reader = LedgerReader::open(&d.path().join("l.db")).expect("reader");
    let s = reader.status().expect("status").into_iter().find(|s| s.system == "crm").expect("crm");
    assert_eq!((s.notices_received, s.notices_pending), (0, 1));
}

/// A duplicate review between a person and one folded into it is one event of the trace,
/// not one from each side.
#[test]
fn a_review_between_two_persons_of_one_trace_is_listed_once() {
    let (_d, l) = open();
    {
        let conn = l.conn.lock().expect("lock");
        conn.execute_batch(
            "INSERT INTO leads(id, email_norm, fields, provenance, created_at, updated_at)
             VALUES ('L1', 'a@x.test', '{\"email\":\"a@x.test\"}', '{}', 't1', 't1'),
                    ('L2', 'b@x.test', '{\"email\":\"b@x.test\"}', '{}', 't1', 't1');
             INSERT INTO reviews(kind, lead_id, other_lead_id, score, rule, detail, state,
                                 created_at, decided_at, decision)
             VALUES ('duplicate', 'L2', 'L1', 0.8, 'name_company', '{}', 'accepted', 't2', 't3',
                     'merge');
             UPDATE leads SET merged_into = 'L1' WHERE id = 'L2';",
        )
        .expect("fixture");
    }
    let reader = LedgerReader::open(l.path()).expect("reader");
    let trace = reader.trace("L1").expect("trace").expect("found");
    assert_eq!(trace.merged_from, ["L2".to_string()]);
    let reviews: Vec<_> = trace.events.iter().filter(|e| e.kind == "review_duplicate").collect();
    assert_eq!(reviews.len(), 1, "{reviews:?}");
    assert_eq!(reviews[0].lead.as_deref(), Some("L2"), "the review's own person");
    assert_eq!(reviews[0].detail["other"], "L1");
}
