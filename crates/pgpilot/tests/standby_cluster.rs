//! Standby cluster (`standby_cluster` in the dynamic configuration): a second cluster that
//! replicates a remote primary. Its leader is a standby leader that never promotes, its other
//! members replicate from the standby leader, a new standby leader takes over when it dies, and
//! `promote-cluster` turns it into an ordinary writable primary.

mod harness;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{ensure, Context};
use harness::{pgpilotctl, Cluster, Options, BOOTSTRAP_TIMEOUT, FAILOVER_TIMEOUT, SHORT_TIMEOUT};
use serde_json::{json, Value};

/// The member of `standby` holding the leader key whose `/patroni` says a running
/// `standby_leader` in recovery on `timeline`, other than the members in `not`.
async fn wait_for_standby_leader(
    standby: &Cluster,
    not: &[usize],
    timeline: u64,
    timeout: Duration,
) -> usize {
    standby
        .wait(timeout, "a running standby leader", async || {
            let i = standby.leader_index().context("no leader key")?;
            ensure!(!not.contains(&i), "leader key still on {i}");
            let st = standby.patroni(i).await?;
            ensure!(
                st["role"] == "standby_leader" && st["state"] == "running",
                "{}: {st}",
                standby.member(i).name
            );
            ensure!(st["timeline"] == timeline, "timeline: {st}");
            ensure!(standby.in_recovery(i).await?, "not in recovery");
            Ok(i)
        })
        .await
}

/// Permanent physical slots kept to one kind of cluster by `cluster_type`, the same in the
/// source and the standby cluster.
fn typed_slots() -> Value {
    json!({
        "only_in_primary": {"type": "physical", "cluster_type": "primary"},
        "only_in_standby": {"type": "physical", "cluster_type": "standby"},
    })
}

/// Waits until member `i` has the slot `present` and checks it lacks `absent`.
async fn typed_slot(cluster: &Cluster, i: usize, present: &str, absent: &str) {
    let names = cluster
        .wait(SHORT_TIMEOUT, &format!("slot {present}"), async || {
            let rows = cluster
                .pg_connect(i)
                .await
                .query("SELECT slot_name::text FROM pg_replication_slots", &[])
                .await?;
            let names: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
            ensure!(names.iter().any(|n| n == present), "{names:?}");
            Ok(names)
        })
        .await;
    assert!(!names.iter().any(|n| n == absent), "{names:?}");
}

/// A one-member cluster `scope` whose primary holds `table (id int PRIMARY KEY, note text)`
/// with row 1; also returns its PostgreSQL port.
async fn source_cluster(scope: &str, table: &str, archive: bool) -> (Cluster, u16) {
    let source = Cluster::start(
        1,
        Options {
            scope: scope.into(),
            customize: Some(Arc::new(move |_, doc: &mut Value| {
                doc["bootstrap"]["dcs"]["slots"] = typed_slots();
                if archive {
                    // Into `archive/` beside the data directory (the command runs in it).
                    let params = &mut doc["bootstrap"]["dcs"]["postgresql"]["parameters"];
                    params["archive_mode"] = json!("on");
                    params["archive_command"] = json!("mkdir -p ../archive && cp %p ../archive/%f");
                }
            })),
            ..Options::default()
        },
    );
    assert_eq!(source.wait_for_leader().await, 0);
    source
        .pg_connect(0)
        .await
        .batch_execute(&format!(
            "CREATE TABLE {table} (id int PRIMARY KEY, note text);
             INSERT INTO {table} VALUES (1, 'written in {scope}');"
        ))
        .await
        .unwrap();
    let port = source.member(0).pg_port;
    (source, port)
}

/// A cluster of `n` members `scope` on `source`'s etcd whose `bootstrap.dcs.standby_cluster`
/// is `standby_cluster`.
fn standby_cluster(source: &Cluster, scope: &str, n: usize, standby_cluster: Value) -> Cluster {
    Cluster::start(
        n,
        Options {
            scope: scope.into(),
            shared_etcd: Some(source.etcd.clone()),
            customize: Some(Arc::new(move |_, doc: &mut Value| {
                doc["bootstrap"]["dcs"]["standby_cluster"] = standby_cluster.clone();
                doc["bootstrap"]["dcs"]["slots"] = typed_slots();
            })),
            ..Options::default()
        },
    )
}

/// A source cluster (one member) and a standby cluster of two members on the same etcd with
/// `bootstrap.dcs.standby_cluster` pointing at the source: the standby cluster is a copy of
/// the source (same system identifier, no initdb) whose leader is a `standby_leader` in recovery
/// answering `/standby-leader` but not `/primary`; data written on the source reaches both
/// members; when the standby leader's agent and postmaster are killed, the other member becomes
/// standby leader without promotion (same timeline) and keeps receiving the source's data; then
/// `pgpilotctl promote-cluster` makes it a writable primary on a new timeline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_cluster_replicates_the_source_fails_over_and_is_promoted() {
    harness::init();
    let (source, source_port) = source_cluster("source", "standby_check", false).await;
    let source_sysid = source.system_identifier(0).await;
    let standby = standby_cluster(
        &source,
        "standby",
        2,
        json!({
            "host": "127.0.0.1",
            "port": source_port,
            "restore_command": "false",
            "recovery_min_apply_delay": 0,
        }),
    );
    let first = wait_for_standby_leader(&standby, &[], 1, BOOTSTRAP_TIMEOUT).await;
    let other = 1 - first;
    let log = standby.agent_log(first);
    assert!(
        log.contains("trying to bootstrap a new standby leader"),
        "{log}"
    );
    assert!(!log.contains("initdb"), "a standby leader runs no initdb");
    // A copy of the source, not a new cluster.
    assert_eq!(standby.system_identifier(first).await, source_sysid);
    assert_eq!(standby.etcd_get("initialize"), Some(source_sysid.clone()));
    standby.wait_for_row(first, "standby_check", 1).await;
    // `cluster_type`: each cluster keeps only the permanent slot meant for its kind.
    typed_slot(&source, 0, "only_in_primary", "only_in_standby").await;
    typed_slot(&standby, first, "only_in_standby", "only_in_primary").await;

    // The other member replicates from the standby leader as an ordinary replica.
    standby
        .wait(SHORT_TIMEOUT, "the other member to stream", async || {
            let st = standby.patroni(other).await?;
            ensure!(st["role"] == "replica" && st["state"] == "running", "{st}");
            ensure!(st["replication_state"] == "streaming", "{st}");
            Ok(())
        })
        .await;
    standby.wait_for_walsenders(first, &[other]).await;
    standby.wait_for_row(other, "standby_check", 1).await;

    // Health endpoints: the standby leader is the leader, not a primary.
    for (path, want) in [
        ("/standby-leader", 200),
        ("/leader", 200),
        ("/primary", 503),
        ("/replica", 503),
    ] {
        let (code, body) = standby.api_get(first, path).await.unwrap();
        assert_eq!(code, want, "GET {path} on the standby leader: {body}");
    }
    let (code, _) = standby.api_get(other, "/replica").await.unwrap();
    assert_eq!(code, 200, "GET /replica on the standby replica");
    let (code, _) = standby.api_get(other, "/standby-leader").await.unwrap();
    assert_eq!(code, 503, "GET /standby-leader on the standby replica");
    let (code, body) = standby.api_get(first, "/cluster").await.unwrap();
    assert_eq!(code, 200);
    let roles: Vec<(String, String)> = body["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["name"].as_str().unwrap_or("").to_string(),
                m["role"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert!(
        roles.contains(&(standby.member(first).name.clone(), "standby_leader".into())),
        "{body}"
    );
    assert!(
        roles.contains(&(standby.member(other).name.clone(), "replica".into())),
        "{body}"
    );

    // New data on the source reaches both members.
    source
        .pg_connect(0)
        .await
        .execute(
            "INSERT INTO standby_check VALUES (2, 'after bootstrap')",
            &[],
        )
        .await
        .unwrap();
    standby.wait_for_row(first, "standby_check", 2).await;
    standby.wait_for_row(other, "standby_check", 2).await;

    // The standby leader dies: the other member takes the key as standby leader, without
    // promotion (same timeline), following the source.
    standby.kill_agent(first);
    assert!(standby.kill_postmaster(first).is_some());
    let second = wait_for_standby_leader(&standby, &[first], 1, FAILOVER_TIMEOUT).await;
    assert_eq!(second, other);
    assert!(
        standby
            .agent_log(second)
            .contains("promoted self to a standby leader by acquiring session lock"),
        "{}",
        standby.agent_log(second)
    );
    source
        .pg_connect(0)
        .await
        .execute(
            "INSERT INTO standby_check VALUES (3, 'after the failover')",
            &[],
        )
        .await
        .unwrap();
    standby.wait_for_row(second, "standby_check", 3).await;
    let (code, body) = standby.api_get(second, "/standby-leader").await.unwrap();
    assert_eq!(code, 200, "{body}");

    // promote-cluster: the standby leader becomes a writable primary on a new timeline.
    let (code, out) = pgpilotctl(
        &standby.member(second).config_path,
        &["promote-cluster", "--force"],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    let tl = standby.primary_timeline(second).await;
    assert_eq!(tl, 2, "promotion starts a new timeline");
    standby
        .wait_writable(second, "standby_check", 4, "after promote-cluster")
        .await;
    let (code, _) = standby.api_get(second, "/primary").await.unwrap();
    assert_eq!(code, 200);
    let (code, _) = standby.api_get(second, "/standby-leader").await.unwrap();
    assert_eq!(code, 503);
}

/// The data-centre switch Patroni's docs describe: `demote-cluster` turns the source cluster's
/// primary into a standby leader following the standby cluster (which cascades the source's
/// WAL, shutdown checkpoint included), under the same leader key; `promote-cluster` then makes
/// the former standby cluster the primary one, and the demoted source follows it onto the new
/// timeline without pg_rewind. dc1 archives its WAL: its shutdown checkpoint's file is
/// archived by the agent at the demotion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn demote_cluster_then_promote_cluster_switches_the_roles_of_two_clusters() {
    harness::init();
    let (source, source_port) = source_cluster("dc1", "dc_check", true).await;
    let standby = standby_cluster(
        &source,
        "dc2",
        1,
        json!({"host": "127.0.0.1", "port": source_port}),
    );
    assert_eq!(
        wait_for_standby_leader(&standby, &[], 1, BOOTSTRAP_TIMEOUT).await,
        0
    );
    standby.wait_for_row(0, "dc_check", 1).await;

    // demote-cluster on dc1: its primary becomes a standby leader following dc2, keeping the key.
    let standby_port = standby.member(0).pg_port.to_string();
    let (code, out) = pgpilotctl(
        &source.member(0).config_path,
        &[
            "demote-cluster",
            "--host",
            "127.0.0.1",
            "--port",
            &standby_port,
            "--force",
        ],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        wait_for_standby_leader(&source, &[], 1, FAILOVER_TIMEOUT).await,
        0
    );
    let log = source.agent_log(0);
    assert!(log.contains("demoting to a standby cluster"));
    // Archiving is on in dc1: the shutdown checkpoint's WAL file, which the archiver never
    // sends (it is not complete), was archived by the agent, as Patroni does.
    let archived = log
        .lines()
        .filter(|l| l.contains(", the WAL file of the shutdown checkpoint"))
        .find_map(|l| l.split("archiving ").nth(1)?.split(',').next())
        .unwrap_or_else(|| panic!("no shutdown checkpoint archived:\n{log}"));
    let archive = source.member(0).data_dir.parent().unwrap().join("archive");
    assert!(
        archive.join(archived).is_file(),
        "{archived} is not in {}",
        archive.display()
    );
    let (code, _) = source.api_get(0, "/primary").await.unwrap();
    assert_eq!(code, 503, "the demoted primary takes no writes");

    // promote-cluster on dc2: the primary is now there, on a new timeline, and dc1 follows it.
    let (code, out) = pgpilotctl(
        &standby.member(0).config_path,
        &["promote-cluster", "--force"],
    )
    .await;
    assert_eq!(code, 0, "{out}");
    assert_eq!(standby.primary_timeline(0).await, 2);
    standby
        .wait_writable(0, "dc_check", 2, "written in dc2")
        .await;
    source.wait_for_row(0, "dc_check", 2).await;
    let st = source.patroni(0).await.unwrap();
    assert_eq!(st["role"], "standby_leader", "{st}");
}

/// A standby cluster whose remote primary can not be copied (nothing listens at `host:port`):
/// the bootstrap fails loudly as a failed initdb does. The agent exits non-zero, `/initialize`
/// is removed, no leader key is taken, and no data directory (let alone an initdb'd writable
/// cluster) is left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_leader_that_can_not_copy_the_remote_fails_the_bootstrap() {
    harness::init();
    let closed = harness::free_port();
    let options = Options {
        scope: "unreachable".into(),
        customize: Some(Arc::new(move |_, doc: &mut Value| {
            doc["bootstrap"]["dcs"]["standby_cluster"] =
                json!({"host": "127.0.0.1", "port": closed});
        })),
        ..Options::default()
    };
    let cluster = Cluster::new(1, options);
    cluster.start_agent(0);
    let status = cluster.wait_agent_exit(0, BOOTSTRAP_TIMEOUT).await;
    assert!(!status.success(), "a failed bootstrap is fatal: {status}");
    assert_eq!(cluster.etcd_get("initialize"), None);
    assert_eq!(cluster.etcd_get("leader"), None);
    let m = cluster.member(0);
    assert!(
        !m.data_dir.join("PG_VERSION").exists(),
        "no data directory is left behind"
    );
    let log = cluster.agent_log(0);
    for sentence in [
        "trying to bootstrap a new standby leader",
        "removing initialize key after failed attempt to bootstrap the cluster",
        "Failed to bootstrap cluster",
    ] {
        assert!(log.contains(sentence), "{sentence:?} missing in:\n{log}");
    }
    assert!(!log.contains("initialized a new cluster"), "{log}");
}
