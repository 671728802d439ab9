//! Both simulators plus the settings that point a sync engine at them: what `leadsync demo`,
//! `leadsync bench` and the integration tests share.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use super::hubspot::{HubspotSim, HubspotSimOptions};
use super::population::{Person, Presence};
use super::salesforce::{SalesforceSim, SalesforceSimOptions};
use crate::app::App;
use crate::domain::{RemoteId, SystemName};
use crate::settings::{Settings, SettingsError, Source};

/// The environment variables the demo settings read their secrets from.
pub const SF_SECRET_VAR: &str = "LEADSYNC_DEMO_SALESFORCE_SECRET";
pub const HS_TOKEN_VAR: &str = "LEADSYNC_DEMO_HUBSPOT_TOKEN";
/// The environment variables that hold the webhook secrets (HubSpot app client secret,
/// Salesforce endpoint secret) when [`Harness::webhook_env`] is used.
pub const HS_APP_SECRET_VAR: &str = "LEADSYNC_DEMO_HUBSPOT_APP_SECRET";
pub const SF_ENDPOINT_SECRET_VAR: &str = "LEADSYNC_DEMO_SALESFORCE_ENDPOINT_SECRET";

/// A simulated Salesforce (system `crm`) and HubSpot (system `marketing`), running.
pub struct Harness {
    pub salesforce: SalesforceSim,
    pub hubspot: HubspotSim,
    sf_secret: String,
    hs_token: String,
    /// Signs HubSpot webhooks (the app's client secret).
    pub hs_app_secret: String,
    /// Ends the Salesforce outbound message URL; only the endpoint knows it.
    pub sf_endpoint_secret: String,
}

/// How many records seeding put where.
#[derive(Debug, Default, Clone, Copy)]
pub struct Seeded {
    pub salesforce: usize,
    pub hubspot: usize,
}

impl Harness {
    /// Start both simulators on free loopback ports with fresh credentials.
    ///
    /// # Errors
    /// A port cannot be bound.
    pub async fn start(
        mut sf: SalesforceSimOptions,
        mut hs: HubspotSimOptions,
    ) -> std::io::Result<Harness> {
        let sf_secret = format!("sim-secret-{}", uuid::Uuid::new_v4().simple());
        let hs_token = format!("pat-na1-{}", uuid::Uuid::new_v4());
        sf.client_id = "leadsync-demo".into();
        sf.client_secret = sf_secret.clone();
        hs.token = hs_token.clone();
        let hs_app_secret = format!("app-secret-{}", uuid::Uuid::new_v4().simple());
        hs.webhooks.client_secret = hs_app_secret.clone();
        // An outbound message set up for leadsync sends every field leadsync reads, the
        // external id included, so that it needs no read call to use it.
        if !sf.outbound.fields.iter().any(|f| f == "Leadsync_Id__c") {
            sf.outbound.fields.push("Leadsync_Id__c".into());
        }
        let salesforce = SalesforceSim::new(sf);
        let hubspot = HubspotSim::new(hs);
        salesforce.start("127.0.0.1:0").await?;
        hubspot.start("127.0.0.1:0").await?;
        Ok(Harness {
            salesforce,
            hubspot,
            sf_secret,
            hs_token,
            hs_app_secret,
            sf_endpoint_secret: uuid::Uuid::new_v4().simple().to_string(),
        })
    }

    /// The private-app token the HubSpot simulator accepts, for tests that call its API as
    /// another integration or a script would (merges, archives).
    pub fn hubspot_token(&self) -> &str {
        &self.hs_token
    }

    /// Put people where their presence says, as imports would.
    ///
    /// # Errors
    /// A simulator refused a record (a bug in the generator).
    pub fn seed(&self, people: &[Person]) -> Result<Seeded, String> {
        let mut n = Seeded::default();
        for p in people {
            if p.presence != Presence::MarketingOnly {
                self.salesforce.insert("Lead", p.salesforce_lead(false))?;
                n.salesforce += 1;
                if p.sf_duplicate {
                    self.salesforce.insert("Lead", p.salesforce_lead(true))?;
                    n.salesforce += 1;
                }
            }
            if p.presence != Presence::CrmOnly {
                self.hubspot.insert(p.hubspot_contact())?;
                n.hubspot += 1;
                if p.hs_opt_out {
                    self.hubspot.ui_unsubscribe(&p.email);
                }
            }
        }
        Ok(n)
    }

    /// The environment that points settings at these simulators: base URLs through
    /// `LEADSYNC__...` overrides, secrets through the variables the settings name.
    pub fn env(&self, ledger: &Path) -> HashMap<String, String> {
        let mut env = HashMap::new();
        env.insert("LEADSYNC__SYSTEMS__CRM__LOGIN_URL".into(), self.salesforce.base_url());
        env.insert("LEADSYNC__SYSTEMS__MARKETING__BASE_URL".into(), self.hubspot.base_url());
        env.insert("LEADSYNC__LEDGER__PATH".into(), ledger.display().to_string());
        env.insert(SF_SECRET_VAR.into(), self.sf_secret.clone());
        env.insert(HS_TOKEN_VAR.into(), self.hs_token.clone());
        env
    }

    /// Overrides that turn on the webhook listener on a free loopback port for both systems,
    /// with the secrets this harness's simulators sign with, and the safety-net poll every
    /// `sweep_secs`.
    pub fn webhook_env(&self, sweep_secs: u64) -> HashMap<String, String> {
        let mut env = HashMap::new();
        env.insert("LEADSYNC__WEBHOOKS__ENABLED".into(), "true".into());
        env.insert("LEADSYNC__WEBHOOKS__LISTEN".into(), "127.0.0.1:0".into());
        env.insert("LEADSYNC__WEBHOOKS__SWEEP_INTERVAL_SECS".into(), sweep_secs.to_string());
        env.insert(
            "LEADSYNC__SYSTEMS__MARKETING__WEBHOOK__CLIENT_SECRET_ENV".into(),
            HS_APP_SECRET_VAR.into(),
        );
        env.insert(HS_APP_SECRET_VAR.into(), self.hs_app_secret.clone());
        env.insert(
            "LEADSYNC__SYSTEMS__CRM__WEBHOOK__ORGANIZATION_ID".into(),
            self.salesforce.organization_id(),
        );
        env.insert(
            "LEADSYNC__SYSTEMS__CRM__WEBHOOK__SECRET_ENV".into(),
            SF_ENDPOINT_SECRET_VAR.into(),
        );
        env.insert(SF_ENDPOINT_SECRET_VAR.into(), self.sf_endpoint_secret.clone());
        env
    }

    /// Make both simulators send their webhooks to a leadsync listening at `addr` (after
    /// seeding, as a real integration is switched on after the import).
    pub fn point_webhooks_at(&self, addr: std::net::SocketAddr) {
        self.hubspot.set_webhook_target(Some(format!("http://{addr}/webhooks/marketing")));
        self.salesforce.set_outbound_url(Some(format!(
            "http://{addr}/webhooks/crm/{}",
            self.sf_endpoint_secret
        )));
    }

    /// Settings from `source` (the embedded demo config by default) aimed at these simulators.
    /// `extra` overrides win over the harness's own.
    ///
    /// # Errors
    /// The configuration is invalid.
    pub fn settings(
        &self,
        source: Source<'_>,
        ledger: &Path,
        extra: &HashMap<String, String>,
    ) -> Result<Settings, SettingsError> {
        let mut env = self.env(ledger);
        env.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
        Settings::load(source, &env)
    }

    /// A record's properties as the vendor holds them now, read from the simulator's store
    /// (not through the connector under test).
    pub fn fetch(
        &self,
        system: &SystemName,
        remote: &RemoteId,
    ) -> Option<BTreeMap<String, Option<String>>> {
        match system.as_str() {
            "crm" => self.salesforce.get(&remote.object_type, &remote.id).map(|m| {
                m.into_iter()
                    .map(|(k, v)| {
                        let v = match v {
                            Value::Null => None,
                            Value::String(s) => Some(s),
                            Value::Bool(b) => Some(b.to_string()),
                            other => Some(other.to_string()),
                        };
                        (k, v)
                    })
                    .collect()
            }),
            "marketing" => self.hubspot.get(&remote.id),
            _ => None,
        }
    }
}

/// Wait until a webhook-fed engine is quiet: every system read to its end once, and nothing
/// pending in the notices, the inbox or the outbox for half a second; or until `timeout`.
/// (Its safety-net polls are too rare for [`wait_converged`].)
pub async fn wait_quiet(app: &App, timeout: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    let progress = app.progress();
    let names: Vec<SystemName> = progress.polled.keys().cloned().collect();
    let ledger = app.ledger();
    let mut quiet_rounds = 0;
    while tokio::time::Instant::now() < deadline {
        let caught_up = names.iter().all(|n| progress.caught_up_once(n));
        let quiet = caught_up && {
            let l = std::sync::Arc::clone(&ledger);
            let g = tokio::task::spawn_blocking(move || l.gauges()).await;
            matches!(g, Ok(Ok(g)) if g.systems.values().all(|s| {
                s.inbox_pending == 0 && s.outbox_pending == 0 && s.notices_pending == 0
            }))
        };
        if quiet {
            quiet_rounds += 1;
            if quiet_rounds >= 5 {
                return true;
            }
        } else {
            quiet_rounds = 0;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Wait until the engine has read every system through after this call began, has nothing
/// left to do, and has read back its own writes; or until `timeout`. Returns whether it
/// converged.
pub async fn wait_converged(app: &App, timeout: Duration) -> bool {
    let since = tokio::time::Instant::now();
    let deadline = since + timeout;
    let progress = app.progress();
    let ledger = app.ledger();
    let mut quiet_rounds = 0;
    while tokio::time::Instant::now() < deadline {
        // The in-memory check first: counting the backlog takes the ledger's lock.
        let quiet = progress.polled_through_since(since) && {
            let l = std::sync::Arc::clone(&ledger);
            let backlog = tokio::task::spawn_blocking(move || l.backlog()).await;
            matches!(backlog, Ok(Ok((0, 0))))
        };
        if quiet {
            quiet_rounds += 1;
            // Two looks in a row, so a poll that just landed gets reconciled first.
            if quiet_rounds >= 2 {
                return true;
            }
        } else {
            quiet_rounds = 0;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}
