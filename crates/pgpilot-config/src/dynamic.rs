//! The dynamic configuration (`/config`, seeded from `bootstrap.dcs`), read leniently every cycle.

use std::collections::BTreeMap;
use std::time::Duration;

use pgpilot_values::{truthy, SyncMode};
use serde_json::{Map, Value};

/// Typed view of the `/config` document with the defaults of spec/config.md §3.8 and the timing
/// rule `loop_wait + 2 × retry_timeout ≤ ttl` applied.
#[derive(Debug, Clone, PartialEq)]
pub struct DynamicConfig {
    pub ttl: Duration,
    pub loop_wait: Duration,
    pub retry_timeout: Duration,
    pub maximum_lag_on_failover: u64,
    /// `primary_start_timeout` (legacy `master_start_timeout`): how long a crashed primary may
    /// take to start again under its key; zero = hand over at once when someone can take over.
    pub primary_start_timeout: Duration,
    /// `primary_stop_timeout` (legacy `master_stop_timeout`); zero = no limit. Used only in
    /// synchronous mode: a primary whose stop takes longer is killed (SIGKILL).
    pub primary_stop_timeout: Duration,
    pub check_timeline: bool,
    pub max_timelines_history: usize,
    pub pause: bool,
    pub use_pg_rewind: bool,
    pub use_slots: bool,
    /// `synchronous_mode` as [`SyncMode::from_value`] reads it.
    pub synchronous_mode: SyncMode,
    pub synchronous_mode_strict: bool,
    /// `synchronous_node_count` (at least 1).
    pub synchronous_node_count: usize,
    /// `maximum_lag_on_syncnode` in bytes; `None` (the default -1, or ≤ 0) = no limit.
    pub maximum_lag_on_syncnode: Option<u64>,
    /// `postgresql.parameters` of the dynamic document.
    pub parameters: Map<String, Value>,
    pub pg_hba: Option<Vec<String>>,
    /// `postgresql.callbacks`, `postgresql.pre_promote` and `postgresql.before_stop` of the
    /// document: Patroni lays `postgresql.*` of `/config` under the local section, so these
    /// apply where the local configuration does not set them.
    pub callbacks: Option<BTreeMap<String, String>>,
    pub pre_promote: Option<String>,
    pub before_stop: Option<String>,
    /// The document as stored (unknown keys kept).
    pub raw: Map<String, Value>,
}

impl Default for DynamicConfig {
    fn default() -> Self {
        DynamicConfig::from_document(&Map::new()).0
    }
}

/// Patroni casts these with `int()`: numbers and numeric strings are accepted.
fn int(doc: &Map<String, Value>, key: &str, warnings: &mut Vec<String>) -> Option<i64> {
    let v = doc.get(key)?;
    let n = match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => s.trim().parse::<i64>().ok(),
        Value::Null => return None,
        _ => None,
    };
    if n.is_none() {
        warnings.push(format!("{key}: {v} is not an integer, using the default"));
    }
    n
}

/// A non-empty command string of the `postgresql` section.
fn command(pg: Option<&Map<String, Value>>, key: &str) -> Option<String> {
    pg.and_then(|p| p.get(key))
        .and_then(Value::as_str)
        .filter(|s| !s.trim().is_empty())
        .map(str::to_string)
}

/// The largest duration in seconds read from `/config` (`i32::MAX`): `ttl`, `loop_wait` and
/// `retry_timeout` above it are clamped with a warning, so that neither the timing rule's
/// arithmetic nor a deadline computed from them can overflow, whatever a `PATCH /config` wrote.
const MAX_SECS: i64 = i32::MAX as i64;

impl DynamicConfig {
    /// Reads a `/config` document. Never fails: invalid values fall back to defaults; every
    /// adjustment (timing rule, bad types) is returned as a warning for the log.
    pub fn from_document(doc: &Map<String, Value>) -> (DynamicConfig, Vec<String>) {
        let mut w = Vec::new();
        let mut ttl = int(doc, "ttl", &mut w).unwrap_or(30);
        let mut loop_wait = int(doc, "loop_wait", &mut w).unwrap_or(10);
        let mut retry = int(doc, "retry_timeout", &mut w).unwrap_or(10);
        for (name, value, min) in [
            ("ttl", &mut ttl, 20),
            ("loop_wait", &mut loop_wait, 1),
            ("retry_timeout", &mut retry, 3),
        ] {
            if *value < min {
                w.push(format!(
                    "{name}={value} is below the minimum {min}; using {min}"
                ));
                *value = min;
            }
            if *value > MAX_SECS {
                w.push(format!(
                    "{name}={value} is above the maximum {MAX_SECS}; using {MAX_SECS}"
                ));
                *value = MAX_SECS;
            }
        }
        if loop_wait + 2 * retry > ttl {
            if ttl - 2 * retry >= 1 {
                let lw = ttl - 2 * retry;
                w.push(format!("loop_wait + 2*retry_timeout must be <= ttl: loop_wait reduced from {loop_wait} to {lw}"));
                loop_wait = lw;
            } else {
                let rt = (ttl - 1) / 2;
                w.push(format!("loop_wait + 2*retry_timeout must be <= ttl: loop_wait set to 1 and retry_timeout reduced from {retry} to {rt}"));
                loop_wait = 1;
                retry = rt;
            }
        }
        let pg = doc.get("postgresql").and_then(Value::as_object);
        // Negative means 0; beyond MAX_SECS (68 years) would overflow the clock arithmetic.
        let secs = |n: i64| Duration::from_secs(u64::try_from(n.min(MAX_SECS)).unwrap_or(0));
        let cfg = DynamicConfig {
            ttl: secs(ttl),
            loop_wait: secs(loop_wait),
            retry_timeout: secs(retry),
            maximum_lag_on_failover: int(doc, "maximum_lag_on_failover", &mut w)
                .and_then(|n| u64::try_from(n).ok())
                .unwrap_or(1_048_576),
            primary_start_timeout: secs(
                int(doc, "primary_start_timeout", &mut w)
                    .or_else(|| int(doc, "master_start_timeout", &mut w))
                    .unwrap_or(300),
            ),
            primary_stop_timeout: secs(
                int(doc, "primary_stop_timeout", &mut w)
                    .or_else(|| int(doc, "master_stop_timeout", &mut w))
                    .unwrap_or(0),
            ),
            check_timeline: doc.get("check_timeline").is_some_and(truthy),
            max_timelines_history: int(doc, "max_timelines_history", &mut w)
                .and_then(|n| usize::try_from(n).ok())
                .unwrap_or(0),
            pause: doc.get("pause").is_some_and(truthy),
            use_pg_rewind: pg.and_then(|p| p.get("use_pg_rewind")).is_some_and(truthy),
            use_slots: pg.and_then(|p| p.get("use_slots")).is_none_or(truthy),
            synchronous_mode: SyncMode::from_value(doc.get("synchronous_mode")),
            synchronous_mode_strict: doc.get("synchronous_mode_strict").is_some_and(truthy),
            synchronous_node_count: int(doc, "synchronous_node_count", &mut w)
                .and_then(|n| usize::try_from(n).ok())
                .unwrap_or(1)
                .max(1),
            maximum_lag_on_syncnode: int(doc, "maximum_lag_on_syncnode", &mut w)
                .and_then(|n| u64::try_from(n).ok())
                .filter(|n| *n > 0),
            parameters: pg
                .and_then(|p| p.get("parameters"))
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
            pg_hba: pg
                .and_then(|p| p.get("pg_hba"))
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
                        .collect()
                }),
            callbacks: pg
                .and_then(|p| p.get("callbacks"))
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                        .collect()
                }),
            pre_promote: command(pg, "pre_promote"),
            before_stop: command(pg, "before_stop"),
            raw: doc.clone(),
        };
        (cfg, w)
    }
}
