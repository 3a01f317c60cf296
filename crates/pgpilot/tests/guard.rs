//! The guard process (issue 12 item 2): a leader whose agent is frozen or killed stops accepting
//! writes before its leader key can expire, because a process outside the agent stops its
//! PostgreSQL at the lease deadline; the cluster then fails over and converges as usual. A
//! replica's guard never fences, a clean shutdown leaves no guard behind, and `pgpilot.guard:
//! off` starts none.

mod harness;

use std::time::{Duration, Instant};

use anyhow::ensure;
use harness::{
    controldata_field, guard_pids, pid_alive, secs, signal, Cluster, Options, Writer,
    FAILOVER_TIMEOUT, SHORT_TIMEOUT,
};
use nix::sys::signal::Signal;
use serde_json::json;

/// The leader, once every other member streams from it and it took row 1 of a new `table`.
async fn leader_writing(cluster: &Cluster, table: &str) -> usize {
    let leader = cluster.wait_for_leader().await;
    cluster.wait_for_replicas_streaming(cluster.len() - 1).await;
    cluster
        .pg_connect(leader)
        .await
        .batch_execute(&format!(
            "CREATE TABLE {table} (id int PRIMARY KEY, note text)"
        ))
        .await
        .unwrap();
    cluster.wait_writable(leader, table, 1, "before").await;
    leader
}

/// Waits until the postmaster `pid` of member `i` is gone, checking at every poll that the leader
/// key still names `leader` and that no other member runs a primary: the fence came first.
async fn wait_fenced_before_failover(cluster: &Cluster, i: usize, pid: i32, leader: &str) {
    let other = 1 - i;
    cluster
        .wait(
            SHORT_TIMEOUT,
            "the guard to stop the old primary",
            async || {
                let holder = cluster.leader_name();
                assert_eq!(
                    holder.as_deref(),
                    Some(leader),
                    "the leader key changed hands while the old primary still ran"
                );
                assert!(
                    cluster.in_recovery(other).await.unwrap_or(true),
                    "the other member was promoted while the old primary still ran"
                );
                ensure!(!pid_alive(pid), "postmaster {pid} still runs");
                Ok(())
            },
        )
        .await;
    // Fenced, and still nobody else leads: PostgreSQL was stopped before the key could expire.
    assert_eq!(cluster.leader_name().as_deref(), Some(leader));
    assert!(
        cluster.pg_connect_try(i).await.is_err(),
        "the fenced primary accepts no connection"
    );
}

/// SIGSTOP of the leader's agent for longer than the ttl, with a client writing: its guard stops
/// the primary's postmaster while the leader key still names it (so before the replica can be
/// promoted), with a fast shutdown that completes (the control file says `shut down`: the WAL
/// senders waited for the replica), so the asynchronous replica that takes over has every
/// acknowledged write; after SIGCONT the old leader rejoins as its replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frozen_leader_agent_is_fenced_before_its_key_expires() {
    harness::init();
    let cluster = Cluster::start(2, Options::default());
    let leader = cluster.wait_for_leader().await;
    cluster.wait_for_replicas_streaming(1).await;
    let name = cluster.member(leader).name.clone();
    let replica = 1 - leader;
    let guards = guard_pids(&cluster.member(leader).data_dir);
    assert_eq!(guards.len(), 1, "one guard for {name}: {guards:?}");
    cluster
        .pg_connect(leader)
        .await
        .batch_execute(
            "CREATE TABLE guard_check (id int PRIMARY KEY, note text);
             CREATE TABLE guard_writes (id bigint PRIMARY KEY, at timestamptz)",
        )
        .await
        .unwrap();
    cluster
        .wait_writable(leader, "guard_check", 1, "before the freeze")
        .await;
    cluster.wait_for_row(replica, "guard_check", 1).await;
    let ports: Vec<u16> = (0..cluster.len())
        .map(|i| cluster.member(i).pg_port)
        .collect();
    let writer = Writer::start(&ports, "guard_writes");

    let agent = cluster.agent_pid(leader).expect("leader agent runs");
    let pm = cluster.postmaster_pid(leader).expect("leader postmaster");
    let frozen = Instant::now();
    signal(agent, Signal::SIGSTOP);
    wait_fenced_before_failover(&cluster, leader, pm, &name).await;
    let fenced = frozen.elapsed();
    assert_eq!(guard_pids(&cluster.member(leader).data_dir), guards);
    assert_eq!(
        controldata_field(&cluster.member(leader).data_dir, "Database cluster state"),
        "shut down",
        "the fence was a completed fast shutdown"
    );

    let new = cluster
        .wait_for_leader_except(&[leader], FAILOVER_TIMEOUT)
        .await;
    assert_eq!(new, replica);
    cluster
        .wait_writable(new, "guard_check", 2, "after the failover")
        .await;
    let writes = writer.finish().await;
    assert!(
        writes.acked.len() > 10,
        "the writer wrote: {}",
        writes.acked.len()
    );
    cluster
        .assert_no_acked_write_lost(new, "guard_writes", &writes)
        .await;
    eprintln!(
        "agent frozen (ttl 20, loop_wait 1): primary fenced after {}, {} writable after {}",
        secs(fenced),
        cluster.member(new).name,
        secs(frozen.elapsed())
    );

    signal(agent, Signal::SIGCONT);
    let tl = cluster.primary_timeline(new).await;
    cluster
        .wait_for_streaming_replica(leader, Some(tl), FAILOVER_TIMEOUT)
        .await;
    cluster.wait_for_row(leader, "guard_check", 2).await;
    let log = cluster.agent_log(leader);
    assert!(
        log.contains("the leader key was not renewed in time: stopping PostgreSQL")
            && log.contains("with a fast shutdown"),
        "the guard says why and how it stopped PostgreSQL"
    );
}

/// SIGKILL of the leader's agent: its guard survives it, keeps the lease deadline, stops the
/// primary before the key expires, and exits; the replica takes over and the restarted agent
/// rejoins as its replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guard_survives_the_agents_sigkill_and_fences_at_the_deadline() {
    harness::init();
    let cluster = Cluster::start(2, Options::default());
    let leader = cluster.wait_for_leader().await;
    cluster.wait_for_replicas_streaming(1).await;
    let name = cluster.member(leader).name.clone();
    let data_dir = cluster.member(leader).data_dir.clone();
    let guards = guard_pids(&data_dir);
    assert_eq!(guards.len(), 1, "{guards:?}");
    let pm = cluster.postmaster_pid(leader).expect("leader postmaster");

    cluster.kill_agent(leader);
    assert!(
        pid_alive(guards[0]),
        "the guard survived the agent's SIGKILL"
    );
    wait_fenced_before_failover(&cluster, leader, pm, &name).await;
    cluster
        .wait(
            SHORT_TIMEOUT,
            "the guard to exit after fencing",
            async || {
                ensure!(!pid_alive(guards[0]), "guard {} still runs", guards[0]);
                Ok(())
            },
        )
        .await;

    let new = cluster
        .wait_for_leader_except(&[leader], FAILOVER_TIMEOUT)
        .await;
    cluster.start_agent(leader);
    let tl = cluster.primary_timeline(new).await;
    cluster
        .wait_for_streaming_replica(leader, Some(tl), FAILOVER_TIMEOUT)
        .await;
}

/// SIGKILL of the leader's agent and then of its postmaster, the guard alive (issue 12 item 2):
/// the guard sees both gone and deletes the leader key at once, so the replica takes over long
/// before the lease (ttl 20) could expire; the guard exits, and the restarted agent rejoins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guard_releases_the_key_when_agent_and_postgres_are_gone() {
    harness::init();
    let cluster = Cluster::start(2, Options::default());
    let leader = leader_writing(&cluster, "released").await;
    let replica = 1 - leader;
    let guards = guard_pids(&cluster.member(leader).data_dir);
    assert_eq!(guards.len(), 1, "{guards:?}");
    let pm = cluster.postmaster_pid(leader).expect("leader postmaster");

    let crashed = Instant::now();
    cluster.kill_agent(leader);
    signal(pm, Signal::SIGKILL);
    let new = cluster
        .wait_for_leader_except(&[leader], FAILOVER_TIMEOUT)
        .await;
    let took_over = crashed.elapsed();
    assert_eq!(new, replica);
    cluster.wait_writable(new, "released", 2, "after").await;
    eprintln!(
        "agent and postmaster killed, guard alive (ttl 20): {} leads after {}, writable after {}",
        cluster.member(new).name,
        secs(took_over),
        secs(crashed.elapsed())
    );
    // The key was given back, not left to expire: the lease, renewed within the last second
    // (loop_wait 1), had more than 15 s to run.
    assert!(
        took_over < Duration::from_secs(15),
        "the replica took over after {}: the key expired instead of being released",
        secs(took_over)
    );
    let log = cluster.agent_log(leader);
    assert!(log.contains("leader key released"), "{log}");
    cluster
        .wait(SHORT_TIMEOUT, "the guard to exit", async || {
            ensure!(!pid_alive(guards[0]), "guard {} still runs", guards[0]);
            Ok(())
        })
        .await;
    cluster.start_agent(leader);
    let tl = cluster.primary_timeline(new).await;
    cluster
        .wait_for_streaming_replica(leader, Some(tl), FAILOVER_TIMEOUT)
        .await;
}

/// A replica's guard is never armed and exits with its agent, even a SIGKILLed one; a clean
/// shutdown of the leader (SIGTERM) leaves no guard process; a member with `pgpilot.guard: off`
/// starts none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guards_go_with_their_agents_and_can_be_turned_off() {
    harness::init();
    let options = Options {
        customize: Some(std::sync::Arc::new(|i, doc| {
            if i == 2 {
                doc["pgpilot"] = json!({"guard": "off"});
            }
        })),
        ..Options::default()
    };
    // Member 2 (no guard) joins once 0 or 1 leads.
    let cluster = Cluster::new(3, options);
    cluster.start_agent(0);
    cluster.start_agent(1);
    let leader = cluster.wait_for_leader().await;
    cluster.start_agent(2);
    cluster.wait_for_replicas_streaming(2).await;
    let dir = |i: usize| cluster.member(i).data_dir.clone();
    for i in 0..3 {
        let expected = usize::from(i != 2);
        assert_eq!(guard_pids(&dir(i)).len(), expected, "member {i}");
    }
    assert!(cluster
        .agent_log(2)
        .contains("pgpilot.guard is off: a frozen agent's PostgreSQL stays writable"));

    // A replica's agent killed: its disarmed guard exits, its PostgreSQL keeps running.
    let replica = 1 - leader;
    {
        let guard = guard_pids(&dir(replica))[0];
        let pm = cluster.postmaster_pid(replica).expect("replica postmaster");
        cluster.kill_agent(replica);
        cluster
            .wait(SHORT_TIMEOUT, "the replica's guard to exit", async || {
                ensure!(!pid_alive(guard), "guard {guard} still runs");
                Ok(())
            })
            .await;
        assert_eq!(cluster.postmaster_pid(replica), Some(pm));
        assert!(!cluster
            .agent_log(replica)
            .contains("the leader key was not renewed in time"));
    }

    // The leader shuts down cleanly: PostgreSQL stopped, guard disarmed and gone with the agent.
    let guard = guard_pids(&dir(leader))[0];
    cluster.terminate_agent(leader);
    cluster
        .wait_agent_exit(leader, Duration::from_secs(60))
        .await;
    assert!(!pid_alive(guard), "guard {guard} outlived a clean shutdown");
    assert!(guard_pids(&dir(leader)).is_empty());
    assert!(!cluster
        .agent_log(leader)
        .contains("the leader key was not renewed in time"));
}

/// The fast profile (ttl 8, loop_wait 1, retry_timeout 2), below Patroni's floors: honoured
/// with the guard on. The leader's whole node dies (agent, guard and postmaster SIGKILLed at
/// once) and the replica takes over when the 8 s lease is gone; the time is printed (a
/// benchmark figure, not asserted). Without the guard the same configuration is refused at
/// start, naming the key and the rule.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_ttl_is_honoured_only_with_the_guard() {
    harness::init();
    let fast = Options {
        ttl: 8,
        loop_wait: 1,
        retry_timeout: 2,
        ..Options::default()
    };
    let cluster = Cluster::start(2, fast.clone());
    let leader = leader_writing(&cluster, "fast").await;
    let replica = 1 - leader;
    cluster.wait_for_row(replica, "fast", 1).await;
    for i in [leader, replica] {
        let log = cluster.agent_log(i);
        assert!(!log.contains("is below the minimum"), "{log}");
    }

    let guards = guard_pids(&cluster.member(leader).data_dir);
    assert_eq!(guards.len(), 1, "{guards:?}");
    let pm = cluster.postmaster_pid(leader).expect("leader postmaster");
    let crashed = Instant::now();
    cluster.kill_agent(leader);
    signal(guards[0], Signal::SIGKILL);
    signal(pm, Signal::SIGKILL);
    let new = cluster
        .wait_for_leader_except(&[leader], FAILOVER_TIMEOUT)
        .await;
    assert_eq!(new, replica);
    cluster.wait_writable(new, "fast", 2, "after").await;
    eprintln!(
        "whole leader node killed (ttl 8, loop_wait 1, retry_timeout 2): {} writable after {}",
        cluster.member(new).name,
        secs(crashed.elapsed())
    );
    drop(cluster);

    // The same timings with the guard off: Patroni's floors apply (ttl 20, retry_timeout 3),
    // with the reason in the log, and `--validate-config` refuses the file.
    let unguarded = Options {
        customize: Some(std::sync::Arc::new(|_, doc| {
            doc["pgpilot"] = json!({"guard": "off"});
        })),
        ..fast
    };
    let cluster = Cluster::start(1, unguarded);
    cluster.wait_for_leader().await;
    let log = cluster.agent_log(0);
    assert!(
        log.contains(
            "ttl=8 is below the minimum 20; using 20 (a shorter one needs pgpilot's guard"
        ),
        "{log}"
    );
    let config = cluster.member(0).config_path.clone();
    let out = harness::run_agent_cli(
        &["--validate-config", config.to_str().unwrap()],
        cluster.dir(),
    );
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("bootstrap.dcs.ttl"), "{text}");
    assert!(text.contains("needs pgpilot's guard"), "{text}");
}

/// The lease keeper (issue 12 item 3): a cycle that runs longer than the ttl keeps the key. Here
/// `pg_ctl promote` is made to take 12 s at ttl 8 (a `pg_ctl` wrapper in `bin_dir`), so the
/// replica that wins the race after the leader's node is killed stays in its promoting cycle
/// past its lease. The keeper renews the lease and feeds the guard meanwhile: the key never
/// leaves the winner, its PostgreSQL is not fenced, and it finishes promoting. Without the keeper
/// the lease lapses after 8 s (the guard fences the promotion at 7 s) and the third member races.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promotion_slower_than_the_ttl_keeps_the_key() {
    harness::init();
    let bin = slow_promote_bin_dir(12);
    let cluster = Cluster::start(
        3,
        Options {
            ttl: 8,
            loop_wait: 1,
            retry_timeout: 2,
            bin_dir: bin.path().to_path_buf(),
            ..Options::default()
        },
    );
    let leader = leader_writing(&cluster, "slow").await;

    let guards = guard_pids(&cluster.member(leader).data_dir);
    let pm = cluster.postmaster_pid(leader).expect("leader postmaster");
    cluster.kill_agent(leader);
    for pid in guards.into_iter().chain([pm]) {
        signal(pid, Signal::SIGKILL);
    }
    let new = cluster
        .wait_for_leader_except(&[leader], FAILOVER_TIMEOUT)
        .await;
    let name = cluster.member(new).name.clone();
    let won = Instant::now();
    let new_pm = cluster
        .postmaster_pid(new)
        .expect("the winner's postmaster");
    // Through the whole promotion (12 s) and a little after: one holder, never fenced.
    while won.elapsed() < Duration::from_secs(16) {
        assert_eq!(
            cluster.leader_name().as_deref(),
            Some(name.as_str()),
            "the key left the promoting member after {}",
            secs(won.elapsed())
        );
        assert!(
            pid_alive(new_pm),
            "the promoting member's PostgreSQL was fenced"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    cluster.wait_writable(new, "slow", 2, "after").await;
    let log = cluster.agent_log(new);
    assert!(log.contains("lease renewed by the lease keeper"), "{log}");
    assert_eq!(
        cluster.primary_timeline(new).await,
        2,
        "one promotion, no second one"
    );
}

/// A `bin_dir` whose `pg_ctl promote` sleeps `delay` seconds first; every other program is the
/// harness's PostgreSQL 15 (symbolic links, which PostgreSQL resolves to find its files).
fn slow_promote_bin_dir(delay: u32) -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("pgpilot-slow-promote-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let real = std::path::Path::new(harness::PG_BIN_DIR);
    for entry in std::fs::read_dir(real).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() != "pg_ctl" {
            std::os::unix::fs::symlink(entry.path(), dir.path().join(entry.file_name())).unwrap();
        }
    }
    let wrapper = dir.path().join("pg_ctl");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nif [ \"$1\" = promote ]; then sleep {delay}; fi\nexec {} \"$@\"\n",
            real.join("pg_ctl").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}
