//! `leadsync bench`: initial sync of many leads per side through the in-process simulators
//! with their rate limits off and no added latency, measuring persons/s, write calls against
//! the floor ceil(records / batch max), peak RSS, and (with `--fuzzy`) what matching made of
//! fuzzy duplicates placed within one system and across the two.
//!
//! By default the simulators run in this process, so the process's peak RSS includes their
//! records; the bench reports the resident size right after seeding (simulators plus the
//! generated people, before the engine starts) beside the peak. With `--sims external` they
//! run in a child process (see `bench_sims`), and the bench's own peak is the engine's.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, ValueEnum};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::bench_sims::{ExternalSims, SimCounts};
use super::exit;
use crate::app::{App, count};
use crate::domain::SystemName;
use crate::ledger::{LedgerError, LedgerReader, MatchFigures, SeededDuplicate};
use crate::settings::{DEMO_TOML, Settings, Source};
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
    /// Keep the ledger file afterwards (its path is printed), to inspect it with `trace`,
    /// `review list` or `status`.
    #[arg(long)]
    pub keep_ledger: bool,
    /// Share of each side's records that are fuzzy duplicates of another record, in percent
    /// (the backfill benchmark uses 5). Above 0, people come from the synthetic-people
    /// generator and half the duplicates go to the other system than their person's record.
    #[arg(long, default_value_t = 0)]
    pub fuzzy: usize,
    /// Print a progress line (polled, reconciled, pushed, RSS) every this many seconds; 0 for
    /// none.
    #[arg(long, default_value_t = 10)]
    pub progress_secs: u64,
    /// Where the simulators run: in this process (their records count in its RSS), or in a
    /// child process, so that this process's peak RSS is the engine's and the simulators'
    /// is reported apart.
    #[arg(long, value_enum, default_value_t = SimsMode::InProcess)]
    pub sims: SimsMode,
    /// Internal: be the simulator child of `--sims external` (seed, serve, answer on stdin).
    #[arg(long, hide = true)]
    pub sims_child: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SimsMode {
    InProcess,
    External,
}

#[derive(Debug, clap::Subcommand)]
pub enum BenchKind {
    /// The real-time path: webhook acknowledgement throughput and latency under wrk, and
    /// change-to-other-side latency at a steady rate.
    Webhooks(super::bench_webhooks::WebhookBenchArgs),
    /// The lead contract for many persons: a full re-evaluation of the qualification rules
    /// after a rule change (`plan` included) and SLA clock evaluation; persons/s, peak RSS.
    Contract(super::bench_contract::ContractBenchArgs),
}

/// A line of /proc/self/status in KiB (Linux): `VmHWM` is the peak resident set size,
/// `VmRSS` the current one.
pub(super) fn status_kib(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

pub(super) fn peak_rss_kib() -> Option<u64> {
    status_kib("VmHWM:")
}

pub(super) fn mib(kib: Option<u64>) -> u64 {
    kib.unwrap_or(0) / 1024
}

/// Where the bench put each record, and the remote ids needed to check what matching did
/// with the fuzzy duplicates.
#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct Placed {
    salesforce: usize,
    hubspot: usize,
    /// Fuzzy duplicates seeded: (system, remote id) of the duplicate and of one record of its
    /// person, and whether the person already has a record in the duplicate's system.
    duplicates: Vec<(Side, String, Side, String, bool)>,
    within: usize,
    across: usize,
    /// Duplicates HubSpot refused because another contact has their email (HubSpot keeps
    /// emails unique, so such a duplicate cannot exist there).
    refused: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Side {
    Crm,
    Marketing,
}

impl Side {
    fn system(self) -> &'static str {
        match self {
            Side::Crm => "crm",
            Side::Marketing => "marketing",
        }
    }
}

/// The bench population: `leads` records per side, `fuzzy`% of them fuzzy duplicates, the
/// rest people of whom `overlap`% are on both sides. Seeds the simulators.
fn seed_population(harness: &Harness, args: &BenchArgs) -> Result<Placed, String> {
    use rand::{Rng, SeedableRng};
    let dup_side = args.leads * args.fuzzy.min(50) / 100;
    let base = args.leads - dup_side;
    let both = base * args.overlap.min(100) / 100;
    let one_side = base - both;
    let total = both + 2 * one_side;
    // 1..=3 duplicates (mean 2) per duplicated person.
    let rate = if total == 0 { 0.0 } else { (dup_side as f64 / total as f64).min(1.0) };
    let mut pop = population::with_fuzzy_duplicates(total, rate, args.seed);
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed ^ 0xb3c4);
    let mut placed = Placed::default();
    let mut sf_ids: Vec<Option<String>> = vec![None; pop.people.len()];
    let mut hs_ids: Vec<Option<String>> = vec![None; pop.people.len()];
    let wanted: std::collections::HashSet<usize> = pop.duplicates.iter().map(|d| d.of).collect();
    for (i, p) in pop.people.iter_mut().enumerate() {
        p.presence = if i < both {
            Presence::Both
        } else if i < both + one_side {
            Presence::CrmOnly
        } else {
            Presence::MarketingOnly
        };
        if p.presence != Presence::MarketingOnly {
            let id = harness.salesforce.insert("Lead", p.salesforce_lead(false))?;
            placed.salesforce += 1;
            if wanted.contains(&i) {
                sf_ids[i] = Some(id);
            }
        }
        if p.presence != Presence::CrmOnly {
            let id = harness.hubspot.insert(p.hubspot_contact())?;
            placed.hubspot += 1;
            if p.hs_opt_out {
                harness.hubspot.ui_unsubscribe(&p.email);
            }
            if wanted.contains(&i) {
                hs_ids[i] = Some(id);
            }
        }
    }
    // Exactly 2 × dup_side duplicates when the generator made enough (it makes about that).
    pop.duplicates.truncate(2 * dup_side);
    for d in &mut pop.duplicates {
        let person = &pop.people[d.of];
        // Half go to the system the person is in, half to the other one; a person in both is
        // in both, so a duplicate there is within one system and across from the other.
        let home = match person.presence {
            Presence::CrmOnly => Side::Crm,
            Presence::MarketingOnly => Side::Marketing,
            Presence::Both => {
                if rng.random_bool(0.5) {
                    Side::Crm
                } else {
                    Side::Marketing
                }
            }
        };
        let other = if home == Side::Crm { Side::Marketing } else { Side::Crm };
        let target = if rng.random_bool(0.5) { home } else { other };
        let within = person.presence == Presence::Both || target == home;
        let original = match home {
            Side::Crm => sf_ids[d.of].clone(),
            Side::Marketing => hs_ids[d.of].clone(),
        };
        let Some(original) = original else { continue };
        let id = match target {
            Side::Crm => {
                // A Salesforce lead needs a company: an import fills the person's.
                if d.record.company.is_empty() {
                    d.record.company.clone_from(&person.company);
                }
                harness.salesforce.insert("Lead", d.record.salesforce_lead(false))?
            }
            Side::Marketing => match harness.hubspot.insert(d.record.hubspot_contact()) {
                Ok(id) => id,
                Err(_) => {
                    placed.refused += 1;
                    continue;
                }
            },
        };
        match target {
            Side::Crm => placed.salesforce += 1,
            Side::Marketing => placed.hubspot += 1,
        }
        if within {
            placed.within += 1;
        } else {
            placed.across += 1;
        }
        placed.duplicates.push((target, id, home, original, within));
    }
    Ok(placed)
}

/// Seed the bench population (both modes, and the simulator child, call this with the same
/// arguments, so they seed the same records).
pub(super) fn seed_any(harness: &Harness, args: &BenchArgs) -> Result<Placed, String> {
    if args.fuzzy == 0 {
        // The population of earlier runs, so their figures stay comparable.
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
        harness.seed(&people).map(|s| Placed {
            salesforce: s.salesforce,
            hubspot: s.hubspot,
            ..Placed::default()
        })
    } else {
        seed_population(harness, args)
    }
}

/// The simulators the bench syncs between: in this process, or in a child process.
enum Sims {
    InProcess(Harness),
    External { child: ExternalSims, env: HashMap<String, String> },
}

impl Sims {
    fn settings(
        &self,
        ledger: &std::path::Path,
        extra: &HashMap<String, String>,
    ) -> Result<Settings, crate::settings::SettingsError> {
        match self {
            Sims::InProcess(h) => h.settings(Source::Inline(DEMO_TOML), ledger, extra),
            Sims::External { env, .. } => {
                // As `Harness::settings` does with the child's harness's environment.
                let mut all = env.clone();
                all.insert("LEADSYNC__LEDGER__PATH".into(), ledger.display().to_string());
                all.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
                Settings::load(Source::Inline(DEMO_TOML), &all)
            }
        }
    }

    fn counts(&mut self) -> std::io::Result<SimCounts> {
        match self {
            Sims::InProcess(h) => Ok(SimCounts::of(h)),
            Sims::External { child, .. } => child.stats(),
        }
    }

    fn compare(
        &mut self,
        snapshot: &[crate::ledger::LeadSnapshot],
        rules: &crate::reconcile::Rules,
    ) -> std::io::Result<Vec<verify::Disagreement>> {
        match self {
            Sims::InProcess(h) => Ok(verify::compare(snapshot, rules, &|s, r| h.fetch(s, r))),
            Sims::External { child, .. } => child.compare(snapshot, rules),
        }
    }
}

/// What matching made of the run, read from the ledger file.
fn match_figures(path: &std::path::Path, placed: &Placed) -> Result<MatchFigures, LedgerError> {
    let reader = LedgerReader::open(path)?;
    reader.match_figures(placed.duplicates.iter().map(|(side, id, home, original, within)| {
        SeededDuplicate {
            system: side.system(),
            remote_id: id,
            original_system: home.system(),
            original_id: original,
            within: *within,
        }
    }))
}

#[allow(clippy::too_many_lines, reason = "a linear script")]
pub async fn run(args: BenchArgs, env: &HashMap<String, String>) -> u8 {
    match args.what {
        Some(BenchKind::Webhooks(w)) => return super::bench_webhooks::run(w, env).await,
        Some(BenchKind::Contract(c)) => return super::bench_contract::run(&c, env),
        None => {}
    }
    if args.sims_child {
        return super::bench_sims::serve_child(&args).await;
    }
    telemetry::init(
        crate::settings::LogFormat::Auto,
        "warn",
        env.get("RUST_LOG").map(String::as_str),
    );
    let seed_start = Instant::now();
    let (mut sims, seeded, rss_seeded) = match args.sims {
        SimsMode::InProcess => {
            let harness = match Harness::start(
                SalesforceSimOptions {
                    daily_api_limit: u64::MAX,
                    ..SalesforceSimOptions::default()
                },
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
            let seeded = match seed_any(&harness, &args) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("leadsync: seeding failed: {e}");
                    return exit::SOFTWARE;
                }
            };
            (Sims::InProcess(harness), seeded, status_kib("VmRSS:"))
        }
        SimsMode::External => {
            // Blocks this worker while the child seeds: nothing else runs yet.
            match ExternalSims::spawn(&args) {
                Ok((child, ready)) => {
                    eprintln!(
                        "simulators in process {} (seeded there in {:.1} s)",
                        child.pid(),
                        ready.seed_secs
                    );
                    (
                        Sims::External { child, env: ready.env },
                        ready.placed,
                        Some(ready.rss_seeded_kib),
                    )
                }
                Err(e) => {
                    eprintln!("leadsync: cannot start the simulator process: {e}");
                    return exit::IOERR;
                }
            }
        }
    };
    eprintln!(
        "seeded {} Salesforce leads and {} HubSpot contacts ({}% overlap, {} fuzzy duplicates: \
         {} within one system, {} across; {} refused by HubSpot as email taken) in {:.1} s; \
         RSS {} MiB ({})",
        seeded.salesforce,
        seeded.hubspot,
        args.overlap,
        seeded.duplicates.len(),
        seeded.within,
        seeded.across,
        seeded.refused,
        seed_start.elapsed().as_secs_f64(),
        mib(rss_seeded),
        if args.sims == SimsMode::External { "the simulators' process" } else { "this process" },
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
    let settings = match sims.settings(&ledger_path, &extra) {
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
    let before = match sims.counts() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("leadsync: cannot read the simulators' counters: {e}");
            return exit::IOERR;
        }
    };
    let (trigger, shutdown) = shutdown::channel();
    let start = Instant::now();
    let engine = {
        let app = Arc::clone(&app);
        tokio::spawn(async move { app.run_until_stopped(shutdown).await })
    };
    let external = args.sims == SimsMode::External;
    let ticker = (args.progress_secs > 0).then(|| {
        let p = app.progress();
        let every = Duration::from_secs(args.progress_secs);
        tokio::spawn(async move {
            let crm = SystemName("crm".into());
            let mkt = SystemName("marketing".into());
            loop {
                tokio::time::sleep(every).await;
                let pushed =
                    |n: &SystemName| count(&p.pushed_created, n) + count(&p.pushed_updated, n);
                eprintln!(
                    "  {:>6.0} s  polled crm {} marketing {}  reconciled {}  pushed crm {} \
                     marketing {}  RSS {} MiB{}",
                    start.elapsed().as_secs_f64(),
                    count(&p.polled, &crm),
                    count(&p.polled, &mkt),
                    p.reconciled.load(std::sync::atomic::Ordering::Relaxed),
                    pushed(&crm),
                    pushed(&mkt),
                    mib(status_kib("VmRSS:")),
                    if external { " (engine)" } else { "" },
                );
            }
        })
    });
    let converged = wait_converged(&app, Duration::from_secs(args.timeout)).await;
    if let Some(t) = ticker {
        t.abort();
    }
    let elapsed = start.elapsed();
    // The engine's peak: taken before verification reads every record into this process.
    let peak_converged = peak_rss_kib();
    trigger.trigger();
    let engine_ok = matches!(engine.await, Ok(Ok(())));

    let (totals, snapshot) = match (app.ledger().totals(), app.ledger().snapshot()) {
        (Ok(t), Ok(s)) => (t, s),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("leadsync: cannot read ledger: {e}");
            return exit::IOERR;
        }
    };
    let (disagreements, after) = match (sims.compare(&snapshot, &app.rules()), sims.counts()) {
        (Ok(d), Ok(c)) => (d, c),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("leadsync: cannot read the simulators: {e}");
            return exit::IOERR;
        }
    };
    let p = app.progress();
    let crm = SystemName("crm".into());
    let mkt = SystemName("marketing".into());
    let written = |n: &SystemName| count(&p.pushed_created, n) + count(&p.pushed_updated, n);
    let limits: HashMap<&str, usize> = [("crm", 200usize), ("marketing", 100usize)].into();
    let floor = |n: &SystemName| {
        let max = limits.get(n.as_str()).copied().unwrap_or(1) as u64;
        written(n).div_ceil(max)
    };
    let sf_writes = after.sf_writes - before.sf_writes;
    let hs_writes = after.hs_writes - before.hs_writes;
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
        after.sf_reads - before.sf_reads,
        after.hs_reads - before.hs_reads,
        after.hs_searches - before.hs_searches
    );
    if external {
        println!(
            "  peak RSS (engine)          {} MiB at convergence (this process; simulators apart); \
             {} MiB after verification",
            mib(peak_converged),
            mib(peak_rss_kib())
        );
        println!(
            "  simulators RSS             {} MiB after seeding {} records, peak {} MiB, {} MiB \
             at the end (their own process)",
            mib(rss_seeded),
            seeded.salesforce + seeded.hubspot,
            after.hwm_kib / 1024,
            after.rss_kib / 1024
        );
    } else {
        println!(
            "  peak RSS                   {} MiB (whole process: simulators and their {} records included)",
            mib(peak_rss_kib()),
            seeded.salesforce + seeded.hubspot
        );
        println!(
            "  RSS after seeding          {} MiB (simulators + generated people, before the engine); \
             peak minus this: {} MiB",
            mib(rss_seeded),
            mib(peak_rss_kib()).saturating_sub(mib(rss_seeded))
        );
    }
    let c = crate::ledger::candidate_stats();
    let per = |n: u64| n as f64 / (c.searches.max(1)) as f64;
    println!(
        "  fuzzy candidate search     {} searches for {} changes reconciled; per search: {:.1} keys \
         ({:.1} too common), {:.1} persons found, {:.1} scored, {:.2} loaded whole",
        c.searches,
        p.reconciled.load(std::sync::atomic::Ordering::Relaxed),
        per(c.keys),
        per(c.keys_too_common),
        per(c.found),
        per(c.scored),
        per(c.loaded)
    );
    let (profiles, bytes) = app.rules().matcher.remembered_profiles();
    println!(
        "  profiles remembered        {profiles} (matcher memo; {} MiB of keys and values)",
        bytes / (1 << 20)
    );
    match match_figures(&ledger_path, &seeded) {
        Ok(m) => {
            let links: Vec<String> =
                m.links_by_reason.iter().map(|(r, n)| format!("{r} {n}")).collect();
            println!("  links by reason            {}", links.join(", "));
            let reviews: Vec<String> =
                m.reviews.iter().map(|(k, s, n)| format!("{k}/{s} {n}")).collect();
            println!(
                "  reviews                    {}",
                if reviews.is_empty() { "none".to_string() } else { reviews.join(", ") }
            );
            if !seeded.duplicates.is_empty() {
                let n = seeded.duplicates.len();
                println!(
                    "  fuzzy duplicates           {n} seeded; {} on their person's ledger person \
                     ({} of {} within one system, {} of {} across); {} in an open review with it; \
                     {} left apart",
                    m.joined,
                    m.joined_within,
                    seeded.within,
                    m.joined - m.joined_within,
                    seeded.across,
                    m.in_review,
                    n - m.joined - m.in_review
                );
            }
        }
        Err(e) => eprintln!("leadsync: cannot read matching figures: {e}"),
    }
    println!(
        "  both systems agree         {}",
        if disagreements.is_empty() {
            "yes".to_string()
        } else {
            format!("NO ({})", disagreements.len())
        }
    );
    for d in disagreements.iter().take(10) {
        println!("    {d}");
    }
    drop(sims);
    if args.keep_ledger {
        println!("  ledger kept                {}", ledger_path.display());
    } else {
        drop(std::fs::remove_dir_all(&dir));
    }
    if converged && engine_ok && disagreements.is_empty() { exit::OK } else { exit::FAILURE }
}

fn pct_over(calls: u64, floor: u64) -> f64 {
    if floor == 0 {
        return 0.0;
    }
    (calls as f64 - floor as f64) / floor as f64 * 100.0
}
