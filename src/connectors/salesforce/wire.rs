//! Salesforce REST JSON as the vendor sends and expects it (api-facts §2). The only place that
//! knows these shapes; `mapping.rs` turns them into domain types.
//!
//! Deserialisation is lenient about extra keys (Salesforce adds fields between versions) and
//! strict about the keys we rely on.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// One sObject as JSON: `attributes` plus field API names to values. Field names are dynamic
/// (they come from the mapping), so this stays a map.
pub(super) type Record = Map<String, Value>;

/// `POST /services/oauth2/token` success. Salesforce sends no `expires_in`: the session lives
/// as long as the org's session policy allows, so we keep it until a call says otherwise.
#[derive(Deserialize)]
pub(super) struct TokenResponse {
    pub access_token: String,
    pub instance_url: String,
}

/// Token endpoint failure: `{"error":"invalid_grant","error_description":"…"}`. The
/// description is not kept: it is free text we do not control.
#[derive(Deserialize)]
pub(super) struct TokenError {
    pub error: String,
}

/// One entry of a non-2xx REST error body, which is a JSON array of these. The `message`
/// is not read: it can echo record values, and whole-call errors may be logged.
#[derive(Deserialize)]
pub(super) struct ApiError {
    #[serde(rename = "errorCode", default)]
    pub error_code: String,
    #[serde(default)]
    pub fields: Vec<String>,
}

/// Parse a REST error body: normally an array, sometimes a single object; anything else
/// yields no entries.
pub(super) fn parse_api_errors(body: &[u8]) -> Vec<ApiError> {
    if let Ok(list) = serde_json::from_slice::<Vec<ApiError>>(body) {
        return list;
    }
    serde_json::from_slice::<ApiError>(body).map(|e| vec![e]).unwrap_or_default()
}

/// `GET /query?q=…` and `GET <nextRecordsUrl>`.
#[derive(Deserialize)]
pub(super) struct QueryResponse {
    #[serde(default = "yes")]
    pub done: bool,
    #[serde(rename = "nextRecordsUrl", default)]
    pub next_records_url: Option<String>,
    pub records: Vec<Record>,
}

fn yes() -> bool {
    true
}

/// `GET /composite/sobjects/{type}?ids=…`: one entry per requested id, in order, `null` for ids
/// the org does not know.
pub(super) type CollectionRead = Vec<Option<Record>>;

/// One per-record result of an sObject Collections write, in request order.
#[derive(Deserialize)]
pub(super) struct SaveResult {
    #[serde(default)]
    pub id: Option<String>,
    pub success: bool,
    #[serde(default)]
    pub errors: Vec<SaveError>,
    /// Upserts only: whether the record was inserted.
    #[serde(default)]
    pub created: Option<bool>,
}

/// A per-record error. Note the key: `statusCode` here, `errorCode` in REST errors.
#[derive(Deserialize)]
pub(super) struct SaveError {
    #[serde(rename = "statusCode", default)]
    pub status_code: String,
    #[serde(default)]
    pub message: String,
    #[serde(default)]
    pub fields: Vec<String>,
}

/// Body of `PATCH /composite/sobjects` and `PATCH /composite/sobjects/{type}/{extIdField}`.
#[derive(Serialize)]
pub(super) struct CollectionWrite {
    #[serde(rename = "allOrNone")]
    pub all_or_none: bool,
    pub records: Vec<Record>,
}

/// An sObject for a collections write: `attributes.type`, then the given fields.
pub(super) fn write_record(object_type: &str, fields: Vec<(String, Value)>) -> Record {
    let mut rec = Record::new();
    let mut attributes = Map::new();
    attributes.insert("type".into(), Value::String(object_type.into()));
    rec.insert("attributes".into(), Value::Object(attributes));
    rec.extend(fields);
    rec
}

/// Key of the record id in a collections update.
pub(super) const UPDATE_ID_KEY: &str = "id";
/// Field names every synced object has that the connector reads itself.
pub(super) const ID_FIELD: &str = "Id";
pub(super) const MODSTAMP_FIELD: &str = "SystemModstamp";
/// Lead and Contact: the latest due date of the record's closed tasks and events (a `Date`,
/// `YYYY-MM-DD`, read-only; `null` without any).
pub(super) const LAST_ACTIVITY_FIELD: &str = "LastActivityDate";
pub(super) const IS_DELETED_FIELD: &str = "IsDeleted";
/// On a record merged away: the surviving record's id.
pub(super) const MASTER_RECORD_FIELD: &str = "MasterRecordId";
/// Lead only.
pub(super) const IS_CONVERTED_FIELD: &str = "IsConverted";
pub(super) const CONVERTED_CONTACT_FIELD: &str = "ConvertedContactId";
/// The email opt-out on Lead and Contact: only `email_opt_out` may map to it.
pub(super) const OPT_OUT_FIELD: &str = "HasOptedOutOfEmail";
pub(super) const LEAD: &str = "Lead";
pub(super) const CONTACT: &str = "Contact";
