//! `leadsync erase <email>`: erase a person everywhere leadsync reaches (a GDPR erasure
//! request), and make sure they are never imported again.
//!
//! In order: ask every configured system for the records that carry the address (linked to a
//! ledger person or not); scrub the person from the ledger and tombstone their address, record
//! ids and ledger ids in one transaction (from then on no poll or webhook brings them back,
//! even while a daemon runs beside this command); then delete every record found or linked,
//! through each vendor's deletion endpoint (HubSpot GDPR delete; Salesforce delete, to the
//! recycle bin). The report says what each system answered. Erasing again finds nothing and
//! succeeds, so a failed run is simply repeated.

use std::collections::HashMap;
use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{exit, load_settings};
use crate::app::build_connector;
use crate::connectors::erase::{Erase, RecordErasure};
use crate::domain::{ConnectorKind, RemoteId, SystemName};
use crate::ledger::{Ledger, erasure_email};
use crate::settings::Settings;

/// sysexits `EX_USAGE`: the command line is wrong (not an address, or `--yes` missing).
const USAGE: u8 = 64;

#[derive(Debug, clap::Args)]
pub struct EraseArgs {
    /// The person's email address.
    pub email: String,
    #[arg(long, short)]
    pub config: PathBuf,
    /// Do not ask for confirmation (required when stdin is not a terminal).
    #[arg(long)]
    pub yes: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// What the ledger did.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct LedgerReport {
    /// Persons removed (persons merged into them included).
    pub persons: usize,
    /// Remote record ids tombstoned.
    pub records_blocked: usize,
    /// The address had been erased before.
    pub already_erased: bool,
}

/// One record a vendor refused or failed to delete.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FailedRecord {
    pub record: String,
    pub code: String,
}

/// What one system answered.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct SystemReport {
    pub system: String,
    pub kind: String,
    /// Records the vendor reported for the address.
    pub found: usize,
    /// Records deleted (`object_type/id`).
    pub deleted: Vec<String>,
    /// Records the vendor no longer knew (deleted already).
    pub not_found: Vec<String>,
    /// Records the vendor refused or failed to delete, with its error code.
    pub failed: Vec<FailedRecord>,
    /// The error code when the vendor could not be searched or asked at all.
    pub error: Option<String>,
    /// What the vendor keeps after a delete, when that is worth saying.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<&'static str>,
}

impl SystemReport {
    pub fn failed(&self) -> bool {
        self.error.is_some() || !self.failed.is_empty()
    }
}

/// The whole answer of `leadsync erase`.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct EraseReport {
    pub ledger: LedgerReport,
    pub systems: Vec<SystemReport>,
}

impl EraseReport {
    /// Every system answered and deleted (or no longer had) every record.
    pub fn ok(&self) -> bool {
        self.systems.iter().all(|s| !s.failed())
    }

    /// Neither the ledger nor any system held anything of the person.
    pub fn nothing_found(&self) -> bool {
        self.ledger.persons == 0
            && self.ledger.records_blocked == 0
            && self.systems.iter().all(|s| {
                s.found == 0 && s.deleted.is_empty() && s.failed.is_empty() && s.error.is_none()
            })
    }
}

const SALESFORCE_NOTE: &str = "Salesforce keeps deleted records in its recycle bin for about \
                               15 days unless the bin is emptied";

/// Erase the person with this email address at every configured system and in the ledger.
///
/// # Errors
/// The address is not an email address, a connector cannot be built, or the ledger cannot be
/// opened or written (nothing was deleted at any vendor then). Vendor failures are not errors:
/// they are in the report.
pub async fn erase_person(
    settings: &Settings,
    email: &str,
    now: DateTime<Utc>,
) -> anyhow::Result<EraseReport> {
    let Some(norm) = erasure_email(email) else {
        anyhow::bail!("not an email address");
    };
    let mut systems = Vec::new();
    for s in &settings.systems {
        let connector = build_connector(s)
            .with_context(|| format!("cannot build the connector of {}", s.name))?;
        systems.push((s.name.clone(), s.kind, connector));
    }

    // 1. What each vendor holds for the address.
    let mut reports: Vec<SystemReport> = Vec::new();
    let mut found: Vec<(SystemName, RemoteId)> = Vec::new();
    for (name, kind, connector) in &systems {
        let mut report = SystemReport {
            system: name.to_string(),
            kind: kind.to_string(),
            ..SystemReport::default()
        };
        match connector.find_by_email(&norm).await {
            Ok(ids) => {
                report.found = ids.len();
                found.extend(ids.into_iter().map(|r| (name.clone(), r)));
            }
            Err(e) => {
                tracing::warn!(system = %name, error_code = %e.code(), "erase: search failed");
                report.error = Some(e.code());
            }
        }
        reports.push(report);
    }

    // 2. The ledger: scrub and tombstone before any delete, so nothing re-imports the person
    // while the deletes run.
    let ledger = Ledger::open(&settings.ledger_path)
        .with_context(|| format!("cannot open ledger {}", settings.ledger_path.display()))?;
    let erasure = {
        let found = found.clone();
        let norm = norm.clone();
        tokio::task::spawn_blocking(move || ledger.erase_person(&norm, &found, now))
            .await
            .context("ledger task failed")?
            .context("cannot erase the person from the ledger")?
    };

    // 3. Delete every record found or linked.
    for ((name, kind, connector), report) in systems.iter().zip(reports.iter_mut()) {
        let ids: Vec<RemoteId> =
            erasure.to_delete.iter().filter(|(s, _)| s == name).map(|(_, r)| r.clone()).collect();
        if ids.is_empty() {
            continue;
        }
        match connector.erase(&ids).await {
            Ok(outcomes) => {
                for (remote, outcome) in outcomes {
                    let record = remote.to_string();
                    match outcome {
                        RecordErasure::Deleted => report.deleted.push(record),
                        RecordErasure::NotFound => report.not_found.push(record),
                        RecordErasure::Failed { code } => {
                            report.failed.push(FailedRecord { record, code });
                        }
                    }
                }
            }
            Err(e) => {
                tracing::warn!(system = %name, error_code = %e.code(), "erase: deletes failed");
                report.error.get_or_insert(e.code());
                report.failed.extend(
                    ids.iter().map(|r| FailedRecord { record: r.to_string(), code: e.code() }),
                );
            }
        }
        if *kind == ConnectorKind::Salesforce && !report.deleted.is_empty() {
            report.note = Some(SALESFORCE_NOTE);
        }
    }
    Ok(EraseReport {
        ledger: LedgerReport {
            persons: erasure.persons,
            records_blocked: erasure.records_blocked,
            already_erased: erasure.already_erased,
        },
        systems: reports,
    })
}

/// Ask on the terminal; true only for an explicit "yes".
fn confirmed(systems: &str) -> bool {
    let mut err = std::io::stderr();
    let _ = write!(
        err,
        "This deletes every record with this address at {systems} and scrubs it from the \
         ledger. It cannot be undone. Type yes to continue: "
    );
    let _ = err.flush();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).is_ok() && line.trim() == "yes"
}

pub async fn run(args: EraseArgs, env: &HashMap<String, String>) -> u8 {
    let settings = match load_settings(&args.config, env) {
        Ok(s) => s,
        Err(code) => return code,
    };
    if erasure_email(&args.email).is_none() {
        eprintln!("leadsync: erase: the argument is not an email address");
        return USAGE;
    }
    if !args.yes {
        if !std::io::stdin().is_terminal() {
            eprintln!(
                "leadsync: erase: refusing to erase without --yes when stdin is not a terminal"
            );
            return USAGE;
        }
        let names: Vec<String> = settings.systems.iter().map(|s| s.name.to_string()).collect();
        if !confirmed(&names.join(", ")) {
            eprintln!("leadsync: erase: not confirmed; nothing was changed");
            return exit::FAILURE;
        }
    }
    let report = match erase_person(&settings, &args.email, Utc::now()).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("leadsync: erase: {e:#}");
            return exit::IOERR;
        }
    };
    if args.json {
        match serde_json::to_string_pretty(&report) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("leadsync: erase: cannot encode the report: {e}");
                return exit::SOFTWARE;
            }
        }
    } else {
        print_report(&report);
    }
    if report.ok() { exit::OK } else { exit::FAILURE }
}

fn list(items: &[String]) -> String {
    if items.is_empty() { "none".into() } else { items.join(", ") }
}

fn print_report(r: &EraseReport) {
    if r.nothing_found() {
        let again = if r.ledger.already_erased { " (erased before)" } else { "" };
        println!("nothing found{again}");
        return;
    }
    println!(
        "ledger: {} person(s) erased, {} record id(s) blocked{}",
        r.ledger.persons,
        r.ledger.records_blocked,
        if r.ledger.already_erased { " (the address was erased before)" } else { "" }
    );
    for s in &r.systems {
        println!("{} ({}): {} found by email", s.system, s.kind, s.found);
        if let Some(code) = &s.error {
            println!("  error:     {code}");
        }
        println!("  deleted:   {}", list(&s.deleted));
        if !s.not_found.is_empty() {
            println!("  not found: {}", list(&s.not_found));
        }
        for f in &s.failed {
            println!("  failed:    {} ({})", f.record, f.code);
        }
        if let Some(note) = s.note {
            println!("  note:      {note}");
        }
    }
}
