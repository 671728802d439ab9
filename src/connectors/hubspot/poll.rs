//! The incremental poll over contacts search: a keyset scan on `lastmodifieddate`, with the
//! cursor as leadsync's own JSON.
//!
//! Why keyset and not `after` paging: `after` is an offset into a sorted result that changes
//! while we read it. When a record on an earlier page is modified mid-scan it moves to the end
//! of the sort order, every later record shifts one place forward, and the record that slid
//! across the page boundary is skipped. Offsets also stop at 10,000 results per query. So every
//! page is a fresh query `lastmodifieddate >= ts` (never `after`), re-anchored at the newest
//! timestamp seen, and a record modified mid-scan simply reappears later with its new time.
//!
//! Timestamps are not unique (imports stamp thousands of records with one millisecond), so:
//! - records already emitted at a timestamp are remembered (`seen`) and dropped on re-read;
//! - when a full page holds nothing but the cursor's own timestamp, that tie group may be
//!   larger than a page, so the scan switches to a tie phase: `lastmodifieddate == ts AND
//!   hs_object_id > last_id`, sorted by id, until drained, then continues with
//!   `lastmodifieddate > ts`.
//!
//! Search is eventually consistent: a record can appear in the index a little after records
//! with later timestamps. When a pass catches up, the next pass therefore starts `overlap`
//! before the watermark (the newest timestamp seen), and `seen` suppresses what was already
//! emitted. Once a pass started more than `overlap` after the watermark, everything up to the
//! watermark is settled and the next pass starts strictly after it, so a quiet portal costs
//! one empty search per poll interval. The scan position may move back; the watermark and the
//! settled point never do.
//!
//! Known limit: a record that becomes searchable more than `overlap` after its timestamp was
//! already passed is missed; a periodic full sweep (not built here) would catch it.
//!
//! Search never returns archived (deleted) contacts. The cursor also schedules a sweep of the
//! archived list (`GET …/contacts?archived=true`): after the first catch-up and then every
//! `archived_sweep_every` caught-up polls, the following poll calls page through that list
//! (`sweep` holds the paging position) instead of searching. Fields added for this default
//! when absent, so a cursor written before them still reads (and sweeps at its next catch-up).

use serde::{Deserialize, Serialize};

use super::wire::{self, Filter, FilterGroup, SearchRequest, Sort};
use crate::connectors::{ConnectorError, Cursor};

/// Most (id, timestamp) pairs kept in the cursor. Dropping older ones only costs duplicate
/// changes (which the ledger absorbs), never lost ones, and keeps the persisted cursor small.
pub(super) const SEEN_CAP: usize = 1000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub(super) enum Phase {
    /// `lastmodifieddate >= ts_ms` (or `>` when not inclusive), sorted by time.
    Scan,
    /// `lastmodifieddate == ts_ms AND hs_object_id > last_id`, sorted by id.
    Tie { last_id: String },
}

/// The persisted poll position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct PollCursor {
    pub v: u32,
    /// Scan position (epoch ms): where the next query starts.
    pub ts_ms: i64,
    /// Whether records stamped exactly `ts_ms` are still wanted.
    pub inclusive: bool,
    pub phase: Phase,
    /// Newest `lastmodifieddate` ever seen; never decreases.
    pub watermark_ms: i64,
    /// Everything stamped at or before this is known emitted; never decreases.
    pub settled_ms: Option<i64>,
    /// Recently emitted `(id, lastmodifieddate)` pairs, at or after the oldest position a later
    /// pass may re-read. Generalises "ids at the cursor timestamp" to the overlap window.
    pub seen: Vec<(String, i64)>,
    /// Our clock (epoch ms) at the first request of the current pass.
    pub pass_started_ms: Option<i64>,
    /// A sweep of the archived list in progress: where its next page starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sweep: Option<SweepPos>,
    /// Caught-up polls since the last sweep ended; `None` until a sweep has run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub polls_since_sweep: Option<u32>,
}

/// Position inside a sweep of the archived list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct SweepPos {
    /// `after` of the next page; `None` for the first.
    pub after: Option<String>,
}

/// One record of a search page, as the cursor logic sees it.
#[derive(Debug, Clone)]
pub(super) struct Obs {
    pub id: String,
    /// `None` when the record carried no parseable time: it is not emitted, and counts as the
    /// cursor's own timestamp for paging.
    pub ts_ms: Option<i64>,
}

/// What one page did to the cursor.
#[derive(Debug)]
pub(super) struct Step {
    pub next: PollCursor,
    /// Per input record: emit it as a change.
    pub emit: Vec<bool>,
    /// The pass reached the end: wait for the poll interval.
    pub caught_up: bool,
}

impl PollCursor {
    pub(super) fn start_at(ts_ms: i64) -> PollCursor {
        PollCursor {
            v: 1,
            ts_ms,
            inclusive: true,
            phase: Phase::Scan,
            watermark_ms: ts_ms,
            settled_ms: None,
            seen: Vec::new(),
            pass_started_ms: None,
            sweep: None,
            polls_since_sweep: None,
        }
    }

    /// After a caught-up poll: count it, and start a sweep when one is due (`every` > 0).
    pub(super) fn count_caught_up(&mut self, every: u32) {
        if every == 0 {
            self.sweep = None;
            return;
        }
        match self.polls_since_sweep {
            Some(n) if n.saturating_add(1) < every => self.polls_since_sweep = Some(n + 1),
            _ => self.sweep = Some(SweepPos { after: None }),
        }
    }

    /// A sweep page was read; `next_after` is where the following one starts.
    pub(super) fn swept(&mut self, next_after: Option<String>) {
        match next_after {
            Some(after) => self.sweep = Some(SweepPos { after: Some(after) }),
            None => {
                self.sweep = None;
                self.polls_since_sweep = Some(0);
            }
        }
    }

    /// Read a persisted cursor. No cursor means a full initial sync from the epoch. An epoch
    /// millisecond number or an RFC 3339 time is accepted too, so an operator can seed the
    /// start position by hand.
    ///
    /// # Errors
    /// `Config` when the text is none of these.
    pub(super) fn parse(c: &Cursor) -> Result<PollCursor, ConnectorError> {
        let Some(text) = c.0.as_deref() else { return Ok(PollCursor::start_at(0)) };
        if let Ok(pc) = serde_json::from_str::<PollCursor>(text) {
            return Ok(pc);
        }
        let t = text.trim();
        if let Ok(ms) = t.parse::<i64>() {
            return Ok(PollCursor::start_at(ms));
        }
        if let Ok(dt) = chrono::DateTime::parse_from_rfc3339(t) {
            return Ok(PollCursor::start_at(dt.timestamp_millis()));
        }
        Err(ConnectorError::Config("stored hubspot poll cursor is not readable".into()))
    }

    pub(super) fn to_cursor(&self) -> Result<Cursor, ConnectorError> {
        serde_json::to_string(self)
            .map(|s| Cursor(Some(s)))
            .map_err(|e| ConnectorError::Config(format!("cannot encode poll cursor: {e}")))
    }

    /// The search body for the next page.
    pub(super) fn query(&self, page_size: u32, properties: Vec<String>) -> SearchRequest {
        self.query_on(wire::LAST_MODIFIED, page_size, properties)
    }

    /// The same keyset on another datetime property (deals: `hs_lastmodifieddate`; form
    /// conversions: `recent_conversion_date`).
    pub(super) fn query_on(
        &self,
        time_prop: &'static str,
        page_size: u32,
        properties: Vec<String>,
    ) -> SearchRequest {
        let (filters, sort_by) = match &self.phase {
            Phase::Scan => (
                vec![Filter {
                    property_name: time_prop,
                    operator: if self.inclusive { "GTE" } else { "GT" },
                    value: self.ts_ms.to_string(),
                }],
                time_prop,
            ),
            Phase::Tie { last_id } => (
                vec![
                    Filter {
                        property_name: time_prop,
                        operator: "EQ",
                        value: self.ts_ms.to_string(),
                    },
                    Filter {
                        property_name: wire::OBJECT_ID,
                        operator: "GT",
                        value: last_id.clone(),
                    },
                ],
                wire::OBJECT_ID,
            ),
        };
        SearchRequest {
            filter_groups: vec![FilterGroup { filters }],
            sorts: vec![Sort { property_name: sort_by, direction: "ASCENDING" }],
            properties,
            limit: page_size,
        }
    }

    /// Advance over one page of results. `full` says the page held `page_size` records;
    /// `fetched_ms` is our clock just before the request; `overlap_ms` how far back a new pass
    /// starts.
    pub(super) fn step(&self, page: &[Obs], full: bool, fetched_ms: i64, overlap_ms: i64) -> Step {
        let mut next = self.clone();
        next.pass_started_ms.get_or_insert(fetched_ms);
        let mut seen: std::collections::HashMap<String, i64> = next.seen.drain(..).collect();
        let mut emit = Vec::with_capacity(page.len());
        for o in page {
            let Some(ts) = o.ts_ms else {
                emit.push(false);
                continue;
            };
            next.watermark_ms = next.watermark_ms.max(ts);
            let fresh = seen.get(&o.id).is_none_or(|prev| *prev < ts);
            if fresh {
                seen.insert(o.id.clone(), ts);
            }
            emit.push(fresh);
        }

        let mut caught_up = false;
        match &self.phase {
            Phase::Scan if !full => {
                caught_up = true;
                next.reanchor(overlap_ms);
            }
            Phase::Scan => {
                let max_ts =
                    page.iter().map(|o| o.ts_ms.unwrap_or(self.ts_ms)).max().unwrap_or(self.ts_ms);
                if max_ts > self.ts_ms {
                    next.ts_ms = max_ts;
                    next.inclusive = true;
                } else {
                    // A whole page at one timestamp: the tie group may not fit in a page, and
                    // re-reading `>= ts` could return the same page forever.
                    next.phase = Phase::Tie { last_id: "0".into() };
                }
            }
            Phase::Tie { last_id } => {
                let mut last = last_id.clone();
                for o in page {
                    if id_greater(&o.id, &last) {
                        last = o.id.clone();
                    }
                }
                if full {
                    next.phase = Phase::Tie { last_id: last };
                } else {
                    next.phase = Phase::Scan;
                    next.inclusive = false;
                }
            }
        }

        let keep_from = if caught_up {
            // A settled (exclusive) start never re-reads its own timestamp.
            if next.inclusive { next.ts_ms } else { next.ts_ms.saturating_add(1) }
        } else {
            next.ts_ms.min(next.watermark_ms.saturating_sub(overlap_ms))
        };
        let mut kept: Vec<(String, i64)> =
            seen.into_iter().filter(|(_, t)| *t >= keep_from).collect();
        // Newest first for the cap, then a stable order so equal cursors serialise equally.
        kept.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        kept.truncate(SEEN_CAP);
        next.seen = kept;
        Step { next, emit, caught_up }
    }

    /// End of a pass: decide where the next one starts.
    fn reanchor(&mut self, overlap_ms: i64) {
        let wm = self.watermark_ms;
        let settled_now = self.pass_started_ms.is_some_and(|p| p.saturating_sub(overlap_ms) > wm);
        if settled_now {
            self.settled_ms = Some(self.settled_ms.map_or(wm, |s| s.max(wm)));
        }
        let anchor = wm.saturating_sub(overlap_ms);
        match self.settled_ms {
            Some(s) if s >= anchor => {
                self.ts_ms = s;
                self.inclusive = false;
            }
            _ => {
                self.ts_ms = anchor;
                self.inclusive = true;
            }
        }
        self.phase = Phase::Scan;
        self.pass_started_ms = None;
    }
}

/// HubSpot ids are numeric strings: compare them as numbers (by length, then digits), falling
/// back to text order for anything else.
fn id_greater(a: &str, b: &str) -> bool {
    let numeric = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    if numeric(a) && numeric(b) {
        let (a, b) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
        (a.len(), a) > (b.len(), b)
    } else {
        a > b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(id: u64, ts: i64) -> Obs {
        Obs { id: id.to_string(), ts_ms: Some(ts) }
    }

    #[test]
    fn ids_compare_numerically() {
        assert!(id_greater("10", "9"));
        assert!(!id_greater("9", "10"));
        assert!(!id_greater("0", "0"));
        assert!(id_greater("1", "0"));
    }

    #[test]
    fn full_page_moves_to_newest_timestamp_and_dedupes_it() {
        let c = PollCursor::start_at(0);
        let page = vec![obs(1, 5), obs(2, 7), obs(3, 7)];
        let s = c.step(&page, true, 1_000_000, 0);
        assert_eq!(s.emit, vec![true, true, true]);
        assert_eq!((s.next.ts_ms, s.next.inclusive), (7, true));
        // Re-reading `>= 7` returns 2 and 3 again: dropped.
        let s2 = s.next.step(&[obs(2, 7), obs(3, 7), obs(4, 8)], false, 1_000_001, 0);
        assert_eq!(s2.emit, vec![false, false, true]);
        assert!(s2.caught_up);
    }

    #[test]
    fn page_of_one_timestamp_enters_tie_phase() {
        let c = PollCursor::start_at(7);
        let s = c.step(&[obs(1, 7), obs(2, 7)], true, 1, 0);
        assert_eq!(s.next.phase, Phase::Tie { last_id: "0".into() });
        let q = serde_json::to_value(s.next.query(2, vec![])).expect("serialises");
        assert_eq!(q["filterGroups"][0]["filters"][0]["operator"], "EQ");
        assert_eq!(q["filterGroups"][0]["filters"][1]["propertyName"], "hs_object_id");
        assert_eq!(q["sorts"][0]["propertyName"], "hs_object_id");
        let s = s.next.step(&[obs(1, 7), obs(2, 7)], true, 2, 0);
        assert_eq!(s.next.phase, Phase::Tie { last_id: "2".into() });
        let s = s.next.step(&[obs(3, 7)], false, 3, 0);
        assert_eq!(s.emit, vec![true]);
        assert_eq!((s.next.phase.clone(), s.next.ts_ms, s.next.inclusive), (Phase::Scan, 7, false));
        assert!(!s.caught_up);
    }

    #[test]
    fn reanchor_overlaps_until_settled_and_never_lowers_watermark() {
        let overlap = 30_000;
        let now = 10_000_000;
        let c = PollCursor::start_at(0);
        // Fresh change 1 s ago: not settled, next pass starts `overlap` before it.
        let s = c.step(&[obs(1, now - 1_000)], false, now, overlap);
        assert!(s.caught_up);
        assert_eq!(s.next.watermark_ms, now - 1_000);
        assert_eq!((s.next.ts_ms, s.next.inclusive), (now - 1_000 - overlap, true));
        assert_eq!(s.next.seen, vec![("1".to_string(), now - 1_000)]);
        // Quiet later pass: settles at the watermark and starts strictly after it.
        let later = now + 60_000;
        let s2 = s.next.step(&[obs(1, now - 1_000)], false, later, overlap);
        assert_eq!(s2.emit, vec![false]);
        assert_eq!(s2.next.settled_ms, Some(now - 1_000));
        assert_eq!((s2.next.ts_ms, s2.next.inclusive), (now - 1_000, false));
        assert!(s2.next.watermark_ms >= s.next.watermark_ms);
    }

    #[test]
    fn sweeps_after_the_first_catch_up_then_every_n() {
        let mut c = PollCursor::start_at(0);
        c.count_caught_up(3);
        assert_eq!(c.sweep, Some(SweepPos { after: None }), "never swept: sweep now");
        c.swept(Some("100".into()));
        assert_eq!(c.sweep, Some(SweepPos { after: Some("100".into()) }));
        c.swept(None);
        assert_eq!((c.sweep.clone(), c.polls_since_sweep), (None, Some(0)));
        c.count_caught_up(3);
        c.count_caught_up(3);
        assert_eq!((c.sweep.clone(), c.polls_since_sweep), (None, Some(2)));
        c.count_caught_up(3);
        assert!(c.sweep.is_some(), "third caught-up poll");
        let mut off = PollCursor::start_at(0);
        off.count_caught_up(0);
        assert_eq!(off.sweep, None);
    }

    #[test]
    fn a_cursor_from_before_sweeps_still_reads() {
        let old = r#"{"v":1,"ts_ms":5,"inclusive":true,"phase":{"kind":"scan"},
            "watermark_ms":5,"settled_ms":null,"seen":[["7",5]],"pass_started_ms":null}"#;
        let c = PollCursor::parse(&Cursor(Some(old.into()))).expect("old cursor reads");
        assert_eq!((c.ts_ms, c.sweep, c.polls_since_sweep), (5, None, None));
        assert_eq!(c.seen, vec![("7".to_string(), 5)]);
    }

    #[test]
    fn parses_seeds_and_rejects_garbage() {
        assert_eq!(PollCursor::parse(&Cursor(None)).expect("none").ts_ms, 0);
        assert_eq!(PollCursor::parse(&Cursor(Some("1234".into()))).expect("ms").ts_ms, 1234);
        let c = PollCursor::parse(&Cursor(Some("1970-01-01T00:00:01Z".into()))).expect("rfc3339");
        assert_eq!(c.ts_ms, 1000);
        assert!(PollCursor::parse(&Cursor(Some("{nope".into()))).is_err());
        let c = PollCursor::start_at(5);
        let round = PollCursor::parse(&c.to_cursor().expect("encodes")).expect("decodes");
        assert_eq!(round, c);
    }
}
