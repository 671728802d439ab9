//! The `leadsync` binary: parse flags, hand over to the CLI.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = leadsync::cli::Cli::parse();
    // The environment is read once, here, and passed down (never set_var).
    let env = std::env::vars().collect();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("leadsync: cannot start the async runtime: {e}");
            return ExitCode::from(leadsync::cli::exit::SOFTWARE);
        }
    };
    rt.block_on(leadsync::cli::run(cli, env))
}
