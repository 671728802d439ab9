//! `[closed_loop]` settings: whether opportunities and campaign touches are read into the
//! ledger, how often, and from which systems.
//!
//! Off by default: reading them needs API rights a lead sync does not (Salesforce read access
//! to Opportunity, OpportunityContactRole, Campaign, CampaignMember and Task; the HubSpot
//! `crm.objects.deals.read` scope), and without those every poll would fail. Turning it on
//! costs four to five extra read calls per system and poll interval. It is also what reads
//! Salesforce Tasks, the contact attempts the SLA clocks count.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::Deserialize;

use crate::connectors::KeyError;
use crate::domain::SystemName;

/// As written in the TOML.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClosedLoopRaw {
    enabled: bool,
    /// Wait between two polls once a system has nothing more to read.
    poll_interval_secs: u64,
    /// Wait after a failed poll (twelve times this after an auth, config or rejected error,
    /// which an operator has to fix).
    error_backoff_secs: u64,
    /// The systems to read; default every configured system.
    systems: Option<Vec<String>>,
}

impl Default for ClosedLoopRaw {
    fn default() -> Self {
        ClosedLoopRaw {
            enabled: false,
            poll_interval_secs: 300,
            error_backoff_secs: 30,
            systems: None,
        }
    }
}

/// Validated `[closed_loop]` settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClosedLoopSettings {
    pub enabled: bool,
    pub poll_interval: Duration,
    pub error_backoff: Duration,
    /// `None`: every configured system.
    pub systems: Option<BTreeSet<SystemName>>,
}

impl Default for ClosedLoopSettings {
    fn default() -> Self {
        ClosedLoopSettings {
            enabled: false,
            poll_interval: Duration::from_secs(300),
            error_backoff: Duration::from_secs(30),
            systems: None,
        }
    }
}

impl ClosedLoopSettings {
    /// Whether closed-loop data is read from this system.
    pub fn polls(&self, system: &SystemName) -> bool {
        self.enabled && self.systems.as_ref().is_none_or(|s| s.contains(system))
    }
}

impl ClosedLoopRaw {
    /// Check the values; `key` is this table's name (`closed_loop`), `configured` the names of
    /// the configured systems.
    ///
    /// # Errors
    /// A zero interval, or a system name that is not configured.
    pub fn validate(
        &self,
        key: &str,
        configured: &[SystemName],
    ) -> Result<ClosedLoopSettings, KeyError> {
        if self.poll_interval_secs == 0 {
            return Err(KeyError::new(format!("{key}.poll_interval_secs"), "must be at least 1"));
        }
        if self.error_backoff_secs == 0 {
            return Err(KeyError::new(format!("{key}.error_backoff_secs"), "must be at least 1"));
        }
        let systems = match &self.systems {
            None => None,
            Some(names) => {
                let mut set = BTreeSet::new();
                for n in names {
                    let name = SystemName(n.clone());
                    if !configured.contains(&name) {
                        return Err(KeyError::new(
                            format!("{key}.systems"),
                            format!("no system is named {n:?}"),
                        ));
                    }
                    set.insert(name);
                }
                Some(set)
            }
        };
        Ok(ClosedLoopSettings {
            enabled: self.enabled,
            poll_interval: Duration::from_secs(self.poll_interval_secs),
            error_backoff: Duration::from_secs(self.error_backoff_secs),
            systems,
        })
    }
}
