//! Failsafe mode (`failsafe_mode: true`): a primary that loses etcd keeps taking writes while
//! every member listed in `/failsafe` acknowledges it over REST, with the guard on (its
//! deadline is extended by each successful round); one member that stops answering and the
//! primary demotes; when etcd comes back there is one primary. The same outage without
//! failsafe mode demotes the primary (`dcs_outage.rs`).

mod harness;

use std::sync::Arc;
use std::time::{Duration, Instant};

use harness::{secs, Cluster, Options, FAILOVER_TIMEOUT};
use serde_json::Value;

fn failsafe_options() -> Options {
    Options {
        customize: Some(Arc::new(|_, doc: &mut Value| {
            doc["bootstrap"]["dcs"]["failsafe_mode"] = Value::Bool(true);
        })),
        ..Options::default()
    }
}

/// etcd hangs (SIGSTOP) under a 3-member cluster in failsafe mode: the primary stays writable
/// for 2 × ttl (the guard, on by default, does not fence it), the replicas stay replicas and
/// every member reports `failsafe_mode_is_active`; SIGKILL of one replica's agent (its
/// PostgreSQL keeps running: what matters is that nothing answers for that member any more)
/// makes the primary stop taking writes within a ttl; after SIGCONT one primary again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failsafe_keeps_the_primary_while_every_member_answers_and_demotes_when_one_does_not() {
    harness::init();
    let options = failsafe_options();
    let ttl = Duration::from_secs(options.ttl);
    let cluster = Cluster::start(3, options);
    let leader = cluster.wait_for_leader().await;
    let replicas = cluster.wait_for_replicas_streaming(2).await;
    let name = cluster.member(leader).name.clone();

    // The leader lists every member in /failsafe.
    cluster
        .wait(
            FAILOVER_TIMEOUT,
            "/failsafe to list 3 members",
            async || {
                let (code, body) = cluster.api_get(leader, "/failsafe").await?;
                anyhow::ensure!(code == 200, "GET /failsafe: {code} {body}");
                let n = body.as_object().map_or(0, |m| m.len());
                anyhow::ensure!(n == 3, "GET /failsafe: {body}");
                Ok(())
            },
        )
        .await;
    // What pgpilot leaves out of failsafe mode is said at start.
    for i in 0..3 {
        let log = cluster.agent_log(i);
        assert!(
            log.contains("failsafe_mode: not implemented by pgpilot yet: the leader's slots"),
            "{}: no warning about what failsafe mode leaves out",
            cluster.member(i).name
        );
    }
    let key = cluster.etcd_get("failsafe").expect("the /failsafe key");
    for i in 0..3 {
        assert!(
            key.contains(&format!("\"{}\":", cluster.member(i).name)),
            "{key}"
        );
    }
    let client = cluster.pg_connect(leader).await;
    client
        .batch_execute("CREATE TABLE failsafe_check (id int PRIMARY KEY, note text)")
        .await
        .unwrap();
    // The first replica keeps a copy of the leader's slot for the second one (member slots
    // are kept on every failover candidate), advanced to the leader's positions.
    let slot = cluster.member(replicas[1]).name.replace('-', "_");
    let copy_lsn = async || -> anyhow::Result<i64> {
        let row = cluster
            .pg_connect_try(replicas[0])
            .await?
            .query_one(
                "SELECT coalesce(pg_wal_lsn_diff(restart_lsn, '0/0')::bigint, 0) \
                 FROM pg_replication_slots WHERE slot_name = $1",
                &[&slot],
            )
            .await?;
        Ok(row.get(0))
    };
    let before = cluster
        .wait(
            FAILOVER_TIMEOUT,
            "the replica's copy of the slot",
            async || {
                let lsn = copy_lsn().await?;
                anyhow::ensure!(lsn > 0, "not advanced yet");
                Ok(lsn)
            },
        )
        .await;

    let paused = Instant::now();
    cluster.etcd.pause();
    // Writes go on for 2 × ttl: the guard's deadline (ttl - margin after each renewal) would
    // have stopped PostgreSQL long before without the failsafe rounds.
    let mut id: i32 = 0;
    while paused.elapsed() < 2 * ttl {
        id += 1;
        let insert = tokio::time::timeout(
            Duration::from_secs(5),
            client.execute(
                "INSERT INTO failsafe_check VALUES ($1, 'during the outage')",
                &[&id],
            ),
        )
        .await;
        match insert {
            Ok(Ok(_)) => {}
            other => {
                cluster.print_diagnostics();
                panic!(
                    "{name} refused write {id} {} into the etcd outage: {other:?}",
                    secs(paused.elapsed())
                );
            }
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    eprintln!(
        "{name} took {id} writes over {} of etcd outage (ttl {})",
        secs(paused.elapsed()),
        secs(ttl)
    );
    for &r in &replicas {
        assert!(
            cluster.in_recovery(r).await.unwrap(),
            "{} is writable during the outage",
            cluster.member(r).name
        );
    }
    for i in 0..3 {
        let st = cluster.patroni(i).await.unwrap();
        assert_eq!(
            st["failsafe_mode_is_active"],
            true,
            "{}: {st}",
            cluster.member(i).name
        );
    }
    assert_eq!(cluster.patroni(leader).await.unwrap()["role"], "primary");
    let (code, _) = cluster.api_get(replicas[0], "/failsafe").await.unwrap();
    assert_eq!(code, 200, "GET /failsafe on a replica during the outage");
    // The leader's rounds carry its slot positions: the replica's copy followed the writes
    // made during the outage, with no /status to read them from.
    let during = cluster
        .wait(
            Duration::from_secs(10),
            "the slot copy to advance during the outage",
            async || {
                let lsn = copy_lsn().await?;
                anyhow::ensure!(lsn > before, "still at {lsn} (before the outage: {before})");
                Ok(lsn)
            },
        )
        .await;
    eprintln!(
        "{slot} on {}: {before} -> {during} during the outage",
        cluster.member(replicas[0]).name
    );

    // One member stops answering: the next round fails and the primary demotes.
    let gone = replicas[1];
    cluster.kill_agent(gone);
    let killed = Instant::now();
    cluster
        .wait(
            ttl,
            &format!("{name} to stop taking writes"),
            async || match cluster.in_recovery(leader).await {
                Ok(true) | Err(_) => Ok(()),
                Ok(false) => anyhow::bail!("{name} still runs as a primary"),
            },
        )
        .await;
    eprintln!(
        "{} agent killed: {name} read-only {} later",
        cluster.member(gone).name,
        secs(killed.elapsed())
    );
    // It comes back read-only (offline demotion): a write is refused, whether it is still
    // restarting or already up again.
    if let Ok(client) = cluster.pg_connect_try(leader).await {
        let write = client
            .execute("INSERT INTO failsafe_check VALUES (-1, 'split brain')", &[])
            .await;
        assert!(write.is_err(), "{name} accepted a write after demoting");
    }
    cluster
        .assert_none_writable("after the failsafe demotion")
        .await;

    cluster.etcd.resume();
    cluster.start_agent(gone);
    let new = cluster.wait_for_leader().await;
    cluster
        .wait_writable(new, "failsafe_check", 100_000, "after the outage")
        .await;
    let streaming = cluster
        .wait_for_replicas_streaming_within(2, FAILOVER_TIMEOUT)
        .await;
    assert!(!streaming.contains(&new));
    for &r in &streaming {
        cluster.wait_for_row(r, "failsafe_check", id).await;
    }
    assert_eq!(
        cluster.primaries().await,
        [cluster.member(new).name.clone()]
    );
}
