//! Erasing a person at HubSpot: contacts found by email (live and archived), each erased with
//! `POST /crm/v3/objects/contacts/gdpr-delete` by id (api-facts §1.2), which removes the
//! contact for good (no 90-day restore, unlike archiving).
//!
//! Deletes go by contact id, never by `idProperty=email`: by email HubSpot blocklists an
//! address it does not know, so an erase that found nothing would have a side effect, and a
//! second erase would not be a no-op.

use crate::connectors::ConnectorError;
use crate::connectors::erase::{RecordErasure, erase_each};
use crate::domain::RemoteId;

use super::{HubspotConnector, OBJECT_TYPE, wire};

/// HubSpot's category for an id it does not know.
const NOT_FOUND: &str = "OBJECT_NOT_FOUND";

impl HubspotConnector {
    /// Contacts whose email (or an email merged into them) is `email`: a batch read by
    /// `idProperty=email`, of live contacts and then of archived ones (an archived contact
    /// still holds the person's values for 90 days).
    pub(crate) async fn find_by_email(&self, email: &str) -> Result<Vec<RemoteId>, ConnectorError> {
        let req = wire::BatchReadByPropertyRequest {
            id_property: wire::EMAIL,
            inputs: vec![wire::IdInput { id: email.to_string() }],
            properties: vec![wire::EMAIL.to_string()],
        };
        let mut out: Vec<RemoteId> = Vec::new();
        for archived in [false, true] {
            let found = match self.inner.client.batch_read_by_property(&req, archived).await {
                Ok(body) => body.results,
                // Some portals answer a batch read that found nothing with a 404.
                Err(ConnectorError::Rejected { code, .. }) if code == NOT_FOUND => Vec::new(),
                Err(e) => return Err(e),
            };
            for contact in found {
                let id = RemoteId { object_type: OBJECT_TYPE.to_string(), id: contact.id };
                if !out.contains(&id) {
                    out.push(id);
                }
            }
        }
        Ok(out)
    }

    /// GDPR-delete each contact by id; a 404 means it is gone already.
    pub(crate) async fn erase(
        &self,
        ids: &[RemoteId],
    ) -> Result<Vec<(RemoteId, RecordErasure)>, ConnectorError> {
        let client = &self.inner.client;
        erase_each(ids, &[NOT_FOUND], |id| async move {
            client.gdpr_delete(&wire::GdprDeleteRequest { object_id: id.id }).await
        })
        .await
    }
}
