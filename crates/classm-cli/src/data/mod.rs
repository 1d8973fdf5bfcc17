//! `classm data ...`: dataset checks and splits.

use anyhow::Result;
use clap::Subcommand;

use crate::{Ctx, Status};

mod check;
mod options;
mod split;

/// Dataset commands.
#[derive(Debug, Subcommand)]
pub enum DataCommand {
    /// Scan a dataset: classes, groups and splits, unreadable files, per-group stain matrices.
    Check(check::CheckArgs),
    /// Write a deterministic, group-aware, class-stratified split file.
    Split(split::SplitArgs),
}

/// Runs a data command.
pub fn run(cmd: DataCommand, ctx: &Ctx) -> Result<Status> {
    match cmd {
        DataCommand::Check(a) => check::run(a, ctx),
        DataCommand::Split(a) => split::run(a),
    }
}
