//! A single-node etcd 3.4 on 127.0.0.1 for one test, and a small client for its v3 gRPC-gateway
//! JSON API (the API Patroni itself speaks), so tests read the keys exactly as stored.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::Context;
use nix::sys::signal::Signal;
use serde_json::{json, Value};
use tempfile::TempDir;

use super::tls::TlsFiles;
use super::{base64, clean_env, free_port, init, pid_alive, signal, spawn_child, tail, ETCD_BIN};

/// Timeout of one request to etcd (a paused etcd must not hang a test).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);

/// One key as stored in etcd.
#[derive(Debug, Clone, PartialEq)]
pub struct Kv {
    pub key: String,
    pub value: String,
    pub create_revision: i64,
    pub mod_revision: i64,
    /// 0 when the key is not attached to a lease.
    pub lease: i64,
}

/// How to start the test etcd: plain (the default), with TLS on its client URLs, with
/// authentication enabled.
#[derive(Debug, Clone, Default)]
pub struct EtcdSetup {
    /// Number of members (0 means 1).
    pub members: usize,
    /// Client URLs over https with this server certificate and CA (`--cert-file`,
    /// `--key-file`; `--trusted-ca-file` with `client_cert_auth`); the peers stay on http. The harness's own JSON
    /// requests (`get`, `put`, `list`, ...) use the client certificate; health is checked on a
    /// plain `--listen-metrics-urls` port.
    pub tls: Option<TlsFiles>,
    /// With `tls`: `--client-cert-auth` (clients need a certificate signed by the CA).
    pub client_cert_auth: bool,
    /// `auth enable` with a `root` user of this password (set up through the JSON gateway).
    /// The harness's JSON requests then fail (they carry no token).
    pub root_password: Option<String>,
    /// `--auth-token-ttl` in seconds (etcd's default: 300).
    pub auth_token_ttl: Option<u64>,
}

/// One etcd process of the test cluster.
struct Node {
    name: String,
    client_port: u16,
    /// Plain-http `/health` (`--listen-metrics-urls`), used when the client URLs are TLS.
    metrics_port: u16,
    peer_port: u16,
    data: PathBuf,
    log_path: PathBuf,
    child: Mutex<Option<Child>>,
    paused: AtomicBool,
}

/// A running etcd cluster of one member (the default) or several; every process is killed (by
/// PID) in `Drop`. Methods without a member index act on the whole cluster (an outage of the
/// DCS); `*_member` methods act on one member (the loss of one etcd member).
pub struct Etcd {
    /// Client and peer port of the first member.
    pub client_port: u16,
    pub peer_port: u16,
    /// Log of the first member.
    pub log_path: PathBuf,
    nodes: Vec<Node>,
    initial_cluster: String,
    setup: EtcdSetup,
    /// `auth enable` done: the harness's own requests authenticate as root first.
    auth_on: std::sync::atomic::AtomicBool,
    /// Data and logs. The data directories live in /dev/shm when possible: fsync latency on a
    /// shared disk would otherwise stall the 1 s HA loop.
    dir: TempDir,
}

impl Etcd {
    /// Starts a one-member etcd on free loopback ports and waits until it answers.
    pub fn start() -> Etcd {
        Etcd::start_members(1)
    }

    /// Starts an etcd cluster of `n` members on free loopback ports and waits until each
    /// answers `/health` (with a raft leader) and a range read.
    pub fn start_members(n: usize) -> Etcd {
        Etcd::start_with(EtcdSetup {
            members: n,
            ..Default::default()
        })
    }

    /// Starts an etcd cluster as `setup` says (TLS, authentication) and waits until each
    /// member answers.
    pub fn start_with(setup: EtcdSetup) -> Etcd {
        init();
        let n = setup.members.max(1);
        let mut last_error = String::new();
        // A port picked as free may be taken before etcd binds it: retry with new ports.
        for attempt in 1..=3 {
            let dir = tempfile::Builder::new()
                .prefix("pgpilot-etcd-")
                .tempdir_in("/dev/shm")
                .or_else(|_| tempfile::Builder::new().prefix("pgpilot-etcd-").tempdir())
                .expect("create etcd temp dir");
            let nodes: Vec<Node> = (0..n)
                .map(|i| Node {
                    name: format!("etcd{i}"),
                    client_port: free_port(),
                    metrics_port: free_port(),
                    peer_port: free_port(),
                    data: dir.path().join(format!("data-{attempt}-{i}")),
                    log_path: dir.path().join(format!("etcd{i}.log")),
                    child: Mutex::new(None),
                    paused: AtomicBool::new(false),
                })
                .collect();
            let initial_cluster = nodes
                .iter()
                .map(|m| format!("{}=http://127.0.0.1:{}", m.name, m.peer_port))
                .collect::<Vec<_>>()
                .join(",");
            let etcd = Etcd {
                client_port: nodes[0].client_port,
                peer_port: nodes[0].peer_port,
                log_path: nodes[0].log_path.clone(),
                nodes,
                initial_cluster,
                setup: setup.clone(),
                auth_on: std::sync::atomic::AtomicBool::new(false),
                dir,
            };
            for i in 0..n {
                etcd.spawn(i);
            }
            match etcd.wait_healthy(&(0..n).collect::<Vec<_>>(), Duration::from_secs(30)) {
                Ok(()) => match &setup.root_password {
                    Some(pw) => match etcd.enable_auth(pw) {
                        Ok(()) => return etcd,
                        Err(e) => last_error = format!("{e:#}"),
                    },
                    None => return etcd,
                },
                Err(e) => last_error = e,
            }
            // Dropping kills the processes and removes the directory.
            drop(etcd);
        }
        panic!("etcd did not start: {last_error}");
    }

    /// Starts member `i` (again, with its data directory) as its own process.
    fn spawn(&self, i: usize) {
        let m = &self.nodes[i];
        let peer = format!("http://127.0.0.1:{}", m.peer_port);
        let client = format!("{}://127.0.0.1:{}", self.scheme(), m.client_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log_path)
            .expect("open etcd log");
        let mut cmd = Command::new(ETCD_BIN);
        cmd.arg(format!("--name={}", m.name))
            .arg(format!("--data-dir={}", m.data.display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster={}", self.initial_cluster))
            .arg("--initial-cluster-state=new")
            .arg(format!(
                "--initial-cluster-token=harness-{}",
                self.nodes[0].client_port
            ))
            .arg("--logger=zap")
            .arg("--log-outputs=stderr")
            .arg("--log-level=warn")
            .arg(format!(
                "--listen-metrics-urls=http://127.0.0.1:{}",
                m.metrics_port
            ));
        if let Some(tls) = &self.setup.tls {
            cmd.arg(format!("--cert-file={}", tls.server_cert.display()))
                .arg(format!("--key-file={}", tls.server_key.display()));
            // etcd 3.4 checks the certificates clients send against a trusted CA, and refuses
            // a connection without one once it has a CA: only with client certificate auth.
            if self.setup.client_cert_auth {
                cmd.arg(format!("--trusted-ca-file={}", tls.ca.display()))
                    .arg("--client-cert-auth");
            }
        }
        if let Some(ttl) = self.setup.auth_token_ttl {
            cmd.arg(format!("--auth-token-ttl={ttl}"));
        }
        cmd.stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log);
        clean_env(&mut cmd, self.dir.path());
        let child = spawn_child(cmd).unwrap_or_else(|e| panic!("can not start {ETCD_BIN}: {e}"));
        *m.child.lock().unwrap() = Some(child);
        m.paused.store(false, Ordering::SeqCst);
    }

    /// Waits until every member in `which` is healthy; `Err` with the logs otherwise.
    fn wait_healthy(&self, which: &[usize], timeout: Duration) -> Result<(), String> {
        let deadline = Instant::now() + timeout;
        for &i in which {
            let m = &self.nodes[i];
            loop {
                // Healthy, and the answer came from our process: ports are picked per test
                // process, so another test's etcd may hold the one we picked (ours then exits
                // with "address already in use", and its clients would talk to a stranger).
                if self.member_healthy(m)
                    && m.pid().is_some_and(|pid| listens_on(pid, m.client_port))
                {
                    break;
                }
                if !m.running() {
                    return Err(format!("{} exited:\n{}", m.name, tail(&m.log_path, 20)));
                }
                if Instant::now() > deadline {
                    return Err(format!(
                        "{} not healthy after {timeout:?}:\n{}",
                        m.name,
                        tail(&m.log_path, 20)
                    ));
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        Ok(())
    }

    /// Number of members (never 0).
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// `http` or `https` (the client URLs).
    pub fn scheme(&self) -> &'static str {
        if self.setup.tls.is_some() {
            "https"
        } else {
            "http"
        }
    }

    /// The certificates when the client URLs are https.
    pub fn tls(&self) -> Option<&TlsFiles> {
        self.setup.tls.as_ref()
    }

    /// `<scheme>://127.0.0.1:<client port>` of every member, in member order.
    pub fn urls(&self) -> Vec<String> {
        self.endpoints()
            .iter()
            .map(|e| format!("{}://{e}", self.scheme()))
            .collect()
    }

    /// Member `m` answers: `/health` on the plain metrics port when the client URLs are TLS or
    /// need a token, else `/health` and a range read on the client port.
    fn member_healthy(&self, m: &Node) -> bool {
        if self.setup.tls.is_some() || self.setup.root_password.is_some() {
            let health =
                super::http_request(m.metrics_port, "GET", "/health", None, REQUEST_TIMEOUT);
            matches!(health, Ok((200, ref body)) if body.contains("\"true\""))
        } else {
            healthy(m.client_port)
        }
    }

    /// `root` user with the `root` role, then `auth enable` (etcdctl's steps), through the
    /// JSON gateway.
    fn enable_auth(&self, password: &str) -> anyhow::Result<()> {
        // The root role may exist already (etcd creates it with the first grant on some
        // versions): its error is not fatal, the grant below is.
        let _ = self.post("/v3/auth/role/add", json!({ "name": "root" }));
        self.post(
            "/v3/auth/user/add",
            json!({ "name": "root", "password": password }),
        )?;
        self.post(
            "/v3/auth/user/grant",
            json!({ "user": "root", "role": "root" }),
        )?;
        self.post("/v3/auth/enable", json!({}))?;
        self.auth_on.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// `127.0.0.1:<client port>` of the first member, as written in `etcd3.hosts`.
    pub fn endpoint(&self) -> String {
        self.member_endpoint(0)
    }

    /// `127.0.0.1:<client port>` of member `i`.
    pub fn member_endpoint(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.nodes[i].client_port)
    }

    /// Every member's endpoint, in member order (`etcd3.hosts`).
    pub fn endpoints(&self) -> Vec<String> {
        (0..self.nodes.len())
            .map(|i| self.member_endpoint(i))
            .collect()
    }

    /// PID of the first member.
    pub fn pid(&self) -> Option<i32> {
        self.nodes[0].pid()
    }

    pub fn member_pid(&self, i: usize) -> Option<i32> {
        self.nodes[i].pid()
    }

    /// Whether every member process is alive (reaps the ones that exited).
    pub fn running(&self) -> bool {
        self.nodes.iter().all(Node::running)
    }

    pub fn member_running(&self, i: usize) -> bool {
        self.nodes[i].running()
    }

    /// `GET /health` of the first member says `"health":"true"` within the request timeout.
    pub fn healthy(&self) -> bool {
        self.member_healthy(&self.nodes[0])
    }

    /// SIGSTOP of every member: etcd stops answering but keeps its sockets (a hung DCS, not a
    /// dead one).
    pub fn pause(&self) {
        for m in &self.nodes {
            m.pause();
        }
    }

    /// SIGCONT after [`Etcd::pause`].
    pub fn resume(&self) {
        for m in &self.nodes {
            m.resume();
        }
    }

    /// SIGSTOP of member `i` only.
    pub fn pause_member(&self, i: usize) {
        self.nodes[i].pause();
    }

    /// SIGCONT of member `i`.
    pub fn resume_member(&self, i: usize) {
        self.nodes[i].resume();
    }

    /// Whether any member is paused.
    pub fn is_paused(&self) -> bool {
        self.nodes.iter().any(|m| m.paused.load(Ordering::SeqCst))
    }

    /// SIGKILL of every member, by PID, and reap.
    pub fn stop(&self) {
        for m in &self.nodes {
            m.kill();
        }
    }

    /// SIGKILL of member `i` (its data directory stays for [`Etcd::restart_member`]).
    pub fn kill_member(&self, i: usize) {
        self.nodes[i].kill();
    }

    /// Starts member `i` again on its ports and data directory (after [`Etcd::kill_member`])
    /// and waits until it is healthy.
    pub fn restart_member(&self, i: usize) {
        self.nodes[i].kill();
        self.spawn(i);
        if let Err(e) = self.wait_healthy(&[i], Duration::from_secs(30)) {
            panic!("etcd member {i} did not come back: {e}");
        }
    }

    /// Waits until every member is healthy again (e.g. after a quorum loss).
    pub fn wait_all_healthy(&self) {
        let all: Vec<usize> = (0..self.nodes.len()).collect();
        if let Err(e) = self.wait_healthy(&all, Duration::from_secs(60)) {
            panic!("etcd cluster not healthy: {e}");
        }
    }

    pub fn log_tail(&self, lines: usize) -> String {
        self.nodes
            .iter()
            .map(|m| {
                let text = tail(&m.log_path, lines);
                if self.nodes.len() == 1 {
                    text
                } else {
                    format!("-- {} --\n{text}", m.name)
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// A request to the first member that is running and not paused.
    fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        let port = self
            .nodes
            .iter()
            .find(|m| m.running() && !m.paused.load(Ordering::SeqCst))
            .map_or(self.client_port, |m| m.client_port);
        // With auth on, a token of root's first (the gateway takes it in `Authorization`).
        let token = match (
            &self.setup.root_password,
            self.auth_on.load(Ordering::SeqCst),
        ) {
            (Some(password), true) => {
                let body = json!({ "name": "root", "password": password }).to_string();
                let (code, text) = self
                    .send(port, "/v3/auth/authenticate", &body, None)
                    .context("etcd /v3/auth/authenticate")?;
                anyhow::ensure!(code == 200, "etcd authenticate: HTTP {code}: {text}");
                let reply: Value = serde_json::from_str(&text)?;
                let token = reply["token"].as_str().context("no token in the answer")?;
                Some(token.to_string())
            }
            _ => None,
        };
        let (code, text) = self
            .send(port, path, &body.to_string(), token.as_deref())
            .with_context(|| format!("etcd {path}"))?;
        anyhow::ensure!(code == 200, "etcd {path}: HTTP {code}: {text}");
        serde_json::from_str(&text).with_context(|| format!("etcd {path}: invalid JSON {text:?}"))
    }

    /// A user `name` with `password` and a role of its own allowed `permission` (`READ`,
    /// `WRITE` or `READWRITE`) on the keys under `prefix` only (auth must be on; the harness
    /// acts as root).
    pub fn add_user(
        &self,
        name: &str,
        password: &str,
        prefix: &str,
        permission: &str,
    ) -> anyhow::Result<()> {
        let role = format!("{name}-role");
        let mut end = prefix.as_bytes().to_vec();
        if let Some(last) = end.last_mut() {
            *last += 1;
        }
        self.post("/v3/auth/role/add", json!({ "name": role }))?;
        self.post(
            "/v3/auth/role/grant",
            json!({
                "name": role,
                "perm": {
                    "permType": permission,
                    "key": base64::encode(prefix.as_bytes()),
                    "range_end": base64::encode(&end),
                }
            }),
        )?;
        self.post(
            "/v3/auth/user/add",
            json!({ "name": name, "password": password }),
        )?;
        self.post("/v3/auth/user/grant", json!({ "user": name, "role": role }))?;
        Ok(())
    }

    /// Revokes lease `id` (its keys go with it), as an operator or an expiry would.
    pub fn revoke_lease(&self, id: i64) -> anyhow::Result<()> {
        self.post("/v3/lease/revoke", json!({ "ID": id.to_string() }))?;
        Ok(())
    }

    /// The Prometheus text of the first running member's `/metrics` (plain http only).
    pub fn metrics(&self) -> anyhow::Result<String> {
        anyhow::ensure!(
            self.setup.tls.is_none(),
            "metrics of a TLS etcd: not needed yet"
        );
        let port = self
            .nodes
            .iter()
            .find(|m| m.running() && !m.paused.load(Ordering::SeqCst))
            .map_or(self.client_port, |m| m.client_port);
        let (code, text) = super::http_request(port, "GET", "/metrics", None, REQUEST_TIMEOUT)?;
        anyhow::ensure!(code == 200, "etcd /metrics: HTTP {code}");
        Ok(text)
    }

    /// One POST to the gateway on `port`, over https when the client URLs are TLS.
    fn send(
        &self,
        port: u16,
        path: &str,
        body: &str,
        token: Option<&str>,
    ) -> anyhow::Result<(u16, String)> {
        let headers: Vec<(&str, &str)> = token.map(|t| ("Authorization", t)).into_iter().collect();
        match &self.setup.tls {
            Some(tls) => https_post(tls, port, path, body, token, self.setup.client_cert_auth),
            None => {
                super::http_request_with(port, "POST", path, Some(body), REQUEST_TIMEOUT, &headers)
            }
        }
    }

    /// The value of `key` (absolute, e.g. `/service/pgpilot-test/leader`).
    pub fn get(&self, key: &str) -> anyhow::Result<Option<String>> {
        Ok(self.get_kv(key)?.map(|kv| kv.value))
    }

    /// `key` with its revisions and lease.
    pub fn get_kv(&self, key: &str) -> anyhow::Result<Option<Kv>> {
        let reply = self.post(
            "/v3/kv/range",
            json!({ "key": base64::encode(key.as_bytes()) }),
        )?;
        Ok(parse_kvs(&reply)?.into_iter().next())
    }

    /// All keys starting with `prefix`, in key order.
    pub fn list(&self, prefix: &str) -> anyhow::Result<Vec<Kv>> {
        let mut end = prefix.as_bytes().to_vec();
        match end.last_mut() {
            Some(last) if *last < 0xff => *last += 1,
            _ => anyhow::bail!("unsupported prefix {prefix:?}"),
        }
        let reply = self.post(
            "/v3/kv/range",
            json!({
                "key": base64::encode(prefix.as_bytes()),
                "range_end": base64::encode(&end),
            }),
        )?;
        parse_kvs(&reply)
    }

    pub fn put(&self, key: &str, value: &str) -> anyhow::Result<()> {
        self.post(
            "/v3/kv/put",
            json!({
                "key": base64::encode(key.as_bytes()),
                "value": base64::encode(value.as_bytes()),
            }),
        )?;
        Ok(())
    }

    /// Deletes `key`; returns how many keys were deleted.
    pub fn delete(&self, key: &str) -> anyhow::Result<i64> {
        let reply = self.post(
            "/v3/kv/deleterange",
            json!({ "key": base64::encode(key.as_bytes()) }),
        )?;
        Ok(int_field(&reply, "deleted"))
    }

    /// Remaining TTL of a lease in seconds; -1 when the lease no longer exists (expired or
    /// revoked).
    pub fn lease_ttl(&self, lease: i64) -> anyhow::Result<i64> {
        let reply = self.post("/v3/lease/timetolive", json!({ "ID": lease.to_string() }))?;
        Ok(match reply.get("TTL") {
            None => -1,
            Some(_) => int_field(&reply, "TTL"),
        })
    }

    /// Every key and value, for failure reports.
    pub fn dump(&self) -> String {
        if self.is_paused() {
            return "(etcd is paused)".into();
        }
        match self.list("/") {
            Ok(kvs) => kvs
                .iter()
                .map(|kv| format!("{} = {} (lease {})", kv.key, kv.value, kv.lease))
                .collect::<Vec<_>>()
                .join("\n"),
            Err(e) => format!("(can not read etcd: {e:#})"),
        }
    }
}

/// A JSON request to etcd's gateway over https with the client certificate. The harness's
/// callers are synchronous (some run inside a test's runtime): reqwest runs on a thread of its
/// own.
fn https_post(
    tls: &TlsFiles,
    port: u16,
    path: &str,
    body: &str,
    token: Option<&str>,
    identity: bool,
) -> anyhow::Result<(u16, String)> {
    let (tls, url, body, token) = (
        tls.clone(),
        format!("https://127.0.0.1:{port}{path}"),
        body.to_string(),
        token.map(str::to_string),
    );
    std::thread::spawn(move || -> anyhow::Result<(u16, String)> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async move {
            let ca = std::fs::read(&tls.ca)?;
            let mut builder = reqwest::Client::builder()
                .no_proxy()
                .timeout(REQUEST_TIMEOUT)
                .add_root_certificate(reqwest::Certificate::from_pem(&ca)?);
            // Only when etcd asks for one: with auth on, its gateway refuses a request that
            // carries a client certificate ("CommonName ... will be ignored").
            if identity {
                let mut id = std::fs::read(&tls.client_cert)?;
                id.extend(std::fs::read(&tls.client_key)?);
                builder = builder.identity(reqwest::Identity::from_pem(&id)?);
            }
            let client = builder.build()?;
            let mut request = client.post(url).body(body);
            if let Some(t) = token {
                request = request.header("Authorization", t);
            }
            let resp = request.send().await?;
            let code = resp.status().as_u16();
            Ok((code, resp.text().await?))
        })
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the https request thread panicked"))?
}

/// `GET /health` answers `"health":"true"` and a range read works.
fn healthy(port: u16) -> bool {
    let health = super::http_request(port, "GET", "/health", None, REQUEST_TIMEOUT);
    let range = super::http_request(
        port,
        "POST",
        "/v3/kv/range",
        Some(r#"{"key":"Lw=="}"#),
        REQUEST_TIMEOUT,
    );
    matches!(health, Ok((200, ref body)) if body.contains("\"true\""))
        && matches!(range, Ok((200, _)))
}

/// The gateway renders int64 as JSON strings; absent means 0.
fn int_field(v: &Value, name: &str) -> i64 {
    match v.get(name) {
        Some(Value::String(s)) => s.parse().unwrap_or(0),
        Some(Value::Number(n)) => n.as_i64().unwrap_or(0),
        _ => 0,
    }
}

fn parse_kvs(reply: &Value) -> anyhow::Result<Vec<Kv>> {
    let Some(kvs) = reply.get("kvs").and_then(Value::as_array) else {
        return Ok(Vec::new());
    };
    kvs.iter()
        .map(|kv| {
            let text = |name: &str| -> anyhow::Result<String> {
                let b64 = kv.get(name).and_then(Value::as_str).unwrap_or("");
                Ok(String::from_utf8(base64::decode(b64)?)?)
            };
            Ok(Kv {
                key: text("key")?,
                value: text("value")?,
                create_revision: int_field(kv, "create_revision"),
                mod_revision: int_field(kv, "mod_revision"),
                lease: int_field(kv, "lease"),
            })
        })
        .collect()
}

/// Whether process `pid` holds the listening TCP socket of `127.0.0.1:port` (from
/// `/proc/net/tcp` and the process's file descriptors). When that cannot be read (another
/// user's process without privileges) it says yes: the health check alone decides then.
fn listens_on(pid: i32, port: u16) -> bool {
    let Ok(table) = std::fs::read_to_string("/proc/net/tcp") else {
        return true;
    };
    let local = format!("0100007F:{port:04X}");
    let inodes: Vec<String> = table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
            (f.len() > 9 && f[1] == local && f[3] == "0A").then(|| f[9].to_string())
        })
        .collect();
    if inodes.is_empty() {
        return false;
    }
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return true;
    };
    fds.flatten().any(|fd| {
        std::fs::read_link(fd.path()).is_ok_and(|target| {
            let t = target.to_string_lossy();
            inodes.iter().any(|i| t == format!("socket:[{i}]"))
        })
    })
}

impl Node {
    fn pid(&self) -> Option<i32> {
        self.child.lock().unwrap().as_ref().map(|c| c.id() as i32)
    }

    fn running(&self) -> bool {
        let mut guard = self.child.lock().unwrap();
        match guard.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    fn pause(&self) {
        if let Some(pid) = self.pid() {
            signal(pid, Signal::SIGSTOP);
            self.paused.store(true, Ordering::SeqCst);
        }
    }

    fn resume(&self) {
        if let Some(pid) = self.pid() {
            signal(pid, Signal::SIGCONT);
            self.paused.store(false, Ordering::SeqCst);
        }
    }

    /// SIGKILL by PID (a stopped process dies too) and reap.
    fn kill(&self) {
        let mut guard = self.child.lock().unwrap();
        if let Some(mut child) = guard.take() {
            let pid = child.id() as i32;
            signal(pid, Signal::SIGKILL);
            let _ = child.wait();
            debug_assert!(!pid_alive(pid));
        }
        self.paused.store(false, Ordering::SeqCst);
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}
