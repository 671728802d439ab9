//! Settings: a TOML file layered with `LEADSYNC__SECTION__KEY` environment overrides (the
//! `config` crate), parsed once into validated types. Unknown keys are errors, and every error
//! names the key at fault.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::connectors::KeyError;
use crate::connectors::hubspot::{HubspotConfig, HubspotConfigRaw};
use crate::connectors::salesforce::{SalesforceConfig, SalesforceConfigRaw};
use crate::contract::config::{Contract, ContractRaw};
use crate::domain::{ConnectorKind, Field, Role, Stage, SystemName};
use crate::identity::matcher::{Matcher, MatchingRaw};
use crate::reconcile::{CreatePolicy, FieldRule};

/// The configuration `leadsync demo` runs on when no file is given.
pub const DEMO_TOML: &str = include_str!("../config/demo.toml");

/// A configuration problem: exit code 78 (EX_CONFIG).
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("{0}")]
    Key(#[from] KeyError),
    #[error("cannot read configuration: {0}")]
    Load(String),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SettingsRaw {
    ledger: LedgerRaw,
    #[serde(default)]
    sync: SyncRaw,
    #[serde(default)]
    log: LogRaw,
    #[serde(default)]
    admin: AdminRaw,
    #[serde(default)]
    webhooks: WebhooksRaw,
    #[serde(default)]
    systems: BTreeMap<String, serde_json::Value>,
    /// Canonical field -> resolution rule, e.g. `company = "prefer crm unless blank"`.
    #[serde(default)]
    fields: BTreeMap<String, String>,
    #[serde(default)]
    identity: IdentityRaw,
    #[serde(default)]
    matching: MatchingRaw,
    /// The lead contract; absent: off.
    #[serde(default)]
    contract: Option<ContractRaw>,
    #[serde(default)]
    closed_loop: crate::closed_loop::ClosedLoopRaw,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct IdentityRaw {
    recreate_deleted: bool,
    review_holds_creates: bool,
    merge_at_vendor: Vec<String>,
    merge_every_secs: u64,
    merge_fuzzy_links: bool,
}

impl Default for IdentityRaw {
    fn default() -> Self {
        IdentityRaw {
            recreate_deleted: false,
            review_holds_creates: false,
            merge_at_vendor: Vec::new(),
            merge_every_secs: 60,
            merge_fuzzy_links: false,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LedgerRaw {
    path: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct SyncRaw {
    status_implies_stage: BTreeMap<String, String>,
    reconcile_batch: usize,
    push_max_attempts: i64,
    push_retry_base_ms: u64,
    push_retry_max_secs: u64,
    error_backoff_secs: u64,
}

impl Default for SyncRaw {
    fn default() -> Self {
        SyncRaw {
            status_implies_stage: [("working", "sql"), ("converted", "opportunity")]
                .iter()
                .map(|(a, b)| ((*a).to_string(), (*b).to_string()))
                .collect(),
            reconcile_batch: 1000,
            push_max_attempts: 10,
            push_retry_base_ms: 1000,
            push_retry_max_secs: 600,
            error_backoff_secs: 5,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct AdminRaw {
    enabled: bool,
    listen: String,
    max_poll_age_secs: u64,
}

impl Default for AdminRaw {
    fn default() -> Self {
        AdminRaw { enabled: true, listen: "127.0.0.1:9464".into(), max_poll_age_secs: 900 }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct WebhooksRaw {
    enabled: bool,
    listen: String,
    public_url: String,
    max_body_bytes: usize,
    sweep_interval_secs: u64,
}

impl Default for WebhooksRaw {
    fn default() -> Self {
        WebhooksRaw {
            enabled: false,
            listen: "0.0.0.0:8088".into(),
            public_url: String::new(),
            max_body_bytes: 1024 * 1024,
            sweep_interval_secs: 300,
        }
    }
}

/// The webhook listener vendors POST to.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// `None` when disabled.
    pub listen: Option<std::net::SocketAddr>,
    /// The base URL vendors were given (scheme, host, optional path prefix), which HubSpot's
    /// signatures cover. `None`: rebuilt from each request's `Host` header as `http://`.
    pub public_url: Option<url::Url>,
    /// Bodies above this are refused with 413.
    pub max_body_bytes: usize,
    /// How often a system fed by webhooks is still polled, as a safety net.
    pub sweep_interval: Duration,
}

/// How one system's webhooks are checked.
#[derive(Debug, Clone)]
pub enum SystemWebhook {
    Hubspot(crate::ingest::webhook::hubspot::HubspotVerifyConfig),
    Salesforce {
        config: crate::ingest::webhook::salesforce::SalesforceOutboundConfig,
        /// Known only to the configured endpoint: the last path segment, or the basic-auth
        /// password.
        secret: secrecy::SecretString,
    },
}

/// The admin listener (`/healthz`, `/readyz`, `/metrics`).
#[derive(Debug, Clone)]
pub struct AdminSettings {
    /// `None` when disabled.
    pub listen: Option<std::net::SocketAddr>,
    /// A system not polled successfully for this long makes `/readyz` fail.
    pub max_poll_age: Duration,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct LogRaw {
    format: String,
    level: String,
}

impl Default for LogRaw {
    fn default() -> Self {
        LogRaw { format: "auto".into(), level: "info".into() }
    }
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Text on a terminal, JSON otherwise (journald).
    Auto,
    Json,
    Text,
}

#[derive(Debug, Clone)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
}

#[derive(Debug, Clone)]
pub struct SyncSettings {
    pub status_implies_stage: BTreeMap<String, Stage>,
    pub reconcile_batch: usize,
    pub push_max_attempts: i64,
    pub push_retry_base: Duration,
    pub push_retry_max: Duration,
    pub error_backoff: Duration,
}

#[derive(Debug, Clone)]
pub enum ConnectorSettings {
    Salesforce(SalesforceConfig),
    Hubspot(HubspotConfig),
}

#[derive(Debug, Clone)]
pub struct SystemSettings {
    pub name: SystemName,
    pub kind: ConnectorKind,
    pub role: Role,
    pub create: CreatePolicy,
    pub connector: ConnectorSettings,
    /// How this system's webhooks are verified; `None`: this system is only polled.
    pub webhook: Option<SystemWebhook>,
}

/// How people are told apart and how their fields are resolved.
#[derive(Debug, Clone)]
pub struct IdentitySettings {
    /// Rules that differ from each field's default.
    pub field_rules: BTreeMap<Field, FieldRule>,
    /// Create a person again in a system where their record was deleted.
    pub recreate_deleted: bool,
    /// Hold a person's create in a system while an open duplicate review pairs them with a
    /// person who has a record there.
    pub review_holds_creates: bool,
    pub matcher: Matcher,
    /// Systems where a person's several records are merged at the vendor into the primary
    /// one (empty by default: link and report only). Only systems whose API can merge.
    pub merge_at_vendor: Vec<SystemName>,
    /// How often the merger looks for records to merge.
    pub merge_every: Duration,
    /// Also merge records linked to their person by a fuzzy rule (default: only records linked
    /// by exact keys are merged; fuzzy ones are reported for a person to merge by hand).
    pub merge_fuzzy_links: bool,
}

impl Default for IdentitySettings {
    fn default() -> Self {
        IdentitySettings {
            field_rules: BTreeMap::new(),
            recreate_deleted: false,
            review_holds_creates: false,
            matcher: Matcher::default(),
            merge_at_vendor: Vec::new(),
            merge_every: Duration::from_secs(60),
            merge_fuzzy_links: false,
        }
    }
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub ledger_path: PathBuf,
    pub sync: SyncSettings,
    pub log: LogSettings,
    pub admin: AdminSettings,
    pub webhooks: WebhookSettings,
    pub systems: Vec<SystemSettings>,
    pub identity: IdentitySettings,
    /// The lead contract (lifecycle, qualification rules, calendar, SLA); `None`: off.
    pub contract: Option<Contract>,
    /// Reading opportunities and campaign touches (`[closed_loop]`); off by default.
    pub closed_loop: crate::closed_loop::ClosedLoopSettings,
}

/// Where the TOML comes from.
#[derive(Debug, Clone)]
pub enum Source<'a> {
    File(&'a Path),
    Inline(&'a str),
}

impl Settings {
    /// Load a TOML source layered with `LEADSYNC__...` overrides from `env` (passed in, never
    /// read from the process here, so tests stay independent), then validate.
    ///
    /// # Errors
    /// A [`SettingsError`] naming the key and the problem.
    pub fn load(
        source: Source<'_>,
        env: &HashMap<String, String>,
    ) -> Result<Settings, SettingsError> {
        let text = match source {
            Source::File(p) => std::fs::read_to_string(p)
                .map_err(|e| SettingsError::Load(format!("{}: {e}", p.display())))?,
            Source::Inline(s) => s.to_string(),
        };
        let file = config::File::from_str(&text, config::FileFormat::Toml);
        let leadsync_env: HashMap<String, String> = env
            .iter()
            .filter(|(k, _)| k.starts_with("LEADSYNC__"))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let cfg = config::Config::builder()
            .add_source(file)
            .add_source(
                config::Environment::with_prefix("LEADSYNC")
                    .prefix_separator("__")
                    .separator("__")
                    .try_parsing(true)
                    .source(Some(leadsync_env)),
            )
            .build()
            .map_err(|e| SettingsError::Load(e.to_string()))?;
        let raw: SettingsRaw = cfg.try_deserialize().map_err(|e| match e {
            config::ConfigError::Message(m) => key_error_from_message(&m),
            other => SettingsError::Load(other.to_string()),
        })?;
        validate(raw, env)
    }
}

/// The `config` crate reports "missing field `x`" or "unknown field `x`, expected ..." with
/// a path when it has one; turn that into our key-naming error.
fn key_error_from_message(m: &str) -> SettingsError {
    let key = m.split('`').nth(1).map(str::to_string).unwrap_or_else(|| "configuration".into());
    let key = match m.rsplit_once(" for key `") {
        Some((_, rest)) => {
            let path = rest.trim_end_matches('`');
            if path.ends_with(&key) { path.to_string() } else { format!("{path}.{key}") }
        }
        None => key,
    };
    SettingsError::Key(KeyError::new(key, m.to_string()))
}

fn validate(raw: SettingsRaw, env: &HashMap<String, String>) -> Result<Settings, SettingsError> {
    let mut status_implies_stage = BTreeMap::new();
    for (status, stage) in &raw.sync.status_implies_stage {
        let st = Stage::parse(stage).ok_or_else(|| {
            KeyError::new(
                format!("sync.status_implies_stage.{status}"),
                format!("unknown stage {stage:?}"),
            )
        })?;
        status_implies_stage.insert(status.clone(), st);
    }
    if raw.sync.reconcile_batch == 0 {
        return Err(KeyError::new("sync.reconcile_batch", "must be at least 1").into());
    }
    if raw.sync.push_max_attempts < 1 {
        return Err(KeyError::new("sync.push_max_attempts", "must be at least 1").into());
    }
    let format = match raw.log.format.as_str() {
        "auto" => LogFormat::Auto,
        "json" => LogFormat::Json,
        "text" => LogFormat::Text,
        other => {
            return Err(KeyError::new(
                "log.format",
                format!("unknown format {other:?} (expected auto, json or text)"),
            )
            .into());
        }
    };
    if raw.ledger.path.as_os_str().is_empty() {
        return Err(KeyError::new("ledger.path", "must not be empty").into());
    }
    let admin = AdminSettings {
        listen: if raw.admin.enabled {
            Some(raw.admin.listen.parse().map_err(|e| {
                KeyError::new("admin.listen", format!("not an address like 127.0.0.1:9464: {e}"))
            })?)
        } else {
            None
        },
        max_poll_age: Duration::from_secs(raw.admin.max_poll_age_secs.max(1)),
    };
    let webhooks = webhook_settings(&raw.webhooks)?;
    if webhooks.listen.is_some()
        && admin.listen.is_some()
        && webhooks.sweep_interval >= admin.max_poll_age
    {
        return Err(KeyError::new(
            "webhooks.sweep_interval_secs",
            "must be below admin.max_poll_age_secs, or /readyz fails between two sweeps",
        )
        .into());
    }
    if raw.systems.is_empty() {
        return Err(KeyError::new("systems", "no systems configured").into());
    }
    let mut systems = Vec::new();
    for (name, value) in raw.systems {
        systems.push(system(&name, value, env)?);
    }
    let crms = systems.iter().filter(|s| s.role == Role::Crm).count();
    if crms > 1 {
        return Err(KeyError::new("systems", "more than one system has role = \"crm\"").into());
    }
    let mut field_rules = BTreeMap::new();
    for (name, rule) in &raw.fields {
        let key = format!("fields.{name}");
        let field =
            Field::parse(name).ok_or_else(|| KeyError::new(&key, "not a canonical field name"))?;
        let parsed = FieldRule::parse(rule).ok_or_else(|| {
            KeyError::new(
                &key,
                format!(
                    "unknown rule {rule:?} (expected \"most recent\", \"prefer <system>\", \
                     \"prefer <system> unless blank\", \"don't sync\", \"review\", \
                     \"highest stage\" or \"any true\")"
                ),
            )
        })?;
        if let Some(problem) = parsed.unfit_for(field) {
            return Err(KeyError::new(&key, problem).into());
        }
        if let FieldRule::Prefer { system, .. } = &parsed
            && !systems.iter().any(|s| &s.name == system)
        {
            return Err(
                KeyError::new(&key, format!("no system is named {:?}", system.as_str())).into()
            );
        }
        field_rules.insert(field, parsed);
    }
    let mut contract = match &raw.contract {
        Some(c) => Some(c.validate("contract")?),
        None => None,
    };
    if let Some(c) = &mut contract {
        contract_props(c, &mut systems)?;
    }
    let merge_at_vendor = merge_at_vendor(&raw.identity.merge_at_vendor, &systems)?;
    if raw.identity.merge_every_secs == 0 {
        return Err(KeyError::new("identity.merge_every_secs", "must be at least 1").into());
    }
    let names: Vec<SystemName> = systems.iter().map(|s| s.name.clone()).collect();
    let closed_loop = raw.closed_loop.validate("closed_loop", &names)?;
    Ok(Settings {
        closed_loop,
        contract,
        ledger_path: raw.ledger.path,
        sync: SyncSettings {
            status_implies_stage,
            reconcile_batch: raw.sync.reconcile_batch,
            push_max_attempts: raw.sync.push_max_attempts,
            push_retry_base: Duration::from_millis(raw.sync.push_retry_base_ms),
            push_retry_max: Duration::from_secs(raw.sync.push_retry_max_secs),
            error_backoff: Duration::from_secs(raw.sync.error_backoff_secs.max(1)),
        },
        log: LogSettings { format, level: raw.log.level },
        admin,
        webhooks,
        systems,
        identity: IdentitySettings {
            field_rules,
            recreate_deleted: raw.identity.recreate_deleted,
            review_holds_creates: raw.identity.review_holds_creates,
            matcher: Matcher::from_raw(&raw.matching, "matching")?,
            merge_at_vendor,
            merge_every: Duration::from_secs(raw.identity.merge_every_secs),
            merge_fuzzy_links: raw.identity.merge_fuzzy_links,
        },
    })
}

/// `identity.merge_at_vendor`: each entry names a system, or a connector kind meaning every
/// system of that kind (when no system has that name). Both vendors can merge (HubSpot's
/// contacts merge, Salesforce's SOAP `merge()`).
fn merge_at_vendor(
    names: &[String],
    systems: &[SystemSettings],
) -> Result<Vec<SystemName>, KeyError> {
    const KEY: &str = "identity.merge_at_vendor";
    let mut out: Vec<SystemName> = Vec::new();
    for name in names {
        let chosen: Vec<&SystemSettings> = match systems.iter().find(|s| s.name.as_str() == name) {
            Some(s) => vec![s],
            None => systems.iter().filter(|s| s.kind.to_string() == *name).collect(),
        };
        if chosen.is_empty() {
            let known: Vec<&str> = systems.iter().map(|s| s.name.as_str()).collect();
            return Err(KeyError::new(
                KEY,
                format!(
                    "no system is named {name:?} (systems: {}; a kind such as \"hubspot\" \
                     names every system of that kind)",
                    known.join(", ")
                ),
            ));
        }
        for s in chosen {
            if !out.contains(&s.name) {
                out.push(s.name.clone());
            }
        }
    }
    Ok(out)
}

/// `[contract.mapping.custom_fields.<key>]` and `[contract.mapping.stage_dates.<key>]`: each
/// key names a system, or a connector kind meaning every system of that kind (when no system
/// has that name), as in `identity.merge_at_vendor`. The connectors of the systems named read
/// (custom fields) and write (stage dates) those properties, and the contract's stage-date
/// mapping is rewritten by system name for the ledger, which plans those writes.
fn contract_props(contract: &mut Contract, systems: &mut [SystemSettings]) -> Result<(), KeyError> {
    use crate::connectors::contract_props::ContractProps;
    let custom = resolve_system_keys("custom_fields", &contract.mapping.custom_fields, systems)?;
    let dates = resolve_system_keys("stage_dates", &contract.mapping.stage_dates, systems)?;
    let reasons = resolve_system_keys("stage_reason", &contract.mapping.stage_reason, systems)?;
    reassign_owner(contract, systems)?;
    for s in systems.iter_mut() {
        let (fields, stage_dates) = (custom.get(&s.name), dates.get(&s.name));
        let reason = reasons.get(&s.name);
        if let (ConnectorSettings::Salesforce(c), Some((key, prop))) = (&s.connector, reason)
            && let Some(problem) = c.contract_property_problem(prop)
        {
            return Err(KeyError::new(format!("contract.mapping.stage_reason.{key}"), problem));
        }
        if let ConnectorSettings::Salesforce(c) = &s.connector {
            let custom_props = fields.into_iter().flat_map(|(key, m)| {
                m.iter().map(move |(f, p)| (format!("custom_fields.{key}.{f}"), p.as_str()))
            });
            let date_props = stage_dates.into_iter().flat_map(|(key, m)| {
                m.iter().map(move |(st, p)| (format!("stage_dates.{key}.{st}"), &*p.property))
            });
            for (name, prop) in custom_props.chain(date_props) {
                if let Some(problem) = c.contract_property_problem(prop) {
                    return Err(KeyError::new(format!("contract.mapping.{name}"), problem));
                }
            }
        }
        let props = ContractProps::new(fields.map(|(_, m)| m.clone()).unwrap_or_default())
            .with_stage_dates(
                stage_dates
                    .map(|(_, m)| {
                        m.iter().map(|(st, p)| (st.as_str().to_string(), p.clone())).collect()
                    })
                    .unwrap_or_default(),
            )
            .with_stage_reason(reason.map(|(_, p)| p.clone()))
            .with_owner(s.role == Role::Crm);
        // The SLA's last-activity touch is what a CRM reports (see `ledger/sla.rs`).
        let props = props.with_last_activity(
            s.role == Role::Crm && contract.sla.is_some() && contract.sla_ops.last_activity_touches,
        );
        match &mut s.connector {
            ConnectorSettings::Hubspot(c) => c.contract = props,
            ConnectorSettings::Salesforce(c) => c.set_contract_props(props),
        }
    }
    contract.mapping.stage_dates =
        dates.into_iter().map(|(name, (_, m))| (name.as_str().to_string(), m)).collect();
    contract.mapping.stage_reason =
        reasons.into_iter().map(|(name, (_, p))| (name.as_str().to_string(), p)).collect();
    Ok(())
}

/// `[contract.sla] reassign_to` names an owner of the CRM-role system, in that vendor's id
/// form: a Salesforce User (`005…`) or Queue (`00G…`) id of 15 or 18 characters, or a HubSpot
/// owner id (digits, `GET /crm/v3/owners`). Checked here, where the systems are known, so a
/// typo is a configuration error rather than a dead letter at the first escalation.
fn reassign_owner(contract: &Contract, systems: &[SystemSettings]) -> Result<(), KeyError> {
    const KEY: &str = "contract.sla.reassign_to";
    let Some(owner) = contract.sla.as_ref().and_then(|p| p.reassign_to.as_deref()) else {
        return Ok(());
    };
    let Some(crm) = systems.iter().find(|s| s.role == Role::Crm) else {
        return Err(KeyError::new(KEY, "no system has role = \"crm\" to reassign the owner in"));
    };
    match owner_id_problem(crm.kind, owner) {
        Some(problem) => Err(KeyError::new(
            KEY,
            format!("{owner:?} is not {problem} (system {:?})", crm.name.as_str()),
        )),
        None => Ok(()),
    }
}

/// What an owner id is not, for a CRM of this kind (`None`: it has the vendor's id form).
fn owner_id_problem(kind: ConnectorKind, owner: &str) -> Option<&'static str> {
    let ok = match kind {
        ConnectorKind::Salesforce => {
            matches!(owner.len(), 15 | 18)
                && owner.bytes().all(|b| b.is_ascii_alphanumeric())
                && (owner.starts_with("005") || owner.starts_with("00G"))
        }
        ConnectorKind::Hubspot => {
            !owner.is_empty() && owner.len() <= 20 && owner.bytes().all(|b| b.is_ascii_digit())
        }
    };
    (!ok).then_some(match kind {
        ConnectorKind::Salesforce => {
            "a Salesforce User (005...) or Queue (00G...) id of 15 or 18 characters"
        }
        ConnectorKind::Hubspot => "a HubSpot owner id (digits; GET /crm/v3/owners lists them)",
    })
}

/// The tables of `contract.mapping.<table>` by the system each key names (see
/// [`contract_props`]), with the key that named it; a system named by two keys is an error.
fn resolve_system_keys<T: Clone>(
    table: &str,
    by_key: &BTreeMap<String, T>,
    systems: &[SystemSettings],
) -> Result<BTreeMap<SystemName, (String, T)>, KeyError> {
    let mut out: BTreeMap<SystemName, (String, T)> = BTreeMap::new();
    for (name, value) in by_key {
        let key = format!("contract.mapping.{table}.{name}");
        let by_name = systems.iter().any(|s| s.name.as_str() == name);
        let chosen: Vec<&SystemSettings> = systems
            .iter()
            .filter(|s| if by_name { s.name.as_str() == name } else { s.kind.as_str() == name })
            .collect();
        if chosen.is_empty() {
            let known: Vec<&str> = systems.iter().map(|s| s.name.as_str()).collect();
            return Err(KeyError::new(
                key,
                format!(
                    "no system is named {name:?} (systems: {}; a kind such as \"hubspot\" \
                     names every system of that kind)",
                    known.join(", ")
                ),
            ));
        }
        for s in chosen {
            if let Some((other, _)) = out.insert(s.name.clone(), (name.clone(), value.clone())) {
                return Err(KeyError::new(
                    key,
                    format!(
                        "system {:?} is already mapped by contract.mapping.{table}.{other}",
                        s.name.as_str()
                    ),
                ));
            }
        }
    }
    Ok(out)
}

fn take_str(
    obj: &mut serde_json::Map<String, serde_json::Value>,
    prefix: &str,
    key: &str,
) -> Result<Option<String>, KeyError> {
    match obj.remove(key) {
        None => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(KeyError::new(format!("{prefix}.{key}"), "must be a string")),
    }
}

fn system(
    name: &str,
    value: serde_json::Value,
    env: &HashMap<String, String>,
) -> Result<SystemSettings, KeyError> {
    let prefix = format!("systems.{name}");
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
        return Err(KeyError::new(prefix, "system names use letters, digits, '_' and '-'"));
    }
    let serde_json::Value::Object(mut obj) = value else {
        return Err(KeyError::new(prefix, "must be a table"));
    };
    let kind = match take_str(&mut obj, &prefix, "kind")?.as_deref() {
        Some("salesforce") => ConnectorKind::Salesforce,
        Some("hubspot") => ConnectorKind::Hubspot,
        Some(other) => {
            return Err(KeyError::new(
                format!("{prefix}.kind"),
                format!("unknown kind {other:?} (expected salesforce or hubspot)"),
            ));
        }
        None => return Err(KeyError::new(format!("{prefix}.kind"), "missing")),
    };
    let role = match take_str(&mut obj, &prefix, "role")?.as_deref() {
        Some("crm") => Role::Crm,
        Some("marketing") => Role::Marketing,
        Some(other) => {
            return Err(KeyError::new(
                format!("{prefix}.role"),
                format!("unknown role {other:?} (expected crm or marketing)"),
            ));
        }
        None => return Err(KeyError::new(format!("{prefix}.role"), "missing")),
    };
    let create = match take_str(&mut obj, &prefix, "create_when")?.as_deref() {
        None => match role {
            // Marketing hands sales qualified leads: only MQL or later reaches the CRM.
            Role::Crm => CreatePolicy::FromStage(Stage::Mql),
            Role::Marketing => CreatePolicy::Always,
        },
        Some("always") => CreatePolicy::Always,
        Some("never") => CreatePolicy::Never,
        Some(stage) => CreatePolicy::FromStage(Stage::parse(stage).ok_or_else(|| {
            KeyError::new(
                format!("{prefix}.create_when"),
                format!("expected always, never or a stage name, got {stage:?}"),
            )
        })?),
    };
    let webhook = match obj.remove("webhook") {
        None => None,
        Some(v) => Some(system_webhook(&prefix, kind, v, env)?),
    };
    let rest = serde_json::Value::Object(obj);
    let bad = |e: serde_json::Error| KeyError::new(prefix.clone(), e.to_string());
    let connector = match kind {
        ConnectorKind::Salesforce => {
            let raw: SalesforceConfigRaw = serde_json::from_value(rest).map_err(bad)?;
            ConnectorSettings::Salesforce(SalesforceConfig::from_raw(raw, &prefix, env)?)
        }
        ConnectorKind::Hubspot => {
            let raw: HubspotConfigRaw = serde_json::from_value(rest).map_err(bad)?;
            ConnectorSettings::Hubspot(HubspotConfig::from_raw(raw, &prefix, env)?)
        }
    };
    Ok(SystemSettings {
        name: SystemName(name.to_string()),
        kind,
        role,
        create,
        connector,
        webhook,
    })
}

fn webhook_settings(raw: &WebhooksRaw) -> Result<WebhookSettings, KeyError> {
    let listen = if raw.enabled {
        Some(raw.listen.parse().map_err(|e| {
            KeyError::new("webhooks.listen", format!("not an address like 0.0.0.0:8088: {e}"))
        })?)
    } else {
        None
    };
    let public_url = if raw.public_url.trim().is_empty() {
        None
    } else {
        let u = url::Url::parse(raw.public_url.trim())
            .map_err(|e| KeyError::new("webhooks.public_url", format!("not a URL: {e}")))?;
        if !matches!(u.scheme(), "http" | "https") || u.query().is_some() {
            return Err(KeyError::new(
                "webhooks.public_url",
                "must be an http(s) base URL without a query, e.g. https://sync.example.com",
            ));
        }
        Some(u)
    };
    if raw.max_body_bytes < 1024 {
        return Err(KeyError::new("webhooks.max_body_bytes", "must be at least 1024"));
    }
    if raw.sweep_interval_secs == 0 {
        return Err(KeyError::new(
            "webhooks.sweep_interval_secs",
            "must be at least 1: polling stays on as a safety net",
        ));
    }
    Ok(WebhookSettings {
        listen,
        public_url,
        max_body_bytes: raw.max_body_bytes,
        sweep_interval: Duration::from_secs(raw.sweep_interval_secs),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HubspotWebhookRaw {
    client_secret_env: Option<String>,
    client_secret_file: Option<PathBuf>,
    previous_client_secret_env: Option<String>,
    previous_client_secret_file: Option<PathBuf>,
    #[serde(default)]
    allow_legacy_signatures: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SalesforceWebhookRaw {
    organization_id: String,
    secret_env: Option<String>,
    secret_file: Option<PathBuf>,
}

fn system_webhook(
    prefix: &str,
    kind: ConnectorKind,
    value: serde_json::Value,
    env: &HashMap<String, String>,
) -> Result<SystemWebhook, KeyError> {
    use crate::connectors::resolve_secret;
    let prefix = format!("{prefix}.webhook");
    let bad = |e: serde_json::Error| KeyError::new(prefix.clone(), e.to_string());
    let key = |k: &str| format!("{prefix}.{k}");
    Ok(match kind {
        ConnectorKind::Hubspot => {
            let raw: HubspotWebhookRaw = serde_json::from_value(value).map_err(bad)?;
            let mut client_secrets = vec![resolve_secret(
                &key("client_secret"),
                raw.client_secret_env.as_deref(),
                raw.client_secret_file.as_deref(),
                env,
            )?];
            if raw.previous_client_secret_env.is_some() || raw.previous_client_secret_file.is_some()
            {
                client_secrets.push(resolve_secret(
                    &key("previous_client_secret"),
                    raw.previous_client_secret_env.as_deref(),
                    raw.previous_client_secret_file.as_deref(),
                    env,
                )?);
            }
            SystemWebhook::Hubspot(crate::ingest::webhook::hubspot::HubspotVerifyConfig {
                client_secrets,
                allow_legacy: raw.allow_legacy_signatures,
            })
        }
        ConnectorKind::Salesforce => {
            let raw: SalesforceWebhookRaw = serde_json::from_value(value).map_err(bad)?;
            let org = raw.organization_id.trim();
            if !matches!(org.len(), 15 | 18) || !org.bytes().all(|b| b.is_ascii_alphanumeric()) {
                return Err(KeyError::new(
                    key("organization_id"),
                    "must be a 15 or 18 character Salesforce id (00D...)",
                ));
            }
            let secret = resolve_secret(
                &key("secret"),
                raw.secret_env.as_deref(),
                raw.secret_file.as_deref(),
                env,
            )?;
            if secrecy::ExposeSecret::expose_secret(&secret).len() < 16 {
                return Err(KeyError::new(key("secret"), "must be at least 16 characters"));
            }
            SystemWebhook::Salesforce {
                config: crate::ingest::webhook::salesforce::SalesforceOutboundConfig {
                    organization_id: org.to_string(),
                },
                secret,
            }
        }
    })
}

#[cfg(test)]
mod tests;
