//! `leadsync bench`: initial sync of many leads per side through the in-process simulators
//! with their rate limits off and no added latency, measuring persons/s, write calls against
//! the floor ceil(records / batch max), and peak RSS.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use tokio::time::Instant;

use super::exit;
use crate::app::{App, count};
use crate::domain::SystemName;
use crate::settings::{DEMO_TOML, Source};
use crate::sim::harness::{Harness, wait_converged};
use crate::sim::hubspot::HubspotSimOptions;
use crate::sim::population::{self, Presence};
use crate::sim::salesforce::SalesforceSimOptions;
use crate::{shutdown, telemetry, verify};

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BenchArgs {
    /// Another benchmark than the initial sync.
    #[command(subcommand)]
    pub what: Option<BenchKind>,
    /// Leads per side.
    #[arg(long, default_value_t = 100_000)]
    pub leads: usize,
    /// Share of people present on both sides, in percent.
    #[arg(long, default_value_t = 40)]
    pub overlap: usize,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 1800)]
    pub timeout: u64,
}

#[derive(Debug, clap::Subcommand)]
pub enum BenchKind {
    /// The real-time path: webhook acknowledgement throughput and latency under wrk, and
    /// change-to-other-side latency at a steady rate.
    Webhooks(super::bench_webhooks::WebhookBenchArgs),
}

/// Peak resident set size of this process, from /proc (Linux).
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

#[allow(clippy::too_many_lines, reason = "a linear script")]
pub async fn run(args: BenchArgs, env: &HashMap<String, String>) -> u8 {
    if let Some(BenchKind::Webhooks(w)) = args.what {
        return super::bench_webhooks::run(w, env).await;
    }
    telemetry::init(
        crate::settings::LogFormat::Auto,
        "warn",
        env.get("RUST_LOG").map(String::as_str),
    );
    let both = args.leads * args.overlap.min(100) / 100;
    let one_side = args.leads - both;
    let total = both + 2 * one_side;
    let mut people = population::generate(total, args.seed);
    for (i, p) in people.iter_mut().enumerate() {
        p.presence = if i < both {
            Presence::Both
        } else if i < both + one_side {
            Presence::CrmOnly
        } else {
            Presence::MarketingOnly
        };
        p.sf_duplicate = false;
    }
    let harness = match Harness::start(
        SalesforceSimOptions { daily_api_limit: u64::MAX, ..SalesforceSimOptions::default() },
        HubspotSimOptions::unlimited(),
    )
    .await
    {
        Ok(h) => h,
        Err(e) => {
            eprintln!("leadsync: cannot start simulators: {e}");
            return exit::IOERR;
        }
    };
    let seed_start = Instant::now();
    let seeded = match harness.seed(&people) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("leadsync: seeding failed: {e}");
            return exit::SOFTWARE;
        }
    };
    eprintln!(
        "seeded {} Salesforce leads and {} HubSpot contacts ({} people, {}% overlap) in {:.1} s",
        seeded.salesforce,
        seeded.hubspot,
        total,
        args.overlap,
        seed_start.elapsed().as_secs_f64()
    );
    let dir =
        std::env::temp_dir().join(format!("leadsync-bench-{}", uuid::Uuid::new_v4().simple()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("leadsync: cannot create {}: {e}", dir.display());
        return exit::IOERR;
    }
    let ledger_path = dir.join("ledger.db");
    // Poll continuously: the benchmark measures the engine, not the poll interval.
    let mut extra = env.clone();
    extra.insert("LEADSYNC__SYSTEMS__CRM__POLL_INTERVAL_SECS".into(), "1".into());
    extra.insert("LEADSYNC__SYSTEMS__MARKETING__POLL_INTERVAL_SECS".into(), "1".into());
    extra.insert("LEADSYNC__SYSTEMS__MARKETING__SEARCH_MIN_INTERVAL_MS".into(), "0".into());
    let settings = match harness.settings(Source::Inline(DEMO_TOML), &ledger_path, &extra) {
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
    let sf_before = harness.salesforce.stats();
    let hs_before = harness.hubspot.stats();
    let (trigger, shutdown) = shutdown::channel();
    let start = Instant::now();
    let engine = {
        let app = Arc::clone(&app);
        tokio::spawn(async move { app.run_until_stopped(shutdown).await })
    };
    let converged = wait_converged(&app, Duration::from_secs(args.timeout)).await;
    let elapsed = start.elapsed();
    trigger.trigger();
    let engine_ok = matches!(engine.await, Ok(Ok(())));

    let (totals, snapshot) = match (app.ledger().totals(), app.ledger().snapshot()) {
        (Ok(t), Ok(s)) => (t, s),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("leadsync: cannot read ledger: {e}");
            return exit::IOERR;
        }
    };
    let disagreements = verify::compare(&snapshot, &app.rules(), &|s, r| harness.fetch(s, r));
    let sf = harness.salesforce.stats();
    let hs = harness.hubspot.stats();
    let p = app.progress();
    let crm = SystemName("crm".into());
    let mkt = SystemName("marketing".into());
    let written = |n: &SystemName| count(&p.pushed_created, n) + count(&p.pushed_updated, n);
    let limits: HashMap<&str, usize> = [("crm", 200usize), ("marketing", 100usize)].into();
    let floor = |n: &SystemName| {
        let max = limits.get(n.as_str()).copied().unwrap_or(1) as u64;
        written(n).div_ceil(max)
    };
    let sf_writes = sf.api_writes - sf_before.api_writes;
    let hs_writes = hs.api_writes - hs_before.api_writes;
    let secs = elapsed.as_secs_f64();
    println!(
        "leadsync bench: initial sync, {} leads per side, {}% overlap",
        args.leads, args.overlap
    );
    println!("  converged                  {}", if converged { "yes" } else { "NO (timed out)" });
    println!("  elapsed                    {secs:.1} s");
    println!("  persons in ledger          {}", totals.persons);
    println!("  persons/s                  {:.0}", totals.persons as f64 / secs.max(1e-9));
    println!(
        "  salesforce writes          {} calls for {} records; floor {} (ceil(records/200)); {:+.1}% over",
        sf_writes,
        written(&crm),
        floor(&crm),
        pct_over(sf_writes, floor(&crm))
    );
    println!(
        "  hubspot writes             {} calls for {} records; floor {} (ceil(records/100)); {:+.1}% over",
        hs_writes,
        written(&mkt),
        floor(&mkt),
        pct_over(hs_writes, floor(&mkt))
    );
    println!(
        "  reads                      salesforce {}  hubspot {} ({} searches)",
        sf.api_reads - sf_before.api_reads,
        hs.api_reads - hs_before.api_reads,
        hs.search_calls - hs_before.search_calls
    );
    println!(
        "  peak RSS                   {} MiB (whole process: simulators and their {} records included)",
        peak_rss_kib().map(|k| k / 1024).unwrap_or(0),
        seeded.salesforce + seeded.hubspot
    );
    println!(
        "  both systems agree         {}",
        if disagreements.is_empty() {
            "yes".to_string()
        } else {
            format!("NO ({})", disagreements.len())
        }
    );
    drop(std::fs::remove_dir_all(&dir));
    if converged && engine_ok && disagreements.is_empty() { exit::OK } else { exit::FAILURE }
}

fn pct_over(calls: u64, floor: u64) -> f64 {
    if floor == 0 {
        return 0.0;
    }
    (calls as f64 - floor as f64) / floor as f64 * 100.0
}
