//! Placeholder config of the Salesforce connector (replaced when the connector lands).

use std::collections::HashMap;

use serde::Deserialize;

use crate::connectors::KeyError;

#[derive(Debug, Clone, Deserialize)]
pub struct SalesforceConfigRaw {}

#[derive(Debug, Clone)]
pub struct SalesforceConfig {}

impl SalesforceConfig {
    /// # Errors
    /// Never in the placeholder.
    pub fn from_raw(
        _raw: SalesforceConfigRaw,
        _prefix: &str,
        _env: &HashMap<String, String>,
    ) -> Result<SalesforceConfig, KeyError> {
        Ok(SalesforceConfig {})
    }
}
