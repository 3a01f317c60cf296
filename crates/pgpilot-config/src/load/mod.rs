//! Reading the local configuration: file, directory or `PATRONI_CONFIGURATION`, environment
//! over it, then the typed [`Config`](crate::Config) with every problem named by its key path.
//!
//! This file reads and merges the document; the `PATRONI_*` environment is mapped in
//! `crate::env`. The typing is in `convert.rs` (`build`: the document into [`Loaded`]), with
//! `reader.rs` (typed access that collects problems), `etcd.rs` (the etcd section),
//! `sections.rs` (tags, watchdog, log), `methods.rs` (bootstrap and replica creation methods)
//! and `continuity.rs` (`pgpilot.client_continuity`).

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::{env, yaml, ConfigError, Loaded, Problem};

mod continuity;
mod convert;
mod etcd;
mod methods;
mod reader;
mod sections;

use convert::build;
pub use etcd::{etcd_endpoint, etcd_from_document};
pub(crate) use reader::Reader;

/// Merges `over` into `base`: maps key by key, anything else replaced.
pub fn deep_merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) if existing.is_object() && v.is_object() => {
                        deep_merge(existing, v)
                    }
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

fn read_yaml(path: &Path) -> Result<Value, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    yaml::parse(&text, &path.display().to_string())
}

/// Loads the local configuration from a file, a directory of YAML files, or (path absent /
/// `None`) `PATRONI_CONFIGURATION`, then merges `PATRONI_*` variables from `env` over it.
pub fn load(path: Option<&Path>, env: &[(String, String)]) -> Result<Loaded, ConfigError> {
    let doc = load_document(path, env)?;
    let home = env
        .iter()
        .find(|(k, _)| k == "HOME")
        .map(|(_, v)| v.clone());
    build(doc, home.as_deref())
}

/// The merged local document (file or directory or `PATRONI_CONFIGURATION`, then `PATRONI_*`
/// variables), before any typing: what `--validate-config` checks.
pub fn load_document(path: Option<&Path>, env: &[(String, String)]) -> Result<Value, ConfigError> {
    let mut doc = Value::Object(Map::new());
    match path {
        Some(p) if p.is_dir() => {
            let mut files: Vec<PathBuf> = std::fs::read_dir(p)
                .map_err(|source| ConfigError::Read {
                    path: p.to_path_buf(),
                    source,
                })?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.is_file() && f.extension().is_some_and(|x| x == "yml" || x == "yaml"))
                .collect();
            files.sort();
            for f in files {
                deep_merge(&mut doc, read_yaml(&f)?);
            }
        }
        Some(p) if p.exists() => doc = read_yaml(p)?,
        _ => {
            if let Some((_, text)) = env.iter().find(|(k, _)| k == "PATRONI_CONFIGURATION") {
                doc = yaml::parse(text, "PATRONI_CONFIGURATION")?;
            } else if let Some(p) = path {
                return Err(ConfigError::Read {
                    path: p.to_path_buf(),
                    source: std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "no such file, and PATRONI_CONFIGURATION is not set",
                    ),
                });
            }
        }
    }
    let Value::Object(mut map) = doc else {
        return Err(ConfigError::Invalid(vec![Problem {
            path: "<root>".into(),
            message: "the configuration must be a mapping".into(),
        }]));
    };
    env::apply(&mut map, env);
    Ok(Value::Object(map))
}

/// Builds a [`Config`](crate::Config) from an already merged document (used by tests and `load`).
pub fn load_from_value(doc: Value) -> Result<Loaded, ConfigError> {
    build(doc, std::env::var("HOME").ok().as_deref())
}
