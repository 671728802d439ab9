//! Records, field schemas and write validation for the simulated Salesforce org.
//!
//! Records live in one `Vec` per object, appended in Id order (ids come from a per-object
//! counter encoded so that byte order equals creation order), with a hash index by Id and one
//! case-insensitive index per External ID field. Nothing here is O(n) per write, so seeding
//! 100,000 records stays fast.
//!
//! Writes report failures the way Salesforce does per record (`statusCode`, `message`, `fields`);
//! a value of the wrong JSON type is a request-level `JSON_PARSER_ERROR`, because Salesforce
//! fails while deserialising the body, before it looks at any record.

use std::collections::{BTreeSet, HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

mod activities;

/// The restricted picklist values of `Lead.Status`, default first.
pub(crate) const LEAD_STATUSES: [&str; 4] =
    ["Open - Not Contacted", "Working - Contacted", "Closed - Converted", "Closed - Not Converted"];

/// The status a real conversion sets.
const CONVERTED_STATUS: &str = "Closed - Converted";

/// Characters of the 18-character id suffix, indexed by the 5-bit "is upper case" mask.
const SUFFIX_CHARS: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";

/// Base-62 digits in ASCII order, so a fixed-width encoding sorts like the number it encodes.
const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// The sObjects the simulator knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Obj {
    Lead,
    Contact,
    Campaign,
    CampaignMember,
    Opportunity,
    OpportunityContactRole,
    Task,
}

impl Obj {
    /// Object names are case-insensitive in SOQL and in URLs.
    pub(crate) const ALL: [Obj; 7] = [
        Obj::Lead,
        Obj::Contact,
        Obj::Campaign,
        Obj::CampaignMember,
        Obj::Opportunity,
        Obj::OpportunityContactRole,
        Obj::Task,
    ];

    pub(crate) fn parse(name: &str) -> Option<Obj> {
        Obj::ALL.into_iter().find(|o| o.name().eq_ignore_ascii_case(name))
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            Obj::Lead => "Lead",
            Obj::Contact => "Contact",
            Obj::Campaign => "Campaign",
            Obj::CampaignMember => "CampaignMember",
            Obj::Opportunity => "Opportunity",
            Obj::OpportunityContactRole => "OpportunityContactRole",
            Obj::Task => "Task",
        }
    }

    /// Salesforce's standard key prefixes.
    fn prefix(self) -> &'static str {
        match self {
            Obj::Lead => "00Q",
            Obj::Contact => "003",
            Obj::Campaign => "701",
            Obj::CampaignMember => "00v",
            Obj::Opportunity => "006",
            Obj::OpportunityContactRole => "00K",
            Obj::Task => "00T",
        }
    }

    /// Whether the object is a person (Lead, Contact): a computed `Name`, merges, conversion,
    /// External ID fields.
    pub(crate) fn is_person(self) -> bool {
        matches!(self, Obj::Lead | Obj::Contact)
    }

    /// The object an id belongs to, by its key prefix.
    pub(crate) fn of_id(id: &str) -> Option<Obj> {
        Obj::ALL.into_iter().find(|o| id.starts_with(o.prefix()))
    }
}

/// What a field holds; decides coercion, comparison and validation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Id,
    Text,
    Email,
    Picklist,
    RestrictedPicklist,
    Bool,
    DateTime,
    /// A calendar date, stored and sent as `YYYY-MM-DD`.
    Date,
    /// A currency or double field, sent as a JSON number.
    Number,
    /// A lookup to another object; the slice holds the key prefixes it accepts.
    Reference(&'static [&'static str]),
    ExternalId,
}

impl Kind {
    /// Text-like fields compare case-insensitively; ids compare exactly.
    pub(crate) fn is_text(self) -> bool {
        matches!(
            self,
            Kind::Text | Kind::Email | Kind::Picklist | Kind::RestrictedPicklist | Kind::ExternalId
        )
    }

    pub(crate) fn is_id(self) -> bool {
        matches!(self, Kind::Id | Kind::Reference(_))
    }
}

#[derive(Clone, Debug)]
pub(crate) struct FieldDef {
    pub(crate) name: String,
    pub(crate) kind: Kind,
    pub(crate) writable: bool,
    pub(crate) required: bool,
    /// Maximum length for text fields; 0 means no limit.
    pub(crate) max_len: usize,
    /// Settable on create but not on update ("Create" without "Update" in the object
    /// reference), e.g. `CampaignMember.CampaignId`.
    pub(crate) create_only: bool,
    /// The values a restricted picklist accepts.
    pub(crate) options: &'static [&'static str],
}

impl FieldDef {
    fn new(name: &str, kind: Kind) -> FieldDef {
        FieldDef {
            name: name.to_owned(),
            kind,
            writable: true,
            required: false,
            max_len: 0,
            create_only: false,
            options: &[],
        }
    }
    fn create_only(mut self) -> FieldDef {
        self.create_only = true;
        self
    }
    fn restricted(mut self, options: &'static [&'static str]) -> FieldDef {
        self.kind = Kind::RestrictedPicklist;
        self.options = options;
        self
    }
    fn ro(mut self) -> FieldDef {
        self.writable = false;
        self
    }
    fn required(mut self) -> FieldDef {
        self.required = true;
        self
    }
    fn len(mut self, n: usize) -> FieldDef {
        self.max_len = n;
        self
    }
}

/// Field list of one object plus the positions of the fields the simulator maintains itself.
#[derive(Debug)]
pub(crate) struct Schema {
    pub(crate) obj: Obj,
    pub(crate) fields: Vec<FieldDef>,
    by_lower: HashMap<String, usize>,
    pub(crate) id: usize,
    pub(crate) is_deleted: usize,
    /// Person objects only: `Name` is computed from these.
    pub(crate) name: Option<usize>,
    pub(crate) first_name: Option<usize>,
    pub(crate) last_name: Option<usize>,
    pub(crate) owner: Option<usize>,
    pub(crate) created: usize,
    pub(crate) last_modified: usize,
    pub(crate) modstamp: usize,
    /// Lead only.
    pub(crate) status: Option<usize>,
    pub(crate) is_converted: Option<usize>,
    pub(crate) converted_contact: Option<usize>,
    /// Set on a record merged away: the surviving record (read-only). Person objects only.
    pub(crate) master_record: Option<usize>,
    /// Person objects only: maintained from their closed Tasks (see `store/activities.rs`).
    pub(crate) last_activity: Option<usize>,
    pub(crate) external_ids: Vec<usize>,
}

impl Schema {
    pub(crate) fn new(obj: Obj, external_id_fields: &[String]) -> Schema {
        if !obj.is_person() {
            return Schema::from_fields(obj, closed_loop_fields(obj));
        }
        let mut f = vec![
            FieldDef::new("Id", Kind::Id).ro(),
            FieldDef::new("IsDeleted", Kind::Bool).ro(),
            FieldDef::new("Name", Kind::Text).ro(),
            FieldDef::new("FirstName", Kind::Text).len(40),
            FieldDef::new("LastName", Kind::Text).len(80).required(),
        ];
        if obj == Obj::Lead {
            f.push(FieldDef::new("Company", Kind::Text).len(255).required());
        }
        f.extend([
            FieldDef::new("Title", Kind::Text).len(128),
            FieldDef::new("Email", Kind::Email).len(80),
            FieldDef::new("Phone", Kind::Text).len(40),
            FieldDef::new("LeadSource", Kind::Picklist).len(255),
            FieldDef::new("HasOptedOutOfEmail", Kind::Bool),
        ]);
        match obj {
            Obj::Lead => f.extend([
                FieldDef::new("Status", Kind::Text).restricted(&LEAD_STATUSES).len(255).required(),
                FieldDef::new("IsConverted", Kind::Bool).ro(),
                FieldDef::new("ConvertedContactId", Kind::Reference(&["003"])).ro(),
                FieldDef::new("OwnerId", Kind::Reference(&["005", "00G"])),
            ]),
            _ => f.extend([
                FieldDef::new("AccountId", Kind::Reference(&["001"])),
                FieldDef::new("OwnerId", Kind::Reference(&["005"])),
            ]),
        }
        let same_object: &'static [&'static str] = match obj {
            Obj::Lead => &["00Q"],
            _ => &["003"],
        };
        f.push(FieldDef::new("MasterRecordId", Kind::Reference(same_object)).ro());
        f.push(FieldDef::new("LastActivityDate", Kind::Date).ro());
        f.extend([
            FieldDef::new("CreatedDate", Kind::DateTime).ro(),
            FieldDef::new("LastModifiedDate", Kind::DateTime).ro(),
            FieldDef::new("SystemModstamp", Kind::DateTime).ro(),
        ]);
        for name in external_id_fields {
            if !f.iter().any(|d| d.name.eq_ignore_ascii_case(name)) {
                f.push(FieldDef::new(name, Kind::ExternalId).len(255));
            }
        }
        Schema::from_fields(obj, f)
    }

    fn from_fields(obj: Obj, f: Vec<FieldDef>) -> Schema {
        let by_lower: HashMap<String, usize> =
            f.iter().enumerate().map(|(i, d)| (d.name.to_ascii_lowercase(), i)).collect();
        let pos = |n: &str| by_lower.get(&n.to_ascii_lowercase()).copied();
        let must = |n: &str| pos(n).expect("built-in field is in the list above");
        Schema {
            obj,
            id: must("Id"),
            is_deleted: must("IsDeleted"),
            name: pos("Name").filter(|_| obj.is_person()),
            first_name: pos("FirstName"),
            last_name: pos("LastName"),
            owner: pos("OwnerId"),
            created: must("CreatedDate"),
            last_modified: must("LastModifiedDate"),
            modstamp: must("SystemModstamp"),
            status: pos("Status"),
            is_converted: pos("IsConverted"),
            converted_contact: pos("ConvertedContactId"),
            master_record: pos("MasterRecordId"),
            last_activity: pos("LastActivityDate").filter(|_| obj.is_person()),
            external_ids: f
                .iter()
                .enumerate()
                .filter(|(_, d)| d.kind == Kind::ExternalId)
                .map(|(i, _)| i)
                .collect(),
            fields: f,
            by_lower,
        }
    }

    /// Add a custom field (an org admin's `Country` or `MQL_Date__c`) at the end, before any
    /// record exists; a name the object has already is left as it is.
    fn add_custom(&mut self, name: &str, kind: Kind) {
        if self.field(name).is_some() {
            return;
        }
        self.by_lower.insert(name.to_ascii_lowercase(), self.fields.len());
        self.fields.push(FieldDef::new(name, kind).len(255));
    }

    /// Field names are case-insensitive, as in Salesforce.
    pub(crate) fn field(&self, name: &str) -> Option<usize> {
        self.by_lower.get(&name.to_ascii_lowercase()).copied()
    }
}

/// A stored field value.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Val {
    Null,
    Str(String),
    Bool(bool),
    /// Milliseconds since the Unix epoch.
    Dt(i64),
    /// Currency and double fields.
    Num(f64),
}

impl Val {
    pub(crate) fn to_json(&self) -> Value {
        match self {
            Val::Null => Value::Null,
            Val::Str(s) => Value::String(s.clone()),
            Val::Bool(b) => Value::Bool(*b),
            Val::Dt(ms) => Value::String(format_datetime(*ms)),
            Val::Num(n) => serde_json::Number::from_f64(*n).map_or(Value::Null, Value::Number),
        }
    }

    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Val::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// Salesforce's JSON datetime form: `2024-05-01T10:00:00.000+0000`.
pub(crate) fn format_datetime(ms: i64) -> String {
    match DateTime::<Utc>::from_timestamp_millis(ms) {
        Some(dt) => dt.format("%Y-%m-%dT%H:%M:%S%.3f+0000").to_string(),
        None => String::new(),
    }
}

/// Parse a SOQL datetime literal (`Z`, `+hhmm` or `+hh:mm`, optional fraction) to epoch ms.
pub(crate) fn parse_datetime(s: &str) -> Option<i64> {
    let normalised = match s.strip_suffix('Z').or_else(|| s.strip_suffix('z')) {
        Some(head) => format!("{head}+0000"),
        None => s.to_owned(),
    };
    ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%dT%H:%M:%S%.f%:z"]
        .iter()
        .find_map(|f| DateTime::parse_from_str(&normalised, f).ok())
        .map(|dt| dt.timestamp_millis())
}

/// The 3-character suffix that makes a 15-character id case-insensitively unique.
fn id_suffix(id15: &[u8]) -> [u8; 3] {
    let mut out = [b'A'; 3];
    for (chunk, slot) in id15.chunks(5).zip(out.iter_mut()) {
        let mut mask = 0usize;
        for (bit, c) in chunk.iter().enumerate() {
            if c.is_ascii_uppercase() {
                mask |= 1 << bit;
            }
        }
        *slot = SUFFIX_CHARS[mask];
    }
    out
}

/// Build an 18-character id from a 3-character prefix and a sequence number.
pub(crate) fn make_id(prefix: &str, seq: u64) -> String {
    let mut id15 = Vec::with_capacity(18);
    id15.extend_from_slice(prefix.as_bytes());
    id15.extend_from_slice(b"5g0");
    let mut digits = [b'0'; 9];
    let mut n = seq;
    for d in digits.iter_mut().rev() {
        *d = BASE62[(n % 62) as usize];
        n /= 62;
    }
    id15.extend_from_slice(&digits);
    let suffix = id_suffix(&id15);
    id15.extend_from_slice(&suffix);
    String::from_utf8(id15).unwrap_or_default()
}

/// Accept a 15- or 18-character id and return its 18-character form.
pub(crate) fn normalize_id(s: &str) -> Option<String> {
    if !s.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return None;
    }
    let bytes = s.as_bytes();
    match bytes.len() {
        15 => {
            let suffix = id_suffix(bytes);
            Some(format!("{s}{}", String::from_utf8_lossy(&suffix)))
        }
        18 => {
            let suffix = id_suffix(&bytes[..15]);
            bytes[15..]
                .eq_ignore_ascii_case(&suffix)
                .then(|| format!("{}{}", &s[..15], String::from_utf8_lossy(&suffix)))
        }
        _ => None,
    }
}

/// The org id, and the "run as" user that owns what the API creates.
pub(crate) fn org_id() -> String {
    make_id("00D", 1)
}
pub(crate) fn default_owner_id() -> String {
    make_id("005", 1)
}

/// The org's active users (the first is the API user, [`default_owner_id`]); an `OwnerId`
/// must name one of them or [`owner_queue_id`].
pub fn owner_user_ids() -> Vec<String> {
    (1..=3).map(|n| make_id("005", n)).collect()
}

/// The org's one lead queue: a Lead may be owned by it, a Contact may not (`MALFORMED_ID`).
pub fn owner_queue_id() -> String {
    make_id("00G", 1)
}

/// Whether an `OwnerId` (normalised to 18 characters) names a user or queue of the org.
fn is_org_owner(id: &str) -> bool {
    id == owner_queue_id() || owner_user_ids().iter().any(|u| u == id)
}

/// A per-record failure, as Salesforce reports it inside a 200.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct RecError {
    pub(crate) code: String,
    pub(crate) message: String,
    pub(crate) fields: Vec<String>,
}

impl RecError {
    pub(crate) fn new(code: &str, message: impl Into<String>, fields: &[&str]) -> RecError {
        RecError {
            code: code.to_owned(),
            message: message.into(),
            fields: fields.iter().map(|f| (*f).to_owned()).collect(),
        }
    }

    pub(crate) fn to_json(&self) -> Value {
        serde_json::json!({"statusCode": self.code, "message": self.message, "fields": self.fields})
    }
}

/// One record of a write request after JSON coercion, before validation.
#[derive(Debug, Default)]
pub(crate) struct Incoming {
    /// (name as sent, field position if known, coerced value)
    pub(crate) fields: Vec<(String, Option<usize>, Val)>,
}

impl Incoming {
    /// Look up a sent value by field position.
    pub(crate) fn get(&self, idx: usize) -> Option<&Val> {
        self.fields.iter().find(|(_, i, _)| *i == Some(idx)).map(|(_, _, v)| v)
    }
}

/// Coerce a JSON record body to field values the way Salesforce's deserialiser does.
///
/// Strings, numbers and booleans are accepted for text fields (Jackson coerces scalars);
/// booleans accept `true`/`false` and the strings `"true"`/`"false"`; `null` into a checkbox is
/// `false`; an empty string is stored as null. Anything else fails the whole request.
///
/// # Errors
/// Returns the `JSON_PARSER_ERROR` message when a value cannot be deserialised.
pub(crate) fn decode(schema: &Schema, map: &Map<String, Value>) -> Result<Incoming, String> {
    let mut out = Incoming::default();
    for (key, value) in map {
        if key == "attributes" {
            continue;
        }
        let idx = schema.field(key);
        let kind = idx.map(|i| schema.fields[i].kind);
        let val = match (kind, value) {
            (None, _) => Val::Null,
            (Some(Kind::Bool), Value::Bool(b)) => Val::Bool(*b),
            (Some(Kind::Bool), Value::Null) => Val::Bool(false),
            (Some(Kind::Bool), Value::String(s)) if s.eq_ignore_ascii_case("true") => {
                Val::Bool(true)
            }
            (Some(Kind::Bool), Value::String(s)) if s.eq_ignore_ascii_case("false") => {
                Val::Bool(false)
            }
            (Some(Kind::Bool), other) => {
                return Err(format!(
                    "Cannot deserialize instance of boolean from {} value {} or request may be \
                     missing a required field",
                    json_token(other),
                    short(other)
                ));
            }
            (Some(_), Value::Null) => Val::Null,
            (Some(Kind::Number), Value::Number(n)) => match n.as_f64() {
                Some(x) => Val::Num(x),
                None => return Err(format!("Cannot deserialize instance of double from {n}")),
            },
            (Some(Kind::Number), Value::String(s)) if s.is_empty() => Val::Null,
            (Some(Kind::Number), Value::String(s)) => match s.trim().parse::<f64>() {
                // Jackson coerces a numeric string into a double field.
                Ok(x) if x.is_finite() => Val::Num(x),
                _ => {
                    return Err(format!(
                        "Cannot deserialize value of type `double` from String \"{}\": not a \
                         valid Double value",
                        short(value)
                    ));
                }
            },
            (Some(Kind::Number), other) => {
                return Err(format!(
                    "Cannot deserialize instance of double from {} value {} or request may be \
                     missing a required field",
                    json_token(other),
                    short(other)
                ));
            }
            (Some(_), Value::String(s)) if s.is_empty() => Val::Null,
            (Some(_), Value::String(s)) => Val::Str(s.clone()),
            (Some(_), Value::Number(n)) => Val::Str(n.to_string()),
            (Some(_), Value::Bool(b)) => Val::Str(b.to_string()),
            (Some(_), other) => {
                return Err(format!(
                    "Cannot deserialize instance of string from {} value {} or request may be \
                     missing a required field",
                    json_token(other),
                    short(other)
                ));
            }
        };
        out.fields.push((key.clone(), idx, val));
    }
    Ok(out)
}

fn json_token(v: &Value) -> &'static str {
    match v {
        Value::Null => "VALUE_NULL",
        Value::Bool(true) => "VALUE_TRUE",
        Value::Bool(false) => "VALUE_FALSE",
        Value::Number(_) => "VALUE_NUMBER_INT",
        Value::String(_) => "VALUE_STRING",
        Value::Array(_) => "START_ARRAY",
        Value::Object(_) => "START_OBJECT",
    }
}

fn short(v: &Value) -> String {
    match v {
        Value::String(s) => s.chars().take(40).collect(),
        Value::Array(_) => "[".into(),
        Value::Object(_) => "{".into(),
        other => other.to_string(),
    }
}

/// A stored record.
#[derive(Clone, Debug)]
pub(crate) struct Record {
    pub(crate) vals: Vec<Val>,
    /// When it went to the recycle bin.
    pub(crate) deleted_at: Option<i64>,
}

impl Record {
    pub(crate) fn id(&self, schema: &Schema) -> &str {
        self.vals[schema.id].as_str().unwrap_or_default()
    }
    pub(crate) fn is_deleted(&self) -> bool {
        self.deleted_at.is_some()
    }
}

/// All records of one object.
#[derive(Debug)]
pub(crate) struct Table {
    pub(crate) schema: Schema,
    pub(crate) rows: Vec<Record>,
    by_id: HashMap<String, usize>,
    /// Per External ID field position: lower-cased value → row, live records only.
    ext: HashMap<usize, HashMap<String, usize>>,
    /// Every row (deleted ones too) as (SystemModstamp, row), so a query ordered by
    /// SystemModstamp reads its first rows in order instead of sorting the table.
    by_stamp: BTreeSet<(i64, usize)>,
    seq: u64,
}

impl Table {
    fn new(schema: Schema) -> Table {
        let ext = schema.external_ids.iter().map(|i| (*i, HashMap::new())).collect();
        // Start well above zero so ids look like a used org's ids.
        Table {
            schema,
            rows: Vec::new(),
            by_id: HashMap::new(),
            ext,
            by_stamp: BTreeSet::new(),
            seq: 40_000,
        }
    }

    /// A row's key in `by_stamp`: its SystemModstamp, or (never expected) the lowest instant
    /// when unset, which is where ascending NULLS FIRST puts it.
    fn stamp_key(&self, row: usize) -> (i64, usize) {
        match self.rows[row].vals[self.schema.modstamp] {
            Val::Dt(ms) => (ms, row),
            _ => (i64::MIN, row),
        }
    }

    /// Rows in (SystemModstamp, row) order; see [`Table::stamp_key`].
    pub(crate) fn by_stamp(&self) -> &BTreeSet<(i64, usize)> {
        &self.by_stamp
    }

    pub(crate) fn row_of(&self, id: &str) -> Option<usize> {
        let id = normalize_id(id)?;
        self.by_id.get(&id).copied()
    }

    /// The live record holding `value` in External ID field `field`.
    pub(crate) fn by_external_id(&self, field: usize, value: &str) -> Option<usize> {
        self.ext.get(&field)?.get(&value.to_lowercase()).copied()
    }

    fn index(&mut self, row: usize) {
        let rec = &self.rows[row];
        if rec.is_deleted() {
            return;
        }
        for (field, map) in &mut self.ext {
            if let Some(v) = rec.vals[*field].as_str() {
                map.insert(v.to_lowercase(), row);
            }
        }
    }

    fn unindex(&mut self, row: usize) {
        let rec = &self.rows[row];
        for (field, map) in &mut self.ext {
            if let Some(v) = rec.vals[*field].as_str() {
                let key = v.to_lowercase();
                if map.get(&key) == Some(&row) {
                    map.remove(&key);
                }
            }
        }
    }

    fn push(&mut self, rec: Record) -> usize {
        let row = self.rows.len();
        self.by_id.insert(rec.id(&self.schema).to_owned(), row);
        self.rows.push(rec);
        self.by_stamp.insert(self.stamp_key(row));
        self.index(row);
        row
    }

    fn pop(&mut self) {
        if let Some(last) = self.rows.len().checked_sub(1) {
            self.unindex(last);
            self.by_stamp.remove(&self.stamp_key(last));
            if let Some(rec) = self.rows.pop() {
                self.by_id.remove(rec.id(&self.schema));
            }
        }
    }

    fn replace(&mut self, row: usize, rec: Record) -> Record {
        self.unindex(row);
        self.by_stamp.remove(&self.stamp_key(row));
        let old = std::mem::replace(&mut self.rows[row], rec);
        self.by_stamp.insert(self.stamp_key(row));
        self.index(row);
        old
    }

    /// All fields of one record as Salesforce would send them.
    pub(crate) fn wire(&self, row: usize) -> Map<String, Value> {
        self.schema
            .fields
            .iter()
            .zip(&self.rows[row].vals)
            .map(|(f, v)| (f.name.clone(), v.to_json()))
            .collect()
    }
}

/// How to reverse one applied write when an all-or-none request fails.
#[derive(Debug)]
pub(crate) enum Undo {
    Created(Obj),
    Replaced(Obj, usize, Record),
}

/// The whole org.
#[derive(Debug)]
pub(crate) struct Store {
    lead: Table,
    contact: Table,
    campaign: Table,
    campaign_member: Table,
    opportunity: Table,
    contact_role: Table,
    task: Table,
    /// `(CampaignId, LeadId or ContactId)` of every campaign member: one membership per
    /// person and campaign.
    member_keys: HashSet<(String, String)>,
    last_stamp: i64,
    pub(crate) clock_offset_ms: i64,
    second_precision: bool,
    /// Ids of Leads created or edited since the lock was taken, one entry per write, for
    /// outbound messages (drained when the lock is released; rolled-back writes removed).
    pub(crate) lead_writes: Vec<String>,
    /// Accounts made by lead conversion: (Id, Name). The simulator has no Account object
    /// otherwise; this is enough to check what a conversion did.
    pub(crate) accounts: Vec<(String, String)>,
}

impl Store {
    pub(crate) fn new(external_id_fields: &[String], second_precision: bool) -> Store {
        Store {
            lead: Table::new(Schema::new(Obj::Lead, external_id_fields)),
            contact: Table::new(Schema::new(Obj::Contact, external_id_fields)),
            campaign: Table::new(Schema::new(Obj::Campaign, &[])),
            campaign_member: Table::new(Schema::new(Obj::CampaignMember, &[])),
            opportunity: Table::new(Schema::new(Obj::Opportunity, &[])),
            contact_role: Table::new(Schema::new(Obj::OpportunityContactRole, &[])),
            task: Table::new(Schema::new(Obj::Task, &[])),
            member_keys: HashSet::new(),
            last_stamp: 0,
            clock_offset_ms: 0,
            second_precision,
            lead_writes: Vec::new(),
            accounts: Vec::new(),
        }
    }

    /// Give Lead and Contact the org's custom fields (called before any record exists).
    pub(crate) fn add_custom_fields(&mut self, fields: &[(String, Kind)]) {
        for (name, kind) in fields {
            self.lead.schema.add_custom(name, *kind);
            self.contact.schema.add_custom(name, *kind);
        }
    }

    pub(crate) fn table(&self, obj: Obj) -> &Table {
        match obj {
            Obj::Lead => &self.lead,
            Obj::Contact => &self.contact,
            Obj::Campaign => &self.campaign,
            Obj::CampaignMember => &self.campaign_member,
            Obj::Opportunity => &self.opportunity,
            Obj::OpportunityContactRole => &self.contact_role,
            Obj::Task => &self.task,
        }
    }

    fn table_mut(&mut self, obj: Obj) -> &mut Table {
        match obj {
            Obj::Lead => &mut self.lead,
            Obj::Contact => &mut self.contact,
            Obj::Campaign => &mut self.campaign,
            Obj::CampaignMember => &mut self.campaign_member,
            Obj::Opportunity => &mut self.opportunity,
            Obj::OpportunityContactRole => &mut self.contact_role,
            Obj::Task => &mut self.task,
        }
    }

    /// The simulated wall clock, in epoch ms.
    pub(crate) fn now_ms(&self) -> i64 {
        Utc::now().timestamp_millis() + self.clock_offset_ms
    }

    /// Today's date on the simulated clock (UTC; the org's time zone is not modelled).
    fn today(&self) -> String {
        DateTime::<Utc>::from_timestamp_millis(self.now_ms())
            .map(|d| d.format("%Y-%m-%d").to_string())
            .unwrap_or_default()
    }

    /// Lookups sent in a write must name a live record when the simulator holds that object
    /// (Leads, Contacts, Campaigns, Opportunities); owners and accounts are not modelled.
    fn check_refs(&self, schema: &Schema, inc: &Incoming) -> Result<(), RecError> {
        for (_, idx, val) in &inc.fields {
            let (Some(i), Val::Str(id)) = (idx, val) else { continue };
            if !matches!(schema.fields[*i].kind, Kind::Reference(_)) {
                continue;
            }
            let Some(target) = Obj::of_id(id) else { continue };
            let table = self.table(target);
            let live = table.row_of(id).is_some_and(|r| !table.rows[r].is_deleted());
            if !live {
                let name = schema.fields[*i].name.as_str();
                return Err(RecError::new(
                    "INVALID_CROSS_REFERENCE_KEY",
                    format!("invalid cross reference id: {name}"),
                    &[name],
                ));
            }
        }
        Ok(())
    }

    /// A new CampaignMember names a Lead or a Contact, and only one membership per person and
    /// campaign exists. Returns the membership key to record once the row is stored.
    fn check_member(&self, obj: Obj, vals: &[Val]) -> Result<Option<(String, String)>, RecError> {
        if obj != Obj::CampaignMember {
            return Ok(None);
        }
        let Some(key) = member_key(&self.campaign_member.schema, vals) else {
            return Err(RecError::new(
                "REQUIRED_FIELD_MISSING",
                "Required fields are missing: [LeadId, ContactId]",
                &["LeadId", "ContactId"],
            ));
        };
        if self.member_keys.contains(&key) {
            return Err(RecError::new("DUPLICATE_VALUE", "Already a campaign member.", &[]));
        }
        Ok(Some(key))
    }

    /// A converted lead's campaign memberships gain the new Contact (Salesforce fills
    /// `CampaignMember.ContactId` on conversion, keeping `LeadId`), which moves their dates.
    fn reparent_members(&mut self, lead_id: &str, contact_id: &str) {
        let schema = &self.campaign_member.schema;
        let (Some(lead_f), Some(contact_f)) = (schema.field("LeadId"), schema.field("ContactId"))
        else {
            return;
        };
        let rows: Vec<usize> = (0..self.campaign_member.rows.len())
            .filter(|r| {
                let rec = &self.campaign_member.rows[*r];
                !rec.is_deleted() && rec.vals[lead_f].as_str() == Some(lead_id)
            })
            .collect();
        for row in rows {
            let stamp = self.next_stamp();
            let table = &mut self.campaign_member;
            let mut rec = table.rows[row].clone();
            rec.vals[contact_f] = Val::Str(contact_id.to_owned());
            rec.vals[table.schema.last_modified] = Val::Dt(stamp);
            rec.vals[table.schema.modstamp] = Val::Dt(stamp);
            table.replace(row, rec);
        }
    }

    /// A modstamp later than every earlier one (or, with second precision, never earlier), so
    /// that `ORDER BY SystemModstamp, Id` is a total order matching write order.
    fn next_stamp(&mut self) -> i64 {
        let now = self.now_ms();
        let stamp = if self.second_precision {
            (now - now.rem_euclid(1000)).max(self.last_stamp)
        } else {
            now.max(self.last_stamp + 1)
        };
        self.last_stamp = stamp;
        stamp
    }

    /// Create one record. Validates like the API: read-only and unknown fields, picklists,
    /// lengths, emails, lookups, required fields and External ID uniqueness.
    pub(crate) fn create(&mut self, obj: Obj, inc: &Incoming) -> Result<(String, Undo), RecError> {
        let table = self.table(obj);
        let schema = &table.schema;
        if inc.get(schema.id).is_some() {
            return Err(RecError::new(
                "INVALID_FIELD",
                "cannot specify Id in an insert call",
                &["Id"],
            ));
        }
        let mut vals = vec![Val::Null; schema.fields.len()];
        for (i, f) in schema.fields.iter().enumerate() {
            if f.kind == Kind::Bool {
                vals[i] = Val::Bool(false);
            }
        }
        if let Some(s) = schema.status {
            vals[s] = Val::Str(LEAD_STATUSES[0].to_owned());
        }
        if let Some(owner) = schema.owner {
            vals[owner] = Val::Str(default_owner_id());
        }
        if obj == Obj::CampaignMember
            && let Some(status) = schema.field("Status")
        {
            vals[status] = Val::Str(CAMPAIGN_MEMBER_STATUSES[0].to_owned());
        }
        if obj == Obj::Task {
            activities::task_defaults(schema, &mut vals);
        }
        apply_fields(schema, &mut vals, inc, false)?;
        check_required(schema, &vals)?;
        check_unique(table, &vals, None)?;
        self.check_refs(schema, inc)?;
        self.check_who(obj, inc)?;
        let member_key = self.check_member(obj, &vals)?;
        if !obj.is_person() {
            let today = self.today();
            derive(&self.table(obj).schema, &mut vals, &today);
        }
        let stamp = self.next_stamp();
        let table = self.table_mut(obj);
        table.seq += 1;
        let id = make_id(obj.prefix(), table.seq);
        let schema = &table.schema;
        vals[schema.id] = Val::Str(id.clone());
        vals[schema.created] = Val::Dt(stamp);
        vals[schema.last_modified] = Val::Dt(stamp);
        vals[schema.modstamp] = Val::Dt(stamp);
        set_name(schema, &mut vals);
        table.push(Record { vals, deleted_at: None });
        if obj == Obj::Lead {
            self.lead_writes.push(id.clone());
        }
        if let Some(key) = member_key {
            self.member_keys.insert(key);
        }
        if obj == Obj::Task {
            let row = self.task.rows.len() - 1;
            self.task_written(None, row);
        }
        Ok((id, Undo::Created(obj)))
    }

    /// Update one record by row. Every successful update moves `LastModifiedDate` and
    /// `SystemModstamp`, even when no value changed (Salesforce does the same).
    pub(crate) fn update(
        &mut self,
        obj: Obj,
        row: usize,
        inc: &Incoming,
    ) -> Result<Undo, RecError> {
        let table = self.table(obj);
        let schema = &table.schema;
        let rec = &table.rows[row];
        if rec.is_deleted() {
            return Err(RecError::new("ENTITY_IS_DELETED", "entity is deleted", &[]));
        }
        if let Some(c) = schema.is_converted
            && rec.vals[c] == Val::Bool(true)
        {
            return Err(RecError::new(
                "CANNOT_UPDATE_CONVERTED_LEAD",
                "cannot reference converted lead",
                &[],
            ));
        }
        let mut vals = rec.vals.clone();
        apply_fields(schema, &mut vals, inc, true)?;
        check_required(schema, &vals)?;
        check_unique(table, &vals, Some(row))?;
        self.check_refs(schema, inc)?;
        self.check_who(obj, inc)?;
        if !obj.is_person() {
            let today = self.today();
            derive(&self.table(obj).schema, &mut vals, &today);
        }
        let stamp = self.next_stamp();
        let table = self.table_mut(obj);
        let schema = &table.schema;
        vals[schema.last_modified] = Val::Dt(stamp);
        vals[schema.modstamp] = Val::Dt(stamp);
        set_name(schema, &mut vals);
        let old = table.replace(row, Record { vals, deleted_at: None });
        if obj == Obj::Lead {
            let id = table.rows[row].id(&table.schema).to_owned();
            self.lead_writes.push(id);
        }
        if obj == Obj::Task {
            self.task_written(Some(&old), row);
        }
        Ok(Undo::Replaced(obj, row, old))
    }

    /// Move a record to the recycle bin.
    pub(crate) fn delete(&mut self, obj: Obj, row: usize) -> Result<Undo, RecError> {
        if self.table(obj).rows[row].is_deleted() {
            return Err(RecError::new("ENTITY_IS_DELETED", "entity is deleted", &[]));
        }
        if obj == Obj::CampaignMember
            && let Some(key) =
                member_key(&self.campaign_member.schema, &self.campaign_member.rows[row].vals)
        {
            self.member_keys.remove(&key);
        }
        let stamp = self.next_stamp();
        let table = self.table_mut(obj);
        let mut rec = table.rows[row].clone();
        rec.vals[table.schema.is_deleted] = Val::Bool(true);
        rec.vals[table.schema.modstamp] = Val::Dt(stamp);
        rec.deleted_at = Some(stamp);
        let old = table.replace(row, rec);
        if obj == Obj::Task {
            self.task_written(Some(&old), row);
        }
        Ok(Undo::Replaced(obj, row, old))
    }

    /// Bump only `SystemModstamp`, as a system process (recalculation, automation) does.
    pub(crate) fn touch_system(&mut self, obj: Obj, row: usize) {
        let stamp = self.next_stamp();
        let table = self.table_mut(obj);
        let modstamp = table.schema.modstamp;
        table.by_stamp.remove(&table.stamp_key(row));
        table.rows[row].vals[modstamp] = Val::Dt(stamp);
        table.by_stamp.insert(table.stamp_key(row));
    }

    /// Convert a lead: create a Contact from it and mark the lead converted.
    pub(crate) fn convert_lead(&mut self, row: usize) -> Result<String, RecError> {
        let lead = &self.lead;
        let rec = &lead.rows[row];
        if rec.is_deleted() {
            return Err(RecError::new("ENTITY_IS_DELETED", "entity is deleted", &[]));
        }
        if lead.schema.is_converted.map(|c| &rec.vals[c]) == Some(&Val::Bool(true)) {
            return Err(RecError::new(
                "CANNOT_UPDATE_CONVERTED_LEAD",
                "cannot reference converted lead",
                &[],
            ));
        }
        let company = lead.schema.field("Company").and_then(|i| rec.vals[i].as_str());
        let account_id = make_id("001", 40_001 + self.accounts.len() as u64);
        let account_name = company.unwrap_or_default().to_owned();
        let mut contact = Incoming::default();
        contact.fields.push((
            "AccountId".to_owned(),
            self.contact.schema.field("AccountId"),
            Val::Str(account_id.clone()),
        ));
        for name in
            ["FirstName", "LastName", "Title", "Email", "Phone", "LeadSource", "HasOptedOutOfEmail"]
        {
            if let (Some(li), Some(ci)) = (lead.schema.field(name), self.contact.schema.field(name))
            {
                contact.fields.push((name.to_owned(), Some(ci), rec.vals[li].clone()));
            }
        }
        let (contact_id, _) = self.create(Obj::Contact, &contact)?;
        self.accounts.push((account_id, account_name));
        let lead_id = self.lead.rows[row].id(&self.lead.schema).to_owned();
        self.reparent_members(&lead_id, &contact_id);
        self.reparent_tasks(&lead_id, &contact_id);
        let stamp = self.next_stamp();
        let lead = &mut self.lead;
        let mut vals = lead.rows[row].vals.clone();
        let s = &lead.schema;
        if let (Some(c), Some(cc), Some(st)) = (s.is_converted, s.converted_contact, s.status) {
            vals[c] = Val::Bool(true);
            vals[cc] = Val::Str(contact_id.clone());
            vals[st] = Val::Str(CONVERTED_STATUS.to_owned());
        }
        vals[s.last_modified] = Val::Dt(stamp);
        vals[s.modstamp] = Val::Dt(stamp);
        let id = vals[s.id].as_str().unwrap_or_default().to_owned();
        lead.replace(row, Record { vals, deleted_at: None });
        self.lead_writes.push(id);
        Ok(contact_id)
    }

    /// Merge up to two `losers` into `master`, as the UI's merge (or SOAP `merge()`) does:
    /// the master's blank fields are filled from the losers (first loser first), the master is
    /// saved (dates move, an outbound message fires for a Lead), and each loser goes to the
    /// recycle bin with `MasterRecordId` = master.
    ///
    /// Salesforce lets the person merging pick a value per field; the simulator models the
    /// default picks of "keep the master, fill its gaps": read-only, system and External ID
    /// fields are never copied (an External ID is unique, and the loser's key names another
    /// record), `OwnerId` stays the master's, and an email opt-out on any record survives
    /// (consent only tightens).
    pub(crate) fn merge(
        &mut self,
        obj: Obj,
        master: usize,
        losers: &[usize],
    ) -> Result<(), RecError> {
        let table = self.table(obj);
        let schema = &table.schema;
        if losers.is_empty() || losers.len() > 2 {
            return Err(RecError::new(
                "INVALID_OPERATION",
                "a merge takes one master and one or two records to merge",
                &[],
            ));
        }
        let mut all = vec![master];
        for l in losers {
            if all.contains(l) {
                return Err(RecError::new(
                    "INVALID_ID_FIELD",
                    "a record cannot be merged with itself",
                    &[],
                ));
            }
            all.push(*l);
        }
        for &row in &all {
            let rec = &table.rows[row];
            if rec.is_deleted() {
                return Err(RecError::new("ENTITY_IS_DELETED", "entity is deleted", &[]));
            }
            if schema.is_converted.is_some_and(|c| rec.vals[c] == Val::Bool(true)) {
                return Err(RecError::new(
                    "CANNOT_UPDATE_CONVERTED_LEAD",
                    "cannot reference converted lead",
                    &[],
                ));
            }
        }
        let mut vals = table.rows[master].vals.clone();
        for &l in losers {
            let other = &table.rows[l].vals;
            for (i, def) in schema.fields.iter().enumerate() {
                let fill = def.writable
                    && def.kind != Kind::ExternalId
                    && Some(i) != schema.owner
                    && match (&vals[i], &other[i]) {
                        (Val::Null, v) => *v != Val::Null,
                        (Val::Bool(false), Val::Bool(true)) => def.name == "HasOptedOutOfEmail",
                        _ => false,
                    };
                if fill {
                    vals[i] = other[i].clone();
                }
            }
        }
        let master_id = table.rows[master].id(schema).to_owned();
        for &l in losers {
            self.delete(obj, l)?;
            let table = self.table_mut(obj);
            if let Some(m) = table.schema.master_record {
                table.rows[l].vals[m] = Val::Str(master_id.clone());
            }
        }
        let stamp = self.next_stamp();
        let table = self.table_mut(obj);
        let schema = &table.schema;
        vals[schema.last_modified] = Val::Dt(stamp);
        vals[schema.modstamp] = Val::Dt(stamp);
        set_name(schema, &mut vals);
        table.replace(master, Record { vals, deleted_at: None });
        if obj == Obj::Lead {
            self.lead_writes.push(master_id);
        }
        Ok(())
    }

    /// Reverse applied writes, newest first.
    /// Undone Lead writes are taken out of `lead_writes`: a rolled-back write fires no
    /// outbound message. (Every write of a rolled-back request is undone, so every entry for
    /// an affected id recorded under this lock belongs to it.)
    pub(crate) fn rollback(&mut self, undo: Vec<Undo>) {
        let mut undone: Vec<String> = Vec::new();
        // People whose LastActivityDate an undone Task write may have moved: recomputed last.
        let whos = self.whos_of_undo(&undo);
        for u in undo.into_iter().rev() {
            match u {
                Undo::Created(obj) => {
                    if obj == Obj::CampaignMember
                        && let Some(last) = self.campaign_member.rows.last()
                        && let Some(key) = member_key(&self.campaign_member.schema, &last.vals)
                    {
                        self.member_keys.remove(&key);
                    }
                    let table = self.table_mut(obj);
                    if obj == Obj::Lead
                        && let Some(last) = table.rows.last()
                    {
                        undone.push(last.id(&table.schema).to_owned());
                    }
                    table.pop();
                }
                Undo::Replaced(obj, row, old) => {
                    let table = self.table_mut(obj);
                    if obj == Obj::Lead {
                        undone.push(table.rows[row].id(&table.schema).to_owned());
                    }
                    table.replace(row, old);
                }
            }
        }
        self.lead_writes.retain(|id| !undone.contains(id));
        for who in whos {
            self.refresh_last_activity(&who);
        }
    }
}

/// `Opportunity.StageName` values of a new org, in sales-process order (all active).
pub(crate) const OPPORTUNITY_STAGES: [&str; 10] = [
    "Prospecting",
    "Qualification",
    "Needs Analysis",
    "Value Proposition",
    "Id. Decision Makers",
    "Perception Analysis",
    "Proposal/Price Quote",
    "Negotiation/Review",
    "Closed Won",
    "Closed Lost",
];

/// The stage that closes an opportunity as won, and the one that closes it as lost. Stage
/// metadata (`OpportunityStage.IsClosed`/`IsWon`) is what derives the flags in Salesforce; the
/// default picklist has exactly these two closed stages.
pub(crate) const STAGE_WON: &str = "Closed Won";
pub(crate) const STAGE_LOST: &str = "Closed Lost";

/// Default member statuses of a new campaign (`CampaignMemberStatus`), default first; only
/// `Responded` counts as a response.
pub(crate) const CAMPAIGN_MEMBER_STATUSES: [&str; 2] = ["Sent", "Responded"];
const RESPONDED_STATUS: &str = "Responded";

/// Default `OpportunityContactRole.Role` picklist.
pub(crate) const CONTACT_ROLES: [&str; 9] = [
    "Business User",
    "Decision Maker",
    "Economic Buyer",
    "Economic Decision Maker",
    "Evaluator",
    "Executive Sponsor",
    "Influencer",
    "Technical Buyer",
    "Other",
];

/// Fields of the closed-loop objects, from the Salesforce Object Reference (only the ones a
/// sync reads, plus the system fields).
fn closed_loop_fields(obj: Obj) -> Vec<FieldDef> {
    let mut f =
        vec![FieldDef::new("Id", Kind::Id).ro(), FieldDef::new("IsDeleted", Kind::Bool).ro()];
    match obj {
        Obj::Campaign => f.extend([
            FieldDef::new("Name", Kind::Text).len(80).required(),
            FieldDef::new("Type", Kind::Picklist).len(255),
            FieldDef::new("Status", Kind::Picklist).len(255),
            FieldDef::new("IsActive", Kind::Bool),
            FieldDef::new("StartDate", Kind::Date),
            FieldDef::new("EndDate", Kind::Date),
            FieldDef::new("OwnerId", Kind::Reference(&["005"])),
        ]),
        Obj::CampaignMember => f.extend([
            FieldDef::new("CampaignId", Kind::Reference(&["701"])).required().create_only(),
            FieldDef::new("LeadId", Kind::Reference(&["00Q"])).create_only(),
            FieldDef::new("ContactId", Kind::Reference(&["003"])).create_only(),
            FieldDef::new("Status", Kind::Picklist).len(40),
            FieldDef::new("HasResponded", Kind::Bool).ro(),
            FieldDef::new("FirstRespondedDate", Kind::Date).ro(),
        ]),
        Obj::Opportunity => f.extend([
            FieldDef::new("Name", Kind::Text).len(120).required(),
            FieldDef::new("Amount", Kind::Number),
            FieldDef::new("StageName", Kind::Text).restricted(&OPPORTUNITY_STAGES).required(),
            FieldDef::new("CloseDate", Kind::Date).required(),
            FieldDef::new("IsClosed", Kind::Bool).ro(),
            FieldDef::new("IsWon", Kind::Bool).ro(),
            FieldDef::new("AccountId", Kind::Reference(&["001"])),
            FieldDef::new("CampaignId", Kind::Reference(&["701"])),
            FieldDef::new("LeadSource", Kind::Picklist).len(255),
            FieldDef::new("OwnerId", Kind::Reference(&["005"])),
        ]),
        Obj::OpportunityContactRole => f.extend([
            FieldDef::new("OpportunityId", Kind::Reference(&["006"])).required().create_only(),
            FieldDef::new("ContactId", Kind::Reference(&["003"])).required(),
            FieldDef::new("IsPrimary", Kind::Bool),
            FieldDef::new("Role", Kind::Picklist).len(40),
        ]),
        Obj::Task => f.extend(activities::task_fields()),
        Obj::Lead | Obj::Contact => {}
    }
    f.extend([
        FieldDef::new("CreatedDate", Kind::DateTime).ro(),
        FieldDef::new("LastModifiedDate", Kind::DateTime).ro(),
        FieldDef::new("SystemModstamp", Kind::DateTime).ro(),
    ]);
    f
}

/// Fields Salesforce computes from others on every save: an opportunity's `IsClosed`/`IsWon`
/// from its stage, a campaign member's `HasResponded` from its status and
/// `FirstRespondedDate` the first time it responds (the date stays when the status moves
/// back).
fn derive(schema: &Schema, vals: &mut [Val], today: &str) {
    let pos = |n: &str| schema.field(n);
    match schema.obj {
        Obj::Opportunity => {
            let stage = pos("StageName").and_then(|i| vals[i].as_str().map(str::to_owned));
            let (closed, won) = match stage.as_deref() {
                Some(STAGE_WON) => (true, true),
                Some(STAGE_LOST) => (true, false),
                _ => (false, false),
            };
            if let (Some(c), Some(w)) = (pos("IsClosed"), pos("IsWon")) {
                vals[c] = Val::Bool(closed);
                vals[w] = Val::Bool(won);
            }
        }
        Obj::CampaignMember => {
            let (Some(st), Some(hr), Some(frd)) =
                (pos("Status"), pos("HasResponded"), pos("FirstRespondedDate"))
            else {
                return;
            };
            let responded = vals[st].as_str() == Some(RESPONDED_STATUS);
            vals[hr] = Val::Bool(responded);
            if responded && vals[frd] == Val::Null {
                vals[frd] = Val::Str(today.to_owned());
            }
        }
        Obj::Task => activities::derive_task(schema, vals),
        _ => {}
    }
}

/// A campaign member's `(CampaignId, LeadId or ContactId)`; `None` without a person.
fn member_key(schema: &Schema, vals: &[Val]) -> Option<(String, String)> {
    let campaign = vals[schema.field("CampaignId")?].as_str()?.to_owned();
    let person = ["LeadId", "ContactId"]
        .iter()
        .find_map(|n| schema.field(n).and_then(|i| vals[i].as_str()))?;
    Some((campaign, person.to_owned()))
}

fn set_name(schema: &Schema, vals: &mut [Val]) {
    let Some(name) = schema.name else { return };
    let parts: Vec<&str> = [schema.first_name, schema.last_name]
        .iter()
        .flatten()
        .filter_map(|i| vals[*i].as_str())
        .collect();
    vals[name] = if parts.is_empty() { Val::Null } else { Val::Str(parts.join(" ")) };
}

fn apply_fields(
    schema: &Schema,
    vals: &mut [Val],
    inc: &Incoming,
    updating: bool,
) -> Result<(), RecError> {
    let obj = schema.obj.name();
    for (sent, idx, val) in &inc.fields {
        let Some(i) = *idx else {
            return Err(RecError::new(
                "INVALID_FIELD",
                format!("No such column '{sent}' on sobject of type {obj}"),
                &[],
            ));
        };
        let def = &schema.fields[i];
        let name = def.name.as_str();
        if !def.writable || (updating && def.create_only) {
            return Err(RecError::new(
                "INVALID_FIELD_FOR_INSERT_UPDATE",
                format!(
                    "Unable to create/update fields: {name}. Please check the security settings \
                     of this field and verify that it is read/write for your profile or \
                     permission set."
                ),
                &[name],
            ));
        }
        let mut val = val.clone();
        if def.kind == Kind::Email
            && let Val::Str(s) = &val
        {
            // Decision (api-facts §8): surrounding whitespace on Email is trimmed, not rejected.
            let t = s.trim();
            val = if t.is_empty() { Val::Null } else { Val::Str(t.to_owned()) };
        }
        if let Val::Str(s) = &val {
            if def.max_len > 0 && s.chars().count() > def.max_len {
                return Err(RecError::new(
                    "STRING_TOO_LONG",
                    format!("{name}: data value too large (max length={})", def.max_len),
                    &[name],
                ));
            }
            match def.kind {
                Kind::RestrictedPicklist if !def.options.contains(&s.as_str()) => {
                    return Err(RecError::new(
                        "INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST",
                        format!("{name}: bad value for restricted picklist field: {s}"),
                        &[name],
                    ));
                }
                Kind::Date if chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").is_err() => {
                    return Err(RecError::new(
                        "INVALID_TYPE_ON_FIELD_IN_RECORD",
                        format!("{name}: value not of required type: {s}"),
                        &[name],
                    ));
                }
                Kind::Email if !valid_email(s) => {
                    return Err(RecError::new(
                        "INVALID_EMAIL_ADDRESS",
                        format!("{name}: invalid email address: {s}"),
                        &[name],
                    ));
                }
                Kind::Reference(prefixes) => match normalize_id(s) {
                    // Well formed, but no user or queue of this org: Salesforce says so with
                    // FIELD_INTEGRITY_EXCEPTION naming the field.
                    Some(id)
                        if Some(i) == schema.owner
                            && prefixes.iter().any(|p| id.starts_with(p))
                            && !is_org_owner(&id) =>
                    {
                        return Err(RecError::new(
                            "FIELD_INTEGRITY_EXCEPTION",
                            format!(
                                "field integrity exception: unknown ({name}: no active user or \
                                 queue has id {s})"
                            ),
                            &[name],
                        ));
                    }
                    Some(id) if prefixes.iter().any(|p| id.starts_with(p)) => {
                        val = Val::Str(id);
                    }
                    _ => {
                        return Err(RecError::new(
                            "MALFORMED_ID",
                            format!("{name}: id value of incorrect type: {s}"),
                            &[name],
                        ));
                    }
                },
                _ => {}
            }
        }
        vals[i] = val;
    }
    Ok(())
}

fn check_required(schema: &Schema, vals: &[Val]) -> Result<(), RecError> {
    let missing: Vec<&str> = schema
        .fields
        .iter()
        .zip(vals)
        .filter(|(d, v)| d.required && **v == Val::Null)
        .map(|(d, _)| d.name.as_str())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(RecError::new(
        "REQUIRED_FIELD_MISSING",
        format!("Required fields are missing: [{}]", missing.join(", ")),
        &missing,
    ))
}

fn check_unique(table: &Table, vals: &[Val], own_row: Option<usize>) -> Result<(), RecError> {
    for field in &table.schema.external_ids {
        if let Some(v) = vals[*field].as_str()
            && let Some(other) = table.by_external_id(*field, v)
            && Some(other) != own_row
        {
            let name = table.schema.fields[*field].name.as_str();
            return Err(RecError::new(
                "DUPLICATE_VALUE",
                format!(
                    "duplicate value found: {name} duplicates value on record with id: {}",
                    table.rows[other].id(&table.schema)
                ),
                &[name],
            ));
        }
    }
    Ok(())
}

/// Roughly what Salesforce accepts: one `@`, a non-empty local part, a dotted domain, no
/// whitespace.
fn valid_email(s: &str) -> bool {
    let Some((local, domain)) = s.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.contains('@')
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !s.chars().any(char::is_whitespace)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_in_creation_order_and_carry_a_valid_suffix() {
        let a = make_id("00Q", 61);
        let b = make_id("00Q", 62);
        assert!(a < b, "{a} {b}");
        assert_eq!(a.len(), 18);
        assert_eq!(normalize_id(&a[..15]).as_deref(), Some(a.as_str()));
        assert_eq!(normalize_id(&a.to_lowercase()[..15]).map(|s| s.len()), Some(18));
        assert!(normalize_id("00Qxyz").is_none());
    }

    #[test]
    fn datetime_literals_in_all_three_forms() {
        let want = parse_datetime("2024-05-01T10:00:00Z").unwrap();
        assert_eq!(parse_datetime("2024-05-01T10:00:00.000+0000"), Some(want));
        assert_eq!(parse_datetime("2024-05-01T12:00:00+02:00"), Some(want));
        assert_eq!(format_datetime(want), "2024-05-01T10:00:00.000+0000");
        assert!(parse_datetime("2024-05-01T10:00:00").is_none());
    }
}
