//! The lead contract's own writes to the vendors, in the running daemon against both
//! simulators: an MQL left untouched is escalated and its Salesforce lead reassigned to the
//! configured owner (`OwnerId`, audited, shown by `trace`); recycled for the SLA, both systems'
//! reason properties read `sla_expired`; moved forward again, both are cleared. An owner the
//! org does not have is refused by Salesforce: a dead letter with the vendor's message, no
//! retry loop, and the escalation alert still fires. With HubSpot as the CRM, the escalation
//! writes `hubspot_owner_id` on the contact instead (an owner `GET /crm/v3/owners` lists), and
//! Salesforce, the marketing side then, keeps its owner. Deadlines are seconds long on a
//! round-the-clock calendar; every wait is on a condition with a generous deadline.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

use leadsync::app::App;
use leadsync::contract::lifecycle::LifecycleStage;
use leadsync::ledger::{LedgerReader, Trace};
use leadsync::settings::{DEMO_TOML, Source};
use leadsync::shutdown;
use leadsync::sim::harness::{Harness, wait_converged};
use leadsync::sim::hubspot::HubspotSimOptions;
use leadsync::sim::population;
use leadsync::sim::salesforce::{SalesforceSimOptions, SimFieldType, owner_user_ids};

use crate::helpers::{
    CRM_WITH_NURTURE, fast_env, hs_by_email, sf_by_email, start_harness_with, until,
};

/// First touch due 10.8 s after the handover, escalation 3.6 s later, recycle 7.2 s after.
fn config(owner: &str, alert_url: &str) -> String {
    format!(
        r#"{DEMO_TOML}
{CRM_WITH_NURTURE}

[contract]
[contract.qualification.mql]
all = ["title is set", "lead_source is Webinar-Owner"]

[contract.mapping.stage_reason]
crm = "LeadSync_Reason__c"
hubspot = "leadsync_reason"

[contract.calendar]
working_days = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
working_hours = "00:00-24:00"

[contract.sla]
first_touch_business_hours = 0.003
grace_business_hours = 0.001
recycle_after_business_hours = 0.002
reassign_to = "{owner}"
alert_webhook = "{alert_url}"
check_interval_seconds = 1
"#
    )
}

fn contact(email: &str) -> BTreeMap<String, String> {
    [
        ("email", email),
        ("firstname", "Owen"),
        ("lastname", "Untouched"),
        ("company", "Idle Ltd"),
        ("jobtitle", "Head of Waiting"),
        ("leadsource", "Webinar-Owner"),
        ("lifecyclestage", "lead"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// Both simulators with the reason field/property declared, and the daemon on `toml`.
async fn start(
    toml: &str,
    ledger: &Path,
) -> (Harness, Arc<App>, shutdown::Trigger, tokio::task::JoinHandle<anyhow::Result<()>>) {
    start_with_env(toml, ledger, fast_env()).await
}

/// [`start`] with the daemon's environment given (e.g. the roles swapped).
async fn start_with_env(
    toml: &str,
    ledger: &Path,
    env: std::collections::HashMap<String, String>,
) -> (Harness, Arc<App>, shutdown::Trigger, tokio::task::JoinHandle<anyhow::Result<()>>) {
    let sf = SalesforceSimOptions {
        custom_fields: vec![("LeadSync_Reason__c".into(), SimFieldType::Text)],
        ..SalesforceSimOptions::default()
    };
    let hs = HubspotSimOptions {
        extra_properties: vec!["leadsync_reason".into()],
        ..HubspotSimOptions::default()
    };
    let harness = start_harness_with(&population::generate(6, 13), sf, hs).await;
    let settings = harness.settings(Source::Inline(toml), ledger, &env).expect("settings");
    let app = Arc::new(App::build(&settings).expect("app builds"));
    let (trigger, stop) = shutdown::channel();
    let a = Arc::clone(&app);
    let engine = tokio::spawn(async move { a.run_until_stopped(stop).await });
    assert!(wait_converged(&app, Duration::from_secs(90)).await, "initial sync converges");
    (harness, app, trigger, engine)
}

fn trace(ledger: &Path, email: &str) -> Trace {
    LedgerReader::open(ledger).expect("reader").trace(email).expect("trace").expect("person")
}

fn sf_field(h: &Harness, email: &str, field: &str) -> Value {
    sf_by_email(h).get(email).and_then(|l| l[0].get(field).cloned()).unwrap_or(Value::Null)
}

fn hs_prop(h: &Harness, email: &str, prop: &str) -> Option<String> {
    hs_by_email(h).get(email).and_then(|c| c[0].get(prop).cloned().flatten())
}

async fn alert_texts(hook: &MockServer) -> Vec<String> {
    hook.received_requests()
        .await
        .expect("recorded")
        .iter()
        .map(|r| {
            let body: Value = serde_json::from_slice(&r.body).expect("json");
            body["text"].as_str().expect("text").to_string()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_escalated_mql_is_reassigned_and_the_recycle_reason_reaches_both_systems() {
    let hook = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(200)).mount(&hook).await;
    let owner = owner_user_ids()[1].clone();
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = dir.path().join("ledger.db");
    let toml = config(&owner, &format!("{}/hook", hook.uri()));
    let (harness, app, trigger, engine) = start(&toml, &ledger).await;

    let email = "owen.untouched@owner.test";
    harness.hubspot.insert(contact(email)).expect("contact");
    until("the MQL to be created in Salesforce", 60, || sf_by_email(&harness).contains_key(email))
        .await;
    let first_owner = sf_field(&harness, email, "OwnerId");
    assert_ne!(first_owner, Value::from(owner.as_str()), "created with the API user as owner");

    // Nobody touches it: escalated, the lead goes to the configured owner.
    until("the escalation to reassign the Salesforce lead", 120, || {
        sf_field(&harness, email, "OwnerId") == owner.as_str()
    })
    .await;
    let t = trace(&ledger, email);
    let reassigned: Vec<_> = t.events.iter().filter(|e| e.kind == "owner_reassigned").collect();
    assert_eq!(reassigned.len(), 1, "once per escalation: {:?}", t.events);
    assert_eq!(reassigned[0].detail["owner"], owner.as_str());
    assert_eq!(reassigned[0].system.as_deref(), Some("crm"));
    // HubSpot is not the CRM here: it gets no owner.
    assert_eq!(hs_prop(&harness, email, "hubspot_owner_id"), None);

    // Still untouched: recycled to nurture, and both systems say why.
    until("the recycle reason to reach both systems", 120, || {
        sf_field(&harness, email, "LeadSync_Reason__c") == "sla_expired"
            && hs_prop(&harness, email, "leadsync_reason").as_deref() == Some("sla_expired")
    })
    .await;
    let lead_id = t.lead_id.clone();
    let t_lead = t.lead_id.clone();
    let ledger_handle = app.ledger();
    let stage = || ledger_handle.lifecycle(&lead_id).expect("read").and_then(|s| s.stage);
    assert_eq!(stage(), Some(LifecycleStage::Recycled));
    assert_eq!(sf_field(&harness, email, "Status"), "Closed - Not Converted");
    assert_eq!(sf_field(&harness, email, "OwnerId"), owner.as_str(), "the owner stays");

    // Marketing reports the person sales-qualified: a forward move, so the reason no longer
    // stands and is cleared at both vendors (a stale reason never shows).
    let hs_id = harness
        .hubspot
        .all()
        .into_iter()
        .find(|(_, p)| p.get("email").cloned().flatten().as_deref() == Some(email))
        .map(|(id, _)| id)
        .expect("contact");
    let sql: BTreeMap<String, String> =
        [("lifecyclestage".to_string(), "salesqualifiedlead".to_string())].into();
    harness.hubspot.ui_update(&hs_id, sql).expect("sql");
    until("the reason to be cleared at both systems", 60, || {
        sf_field(&harness, email, "LeadSync_Reason__c").is_null()
            && hs_prop(&harness, email, "leadsync_reason").is_none_or(|v| v.is_empty())
    })
    .await;
    assert_eq!(stage(), Some(LifecycleStage::Sql));
    assert!(wait_converged(&app, Duration::from_secs(60)).await);
    assert_eq!(sf_field(&harness, email, "OwnerId"), owner.as_str(), "never written again");
    // Seeded MQLs have clocks too: only this person's alerts count.
    let alerts: Vec<String> =
        alert_texts(&hook).await.into_iter().filter(|t| t.contains(&t_lead)).collect();
    assert_eq!(alerts.len(), 2, "breached and escalated: {alerts:?}");
    assert!(alerts[1].contains("escalated") && alerts[1].contains(&owner), "{alerts:?}");

    trigger.trigger();
    engine.await.expect("engine task").expect("engine stops cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_the_org_lacks_is_a_dead_letter_and_the_alert_still_fires() {
    let hook = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(200)).mount(&hook).await;
    // Well formed, but no user of the simulated org.
    let owner = "005000000000099";
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = dir.path().join("ledger.db");
    let toml = config(owner, &format!("{}/hook", hook.uri()));
    let (harness, app, trigger, engine) = start(&toml, &ledger).await;

    let email = "owen.unowned@owner.test";
    harness.hubspot.insert(contact(email)).expect("contact");
    until("the MQL to be created in Salesforce", 60, || sf_by_email(&harness).contains_key(email))
        .await;
    let first_owner = sf_field(&harness, email, "OwnerId");
    until("the refused reassignment to be a dead letter", 120, || {
        trace(&ledger, email).events.iter().any(|e| e.kind == "push_dead")
    })
    .await;
    let t = trace(&ledger, email);
    let dead: Vec<_> = t.events.iter().filter(|e| e.kind == "push_dead").collect();
    assert_eq!(dead.len(), 1, "{:?}", t.events);
    assert_eq!(dead[0].detail["error_code"], "FIELD_INTEGRITY_EXCEPTION");
    assert!(dead[0].detail["error"].as_str().is_some_and(|m| m.contains("OwnerId")), "{dead:?}");
    assert_eq!(dead[0].detail["writes"]["owner"], owner);
    assert_eq!(sf_field(&harness, email, "OwnerId"), first_owner, "the owner is unchanged");
    // Dead on the first try: not a retry loop.
    assert_eq!(dead[0].detail["attempts"], 1, "{dead:?}");
    // The escalation alert fired regardless.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let lead_id = t.lead_id.clone();
    while !alert_texts(&hook).await.iter().any(|t| t.contains("escalated") && t.contains(&lead_id))
    {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for the alert");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The person still moves on: the SLA recycle reaches Salesforce past the dead letter.
    until("the recycle reason to reach Salesforce", 120, || {
        sf_field(&harness, email, "LeadSync_Reason__c") == "sla_expired"
    })
    .await;
    assert!(wait_converged(&app, Duration::from_secs(60)).await);
    let t = trace(&ledger, email);
    assert_eq!(t.events.iter().filter(|e| e.kind == "push_dead").count(), 1);
    assert_eq!(sf_field(&harness, email, "OwnerId"), first_owner);

    trigger.trigger();
    engine.await.expect("engine task").expect("engine stops cleanly");
}

/// The portal's owners as HubSpot lists them (`GET /crm/v3/owners`, first page).
async fn hubspot_owner_ids(h: &Harness) -> Vec<String> {
    let url = format!("{}/crm/v3/owners?limit=100", h.hubspot.base_url());
    let body: Value = reqwest::Client::new()
        .get(url)
        .bearer_auth(h.hubspot_token())
        .send()
        .await
        .expect("owners answered")
        .json()
        .await
        .expect("json");
    body["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|o| o["id"].as_str().expect("owner id").to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_hubspot_as_the_crm_the_escalation_reassigns_the_contact() {
    let hook = MockServer::start().await;
    Mock::given(method("POST")).respond_with(ResponseTemplate::new(200)).mount(&hook).await;
    // HubSpot is where sales works here; Salesforce plays the marketing side.
    let mut env = fast_env();
    env.insert("LEADSYNC__SYSTEMS__MARKETING__ROLE".into(), "crm".into());
    env.insert("LEADSYNC__SYSTEMS__CRM__ROLE".into(), "marketing".into());
    let owner = leadsync::sim::hubspot::OWNERS[1].0;
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = dir.path().join("ledger.db");
    let toml = config(owner, &format!("{}/hook", hook.uri()));
    let (harness, app, trigger, engine) = start_with_env(&toml, &ledger, env).await;
    assert!(hubspot_owner_ids(&harness).await.iter().any(|o| o == owner), "a listed owner");

    let email = "owen.hubspot@owner.test";
    harness.hubspot.insert(contact(email)).expect("contact");
    until("the MQL's clock", 60, || {
        LedgerReader::open(&ledger)
            .expect("reader")
            .trace(email)
            .ok()
            .flatten()
            .is_some_and(|t| app.ledger().sla_clock(&t.lead_id).expect("read").is_some())
    })
    .await;
    assert_eq!(hs_prop(&harness, email, "hubspot_owner_id"), None, "nobody owns it yet");

    // Nobody touches it: escalated, the HubSpot contact goes to the configured owner.
    until("the escalation to reassign the HubSpot contact", 120, || {
        hs_prop(&harness, email, "hubspot_owner_id").as_deref() == Some(owner)
    })
    .await;
    let t = trace(&ledger, email);
    let reassigned: Vec<_> = t.events.iter().filter(|e| e.kind == "owner_reassigned").collect();
    assert_eq!(reassigned.len(), 1, "once per escalation: {:?}", t.events);
    assert_eq!(reassigned[0].detail["owner"], owner);
    assert_eq!(reassigned[0].system.as_deref(), Some("marketing"), "the HubSpot system");
    assert!(!t.events.iter().any(|e| e.kind == "push_dead"), "{:?}", t.events);
    // Salesforce is not the CRM here: its lead (if the person has one) keeps its owner.
    if sf_by_email(&harness).contains_key(email) {
        let sf_owner = sf_field(&harness, email, "OwnerId");
        assert!(sf_owner.as_str().is_some_and(|o| o != owner && !o.is_empty()), "{sf_owner}");
    }
    let alerts: Vec<String> =
        alert_texts(&hook).await.into_iter().filter(|a| a.contains(&t.lead_id)).collect();
    assert!(alerts.iter().any(|a| a.contains("escalated") && a.contains(owner)), "{alerts:?}");

    trigger.trigger();
    engine.await.expect("engine task").expect("engine stops cleanly");
}
