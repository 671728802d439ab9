//! `leadsync plan`: what a changed contract would do before it is applied. Loads the ledger
//! read-only, evaluates the new configuration's qualification rules and transition table for
//! every person, and prints how many would change stage (first -> final stage counts), the
//! moves the table would refuse, and a sample of who (ledger ids, never emails). Applies
//! nothing.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use chrono::Utc;
use clap::Args;

use super::{exit, load_settings};
use crate::ledger::LedgerReader;

#[derive(Debug, Args)]
pub struct PlanArgs {
    /// The NEW configuration (its `[ledger] path` names the ledger to read).
    #[arg(long, short)]
    pub config: PathBuf,
    /// How many persons to list.
    #[arg(long, default_value_t = 10)]
    pub sample: usize,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

pub fn run(args: &PlanArgs, env: &HashMap<String, String>) -> u8 {
    let settings = match load_settings(&args.config, env) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let Some(contract) = settings.contract.as_ref() else {
        eprintln!("leadsync: no [contract] section in the configuration: nothing to plan");
        return exit::CONFIG;
    };
    let reader = match LedgerReader::open(&settings.ledger_path) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("leadsync: cannot read ledger {}: {e}", settings.ledger_path.display());
            return exit::IOERR;
        }
    };
    let started = Instant::now();
    let plan = match reader.plan_stages(
        contract,
        &settings.sync.status_implies_stage,
        args.sample,
        Utc::now(),
    ) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("leadsync: cannot read ledger: {e}");
            return exit::IOERR;
        }
    };
    let took = started.elapsed();
    if args.json {
        println!("{:#}", serde_json::json!(plan));
        return exit::OK;
    }
    println!(
        "{} persons evaluated in {:.2}s ({} not placed yet, placed from their fields)",
        plan.persons,
        took.as_secs_f64(),
        plan.unplaced
    );
    println!("{} would change stage", plan.changing);
    for (mv, n) in &plan.moves {
        println!("  {mv:<28} {n}");
    }
    if !plan.refused.is_empty() {
        println!("rule moves the transition table would refuse:");
        for (mv, n) in &plan.refused {
            println!("  {mv:<28} {n}");
        }
    }
    if !plan.sample.is_empty() {
        println!("sample:");
        for m in &plan.sample {
            println!("  {}  {} -> {}  ({})", m.lead_id, m.from, m.to, m.steps.join(", "));
        }
    }
    exit::OK
}
