//! Custom bootstrap (`bootstrap.method`) and replica creation methods
//! (`postgresql.create_replica_methods`): the user's commands fill the data directory, with
//! Patroni's arguments, and a failed one never turns into an initdb.

mod harness;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{ensure, Context};
use harness::{
    wait_for, Cluster, Options, BOOTSTRAP_TIMEOUT, PG_BIN_DIR, SHORT_TIMEOUT, SUPERUSER,
};
use serde_json::{json, Value};

/// Writes an executable shell script.
fn write_script(path: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, format!("#!/bin/sh\n{body}")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// A script that records its arguments in `args_file`, then runs pg_basebackup into
/// `--datadir` from the connection string in `--<conn_arg>` (Patroni's
/// `features/backup_create.py`, reduced).
fn basebackup_script(path: &Path, args_file: &Path, conn_arg: &str) {
    write_script(
        path,
        &format!(
            "printf '%s\\n' \"$@\" > '{args}'\n\
             for arg; do\n\
             \x20 case \"$arg\" in\n\
             \x20   --datadir=*) datadir=\"${{arg#--datadir=}}\" ;;\n\
             \x20   --{conn_arg}=*) conn=\"${{arg#--{conn_arg}=}}\" ;;\n\
             \x20 esac\n\
             done\n\
             exec {bin}/pg_basebackup -D \"$datadir\" -X stream -c fast -d \"$conn\"\n",
            args = args_file.display(),
            bin = PG_BIN_DIR,
        ),
    );
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// A second cluster bootstrapped by a custom method that copies the first one with
/// pg_basebackup and recovers it through `recovery_conf` (Patroni's "clone existing cluster
/// using pg_basebackup" scenario): its leader holds the first cluster's table and system
/// identifier, ended recovery on a new timeline, and runs with our configuration afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_method_restores_a_copy_of_another_cluster() {
    harness::init();
    let mut cluster = Cluster::start(1, Options::default());
    assert_eq!(cluster.wait_for_leader().await, 0);
    cluster
        .pg_connect(0)
        .await
        .batch_execute("CREATE TABLE foo (id int); INSERT INTO foo VALUES (42);")
        .await
        .unwrap();
    let source_sysid = cluster.system_identifier(0).await;

    let script = cluster.dir().join("clone.sh");
    let args_file = cluster.dir().join("clone.args");
    basebackup_script(&script, &args_file, "dbname");
    let command = format!(
        "{} --dbname=\"host=127.0.0.1 port={} user={} password={}\"",
        script.display(),
        cluster.member(0).pg_port,
        SUPERUSER.0,
        SUPERUSER.1
    );
    cluster.options.customize = Some(Arc::new(move |i, doc: &mut Value| {
        if i == 1 {
            doc["scope"] = json!("restored");
            doc["bootstrap"]["method"] = json!("clone_a");
            doc["bootstrap"]["clone_a"] = json!({
                "command": command,
                "test-argument": "test-value",
                "recovery_conf": {
                    "recovery_target_action": "promote",
                    "recovery_target_timeline": "latest",
                    "restore_command": "false",
                },
            });
        }
    }));
    let restored = cluster.add_member(None);
    cluster.start_agent(restored);
    let m = cluster.member(restored);

    wait_for(
        BOOTSTRAP_TIMEOUT,
        "pg-1 to lead the restored cluster",
        async || {
            cluster.assert_agents_alive();
            let leader = cluster.etcd.get("/service/restored/leader")?;
            ensure!(leader.as_deref() == Some("pg-1"), "leader key: {leader:?}");
            let st = cluster.patroni(restored).await?;
            ensure!(
                st["role"] == "primary" && st["state"] == "running",
                "pg-1: {st}"
            );
            Ok(())
        },
    )
    .await;

    // The first cluster's data, identity and table, not a fresh initdb.
    let client = cluster.pg_connect(restored).await;
    let id: i32 = client
        .query_one("SELECT id FROM foo", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(id, 42);
    assert_eq!(cluster.system_identifier(restored).await, source_sysid);
    assert_eq!(
        cluster.etcd.get("/service/restored/initialize").unwrap(),
        Some(source_sysid)
    );
    // Recovery through recovery.signal ended in a promotion to a new timeline.
    let st = cluster.patroni(restored).await.unwrap();
    assert_eq!(st["timeline"], 2, "{st}");
    assert!(!m.data_dir.join("recovery.signal").exists());

    // Patroni's arguments: the command's own, --scope, --datadir, then the section's keys.
    let args = lines(&args_file);
    assert_eq!(
        args,
        [
            format!(
                "--dbname=host=127.0.0.1 port={} user={} password={}",
                cluster.member(0).pg_port,
                SUPERUSER.0,
                SUPERUSER.1
            ),
            "--scope=restored".to_string(),
            format!("--datadir={}", m.data_dir.display()),
            "--test-argument=test-value".to_string(),
        ]
    );

    // After the bootstrap our configuration is in force again: no trust, hot_standby on, no
    // recovery settings left.
    let hba = std::fs::read_to_string(m.data_dir.join("pg_hba.conf")).unwrap();
    assert!(
        hba.lines()
            .filter(|l| l.starts_with("host"))
            .all(|l| !l.contains("trust")),
        "{hba}"
    );
    assert!(hba.contains("host all all 127.0.0.1/32 md5"), "{hba}");
    wait_for(SHORT_TIMEOUT, "hot_standby back on", async || {
        let row = cluster
            .pg_connect_try(restored)
            .await?
            .query_one("SELECT current_setting('hot_standby')", &[])
            .await?;
        let value: String = row.get(0);
        ensure!(value == "on", "hot_standby is {value}");
        Ok(())
    })
    .await;
    let conf = std::fs::read_to_string(m.data_dir.join("postgresql.conf")).unwrap();
    assert!(!conf.contains("restore_command"), "{conf}");
    let log = std::fs::read_to_string(&m.log_path).unwrap();
    assert!(
        log.contains(&format!(
            "Running custom bootstrap script: {}",
            script.display()
        )),
        "{log}"
    );
    assert!(log.contains("initialized a new cluster"), "{log}");
}

/// A custom method that fails stops the agent with Patroni's sentences, removes the
/// initialize key, moves what the method left to `<data_dir>.failed`, and never runs initdb.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_custom_method_leaves_no_cluster_and_no_initialize_key() {
    harness::init();
    let scripts = tempfile::tempdir().unwrap();
    let script = scripts.path().join("broken.sh");
    write_script(
        &script,
        "for arg; do case \"$arg\" in --datadir=*) d=\"${arg#--datadir=}\" ;; esac; done\n\
         mkdir -p \"$d\" && echo half > \"$d/half-restored\"\nexit 3\n",
    );
    let command = script.display().to_string();
    let options = Options {
        customize: Some(Arc::new(move |_, doc: &mut Value| {
            doc["bootstrap"]["method"] = json!("restore");
            doc["bootstrap"]["restore"] = json!({ "command": command });
        })),
        ..Options::default()
    };
    let cluster = Cluster::new(1, options);
    cluster.start_agent(0);
    let status = cluster.wait_agent_exit(0, BOOTSTRAP_TIMEOUT).await;
    assert!(!status.success(), "a failed bootstrap is fatal: {status}");

    let m = cluster.member(0);
    assert_eq!(cluster.etcd_get("initialize"), None);
    assert_eq!(cluster.etcd_get("leader"), None);
    let failed = PathBuf::from(format!("{}.failed", m.data_dir.display()));
    assert!(
        failed.join("half-restored").exists(),
        "what the method left is kept aside in {}",
        failed.display()
    );
    assert!(!failed.join("PG_VERSION").exists(), "initdb never ran");
    assert!(
        std::fs::read_dir(&m.data_dir).map_or(true, |mut d| d.next().is_none()),
        "no data directory is left behind"
    );
    let log = std::fs::read_to_string(&m.log_path).unwrap();
    for sentence in [
        "Running custom bootstrap script:",
        "removing initialize key after failed attempt to bootstrap the cluster",
        "Failed to bootstrap cluster",
    ] {
        assert!(log.contains(sentence), "{sentence:?} missing in:\n{log}");
    }
}

/// Replicas made by `create_replica_methods`: the first method is a user's command that gets
/// Patroni's arguments (`--scope`, `--role=replica`, `--datadir`, `--connstring` without a
/// password, the password in PGPASSFILE); a failing first method is cleaned up after and the
/// next one (basebackup) creates the replica.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_are_created_by_the_configured_methods_in_order() {
    harness::init();
    let mut cluster = Cluster::start(1, Options::default());
    assert_eq!(cluster.wait_for_leader().await, 0);
    let copy = cluster.dir().join("copy.sh");
    let args_file = cluster.dir().join("copy.args");
    basebackup_script(&copy, &args_file, "connstring");
    let broken = cluster.dir().join("broken.sh");
    write_script(
        &broken,
        "for arg; do case \"$arg\" in --datadir=*) d=\"${arg#--datadir=}\" ;; esac; done\n\
         mkdir -p \"$d\" && echo junk > \"$d/junk\"\nexit 1\n",
    );
    let (copy, broken) = (copy.display().to_string(), broken.display().to_string());
    cluster.options.customize = Some(Arc::new(move |i, doc: &mut Value| {
        let pg = &mut doc["postgresql"];
        match i {
            1 => {
                pg["create_replica_methods"] = json!(["copy", "basebackup"]);
                pg["copy"] = json!({ "command": copy, "no_leader": false });
            }
            2 => {
                pg["create_replica_methods"] = json!(["broken", "basebackup"]);
                pg["broken"] = json!({ "command": broken });
            }
            _ => {}
        }
    }));
    let first = cluster.add_member(None);
    let second = cluster.add_member(None);
    cluster.start_agent(first);
    cluster.start_agent(second);
    let streaming = cluster.wait_for_replicas_streaming(2).await;
    assert!(streaming.contains(&first) && streaming.contains(&second));

    let m = cluster.member(first);
    assert_eq!(
        lines(&args_file),
        [
            "--no_leader=False".to_string(),
            "--scope=pgpilot-test".to_string(),
            "--role=replica".to_string(),
            format!("--datadir={}", m.data_dir.display()),
            format!(
                "--connstring=dbname=postgres user=replicator host=127.0.0.1 port={}",
                cluster.member(0).pg_port
            ),
        ]
    );
    let log = std::fs::read_to_string(&m.log_path).unwrap();
    assert!(log.contains("replica has been created using copy"), "{log}");

    let m2 = cluster.member(second);
    let log = std::fs::read_to_string(&m2.log_path).unwrap();
    assert!(
        log.contains(&format!(
            "Error creating replica using method broken: {} exited with code=1",
            cluster.dir().join("broken.sh").display()
        )),
        "{log}"
    );
    assert!(
        log.contains("replica has been created using basebackup"),
        "{log}"
    );
    assert!(!m2.data_dir.join("junk").exists());

    // Both replicas follow the leader.
    cluster
        .pg_connect(0)
        .await
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1);")
        .await
        .unwrap();
    for i in [first, second] {
        cluster.wait_for_row(i, "t", 1).await;
    }
    let _ = wait_for(SHORT_TIMEOUT, "both replicas in recovery", async || {
        for i in [first, second] {
            ensure!(
                cluster.in_recovery(i).await.context("query")?,
                "not in recovery"
            );
        }
        Ok(())
    })
    .await;
}
