//! SLA clocks with controlled time: a deadline over a weekend, each action once, a restart in
//! the middle of a clock, attempts and the disqualification policy.

use chrono::{TimeZone, Weekday};
use chrono_tz::Europe::Berlin;
use proptest::prelude::*;

use super::*;
use crate::contract::calendar::WorkingHours;

fn utc(m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2025, m, d, h, min, 0).single().expect("valid")
}

fn berlin() -> BusinessCalendar {
    BusinessCalendar::new(
        Berlin,
        &[Weekday::Mon, Weekday::Tue, Weekday::Wed, Weekday::Thu, Weekday::Fri],
        WorkingHours::parse("09:00-17:30").expect("hours"),
        [],
    )
    .expect("calendar")
}

fn policy() -> SlaPolicy {
    SlaPolicy { reassign_to: Some("00G000000000001".into()), ..SlaPolicy::default() }
}

/// Handed over Friday 6 June 2025 15:00 CEST (13:00 UTC). Due after 4 business hours:
/// 2.5 h Friday + 1.5 h Monday = Monday 10:30 CEST (08:30 UTC). Escalation 2 h later, Monday
/// 12:30 CEST (10:30 UTC). Recycling 8 h after that: 5 h Monday + 3 h Tuesday = Tuesday 12:00
/// CEST (10:00 UTC).
fn friday_clock() -> SlaClock {
    SlaClock::start(utc(6, 6, 13, 0), &policy(), &berlin())
}

fn sec() -> TimeDelta {
    TimeDelta::seconds(1)
}

#[test]
fn deadlines_are_counted_in_business_hours_over_the_weekend() {
    let c = friday_clock();
    assert_eq!(c.due_at, utc(6, 9, 8, 30));
    assert_eq!(c.escalate_at, Some(utc(6, 9, 10, 30)));
    assert_eq!(c.recycle_at, Some(utc(6, 10, 10, 0)));
    assert_eq!(c.phase, SlaPhase::Waiting);
}

#[test]
fn an_untouched_clock_breaches_escalates_and_recycles_once_each() {
    let p = policy();
    let mut c = friday_clock();
    for quiet in [utc(6, 6, 17, 0), utc(6, 7, 12, 0), utc(6, 8, 23, 0), utc(6, 9, 8, 30)] {
        assert_eq!(c.evaluate(quiet, &p), vec![], "nothing due at {quiet}");
    }
    assert_eq!(
        c.evaluate(utc(6, 9, 8, 30) + sec(), &p),
        vec![SlaAction::Breached { due_at: c.due_at }]
    );
    assert_eq!(c.evaluate(utc(6, 9, 9, 0), &p), vec![]);
    assert_eq!(c.evaluate(utc(6, 9, 10, 30), &p), vec![], "escalation waits for the grace to pass");
    assert_eq!(
        c.evaluate(utc(6, 9, 10, 30) + sec(), &p),
        vec![SlaAction::Escalate {
            due_at: utc(6, 9, 8, 30),
            reassign_to: Some("00G000000000001".into())
        }]
    );
    assert_eq!(c.evaluate(utc(6, 9, 17, 0), &p), vec![]);
    assert_eq!(
        c.evaluate(utc(6, 10, 10, 1), &p),
        vec![SlaAction::Recycle { reason: ReasonCode::new("sla_expired").expect("code") }]
    );
    assert_eq!(c.phase, SlaPhase::Recycled);
    assert_eq!(c.evaluate(utc(6, 10, 10, 1), &p), vec![]);
    assert_eq!(c.evaluate(utc(7, 1, 0, 0), &p), vec![]);
    assert!(!c.touch(TouchKind::Activity, utc(6, 10, 11, 0)), "a recycled clock ignores touches");
    assert_eq!(c.next_wakeup(), None);
}

#[test]
fn a_touch_by_the_deadline_meets_it() {
    let p = policy();
    let mut c = friday_clock();
    assert!(c.touch(TouchKind::StatusWorking, utc(6, 9, 8, 30)), "exactly at the deadline");
    assert_eq!(
        c.evaluate(utc(6, 9, 8, 0), &p),
        vec![],
        "a touch stamped after now is not known yet"
    );
    assert_eq!(
        c.evaluate(utc(6, 9, 9, 0), &p),
        vec![SlaAction::Met { first_touch_at: utc(6, 9, 8, 30) }]
    );
    assert_eq!(c.evaluate(utc(6, 9, 9, 0), &p), vec![]);
    assert_eq!(c.evaluate(utc(6, 20, 9, 0), &p), vec![], "no escalation after a met deadline");
    assert_eq!(c.attempts, 0, "a status change is a touch, not an attempt");
}

#[test]
fn a_late_touch_stops_escalation_and_resolves_the_alert() {
    let p = policy();
    let mut c = friday_clock();
    assert_eq!(c.evaluate(utc(6, 9, 9, 0), &p).len(), 1);
    c.touch(TouchKind::Activity, utc(6, 9, 9, 30));
    assert_eq!(
        c.evaluate(utc(6, 9, 9, 45), &p),
        vec![SlaAction::TouchedLate { first_touch_at: utc(6, 9, 9, 30) }]
    );
    assert_eq!(c.evaluate(utc(6, 12, 0, 0), &p), vec![]);
    assert_eq!(c.phase, SlaPhase::TouchedLate);
}

#[test]
fn a_timely_touch_reported_after_the_breach_turns_the_clock_to_met() {
    let p = policy();
    let mut c = friday_clock();
    assert_eq!(c.evaluate(utc(6, 9, 11, 0), &p).len(), 2, "breached and escalated");
    c.touch(TouchKind::Activity, utc(6, 9, 8, 0));
    assert_eq!(
        c.evaluate(utc(6, 9, 11, 5), &p),
        vec![SlaAction::Met { first_touch_at: utc(6, 9, 8, 0) }]
    );
    assert_eq!(c.evaluate(utc(6, 11, 0, 0), &p), vec![]);
}

#[test]
fn after_downtime_one_evaluation_returns_every_missed_milestone_in_order() {
    let p = policy();
    let mut c = friday_clock();
    let got = c.evaluate(utc(6, 11, 0, 0), &p);
    assert_eq!(
        got,
        vec![
            SlaAction::Breached { due_at: utc(6, 9, 8, 30) },
            SlaAction::Escalate {
                due_at: utc(6, 9, 8, 30),
                reassign_to: Some("00G000000000001".into())
            },
            SlaAction::Recycle { reason: ReasonCode::new("sla_expired").expect("code") },
        ]
    );
    // A touch that came between escalation and recycling, seen only after the downtime.
    let mut c = friday_clock();
    c.touch(TouchKind::Activity, utc(6, 9, 12, 0));
    let got = c.evaluate(utc(6, 11, 0, 0), &p);
    assert_eq!(got.len(), 3);
    assert!(matches!(got[1], SlaAction::Escalate { .. }));
    assert_eq!(got[2], SlaAction::TouchedLate { first_touch_at: utc(6, 9, 12, 0) });
}

#[test]
fn a_restart_mid_clock_resumes_without_repeating_actions() {
    let p = policy();
    let roundtrip = |c: &SlaClock| -> SlaClock {
        serde_json::from_str(&serde_json::to_string(c).expect("serialize")).expect("deserialize")
    };
    let mut c = friday_clock();
    assert_eq!(c.evaluate(utc(6, 9, 9, 0), &p).len(), 1, "breached before the restart");
    let json = serde_json::to_string(&c).expect("serialize");
    assert!(json.contains("\"phase\":\"breached\""), "{json}");
    let mut restored = roundtrip(&c);
    assert_eq!(restored, c);
    assert_eq!(
        restored.evaluate(utc(6, 9, 9, 0), &p),
        vec![],
        "the breach alert is not sent again"
    );
    assert_eq!(restored.evaluate(utc(6, 9, 10, 31), &p).len(), 1, "escalation still comes");
    // Touches and attempts survive a second restart.
    assert!(restored.touch(TouchKind::Activity, utc(6, 9, 11, 0)));
    let mut again = roundtrip(&restored);
    assert_eq!(again.attempts, 1);
    assert_eq!(
        again.evaluate(utc(6, 9, 11, 5), &p),
        vec![SlaAction::TouchedLate { first_touch_at: utc(6, 9, 11, 0) }]
    );
    assert_eq!(roundtrip(&again).evaluate(utc(6, 20, 0, 0), &p), vec![]);
}

#[test]
fn attempts_are_counted_once_each() {
    let mut c = friday_clock();
    assert!(!c.touch(TouchKind::Activity, utc(6, 6, 12, 0)), "before the handover");
    assert!(c.touch(TouchKind::Activity, utc(6, 9, 8, 0)));
    assert!(!c.touch(TouchKind::Activity, utc(6, 9, 8, 0)), "the same activity polled twice");
    assert!(
        !c.touch(TouchKind::LastActivity, utc(6, 9, 8, 0)),
        "the same activity, seen by its date"
    );
    assert!(!c.touch(TouchKind::StatusWorking, utc(6, 9, 9, 0)), "not an attempt, not earlier");
    assert!(!c.touch(TouchKind::LastActivity, utc(6, 9, 20, 0)), "a touch, not an attempt");
    assert!(c.touch(TouchKind::Activity, utc(6, 10, 0, 0)));
    assert!(c.touch(TouchKind::StageAdvanced, utc(6, 6, 14, 0)), "an earlier first touch");
    assert_eq!(c.attempts, 2);
    assert_eq!(c.first_touch_at, Some(utc(6, 6, 14, 0)));
    assert_eq!(c.first_attempt_at, Some(utc(6, 9, 8, 0)));
    assert_eq!(c.last_attempt_at, Some(utc(6, 10, 0, 0)));
}

#[test]
fn disqualification_needs_attempts_spread_over_days() {
    let p = policy();
    let mut c = friday_clock();
    let refused = c.may_disqualify(utc(6, 30, 0, 0), &p).expect_err("no attempts");
    assert_eq!(refused, Refusal::TooFewAttempts { attempts: 0, required: 3 });
    assert_eq!(
        refused.to_string(),
        "disqualification refused: 0 of 3 required contact attempts made; recycle to nurture instead"
    );
    for day in [9, 10, 11] {
        c.touch(TouchKind::Activity, utc(6, day, 9, 0));
    }
    let refused = c.may_disqualify(utc(6, 13, 0, 0), &p).expect_err("too soon");
    assert_eq!(refused, Refusal::TooSoon { required_days: 5 });
    assert!(refused.to_string().contains("at least 5 days"));
    assert_eq!(c.may_disqualify(utc(6, 14, 8, 59), &p), Err(Refusal::TooSoon { required_days: 5 }));
    assert_eq!(c.may_disqualify(utc(6, 14, 9, 0), &p), Ok(()));
    // No policy, no refusal; a closed clock no longer governs.
    let lax = SlaPolicy { disqualify_min_attempts: 0, disqualify_min_days: 0, ..policy() };
    assert_eq!(friday_clock().may_disqualify(utc(6, 6, 13, 0), &lax), Ok(()));
    let mut closed = friday_clock();
    closed.close();
    assert_eq!(closed.may_disqualify(utc(6, 6, 13, 0), &p), Ok(()));
    assert_eq!(closed.evaluate(utc(7, 1, 0, 0), &p), vec![], "a closed clock is silent");
}

#[test]
fn next_wakeup_follows_the_phase() {
    let p = policy();
    let mut c = friday_clock();
    let tick = TimeDelta::nanoseconds(1);
    assert_eq!(c.next_wakeup(), Some(utc(6, 9, 8, 30) + tick));
    c.evaluate(utc(6, 9, 9, 0), &p);
    assert_eq!(c.next_wakeup(), Some(utc(6, 9, 10, 30) + tick));
    // Evaluating at the wakeup yields the next action.
    let at = c.next_wakeup().expect("pending");
    assert_eq!(c.evaluate(at, &p).len(), 1);
    c.touch(TouchKind::Activity, utc(6, 9, 12, 0));
    assert_eq!(c.next_wakeup(), Some(utc(6, 9, 12, 0)), "a known touch resolves the clock");
    c.evaluate(utc(6, 9, 12, 0), &p);
    assert_eq!(c.next_wakeup(), None);
}

#[test]
fn optional_escalation_and_recycling_can_be_turned_off() {
    let p = SlaPolicy { escalate: false, recycle_after: None, ..policy() };
    let mut c = SlaClock::start(utc(6, 6, 13, 0), &p, &berlin());
    assert_eq!((c.escalate_at, c.recycle_at), (None, None));
    assert_eq!(
        c.evaluate(utc(7, 30, 0, 0), &p),
        vec![SlaAction::Breached { due_at: utc(6, 9, 8, 30) }]
    );
    assert_eq!(c.next_wakeup(), None, "nothing more until a touch");
    // Rescheduling under a shorter deadline moves it; passed milestones stay passed.
    let short = SlaPolicy { first_touch: TimeDelta::hours(1), ..policy() };
    c.reschedule(&short, &berlin());
    assert_eq!(c.due_at, utc(6, 6, 14, 0));
    assert_eq!(c.phase, SlaPhase::Breached);
    assert_eq!(c.evaluate(utc(7, 30, 0, 0), &short).len(), 2, "escalate and recycle, not breach");
}

proptest! {
    /// Evaluating at many times gives the same actions, in the same order, as evaluating once
    /// at the end, when each touch is reported as it happens; and no action repeats.
    #[test]
    fn evaluating_often_equals_evaluating_once(
        mut times in proptest::collection::vec(0i64..(8 * 24 * 60), 0..20),
        touch in proptest::option::of((0i64..(8 * 24 * 60), any::<bool>())),
        end in 0i64..(9 * 24 * 60),
    ) {
        let p = policy();
        let start = utc(6, 6, 13, 0);
        let at = |m: i64| start + TimeDelta::minutes(m);
        times.retain(|t| *t <= end);
        times.sort_unstable();
        times.push(end);
        let kind = |attempt: bool| if attempt { TouchKind::Activity } else { TouchKind::StatusWorking };

        let mut often = friday_clock();
        let mut seen = Vec::new();
        let mut touched = false;
        for t in &times {
            if let Some((tm, a)) = touch && !touched && tm <= *t {
                often.touch(kind(a), at(tm));
                touched = true;
            }
            seen.extend(often.evaluate(at(*t), &p));
            prop_assert_eq!(often.evaluate(at(*t), &p), vec![], "idempotent at the same time");
        }

        let mut once = friday_clock();
        if let Some((tm, a)) = touch && tm <= end {
            once.touch(kind(a), at(tm));
        }
        let all = once.evaluate(at(end), &p);
        prop_assert_eq!(&seen, &all);
        prop_assert_eq!(&often, &once, "the same stored state");
        let kinds: Vec<std::mem::Discriminant<SlaAction>> = all.iter().map(std::mem::discriminant).collect();
        for (i, k) in kinds.iter().enumerate() {
            prop_assert!(!kinds[i + 1..].contains(k), "an action repeats: {:?}", all);
        }
    }
}

fn seen(value: LastActivity, seen_at: DateTime<Utc>) -> ActivitySeen {
    ActivitySeen { value, seen_at }
}

/// A `LastActivityDate` in June 2025.
fn june(d: u32) -> LastActivity {
    LastActivity::Date(chrono::NaiveDate::from_ymd_opt(2025, 6, d).expect("valid"))
}

#[test]
fn a_last_activity_date_counts_only_when_it_provably_moved_after_the_start() {
    // Started Friday 6 June 15:00 in Berlin (13:00 UTC).
    let (c, cal) = (friday_clock(), berlin());
    let never = LastActivity::Never;
    let modified = utc(6, 6, 14, 0);
    assert_eq!(
        c.last_activity_touch(&cal, None, june(6), modified),
        None,
        "a first read on the start's date may show an activity from before the start"
    );
    assert_eq!(
        c.last_activity_touch(&cal, Some(&seen(never, utc(6, 6, 13, 0))), june(6), modified),
        Some(modified),
        "read empty at the start, dated that day later: it moved during the cycle"
    );
    assert_eq!(
        c.last_activity_touch(&cal, Some(&seen(never, utc(6, 6, 12, 59))), june(6), modified),
        None,
        "read empty just before the start proves nothing about the start's day"
    );
    assert_eq!(
        c.last_activity_touch(&cal, None, june(9), utc(6, 9, 7, 0)),
        Some(utc(6, 9, 7, 0)),
        "a date after the start's date counts, stamped when the record said so, not at midnight"
    );
    assert_eq!(
        c.last_activity_touch(&cal, Some(&seen(never, utc(6, 6, 14, 0))), june(5), modified),
        None,
        "dated before the start's date: an activity of an earlier cycle, logged late"
    );
    let held = seen(june(9), utc(6, 9, 7, 0));
    assert_eq!(
        c.last_activity_touch(&cal, Some(&held), june(9), utc(6, 9, 8, 0)),
        None,
        "old news"
    );
    assert_eq!(
        c.last_activity_touch(&cal, Some(&held), june(6), utc(6, 9, 8, 0)),
        None,
        "moved back: a task was deleted or reopened"
    );
    assert_eq!(c.last_activity_touch(&cal, Some(&held), never, utc(6, 9, 8, 0)), None);
    assert_eq!(c.last_activity_touch(&cal, None, never, utc(6, 9, 8, 0)), None);
}

#[test]
fn the_start_date_is_read_in_the_calendar_time_zone() {
    // 23:30 UTC on Thursday 5 June is 01:30 on Friday 6 June in Berlin.
    let started = utc(6, 5, 23, 30);
    let c = SlaClock::start(started, &policy(), &berlin());
    assert_eq!(c.last_activity_touch(&berlin(), None, june(6), utc(6, 6, 9, 0)), None);
    let in_utc = BusinessCalendar::default();
    let c = SlaClock::start(started, &policy(), &in_utc);
    assert_eq!(
        c.last_activity_touch(&in_utc, None, june(6), utc(6, 6, 9, 0)),
        Some(utc(6, 6, 9, 0)),
        "in UTC the clock started on the 5th"
    );
}

#[test]
fn a_last_contacted_instant_is_taken_as_stamped_within_what_the_reads_prove() {
    let (c, cal) = (friday_clock(), berlin());
    let at = LastActivity::At;
    assert_eq!(
        c.last_activity_touch(&cal, None, at(utc(6, 6, 14, 0)), utc(6, 6, 14, 5)),
        Some(utc(6, 6, 14, 0))
    );
    assert_eq!(
        c.last_activity_touch(&cal, None, at(utc(6, 6, 12, 0)), utc(6, 6, 14, 5)),
        None,
        "before the start"
    );
    assert_eq!(
        c.last_activity_touch(
            &cal,
            Some(&seen(LastActivity::Never, utc(6, 6, 15, 0))),
            at(utc(6, 6, 14, 0)),
            utc(6, 6, 16, 0)
        ),
        Some(utc(6, 6, 15, 0)),
        "logged after a read that did not show it: no earlier than that read"
    );
    assert_eq!(
        c.last_activity_touch(&cal, None, at(utc(6, 10, 9, 0)), utc(6, 6, 16, 0)),
        Some(utc(6, 6, 16, 0)),
        "a meeting dated in the future was booked by the record's modification"
    );
    let held = seen(at(utc(6, 6, 14, 0)), utc(6, 6, 14, 5));
    assert_eq!(
        c.last_activity_touch(&cal, Some(&held), at(utc(6, 6, 14, 0)), utc(6, 6, 17, 0)),
        None
    );
}

#[test]
fn a_last_activity_touch_meets_the_deadline_without_counting_an_attempt() {
    let (mut c, p) = (friday_clock(), policy());
    assert!(c.touch(TouchKind::LastActivity, utc(6, 9, 8, 0)));
    assert_eq!((c.attempts, c.first_attempt_at), (0, None));
    assert!(c.may_disqualify(utc(6, 20, 0, 0), &p).is_err(), "no attempts were made");
    assert_eq!(
        c.evaluate(utc(6, 9, 8, 1), &p),
        vec![SlaAction::Met { first_touch_at: utc(6, 9, 8, 0) }]
    );
}
