//! Bulk seeding of persons with their governed lifecycle, for benchmarks and report tests:
//! one transaction, prepared statements, no ingest, reconciliation, links, pushes or audit.
//! What it writes is what the reconciler would have stored for a person known to no system
//! yet (`leads` and `lifecycle` rows), so every reader (`plan`, reports) sees ordinary
//! persons.

use chrono::{DateTime, Utc};
use rusqlite::params;

use super::{Ledger, Result, to_json, ts};
use crate::domain::{Field, Fields, normalize_email};
use crate::reconcile::lifecycle::PersonLifecycle;

/// One person to seed.
#[derive(Debug, Clone, PartialEq)]
pub struct SeedPerson {
    /// The ledger id; must not exist yet.
    pub id: String,
    pub fields: Fields,
    /// `None` (or a lifecycle without a stage): the person is not placed yet.
    pub lifecycle: Option<PersonLifecycle>,
}

impl Ledger {
    /// Insert `persons` in one transaction; returns how many. Memory stays flat: persons are
    /// written as the iterator yields them.
    ///
    /// # Errors
    /// SQLite failures (an id that exists already among them); nothing is committed then.
    pub fn seed_persons(
        &self,
        persons: impl IntoIterator<Item = SeedPerson>,
        now: DateTime<Utc>,
    ) -> Result<u64> {
        let at = ts(now);
        self.with_tx(|tx| {
            let mut lead = tx.prepare_cached(
                "INSERT INTO leads(id, email_norm, fields, provenance, created_at, updated_at)
                 VALUES (?1, ?2, ?3, '{}', ?4, ?4)",
            )?;
            let mut life = tx.prepare_cached(
                "INSERT INTO lifecycle(lead_id, stage, state, updated_at) VALUES (?1, ?2, ?3, ?4)",
            )?;
            let mut n = 0u64;
            for p in persons {
                let email = p.fields.get(&Field::Email).and_then(|e| normalize_email(e));
                lead.execute(params![p.id, email, to_json(&p.fields)?, at])?;
                if let Some(state) = &p.lifecycle
                    && let Some(stage) = state.stage
                {
                    life.execute(params![p.id, stage.as_str(), to_json(state)?, at])?;
                }
                n += 1;
            }
            Ok(n)
        })
    }
}
