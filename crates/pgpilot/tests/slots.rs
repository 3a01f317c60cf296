//! Replication slots with real agents: members' slots and the permanent slots of
//! `/config.slots` are created on the leader, `/status` publishes their positions and the
//! retained member slots, the replica keeps the physical ones advanced to those positions and
//! a copy of the logical one that is usable after a failover, a slot a user made survives
//! when `ignore_slots` lists it and is dropped when nothing does (Patroni's rule), and a
//! permanent slot removed from `/config` is dropped. A `replicatefrom` member streams from the member it names.

mod harness;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use harness::{Cluster, Options};
use serde_json::{json, Value};

/// `slot_name -> slot_type` on member `i`.
async fn slots(cluster: &Cluster, i: usize) -> anyhow::Result<BTreeMap<String, String>> {
    let rows = cluster
        .pg_connect_try(i)
        .await?
        .query(
            "SELECT slot_name::text, slot_type::text FROM pg_replication_slots",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn permanent_slots_status_and_ignored_slots() {
    harness::init();
    let mut options = Options::default();
    options
        .dcs_parameters
        .insert("wal_level".into(), json!("logical"));
    options.customize = Some(Arc::new(|_, doc: &mut Value| {
        doc["bootstrap"]["dcs"]["slots"] = json!({
            "perm_phys": {"type": "physical"},
            "perm_short": null,
            "perm_logical": {"type": "logical", "database": "postgres", "plugin": "test_decoding"},
        });
        doc["bootstrap"]["dcs"]["ignore_slots"] =
            json!([{"name": "user_keep", "type": "physical"}]);
    }));
    let cluster = Cluster::start(2, options);
    let leader = cluster.wait_for_leader().await;
    let replica = cluster.wait_for_replicas_streaming(1).await[0];
    let replica_slot = cluster.member(replica).name.replace('-', "_");

    // The member slot and the three permanent slots exist on the leader.
    let want = [
        (replica_slot.as_str(), "physical"),
        ("perm_phys", "physical"),
        ("perm_short", "physical"),
        ("perm_logical", "logical"),
    ];
    cluster
        .wait(Duration::from_secs(30), "slots on the leader", async || {
            let have = slots(&cluster, leader).await?;
            for (name, ty) in want {
                anyhow::ensure!(have.get(name).map(String::as_str) == Some(ty), "{have:?}");
            }
            Ok(())
        })
        .await;

    // `/status` carries their positions and retains the member slot.
    let status: Value = cluster
        .wait(Duration::from_secs(30), "/status with slots", async || {
            let text = cluster.etcd_get("status").unwrap_or_default();
            let v: Value = serde_json::from_str(&text)?;
            for (name, _) in want {
                anyhow::ensure!(v["slots"][name].as_u64().is_some(), "{v}");
            }
            // Patroni also lists the leader's own slot name, at its flush LSN.
            let own = cluster.member(leader).name.replace('-', "_");
            anyhow::ensure!(v["slots"][&own].as_u64().is_some(), "{v}");
            let mut retain = vec![own, replica_slot.clone()];
            retain.sort();
            anyhow::ensure!(v["retain_slots"] == json!(retain), "{v}");
            Ok(v)
        })
        .await;
    assert!(status["optime"].as_u64().unwrap() > 0, "{status}");

    // The replica (a failover candidate) keeps the leader's slot and the permanent physical
    // ones, advanced to the leader's /status positions, and a copy of the logical one.
    let leader_slot = cluster.member(leader).name.replace('-', "_");
    cluster
        .wait(
            Duration::from_secs(30),
            "slots on the replica",
            async || {
                let have = slots(&cluster, replica).await?;
                for name in [leader_slot.as_str(), "perm_phys", "perm_short"] {
                    anyhow::ensure!(
                        have.get(name).map(String::as_str) == Some("physical"),
                        "{have:?}"
                    );
                }
                anyhow::ensure!(
                    have.get("perm_logical").map(String::as_str) == Some("logical"),
                    "{have:?}"
                );
                anyhow::ensure!(!have.contains_key(&replica_slot), "{have:?}");
                Ok(())
            },
        )
        .await;
    let restart_lsn = async |i: usize, name: &str| -> anyhow::Result<u64> {
        let row = cluster
            .pg_connect_try(i)
            .await?
            .query_one(
                "SELECT pg_wal_lsn_diff(restart_lsn, '0/0')::bigint FROM pg_replication_slots \
                 WHERE slot_name = $1",
                &[&name],
            )
            .await?;
        Ok(u64::try_from(row.get::<_, i64>(0))?)
    };
    let before = restart_lsn(replica, &leader_slot).await.unwrap();
    cluster
        .pg_connect(leader)
        .await
        .batch_execute("CREATE TABLE t (id int); SELECT pg_switch_wal(); CHECKPOINT;")
        .await
        .unwrap();
    cluster
        .wait(
            Duration::from_secs(30),
            "the leader's slot advanced on the replica",
            async || {
                let now = restart_lsn(replica, &leader_slot).await?;
                anyhow::ensure!(now > before, "{now} <= {before}");
                Ok(())
            },
        )
        .await;

    // Slots made by hand: one listed in ignore_slots, one not. Then perm_phys leaves /config.
    cluster
        .pg_connect(leader)
        .await
        .batch_execute(
            "SELECT pg_create_physical_replication_slot('user_keep');
             SELECT pg_create_physical_replication_slot('user_other');",
        )
        .await
        .unwrap();
    let (code, text) = cluster
        .patch_config(leader, json!({"slots": {"perm_phys": null}}))
        .await
        .unwrap();
    assert_eq!(code, 200, "{text}");
    cluster
        .wait(Duration::from_secs(30), "perm_phys dropped", async || {
            for i in [leader, replica] {
                let have = slots(&cluster, i).await?;
                anyhow::ensure!(!have.contains_key("perm_phys"), "{have:?}");
            }
            Ok(())
        })
        .await;
    // The slot nothing lists goes, as Patroni drops it; the ignored one and the rest stay.
    cluster
        .wait(Duration::from_secs(30), "user_other dropped", async || {
            let have = slots(&cluster, leader).await?;
            anyhow::ensure!(!have.contains_key("user_other"), "{have:?}");
            Ok(())
        })
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let have = slots(&cluster, leader).await.unwrap();
    for name in [
        "user_keep",
        "perm_short",
        "perm_logical",
        replica_slot.as_str(),
    ] {
        assert!(have.contains_key(name), "{name} missing: {have:?}");
    }
    let log = cluster.agent_log(leader);
    assert!(
        log.contains("Dropped replication slot 'perm_phys'"),
        "{log}"
    );
    assert!(
        !log.contains("Dropped replication slot 'user_keep'"),
        "{log}"
    );
    assert!(
        cluster
            .agent_log(replica)
            .contains("Copying logical replication slots [\"perm_logical\"]"),
        "{}",
        cluster.agent_log(replica)
    );
    cluster.assert_agents_alive();

    // The leader's node dies. The replica is promoted, and its copy of the logical slot
    // decodes what is written on it from then on: a consumer of the slot resumes on the new
    // primary.
    cluster
        .pg_connect(leader)
        .await
        .batch_execute(
            "CREATE TABLE after_failover (id int, note text); \
             INSERT INTO after_failover VALUES (0, 'before')",
        )
        .await
        .unwrap();
    cluster.wait_for_row(replica, "after_failover", 0).await;
    cluster.kill_agent(leader);
    cluster.kill_postmaster(leader);
    let new_leader = cluster
        .wait_for_leader_except(&[leader], Duration::from_secs(60))
        .await;
    assert_eq!(new_leader, replica);
    cluster
        .wait_writable(replica, "after_failover", 1, "")
        .await;
    let changes: Vec<String> = cluster
        .wait(
            Duration::from_secs(30),
            "perm_logical decodes on the new primary",
            async || {
                let rows = cluster
                    .pg_connect_try(replica)
                    .await?
                    .query(
                        "SELECT data FROM pg_logical_slot_get_changes('perm_logical', NULL, NULL)",
                        &[],
                    )
                    .await?;
                let data: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
                anyhow::ensure!(
                    data.iter()
                        .any(|d| d.contains("after_failover") && d.contains("id[integer]:1")),
                    "{data:?}"
                );
                Ok(data)
            },
        )
        .await;
    assert!(!changes.is_empty());
}

/// `replicatefrom`: the tagged member streams from the member it names (a cascade), and that
/// member keeps its slot; the leader keeps one too (member slots are retained everywhere) and
/// advances it from the position the cascading member reports.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicatefrom_streams_from_the_named_member() {
    harness::init();
    let options = Options {
        customize: Some(Arc::new(|i, doc: &mut Value| {
            if i == 2 {
                doc["tags"] = json!({"replicatefrom": "pg-1"});
            }
        })),
        ..Options::default()
    };
    // pg-0 leads; pg-1 joins it; then pg-2, tagged to stream from pg-1.
    let cluster = Cluster::new(3, options);
    cluster.start_agent(0);
    let leader = cluster.wait_for_leader().await;
    assert_eq!(leader, 0);
    let (middle, tail) = (1, 2);
    cluster.start_agent(middle);
    cluster.wait_for_walsenders(leader, &[middle]).await;
    cluster.start_agent(tail);
    cluster
        .wait(
            Duration::from_secs(60),
            "pg-2 streams from pg-1",
            async || {
                let rows = cluster.replication_rows(middle).await?;
                anyhow::ensure!(
                    rows.iter().any(|(app, state, slot)| app == "pg-2"
                        && state == "streaming"
                        && slot.as_deref() == Some("pg_2")),
                    "{rows:?}"
                );
                let on_leader = cluster.replication_rows(leader).await?;
                anyhow::ensure!(
                    !on_leader.iter().any(|(app, ..)| app == "pg-2"),
                    "{on_leader:?}"
                );
                Ok(())
            },
        )
        .await;
    cluster
        .pg_connect(leader)
        .await
        .batch_execute("CREATE TABLE cascaded (id int); INSERT INTO cascaded VALUES (1)")
        .await
        .unwrap();
    cluster.wait_for_row(tail, "cascaded", 1).await;
    cluster
        .wait(
            Duration::from_secs(30),
            "the leader's pg_2 slot follows pg-2",
            async || {
                let row = cluster
                    .pg_connect_try(leader)
                    .await?
                    .query_one(
                        "SELECT active, restart_lsn >= pg_current_wal_flush_lsn() - 1048576 \
                         FROM pg_replication_slots WHERE slot_name = 'pg_2'",
                        &[],
                    )
                    .await?;
                anyhow::ensure!(!row.get::<_, bool>(0), "pg_2 is active on the leader");
                anyhow::ensure!(row.get::<_, bool>(1), "pg_2 is not advanced");
                Ok(())
            },
        )
        .await;
    cluster.assert_agents_alive();
}

/// A permanent slot whose WAL was removed (`max_slot_wal_keep_size` exceeded: `wal_status =
/// 'lost'`) is dropped and created again, as Patroni does, instead of being kept useless.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_whose_wal_is_lost_is_created_again() {
    harness::init();
    let mut options = Options::default();
    options
        .dcs_parameters
        .insert("max_slot_wal_keep_size".into(), json!("1MB"));
    // No other reason to keep old WAL (pgpilot's default, as Patroni's, is 128 MB).
    options
        .dcs_parameters
        .insert("wal_keep_size".into(), json!("0"));
    options.customize = Some(Arc::new(|_, doc: &mut Value| {
        doc["bootstrap"]["dcs"]["slots"] = json!({"perm_phys": {"type": "physical"}});
    }));
    let cluster = Cluster::start(1, options);
    let leader = cluster.wait_for_leader().await;
    let slot = async || -> anyhow::Result<(String, i64)> {
        let row = cluster
            .pg_connect_try(leader)
            .await?
            .query_one(
                "SELECT wal_status::text, coalesce(pg_wal_lsn_diff(restart_lsn, '0/0')::bigint, -1) \
                 FROM pg_replication_slots WHERE slot_name = 'perm_phys'",
                &[],
            )
            .await?;
        Ok((row.get(0), row.get(1)))
    };
    let (status, first) = cluster
        .wait(Duration::from_secs(30), "the permanent slot", slot)
        .await;
    assert_eq!(status, "reserved");

    // Fill more than 1 MB of WAL past the slot's restart_lsn, over several segments, and make a
    // checkpoint remove them: the slot is invalidated.
    let client = cluster.pg_connect(leader).await;
    client
        .batch_execute("CREATE TABLE filler (x int)")
        .await
        .unwrap();
    for _ in 0..3 {
        client
            .batch_execute(
                "INSERT INTO filler SELECT generate_series(1, 20000); SELECT pg_switch_wal()",
            )
            .await
            .unwrap();
    }
    client.batch_execute("CHECKPOINT").await.unwrap();

    cluster
        .wait(
            Duration::from_secs(30),
            "the lost slot dropped and created again",
            async || {
                let (status, lsn) = slot().await?;
                let log = cluster.agent_log(leader);
                anyhow::ensure!(
                    log.contains(
                        "Trying to drop replication slot 'perm_phys' with wal_status=lost"
                    ),
                    "not dropped yet: {status} at {lsn}"
                );
                anyhow::ensure!(status == "reserved" && lsn > first, "{status} at {lsn}");
                Ok(())
            },
        )
        .await;

    // Maintenance mode drops nothing (Patroni's rule): a slot nothing lists stays while
    // paused, and goes once the cluster is resumed.
    let (code, text) = cluster
        .patch_config(leader, json!({"pause": true}))
        .await
        .unwrap();
    assert_eq!(code, 200, "{text}");
    cluster
        .wait(
            Duration::from_secs(30),
            "the agent to see the pause",
            async || {
                let st = cluster.patroni(leader).await?;
                anyhow::ensure!(st["pause"] == json!(true), "{st}");
                Ok(())
            },
        )
        .await;
    client
        .batch_execute("SELECT pg_create_physical_replication_slot('user_paused')")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let have = slots(&cluster, leader).await.unwrap();
    assert!(
        have.contains_key("user_paused"),
        "dropped while paused: {have:?}"
    );
    let (code, text) = cluster
        .patch_config(leader, json!({"pause": null}))
        .await
        .unwrap();
    assert_eq!(code, 200, "{text}");
    cluster
        .wait(
            Duration::from_secs(30),
            "user_paused dropped once resumed",
            async || {
                let have = slots(&cluster, leader).await?;
                anyhow::ensure!(!have.contains_key("user_paused"), "{have:?}");
                Ok(())
            },
        )
        .await;
}
