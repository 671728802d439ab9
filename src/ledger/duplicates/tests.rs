//! The duplicates report, its counts, and vendor-merge bookkeeping, on a real ledger fed
//! through the reconciler.

use std::time::Duration;

use chrono::TimeZone;

use super::*;
use crate::domain::{Change, Field, RecordFate, RemoteId};
use crate::reconcile::Rules;

fn t(s: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(1_700_000_000 + s, 0).single().expect("valid")
}

fn mkt() -> SystemName {
    SystemName("marketing".into())
}

fn contact(id: &str, email: &str, at: i64) -> Change {
    Change {
        remote: RemoteId { object_type: "contact".into(), id: id.into() },
        fields: [
            (Field::Email, email.to_string()),
            (Field::FirstName, "Jane".to_string()),
            (Field::LastName, "Doe".to_string()),
            (Field::Phone, "+1 415 555 0100".to_string()),
            (Field::Company, "Acme".to_string()),
        ]
        .into(),
        ledger_key: None,
        modified_at: t(at),
        fetched_at: t(at),
        fate: RecordFate::Live,
        custom: Default::default(),
        last_activity: None,
    }
}

fn other_person(id: &str, email: &str, at: i64) -> Change {
    let mut c = contact(id, email, at);
    c.fields.insert(Field::FirstName, "Zed".into());
    c.fields.insert(Field::LastName, "Quimby".into());
    c.fields.insert(Field::Phone, "+1 212 555 0199".into());
    c.fields.insert(Field::Company, "Other".into());
    c
}

/// A ledger where person L1 has two HubSpot contacts (101 by its own record, 102 by the
/// name+phone rule) and L2 has one (103).
fn ledger_with_duplicates() -> (tempfile::TempDir, Ledger) {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = Ledger::open(&dir.path().join("l.db")).expect("open");
    let rules = Rules::salesforce_hubspot_defaults();
    let mut n = 0;
    let mut mint = move || {
        n += 1;
        format!("L{n}")
    };
    for (i, c) in [
        contact("101", "jane@acme.test", 0),
        other_person("103", "zed@other.test", 1),
        contact("102", "jane.doe@home.test", 2),
    ]
    .into_iter()
    .enumerate()
    {
        // One change per reconcile, so the persons exist when the next record is matched.
        let at = i64::try_from(i).expect("small") * 10;
        l.ingest(&mkt(), "poll", &[c], None, t(at + 5)).expect("ingest");
        l.reconcile_pending(&rules, 100, t(at + 6), &mut mint).expect("reconcile");
    }
    (dir, l)
}

fn reader(dir: &tempfile::TempDir) -> LedgerReader {
    LedgerReader::open(&dir.path().join("l.db")).expect("reader")
}

#[test]
fn the_report_lists_a_persons_records_in_one_system_primary_first_with_how_they_linked() {
    let (dir, l) = ledger_with_duplicates();
    let groups = reader(&dir).duplicates(None).expect("report");
    assert_eq!(groups.len(), 1, "{groups:#?}");
    let g = &groups[0];
    assert_eq!((g.lead_id.as_str(), g.system.as_str()), ("L1", "marketing"));
    assert_eq!(g.primary.remote_id, "101", "the oldest open link is primary");
    assert_eq!(g.primary.reason, "new_person");
    assert_eq!(g.primary.score, None);
    assert_eq!(g.others.len(), 1);
    let o = &g.others[0];
    assert_eq!(o.remote_id, "102");
    assert_eq!(o.reason, "matched_rule:name_phone");
    assert_eq!(o.rule.as_deref(), Some("name_phone"));
    assert!(o.score.is_some_and(|s| s >= 0.92), "auto-link score: {:?}", o.score);
    assert_eq!(o.linked_at, ts(t(26)));
    assert_eq!(o.merge, None);
    assert_eq!(g.primary.linked_at, ts(t(6)));

    // Filtered by system, and counted.
    assert!(reader(&dir).duplicates(Some(&SystemName("crm".into()))).expect("crm").is_empty());
    assert_eq!(l.duplicates(Some(&mkt())).expect("writer's view"), groups);
    let counts = reader(&dir).duplicate_counts().expect("counts");
    assert_eq!(counts, BTreeMap::from([("marketing".to_string(), 1)]));
    let gauges = l.gauges().expect("gauges");
    assert_eq!(gauges.systems["marketing"].same_system_duplicates, 1);
    assert!(!gauges.systems.contains_key("crm"), "no rows, not registered: no gauges");
}

#[test]
fn a_link_closed_by_a_vendor_merge_ends_the_duplicate() {
    let (dir, l) = ledger_with_duplicates();
    let rules = Rules::salesforce_hubspot_defaults();
    let mut merged = contact("102", "", 100);
    merged.fields.clear();
    merged.fate = RecordFate::MergedInto { survivor: "101".into() };
    l.ingest(&mkt(), "poll", &[merged], None, t(101)).expect("ingest");
    l.reconcile_pending(&rules, 100, t(102), &mut || "L9".to_string()).expect("reconcile");
    assert!(reader(&dir).duplicates(None).expect("report").is_empty());
    assert!(reader(&dir).duplicate_counts().expect("counts").is_empty());
    let gauges = l.gauges().expect("gauges");
    assert!(gauges.systems.get("marketing").is_none_or(|g| g.same_system_duplicates == 0));
}

fn quick() -> MergeRetry {
    MergeRetry {
        max_attempts: 3,
        base_delay: Duration::from_secs(10),
        max_delay: Duration::from_secs(25),
        lease: Duration::from_secs(100),
    }
}

#[test]
fn a_merge_is_claimed_once_and_not_again_once_done() {
    let (dir, l) = ledger_with_duplicates();
    let r = quick();
    assert!(
        l.claim_merges(&[SystemName("crm".into())], 10, r, true, t(100)).expect("crm").is_empty()
    );
    let tasks = l.claim_merges(&[mkt()], 10, r, true, t(100)).expect("claim");
    assert_eq!(tasks.len(), 1);
    let task = &tasks[0];
    assert_eq!((task.primary_id.as_str(), task.loser_id.as_str()), ("101", "102"));
    assert_eq!((task.lead_id.as_str(), task.attempt), ("L1", 1));
    // Claimed: not handed out again while the call is in flight.
    assert!(l.claim_merges(&[mkt()], 10, r, true, t(101)).expect("again").is_empty());
    l.finish_merge(task, &MergeOutcome::Done { answer: "survivor 101".into() }, r, t(102))
        .expect("finish");
    // Done: the link is still open (the vendor's merge has not come back yet), but the merge
    // is not asked for again, however long it takes.
    assert!(l.claim_merges(&[mkt()], 10, r, true, t(100_000)).expect("later").is_empty());
    let g = reader(&dir).duplicates(None).expect("report");
    let m = g[0].others[0].merge.as_ref().expect("merge recorded");
    assert_eq!(
        (m.state.as_str(), m.attempts, m.answer.as_deref()),
        ("done", 1, Some("survivor 101"))
    );
    let merges = l.vendor_merges().expect("rows");
    assert_eq!(merges.len(), 1);
}

#[test]
fn transient_failures_back_off_then_give_up_and_refusals_are_final() {
    let (_dir, l) = ledger_with_duplicates();
    let r = quick();
    let retry = MergeOutcome::Retry { code: "transient".into(), message: "http 503".into() };
    let task = l.claim_merges(&[mkt()], 10, r, true, t(100)).expect("claim").remove(0);
    l.finish_merge(&task, &retry, r, t(100)).expect("finish");
    // Backoff: 10 s after the first failure, 20 s after the second.
    assert!(l.claim_merges(&[mkt()], 10, r, true, t(109)).expect("early").is_empty());
    let task = l.claim_merges(&[mkt()], 10, r, true, t(110)).expect("due").remove(0);
    assert_eq!(task.attempt, 2);
    l.finish_merge(&task, &retry, r, t(110)).expect("finish");
    assert!(l.claim_merges(&[mkt()], 10, r, true, t(129)).expect("early").is_empty());
    let task = l.claim_merges(&[mkt()], 10, r, true, t(130)).expect("due").remove(0);
    assert_eq!(task.attempt, 3);
    l.finish_merge(&task, &retry, r, t(130)).expect("finish");
    // Three attempts spent: failed, never claimed again.
    assert!(l.claim_merges(&[mkt()], 10, r, true, t(10_000)).expect("never").is_empty());
    let m = l.vendor_merges().expect("rows").remove(0);
    assert_eq!((m.state.as_str(), m.attempts), ("failed", 3));
    assert_eq!(m.error_code.as_deref(), Some("transient"));
    assert!(m.answer.as_deref().is_some_and(|a| a.starts_with("gave up after 3 attempts")));

    // A refusal is final at once.
    let (_dir, l) = ledger_with_duplicates();
    let task = l.claim_merges(&[mkt()], 10, r, true, t(100)).expect("claim").remove(0);
    let no = MergeOutcome::Failed { code: "VALIDATION_ERROR".into(), message: "http 400".into() };
    l.finish_merge(&task, &no, r, t(100)).expect("finish");
    assert!(l.claim_merges(&[mkt()], 10, r, true, t(10_000)).expect("never").is_empty());
    let m = l.vendor_merges().expect("rows").remove(0);
    assert_eq!((m.state.as_str(), m.attempts), ("failed", 1));
    assert_eq!(l.gauges().expect("gauges").systems["marketing"].vendor_merges_failed, 1);
}

#[test]
fn an_attempt_that_never_reported_back_is_retried_after_its_lease_then_given_up() {
    let (_dir, l) = ledger_with_duplicates();
    let r = MergeRetry { max_attempts: 2, ..quick() };
    assert_eq!(l.claim_merges(&[mkt()], 10, r, true, t(0)).expect("1").len(), 1);
    assert!(l.claim_merges(&[mkt()], 10, r, true, t(99)).expect("leased").is_empty());
    assert_eq!(l.claim_merges(&[mkt()], 10, r, true, t(100)).expect("2")[0].attempt, 2);
    // The second never reports back either: given up, not claimed a third time.
    assert!(l.claim_merges(&[mkt()], 10, r, true, t(200)).expect("3").is_empty());
    let m = l.vendor_merges().expect("rows").remove(0);
    assert_eq!((m.state.as_str(), m.error_code.as_deref()), ("failed", Some("gave_up")));
}

#[test]
fn records_of_another_object_type_are_reported_but_not_merged() {
    let (_dir, l) = ledger_with_duplicates();
    // Make 102 look like another object type of the same system (a Salesforce lead and its
    // contact would be the real case).
    {
        let conn = l.conn.lock().expect("lock");
        conn.execute("UPDATE links SET object_type = 'other' WHERE remote_id = '102'", [])
            .expect("update");
    }
    assert_eq!(l.duplicates(None).expect("report").len(), 1);
    assert!(l.claim_merges(&[mkt()], 10, quick(), true, t(100)).expect("claim").is_empty());
}
