//! The simulated portal's data: contacts by id (a `BTreeMap`, so listing and default search order
//! are by id), an index by lower-cased email, merged-id redirects, the search index (a lagging
//! copy of the contacts when an index delay is configured, also ordered by
//! (lastmodifieddate, id) for keyset searches), and email subscription state.
//!
//! Validation lives here so that the API and the handle's UI methods share it. Writes are split
//! into `prepare_*` (validate, check conflicts, no mutation) and `commit_*` so a batch can be
//! checked as a whole before any input is applied.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use super::HubspotSimOptions;

/// Value types of contact properties, as far as validation and search need them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PropType {
    Text,
    Email,
    Enumeration(&'static [&'static str]),
    Number,
    Datetime,
    Bool,
}

pub(crate) struct PropDef {
    pub name: &'static str,
    pub ty: PropType,
    pub read_only: bool,
}

/// Internal values of `lifecyclestage`, in the order the API lets them move.
pub(crate) const LIFECYCLE_STAGES: &[&str] = &[
    "subscriber",
    "lead",
    "marketingqualifiedlead",
    "salesqualifiedlead",
    "opportunity",
    "customer",
    "evangelist",
    "other",
];

/// Default options of `hs_lead_status` (api-facts §1.3).
pub(crate) const LEAD_STATUSES: &[&str] = &[
    "NEW",
    "OPEN",
    "IN_PROGRESS",
    "OPEN_DEAL",
    "UNQUALIFIED",
    "ATTEMPTED_TO_CONTACT",
    "CONNECTED",
    "BAD_TIMING",
];

const BOOL_OPTIONS: &[&str] = &["true", "false"];

pub(crate) const BUILTIN_PROPERTIES: &[PropDef] = &[
    PropDef { name: "email", ty: PropType::Email, read_only: false },
    PropDef { name: "firstname", ty: PropType::Text, read_only: false },
    PropDef { name: "lastname", ty: PropType::Text, read_only: false },
    PropDef { name: "company", ty: PropType::Text, read_only: false },
    PropDef { name: "jobtitle", ty: PropType::Text, read_only: false },
    PropDef { name: "phone", ty: PropType::Text, read_only: false },
    PropDef { name: "mobilephone", ty: PropType::Text, read_only: false },
    PropDef { name: "city", ty: PropType::Text, read_only: false },
    PropDef { name: "country", ty: PropType::Text, read_only: false },
    PropDef { name: "website", ty: PropType::Text, read_only: false },
    PropDef { name: "leadsource", ty: PropType::Text, read_only: false },
    PropDef {
        name: "lifecyclestage",
        ty: PropType::Enumeration(LIFECYCLE_STAGES),
        read_only: false,
    },
    PropDef { name: "hs_lead_status", ty: PropType::Enumeration(LEAD_STATUSES), read_only: false },
    PropDef { name: "hubspot_owner_id", ty: PropType::Number, read_only: false },
    PropDef { name: "hs_email_optout", ty: PropType::Bool, read_only: true },
    PropDef { name: "hs_object_id", ty: PropType::Number, read_only: true },
    PropDef { name: "createdate", ty: PropType::Datetime, read_only: true },
    PropDef { name: "lastmodifieddate", ty: PropType::Datetime, read_only: true },
    PropDef { name: "hs_merged_object_ids", ty: PropType::Text, read_only: true },
    PropDef { name: "hs_additional_emails", ty: PropType::Text, read_only: true },
    // Conversion analytics, written by HubSpot itself (see `deals.rs`, `submit_form`).
    PropDef { name: "first_conversion_event_name", ty: PropType::Text, read_only: true },
    PropDef { name: "first_conversion_date", ty: PropType::Datetime, read_only: true },
    PropDef { name: "recent_conversion_event_name", ty: PropType::Text, read_only: true },
    PropDef { name: "recent_conversion_date", ty: PropType::Datetime, read_only: true },
    PropDef { name: "num_conversion_events", ty: PropType::Number, read_only: true },
    PropDef { name: "hs_analytics_source", ty: PropType::Text, read_only: true },
    // "Last contacted": HubSpot's own, from logged calls, meetings, sales emails (see
    // `record_contact`).
    PropDef { name: "notes_last_contacted", ty: PropType::Datetime, read_only: true },
];

/// The portal's owners (`GET /crm/v3/owners`): id, email, first name, last name, user id.
/// `hubspot_owner_id` accepts these ids only.
pub const OWNERS: &[(&str, &str, &str, &str, u64)] = &[
    ("70000001", "ada.owner@sim.invalid", "Ada", "Owner", 9_000_001),
    ("70000002", "ben.owner@sim.invalid", "Ben", "Owner", 9_000_002),
    ("70000003", "cy.owner@sim.invalid", "Cy", "Owner", 9_000_003),
];

/// Returned when no properties are requested (HubSpot's documented contact defaults).
pub(crate) const DEFAULT_PROPERTIES: &[&str] =
    &["createdate", "email", "firstname", "hs_object_id", "lastmodifieddate", "lastname"];

/// Always present in a returned record, whatever was requested.
const ALWAYS_RETURNED: &[&str] = &["createdate", "hs_object_id", "lastmodifieddate"];

/// Email subscription types of the simulated portal: (id, name).
pub(crate) const SUBSCRIPTIONS: &[(u64, &str)] = &[(1, "Marketing Information"), (2, "One to One")];

pub(crate) fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

/// `2024-05-01T10:00:00.123Z`: UTC, millisecond precision, as HubSpot writes datetimes.
pub(crate) fn iso_ms(ms: i64) -> String {
    match DateTime::<Utc>::from_timestamp_millis(ms) {
        Some(t) => t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        None => "1970-01-01T00:00:00.000Z".into(),
    }
}

/// Epoch milliseconds or ISO-8601 (full RFC 3339 or a bare date), as search filters accept.
pub(crate) fn parse_instant_ms(raw: &str) -> Option<i64> {
    let raw = raw.trim();
    if let Ok(ms) = raw.parse::<i64>() {
        return Some(ms);
    }
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Some(t.timestamp_millis());
    }
    chrono::NaiveDate::parse_from_str(raw, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc().timestamp_millis())
}

#[derive(Debug, Clone)]
pub(crate) struct Contact {
    pub id: u64,
    /// Set, non-empty property values other than the computed system ones.
    pub props: BTreeMap<String, String>,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub archived: bool,
    pub archived_ms: Option<i64>,
    pub merged_ids: Vec<u64>,
}

impl Contact {
    /// A property's value as the API shows it; computed ones are derived from the record.
    pub fn value(&self, name: &str) -> Option<String> {
        match name {
            "hs_object_id" => Some(self.id.to_string()),
            "createdate" => Some(iso_ms(self.created_ms)),
            "lastmodifieddate" => Some(iso_ms(self.updated_ms)),
            "hs_merged_object_ids" if !self.merged_ids.is_empty() => {
                Some(self.merged_ids.iter().map(u64::to_string).collect::<Vec<_>>().join(";"))
            }
            "hs_merged_object_ids" => None,
            _ => self.props.get(name).cloned(),
        }
    }
}

/// Which properties a response shows.
#[derive(Debug, Clone)]
pub(crate) enum Selection {
    /// HubSpot's default list.
    Default,
    /// These names (unknown ones left out, unset known ones as null).
    Listed(Vec<String>),
    /// Every set property, as create and update responses show.
    AllSet,
}

impl Selection {
    /// From a request's `properties`: empty means the defaults.
    pub fn from_names(names: Vec<String>) -> Selection {
        let names: Vec<String> =
            names.into_iter().map(|n| n.trim().to_string()).filter(|n| !n.is_empty()).collect();
        if names.is_empty() { Selection::Default } else { Selection::Listed(names) }
    }
}

/// One invalid property in a write, reported the way HubSpot does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PropError {
    pub name: String,
    pub code: &'static str,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum WriteError {
    Invalid(Vec<PropError>),
    Conflict(u64),
    NotFound,
}

impl WriteError {
    /// For the handle's `Result<_, String>` methods: names properties and ids, never values.
    pub fn describe(&self) -> String {
        match self {
            WriteError::Invalid(errors) => {
                let parts: Vec<String> =
                    errors.iter().map(|e| format!("{}: {}", e.name, e.code)).collect();
                format!("property values were not valid: {}", parts.join(", "))
            }
            WriteError::Conflict(id) => format!("Contact already exists. Existing ID: {id}"),
            WriteError::NotFound => "contact not found".into(),
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct SubState {
    pub status: &'static str,
    pub ts_ms: i64,
    pub legal_basis: Option<String>,
    pub legal_basis_explanation: Option<String>,
}

/// Subscription state of one email address (HubSpot keeps it per address, not per contact).
#[derive(Debug, Clone, Default)]
pub(crate) struct OptState {
    /// Unsubscribed from all email, and when.
    pub all: Option<i64>,
    pub subs: BTreeMap<u64, SubState>,
}

type IndexEntry = Option<Arc<Contact>>;

/// A visible change to a contact, recorded for webhooks as it is committed. Values may be PII;
/// they only ever go into webhook bodies, never into logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ContactChange {
    /// A new contact and the properties it was created with.
    Created { id: u64, at: i64, props: Vec<(String, String)> },
    /// Properties that changed, with their new values (`""` when cleared).
    Changed { id: u64, at: i64, props: Vec<(String, String)> },
    /// Archived.
    Deleted { id: u64, at: i64 },
    /// `loser` merged into `primary`; `moved` properties were filled from the loser.
    Merged { primary: u64, loser: u64, at: i64, moved: u64 },
    /// Taken back out of the recycle bin.
    Restored { id: u64, at: i64 },
    /// Erased for good (GDPR delete).
    PrivacyDeleted { id: u64, at: i64 },
}

/// How long an archived contact can be restored.
pub(crate) const RESTORE_WINDOW_MS: i64 = 90 * 24 * 3600 * 1000;

pub(crate) struct Store {
    next_id: u64,
    contacts: BTreeMap<u64, Arc<Contact>>,
    by_email: HashMap<String, u64>,
    merged_into: HashMap<u64, u64>,
    /// What search sees: lags `contacts` by `index_delay`.
    index: BTreeMap<u64, Arc<Contact>>,
    /// The same entries as `index`, ordered by (lastmodifieddate, id): a search sorted on
    /// `lastmodifieddate` walks it in order instead of sorting the whole index.
    by_modified: BTreeMap<(i64, u64), Arc<Contact>>,
    pending: VecDeque<(Instant, u64, IndexEntry)>,
    index_delay: std::time::Duration,
    extra: Vec<String>,
    optouts: HashMap<String, OptState>,
    /// Addresses a GDPR delete by email named while no contact held them (HubSpot blocklists
    /// them). Recorded only: creates with them are not refused (HubSpot's exact behaviour on
    /// a later create is not in the notes).
    blocklist: HashSet<String>,
    /// Committed changes not yet handed to the webhook sender (drained when the lock is
    /// released, see `StoreGuard`).
    pub changes: Vec<ContactChange>,
    /// Each contact's property history (`propertiesWithHistory`), oldest first, for the
    /// properties written since its creation: a property's value from the create is noted
    /// the first time it changes, so a contact never written again costs nothing here.
    history: HashMap<u64, Vec<Hist>>,
}

/// One entry of a property's history.
#[derive(Debug, Clone)]
struct Hist {
    name: String,
    value: String,
    at: i64,
    source: &'static str,
}

/// Note that property `name` of `c` is about to become `new` at `at` (before `c` changes):
/// the value it holds from its create is noted first when this is its first change.
fn note(
    history: &mut HashMap<u64, Vec<Hist>>,
    c: &Contact,
    name: &str,
    new: &str,
    at: i64,
    source: &'static str,
) {
    let entries = history.entry(c.id).or_default();
    if !entries.iter().any(|h| h.name == name)
        && let Some(old) = c.props.get(name)
    {
        entries.push(Hist {
            name: name.to_string(),
            value: old.clone(),
            at: c.created_ms,
            source: "API",
        });
    }
    entries.push(Hist { name: name.to_string(), value: new.to_string(), at, source });
}

pub(crate) fn normalize_email(raw: &str) -> String {
    raw.trim().to_lowercase()
}

/// HubSpot checks the format only: no quoted local part, a domain with a plausible TLD.
fn email_is_valid(email: &str) -> bool {
    let Some((local, domain)) = email.rsplit_once('@') else { return false };
    if local.is_empty() || local.contains(['"', '@']) || email.chars().any(char::is_whitespace) {
        return false;
    }
    let labels: Vec<&str> = domain.split('.').collect();
    if labels.len() < 2 || labels.iter().any(|l| l.is_empty()) {
        return false;
    }
    labels.last().is_some_and(|tld| tld.len() >= 2 && tld.chars().all(char::is_alphanumeric))
}

fn lifecycle_rank(value: &str) -> Option<usize> {
    LIFECYCLE_STAGES.iter().position(|s| *s == value)
}

impl Store {
    pub fn new(opts: &HubspotSimOptions) -> Store {
        Store {
            next_id: 1,
            contacts: BTreeMap::new(),
            by_email: HashMap::new(),
            merged_into: HashMap::new(),
            index: BTreeMap::new(),
            by_modified: BTreeMap::new(),
            pending: VecDeque::new(),
            index_delay: opts.search_index_delay,
            extra: opts.extra_properties.clone(),
            optouts: HashMap::new(),
            blocklist: HashSet::new(),
            changes: Vec::new(),
            history: HashMap::new(),
        }
    }

    /// Type and read-only flag of a property, or None if the portal does not define it.
    pub fn prop_type(&self, name: &str) -> Option<(PropType, bool)> {
        if let Some(def) = BUILTIN_PROPERTIES.iter().find(|d| d.name == name) {
            return Some((def.ty, def.read_only));
        }
        self.extra.iter().any(|e| e == name).then_some((PropType::Text, false))
    }

    fn known_names(&self) -> impl Iterator<Item = &str> {
        BUILTIN_PROPERTIES.iter().map(|d| d.name).chain(self.extra.iter().map(String::as_str))
    }

    /// Check and normalise written values; `""` and JSON null mean "clear".
    pub fn validate(
        &self,
        props: &BTreeMap<String, Value>,
    ) -> Result<BTreeMap<String, String>, Vec<PropError>> {
        let mut out = BTreeMap::new();
        let mut errors = Vec::new();
        for (name, raw) in props {
            let value = match raw {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                Value::Array(_) | Value::Object(_) => {
                    errors.push(PropError {
                        name: name.clone(),
                        code: "INVALID_PROPERTY_VALUE",
                        message: format!("Property \"{name}\" must be a string"),
                    });
                    continue;
                }
            };
            let Some((ty, read_only)) = self.prop_type(name) else {
                errors.push(PropError {
                    name: name.clone(),
                    code: "PROPERTY_DOESNT_EXIST",
                    message: format!("Property \"{name}\" does not exist"),
                });
                continue;
            };
            if read_only {
                errors.push(PropError {
                    name: name.clone(),
                    code: "READ_ONLY_VALUE",
                    message: format!("{name} is a read only property; its value cannot be set."),
                });
                continue;
            }
            if value.is_empty() {
                out.insert(name.clone(), value);
                continue;
            }
            // Decision (api-facts is silent on the wording): an owner id the portal does not
            // have is a property validation error like any other, code INVALID_OWNER_ID.
            if name == "hubspot_owner_id" && !OWNERS.iter().any(|o| o.0 == value.trim()) {
                errors.push(PropError {
                    name: name.clone(),
                    code: "INVALID_OWNER_ID",
                    message: format!("{value} is not a valid owner id"),
                });
                continue;
            }
            let checked = match ty {
                PropType::Email => {
                    let email = normalize_email(&value);
                    if email_is_valid(&email) {
                        Ok(email)
                    } else {
                        Err(("INVALID_EMAIL", "Email address is invalid".to_string()))
                    }
                }
                PropType::Enumeration(options) => {
                    if options.contains(&value.as_str()) {
                        Ok(value)
                    } else {
                        Err((
                            "INVALID_OPTION",
                            format!(
                                "{value} was not one of the allowed options: [{}]",
                                options.join(", ")
                            ),
                        ))
                    }
                }
                PropType::Bool => {
                    if BOOL_OPTIONS.contains(&value.as_str()) {
                        Ok(value)
                    } else {
                        Err(("INVALID_BOOLEAN", format!("{value} is not a valid boolean")))
                    }
                }
                PropType::Number => {
                    if value.trim().parse::<f64>().is_ok() {
                        Ok(value.trim().to_string())
                    } else {
                        Err(("INVALID_INTEGER", format!("{value} is not a valid number")))
                    }
                }
                PropType::Datetime => match parse_instant_ms(&value) {
                    Some(ms) => Ok(ms.to_string()),
                    None => Err(("INVALID_DATETIME", format!("{value} is not a valid datetime"))),
                },
                PropType::Text => Ok(value),
            };
            match checked {
                Ok(v) => {
                    out.insert(name.clone(), v);
                }
                Err((code, message)) => {
                    errors.push(PropError { name: name.clone(), code, message })
                }
            }
        }
        if errors.is_empty() { Ok(out) } else { Err(errors) }
    }

    /// Id of the non-archived contact holding this email (also as a merged-in address).
    pub fn id_by_email(&self, email: &str) -> Option<u64> {
        self.by_email.get(&normalize_email(email)).copied()
    }

    /// A live contact id from a path or batch id: record ids follow merges; with `by_email` the
    /// key is an email address.
    pub fn resolve(&self, key: &str, by_email: bool) -> Option<u64> {
        if by_email {
            return self.id_by_email(key);
        }
        let mut id = key.trim().parse::<u64>().ok()?;
        // Merge chains are short; the bound guards against a cycle that should not exist.
        for _ in 0..64 {
            match self.merged_into.get(&id) {
                Some(next) => id = *next,
                None => break,
            }
        }
        self.contacts.get(&id).filter(|c| !c.archived).map(|c| c.id)
    }

    /// An archived contact by id or email (for `?archived=true`).
    pub fn resolve_archived(&self, key: &str, by_email: bool) -> Option<u64> {
        if by_email {
            let email = normalize_email(key);
            return self
                .contacts
                .values()
                .find(|c| c.archived && c.props.get("email") == Some(&email))
                .map(|c| c.id);
        }
        let id = key.trim().parse::<u64>().ok()?;
        self.contacts.get(&id).filter(|c| c.archived).map(|c| c.id)
    }

    pub fn contact(&self, id: u64) -> Option<&Contact> {
        self.contacts.get(&id).map(|c| c.as_ref())
    }

    /// Validate a create and check its email is free.
    pub fn prepare_create(
        &self,
        props: &BTreeMap<String, Value>,
    ) -> Result<BTreeMap<String, String>, WriteError> {
        let values = self.validate(props).map_err(WriteError::Invalid)?;
        if let Some(email) = values.get("email").filter(|e| !e.is_empty())
            && let Some(existing) = self.by_email.get(email)
        {
            return Err(WriteError::Conflict(*existing));
        }
        Ok(values)
    }

    /// Apply a prepared create.
    pub fn commit_create(&mut self, values: BTreeMap<String, String>, now: i64) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        let mut props: BTreeMap<String, String> =
            values.into_iter().filter(|(_, v)| !v.is_empty()).collect();
        if let Some(email) = props.get("email").cloned() {
            self.by_email.insert(email.clone(), id);
            if self.optouts.get(&email).is_some_and(|o| o.all.is_some()) {
                props.insert("hs_email_optout".into(), "true".into());
            }
        }
        self.changes.push(ContactChange::Created {
            id,
            at: now,
            props: props.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        });
        let contact = Contact {
            id,
            props,
            created_ms: now,
            updated_ms: now,
            archived: false,
            archived_ms: None,
            merged_ids: Vec::new(),
        };
        self.contacts.insert(id, Arc::new(contact));
        self.publish(id);
        id
    }

    pub fn create(&mut self, props: &BTreeMap<String, Value>, now: i64) -> Result<u64, WriteError> {
        let values = self.prepare_create(props)?;
        Ok(self.commit_create(values, now))
    }

    /// Validate an update of a live contact and check a new email is not someone else's.
    pub fn prepare_update(
        &self,
        id: u64,
        props: &BTreeMap<String, Value>,
    ) -> Result<BTreeMap<String, String>, WriteError> {
        if self.contacts.get(&id).is_none_or(|c| c.archived) {
            return Err(WriteError::NotFound);
        }
        let values = self.validate(props).map_err(WriteError::Invalid)?;
        if let Some(email) = values.get("email").filter(|e| !e.is_empty())
            && let Some(existing) = self.by_email.get(email).filter(|other| **other != id)
        {
            return Err(WriteError::Conflict(*existing));
        }
        Ok(values)
    }

    /// Apply a prepared update; returns whether anything changed. With `forward_only`, a
    /// `lifecyclestage` earlier than the current one is skipped silently, as the API does.
    pub fn commit_update(
        &mut self,
        id: u64,
        values: BTreeMap<String, String>,
        forward_only: bool,
        now: i64,
    ) -> bool {
        let Some(entry) = self.contacts.get_mut(&id) else { return false };
        let contact = Arc::make_mut(entry);
        let mut changed = false;
        let mut changed_props: Vec<(String, String)> = Vec::new();
        let mut email_change: Option<(Option<String>, String)> = None;
        for (name, value) in values {
            if name == "lifecyclestage" && forward_only && !value.is_empty() {
                let current = contact.props.get("lifecyclestage").and_then(|c| lifecycle_rank(c));
                if let (Some(cur), Some(new)) = (current, lifecycle_rank(&value))
                    && new < cur
                {
                    continue;
                }
            }
            let old = contact.props.get(&name).cloned();
            if old.as_deref().unwrap_or("") == value {
                continue;
            }
            if name == "email" {
                email_change = Some((old, value.clone()));
            }
            note(&mut self.history, contact, &name, &value, now, "API");
            changed_props.push((name.clone(), value.clone()));
            if value.is_empty() {
                contact.props.remove(&name);
            } else {
                contact.props.insert(name, value);
            }
            changed = true;
        }
        if let Some((old, new)) = email_change {
            if let Some(old) = old
                && self.by_email.get(&old) == Some(&id)
            {
                self.by_email.remove(&old);
            }
            if !new.is_empty() {
                self.by_email.insert(new.clone(), id);
                if self.optouts.get(&new).is_some_and(|o| o.all.is_some())
                    && contact.props.get("hs_email_optout").map(String::as_str) != Some("true")
                {
                    note(&mut self.history, contact, "hs_email_optout", "true", now, "API");
                    contact.props.insert("hs_email_optout".into(), "true".into());
                    changed_props.push(("hs_email_optout".into(), "true".into()));
                }
            }
        }
        if changed {
            self.changes.push(ContactChange::Changed { id, at: now, props: changed_props });
            contact.updated_ms = now;
            self.publish(id);
        }
        changed
    }

    pub fn update(
        &mut self,
        id: u64,
        props: &BTreeMap<String, Value>,
        forward_only: bool,
        now: i64,
    ) -> Result<bool, WriteError> {
        let values = self.prepare_update(id, props)?;
        Ok(self.commit_update(id, values, forward_only, now))
    }

    /// Move the modification time without a visible change.
    pub fn touch(&mut self, id: u64, now: i64) {
        if let Some(entry) = self.contacts.get_mut(&id) {
            Arc::make_mut(entry).updated_ms = now;
            self.publish(id);
        }
    }

    /// Archive (soft-delete) a contact; false if it was not live.
    pub fn archive(&mut self, id: u64, now: i64) -> bool {
        let Some(entry) = self.contacts.get_mut(&id) else { return false };
        if entry.archived {
            return false;
        }
        let contact = Arc::make_mut(entry);
        contact.archived = true;
        contact.archived_ms = Some(now);
        self.changes.push(ContactChange::Deleted { id, at: now });
        contact.updated_ms = now;
        let mut emails: Vec<String> = contact.props.get("email").cloned().into_iter().collect();
        if let Some(additional) = contact.props.get("hs_additional_emails") {
            emails.extend(additional.split(';').map(str::to_string));
        }
        for email in emails {
            if self.by_email.get(&email) == Some(&id) {
                self.by_email.remove(&email);
            }
        }
        self.publish(id);
        true
    }

    /// Restore an archived contact (within [`RESTORE_WINDOW_MS`] of its archiving). Refused
    /// when its email (or an additional email) now belongs to another live contact.
    pub fn restore(&mut self, id: u64, now: i64) -> Result<(), String> {
        let Some(contact) = self.contacts.get(&id) else {
            return Err(format!("contact {id} does not exist"));
        };
        let Some(archived_ms) = contact.archived_ms.filter(|_| contact.archived) else {
            return Err(format!("contact {id} is not archived"));
        };
        if now.saturating_sub(archived_ms) > RESTORE_WINDOW_MS {
            return Err(format!("contact {id} was archived more than 90 days ago"));
        }
        let mut emails: Vec<String> = contact.props.get("email").cloned().into_iter().collect();
        if let Some(additional) = contact.props.get("hs_additional_emails") {
            emails.extend(additional.split(';').map(str::to_string));
        }
        if let Some(other) = emails.iter().find_map(|e| self.by_email.get(e).filter(|o| **o != id))
        {
            return Err(format!("CONFLICT: the email now belongs to contact {other}"));
        }
        let Some(entry) = self.contacts.get_mut(&id) else {
            return Err(format!("contact {id} does not exist"));
        };
        let contact = Arc::make_mut(entry);
        contact.archived = false;
        contact.archived_ms = None;
        contact.updated_ms = now;
        for email in emails {
            self.by_email.insert(email, id);
        }
        self.changes.push(ContactChange::Restored { id, at: now });
        self.publish(id);
        Ok(())
    }

    /// Erase a contact (live or archived) for good: no id, email or merged id resolves to it
    /// afterwards, not even with `archived=true`. Returns false for an unknown id.
    pub fn gdpr_delete(&mut self, id: u64, now: i64) -> bool {
        if self.contacts.remove(&id).is_none() {
            return false;
        }
        self.by_email.retain(|_, owner| *owner != id);
        self.merged_into.retain(|loser, primary| *primary != id && *loser != id);
        self.history.remove(&id);
        self.changes.push(ContactChange::PrivacyDeleted { id, at: now });
        self.publish(id);
        true
    }

    /// Blocklist an address (a GDPR delete by an email no contact holds).
    pub fn blocklist(&mut self, email: &str) {
        self.blocklist.insert(normalize_email(email));
    }

    pub fn is_blocklisted(&self, email: &str) -> bool {
        self.blocklist.contains(&normalize_email(email))
    }

    /// Merge `loser` into `primary`; both must be live and different. Returns the survivor's id.
    pub fn merge(&mut self, primary: u64, loser: u64, now: i64) -> Result<u64, WriteError> {
        if primary == loser || self.resolve(&loser.to_string(), false) != Some(loser) {
            return Err(WriteError::NotFound);
        }
        if self.resolve(&primary.to_string(), false) != Some(primary) {
            return Err(WriteError::NotFound);
        }
        let Some(lost) = self.contacts.remove(&loser) else { return Err(WriteError::NotFound) };
        let Some(entry) = self.contacts.get_mut(&primary) else {
            return Err(WriteError::NotFound);
        };
        let winner = Arc::make_mut(entry);
        let mut moved_emails: Vec<String> = Vec::new();
        let mut changed_props: Vec<(String, String)> = Vec::new();
        for (name, value) in &lost.props {
            match name.as_str() {
                "email" | "hs_additional_emails" => {
                    moved_emails.extend(value.split(';').map(str::to_string));
                }
                // Consent only tightens: an opt-out on either side survives the merge.
                "hs_email_optout" if value == "true" => {
                    if winner.props.get(name).map(String::as_str) != Some("true") {
                        note(&mut self.history, winner, name, value, now, "MERGE");
                        winner.props.insert(name.clone(), value.clone());
                        changed_props.push((name.clone(), value.clone()));
                    }
                }
                _ => {
                    if !winner.props.contains_key(name) {
                        note(&mut self.history, winner, name, value, now, "MERGE");
                        winner.props.insert(name.clone(), value.clone());
                        changed_props.push((name.clone(), value.clone()));
                    }
                }
            }
        }
        if !moved_emails.is_empty() {
            let mut additional: Vec<String> = winner
                .props
                .get("hs_additional_emails")
                .map(|a| a.split(';').map(str::to_string).collect())
                .unwrap_or_default();
            for email in &moved_emails {
                if !additional.contains(email) {
                    additional.push(email.clone());
                }
                self.by_email.insert(email.clone(), primary);
            }
            let joined = additional.join(";");
            if winner.props.get("hs_additional_emails") != Some(&joined) {
                note(&mut self.history, winner, "hs_additional_emails", &joined, now, "MERGE");
                changed_props.push(("hs_additional_emails".into(), joined.clone()));
            }
            winner.props.insert("hs_additional_emails".into(), joined);
        }
        let moved = changed_props.len() as u64;
        self.changes.push(ContactChange::Merged { primary, loser, at: now, moved });
        if !changed_props.is_empty() {
            self.changes.push(ContactChange::Changed {
                id: primary,
                at: now,
                props: changed_props,
            });
        }
        winner.merged_ids.push(loser);
        winner.merged_ids.extend(lost.merged_ids.iter().copied());
        winner.updated_ms = now;
        let ids = winner.value("hs_merged_object_ids").unwrap_or_default();
        note(&mut self.history, winner, "hs_merged_object_ids", &ids, now, "MERGE");
        self.merged_into.insert(loser, primary);
        self.publish(primary);
        self.publish(loser);
        Ok(primary)
    }

    /// Record an unsubscribe-from-all for an address and flag its contact; returns whether the
    /// address's state changed and whether a contact changed.
    pub fn unsubscribe_all(&mut self, email: &str, now: i64) -> (bool, bool) {
        let email = normalize_email(email);
        let state = self.optouts.entry(email.clone()).or_default();
        let changed = state.all.is_none();
        if changed {
            state.all = Some(now);
        }
        if let Some(id) = self.by_email.get(&email).copied()
            && let Some(entry) = self.contacts.get_mut(&id)
            && entry.props.get("hs_email_optout").map(String::as_str) != Some("true")
        {
            let contact = Arc::make_mut(entry);
            note(&mut self.history, contact, "hs_email_optout", "true", now, "API");
            contact.props.insert("hs_email_optout".into(), "true".into());
            contact.updated_ms = now;
            self.changes.push(ContactChange::Changed {
                id,
                at: now,
                props: vec![("hs_email_optout".into(), "true".into())],
            });
            self.publish(id);
            return (changed, true);
        }
        (changed, false)
    }

    /// Record a conversion event on a contact (form submission): recent event always, first
    /// event once, count, original source once. Moves `lastmodifieddate`.
    pub fn record_conversion(&mut self, id: u64, event: &str, source: &str, at: i64, now: i64) {
        let Some(entry) = self.contacts.get_mut(&id) else { return };
        let contact = Arc::make_mut(entry);
        let mut set = vec![
            ("recent_conversion_event_name".to_owned(), event.to_owned()),
            ("recent_conversion_date".to_owned(), iso_ms(at)),
        ];
        if !contact.props.contains_key("first_conversion_event_name") {
            set.push(("first_conversion_event_name".into(), event.to_owned()));
            set.push(("first_conversion_date".into(), iso_ms(at)));
        }
        if !contact.props.contains_key("hs_analytics_source") {
            set.push(("hs_analytics_source".into(), source.to_owned()));
        }
        let n = contact
            .props
            .get("num_conversion_events")
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        set.push(("num_conversion_events".into(), (n + 1).to_string()));
        for (k, v) in &set {
            note(&mut self.history, contact, k, v, now, "API");
            contact.props.insert(k.clone(), v.clone());
        }
        contact.updated_ms = now;
        self.changes.push(ContactChange::Changed { id, at: now, props: set });
        self.publish(id);
    }

    /// A sales contact (call, meeting, sales email, ...) logged on a contact as having
    /// happened at `at`: `notes_last_contacted` becomes `at` when that is later than what it
    /// holds (HubSpot keeps the latest), moving `lastmodifieddate` and firing a
    /// propertyChange. Returns whether the property moved.
    pub fn record_contact(&mut self, id: u64, at: i64, now: i64) -> bool {
        let Some(entry) = self.contacts.get_mut(&id) else { return false };
        let held = entry.props.get("notes_last_contacted").and_then(|v| parse_instant_ms(v));
        if held.is_some_and(|h| h >= at) {
            return false;
        }
        let contact = Arc::make_mut(entry);
        let set = vec![("notes_last_contacted".to_owned(), iso_ms(at))];
        for (k, v) in &set {
            note(&mut self.history, contact, k, v, now, "API");
            contact.props.insert(k.clone(), v.clone());
        }
        contact.updated_ms = now;
        self.changes.push(ContactChange::Changed { id, at: now, props: set });
        self.publish(id);
        true
    }

    pub fn opt_state(&self, email: &str) -> OptState {
        self.optouts.get(&normalize_email(email)).cloned().unwrap_or_default()
    }

    /// Set one subscription's status for an address. Resubscribing an address that opted out
    /// (of everything, or of that subscription) is refused: there is no undo through the API.
    pub fn set_subscription(
        &mut self,
        email: &str,
        subscription_id: u64,
        status: &'static str,
        legal_basis: Option<String>,
        legal_basis_explanation: Option<String>,
        now: i64,
    ) -> Result<bool, String> {
        let state = self.optouts.entry(normalize_email(email)).or_default();
        let current = state.subs.get(&subscription_id).map(|s| s.status);
        if status == "SUBSCRIBED" && (state.all.is_some() || current == Some("UNSUBSCRIBED")) {
            return Err(
                "Cannot resubscribe a contact who has opted out; the contact must opt back in \
                 themselves"
                    .into(),
            );
        }
        if current == Some(status) {
            return Ok(false);
        }
        state.subs.insert(
            subscription_id,
            SubState { status, ts_ms: now, legal_basis, legal_basis_explanation },
        );
        Ok(true)
    }

    fn publish(&mut self, id: u64) {
        let entry = self.contacts.get(&id).filter(|c| !c.archived).cloned();
        if self.index_delay.is_zero() {
            self.apply(id, entry);
        } else {
            self.pending.push_back((Instant::now() + self.index_delay, id, entry));
        }
    }

    fn apply(&mut self, id: u64, entry: IndexEntry) {
        let old = match entry {
            Some(contact) => {
                self.by_modified.insert((contact.updated_ms, id), Arc::clone(&contact));
                self.index.insert(id, contact)
            }
            None => self.index.remove(&id),
        };
        if let Some(old) = old {
            let new_key = self.index.get(&id).map(|c| (c.updated_ms, id));
            if new_key != Some((old.updated_ms, id)) {
                self.by_modified.remove(&(old.updated_ms, id));
            }
        }
    }

    /// Bring the search index up to date with writes older than the index delay.
    pub fn sync_index(&mut self) {
        let now = Instant::now();
        while self.pending.front().is_some_and(|(due, _, _)| *due <= now) {
            if let Some((_, id, entry)) = self.pending.pop_front() {
                self.apply(id, entry);
            }
        }
    }

    /// What search sees (call [`Store::sync_index`] first).
    pub fn index(&self) -> &BTreeMap<u64, Arc<Contact>> {
        &self.index
    }

    /// What search sees, ordered by (lastmodifieddate, id) (call [`Store::sync_index`] first).
    pub fn index_by_modified(&self) -> &BTreeMap<(i64, u64), Arc<Contact>> {
        &self.by_modified
    }

    /// Live (or, with `archived`, archived) contacts with id >= `from`, in id order.
    pub fn page(&self, from: u64, archived: bool) -> impl Iterator<Item = &Contact> {
        self.contacts.range(from..).map(|(_, c)| c.as_ref()).filter(move |c| c.archived == archived)
    }

    /// All known properties of a contact, including unset ones.
    fn full(&self, contact: &Contact) -> BTreeMap<String, Option<String>> {
        self.known_names().map(|name| (name.to_string(), contact.value(name))).collect()
    }

    pub fn snapshot(&self, key: &str) -> Option<BTreeMap<String, Option<String>>> {
        let id = self.resolve(key, false).or_else(|| self.resolve_archived(key, false))?;
        self.contacts.get(&id).map(|c| self.full(c))
    }

    pub fn all(&self) -> Vec<(String, BTreeMap<String, Option<String>>)> {
        self.contacts
            .values()
            .filter(|c| !c.archived)
            .map(|c| (c.id.to_string(), self.full(c)))
            .collect()
    }

    /// `propertiesWithHistory` for these names: per known property, its values newest first
    /// as `{value, timestamp, sourceType}`. A property never written since the create has one
    /// entry, dated at the create; the computed ones show their current value.
    pub fn history(&self, contact: &Contact, names: &[String]) -> Map<String, Value> {
        let entry = |value: String, at: i64, source: &str| json!({ "value": value, "timestamp": iso_ms(at), "sourceType": source });
        let logged = self.history.get(&contact.id);
        let mut out = Map::new();
        for name in names {
            if self.prop_type(name).is_none() || out.contains_key(name) {
                continue;
            }
            let mut list: Vec<Value> = logged
                .into_iter()
                .flatten()
                .filter(|h| &h.name == name)
                .rev()
                .map(|h| entry(h.value.clone(), h.at, h.source))
                .collect();
            if list.is_empty() {
                let at = match name.as_str() {
                    "lastmodifieddate" => contact.updated_ms,
                    _ => contact.created_ms,
                };
                list.extend(contact.value(name).map(|v| entry(v, at, "API")));
            }
            out.insert(name.clone(), Value::Array(list));
        }
        out
    }

    /// A record as the API returns it, with `propertiesWithHistory` when any are asked for.
    pub fn render_with_history(
        &self,
        contact: &Contact,
        selection: &Selection,
        history: &[String],
    ) -> Value {
        let mut record = self.render(contact, selection);
        if !history.is_empty()
            && let Some(obj) = record.as_object_mut()
        {
            obj.insert(
                "propertiesWithHistory".into(),
                Value::Object(self.history(contact, history)),
            );
        }
        record
    }

    /// A record as the API returns it.
    pub fn render(&self, contact: &Contact, selection: &Selection) -> Value {
        let mut props = Map::new();
        let mut put = |name: &str| {
            let value = contact.value(name).map(Value::String).unwrap_or(Value::Null);
            props.insert(name.to_string(), value);
        };
        match selection {
            Selection::Default => DEFAULT_PROPERTIES.iter().for_each(|n| put(n)),
            Selection::Listed(names) => {
                for name in names {
                    if self.prop_type(name).is_some() {
                        put(name);
                    }
                }
            }
            Selection::AllSet => {
                for name in contact.props.keys() {
                    put(name);
                }
                if !contact.merged_ids.is_empty() {
                    put("hs_merged_object_ids");
                }
            }
        }
        for name in ALWAYS_RETURNED {
            put(name);
        }
        let mut record = json!({
            "id": contact.id.to_string(),
            "properties": props,
            "createdAt": iso_ms(contact.created_ms),
            "updatedAt": iso_ms(contact.updated_ms),
            "archived": contact.archived,
        });
        if let (Some(ms), Some(obj)) = (contact.archived_ms, record.as_object_mut()) {
            obj.insert("archivedAt".into(), Value::String(iso_ms(ms)));
        }
        record
    }
}
