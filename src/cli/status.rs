//! `leadsync status`: what the daemon has done, read from the ledger without disturbing it.

use std::collections::HashMap;
use std::path::Path;

use super::{exit, load_settings};
use crate::ledger::LedgerReader;

pub fn run(config: &Path, env: &HashMap<String, String>, json: bool) -> u8 {
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
    let (status, totals) = match (reader.status(), reader.totals()) {
        (Ok(s), Ok(t)) => (s, t),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("leadsync: cannot read ledger: {e}");
            return exit::IOERR;
        }
    };
    if json {
        let v = serde_json::json!({ "persons": totals.persons, "systems": status });
        println!("{v:#}");
        return exit::OK;
    }
    println!("ledger: {} ({} persons)", settings.ledger_path.display(), totals.persons);
    for s in status {
        println!("{} ({}, {})", s.system, s.kind, s.role);
        println!("  linked records:   {}", s.linked_records);
        println!("  cursor:           {}", s.cursor.as_deref().unwrap_or("(none yet)"));
        println!("  last good poll:   {}", s.last_poll_ok_at.as_deref().unwrap_or("never"));
        println!("  inbox pending:    {}", s.inbox_pending);
        println!("  outbox pending:   {}", s.outbox_pending);
        println!("  dead records:     {}", s.dead);
        match (&s.last_error, &s.last_error_at) {
            (Some(e), Some(at)) => println!("  last error:       {at}: {e}"),
            _ => println!("  last error:       none"),
        }
    }
    exit::OK
}
