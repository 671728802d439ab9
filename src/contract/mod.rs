//! The lead contract's pure foundations: the governed lifecycle, shared qualification rules,
//! the business calendar and the SLA clock, plus the `[contract]` configuration that builds
//! them.
//!
//! **Architecture Invariant:** nothing here does IO, runs SQL or reads the clock. Time is always
//! passed in (`now: DateTime<Utc>`), so every decision is a function of its inputs and can be
//! tested with controlled time.
//!
//! # What is modelled
//! - [`lifecycle`]: [`lifecycle::LifecycleStage`] (the six domain stages plus SAL, recycled and
//!   disqualified), the [`lifecycle::TransitionTable`] that allows forward moves by rule or by a
//!   system's report and backward moves only through named transitions carrying a configured
//!   reason code, and [`lifecycle::StageDates`] (each stage entry stamped once).
//! - [`conditions`]: qualification rules written as one-line conditions in TOML, compiled once
//!   into a small enum tree and evaluated over [`conditions::Facts`] without parsing or
//!   allocating.
//! - [`calendar`]: a business calendar (IANA zone, working days and hours, holidays) that turns
//!   business hours into deadlines and measures business time between two instants.
//! - [`sla`]: the SLA clock as plain serde data, a state machine whose `evaluate(now)` emits each
//!   action once per state change, and the disqualification policy.
//! - [`config`]: the raw `[contract]` serde types and their validation into the above.
//!
//! # What the caller wires (not done here)
//! - The ledger stores per person: the [`lifecycle::LifecycleStage`] (the domain `Stage` cannot
//!   hold SAL, recycled or disqualified), [`lifecycle::StageDates`] and an optional
//!   [`sla::SlaClock`] as JSON, plus custom field values and event times for [`conditions::Facts`].
//! - The reconciler asks [`conditions::QualificationRules::advance`] for a rule move, checks
//!   every move (rule, reported or named) with [`lifecycle::TransitionTable::check`], stamps
//!   [`lifecycle::StageDates::apply`], writes the transition and its reason to the audit trail,
//!   and clears HubSpot's forward-only `lifecyclestage` first when
//!   [`lifecycle::Transition::needs_stage_cleared`] says so.
//! - The engine starts a clock with [`sla::SlaClock::start`] when a person becomes MQL and is
//!   handed to the CRM, feeds CRM touches to [`sla::SlaClock::touch`], runs
//!   [`sla::SlaClock::evaluate`] on a timer (see [`sla::SlaClock::next_wakeup`]) and turns its
//!   actions into alerts, owner reassignments and recycle transitions; a disqualification is
//!   first checked with [`sla::SlaClock::may_disqualify`] and recycled instead when refused.

pub mod calendar;
pub mod conditions;
pub mod config;
pub mod lifecycle;
pub mod sla;
