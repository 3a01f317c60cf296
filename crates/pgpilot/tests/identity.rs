//! Identity: which member an agent is, and which cluster a data directory belongs to. An agent
//! never takes over a name that is in use, adopts a PostgreSQL it finds running, and never
//! touches a data directory of another cluster.

mod harness;

use std::time::Instant;

use harness::{controldata_system_identifier, secs, Cluster, Options, SHORT_TIMEOUT};

/// A second agent with the name of a running member exits non-zero with Patroni's message and
/// touches nothing; the running member keeps leading.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_agent_with_a_running_members_name_refuses_to_start() {
    harness::init();
    let mut cluster = Cluster::start(1, Options::default());
    assert_eq!(cluster.wait_for_leader().await, 0);
    let name = cluster.member(0).name.clone();

    let dup = cluster.add_member(Some(&name));
    cluster.start_agent(dup);
    let status = cluster.wait_agent_exit(dup, SHORT_TIMEOUT).await;
    let log = cluster.agent_log(dup);
    assert!(
        !status.success(),
        "the duplicate must fail, it exited with {status}:\n{log}"
    );
    assert!(
        log.contains(&format!(
            "Can't start; there is already a node named '{name}' running"
        )),
        "Patroni's message in the log:\n{log}"
    );
    let data_dir = &cluster.member(dup).data_dir;
    assert!(
        !data_dir.exists() || std::fs::read_dir(data_dir).unwrap().next().is_none(),
        "the duplicate created a data directory"
    );

    // The original member is unaffected.
    assert_eq!(cluster.leader_name().as_deref(), Some(name.as_str()));
    let st = cluster.patroni(0).await.unwrap();
    assert_eq!(
        (st["role"].as_str(), st["state"].as_str()),
        (Some("primary"), Some("running"))
    );
    let members = cluster.etcd.list(&cluster.key("members/")).unwrap();
    assert_eq!(members.len(), 1, "{members:?}");
    let member: serde_json::Value = serde_json::from_str(&members[0].value).unwrap();
    assert_eq!(
        member["api_url"],
        format!("http://127.0.0.1:{}/patroni", cluster.member(0).api_port),
        "the member key still points at the original"
    );
}

/// An agent started beside a PostgreSQL that a DBA made and started by hand, with an empty
/// etcd, adopts it: it becomes leader without initdb (same system identifier, data kept), writes
/// `/initialize`, and a second member clones from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_adopts_a_running_standalone_postgresql() {
    harness::init();
    let cluster = Cluster::new(2, Options::default());
    assert_eq!(cluster.etcd.list("/").unwrap(), [], "etcd starts empty");

    let pg = cluster.member(0).standalone();
    pg.start();
    let sysid = pg.system_identifier();
    let client = pg.connect().await;
    client
        .batch_execute(
            "CREATE TABLE adopted (id int PRIMARY KEY, note text);
             INSERT INTO adopted VALUES (1, 'written before pgpilot');",
        )
        .await
        .unwrap();
    drop(client);
    pg.create_replication_role().await;

    let started = Instant::now();
    cluster.start_agent(0);
    assert_eq!(cluster.wait_for_leader().await, 0);
    eprintln!(
        "adopted the running PostgreSQL after {}",
        secs(started.elapsed())
    );
    assert_eq!(cluster.system_identifier(0).await, sysid, "no new initdb");
    assert_eq!(cluster.etcd_get("initialize"), Some(sysid.clone()));
    let client = cluster.pg_connect(0).await;
    let note: String = client
        .query_one("SELECT note FROM adopted WHERE id = 1", &[])
        .await
        .expect("the existing row survived")
        .get(0);
    assert_eq!(note, "written before pgpilot");
    client
        .execute(
            "INSERT INTO adopted VALUES (2, 'written under pgpilot')",
            &[],
        )
        .await
        .unwrap();

    // The adopted cluster is a real HA cluster: a new member clones it and streams.
    cluster.start_agent(1);
    cluster
        .wait_for_streaming_replica(1, None, harness::BOOTSTRAP_TIMEOUT)
        .await;
    cluster.wait_for_walsenders(0, &[1]).await;
    cluster.wait_for_row(1, "adopted", 1).await;
    cluster.wait_for_row(1, "adopted", 2).await;
    assert_eq!(cluster.system_identifier(1).await, sysid);
}

/// A data directory of another cluster (system identifier differs from `/initialize`) is
/// refused: the agent exits non-zero with `system ID mismatch` and the directory is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_of_another_cluster_is_refused_and_left_untouched() {
    harness::init();
    let mut cluster = Cluster::start(1, Options::default());
    assert_eq!(cluster.wait_for_leader().await, 0);
    let cluster_sysid = cluster.system_identifier(0).await;
    assert_eq!(cluster.etcd_get("initialize"), Some(cluster_sysid.clone()));

    let stranger = cluster.add_member(None);
    let foreign = cluster.member(stranger).standalone();
    let foreign_sysid = foreign.system_identifier();
    assert_ne!(foreign_sysid, cluster_sysid);
    let before = harness::dir_fingerprint(&foreign.data_dir);

    cluster.start_agent(stranger);
    let status = cluster.wait_agent_exit(stranger, SHORT_TIMEOUT).await;
    let log = cluster.agent_log(stranger);
    assert!(
        !status.success(),
        "the agent must refuse, it exited with {status}:\n{log}"
    );
    assert!(
        log.contains("system ID mismatch"),
        "Patroni's message in the log:\n{log}"
    );

    assert_eq!(
        cluster.postmaster_pid(stranger),
        None,
        "the foreign PostgreSQL was not started"
    );
    let after = harness::dir_fingerprint(&foreign.data_dir);
    let changed: Vec<_> = before
        .keys()
        .chain(after.keys())
        .filter(|k| before.get(*k) != after.get(*k))
        .collect();
    assert!(
        changed.is_empty(),
        "the foreign data directory was modified: {changed:?}"
    );
    assert_eq!(
        controldata_system_identifier(&foreign.data_dir),
        foreign_sysid
    );

    // The cluster is unaffected.
    assert_eq!(cluster.etcd_get("initialize"), Some(cluster_sysid));
    assert_eq!(
        cluster.leader_name().as_deref(),
        Some(cluster.member(0).name.as_str())
    );
}
