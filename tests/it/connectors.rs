//! Connector behaviour against the simulators: paging, re-auth, rate limits, 5xx, per-record
//! failures. (Scripted wire-level failures are also covered with wiremock beside each connector.)

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use leadsync::app::build_connector;
use leadsync::connectors::{AnyConnector, Connector, Cursor};
use leadsync::settings::{DEMO_TOML, Settings, Source};
use leadsync::sim::harness::Harness;
use leadsync::sim::hubspot::{Fault as HsFault, HubspotSimOptions};
use leadsync::sim::salesforce::SalesforceSimOptions;

async fn harness(sf: SalesforceSimOptions, hs: HubspotSimOptions) -> Harness {
    crate::helpers::init_logs();
    Harness::start(sf, hs).await.expect("simulators")
}

fn connectors(h: &Harness) -> (AnyConnector, AnyConnector) {
    let dir = std::env::temp_dir().join("leadsync-unused.db");
    let mut env: HashMap<String, String> = h.env(&dir);
    env.extend(crate::helpers::fast_env());
    let settings = Settings::load(Source::Inline(DEMO_TOML), &env).expect("settings");
    let crm = settings.systems.iter().find(|s| s.name.as_str() == "crm").expect("crm");
    let mkt = settings.systems.iter().find(|s| s.name.as_str() == "marketing").expect("mkt");
    (build_connector(crm).expect("sf"), build_connector(mkt).expect("hs"))
}

/// Poll from the start until caught up; every record id seen.
async fn drain(c: &AnyConnector) -> (HashSet<String>, usize) {
    let mut cursor = Cursor::default();
    let mut ids = HashSet::new();
    let mut calls = 0;
    loop {
        let page = c.poll_changes(&cursor).await.expect("poll");
        calls += 1;
        ids.extend(page.changes.iter().map(|ch| ch.remote.id.clone()));
        cursor = page.next_cursor;
        if !page.poll_again_after.is_zero() {
            return (ids, calls);
        }
        assert!(calls < 10_000, "polling does not terminate");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubspot_polling_across_the_10k_search_cap_loses_nothing() {
    let h = harness(SalesforceSimOptions::default(), HubspotSimOptions::unlimited()).await;
    // Imports stamp many contacts with the same millisecond: ties are the hard case.
    for i in 0..10_500 {
        let mut p = BTreeMap::new();
        p.insert("email".to_string(), format!("p{i}@cap.example"));
        p.insert("lastname".to_string(), format!("N{i}"));
        h.hubspot.insert(p).expect("insert");
    }
    let (_, hs) = connectors(&h);
    let (ids, _) = drain(&hs).await;
    assert_eq!(ids.len(), 10_500);
    assert_eq!(h.hubspot.stats().errors_returned, 0, "never paged past the cap");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn salesforce_polling_pages_through_everything() {
    let h = harness(
        SalesforceSimOptions { daily_api_limit: u64::MAX, ..SalesforceSimOptions::default() },
        HubspotSimOptions::unlimited(),
    )
    .await;
    let people = leadsync::sim::population::generate(4500, 9);
    for p in &people {
        h.salesforce.insert("Lead", p.salesforce_lead(false)).expect("insert");
    }
    let (sf, _) = connectors(&h);
    let (ids, calls) = drain(&sf).await;
    assert_eq!(ids.len(), 4500);
    assert!(calls >= 3, "LIMIT 2000 pages: {calls} calls");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn salesforce_revoked_token_triggers_exactly_one_reauth() {
    let h = harness(SalesforceSimOptions::default(), HubspotSimOptions::default()).await;
    let (sf, _) = connectors(&h);
    sf.healthcheck().await.expect("first auth");
    let tokens = h.salesforce.stats().token_requests;
    h.salesforce.revoke_tokens();
    sf.poll_changes(&Cursor::default()).await.expect("poll after re-auth");
    assert_eq!(h.salesforce.stats().token_requests, tokens + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hubspot_429_and_5xx_are_retried() {
    let h = harness(SalesforceSimOptions::default(), HubspotSimOptions::default()).await;
    let (_, hs) = connectors(&h);
    h.hubspot.inject(HsFault::RateLimited { count: 1 });
    h.hubspot.inject(HsFault::ServerError { status: 503, count: 2 });
    let started = tokio::time::Instant::now();
    hs.healthcheck().await.expect("succeeds after retries");
    assert!(h.hubspot.stats().rate_limited >= 1);
    // TEN_SECONDLY_ROLLING asks for the window to pass.
    assert!(started.elapsed() >= Duration::from_millis(500), "waited before retrying");
}
