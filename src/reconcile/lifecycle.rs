//! The governed lifecycle inside reconciliation (pure): with a `[contract]`, a person's stage
//! is the contract's [`LifecycleStage`], moved only through the [`TransitionTable`], and the
//! canonical `lifecycle_stage` and `lead_status` fields are its projection onto what the
//! systems can hold.
//!
//! **Architecture Invariant:** nothing here does IO; the ledger loads each person's
//! [`PersonLifecycle`] into the [`Context`](super::Context) and stores the one a decision
//! returns, in the same transaction.
//!
//! # What moves a stage
//! 1. **Reports**: what a system newly says (only news counts: a value leadsync pushed, or
//!    already knew the record held, is not a report). A `lifecycle_stage` report is checked
//!    as [`How::Reported`]; a refused one (a backward move, a source the table does not
//!    allow) is audited as `stage_refused` with the refusal and not applied. A lead status is
//!    a report of at least the stage `[contract.mapping] status_stages` (else
//!    `sync.status_implies_stage`) gives it: a floor, so a status behind the person's stage
//!    says nothing and is not audited.
//! 2. **Rules**: [`QualificationRules`] move a person forward ([`How::Rule`]), repeatedly
//!    within one evaluation so that `stage is sal` rules see the new stage. Rules are edge
//!    triggered: a rule moves a person only when it holds now and did not hold at the
//!    person's previous evaluation ([`PersonLifecycle::held`]). That is what keeps a recycle
//!    from being undone by the next sync: a person recycled while the MQL rule holds
//!    re-qualifies only once the rule stops holding and holds again (new engagement).
//! 3. **Named transitions** (recycle, disqualify, reopen with a reason code): only from an
//!    operator (`leadsync stage`), see [`named_move`].
//!
//! A person without a governed stage yet (new, or known before the contract was switched on)
//! is *placed* at the stage their fields say (their `lifecycle_stage`, else their lead
//! status's stage, else `lead`), audited as via `placed`.
//!
//! Each applied move stamps [`StageDates`] once and is audited as `stage` with from, to, via
//! and reason. Reported moves and placements are dated by the vendor's modification time
//! (never later than now), rule and named moves by leadsync's clock.
//!
//! # What is written to the systems
//! `lifecycle_stage` becomes [`LifecycleStage::to_domain`] (SAL is MQL to six-stage systems),
//! or `[contract.mapping] recycled_stage` / `disqualified_stage` (`""`: no stage); entering
//! recycled or disqualified also sets `lead_status` to `recycled_status` /
//! `disqualified_status`. Each system's field map turns these into its values, and a system
//! that maps neither value leaves it out. A system whose record holds a stage further down
//! the funnel than the person's (after a backward named move) gets that stage cleared first
//! ([`add_clears`]): HubSpot moves `lifecyclestage` only forward through its API.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{AuditEntry, LeadState, Provenance, PushIntent, Rules};
use crate::contract::conditions::{Facts, QualificationRules};
use crate::contract::config::Contract;
use crate::contract::lifecycle::{
    How, LifecycleStage, NamedMove, Refusal, StageDates, Transition, TransitionTable,
};
use crate::domain::{Field, Fields, Stage, SystemName, stamp};

/// One person's governed lifecycle, as the ledger stores it (JSON).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PersonLifecycle {
    /// `None`: not placed yet.
    #[serde(default)]
    pub stage: Option<LifecycleStage>,
    #[serde(default)]
    pub dates: StageDates,
    /// Declared event -> the latest time it happened.
    #[serde(default, deserialize_with = "stamp::de_map")]
    pub events: BTreeMap<String, DateTime<Utc>>,
    /// Declared custom field -> its value as text, from the systems that map it
    /// (`[contract.mapping.custom_fields]`): the latest value read from any of them.
    #[serde(default)]
    pub custom: BTreeMap<String, String>,
    /// Declared custom field -> the vendor's modification time of the record its value (or
    /// its clearing) was read from, so an older state read later does not undo it.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "stamp::de_map"
    )]
    pub custom_at: BTreeMap<String, DateTime<Utc>>,
    /// Stages whose qualification rule held at the previous evaluation (edge triggering).
    #[serde(default)]
    pub held: BTreeSet<LifecycleStage>,
    /// System -> stage -> the entry date leadsync last queued for that system's
    /// `[contract.mapping.stage_dates]` property, so a date is written only when it changed.
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "stamp::de_nested"
    )]
    pub dates_sent: BTreeMap<String, BTreeMap<LifecycleStage, DateTime<Utc>>>,
    /// The reason code of the named transition that put the person in their current stage
    /// (`None`: the latest move was not a named one, so no reason stands).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// System -> the reason code leadsync last queued for its `[contract.mapping.stage_reason]`
    /// property (`""`: cleared), so the property is written only when it changes.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub reason_sent: BTreeMap<String, String>,
}

/// The value a system's `[contract.mapping.stage_reason]` property should get and has not
/// been sent: the standing reason code, or `""` once the person moved on from the named
/// transition's stage (a property never written counts as `""`, so nothing is cleared that
/// was never set). `None`: nothing to write (or the system maps no reason property).
pub fn unsent_reason(contract: &Contract, state: &PersonLifecycle, system: &str) -> Option<String> {
    if !contract.mapping.stage_reason.contains_key(system) {
        return None;
    }
    let want = state.reason.as_deref().unwrap_or("");
    let sent = state.reason_sent.get(system).map_or("", String::as_str);
    (want != sent).then(|| want.to_string())
}

/// The stage-entry dates a system should be sent and has not been: for every stage the
/// system maps, the person's latest entry when it differs from the one last queued for it.
pub fn unsent_dates(
    contract: &Contract,
    state: &PersonLifecycle,
    system: &str,
) -> BTreeMap<LifecycleStage, DateTime<Utc>> {
    let Some(props) = contract.mapping.stage_dates.get(system) else { return BTreeMap::new() };
    let sent = state.dates_sent.get(system);
    props
        .keys()
        .filter_map(|st| state.dates.get(*st).map(|e| (*st, e.last)))
        .filter(|(st, at)| sent.and_then(|m| m.get(st)) != Some(at))
        .collect()
}

/// What the reconciler decided about a person's lifecycle; the ledger stores `state` for
/// `lead_id` (and only for it: a person folded into another keeps the survivor's stage).
#[derive(Debug, Clone, PartialEq)]
pub struct Governed {
    pub lead_id: String,
    pub state: PersonLifecycle,
}

/// The stage a person's fields say, for placement: the six-stage `lifecycle_stage`, else
/// the stage of their lead status, else `lead`.
pub fn placement(
    contract: &Contract,
    status_implies: &BTreeMap<String, Stage>,
    fields: &Fields,
) -> LifecycleStage {
    if let Some(st) = fields.get(&Field::LifecycleStage).and_then(|s| Stage::parse(s)) {
        return LifecycleStage::from(st);
    }
    fields
        .get(&Field::LeadStatus)
        .and_then(|s| status_stage(contract, status_implies, s))
        .unwrap_or(LifecycleStage::Lead)
}

fn status_stage(
    contract: &Contract,
    status_implies: &BTreeMap<String, Stage>,
    status: &str,
) -> Option<LifecycleStage> {
    contract
        .mapping
        .status_stages
        .get(status)
        .copied()
        .or_else(|| status_implies.get(status).map(|s| LifecycleStage::from(*s)))
}

/// The `lifecycle_stage` value a stage is written as (`None`: no stage).
pub fn projected_stage(contract: &Contract, stage: LifecycleStage) -> Option<Stage> {
    match stage {
        LifecycleStage::Recycled => contract.mapping.recycled_stage,
        LifecycleStage::Disqualified => contract.mapping.disqualified_stage,
        other => other.to_domain(),
    }
}

/// Fill `facts` (cleared first, buffers kept) from a person's fields and lifecycle.
pub fn fill_facts(
    contract: &Contract,
    facts: &mut Facts,
    stage: LifecycleStage,
    fields: Fields,
    state: &PersonLifecycle,
) {
    facts.clear(stage);
    facts.fields = fields;
    for (name, raw) in &state.custom {
        facts.set_text(&contract.vocabulary, name, raw);
    }
    for (name, at) in &state.events {
        if let Some(id) = contract.vocabulary.event(name) {
            facts.record_event(id, *at);
        }
    }
}

/// The stages whose rule holds for `facts`.
fn holding(
    rules: &QualificationRules,
    facts: &Facts,
    now: DateTime<Utc>,
) -> BTreeSet<LifecycleStage> {
    rules.iter().filter(|(_, r)| r.holds(facts, now)).map(|(s, _)| s).collect()
}

/// One rule-driven step: the furthest stage forward of `stage` whose rule holds now, did not
/// hold at the previous evaluation, and has not been tried in this evaluation.
fn rule_target(
    rules: &QualificationRules,
    facts: &Facts,
    prev_held: &BTreeSet<LifecycleStage>,
    tried: &BTreeSet<LifecycleStage>,
    now: DateTime<Utc>,
) -> Option<LifecycleStage> {
    // Rules come down the funnel, so the last one that fits is the furthest.
    rules
        .iter()
        .filter(|(s, _)| LifecycleStage::is_forward_move(facts.stage, *s))
        .filter(|(s, _)| !prev_held.contains(s) && !tried.contains(s))
        .filter(|(_, r)| r.holds(facts, now))
        .last()
        .map(|(s, _)| s)
}

/// A rule move the transition table refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleRefusal {
    pub from: LifecycleStage,
    pub to: LifecycleStage,
    pub refusal: Refusal,
}

/// Run the rules from `stage` as one evaluation: every allowed move (in order) and every
/// refusal, and the rules holding at the end. Pure and allocation-light: `facts` is reused.
pub fn evaluate_rules(
    contract: &Contract,
    facts: &mut Facts,
    prev_held: &BTreeSet<LifecycleStage>,
    now: DateTime<Utc>,
) -> (Vec<Result<Transition, RuleRefusal>>, BTreeSet<LifecycleStage>) {
    let mut out = Vec::new();
    let mut tried = BTreeSet::new();
    // Each step moves forward or marks a stage tried, so this ends within the stage count.
    for _ in 0..LifecycleStage::ALL.len() {
        let Some(to) = rule_target(&contract.rules, facts, prev_held, &tried, now) else { break };
        tried.insert(to);
        match contract.table.check(facts.stage, to, How::Rule) {
            Ok(t) => {
                facts.stage = t.to;
                out.push(Ok(t));
            }
            Err(refusal) => out.push(Err(RuleRefusal { from: facts.stage, to, refusal })),
        }
    }
    let held = holding(&contract.rules, facts, now);
    (out, held)
}

/// The audit line of an applied move.
fn stage_event(t: &Transition, system: Option<&SystemName>) -> AuditEntry {
    AuditEntry {
        kind: "stage",
        detail: serde_json::json!({
            "from": t.from.as_str(),
            "to": t.to.as_str(),
            "via": t.via.to_string(),
            "reason": t.reason.as_ref().map(|r| r.as_str()),
            "system": system.map(SystemName::as_str),
        }),
    }
}

/// The audit line of a refused move.
fn refusal_event(
    from: LifecycleStage,
    to: LifecycleStage,
    via: &str,
    refusal: &Refusal,
    system: Option<&SystemName>,
) -> AuditEntry {
    AuditEntry {
        kind: "stage_refused",
        detail: serde_json::json!({
            "from": from.as_str(),
            "to": to.as_str(),
            "via": via,
            "refusal": refusal.to_string(),
            "system": system.map(SystemName::as_str),
        }),
    }
}

/// Apply an allowed move: the stage, its date, and the status a named move writes.
fn apply(
    contract: &Contract,
    state: &mut PersonLifecycle,
    fields: &mut Fields,
    provenance: &mut BTreeMap<Field, Provenance>,
    t: &Transition,
    at: DateTime<Utc>,
) {
    state.stage = Some(t.to);
    state.dates.apply(t, at);
    // A named move's reason stands until the next move of any kind: a person who moved on
    // (re-qualified, reopened, advanced) no longer carries a recycle or disqualify reason.
    state.reason = t.reason.as_ref().map(|r| r.as_str().to_string());
    let status = match t.to {
        LifecycleStage::Recycled => contract.mapping.recycled_status.as_ref(),
        LifecycleStage::Disqualified => contract.mapping.disqualified_status.as_ref(),
        _ => None,
    };
    if let Some(status) = status
        && fields.get(&Field::LeadStatus) != Some(status)
    {
        fields.insert(Field::LeadStatus, status.clone());
        provenance.insert(
            Field::LeadStatus,
            Provenance {
                system: "leadsync".into(),
                value: Some(status.clone()),
                at,
                rule: format!("lifecycle:{}", t.via),
            },
        );
    }
}

/// Write the governed stage's projection into `lifecycle_stage`.
fn project(
    contract: &Contract,
    stage: LifecycleStage,
    fields: &mut Fields,
    provenance: &mut BTreeMap<Field, Provenance>,
    now: DateTime<Utc>,
) {
    let want = projected_stage(contract, stage).map(|s| s.as_str().to_string());
    if fields.get(&Field::LifecycleStage) == want.as_ref() {
        return;
    }
    match want {
        Some(v) => {
            fields.insert(Field::LifecycleStage, v.clone());
            provenance.insert(
                Field::LifecycleStage,
                Provenance {
                    system: "leadsync".into(),
                    value: Some(v),
                    at: now,
                    rule: format!("lifecycle:{stage}"),
                },
            );
        }
        None => {
            fields.remove(&Field::LifecycleStage);
            provenance.remove(&Field::LifecycleStage);
        }
    }
}

/// What the reconciler hands over for one change of a person.
pub(super) struct Input<'a> {
    pub contract: &'a Contract,
    pub status_implies: &'a BTreeMap<String, Stage>,
    pub prior: Option<&'a PersonLifecycle>,
    pub lead_id: &'a str,
    /// What the system newly says.
    pub incoming: &'a Fields,
    pub system: &'a SystemName,
    /// The vendor's modification time of the change.
    pub changed_at: DateTime<Utc>,
    /// The change's custom field values (declared name -> raw value, `None`: empty).
    pub custom: &'a BTreeMap<String, Option<String>>,
    pub now: DateTime<Utc>,
}

/// Take a change's custom field values: a value read from a state at least as recent as the
/// one the stored value came from replaces it (whichever system it is from), and an empty one
/// clears it. Undeclared names are ignored (a mapping is checked against the declarations,
/// so only a ledger row from an older config can hold one).
pub fn take_custom(
    contract: &Contract,
    state: &mut PersonLifecycle,
    custom: &BTreeMap<String, Option<String>>,
    changed_at: DateTime<Utc>,
) {
    for (name, value) in custom {
        if contract.vocabulary.field(name).is_none() {
            continue;
        }
        if state.custom_at.get(name).is_some_and(|at| *at > changed_at) {
            continue;
        }
        match value.as_deref().map(str::trim).filter(|v| !v.is_empty()) {
            Some(v) => state.custom.insert(name.clone(), v.to_string()),
            None => state.custom.remove(name),
        };
        state.custom_at.insert(name.clone(), changed_at);
    }
}

/// Govern one person's stage during the reconciliation of one change: events, placement,
/// reports, rules, and the projection onto `fields`. Stage entries in `changed_detail` (the
/// lattice's view of `lifecycle_stage`) are dropped: the `stage` audit lines say it instead.
pub(super) fn govern(
    input: &Input<'_>,
    fields: &mut Fields,
    provenance: &mut BTreeMap<Field, Provenance>,
    changed_detail: &mut Vec<serde_json::Value>,
    audit: &mut Vec<AuditEntry>,
) -> Governed {
    let Input {
        contract,
        status_implies,
        prior,
        lead_id,
        incoming,
        system,
        changed_at,
        custom,
        now,
    } = *input;
    let reported_at = changed_at.min(now);
    let mut state = prior.cloned().unwrap_or_default();
    take_custom(contract, &mut state, custom, changed_at);
    let status = incoming.get(&Field::LeadStatus);
    if let Some(event) = status.and_then(|s| contract.mapping.status_events.get(s)) {
        let at = state.events.entry(event.clone()).or_insert(reported_at);
        *at = (*at).max(reported_at);
        audit.push(AuditEntry {
            kind: "event",
            detail: serde_json::json!({ "event": event, "system": system.as_str() }),
        });
    }
    match state.stage {
        None => {
            let stage = placement(contract, status_implies, fields);
            state.stage = Some(stage);
            state.dates.enter(stage, reported_at);
            audit.push(AuditEntry {
                kind: "stage",
                detail: serde_json::json!({
                    "from": serde_json::Value::Null, "to": stage.as_str(), "via": "placed",
                    "reason": serde_json::Value::Null, "system": system.as_str(),
                }),
            });
        }
        Some(_) => {
            // A status is a floor: only a status ahead of the person says anything.
            let from_status = status.and_then(|s| status_stage(contract, status_implies, s));
            let from_stage = incoming
                .get(&Field::LifecycleStage)
                .and_then(|s| Stage::parse(s))
                .map(LifecycleStage::from);
            for (reported, is_floor) in [(from_status, true), (from_stage, false)] {
                let (Some(to), Some(from)) = (reported, state.stage) else { continue };
                if is_floor && !LifecycleStage::is_forward_move(from, to) {
                    continue;
                }
                match contract.table.check(from, to, How::Reported) {
                    Ok(t) => {
                        apply(contract, &mut state, fields, provenance, &t, reported_at);
                        audit.push(stage_event(&t, Some(system)));
                    }
                    Err(Refusal::SameStage { .. }) => {}
                    Err(r) => audit.push(refusal_event(from, to, "reported", &r, Some(system))),
                }
            }
        }
    }
    run_rules(contract, &mut state, fields, provenance, audit, now);
    changed_detail.retain(|c| c["field"] != Field::LifecycleStage.as_str());
    Governed { lead_id: lead_id.to_string(), state }
}

/// Evaluate the rules for a placed person, apply every allowed move (stamped `now`), audit
/// each move and refusal, remember which rules held, and project the stage onto `fields`.
fn run_rules(
    contract: &Contract,
    state: &mut PersonLifecycle,
    fields: &mut Fields,
    provenance: &mut BTreeMap<Field, Provenance>,
    audit: &mut Vec<AuditEntry>,
    now: DateTime<Utc>,
) {
    let stage = state.stage.unwrap_or(LifecycleStage::Lead);
    let mut facts = Facts::new(&contract.vocabulary, stage);
    fill_facts(contract, &mut facts, stage, fields.clone(), state);
    let (moves, held) = evaluate_rules(contract, &mut facts, &state.held, now);
    for m in moves {
        match m {
            Ok(t) => {
                apply(contract, state, fields, provenance, &t, now);
                audit.push(stage_event(&t, None));
            }
            Err(RuleRefusal { from, to, refusal }) => {
                audit.push(refusal_event(from, to, "rule", &refusal, None));
            }
        }
    }
    state.held = held;
    if let Some(stage) = state.stage {
        project(contract, stage, fields, provenance, now);
    }
}

/// Re-evaluate one person without a change from any system: after the rules changed, or
/// when time alone may have changed what holds (a `within N days` window that closed). The
/// same steps as on a change, minus the news: a person not placed yet is placed at the stage
/// their fields say (dated `now`), then the rules run (edge triggered as always, so a rule
/// that already held at the previous evaluation moves nobody) and the stage is projected.
/// Returns the audit lines; `state`, `fields` and `provenance` are updated in place.
pub fn reevaluate(
    contract: &Contract,
    status_implies: &BTreeMap<String, Stage>,
    state: &mut PersonLifecycle,
    fields: &mut Fields,
    provenance: &mut BTreeMap<Field, Provenance>,
    now: DateTime<Utc>,
) -> Vec<AuditEntry> {
    let mut audit = Vec::new();
    if state.stage.is_none() {
        let stage = placement(contract, status_implies, fields);
        state.stage = Some(stage);
        state.dates.enter(stage, now);
        audit.push(AuditEntry {
            kind: "stage",
            detail: serde_json::json!({
                "from": serde_json::Value::Null, "to": stage.as_str(), "via": "placed",
                "reason": serde_json::Value::Null, "system": serde_json::Value::Null,
            }),
        });
    }
    run_rules(contract, state, fields, provenance, &mut audit, now);
    audit
}

/// A named move asked for by an operator, applied to a person's fields and lifecycle. `to`
/// picks the target when the transition allows several from the person's stage (reopen);
/// otherwise the transition's own target is used.
///
/// # Errors
/// The table's [`Refusal`]; nothing is changed then.
#[allow(clippy::too_many_arguments, reason = "the person's parts and the operator's ask")]
pub fn named_move(
    contract: &Contract,
    status_implies: &BTreeMap<String, Stage>,
    state: &mut PersonLifecycle,
    fields: &mut Fields,
    provenance: &mut BTreeMap<Field, Provenance>,
    name: NamedMove,
    reason: &str,
    to: Option<LifecycleStage>,
    now: DateTime<Utc>,
) -> Result<(Transition, Vec<AuditEntry>), (LifecycleStage, LifecycleStage, Refusal)> {
    let mut audit = Vec::new();
    let from = match state.stage {
        Some(s) => s,
        None => placement(contract, status_implies, fields),
    };
    let to = to.unwrap_or_else(|| named_target(&contract.table, name, from));
    let t =
        contract.table.check(from, to, How::Named { name, reason }).map_err(|r| (from, to, r))?;
    if state.stage.is_none() {
        state.stage = Some(from);
        state.dates.enter(from, now);
    }
    apply(contract, state, fields, provenance, &t, now);
    project(contract, t.to, fields, provenance, now);
    audit.push(stage_event(&t, None));
    Ok((t, audit))
}

/// Where a named transition takes a person at `from`: the first target the table allows
/// from there, else the transition's natural target (so the refusal names a real move).
fn named_target(table: &TransitionTable, name: NamedMove, from: LifecycleStage) -> LifecycleStage {
    if let Some((_, to)) = table.named(name).moves.iter().find(|(f, _)| *f == from) {
        return *to;
    }
    match name {
        NamedMove::Recycle => LifecycleStage::Recycled,
        NamedMove::Disqualify => LifecycleStage::Disqualified,
        NamedMove::Reopen => LifecycleStage::Lead,
    }
}

/// The audit line of a refused named move.
pub fn named_refusal(
    name: NamedMove,
    from: LifecycleStage,
    to: LifecycleStage,
    reason: &str,
    refusal: &Refusal,
) -> AuditEntry {
    let mut e = refusal_event(from, to, name.as_str(), refusal, None);
    e.detail["reason"] = serde_json::json!(reason);
    e
}

/// With a contract: clear the stage first at every system whose primary record holds a
/// stage further down the funnel than the person's (or any, when the person has none),
/// because a forward-only stage (HubSpot `lifecyclestage`) ignores a backward write. The
/// clearing write is `lifecycle_stage = ""`; once it is accepted, the next plan writes the
/// person's stage as a forward move from nothing. Without a contract this does nothing.
pub(super) fn add_clears(lead: &LeadState, rules: &Rules, out: &mut Vec<PushIntent>) {
    if rules.contract.is_none()
        || lead.held.contains(&Field::LifecycleStage)
        || rules.rule(Field::LifecycleStage) == super::FieldRule::DontSync
    {
        return;
    }
    let desired = lead.fields.get(&Field::LifecycleStage).and_then(|s| Stage::parse(s));
    for sys in &rules.systems {
        let Some(link) = lead.links.iter().find(|k| k.system == sys.name) else { continue };
        if !sys.map_for(&link.remote.object_type).maps(Field::LifecycleStage) {
            continue;
        }
        let known = link.known.get(&Field::LifecycleStage).and_then(|s| Stage::parse(s));
        let Some(known) = known else { continue };
        if desired.is_some_and(|d| d >= known) {
            continue;
        }
        match out
            .iter_mut()
            .find(|i| i.system == sys.name && i.remote.as_ref() == Some(&link.remote))
        {
            Some(intent) => {
                intent.fields.insert(Field::LifecycleStage, String::new());
            }
            None => out.push(PushIntent {
                system: sys.name.clone(),
                remote: Some(link.remote.clone()),
                object_type: link.remote.object_type.clone(),
                fields: [(Field::LifecycleStage, String::new())].into(),
            }),
        }
    }
}

#[cfg(test)]
mod tests;
