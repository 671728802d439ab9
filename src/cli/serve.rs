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
    let (trigger, shutdown) = shutdown::channel();
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
