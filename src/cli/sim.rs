//! `leadsync sim salesforce|hubspot --listen ADDR`: a simulator on its own, for staging runs
//! and for trying a configuration by hand.

use std::collections::HashMap;

use clap::{Args, ValueEnum};

use super::exit;
use crate::shutdown;
use crate::sim::hubspot::{HubspotSim, HubspotSimOptions};
use crate::sim::population::{self, Presence};
use crate::sim::salesforce::{SalesforceSim, SalesforceSimOptions};

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
}

pub async fn run(args: SimArgs, _env: &HashMap<String, String>) -> u8 {
    let people = population::generate(args.leads, args.seed);
    let started = match args.vendor {
        Vendor::Salesforce => {
            let sim = SalesforceSim::new(SalesforceSimOptions {
                client_id: args.client_id.clone(),
                client_secret: args.client_secret.clone(),
                ..SalesforceSimOptions::default()
            });
            for p in people.iter().filter(|p| p.presence != Presence::MarketingOnly) {
                if let Err(e) = sim.insert("Lead", p.salesforce_lead(false)) {
                    eprintln!("leadsync: seeding failed: {e}");
                    return exit::SOFTWARE;
                }
            }
            sim.start(&args.listen).await.map(|a| (a, "salesforce"))
        }
        Vendor::Hubspot => {
            let sim = HubspotSim::new(HubspotSimOptions {
                token: args.token.clone(),
                ..HubspotSimOptions::default()
            });
            for p in people.iter().filter(|p| p.presence != Presence::CrmOnly) {
                if let Err(e) = sim.insert(p.hubspot_contact()) {
                    eprintln!("leadsync: seeding failed: {e}");
                    return exit::SOFTWARE;
                }
            }
            sim.start(&args.listen).await.map(|a| (a, "hubspot"))
        }
    };
    match started {
        Ok((addr, name)) => {
            println!("{name} simulator listening on http://{addr}");
            match shutdown::signal().await {
                Ok(_) | Err(_) => exit::OK,
            }
        }
        Err(e) => {
            eprintln!("leadsync: cannot listen on {}: {e}", args.listen);
            exit::IOERR
        }
    }
}
