//! The `[contract]` configuration: raw serde types as they appear in TOML, and their
//! validation into the lifecycle table, qualification rules, business calendar and SLA
//! policy. Every error names the key at fault (`contract.qualification.mql.all[2]: ...`).
//!
//! The section is optional: without it the contract is off. Inside it, every table is
//! optional and defaults to the contract the issue describes, except `[contract.sla]`: without
//! it no SLA clocks run. `config/contract.example.toml` lists every key with a comment.

use std::collections::BTreeMap;

use chrono::{NaiveDate, TimeDelta, Weekday};
use chrono_tz::Tz;
use serde::Deserialize;

use crate::connectors::KeyError;
use crate::connectors::contract_props::{DateKind, StageDateProp};
use crate::contract::calendar::{BusinessCalendar, WorkingHours};
use crate::contract::conditions::{Condition, CustomKind, QualificationRules, Rule, Vocabulary};
use crate::contract::lifecycle::{
    ForwardSources, LifecycleStage, NamedMove, NamedRule, ReasonCode, TransitionTable,
};
use crate::contract::sla::SlaPolicy;
use crate::domain::Stage;

/// `[contract]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContractRaw {
    /// Custom fields rules may name: name -> `"number"` or `"text"`.
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
    /// Events rules may name.
    #[serde(default)]
    pub events: Vec<String>,
    #[serde(default)]
    pub lifecycle: LifecycleRaw,
    /// Stage -> its rule.
    #[serde(default)]
    pub qualification: BTreeMap<String, RuleRaw>,
    #[serde(default)]
    pub calendar: CalendarRaw,
    /// Absent: no SLA clocks.
    #[serde(default)]
    pub sla: Option<SlaRaw>,
    /// How systems' lead statuses are read as stages and events, and what is written for the
    /// stages the six-stage vocabulary lacks.
    #[serde(default)]
    pub mapping: MappingRaw,
    /// How often persons whose rules depend on time (`event ... within N days`) are
    /// re-evaluated, in seconds (60..=86400; default 3600).
    #[serde(default)]
    pub reevaluate_every_secs: Option<u64>,
}

/// `[contract.mapping]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MappingRaw {
    /// Canonical lead status -> the funnel stage a system reporting it means (`working = "sal"`).
    pub status_stages: BTreeMap<String, String>,
    /// Canonical lead status -> the declared event a system reporting it stamps
    /// (`working = "callback_requested"`).
    pub status_events: BTreeMap<String, String>,
    /// The six-stage value written for a recycled person (`""`: the stage is cleared).
    pub recycled_stage: String,
    /// The canonical lead status written when a person is recycled (`""`: none).
    pub recycled_status: String,
    /// The six-stage value written for a disqualified person (`""`: the stage is cleared).
    pub disqualified_stage: String,
    /// The canonical lead status written when a person is disqualified (`""`: none).
    pub disqualified_status: String,
    /// System name (or connector kind: every system of that kind) -> declared custom field ->
    /// the vendor property it is read from (`[contract.mapping.custom_fields.hubspot]
    /// score = "hubspotscore"`). Read only: leadsync never writes these properties.
    pub custom_fields: BTreeMap<String, BTreeMap<String, String>>,
    /// System name (or connector kind) -> stage -> the vendor property the date of the
    /// person's latest entry into that stage is written to: a property name (written as a
    /// datetime) or `{ property = "MQL_Date__c", type = "date" }`.
    pub stage_dates: BTreeMap<String, BTreeMap<String, StageDateRaw>>,
    /// System name (or connector kind) -> the vendor property the reason code of the person's
    /// latest named transition (recycle, disqualify, reopen) is written to; cleared (`""`)
    /// once the person moves on from the stage that transition put them in.
    pub stage_reason: BTreeMap<String, String>,
}

/// One stage-date property as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum StageDateRaw {
    Property(String),
    Typed {
        property: String,
        #[serde(rename = "type", default)]
        kind: Option<String>,
    },
}

impl Default for MappingRaw {
    fn default() -> Self {
        MappingRaw {
            status_stages: BTreeMap::new(),
            status_events: BTreeMap::new(),
            recycled_stage: "lead".into(),
            recycled_status: "nurture".into(),
            disqualified_stage: String::new(),
            disqualified_status: "unqualified".into(),
            custom_fields: BTreeMap::new(),
            stage_dates: BTreeMap::new(),
            stage_reason: BTreeMap::new(),
        }
    }
}

/// The validated `[contract.mapping]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StageMapping {
    /// Lead status -> the funnel stage it reports.
    pub status_stages: BTreeMap<String, LifecycleStage>,
    /// Lead status -> the declared event it stamps.
    pub status_events: BTreeMap<String, String>,
    pub recycled_stage: Option<Stage>,
    pub recycled_status: Option<String>,
    pub disqualified_stage: Option<Stage>,
    pub disqualified_status: Option<String>,
    /// System name or connector kind -> declared custom field -> vendor property. Which
    /// systems a key names is resolved by the settings, which know the systems.
    pub custom_fields: BTreeMap<String, BTreeMap<String, String>>,
    /// System name or connector kind (after the settings resolve them: system name) ->
    /// stage -> where its latest entry date is written.
    pub stage_dates: BTreeMap<String, BTreeMap<LifecycleStage, StageDateProp>>,
    /// System name or connector kind (after the settings resolve them: system name) -> the
    /// property the latest named transition's reason code is written to.
    pub stage_reason: BTreeMap<String, String>,
}

impl Default for StageMapping {
    fn default() -> Self {
        MappingRaw::default()
            .validate("contract.mapping", &Vocabulary::new())
            .expect("the default mapping is valid")
    }
}

impl MappingRaw {
    fn validate(&self, prefix: &str, vocabulary: &Vocabulary) -> Result<StageMapping, KeyError> {
        let mut status_stages = BTreeMap::new();
        for (status, st) in &self.status_stages {
            let key = format!("{prefix}.status_stages.{status}");
            let st = stage(&key, st)?;
            if st.funnel_rank().is_none() {
                return Err(KeyError::new(
                    key,
                    "recycled and disqualified are entered only by named transitions",
                ));
            }
            status_stages.insert(status.clone(), st);
        }
        let mut status_events = BTreeMap::new();
        for (status, event) in &self.status_events {
            if vocabulary.event(event).is_none() {
                return Err(KeyError::new(
                    format!("{prefix}.status_events.{status}"),
                    format!("unknown event {event:?}: declare it in contract.events"),
                ));
            }
            status_events.insert(status.clone(), event.clone());
        }
        let domain = |k: &str, v: &str| -> Result<Option<Stage>, KeyError> {
            let v = v.trim();
            if v.is_empty() {
                return Ok(None);
            }
            Stage::parse(v).map(Some).ok_or_else(|| {
                KeyError::new(
                    format!("{prefix}.{k}"),
                    format!(
                        "unknown stage {v:?} (expected subscriber, lead, mql, sql, opportunity, \
                         customer, or \"\" to clear it)"
                    ),
                )
            })
        };
        let status = |v: &str| Some(v.trim().to_string()).filter(|s| !s.is_empty());
        let mut custom_fields = BTreeMap::new();
        for (system, map) in &self.custom_fields {
            let mut fields = BTreeMap::new();
            let mut props: BTreeMap<&str, &str> = BTreeMap::new();
            for (name, prop) in map {
                let key = format!("{prefix}.custom_fields.{system}.{name}");
                if vocabulary.field(name).is_none() {
                    return Err(KeyError::new(
                        key,
                        format!("unknown field {name:?}: declare it in contract.fields"),
                    ));
                }
                let prop = prop.trim();
                if prop.is_empty() {
                    return Err(KeyError::new(key, "property name is empty"));
                }
                if let Some(other) = props.insert(prop, name) {
                    return Err(KeyError::new(
                        key,
                        format!("property {prop:?} is already mapped to {other}"),
                    ));
                }
                fields.insert(name.clone(), prop.to_string());
            }
            custom_fields.insert(system.clone(), fields);
        }
        let mut stage_dates = BTreeMap::new();
        for (system, map) in &self.stage_dates {
            let mut out = BTreeMap::new();
            let mut props: BTreeMap<&str, &str> = BTreeMap::new();
            for (name, raw) in map {
                let key = format!("{prefix}.stage_dates.{system}.{name}");
                let st = stage(&key, name)?;
                let (prop, kind) = match raw {
                    StageDateRaw::Property(p) => (p.trim(), DateKind::DateTime),
                    StageDateRaw::Typed { property, kind } => {
                        let kind = match kind.as_deref().map(str::trim) {
                            None | Some("datetime") => DateKind::DateTime,
                            Some("date") => DateKind::Date,
                            Some(other) => {
                                return Err(KeyError::new(
                                    format!("{key}.type"),
                                    format!("unknown type {other:?} (expected date or datetime)"),
                                ));
                            }
                        };
                        (property.trim(), kind)
                    }
                };
                if prop.is_empty() {
                    return Err(KeyError::new(key, "property name is empty"));
                }
                if let Some(other) = props.insert(prop, name) {
                    return Err(KeyError::new(
                        key,
                        format!("property {prop:?} already takes the {other} date"),
                    ));
                }
                out.insert(st, StageDateProp { property: prop.to_string(), kind });
            }
            stage_dates.insert(system.clone(), out);
        }
        let mut stage_reason = BTreeMap::new();
        for (system, prop) in &self.stage_reason {
            let prop = prop.trim();
            if prop.is_empty() {
                return Err(KeyError::new(
                    format!("{prefix}.stage_reason.{system}"),
                    "property name is empty",
                ));
            }
            let taken_by_date = stage_dates.get(system).is_some_and(
                |m: &BTreeMap<LifecycleStage, StageDateProp>| {
                    m.values().any(|p| p.property == prop)
                },
            );
            if taken_by_date {
                return Err(KeyError::new(
                    format!("{prefix}.stage_reason.{system}"),
                    format!("property {prop:?} already takes a stage date"),
                ));
            }
            stage_reason.insert(system.clone(), prop.to_string());
        }
        Ok(StageMapping {
            status_stages,
            status_events,
            recycled_stage: domain("recycled_stage", &self.recycled_stage)?,
            recycled_status: status(&self.recycled_status),
            disqualified_stage: domain("disqualified_stage", &self.disqualified_stage)?,
            disqualified_status: status(&self.disqualified_status),
            custom_fields,
            stage_dates,
            stage_reason,
        })
    }
}

/// `[contract.lifecycle]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LifecycleRaw {
    /// Stage -> which sources may enter it moving forward (`["rule", "reported"]`). Stages not
    /// listed allow both.
    #[serde(default)]
    pub forward: BTreeMap<String, Vec<String>>,
    pub recycle: Option<NamedRaw>,
    pub disqualify: Option<NamedRaw>,
    pub reopen: Option<NamedRaw>,
}

/// One named transition: `moves = ["mql -> recycled", ...]`, `reasons = ["no_response", ...]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamedRaw {
    pub moves: Vec<String>,
    pub reasons: Vec<String>,
}

/// `[contract.qualification.<stage>]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuleRaw {
    pub all: Vec<String>,
    pub any: Vec<String>,
    pub none: Vec<String>,
}

/// `[contract.calendar]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CalendarRaw {
    /// An IANA time zone name.
    pub time_zone: String,
    /// `mon` ... `sun`.
    pub working_days: Vec<String>,
    /// `"09:00-17:30"`.
    pub working_hours: String,
    /// Local dates, `YYYY-MM-DD`.
    pub holidays: Vec<String>,
}

impl Default for CalendarRaw {
    fn default() -> Self {
        CalendarRaw {
            time_zone: "UTC".into(),
            working_days: ["mon", "tue", "wed", "thu", "fri"].map(String::from).to_vec(),
            working_hours: "09:00-17:00".into(),
            holidays: Vec::new(),
        }
    }
}

/// `[contract.sla]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlaRaw {
    pub first_touch_business_hours: f64,
    #[serde(default)]
    pub grace_business_hours: f64,
    #[serde(default = "yes")]
    pub escalate: bool,
    #[serde(default)]
    pub reassign_to: Option<String>,
    #[serde(default)]
    pub recycle_after_business_hours: Option<f64>,
    #[serde(default = "sla_expired")]
    pub recycle_reason: String,
    #[serde(default)]
    pub disqualify_min_attempts: u32,
    #[serde(default)]
    pub disqualify_min_days: u32,
    /// Slack-compatible incoming webhook URL for SLA alerts; absent: logs and metrics only.
    #[serde(default)]
    pub alert_webhook: Option<String>,
    /// CRM lead statuses that count as a first touch ("status moved to working/contacted").
    #[serde(default)]
    pub touch_statuses: Vec<String>,
    /// Read the CRM record's own last-activity property (Salesforce `LastActivityDate`,
    /// HubSpot `notes_last_contacted`) as a touch (default on). See `ledger/sla.rs`.
    #[serde(default = "yes")]
    pub last_activity_touches: bool,
    /// Longest sleep of the SLA task between evaluations, in seconds (default 60).
    #[serde(default = "sixty")]
    pub check_interval_seconds: u64,
}

fn sixty() -> u64 {
    60
}

/// The operational side of `[contract.sla]`: where alerts go and what counts as a touch.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlaOps {
    pub alert_webhook: Option<url::Url>,
    pub touch_statuses: std::collections::BTreeSet<String>,
    pub check_interval: std::time::Duration,
    /// Whether CRM connectors read the record's last-activity property as a touch.
    pub last_activity_touches: bool,
}

fn yes() -> bool {
    true
}

fn sla_expired() -> String {
    "sla_expired".into()
}

/// The validated contract.
#[derive(Debug, Clone)]
pub struct Contract {
    pub vocabulary: Vocabulary,
    pub table: TransitionTable,
    pub rules: QualificationRules,
    pub calendar: BusinessCalendar,
    /// `None`: no SLA clocks.
    pub sla: Option<SlaPolicy>,
    /// Alerting and touch recognition of `[contract.sla]` (default when absent).
    pub sla_ops: SlaOps,
    pub mapping: StageMapping,
    /// How often the periodic re-evaluation runs (only when a rule has a time window).
    pub reevaluate_every: std::time::Duration,
}

impl Contract {
    /// A fingerprint of everything that decides a rule move (the declared vocabulary, the
    /// rules and the transition table) and of where stage dates are written. The ledger keeps the one it last evaluated everyone
    /// with; a different one at start means the rules changed and everyone is re-evaluated.
    /// Built from `Debug` and `Display` text, so a leadsync upgrade that prints them
    /// differently re-evaluates once, which changes nobody whose rules did not change.
    pub fn rules_hash(&self) -> String {
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(format!("{:?}\n{:?}\n", self.vocabulary, self.table).as_bytes());
        // Stage-date properties too: a new one gets everyone's dates written once.
        h.update(format!("{:?}\n", self.mapping.stage_dates).as_bytes());
        // And a new reason property gets everyone's current reason written once (left out
        // when there is none, so an upgrade alone re-evaluates nobody).
        if !self.mapping.stage_reason.is_empty() {
            h.update(format!("{:?}\n", self.mapping.stage_reason).as_bytes());
        }
        for (stage, rule) in self.rules.iter() {
            h.update(format!("{stage}\n").as_bytes());
            for (list, conds) in [("all", &rule.all), ("any", &rule.any), ("none", &rule.none)] {
                for c in conds {
                    h.update(format!("{list}: {c}\n").as_bytes());
                }
            }
        }
        hex::encode(h.finalize())
    }

    /// Whether any rule names an event window (`within N days`), so that time alone can
    /// change whether it holds.
    pub fn has_windows(&self) -> bool {
        self.rules.iter().any(|(_, r)| {
            r.all
                .iter()
                .chain(&r.any)
                .chain(&r.none)
                .any(|c| matches!(c, Condition::Event { within: Some(_), .. }))
        })
    }
}

/// Business hours as a duration, to the second; at most ten years of them. A value that must
/// be above 0 must also be at least a second once rounded (0.0001 hours is not a deadline).
fn business_hours(key: &str, hours: f64, min_exclusive: bool) -> Result<TimeDelta, KeyError> {
    let ok = hours.is_finite()
        && hours <= 87_600.0
        && if min_exclusive { hours > 0.0 } else { hours >= 0.0 };
    if !ok {
        let bound = if min_exclusive { "above 0" } else { "0 or more" };
        return Err(KeyError::new(key, format!("must be a number of hours {bound}")));
    }
    #[allow(clippy::cast_possible_truncation, reason = "bounded to ten years of seconds above")]
    let secs = (hours * 3600.0).round() as i64;
    if min_exclusive && secs == 0 {
        return Err(KeyError::new(key, "must be at least one second (1/3600 of an hour)"));
    }
    Ok(TimeDelta::seconds(secs))
}

fn stage(key: &str, s: &str) -> Result<LifecycleStage, KeyError> {
    LifecycleStage::parse(s.trim()).ok_or_else(|| {
        KeyError::new(
            key,
            format!(
                "unknown stage {s:?} (expected subscriber, lead, mql, sal, sql, opportunity, \
                 customer, recycled or disqualified)"
            ),
        )
    })
}

impl ContractRaw {
    /// Validate into a [`Contract`]; `prefix` is where the section sits (`contract`).
    ///
    /// # Errors
    /// A [`KeyError`] naming the key and the problem.
    pub fn validate(&self, prefix: &str) -> Result<Contract, KeyError> {
        let vocabulary = self.vocabulary(prefix)?;
        let table = self.lifecycle.validate(&format!("{prefix}.lifecycle"))?;
        let rules = self.rules(prefix, &vocabulary)?;
        let calendar = self.calendar.validate(&format!("{prefix}.calendar"))?;
        let sla_ops = match &self.sla {
            Some(raw) => raw.ops(&format!("{prefix}.sla"))?,
            None => SlaOps::default(),
        };
        let sla = match &self.sla {
            Some(raw) => Some(raw.validate(&format!("{prefix}.sla"), &table)?),
            None => None,
        };
        let mapping = self.mapping.validate(&format!("{prefix}.mapping"), &vocabulary)?;
        let secs = self.reevaluate_every_secs.unwrap_or(3600);
        if !(60..=86_400).contains(&secs) {
            return Err(KeyError::new(
                format!("{prefix}.reevaluate_every_secs"),
                "must be between 60 and 86400",
            ));
        }
        let reevaluate_every = std::time::Duration::from_secs(secs);
        Ok(Contract { vocabulary, table, rules, calendar, sla, sla_ops, mapping, reevaluate_every })
    }

    fn vocabulary(&self, prefix: &str) -> Result<Vocabulary, KeyError> {
        let mut v = Vocabulary::new();
        for (name, kind) in &self.fields {
            let key = format!("{prefix}.fields.{name}");
            let kind = CustomKind::parse(kind).ok_or_else(|| {
                KeyError::new(&key, format!("unknown type {kind:?} (expected number or text)"))
            })?;
            v.declare_field(name, kind).map_err(|p| KeyError::new(&key, p))?;
        }
        for (i, name) in self.events.iter().enumerate() {
            v.declare_event(name).map_err(|p| KeyError::new(format!("{prefix}.events[{i}]"), p))?;
        }
        Ok(v)
    }

    fn rules(&self, prefix: &str, v: &Vocabulary) -> Result<QualificationRules, KeyError> {
        let mut rules = Vec::new();
        for (name, raw) in &self.qualification {
            let key = format!("{prefix}.qualification.{name}");
            let st = stage(&key, name)?;
            let list = |which: &str, texts: &[String]| -> Result<Vec<Condition>, KeyError> {
                texts
                    .iter()
                    .enumerate()
                    .map(|(i, text)| {
                        Condition::parse(text, v).map_err(|e| {
                            KeyError::new(format!("{key}.{which}[{i}]"), format!("{e} in {text:?}"))
                        })
                    })
                    .collect()
            };
            let rule = Rule {
                all: list("all", &raw.all)?,
                any: list("any", &raw.any)?,
                none: list("none", &raw.none)?,
            };
            rules.push((st, rule));
        }
        QualificationRules::new(rules)
            .map_err(|(st, problem)| KeyError::new(format!("{prefix}.qualification.{st}"), problem))
    }
}

impl LifecycleRaw {
    fn validate(&self, prefix: &str) -> Result<TransitionTable, KeyError> {
        let mut forward = ForwardSources::default();
        for (name, sources) in &self.forward {
            let key = format!("{prefix}.forward.{name}");
            let st = stage(&key, name)?;
            if st.funnel_rank().is_none() {
                return Err(KeyError::new(
                    key,
                    "recycled and disqualified are entered only by named transitions",
                ));
            }
            let (mut rule, mut reported) = (false, false);
            for s in sources {
                match s.as_str() {
                    "rule" => rule = true,
                    "reported" => reported = true,
                    other => {
                        return Err(KeyError::new(
                            key,
                            format!("unknown source {other:?} (expected rule or reported)"),
                        ));
                    }
                }
            }
            forward.set(st, rule, reported);
        }
        let mut named = Vec::new();
        for (name, raw) in [
            (NamedMove::Recycle, &self.recycle),
            (NamedMove::Disqualify, &self.disqualify),
            (NamedMove::Reopen, &self.reopen),
        ] {
            let Some(raw) = raw else { continue };
            let key = format!("{prefix}.{name}");
            let mut moves = Vec::new();
            for (i, m) in raw.moves.iter().enumerate() {
                let k = format!("{key}.moves[{i}]");
                let (from, to) = m.split_once("->").ok_or_else(|| {
                    KeyError::new(&k, format!("{m:?} is not like \"mql -> recycled\""))
                })?;
                moves.push((stage(&k, from)?, stage(&k, to)?));
            }
            let mut reasons = Vec::new();
            for (i, r) in raw.reasons.iter().enumerate() {
                reasons.push(ReasonCode::new(r).ok_or_else(|| {
                    KeyError::new(
                        format!("{key}.reasons[{i}]"),
                        "reason codes use lowercase letters, digits and '_', starting with a \
                         letter, at most 64 characters",
                    )
                })?);
            }
            named.push(NamedRule { name, moves, reasons });
        }
        TransitionTable::new(forward, named)
            .map_err(|e| KeyError::new(format!("{prefix}.{}", e.name), e.problem))
    }
}

impl CalendarRaw {
    fn validate(&self, prefix: &str) -> Result<BusinessCalendar, KeyError> {
        let tz: Tz = self.time_zone.parse().map_err(|_| {
            KeyError::new(
                format!("{prefix}.time_zone"),
                format!("unknown time zone {:?} (an IANA name like Europe/Berlin)", self.time_zone),
            )
        })?;
        let mut days = Vec::new();
        for (i, d) in self.working_days.iter().enumerate() {
            days.push(d.parse::<Weekday>().map_err(|_| {
                KeyError::new(
                    format!("{prefix}.working_days[{i}]"),
                    format!("unknown day {d:?} (expected mon, tue, wed, thu, fri, sat or sun)"),
                )
            })?);
        }
        let hours = WorkingHours::parse(&self.working_hours).ok_or_else(|| {
            KeyError::new(
                format!("{prefix}.working_hours"),
                format!("{:?} is not like \"09:00-17:30\" (open before close)", self.working_hours),
            )
        })?;
        let mut holidays = Vec::new();
        for (i, h) in self.holidays.iter().enumerate() {
            holidays.push(NaiveDate::parse_from_str(h.trim(), "%Y-%m-%d").map_err(|_| {
                KeyError::new(
                    format!("{prefix}.holidays[{i}]"),
                    format!("{h:?} is not a date like 2025-12-25"),
                )
            })?);
        }
        BusinessCalendar::new(tz, &days, hours, holidays)
            .map_err(|e| KeyError::new(format!("{prefix}.working_days"), e.to_string()))
    }
}

impl SlaRaw {
    fn ops(&self, prefix: &str) -> Result<SlaOps, KeyError> {
        let alert_webhook = match self.alert_webhook.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(raw) => {
                let u = url::Url::parse(raw).map_err(|e| {
                    KeyError::new(format!("{prefix}.alert_webhook"), format!("not a URL: {e}"))
                })?;
                if !matches!(u.scheme(), "http" | "https") {
                    return Err(KeyError::new(
                        format!("{prefix}.alert_webhook"),
                        "must be an http(s) URL",
                    ));
                }
                Some(u)
            }
        };
        if self.check_interval_seconds == 0 || self.check_interval_seconds > 3600 {
            return Err(KeyError::new(
                format!("{prefix}.check_interval_seconds"),
                "must be between 1 and 3600",
            ));
        }
        Ok(SlaOps {
            alert_webhook,
            touch_statuses: self.touch_statuses.iter().map(|s| s.trim().to_string()).collect(),
            check_interval: std::time::Duration::from_secs(self.check_interval_seconds),
            last_activity_touches: self.last_activity_touches,
        })
    }

    fn validate(&self, prefix: &str, table: &TransitionTable) -> Result<SlaPolicy, KeyError> {
        let key = |k: &str| format!("{prefix}.{k}");
        let first_touch = business_hours(
            &key("first_touch_business_hours"),
            self.first_touch_business_hours,
            true,
        )?;
        let grace = business_hours(&key("grace_business_hours"), self.grace_business_hours, false)?;
        let recycle_after = match self.recycle_after_business_hours {
            Some(h) => Some(business_hours(&key("recycle_after_business_hours"), h, false)?),
            None => None,
        };
        if !table.has_reason(NamedMove::Recycle, &self.recycle_reason) {
            return Err(KeyError::new(
                key("recycle_reason"),
                format!(
                    "{:?} is not one of the recycle transition's reasons \
                     (contract.lifecycle.recycle.reasons)",
                    self.recycle_reason
                ),
            ));
        }
        let recycle_reason = ReasonCode::new(&self.recycle_reason)
            .ok_or_else(|| KeyError::new(key("recycle_reason"), "not a reason code"))?;
        if table
            .named(NamedMove::Recycle)
            .moves
            .iter()
            .all(|(from, _)| *from != LifecycleStage::Mql)
            && recycle_after.is_some()
        {
            return Err(KeyError::new(
                key("recycle_after_business_hours"),
                "the recycle transition does not allow mql -> recycled, so an untouched MQL \
                 cannot be recycled",
            ));
        }
        let reassign_to = match self.reassign_to.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(owner) => Some(owner.to_string()),
        };
        Ok(SlaPolicy {
            first_touch,
            grace,
            escalate: self.escalate,
            reassign_to,
            recycle_after,
            recycle_reason,
            disqualify_min_attempts: self.disqualify_min_attempts,
            disqualify_min_days: self.disqualify_min_days,
        })
    }
}

#[cfg(test)]
mod tests;
