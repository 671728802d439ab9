//! The real-time path: webhooks into the real daemon, durable before acknowledged.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use leadsync::ingest::webhook::hubspot::sign_v3;
use leadsync::ledger::LedgerReader;
use leadsync::settings::{DEMO_TOML, Settings, Source};

const HS_APP_SECRET: &str = "test-hubspot-app-secret";

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn spawn(config: &Path, env: &HashMap<String, String>, log: &Path) -> Child {
    let log = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("log file");
    Command::new(env!("CARGO_BIN_EXE_leadsync"))
        .args(["serve", "--config"])
        .arg(config)
        .env_clear()
        .envs(env)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("spawn leadsync serve")
}

/// Wait until `check` holds, polling every 100 ms, or fail with `what`.
async fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The daemon is SIGKILLed right after it acknowledged a webhook. The event was committed
/// before the 200 went out, so after a restart it is still processed: the notice is completed
/// and the change reaches Salesforce.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_right_after_a_2xx_the_event_is_still_processed() {
    let people = leadsync::sim::population::generate(40, 5);
    let h = crate::helpers::start_harness(&people).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = dir.path().join("ledger.db");
    let config = dir.path().join("leadsync.toml");
    std::fs::write(&config, DEMO_TOML).expect("config");
    let port = free_port();
    let mut env = h.env(&ledger);
    env.extend(crate::helpers::fast_env());
    env.insert("LEADSYNC__LOG__LEVEL".into(), "info".into());
    env.insert("LEADSYNC__WEBHOOKS__ENABLED".into(), "true".into());
    env.insert("LEADSYNC__WEBHOOKS__LISTEN".into(), format!("127.0.0.1:{port}"));
    env.insert("LEADSYNC__WEBHOOKS__SWEEP_INTERVAL_SECS".into(), "3600".into());
    env.insert(
        "LEADSYNC__SYSTEMS__MARKETING__WEBHOOK__CLIENT_SECRET_ENV".into(),
        "HS_APP_SECRET".into(),
    );
    env.insert("HS_APP_SECRET".into(), HS_APP_SECRET.into());
    let log = dir.path().join("daemon.log");
    let settings = Settings::load(Source::Inline(DEMO_TOML), &env).expect("settings");
    let rules = leadsync::app::rules_for(&settings).expect("rules");

    let mut child = spawn(&config, &env, &log);
    let converged = || {
        let Ok(reader) = LedgerReader::open(&ledger) else { return false };
        let (Ok(snapshot), Ok(status)) = (reader.snapshot(), reader.status()) else { return false };
        let backlog: i64 = status.iter().map(|s| s.inbox_pending + s.outbox_pending).sum();
        backlog == 0
            && snapshot.len() == people.len()
            && leadsync::verify::compare(&snapshot, &rules, &|s, r| h.fetch(s, r)).is_empty()
    };
    wait_for("the initial sync", Duration::from_secs(60), converged).await;

    // A person both systems hold; change their first name in HubSpot, as a user would.
    let reader = LedgerReader::open(&ledger).expect("reader");
    let person = reader
        .snapshot()
        .expect("snapshot")
        .into_iter()
        .find(|p| {
            p.links.iter().any(|(s, _)| s == "crm") && p.links.iter().any(|(s, _)| s == "marketing")
        })
        .expect("someone in both systems");
    let contact =
        person.links.iter().find(|(s, _)| s == "marketing").expect("contact").1.id.clone();
    let lead = person.links.iter().find(|(s, _)| s == "crm").expect("lead").1.clone();
    h.hubspot
        .ui_update(&contact, BTreeMap::from([("firstname".to_string(), "Webhooked".to_string())]))
        .expect("ui update");

    // HubSpot tells the daemon; the moment the 200 arrives, the daemon dies.
    let now = chrono::Utc::now().timestamp_millis();
    let body = format!(
        r#"[{{"eventId":90001,"subscriptionId":1,"portalId":62515,"appId":7,"occurredAt":{now},"subscriptionType":"contact.propertyChange","attemptNumber":0,"objectId":{contact},"changeSource":"CRM_UI","propertyName":"firstname","propertyValue":"Webhooked"}}]"#
    );
    let url = format!("http://127.0.0.1:{port}/webhooks/marketing");
    let ts = now.to_string();
    let resp = reqwest::Client::new()
        .post(&url)
        .header("content-type", "application/json")
        .header(
            "x-hubspot-signature-v3",
            sign_v3(HS_APP_SECRET, "POST", &url, body.as_bytes(), &ts),
        )
        .header("x-hubspot-request-timestamp", &ts)
        .body(body)
        .send()
        .await
        .expect("webhook delivered");
    assert_eq!(resp.status(), reqwest::StatusCode::OK);
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");

    let marketing = |r: &LedgerReader| {
        r.status()
            .expect("status")
            .into_iter()
            .find(|s| s.system == "marketing")
            .expect("marketing")
    };
    let after_kill = marketing(&LedgerReader::open(&ledger).expect("reader"));
    assert_eq!(after_kill.notices_received, 1, "acknowledged means stored");

    let mut child = spawn(&config, &env, &log);
    wait_for("the change to reach Salesforce", Duration::from_secs(30), || {
        let first = h
            .salesforce
            .get("Lead", &lead.id)
            .and_then(|l| l.get("FirstName").and_then(|v| v.as_str()).map(str::to_string));
        first.as_deref() == Some("Webhooked")
    })
    .await;
    wait_for("the notice to be processed", Duration::from_secs(30), || {
        let r = LedgerReader::open(&ledger).expect("reader");
        let s = marketing(&r);
        s.notices_received == 1 && s.notices_pending == 0
    })
    .await;

    let pid = child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success());
    assert_eq!(child.wait().expect("wait").code(), Some(0), "graceful shutdown exits 0");
    let logs = std::fs::read_to_string(&log).expect("logs");
    assert!(logs.contains("webhook listener up"), "{logs}");
    assert!(!logs.contains("Webhooked"), "a field value reached the logs");
}

/// With polling out of the way (the safety-net sweep set to an hour), a change made in one
/// simulator reaches the other through the webhook path alone, both ways: HubSpot → signed
/// events → fetch → Salesforce, and Salesforce → outbound message (carrying the record) →
/// HubSpot. No poll runs meanwhile, and Salesforce is not even read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_crosses_over_through_webhooks_alone() {
    use leadsync::sim::harness::wait_quiet;

    let people = leadsync::sim::population::generate(60, 9);
    let h = crate::helpers::start_harness(&people).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut env = crate::helpers::fast_env();
    env.extend(h.webhook_env(3600));
    let settings = h
        .settings(Source::Inline(DEMO_TOML), &dir.path().join("ledger.db"), &env)
        .expect("settings");
    let app = std::sync::Arc::new(leadsync::app::App::build(&settings).expect("app"));
    let addr = app.bind_webhooks().await.expect("bind").expect("webhooks configured");
    let (trigger, shutdown) = leadsync::shutdown::channel();
    let a = std::sync::Arc::clone(&app);
    let engine = tokio::spawn(async move { a.run_until_stopped(shutdown).await });
    assert!(wait_quiet(&app, Duration::from_secs(60)).await, "initial sync");
    h.point_webhooks_at(addr);

    let person = app
        .ledger()
        .snapshot()
        .expect("snapshot")
        .into_iter()
        .find(|p| {
            p.links.iter().any(|(s, _)| s == "crm") && p.links.iter().any(|(s, _)| s == "marketing")
        })
        .expect("someone in both systems");
    let contact =
        person.links.iter().find(|(s, _)| s == "marketing").expect("contact").1.id.clone();
    let lead = person.links.iter().find(|(s, _)| s == "crm").expect("lead").1.id.clone();
    let hs_before = h.hubspot.stats();
    let sf_before = h.salesforce.stats();

    h.hubspot
        .ui_update(&contact, BTreeMap::from([("firstname".to_string(), "Realtime".to_string())]))
        .expect("hubspot update");
    wait_for("HubSpot's change in Salesforce", Duration::from_secs(15), || {
        h.salesforce.get("Lead", &lead).and_then(|l| l.get("FirstName").cloned())
            == Some(serde_json::Value::String("Realtime".into()))
    })
    .await;

    let mut title = serde_json::Map::new();
    title.insert("Title".into(), "Chief Webhook Officer".into());
    h.salesforce.ui_update("Lead", &lead, title).expect("salesforce update");
    wait_for("Salesforce's change in HubSpot", Duration::from_secs(15), || {
        h.hubspot.get(&contact).and_then(|c| c.get("jobtitle").cloned().flatten()).as_deref()
            == Some("Chief Webhook Officer")
    })
    .await;

    let hs_after = h.hubspot.stats();
    let sf_after = h.salesforce.stats();
    assert_eq!(hs_after.search_calls, hs_before.search_calls, "HubSpot was not polled");
    assert_eq!(sf_after.api_reads, sf_before.api_reads, "Salesforce was neither polled nor read");
    assert!(hs_after.webhook_requests_succeeded > hs_before.webhook_requests_succeeded);
    assert!(sf_after.outbound_requests_succeeded > sf_before.outbound_requests_succeeded);
    let stats = app.webhook_stats().expect("listener ran");
    assert_eq!(stats.rejected_total(), 0, "every delivery verified");

    trigger.trigger();
    engine.await.expect("engine task").expect("engine stops cleanly");
}
