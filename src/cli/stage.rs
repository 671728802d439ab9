//! `leadsync stage`: an operator's named lifecycle transition (recycle, disqualify, reopen)
//! with a reason code, checked against the contract's transition table. Applied moves are
//! audited and pushed to every system by the running daemon; refused ones are audited with
//! the table's reason and change nothing.

use std::collections::HashMap;
use std::path::PathBuf;

use chrono::Utc;
use clap::{Args, ValueEnum};

use super::{exit, load_settings};
use crate::contract::lifecycle::{LifecycleStage, NamedMove};
use crate::ledger::{Ledger, NamedOutcome};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Move {
    Recycle,
    Disqualify,
    Reopen,
}

#[derive(Debug, Args)]
pub struct StageArgs {
    #[arg(long, short)]
    pub config: PathBuf,
    /// An email, a ledger id or `system:remote-id` (as in `leadsync trace`).
    pub query: String,
    #[arg(value_enum)]
    pub action: Move,
    /// A reason code from the transition's configured list (contract.lifecycle.<name>.reasons).
    #[arg(long)]
    pub reason: String,
    /// The stage to move to, when the transition allows several from the person's stage
    /// (reopen: `lead` or `recycled`).
    #[arg(long)]
    pub to: Option<String>,
}

pub fn run(args: &StageArgs, env: &HashMap<String, String>) -> u8 {
    let settings = match load_settings(&args.config, env) {
        Ok(s) => s,
        Err(code) => return code,
    };
    if settings.contract.is_none() {
        eprintln!("leadsync: no [contract] section in the configuration: the lifecycle is off");
        return exit::CONFIG;
    }
    let to = match args.to.as_deref().map(|s| (s, LifecycleStage::parse(s))) {
        None => None,
        Some((_, Some(st))) => Some(st),
        Some((s, None)) => {
            eprintln!("leadsync: unknown stage {s:?}");
            return exit::FAILURE;
        }
    };
    let name = match args.action {
        Move::Recycle => NamedMove::Recycle,
        Move::Disqualify => NamedMove::Disqualify,
        Move::Reopen => NamedMove::Reopen,
    };
    let rules = match crate::app::rules_for(&settings) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("leadsync: invalid configuration: {e}");
            return exit::CONFIG;
        }
    };
    let ledger = match Ledger::open(&settings.ledger_path) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("leadsync: cannot open ledger {}: {e}", settings.ledger_path.display());
            return exit::IOERR;
        }
    };
    match ledger.named_transition(&args.query, name, &args.reason, to, &rules, Utc::now()) {
        Ok(NamedOutcome::Applied { lead_id, transition }) => {
            println!(
                "person {lead_id}: {} -> {} by {} ({}); pushes planned",
                transition.from, transition.to, transition.via, args.reason
            );
            exit::OK
        }
        Ok(NamedOutcome::Refused { lead_id, from, to, refusal }) => {
            eprintln!("leadsync: person {lead_id}: {name} {from} -> {to} refused: {refusal}");
            exit::FAILURE
        }
        Ok(NamedOutcome::NotFound) => {
            eprintln!(
                "leadsync: no person matches {:?} (an email, a ledger id or system:remote-id)",
                args.query
            );
            exit::FAILURE
        }
        Err(e) => {
            eprintln!("leadsync: cannot write ledger: {e}");
            exit::IOERR
        }
    }
}
