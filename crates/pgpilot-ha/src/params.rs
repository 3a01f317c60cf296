//! The PostgreSQL parameters and pg_hba lines the agent wants, from the three configuration
//! layers (spec/config.md §3.1, §3.12): built-in defaults of the cluster-wide parameters, the
//! dynamic `/config` `postgresql.parameters`, then the local ones (which cannot set cluster-wide
//! parameters).

use std::collections::BTreeMap;

use pgpilot_config::{Config, DynamicConfig};
use pgpilot_postgres::{Credentials, PgSettings};

/// Cluster-wide parameters with Patroni's defaults: only the dynamic configuration may set them.
pub const CLUSTER_WIDE_DEFAULTS: &[(&str, &str)] = &[
    ("max_connections", "100"),
    ("max_locks_per_transaction", "64"),
    ("max_worker_processes", "8"),
    ("max_prepared_transactions", "0"),
    ("wal_level", "replica"),
    ("track_commit_timestamp", "off"),
    ("max_wal_senders", "10"),
    ("max_replication_slots", "10"),
    ("wal_keep_size", "128MB"),
    ("wal_log_hints", "on"),
];

/// Parameters pgpilot always controls itself (from `postgresql.listen` and `scope`).
const FORCED: &[&str] = &["listen_addresses", "port", "cluster_name", "hot_standby"];

/// Renders a YAML/JSON value the way PostgreSQL expects it in postgresql.conf.
pub use pgpilot_values::guc_value as render_value;

/// The merged GUCs for postgresql.conf (without the forced ones, which the postgres crate adds).
pub fn effective_parameters(cfg: &Config, dynamic: &DynamicConfig) -> BTreeMap<String, String> {
    let mut out: BTreeMap<String, String> = CLUSTER_WIDE_DEFAULTS
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for (k, v) in &dynamic.parameters {
        if FORCED.contains(&k.as_str()) || v.is_null() {
            continue;
        }
        out.insert(k.clone(), render_value(v));
    }
    for (k, v) in &cfg.postgresql.parameters {
        let cluster_wide = CLUSTER_WIDE_DEFAULTS.iter().any(|(c, _)| c == k);
        if cluster_wide || FORCED.contains(&k.as_str()) || v.is_null() {
            continue;
        }
        out.insert(k.clone(), render_value(v));
    }
    // `wal_keep_segments` (before 13) and `wal_keep_size` (13+) are converted into each other
    // for the server's major when postgresql.conf is written (`PgMajor::adapt_parameters`).
    if enforce_hot_standby_feedback(cfg, dynamic) {
        out.insert("hot_standby_feedback".into(), "on".into());
    }
    out
}

/// Patroni's `should_enforce_hot_standby_feedback`: a failover candidate that keeps copies of
/// permanent logical slots needs the primary to hold back the catalog rows those slots still
/// need (`catalog_xmin` through its physical slot), or the copies are useless after a
/// failover. Not while paused. (Patroni also turns it on for a `nofailover` member whose
/// cascading replicas need it; pgpilot does not yet.)
fn enforce_hot_standby_feedback(cfg: &Config, dynamic: &DynamicConfig) -> bool {
    dynamic.use_slots
        && !dynamic.pause
        && cfg.tags.can_failover()
        && !cfg.tags.nostream
        && dynamic
            .permanent_slots
            .values()
            .any(|s| matches!(s, pgpilot_config::PermanentSlot::Logical { .. }))
}

/// pg_hba.conf lines: local `postgresql.pg_hba`, else dynamic, else `bootstrap.pg_hba`. Empty
/// means "leave the file initdb wrote alone".
pub fn effective_pg_hba(cfg: &Config, dynamic: &DynamicConfig) -> Vec<String> {
    if let Some(lines) = &cfg.postgresql.pg_hba {
        return lines.clone();
    }
    if let Some(lines) = &dynamic.pg_hba {
        return lines.clone();
    }
    cfg.bootstrap.pg_hba.clone()
}

/// The settings of the local PostgreSQL from the configuration: the agent's own connections go
/// to the unix socket with `use_unix_socket`, else to the first listen address (loopback for a
/// wildcard).
pub fn pg_settings(cfg: &Config) -> PgSettings {
    let pg = &cfg.postgresql;
    let first = pg
        .listen_addresses
        .split(',')
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    let tcp_host = match first.as_str() {
        "" | "*" | "0.0.0.0" => "127.0.0.1".to_string(),
        "::" => "::1".to_string(),
        h => h.to_string(),
    };
    let local_host = if pg.use_unix_socket {
        local_socket_dir(pg.parameters.get("unix_socket_directories")).unwrap_or(tcp_host)
    } else {
        tcp_host
    };
    let creds = |c: &pgpilot_config::Credentials| Credentials {
        username: c.username.clone(),
        password: c.password.clone(),
        options: c.options.clone(),
    };
    PgSettings {
        name: cfg.name.clone(),
        scope: cfg.scope.clone(),
        data_dir: pg.data_dir.clone(),
        config_dir: pg.config_dir.clone(),
        bin_dir: pg.bin_dir.clone(),
        listen_addresses: pg.listen_addresses.clone(),
        port: pg.port,
        local_host,
        superuser: creds(&pg.superuser),
        replication: creds(&pg.replication),
        rewind: pg.rewind.as_ref().map(creds),
        pgpass: pg.pgpass.clone(),
        pg_ctl_timeout: pg.pg_ctl_timeout,
    }
}

/// With `use_unix_socket`, Patroni's choice of socket: the first absolute directory of
/// `unix_socket_directories`; none there (relative ones only) means TCP; the parameter unset
/// means libpq's default directory (`/var/run/postgresql` as Debian builds it, else `/tmp`).
fn local_socket_dir(unix_socket_directories: Option<&serde_json::Value>) -> Option<String> {
    match unix_socket_directories {
        Some(v) => v
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| v.to_string())
            .split(',')
            .map(str::trim)
            .find(|d| d.starts_with('/'))
            .map(str::to_string),
        None => Some(
            ["/var/run/postgresql", "/tmp"]
                .into_iter()
                .find(|d| std::path::Path::new(d).is_dir())
                .unwrap_or("/tmp")
                .to_string(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn render_values() {
        assert_eq!(render_value(&Value::Bool(true)), "on");
        assert_eq!(render_value(&serde_json::json!(42)), "42");
        assert_eq!(render_value(&serde_json::json!("64MB")), "64MB");
    }
}
