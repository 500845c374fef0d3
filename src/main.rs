//! `distlink`: parse the command line, dispatch, report the error once.
//!
//! Exit codes: 0 success; 1 a fatal error at start-up (or `check` found one that is not
//! the configuration's); 2 bad command line; 3 `status`: the daemon is not running;
//! 78 (`EX_CONFIG`) the configuration or the host directories are invalid.

use clap::Parser;
use distlink::cli::{Cli, Command, LogLevel};
use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let level = cli
        .log_level
        .or_else(|| configured_level(&cli.command))
        .unwrap_or(LogLevel::Info);
    distlink::logging::init(level.into(), cli.log_target);
    // `run` starts the logging thread itself, once privileges are dropped.
    if !matches!(cli.command, Command::Run { .. }) {
        distlink::logging::start_writer();
    }
    // What a command that did its job exits with (`status`: 3 when not running).
    let mut success = ExitCode::SUCCESS;
    let result = match &cli.command {
        Command::Run { config, user } => distlink::cmd::run::run(config, user.as_deref()),
        Command::Check { config } => {
            distlink::cmd::check::check(config).map(|summary| print_out(&summary))
        }
        Command::Generate { what } => {
            match distlink::cli::generate(*what, &mut std::io::stdout()) {
                // `distlink generate man | head` is fine.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
                r => r.map_err(|e| distlink::error::Error::setup("writing to stdout", e)),
            }
        }
        Command::Status { config } => {
            distlink::cmd::status::report(config).map(|(text, running)| {
                print_out(&text);
                if !running {
                    success = ExitCode::from(distlink::status::EXIT_NOT_RUNNING as u8);
                }
            })
        }
        Command::Sync { config, dry_run } => {
            distlink::cmd::sync::sync(config, *dry_run).map(|summary| print_out(&summary))
        }
        Command::Space { config, json } => {
            distlink::cmd::space::space(config, *json).map(|text| print_out(&text))
        }
    };
    // Every line logged so far reaches its sink before the process ends.
    distlink::logging::flush(std::time::Duration::from_secs(1));
    match result {
        Ok(()) => success,
        Err(e) => {
            eprintln!("distlink: {}", distlink::error_chain(&e));
            ExitCode::from(e.exit_code() as u8)
        }
    }
}

/// Prints a command's answer; a reader that went away (`distlink status | head -n1`) is
/// not an error.
fn print_out(text: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}

/// The configuration's `log_level`, if its file parses (errors are reported later, by
/// the command itself, once logging is set up).
fn configured_level(command: &Command) -> Option<LogLevel> {
    let (Command::Run { config, .. } | Command::Sync { config, .. }) = command else {
        return None;
    };
    let config = distlink::config::Config::load(config).ok()?;
    LogLevel::parse(config.log_level.as_deref()?)
}
