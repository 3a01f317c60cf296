//! A leader whose PostgreSQL crashes (its agent still alive) restarts it as the primary, keeping
//! the leader key: no failover, no data lost.

mod harness;

use harness::{secs, Cluster, Options, FAILOVER_TIMEOUT};

/// SIGKILL of the leader's postmaster alone: the agent, still holding the lock, starts
/// PostgreSQL again as a writable primary ("starting primary after failure"); the key never
/// changes hands and both replicas stream from it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_primary_is_restarted_by_its_agent() {
    harness::init();
    let cluster = Cluster::start(3, Options::default());
    let leader = cluster.wait_for_leader().await;
    cluster.wait_for_replicas_streaming(2).await;
    let name = cluster.member(leader).name.clone();
    let client = cluster.pg_connect(leader).await;
    client
        .batch_execute(
            "CREATE TABLE crash_check (id int PRIMARY KEY, note text);
             INSERT INTO crash_check VALUES (1, 'before the crash');",
        )
        .await
        .unwrap();
    drop(client);

    let pid = cluster
        .kill_postmaster(leader)
        .expect("a running postmaster");
    let took = cluster
        .wait_writable(leader, "crash_check", 2, "after the crash")
        .await;
    eprintln!(
        "postmaster {pid} of {name} killed: writable again after {} (ttl 20, loop_wait 1)",
        secs(took)
    );
    assert_eq!(
        cluster.leader_name().as_deref(),
        Some(name.as_str()),
        "the leader key stayed with {name}"
    );
    let log = cluster.agent_log_since_last_start(leader);
    assert!(log.contains("starting primary after failure"), "{log}");
    let client = cluster.pg_connect(leader).await;
    let n: i64 = client
        .query_one("SELECT count(*) FROM crash_check", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2, "the committed row survived the crash");
    let replicas = cluster
        .wait_for_replicas_streaming_within(2, FAILOVER_TIMEOUT)
        .await;
    for r in replicas {
        cluster.wait_for_row(r, "crash_check", 2).await;
    }
}

/// The leader's data directory is deleted under its running postmaster (files still open, so it
/// keeps accepting writes). The agent must stop that postmaster before it lets the key go:
/// when another member holds the key, the old postmaster is already gone (never two writable
/// primaries). Then the old leader clones a new copy and streams again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_whose_data_directory_is_deleted_stops_its_postmaster_before_the_key_moves() {
    harness::init();
    let cluster = Cluster::start(3, Options::default());
    let old = cluster.wait_for_leader().await;
    cluster.wait_for_replicas_streaming(2).await;
    let pid = cluster
        .postmaster_pid(old)
        .expect("the leader's postmaster runs");
    std::fs::remove_dir_all(&cluster.member(old).data_dir).unwrap();
    let new = cluster
        .wait_for_leader_except(&[old], FAILOVER_TIMEOUT)
        .await;
    let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
    assert!(
        !alive,
        "{} holds the key while the old leader's postmaster {pid} still runs",
        cluster.member(new).name
    );
    // The order in the agent's log: the orphaned postmaster stopped, then the key released.
    let log = cluster.agent_log(old);
    let stopped = log.find(&format!(
        "stopping postmaster {pid} whose data directory was removed"
    ));
    let released = log.find("released leader key because the data directory is empty");
    assert!(
        matches!((stopped, released), (Some(s), Some(r)) if s < r),
        "the postmaster must be stopped before the key is released:\n{log}"
    );
    cluster
        .wait_for_streaming_replica(old, None, FAILOVER_TIMEOUT)
        .await;
}
