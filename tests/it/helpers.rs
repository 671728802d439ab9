//! `spawn_app()`: both simulators, a temp ledger, and the sync engine, ready to assert on.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use leadsync::app::App;
use leadsync::ledger::LeadSnapshot;
use leadsync::settings::{DEMO_TOML, LogFormat, Source};
use leadsync::shutdown::{self, Trigger};
use leadsync::sim::harness::{Harness, wait_converged};
use leadsync::sim::hubspot::HubspotSimOptions;
use leadsync::sim::population::{self, Person};
use leadsync::sim::salesforce::SalesforceSimOptions;
use leadsync::verify;

pub struct TestApp {
    pub harness: Harness,
    pub app: Arc<App>,
    pub people: Vec<Person>,
    /// Kept so the temp ledger lives as long as the app.
    _dir: tempfile::TempDir,
    trigger: Trigger,
    engine: tokio::task::JoinHandle<anyhow::Result<()>>,
}

pub fn init_logs() {
    // TEST_LOG=1 shows the engine's logs.
    if std::env::var_os("TEST_LOG").is_some() {
        leadsync::telemetry::init(LogFormat::Text, "debug", None);
    }
}

/// Test settings: the demo config with short poll intervals.
pub fn fast_env() -> HashMap<String, String> {
    let mut env = HashMap::new();
    for sys in ["CRM", "MARKETING"] {
        env.insert(format!("LEADSYNC__SYSTEMS__{sys}__POLL_INTERVAL_SECS"), "1".into());
        env.insert(format!("LEADSYNC__SYSTEMS__{sys}__OVERLAP_SECS"), "1".into());
    }
    env.insert("LEADSYNC__SYSTEMS__MARKETING__SEARCH_MIN_INTERVAL_MS".into(), "0".into());
    env.insert("LEADSYNC__SYNC__PUSH_RETRY_BASE_MS".into(), "100".into());
    env
}

pub async fn start_harness(people: &[Person]) -> Harness {
    start_harness_with(people, SalesforceSimOptions::default(), HubspotSimOptions::default()).await
}

pub async fn start_harness_with(
    people: &[Person],
    sf: SalesforceSimOptions,
    hs: HubspotSimOptions,
) -> Harness {
    init_logs();
    let h = Harness::start(sf, hs).await.expect("simulators start");
    h.seed(people).expect("seeding");
    h
}

pub async fn spawn_app(n: usize, seed: u64) -> TestApp {
    spawn_app_with(n, seed, SalesforceSimOptions::default()).await
}

pub async fn spawn_app_with(n: usize, seed: u64, sf: SalesforceSimOptions) -> TestApp {
    let people = population::generate(n, seed);
    let harness = start_harness_with(&people, sf, HubspotSimOptions::default()).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let (app, trigger, engine) = start_engine(&harness, &dir).await;
    TestApp { harness, app, people, _dir: dir, trigger, engine }
}

pub async fn start_engine(
    harness: &Harness,
    dir: &tempfile::TempDir,
) -> (Arc<App>, Trigger, tokio::task::JoinHandle<anyhow::Result<()>>) {
    let settings = harness
        .settings(Source::Inline(DEMO_TOML), &dir.path().join("ledger.db"), &fast_env())
        .expect("settings");
    let app = Arc::new(App::build(&settings).expect("app builds"));
    let (trigger, shutdown) = shutdown::channel();
    let a = Arc::clone(&app);
    let engine = tokio::spawn(async move { a.run_until_stopped(shutdown).await });
    (app, trigger, engine)
}

impl TestApp {
    pub async fn converge(&self) {
        assert!(
            wait_converged(&self.app, Duration::from_secs(60)).await,
            "engine did not converge within 60 s"
        );
    }

    pub fn snapshot(&self) -> Vec<LeadSnapshot> {
        self.app.ledger().snapshot().expect("snapshot")
    }

    pub fn disagreements(&self) -> Vec<verify::Disagreement> {
        verify::compare(&self.snapshot(), &self.app.rules(), &|s, r| self.harness.fetch(s, r))
    }

    pub async fn stop(self) -> Harness {
        self.trigger.trigger();
        self.engine.await.expect("engine task").expect("engine stops cleanly");
        self.harness
    }
}

/// Salesforce leads by lower-cased email.
pub fn sf_by_email(
    h: &Harness,
) -> BTreeMap<String, Vec<serde_json::Map<String, serde_json::Value>>> {
    let mut m: BTreeMap<String, Vec<_>> = BTreeMap::new();
    for l in h.salesforce.all("Lead") {
        if let Some(e) = l.get("Email").and_then(|v| v.as_str()) {
            m.entry(e.to_lowercase()).or_default().push(l.clone());
        }
    }
    m
}

/// HubSpot contacts by lower-cased email.
pub fn hs_by_email(h: &Harness) -> BTreeMap<String, Vec<BTreeMap<String, Option<String>>>> {
    let mut m: BTreeMap<String, Vec<_>> = BTreeMap::new();
    for (_, p) in h.hubspot.all() {
        if let Some(Some(e)) = p.get("email") {
            m.entry(e.to_lowercase()).or_default().push(p.clone());
        }
    }
    m
}

/// Wait until `ok` holds, polling every 100 ms; fail the test after `secs` seconds.
pub async fn until(what: &str, secs: u64, mut ok: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !ok() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The demo's Salesforce mapping with a Status value for leads handed back to marketing
/// ("Closed - Not Converted", read and written as the canonical `nurture`), for tests that
/// recycle people. Append to the demo config.
pub const CRM_WITH_NURTURE: &str = r#"[systems.crm.mapping]
fields = { email = "Email", first_name = "FirstName", last_name = "LastName", company = "Company", title = "Title", phone = "Phone", lead_source = "LeadSource", lead_status = "Status", email_opt_out = "HasOptedOutOfEmail" }
lead_status_values = { new = "Open - Not Contacted", working = "Working - Contacted", converted = "Closed - Converted", nurture = "Closed - Not Converted" }"#;
