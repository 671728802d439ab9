//! HubSpot's JSON, as private serde structs: the only place in leadsync that knows it.
//!
//! Responses are read leniently (every field optional, unknown fields ignored, ids as string or
//! number) because HubSpot's own error-handling guide says to treat every field as optional and
//! a 207 body may omit `errors[]` details (api-facts §1.5, §7).

use std::collections::BTreeMap;

use serde::de::{self, Deserializer};
use serde::{Deserialize, Serialize};

/// Property name of the modification time HubSpot keeps on contacts.
pub(super) const LAST_MODIFIED: &str = "lastmodifieddate";
/// Property name of the numeric object id, used as the tie-breaker in search.
pub(super) const OBJECT_ID: &str = "hs_object_id";
/// Read-only through the contacts API: never sent in a write.
pub(super) const EMAIL_OPTOUT: &str = "hs_email_optout";
pub(super) const EMAIL: &str = "email";
/// On a merge survivor: the ids merged into it, `;`-separated (read-only).
pub(super) const MERGED_IDS: &str = "hs_merged_object_ids";
/// "Last contacted": when the latest call, meeting, sales email (or other contact logged as
/// one) happened; HubSpot computes it, the API cannot write it.
pub(super) const LAST_CONTACTED: &str = "notes_last_contacted";

// ---------------------------------------------------------------------------------------------
// Requests

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct SearchRequest {
    pub filter_groups: Vec<FilterGroup>,
    pub sorts: Vec<Sort>,
    pub properties: Vec<String>,
    pub limit: u32,
}

#[derive(Debug, Serialize)]
pub(super) struct FilterGroup {
    pub filters: Vec<Filter>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Filter {
    pub property_name: &'static str,
    pub operator: &'static str,
    pub value: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Sort {
    pub property_name: &'static str,
    pub direction: &'static str,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct BatchReadRequest {
    pub inputs: Vec<IdInput>,
    pub properties: Vec<String>,
    /// Properties whose history (each value with its timestamp) comes back too.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub properties_with_history: Vec<String>,
}

#[derive(Debug, Serialize)]
pub(super) struct IdInput {
    pub id: String,
}

#[derive(Debug, Serialize)]
pub(super) struct BatchUpdateRequest {
    pub inputs: Vec<UpdateInput>,
}

#[derive(Debug, Serialize)]
pub(super) struct UpdateInput {
    pub id: String,
    pub properties: BTreeMap<String, String>,
}

#[derive(Debug, Serialize)]
pub(super) struct BatchUpsertRequest {
    pub inputs: Vec<UpsertInput>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct UpsertInput {
    /// The email address: upserts are keyed by `idProperty = "email"`.
    pub id: String,
    pub id_property: &'static str,
    pub properties: BTreeMap<String, String>,
}

/// `POST /batch/read` keyed by email (`idProperty: "email"`, each input id an address).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct BatchReadByPropertyRequest {
    pub id_property: &'static str,
    pub inputs: Vec<IdInput>,
    pub properties: Vec<String>,
}

/// `POST /gdpr-delete` (api-facts §1.2): erase one contact for good, by id.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct GdprDeleteRequest {
    pub object_id: String,
}

/// `POST /communication-preferences/v4/statuses/batch/unsubscribe-all`: email addresses.
#[derive(Debug, Serialize)]
pub(super) struct BatchEmailsRequest {
    pub inputs: Vec<String>,
}

/// `POST /crm/v3/objects/contacts/merge` (api-facts §1.2): `objectIdToMerge` is merged into
/// `primaryObjectId`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct MergeRequest {
    pub primary_object_id: String,
    pub object_id_to_merge: String,
}

// ---------------------------------------------------------------------------------------------
// Responses

/// One contact as the API returns it.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Contact {
    #[serde(deserialize_with = "string_or_number")]
    pub id: String,
    #[serde(default, deserialize_with = "lenient_properties")]
    pub properties: BTreeMap<String, Option<String>>,
    #[serde(default)]
    pub updated_at: Option<String>,
    /// Set on upsert results: whether the record was created.
    #[serde(default)]
    pub new: Option<bool>,
    /// When the contact was archived (only on archived records).
    #[serde(default)]
    pub archived_at: Option<String>,
    /// The values each asked property held, newest first (only when asked for).
    #[serde(default)]
    pub properties_with_history: BTreeMap<String, Vec<HistoryValue>>,
}

/// One value a property held, and since when.
#[derive(Debug, Deserialize)]
pub(super) struct HistoryValue {
    #[serde(default)]
    pub value: Option<String>,
    #[serde(default)]
    pub timestamp: Option<String>,
}

/// `GET /objects/contacts` and `POST /search`.
#[derive(Debug, Deserialize)]
pub(super) struct ListResponse {
    #[serde(default)]
    pub results: Vec<Contact>,
    /// Present only when another page exists.
    #[serde(default)]
    pub paging: Option<Paging>,
}

#[derive(Debug, Deserialize)]
pub(super) struct Paging {
    #[serde(default)]
    pub next: Option<PagingNext>,
}

#[derive(Debug, Deserialize)]
pub(super) struct PagingNext {
    /// Opaque; sent back as `after` for the next page.
    #[serde(default, deserialize_with = "opt_string_or_number")]
    pub after: Option<String>,
}

impl ListResponse {
    pub fn has_more(&self) -> bool {
        self.paging.as_ref().is_some_and(|p| p.next.is_some())
    }

    /// The `after` value of the next page, when there is one.
    pub fn next_after(&self) -> Option<&str> {
        self.paging.as_ref()?.next.as_ref()?.after.as_deref()
    }
}

fn opt_string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<serde_json::Value>::deserialize(d)? {
        Some(serde_json::Value::String(s)) => Some(s),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        _ => None,
    })
}

/// Batch read/update/upsert, 200 or 207.
#[derive(Debug, Deserialize)]
pub(super) struct BatchResponse {
    #[serde(default)]
    pub results: Vec<Contact>,
    #[serde(default)]
    pub errors: Vec<StandardError>,
}

/// Batch unsubscribe-all, 200 or 207. Each result names its address; the per-subscription
/// `statuses` are not needed and are not read.
#[derive(Debug, Deserialize)]
pub(super) struct UnsubscribeBatchResponse {
    #[serde(default)]
    pub results: Vec<SubscriberResult>,
    #[serde(default)]
    pub errors: Vec<StandardError>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct SubscriberResult {
    #[serde(default, deserialize_with = "lenient_string")]
    pub subscriber_id_string: Option<String>,
}

/// One entry of a 207's `errors[]`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct StandardError {
    #[serde(default)]
    pub category: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub sub_category: Option<String>,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub context: Option<BTreeMap<String, serde_json::Value>>,
    #[serde(default)]
    pub errors: Vec<ErrorDetail>,
}

impl StandardError {
    /// The input ids this error is about (`context.ids`).
    pub fn context_ids(&self) -> Vec<String> {
        let Some(ctx) = &self.context else { return Vec::new() };
        match ctx.get("ids") {
            Some(serde_json::Value::Array(ids)) => ids.iter().filter_map(scalar_string).collect(),
            Some(v) => scalar_string(v).into_iter().collect(),
            None => Vec::new(),
        }
    }
}

impl StandardError {
    /// Every scalar in `context`, under any key: which key a communication preferences error
    /// uses to name an address is not documented (`ids`, `subscriberIdString`, `emails`, ...).
    pub fn context_values(&self) -> Vec<String> {
        let Some(ctx) = &self.context else { return Vec::new() };
        ctx.values()
            .flat_map(|v| match v {
                serde_json::Value::Array(items) => items.iter().filter_map(scalar_string).collect(),
                other => scalar_string(other).into_iter().collect::<Vec<_>>(),
            })
            .collect()
    }
}

/// A whole-call error body (`{status:"error", message, category, ...}`), including the 429
/// shape with `policyName`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ErrorBody {
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub category: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub sub_category: Option<String>,
    #[serde(default)]
    pub correlation_id: Option<String>,
    #[serde(default)]
    pub policy_name: Option<String>,
    #[serde(default)]
    pub errors: Vec<ErrorDetail>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ErrorDetail {
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default, rename = "in")]
    pub in_: Option<String>,
    #[serde(default, deserialize_with = "lenient_string")]
    pub sub_category: Option<String>,
}

/// One item of the JSON list HubSpot embeds in a `VALIDATION_ERROR` message
/// (`Property values were not valid: [{"isValid":false,"message":"...","error":"INVALID_EMAIL","name":"email"}]`).
#[derive(Debug, Deserialize)]
struct PropertyValidation {
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    name: Option<String>,
}

/// Parse an error body; anything unreadable becomes an empty one.
pub(super) fn parse_error_body(body: &[u8]) -> ErrorBody {
    serde_json::from_slice(body).unwrap_or_default()
}

/// A description of a vendor error without field values: HubSpot's own `message` often
/// quotes the rejected value (an email address), so it is never passed on. What remains is the
/// category, sub-category, detail codes and the property names with their error codes.
pub(super) fn safe_description(
    category: Option<&str>,
    sub_category: Option<&str>,
    message: Option<&str>,
    details: &[ErrorDetail],
) -> String {
    let mut parts: Vec<String> = Vec::new();
    if let Some(c) = category {
        parts.push(c.to_string());
    }
    if let Some(s) = sub_category {
        parts.push(s.to_string());
    }
    for d in details {
        let mut p = String::new();
        if let Some(i) = &d.in_ {
            p.push_str(i);
            p.push('=');
        }
        if let Some(c) = d.code.as_ref().or(d.sub_category.as_ref()) {
            p.push_str(c);
        }
        if !p.is_empty() {
            parts.push(p);
        }
    }
    // A 409 names the contact that holds the address ("... already exists. Existing ID:
    // 123"): its id (never the address) lets the ledger say which record holds it.
    if let Some(id) = message.and_then(existing_id) {
        parts.push(format!("existing_id={id}"));
    }
    if let Some(items) = message.and_then(embedded_validations) {
        for it in items {
            parts.push(format!(
                "{}={}",
                it.name.as_deref().unwrap_or("?"),
                it.error.as_deref().unwrap_or("invalid")
            ));
        }
    }
    if parts.is_empty() { "no details given".into() } else { parts.join(", ") }
}

/// The digits after `Existing ID:` in a 409 message.
fn existing_id(message: &str) -> Option<&str> {
    let rest = message.split("Existing ID:").nth(1)?.trim_start();
    let end = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
    (end > 0).then(|| &rest[..end])
}

fn embedded_validations(message: &str) -> Option<Vec<PropertyValidation>> {
    let start = message.find('[')?;
    serde_json::from_str(&message[start..]).ok()
}

// ---------------------------------------------------------------------------------------------
// Lenient scalars

fn scalar_string(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn string_or_number<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let v = serde_json::Value::deserialize(d)?;
    scalar_string(&v).ok_or_else(|| de::Error::custom("expected a string or number id"))
}

/// `subCategory` is a string in practice but typed as an object in one spec revision.
fn lenient_string<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let v = Option::<serde_json::Value>::deserialize(d)?;
    Ok(v.as_ref().and_then(scalar_string))
}

/// Property values travel as strings or null; numbers and booleans are accepted as their text.
fn lenient_properties<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<String, Option<String>>, D::Error> {
    let raw = Option::<BTreeMap<String, serde_json::Value>>::deserialize(d)?.unwrap_or_default();
    Ok(raw.into_iter().map(|(k, v)| (k, scalar_string(&v))).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contact_reads_leniently() {
        let c: Contact = serde_json::from_str(
            r#"{"id":12,"properties":{"email":"a@b.test","n":5,"x":null},"extra":1}"#,
        )
        .expect("parses");
        assert_eq!(c.id, "12");
        assert_eq!(c.properties.get("n"), Some(&Some("5".into())));
        assert_eq!(c.properties.get("x"), Some(&None));
    }

    #[test]
    fn error_body_tolerates_anything() {
        let e = parse_error_body(b"<html>oops</html>");
        assert!(e.category.is_none());
        let e = parse_error_body(br#"{"policyName":"DAILY","subCategory":{"a":1}}"#);
        assert_eq!(e.policy_name.as_deref(), Some("DAILY"));
        assert!(e.sub_category.is_none());
    }

    #[test]
    fn safe_description_names_the_contact_holding_an_address_but_not_the_address() {
        let msg = "A contact with the email 'jane@x.test' already exists. Existing ID: 4711";
        let d = safe_description(Some("CONFLICT"), None, Some(msg), &[]);
        assert_eq!(d, "CONFLICT, existing_id=4711");
        let d = safe_description(Some("CONFLICT"), None, Some("Contact already exists"), &[]);
        assert_eq!(d, "CONFLICT");
    }

    #[test]
    fn safe_description_drops_values() {
        let msg = r#"Property values were not valid: [{"isValid":false,"message":"Email address jane@x is invalid","error":"INVALID_EMAIL","name":"email"}]"#;
        let d = safe_description(Some("VALIDATION_ERROR"), None, Some(msg), &[]);
        assert_eq!(d, "VALIDATION_ERROR, email=INVALID_EMAIL");
        assert!(!d.contains("jane"));
    }

    #[test]
    fn context_ids_from_207() {
        let e: StandardError = serde_json::from_str(
            r#"{"status":"error","category":"OBJECT_NOT_FOUND","context":{"ids":["7",8]}}"#,
        )
        .expect("parses");
        assert_eq!(e.context_ids(), vec!["7".to_string(), "8".to_string()]);
    }

    #[test]
    fn context_values_from_any_key_and_unsubscribe_results() {
        let e: StandardError = serde_json::from_str(
            r#"{"category":"VALIDATION_ERROR","context":{"emails":["a@b.test"],"subscriberIdString":"c@d.test","n":{"x":1}}}"#,
        )
        .expect("parses");
        let mut got = e.context_values();
        got.sort();
        assert_eq!(got, vec!["a@b.test".to_string(), "c@d.test".to_string()]);
        let r: UnsubscribeBatchResponse = serde_json::from_str(
            r#"{"status":"COMPLETE","results":[{"subscriberIdString":"a@b.test","statuses":[{"channel":"EMAIL","status":"UNSUBSCRIBED"}]},{}],"startedAt":"x"}"#,
        )
        .expect("parses");
        assert_eq!(r.results[0].subscriber_id_string.as_deref(), Some("a@b.test"));
        assert!(r.results[1].subscriber_id_string.is_none());
    }
}
