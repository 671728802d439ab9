//! The ledger side of the lead contract's lifecycle: each person's governed stage, stage
//! dates, event times and rule state (table `lifecycle`, one JSON row per person), loaded
//! into the reconciler's context and stored from its decisions; the operator's named
//! transitions (`leadsync stage`); and `leadsync plan`, which streams every person through a
//! new contract's rules on a read-only connection and applies nothing.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde::Serialize;

use super::identity::{load_lead, replan, write_lead};
use super::trace::find_lead;
use super::{
    Ledger, LedgerError, LedgerReader, Result, audit, from_json, to_json, ts, write_plan_riding,
};
use crate::contract::conditions::Facts;
use crate::contract::config::Contract;
use crate::contract::lifecycle::{LifecycleStage, NamedMove, Transition};
use crate::domain::{Field, Fields, RemoteId, Stage, normalize_email};
use crate::reconcile::lifecycle::{
    Governed, PersonLifecycle, evaluate_rules, fill_facts, named_move, named_refusal, placement,
    reevaluate, unsent_dates, unsent_reason,
};
use crate::reconcile::{Context, Rules};

pub(super) fn load(conn: &Connection, lead_id: &str) -> Result<Option<PersonLifecycle>> {
    let row: Option<String> = conn
        .prepare_cached("SELECT state FROM lifecycle WHERE lead_id = ?1")?
        .query_row([lead_id], |r| r.get(0))
        .optional()?;
    row.as_deref().map(from_json).transpose()
}

/// Load the governed lifecycle of every person the context names.
pub(super) fn fill_context(tx: &Transaction<'_>, ctx: &mut Context) -> Result<()> {
    let mut ids: Vec<String> = Vec::new();
    for lead in [&ctx.linked, &ctx.by_key, &ctx.by_email, &ctx.related].into_iter().flatten() {
        ids.push(lead.id.clone());
    }
    ids.extend(ctx.candidates.iter().map(|c| c.id.clone()));
    if let Some(closed) = &ctx.closed {
        ids.push(closed.lead_id.clone());
    }
    for id in ids {
        if ctx.lifecycles.contains_key(&id) {
            continue;
        }
        if let Some(state) = load(tx, &id)? {
            ctx.lifecycles.insert(id, state);
        }
    }
    Ok(())
}

fn write(
    tx: &Transaction<'_>,
    lead_id: &str,
    state: &PersonLifecycle,
    now: DateTime<Utc>,
) -> Result<()> {
    let Some(stage) = state.stage else { return Ok(()) };
    tx.prepare_cached(
        "INSERT INTO lifecycle(lead_id, stage, state, updated_at) VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT(lead_id) DO UPDATE SET stage = excluded.stage, state = excluded.state,
                                            updated_at = excluded.updated_at
         WHERE lifecycle.state != excluded.state",
    )?
    .execute(params![lead_id, stage.as_str(), to_json(state)?, ts(now)])?;
    Ok(())
}

/// Store what a decision says about its person's lifecycle (nothing when the decision ended
/// up about another person: a person folded into another keeps the survivor's stage), with
/// the stage-entry dates it leaves to write queued.
pub(super) fn store(
    tx: &Transaction<'_>,
    decision_lead: &str,
    governed: Option<&Governed>,
    rules: &Rules,
    now: DateTime<Utc>,
) -> Result<()> {
    match governed {
        Some(g) if g.lead_id == decision_lead => {
            let mut state = g.state.clone();
            if let Some(contract) = rules.contract.as_deref() {
                queue_stage_dates(tx, contract, &g.lead_id, &mut state, now)?;
            }
            write(tx, &g.lead_id, &state, now)
        }
        _ => Ok(()),
    }
}

/// Put stage-entry dates on the pending outbox row of (person, system, record), merged into
/// the ones it carries already, or on a new row with no fields (`remote_id` `""`: a create,
/// which always has a row when this is called for one).
///
/// # Errors
/// SQLite failures or a corrupt row.
pub(super) fn add_dates(
    tx: &Transaction<'_>,
    lead_id: &str,
    system: &str,
    object_type: &str,
    remote_id: &str,
    dates: &BTreeMap<String, DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<()> {
    super::ride_along(
        tx,
        super::RideAlong::StageDates,
        lead_id,
        system,
        object_type,
        remote_id,
        now,
        |existing| {
            let mut all: BTreeMap<String, DateTime<Utc>> =
                existing.map(from_json).transpose()?.unwrap_or_default();
            all.extend(dates.iter().map(|(k, v)| (k.clone(), *v)));
            to_json(&all)
        },
    )
}

/// Queue the stage-entry dates each system should get and has not had
/// ([`unsent_dates`]): onto the pending outbox row of the person's primary record there (a
/// row with no fields when none is pending), or onto the pending create of one. A system
/// where the person has no record and none is being created gets them once one is linked,
/// at the person's next change. What was queued is recorded in `state` (the caller writes
/// it), so each date goes out once; the connector writes it, and nothing reads it back.
///
/// # Errors
/// SQLite failures or a corrupt row.
pub(super) fn queue_stage_dates(
    tx: &Transaction<'_>,
    contract: &Contract,
    lead_id: &str,
    state: &mut PersonLifecycle,
    now: DateTime<Utc>,
) -> Result<()> {
    // Dates a dropped row handed back during this transaction (`vendor_writes::rehome`, in
    // `write_plan`: nowhere to move them) are unsent here too: `state` was read before that,
    // and is what the caller writes back. Only dates queued before can have been handed back,
    // and nothing else takes one out of the stored `dates_sent` meanwhile.
    if !state.dates_sent.is_empty()
        && let Some(stored) = load(tx, lead_id)?
    {
        for (system, sent) in &mut state.dates_sent {
            let kept = stored.dates_sent.get(system);
            sent.retain(|stage, at| kept.and_then(|k| k.get(stage)) == Some(at));
        }
        state.dates_sent.retain(|_, sent| !sent.is_empty());
    }
    // The reason code travels the same way (and is as cheap when nothing changed).
    super::vendor_writes::queue_stage_reason(tx, contract, lead_id, state, now)?;
    queue_dates(tx, contract, lead_id, &mut None, state, now)
}

/// A person's open links as (system, record), in [`load_lead`]'s order (so the first of a
/// system is the primary record there), without what the records hold; `None`: no such
/// person, or one merged into another.
fn open_links(tx: &Transaction<'_>, lead_id: &str) -> Result<Option<Vec<(String, RemoteId)>>> {
    let live: bool = tx
        .prepare_cached("SELECT EXISTS(SELECT 1 FROM leads WHERE id = ?1 AND merged_into IS NULL)")?
        .query_row([lead_id], |r| r.get(0))?;
    if !live {
        return Ok(None);
    }
    let links = tx
        .prepare_cached(
            "SELECT system, object_type, remote_id FROM links
             WHERE lead_id = ?1 AND closed_at IS NULL
             ORDER BY reason LIKE 'matched_rule:%', id",
        )?
        .query_map([lead_id], |r| {
            Ok((r.get(0)?, RemoteId { object_type: r.get(1)?, id: r.get(2)? }))
        })?
        .collect::<std::result::Result<_, _>>()?;
    Ok(Some(links))
}

/// [`queue_stage_dates`] with the person's [`open_links`] when the caller has them already
/// (`Some`); they are read at the first system with a date to send otherwise.
fn queue_dates(
    tx: &Transaction<'_>,
    contract: &Contract,
    lead_id: &str,
    links: &mut Option<Vec<(String, RemoteId)>>,
    state: &mut PersonLifecycle,
    now: DateTime<Utc>,
) -> Result<()> {
    for system in contract.mapping.stage_dates.keys() {
        let unsent = unsent_dates(contract, state, system);
        if unsent.is_empty() {
            continue;
        }
        if links.is_none() {
            *links = open_links(tx, lead_id)?;
        }
        let Some(l) = links.as_deref() else { return Ok(()) };
        let (object_type, remote_id) = match l.iter().find(|(s, _)| s == system) {
            Some((_, r)) => (r.object_type.clone(), r.id.clone()),
            None => {
                let create: Option<String> = tx
                    .prepare_cached(
                        "SELECT object_type FROM outbox WHERE lead_id = ?1 AND system = ?2
                         AND remote_id = '' AND state = 'pending'",
                    )?
                    .query_row(params![lead_id, system], |r| r.get(0))
                    .optional()?;
                match create {
                    Some(object_type) => (object_type, String::new()),
                    None => continue,
                }
            }
        };
        let dates: BTreeMap<String, DateTime<Utc>> =
            unsent.iter().map(|(st, at)| (st.as_str().to_string(), *at)).collect();
        add_dates(tx, lead_id, system, &object_type, &remote_id, &dates, now)?;
        state.dates_sent.entry(system.clone()).or_default().extend(unsent);
    }
    Ok(())
}

/// What `leadsync stage` did.
#[derive(Debug, Clone, PartialEq)]
pub enum NamedOutcome {
    /// No person matches the query.
    NotFound,
    /// Applied, audited, and the pushes planned.
    Applied { lead_id: String, transition: Transition },
    /// Refused by the table (audited as `stage_refused`); nothing else changed.
    Refused { lead_id: String, from: LifecycleStage, to: LifecycleStage, refusal: String },
}

impl Ledger {
    /// Apply a named transition (recycle, disqualify, reopen with a reason code) to the
    /// person `query` names (an email, a ledger id or `system:remote-id`, as in `trace`), in
    /// one transaction: the stage, its date, the projected fields, the audit line and the
    /// pushes that take it to every system. A refusal is audited too.
    ///
    /// # Errors
    /// [`LedgerError::Corrupt`] without a contract in `rules`; SQLite failures or a corrupt
    /// row (nothing is committed then).
    pub fn named_transition(
        &self,
        query: &str,
        name: NamedMove,
        reason: &str,
        to: Option<LifecycleStage>,
        rules: &Rules,
        now: DateTime<Utc>,
    ) -> Result<NamedOutcome> {
        let Some(contract) = rules.contract.as_deref() else {
            return Err(LedgerError::Corrupt("no [contract] configured".into()));
        };
        self.with_tx(|tx| named_in_tx(tx, contract, query, name, reason, to, rules, now))
    }

    /// A person's governed lifecycle (`None`: not placed yet).
    ///
    /// # Errors
    /// SQLite failures or a corrupt row.
    pub fn lifecycle(&self, lead_id: &str) -> Result<Option<PersonLifecycle>> {
        let conn = self.conn.lock().map_err(|_| LedgerError::Poisoned)?;
        load(&conn, lead_id)
    }
}

/// [`Ledger::named_transition`] inside a caller's transaction.
#[allow(clippy::too_many_arguments, reason = "the person, the ask and the rules")]
pub(super) fn named_in_tx(
    tx: &Transaction<'_>,
    contract: &Contract,
    query: &str,
    name: NamedMove,
    reason: &str,
    to: Option<LifecycleStage>,
    rules: &Rules,
    now: DateTime<Utc>,
) -> Result<NamedOutcome> {
    let Some(lead_id) = find_lead(tx, query)? else { return Ok(NamedOutcome::NotFound) };
    let Some(mut lead) = load_lead(tx, &lead_id)? else {
        return Ok(NamedOutcome::NotFound);
    };
    let mut state = load(tx, &lead_id)?.unwrap_or_default();
    let (name, reason) = super::sla::police_named(tx, contract, &lead_id, name, reason, now)?;
    let reason = reason.as_str();
    let moved = named_move(
        contract,
        &rules.status_implies_stage,
        &mut state,
        &mut lead.fields,
        &mut lead.provenance,
        name,
        reason,
        to,
        now,
    );
    match moved {
        Ok((transition, entries)) => {
            write_lead(tx, &lead_id, false, &lead.fields, &lead.provenance, now)?;
            write(tx, &lead_id, &state, now)?;
            for e in &entries {
                audit(tx, now, Some(&lead_id), None, e.kind, &e.detail)?;
            }
            replan(tx, &lead_id, rules, now)?;
            queue_stage_dates(tx, contract, &lead_id, &mut state, now)?;
            write(tx, &lead_id, &state, now)?;
            super::sla::after_named(tx, &lead_id, transition.to, now)?;
            Ok(NamedOutcome::Applied { lead_id, transition })
        }
        Err((from, to, refusal)) => {
            let e = named_refusal(name, from, to, reason, &refusal);
            audit(tx, now, Some(&lead_id), None, e.kind, &e.detail)?;
            Ok(NamedOutcome::Refused { lead_id, from, to, refusal: refusal.to_string() })
        }
    }
}

/// What one batch of a re-evaluation did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReevalBatch {
    /// Persons looked at.
    pub persons: usize,
    /// Persons whose governed stage changed (placed or moved).
    pub moved: usize,
    /// The last person looked at, where the next batch starts; `None`: the sweep is done.
    pub next: Option<String>,
}

/// Which persons a re-evaluation looks at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sweep {
    /// Everyone (the rules changed).
    Everyone,
    /// Only persons with a recorded event: with no event, an event window's condition
    /// cannot change as time passes.
    WithEvents,
}

const RULES_HASH: &str = "rules_hash";

impl Ledger {
    /// The fingerprint of the rules everyone was last re-evaluated with (`None`: never).
    ///
    /// # Errors
    /// SQLite failures.
    pub fn rules_hash(&self) -> Result<Option<String>> {
        let conn = self.conn.lock().map_err(|_| LedgerError::Poisoned)?;
        Ok(conn
            .prepare_cached("SELECT value FROM contract_state WHERE key = ?1")?
            .query_row([RULES_HASH], |r| r.get(0))
            .optional()?)
    }

    /// Record that everyone was re-evaluated with the rules of this fingerprint.
    ///
    /// # Errors
    /// SQLite failures.
    pub fn set_rules_hash(&self, hash: &str, now: DateTime<Utc>) -> Result<()> {
        self.with_tx(|tx| {
            tx.prepare_cached(
                "INSERT INTO contract_state(key, value, updated_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT(key) DO UPDATE SET value = excluded.value,
                                                updated_at = excluded.updated_at",
            )?
            .execute(params![RULES_HASH, hash, ts(now)])?;
            Ok(())
        })
    }

    /// Re-evaluate up to `batch` persons after `after` (ledger id order) in one transaction,
    /// with the same code a change runs ([`reevaluate`]): placement of persons not placed
    /// yet, rule moves through the transition table, audit lines, the projected fields and
    /// the pushes that take them to every system. Persons the rules leave as they were are
    /// not written. Without a contract in `rules` nothing happens.
    ///
    /// # Errors
    /// SQLite failures or a corrupt row (nothing of the batch is committed then).
    pub fn reevaluate_batch(
        &self,
        rules: &Rules,
        sweep: Sweep,
        after: Option<&str>,
        batch: usize,
        now: DateTime<Utc>,
    ) -> Result<ReevalBatch> {
        let Some(contract) = rules.contract.as_deref() else { return Ok(ReevalBatch::default()) };
        self.with_tx(|tx| sweep_batch(tx, contract, rules, sweep, after, batch, now))
    }
}

/// The batch query of a sweep: each person's id, fields, lifecycle JSON and normalised email,
/// in id order.
fn sweep_sql(sweep: Sweep) -> &'static str {
    match sweep {
        Sweep::Everyone => {
            "SELECT l.id, l.fields, c.state, l.email_norm
             FROM leads l LEFT JOIN lifecycle c ON c.lead_id = l.id
             WHERE l.merged_into IS NULL AND l.id > ?1
             ORDER BY l.id LIMIT ?2"
        }
        Sweep::WithEvents => {
            "SELECT l.id, l.fields, c.state, l.email_norm
             FROM leads l JOIN lifecycle c ON c.lead_id = l.id
             WHERE l.merged_into IS NULL AND l.id > ?1
               AND json_extract(c.state, '$.events') != '{}'
             ORDER BY l.id LIMIT ?2"
        }
    }
}

/// One person's row as [`sweep_sql`] reads it, by id (`None`: gone, merged into another,
/// or, for [`Sweep::WithEvents`], no longer with an event).
fn sweep_row(conn: &Connection, sweep: Sweep, id: &str) -> Result<Option<SweepRow>> {
    let sql = match sweep {
        Sweep::Everyone => {
            "SELECT l.id, l.fields, c.state, l.email_norm
             FROM leads l LEFT JOIN lifecycle c ON c.lead_id = l.id
             WHERE l.id = ?1 AND l.merged_into IS NULL"
        }
        Sweep::WithEvents => {
            "SELECT l.id, l.fields, c.state, l.email_norm
             FROM leads l JOIN lifecycle c ON c.lead_id = l.id
             WHERE l.id = ?1 AND l.merged_into IS NULL
               AND json_extract(c.state, '$.events') != '{}'"
        }
    };
    Ok(conn
        .prepare_cached(sql)?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)))
        .optional()?)
}

/// A person's row as a sweep reads it: id, fields, lifecycle JSON (`None`: not placed) and
/// `leads.email_norm`.
type SweepRow = (String, String, Option<String>, Option<String>);
type SweepRows = Vec<SweepRow>;

fn sweep_rows(
    conn: &Connection,
    sweep: Sweep,
    after: Option<&str>,
    batch: usize,
) -> Result<SweepRows> {
    let limit = i64::try_from(batch.max(1)).unwrap_or(i64::MAX);
    Ok(conn
        .prepare_cached(sweep_sql(sweep))?
        .query_map(params![after.unwrap_or(""), limit], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
        })?
        .collect::<std::result::Result<_, _>>()?)
}

/// [`Ledger::reevaluate_batch`] inside its transaction. Each person's fields and lifecycle
/// come with the batch's one query, and the rules run on them alone ([`sweep_person`]).
fn sweep_batch(
    tx: &Transaction<'_>,
    contract: &Contract,
    rules: &Rules,
    sweep: Sweep,
    after: Option<&str>,
    batch: usize,
    now: DateTime<Utc>,
) -> Result<ReevalBatch> {
    let rows = sweep_rows(tx, sweep, after, batch)?;
    let mut out = ReevalBatch { persons: rows.len(), ..ReevalBatch::default() };
    for row in &rows {
        out.moved += usize::from(sweep_person(tx, contract, rules, row, false, now)?);
    }
    out.next = (rows.len() >= batch.max(1)).then(|| rows.last().map(|r| r.0.clone())).flatten();
    Ok(out)
}

/// One person of a sweep, from their stored fields and lifecycle JSON: most persons of a
/// sweep change nothing, and for them nothing else is read or written. Only a person whose
/// fields change (a move projected onto `lifecycle_stage`, a status written) is loaded whole
/// (provenance, links, what the records hold) to store the fields and plan the pushes; only
/// one with a stage date to send has their links read. Returns whether the stage changed.
///
/// `mover` is a hint from the scan ([`ToWrite::fields_change`]): such a person is loaded
/// whole at once and evaluated once, instead of evaluated on their fields first and again
/// once loaded. The person is evaluated on what this transaction reads either way, so a
/// hint made stale by a later change costs time, never a wrong write.
fn sweep_person(
    tx: &Transaction<'_>,
    contract: &Contract,
    rules: &Rules,
    row: &SweepRow,
    mover: bool,
    now: DateTime<Utc>,
) -> Result<bool> {
    let (id, fields, state, email_norm) = (&row.0, &row.1, row.2.as_deref(), row.3.as_deref());
    let status_implies = &rules.status_implies_stage;
    let state_before: PersonLifecycle = state.map(from_json).transpose()?.unwrap_or_default();
    let mut state = state_before.clone();
    // The rules never read provenance, and it is stored only along with changed fields
    // (each field `reevaluate` writes gets its provenance with it): unless the scan said the
    // fields change, a first evaluation on the fields alone, with a scratch map, decides
    // whether the person needs loading whole at all.
    let first = if mover {
        None
    } else {
        let fields_before: Fields = from_json(fields)?;
        let mut fields = fields_before.clone();
        let entries = reevaluate(
            contract,
            status_implies,
            &mut state,
            &mut fields,
            &mut BTreeMap::new(),
            now,
        );
        Some((entries, fields != fields_before))
    };
    let (entries, changed) = match first {
        Some((entries, false)) => (entries, None),
        _ => {
            let Some(mut lead) = load_lead(tx, id)? else { return Ok(false) };
            // On the stored provenance this time (after a first evaluation, with the same
            // result: the fields and stage are those just computed).
            state.clone_from(&state_before);
            let fields_before = lead.fields.clone();
            let entries = reevaluate(
                contract,
                status_implies,
                &mut state,
                &mut lead.fields,
                &mut lead.provenance,
                now,
            );
            let changed = (lead.fields != fields_before).then_some(lead);
            (entries, changed)
        }
    };
    let mut links = None;
    if let Some(lead) = changed {
        let norm = lead.fields.get(&Field::Email).and_then(|e| normalize_email(e));
        if norm.as_deref() == email_norm {
            // What `write_lead` writes, but `email_norm` (the rules write the stage and the
            // status, not the email) is left out of the `UPDATE`: SQLite rewrites the index
            // entry of every column an `UPDATE` sets, changed or not, and `leads_email` is in
            // email order, so each person's entry is on a page of its own (the sweep goes in
            // id order): a page more per mover to write to the WAL.
            tx.prepare_cached(
                "UPDATE leads SET fields = ?2, provenance = ?3, updated_at = ?4 WHERE id = ?1",
            )?
            .execute(params![
                id,
                to_json(&lead.fields)?,
                to_json(&lead.provenance)?,
                ts(now)
            ])?;
        } else {
            write_lead(tx, id, false, &lead.fields, &lead.provenance, now)?;
        }
        // `lead` is what `replan` would load again: only fields and provenance changed.
        let intents = crate::reconcile::plan_pushes(&lead, rules);
        // The stage dates due to a system whose row the plan writes go on that row as it is
        // written; the others are queued below (`queue_dates`).
        let mut due = Vec::new();
        let mut riding: Vec<Option<BTreeMap<String, DateTime<Utc>>>> = vec![None; intents.len()];
        for system in contract.mapping.stage_dates.keys() {
            let unsent = unsent_dates(contract, &state, system);
            if unsent.is_empty() {
                continue;
            }
            // Where `queue_dates` puts them: the primary record there, else the create.
            let primary = lead.links.iter().find(|k| k.system.as_str() == system);
            let at = intents.iter().position(|i| {
                i.system.as_str() == system
                    && match primary {
                        Some(k) => i.remote.as_ref().is_some_and(|r| r.id == k.remote.id),
                        None => i.remote.is_none(),
                    }
            });
            if let Some(k) = at {
                riding[k] =
                    Some(unsent.iter().map(|(st, t)| (st.as_str().to_string(), *t)).collect());
                due.push((k, system, unsent));
            }
        }
        let (rode, requeued) = write_plan_riding(tx, id, &intents, &riding, now)?;
        for (k, system, unsent) in due {
            if rode[k] {
                state.dates_sent.entry(system.clone()).or_default().extend(unsent);
            }
        }
        super::vendor_writes::forget_requeued(&mut state, &requeued);
        links = Some(lead.links.into_iter().map(|k| (k.system.0, k.remote)).collect());
    }
    // Also dates and a reason a system has not had yet (a mapping added since).
    super::vendor_writes::backfill_reason(tx, contract, id, &mut state)?;
    super::vendor_writes::queue_stage_reason(tx, contract, id, &mut state, now)?;
    queue_dates(tx, contract, id, &mut links, &mut state, now)?;
    if state == state_before {
        return Ok(false);
    }
    write(tx, id, &state, now)?;
    for e in &entries {
        audit(tx, now, Some(id), None, e.kind, &e.detail)?;
    }
    Ok(state.stage != state_before.stage)
}

/// Whether [`sweep_person`] would write anything for this person, decided on a read
/// connection from their stored rows (no writes): the fields or the lifecycle change, or a
/// stage date or reason code is due to a system where the person has somewhere to send it
/// (an open link or a pending create there, as `queue_dates` and `queue_stage_reason`
/// look it up). When it says no (`None`), [`sweep_person`] writes nothing either, on the
/// same rows; `Some(true)`: the person's fields change.
#[allow(clippy::too_many_arguments, reason = "the person's rows, the rules and the time")]
fn sweep_would_write(
    conn: &Connection,
    targets: &mut Targets,
    contract: &Contract,
    status_implies: &BTreeMap<String, Stage>,
    id: &str,
    fields: &str,
    state: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Option<bool>> {
    let fields_before: Fields = from_json(fields)?;
    let state_before: PersonLifecycle = state.map(from_json).transpose()?.unwrap_or_default();
    let (mut fields, mut state) = (fields_before.clone(), state_before.clone());
    reevaluate(contract, status_implies, &mut state, &mut fields, &mut BTreeMap::new(), now);
    if fields != fields_before {
        return Ok(Some(true));
    }
    // A standing reason recovered from the audit trail is a lifecycle change to write.
    super::vendor_writes::backfill_reason(conn, contract, id, &mut state)?;
    if state != state_before {
        return Ok(Some(false));
    }
    for system in contract.mapping.stage_reason.keys() {
        if unsent_reason(contract, &state, system).is_some() && targets.has(conn, id, system)? {
            return Ok(Some(false));
        }
    }
    for system in contract.mapping.stage_dates.keys() {
        if !unsent_dates(contract, &state, system).is_empty() && targets.has(conn, id, system)? {
            return Ok(Some(false));
        }
    }
    Ok(None)
}

/// A person a sweep's scan found something to write for ([`LedgerReader::sweep_scan`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToWrite {
    pub id: String,
    /// The person's fields change on the scan's snapshot: the writer loads them whole at
    /// once. A hint only; the writer evaluates the person again on what it reads.
    pub fields_change: bool,
}

/// Whether a write for a person of one scan batch at a system has somewhere to go: an open
/// link there or a pending create (where `queue_dates` and `vendor_writes::target` put it).
/// Read for the whole batch at the first person that asks (two range reads, where a look-up
/// per person took two queries each: a seventh of the scan's CPU when most persons have a
/// date to send and nowhere to send it).
struct Targets {
    /// The batch's ids: after `.0` (`""`: from the first), up to and including `.1`.
    range: (String, String),
    found: Option<std::collections::HashSet<(String, String)>>,
}

impl Targets {
    fn new(after: Option<&str>, last: Option<&str>) -> Targets {
        Targets {
            range: (after.unwrap_or("").to_string(), last.unwrap_or("").to_string()),
            found: None,
        }
    }

    fn has(&mut self, conn: &Connection, lead_id: &str, system: &str) -> Result<bool> {
        if self.found.is_none() {
            let (after, last) = (&self.range.0, &self.range.1);
            let found = conn
                .prepare_cached(
                    "SELECT lead_id, system FROM links
                     WHERE closed_at IS NULL AND lead_id > ?1 AND lead_id <= ?2
                     UNION
                     SELECT lead_id, system FROM outbox
                     WHERE state = 'pending' AND remote_id = '' AND lead_id > ?1 AND lead_id <= ?2",
                )?
                .query_map(params![after, last], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect::<std::result::Result<_, _>>()?;
            self.found = Some(found);
        }
        let key = (lead_id.to_string(), system.to_string());
        Ok(self.found.as_ref().is_some_and(|f| f.contains(&key)))
    }
}

impl LedgerReader {
    /// The read half of a pipelined sweep: evaluate up to `batch` persons after `after`
    /// (ledger id order) with `rules` on this read connection, and return the batch (persons
    /// looked at, where the next one starts; `moved` is 0) with the persons a sweep would
    /// write something for, to hand to [`Ledger::reevaluate_persons`]. Writes nothing. Each
    /// batch is read in one read transaction of its own: what it decides about a person is
    /// decided on one consistent snapshot, and a long sweep does not hold one (the WAL can be
    /// checkpointed between batches).
    ///
    /// # Errors
    /// SQLite failures or a corrupt row.
    pub fn sweep_scan(
        &self,
        rules: &Rules,
        sweep: Sweep,
        after: Option<&str>,
        batch: usize,
        now: DateTime<Utc>,
    ) -> Result<(ReevalBatch, Vec<ToWrite>)> {
        let Some(contract) = rules.contract.as_deref() else {
            return Ok((ReevalBatch::default(), Vec::new()));
        };
        // Plans fixed at prepare time, as on the writer (`set_pragmas`): with the bundled
        // SQLite's STAT4 the per-person lookups would otherwise be planned again at each run.
        self.conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
        let tx = self.conn.unchecked_transaction()?;
        let rows = sweep_rows(&tx, sweep, after, batch)?;
        let mut out = ReevalBatch { persons: rows.len(), ..ReevalBatch::default() };
        let mut write = Vec::new();
        let implies = &rules.status_implies_stage;
        let mut targets = Targets::new(after, rows.last().map(|r| r.0.as_str()));
        for (id, fields, state, _) in &rows {
            let (t, st) = (&mut targets, state.as_deref());
            if let Some(fields_change) =
                sweep_would_write(&tx, t, contract, implies, id, fields, st, now)?
            {
                write.push(ToWrite { id: id.clone(), fields_change });
            }
        }
        tx.commit()?;
        out.next = (rows.len() >= batch.max(1)).then(|| rows.last().map(|r| r.0.clone())).flatten();
        Ok((out, write))
    }
}

impl Ledger {
    /// The write half of a pipelined sweep: re-evaluate the persons `ids` names (from
    /// [`LedgerReader::sweep_scan`]) in one transaction, exactly as
    /// [`Ledger::reevaluate_batch`] does, each from their rows as they are now, read again
    /// inside this transaction: a person changed since the scan is evaluated on what they
    /// hold now, never on what the scan saw, so no concurrent change is lost. A person gone,
    /// merged away, or (for [`Sweep::WithEvents`]) without events since is skipped, as the
    /// batch query would skip them. The transaction ends after the first person that brings
    /// it past `budget`: the returned batch says how many of `ids` were done (`persons`) and
    /// how many of them moved; the caller passes the rest again.
    ///
    /// # Errors
    /// SQLite failures or a corrupt row (nothing is committed then).
    pub fn reevaluate_persons(
        &self,
        rules: &Rules,
        sweep: Sweep,
        ids: &[ToWrite],
        budget: std::time::Duration,
        now: DateTime<Utc>,
    ) -> Result<ReevalBatch> {
        let Some(contract) = rules.contract.as_deref() else {
            return Ok(ReevalBatch { persons: ids.len(), ..ReevalBatch::default() });
        };
        let started = std::time::Instant::now();
        self.with_tx(|tx| {
            let mut out = ReevalBatch::default();
            for p in ids {
                out.persons += 1;
                if let Some(row) = sweep_row(tx, sweep, &p.id)? {
                    let mover = p.fields_change;
                    out.moved += usize::from(sweep_person(tx, contract, rules, &row, mover, now)?);
                }
                if started.elapsed() >= budget {
                    break;
                }
            }
            Ok(out)
        })
    }
}

/// One person `plan` would move.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedMove {
    pub lead_id: String,
    pub from: LifecycleStage,
    pub to: LifecycleStage,
    /// Each step, e.g. `lead -> mql`.
    pub steps: Vec<String>,
}

/// What a contract's rules would do to every person in the ledger.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StagePlan {
    pub persons: u64,
    /// Persons without a governed stage yet, placed from their fields for the evaluation.
    pub unplaced: u64,
    pub changing: u64,
    /// `from -> to` (first stage to final stage) -> persons.
    pub moves: BTreeMap<String, u64>,
    /// Rule moves the transition table would refuse: `from -> to` -> persons.
    pub refused: BTreeMap<String, u64>,
    /// The first persons that would move, in ledger order.
    pub sample: Vec<PlannedMove>,
}

impl LedgerReader {
    /// Evaluate `contract`'s rules and transition table for every person, as the engine would
    /// on the person's next change, and count who would change stage. Reads only; rows are
    /// streamed and one [`Facts`] is reused, so memory stays flat however many persons.
    ///
    /// # Errors
    /// SQLite failures or a corrupt row.
    pub fn plan_stages(
        &self,
        contract: &Contract,
        status_implies: &BTreeMap<String, Stage>,
        sample: usize,
        now: DateTime<Utc>,
    ) -> Result<StagePlan> {
        plan(&self.conn, contract, status_implies, sample, now)
    }

    /// A person's governed lifecycle (`None`: not placed yet).
    ///
    /// # Errors
    /// SQLite failures or a corrupt row.
    pub fn lifecycle(&self, lead_id: &str) -> Result<Option<PersonLifecycle>> {
        load(&self.conn, lead_id)
    }
}

fn plan(
    conn: &Connection,
    contract: &Contract,
    status_implies: &BTreeMap<String, Stage>,
    sample: usize,
    now: DateTime<Utc>,
) -> Result<StagePlan> {
    let mut out = StagePlan::default();
    let mut facts = Facts::new(&contract.vocabulary, LifecycleStage::Lead);
    let mut stmt = conn.prepare(
        "SELECT l.id, l.fields, c.state FROM leads l LEFT JOIN lifecycle c ON c.lead_id = l.id
         WHERE l.merged_into IS NULL",
    )?;
    let mut rows = stmt.query([])?;
    let empty = PersonLifecycle::default();
    while let Some(row) = rows.next()? {
        out.persons += 1;
        let fields: Fields = {
            let raw = row.get_ref(1)?.as_str().map_err(rusqlite::Error::from)?;
            serde_json::from_str(raw).map_err(|e| LedgerError::Corrupt(format!("decode: {e}")))?
        };
        let state: Option<PersonLifecycle> = match row.get_ref(2)?.as_str_or_null() {
            Ok(Some(raw)) => Some(from_json(raw)?),
            Ok(None) => None,
            Err(e) => return Err(rusqlite::Error::from(e).into()),
        };
        let (start, state) = match state.as_ref().and_then(|s| s.stage.map(|st| (st, s))) {
            Some((st, s)) => (st, s),
            None => {
                out.unplaced += 1;
                (placement(contract, status_implies, &fields), &empty)
            }
        };
        fill_facts(contract, &mut facts, start, fields, state);
        let (moves, _) = evaluate_rules(contract, &mut facts, &state.held, now);
        for m in &moves {
            if let Err(r) = m {
                *out.refused.entry(format!("{} -> {}", r.from, r.to)).or_default() += 1;
            }
        }
        if facts.stage == start {
            continue;
        }
        out.changing += 1;
        *out.moves.entry(format!("{start} -> {}", facts.stage)).or_default() += 1;
        if out.sample.len() < sample {
            out.sample.push(PlannedMove {
                lead_id: row.get(0)?,
                from: start,
                to: facts.stage,
                steps: moves
                    .iter()
                    .filter_map(|m| m.as_ref().ok())
                    .map(|t| format!("{} -> {}", t.from, t.to))
                    .collect(),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod sweep_tests;
#[cfg(test)]
mod tests;
