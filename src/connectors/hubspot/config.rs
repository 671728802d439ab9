//! Settings of one HubSpot system: the raw TOML shape and its validated form.
//!
//! Validation happens once, here; every error names the full config key so an operator can
//! find it (`systems.marketing.page_size: ...`).

use std::collections::HashMap;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;
use url::Url;

use crate::connectors::contract_props::ContractProps;
use crate::connectors::field_map::{FieldMap, FieldMapRaw};
use crate::connectors::{KeyError, http, resolve_secret};
use crate::domain::Field;
use crate::retry::RetryPolicy;

/// Largest `limit` the search endpoint accepts (api-facts §1.4).
pub const SEARCH_PAGE_MAX: u32 = 200;

/// `[systems.NAME]` for `kind = "hubspot"`, as written in config.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubspotConfigRaw {
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// Path segment in `/crm/{api_version}/objects/contacts`.
    #[serde(default = "default_api_version")]
    pub api_version: String,
    /// Environment variable holding the private app token.
    pub token_env: Option<String>,
    /// File holding the private app token (e.g. a systemd credential).
    pub token_file: Option<std::path::PathBuf>,
    #[serde(default = "default_poll_interval_secs")]
    pub poll_interval_secs: u64,
    /// How far before the watermark each poll cycle starts again, because search is eventually
    /// consistent.
    #[serde(default = "default_overlap_secs")]
    pub overlap_secs: u64,
    #[serde(default = "default_page_size")]
    pub page_size: u32,
    /// Minimum spacing of search calls (search is limited to about 4 per second per token).
    #[serde(default = "default_search_min_interval_ms")]
    pub search_min_interval_ms: u64,
    #[serde(default = "default_request_timeout_secs")]
    pub request_timeout_secs: u64,
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Field mapping; `FieldMap::hubspot_contact_default()` when absent.
    #[serde(default)]
    pub mapping: Option<FieldMapRaw>,
    /// Read the whole archived-contacts list once every this many caught-up polls (and once
    /// after the first catch-up), to learn of deletes no webhook reported; 0 turns it off.
    #[serde(default = "default_archived_sweep_every")]
    pub archived_sweep_every: u32,
}

fn default_base_url() -> String {
    "https://api.hubapi.com".into()
}
fn default_api_version() -> String {
    "v3".into()
}
fn default_poll_interval_secs() -> u64 {
    30
}
fn default_overlap_secs() -> u64 {
    30
}
fn default_page_size() -> u32 {
    SEARCH_PAGE_MAX
}
fn default_search_min_interval_ms() -> u64 {
    250
}
fn default_request_timeout_secs() -> u64 {
    30
}
fn default_max_attempts() -> u32 {
    6
}
/// Search never returns archived contacts, so deletes are learnt from webhooks
/// (`contact.deletion`) or from this sweep of `GET …/contacts?archived=true`, 100 per call in
/// the standard (not the search) rate window. Every 120 caught-up polls is hourly at the
/// default 30 s interval: a portal with 100,000 archived contacts (HubSpot keeps them 90
/// days) spends 1,000 calls an hour, 24,000 a day, under 10 % of the smallest daily
/// allowance (250,000); every 12th poll would spend the whole allowance on such a portal.
fn default_archived_sweep_every() -> u32 {
    120
}

impl Default for HubspotConfigRaw {
    fn default() -> Self {
        HubspotConfigRaw {
            base_url: default_base_url(),
            api_version: default_api_version(),
            token_env: None,
            token_file: None,
            poll_interval_secs: default_poll_interval_secs(),
            overlap_secs: default_overlap_secs(),
            page_size: default_page_size(),
            search_min_interval_ms: default_search_min_interval_ms(),
            request_timeout_secs: default_request_timeout_secs(),
            max_attempts: default_max_attempts(),
            mapping: None,
            archived_sweep_every: default_archived_sweep_every(),
        }
    }
}

/// Validated settings of one HubSpot system. Fields are public so tests and the demo can
/// tune them (for example a faster retry policy) after validation.
#[derive(Debug, Clone)]
pub struct HubspotConfig {
    pub base_url: Url,
    pub api_version: String,
    /// The private app token; never printed.
    pub token: SecretString,
    pub poll_interval: Duration,
    pub overlap: Duration,
    pub page_size: u32,
    pub search_min_interval: Duration,
    pub request_timeout: Duration,
    /// Built from `max_attempts` with the crate's default intervals.
    pub retry: RetryPolicy,
    pub map: FieldMap,
    /// Caught-up polls between sweeps of the archived list; 0: never.
    pub archived_sweep_every: u32,
    /// The lead contract's custom fields read from this system (set by the settings from
    /// `[contract.mapping.custom_fields]`; empty without a contract).
    pub contract: ContractProps,
}

impl HubspotConfig {
    /// Validate `raw`; `prefix` is the config path of this system (`systems.marketing`) and
    /// `env` the process environment (passed in, never read here).
    ///
    /// # Errors
    /// The first invalid key, named in full.
    pub fn from_raw(
        raw: HubspotConfigRaw,
        prefix: &str,
        env: &HashMap<String, String>,
    ) -> Result<HubspotConfig, KeyError> {
        let key = |k: &str| format!("{prefix}.{k}");
        let base_url =
            http::parse_base_url(&raw.base_url).map_err(|p| KeyError::new(key("base_url"), p))?;
        let api_version = raw.api_version.trim().to_string();
        if api_version.is_empty()
            || !api_version.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        {
            return Err(KeyError::new(
                key("api_version"),
                "must be one path segment such as \"v3\" or \"2026-03\"",
            ));
        }
        let token = resolve_secret(
            &key("token"),
            raw.token_env.as_deref(),
            raw.token_file.as_deref(),
            env,
        )?;
        if raw.poll_interval_secs == 0 {
            return Err(KeyError::new(key("poll_interval_secs"), "must be at least 1"));
        }
        if !(1..=SEARCH_PAGE_MAX).contains(&raw.page_size) {
            return Err(KeyError::new(
                key("page_size"),
                format!("must be between 1 and {SEARCH_PAGE_MAX} (the search limit)"),
            ));
        }
        if raw.request_timeout_secs == 0 {
            return Err(KeyError::new(key("request_timeout_secs"), "must be at least 1"));
        }
        if raw.max_attempts == 0 {
            return Err(KeyError::new(key("max_attempts"), "must be at least 1"));
        }
        let mapping_raw = raw.mapping.unwrap_or_else(FieldMap::hubspot_contact_default);
        let map = FieldMap::from_raw(&mapping_raw, &key("mapping"))?;
        crate::connectors::consent::check_map(&map, &key("mapping"), &[super::wire::EMAIL_OPTOUT])?;
        // Creates are upserts keyed by email, and polled changes are useless to the matcher
        // without it.
        if !map.maps(Field::Email) {
            return Err(KeyError::new(
                key("mapping.fields"),
                "email must be mapped (creates are upserts by email)",
            ));
        }
        Ok(HubspotConfig {
            base_url,
            api_version,
            token,
            poll_interval: Duration::from_secs(raw.poll_interval_secs),
            overlap: Duration::from_secs(raw.overlap_secs),
            page_size: raw.page_size,
            search_min_interval: Duration::from_millis(raw.search_min_interval_ms),
            request_timeout: Duration::from_secs(raw.request_timeout_secs),
            retry: RetryPolicy { max_attempts: raw.max_attempts, ..RetryPolicy::default() },
            map,
            archived_sweep_every: raw.archived_sweep_every,
            contract: ContractProps::default(),
        })
    }
}
