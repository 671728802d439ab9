//! Reading closed-loop data (opportunities with their people, campaign touches, sales
//! activities) from a system, separate from the lead pipeline: its own trait, its own cursor,
//! read-only.
//!
//! A poll returns everything new or changed since the cursor, oldest first per object: each
//! opportunity with its complete current contact list (so a ledger can replace what it had),
//! and each touch and activity with a stable id (so storing it twice is harmless). The cursor is an
//! opaque string owned by the connector; the caller persists it with what the page produced.
//! Deletes are reported (`deleted: true`), never inferred from absence.

use std::future::Future;
use std::time::Duration;

use super::{AnyConnector, ConnectorError, Cursor};
use crate::domain::closed_loop::{Activity, CampaignTouch, Opportunity};

/// One page of closed-loop data.
#[derive(Debug, Default)]
pub struct ClosedLoopPage {
    pub opportunities: Vec<Opportunity>,
    pub touches: Vec<CampaignTouch>,
    /// Sales activities (Salesforce Tasks) on Leads and Contacts; empty for HubSpot.
    pub activities: Vec<Activity>,
    pub next_cursor: Cursor,
    /// `Duration::ZERO` when more is waiting; otherwise how long to wait before the next poll.
    pub poll_again_after: Duration,
}

/// A system that can report opportunities and campaign touches.
pub trait ClosedLoopSource: Send + Sync + 'static {
    /// Opportunities and touches changed after `cursor` (a `Cursor(None)` reads everything),
    /// and the cursor to continue from. A cursor of the lead pipeline is not valid here.
    fn poll_closed_loop(
        &self,
        cursor: &Cursor,
    ) -> impl Future<Output = Result<ClosedLoopPage, ConnectorError>> + Send;
}

impl ClosedLoopSource for AnyConnector {
    async fn poll_closed_loop(&self, cursor: &Cursor) -> Result<ClosedLoopPage, ConnectorError> {
        match self {
            AnyConnector::Salesforce(c) => c.poll_closed_loop(cursor).await,
            AnyConnector::Hubspot(c) => c.poll_closed_loop(cursor).await,
        }
    }
}
