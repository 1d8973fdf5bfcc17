//! `classm`: the command-line tool of the classm project.
//!
//! This crate is glue only: argument parsing, file IO, parallelism, progress and reporting.
//! Every number is computed by `classm-stain` and `classm-data`.

use std::io::IsTerminal;
use std::num::NonZeroUsize;
use std::process::ExitCode;

use clap::{ArgAction, Parser, Subcommand};
use tracing_subscriber::EnvFilter;

mod data;
mod io;
mod progress;
mod report;
mod stain;

/// H&E stain separation and normalisation for histopathology (CLASS-M).
#[derive(Debug, Parser)]
#[command(
    name = "classm",
    version,
    long_about = "H&E stain separation and normalisation for histopathology (CLASS-M).\n\n\
Several files are processed in parallel. A file that fails is reported with its reason and the \
others still complete. Exit status: 0 when every file succeeded, 1 when any file (or the run) \
failed, 2 for usage errors.\n\n\
Logging goes to standard error; RUST_LOG (e.g. RUST_LOG=classm=debug), when set, takes \
precedence over -v/-q."
)]
struct Cli {
    /// More log output (-v debug, -vv trace).
    #[arg(short, long, action = ArgAction::Count, global = true, help_heading = "Global options")]
    verbose: u8,

    /// Only errors and the final summary on standard error.
    #[arg(
        short,
        long,
        global = true,
        conflicts_with = "verbose",
        help_heading = "Global options"
    )]
    quiet: bool,

    /// Worker threads (default: one per CPU core).
    #[arg(
        short = 'j',
        long,
        value_name = "N",
        global = true,
        help_heading = "Global options"
    )]
    jobs: Option<NonZeroUsize>,

    /// Never draw a progress bar (one log line per file instead). The bar is only drawn when
    /// standard error is a terminal.
    #[arg(long, global = true, help_heading = "Global options")]
    no_progress: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Stain estimation, separation and normalisation.
    #[command(subcommand)]
    Stain(stain::StainCommand),
    /// Datasets: checks and group-aware splits.
    #[command(subcommand)]
    Data(data::DataCommand),
}

/// Shared run-time settings derived from the global flags.
#[derive(Debug, Clone, Copy)]
pub struct Ctx {
    /// Draw a progress bar (standard error is a terminal and not `--quiet`/`--no-progress`).
    pub progress_bar: bool,
}

/// How a command ended when it did not fail as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Every file succeeded (possibly with a fallback).
    Success,
    /// At least one file failed; the others were processed.
    SomeFailed,
}

/// An error in the way the tool was called (exit status 2, like clap's own usage errors).
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Returns early with a [`UsageError`].
#[macro_export]
macro_rules! usage {
    ($($t:tt)*) => {
        return Err(anyhow::Error::new($crate::UsageError(format!($($t)*))))
    };
}

fn init_logging(verbose: u8, quiet: bool) {
    let level = if quiet {
        "error"
    } else {
        match verbose {
            0 => "info",
            1 => "debug",
            _ => "trace",
        }
    };
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("warn,classm={level}")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .without_time()
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose, cli.quiet);
    if let Some(n) = cli.jobs {
        if let Err(e) = rayon::ThreadPoolBuilder::new()
            .num_threads(n.get())
            .build_global()
        {
            eprintln!("classm: error: cannot start {n} worker threads: {e}");
            return ExitCode::from(1);
        }
    }
    let ctx = Ctx {
        progress_bar: !cli.quiet && !cli.no_progress && std::io::stderr().is_terminal(),
    };
    let result = match cli.command {
        Command::Stain(cmd) => stain::run(cmd, &ctx),
        Command::Data(cmd) => data::run(cmd, &ctx),
    };
    match result {
        Ok(Status::Success) => ExitCode::SUCCESS,
        Ok(Status::SomeFailed) => ExitCode::from(1),
        Err(e) if e.downcast_ref::<UsageError>().is_some() => {
            eprintln!("classm: error: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("classm: error: {}", report::chain_message(&e));
            ExitCode::from(1)
        }
    }
}
