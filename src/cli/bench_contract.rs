//! `leadsync bench contract`: the lead contract at scale. Seeds a ledger with N persons
//! (fields, custom values, events, governed stages with their dates, the rules that held under
//! the current contract) through the ledger's bulk path, then times
//! (a) a full re-evaluation after a rule change: `LedgerReader::plan_stages` with the MQL rule
//!     loosened (`score >= 40` and one more country), the same work `leadsync plan` does,
//!     rows read and decoded from SQLite included;
//! (a') the same re-evaluation applied by the daemon's sweep (`reevaluate::sweep`, as it runs
//!     at start after a rule change: moves stored and audited, pushes planned); and
//! (b) N SLA clocks: built with `SlaClock::start` (deadlines in business time) and evaluated
//!     with `SlaClock::evaluate`, a share of them touched first.
//!
//! It reports persons/s per phase and the peak RSS (VmHWM) after each. The contract is
//! `config/contract.example.toml` (Europe/Berlin business hours, holidays, SLA on), so the
//! figures are those of the configuration operators start from.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::time::Instant;

use chrono::{DateTime, Duration, TimeZone, Utc};
use clap::Args;
use rand::{Rng, SeedableRng};
use serde::Deserialize;

use super::bench::{mib, peak_rss_kib};
use super::exit;
use crate::contract::conditions::Facts;
use crate::contract::config::{Contract, ContractRaw};
use crate::contract::lifecycle::LifecycleStage;
use crate::contract::sla::{SlaAction, SlaClock, TouchKind};
use crate::domain::{Field, Fields};
use crate::ledger::{Ledger, LedgerReader, SeedPerson};
use crate::reconcile::lifecycle::{PersonLifecycle, evaluate_rules, fill_facts, projected_stage};

const EXAMPLE: &str = include_str!("../../config/contract.example.toml");
const MQL_RULE: &str = r#"all = ["score >= 50", "title is set", "country in [US, CA, GB]"]"#;
const MQL_RULE_CHANGED: &str =
    r#"all = ["score >= 40", "title is set", "country in [US, CA, GB, DE]"]"#;

#[derive(Debug, Args)]
pub struct ContractBenchArgs {
    /// Persons in the ledger (and SLA clocks).
    #[arg(long, default_value_t = 100_000)]
    pub persons: usize,
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
}

#[derive(Deserialize)]
struct Wrapper {
    contract: ContractRaw,
}

fn contract(toml: &str) -> Result<Contract, String> {
    let raw = config::Config::builder()
        .add_source(config::File::from_str(toml, config::FileFormat::Toml))
        .build()
        .and_then(|c| c.try_deserialize::<Wrapper>())
        .map_err(|e| e.to_string())?;
    raw.contract.validate("contract").map_err(|e| e.to_string()).map(by_system_name)
}

/// The example maps stage dates (and reasons) by connector kind; the daemon's settings rewrite
/// such keys by system name (`settings::contract_props`), which the bench, building its rules
/// without settings, does here for its two systems (crm: Salesforce, marketing: HubSpot).
/// Without it no date or reason would ever be queued and the sweep would skip that work.
fn by_system_name(mut c: Contract) -> Contract {
    for (kind, name) in [("salesforce", "crm"), ("hubspot", "marketing")] {
        if let Some(v) = c.mapping.stage_dates.remove(kind) {
            c.mapping.stage_dates.insert(name.to_string(), v);
        }
        if let Some(v) = c.mapping.stage_reason.remove(kind) {
            c.mapping.stage_reason.insert(name.to_string(), v);
        }
    }
    c
}

/// The stages a person at `stage` passed through, in order (recycled and disqualified after
/// an MQL spell).
fn path_to(stage: LifecycleStage) -> Vec<LifecycleStage> {
    use LifecycleStage::{Disqualified, Lead, Mql, Recycled, Subscriber};
    match stage {
        Subscriber => vec![Subscriber],
        Recycled => vec![Lead, Mql, Recycled],
        Disqualified => vec![Lead, Mql, Disqualified],
        other => LifecycleStage::ALL
            .into_iter()
            .filter(|s| {
                s.funnel_rank()
                    .zip(other.funnel_rank())
                    .is_some_and(|(r, top)| (1..=top).contains(&r))
            })
            .collect(),
    }
}

/// One generated person as the old contract left them: placed, dated, rules evaluated.
fn person(
    i: usize,
    rng: &mut impl Rng,
    old: &Contract,
    facts: &mut Facts,
    now: DateTime<Utc>,
) -> SeedPerson {
    use LifecycleStage::{
        Customer, Disqualified, Lead, Mql, Opportunity, Recycled, Sal, Sql, Subscriber,
    };
    let mut fields: Fields = [
        (Field::Email, format!("p{i}@bench.test")),
        (Field::FirstName, format!("First{i}")),
        (Field::LastName, format!("Last{i}")),
        (Field::Company, format!("Company {}", i % 5000)),
    ]
    .into();
    if rng.random_bool(0.7) {
        fields.insert(Field::Title, "Engineer".into());
    }
    let mut state = PersonLifecycle::default();
    state.custom.insert("score".into(), rng.random_range(0..100u32).to_string());
    state.custom.insert("country".into(), ["US", "CA", "GB", "DE", "FR"][i % 5].into());
    let day =
        |rng: &mut dyn rand::RngCore| now - Duration::seconds(rng.random_range(0..90 * 86_400));
    if rng.random_bool(0.2) {
        state.events.insert("callback_requested".into(), day(rng));
    }
    if rng.random_bool(0.1) {
        state.events.insert("meeting_booked".into(), day(rng));
    }
    let roll = rng.random_range(0..1000u32);
    let stage = match roll {
        0..100 => Subscriber,
        100..600 => Lead,
        600..750 => Mql,
        750..850 => Sal,
        850..920 => Sql,
        920..960 => Opportunity,
        960..980 => Customer,
        980..995 => Recycled,
        _ => Disqualified,
    };
    let mut at = now - Duration::days(180) + Duration::seconds(rng.random_range(0..86_400));
    for s in path_to(stage) {
        state.dates.enter(s, at);
        at += Duration::seconds(rng.random_range(3600..20 * 86_400));
    }
    state.stage = Some(stage);
    // What the current contract made of them, so that the old rules are a no-op.
    fill_facts(old, facts, stage, fields.clone(), &state);
    let (moves, held) = evaluate_rules(old, facts, &state.held, now);
    for t in moves.iter().filter_map(|m| m.as_ref().ok()) {
        state.dates.apply(t, now);
    }
    state.stage = Some(facts.stage);
    state.held = held;
    // The stage's projection onto `lifecycle_stage`, as the reconciler stores it with every
    // evaluation: without it every person's fields would change at the first evaluation,
    // under the old rules too, and the sweep would rewrite and re-plan everyone.
    if let Some(st) = projected_stage(old, facts.stage) {
        fields.insert(Field::LifecycleStage, st.as_str().to_string());
    }
    SeedPerson { id: format!("P{i:08}"), fields, lifecycle: Some(state) }
}

/// CPU seconds (user + system) this process has used, from `/proc/self/stat` (clock ticks
/// of 10 ms): the machine a bench runs on is often shared, and wall time then says little.
fn cpu_secs() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return 0.0 };
    // Fields after the command name (which may hold spaces, hence the last ')'): utime and
    // stime are the 12th and 13th.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let ticks: Vec<f64> =
        rest.split_whitespace().skip(11).take(2).filter_map(|v| v.parse().ok()).collect();
    ticks.iter().sum::<f64>() / 100.0
}

fn rate(n: usize, secs: f64) -> u64 {
    if secs > 0.0 { (n as f64 / secs) as u64 } else { 0 }
}

#[allow(clippy::too_many_lines, reason = "a linear script")]
pub fn run(args: &ContractBenchArgs, _env: &HashMap<String, String>) -> u8 {
    let changed = EXAMPLE.replace(MQL_RULE, MQL_RULE_CHANGED);
    if changed == EXAMPLE {
        eprintln!("leadsync: the example contract's MQL rule changed; update the bench");
        return exit::SOFTWARE;
    }
    let (old, new) = match (contract(EXAMPLE), contract(&changed)) {
        (Ok(o), Ok(n)) => (o, n),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("leadsync: the example contract does not load: {e}");
            return exit::SOFTWARE;
        }
    };
    let Some(policy) = old.sla.clone() else {
        eprintln!("leadsync: the example contract has no [contract.sla]");
        return exit::SOFTWARE;
    };
    // A fixed instant (a Wednesday afternoon in Berlin) so runs compare.
    let now = Utc.with_ymd_and_hms(2026, 11, 18, 14, 0, 0).single().unwrap_or_else(Utc::now);
    let dir = std::env::temp_dir()
        .join(format!("leadsync-bench-contract-{}", uuid::Uuid::new_v4().simple()));
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("leadsync: cannot create {}: {e}", dir.display());
        return exit::IOERR;
    }
    let code = bench(args, &old, &new, &policy, now, &dir);
    // The ledger is scratch; a failure to remove it is not the benchmark's.
    let _ = std::fs::remove_dir_all(&dir);
    code
}

fn bench(
    args: &ContractBenchArgs,
    old: &Contract,
    new: &Contract,
    policy: &crate::contract::sla::SlaPolicy,
    now: DateTime<Utc>,
    dir: &std::path::Path,
) -> u8 {
    let n = args.persons;
    let path = dir.join("ledger.db");
    let ledger = match Ledger::open(&path) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("leadsync: cannot open {}: {e}", path.display());
            return exit::IOERR;
        }
    };
    let started = Instant::now();
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    let mut facts = Facts::new(&old.vocabulary, LifecycleStage::Lead);
    let people = (0..n).map(|i| person(i, &mut rng, old, &mut facts, now));
    if let Err(e) = ledger.seed_persons(people, now) {
        eprintln!("leadsync: seeding failed: {e}");
        return exit::IOERR;
    }
    drop(ledger);
    let seeded = started.elapsed().as_secs_f64();
    eprintln!(
        "seeded {n} persons (fields, custom values, events, stages with dates) in {seeded:.1} s; \
         peak RSS {} MiB",
        mib(peak_rss_kib())
    );
    let reader = match LedgerReader::open(&path) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("leadsync: cannot read {}: {e}", path.display());
            return exit::IOERR;
        }
    };
    let status_implies = BTreeMap::new();
    let started = Instant::now();
    let unchanged = match reader.plan_stages(old, &status_implies, 10, now) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("leadsync: plan failed: {e}");
            return exit::IOERR;
        }
    };
    let t_same = started.elapsed().as_secs_f64();
    let (started, cpu) = (Instant::now(), cpu_secs());
    let plan = match reader.plan_stages(new, &status_implies, 10, now) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("leadsync: plan failed: {e}");
            return exit::IOERR;
        }
    };
    let (t_plan, c_plan) = (started.elapsed().as_secs_f64(), cpu_secs() - cpu);
    eprintln!(
        "plan, unchanged rules: {} persons, {} changing, in {t_same:.2} s ({} persons/s)",
        unchanged.persons,
        unchanged.changing,
        rate(n, t_same)
    );
    eprintln!(
        "plan, changed MQL rule (full re-evaluation): {} persons, {} changing ({} refused \
         moves), in {t_plan:.2} s, {c_plan:.2} s CPU ({} persons/s); peak RSS {} MiB",
        plan.persons,
        plan.changing,
        plan.refused.values().sum::<u64>(),
        rate(n, t_plan),
        mib(peak_rss_kib())
    );
    for (m, c) in &plan.moves {
        eprintln!("  {m}: {c}");
    }
    drop(reader);

    // (a') The same re-evaluation applied, as the daemon does at start after a rule change:
    // scanned on a read connection, the persons to write written in transactions of at most
    // `reevaluate::BATCH` persons, moves audited and stored.
    let ledger = match Ledger::open(&path) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("leadsync: cannot open {}: {e}", path.display());
            return exit::IOERR;
        }
    };
    let mut rules = crate::reconcile::Rules::salesforce_hubspot_defaults();
    rules.contract = Some(std::sync::Arc::new(new.clone()));
    let (ledger, rules) = (std::sync::Arc::new(ledger), std::sync::Arc::new(rules));
    let (started, cpu) = (Instant::now(), cpu_secs());
    // The daemon's own sweep (`reevaluate::sweep`), as it runs at start after a rule change;
    // the CLI runs on a multi-threaded runtime already (a runtime of its own otherwise).
    let sweep = crate::reevaluate::sweep(&ledger, &rules, crate::ledger::Sweep::Everyone, now);
    let swept = match tokio::runtime::Handle::try_current() {
        Ok(h) => tokio::task::block_in_place(|| h.block_on(sweep)),
        Err(_) => match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(r) => r.block_on(sweep),
            Err(e) => {
                eprintln!("leadsync: cannot start a runtime: {e}");
                return exit::SOFTWARE;
            }
        },
    };
    let (looked, moved) = match swept {
        Ok(r) => (r.persons, r.moved),
        Err(e) => {
            eprintln!("leadsync: re-evaluation failed: {e}");
            return exit::IOERR;
        }
    };
    let (t_apply, c_apply) = (started.elapsed().as_secs_f64(), cpu_secs() - cpu);
    eprintln!(
        "re-evaluation applied (the daemon's sweep after a rule change): {looked} persons, \
         {moved} moved, in {t_apply:.2} s, {c_apply:.2} s CPU ({} persons/s); peak RSS {} MiB",
        rate(looked, t_apply),
        mib(peak_rss_kib())
    );
    drop(ledger);
    match LedgerReader::open(&path).and_then(|r| r.sweep_written()) {
        Ok(w) => eprintln!(
            "  written by the sweep: {} outbox rows ({} with stage dates), {} audit rows \
             ({} stage)",
            w.outbox, w.outbox_dated, w.audit, w.audit_stage
        ),
        Err(e) => eprintln!("leadsync: cannot count what the sweep wrote: {e}"),
    }

    // SLA clocks: handovers spread over the last 10 days, 60% touched at some point within
    // 48 hours of the handover (a touch after `now` is not yet known and is left out).
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed ^ 0x51a);
    let starts: Vec<(DateTime<Utc>, Option<DateTime<Utc>>)> = (0..n)
        .map(|_| {
            let at = now - Duration::seconds(rng.random_range(0..10 * 86_400));
            let touch = rng
                .random_bool(0.6)
                .then(|| at + Duration::seconds(rng.random_range(0..48 * 3600)))
                .filter(|t| *t <= now);
            (at, touch)
        })
        .collect();
    let started = Instant::now();
    let mut clocks: Vec<SlaClock> =
        starts.iter().map(|(at, _)| SlaClock::start(*at, policy, &old.calendar)).collect();
    let t_start = started.elapsed().as_secs_f64();
    for (clock, (_, touch)) in clocks.iter_mut().zip(&starts) {
        if let Some(t) = touch {
            clock.touch(TouchKind::Activity, *t);
        }
    }
    let started = Instant::now();
    let mut actions: BTreeMap<&'static str, u64> = BTreeMap::new();
    for clock in &mut clocks {
        for a in clock.evaluate(now, policy) {
            let kind = match a {
                SlaAction::Met { .. } => "met",
                SlaAction::Breached { .. } => "breached",
                SlaAction::Escalate { .. } => "escalate",
                SlaAction::Recycle { .. } => "recycle",
                SlaAction::TouchedLate { .. } => "touched_late",
            };
            *actions.entry(kind).or_default() += 1;
        }
    }
    let t_eval = started.elapsed().as_secs_f64();
    eprintln!(
        "SLA: {n} clocks started (business-time deadlines) in {t_start:.2} s ({} clocks/s), \
         evaluated in {t_eval:.2} s ({} clocks/s); actions {actions:?}; peak RSS {} MiB",
        rate(n, t_start),
        rate(n, t_eval),
        mib(peak_rss_kib())
    );
    eprintln!(
        "full re-evaluation (plan with changed rules + SLA start + evaluate): {:.2} s for {n} \
         persons; with the re-evaluation applied instead of planned: {:.2} s",
        t_plan + t_start + t_eval,
        t_apply + t_start + t_eval
    );
    exit::OK
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bench's systems are named crm and marketing: the example's kind-keyed stage dates
    /// and reasons must reach them, or the sweep never queues a date.
    #[test]
    fn the_examples_mappings_name_the_benchs_systems() {
        let c = contract(EXAMPLE).expect("the example is valid");
        let dates: Vec<&str> = c.mapping.stage_dates.keys().map(String::as_str).collect();
        assert_eq!(dates, ["crm", "marketing"]);
        assert!(c.mapping.stage_reason.keys().all(|k| k == "crm" || k == "marketing"));
        assert!(!c.mapping.stage_reason.is_empty());
    }
}
