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
use crate::ledger::{Ledger, LedgerError, Sweep};
use crate::reconcile::Rules;
use crate::shutdown::Shutdown;

/// Persons re-evaluated per ledger transaction: short enough that webhook acknowledgements
/// and the reconciler, which share the one writer, do not wait long.
pub const BATCH: usize = 500;

/// What one sweep did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SweepReport {
    pub persons: usize,
    /// Persons whose governed stage changed (placed or moved by a rule).
    pub moved: usize,
}

/// Re-evaluate the persons `which` names, batch by batch, at `now`.
///
/// # Errors
/// Ledger failures; batches committed before one fails stay committed.
pub async fn sweep(
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
