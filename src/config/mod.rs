//! What every section of the configuration is read with: YAML that keeps
//! each node's file and line ([`yaml`]), errors collected all at once
//! ([`error`]), and secrets that never print ([`secret`]). A leaf: it knows
//! no section; the whole file is [`crate::settings::Config`].

pub mod error;
pub mod secret;
pub mod yaml;

use std::path::{Path, PathBuf};

pub use error::{ConfigError, Errors};
pub use secret::Secret;

/// Paths in a config file are relative to the file's directory.
pub fn relative_to(config: &Path, p: &str) -> PathBuf {
    let p = Path::new(p);
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        config.parent().unwrap_or(Path::new(".")).join(p)
    }
}
