//! The subcommands of the one `leadsync` binary.
//!
//! Commands read the ledger only, except `serve` and `demo`, which run the sync engine,
//! `review accept|reject`, which write a reviewer's decision, `stage`, which writes an
//! operator's named lifecycle transition, and `erase`, which deletes a person at the vendors
//! and scrubs them from the ledger; `dedupe` reads CSV files and never the ledger.
//! Exit codes follow sysexits: 78 bad configuration, 69 a system unreachable, 74 ledger IO.

#![allow(clippy::print_stdout, reason = "the CLI's output is its interface")]

mod bench;
mod bench_contract;
mod bench_sims;
mod bench_webhooks;
mod check;
mod dedupe;
mod demo;
mod duplicates;
pub mod erase;
mod plan;
mod report;
mod review;
mod serve;
mod sim;
mod stage;
mod status;
mod synth;
mod trace;

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::settings::{Settings, SettingsError, Source};

/// sysexits.h codes used by leadsync.
pub mod exit {
    pub const OK: u8 = 0;
    pub const FAILURE: u8 = 1;
    pub const UNAVAILABLE: u8 = 69;
    pub const SOFTWARE: u8 = 70;
    pub const IOERR: u8 = 74;
    pub const CONFIG: u8 = 78;
}

#[derive(Debug, Parser)]
#[command(
    name = "leadsync",
    version,
    about = "Keeps a CRM and a marketing platform telling the same story about every lead"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the sync daemon until SIGTERM or SIGINT.
    Serve {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate the configuration and reach every system (auth and one read).
    Check {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Per system: cursor, last successful poll, inbox/outbox depth, dead records, last error.
    Status {
        #[arg(long, short)]
        config: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One person's timeline: changes received, match decisions, each field's value and why,
    /// pushes and their outcomes. QUERY is an email, a ledger id or `system:remote-id`.
    Trace {
        #[arg(long, short)]
        config: PathBuf,
        query: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// The review queue: possible duplicates and parked field conflicts.
    Review(review::ReviewArgs),
    /// A named lifecycle transition (recycle, disqualify, reopen) with a reason code, checked
    /// against the lead contract's transition table: `leadsync stage QUERY recycle --reason CODE`.
    Stage(stage::StageArgs),
    /// What a changed lead contract would do: how many persons would change stage, and a
    /// sample of who (ledger ids). Reads the ledger only; applies nothing.
    Plan(plan::PlanArgs),
    /// Persons with more than one record in one system: how each was linked, since when, and
    /// what vendor-side merging (identity.merge_at_vendor) does or would do with them.
    Duplicates(duplicates::DuplicatesArgs),
    /// Reports computed from the ledger: `funnel` (stages, conversion, time in stage), `sla`
    /// (handovers, first touch, breaches) and `attribution` (won revenue and pipeline by
    /// campaign).
    Report(report::ReportArgs),
    /// Run a vendor simulator standalone.
    Sim(sim::SimArgs),
    /// Simulated Salesforce and HubSpot, a real ledger, real sync, and a summary.
    Demo(demo::DemoArgs),
    /// Benchmark: initial sync of many leads per side through the in-process simulators.
    Bench(bench::BenchArgs),
    /// Find duplicate people in CSV exports (one file), or link two exports, with the
    /// matching engine; writes candidate pairs as `id_a,id_b,score`.
    Dedupe(dedupe::DedupeArgs),
    /// Synthetic people with known duplicates (CSV), and matching-quality scores.
    Synth(synth::SynthArgs),
    /// Erase a person (GDPR): delete their records at every system, scrub them from the
    /// ledger and keep a salted-hash tombstone so they are never imported again.
    Erase(erase::EraseArgs),
}

/// Run a parsed command with the process environment `env`.
pub async fn run(cli: Cli, env: HashMap<String, String>) -> ExitCode {
    let code = match cli.command {
        Command::Serve { config } => serve::run(&config, &env).await,
        Command::Check { config } => check::run(&config, &env).await,
        Command::Status { config, json } => status::run(&config, &env, json),
        Command::Trace { config, query, json } => trace::run(&config, &env, &query, json),
        Command::Review(args) => review::run(args, &env),
        Command::Stage(args) => stage::run(&args, &env),
        Command::Plan(args) => plan::run(&args, &env),
        Command::Duplicates(args) => duplicates::run(&args, &env),
        Command::Report(args) => report::run(args, &env),
        Command::Sim(args) => sim::run(args, &env).await,
        Command::Demo(args) => demo::run(args, &env).await,
        Command::Bench(args) => bench::run(args, &env).await,
        Command::Dedupe(args) => dedupe::run(&args),
        Command::Synth(args) => synth::run(args),
        Command::Erase(args) => erase::run(args, &env).await,
    };
    ExitCode::from(code)
}

/// Load settings or print why not (exit 78).
fn load_settings(path: &std::path::Path, env: &HashMap<String, String>) -> Result<Settings, u8> {
    Settings::load(Source::File(path), env).map_err(|e| {
        report_settings_error(&e);
        exit::CONFIG
    })
}

fn report_settings_error(e: &SettingsError) {
    eprintln!("leadsync: invalid configuration: {e}");
}
