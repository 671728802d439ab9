//! `leadsync serve`: the daemon.

use std::collections::HashMap;
use std::path::Path;

use super::{exit, load_settings};
use crate::app::App;
use crate::{shutdown, telemetry};

pub async fn run(config: &Path, env: &HashMap<String, String>) -> u8 {
    let settings = match load_settings(config, env) {
        Ok(s) => s,
        Err(code) => return code,
    };
    telemetry::init(
        settings.log.format,
        &settings.log.level,
        env.get("RUST_LOG").map(String::as_str),
    );
    let app = match App::build(&settings) {
        Ok(a) => a,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "cannot start");
            eprintln!("leadsync: cannot start: {e:#}");
            return exit::IOERR;
        }
    };
    match app.bind_webhooks().await {
        Ok(Some(addr)) => tracing::info!(listen = %addr, "webhooks: POST /webhooks/<system>"),
        Ok(None) => {}
        Err(e) => {
            let addr = settings.webhooks.listen.map(|a| a.to_string()).unwrap_or_default();
            eprintln!("leadsync: cannot listen on webhooks.listen {addr}: {e}");
            return exit::CONFIG;
        }
    }
    let (trigger, shutdown) = shutdown::channel();
    if let Some(addr) = settings.admin.listen {
        let listener = match tokio::net::TcpListener::bind(addr).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("leadsync: cannot listen on admin.listen {addr}: {e}");
                return exit::CONFIG;
            }
        };
        let handle = match crate::metrics::install() {
            Ok(h) => h,
            Err(e) => {
                eprintln!("leadsync: cannot install metrics: {e}");
                return exit::SOFTWARE;
            }
        };
        let source = std::sync::Arc::new(
            crate::admin::LedgerSource::new(app.ledger()).with_api_counters(app.api_counters()),
        );
        let state = crate::admin::AdminState::new(source, handle, settings.admin.max_poll_age);
        let admin_shutdown = shutdown.clone();
        tokio::spawn(async move {
            if let Err(e) = crate::admin::serve(listener, state, admin_shutdown).await {
                tracing::error!(error = %e, "admin listener failed");
            }
        });
        tracing::info!(listen = %addr, "admin endpoints up: /healthz /readyz /metrics");
    }
    tokio::spawn(async move {
        match shutdown::signal().await {
            Ok(sig) => tracing::info!(signal = sig, "shutting down: finishing the batch in flight"),
            Err(e) => tracing::error!(error = %e, "cannot listen for signals; stopping"),
        }
        trigger.trigger();
    });
    tracing::info!(
        systems = settings.systems.len(),
        ledger = %settings.ledger_path.display(),
        "leadsync started"
    );
    match app.run_until_stopped(shutdown).await {
        Ok(()) => {
            tracing::info!("leadsync stopped cleanly");
            exit::OK
        }
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "leadsync stopped on an error");
            exit::SOFTWARE
        }
    }
}
