//! Vendor-side merges of a person's same-system duplicates (`identity.merge_at_vendor`, off by
//! default).
//!
//! A person may hold several records in one system (two HubSpot contacts); the reconciler links
//! them all and writes to the primary (the oldest link). When the system is named in
//! `merge_at_vendor`, this task asks the vendor to merge each other record into the primary.
//!
//! **Architecture Invariant:** the merger never edits links. The vendor's merge comes back
//! through the normal ingest path (HubSpot's merge event, or `hs_merged_object_ids` in a poll)
//! as a `MergedInto` fate, and the reconciler closes the merged record's link then.
//!
//! **Architecture Invariant:** a merge is asked for once. Each attempt is claimed in the ledger
//! (`vendor_merges`) before the call; transient failures are retried with backoff up to a cap,
//! refusals (4xx, unsupported) are recorded and reported, and a merge the vendor accepted is
//! not asked for again even while its link waits to close.

use crate::app::blocking;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::app::SystemHandle;
use crate::connectors::hubspot::{HubspotConnector, OBJECT_TYPE as HUBSPOT_CONTACT};
use crate::connectors::salesforce::SalesforceConnector;
use crate::connectors::{AnyConnector, ConnectorError};
use crate::domain::SystemName;
use crate::ledger::{Ledger, LedgerError, MergeOutcome, MergeRetry, MergeTask};
use crate::metrics;
use crate::settings::Settings;
use crate::shutdown::Shutdown;

/// A connector that can merge two records of one object type. Kept beside the `Connector`
/// trait rather than in it: only the merger needs it, and most vendors' answer is the default.
pub trait VendorMerge: Send + Sync + 'static {
    /// Merge record `loser` into `primary` (both of `object_type`) at the vendor and return the
    /// surviving record's id. The default answers that the vendor cannot merge (a refusal,
    /// which is recorded and not retried).
    fn merge_records(
        &self,
        object_type: &str,
        primary: &str,
        loser: &str,
    ) -> impl Future<Output = Result<String, ConnectorError>> + Send {
        let _ = (object_type, primary, loser);
        async { Err(unsupported("this vendor's API cannot merge records")) }
    }
}

fn unsupported(why: &str) -> ConnectorError {
    ConnectorError::Rejected { code: "merge_unsupported".into(), message: why.into() }
}

impl VendorMerge for HubspotConnector {
    async fn merge_records(
        &self,
        object_type: &str,
        primary: &str,
        loser: &str,
    ) -> Result<String, ConnectorError> {
        if object_type != HUBSPOT_CONTACT {
            return Err(unsupported("only HubSpot contacts are merged"));
        }
        self.merge_contacts(primary, loser).await
    }
}

/// Salesforce's REST API has no merge: the SOAP API's `merge()` does it. Leads merge into leads
/// and contacts into contacts (the caller never pairs a lead with a contact).
impl VendorMerge for SalesforceConnector {
    async fn merge_records(
        &self,
        object_type: &str,
        primary: &str,
        loser: &str,
    ) -> Result<String, ConnectorError> {
        if !matches!(object_type, "Lead" | "Contact") {
            return Err(unsupported("only Salesforce leads and contacts are merged"));
        }
        SalesforceConnector::merge_records(self, object_type, primary, loser).await
    }
}

impl VendorMerge for AnyConnector {
    async fn merge_records(
        &self,
        object_type: &str,
        primary: &str,
        loser: &str,
    ) -> Result<String, ConnectorError> {
        match self {
            AnyConnector::Salesforce(c) => c.merge_records(object_type, primary, loser).await,
            AnyConnector::Hubspot(c) => c.merge_records(object_type, primary, loser).await,
        }
    }
}

/// What the merger does, from settings.
#[derive(Debug, Clone)]
pub struct MergerSettings {
    /// Systems whose duplicates are merged at the vendor; empty: the merger does not run.
    pub systems: Vec<SystemName>,
    /// Pause between rounds.
    pub every: Duration,
    pub retry: MergeRetry,
    /// Most merges asked for per round, so that one round stays short and within rate limits.
    pub per_round: usize,
    /// Merge records linked by a fuzzy rule too (`identity.merge_fuzzy_links`).
    pub fuzzy_links: bool,
}

impl MergerSettings {
    pub fn from_settings(settings: &Settings) -> MergerSettings {
        MergerSettings {
            systems: settings.identity.merge_at_vendor.clone(),
            every: settings.identity.merge_every,
            retry: MergeRetry::default(),
            per_round: 50,
            fuzzy_links: settings.identity.merge_fuzzy_links,
        }
    }
}

/// What one round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct MergeTally {
    pub merged: usize,
    pub retry: usize,
    pub failed: usize,
}

/// One round: claim the merges that are due in `connectors`' systems, ask each vendor, and
/// record each answer.
///
/// # Errors
/// The ledger failed; merges claimed and not finished are tried again after their lease.
pub async fn merge_round<C: VendorMerge>(
    ledger: &Arc<Ledger>,
    connectors: &[(SystemName, &C)],
    settings: &MergerSettings,
) -> Result<MergeTally, LedgerError> {
    let systems: Vec<SystemName> = connectors.iter().map(|(n, _)| n.clone()).collect();
    let (retry, limit, fuzzy) = (settings.retry, settings.per_round, settings.fuzzy_links);
    let tasks =
        blocking(ledger, move |l| l.claim_merges(&systems, limit, retry, fuzzy, Utc::now()))
            .await?;
    let mut tally = MergeTally::default();
    for task in tasks {
        let Some((_, connector)) = connectors.iter().find(|(n, _)| *n == task.system) else {
            continue;
        };
        let answer =
            connector.merge_records(&task.object_type, &task.primary_id, &task.loser_id).await;
        let outcome = judge(&task, answer);
        let label = match &outcome {
            MergeOutcome::Done { .. } => {
                tally.merged += 1;
                metrics::OUTCOME_OK
            }
            MergeOutcome::Retry { .. } => {
                tally.retry += 1;
                metrics::OUTCOME_RETRY
            }
            MergeOutcome::Failed { .. } => {
                tally.failed += 1;
                metrics::OUTCOME_REJECTED
            }
        };
        metrics::vendor_merge(task.system.as_str(), label);
        blocking(ledger, move |l| l.finish_merge(&task, &outcome, retry, Utc::now())).await?;
    }
    Ok(tally)
}

/// The vendor's answer as a ledger outcome, logged (ids and codes only).
fn judge(task: &MergeTask, answer: Result<String, ConnectorError>) -> MergeOutcome {
    let (system, lead) = (task.system.as_str(), task.lead_id.as_str());
    let (primary, loser) = (task.primary_id.as_str(), task.loser_id.as_str());
    match answer {
        Ok(survivor) => {
            tracing::info!(system, lead_id = lead, primary, merged = loser, survivor = %survivor, "records merged at the vendor");
            MergeOutcome::Done { answer: format!("merged into {survivor}") }
        }
        Err(e) if e.is_retryable() => {
            tracing::warn!(system, lead_id = lead, primary, merged = loser, attempt = task.attempt, error_code = %e.code(), error = %e, "vendor merge failed; will retry");
            MergeOutcome::Retry { code: e.code(), message: e.to_string() }
        }
        Err(e) => {
            tracing::warn!(system, lead_id = lead, primary, merged = loser, error_code = %e.code(), error = %e, "vendor merge refused; not retried");
            MergeOutcome::Failed { code: e.code(), message: e.to_string() }
        }
    }
}

/// Merge rounds every `settings.every` until shutdown. A ledger that is busy or full only skips
/// a round; other ledger failures stop the daemon like any task's.
async fn run(
    ledger: Arc<Ledger>,
    systems: Vec<Arc<SystemHandle>>,
    settings: MergerSettings,
    mut shutdown: Shutdown,
) -> anyhow::Result<()> {
    let targets: Vec<(SystemName, &AnyConnector)> = systems
        .iter()
        .filter(|s| settings.systems.contains(&s.name))
        .map(|s| (s.name.clone(), &s.connector))
        .collect();
    loop {
        tokio::select! {
            () = shutdown.wait() => break,
            () = tokio::time::sleep(settings.every) => {}
        }
        match merge_round(&ledger, &targets, &settings).await {
            Ok(t) if t != MergeTally::default() => {
                tracing::debug!(
                    merged = t.merged,
                    retry = t.retry,
                    failed = t.failed,
                    "merge round"
                );
            }
            Ok(_) => {}
            Err(e) if e.is_transient() => {
                tracing::warn!(error = %e, "merge round skipped: ledger busy");
            }
            Err(e) => return Err(anyhow::Error::new(e).context("merger: ledger failed")),
        }
    }
    tracing::debug!("merger stopped");
    Ok(())
}

/// Start the merger when `settings` names a system (otherwise nothing runs).
pub fn spawn(
    tasks: &mut JoinSet<anyhow::Result<()>>,
    settings: &MergerSettings,
    systems: &[Arc<SystemHandle>],
    ledger: &Arc<Ledger>,
    shutdown: &Shutdown,
) {
    if settings.systems.is_empty() {
        return;
    }
    tasks.spawn(
        run(Arc::clone(ledger), systems.to_vec(), settings.clone(), shutdown.clone())
            .instrument(tracing::info_span!("merger")),
    );
}

#[cfg(test)]
mod tests;
