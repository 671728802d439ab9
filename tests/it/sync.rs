//! End-to-end sync through both simulators' HTTP APIs.

use std::time::Duration;

use leadsync::domain::Field;
use leadsync::sim::population::Presence;

use crate::helpers::{hs_by_email, sf_by_email, spawn_app};

const MQL_OR_LATER: &[&str] =
    &["marketingqualifiedlead", "salesqualifiedlead", "opportunity", "customer"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn initial_sync_puts_everyone_where_the_rules_say_exactly_once() {
    // A slow Salesforce: HubSpot is read and reconciled long before Salesforce's leads are,
    // so a create planned for someone Salesforce already has must wait for those reads.
    let slow = leadsync::sim::salesforce::SalesforceSimOptions {
        latency: Duration::from_millis(400),
        ..Default::default()
    };
    let t = crate::helpers::spawn_app_with(1000, 11, slow).await;
    t.converge().await;
    let bad = t.disagreements();
    assert!(bad.is_empty(), "{} disagreements, first: {}", bad.len(), bad[0]);

    let snapshot = t.snapshot();
    assert_eq!(snapshot.len(), t.people.len(), "one ledger person per human");
    let sf = sf_by_email(&t.harness);
    let hs = hs_by_email(&t.harness);
    for p in &t.people {
        let e = p.email.to_lowercase();
        assert_eq!(hs.get(&e).map_or(0, Vec::len), 1, "everyone is in marketing exactly once");
        let expected_sf = match p.presence {
            Presence::MarketingOnly => usize::from(MQL_OR_LATER.contains(&p.hs_stage)),
            _ => 1 + usize::from(p.sf_duplicate),
        };
        assert_eq!(sf.get(&e).map_or(0, Vec::len), expected_sf, "salesforce count for {e}");
    }

    // leadsync created records only for people the system did not have.
    let totals = t.app.ledger().totals().expect("totals");
    let expected_crm_creates = t
        .people
        .iter()
        .filter(|p| p.presence == Presence::MarketingOnly && MQL_OR_LATER.contains(&p.hs_stage))
        .count() as i64;
    let expected_mkt_creates =
        t.people.iter().filter(|p| p.presence == Presence::CrmOnly).count() as i64;
    assert_eq!(totals.created_by_system.get("crm").copied().unwrap_or(0), expected_crm_creates);
    assert_eq!(
        totals.created_by_system.get("marketing").copied().unwrap_or(0),
        expected_mkt_creates
    );

    // Duplicates inside Salesforce (same email, different case) are one person with two links.
    let dup = t.people.iter().find(|p| p.sf_duplicate).expect("seed has a duplicate");
    let person = snapshot
        .iter()
        .find(|l| l.fields.get(&Field::Email).is_some_and(|e| e.eq_ignore_ascii_case(&dup.email)))
        .expect("duplicate person in ledger");
    assert_eq!(person.links.iter().filter(|(s, _)| s == "crm").count(), 2);

    // The unified stage is mapped on both sides: sales working a lead makes it an SQL in
    // HubSpot, with the lead status carried over.
    let working = t
        .people
        .iter()
        .find(|p| {
            p.presence == Presence::Both
                && p.sf_status == "Working - Contacted"
                && ["subscriber", "lead", "marketingqualifiedlead"].contains(&p.hs_stage)
        })
        .expect("seed has a worked lead");
    let contact = &hs[&working.email.to_lowercase()][0];
    assert_eq!(contact["lifecyclestage"].as_deref(), Some("salesqualifiedlead"));
    assert_eq!(contact["hs_lead_status"].as_deref(), Some("IN_PROGRESS"));
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_cycle_over_unchanged_data_makes_zero_writes() {
    let t = spawn_app(150, 5).await;
    t.converge().await;
    let sf0 = t.harness.salesforce.stats().api_writes;
    let hs0 = t.harness.hubspot.stats().api_writes;
    let polls0 = t.harness.salesforce.stats().api_reads;
    // Several more poll cycles (1 s interval in tests) over unchanged data.
    tokio::time::sleep(Duration::from_millis(3500)).await;
    assert!(t.harness.salesforce.stats().api_reads > polls0, "it kept polling");
    assert_eq!(t.harness.salesforce.stats().api_writes, sf0, "no writes to salesforce");
    assert_eq!(t.harness.hubspot.stats().api_writes, hs0, "no writes to hubspot");
    t.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opt_outs_cross_over_both_ways() {
    let t = spawn_app(200, 3).await;
    t.converge().await;
    let mut both =
        t.people.iter().filter(|p| p.presence == Presence::Both && !p.hs_opt_out && !p.sf_opt_out);
    let a = both.next().expect("person a");
    let b = both.next().expect("person b");

    // a unsubscribes from a HubSpot email; b is opted out by sales in Salesforce.
    t.harness.hubspot.ui_unsubscribe(&a.email);
    let b_id =
        sf_by_email(&t.harness)[&b.email.to_lowercase()][0]["Id"].as_str().expect("id").to_string();
    let mut m = serde_json::Map::new();
    m.insert("HasOptedOutOfEmail".into(), serde_json::Value::Bool(true));
    t.harness.salesforce.ui_update("Lead", &b_id, m).expect("ui update");
    t.converge().await;

    for lead in &sf_by_email(&t.harness)[&a.email.to_lowercase()] {
        assert_eq!(lead["HasOptedOutOfEmail"], serde_json::Value::Bool(true));
    }
    let hs = hs_by_email(&t.harness);
    assert_eq!(hs[&b.email.to_lowercase()][0]["hs_email_optout"].as_deref(), Some("true"));
    assert!(t.disagreements().is_empty());
    t.stop().await;
}

/// The real binary, SIGKILLed in the middle of its first sync and started again on the same
/// ledger, loses nothing and creates no record twice; then SIGTERM stops it cleanly (exit 0).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_sync_and_restarted_loses_nothing_and_duplicates_nothing() {
    use leadsync::ledger::LedgerReader;
    use leadsync::settings::{DEMO_TOML, Settings, Source};
    use std::process::{Command, Stdio};

    let people = leadsync::sim::population::generate(1500, 21);
    let h = crate::helpers::start_harness(&people).await;
    let sf_seeded = h.salesforce.all("Lead").len();
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = dir.path().join("ledger.db");
    let config = dir.path().join("leadsync.toml");
    std::fs::write(&config, DEMO_TOML).expect("config");
    let mut env = h.env(&ledger);
    env.extend(crate::helpers::fast_env());
    env.insert("LEADSYNC__LOG__FORMAT".into(), "json".into());
    env.insert("LEADSYNC__LOG__LEVEL".into(), "info".into());
    let log_path = dir.path().join("daemon.log");
    let spawn = || {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("log file");
        Command::new(env!("CARGO_BIN_EXE_leadsync"))
            .args(["serve", "--config"])
            .arg(&config)
            .env_clear()
            .envs(&env)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn leadsync serve")
    };

    // Kill it once writes have started but before it is done. On a loaded machine (a debug
    // binary starting next to other test processes) the first write can take a while: the
    // wait is for the condition, with a deadline generous enough for that, and fails early if
    // the daemon dies instead.
    let mut child = spawn();
    let deadline = std::time::Instant::now() + Duration::from_secs(180);
    loop {
        let created = h.salesforce.stats().records_created + h.hubspot.stats().records_created;
        if created > 0 {
            break;
        }
        if let Some(status) = child.try_wait().expect("try_wait") {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            panic!("the daemon exited ({status}) before writing anything; its log:\n{log}");
        }
        assert!(std::time::Instant::now() < deadline, "no writes within 180 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    child.kill().expect("SIGKILL");
    child.wait().expect("reap");
    let hs_after_kill = h.hubspot.all().len();
    assert!(hs_after_kill < people.len(), "killed before the sync finished");

    // Restart on the same ledger and wait until the vendors agree with it.
    let mut child = spawn();
    let settings = Settings::load(Source::Inline(DEMO_TOML), &env).expect("settings");
    let rules = leadsync::app::rules_for(&settings).expect("rules");
    let deadline = std::time::Instant::now() + Duration::from_secs(240);
    let mut agreeing = 0;
    loop {
        let reader = LedgerReader::open(&ledger).expect("reader");
        let snapshot = reader.snapshot().expect("snapshot");
        let backlog: i64 = reader
            .status()
            .expect("status")
            .iter()
            .map(|s| s.inbox_pending + s.outbox_pending)
            .sum();
        let bad = leadsync::verify::compare(&snapshot, &rules, &|s, r| h.fetch(s, r));
        if bad.is_empty() && backlog == 0 && snapshot.len() == people.len() {
            agreeing += 1;
            if agreeing >= 3 {
                break;
            }
        } else {
            agreeing = 0;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no agreement after restart: {} left",
            bad.len()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }

    // SIGTERM: graceful stop, exit 0.
    let pid = child.id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().expect("kill -TERM");
    assert!(status.success());
    let code = child.wait().expect("wait");
    assert_eq!(code.code(), Some(0), "graceful shutdown exits 0");

    // Nobody was created twice: one HubSpot contact per person, one Salesforce lead per ledger id.
    let hs = crate::helpers::hs_by_email(&h);
    assert_eq!(hs.len(), people.len());
    assert!(hs.values().all(|v| v.len() == 1));
    let mut keys = std::collections::HashMap::new();
    for lead in h.salesforce.all("Lead") {
        if let Some(k) = lead.get("Leadsync_Id__c").and_then(|v| v.as_str()) {
            *keys.entry(k.to_string()).or_insert(0) += 1;
        }
    }
    assert!(keys.values().all(|n| *n == 1), "a Salesforce lead was created twice");
    assert_eq!(h.salesforce.all("Lead").len(), sf_seeded + keys.len());

    // `leadsync status` reads the same ledger and reports each system.
    let out = Command::new(env!("CARGO_BIN_EXE_leadsync"))
        .args(["status", "--config"])
        .arg(&config)
        .env_clear()
        .envs(&env)
        .output()
        .expect("status");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("crm (salesforce, crm)") && text.contains("marketing (hubspot, marketing)"),
        "{text}"
    );
    assert!(text.contains("outbox pending:   0") && text.contains("dead records:     0"), "{text}");

    // The daemon's info-level logs carry ids, never a person's email, name or phone.
    let logs = std::fs::read_to_string(&log_path).expect("logs");
    assert!(logs.contains("leadsync started"), "info logs were captured");
    for p in &people {
        assert!(
            !logs.to_lowercase().contains(&p.email.to_lowercase()),
            "an email reached the logs"
        );
        assert!(!logs.contains(&p.phone), "a phone number reached the logs");
        assert!(!logs.contains(&format!("\"{}\"", p.last)), "a name reached the logs");
    }
}

/// A vendor answer of 200 with one failed record dead-letters that record only, with the
/// vendor's code, and everything else still goes through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_record_is_dead_lettered_alone() {
    use leadsync::sim::salesforce::Fault;

    let people = leadsync::sim::population::generate(300, 17);
    let victim = people
        .iter()
        .find(|p| {
            p.presence == Presence::MarketingOnly
                && ["marketingqualifiedlead", "salesqualifiedlead"].contains(&p.hs_stage)
        })
        .expect("a marketing-only MQL that will be created in Salesforce")
        .email
        .to_lowercase();
    let harness = crate::helpers::start_harness(&people).await;
    let v = victim.clone();
    harness.salesforce.inject(Fault::RecordError {
        object: "Lead".into(),
        matches: std::sync::Arc::new(move |r| {
            r.get("Email").and_then(|e| e.as_str()).is_some_and(|e| e.eq_ignore_ascii_case(&v))
        }),
        status_code: "FIELD_CUSTOM_VALIDATION_EXCEPTION".into(),
        message: "Region is required for qualified leads".into(),
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let (app, trigger, engine) = crate::helpers::start_engine(&harness, &dir).await;
    assert!(leadsync::sim::harness::wait_converged(&app, Duration::from_secs(60)).await);
    let totals = app.ledger().totals().expect("totals");
    assert_eq!(totals.dead_by_system.get("crm"), Some(&1), "exactly one dead letter");
    let sf = sf_by_email(&harness);
    assert!(!sf.contains_key(&victim), "the rejected lead was not created");
    let bad = leadsync::verify::compare(
        &app.ledger().snapshot().expect("snap"),
        &app.rules(),
        &|s, r| harness.fetch(s, r),
    );
    assert_eq!(bad.len(), 1, "only the dead-lettered person is missing: {bad:?}");
    assert_eq!(bad[0].problem, "person missing in this system");
    trigger.trigger();
    engine.await.expect("join").expect("clean stop");
}
