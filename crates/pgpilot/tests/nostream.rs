//! The `nostream` tag (Patroni's): the replica is cloned from the leader but never streams —
//! no `primary_conninfo`, no slot on the leader — and follows through `restore_command` from
//! the WAL archive.

mod harness;

use std::sync::Arc;

use anyhow::ensure;
use harness::{Cluster, Options, FAILOVER_TIMEOUT};
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nostream_replica_recovers_from_the_archive_only() {
    harness::init();
    let archive = tempfile::Builder::new()
        .prefix("pgpilot-archive-")
        .tempdir()
        .unwrap();
    let dir = archive.path().display().to_string();
    let mut options = Options::default();
    let params = &mut options.dcs_parameters;
    params.insert("archive_mode".into(), json!("on"));
    params.insert(
        "archive_command".into(),
        json!(format!("test ! -f {dir}/%f && cp %p {dir}/%f")),
    );
    params.insert("restore_command".into(), json!(format!("cp {dir}/%f %p")));
    options.customize = Some(Arc::new(|i, doc: &mut Value| {
        if i == 1 {
            doc["tags"] = json!({"nostream": true});
        }
    }));
    let cluster = Cluster::new(2, options);
    cluster.start_agent(0);
    let leader = cluster.wait_for_leader().await;
    assert_eq!(leader, 0);
    cluster.start_agent(1);
    cluster
        .wait(
            FAILOVER_TIMEOUT,
            "the nostream replica in archive recovery",
            async || {
                let st = cluster.patroni(1).await?;
                ensure!(
                    st["role"] == "replica" && st["replication_state"] == "in archive recovery",
                    "{st}"
                );
                Ok(())
            },
        )
        .await;
    let conf = std::fs::read_to_string(cluster.member(1).data_dir.join("postgresql.conf")).unwrap();
    assert!(!conf.contains("primary_conninfo"), "{conf}");
    assert!(!conf.contains("primary_slot_name"), "{conf}");

    // A row reaches it through the archive (a WAL switch closes the segment).
    let client = cluster.pg_connect(0).await;
    client
        .batch_execute("CREATE TABLE ns (id int); INSERT INTO ns VALUES (1)")
        .await
        .unwrap();
    client
        .batch_execute("SELECT pg_catalog.pg_switch_wal()")
        .await
        .unwrap();
    cluster.wait_for_row(1, "ns", 1).await;
    let slots: Vec<String> = client
        .query(
            "SELECT slot_name::text FROM pg_catalog.pg_replication_slots",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    assert!(slots.is_empty(), "no slot for a nostream member: {slots:?}");
    let walsenders = client
        .query("SELECT 1 FROM pg_catalog.pg_stat_replication", &[])
        .await
        .unwrap();
    assert!(walsenders.is_empty(), "nobody streams");
    cluster.assert_agents_alive();
}
