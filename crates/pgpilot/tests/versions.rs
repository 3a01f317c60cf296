//! The version matrix: every PostgreSQL major pgpilot supports (12 to 18) bootstraps, streams
//! to two replicas, switches over and fails over with the old leader rejoining (pg_rewind, or a
//! re-clone where no pg_rewind of that major exists), with real servers.
//!
//! Binaries: Debian's PostgreSQL 15, the others installed by `tests/pg-versions/fetch.sh` into
//! `$PGPILOT_PG_ROOT` (default `/opt/pgpilot-pg`)`/<major>/bin`. A major whose binaries are
//! absent is skipped with the reason printed, except under CI (`CI=true`), which installs them:
//! there a missing major fails.

mod harness;

use std::path::PathBuf;
use std::time::Instant;

use harness::{secs, Cluster, Options, FAILOVER_TIMEOUT, PG_BIN_DIR, SHORT_TIMEOUT};
use serde_json::json;

/// `bin_dir` of `major`, or why it is not there.
fn bin_dir(major: u32) -> Result<PathBuf, String> {
    let dir = if major == 15 {
        PathBuf::from(PG_BIN_DIR)
    } else {
        let root = std::env::var_os("PGPILOT_PG_ROOT")
            .map_or_else(|| PathBuf::from("/opt/pgpilot-pg"), PathBuf::from);
        root.join(major.to_string()).join("bin")
    };
    for tool in [
        "initdb",
        "pg_ctl",
        "postgres",
        "pg_controldata",
        "pg_basebackup",
    ] {
        if !dir.join(tool).exists() {
            return Err(format!(
                "no {tool} in {} (tests/pg-versions/fetch.sh installs it)",
                dir.display()
            ));
        }
    }
    Ok(dir)
}

/// `bin_dir` of `major`, or `None` (skipped, reason printed) when its binaries are absent
/// outside CI; under `CI=true` (which installs them) a missing major fails the test.
fn bin_dir_or_skip(major: u32) -> Option<PathBuf> {
    match bin_dir(major) {
        Ok(d) => Some(d),
        Err(why) if std::env::var("CI").is_ok_and(|v| v == "true") => {
            panic!("PostgreSQL {major}: {why}; CI must test every major")
        }
        Err(why) => {
            eprintln!("SKIPPED PostgreSQL {major}: {why}");
            None
        }
    }
}

/// The cluster of one major and whether it has a pg_rewind, or `None` when skipped.
fn cluster_of(major: u32) -> Option<(Cluster, bool)> {
    harness::init();
    let dir = bin_dir_or_skip(major)?;
    // Without a pg_rewind of its own major a former primary can only rejoin by re-cloning.
    let can_rewind = dir.join("pg_rewind").exists();
    let mut options = Options {
        scope: format!("pgpilot-pg{major}"),
        bin_dir: dir,
        ..Options::default()
    };
    if !can_rewind {
        options.customize = Some(std::sync::Arc::new(|_, doc| {
            doc["postgresql"]["remove_data_directory_on_rewind_failure"] = json!(true);
        }));
    }
    Some((Cluster::start(3, options), can_rewind))
}

/// Bootstrap, two streaming replicas (in the leader's `pg_stat_replication`), a switchover to a
/// named candidate, a crash failover (SIGKILL of agent and postmaster) and the old leader's
/// rejoin, with a row written at each step read back on every member.
async fn matrix(major: u32) {
    let Some((cluster, can_rewind)) = cluster_of(major) else {
        return;
    };
    let started = Instant::now();
    let first = cluster.wait_for_leader().await;
    let replicas: Vec<usize> = (0..3).filter(|&i| i != first).collect();
    cluster.wait_for_replicas_streaming(2).await;
    cluster.wait_for_walsenders(first, &replicas).await;
    let client = cluster.pg_connect(first).await;
    let version: String = client
        .query_one("SHOW server_version_num", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        version.parse::<u32>().unwrap() / 10_000,
        major,
        "server_version_num {version}"
    );
    client
        .batch_execute("CREATE TABLE matrix (id int PRIMARY KEY, note text); INSERT INTO matrix VALUES (1, 'bootstrap')")
        .await
        .unwrap();
    drop(client);
    for &r in &replicas {
        cluster.wait_for_row(r, "matrix", 1).await;
    }
    eprintln!(
        "PostgreSQL {major}: bootstrap and two streaming replicas after {}",
        secs(started.elapsed())
    );

    // Switchover to a named candidate; the old leader and the third member follow it.
    let t = Instant::now();
    let candidate = replicas[0];
    let third = replicas[1];
    cluster.switchover(first, Some(candidate)).await;
    let tl = cluster.primary_timeline(candidate).await;
    for i in [first, third] {
        cluster
            .wait_for_streaming_replica(i, Some(tl), FAILOVER_TIMEOUT)
            .await;
    }
    cluster
        .wait_for_walsenders(candidate, &[first, third])
        .await;
    cluster.wait_writable(candidate, "matrix", 2, "").await;
    for i in [first, third] {
        cluster.wait_for_row(i, "matrix", 2).await;
    }
    // Before 13 primary_conninfo is not reloadable: the third member restarted to follow.
    let log = cluster.agent_log(third);
    assert_eq!(
        log.contains("reads primary_conninfo only at start"),
        major < 13,
        "{} restarts to follow a new leader exactly before 13; its log:\n{log}",
        cluster.member(third).name
    );
    eprintln!(
        "PostgreSQL {major}: switchover, both others streaming again after {}",
        secs(t.elapsed())
    );

    // Crash failover: the leader's agent and postmaster die together.
    let t = Instant::now();
    let old = candidate;
    cluster.kill_agent(old);
    assert!(cluster.kill_postmaster(old).is_some());
    let new = cluster
        .wait_for_leader_except(&[old], FAILOVER_TIMEOUT)
        .await;
    cluster.wait_writable(new, "matrix", 3, "").await;
    let other = [first, third].into_iter().find(|&i| i != new).unwrap();
    let tl = cluster.primary_timeline(new).await;
    cluster
        .wait_for_streaming_replica(other, Some(tl), FAILOVER_TIMEOUT)
        .await;
    eprintln!(
        "PostgreSQL {major}: failover to {}, writable and followed after {}",
        cluster.member(new).name,
        secs(t.elapsed())
    );

    // The old leader rejoins.
    let t = Instant::now();
    cluster.start_agent(old);
    cluster
        .wait_for_streaming_replica(old, Some(tl), FAILOVER_TIMEOUT)
        .await;
    cluster.wait_for_walsenders(new, &[other, old]).await;
    cluster.wait_for_row(old, "matrix", 3).await;
    cluster.wait_for_row(other, "matrix", 3).await;
    let log = cluster.agent_log_since_last_start(old);
    let how = if can_rewind {
        assert!(
            log.contains("pg_rewind finished"),
            "rejoined through pg_rewind; its log:\n{log}"
        );
        "pg_rewind"
    } else {
        assert!(
            log.contains("removing data directory because pg_rewind failed"),
            "rejoined by re-cloning; its log:\n{log}"
        );
        "re-clone (no pg_rewind of this major)"
    };
    eprintln!(
        "PostgreSQL {major}: old leader rejoined through {how} after {}; whole matrix {}",
        secs(t.elapsed()),
        secs(started.elapsed())
    );
}

/// Regression (issue 17): with a pg_rewind of another major in `bin_dir`, the agent logged
/// "pg_rewind failed" and then started the diverged data directory as a replica anyway. The old
/// leader of a crash failover now refuses that pg_rewind, says why, and leaves PostgreSQL
/// stopped (`remove_data_directory_on_rewind_failure` is off).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pg_rewind_of_another_major_is_refused_and_the_diverged_directory_stays_stopped() {
    harness::init();
    let Some(rewind14) = bin_dir_or_skip(14).map(|d| d.join("pg_rewind")) else {
        return;
    };
    // Debian's 15 with 14's pg_rewind, readable by the unprivileged test user.
    let mixed = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(PG_BIN_DIR).unwrap() {
        let entry = entry.unwrap();
        if entry.file_name() != "pg_rewind" {
            std::os::unix::fs::symlink(entry.path(), mixed.path().join(entry.file_name())).unwrap();
        }
    }
    std::os::unix::fs::symlink(&rewind14, mixed.path().join("pg_rewind")).unwrap();
    std::fs::set_permissions(
        mixed.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let cluster = Cluster::start(
        2,
        Options {
            bin_dir: mixed.path().to_path_buf(),
            ..Options::default()
        },
    );
    let old = cluster.wait_for_leader().await;
    let replica = 1 - old;
    cluster.wait_for_walsenders(old, &[replica]).await;
    cluster
        .pg_connect(old)
        .await
        .batch_execute(
            "CREATE TABLE rewind_check (id int PRIMARY KEY, note text); \
             INSERT INTO rewind_check VALUES (0, 'before')",
        )
        .await
        .unwrap();
    cluster.wait_for_row(replica, "rewind_check", 0).await;
    cluster.kill_agent(old);
    assert!(cluster.kill_postmaster(old).is_some());
    cluster
        .wait_for_leader_except(&[old], FAILOVER_TIMEOUT)
        .await;
    cluster.wait_writable(replica, "rewind_check", 1, "").await;

    cluster.start_agent(old);
    let name = cluster.member(old).name.clone();
    cluster
        .wait(
            FAILOVER_TIMEOUT,
            &format!("{name} to refuse the pg_rewind of 14"),
            async || {
                let log = cluster.agent_log_since_last_start(old);
                anyhow::ensure!(
                    log.contains("not starting PostgreSQL as a replica"),
                    "not yet"
                );
                Ok(log)
            },
        )
        .await;
    // A few more cycles: still stopped.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let log = cluster.agent_log_since_last_start(old);
    assert!(
        log.contains("is PostgreSQL 14 and the data directory PostgreSQL 15"),
        "the reason is logged:\n{log}"
    );
    assert!(!log.contains("starting as a secondary"), "{log}");
    assert_eq!(cluster.postmaster_pid(old), None, "{log}");
}

/// A data directory of PostgreSQL 15 under an agent whose `bin_dir` holds 16 is refused with
/// both majors named in the agent's log, and never started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_of_another_major_than_bin_dir_is_refused() {
    harness::init();
    let Some(dir16) = bin_dir_or_skip(16) else {
        return;
    };
    let cluster = Cluster::new(
        1,
        Options {
            bin_dir: dir16,
            ..Options::default()
        },
    );
    // Made by Debian's 15.
    cluster.member(0).standalone();
    cluster.start_agent(0);
    // Not `cluster.wait`: whether the agent keeps running after the refusal is not the point.
    let log = harness::wait_for(
        SHORT_TIMEOUT,
        "the refusal in the agent's log",
        async || {
            let log = cluster.agent_log(0);
            anyhow::ensure!(log.contains("is of PostgreSQL 15 but bin_dir"), "not yet");
            Ok(log)
        },
    )
    .await;
    assert!(log.contains("holds PostgreSQL 16"), "{log}");
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(cluster.postmaster_pid(0), None, "{log}");
    // Retried once per loop_wait (1 s), not in a tight loop (it was ~60 times a second).
    let log = cluster.agent_log(0);
    let refusals = log.matches("is of PostgreSQL 15 but bin_dir").count();
    assert!(refusals <= 6, "{refusals} refusals in about 3 s:\n{log}");
}

/// PostgreSQL 12: `wal_keep_segments`, no `written_lsn`, restart to follow, no pg_rewind here.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_12_bootstraps_replicates_switches_over_and_fails_over() {
    matrix(12).await;
}

/// PostgreSQL 13 (no pg_rewind of 13 is packaged here: the old leader re-clones).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_13_bootstraps_replicates_switches_over_and_fails_over() {
    matrix(13).await;
}

/// PostgreSQL 14.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_14_bootstraps_replicates_switches_over_and_fails_over() {
    matrix(14).await;
}

/// PostgreSQL 15 (Debian's).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_15_bootstraps_replicates_switches_over_and_fails_over() {
    matrix(15).await;
}

/// PostgreSQL 16.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_16_bootstraps_replicates_switches_over_and_fails_over() {
    matrix(16).await;
}

/// PostgreSQL 17.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_17_bootstraps_replicates_switches_over_and_fails_over() {
    matrix(17).await;
}

/// PostgreSQL 18.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_18_bootstraps_replicates_switches_over_and_fails_over() {
    matrix(18).await;
}
