//! DCS outage: a primary that can not reach etcd must stop accepting writes before its leader
//! key could expire and another member could be promoted (no split brain); when etcd comes
//! back, the cluster heals by itself.

mod harness;

use std::time::{Duration, Instant};

use harness::{secs, Cluster, Options, FAILOVER_TIMEOUT};

/// SIGSTOP of etcd for longer than retry_timeout demotes the primary to read-only; after
/// SIGCONT there is again one leader that accepts writes and two streaming replicas.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_outage_demotes_the_primary_and_the_cluster_heals_after() {
    harness::init();
    let options = Options::default();
    let ttl = Duration::from_secs(options.ttl);
    let cluster = Cluster::start(3, options);
    let leader = cluster.wait_for_leader().await;
    cluster.wait_for_replicas_streaming(2).await;
    let name = cluster.member(leader).name.clone();
    let client = cluster.pg_connect(leader).await;
    client
        .batch_execute(
            "CREATE TABLE outage_check (id int PRIMARY KEY, note text);
             INSERT INTO outage_check VALUES (1, 'before the outage');",
        )
        .await
        .unwrap();
    drop(client);

    let paused = Instant::now();
    cluster.etcd.pause();

    // The primary demotes itself: PostgreSQL comes back in recovery, and writes fail.
    cluster
        .wait(
            FAILOVER_TIMEOUT,
            &format!("{name} to demote itself"),
            async || {
                anyhow::ensure!(
                    cluster.in_recovery(leader).await?,
                    "{name} still runs as a primary"
                );
                Ok(())
            },
        )
        .await;
    let demoted = paused.elapsed();
    eprintln!(
        "etcd paused: {name} read-only after {} (ttl {}, retry_timeout 3)",
        secs(demoted),
        secs(ttl)
    );
    let client = cluster.pg_connect(leader).await;
    let write = client
        .execute("INSERT INTO outage_check VALUES (2, 'split brain')", &[])
        .await;
    assert!(write.is_err(), "{name} accepted a write without the DCS");
    // No member is writable while the DCS is away.
    cluster.assert_none_writable("during the outage").await;
    if demoted >= ttl {
        eprintln!("note: demotion took longer than ttl on this machine");
    }
    // Stay unreachable a little longer than the demotion took, then come back.
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.etcd.resume();
    let resumed = Instant::now();
    eprintln!("etcd resumed after a {} outage", secs(paused.elapsed()));

    let new = cluster.wait_for_leader().await;
    cluster
        .wait_writable(new, "outage_check", 3, "after the outage")
        .await;
    eprintln!(
        "healed: {} leader and writable {} after etcd resumed",
        cluster.member(new).name,
        secs(resumed.elapsed())
    );
    let replicas = cluster
        .wait_for_replicas_streaming_within(2, FAILOVER_TIMEOUT)
        .await;
    assert!(!replicas.contains(&new));
    cluster.wait_for_walsenders(new, &replicas).await;
    for &r in &replicas {
        cluster.wait_for_row(r, "outage_check", 3).await;
        cluster.wait_for_row(r, "outage_check", 1).await;
    }
    // Exactly one primary.
    assert_eq!(
        cluster.primaries().await,
        [cluster.member(new).name.clone()]
    );
}

/// Maintenance mode holds through a DCS outage, as in Patroni (`is_paused()` reads the last
/// configuration seen): a paused primary that loses etcd is not demoted, keeps its postmaster
/// and keeps accepting writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_primary_is_left_alone_during_an_etcd_outage() {
    harness::init();
    let cluster = Cluster::start(2, Options::default());
    let leader = cluster.wait_for_leader().await;
    cluster.wait_for_replicas_streaming(1).await;
    let name = cluster.member(leader).name.clone();
    cluster
        .pg_connect(leader)
        .await
        .batch_execute("CREATE TABLE paused_outage (id int PRIMARY KEY)")
        .await
        .unwrap();
    let (code, text) = cluster
        .api_call(
            leader,
            "PATCH",
            "/config",
            Some(serde_json::json!({"pause": true})),
            true,
        )
        .await
        .unwrap();
    assert_eq!(code, 200, "{text}");
    cluster
        .wait(
            FAILOVER_TIMEOUT,
            "every agent to see the pause",
            async || {
                for i in 0..2 {
                    let st = cluster.patroni(i).await?;
                    anyhow::ensure!(st["pause"] == true, "{st}");
                }
                Ok(())
            },
        )
        .await;
    let postmaster = cluster.postmaster_pid(leader);

    cluster.etcd.pause();
    // Several cycles past retry_timeout (3 s): an unpaused primary is read-only by now.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let still_primary = !cluster.in_recovery(leader).await.unwrap();
    let same_postmaster = cluster.postmaster_pid(leader) == postmaster;
    let write = match cluster.pg_connect_try(leader).await {
        Ok(c) => c
            .execute("INSERT INTO paused_outage VALUES (1)", &[])
            .await
            .map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    cluster.etcd.resume();
    assert!(still_primary, "{name} was demoted while paused");
    assert!(
        same_postmaster,
        "{name}'s PostgreSQL was restarted while paused"
    );
    assert!(
        write.is_ok(),
        "{name} refused a write while paused: {write:?}"
    );
    eprintln!("paused primary {name} kept running and writable through an 8 s etcd outage");
}
