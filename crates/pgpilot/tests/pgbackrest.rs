//! pgBackRest (Debian's package) with pgpilot, as the pgsql-ha seed runs them: the primary
//! archives through `archive_command = pgbackrest archive-push`, a full backup is taken, a new
//! replica is created by `create_replica_methods: [pgbackrest, basebackup]` (a delta restore,
//! then streaming, WAL from the archive through `restore_command`), and a new cluster is
//! bootstrapped from the backup by a custom bootstrap method keeping pgBackRest's recovery
//! settings. Skipped with the reason printed when `pgbackrest` is not installed.

mod harness;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::ensure;
use harness::{wait_for, Cluster, Options, BOOTSTRAP_TIMEOUT, SHORT_TIMEOUT};
use serde_json::{json, Value};

const PGBACKREST: &str = "/usr/bin/pgbackrest";
const STANZA: &str = "demo";

/// `pgbackrest --config=<conf> --stanza=demo <args>`, to completion; panics with its output.
fn pgbackrest(conf: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new(PGBACKREST)
        .arg(format!("--config={}", conf.display()))
        .arg(format!("--stanza={STANZA}"))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run pgbackrest: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("$ pgbackrest {}\n{text}", args.join(" "));
    assert!(out.status.success(), "pgbackrest {args:?} failed:\n{text}");
    text
}

/// Writes `<work>/<host>.conf`, this host's pgBackRest configuration: the shared repository
/// and its own `pg1-*` (as each database host of a real deployment has its own); returns the
/// `pgbackrest --config=... --stanza=...` prefix for it.
fn host_conf(work: &Path, host: &str, data_dir: &str, port: u16, sock: &str) -> String {
    let conf = work.join(format!("{host}.conf"));
    std::fs::write(
        &conf,
        format!(
            "[global]\n\
             repo1-path={work}/repo\n\
             repo1-retention-full=2\n\
             log-path={work}/log\n\
             lock-path={work}/lock-{host}\n\
             spool-path={work}/spool-{host}\n\
             log-level-console=warn\n\
             start-fast=y\n\
             [{STANZA}]\n\
             pg1-path={data_dir}\n\
             pg1-port={port}\n\
             pg1-socket-path={sock}\n\
             pg1-user=postgres\n",
            work = work.display(),
        ),
    )
    .unwrap();
    for d in [
        "log".to_string(),
        format!("lock-{host}"),
        format!("spool-{host}"),
    ] {
        std::fs::create_dir_all(work.join(d)).unwrap();
    }
    format!("{PGBACKREST} --config={} --stanza={STANZA}", conf.display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_backup_replica_and_bootstrap_through_pgbackrest() {
    harness::init();
    if !Path::new(PGBACKREST).exists() {
        eprintln!("SKIPPED: {PGBACKREST} is not installed (Debian package pgbackrest)");
        return;
    }
    let work = tempfile::Builder::new()
        .prefix("pgpilot-pgbackrest-")
        .tempdir()
        .unwrap();
    // The primary's configuration file is written once the cluster exists (its paths are
    // known then); archive_command names it already.
    let conf: PathBuf = work.path().join("pg-0.conf");
    let cmd = format!("{PGBACKREST} --config={} --stanza={STANZA}", conf.display());
    let mut options = Options::default();
    for (k, v) in [
        ("archive_mode", json!("on")),
        ("archive_command", json!(format!("{cmd} archive-push %p"))),
    ] {
        options.dcs_parameters.insert(k.into(), v);
    }
    let mut cluster = Cluster::start(1, options);
    assert_eq!(cluster.wait_for_leader().await, 0);
    let primary = cluster.member(0);
    let primary_cmd = host_conf(
        work.path(),
        "pg-0",
        &primary.data_dir.display().to_string(),
        primary.pg_port,
        &primary.socket_dir.display().to_string(),
    );
    assert_eq!(primary_cmd, cmd);
    pgbackrest(&conf, &["stanza-create"]);
    pgbackrest(&conf, &["check"]);
    cluster
        .pg_connect(0)
        .await
        .batch_execute("CREATE TABLE t (id int PRIMARY KEY); INSERT INTO t VALUES (1);")
        .await
        .unwrap();
    pgbackrest(&conf, &["backup", "--type=full"]);
    let info = pgbackrest(&conf, &["info"]);
    assert!(info.contains("full backup"), "{info}");
    cluster
        .pg_connect(0)
        .await
        .batch_execute("INSERT INTO t VALUES (2)")
        .await
        .unwrap();
    // Its own statement: in one query string the switch would come before the commit.
    cluster
        .pg_connect(0)
        .await
        .batch_execute("SELECT pg_switch_wal()")
        .await
        .unwrap();

    // A replica restored by pgBackRest, then streaming; its WAL gap is filled from the archive.
    let work_dir = work.path().to_path_buf();
    let restored_scope = "restored";
    cluster.options.customize = Some(Arc::new(move |i, doc: &mut Value| {
        if i == 0 {
            return;
        }
        let pg = &mut doc["postgresql"];
        let data_dir = pg["data_dir"].as_str().unwrap().to_string();
        let port: u16 = pg["listen"]
            .as_str()
            .and_then(|l| l.rsplit(':').next())
            .and_then(|p| p.parse().ok())
            .unwrap();
        let sock = pg["parameters"]["unix_socket_directories"]
            .as_str()
            .unwrap()
            .to_string();
        let restore_cmd = host_conf(&work_dir, &format!("pg-{i}"), &data_dir, port, &sock);
        let restore_command = format!("{restore_cmd} archive-get %f \"%p\"");
        match i {
            1 => {
                pg["create_replica_methods"] = json!(["pgbackrest", "basebackup"]);
                pg["pgbackrest"] = json!({
                    "command": format!("{restore_cmd} --delta restore"),
                    "keep_data": true,
                    "no_params": true,
                });
                pg["recovery_conf"] = json!({ "restore_command": restore_command });
            }
            2 => {
                // Another cluster, bootstrapped from the backup: pgBackRest writes the
                // recovery settings (restore_command, recovery.signal) and they are kept.
                doc["scope"] = json!(restored_scope);
                doc["bootstrap"]["method"] = json!("pgbackrest");
                doc["bootstrap"]["pgbackrest"] = json!({
                    "command": format!(
                        "sh -c 'mkdir -p -m 0700 {data_dir} && {restore_cmd} --delta restore'"
                    ),
                    "keep_existing_recovery_conf": true,
                    "no_params": true,
                });
                // It must not archive into the first cluster's stanza.
                let params = &mut doc["bootstrap"]["dcs"]["postgresql"]["parameters"];
                if let Some(p) = params.as_object_mut() {
                    p.remove("archive_mode");
                    p.remove("archive_command");
                }
            }
            _ => {}
        }
    }));
    let replica = cluster.add_member(None);
    cluster.start_agent(replica);
    cluster
        .wait_for_streaming_replica(replica, None, BOOTSTRAP_TIMEOUT)
        .await;
    let log = std::fs::read_to_string(&cluster.member(replica).log_path).unwrap();
    assert!(
        log.contains("replica has been created using pgbackrest"),
        "{log}"
    );
    cluster
        .pg_connect(0)
        .await
        .batch_execute("INSERT INTO t VALUES (3)")
        .await
        .unwrap();
    cluster.wait_for_row(replica, "t", 3).await;
    // `postgresql.recovery_conf` is in force on the replica.
    let restore: String = cluster
        .pg_connect(replica)
        .await
        .query_one("SELECT current_setting('restore_command')", &[])
        .await
        .unwrap()
        .get(0);
    assert!(
        restore.contains("archive-get %f"),
        "restore_command: {restore}"
    );

    // The restored cluster: its own leader, with the backed-up data and the archived rows.
    let source_sysid = cluster.system_identifier(0).await;
    let other = cluster.add_member(None);
    cluster.start_agent(other);
    wait_for(
        BOOTSTRAP_TIMEOUT,
        "the restored cluster has a running primary",
        async || {
            cluster.assert_agents_alive();
            let leader = cluster
                .etcd
                .get(&format!("/service/{restored_scope}/leader"))?;
            ensure!(
                leader.as_deref() == Some(cluster.member(other).name.as_str()),
                "leader key: {leader:?}"
            );
            let st = cluster.patroni(other).await?;
            ensure!(st["role"] == "primary" && st["state"] == "running", "{st}");
            Ok(())
        },
    )
    .await;
    assert_eq!(cluster.system_identifier(other).await, source_sysid);
    wait_for(SHORT_TIMEOUT, "rows 1 and 2 restored", async || {
        let row = cluster
            .pg_connect_try(other)
            .await?
            .query_one("SELECT string_agg(id::text, ',' ORDER BY id) FROM t", &[])
            .await?;
        let ids: Option<String> = row.get(0);
        ensure!(
            ids.as_deref().is_some_and(|i| i.starts_with("1,2")),
            "{ids:?}"
        );
        Ok(())
    })
    .await;
    let log = std::fs::read_to_string(&cluster.member(other).log_path).unwrap();
    assert!(log.contains("Running custom bootstrap script"), "{log}");
    assert!(!log.contains("initdb"), "never an initdb: {log}");
}
