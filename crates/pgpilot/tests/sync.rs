//! Synchronous and quorum replication end to end: real etcd, PostgreSQL 15 and agents.

mod harness;

use std::sync::Arc;
use std::time::Duration;

use harness::{Cluster, Options, FAILOVER_TIMEOUT, SHORT_TIMEOUT};
use serde_json::{json, Value};

/// Three members with `synchronous_mode` (and friends) set in `bootstrap.dcs`.
fn start(mode: Value, extra: Value) -> Cluster {
    let customize = Arc::new(move |_: usize, doc: &mut Value| {
        let dcs = &mut doc["bootstrap"]["dcs"];
        dcs["synchronous_mode"] = mode.clone();
        if let Some(extra) = extra.as_object() {
            for (k, v) in extra {
                dcs[k] = v.clone();
            }
        }
    });
    Cluster::start(
        3,
        Options {
            customize: Some(customize),
            ..Options::default()
        },
    )
}

/// `/sync` as stored: `(leader, sorted standby names, quorum)`.
fn sync_key(cluster: &Cluster) -> anyhow::Result<(String, Vec<String>, u64)> {
    let text = cluster
        .etcd_get("sync")
        .ok_or_else(|| anyhow::anyhow!("no /sync key"))?;
    let v: Value = serde_json::from_str(&text)?;
    let mut standbys: Vec<String> = v["sync_standby"]
        .as_str()
        .unwrap_or("")
        .split(',')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    standbys.sort();
    Ok((
        v["leader"].as_str().unwrap_or("").to_string(),
        standbys,
        v["quorum"].as_u64().unwrap_or(0),
    ))
}

/// A member name as it appears in `synchronous_standby_names` (the harness's `pg-N` names
/// need quotes).
fn quoted(name: &str) -> String {
    format!("\"{name}\"")
}

async fn ssn(cluster: &Cluster, i: usize) -> anyhow::Result<String> {
    let c = cluster.pg_connect_try(i).await?;
    let row = c.query_one("SHOW synchronous_standby_names", &[]).await?;
    Ok(row.get(0))
}

/// Waits until `/sync` names `leader` and exactly one standby, which the leader's
/// `synchronous_standby_names` requires and `pg_stat_replication` reports as `sync`.
async fn wait_for_sync_standby(cluster: &Cluster, leader: usize) -> usize {
    let leader_name = cluster.member(leader).name.clone();
    let name = cluster
        .wait(
            SHORT_TIMEOUT,
            "a synchronous standby in /sync",
            async || {
                let (l, standbys, _) = sync_key(cluster)?;
                anyhow::ensure!(l == leader_name, "/sync leader is {l}");
                anyhow::ensure!(standbys.len() == 1, "/sync standbys {standbys:?}");
                let s = ssn(cluster, leader).await?;
                anyhow::ensure!(
                    s == quoted(&standbys[0]),
                    "ssn is '{s}', /sync has {standbys:?}"
                );
                Ok(standbys[0].clone())
            },
        )
        .await;
    cluster.index_of(&name).expect("a member name")
}

/// Waits until the health check `path` on member `i` answers `want` (agents publish what
/// they saw of `/sync` once per cycle).
async fn check(cluster: &Cluster, i: usize, path: &str, want: u16) {
    let what = format!("{path} on {} to answer {want}", cluster.member(i).name);
    cluster
        .wait(SHORT_TIMEOUT, &what, async || {
            let code = cluster.api_get(i, path).await.map_or(0, |(code, _)| code);
            anyhow::ensure!(code == want, "{code}");
            Ok(())
        })
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sync_standby_moves_when_it_is_stopped_and_rest_and_list_show_it() {
    harness::init();
    let cluster = start(json!("on"), json!({}));
    let leader = cluster.wait_for_leader().await;
    cluster.wait_for_replicas_streaming(2).await;
    let sync = wait_for_sync_standby(&cluster, leader).await;
    let other = (0..3).find(|&i| i != leader && i != sync).unwrap();

    // Health checks and the status document.
    check(&cluster, sync, "/sync", 200).await;
    check(&cluster, other, "/sync", 503).await;
    check(&cluster, other, "/async", 200).await;
    check(&cluster, sync, "/async", 503).await;
    check(&cluster, sync, "/read-only-sync", 200).await;
    check(&cluster, leader, "/read-only-sync", 200).await;
    check(&cluster, other, "/read-only-sync", 503).await;
    assert_eq!(
        cluster.patroni(sync).await.unwrap()["sync_standby"],
        json!(true)
    );
    let (_, list) = cluster.api_get(leader, "/cluster").await.unwrap();
    let role_of = |name: &str| {
        list["members"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["name"] == name)
            .map(|m| m["role"].clone())
    };
    assert_eq!(
        role_of(&cluster.member(sync).name),
        Some(json!("sync_standby"))
    );
    assert_eq!(role_of(&cluster.member(other).name), Some(json!("replica")));

    // A commit is acknowledged only once the synchronous standby has it.
    let client = cluster.pg_connect(leader).await;
    client
        .batch_execute("CREATE TABLE sync_check (id int PRIMARY KEY, note text); INSERT INTO sync_check VALUES (1)")
        .await
        .unwrap();
    let sc = cluster.pg_connect(sync).await;
    let n: i64 = sc
        .query_one("SELECT count(*) FROM sync_check", &[])
        .await
        .map(|r| r.get(0))
        .unwrap_or(0);
    // remote flush, not replay: the row may not be visible yet, but the WAL is there.
    let _ = n;

    // Stop the synchronous standby: it asks to be released first, and the other replica
    // takes over the duty without commits hanging.
    let sync_name = cluster.member(sync).name.clone();
    let other_name = cluster.member(other).name.clone();
    cluster.terminate_agent(sync);
    cluster.wait_agent_exit(sync, SHORT_TIMEOUT).await;
    assert!(
        cluster
            .agent_log(sync)
            .contains("Waiting for primary to release us from synchronous standby"),
        "the standby asked to leave synchronous duty"
    );
    cluster
        .wait(
            SHORT_TIMEOUT,
            "/sync to name the other replica",
            async || {
                let (_, standbys, _) = sync_key(&cluster)?;
                anyhow::ensure!(standbys == vec![other_name.clone()], "{standbys:?}");
                let s = ssn(&cluster, leader).await?;
                anyhow::ensure!(s == quoted(&other_name), "ssn is '{s}'");
                Ok(())
            },
        )
        .await;
    tokio::time::timeout(
        Duration::from_secs(10),
        client.batch_execute("INSERT INTO sync_check VALUES (2)"),
    )
    .await
    .expect("commit acknowledged with the new synchronous standby")
    .unwrap();
    assert_ne!(sync_name, other_name);

    // pgpilotctl list shows the role.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgpilotctl"))
        .arg("-c")
        .arg(&cluster.member(leader).config_path)
        .args(["list", "-f", "json"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&out.stdout).into_owned();
    let rows: Value = serde_json::from_str(&out).unwrap();
    let role = rows
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["Member"] == other_name)
        .map(|m| m["Role"].clone());
    assert_eq!(role, Some(json!("Sync Standby")), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strict_mode_blocks_commits_without_a_standby_and_keeps_sync() {
    harness::init();
    let cluster = start(json!("on"), json!({"synchronous_mode_strict": true}));
    let leader = cluster.wait_for_leader().await;
    cluster.wait_for_replicas_streaming(2).await;
    let sync = wait_for_sync_standby(&cluster, leader).await;
    let other = (0..3).find(|&i| i != leader && i != sync).unwrap();
    let client = cluster.pg_connect(leader).await;
    client
        .batch_execute("CREATE TABLE strict_check (id int)")
        .await
        .unwrap();
    // The asynchronous replica first, then the synchronous standby (stopped the other way
    // round, the duty may move to the second one and /sync be empty when it stops too: then
    // the placeholder makes commits wait just the same).
    for r in [other, sync] {
        cluster.terminate_agent(r);
        cluster.wait_agent_exit(r, SHORT_TIMEOUT).await;
    }
    // /sync still names the synchronous standby and ssn still requires it.
    let (l, standbys, _) = sync_key(&cluster).unwrap();
    assert_eq!(l, cluster.member(leader).name);
    assert_eq!(
        standbys,
        vec![cluster.member(sync).name.clone()],
        "strict mode keeps /sync"
    );
    let kept = cluster.index_of(&standbys[0]).unwrap();
    let s = ssn(&cluster, leader).await.unwrap();
    assert_eq!(s, quoted(&standbys[0]));

    // A commit now waits.
    let pending = tokio::spawn(async move {
        client
            .batch_execute("INSERT INTO strict_check VALUES (1)")
            .await
    });
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        !pending.is_finished(),
        "a commit without any standby must wait"
    );
    // The standby comes back: the commit completes.
    cluster.start_agent(kept);
    tokio::time::timeout(FAILOVER_TIMEOUT, pending)
        .await
        .expect("the commit completes once the synchronous standby is back")
        .unwrap()
        .unwrap();
}

/// The leader dies while an asynchronous replica is ahead of the synchronous one (it received
/// WAL of a commit the synchronous standby never acknowledged): the synchronous standby is
/// promoted, the other one rewinds and follows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_promotes_the_sync_standby_even_when_an_async_replica_is_ahead() {
    harness::init();
    let cluster = start(json!("on"), json!({}));
    let leader = cluster.wait_for_leader().await;
    cluster.wait_for_replicas_streaming(2).await;
    let sync = wait_for_sync_standby(&cluster, leader).await;
    let other = (0..3).find(|&i| i != leader && i != sync).unwrap();
    let client = cluster.pg_connect(leader).await;
    client
        .batch_execute("CREATE TABLE ahead_check (id int PRIMARY KEY, note text); INSERT INTO ahead_check VALUES (1)")
        .await
        .unwrap();
    cluster.wait_for_row(other, "ahead_check", 1).await;

    // Freeze the synchronous standby's WAL receiver; a commit on the leader now waits, but its
    // WAL reaches the asynchronous replica.
    let sc = cluster.pg_connect(sync).await;
    let receiver: i32 = sc
        .query_one("SELECT pid FROM pg_stat_wal_receiver", &[])
        .await
        .unwrap()
        .get(0);
    let receiver = nix::unistd::Pid::from_raw(receiver);
    nix::sys::signal::kill(receiver, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let pending = tokio::spawn(async move {
        client
            .batch_execute("INSERT INTO ahead_check VALUES (2)")
            .await
    });
    cluster.wait_for_row(other, "ahead_check", 2).await;
    assert!(
        !pending.is_finished(),
        "the commit waits for the synchronous standby"
    );
    let sync_pos = cluster.patroni(sync).await.unwrap()["xlog"]["received_location"]
        .as_u64()
        .unwrap();
    let other_pos = cluster.patroni(other).await.unwrap()["xlog"]["received_location"]
        .as_u64()
        .unwrap();
    assert!(
        other_pos > sync_pos,
        "async {other_pos} ahead of sync {sync_pos}"
    );

    cluster.kill_agent(leader);
    cluster.kill_postmaster(leader);
    let _ = nix::sys::signal::kill(receiver, nix::sys::signal::Signal::SIGCONT);
    let new = cluster
        .wait_for_leader_except(&[leader], FAILOVER_TIMEOUT)
        .await;
    assert_eq!(
        cluster.member(new).name,
        cluster.member(sync).name,
        "the synchronous standby is promoted, not the replica that is ahead"
    );
    cluster.wait_writable(new, "ahead_check", 3, "after").await;
    // The replica that was ahead rewinds and follows the new leader.
    let tl = cluster.primary_timeline(new).await;
    cluster
        .wait_for_streaming_replica(other, Some(tl), FAILOVER_TIMEOUT)
        .await;
}

/// Quorum commit with three members: `ANY 1 (a,b)` with quorum 1; losing the leader still
/// leaves enough votes to promote, and no acknowledged commit is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_mode_with_three_members_survives_the_loss_of_one() {
    harness::init();
    let cluster = start(json!("quorum"), json!({}));
    let leader = cluster.wait_for_leader().await;
    cluster.wait_for_replicas_streaming(2).await;
    let leader_name = cluster.member(leader).name.clone();
    let mut replica_names: Vec<String> = (0..3)
        .filter(|&i| i != leader)
        .map(|i| cluster.member(i).name.clone())
        .collect();
    replica_names.sort();
    cluster
        .wait(SHORT_TIMEOUT, "quorum /sync and ssn", async || {
            let (l, standbys, quorum) = sync_key(&cluster)?;
            anyhow::ensure!(l == leader_name, "/sync leader {l}");
            anyhow::ensure!(standbys == replica_names, "{standbys:?}");
            anyhow::ensure!(quorum == 1, "quorum {quorum}");
            let s = ssn(&cluster, leader).await?;
            let quoted: Vec<String> = replica_names.iter().map(|n| quoted(n)).collect();
            let want = format!("ANY 1 ({})", quoted.join(","));
            anyhow::ensure!(s == want, "ssn '{s}' != '{want}'");
            Ok(())
        })
        .await;
    for i in (0..3).filter(|&i| i != leader) {
        check(&cluster, i, "/quorum", 200).await;
        check(&cluster, i, "/read-only-quorum", 200).await;
        check(&cluster, i, "/sync", 503).await;
        assert_eq!(
            cluster.patroni(i).await.unwrap()["quorum_standby"],
            json!(true)
        );
    }

    let client = cluster.pg_connect(leader).await;
    client
        .batch_execute("CREATE TABLE quorum_check (id int PRIMARY KEY, note text)")
        .await
        .unwrap();
    for id in 1..=20 {
        client
            .batch_execute(&format!("INSERT INTO quorum_check VALUES ({id})"))
            .await
            .unwrap();
    }
    cluster.kill_agent(leader);
    cluster.kill_postmaster(leader);
    let new = cluster
        .wait_for_leader_except(&[leader], FAILOVER_TIMEOUT)
        .await;
    cluster
        .wait_writable(new, "quorum_check", 21, "after")
        .await;
    let c = cluster.pg_connect(new).await;
    let n: i64 = c
        .query_one("SELECT count(*) FROM quorum_check WHERE id <= 20", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 20, "every acknowledged commit survived");
    // The survivor becomes the single voter.
    let new_name = cluster.member(new).name.clone();
    let survivor = (0..3).find(|&i| i != leader && i != new).unwrap();
    let survivor_name = cluster.member(survivor).name.clone();
    cluster
        .wait(
            FAILOVER_TIMEOUT,
            "quorum /sync after the failover",
            async || {
                let (l, standbys, _) = sync_key(&cluster)?;
                anyhow::ensure!(l == new_name, "/sync leader {l}");
                anyhow::ensure!(standbys == vec![survivor_name.clone()], "{standbys:?}");
                Ok(())
            },
        )
        .await;
}
