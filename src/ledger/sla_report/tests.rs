//! The report's arithmetic on hand-made cycles; the whole path (clocks, ledger, report) is
//! tested in `src/sla/tests.rs` against a scripted week.

use chrono::{DateTime, TimeZone, Utc};

use super::*;

fn at(h: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 23, h, 0, 0).single().expect("valid")
}

fn cycle(start: u32, touch: Option<u32>, phase: &str) -> Cycle {
    Cycle {
        started_at: at(start),
        due_at: at(start + 4),
        phase: phase.into(),
        first_touch_at: touch.map(at),
        breached: false,
        escalated: false,
        recycled: false,
        disqualify_refused: false,
        attempts_at_disqualify: None,
        disqualified: false,
    }
}

#[test]
fn nearest_rank_percentiles() {
    let mut v: Vec<i64> = (1..=10).rev().collect();
    assert_eq!(nearest_rank(&mut v, 90), Some(9));
    assert_eq!(nearest_rank(&mut v, 100), Some(10));
    assert_eq!(nearest_rank(&mut v, 1), Some(1));
    assert_eq!(nearest_rank(&mut [7], 90), Some(7));
    assert_eq!(nearest_rank(&mut [], 90), None);
    // 11 values: rank ceil(9.9) = 10.
    let mut v: Vec<i64> = (1..=11).collect();
    assert_eq!(nearest_rank(&mut v, 90), Some(10));
}

#[test]
fn outcomes_are_exclusive_and_the_share_counts_decided_cycles_only() {
    let cycles = [
        cycle(1, Some(2), "met"),
        cycle(1, Some(9), "touched_late"),
        cycle(1, None, "recycled"),
        cycle(8, None, "waiting"),
        // Left the path at once: no touch, never overdue.
        cycle(2, None, "closed"),
        // Before the window.
        cycle(0, Some(1), "met"),
    ];
    let r = tally(&cycles, at(1), at(10));
    assert_eq!(r.handed_over, 5);
    assert_eq!(
        (r.met, r.touched_late, r.overdue, r.not_yet_due, r.left_before_deadline),
        (1, 1, 1, 1, 1)
    );
    assert_eq!(r.within_deadline_bp, Some(3333));
    assert_eq!(r.median_secs_to_first_touch, Some(3600));
    assert_eq!(r.p90_secs_to_first_touch, Some(8 * 3600));
    assert_eq!(r.median_attempts_before_disqualification, None);
}

#[test]
fn a_closed_cycle_that_breached_first_is_overdue() {
    let mut c = cycle(1, None, "closed");
    c.breached = true;
    let r = tally(&[c], at(0), at(10));
    assert_eq!((r.overdue, r.left_before_deadline, r.breached), (1, 0, 1));
}
