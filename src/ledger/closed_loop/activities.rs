//! Sales activities (Salesforce Tasks) as contact attempts on the SLA clock.
//!
//! Rows keep the remote id of the Lead or Contact the activity names, like the other
//! closed-loop rows. Unlike them, an activity also acts at once: in the transaction that
//! stores it, a done (completed, not deleted) activity not counted before is resolved to its
//! person through `links` (open or closed, so a converted lead's Contact and a merged-away
//! record still find the person; then through merges to the survivor) and given to that
//! person's SLA clock as a [`TouchKind::Activity`](crate::contract::sla::TouchKind) at its
//! logged time. When the clock takes it as an attempt, `counted_for` records the person, so a
//! re-read or an update of the same activity (a conversion moves it to the Contact) never
//! counts again.
//!
//! An activity read before its person has a clock (the poll of tasks ran ahead of the lead
//! poll that made the person MQL) is not lost: when a clock starts, it takes every done,
//! uncounted activity of the person's records logged at or after its start
//! ([`uncounted_of_person`]).
//!
//! Only persons with a clock are touched, and clocks only start under `[contract.sla]`; without
//! it activities are stored and nothing else happens. A deleted activity that was counted stays
//! counted: the clock keeps no list of attempts to take one back from.

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, Transaction, params};

use super::super::identity::surviving_lead;
use super::super::{Result, parse_ts, ts};
use super::{Applied, flag, newer_stored};
use crate::domain::closed_loop::Activity;
use crate::domain::{RemoteId, SystemName};

/// A stored activity a clock may count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(in crate::ledger) struct Countable {
    pub system: String,
    pub activity_id: String,
    pub kind: String,
    pub at: DateTime<Utc>,
}

/// Store one activity; when it is done and not counted yet, offer it to its person's clock.
/// Returns how the row changed and whether the clock counted an attempt.
pub(super) fn upsert_activity(
    tx: &Transaction<'_>,
    system: &SystemName,
    a: &Activity,
    now: DateTime<Utc>,
) -> Result<(Applied, bool)> {
    let stored: Option<(String, Option<String>)> = tx
        .prepare_cached(
            "SELECT modified_at, counted_for FROM activities
             WHERE system = ?1 AND activity_id = ?2",
        )?
        .query_row(params![system.as_str(), a.activity_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let counted = stored.as_ref().is_some_and(|(_, c)| c.is_some());
    if newer_stored(stored.map(|(m, _)| m), a.modified_at)? {
        return Ok((Applied::Stale, false));
    }
    let changed =
        tx.prepare_cached(
            "INSERT INTO activities(system, activity_id, who_type, who_id, kind, at, completed,
                modified_at, deleted, first_seen_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
             ON CONFLICT(system, activity_id) DO UPDATE SET
                who_type = excluded.who_type, who_id = excluded.who_id, kind = excluded.kind,
                at = excluded.at, completed = excluded.completed,
                modified_at = excluded.modified_at, deleted = excluded.deleted
             WHERE (who_type, who_id, kind, at, completed, modified_at, deleted)
                IS NOT (excluded.who_type, excluded.who_id, excluded.kind, excluded.at,
                    excluded.completed, excluded.modified_at, excluded.deleted)",
        )?
        .execute(params![
            system.as_str(),
            a.activity_id,
            a.who_remote_id.object_type,
            a.who_remote_id.id,
            a.kind.as_str(),
            ts(a.at),
            flag(a.completed),
            ts(a.modified_at),
            flag(a.deleted),
            ts(now),
        ])? > 0;
    if !changed {
        return Ok((Applied::Unchanged, false));
    }
    if counted || !a.completed || a.deleted {
        return Ok((Applied::Changed, false));
    }
    let Some(lead_id) = person_of(tx, system, &a.who_remote_id)? else {
        return Ok((Applied::Changed, false));
    };
    let c = Countable {
        system: system.as_str().to_string(),
        activity_id: a.activity_id.clone(),
        kind: a.kind.as_str().to_string(),
        at: a.at,
    };
    let took = super::super::sla::count_attempt(tx, &lead_id, &c, now)?;
    if took {
        mark_counted(tx, &c, &lead_id)?;
    }
    Ok((Applied::Changed, took))
}

/// The person a remote record belongs to: its link (open or closed), followed through merges.
fn person_of(tx: &Transaction<'_>, system: &SystemName, who: &RemoteId) -> Result<Option<String>> {
    let id: Option<String> = tx
        .prepare_cached(
            "SELECT lead_id FROM links WHERE system = ?1 AND object_type = ?2 AND remote_id = ?3",
        )?
        .query_row(params![system.as_str(), who.object_type, who.id], |r| r.get(0))
        .optional()?;
    match id {
        Some(id) => surviving_lead(tx, &id),
        None => Ok(None),
    }
}

/// Note that `lead_id`'s clock counted this activity.
pub(in crate::ledger) fn mark_counted(
    tx: &Transaction<'_>,
    c: &Countable,
    lead_id: &str,
) -> Result<()> {
    tx.prepare_cached(
        "UPDATE activities SET counted_for = ?3 WHERE system = ?1 AND activity_id = ?2",
    )?
    .execute(params![c.system, c.activity_id, lead_id])?;
    Ok(())
}

/// Done, uncounted activities logged at or after `since` on any record linked to `lead_id`
/// (open or closed links), plus on `extra` (a record about to be linked), oldest first.
pub(in crate::ledger) fn uncounted_of_person(
    tx: &Transaction<'_>,
    lead_id: &str,
    extra: Option<(&SystemName, &RemoteId)>,
    since: DateTime<Utc>,
) -> Result<Vec<Countable>> {
    let (x_system, x_type, x_id) = match extra {
        Some((s, r)) => (Some(s.as_str()), Some(r.object_type.as_str()), Some(r.id.as_str())),
        None => (None, None, None),
    };
    let mut stmt = tx.prepare_cached(
        // From the person's links to their records' activities: both through indexes.
        "SELECT a.system, a.activity_id, a.kind, a.at FROM links l
         JOIN activities a ON a.system = l.system AND a.who_type = l.object_type
                          AND a.who_id = l.remote_id
         WHERE l.lead_id = ?1
           AND a.completed = 1 AND a.deleted = 0 AND a.counted_for IS NULL AND a.at >= ?2
         UNION
         SELECT a.system, a.activity_id, a.kind, a.at FROM activities a
         WHERE a.system = ?3 AND a.who_type = ?4 AND a.who_id = ?5
           AND a.completed = 1 AND a.deleted = 0 AND a.counted_for IS NULL AND a.at >= ?2
         ORDER BY 4, 1, 2",
    )?;
    let rows = stmt.query_map(params![lead_id, ts(since), x_system, x_type, x_id], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, String>(3)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (system, activity_id, kind, at) = row?;
        out.push(Countable { system, activity_id, kind, at: parse_ts(&at)? });
    }
    Ok(out)
}
