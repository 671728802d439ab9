//! Group commit of webhook notices: durable before acknowledged, many requests per fsync.
//!
//! Request handlers hand their verified notices to one committer thread and wait for its
//! answer; the committer takes every request that queued up while the previous transaction
//! was committing and stores them all in the next one (RELIABILITY.md §2: the classic group
//! commit). A handler answers 2xx only after its transaction committed, so an acknowledged
//! event survives a crash; when the commit fails, every request of the group is refused (503)
//! and the sender retries.
//!
//! The committer is a plain OS thread because SQLite calls block; it stops when the last
//! [`NoticeSink`] handle is dropped, after answering everything already queued.

use std::sync::Arc;
use std::thread::JoinHandle;

use chrono::Utc;
use tokio::sync::{mpsc, oneshot};

use crate::domain::{Notice, SystemName};
use crate::ledger::Ledger;

/// Most requests folded into one transaction. Bounds the time one commit takes, and so the
/// acknowledgement latency of the requests that queue behind it.
const MAX_GROUP: usize = 256;

/// Requests that may wait for the committer before senders are slowed down (backpressure on
/// the HTTP handlers, not an error).
const QUEUE: usize = 4096;

/// Why notices could not be stored. The HTTP layer answers 503 so the sender retries.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SinkError {
    /// The ledger refused the commit (disk full, read-only, locked past the busy timeout).
    #[error("ledger unavailable: {0}")]
    Unavailable(String),
    /// The committer has stopped (shutdown).
    #[error("ledger committer stopped")]
    Closed,
}

struct Job {
    system: SystemName,
    notices: Vec<Notice>,
    reply: oneshot::Sender<Result<usize, SinkError>>,
}

/// Called after each commit with the systems that got new notices.
pub type OnStored = Arc<dyn Fn(&SystemName) + Send + Sync>;

/// A handle to the committer; cheap to clone.
#[derive(Clone)]
pub struct NoticeSink {
    tx: mpsc::Sender<Job>,
}

impl std::fmt::Debug for NoticeSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoticeSink").finish_non_exhaustive()
    }
}

impl NoticeSink {
    /// Start the committer thread on `ledger`.
    ///
    /// # Errors
    /// The thread cannot be spawned.
    pub fn start(
        ledger: Arc<Ledger>,
        on_stored: OnStored,
    ) -> std::io::Result<(NoticeSink, JoinHandle<()>)> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let handle = std::thread::Builder::new()
            .name("leadsync-commit".into())
            .spawn(move || committer(&ledger, rx, &on_stored))?;
        Ok((NoticeSink { tx }, handle))
    }

    /// Store `notices` durably; returns how many were new (redeliveries count 0).
    ///
    /// # Errors
    /// [`SinkError`] when the commit failed or the committer stopped: nothing of this request
    /// may be acknowledged then.
    pub async fn store(
        &self,
        system: SystemName,
        notices: Vec<Notice>,
    ) -> Result<usize, SinkError> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(Job { system, notices, reply }).await.map_err(|_| SinkError::Closed)?;
        answer.await.map_err(|_| SinkError::Closed)?
    }
}

fn committer(ledger: &Ledger, mut rx: mpsc::Receiver<Job>, on_stored: &OnStored) {
    let mut group: Vec<Job> = Vec::with_capacity(MAX_GROUP);
    while let Some(first) = rx.blocking_recv() {
        group.push(first);
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let requests: Vec<(&SystemName, &[Notice])> =
            group.iter().map(|j| (&j.system, j.notices.as_slice())).collect();
        let events: usize = group.iter().map(|j| j.notices.len()).sum();
        let result = ledger.store_notices(&requests, Utc::now());
        crate::metrics::webhook_commit_batch(events);
        match result {
            Ok(counts) => {
                let mut woken: Vec<&SystemName> = Vec::new();
                for (job, n) in group.iter().zip(&counts) {
                    if *n > 0 && !woken.contains(&&job.system) {
                        woken.push(&job.system);
                    }
                }
                for system in woken {
                    on_stored(system);
                }
                for (job, n) in group.drain(..).zip(counts) {
                    // A handler that gave up waiting (client gone) drops its receiver; the
                    // notices are stored all the same and a redelivery is recognised.
                    let _gone = job.reply.send(Ok(n));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, requests = group.len(), "cannot store webhook notices");
                let msg = e.to_string();
                for job in group.drain(..) {
                    let _gone = job.reply.send(Err(SinkError::Unavailable(msg.clone())));
                }
            }
        }
    }
    tracing::debug!("webhook committer stopped");
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use chrono::TimeZone;

    use super::*;
    use crate::domain::{NoticeKind, RemoteId};

    fn notice(key: &str) -> Notice {
        Notice {
            dedupe_key: key.into(),
            remote: RemoteId { object_type: "contact".into(), id: "1".into() },
            kind: NoticeKind::Changed,
            occurred_at: Utc.timestamp_opt(1_700_000_000, 0).single().expect("valid"),
            related: Vec::new(),
            snapshot: None,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_requests_are_all_stored_once_and_answered() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ledger = Arc::new(Ledger::open(&dir.path().join("l.db")).expect("open"));
        let woken = Arc::new(AtomicUsize::new(0));
        let w = Arc::clone(&woken);
        let (sink, thread) = NoticeSink::start(
            Arc::clone(&ledger),
            Arc::new(move |_| {
                w.fetch_add(1, Ordering::Relaxed);
            }),
        )
        .expect("start");
        let sys = SystemName("marketing".into());
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..200 {
            let sink = sink.clone();
            let sys = sys.clone();
            // Every key is sent twice, by different requests.
            tasks.spawn(
                async move { sink.store(sys, vec![notice(&format!("k{}", i % 100))]).await },
            );
        }
        let mut new = 0;
        while let Some(r) = tasks.join_next().await {
            new += r.expect("join").expect("stored");
        }
        assert_eq!(new, 100, "each key new exactly once");
        assert_eq!(ledger.pending_notices(&sys, 1000).expect("pending").len(), 100);
        assert!(woken.load(Ordering::Relaxed) >= 1);
        drop(sink);
        thread.join().expect("committer exits when the last handle is dropped");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_commit_refuses_the_request() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ledger = Arc::new(Ledger::open(&dir.path().join("l.db")).expect("open"));
        let (sink, _thread) =
            NoticeSink::start(Arc::clone(&ledger), Arc::new(|_| {})).expect("start");
        ledger.set_query_only_for_test(true);
        let sys = SystemName("marketing".into());
        let r = sink.store(sys.clone(), vec![notice("k1")]).await;
        assert!(matches!(r, Err(SinkError::Unavailable(_))), "{r:?}");
        ledger.set_query_only_for_test(false);
        assert_eq!(sink.store(sys, vec![notice("k1")]).await, Ok(1), "nothing was half-stored");
    }
}
