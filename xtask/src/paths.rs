//! Locations shared by the commands.

use std::path::{Path, PathBuf};

/// The workspace root (the folder above `xtask/`).
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// The shared data folder: `$CLASSM_SHARED`, else `../shared` beside the repository.
/// Returns the path and whether it came from the environment.
pub fn shared_dir() -> (PathBuf, bool) {
    match std::env::var_os("CLASSM_SHARED") {
        Some(p) if !p.is_empty() => (PathBuf::from(p), true),
        _ => (repo_root().join("../shared"), false),
    }
}

/// The Python reference virtual environment.
pub fn venv_dir() -> PathBuf {
    repo_root().join("target/stain-ref-venv")
}

/// The cargo executable that started us (`$CARGO`), else `cargo` from `PATH`.
pub fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}
