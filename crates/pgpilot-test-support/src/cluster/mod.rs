//! A pgpilot cluster for one test: its own etcd, one Patroni-format YAML per member, agents
//! started as `pgpilot <member.yml>` with their output in `<member dir>/agent.log`, PostgreSQL
//! server logs in `<member dir>/pglog/`. Member `i` is named `pg-<i>` (its slot is `pg_<i>`,
//! exercising Patroni's name mangling) and lives in `<tmp>/member-<i>/`.
//!
//! This file holds the options, the cluster's start (etcd, members' directories and
//! configuration files) and its teardown; the rest of [`Cluster`] is in `config.rs` (the
//! members' configuration), `member.rs` ([`Member`] and the agent processes), `api.rs` (REST API
//! and etcd reads), `postgres.rs` (SQL on a member) and `wait.rs` (waiting for cluster states).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};
use tempfile::TempDir;

use super::etcd::EtcdSetup;
use super::tls::TlsFiles;
use super::{
    free_port, init, kill_postmaster_of, log_tail, pid_alive, postmaster_pid, tail, to_yaml, Etcd,
    PG_BIN_DIR,
};

mod api;
mod config;
mod member;
mod postgres;
mod wait;

pub use member::Member;

/// `postgresql.authentication.superuser` of every member.
pub const SUPERUSER: (&str, &str) = ("postgres", "harness-superuser-secret");
/// `postgresql.authentication.replication`.
pub const REPLICATION: (&str, &str) = ("replicator", "harness-replication-secret");
/// `postgresql.authentication.rewind`.
pub const REWIND: (&str, &str) = ("rewind_user", "harness-rewind-secret");
/// `restapi.authentication` of every member (mutating endpoints need it).
pub const API_AUTH: (&str, &str) = ("admin", "harness-api-secret");
/// `pg_hba.conf` of every member: TCP on loopback with passwords (md5 also accepts SCRAM
/// verifiers), local socket trusted.
pub const HBA: &[&str] = &[
    "local all all trust",
    "host all all 127.0.0.1/32 md5",
    "host replication all 127.0.0.1/32 md5",
];
/// How long `Drop` waits for SIGTERMed agents before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(15);
/// Lines of each log printed when a test fails.
const TAIL_LINES: usize = 80;

/// Edits one member's configuration document after the harness built it: `(index, document)`.
pub type Customize = Arc<dyn Fn(usize, &mut Value) + Send + Sync>;

/// The etcd `root` password of a cluster with [`Options::etcd_auth`].
pub const ETCD_ROOT_PASSWORD: &str = "harness-etcd-root";

/// What a test may change in the generated configuration. `Options::default()` is Patroni's
/// fastest accepted timing (ttl 20, loop_wait 1, retry_timeout 3), slots and pg_rewind on.
#[derive(Clone)]
pub struct Options {
    pub scope: String,
    /// `bootstrap.dcs.ttl`, `loop_wait`, `retry_timeout` (seconds).
    pub ttl: u64,
    pub loop_wait: u64,
    pub retry_timeout: u64,
    pub maximum_lag_on_failover: u64,
    pub use_pg_rewind: bool,
    pub use_slots: bool,
    /// `bootstrap.dcs.postgresql.parameters` (cluster-wide ones such as `wal_log_hints`).
    pub dcs_parameters: Map<String, Value>,
    /// Extra local `postgresql.parameters` (merged over the harness's socket/log settings).
    pub parameters: Map<String, Value>,
    /// `tags` per member index.
    pub tags: BTreeMap<usize, Map<String, Value>>,
    /// `log.level`.
    pub log_level: String,
    /// Last word on each member's document.
    pub customize: Option<Customize>,
    /// HTTPS for the REST API: certificates made by the harness, `verify_client: optional`,
    /// agents and the harness present the client certificate.
    pub https: bool,
    /// Run this executable as the agent instead of pgpilot (e.g. Patroni's `patroni`).
    pub agent: Option<PathBuf>,
    /// Members of the etcd cluster (1 by default; 3 to lose one and keep quorum). Every
    /// member is listed in `etcd3.hosts`.
    pub etcd_members: usize,
    /// etcd on https client URLs with `--client-cert-auth`: the agents get `etcd3.hosts` as
    /// https URLs and `etcd3.cacert`/`cert`/`key` (certificates made by the harness).
    pub etcd_tls: bool,
    /// etcd with `auth enable` (a `root` user): the agents get `etcd3.username`/`password`, the
    /// harness's own requests authenticate too. With `etcd_tls`, client certificates are then
    /// not required (see `Cluster::new`).
    pub etcd_auth: bool,
    /// The harness's own SQL goes through the member's unix socket (for a `pg_hba.conf` that
    /// refuses its plain TCP connection, e.g. TLS only).
    pub harness_via_socket: bool,
    /// Extra environment of every agent (e.g. `PATRONI_*` settings).
    pub agent_env: Vec<(String, String)>,
    /// `postgresql.bin_dir` of every member: Debian's PostgreSQL 15 unless a test runs
    /// another major (see `tests/pg-versions/fetch.sh`).
    pub bin_dir: PathBuf,
    /// An etcd to use instead of starting one (`etcd_members` and `etcd_tls` are then
    /// ignored): several clusters with their own `scope` on one etcd, as a fleet runs (the
    /// benchmark's scale mode). It outlives every cluster that holds it.
    pub shared_etcd: Option<Arc<Etcd>>,
}

impl Default for Options {
    fn default() -> Self {
        let dcs_parameters = json!({
            "wal_log_hints": "on",
            "max_wal_senders": 10,
            "max_replication_slots": 10,
            "wal_keep_size": "128MB",
        });
        Options {
            scope: "pgpilot-test".into(),
            ttl: 20,
            loop_wait: 1,
            retry_timeout: 3,
            maximum_lag_on_failover: 1_048_576,
            use_pg_rewind: true,
            use_slots: true,
            dcs_parameters: dcs_parameters.as_object().unwrap().clone(),
            parameters: Map::new(),
            tags: BTreeMap::new(),
            log_level: "INFO".into(),
            customize: None,
            https: false,
            agent: None,
            etcd_members: 1,
            etcd_tls: false,
            etcd_auth: false,
            harness_via_socket: false,
            agent_env: Vec::new(),
            bin_dir: PathBuf::from(PG_BIN_DIR),
            shared_etcd: None,
        }
    }
}

/// A cluster of agents sharing one etcd. Stopped and cleaned up in `Drop`.
pub struct Cluster {
    pub options: Options,
    members: Vec<Member>,
    http: reqwest::Client,
    /// The certificates when `options.https`.
    pub tls: Option<TlsFiles>,
    /// Dropped after the agents are stopped (fields drop after `Drop::drop`), in this order;
    /// a shared etcd (`Options::shared_etcd`) stops with its last holder.
    pub etcd: Arc<Etcd>,
    dir: TempDir,
}

impl Cluster {
    /// Starts etcd and writes the configuration of `n` members without starting agents.
    pub fn new(n: usize, options: Options) -> Cluster {
        init();
        let dir = tempfile::Builder::new()
            .prefix("pgpilot-cluster-")
            .tempdir()
            .expect("create cluster temp dir");
        let etcd_tls = (options.etcd_tls && options.shared_etcd.is_none())
            .then(|| super::tls::make_certs(&dir.path().join("etcd-tls")));
        let etcd = options.shared_etcd.clone().unwrap_or_else(|| {
            Arc::new(Etcd::start_with(EtcdSetup {
                members: options.etcd_members.max(1),
                // etcd's JSON gateway, which the harness reads through, refuses requests
                // carrying a client certificate once auth is on: with both, certificates are
                // not required (the agents still present theirs).
                client_cert_auth: etcd_tls.is_some() && !options.etcd_auth,
                tls: etcd_tls,
                root_password: options.etcd_auth.then(|| ETCD_ROOT_PASSWORD.to_string()),
                ..Default::default()
            }))
        });
        eprintln!(
            "harness: cluster in {} with etcd at {}",
            dir.path().display(),
            etcd.endpoints().join(",")
        );
        let tls = options
            .https
            .then(|| super::tls::make_certs(&dir.path().join("tls")));
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(3))
            .connect_timeout(Duration::from_secs(2));
        if let Some(t) = &tls {
            let ca = std::fs::read(&t.ca).expect("read ca.crt");
            let mut id = std::fs::read(&t.client_cert).expect("read client.crt");
            id.extend(std::fs::read(&t.client_key).expect("read client.key"));
            builder = builder
                .add_root_certificate(reqwest::Certificate::from_pem(&ca).expect("CA"))
                .identity(reqwest::Identity::from_pem(&id).expect("client identity"));
        }
        let http = builder.build().expect("build the HTTP client");
        let mut cluster = Cluster {
            options,
            members: Vec::new(),
            http,
            tls,
            etcd,
            dir,
        };
        for _ in 0..n {
            cluster.add_member(None);
        }
        cluster
    }

    /// [`Cluster::new`] and start every agent at once.
    pub fn start(n: usize, options: Options) -> Cluster {
        let cluster = Cluster::new(n, options);
        for i in 0..n {
            cluster.start_agent(i);
        }
        cluster
    }

    /// Adds a member (not started) with fresh ports and directory; its name is `pg-<index>`
    /// unless `name` is given (e.g. a duplicate name). Returns its index.
    pub fn add_member(&mut self, name: Option<&str>) -> usize {
        let index = self.members.len();
        let name = name
            .map(str::to_string)
            .unwrap_or_else(|| format!("pg-{index}"));
        let dir = self.dir.path().join(format!("member-{index}"));
        let m = Member {
            index,
            data_dir: dir.join("data"),
            socket_dir: dir.join("sock"),
            pg_log_dir: dir.join("pglog"),
            config_path: dir.join(format!("{name}.yml")),
            log_path: dir.join("agent.log"),
            pg_port: free_port(),
            api_port: free_port(),
            api_scheme: if self.options.https { "https" } else { "http" },
            dir,
            name,
            agent: Mutex::new(None),
            expect_running: AtomicBool::new(false),
        };
        for d in [&m.dir, &m.socket_dir, &m.pg_log_dir] {
            std::fs::create_dir_all(d).expect("create member dirs");
        }
        let doc = self.member_config(&m);
        std::fs::write(&m.config_path, to_yaml(&doc)).expect("write member config");
        self.members.push(m);
        index
    }

    pub fn member(&self, i: usize) -> &Member {
        &self.members[i]
    }

    /// Number of members.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.members.len()
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Index of the member named `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.members.iter().position(|m| m.name == name)
    }

    // -----------------------------------------------------------------------------------------
    // Teardown

    /// Everything useful to understand a failure: the tail of each agent log and PostgreSQL
    /// log, and the etcd keys.
    pub fn print_diagnostics(&self) {
        eprintln!(
            "\n======== harness: diagnostics ({}) ========",
            self.dir.path().display()
        );
        for m in &self.members {
            eprintln!(
                "---- {} agent log {} (last {TAIL_LINES} lines; agent {}, postmaster {:?}) ----",
                m.name,
                m.log_path.display(),
                if self.agent_running(m.index) {
                    "running"
                } else {
                    "not running"
                },
                postmaster_pid(&m.data_dir),
            );
            eprintln!("{}", log_tail(&m.log_path, TAIL_LINES));
            let mut pg_logs: Vec<PathBuf> = std::fs::read_dir(&m.pg_log_dir)
                .map(|d| d.flatten().map(|e| e.path()).collect())
                .unwrap_or_default();
            pg_logs.push(m.dir.join("standalone.log"));
            for log in pg_logs.iter().filter(|p| p.is_file()) {
                eprintln!("---- {} PostgreSQL log {} ----", m.name, log.display());
                eprintln!("{}", tail(log, TAIL_LINES));
            }
        }
        eprintln!("---- etcd keys ----\n{}", self.etcd.dump());
        eprintln!("---- etcd log ----\n{}", self.etcd.log_tail(20));
        eprintln!("======== end of diagnostics ========\n");
    }

    /// Stops every agent (SIGTERM, up to 15 s, then SIGKILL) and any postmaster left behind.
    fn stop_all(&self) {
        if self.etcd.is_paused() {
            // Let the agents shut down normally.
            self.etcd.resume();
        }
        for i in 0..self.members.len() {
            self.terminate_agent(i);
        }
        let deadline = Instant::now() + STOP_GRACE;
        while (0..self.members.len()).any(|i| self.agent_running(i)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(100));
        }
        for i in 0..self.members.len() {
            if self.agent_running(i) {
                eprintln!(
                    "harness: agent {} ignored SIGTERM for {STOP_GRACE:?}, killing it",
                    self.members[i].name
                );
            }
            self.kill_agent(i);
        }
        for m in &self.members {
            // A restarting PostgreSQL may have a new postmaster right after we killed one.
            for _ in 0..3 {
                match kill_postmaster_of(&m.data_dir) {
                    Some(pid) => {
                        eprintln!("harness: killed postmaster {pid} of {}", m.name);
                        debug_assert!(!pid_alive(pid));
                    }
                    None => break,
                }
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.print_diagnostics();
        }
        self.stop_all();
        if std::env::var_os("PGPILOT_KEEP_TEST_DIR").is_some() {
            self.dir.disable_cleanup(true);
            eprintln!("harness: kept {}", self.dir.path().display());
        }
    }
}
