//! placeholder
use std::path::Path;
use serde_json::Value;
use crate::{ConfigError, Loaded};

/// Loads the local configuration from a file, a directory of YAML files, or (path absent /
/// `None`) `PATRONI_CONFIGURATION`, then merges `PATRONI_*` variables from `env` over it.
pub fn load(path: Option<&Path>, env: &[(String, String)]) -> Result<Loaded, ConfigError> {
    let _ = (path, env);
    unimplemented!()
}

/// Builds a [`crate::Config`] from an already merged document (used by tests and `load`).
pub fn load_from_value(doc: Value) -> Result<Loaded, ConfigError> {
    let _ = doc;
    unimplemented!()
}
