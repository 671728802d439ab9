//! `leadsync review`: the queue of decisions leadsync will not take alone (possible
//! duplicates, parked field conflicts), and the commands that take them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use chrono::Utc;
use clap::{Args, Subcommand};

use super::{exit, load_settings};
use crate::ledger::{Ledger, LedgerReader, Review, ReviewError, ReviewVerdict};

#[derive(Debug, Args)]
pub struct ReviewArgs {
    #[arg(long, short)]
    pub config: PathBuf,
    /// Print JSON.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    pub action: ReviewAction,
}

#[derive(Debug, Subcommand)]
pub enum ReviewAction {
    /// Open items (with `--all`, decided ones too).
    List {
        #[arg(long)]
        all: bool,
    },
    /// One item with both persons' fields.
    Show { id: i64 },
    /// Duplicate: merge the two persons. Conflict: take the parked incoming value.
    Accept { id: i64 },
    /// Duplicate: they are different people. Conflict: keep the person's current value.
    Reject { id: i64 },
}

pub fn run(args: ReviewArgs, env: &HashMap<String, String>) -> u8 {
    let settings = match load_settings(&args.config, env) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let path = settings.ledger_path.clone();
    match args.action {
        ReviewAction::List { all } => with_reader(&path, |r| {
            let items = r.reviews(all)?;
            if args.json {
                println!("{:#}", serde_json::json!(items));
            } else if items.is_empty() {
                println!("no {}review items", if all { "" } else { "open " });
            } else {
                for i in &items {
                    println!("{}", one_line(i));
                }
            }
            Ok(exit::OK)
        }),
        ReviewAction::Show { id } => with_reader(&path, |r| {
            let Some(item) = r.review(id)? else {
                eprintln!("leadsync: no review item {id}");
                return Ok(exit::FAILURE);
            };
            let persons: Vec<_> = [Some(item.lead_id.clone()), item.other_lead_id.clone()]
                .into_iter()
                .flatten()
                .map(|id| r.trace(&id).map(|t| (id, t)))
                .collect::<Result<_, _>>()?;
            if args.json {
                let p: Vec<_> = persons.iter().map(|(_, t)| t).collect();
                println!("{:#}", serde_json::json!({ "review": item, "persons": p }));
                return Ok(exit::OK);
            }
            println!("{}", one_line(&item));
            println!("  detail: {}", item.detail);
            for (id, t) in persons {
                println!("person {id}:");
                match t {
                    Some(t) => {
                        for f in t.fields {
                            println!("  {:<16} {}", f.field, f.value);
                        }
                        for l in t.links.iter().filter(|l| l.closed_at.is_none()) {
                            println!(
                                "  link {}:{}/{} ({})",
                                l.system, l.object_type, l.remote_id, l.reason
                            );
                        }
                    }
                    None => println!("  (merged or gone)"),
                }
            }
            Ok(exit::OK)
        }),
        ReviewAction::Accept { id } => decide(&settings, id, ReviewVerdict::Accept),
        ReviewAction::Reject { id } => decide(&settings, id, ReviewVerdict::Reject),
    }
}

fn one_line(i: &Review) -> String {
    match i.kind.as_str() {
        "duplicate" => format!(
            "#{} duplicate  {} ~ {}  score {:.3} ({})  [{}]",
            i.id,
            i.lead_id,
            i.other_lead_id.as_deref().unwrap_or("?"),
            i.score.unwrap_or(0.0),
            i.rule.as_deref().unwrap_or("?"),
            i.state
        ),
        _ => format!(
            "#{} conflict   {}  field {}  [{}]",
            i.id,
            i.lead_id,
            i.field.as_deref().unwrap_or("?"),
            i.state
        ),
    }
}

fn with_reader(
    path: &Path,
    f: impl FnOnce(&LedgerReader) -> Result<u8, crate::ledger::LedgerError>,
) -> u8 {
    let reader = match LedgerReader::open(path) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("leadsync: cannot read ledger {}: {e}", path.display());
            return exit::IOERR;
        }
    };
    f(&reader).unwrap_or_else(|e| {
        eprintln!("leadsync: cannot read ledger: {e}");
        exit::IOERR
    })
}

fn decide(settings: &crate::settings::Settings, id: i64, verdict: ReviewVerdict) -> u8 {
    let rules = match crate::app::rules_for(settings) {
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
    match ledger.decide_review(id, verdict, &rules, Utc::now()) {
        Ok(item) => {
            println!("{} ({})", one_line(&item), item.decision.as_deref().unwrap_or(""));
            exit::OK
        }
        Err(e @ (ReviewError::NotFound(_) | ReviewError::NotOpen { .. })) => {
            eprintln!("leadsync: {e}");
            exit::FAILURE
        }
        Err(ReviewError::Ledger(e)) => {
            eprintln!("leadsync: cannot write ledger: {e}");
            exit::IOERR
        }
    }
}
