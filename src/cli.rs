//! The command line (clap). Kept apart so the man page and completions can be generated
//! from the same definition.

use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

/// Hardlinks completed downloads between the per-host directories of a shared Gentoo
/// distfiles tree, so each host's eclean-dist removes only its own names.
#[derive(Debug, Parser)]
#[command(name = "distlink", version, about, long_about = None)]
pub struct Cli {
    /// Least important messages to log [default: the configuration's `log_level`, else
    /// info].
    #[arg(long, global = true, value_enum)]
    pub log_level: Option<LogLevel>,

    /// Where log lines go: auto is the journal when stderr is connected to it, else
    /// stderr.
    #[arg(long, global = true, value_enum, default_value = "auto")]
    pub log_target: crate::logging::Target,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon in the foreground (SIGTERM/SIGINT: finish links in flight, exit 0;
    /// SIGHUP: re-read the configuration).
    Run {
        /// Configuration file.
        #[arg(long, short, value_name = "FILE", default_value = crate::config::DEFAULT_PATH)]
        config: PathBuf,
        /// Link as this user (e.g. portage) instead of root; overrides `user:`.
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
    },
    /// Check the configuration, host directories, kernel support and privileges; exit 0
    /// only when `run` would start.
    Check {
        /// Configuration file.
        #[arg(long, short, value_name = "FILE", default_value = crate::config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Write the man page or shell completions (for packaging) to stdout.
    #[command(hide = true)]
    Generate {
        #[arg(value_enum)]
        what: Generated,
    },
    /// Show whether the daemon runs, its hosts, the pool and its counters (from the
    /// status file it writes). Exit 0 when running, 3 when not.
    Status {
        /// Configuration file (names the status file).
        #[arg(long, short, value_name = "FILE", default_value = crate::config::DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Link what the daemon would have: files completed while it was not running, and
    /// every file into hosts added since. Prints each fan-out.
    Sync {
        /// Configuration file.
        #[arg(long, short, value_name = "FILE", default_value = crate::config::DEFAULT_PATH)]
        config: PathBuf,
        /// Print what would be linked; link nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Show where the bytes are: the pool, what each host references and holds alone
    /// (what its eclean-dist would free), split names, the largest single-host files.
    /// Reads the host directories only; needs no daemon.
    Space {
        /// Configuration file.
        #[arg(long, short, value_name = "FILE", default_value = crate::config::DEFAULT_PATH)]
        config: PathBuf,
        /// JSON, for scripts.
        #[arg(long)]
        json: bool,
    },
}

/// What `distlink generate` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Generated {
    /// The man page, distlink(8), in roff.
    Man,
    /// Shell completions for bash.
    Bash,
    /// Shell completions for zsh.
    Zsh,
    /// Shell completions for fish.
    Fish,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
}

impl LogLevel {
    /// From a level's name (`info`, …), as the configuration's `log_level` gives it.
    pub fn parse(s: &str) -> Option<LogLevel> {
        <LogLevel as ValueEnum>::from_str(s, true).ok()
    }
}

impl From<LogLevel> for log::LevelFilter {
    fn from(l: LogLevel) -> log::LevelFilter {
        match l {
            LogLevel::Error => log::LevelFilter::Error,
            LogLevel::Warn => log::LevelFilter::Warn,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Debug => log::LevelFilter::Debug,
        }
    }
}

/// Writes the man page or a completion script for [`Cli`] to `out`.
pub fn generate(what: Generated, out: &mut dyn std::io::Write) -> std::io::Result<()> {
    use clap::CommandFactory;
    let mut cmd = Cli::command();
    let shell = match what {
        Generated::Man => {
            let man = clap_mangen::Man::new(cmd)
                .section("8")
                .manual("System Administration");
            return man.render(out);
        }
        Generated::Bash => clap_complete::Shell::Bash,
        Generated::Zsh => clap_complete::Shell::Zsh,
        Generated::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(shell, &mut cmd, "distlink", out);
    Ok(())
}
