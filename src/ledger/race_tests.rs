//! Deterministic replays of push/read interleavings that lost writes in the convergence test
//! under load (seed 106): each test drives the ledger through the exact order of events the
//! engine's tasks produced, and fails without the fix it names.

use super::*;
use crate::domain::{Field, RecordFate};
use chrono::TimeZone;

fn t(s: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + s, 0).single().expect("valid")
}

fn read(object: &str, id: &str, f: &[(Field, &str)], modified: i64, fetched: i64) -> Change {
    Change {
        remote: RemoteId { object_type: object.into(), id: id.into() },
        fields: f.iter().map(|(k, v)| (*k, (*v).to_string())).collect(),
        ledger_key: None,
        modified_at: t(modified),
        fetched_at: t(fetched),
        fate: RecordFate::Live,
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

fn accepted(due: &DuePush) -> PushOutcome {
    let PushOp::Update { remote } = &due.record.op else { panic!("an update: {due:?}") };
    PushOutcome::Accepted {
        outbox_id: due.record.outbox_id,
        remote: remote.clone(),
        created: false,
    }
}

const CRM_LEAD: &str = "00Q1";

/// A person with a CRM lead (status `new`) and a HubSpot contact (stage `lead`), linked.
fn linked_person(l: &Ledger, r: &Rules) -> (SystemName, SystemName) {
    let (mkt, crm) = (SystemName("marketing".into()), SystemName("crm".into()));
    let lead = [(Field::Email, "a@x.test"), (Field::LastName, "Doe"), (Field::LeadStatus, "new")];
    let contact =
        [(Field::Email, "a@x.test"), (Field::LastName, "Doe"), (Field::LifecycleStage, "lead")];
    l.ingest(&crm, "poll", &[read("Lead", CRM_LEAD, &lead, 0, 0)], None, t(1)).expect("ingest");
    l.ingest(&mkt, "poll", &[read("contact", "1", &contact, 0, 0)], None, t(1)).expect("ingest");
    l.reconcile_pending(r, 100, t(2), &mut mint()).expect("reconcile");
    assert_eq!(l.snapshot().expect("snap").len(), 1, "one person");
    (mkt, crm)
}

/// Seed 106: a push to a HubSpot contact is in flight when a read shows the contact holds its
/// fields already, so the reconciler drops the (still pending) row; a CRM change then plans a
/// new push to the same contact, which SQLite gives the freed rowid, with version 1 again.
/// When the first push's answer is recorded, `id = ? AND version = ?` matched the new row and
/// marked it done: the new status (and the stage it implies) never went out, and nothing was
/// pending any more. The answer must mark done only the row that was sent.
#[test]
fn an_answer_for_a_dropped_row_does_not_mark_done_the_row_that_took_its_id() {
    let (_d, l) = open();
    let r = Rules::salesforce_hubspot_defaults();
    let (mkt, crm) = linked_person(&l, &r);
    let mut m = mint();

    // The contact has no status yet: leadsync writes the person's.
    let sent = l.due_pushes(&mkt, 10, t(3)).expect("due");
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].record.fields.get(&Field::LeadStatus).map(String::as_str), Some("new"));

    // While it is in flight, a poll shows the contact with that status: nothing left to write.
    let landed = [
        (Field::Email, "a@x.test"),
        (Field::LastName, "Doe"),
        (Field::LifecycleStage, "lead"),
        (Field::LeadStatus, "new"),
    ];
    l.ingest(&mkt, "poll", &[read("contact", "1", &landed, 4, 4)], None, t(4)).expect("ingest");
    l.reconcile_pending(&r, 100, t(4), &mut m).expect("reconcile");
    assert!(l.due_pushes(&mkt, 10, t(4)).expect("due").is_empty(), "the row was dropped");

    // Sales works the lead in the CRM: a new push to the same contact.
    let working =
        [(Field::Email, "a@x.test"), (Field::LastName, "Doe"), (Field::LeadStatus, "working")];
    l.ingest(&crm, "poll", &[read("Lead", CRM_LEAD, &working, 5, 5)], None, t(5)).expect("i");
    l.reconcile_pending(&r, 100, t(5), &mut m).expect("reconcile");
    let next = l.due_pushes(&mkt, 10, t(6)).expect("due");
    assert_eq!(next.len(), 1, "{next:?}");
    assert_eq!(
        (next[0].record.outbox_id, next[0].version),
        (sent[0].record.outbox_id, sent[0].version),
        "the scenario: the new row took the dropped row's id and version"
    );

    // The first push's answer comes back.
    let outcome = accepted(&sent[0]);
    l.record_push_results(&mkt, &sent, &[outcome], &r, PushRetry::default(), t(7), t(7))
        .expect("record");
    let due = l.due_pushes(&mkt, 10, t(8)).expect("due");
    assert_eq!(due.len(), 1, "the new status still has to go out: {due:?}");
    assert_eq!(due[0].record.fields.get(&Field::LeadStatus).map(String::as_str), Some("working"));
}

/// A read that started before two pushes to a record ended is reconciled after both answers
/// were recorded: its values of the first push's fields are as old as those of the second's.
/// With only the last push's fields remembered, the old status was news and reverted the
/// person (and was pushed to the CRM).
#[test]
fn a_read_older_than_two_pushes_is_not_news_for_the_fields_of_the_first() {
    let (_d, l) = open();
    let r = Rules::salesforce_hubspot_defaults();
    let (mkt, crm) = linked_person(&l, &r);
    let mut m = mint();
    let settle = |l: &Ledger, ended: i64| {
        let due = l.due_pushes(&mkt, 10, t(ended)).expect("due");
        assert_eq!(due.len(), 1, "{due:?}");
        let outcomes: Vec<_> = due.iter().map(accepted).collect();
        l.record_push_results(&mkt, &due, &outcomes, &r, PushRetry::default(), t(ended), t(ended))
            .expect("record");
    };
    settle(&l, 3);

    // The CRM moves the status on: pushed to the contact, answered at t(10).
    let working =
        [(Field::Email, "a@x.test"), (Field::LastName, "Doe"), (Field::LeadStatus, "working")];
    l.ingest(&crm, "poll", &[read("Lead", CRM_LEAD, &working, 5, 5)], None, t(5)).expect("i");
    l.reconcile_pending(&r, 100, t(5), &mut m).expect("reconcile");
    settle(&l, 10);
    // Then a title: pushed, answered at t(20).
    let titled = [
        (Field::Email, "a@x.test"),
        (Field::LastName, "Doe"),
        (Field::LeadStatus, "working"),
        (Field::Title, "CTO"),
    ];
    l.ingest(&crm, "poll", &[read("Lead", CRM_LEAD, &titled, 12, 12)], None, t(12)).expect("i");
    l.reconcile_pending(&r, 100, t(12), &mut m).expect("reconcile");
    settle(&l, 20);
    assert!(l.due_pushes(&crm, 10, t(20)).expect("due").is_empty());

    // A poll that started at t(8), before the status push had ended, is reconciled only now.
    let old = [
        (Field::Email, "a@x.test"),
        (Field::LastName, "Doe"),
        (Field::LifecycleStage, "lead"),
        (Field::LeadStatus, "new"),
    ];
    l.ingest(&mkt, "poll", &[read("contact", "1", &old, 4, 8)], None, t(21)).expect("ingest");
    let s = l.reconcile_pending(&r, 100, t(21), &mut m).expect("reconcile");
    let person = &l.snapshot().expect("snap")[0];
    assert_eq!(person.fields.get(&Field::LeadStatus).map(String::as_str), Some("working"));
    assert!(l.due_pushes(&crm, 10, t(22)).expect("due").is_empty(), "nothing reverted");
    assert_eq!(s.rereads, 1, "the contact is read again to settle it");
}

/// A CRM lead deleted before leadsync ever read it (seed 139 with `delete`): the delete is
/// the first and only thing leadsync sees of it. Its person (here from HubSpot, found by the
/// email the deleted record still carries) gets the tombstone a read-then-deleted lead would
/// have left, and the create queued for them in the CRM is dropped.
#[test]
fn a_record_deleted_before_leadsync_read_it_leaves_its_person_a_tombstone() {
    let (_d, l) = open();
    let r = Rules::salesforce_hubspot_defaults();
    let (mkt, crm) = (SystemName("marketing".into()), SystemName("crm".into()));
    let mut m = mint();
    let contact =
        [(Field::Email, "a@x.test"), (Field::LastName, "Doe"), (Field::LifecycleStage, "mql")];
    l.ingest(&mkt, "poll", &[read("contact", "1", &contact, 0, 0)], None, t(1)).expect("ingest");
    l.reconcile_pending(&r, 100, t(2), &mut m).expect("reconcile");
    let due = l.due_pushes(&crm, 10, t(3)).expect("due");
    assert!(matches!(
        due[..],
        [DuePush { record: PushRecord { op: PushOp::Create { .. }, .. }, .. }]
    ));

    let gone = Change {
        fate: RecordFate::Deleted,
        ..read("Lead", CRM_LEAD, &[(Field::Email, "A@x.test")], 2, 3)
    };
    l.ingest(&crm, "poll", std::slice::from_ref(&gone), None, t(3)).expect("ingest");
    l.reconcile_pending(&r, 100, t(4), &mut m).expect("reconcile");
    assert!(l.due_pushes(&crm, 10, t(5)).expect("due").is_empty(), "not created again");
    let snap = l.snapshot().expect("snap");
    assert_eq!(snap.len(), 1);
    assert!(snap[0].tombstoned.contains("crm"), "{:?}", snap[0]);
    assert_eq!(snap[0].links.len(), 1, "only the contact is linked");

    // A later change of the person plans no create there either.
    let sql =
        [(Field::Email, "a@x.test"), (Field::LastName, "Doe"), (Field::LifecycleStage, "sql")];
    l.ingest(&mkt, "poll", &[read("contact", "1", &sql, 6, 6)], None, t(6)).expect("ingest");
    l.reconcile_pending(&r, 100, t(7), &mut m).expect("reconcile");
    assert!(l.due_pushes(&crm, 10, t(8)).expect("due").is_empty());
    // The same delete read again concerns nobody new.
    l.ingest(&crm, "poll", &[Change { fetched_at: t(9), ..gone }], None, t(9)).expect("ingest");
    let s = l.reconcile_pending(&r, 100, t(9), &mut m).expect("reconcile");
    assert_eq!((s.new_leads, s.new_links), (0, 0));
}

/// Seed 92 with `convert`: the lead is converted at the vendor, its person's email then
/// changes in HubSpot, and the CRM poll returns the new contact (a person of its own, with the
/// lead's old email) before the lead's conversion. Folding the two persons kept the contact
/// person's values and pushed the old email back to HubSpot.
#[test]
fn a_conversion_read_after_an_email_change_does_not_revert_the_email() {
    let (_d, l) = open();
    let r = Rules::salesforce_hubspot_defaults();
    let (mkt, crm) = linked_person(&l, &r);
    let mut m = mint();
    let new_email = [(Field::Email, "a.new@x.test"), (Field::LastName, "Doe")];
    l.ingest(&mkt, "poll", &[read("contact", "1", &new_email, 10, 10)], None, t(10)).expect("i");
    l.reconcile_pending(&r, 100, t(10), &mut m).expect("reconcile");

    let old = [(Field::Email, "a@x.test"), (Field::LastName, "Doe")];
    let contact = read("Contact", "003C", &old, 5, 12);
    let converted = Change {
        fate: RecordFate::ConvertedTo {
            remote: RemoteId { object_type: "Contact".into(), id: "003C".into() },
        },
        ..read("Lead", CRM_LEAD, &old, 5, 12)
    };
    l.ingest(&crm, "poll", &[contact, converted], None, t(12)).expect("ingest");
    l.reconcile_pending(&r, 100, t(12), &mut m).expect("reconcile");
    let snap = l.snapshot().expect("snap");
    assert_eq!(snap.len(), 1, "one human, one person: {snap:?}");
    assert_eq!(snap[0].fields.get(&Field::Email).map(String::as_str), Some("a.new@x.test"));
    let to_hubspot = l.due_pushes(&mkt, 10, t(13)).expect("due");
    assert!(
        to_hubspot.iter().all(|d| !d.record.fields.contains_key(&Field::Email)),
        "{to_hubspot:?}"
    );
    let to_crm = l.due_pushes(&crm, 10, t(13)).expect("due");
    assert!(
        to_crm.iter().any(|d| d.record.fields.get(&Field::Email).map(String::as_str)
            == Some("a.new@x.test")),
        "the contact gets the new email: {to_crm:?}"
    );
}

/// Seed 162 with `convert`: a lead converted before leadsync read it is first seen with its
/// conversion. It belongs to the person with its email (here from HubSpot), not to a new
/// person of its own: otherwise its contact has a person without the HubSpot contact, whose
/// create there collides with it, and the HubSpot person gets a CRM lead made by leadsync.
#[test]
fn a_lead_first_read_converted_joins_the_person_with_its_email() {
    let (_d, l) = open();
    let r = Rules::salesforce_hubspot_defaults();
    let (mkt, crm) = (SystemName("marketing".into()), SystemName("crm".into()));
    let mut m = mint();
    let f = [(Field::Email, "a@x.test"), (Field::LastName, "Doe"), (Field::LifecycleStage, "mql")];
    l.ingest(&mkt, "poll", &[read("contact", "1", &f, 0, 0)], None, t(1)).expect("ingest");
    l.reconcile_pending(&r, 100, t(2), &mut m).expect("reconcile");

    let lead = [(Field::Email, "a@x.test"), (Field::LastName, "Doe")];
    let converted = Change {
        fate: RecordFate::ConvertedTo {
            remote: RemoteId { object_type: "Contact".into(), id: "003C".into() },
        },
        ..read("Lead", CRM_LEAD, &lead, 3, 3)
    };
    let contact = read("Contact", "003C", &lead, 3, 4);
    l.ingest(&crm, "poll", &[converted, contact], None, t(4)).expect("ingest");
    l.reconcile_pending(&r, 100, t(5), &mut m).expect("reconcile");
    let snap = l.snapshot().expect("snap");
    assert_eq!(snap.len(), 1, "one human, one person: {snap:?}");
    let links: Vec<&str> = snap[0].links.iter().map(|(_, r)| r.id.as_str()).collect();
    assert_eq!(links, ["1", "003C"]);
    assert!(l.due_pushes(&crm, 10, t(6)).expect("due").is_empty(), "no lead made by leadsync");
}

/// Seed 11 with `sf-merge`: a CRM lead linked to the person without a phone has its phone
/// filled by a vendor merge (from the merged-away lead, an old value); the person's phone was
/// edited in HubSpot after that merge. The lead never agreed with the person on the phone, so
/// its value is not a change since an agreement, and being older it must not revert the edit.
#[test]
fn an_older_value_on_a_record_that_never_agreed_on_the_field_does_not_revert_it() {
    let (_d, l) = open();
    let r = Rules::salesforce_hubspot_defaults();
    let (mkt, crm) = linked_person(&l, &r);
    let mut m = mint();
    let phone = |p: &'static str| {
        [
            (Field::Email, "a@x.test"),
            (Field::LastName, "Doe"),
            (Field::LifecycleStage, "lead"),
            (Field::Phone, p),
        ]
    };
    l.ingest(
        &mkt,
        "poll",
        &[read("contact", "1", &phone("+44 20 7946 0000"), 10, 10)],
        None,
        t(10),
    )
    .expect("ingest");
    l.reconcile_pending(&r, 100, t(10), &mut m).expect("reconcile");

    // The lead, modified at t(5) by the merge, read only now.
    let merged = [
        (Field::Email, "a@x.test"),
        (Field::LastName, "Doe"),
        (Field::LeadStatus, "new"),
        (Field::Phone, "+1 865 533 1083"),
    ];
    l.ingest(&crm, "poll", &[read("Lead", CRM_LEAD, &merged, 5, 11)], None, t(11)).expect("i");
    l.reconcile_pending(&r, 100, t(11), &mut m).expect("reconcile");
    let person = &l.snapshot().expect("snap")[0];
    assert_eq!(person.fields.get(&Field::Phone).map(String::as_str), Some("+44 20 7946 0000"));
    assert!(
        l.due_pushes(&mkt, 10, t(12))
            .expect("due")
            .iter()
            .all(|d| !d.record.fields.contains_key(&Field::Phone))
    );
    let to_crm = l.due_pushes(&crm, 10, t(12)).expect("due");
    assert!(
        to_crm
            .iter()
            .any(|d| d.record.fields.get(&Field::Phone).map(String::as_str)
                == Some("+44 20 7946 0000")),
        "{to_crm:?}"
    );
}

/// Seed 156 with `sf-merge` and `convert`: a lead merged into another, which is then
/// converted; leadsync reads the conversion first and the merge late. The late merge named
/// the (now converted) survivor, and its link was reopened: the person kept an open link to a
/// converted lead, and writes to it were refused.
#[test]
fn a_late_merge_into_a_converted_survivor_does_not_reopen_its_link() {
    let (_d, l) = open();
    let r = Rules::salesforce_hubspot_defaults();
    let crm = SystemName("crm".into());
    let mut m = mint();
    let f = [(Field::Email, "a@x.test"), (Field::LastName, "Doe")];
    let leads = [read("Lead", "00QA", &f, 0, 0), read("Lead", "00QB", &f, 0, 0)];
    l.ingest(&crm, "poll", &leads, None, t(1)).expect("ingest");
    l.reconcile_pending(&r, 100, t(1), &mut m).expect("reconcile");

    let contact = RemoteId { object_type: "Contact".into(), id: "003C".into() };
    let converted = Change {
        fate: RecordFate::ConvertedTo { remote: contact.clone() },
        ..read("Lead", "00QA", &f, 5, 6)
    };
    l.ingest(&crm, "poll", &[converted, read("Contact", "003C", &f, 5, 6)], None, t(6))
        .expect("ingest");
    l.reconcile_pending(&r, 100, t(6), &mut m).expect("reconcile");
    let merged = Change {
        fate: RecordFate::MergedInto { survivor: "00QA".into() },
        ..read("Lead", "00QB", &[], 3, 7)
    };
    l.ingest(&crm, "poll", &[merged], None, t(7)).expect("ingest");
    l.reconcile_pending(&r, 100, t(7), &mut m).expect("reconcile");
    let snap = l.snapshot().expect("snap");
    assert_eq!(snap.len(), 1, "{snap:?}");
    let links: Vec<&str> = snap[0].links.iter().map(|(_, r)| r.id.as_str()).collect();
    assert_eq!(links, ["003C"], "only the contact stands for the person");
}

/// Convergence seed 99 (all ops): HubSpot merged the person's contact into a second contact of
/// the same human that leadsync had not read yet, and a human typed a new email on the
/// survivor at once. The merge linked the survivor and planned every field of the person onto
/// it (a diff against nothing known), so the person's old email went out over the human's
/// edit. A record linked unread gets no writes and is read at once; its first read gives the
/// person the survivor's address, which HubSpot kept.
#[test]
fn a_merge_survivor_linked_unread_is_read_before_anything_is_written_to_it() {
    let (_d, l) = open();
    let r = Rules::salesforce_hubspot_defaults();
    let (mkt, crm) = linked_person(&l, &r);
    let mut m = mint();
    for sys in [&mkt, &crm] {
        let due = l.due_pushes(sys, 10, t(3)).expect("due");
        let outcomes: Vec<_> = due.iter().map(accepted).collect();
        l.record_push_results(sys, &due, &outcomes, &r, PushRetry::default(), t(3), t(3))
            .expect("record");
    }

    let merged = Change {
        fate: RecordFate::MergedInto { survivor: "2".into() },
        ..read("contact", "1", &[], 5, 5)
    };
    l.ingest(&mkt, "webhook", &[merged], None, t(5)).expect("ingest");
    let s = l.reconcile_pending(&r, 100, t(6), &mut m).expect("reconcile");
    let due = l.due_pushes(&mkt, 10, t(6)).expect("due");
    assert!(due.is_empty(), "nothing is written blind to the unread survivor: {due:?}");
    assert_eq!(s.rereads, 1, "the survivor is read at once");
    let notices = l.pending_notices(&mkt, 10).expect("notices");
    assert!(
        notices.iter().any(|n| n.notice.remote.id == "2" && n.notice.snapshot.is_none()),
        "a re-read of contact 2 is queued: {notices:?}"
    );

    // Its first read: the address a human typed there after the merge.
    let survivor = [(Field::Email, "v7@mail.test"), (Field::LastName, "Doe")];
    l.ingest(&mkt, "reread", &[read("contact", "2", &survivor, 7, 8)], None, t(8)).expect("i");
    l.reconcile_pending(&r, 100, t(8), &mut m).expect("reconcile");
    let person = &l.snapshot().expect("snap")[0];
    assert_eq!(person.fields.get(&Field::Email).map(String::as_str), Some("v7@mail.test"));
    let to_mkt = l.due_pushes(&mkt, 10, t(9)).expect("due");
    assert!(
        to_mkt.iter().all(|p| !p.record.fields.contains_key(&Field::Email)),
        "the survivor keeps its address: {to_mkt:?}"
    );
    let to_crm = l.due_pushes(&crm, 10, t(9)).expect("due");
    assert_eq!(
        to_crm.first().and_then(|p| p.record.fields.get(&Field::Email)).map(String::as_str),
        Some("v7@mail.test"),
        "the CRM follows: {to_crm:?}"
    );
}

/// Convergence seeds 213 and 320 (all ops): a first name edited on a Salesforce lead, then a
/// HubSpot contact of the same human made by hand under another address with the new name.
/// The contact was read first: the person still had the old name, so it became a person of its
/// own. When the edit is read, the person looks like the contact's person to the fuzzy rules,
/// as it would have had the edit been read first: the two are one, and under `most recent`
/// the newer value of either stands.
#[test]
fn an_edit_that_makes_two_persons_match_folds_them() {
    let (_d, l) = open();
    let r = Rules::salesforce_hubspot_defaults();
    let (mkt, crm) = (SystemName("marketing".into()), SystemName("crm".into()));
    let mut m = mint();
    let lead = |first: &'static str| {
        [
            (Field::Email, "chloe@globex.example"),
            (Field::FirstName, first),
            (Field::LastName, "Brown"),
            (Field::Company, "Globex Inc."),
            (Field::Title, "CTO"),
        ]
    };
    l.ingest(&crm, "poll", &[read("Lead", CRM_LEAD, &lead("Chloe"), 0, 0)], None, t(1))
        .expect("ingest");
    l.reconcile_pending(&r, 100, t(1), &mut m).expect("reconcile");
    let contact = [
        (Field::Email, "alt@mail.example"),
        (Field::FirstName, "Mei"),
        (Field::LastName, "Brown"),
        (Field::Company, "Globex Inc."),
        (Field::Title, "Head of Growth"),
    ];
    l.ingest(&mkt, "poll", &[read("contact", "5", &contact, 2, 2)], None, t(2)).expect("ingest");
    l.reconcile_pending(&r, 100, t(2), &mut m).expect("reconcile");
    assert_eq!(l.snapshot().expect("snap").len(), 2, "not alike yet: two persons");

    l.ingest(&crm, "poll", &[read("Lead", CRM_LEAD, &lead("Mei"), 3, 3)], None, t(3))
        .expect("ingest");
    l.reconcile_pending(&r, 100, t(3), &mut m).expect("reconcile");
    let persons = l.snapshot().expect("snap");
    assert_eq!(persons.len(), 1, "one human, one person: {persons:?}");
    assert_eq!(persons[0].fields.get(&Field::FirstName).map(String::as_str), Some("Mei"));
    assert_eq!(
        persons[0].fields.get(&Field::Title).map(String::as_str),
        Some("Head of Growth"),
        "the newer title, though the younger person's, stands (convergence seed 119)"
    );
}

/// Convergence seed 63 (all ops): the person's contact `1` (linked by email: the primary),
/// then two hand-made duplicates `2` and `3` linked by a fuzzy rule. HubSpot merged `1` into
/// `3`, which now holds the person's address too. The next in line, `2`, became the primary
/// and was sent that address: 409, a dead letter, and `2` kept another email. The survivor
/// takes the merged record's place, in the ledger's order of links as in the plan.
#[test]
fn a_merge_survivor_takes_the_primarys_place_in_the_ledger() {
    let (_d, l) = open();
    let r = Rules::salesforce_hubspot_defaults();
    let (mkt, crm) = linked_person(&l, &r);
    let mut m = mint();
    for sys in [&mkt, &crm] {
        let due = l.due_pushes(sys, 10, t(3)).expect("due");
        let outcomes: Vec<_> = due.iter().map(accepted).collect();
        l.record_push_results(sys, &due, &outcomes, &r, PushRetry::default(), t(3), t(3))
            .expect("record");
    }
    let lead_id = l.snapshot().expect("snap")[0].id.clone();
    let contact = |id: &str| RemoteId { object_type: "contact".into(), id: id.into() };
    l.with_tx(|tx| {
        for id in ["2", "3"] {
            identity::insert_link(tx, &lead_id, &mkt, &contact(id), "matched_rule:x", t(4))?;
        }
        Ok(())
    })
    .expect("links");
    let dup = |email: &'static str| {
        [(Field::Email, email), (Field::LastName, "Doe"), (Field::LeadStatus, "new")]
    };
    let dups = [
        read("contact", "2", &dup("alt2@mail.test"), 4, 4),
        read("contact", "3", &dup("alt3@mail.test"), 4, 4),
    ];
    l.ingest(&mkt, "poll", &dups, None, t(4)).expect("ingest");
    l.reconcile_pending(&r, 100, t(4), &mut m).expect("reconcile");

    let merged = Change {
        fate: RecordFate::MergedInto { survivor: "3".into() },
        ..read("contact", "1", &[], 5, 5)
    };
    l.ingest(&mkt, "webhook", &[merged], None, t(5)).expect("ingest");
    l.reconcile_pending(&r, 100, t(6), &mut m).expect("reconcile");
    let person = l.with_tx(|tx| identity::load_lead(tx, &lead_id)).expect("load").expect("lead");
    let first = person.links.iter().find(|k| k.system == mkt).map(|k| k.remote.id.as_str());
    assert_eq!(first, Some("3"), "the survivor is the primary: {:?}", person.links);
    assert_eq!(person.fields.get(&Field::Email).map(String::as_str), Some("alt3@mail.test"));
    let due = l.due_pushes(&mkt, 10, t(7)).expect("due");
    assert!(
        due.iter().all(|p| !p.record.fields.contains_key(&Field::Email)),
        "no contact is sent an address another holds: {due:?}"
    );
}

/// Convergence seed 394 (all ops): a new email from HubSpot went out to the person's
/// Salesforce lead while a human converted the lead. The conversion, read meanwhile, dropped
/// the pending row and planned the stage it implies for HubSpot in a row that got the freed
/// id. Salesforce refused the write to the converted lead, and the refusal dead-lettered the
/// HubSpot row by that id: the contact never got the stage. Here the row is dropped by a
/// read showing the lead holds the email already, then a status that HubSpot must get takes
/// the id (the same reuse): an outcome settles only the row that was sent.
#[test]
fn a_refusal_for_a_dropped_row_does_not_dead_letter_the_row_that_took_its_id() {
    let (_d, l) = open();
    let r = Rules::salesforce_hubspot_defaults();
    let (mkt, crm) = linked_person(&l, &r);
    let mut m = mint();
    for sys in [&mkt, &crm] {
        let due = l.due_pushes(sys, 10, t(3)).expect("due");
        let outcomes: Vec<_> = due.iter().map(accepted).collect();
        l.record_push_results(sys, &due, &outcomes, &r, PushRetry::default(), t(3), t(3))
            .expect("record");
    }
    let contact = [
        (Field::Email, "new@x.test"),
        (Field::LastName, "Doe"),
        (Field::LifecycleStage, "lead"),
        (Field::LeadStatus, "new"),
    ];
    l.ingest(&mkt, "poll", &[read("contact", "1", &contact, 4, 4)], None, t(4)).expect("ingest");
    l.reconcile_pending(&r, 100, t(4), &mut m).expect("reconcile");
    let sent = l.due_pushes(&crm, 10, t(5)).expect("due");
    assert_eq!(sent.len(), 1, "the new email goes to the lead: {sent:?}");
    assert!(l.due_pushes(&mkt, 10, t(5)).expect("due").is_empty());

    for (status, at) in [("new", 5), ("working", 6)] {
        let lead =
            [(Field::Email, "new@x.test"), (Field::LastName, "Doe"), (Field::LeadStatus, status)];
        let c = read("Lead", CRM_LEAD, &lead, at, at);
        l.ingest(&crm, "poll", &[c], None, t(at)).expect("ingest");
        l.reconcile_pending(&r, 100, t(at), &mut m).expect("reconcile");
    }
    let to_mkt = l.due_pushes(&mkt, 10, t(6)).expect("due");
    assert_eq!(to_mkt.len(), 1, "the status and the stage it implies: {to_mkt:?}");
    assert_eq!(
        to_mkt[0].record.outbox_id, sent[0].record.outbox_id,
        "the scenario: the HubSpot row took the freed id"
    );

    let refused = PushOutcome::Rejected {
        outbox_id: sent[0].record.outbox_id,
        code: "CANNOT_UPDATE_CONVERTED_LEAD".into(),
        message: "cannot reference converted lead".into(),
    };
    l.record_push_results(&crm, &sent, &[refused], &r, PushRetry::default(), t(6), t(6))
        .expect("record");
    let still = l.due_pushes(&mkt, 10, t(7)).expect("due");
    assert_eq!(still.len(), 1, "the HubSpot row is still to go: {still:?}");
    assert_eq!(l.gauges().expect("gauges").systems["marketing"].dead, 0);
    // A retry (or a failed call) of the row sent does not defer the row that took its id.
    let retry = PushOutcome::Retry { outbox_id: sent[0].record.outbox_id, code: "x".into() };
    l.record_push_results(&crm, &sent, &[retry], &r, PushRetry::default(), t(7), t(7))
        .expect("record");
    l.defer_pushes(&sent, "x", "failed", true, PushRetry::default(), t(7)).expect("defer");
    assert_eq!(l.due_pushes(&mkt, 10, t(7)).expect("due").len(), 1, "due at once");
}

/// Convergence seed 394 (all ops): as seed 92, but the lead is converted *after* the email
/// edit at HubSpot (before leadsync wrote it to the lead). The contact, read first, holds the
/// lead's old address, dated at the conversion, later than the edit: folding the two persons
/// took it as the newer value and wrote it back over the edit. It is the lead's copy, as old
/// as the lead's value, and the edit stands.
#[test]
fn a_conversion_after_an_email_change_does_not_revert_the_email() {
    let (_d, l) = open();
    let r = Rules::salesforce_hubspot_defaults();
    let (mkt, crm) = linked_person(&l, &r);
    let mut m = mint();
    let new_email = [(Field::Email, "a.new@x.test"), (Field::LastName, "Doe")];
    l.ingest(&mkt, "poll", &[read("contact", "1", &new_email, 10, 10)], None, t(10)).expect("i");
    l.reconcile_pending(&r, 100, t(10), &mut m).expect("reconcile");

    let old = [(Field::Email, "a@x.test"), (Field::LastName, "Doe")];
    let contact = read("Contact", "003C", &old, 11, 12);
    l.ingest(&crm, "poll", &[contact], None, t(12)).expect("ingest");
    l.reconcile_pending(&r, 100, t(12), &mut m).expect("reconcile");
    let converted = Change {
        fate: RecordFate::ConvertedTo {
            remote: RemoteId { object_type: "Contact".into(), id: "003C".into() },
        },
        ..read("Lead", CRM_LEAD, &old, 11, 13)
    };
    l.ingest(&crm, "poll", &[converted], None, t(13)).expect("ingest");
    l.reconcile_pending(&r, 100, t(13), &mut m).expect("reconcile");
    let snap = l.snapshot().expect("snap");
    assert_eq!(snap.len(), 1, "one human, one person: {snap:?}");
    assert_eq!(snap[0].fields.get(&Field::Email).map(String::as_str), Some("a.new@x.test"));
    let to_hubspot = l.due_pushes(&mkt, 10, t(14)).expect("due");
    assert!(
        to_hubspot.iter().all(|d| !d.record.fields.contains_key(&Field::Email)),
        "{to_hubspot:?}"
    );
}

/// Rows of one table (the deleted records' kept identities and keys).
fn count(l: &Ledger, table: &str) -> i64 {
    let conn = l.conn.lock().expect("lock");
    conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0)).expect("count")
}

/// Convergence seed 113: a hand-made HubSpot duplicate of a human under another address,
/// deleted before leadsync had read the human. Read in either order (the delete first: it
/// matched nobody then; or the lead first), the person made from the CRM lead ends with the
/// same ledger state: not created at HubSpot, tombstoned there, the deleted contact's link
/// opened by the fuzzy rule and closed `deleted`, and `leadsync trace` saying why.
#[test]
fn a_duplicate_deleted_before_its_human_was_read_tombstones_them_in_either_order() {
    let r = Rules::salesforce_hubspot_defaults();
    let (mkt, crm) = (SystemName("marketing".into()), SystemName("crm".into()));
    let who = [
        (Field::FirstName, "Esther"),
        (Field::LastName, "Lewis"),
        (Field::Company, "Blue Sun Pty Ltd"),
    ];
    let mut lead = who.to_vec();
    lead.extend([(Field::Email, "esther.lewis@bluesun.test"), (Field::LifecycleStage, "mql")]);
    let mut dup = who.to_vec();
    dup.push((Field::Email, "esther.alt@mail.test"));
    let gone = Change { fate: RecordFate::Deleted, ..read("contact", "13", &dup, 1, 2) };
    let lead = read("Lead", CRM_LEAD, &lead, 1, 2);

    for delete_first in [true, false] {
        let (_d, l) = open();
        let mut m = mint();
        let (first, second) = if delete_first {
            ((&mkt, &gone), (&crm, &lead))
        } else {
            ((&crm, &lead), (&mkt, &gone))
        };
        l.ingest(first.0, "poll", std::slice::from_ref(first.1), None, t(3)).expect("ingest");
        l.reconcile_pending(&r, 100, t(4), &mut m).expect("reconcile");
        if delete_first {
            assert!(l.snapshot().expect("snap").is_empty(), "a delete makes nobody");
            assert_eq!(count(&l, "deleted_identities"), 1, "its identity is kept");
            assert!(count(&l, "deleted_identity_keys") > 0);
        }
        l.ingest(second.0, "poll", std::slice::from_ref(second.1), None, t(5)).expect("ingest");
        l.reconcile_pending(&r, 100, t(6), &mut m).expect("reconcile");

        let order = if delete_first { "delete first" } else { "lead first" };
        let snap = l.snapshot().expect("snap");
        assert_eq!(snap.len(), 1, "{order}: one person");
        assert!(snap[0].tombstoned.contains("marketing"), "{order}: {:?}", snap[0]);
        assert!(l.due_pushes(&mkt, 10, t(7)).expect("due").is_empty(), "{order}: no create");
        let reader = LedgerReader::open(l.path()).expect("reader");
        let trace = reader.trace("marketing:13").expect("trace").expect("the contact's person");
        assert_eq!(trace.lead_id, snap[0].id, "{order}");
        let link = trace.links.iter().find(|k| k.remote_id == "13").expect("its link");
        assert!(link.reason.starts_with("matched_rule:"), "{order}: {link:?}");
        assert_eq!(link.closed_reason.as_deref(), Some("deleted"), "{order}");
        if delete_first {
            let e = trace.events.iter().find(|e| e.kind == "deleted_match").expect("explained");
            assert_eq!(e.detail["remote"], "contact/13", "{:?}", e.detail);
            assert!(e.detail["score"].as_f64().is_some() && e.detail["rule"].is_string());
        }
        // Used, the kept identity goes (and so does the email tombstone of its address).
        assert_eq!(count(&l, "deleted_identities"), 0, "{order}");
        assert_eq!(count(&l, "deleted_identity_keys"), 0, "{order}");
        assert_eq!(count(&l, "email_tombstones"), 0, "{order}");
    }
}

/// A kept identity no person claimed goes with the inbox's retention; one of a record read
/// live again goes when that record makes its person.
#[test]
fn kept_identities_of_deleted_records_do_not_pile_up() {
    let r = Rules::salesforce_hubspot_defaults();
    let mkt = SystemName("marketing".into());
    let (_d, l) = open();
    let mut m = mint();
    let dup = [(Field::FirstName, "Esther"), (Field::LastName, "Lewis")];
    let gone = Change { fate: RecordFate::Deleted, ..read("contact", "13", &dup, 1, 2) };
    l.ingest(&mkt, "poll", &[gone], None, t(3)).expect("ingest");
    l.reconcile_pending(&r, 100, t(4), &mut m).expect("reconcile");
    assert_eq!(count(&l, "deleted_identities"), 1, "kept without an email too");
    l.prune_inbox(t(4)).expect("prune");
    assert_eq!(count(&l, "deleted_identities"), 1, "not older than the cutoff");
    l.prune_inbox(t(5)).expect("prune");
    assert_eq!(count(&l, "deleted_identities"), 0);
    assert_eq!(count(&l, "deleted_identity_keys"), 0);

    // Deleted unread, then restored: its live read makes its person, and nothing of the
    // delete is kept (it is not its own lookalike: no tombstone at HubSpot).
    let gone = Change { fate: RecordFate::Deleted, ..read("contact", "14", &dup, 6, 7) };
    l.ingest(&mkt, "poll", &[gone], None, t(8)).expect("ingest");
    l.reconcile_pending(&r, 100, t(9), &mut m).expect("reconcile");
    let mut back = dup.to_vec();
    back.push((Field::Email, "esther@x.test"));
    l.ingest(&mkt, "poll", &[read("contact", "14", &back, 10, 11)], None, t(12)).expect("ingest");
    l.reconcile_pending(&r, 100, t(13), &mut m).expect("reconcile");
    let snap = l.snapshot().expect("snap");
    assert_eq!(snap.len(), 1);
    assert!(snap[0].tombstoned.is_empty(), "{:?}", snap[0]);
    assert_eq!(count(&l, "deleted_identities"), 0);
}

/// Convergence seed 2391 (all ops, polling): a Salesforce lead (a human's first there, made
/// by hand under the address they had just typed at HubSpot) was read as a person of its
/// own just before the HubSpot edit that gave the contact's person that address. One
/// address and one likeness: one human. The two fold, so no create at Salesforce makes the
/// human a second lead. Two persons that share an address but do not look alike stay apart
/// (a taken email: `an_email_another_record_holds_becomes_a_review_item_naming_that_record`).
#[test]
fn a_person_whose_edit_takes_the_address_of_a_lookalike_joins_them() {
    let (_d, l) = open();
    let r = Rules::salesforce_hubspot_defaults();
    let mut m = mint();
    let (mkt, crm) = (SystemName("marketing".into()), SystemName("crm".into()));
    let who = [(Field::FirstName, "Olivia"), (Field::Company, "Gekko & Co")];
    let contact =
        [who[0], who[1], (Field::Email, "olivia.nowak@gekko.test"), (Field::LastName, "Nowak")];
    l.ingest(&mkt, "poll", &[read("contact", "5", &contact, 0, 0)], None, t(1)).expect("ingest");
    l.reconcile_pending(&r, 100, t(2), &mut m).expect("reconcile");
    // The lead under the new address, read first; then the contact's edit.
    let lead = [who[0], who[1], (Field::Email, "olivia@globex.test"), (Field::LastName, "Tanaka")];
    l.ingest(&crm, "poll", &[read("Lead", CRM_LEAD, &lead, 3, 4)], None, t(4)).expect("ingest");
    let edited =
        [who[0], who[1], (Field::Email, "olivia@globex.test"), (Field::LastName, "Tanaka")];
    l.ingest(&mkt, "poll", &[read("contact", "5", &edited, 3, 4)], None, t(4)).expect("ingest");
    l.reconcile_pending(&r, 100, t(5), &mut m).expect("reconcile");
    let snap = l.snapshot().expect("snap");
    assert_eq!(snap.len(), 1, "one human, one person: {snap:#?}");
    assert_eq!(snap[0].links.len(), 2, "{:?}", snap[0].links);
    let due = l.due_pushes(&crm, 10, t(6)).expect("due");
    assert!(
        due.iter().all(|d| !matches!(d.record.op, PushOp::Create { .. })),
        "no second lead at Salesforce: {due:?}"
    );
}

/// Seed 2345, through the ledger: a person with a lead and two HubSpot contacts (the second,
/// a duplicate under another address, linked by a fuzzy rule). In one poll pass the human's
/// new email on the second contact is read first (while it is still a second record: its own
/// address), then the delete of the primary contact (the archived-list sweep ends the pass).
/// The second contact's typed address survives the SQL round trip of its link
/// (`own_email_at`) and becomes the person's; nothing writes the deleted record's address
/// over it.
#[test]
fn an_address_typed_on_a_second_contact_survives_the_primarys_delete() {
    let (_d, l) = open();
    let r = Rules::salesforce_hubspot_defaults();
    let mut m = mint();
    let (mkt, crm) = (SystemName("marketing".into()), SystemName("crm".into()));
    let who = [(Field::FirstName, "Olivia"), (Field::LastName, "Nowak"), (Field::Company, "Gekko")];
    let with = |email: &'static str| {
        let mut f = who.to_vec();
        f.push((Field::Email, email));
        f
    };
    let primary = with("olivia.nowak@gekko.test");
    l.ingest(&crm, "poll", &[read("Lead", CRM_LEAD, &primary, 0, 0)], None, t(1)).expect("ingest");
    l.ingest(&mkt, "poll", &[read("contact", "1", &primary, 0, 0)], None, t(1)).expect("ingest");
    l.reconcile_pending(&r, 100, t(2), &mut m).expect("reconcile");
    let dup = with("olivia@mail.example");
    l.ingest(&mkt, "poll", &[read("contact", "2", &dup, 3, 3)], None, t(3)).expect("ingest");
    l.reconcile_pending(&r, 100, t(4), &mut m).expect("reconcile");
    let snap = l.snapshot().expect("snap");
    assert_eq!(snap.len(), 1, "the duplicate joins the person: {snap:#?}");
    assert_eq!(snap[0].links.len(), 3, "{:?}", snap[0].links);

    let typed = with("olivia@newco.test");
    l.ingest(&mkt, "poll", &[read("contact", "2", &typed, 10, 11)], None, t(11)).expect("ingest");
    l.reconcile_pending(&r, 100, t(12), &mut m).expect("reconcile");
    let snap = l.snapshot().expect("snap");
    assert_eq!(snap[0].fields[&Field::Email], "olivia.nowak@gekko.test", "still its own");

    let mut gone = read("contact", "1", &[(Field::Email, "olivia.nowak@gekko.test")], 9, 13);
    gone.fate = RecordFate::Deleted;
    l.ingest(&mkt, "poll", &[gone], None, t(13)).expect("ingest");
    l.reconcile_pending(&r, 100, t(14), &mut m).expect("reconcile");
    let snap = l.snapshot().expect("snap");
    assert_eq!(snap[0].fields[&Field::Email], "olivia@newco.test");
    let due = l.due_pushes(&mkt, 10, t(15)).expect("due");
    assert!(
        due.iter().all(|d| !d.record.fields.contains_key(&Field::Email)),
        "no address written over the typed one: {due:?}"
    );
    let due = l.due_pushes(&crm, 10, t(15)).expect("due");
    assert_eq!(
        due[0].record.fields.get(&Field::Email).map(String::as_str),
        Some("olivia@newco.test"),
        "{due:?}"
    );
}
