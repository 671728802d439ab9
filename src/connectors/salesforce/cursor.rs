//! The poll cursor: our own JSON inside the opaque [`Cursor`] string, and the keyset SOQL it
//! turns into.
//!
//! Each synced object (Lead, Contact) keeps its own position: the cursor text is
//! `{"v":2,"objects":{"Lead":<state>,"Contact":<state>}}`. The older form, one bare state,
//! was written when only Leads were polled; it reads as that Lead state, with every other
//! object starting from the beginning.
//!
//! Per object, polling is keyset pagination on `(SystemModstamp, Id)`, lossless with ties.
//! Three pieces of state travel in the cursor:
//! - the **watermark** `ts`/`id`: the greatest position ever returned; it never moves back.
//! - the **scan** position: where the next query starts when it is not "just after the
//!   watermark". Once caught up, the next cycle re-reads from `watermark - overlap` (inclusive)
//!   to catch transactions that committed after later rows were already visible; a full page
//!   during that re-read continues from its last row, so nothing is skipped.
//! - **seen**: `(Id, SystemModstamp)` pairs inside the overlap window that were already
//!   returned, so a quiet org does not re-emit the same few records every cycle. Dropping
//!   entries (the list is capped) only causes harmless re-emission, never loss.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use super::mapping::{Position, soql_datetime};
use crate::connectors::{ConnectorError, Cursor};

/// Most `seen` entries kept in a cursor (a few dozen bytes each).
const SEEN_CAP: usize = 2000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct PollState {
    /// Watermark: the greatest `(SystemModstamp, Id)` returned so far.
    pub ts: DateTime<Utc>,
    pub id: String,
    /// Where the next query starts when it is not just after the watermark. An empty `id`
    /// means "from `ts` inclusive".
    #[serde(default)]
    pub scan: Option<ScanPos>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub seen: Vec<(String, DateTime<Utc>)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(super) struct ScanPos {
    pub ts: DateTime<Utc>,
    pub id: String,
}

/// Where a poll query starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Start {
    /// No cursor yet: everything.
    Beginning,
    /// Strictly after this position.
    After(Position),
    /// From this instant, inclusive.
    From(DateTime<Utc>),
}

/// The whole cursor: one poll state per object type.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(super) struct Positions {
    pub v: u32,
    pub objects: BTreeMap<String, PollState>,
}

/// Read the cursor string (either form, see the module docs).
///
/// # Errors
/// `Config` when the cursor is not ours or carries an id that is not a Salesforce id (it is
/// pasted into SOQL).
pub(super) fn decode_all(cursor: &Cursor) -> Result<Positions, ConnectorError> {
    let Some(text) = cursor.0.as_deref() else { return Ok(Positions::default()) };
    let positions = match serde_json::from_str::<Positions>(text) {
        Ok(p) => p,
        Err(_) => {
            let lead = parse_state(text)?;
            Positions { v: 2, objects: BTreeMap::from([("Lead".to_string(), lead)]) }
        }
    };
    for state in positions.objects.values() {
        check_ids(state)?;
    }
    Ok(positions)
}

pub(super) fn encode_all(positions: &Positions) -> Cursor {
    if positions.objects.is_empty() {
        return Cursor(None);
    }
    let p = Positions { v: 2, objects: positions.objects.clone() };
    Cursor(Some(serde_json::to_string(&p).expect("poll positions always serialise")))
}

fn parse_state(text: &str) -> Result<PollState, ConnectorError> {
    serde_json::from_str(text)
        .map_err(|e| ConnectorError::Config(format!("unreadable salesforce poll cursor: {e}")))
}

fn check_ids(state: &PollState) -> Result<(), ConnectorError> {
    let ids_ok = is_sf_id(&state.id)
        && state.scan.as_ref().is_none_or(|s| s.id.is_empty() || is_sf_id(&s.id));
    if !ids_ok {
        return Err(ConnectorError::Config("salesforce poll cursor holds an invalid id".into()));
    }
    Ok(())
}

/// Read a one-object cursor string (the older form).
///
/// # Errors
/// As [`decode_all`].
#[cfg(test)]
pub(super) fn decode(cursor: &Cursor) -> Result<Option<PollState>, ConnectorError> {
    let Some(text) = cursor.0.as_deref() else { return Ok(None) };
    let state = parse_state(text)?;
    check_ids(&state)?;
    Ok(Some(state))
}

#[cfg(test)]
pub(super) fn encode(state: Option<&PollState>) -> Cursor {
    Cursor(state.map(|s| serde_json::to_string(s).expect("poll state always serialises")))
}

fn is_sf_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 18 && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

impl PollState {
    pub fn start(&self) -> Start {
        match &self.scan {
            Some(s) if s.id.is_empty() => Start::From(s.ts),
            Some(s) => Start::After(Position { ts: s.ts, id: s.id.clone() }),
            None => Start::After(Position { ts: self.ts, id: self.id.clone() }),
        }
    }

    pub fn has_seen(&self, p: &Position) -> bool {
        self.seen.iter().any(|(id, ts)| *id == p.id && *ts == p.ts)
    }
}

pub(super) fn start_of(state: Option<&PollState>) -> Start {
    state.map_or(Start::Beginning, PollState::start)
}

/// The state after a query that returned `positions` (in server order). `full` says whether
/// the page filled the `LIMIT`, i.e. more rows may be waiting right after the last one.
pub(super) fn advance(
    prev: Option<&PollState>,
    positions: &[Position],
    full: bool,
    overlap: Duration,
) -> Option<PollState> {
    let mut wm = prev.map(|p| Position { ts: p.ts, id: p.id.clone() });
    for p in positions {
        if wm.as_ref().is_none_or(|w| p > w) {
            wm = Some(p.clone());
        }
    }
    let wm = wm?;
    let overlap = TimeDelta::from_std(overlap).unwrap_or(TimeDelta::zero());
    let scan = match positions.last() {
        // More may wait right after the last row: continue there, whether or not that is the
        // watermark (during a re-scan it is behind it).
        Some(last) if full => (*last != wm).then(|| ScanPos { ts: last.ts, id: last.id.clone() }),
        // Caught up: the next cycle re-reads the overlap window.
        _ if overlap.is_zero() => None,
        _ => Some(ScanPos { ts: wm.ts - overlap, id: String::new() }),
    };
    let mut seen: Vec<(String, DateTime<Utc>)> = Vec::new();
    if !overlap.is_zero() {
        let floor = wm.ts - overlap;
        let prev_seen = prev.map(|p| p.seen.as_slice()).unwrap_or_default();
        // Ordered by time so the cap drops the oldest entries, which leave the window first.
        let set: BTreeSet<(DateTime<Utc>, String)> = prev_seen
            .iter()
            .map(|(id, ts)| (*ts, id.clone()))
            .chain(positions.iter().map(|p| (p.ts, p.id.clone())))
            .filter(|(ts, _)| *ts >= floor)
            .collect();
        let skip = set.len().saturating_sub(SEEN_CAP);
        seen = set.into_iter().skip(skip).map(|(ts, id)| (id, ts)).collect();
    }
    Some(PollState { ts: wm.ts, id: wm.id, scan, seen })
}

/// The poll SOQL: keyset-ordered, limited to one page.
pub(super) fn poll_soql(select: &[&str], object: &str, start: &Start, limit: u32) -> String {
    let filter = match start {
        Start::Beginning => String::new(),
        Start::After(p) => {
            let ts = soql_datetime(p.ts);
            format!(" WHERE SystemModstamp > {ts} OR (SystemModstamp = {ts} AND Id > '{}')", p.id)
        }
        Start::From(ts) => format!(" WHERE SystemModstamp >= {}", soql_datetime(*ts)),
    };
    format!(
        "SELECT {} FROM {object}{filter} ORDER BY SystemModstamp, Id LIMIT {limit}",
        select.join(", ")
    )
}
