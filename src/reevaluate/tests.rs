//! The re-evaluation task through the ledger with injected time: a rule change moves everyone
//! it concerns once, through the outbox, and a closing event window is noticed by the periodic
//! sweep.

use std::sync::Arc;

use chrono::{TimeDelta, TimeZone};

use super::*;
use crate::contract::config::ContractRaw;
use crate::contract::lifecycle::LifecycleStage;
use crate::domain::{Change, Field, RecordFate, RemoteId, SystemName};

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 2, 9, 0, 0).single().expect("valid")
}

#[derive(serde::Deserialize)]
struct Wrapper {
    contract: ContractRaw,
}

fn rules(toml: &str) -> Arc<Rules> {
    let raw = config::Config::builder()
        .add_source(config::File::from_str(toml, config::FileFormat::Toml))
        .build()
        .and_then(|c| c.try_deserialize::<Wrapper>())
        .expect("contract toml")
        .contract;
    let mut r = Rules::salesforce_hubspot_defaults();
    r.contract = Some(Arc::new(raw.validate("contract").expect("valid contract")));
    Arc::new(r)
}

fn person(id: &str, email: &str, f: &[(Field, &str)], at: DateTime<Utc>) -> Change {
    let mut fields: crate::domain::Fields = f.iter().map(|(k, v)| (*k, (*v).to_string())).collect();
    fields.insert(Field::Email, email.to_string());
    fields.insert(Field::LifecycleStage, "lead".into());
    Change {
        remote: RemoteId { object_type: "contact".into(), id: id.into() },
        fields,
        ledger_key: None,
        modified_at: at,
        fetched_at: at,
        fate: RecordFate::Live,
        custom: Default::default(),
        last_activity: None,
    }
}

fn feed(l: &Ledger, r: &Rules, changes: &[Change], now: DateTime<Utc>) {
    l.ingest(&SystemName("marketing".into()), "poll", changes, None, now).expect("ingest");
    let mut n = 0;
    let mut mint = || {
        n += 1;
        format!("P{n}")
    };
    l.reconcile_pending(r, 100, now, &mut mint).expect("reconcile");
}

fn stage(l: &Ledger, id: &str) -> Option<LifecycleStage> {
    l.lifecycle(id).expect("read").and_then(|s| s.stage)
}

const WEBINAR: &str = r#"
[contract]
[contract.qualification.mql]
all = ["title is set", "lead_source is Webinar"]
"#;

const ANY_TITLE: &str = r#"
[contract]
[contract.qualification.mql]
all = ["title is set"]
"#;

#[tokio::test]
async fn a_rule_change_moves_everyone_it_concerns_once_through_the_outbox() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = Arc::new(Ledger::open(&dir.path().join("l.db")).expect("open"));
    let (a, b) = (rules(WEBINAR), rules(ANY_TITLE));
    assert_ne!(
        a.contract.as_ref().map(|c| c.rules_hash()),
        b.contract.as_ref().map(|c| c.rules_hash())
    );
    let web = [(Field::Title, "CTO"), (Field::LeadSource, "Web")];
    let webinar = [(Field::Title, "CFO"), (Field::LeadSource, "Webinar")];
    let none = [(Field::LeadSource, "Web")];
    feed(
        &l,
        &a,
        &[
            person("1", "p1@x.test", &web, t0()),
            person("2", "p2@x.test", &webinar, t0()),
            person("3", "p3@x.test", &none, t0()),
        ],
        t0(),
    );
    assert_eq!(
        [stage(&l, "P1"), stage(&l, "P2"), stage(&l, "P3")],
        [Some(LifecycleStage::Lead), Some(LifecycleStage::Mql), Some(LifecycleStage::Lead)]
    );
    let now = t0() + TimeDelta::hours(1);
    // First start with these rules: everyone is looked at, nobody moves, the hash is kept.
    let r = at_start(&l, &a, now).await.expect("sweep").expect("ran");
    assert_eq!(r, SweepReport { persons: 3, moved: 0 });
    assert_eq!(at_start(&l, &a, now).await.expect("check"), None, "same rules: nothing runs");

    // The rules change: P1 now qualifies and is moved, once, with its push planned.
    let later = now + TimeDelta::hours(1);
    let r = at_start(&l, &b, later).await.expect("sweep").expect("ran");
    assert_eq!(r, SweepReport { persons: 3, moved: 1 });
    assert_eq!(stage(&l, "P1"), Some(LifecycleStage::Mql));
    assert_eq!(stage(&l, "P3"), Some(LifecycleStage::Lead));
    let dates = l.lifecycle("P1").expect("read").expect("state").dates;
    assert_eq!(dates.get(LifecycleStage::Mql).map(|e| e.last), Some(later));
    let pushes = l.due_pushes(&SystemName("marketing".into()), 10, later).expect("outbox");
    let p1: Vec<_> = pushes.iter().filter(|p| p.record.ledger_key == "P1").collect();
    assert_eq!(p1.len(), 1, "{pushes:?}");
    assert_eq!(p1[0].record.fields.get(&Field::LifecycleStage).map(String::as_str), Some("mql"));
    assert_eq!(at_start(&l, &b, later).await.expect("check"), None);
    // A sweep over unchanged rules moves nobody again (rules are edge triggered).
    let r = sweep(&l, &b, Sweep::Everyone, later).await.expect("sweep");
    assert_eq!(r.moved, 0);
}

const QUIET_WEEK: &str = r#"
[contract]
events = ["form_submitted"]
[contract.mapping]
status_events = { new = "form_submitted" }
[contract.qualification.mql]
all = ["title is set", "no event form_submitted within 7 days"]
"#;

#[tokio::test]
async fn a_closing_event_window_is_noticed_by_the_periodic_sweep() {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = Arc::new(Ledger::open(&dir.path().join("l.db")).expect("open"));
    let r = rules(QUIET_WEEK);
    assert!(r.contract.as_ref().is_some_and(|c| c.has_windows()));
    assert!(!rules(ANY_TITLE).contract.as_ref().is_some_and(|c| c.has_windows()));
    let with_event = [(Field::Title, "CTO"), (Field::LeadStatus, "new")];
    let without = [(Field::Title, "CTO")];
    feed(
        &l,
        &r,
        &[person("1", "p1@x.test", &with_event, t0()), person("2", "p2@x.test", &without, t0())],
        t0(),
    );
    assert_eq!(stage(&l, "P1"), Some(LifecycleStage::Lead), "the form was just submitted");
    assert_eq!(stage(&l, "P2"), Some(LifecycleStage::Mql), "no event at all");

    let day3 = t0() + TimeDelta::days(3);
    let rep = sweep(&l, &r, Sweep::WithEvents, day3).await.expect("sweep");
    assert_eq!(rep, SweepReport { persons: 1, moved: 0 }, "only persons with events");
    assert_eq!(stage(&l, "P1"), Some(LifecycleStage::Lead));

    let day8 = t0() + TimeDelta::days(8);
    let rep = sweep(&l, &r, Sweep::WithEvents, day8).await.expect("sweep");
    assert_eq!(rep, SweepReport { persons: 1, moved: 1 });
    assert_eq!(stage(&l, "P1"), Some(LifecycleStage::Mql));
    let dates = l.lifecycle("P1").expect("read").expect("state").dates;
    assert_eq!(dates.get(LifecycleStage::Mql).map(|e| e.last), Some(day8));
}
