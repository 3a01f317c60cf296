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
    /// `failsafe_mode`: a primary that loses the DCS keeps running while every member listed
    /// in `/failsafe` acknowledges it (spec/ha-loop.md §5.10).
    pub failsafe_mode: bool,
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
    /// `slots` (aliases `permanent_slots`, `permanent_replication_slots`): permanent slots by
    /// name. Entries that are neither physical nor logical with database and plugin are left
    /// out with a warning.
    pub permanent_slots: BTreeMap<String, PermanentSlot>,
    /// `ignore_slots`: slots pgpilot never drops.
    pub ignore_slots: Vec<SlotMatcher>,
    /// `member_slots_ttl` (default 30 min): how long the slot of a member whose key vanished
    /// is kept.
    pub member_slots_ttl: Duration,
    /// `standby_cluster`, `Some` only when it makes this a standby cluster
    /// ([`pgpilot_values::is_standby_cluster`]): the leader is then a standby leader
    /// replicating from the remote primary, and `synchronous_mode` is ignored.
    pub standby_cluster: Option<StandbyCluster>,
    /// The document as stored (unknown keys kept).
    pub raw: Map<String, Value>,
}

/// `/config.standby_cluster` (spec/ha-loop.md §5.10): where the standby leader replicates from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StandbyCluster {
    /// `host` of the remote primary: one host, or several separated by commas, which libpq
    /// tries in turn (through a slot, with `target_session_attrs=read-write`).
    pub host: Option<String>,
    /// `port` of the remote primary (5432 when only `host` is set).
    pub port: Option<u16>,
    /// `primary_slot_name`: the slot on the remote primary; none unless set (Patroni's code,
    /// not its docs).
    pub primary_slot_name: Option<String>,
    pub restore_command: Option<String>,
    pub archive_cleanup_command: Option<String>,
    /// `recovery_min_apply_delay`, as written (a number of ms or a value with a unit).
    pub recovery_min_apply_delay: Option<String>,
    /// `create_replica_methods`: names of the methods that create the standby leader (each a
    /// `postgresql.<name>` section of the local configuration, or `basebackup`); empty =
    /// `basebackup` from `host:port`.
    pub create_replica_methods: Vec<String>,
}

/// The keys of `standby_cluster` pgpilot reads.
const STANDBY_CLUSTER_KEYS: &[&str] = &[
    "host",
    "port",
    "primary_slot_name",
    "restore_command",
    "archive_cleanup_command",
    "recovery_min_apply_delay",
    "create_replica_methods",
];

impl StandbyCluster {
    /// Reads `doc.standby_cluster` when it makes a standby cluster.
    fn from_document(doc: &Map<String, Value>, w: &mut Vec<String>) -> Option<StandbyCluster> {
        if !pgpilot_values::is_standby_cluster(doc) {
            return None;
        }
        let m = doc.get("standby_cluster").and_then(Value::as_object)?;
        let text = |k: &str| text_field(m, k).filter(|s| !s.trim().is_empty());
        let port = match m.get("port") {
            None | Some(Value::Null) => None,
            Some(v) => {
                let n = match v {
                    Value::Number(n) => n.as_u64(),
                    Value::String(s) => s.trim().parse::<u64>().ok(),
                    _ => None,
                };
                match n.and_then(|n| u16::try_from(n).ok()).filter(|n| *n > 0) {
                    Some(p) => Some(p),
                    None => {
                        w.push(format!("standby_cluster.port: {v} is not a port number"));
                        None
                    }
                }
            }
        };
        let create_replica_methods = match m.get("create_replica_methods") {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            Some(Value::String(s)) => vec![s.clone()],
            _ => Vec::new(),
        };
        Some(StandbyCluster {
            host: text("host"),
            port,
            primary_slot_name: text("primary_slot_name"),
            restore_command: text("restore_command"),
            archive_cleanup_command: text("archive_cleanup_command"),
            recovery_min_apply_delay: text("recovery_min_apply_delay"),
            create_replica_methods,
        })
    }

    /// The remote primary to stream from: `host` and `port` (5432 by default). `None` when no
    /// host is set (WAL from `restore_command` only).
    pub fn remote(&self) -> Option<(String, u16)> {
        let host = self.host.clone()?;
        Some((host, self.port.unwrap_or(5432)))
    }

    /// What pgpilot does not implement of this `standby_cluster` document, one sentence each
    /// (logged as warnings; none of them changes data).
    pub fn unsupported(doc: &Map<String, Value>) -> Vec<String> {
        let Some(m) = doc.get("standby_cluster").and_then(Value::as_object) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for k in m.keys() {
            if !STANDBY_CLUSTER_KEYS.contains(&k.as_str()) {
                out.push(format!(
                    "standby_cluster.{k}: not a standby_cluster key; ignored"
                ));
            }
        }
        if pgpilot_values::is_standby_cluster(doc)
            && text_field(m, "host").is_none()
            && m.get("port").is_some_and(pgpilot_values::py_truthy)
        {
            out.push(
                "standby_cluster.port without host: pgpilot streams only from a host; WAL comes \
                 from restore_command alone"
                    .into(),
            );
        }
        out
    }
}

/// One permanent slot of `/config.slots`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PermanentSlot {
    Physical,
    Logical { database: String, plugin: String },
}

/// One `ignore_slots` entry: every field that is set must match (Patroni compares `name`
/// when present, and `type`, `database`, `plugin` when non-empty).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SlotMatcher {
    pub name: Option<String>,
    pub slot_type: Option<String>,
    pub database: Option<String>,
    pub plugin: Option<String>,
}

impl SlotMatcher {
    /// Whether a slot with these attributes matches.
    pub fn matches(
        &self,
        name: &str,
        slot_type: &str,
        database: Option<&str>,
        plugin: Option<&str>,
    ) -> bool {
        let field = |want: &Option<String>, have: Option<&str>| {
            want.as_deref()
                .filter(|w| !w.is_empty())
                .is_none_or(|w| Some(w) == have)
        };
        self.name.as_deref().is_none_or(|n| n == name)
            && field(&self.slot_type, Some(slot_type))
            && field(&self.database, database)
            && field(&self.plugin, plugin)
    }
}

/// A string field of a JSON object, numbers written as text.
fn text_field(m: &Map<String, Value>, key: &str) -> Option<String> {
    match m.get(key)? {
        Value::String(s) => Some(s.clone()),
        Value::Null => None,
        v => Some(v.to_string()),
    }
}

/// The permanent slots of this cluster: in a standby cluster only physical ones (Patroni: "In a
/// standby cluster we only support physical replication slots"), and a physical slot's
/// `cluster_type` (`primary` or `standby`) keeps it to that kind of cluster. A slot left out
/// here is not wanted, so an existing one is dropped, as Patroni's documentation says.
fn permanent_slots(
    doc: &Map<String, Value>,
    standby_cluster: bool,
    w: &mut Vec<String>,
) -> BTreeMap<String, PermanentSlot> {
    let value = ["slots", "permanent_slots", "permanent_replication_slots"]
        .iter()
        .find_map(|k| doc.get(*k).filter(|v| !v.is_null()));
    let Some(Value::Object(map)) = value else {
        return BTreeMap::new();
    };
    let mut out = BTreeMap::new();
    for (name, v) in map {
        // Patroni: a falsy value (`null`, `0`, `{}`) is a physical slot.
        let spec = match v {
            Value::Object(m) => {
                let database = text_field(m, "database").filter(|s| !s.is_empty());
                let plugin = text_field(m, "plugin").filter(|s| !s.is_empty());
                let ty = text_field(m, "type").unwrap_or_else(|| {
                    if database.is_some() && plugin.is_some() {
                        "logical".into()
                    } else {
                        "physical".into()
                    }
                });
                let cluster_type = text_field(m, "cluster_type");
                let elsewhere = match cluster_type.as_deref() {
                    Some("primary") => standby_cluster,
                    Some("standby") => !standby_cluster,
                    _ => false,
                };
                match (ty.as_str(), database, plugin) {
                    ("physical", _, _) if elsewhere => continue,
                    ("physical", _, _) => Some(PermanentSlot::Physical),
                    ("logical", Some(_), Some(_)) if standby_cluster => continue,
                    ("logical", Some(database), Some(plugin)) => {
                        Some(PermanentSlot::Logical { database, plugin })
                    }
                    _ => None,
                }
            }
            v if !truthy(v) => Some(PermanentSlot::Physical),
            _ => None,
        };
        match spec {
            Some(s) => {
                out.insert(name.clone(), s);
            }
            None => w.push(format!(
                "Bad value for slot '{name}' in permanent_slots: {v}"
            )),
        }
    }
    out
}

fn ignore_slots(doc: &Map<String, Value>) -> Vec<SlotMatcher> {
    let Some(Value::Array(list)) = doc.get("ignore_slots") else {
        return Vec::new();
    };
    list.iter()
        .filter_map(Value::as_object)
        .map(|m| SlotMatcher {
            name: text_field(m, "name"),
            slot_type: text_field(m, "type"),
            database: text_field(m, "database"),
            plugin: text_field(m, "plugin"),
        })
        .collect()
}

/// Patroni's part of failsafe mode that pgpilot does not do, named in a warning whenever the
/// mode is on (nothing silent).
pub const FAILSAFE_NOT_IMPLEMENTED: &str = "failsafe_mode: not implemented by pgpilot yet: \
     the leader's slots are not managed while the DCS is unreachable (Patroni advances the \
     slots of cascading members to the lsn the members answer to its POST /failsafe)";

/// `failsafe_mode` (one truthiness rule); when on, the warning of what pgpilot leaves out.
fn failsafe_mode(doc: &Map<String, Value>, w: &mut Vec<String>) -> bool {
    let on = doc.get("failsafe_mode").is_some_and(truthy);
    if on {
        w.push(FAILSAFE_NOT_IMPLEMENTED.into());
    }
    on
}

/// Seconds from a number or a string with a unit (`30min`, `1h`, `90s`, `2d`, `500ms`),
/// as Patroni's `parse_int(value, 's')` reads it.
fn seconds(doc: &Map<String, Value>, key: &str, w: &mut Vec<String>) -> Option<u64> {
    let v = doc.get(key)?;
    let n = match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => {
            let s = s.trim();
            let split = s
                .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '-'))
                .unwrap_or(s.len());
            let (num, unit) = s.split_at(split);
            let factor = match unit.trim() {
                "" | "s" => Some(1.0),
                "ms" => Some(0.001),
                "min" => Some(60.0),
                "h" => Some(3600.0),
                "d" => Some(86_400.0),
                _ => None,
            };
            num.parse::<f64>().ok().zip(factor).map(|(n, f)| n * f)
        }
        Value::Null => return None,
        _ => None,
    };
    match n {
        Some(n) if n >= 0.0 => Some(n.round() as u64),
        _ => {
            w.push(format!("{key}: {v} is not a duration, using the default"));
            None
        }
    }
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

/// Patroni 4's floors for `ttl` and `retry_timeout`.
pub const MIN_TTL: i64 = 20;
pub const MIN_RETRY_TIMEOUT: i64 = 3;
/// The floors with pgpilot's guard on ([`DynamicConfig::from_document_fenced`]).
pub const FENCED_MIN_TTL: i64 = 5;
pub const FENCED_MIN_RETRY_TIMEOUT: i64 = 2;

impl DynamicConfig {
    /// Reads a `/config` document with Patroni's floors (`ttl` 20, `retry_timeout` 3); see
    /// [`DynamicConfig::from_document_fenced`].
    pub fn from_document(doc: &Map<String, Value>) -> (DynamicConfig, Vec<String>) {
        DynamicConfig::from_document_fenced(doc, false)
    }

    /// Reads a `/config` document. Never fails: invalid values fall back to defaults; every
    /// adjustment (timing rule, bad types) is returned as a warning for the log.
    ///
    /// `fenced`: this member runs pgpilot's guard (`pgpilot.guard`, on by default), which stops
    /// its PostgreSQL when its lease runs out whether or not the agent is scheduled. Only then
    /// is a `ttl` below Patroni's floor of 20 s honoured (down to [`FENCED_MIN_TTL`]), and a
    /// `retry_timeout` of 2: without the guard, a frozen agent's primary would keep taking
    /// writes after its key expired, for as long as it stays frozen.
    pub fn from_document_fenced(
        doc: &Map<String, Value>,
        fenced: bool,
    ) -> (DynamicConfig, Vec<String>) {
        let mut w = Vec::new();
        let mut ttl = int(doc, "ttl", &mut w).unwrap_or(30);
        let mut loop_wait = int(doc, "loop_wait", &mut w).unwrap_or(10);
        let mut retry = int(doc, "retry_timeout", &mut w).unwrap_or(10);
        for (name, value, patroni_min, fenced_min) in [
            ("ttl", &mut ttl, MIN_TTL, FENCED_MIN_TTL),
            ("loop_wait", &mut loop_wait, 1, 1),
            (
                "retry_timeout",
                &mut retry,
                MIN_RETRY_TIMEOUT,
                FENCED_MIN_RETRY_TIMEOUT,
            ),
        ] {
            let min = if fenced { fenced_min } else { patroni_min };
            if *value < min {
                let why = if !fenced && *value >= fenced_min {
                    " (a shorter one needs pgpilot's guard: pgpilot.guard on)"
                } else {
                    ""
                };
                w.push(format!(
                    "{name}={value} is below the minimum {min}; using {min}{why}"
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
            failsafe_mode: failsafe_mode(doc, &mut w),
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
            permanent_slots: permanent_slots(doc, pgpilot_values::is_standby_cluster(doc), &mut w),
            ignore_slots: ignore_slots(doc),
            member_slots_ttl: Duration::from_secs(
                seconds(doc, "member_slots_ttl", &mut w).unwrap_or(1800),
            ),
            standby_cluster: {
                w.extend(StandbyCluster::unsupported(doc));
                StandbyCluster::from_document(doc, &mut w)
            },
            raw: doc.clone(),
        };
        (cfg, w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg(v: Value) -> DynamicConfig {
        DynamicConfig::from_document(v.as_object().expect("test document is an object")).0
    }

    /// `standby_cluster` counts only with host, port or restore_command set (Python-truthy), and
    /// each key is read once here.
    #[test]
    fn standby_cluster_forms() {
        assert_eq!(cfg(json!({})).standby_cluster, None);
        assert_eq!(cfg(json!({"standby_cluster": null})).standby_cluster, None);
        assert_eq!(cfg(json!({"standby_cluster": {}})).standby_cluster, None);
        assert_eq!(
            cfg(json!({"standby_cluster": {"host": "", "primary_slot_name": "s"}})).standby_cluster,
            None
        );
        let c = cfg(json!({"standby_cluster": {
            "host": "10.0.0.1", "port": "5433", "primary_slot_name": "standby",
            "restore_command": "cp /a/%f %p", "archive_cleanup_command": "",
            "recovery_min_apply_delay": "5min", "create_replica_methods": ["wal_e", "basebackup"]
        }}))
        .standby_cluster
        .expect("a standby cluster");
        assert_eq!(c.remote(), Some(("10.0.0.1".to_string(), 5433)));
        assert_eq!(c.primary_slot_name.as_deref(), Some("standby"));
        assert_eq!(c.restore_command.as_deref(), Some("cp /a/%f %p"));
        assert_eq!(c.archive_cleanup_command, None);
        assert_eq!(c.recovery_min_apply_delay.as_deref(), Some("5min"));
        assert_eq!(c.create_replica_methods, vec!["wal_e", "basebackup"]);
        let archive_only = cfg(json!({"standby_cluster": {"restore_command": "cp"}}))
            .standby_cluster
            .expect("restore_command alone makes a standby cluster");
        assert_eq!(archive_only.remote(), None);
        let host_only = cfg(json!({"standby_cluster": {"host": "h"}}))
            .standby_cluster
            .expect("host alone makes a standby cluster");
        assert_eq!(host_only.remote(), Some(("h".to_string(), 5432)));
        let doc = json!({"standby_cluster": {"host": "a,b", "port": 5432, "bogus": 1}});
        let warnings = StandbyCluster::unsupported(doc.as_object().expect("object"));
        assert_eq!(warnings.len(), 1, "several hosts are fine: {warnings:?}");
        assert!(
            warnings[0].contains("standby_cluster.bogus"),
            "{warnings:?}"
        );
    }

    #[test]
    fn permanent_slots_follow_the_cluster_type() {
        let slots = json!({
            "any": null,
            "prim": {"type": "physical", "cluster_type": "primary"},
            "stby": {"type": "physical", "cluster_type": "standby"},
            "logi": {"type": "logical", "database": "postgres", "plugin": "pgoutput"}
        });
        let names =
            |c: &DynamicConfig| -> Vec<String> { c.permanent_slots.keys().cloned().collect() };
        let primary = cfg(json!({ "slots": slots }));
        assert_eq!(names(&primary), ["any", "logi", "prim"]);
        let standby = cfg(json!({
            "slots": slots,
            "standby_cluster": {"host": "10.0.0.1", "port": 5432}
        }));
        assert_eq!(
            names(&standby),
            ["any", "stby"],
            "physical only, standby ones"
        );
    }

    #[test]
    fn permanent_slots_forms() {
        let c = cfg(json!({"slots": {
            "a": null, "b": 0, "c": {"type": "physical"},
            "d": {"type": "logical", "database": "postgres", "plugin": "test_decoding"},
            "e": {"database": "postgres", "plugin": "pgoutput"},
            "f": {"type": "logical", "database": "postgres"},
            "g": 1
        }}));
        let phys = PermanentSlot::Physical;
        assert_eq!(c.permanent_slots.get("a"), Some(&phys));
        assert_eq!(c.permanent_slots.get("b"), Some(&phys));
        assert_eq!(c.permanent_slots.get("c"), Some(&phys));
        assert_eq!(
            c.permanent_slots.get("d"),
            Some(&PermanentSlot::Logical {
                database: "postgres".into(),
                plugin: "test_decoding".into()
            })
        );
        assert!(matches!(
            c.permanent_slots.get("e"),
            Some(PermanentSlot::Logical { .. })
        ));
        assert!(!c.permanent_slots.contains_key("f"));
        assert!(!c.permanent_slots.contains_key("g"));
        let alias = cfg(json!({"permanent_slots": {"x": null}}));
        assert_eq!(alias.permanent_slots.get("x"), Some(&phys));
    }

    #[test]
    fn ignore_slots_matching() {
        let c = cfg(json!({"ignore_slots": [
            {"name": "keep_me"},
            {"type": "logical", "plugin": "pgoutput"}
        ]}));
        let m = &c.ignore_slots;
        assert_eq!(m.len(), 2);
        assert!(m[0].matches("keep_me", "physical", None, None));
        assert!(!m[0].matches("other", "physical", None, None));
        assert!(m[1].matches("any", "logical", Some("db"), Some("pgoutput")));
        assert!(!m[1].matches("any", "logical", Some("db"), Some("wal2json")));
        assert!(!m[1].matches("any", "physical", None, None));
    }

    #[test]
    fn failsafe_mode_is_read_with_the_truthiness_rule_and_warns_what_is_left_out() {
        assert!(!cfg(json!({})).failsafe_mode);
        for on in [json!(true), json!("on"), json!("true")] {
            let (c, w) = DynamicConfig::from_document(
                json!({ "failsafe_mode": on })
                    .as_object()
                    .expect("test document is an object"),
            );
            assert!(c.failsafe_mode, "{on}");
            assert!(w.iter().any(|w| w == FAILSAFE_NOT_IMPLEMENTED), "{w:?}");
        }
        let (c, w) = DynamicConfig::from_document(
            json!({"failsafe_mode": false})
                .as_object()
                .expect("test document is an object"),
        );
        assert!(!c.failsafe_mode);
        assert!(w.is_empty(), "{w:?}");
    }

    #[test]
    fn member_slots_ttl_units() {
        assert_eq!(cfg(json!({})).member_slots_ttl, Duration::from_secs(1800));
        assert_eq!(
            cfg(json!({"member_slots_ttl": "30min"})).member_slots_ttl,
            Duration::from_secs(1800)
        );
        assert_eq!(
            cfg(json!({"member_slots_ttl": 0})).member_slots_ttl,
            Duration::ZERO
        );
        assert_eq!(
            cfg(json!({"member_slots_ttl": "2h"})).member_slots_ttl,
            Duration::from_secs(7200)
        );
    }
}
