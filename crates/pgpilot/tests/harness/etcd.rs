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

/// A running etcd, killed (by PID) in `Drop`.
pub struct Etcd {
    pub client_port: u16,
    pub peer_port: u16,
    /// Data and log. The data directory lives in /dev/shm when possible: fsync latency on a
    /// shared disk would otherwise stall the 1 s HA loop.
    dir: TempDir,
    pub log_path: PathBuf,
    child: Mutex<Option<Child>>,
    paused: AtomicBool,
}

impl Etcd {
    /// Starts etcd on free loopback ports and waits until it answers `/health` and a range read.
    pub fn start() -> Etcd {
        init();
        let dir = tempfile::Builder::new()
            .prefix("pgpilot-etcd-")
            .tempdir_in("/dev/shm")
            .or_else(|_| tempfile::Builder::new().prefix("pgpilot-etcd-").tempdir())
            .expect("create etcd temp dir");
        let log_path = dir.path().join("etcd.log");
        let mut last_error = String::new();
        // A port picked as free may be taken before etcd binds it: retry with new ports.
        for attempt in 1..=3 {
            let (client_port, peer_port) = (free_port(), free_port());
            let data = dir.path().join(format!("data-{attempt}"));
            let peer = format!("http://127.0.0.1:{peer_port}");
            let client = format!("http://127.0.0.1:{client_port}");
            let log = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .expect("open etcd log");
            let mut cmd = Command::new(ETCD_BIN);
            cmd.arg("--name=harness")
                .arg(format!("--data-dir={}", data.display()))
                .arg(format!("--listen-client-urls={client}"))
                .arg(format!("--advertise-client-urls={client}"))
                .arg(format!("--listen-peer-urls={peer}"))
                .arg(format!("--initial-advertise-peer-urls={peer}"))
                .arg(format!("--initial-cluster=harness={peer}"))
                .arg("--initial-cluster-state=new")
                .arg(format!("--initial-cluster-token=harness-{client_port}"))
                .arg("--logger=zap")
                .arg("--log-outputs=stderr")
                .arg("--log-level=warn")
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("clone log handle"))
                .stderr(log);
            clean_env(&mut cmd, dir.path());
            let mut child =
                spawn_child(cmd).unwrap_or_else(|e| panic!("can not start {ETCD_BIN}: {e}"));
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                if healthy(client_port) {
                    return Etcd {
                        client_port,
                        peer_port,
                        log_path,
                        dir,
                        child: Mutex::new(Some(child)),
                        paused: AtomicBool::new(false),
                    };
                }
                if !matches!(child.try_wait(), Ok(None)) {
                    last_error = format!("etcd exited:\n{}", tail(&log_path, 20));
                    break;
                }
                if Instant::now() > deadline {
                    last_error = format!("etcd not healthy after 30 s:\n{}", tail(&log_path, 20));
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            signal(child.id() as i32, Signal::SIGKILL);
            let _ = child.wait();
        }
        panic!("etcd did not start: {last_error}");
    }

    /// `127.0.0.1:<client port>`, as written in `etcd3.hosts`.
    pub fn endpoint(&self) -> String {
        format!("127.0.0.1:{}", self.client_port)
    }

    pub fn pid(&self) -> Option<i32> {
        self.child.lock().unwrap().as_ref().map(|c| c.id() as i32)
    }

    /// Whether the etcd process is still alive (reaps it if it exited).
    pub fn running(&self) -> bool {
        let mut guard = self.child.lock().unwrap();
        match guard.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// `GET /health` says `"health":"true"` within the request timeout.
    pub fn healthy(&self) -> bool {
        healthy(self.client_port)
    }

    /// SIGSTOP: etcd stops answering but keeps its sockets (a hung DCS, not a dead one).
    pub fn pause(&self) {
        if let Some(pid) = self.pid() {
            signal(pid, Signal::SIGSTOP);
            self.paused.store(true, Ordering::SeqCst);
        }
    }

    /// SIGCONT after [`Etcd::pause`].
    pub fn resume(&self) {
        if let Some(pid) = self.pid() {
            signal(pid, Signal::SIGCONT);
            self.paused.store(false, Ordering::SeqCst);
        }
    }

    pub fn is_paused(&self) -> bool {
        self.paused.load(Ordering::SeqCst)
    }

    /// SIGKILL by PID and reap.
    pub fn stop(&self) {
        let mut guard = self.child.lock().unwrap();
        if let Some(mut child) = guard.take() {
            let pid = child.id() as i32;
            signal(pid, Signal::SIGKILL);
            let _ = child.wait();
            debug_assert!(!pid_alive(pid));
        }
    }

    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log_path, lines)
    }

    fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        let (code, text) = super::http_request(
            self.client_port,
            "POST",
            path,
            Some(&body.to_string()),
            REQUEST_TIMEOUT,
        )
        .with_context(|| format!("etcd {path}"))?;
        anyhow::ensure!(code == 200, "etcd {path}: HTTP {code}: {text}");
        serde_json::from_str(&text).with_context(|| format!("etcd {path}: invalid JSON {text:?}"))
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

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}
