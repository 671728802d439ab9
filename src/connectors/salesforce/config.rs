//! Salesforce settings: the raw serde shape read from `[systems.<name>]` and the validated
//! [`SalesforceConfig`] that builds the connector.
//!
//! Everything is checked once here, so the client can trust what it gets: URLs, the API
//! version, field names (they are pasted into SOQL, so they must be plain identifiers), the
//! mapping and the secret.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::connectors::contract_props::ContractProps;
use crate::connectors::field_map::{FieldMap, FieldMapRaw};
use crate::connectors::{KeyError, http, resolve_secret};
use crate::retry::RetryPolicy;

/// The connector's settings as written in config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SalesforceConfigRaw {
    /// The org's My Domain URL, which hosts the token endpoint (client credentials must go to
    /// My Domain, not login.salesforce.com), e.g. `https://acme.my.salesforce.com`.
    pub login_url: String,
    /// REST API version, e.g. `v62.0`.
    #[serde(default = "default_api_version")]
    pub api_version: String,
    /// The connected app's consumer key.
    pub client_id: String,
    /// Name of the environment variable holding the consumer secret.
    pub client_secret_env: Option<String>,
    /// File holding the consumer secret (e.g. a systemd credential).
    pub client_secret_file: Option<PathBuf>,
    /// Older single-object form of `objects` (`object = "Lead"` means `objects = ["Lead"]`).
    /// Give one or the other.
    #[serde(default)]
    pub object: Option<String>,
    /// The sObjects to poll and update: `Lead` and/or `Contact` (default both). Creates are
    /// always Leads; a Contact comes from converting a lead.
    #[serde(default)]
    pub objects: Option<Vec<String>>,
    /// Custom External ID field that holds the ledger id; creates upsert on it so a retried
    /// create never duplicates. It is read on every synced object, so when Contact is synced
    /// the org needs the field on Contact too (a lead field mapping can then carry the key
    /// over on conversion).
    #[serde(default = "default_external_id_field")]
    pub external_id_field: String,
    /// Wait between polls once caught up.
    #[serde(default = "default_poll_interval_secs")]
    pub poll_interval_secs: u64,
    /// How far behind the watermark each caught-up poll re-reads, for transactions that
    /// commit after later ones were already visible.
    #[serde(default = "default_overlap_secs")]
    pub overlap_secs: u64,
    /// SOQL `LIMIT` per poll query (200..=2000).
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    #[serde(default = "default_request_timeout_secs")]
    pub request_timeout_secs: u64,
    /// Attempts per HTTP call, the first included.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Field mapping of Lead; defaults to `FieldMap::salesforce_lead_default()`.
    #[serde(default)]
    pub mapping: Option<FieldMapRaw>,
    /// Field mapping of Contact; defaults to `FieldMap::salesforce_contact_default()`.
    #[serde(default)]
    pub contact_mapping: Option<FieldMapRaw>,
}

fn default_api_version() -> String {
    "v62.0".into()
}
/// The sObjects the connector knows, in the order they are polled.
pub(super) const KNOWN_OBJECTS: [&str; 2] = ["Lead", "Contact"];
fn default_external_id_field() -> String {
    "Leadsync_Id__c".into()
}
fn default_poll_interval_secs() -> u64 {
    30
}
fn default_overlap_secs() -> u64 {
    5
}
fn default_page_size() -> u32 {
    2000
}
fn default_request_timeout_secs() -> u64 {
    30
}
fn default_max_attempts() -> u32 {
    6
}

/// Validated settings. Build with [`SalesforceConfig::from_raw`].
#[derive(Debug, Clone)]
pub struct SalesforceConfig {
    pub(super) login_url: Url,
    pub(super) api_version: String,
    pub(super) client_id: String,
    pub(super) client_secret: secrecy::SecretString,
    /// The synced objects (canonical casing, no repeats) and their mappings.
    pub(super) objects: Vec<(String, FieldMap)>,
    pub(super) external_id_field: String,
    pub(super) poll_interval: Duration,
    pub(super) overlap: Duration,
    pub(super) page_size: u32,
    pub(super) request_timeout: Duration,
    pub(super) retry: RetryPolicy,
    /// The lead contract's custom fields read from every synced object (empty without one).
    pub(super) contract: ContractProps,
}

/// Fields the connector reads and writes itself; a mapping may not claim them.
const RESERVED: [&str; 6] =
    ["Id", "SystemModstamp", "IsDeleted", "MasterRecordId", "IsConverted", "ConvertedContactId"];

impl SalesforceConfig {
    /// Validate raw settings. `prefix` is the config path of this system (e.g. `systems.crm`);
    /// every error names the full key at fault.
    ///
    /// # Errors
    /// A [`KeyError`] for the first invalid key: insecure or malformed `login_url`, an
    /// `api_version` not shaped like `v62.0`, a `page_size` outside 200..=2000, a zero
    /// `poll_interval_secs`, both `object` and `objects`, an object other than `Lead` and
    /// `Contact` (or one named twice, or none), a field name that is not a plain identifier,
    /// an invalid mapping, or a secret that cannot be resolved.
    pub fn from_raw(
        raw: SalesforceConfigRaw,
        prefix: &str,
        env: &HashMap<String, String>,
    ) -> Result<SalesforceConfig, KeyError> {
        let key = |k: &str| format!("{prefix}.{k}");
        let login_url =
            http::parse_base_url(&raw.login_url).map_err(|p| KeyError::new(key("login_url"), p))?;
        if !is_api_version(&raw.api_version) {
            return Err(KeyError::new(
                key("api_version"),
                format!("{:?} is not a REST API version like \"v62.0\"", raw.api_version),
            ));
        }
        if raw.client_id.trim().is_empty() {
            return Err(KeyError::new(key("client_id"), "must not be empty"));
        }
        let names = object_names(raw.object.as_deref(), raw.objects.as_deref(), &key)?;
        if !is_identifier(&raw.external_id_field) {
            return Err(KeyError::new(
                key("external_id_field"),
                "must be a field API name (letters, digits, underscores), e.g. Leadsync_Id__c",
            ));
        }
        if RESERVED.iter().any(|r| r.eq_ignore_ascii_case(&raw.external_id_field)) {
            return Err(KeyError::new(
                key("external_id_field"),
                "must be a custom External ID field, not a system field",
            ));
        }
        if raw.poll_interval_secs == 0 {
            return Err(KeyError::new(key("poll_interval_secs"), "must be at least 1"));
        }
        if !(200..=2000).contains(&raw.page_size) {
            return Err(KeyError::new(
                key("page_size"),
                format!("{} is outside 200..=2000", raw.page_size),
            ));
        }
        if raw.request_timeout_secs == 0 {
            return Err(KeyError::new(key("request_timeout_secs"), "must be at least 1"));
        }
        if raw.max_attempts == 0 {
            return Err(KeyError::new(key("max_attempts"), "must be at least 1"));
        }
        let mut objects = Vec::with_capacity(names.len());
        for name in names {
            let (map_key, default): (&str, fn() -> FieldMapRaw) = if name == "Lead" {
                ("mapping", FieldMap::salesforce_lead_default)
            } else {
                ("contact_mapping", FieldMap::salesforce_contact_default)
            };
            let map_raw = if name == "Lead" { &raw.mapping } else { &raw.contact_mapping };
            let map_raw = map_raw.clone().unwrap_or_else(default);
            let map = validate_map(&map_raw, &key(map_key), &raw.external_id_field)?;
            objects.push((name.to_string(), map));
        }
        let client_secret = resolve_secret(
            &key("client_secret"),
            raw.client_secret_env.as_deref(),
            raw.client_secret_file.as_deref(),
            env,
        )?;
        Ok(SalesforceConfig {
            login_url,
            api_version: raw.api_version,
            client_id: raw.client_id,
            client_secret,
            objects,
            external_id_field: raw.external_id_field,
            poll_interval: Duration::from_secs(raw.poll_interval_secs),
            overlap: Duration::from_secs(raw.overlap_secs),
            page_size: raw.page_size,
            request_timeout: Duration::from_secs(raw.request_timeout_secs),
            retry: RetryPolicy { max_attempts: raw.max_attempts, ..RetryPolicy::default() },
            contract: ContractProps::default(),
        })
    }

    /// The lead contract's custom fields this system is read with.
    pub fn contract_props(&self) -> &ContractProps {
        &self.contract
    }

    /// Read the lead contract's custom fields from (and write its stage-entry dates to)
    /// every synced object, each through the field `props` maps it to. Check each property
    /// with [`SalesforceConfig::contract_property_problem`] first. A field the org lacks is
    /// Salesforce's `INVALID_FIELD` on the first query or write (`leadsync check` shows it),
    /// not a silent gap.
    pub fn set_contract_props(&mut self, props: ContractProps) {
        self.contract = props;
    }

    /// Why `prop` cannot be a contract property of this system: the names are pasted into
    /// SOQL and JSON, so only plain field API names are accepted, and never one the connector
    /// manages.
    pub fn contract_property_problem(&self, prop: &str) -> Option<String> {
        if !is_identifier(prop) {
            return Some("must be a field API name (letters, digits, underscores)".into());
        }
        if RESERVED.iter().any(|r| r.eq_ignore_ascii_case(prop))
            || prop.eq_ignore_ascii_case(&self.external_id_field)
        {
            return Some(format!("{prop} is managed by the connector and cannot be mapped"));
        }
        None
    }

    /// Replace the retry policy (tests and simulators want short backoffs). `max_attempts`
    /// from config is overridden too.
    #[must_use]
    pub fn with_retry_policy(mut self, policy: RetryPolicy) -> SalesforceConfig {
        self.retry = policy;
        self
    }

    pub fn poll_interval(&self) -> Duration {
        self.poll_interval
    }

    /// The synced object types, in polling order.
    pub fn objects(&self) -> impl Iterator<Item = &str> {
        self.objects.iter().map(|(name, _)| name.as_str())
    }
}

/// The object list from `object` (older single form) or `objects`, canonically cased.
fn object_names(
    object: Option<&str>,
    objects: Option<&[String]>,
    key: &dyn Fn(&str) -> String,
) -> Result<Vec<&'static str>, KeyError> {
    let (list, k): (Vec<&str>, String) = match (object, objects) {
        (Some(_), Some(_)) => {
            return Err(KeyError::new(key("objects"), "give either object or objects, not both"));
        }
        (Some(one), None) => (vec![one], key("object")),
        (None, Some(many)) => (many.iter().map(String::as_str).collect(), key("objects")),
        (None, None) => (KNOWN_OBJECTS.to_vec(), key("objects")),
    };
    if list.is_empty() {
        return Err(KeyError::new(k, "must name at least one object"));
    }
    let mut out: Vec<&'static str> = Vec::with_capacity(list.len());
    for name in list {
        let Some(known) = KNOWN_OBJECTS.iter().find(|o| o.eq_ignore_ascii_case(name)) else {
            return Err(KeyError::new(
                k,
                format!("{name:?} is not supported (expected \"Lead\" and/or \"Contact\")"),
            ));
        };
        if out.contains(known) {
            return Err(KeyError::new(k, format!("{known} is named twice")));
        }
        out.push(known);
    }
    Ok(out)
}

/// Validate one object's mapping. Mapped properties are pasted into SOQL and JSON keys: only
/// plain identifiers, and never the fields this connector manages itself.
fn validate_map(
    map_raw: &FieldMapRaw,
    map_prefix: &str,
    external_id_field: &str,
) -> Result<FieldMap, KeyError> {
    let map = FieldMap::from_raw(map_raw, map_prefix)?;
    crate::connectors::consent::check_map(&map, map_prefix, &[super::wire::OPT_OUT_FIELD])?;
    for (name, prop) in &map_raw.fields {
        let k = format!("{map_prefix}.fields.{name}");
        if !is_identifier(prop) {
            return Err(KeyError::new(
                k,
                "must be a field API name (letters, digits, underscores)",
            ));
        }
        if RESERVED.iter().any(|r| r.eq_ignore_ascii_case(prop))
            || prop.eq_ignore_ascii_case(external_id_field)
        {
            return Err(KeyError::new(
                k,
                format!("{prop} is managed by the connector and cannot be mapped"),
            ));
        }
    }
    Ok(map)
}

/// `vNN.N` (one or more digits each side).
fn is_api_version(s: &str) -> bool {
    let Some(rest) = s.strip_prefix('v') else { return false };
    let Some((major, minor)) = rest.split_once('.') else { return false };
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    digits(major) && digits(minor)
}

/// A Salesforce field API name: a letter, then letters, digits and underscores.
pub(super) fn is_identifier(s: &str) -> bool {
    let mut bytes = s.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}
