//! Deterministic simulation of a pgpilot cluster (DESIGN.md "Test layers" 3): the real
//! `decide()` and `sync` policy over the real memory DCS, a simulated PostgreSQL per member,
//! seeded faults on a virtual clock, and the safety invariants checked after every step.
//!
//! `PGPILOT_SIM_SEEDS=N` runs N seeds (default 2000); `PGPILOT_SIM_SEED=S` replays one seed
//! and prints its whole trace.

mod sim;

use std::time::Instant;

use sim::{run_seed, Bug, Stats};

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// Runs seeds `1..=n`; returns the first failing seed with its message, and the totals.
fn run_many(n: u64, bug: Bug) -> (Option<(u64, String)>, Stats) {
    let mut total = Stats::default();
    for seed in 1..=n {
        let o = run_seed(seed, bug, false);
        total.add(&o.stats);
        if let Some(v) = o.violation {
            return (Some((seed, v)), total);
        }
    }
    (None, total)
}

fn report(total: &Stats, elapsed: std::time::Duration) {
    eprintln!(
        "simulation: {} seeds, {} steps, {} agent cycles in {:.1?}",
        total.seeds, total.steps, total.cycles, elapsed
    );
    eprintln!("  modes: {:?}", total.by_mode);
    eprintln!("  faults: {:?}", total.faults);
    eprintln!(
        "  commits {} acknowledged {}; promotions {}; switchovers requested {}; fatal exits {}",
        total.commits, total.acked, total.promotions, total.switchovers_requested, total.fatal
    );
    eprintln!(
        "  watchdog gap: two writable primaries in {} steps of {} seeds; acknowledged commits lost in the gap: {}",
        total.gap_double_primary_steps, total.gap_double_primary_seeds, total.gap_lost
    );
    eprintln!(
        "  known bugs (K1..K5, see the ignored tests): acknowledged commits lost {:?} in seeds {:?}",
        total.known_lost, total.known_seeds
    );
    eprintln!(
        "  asynchronous mode: acknowledged commits lost {}; seeds without a leader after settling: {}",
        total.async_lost, total.no_leader_at_end
    );
}

/// The invariants hold for every seed (safety), with the statistics printed (`--nocapture`).
#[test]
fn simulated_clusters_keep_the_safety_invariants() {
    if let Some(seed) = env_u64("PGPILOT_SIM_SEED") {
        let o = run_seed(seed, Bug::None, true);
        for line in &o.trace {
            eprintln!("{line}");
        }
        report(&o.stats, std::time::Duration::ZERO);
        if let Some(v) = o.violation {
            panic!("seed {seed}: {v}");
        }
        return;
    }
    let n = env_u64("PGPILOT_SIM_SEEDS").unwrap_or(2000);
    let started = Instant::now();
    let (failed, total) = run_many(n, Bug::None);
    report(&total, started.elapsed());
    if let Some((seed, v)) = failed {
        let o = run_seed(seed, Bug::None, true);
        let tail = o.trace.len().saturating_sub(80);
        for line in &o.trace[tail..] {
            eprintln!("{line}");
        }
        panic!(
            "seed {seed}: {v}\nreplay: PGPILOT_SIM_SEED={seed} cargo test -p pgpilot-ha --test simulation"
        );
    }
}

/// The checker is not vacuous: a member that promotes after losing the leader race is caught.
#[test]
fn checker_catches_promotion_without_the_lock() {
    let (failed, _) = run_many(300, Bug::PromoteWithoutLock);
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
    let (failed, _) = run_many(500, Bug::AckAsync);
    let (seed, v) = failed.expect("a broken primary must be caught");
    assert!(v.starts_with("invariant 2"), "seed {seed}: {v}");
}

/// Known bug K1, found by seed 64: in `synchronous_mode: quorum` a switchover to a named
/// candidate that is not a `/sync` voter goes ahead. The leader's `manual_failover_from_leader`
/// and the candidate's `is_healthiest` only require `/sync` membership when
/// `sync.active() && !sync.quorum()`; Patroni 4 requires it in quorum mode too
/// (`get_failover_candidates` / `is_healthiest_node` step 6 use `sync_mode_is_active`). Seed 64:
/// pg2, a diverged replica on timeline 4 that had not streamed since a partition (55 records
/// behind, within maximum_lag_on_failover), is named; pg5 (ssn `ANY 2 (pg1,pg3,pg4)`) demotes and
/// pg2 promotes without commits acknowledged by pg1,pg3,pg4. Un-ignore once fixed.
#[test]
#[ignore = "known bug K1: quorum-mode switchover to a candidate outside /sync loses acknowledged commits"]
fn known_bug_k1_quorum_switchover_to_a_non_voter_loses_acknowledged_commits() {
    let o = sim::run_seed_with(64, Bug::None, false, false);
    assert_eq!(o.violation, None);
}
