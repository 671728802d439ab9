//! HubSpot wire records ⇄ leadsync domain types.
//!
//! Lifecycle stage: HubSpot moves `lifecyclestage` only forward through the API; a backward
//! move needs the property cleared to `""` first and then set (api-facts §1.3). The engine
//! asks for the clearing write as `lifecycle_stage = ""` (a named backward transition of the
//! lead contract, see `reconcile::lifecycle`), which is sent as `lifecyclestage: ""`; the new
//! stage follows in a later push, once the clear was accepted.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};

use super::wire::{self, Contact};
use crate::connectors::FieldMap;
use crate::connectors::contract_props::{ContractProps, DateKind};
use crate::domain::{Change, Field, Fields, LastActivity, PushRecord, RecordFate, RemoteId};

/// The object type leadsync uses for HubSpot contacts in [`RemoteId`]s.
pub const OBJECT_TYPE: &str = "contact";

/// Properties to ask for on every read: the mapped ones plus what paging and change
/// detection need.
pub(super) fn read_properties(map: &FieldMap, contract: &ContractProps) -> Vec<String> {
    let mut props: Vec<String> = map.properties().map(str::to_string).collect();
    let extra = [wire::LAST_MODIFIED, wire::OBJECT_ID, wire::MERGED_IDS];
    let last_contacted = contract.reads_last_activity().then_some(wire::LAST_CONTACTED);
    for p in extra.into_iter().chain(contract.properties()).chain(last_contacted) {
        if !props.iter().any(|q| q == p) {
            props.push(p.to_string());
        }
    }
    props
}

/// Parse a HubSpot timestamp: ISO-8601 with `Z` (with or without milliseconds), or epoch
/// milliseconds as text (how date filters are sent, and how some older payloads carry them).
pub(super) fn parse_time(raw: &str) -> Option<DateTime<Utc>> {
    let raw = raw.trim();
    if !raw.is_empty() && raw.bytes().all(|b| b.is_ascii_digit()) {
        return Utc.timestamp_millis_opt(raw.parse().ok()?).single();
    }
    DateTime::parse_from_rfc3339(raw).ok().map(|t| t.with_timezone(&Utc))
}

/// The record's `lastmodifieddate`, falling back to `updatedAt` when the property is absent.
pub(super) fn modified_at(c: &Contact) -> Option<DateTime<Utc>> {
    c.properties
        .get(wire::LAST_MODIFIED)
        .and_then(|v| v.as_deref())
        .and_then(parse_time)
        .or_else(|| c.updated_at.as_deref().and_then(parse_time))
}

/// A wire contact as an observed [`Change`]; `None` when it carries no usable timestamp.
/// HubSpot leaves a property it does not know out of the answer rather than failing, so a
/// custom property the portal lacks reads as empty.
pub(super) fn to_change(
    c: &Contact,
    map: &FieldMap,
    contract: &ContractProps,
    fetched_at: DateTime<Utc>,
) -> Option<Change> {
    let modified_at = modified_at(c)?;
    Some(Change {
        remote: RemoteId { object_type: OBJECT_TYPE.into(), id: c.id.clone() },
        fields: map.to_canonical(&c.properties),
        ledger_key: None,
        modified_at,
        fetched_at,
        fate: RecordFate::Live,
        custom: contract.values(|p| c.properties.get(p).cloned().flatten()),
        last_activity: contract.reads_last_activity().then(|| last_contacted(c)).flatten(),
    })
}

/// `notes_last_contacted` as the contact carries it: absent from the answer says nothing;
/// `null` or blank is [`LastActivity::Never`]; an unparseable value says nothing.
pub(super) fn last_contacted(c: &Contact) -> Option<LastActivity> {
    match c.properties.get(wire::LAST_CONTACTED)? {
        None => Some(LastActivity::Never),
        Some(v) if v.trim().is_empty() => Some(LastActivity::Never),
        Some(v) => parse_time(v).map(LastActivity::At),
    }
}

/// The ids merged into this contact (`hs_merged_object_ids`), in the order HubSpot lists them.
pub(super) fn merged_ids(c: &Contact) -> Vec<String> {
    c.properties
        .get(wire::MERGED_IDS)
        .and_then(|v| v.as_deref())
        .map(|v| {
            v.split(';').map(str::trim).filter(|s| !s.is_empty()).map(str::to_string).collect()
        })
        .unwrap_or_default()
}

/// What HubSpot's word about one record as a whole looks like as a [`Change`]: no fields, no
/// ledger key, just the fate and when it happened.
pub(super) fn fate_change(
    id: &str,
    fate: RecordFate,
    at: DateTime<Utc>,
    fetched_at: DateTime<Utc>,
) -> Change {
    Change {
        remote: RemoteId { object_type: OBJECT_TYPE.into(), id: id.to_string() },
        fields: Fields::new(),
        ledger_key: None,
        modified_at: at,
        fetched_at,
        fate,
        custom: Default::default(),
        last_activity: None,
    }
}

/// When `merged` was merged into `c`: the oldest value in the history of
/// `hs_merged_object_ids` that lists it. `None` without that history (a search answer has
/// none), and then only the survivor's `lastmodifieddate` dates the merge, which any later
/// write to the survivor (leadsync's own pushes too) moves on.
pub(super) fn merged_at(c: &Contact, merged: &str) -> Option<DateTime<Utc>> {
    c.properties_with_history
        .get(wire::MERGED_IDS)?
        .iter()
        .filter(|h| h.value.as_deref().is_some_and(|v| v.split(';').any(|id| id.trim() == merged)))
        .filter_map(|h| h.timestamp.as_deref().and_then(parse_time))
        .min()
}

/// `MergedInto` changes for every id merged into `c`, dated when each was merged: from
/// `dated_by`'s history of `hs_merged_object_ids` (the same contact read with it; `c` itself
/// when it carries it), else like `c`'s own change.
pub(super) fn merged_away(
    c: &Contact,
    dated_by: Option<&Contact>,
    fetched_at: DateTime<Utc>,
) -> Vec<Change> {
    let Some(modified) = modified_at(c) else { return Vec::new() };
    let dated_by = dated_by.unwrap_or(c);
    merged_ids(c)
        .into_iter()
        .filter(|m| *m != c.id)
        .map(|m| {
            let at = merged_at(dated_by, &m).unwrap_or(modified);
            fate_change(&m, RecordFate::MergedInto { survivor: c.id.clone() }, at, fetched_at)
        })
        .collect()
}

/// An archived contact as [`archived_change`], after a `MergedInto` change for each id merged
/// into it: a contact merged into one that was archived before leadsync read the survivor is
/// known gone only from the survivor's `hs_merged_object_ids` (HubSpot does not resolve
/// merged-away ids to an archived contact). Its person then follows the survivor, whose
/// delete closes the link with a tombstone.
pub(super) fn archived_changes(
    c: &Contact,
    map: &FieldMap,
    fetched_at: DateTime<Utc>,
) -> Vec<Change> {
    let Some(deleted) = archived_change(c, map, fetched_at) else { return Vec::new() };
    let mut out: Vec<Change> = merged_ids(c)
        .into_iter()
        .filter(|m| *m != c.id)
        .map(|m| {
            let fate = RecordFate::MergedInto { survivor: c.id.clone() };
            let at = merged_at(c, &m).unwrap_or(deleted.modified_at);
            fate_change(&m, fate, at, fetched_at)
        })
        .collect();
    out.push(deleted);
    out
}

/// The canonical fields that say who a deleted record was: what matching needs (its email,
/// or the names, company and phone the fuzzy rules score).
pub(super) const WHO_IT_WAS: [Field; 5] =
    [Field::Email, Field::FirstName, Field::LastName, Field::Company, Field::Phone];

/// The HubSpot properties of [`WHO_IT_WAS`] under this mapping.
pub(super) fn who_it_was_properties(map: &FieldMap) -> Vec<&str> {
    let mut props: Vec<&str> = WHO_IT_WAS.iter().filter_map(|f| map.property(*f)).collect();
    if !props.contains(&wire::EMAIL) {
        props.push(wire::EMAIL);
    }
    props
}

/// An archived contact as a `Deleted` change, dated when it was archived (`archivedAt`, else
/// its last update); `None` without a usable time.
pub(super) fn archived_change(
    c: &Contact,
    map: &FieldMap,
    fetched_at: DateTime<Utc>,
) -> Option<Change> {
    let at = c.archived_at.as_deref().and_then(parse_time).or_else(|| modified_at(c))?;
    let mut change = fate_change(&c.id, RecordFate::Deleted, at, fetched_at);
    // Only who it was: a contact archived before leadsync ever read it is found by its email
    // or, failing that, by the fuzzy rules, so that its person is not created there again (a
    // tombstone). The reconciler takes no value from a deleted record.
    for field in WHO_IT_WAS {
        let prop = map.property(field).or((field == Field::Email).then_some(wire::EMAIL));
        if let Some(v) = prop.and_then(|p| c.properties.get(p).cloned().flatten())
            && !v.trim().is_empty()
        {
            change.fields.insert(field, v);
        }
    }
    Some(change)
}

/// The properties to write for these canonical fields. `hs_email_optout` is read-only through
/// the contacts API, so it is never sent, whatever the mapping calls it; opt-outs go through
/// the communication preferences API instead (see [`wants_opt_out`]).
pub(super) fn write_properties(map: &FieldMap, fields: &Fields) -> BTreeMap<String, String> {
    let optout_prop = map.property(Field::EmailOptOut);
    let mut props: BTreeMap<String, String> = map
        .to_remote(fields)
        .into_iter()
        .filter(|(p, _)| p != wire::EMAIL_OPTOUT && Some(p.as_str()) != optout_prop)
        .collect();
    // The field map writes stages only; an empty stage is the clearing write.
    if fields.get(&Field::LifecycleStage).is_some_and(String::is_empty)
        && let Some(prop) = map.property(Field::LifecycleStage)
    {
        props.insert(prop.to_string(), String::new());
    }
    props
}

/// The stage-entry date properties of a push (`[contract.mapping.stage_dates]`): epoch
/// milliseconds as text, which HubSpot takes for both property types; a `date` property
/// gets midnight UTC of the entry's UTC date, the only time it accepts.
pub(super) fn stage_date_properties(
    contract: &ContractProps,
    rec: &PushRecord,
) -> Vec<(String, String)> {
    contract.stage_date_values(&rec.stage_dates, |at, kind| {
        let at = match kind {
            DateKind::DateTime => at,
            DateKind::Date => at.date_naive().and_time(chrono::NaiveTime::MIN).and_utc(),
        };
        at.timestamp_millis().to_string()
    })
}

/// The property of the owner field HubSpot assigns a contact with.
pub(super) const OWNER_PROPERTY: &str = "hubspot_owner_id";

/// The other contract writes of a push: the latest named transition's reason code (`""`
/// clears the property) and, when this is the CRM-role system, the owner an SLA escalation
/// reassigns the contact to (`hubspot_owner_id`, an owner id from `GET /crm/v3/owners`).
pub(super) fn contract_write_properties(
    contract: &ContractProps,
    rec: &PushRecord,
) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> =
        contract.stage_reason_value(rec.stage_reason.as_deref()).into_iter().collect();
    if let Some(owner) = contract.owner_value(rec.owner.as_deref()) {
        out.push((OWNER_PROPERTY.to_string(), owner.to_string()));
    }
    out
}

/// Whether this push asks for an opt-out. `"false"` is never acted on: leadsync never
/// re-subscribes anyone (consent only tightens).
pub(super) fn wants_opt_out(fields: &Fields) -> bool {
    fields.get(&Field::EmailOptOut).is_some_and(|v| v == "true")
}

/// The email address a push is about: the one being written, else the person's.
pub(super) fn email_of(rec: &PushRecord) -> Option<String> {
    rec.fields
        .get(&Field::Email)
        .or_else(|| rec.person.get(&Field::Email))
        .map(|e| e.trim().to_string())
        .filter(|e| !e.is_empty())
}

/// Key for matching emails between inputs and upsert results: HubSpot stores addresses
/// lower-cased, so compare trimmed and case-insensitively.
pub(super) fn email_key(e: &str) -> String {
    e.trim().to_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> FieldMap {
        FieldMap::from_raw(&FieldMap::hubspot_contact_default(), "m").expect("default is valid")
    }

    #[test]
    fn parses_hubspot_times() {
        let a = parse_time("2024-03-01T10:00:00.123Z").expect("with millis");
        assert_eq!(a.timestamp_millis(), 1_709_287_200_123);
        let b = parse_time("2024-03-01T10:00:00Z").expect("without millis");
        assert_eq!(b.timestamp_millis(), 1_709_287_200_000);
        assert_eq!(parse_time("1709287200123"), Some(a));
        assert!(parse_time("yesterday").is_none());
        assert!(parse_time("").is_none());
    }

    #[test]
    fn never_writes_optout_property() {
        let m = map();
        let fields: Fields = [
            (Field::FirstName, "Ann".to_string()),
            (Field::EmailOptOut, "true".to_string()),
            (Field::LifecycleStage, "mql".to_string()),
        ]
        .into();
        let props = write_properties(&m, &fields);
        assert_eq!(props.get("firstname").map(String::as_str), Some("Ann"));
        assert_eq!(props.get("lifecyclestage").map(String::as_str), Some("marketingqualifiedlead"));
        assert!(!props.contains_key("hs_email_optout"));
        assert!(wants_opt_out(&fields));
        let no: Fields = [(Field::EmailOptOut, "false".to_string())].into();
        assert!(!wants_opt_out(&no));
    }

    #[test]
    fn an_empty_stage_is_the_clearing_write() {
        let m = map();
        let clear: Fields = [(Field::LifecycleStage, String::new())].into();
        let props = write_properties(&m, &clear);
        assert_eq!(props.get("lifecyclestage").map(String::as_str), Some(""));
        let other: Fields = [(Field::LifecycleStage, "nonsense".to_string())].into();
        assert!(!write_properties(&m, &other).contains_key("lifecyclestage"));
    }

    #[test]
    fn read_properties_include_paging_keys_once() {
        let p = read_properties(&map(), &ContractProps::default());
        assert_eq!(p.iter().filter(|x| *x == "lastmodifieddate").count(), 1);
        assert!(p.iter().any(|x| x == "hs_object_id"));
        assert!(p.iter().any(|x| x == "email"));
    }

    #[test]
    fn stage_dates_are_written_as_epoch_millis_and_dates_at_midnight_utc() {
        use crate::connectors::contract_props::StageDateProp;
        let props = ContractProps::default().with_stage_dates(
            [
                ("mql", StageDateProp { property: "ls_mql".into(), kind: DateKind::DateTime }),
                ("sql", StageDateProp { property: "ls_sql".into(), kind: DateKind::Date }),
            ]
            .map(|(a, b)| (a.to_string(), b))
            .into(),
        );
        let at = parse_time("2026-11-20T15:30:00.250Z").expect("time");
        let rec = PushRecord {
            outbox_id: 1,
            ledger_key: "L1".into(),
            op: crate::domain::PushOp::Create { object_type: OBJECT_TYPE.into() },
            fields: Fields::new(),
            person: Fields::new(),
            stage_dates: [("mql", at), ("sql", at), ("lead", at)]
                .map(|(s, t)| (s.to_string(), t))
                .into(),
            stage_reason: None,
            owner: None,
        };
        let mut got = stage_date_properties(&props, &rec);
        got.sort();
        let midnight = parse_time("2026-11-20T00:00:00Z").expect("midnight");
        assert_eq!(
            got,
            [
                ("ls_mql".to_string(), at.timestamp_millis().to_string()),
                ("ls_sql".to_string(), midnight.timestamp_millis().to_string()),
            ]
        );
        assert!(
            read_properties(&map(), &props).iter().all(|p| !p.starts_with("ls_")),
            "never read"
        );
        assert!(contract_write_properties(&props, &rec).is_empty());
        let props = props.with_stage_reason(Some("ls_reason".into())).with_owner(true);
        let rec =
            PushRecord { stage_reason: Some(String::new()), owner: Some("70000002".into()), ..rec };
        assert_eq!(
            contract_write_properties(&props, &rec),
            [
                ("ls_reason".to_string(), String::new()),
                (OWNER_PROPERTY.to_string(), "70000002".to_string())
            ],
            "an empty reason clears the property"
        );
        assert!(read_properties(&map(), &props).iter().all(|p| p != "ls_reason"), "never read");
    }

    #[test]
    fn custom_properties_are_asked_for_and_carried_by_declared_name() {
        let props = ContractProps::new(
            [("score", "hubspotscore"), ("country", "country"), ("tier", "tier")]
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .into(),
        );
        let asked = read_properties(&map(), &props);
        assert!(asked.iter().any(|p| p == "hubspotscore") && asked.iter().any(|p| p == "tier"));
        assert_eq!(asked.iter().filter(|p| *p == "country").count(), 1);
        let c: Contact = serde_json::from_str(
            r#"{"id":"7","properties":{"email":"a@b.test","hubspotscore":"55","country":"","lastmodifieddate":"2024-03-01T10:00:00Z"}}"#,
        )
        .expect("contact");
        let ch = to_change(&c, &map(), &props, Utc::now()).expect("change");
        assert_eq!(ch.custom.get("score"), Some(&Some("55".to_string())));
        assert_eq!(ch.custom.get("country"), Some(&None), "blank reads as empty");
        assert_eq!(ch.custom.get("tier"), Some(&None), "a property the portal lacks is left out");
        assert!(!ch.fields.values().any(|v| v == "55"), "custom values are not canonical fields");
    }

    #[test]
    fn last_contacted_is_read_only_when_asked_and_empty_is_never() {
        let off = ContractProps::default();
        assert!(!read_properties(&map(), &off).iter().any(|p| p == wire::LAST_CONTACTED));
        let on = ContractProps::default().with_last_activity(true);
        assert_eq!(
            read_properties(&map(), &on).iter().filter(|p| *p == wire::LAST_CONTACTED).count(),
            1
        );
        let contact = |props: &str| -> Contact {
            serde_json::from_str(&format!(
                r#"{{"id":"7","properties":{{"lastmodifieddate":"2024-03-01T10:00:00Z"{props}}}}}"#
            ))
            .expect("contact")
        };
        let read = |c: &Contact, p: &ContractProps| {
            to_change(c, &map(), p, Utc::now()).expect("change").last_activity
        };
        let logged = contact(r#","notes_last_contacted":"2024-02-29T15:04:05.123Z""#);
        let at = parse_time("2024-02-29T15:04:05.123Z").expect("time");
        assert_eq!(read(&logged, &on), Some(LastActivity::At(at)));
        assert_eq!(read(&logged, &off), None, "not asked: says nothing");
        assert_eq!(
            read(&contact(r#","notes_last_contacted":null"#), &on),
            Some(LastActivity::Never)
        );
        assert_eq!(read(&contact(""), &on), None, "left out of the answer: says nothing");
        assert_eq!(read(&contact(r#","notes_last_contacted":"soon""#), &on), None);
    }
}
