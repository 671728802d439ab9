//! HubSpot JSON of the closed-loop reads: deals and contacts from search, and the v4
//! associations batch read. Only this file and `wire.rs` know HubSpot shapes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Deal properties the closed-loop poll reads.
pub(super) const DEAL_PROPERTIES: &[&str] = &[
    "dealname",
    "amount",
    "deal_currency_code",
    "dealstage",
    "pipeline",
    "closedate",
    "hs_is_closed",
    "hs_is_closed_won",
    "createdate",
    "hs_lastmodifieddate",
];
pub(super) const DEAL_MODIFIED: &str = "hs_lastmodifieddate";

/// Contact properties HubSpot analytics writes on each conversion (form submission).
pub(super) const CONVERSION_PROPERTIES: &[&str] = &[
    "recent_conversion_event_name",
    "recent_conversion_date",
    "first_conversion_event_name",
    "first_conversion_date",
    "hs_analytics_source",
];
pub(super) const RECENT_CONVERSION: &str = "recent_conversion_date";

/// A search page of any object: `{total, results, paging?}`.
#[derive(Debug, Deserialize)]
pub(super) struct SearchPage {
    #[serde(default)]
    pub results: Vec<CrmObject>,
    #[serde(default)]
    pub paging: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
pub(super) struct CrmObject {
    pub id: String,
    #[serde(default)]
    pub properties: BTreeMap<String, Option<String>>,
    #[serde(default)]
    pub archived: bool,
}

impl CrmObject {
    pub fn prop(&self, name: &str) -> Option<&str> {
        self.properties.get(name).and_then(Option::as_deref).filter(|v| !v.is_empty())
    }
}

/// `POST /crm/v4/associations/deals/contacts/batch/read` body.
#[derive(Debug, Serialize)]
pub(super) struct AssocRead {
    pub inputs: Vec<AssocInput>,
}

#[derive(Debug, Serialize)]
pub(super) struct AssocInput {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<String>,
}

/// Its answer (200 or 207; deals without contacts are absent from `results`).
#[derive(Debug, Deserialize)]
pub(super) struct AssocPage {
    #[serde(default)]
    pub results: Vec<AssocResult>,
}

#[derive(Debug, Deserialize)]
pub(super) struct AssocResult {
    pub from: AssocFrom,
    #[serde(default)]
    pub to: Vec<AssocTo>,
    #[serde(default)]
    pub paging: Option<AssocPaging>,
}

#[derive(Debug, Deserialize)]
pub(super) struct AssocFrom {
    pub id: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct AssocTo {
    /// A JSON number in v4.
    pub to_object_id: serde_json::Value,
    #[serde(default)]
    pub association_types: Vec<AssocType>,
}

#[derive(Debug, Deserialize)]
pub(super) struct AssocType {
    #[serde(default)]
    pub label: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct AssocPaging {
    #[serde(default)]
    pub next: Option<AssocNext>,
}

#[derive(Debug, Deserialize)]
pub(super) struct AssocNext {
    pub after: String,
}
