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
            let found = match self.inner.client.batch_read(&req, archived).await {
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

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::time::Duration;

    use serde_json::json;
    use wiremock::matchers::{body_string_contains, method, path, query_param};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    use super::*;
    use crate::connectors::hubspot::{HubspotConfig, HubspotConfigRaw};
    use crate::retry::RetryPolicy;

    const CONTACTS: &str = "/crm/v3/objects/contacts";

    fn connector(server: &MockServer) -> HubspotConnector {
        let raw = HubspotConfigRaw {
            base_url: server.uri(),
            token_env: Some("HS_TOKEN".into()),
            ..HubspotConfigRaw::default()
        };
        let env = HashMap::from([("HS_TOKEN".to_string(), "pat-na1-test".to_string())]);
        let mut cfg = HubspotConfig::from_raw(raw, "systems.marketing", &env).expect("config");
        cfg.retry = RetryPolicy {
            initial: Duration::from_millis(1),
            max_interval: Duration::from_millis(5),
            max_attempts: 2,
        };
        HubspotConnector::new(cfg).expect("connector")
    }

    #[tokio::test]
    async fn finds_live_and_archived_contacts_by_email_and_gdpr_deletes_each_by_id() {
        let server = MockServer::start().await;
        Mock::given(method("POST"))
            .and(path(format!("{CONTACTS}/batch/read")))
            .and(query_param("archived", "true"))
            .and(body_string_contains(r#""idProperty":"email""#))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "status": "COMPLETE", "results": [{"id": "12", "properties": {}}]
            })))
            .with_priority(1)
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path(format!("{CONTACTS}/batch/read")))
            .and(body_string_contains(r#""inputs":[{"id":"ann@x.test"}]"#))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "status": "COMPLETE", "results": [{"id": "11", "properties": {}}]
            })))
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path(format!("{CONTACTS}/gdpr-delete")))
            .and(body_string_contains(r#""objectId":"11""#))
            .respond_with(ResponseTemplate::new(204))
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("POST"))
            .and(path(format!("{CONTACTS}/gdpr-delete")))
            .and(body_string_contains(r#""objectId":"12""#))
            .respond_with(ResponseTemplate::new(404).set_body_json(json!({
                "status": "error", "category": "OBJECT_NOT_FOUND", "message": "not found"
            })))
            .expect(1)
            .mount(&server)
            .await;
        let c = connector(&server);
        let ids = c.find_by_email("ann@x.test").await.expect("found");
        let names: Vec<&str> = ids.iter().map(|r| r.id.as_str()).collect();
        assert_eq!(names, ["11", "12"]);
        let out = c.erase(&ids).await.expect("erased");
        assert_eq!(out[0].1, RecordErasure::Deleted);
        assert_eq!(out[1].1, RecordErasure::NotFound);
    }
}
