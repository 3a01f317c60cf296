//! Conversion of the merged document into the typed [`Config`]: `build`, the keys pgpilot
//! models (the others are named in a warning) and the options it refuses.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use pgpilot_values::guc_value;
use serde_json::{Map, Value};

use super::etcd::{etcd_section, ETCD_V2_REFUSED};
use super::sections::{log_section, tags, watchdog};
use super::{continuity, methods, Reader};
use crate::{
    BootstrapConfig, Config, ConfigError, CtlConfig, CtlTls, Loaded, PostgresqlConfig,
    RestApiConfig, TlsServerConfig,
};

/// Name Patroni reserves for the strict synchronous-mode placeholder.
const PLACEHOLDER: &str = "__patroni_strict_sync_replica_placeholder__";

/// Cluster-wide parameters: settable only through the dynamic configuration (spec §3.12).
pub(crate) const CLUSTER_WIDE: &[&str] = &[
    "max_connections",
    "max_locks_per_transaction",
    "max_worker_processes",
    "max_prepared_transactions",
    "wal_level",
    "track_commit_timestamp",
    "max_wal_senders",
    "max_replication_slots",
    "wal_keep_segments",
    "wal_keep_size",
    "wal_log_hints",
];

/// Keys of the local document that pgpilot models. Anything else is accepted, kept in
/// `Config::raw`, and named once in a warning.
const MODELLED: &[&str] = &[
    "name",
    "scope",
    "namespace",
    "restapi.listen",
    "restapi.connect_address",
    "restapi.authentication",
    "restapi.allowlist",
    "restapi.allowlist_include_members",
    "restapi.certfile",
    "restapi.keyfile",
    "restapi.keyfile_password",
    "restapi.cafile",
    "restapi.verify_client",
    "restapi.ciphers",
    "ctl.authentication",
    "ctl.certfile",
    "ctl.keyfile",
    "ctl.keyfile_password",
    "ctl.cacert",
    "ctl.insecure",
    "etcd3.host",
    "etcd3.hosts",
    "etcd3.url",
    "etcd3.proxy",
    "etcd3.use_proxies",
    "etcd3.protocol",
    "etcd3.username",
    "etcd3.password",
    "etcd3.cacert",
    "etcd3.cert",
    "etcd3.key",
    "etcd3.key_password",
    "etcd.host",
    "etcd.hosts",
    "etcd.url",
    "etcd.proxy",
    "etcd.use_proxies",
    "etcd.protocol",
    "etcd.username",
    "etcd.password",
    "etcd.cacert",
    "etcd.cert",
    "etcd.key",
    "etcd.key_password",
    "bootstrap.dcs",
    "bootstrap.initdb",
    "bootstrap.pg_hba",
    "bootstrap.post_bootstrap",
    "bootstrap.post_init",
    "bootstrap.method",
    "postgresql.listen",
    "postgresql.connect_address",
    "postgresql.data_dir",
    "postgresql.config_dir",
    "postgresql.bin_dir",
    "postgresql.pgpass",
    "postgresql.authentication",
    "postgresql.use_unix_socket",
    "postgresql.use_unix_socket_repl",
    "postgresql.parameters",
    "postgresql.pg_hba",
    "postgresql.basebackup",
    "postgresql.create_replica_methods",
    "postgresql.create_replica_method",
    "postgresql.pg_ctl_timeout",
    "postgresql.recovery_conf",
    "postgresql.use_pg_rewind",
    "postgresql.remove_data_directory_on_rewind_failure",
    "postgresql.callbacks",
    "postgresql.pre_promote",
    "postgresql.before_stop",
    "tags",
    "log.level",
    "log.type",
    "log.format",
    "log.dateformat",
    "log.static_fields",
    "log.dir",
    "log.file_size",
    "log.file_num",
    "log.mode",
    "watchdog.mode",
    "watchdog.device",
    "watchdog.safety_margin",
    "watchdog.driver",
    // pgpilot's own keys (Patroni has no `pgpilot` section, so nothing of Patroni's clashes).
    "pgpilot.guard",
    // Checked key by key in `continuity.rs`, where an unknown key is refused.
    "pgpilot.client_continuity",
];

const INITDB_FORBIDDEN: &[&str] = &["pgdata", "nosync", "pwfile", "sync-only", "version"];
const BASEBACKUP_FORBIDDEN: &[&str] = &[
    "pgdata",
    "format",
    "wal-method",
    "xlog-method",
    "gzip",
    "version",
    "dbname",
    "host",
    "port",
    "username",
    "password",
];

/// Every leaf path of `v` (objects only) that neither [`MODELLED`] nor `also` (the sections the
/// configured methods name) covers, for the unknown-keys warning.
fn leaf_paths(prefix: &str, v: &Value, also: &[String], out: &mut Vec<String>) {
    if let Value::Object(m) = v {
        for (k, child) in m {
            let p = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            if MODELLED.contains(&p.as_str()) || also.contains(&p) {
                continue;
            }
            if MODELLED.iter().any(|m| m.starts_with(&format!("{p}."))) && child.is_object() {
                leaf_paths(&p, child, also, out);
            } else {
                out.push(p);
            }
        }
    }
}

pub(super) fn build(doc: Value, home: Option<&str>) -> Result<Loaded, ConfigError> {
    let mut warnings = Vec::new();
    let mut r = Reader {
        doc: &doc,
        problems: Vec::new(),
    };

    let name = r.string("name", true).unwrap_or_default();
    if name == PLACEHOLDER {
        r.problem(
            "name",
            format!("{name} didn't pass validation: this name is reserved"),
        );
    }
    let scope = r.string("scope", true).unwrap_or_default();
    let namespace = r
        .string("namespace", false)
        .unwrap_or_else(|| "/service".into());

    let rest_listen = r.string("restapi.listen", true).unwrap_or_default();
    let rest_connect = r
        .string("restapi.connect_address", true)
        .unwrap_or_default();
    let rest_auth = r.credentials("restapi.authentication", false);
    let allowlist: Vec<String> = match r.get("restapi.allowlist") {
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(|v| match v {
                Value::String(s) => Some(s.clone()),
                Value::Null => None,
                other => Some(other.to_string()),
            })
            .collect(),
        Some(Value::String(s)) => s
            .split(',')
            .map(|x| x.trim().to_string())
            .filter(|x| !x.is_empty())
            .collect(),
        _ => Vec::new(),
    };
    let allowlist_include_members = r
        .boolean("restapi.allowlist_include_members")
        .unwrap_or(false);
    let tls = r.string("restapi.certfile", false).map(|certfile| {
        let keyfile = r
            .string("restapi.keyfile", false)
            .unwrap_or_else(|| certfile.clone());
        TlsServerConfig {
            certfile: PathBuf::from(certfile),
            keyfile: PathBuf::from(keyfile),
            keyfile_password: r.string("restapi.keyfile_password", false),
            cafile: r.string("restapi.cafile", false).map(PathBuf::from),
            verify_client: r
                .string("restapi.verify_client", false)
                .unwrap_or_else(|| "none".into()),
            ciphers: r.string("restapi.ciphers", false),
        }
    });
    let ctl_tls = CtlTls {
        certfile: r.string("ctl.certfile", false).map(PathBuf::from),
        keyfile: r.string("ctl.keyfile", false).map(PathBuf::from),
        keyfile_password: r.string("ctl.keyfile_password", false),
        cacert: r
            .string("ctl.cacert", false)
            .or_else(|| r.string("restapi.cafile", false))
            .map(PathBuf::from),
        insecure: r.boolean("ctl.insecure").unwrap_or(false),
    };
    let ctl_auth = r
        .credentials("ctl.authentication", false)
        .or_else(|| rest_auth.clone());

    let section = if r.get("etcd3").is_some() {
        "etcd3"
    } else if r.get("etcd").is_some() {
        r.problem("etcd", ETCD_V2_REFUSED);
        "etcd"
    } else {
        r.problem("etcd3", "is not defined.");
        "etcd3"
    };
    let etcd = etcd_section(&mut r, section, &mut warnings);

    let dcs = match r.get("bootstrap.dcs") {
        Some(Value::Object(m)) => m.clone(),
        Some(other) => {
            r.problem(
                "bootstrap.dcs",
                format!("{other} didn't pass validation: expected a mapping"),
            );
            Map::new()
        }
        None => Map::new(),
    };
    let bootstrap = BootstrapConfig {
        dcs,
        initdb: r.options("bootstrap.initdb", INITDB_FORBIDDEN),
        pg_hba: r.lines("bootstrap.pg_hba").unwrap_or_default(),
        post_bootstrap: r
            .string("bootstrap.post_bootstrap", false)
            .or_else(|| r.string("bootstrap.post_init", false)),
        method: methods::bootstrap_method(&mut r, &mut warnings),
    };
    if bootstrap
        .dcs
        .get("postgresql")
        .and_then(Value::as_object)
        .is_some_and(|p| {
            p.contains_key("create_replica_methods") || p.contains_key("create_replica_method")
        })
    {
        warnings.push(
            "bootstrap.dcs.postgresql.create_replica_methods: pgpilot reads replica creation \
             methods only from the local postgresql section; ignored here"
                .into(),
        );
    }

    let create_replica_methods = methods::replica_methods(&mut r, &mut warnings);
    let other_replica_methods = methods::other_replica_methods(&mut r, MODELLED, &mut warnings);
    // `bootstrap.dcs.standby_cluster.create_replica_methods` names methods by their local
    // `postgresql.<name>` sections.
    if let Some(Value::Array(names)) = bootstrap
        .dcs
        .get("standby_cluster")
        .and_then(|s| s.get("create_replica_methods"))
    {
        for name in names.iter().filter_map(Value::as_str) {
            let known = name == "basebackup"
                || create_replica_methods
                    .iter()
                    .chain(&other_replica_methods)
                    .any(|m| m.name() == name);
            if !known {
                warnings.push(format!(
                    "bootstrap.dcs.standby_cluster.create_replica_methods: {name} has no \
                     postgresql.{name} section with a command; the standby leader will run \
                     `{name}` as its command, as Patroni does"
                ));
            }
        }
    }

    let (listen_addresses, port) = r.host_port("postgresql.listen").unwrap_or_default();
    let connect_address = r
        .string("postgresql.connect_address", true)
        .unwrap_or_default();
    let data_dir = PathBuf::from(r.string("postgresql.data_dir", true).unwrap_or_default());
    let config_dir = r
        .string("postgresql.config_dir", false)
        .map_or_else(|| data_dir.clone(), PathBuf::from);
    let bin_dir = PathBuf::from(r.string("postgresql.bin_dir", false).unwrap_or_default());
    let pgpass = r.string("postgresql.pgpass", false).map_or_else(
        || PathBuf::from(home.unwrap_or("/tmp")).join("pgpass"),
        PathBuf::from,
    );
    // Legacy layout: postgresql.superuser / postgresql.replication without `authentication`.
    let auth_base = if r.get("postgresql.authentication").is_none()
        && (r.get("postgresql.superuser").is_some() || r.get("postgresql.replication").is_some())
    {
        "postgresql"
    } else {
        "postgresql.authentication"
    };
    let superuser = r
        .pg_credentials(&format!("{auth_base}.superuser"), true, &mut warnings)
        .unwrap_or_default();
    let replication = r
        .pg_credentials(&format!("{auth_base}.replication"), true, &mut warnings)
        .unwrap_or_default();
    let rewind = r.pg_credentials(&format!("{auth_base}.rewind"), false, &mut warnings);
    if let Some(other) = r
        .get("postgresql.authentication")
        .and_then(Value::as_object)
        .map(|m| {
            m.keys()
                .filter(|k| !["superuser", "replication", "rewind"].contains(&k.as_str()))
                .map(|k| format!("postgresql.authentication.{k}"))
                .collect::<Vec<_>>()
        })
        .filter(|o| !o.is_empty())
    {
        warnings.push(format!(
            "{}: not a role pgpilot connects as (superuser, replication, rewind); ignored",
            other.join(", ")
        ));
    }
    let use_unix_socket = r.boolean("postgresql.use_unix_socket").unwrap_or(false);
    let use_unix_socket_repl = r
        .boolean("postgresql.use_unix_socket_repl")
        .unwrap_or(false);
    let mut parameters = match r.get("postgresql.parameters") {
        Some(Value::Object(m)) => m.clone(),
        _ => Map::new(),
    };
    let ignored: Vec<String> = parameters
        .keys()
        .filter(|k| CLUSTER_WIDE.contains(&k.as_str()))
        .cloned()
        .collect();
    for k in &ignored {
        parameters.remove(k);
    }
    if !ignored.is_empty() {
        warnings.push(format!(
            "postgresql.parameters: {} can only be set in the dynamic configuration (bootstrap.dcs or /config); ignored here",
            ignored.join(", ")
        ));
    }
    // Patroni's build_recovery_params: the recovery targets and the upstream are its own.
    let recovery_conf: BTreeMap<String, String> = match r.get("postgresql.recovery_conf") {
        Some(Value::Object(m)) => m
            .iter()
            .filter(|(k, _)| {
                let k = k.to_ascii_lowercase();
                !k.starts_with("recovery_target")
                    && !matches!(
                        k.as_str(),
                        "primary_conninfo" | "primary_slot_name" | "standby_mode"
                    )
            })
            .map(|(k, v)| (k.clone(), guc_value(v)))
            .collect(),
        None | Some(Value::Null) => BTreeMap::new(),
        Some(other) => {
            r.problem(
                "postgresql.recovery_conf",
                format!("{other} didn't pass validation: expected a mapping"),
            );
            BTreeMap::new()
        }
    };
    let pg_ctl_timeout = r.number("postgresql.pg_ctl_timeout").unwrap_or(60.0);
    let callbacks: BTreeMap<String, String> = match r.get("postgresql.callbacks") {
        Some(Value::Object(m)) => m
            .iter()
            .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
            .collect(),
        _ => BTreeMap::new(),
    };
    let postgresql = PostgresqlConfig {
        listen_addresses,
        port,
        connect_address,
        data_dir,
        config_dir,
        bin_dir,
        pgpass,
        superuser,
        replication,
        rewind,
        use_unix_socket,
        use_unix_socket_repl,
        parameters,
        pg_hba: r.lines("postgresql.pg_hba"),
        basebackup: r.options("postgresql.basebackup", BASEBACKUP_FORBIDDEN),
        create_replica_methods,
        other_replica_methods,
        pg_ctl_timeout: Duration::from_secs_f64(pg_ctl_timeout.max(1.0)),
        recovery_conf,
        use_pg_rewind: r.boolean("postgresql.use_pg_rewind"),
        remove_data_directory_on_rewind_failure: r
            .boolean("postgresql.remove_data_directory_on_rewind_failure")
            .unwrap_or(false),
        remove_data_directory_on_diverged_timelines: r
            .boolean("postgresql.remove_data_directory_on_diverged_timelines")
            .unwrap_or(false),
        callbacks,
        pre_promote: r.string("postgresql.pre_promote", false),
        before_stop: r.string("postgresql.before_stop", false),
    };
    let tags = tags(&mut r, &mut warnings);
    let watchdog = watchdog(&mut r);
    let guard = r.boolean("pgpilot.guard").unwrap_or(true);
    let client_continuity = continuity::client_continuity(&mut r);
    let log = log_section(&mut r, &mut warnings);

    // A user who put `standby_cluster` in the local section expects a standby cluster; like
    // Patroni, only the dynamic configuration makes one, so say so by name.
    if doc.get("standby_cluster").is_some() {
        warnings.push(
            "standby_cluster: read only from the dynamic configuration (bootstrap.dcs.\
             standby_cluster, then /config), as in Patroni; this local section is ignored and \
             does not make this a standby cluster"
                .into(),
        );
    }
    let mut unknown = Vec::new();
    leaf_paths(
        "",
        &doc,
        &methods::method_sections(&r, MODELLED),
        &mut unknown,
    );
    if !unknown.is_empty() {
        warnings.push(format!(
            "keys not implemented by pgpilot yet, accepted and ignored: {}",
            unknown.join(", ")
        ));
    }
    if !r.problems.is_empty() {
        return Err(ConfigError::Invalid(r.problems));
    }
    let config = Config {
        name,
        scope,
        namespace,
        restapi: RestApiConfig {
            listen: rest_listen,
            connect_address: rest_connect,
            authentication: rest_auth,
            allowlist,
            allowlist_include_members,
            tls,
        },
        ctl: CtlConfig {
            authentication: ctl_auth,
            tls: ctl_tls,
        },
        etcd,
        bootstrap,
        postgresql,
        tags,
        log,
        watchdog,
        guard,
        client_continuity,
        raw: doc.clone(),
    };
    Ok(Loaded { config, warnings })
}
