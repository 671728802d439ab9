//! `leadsync demo`: a simulated Salesforce and HubSpot with an overlapping population, the
//! real sync engine against their HTTP APIs with a real ledger file, a few live changes while
//! it runs, and a summary that says whether both systems now agree with the ledger.

use std::collections::{BTreeMap, HashMap};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::time::Instant;

use super::exit;
use crate::app::{App, count};
use crate::domain::SystemName;
use crate::settings::{DEMO_TOML, Source};
use crate::sim::harness::{Harness, wait_converged, wait_quiet};
use crate::sim::hubspot::HubspotSimOptions;
use crate::sim::population;
use crate::sim::salesforce::SalesforceSimOptions;
use crate::{shutdown, telemetry, verify};

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// How many people to generate.
    #[arg(long, default_value_t = 2000)]
    pub leads: usize,
    /// Keep running for this many seconds, making random live changes, then converge.
    #[arg(long, conflicts_with = "until_converged")]
    pub duration: Option<u64>,
    /// Stop as soon as both systems agree with the ledger after the live changes (default).
    #[arg(long)]
    pub until_converged: bool,
    /// Give up waiting for convergence after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub timeout: u64,
    /// Seed of the generated population and the live changes.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Ledger file (default: a fresh file in a new temporary directory, kept afterwards).
    #[arg(long)]
    pub ledger: Option<PathBuf>,
    /// A config file to use instead of the embedded demo config.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Poll only: no webhook listener, the simulators send no webhooks.
    #[arg(long)]
    pub polling_only: bool,
    /// Changes per second in the closing latency sample (HubSpot → Salesforce); 0 skips it.
    #[arg(long, default_value_t = 20)]
    pub latency_rate: u64,
    /// Seconds of the closing latency sample.
    #[arg(long, default_value_t = 5)]
    pub latency_secs: u64,
}

struct Ui {
    bar: Option<ProgressBar>,
    last_line: Instant,
}

impl Ui {
    fn new() -> Ui {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = ProgressBar::new_spinner();
            b.set_style(
                ProgressStyle::with_template("{spinner} [{elapsed_precise}] {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            b.enable_steady_tick(Duration::from_millis(120));
            b
        });
        Ui { bar, last_line: Instant::now() }
    }

    /// On a terminal a live line; otherwise a plain line every few seconds (logs, CI).
    fn status(&mut self, msg: String) {
        match &self.bar {
            Some(b) => b.set_message(msg),
            None => {
                if self.last_line.elapsed() >= Duration::from_secs(5) {
                    eprintln!("  {msg}");
                    self.last_line = Instant::now();
                }
            }
        }
    }

    fn say(&self, msg: &str) {
        match &self.bar {
            Some(b) => b.println(msg),
            None => eprintln!("{msg}"),
        }
    }

    fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

fn progress_line(app: &App, phase: &str) -> String {
    let p = app.progress();
    let crm = SystemName("crm".into());
    let mkt = SystemName("marketing".into());
    format!(
        "{phase}: read {} + {} records, reconciled {}, created {} + {}, updated {} + {}",
        count(&p.polled, &crm),
        count(&p.polled, &mkt),
        p.reconciled.load(std::sync::atomic::Ordering::Relaxed),
        count(&p.pushed_created, &crm),
        count(&p.pushed_created, &mkt),
        count(&p.pushed_updated, &crm),
        count(&p.pushed_updated, &mkt),
    )
}

/// Wait until the engine is done: for a polling engine, every system read through after the
/// last push; for a webhook-fed one (whose polls are rare), nothing pending anywhere.
async fn converge(app: &App, ui: &mut Ui, phase: &str, timeout: Duration, webhooks: bool) -> bool {
    let wait = async {
        if webhooks { wait_quiet(app, timeout).await } else { wait_converged(app, timeout).await }
    };
    tokio::pin!(wait);
    loop {
        ui.status(progress_line(app, phase));
        tokio::select! {
            done = &mut wait => {
                ui.status(progress_line(app, phase));
                return done;
            }
            () = tokio::time::sleep(Duration::from_millis(250)) => {}
        }
    }
}

/// The live changes a demo makes, and how to tell they crossed over.
struct LiveChange {
    what: &'static str,
    check: Box<dyn Fn(&Harness) -> bool + Send>,
}

fn live_changes(h: &Harness, rng: &mut StdRng) -> Vec<LiveChange> {
    let mut out = Vec::new();
    let contacts = h.hubspot.all();
    let leads = h.salesforce.all("Lead");
    let sf_emails: std::collections::HashSet<String> = leads
        .iter()
        .filter_map(|l| l.get("Email").and_then(|v| v.as_str()).map(str::to_lowercase))
        .collect();

    // 1. Marketing qualifies a contact the CRM has never seen: it must be handed to sales.
    let candidates: Vec<_> = contacts
        .iter()
        .filter(|(_, p)| {
            p.get("lifecyclestage").cloned().flatten().as_deref() == Some("lead")
                && p.get("email")
                    .cloned()
                    .flatten()
                    .is_some_and(|e| !sf_emails.contains(&e.to_lowercase()))
        })
        .collect();
    if !candidates.is_empty() {
        let (id, props) = candidates[rng.random_range(0..candidates.len())];
        let email = props.get("email").cloned().flatten().unwrap_or_default().to_lowercase();
        let mut p = BTreeMap::new();
        p.insert("lifecyclestage".to_string(), "marketingqualifiedlead".to_string());
        if h.hubspot.ui_update(id, p).is_ok() {
            out.push(LiveChange {
                what: "a HubSpot contact became an MQL and was handed to Salesforce",
                check: Box::new(move |h| {
                    h.salesforce.all("Lead").iter().any(|l| {
                        l.get("Email").and_then(|v| v.as_str()).map(str::to_lowercase).as_deref()
                            == Some(email.as_str())
                    })
                }),
            });
        }
    }

    // 2. Sales starts working a lead that marketing also has.
    let hs_emails: std::collections::HashSet<String> = contacts
        .iter()
        .filter_map(|(_, p)| p.get("email").cloned().flatten().map(|e| e.to_lowercase()))
        .collect();
    let working: Vec<_> = leads
        .iter()
        .filter(|l| {
            l.get("Status").and_then(|v| v.as_str()) == Some("Open - Not Contacted")
                && l.get("Email")
                    .and_then(|v| v.as_str())
                    .is_some_and(|e| hs_emails.contains(&e.to_lowercase()))
        })
        .collect();
    if !working.is_empty() {
        let lead = working[rng.random_range(0..working.len())];
        let id = lead.get("Id").and_then(|v| v.as_str()).unwrap_or_default().to_string();
        let email = lead.get("Email").and_then(|v| v.as_str()).unwrap_or_default().to_lowercase();
        let mut m = serde_json::Map::new();
        m.insert("Status".into(), serde_json::Value::String("Working - Contacted".into()));
        if h.salesforce.ui_update("Lead", &id, m).is_ok() {
            out.push(LiveChange {
                what: "sales moved a Salesforce lead to \"Working - Contacted\"; HubSpot shows SQL, in progress",
                check: Box::new(move |h| {
                    h.hubspot.all().iter().any(|(_, p)| {
                        p.get("email").cloned().flatten().map(|e| e.to_lowercase()).as_deref()
                            == Some(email.as_str())
                            && p.get("hs_lead_status").cloned().flatten().as_deref() == Some("IN_PROGRESS")
                            && p.get("lifecyclestage").cloned().flatten().as_deref()
                                == Some("salesqualifiedlead")
                    })
                }),
            });
        }
    }

    // 3. Someone in both systems unsubscribes from a HubSpot email.
    let both: Vec<_> = leads
        .iter()
        .filter(|l| {
            l.get("HasOptedOutOfEmail").and_then(serde_json::Value::as_bool) == Some(false)
                && l.get("Email")
                    .and_then(|v| v.as_str())
                    .is_some_and(|e| hs_emails.contains(&e.to_lowercase()))
        })
        .collect();
    if !both.is_empty() {
        let lead = both[rng.random_range(0..both.len())];
        let email = lead.get("Email").and_then(|v| v.as_str()).unwrap_or_default().to_lowercase();
        h.hubspot.ui_unsubscribe(&email);
        out.push(LiveChange {
            what: "someone unsubscribed in HubSpot; Salesforce has them opted out of email",
            check: Box::new(move |h| {
                let leads = h.salesforce.all("Lead");
                let mine: Vec<_> = leads
                    .iter()
                    .filter(|l| {
                        l.get("Email").and_then(|v| v.as_str()).map(str::to_lowercase).as_deref()
                            == Some(email.as_str())
                    })
                    .collect();
                !mine.is_empty()
                    && mine.iter().all(|l| {
                        l.get("HasOptedOutOfEmail").and_then(serde_json::Value::as_bool)
                            == Some(true)
                    })
            }),
        });
    }
    out
}

#[allow(clippy::too_many_lines, reason = "a linear script, easier to read in one piece")]
pub async fn run(args: DemoArgs, env: &HashMap<String, String>) -> u8 {
    let started = Instant::now();
    let ledger_path = match &args.ledger {
        Some(p) => p.clone(),
        None => {
            let dir = std::env::temp_dir()
                .join(format!("leadsync-demo-{}", uuid::Uuid::new_v4().simple()));
            if let Err(e) = std::fs::create_dir_all(&dir) {
                eprintln!("leadsync: cannot create {}: {e}", dir.display());
                return exit::IOERR;
            }
            dir.join("ledger.db")
        }
    };
    telemetry::init(
        crate::settings::LogFormat::Auto,
        "warn",
        env.get("RUST_LOG").map(String::as_str),
    );

    let harness =
        match Harness::start(SalesforceSimOptions::default(), HubspotSimOptions::default()).await {
            Ok(h) => h,
            Err(e) => {
                eprintln!("leadsync: cannot start simulators: {e}");
                return exit::IOERR;
            }
        };
    let people = population::generate(args.leads, args.seed);
    let seeded = match harness.seed(&people) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("leadsync: seeding failed: {e}");
            return exit::SOFTWARE;
        }
    };
    eprintln!(
        "leadsync demo: {} people; simulated Salesforce at {} ({} leads), HubSpot at {} ({} contacts)",
        people.len(),
        harness.salesforce.base_url(),
        seeded.salesforce,
        harness.hubspot.base_url(),
        seeded.hubspot
    );
    eprintln!("ledger: {}", ledger_path.display());

    let file_text;
    let source = match &args.config {
        Some(p) => {
            file_text = p.clone();
            Source::File(&file_text)
        }
        None => Source::Inline(DEMO_TOML),
    };
    let mut env = env.clone();
    if !args.polling_only {
        // The safety-net poll every five minutes: the demo's changes travel by webhook.
        env.extend(harness.webhook_env(300));
    }
    let settings = match harness.settings(source, &ledger_path, &env) {
        Ok(s) => s,
        Err(e) => {
            super::report_settings_error(&e);
            return exit::CONFIG;
        }
    };
    let app = match App::build(&settings) {
        Ok(a) => Arc::new(a),
        Err(e) => {
            eprintln!("leadsync: cannot start: {e:#}");
            return exit::IOERR;
        }
    };
    let webhooks = match app.bind_webhooks().await {
        Ok(Some(addr)) => {
            harness.point_webhooks_at(addr);
            eprintln!("webhooks: leadsync listens at http://{addr}/webhooks/{{crm,marketing}}");
            true
        }
        Ok(None) => {
            eprintln!("webhooks: off (polling only)");
            false
        }
        Err(e) => {
            eprintln!("leadsync: cannot bind the webhook listener: {e}");
            return exit::IOERR;
        }
    };
    let (trigger, shutdown) = shutdown::channel();
    let engine = {
        let app = Arc::clone(&app);
        tokio::spawn(async move { app.run_until_stopped(shutdown).await })
    };

    let mut ui = Ui::new();
    let timeout = Duration::from_secs(args.timeout);
    let initial_ok = converge(&app, &mut ui, "initial sync", timeout, webhooks).await;
    let initial_secs = started.elapsed().as_secs_f64();
    ui.say(&format!(
        "initial sync {} after {initial_secs:.1} s",
        if initial_ok { "converged" } else { "did NOT converge" }
    ));

    let mut rng = StdRng::seed_from_u64(args.seed ^ 0x5eed);
    let changes = live_changes(&harness, &mut rng);
    for c in &changes {
        ui.say(&format!("live change: {}", c.what));
    }
    if let Some(secs) = args.duration {
        let until = Instant::now() + Duration::from_secs(secs);
        let mut n = 0usize;
        while Instant::now() < until {
            random_edit(&harness, &mut rng);
            n += 1;
            ui.status(progress_line(&app, &format!("running ({n} random edits)")));
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        ui.say(&format!("made {n} random edits over {secs} s"));
    }
    let live_ok = converge(&app, &mut ui, "live changes", timeout, webhooks).await;
    let latency = if args.latency_rate > 0 {
        ui.status(format!(
            "latency sample: {} HubSpot changes/s for {} s",
            args.latency_rate, args.latency_secs
        ));
        match super::bench_webhooks::propagation(
            &app,
            &harness,
            args.latency_rate,
            args.latency_secs,
        )
        .await
        {
            Ok(l) => Some(l),
            Err(e) => {
                ui.say(&format!("latency sample failed: {e}"));
                None
            }
        }
    } else {
        None
    };
    let settled_ok = converge(&app, &mut ui, "settling", timeout, webhooks).await;
    ui.finish();
    let wh = app.webhook_stats();
    trigger.trigger();
    let engine_ok = match engine.await {
        Ok(Ok(())) => true,
        Ok(Err(e)) => {
            eprintln!("leadsync: engine stopped on an error: {e:#}");
            false
        }
        Err(e) => {
            eprintln!("leadsync: engine task failed: {e}");
            false
        }
    };

    let crossed: Vec<(&str, bool)> =
        changes.iter().map(|c| (c.what, (c.check)(&harness))).collect();
    let snapshot = match app.ledger().snapshot() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("leadsync: cannot read ledger: {e}");
            return exit::IOERR;
        }
    };
    let rules = app.rules();
    let disagreements = verify::compare(&snapshot, &rules, &|s, r| harness.fetch(s, r));
    let totals = match app.ledger().totals() {
        Ok(t) => t,
        Err(e) => {
            eprintln!("leadsync: cannot read ledger: {e}");
            return exit::IOERR;
        }
    };
    let calls = app.api_calls();
    let sf = harness.salesforce.stats();
    let hs = harness.hubspot.stats();
    let p = app.progress();
    let crm = SystemName("crm".into());
    let mkt = SystemName("marketing".into());

    println!();
    println!("leadsync demo summary");
    println!("  people generated           {}", people.len());
    println!(
        "  records seen               salesforce {}  hubspot {}",
        count(&p.polled, &crm),
        count(&p.polled, &mkt)
    );
    println!("  persons in ledger          {}", totals.persons);
    println!(
        "  links                      salesforce {}  hubspot {}",
        totals.links_by_system.get("crm").copied().unwrap_or(0),
        totals.links_by_system.get("marketing").copied().unwrap_or(0)
    );
    println!(
        "  records created            salesforce {}  hubspot {}",
        totals.created_by_system.get("crm").copied().unwrap_or(0),
        totals.created_by_system.get("marketing").copied().unwrap_or(0)
    );
    println!(
        "  records updated            salesforce {}  hubspot {}",
        totals.updates_by_system.get("crm").copied().unwrap_or(0),
        totals.updates_by_system.get("marketing").copied().unwrap_or(0)
    );
    println!(
        "  dead letters               salesforce {}  hubspot {}",
        totals.dead_by_system.get("crm").copied().unwrap_or(0),
        totals.dead_by_system.get("marketing").copied().unwrap_or(0)
    );
    let c = |n: &SystemName| calls.get(n).copied().unwrap_or_default();
    println!(
        "  API calls (leadsync)       salesforce {} reads, {} writes   hubspot {} reads, {} writes",
        c(&crm).reads,
        c(&crm).writes,
        c(&mkt).reads,
        c(&mkt).writes
    );
    println!(
        "  API calls (vendor count)   salesforce {} reads, {} writes   hubspot {} reads ({} searches), {} writes, {} answered 429",
        sf.api_reads,
        sf.api_writes,
        hs.api_reads + hs.search_calls,
        hs.search_calls,
        hs.api_writes,
        hs.rate_limited
    );
    println!(
        "  elapsed                    {:.1} s (initial sync {initial_secs:.1} s)",
        started.elapsed().as_secs_f64()
    );
    match &wh {
        Some(w) => {
            let o = std::sync::atomic::Ordering::Relaxed;
            println!(
                "  webhooks received          {} requests, {} events ({} new), {} refused",
                w.accepted_requests.load(o),
                w.events.load(o),
                w.new_events.load(o),
                w.rejected_total()
            );
        }
        None => println!("  webhooks                   off (polling only)"),
    }
    if let Some(l) = &latency {
        println!(
            "  change to other side       {} HubSpot→Salesforce changes: p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms{}",
            l.made,
            l.p50_ms,
            l.p99_ms,
            l.max_ms,
            if l.missing > 0 { format!(", {} NOT ARRIVED", l.missing) } else { String::new() }
        );
    }
    for (what, ok) in &crossed {
        println!("  live change {}  {what}", if *ok { "crossed ✓" } else { "MISSING ✗" });
    }
    let agree = disagreements.is_empty();
    println!(
        "  both systems agree         {}",
        if agree {
            "yes".to_string()
        } else {
            format!("NO: {} disagreements", disagreements.len())
        }
    );
    for d in disagreements.iter().take(10) {
        println!("    {d}");
    }
    println!("  ledger file                {}", ledger_path.display());
    let latency_ok = latency.as_ref().is_none_or(|l| l.missing == 0);
    if agree
        && initial_ok
        && live_ok
        && settled_ok
        && engine_ok
        && latency_ok
        && crossed.iter().all(|(_, ok)| *ok)
    {
        exit::OK
    } else {
        exit::FAILURE
    }
}

/// One random edit somewhere, as users of both systems make all day.
fn random_edit(h: &Harness, rng: &mut StdRng) {
    const TITLES: &[&str] = &["VP Sales", "Head of Marketing", "Founder", "Engineer", "COO"];
    if rng.random_bool(0.5) {
        let all = h.hubspot.all();
        if all.is_empty() {
            return;
        }
        let (id, _) = &all[rng.random_range(0..all.len())];
        let mut p = BTreeMap::new();
        p.insert("jobtitle".to_string(), TITLES[rng.random_range(0..TITLES.len())].to_string());
        drop(h.hubspot.ui_update(id, p));
    } else {
        let all = h.salesforce.all("Lead");
        if all.is_empty() {
            return;
        }
        let lead = &all[rng.random_range(0..all.len())];
        let Some(id) = lead.get("Id").and_then(|v| v.as_str()) else { return };
        let mut m = serde_json::Map::new();
        m.insert(
            "Title".into(),
            serde_json::Value::String(TITLES[rng.random_range(0..TITLES.len())].into()),
        );
        drop(h.salesforce.ui_update("Lead", id, m));
    }
}
