//! Erasure on a temp ledger: every table scrubbed of the person's values, tombstones that stop
//! polls, webhooks and late push results, idempotence.

use chrono::TimeZone;

use super::*;
use crate::connectors::Cursor;
use crate::domain::{Fields, NoticeKind, PushOutcome};
use crate::ledger::PushRetry;
use crate::reconcile::Rules;

const EMAIL: &str = "Zelda.Quixote@Example.test";
const SECRETS: [&str; 4] = ["zelda.quixote@example.test", "zelda", "quixote", "5550001111"];

fn t(s: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + s, 0).single().expect("valid")
}

fn fields(email: &str, first: &str, last: &str, phone: &str, stage: &str) -> Fields {
    [
        (Field::Email, email.to_string()),
        (Field::FirstName, first.to_string()),
        (Field::LastName, last.to_string()),
        (Field::Phone, phone.to_string()),
        (Field::LifecycleStage, stage.to_string()),
    ]
    .into()
}

fn change(object_type: &str, id: &str, f: Fields, at: i64) -> Change {
    Change {
        remote: RemoteId { object_type: object_type.into(), id: id.into() },
        fields: f,
        ledger_key: None,
        modified_at: t(at),
        fetched_at: t(at),
        fate: RecordFate::Live,
        custom: Default::default(),
        last_activity: None,
    }
}

fn mkt() -> SystemName {
    SystemName("marketing".into())
}

fn crm() -> SystemName {
    SystemName("crm".into())
}

fn open() -> (tempfile::TempDir, Ledger) {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = Ledger::open(&dir.path().join("l.db")).expect("open");
    (dir, l)
}

fn reconcile(l: &Ledger, rules: &Rules, at: i64) {
    let mut n = 0;
    let mut mint = move || {
        n += 1;
        format!("{:08x}-0000-4000-8000-{n:012x}", 0x5eed)
    };
    l.reconcile_pending(rules, 1000, t(at), &mut mint).expect("reconcile");
}

/// Every text or blob value of every table, lower-cased, with the table and column it is in.
fn every_value(l: &Ledger) -> Vec<(String, String, String)> {
    let conn = l.conn.lock().expect("lock");
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .expect("tables")
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<std::result::Result<_, _>>()
        .expect("names");
    let mut out = Vec::new();
    for table in tables {
        let mut stmt = conn.prepare(&format!("SELECT * FROM \"{table}\"")).expect("select");
        let cols: Vec<String> = stmt.column_names().map(str::to_string).collect();
        let mut rows = stmt.query([]).expect("rows");
        while let Some(row) = rows.next().expect("row") {
            for (i, col) in cols.iter().enumerate() {
                let text = match row.get_ref(i).expect("value") {
                    rusqlite::types::ValueRef::Text(b) | rusqlite::types::ValueRef::Blob(b) => {
                        String::from_utf8_lossy(b).to_lowercase()
                    }
                    _ => continue,
                };
                out.push((table.clone(), col.clone(), text));
            }
        }
    }
    out
}

fn leaks(l: &Ledger) -> Vec<String> {
    every_value(l)
        .into_iter()
        .filter(|(_, _, v)| SECRETS.iter().any(|s| v.contains(s)))
        .map(|(t, c, v)| format!("{t}.{c} = {v}"))
        .collect()
}

/// A person with a HubSpot contact and a Salesforce lead, a second person, a webhook notice
/// and a push in flight; returns the ledger and the pending pushes read before the erasure.
fn seeded() -> (tempfile::TempDir, Ledger, Rules) {
    let (d, l) = open();
    let rules = Rules::salesforce_hubspot_defaults();
    let zelda = fields(EMAIL, "Zelda", "Quixote", "+1 555 000 1111", "mql");
    let other = fields("bob@example.test", "Bob", "Stone", "+1 555 000 2222", "lead");
    l.ingest(
        &mkt(),
        "poll",
        &[change("contact", "101", zelda.clone(), 0), change("contact", "102", other, 0)],
        Some(&Cursor(Some("c1".into()))),
        t(1),
    )
    .expect("ingest marketing");
    let mut lead = zelda.clone();
    lead.insert(Field::FirstName, "Zelda M.".into());
    l.ingest(&crm(), "poll", &[change("Lead", "00Q000000000001AAA", lead, 2)], None, t(3))
        .expect("ingest crm");
    reconcile(&l, &rules, 4);
    // A webhook notice that carried the person's state, processed already.
    let notice = Notice {
        dedupe_key: "p:1".into(),
        remote: RemoteId { object_type: "contact".into(), id: "101".into() },
        kind: NoticeKind::Changed,
        occurred_at: t(5),
        related: Vec::new(),
        snapshot: Some(change("contact", "101", zelda, 5)),
    };
    l.store_notices(&[(&mkt(), &[notice][..])], t(5)).expect("notice");
    (d, l, rules)
}

#[test]
fn erasing_scrubs_every_table_and_leaves_only_hashes() {
    let (_d, l, _rules) = seeded();
    assert!(!leaks(&l).is_empty(), "the seed must put the values in the ledger");
    assert_eq!(l.snapshot().expect("snapshot").len(), 2);

    let e = l.erase_person(EMAIL, &[], t(10)).expect("erase");
    assert_eq!(e.persons, 1);
    assert_eq!(e.records_blocked, 2);
    assert!(!e.already_erased);
    let mut ids: Vec<String> = e.to_delete.iter().map(|(s, r)| format!("{s}:{r}")).collect();
    ids.sort();
    assert_eq!(ids, ["crm:Lead/00Q000000000001AAA", "marketing:contact/101"]);

    assert_eq!(leaks(&l), Vec::<String>::new(), "no value of the person is left");
    // Nor any id of the person outside the tombstones.
    let ids_left: Vec<_> = every_value(&l)
        .into_iter()
        .filter(|(t, _, v)| t != "erasures" && (v.contains("00q000000000001aaa")))
        .collect();
    assert!(ids_left.is_empty(), "{ids_left:?}");
    let snap = l.snapshot().expect("snapshot");
    assert_eq!(snap.len(), 1, "the other person stays");
    assert_eq!(snap[0].fields[&Field::FirstName], "Bob");
    let kinds: Vec<String> = every_value(&l)
        .into_iter()
        .filter(|(t, c, _)| t == "erasures" && c == "kind")
        .map(|(_, _, v)| v)
        .collect();
    assert_eq!(kinds.iter().filter(|k| *k == "email").count(), 1);
    assert_eq!(kinds.iter().filter(|k| *k == "record").count(), 2);
    assert_eq!(kinds.iter().filter(|k| *k == "lead").count(), 1);
}

#[test]
fn the_person_is_not_imported_again_by_email_record_id_or_webhook() {
    let (_d, l, rules) = seeded();
    l.erase_person(EMAIL, &[], t(10)).expect("erase");

    // Recreated by hand with the same address (other case, surrounding blanks).
    let again = fields("  ZELDA.quixote@example.TEST ", "Zelda", "Quixote", "555", "lead");
    assert_eq!(
        l.ingest(&mkt(), "poll", &[change("contact", "999", again.clone(), 20)], None, t(20))
            .expect("ingest"),
        0
    );
    // The old record with another address, and its fate, are dropped too.
    let renamed = fields("someone@else.test", "Z", "Q", "1", "lead");
    let mut gone = change("Lead", "00Q000000000001AAA", Fields::new(), 21);
    gone.fate = RecordFate::Deleted;
    assert_eq!(
        l.ingest(
            &crm(),
            "poll",
            &[change("Lead", "00Q000000000001AAA", renamed, 21), gone],
            Some(&Cursor(Some("c9".into()))),
            t(21)
        )
        .expect("ingest"),
        0
    );
    assert_eq!(l.cursor(&crm()).expect("cursor"), Cursor(Some("c9".into())), "cursor moves on");
    // A webhook about the old contact, and one carrying the address, are not stored.
    let by_id = Notice {
        dedupe_key: "p:2".into(),
        remote: RemoteId { object_type: "contact".into(), id: "101".into() },
        kind: NoticeKind::Changed,
        occurred_at: t(22),
        related: Vec::new(),
        snapshot: None,
    };
    let by_email = Notice {
        dedupe_key: "p:3".into(),
        remote: RemoteId { object_type: "contact".into(), id: "1000".into() },
        snapshot: Some(change("contact", "1000", again, 22)),
        ..by_id.clone()
    };
    assert_eq!(l.store_notices(&[(&mkt(), &[by_id, by_email][..])], t(22)).expect("store"), [0]);

    reconcile(&l, &rules, 23);
    assert_eq!(l.snapshot().expect("snapshot").len(), 1);
    assert_eq!(leaks(&l), Vec::<String>::new());

    // Someone else still comes in.
    let carol = fields("carol@example.test", "Carol", "Lane", "1", "lead");
    assert_eq!(
        l.ingest(&mkt(), "poll", &[change("contact", "103", carol, 24)], None, t(24))
            .expect("ingest"),
        1
    );
}

#[test]
fn erasing_again_finds_nothing_and_succeeds() {
    let (_d, l, _rules) = seeded();
    l.erase_person(EMAIL, &[], t(10)).expect("erase");
    let again = l.erase_person(EMAIL, &[], t(11)).expect("again");
    assert!(again.already_erased);
    assert_eq!((again.persons, again.records_blocked), (0, 0));
    assert!(again.to_delete.is_empty());
    // Never erased: nothing found, not "already erased".
    let none = l.erase_person("nobody@example.test", &[], t(12)).expect("none");
    assert_eq!(none, Erasure::default());
}

#[test]
fn records_found_at_a_vendor_are_blocked_and_listed_even_when_unlinked() {
    let (_d, l, _rules) = seeded();
    let stray =
        (crm(), RemoteId { object_type: "Contact".into(), id: "003000000000009AAA".into() });
    let e = l.erase_person(EMAIL, std::slice::from_ref(&stray), t(10)).expect("erase");
    assert!(e.to_delete.contains(&stray));
    assert_eq!(e.records_blocked, 3);
    let c = change("Contact", "003000000000009AAA", fields("x@y.test", "X", "Y", "1", "lead"), 30);
    assert_eq!(l.ingest(&crm(), "poll", &[c], None, t(30)).expect("ingest"), 0);
}

#[test]
fn a_create_that_lands_after_the_erasure_is_not_recorded() {
    // Marketing-only MQL: a create at the CRM is planned and goes out; the person is erased
    // while it is in flight (the daemon runs beside `leadsync erase`).
    let (_d, l) = open();
    let rules = Rules::salesforce_hubspot_defaults();
    let zelda = fields(EMAIL, "Zelda", "Quixote", "+1 555 000 1111", "mql");
    l.ingest(&mkt(), "poll", &[change("contact", "101", zelda, 0)], None, t(1)).expect("ingest");
    reconcile(&l, &rules, 2);
    let due = l.due_pushes(&crm(), 10, t(3)).expect("due");
    assert_eq!(due.len(), 1, "a create is planned");
    l.erase_person(EMAIL, &[], t(4)).expect("erase");
    let outcome = PushOutcome::Accepted {
        outbox_id: due[0].record.outbox_id,
        remote: RemoteId { object_type: "Lead".into(), id: "00Q000000000002AAA".into() },
        created: true,
    };
    // Without the gate this would link a deleted person (a foreign key failure, which stops
    // the daemon) and store the pushed values again.
    l.record_push_results(&crm(), &due, &[outcome], &rules, PushRetry::default(), t(5), t(6))
        .expect("a late result does not fail the ledger");
    assert_eq!(leaks(&l), Vec::<String>::new());
    assert!(l.snapshot().expect("snapshot").is_empty());
}

/// Rows of `sql` (one text column), sorted.
fn texts(l: &Ledger, sql: &str) -> Vec<String> {
    let conn = l.conn.lock().expect("lock");
    let mut v: Vec<String> = conn
        .prepare(sql)
        .expect("sql")
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<std::result::Result<_, _>>()
        .expect("rows");
    v.sort();
    v
}

#[test]
fn erasing_removes_the_persons_closed_loop_rows_lifecycle_and_sla_clocks() {
    use crate::domain::closed_loop::{CampaignTouch, Opportunity, OpportunityContact, TouchKind};
    let (_d, l, _rules) = seeded();
    let rid = |o: &str, id: &str| RemoteId { object_type: o.into(), id: id.into() };
    let touch = |id: &str, person: RemoteId, lead: Option<RemoteId>| CampaignTouch {
        touch_id: id.into(),
        person,
        lead,
        campaign_id: "701C".into(),
        campaign_name: None,
        kind: TouchKind::CampaignMember,
        at: t(6),
        responded: true,
        responded_on: None,
        modified_at: t(6),
        deleted: false,
    };
    let contact =
        |o: &str, id: &str, primary| OpportunityContact { person: rid(o, id), primary, role: None };
    let deal = Opportunity {
        remote: rid("deal", "9"),
        name: None,
        amount_cents: Some(100),
        currency: None,
        stage: "open".into(),
        pipeline: None,
        is_closed: false,
        is_won: false,
        close_date: None,
        primary_campaign: None,
        contacts: vec![contact("contact", "101", true), contact("contact", "102", false)],
        created_at: Some(t(6)),
        modified_at: t(6),
        deleted: false,
    };
    let mkt_touches = [
        touch("101:form:1", rid("contact", "101"), None),
        touch("102:form:1", rid("contact", "102"), None),
    ];
    l.store_closed_loop(&mkt(), &[deal], &mkt_touches, &[], None, t(6)).expect("mkt");
    // A converted lead's membership names the (unlinked) contact and the person's lead.
    let crm_touches = [touch(
        "00v1",
        rid("Contact", "003000000000009AAA"),
        Some(rid("Lead", "00Q000000000001AAA")),
    )];
    // The person's lead has a logged call; a record of somebody else has one too.
    let call = |id: &str, who: &str| crate::domain::closed_loop::Activity {
        activity_id: id.into(),
        who_remote_id: rid("Lead", who),
        kind: crate::domain::closed_loop::ActivityKind::Call,
        at: t(6),
        completed: true,
        modified_at: t(6),
        deleted: false,
    };
    let calls = [call("00T1", "00Q000000000001AAA"), call("00T2", "00Q000000000777AAA")];
    l.store_closed_loop(&crm(), &[], &crm_touches, &calls, None, t(6)).expect("crm");
    {
        let conn = l.conn.lock().expect("lock");
        conn.execute(
            "INSERT INTO lifecycle(lead_id, stage, state, updated_at)
             SELECT lead_id, 'mql', '{}', '' FROM links WHERE remote_id IN ('101', '102')",
            [],
        )
        .expect("lifecycle rows");
        conn.execute(
            "INSERT INTO sla_clocks(lead_id, clock, state, updated_at)
             SELECT lead_id, '{}', 'waiting', '' FROM links WHERE remote_id IN ('101', '102')",
            [],
        )
        .expect("clock rows");
        conn.execute(
            "INSERT INTO sla_cycles(lead_id, started_at, due_at, phase, attempts, breached,
                 escalated, recycled, disqualify_refused, updated_at)
             SELECT lead_id, '', '', 'waiting', 0, 0, 0, 0, 0, '' FROM links
             WHERE remote_id IN ('101', '102')",
            [],
        )
        .expect("cycle rows");
    }
    assert_eq!(texts(&l, "SELECT touch_id FROM campaign_touches").len(), 3);
    assert_eq!(texts(&l, "SELECT lead_id FROM lifecycle").len(), 2);

    l.erase_person(EMAIL, &[], t(10)).expect("erase");
    assert_eq!(texts(&l, "SELECT touch_id FROM campaign_touches"), ["102:form:1"]);
    assert_eq!(
        texts(&l, "SELECT system || ':' || remote_id FROM opportunity_contacts"),
        ["marketing:102"],
        "the deal keeps its other contact"
    );
    assert_eq!(texts(&l, "SELECT remote_id FROM opportunities"), ["9"]);
    assert_eq!(texts(&l, "SELECT activity_id FROM activities"), ["00T2"]);
    assert_eq!(
        texts(&l, "SELECT lead_id FROM lifecycle"),
        texts(&l, "SELECT lead_id FROM links WHERE remote_id = '102'"),
        "only the other person's lifecycle stays"
    );
    for table in ["sla_clocks", "sla_cycles"] {
        assert_eq!(
            texts(&l, &format!("SELECT lead_id FROM {table}")),
            texts(&l, "SELECT lead_id FROM links WHERE remote_id = '102'"),
            "only the other person's {table} rows stay"
        );
    }
}

/// A record deleted before any person held its address leaves an email-keyed tombstone
/// (`email_tombstones`, the normalised address): erasing the address removes it too, the
/// erasure's salted hash doing its job from then on.
#[test]
fn erasing_removes_the_tombstone_of_a_record_deleted_before_it_was_linked() {
    let (_d, l) = open();
    let rules = Rules::salesforce_hubspot_defaults();
    let gone = Change {
        fate: crate::domain::RecordFate::Deleted,
        ..change("contact", "909", fields(EMAIL, "Zelda", "Quixote", "", "lead"), 0)
    };
    l.ingest(&mkt(), "poll", &[gone], None, t(1)).expect("ingest");
    reconcile(&l, &rules, 2);
    assert!(
        every_value(&l).iter().any(|(t, _, v)| t == "email_tombstones" && v.contains("zelda")),
        "the delete must leave an email tombstone for this test to mean anything"
    );
    l.erase_person(EMAIL, &[], t(3)).expect("erase");
    assert_eq!(leaks(&l), Vec::<String>::new(), "no value of the person is left");
}

/// A record deleted before leadsync found its person keeps its identity
/// (`deleted_identities`, with its blocking keys). Erasing the person removes one under
/// their address (blocked by hash like their other records; the test above) and one under
/// another address that shares a blocking key with them (a lookalike the engine could tie to
/// them), with its inbox rows.
#[test]
fn erasing_removes_the_kept_identities_of_deleted_records() {
    let (_d, l) = open();
    let rules = Rules::salesforce_hubspot_defaults();
    // The person, from a CRM lead.
    let live = change("Lead", "00Q9", fields(EMAIL, "Zelda", "Quixote", "", "lead"), 0);
    l.ingest(&crm(), "poll", &[live], None, t(1)).expect("ingest");
    reconcile(&l, &rules, 2);
    // A contact under another address, deleted unread: the rules put it below auto-link
    // (no company, no phone), so it matches nobody and its identity is kept.
    let alt = Change {
        fate: RecordFate::Deleted,
        ..change("contact", "910", fields("zq@elsewhere.test", "Zelda", "Quixote", "", ""), 3)
    };
    // (One under the person's own address is
    // `erasing_removes_the_tombstone_of_a_record_deleted_before_it_was_linked`.)
    l.ingest(&mkt(), "poll", &[alt], None, t(4)).expect("ingest");
    reconcile(&l, &rules, 5);
    let kept = every_value(&l);
    assert!(
        kept.iter().any(|(t, _, v)| t == "deleted_identities" && v.contains("quixote")),
        "the delete must leave a kept identity for this test to mean anything"
    );
    assert!(kept.iter().any(|(t, _, _)| t == "deleted_identity_keys"));
    l.erase_person(EMAIL, &[], t(6)).expect("erase");
    assert_eq!(leaks(&l), Vec::<String>::new(), "no value of the person is left");
    let left = every_value(&l);
    assert!(
        !left.iter().any(|(t, _, _)| t == "deleted_identities" || t == "deleted_identity_keys"),
        "{left:?}"
    );
}
