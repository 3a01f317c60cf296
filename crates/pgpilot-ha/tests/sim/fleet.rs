//! The fleet run: many simulated clusters, each for a long simulated time with faults at a
//! realistic rate, counting every DCS call of the simulated agents by kind (`counting`); then a
//! projection of how many clusters one 3-node etcd serves, from etcd's published capacity and
//! the per-cluster request rates (simulated here, and measured on real agents by
//! `bench/run.sh`). The result is one markdown section.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use pgpilot_config::SyncMode;

use super::counting::Counts;
use super::real::RealWorld;
use super::seams::lock;
use super::{Bug, FaultPlan, Rng, SimConfig, Stats, WatchdogSim, World};
use tokio::time::Instant;

/// Patroni's timings: `ttl`, `loop_wait`, `retry_timeout` in seconds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Timing {
    pub name: &'static str,
    pub ttl: u64,
    pub loop_wait: u64,
    pub retry_timeout: u64,
}

pub const DEFAULTS: Timing = Timing {
    name: "Patroni defaults",
    ttl: 30,
    loop_wait: 10,
    retry_timeout: 10,
};

pub const FAST: Timing = Timing {
    name: "fast",
    ttl: 20,
    loop_wait: 1,
    retry_timeout: 3,
};

/// One fleet scenario.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub clusters: u64,
    pub members: usize,
    pub timing: Timing,
    /// Clients commit on the primaries (a busy cluster) or not (idle, as `bench/run.sh`
    /// measures).
    pub writes: bool,
    /// Mean time between faults in one cluster; `None`: no faults.
    pub fault_every: Option<Duration>,
    /// Counted after the warm-up (bootstrap and clones are not the steady state).
    pub warmup: Duration,
    pub duration: Duration,
}

impl Scenario {
    fn title(&self) -> String {
        let faults = match self.fault_every {
            None => "no faults".to_string(),
            Some(d) => format!(
                "faults or switchover requests at {:.1} per cluster per simulated hour",
                3600.0 / d.as_secs_f64()
            ),
        };
        format!(
            "{} clusters × {} members, {} (ttl {}, loop_wait {}, retry_timeout {}), {}, {}",
            self.clusters,
            self.members,
            self.timing.name,
            self.timing.ttl,
            self.timing.loop_wait,
            self.timing.retry_timeout,
            if self.writes {
                "clients committing (0-2 commits per step on the primary)"
            } else {
                "idle (no client commits)"
            },
            faults
        )
    }
}

/// What a scenario measured, summed over its clusters.
#[derive(Clone, Debug, Default)]
pub struct FleetResult {
    pub counts: Counts,
    /// Simulated seconds counted, summed over the clusters.
    pub cluster_seconds: f64,
    /// Statistics of the counted period (faults, promotions, switchovers requested, exits).
    pub stats: Stats,
    pub violations: Vec<(u64, String)>,
    pub wall: Duration,
    pub clusters: u64,
    pub members: usize,
}

impl World {
    pub(super) fn set_next_fault(&mut self, t: Instant) {
        if let Some(p) = self.fault_plan.as_mut() {
            p.next_at = Some(t);
        }
    }

    pub(super) fn injected(&self) -> u64 {
        self.stats.faults.values().sum::<u64>() + self.stats.switchovers_requested
    }

    pub(super) fn exponential(&mut self, mean: Duration) -> Duration {
        let u = (self.rng.next() >> 11) as f64 / (1u64 << 53) as f64;
        mean.mul_f64(-(1.0 - u).ln())
    }
}

/// The statistics of `after` not already in `before` (the counted period's).
fn since(before: &Stats, after: &Stats) -> Stats {
    let diff = |a: &BTreeMap<&'static str, u64>, b: &BTreeMap<&'static str, u64>| {
        b.iter()
            .map(|(k, v)| (*k, v - a.get(k).copied().unwrap_or(0)))
            .filter(|(_, v)| *v > 0)
            .collect::<BTreeMap<_, _>>()
    };
    let mut fatal = BTreeMap::new();
    for (k, v) in &after.fatal {
        let d = v - before.fatal.get(k).copied().unwrap_or(0);
        if d > 0 {
            fatal.insert(k.clone(), d);
        }
    }
    Stats {
        seeds: 1,
        steps: after.steps - before.steps,
        commits: after.commits - before.commits,
        acked: after.acked - before.acked,
        promotions: after.promotions - before.promotions,
        switchovers_requested: after.switchovers_requested - before.switchovers_requested,
        faults: diff(&before.faults, &after.faults),
        fatal,
        ..Default::default()
    }
}

/// Runs one cluster of the scenario: its counts, counted simulated seconds, statistics and
/// invariant violation if any.
fn run_cluster(seed: u64, s: &Scenario) -> (Counts, f64, Stats, Option<String>) {
    let rt = super::paused_runtime();
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let cfg = SimConfig {
            members: s.members,
            // Patroni's default: asynchronous replication, check_timeline off.
            sync_mode: SyncMode::Off,
            strict: false,
            node_count: 1,
            use_pg_rewind: true,
            check_timeline: false,
            config_changes: false,
            steps: 0,
            ttl: s.timing.ttl,
            loop_wait: s.timing.loop_wait,
            retry_timeout: s.timing.retry_timeout,
            // The benchmark's real agents run without a watchdog device.
            watchdog: WatchdogSim::Off,
        };
        let mut w = World::with_config(cfg, Rng::new(seed), Bug::None, false);
        w.writes = s.writes;
        w.fault_plan = s.fault_every.map(|mean| FaultPlan {
            mean,
            next_at: None,
        });
        let mut rw = RealWorld::of(w);
        // Without a plan the scheduler would inject its usual mix every step.
        let faults = s.fault_every.is_some();
        let start = Instant::now();
        while Instant::now() - start < s.warmup && !rw.violation() {
            rw.step(faults).await;
        }
        let before = {
            let l = lock(&rw.net);
            l.w.ops.reset();
            l.w.stats.clone()
        };
        let t0 = Instant::now();
        while Instant::now() - t0 < s.duration && !rw.violation() {
            rw.step(faults).await;
        }
        let secs = (Instant::now() - t0).as_secs_f64();
        rw.shutdown();
        let l = lock(&rw.net);
        (
            l.w.ops.snapshot(),
            secs,
            since(&before, &l.w.stats),
            l.w.violation.clone(),
        )
    })
}

/// Runs the scenario's clusters (seeds `seed_base + 1 ..`) on up to two threads.
pub fn run(s: &Scenario, seed_base: u64) -> FleetResult {
    let started = std::time::Instant::now();
    let threads = std::thread::available_parallelism()
        .map_or(1, |p| p.get())
        .min(2) as u64;
    let parts: Vec<FleetResult> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    let mut r = FleetResult::default();
                    for k in (0..s.clusters).filter(|k| k % threads == t) {
                        let seed = seed_base + k + 1;
                        let (counts, secs, stats, violation) = run_cluster(seed, s);
                        r.counts.add(&counts);
                        r.cluster_seconds += secs;
                        r.stats.add(&stats);
                        if let Some(v) = violation {
                            r.violations.push((seed, v));
                        }
                    }
                    r
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("fleet thread"))
            .collect()
    });
    let mut total = FleetResult {
        clusters: s.clusters,
        members: s.members,
        ..Default::default()
    };
    for p in parts {
        total.counts.add(&p.counts);
        total.cluster_seconds += p.cluster_seconds;
        total.stats.add(&p.stats);
        total.violations.extend(p.violations);
    }
    total.violations.sort();
    total.wall = started.elapsed();
    total
}

/// Whether etcd 3.4 commits the request through raft (a proposal, fsynced on a quorum).
/// `LeaseKeepAlive` is not: the leader's lessor renews the lease in memory, and a follower
/// forwards the keepalive to the leader over the peer HTTP API (etcd commit 2e157530, "keepalives
/// don't go through raft"); only with `--experimental-enable-lease-checkpoint` (off by default
/// in 3.4) does the leader commit remaining-TTL checkpoints, every 5 minutes per lease. A `Txn`
/// with a write in either branch is proposed even when its compare fails; `Range` is served
/// without a proposal (a linearizable one costs a ReadIndex round, our reads are the cache's).
pub fn through_raft(method: &str) -> bool {
    matches!(
        method,
        "Put" | "Txn" | "DeleteRange" | "LeaseGrant" | "LeaseRevoke"
    )
}

/// etcd's published capacity, quoted in the output.
pub struct Capacity {
    pub writes_per_s: f64,
    pub writes_source: &'static str,
    pub clients: f64,
    pub clients_source: &'static str,
    /// The share of the published figures planned for.
    pub headroom: f64,
}

pub const ETCD: Capacity = Capacity {
    writes_per_s: 44_341.0,
    writes_source: "etcd's performance page (<https://etcd.io/docs/v3.4/op-guide/performance/>): a three-member cluster of Google Compute Engine machines with 8 vCPUs, 16 GB memory and a 50 GB SSD each (client: 16 vCPUs), etcd 3.2.0 with Go 1.8.3, writes 44,341 puts/s on average to the leader (100,000 keys, 8-byte keys, 256-byte values, 100 connections, 1,000 clients; 22 ms average latency), 50,104/s spread over all members, and 583/s from one client on one connection. The page is the v3.4 documentation; the figures were measured with etcd 3.2.0",
    clients: 10_000.0,
    clients_source: "etcd's watch memory benchmark page (<https://etcd.io/docs/v3.4/benchmarks/etcd-3-watch-memory-benchmark/>): \"etcd aims to support O(10k) clients, O(100K) watch streams (O(10) streams per client) and O(10M) total watchings\"; each gRPC connection and each watch stream costs O(10 kB) of etcd's memory. An order of magnitude, not a measured limit",
    headroom: 0.5,
};

/// Per-cluster idle rates of real agents, 3 members, in etcd messages per second by gRPC
/// method (all the agents of the cluster together), copied from BENCHMARKS.md ("etcd messages
/// per second while idle, by gRPC method", generated by `bench/run.sh --reps 2 --idle 30
/// --compare patroni --profile all --members 3,5` on 2026-12-04 04:48 UTC, etcd 3.4.23, Patroni
/// 4.1). Methods not listed there were 0. Replace with the scale benchmark's figures when it
/// lands.
pub struct Measured {
    pub agent: &'static str,
    pub timing: Timing,
    pub lease_keepalive: f64,
    pub put: f64,
    /// Client connections to etcd per member: pgpilot's agent has one gRPC (HTTP/2) connection
    /// carrying its watch stream and its requests (`etcd/endpoints.rs`). Patroni's etcd3 client
    /// speaks JSON to etcd's gRPC gateway over HTTP/1.1: one long-lived watch request plus its
    /// request connection; 2 is an assumption, not a measurement.
    pub connections_per_member: f64,
}

pub const MEASURED: [Measured; 4] = [
    Measured {
        agent: "pgpilot",
        timing: FAST,
        lease_keepalive: 1.27,
        put: 0.13,
        connections_per_member: 1.0,
    },
    Measured {
        agent: "Patroni 4.1",
        timing: FAST,
        lease_keepalive: 3.00,
        put: 0.13,
        connections_per_member: 2.0,
    },
    Measured {
        agent: "pgpilot",
        timing: DEFAULTS,
        lease_keepalive: 0.27,
        put: 0.27,
        connections_per_member: 1.0,
    },
    Measured {
        agent: "Patroni 4.1",
        timing: DEFAULTS,
        lease_keepalive: 0.30,
        put: 0.13,
        connections_per_member: 2.0,
    },
];

/// One projected row: per-cluster request rates of 3-member clusters and the clusters one
/// 3-node etcd serves at the planned share of its capacity.
pub struct Projection {
    pub source: String,
    pub timing: Timing,
    pub raft_writes: f64,
    pub keepalives: f64,
    pub other: f64,
    pub connections: f64,
}

impl Projection {
    pub fn by_writes(&self, c: &Capacity) -> f64 {
        ratio(c.headroom * c.writes_per_s, self.raft_writes)
    }

    /// Conservative: every request (keepalives and reads included) costs as much as a raft
    /// write.
    pub fn by_requests(&self, c: &Capacity) -> f64 {
        ratio(
            c.headroom * c.writes_per_s,
            self.raft_writes + self.keepalives + self.other,
        )
    }

    pub fn by_connections(&self, c: &Capacity) -> f64 {
        ratio(c.headroom * c.clients, self.connections)
    }

    fn from_measured(m: &Measured) -> Projection {
        Projection {
            source: format!("{} measured (BENCHMARKS.md, idle)", m.agent),
            timing: m.timing,
            raft_writes: m.put,
            keepalives: m.lease_keepalive,
            other: 0.0,
            connections: 3.0 * m.connections_per_member,
        }
    }

    /// From a fleet result, scaled to 3 members by the per-member rate.
    fn from_fleet(label: &str, s: &Scenario, r: &FleetResult) -> Projection {
        let per_member = |f: &dyn Fn(&str) -> bool| {
            r.counts
                .grpc
                .iter()
                .filter(|(k, _)| f(k))
                .map(|(_, v)| *v as f64)
                .sum::<f64>()
                / r.cluster_seconds.max(1.0)
                / r.members as f64
        };
        Projection {
            source: format!("pgpilot simulated ({label})"),
            timing: s.timing,
            raft_writes: 3.0 * per_member(&|k| through_raft(k)),
            keepalives: 3.0 * per_member(&|k| k == "LeaseKeepAlive"),
            other: 3.0 * per_member(&|k| k == "Range"),
            connections: 3.0,
        }
    }
}

/// `num / den`, unbounded when nothing is asked (`den` may be -0.0: an empty float sum).
fn ratio(num: f64, den: f64) -> f64 {
    if den > 0.0 {
        num / den
    } else {
        f64::INFINITY
    }
}

fn fmt_rate(x: f64) -> String {
    if x == 0.0 {
        "0".into()
    } else if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.4}")
    }
}

fn fmt_count(x: f64) -> String {
    if !x.is_finite() {
        return "unbounded".into();
    }
    let n = x.round() as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The markdown of one scenario's result.
fn scenario_section(out: &mut String, s: &Scenario, r: &FleetResult) {
    let secs = r.cluster_seconds.max(1.0);
    let members = r.members as f64;
    let _ = writeln!(out, "#### {}\n", s.title());
    let _ = writeln!(
        out,
        "{:.0} simulated cluster-hours counted ({:.0} simulated minutes per cluster after a {:.0}-minute warm-up) in {:.1} s of wall time; {} steps.\n",
        r.cluster_seconds / 3600.0,
        s.duration.as_secs_f64() / 60.0,
        s.warmup.as_secs_f64() / 60.0,
        r.wall.as_secs_f64(),
        r.stats.steps,
    );
    let faults: u64 = r.stats.faults.values().sum();
    let won = r
        .counts
        .calls
        .get("attempt_to_acquire_leader (won)")
        .copied()
        .unwrap_or(0);
    let _ = writeln!(
        out,
        "Faults injected: {faults} {:?}; switchovers requested: {}; promotions (failovers and switchovers): {}; leader races won: {won}; agent exits: {:?}; invariant violations: {}{}.\n",
        r.stats.faults,
        r.stats.switchovers_requested,
        r.stats.promotions,
        r.stats.fatal,
        r.violations.len(),
        r.violations
            .first()
            .map(|(seed, v)| format!(" (first: seed {seed}: {v})"))
            .unwrap_or_default(),
    );
    let _ = writeln!(
        out,
        "| `Dcs` call (outcome) | per cluster per s | per member per s |"
    );
    let _ = writeln!(out, "|---|---:|---:|");
    for (k, v) in &r.counts.calls {
        let rate = *v as f64 / secs;
        let _ = writeln!(
            out,
            "| {k} | {} | {} |",
            fmt_rate(rate),
            fmt_rate(rate / members)
        );
    }
    let _ = writeln!(
        out,
        "\n| gRPC request of the etcd client | per cluster per s | per member per s | through raft |"
    );
    let _ = writeln!(out, "|---|---:|---:|---|");
    let mut raft = 0.0;
    for (k, v) in &r.counts.grpc {
        let rate = *v as f64 / secs;
        if through_raft(k) {
            raft += rate;
        }
        let _ = writeln!(
            out,
            "| {k} | {} | {} | {} |",
            fmt_rate(rate),
            fmt_rate(rate / members),
            if through_raft(k) { "yes" } else { "no" }
        );
    }
    let key_writes: f64 = r
        .counts
        .grpc
        .iter()
        .filter(|(k, _)| matches!(**k, "Put" | "Txn" | "DeleteRange"))
        .map(|(_, v)| *v as f64)
        .sum::<f64>()
        / secs;
    let _ = writeln!(
        out,
        "\nThrough raft: {} per cluster per s. Watch events etcd sends (each key write, the failed-compare `Txn`s included as an upper bound, delivered to each member's watch stream): {} per cluster per s.\n",
        fmt_rate(raft),
        fmt_rate(key_writes * members),
    );
}

/// The method, the caveat about the simulated agent, and the projection table.
fn projection_section(out: &mut String, rows: &[Projection]) {
    let c = &ETCD;
    let _ = writeln!(
        out,
        "#### Projection: 3-member clusters one 3-node etcd serves\n"
    );
    let _ = writeln!(out, "Published capacity used:\n");
    let _ = writeln!(out, "- writes: {}.", c.writes_source);
    let _ = writeln!(out, "- connections: {}.\n", c.clients_source);
    let _ = writeln!(
        out,
        "Planned at {:.0} % of those figures. `Put`, `Txn`, `DeleteRange`, `LeaseGrant` and `LeaseRevoke` go through raft; `LeaseKeepAlive` does not in etcd 3.4 (the leader renews the lease in memory; followers forward keepalives to the leader over the peer API; lease checkpoints through raft exist only behind `--experimental-enable-lease-checkpoint`, off by default), and the agents' reads come from their watch caches. No published figure gives etcd's keepalive throughput, so the \"every request\" column charges each keepalive as a raft write: a floor, not an estimate. The watch-stream column uses the O(10k) clients order of magnitude with the connections per member stated in the code (pgpilot 1; Patroni 2, assumed). The smallest column binds.\n",
        c.headroom * 100.0
    );
    let _ = writeln!(
        out,
        "| rates from | timing | raft writes /s per cluster | keepalives /s per cluster | reads (`Range`) /s per cluster | clusters by raft writes | clusters by every request | clusters by connections | clusters (smallest) |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|---:|");
    for p in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            p.source,
            p.timing.name,
            fmt_rate(p.raft_writes),
            fmt_rate(p.keepalives),
            fmt_rate(p.other),
            fmt_count(p.by_writes(c)),
            fmt_count(p.by_requests(c)),
            fmt_count(p.by_connections(c)),
            fmt_count(
                p.by_writes(c)
                    .min(p.by_requests(c))
                    .min(p.by_connections(c))
            ),
        );
    }
    let _ = writeln!(out);
}

/// What the simulated agent's DCS calls share with the real agent's, and where they differ.
pub const CAVEAT: &str = "The agents are the real `pgpilot_ha::Agent`, but two things around them are models: the gRPC column replays the etcd client's rules (`crates/pgpilot-dcs/src/etcd/lease.rs` and `dcs.rs`) on each `Dcs` call (`tests/sim/counting.rs`) rather than observing a real etcd, and PostgreSQL is simulated. What that changes: (1) an idle real PostgreSQL still moves its WAL position now and then (checkpoints, standby snapshots), which rewrites member keys and `/status` (BENCHMARKS.md: 0.27 `Put`/s at Patroni's defaults); the idle simulated PostgreSQL does not move at all, and it has no replication slots, so the leader's `/status` carries the optime only; (2) the memory backend rewrites `/status` on every leader cycle where the etcd client skips an unchanged value (the counting layer charges no request for the skipped write), and the rewrite wakes the other agents' watches: they run extra cycles that cost no request (cache read, member key unchanged, keepalive not due), visible in the `watch (woken by an event)` row and in a `cluster` rate above one per `loop_wait` per member; (3) graceful shutdown (`LeaseRevoke`), REST-triggered restarts and reinitialize, pause, and the watch cache's re-reads (`Range`) after an etcd outage or a partition are not modelled (one `Range` per agent start is); (4) the simulated operations take simulated time (module docs of `tests/sim/real.rs`), not the real machine's. The per-cluster DCS outage of the fault mix stands for an etcd outage seen by that cluster only.";

/// Which gRPC requests the production etcd client sends for each `Dcs` method (the rules
/// `counting` replays).
pub const MAPPING: [(&str, &str); 11] = [
    ("`cluster`", "none (watch cache); one `Range` and one `Watch` stream when the client starts"),
    ("`watch`", "none (waits on the watch cache)"),
    ("`touch_member`", "`LeaseKeepAlive` when `max(loop_wait, ttl/3)` passed since the last one; `Put` only when the value or lease changed"),
    ("`attempt_to_acquire_leader`", "`LeaseKeepAlive` + `Txn` (create if absent)"),
    ("`update_leader`", "`LeaseKeepAlive`; + `Txn` only when the key is not on our current lease"),
    ("`take_leader`", "`LeaseKeepAlive` + `Put`"),
    ("`delete_leader`, `delete_sync`", "`Txn`"),
    ("`set_config`, `set_failover`, `set_sync`", "`Txn` with a version (CAS), `Put` without"),
    ("`initialize`", "`Txn` for the race, `Put` to adopt"),
    ("`set_history`; `write_status`", "`Put`; `Put` only when the value changed"),
    ("`cancel_initialization`; `close`", "`DeleteRange`; `LeaseRevoke`"),
];

/// The whole markdown section: each scenario, the caveat, the projection.
pub fn markdown(command: &str, results: &[(Scenario, FleetResult)]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "### Simulated fleet: DCS requests by kind, and etcd capacity\n"
    );
    let _ = writeln!(out, "Generated by `{command}`.\n");
    let _ = writeln!(
        out,
        "Method: the deterministic simulation (`crates/pgpilot-ha/tests/simulation.rs`) runs each cluster on its own paused tokio clock: the real agents (`pgpilot_ha::Agent`, cycles, lease keeper and background tasks) over the real in-memory DCS, a simulated PostgreSQL and simulated peers per member, the safety invariants checked at every tick. A counting layer (`tests/sim/counting.rs`) counts every `Dcs` call of the agents (not the checker's reads nor the operator's switchover requests) and the gRPC requests the production etcd client would send for it. Rates are per simulated second after the warm-up, summed over the clusters and divided by the cluster-seconds counted. Replication is asynchronous (Patroni's default). Faults come one at a time at exponentially distributed intervals, each drawn from the simulation's usual mix (member crash, PostgreSQL crash, agent kill, freeze, DCS outage, partition, switchover request).\n"
    );
    let _ = writeln!(out, "| `Dcs` method | gRPC requests of the etcd client (`crates/pgpilot-dcs/src/etcd/lease.rs` and `dcs.rs`) |");
    let _ = writeln!(out, "|---|---|");
    for (method, grpc) in MAPPING {
        let _ = writeln!(out, "| {method} | {grpc} |");
    }
    let _ = writeln!(out);
    for (s, r) in results {
        scenario_section(&mut out, s, r);
    }
    let _ = writeln!(
        out,
        "#### Caveat: what the simulation leaves out\n\n{CAVEAT}\n"
    );
    let mut rows: Vec<Projection> = Vec::new();
    for timing in [FAST, DEFAULTS] {
        for m in MEASURED.iter().filter(|m| m.timing == timing) {
            rows.push(Projection::from_measured(m));
        }
        for (s, r) in results.iter().filter(|(s, _)| s.timing == timing) {
            let label = format!(
                "{}, {}",
                if s.writes { "committing" } else { "idle" },
                if s.fault_every.is_some() {
                    "with faults"
                } else {
                    "no faults"
                }
            );
            rows.push(Projection::from_fleet(&label, s, r));
        }
    }
    projection_section(&mut out, &rows);
    out
}
