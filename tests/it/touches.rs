//! SLA touches that are only a CRM record's own last-activity property, end to end: the real
//! engine against both simulators, with no task or engagement read one by one (the closed-loop
//! poller is off), so nothing else could touch the clock.
//! - Salesforce: a completed call logged on the MQL's lead, due today, moves only the lead's
//!   `LastActivityDate` (and `SystemModstamp`); the poll reads it and the clock is met, with
//!   no contact attempt counted.
//! - HubSpot as the CRM: a call logged on the contact moves HubSpot's read-only
//!   `notes_last_contacted`; the clock is met at that instant.
//! - The handover's own day, both edges: a call on the lead leadsync created at the handover,
//!   logged before leadsync first reads it, meets the clock (the lead did not exist before);
//!   the morning's call on a lead that existed before the handover (the call that made them
//!   MQL) is no touch, however often the lead is read after.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use leadsync::app::App;
use leadsync::contract::sla::SlaPhase;
use leadsync::ledger::{Ledger, LedgerReader};
use leadsync::settings::{DEMO_TOML, Source};
use leadsync::shutdown::{self, Trigger};
use leadsync::sim::harness::{Harness, wait_converged};
use leadsync::sim::population;

use crate::helpers::{fast_env, hs_by_email, sf_by_email, start_harness, until};

/// An MQL rule on HubSpot's fields and a first touch due within four business hours
/// (24/7, so the test never waits for a weekend).
fn config() -> String {
    format!(
        r#"{DEMO_TOML}

[contract]
[contract.calendar]
working_days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
working_hours = "00:00-24:00"

[contract.qualification.mql]
all = ["title is set", "lead_source is Webinar-LC"]

[contract.sla]
first_touch_business_hours = 4
"#
    )
}

/// A webinar sign-up with a title in HubSpot: an MQL by the rule. Returns the contact id.
fn sign_up(h: &Harness, email: &str) -> String {
    let props: BTreeMap<String, String> = [
        ("email", email),
        ("firstname", "Ada"),
        ("lastname", "Touch"),
        ("company", "Touches Ltd"),
        ("jobtitle", "Head of Ops"),
        ("leadsource", "Webinar-LC"),
        ("lifecyclestage", "lead"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    h.hubspot.insert(props).expect("contact")
}

struct Engine {
    app: Arc<App>,
    trigger: Trigger,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    db: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

async fn start(harness: &Harness, env: &HashMap<String, String>) -> Engine {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = dir.path().join("ledger.db");
    let toml = config();
    let settings = harness.settings(Source::Inline(&toml), &db, env).expect("settings");
    assert!(!settings.closed_loop.enabled, "no task is read one by one");
    let app = Arc::new(App::build(&settings).expect("app builds"));
    let (trigger, stop) = shutdown::channel();
    let a = Arc::clone(&app);
    let task = tokio::spawn(async move { a.run_until_stopped(stop).await });
    assert!(wait_converged(&app, Duration::from_secs(60)).await, "initial sync converges");
    Engine { app, trigger, task, db, _dir: dir }
}

impl Engine {
    fn person(&self, email: &str) -> String {
        let reader = LedgerReader::open(&self.db).expect("reader");
        reader.trace(email).expect("trace").expect("person").lead_id
    }

    async fn stop(self) {
        self.trigger.trigger();
        self.task.await.expect("engine task").expect("engine stops cleanly");
    }
}

fn first_touch(ledger: &Ledger, lead_id: &str) -> Option<DateTime<Utc>> {
    ledger.sla_clock(lead_id).expect("read").and_then(|c| c.clock.first_touch_at)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_dated_today_moves_only_last_activity_date_and_meets_the_clock() {
    let harness = start_harness(&population::generate(10, 31)).await;
    let engine = start(&harness, &fast_env()).await;
    let email = "dated.call@touches.test";
    sign_up(&harness, email);
    until("the MQL to reach Salesforce", 30, || {
        sf_by_email(&harness).get(email).is_some_and(|l| l.len() == 1)
    })
    .await;
    assert!(wait_converged(&engine.app, Duration::from_secs(60)).await);
    let (ledger, person) = (engine.app.ledger(), engine.person(email));
    let clock = ledger.sla_clock(&person).expect("read").expect("a clock runs for the MQL");
    assert_eq!((clock.clock.first_touch_at, clock.clock.phase), (None, SlaPhase::Waiting));
    let lead = sf_by_email(&harness)[email][0].clone();
    assert_eq!(lead["LastActivityDate"], serde_json::Value::Null);
    let status = lead["Status"].clone();

    // A rep logs a completed call due today: Salesforce moves the lead's LastActivityDate
    // (and SystemModstamp), nothing else on the lead.
    let today = Utc::now().date_naive();
    let before_call = Utc::now();
    let id = lead["Id"].as_str().expect("id").to_string();
    harness.salesforce.log_task(&id, "Call", today).expect("task");
    let lead = harness.salesforce.get("Lead", &id).expect("lead");
    assert_eq!(lead["LastActivityDate"], today.format("%Y-%m-%d").to_string());
    assert_eq!(lead["Status"], status, "the status did not move: no status touch");

    until("the last activity date to touch the clock", 30, || {
        first_touch(&ledger, &person).is_some()
    })
    .await;
    let clock = ledger.sla_clock(&person).expect("read").expect("clock").clock;
    let touched = clock.first_touch_at.expect("touched");
    // Stamped when Salesforce said so (the lead's SystemModstamp), never at midnight.
    assert!(touched >= before_call - chrono::TimeDelta::seconds(1), "{touched} vs {before_call}");
    assert!(touched <= Utc::now());
    assert_eq!(clock.attempts, 0, "a touch, not an attempt");
    until("the clock to be met", 30, || {
        ledger.sla_clock(&person).expect("read").is_some_and(|c| c.clock.phase == SlaPhase::Met)
    })
    .await;
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubspot_as_the_crm_is_touched_by_notes_last_contacted() {
    let harness = start_harness(&population::generate(10, 37)).await;
    // HubSpot is where sales works here; Salesforce plays the marketing side.
    let mut env = fast_env();
    env.insert("LEADSYNC__SYSTEMS__MARKETING__ROLE".into(), "crm".into());
    env.insert("LEADSYNC__SYSTEMS__CRM__ROLE".into(), "marketing".into());
    let engine = start(&harness, &env).await;
    let email = "logged.call@touches.test";
    let contact = sign_up(&harness, email);
    until("the MQL's clock", 30, || {
        let reader = LedgerReader::open(&engine.db).expect("reader");
        reader
            .trace(email)
            .ok()
            .flatten()
            .is_some_and(|t| engine.app.ledger().sla_clock(&t.lead_id).expect("read").is_some())
    })
    .await;
    assert!(wait_converged(&engine.app, Duration::from_secs(60)).await);
    let (ledger, person) = (engine.app.ledger(), engine.person(email));
    assert_eq!(first_touch(&ledger, &person), None);
    assert_eq!(hs_by_email(&harness)[email][0].get("notes_last_contacted"), Some(&None));

    // A call logged as having happened just now, after the clock started.
    let call = Utc::now();
    let started = ledger.sla_clock(&person).expect("read").expect("clock").clock.started_at;
    assert!(call >= started, "the test logs after the start");
    assert!(harness.hubspot.log_engagement(&contact, Some(call.timestamp_millis())).expect("call"));
    until("notes_last_contacted to touch the clock", 30, || {
        first_touch(&ledger, &person).is_some()
    })
    .await;
    let clock = ledger.sla_clock(&person).expect("read").expect("clock").clock;
    let ms = |t: DateTime<Utc>| t.timestamp_millis();
    assert_eq!(clock.first_touch_at.map(ms), Some(ms(call)), "as HubSpot stamped it");
    assert_eq!(clock.attempts, 0);
    until("the clock to be met", 30, || {
        ledger.sla_clock(&person).expect("read").is_some_and(|c| c.clock.phase == SlaPhase::Met)
    })
    .await;
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_on_the_new_lead_before_its_first_poll_meets_the_clock() {
    let harness = start_harness(&population::generate(10, 41)).await;
    // Salesforce polled every 5 s: the rep's call lands before leadsync reads the lead it
    // created, so the first read already shows today's date.
    let mut env = fast_env();
    env.insert("LEADSYNC__SYSTEMS__CRM__POLL_INTERVAL_SECS".into(), "5".into());
    let engine = start(&harness, &env).await;
    let email = "quick.call@touches.test";
    sign_up(&harness, email);
    until("the MQL's lead in Salesforce", 30, || {
        sf_by_email(&harness).get(email).is_some_and(|l| l.len() == 1)
    })
    .await;
    let id = sf_by_email(&harness)[email][0]["Id"].as_str().expect("id").to_string();
    let today = Utc::now().date_naive();
    harness.salesforce.log_task(&id, "Call", today).expect("task");
    let (ledger, person) = (engine.app.ledger(), engine.person(email));
    let clock = ledger.sla_clock(&person).expect("read").expect("a clock runs for the MQL");
    assert!(clock.activity_seen.is_empty(), "no read of the new lead came before the call");

    until("the call to touch the clock", 30, || first_touch(&ledger, &person).is_some()).await;
    let clock = ledger.sla_clock(&person).expect("read").expect("clock").clock;
    assert_eq!(clock.attempts, 0, "a touch, not an attempt");
    until("the clock to be met", 30, || {
        ledger.sla_clock(&person).expect("read").is_some_and(|c| c.clock.phase == SlaPhase::Met)
    })
    .await;
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mornings_call_on_a_lead_that_existed_before_the_handover_is_no_touch() {
    let harness = start_harness(&population::generate(10, 43)).await;
    let engine = start(&harness, &fast_env()).await;
    let email = "early.call@touches.test";
    let fields: serde_json::Map<String, serde_json::Value> = serde_json::json!({
        "Email": email, "FirstName": "Ed", "LastName": "Early", "Company": "Early Ltd",
        "Title": "Head of Ops",
    })
    .as_object()
    .expect("object")
    .clone();
    let id = harness.salesforce.insert("Lead", fields).expect("lead");
    // This morning's call, before anyone qualified the lead.
    harness.salesforce.log_task(&id, "Call", Utc::now().date_naive()).expect("task");
    until("the lead to reach the ledger", 30, || {
        LedgerReader::open(&engine.db).expect("reader").trace(email).ok().flatten().is_some()
    })
    .await;
    assert!(wait_converged(&engine.app, Duration::from_secs(60)).await);
    let (ledger, person) = (engine.app.ledger(), engine.person(email));
    assert!(ledger.sla_clock(&person).expect("read").is_none(), "not an MQL yet");

    // The call made them MQL: the lead source that qualifies them is set on the lead.
    let source: serde_json::Map<String, serde_json::Value> =
        [("LeadSource".to_string(), serde_json::Value::from("Webinar-LC"))].into_iter().collect();
    harness.salesforce.ui_update("Lead", &id, source).expect("qualify");
    until("the MQL's clock", 30, || ledger.sla_clock(&person).expect("read").is_some()).await;
    let started = ledger.sla_clock(&person).expect("read").expect("clock").clock.started_at;
    // A later edit: a read well after the handover still shows the morning's date.
    let name: serde_json::Map<String, serde_json::Value> =
        [("FirstName".to_string(), serde_json::Value::from("Eddie"))].into_iter().collect();
    harness.salesforce.ui_update("Lead", &id, name).expect("edit");
    let edited = Utc::now();
    assert!(edited > started);
    until("a read after the edit", 30, || {
        ledger
            .sla_clock(&person)
            .expect("read")
            .is_some_and(|c| c.activity_seen.values().any(|s| s.seen_at >= edited))
    })
    .await;
    assert!(wait_converged(&engine.app, Duration::from_secs(60)).await);
    let clock = ledger.sla_clock(&person).expect("read").expect("clock").clock;
    assert_eq!((clock.first_touch_at, clock.phase), (None, SlaPhase::Waiting), "no SLA touch");
    engine.stop().await;
}
