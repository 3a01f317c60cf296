//! A virtual IP that follows the leader, with the real keepalived: one keepalived per member,
//! each in its own network namespace, its `vrrp_script` checking its own agent's `/primary`
//! (see `crates/pgpilot-test-support/src/keepalived.rs` for the layout). The time the address
//! took to reach the new leader after its election is printed (`--no-capture`), never asserted:
//! the machine is shared.

mod harness;

use std::time::{Duration, Instant};

use harness::{secs, Cluster, Keepalived, Options, VIP};

/// Upper bound for the address to move once the new leader is elected (checks every second,
/// VRRP adverts every second: a few seconds expected).
const VIP_TIMEOUT: Duration = Duration::from_secs(30);

/// Checks, `checks` times a second apart, that the address is on `leader`'s namespace alone.
async fn assert_vip_stays_on(
    keepalived: &Keepalived,
    cluster: &Cluster,
    leader: usize,
    checks: u32,
) {
    for _ in 0..checks {
        let holders = keepalived.holders().unwrap();
        assert_eq!(
            holders,
            [leader],
            "{VIP} is on exactly the leader {}'s namespace",
            cluster.member(leader).name
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Waits for the address on `leader` (elected `elected` after `event` began), prints the
/// figures, and checks that it stays there.
async fn follows(
    keepalived: &Keepalived,
    cluster: &Cluster,
    event: &str,
    started: Instant,
    leader: usize,
) {
    let elected = started.elapsed();
    let moved = keepalived.wait_for_vip_on(leader, VIP_TIMEOUT).await;
    eprintln!(
        "{event}: {} leader after {}, {VIP} on its namespace alone {} after the election",
        cluster.member(leader).name,
        secs(elected),
        secs(moved),
    );
    assert_vip_stays_on(keepalived, cluster, leader, 3).await;
}

/// keepalived with a `vrrp_script` on `/primary` puts the address on the leader's namespace
/// alone after bootstrap, moves it to the new leader after a switchover and after a crash of the
/// leader (agent and postmaster SIGKILLed), and leaves it on exactly one namespace once settled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalived_moves_the_vip_to_the_new_leader_after_a_switchover_and_a_crash() {
    // Namespaces need root: prepared before `init` drops the process to the test user.
    let mut keepalived = match Keepalived::prepare(3) {
        Ok(k) => k,
        Err(why) => {
            eprintln!("{why}");
            return;
        }
    };
    harness::init();
    let cluster = Cluster::start(3, Options::default());
    let leader = cluster.wait_for_leader().await;
    keepalived.start(&cluster).unwrap();
    let took = keepalived.wait_for_vip_on(leader, VIP_TIMEOUT).await;
    eprintln!(
        "bootstrap: {VIP} on the leader {}'s namespace alone {} after keepalived started",
        cluster.member(leader).name,
        secs(took)
    );
    eprintln!("keepalived.conf of member 0:\n{}", keepalived.configs[0]);
    assert_vip_stays_on(&keepalived, &cluster, leader, 3).await;

    let started = Instant::now();
    cluster.switchover(leader, None).await;
    let new = cluster
        .wait_for_leader_except(&[leader], harness::FAILOVER_TIMEOUT)
        .await;
    follows(&keepalived, &cluster, "switchover", started, new).await;

    let started = Instant::now();
    cluster.kill_agent(new);
    assert!(cluster.kill_postmaster(new).is_some());
    let last = cluster
        .wait_for_leader_except(&[new], harness::FAILOVER_TIMEOUT)
        .await;
    follows(
        &keepalived,
        &cluster,
        "crash (kill -9 of agent and postmaster)",
        started,
        last,
    )
    .await;
    // The configuration was taken as written: no script refused as insecure, no keyword
    // ignored.
    let warnings = keepalived.warnings().unwrap();
    assert!(warnings.is_empty(), "keepalived warns: {warnings:#?}");
}
