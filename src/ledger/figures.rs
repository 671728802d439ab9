//! Matching figures for `leadsync bench`: how links were made, the review queue by state, and
//! where seeded duplicates ended up; and what `bench contract`'s sweep wrote. Read-only; here
//! because only the ledger runs SQL.

use std::collections::{HashMap, HashSet};

use rusqlite::params;

use super::{LedgerReader, Result};

/// A record the benchmark seeded as a fuzzy duplicate, and the original it duplicates.
#[derive(Debug, Clone, Copy)]
pub struct SeededDuplicate<'a> {
    pub system: &'a str,
    pub remote_id: &'a str,
    pub original_system: &'a str,
    pub original_id: &'a str,
    /// Both records are in the same system.
    pub within: bool,
}

/// What matching made of a run.
#[derive(Debug, Default)]
pub struct MatchFigures {
    /// Open links per link reason, most frequent first.
    pub links_by_reason: Vec<(String, i64)>,
    /// Review items per (kind, state).
    pub reviews: Vec<(String, String, i64)>,
    /// Duplicates whose record ended on the same person as their original's.
    pub joined: usize,
    /// Of those, duplicates within one system.
    pub joined_within: usize,
    /// Duplicates in an open duplicate review with their original's person.
    pub in_review: usize,
}

/// What a re-evaluation sweep left in the ledger (`bench contract` seeds no outbox or audit
/// rows), so that runs of different builds can be compared.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepWritten {
    pub outbox: i64,
    /// Outbox rows carrying stage dates.
    pub outbox_dated: i64,
    pub audit: i64,
    /// Audit rows of kind `stage` (moves).
    pub audit_stage: i64,
}

impl LedgerReader {
    /// # Errors
    /// SQLite failures.
    pub fn sweep_written(&self) -> Result<SweepWritten> {
        let count = |sql: &str| self.conn.query_row(sql, [], |r| r.get::<_, i64>(0));
        Ok(SweepWritten {
            outbox: count("SELECT COUNT(*) FROM outbox")?,
            outbox_dated: count("SELECT COUNT(*) FROM outbox WHERE stage_dates IS NOT NULL")?,
            audit: count("SELECT COUNT(*) FROM audit")?,
            audit_stage: count("SELECT COUNT(*) FROM audit WHERE kind = 'stage'")?,
        })
    }

    /// # Errors
    /// SQLite failures.
    pub fn match_figures<'a>(
        &self,
        duplicates: impl IntoIterator<Item = SeededDuplicate<'a>>,
    ) -> Result<MatchFigures> {
        let mut out = MatchFigures::default();
        let mut stmt = self.conn.prepare(
            "SELECT reason, count(*) FROM links WHERE closed_at IS NULL
             GROUP BY reason ORDER BY 2 DESC, 1",
        )?;
        out.links_by_reason =
            stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect::<rusqlite::Result<_>>()?;
        let mut stmt = self.conn.prepare(
            "SELECT kind, state, count(*) FROM reviews GROUP BY kind, state ORDER BY 1, 2",
        )?;
        out.reviews = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let duplicates: Vec<SeededDuplicate<'a>> = duplicates.into_iter().collect();
        // The seeded records' persons, read in one pass over the open links: a lookup by
        // (system, remote id) without the object type cannot use the links' unique index and
        // scanned every link of the system per record (minutes at 100,000 leads).
        let wanted: HashSet<(&str, &str)> = duplicates
            .iter()
            .flat_map(|d| [(d.system, d.remote_id), (d.original_system, d.original_id)])
            .collect();
        let mut persons: HashMap<(String, String), String> = HashMap::new();
        {
            let mut stmt = self
                .conn
                .prepare("SELECT system, remote_id, lead_id FROM links WHERE closed_at IS NULL")?;
            let rows = stmt.query_map([], |r| {
                Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?))
            })?;
            for row in rows {
                let (system, remote_id, lead) = row?;
                if wanted.contains(&(system.as_str(), remote_id.as_str())) {
                    persons.entry((system, remote_id)).or_insert(lead);
                }
            }
        }
        let mut review = self.conn.prepare(
            "SELECT count(*) FROM reviews WHERE kind = 'duplicate' AND state = 'open'
             AND ((lead_id = ?1 AND other_lead_id = ?2) OR (lead_id = ?2 AND other_lead_id = ?1))",
        )?;
        for d in duplicates {
            let person = |system: &str, id: &str| {
                persons.get(&(system.to_string(), id.to_string())).cloned()
            };
            let (Some(a), Some(b)) =
                (person(d.system, d.remote_id), person(d.original_system, d.original_id))
            else {
                continue;
            };
            if a == b {
                out.joined += 1;
                if d.within {
                    out.joined_within += 1;
                }
            } else if review.query_row(params![a, b], |r| r.get::<_, i64>(0))? > 0 {
                out.in_review += 1;
            }
        }
        Ok(out)
    }
}
