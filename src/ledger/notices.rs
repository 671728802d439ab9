//! Webhook notices: committed before the sender is acknowledged, many requests to one
//! transaction (one fsync), then completed into inbox changes by the fetch stage.
//!
//! A notice is unique per (system, vendor delivery key): the same event delivered twice is
//! stored once, and the second delivery is acknowledged like the first.

use chrono::{DateTime, Utc};
use rusqlite::{OptionalExtension, params};

use super::{
    Ledger, REREAD_KEY_PREFIX, Result, from_json, insert_changes, insert_changes_salted, to_json,
    ts,
};
use crate::domain::{Change, Notice, RemoteId, SystemName};

/// A notice waiting to be turned into a change.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredNotice {
    pub id: i64,
    pub notice: Notice,
    /// Fetches tried for it so far.
    pub attempts: i64,
}

impl Ledger {
    /// Store the notices of several requests in one transaction. Returns, per request, how
    /// many of its notices were new (a redelivery stores nothing and returns 0).
    ///
    /// # Errors
    /// SQLite failures (disk full, read-only, locked); nothing is stored then, and no request
    /// in the group may be acknowledged.
    pub fn store_notices(
        &self,
        requests: &[(&SystemName, &[Notice])],
        now: DateTime<Utc>,
    ) -> Result<Vec<usize>> {
        self.with_tx(|tx| {
            let mut stmt = tx.prepare_cached(
                "INSERT OR IGNORE INTO notices(system, dedupe_key, notice, received_at)
                 VALUES (?1, ?2, ?3, ?4)",
            )?;
            let received = ts(now);
            let mut out = Vec::with_capacity(requests.len());
            // Notices about erased persons are acknowledged but not stored (see `erase.rs`).
            let gate = super::erase::Gate::load(tx)?;
            for (system, notices) in requests {
                let mut n = 0;
                for notice in *notices {
                    if gate.drops_notice(tx, system, notice)? {
                        continue;
                    }
                    n += stmt.execute(params![
                        system.as_str(),
                        notice.dedupe_key,
                        to_json(notice)?,
                        received
                    ])?;
                }
                out.push(n);
            }
            Ok(out)
        })
    }

    /// Up to `max` unprocessed notices of a system, oldest first.
    ///
    /// # Errors
    /// SQLite failures or a corrupt row.
    pub fn pending_notices(&self, system: &SystemName, max: usize) -> Result<Vec<StoredNotice>> {
        let conn = self.conn.lock().map_err(|_| super::LedgerError::Poisoned)?;
        let mut stmt = conn.prepare_cached(
            "SELECT id, notice, attempts FROM notices
             WHERE system = ?1 AND processed_at IS NULL ORDER BY id LIMIT ?2",
        )?;
        let rows = stmt
            .query_map(params![system.as_str(), i64::try_from(max).unwrap_or(i64::MAX)], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?))
            })?;
        let mut out = Vec::new();
        for row in rows {
            let (id, notice, attempts) = row?;
            out.push(StoredNotice { id, notice: from_json(&notice)?, attempts });
        }
        Ok(out)
    }

    /// In one transaction: put `changes` in the inbox and mark the notices they answer
    /// processed (`found`: turned into a change; `not_found`: the vendor no longer has the
    /// record). Returns how many changes were new to the inbox.
    ///
    /// # Errors
    /// SQLite failures; nothing is committed then and the notices stay pending.
    pub fn complete_notices(
        &self,
        system: &SystemName,
        found: &[i64],
        not_found: &[i64],
        changes: &[Change],
        now: DateTime<Utc>,
    ) -> Result<usize> {
        self.with_tx(|tx| {
            // Changes answering a re-read the reconciler asked for go in under their own keys:
            // the record may still hold exactly the state it doubted.
            let mut rereads: Vec<RemoteId> = Vec::new();
            {
                let mut stmt = tx.prepare_cached("SELECT notice FROM notices WHERE id = ?1")?;
                for id in found {
                    let notice: Option<String> = stmt.query_row([id], |r| r.get(0)).optional()?;
                    if let Some(n) = notice {
                        let n: Notice = from_json(&n)?;
                        if n.dedupe_key.starts_with(REREAD_KEY_PREFIX) {
                            rereads.push(n.remote);
                        }
                    }
                }
            }
            let (again, plain): (Vec<Change>, Vec<Change>) =
                changes.iter().cloned().partition(|c| rereads.contains(&c.remote));
            let mut inserted = insert_changes(tx, system, "webhook", &plain, now)?;
            let salt = ts(now);
            inserted += insert_changes_salted(tx, system, "reread", &again, Some(&salt), now)?;
            let mut stmt = tx.prepare_cached(
                "UPDATE notices SET processed_at = ?1, outcome = ?2
                 WHERE id = ?3 AND processed_at IS NULL",
            )?;
            let at = ts(now);
            for id in found {
                stmt.execute(params![at, "ingested", id])?;
            }
            for id in not_found {
                stmt.execute(params![at, "not_found", id])?;
            }
            Ok(inserted)
        })
    }

    /// Count one more failed fetch for these notices; they stay pending.
    ///
    /// # Errors
    /// SQLite failures.
    pub fn notices_failed(&self, ids: &[i64]) -> Result<()> {
        self.with_tx(|tx| {
            let mut stmt =
                tx.prepare_cached("UPDATE notices SET attempts = attempts + 1 WHERE id = ?1")?;
            for id in ids {
                stmt.execute([id])?;
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::domain::{NoticeKind, RecordFate, RemoteId};

    fn notice(key: &str, id: &str) -> Notice {
        Notice {
            dedupe_key: key.into(),
            remote: RemoteId { object_type: "contact".into(), id: id.into() },
            kind: NoticeKind::Changed,
            occurred_at: Utc.timestamp_opt(1_700_000_000, 0).single().expect("valid"),
            related: Vec::new(),
            snapshot: None,
        }
    }

    fn open() -> (tempfile::TempDir, Ledger) {
        let dir = tempfile::tempdir().expect("tempdir");
        let l = Ledger::open(&dir.path().join("l.db")).expect("open");
        (dir, l)
    }

    #[test]
    fn a_redelivered_notice_is_stored_once_per_system() {
        let (_d, l) = open();
        let mkt = SystemName("marketing".into());
        let crm = SystemName("crm".into());
        let a = [notice("p:1", "10"), notice("p:2", "11")];
        let again = [notice("p:2", "11"), notice("p:3", "12")];
        let n = l
            .store_notices(&[(&mkt, &a[..]), (&mkt, &again[..]), (&crm, &a[..])], Utc::now())
            .expect("store");
        assert_eq!(n, vec![2, 1, 2], "same key in another system is another notice");
        let pending = l.pending_notices(&mkt, 10).expect("pending");
        let keys: Vec<_> = pending.iter().map(|p| p.notice.dedupe_key.as_str()).collect();
        assert_eq!(keys, ["p:1", "p:2", "p:3"]);
        assert_eq!(pending[0].notice, a[0], "stored as given");
    }

    #[test]
    fn completing_moves_changes_to_the_inbox_and_clears_the_notices() {
        let (_d, l) = open();
        let mkt = SystemName("marketing".into());
        l.store_notices(&[(&mkt, &[notice("p:1", "10"), notice("p:2", "11")][..])], Utc::now())
            .expect("store");
        let pending = l.pending_notices(&mkt, 10).expect("pending");
        l.notices_failed(&[pending[0].id]).expect("failed");
        assert_eq!(l.pending_notices(&mkt, 10).expect("pending")[0].attempts, 1);
        let change = Change {
            remote: pending[0].notice.remote.clone(),
            fields: Default::default(),
            ledger_key: None,
            modified_at: Utc::now(),
            fetched_at: Utc::now(),
            fate: RecordFate::Live,
            custom: Default::default(),
            last_activity: None,
        };
        let new = l
            .complete_notices(&mkt, &[pending[0].id], &[pending[1].id], &[change], Utc::now())
            .expect("complete");
        assert_eq!(new, 1);
        assert!(l.pending_notices(&mkt, 10).expect("pending").is_empty());
        assert!(l.inbox_has_pending().expect("inbox"));
        assert_eq!(l.gauges().expect("gauges").systems["marketing"].notices_pending, 0);
    }

    #[test]
    fn a_failed_commit_stores_nothing() {
        let (_d, l) = open();
        let mkt = SystemName("marketing".into());
        l.set_query_only_for_test(true);
        assert!(l.store_notices(&[(&mkt, &[notice("p:1", "10")][..])], Utc::now()).is_err());
        l.set_query_only_for_test(false);
        assert!(l.pending_notices(&mkt, 10).expect("pending").is_empty());
    }
}
