//! Erasing a person at Salesforce: Leads and Contacts found by email with SOQL, each deleted
//! with `DELETE /services/data/vXX.X/sobjects/{Lead|Contact}/{id}`.
//!
//! Salesforce's REST API has no GDPR endpoint: a delete moves the record to the recycle bin,
//! which keeps it (and `queryAll` still returns it) for about 15 days unless an administrator
//! empties the bin. The Individual object and the org's privacy features are out of scope.
//! leadsync's ledger blocks the erased ids, so the deleted rows that `queryAll` keeps returning
//! are dropped at ingest.

use reqwest::Method;

use crate::connectors::ConnectorError;
use crate::connectors::erase::{RecordErasure, erase_each};
use crate::domain::{Field, RemoteId};

use super::client::{Call, CallKind, Target};
use super::{SalesforceConnector, is_record_id, wire};

/// Codes of a delete whose record is gone (unknown id, or already in the recycle bin).
const GONE: [&str; 2] = ["NOT_FOUND", "ENTITY_IS_DELETED"];

/// A string literal for SOQL: backslashes and single quotes escaped (SOQL's own rules).
fn soql_quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        if matches!(c, '\\' | '\'') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

impl SalesforceConnector {
    /// Live Leads and Contacts (of the synced objects that map `email`) whose email is
    /// `email`; SOQL compares it case-insensitively. Converted leads are included: they
    /// still hold the person's values.
    pub(crate) async fn find_by_email(&self, email: &str) -> Result<Vec<RemoteId>, ConnectorError> {
        let this = &*self.inner;
        let mut out = Vec::new();
        for spec in &this.objects {
            let Some(prop) = spec.map.property(Field::Email) else { continue };
            let soql = format!(
                "SELECT {}, {} FROM {} WHERE {prop} = {}",
                wire::ID_FIELD,
                wire::IS_DELETED_FIELD,
                spec.name,
                soql_quote(email)
            );
            for rec in this.client.query_all(&soql, this.page_size).await? {
                let deleted = rec.get(wire::IS_DELETED_FIELD).and_then(|v| v.as_bool());
                let Some(id) = rec.get(wire::ID_FIELD).and_then(|v| v.as_str()) else { continue };
                if deleted != Some(true) {
                    out.push(RemoteId { object_type: spec.name.clone(), id: id.to_string() });
                }
            }
        }
        Ok(out)
    }

    /// Delete each record by id; a record that is unknown or already deleted counts as gone.
    pub(crate) async fn erase(
        &self,
        ids: &[RemoteId],
    ) -> Result<Vec<(RemoteId, RecordErasure)>, ConnectorError> {
        let client = &self.inner.client;
        erase_each(ids, &GONE, |id| async move {
            if !is_record_id(&id.id) || !id.object_type.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(ConnectorError::Rejected {
                    code: "MALFORMED_ID".into(),
                    message: "not a record id".into(),
                });
            }
            let target = format!("sobjects/{}/{}", id.object_type, id.id);
            let call = Call {
                method: Method::DELETE,
                target: Target::Api(&target),
                query: Vec::new(),
                headers: Vec::new(),
                body: None,
                kind: CallKind::Write,
            };
            client.call(&call).await.map(|_| ())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::soql_quote;

    #[test]
    fn soql_literals_escape_quotes_and_backslashes() {
        assert_eq!(soql_quote("o'neil@x.test"), r"'o\'neil@x.test'");
        assert_eq!(soql_quote(r"a\b@x.test"), r"'a\\b@x.test'");
    }
}
