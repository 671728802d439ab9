//! The funnel report against seeded ledgers: a small scenario whose figures are worked out by
//! hand below, and random histories whose figures an independent oracle computes from the
//! full sequence of entries (which the ledger does not store: it keeps first and latest
//! entry per stage).

use chrono::{Duration, TimeZone};
use rand::{Rng, SeedableRng};

use super::*;
use crate::domain::{Field, Fields};
use crate::ledger::SeedPerson;
use LifecycleStage::{
    Customer, Disqualified, Lead, Mql, Opportunity, Recycled, Sal, Sql, Subscriber,
};

fn day(d: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single().expect("valid") + Duration::days(d)
}

fn secs(s: i64) -> DateTime<Utc> {
    day(0) + Duration::seconds(s)
}

fn person(n: usize, history: &[(LifecycleStage, DateTime<Utc>)]) -> SeedPerson {
    let fields: Fields = [(Field::Email, format!("p{n}@x.test"))].into();
    let lifecycle = (!history.is_empty()).then(|| {
        let mut state = PersonLifecycle::default();
        for (stage, at) in history {
            assert!(state.dates.enter(*stage, *at), "test histories never repeat a stage");
            state.stage = Some(*stage);
        }
        state
    });
    SeedPerson { id: format!("P{n}"), fields, lifecycle }
}

fn ledger() -> (tempfile::TempDir, Ledger) {
    let dir = tempfile::tempdir().expect("tempdir");
    let l = Ledger::open(&dir.path().join("ledger.db")).expect("open");
    (dir, l)
}

fn row(r: &FunnelReport, stage: LifecycleStage) -> &FunnelRow {
    r.rows.iter().find(|x| x.stage == stage).expect("every stage has a row")
}

#[test]
fn hand_worked_scenario() {
    let (_dir, l) = ledger();
    let people = vec![
        // A: straight down the funnel; lead entered before the window.
        person(
            0,
            &[
                (Lead, day(0)),
                (Mql, day(12)),
                (Sql, day(15)),
                (Opportunity, day(20)),
                (Customer, day(30)),
            ],
        ),
        // B: lead and MQL at one instant (one rule evaluation), recycled, qualified again.
        person(1, &[(Lead, day(11)), (Mql, day(11)), (Recycled, day(21)), (Mql, day(31))]),
        // C: MQL before the window, accepted, then disqualified.
        person(2, &[(Mql, day(5)), (Sal, day(12)), (Disqualified, day(14))]),
        // D: a lead that stays.
        person(3, &[(Lead, day(12))]),
        // E: qualifies after the window's end, which must not count.
        person(4, &[(Lead, day(35)), (Mql, day(45))]),
        // F: not placed: no lifecycle row, not a person of the report.
        person(5, &[]),
    ];
    assert_eq!(l.seed_persons(people, day(50)).expect("seed"), 6);
    let r = l.funnel(day(10), day(40)).expect("report");
    assert_eq!(r.persons, 5);
    let d = |n: i64| Some(n * 86_400);
    let expect =
        |stage, entered, converted: Option<u64>, bp: Option<u64>, left, median, rec, dq| {
            FunnelRow {
                stage,
                entered,
                converted,
                conversion_bp: bp,
                left,
                median_secs_in_stage: median,
                recycled: rec,
                disqualified: dq,
            }
        };
    let want = vec![
        expect(Subscriber, 0, Some(0), None, 0, None, 0, 0),
        // B, D, E; only B went on (to MQL at the same instant: 0 s in stage).
        expect(Lead, 3, Some(1), Some(3333), 1, Some(0), 1, 0),
        // A (3 days to SQL) and B (cohort entry is the first, day 11; 10 days to recycled).
        expect(Mql, 2, Some(1), Some(5000), 2, d(3), 1, 0),
        expect(Sal, 1, Some(0), Some(0), 1, d(2), 0, 1),
        expect(Sql, 1, Some(1), Some(10_000), 1, d(5), 0, 0),
        expect(Opportunity, 1, Some(1), Some(10_000), 1, d(10), 0, 0),
        expect(Customer, 1, Some(0), Some(0), 0, None, 0, 0),
        // B qualified again 10 days after being recycled.
        expect(Recycled, 1, Some(1), Some(10_000), 1, d(10), 0, 0),
        expect(Disqualified, 1, None, None, 0, None, 0, 0),
    ];
    assert_eq!(r.rows, want);
    // The read-only path gives the same report.
    let reader = LedgerReader::open(l.path()).expect("reader");
    assert_eq!(reader.funnel(day(10), day(40)).expect("report"), r);
}

/// A random plausible history: forward moves (sometimes at the same instant, as one rule
/// evaluation makes them), recycles, disqualifications and reopens, no stage entered more
/// than twice (so every entry is one the ledger keeps).
fn history(rng: &mut impl Rng) -> Vec<(LifecycleStage, DateTime<Utc>)> {
    let mut t = rng.random_range(0..60 * 86_400);
    let mut cur = [Subscriber, Lead, Mql][rng.random_range(0..3)];
    let mut out = vec![(cur, secs(t))];
    let count =
        |out: &[(LifecycleStage, DateTime<Utc>)], s| out.iter().filter(|e| e.0 == s).count();
    for _ in 0..rng.random_range(0..8) {
        let mut options: Vec<(LifecycleStage, bool)> = LifecycleStage::ALL
            .into_iter()
            .filter(|s| LifecycleStage::is_forward_move(cur, *s))
            .map(|s| (s, true))
            .collect();
        if matches!(cur, Mql | Sal | Sql | Opportunity) {
            options.push((Recycled, false));
        }
        if matches!(cur, Lead | Mql | Sal | Sql | Recycled) {
            options.push((Disqualified, false));
        }
        if cur == Disqualified {
            options.push((Lead, false));
        }
        options.retain(|(s, _)| count(&out, *s) < 2);
        if options.is_empty() {
            break;
        }
        let (next, forward) = options[rng.random_range(0..options.len())];
        let step =
            if forward && rng.random_bool(0.3) { 0 } else { rng.random_range(1..6 * 86_400) };
        t += step;
        cur = next;
        out.push((cur, secs(t)));
    }
    out
}

/// The figures from full histories, by walking each sequence.
fn oracle(
    histories: &[Vec<(LifecycleStage, DateTime<Utc>)>],
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> FunnelReport {
    let mut rows = Vec::new();
    for stage in LifecycleStage::ALL {
        let mut entered = 0u64;
        let mut converted = 0u64;
        let mut left = 0u64;
        let mut rec = 0u64;
        let mut dq = 0u64;
        let mut times = Vec::new();
        for h in histories {
            let Some(i) = h.iter().position(|(s, at)| *s == stage && *at >= from && *at <= to)
            else {
                continue;
            };
            entered += 1;
            let later: Vec<_> = h[i + 1..].iter().filter(|(_, at)| *at <= to).collect();
            converted +=
                u64::from(later.iter().any(|(s, _)| LifecycleStage::is_forward_move(stage, *s)));
            rec += u64::from(stage != Recycled && later.iter().any(|(s, _)| *s == Recycled));
            dq += u64::from(stage != Disqualified && later.iter().any(|(s, _)| *s == Disqualified));
            if let Some((_, at)) = later.first() {
                left += 1;
                times.push((*at - h[i].1).num_seconds());
            }
        }
        times.sort_unstable();
        let converts = stage != Disqualified;
        rows.push(FunnelRow {
            stage,
            entered,
            converted: converts.then_some(converted),
            conversion_bp: (converts && entered > 0).then(|| converted * 10_000 / entered),
            left,
            median_secs_in_stage: (!times.is_empty()).then(|| times[(times.len() - 1) / 2]),
            recycled: rec,
            disqualified: dq,
        });
    }
    FunnelReport { from, to, persons: histories.len() as u64, rows }
}

#[test]
fn random_histories_match_the_oracle() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(5);
    let histories: Vec<_> = (0..2_000).map(|_| history(&mut rng)).collect();
    let (_dir, l) = ledger();
    l.seed_persons(histories.iter().enumerate().map(|(n, h)| person(n, h)), day(200))
        .expect("seed");
    for (from, to) in [(day(20), day(50)), (day(0), day(200)), (day(40), day(41))] {
        let got = l.funnel(from, to).expect("report");
        let want = oracle(&histories, from, to);
        assert_eq!(got, want, "window {from} .. {to}");
    }
    // Not vacuous: the wide window sees every kind of figure.
    let wide = l.funnel(day(0), day(200)).expect("report");
    for stage in [Lead, Mql, Sal, Sql, Recycled, Disqualified] {
        let r = row(&wide, stage);
        assert!(r.entered > 0 && r.left > 0, "{stage}: {r:?}");
    }
    assert!(row(&wide, Mql).recycled > 0 && row(&wide, Mql).disqualified > 0);
}
