//! The funnel report (`leadsync report funnel`): per lifecycle stage, who entered it in a
//! window, how many went on down the funnel, how long they stayed, and how many were later
//! recycled or disqualified. Computed from each person's [`StageDates`] alone, so a rerun over
//! the same ledger and window gives the same numbers.
//!
//! Definitions (README "Reports" says the same for operators):
//! - **Persons**: every ledger person with a governed lifecycle, persons merged into another
//!   left out (the survivor carries the stage).
//! - **Entered S in the window**: the person has an entry into S stamped within `[from, to]`.
//!   [`StageDates`] keeps the first and the latest entry of each stage; the *cohort entry* is
//!   the first one when it lies in the window, else the latest. A person counts once per stage
//!   however often they entered it. Entries between the first and the latest of a stage
//!   entered three times or more are not stored and cannot be seen.
//! - **After the cohort entry**: a stamp strictly later, or at the same instant when it is a
//!   forward move from S (one rule evaluation moves lead -> mql -> sql at one instant). Stamps
//!   after `to` are ignored, so a window ending in the past reads as it would have then.
//! - **Converted**: of those who entered S in the window, the persons with an entry after the
//!   cohort entry into a stage that is a forward move from S
//!   ([`LifecycleStage::is_forward_move`]): any later funnel stage; for recycled, MQL or later
//!   (qualified again). Disqualified has no conversion (only a named reopen leaves it).
//!   Stages skipped by a move (lead straight to SQL) are not stamped and do not count as
//!   entered, so "converted" means "reached any later stage", not "entered the next one".
//!   The rate is in basis points, floored: `converted * 10000 / entered`.
//! - **Time in stage**: from the cohort entry to the earliest entry into another stage after
//!   it, for the persons who left S (`left`); persons still in S are not in the median. The
//!   median is the lower median (the middle value, or the smaller of the two middle values)
//!   in whole seconds: integers only, no averaging.
//! - **Recycled / disqualified**: of those who entered S in the window, the persons with a
//!   recycled (disqualified) entry after the cohort entry.

use chrono::{DateTime, Utc};
use rusqlite::Connection;
use serde::Serialize;

use super::{Ledger, LedgerError, LedgerReader, Result, from_json};
use crate::contract::lifecycle::{LifecycleStage, StageDates};
use crate::reconcile::lifecycle::PersonLifecycle;

/// One stage's figures.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FunnelRow {
    pub stage: LifecycleStage,
    /// Persons who entered the stage in the window.
    pub entered: u64,
    /// Of those, persons who later entered a stage forward of it (`None` for disqualified).
    pub converted: Option<u64>,
    /// `converted * 10000 / entered`, floored (`None` when nobody entered or for
    /// disqualified).
    pub conversion_bp: Option<u64>,
    /// Of those, persons who left the stage (entered another one after it).
    pub left: u64,
    /// Lower median of the time in stage of those who left, in seconds.
    pub median_secs_in_stage: Option<i64>,
    /// Of those, persons later recycled.
    pub recycled: u64,
    /// Of those, persons later disqualified.
    pub disqualified: u64,
}

/// The funnel report over `[from, to]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FunnelReport {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// Persons with a governed lifecycle (merged persons excluded), in the window or not.
    pub persons: u64,
    /// One row per stage, in [`LifecycleStage::ALL`] order (funnel first, then recycled and
    /// disqualified), every stage present.
    pub rows: Vec<FunnelRow>,
}

/// Running totals per stage while persons stream by.
#[derive(Debug, Default)]
struct Tally {
    entered: u64,
    converted: u64,
    left: u64,
    recycled: u64,
    disqualified: u64,
    secs: Vec<i64>,
}

/// Whether a stamp `(at, stage)` comes after the cohort entry `(e, from)`.
fn after(e: DateTime<Utc>, from: LifecycleStage, at: DateTime<Utc>, stage: LifecycleStage) -> bool {
    at > e || (at == e && LifecycleStage::is_forward_move(from, stage))
}

fn index(stage: LifecycleStage) -> usize {
    LifecycleStage::ALL.iter().position(|s| *s == stage).unwrap_or(0)
}

/// Add one person's stage dates to the tallies.
fn tally_person(dates: &StageDates, from: DateTime<Utc>, to: DateTime<Utc>, tally: &mut [Tally]) {
    let within = |t: DateTime<Utc>| t >= from && t <= to;
    // Every stored stamp up to `to`: the first entry, and the latest when it is another one.
    let mut stamps: Vec<(DateTime<Utc>, LifecycleStage)> = Vec::with_capacity(12);
    for (stage, entry) in dates.iter() {
        if entry.first <= to {
            stamps.push((entry.first, stage));
        }
        if entry.times > 1 && entry.last != entry.first && entry.last <= to {
            stamps.push((entry.last, stage));
        }
    }
    for (stage, entry) in dates.iter() {
        let e = if within(entry.first) {
            entry.first
        } else if within(entry.last) {
            entry.last
        } else {
            continue;
        };
        let t = &mut tally[index(stage)];
        t.entered += 1;
        let later = || stamps.iter().filter(|(at, st)| after(e, stage, *at, *st));
        if later().any(|(_, st)| LifecycleStage::is_forward_move(stage, *st)) {
            t.converted += 1;
        }
        if later().any(|(_, st)| *st == LifecycleStage::Recycled && stage != *st) {
            t.recycled += 1;
        }
        if later().any(|(_, st)| *st == LifecycleStage::Disqualified && stage != *st) {
            t.disqualified += 1;
        }
        if let Some(next) = later().filter(|(_, st)| *st != stage).map(|(at, _)| *at).min() {
            t.left += 1;
            t.secs.push((next - e).num_seconds());
        }
    }
}

/// The lower median of `v` (sorted in place).
pub(super) fn lower_median(v: &mut [i64]) -> Option<i64> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    Some(v[(v.len() - 1) / 2])
}

fn finish(
    mut tally: Vec<Tally>,
    persons: u64,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> FunnelReport {
    let rows = LifecycleStage::ALL
        .iter()
        .zip(tally.iter_mut())
        .map(|(stage, t)| {
            let converts = *stage != LifecycleStage::Disqualified;
            FunnelRow {
                stage: *stage,
                entered: t.entered,
                converted: converts.then_some(t.converted),
                conversion_bp: (converts && t.entered > 0)
                    .then(|| t.converted.saturating_mul(10_000) / t.entered),
                left: t.left,
                median_secs_in_stage: lower_median(&mut t.secs),
                recycled: t.recycled,
                disqualified: t.disqualified,
            }
        })
        .collect();
    FunnelReport { from, to, persons, rows }
}

fn funnel(conn: &Connection, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<FunnelReport> {
    let mut tally: Vec<Tally> = LifecycleStage::ALL.iter().map(|_| Tally::default()).collect();
    let mut persons = 0u64;
    let mut stmt = conn.prepare(
        "SELECT c.state FROM lifecycle c JOIN leads l ON l.id = c.lead_id
         WHERE l.merged_into IS NULL",
    )?;
    let mut rows = stmt.query([])?;
    while let Some(row) = rows.next()? {
        let raw = row.get_ref(0)?.as_str().map_err(rusqlite::Error::from)?;
        let state: PersonLifecycle = from_json(raw)?;
        persons += 1;
        tally_person(&state.dates, from, to, &mut tally);
    }
    Ok(finish(tally, persons, from, to))
}

impl LedgerReader {
    /// The funnel report over `[from, to]` (see the module docs for the definitions).
    ///
    /// # Errors
    /// SQLite failures or a corrupt lifecycle row.
    pub fn funnel(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<FunnelReport> {
        funnel(&self.conn, from, to)
    }
}

impl Ledger {
    /// The funnel report over `[from, to]` (see the module docs for the definitions).
    ///
    /// # Errors
    /// SQLite failures or a corrupt lifecycle row.
    pub fn funnel(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<FunnelReport> {
        let conn = self.conn.lock().map_err(|_| LedgerError::Poisoned)?;
        funnel(&conn, from, to)
    }
}

#[cfg(test)]
mod tests;
