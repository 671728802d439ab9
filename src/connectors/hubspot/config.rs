//! Placeholder config of the Hubspot connector (replaced when the connector lands).

use std::collections::HashMap;

use serde::Deserialize;

use crate::connectors::KeyError;

#[derive(Debug, Clone, Deserialize)]
pub struct HubspotConfigRaw {}

#[derive(Debug, Clone)]
pub struct HubspotConfig {}

impl HubspotConfig {
    /// # Errors
    /// Never in the placeholder.
    pub fn from_raw(
        _raw: HubspotConfigRaw,
        _prefix: &str,
        _env: &HashMap<String, String>,
    ) -> Result<HubspotConfig, KeyError> {
        Ok(HubspotConfig {})
    }
}
