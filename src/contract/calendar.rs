//! The business calendar SLA deadlines are counted in: an IANA time zone, working days,
//! working hours and holidays.
//!
//! Business time is real elapsed time inside working hours, measured in UTC: on a day the
//! clocks change, a window of 09:00–17:30 is still 8.5 hours, and a window that spans the
//! change (00:00–24:00) is 23 or 25 hours long. Local times that do not exist (the spring gap)
//! are read with the offset in force before the gap (02:30 becomes 03:30 summer time); local
//! times that occur twice (the autumn overlap) open at their first occurrence and close at
//! their second, so a window is never shortened by the change.

use std::collections::BTreeSet;
use std::fmt;

use chrono::{
    DateTime, Datelike, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, Offset, TimeDelta,
    TimeZone, Utc, Weekday,
};
use chrono_tz::Tz;

/// Daily working hours, in minutes after local midnight; `close` may be 1440 (24:00).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkingHours {
    open: u16,
    close: u16,
}

impl WorkingHours {
    /// Hours from `open` to `close` (minutes after midnight, `open < close <= 1440`).
    pub fn new(open: u16, close: u16) -> Option<WorkingHours> {
        (open < close && close <= 1440).then_some(WorkingHours { open, close })
    }

    /// Parse `"09:00-17:30"` (`24:00` allowed as the close).
    pub fn parse(s: &str) -> Option<WorkingHours> {
        let (a, b) = s.split_once('-')?;
        let minutes = |t: &str| -> Option<u16> {
            let (h, m) = t.trim().split_once(':')?;
            if h.len() != 2 || m.len() != 2 {
                return None;
            }
            let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
            (m < 60 && (h < 24 || (h == 24 && m == 0))).then_some(h * 60 + m)
        };
        WorkingHours::new(minutes(a)?, minutes(b)?)
    }

    /// Length of one day's window.
    pub fn length(self) -> TimeDelta {
        TimeDelta::minutes(i64::from(self.close - self.open))
    }
}

impl fmt::Display for WorkingHours {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:02}:{:02}-{:02}:{:02}",
            self.open / 60,
            self.open % 60,
            self.close / 60,
            self.close % 60
        )
    }
}

/// A calendar that cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CalendarError {
    #[error("at least one working day is needed")]
    NoWorkingDays,
}

/// Working days and hours in one time zone, minus holidays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BusinessCalendar {
    tz: Tz,
    /// Indexed by `Weekday::num_days_from_monday`.
    days: [bool; 7],
    hours: WorkingHours,
    holidays: BTreeSet<NaiveDate>,
}

/// Guard against a calendar whose holidays swallow every working day for decades: searches
/// stop after this many days (about 30 years) and answer with the last instant reached.
const MAX_DAYS: u32 = 11_000;

impl Default for BusinessCalendar {
    /// UTC, Monday to Friday, 09:00–17:00, no holidays.
    fn default() -> Self {
        BusinessCalendar {
            tz: Tz::UTC,
            days: [true, true, true, true, true, false, false],
            hours: WorkingHours { open: 9 * 60, close: 17 * 60 },
            holidays: BTreeSet::new(),
        }
    }
}

impl BusinessCalendar {
    /// # Errors
    /// [`CalendarError::NoWorkingDays`] when `working_days` is empty.
    pub fn new(
        tz: Tz,
        working_days: &[Weekday],
        hours: WorkingHours,
        holidays: impl IntoIterator<Item = NaiveDate>,
    ) -> Result<BusinessCalendar, CalendarError> {
        if working_days.is_empty() {
            return Err(CalendarError::NoWorkingDays);
        }
        let mut days = [false; 7];
        for d in working_days {
            days[d.num_days_from_monday() as usize] = true;
        }
        Ok(BusinessCalendar { tz, days, hours, holidays: holidays.into_iter().collect() })
    }

    pub fn time_zone(&self) -> Tz {
        self.tz
    }

    pub fn hours(&self) -> WorkingHours {
        self.hours
    }

    /// Whether `date` (local) is a working day and no holiday.
    pub fn is_working_day(&self, date: NaiveDate) -> bool {
        self.days[date.weekday().num_days_from_monday() as usize] && !self.holidays.contains(&date)
    }

    /// The working window of local `date` in UTC, or `None` on a day off.
    pub fn window(&self, date: NaiveDate) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        if !self.is_working_day(date) {
            return None;
        }
        let midnight = date.and_time(NaiveTime::MIN);
        let open = self.to_utc(midnight + TimeDelta::minutes(i64::from(self.hours.open)), false);
        let close = self.to_utc(midnight + TimeDelta::minutes(i64::from(self.hours.close)), true);
        (open < close).then_some((open, close))
    }

    /// Whether `at` falls inside working hours.
    pub fn is_open(&self, at: DateTime<Utc>) -> bool {
        self.window(self.local_date(at)).is_some_and(|(open, close)| open <= at && at < close)
    }

    fn local_date(&self, at: DateTime<Utc>) -> NaiveDate {
        at.with_timezone(&self.tz).date_naive()
    }

    /// A local time as a UTC instant; see the module doc for gaps and overlaps.
    fn to_utc(&self, local: NaiveDateTime, late: bool) -> DateTime<Utc> {
        match self.tz.from_local_datetime(&local) {
            LocalResult::Single(t) => t.with_timezone(&Utc),
            LocalResult::Ambiguous(first, second) => {
                if late { second } else { first }.with_timezone(&Utc)
            }
            LocalResult::None => {
                // In the spring gap: use the offset of the day before (clocks change at most
                // once a day), which places the instant just after the gap.
                let before = self
                    .tz
                    .offset_from_local_datetime(&(local - TimeDelta::days(1)))
                    .earliest()
                    .map_or(0, |o| o.fix().local_minus_utc());
                (local - TimeDelta::seconds(i64::from(before))).and_utc()
            }
        }
    }

    /// The instant `business` working time after `start`.
    ///
    /// A start outside working hours counts from the next opening. A zero (or negative)
    /// duration gives the first working instant at or after `start` (windows are half open:
    /// 17:30 is already closed). A deadline that uses up
    /// a window exactly ends at its close (17:30 Friday, not 09:00 Monday).
    pub fn deadline(&self, start: DateTime<Utc>, business: TimeDelta) -> DateTime<Utc> {
        let mut remaining = business.max(TimeDelta::zero());
        let mut date = self.local_date(start);
        let mut last = start;
        for _ in 0..MAX_DAYS {
            if let Some((open, close)) = self.window(date) {
                let from = open.max(start);
                if from < close {
                    let available = close - from;
                    if remaining <= available {
                        return from + remaining;
                    }
                    remaining -= available;
                    last = close;
                }
            }
            match date.succ_opt() {
                Some(d) => date = d,
                None => break,
            }
        }
        last
    }

    /// Working time between `a` and `b` (zero when `b` is not after `a`).
    pub fn business_time_between(&self, a: DateTime<Utc>, b: DateTime<Utc>) -> TimeDelta {
        if b <= a {
            return TimeDelta::zero();
        }
        let mut total = TimeDelta::zero();
        let mut date = self.local_date(a);
        let end = self.local_date(b);
        for _ in 0..MAX_DAYS {
            if date > end {
                break;
            }
            if let Some((open, close)) = self.window(date) {
                let (from, to) = (open.max(a), close.min(b));
                if from < to {
                    total += to - from;
                }
            }
            match date.succ_opt() {
                Some(d) => date = d,
                None => break,
            }
        }
        total
    }
}

#[cfg(test)]
mod tests;
