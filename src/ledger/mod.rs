//! The ledger: leads, links, what each remote record holds, inbox, outbox, cursors and audit,
//! in one SQLite file.
//!
//! **Architecture Invariant:** only this module runs SQL.
//! **Architecture Invariant:** a poll cursor commits in the same transaction as the changes it
//! produced; an outbox row is done only after the vendor accepted that record.
//!
//! One writer: the `Ledger` owns one connection behind a mutex, and callers run its methods on
//! a blocking thread. Readers (`leadsync status`) open their own read-only connection.

pub mod closed_loop;
mod duplicates;
mod erase;
mod figures;
pub mod funnel;
mod identity;
mod lifecycle;
mod notices;
mod review;
pub mod schema;
mod seed;
mod sla;
pub mod sla_report;
mod trace;
mod vendor_writes;

pub use duplicates::{
    DuplicateGroup, DuplicateLink, MergeOutcome, MergeRecord, MergeRetry, MergeTask, is_fuzzy,
};
pub use erase::{Erasure, erasure_email};
pub use figures::{MatchFigures, SeededDuplicate, SweepWritten};
pub use identity::{CandidateStats, candidate_stats};
pub use lifecycle::{NamedOutcome, PlannedMove, ReevalBatch, StagePlan, Sweep, ToWrite};
pub use notices::StoredNotice;
pub use review::{Review, ReviewError, Verdict as ReviewVerdict};
pub use seed::SeedPerson;
pub use sla::{DISQUALIFY_REFUSED, DueClock, Fired, StoredClock};
pub use trace::{Trace, TraceEvent, TraceField, TraceLink};

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use rusqlite::{Connection, OpenFlags, OptionalExtension, Transaction, params};

use crate::connectors::Cursor;
use crate::domain::{
    Change, Field, Fields, PushOp, PushOutcome, PushRecord, RecordFate, RemoteId, SystemName,
};
use crate::reconcile::{self, PushIntent, Rules};
use identity::{apply_decision, insert_link, load_context, replan};

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("ledger schema version {found} is newer than this leadsync supports ({supported})")]
    TooNew { found: i64, supported: i64 },
    #[error("corrupt ledger row: {0}")]
    Corrupt(String),
    #[error("ledger lock poisoned")]
    Poisoned,
}

impl LedgerError {
    /// Whether the ledger could not be written for a reason that may pass (disk full, locked).
    pub fn is_transient(&self) -> bool {
        match self {
            LedgerError::Sqlite(rusqlite::Error::SqliteFailure(e, _)) => matches!(
                e.code,
                rusqlite::ErrorCode::DatabaseBusy
                    | rusqlite::ErrorCode::DatabaseLocked
                    | rusqlite::ErrorCode::DiskFull
                    | rusqlite::ErrorCode::SystemIoFailure
            ),
            _ => false,
        }
    }
}

type Result<T> = std::result::Result<T, LedgerError>;

/// Time as stored: fixed-width RFC 3339 so that text order is time order.
pub fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

fn parse_ts(s: &str) -> Result<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .map(|d| d.with_timezone(&Utc))
        .map_err(|e| LedgerError::Corrupt(format!("bad timestamp {s:?}: {e}")))
}

fn to_json<T: serde::Serialize>(v: &T) -> Result<String> {
    serde_json::to_string(v).map_err(|e| LedgerError::Corrupt(format!("encode: {e}")))
}

fn from_json<T: serde::de::DeserializeOwned>(s: &str) -> Result<T> {
    serde_json::from_str(s).map_err(|e| LedgerError::Corrupt(format!("decode: {e}")))
}

/// FNV-1a, 64 bit: a stable content key for inbox de-duplication (std's hasher may change
/// between Rust releases, which would break de-duplication across upgrades).
fn fnv64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// What one reconcile pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReconcileStats {
    pub processed: usize,
    pub new_leads: usize,
    pub new_links: usize,
    pub pushes_planned: usize,
    /// Changes older than the state already known of their record, skipped.
    pub stale: usize,
    /// Changes about nobody: a record merged away or converted that no person links, or a
    /// late state of a record whose link is closed.
    pub unrelated: usize,
    /// Records to read again (a notice each, for the fetch stage): their state was read while
    /// a push to them was in flight and showed another value of a pushed field.
    pub rereads: usize,
}

/// One outbox row handed to a pusher, with the version it had when read.
#[derive(Debug, Clone)]
pub struct DuePush {
    pub record: PushRecord,
    pub version: i64,
    pub attempts: i64,
    /// When the row was first planned (a create keeps this while its fields are re-planned).
    pub planned_at: DateTime<Utc>,
    /// For a create the pusher sends: when the read of the target system that cleared it
    /// started (nothing that read found was this person). Audited, so that a duplicate made
    /// at the vendor after that moment is told from one leadsync should have seen.
    pub cleared_by_read: Option<DateTime<Utc>>,
    /// When the pusher sent it (wall clock), audited with the answer: a human's edit of a
    /// pushed field made while it was in flight may have been overwritten by it (the batch
    /// endpoints take no precondition: Salesforce's `If-Unmodified-Since` is for one-record
    /// PATCHes only, HubSpot's batch update has none), which the trail then shows.
    pub sent_at: Option<DateTime<Utc>>,
}

/// Per-system operational state for `leadsync status`.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct SystemStatus {
    pub system: String,
    pub kind: String,
    pub role: String,
    pub cursor: Option<String>,
    pub last_poll_ok_at: Option<String>,
    pub inbox_pending: i64,
    pub outbox_pending: i64,
    pub dead: i64,
    pub linked_records: i64,
    /// Webhook notices acknowledged and not turned into changes yet.
    pub notices_pending: i64,
    /// Webhook notices received in all (kept for seven days after processing); the engine's
    /// own re-reads, queued as notices, are not counted (`notices_pending` includes them).
    pub notices_received: i64,
    pub last_error: Option<String>,
    pub last_error_at: Option<String>,
}

/// The ledger's view of one person, for verification and `trace`.
#[derive(Debug, Clone, PartialEq)]
pub struct LeadSnapshot {
    pub id: String,
    pub fields: Fields,
    /// Open links, oldest first and fuzzy-matched ones last (per system, the first is the
    /// primary record).
    pub links: Vec<(String, RemoteId)>,
    /// Systems where one of the person's records was deleted (not created there again unless
    /// `identity.recreate_deleted`).
    pub tombstoned: BTreeSet<String>,
    /// Systems where the person is not created while a duplicate review is open (the other
    /// person has a record there; `identity.review_holds_creates`).
    pub review_held: BTreeSet<String>,
}

/// How pushes are retried per record.
#[derive(Debug, Clone, Copy)]
pub struct PushRetry {
    pub max_attempts: i64,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for PushRetry {
    fn default() -> Self {
        PushRetry {
            max_attempts: 10,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(600),
        }
    }
}

pub struct Ledger {
    conn: Mutex<Connection>,
    path: PathBuf,
    /// Whether loaded persons carry their review holds (see [`Ledger::set_review_holds_creates`]).
    review_holds: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for Ledger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ledger").field("path", &self.path).finish()
    }
}

fn set_pragmas(conn: &Connection) -> Result<()> {
    // WAL lets readers work beside the one writer; FULL makes every commit that acknowledges
    // something to the outside durable across power loss (RELIABILITY.md §2).
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    // A 64 MiB page cache keeps the working set of a large initial sync in memory.
    conn.pragma_update(None, "cache_size", -65_536)?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    // Checkpoint the WAL every 16,384 pages (64 MiB) instead of SQLite's 1,000: the
    // checkpoint runs inside the commit that crosses the mark, on the one writer, and copies
    // every page changed since the last one into the database file (and syncs it). The same
    // hot pages (inbox, outbox, index interiors) are changed by nearly every transaction, so
    // a longer interval copies each of them once for many commits: 10% of a fuzzy backfill's
    // CPU was checkpointing (BENCHMARKS.md, session 7). Durability is the WAL's (each
    // commit is synced there), not the checkpoint's.
    conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)?;
    // Plans fixed at prepare time. Without this, the bundled SQLite (STAT4 built in) marked
    // some statements to be re-planned when a parameter is bound again, and cached
    // statements such as `load_lead`'s link query were re-prepared on every run: about
    // half the CPU of a re-evaluation sweep (BENCHMARKS.md). Our queries do not need
    // value-dependent plans.
    conn.set_db_config(rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)?;
    conn.busy_timeout(Duration::from_secs(5))?;
    Ok(())
}

/// See `set_pragmas`.
const WAL_AUTOCHECKPOINT_PAGES: i64 = 16_384;

/// Prepared statements kept per writer connection: more than the distinct statements of the
/// hot paths together, so that none is evicted and prepared again.
const STATEMENT_CACHE: usize = 256;

impl Ledger {
    /// Open (creating if needed) and migrate the ledger at `path`.
    ///
    /// # Errors
    /// The file cannot be opened or written, or its schema is newer than this build.
    pub fn open(path: &Path) -> Result<Ledger> {
        let mut conn = Connection::open(path)?;
        set_pragmas(&conn)?;
        // One reconcile or push-result transaction runs a few dozen distinct statements per
        // record (link, identity, outbox, audit, lifecycle, SLA); rusqlite's default cache of
        // 16 evicted them in turn, so every call parsed and planned its SQL again (14% of the
        // fuzzy backfill's CPU in a profile).
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        schema::migrate(&mut conn)?;
        Ok(Ledger {
            conn: Mutex::new(conn),
            path: path.to_path_buf(),
            review_holds: std::sync::atomic::AtomicBool::new(true),
        })
    }

    /// Whether `identity.review_holds_creates` is on (default: as if it were). Off, the persons
    /// this ledger's transactions load leave their review holds unread: only the plan of a
    /// create under that setting reads them, and the query ran for every person loaded (a
    /// backfill loads several per change).
    pub fn set_review_holds_creates(&self, on: bool) {
        self.review_holds.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Make the writer connection refuse writes, as a read-only or failing disk would; for
    /// readiness tests, which run as root, where file permissions do not stop writes.
    #[cfg(test)]
    pub(crate) fn set_query_only_for_test(&self, on: bool) {
        let conn = self.conn.lock().expect("test ledger lock");
        conn.pragma_update(None, "query_only", on).expect("set query_only");
    }

    fn with_tx<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        let mut conn = self.conn.lock().map_err(|_| LedgerError::Poisoned)?;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let _holds = identity::read_review_holds(
            self.review_holds.load(std::sync::atomic::Ordering::Relaxed),
        );
        let out = f(&tx)?;
        tx.commit()?;
        Ok(out)
    }

    /// Record the configured systems (name, kind, role).
    ///
    /// # Errors
    /// SQLite failures.
    pub fn register_systems(&self, systems: &[(String, String, String)]) -> Result<()> {
        self.with_tx(|tx| {
            for (name, kind, role) in systems {
                tx.execute(
                    "INSERT INTO systems(name, kind, role) VALUES (?1, ?2, ?3)
                     ON CONFLICT(name) DO UPDATE SET kind = excluded.kind, role = excluded.role",
                    params![name, kind, role],
                )?;
            }
            Ok(())
        })
    }

    /// The poll cursor of a system.
    ///
    /// # Errors
    /// SQLite failures.
    pub fn cursor(&self, system: &SystemName) -> Result<Cursor> {
        let conn = self.conn.lock().map_err(|_| LedgerError::Poisoned)?;
        let v: Option<Option<String>> = conn
            .query_row("SELECT value FROM cursors WHERE system = ?1", [system.as_str()], |r| {
                r.get(0)
            })
            .optional()?;
        Ok(Cursor(v.flatten()))
    }

    /// Commit observed changes to the inbox and, in the same transaction, the cursor they
    /// were read up to. Changes already in the inbox (same record, time and content) are
    /// stored once. Returns how many were new.
    ///
    /// # Errors
    /// SQLite failures; nothing is committed then.
    pub fn ingest(
        &self,
        system: &SystemName,
        source: &str,
        changes: &[Change],
        cursor: Option<&Cursor>,
        now: DateTime<Utc>,
    ) -> Result<usize> {
        self.with_tx(|tx| {
            let inserted = insert_changes(tx, system, source, changes, now)?;
            if let Some(Cursor(Some(value))) = cursor {
                tx.execute(
                    "INSERT INTO cursors(system, value, updated_at) VALUES (?1, ?2, ?3)
                     ON CONFLICT(system) DO UPDATE SET value = excluded.value,
                                                       updated_at = excluded.updated_at",
                    params![system.as_str(), value, ts(now)],
                )?;
            }
            Ok(inserted)
        })
    }

    /// Reconcile up to `max` pending inbox changes in one transaction: match, resolve fields,
    /// link, and plan pushes. `mint_id` makes ledger ids for new persons.
    ///
    /// # Errors
    /// SQLite failures or a corrupt row; nothing is committed then.
    pub fn reconcile_pending(
        &self,
        rules: &Rules,
        max: usize,
        now: DateTime<Utc>,
        mint_id: &mut dyn FnMut() -> String,
    ) -> Result<ReconcileStats> {
        self.reconcile_pending_within(rules, max, None, now, mint_id)
    }

    /// [`Ledger::reconcile_pending`], stopping early once `budget` has passed (the rest stays
    /// pending for the next call). The ledger has one writer: a long reconcile transaction
    /// makes every webhook acknowledgement wait for it, so the engine bounds it in time.
    ///
    /// # Errors
    /// SQLite failures or a corrupt row; nothing is committed then.
    pub fn reconcile_pending_within(
        &self,
        rules: &Rules,
        max: usize,
        budget: Option<Duration>,
        now: DateTime<Utc>,
        mint_id: &mut dyn FnMut() -> String,
    ) -> Result<ReconcileStats> {
        let started = std::time::Instant::now();
        self.with_tx(|tx| {
            let mut stats = ReconcileStats::default();
            let pending: Vec<(i64, String, String)> = {
                let mut stmt = tx.prepare_cached(
                    "SELECT id, system, change FROM inbox WHERE processed_at IS NULL
                     ORDER BY id LIMIT ?1",
                )?;
                stmt.query_map([max as i64], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                    .collect::<std::result::Result<_, _>>()?
            };
            for (inbox_id, system, change) in pending {
                if budget.is_some_and(|b| stats.processed > 0 && started.elapsed() >= b) {
                    break;
                }
                let system = SystemName(system);
                let change: Change = from_json(&change)?;
                if is_older_than_known(tx, &system, &change)? {
                    // Webhooks arrive out of order and are redelivered after newer state was
                    // read: a snapshot older than the one already known says nothing new.
                    stats.stale += 1;
                } else if rules.system(&system).is_some() {
                    let mut ctx = load_context(tx, &system, &change, rules)?;
                    if rules.contract.is_some() {
                        lifecycle::fill_context(tx, &mut ctx)?;
                    }
                    let new_id = mint_id();
                    match reconcile::reconcile(&ctx, &system, &change, rules, &new_id, now) {
                        Some(decision) => {
                            stats.new_leads += usize::from(decision.is_new_lead);
                            stats.new_links += usize::from(decision.new_link.is_some());
                            stats.pushes_planned += decision.pushes.len();
                            sla::on_decision(tx, rules, &system, &change, &decision, now)?;
                            apply_decision(tx, &system, &change, &decision, now)?;
                            if rules.review_holds_creates {
                                identity::hold_reviewed_creates(tx, &decision, rules, now)?;
                            }
                            let governed = decision.lifecycle.as_ref();
                            lifecycle::store(tx, &decision.lead_id, governed, rules, now)?;
                            if reconcile::reread_needed(&ctx, &system, &change) {
                                stats.rereads += queue_reread(tx, &system, &change.remote, now)?;
                            }
                            // A record linked unread gets no writes until it is read
                            // (`reconcile::plan_pushes`): read it now, not at the next poll.
                            if let Some((other, _)) = &decision.link_other {
                                stats.rereads += queue_reread(tx, &system, other, now)?;
                            }
                            // An edit of a linked record that changed who the person looks
                            // like (not a first sight: a backfill does not pay for this).
                            if decision.match_keys.is_some()
                                && !decision.is_new_lead
                                && decision.new_link.is_none()
                            {
                                identity::rescore_duplicates(tx, &decision.lead_id, rules, now)?;
                            }
                        }
                        None => {
                            identity::note_unmatched_delete(
                                tx, &system, &ctx, &change, rules, now,
                            )?;
                            identity::note_gone_unlinked(tx, &system, &change)?;
                            stats.unrelated += 1;
                        }
                    }
                } else {
                    tracing::warn!(system = %system, inbox_id, "change from an unconfigured system skipped");
                }
                tx.prepare_cached("UPDATE inbox SET processed_at = ?1 WHERE id = ?2")?
                    .execute(params![ts(now), inbox_id])?;
                stats.processed += 1;
            }
            Ok(stats)
        })
    }

    /// Pending pushes for a system that are due, oldest first.
    ///
    /// # Errors
    /// SQLite failures or a corrupt row.
    pub fn due_pushes(
        &self,
        system: &SystemName,
        limit: usize,
        now: DateTime<Utc>,
    ) -> Result<Vec<DuePush>> {
        let conn = self.conn.lock().map_err(|_| LedgerError::Poisoned)?;
        let mut stmt = conn.prepare_cached(
            "SELECT o.id, o.lead_id, o.object_type, o.remote_id, o.fields, o.version, o.attempts,
                    l.fields, o.created_at, json_extract(r.state, '$.email'), o.stage_dates,
                    r.state IS NOT NULL, o.vendor_writes
             FROM outbox o INDEXED BY outbox_pending_id JOIN leads l ON l.id = o.lead_id
             LEFT JOIN remote_records r ON r.system = o.system
                AND r.object_type = o.object_type AND r.remote_id = o.remote_id
             WHERE o.system = ?1 AND o.state = 'pending' AND o.next_attempt_at <= ?2
             ORDER BY o.id LIMIT ?3",
        )?;
        let rows = stmt.query_map(params![system.as_str(), ts(now), limit as i64], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, i64>(6)?,
                r.get::<_, String>(7)?,
                r.get::<_, String>(8)?,
                r.get::<_, Option<String>>(9)?,
                r.get::<_, Option<String>>(10)?,
                r.get::<_, bool>(11)?,
                r.get::<_, Option<String>>(12)?,
            ))
        })?;
        let mut out = Vec::new();
        for row in rows {
            let (
                id,
                lead_id,
                object_type,
                remote_id,
                fields,
                version,
                attempts,
                person,
                planned,
                record_email,
                dates,
                record_read,
                writes,
            ) = row?;
            let writes = vendor_writes::VendorWrites::from_column(writes.as_deref())?;
            let mut person: Fields = from_json(&person)?;
            let op = if remote_id.is_empty() {
                PushOp::Create { object_type }
            } else {
                // Consent is per address at some vendors (HubSpot): an opt-out goes to the
                // address this record holds, which for a second record of the person (or
                // one whose email is held or not synced) is not the person's.
                // A record read without an address holds none: the person's would be another
                // contact's (an opt-out sent there changes nothing on this record), so none
                // is given and the connector says so. Unread, the person's is the best guess.
                match record_email.filter(|e| !e.trim().is_empty()) {
                    Some(e) => {
                        person.insert(Field::Email, e);
                    }
                    None if record_read => {
                        person.remove(&Field::Email);
                    }
                    None => {}
                }
                PushOp::Update { remote: RemoteId { object_type, id: remote_id } }
            };
            out.push(DuePush {
                record: PushRecord {
                    outbox_id: id,
                    ledger_key: lead_id,
                    op,
                    fields: from_json(&fields)?,
                    person,
                    stage_dates: dates.as_deref().map(from_json).transpose()?.unwrap_or_default(),
                    stage_reason: writes.stage_reason,
                    owner: writes.owner,
                },
                version,
                attempts,
                planned_at: parse_ts(&planned)?,
                cleared_by_read: None,
                sent_at: None,
            });
        }
        Ok(out)
    }

    /// Record what the vendor said about each pushed record, in one transaction. Accepted
    /// records update what leadsync knows the record holds, and the person's remaining
    /// pushes are planned again against that knowledge. `ended_at` is when the vendor's answer
    /// came (leadsync's clock): a read of a pushed record that started before then may show a
    /// state from before the push landed.
    ///
    /// # Errors
    /// SQLite failures; nothing is committed then and the same results may be recorded again.
    #[allow(
        clippy::too_many_arguments,
        reason = "one call per push round; each argument is distinct"
    )]
    pub fn record_push_results(
        &self,
        system: &SystemName,
        sent: &[DuePush],
        outcomes: &[PushOutcome],
        rules: &Rules,
        retry: PushRetry,
        ended_at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<PushTally> {
        self.with_tx(|tx| {
            let mut tally = PushTally::default();
            let by_id: BTreeMap<i64, &PushOutcome> =
                outcomes.iter().map(|o| (o.outbox_id(), o)).collect();
            let gate = erase::Gate::load(tx)?;
            for due in sent {
                let rec = &due.record;
                let lead_id = &rec.ledger_key;
                // The person was erased while this push was in flight: nothing to record.
                if gate.erased_lead(tx, lead_id)? {
                    continue;
                }
                match by_id.get(&rec.outbox_id) {
                    Some(PushOutcome::Accepted { remote, created, .. }) => {
                        let is_create = matches!(rec.op, PushOp::Create { .. });
                        // A push that went out with the latest plan leaves nothing to plan: the
                        // record now holds exactly what the person needs there.
                        let replan_needed;
                        if is_create {
                            tally.created += 1;
                            // Stage dates queued onto the create while it was in flight did
                            // not go out with it: they move to the new record (read first:
                            // linking the record drops the pending create).
                            let queued: Option<String> = tx
                                .prepare_cached("SELECT stage_dates FROM outbox WHERE id = ?1")?
                                .query_row([rec.outbox_id], |r| r.get(0))
                                .optional()?
                                .flatten();
                            let mut late: BTreeMap<String, DateTime<Utc>> =
                                queued.as_deref().map(from_json).transpose()?.unwrap_or_default();
                            late.retain(|stage, at| rec.stage_dates.get(stage) != Some(at));
                            // What went out must not be moved to the record again by the link.
                            tx.prepare_cached(
                                "UPDATE outbox SET stage_dates = NULL WHERE id = ?1",
                            )?
                            .execute([rec.outbox_id])?;
                            let late_writes = vendor_writes::take_late(tx, rec)?;
                            let owner: Option<String> = tx
                                .prepare_cached(
                                    "SELECT lead_id FROM links WHERE system = ?1
                                     AND object_type = ?2 AND remote_id = ?3",
                                )?
                                .query_row(
                                    params![system.as_str(), remote.object_type, remote.id],
                                    |r| r.get(0),
                                )
                                .optional()?;
                            match owner {
                                Some(other) if &other != lead_id => {
                                    // The vendor matched an existing record that another
                                    // person owns: never merge silently.
                                    mark_dead(
                                        tx,
                                        rec.outbox_id,
                                        "linked_to_other_person",
                                        "vendor matched a record linked to another person",
                                        now,
                                    )?;
                                    audit(
                                        tx,
                                        now,
                                        Some(lead_id),
                                        Some(system.as_str()),
                                        "push_conflict",
                                        &serde_json::json!({"remote": remote.to_string()}),
                                    )?;
                                    tally.dead += 1;
                                    continue;
                                }
                                Some(_) => {}
                                None => {
                                    insert_link(
                                        tx,
                                        lead_id,
                                        system,
                                        remote,
                                        "created_by_leadsync",
                                        now,
                                    )?;
                                }
                            }
                            // This person's pending create row (with newer fields, perhaps)
                            // is done: the record exists now. A row that took its id is not.
                            replan_needed = !still_the_row_sent(tx, system, due)?;
                            tx.prepare_cached(
                                "DELETE FROM outbox WHERE id = ?1 AND lead_id = ?2
                                 AND system = ?3 AND remote_id = '' AND state = 'pending'",
                            )?
                            .execute(params![
                                rec.outbox_id,
                                lead_id,
                                system.as_str()
                            ])?;
                            if !late.is_empty() {
                                lifecycle::add_dates(
                                    tx,
                                    lead_id,
                                    system.as_str(),
                                    &remote.object_type,
                                    &remote.id,
                                    &late,
                                    now,
                                )?;
                            }
                            vendor_writes::add_writes(
                                tx,
                                lead_id,
                                system.as_str(),
                                &remote.object_type,
                                &remote.id,
                                &late_writes,
                                now,
                            )?;
                        } else {
                            tally.updated += 1;
                            let done = still_the_row_sent(tx, system, due)?
                                && tx
                                    .prepare_cached(
                                        "UPDATE outbox SET state = 'done', updated_at = ?2
                                         WHERE id = ?1",
                                    )?
                                    .execute(params![rec.outbox_id, ts(now)])?
                                    == 1;
                            // The person changed while this was in flight: the row holds newer
                            // fields (or is another row by now), to be planned again against
                            // what the record now holds.
                            replan_needed = !done;
                        }
                        // An opt-out some vendors record per address (HubSpot) went to the
                        // email the person had when this push was read. If that email changed
                        // while it was in flight, the record's address now may not be opted
                        // out: it is not noted as known, and is planned again.
                        let mut noted = rec.fields.clone();
                        let opt_out_moved = email_moved_under_opt_out(tx, system, lead_id, rec)?;
                        if opt_out_moved {
                            noted.remove(&Field::EmailOptOut);
                        }
                        let replan_needed = replan_needed || opt_out_moved;
                        note_pushed(tx, system, remote, &noted, ended_at)?;
                        let mut detail = serde_json::json!({
                            "remote": remote.to_string(),
                            "created": created,
                            "fields": rec.fields.keys().map(|f| f.as_str()).collect::<Vec<_>>(),
                        });
                        if let Some(at) = due.cleared_by_read {
                            detail["cleared_by_read"] = ts(at).into();
                        }
                        if let Some(at) = due.sent_at {
                            detail["sent_at"] = ts(at).into();
                        }
                        audit(tx, now, Some(lead_id), Some(system.as_str()), "pushed", &detail)?;
                        if replan_needed {
                            replan(tx, lead_id, rules, now)?;
                        }
                    }
                    Some(PushOutcome::Rejected { code, message, .. })
                        if vendor_writes::owner_rode_along(rec) =>
                    {
                        // An owner reassignment rode on a row with other writes: the refusal
                        // may be the owner's (an id the org does not know), and dead-lettering
                        // would take the person's fields with it. The rest goes again without
                        // the owner; a refusal of its own then dead-letters it as usual.
                        vendor_writes::drop_owner(tx, rec, code, message, now)?;
                        audit(
                            tx,
                            now,
                            Some(lead_id),
                            Some(system.as_str()),
                            "owner_dropped",
                            &serde_json::json!({"code": code, "owner": rec.owner}),
                        )?;
                        tally.retried += 1;
                    }
                    // The row sent is gone or replanned (the record's link closed, a read
                    // showed it holds the fields already) and its id may be another row's by
                    // now, even another system's (convergence seed 394: a refused write to a
                    // converted lead dead-lettered the HubSpot row that took its id). What the
                    // vendor said is kept in the trail; the row there now goes out on its own.
                    Some(PushOutcome::Rejected { code, .. })
                        if !still_the_row_sent(tx, system, due)? =>
                    {
                        audit(
                            tx,
                            now,
                            Some(lead_id),
                            Some(system.as_str()),
                            "push_rejected",
                            &serde_json::json!({"code": code, "superseded": true}),
                        )?;
                    }
                    Some(PushOutcome::Retry { .. }) | None
                        if !still_the_row_sent(tx, system, due)? =>
                    {
                        tally.retried += 1;
                    }
                    Some(PushOutcome::Rejected { code, message, .. }) => {
                        mark_dead(tx, rec.outbox_id, code, message, now)?;
                        audit(
                            tx,
                            now,
                            Some(lead_id),
                            Some(system.as_str()),
                            "push_rejected",
                            &serde_json::json!({"code": code}),
                        )?;
                        tally.dead += 1;
                        if code == "CONFLICT"
                            && let PushOp::Update { remote } = &rec.op
                            && rec.fields.contains_key(&Field::Email)
                        {
                            identity::park_taken_email(
                                tx, system, remote, rec, message, rules, now,
                            )?;
                        }
                    }
                    Some(PushOutcome::Retry { code, .. }) => {
                        tally.retried += 1;
                        defer_one(tx, rec.outbox_id, due.attempts, code, retry, now)?;
                    }
                    None => {
                        tally.retried += 1;
                        defer_one(tx, rec.outbox_id, due.attempts, "no_outcome", retry, now)?;
                    }
                }
            }
            Ok(tally)
        })
    }

    /// A whole push call failed: try these records again later (or dead-letter them when
    /// `dead` is set or their attempts are spent).
    ///
    /// # Errors
    /// SQLite failures.
    pub fn defer_pushes(
        &self,
        sent: &[DuePush],
        code: &str,
        message: &str,
        dead: bool,
        retry: PushRetry,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.with_tx(|tx| {
            for due in sent {
                // Only the row sent: its id may be another row's by now (see
                // `record_push_results`).
                if !row_sent_unchanged(tx, None, due)? {
                    continue;
                }
                if dead {
                    mark_dead(tx, due.record.outbox_id, code, message, now)?;
                } else {
                    defer_one(tx, due.record.outbox_id, due.attempts, code, retry, now)?;
                }
            }
            Ok(())
        })
    }

    /// Note a successful poll of a system.
    ///
    /// # Errors
    /// SQLite failures.
    pub fn record_poll_ok(&self, system: &SystemName, now: DateTime<Utc>) -> Result<()> {
        self.with_tx(|tx| {
            tx.execute(
                "INSERT INTO system_status(system, last_poll_ok_at) VALUES (?1, ?2)
                 ON CONFLICT(system) DO UPDATE SET last_poll_ok_at = excluded.last_poll_ok_at",
                params![system.as_str(), ts(now)],
            )?;
            Ok(())
        })
    }

    /// Note the latest error of a system (a message without PII).
    ///
    /// # Errors
    /// SQLite failures.
    pub fn record_error(&self, system: &SystemName, error: &str, now: DateTime<Utc>) -> Result<()> {
        self.with_tx(|tx| {
            tx.execute(
                "INSERT INTO system_status(system, last_error, last_error_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT(system) DO UPDATE SET last_error = excluded.last_error,
                                                   last_error_at = excluded.last_error_at",
                params![system.as_str(), error, ts(now)],
            )?;
            Ok(())
        })
    }

    /// Work left: (unprocessed inbox rows, pending outbox rows).
    ///
    /// # Errors
    /// SQLite failures.
    pub fn backlog(&self) -> Result<(i64, i64)> {
        let conn = self.conn.lock().map_err(|_| LedgerError::Poisoned)?;
        let inbox =
            conn.query_row("SELECT count(*) FROM inbox WHERE processed_at IS NULL", [], |r| {
                r.get(0)
            })?;
        let outbox =
            conn.query_row("SELECT count(*) FROM outbox WHERE state = 'pending'", [], |r| {
                r.get(0)
            })?;
        Ok((inbox, outbox))
    }

    /// Whether any inbox change waits to be reconciled (cheap: stops at the first).
    ///
    /// # Errors
    /// SQLite failures.
    pub fn inbox_has_pending(&self) -> Result<bool> {
        let conn = self.conn.lock().map_err(|_| LedgerError::Poisoned)?;
        Ok(conn.query_row(
            "SELECT EXISTS(SELECT 1 FROM inbox WHERE processed_at IS NULL)",
            [],
            |r| r.get(0),
        )?)
    }

    /// The earliest time a pending push of this system becomes due.
    ///
    /// # Errors
    /// SQLite failures.
    pub fn next_push_due(&self, system: &SystemName) -> Result<Option<DateTime<Utc>>> {
        let conn = self.conn.lock().map_err(|_| LedgerError::Poisoned)?;
        let v: Option<String> = conn.query_row(
            "SELECT min(next_attempt_at) FROM outbox WHERE system = ?1 AND state = 'pending'",
            [system.as_str()],
            |r| r.get(0),
        )?;
        v.as_deref().map(parse_ts).transpose()
    }

    /// Every person with their links, for verification.
    ///
    /// # Errors
    /// SQLite failures or a corrupt row.
    pub fn snapshot(&self) -> Result<Vec<LeadSnapshot>> {
        let conn = self.conn.lock().map_err(|_| LedgerError::Poisoned)?;
        snapshot(&conn)
    }

    /// Counters for summaries.
    ///
    /// # Errors
    /// SQLite failures.
    pub fn totals(&self) -> Result<Totals> {
        let conn = self.conn.lock().map_err(|_| LedgerError::Poisoned)?;
        totals(&conn)
    }

    /// Prove the ledger still takes commits: rewrite the one heartbeat row in a write
    /// transaction. This takes the write lock, appends to the WAL and syncs, so a read-only,
    /// locked or full database fails here rather than in the middle of a sync cycle.
    ///
    /// # Errors
    /// The write failed (read-only, locked past the busy timeout, disk full, I/O error), or the
    /// heartbeat row is missing.
    pub fn writable_check(&self) -> Result<()> {
        self.with_tx(|tx| {
            let n =
                tx.execute("UPDATE heartbeat SET checked_at = ?1 WHERE id = 1", [ts(Utc::now())])?;
            if n == 1 { Ok(()) } else { Err(LedgerError::Corrupt("heartbeat row missing".into())) }
        })
    }

    /// Queue depths and the last good poll per system, for metrics and readiness.
    ///
    /// # Errors
    /// SQLite failures or a corrupt timestamp.
    pub fn gauges(&self) -> Result<Gauges> {
        let mut out = {
            let conn = self.conn.lock().map_err(|_| LedgerError::Poisoned)?;
            gauges(&conn)?
        };
        duplicates::fill_gauges(&self.path, &mut out)?;
        Ok(out)
    }

    /// Drop processed inbox rows and webhook notices older than `before` (their effects live
    /// in the ledger; they were kept only so that redeliveries are recognised), and the kept
    /// identities of deleted records noted before then that no person claimed.
    ///
    /// # Errors
    /// SQLite failures.
    pub fn prune_inbox(&self, before: DateTime<Utc>) -> Result<usize> {
        self.with_tx(|tx| {
            let inbox = tx.execute(
                "DELETE FROM inbox WHERE processed_at IS NOT NULL AND processed_at < ?1",
                [ts(before)],
            )?;
            let notices = tx.execute(
                "DELETE FROM notices WHERE processed_at IS NOT NULL AND processed_at < ?1",
                [ts(before)],
            )?;
            // Deleted records' kept identities share the inbox's retention (not counted:
            // they are not inbox rows).
            identity::prune_deleted_identities(tx, before)?;
            Ok(inbox + notices)
        })
    }
}

/// Insert observed changes into the inbox; a change already there (same record, vendor time
/// and content) is stored once. Returns how many were new.
fn insert_changes(
    tx: &Transaction<'_>,
    system: &SystemName,
    source: &str,
    changes: &[Change],
    now: DateTime<Utc>,
) -> Result<usize> {
    insert_changes_salted(tx, system, source, changes, None, now)
}

/// [`insert_changes`], with `salt` in every key: a re-read the reconciler asked for must reach
/// it even when the record still holds the very state it doubted (same vendor time and
/// content as a change processed before).
fn insert_changes_salted(
    tx: &Transaction<'_>,
    system: &SystemName,
    source: &str,
    changes: &[Change],
    salt: Option<&str>,
    now: DateTime<Utc>,
) -> Result<usize> {
    let mut inserted = 0;
    let mut stmt = tx.prepare_cached(
        "INSERT OR IGNORE INTO inbox(system, source, dedupe_key, change, received_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    // Changes of erased persons never reach the inbox (see `erase.rs`).
    let gate = erase::Gate::load(tx)?;
    for c in changes {
        if gate.drops(tx, system, c)? {
            continue;
        }
        let fields = to_json(&c.fields)?;
        // A live record hashes as it did before fates existed, so keys stay stable.
        let fate = match &c.fate {
            RecordFate::Live => "false".to_string(),
            other => format!("{other:?}"),
        };
        let mut key = format!(
            "{}|{}|{}|{}|{:016x}",
            system,
            c.remote.object_type,
            c.remote.id,
            ts(c.modified_at),
            fnv64(format!("{fields}|{fate}|{:?}", c.ledger_key).as_bytes())
        );
        if let Some(salt) = salt {
            key.push('|');
            key.push_str(salt);
        }
        inserted += stmt.execute(params![system.as_str(), source, key, to_json(c)?, ts(now)])?;
    }
    Ok(inserted)
}

/// What a push round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PushTally {
    pub created: usize,
    pub updated: usize,
    pub dead: usize,
    pub retried: usize,
}

/// Ledger-wide counts.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Totals {
    pub persons: i64,
    pub links_by_system: BTreeMap<String, i64>,
    pub created_by_system: BTreeMap<String, i64>,
    pub updates_by_system: BTreeMap<String, i64>,
    pub dead_by_system: BTreeMap<String, i64>,
}

/// Gauges of one system.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SystemGauges {
    /// Changes from this system committed to the inbox and not reconciled yet.
    pub inbox_pending: i64,
    /// Writes to this system waiting in the outbox.
    pub outbox_pending: i64,
    /// Writes to this system that were given up on (dead letters).
    pub dead: i64,
    /// When a poll of this system last succeeded.
    pub last_poll_ok_at: Option<DateTime<Utc>>,
    /// Webhook notices stored (acknowledged) and not turned into inbox changes yet.
    pub notices_pending: i64,
    /// Persons with more than one open record in this system.
    pub same_system_duplicates: i64,
    /// Vendor-side merges that failed for good (`identity.merge_at_vendor`).
    pub vendor_merges_failed: i64,
}

/// Gauges per system: every registered system, plus any system that still has rows.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Gauges {
    pub systems: BTreeMap<String, SystemGauges>,
}

impl Gauges {
    /// Unprocessed inbox rows over all systems.
    pub fn inbox_pending(&self) -> i64 {
        self.systems.values().map(|g| g.inbox_pending).sum()
    }
}

fn gauges(conn: &Connection) -> Result<Gauges> {
    let mut out = Gauges::default();
    {
        let mut stmt = conn.prepare_cached(
            "SELECT s.name, st.last_poll_ok_at FROM systems s
             LEFT JOIN system_status st ON st.system = s.name",
        )?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get(1)?)))?;
        for row in rows {
            let (system, at): (String, Option<String>) = row?;
            let at = at.as_deref().map(parse_ts).transpose()?;
            out.systems.entry(system).or_default().last_poll_ok_at = at;
        }
    }
    // Separate statements so that each can use its partial index.
    let inbox = count_by_system(
        conn,
        "SELECT system, count(*) FROM inbox WHERE processed_at IS NULL GROUP BY system",
    )?;
    let pending = count_by_system(
        conn,
        "SELECT system, count(*) FROM outbox WHERE state = 'pending' GROUP BY system",
    )?;
    let dead = count_by_system(
        conn,
        "SELECT system, count(*) FROM outbox WHERE state = 'dead' GROUP BY system",
    )?;
    let notices = count_by_system(
        conn,
        "SELECT system, count(*) FROM notices WHERE processed_at IS NULL GROUP BY system",
    )?;
    for (system, n) in inbox {
        out.systems.entry(system).or_default().inbox_pending = n;
    }
    for (system, n) in notices {
        out.systems.entry(system).or_default().notices_pending = n;
    }
    for (system, n) in pending {
        out.systems.entry(system).or_default().outbox_pending = n;
    }
    for (system, n) in dead {
        out.systems.entry(system).or_default().dead = n;
    }
    Ok(out)
}

/// Read-only access for CLI commands that inspect a ledger a daemon may be writing.
pub struct LedgerReader {
    conn: Connection,
}

impl LedgerReader {
    /// # Errors
    /// The file does not exist or is not a ledger.
    pub fn open(path: &Path) -> Result<LedgerReader> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(Duration::from_secs(5))?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if version > schema::CURRENT_VERSION {
            return Err(LedgerError::TooNew { found: version, supported: schema::CURRENT_VERSION });
        }
        Ok(LedgerReader { conn })
    }

    /// # Errors
    /// SQLite failures.
    pub fn status(&self) -> Result<Vec<SystemStatus>> {
        let mut stmt = self.conn.prepare(
            "SELECT s.name, s.kind, s.role, c.value, st.last_poll_ok_at, st.last_error,
                    st.last_error_at,
                    (SELECT count(*) FROM inbox i WHERE i.system = s.name AND i.processed_at IS NULL),
                    (SELECT count(*) FROM outbox o WHERE o.system = s.name AND o.state = 'pending'),
                    (SELECT count(*) FROM outbox o WHERE o.system = s.name AND o.state = 'dead'),
                    (SELECT count(*) FROM links l WHERE l.system = s.name AND l.closed_at IS NULL),
                    (SELECT count(*) FROM notices n WHERE n.system = s.name AND n.processed_at IS NULL),
                    (SELECT count(*) FROM notices n WHERE n.system = s.name
                     AND n.dedupe_key NOT LIKE 'leadsync-reread:%') -- REREAD_KEY_PREFIX
             FROM systems s
             LEFT JOIN cursors c ON c.system = s.name
             LEFT JOIN system_status st ON st.system = s.name
             ORDER BY s.name",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(SystemStatus {
                system: r.get(0)?,
                kind: r.get(1)?,
                role: r.get(2)?,
                cursor: r.get(3)?,
                last_poll_ok_at: r.get(4)?,
                last_error: r.get(5)?,
                last_error_at: r.get(6)?,
                inbox_pending: r.get(7)?,
                outbox_pending: r.get(8)?,
                dead: r.get(9)?,
                linked_records: r.get(10)?,
                notices_pending: r.get(11)?,
                notices_received: r.get(12)?,
            })
        })?;
        Ok(rows.collect::<std::result::Result<_, _>>()?)
    }

    /// # Errors
    /// SQLite failures or a corrupt row.
    pub fn snapshot(&self) -> Result<Vec<LeadSnapshot>> {
        snapshot(&self.conn)
    }

    /// # Errors
    /// SQLite failures.
    pub fn totals(&self) -> Result<Totals> {
        totals(&self.conn)
    }
}

fn snapshot(conn: &Connection) -> Result<Vec<LeadSnapshot>> {
    let mut links: BTreeMap<String, Vec<(String, RemoteId)>> = BTreeMap::new();
    {
        let mut stmt = conn.prepare(
            "SELECT lead_id, system, object_type, remote_id FROM links WHERE closed_at IS NULL
             ORDER BY reason LIKE 'matched_rule:%', id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get(2)?, r.get(3)?))
        })?;
        for row in rows {
            let (lead, system, object_type, id) = row?;
            links.entry(lead).or_default().push((system, RemoteId { object_type, id }));
        }
    }
    let mut tombstones: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    {
        let mut stmt = conn.prepare("SELECT DISTINCT lead_id, system FROM tombstones")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        for row in rows {
            let (lead, system) = row?;
            tombstones.entry(lead).or_default().insert(system);
        }
    }
    let mut holds: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    {
        // Each side of an open duplicate review is held in the systems of the other's records.
        let mut stmt = conn.prepare(&format!(
            "{} SELECT DISTINCT p.lead, l.system FROM pairs p
             JOIN links l ON l.lead_id = p.other AND l.closed_at IS NULL",
            review::OPEN_DUPLICATE_PAIRS
        ))?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        for row in rows {
            let (lead, system) = row?;
            holds.entry(lead).or_default().insert(system);
        }
    }
    let mut stmt =
        conn.prepare("SELECT id, fields FROM leads WHERE merged_into IS NULL ORDER BY id")?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    let mut out = Vec::new();
    for row in rows {
        let (id, fields) = row?;
        let l = links.remove(&id).unwrap_or_default();
        let tombstoned = tombstones.remove(&id).unwrap_or_default();
        let review_held = holds.remove(&id).unwrap_or_default();
        out.push(LeadSnapshot {
            id,
            fields: from_json(&fields)?,
            links: l,
            tombstoned,
            review_held,
        });
    }
    Ok(out)
}

/// Run a `SELECT system, count(*) ... GROUP BY system` query.
fn count_by_system(conn: &Connection, sql: &str) -> Result<BTreeMap<String, i64>> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    Ok(rows.collect::<std::result::Result<_, _>>()?)
}

fn totals(conn: &Connection) -> Result<Totals> {
    let persons =
        conn.query_row("SELECT count(*) FROM leads WHERE merged_into IS NULL", [], |r| r.get(0))?;
    let group = |sql: &str| count_by_system(conn, sql);
    Ok(Totals {
        persons,
        links_by_system: group(
            "SELECT system, count(*) FROM links WHERE closed_at IS NULL GROUP BY system",
        )?,
        created_by_system: group(
            "SELECT system, count(*) FROM links WHERE reason = 'created_by_leadsync' GROUP BY system",
        )?,
        updates_by_system: group(
            "SELECT system, count(*) FROM outbox WHERE state = 'done' GROUP BY system",
        )?,
        dead_by_system: group(
            "SELECT system, count(*) FROM outbox WHERE state = 'dead' GROUP BY system",
        )?,
    })
}

/// The start of the key of a notice the reconciler queued to read a record again.
pub(crate) const REREAD_KEY_PREFIX: &str = "leadsync-reread:";

/// Ask the fetch stage to read this record again (see [`reconcile::reread_needed`]): a
/// notice without a snapshot, keyed by the record and the push it may predate, so one push
/// asks once. Returns 1 when queued, 0 when the same re-read is queued already.
fn queue_reread(
    tx: &Transaction<'_>,
    system: &SystemName,
    remote: &RemoteId,
    now: DateTime<Utc>,
) -> Result<usize> {
    let pushed_at: Option<Option<String>> = tx
        .prepare_cached(
            "SELECT pushed_at FROM remote_records
             WHERE system = ?1 AND object_type = ?2 AND remote_id = ?3",
        )?
        .query_row(params![system.as_str(), remote.object_type, remote.id], |r| r.get(0))
        .optional()?;
    let notice = crate::domain::Notice {
        dedupe_key: format!(
            "{REREAD_KEY_PREFIX}{}:{}",
            remote,
            pushed_at.flatten().unwrap_or_default()
        ),
        remote: remote.clone(),
        kind: crate::domain::NoticeKind::Changed,
        occurred_at: now,
        related: Vec::new(),
        snapshot: None,
    };
    let n = tx
        .prepare_cached(
            "INSERT OR IGNORE INTO notices(system, dedupe_key, notice, received_at)
             VALUES (?1, ?2, ?3, ?4)",
        )?
        .execute(params![system.as_str(), notice.dedupe_key, to_json(&notice)?, ts(now)])?;
    Ok(n)
}

/// Whether leadsync already saw a strictly newer state of this record than `change`.
fn is_older_than_known(tx: &Transaction<'_>, system: &SystemName, change: &Change) -> Result<bool> {
    let known: Option<Option<String>> = tx
        .prepare_cached(
            "SELECT modified_at FROM remote_records
             WHERE system = ?1 AND object_type = ?2 AND remote_id = ?3",
        )?
        .query_row(params![system.as_str(), change.remote.object_type, change.remote.id], |r| {
            r.get(0)
        })
        .optional()?;
    Ok(match known.flatten() {
        Some(at) => parse_ts(&at)? > change.modified_at,
        None => false,
    })
}

/// Make the person's pending outbox rows match a fresh plan: replace the fields of rows that
/// still have work, drop rows whose work is done already, add new ones. A write the vendor
/// rejected for good is not queued again with the same fields (it waits in the dead letters).
fn write_plan(
    tx: &Transaction<'_>,
    lead_id: &str,
    intents: &[PushIntent],
    now: DateTime<Utc>,
) -> Result<()> {
    // A caller holding the person's lifecycle as read before reconciles it with what this
    // marked unsent (`lifecycle::queue_stage_dates` reads it again).
    write_plan_riding(tx, lead_id, intents, &[], now).map(|_| ())
}

/// [`write_plan`], putting `dates[i]` on the row of `intents[i]` as it is written (merged into
/// the dates the row carries, as [`ride_along`] would), so that a row is written once rather
/// than written and then updated with its dates. The row ends as it would after
/// `write_plan` and then [`ride_along`]: the same columns, and the version both would have
/// moved it to (one more than the write alone: a new row starts at 2). Returns, per intent,
/// whether its row got its dates (not when the intent was not written: a write the vendor
/// rejected for good; the caller queues those dates the ordinary way), and the stage dates a
/// dropped create carried that had nowhere to go and are marked unsent again in the person's
/// stored lifecycle ([`vendor_writes::rehome`]; the caller's copy must forget them too).
fn write_plan_riding(
    tx: &Transaction<'_>,
    lead_id: &str,
    intents: &[PushIntent],
    dates: &[Option<BTreeMap<String, DateTime<Utc>>>],
    now: DateTime<Utc>,
) -> Result<(Vec<bool>, vendor_writes::Requeued)> {
    // Pending rows that no longer need a write: updates of links, and creates in a system
    // where the person has a record by now (a person folded into this one brought it). An
    // update that carries stage-entry dates still has work: only its fields go.
    type Pending = (i64, String, String, bool, Option<String>);
    let pending: Vec<Pending> = tx
        .prepare_cached(
            "SELECT id, system, remote_id, stage_dates IS NOT NULL OR vendor_writes IS NOT NULL,
                    stage_dates
             FROM outbox WHERE lead_id = ?1 AND state = 'pending'",
        )?
        .query_map([lead_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)))?
        .collect::<std::result::Result<_, _>>()?;
    let mut dropped_creates = Vec::new();
    for (id, system, remote_id, has_dates, _) in &pending {
        let (id, has_dates) = (*id, *has_dates);
        let still = intents.iter().any(|i| {
            i.system.as_str() == system
                && i.remote.as_ref().map_or(remote_id.is_empty(), |r| &r.id == remote_id)
        });
        if still {
            continue;
        }
        if has_dates && !remote_id.is_empty() {
            tx.prepare_cached(
                "UPDATE outbox SET fields = '{}', version = version + 1, updated_at = ?2
                 WHERE id = ?1 AND fields != '{}'",
            )?
            .execute(params![id, ts(now)])?;
        } else {
            // A create no longer wanted (a review holds it, the person's record there came
            // with a person folded into this one, ...) hands the contract writes it carries
            // on, once the plan is written (see `vendor_writes::rehome`).
            if has_dates && remote_id.is_empty() {
                dropped_creates.push(vendor_writes::carried(tx, lead_id, system, remote_id)?);
            }
            tx.prepare_cached("DELETE FROM outbox WHERE id = ?1")?.execute([id])?;
        }
    }
    let mut riding = vec![false; intents.len()];
    for (k, intent) in intents.iter().enumerate() {
        let remote_id = intent.remote.as_ref().map(|r| r.id.as_str()).unwrap_or("");
        let fields = to_json(&intent.fields)?;
        let dead_same: bool = tx
            .prepare_cached(
                "SELECT EXISTS(SELECT 1 FROM outbox WHERE lead_id = ?1 AND system = ?2
                 AND remote_id = ?3 AND state = 'dead' AND (fields = ?4 OR remote_id = ''))",
            )?
            .query_row(params![lead_id, intent.system.as_str(), remote_id, fields], |r| r.get(0))?;
        if dead_same {
            continue;
        }
        if let Some(Some(add)) = dates.get(k) {
            // What `ride_along` would merge: the dates the pending row carries, if any.
            let carries = pending
                .iter()
                .find(|p| p.1 == intent.system.as_str() && p.2 == remote_id)
                .and_then(|p| p.4.as_deref());
            let mut all: BTreeMap<String, DateTime<Utc>> =
                carries.map(from_json).transpose()?.unwrap_or_default();
            all.extend(add.iter().map(|(k, v)| (k.clone(), *v)));
            tx.prepare_cached(
                "INSERT INTO outbox(lead_id, system, object_type, remote_id, fields, stage_dates,
                                    version, state, next_attempt_at, created_at, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?7, 2, 'pending', ?6, ?6, ?6)
                 ON CONFLICT(lead_id, system, remote_id) WHERE state = 'pending' DO UPDATE SET
                    version = outbox.version + 1 + (outbox.fields != excluded.fields),
                    fields = excluded.fields,
                    stage_dates = excluded.stage_dates,
                    updated_at = excluded.updated_at",
            )?
            .execute(params![
                lead_id,
                intent.system.as_str(),
                intent.object_type,
                remote_id,
                fields,
                ts(now),
                to_json(&all)?
            ])?;
            riding[k] = true;
            continue;
        }
        tx.prepare_cached(
            "INSERT INTO outbox(lead_id, system, object_type, remote_id, fields, state,
                                next_attempt_at, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6, ?6, ?6)
             ON CONFLICT(lead_id, system, remote_id) WHERE state = 'pending' DO UPDATE SET
                fields = excluded.fields,
                version = outbox.version + 1,
                updated_at = excluded.updated_at
             WHERE outbox.fields != excluded.fields",
        )?
        .execute(params![
            lead_id,
            intent.system.as_str(),
            intent.object_type,
            remote_id,
            fields,
            ts(now)
        ])?;
    }
    let mut requeued = vendor_writes::Requeued::new();
    for carried in dropped_creates {
        requeued.extend(vendor_writes::rehome(tx, carried, now)?);
    }
    Ok((riding, requeued))
}

/// Whether the outbox row `due` was read from is still that row, unchanged: the same person,
/// record, fields and version, and still pending. Row ids alone do not say so: a pending row
/// the reconciler drops while its push is in flight (a read showed the record holds it
/// already) frees its id, and SQLite gives the largest rowid to the next row inserted, which
/// may be a newer push to the same record (or any other) with the first version again. Taking
/// that row for the one sent marks a write done that never went out.
fn still_the_row_sent(tx: &Transaction<'_>, system: &SystemName, due: &DuePush) -> Result<bool> {
    row_sent_unchanged(tx, Some(system), due)
}

/// [`still_the_row_sent`], in whichever system (`None`) when the caller does not know it.
fn row_sent_unchanged(
    tx: &Transaction<'_>,
    system: Option<&SystemName>,
    due: &DuePush,
) -> Result<bool> {
    let rec = &due.record;
    let remote_id = match &rec.op {
        PushOp::Create { .. } => "",
        PushOp::Update { remote } => remote.id.as_str(),
    };
    Ok(tx
        .prepare_cached(
            "SELECT EXISTS(SELECT 1 FROM outbox WHERE id = ?1 AND version = ?2 AND lead_id = ?3
             AND (?4 IS NULL OR system = ?4) AND remote_id = ?5 AND fields = ?6
             AND state = 'pending')",
        )?
        .query_row(
            params![
                rec.outbox_id,
                due.version,
                rec.ledger_key,
                system.map(SystemName::as_str),
                remote_id,
                to_json(&rec.fields)?
            ],
            |r| r.get(0),
        )?)
}

/// Whether `rec` opted a record out by an address it did not write (the record's own, see
/// [`Ledger::due_pushes`], else the person's) and the record's address is no longer the one
/// the push was read with: the record's known email when leadsync knows one, else the
/// person's.
fn email_moved_under_opt_out(
    tx: &Transaction<'_>,
    system: &SystemName,
    lead_id: &str,
    rec: &PushRecord,
) -> Result<bool> {
    if rec.fields.get(&Field::EmailOptOut).map(String::as_str) != Some("true")
        || rec.fields.contains_key(&Field::Email)
    {
        return Ok(false);
    }
    let own: Option<String> = match &rec.op {
        PushOp::Update { remote } => tx
            .prepare_cached(
                "SELECT json_extract(state, '$.email') FROM remote_records
                 WHERE system = ?1 AND object_type = ?2 AND remote_id = ?3",
            )?
            .query_row(params![system.as_str(), remote.object_type, remote.id], |r| {
                r.get::<_, Option<String>>(0)
            })
            .optional()?
            .flatten()
            .filter(|e| !e.trim().is_empty()),
        PushOp::Create { .. } => None,
    };
    let person: Option<String> = tx
        .prepare_cached("SELECT fields FROM leads WHERE id = ?1")?
        .query_row([lead_id], |r| r.get(0))
        .optional()?;
    let Some(person) = person else { return Ok(false) };
    let mut person: Fields = from_json(&person)?;
    if let Some(own) = own {
        person.insert(Field::Email, own);
    }
    let (was, is) = (rec.person.get(&Field::Email), person.get(&Field::Email));
    Ok(match (was, is) {
        (Some(w), Some(i)) => !reconcile::same_value(Field::Email, Some(w), i),
        (None, None) => false,
        _ => true,
    })
}

fn note_pushed(
    tx: &Transaction<'_>,
    system: &SystemName,
    remote: &RemoteId,
    fields: &Fields,
    ended_at: DateTime<Utc>,
) -> Result<()> {
    type Row = (String, Option<String>, Option<String>, Option<String>, Option<String>);
    let row: Option<Row> = tx
        .prepare_cached(
            "SELECT state, agreed, pushed, pushed_at, seen_at FROM remote_records
             WHERE system = ?1 AND object_type = ?2 AND remote_id = ?3",
        )?
        .query_row(params![system.as_str(), remote.object_type, remote.id], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
        })
        .optional()?;
    let (state, agreed, before, before_at, seen_at) = match row {
        Some((s, a, p, pa, sa)) => (Some(s), a, p, pa, sa),
        None => (None, None, None, None, None),
    };
    let mut known: Fields = state.as_deref().map(from_json).transpose()?.unwrap_or_default();
    let mut agreed: Fields = agreed.as_deref().map(from_json).transpose()?.unwrap_or_default();
    // A read that started before this push ended may predate the earlier pushes too, unless
    // a read that started after the last of them was taken already: their fields stay in
    // `pushed` until then, so that such a read's old values of them are not taken for news
    // (`reconcile::news_in`) and make the record read again (`reconcile::reread_needed`).
    // Fixed-width timestamps: text order is time order.
    let mut pushed: Fields = match (&before_at, &seen_at) {
        (Some(p), Some(seen)) if seen >= p => Fields::new(),
        _ => before.as_deref().map(from_json).transpose()?.unwrap_or_default(),
    };
    pushed.extend(fields.iter().map(|(f, v)| (*f, v.clone())));
    // The record now holds what the person held when this was planned: they agree on it.
    for (f, v) in fields {
        known.insert(*f, v.clone());
        agreed.insert(*f, v.clone());
    }
    tx.prepare_cached(
        "INSERT INTO remote_records(system, object_type, remote_id, state, pushed, pushed_at, agreed)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT(system, object_type, remote_id) DO UPDATE SET
            state = excluded.state, pushed = excluded.pushed, pushed_at = excluded.pushed_at,
            agreed = excluded.agreed",
    )?
    .execute(params![
        system.as_str(),
        remote.object_type,
        remote.id,
        to_json(&known)?,
        to_json(&pushed)?,
        ts(ended_at),
        to_json(&agreed)?
    ])?;
    Ok(())
}

/// A JSON column of outbox rows that travels beside the fields to write: stage-entry dates
/// (migration 12) and the contract's other writes (migration 13).
#[derive(Debug, Clone, Copy)]
pub(super) enum RideAlong {
    StageDates,
    VendorWrites,
}

/// Put something on the pending outbox row of (person, system, record), in `what`'s column:
/// `merge` gets what the row carries there already (`None` for none, or when a new row with
/// no fields is made because none is pending; `remote_id` `""` names a create) and returns the
/// column's new JSON. The row's version moves, so a push in flight does not settle it.
///
/// # Errors
/// SQLite failures, or what `merge` returns (a corrupt column).
#[allow(clippy::too_many_arguments, reason = "the row's key, and what to put on it")]
pub(super) fn ride_along(
    tx: &Transaction<'_>,
    what: RideAlong,
    lead_id: &str,
    system: &str,
    object_type: &str,
    remote_id: &str,
    now: DateTime<Utc>,
    merge: impl FnOnce(Option<&str>) -> Result<String>,
) -> Result<()> {
    // One of two fixed column names, spelt out (no statement text built per call).
    let (select, update, insert) = match what {
        RideAlong::StageDates => (
            "SELECT id, stage_dates FROM outbox WHERE lead_id = ?1 AND system = ?2
             AND remote_id = ?3 AND state = 'pending'",
            "UPDATE outbox SET stage_dates = ?2, version = version + 1, updated_at = ?3
             WHERE id = ?1",
            "INSERT INTO outbox(lead_id, system, object_type, remote_id, fields, stage_dates,
                                state, next_attempt_at, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, '{}', ?5, 'pending', ?6, ?6, ?6)",
        ),
        RideAlong::VendorWrites => (
            "SELECT id, vendor_writes FROM outbox WHERE lead_id = ?1 AND system = ?2
             AND remote_id = ?3 AND state = 'pending'",
            "UPDATE outbox SET vendor_writes = ?2, version = version + 1, updated_at = ?3
             WHERE id = ?1",
            "INSERT INTO outbox(lead_id, system, object_type, remote_id, fields, vendor_writes,
                                state, next_attempt_at, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, '{}', ?5, 'pending', ?6, ?6, ?6)",
        ),
    };
    let row: Option<(i64, Option<String>)> = tx
        .prepare_cached(select)?
        .query_row(params![lead_id, system, remote_id], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    match row {
        Some((id, existing)) => {
            let json = merge(existing.as_deref())?;
            tx.prepare_cached(update)?.execute(params![id, json, ts(now)])?;
        }
        None => {
            let json = merge(None)?;
            tx.prepare_cached(insert)?.execute(params![
                lead_id,
                system,
                object_type,
                remote_id,
                json,
                ts(now)
            ])?;
        }
    }
    Ok(())
}

fn mark_dead(
    tx: &Transaction<'_>,
    outbox_id: i64,
    code: &str,
    message: &str,
    now: DateTime<Utc>,
) -> Result<()> {
    // A dead row must not block the unique pending slot: it leaves 'pending' here.
    tx.prepare_cached(
        "UPDATE outbox SET state = 'dead', error_code = ?2, last_error = ?3,
                attempts = attempts + 1, updated_at = ?4 WHERE id = ?1",
    )?
    .execute(params![outbox_id, code, message, ts(now)])?;
    Ok(())
}

fn defer_one(
    tx: &Transaction<'_>,
    outbox_id: i64,
    attempts: i64,
    code: &str,
    retry: PushRetry,
    now: DateTime<Utc>,
) -> Result<()> {
    let attempts = attempts + 1;
    if attempts >= retry.max_attempts {
        return mark_dead(tx, outbox_id, code, "gave up after repeated failures", now);
    }
    let factor = 2u32.saturating_pow(u32::try_from(attempts - 1).unwrap_or(u32::MAX).min(20));
    let delay = retry.base_delay.saturating_mul(factor).min(retry.max_delay);
    let next = now + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX);
    tx.prepare_cached(
        "UPDATE outbox SET attempts = ?2, next_attempt_at = ?3, error_code = ?4, updated_at = ?5
         WHERE id = ?1",
    )?
    .execute(params![outbox_id, attempts, ts(next), code, ts(now)])?;
    Ok(())
}

fn audit(
    tx: &Transaction<'_>,
    now: DateTime<Utc>,
    lead_id: Option<&str>,
    system: Option<&str>,
    kind: &str,
    detail: &serde_json::Value,
) -> Result<()> {
    tx.prepare_cached(
        "INSERT INTO audit(at, lead_id, system, kind, detail) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![ts(now), lead_id, system, kind, detail.to_string()])?;
    Ok(())
}

#[cfg(test)]
mod race_tests;
#[cfg(test)]
mod tests;
