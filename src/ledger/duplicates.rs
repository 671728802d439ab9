//! Same-system duplicates: persons with more than one open link in one system (two HubSpot
//! contacts, two Salesforce leads). They are reported by `leadsync duplicates`, counted for
//! `status` and the metrics endpoint, and, where `identity.merge_at_vendor` asks for it, merged
//! at the vendor by the merger (`crate::merger`), whose attempts are recorded here.
//!
//! The primary record of a person in a system is its oldest open link (the lowest link id;
//! links made by a fuzzy rule come after the others, see `reconcile::is_primary`),
//! the same rule the reconciler pushes by; a merge folds every other record of that system
//! and object type into it. The ledger never closes a link because it asked for a merge: the
//! vendor's merge comes back through ingest like any other (a `MergedInto` fate), and the
//! reconciler closes the link then.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{Connection, OptionalExtension, Row, params};
use serde::Serialize;

use super::{Ledger, LedgerReader, Result, audit, parse_ts, ts};
use crate::domain::SystemName;

/// One person with several open records in one system.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DuplicateGroup {
    pub lead_id: String,
    pub system: String,
    /// The oldest open link: the record leadsync writes to, and the one a merge keeps.
    pub primary: DuplicateLink,
    /// The other open links of the person in this system, oldest first.
    pub others: Vec<DuplicateLink>,
}

/// One linked record of a [`DuplicateGroup`], and how it came to be linked.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DuplicateLink {
    pub object_type: String,
    pub remote_id: String,
    /// The link's reason: `new_person`, `matched_email`, `matched_rule:<rule>`, ...
    pub reason: String,
    /// For a fuzzy match: the rule and its score, from the audit trail.
    pub rule: Option<String>,
    pub score: Option<f64>,
    /// When the link was made.
    pub linked_at: String,
    /// The vendor merge of this record into the primary, once one was asked for.
    pub merge: Option<MergeRecord>,
}

/// One row of `vendor_merges`: a record to be merged (or merged) into its person's primary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MergeRecord {
    pub id: i64,
    pub lead_id: String,
    pub system: String,
    pub object_type: String,
    pub primary_id: String,
    pub loser_id: String,
    /// `pending`: asked for, or waiting for a retry after a transient failure. `done`: the
    /// vendor merged; the link closes when the merge comes back through ingest. `failed`:
    /// refused (or retries spent); not tried again.
    pub state: String,
    pub attempts: i64,
    /// For `pending`: when it may be tried (again).
    pub next_attempt_at: String,
    pub error_code: Option<String>,
    /// What the vendor answered, without personal data (ids, status, error category).
    pub answer: Option<String>,
    pub created_at: String,
    pub updated_at: String,
}

/// A merge claimed for an attempt now: the attempt is already counted in the ledger, so a
/// crash during the call cannot make it free.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeTask {
    /// The `vendor_merges` row.
    pub id: i64,
    pub lead_id: String,
    pub system: SystemName,
    pub object_type: String,
    pub primary_id: String,
    pub loser_id: String,
    /// This attempt's number, from 1.
    pub attempt: i64,
}

/// What became of one merge attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MergeOutcome {
    /// Merged; `answer` says what survived (ids only).
    Done { answer: String },
    /// A failure that may pass (network, 5xx, rate limit): try again after a backoff.
    Retry { code: String, message: String },
    /// Refused for good (a 4xx, unsupported, credentials): recorded and reported, not retried.
    Failed { code: String, message: String },
}

/// How merge attempts are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MergeRetry {
    /// Attempts in all (the first included) before a merge that keeps failing transiently is
    /// given up on.
    pub max_attempts: i64,
    /// Wait after the first transient failure; it doubles with each one, up to `max_delay`.
    pub base_delay: Duration,
    pub max_delay: Duration,
    /// A claimed attempt that never reported back (the daemon died mid-call) may be tried
    /// again after this long.
    pub lease: Duration,
}

impl Default for MergeRetry {
    fn default() -> Self {
        MergeRetry {
            max_attempts: 5,
            base_delay: Duration::from_secs(60),
            max_delay: Duration::from_secs(3600),
            lease: Duration::from_secs(600),
        }
    }
}

impl MergeRetry {
    /// Wait after failed attempt number `attempt` (from 1).
    fn delay(&self, attempt: i64) -> Duration {
        let exp = u32::try_from(attempt.saturating_sub(1)).unwrap_or(u32::MAX).min(20);
        self.base_delay.saturating_mul(2u32.saturating_pow(exp)).min(self.max_delay)
    }
}

fn later(now: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    now + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

const MERGE_COLUMNS: &str = "id, lead_id, system, object_type, primary_id, loser_id, state,
    attempts, next_attempt_at, error_code, answer, created_at, updated_at";

fn merge_row(r: &Row<'_>) -> rusqlite::Result<MergeRecord> {
    Ok(MergeRecord {
        id: r.get(0)?,
        lead_id: r.get(1)?,
        system: r.get(2)?,
        object_type: r.get(3)?,
        primary_id: r.get(4)?,
        loser_id: r.get(5)?,
        state: r.get(6)?,
        attempts: r.get(7)?,
        next_attempt_at: r.get(8)?,
        error_code: r.get(9)?,
        answer: r.get(10)?,
        created_at: r.get(11)?,
        updated_at: r.get(12)?,
    })
}

fn merge_of(
    conn: &Connection,
    system: &str,
    object_type: &str,
    loser_id: &str,
) -> Result<Option<MergeRecord>> {
    Ok(conn
        .prepare_cached(&format!(
            "SELECT {MERGE_COLUMNS} FROM vendor_merges
             WHERE system = ?1 AND object_type = ?2 AND loser_id = ?3"
        ))?
        .query_row(params![system, object_type, loser_id], merge_row)
        .optional()?)
}

/// Every person's open links in the systems where it has more than one, grouped, primary
/// first. `systems`: only these (all when `None`). Rule, score and merge are not filled in.
fn groups(conn: &Connection, systems: Option<&[SystemName]>) -> Result<Vec<DuplicateGroup>> {
    let mut stmt = conn.prepare_cached(
        "SELECT l.lead_id, l.system, l.object_type, l.remote_id, l.reason, l.created_at
         FROM links l
         WHERE l.closed_at IS NULL AND (l.system, l.lead_id) IN (
             SELECT system, lead_id FROM links WHERE closed_at IS NULL
             GROUP BY system, lead_id HAVING count(*) > 1)
         ORDER BY l.system, l.lead_id, l.reason LIKE 'matched_rule:%', l.id",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            DuplicateLink {
                object_type: r.get(2)?,
                remote_id: r.get(3)?,
                reason: r.get(4)?,
                rule: None,
                score: None,
                linked_at: r.get(5)?,
                merge: None,
            },
        ))
    })?;
    let mut out: Vec<DuplicateGroup> = Vec::new();
    for row in rows {
        let (lead_id, system, link) = row?;
        if systems.is_some_and(|s| !s.iter().any(|n| n.as_str() == system)) {
            continue;
        }
        match out.last_mut() {
            Some(g) if g.lead_id == lead_id && g.system == system => g.others.push(link),
            _ => out.push(DuplicateGroup { lead_id, system, primary: link, others: Vec::new() }),
        }
    }
    Ok(out)
}

/// A fuzzy link's rule and score.
type RuleScore = (Option<String>, Option<f64>);

/// The rule and score of each fuzzy link of a person in a system, by `object_type/id`, from
/// the audit trail (the person and every person merged into it, since a link may have been
/// made for one that was absorbed later).
fn fuzzy_links(
    conn: &Connection,
    lead_id: &str,
    system: &str,
) -> Result<BTreeMap<String, RuleScore>> {
    let mut stmt = conn.prepare_cached(
        "WITH RECURSIVE fam(id) AS (
             SELECT ?1 UNION SELECT l.id FROM leads l JOIN fam f ON l.merged_into = f.id)
         SELECT detail FROM audit
         WHERE kind = 'link' AND system = ?2 AND lead_id IN (SELECT id FROM fam)
         ORDER BY id",
    )?;
    let rows = stmt.query_map(params![lead_id, system], |r| r.get::<_, String>(0))?;
    let mut out = BTreeMap::new();
    for detail in rows {
        // An unreadable detail only costs the report a score.
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&detail?) else { continue };
        let Some(remote) = v.get("remote").and_then(|r| r.as_str()) else { continue };
        let rule = v.get("rule").and_then(|r| r.as_str()).map(str::to_string);
        let score = v.get("score").and_then(serde_json::Value::as_f64);
        out.insert(remote.to_string(), (rule, score));
    }
    Ok(out)
}

/// Whether a fuzzy matching rule made this link (not an exact key).
pub fn is_fuzzy(l: &DuplicateLink) -> bool {
    l.reason.starts_with("matched_rule")
}

/// The full report: groups with each link's rule, score and merge.
fn report(conn: &Connection, systems: Option<&[SystemName]>) -> Result<Vec<DuplicateGroup>> {
    let mut out = groups(conn, systems)?;
    for g in &mut out {
        let needs_audit = std::iter::once(&g.primary).chain(&g.others).any(is_fuzzy);
        let fuzzy =
            if needs_audit { fuzzy_links(conn, &g.lead_id, &g.system)? } else { BTreeMap::new() };
        let system = g.system.clone();
        for l in std::iter::once(&mut g.primary).chain(g.others.iter_mut()) {
            if let Some((rule, score)) = fuzzy.get(&format!("{}/{}", l.object_type, l.remote_id)) {
                l.rule.clone_from(rule);
                l.score = *score;
            }
            l.merge = merge_of(conn, &system, &l.object_type, &l.remote_id)?;
        }
    }
    Ok(out)
}

/// Fill the duplicate and failed-merge gauges. Counting duplicates scans every open link
/// (about a second per million on a busy two-core machine), so it runs on a reader connection
/// of its own: in WAL mode the writer, and the webhook acknowledgements waiting on it, carry on
/// meanwhile.
pub(super) fn fill_gauges(path: &std::path::Path, out: &mut super::Gauges) -> Result<()> {
    let reader = LedgerReader::open(path)?;
    for (system, n) in counts_by_system(&reader.conn)? {
        out.systems.entry(system).or_default().same_system_duplicates = n;
    }
    for (system, n) in failed_merges_by_system(&reader.conn)? {
        out.systems.entry(system).or_default().vendor_merges_failed = n;
    }
    Ok(())
}

/// Persons with more than one open link, per system.
pub(super) fn counts_by_system(conn: &Connection) -> Result<BTreeMap<String, i64>> {
    super::count_by_system(
        conn,
        "SELECT system, count(*) FROM (
             SELECT system, lead_id FROM links
             WHERE closed_at IS NULL GROUP BY system, lead_id HAVING count(*) > 1)
         GROUP BY system",
    )
}

/// Vendor merges that failed for good, per system.
pub(super) fn failed_merges_by_system(conn: &Connection) -> Result<BTreeMap<String, i64>> {
    super::count_by_system(
        conn,
        "SELECT system, count(*) FROM vendor_merges WHERE state = 'failed' GROUP BY system",
    )
}

/// Vendor merges per system and state.
fn merge_counts(conn: &Connection) -> Result<BTreeMap<String, BTreeMap<String, i64>>> {
    let mut stmt = conn.prepare_cached(
        "SELECT system, state, count(*) FROM vendor_merges GROUP BY system, state",
    )?;
    let rows = stmt.query_map([], |r| {
        Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?))
    })?;
    let mut out: BTreeMap<String, BTreeMap<String, i64>> = BTreeMap::new();
    for row in rows {
        let (system, state, n) = row?;
        out.entry(system).or_default().insert(state, n);
    }
    Ok(out)
}

impl LedgerReader {
    /// Persons with more than one open link in one system, primary first, with how each record
    /// was linked and its vendor merge (if any). `system`: only that system.
    ///
    /// # Errors
    /// SQLite failures.
    pub fn duplicates(&self, system: Option<&SystemName>) -> Result<Vec<DuplicateGroup>> {
        report(&self.conn, system.map(std::slice::from_ref))
    }

    /// Persons with more than one open link, per system (systems without any are absent).
    ///
    /// # Errors
    /// SQLite failures.
    pub fn duplicate_counts(&self) -> Result<BTreeMap<String, i64>> {
        counts_by_system(&self.conn)
    }

    /// Vendor merges per system and state (`pending`, `done`, `failed`).
    ///
    /// # Errors
    /// SQLite failures.
    pub fn vendor_merge_counts(&self) -> Result<BTreeMap<String, BTreeMap<String, i64>>> {
        merge_counts(&self.conn)
    }
}

impl Ledger {
    /// [`LedgerReader::duplicates`] on the writer's connection (tests, the demo).
    ///
    /// # Errors
    /// SQLite failures.
    pub fn duplicates(&self, system: Option<&SystemName>) -> Result<Vec<DuplicateGroup>> {
        let conn = self.conn.lock().map_err(|_| super::LedgerError::Poisoned)?;
        report(&conn, system.map(std::slice::from_ref))
    }

    /// Claim up to `limit` vendor merges that are due in `systems`: each non-primary record of
    /// a person with the primary's object type, never asked for before, or pending with its
    /// retry time passed. Each claim counts an attempt and leases the row for `retry.lease`,
    /// in one transaction, so the caller asks the vendor at most once per claim. A pending
    /// merge whose attempts are spent becomes `failed` (`gave_up`) instead. Without
    /// `fuzzy_links`, a record whose link (or whose primary's link) a fuzzy rule made is not
    /// claimed: only exact-key links are merged.
    ///
    /// # Errors
    /// SQLite failures; nothing is claimed then.
    pub fn claim_merges(
        &self,
        systems: &[SystemName],
        limit: usize,
        retry: MergeRetry,
        fuzzy_links: bool,
        now: DateTime<Utc>,
    ) -> Result<Vec<MergeTask>> {
        if systems.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        // Finding the groups scans every open link: on a reader connection, so the writer is
        // held only to re-check and claim the few records found.
        let found = groups(&LedgerReader::open(&self.path)?.conn, Some(systems))?;
        self.with_tx(|tx| {
            let mut out = Vec::new();
            let until = ts(later(now, retry.lease));
            'groups: for g in found {
                let by_rule = |l: &DuplicateLink| !fuzzy_links && is_fuzzy(l);
                if by_rule(&g.primary) {
                    continue;
                }
                for o in &g.others {
                    if by_rule(o) {
                        continue;
                    }
                    if out.len() >= limit {
                        break 'groups;
                    }
                    // A Salesforce lead and a contact cannot be merged into one another.
                    if o.object_type != g.primary.object_type || !still_duplicate(tx, &g, o)? {
                        continue;
                    }
                    let existing = merge_of(tx, &g.system, &o.object_type, &o.remote_id)?;
                    let (id, attempt) = match existing {
                        None => {
                            tx.prepare_cached(
                                "INSERT INTO vendor_merges(lead_id, system, object_type,
                                     primary_id, loser_id, state, attempts, next_attempt_at,
                                     created_at, updated_at)
                                 VALUES (?1, ?2, ?3, ?4, ?5, 'pending', 1, ?6, ?7, ?7)",
                            )?
                            .execute(params![
                                g.lead_id,
                                g.system,
                                o.object_type,
                                g.primary.remote_id,
                                o.remote_id,
                                until,
                                ts(now)
                            ])?;
                            (tx.last_insert_rowid(), 1)
                        }
                        Some(m) if m.state == "pending" && parse_ts(&m.next_attempt_at)? <= now => {
                            if m.attempts >= retry.max_attempts {
                                // The last attempt never reported back: give up, do not loop.
                                let outcome = MergeOutcome::Failed {
                                    code: "gave_up".into(),
                                    message: format!("no answer after {} attempts", m.attempts),
                                };
                                finish(tx, &task_of(&m, &g.system), &outcome, retry, now)?;
                                continue;
                            }
                            tx.prepare_cached(
                                "UPDATE vendor_merges SET attempts = attempts + 1,
                                     next_attempt_at = ?2, lead_id = ?3, primary_id = ?4,
                                     updated_at = ?5
                                 WHERE id = ?1",
                            )?
                            .execute(params![
                                m.id,
                                until,
                                g.lead_id,
                                g.primary.remote_id,
                                ts(now)
                            ])?;
                            (m.id, m.attempts + 1)
                        }
                        Some(_) => continue,
                    };
                    out.push(MergeTask {
                        id,
                        lead_id: g.lead_id.clone(),
                        system: SystemName(g.system.clone()),
                        object_type: o.object_type.clone(),
                        primary_id: g.primary.remote_id.clone(),
                        loser_id: o.remote_id.clone(),
                        attempt,
                    });
                }
            }
            Ok(out)
        })
    }

    /// Record what became of a claimed merge attempt, with an audit line for the person.
    /// A transient failure is scheduled again after a backoff until `retry.max_attempts`; a
    /// refusal is final.
    ///
    /// # Errors
    /// SQLite failures; the attempt stays claimed until its lease runs out.
    pub fn finish_merge(
        &self,
        task: &MergeTask,
        outcome: &MergeOutcome,
        retry: MergeRetry,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.with_tx(|tx| finish(tx, task, outcome, retry, now))
    }

    /// Put failed vendor merges (of one system, or all) back to pending with their attempts
    /// reset, so the merger asks again at its next round (after the cause, e.g. a missing
    /// scope, was fixed). Audited per person as `vendor_merge_reset`. Returns how many.
    ///
    /// # Errors
    /// SQLite failures; nothing is reset then.
    pub fn retry_failed_merges(
        &self,
        system: Option<&SystemName>,
        now: DateTime<Utc>,
    ) -> Result<usize> {
        self.with_tx(|tx| {
            let failed: Vec<(i64, String, String, String)> = {
                let mut stmt = tx.prepare_cached(
                    "SELECT id, lead_id, system, object_type || '/' || loser_id FROM vendor_merges
                     WHERE state = 'failed' AND (?1 IS NULL OR system = ?1) ORDER BY id",
                )?;
                stmt.query_map([system.map(SystemName::as_str)], |r| {
                    Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })?
                .collect::<std::result::Result<_, _>>()?
            };
            for (id, lead_id, system, merged) in &failed {
                tx.prepare_cached(
                    "UPDATE vendor_merges SET state = 'pending', attempts = 0, error_code = NULL,
                         answer = NULL, next_attempt_at = ?2, updated_at = ?2
                     WHERE id = ?1",
                )?
                .execute(params![id, ts(now)])?;
                let detail = serde_json::json!({ "merged": merged });
                audit(tx, now, Some(lead_id), Some(system), "vendor_merge_reset", &detail)?;
            }
            Ok(failed.len())
        })
    }

    /// Every vendor merge row, oldest first (tests, the demo).
    ///
    /// # Errors
    /// SQLite failures.
    pub fn vendor_merges(&self) -> Result<Vec<MergeRecord>> {
        let conn = self.conn.lock().map_err(|_| super::LedgerError::Poisoned)?;
        let mut stmt =
            conn.prepare_cached(&format!("SELECT {MERGE_COLUMNS} FROM vendor_merges ORDER BY id"))?;
        let rows = stmt.query_map([], merge_row)?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }
}

/// Whether `other` is still an open link of the group's person and the group's primary is
/// still that person's oldest open link in the system (both may have changed since the groups
/// were read outside the transaction).
fn still_duplicate(
    tx: &rusqlite::Transaction<'_>,
    g: &DuplicateGroup,
    other: &DuplicateLink,
) -> Result<bool> {
    let primary: Option<(String, String)> = tx
        .prepare_cached(
            "SELECT object_type, remote_id FROM links
             WHERE lead_id = ?1 AND system = ?2 AND closed_at IS NULL
             ORDER BY reason LIKE 'matched_rule:%', id LIMIT 1",
        )?
        .query_row(params![g.lead_id, g.system], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    if primary != Some((g.primary.object_type.clone(), g.primary.remote_id.clone())) {
        return Ok(false);
    }
    Ok(tx
        .prepare_cached(
            "SELECT EXISTS(SELECT 1 FROM links WHERE system = ?1 AND object_type = ?2
             AND remote_id = ?3 AND lead_id = ?4 AND closed_at IS NULL)",
        )?
        .query_row(params![g.system, other.object_type, other.remote_id, g.lead_id], |r| {
            r.get(0)
        })?)
}

fn task_of(m: &MergeRecord, system: &str) -> MergeTask {
    MergeTask {
        id: m.id,
        lead_id: m.lead_id.clone(),
        system: SystemName(system.to_string()),
        object_type: m.object_type.clone(),
        primary_id: m.primary_id.clone(),
        loser_id: m.loser_id.clone(),
        attempt: m.attempts,
    }
}

fn finish(
    tx: &rusqlite::Transaction<'_>,
    task: &MergeTask,
    outcome: &MergeOutcome,
    retry: MergeRetry,
    now: DateTime<Utc>,
) -> Result<()> {
    let (state, code, answer, next) = match outcome {
        MergeOutcome::Done { answer } => ("done", None, answer.clone(), now),
        MergeOutcome::Retry { code, message } if task.attempt < retry.max_attempts => {
            ("pending", Some(code.as_str()), message.clone(), later(now, retry.delay(task.attempt)))
        }
        MergeOutcome::Retry { code, message } => (
            "failed",
            Some(code.as_str()),
            format!("gave up after {} attempts: {message}", task.attempt),
            now,
        ),
        MergeOutcome::Failed { code, message } => {
            ("failed", Some(code.as_str()), message.clone(), now)
        }
    };
    tx.prepare_cached(
        "UPDATE vendor_merges SET state = ?2, error_code = ?3, answer = ?4, next_attempt_at = ?5,
             updated_at = ?6
         WHERE id = ?1",
    )?
    .execute(params![task.id, state, code, answer, ts(next), ts(now)])?;
    audit(
        tx,
        now,
        Some(&task.lead_id),
        Some(task.system.as_str()),
        "vendor_merge",
        &serde_json::json!({
            "primary": format!("{}/{}", task.object_type, task.primary_id),
            "merged": format!("{}/{}", task.object_type, task.loser_id),
            "attempt": task.attempt,
            "state": state,
            "error_code": code,
        }),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests;
