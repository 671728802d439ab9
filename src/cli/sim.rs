//! `leadsync sim salesforce|hubspot --listen ADDR`: a simulator on its own, for staging runs
//! and for trying a configuration by hand.

use std::collections::HashMap;

use clap::{Args, ValueEnum};

use super::exit;
use crate::shutdown;
use crate::sim::hubspot::{HubspotSim, HubspotSimOptions, HubspotWebhookOptions};
use crate::sim::population::{self, Presence};
use crate::sim::salesforce::{SalesforceOutboundOptions, SalesforceSim, SalesforceSimOptions};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Vendor {
    Salesforce,
    Hubspot,
}

#[derive(Debug, Args)]
pub struct SimArgs {
    pub vendor: Vendor,
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub listen: String,
    /// Seed this many generated people (those the vendor would hold).
    #[arg(long, default_value_t = 0)]
    pub leads: usize,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Salesforce connected-app client id.
    #[arg(long, default_value = "leadsync-sim")]
    pub client_id: String,
    /// Salesforce client secret (or the environment variable LEADSYNC_SIM_SECRET).
    #[arg(long, env = "LEADSYNC_SIM_SECRET", default_value = "sim-secret", hide_env_values = true)]
    pub client_secret: String,
    /// HubSpot private-app token (or the environment variable LEADSYNC_SIM_TOKEN).
    #[arg(long, env = "LEADSYNC_SIM_TOKEN", default_value = "pat-na1-sim", hide_env_values = true)]
    pub token: String,
    /// HubSpot: POST app webhooks (v3-signed event batches) to this URL.
    #[arg(long)]
    pub webhook_target: Option<String>,
    /// HubSpot: the app client secret that signs webhooks (or LEADSYNC_SIM_WEBHOOK_SECRET).
    #[arg(
        long,
        env = "LEADSYNC_SIM_WEBHOOK_SECRET",
        default_value = "sim-app-client-secret",
        hide_env_values = true
    )]
    pub webhook_secret: String,
    /// HubSpot: multiply webhook retry delays by this (1.0 = HubSpot's ~24 h schedule).
    #[arg(long, default_value_t = 1.0)]
    pub webhook_time_scale: f64,
    /// Salesforce: POST Lead outbound messages (SOAP) to this URL; `user:pass@` is sent as
    /// basic auth.
    #[arg(long)]
    pub outbound_url: Option<String>,
    /// Salesforce: multiply outbound message retry delays by this (1.0 = real time).
    #[arg(long, default_value_t = 1.0)]
    pub outbound_time_scale: f64,
}

pub async fn run(args: SimArgs, _env: &HashMap<String, String>) -> u8 {
    let people = population::generate(args.leads, args.seed);
    let started = match args.vendor {
        Vendor::Salesforce => {
            let sim = SalesforceSim::new(SalesforceSimOptions {
                client_id: args.client_id.clone(),
                client_secret: args.client_secret.clone(),
                outbound: SalesforceOutboundOptions {
                    time_scale: args.outbound_time_scale,
                    ..SalesforceOutboundOptions::default()
                },
                ..SalesforceSimOptions::default()
            });
            for p in people.iter().filter(|p| p.presence != Presence::MarketingOnly) {
                if let Err(e) = sim.insert("Lead", p.salesforce_lead(false)) {
                    eprintln!("leadsync: seeding failed: {e}");
                    return exit::SOFTWARE;
                }
            }
            // Seeded leads stand for data the org already had: they fire no outbound messages.
            sim.set_outbound_url(args.outbound_url.clone());
            let stop: Box<dyn Fn()> = Box::new({
                let sim = sim.clone();
                move || sim.stop()
            });
            sim.start(&args.listen).await.map(|a| (a, "salesforce", stop))
        }
        Vendor::Hubspot => {
            let sim = HubspotSim::new(HubspotSimOptions {
                token: args.token.clone(),
                webhooks: HubspotWebhookOptions {
                    client_secret: args.webhook_secret.clone(),
                    time_scale: args.webhook_time_scale,
                    ..HubspotWebhookOptions::default()
                },
                ..HubspotSimOptions::default()
            });
            for p in people.iter().filter(|p| p.presence != Presence::CrmOnly) {
                if let Err(e) = sim.insert(p.hubspot_contact()) {
                    eprintln!("leadsync: seeding failed: {e}");
                    return exit::SOFTWARE;
                }
            }
            // Seeded contacts stand for data the portal already had: they fire no webhooks.
            sim.set_webhook_target(args.webhook_target.clone());
            let stop: Box<dyn Fn()> = Box::new({
                let sim = sim.clone();
                move || sim.stop()
            });
            sim.start(&args.listen).await.map(|a| (a, "hubspot", stop))
        }
    };
    match started {
        Ok((addr, name, stop)) => {
            println!("{name} simulator listening on http://{addr}");
            let _ = shutdown::signal().await;
            // Stops serving and webhook delivery; queued deliveries are abandoned.
            stop();
            exit::OK
        }
        Err(e) => {
            eprintln!("leadsync: cannot listen on {}: {e}", args.listen);
            exit::IOERR
        }
    }
}
