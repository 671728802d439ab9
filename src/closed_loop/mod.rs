//! The closed-loop poller: per configured system, read opportunities, campaign touches and
//! sales activities with [`ClosedLoopSource::poll_closed_loop`] from the stored closed-loop cursor and store
//! each page with its cursor in one ledger transaction, until shutdown.
//!
//! It runs beside the lead pipeline and shares nothing with it but the ledger's writer: its
//! own cursor, its own error record (`closed_loop_cursors`), its own interval. Nothing it
//! stores feeds the reconciler; reports read it (`leadsync report attribution`), and the
//! activities count as contact attempts on the SLA clocks (in the ledger, when stored).
//!
//! Errors are handled by kind, as the lead pollers do: transient and rate-limited polls are
//! retried after the backoff (or the vendor's `Retry-After`, when longer); auth, config and
//! rejected errors wait twelve backoffs, since an operator has to act (typically a missing
//! API right to opportunities or deals). A ledger that cannot be written for a passing
//! reason (busy, disk full) is retried too; any other ledger error stops the daemon, like
//! every other task.

pub mod config;

use crate::app::blocking;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use chrono::Utc;
use tokio::task::JoinSet;
use tracing::Instrument;

pub use config::{ClosedLoopRaw, ClosedLoopSettings};

use crate::connectors::closed_loop::ClosedLoopSource;
use crate::connectors::{AnyConnector, ConnectorError};
use crate::domain::SystemName;
use crate::ledger::Ledger;
use crate::shutdown::Shutdown;

/// Start one closed-loop poller per system that `settings` selects (none when disabled).
/// `parts` gives a system handle's name and connector, so the caller's handle type (which
/// also carries the lead pipeline's state) stays private to it.
pub fn spawn<T: Send + Sync + 'static>(
    tasks: &mut JoinSet<anyhow::Result<()>>,
    settings: &ClosedLoopSettings,
    ledger: &Arc<Ledger>,
    systems: &[Arc<T>],
    parts: fn(&T) -> (&SystemName, &AnyConnector),
    shutdown: &Shutdown,
) {
    for sys in systems {
        let (name, _) = parts(sys);
        if !settings.polls(name) {
            continue;
        }
        let span = tracing::info_span!("closed_loop", system = %name);
        let sys = Arc::clone(sys);
        let ledger = Arc::clone(ledger);
        let settings = settings.clone();
        let shutdown = shutdown.clone();
        tasks.spawn(
            async move {
                let (name, connector) = parts(&sys);
                run(connector, name, &ledger, &settings, shutdown).await
            }
            .instrument(span),
        );
    }
}

/// How long to wait after a failed poll.
pub fn wait_after_error(e: &ConnectorError, backoff: Duration) -> Duration {
    match e {
        ConnectorError::RateLimited { retry_after: Some(d) } => (*d).max(backoff),
        ConnectorError::RateLimited { retry_after: None } | ConnectorError::Transient(_) => backoff,
        ConnectorError::Auth(_) | ConnectorError::Config(_) | ConnectorError::Rejected { .. } => {
            backoff.saturating_mul(12)
        }
    }
}

/// Wait `d`, or less if shutdown fires. Returns false on shutdown.
async fn idle(shutdown: &mut Shutdown, d: Duration) -> bool {
    tokio::select! {
        () = shutdown.wait() => false,
        () = tokio::time::sleep(d) => true,
    }
}

/// Poll one system until shutdown.
///
/// # Errors
/// The ledger failed for a reason that will not pass (the daemon stops).
pub async fn run<S: ClosedLoopSource + ?Sized>(
    source: &S,
    name: &SystemName,
    ledger: &Arc<Ledger>,
    settings: &ClosedLoopSettings,
    mut shutdown: Shutdown,
) -> anyhow::Result<()> {
    while !shutdown.is_triggered() {
        let n = name.clone();
        let cursor = match blocking(ledger, move |l| l.closed_loop_cursor(&n)).await {
            Ok(c) => c,
            Err(e) if e.is_transient() => {
                tracing::warn!(error = %e, "closed-loop cursor unreadable; retrying");
                if !idle(&mut shutdown, settings.error_backoff).await {
                    break;
                }
                continue;
            }
            Err(e) => return Err(e).context("cannot read the closed-loop cursor"),
        };
        match source.poll_closed_loop(&cursor).await {
            Ok(page) => {
                let more = page.poll_again_after.is_zero();
                let wait = page.poll_again_after.max(settings.poll_interval);
                let n = name.clone();
                let next = page.next_cursor;
                let (opps, touches, acts) = (page.opportunities, page.touches, page.activities);
                let read = opps.len() + touches.len() + acts.len();
                let stored = blocking(ledger, move |l| {
                    l.store_closed_loop(&n, &opps, &touches, &acts, Some(&next), Utc::now())
                })
                .await;
                match stored {
                    Ok(s) => {
                        crate::metrics::closed_loop_stored(
                            name.as_str(),
                            crate::metrics::OBJECT_OPPORTUNITY,
                            s.opportunities as u64,
                        );
                        crate::metrics::closed_loop_stored(
                            name.as_str(),
                            crate::metrics::OBJECT_TOUCH,
                            s.touches as u64,
                        );
                        crate::metrics::closed_loop_stored(
                            name.as_str(),
                            crate::metrics::OBJECT_ACTIVITY,
                            s.activities as u64,
                        );
                        tracing::debug!(
                            read,
                            opportunities = s.opportunities,
                            touches = s.touches,
                            activities = s.activities,
                            attempts = s.attempts,
                            unchanged = s.unchanged,
                            stale = s.stale,
                            "closed-loop page committed"
                        );
                    }
                    Err(e) if e.is_transient() => {
                        // Nothing was committed, cursor included: the same page is read again.
                        tracing::warn!(error = %e, "closed-loop page not stored; retrying");
                        if !idle(&mut shutdown, settings.error_backoff).await {
                            break;
                        }
                        continue;
                    }
                    Err(e) => return Err(e).context("cannot store a closed-loop page"),
                }
                if more {
                    continue;
                }
                if !idle(&mut shutdown, wait).await {
                    break;
                }
            }
            Err(e) => {
                let code = e.code();
                tracing::warn!(error_code = %code, error = %e, "closed-loop poll failed");
                let msg = e.to_string();
                let n = name.clone();
                if let Err(le) =
                    blocking(ledger, move |l| l.record_closed_loop_error(&n, &msg, Utc::now()))
                        .await
                {
                    tracing::warn!(error = %le, "closed-loop error not recorded");
                }
                if !idle(&mut shutdown, wait_after_error(&e, settings.error_backoff)).await {
                    break;
                }
            }
        }
    }
    tracing::debug!("closed-loop poller stopped");
    Ok(())
}

#[cfg(test)]
mod tests;
