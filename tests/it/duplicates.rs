//! Several records of one person in one system: reported by `leadsync duplicates`, merged at
//! HubSpot when `identity.merge_at_vendor` says so (once, the merge flowing back through
//! ingest); and a HubSpot GDPR delete that closes the link for good.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use leadsync::app::App;
use leadsync::settings::{DEMO_TOML, Source};
use leadsync::shutdown::{self, Trigger};
use leadsync::sim::harness::{Harness, wait_converged, wait_quiet};
use leadsync::sim::hubspot::HubspotSimOptions;
use leadsync::sim::salesforce::SalesforceSimOptions;

use crate::helpers::{fast_env, start_harness_with};

type Engine = (Arc<App>, Trigger, tokio::task::JoinHandle<anyhow::Result<()>>);

async fn engine(h: &Harness, toml: &str, ledger: &Path, env: &HashMap<String, String>) -> Engine {
    let settings = h.settings(Source::Inline(toml), ledger, env).expect("settings");
    let app = Arc::new(App::build(&settings).expect("app builds"));
    if let Some(addr) = app.bind_webhooks().await.expect("bind") {
        h.point_webhooks_at(addr);
    }
    let (trigger, shutdown) = shutdown::channel();
    let a = Arc::clone(&app);
    let task = tokio::spawn(async move { a.run_until_stopped(shutdown).await });
    (app, trigger, task)
}

async fn stop((_, trigger, task): Engine) {
    trigger.trigger();
    task.await.expect("engine task").expect("engine stops cleanly");
}

async fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn jane(email: &str) -> BTreeMap<String, String> {
    [
        ("email", email),
        ("firstname", "Jane"),
        ("lastname", "Doe"),
        ("phone", "+1 415 555 0100"),
        ("company", "Acme"),
        ("lifecyclestage", "lead"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn open_marketing_links(app: &App) -> Vec<String> {
    app.ledger()
        .snapshot()
        .expect("snapshot")
        .into_iter()
        .flat_map(|p| p.links)
        .filter(|(s, _)| s == "marketing")
        .map(|(_, r)| r.id)
        .collect()
}

/// `leadsync duplicates --json` through the real binary.
fn duplicates_cli(dir: &Path, toml: &str, env: &HashMap<String, String>) -> serde_json::Value {
    let config = dir.join("leadsync.toml");
    std::fs::write(&config, toml).expect("config");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_leadsync"))
        .args(["duplicates", "--json", "--config"])
        .arg(&config)
        .env_clear()
        .envs(env)
        .output()
        .expect("run leadsync duplicates");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("json")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hubspot_contacts_of_one_person_are_reported_then_merged_at_hubspot_once() {
    let h = start_harness_with(&[], SalesforceSimOptions::default(), HubspotSimOptions::default())
        .await;
    let first = h.hubspot.insert(jane("jane.doe@acme.test")).expect("insert");
    let second = h.hubspot.insert(jane("jane.doe@home.test")).expect("insert");
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = dir.path().join("ledger.db");
    let mut env = h.env(&ledger);
    env.extend(fast_env());

    // Merging off (the default): linked to one person, reported, nothing merged.
    let e = engine(&h, DEMO_TOML, &ledger, &env).await;
    assert!(wait_converged(&e.0, Duration::from_secs(60)).await, "first sync");
    let mut links = open_marketing_links(&e.0);
    links.sort();
    let mut both = vec![first.clone(), second.clone()];
    both.sort();
    assert_eq!(links, both, "both contacts linked");
    let groups = e.0.ledger().duplicates(None).expect("report");
    assert_eq!(groups.len(), 1, "{groups:#?}");
    let primary = groups[0].primary.remote_id.clone();
    let loser = groups[0].others[0].remote_id.clone();
    assert!(groups[0].others[0].reason.starts_with("matched_rule:"), "{groups:#?}");
    stop(e).await;
    let report = duplicates_cli(dir.path(), DEMO_TOML, &env);
    assert_eq!(report["merge_at_vendor"], serde_json::json!([]));
    let g = &report["duplicates"][0];
    assert_eq!(g["system"], "marketing");
    assert_eq!(g["primary"]["remote_id"], primary.as_str());
    let other = &g["others"][0];
    assert_eq!(other["remote_id"], loser.as_str());
    // A fuzzy rule linked it: merged at the vendor only with `merge_fuzzy_links`.
    assert_eq!(other["plan"]["action"], "not_merged_fuzzy", "{report:#}");
    assert!(other["score"].as_f64().is_some_and(|s| s >= 0.92), "{report:#}");
    assert_eq!(h.hubspot.all().len(), 2, "nothing merged while the option is off");

    // Merging on: the other contact is merged into the primary at HubSpot; the merge comes
    // back through the poll and closes its link.
    let toml = format!(
        "{DEMO_TOML}\n[identity]\nmerge_at_vendor = [\"marketing\"]\nmerge_every_secs = 1\n\
         merge_fuzzy_links = true\n"
    );
    assert_eq!(
        duplicates_cli(dir.path(), &toml, &env)["duplicates"][0]["others"][0]["plan"]["action"],
        "will_merge"
    );
    let e = engine(&h, &toml, &ledger, &env).await;
    wait_for("the merge to reach HubSpot and come back", Duration::from_secs(60), || {
        h.hubspot.all().len() == 1 && open_marketing_links(&e.0) == [primary.clone()]
    })
    .await;
    assert!(wait_converged(&e.0, Duration::from_secs(60)).await, "quiet after the merge");
    let left = h.hubspot.all();
    assert_eq!(left[0].0, primary, "the primary survives");
    assert!(e.0.ledger().duplicates(None).expect("report").is_empty());
    let merges = e.0.ledger().vendor_merges().expect("merges");
    assert_eq!(merges.len(), 1);
    assert_eq!((merges[0].state.as_str(), merges[0].attempts), ("done", 1));
    assert_eq!(
        (merges[0].primary_id.as_str(), merges[0].loser_id.as_str()),
        (primary.as_str(), loser.as_str())
    );
    // Several more merge rounds: nothing is asked again.
    let writes = h.hubspot.stats().api_writes;
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert_eq!(e.0.ledger().vendor_merges().expect("merges"), merges, "no merge retried");
    assert_eq!(h.hubspot.stats().api_writes, writes, "no write at all once quiet");
    let trace = leadsync::ledger::LedgerReader::open(&ledger)
        .expect("reader")
        .trace(&format!("marketing:{primary}"))
        .expect("trace")
        .expect("person");
    assert!(trace.events.iter().any(|ev| ev.kind == "vendor_merge"), "the merge is in the trace");
    assert!(
        trace
            .links
            .iter()
            .any(|l| l.remote_id == loser && l.closed_reason.as_deref() == Some("merged")),
        "{:#?}",
        trace.links
    );
    stop(e).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hubspot_gdpr_delete_closes_the_link_for_good() {
    let h = start_harness_with(&[], SalesforceSimOptions::default(), HubspotSimOptions::default())
        .await;
    let mut props = jane("erase.me@acme.test");
    props.insert("lifecyclestage".into(), "marketingqualifiedlead".into());
    let id = h.hubspot.insert(props).expect("insert");
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = dir.path().join("ledger.db");
    let mut env = h.env(&ledger);
    env.extend(fast_env());
    // Webhooks only (the safety-net poll is an hour away): an erased contact is in no search
    // and no archive, so only HubSpot's privacyDeletion event can tell.
    env.extend(h.webhook_env(3600));
    let e = engine(&h, DEMO_TOML, &ledger, &env).await;
    wait_for("the person in both systems", Duration::from_secs(60), || {
        let snap = e.0.ledger().snapshot().expect("snapshot");
        snap.len() == 1 && snap[0].links.len() == 2
    })
    .await;
    assert!(wait_quiet(&e.0, Duration::from_secs(30)).await, "quiet after the first sync");
    let lead_id = h.salesforce.all("Lead")[0]["Id"].as_str().expect("lead id").to_string();

    assert!(h.hubspot.gdpr_delete(&id));
    wait_for("the link to close", Duration::from_secs(30), || {
        open_marketing_links(&e.0).is_empty()
    })
    .await;
    // The person changes in Salesforce: HubSpot is not given the erased person back.
    let mut edit = serde_json::Map::new();
    edit.insert("Title".into(), serde_json::json!("VP Erasure"));
    h.salesforce.ui_update("Lead", &lead_id, edit).expect("edit the lead");
    wait_for("the edit in the ledger", Duration::from_secs(30), || {
        let snap = e.0.ledger().snapshot().expect("snapshot");
        snap[0].fields.get(&leadsync::domain::Field::Title).map(String::as_str)
            == Some("VP Erasure")
    })
    .await;
    assert!(wait_quiet(&e.0, Duration::from_secs(30)).await, "quiet after the edit");
    assert_eq!(e.0.ledger().snapshot().expect("snapshot").len(), 1);
    assert!(open_marketing_links(&e.0).is_empty());
    assert!(h.hubspot.all().is_empty(), "not recreated");
    assert_eq!(h.hubspot.stats().records_created, 0);
    let trace = leadsync::ledger::LedgerReader::open(&ledger)
        .expect("reader")
        .trace(&format!("marketing:{id}"))
        .expect("trace")
        .expect("person");
    let link = trace.links.iter().find(|l| l.remote_id == id).expect("the link");
    assert_eq!(link.closed_reason.as_deref(), Some("deleted"));
    stop(e).await;
}

/// `identity.review_holds_creates = true`: a person in an open duplicate review is not created
/// where the other person has a record (it could be their second record there); rejecting the
/// reviews sends those creates out, and nobody is created twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_holds_keep_possible_duplicates_uncreated_until_a_reviewer_rejects() {
    use leadsync::ledger::ReviewVerdict;
    let people = leadsync::sim::population::generate(1000, 11);
    let h =
        start_harness_with(&people, SalesforceSimOptions::default(), HubspotSimOptions::default())
            .await;
    let dir = tempfile::tempdir().expect("tempdir");
    let toml = format!("{DEMO_TOML}\n[identity]\nreview_holds_creates = true\n");
    let e = engine(&h, &toml, &dir.path().join("ledger.db"), &fast_env()).await;
    let app = Arc::clone(&e.0);
    assert!(wait_converged(&app, Duration::from_secs(60)).await, "converged");

    let ledger = app.ledger();
    let open_dups: Vec<_> = ledger
        .open_reviews()
        .expect("reviews")
        .into_iter()
        .filter(|r| r.kind == "duplicate")
        .collect();
    assert!(!open_dups.is_empty(), "this population has namesakes in the review band");
    let snapshot = ledger.snapshot().expect("snapshot");
    // Held creates: a held person without a record in the system the hold names.
    let waiting: Vec<_> = snapshot
        .iter()
        .filter(|p| p.review_held.iter().any(|sys| p.links.iter().all(|(s, _)| s != sys)))
        .collect();
    assert!(!waiting.is_empty(), "some review holds a create");
    let hs = crate::helpers::hs_by_email(&h);
    let missing_in_hs = people.iter().filter(|p| !hs.contains_key(&p.email.to_lowercase())).count();
    let waiting_in_hs = waiting
        .iter()
        .filter(|p| {
            p.review_held.contains("marketing") && p.links.iter().all(|(s, _)| s != "marketing")
        })
        .count();
    assert_eq!(missing_in_hs, waiting_in_hs, "only held persons are missing in HubSpot");
    assert!(hs.values().all(|v| v.len() == 1), "nobody is in HubSpot twice");
    // `leadsync status` tells the operator how many wait, per system.
    let config = dir.path().join("leadsync.toml");
    std::fs::write(&config, &toml).expect("config");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_leadsync"))
        .args(["status", "--json", "--config"])
        .arg(&config)
        .env_clear()
        .envs(h.env(&dir.path().join("ledger.db")))
        .output()
        .expect("run leadsync status");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(
        status["creates_held_for_review"]["marketing"].as_u64(),
        Some(waiting_in_hs as u64),
        "{status}"
    );
    assert_eq!(status["open_reviews"]["duplicate"].as_u64(), Some(open_dups.len() as u64));
    let bad = leadsync::verify::compare(&snapshot, &app.rules(), &|s, r| h.fetch(s, r));
    assert!(bad.is_empty(), "{} disagreements, first: {}", bad.len(), bad[0]);

    // Different people after all: their creates go out, once.
    for r in &open_dups {
        ledger
            .decide_review(r.id, ReviewVerdict::Reject, &app.rules(), chrono::Utc::now())
            .expect("reject");
    }
    assert!(wait_converged(&app, Duration::from_secs(60)).await, "converged after the rejects");
    let snapshot = ledger.snapshot().expect("snapshot");
    assert!(snapshot.iter().all(|p| p.review_held.is_empty()));
    let hs = crate::helpers::hs_by_email(&h);
    for p in &people {
        let e = p.email.to_lowercase();
        assert_eq!(hs.get(&e).map_or(0, Vec::len), 1, "everyone is in marketing exactly once");
    }
    let bad = leadsync::verify::compare(&snapshot, &app.rules(), &|s, r| h.fetch(s, r));
    assert!(bad.is_empty(), "{} disagreements, first: {}", bad.len(), bad[0]);
    stop(e).await;
}
