//! `leadsync duplicates`: persons with more than one open record in one system (two HubSpot
//! contacts, two Salesforce leads), read from the ledger. For each record: how it was linked
//! (reason, fuzzy rule and score), since when, and what happens to it: kept and reported (the
//! default), merged into the primary at the vendor (`identity.merge_at_vendor`), or why not.
//! With merging off it says what turning it on would merge, so operators can look first.
//!
//! A top-level command rather than a `review` subcommand: these are not decisions waiting for
//! a reviewer (the records are linked already, and there is nothing to accept or reject); it is
//! a report beside `status` and `trace`.

use std::collections::HashMap;
use std::path::PathBuf;

use clap::Args;
use serde::Serialize;

use super::{exit, load_settings};
use crate::domain::SystemName;
use crate::ledger::{DuplicateGroup, DuplicateLink, Ledger, LedgerReader, is_fuzzy};
use crate::settings::Settings;

#[derive(Debug, Args)]
pub struct DuplicatesArgs {
    #[arg(long, short)]
    pub config: PathBuf,
    /// Only this system (its configured name).
    #[arg(long)]
    pub system: Option<String>,
    /// Put failed vendor merges (of `--system`, or all) back to pending, so the running daemon
    /// asks the vendor again; prints how many. For after the cause was fixed.
    #[arg(long)]
    pub retry_failed: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// What happens to one non-primary record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// `would_merge` (merging is off for the system: what turning it on would do),
    /// `will_merge` (on, not asked yet), `merge_pending` (asked, or waiting for a retry),
    /// `merged` (the vendor merged; the link closes once the merge is read back),
    /// `merge_failed` (not retried; `--retry-failed` asks again), `not_mergeable`,
    /// `not_merged_fuzzy` (a fuzzy rule made the link; `identity.merge_fuzzy_links` is off).
    pub action: &'static str,
    /// The same in words, for the table.
    pub note: String,
}

#[derive(Debug, Serialize)]
struct Other<'a> {
    #[serde(flatten)]
    link: &'a DuplicateLink,
    plan: Plan,
}

#[derive(Debug, Serialize)]
struct Group<'a> {
    lead_id: &'a str,
    system: &'a str,
    primary: &'a DuplicateLink,
    others: Vec<Other<'a>>,
}

/// The plan for `other` of `g` under these settings.
pub fn plan(settings: &Settings, g: &DuplicateGroup, other: &DuplicateLink) -> Plan {
    let primary = format!("{}/{}", g.primary.object_type, g.primary.remote_id);
    let on = settings.identity.merge_at_vendor.iter().any(|s| s.as_str() == g.system);
    let not = |note: String| Plan { action: "not_mergeable", note };
    if other.object_type != g.primary.object_type {
        return not(format!("a {} cannot be merged into a {}", other.object_type, primary));
    }
    if let Some(m) = &other.merge {
        let answer = m.answer.as_deref().unwrap_or("");
        return match m.state.as_str() {
            "done" => Plan {
                action: "merged",
                note: format!(
                    "merged into {primary} at the vendor ({answer}, {}); the link closes when \
                     the merge is read back",
                    m.updated_at
                ),
            },
            "failed" => Plan {
                action: "merge_failed",
                note: format!(
                    "merge failed after {} attempt(s): {}; not retried (--retry-failed asks again)",
                    m.attempts,
                    if answer.is_empty() { m.error_code.as_deref().unwrap_or("") } else { answer }
                ),
            },
            _ => Plan {
                action: "merge_pending",
                note: format!(
                    "merge into {primary} asked for ({} attempt(s)), next try after {}",
                    m.attempts, m.next_attempt_at
                ),
            },
        };
    }
    if !settings.identity.merge_fuzzy_links && (is_fuzzy(&g.primary) || is_fuzzy(other)) {
        return Plan {
            action: "not_merged_fuzzy",
            note: "linked by a fuzzy rule: kept and reported (merge it in the vendor's UI, or set \
                   identity.merge_fuzzy_links = true)"
                .into(),
        };
    }
    if on {
        Plan { action: "will_merge", note: format!("will be merged into {primary} at the vendor") }
    } else {
        Plan {
            action: "would_merge",
            note: format!(
                "kept and reported; with merge_at_vendor naming {:?} it would be merged into \
                 {primary}",
                g.system
            ),
        }
    }
}

fn retry_failed(settings: &Settings, system: Option<&SystemName>) -> u8 {
    let reset = Ledger::open(&settings.ledger_path)
        .and_then(|l| l.retry_failed_merges(system, chrono::Utc::now()));
    match reset {
        Ok(n) => {
            println!("{n} failed vendor merge(s) put back to pending");
            exit::OK
        }
        Err(e) => {
            eprintln!("leadsync: cannot update ledger {}: {e}", settings.ledger_path.display());
            exit::IOERR
        }
    }
}

fn how(l: &DuplicateLink) -> String {
    match (&l.rule, l.score) {
        (Some(rule), Some(score)) => format!("{} (rule {rule}, score {score:.2})", l.reason),
        _ => l.reason.clone(),
    }
}

pub fn run(args: &DuplicatesArgs, env: &HashMap<String, String>) -> u8 {
    let settings = match load_settings(&args.config, env) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let system = args.system.as_ref().map(|s| SystemName(s.clone()));
    if let Some(s) = &system
        && !settings.systems.iter().any(|c| &c.name == s)
    {
        eprintln!("leadsync: no system is named {:?}", s.as_str());
        return exit::FAILURE;
    }
    if args.retry_failed {
        return retry_failed(&settings, system.as_ref());
    }
    let groups = match LedgerReader::open(&settings.ledger_path)
        .and_then(|r| r.duplicates(system.as_ref()))
    {
        Ok(g) => g,
        Err(e) => {
            eprintln!("leadsync: cannot read ledger {}: {e}", settings.ledger_path.display());
            return exit::IOERR;
        }
    };
    let report: Vec<Group<'_>> = groups
        .iter()
        .map(|g| Group {
            lead_id: &g.lead_id,
            system: &g.system,
            primary: &g.primary,
            others: g
                .others
                .iter()
                .map(|o| Other { link: o, plan: plan(&settings, g, o) })
                .collect(),
        })
        .collect();
    let merge_at_vendor: Vec<&str> =
        settings.identity.merge_at_vendor.iter().map(SystemName::as_str).collect();
    if args.json {
        let v = serde_json::json!({ "merge_at_vendor": merge_at_vendor, "duplicates": report });
        println!("{v:#}");
        return exit::OK;
    }
    if report.is_empty() {
        println!("no person has more than one record in one system");
        return exit::OK;
    }
    for g in &report {
        println!("person {} in {}: {} records", g.lead_id, g.system, g.others.len() + 1);
        let p = g.primary;
        println!(
            "  primary {}/{}  linked {} by {}",
            p.object_type,
            p.remote_id,
            p.linked_at,
            how(p)
        );
        for o in &g.others {
            let l = o.link;
            println!(
                "  other   {}/{}  linked {} by {}",
                l.object_type,
                l.remote_id,
                l.linked_at,
                how(l)
            );
            println!("          {}", o.plan.note);
        }
    }
    let mut per_system: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for g in &report {
        *per_system.entry(g.system).or_default() += 1;
    }
    let counts: Vec<String> = per_system.iter().map(|(s, n)| format!("{s}: {n}")).collect();
    println!(
        "{} person(s) with several records in one system ({}); merge_at_vendor: {}",
        report.len(),
        counts.join(", "),
        if merge_at_vendor.is_empty() { "off".to_string() } else { merge_at_vendor.join(", ") }
    );
    exit::OK
}
