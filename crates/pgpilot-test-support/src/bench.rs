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
//! 5. crash failover: write gap around SIGKILL of the leader's agent and postmaster (pgpilot's
//!    guard, alive, gives the leader key back at once);
//! 6. node crash: write gap around SIGKILL of every process of the leader's member (agent,
//!    pgpilot's guard, postmaster), as when its machine dies: the key has to expire.
//!
//! The write gap is the time from the first failed write to the next acknowledged one.
//!
//! Before the idle window the cluster settles for `2 × loop_wait + 2 s` after the last write:
//! the agents rewrite their member keys with the new WAL position for a loop or two after a
//! write, which would otherwise count as idle `Put`s.
//!
//! [`measure_fleet`] is the scale mode's fleet: several clusters (each its own `scope`) on one
//! shared etcd, bootstrap and the idle cost only, with etcd's open watch streams and client
//! bytes as well.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

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
    // pgpilot honours a ttl below 20 with its guard on; Patroni 4 raises it to its floor, so
    // this compares each at its fastest accepted setting.
    (
        "short ttl (ttl 8, loop_wait 1, retry_timeout 2; Patroni raises it to ttl 20, retry_timeout 3)",
        8,
        1,
        2,
    ),
];

/// One repetition's figures.
#[derive(Debug, Clone, Default)]
pub struct Sample {
    pub bootstrap: Duration,
    pub switchover: Option<Duration>,
    pub handover: Option<Duration>,
    /// The gaps of a second switchover and handover, seen by a client holding a connection to
    /// every member ([`Writer::start_direct`]): the servers' own write unavailability, without
    /// the libpq client's walk over the hosts.
    pub switchover_direct: Option<Duration>,
    pub handover_direct: Option<Duration>,
    /// The machine's CPU use during those two gaps.
    pub switchover_cpu: Option<GapCpu>,
    pub handover_cpu: Option<GapCpu>,
    pub crash: Option<Duration>,
    pub node_crash: Option<Duration>,
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

/// The idle window's figures for a set of agents on one etcd: CPU and memory are means per
/// agent, etcd's figures are totals (every client of that etcd).
#[derive(Debug, Clone, Default)]
pub struct Idle {
    /// Mean CPU time of one agent (with its guard) as a share of one core (percent).
    pub cpu_percent: f64,
    /// Mean memory of one agent at the end of the window, KiB (see `Sample::rss_kib`).
    pub rss_kib: f64,
    /// gRPC messages received per second by etcd, by method.
    pub etcd_rps_by_method: BTreeMap<String, f64>,
    /// Bytes per second etcd received from and sent to its gRPC clients
    /// (`etcd_network_client_grpc_{received,sent}_bytes_total`).
    pub received_bps: f64,
    pub sent_bps: f64,
    /// Open watch streams and watchers at the end of the window
    /// (`etcd_debugging_mvcc_watch_stream_total`, `etcd_debugging_mvcc_watcher_total`).
    pub watch_streams: f64,
    pub watchers: f64,
}

impl Idle {
    pub fn etcd_rps(&self) -> f64 {
        self.etcd_rps_by_method.values().sum()
    }
}

/// One fleet repetition: `clusters` clusters of `members` on one etcd.
#[derive(Debug, Clone, Default)]
pub struct FleetSample {
    pub clusters: usize,
    pub members: usize,
    /// First agent started -> every cluster has a leader and streaming replicas.
    pub bootstrap: Duration,
    /// Mean PSS of one member's PostgreSQL (postmaster and children) at the end of the idle
    /// window, KiB: shared memory is divided among the processes that map it.
    pub postgres_pss_kib: f64,
    /// The machine's `MemAvailable` at the end of the idle window, KiB (a shared machine:
    /// other work counts too).
    pub mem_available_kib: f64,
    /// The 1-minute load average at the end of the idle window.
    pub load: f64,
    pub idle: Idle,
}

impl FleetSample {
    /// Agents in the fleet: the divisor of the per-member etcd figures.
    pub fn agents(&self) -> f64 {
        (self.clusters * self.members) as f64
    }
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

/// etcd's `/metrics` at one moment (counters, except the watch gauges).
#[derive(Debug, Clone, Default)]
struct EtcdMetrics {
    /// `grpc_server_msg_received_total` by gRPC method (a stream's messages each count: every
    /// lease keepalive, every watch request).
    by_method: BTreeMap<String, f64>,
    received_bytes: f64,
    sent_bytes: f64,
    watch_streams: f64,
    watchers: f64,
}

async fn etcd_metrics(http: &reqwest::Client, endpoint: &str) -> anyhow::Result<EtcdMetrics> {
    let text = http
        .get(format!("http://{endpoint}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let scalar = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Ok(EtcdMetrics {
        by_method: messages_by_method(&text),
        received_bytes: scalar("etcd_network_client_grpc_received_bytes_total"),
        sent_bytes: scalar("etcd_network_client_grpc_sent_bytes_total"),
        watch_streams: scalar("etcd_debugging_mvcc_watch_stream_total"),
        watchers: scalar("etcd_debugging_mvcc_watcher_total"),
    })
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

/// The agents (and guards) of every member of `cluster`; an error if one is not running.
fn agent_processes(cluster: &Cluster) -> anyhow::Result<Vec<AgentProcesses>> {
    (0..cluster.len())
        .map(|i| {
            Ok(AgentProcesses {
                agent: cluster
                    .agent_pid(i)
                    .with_context(|| format!("agent {i} is not running"))?,
                guards: super::guard_pids(&cluster.member(i).data_dir),
            })
        })
        .collect()
}

/// Lets the agents settle after the last write: two loops and 2 s (see the module doc).
async fn settle(loop_wait: u64) {
    tokio::time::sleep(Duration::from_secs(2 * loop_wait + 2)).await;
}

/// The idle window: `procs`' CPU over `idle` and memory at its end, and etcd's counters at
/// `endpoint` over the same window.
async fn idle_window(
    procs: &[AgentProcesses],
    endpoint: &str,
    idle: Duration,
) -> anyhow::Result<Idle> {
    let http = reqwest::Client::new();
    let cpu0: Vec<u64> = procs
        .iter()
        .map(AgentProcesses::cpu_ns)
        .collect::<Result<_, _>>()?;
    let m0 = etcd_metrics(&http, endpoint).await?;
    let t0 = Instant::now();
    tokio::time::sleep(idle).await;
    let m1 = etcd_metrics(&http, endpoint).await?;
    let window = t0.elapsed().as_secs_f64();
    let cpu1: Vec<u64> = procs
        .iter()
        .map(AgentProcesses::cpu_ns)
        .collect::<Result<_, _>>()?;
    let n = procs.len().max(1) as f64;
    let cpu: f64 = cpu1
        .iter()
        .zip(&cpu0)
        .map(|(a, b)| a.saturating_sub(*b) as f64)
        .sum::<f64>()
        / 1e9
        / n;
    let mut by_method = BTreeMap::new();
    for (method, n1) in &m1.by_method {
        let n0 = m0.by_method.get(method).copied().unwrap_or(0.0);
        if n1 > &n0 {
            by_method.insert(method.clone(), (n1 - n0) / window);
        }
    }
    Ok(Idle {
        cpu_percent: 100.0 * cpu / window,
        rss_kib: procs.iter().map(|p| p.memory_kib() as f64).sum::<f64>() / n,
        etcd_rps_by_method: by_method,
        received_bps: (m1.received_bytes - m0.received_bytes) / window,
        sent_bps: (m1.sent_bytes - m0.sent_bytes) / window,
        watch_streams: m1.watch_streams,
        watchers: m1.watchers,
    })
}

/// The summed `Pss:` (`/proc/PID/smaps_rollup`) of `postmasters` and their children, KiB.
fn postgres_pss_kib(postmasters: &[i32]) -> u64 {
    let pss = |pid: i32| -> u64 {
        std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))
            .ok()
            .and_then(|t| {
                t.lines()
                    .find(|l| l.starts_with("Pss:"))
                    .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            })
            .unwrap_or(0)
    };
    let parent = |pid: i32| -> Option<i32> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // `pid (comm) state ppid ...`: comm may hold spaces, so split after its `)`.
        stat[stat.rfind(')')? + 1..]
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()
    };
    let children: u64 = std::fs::read_dir("/proc")
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
                .filter(|&pid| parent(pid).is_some_and(|p| postmasters.contains(&p)))
                .map(pss)
                .sum()
        })
        .unwrap_or(0);
    postmasters.iter().copied().map(pss).sum::<u64>() + children
}

/// `MemAvailable` from /proc/meminfo, KiB.
fn mem_available_kib() -> f64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemAvailable:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .unwrap_or(0.0)
}

fn load_average() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

/// The options of a benchmark cluster running `agent` (None: pgpilot) with `profile`.
fn bench_options(agent: Option<PathBuf>, profile: (u64, u64, u64), scope: String) -> Options {
    let (ttl, loop_wait, retry_timeout) = profile;
    Options {
        ttl,
        loop_wait,
        retry_timeout,
        agent,
        scope,
        ..Options::default()
    }
}

/// One fleet repetition: one etcd, `clusters` clusters of `members` running `agent` (None:
/// pgpilot) with `profile`, each its own scope (`bench-<i>`) in the same namespace. Clusters
/// are started `parallel` at a time (each group bootstraps together); once the last one is
/// up and settled, the idle window measures every agent at once.
pub async fn measure_fleet(
    agent: Option<PathBuf>,
    clusters: usize,
    members: usize,
    profile: (u64, u64, u64),
    idle: Duration,
    parallel: usize,
) -> anyhow::Result<FleetSample> {
    let etcd = std::sync::Arc::new(super::Etcd::start());
    let started = Instant::now();
    let mut fleet: Vec<Cluster> = Vec::with_capacity(clusters);
    let result = async {
        for group in (0..clusters).collect::<Vec<_>>().chunks(parallel.max(1)) {
            for &c in group {
                let mut options = bench_options(agent.clone(), profile, format!("bench-{c}"));
                options.shared_etcd = Some(etcd.clone());
                let cluster = Cluster::new(members, options);
                for i in 0..members {
                    cluster.start_agent(i);
                }
                fleet.push(cluster);
            }
            for cluster in &fleet[group[0]..] {
                cluster.wait_for_leader().await;
                cluster.wait_for_replicas_streaming(members - 1).await;
            }
            eprintln!(
                "bench: fleet: {} of {clusters} clusters up after {:.1} s",
                fleet.len(),
                started.elapsed().as_secs_f64()
            );
        }
        let bootstrap = started.elapsed();
        settle(profile.1).await;
        let mut procs = Vec::new();
        for cluster in &fleet {
            procs.extend(agent_processes(cluster)?);
        }
        let idle = idle_window(&procs, &etcd.endpoint(), idle).await?;
        let postmasters: Vec<i32> = fleet
            .iter()
            .flat_map(|c| (0..c.len()).filter_map(|i| c.postmaster_pid(i)))
            .collect();
        anyhow::Ok(FleetSample {
            clusters,
            members,
            bootstrap,
            postgres_pss_kib: postgres_pss_kib(&postmasters) as f64 / procs.len().max(1) as f64,
            mem_available_kib: mem_available_kib(),
            load: load_average(),
            idle,
        })
    }
    .await;
    // Stop the clusters side by side: one after the other, each waits for its agents.
    std::thread::scope(|s| {
        for cluster in fleet {
            s.spawn(move || drop(cluster));
        }
    });
    result
}

/// The machine's busy and total CPU time so far, all CPUs together, in USER_HZ ticks
/// (`/proc/stat`'s `cpu` line; idle and iowait are not busy).
fn machine_ticks() -> Option<(u64, u64)> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    let fields: Vec<u64> = text
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = fields.iter().sum();
    let idle = fields.get(3)? + fields.get(4)?;
    Some((total - idle, total))
}

/// CPU use sampled every 10 ms while a role change runs: when, the machine's busy and total
/// ticks, and the agents' CPU nanoseconds (with their guards; an agent that exited counts what
/// it had used).
struct CpuTrace {
    stop: Arc<AtomicBool>,
    sampler: std::thread::JoinHandle<Vec<(Instant, u64, u64, u64)>>,
}

impl CpuTrace {
    fn start(procs: Vec<AgentProcesses>) -> CpuTrace {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let sampler = std::thread::spawn(move || {
            let mut last: Vec<u64> = vec![0; procs.len()];
            let mut samples = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                for (seen, p) in last.iter_mut().zip(&procs) {
                    if let Ok(ns) = p.cpu_ns() {
                        *seen = ns;
                    }
                }
                if let Some((busy, total)) = machine_ticks() {
                    samples.push((Instant::now(), busy, total, last.iter().sum()));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            samples
        });
        CpuTrace { stop, sampler }
    }

    /// Stops sampling. The CPU use during `span` (from, to), from the last sample before
    /// `from` to the first after `to`: `None` without a span or samples on both sides.
    fn finish(self, span: Option<(Instant, Instant)>) -> Option<GapCpu> {
        self.stop.store(true, Ordering::Relaxed);
        let samples = self.sampler.join().ok()?;
        let (from, to) = span?;
        let a = samples.iter().rev().find(|s| s.0 <= from)?;
        let b = samples.iter().find(|s| s.0 >= to)?;
        let window = b.0.duration_since(a.0).as_secs_f64();
        Some(GapCpu {
            machine_busy: (b.1 - a.1) as f64 / (b.2 - a.2).max(1) as f64,
            agents_cores: (b.3.saturating_sub(a.3)) as f64 / 1e9 / window.max(1e-3),
        })
    }
}

/// What the machine did during a write gap ([`CpuTrace`]).
#[derive(Debug, Clone, Copy)]
pub struct GapCpu {
    /// The share of all CPUs that was busy (0 to 1).
    pub machine_busy: f64,
    /// The CPU the agents (every member's, with their guards) used, in cores.
    pub agents_cores: f64,
}

/// How a write gap is seen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Client {
    /// Through a multi-host connection string (`target_session_attrs=read-write`).
    Libpq,
    /// Over one connection to each member ([`Writer::start_direct`]), with the machine's CPU
    /// use during the gap.
    Direct,
}

/// The write gap around `act`, seen by `client`, with the machine's CPU use during it for
/// [`Client::Direct`].
async fn gap_around<F, Fut>(
    cluster: &Cluster,
    what: &str,
    table: &str,
    client: Client,
    act: F,
) -> (Option<Duration>, Option<GapCpu>)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let ports: Vec<u16> = (0..cluster.len())
        .map(|i| cluster.member(i).pg_port)
        .collect();
    let writer = match client {
        Client::Libpq => Writer::start(&ports, table),
        Client::Direct => Writer::start_direct(&ports, table),
    };
    let trace = match client {
        Client::Direct => agent_processes(cluster).ok().map(CpuTrace::start),
        Client::Libpq => None,
    };
    tokio::time::sleep(Duration::from_secs(1)).await;
    act().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let log = writer.finish().await;
    let span = log.longest_gap_span();
    let cpu = trace.and_then(|t| t.finish(span));
    if span.is_none() {
        eprintln!(
            "bench: {what}: no write gap (an acknowledged write, a failure, an acknowledged write) was seen: {} acknowledged, {} failed: {}",
            log.acked.len(),
            log.failures.len(),
            log.error_summary()
        );
    }
    (span.map(|(f, a)| a.duration_since(f)), cpu)
}

/// `pgpilotctl switchover --force` (or `patronictl`'s), then waits for a new leader other than
/// `old` to run a primary.
async fn switchover(cluster: &Cluster, ctl: &std::path::Path, old: usize) {
    let config = cluster.member(0).config_path.clone();
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
    new_leader(cluster, old).await;
}

/// A switchover away from `leader`, then a graceful handover away from the member that took
/// over (whose agent is started again afterwards), both seen by `client`, each once the
/// replicas stream again: the new leader, and each role change's gap with the CPU use during it.
async fn role_changes(
    cluster: &Cluster,
    ctl: &std::path::Path,
    leader: usize,
    client: Client,
) -> anyhow::Result<(usize, [(Option<Duration>, Option<GapCpu>); 2])> {
    let replicas = cluster.len().saturating_sub(1);
    let (tables, seen_by) = match client {
        Client::Libpq => (["bench_sw", "bench_ho"], ""),
        Client::Direct => (["bench_sw_direct", "bench_ho_direct"], " (direct client)"),
    };
    let sw = gap_around(
        cluster,
        &format!("switchover{seen_by}"),
        tables[0],
        client,
        || switchover(cluster, ctl, leader),
    )
    .await;
    let old = cluster
        .leader_index()
        .context("no leader after the switchover")?;
    cluster.wait_for_replicas_streaming(replicas).await;

    let ho = gap_around(
        cluster,
        &format!("handover{seen_by}"),
        tables[1],
        client,
        || async {
            cluster.terminate_agent(old);
            new_leader(cluster, old).await;
        },
    )
    .await;
    cluster.wait_agent_exit(old, FAILOVER_TIMEOUT).await;
    cluster.start_agent(old);
    cluster.wait_for_replicas_streaming(replicas).await;
    let leader = cluster
        .leader_index()
        .context("no leader after the handover")?;
    Ok((leader, [sw, ho]))
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
    let options = bench_options(agent, profile, "bench".into());
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
             CREATE TABLE bench_cr (id bigint PRIMARY KEY, at timestamptz);
             CREATE TABLE bench_nc (id bigint PRIMARY KEY, at timestamptz);
             CREATE TABLE bench_sw_direct (id bigint PRIMARY KEY, at timestamptz);
             CREATE TABLE bench_ho_direct (id bigint PRIMARY KEY, at timestamptz);
",
        )
        .await?;

    // Idle cost.
    settle(profile.1).await;
    let procs = agent_processes(&cluster)?;
    let idle_figures = idle_window(&procs, &cluster.etcd.endpoint(), idle).await?;
    sample.cpu_percent = idle_figures.cpu_percent;
    sample.rss_kib = idle_figures.rss_kib;
    sample.etcd_rps = idle_figures.etcd_rps();
    sample.etcd_rps_by_method = idle_figures.etcd_rps_by_method;
    if idle_only {
        return Ok(sample);
    }

    // Switchover and graceful handover, each twice: seen by the libpq client, then by the
    // direct one. Each client writes alone, so that neither's work competes with the role
    // change the other measures.
    let (leader, [switchover, handover]) =
        role_changes(&cluster, &ctl, leader, Client::Libpq).await?;
    (sample.switchover, sample.handover) = (switchover.0, handover.0);
    let (leader, [switchover, handover]) =
        role_changes(&cluster, &ctl, leader, Client::Direct).await?;
    (sample.switchover_direct, sample.switchover_cpu) = switchover;
    (sample.handover_direct, sample.handover_cpu) = handover;

    // Crash failover.
    sample.crash = gap_around(
        &cluster,
        "crash failover",
        "bench_cr",
        Client::Libpq,
        || async {
            cluster.kill_agent(leader);
            cluster.kill_postmaster(leader);
            new_leader(&cluster, leader).await;
        },
    )
    .await
    .0;
    cluster.start_agent(leader);
    cluster.wait_for_replicas_streaming(replicas).await;
    let leader = cluster
        .leader_index()
        .context("no leader after the crash failover")?;

    // Node crash: every process of the member, the guard included (Patroni has none).
    sample.node_crash = gap_around(
        &cluster,
        "node crash",
        "bench_nc",
        Client::Libpq,
        || async {
            let guards = super::guard_pids(&cluster.member(leader).data_dir);
            cluster.kill_agent(leader);
            for pid in guards {
                super::signal(pid, nix::sys::signal::Signal::SIGKILL);
            }
            cluster.kill_postmaster(leader);
            new_leader(&cluster, leader).await;
        },
    )
    .await
    .0;
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
        (
            "crash failover: agent and postmaster killed (write gap)",
            "s",
            |s| s.crash.map(|d| d.as_secs_f64()),
        ),
        ("crash failover: whole node killed (write gap)", "s", |s| {
            s.node_crash.map(|d| d.as_secs_f64())
        }),
        ("graceful handover (write gap)", "s", |s| {
            s.handover.map(|d| d.as_secs_f64())
        }),
        ("graceful handover (write gap, direct client)", "s", |s| {
            s.handover_direct.map(|d| d.as_secs_f64())
        }),
        ("switchover (write gap)", "s", |s| {
            s.switchover.map(|d| d.as_secs_f64())
        }),
        ("switchover (write gap, direct client)", "s", |s| {
            s.switchover_direct.map(|d| d.as_secs_f64())
        }),
        (
            "the machine's CPUs busy during that switchover's gap",
            "%",
            |s| s.switchover_cpu.map(|c| 100.0 * c.machine_busy),
        ),
        ("agent RSS", "MiB", |s| Some(s.rss_kib / 1024.0)),
        ("agent idle CPU", "% of a core", |s| Some(s.cpu_percent)),
        ("etcd requests", "per s", |s| Some(s.etcd_rps)),
    ]
}

/// Every gRPC method seen in `samples`, with its median rate over `samples` (0 where a
/// sample did not see it).
pub fn methods_median(samples: &[Sample]) -> BTreeMap<String, f64> {
    median_by_method(samples.iter().map(|s| (&s.etcd_rps_by_method, 1.0)))
}

/// Every gRPC method seen in `rates` (one sample's rates by method, and what to divide them
/// by, e.g. the number of agents), with the median of its divided rate (0 where a sample did
/// not see it).
pub fn median_by_method<'a>(
    rates: impl Iterator<Item = (&'a BTreeMap<String, f64>, f64)>,
) -> BTreeMap<String, f64> {
    let rates: Vec<_> = rates.collect();
    let mut names: Vec<&String> = rates.iter().flat_map(|(r, _)| r.keys()).collect();
    names.sort();
    names.dedup();
    names
        .into_iter()
        .filter_map(|m| {
            let v: Vec<f64> = rates
                .iter()
                .map(|(r, div)| r.get(m).copied().unwrap_or(0.0) / div)
                .collect();
            spread(&v).map(|(_, med, _)| (m.clone(), med))
        })
        .collect()
}

/// Formats one cell `min / median / max`.
pub fn cell(values: &[f64]) -> String {
    match spread(values) {
        Some((lo, med, hi)) => format!("{} / {} / {}", figure(lo), figure(med), figure(hi)),
        None => "-".into(),
    }
}

/// Two decimals, or four under 0.1 (an idle agent at Patroni's default timings uses about
/// 0.01 % of a core: two decimals would hide a factor of two).
pub fn figure(v: f64) -> String {
    if v != 0.0 && v.abs() < 0.1 {
        format!("{v:.4}")
    } else {
        format!("{v:.2}")
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
    fn small_figures_keep_four_decimals() {
        assert_eq!(super::cell(&[0.0065, 0.0146]), "0.0065 / 0.0106 / 0.0146");
        assert_eq!(super::cell(&[8.09, 0.0]), "0.00 / 4.04 / 8.09");
        assert_eq!(super::figure(0.1), "0.10");
        assert_eq!(super::figure(-0.05), "-0.0500");
    }

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
