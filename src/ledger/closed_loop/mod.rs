//! Closed-loop storage: opportunities with the people on them, campaign touches and sales
//! activities, as each system reported them, plus the closed-loop poll cursor of each system.
//! Activities also count as contact attempts on the SLA clocks ([`activities`]).
//!
//! **Architecture Invariant:** a closed-loop cursor commits in the same transaction as the
//! rows of the page it produced (see [`Ledger::store_closed_loop`]).
//!
//! Rows keep remote ids, never ledger persons: who a touch or an opportunity belongs to is
//! decided when a report runs, through `links` and merges ([`attribution`]). A record that is
//! linked or merged after its touches were stored is therefore still attributed, and nothing
//! here has to be rewritten when identity changes.
//!
//! Upserts are idempotent: storing a page again changes no row, and a state older than the
//! stored one (the connectors re-read an overlap window) is skipped.

mod activities;
pub mod attribution;

pub(in crate::ledger) use activities::{Countable, mark_counted, uncounted_of_person};

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, Transaction, params};

use super::{Ledger, LedgerError, Result, parse_ts, ts};
use crate::connectors::Cursor;
use crate::domain::SystemName;
use crate::domain::closed_loop::{Activity, CampaignTouch, Opportunity, OpportunityContact};

/// What one [`Ledger::store_closed_loop`] call changed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ClosedLoopStored {
    /// Opportunities inserted, or whose row or contact list changed.
    pub opportunities: usize,
    /// Touches inserted or changed.
    pub touches: usize,
    /// Activities inserted or changed.
    pub activities: usize,
    /// Activities an SLA clock counted as a contact attempt in this call.
    pub attempts: usize,
    /// Objects identical to what was stored already (a re-read).
    pub unchanged: usize,
    /// Objects older than the stored state of the same record, skipped.
    pub stale: usize,
}

/// Closed-loop state of one system, for status output and tests.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ClosedLoopStatus {
    pub system: String,
    pub cursor: Option<String>,
    pub opportunities: i64,
    pub touches: i64,
    pub last_ok_at: Option<String>,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
}

fn flag(b: bool) -> i64 {
    i64::from(b)
}

impl Ledger {
    /// The closed-loop poll cursor of a system (separate from its lead poll cursor).
    ///
    /// # Errors
    /// SQLite failures.
    pub fn closed_loop_cursor(&self, system: &SystemName) -> Result<Cursor> {
        let conn = self.conn.lock().map_err(|_| LedgerError::Poisoned)?;
        let v: Option<Option<String>> = conn
            .query_row(
                "SELECT value FROM closed_loop_cursors WHERE system = ?1",
                [system.as_str()],
                |r| r.get(0),
            )
            .optional()?;
        Ok(Cursor(v.flatten()))
    }

    /// Store one closed-loop page of `system` and, in the same transaction, the cursor it was
    /// read up to (when `cursor` holds a value). Storing the same page twice changes nothing;
    /// an object older than the stored state of its record is skipped. A done activity not
    /// counted before counts as a contact attempt on its person's SLA clock, in the same
    /// transaction ([`activities`]).
    ///
    /// # Errors
    /// SQLite failures; nothing is committed then (neither rows nor cursor).
    pub fn store_closed_loop(
        &self,
        system: &SystemName,
        opportunities: &[Opportunity],
        touches: &[CampaignTouch],
        activities: &[Activity],
        cursor: Option<&Cursor>,
        now: DateTime<Utc>,
    ) -> Result<ClosedLoopStored> {
        self.with_tx(|tx| {
            let mut out = ClosedLoopStored::default();
            for o in opportunities {
                match upsert_opportunity(tx, system, o, now)? {
                    Applied::Changed => out.opportunities += 1,
                    Applied::Unchanged => out.unchanged += 1,
                    Applied::Stale => out.stale += 1,
                }
            }
            for t in touches {
                match upsert_touch(tx, system, t, now)? {
                    Applied::Changed => out.touches += 1,
                    Applied::Unchanged => out.unchanged += 1,
                    Applied::Stale => out.stale += 1,
                }
            }
            for a in activities {
                let (applied, attempt) = activities::upsert_activity(tx, system, a, now)?;
                match applied {
                    Applied::Changed => out.activities += 1,
                    Applied::Unchanged => out.unchanged += 1,
                    Applied::Stale => out.stale += 1,
                }
                out.attempts += usize::from(attempt);
            }
            if let Some(Cursor(Some(value))) = cursor {
                tx.prepare_cached(
                    "INSERT INTO closed_loop_cursors(system, value, updated_at, last_ok_at)
                     VALUES (?1, ?2, ?3, ?3)
                     ON CONFLICT(system) DO UPDATE SET value = excluded.value,
                        updated_at = excluded.updated_at, last_ok_at = excluded.last_ok_at",
                )?
                .execute(params![system.as_str(), value, ts(now)])?;
            }
            Ok(out)
        })
    }

    /// Note the latest closed-loop poll error of a system (a message without PII). Kept apart
    /// from the lead poll's status so that one does not hide the other.
    ///
    /// # Errors
    /// SQLite failures.
    pub fn record_closed_loop_error(
        &self,
        system: &SystemName,
        error: &str,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.with_tx(|tx| {
            tx.execute(
                "INSERT INTO closed_loop_cursors(system, updated_at, last_error, last_error_at)
                 VALUES (?1, ?2, ?3, ?2)
                 ON CONFLICT(system) DO UPDATE SET last_error = excluded.last_error,
                    last_error_at = excluded.last_error_at",
                params![system.as_str(), ts(now), error],
            )?;
            Ok(())
        })
    }

    /// Closed-loop state per system that has any: cursor, stored counts, last error.
    ///
    /// # Errors
    /// SQLite failures.
    pub fn closed_loop_status(&self) -> Result<Vec<ClosedLoopStatus>> {
        let conn = self.conn.lock().map_err(|_| LedgerError::Poisoned)?;
        status(&conn)
    }
}

impl super::LedgerReader {
    /// Closed-loop state per system that has any.
    ///
    /// # Errors
    /// SQLite failures.
    pub fn closed_loop_status(&self) -> Result<Vec<ClosedLoopStatus>> {
        status(&self.conn)
    }
}

fn status(conn: &rusqlite::Connection) -> Result<Vec<ClosedLoopStatus>> {
    let mut stmt = conn.prepare(
        "WITH s(system) AS (
             SELECT system FROM closed_loop_cursors
             UNION SELECT system FROM opportunities
             UNION SELECT system FROM campaign_touches)
         SELECT s.system, c.value,
                (SELECT count(*) FROM opportunities o WHERE o.system = s.system),
                (SELECT count(*) FROM campaign_touches t WHERE t.system = s.system),
                c.last_ok_at, c.last_error, c.last_error_at
         FROM s LEFT JOIN closed_loop_cursors c ON c.system = s.system
         ORDER BY s.system",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok(ClosedLoopStatus {
            system: r.get(0)?,
            cursor: r.get(1)?,
            opportunities: r.get(2)?,
            touches: r.get(3)?,
            last_ok_at: r.get(4)?,
            last_error: r.get(5)?,
            last_error_at: r.get(6)?,
        })
    })?;
    Ok(rows.collect::<std::result::Result<_, _>>()?)
}

enum Applied {
    Changed,
    Unchanged,
    Stale,
}

/// Whether the stored state of a record is strictly newer than `modified_at`.
fn newer_stored(stored: Option<String>, modified_at: DateTime<Utc>) -> Result<bool> {
    Ok(match stored {
        Some(at) => parse_ts(&at)? > modified_at,
        None => false,
    })
}

fn upsert_opportunity(
    tx: &Transaction<'_>,
    system: &SystemName,
    o: &Opportunity,
    now: DateTime<Utc>,
) -> Result<Applied> {
    let stored: Option<String> = tx
        .prepare_cached(
            "SELECT modified_at FROM opportunities WHERE system = ?1 AND remote_id = ?2",
        )?
        .query_row(params![system.as_str(), o.remote.id], |r| r.get(0))
        .optional()?;
    if newer_stored(stored, o.modified_at)? {
        return Ok(Applied::Stale);
    }
    // The update only runs when a column differs, so `execute` says whether anything changed
    // (0: an identical re-read), and a re-read leaves the row byte for byte as it was.
    let row_changed =
        tx.prepare_cached(
            "INSERT INTO opportunities(system, remote_id, object_type, name, amount_cents,
                currency, stage, pipeline, is_closed, is_won, close_date, primary_campaign,
                created_at, modified_at, deleted, first_seen_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)
             ON CONFLICT(system, remote_id) DO UPDATE SET
                object_type = excluded.object_type, name = excluded.name,
                amount_cents = excluded.amount_cents, currency = excluded.currency,
                stage = excluded.stage, pipeline = excluded.pipeline,
                is_closed = excluded.is_closed, is_won = excluded.is_won,
                close_date = excluded.close_date, primary_campaign = excluded.primary_campaign,
                created_at = excluded.created_at, modified_at = excluded.modified_at,
                deleted = excluded.deleted
             WHERE (object_type, name, amount_cents, currency, stage, pipeline, is_closed,
                    is_won, close_date, primary_campaign, created_at, modified_at, deleted)
                IS NOT (excluded.object_type, excluded.name, excluded.amount_cents,
                    excluded.currency, excluded.stage, excluded.pipeline, excluded.is_closed,
                    excluded.is_won, excluded.close_date, excluded.primary_campaign,
                    excluded.created_at, excluded.modified_at, excluded.deleted)",
        )?
        .execute(params![
            system.as_str(),
            o.remote.id,
            o.remote.object_type,
            o.name,
            o.amount_cents,
            o.currency,
            o.stage,
            o.pipeline,
            flag(o.is_closed),
            flag(o.is_won),
            o.close_date.map(|d| d.format("%Y-%m-%d").to_string()),
            o.primary_campaign,
            o.created_at.map(ts),
            ts(o.modified_at),
            flag(o.deleted),
            ts(now),
        ])? > 0;
    let contacts_changed = replace_contacts(tx, system, &o.remote.id, &o.contacts)?;
    Ok(if row_changed || contacts_changed { Applied::Changed } else { Applied::Unchanged })
}

/// Make the stored contact list of an opportunity equal `contacts` (the connector always
/// sends the complete current list). Returns whether it differed.
fn replace_contacts(
    tx: &Transaction<'_>,
    system: &SystemName,
    opportunity_id: &str,
    contacts: &[OpportunityContact],
) -> Result<bool> {
    let stored: Vec<(String, String, bool, Option<String>)> = tx
        .prepare_cached(
            "SELECT object_type, remote_id, is_primary, role FROM opportunity_contacts
             WHERE system = ?1 AND opportunity_id = ?2 ORDER BY position",
        )?
        .query_map(params![system.as_str(), opportunity_id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get::<_, i64>(2)? != 0, r.get(3)?))
        })?
        .collect::<std::result::Result<_, _>>()?;
    let same = stored.len() == contacts.len()
        && stored.iter().zip(contacts).all(|((ty, id, primary, role), c)| {
            *ty == c.person.object_type
                && *id == c.person.id
                && *primary == c.primary
                && *role == c.role
        });
    if same {
        return Ok(false);
    }
    tx.prepare_cached(
        "DELETE FROM opportunity_contacts WHERE system = ?1 AND opportunity_id = ?2",
    )?
    .execute(params![system.as_str(), opportunity_id])?;
    let mut insert = tx.prepare_cached(
        "INSERT INTO opportunity_contacts(system, opportunity_id, position, object_type,
            remote_id, is_primary, role) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )?;
    for (position, c) in (0i64..).zip(contacts) {
        insert.execute(params![
            system.as_str(),
            opportunity_id,
            position,
            c.person.object_type,
            c.person.id,
            flag(c.primary),
            c.role,
        ])?;
    }
    Ok(true)
}

fn upsert_touch(
    tx: &Transaction<'_>,
    system: &SystemName,
    t: &CampaignTouch,
    now: DateTime<Utc>,
) -> Result<Applied> {
    let stored: Option<String> = tx
        .prepare_cached(
            "SELECT modified_at FROM campaign_touches WHERE system = ?1 AND touch_id = ?2",
        )?
        .query_row(params![system.as_str(), t.touch_id], |r| r.get(0))
        .optional()?;
    if newer_stored(stored, t.modified_at)? {
        return Ok(Applied::Stale);
    }
    let changed =
        tx.prepare_cached(
            "INSERT INTO campaign_touches(system, touch_id, person_type, person_id, lead_type,
                lead_id, campaign_id, campaign_name, kind, at, responded, responded_on,
                modified_at, deleted, first_seen_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)
             ON CONFLICT(system, touch_id) DO UPDATE SET
                person_type = excluded.person_type, person_id = excluded.person_id,
                lead_type = excluded.lead_type, lead_id = excluded.lead_id,
                campaign_id = excluded.campaign_id, campaign_name = excluded.campaign_name,
                kind = excluded.kind, at = excluded.at, responded = excluded.responded,
                responded_on = excluded.responded_on, modified_at = excluded.modified_at,
                deleted = excluded.deleted
             WHERE (person_type, person_id, lead_type, lead_id, campaign_id, campaign_name,
                    kind, at, responded, responded_on, modified_at, deleted)
                IS NOT (excluded.person_type, excluded.person_id, excluded.lead_type,
                    excluded.lead_id, excluded.campaign_id, excluded.campaign_name,
                    excluded.kind, excluded.at, excluded.responded, excluded.responded_on,
                    excluded.modified_at, excluded.deleted)",
        )?
        .execute(params![
            system.as_str(),
            t.touch_id,
            t.person.object_type,
            t.person.id,
            t.lead.as_ref().map(|l| l.object_type.as_str()),
            t.lead.as_ref().map(|l| l.id.as_str()),
            t.campaign_id,
            t.campaign_name,
            t.kind.as_str(),
            ts(t.at),
            flag(t.responded),
            t.responded_on.map(|d| d.format("%Y-%m-%d").to_string()),
            ts(t.modified_at),
            flag(t.deleted),
            ts(now),
        ])? > 0;
    Ok(if changed { Applied::Changed } else { Applied::Unchanged })
}

#[cfg(test)]
mod tests;
