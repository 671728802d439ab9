//! The SLA task: wakes at the earliest clock wake-up (at most every
//! `[contract.sla] check_interval_seconds`), lets the ledger evaluate the due clocks at `now`
//! ([`Ledger::sla_due`]) and delivers what they decided, once per state change:
//! - breached / escalated: a webhook alert ([`crate::alerts`]), a warn log line and the
//!   metric `leadsync_sla_alerts_total{kind}`, ids only;
//! - escalated with `[contract.sla] reassign_to`: besides the alert, the owner is written to
//!   the person's CRM record(s) ([`Ledger::sla_reassign`]: Salesforce `OwnerId`, HubSpot
//!   `hubspot_owner_id` when HubSpot has the CRM role), once, audited as `owner_reassigned`.
//!   The owner is no canonical field, so leadsync never writes it again and a later human
//!   reassignment stands; a vendor that refuses the owner dead-letters the write with its
//!   message (the alert has fired regardless);
//! - recycle (untouched too long) and refused disqualifications: the named `recycle`
//!   transition through [`Ledger::named_transition`], which reaches both systems;
//! - met / touched late: an info log line.
//!
//! Time is injected: [`tick`] takes `now`, so tests drive the clock without sleeping.

use crate::app::blocking;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::alerts::{Alert, Alerter};
use crate::ledger::{DISQUALIFY_REFUSED, Fired, Ledger, LedgerError, NamedOutcome};
use crate::reconcile::Rules;
use crate::retry::RetryPolicy;
use crate::shutdown::Shutdown;

/// Clocks evaluated per ledger transaction.
const BATCH: usize = 500;

/// The metric counting SLA alerts and recycles by kind.
pub const SLA_ALERTS_TOTAL: &str = "leadsync_sla_alerts_total";

/// What one [`tick`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TickReport {
    /// Actions delivered (all kinds).
    pub delivered: usize,
    /// Alerts that reached the webhook.
    pub alerts_sent: usize,
    /// Alerts the webhook did not take after retries (logged; not retried later).
    pub alerts_failed: usize,
    /// Recycle transitions applied.
    pub recycled: usize,
    /// When a clock wants looking at next.
    pub next_wakeup: Option<DateTime<Utc>>,
}

/// Evaluate the clocks due at `now` and deliver their actions. Does nothing without
/// `[contract.sla]`.
///
/// # Errors
/// Ledger failures; undelivered actions stay stored and are delivered on a later tick.
pub async fn tick(
    ledger: &Arc<Ledger>,
    rules: &Arc<Rules>,
    alerter: &Alerter,
    now: DateTime<Utc>,
) -> Result<TickReport, LedgerError> {
    let mut report = TickReport::default();
    let Some(policy) = rules.contract.as_ref().and_then(|c| c.sla.clone()) else {
        return Ok(report);
    };
    loop {
        let p = policy.clone();
        let due = blocking(ledger, move |l| l.sla_due(&p, now, BATCH)).await?;
        let full = due.len() == BATCH;
        for clock in due {
            let mut delivered = Vec::new();
            for fired in &clock.pending {
                deliver(
                    ledger,
                    rules,
                    alerter,
                    &clock.lead_id,
                    &clock.links,
                    fired,
                    now,
                    &mut report,
                )
                .await?;
                delivered.push(fired.clone());
            }
            report.delivered += delivered.len();
            let id = clock.lead_id.clone();
            blocking(ledger, move |l| l.sla_delivered(&id, &delivered, now)).await?;
        }
        if !full {
            break;
        }
    }
    report.next_wakeup = blocking(ledger, Ledger::sla_next_wakeup).await?;
    Ok(report)
}

#[allow(clippy::too_many_arguments, reason = "one action and where it goes")]
async fn deliver(
    ledger: &Arc<Ledger>,
    rules: &Arc<Rules>,
    alerter: &Alerter,
    lead_id: &str,
    links: &[String],
    fired: &Fired,
    now: DateTime<Utc>,
    report: &mut TickReport,
) -> Result<(), LedgerError> {
    let kind = fired.kind();
    match fired {
        Fired::Breached { due_at } | Fired::Escalated { due_at, .. } => {
            let reassign_to = match fired {
                Fired::Escalated { reassign_to, .. } => reassign_to.clone(),
                _ => None,
            };
            tracing::warn!(lead_id, kind, "SLA alert: no first touch by the deadline");
            metrics::counter!(SLA_ALERTS_TOTAL, "kind" => kind).increment(1);
            let alert = Alert {
                kind,
                lead_id: lead_id.to_string(),
                due_at: *due_at,
                reassign_to: reassign_to.clone(),
                links: links.to_vec(),
            };
            if alerter.enabled() {
                match alerter.send(&alert).await {
                    Ok(()) => report.alerts_sent += 1,
                    Err(e) => {
                        report.alerts_failed += 1;
                        tracing::warn!(lead_id, kind, error = %e.code(), "SLA alert webhook failed");
                    }
                }
            }
            if let Some(owner) = reassign_to {
                let (id, rules) = (lead_id.to_string(), Arc::clone(rules));
                let records =
                    blocking(ledger, move |l| l.sla_reassign(&id, &owner, &rules, now)).await?;
                tracing::info!(lead_id, records = records.len(), "SLA owner reassignment queued");
            }
        }
        Fired::Recycle { reason } | Fired::DisqualifyRefused { refusal: reason } => {
            let reason = if matches!(fired, Fired::Recycle { .. }) {
                reason.clone()
            } else {
                DISQUALIFY_REFUSED.into()
            };
            metrics::counter!(SLA_ALERTS_TOTAL, "kind" => kind).increment(1);
            let (r, id, rules) = (reason.clone(), lead_id.to_string(), Arc::clone(rules));
            let outcome = blocking(ledger, move |l| l.sla_recycle(&id, &r, &rules, now)).await?;
            match outcome {
                None => {
                    tracing::info!(
                        lead_id,
                        kind,
                        "SLA recycle skipped: the person left the MQL path"
                    );
                }
                Some(NamedOutcome::Applied { .. }) => {
                    report.recycled += 1;
                    tracing::info!(lead_id, kind, reason = %reason, "SLA recycled to nurture");
                }
                Some(NamedOutcome::Refused { refusal, .. }) => {
                    tracing::warn!(lead_id, kind, refusal = %refusal, "SLA recycle refused by the transition table");
                }
                Some(NamedOutcome::NotFound) => {
                    tracing::warn!(lead_id, kind, "SLA recycle: person no longer in the ledger");
                }
            }
        }
        Fired::Met { .. } | Fired::TouchedLate { .. } => {
            tracing::info!(lead_id, kind, "SLA first touch");
        }
    }
    Ok(())
}

/// How long to sleep after a tick: until the next wake-up, bounded by `max`, at least 1 s.
pub fn sleep_for(next: Option<DateTime<Utc>>, now: DateTime<Utc>, max: Duration) -> Duration {
    let until = next.map_or(max, |n| (n - now).to_std().unwrap_or(Duration::ZERO)).min(max);
    until.max(Duration::from_secs(1))
}

/// Start the SLA task when `[contract.sla]` is configured.
pub fn spawn(
    tasks: &mut JoinSet<anyhow::Result<()>>,
    ledger: &Arc<Ledger>,
    rules: &Arc<Rules>,
    shutdown: &Shutdown,
) {
    let Some(contract) = rules.contract.as_ref() else { return };
    if contract.sla.is_none() {
        return;
    }
    let max = contract.sla_ops.check_interval;
    let alerter = match Alerter::new(contract.sla_ops.alert_webhook.clone(), RetryPolicy::default())
    {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %e, "SLA alert client cannot be built; SLA task not started");
            return;
        }
    };
    let (ledger, rules, mut shutdown) = (Arc::clone(ledger), Arc::clone(rules), shutdown.clone());
    tasks.spawn(
        async move {
            loop {
                let now = Utc::now();
                let wait = match tick(&ledger, &rules, &alerter, now).await {
                    Ok(r) => sleep_for(r.next_wakeup, Utc::now(), max),
                    Err(e) if e.is_transient() => {
                        tracing::warn!(error = %e, "SLA tick failed; retrying");
                        max
                    }
                    Err(e) => return Err(anyhow::Error::new(e).context("SLA task")),
                };
                tokio::select! {
                    () = shutdown.wait() => return Ok(()),
                    () = tokio::time::sleep(wait) => {}
                }
            }
        }
        .instrument(tracing::info_span!("sla")),
    );
}

#[cfg(test)]
mod tests;
