//! The typed configuration of one agent.
//!
//! Two layers, as in Patroni (spec/config.md §3.1):
//! * the **local** configuration: a YAML file (or a directory of `*.yml`/`*.yaml` files merged in
//!   sorted order, or `PATRONI_CONFIGURATION`), with `PATRONI_*` environment variables merged over
//!   it, turned into [`Config`];
//! * the **dynamic** configuration: the `/config` document in the DCS (seeded from
//!   `bootstrap.dcs`), turned into [`DynamicConfig`] every cycle.
//!
//! Unknown keys: a valid Patroni configuration is never refused. Keys pgpilot does not implement
//! are kept in [`Config::raw`] and named once in [`Loaded::warnings`]; the dynamic document is kept
//! whole in [`DynamicConfig::raw`] because patronictl round-trips it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

mod dynamic;
mod env;
mod load;
mod validate;
pub mod yaml;

pub use dynamic::{
    DynamicConfig, PermanentSlot, SlotMatcher, StandbyCluster, FAILSAFE_NOT_IMPLEMENTED,
    FENCED_MIN_RETRY_TIMEOUT, FENCED_MIN_TTL, MIN_RETRY_TIMEOUT, MIN_TTL,
};
pub use load::{
    deep_merge, etcd_endpoint, etcd_from_document, load, load_document, load_from_value,
};
pub use pgpilot_values::{
    BootstrapRecovery, CustomBootstrap, MethodCommand, ReplicaMethod, SyncMode,
};
pub use validate::validate;

/// A problem with the configuration, always naming the key path (`postgresql.listen`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct Problem {
    pub path: String,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("can not read {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: invalid YAML: {message}")]
    Yaml { path: String, message: String },
    #[error("invalid configuration:\n{}", .0.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid(Vec<Problem>),
}

/// A loaded local configuration and what the loader wants to tell the user once.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    /// E.g. `keys not implemented by pgpilot yet, accepted and ignored: watchdog, citus`.
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct Credentials {
    pub username: String,
    pub password: Option<String>,
    /// libpq options of a `postgresql.authentication` role (`sslmode`, `sslcert`, ...); empty
    /// for the REST credentials.
    pub options: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub name: String,
    pub scope: String,
    /// Default `/service`.
    pub namespace: String,
    pub restapi: RestApiConfig,
    pub ctl: CtlConfig,
    pub etcd: EtcdConfig,
    pub bootstrap: BootstrapConfig,
    pub postgresql: PostgresqlConfig,
    pub tags: Tags,
    pub log: LogConfig,
    pub watchdog: WatchdogConfig,
    /// `pgpilot.guard` (env `PGPILOT_GUARD`), a pgpilot-only key, default on: a leader runs a
    /// guard process beside the agent that stops PostgreSQL when the lease deadline it was last
    /// given passes (`pgpilot_ha::guard`). `off` leaves fencing to the agent and the watchdog.
    pub guard: bool,
    /// `pgpilot.client_continuity`, a pgpilot-only section (absent: off): the poolers and
    /// proxies a planned switchover pauses and re-points so that clients see no error.
    pub client_continuity: Option<ClientContinuity>,
    /// The whole merged local document (file + env), for keys not modelled here.
    pub raw: Value,
}

#[derive(Debug, Clone, PartialEq)]
pub struct RestApiConfig {
    /// `host:port` to bind.
    pub listen: String,
    /// `host:port` published as `api_url = http://<connect_address>/patroni`.
    pub connect_address: String,
    pub authentication: Option<Credentials>,
    /// `restapi.allowlist`: hosts, IPs or CIDRs allowed to call mutating endpoints.
    pub allowlist: Vec<String>,
    /// `restapi.allowlist_include_members`: members' api_url hosts are allowed too.
    pub allowlist_include_members: bool,
    /// HTTPS, when `restapi.certfile` is set.
    pub tls: Option<TlsServerConfig>,
}

/// `restapi.certfile`/`keyfile`/`cafile`/`verify_client`.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsServerConfig {
    pub certfile: PathBuf,
    /// Defaults to `certfile` (a PEM holding both).
    pub keyfile: PathBuf,
    /// `restapi.keyfile_password`: the password of an encrypted (PKCS#8) `keyfile`.
    pub keyfile_password: Option<String>,
    /// CA for client certificates.
    pub cafile: Option<PathBuf>,
    /// `none`, `optional` or `required`.
    pub verify_client: String,
    /// `restapi.ciphers`: an OpenSSL cipher string limiting the TLS 1.2 suites.
    pub ciphers: Option<String>,
}

/// TLS settings of outbound REST calls (`ctl.*`; `cacert` falls back to `restapi.cafile`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct CtlTls {
    pub certfile: Option<PathBuf>,
    pub keyfile: Option<PathBuf>,
    /// `ctl.keyfile_password`: the password of an encrypted (PKCS#8) `keyfile`.
    pub keyfile_password: Option<String>,
    pub cacert: Option<PathBuf>,
    pub insecure: bool,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct CtlConfig {
    /// Basic auth for outbound REST calls: `ctl.authentication`, else `restapi.authentication`.
    pub authentication: Option<Credentials>,
    pub tls: CtlTls,
}

/// `etcd3:` section (also accepted: `etcd:` — treated as v3 with a warning).
#[derive(Debug, Clone, PartialEq)]
pub struct EtcdConfig {
    /// `etcd3` or `etcd`: the section it was read from (to name keys in messages).
    pub section: String,
    /// `host:port` endpoints (from `host`, `hosts` list or comma string, or `url`); default port 2379.
    pub hosts: Vec<String>,
    /// `http` or `https`, for every endpoint: a URL's scheme, else `protocol`, else http
    /// (a mix is refused by validation).
    pub protocol: String,
    pub username: Option<String>,
    pub password: Option<String>,
    /// `use_proxies` (or `proxy` given): the endpoints are proxies, do not discover the etcd
    /// members behind them.
    pub use_proxies: bool,
    /// `cacert`: CA etcd's certificate is verified with (the system's CAs when absent).
    pub cacert: Option<PathBuf>,
    /// `cert` and `key`: client certificate (`key` defaults to the `cert` file).
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// `key_password`: the password of an encrypted (PKCS#8) `key`.
    pub key_password: Option<String>,
}

impl EtcdConfig {
    /// The endpoints as URLs with their scheme, as the etcd client takes them.
    pub fn urls(&self) -> Vec<String> {
        self.hosts
            .iter()
            .map(|h| format!("{}://{h}", self.protocol))
            .collect()
    }

    /// The TLS files for the etcd client.
    pub fn tls(&self) -> pgpilot_dcs::etcd::EtcdTls {
        pgpilot_dcs::etcd::EtcdTls {
            section: self.section.clone(),
            cacert: self.cacert.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
            key_password: self.key_password.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct BootstrapConfig {
    /// `bootstrap.dcs`, written to `/config` by the bootstrap winner.
    pub dcs: Map<String, Value>,
    /// `bootstrap.initdb` rendered as `--option` / `--option=value`.
    pub initdb: Vec<String>,
    /// `bootstrap.pg_hba` lines.
    pub pg_hba: Vec<String>,
    /// `bootstrap.post_bootstrap` (alias `post_init`).
    pub post_bootstrap: Option<String>,
    /// `bootstrap.method` naming a `bootstrap.<method>` section with a `command`; `None` =
    /// `initdb` (the default). A method without its section or command is refused at load:
    /// Patroni would run initdb instead, turning a restore into an empty cluster.
    pub method: Option<CustomBootstrap>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct PostgresqlConfig {
    /// `listen` split into `listen_addresses` and `port`.
    pub listen_addresses: String,
    pub port: u16,
    /// `host:port` published in `conn_url`.
    pub connect_address: String,
    pub data_dir: PathBuf,
    /// Default: data_dir.
    pub config_dir: PathBuf,
    /// Empty = PATH.
    pub bin_dir: PathBuf,
    /// Default `~/pgpass`.
    pub pgpass: PathBuf,
    pub superuser: Credentials,
    pub replication: Credentials,
    pub rewind: Option<Credentials>,
    /// `use_unix_socket`: the agent's own superuser connections go through the first absolute
    /// directory of `unix_socket_directories`.
    pub use_unix_socket: bool,
    /// `use_unix_socket_repl`: the same for replication connections to the local server.
    pub use_unix_socket_repl: bool,
    /// Local `postgresql.parameters` (cluster-wide ones are removed with a warning).
    pub parameters: Map<String, Value>,
    /// Local `postgresql.pg_hba` (overrides the dynamic one).
    pub pg_hba: Option<Vec<String>>,
    /// `postgresql.basebackup` rendered as `--option` / `--option=value`.
    pub basebackup: Vec<String>,
    /// `postgresql.create_replica_methods` (legacy `create_replica_method`) in order, each
    /// custom one with its `postgresql.<method>` section; `[basebackup]` when absent or empty.
    pub create_replica_methods: Vec<ReplicaMethod>,
    /// The other `postgresql.<name>` sections with a `command`: methods that only a standby
    /// cluster's `create_replica_methods` names.
    pub other_replica_methods: Vec<ReplicaMethod>,
    /// Default 60 s.
    pub pg_ctl_timeout: Duration,
    /// `postgresql.recovery_conf`: recovery settings of this member while it is a replica
    /// (`restore_command`, `archive_cleanup_command`, `recovery_min_apply_delay`, ...); the
    /// recovery targets, `primary_conninfo` and `primary_slot_name` are left out, as Patroni
    /// leaves them out.
    pub recovery_conf: BTreeMap<String, String>,
    /// Local `use_pg_rewind` (overrides the dynamic one when set).
    pub use_pg_rewind: Option<bool>,
    pub remove_data_directory_on_rewind_failure: bool,
    pub remove_data_directory_on_diverged_timelines: bool,
    /// `postgresql.callbacks.<action>` commands (`on_start`, `on_stop`, `on_restart`,
    /// `on_reload`, `on_role_change`; other names are kept and never run, as in Patroni).
    pub callbacks: BTreeMap<String, String>,
    /// `postgresql.pre_promote`: the fencing command run before a promotion; a non-zero exit
    /// cancels it and the leader key is released.
    pub pre_promote: Option<String>,
    /// `postgresql.before_stop`: a command run before PostgreSQL is stopped (its failure is
    /// only logged).
    pub before_stop: Option<String>,
}

/// `pgpilot.client_continuity`: during a switchover the old primary pauses every pgBouncer and
/// forces its own server down in every HAProxy, then forces the new primary up and resumes the
/// poolers once the new primary accepts writes (`pgpilot_ha::continuity`). Best effort: a
/// failure is logged and never blocks the switchover. Every member carries the same section.
#[derive(Debug, Clone, PartialEq)]
pub struct ClientContinuity {
    /// `pause_timeout` (seconds, default 5): the longest time clients are held, from `PAUSE`
    /// to `RESUME`.
    pub pause_timeout: Duration,
    /// `pgbouncer`: connection strings (libpq `key=value` or URL) of pgBouncer admin consoles
    /// (database `pgbouncer`).
    pub pgbouncer: Vec<String>,
    /// `haproxy`: runtime API sockets and the backends to steer.
    pub haproxy: Vec<HaproxyTarget>,
}

/// Where an HAProxy runtime API (`stats socket ... level admin`) listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HaproxyAddress {
    /// `socket: /run/haproxy/admin.sock`.
    Unix(PathBuf),
    /// `address: 127.0.0.1:9999` (a `stats socket ipv4@...`).
    Tcp(String),
}

impl std::fmt::Display for HaproxyAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            HaproxyAddress::Unix(p) => write!(f, "{}", p.display()),
            HaproxyAddress::Tcp(a) => f.write_str(a),
        }
    }
}

/// One entry of `pgpilot.client_continuity.haproxy`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HaproxyTarget {
    pub address: HaproxyAddress,
    /// `primary_backend`: the backend (or `listen` section) that routes writes.
    pub primary_backend: String,
    /// `replica_backend`: the one that routes reads, if any.
    pub replica_backend: Option<String>,
    /// `servers`: member name → HAProxy server name, where they differ (default: the same).
    pub servers: BTreeMap<String, String>,
}

impl HaproxyTarget {
    /// The HAProxy server name of `member`.
    pub fn server<'a>(&'a self, member: &'a str) -> &'a str {
        self.servers.get(member).map_or(member, String::as_str)
    }
}

/// `watchdog.mode` (spec/config.md §3.10), read as Patroni's `parse_mode`: `off` (also `false`,
/// `disable`, `disabled`), `automatic` (also `auto`; the default), `required` (also `require`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchdogMode {
    /// Never open a watchdog device.
    Off,
    /// Use the device while leader if it can be opened; go on without it otherwise.
    Automatic,
    /// Never take or hold the leader key without a working watchdog.
    Required,
}

/// The hidden `watchdog.driver`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchdogDriver {
    /// `default`: a Linux watchdog device (`/dev/watchdog`) through its ioctls.
    Linux,
    /// `testing`: Patroni's named-pipe protocol for its acceptance suite (`Ctimeout=<n>\n`,
    /// `1` per keepalive, `V` on close) written to `device`, a FIFO.
    Testing,
}

/// The `watchdog` section (local only: Patroni ignores one in `/config`). Absent = automatic
/// on `/dev/watchdog`, as in Patroni.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchdogConfig {
    pub mode: WatchdogMode,
    /// Default `/dev/watchdog`.
    pub device: PathBuf,
    /// Seconds between the watchdog firing and the leader key expiring: the watchdog timeout is
    /// `ttl - safety_margin`, or `ttl / 2` when it is -1. Default 5.
    pub safety_margin: i64,
    pub driver: WatchdogDriver,
}

impl Default for WatchdogConfig {
    fn default() -> Self {
        WatchdogConfig {
            mode: WatchdogMode::Automatic,
            device: PathBuf::from("/dev/watchdog"),
            safety_margin: 5,
            driver: WatchdogDriver::Linux,
        }
    }
}

impl WatchdogConfig {
    /// The watchdog timeout for a leader key `ttl` (seconds; may be ≤ 0 for a margin ≥ ttl,
    /// which the agent refuses as unsafe).
    pub fn timeout(&self, ttl: Duration) -> i64 {
        let ttl = i64::try_from(ttl.as_secs()).unwrap_or(i64::MAX);
        if self.safety_margin == -1 {
            ttl / 2
        } else {
            ttl - self.safety_margin
        }
    }
}

/// `tags` (spec/config.md §3.11).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Tags {
    pub nofailover: bool,
    /// Default 1; 0 means nofailover.
    pub failover_priority: i64,
    pub noloadbalance: bool,
    pub clonefrom: bool,
    pub nosync: bool,
    /// `nostream`: the replica never streams (no `primary_conninfo`, no slot); it recovers from
    /// `restore_command` only.
    pub nostream: bool,
    pub replicatefrom: Option<String>,
    /// The tags as published in the member key and `/patroni`: YAML order, predefined booleans
    /// dropped when false (except nofailover/nosync kept when their priority tag is present).
    pub published: Map<String, Value>,
}

impl Tags {
    /// Whether this member may ever be promoted by an automatic failover: not `nofailover`
    /// as Patroni derives it (the boolean tag wins over `failover_priority`, which then only
    /// ranks candidates).
    pub fn can_failover(&self) -> bool {
        !self.nofailover
    }
}

/// The `log` section (spec/config.md §3.3). Every key here is applied again on reload. Serde
/// only to hand it to the guard process (`pgpilot --guard`), which logs as the agent does.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LogConfig {
    /// `DEBUG`, `INFO`, `WARNING`, `ERROR`, `CRITICAL`.
    pub level: String,
    /// `plain` or `json`.
    pub format_json: bool,
    /// `log.format` for `type: plain`: a Python %-style template
    /// (`%(asctime)s %(levelname)s: %(message)s` by default).
    pub plain_format: String,
    /// `log.format` for `type: json`: the record fields written, in order, each with the key
    /// it is written under (`{field: renamed}` entries rename).
    pub json_fields: Vec<(String, String)>,
    /// `log.dateformat`: a strftime template for `asctime` (`None`: Python's
    /// `2026-11-24 14:16:47,123`).
    pub dateformat: Option<String>,
    /// `log.static_fields`: added to every JSON line after the record fields.
    pub static_fields: Map<String, Value>,
    /// If set, log to `<dir>/patroni.log` (instead of stderr), rotated by size.
    pub dir: Option<PathBuf>,
    /// `log.file_size`: bytes after which `patroni.log` is rotated (0: never).
    pub file_size: u64,
    /// `log.file_num`: rotated files kept (`patroni.log.1` newest, up to `.<file_num>`; 0:
    /// never rotated).
    pub file_num: usize,
    /// `log.mode`: permissions of the log file (`None`: 0666 less the umask).
    pub mode: Option<u32>,
}

impl LogConfig {
    /// Patroni's default `log.format`.
    pub const DEFAULT_FORMAT: &'static str = "%(asctime)s %(levelname)s: %(message)s";

    /// The record fields a Python %-style template names, in order (`%(name)s` → `name`).
    pub fn template_fields(template: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut rest = template;
        while let Some(start) = rest.find("%(") {
            rest = &rest[start + 2..];
            let Some(end) = rest.find(')') else { break };
            out.push(rest[..end].to_string());
            rest = &rest[end + 1..];
        }
        out
    }
}

impl Default for LogConfig {
    fn default() -> LogConfig {
        LogConfig {
            level: "INFO".into(),
            format_json: false,
            plain_format: LogConfig::DEFAULT_FORMAT.into(),
            json_fields: LogConfig::template_fields(LogConfig::DEFAULT_FORMAT)
                .into_iter()
                .map(|f| (f.clone(), f))
                .collect(),
            dateformat: None,
            static_fields: Map::new(),
            dir: None,
            file_size: 25_000_000,
            file_num: 4,
            mode: None,
        }
    }
}

/// The environment the configuration is read from, captured once per process.
static ENVIRONMENT: std::sync::OnceLock<Vec<(String, String)>> = std::sync::OnceLock::new();

/// The process environment as it was at start (`PATRONI_*` included, see
/// [`take_environment`]).
pub fn environment() -> &'static [(String, String)] {
    ENVIRONMENT.get_or_init(|| std::env::vars().collect())
}

/// Captures the environment for [`Config::load`] (start and every reload) and removes the
/// `PATRONI_*` variables from the process environment, as Patroni pops them while reading:
/// pg_ctl, callbacks, custom bootstrap and replica methods never inherit
/// `PATRONI_SUPERUSER_PASSWORD` and the like. Call it first in `main`, before any thread
/// exists (changing the environment is only sound then).
pub fn take_environment() {
    for (k, _) in environment() {
        if k.starts_with("PATRONI_") {
            std::env::remove_var(k);
        }
    }
}

impl Config {
    /// The local configuration as a Patroni YAML file path or directory (`None` = env only),
    /// with the `PATRONI_*` environment captured at start (see [`take_environment`]).
    pub fn load(path: Option<&Path>) -> Result<Loaded, ConfigError> {
        load(path, environment())
    }

    /// `http(s)://<restapi.connect_address>/patroni` (https when `restapi.certfile` is set).
    pub fn api_url(&self) -> String {
        let scheme = if self.restapi.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}/patroni", self.restapi.connect_address)
    }

    /// `postgres://<postgresql.connect_address>/postgres`.
    pub fn conn_url(&self) -> String {
        format!("postgres://{}/postgres", self.postgresql.connect_address)
    }
}
