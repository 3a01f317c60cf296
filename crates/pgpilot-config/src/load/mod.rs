//! Reading the local configuration: file, directory or `PATRONI_CONFIGURATION`, environment
//! over it, then the typed [`Config`] with every problem named by its key path.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pgpilot_values::{guc_value, truthy};
use serde_json::{Map, Value};

use crate::{
    env, yaml, BootstrapConfig, Config, ConfigError, Credentials, CtlConfig, EtcdConfig, Loaded,
    LogConfig, PostgresqlConfig, Problem, RestApiConfig, Tags, WatchdogConfig, WatchdogDriver,
    WatchdogMode,
};
use crate::{CtlTls, TlsServerConfig};

mod continuity;
mod methods;

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

/// Builds a [`Config`] from an already merged document (used by tests and `load`).
pub fn load_from_value(doc: Value) -> Result<Loaded, ConfigError> {
    build(doc, std::env::var("HOME").ok().as_deref())
}

/// Typed access to the document that collects problems instead of stopping at the first.
pub(crate) struct Reader<'a> {
    pub doc: &'a Value,
    pub problems: Vec<Problem>,
}

impl<'a> Reader<'a> {
    pub fn get(&self, path: &str) -> Option<&'a Value> {
        let mut cur = self.doc;
        for part in path.split('.') {
            cur = cur.as_object()?.get(part)?;
        }
        Some(cur).filter(|v| !v.is_null())
    }

    fn problem(&mut self, path: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    pub fn string(&mut self, path: &str, required: bool) -> Option<String> {
        match self.get(path) {
            Some(Value::String(s)) if !s.is_empty() => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            Some(Value::Bool(b)) => Some(b.to_string()),
            Some(Value::String(_)) | None => {
                if required {
                    self.problem(path, "is not defined.");
                }
                None
            }
            Some(other) => {
                self.problem(
                    path,
                    format!("{other} didn't pass validation: expected a string"),
                );
                None
            }
        }
    }

    /// Patroni's `parse_bool`; any other value is a problem.
    pub fn boolean(&mut self, path: &str) -> Option<bool> {
        let v = self.get(path)?;
        let b = pgpilot_values::parse_bool(v);
        if b.is_none() {
            let shown = v.as_str().map_or_else(|| v.to_string(), str::to_string);
            self.problem(
                path,
                format!("{shown} didn't pass validation: expected a boolean"),
            );
        }
        b
    }

    pub fn number(&mut self, path: &str) -> Option<f64> {
        match self.get(path)? {
            Value::Number(n) => n.as_f64(),
            Value::String(s) => match s.trim().parse::<f64>() {
                Ok(f) => Some(f),
                Err(_) => {
                    self.problem(
                        path,
                        format!("{s} didn't pass validation: expected a number"),
                    );
                    None
                }
            },
            other => {
                self.problem(
                    path,
                    format!("{other} didn't pass validation: expected a number"),
                );
                None
            }
        }
    }

    fn credentials(&mut self, path: &str, required: bool) -> Option<Credentials> {
        if self.get(path).is_none() {
            if required {
                self.problem(path, "is not defined.");
            }
            return None;
        }
        let username = self.string(&format!("{path}.username"), true)?;
        let password = self.string(&format!("{path}.password"), false);
        Some(Credentials {
            username,
            password,
            options: BTreeMap::new(),
        })
    }

    /// A `postgresql.authentication.<role>` entry: username, password and the libpq options
    /// Patroni passes on (`sslmode`, `sslcert`, ...). Values of the enumerated options are
    /// checked here, so a typo is refused at start rather than at the first connection; any
    /// other key is named in a warning.
    fn pg_credentials(
        &mut self,
        path: &str,
        required: bool,
        warnings: &mut Vec<String>,
    ) -> Option<Credentials> {
        let mut creds = self.credentials(path, required)?;
        let Some(Value::Object(entry)) = self.get(path) else {
            return Some(creds);
        };
        for key in entry.keys() {
            if key == "username" || key == "password" {
                continue;
            }
            let key_path = format!("{path}.{key}");
            if !pgpilot_values::AUTH_LIBPQ_OPTIONS.contains(&key.as_str()) {
                warnings.push(format!(
                    "{key_path}: not a connection option Patroni or pgpilot pass to libpq; ignored"
                ));
                continue;
            }
            let Some(value) = self.string(&key_path, false) else {
                continue;
            };
            let allowed: &[&str] = match key.as_str() {
                "sslmode" => &[
                    "disable",
                    "allow",
                    "prefer",
                    "require",
                    "verify-ca",
                    "verify-full",
                ],
                "gssencmode" | "channel_binding" => &["disable", "prefer", "require"],
                "sslnegotiation" => &["postgres", "direct"],
                _ => &[],
            };
            if !allowed.is_empty() && !allowed.contains(&value.as_str()) {
                self.problem(
                    &key_path,
                    format!(
                        "{value} didn't pass validation: expected one of {}",
                        allowed.join(", ")
                    ),
                );
                continue;
            }
            creds.options.insert(key.clone(), value);
        }
        Some(creds)
    }

    /// `host:port` split; problems name `path`.
    fn host_port(&mut self, path: &str) -> Option<(String, u16)> {
        let s = self.string(path, true)?;
        match s.rsplit_once(':') {
            Some((h, p)) => match p.parse::<u16>() {
                Ok(port) => Some((h.to_string(), port)),
                Err(_) => {
                    self.problem(
                        path,
                        format!("{s} didn't pass validation: the port is not a number"),
                    );
                    None
                }
            },
            None => {
                self.problem(
                    path,
                    format!("{s} didn't pass validation: expected host:port"),
                );
                None
            }
        }
    }

    /// `initdb`/`basebackup` option lists: `opt`, `{opt: value}`, or a mapping.
    fn options(&mut self, path: &str, forbidden: &[&str]) -> Vec<String> {
        let mut out = Vec::new();
        let mut push = |me: &mut Self, k: &str, v: Option<&Value>| {
            if forbidden.contains(&k) {
                me.problem(
                    path,
                    format!("{k} didn't pass validation: option {k} is not allowed"),
                );
                return;
            }
            match v {
                None | Some(Value::Null) => out.push(format!("--{k}")),
                Some(Value::String(s)) => out.push(format!("--{k}={s}")),
                Some(other) => out.push(format!("--{k}={other}")),
            }
        };
        match self.get(path) {
            None => {}
            Some(Value::Array(items)) => {
                for item in items {
                    match item {
                        Value::String(s) => push(self, s, None),
                        Value::Object(m) if m.len() == 1 => {
                            for (k, v) in m {
                                push(self, k, Some(v));
                            }
                        }
                        other => self.problem(path, format!("{other} didn't pass validation: expected an option or a single-key mapping")),
                    }
                }
            }
            Some(Value::Object(m)) => {
                for (k, v) in m {
                    push(self, k, Some(v));
                }
            }
            Some(other) => self.problem(
                path,
                format!("{other} didn't pass validation: expected a list"),
            ),
        }
        out
    }

    fn lines(&mut self, path: &str) -> Option<Vec<String>> {
        match self.get(path)? {
            Value::Array(items) => Some(
                items
                    .iter()
                    .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_string))
                    .collect(),
            ),
            other => {
                self.problem(
                    path,
                    format!("{other} didn't pass validation: expected a list of lines"),
                );
                None
            }
        }
    }
}

/// One etcd endpoint as `host:port`: a URL scheme and trailing slash are dropped, the port
/// defaults to 2379.
pub fn etcd_endpoint(h: &str) -> String {
    let h = h.trim();
    let h = h
        .split_once("://")
        .map_or(h, |(_, rest)| rest)
        .trim_end_matches('/');
    if h.rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        h.to_string()
    } else {
        format!("{h}:2379")
    }
}

/// The endpoints of an etcd section as written: `hosts` (list or comma string), else `host`,
/// `url` or `proxy` (comma strings), each maybe with a scheme.
fn etcd_hosts(r: &mut Reader<'_>, section: &str) -> Vec<String> {
    let split = |s: &str| -> Vec<String> {
        s.split(',')
            .map(str::trim)
            .filter(|x| !x.is_empty())
            .map(str::to_string)
            .collect()
    };
    if let Some(v) = r.get(&format!("{section}.hosts")) {
        return match v {
            Value::Array(a) => a
                .iter()
                .filter_map(Value::as_str)
                .map(|h| h.trim().to_string())
                .collect(),
            Value::String(s) => split(s),
            _ => Vec::new(),
        };
    }
    for key in ["host", "url", "proxy"] {
        if let Some(s) = r.string(&format!("{section}.{key}"), false) {
            return split(&s);
        }
    }
    Vec::new()
}

/// An endpoint as it may be shown: `scheme://user:password@host` loses `user:password@`.
fn without_userinfo(endpoint: &str) -> String {
    // Up to the last `@`, as the endpoint parser reads it: a password may contain `@`.
    match endpoint.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((_, host)) => format!("{scheme}://{host}"),
            None => endpoint.to_string(),
        },
        None => endpoint.to_string(),
    }
}

/// The `etcd3` (or `etcd`) section: endpoints, their one scheme, credentials and TLS files.
///
/// The scheme of an endpoint is its URL's (`url: https://...`, `hosts: [https://h:2379]`), else
/// `protocol`, else http. An https endpoint is never turned into a plaintext one: endpoints of
/// different schemes, or a URL scheme that contradicts `protocol`, are refused. As in Patroni,
/// user and password may come from a URL (`https://user:pass@host`).
fn etcd_section(r: &mut Reader<'_>, section: &str, warnings: &mut Vec<String>) -> EtcdConfig {
    let written = etcd_hosts(r, section);
    if written.is_empty() && r.get(section).is_some() {
        r.problem(&format!("{section}.hosts"), "is not defined.");
    }
    let protocol_key = format!("{section}.protocol");
    let configured = r.string(&protocol_key, false);
    if let Some(p) = &configured {
        if p != "http" && p != "https" {
            r.problem(
                &protocol_key,
                format!("{p} didn't pass validation: expected http or https"),
            );
        }
    }
    let mut schemes: Vec<String> = Vec::new();
    let mut hosts = Vec::new();
    let mut url_user: Option<(String, Option<String>)> = None;
    for h in &written {
        let (scheme, rest) = match h.split_once("://") {
            Some((s, rest)) => (Some(s.to_ascii_lowercase()), rest),
            None => (None, h.as_str()),
        };
        let rest = rest.split('/').next().unwrap_or_default();
        let rest = match rest.rsplit_once('@') {
            Some((userinfo, host)) => {
                let (u, p) = match userinfo.split_once(':') {
                    Some((u, p)) => (u.to_string(), Some(p.to_string())),
                    None => (userinfo.to_string(), None),
                };
                url_user.get_or_insert((u, p));
                host
            }
            None => rest,
        };
        if let Some(s) = &scheme {
            if s != "http" && s != "https" {
                r.problem(
                    &format!("{section}.hosts"),
                    format!(
                        "{} didn't pass validation: the scheme must be http or https",
                        without_userinfo(h)
                    ),
                );
            }
        }
        let scheme = scheme
            .or_else(|| configured.clone())
            .unwrap_or_else(|| "http".into());
        if !schemes.contains(&scheme) {
            schemes.push(scheme);
        }
        hosts.push(etcd_endpoint(rest));
    }
    if schemes.len() > 1 {
        r.problem(
            &format!("{section}.hosts"),
            format!(
                "{} didn't pass validation: the endpoints mix {}; use one scheme for all of them",
                written
                    .iter()
                    .map(|h| without_userinfo(h))
                    .collect::<Vec<_>>()
                    .join(","),
                schemes.join(" and ")
            ),
        );
    }
    let protocol = schemes
        .first()
        .cloned()
        .or_else(|| configured.clone())
        .unwrap_or_else(|| "http".into());
    if let Some(p) = &configured {
        if *p != protocol && schemes.len() == 1 {
            r.problem(
                &protocol_key,
                format!("{p} didn't pass validation: the endpoints say {protocol}"),
            );
        }
    }
    let path = |r: &mut Reader<'_>, key: &str| {
        r.string(&format!("{section}.{key}"), false)
            .map(PathBuf::from)
    };
    let (cacert, cert, key) = (path(r, "cacert"), path(r, "cert"), path(r, "key"));
    if protocol != "https" {
        let unused: Vec<String> = [("cacert", &cacert), ("cert", &cert), ("key", &key)]
            .iter()
            .filter(|(_, v)| v.is_some())
            .map(|(k, _)| format!("{section}.{k}"))
            .collect();
        if !unused.is_empty() {
            warnings.push(format!(
                "{} not used: the etcd endpoints are http (set {section}.protocol: https or https:// URLs for TLS)",
                unused.join(", ")
            ));
        }
    }
    let (url_username, url_password) = url_user.unzip();
    EtcdConfig {
        section: section.to_string(),
        hosts,
        protocol,
        username: r
            .string(&format!("{section}.username"), false)
            .or(url_username),
        password: r
            .string(&format!("{section}.password"), false)
            .or(url_password.flatten()),
        use_proxies: r.get(&format!("{section}.proxy")).is_some()
            || r.boolean(&format!("{section}.use_proxies"))
                .unwrap_or(false),
        cacert,
        cert,
        key,
        key_password: r.string(&format!("{section}.key_password"), false),
    }
}

/// Why an `etcd:` section (Patroni's etcd v2 API) stops the agent and pgpilotctl. The v2 and v3
/// key spaces of etcd are disjoint: read as v3, a section that Patroni members use through v2
/// would show an empty cluster, and an agent could bootstrap a second one beside them.
const ETCD_V2_REFUSED: &str = "is Patroni's etcd v2 API, which pgpilot does not speak: pgpilot \
     uses etcd's v3 API, whose keys are separate from v2's, so it would not see a cluster kept in \
     v2 and could bootstrap a second one. Rename the section to etcd3 (same keys; \
     PATRONI_ETCD3_* for the environment) once the cluster's keys live in the v3 store: a new \
     cluster, or a Patroni cluster switched to etcd3 (stop it, copy its keys into v3, e.g. \
     `etcdctl migrate` on etcd 3.4, then start the members with etcd3)";

/// The etcd section of a merged document (`etcd3`, else `etcd`), without validating anything
/// else: what pgpilotctl reads. `Ok(None)` when there is no etcd section.
pub fn etcd_from_document(doc: &Value) -> Result<Option<(EtcdConfig, Vec<String>)>, ConfigError> {
    let mut r = Reader {
        doc,
        problems: Vec::new(),
    };
    let Some(section) = ["etcd3", "etcd"].into_iter().find(|s| r.get(s).is_some()) else {
        return Ok(None);
    };
    if section == "etcd" {
        r.problem("etcd", ETCD_V2_REFUSED);
        return Err(ConfigError::Invalid(r.problems));
    }
    let mut warnings = Vec::new();
    let etcd = etcd_section(&mut r, section, &mut warnings);
    if !r.problems.is_empty() {
        return Err(ConfigError::Invalid(r.problems));
    }
    Ok(Some((etcd, warnings)))
}

fn tags(r: &mut Reader<'_>, warnings: &mut Vec<String>) -> Tags {
    let mut t = Tags {
        failover_priority: 1,
        ..Default::default()
    };
    let Some(Value::Object(map)) = r.get("tags").cloned() else {
        return t;
    };
    t.nofailover = pgpilot_values::bool_tag(&map, "nofailover", "failover_priority");
    t.failover_priority = pgpilot_values::priority_tag(&map, "nofailover", "failover_priority");
    t.nosync = pgpilot_values::bool_tag(&map, "nosync", "sync_priority");
    t.noloadbalance = map.get("noloadbalance").is_some_and(truthy);
    t.clonefrom = map.get("clonefrom").is_some_and(truthy);
    t.nostream = map.get("nostream").is_some_and(truthy);
    t.replicatefrom = map
        .get("replicatefrom")
        .and_then(Value::as_str)
        .map(str::to_string);
    warnings.extend(pgpilot_values::conflicting_tags(&map));
    for (k, v) in &map {
        let keep = match k.as_str() {
            "nofailover" => truthy(v) || map.contains_key("failover_priority"),
            "nosync" => truthy(v) || map.contains_key("sync_priority"),
            "clonefrom" | "noloadbalance" | "nostream" => truthy(v),
            _ => true,
        };
        if keep {
            t.published.insert(k.clone(), v.clone());
        }
    }
    t
}

/// The `watchdog` section (spec/config.md §3.10). A mode, driver or margin Patroni's
/// `--validate-config` would refuse is a problem rather than Patroni's runtime fallback to `off`:
/// a misspelt `required` must not silently run a leader without its fence. Patroni's runtime
/// spellings (`auto`, `require`, `disable(d)`) are accepted.
fn watchdog(r: &mut Reader<'_>) -> WatchdogConfig {
    let mut w = WatchdogConfig::default();
    match r.get("watchdog") {
        None | Some(Value::Object(_)) => {}
        Some(other) => {
            r.problem(
                "watchdog",
                format!("{other} didn't pass validation: expected a mapping"),
            );
            return w;
        }
    }
    match r.get("watchdog.mode") {
        None => {}
        Some(Value::Bool(false)) => w.mode = WatchdogMode::Off,
        Some(v) => {
            let shown = v.as_str().map_or_else(|| v.to_string(), str::to_string);
            match shown.to_ascii_lowercase().as_str() {
                "off" | "disable" | "disabled" => w.mode = WatchdogMode::Off,
                "automatic" | "auto" => w.mode = WatchdogMode::Automatic,
                "required" | "require" => w.mode = WatchdogMode::Required,
                _ => r.problem(
                    "watchdog.mode",
                    format!("{shown} didn't pass validation: must be off, automatic or required"),
                ),
            }
        }
    }
    if let Some(device) = r.string("watchdog.device", false) {
        w.device = PathBuf::from(device);
    }
    match r.get("watchdog.safety_margin") {
        None => {}
        Some(Value::Number(n)) if n.as_i64().is_some_and(|m| m >= -1) => {
            w.safety_margin = n.as_i64().unwrap_or(5);
        }
        Some(v) => r.problem(
            "watchdog.safety_margin",
            format!("{v} didn't pass validation: expected an integer, at least -1"),
        ),
    }
    match r.string("watchdog.driver", false).as_deref() {
        None | Some("default") => {}
        Some("testing") => w.driver = WatchdogDriver::Testing,
        Some(other) => r.problem(
            "watchdog.driver",
            format!("{other} didn't pass validation: must be default or testing"),
        ),
    }
    w
}

/// The `log` section as Patroni's `PatroniLogger.reload_config` reads it; what it would warn
/// about (a `format` of the wrong shape) is a warning here too.
fn log_section(r: &mut Reader, warnings: &mut Vec<String>) -> LogConfig {
    let mut log = LogConfig::default();
    if let Some(level) = r.string("log.level", false) {
        log.level = level;
    }
    log.format_json = r
        .string("log.type", false)
        .is_some_and(|t| t.eq_ignore_ascii_case("json"));
    match r.get("log.format") {
        None => {}
        Some(Value::String(f)) => {
            log.plain_format = f.clone();
            log.json_fields = LogConfig::template_fields(f)
                .into_iter()
                .map(|f| (f.clone(), f))
                .collect();
        }
        Some(Value::Array(items)) => {
            let mut fields = Vec::new();
            for item in items {
                match item {
                    Value::String(f) => fields.push((f.clone(), f.clone())),
                    Value::Object(m) => {
                        for (field, renamed) in m {
                            match renamed {
                                Value::String(to) => fields.push((field.clone(), to.clone())),
                                other => warnings.push(format!(
                                    "log.format: expected renamed log field to be a string, but got {other}"
                                )),
                            }
                        }
                    }
                    other => warnings.push(format!(
                        "log.format: expected each item of log format to be a string or dictionary, but got {other}"
                    )),
                }
            }
            if !fields.is_empty() {
                log.json_fields = fields;
            }
            if !log.format_json {
                warnings.push(
                    "log.format: expected a string when log type is plain, using the default format"
                        .into(),
                );
            }
        }
        Some(other) => warnings.push(format!(
            "log.format: expected a string or a list, but got {other}; using the default format"
        )),
    }
    log.dateformat = r.string("log.dateformat", false);
    if let Some(v) = r.get("log.static_fields") {
        match v {
            Value::Object(m) => log.static_fields = m.clone(),
            other => r.problem(
                "log.static_fields",
                format!("{other} didn't pass validation: expected a dictionary"),
            ),
        }
    }
    log.dir = r.string("log.dir", false).map(PathBuf::from);
    if let Some(n) = r.number("log.file_size") {
        log.file_size = n.max(0.0) as u64;
    }
    if let Some(n) = r.number("log.file_num") {
        log.file_num = n.max(0.0) as usize;
    }
    if let Some(n) = r.number("log.mode") {
        if (0.0..=f64::from(0o777)).contains(&n) {
            log.mode = Some(n as u32);
        } else {
            r.problem(
                "log.mode",
                format!("{n} didn't pass validation: must be between 0 and 511 (0o777)"),
            );
        }
    }
    log
}

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

fn build(doc: Value, home: Option<&str>) -> Result<Loaded, ConfigError> {
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

#[cfg(test)]
mod tests {
    /// Nothing of a URL's user or password survives, whatever characters the password holds.
    #[test]
    fn userinfo_is_dropped_up_to_the_last_at() {
        for (url, shown) in [
            ("https://u:p@h:2379", "https://h:2379"),
            ("https://u:p@ss@h:2379", "https://h:2379"),
            ("http://h:2379", "http://h:2379"),
            ("h:2379", "h:2379"),
        ] {
            assert_eq!(super::without_userinfo(url), shown, "{url}");
        }
    }
}
