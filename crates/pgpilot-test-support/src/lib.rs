//! The integration-test harness: real etcd, real PostgreSQL 15 and real `pgpilot` agents on
//! loopback, in temporary directories, torn down in `Drop` (which also runs while a failed test
//! unwinds); and the programs users run in front of a cluster, Debian's HAProxy ([`HaProxy`])
//! and pgBouncer ([`PgBouncer`]), started the same way, and keepalived ([`Keepalived`]) moving a
//! virtual address between network namespaces through a root helper ([`root_helper`]).
//!
//! Used by the integration tests and the benchmark of `crates/pgpilot` (the tests through
//! `crates/pgpilot/tests/harness/mod.rs`, which hands over the freshly built agent), by
//! `pgpilot-chaos` and by `crates/pgpilot-dcs/tests/etcd_members.rs` (its [`Etcd`] only).
//! Every test starts with [`init`] (or [`init_with_agent`]):
//!
//! * PostgreSQL refuses to run as root and CI runs the tests as root. When the test process is
//!   root, [`init`] copies the agent binary to a world-readable place (the repository may live
//!   under `/root`) and then drops the privileges of the whole test process to the user
//!   `pgpilot`. cargo-nextest runs one process per test, so this is per test.
//! * Everything binds 127.0.0.1 only, on free ports chosen below the kernel's ephemeral range.
//! * Processes are stopped by PID, never by name: agents get SIGTERM then SIGKILL, and the
//!   postmaster named in `<data_dir>/postmaster.pid` is SIGKILLed if it survived its agent.
//! * When a test fails, the tail of every agent log, PostgreSQL log and the etcd keys are printed.
//!
//! Timeouts here are generous upper bounds for slow shared machines; tests print the durations
//! they measure instead of asserting them.
//!
//! The agent: a library can not see `CARGO_BIN_EXE_pgpilot` (cargo sets it only when it
//! compiles the tests of the crate that builds the binary), so the caller names it:
//! [`init_with_agent`] with the binary it built, or `PGPILOT_TEST_AGENT`. Tests that start no
//! agent (etcd only) call [`init`] alone.
//!
//! Environment: `PGPILOT_KEEP_TEST_DIR=1` keeps each cluster's directory (configs, logs, data);
//! `PGPILOT_TEST_AGENT=<executable>` runs the tests against another agent taking the same
//! arguments (e.g. `exec patroni "$@"`: Patroni is the compatibility oracle).

use std::collections::{BTreeMap, HashSet};
use std::hash::{BuildHasher, Hasher};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::{Pid, User};

mod base64;
pub mod bench;
mod cluster;
mod daemon;
mod etcd;
mod haproxy;
mod keepalived;
mod pg;
mod pgbouncer;
pub mod root_helper;
mod tls;
mod watchdog;
mod writer;
mod yaml;

pub use base64::{decode as base64_decode, encode as base64_encode};
pub use cluster::{Cluster, Member, Options, API_AUTH, REPLICATION, SUPERUSER};
pub use etcd::{Etcd, EtcdSetup, Kv};
pub use haproxy::{parse_stat, HaProxy, ServerState, HAPROXY_BIN};
pub use keepalived::{Keepalived, KEEPALIVED_BIN, VIP};
pub use pg::{connect_socket, controldata_field, controldata_system_identifier, Standalone};
pub use pgbouncer::{PgBouncer, PGBOUNCER_BIN};
pub use tls::{encrypted_key, make_certs, temp_certs, TlsFiles};
pub use watchdog::{WatchdogEvent, WatchdogMonitor};
pub use writer::{Reader, ReaderLog, Writer, WriterLog};
pub use yaml::to_yaml;

/// Debian's PostgreSQL 15 binaries.
pub const PG_BIN_DIR: &str = "/usr/lib/postgresql/15/bin";
/// Debian's etcd 3.4.
pub const ETCD_BIN: &str = "/usr/bin/etcd";
/// The unprivileged user the tests run as when started as root.
pub const TEST_USER: &str = "pgpilot";

/// Upper bound for a 3-member cluster to bootstrap (initdb + 2 clones) on a slow shared machine.
pub const BOOTSTRAP_TIMEOUT: Duration = Duration::from_secs(180);
/// Upper bound for a failover / handover / rejoin to complete.
pub const FAILOVER_TIMEOUT: Duration = Duration::from_secs(120);
/// Upper bound for a row to replicate or a small state change to show.
pub const SHORT_TIMEOUT: Duration = Duration::from_secs(60);
/// Pause between two polls of [`wait_for`].
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);
/// Upper bound of one attempt inside [`wait_for`] (each attempt also has its own I/O timeouts).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15);

/// The agent binary to run (a world-readable copy when the tests started as root), `None` when
/// the caller named none. Set once per process, with the privilege drop.
static AGENT_BIN: OnceLock<Option<PathBuf>> = OnceLock::new();

/// Prepares the test process; call it first in every integration test (idempotent).
///
/// As root: places a copy of the agent binary (`PGPILOT_TEST_AGENT`, if set) where the
/// unprivileged user can execute it, then drops the privileges of the whole process to
/// [`TEST_USER`] (setgroups, setgid, setuid; glibc applies them to every thread). Fails if that
/// user does not exist. A test that runs an agent calls [`init_with_agent`] instead.
pub fn init() {
    // reqwest is built without a default TLS provider: the one pgpilot uses (ring).
    pgpilot_api::tls::install_provider();
    AGENT_BIN.get_or_init(|| prepare(None));
}

/// [`init`] for a test that runs agents: `built` is the agent binary its crate built (pgpilot's
/// tests pass `env!("CARGO_BIN_EXE_pgpilot")`); `PGPILOT_TEST_AGENT`, when set, names another
/// one to run instead. Must come before anything else of the harness (the binary is placed
/// before root is dropped).
pub fn init_with_agent(built: impl AsRef<Path>) {
    pgpilot_api::tls::install_provider();
    let agent = AGENT_BIN.get_or_init(|| prepare(Some(built.as_ref())));
    assert!(
        agent.is_some(),
        "init_with_agent came after the harness was initialised without an agent; call it first"
    );
}

/// The agent binary to run (a world-readable copy when the tests started as root).
///
/// `PGPILOT_TEST_AGENT=/path/to/agent` runs the tests against another executable taking the
/// same arguments, e.g. a wrapper around Patroni itself, the compatibility oracle.
pub fn agent_bin() -> PathBuf {
    match AGENT_BIN.get_or_init(|| prepare(None)) {
        Some(agent) => agent.clone(),
        None => panic!(
            "no agent binary: start the test with init_with_agent(<the built pgpilot>) \
             or set PGPILOT_TEST_AGENT to the pgpilot agent binary"
        ),
    }
}

/// Names the agent (`PGPILOT_TEST_AGENT` over `built`) and, as root, places it and drops root.
fn prepare(built: Option<&Path>) -> Option<PathBuf> {
    let agent = match std::env::var_os("PGPILOT_TEST_AGENT") {
        Some(other) => Some(PathBuf::from(other)),
        None => built.map(Path::to_path_buf),
    };
    if !nix::unistd::geteuid().is_root() {
        return agent;
    }
    let user = User::from_name(TEST_USER)
        .expect("looking up the unprivileged user")
        .unwrap_or_else(|| {
            panic!(
                "PostgreSQL can not run as root and the tests run as root: \
                 create the unprivileged user: useradd --system --create-home {TEST_USER}"
            )
        });
    let bin = agent.map(|a| place_agent_binary(&a));
    drop_privileges(&user);
    bin
}

/// Puts the built agent where any user can execute it: `<tmp>/pgpilot-test-bin/<len>-<mtime>/`,
/// a root-owned 0755 directory shared by the tests of one build (hard link, or copy across file
/// systems). Replacement is atomic (write aside + rename), so parallel tests may race here.
fn place_agent_binary(built: &Path) -> PathBuf {
    let meta = std::fs::metadata(built).unwrap_or_else(|e| {
        panic!(
            "the agent binary {} is missing ({e}); build it first",
            built.display()
        )
    });
    let base = std::env::temp_dir().join("pgpilot-test-bin");
    let key = format!(
        "{}-{}",
        meta.len(),
        meta.mtime_nsec() + meta.mtime() * 1_000_000_000
    );
    let dir = base.join(key);
    for d in [&base, &dir] {
        match std::fs::create_dir(d) {
            Ok(()) => std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))
                .expect("chmod the binary directory"),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => panic!("can not create {}: {e}", d.display()),
        }
        // A shared, predictable path in /tmp: trust it only if root owns it and nobody else
        // can write to it.
        let m = std::fs::symlink_metadata(d).expect("stat the binary directory");
        assert!(
            m.is_dir() && m.uid() == 0 && m.mode() & 0o022 == 0,
            "{} must be a root-owned directory not writable by others",
            d.display()
        );
    }
    let target = dir.join("pgpilot");
    if !target.exists() {
        let aside = dir.join(format!("pgpilot.{}", std::process::id()));
        let _ = std::fs::remove_file(&aside);
        if std::fs::hard_link(built, &aside).is_err() {
            std::fs::copy(built, &aside).expect("copy the agent binary");
        }
        std::fs::set_permissions(&aside, std::fs::Permissions::from_mode(0o755))
            .expect("chmod the agent binary");
        std::fs::rename(&aside, &target).expect("rename the agent binary into place");
    }
    // Forget builds that are over a day old.
    if let Ok(entries) = std::fs::read_dir(&base) {
        for e in entries.flatten() {
            let old = e
                .metadata()
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > Duration::from_secs(86_400));
            if old && e.path() != dir {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    target
}

fn drop_privileges(user: &User) {
    nix::unistd::setgroups(&[user.gid]).expect("setgroups");
    nix::unistd::setgid(user.gid).expect("setgid");
    nix::unistd::setuid(user.uid).expect("setuid");
    assert_eq!(
        nix::unistd::geteuid(),
        user.uid,
        "privileges were not dropped"
    );
    eprintln!(
        "harness: running as {} (uid {}) because PostgreSQL refuses root",
        user.name, user.uid
    );
}

// ---------------------------------------------------------------------------------------------
// Polling

/// Polls `check` until it returns `Ok`, every [`POLL_INTERVAL`]; panics after `timeout` with
/// `what` and the last error, so a failed wait says what was expected and what was seen.
pub async fn wait_for<T>(
    timeout: Duration,
    what: &str,
    mut check: impl AsyncFnMut() -> anyhow::Result<T>,
) -> T {
    let start = Instant::now();
    loop {
        let last = match tokio::time::timeout(ATTEMPT_TIMEOUT, check()).await {
            Ok(Ok(v)) => return v,
            Ok(Err(e)) => format!("{e:#}"),
            Err(_) => format!("one check took longer than {ATTEMPT_TIMEOUT:?}"),
        };
        if start.elapsed() >= timeout {
            panic!("timed out after {timeout:?} waiting for {what}; last check: {last}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Seconds with one decimal, for the timings tests print.
pub fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

// ---------------------------------------------------------------------------------------------
// Ports

static HANDED_OUT: Mutex<Option<HashSet<u16>>> = Mutex::new(None);

/// A TCP port free on 127.0.0.1 right now, never handed out twice by this process. Chosen at
/// random below the kernel's ephemeral range, so outgoing connections (which take their local
/// port from that range) can not grab it before the server binds it.
pub fn free_port() -> u16 {
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| {
            s.split_whitespace()
                .next()
                .and_then(|p| p.parse::<u16>().ok())
        })
        .unwrap_or(32768);
    let (low, high) = (10_000u16, ephemeral_low);
    let mut handed = HANDED_OUT.lock().unwrap();
    let handed = handed.get_or_insert_with(HashSet::new);
    for attempt in 0..1000u64 {
        let port = if high > low + 1000 {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u64(attempt);
            h.write_u32(std::process::id());
            low + (h.finish() % u64::from(high - low)) as u16
        } else {
            // Odd kernel configuration: let the kernel pick.
            TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("bind 127.0.0.1:0")
        };
        if handed.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed.insert(port);
            return port;
        }
    }
    panic!("no free port found on 127.0.0.1");
}

// ---------------------------------------------------------------------------------------------
// Processes

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

/// Starts a long-lived child (etcd, an agent). Children are spawned from one harness thread that
/// lives as long as the test process and get `PR_SET_PDEATHSIG = SIGKILL`: if the test process is
/// killed (nextest timeout), they die with it instead of leaking. (The death signal follows the
/// spawning *thread*, hence the dedicated thread.)
pub fn spawn_child(cmd: Command) -> std::io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    let spawner = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("harness-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let parent = std::process::id();
                    // SAFETY: only async-signal-safe libc calls between fork and exec.
                    unsafe {
                        cmd.pre_exec(move || {
                            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                                return Err(std::io::Error::last_os_error());
                            }
                            if libc::getppid() as u32 != parent {
                                return Err(std::io::Error::other("the test process is gone"));
                            }
                            Ok(())
                        });
                    }
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("start the spawner thread");
        Mutex::new(tx)
    });
    let (tx, rx) = mpsc::channel();
    spawner
        .lock()
        .unwrap()
        .send((cmd, tx))
        .expect("spawner thread is gone");
    rx.recv().expect("spawner thread is gone")
}

/// Removes the environment that would leak into etcd, PostgreSQL or the agent from the
/// developer's shell (`PGHOST`, `PATRONI_*`, `ETCD_*`, proxies) and sets `HOME`.
pub fn clean_env(cmd: &mut Command, home: &Path) {
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy().to_string();
        let upper = k.to_ascii_uppercase();
        if upper.starts_with("PG")
            || upper.starts_with("PATRONI")
            || upper.starts_with("PGPILOT")
            || upper.starts_with("ETCD")
            || upper.ends_with("_PROXY")
        {
            cmd.env_remove(&k);
        }
    }
    cmd.env("HOME", home)
        .env("RUST_BACKTRACE", "1")
        .current_dir(home);
}

/// Whether `pid` is a live process (zombies count as dead: PID 1 in containers may not reap).
pub fn pid_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => match stat.rfind(')') {
            Some(end) => !matches!(stat[end + 1..].trim_start().chars().next(), Some('Z' | 'X')),
            None => false,
        },
        Err(_) => false,
    }
}

/// Live guard processes of the member whose data directory is `data_dir`, found by their
/// command line (`pgpilot --guard <data_dir> ...`): the agent that started one may be gone.
pub fn guard_pids(data_dir: &Path) -> Vec<i32> {
    let want = format!("--guard\0{}\0", data_dir.display()).into_bytes();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c.windows(want.len()).any(|w| w == want.as_slice()))
        })
        .filter(|&pid| pid_alive(pid))
        .collect()
}

/// `/proc/<pid>/comm`, the executable's name.
pub fn pid_comm(pid: i32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim().to_string())
}

/// The uid a process runs as.
pub fn pid_uid(pid: i32) -> Option<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

pub fn signal(pid: i32, sig: Signal) {
    let _ = kill(Pid::from_raw(pid), sig);
}

/// The postmaster PID recorded in `<data_dir>/postmaster.pid`, if that process is alive and is a
/// `postgres` (guards against a recycled PID).
pub fn postmaster_pid(data_dir: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    let pid: i32 = text.lines().next()?.trim().parse().ok()?;
    (pid > 0 && pid_alive(pid) && pid_comm(pid).as_deref() == Some("postgres")).then_some(pid)
}

/// SIGKILLs the postmaster of `data_dir` (by PID) and waits up to 10 s for it to vanish. Returns
/// the PID that was killed.
pub fn kill_postmaster_of(data_dir: &Path) -> Option<i32> {
    let pid = postmaster_pid(data_dir)?;
    signal(pid, Signal::SIGKILL);
    let deadline = Instant::now() + Duration::from_secs(10);
    while pid_alive(pid) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    Some(pid)
}

// ---------------------------------------------------------------------------------------------
// Files

/// The last `n` lines of a file ("" if it can not be read).
pub fn tail(path: &Path, n: usize) -> String {
    let Ok(bytes) = std::fs::read(path) else {
        return String::new();
    };
    let text = String::from_utf8_lossy(&bytes);
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// The last `n` lines of a log, with runs of lines that differ only in their leading timestamp
/// collapsed into one (an idle HA loop logs the same sentence every second).
pub fn log_tail(path: &Path, n: usize) -> String {
    let Ok(bytes) = std::fs::read(path) else {
        return String::new();
    };
    let text = String::from_utf8_lossy(&bytes);
    let mut out: Vec<String> = Vec::new();
    let mut last: Option<&str> = None;
    let mut repeats = 0;
    for line in text.lines() {
        let message = without_timestamp(line);
        if last == Some(message) {
            repeats += 1;
            continue;
        }
        if repeats > 0 {
            out.push(format!("    [... {repeats} more like the line above]"));
        }
        repeats = 0;
        out.push(line.to_string());
        last = Some(message);
    }
    if repeats > 0 {
        out.push(format!("    [... {repeats} more like the line above]"));
    }
    out[out.len().saturating_sub(n)..].join("\n")
}

/// `2026-11-24 14:16:47,123 INFO: x` -> `INFO: x`; other lines unchanged.
fn without_timestamp(line: &str) -> &str {
    let b = line.as_bytes();
    let stamped = b.len() > 20 && b[4] == b'-' && b[7] == b'-' && b[10] == b' ' && b[13] == b':';
    match line
        .get(19..)
        .and_then(|rest| rest.find(' ').map(|i| 19 + i + 1))
    {
        Some(start) if stamped => &line[start..],
        _ => line,
    }
}

/// Every regular file under `dir` with its size and a content hash, to prove a directory was
/// left untouched.
pub fn dir_fingerprint(dir: &Path) -> BTreeMap<PathBuf, (u64, u64)> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, (u64, u64)>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
            .flatten()
            .collect();
        entries.sort_by_key(|e| e.path());
        for e in entries {
            let path = e.path();
            let ft = e.file_type().expect("file type");
            if ft.is_dir() {
                walk(root, &path, out);
            } else if ft.is_file() {
                let bytes = std::fs::read(&path).unwrap_or_default();
                #[allow(deprecated)]
                let mut h = std::hash::SipHasher::new();
                h.write(&bytes);
                out.insert(
                    path.strip_prefix(root).unwrap().to_path_buf(),
                    (bytes.len() as u64, h.finish()),
                );
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

/// Runs the agent binary with `args` to completion (for `--version`, `--validate-config`).
pub fn run_agent_cli(args: &[&str], home: &Path) -> std::process::Output {
    let mut cmd = Command::new(agent_bin());
    cmd.args(args);
    clean_env(&mut cmd, home);
    cmd.stdin(Stdio::null())
        .output()
        .expect("run the agent binary")
}

/// The physical slot name Patroni derives from a member name (spec/ha-loop.md §5.9), written
/// independently of the agent's code on purpose.
pub fn expected_slot_name(member: &str) -> String {
    let mut out = String::new();
    for ch in member.to_lowercase().chars() {
        match ch {
            'a'..='z' | '0'..='9' | '_' => out.push(ch),
            '-' | '.' => out.push('_'),
            other => out.push_str(&format!("u{:04}", other as u32)),
        }
    }
    out.chars().take(63).collect()
}

// ---------------------------------------------------------------------------------------------
// Tiny HTTP/1.0 client over std::net, for etcd's gRPC gateway: synchronous so it also works in
// `Drop` and while an async runtime is blocked, and bounded by socket timeouts.

pub(crate) fn http_request(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<(u16, String)> {
    http_request_with(port, method, path, body, timeout, &[])
}

/// [`http_request`] with extra header lines (`name`, `value`).
pub(crate) fn http_request_with(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&str>,
    timeout: Duration,
    headers: &[(&str, &str)],
) -> anyhow::Result<(u16, String)> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut s = TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    let body = body.unwrap_or("");
    let extra: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n\
         {extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf).to_string();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| anyhow::anyhow!("malformed HTTP reply: {text:?}"))?;
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("malformed HTTP status line: {head:?}"))?;
    Ok((code, body.to_string()))
}

/// Patroni's patronictl in a virtualenv kept across test runs (`<tmp>/pgpilot-patroni-venv`).
pub fn patronictl() -> Result<PathBuf, String> {
    pypi_tool(
        "pgpilot-patroni-venv",
        &["patroni[etcd3]>=4,<5", "psycopg2-binary"],
        "patronictl",
        "version",
    )
}

/// pglift (with its command line) in a virtualenv kept across test runs
/// (`<tmp>/pgpilot-pglift-venv`).
pub fn pglift() -> Result<PathBuf, String> {
    pypi_tool(
        "pgpilot-pglift-venv",
        &["pglift[cli]>=3,<4"],
        "pglift",
        "--version",
    )
}

/// A command-line tool from PyPI: `bin` of a virtualenv `<tmp>/<venv>` made from Debian's
/// `/usr/bin/python3` (readable by the unprivileged test user) with `packages`, installed once
/// and reused while `bin probe` succeeds. The error says which step failed.
fn pypi_tool(venv: &str, packages: &[&str], bin: &str, probe: &str) -> Result<PathBuf, String> {
    let venv = std::env::temp_dir().join(venv);
    let bin = venv.join("bin").join(bin);
    // With a HOME of its own: the test process may have dropped root and kept root's HOME,
    // where pglift would read its site settings.
    let works = |bin: &Path| {
        std::process::Command::new(bin)
            .arg(probe)
            .env("HOME", &venv)
            .env_remove("XDG_CONFIG_HOME")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if works(&bin) {
        return Ok(bin);
    }
    let _ = std::fs::remove_dir_all(&venv);
    let step = |cmd: &mut std::process::Command, what: &str| -> Result<(), String> {
        let out = cmd.output().map_err(|e| format!("{what}: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "{what} failed: {}",
                String::from_utf8_lossy(&out.stderr)
                    .lines()
                    .last()
                    .unwrap_or("")
            ));
        }
        Ok(())
    };
    step(
        std::process::Command::new("/usr/bin/python3")
            .args(["-m", "venv"])
            .arg(&venv),
        "python3 -m venv",
    )?;
    step(
        std::process::Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .args(packages)
            .env("PIP_DEFAULT_TIMEOUT", "30"),
        &format!("pip install {}", packages.join(" ")),
    )?;
    if works(&bin) {
        Ok(bin)
    } else {
        Err(format!(
            "{} {probe} does not run after the install",
            bin.display()
        ))
    }
}
