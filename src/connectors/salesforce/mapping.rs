//! Conversions between Salesforce wire records and domain types: records to [`Change`]s,
//! [`PushRecord`]s to collection records, per-record save results to [`PushOutcome`]s, and
//! Salesforce datetimes.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::wire::{self, Record, SaveResult};
use crate::connectors::FieldMap;
use crate::connectors::contract_props::{ContractProps, DateKind};
use crate::domain::{Change, Field, LastActivity, PushOutcome, PushRecord, RecordFate, RemoteId};

/// Placeholder Salesforce integrations write into required text fields they have no value for.
pub(super) const NOT_PROVIDED: &str = "[not provided]";

/// Per-record status codes that say "try again later", not "this record is wrong".
const TRANSIENT_CODES: [&str; 6] = [
    "UNABLE_TO_LOCK_ROW",
    "ALL_OR_NONE_OPERATION_ROLLED_BACK",
    "REQUEST_RUNNING_TOO_LONG",
    "QUERY_TIMEOUT",
    "SERVER_UNAVAILABLE",
    "REQUEST_LIMIT_EXCEEDED",
];

/// Parse a Salesforce datetime. The JSON form is `2024-05-01T10:00:00.000+0000`, which strict
/// RFC 3339 parsers reject; `+00:00` and `Z` are accepted too, with or without fractions.
pub(super) fn parse_datetime(s: &str) -> Option<DateTime<Utc>> {
    let s = s.trim();
    let owned;
    let s = match s.strip_suffix(['Z', 'z']) {
        Some(head) => {
            owned = format!("{head}+0000");
            owned.as_str()
        }
        None => s,
    };
    // `%z` accepts both `+0000` and `+00:00`; `%.f` accepts a missing fraction.
    DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z").ok().map(|d| d.with_timezone(&Utc))
}

/// A SOQL datetime literal (unquoted, UTC, milliseconds): `2024-05-01T10:00:00.000Z`.
pub(super) fn soql_datetime(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// A JSON value as the canonical mapper wants it: strings as they are, booleans as
/// `"true"`/`"false"`, numbers in decimal, null (and compound values) as absent.
fn json_to_string(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

/// Look a field up ignoring case: Salesforce answers with each field's canonical casing,
/// which may differ from how it was configured.
fn get_ci<'a>(rec: &'a Record, name: &str) -> Option<&'a Value> {
    rec.get(name).or_else(|| rec.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v))
}

/// The keyset position of one record: `(SystemModstamp, Id)`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(super) struct Position {
    pub ts: DateTime<Utc>,
    pub id: String,
}

/// Why a record could not be read. Carries field names only.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("record lacks a usable {0}")]
pub(super) struct BadRecord(pub &'static str);

/// Turn one queried or fetched record into a [`Change`] and its keyset position.
pub(super) fn record_to_change(
    map: &FieldMap,
    contract: &ContractProps,
    object_type: &str,
    external_id_field: &str,
    rec: &Record,
    fetched_at: DateTime<Utc>,
) -> Result<(Change, Position), BadRecord> {
    let id = get_ci(rec, wire::ID_FIELD)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or(BadRecord("Id"))?
        .to_string();
    let modified_at = get_ci(rec, wire::MODSTAMP_FIELD)
        .and_then(Value::as_str)
        .and_then(parse_datetime)
        .ok_or(BadRecord("SystemModstamp"))?;
    let fate = fate_of(rec);
    // A record that is gone says nothing about the person any more: its last values must not
    // compete with live ones, so only a live or converted record carries fields.
    let custom = match fate {
        RecordFate::Deleted | RecordFate::MergedInto { .. } => BTreeMap::new(),
        RecordFate::Live | RecordFate::ConvertedTo { .. } => {
            contract.values(|p| get_ci(rec, p).and_then(json_to_string))
        }
    };
    let fields = match fate {
        RecordFate::MergedInto { .. } => crate::domain::Fields::new(),
        // Only who it was: a record deleted before leadsync ever read it is found by its
        // email or, failing that, by the fuzzy rules (names, company, phone), so that its
        // person is not created there again (a tombstone). The reconciler takes no value from
        // a deleted record.
        RecordFate::Deleted => {
            use crate::domain::Field;
            [Field::Email, Field::FirstName, Field::LastName, Field::Company, Field::Phone]
                .into_iter()
                .filter_map(|f| {
                    let v = get_ci(rec, map.property(f)?).and_then(json_to_string)?;
                    (!v.trim().is_empty() && v != NOT_PROVIDED).then_some((f, v))
                })
                .collect()
        }
        RecordFate::Live | RecordFate::ConvertedTo { .. } => {
            // The placeholder leadsync writes into required fields it has no value for reads
            // back as "no value", so it never travels to other systems as if someone had
            // typed it.
            let props: BTreeMap<String, Option<String>> = map
                .properties()
                .map(|p| {
                    let v = get_ci(rec, p).and_then(json_to_string).filter(|v| v != NOT_PROVIDED);
                    (p.to_string(), v)
                })
                .collect();
            map.to_canonical(&props)
        }
    };
    let last_activity = match fate {
        RecordFate::Live | RecordFate::ConvertedTo { .. } if contract.reads_last_activity() => {
            last_activity_of(rec)
        }
        _ => None,
    };
    let ledger_key =
        get_ci(rec, external_id_field).and_then(json_to_string).filter(|s| !s.trim().is_empty());
    let change = Change {
        remote: RemoteId { object_type: object_type.to_string(), id: id.clone() },
        fields,
        ledger_key,
        modified_at,
        fetched_at,
        fate,
        custom,
        last_activity,
    };
    Ok((change, Position { ts: modified_at, id }))
}

/// `LastActivityDate` as the record carries it: `null` is [`LastActivity::Never`]; a record
/// without the field (an outbound message that does not carry it) or with a value that is
/// not a date says nothing.
pub(super) fn last_activity_of(rec: &Record) -> Option<LastActivity> {
    match get_ci(rec, wire::LAST_ACTIVITY_FIELD)? {
        Value::Null => Some(LastActivity::Never),
        Value::String(s) => {
            chrono::NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d").ok().map(LastActivity::Date)
        }
        _ => None,
    }
}

/// What the record's system fields say happened to it: `IsDeleted` with a `MasterRecordId`
/// is a merge (the master survives), without one a delete; a converted lead points at its
/// contact, also once deleted (a converted lead can be deleted, and its contact lives on: read
/// as a delete, the conversion was never seen and the contact became a person of its own,
/// convergence seed 266). Absent fields (an outbound message that did not carry them) read as
/// live.
pub(super) fn fate_of(rec: &Record) -> RecordFate {
    let text = |name: &str| {
        get_ci(rec, name).and_then(Value::as_str).map(str::trim).filter(|s| !s.is_empty())
    };
    let flag = |name: &str| {
        get_ci(rec, name).is_some_and(|v| {
            v.as_bool()
                .unwrap_or_else(|| v.as_str().is_some_and(|s| s.eq_ignore_ascii_case("true")))
        })
    };
    let converted = flag(wire::IS_CONVERTED_FIELD) && text(wire::CONVERTED_CONTACT_FIELD).is_some();
    if flag(wire::IS_DELETED_FIELD) && !converted {
        return match text(wire::MASTER_RECORD_FIELD) {
            Some(survivor) => RecordFate::MergedInto { survivor: survivor.to_string() },
            None => RecordFate::Deleted,
        };
    }
    if flag(wire::IS_CONVERTED_FIELD)
        && let Some(contact) = text(wire::CONVERTED_CONTACT_FIELD)
    {
        return RecordFate::ConvertedTo {
            remote: RemoteId { object_type: wire::CONTACT.to_string(), id: contact.to_string() },
        };
    }
    RecordFate::Live
}

/// Canonical fields to Salesforce JSON values: the opt-out property travels as a JSON boolean
/// (Salesforce refuses a string for a checkbox), everything else as a string.
fn remote_values(map: &FieldMap, fields: &crate::domain::Fields) -> Vec<(String, Value)> {
    let opt_out_prop = map.property(Field::EmailOptOut);
    map.to_remote(fields)
        .into_iter()
        .map(|(prop, v)| {
            let value = if Some(prop.as_str()) == opt_out_prop {
                Value::Bool(v.trim().eq_ignore_ascii_case("true"))
            } else {
                Value::String(v)
            };
            (prop, value)
        })
        .collect()
}

/// The upsert record for a create, keyed by the external id field holding the ledger key.
/// Lead requires `LastName`, `Company` and `Status`: when `fields` lacks one, it comes from
/// the person's full fields, else `LastName`/`Company` get [`NOT_PROVIDED`] and `Status` the
/// mapped value of canonical status `new` (left out when the mapping cannot express it, so the
/// org's picklist default applies).
pub(super) fn create_record(
    map: &FieldMap,
    object_type: &str,
    external_id_field: &str,
    rec: &PushRecord,
) -> Record {
    let mut values = remote_values(map, &rec.fields);
    let person = remote_values(map, &rec.person);
    let has = |values: &[(String, Value)], prop: &str| {
        values.iter().any(|(p, v)| {
            p.eq_ignore_ascii_case(prop) && v.as_str().is_none_or(|s| !s.trim().is_empty())
        })
    };
    let new_status: crate::domain::Fields = [(Field::LeadStatus, "new".to_string())].into();
    let status_default = remote_values(map, &new_status)
        .into_iter()
        .find(|(p, _)| p.eq_ignore_ascii_case("Status"))
        .map(|(_, v)| v);
    for (prop, fallback) in [
        ("LastName", Some(Value::String(NOT_PROVIDED.into()))),
        ("Company", Some(Value::String(NOT_PROVIDED.into()))),
        ("Status", status_default),
    ] {
        if has(&values, prop) {
            continue;
        }
        // Drop an empty value for a required field before filling it.
        values.retain(|(p, _)| !p.eq_ignore_ascii_case(prop));
        let from_person = person
            .iter()
            .find(|(p, v)| {
                p.eq_ignore_ascii_case(prop) && v.as_str().is_some_and(|s| !s.trim().is_empty())
            })
            .cloned();
        match (from_person, fallback) {
            (Some(pv), _) => values.push(pv),
            (None, Some(v)) => values.push((prop.to_string(), v)),
            (None, None) => {}
        }
    }
    values.push((external_id_field.to_string(), Value::String(rec.ledger_key.clone())));
    wire::write_record(object_type, values)
}

/// The collections update record for an existing record.
pub(super) fn update_record(
    map: &FieldMap,
    object_type: &str,
    remote_id: &str,
    rec: &PushRecord,
) -> Record {
    let mut values = remote_values(map, &rec.fields);
    values.push((wire::UPDATE_ID_KEY.to_string(), Value::String(remote_id.to_string())));
    wire::write_record(object_type, values)
}

/// The owner field of Leads and Contacts (a User id, or for Leads also a Queue id).
pub(super) const OWNER_FIELD: &str = "OwnerId";

/// Add the contract writes of a push to its write record: the stage-entry dates
/// (`[contract.mapping.stage_dates]`; `DateTime` fields as `2026-11-20T10:00:00.000Z`, `Date`
/// fields as `2026-11-20`, the entry's UTC date), the latest named transition's reason code
/// (`[contract.mapping.stage_reason]`; `""` is sent as null, which clears the field), and on
/// the CRM-role system the owner an SLA escalation reassigns the record to (`OwnerId`).
pub(super) fn add_stage_dates(record: &mut Record, contract: &ContractProps, rec: &PushRecord) {
    let values = contract.stage_date_values(&rec.stage_dates, |at, kind| match kind {
        DateKind::DateTime => soql_datetime(at),
        DateKind::Date => at.format("%Y-%m-%d").to_string(),
    });
    for (prop, v) in values {
        record.insert(prop, Value::String(v));
    }
    if let Some((prop, reason)) = contract.stage_reason_value(rec.stage_reason.as_deref()) {
        let v = if reason.is_empty() { Value::Null } else { Value::String(reason) };
        record.insert(prop, v);
    }
    if let Some(owner) = contract.owner_value(rec.owner.as_deref()) {
        record.insert(OWNER_FIELD.to_string(), Value::String(owner.to_string()));
    }
}

/// One per-record save result as a [`PushOutcome`]. `known_id` is the record id we sent (for
/// updates), used when a failed result carries none.
pub(super) fn save_outcome(
    outbox_id: i64,
    object_type: &str,
    known_id: Option<&str>,
    result: SaveResult,
) -> PushOutcome {
    if result.success {
        match result.id.or_else(|| known_id.map(str::to_string)) {
            Some(id) => PushOutcome::Accepted {
                outbox_id,
                remote: RemoteId { object_type: object_type.to_string(), id },
                // Updates never create; an upsert that omits `created` was keyed by our own
                // ledger id, so the record is ours either way.
                created: known_id.is_none() && result.created.unwrap_or(true),
            },
            None => PushOutcome::Retry { outbox_id, code: "missing_id".into() },
        }
    } else {
        let Some(first) = result.errors.first() else {
            return PushOutcome::Rejected {
                outbox_id,
                code: "UNKNOWN".into(),
                message: "failed without an error entry".into(),
            };
        };
        let code =
            if first.status_code.is_empty() { "UNKNOWN".into() } else { first.status_code.clone() };
        if TRANSIENT_CODES.contains(&code.as_str()) {
            return PushOutcome::Retry { outbox_id, code };
        }
        // The vendor message goes to the ledger's dead-letter row (not to logs); it can echo
        // a value, which is why it never reaches an error's Display.
        let mut message = first.message.clone();
        if !first.fields.is_empty() {
            message = format!("{message} (fields: {})", first.fields.join(", "));
        }
        PushOutcome::Rejected { outbox_id, code, message }
    }
}
