//! The etcd client against a real 3-member etcd cluster (Debian's `etcd-server`) when members
//! die, hang or come back: requests, lease renewals and the watch move to a member that answers,
//! and only the loss of the quorum is a DCS failure. Regression tests for "losing one of three
//! etcd members demotes the primary" (the client kept sending requests to the dead member).
//!
//! The etcd cluster is the integration-test harness's ([`pgpilot_test_support::Etcd`]): free
//! loopback ports, processes killed by PID on drop, and, started as root, the test process
//! drops to the user `pgpilot` like the other integration tests.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pgpilot_dcs::etcd::{EtcdDcs, EtcdOptions};
use pgpilot_dcs::{Dcs, DcsError};
use pgpilot_test_support::Etcd;

mod common;
use common::{member, options, sees_change};

/// Patroni's default `retry_timeout` (with its default ttl of 30 s below). A renewal spans an etcd election when the member that
/// dies is etcd's raft leader: 1–2 s on an idle machine, more than 3 s seen on a loaded 2-core
/// CI runner (both tests failed there with "etcdserver: no leader" after 3 s). The bug these
/// tests guard against (requests kept going to the dead member) fails with any budget.
const RETRY_TIMEOUT: Duration = Duration::from_secs(10);

async fn client(endpoints: Vec<String>, name: &str, discover: bool) -> Arc<EtcdDcs> {
    let connect = EtcdDcs::connect(EtcdOptions {
        discover_members: discover,
        retry_timeout: RETRY_TIMEOUT,
        ttl: Duration::from_secs(30),
        ..options(endpoints, "members", name)
    });
    Arc::new(
        tokio::time::timeout(Duration::from_secs(30), connect)
            .await
            .expect("connect within 30 s")
            .expect("connect"),
    )
}

/// The leader renews its key (keepalive + value-compare txn), as the HA cycle does; prints how
/// long it took.
async fn renew(dcs: &EtcdDcs, what: &str) -> Duration {
    let started = Instant::now();
    let renewed = dcs.update_leader(None).await;
    let took = started.elapsed();
    eprintln!("{what}: update_leader {renewed:?} in {took:?}");
    assert!(
        matches!(renewed, Ok(true)),
        "{what}: the leader could not renew its key while etcd has quorum: {renewed:?}"
    );
    took
}

/// Killing any one member — each position in the configured list, the one the client talks
/// to included — never fails a leader renewal; killing a second (quorum lost) does, and once
/// the members are back everything works again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_dead_member_never_fails_a_request_and_quorum_loss_does() {
    let etcd = Etcd::start_members(3);
    let leader = client(etcd.endpoints(), "pg-0", true).await;
    let other = client(etcd.endpoints(), "pg-1", true).await;
    leader.touch_member(&member("pg-0")).await.unwrap();
    assert!(leader.attempt_to_acquire_leader().await.unwrap());
    renew(&leader, "all members up").await;

    for victim in 0..3 {
        etcd.kill_member(victim);
        // Several cycles: the first finds the dead member, the next ones must not go back.
        for cycle in 0..3 {
            renew(&leader, &format!("e{victim} dead, cycle {cycle}")).await;
        }
        leader.touch_member(&member("pg-0")).await.unwrap();
        sees_change(
            &leader,
            &other,
            &format!("e{victim}-dead"),
            "one member dead",
        )
        .await;
        let c = leader.cluster_fresh().await.unwrap();
        assert_eq!(c.leader_name(), Some("pg-0"));
        etcd.restart_member(victim);
        etcd.wait_all_healthy();
    }

    // Quorum lost: no member can serve, the renewal fails within about retry_timeout.
    etcd.kill_member(0);
    etcd.kill_member(1);
    let started = Instant::now();
    let renewed = leader.update_leader(None).await;
    let took = started.elapsed();
    eprintln!("quorum lost: update_leader {renewed:?} in {took:?}");
    assert!(
        matches!(renewed, Err(DcsError::Unavailable(_))),
        "quorum lost but update_leader said {renewed:?}"
    );
    assert!(
        took < RETRY_TIMEOUT * 3,
        "a failed renewal must end near retry_timeout, took {took:?}"
    );

    // Back: renewals work again (the lease may have expired meanwhile: it is re-granted and
    // the key re-created because nobody else took it).
    etcd.restart_member(0);
    etcd.restart_member(1);
    etcd.wait_all_healthy();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if matches!(leader.update_leader(None).await, Ok(true)) {
            break;
        }
        assert!(Instant::now() < deadline, "renewals did not recover");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    sees_change(&leader, &other, "healed", "after quorum came back").await;
}

/// A member that accepts connections but never answers (SIGSTOP): requests and the watch move
/// to the others within retry_timeout; the leader keeps its key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_member_is_routed_around() {
    let etcd = Etcd::start_members(3);
    let leader = client(etcd.endpoints(), "pg-0", true).await;
    let other = client(etcd.endpoints(), "pg-1", true).await;
    assert!(leader.attempt_to_acquire_leader().await.unwrap());
    // e0 is the first configured member: both clients talk to it.
    etcd.pause_member(0);
    for cycle in 0..3 {
        renew(&leader, &format!("e0 hung, cycle {cycle}")).await;
    }
    sees_change(&leader, &other, "e0-hung", "one member hung").await;
    etcd.resume_member(0);
    // The member that was hung is a candidate again once the others fail.
    etcd.wait_all_healthy();
    etcd.kill_member(1);
    etcd.kill_member(2);
    // e0 alone has no quorum: requests fail, but they do reach it (no panic, no hang).
    let renewed = leader.update_leader(None).await;
    assert!(renewed.is_err(), "no quorum, yet {renewed:?}");
}

/// A configuration naming one member still finds the others (MemberList, as Patroni does), so
/// the loss of that one member is survived too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_are_discovered_from_etcd() {
    let etcd = Etcd::start_members(3);
    let leader = client(vec![etcd.member_endpoint(0)], "pg-0", true).await;
    let known = leader.known_endpoints();
    assert_eq!(known.len(), 3, "discovered {known:?}");
    assert!(leader.attempt_to_acquire_leader().await.unwrap());
    etcd.kill_member(0);
    for cycle in 0..3 {
        renew(
            &leader,
            &format!("the only configured member dead, cycle {cycle}"),
        )
        .await;
    }

    // use_proxies: the configured endpoint is all there is.
    etcd.restart_member(0);
    etcd.wait_all_healthy();
    let proxied = client(vec![etcd.member_endpoint(0)], "pg-2", false).await;
    assert_eq!(proxied.known_endpoints().len(), 1);
}
