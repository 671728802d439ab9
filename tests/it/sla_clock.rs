//! SLA clocks in the running daemon: two MQLs handed to Salesforce, one touched by sales in
//! time, one left alone. The untouched one alerts a local webhook once per state change
//! (breached, escalated, ids only), is recycled to nurture at both vendors, and
//! `leadsync report sla` (the real binary) counts the two cycles. Deadlines are seconds long on
//! a round-the-clock calendar, and every wait is on a condition with a generous deadline.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde_json::Value;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use leadsync::app::App;
use leadsync::contract::lifecycle::LifecycleStage;
use leadsync::settings::{DEMO_TOML, Source};
use leadsync::shutdown;
use leadsync::sim::harness::wait_converged;
use leadsync::sim::population;

use crate::helpers::{CRM_WITH_NURTURE, fast_env, hs_by_email, sf_by_email, start_harness, until};

/// First touch due 54 s after the handover (room for a loaded machine to create the lead and
/// the test to touch it), escalation 3.6 s later, recycle 3.6 s after that.
fn config(alert_url: &str) -> String {
    format!(
        r#"{DEMO_TOML}
{CRM_WITH_NURTURE}

[contract]
[contract.qualification.mql]
all = ["title is set", "lead_source is Webinar-SLA"]

[contract.calendar]
working_days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
working_hours = "00:00-24:00"

[contract.sla]
first_touch_business_hours = 0.015
grace_business_hours = 0.001
recycle_after_business_hours = 0.001
touch_statuses = ["working"]
alert_webhook = "{alert_url}"
check_interval_seconds = 1
"#
    )
}

fn contact(email: &str, last: &str) -> BTreeMap<String, String> {
    [
        ("email", email),
        ("firstname", "Sla"),
        ("lastname", last),
        ("company", "Clockwork Ltd"),
        ("jobtitle", "Head of Ops"),
        ("leadsource", "Webinar-SLA"),
        ("lifecyclestage", "lead"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untouched_mql_alerts_once_per_step_and_is_recycled_a_touched_one_meets_the_sla() {
    let hook = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(200)).mount(&hook).await;
    let people = population::generate(10, 5);
    let harness = start_harness(&people).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger_path = dir.path().join("ledger.db");
    let toml = config(&format!("{}/hook", hook.uri()));
    let settings =
        harness.settings(Source::Inline(&toml), &ledger_path, &fast_env()).expect("settings");
    assert!(settings.contract.as_ref().is_some_and(|c| c.sla.is_some()));
    let app = Arc::new(App::build(&settings).expect("app builds"));
    let (trigger, stop) = shutdown::channel();
    let a = Arc::clone(&app);
    let engine = tokio::spawn(async move { a.run_until_stopped(stop).await });
    assert!(wait_converged(&app, Duration::from_secs(90)).await, "initial sync converges");
    let started = Utc::now();

    let (touched, ignored) = ("sla.touched@clock.test", "sla.ignored@clock.test");
    harness.hubspot.insert(contact(touched, "Touched")).expect("contact");
    harness.hubspot.insert(contact(ignored, "Ignored")).expect("contact");
    until("both MQLs to be created in Salesforce", 60, || {
        let sf = sf_by_email(&harness);
        sf.contains_key(touched) && sf.contains_key(ignored)
    })
    .await;
    // Sales works one of them at once.
    let lead = sf_by_email(&harness)[touched][0]["Id"].as_str().expect("id").to_string();
    let status: serde_json::Map<String, Value> =
        [("Status".to_string(), Value::from("Working - Contacted"))].into_iter().collect();
    harness.salesforce.ui_update("Lead", &lead, status).expect("status");

    until("the untouched MQL to be recycled at both vendors", 240, || {
        let (hs, sf) = (hs_by_email(&harness), sf_by_email(&harness));
        let c = &hs[ignored][0];
        c["lifecyclestage"].as_deref() == Some("lead")
            && c["hs_lead_status"].as_deref() == Some("BAD_TIMING")
            && sf[ignored][0]["Status"] == "Closed - Not Converted"
    })
    .await;
    assert!(wait_converged(&app, Duration::from_secs(60)).await);
    let reader = leadsync::ledger::LedgerReader::open(&ledger_path).expect("reader");
    let id = |email: &str| reader.trace(email).expect("trace").expect("person").lead_id;
    let (touched_id, ignored_id) = (id(touched), id(ignored));
    let ledger = app.ledger();
    let stage = |lead_id: &str| ledger.lifecycle(lead_id).expect("read").and_then(|s| s.stage);
    assert_eq!(stage(&ignored_id), Some(LifecycleStage::Recycled));
    assert_ne!(stage(&touched_id), Some(LifecycleStage::Recycled), "the touched one stays");

    // One alert per state change, for the untouched person only, by ledger id, no email.
    let alerts: Vec<String> = hook
        .received_requests()
        .await
        .expect("recorded")
        .iter()
        .map(|r| {
            let body: Value = serde_json::from_slice(&r.body).expect("json");
            body["text"].as_str().expect("text").to_string()
        })
        .collect();
    assert_eq!(alerts.len(), 2, "breached and escalated: {alerts:?}");
    assert!(alerts[0].contains("breached") && alerts[1].contains("escalated"), "{alerts:?}");
    for text in &alerts {
        assert!(text.contains(&ignored_id) && !text.contains(&touched_id), "{text}");
        assert!(!text.contains("@clock.test"), "no email in alerts: {text}");
    }

    // The operator's report, from the real binary, on the ledger the daemon is writing.
    let config = dir.path().join("leadsync.toml");
    std::fs::write(&config, &toml).expect("config");
    let out = Command::new(env!("CARGO_BIN_EXE_leadsync"))
        .args(["report", "sla", "--since", "1d", "--format", "json", "-c"])
        .arg(&config)
        .env_clear()
        .envs(harness.env(&ledger_path))
        .output()
        .expect("run leadsync report");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).expect("json report");
    let n = |k: &str| report[k].as_u64().unwrap_or_else(|| panic!("{k} in {report}"));
    assert_eq!(
        [n("handed_over"), n("met"), n("overdue"), n("breached"), n("escalated"), n("recycled")],
        [2, 1, 1, 1, 1, 1],
        "{report}"
    );
    assert_eq!(report["within_deadline_bp"], 5000);
    // The touched one's time to first touch is between its handover and now.
    let secs = report["median_secs_to_first_touch"].as_i64().expect("a touch");
    assert!((0..=(Utc::now() - started).num_seconds()).contains(&secs), "{report}");

    trigger.trigger();
    engine.await.expect("engine task").expect("engine stops cleanly");
}
