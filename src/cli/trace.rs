//! `leadsync trace`: why a person looks the way they do. The operator names the person, so
//! values (emails included) are printed here; they never go to logs.

use std::collections::HashMap;
use std::path::Path;

use super::{exit, load_settings};
use crate::ledger::LedgerReader;

pub fn run(config: &Path, env: &HashMap<String, String>, query: &str, json: bool) -> u8 {
    let settings = match load_settings(config, env) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let reader = match LedgerReader::open(&settings.ledger_path) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("leadsync: cannot read ledger {}: {e}", settings.ledger_path.display());
            return exit::IOERR;
        }
    };
    let trace = match reader.trace(query) {
        Ok(Some(t)) => t,
        Ok(None) => {
            eprintln!(
                "leadsync: no person matches {query:?} (an email, a ledger id or system:remote-id)"
            );
            return exit::FAILURE;
        }
        Err(e) => {
            eprintln!("leadsync: cannot read ledger: {e}");
            return exit::IOERR;
        }
    };
    if json {
        println!("{:#}", serde_json::json!(trace));
        return exit::OK;
    }
    println!("person {}", trace.lead_id);
    if !trace.merged_from.is_empty() {
        println!("  merged from: {}", trace.merged_from.join(", "));
    }
    println!("fields:");
    for f in &trace.fields {
        let why = f.provenance.as_ref().map_or_else(
            || "(no provenance)".to_string(),
            |p| format!("from {} at {} by {}", p.system, p.at.format("%Y-%m-%d %H:%M:%S"), p.rule),
        );
        println!("  {:<16} {:<32} {why}", f.field, f.value);
    }
    println!("links:");
    for l in &trace.links {
        let state = match (&l.closed_at, &l.closed_reason) {
            (Some(at), reason) => format!("closed {at} ({})", reason.as_deref().unwrap_or("?")),
            (None, _) => "open".to_string(),
        };
        println!(
            "  {}:{}/{}  linked {} ({})  {state}",
            l.system, l.object_type, l.remote_id, l.created_at, l.reason
        );
    }
    println!("timeline:");
    for e in &trace.events {
        // Events of a person folded into this one name it.
        let of = match e.lead.as_deref() {
            Some(lead) if lead != trace.lead_id => format!("[{lead}] "),
            _ => String::new(),
        };
        println!(
            "  {}  {:<18} {:<10} {of}{}",
            e.at,
            e.kind,
            e.system.as_deref().unwrap_or("-"),
            e.detail
        );
    }
    exit::OK
}
