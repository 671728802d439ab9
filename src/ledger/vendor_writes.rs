//! Contract writes that ride on outbox rows besides the canonical fields (column
//! `outbox.vendor_writes`, migration 13), the way stage-entry dates do (`outbox.stage_dates`):
//!
//! - **The reason code** of the person's latest named transition (recycle, disqualify,
//!   reopen), for the property `[contract.mapping.stage_reason]` names per system. Queued only
//!   when it changes ([`unsent_reason`]); `""` once the person moved on, so a vendor never
//!   shows a stale reason. Never read back.
//! - **The owner** an SLA escalation reassigns the person's CRM record(s) to
//!   (`[contract.sla] reassign_to`), queued once per escalation by [`Ledger::sla_reassign`]
//!   and audited as `owner_reassigned`. The owner is not a canonical field, so nothing
//!   plans it again: a later human reassignment stands. A vendor that refuses a row holding
//!   only the owner dead-letters it with its message, like any rejected write; a refused row
//!   where the owner rode along with fields or other writes goes again without the owner
//!   (audited `owner_dropped`), so a wrong owner id never takes a person's fields with it.
//!
//! A row that carries writes stays when its fields are no longer needed (only its fields
//! go), and writes queued onto a pending create move to the record once it exists. A pending
//! row dropped because its record was closed (deleted or merged away at the vendor), and a
//! pending create the plan no longer wants (`write_plan`: a duplicate review holds it, a
//! record came with a person folded into this one), hand their writes on ([`carried`], then
//! [`rehome`]): to the
//! person's primary record at that system or their pending create there, so they ride on the
//! next row pushed. With neither, the reason is marked unsent again, so it is queued onto the
//! next record the person gets there; an owner with no CRM record left is dropped (audited
//! `owner_dropped`, nothing to reassign). (The `write_plan` hand-on was once dropped because
//! it coincided with default-ops convergence failures; that test runs without a contract,
//! where no row carries writes and the hook reads nothing, so it was not their cause.)
//! The stage-entry dates such a row carries (`outbox.stage_dates`) go the same way: onto the
//! primary record or pending create, or, with neither, they are marked unsent again in the
//! person's lifecycle (audited `stage_dates_requeued`), so `queue_dates` queues them onto the
//! next record the person gets there.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use serde::{Deserialize, Serialize};

use super::identity::load_lead;
use super::{Ledger, Result, audit, from_json, to_json, ts};
use crate::contract::config::Contract;
use crate::contract::lifecycle::LifecycleStage;
use crate::domain::{PushRecord, Role, SystemName};
use crate::reconcile::Rules;
use crate::reconcile::lifecycle::{PersonLifecycle, unsent_reason};

/// What one outbox row writes besides its fields (JSON in `outbox.vendor_writes`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct VendorWrites {
    /// The reason code to write (`""`: clear the property).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stage_reason: Option<String>,
    /// The owner to reassign the record to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
}

impl VendorWrites {
    pub(super) fn is_empty(&self) -> bool {
        self.stage_reason.is_none() && self.owner.is_none()
    }

    /// Decode the column (`NULL`: nothing).
    pub(super) fn from_column(raw: Option<&str>) -> Result<VendorWrites> {
        Ok(raw.map(from_json).transpose()?.unwrap_or_default())
    }

    /// Newer writes win over older ones of the same kind.
    fn merge(&mut self, newer: &VendorWrites) {
        if newer.stage_reason.is_some() {
            self.stage_reason.clone_from(&newer.stage_reason);
        }
        if newer.owner.is_some() {
            self.owner.clone_from(&newer.owner);
        }
    }

    /// What is left to write after `sent` went out: the writes it did not carry as they are.
    fn after_sent(mut self, sent: &PushRecord) -> VendorWrites {
        if self.stage_reason == sent.stage_reason {
            self.stage_reason = None;
        }
        if self.owner == sent.owner {
            self.owner = None;
        }
        self
    }
}

/// Put writes on the pending outbox row of (person, system, record), merged into the ones it
/// carries already, or on a new row with no fields (`remote_id` `""`: a create, which always
/// has a row when this is called for one). Nothing happens for empty writes.
///
/// # Errors
/// SQLite failures or a corrupt row.
pub(super) fn add_writes(
    tx: &Transaction<'_>,
    lead_id: &str,
    system: &str,
    object_type: &str,
    remote_id: &str,
    writes: &VendorWrites,
    now: DateTime<Utc>,
) -> Result<()> {
    if writes.is_empty() {
        return Ok(());
    }
    super::ride_along(
        tx,
        super::RideAlong::VendorWrites,
        lead_id,
        system,
        object_type,
        remote_id,
        now,
        |existing| {
            let mut all = VendorWrites::from_column(existing)?;
            all.merge(writes);
            to_json(&all)
        },
    )
}

/// The writes the person's pending create at `system` carries (read before the create row
/// is dropped because a record exists now; the caller moves them to that record).
///
/// # Errors
/// SQLite failures or a corrupt row.
/// Whether a sent row carried an owner reassignment besides other writes.
pub(super) fn owner_rode_along(sent: &PushRecord) -> bool {
    sent.owner.is_some()
        && (!sent.fields.is_empty() || sent.stage_reason.is_some() || !sent.stage_dates.is_empty())
}

/// A refused row that carried an owner besides other writes: keep it pending without the
/// owner it carried (a newer owner queued meanwhile stays), due again now, with the refusal
/// noted on the row.
pub(super) fn drop_owner(
    tx: &Transaction<'_>,
    sent: &PushRecord,
    code: &str,
    message: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    let raw: Option<String> = tx
        .prepare_cached("SELECT vendor_writes FROM outbox WHERE id = ?1 AND state = 'pending'")?
        .query_row([sent.outbox_id], |r| r.get(0))
        .optional()?
        .flatten();
    let mut writes = VendorWrites::from_column(raw.as_deref())?;
    if writes.owner == sent.owner {
        writes.owner = None;
    }
    let column = if writes.is_empty() { None } else { Some(to_json(&writes)?) };
    tx.prepare_cached(
        "UPDATE outbox SET vendor_writes = ?2, attempts = attempts + 1, next_attempt_at = ?3,
                error_code = ?4, last_error = ?5, updated_at = ?3
         WHERE id = ?1 AND state = 'pending'",
    )?
    .execute(params![sent.outbox_id, column, ts(now), code, message])?;
    Ok(())
}

pub(super) fn pending_create(
    tx: &Transaction<'_>,
    lead_id: &str,
    system: &str,
) -> Result<VendorWrites> {
    let raw: Option<String> = tx
        .prepare_cached(
            "SELECT vendor_writes FROM outbox WHERE lead_id = ?1 AND system = ?2
             AND remote_id = '' AND state = 'pending'",
        )?
        .query_row(params![lead_id, system], |r| r.get(0))
        .optional()?
        .flatten();
    VendorWrites::from_column(raw.as_deref())
}

/// A create was accepted: the writes queued onto its row while it was in flight did not go
/// out with it. Returns them (for the new record) and empties the row's, so linking the
/// record does not move them a second time.
///
/// # Errors
/// SQLite failures or a corrupt row.
pub(super) fn take_late(tx: &Transaction<'_>, sent: &PushRecord) -> Result<VendorWrites> {
    let raw: Option<String> = tx
        .prepare_cached("SELECT vendor_writes FROM outbox WHERE id = ?1")?
        .query_row([sent.outbox_id], |r| r.get(0))
        .optional()?
        .flatten();
    let late = VendorWrites::from_column(raw.as_deref())?.after_sent(sent);
    if raw.is_some() {
        tx.prepare_cached("UPDATE outbox SET vendor_writes = NULL WHERE id = ?1")?
            .execute([sent.outbox_id])?;
    }
    Ok(late)
}

/// Where a write for the person at `system` goes: the person's primary record there, else
/// their pending create; `None`: neither (the write waits for the person's next change).
fn target(
    tx: &Transaction<'_>,
    links: &[(String, String, String)],
    lead_id: &str,
    system: &str,
) -> Result<Option<(String, String)>> {
    if let Some((_, object_type, remote_id)) = links.iter().find(|(s, _, _)| s == system) {
        return Ok(Some((object_type.clone(), remote_id.clone())));
    }
    let create: Option<String> = tx
        .prepare_cached(
            "SELECT object_type FROM outbox WHERE lead_id = ?1 AND system = ?2
             AND remote_id = '' AND state = 'pending'",
        )?
        .query_row(params![lead_id, system], |r| r.get(0))
        .optional()?;
    Ok(create.map(|object_type| (object_type, String::new())))
}

/// What a pending row carried when it was dropped, until [`rehome`] gives it a new row.
#[derive(Debug)]
pub(super) struct Carried {
    lead_id: String,
    system: String,
    /// The dropped row's record (`object_type/remote_id`, `remote_id` `""` for a create).
    from: String,
    writes: VendorWrites,
    /// The stage-entry dates it carried (`outbox.stage_dates`: stage name -> date).
    dates: BTreeMap<String, DateTime<Utc>>,
}

/// The writes and stage-entry dates the pending row of (person, system, record) carries,
/// read before the caller deletes the row (`remote_id` `""`: the pending create). `None`: no
/// such row, or it carries neither.
///
/// # Errors
/// SQLite failures or a corrupt row.
pub(super) fn carried(
    tx: &Transaction<'_>,
    lead_id: &str,
    system: &str,
    remote_id: &str,
) -> Result<Option<Carried>> {
    let row: Option<(String, Option<String>, Option<String>)> = tx
        .prepare_cached(
            "SELECT object_type, vendor_writes, stage_dates FROM outbox WHERE lead_id = ?1
             AND system = ?2 AND remote_id = ?3 AND state = 'pending'",
        )?
        .query_row(params![lead_id, system, remote_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
        .optional()?;
    let Some((object_type, writes, dates)) = row else { return Ok(None) };
    let writes = VendorWrites::from_column(writes.as_deref())?;
    let dates: BTreeMap<String, DateTime<Utc>> =
        dates.as_deref().map(from_json).transpose()?.unwrap_or_default();
    Ok((!writes.is_empty() || !dates.is_empty()).then(|| Carried {
        lead_id: lead_id.to_string(),
        system: system.to_string(),
        from: format!("{object_type}/{remote_id}"),
        writes,
        dates,
    }))
}

/// Stage-entry dates [`rehome`] marked unsent in a person's stored lifecycle (their row was
/// dropped with nowhere to move them): system -> stage -> the date no longer counted as
/// queued. A caller holding the lifecycle as read before takes them out of its copy too
/// ([`forget_requeued`]), so writing it back does not mark them queued again.
pub(super) type Requeued = BTreeMap<String, BTreeMap<LifecycleStage, DateTime<Utc>>>;

/// Take the dates [`rehome`] marked unsent out of `state`'s `dates_sent` as well (only
/// where `state` still holds the same date).
pub(super) fn forget_requeued(state: &mut PersonLifecycle, requeued: &Requeued) {
    for (system, dates) in requeued {
        let Some(sent) = state.dates_sent.get_mut(system) else { continue };
        for (stage, at) in dates {
            if sent.get(stage) == Some(at) {
                sent.remove(stage);
            }
        }
        if sent.is_empty() {
            state.dates_sent.remove(system);
        }
    }
}

/// Give the writes of a dropped row (see [`carried`]; call after the row is gone) to the
/// person's primary record at that system or their pending create there (audited
/// `vendor_writes_moved`). With neither: the reason is marked unsent in the person's
/// lifecycle, so [`queue_stage_reason`] queues it onto their next record there (audited
/// `stage_reason_requeued`), and an owner is dropped (`owner_dropped`: no CRM record left to
/// reassign).
///
/// # Errors
/// SQLite failures or a corrupt row.
pub(super) fn rehome(
    tx: &Transaction<'_>,
    carried: Option<Carried>,
    now: DateTime<Utc>,
) -> Result<Requeued> {
    let mut requeued = Requeued::new();
    let Some(Carried { lead_id, system, from, writes, dates }) = carried else {
        return Ok(requeued);
    };
    let links: Vec<(String, String, String)> = match load_lead(tx, &lead_id)? {
        Some(lead) => lead
            .links
            .iter()
            .map(|k| {
                (k.system.as_str().to_string(), k.remote.object_type.clone(), k.remote.id.clone())
            })
            .collect(),
        // Merged into another person or erased: nobody to write for.
        None => return Ok(requeued),
    };
    let lead = Some(lead_id.as_str());
    if let Some((object_type, remote_id)) = target(tx, &links, &lead_id, &system)? {
        add_writes(tx, &lead_id, &system, &object_type, &remote_id, &writes, now)?;
        if !dates.is_empty() {
            super::lifecycle::add_dates(
                tx,
                &lead_id,
                &system,
                &object_type,
                &remote_id,
                &dates,
                now,
            )?;
        }
        let mut detail = serde_json::json!({
            "from": from, "to": format!("{object_type}/{remote_id}"),
            "stage_reason": writes.stage_reason, "owner": writes.owner,
        });
        if !dates.is_empty() {
            detail["stage_dates"] = serde_json::json!(dates);
        }
        audit(tx, now, lead, Some(&system), "vendor_writes_moved", &detail)?;
        return Ok(requeued);
    }
    // Nowhere to go: what the person's lifecycle records as queued to this system is queued
    // again onto their next record or create there (`queue_stage_reason`, `queue_dates`).
    let mut state = super::lifecycle::load(tx, &lead_id)?;
    let mut changed = false;
    if let Some(reason) = &writes.stage_reason
        && let Some(state) = state.as_mut()
        && state.reason_sent.get(&system) == Some(reason)
    {
        state.reason_sent.remove(&system);
        changed = true;
        let detail = serde_json::json!({ "from": from, "stage_reason": reason });
        audit(tx, now, lead, Some(&system), "stage_reason_requeued", &detail)?;
    }
    if let Some(state) = state.as_mut()
        && let Some(sent) = state.dates_sent.get_mut(&system)
    {
        let mut unsent = BTreeMap::new();
        for (stage, at) in &dates {
            if let Some(stage) = LifecycleStage::parse(stage)
                && sent.get(&stage) == Some(at)
            {
                sent.remove(&stage);
                unsent.insert(stage, *at);
            }
        }
        if sent.is_empty() {
            state.dates_sent.remove(&system);
        }
        if !unsent.is_empty() {
            changed = true;
            let detail = serde_json::json!({ "from": from, "stage_dates": unsent });
            audit(tx, now, lead, Some(&system), "stage_dates_requeued", &detail)?;
            requeued.insert(system.clone(), unsent);
        }
    }
    if changed && let Some(state) = &state {
        tx.prepare_cached("UPDATE lifecycle SET state = ?2, updated_at = ?3 WHERE lead_id = ?1")?
            .execute(params![lead_id, to_json(state)?, ts(now)])?;
    }
    if let Some(owner) = &writes.owner {
        let detail = serde_json::json!({ "from": from, "owner": owner, "reason": "no_record" });
        audit(tx, now, lead, Some(&system), "owner_dropped", &detail)?;
    }
    Ok(requeued)
}

/// For the re-evaluation sweep after a rule change (a `[contract.mapping.stage_reason]` added
/// or changed is one: it is in [`Contract::rules_hash`]): a person recycled or disqualified
/// before their lifecycle kept the standing reason (`reason` is empty, nothing was ever
/// queued) gets it from the audit trail, so the sweep writes it once. Only when the person's
/// latest `stage` audit line is the named move into the stage they are still in; otherwise
/// no reason stands. Bounded: one indexed read, only for such persons, only in the sweep.
/// A reopen's reason is not recovered (a reopened person is at an ordinary stage, and looking
/// up everyone there would make the sweep read the audit for nearly every person).
///
/// Owners are not backfilled: a reassignment is a one-time act of an escalation, and writing
/// it again later would undo a person's reassignment since.
///
/// # Errors
/// SQLite failures or a corrupt row.
pub(super) fn backfill_reason(
    tx: &Connection,
    contract: &Contract,
    lead_id: &str,
    state: &mut PersonLifecycle,
) -> Result<()> {
    let Some(stage) = state.stage else { return Ok(()) };
    if contract.mapping.stage_reason.is_empty()
        || state.reason.is_some()
        || !state.reason_sent.is_empty()
        || !matches!(stage, LifecycleStage::Recycled | LifecycleStage::Disqualified)
    {
        return Ok(());
    }
    let latest: Option<String> = tx
        .prepare_cached(
            "SELECT detail FROM audit WHERE lead_id = ?1 AND kind = 'stage'
             ORDER BY id DESC LIMIT 1",
        )?
        .query_row([lead_id], |r| r.get(0))
        .optional()?;
    let Some(latest) = latest else { return Ok(()) };
    let detail: serde_json::Value = from_json(&latest)?;
    let named = matches!(detail["via"].as_str(), Some("recycle" | "disqualify"));
    if named
        && detail["to"].as_str() == Some(stage.as_str())
        && let Some(reason) = detail["reason"].as_str().filter(|r| !r.is_empty())
    {
        state.reason = Some(reason.to_string());
    }
    Ok(())
}

/// Queue the reason code each system's `[contract.mapping.stage_reason]` property should get
/// and has not had ([`unsent_reason`]) onto the person's primary record there (or pending
/// create), and record it in `state` (the caller writes it) so it goes out once.
///
/// # Errors
/// SQLite failures or a corrupt row.
pub(super) fn queue_stage_reason(
    tx: &Transaction<'_>,
    contract: &Contract,
    lead_id: &str,
    state: &mut PersonLifecycle,
    now: DateTime<Utc>,
) -> Result<()> {
    // A reason [`rehome`] marked unsent during this transaction (its row was dropped) is
    // unsent here too: `state` was read before that, and is what the caller writes back.
    // Only a person who has been sent a reason can have one marked unsent.
    if !state.reason_sent.is_empty()
        && let Some(stored) = super::lifecycle::load(tx, lead_id)?
    {
        state.reason_sent.retain(|system, _| stored.reason_sent.contains_key(system));
    }
    let mut links = None;
    for system in contract.mapping.stage_reason.keys() {
        let Some(reason) = unsent_reason(contract, state, system) else { continue };
        if links.is_none() {
            let Some(lead) = load_lead(tx, lead_id)? else { return Ok(()) };
            links = Some(
                lead.links
                    .iter()
                    .map(|k| {
                        let r = &k.remote;
                        (k.system.as_str().to_string(), r.object_type.clone(), r.id.clone())
                    })
                    .collect::<Vec<_>>(),
            );
        }
        let Some((object_type, remote_id)) =
            target(tx, links.as_deref().unwrap_or_default(), lead_id, system)?
        else {
            continue;
        };
        let writes = VendorWrites { stage_reason: Some(reason.clone()), owner: None };
        add_writes(tx, lead_id, system, &object_type, &remote_id, &writes, now)?;
        state.reason_sent.insert(system.clone(), reason);
    }
    Ok(())
}

impl Ledger {
    /// Reassign the person's open CRM-role records to `owner` (an SLA escalation with
    /// `[contract.sla] reassign_to`): the owner is queued onto each record's outbox row and
    /// each reassignment audited as `owner_reassigned` (`owner_reassign_skipped` when the
    /// person has no CRM record). Returns the records as `system:object_type/remote_id`.
    ///
    /// # Errors
    /// SQLite failures or a corrupt row; nothing is committed then.
    pub fn sla_reassign(
        &self,
        lead_id: &str,
        owner: &str,
        rules: &Rules,
        now: DateTime<Utc>,
    ) -> Result<Vec<String>> {
        self.with_tx(|tx| {
            let records: Vec<(String, String, String)> = tx
                .prepare_cached(
                    "SELECT system, object_type, remote_id FROM links
                     WHERE lead_id = ?1 AND closed_at IS NULL ORDER BY id",
                )?
                .query_map([lead_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect::<std::result::Result<_, _>>()?;
            let writes = VendorWrites { stage_reason: None, owner: Some(owner.to_string()) };
            let mut out = Vec::new();
            for (system, object_type, remote_id) in records {
                let crm =
                    rules.system(&SystemName(system.clone())).is_some_and(|s| s.role == Role::Crm);
                if !crm {
                    continue;
                }
                add_writes(tx, lead_id, &system, &object_type, &remote_id, &writes, now)?;
                let remote = format!("{object_type}/{remote_id}");
                let detail = serde_json::json!({ "owner": owner, "remote": remote, "via": "sla" });
                audit(tx, now, Some(lead_id), Some(&system), "owner_reassigned", &detail)?;
                out.push(format!("{system}:{remote}"));
            }
            if out.is_empty() {
                let detail = serde_json::json!({ "owner": owner, "reason": "no_crm_record" });
                audit(tx, now, Some(lead_id), None, "owner_reassign_skipped", &detail)?;
            }
            Ok(out)
        })
    }
}

#[cfg(test)]
mod tests;
