//! The ledger side of identity: loading a person and everything a change may match, and
//! applying the reconciler's decisions about links (open, close, reopen, move), person merges,
//! blocking keys, tombstones and the review queue.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, Transaction, params};

use super::{Result, audit, from_json, parse_ts, to_json, ts, write_plan};
use crate::domain::{Change, Field, Fields, RecordFate, RemoteId, SystemName, normalize_email};
use crate::identity::matcher::{Matcher, PROFILE_FIELDS, Verdict};
use crate::reconcile::{
    self, ClosedLink, Context, Decision, DeletedMatch, DeletedRecord, LeadState, LinkState,
    Provenance, ReviewIntent, Rules,
};

/// At most this many persons are scored against one record; a blocking key shared by more
/// persons than `MAX_BLOCK` says too little to be worth comparing.
const MAX_CANDIDATES: usize = 16;
const MAX_BLOCK: i64 = 64;

/// How much fuzzy candidate search the process has done, for the bench: the work per change
/// grows with the population (blocks fill up), which is what makes a backfill's CPU grow
/// faster than its size. Process-wide counters, relaxed: figures, not logic.
#[derive(Debug, Default, Clone, Copy)]
pub struct CandidateStats {
    /// Changes that looked for fuzzy candidates (no link, ledger id or email matched).
    pub searches: u64,
    /// Blocking keys looked up, and those skipped as shared by more than `MAX_BLOCK` persons.
    pub keys: u64,
    pub keys_too_common: u64,
    /// Persons found through the keys (distinct per search), scored on their fields (at most
    /// `MAX_CANDIDATES` per search), and loaded whole (scored at review or above).
    pub found: u64,
    pub scored: u64,
    pub loaded: u64,
}

mod counters {
    use std::sync::atomic::AtomicU64;
    pub(super) static SEARCHES: AtomicU64 = AtomicU64::new(0);
    pub(super) static KEYS: AtomicU64 = AtomicU64::new(0);
    pub(super) static KEYS_TOO_COMMON: AtomicU64 = AtomicU64::new(0);
    pub(super) static FOUND: AtomicU64 = AtomicU64::new(0);
    pub(super) static SCORED: AtomicU64 = AtomicU64::new(0);
    pub(super) static LOADED: AtomicU64 = AtomicU64::new(0);
}

/// The process's [`CandidateStats`] so far.
pub fn candidate_stats() -> CandidateStats {
    use std::sync::atomic::Ordering::Relaxed;
    CandidateStats {
        searches: counters::SEARCHES.load(Relaxed),
        keys: counters::KEYS.load(Relaxed),
        keys_too_common: counters::KEYS_TOO_COMMON.load(Relaxed),
        found: counters::FOUND.load(Relaxed),
        scored: counters::SCORED.load(Relaxed),
        loaded: counters::LOADED.load(Relaxed),
    }
}

fn bump(counter: &std::sync::atomic::AtomicU64, n: usize) {
    counter.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
}

thread_local! {
    /// Whether `load_lead` reads review holds, for the transaction running on this thread;
    /// set by `Ledger::with_tx` from `Ledger::set_review_holds_creates`. A thread-local and
    /// not a parameter: `load_lead` has callers all over the ledger, and a transaction runs
    /// on one thread. Outside such a scope: read (the behaviour before the setting existed).
    static READ_REVIEW_HOLDS: std::cell::Cell<bool> = const { std::cell::Cell::new(true) };
}

/// Restores the thread's previous [`READ_REVIEW_HOLDS`] when dropped.
pub(super) struct ReviewHoldsScope(bool);

impl Drop for ReviewHoldsScope {
    fn drop(&mut self) {
        READ_REVIEW_HOLDS.with(|c| c.set(self.0));
    }
}

/// Make `load_lead` read review holds (`on`) or leave them empty, until the scope is dropped.
/// Off is only for a ledger whose rules have `review_holds_creates` off: then nothing looks
/// at a loaded person's holds (`reconcile::plan_pushes` checks them only under that setting).
pub(super) fn read_review_holds(on: bool) -> ReviewHoldsScope {
    ReviewHoldsScope(READ_REVIEW_HOLDS.with(|c| c.replace(on)))
}

pub(super) fn load_lead(tx: &Transaction<'_>, id: &str) -> Result<Option<LeadState>> {
    let row: Option<(String, String)> = tx
        .prepare_cached(
            "SELECT fields, provenance FROM leads WHERE id = ?1 AND merged_into IS NULL",
        )?
        .query_row([id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    let Some((fields, provenance)) = row else { return Ok(None) };
    let mut stmt = tx.prepare_cached(
        "SELECT l.system, l.object_type, l.remote_id, r.state, r.pushed, r.pushed_at, r.agreed,
                l.reason LIKE 'matched_rule:%', r.own_email_at
         FROM links l LEFT JOIN remote_records r
           ON r.system = l.system AND r.object_type = l.object_type AND r.remote_id = l.remote_id
         WHERE l.lead_id = ?1 AND l.closed_at IS NULL
         ORDER BY l.reason LIKE 'matched_rule:%', l.id",
    )?;
    let rows = stmt.query_map([id], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, Option<String>>(3)?,
            r.get::<_, Option<String>>(4)?,
            r.get::<_, Option<String>>(5)?,
            r.get::<_, Option<String>>(6)?,
            r.get::<_, bool>(7)?,
            r.get::<_, Option<String>>(8)?,
        ))
    })?;
    let mut links = Vec::new();
    for row in rows {
        let (system, object_type, remote_id, state, pushed, pushed_at, agreed, by_rule, own_email) =
            row?;
        links.push(LinkState {
            system: SystemName(system),
            remote: RemoteId { object_type, id: remote_id },
            known: state.as_deref().map(from_json).transpose()?.unwrap_or_default(),
            agreed: agreed.as_deref().map(from_json).transpose()?.unwrap_or_default(),
            pushed: pushed.as_deref().map(from_json).transpose()?.unwrap_or_default(),
            pushed_at: pushed_at.as_deref().map(parse_ts).transpose()?,
            by_rule,
            own_email_at: own_email.as_deref().map(parse_ts).transpose()?,
        });
    }
    let held: BTreeSet<Field> = tx
        .prepare_cached(
            "SELECT field FROM reviews WHERE lead_id = ?1 AND kind = 'conflict' AND state = 'open'",
        )?
        .query_map([id], |r| r.get::<_, String>(0))?
        .filter_map(|f| f.ok().and_then(|f| Field::parse(&f)))
        .collect();
    let tombstoned: BTreeSet<SystemName> = tx
        .prepare_cached("SELECT DISTINCT system FROM tombstones WHERE lead_id = ?1")?
        .query_map([id], |r| r.get::<_, String>(0))?
        .collect::<std::result::Result<Vec<_>, _>>()?
        .into_iter()
        .map(SystemName)
        .collect();
    let review_holds = if READ_REVIEW_HOLDS.with(std::cell::Cell::get) {
        review_holds(tx, id)?
    } else {
        BTreeSet::new()
    };
    Ok(Some(LeadState {
        id: id.to_string(),
        fields: from_json(&fields)?,
        provenance: from_json::<BTreeMap<Field, Provenance>>(&provenance)?,
        links,
        held,
        tombstoned,
        review_holds,
    }))
}

/// Systems where the other person of an open duplicate review of `id` has a record: `id` is
/// not created there until the review is decided (see `Rules::review_holds_creates`).
pub(super) fn review_holds(conn: &Connection, id: &str) -> Result<BTreeSet<SystemName>> {
    Ok(conn
        .prepare_cached(
            "SELECT l.system FROM reviews r JOIN links l ON l.lead_id = r.other_lead_id
             WHERE r.lead_id = ?1 AND r.kind = 'duplicate' AND r.state = 'open'
               AND l.closed_at IS NULL
             UNION
             SELECT l.system FROM reviews r JOIN links l ON l.lead_id = r.lead_id
             WHERE r.other_lead_id = ?1 AND r.other_lead_id != '' AND r.kind = 'duplicate'
               AND r.state = 'open' AND l.closed_at IS NULL",
        )?
        .query_map([id], |r| r.get::<_, String>(0))?
        .collect::<std::result::Result<Vec<_>, _>>()?
        .into_iter()
        .map(SystemName)
        .collect())
}

/// The person a link points to, open or closed: `(lead_id, closed_reason)`; a closed link has
/// `Some(reason)` (`"closed"` when no reason was recorded).
fn link_of(
    tx: &Transaction<'_>,
    system: &SystemName,
    remote: &RemoteId,
) -> Result<Option<(String, Option<String>)>> {
    Ok(tx
        .prepare_cached(
            "SELECT lead_id, closed_at, closed_reason FROM links
             WHERE system = ?1 AND object_type = ?2 AND remote_id = ?3",
        )?
        .query_row(params![system.as_str(), remote.object_type, remote.id], |r| {
            let closed: Option<String> = r.get(1)?;
            let reason: Option<String> = r.get(2)?;
            Ok((r.get::<_, String>(0)?, closed.map(|_| reason.unwrap_or_else(|| "closed".into()))))
        })
        .optional()?)
}

/// A person id, followed through merges to the person that absorbed it (`None`: unknown id,
/// or a chain longer than any merge history should be).
pub(super) fn surviving_lead(conn: &Connection, id: &str) -> Result<Option<String>> {
    let mut current = id.to_string();
    for _ in 0..32 {
        let next: Option<Option<String>> = conn
            .prepare_cached("SELECT merged_into FROM leads WHERE id = ?1")?
            .query_row([&current], |r| r.get(0))
            .optional()?;
        match next {
            None => return Ok(None),
            Some(None) => return Ok(Some(current)),
            Some(Some(n)) => current = n,
        }
    }
    Ok(None)
}

pub(super) fn load_context(
    tx: &Transaction<'_>,
    system: &SystemName,
    change: &Change,
    rules: &Rules,
) -> Result<Context> {
    let mut ctx = Context::default();
    match link_of(tx, system, &change.remote)? {
        Some((id, None)) => {
            ctx.linked = load_lead(tx, &id)?;
        }
        Some((id, Some(reason))) => {
            let lead_id = surviving_lead(tx, &id)?.unwrap_or(id);
            ctx.closed = Some(ClosedLink { lead_id, reason });
        }
        None => {}
    }
    // The record a fate names: the merge survivor, the converted contact.
    let related = match &change.fate {
        RecordFate::MergedInto { survivor } => {
            Some(RemoteId { object_type: change.remote.object_type.clone(), id: survivor.clone() })
        }
        RecordFate::ConvertedTo { remote } => Some(remote.clone()),
        _ => None,
    };
    if let Some(related) = related
        && let Some((id, closed)) = link_of(tx, system, &related)?
    {
        // A record whose link closed (a merge survivor converted since, read late) is not
        // linked again; its person, followed through merges, still is this human.
        let id = match closed {
            None => id,
            Some(_) => surviving_lead(tx, &id)?.unwrap_or(id),
        };
        ctx.related_linked = true;
        if ctx.linked.as_ref().is_none_or(|l| l.id != id) {
            ctx.related = load_lead(tx, &id)?;
        }
    }
    // A live record may match a person, and so may a lead first read converted (its last
    // state counts) or deleted (its tombstone, by its ledger id, email or a fuzzy rule); a record
    // first read merged away concerns only the survivor's person.
    let merged = matches!(change.fate, RecordFate::MergedInto { .. });
    if ctx.linked.is_some() || ctx.closed.is_some() || merged {
        return Ok(ctx);
    }
    if let Some(key) = &change.ledger_key
        && let Some(id) = surviving_lead(tx, key)?
        && let Some(lead) = load_lead(tx, &id)?
    {
        ctx.by_key = Some(lead);
        return Ok(ctx);
    }
    let email = change.fields.get(&Field::Email).and_then(|e| normalize_email(e));
    if let Some(email) = email {
        let id: Option<String> = tx
            .prepare_cached(
                "SELECT id FROM leads WHERE email_norm = ?1 AND merged_into IS NULL
                 ORDER BY created_at, id LIMIT 1",
            )?
            .query_row([email], |r| r.get(0))
            .optional()?;
        if let Some(id) = id {
            ctx.by_email = load_lead(tx, &id)?;
            return Ok(ctx);
        }
    }
    if let Some(email) = change.fields.get(&Field::Email).and_then(|e| normalize_email(e)) {
        ctx.deleted_by_email = email_tombstones(tx, &email)?;
    }
    // Only a change that may make a person needs the deleted lookalikes.
    if !matches!(change.fate, RecordFate::Deleted) {
        ctx.deleted_lookalikes = deleted_lookalikes(tx, change, rules)?;
    }
    // A deleted record too: one the fuzzy rules link is its person's, tombstone and all.
    ctx.candidates = candidates(tx, change, rules)?;
    Ok(ctx)
}

/// Systems with an email tombstone for this normalised address.
fn email_tombstones(tx: &Transaction<'_>, email: &str) -> Result<BTreeSet<SystemName>> {
    let systems: Vec<String> = tx
        .prepare_cached("SELECT DISTINCT system FROM email_tombstones WHERE email_norm = ?1")?
        .query_map([email], |r| r.get(0))?
        .collect::<std::result::Result<_, _>>()?;
    Ok(systems.into_iter().map(SystemName).collect())
}

/// A deleted record no person was found for (never linked, no ledger id or email any person
/// holds): keep a tombstone by the email it held, for the person later made from that address
/// (`reconcile` tombstones such a new person where the record was deleted). Nothing without
/// an email.
///
/// Whatever its email, its identity (the matcher's profile fields) and blocking keys are kept
/// too, in `deleted_identities`: a person made later under another address that the fuzzy
/// rules tie to it at the auto-link threshold is tombstoned there (see
/// [`deleted_lookalikes`], [`claim_deleted_matches`]). Nothing without a blocking key.
pub(super) fn note_unmatched_delete(
    tx: &Transaction<'_>,
    system: &SystemName,
    ctx: &Context,
    change: &Change,
    rules: &Rules,
    now: DateTime<Utc>,
) -> Result<()> {
    let unmatched = ctx.linked.is_none()
        && ctx.closed.is_none()
        && ctx.by_key.is_none()
        && ctx.by_email.is_none();
    if change.fate != RecordFate::Deleted || !unmatched {
        return Ok(());
    }
    note_deleted_identity(tx, system, change, rules, now)?;
    let Some(email) = change.fields.get(&Field::Email).and_then(|e| normalize_email(e)) else {
        return Ok(());
    };
    tx.prepare_cached(
        "INSERT OR REPLACE INTO email_tombstones(system, object_type, remote_id, email_norm, at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![
        system.as_str(),
        change.remote.object_type,
        change.remote.id,
        email,
        ts(now)
    ])?;
    Ok(())
}

/// Keep an unmatched deleted record's identity and blocking keys (see
/// [`note_unmatched_delete`]).
fn note_deleted_identity(
    tx: &Transaction<'_>,
    system: &SystemName,
    change: &Change,
    rules: &Rules,
    now: DateTime<Utc>,
) -> Result<()> {
    let identity: Fields = PROFILE_FIELDS
        .iter()
        .filter_map(|f| change.fields.get(f).map(|v| (*f, v.clone())))
        .filter(|(_, v)| !v.trim().is_empty())
        .collect();
    let keys = rules.matcher.blocking_keys(&rules.matcher.profile_of(&identity));
    if keys.is_empty() {
        return Ok(());
    }
    let (sys, object_type, id) = (system.as_str(), &change.remote.object_type, &change.remote.id);
    forget_deleted_identity(tx, sys, object_type, id)?;
    let email = identity.get(&Field::Email).and_then(|e| normalize_email(e));
    tx.prepare_cached(
        "INSERT INTO deleted_identities(system, object_type, remote_id, fields, email_norm, at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![sys, object_type, id, to_json(&identity)?, email, ts(now)])?;
    let mut stmt = tx.prepare_cached(
        "INSERT OR IGNORE INTO deleted_identity_keys(key, system, object_type, remote_id)
         VALUES (?1, ?2, ?3, ?4)",
    )?;
    for key in &keys {
        stmt.execute(params![key, sys, object_type, id])?;
    }
    Ok(())
}

/// Drop one record's kept identity and its blocking keys.
pub(super) fn forget_deleted_identity(
    tx: &Transaction<'_>,
    system: &str,
    object_type: &str,
    remote_id: &str,
) -> Result<()> {
    tx.prepare_cached(
        "DELETE FROM deleted_identity_keys
         WHERE system = ?1 AND object_type = ?2 AND remote_id = ?3",
    )?
    .execute(params![system, object_type, remote_id])?;
    tx.prepare_cached(
        "DELETE FROM deleted_identities WHERE system = ?1 AND object_type = ?2 AND remote_id = ?3",
    )?
    .execute(params![system, object_type, remote_id])?;
    Ok(())
}

/// Drop kept identities of deleted records noted before `before` (with the inbox's
/// retention): the order of two reads matters only while both are recent, and an identity
/// no person claimed in that time is not kept for ever.
pub(super) fn prune_deleted_identities(
    tx: &Transaction<'_>,
    before: DateTime<Utc>,
) -> Result<usize> {
    tx.prepare_cached(
        "DELETE FROM deleted_identity_keys WHERE (system, object_type, remote_id) IN
           (SELECT system, object_type, remote_id FROM deleted_identities WHERE at < ?1)",
    )?
    .execute([ts(before)])?;
    Ok(tx.prepare_cached("DELETE FROM deleted_identities WHERE at < ?1")?.execute([ts(before)])?)
}

/// Kept deleted records ([`note_deleted_identity`]) that share a blocking key with the change,
/// at most `MAX_CANDIDATES` (a key shared by more than `MAX_BLOCK` says too little, as for
/// persons). One query when there are none, the usual case. A record linked since (read live
/// again and matched to a person) is not deleted any more and is passed over.
fn deleted_lookalikes(
    tx: &Transaction<'_>,
    change: &Change,
    rules: &Rules,
) -> Result<Vec<DeletedRecord>> {
    let any: bool = tx
        .prepare_cached("SELECT EXISTS(SELECT 1 FROM deleted_identities)")?
        .query_row([], |r| r.get(0))?;
    if !any {
        return Ok(Vec::new());
    }
    let keys = rules.matcher.blocking_keys(&rules.matcher.profile_of(&change.fields));
    let mut found: BTreeMap<(String, String, String), String> = BTreeMap::new();
    let mut stmt = tx.prepare_cached(
        "SELECT d.system, d.object_type, d.remote_id, d.fields
         FROM deleted_identity_keys k JOIN deleted_identities d
           ON d.system = k.system AND d.object_type = k.object_type AND d.remote_id = k.remote_id
         WHERE k.key = ?1
           AND NOT EXISTS (SELECT 1 FROM links l WHERE l.system = d.system
                           AND l.object_type = d.object_type AND l.remote_id = d.remote_id)
         LIMIT ?2",
    )?;
    for key in &keys {
        let rows: Vec<(String, String, String, String)> = stmt
            .query_map(params![key, MAX_BLOCK + 1], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })?
            .collect::<std::result::Result<_, _>>()?;
        if rows.len() as i64 > MAX_BLOCK {
            continue;
        }
        for (system, object_type, id, fields) in rows {
            found.insert((system, object_type, id), fields);
        }
    }
    found
        .into_iter()
        .take(MAX_CANDIDATES)
        .map(|((system, object_type, id), fields)| {
            Ok(DeletedRecord {
                system: SystemName(system),
                remote: RemoteId { object_type, id },
                fields: from_json(&fields)?,
            })
        })
        .collect()
}

/// A new person takes the deleted records the reconciler tied to it
/// ([`reconcile::DeletedMatch`]): each one's link opens (by the rule) and closes at once with
/// a tombstone, as when the delete is read after the person exists, and its kept identity
/// goes. The changed record's own kept identity goes too: it is live again.
fn claim_deleted_matches(
    tx: &Transaction<'_>,
    lead_id: &str,
    system: &SystemName,
    change: &Change,
    matches: &[DeletedMatch],
    now: DateTime<Utc>,
) -> Result<()> {
    if matches!(change.fate, RecordFate::Live) {
        let remote = &change.remote;
        forget_deleted_identity(tx, system.as_str(), &remote.object_type, &remote.id)?;
    }
    for m in matches {
        // Linked meanwhile (another change of this batch): that link stands.
        if link_of(tx, &m.system, &m.remote)?.is_some() {
            continue;
        }
        let reason = reconcile::LinkReason::MatchedRule { rule: m.rule.clone(), score: m.score };
        insert_link(tx, lead_id, &m.system, &m.remote, &reason.as_str(), now)?;
        close_link(tx, lead_id, &m.system, &m.remote, "deleted", true, now)?;
        let (sys, object_type, id) = (m.system.as_str(), &m.remote.object_type, &m.remote.id);
        forget_deleted_identity(tx, sys, object_type, id)?;
        // Its email tombstone, if it held an address, is this tombstone now.
        tx.prepare_cached(
            "DELETE FROM email_tombstones WHERE system = ?1 AND object_type = ?2 AND remote_id = ?3",
        )?
        .execute(params![sys, object_type, id])?;
    }
    Ok(())
}

/// A write of a person's email to one of their records was refused because another record
/// of that system holds the address (HubSpot's 409 `CONFLICT`, emails being unique there): a
/// real conflict a human settles. It becomes an open `conflict` review item on the email
/// (rule `email_taken`) naming the record that holds the address (`held_by`, from the
/// connector's `existing_id=` note) and its person when the ledger links it, so the email is
/// held (written nowhere) until decided and nothing retries in a loop; the push's other
/// fields are planned again. As for any parked conflict, `current` is the person's value (the
/// new email) and `incoming` the competing one (the address the refusing record keeps):
/// accept makes the record's address the person's again; reject keeps the new email, which
/// is then written again (after the operator merged the records or freed the address).
pub(super) fn park_taken_email(
    tx: &Transaction<'_>,
    system: &SystemName,
    remote: &RemoteId,
    rec: &crate::domain::PushRecord,
    message: &str,
    rules: &Rules,
    now: DateTime<Utc>,
) -> Result<()> {
    let lead_id = rec.ledger_key.as_str();
    let Some(lead) = load_lead(tx, lead_id)? else { return Ok(()) };
    let current = rec.fields.get(&Field::Email).cloned();
    // The record's own address as leadsync last knew it (what an accept takes).
    let incoming = lead
        .links
        .iter()
        .find(|k| &k.system == system && &k.remote == remote)
        .and_then(|k| k.known.get(&Field::Email).cloned())
        .or_else(|| rec.person.get(&Field::Email).cloned())
        .unwrap_or_default();
    let held_by = message
        .split("existing_id=")
        .nth(1)
        .map(|rest| rest.chars().take_while(char::is_ascii_digit).collect::<String>())
        .filter(|id| !id.is_empty())
        .map(|id| RemoteId { object_type: remote.object_type.clone(), id });
    let holder = match &held_by {
        Some(r) => match link_of(tx, system, r)? {
            Some((id, _)) => Some(surviving_lead(tx, &id)?.unwrap_or(id)),
            None => None,
        },
        None => None,
    };
    let detail = serde_json::json!({
        "current": current, "incoming": incoming, "system": system.as_str(),
        "remote": remote.to_string(),
        "held_by": held_by.as_ref().map(ToString::to_string),
        "held_by_person": holder,
    });
    tx.prepare_cached(
        "INSERT INTO reviews(kind, lead_id, other_lead_id, field, score, rule, detail, state, created_at)
         VALUES ('conflict', ?1, ?2, 'email', NULL, 'email_taken', ?3, 'open', ?4)
         ON CONFLICT(kind, lead_id, other_lead_id, field) WHERE state = 'open'
         DO UPDATE SET detail = excluded.detail, rule = excluded.rule",
    )?
    .execute(params![
        lead_id,
        holder.as_deref().filter(|h| *h != lead_id).unwrap_or(""),
        detail.to_string(),
        ts(now)
    ])?;
    audit(
        tx,
        now,
        Some(lead_id),
        Some(system.as_str()),
        "email_taken",
        &serde_json::json!({
            "remote": remote.to_string(),
            "held_by": held_by.as_ref().map(ToString::to_string),
            "held_by_person": holder,
        }),
    )?;
    replan(tx, lead_id, rules, now)
}

/// A record merged away or converted that concerns nobody (never linked) is still gone for
/// good: its state is noted (no fields, the time of its fate) so that a live snapshot of it
/// read earlier and delivered later (a webhook fetch racing the poll) is skipped as older
/// than what is known, instead of linking the dead record by its email.
pub(super) fn note_gone_unlinked(
    tx: &Transaction<'_>,
    system: &SystemName,
    change: &Change,
) -> Result<()> {
    if !matches!(change.fate, RecordFate::MergedInto { .. } | RecordFate::ConvertedTo { .. }) {
        return Ok(());
    }
    tx.prepare_cached(
        "INSERT INTO remote_records(system, object_type, remote_id, state, modified_at, seen_at)
         VALUES (?1, ?2, ?3, '{}', ?4, ?5)
         ON CONFLICT(system, object_type, remote_id) DO UPDATE SET
            modified_at = CASE WHEN modified_at IS NULL OR modified_at < excluded.modified_at
                               THEN excluded.modified_at ELSE modified_at END,
            seen_at = excluded.seen_at",
    )?
    .execute(params![
        system.as_str(),
        change.remote.object_type,
        change.remote.id,
        ts(change.modified_at),
        ts(change.fetched_at)
    ])?;
    Ok(())
}

/// A new person made from this change takes the email tombstones of its address (see
/// [`note_unmatched_delete`]) as its own.
fn claim_email_tombstones(
    tx: &Transaction<'_>,
    lead_id: &str,
    change: &Change,
    now: DateTime<Utc>,
) -> Result<()> {
    let Some(email) = change.fields.get(&Field::Email).and_then(|e| normalize_email(e)) else {
        return Ok(());
    };
    tx.prepare_cached(
        "INSERT OR REPLACE INTO tombstones(system, object_type, remote_id, lead_id, reason, at)
         SELECT system, object_type, remote_id, ?2, 'deleted', ?3
         FROM email_tombstones WHERE email_norm = ?1",
    )?
    .execute(params![email, lead_id, ts(now)])?;
    tx.prepare_cached("DELETE FROM email_tombstones WHERE email_norm = ?1")?.execute([email])?;
    Ok(())
}

/// Persons that share a blocking key with the record, most shared keys first, less those the
/// reconciler would pass over (no rule scores them at the review threshold or above).
fn candidates(tx: &Transaction<'_>, change: &Change, rules: &Rules) -> Result<Vec<LeadState>> {
    let profile = rules.matcher.profile_of(&change.fields);
    let keys = rules.matcher.blocking_keys(&profile);
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    bump(&counters::SEARCHES, 1);
    bump(&counters::KEYS, keys.len());
    let mut hits: BTreeMap<String, usize> = BTreeMap::new();
    let mut stmt = tx.prepare_cached("SELECT lead_id FROM match_keys WHERE key = ?1 LIMIT ?2")?;
    for key in &keys {
        let ids: Vec<String> = stmt
            .query_map(params![key, MAX_BLOCK + 1], |r| r.get(0))?
            .collect::<std::result::Result<_, _>>()?;
        if ids.len() as i64 > MAX_BLOCK {
            bump(&counters::KEYS_TOO_COMMON, 1);
            continue;
        }
        for id in ids {
            *hits.entry(id).or_default() += 1;
        }
    }
    bump(&counters::FOUND, hits.len());
    let mut ranked: Vec<(String, usize)> = hits.into_iter().collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let mut out = Vec::new();
    // Prepared (looked up in the statement cache, which hashes the SQL) once per search, not
    // once per candidate.
    let mut read_fields =
        tx.prepare_cached("SELECT fields FROM leads WHERE id = ?1 AND merged_into IS NULL")?;
    for (id, _) in ranked.into_iter().take(MAX_CANDIDATES) {
        // Most candidates score below review, and `reconcile` skips those: only the ones it
        // may link or review are loaded whole (links, remote states, provenance), which was
        // most of a fuzzy backfill's ledger reads. Same fields, same score, same order, so
        // the same decision.
        let fields: Option<String> = read_fields.query_row([&id], |r| r.get(0)).optional()?;
        let Some(fields) = fields else { continue };
        bump(&counters::SCORED, 1);
        let scored =
            rules.matcher.score_index(&profile, &profile_of_stored(&rules.matcher, &fields)?);
        if scored.is_none_or(|(value, _)| rules.matcher.verdict(value) == Verdict::NoMatch) {
            continue;
        }
        if let Some(lead) = load_lead(tx, &id)? {
            bump(&counters::LOADED, 1);
            out.push(lead);
        }
    }
    Ok(out)
}

/// A stored person's five identity fields (`matcher::PROFILE_FIELDS`), borrowed from the
/// `leads.fields` JSON where no escape forces a copy; the other fields are skipped unread.
#[derive(serde::Deserialize)]
struct IdentityFields<'a> {
    #[serde(borrow, default)]
    email: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    first_name: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    last_name: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    company: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    phone: Option<std::borrow::Cow<'a, str>>,
}

/// `rules.matcher.profile_of` of a stored person's fields (`leads.fields`), without decoding
/// the whole map: each candidate of a fuzzy search is profiled (up to `MAX_CANDIDATES` per
/// change), and most are then passed over. The same values, so the same profile.
fn profile_of_stored(matcher: &Matcher, fields: &str) -> Result<crate::identity::matcher::Profile> {
    let f: IdentityFields<'_> = serde_json::from_str(fields)
        .map_err(|e| super::LedgerError::Corrupt(format!("decode: {e}")))?;
    // The names of `Field`'s serde form, in `PROFILE_FIELDS` order (a test checks both).
    Ok(matcher.profile_of_values([
        f.email.as_deref(),
        f.first_name.as_deref(),
        f.last_name.as_deref(),
        f.company.as_deref(),
        f.phone.as_deref(),
    ]))
}

pub(super) fn insert_link(
    tx: &Transaction<'_>,
    lead_id: &str,
    system: &SystemName,
    remote: &RemoteId,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    let n = tx
        .prepare_cached(
            "INSERT OR IGNORE INTO links(lead_id, system, object_type, remote_id, reason, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![lead_id, system.as_str(), remote.object_type, remote.id, reason, ts(now)])?;
    if n == 1 {
        history(tx, tx.last_insert_rowid(), lead_id, "linked", reason, now)?;
        drop_pending_create(tx, lead_id, system, remote, now)?;
    }
    Ok(())
}

/// A record now exists there: a queued create for this person is obsolete. The stage-entry
/// dates it carried go to that record instead (they are recorded as queued).
fn drop_pending_create(
    tx: &Transaction<'_>,
    lead_id: &str,
    system: &SystemName,
    remote: &RemoteId,
    now: DateTime<Utc>,
) -> Result<()> {
    let row: Option<Option<String>> = tx
        .prepare_cached(
            "SELECT stage_dates FROM outbox WHERE lead_id = ?1 AND system = ?2 AND remote_id = ''
             AND state = 'pending'",
        )?
        .query_row(params![lead_id, system.as_str()], |r| r.get(0))
        .optional()?;
    // No create queued (a person's first record, most links of a backfill): nothing to drop
    // and nothing it carried, so the reads and the delete below would find nothing.
    let Some(dates) = row else { return Ok(()) };
    let writes = super::vendor_writes::pending_create(tx, lead_id, system.as_str())?;
    tx.prepare_cached(
        "DELETE FROM outbox WHERE lead_id = ?1 AND system = ?2 AND remote_id = ''
         AND state = 'pending'",
    )?
    .execute(params![lead_id, system.as_str()])?;
    super::vendor_writes::add_writes(
        tx,
        lead_id,
        system.as_str(),
        &remote.object_type,
        &remote.id,
        &writes,
        now,
    )?;
    if let Some(dates) = dates {
        let dates: BTreeMap<String, DateTime<Utc>> = from_json(&dates)?;
        if !dates.is_empty() {
            super::lifecycle::add_dates(
                tx,
                lead_id,
                system.as_str(),
                &remote.object_type,
                &remote.id,
                &dates,
                now,
            )?;
        }
    }
    Ok(())
}

fn history(
    tx: &Transaction<'_>,
    link_id: i64,
    lead_id: &str,
    event: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO link_history(link_id, lead_id, event, reason, at) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![link_id, lead_id, event, reason, ts(now)])?;
    Ok(())
}

fn link_id(tx: &Transaction<'_>, system: &SystemName, remote: &RemoteId) -> Result<Option<i64>> {
    Ok(tx
        .prepare_cached(
            "SELECT id FROM links WHERE system = ?1 AND object_type = ?2 AND remote_id = ?3",
        )?
        .query_row(params![system.as_str(), remote.object_type, remote.id], |r| r.get(0))
        .optional()?)
}

/// Point a record's link (open or closed) at `lead_id` and open it.
fn reopen_link(
    tx: &Transaction<'_>,
    lead_id: &str,
    system: &SystemName,
    remote: &RemoteId,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    let Some(id) = link_id(tx, system, remote)? else {
        return insert_link(tx, lead_id, system, remote, reason, now);
    };
    tx.prepare_cached(
        "UPDATE links SET lead_id = ?2, closed_at = NULL, closed_reason = NULL WHERE id = ?1",
    )?
    .execute(params![id, lead_id])?;
    history(tx, id, lead_id, "reopened", reason, now)?;
    tx.prepare_cached(
        "DELETE FROM tombstones WHERE system = ?1 AND object_type = ?2 AND remote_id = ?3",
    )?
    .execute(params![system.as_str(), remote.object_type, remote.id])?;
    drop_pending_create(tx, lead_id, system, remote, now)
}

/// The survivor of a vendor merge of a person's primary record takes the merged record's
/// place (`Decision::take_place`): the two links swap row ids, which is the order
/// [`load_lead`] lists them in, and their history with them; the survivor becomes an exact
/// link when the merged one was.
fn take_place(
    tx: &Transaction<'_>,
    lead_id: &str,
    system: &SystemName,
    merged: &RemoteId,
    survivor: &RemoteId,
    now: DateTime<Utc>,
) -> Result<()> {
    let (Some(a), Some(b)) = (link_id(tx, system, merged)?, link_id(tx, system, survivor)?) else {
        return Ok(());
    };
    let merged_by_rule: bool = tx
        .prepare_cached("SELECT reason LIKE 'matched_rule:%' FROM links WHERE id = ?1")?
        .query_row([a], |r| r.get(0))?;
    // A survivor with a newer row than the merged link moves to its row id (ids are unique:
    // the merged link parks at -a meanwhile); an older one is ahead of it already once it is
    // of the same kind, since no link of that kind was ahead of the merged primary.
    let at = if a < b {
        for (from, to) in [(a, -a), (b, a), (-a, b)] {
            tx.prepare_cached("UPDATE links SET id = ?2 WHERE id = ?1")?
                .execute(params![from, to])?;
        }
        tx.prepare_cached(
            "UPDATE link_history SET link_id = CASE link_id WHEN ?1 THEN ?2 ELSE ?1 END
             WHERE link_id IN (?1, ?2)",
        )?
        .execute(params![a, b])?;
        a
    } else {
        b
    };
    if !merged_by_rule {
        tx.prepare_cached(
            "UPDATE links SET reason = 'merge_survivor' WHERE id = ?1
             AND reason LIKE 'matched_rule:%'",
        )?
        .execute([at])?;
    }
    history(tx, at, lead_id, "primary", "merge_survivor", now)
}

fn close_link(
    tx: &Transaction<'_>,
    lead_id: &str,
    system: &SystemName,
    remote: &RemoteId,
    reason: &str,
    tombstone: bool,
    now: DateTime<Utc>,
) -> Result<()> {
    let Some(id) = link_id(tx, system, remote)? else { return Ok(()) };
    tx.prepare_cached(
        "UPDATE links SET closed_at = ?2, closed_reason = ?3 WHERE id = ?1 AND closed_at IS NULL",
    )?
    .execute(params![id, ts(now), reason])?;
    history(tx, id, lead_id, "closed", reason, now)?;
    // Pending writes to a record that is gone would only fail; the contract's writes it
    // carried go to the person's other record there, or are queued again.
    let carried = super::vendor_writes::carried(tx, lead_id, system.as_str(), &remote.id)?;
    tx.prepare_cached(
        "DELETE FROM outbox WHERE lead_id = ?1 AND system = ?2 AND remote_id = ?3
         AND state = 'pending'",
    )?
    .execute(params![lead_id, system.as_str(), remote.id])?;
    super::vendor_writes::rehome(tx, carried, now)?;
    if tombstone {
        tx.prepare_cached(
            "INSERT OR REPLACE INTO tombstones(system, object_type, remote_id, lead_id, reason, at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?
        .execute(params![
            system.as_str(),
            remote.object_type,
            remote.id,
            lead_id,
            reason,
            ts(now)
        ])?;
    }
    Ok(())
}

pub(super) fn write_lead(
    tx: &Transaction<'_>,
    id: &str,
    is_new: bool,
    fields: &Fields,
    provenance: &BTreeMap<Field, Provenance>,
    now: DateTime<Utc>,
) -> Result<()> {
    let email_norm = fields.get(&Field::Email).and_then(|e| normalize_email(e));
    if is_new {
        tx.prepare_cached(
            "INSERT INTO leads(id, email_norm, fields, provenance, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?5)",
        )?
        .execute(params![
            id,
            email_norm,
            to_json(fields)?,
            to_json(provenance)?,
            ts(now)
        ])?;
    } else {
        tx.prepare_cached(
            "UPDATE leads SET email_norm = ?2, fields = ?3, provenance = ?4, updated_at = ?5
             WHERE id = ?1",
        )?
        .execute(params![
            id,
            email_norm,
            to_json(fields)?,
            to_json(provenance)?,
            ts(now)
        ])?;
    }
    Ok(())
}

pub(super) fn write_match_keys(tx: &Transaction<'_>, lead_id: &str, keys: &[String]) -> Result<()> {
    tx.prepare_cached("DELETE FROM match_keys WHERE lead_id = ?1")?.execute([lead_id])?;
    insert_match_keys(tx, lead_id, keys)
}

fn insert_match_keys(tx: &Transaction<'_>, lead_id: &str, keys: &[String]) -> Result<()> {
    let mut stmt =
        tx.prepare_cached("INSERT OR IGNORE INTO match_keys(key, lead_id) VALUES (?1, ?2)")?;
    for k in keys {
        stmt.execute(params![k, lead_id])?;
    }
    Ok(())
}

/// Fold person `loser` into `winner`: links move, the loser's pending writes and keys go, open
/// reviews between the two become obsolete, and the loser stays as a tombstone pointing at the
/// winner (so old ids in `trace` and stamped ledger keys still resolve).
pub(super) fn absorb(
    tx: &Transaction<'_>,
    winner: &str,
    loser: &str,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    let moved: Vec<i64> = tx
        .prepare_cached("SELECT id FROM links WHERE lead_id = ?1 AND closed_at IS NULL")?
        .query_map([loser], |r| r.get(0))?
        .collect::<std::result::Result<_, _>>()?;
    for id in moved {
        tx.prepare_cached("UPDATE links SET lead_id = ?2 WHERE id = ?1")?
            .execute(params![id, winner])?;
        history(tx, id, winner, "moved", &format!("{reason}:from:{loser}"), now)?;
    }
    tx.prepare_cached("UPDATE tombstones SET lead_id = ?2 WHERE lead_id = ?1")?
        .execute(params![loser, winner])?;
    tx.prepare_cached("DELETE FROM outbox WHERE lead_id = ?1 AND state = 'pending'")?
        .execute([loser])?;
    tx.prepare_cached("DELETE FROM match_keys WHERE lead_id = ?1")?.execute([loser])?;
    tx.prepare_cached(
        "UPDATE leads SET merged_into = ?2, email_norm = NULL, updated_at = ?3 WHERE id = ?1",
    )?
    .execute(params![loser, winner, ts(now)])?;
    tx.prepare_cached(
        "UPDATE reviews SET state = 'obsolete', decided_at = ?3, decision = 'persons merged'
         WHERE state = 'open' AND kind = 'duplicate'
         AND ((lead_id = ?1 AND other_lead_id = ?2) OR (lead_id = ?2 AND other_lead_id = ?1))",
    )?
    .execute(params![winner, loser, ts(now)])?;
    tx.prepare_cached("UPDATE reviews SET lead_id = ?2 WHERE lead_id = ?1 AND state = 'open'")?
        .execute(params![loser, winner])?;
    tx.prepare_cached(
        "UPDATE reviews SET other_lead_id = ?2 WHERE other_lead_id = ?1 AND state = 'open'",
    )?
    .execute(params![loser, winner])?;
    audit(
        tx,
        now,
        Some(loser),
        None,
        "merged_into",
        &serde_json::json!({ "into": winner, "reason": reason }),
    )?;
    Ok(())
}

fn insert_review(
    tx: &Transaction<'_>,
    lead_id: &str,
    review: &ReviewIntent,
    now: DateTime<Utc>,
) -> Result<()> {
    let (kind, other, field, score, rule, detail) = match review {
        ReviewIntent::Duplicate { other, score, rule } => (
            "duplicate",
            other.as_str(),
            "",
            Some(*score),
            Some(rule.as_str()),
            serde_json::json!({}),
        ),
        ReviewIntent::Conflict { field, current, incoming, system } => (
            "conflict",
            "",
            field.as_str(),
            None,
            Some("review"),
            serde_json::json!({ "current": current, "incoming": incoming, "system": system.as_str() }),
        ),
    };
    // A pair a reviewer already rejected is not asked again.
    if kind == "duplicate" {
        let rejected: bool = tx
            .prepare_cached(
                "SELECT EXISTS(SELECT 1 FROM reviews WHERE kind = 'duplicate' AND state = 'rejected'
                 AND ((lead_id = ?1 AND other_lead_id = ?2) OR (lead_id = ?2 AND other_lead_id = ?1)))",
            )?
            .query_row(params![lead_id, other], |r| r.get(0))?;
        if rejected {
            return Ok(());
        }
    }
    tx.prepare_cached(
        "INSERT INTO reviews(kind, lead_id, other_lead_id, field, score, rule, detail, state, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'open', ?8)
         ON CONFLICT(kind, lead_id, other_lead_id, field) WHERE state = 'open'
         DO UPDATE SET detail = excluded.detail, score = excluded.score",
    )?
    .execute(params![kind, lead_id, other, field, score, rule, detail.to_string(), ts(now)])?;
    Ok(())
}

pub(super) fn apply_decision(
    tx: &Transaction<'_>,
    system: &SystemName,
    change: &Change,
    d: &Decision,
    now: DateTime<Utc>,
) -> Result<()> {
    if d.is_new_lead || d.lead_changed {
        write_lead(tx, &d.lead_id, d.is_new_lead, &d.lead_fields, &d.provenance, now)?;
    }
    if d.is_new_lead {
        claim_email_tombstones(tx, &d.lead_id, change, now)?;
    }
    if d.is_new_lead || !d.deleted_matches.is_empty() {
        claim_deleted_matches(tx, &d.lead_id, system, change, &d.deleted_matches, now)?;
    }
    if let Some(loser) = &d.absorb {
        absorb(tx, &d.lead_id, loser, "vendor", now)?;
    }
    match &d.new_link {
        Some(reconcile::LinkReason::Restored) => {
            reopen_link(tx, &d.lead_id, system, &change.remote, "restored", now)?;
        }
        Some(reason) => insert_link(tx, &d.lead_id, system, &change.remote, &reason.as_str(), now)?,
        None => {}
    }
    if let Some(close) = &d.close_link {
        close_link(tx, &d.lead_id, system, &change.remote, close.reason, close.tombstone, now)?;
    }
    if let Some((other, reason)) = &d.link_other {
        reopen_link(tx, &d.lead_id, system, other, reason, now)?;
    }
    if let Some(survivor) = &d.take_place {
        take_place(tx, &d.lead_id, system, &change.remote, survivor, now)?;
    }
    if let Some(keys) = &d.match_keys {
        if d.is_new_lead {
            // A person just minted has no keys yet: only the inserts.
            insert_match_keys(tx, &d.lead_id, keys)?;
        } else {
            write_match_keys(tx, &d.lead_id, keys)?;
        }
    }
    tx.prepare_cached(
        "INSERT INTO remote_records(system, object_type, remote_id, state, modified_at, seen_at, agreed,
                                    own_email_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT(system, object_type, remote_id) DO UPDATE SET
            state = excluded.state, modified_at = excluded.modified_at, seen_at = excluded.seen_at,
            agreed = excluded.agreed,
            own_email_at = COALESCE(excluded.own_email_at, remote_records.own_email_at)",
    )?
    .execute(params![
        system.as_str(),
        change.remote.object_type,
        change.remote.id,
        to_json(&d.record_known)?,
        ts(change.modified_at),
        ts(change.fetched_at),
        to_json(&d.record_agreed)?,
        d.record_own_email_at.map(ts),
    ])?;
    for r in &d.reviews {
        insert_review(tx, &d.lead_id, r, now)?;
    }
    write_plan(tx, &d.lead_id, &d.pushes, now)?;
    for a in &d.audit {
        audit(tx, now, Some(&d.lead_id), Some(system.as_str()), a.kind, &a.detail)?;
    }
    Ok(())
}

/// The other person of a duplicate review just opened may have a create queued in the
/// system of the new person's record: planned again, it waits for the review too.
pub(super) fn hold_reviewed_creates(
    tx: &Transaction<'_>,
    d: &Decision,
    rules: &Rules,
    now: DateTime<Utc>,
) -> Result<()> {
    for r in &d.reviews {
        let ReviewIntent::Duplicate { other, .. } = r else { continue };
        let queued: bool = tx
            .prepare_cached(
                "SELECT EXISTS(SELECT 1 FROM outbox WHERE lead_id = ?1 AND state = 'pending'
                 AND remote_id = '')",
            )?
            .query_row([other], |r| r.get(0))?;
        if queued {
            replan(tx, other, rules, now)?;
        }
    }
    Ok(())
}

/// Plan a person's pushes again from the ledger (after leadsync learned what a record holds).
pub(super) fn replan(
    tx: &Transaction<'_>,
    lead_id: &str,
    rules: &Rules,
    now: DateTime<Utc>,
) -> Result<()> {
    let Some(lead) = load_lead(tx, lead_id)? else { return Ok(()) };
    let intents = reconcile::plan_pushes(&lead, rules);
    write_plan(tx, lead_id, &intents, now)
}

/// Score a person whose identity fields changed (an edit of a linked record) again against
/// each person an open duplicate review ties them to and each person sharing a blocking key.
/// A pair that now scores at or above the auto-link threshold is the link the fuzzy rules
/// would have made had the edit been read first (convergence seeds 213 and 320: a first name
/// edited in Salesforce, read after the hand-made HubSpot duplicate that already held the new
/// name had become a person of its own), so the two fold into one as an accepted review
/// would, the older surviving. A pair holding one address folds when it also looks alike
/// (scored without the email, at least in the review band); one that does not is a taken
/// email and stays apart. A pair a reviewer rejected stays apart. Returns whether a fold
/// happened (at most one per call).
pub(super) fn rescore_duplicates(
    tx: &Transaction<'_>,
    lead_id: &str,
    rules: &Rules,
    now: DateTime<Utc>,
) -> Result<bool> {
    let others: Vec<String> = tx
        .prepare_cached(
            "SELECT CASE WHEN lead_id = ?1 THEN other_lead_id ELSE lead_id END FROM reviews
             WHERE kind = 'duplicate' AND state = 'open' AND (lead_id = ?1 OR other_lead_id = ?1)
             ORDER BY id",
        )?
        .query_map([lead_id], |r| r.get(0))?
        .collect::<std::result::Result<_, _>>()?;
    let Some(person) = load_lead(tx, lead_id)? else { return Ok(false) };
    let profile = rules.matcher.profile_of(&person.fields);
    let probe = Change {
        remote: RemoteId { object_type: String::new(), id: String::new() },
        fields: person.fields.clone(),
        ledger_key: None,
        modified_at: now,
        fetched_at: now,
        fate: RecordFate::Live,
        custom: BTreeMap::new(),
        last_activity: None,
    };
    let near = candidates(tx, &probe, rules)?.into_iter().map(|q| q.id);
    let mut rejected = tx.prepare_cached(
        "SELECT EXISTS(SELECT 1 FROM reviews WHERE kind = 'duplicate' AND state = 'rejected'
         AND ((lead_id = ?1 AND other_lead_id = ?2) OR (lead_id = ?2 AND other_lead_id = ?1)))",
    )?;
    for other in others.into_iter().chain(near) {
        if other == lead_id
            || rejected.query_row(params![lead_id, other], |r| r.get::<_, bool>(0))?
        {
            continue;
        }
        let Some(q) = load_lead(tx, &other)? else { continue };
        // One address on two persons: the exact key says one human when the two also look
        // alike (convergence seed 2391: a Salesforce lead read as a person of its own just
        // before the HubSpot edit that gave the contact's person its address; a create at
        // Salesforce then made the human a second lead). Two who do not look alike are a
        // taken email, a real conflict with its own review (`park_taken_email`).
        let email = |p: &LeadState| p.fields.get(&Field::Email).and_then(|e| normalize_email(e));
        let fold = if email(&person).is_some() && email(&person) == email(&q) {
            let without_email = |p: &LeadState| {
                let mut f = p.fields.clone();
                f.remove(&Field::Email);
                rules.matcher.profile_of(&f)
            };
            let score = rules.matcher.score(&without_email(&person), &without_email(&q));
            score.is_some_and(|s| rules.matcher.verdict(s.value) != Verdict::NoMatch)
        } else {
            let score = rules.matcher.score(&profile, &rules.matcher.profile_of(&q.fields));
            score.is_some_and(|s| rules.matcher.verdict(s.value) == Verdict::AutoLink)
        };
        if !fold {
            continue;
        }
        let winner: String = tx
            .prepare_cached(
                "SELECT id FROM leads WHERE id IN (?1, ?2) ORDER BY created_at, id LIMIT 1",
            )?
            .query_row(params![lead_id, other], |r| r.get(0))?;
        let loser = if winner == lead_id { other.as_str() } else { lead_id };
        let (w, l) = if winner == lead_id { (&person, &q) } else { (&q, &person) };
        // As a review accepted would, except that under `most recent` the newer value stands
        // whichever person held it: an edit made on the younger person's record before the
        // two were seen to be one is not reverted by the fold.
        let mut merged = reconcile::merge_persons(w, l, rules, now);
        reconcile::newer_values_carry_on(&mut merged, l, w, rules, None);
        write_lead(tx, &winner, false, &merged.fields, &merged.provenance, now)?;
        absorb(tx, &winner, loser, "rescored", now)?;
        let keys = rules.matcher.blocking_keys(&rules.matcher.profile_of(&merged.fields));
        write_match_keys(tx, &winner, &keys)?;
        audit(
            tx,
            now,
            Some(&winner),
            None,
            "persons_merged",
            &serde_json::json!({ "from": loser, "reason": "rescored" }),
        )?;
        replan(tx, &winner, rules, now)?;
        return Ok(true);
    }
    Ok(false)
}

/// Fold two persons into one by the reconciler's merge rule, in this transaction.
pub(super) fn merge_leads(
    tx: &Transaction<'_>,
    winner: &str,
    loser: &str,
    reason: &str,
    rules: &Rules,
    now: DateTime<Utc>,
) -> Result<bool> {
    let (Some(w), Some(l)) = (load_lead(tx, winner)?, load_lead(tx, loser)?) else {
        return Ok(false);
    };
    let merged = reconcile::merge_persons(&w, &l, rules, now);
    write_lead(tx, winner, false, &merged.fields, &merged.provenance, now)?;
    absorb(tx, winner, loser, reason, now)?;
    write_match_keys(
        tx,
        winner,
        &rules.matcher.blocking_keys(&rules.matcher.profile_of(&merged.fields)),
    )?;
    audit(
        tx,
        now,
        Some(winner),
        None,
        "persons_merged",
        &serde_json::json!({ "from": loser, "reason": reason }),
    )?;
    replan(tx, winner, rules, now)?;
    Ok(true)
}

#[cfg(test)]
mod profile_tests {
    use super::*;
    use crate::identity::matcher::PROFILE_FIELDS;

    /// The borrowed decode reads the same five values `profile_of` takes from the whole map:
    /// `IdentityFields`' names are `Field`'s serde names, and escaped values decode alike.
    #[test]
    fn a_stored_persons_profile_is_the_one_of_its_decoded_fields() {
        let matcher = Matcher::default();
        let mut fields = Fields::new();
        for (i, f) in Field::ALL.iter().enumerate() {
            fields.insert(*f, format!("Value \"{i}\" \u{e9}t\u{e9} +49 30 1234567{i}"));
        }
        fields.insert(Field::Email, "Ann.Lee+x@Example.com".into());
        fields.insert(Field::Phone, "+49 30 12345678".into());
        for f in PROFILE_FIELDS {
            let mut one = fields.clone();
            one.remove(&f);
            let json = to_json(&one).expect("encode");
            let stored = profile_of_stored(&matcher, &json).expect("decode");
            assert_eq!(stored, matcher.profile_of(&one), "without {f:?}");
        }
        let json = to_json(&fields).expect("encode");
        let stored = profile_of_stored(&matcher, &json).expect("decode");
        assert_eq!(stored, matcher.profile_of(&fields));
        assert!(stored.email().is_some() && stored.phone().is_some() && stored.company().is_some());
        assert!(profile_of_stored(&matcher, "{").is_err());
    }
}
