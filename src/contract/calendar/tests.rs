//! Business calendar: weekends, holidays, starts outside hours, and the days the clocks change
//! in Europe/Berlin and America/New_York. Expected instants are written out in UTC by hand.

use chrono::TimeZone;
use chrono_tz::America::New_York;
use chrono_tz::Europe::Berlin;
use proptest::prelude::*;

use super::*;

const WEEKDAYS: [Weekday; 5] =
    [Weekday::Mon, Weekday::Tue, Weekday::Wed, Weekday::Thu, Weekday::Fri];
const ALL_DAYS: [Weekday; 7] = [
    Weekday::Mon,
    Weekday::Tue,
    Weekday::Wed,
    Weekday::Thu,
    Weekday::Fri,
    Weekday::Sat,
    Weekday::Sun,
];

fn date(y: i32, m: u32, d: u32) -> NaiveDate {
    NaiveDate::from_ymd_opt(y, m, d).expect("valid date")
}

fn utc(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, m, d, h, min, 0).single().expect("valid")
}

fn hours(h: f64) -> TimeDelta {
    TimeDelta::minutes((h * 60.0) as i64)
}

/// Berlin office, 09:00–17:30, Easter 2025 off.
fn berlin() -> BusinessCalendar {
    BusinessCalendar::new(
        Berlin,
        &WEEKDAYS,
        WorkingHours::parse("09:00-17:30").expect("hours"),
        [date(2025, 4, 18), date(2025, 4, 21)],
    )
    .expect("calendar")
}

fn around_the_clock(tz: Tz) -> BusinessCalendar {
    BusinessCalendar::new(tz, &ALL_DAYS, WorkingHours::parse("00:00-24:00").expect("hours"), [])
        .expect("calendar")
}

#[test]
fn working_hours_parse_and_print() {
    let h = WorkingHours::parse("09:00-17:30").expect("valid");
    assert_eq!(h.to_string(), "09:00-17:30");
    assert_eq!(h.length(), hours(8.5));
    assert_eq!(WorkingHours::parse(" 00:00 - 24:00 ").map(|h| h.length()), Some(hours(24.0)));
    for bad in
        ["17:00-09:00", "09:00-09:00", "9:00-17:00", "09:00", "09:60-10:00", "24:30-25:00", "x"]
    {
        assert_eq!(WorkingHours::parse(bad), None, "{bad}");
    }
    assert_eq!(BusinessCalendar::new(Berlin, &[], h, []), Err(CalendarError::NoWorkingDays));
}

#[test]
fn a_deadline_runs_over_the_weekend_and_the_spring_change() {
    // Friday 28 March 2025 16:00 CET (15:00 UTC); clocks go forward on Sunday the 30th.
    // 1.5 h on Friday, 2.5 h on Monday from 09:00 CEST: 11:30 CEST = 09:30 UTC.
    let cal = berlin();
    let start = utc(2025, 3, 28, 15, 0);
    assert_eq!(cal.deadline(start, hours(4.0)), utc(2025, 3, 31, 9, 30));
    assert_eq!(cal.business_time_between(start, utc(2025, 3, 31, 9, 30)), hours(4.0));
    // Saturday and Sunday count nothing.
    assert_eq!(
        cal.business_time_between(utc(2025, 3, 29, 0, 0), utc(2025, 3, 31, 7, 0)),
        TimeDelta::zero()
    );
}

#[test]
fn a_deadline_skips_holidays() {
    // Thursday 17 April 2025 15:00 CEST (13:00 UTC): 2.5 h that day; Good Friday, the weekend
    // and Easter Monday are off; 5.5 h on Tuesday from 09:00: 14:30 CEST = 12:30 UTC.
    let cal = berlin();
    let start = utc(2025, 4, 17, 13, 0);
    assert_eq!(cal.deadline(start, hours(8.0)), utc(2025, 4, 22, 12, 30));
    assert!(!cal.is_working_day(date(2025, 4, 18)));
    assert!(cal.is_working_day(date(2025, 4, 17)));
    assert_eq!(cal.window(date(2025, 4, 21)), None);
    assert_eq!(cal.business_time_between(start, utc(2025, 4, 22, 12, 30)), hours(8.0));
}

#[test]
fn a_start_outside_hours_counts_from_the_next_opening() {
    let cal = berlin();
    // Monday 2 June 2025 07:00 CEST (05:00 UTC): the hour runs 09:00-10:00 CEST.
    assert_eq!(cal.deadline(utc(2025, 6, 2, 5, 0), hours(1.0)), utc(2025, 6, 2, 8, 0));
    // Monday 20:00 CEST: Tuesday 10:00 CEST.
    assert_eq!(cal.deadline(utc(2025, 6, 2, 18, 0), hours(1.0)), utc(2025, 6, 3, 8, 0));
    // Saturday: Monday.
    assert_eq!(cal.deadline(utc(2025, 6, 7, 10, 0), hours(1.0)), utc(2025, 6, 9, 8, 0));
    // A deadline that fills Friday exactly ends at Friday's close, not Monday's opening.
    assert_eq!(cal.deadline(utc(2025, 6, 6, 7, 0), hours(8.5)), utc(2025, 6, 6, 15, 30));
    // Zero: the first working instant at or after the start; the close is already closed.
    assert_eq!(cal.deadline(utc(2025, 6, 6, 10, 0), TimeDelta::zero()), utc(2025, 6, 6, 10, 0));
    assert_eq!(cal.deadline(utc(2025, 6, 6, 15, 30), TimeDelta::zero()), utc(2025, 6, 9, 7, 0));
    assert_eq!(cal.deadline(utc(2025, 6, 6, 10, 0), TimeDelta::hours(-3)), utc(2025, 6, 6, 10, 0));
    assert!(cal.is_open(utc(2025, 6, 6, 7, 0)));
    assert!(!cal.is_open(utc(2025, 6, 6, 15, 30)));
    // Many days: 3 full days of 8.5 h from Monday's opening end on Wednesday's close.
    assert_eq!(cal.deadline(utc(2025, 6, 2, 7, 0), hours(25.5)), utc(2025, 6, 4, 15, 30));
}

#[test]
fn dst_days_are_23_and_25_hours_long_in_berlin_and_new_york() {
    let berlin = around_the_clock(Berlin);
    let ny = around_the_clock(New_York);
    // Local midnights in UTC: Berlin 30 March 2025 00:00 CET = 29th 23:00 UTC; 31st 00:00 CEST
    // = 30th 22:00 UTC.
    assert_eq!(
        berlin.business_time_between(utc(2025, 3, 29, 23, 0), utc(2025, 3, 30, 22, 0)),
        TimeDelta::hours(23)
    );
    assert_eq!(
        berlin.window(date(2025, 3, 30)),
        Some((utc(2025, 3, 29, 23, 0), utc(2025, 3, 30, 22, 0)))
    );
    // Berlin 26 October 2025: 00:00 CEST = 25th 22:00 UTC to 27th 00:00 CET = 26th 23:00 UTC.
    assert_eq!(
        berlin.window(date(2025, 10, 26)),
        Some((utc(2025, 10, 25, 22, 0), utc(2025, 10, 26, 23, 0)))
    );
    assert_eq!(
        berlin.business_time_between(utc(2025, 10, 25, 22, 0), utc(2025, 10, 26, 23, 0)),
        TimeDelta::hours(25)
    );
    // New York 9 March 2025 (EST -5 to EDT -4) and 2 November 2025 (back to EST).
    assert_eq!(ny.window(date(2025, 3, 9)), Some((utc(2025, 3, 9, 5, 0), utc(2025, 3, 10, 4, 0))));
    assert_eq!(
        ny.window(date(2025, 11, 2)),
        Some((utc(2025, 11, 2, 4, 0), utc(2025, 11, 3, 5, 0)))
    );
    // Around the clock, business time is elapsed time, across the change.
    let start = utc(2025, 3, 8, 17, 0);
    assert_eq!(ny.deadline(start, TimeDelta::hours(24)), start + TimeDelta::hours(24));
}

#[test]
fn office_hours_on_dst_days_keep_their_length_in_new_york() {
    let ny = BusinessCalendar::new(
        New_York,
        &ALL_DAYS,
        WorkingHours::parse("09:00-17:00").expect("hours"),
        [],
    )
    .expect("calendar");
    // Saturday 8 March 2025 16:00 EST (21:00 UTC) + 3 h: 1 h Saturday, 2 h Sunday from 09:00
    // EDT (13:00 UTC): 15:00 UTC.
    assert_eq!(ny.deadline(utc(2025, 3, 8, 21, 0), TimeDelta::hours(3)), utc(2025, 3, 9, 15, 0));
    // Saturday 1 November 16:00 EDT (20:00 UTC) + 3 h: Sunday 11:00 EST = 16:00 UTC.
    assert_eq!(ny.deadline(utc(2025, 11, 1, 20, 0), TimeDelta::hours(3)), utc(2025, 11, 2, 16, 0));
}

#[test]
fn hours_inside_the_gap_and_the_overlap_are_read_as_documented() {
    // 02:30 does not exist on 9 March 2025 in New York: it opens at 03:30 EDT (07:30 UTC).
    let gap = BusinessCalendar::new(
        New_York,
        &ALL_DAYS,
        WorkingHours::parse("02:30-04:00").expect("h"),
        [],
    )
    .expect("calendar");
    assert_eq!(gap.window(date(2025, 3, 9)), Some((utc(2025, 3, 9, 7, 30), utc(2025, 3, 9, 8, 0))));
    assert_eq!(
        gap.window(date(2025, 3, 10)),
        Some((utc(2025, 3, 10, 6, 30), utc(2025, 3, 10, 8, 0)))
    );
    // 01:00-01:30 happens twice on 2 November 2025: open at the first 01:00 (EDT, 05:00 UTC),
    // close at the second 01:30 (EST, 06:30 UTC).
    let overlap = BusinessCalendar::new(
        New_York,
        &ALL_DAYS,
        WorkingHours::parse("01:00-01:30").expect("h"),
        [],
    )
    .expect("calendar");
    assert_eq!(
        overlap.window(date(2025, 11, 2)),
        Some((utc(2025, 11, 2, 5, 0), utc(2025, 11, 2, 6, 30)))
    );
}

#[test]
fn business_time_between_is_zero_backwards_and_counts_partial_windows() {
    let cal = berlin();
    assert_eq!(
        cal.business_time_between(utc(2025, 6, 3, 10, 0), utc(2025, 6, 2, 10, 0)),
        TimeDelta::zero()
    );
    // Friday 16:00 CEST to Monday 10:00 CEST: 1.5 h + 1 h.
    assert_eq!(
        cal.business_time_between(utc(2025, 6, 6, 14, 0), utc(2025, 6, 9, 8, 0)),
        hours(2.5)
    );
    // A whole working week.
    assert_eq!(
        cal.business_time_between(utc(2025, 6, 2, 0, 0), utc(2025, 6, 9, 0, 0)),
        hours(42.5)
    );
}

proptest! {
    /// The business time from a start to its deadline is the duration asked for.
    #[test]
    fn deadline_and_business_time_agree(
        start_min in 0i64..(3 * 366 * 24 * 60),
        mins in 0i64..(200 * 60),
        ny in any::<bool>(),
    ) {
        let cal = if ny {
            BusinessCalendar::new(New_York, &WEEKDAYS, WorkingHours::parse("08:30-18:00").expect("h"), [date(2025, 7, 4)])
                .expect("calendar")
        } else {
            berlin()
        };
        let start = utc(2024, 1, 1, 0, 0) + TimeDelta::minutes(start_min);
        let d = TimeDelta::minutes(mins);
        let end = cal.deadline(start, d);
        prop_assert!(end >= start);
        prop_assert_eq!(cal.business_time_between(start, end), d);
        // A longer duration never ends earlier.
        prop_assert!(cal.deadline(start, d + TimeDelta::minutes(1)) > end);
    }

    /// Around the clock, business time is plain elapsed time.
    #[test]
    fn around_the_clock_is_elapsed_time(start_min in 0i64..(2 * 366 * 24 * 60), mins in 0i64..(72 * 60)) {
        let cal = around_the_clock(Berlin);
        let start = utc(2024, 1, 1, 0, 0) + TimeDelta::minutes(start_min);
        let d = TimeDelta::minutes(mins);
        prop_assert_eq!(cal.deadline(start, d), start + d);
        prop_assert_eq!(cal.business_time_between(start, start + d), d);
    }
}
