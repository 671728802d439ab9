//! The SLA clock: sales touches every MQL within N business hours, makes a minimum number of
//! contact attempts before disqualifying, and an untouched MQL is escalated and then recycled
//! to nurture.
//!
//! [`SlaClock`] is plain serde data the ledger stores per person, so a restart resumes the
//! clock where it was. It is a state machine over [`SlaPhase`]:
//! ```text
//! waiting ──touch by the deadline──▶ met
//!    │ deadline passes untouched
//!    ▼
//! breached ──escalate_at passes──▶ escalated ──recycle_at passes──▶ recycled
//!    └──────────────┴── late touch ──▶ touched_late
//! ```
//! [`SlaClock::evaluate`] moves the phase to what the facts say at `now` and returns one
//! [`SlaAction`] per phase entered, so each alert fires once per state change: evaluating
//! again at the same or a later time with nothing new yields nothing. If the daemon was down
//! across several milestones, one evaluation returns all of them, in order. A touch reported
//! late (after the breach alert went out) but stamped before the deadline moves a breached or
//! escalated clock to met, with its own action; a recycle that has happened is never undone.
//!
//! Milestones pass strictly after their instant: a touch exactly at the deadline is in time,
//! and escalation fires once `now` is past `due + grace`.
//!
//! All deadlines are computed once, when the clock starts, in business time (see
//! [`BusinessCalendar`]); evaluation is comparisons only. After a change of policy or calendar,
//! [`SlaClock::reschedule`] recomputes them from the start time.

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};

use crate::contract::calendar::BusinessCalendar;
use crate::contract::lifecycle::{ReasonCode, Refusal};
use crate::domain::LastActivity;

/// The SLA terms, from config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlaPolicy {
    /// Business time from handover to the first touch.
    pub first_touch: TimeDelta,
    /// Business time after the deadline before escalating.
    pub grace: TimeDelta,
    /// Whether an untouched MQL is escalated at all.
    pub escalate: bool,
    /// The CRM owner (user or queue id) an escalated lead is reassigned to, if any.
    pub reassign_to: Option<String>,
    /// Business time after the escalation point (deadline + grace) before recycling to
    /// nurture; `None`: never recycle automatically.
    pub recycle_after: Option<TimeDelta>,
    /// The recycle reason written to both systems (one of the recycle transition's codes).
    pub recycle_reason: ReasonCode,
    /// Disqualification is refused before this many contact attempts...
    pub disqualify_min_attempts: u32,
    /// ...spread over at least this many days (from the first attempt, or from the handover
    /// when no attempts are required).
    pub disqualify_min_days: u32,
}

impl Default for SlaPolicy {
    /// Four business hours to the first touch, escalation after two more, recycling a working
    /// day (8 business hours) after that; three attempts over five days before disqualifying.
    fn default() -> Self {
        SlaPolicy {
            first_touch: TimeDelta::hours(4),
            grace: TimeDelta::hours(2),
            escalate: true,
            reassign_to: None,
            recycle_after: Some(TimeDelta::hours(8)),
            recycle_reason: ReasonCode::new("sla_expired").expect("built-in code is well formed"),
            disqualify_min_attempts: 3,
            disqualify_min_days: 5,
        }
    }
}

/// What the CRM reported that counts as a touch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TouchKind {
    /// The lead status moved to working or contacted. A touch, not an attempt: the status
    /// says work started, not how many times someone tried.
    StatusWorking,
    /// An activity or task (call, email, meeting) was logged: a contact attempt.
    Activity,
    /// The record's own last-activity property moved (Salesforce `LastActivityDate`, HubSpot
    /// `notes_last_contacted`): a touch, not an attempt. Attempts are the activities read one
    /// by one; the property only says that some activity exists, and is often the same call
    /// seen a second way. Stamp it with [`SlaClock::last_activity_touch`].
    LastActivity,
    /// Sales moved the stage forward (accepted, qualified): a touch, not an attempt.
    StageAdvanced,
}

impl TouchKind {
    fn is_attempt(self) -> bool {
        matches!(self, TouchKind::Activity)
    }
}

/// What the ledger last saw of one record's last-activity property during a clock's cycle:
/// the value, and when the read that showed it started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActivitySeen {
    pub value: LastActivity,
    pub seen_at: DateTime<Utc>,
}

/// Where a clock stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SlaPhase {
    /// Running, not touched, deadline not passed.
    Waiting,
    /// The deadline passed untouched.
    Breached,
    /// Escalated after the grace period.
    Escalated,
    /// Touched by the deadline. Final.
    Met,
    /// Touched after the deadline, before recycling. Final.
    TouchedLate,
    /// Recycled to nurture for want of a touch. Final.
    Recycled,
    /// Stopped by the caller (the person left the MQL path another way). Final, silent.
    Closed,
}

impl SlaPhase {
    /// Position on the untouched path; finals rank above it.
    fn rank(self) -> u8 {
        match self {
            SlaPhase::Waiting => 0,
            SlaPhase::Breached => 1,
            SlaPhase::Escalated => 2,
            SlaPhase::Met | SlaPhase::TouchedLate | SlaPhase::Recycled | SlaPhase::Closed => 3,
        }
    }

    pub fn is_final(self) -> bool {
        self.rank() == 3
    }
}

/// What the caller does when a clock changes phase. Each is returned once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlaAction {
    /// Touched in time.
    Met { first_touch_at: DateTime<Utc> },
    /// The deadline passed untouched: alert.
    Breached { due_at: DateTime<Utc> },
    /// Still untouched after the grace period: alert, and reassign when an owner is given.
    Escalate { due_at: DateTime<Utc>, reassign_to: Option<String> },
    /// Still untouched after the further period: recycle to nurture with this reason, written
    /// to both systems (a `recycle` named transition).
    Recycle { reason: ReasonCode },
    /// Touched after the deadline: the alert can be resolved.
    TouchedLate { first_touch_at: DateTime<Utc> },
}

/// One person's SLA clock, stored as JSON by the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlaClock {
    /// When the MQL was handed to the CRM.
    pub started_at: DateTime<Utc>,
    /// First-touch deadline.
    pub due_at: DateTime<Utc>,
    /// When an untouched clock escalates (`None`: escalation off).
    pub escalate_at: Option<DateTime<Utc>>,
    /// When an untouched clock recycles (`None`: never).
    pub recycle_at: Option<DateTime<Utc>>,
    pub phase: SlaPhase,
    /// The earliest touch seen at or after the start.
    pub first_touch_at: Option<DateTime<Utc>>,
    /// Contact attempts counted.
    pub attempts: u32,
    pub first_attempt_at: Option<DateTime<Utc>>,
    pub last_attempt_at: Option<DateTime<Utc>>,
}

impl SlaClock {
    /// Start a clock at handover time `at`.
    pub fn start(at: DateTime<Utc>, policy: &SlaPolicy, calendar: &BusinessCalendar) -> SlaClock {
        let mut clock = SlaClock {
            started_at: at,
            due_at: at,
            escalate_at: None,
            recycle_at: None,
            phase: SlaPhase::Waiting,
            first_touch_at: None,
            attempts: 0,
            first_attempt_at: None,
            last_attempt_at: None,
        };
        clock.reschedule(policy, calendar);
        clock
    }

    /// Recompute the deadlines from the start time under a new policy or calendar. The phase
    /// stays: milestones already passed do not fire again.
    pub fn reschedule(&mut self, policy: &SlaPolicy, calendar: &BusinessCalendar) {
        self.due_at = calendar.deadline(self.started_at, policy.first_touch);
        let escalation_point = calendar.deadline(self.due_at, policy.grace);
        self.escalate_at = policy.escalate.then_some(escalation_point);
        self.recycle_at = policy.recycle_after.map(|d| calendar.deadline(escalation_point, d));
    }

    /// Record a touch the CRM reported. Returns whether the clock changed.
    ///
    /// Touches before the start (work on an earlier cycle), touches on a closed clock, and
    /// touches after an untouched clock's recycle point are ignored. An attempt counts only
    /// when it is later than every attempt already counted, so the same activity polled twice
    /// counts once; attempts reported out of order are undercounted.
    pub fn touch(&mut self, kind: TouchKind, at: DateTime<Utc>) -> bool {
        if at < self.started_at || matches!(self.phase, SlaPhase::Recycled | SlaPhase::Closed) {
            return false;
        }
        // A touch after the recycle point of a clock untouched until then comes after the
        // recycle (whether or not it was evaluated yet): the person is back in nurture.
        if let Some(r) = self.recycle_at
            && at > r
            && self.first_touch_at.is_none_or(|t| t > r)
        {
            return false;
        }
        let mut changed = false;
        if self.first_touch_at.is_none_or(|t| at < t) {
            self.first_touch_at = Some(at);
            changed = true;
        }
        if kind.is_attempt() && self.last_attempt_at.is_none_or(|t| at > t) {
            self.attempts = self.attempts.saturating_add(1);
            self.first_attempt_at.get_or_insert(at);
            self.last_attempt_at = Some(at);
            changed = true;
        }
        changed
    }

    /// The instant at which a record's last-activity value proves a touch on this clock, or
    /// `None` when it proves none. `before` is the value the same record showed in an earlier
    /// read of this cycle, `modified_at` the vendor's modification time of the state that
    /// shows `value`. Pass the result to [`SlaClock::touch`] with [`TouchKind::LastActivity`]
    /// (which also drops instants before the start).
    ///
    /// Conservative on purpose, since a touch dated too early could turn a breach into a met
    /// deadline:
    /// - Only news counts: a value that is not later than `before` (the same, or earlier after
    ///   an activity was deleted) proves nothing.
    /// - **An instant** (HubSpot) counts when it is at or after the start; it is taken as
    ///   stamped, but never earlier than `before`'s read (a contact logged after that read
    ///   and dated before it was entered late) nor later than `modified_at` (a meeting dated
    ///   in the future was booked by then).
    /// - **A date** (Salesforce, no time, read in the calendar's time zone) is stamped at
    ///   `modified_at`, the latest instant by which the record said so, never the date's
    ///   midnight. It counts when the date is after the start's date, or on the start's date
    ///   when `before` was read at or after the start, which proves that the date moved after
    ///   the clock started. A date before the start's date says the activity came before this
    ///   cycle, and a first read on the start's date cannot tell.
    pub fn last_activity_touch(
        &self,
        calendar: &BusinessCalendar,
        before: Option<&ActivitySeen>,
        value: LastActivity,
        modified_at: DateTime<Utc>,
    ) -> Option<DateTime<Utc>> {
        if before.is_some_and(|b| value <= b.value) {
            return None;
        }
        let read_before = before.map(|b| b.seen_at);
        match value {
            LastActivity::Never => None,
            LastActivity::At(t) if t < self.started_at => None,
            LastActivity::At(t) => Some(read_before.map_or(t, |r| t.max(r)).min(modified_at)),
            LastActivity::Date(d) => {
                let start_day = self.started_at.with_timezone(&calendar.time_zone()).date_naive();
                let moved_since_start = read_before.is_some_and(|r| r >= self.started_at);
                (d > start_day || (d == start_day && moved_since_start)).then_some(modified_at)
            }
        }
    }

    /// Stop the clock without any action (the person was disqualified, recycled by hand,
    /// erased, or reached a stage past the SLA).
    pub fn close(&mut self) {
        if !self.phase.is_final() {
            self.phase = SlaPhase::Closed;
        }
    }

    /// Move to the phase the facts say at `now` and return the actions for each phase entered,
    /// in order. Empty when nothing changed; never repeats an action.
    pub fn evaluate(&mut self, now: DateTime<Utc>, policy: &SlaPolicy) -> Vec<SlaAction> {
        let mut out = Vec::new();
        if self.phase.is_final() {
            return out;
        }
        // A touch stamped after `now` is not known yet at `now`.
        let touch = self.first_touch_at.filter(|t| *t <= now);
        if let Some(t) = touch
            && t <= self.due_at
        {
            self.phase = SlaPhase::Met;
            out.push(SlaAction::Met { first_touch_at: t });
            return out;
        }
        // A milestone has passed when `now` is past it and no touch came at or before it.
        let passed = |m: DateTime<Utc>| now > m && touch.is_none_or(|t| t > m);
        if self.phase.rank() < SlaPhase::Breached.rank() && passed(self.due_at) {
            self.phase = SlaPhase::Breached;
            out.push(SlaAction::Breached { due_at: self.due_at });
        }
        if let Some(e) = self.escalate_at
            && self.phase.rank() < SlaPhase::Escalated.rank()
            && passed(e)
        {
            self.phase = SlaPhase::Escalated;
            out.push(SlaAction::Escalate {
                due_at: self.due_at,
                reassign_to: policy.reassign_to.clone(),
            });
        }
        if let Some(r) = self.recycle_at
            && passed(r)
        {
            self.phase = SlaPhase::Recycled;
            out.push(SlaAction::Recycle { reason: policy.recycle_reason.clone() });
            return out;
        }
        if let Some(t) = touch {
            self.phase = SlaPhase::TouchedLate;
            out.push(SlaAction::TouchedLate { first_touch_at: t });
        }
        out
    }

    /// The next instant at which [`SlaClock::evaluate`] can return something without a new
    /// touch: the timer to set. `None` on a final clock. Evaluating earlier is harmless.
    pub fn next_wakeup(&self) -> Option<DateTime<Utc>> {
        if self.phase.is_final() {
            return None;
        }
        // Milestones pass strictly after their instant.
        let tick = TimeDelta::nanoseconds(1);
        let pending = [
            (self.phase.rank() < SlaPhase::Breached.rank()).then_some(self.due_at),
            self.escalate_at.filter(|_| self.phase.rank() < SlaPhase::Escalated.rank()),
            self.recycle_at,
        ];
        let next_milestone = pending.into_iter().flatten().min().map(|m| m + tick);
        // A touch stamped in the future becomes known when its time comes.
        let future_touch = self.first_touch_at;
        match (next_milestone, future_touch) {
            (Some(m), Some(t)) => Some(m.min(t)),
            (m, t) => m.or(t),
        }
    }

    /// Whether sales may disqualify this person now, under the policy's minimum of attempts
    /// over days.
    ///
    /// # Errors
    /// [`Refusal::TooFewAttempts`] or [`Refusal::TooSoon`]: the caller recycles to nurture
    /// instead (reason `disqualify_refused` in the default table).
    pub fn may_disqualify(&self, now: DateTime<Utc>, policy: &SlaPolicy) -> Result<(), Refusal> {
        if matches!(self.phase, SlaPhase::Recycled | SlaPhase::Closed) {
            return Ok(());
        }
        if self.attempts < policy.disqualify_min_attempts {
            return Err(Refusal::TooFewAttempts {
                attempts: self.attempts,
                required: policy.disqualify_min_attempts,
            });
        }
        let since = if policy.disqualify_min_attempts == 0 {
            self.started_at
        } else {
            self.first_attempt_at.unwrap_or(self.started_at)
        };
        if now - since < TimeDelta::days(i64::from(policy.disqualify_min_days)) {
            return Err(Refusal::TooSoon { required_days: policy.disqualify_min_days });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
