//! Domain vocabulary shared by every layer: systems, canonical fields, lifecycle stages,
//! observed changes and desired pushes.
//!
//! These types hold no IO. They derive serde only so that the ledger can store them as its own
//! JSON (never vendor JSON: that lives in each connector's `wire.rs`).

pub mod closed_loop;
pub mod stamp;

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};

/// The kind of platform a configured system talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectorKind {
    Salesforce,
    Hubspot,
}

impl ConnectorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ConnectorKind::Salesforce => "salesforce",
            ConnectorKind::Hubspot => "hubspot",
        }
    }
}

impl fmt::Display for ConnectorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a system is for in the lead contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Crm,
    Marketing,
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::Crm => "crm",
            Role::Marketing => "marketing",
        })
    }
}

/// A canonical field of a person, the ledger's vocabulary. Each system maps some of these to
/// its own property names in config.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Field {
    Email,
    FirstName,
    LastName,
    Company,
    Title,
    Phone,
    LeadSource,
    LifecycleStage,
    LeadStatus,
    EmailOptOut,
}

impl Field {
    pub const ALL: [Field; 10] = [
        Field::Email,
        Field::FirstName,
        Field::LastName,
        Field::Company,
        Field::Title,
        Field::Phone,
        Field::LeadSource,
        Field::LifecycleStage,
        Field::LeadStatus,
        Field::EmailOptOut,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Field::Email => "email",
            Field::FirstName => "first_name",
            Field::LastName => "last_name",
            Field::Company => "company",
            Field::Title => "title",
            Field::Phone => "phone",
            Field::LeadSource => "lead_source",
            Field::LifecycleStage => "lifecycle_stage",
            Field::LeadStatus => "lead_status",
            Field::EmailOptOut => "email_opt_out",
        }
    }

    pub fn parse(s: &str) -> Option<Field> {
        Field::ALL.into_iter().find(|f| f.as_str() == s)
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Canonical field values of one person or one remote record. A missing key means "this system
/// does not say" (unmapped, or null at the vendor). Values are canonical strings: stages are
/// `Stage::as_str`, opt-out is `"true"`/`"false"`.
pub type Fields = BTreeMap<Field, String>;

/// The unified lifecycle stage. Ordered: a later variant is further down the funnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Subscriber,
    Lead,
    Mql,
    Sql,
    Opportunity,
    Customer,
}

impl Stage {
    pub const ALL: [Stage; 6] = [
        Stage::Subscriber,
        Stage::Lead,
        Stage::Mql,
        Stage::Sql,
        Stage::Opportunity,
        Stage::Customer,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Subscriber => "subscriber",
            Stage::Lead => "lead",
            Stage::Mql => "mql",
            Stage::Sql => "sql",
            Stage::Opportunity => "opportunity",
            Stage::Customer => "customer",
        }
    }

    pub fn parse(s: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|st| st.as_str() == s)
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A configured system's name (`crm`, `marketing`, ...).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SystemName(pub String);

impl SystemName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SystemName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One record as one system stores it: (object type, remote id). The system is implied by the
/// context it travels in.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RemoteId {
    pub object_type: String,
    pub id: String,
}

impl fmt::Display for RemoteId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.object_type, self.id)
    }
}

/// An observed state of one remote record, from a poll or a webhook.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub remote: RemoteId,
    /// Canonical values the record has now (only mapped fields).
    pub fields: Fields,
    /// The ledger id that leadsync stamped on the record when it created it, if the vendor
    /// stores one (Salesforce external id field). Lets a crash between create and link heal.
    pub ledger_key: Option<String>,
    /// The vendor's last-modified time of this state.
    pub modified_at: DateTime<Utc>,
    /// When leadsync read this state (its own clock), used to spot snapshots that predate one of
    /// its own pushes.
    pub fetched_at: DateTime<Utc>,
    /// What happened to the record itself: alive, deleted, merged away or converted.
    #[serde(default, skip_serializing_if = "RecordFate::is_live")]
    pub fate: RecordFate,
    /// The lead contract's custom fields this system maps (`[contract.mapping.custom_fields]`),
    /// by declared name, with the record's raw value (`None`: empty). Only mapped names appear:
    /// a name missing here means "this system does not say".
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub custom: BTreeMap<String, Option<String>>,
    /// The record's own word on its latest sales activity (Salesforce `LastActivityDate`,
    /// HubSpot `notes_last_contacted`), when the connector reads it: `None` means "not read",
    /// `Some(LastActivity::Never)` "read, and empty". An SLA touch, see `ledger/sla.rs`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_activity: Option<LastActivity>,
}

/// A record's last-activity property as the vendor keeps it (read-only at both vendors).
/// Ordered: `Never` first, then by time (a `Date` and an `At` of one record never meet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LastActivity {
    /// The record has no activity.
    Never,
    /// A calendar date with no time or zone (Salesforce `LastActivityDate`: the latest due
    /// date of the record's closed tasks and events).
    Date(NaiveDate),
    /// An instant (HubSpot `notes_last_contacted`: when the latest call, meeting, sales email
    /// or other contact was logged as having happened).
    At(DateTime<Utc>),
}

/// What a vendor says happened to a record as a whole. Deletes are never inferred from
/// absence: each of these comes from the vendor's own word (a deleted flag, a merge event,
/// a conversion).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "fate")]
pub enum RecordFate {
    /// The record exists (the usual case).
    #[default]
    Live,
    /// Deleted at the vendor (Salesforce `IsDeleted`, HubSpot archive or deletion event).
    Deleted,
    /// Merged into another record of the same object type, which survives (Salesforce
    /// `MasterRecordId`, HubSpot merge).
    MergedInto { survivor: String },
    /// A Salesforce lead converted into a contact (`IsConverted`, `ConvertedContactId`).
    ConvertedTo { remote: RemoteId },
}

impl RecordFate {
    pub fn is_live(&self) -> bool {
        matches!(self, RecordFate::Live)
    }
}

/// What a webhook event said happened to a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeKind {
    Created,
    Changed,
    Deleted,
    /// Records were merged into [`Notice::remote`]; the losers are in [`Notice::related`].
    Merged,
    Restored,
    /// Any other event type about the record (association changes, privacy deletion, ...).
    Other,
}

/// A vendor's word, received by webhook, that one record changed. It is committed to the
/// ledger before the sender gets its 2xx, and turned into a [`Change`] afterwards: from the
/// state it carried, or by fetching the record's current state from the vendor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notice {
    /// The vendor's delivery id (HubSpot `portalId:eventId`, Salesforce `orgId:notificationId`):
    /// a redelivery carries the same key and is stored once.
    pub dedupe_key: String,
    pub remote: RemoteId,
    pub kind: NoticeKind,
    /// When the vendor says it happened.
    pub occurred_at: DateTime<Utc>,
    /// Other records the event names (the ids merged away).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub related: Vec<String>,
    /// The record's full state, when the event carried every field leadsync reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<Change>,
}

/// What the pusher asks a connector to do for one record.
#[derive(Debug, Clone, PartialEq)]
pub enum PushOp {
    /// Create the record, idempotently: by email upsert (HubSpot) or external id upsert
    /// (Salesforce), keyed by `ledger_key`.
    Create { object_type: String },
    /// Update the record with this id.
    Update { remote: RemoteId },
}

/// One record's desired change at one system.
#[derive(Debug, Clone, PartialEq)]
pub struct PushRecord {
    /// The outbox row this came from; outcomes refer back to it.
    pub outbox_id: i64,
    pub ledger_key: String,
    pub op: PushOp,
    /// Only the canonical fields to write.
    pub fields: Fields,
    /// The person's full resolved fields, for creates that need required fields and for
    /// side-channel writes (HubSpot opt-out is keyed by email). For an update, `Email` is the
    /// record's own address as leadsync last knew it (consent is per address).
    pub person: Fields,
    /// The lead contract's stage-entry dates to write besides the fields: stage name (`mql`)
    /// -> the person's latest entry into it. The connector writes each to the property its
    /// `[contract.mapping.stage_dates]` names and leaves out stages it has none for.
    pub stage_dates: BTreeMap<String, DateTime<Utc>>,
    /// The reason code of the person's latest named transition, for the property
    /// `[contract.mapping.stage_reason]` names (`Some("")`: clear it; `None`: leave it).
    pub stage_reason: Option<String>,
    /// The owner an SLA escalation reassigns this record to (`[contract.sla] reassign_to`),
    /// written by the CRM-role system's connector only.
    pub owner: Option<String>,
}

/// The vendor's verdict on one pushed record.
#[derive(Debug, Clone, PartialEq)]
pub enum PushOutcome {
    /// Accepted; `remote` is the record's id (new for creates).
    Accepted { outbox_id: i64, remote: RemoteId, created: bool },
    /// Rejected for good: dead-letter with the vendor's code and message.
    Rejected { outbox_id: i64, code: String, message: String },
    /// Failed in a way that may pass later (e.g. record locked): retry this record.
    Retry { outbox_id: i64, code: String },
}

impl PushOutcome {
    pub fn outbox_id(&self) -> i64 {
        match self {
            PushOutcome::Accepted { outbox_id, .. }
            | PushOutcome::Rejected { outbox_id, .. }
            | PushOutcome::Retry { outbox_id, .. } => *outbox_id,
        }
    }
}

/// Normalise an email for exact matching: trimmed and lower-cased. Fuzzier rules (Unicode
/// folding, provider dot rules) come with the identity work.
///
/// ```
/// use leadsync::domain::normalize_email;
/// assert_eq!(normalize_email(" Jane.Doe@Example.COM").as_deref(), Some("jane.doe@example.com"));
/// assert_eq!(normalize_email("not-an-email"), None);
/// ```
pub fn normalize_email(raw: &str) -> Option<String> {
    let e = raw.trim().to_lowercase();
    if e.is_empty() || !e.contains('@') { None } else { Some(e) }
}

/// A string that prints as `**REDACTED**` in Debug and Display, for PII that must travel
/// through types that might be logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Sensitive(pub String);

impl fmt::Debug for Sensitive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("**REDACTED**")
    }
}

impl fmt::Display for Sensitive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("**REDACTED**")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_are_ordered_down_the_funnel() {
        assert!(Stage::Subscriber < Stage::Lead);
        assert!(Stage::Mql < Stage::Sql);
        assert!(Stage::Opportunity < Stage::Customer);
        for s in Stage::ALL {
            assert_eq!(Stage::parse(s.as_str()), Some(s));
        }
    }

    #[test]
    fn email_normalisation_trims_and_lowercases() {
        assert_eq!(normalize_email("  Jane.Doe@Example.COM "), Some("jane.doe@example.com".into()));
        assert_eq!(normalize_email("   "), None);
        assert_eq!(normalize_email("no-at-sign"), None);
    }

    #[test]
    fn sensitive_never_prints_its_value() {
        let s = Sensitive("jane@example.com".into());
        assert_eq!(format!("{s} {s:?}"), "**REDACTED** **REDACTED**");
    }
}
