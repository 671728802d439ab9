//! Hubspot connector (placeholder until the connector lands).

pub mod config;
pub use config::{HubspotConfig, HubspotConfigRaw};

use std::sync::Arc;

use crate::connectors::{ApiCounters, Connector, ConnectorError, Cursor, Limits, Page};
use crate::domain::{Change, ConnectorKind, PushOutcome, PushRecord, RemoteId};

pub struct HubspotConnector {
    counters: Arc<ApiCounters>,
}

impl HubspotConnector {
    /// # Errors
    /// Never in the placeholder.
    pub fn new(_cfg: config::HubspotConfig) -> Result<HubspotConnector, ConnectorError> {
        Ok(HubspotConnector { counters: Arc::default() })
    }

    pub fn field_map(&self) -> &crate::connectors::FieldMap {
        unimplemented!()
    }
}

impl Connector for HubspotConnector {
    fn kind(&self) -> ConnectorKind {
        ConnectorKind::Hubspot
    }
    fn limits(&self) -> Limits {
        Limits { push_batch_max: 100, fetch_batch_max: 100 }
    }
    async fn poll_changes(&self, _cursor: &Cursor) -> Result<Page, ConnectorError> {
        Err(ConnectorError::Config("not built yet".into()))
    }
    async fn fetch(&self, _ids: &[RemoteId]) -> Result<Vec<Change>, ConnectorError> {
        Err(ConnectorError::Config("not built yet".into()))
    }
    async fn push(&self, _batch: &[PushRecord]) -> Result<Vec<PushOutcome>, ConnectorError> {
        Err(ConnectorError::Config("not built yet".into()))
    }
    async fn healthcheck(&self) -> Result<(), ConnectorError> {
        Err(ConnectorError::Config("not built yet".into()))
    }
    fn counters(&self) -> Arc<ApiCounters> {
        Arc::clone(&self.counters)
    }
}
