//! A pgpilot cluster for one test: its own etcd, one Patroni-format YAML per member, agents
//! started as `pgpilot <member.yml>` with their output in `<member dir>/agent.log`, PostgreSQL
//! server logs in `<member dir>/pglog/`. Member `i` is named `pg-<i>` (its slot is `pg_<i>`,
//! exercising Patroni's name mangling) and lives in `<tmp>/member-<i>/`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use nix::sys::signal::Signal;
use serde_json::{json, Map, Value};
use tempfile::TempDir;

use super::etcd::EtcdSetup;
use super::tls::TlsFiles;
use super::writer::WriterLog;
use super::{
    agent_bin, clean_env, free_port, init, kill_postmaster_of, log_tail, pg, pid_alive,
    postmaster_pid, signal, spawn_child, tail, to_yaml, wait_for, Etcd, Standalone,
    BOOTSTRAP_TIMEOUT, FAILOVER_TIMEOUT, PG_BIN_DIR, SHORT_TIMEOUT,
};

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

/// One member: its name, ports, paths and (when running) its agent process.
pub struct Member {
    pub index: usize,
    pub name: String,
    /// `<tmp>/member-<i>`: config, logs, pgpass, sockets, data.
    pub dir: PathBuf,
    pub data_dir: PathBuf,
    pub socket_dir: PathBuf,
    /// PostgreSQL server logs (`logging_collector` writes here).
    pub pg_log_dir: PathBuf,
    pub config_path: PathBuf,
    /// The agent's stdout + stderr, appended across restarts.
    pub log_path: PathBuf,
    pub pg_port: u16,
    pub api_port: u16,
    /// `http` or `https`.
    pub api_scheme: &'static str,
    agent: Mutex<Option<Child>>,
    /// Set when the harness starts the agent, cleared when a test kills or stops it or waits
    /// for it to exit: an agent that exits while this is set fails the test at once.
    expect_running: AtomicBool,
}

impl Member {
    /// A plain PostgreSQL made by hand in this member's data directory, on its port and socket
    /// directory (for adoption and foreign-data-directory tests).
    pub fn standalone(&self) -> Standalone {
        Standalone::init(
            &self.data_dir,
            self.pg_port,
            &self.socket_dir,
            &self.dir.join("standalone.log"),
        )
    }

    pub fn api_base(&self) -> String {
        format!("{}://127.0.0.1:{}", self.api_scheme, self.api_port)
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

    /// Rewrites member `i`'s configuration file as the harness wrote it, then changed by
    /// `change`, and has its agent re-read it (`POST /reload`); returns once the agent logged
    /// the reload.
    pub async fn reconfigure(&self, i: usize, change: impl Fn(&mut Value)) {
        let m = &self.members[i];
        let mut doc = self.member_config(m);
        change(&mut doc);
        std::fs::write(&m.config_path, to_yaml(&doc)).expect("write member config");
        const RELOADED: &str = "Reloading the configuration";
        let before = self.agent_log(i).matches(RELOADED).count();
        let (code, text) = self
            .api_call(i, "POST", "/reload", None, true)
            .await
            .unwrap_or_else(|e| panic!("POST /reload: {e:#}"));
        assert_eq!(code, 202, "POST /reload: {text}");
        self.wait(
            SHORT_TIMEOUT,
            &format!("{} to reload", m.name),
            async || {
                ensure!(
                    self.agent_log(i).matches(RELOADED).count() > before,
                    "not logged yet"
                );
                Ok(())
            },
        )
        .await;
    }

    /// The Patroni configuration of one member.
    fn member_config(&self, m: &Member) -> Value {
        let o = &self.options;
        let mut parameters = json!({
            "unix_socket_directories": m.socket_dir,
            "logging_collector": "on",
            "log_directory": m.pg_log_dir,
            "log_filename": "postgresql.log",
            "log_line_prefix": "%m [%p] %q%u@%d ",
            // Only a process crash is simulated here, never a host crash: skip the fsyncs.
            "fsync": "off",
        });
        let params = parameters.as_object_mut().unwrap();
        for (k, v) in &o.parameters {
            params.insert(k.clone(), v.clone());
        }
        let mut doc = json!({
            "scope": o.scope,
            "namespace": "/service/",
            "name": m.name,
            "log": { "level": o.log_level },
            "restapi": {
                "listen": format!("127.0.0.1:{}", m.api_port),
                "connect_address": format!("127.0.0.1:{}", m.api_port),
                "authentication": { "username": API_AUTH.0, "password": API_AUTH.1 },
            },
            "etcd3": self.etcd_section(),
            "bootstrap": {
                "dcs": {
                    "ttl": o.ttl,
                    "loop_wait": o.loop_wait,
                    "retry_timeout": o.retry_timeout,
                    "maximum_lag_on_failover": o.maximum_lag_on_failover,
                    "postgresql": {
                        "use_pg_rewind": o.use_pg_rewind,
                        "use_slots": o.use_slots,
                        "parameters": o.dcs_parameters,
                    },
                },
                "initdb": [{ "encoding": "UTF8" }],
            },
            "postgresql": {
                "listen": format!("127.0.0.1:{}", m.pg_port),
                "connect_address": format!("127.0.0.1:{}", m.pg_port),
                "data_dir": m.data_dir,
                "bin_dir": o.bin_dir,
                "pgpass": m.dir.join("pgpass"),
                "authentication": {
                    "superuser": { "username": SUPERUSER.0, "password": SUPERUSER.1 },
                    "replication": { "username": REPLICATION.0, "password": REPLICATION.1 },
                    "rewind": { "username": REWIND.0, "password": REWIND.1 },
                },
                "parameters": parameters,
                "pg_hba": HBA,
            },
        });
        if let Some(t) = &self.tls {
            doc["restapi"]["certfile"] = json!(t.server_cert);
            doc["restapi"]["keyfile"] = json!(t.server_key);
            doc["restapi"]["cafile"] = json!(t.ca);
            doc["restapi"]["verify_client"] = json!("optional");
            doc["ctl"] = json!({
                "certfile": t.client_cert,
                "keyfile": t.client_key,
                "cacert": t.ca,
            });
        }
        if let Some(tags) = o.tags.get(&m.index) {
            doc["tags"] = Value::Object(tags.clone());
        }
        if let Some(customize) = &o.customize {
            customize(m.index, &mut doc);
        }
        doc
    }

    /// The `etcd3` section of the members' configuration.
    fn etcd_section(&self) -> Value {
        let mut section = match self.etcd.tls() {
            Some(t) => json!({
                "hosts": self.etcd.urls(),
                "cacert": t.ca,
                "cert": t.client_cert,
                "key": t.client_key,
            }),
            None => json!({ "hosts": self.etcd.endpoints() }),
        };
        if self.options.etcd_auth {
            section["username"] = json!("root");
            section["password"] = json!(ETCD_ROOT_PASSWORD);
        }
        section
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
    // Agent processes

    /// Starts `pgpilot <member.yml>` for member `i` (again, after a kill, with the same config).
    pub fn start_agent(&self, i: usize) {
        let m = &self.members[i];
        let mut slot = m.agent.lock().unwrap();
        if let Some(child) = slot.as_mut() {
            assert!(
                !matches!(child.try_wait(), Ok(None)),
                "agent {} is already running",
                m.name
            );
        }
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log_path)
            .expect("open agent log");
        use std::io::Write;
        let _ = writeln!(
            log,
            "==== harness: starting agent {} ({}) ====",
            m.name,
            timestamp()
        );
        let agent = self.options.agent.clone().unwrap_or_else(agent_bin);
        let mut cmd = Command::new(agent);
        cmd.arg(&m.config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log);
        clean_env(&mut cmd, &m.dir);
        cmd.envs(self.options.agent_env.iter().map(|(k, v)| (k, v)));
        let child = spawn_child(cmd).unwrap_or_else(|e| panic!("can not start the agent: {e}"));
        *slot = Some(child);
        m.expect_running.store(true, Ordering::SeqCst);
    }

    /// PID of member `i`'s agent if it is running.
    pub fn agent_pid(&self, i: usize) -> Option<i32> {
        let mut slot = self.members[i].agent.lock().unwrap();
        let child = slot.as_mut()?;
        matches!(child.try_wait(), Ok(None)).then(|| child.id() as i32)
    }

    pub fn agent_running(&self, i: usize) -> bool {
        self.agent_pid(i).is_some()
    }

    /// SIGKILL the agent (its PostgreSQL keeps running) and reap it.
    pub fn kill_agent(&self, i: usize) {
        self.members[i]
            .expect_running
            .store(false, Ordering::SeqCst);
        let mut slot = self.members[i].agent.lock().unwrap();
        if let Some(child) = slot.as_mut() {
            signal(child.id() as i32, Signal::SIGKILL);
            let _ = child.wait();
        }
    }

    /// SIGTERM the agent: Patroni's graceful shutdown (stop PostgreSQL, release the leader key).
    pub fn terminate_agent(&self, i: usize) {
        self.members[i]
            .expect_running
            .store(false, Ordering::SeqCst);
        if let Some(pid) = self.agent_pid(i) {
            signal(pid, Signal::SIGTERM);
        }
    }

    /// Waits for member `i`'s agent to exit by itself; panics after `timeout`.
    pub async fn wait_agent_exit(&self, i: usize, timeout: Duration) -> ExitStatus {
        self.members[i]
            .expect_running
            .store(false, Ordering::SeqCst);
        let name = &self.members[i].name;
        wait_for(timeout, &format!("agent {name} to exit"), async || {
            let mut slot = self.members[i].agent.lock().unwrap();
            let child = slot.as_mut().context("agent was never started")?;
            child.try_wait()?.context("still running")
        })
        .await
    }

    /// Panics if an agent the test expects to run has exited (a crash or a refusal to start):
    /// waiting the full timeout for a cluster state would only hide why.
    pub fn assert_agents_alive(&self) {
        for m in &self.members {
            if !m.expect_running.load(Ordering::SeqCst) {
                continue;
            }
            let mut slot = m.agent.lock().unwrap();
            if let Some(Ok(Some(status))) = slot.as_mut().map(Child::try_wait) {
                m.expect_running.store(false, Ordering::SeqCst);
                drop(slot);
                panic!(
                    "agent {} exited unexpectedly ({status}); its log is below",
                    m.name
                );
            }
        }
    }

    /// [`wait_for`] that first checks, at every poll, that no agent died unexpectedly.
    pub async fn wait<T>(
        &self,
        timeout: Duration,
        what: &str,
        mut check: impl AsyncFnMut() -> anyhow::Result<T>,
    ) -> T {
        wait_for(timeout, what, async || {
            self.assert_agents_alive();
            check().await
        })
        .await
    }

    /// The postmaster PID of member `i` from `postmaster.pid`, if alive.
    pub fn postmaster_pid(&self, i: usize) -> Option<i32> {
        postmaster_pid(&self.members[i].data_dir)
    }

    /// SIGKILL member `i`'s postmaster (by the PID in `postmaster.pid`); returns the PID.
    pub fn kill_postmaster(&self, i: usize) -> Option<i32> {
        kill_postmaster_of(&self.members[i].data_dir)
    }

    /// The whole agent log of member `i`.
    pub fn agent_log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.members[i].log_path).unwrap_or_default()
    }

    /// The agent log of member `i` since its last start by the harness.
    pub fn agent_log_since_last_start(&self, i: usize) -> String {
        let log = self.agent_log(i);
        match log.rfind("==== harness: starting agent") {
            Some(pos) => log[pos..].to_string(),
            None => log,
        }
    }

    // -----------------------------------------------------------------------------------------
    // REST API

    /// `GET <path>` on member `i`'s REST API: status code and JSON body (a non-JSON body comes
    /// back as a JSON string). Err when the API does not answer.
    pub async fn api_get(&self, i: usize, path: &str) -> anyhow::Result<(u16, Value)> {
        let url = format!("{}{path}", self.members[i].api_base());
        let reply = self
            .http
            .get(&url)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        let code = reply.status().as_u16();
        let text = reply
            .text()
            .await
            .with_context(|| format!("GET {url}: body"))?;
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((code, body))
    }

    /// `PATCH /config` on member `i` with `body` (authenticated): `(status, body text)`.
    pub async fn patch_config(&self, i: usize, body: Value) -> anyhow::Result<(u16, String)> {
        self.api_call(i, "PATCH", "/config", Some(body), true).await
    }

    /// `<method> <path>` on member `i`'s REST API with a JSON body (`None`: no body at all) and,
    /// when `auth`, the harness's Basic credentials: status code and body text.
    pub async fn api_call(
        &self,
        i: usize,
        method: &str,
        path: &str,
        body: Option<Value>,
        auth: bool,
    ) -> anyhow::Result<(u16, String)> {
        let url = format!("{}{path}", self.members[i].api_base());
        let method = reqwest::Method::from_bytes(method.as_bytes())?;
        let mut rb = self
            .http
            .request(method.clone(), &url)
            .timeout(Duration::from_secs(60));
        if auth {
            rb = rb.basic_auth(API_AUTH.0, Some(API_AUTH.1));
        }
        if let Some(b) = body {
            rb = rb
                .header("Content-Type", "application/json")
                .body(b.to_string());
        }
        let reply = rb.send().await.with_context(|| format!("{method} {url}"))?;
        let code = reply.status().as_u16();
        Ok((code, reply.text().await.unwrap_or_default()))
    }

    /// `POST /switchover` on member `leader` naming it the leader and, if given, `candidate`;
    /// asserts the answer is 200 and returns its text (Patroni's `Successfully switched over
    /// to "<name>"`).
    pub async fn switchover(&self, leader: usize, candidate: Option<usize>) -> String {
        let mut body = json!({ "leader": self.members[leader].name });
        if let Some(c) = candidate {
            body["candidate"] = json!(self.members[c].name);
        }
        let (code, text) = self
            .api_call(leader, "POST", "/switchover", Some(body), true)
            .await
            .unwrap_or_else(|e| panic!("POST /switchover: {e:#}"));
        assert_eq!(code, 200, "POST /switchover: {text}");
        text
    }

    /// Waits until member `i` reports itself a running primary in `/patroni` (a switchover's
    /// API answer comes when the leader key moved, before the promotion ends) and returns its
    /// timeline.
    pub async fn primary_timeline(&self, i: usize) -> u64 {
        let name = &self.members[i].name;
        self.wait(
            FAILOVER_TIMEOUT,
            &format!("{name} to run as primary"),
            async || {
                let p = self.patroni(i).await?;
                ensure!(
                    p["role"] == "primary" && p["state"] == "running",
                    "{name}: {p}"
                );
                p["timeline"].as_u64().context("no timeline")
            },
        )
        .await
    }

    /// `GET /patroni` of member `i` (Err unless the API answers 200).
    pub async fn patroni(&self, i: usize) -> anyhow::Result<Value> {
        let (code, body) = self.api_get(i, "/patroni").await?;
        ensure!(
            code == 200,
            "GET /patroni on {}: {code} {body}",
            self.members[i].name
        );
        Ok(body)
    }

    // -----------------------------------------------------------------------------------------
    // etcd

    /// `/service/<scope>/<rel>`.
    pub fn key(&self, rel: &str) -> String {
        format!("/service/{}/{rel}", self.options.scope)
    }

    /// The value of `/service/<scope>/<rel>` (e.g. `leader`, `initialize`, `members/pg-0`).
    pub fn etcd_get(&self, rel: &str) -> Option<String> {
        self.etcd.get(&self.key(rel)).expect("read etcd")
    }

    /// Like [`Cluster::etcd_get`], `None` also when etcd does not answer (a fault may be on).
    pub fn etcd_try_get(&self, rel: &str) -> Option<String> {
        self.etcd.get(&self.key(rel)).ok().flatten()
    }

    /// The leader key's value (the member name), read from etcd.
    pub fn leader_name(&self) -> Option<String> {
        self.etcd_try_get("leader")
    }

    pub fn leader_index(&self) -> Option<usize> {
        self.leader_name().and_then(|n| self.index_of(&n))
    }

    // -----------------------------------------------------------------------------------------
    // Waiting for cluster states

    /// Waits until some member holds the leader key and its `/patroni` says a running primary;
    /// returns its index.
    pub async fn wait_for_leader(&self) -> usize {
        self.wait_for_leader_except(&[], BOOTSTRAP_TIMEOUT).await
    }

    /// Like [`Cluster::wait_for_leader`], for a leader other than the members in `not`.
    pub async fn wait_for_leader_except(&self, not: &[usize], timeout: Duration) -> usize {
        let what = if not.is_empty() {
            let names: Vec<_> = not.iter().map(|&i| self.members[i].name.as_str()).collect();
            format!("a leader other than {names:?} running a primary")
        } else {
            "a leader running a primary".to_string()
        };
        self.wait(timeout, &what, async || {
            let name = self
                .etcd
                .get(&self.key("leader"))?
                .context("no leader key in etcd")?;
            let i = self
                .index_of(&name)
                .with_context(|| format!("unknown leader {name:?}"))?;
            ensure!(!not.contains(&i), "leader is still {name}");
            let st = self.patroni(i).await?;
            ensure!(
                st["role"] == "primary" && st["state"] == "running",
                "leader {name} reports role {} state {}",
                st["role"],
                st["state"]
            );
            Ok(i)
        })
        .await
    }

    /// Waits until at least `n` members report through `/patroni` that they run as replicas and
    /// stream (`replication_state == "streaming"`); returns their indices.
    pub async fn wait_for_replicas_streaming(&self, n: usize) -> Vec<usize> {
        self.wait_for_replicas_streaming_within(n, BOOTSTRAP_TIMEOUT)
            .await
    }

    pub async fn wait_for_replicas_streaming_within(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Vec<usize> {
        self.wait(timeout, &format!("{n} streaming replicas"), async || {
            let mut streaming = Vec::new();
            let mut seen = Vec::new();
            for i in 0..self.members.len() {
                if !self.agent_running(i) {
                    continue;
                }
                match self.patroni(i).await {
                    Ok(st) => {
                        seen.push(format!(
                            "{}: {}/{}/{}",
                            self.members[i].name, st["role"], st["state"], st["replication_state"]
                        ));
                        if st["role"] == "replica"
                            && st["state"] == "running"
                            && st["replication_state"] == "streaming"
                        {
                            streaming.push(i);
                        }
                    }
                    Err(e) => seen.push(format!("{}: {e:#}", self.members[i].name)),
                }
            }
            ensure!(streaming.len() >= n, "members: {}", seen.join("; "));
            Ok(streaming)
        })
        .await
    }

    /// Waits until member `i` is a running replica streaming on timeline `timeline` (if given).
    pub async fn wait_for_streaming_replica(
        &self,
        i: usize,
        timeline: Option<u64>,
        timeout: Duration,
    ) {
        let name = &self.members[i].name;
        self.wait(
            timeout,
            &format!("{name} to stream as a replica"),
            async || {
                let st = self.patroni(i).await?;
                ensure!(
                    st["role"] == "replica"
                        && st["state"] == "running"
                        && st["replication_state"] == "streaming",
                    "{name}: role {} state {} replication_state {}",
                    st["role"],
                    st["state"],
                    st["replication_state"]
                );
                if let Some(tl) = timeline {
                    ensure!(
                        st["timeline"].as_u64() == Some(tl),
                        "{name} on timeline {}",
                        st["timeline"]
                    );
                }
                Ok(())
            },
        )
        .await;
    }

    /// Waits until `INSERT INTO <table> VALUES (<id>, <note>)` succeeds on member `i` (retrying
    /// while it is read-only or unreachable); returns the time it took.
    pub async fn wait_writable(&self, i: usize, table: &str, id: i32, note: &str) -> Duration {
        let start = Instant::now();
        let name = &self.members[i].name;
        self.wait(
            FAILOVER_TIMEOUT,
            &format!("a write to succeed on {name}"),
            async || {
                let client = self.pg_connect_try(i).await?;
                client
                    .execute(
                        &format!("INSERT INTO {table} VALUES ($1, $2)"),
                        &[&id, &note],
                    )
                    .await?;
                Ok(())
            },
        )
        .await;
        start.elapsed()
    }

    /// Waits until the row `id` of `table` is visible on member `i`.
    pub async fn wait_for_row(&self, i: usize, table: &str, id: i32) {
        let name = &self.members[i].name;
        self.wait(
            SHORT_TIMEOUT,
            &format!("row {id} of {table} on {name}"),
            async || {
                let client = self.pg_connect_try(i).await?;
                let rows = client
                    .query(&format!("SELECT 1 FROM {table} WHERE id = $1"), &[&id])
                    .await?;
                ensure!(rows.len() == 1, "not there yet");
                Ok(())
            },
        )
        .await;
    }

    /// Rows of `pg_stat_replication` on member `i` joined with the slot each walsender uses:
    /// `(application_name, state, slot_name)`.
    pub async fn replication_rows(
        &self,
        i: usize,
    ) -> anyhow::Result<Vec<(String, String, Option<String>)>> {
        let client = self.pg_connect_try(i).await?;
        let rows = client
            .query(
                "SELECT r.application_name, r.state, s.slot_name::text \
                 FROM pg_stat_replication r \
                 LEFT JOIN pg_replication_slots s ON s.active_pid = r.pid \
                 ORDER BY 1",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    /// Waits until member `i`'s `pg_stat_replication` shows every member of `replicas`
    /// streaming, each through its own slot.
    pub async fn wait_for_walsenders(&self, i: usize, replicas: &[usize]) {
        let mut expected: Vec<String> = replicas
            .iter()
            .map(|&r| self.members[r].name.clone())
            .collect();
        expected.sort();
        let what = format!("{} to stream to {expected:?}", self.members[i].name);
        let use_slots = self.options.use_slots;
        self.wait(SHORT_TIMEOUT, &what, async || {
            let rows = self.replication_rows(i).await?;
            for name in &expected {
                let row = rows.iter().find(|r| &r.0 == name);
                let Some((_, state, slot)) = row else {
                    bail!("no walsender for {name}; rows: {rows:?}");
                };
                ensure!(state == "streaming", "{name} is {state}");
                if use_slots {
                    let want = super::expected_slot_name(name);
                    ensure!(
                        slot.as_deref() == Some(&want),
                        "{name} uses slot {slot:?}, not {want}"
                    );
                }
            }
            Ok(())
        })
        .await;
    }

    // -----------------------------------------------------------------------------------------
    // PostgreSQL

    /// Superuser connection to member `i` over TCP; panics if it fails.
    pub async fn pg_connect(&self, i: usize) -> tokio_postgres::Client {
        self.pg_connect_try(i)
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e:#}", self.members[i].name))
    }

    pub async fn pg_connect_try(&self, i: usize) -> anyhow::Result<tokio_postgres::Client> {
        let m = &self.members[i];
        if self.options.harness_via_socket {
            return pg::connect_socket(&m.socket_dir, m.pg_port).await;
        }
        pg::connect(m.pg_port).await
    }

    /// Every id of `table` (a [`Writer`](super::Writer)'s table) on member `i`, in order.
    pub async fn ids(&self, i: usize, table: &str) -> Vec<i64> {
        self.pg_connect(i)
            .await
            .query(&format!("SELECT id FROM {table} ORDER BY id"), &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    /// Asserts that every id `log` saw acknowledged is in `table` on member `i`.
    pub async fn assert_no_acked_write_lost(&self, i: usize, table: &str, log: &WriterLog) {
        let present: std::collections::HashSet<i64> =
            self.ids(i, table).await.into_iter().collect();
        let lost: Vec<i64> = log
            .acked
            .iter()
            .map(|(id, _)| *id)
            .filter(|id| !present.contains(id))
            .collect();
        assert!(
            lost.is_empty(),
            "{} acknowledged writes are missing on {}: {:?}",
            lost.len(),
            self.members[i].name,
            &lost[..lost.len().min(20)]
        );
    }

    /// `SELECT system_identifier FROM pg_control_system()` on member `i`.
    pub async fn system_identifier(&self, i: usize) -> String {
        let client = self.pg_connect(i).await;
        client
            .query_one(
                "SELECT system_identifier::text FROM pg_control_system()",
                &[],
            )
            .await
            .expect("read system identifier")
            .get(0)
    }

    /// `SELECT pg_is_in_recovery()` on member `i`.
    pub async fn in_recovery(&self, i: usize) -> anyhow::Result<bool> {
        let client = self.pg_connect_try(i).await?;
        Ok(client
            .query_one("SELECT pg_is_in_recovery()", &[])
            .await?
            .get(0))
    }

    /// Panics if any member that answers SQL runs as a primary (`when` says at what point).
    pub async fn assert_none_writable(&self, when: &str) {
        for i in 0..self.len() {
            if let Ok(in_recovery) = self.in_recovery(i).await {
                assert!(in_recovery, "{} is writable {when}", self.members[i].name);
            }
        }
    }

    /// The names of the members whose `/patroni` says `role: primary`.
    pub async fn primaries(&self) -> Vec<String> {
        let mut primaries = Vec::new();
        for i in 0..self.len() {
            if let Ok(st) = self.patroni(i).await {
                if st["role"] == "primary" {
                    primaries.push(self.members[i].name.clone());
                }
            }
        }
        primaries
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

/// Wall-clock time for log markers.
fn timestamp() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("unix time {:.3}", now.as_secs_f64())
}
