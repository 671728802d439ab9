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
    // Ledgers not yet migrated by a daemon lack these tables: the rest of the status stands.
    let duplicates = reader.duplicate_counts().unwrap_or_default();
    let merges = reader.vendor_merge_counts().unwrap_or_default();
    let closed_loop = reader.closed_loop_status().unwrap_or_default();
    let reviews = reader.open_review_counts().unwrap_or_default();
    let held = if settings.identity.review_holds_creates {
        reader.review_hold_counts().unwrap_or_default()
    } else {
        Default::default()
    };
    if json {
        let v = serde_json::json!({
            "persons": totals.persons,
            "open_reviews": reviews,
            "creates_held_for_review": held,
            "systems": status,
            "same_system_duplicates": duplicates,
            "vendor_merges": merges,
            "closed_loop": closed_loop,
        });
        println!("{v:#}");
        return exit::OK;
    }
    println!("ledger: {} ({} persons)", settings.ledger_path.display(), totals.persons);
    let open = |kind: &str| reviews.get(kind).copied().unwrap_or(0);
    println!(
        "open reviews: {} possible duplicates, {} conflicts (leadsync review list)",
        open("duplicate"),
        open("conflict")
    );
    for s in status {
        println!("{} ({}, {})", s.system, s.kind, s.role);
        println!("  linked records:   {}", s.linked_records);
        println!("  cursor:           {}", short_cursor(s.cursor.as_deref()));
        println!("  last good poll:   {}", s.last_poll_ok_at.as_deref().unwrap_or("never"));
        println!("  inbox pending:    {}", s.inbox_pending);
        println!("  outbox pending:   {}", s.outbox_pending);
        println!("  dead records:     {}", s.dead);
        println!(
            "  webhook notices:  {} received, {} pending",
            s.notices_received, s.notices_pending
        );
        println!(
            "  same-system dups: {} persons (leadsync duplicates)",
            duplicates.get(&s.system).copied().unwrap_or(0)
        );
        if settings.identity.review_holds_creates {
            println!(
                "  held for review:  {} persons not created here while a review is open",
                held.get(&s.system).copied().unwrap_or(0)
            );
        }
        if let Some(m) = merges.get(&s.system) {
            let n = |state: &str| m.get(state).copied().unwrap_or(0);
            println!(
                "  vendor merges:    {} done, {} pending, {} failed",
                n("done"),
                n("pending"),
                n("failed")
            );
        }
        match (&s.last_error, &s.last_error_at) {
            (Some(e), Some(at)) => println!("  last error:       {at}: {e}"),
            _ => println!("  last error:       none"),
        }
        if let Some(c) = closed_loop.iter().find(|c| c.system == s.system) {
            println!(
                "  closed loop:      {} opportunities, {} campaign touches",
                c.opportunities, c.touches
            );
            println!("    cursor:         {}", short_cursor(c.cursor.as_deref()));
            println!("    last good poll: {}", c.last_ok_at.as_deref().unwrap_or("never"));
            match (&c.last_error, &c.last_error_at) {
                (Some(e), Some(at)) => println!("    last error:     {at}: {e}"),
                _ => println!("    last error:     none"),
            }
        }
    }
    exit::OK
}

/// Cursors can carry a window of recently seen ids; the table shows their head (`--json` has
/// them whole).
fn short_cursor(c: Option<&str>) -> String {
    const MAX: usize = 96;
    match c {
        None => "(none yet)".into(),
        Some(c) if c.len() <= MAX => c.into(),
        Some(c) => {
            let cut = (0..=MAX).rev().find(|i| c.is_char_boundary(*i)).unwrap_or(0);
            format!("{}… ({} bytes; --json shows it whole)", &c[..cut], c.len())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::short_cursor;

    #[test]
    fn long_cursors_are_shortened() {
        assert_eq!(short_cursor(None), "(none yet)");
        assert_eq!(short_cursor(Some("{\"ts\":1}")), "{\"ts\":1}");
        let long = "x".repeat(500);
        let s = short_cursor(Some(&long));
        assert!(s.starts_with(&"x".repeat(96)) && s.contains("500 bytes"));
    }
}
