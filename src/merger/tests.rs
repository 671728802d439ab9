//! Merge rounds against a scripted vendor: asked once, retried only on transient failures,
//! refusals final, and the default "unsupported" answer.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use chrono::{DateTime, TimeZone};

use super::*;
use crate::domain::{Change, Field, RecordFate, RemoteId};
use crate::reconcile::Rules;

/// A vendor that answers from a script (then "merged into the primary") and counts calls.
#[derive(Default)]
struct Scripted {
    answers: Mutex<VecDeque<Result<String, ConnectorError>>>,
    calls: AtomicUsize,
}

impl Scripted {
    fn with(answers: Vec<Result<String, ConnectorError>>) -> Scripted {
        Scripted { answers: Mutex::new(answers.into()), calls: AtomicUsize::new(0) }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

impl VendorMerge for Scripted {
    async fn merge_records(
        &self,
        _object_type: &str,
        primary: &str,
        _loser: &str,
    ) -> Result<String, ConnectorError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let next = self.answers.lock().expect("script").pop_front();
        next.unwrap_or_else(|| Ok(primary.to_string()))
    }
}

/// A vendor without a merge: the trait's default answer.
struct NoMerge;
impl VendorMerge for NoMerge {}

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

/// One person with two HubSpot contacts: 101 (primary) and 102.
fn ledger() -> (tempfile::TempDir, Arc<Ledger>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = Ledger::open(&dir.path().join("l.db")).expect("open");
    let rules = Rules::salesforce_hubspot_defaults();
    let mut n = 0;
    let mut mint = move || {
        n += 1;
        format!("L{n}")
    };
    for (i, c) in [contact("101", "jane@acme.test", 0), contact("102", "jane.doe@home.test", 1)]
        .into_iter()
        .enumerate()
    {
        let at = i64::try_from(i).expect("small") * 10;
        l.ingest(&mkt(), "poll", &[c], None, t(at + 5)).expect("ingest");
        l.reconcile_pending(&rules, 100, t(at + 6), &mut mint).expect("reconcile");
    }
    assert_eq!(l.duplicates(None).expect("report").len(), 1, "the fixture has a duplicate");
    (dir, Arc::new(l))
}

fn settings() -> MergerSettings {
    MergerSettings {
        systems: vec![mkt()],
        every: Duration::from_millis(10),
        // No backoff, so a retry is due in the next round.
        retry: MergeRetry {
            max_attempts: 3,
            base_delay: Duration::ZERO,
            max_delay: Duration::ZERO,
            lease: Duration::from_secs(600),
        },
        per_round: 10,
        fuzzy_links: true,
    }
}

#[tokio::test]
async fn a_merge_the_vendor_accepted_is_never_asked_for_again() {
    let (_d, l) = ledger();
    let vendor = Scripted::default();
    let targets = [(mkt(), &vendor)];
    let tally = merge_round(&l, &targets, &settings()).await.expect("round");
    assert_eq!(tally, MergeTally { merged: 1, retry: 0, failed: 0 });
    // The link stays open until the vendor's merge comes back through ingest; no new call.
    for _ in 0..3 {
        assert_eq!(
            merge_round(&l, &targets, &settings()).await.expect("round"),
            MergeTally::default()
        );
    }
    assert_eq!(vendor.calls(), 1);
    let m = l.vendor_merges().expect("rows");
    assert_eq!((m.len(), m[0].state.as_str(), m[0].attempts), (1, "done", 1));
    assert_eq!((m[0].primary_id.as_str(), m[0].loser_id.as_str()), ("101", "102"));
    assert_eq!(m[0].answer.as_deref(), Some("merged into 101"));
    assert_eq!(l.duplicates(None).expect("report").len(), 1, "the merger never closes links");
}

#[tokio::test]
async fn transient_failures_are_retried_up_to_the_cap_and_refusals_are_final() {
    let (_d, l) = ledger();
    let vendor = Scripted::with(vec![
        Err(ConnectorError::Transient("http 503".into())),
        Err(ConnectorError::RateLimited { retry_after: None }),
    ]);
    let targets = [(mkt(), &vendor)];
    let s = settings();
    assert_eq!(merge_round(&l, &targets, &s).await.expect("1").retry, 1);
    assert_eq!(merge_round(&l, &targets, &s).await.expect("2").retry, 1);
    assert_eq!(merge_round(&l, &targets, &s).await.expect("3").merged, 1);
    assert_eq!(merge_round(&l, &targets, &s).await.expect("4"), MergeTally::default());
    assert_eq!(vendor.calls(), 3);

    // Transient failures past the cap: failed, and then left alone.
    let (_d, l) = ledger();
    let vendor =
        Scripted::with((0..10).map(|_| Err(ConnectorError::Transient("timeout".into()))).collect());
    let targets = [(mkt(), &vendor)];
    for _ in 0..6 {
        merge_round(&l, &targets, &s).await.expect("round");
    }
    assert_eq!(vendor.calls(), 3, "max_attempts");
    assert_eq!(l.vendor_merges().expect("rows")[0].state, "failed");

    // A 4xx: recorded once, never retried.
    let (_d, l) = ledger();
    let vendor = Scripted::with(vec![Err(ConnectorError::Rejected {
        code: "VALIDATION_ERROR".into(),
        message: "http 400: VALIDATION_ERROR".into(),
    })]);
    let targets = [(mkt(), &vendor)];
    assert_eq!(merge_round(&l, &targets, &s).await.expect("round").failed, 1);
    for _ in 0..3 {
        merge_round(&l, &targets, &s).await.expect("round");
    }
    assert_eq!(vendor.calls(), 1);
    let m = l.vendor_merges().expect("rows").remove(0);
    assert_eq!((m.state.as_str(), m.error_code.as_deref()), ("failed", Some("VALIDATION_ERROR")));
    assert_eq!(
        m.answer.as_deref(),
        Some("rejected by vendor: VALIDATION_ERROR: http 400: VALIDATION_ERROR")
    );
}

#[tokio::test]
async fn a_vendor_without_merge_answers_unsupported_once() {
    let (_d, l) = ledger();
    let targets = [(mkt(), &NoMerge)];
    assert_eq!(merge_round(&l, &targets, &settings()).await.expect("round").failed, 1);
    assert_eq!(merge_round(&l, &targets, &settings()).await.expect("round"), MergeTally::default());
    let m = l.vendor_merges().expect("rows").remove(0);
    assert_eq!(m.error_code.as_deref(), Some("merge_unsupported"));
}

#[tokio::test]
async fn systems_not_named_are_left_alone() {
    let (_d, l) = ledger();
    let vendor = Scripted::default();
    let targets = [(SystemName("crm".into()), &vendor)];
    assert_eq!(merge_round(&l, &targets, &settings()).await.expect("round"), MergeTally::default());
    assert_eq!(vendor.calls(), 0);
    assert!(l.vendor_merges().expect("rows").is_empty());
}

#[tokio::test]
async fn records_linked_by_a_fuzzy_rule_are_merged_only_when_configured() {
    // The fixture's second contact was linked by the name+phone rule, not by an exact key.
    let (_d, l) = ledger();
    assert_eq!(l.duplicates(None).expect("report")[0].others[0].reason, "matched_rule:name_phone");
    let vendor = Scripted::default();
    let targets = [(mkt(), &vendor)];
    let exact_only = MergerSettings { fuzzy_links: false, ..settings() };
    for _ in 0..3 {
        assert_eq!(
            merge_round(&l, &targets, &exact_only).await.expect("round"),
            MergeTally::default()
        );
    }
    assert_eq!(vendor.calls(), 0, "the default never merges a fuzzy link");
    assert!(l.vendor_merges().expect("rows").is_empty());
    assert_eq!(merge_round(&l, &targets, &settings()).await.expect("round").merged, 1);
}

#[tokio::test]
async fn failed_merges_put_back_to_pending_are_asked_for_again_once() {
    let (_d, l) = ledger();
    let vendor = Scripted::with(vec![Err(ConnectorError::Rejected {
        code: "MISSING_SCOPES".into(),
        message: "http 403".into(),
    })]);
    let targets = [(mkt(), &vendor)];
    let s = settings();
    assert_eq!(merge_round(&l, &targets, &s).await.expect("round").failed, 1);
    assert_eq!(merge_round(&l, &targets, &s).await.expect("round"), MergeTally::default());
    // The operator fixed the scope and runs `leadsync duplicates --retry-failed`.
    assert_eq!(l.retry_failed_merges(Some(&SystemName("crm".into())), t(50)).expect("other"), 0);
    assert_eq!(l.retry_failed_merges(None, t(50)).expect("reset"), 1);
    assert_eq!(l.retry_failed_merges(None, t(51)).expect("again"), 0, "nothing failed now");
    assert_eq!(merge_round(&l, &targets, &s).await.expect("round").merged, 1);
    assert_eq!(merge_round(&l, &targets, &s).await.expect("round"), MergeTally::default());
    assert_eq!(vendor.calls(), 2);
    let m = l.vendor_merges().expect("rows").remove(0);
    assert_eq!((m.state.as_str(), m.attempts, m.error_code), ("done", 1, None));
}
