//! Deterministic simulation of a pgpilot cluster (DESIGN.md "Test layers" 3): the real
//! `decide()` and `sync` policy over the real memory DCS, a simulated PostgreSQL per member,
//! seeded faults on a virtual clock, and the safety invariants checked after every step.
//!
//! `real_agent_*` run the real `pgpilot_ha::Agent` instead of the mirror of its cycle
//! (`sim::real`): `PGPILOT_SIM_REAL_SEEDS=N` seeds (default 60), `PGPILOT_SIM_REAL_SEED=S`
//! replays one with its trace.
//!
//! `PGPILOT_SIM_SEEDS=N` runs N seeds (default 2000); `PGPILOT_SIM_SEED=S` replays one seed
//! and prints its whole trace; `PGPILOT_SIM_VERBOSE=1` lists the seeds with agent exits, known
//! bugs or no leader at the end. The members run Patroni's default watchdog (automatic,
//! `safety_margin` 5) with a device present; `PGPILOT_SIM_WATCHDOG=off` runs them without one
//! (the guard alone fences) and `PGPILOT_SIM_WATCHDOG=M` with `safety_margin` M (-1: ttl/2).
//! `guard_alone_keeps_the_safety_invariants_without_a_watchdog` runs
//! `PGPILOT_SIM_SEEDS_NO_WATCHDOG` seeds (default 200) without a watchdog in every run.
//!
//! The fleet run (`fleet_dcs_operations_by_kind`, `sim::fleet`) simulates many clusters, each
//! for a long simulated time with faults at a set rate, counts every DCS call of the simulated
//! agents by kind and the etcd gRPC requests each costs (`sim::counting`), and projects from
//! etcd's published capacity how many 3-member clusters one 3-node etcd serves, for pgpilot
//! (simulated and measured) and Patroni (measured). Per timing (Patroni's defaults, and fast)
//! two scenarios: idle without faults (what `bench/run.sh` measures on real agents), and clients
//! committing with faults. One command prints the markdown section for BENCHMARKS.md:
//!
//! ```text
//! PGPILOT_SIM_FLEET=1000 PGPILOT_SIM_FLEET_OUT=fleet.md \
//!     cargo nextest run -p pgpilot-ha --test simulation fleet --no-capture
//! ```
//!
//! `PGPILOT_SIM_FLEET=N`: clusters at Patroni's defaults (without it, a smoke run of two short
//! clusters per scenario, about a second, checks the counting and the invariants);
//! `PGPILOT_SIM_FLEET_FAST` clusters at the fast timings (default N/5: a 1 s loop costs ten times
//! the cycles); `PGPILOT_SIM_FLEET_MEMBERS` (3); `PGPILOT_SIM_FLEET_MINUTES` simulated minutes
//! counted per cluster (12) after `PGPILOT_SIM_FLEET_WARMUP_MINUTES` (2);
//! `PGPILOT_SIM_FLEET_FAULTS_PER_HOUR` per cluster (1; 0 for none); `PGPILOT_SIM_FLEET_TIMINGS`
//! (`defaults,fast`); `PGPILOT_SIM_FLEET_SCENARIOS` (`idle,busy`: idle without faults, clients
//! committing with faults); `PGPILOT_SIM_FLEET_OUT`: also write the section to that file. The run uses
//! two threads (debug build); its wall time is printed in the section. Measured on the shared
//! 2-core machine: the default sizes take about 6.5 minutes for the four scenarios; 1000
//! clusters × 60 simulated minutes of the busy scenario at Patroni's defaults took 283 s.

mod sim;

use std::time::Instant;

use sim::{run_seed_with, Bug, Stats, WatchdogSim};

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// `PGPILOT_SIM_WATCHDOG`: `off`, `on` (the default) or a `safety_margin`.
fn env_watchdog() -> WatchdogSim {
    match std::env::var("PGPILOT_SIM_WATCHDOG")
        .as_deref()
        .map(str::trim)
    {
        Err(_) | Ok("on") => WatchdogSim::DEFAULT,
        Ok("off") => WatchdogSim::Off,
        Ok(m) => WatchdogSim::On {
            safety_margin: m.parse().unwrap_or_else(|_| {
                panic!("PGPILOT_SIM_WATCHDOG: off, on or a safety_margin, not {m:?}")
            }),
        },
    }
}

fn run_seed(seed: u64, bug: Bug, tracing: bool, watchdog: WatchdogSim) -> sim::Outcome {
    run_seed_with(seed, bug, tracing, true, watchdog)
}

/// Runs seeds `1..=n` on up to two threads (the machine is shared); returns the first failing
/// seed with its message, and the totals.
fn run_many(n: u64, bug: Bug, watchdog: WatchdogSim) -> (Option<(u64, String)>, Stats) {
    let threads = std::thread::available_parallelism()
        .map_or(1, |p| p.get())
        .min(2) as u64;
    let results: Vec<(Option<(u64, String)>, Stats)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    let mut total = Stats::default();
                    let mut failed = None;
                    for seed in (1..=n).filter(|s| s % threads == t) {
                        let o = run_seed(seed, bug, false, watchdog);
                        if std::env::var_os("PGPILOT_SIM_VERBOSE").is_some()
                            && (!o.stats.fatal.is_empty()
                                || !o.stats.known_seeds.is_empty()
                                || o.stats.no_leader_at_end > 0)
                        {
                            eprintln!(
                                "seed {seed}: agent exits {:?}, known bugs {:?}, no leader at the end: {}",
                                o.stats.fatal, o.stats.known_seeds, o.stats.no_leader_at_end
                            );
                        }
                        total.add(&o.stats);
                        if let Some(v) = o.violation {
                            failed = Some((seed, v));
                            break;
                        }
                    }
                    (failed, total)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut total = Stats::default();
    let mut failed: Option<(u64, String)> = None;
    for (f, t) in results {
        total.add(&t);
        if let Some((seed, v)) = f {
            if failed.as_ref().is_none_or(|(s, _)| seed < *s) {
                failed = Some((seed, v));
            }
        }
    }
    (failed, total)
}

fn report(total: &Stats, elapsed: std::time::Duration, watchdog: WatchdogSim) {
    eprintln!(
        "simulation: {} seeds, {} steps, {} agent cycles in {:.1?}; watchdog {watchdog:?}",
        total.seeds, total.steps, total.cycles, elapsed
    );
    eprintln!("  modes: {:?}", total.by_mode);
    eprintln!("  faults: {:?}", total.faults);
    eprintln!(
        "  commits {} acknowledged {}; promotions {}; switchovers requested {}; agent exits {:?}",
        total.commits, total.acked, total.promotions, total.switchovers_requested, total.fatal
    );
    eprintln!(
        "  guard: PostgreSQL stopped at the lease deadline {} times; watchdog: members reset {} times; thawed agents re-creating an expired leader key on a stale decision: {} ({} holding the key without an active watchdog in a run with one); synchronous commits acknowledged before such a re-creation and lost: {}",
        total.fences,
        total.watchdog_resets,
        total.stale_renewals,
        total.unwatched_stale_renewals,
        total.gap_lost
    );
    eprintln!(
        "  known bugs (K4 open; K1, K2, K5, K6 fixed, see the regression tests): acknowledged commits lost {:?} in seeds {:?}",
        total.known_lost, total.known_seeds
    );
    eprintln!(
        "  asynchronous mode: acknowledged commits lost {}; seeds without a leader after settling: {} {:?}",
        total.async_lost, total.no_leader_at_end, total.no_leader_why
    );
}

/// The invariants hold for every seed (safety), with the statistics printed (`--nocapture`).
#[test]
fn simulated_clusters_keep_the_safety_invariants() {
    let watchdog = env_watchdog();
    if let Some(seed) = env_u64("PGPILOT_SIM_SEED") {
        let o = run_seed(seed, Bug::None, true, watchdog);
        for line in &o.trace {
            eprintln!("{line}");
        }
        report(&o.stats, std::time::Duration::ZERO, watchdog);
        if let Some(v) = o.violation {
            panic!("seed {seed}: {v}");
        }
        return;
    }
    let n = env_u64("PGPILOT_SIM_SEEDS").unwrap_or(2000);
    sweep(n, watchdog);
}

/// Seeds `1..=n` with `watchdog`: the statistics printed, the first failing seed replayed.
fn sweep(n: u64, watchdog: WatchdogSim) {
    let started = Instant::now();
    let (failed, total) = run_many(n, Bug::None, watchdog);
    report(&total, started.elapsed(), watchdog);
    if let Some((seed, v)) = failed {
        let o = run_seed(seed, Bug::None, true, watchdog);
        let tail = o.trace.len().saturating_sub(80);
        for line in &o.trace[tail..] {
            eprintln!("{line}");
        }
        panic!(
            "seed {seed}: {v}\nreplay: PGPILOT_SIM_WATCHDOG={} PGPILOT_SIM_SEED={seed} cargo test -p pgpilot-ha --test simulation",
            match watchdog {
                WatchdogSim::Off => "off".to_string(),
                WatchdogSim::On { safety_margin } => safety_margin.to_string(),
            }
        );
    }
}

/// The guard alone (no watchdog device on any member) keeps the invariants too; the commits a
/// thawed agent's stale renewal costs are the watchdog gap's, counted apart.
#[test]
fn guard_alone_keeps_the_safety_invariants_without_a_watchdog() {
    let n = env_u64("PGPILOT_SIM_SEEDS_NO_WATCHDOG").unwrap_or(200);
    sweep(n, WatchdogSim::Off);
}

/// The checker is not vacuous: a watchdog that is armed and pinged but never resets its member
/// leaves frozen leaders to thaw and renew an expired key on a stale decision (invariant 4).
#[test]
fn checker_catches_a_watchdog_that_never_fires() {
    let (failed, total) = run_many(400, Bug::WatchdogNeverFires, WatchdogSim::DEFAULT);
    let (seed, v) = failed.expect("a watchdog that never fires must be caught");
    eprintln!("caught: seed {seed}: {v}");
    assert!(v.starts_with("invariant 4"), "seed {seed}: {v}");
    assert_eq!(total.watchdog_resets, 0);
}

/// The checker is not vacuous: a replica that promotes without the leader key when it cannot
/// reach the leader is caught.
#[test]
fn checker_catches_promotion_without_the_lock() {
    let (failed, _) = run_many(300, Bug::PromoteWithoutLock, WatchdogSim::DEFAULT);
    let (seed, v) = failed.expect("a broken policy must be caught");
    assert!(
        v.starts_with("invariant 1") || v.starts_with("invariant 3"),
        "seed {seed}: {v}"
    );
}

/// The checker is not vacuous: a primary acknowledging commits before its synchronous standbys
/// have them loses acknowledged commits at a failover.
#[test]
fn checker_catches_asynchronous_acknowledgements_in_synchronous_mode() {
    let (failed, _) = run_many(500, Bug::AckAsync, WatchdogSim::DEFAULT);
    let (seed, v) = failed.expect("a broken primary must be caught");
    assert!(v.starts_with("invariant 2"), "seed {seed}: {v}");
}

/// Replays `seed` with known bugs not tolerated: the run must keep every invariant. The seeds
/// were found without a watchdog, and are replayed so.
fn replay_strict(seed: u64) {
    let o = run_seed_with(seed, Bug::None, false, false, WatchdogSim::Off);
    if let Some(v) = o.violation {
        let o = run_seed_with(seed, Bug::None, true, false, WatchdogSim::Off);
        let tail = o.trace.len().saturating_sub(60);
        for line in &o.trace[tail..] {
            eprintln!("{line}");
        }
        panic!("seed {seed}: {v}");
    }
}

/// Fixed: `/sync` membership is required for a switchover in quorum mode too.
/// K1 (seed 440; also 708, 843, 1058, ...): in `synchronous_mode: quorum` a switchover to a named
/// candidate outside `/sync` goes ahead. The leader's `manual_failover_from_leader` and the
/// candidate's `is_healthiest` require `/sync` membership only when `sync.active() &&
/// !sync.quorum()`; Patroni 4 requires it in quorum mode too (spec §5.2 step 6 and §5.4: "only
/// `/sync` members for a switchover in sync mode"). Typical trace: a former primary diverged
/// after a partition, still within maximum_lag_on_failover by LSN, is named; the leader with ssn
/// `ANY 2 (..)` demotes and the candidate promotes without commits the voters acknowledged.
#[test]
fn fixed_k1_quorum_switchover_to_a_non_voter_loses_acknowledged_commits() {
    replay_strict(440);
}

/// K4 (seed 10759; also 8075, 8124, 10514, 12245): with `check_timeline: false` (the default,
/// as in Patroni), a former primary that diverged and was not rewound keeps a longer WAL on an
/// older timeline; in a later race its LSN looks ahead of everyone and it wins. Seed 10759
/// (`synchronous_mode: on`, strict): pg1, demoted offline on timeline 4 with 142 records and no
/// upstream, wins the race after pg3's switchover against pg2 (timeline 5, 139 records) and
/// promotes without the timeline-5 commits. Policy question rather than a one-line bug: compare
/// (timeline, LSN), or keep members whose timeline is behind `/history` out of races even without
/// check_timeline.
#[test]
#[ignore = "known bug K4: without check_timeline a diverged member on an older timeline wins by LSN"]
fn known_bug_k4_diverged_member_on_an_older_timeline_wins_a_race_by_lsn() {
    replay_strict(10759);
}

/// Fixed: the manual-failover race keeps the timeline check.
/// K5 (seeds 931, 3938, 5362): `manual_failover_no_leader` (a `/failover` key is present and the
/// leader is gone) races through `compare_with_peers` directly and skips the `check_timeline` test
/// that Patroni's `_is_healthiest_node` still makes in that path (only the lag check is skipped,
/// spec §5.2). Seed 931: pg4 (timeline 5) demotes for a switchover with no candidate; pg5, a
/// former primary on timeline 4 with a longer WAL, wins and loses commits pg4 acknowledged.
#[test]
fn fixed_k5_manual_failover_race_skips_the_timeline_check() {
    replay_strict(931);
}

/// Fixed: in synchronous modes a graceful demotion keeps the key (and starts again as
/// primary) when no candidate received the shutdown checkpoint.
/// K6 (seed 2863): quorum mode, switchover to a named candidate that is a `/sync` voter but lags
/// (its PostgreSQL had crashed; its `/patroni` still showed the position of its last cycle, within
/// maximum_lag_on_failover). The leader demotes gracefully, the candidate never receives the
/// shutdown checkpoint, `demote_graceful` releases the key anyway after its 5 s wait, and the
/// candidate promotes with no vote (`candidate == me`), without a commit acknowledged by another
/// voter under `ANY 1 (pg1,pg2,pg3,pg5)`. In quorum mode a voter is not guaranteed to hold every
/// acknowledged commit: keep the key (or require quorum votes) when the candidate did not catch up.
#[test]
fn fixed_k6_quorum_switchover_releases_the_key_to_a_lagging_voter() {
    replay_strict(2863);
}

/// Fixed: the agent takes ssn from the `/sync` key it leads before writing any configuration.
/// K2, first way in (seed 3177): a primary whose agent restarts (a member crash) comes back
/// through "starting primary after failure", and `desired()` writes the agent's in-memory ssn —
/// empty after the restart — into postgresql.conf: PostgreSQL starts acknowledging commits
/// asynchronously while `/sync` still names standbys (quorum 2 of pg1,pg3,pg4 in seed 3177) until
/// `process_sync` catches up. Here the primary was isolated right after the start; it acknowledged
/// 12 commits alone, and pg3 won the race with two votes without them. The ssn a primary starts
/// with should come from `/sync` (as `pre_promote` does), not from memory.
#[test]
fn fixed_k2_restarted_primary_starts_with_an_empty_ssn() {
    replay_strict(3177);
}

/// Fixed: `overlaps()` lets an empty ssn go only with a `/sync` without voters.
/// K2, second way in (found reading the trace of seed 64 (old numbering) and checked here on the
/// pure function): in quorum mode, when no standby streams any more, `quorum_step` sets ssn to
/// empty before it shrinks `/sync`, because `overlaps()` treats an empty ssn as overlapping every
/// key. Commits are then acknowledged by the primary alone while `/sync` still lets `b` win with
/// `c`'s vote (quorum 1). `/sync` must lose its voters first (then ssn may empty).
#[test]
fn fixed_k2_quorum_step_empties_ssn_before_the_sync_key() {
    use pgpilot_config::SyncMode;
    use pgpilot_ha::sync::{next_step, Ssn, SyncKey, SyncParams, SyncStep, SyncView};
    let names: std::collections::BTreeSet<String> = ["b".to_string(), "c".to_string()].into();
    let params = SyncParams {
        mode: SyncMode::Quorum,
        strict: false,
        node_count: 1,
        max_lag: None,
    };
    let ssn = Ssn {
        numsync: 1,
        names: names.clone(),
    };
    let key = SyncKey {
        voters: names,
        quorum: 1,
    };
    let view = SyncView {
        params,
        ssn: &ssn,
        ssn_lsn: 100,
        key: Some(&key),
        standbys: &[],
        primary_lsn: 200,
    };
    assert_ne!(next_step(&view), SyncStep::SetSsn(Ssn::empty()));
}

fn env_f64(name: &str) -> Option<f64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// The fleet run (module docs): with `PGPILOT_SIM_FLEET=N`, N clusters per scenario and the
/// markdown section printed (and written to `PGPILOT_SIM_FLEET_OUT`); without it, a smoke run
/// of two short clusters per scenario that only checks the counting and the invariants.
#[test]
fn fleet_dcs_operations_by_kind() {
    use sim::fleet::{self, Scenario};
    use std::time::Duration;
    let full = env_u64("PGPILOT_SIM_FLEET");
    let clusters = full.unwrap_or(2);
    // loop_wait 1 costs ten times the agent cycles of the defaults: a fifth of the clusters.
    let fast_clusters = env_u64("PGPILOT_SIM_FLEET_FAST").unwrap_or((clusters / 5).max(1));
    let members = env_u64("PGPILOT_SIM_FLEET_MEMBERS").unwrap_or(3) as usize;
    let minutes =
        env_f64("PGPILOT_SIM_FLEET_MINUTES").unwrap_or(if full.is_some() { 12.0 } else { 5.0 });
    let per_hour = env_f64("PGPILOT_SIM_FLEET_FAULTS_PER_HOUR").unwrap_or(1.0);
    let timings = std::env::var("PGPILOT_SIM_FLEET_TIMINGS").unwrap_or("defaults,fast".into());
    let kinds = std::env::var("PGPILOT_SIM_FLEET_SCENARIOS").unwrap_or("idle,busy".into());
    let warmup =
        Duration::from_secs_f64(60.0 * env_f64("PGPILOT_SIM_FLEET_WARMUP_MINUTES").unwrap_or(2.0));
    let mut scenarios = Vec::new();
    for t in timings.split(',').map(str::trim) {
        let (timing, n) = match t {
            "defaults" => (fleet::DEFAULTS, clusters),
            "fast" => (fleet::FAST, fast_clusters),
            other => panic!("PGPILOT_SIM_FLEET_TIMINGS: unknown timing {other:?} (defaults, fast)"),
        };
        for (writes, faults) in [(false, false), (true, true)] {
            if !kinds
                .split(',')
                .any(|k| k.trim() == if writes { "busy" } else { "idle" })
            {
                continue;
            }
            scenarios.push(Scenario {
                clusters: n,
                members,
                timing,
                writes,
                fault_every: (faults && per_hour > 0.0)
                    .then(|| Duration::from_secs_f64(3600.0 / per_hour)),
                warmup,
                duration: Duration::from_secs_f64(minutes * 60.0),
            });
        }
    }
    let command = format!(
        "PGPILOT_SIM_FLEET={clusters} PGPILOT_SIM_FLEET_FAST={fast_clusters} PGPILOT_SIM_FLEET_MEMBERS={members} PGPILOT_SIM_FLEET_MINUTES={minutes} PGPILOT_SIM_FLEET_WARMUP_MINUTES={} PGPILOT_SIM_FLEET_FAULTS_PER_HOUR={per_hour} PGPILOT_SIM_FLEET_TIMINGS={timings} PGPILOT_SIM_FLEET_SCENARIOS={kinds} cargo nextest run -p pgpilot-ha --test simulation fleet --no-capture",
        warmup.as_secs_f64() / 60.0
    );
    let mut results = Vec::new();
    for (k, s) in scenarios.into_iter().enumerate() {
        let r = fleet::run(&s, 1_000_000 * (k as u64 + 1));
        eprintln!(
            "fleet: {} clusters of {} done in {:.1?}",
            r.clusters, s.timing.name, r.wall
        );
        results.push((s, r));
    }
    let md = fleet::markdown(&command, &results);
    if full.is_some() {
        println!("{md}");
    }
    if let Ok(path) = std::env::var("PGPILOT_SIM_FLEET_OUT") {
        std::fs::write(&path, &md).unwrap_or_else(|e| panic!("writing {path}: {e}"));
    }
    for (s, r) in &results {
        assert!(
            r.violations.is_empty(),
            "{}: invariant violations {:?}",
            s.clusters,
            r.violations
        );
        assert!(
            r.counts.calls.contains_key("cluster") && r.counts.grpc.contains_key("LeaseKeepAlive"),
            "nothing counted: {:?}",
            r.counts
        );
    }
}

// The liveness seeds below were found before the watchdog was modelled and are replayed
// without one (`WatchdogSim::Off`), as are the known-bug seeds (`replay_strict`).

/// Liveness L1 (seed 4; 242 of 30000 seeds): the bootstrap winner's DCS writes fail after initdb
/// (`finish_bootstrap`), the agent exits leaving PostgreSQL running as a primary and
/// `/initialize` = `""`; restarted while isolated it demotes offline (a replica with no upstream);
/// once the DCS is back, decide() step 10 says "No initialize key in DCS and PostgreSQL is running
/// as replica, aborting start" on every restart: the cluster never gets a leader until something
/// stops that PostgreSQL. No data is at risk; the cluster is stuck.
#[test]
#[ignore = "liveness L1: a failed bootstrap publish can leave the cluster without a leader forever"]
fn liveness_l1_failed_bootstrap_publish_then_offline_demotion_aborts_every_start() {
    let o = run_seed(4, Bug::None, false, WatchdogSim::Off);
    let stuck = "No initialize key in DCS and PostgreSQL is running as replica, aborting start";
    assert!(!o.stats.fatal.contains_key(stuck), "{:?}", o.stats.fatal);
}

/// Liveness L2 (32 of 2000 seeds end so): the bootstrap winner crashes during initdb; `/initialize`
/// keeps the race value `""` (no lease), the restarted member has an empty data directory and
/// every member waits "for leader to bootstrap" forever. Patroni behaves the same (the key must be
/// removed by hand); listed so that the count in the statistics has a name.
#[test]
#[ignore = "liveness L2: a bootstrap winner that crashes during initdb leaves /initialize = \"\" forever"]
fn liveness_l2_crash_during_initdb_leaves_the_cluster_unbootstrapped() {
    let o = run_seed(77, Bug::None, false, WatchdogSim::Off);
    assert_eq!(o.stats.no_leader_at_end, 0, "{:?}", o.stats.no_leader_why);
}

/// Liveness L3 (seed 109; others among the "cluster bootstrapped" no-leader seeds): quorum mode,
/// a switchover without a candidate from pg2 while no standby was a voter (`/sync` = leader pg2,
/// no voters, quorum 0). pg2 demotes; then pg2 refuses ("manual failover: I was the leader and pg1
/// is healthy") and pg1 refuses ("not enough quorum votes: 0 of the voters {pg2} are not ahead of
/// me, quorum is 0"): `manual_failover_no_leader` excludes the former leader from
/// `compare_with_peers`, and its vote is the only one a non-voter can get. Nobody ever leads and
/// `/failover` stays.
#[test]
#[ignore = "liveness L3: quorum-mode switchover with no voters leaves the cluster leaderless"]
fn liveness_l3_quorum_switchover_without_voters_deadlocks_the_race() {
    let o = run_seed(109, Bug::None, false, WatchdogSim::Off);
    assert_eq!(o.stats.no_leader_at_end, 0, "{:?}", o.stats.no_leader_why);
}

/// `PGPILOT_SIM_REAL_SEEDS=N` seeds (default 60: about 23 s alone in a debug build on the shared
/// 2-core machine, 80 took 55 s beside the mirror's run) of real `pgpilot_ha::Agent`s
/// (`sim::real`);
/// `PGPILOT_SIM_REAL_SEED=S` replays one seed and prints its whole trace; `PGPILOT_SIM_WATCHDOG`
/// as for the mirror (the watchdog on by default).
#[test]
fn real_agent_keeps_the_safety_invariants() {
    if let Some(seed) = env_u64("PGPILOT_SIM_REAL_SEED") {
        let o = sim::real::run_real_seed(seed, true, env_watchdog());
        for line in &o.trace {
            println!("{line}");
        }
        assert!(o.violation.is_none(), "seed {seed}: {:?}", o.violation);
        return;
    }
    let n = env_u64("PGPILOT_SIM_REAL_SEEDS").unwrap_or(60);
    let started = Instant::now();
    let mut total = Stats::default();
    let mut leaderless = Vec::new();
    for seed in 1..=n {
        let o = real_seed_in_time(seed);
        if o.stats.no_leader_at_end > 0 {
            leaderless.push(seed);
        }
        total.add(&o.stats);
        if let Some(v) = o.violation {
            let o = sim::real::run_real_seed(seed, true, env_watchdog());
            let tail = o.trace.len().saturating_sub(150);
            for line in &o.trace[tail..] {
                println!("{line}");
            }
            panic!("seed {seed}: {v} (replay: PGPILOT_SIM_REAL_SEED={seed})");
        }
    }
    println!(
        "real agents: {} seeds in {:.1}s: {} steps, {} commits ({} acknowledged), {} promotions, {} switchovers requested, {} guard fences, {} watchdog resets",
        total.seeds,
        started.elapsed().as_secs_f64(),
        total.steps,
        total.commits,
        total.acked,
        total.promotions,
        total.switchovers_requested,
        total.fences,
        total.watchdog_resets,
    );
    println!("  faults: {}", sim::real::faults_line(&total.faults));
    println!(
        "  violations: 0; acknowledged commits lost: {} in asynchronous mode, known bugs {:?} (seeds {:?})",
        total.async_lost, total.known_lost, total.known_seeds
    );
    println!(
        "  no leader at the end: {} {:?} (seeds {leaderless:?}); agent exits: {:?}",
        total.no_leader_at_end, total.no_leader_why, total.fatal
    );
    println!("  modes: {:?}", total.by_mode);
}

/// One seed of real agents on a thread of its own: a task that loops without ever waiting
/// stops the paused clock (nothing else runs), which is a failure of the seed, not a hang.
fn real_seed_in_time(seed: u64) -> sim::real::Outcome {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(sim::real::run_real_seed(seed, false, env_watchdog()));
    });
    match rx.recv_timeout(std::time::Duration::from_secs(120)) {
        Ok(o) => o,
        Err(_) => panic!(
            "seed {seed}: no end after 120 s of wall time: a task of the run loops without waiting (replay: PGPILOT_SIM_REAL_SEED={seed})"
        ),
    }
}

/// The same seed gives the same trace twice.
#[test]
fn real_agent_run_is_deterministic() {
    let seed = env_u64("PGPILOT_SIM_REAL_DETERMINISM_SEED").unwrap_or(7);
    let a = sim::real::run_real_seed(seed, true, env_watchdog());
    let b = sim::real::run_real_seed(seed, true, env_watchdog());
    assert!(a.trace.len() > 100, "a trace of {} lines", a.trace.len());
    if let Some(k) =
        (0..a.trace.len().max(b.trace.len())).find(|&k| a.trace.get(k) != b.trace.get(k))
    {
        panic!(
            "seed {seed} ran differently twice, from line {k}:\n{:?}\n--- vs ---\n{:?}",
            &a.trace[k.saturating_sub(3)..(k + 3).min(a.trace.len())],
            &b.trace[k.saturating_sub(3)..(k + 3).min(b.trace.len())]
        );
    }
}

/// The real agents' checker is not vacuous either: a simulated primary that acknowledges
/// commits before its synchronous standbys have them is caught (invariant 2).
#[test]
fn real_agent_checker_catches_asynchronous_acknowledgements() {
    let caught = (1..=100).find_map(|seed| {
        let o = sim::real::run_real_seed_with(seed, Bug::AckAsync, false, WatchdogSim::DEFAULT);
        o.violation.map(|v| (seed, v))
    });
    let (seed, v) = caught.expect("a broken primary must be caught");
    eprintln!("caught: seed {seed}: {v}");
    assert!(v.starts_with("invariant 2"), "seed {seed}: {v}");
}
