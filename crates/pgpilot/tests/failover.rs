//! Failover: the leader dies without warning; a replica takes over, the other follows, and the
//! old leader comes back as a replica through pg_rewind.

mod harness;

use std::time::Instant;

use harness::{secs, Cluster, Options, FAILOVER_TIMEOUT, SHORT_TIMEOUT};
use serde_json::Value;

/// SIGKILL of the leader's agent and postmaster together: a replica becomes leader on a new
/// timeline recorded in `/history`, the other replica streams from it, and the old leader,
/// started again, rewinds with pg_rewind and rejoins as a streaming replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_of_the_leader_promotes_a_replica_and_the_old_leader_rejoins_with_pg_rewind() {
    harness::init();
    let cluster = Cluster::start(3, Options::default());
    let old = cluster.wait_for_leader().await;
    cluster.wait_for_replicas_streaming(2).await;
    let old_name = cluster.member(old).name.clone();
    let old_tl = cluster.patroni(old).await.unwrap()["timeline"]
        .as_u64()
        .unwrap();

    let client = cluster.pg_connect(old).await;
    client
        .batch_execute(
            "CREATE TABLE failover_check (id int PRIMARY KEY, note text);
             INSERT INTO failover_check VALUES (1, 'before the failover');",
        )
        .await
        .unwrap();
    drop(client);
    let replicas: Vec<usize> = (0..3).filter(|&i| i != old).collect();
    for &r in &replicas {
        cluster.wait_for_row(r, "failover_check", 1).await;
    }

    // Kill the leader: agent and postmaster, no chance to release anything.
    let killed = Instant::now();
    cluster.kill_agent(old);
    let pm = cluster.kill_postmaster(old);
    assert!(pm.is_some(), "the leader's postmaster was running");

    let new = cluster
        .wait_for_leader_except(&[old], FAILOVER_TIMEOUT)
        .await;
    let elected = killed.elapsed();
    let write = cluster
        .wait_writable(new, "failover_check", 2, "after the failover")
        .await;
    let first_write = killed.elapsed();
    eprintln!(
        "failover (ttl 20, loop_wait 1, retry_timeout 3): {} leader after {}, \
         first successful INSERT after {} (write retries {})",
        cluster.member(new).name,
        secs(elected),
        secs(first_write),
        secs(write)
    );
    assert_ne!(new, old);

    // The new leader runs on a new timeline, recorded in /history.
    let new_tl = cluster.patroni(new).await.unwrap()["timeline"]
        .as_u64()
        .unwrap();
    assert!(new_tl > old_tl, "timeline {old_tl} -> {new_tl}");
    let history = cluster
        .wait(
            SHORT_TIMEOUT,
            "/history to record the promotion",
            async || {
                let text = cluster
                    .etcd_get("history")
                    .ok_or_else(|| anyhow::anyhow!("no history"))?;
                let lines: Vec<Value> = serde_json::from_str(&text)?;
                anyhow::ensure!(
                    lines.iter().any(|l| l[0].as_u64() == Some(old_tl)),
                    "no line for timeline {old_tl}: {text}"
                );
                Ok(lines)
            },
        )
        .await;
    let line = history
        .iter()
        .find(|l| l[0].as_u64() == Some(old_tl))
        .unwrap();
    assert!(
        line[1].as_u64().is_some(),
        "switch LSN as an integer: {line}"
    );
    if let Some(leader) = line.get(4) {
        assert_eq!(
            leader,
            cluster.member(new).name.as_str(),
            "new leader in {line}"
        );
    }
    let (code, api_history) = cluster.api_get(new, "/history").await.unwrap();
    assert_eq!(code, 200);
    assert_eq!(
        api_history,
        Value::Array(history.clone()),
        "GET /history serves the key"
    );

    // The other replica follows the new leader.
    let other = *replicas.iter().find(|&&r| r != new).unwrap();
    cluster
        .wait_for_streaming_replica(other, Some(new_tl), FAILOVER_TIMEOUT)
        .await;
    cluster.wait_for_walsenders(new, &[other]).await;
    cluster.wait_for_row(other, "failover_check", 2).await;
    eprintln!(
        "{} follows the new leader after {}",
        cluster.member(other).name,
        secs(killed.elapsed())
    );

    // The old leader comes back: crash recovery leaves it ahead of the fork point on the old
    // timeline, so it must rewind before it can follow.
    let restarted = Instant::now();
    cluster.start_agent(old);
    cluster
        .wait_for_streaming_replica(old, Some(new_tl), FAILOVER_TIMEOUT)
        .await;
    eprintln!(
        "{old_name} rejoined as a replica after {}",
        secs(restarted.elapsed())
    );
    let log = cluster.agent_log_since_last_start(old);
    assert!(
        log.contains("pg_rewind"),
        "{old_name} rejoined through pg_rewind; its log:\n{log}"
    );
    cluster.wait_for_walsenders(new, &[other, old]).await;
    let client = cluster.pg_connect(new).await;
    client
        .execute(
            "INSERT INTO failover_check VALUES (3, 'after the rejoin')",
            &[],
        )
        .await
        .unwrap();
    cluster.wait_for_row(old, "failover_check", 3).await;
    cluster.wait_for_row(old, "failover_check", 1).await;
    assert!(cluster.in_recovery(old).await.unwrap());
    assert_eq!(
        cluster.leader_name().as_deref(),
        Some(cluster.member(new).name.as_str())
    );
}
