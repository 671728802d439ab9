//! Salesforce JSON of the closed-loop objects (Opportunity, OpportunityContactRole,
//! CampaignMember, Campaign, Task) as `query`/`queryAll` returns it (field names as in the
//! Object Reference). Only this file and `wire.rs` know Salesforce shapes.

use serde::Deserialize;
use serde_json::Value;

use super::wire::Record;

/// The fields each poll query selects, in the order written.
pub(super) const OPPORTUNITY_FIELDS: &[&str] = &[
    "Id",
    "Name",
    "Amount",
    "StageName",
    "CloseDate",
    "IsClosed",
    "IsWon",
    "CampaignId",
    "CreatedDate",
    "SystemModstamp",
    "IsDeleted",
];
pub(super) const ROLE_FIELDS: &[&str] =
    &["Id", "OpportunityId", "ContactId", "IsPrimary", "Role", "SystemModstamp", "IsDeleted"];
pub(super) const MEMBER_FIELDS: &[&str] = &[
    "Id",
    "CampaignId",
    "LeadId",
    "ContactId",
    "Status",
    "HasResponded",
    "FirstRespondedDate",
    "CreatedDate",
    "SystemModstamp",
    "IsDeleted",
];

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct OpportunityRow {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    /// A JSON number (currency, scale 2); kept as JSON so no float rounding happens here.
    #[serde(default)]
    pub amount: Option<Value>,
    #[serde(default)]
    pub stage_name: Option<String>,
    #[serde(default)]
    pub close_date: Option<String>,
    #[serde(default)]
    pub is_closed: bool,
    #[serde(default)]
    pub is_won: bool,
    #[serde(default)]
    pub campaign_id: Option<String>,
    #[serde(default)]
    pub created_date: Option<String>,
    pub system_modstamp: String,
    #[serde(default)]
    pub is_deleted: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct RoleRow {
    pub id: String,
    pub opportunity_id: String,
    #[serde(default)]
    pub contact_id: Option<String>,
    #[serde(default)]
    pub is_primary: bool,
    #[serde(default)]
    pub role: Option<String>,
    pub system_modstamp: String,
    #[serde(default)]
    pub is_deleted: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct MemberRow {
    pub id: String,
    pub campaign_id: String,
    #[serde(default)]
    pub lead_id: Option<String>,
    #[serde(default)]
    pub contact_id: Option<String>,
    #[serde(default)]
    pub has_responded: bool,
    #[serde(default)]
    pub first_responded_date: Option<String>,
    #[serde(default)]
    pub created_date: Option<String>,
    pub system_modstamp: String,
    #[serde(default)]
    pub is_deleted: bool,
}

/// Task fields read as activities. `Subject` and `Description` are left out on purpose: free
/// text that can hold personal data, and nothing leadsync decides on.
pub(super) const TASK_FIELDS: &[&str] = &[
    "Id",
    "WhoId",
    "TaskSubtype",
    "Status",
    "IsClosed",
    "ActivityDate",
    "CreatedDate",
    "SystemModstamp",
    "IsDeleted",
];

/// `Task.TaskSubtype` values that are calls and emails; the rest count as other activities.
pub(super) const SUBTYPE_CALL: &str = "Call";
pub(super) const SUBTYPES_EMAIL: &[&str] = &["Email", "ListEmail"];

/// Key prefixes of the objects a Task's polymorphic `WhoId` can name.
pub(super) const WHO_PREFIXES: &[(&str, &str)] = &[("00Q", "Lead"), ("003", "Contact")];

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct TaskRow {
    pub id: String,
    #[serde(default)]
    pub who_id: Option<String>,
    #[serde(default)]
    pub task_subtype: Option<String>,
    #[serde(default)]
    pub is_closed: bool,
    #[serde(default)]
    pub created_date: Option<String>,
    pub system_modstamp: String,
    #[serde(default)]
    pub is_deleted: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct CampaignRow {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
}

/// Read one query record as `T`; `None` when it lacks a field we rely on.
pub(super) fn row<T: serde::de::DeserializeOwned>(rec: &Record) -> Option<T> {
    serde_json::from_value(Value::Object(rec.clone())).ok()
}
