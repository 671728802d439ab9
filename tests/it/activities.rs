//! SLA contact attempts end to end: two MQLs handed to the Salesforce simulator, calls logged
//! on their leads as a rep would (`log_task`), read by the closed-loop poller into the SLA
//! clocks. With `disqualify_min_attempts = 2`, a disqualification after one call is recycled
//! with `disqualify_refused`; after a second call it goes through.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use leadsync::app::App;
use leadsync::contract::lifecycle::{LifecycleStage, NamedMove};
use leadsync::ledger::{DISQUALIFY_REFUSED, Ledger, NamedOutcome};
use leadsync::settings::{DEMO_TOML, Source};
use leadsync::shutdown;
use leadsync::sim::harness::{Harness, wait_converged};
use leadsync::sim::population;

use crate::helpers::{CRM_WITH_NURTURE, fast_env, sf_by_email, start_harness};

/// The lifecycle test's systems and MQL rule, two attempts (no minimum of days) before a
/// disqualification, and Salesforce tasks read every second.
fn config() -> String {
    format!(
        r#"{DEMO_TOML}
{CRM_WITH_NURTURE}

[closed_loop]
enabled = true
poll_interval_secs = 1
systems = ["crm"]

[contract]
[contract.qualification.mql]
all = ["title is set", "lead_source is Webinar-LC"]

[contract.sla]
first_touch_business_hours = 4
disqualify_min_attempts = 2
disqualify_min_days = 0
"#
    )
}

async fn until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !ok() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A webinar sign-up with a title in HubSpot: an MQL by the rule.
fn sign_up(h: &Harness, email: &str, last: &str) {
    let props: BTreeMap<String, String> = [
        ("email", email),
        ("firstname", "Ada"),
        ("lastname", last),
        ("company", "Attempts Ltd"),
        ("jobtitle", "Head of Ops"),
        ("leadsource", "Webinar-LC"),
        ("lifecyclestage", "lead"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    h.hubspot.insert(props).expect("contact");
}

fn attempts(ledger: &Ledger, lead_id: &str) -> u32 {
    ledger.sla_clock(lead_id).expect("read").map_or(0, |c| c.clock.attempts)
}

async fn disqualify(app: &App, email: &str) -> NamedOutcome {
    let (ledger, rules, email) = (app.ledger(), app.rules(), email.to_string());
    tokio::task::spawn_blocking(move || {
        ledger.named_transition(
            &email,
            NamedMove::Disqualify,
            "not_a_fit",
            None,
            &rules,
            Utc::now(),
        )
    })
    .await
    .expect("join")
    .expect("ledger")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disqualification_needs_the_logged_calls_the_policy_asks_for() {
    let people = population::generate(10, 23);
    let harness = start_harness(&people).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let toml = config();
    let db = dir.path().join("ledger.db");
    let settings = harness.settings(Source::Inline(&toml), &db, &fast_env()).expect("settings");
    assert!(settings.closed_loop.enabled);
    let app = Arc::new(App::build(&settings).expect("app builds"));
    let (trigger, stop) = shutdown::channel();
    let a = Arc::clone(&app);
    let engine = tokio::spawn(async move { a.run_until_stopped(stop).await });
    assert!(wait_converged(&app, Duration::from_secs(60)).await, "initial sync converges");

    let (one, two) = ("one.call@attempts.test", "two.calls@attempts.test");
    sign_up(&harness, one, "One");
    sign_up(&harness, two, "Two");
    until("both MQLs to reach Salesforce", || {
        let sf = sf_by_email(&harness);
        sf.get(one).is_some_and(|l| l.len() == 1) && sf.get(two).is_some_and(|l| l.len() == 1)
    })
    .await;
    assert!(wait_converged(&app, Duration::from_secs(60)).await);
    let reader = leadsync::ledger::LedgerReader::open(&db).expect("reader");
    let person = |email: &str| reader.trace(email).expect("trace").expect("person").lead_id;
    let (p_one, p_two) = (person(one), person(two));
    let ledger = app.ledger();
    for p in [&p_one, &p_two] {
        let clock = ledger.sla_clock(p).expect("read").expect("a clock runs for the MQL");
        assert_eq!(clock.clock.attempts, 0);
    }
    let sf = sf_by_email(&harness);
    let lead = |email: &str| sf[email][0]["Id"].as_str().expect("id").to_string();
    let today = Utc::now().date_naive();

    // One call each, read by the closed-loop poller.
    harness.salesforce.log_task(&lead(one), "Call", today).expect("task");
    harness.salesforce.log_task(&lead(two), "Call", today).expect("task");
    until("one attempt on each clock", || {
        attempts(&ledger, &p_one) == 1 && attempts(&ledger, &p_two) == 1
    })
    .await;

    // One call is not enough: the disqualification becomes a recycle.
    let out = disqualify(&app, one).await;
    let NamedOutcome::Applied { transition, .. } = out else { panic!("applied: {out:?}") };
    assert_eq!(transition.to, LifecycleStage::Recycled);
    assert_eq!(transition.reason.as_ref().map(|c| c.as_str()), Some(DISQUALIFY_REFUSED));

    // A second call (an email logged as a completed task counts too), then it is allowed.
    harness.salesforce.log_task(&lead(two), "Email", today).expect("task");
    until("two attempts on the second clock", || attempts(&ledger, &p_two) == 2).await;
    // Read again on every poll (the overlap window): still two.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(attempts(&ledger, &p_two), 2);
    let out = disqualify(&app, two).await;
    let NamedOutcome::Applied { transition, .. } = out else { panic!("applied: {out:?}") };
    assert_eq!(transition.to, LifecycleStage::Disqualified);
    assert_ne!(transition.reason.as_ref().map(|c| c.as_str()), Some(DISQUALIFY_REFUSED));

    let stage = |p: &str| ledger.lifecycle(p).expect("read").and_then(|s| s.stage);
    assert_eq!(stage(&p_one), Some(LifecycleStage::Recycled));
    assert_eq!(stage(&p_two), Some(LifecycleStage::Disqualified));
    trigger.trigger();
    engine.await.expect("engine task").expect("engine stops cleanly");
}
