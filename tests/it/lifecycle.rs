//! The lead contract's lifecycle end to end through both simulators: a HubSpot contact that
//! meets the MQL rule becomes MQL at both vendors, and an operator's recycle reaches both
//! (HubSpot's forward-only stage cleared first) and is not undone by the next syncs.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use leadsync::app::App;
use leadsync::contract::lifecycle::{LifecycleStage, NamedMove};
use leadsync::ledger::NamedOutcome;
use leadsync::settings::{DEMO_TOML, Source};
use leadsync::shutdown;
use leadsync::sim::harness::wait_converged;
use leadsync::sim::population;

use crate::helpers::{CRM_WITH_NURTURE, fast_env, hs_by_email, sf_by_email, start_harness, until};

/// The demo systems, a Salesforce org whose Status picklist value for leads handed back to
/// marketing is "Closed - Not Converted" (read and written as the canonical `nurture`), and a
/// contract whose MQL rule is met by a webinar sign-up with a job title.
fn config() -> String {
    format!(
        r#"{DEMO_TOML}
{CRM_WITH_NURTURE}

[contract]
[contract.qualification.mql]
all = ["title is set", "lead_source is Webinar-LC"]
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_mql_by_rule_reaches_both_and_a_recycle_sticks() {
    let people = population::generate(20, 17);
    let harness = start_harness(&people).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let toml = config();
    let settings = harness
        .settings(Source::Inline(&toml), &dir.path().join("ledger.db"), &fast_env())
        .expect("settings");
    assert!(settings.contract.is_some());
    let app = Arc::new(App::build(&settings).expect("app builds"));
    let (trigger, stop) = shutdown::channel();
    let a = Arc::clone(&app);
    let engine = tokio::spawn(async move { a.run_until_stopped(stop).await });
    assert!(wait_converged(&app, Duration::from_secs(60)).await, "initial sync converges");

    // A webinar sign-up with a title arrives in HubSpot as a plain lead.
    let email = "lc.person@lifecycle.test";
    let props: BTreeMap<String, String> = [
        ("email", email),
        ("firstname", "Lia"),
        ("lastname", "Cycle"),
        ("company", "Lifecycle Ltd"),
        ("jobtitle", "Head of Ops"),
        ("leadsource", "Webinar-LC"),
        ("lifecyclestage", "lead"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    harness.hubspot.insert(props).expect("contact");
    until("the MQL to reach both vendors", 30, || {
        let hs = hs_by_email(&harness);
        let sf = sf_by_email(&harness);
        hs.get(email)
            .is_some_and(|c| c[0]["lifecyclestage"].as_deref() == Some("marketingqualifiedlead"))
            && sf.get(email).is_some_and(|l| l.len() == 1)
    })
    .await;
    assert!(wait_converged(&app, Duration::from_secs(60)).await);
    let ledger = app.ledger();
    let trace = leadsync::ledger::LedgerReader::open(&dir.path().join("ledger.db"))
        .expect("reader")
        .trace(email)
        .expect("trace")
        .expect("person");
    let lead_id = trace.lead_id.clone();
    let state = ledger.lifecycle(&lead_id).expect("read").expect("governed");
    assert_eq!(state.stage, Some(LifecycleStage::Mql));
    assert!(state.dates.get(LifecycleStage::Mql).is_some());
    assert!(
        trace
            .events
            .iter()
            .any(|e| e.kind == "stage" && e.detail["to"] == "mql" && e.detail["via"] == "rule"),
        "the rule move is in the trail"
    );

    // Sales hands it back: recycle through the operator command's ledger call.
    let rules = app.rules();
    let l = Arc::clone(&ledger);
    let out = tokio::task::spawn_blocking(move || {
        l.named_transition(email, NamedMove::Recycle, "no_response", None, &rules, Utc::now())
    })
    .await
    .expect("join")
    .expect("ledger");
    assert!(matches!(out, NamedOutcome::Applied { .. }), "{out:?}");

    until("the recycle to reach both vendors", 30, || {
        let hs = hs_by_email(&harness);
        let sf = sf_by_email(&harness);
        let c = &hs[email][0];
        c["lifecyclestage"].as_deref() == Some("lead")
            && c["hs_lead_status"].as_deref() == Some("BAD_TIMING")
            && sf[email][0]["Status"] == "Closed - Not Converted"
    })
    .await;
    assert!(wait_converged(&app, Duration::from_secs(60)).await);
    let writes = (harness.salesforce.stats().api_writes, harness.hubspot.stats().api_writes);

    // More poll cycles over the same data: the MQL rule still holds, yet nothing moves back.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert!(wait_converged(&app, Duration::from_secs(60)).await);
    let state = ledger.lifecycle(&lead_id).expect("read").expect("governed");
    assert_eq!(state.stage, Some(LifecycleStage::Recycled));
    let hs = hs_by_email(&harness);
    assert_eq!(hs[email][0]["lifecyclestage"].as_deref(), Some("lead"));
    assert_eq!(
        (harness.salesforce.stats().api_writes, harness.hubspot.stats().api_writes),
        writes,
        "no further writes"
    );
    // A disqualified-style refusal through the same command is audited, not applied.
    let rules = app.rules();
    let l = Arc::clone(&ledger);
    let out = tokio::task::spawn_blocking(move || {
        l.named_transition(email, NamedMove::Reopen, "re_engaged", None, &rules, Utc::now())
    })
    .await
    .expect("join")
    .expect("ledger");
    assert!(matches!(out, NamedOutcome::Refused { .. }), "reopen is only from disqualified");

    trigger.trigger();
    engine.await.expect("engine task").expect("engine stops cleanly");
}
