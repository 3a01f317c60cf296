//! The benchmark's measurements (used by `benches/cluster.rs` and the CI smoke test): one
//! fresh 3-member cluster per repetition, with a client writing a row every 10 ms through a
//! multi-host connection string (`target_session_attrs=read-write`).
//!
//! 1. bootstrap: all agents started -> a leader running and both replicas streaming;
//! 2. idle cost: each agent's RSS (VmRSS) and CPU (utime+stime) over the idle window, and the
//!    etcd requests per second (gRPC messages received, from etcd's own `/metrics`);
//! 3. switchover: write gap around `pgpilotctl switchover --force`;
//! 4. graceful handover: write gap around SIGTERM to the leader's agent;
//! 5. crash failover: write gap around SIGKILL of the leader's agent and postmaster.
//!
//! The write gap is the time from the first failed write to the next acknowledged one.

use std::path::{Path, PathBuf};
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
    /// Mean VmRSS of the agents at the end of the idle window, in KiB.
    pub rss_kib: f64,
    /// Mean CPU time of one agent over the idle window, as a share of one core (percent).
    pub cpu_percent: f64,
    /// etcd gRPC messages received per second during the idle window.
    pub etcd_rps: f64,
}

fn proc_stat_ticks(pid: i32) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = text.rsplit_once(')').context("malformed stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat, i.e. 11 and 12 after the ')'.
    Ok(f[11].parse::<u64>()? + f[12].parse::<u64>()?)
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

/// Sum of `grpc_server_msg_received_total` from etcd's `/metrics`.
async fn etcd_messages(http: &reqwest::Client, endpoint: &str) -> anyhow::Result<f64> {
    let text = http
        .get(format!("http://{endpoint}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with("grpc_server_msg_received_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
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

/// One repetition: a fresh cluster running `agent` (None: pgpilot) with `profile`.
pub async fn measure(
    agent: Option<PathBuf>,
    profile: (u64, u64, u64),
    idle: Duration,
    ctl: &Path,
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
    let cluster = Cluster::new(3, options);
    let mut sample = Sample::default();

    let started = Instant::now();
    for i in 0..3 {
        cluster.start_agent(i);
    }
    let leader = cluster.wait_for_leader().await;
    cluster.wait_for_replicas_streaming(2).await;
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
    let pids: Vec<i32> = (0..3).filter_map(|i| cluster.agent_pid(i)).collect();
    if pids.len() != 3 {
        bail!("an agent is not running");
    }
    let cpu0: Vec<u64> = pids
        .iter()
        .map(|&p| proc_stat_ticks(p))
        .collect::<Result<_, _>>()?;
    let msgs0 = etcd_messages(&http, &cluster.etcd.endpoint()).await?;
    let t0 = Instant::now();
    tokio::time::sleep(idle).await;
    let msgs1 = etcd_messages(&http, &cluster.etcd.endpoint()).await?;
    let window = t0.elapsed().as_secs_f64();
    let cpu1: Vec<u64> = pids
        .iter()
        .map(|&p| proc_stat_ticks(p))
        .collect::<Result<_, _>>()?;
    let ticks_per_sec = 100.0; // USER_HZ on Linux
    let cpu: f64 = cpu1
        .iter()
        .zip(&cpu0)
        .map(|(a, b)| (a - b) as f64)
        .sum::<f64>()
        / ticks_per_sec
        / 3.0;
    sample.cpu_percent = 100.0 * cpu / window;
    sample.rss_kib = pids
        .iter()
        .map(|&p| vm_rss_kib(p).unwrap_or(0) as f64)
        .sum::<f64>()
        / 3.0;
    sample.etcd_rps = (msgs1 - msgs0) / window;

    // Switchover.
    let config = cluster.member(0).config_path.clone();
    let old = leader;
    sample.switchover = gap_around(&cluster, "switchover", "bench_sw", || async {
        let out = tokio::process::Command::new(ctl)
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
    cluster.wait_for_replicas_streaming(2).await;

    // Graceful handover.
    sample.handover = gap_around(&cluster, "handover", "bench_ho", || async {
        cluster.terminate_agent(leader);
        new_leader(&cluster, leader).await;
    })
    .await;
    cluster.wait_agent_exit(leader, FAILOVER_TIMEOUT).await;
    cluster.start_agent(leader);
    cluster.wait_for_replicas_streaming(2).await;
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
