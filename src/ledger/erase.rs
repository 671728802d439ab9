//! Erasure (`leadsync erase`): scrub a person from every ledger table and leave salted-hash
//! tombstones, so that the person is never imported again.
//!
//! A tombstone is `SHA-256(salt ‖ kind ‖ 0 ‖ value)` in hex, where the salt is 32 random bytes
//! made once per ledger (table `erasure_salt`) and the value is the normalised email, a remote
//! record (`system`, object type, id) or a ledger id. Nothing readable of the person is kept.
//! The salt lives in the same file, so whoever holds the ledger can still test a guessed
//! address against the tombstones; what the hash prevents is reading the addresses off it.
//!
//! **The gate:** every change enters the ledger through `insert_changes` (polls, and webhook
//! notices once fetched) or `store_notices` (webhook payloads); both ask [`Gate::drops`] first.
//! A change whose email, record id or stamped ledger id is tombstoned is dropped there, before
//! it is written anywhere, counted in `leadsync_erased_changes_dropped_total` and logged by ids
//! only. Dropping at the door rather than when the reconciler builds its context keeps the
//! person's values off the disk altogether (the inbox keeps processed rows for a week).

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use rand::RngCore;
use rusqlite::{OptionalExtension, Transaction, params};
use sha2::{Digest, Sha256};

use super::{Ledger, Result, audit, from_json, ts};
use crate::domain::{Change, Field, Notice, RecordFate, RemoteId, SystemName, normalize_email};
use crate::identity::normalize::{self, EmailRules};

/// What one erasure did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Erasure {
    /// Persons removed from the ledger (persons merged into them included).
    pub persons: usize,
    /// Remote records whose ids are now tombstoned.
    pub records_blocked: usize,
    /// Records to delete at the vendors: the persons' open links and the records the vendors
    /// reported for the email. Closed links (merged away, converted, deleted) are blocked but
    /// not listed: a merged-away id can resolve to a survivor that is not known to be this
    /// person, and a record that still holds the email is found by the vendor search anyway.
    pub to_delete: Vec<(SystemName, RemoteId)>,
    /// The email had been erased before this call.
    pub already_erased: bool,
}

/// The email as tombstones hash it: the identity normaliser without provider rules (which
/// config may change later; the tombstone must keep matching).
pub fn erasure_email(raw: &str) -> Option<String> {
    normalize::email(raw, &EmailRules::default())
}

fn digest(salt: &[u8], kind: &str, parts: &[&str]) -> String {
    let mut h = Sha256::new();
    h.update(salt);
    h.update(kind.as_bytes());
    for p in parts {
        h.update([0u8]);
        h.update(p.as_bytes());
    }
    hex::encode(h.finalize())
}

fn email_hash(salt: &[u8], email_norm: &str) -> String {
    digest(salt, "email", &[email_norm])
}

fn record_hash(salt: &[u8], system: &str, remote: &RemoteId) -> String {
    digest(salt, "record", &[system, &remote.object_type, &remote.id])
}

fn lead_hash(salt: &[u8], lead_id: &str) -> String {
    digest(salt, "lead", &[lead_id])
}

/// The ledger's salt, made on first use.
fn salt(tx: &Transaction<'_>) -> Result<Vec<u8>> {
    let mut fresh = [0u8; 32];
    rand::rng().fill_bytes(&mut fresh);
    tx.prepare_cached("INSERT OR IGNORE INTO erasure_salt(id, salt) VALUES (1, ?1)")?
        .execute([&fresh[..]])?;
    Ok(tx.query_row("SELECT salt FROM erasure_salt WHERE id = 1", [], |r| r.get(0))?)
}

/// Drops changes and notices of erased persons at the ledger's door. Load one per transaction.
pub(super) struct Gate {
    /// `None` while nothing was ever erased: every change passes without hashing.
    salt: Option<Vec<u8>>,
}

impl Gate {
    pub(super) fn load(tx: &Transaction<'_>) -> Result<Gate> {
        let salt = tx
            .prepare_cached(
                "SELECT salt FROM erasure_salt WHERE id = 1 AND EXISTS(SELECT 1 FROM erasures)",
            )?
            .query_row([], |r| r.get(0))
            .optional()?;
        Ok(Gate { salt })
    }

    fn any(tx: &Transaction<'_>, hashes: &[String]) -> Result<bool> {
        let mut stmt =
            tx.prepare_cached("SELECT EXISTS(SELECT 1 FROM erasures WHERE hash = ?1)")?;
        for h in hashes {
            if stmt.query_row([h], |r| r.get::<_, bool>(0))? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn change_hashes(salt: &[u8], system: &SystemName, change: &Change) -> Vec<String> {
        let mut out = vec![record_hash(salt, system.as_str(), &change.remote)];
        if let Some(e) = change.fields.get(&Field::Email).and_then(|e| erasure_email(e)) {
            out.push(email_hash(salt, &e));
        }
        if let Some(k) = &change.ledger_key {
            out.push(lead_hash(salt, k));
        }
        out
    }

    /// Whether `change` is about an erased person; counts and logs the drop.
    pub(super) fn drops(
        &self,
        tx: &Transaction<'_>,
        system: &SystemName,
        change: &Change,
    ) -> Result<bool> {
        let Some(salt) = &self.salt else { return Ok(false) };
        let dropped = Gate::any(tx, &Gate::change_hashes(salt, system, change))?;
        if dropped {
            dropped_event(system, &change.remote);
        }
        Ok(dropped)
    }

    /// Whether a webhook notice is about an erased person (its record, a record it names, or
    /// the state it carried); counts and logs the drop.
    pub(super) fn drops_notice(
        &self,
        tx: &Transaction<'_>,
        system: &SystemName,
        notice: &Notice,
    ) -> Result<bool> {
        let Some(salt) = &self.salt else { return Ok(false) };
        let mut hashes = vec![record_hash(salt, system.as_str(), &notice.remote)];
        if let Some(c) = &notice.snapshot {
            hashes.extend(Gate::change_hashes(salt, system, c));
        }
        let dropped = Gate::any(tx, &hashes)?;
        if dropped {
            dropped_event(system, &notice.remote);
        }
        Ok(dropped)
    }

    /// Whether this ledger id belongs to an erased person (a push result that arrives after
    /// the erasure is not recorded: the person's rows are gone).
    pub(super) fn erased_lead(&self, tx: &Transaction<'_>, lead_id: &str) -> Result<bool> {
        let Some(salt) = &self.salt else { return Ok(false) };
        Gate::any(tx, &[lead_hash(salt, lead_id)])
    }
}

/// One helper logs and counts a drop, so the two never disagree.
fn dropped_event(system: &SystemName, remote: &RemoteId) {
    crate::metrics::erased_change_dropped(system.as_str());
    tracing::info!(
        system = %system,
        object_type = %remote.object_type,
        remote_id = %remote.id,
        "change of an erased person dropped"
    );
}

type RecordKey = (String, String, String);

fn key_of(system: &str, r: &RemoteId) -> RecordKey {
    (system.to_string(), r.object_type.clone(), r.id.clone())
}

/// A numbered parameter list `?1, ?2, ...` for `IN (...)`, so that one statement can name the
/// set twice. Ids are made by leadsync, but they go in as parameters all the same.
fn in_list(n: usize) -> String {
    (1..=n).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ")
}

fn collect_ids(tx: &Transaction<'_>, sql: &str, ids: &BTreeSet<String>) -> Result<Vec<String>> {
    let sql = sql.replace("{ids}", &in_list(ids.len()));
    let mut stmt = tx.prepare(&sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(ids.iter()), |r| r.get(0))?;
    Ok(rows.collect::<std::result::Result<_, _>>()?)
}

fn exec_ids(tx: &Transaction<'_>, sql: &str, ids: &BTreeSet<String>) -> Result<usize> {
    let sql = sql.replace("{ids}", &in_list(ids.len()));
    Ok(tx.execute(&sql, rusqlite::params_from_iter(ids.iter()))?)
}

/// The persons to erase: those holding the email (live, or merged away with it), those linked
/// to a record found at a vendor, and everyone merged into or absorbing one of them (one
/// human, as far as the ledger knows).
fn persons_of(
    tx: &Transaction<'_>,
    email: Option<&str>,
    raw_email: &str,
    found: &[(SystemName, RemoteId)],
) -> Result<BTreeSet<String>> {
    let mut set = BTreeSet::new();
    if let Some(email) = email {
        let simple = normalize_email(raw_email).unwrap_or_else(|| email.to_string());
        let mut stmt = tx.prepare("SELECT id FROM leads WHERE email_norm IN (?1, ?2)")?;
        for id in stmt.query_map(params![email, simple], |r| r.get::<_, String>(0))? {
            set.insert(id?);
        }
        // Persons merged away keep their fields but not their email index.
        let mut stmt = tx.prepare(
            "SELECT id, json_extract(fields, '$.email') FROM leads WHERE merged_into IS NOT NULL",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get(1)?)))?;
        for row in rows {
            let (id, e): (String, Option<String>) = row?;
            if e.as_deref().and_then(erasure_email).as_deref() == Some(email) {
                set.insert(id);
            }
        }
    }
    let mut stmt = tx.prepare(
        "SELECT lead_id FROM links WHERE system = ?1 AND object_type = ?2 AND remote_id = ?3",
    )?;
    for (system, r) in found {
        let id: Option<String> = stmt
            .query_row(params![system.as_str(), r.object_type, r.id], |row| row.get(0))
            .optional()?;
        set.extend(id);
    }
    // Follow merges both ways until nothing new turns up.
    loop {
        if set.is_empty() {
            return Ok(set);
        }
        let before = set.len();
        let more = collect_ids(
            tx,
            "SELECT id FROM leads WHERE merged_into IN ({ids})
             UNION SELECT merged_into FROM leads WHERE id IN ({ids}) AND merged_into IS NOT NULL",
            &set,
        )?;
        set.extend(more);
        if set.len() == before {
            return Ok(set);
        }
    }
}

/// Whether a stored change is about the erased person.
fn change_matches(
    system: &str,
    c: &Change,
    email: Option<&str>,
    records: &BTreeSet<RecordKey>,
    persons: &BTreeSet<String>,
) -> bool {
    let related = match &c.fate {
        RecordFate::MergedInto { survivor } => {
            Some(RemoteId { object_type: c.remote.object_type.clone(), id: survivor.clone() })
        }
        RecordFate::ConvertedTo { remote } => Some(remote.clone()),
        _ => None,
    };
    records.contains(&key_of(system, &c.remote))
        || related.is_some_and(|r| records.contains(&key_of(system, &r)))
        || c.ledger_key.as_ref().is_some_and(|k| persons.contains(k))
        || email.is_some_and(|e| {
            c.fields.get(&Field::Email).and_then(|v| erasure_email(v)).as_deref() == Some(e)
        })
}

impl Ledger {
    /// Erase a person: remove every value of theirs from every table, in one transaction, and
    /// tombstone their email, record ids and ledger ids. `found` are the records the vendors
    /// reported for the email (linked or not); they are tombstoned too. Erasing an email again
    /// finds nothing and succeeds.
    ///
    /// What stays: non-personal counts (completed pushes, as rows with no person, record or
    /// fields, so `totals` keep counting them) and one `erased` audit row with counts only.
    ///
    /// # Errors
    /// SQLite failures or a corrupt row; nothing is committed then.
    pub fn erase_person(
        &self,
        email: &str,
        found: &[(SystemName, RemoteId)],
        now: DateTime<Utc>,
    ) -> Result<Erasure> {
        self.with_tx(|tx| {
            let salt = salt(tx)?;
            let norm = erasure_email(email);
            let already_erased = match &norm {
                Some(e) => Gate::any(tx, &[email_hash(&salt, e)])?,
                None => false,
            };
            let persons = persons_of(tx, norm.as_deref(), email, found)?;

            // Every record the persons were ever linked to or tombstoned at, and the found ones.
            let mut records: BTreeSet<RecordKey> = BTreeSet::new();
            let mut to_delete: Vec<(SystemName, RemoteId)> = Vec::new();
            if !persons.is_empty() {
                let sql = "SELECT system, object_type, remote_id, closed_at IS NULL FROM links
                           WHERE lead_id IN ({ids}) ORDER BY id";
                let sql = sql.replace("{ids}", &in_list(persons.len()));
                let mut stmt = tx.prepare(&sql)?;
                let rows = stmt.query_map(rusqlite::params_from_iter(persons.iter()), |r| {
                    Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?, r.get::<_, bool>(3)?))
                })?;
                for row in rows {
                    let (system, object_type, id, open) = row?;
                    let remote = RemoteId { object_type, id };
                    records.insert(key_of(&system, &remote));
                    if open {
                        to_delete.push((SystemName(system), remote));
                    }
                }
                let sql = "SELECT system, object_type, remote_id FROM tombstones
                           WHERE lead_id IN ({ids})";
                let sql = sql.replace("{ids}", &in_list(persons.len()));
                let mut stmt = tx.prepare(&sql)?;
                let rows = stmt.query_map(rusqlite::params_from_iter(persons.iter()), |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, String>(2)?))
                })?;
                for row in rows {
                    records.insert(row?);
                }
            }
            for (system, remote) in found {
                records.insert(key_of(system.as_str(), remote));
                if !to_delete.iter().any(|(s, r)| s == system && r == remote) {
                    to_delete.push((system.clone(), remote.clone()));
                }
            }
            // Records deleted before leadsync found their person keep their identity
            // (`deleted_identities`): one with this address is the person's record, blocked
            // like the others (`scrub` removes it with them); one that shares a blocking key
            // with the persons is a lookalike the engine could have tied to them: scrubbed
            // with its inbox rows, but without a hash (it may be another human's).
            records.extend(deleted_with_email(tx, norm.as_deref())?);
            let mut scrubbed = records.clone();
            scrubbed.extend(deleted_lookalikes_of(tx, &persons)?);

            scrub(tx, &persons, &scrubbed, norm.as_deref())?;
            // Records deleted before any person held the address are kept by the address
            // (`email_tombstones`): the erasure's salted hash takes over that job.
            for e in [norm.clone(), normalize_email(email)].into_iter().flatten() {
                tx.prepare_cached("DELETE FROM email_tombstones WHERE email_norm = ?1")?
                    .execute([e])?;
            }

            let mut tombstones: Vec<(String, &str)> = Vec::new();
            if let Some(e) = &norm {
                tombstones.push((email_hash(&salt, e), "email"));
            }
            for (system, object_type, id) in &records {
                let remote = RemoteId { object_type: object_type.clone(), id: id.clone() };
                tombstones.push((record_hash(&salt, system, &remote), "record"));
            }
            for id in &persons {
                tombstones.push((lead_hash(&salt, id), "lead"));
            }
            let mut stmt = tx.prepare_cached(
                "INSERT OR IGNORE INTO erasures(hash, kind, at) VALUES (?1, ?2, ?3)",
            )?;
            for (hash, kind) in &tombstones {
                stmt.execute(params![hash, kind, ts(now)])?;
            }
            audit(
                tx,
                now,
                None,
                None,
                "erased",
                &serde_json::json!({ "persons": persons.len(), "records": records.len() }),
            )?;
            Ok(Erasure {
                persons: persons.len(),
                records_blocked: records.len(),
                to_delete,
                already_erased,
            })
        })
    }
}

/// Kept identities of deleted records (`deleted_identities`) whose email is `email` (as the
/// erasure normalises it; the table is short-lived, so it is read whole).
fn deleted_with_email(tx: &Transaction<'_>, email: Option<&str>) -> Result<Vec<RecordKey>> {
    let Some(email) = email else { return Ok(Vec::new()) };
    let mut stmt = tx.prepare(
        "SELECT system, object_type, remote_id, json_extract(fields, '$.email')
         FROM deleted_identities WHERE json_extract(fields, '$.email') IS NOT NULL",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?, r.get::<_, String>(3)?))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (system, object_type, id, e) = row?;
        if erasure_email(&e).as_deref() == Some(email) {
            out.push((system, object_type, id));
        }
    }
    Ok(out)
}

/// Kept identities of deleted records that share a blocking key with the persons (read
/// before their own keys are scrubbed): whatever the fuzzy rules could tie to them.
fn deleted_lookalikes_of(
    tx: &Transaction<'_>,
    persons: &BTreeSet<String>,
) -> Result<Vec<RecordKey>> {
    if persons.is_empty() {
        return Ok(Vec::new());
    }
    let sql = "SELECT DISTINCT system, object_type, remote_id FROM deleted_identity_keys
               WHERE key IN (SELECT key FROM match_keys WHERE lead_id IN ({ids}))";
    let sql = sql.replace("{ids}", &in_list(persons.len()));
    let rows: Vec<RecordKey> = tx
        .prepare(&sql)?
        .query_map(rusqlite::params_from_iter(persons.iter()), |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })?
        .collect::<std::result::Result<_, _>>()?;
    Ok(rows)
}

/// Remove the persons and their records from every table.
fn scrub(
    tx: &Transaction<'_>,
    persons: &BTreeSet<String>,
    records: &BTreeSet<RecordKey>,
    email: Option<&str>,
) -> Result<()> {
    // Inbox and notices first: a pending change must not bring the person back, and processed
    // ones carry their values. Scanned in full: both keep about a week of rows.
    let rows: Vec<(i64, String, String)> = tx
        .prepare("SELECT id, system, change FROM inbox")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<std::result::Result<_, _>>()?;
    for (id, system, change) in rows {
        let c: Change = from_json(&change)?;
        if change_matches(&system, &c, email, records, persons) {
            tx.prepare_cached("DELETE FROM inbox WHERE id = ?1")?.execute([id])?;
        }
    }
    let rows: Vec<(i64, String, String)> = tx
        .prepare("SELECT id, system, notice FROM notices")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<std::result::Result<_, _>>()?;
    for (id, system, notice) in rows {
        let n: Notice = from_json(&notice)?;
        let named = std::iter::once(n.remote.clone()).chain(
            n.related
                .iter()
                .map(|r| RemoteId { object_type: n.remote.object_type.clone(), id: r.clone() }),
        );
        let hit = named.into_iter().any(|r| records.contains(&key_of(&system, &r)))
            || n.snapshot
                .as_ref()
                .is_some_and(|c| change_matches(&system, c, email, records, persons));
        if hit {
            tx.prepare_cached("DELETE FROM notices WHERE id = ?1")?.execute([id])?;
        }
    }
    for (system, object_type, id) in records {
        tx.prepare_cached(
            "DELETE FROM remote_records WHERE system = ?1 AND object_type = ?2 AND remote_id = ?3",
        )?
        .execute(params![system, object_type, id])?;
        tx.prepare_cached(
            "DELETE FROM tombstones WHERE system = ?1 AND object_type = ?2 AND remote_id = ?3",
        )?
        .execute(params![system, object_type, id])?;
        tx.prepare_cached(
            "DELETE FROM email_tombstones WHERE system = ?1 AND object_type = ?2 AND remote_id = ?3",
        )?
        .execute(params![system, object_type, id])?;
        super::identity::forget_deleted_identity(tx, system, object_type, id)?;
        // Closed-loop rows name remote records, not persons: the person's campaign touches
        // (as the member, or as the converted lead a membership also names) and their place
        // on opportunities. The opportunity stays (it is the company's, not the person's);
        // attribution then credits its next linked contact.
        tx.prepare_cached(
            "DELETE FROM campaign_touches WHERE system = ?1
             AND ((person_type = ?2 AND person_id = ?3) OR (lead_type = ?2 AND lead_id = ?3))",
        )?
        .execute(params![system, object_type, id])?;
        tx.prepare_cached(
            "DELETE FROM opportunity_contacts
             WHERE system = ?1 AND object_type = ?2 AND remote_id = ?3",
        )?
        .execute(params![system, object_type, id])?;
        tx.prepare_cached(
            "DELETE FROM activities WHERE system = ?1 AND who_type = ?2 AND who_id = ?3",
        )?
        .execute(params![system, object_type, id])?;
        // Other persons' audit rows that name the record (a link, a possible duplicate).
        let quoted = format!("%\"{object_type}/{id}\"%");
        tx.prepare_cached("DELETE FROM audit WHERE system = ?1 AND detail LIKE ?2")?
            .execute(params![system, quoted])?;
    }
    if persons.is_empty() {
        return Ok(());
    }
    exec_ids(
        tx,
        "DELETE FROM link_history WHERE lead_id IN ({ids})
         OR link_id IN (SELECT id FROM links WHERE lead_id IN ({ids}))",
        persons,
    )?;
    exec_ids(tx, "DELETE FROM links WHERE lead_id IN ({ids})", persons)?;
    exec_ids(tx, "DELETE FROM tombstones WHERE lead_id IN ({ids})", persons)?;
    exec_ids(tx, "DELETE FROM match_keys WHERE lead_id IN ({ids})", persons)?;
    // The governed lifecycle holds the person's event times and custom values.
    exec_ids(tx, "DELETE FROM lifecycle WHERE lead_id IN ({ids})", persons)?;
    exec_ids(tx, "DELETE FROM sla_clocks WHERE lead_id IN ({ids})", persons)?;
    exec_ids(tx, "DELETE FROM sla_cycles WHERE lead_id IN ({ids})", persons)?;
    exec_ids(
        tx,
        "DELETE FROM reviews WHERE lead_id IN ({ids}) OR other_lead_id IN ({ids})",
        persons,
    )?;
    // Pending writes must not go out; dead letters are work for nobody now. Completed pushes
    // stay as counts only.
    exec_ids(tx, "DELETE FROM outbox WHERE lead_id IN ({ids}) AND state != 'done'", persons)?;
    exec_ids(
        tx,
        "UPDATE outbox SET lead_id = 'erased', remote_id = '', fields = '{}', last_error = NULL,
                error_code = NULL
         WHERE lead_id IN ({ids})",
        persons,
    )?;
    exec_ids(tx, "DELETE FROM audit WHERE lead_id IN ({ids})", persons)?;
    // Other persons' audit rows that name one of these persons (merges, possible duplicates).
    for id in persons {
        tx.prepare_cached("DELETE FROM audit WHERE detail LIKE ?1")?
            .execute([format!("%\"{id}\"%")])?;
    }
    exec_ids(tx, "DELETE FROM leads WHERE id IN ({ids})", persons)?;
    Ok(())
}

#[cfg(test)]
mod tests;
