//! Erasing a person at a vendor (`leadsync erase`): find every record that carries an email
//! address, then delete each record through the vendor's deletion or GDPR endpoint.
//!
//! The two steps are separate so that the caller can tombstone the ids in the ledger between
//! them: a record found at a vendor is blocked in the ledger before it is deleted, so neither
//! a poll nor a webhook of it can bring the person back while the deletes run.
//!
//! Each vendor's choices are in its own `erase.rs`: HubSpot `POST /gdpr-delete` by id
//! (permanent); Salesforce `DELETE /sobjects/{type}/{id}` (to the recycle bin, which keeps the
//! record about 15 days unless it is emptied: Salesforce's REST API has no GDPR endpoint).

use std::future::Future;

use crate::domain::RemoteId;

use super::{AnyConnector, ConnectorError};

/// What a vendor answered for one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordErasure {
    /// The vendor deleted it (204).
    Deleted,
    /// The vendor does not know it (any more): nothing to delete.
    NotFound,
    /// The vendor refused or failed; `code` is a bounded error code (`ConnectorError::code`).
    Failed { code: String },
}

impl RecordErasure {
    /// The outcome of a delete call: a "not found" from the vendor counts as done.
    pub fn of(result: Result<(), ConnectorError>, not_found_codes: &[&str]) -> RecordErasure {
        match result {
            Ok(()) => RecordErasure::Deleted,
            Err(ConnectorError::Rejected { code, .. })
                if not_found_codes.iter().any(|c| *c == code) =>
            {
                RecordErasure::NotFound
            }
            Err(e) => RecordErasure::Failed { code: e.code() },
        }
    }

    pub fn is_failure(&self) -> bool {
        matches!(self, RecordErasure::Failed { .. })
    }
}

/// Find and delete a person's records at one vendor.
pub trait Erase {
    /// Every record (of every synced object type) whose email is `email` (a normalised
    /// address). Records already deleted are left out.
    fn find_by_email(
        &self,
        email: &str,
    ) -> impl Future<Output = Result<Vec<RemoteId>, ConnectorError>> + Send;

    /// Delete these records for good (as far as the vendor allows), one answer per id, in
    /// order. An `Err` means the vendor could not be asked at all (authentication,
    /// configuration); per-record failures are [`RecordErasure::Failed`].
    fn erase(
        &self,
        ids: &[RemoteId],
    ) -> impl Future<Output = Result<Vec<(RemoteId, RecordErasure)>, ConnectorError>> + Send;
}

impl Erase for AnyConnector {
    async fn find_by_email(&self, email: &str) -> Result<Vec<RemoteId>, ConnectorError> {
        match self {
            AnyConnector::Salesforce(c) => c.find_by_email(email).await,
            AnyConnector::Hubspot(c) => c.find_by_email(email).await,
        }
    }

    async fn erase(
        &self,
        ids: &[RemoteId],
    ) -> Result<Vec<(RemoteId, RecordErasure)>, ConnectorError> {
        match self {
            AnyConnector::Salesforce(c) => c.erase(ids).await,
            AnyConnector::Hubspot(c) => c.erase(ids).await,
        }
    }
}

/// Erase each id in turn; a whole-system failure (auth, configuration) stops at once, since
/// every further call would fail the same way.
pub(crate) async fn erase_each<F, Fut>(
    ids: &[RemoteId],
    not_found_codes: &[&str],
    mut delete: F,
) -> Result<Vec<(RemoteId, RecordErasure)>, ConnectorError>
where
    F: FnMut(RemoteId) -> Fut,
    Fut: Future<Output = Result<(), ConnectorError>>,
{
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let result = delete(id.clone()).await;
        if let Err(e @ (ConnectorError::Auth(_) | ConnectorError::Config(_))) = result {
            return Err(e);
        }
        let outcome = RecordErasure::of(result, not_found_codes);
        tracing::info!(
            object_type = %id.object_type,
            remote_id = %id.id,
            outcome = ?outcome,
            "erase record"
        );
        out.push((id.clone(), outcome));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rid(id: &str) -> RemoteId {
        RemoteId { object_type: "contact".into(), id: id.into() }
    }

    #[tokio::test]
    async fn not_found_counts_as_done_and_other_refusals_as_failures() {
        let ids = [rid("1"), rid("2"), rid("3")];
        let out = erase_each(&ids, &["OBJECT_NOT_FOUND"], |id| async move {
            match id.id.as_str() {
                "1" => Ok(()),
                "2" => Err(ConnectorError::Rejected {
                    code: "OBJECT_NOT_FOUND".into(),
                    message: String::new(),
                }),
                _ => Err(ConnectorError::Transient("http 503".into())),
            }
        })
        .await
        .expect("no whole failure");
        let outcomes: Vec<_> = out.into_iter().map(|(_, o)| o).collect();
        assert_eq!(
            outcomes,
            vec![
                RecordErasure::Deleted,
                RecordErasure::NotFound,
                RecordErasure::Failed { code: "transient".into() }
            ]
        );
    }

    #[tokio::test]
    async fn an_auth_failure_stops_the_system() {
        let ids = [rid("1"), rid("2")];
        let mut calls = 0;
        let out = erase_each(&ids, &[], |_| {
            calls += 1;
            async { Err(ConnectorError::Auth("http 401".into())) }
        })
        .await;
        assert!(matches!(out, Err(ConnectorError::Auth(_))));
        assert_eq!(calls, 1);
    }
}
