//! `postbox-worker`: configuration and signals; the work is in the library.

use clap::Parser;
use postbox_runtime::{shutdown, start_process};
use postbox_worker::check::{check, Finding};
use postbox_worker::config::Command;
use postbox_worker::{run, Cli, Config};
use std::process::ExitCode;

// Each delivery allocates many small buffers (body, headers, HTTP state);
// glibc's allocator showed up at ~18% of the worker's profile.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = cli.command;
    let config = match Config::from_cli(cli) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("postbox-worker: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match start_process(&config.log, config.log_json) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("postbox-worker: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    if command == Some(Command::Check) {
        let findings = runtime.block_on(check(&config));
        let mut problems = 0;
        for f in &findings {
            match f {
                Finding::Ok(s) => println!("ok: {s}"),
                Finding::Warning(s) => println!("warning: {s}"),
                Finding::Problem(s) => {
                    problems += 1;
                    println!("problem: {s}");
                }
            }
        }
        return if problems == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(2)
        };
    }
    match runtime.block_on(run(config, shutdown::signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            eprintln!("postbox-worker: {e}");
            ExitCode::from(if e.is_config() { 2 } else { 1 })
        }
    }
}
