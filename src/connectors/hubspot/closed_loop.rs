//! placeholder
use super::HubspotConnector;
use crate::connectors::closed_loop::{ClosedLoopPage, ClosedLoopSource};
use crate::connectors::{ConnectorError, Cursor};
impl ClosedLoopSource for HubspotConnector {
    async fn poll_closed_loop(&self, _cursor: &Cursor) -> Result<ClosedLoopPage, ConnectorError> {
        Err(ConnectorError::Config("TODO".into()))
    }
}
