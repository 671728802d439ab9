//! The ledger side of the SLA clocks (table `sla_clocks`, migration 9): one row per person on
//! the MQL path holding the pure [`SlaClock`] plus the actions evaluated but not delivered yet.
//!
//! # When a clock moves (inside the reconcile transaction, before the decision is applied)
//! - **Start**: the decision puts the person at MQL and the person is *handed to the CRM*: an
//!   open link to a CRM-role system, a new link from the changed CRM record, or a CRM create in
//!   the decision's pushes. The clock starts at the MQL entry date (or now, when the handover
//!   comes after the person became MQL). A finished clock of an earlier MQL cycle is replaced.
//! - **Touch**: only what a CRM-role system reports. A lead status listed in
//!   `[contract.sla] touch_statuses` that differs from the person's previous status is
//!   [`TouchKind::StatusWorking`] at the record's modification time; a move from MQL to SAL or
//!   further is [`TouchKind::StageAdvanced`] at that stage's entry date.
//! - **Attempt**: a done sales activity (a Salesforce Task, read by the closed-loop poller)
//!   on one of the person's records is [`TouchKind::Activity`] at its logged time, counted
//!   once per activity ([`count_attempt`], called where the activity is stored, in the
//!   closed-loop transaction). A clock that starts takes the done activities already stored
//!   for the person at or after its start, oldest first.
//! - **Last activity**: a CRM record's own last-activity property, read by its connector
//!   under `[contract.sla] last_activity_touches` (default on) onto `Change::last_activity`:
//!   Salesforce `LastActivityDate` (a date: the latest due date of the record's closed tasks
//!   and events) and HubSpot `notes_last_contacted` (an instant: the latest call, meeting,
//!   sales email or other contact logged). A [`TouchKind::LastActivity`] touch, never an
//!   attempt (the activities read one by one are the attempts, and the property is often the
//!   same call seen again), so it cannot count anything twice. The clock keeps the value each
//!   record showed in its latest read of the cycle (`activity_seen`); only a move forward
//!   counts, dated by [`SlaClock::last_activity_touch`]: an instant as stamped (at or after
//!   the start, not before the previous read, not after the record's modification time); a
//!   date at the record's modification time (the time a date lacks is never guessed),
//!   counted when the date is after the start's date in the calendar's time zone, or on that
//!   date when the previous read of the record came after the start (the date moved during
//!   the cycle). So a call logged on the day the clock starts counts once the record was read
//!   after the start, and a first read on that day does not (it may predate the clock: the
//!   morning's call that made them MQL must not meet the SLA). One proof needs no read: a
//!   record leadsync created at or after the start held no activity when created
//!   ([`created_since`]), so its first read showing the start's date counts (the rep who
//!   calls the new lead before the first poll is not missed).
//! - **Close**: the person leaves the MQL path (any stage but MQL and SAL: recycled,
//!   disqualified, SQL and beyond, reopened). The clock is evaluated at now first, so a
//!   stage advance is recorded as met or touched late, then closed.
//! - **Disqualification policy**: a CRM-reported status that the contract maps to
//!   disqualified (`status_stages` or `disqualified_status`), or a named `disqualify`, while
//!   [`SlaClock::may_disqualify`] refuses, becomes a `recycle` with reason
//!   `disqualify_refused`, audited as `sla_disqualify_refused`. A named one is swapped inside
//!   its own transaction; a reported one is queued on the clock and the SLA task applies it.
//!
//! # Delivery (the SLA task)
//! [`Ledger::sla_due`] evaluates every clock whose `next_wakeup` has passed and appends the
//! actions to the row's `pending` list in the same transaction, so an action is decided once;
//! the task then delivers each (alert, log, metric, recycle) and removes it with
//! [`Ledger::sla_delivered`]. A crash between the two re-delivers those actions once on
//! restart; a restart after delivery does not (the phase is stored).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde::{Deserialize, Serialize};

use super::closed_loop::Countable;
use super::identity::load_lead;
use super::{Ledger, LedgerError, Result, audit, from_json, to_json, ts};
use crate::contract::config::Contract;
use crate::contract::lifecycle::{LifecycleStage, NamedMove};
use crate::contract::sla::{ActivitySeen, SlaAction, SlaClock, SlaPhase, SlaPolicy, TouchKind};
use crate::domain::{Change, Field, LastActivity, Role, SystemName};
use crate::reconcile::{Decision, Rules};

/// The reason code a refused disqualification is recycled with.
pub const DISQUALIFY_REFUSED: &str = "disqualify_refused";

/// An action decided by a clock evaluation, stored until delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fired {
    Met {
        first_touch_at: DateTime<Utc>,
    },
    Breached {
        due_at: DateTime<Utc>,
    },
    Escalated {
        due_at: DateTime<Utc>,
        reassign_to: Option<String>,
    },
    Recycle {
        reason: String,
    },
    TouchedLate {
        first_touch_at: DateTime<Utc>,
    },
    /// A reported disqualification the policy refused: recycle with `disqualify_refused`.
    DisqualifyRefused {
        refusal: String,
    },
}

impl Fired {
    /// Bounded label for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Fired::Met { .. } => "met",
            Fired::Breached { .. } => "breached",
            Fired::Escalated { .. } => "escalated",
            Fired::Recycle { .. } => "recycled",
            Fired::TouchedLate { .. } => "touched_late",
            Fired::DisqualifyRefused { .. } => "disqualify_refused",
        }
    }
}

impl From<SlaAction> for Fired {
    fn from(a: SlaAction) -> Fired {
        match a {
            SlaAction::Met { first_touch_at } => Fired::Met { first_touch_at },
            SlaAction::Breached { due_at } => Fired::Breached { due_at },
            SlaAction::Escalate { due_at, reassign_to } => Fired::Escalated { due_at, reassign_to },
            SlaAction::Recycle { reason } => Fired::Recycle { reason: reason.as_str().to_string() },
            SlaAction::TouchedLate { first_touch_at } => Fired::TouchedLate { first_touch_at },
        }
    }
}

/// One row of `sla_clocks`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredClock {
    pub clock: SlaClock,
    /// Decided, not yet delivered, oldest first.
    #[serde(default)]
    pub pending: Vec<Fired>,
    /// The last-activity value each of the person's CRM records (`system:type/id`) showed in
    /// the latest read of this cycle: what tells a move of the property from old news.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub activity_seen: BTreeMap<String, ActivitySeen>,
}

/// A person's undelivered SLA actions and where their records live (for alerts: ids only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueClock {
    pub lead_id: String,
    pub pending: Vec<Fired>,
    /// Open links as `system:object_type/remote_id`.
    pub links: Vec<String>,
}

fn load_clock(conn: &Connection, lead_id: &str) -> Result<Option<StoredClock>> {
    let row: Option<String> = conn
        .prepare_cached("SELECT clock FROM sla_clocks WHERE lead_id = ?1")?
        .query_row([lead_id], |r| r.get(0))
        .optional()?;
    row.as_deref().map(from_json).transpose()
}

fn phase_name(c: &SlaClock) -> String {
    serde_json::to_value(c.phase)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

fn write_clock(
    tx: &Transaction<'_>,
    lead_id: &str,
    stored: &StoredClock,
    now: DateTime<Utc>,
) -> Result<()> {
    // Undelivered actions make the row due at once; otherwise the clock's own timer.
    let wake = if stored.pending.is_empty() { stored.clock.next_wakeup() } else { Some(now) };
    // Stored at microsecond precision: round up, so a milestone that passes strictly after
    // its instant is not looked at (uselessly) at the instant itself.
    let wake = wake.map(|w| {
        let sub = i64::from(w.timestamp_subsec_nanos() % 1000);
        if sub == 0 { w } else { w + chrono::TimeDelta::nanoseconds(1000 - sub) }
    });
    tx.prepare_cached(
        "INSERT INTO sla_clocks(lead_id, clock, next_wakeup, state, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5)
         ON CONFLICT(lead_id) DO UPDATE SET clock = excluded.clock,
             next_wakeup = excluded.next_wakeup, state = excluded.state,
             updated_at = excluded.updated_at",
    )?
    .execute(params![
        lead_id,
        to_json(stored)?,
        wake.map(ts),
        phase_name(&stored.clock),
        ts(now)
    ])?;
    write_cycle(tx, lead_id, stored, now)
}

/// Keep the clock's cycle row in `sla_cycles` (what `report sla` counts) up to date. Flags are
/// sticky: an action once decided stays counted after it is delivered and removed.
fn write_cycle(
    tx: &Transaction<'_>,
    lead_id: &str,
    stored: &StoredClock,
    now: DateTime<Utc>,
) -> Result<()> {
    let c = &stored.clock;
    let decided = |kind: &str| stored.pending.iter().any(|f| f.kind() == kind);
    let untouched_by_deadline = c.first_touch_at.is_none_or(|t| t > c.due_at);
    // A clock closed while overdue had its breach evaluated just before `close` (the phase
    // then says closed): the facts say it.
    let breached = decided("breached")
        || matches!(
            c.phase,
            SlaPhase::Breached | SlaPhase::Escalated | SlaPhase::Recycled | SlaPhase::TouchedLate
        )
        || (c.phase == SlaPhase::Closed && untouched_by_deadline && now > c.due_at);
    let escalated = decided("escalated") || c.phase == SlaPhase::Escalated;
    let recycled = decided("recycled") || c.phase == SlaPhase::Recycled;
    tx.prepare_cached(
        "INSERT INTO sla_cycles(lead_id, started_at, due_at, phase, first_touch_at, attempts,
             breached, escalated, recycled, disqualify_refused, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
         ON CONFLICT(lead_id, started_at) DO UPDATE SET due_at = excluded.due_at,
             phase = excluded.phase, first_touch_at = excluded.first_touch_at,
             attempts = excluded.attempts, breached = max(breached, excluded.breached),
             escalated = max(escalated, excluded.escalated),
             recycled = max(recycled, excluded.recycled),
             disqualify_refused = max(disqualify_refused, excluded.disqualify_refused),
             updated_at = excluded.updated_at",
    )?
    .execute(params![
        lead_id,
        ts(c.started_at),
        ts(c.due_at),
        phase_name(c),
        c.first_touch_at.map(ts),
        i64::from(c.attempts),
        breached,
        escalated,
        recycled,
        decided("disqualify_refused"),
        ts(now)
    ])?;
    Ok(())
}

/// Mark the current cycle of a person's clock: disqualified at `now` (the first time only,
/// with the attempts counted by then), or a disqualification refused by the policy.
fn mark_cycle(
    tx: &Transaction<'_>,
    lead_id: &str,
    clock: &SlaClock,
    mark: CycleMark,
    now: DateTime<Utc>,
) -> Result<()> {
    let (lead, started) = (lead_id, ts(clock.started_at));
    match mark {
        CycleMark::Disqualified => tx
            .prepare_cached(
                "UPDATE sla_cycles SET disqualified_at = COALESCE(disqualified_at, ?3),
                     attempts_at_disqualify = COALESCE(attempts_at_disqualify, ?4),
                     updated_at = ?3
                 WHERE lead_id = ?1 AND started_at = ?2",
            )?
            .execute(params![lead, started, ts(now), i64::from(clock.attempts)])?,
        CycleMark::DisqualifyRefused => tx
            .prepare_cached(
                "UPDATE sla_cycles SET disqualify_refused = 1, updated_at = ?3
                 WHERE lead_id = ?1 AND started_at = ?2",
            )?
            .execute(params![lead, started, ts(now)])?,
    };
    Ok(())
}

#[derive(Debug, Clone, Copy)]
enum CycleMark {
    Disqualified,
    DisqualifyRefused,
}

fn on_mql_path(stage: LifecycleStage) -> bool {
    matches!(stage, LifecycleStage::Mql | LifecycleStage::Sal)
}

fn is_crm(rules: &Rules, system: &SystemName) -> bool {
    rules.system(system).is_some_and(|s| s.role == Role::Crm)
}

/// Whether the person is handed to the CRM once `decision` is applied.
fn handed_to_crm(
    tx: &Transaction<'_>,
    rules: &Rules,
    system: &SystemName,
    decision: &Decision,
) -> Result<bool> {
    if decision.new_link.is_some() && is_crm(rules, system) {
        return Ok(true);
    }
    if decision.pushes.iter().any(|p| is_crm(rules, &p.system)) {
        return Ok(true);
    }
    let mut stmt =
        tx.prepare_cached("SELECT system FROM links WHERE lead_id = ?1 AND closed_at IS NULL")?;
    let systems: Vec<String> = stmt
        .query_map([&decision.lead_id], |r| r.get(0))?
        .collect::<std::result::Result<_, _>>()?;
    Ok(systems.into_iter().any(|s| is_crm(rules, &SystemName(s))))
}

fn reports_disqualified(contract: &Contract, status: &str) -> bool {
    contract.mapping.status_stages.get(status) == Some(&LifecycleStage::Disqualified)
        || contract.mapping.disqualified_status.as_deref() == Some(status)
}

/// Start, touch or close the person's clock for one reconciled change. Runs in the reconcile
/// transaction *before* the decision is applied (the previous stage and status are still
/// stored). Without `[contract.sla]` this does nothing.
///
/// # Errors
/// SQLite failures or a corrupt row.
pub(super) fn on_decision(
    tx: &Transaction<'_>,
    rules: &Rules,
    system: &SystemName,
    change: &Change,
    decision: &Decision,
    now: DateTime<Utc>,
) -> Result<()> {
    let Some(contract) = rules.contract.as_deref() else { return Ok(()) };
    let Some(policy) = contract.sla.as_ref() else { return Ok(()) };
    let Some(g) = decision.lifecycle.as_ref().filter(|g| g.lead_id == decision.lead_id) else {
        return Ok(());
    };
    let Some(stage) = g.state.stage else { return Ok(()) };
    let lead_id = g.lead_id.as_str();
    let prior_stage = super::lifecycle::load(tx, lead_id)?.and_then(|s| s.stage);
    let mut stored = load_clock(tx, lead_id)?;
    let before = stored.clone();
    let mut entries: Vec<(&'static str, serde_json::Value)> = Vec::new();

    if stage == LifecycleStage::Mql && handed_to_crm(tx, rules, system, decision)? {
        let entered = g.state.dates.get(LifecycleStage::Mql).map_or(now, |e| e.last.min(now));
        let stale = stored
            .as_ref()
            .is_none_or(|s| s.clock.phase.is_final() && s.clock.started_at < entered);
        if stale {
            // Handed over after becoming MQL: the clock runs from the handover.
            let at = if prior_stage == Some(LifecycleStage::Mql) { now } else { entered };
            let mut clock = SlaClock::start(at, policy, &contract.calendar);
            entries.push(("sla_started", serde_json::json!({ "due_at": ts(clock.due_at) })));
            // Activities read before the clock existed (the task poll ran ahead), including
            // those on the record this decision is about to link.
            let extra = decision.new_link.as_ref().map(|_| (system, &change.remote));
            for c in super::closed_loop::uncounted_of_person(tx, lead_id, extra, at)? {
                if took_attempt(&mut clock, &c, now) {
                    super::closed_loop::mark_counted(tx, &c, lead_id)?;
                    entries.push(("sla_attempt", attempt_detail(&c, &clock)));
                }
            }
            // Notices of the previous cycle not delivered yet still go out.
            let pending = stored.take().map(|s| s.pending).unwrap_or_default();
            stored = Some(StoredClock { clock, pending, activity_seen: BTreeMap::new() });
        }
    }

    if let Some(s) = stored.as_mut() {
        // A finished clock (met, touched late) still polices disqualification.
        let open = !s.clock.phase.is_final();
        let crm = is_crm(rules, system);
        let status = change.fields.get(&Field::LeadStatus).filter(|_| crm);
        let prior_status = match status {
            Some(_) => {
                load_lead(tx, lead_id)?.and_then(|l| l.fields.get(&Field::LeadStatus).cloned())
            }
            None => None,
        };
        let news = status.filter(|st| prior_status.as_ref() != Some(*st));
        if let Some(st) = news {
            if open && contract.sla_ops.touch_statuses.contains(st.as_str()) {
                s.clock.touch(TouchKind::StatusWorking, change.modified_at.min(now));
            }
            if reports_disqualified(contract, st)
                && let Err(refusal) = s.clock.may_disqualify(now, policy)
            {
                let refusal = refusal.to_string();
                entries.push((
                    "sla_disqualify_refused",
                    serde_json::json!({ "via": "reported", "system": system.as_str(),
                                        "refusal": refusal }),
                ));
                s.pending.push(Fired::DisqualifyRefused { refusal });
            }
        }
        if crm && let Some(value) = change.last_activity {
            let key = format!("{system}:{}", change.remote);
            let before = match s.activity_seen.get(&key).copied() {
                Some(seen) => Some(seen),
                None if open => created_since(tx, system, &change.remote, s.clock.started_at)?,
                None => None,
            };
            let at = if open {
                s.clock.last_activity_touch(
                    &contract.calendar,
                    before.as_ref(),
                    value,
                    change.modified_at,
                )
            } else {
                None
            };
            // A vendor clock ahead of ours: known now, not later.
            if let Some(at) = at.map(|a| a.min(now))
                && s.clock.touch(TouchKind::LastActivity, at)
            {
                entries.push((
                    "sla_touch",
                    serde_json::json!({ "via": "last_activity", "system": system.as_str(),
                                        "record": change.remote.to_string(), "at": ts(at) }),
                ));
            }
            if before.is_none_or(|b| b.seen_at <= change.fetched_at) {
                s.activity_seen.insert(key, ActivitySeen { value, seen_at: change.fetched_at });
            }
        }
        let advanced = open
            && prior_stage == Some(LifecycleStage::Mql)
            && stage.funnel_rank().is_some_and(|r| r > 2);
        if advanced {
            let at = g.state.dates.get(stage).map_or(now, |e| e.last.min(now));
            s.clock.touch(TouchKind::StageAdvanced, at);
        }
        let actions = s.clock.evaluate(now, policy);
        let leaving = open && !on_mql_path(stage);
        // A person who already left the path is neither alerted on nor recycled by the
        // clock: the phase keeps the record (touched late), the notice says it.
        s.pending.extend(
            actions
                .into_iter()
                .filter(|a| {
                    !(leaving
                        && matches!(
                            a,
                            SlaAction::Recycle { .. }
                                | SlaAction::Breached { .. }
                                | SlaAction::Escalate { .. }
                        ))
                })
                .map(Fired::from)
                .inspect(|f| {
                    entries.push(("sla_action", serde_json::json!({ "action": f.kind() })));
                }),
        );
        if leaving {
            s.clock.close();
            s.pending.retain(|f| !matches!(f, Fired::DisqualifyRefused { .. }));
            entries.push(("sla_closed", serde_json::json!({ "stage": stage.as_str() })));
        }
    }

    if let Some(s) = &stored
        && before.as_ref() != Some(s)
    {
        write_clock(tx, lead_id, s, now)?;
    }
    if let Some(s) = &stored
        && stage == LifecycleStage::Disqualified
        && prior_stage != Some(LifecycleStage::Disqualified)
    {
        mark_cycle(tx, lead_id, &s.clock, CycleMark::Disqualified, now)?;
    }
    for (kind, detail) in &entries {
        audit(tx, now, Some(lead_id), None, kind, detail)?;
    }
    Ok(())
}

/// A record leadsync itself created at or after `since` (the clock's start) had no activity
/// then: its create is a read, taken after the handover, that showed none. So a
/// `LastActivityDate` on the start's own day on that record was logged after the handover
/// (the record did not exist before), even when the first poll of it already shows the date.
/// `None` for any other record (linked by matching, or created before the start).
fn created_since(
    tx: &Transaction<'_>,
    system: &SystemName,
    remote: &crate::domain::RemoteId,
    since: DateTime<Utc>,
) -> Result<Option<ActivitySeen>> {
    let created: Option<String> = tx
        .prepare_cached(
            "SELECT created_at FROM links WHERE system = ?1 AND object_type = ?2
             AND remote_id = ?3 AND reason = 'created_by_leadsync' AND closed_at IS NULL",
        )?
        .query_row(params![system.as_str(), remote.object_type, remote.id], |r| r.get(0))
        .optional()?;
    let Some(created) = created.as_deref().map(super::parse_ts).transpose()? else {
        return Ok(None);
    };
    Ok((created >= since).then_some(ActivitySeen { value: LastActivity::Never, seen_at: created }))
}

/// Offer a done activity to a clock; whether it counted as an attempt. An activity stamped
/// after `now` (a vendor clock ahead of ours) is taken at `now`.
fn took_attempt(clock: &mut SlaClock, c: &Countable, now: DateTime<Utc>) -> bool {
    let before = clock.attempts;
    clock.touch(TouchKind::Activity, c.at.min(now));
    clock.attempts > before
}

fn attempt_detail(c: &Countable, clock: &SlaClock) -> serde_json::Value {
    serde_json::json!({
        "system": c.system, "activity_id": c.activity_id, "activity": c.kind,
        "at": ts(c.at), "attempts": clock.attempts,
    })
}

/// Count a done activity as a contact attempt on the person's clock, when they have one and
/// the clock takes it (not before its start, not on a recycled or closed clock, not at or
/// before an attempt already counted). Audited as `sla_attempt`. Returns whether it counted.
///
/// # Errors
/// SQLite failures or a corrupt row.
pub(super) fn count_attempt(
    tx: &Transaction<'_>,
    lead_id: &str,
    c: &Countable,
    now: DateTime<Utc>,
) -> Result<bool> {
    let Some(mut stored) = load_clock(tx, lead_id)? else { return Ok(false) };
    let before = stored.clone();
    let took = took_attempt(&mut stored.clock, c, now);
    if stored != before {
        write_clock(tx, lead_id, &stored, now)?;
    }
    if took {
        audit(tx, now, Some(lead_id), None, "sla_attempt", &attempt_detail(c, &stored.clock))?;
    }
    Ok(took)
}

/// A named `disqualify` the policy refuses becomes a `recycle` with `disqualify_refused`
/// (audited); anything else passes unchanged.
///
/// # Errors
/// SQLite failures or a corrupt row.
pub(super) fn police_named(
    tx: &Transaction<'_>,
    contract: &Contract,
    lead_id: &str,
    name: NamedMove,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<(NamedMove, String)> {
    let keep = (name, reason.to_string());
    let Some(policy) = contract.sla.as_ref() else { return Ok(keep) };
    if name != NamedMove::Disqualify {
        return Ok(keep);
    }
    let Some(stored) = load_clock(tx, lead_id)? else { return Ok(keep) };
    match stored.clock.may_disqualify(now, policy) {
        Ok(()) => Ok(keep),
        Err(refusal) => {
            let detail = serde_json::json!({
                "via": "named", "asked_reason": reason, "refusal": refusal.to_string(),
            });
            audit(tx, now, Some(lead_id), None, "sla_disqualify_refused", &detail)?;
            mark_cycle(tx, lead_id, &stored.clock, CycleMark::DisqualifyRefused, now)?;
            Ok((NamedMove::Recycle, DISQUALIFY_REFUSED.to_string()))
        }
    }
}

/// Close the person's clock when a named move took them off the MQL path.
///
/// # Errors
/// SQLite failures or a corrupt row.
pub(super) fn after_named(
    tx: &Transaction<'_>,
    lead_id: &str,
    stage: LifecycleStage,
    now: DateTime<Utc>,
) -> Result<()> {
    if on_mql_path(stage) {
        return Ok(());
    }
    let Some(mut stored) = load_clock(tx, lead_id)? else { return Ok(()) };
    if stage == LifecycleStage::Disqualified {
        mark_cycle(tx, lead_id, &stored.clock, CycleMark::Disqualified, now)?;
    }
    if stored.clock.phase.is_final() {
        return Ok(());
    }
    stored.clock.close();
    stored
        .pending
        .retain(|f| !matches!(f, Fired::DisqualifyRefused { .. } | Fired::Recycle { .. }));
    write_clock(tx, lead_id, &stored, now)?;
    audit(
        tx,
        now,
        Some(lead_id),
        None,
        "sla_closed",
        &serde_json::json!({ "stage": stage.as_str() }),
    )
}

fn links(tx: &Transaction<'_>, lead_id: &str) -> Result<Vec<String>> {
    let mut stmt = tx.prepare_cached(
        "SELECT system, object_type, remote_id FROM links
         WHERE lead_id = ?1 AND closed_at IS NULL ORDER BY id",
    )?;
    let out = stmt
        .query_map([lead_id], |r| {
            Ok(format!(
                "{}:{}/{}",
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?
            ))
        })?
        .collect::<std::result::Result<_, _>>()?;
    Ok(out)
}

impl Ledger {
    /// Evaluate every clock due at `now` (at most `max`), store what each decided, and return
    /// every person with undelivered actions among them, in wake-up order.
    ///
    /// # Errors
    /// SQLite failures or a corrupt row; nothing is committed then.
    pub fn sla_due(
        &self,
        policy: &SlaPolicy,
        now: DateTime<Utc>,
        max: usize,
    ) -> Result<Vec<DueClock>> {
        self.with_tx(|tx| {
            let ids: Vec<String> = {
                let mut stmt = tx.prepare_cached(
                    "SELECT lead_id FROM sla_clocks WHERE next_wakeup IS NOT NULL
                     AND next_wakeup <= ?1 ORDER BY next_wakeup LIMIT ?2",
                )?;
                stmt.query_map(params![ts(now), max as i64], |r| r.get(0))?
                    .collect::<std::result::Result<_, _>>()?
            };
            let mut out = Vec::new();
            for lead_id in ids {
                let Some(mut stored) = load_clock(tx, &lead_id)? else { continue };
                for a in stored.clock.evaluate(now, policy) {
                    let f = Fired::from(a);
                    let detail = serde_json::json!({ "action": f.kind() });
                    audit(tx, now, Some(&lead_id), None, "sla_action", &detail)?;
                    stored.pending.push(f);
                }
                write_clock(tx, &lead_id, &stored, now)?;
                if stored.pending.is_empty() {
                    continue;
                }
                let links = links(tx, &lead_id)?;
                out.push(DueClock { lead_id, pending: stored.pending, links });
            }
            Ok(out)
        })
    }

    /// Remove delivered actions from a person's clock (each removes one equal pending entry).
    ///
    /// # Errors
    /// SQLite failures or a corrupt row.
    pub fn sla_delivered(
        &self,
        lead_id: &str,
        delivered: &[Fired],
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.with_tx(|tx| {
            let Some(mut stored) = load_clock(tx, lead_id)? else { return Ok(()) };
            for d in delivered {
                if let Some(i) = stored.pending.iter().position(|p| p == d) {
                    stored.pending.remove(i);
                }
            }
            write_clock(tx, lead_id, &stored, now)
        })
    }

    /// The earliest instant any clock wants evaluating (`None`: none does).
    ///
    /// # Errors
    /// SQLite failures or a corrupt timestamp.
    pub fn sla_next_wakeup(&self) -> Result<Option<DateTime<Utc>>> {
        let conn = self.conn.lock().map_err(|_| LedgerError::Poisoned)?;
        let raw: Option<String> =
            conn.query_row("SELECT MIN(next_wakeup) FROM sla_clocks", [], |r| r.get(0))?;
        raw.as_deref().map(super::parse_ts).transpose()
    }

    /// Recycle a person for the SLA (the named `recycle` with `reason`), unless they left the
    /// MQL path since the clock decided it (a report moved them on): checked and applied in
    /// one transaction. `None`: skipped (audited as `sla_recycle_skipped`).
    ///
    /// # Errors
    /// [`LedgerError::Corrupt`] without a contract; SQLite failures or a corrupt row.
    pub fn sla_recycle(
        &self,
        lead_id: &str,
        reason: &str,
        rules: &Rules,
        now: DateTime<Utc>,
    ) -> Result<Option<super::NamedOutcome>> {
        let Some(contract) = rules.contract.as_deref() else {
            return Err(LedgerError::Corrupt("no [contract] configured".into()));
        };
        self.with_tx(|tx| {
            let stage = super::lifecycle::load(tx, lead_id)?.and_then(|s| s.stage);
            if !stage.is_some_and(on_mql_path) {
                let detail = serde_json::json!({
                    "reason": reason, "stage": stage.map(LifecycleStage::as_str),
                });
                audit(tx, now, Some(lead_id), None, "sla_recycle_skipped", &detail)?;
                return Ok(None);
            }
            let out = super::lifecycle::named_in_tx(
                tx,
                contract,
                lead_id,
                NamedMove::Recycle,
                reason,
                None,
                rules,
                now,
            )?;
            Ok(Some(out))
        })
    }

    /// A person's SLA clock and undelivered actions (`None`: no clock).
    ///
    /// # Errors
    /// SQLite failures or a corrupt row.
    pub fn sla_clock(&self, lead_id: &str) -> Result<Option<StoredClock>> {
        let conn = self.conn.lock().map_err(|_| LedgerError::Poisoned)?;
        load_clock(&conn, lead_id)
    }

    /// The audit details of one kind for a person, oldest first (tests outside the ledger
    /// cannot run SQL).
    #[cfg(test)]
    pub(crate) fn audit_details(&self, lead_id: &str, kind: &str) -> Vec<serde_json::Value> {
        let conn = self.conn.lock().expect("ledger lock");
        let mut st = conn
            .prepare("SELECT detail FROM audit WHERE lead_id = ?1 AND kind = ?2 ORDER BY id")
            .expect("sql");
        st.query_map([lead_id, kind], |r| r.get::<_, String>(0))
            .expect("query")
            .map(|d| serde_json::from_str(&d.expect("row")).expect("json"))
            .collect()
    }
}

#[cfg(test)]
mod tests;
