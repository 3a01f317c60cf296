//! The benchmark's measurements (used by `benches/cluster.rs` and the CI smoke test): one
//! fresh cluster (3 members unless asked for more) per repetition, with a client writing a row
//! every 10 ms through a multi-host connection string (`target_session_attrs=read-write`).
//!
//! 1. bootstrap: all agents started -> a leader running and every replica streaming;
//! 2. idle cost: each agent's RSS (VmRSS, plus the private memory of pgpilot's guard) and CPU
//!    (scheduler run time, the guard's included) over the idle window, and the etcd requests
//!    per second (gRPC messages received, from etcd's own `/metrics`), also by gRPC method;
//! 3. switchover: write gap around `pgpilotctl switchover --force`;
//! 4. graceful handover: write gap around SIGTERM to the leader's agent;
//! 5. crash failover: write gap around SIGKILL of the leader's agent and postmaster.
//!
//! The write gap is the time from the first failed write to the next acknowledged one.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::{Cluster, Options, Writer, FAILOVER_TIMEOUT};

/// HA timings: `(name, ttl, loop_wait, retry_timeout)`.
pub const PROFILES: &[(&str, u64, u64, u64)] = &[
    ("fast (ttl 20, loop_wait 1, retry_timeout 3)", 20, 1, 3),
    (
        "Patroni defaults (ttl 30, loop_wait 10, retry_timeout 10)",
        30,
        10,
        10,
    ),
];

/// One repetition's figures.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub bootstrap: Duration,
    pub switchover: Option<Duration>,
    pub handover: Option<Duration>,
    pub crash: Option<Duration>,
    /// Mean memory of the agents at the end of the idle window, in KiB: VmRSS, plus the private
    /// memory of pgpilot's guard process (see `AgentProcesses::memory_kib`).
    pub rss_kib: f64,
    /// Mean CPU time of one agent (with its guard) over the idle window, as a share of one
    /// core (percent).
    pub cpu_percent: f64,
    /// etcd gRPC messages received per second during the idle window.
    pub etcd_rps: f64,
    /// The same, by gRPC method (`Range`, `Txn`, `LeaseKeepAlive`, `Watch`...).
    pub etcd_rps_by_method: BTreeMap<String, f64>,
}

/// CPU time of process `pid` in nanoseconds: the scheduler's per-thread run time
/// (`/proc/PID/task/*/schedstat`, first field), summed over its threads. USER_HZ ticks
/// (`utime`/`stime`, 10 ms) are too coarse for an agent that runs a few ms per minute.
fn cpu_ns(pid: i32) -> anyhow::Result<u64> {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let path = task?.path().join("schedstat");
        // A thread that ended between the listing and the read has nothing to add.
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        total += text
            .split_whitespace()
            .next()
            .context("empty schedstat")?
            .parse::<u64>()?;
    }
    Ok(total)
}

/// `Private_Clean + Private_Dirty` of `pid` (`/proc/PID/smaps_rollup`), in KiB: the memory
/// only this process holds.
fn private_kib(pid: i32) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
    let mut total = 0;
    for line in text.lines() {
        if line.starts_with("Private_Clean:") || line.starts_with("Private_Dirty:") {
            total += line
                .split_whitespace()
                .nth(1)
                .context("smaps_rollup value")?
                .parse::<u64>()?;
        }
    }
    Ok(total)
}

/// One member's agent and its guard processes (pgpilot's `pgpilot --guard`; none for
/// Patroni), whose cost is the agent's too. PostgreSQL is not counted.
struct AgentProcesses {
    agent: i32,
    guards: Vec<i32>,
}

impl AgentProcesses {
    /// CPU nanoseconds of the agent and its guards.
    fn cpu_ns(&self) -> anyhow::Result<u64> {
        std::iter::once(self.agent)
            .chain(self.guards.iter().copied())
            .map(cpu_ns)
            .sum()
    }

    /// The agent's VmRSS plus the private memory of its guards. A guard's other resident
    /// pages are the same executable's and libc's pages the agent maps too: counting its
    /// whole RSS would count them twice (about 5.7 of its 6.5 MiB).
    fn memory_kib(&self) -> u64 {
        let guards: u64 = self
            .guards
            .iter()
            .map(|&p| private_kib(p).unwrap_or(0))
            .sum();
        vm_rss_kib(self.agent).unwrap_or(0) + guards
    }
}

fn vm_rss_kib(pid: i32) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = text
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS")?;
    Ok(line
        .split_whitespace()
        .nth(1)
        .context("VmRSS value")?
        .parse()?)
}

/// `grpc_server_msg_received_total` from etcd's `/metrics`, by gRPC method (a stream's
/// messages each count: every lease keepalive, every watch request).
async fn etcd_messages(
    http: &reqwest::Client,
    endpoint: &str,
) -> anyhow::Result<BTreeMap<String, f64>> {
    let text = http
        .get(format!("http://{endpoint}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    Ok(messages_by_method(&text))
}

/// Sums `grpc_server_msg_received_total{grpc_method="M",...} N` lines by `M`.
fn messages_by_method(metrics: &str) -> BTreeMap<String, f64> {
    let mut by_method = BTreeMap::new();
    for line in metrics
        .lines()
        .filter(|l| l.starts_with("grpc_server_msg_received_total"))
    {
        let Some(count) = line.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()) else {
            continue;
        };
        let method = line
            .split_once("grpc_method=\"")
            .and_then(|(_, rest)| rest.split_once('"'))
            .map_or("?", |(m, _)| m);
        *by_method.entry(method.to_string()).or_insert(0.0) += count;
    }
    by_method
}

async fn gap_around<F, Fut>(cluster: &Cluster, what: &str, table: &str, act: F) -> Option<Duration>
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let ports: Vec<u16> = (0..cluster.len())
        .map(|i| cluster.member(i).pg_port)
        .collect();
    let writer = Writer::start(&ports, table);
    tokio::time::sleep(Duration::from_secs(1)).await;
    act().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let log = writer.finish().await;
    let gap = log.longest_gap();
    if gap.is_none() {
        eprintln!("bench: {what}: no failed write was seen");
    }
    gap
}

async fn new_leader(cluster: &Cluster, old: usize) -> usize {
    let new = cluster
        .wait_for_leader_except(&[old], FAILOVER_TIMEOUT)
        .await;
    cluster.primary_timeline(new).await;
    new
}

/// One repetition: a fresh cluster of `members` running `agent` (None: pgpilot) with
/// `profile`.
pub async fn measure(
    agent: Option<PathBuf>,
    members: usize,
    profile: (u64, u64, u64),
    idle: Duration,
    ctl: PathBuf,
    idle_only: bool,
) -> anyhow::Result<Sample> {
    let (ttl, loop_wait, retry_timeout) = profile;
    let options = Options {
        ttl,
        loop_wait,
        retry_timeout,
        agent,
        scope: "bench".into(),
        ..Options::default()
    };
    let cluster = Cluster::new(members, options);
    let replicas = members.saturating_sub(1);
    let mut sample = Sample::default();

    let started = Instant::now();
    for i in 0..members {
        cluster.start_agent(i);
    }
    let leader = cluster.wait_for_leader().await;
    cluster.wait_for_replicas_streaming(replicas).await;
    sample.bootstrap = started.elapsed();
    cluster
        .pg_connect(leader)
        .await
        .batch_execute(
            "CREATE TABLE bench_sw (id bigint PRIMARY KEY, at timestamptz);
             CREATE TABLE bench_ho (id bigint PRIMARY KEY, at timestamptz);
             CREATE TABLE bench_cr (id bigint PRIMARY KEY, at timestamptz);",
        )
        .await?;

    // Idle cost.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let http = reqwest::Client::new();
    let procs: Vec<AgentProcesses> = (0..members)
        .filter_map(|i| {
            Some(AgentProcesses {
                agent: cluster.agent_pid(i)?,
                guards: super::guard_pids(&cluster.member(i).data_dir),
            })
        })
        .collect();
    if procs.len() != members {
        bail!("an agent is not running");
    }
    let cpu0: Vec<u64> = procs
        .iter()
        .map(AgentProcesses::cpu_ns)
        .collect::<Result<_, _>>()?;
    let msgs0 = etcd_messages(&http, &cluster.etcd.endpoint()).await?;
    let t0 = Instant::now();
    tokio::time::sleep(idle).await;
    let msgs1 = etcd_messages(&http, &cluster.etcd.endpoint()).await?;
    let window = t0.elapsed().as_secs_f64();
    let cpu1: Vec<u64> = procs
        .iter()
        .map(AgentProcesses::cpu_ns)
        .collect::<Result<_, _>>()?;
    let cpu: f64 = cpu1
        .iter()
        .zip(&cpu0)
        .map(|(a, b)| a.saturating_sub(*b) as f64)
        .sum::<f64>()
        / 1e9
        / members as f64;
    sample.cpu_percent = 100.0 * cpu / window;
    sample.rss_kib = procs.iter().map(|p| p.memory_kib() as f64).sum::<f64>() / members as f64;
    for (method, n1) in &msgs1 {
        let n0 = msgs0.get(method).copied().unwrap_or(0.0);
        if n1 > &n0 {
            sample
                .etcd_rps_by_method
                .insert(method.clone(), (n1 - n0) / window);
        }
    }
    sample.etcd_rps = sample.etcd_rps_by_method.values().sum();
    if idle_only {
        return Ok(sample);
    }

    // Switchover.
    let config = cluster.member(0).config_path.clone();
    let old = leader;
    sample.switchover = gap_around(&cluster, "switchover", "bench_sw", || async {
        let out = tokio::process::Command::new(&ctl)
            .arg("-c")
            .arg(&config)
            .args(["switchover", "--force"])
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output()
            .await;
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "bench: switchover failed: {}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => eprintln!("bench: can not run {}: {e}", ctl.display()),
        }
        new_leader(&cluster, old).await;
    })
    .await;
    let leader = cluster
        .leader_index()
        .context("no leader after the switchover")?;
    cluster.wait_for_replicas_streaming(replicas).await;

    // Graceful handover.
    sample.handover = gap_around(&cluster, "handover", "bench_ho", || async {
        cluster.terminate_agent(leader);
        new_leader(&cluster, leader).await;
    })
    .await;
    cluster.wait_agent_exit(leader, FAILOVER_TIMEOUT).await;
    cluster.start_agent(leader);
    cluster.wait_for_replicas_streaming(replicas).await;
    let leader = cluster
        .leader_index()
        .context("no leader after the handover")?;

    // Crash failover.
    sample.crash = gap_around(&cluster, "crash failover", "bench_cr", || async {
        cluster.kill_agent(leader);
        cluster.kill_postmaster(leader);
        new_leader(&cluster, leader).await;
    })
    .await;
    Ok(sample)
}

/// `min / median / max` (the median of an even count is the mean of the middle two).
pub fn spread(values: &[f64]) -> Option<(f64, f64, f64)> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some((v[0], median, v[n - 1]))
}

/// The rows of the table: `(measurement, unit, extractor)`.
#[allow(clippy::type_complexity)]
pub fn rows() -> Vec<(&'static str, &'static str, fn(&Sample) -> Option<f64>)> {
    vec![
        ("bootstrap", "s", |s| Some(s.bootstrap.as_secs_f64())),
        ("crash failover (write gap)", "s", |s| {
            s.crash.map(|d| d.as_secs_f64())
        }),
        ("graceful handover (write gap)", "s", |s| {
            s.handover.map(|d| d.as_secs_f64())
        }),
        ("switchover (write gap)", "s", |s| {
            s.switchover.map(|d| d.as_secs_f64())
        }),
        ("agent RSS", "MiB", |s| Some(s.rss_kib / 1024.0)),
        ("agent idle CPU", "% of a core", |s| Some(s.cpu_percent)),
        ("etcd requests", "per s", |s| Some(s.etcd_rps)),
    ]
}

/// Every gRPC method seen in `samples`, with its median rate over `samples` (0 where a
/// sample did not see it).
pub fn methods_median(samples: &[Sample]) -> BTreeMap<String, f64> {
    let mut names: Vec<&String> = samples
        .iter()
        .flat_map(|s| s.etcd_rps_by_method.keys())
        .collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter_map(|m| {
            let v: Vec<f64> = samples
                .iter()
                .map(|s| s.etcd_rps_by_method.get(m).copied().unwrap_or(0.0))
                .collect();
            spread(&v).map(|(_, med, _)| (m.clone(), med))
        })
        .collect()
}

/// Formats one cell `min / median / max`.
pub fn cell(values: &[f64]) -> String {
    match spread(values) {
        Some((lo, med, hi)) => format!("{lo:.2} / {med:.2} / {hi:.2}"),
        None => "-".into(),
    }
}

/// Patroni's `patroni` executable in the virtualenv the tests keep (built on first use).
pub fn patroni_executable() -> Result<PathBuf, String> {
    let ctl = super::patronictl()?;
    let bin = ctl.with_file_name("patroni");
    if bin.exists() {
        Ok(bin)
    } else {
        Err(format!("{} is missing", bin.display()))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn messages_are_summed_by_method() {
        let text = r#"# HELP grpc_server_msg_received_total Total number of RPC stream messages received on the server.
grpc_server_msg_received_total{grpc_method="Range",grpc_service="etcdserverpb.KV",grpc_type="unary"} 12
grpc_server_msg_received_total{grpc_method="LeaseKeepAlive",grpc_service="etcdserverpb.Lease",grpc_type="bidi_stream"} 5
grpc_server_msg_received_total{grpc_method="Range",grpc_service="other.KV",grpc_type="unary"} 1
grpc_server_started_total{grpc_method="Range",grpc_service="etcdserverpb.KV",grpc_type="unary"} 99
"#;
        let m = super::messages_by_method(text);
        assert_eq!(m.get("Range"), Some(&13.0));
        assert_eq!(m.get("LeaseKeepAlive"), Some(&5.0));
        assert_eq!(m.len(), 2);
    }
}
