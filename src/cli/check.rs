//! `leadsync check`: validate config and reach every system. Runs as systemd `ExecStartPre`.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use super::{exit, load_settings};
use crate::app::build_connector;
use crate::connectors::Connector;

pub async fn run(config: &Path, env: &HashMap<String, String>) -> u8 {
    let settings = match load_settings(config, env) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let mut failed = false;
    for sys in &settings.systems {
        let connector = match build_connector(sys) {
            Ok(c) => c,
            Err(e) => {
                println!("{} ({}): invalid: {e}", sys.name, sys.kind);
                failed = true;
                continue;
            }
        };
        let result = tokio::time::timeout(Duration::from_secs(30), connector.healthcheck()).await;
        match result {
            Ok(Ok(())) => println!("{} ({}): ok", sys.name, sys.kind),
            Ok(Err(e)) => {
                println!("{} ({}): unreachable: {e}", sys.name, sys.kind);
                failed = true;
            }
            Err(_) => {
                println!("{} ({}): unreachable: no answer within 30 s", sys.name, sys.kind);
                failed = true;
            }
        }
    }
    if failed { exit::UNAVAILABLE } else { exit::OK }
}
