//! Ledger throughput without any HTTP: ingest N polled changes from each of two systems,
//! reconcile them all, and record a push round for every planned write. Prints changes/s per
//! phase. Run: `cargo bench --bench ledger -- [N]` (default 50,000 per side).

use std::time::Instant;

use chrono::{TimeZone, Utc};
use leadsync::connectors::Cursor;
use leadsync::domain::{
    Change, Field, Fields, PushOp, PushOutcome, RecordFate, RemoteId, SystemName,
};
use leadsync::ledger::{Ledger, PushRetry};
use leadsync::reconcile::Rules;

fn rules() -> Rules {
    Rules::salesforce_hubspot_defaults()
}

fn change(obj: &str, i: usize, stage: Option<&str>, status: Option<&str>) -> Change {
    let mut f = Fields::new();
    f.insert(Field::Email, format!("person{i}@example.test"));
    f.insert(Field::FirstName, format!("First{i}"));
    f.insert(Field::LastName, format!("Last{i}"));
    f.insert(Field::Company, "Acme".into());
    f.insert(Field::Title, "CTO".into());
    if let Some(s) = stage {
        f.insert(Field::LifecycleStage, s.into());
    }
    if let Some(s) = status {
        f.insert(Field::LeadStatus, s.into());
    }
    let t = Utc.timestamp_opt(1_700_000_000, 0).single().expect("valid");
    Change {
        remote: RemoteId { object_type: obj.into(), id: format!("{obj}{i}") },
        fields: f,
        ledger_key: None,
        modified_at: t,
        fetched_at: t,
        fate: RecordFate::Live,
        custom: Default::default(),
        last_activity: None,
    }
}

#[allow(clippy::print_stdout, reason = "a benchmark prints its figures")]
fn main() {
    let n: usize = std::env::args().filter_map(|a| a.parse().ok()).next().unwrap_or(50_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = Ledger::open(&dir.path().join("bench.db")).expect("open ledger");
    let rules = rules();
    let crm = SystemName("crm".into());
    let mkt = SystemName("marketing".into());
    let now = Utc::now();

    let t = Instant::now();
    for chunk in (0..n).collect::<Vec<_>>().chunks(2000) {
        let crm_changes: Vec<_> =
            chunk.iter().map(|i| change("Lead", *i, None, Some("working"))).collect();
        let mkt_changes: Vec<_> =
            chunk.iter().map(|i| change("contact", i + n / 2, Some("lead"), None)).collect();
        ledger
            .ingest(&crm, "poll", &crm_changes, Some(&Cursor(Some("c".into()))), now)
            .expect("ingest");
        ledger
            .ingest(&mkt, "poll", &mkt_changes, Some(&Cursor(Some("m".into()))), now)
            .expect("ingest");
    }
    let ingest = t.elapsed();

    let t = Instant::now();
    let mut id = 0u64;
    let mut mint = || {
        id += 1;
        format!("lead-{id:010}")
    };
    let mut reconciled = 0;
    loop {
        let s = ledger.reconcile_pending(&rules, 1000, now, &mut mint).expect("reconcile");
        if s.processed == 0 {
            break;
        }
        reconciled += s.processed;
    }
    let reconcile = t.elapsed();

    let t = Instant::now();
    let mut pushed = 0;
    for (system, max) in [(&crm, 200), (&mkt, 100)] {
        loop {
            let due = ledger.due_pushes(system, max, now).expect("due");
            if due.is_empty() {
                break;
            }
            let outcomes: Vec<_> = due
                .iter()
                .map(|d| match &d.record.op {
                    PushOp::Create { object_type } => PushOutcome::Accepted {
                        outbox_id: d.record.outbox_id,
                        remote: RemoteId {
                            object_type: object_type.clone(),
                            id: format!("new-{}", d.record.outbox_id),
                        },
                        created: true,
                    },
                    PushOp::Update { remote } => PushOutcome::Accepted {
                        outbox_id: d.record.outbox_id,
                        remote: remote.clone(),
                        created: false,
                    },
                })
                .collect();
            pushed += due.len();
            ledger
                .record_push_results(
                    system,
                    &due,
                    &outcomes,
                    &rules,
                    PushRetry::default(),
                    now,
                    now,
                )
                .expect("record");
        }
    }
    let push = t.elapsed();
    let rate = |k: usize, d: std::time::Duration| k as f64 / d.as_secs_f64();
    println!("ledger bench: {n} changes per side");
    println!(
        "  ingest      {:>8} changes  {:>7.2} s  {:>9.0} changes/s",
        2 * n,
        ingest.as_secs_f64(),
        rate(2 * n, ingest)
    );
    println!(
        "  reconcile   {:>8} changes  {:>7.2} s  {:>9.0} changes/s",
        reconciled,
        reconcile.as_secs_f64(),
        rate(reconciled, reconcile)
    );
    println!(
        "  push rounds {:>8} records  {:>7.2} s  {:>9.0} records/s",
        pushed,
        push.as_secs_f64(),
        rate(pushed, push)
    );
}
