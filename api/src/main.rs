//! `postbox-api`: configuration and signals; the work is in the library.

use clap::Parser;
use postbox_api::config::Command;
use postbox_api::{run, Cli, Config};
use postbox_runtime::{shutdown, start_process};
use std::process::ExitCode;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.command == Some(Command::Openapi) {
        print!("{}", postbox_api::openapi_json());
        return ExitCode::SUCCESS;
    }
    let config = match Config::from_cli(cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("postbox-api: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match start_process(&config.log, config.log_json) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("postbox-api: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config, shutdown::signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("postbox-api: {e}");
            ExitCode::from(if e.is_config() { 2 } else { 1 })
        }
    }
}
