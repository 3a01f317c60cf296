//! Graceful handover: a leader asked to stop hands the cluster over without waiting for its
//! lease to expire.

mod harness;

use std::time::{Duration, Instant};

use harness::{secs, Cluster, Options, FAILOVER_TIMEOUT, SHORT_TIMEOUT};

/// SIGTERM to the leader's agent stops its PostgreSQL and deletes the leader key while its lease
/// is still alive (released, not expired); a replica takes over and accepts writes, the other
/// follows, and the old leader rejoins as a replica when started again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_of_the_leader_releases_the_key_and_a_replica_takes_over() {
    harness::init();
    let options = Options::default();
    let (ttl, loop_wait) = (options.ttl, options.loop_wait);
    let cluster = Cluster::start(3, options);
    let old = cluster.wait_for_leader().await;
    cluster.wait_for_replicas_streaming(2).await;
    let old_name = cluster.member(old).name.clone();
    let old_tl = cluster.patroni(old).await.unwrap()["timeline"]
        .as_u64()
        .unwrap();
    let client = cluster.pg_connect(old).await;
    client
        .batch_execute(
            "CREATE TABLE handover_check (id int PRIMARY KEY, note text);
             INSERT INTO handover_check VALUES (1, 'before the handover');",
        )
        .await
        .unwrap();
    drop(client);
    let replicas: Vec<usize> = (0..3).filter(|&i| i != old).collect();
    for &r in &replicas {
        cluster.wait_for_row(r, "handover_check", 1).await;
    }
    let lease = cluster
        .etcd
        .get_kv(&cluster.key("leader"))
        .unwrap()
        .expect("leader key")
        .lease;
    assert_ne!(lease, 0, "the leader key is attached to a lease");

    let stopped = Instant::now();
    cluster.terminate_agent(old);

    // The key leaves while its lease is still alive: released by the agent, not expired.
    let (released_after, lease_ttl) = cluster
        .wait(
            FAILOVER_TIMEOUT,
            &format!("{old_name} to release the leader key"),
            async || {
                let kv = cluster.etcd.get_kv(&cluster.key("leader"))?;
                anyhow::ensure!(
                    kv.as_ref().is_none_or(|kv| kv.value != old_name),
                    "{old_name} still holds the leader key"
                );
                Ok((stopped.elapsed(), cluster.etcd.lease_ttl(lease)?))
            },
        )
        .await;
    eprintln!(
        "leader key of {old_name} gone {} after SIGTERM (its lease then had {lease_ttl} s left)",
        secs(released_after)
    );
    // A lease renewed at least every loop_wait can not expire sooner than ttl - loop_wait after
    // the SIGTERM; if the lease is gone (an agent may revoke it on exit), the timing proves it.
    let could_have_expired = Duration::from_secs(ttl - loop_wait);
    assert!(
        lease_ttl > 0 || released_after < could_have_expired,
        "the leader key expired ({} after SIGTERM, lease gone) instead of being released",
        secs(released_after)
    );

    let new = cluster
        .wait_for_leader_except(&[old], FAILOVER_TIMEOUT)
        .await;
    let elected = stopped.elapsed();
    cluster
        .wait_writable(new, "handover_check", 2, "after the handover")
        .await;
    let first_write = stopped.elapsed();
    eprintln!(
        "handover (ttl 20, loop_wait 1, retry_timeout 3): {} leader after {}, \
         first successful INSERT after {}",
        cluster.member(new).name,
        secs(elected),
        secs(first_write)
    );
    assert!(
        first_write < Duration::from_secs(60),
        "handover took {}",
        secs(first_write)
    );

    // The old agent stopped cleanly and took its PostgreSQL down with it.
    let status = cluster.wait_agent_exit(old, SHORT_TIMEOUT).await;
    assert!(status.success(), "SIGTERM is a clean shutdown: {status}");
    assert_eq!(
        cluster.postmaster_pid(old),
        None,
        "{old_name}'s PostgreSQL stopped"
    );

    // A clean handover still moves to a new timeline; the other replica follows.
    let new_tl = cluster.patroni(new).await.unwrap()["timeline"]
        .as_u64()
        .unwrap();
    assert!(new_tl > old_tl, "timeline {old_tl} -> {new_tl}");
    let other = *replicas.iter().find(|&&r| r != new).unwrap();
    cluster
        .wait_for_streaming_replica(other, Some(new_tl), FAILOVER_TIMEOUT)
        .await;
    cluster.wait_for_walsenders(new, &[other]).await;
    cluster.wait_for_row(other, "handover_check", 2).await;

    // The old leader, started again, follows the new one.
    cluster.start_agent(old);
    cluster
        .wait_for_streaming_replica(old, Some(new_tl), FAILOVER_TIMEOUT)
        .await;
    cluster.wait_for_row(old, "handover_check", 2).await;
    assert_eq!(
        cluster.leader_name().as_deref(),
        Some(cluster.member(new).name.as_str())
    );
}
