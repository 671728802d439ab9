//! The lead contract's custom fields end to end: a country read from a Salesforce custom field
//! and a score read from a HubSpot custom property together qualify a person as MQL, the
//! stage reaches HubSpot, and the MQL date reaches both systems' stage-date properties.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use leadsync::app::App;
use leadsync::contract::lifecycle::LifecycleStage;
use leadsync::settings::{DEMO_TOML, Source};
use leadsync::shutdown;
use leadsync::sim::harness::wait_converged;
use leadsync::sim::hubspot::HubspotSimOptions;
use leadsync::sim::population;
use leadsync::sim::salesforce::{SalesforceSimOptions, SimFieldType};
use serde_json::json;

use crate::helpers::{fast_env, hs_by_email, sf_by_email, start_harness_with};

fn config() -> String {
    format!(
        r#"{DEMO_TOML}
[contract]
fields = {{ score = "number", country = "text" }}
[contract.qualification.mql]
all = ["score >= 50", "country in [CA, US]"]
[contract.mapping.custom_fields.marketing]
score = "lead_score"
[contract.mapping.custom_fields.salesforce]
country = "Country__c"
[contract.mapping.stage_dates.marketing]
mql = "leadsync_mql_date"
[contract.mapping.stage_dates.crm]
mql = {{ property = "MQL_Date__c", type = "date" }}
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_salesforce_country_and_a_hubspot_score_qualify_a_person() {
    let people = population::generate(10, 23);
    let sf = SalesforceSimOptions {
        custom_fields: vec![
            ("Country__c".into(), SimFieldType::Text),
            ("MQL_Date__c".into(), SimFieldType::Date),
        ],
        ..SalesforceSimOptions::default()
    };
    let hs = HubspotSimOptions {
        extra_properties: vec!["lead_score".into(), "leadsync_mql_date".into()],
        ..HubspotSimOptions::default()
    };
    let harness = start_harness_with(&people, sf, hs).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let toml = config();
    let settings = harness
        .settings(Source::Inline(&toml), &dir.path().join("ledger.db"), &fast_env())
        .expect("settings");
    let app = Arc::new(App::build(&settings).expect("app builds"));
    let (trigger, stop) = shutdown::channel();
    let a = Arc::clone(&app);
    let engine = tokio::spawn(async move { a.run_until_stopped(stop).await });
    assert!(wait_converged(&app, Duration::from_secs(60)).await, "initial sync converges");

    // A lead typed into Salesforce with its country; it reaches HubSpot as a plain lead.
    let email = "cf.person@custom.test";
    let fields = json!({
        "Email": email, "FirstName": "Cara", "LastName": "Field", "Company": "Custom Co",
        "Status": "Open - Not Contacted", "Country__c": "CA",
    });
    let serde_json::Value::Object(fields) = fields else { unreachable!("an object literal") };
    harness.salesforce.insert("Lead", fields).expect("lead");
    until("the lead to reach HubSpot", || hs_by_email(&harness).contains_key(email)).await;
    assert!(wait_converged(&app, Duration::from_secs(60)).await);
    let reader = || {
        leadsync::ledger::LedgerReader::open(&dir.path().join("ledger.db"))
            .expect("reader")
            .trace(email)
            .expect("trace")
            .expect("person")
    };
    let lead_id = reader().lead_id;
    let ledger = app.ledger();
    let state = ledger.lifecycle(&lead_id).expect("read").expect("governed");
    assert_eq!(state.custom.get("country").map(String::as_str), Some("CA"));
    assert_eq!(state.stage, Some(LifecycleStage::Lead), "no score yet");

    // Marketing scores the contact in HubSpot: now both conditions hold.
    let hs_id = harness
        .hubspot
        .all()
        .into_iter()
        .find(|(_, p)| p.get("email").cloned().flatten().as_deref() == Some(email))
        .map(|(id, _)| id)
        .expect("contact");
    let score: BTreeMap<String, String> = [("lead_score".to_string(), "72".to_string())].into();
    harness.hubspot.ui_update(&hs_id, score).expect("score");
    until("the MQL to reach HubSpot", || {
        hs_by_email(&harness)[email][0]["lifecyclestage"].as_deref()
            == Some("marketingqualifiedlead")
    })
    .await;
    let state = ledger.lifecycle(&lead_id).expect("read").expect("governed");
    assert_eq!(state.stage, Some(LifecycleStage::Mql));
    assert_eq!(state.custom.get("score").map(String::as_str), Some("72"));
    assert!(
        reader()
            .events
            .iter()
            .any(|e| e.kind == "stage" && e.detail["to"] == "mql" && e.detail["via"] == "rule"),
        "the rule move is in the trail"
    );
    // Read-only inputs: leadsync wrote neither custom property.
    let hs = hs_by_email(&harness);
    assert_eq!(hs[email][0]["lead_score"].as_deref(), Some("72"));
    assert_eq!(sf_by_email(&harness)[email][0]["Country__c"], "CA");

    // The MQL date reaches both systems, each in its property's format.
    let entered = state.dates.get(LifecycleStage::Mql).expect("stamped").last;
    let millis = entered.timestamp_millis().to_string();
    let day = entered.format("%Y-%m-%d").to_string();
    until("the MQL date to reach both vendors", || {
        hs_by_email(&harness)[email][0]["leadsync_mql_date"].as_deref() == Some(millis.as_str())
            && sf_by_email(&harness)[email][0]["MQL_Date__c"] == day.as_str()
    })
    .await;
    assert!(wait_converged(&app, Duration::from_secs(60)).await);
    let writes = (harness.salesforce.stats().api_writes, harness.hubspot.stats().api_writes);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(wait_converged(&app, Duration::from_secs(60)).await);
    assert_eq!(
        (harness.salesforce.stats().api_writes, harness.hubspot.stats().api_writes),
        writes,
        "a date is written once, and never read back as news"
    );

    trigger.trigger();
    engine.await.expect("engine task").expect("engine stops cleanly");
}

/// `leadsync check`'s healthcheck asks Salesforce for the contract's fields on every synced
/// object, so a field the org lacks is found before the first poll.
#[tokio::test]
async fn the_salesforce_healthcheck_names_a_missing_contract_field() {
    use leadsync::connectors::Connector;
    use leadsync::connectors::salesforce::SalesforceConnector;
    use leadsync::settings::ConnectorSettings;
    for (org_fields, healthy) in [(vec![], false), (vec!["Country__c", "MQL_Date__c"], true)] {
        let sf = SalesforceSimOptions {
            custom_fields: org_fields.iter().map(|f| (f.to_string(), SimFieldType::Text)).collect(),
            ..SalesforceSimOptions::default()
        };
        let harness = start_harness_with(&[], sf, HubspotSimOptions::default()).await;
        let dir = tempfile::tempdir().expect("tempdir");
        let toml = config();
        let settings = harness
            .settings(Source::Inline(&toml), &dir.path().join("ledger.db"), &fast_env())
            .expect("settings");
        let cfg = settings
            .systems
            .iter()
            .find_map(|s| match &s.connector {
                ConnectorSettings::Salesforce(c) => Some(c.clone()),
                ConnectorSettings::Hubspot(_) => None,
            })
            .expect("a salesforce system");
        let conn = SalesforceConnector::new(cfg).expect("connector");
        match conn.healthcheck().await {
            Ok(()) => assert!(healthy, "a missing field must fail the check"),
            Err(e) => {
                assert!(!healthy, "{e}");
                assert!(e.to_string().contains("INVALID_FIELD"), "{e}");
            }
        }
    }
}
