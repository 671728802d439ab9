//! The SLA report (`leadsync report sla`): of the MQLs handed to the CRM in a window, how many
//! sales touched by the deadline, how long the first touch took, how many breached, escalated
//! and were recycled, and how many contact attempts came before a disqualification. Computed
//! from `sla_cycles` alone (one row per clock cycle, kept after the person's clock moves on),
//! so a rerun over the same ledger and window gives the same numbers.
//!
//! Definitions (README "Reports" says the same for operators):
//! - **Handed over**: clock cycles started in `[from, to]` (the MQL entry, or the handover to
//!   the CRM when that came later). A person handed over twice counts twice. Persons merged
//!   into another are left out (the survivor carries the clock).
//! - **Outcome of each cycle** (one of): *met* (first touch at or before the deadline),
//!   *touched late* (first touch after it), *overdue* (no touch, deadline before `to`), *not
//!   yet due* (no touch, deadline at or after `to`, still running), *left before the
//!   deadline* (no touch, the person left the MQL path before the deadline: disqualified,
//!   recycled by hand, or a stage the clock does not police).
//! - **Touched within the deadline**: met / (met + touched late + overdue), in basis points,
//!   floored: the cycles whose deadline has been decided.
//! - **Time to first touch**: from the cycle's start to its first touch, wall-clock seconds
//!   (not business hours), over met and touched-late cycles: lower median and nearest-rank p90.
//! - **Breached / escalated / recycled**: cycles whose clock decided that action (the alert
//!   went out). A touch reported after the deadline but dated before it makes a cycle met
//!   *and* breached: the breach alert had been sent.
//! - **Disqualified**: cycles during which the person was disqualified (first time only), and
//!   the contact attempts the clock had counted by then: lower median, min and max.
//!   *Disqualifications refused*: cycles in which the policy turned a disqualification into
//!   a recycle (`disqualify_refused`).
//! - Outcomes are the ledger's as of now; the window selects the cohort by start. With `to`
//!   in the past a cycle's later touches still count (unlike the funnel's stage stamps).

use chrono::{DateTime, Utc};
use rusqlite::Connection;
use serde::Serialize;

use super::funnel::lower_median;
use super::{Ledger, LedgerError, LedgerReader, Result, parse_ts};

/// The SLA report over `[from, to]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SlaReport {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    /// Clock cycles started in the window.
    pub handed_over: u64,
    pub met: u64,
    pub touched_late: u64,
    pub overdue: u64,
    pub not_yet_due: u64,
    pub left_before_deadline: u64,
    /// `met * 10000 / (met + touched_late + overdue)`, floored (`None`: none decided).
    pub within_deadline_bp: Option<u64>,
    /// Lower median of the time to first touch, seconds.
    pub median_secs_to_first_touch: Option<i64>,
    /// Nearest-rank 90th percentile of the time to first touch, seconds.
    pub p90_secs_to_first_touch: Option<i64>,
    pub breached: u64,
    pub escalated: u64,
    /// Recycled by the clock (untouched too long).
    pub recycled: u64,
    pub disqualified: u64,
    pub median_attempts_before_disqualification: Option<i64>,
    pub min_attempts_before_disqualification: Option<i64>,
    pub max_attempts_before_disqualification: Option<i64>,
    /// Cycles in which a disqualification was refused by the policy (recycled instead).
    pub disqualifications_refused: u64,
}

/// One `sla_cycles` row, as the report needs it.
#[derive(Debug, Clone)]
struct Cycle {
    started_at: DateTime<Utc>,
    due_at: DateTime<Utc>,
    phase: String,
    first_touch_at: Option<DateTime<Utc>>,
    breached: bool,
    escalated: bool,
    recycled: bool,
    disqualify_refused: bool,
    attempts_at_disqualify: Option<i64>,
    disqualified: bool,
}

/// The nearest-rank percentile `pct` (1..=100) of `v` (sorted in place): the smallest value
/// with at least `pct` % of the values at or below it.
fn nearest_rank(v: &mut [i64], pct: usize) -> Option<i64> {
    if v.is_empty() {
        return None;
    }
    v.sort_unstable();
    let rank = (v.len() * pct).div_ceil(100).max(1);
    Some(v[rank - 1])
}

fn tally(cycles: &[Cycle], from: DateTime<Utc>, to: DateTime<Utc>) -> SlaReport {
    let mut r = SlaReport {
        from,
        to,
        handed_over: 0,
        met: 0,
        touched_late: 0,
        overdue: 0,
        not_yet_due: 0,
        left_before_deadline: 0,
        within_deadline_bp: None,
        median_secs_to_first_touch: None,
        p90_secs_to_first_touch: None,
        breached: 0,
        escalated: 0,
        recycled: 0,
        disqualified: 0,
        median_attempts_before_disqualification: None,
        min_attempts_before_disqualification: None,
        max_attempts_before_disqualification: None,
        disqualifications_refused: 0,
    };
    let mut to_touch = Vec::new();
    let mut attempts = Vec::new();
    for c in cycles.iter().filter(|c| c.started_at >= from && c.started_at <= to) {
        r.handed_over += 1;
        match c.first_touch_at {
            Some(t) => {
                if t <= c.due_at {
                    r.met += 1;
                } else {
                    r.touched_late += 1;
                }
                to_touch.push((t - c.started_at).num_seconds().max(0));
            }
            None if c.phase == "closed" && !c.breached => r.left_before_deadline += 1,
            None if c.due_at < to => r.overdue += 1,
            None => r.not_yet_due += 1,
        }
        r.breached += u64::from(c.breached);
        r.escalated += u64::from(c.escalated);
        r.recycled += u64::from(c.recycled);
        r.disqualifications_refused += u64::from(c.disqualify_refused);
        if c.disqualified {
            r.disqualified += 1;
            if let Some(a) = c.attempts_at_disqualify {
                attempts.push(a);
            }
        }
    }
    let decided = r.met + r.touched_late + r.overdue;
    r.within_deadline_bp = (decided > 0).then(|| r.met.saturating_mul(10_000) / decided);
    r.median_secs_to_first_touch = lower_median(&mut to_touch);
    r.p90_secs_to_first_touch = nearest_rank(&mut to_touch, 90);
    r.median_attempts_before_disqualification = lower_median(&mut attempts);
    r.min_attempts_before_disqualification = attempts.iter().copied().min();
    r.max_attempts_before_disqualification = attempts.iter().copied().max();
    r
}

fn sla_report(conn: &Connection, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<SlaReport> {
    let mut stmt = conn.prepare(
        "SELECT c.started_at, c.due_at, c.phase, c.first_touch_at, c.breached, c.escalated,
                c.recycled, c.disqualify_refused, c.disqualified_at, c.attempts_at_disqualify
         FROM sla_cycles c JOIN leads l ON l.id = c.lead_id
         WHERE l.merged_into IS NULL AND c.started_at >= ?1 AND c.started_at <= ?2",
    )?;
    let mut rows = stmt.query([super::ts(from), super::ts(to)])?;
    let mut cycles = Vec::new();
    while let Some(row) = rows.next()? {
        let time = |i: usize| -> Result<Option<DateTime<Utc>>> {
            row.get::<_, Option<String>>(i)?.as_deref().map(parse_ts).transpose()
        };
        let required = |i: usize| -> Result<DateTime<Utc>> {
            time(i)?.ok_or_else(|| LedgerError::Corrupt("sla_cycles: missing time".into()))
        };
        cycles.push(Cycle {
            started_at: required(0)?,
            due_at: required(1)?,
            phase: row.get(2)?,
            first_touch_at: time(3)?,
            breached: row.get(4)?,
            escalated: row.get(5)?,
            recycled: row.get(6)?,
            disqualify_refused: row.get(7)?,
            disqualified: time(8)?.is_some(),
            attempts_at_disqualify: row.get(9)?,
        });
    }
    Ok(tally(&cycles, from, to))
}

impl LedgerReader {
    /// The SLA report over `[from, to]` (see the module docs for the definitions).
    ///
    /// # Errors
    /// SQLite failures or a corrupt row.
    pub fn sla_report(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<SlaReport> {
        sla_report(&self.conn, from, to)
    }
}

impl Ledger {
    /// The SLA report over `[from, to]` (see the module docs for the definitions).
    ///
    /// # Errors
    /// SQLite failures or a corrupt row.
    pub fn sla_report(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<SlaReport> {
        let conn = self.conn.lock().map_err(|_| LedgerError::Poisoned)?;
        sla_report(&conn, from, to)
    }
}

#[cfg(test)]
mod tests;
