//! The re-evaluation task of the lead contract: what the rules say about a person is
//! otherwise looked at only when one of their records changes, so two things would go
//! unnoticed without it.
//! - **A rule change.** The ledger keeps the fingerprint of the rules everyone was last
//!   evaluated with ([`Contract::rules_hash`]); at start, a different one re-evaluates every
//!   person once, in batches, with the code `leadsync plan` previews, applying it this time
//!   through the usual decision → outbox path. The fingerprint is stored only once the
//!   sweep ends, so a sweep cut short runs again at the next start (harmless: rules are edge
//!   triggered, and a person already moved is not moved twice).
//! - **Time.** A rule with an event window (`event meeting_booked within 14 days`) can stop
//!   or start holding with no change at all. When a rule has one, the persons with recorded
//!   events are re-evaluated every `[contract] reevaluate_every_secs` (default an hour), so a
//!   window is noticed within that bound.
//!
//! Time is injected: [`sweep`] and [`at_start`] take `now`, so tests drive it without
//! sleeping.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::app::blocking;
use crate::contract::config::Contract;
use crate::ledger::{Ledger, LedgerError, LedgerReader, Sweep, ToWrite};
use crate::reconcile::Rules;
use crate::shutdown::Shutdown;

/// Persons read and evaluated per read transaction of the scan, and at most written per
/// ledger transaction (see [`WRITE_BUDGET`]).
pub const BATCH: usize = 500;

/// A write transaction of the sweep ends after the first person that brings it past this
/// long, so that webhook acknowledgements and the reconciler, which share the one writer, do
/// not wait long: about what a transaction of 500 persons took when every person of it was
/// evaluated inside it.
pub const WRITE_BUDGET: std::time::Duration = std::time::Duration::from_millis(50);

/// What one sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub persons: usize,
    /// Persons whose governed stage changed (placed or moved by a rule).
    pub moved: usize,
}

/// Persons the scan found something to write for, with how many it looked at to find them.
struct Found {
    persons: usize,
    ids: Vec<ToWrite>,
}

/// Re-evaluate the persons `which` names at `now`, on both cores: a read connection reads
/// and evaluates everyone in batches ([`LedgerReader::sweep_scan`], pure apart from the
/// reads) and hands on only the persons something is to be written for; the writer stores
/// them ([`Ledger::reevaluate_persons`]), up to [`BATCH`] persons or [`WRITE_BUDGET`] per
/// transaction, while the reader goes on. Most persons of a sweep change nothing, so most
/// of the work never takes the one writer.
///
/// Nothing a concurrent change writes is lost: the writer reads each person again inside its
/// own transaction and evaluates them on that, never on what the scan saw. A person the scan
/// found nothing to do for, on one consistent snapshot, is left alone; a change committed
/// after that snapshot is evaluated with the same rules by whoever committed it (the
/// reconciler runs the rules on every change), so the result is that of the sweep having
/// looked at the person just before the change.
///
/// Without a read connection (a ledger that is not a file) the sweep runs in the writer
/// alone, batch by batch ([`Ledger::reevaluate_batch`]).
///
/// # Errors
/// Ledger failures; transactions committed before one fails stay committed.
pub async fn sweep(
    ledger: &Arc<Ledger>,
    rules: &Arc<Rules>,
    which: Sweep,
    now: DateTime<Utc>,
) -> Result<SweepReport, LedgerError> {
    let reader = match LedgerReader::open(ledger.path()) {
        Ok(r) => r,
        Err(e) => {
            tracing::debug!(error = %e, "no read connection; re-evaluating in the writer alone");
            return sweep_in_writer(ledger, rules, which, now).await;
        }
    };
    let (found_tx, mut found) = tokio::sync::mpsc::channel::<Result<Found, LedgerError>>(2);
    let r = Arc::clone(rules);
    let scanner = tokio::task::spawn_blocking(move || scan(&reader, &r, which, now, &found_tx));
    let mut report = SweepReport::default();
    while let Some(f) = found.recv().await {
        let f = f?;
        report.persons += f.persons;
        let mut ids = f.ids;
        while !ids.is_empty() {
            let (r, chunk) = (Arc::clone(rules), ids.clone());
            let done = blocking(ledger, move |l| {
                l.reevaluate_persons(&r, which, &chunk, WRITE_BUDGET, now)
            })
            .await?;
            report.moved += done.moved;
            ids.drain(..done.persons.clamp(1, ids.len()));
        }
    }
    // The channel closes when the scan ends or fails; a failure was sent before that.
    scanner.await.map_err(|e| LedgerError::Corrupt(format!("re-evaluation scan failed: {e}")))?;
    Ok(report)
}

/// The read half of [`sweep`]: scan everyone in batches and send the persons to write, at
/// most [`BATCH`] at a time, until the end or until the writer stops listening.
fn scan(
    reader: &LedgerReader,
    rules: &Rules,
    which: Sweep,
    now: DateTime<Utc>,
    out: &tokio::sync::mpsc::Sender<Result<Found, LedgerError>>,
) {
    let mut pending = Found { persons: 0, ids: Vec::new() };
    let mut after: Option<String> = None;
    loop {
        let (batch, ids) = match reader.sweep_scan(rules, which, after.as_deref(), BATCH, now) {
            Ok(b) => b,
            Err(e) => {
                // The writer stops at the error; if it is gone already, so is the sweep.
                let _ = out.blocking_send(Err(e));
                return;
            }
        };
        pending.persons += batch.persons;
        pending.ids.extend(ids);
        let last = batch.next.is_none();
        while pending.ids.len() >= BATCH
            || (last && (pending.persons > 0 || !pending.ids.is_empty()))
        {
            let rest = pending.ids.split_off(pending.ids.len().min(BATCH));
            let send = std::mem::replace(&mut pending, Found { persons: 0, ids: rest });
            if out.blocking_send(Ok(send)).is_err() {
                return;
            }
        }
        match batch.next {
            Some(next) => after = Some(next),
            None => return,
        }
    }
}

/// [`sweep`] in the writer alone, batch by batch: each batch reads, evaluates and writes
/// [`BATCH`] persons in one transaction.
async fn sweep_in_writer(
    ledger: &Arc<Ledger>,
    rules: &Arc<Rules>,
    which: Sweep,
    now: DateTime<Utc>,
) -> Result<SweepReport, LedgerError> {
    let mut report = SweepReport::default();
    let mut after: Option<String> = None;
    loop {
        let r = Arc::clone(rules);
        let from = after.take();
        let batch =
            blocking(ledger, move |l| l.reevaluate_batch(&r, which, from.as_deref(), BATCH, now))
                .await?;
        report.persons += batch.persons;
        report.moved += batch.moved;
        match batch.next {
            Some(next) => after = Some(next),
            None => return Ok(report),
        }
    }
}

/// At start: re-evaluate everyone when the rules differ from the ones the ledger last
/// evaluated everyone with, then record them. `None`: the rules are unchanged (or there is
/// no contract) and nothing ran.
///
/// # Errors
/// Ledger failures; the fingerprint is then not recorded and the next start tries again.
pub async fn at_start(
    ledger: &Arc<Ledger>,
    rules: &Arc<Rules>,
    now: DateTime<Utc>,
) -> Result<Option<SweepReport>, LedgerError> {
    let Some(contract) = rules.contract.as_deref() else { return Ok(None) };
    let hash = contract.rules_hash();
    if blocking(ledger, |l| l.rules_hash()).await?.as_deref() == Some(hash.as_str()) {
        return Ok(None);
    }
    let report = sweep(ledger, rules, Sweep::Everyone, now).await?;
    blocking(ledger, move |l| l.set_rules_hash(&hash, now)).await?;
    Ok(Some(report))
}

/// Start the task when a contract is configured: the start-up check, then (only when a rule
/// has an event window) the periodic sweep.
pub fn spawn(
    tasks: &mut JoinSet<anyhow::Result<()>>,
    ledger: &Arc<Ledger>,
    rules: &Arc<Rules>,
    shutdown: &Shutdown,
) {
    let Some(contract) = rules.contract.as_deref() else { return };
    let (every, windows) = (contract.reevaluate_every, Contract::has_windows(contract));
    let (ledger, rules, mut shutdown) = (Arc::clone(ledger), Arc::clone(rules), shutdown.clone());
    tasks.spawn(
        async move {
            match at_start(&ledger, &rules, Utc::now()).await {
                Ok(Some(r)) => {
                    tracing::info!(persons = r.persons, moved = r.moved, "rules changed; everyone re-evaluated");
                }
                Ok(None) => {}
                Err(e) if e.is_transient() => {
                    tracing::warn!(error = %e, "re-evaluation after a rule change failed; it runs again at the next start");
                }
                Err(e) => return Err(anyhow::Error::new(e).context("re-evaluation")),
            }
            if !windows {
                return Ok(());
            }
            loop {
                tokio::select! {
                    () = shutdown.wait() => return Ok(()),
                    () = tokio::time::sleep(every) => {}
                }
                match sweep(&ledger, &rules, Sweep::WithEvents, Utc::now()).await {
                    Ok(r) => tracing::debug!(persons = r.persons, moved = r.moved, "event windows re-evaluated"),
                    Err(e) if e.is_transient() => {
                        tracing::warn!(error = %e, "re-evaluation of event windows failed; retrying next period");
                    }
                    Err(e) => return Err(anyhow::Error::new(e).context("re-evaluation")),
                }
            }
        }
        .instrument(tracing::info_span!("reevaluate")),
    );
}

#[cfg(test)]
mod tests;
