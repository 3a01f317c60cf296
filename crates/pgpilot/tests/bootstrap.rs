//! Bootstrap: agents started together form one cluster, and the command line behaves.

mod harness;

use std::sync::Arc;
use std::time::Instant;

use harness::{secs, wait_for, Cluster, Options, SHORT_TIMEOUT};
use serde_json::Value;

/// Three agents started at once elect exactly one leader, which runs initdb; the two others
/// clone it and stream through their own slots; a row written on the leader shows on both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_agents_bootstrap_one_primary_and_two_streaming_replicas() {
    harness::init();
    let start = Instant::now();
    // As pglift configures it: a socket directory and a pgpass directory that do not exist
    // yet (Patroni creates both before starting PostgreSQL).
    let options = Options {
        customize: Some(Arc::new(|_, doc| {
            let pg = &mut doc["postgresql"];
            let sock = pg["parameters"]["unix_socket_directories"]
                .as_str()
                .unwrap();
            pg["parameters"]["unix_socket_directories"] = format!("{sock}/run/pg").into();
            let pgpass = pg["pgpass"].as_str().unwrap();
            pg["pgpass"] = format!("{pgpass}.d/pgpass").into();
        })),
        ..Options::default()
    };
    let cluster = Cluster::start(3, options);
    let leader = cluster.wait_for_leader().await;
    eprintln!(
        "leader {} elected after {}",
        cluster.member(leader).name,
        secs(start.elapsed())
    );
    let replicas = cluster.wait_for_replicas_streaming(2).await;
    eprintln!("2 replicas streaming after {}", secs(start.elapsed()));
    assert!(!replicas.contains(&leader));

    // Exactly one primary, as seen by every member's REST API.
    for i in 0..3 {
        let m = cluster.member(i);
        let socket = m.socket_dir.join(format!("run/pg/.s.PGSQL.{}", m.pg_port));
        assert!(socket.exists(), "{} missing", socket.display());
        assert!(
            m.dir.join("pgpass.d/pgpass").exists(),
            "{}: no pgpass",
            m.name
        );
        let st = cluster.patroni(i).await.unwrap();
        assert_eq!(st["state"], "running", "{}: {st}", m.name);
        assert_eq!(st["patroni"]["name"], m.name.as_str(), "{st}");
        assert_eq!(st["patroni"]["scope"], "pgpilot-test", "{st}");
        assert_eq!(st["timeline"], 1, "{}: {st}", m.name);
        let (primary, _) = cluster.api_get(i, "/primary").await.unwrap();
        let (replica, _) = cluster.api_get(i, "/replica").await.unwrap();
        if i == leader {
            assert_eq!(st["role"], "primary", "{st}");
            assert!(st["xlog"]["location"].is_u64(), "{st}");
            assert_eq!(
                (primary, replica),
                (200, 503),
                "{} /primary and /replica",
                m.name
            );
        } else {
            assert_eq!(st["role"], "replica", "{st}");
            assert_eq!(st["replication_state"], "streaming", "{st}");
            assert!(st["xlog"]["replayed_location"].is_u64(), "{st}");
            assert_eq!(
                (primary, replica),
                (503, 200),
                "{} /primary and /replica",
                m.name
            );
        }
    }

    // GET /cluster lists one leader and two replicas.
    let (code, view) = cluster.api_get(replicas[0], "/cluster").await.unwrap();
    assert_eq!(code, 200, "{view}");
    let members = view["members"].as_array().expect("members list");
    assert_eq!(members.len(), 3, "{view}");
    for m in members {
        let name = m["name"].as_str().unwrap();
        let expected = if name == cluster.member(leader).name {
            "leader"
        } else {
            "replica"
        };
        assert_eq!(m["role"], expected, "{view}");
    }

    // The DCS holds Patroni's keys with Patroni's values.
    let leader_name = &cluster.member(leader).name;
    assert_eq!(
        cluster.etcd_get("leader").as_deref(),
        Some(leader_name.as_str())
    );
    let sysid = cluster.system_identifier(leader).await;
    assert_eq!(cluster.etcd_get("initialize"), Some(sysid.clone()));
    for i in 0..3 {
        let m = cluster.member(i);
        let value = cluster
            .etcd_get(&format!("members/{}", m.name))
            .expect("member key");
        let member: Value = serde_json::from_str(&value).expect("member key is JSON");
        assert_eq!(
            member["api_url"],
            format!("http://127.0.0.1:{}/patroni", m.api_port)
        );
        assert_eq!(
            member["conn_url"],
            format!("postgres://127.0.0.1:{}/postgres", m.pg_port)
        );
        let role = if i == leader { "primary" } else { "replica" };
        assert_eq!(member["role"], role, "{value}");
        assert_eq!(
            cluster.system_identifier(i).await,
            sysid,
            "{} cloned the leader",
            m.name
        );
    }
    let config: Value = serde_json::from_str(&cluster.etcd_get("config").expect("config key"))
        .expect("config is JSON");
    assert_eq!(config["ttl"], 20, "{config}");
    assert_eq!(config["loop_wait"], 1, "{config}");
    let status: Value = serde_json::from_str(&cluster.etcd_get("status").expect("status key"))
        .expect("status is JSON");
    assert!(status["optime"].as_u64().is_some_and(|o| o > 0), "{status}");

    // The leader streams to both replicas, each through the slot named after it.
    cluster.wait_for_walsenders(leader, &replicas).await;

    // A row written on the leader reaches both replicas.
    let client = cluster.pg_connect(leader).await;
    client
        .batch_execute(
            "CREATE TABLE bootstrap_check (id int PRIMARY KEY, note text);
             INSERT INTO bootstrap_check VALUES (1, 'written on the leader');",
        )
        .await
        .unwrap();
    for &r in &replicas {
        cluster.wait_for_row(r, "bootstrap_check", 1).await;
        let replica = cluster.pg_connect(r).await;
        let note: String = replica
            .query_one("SELECT note FROM bootstrap_check WHERE id = 1", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(note, "written on the leader");
        assert!(
            cluster.in_recovery(r).await.unwrap(),
            "{} is a standby",
            cluster.member(r).name
        );
    }
    eprintln!("bootstrap complete after {}", secs(start.elapsed()));
}

/// `pgpilot --version` prints the program name and a version.
#[test]
fn version_flag_prints_name_and_version() {
    harness::init();
    let home = tempfile::tempdir().unwrap();
    let out = harness::run_agent_cli(&["--version"], home.path());
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut words = text.split_whitespace();
    assert_eq!(words.next(), Some("pgpilot"), "{text:?}");
    let version = words.next().unwrap_or("");
    assert!(
        version.split('.').count() >= 2
            && version
                .split('.')
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())),
        "a dotted numeric version: {text:?}"
    );
}

/// `pgpilot --validate-config` on a broken configuration exits non-zero and names every broken
/// key by its path.
#[test]
fn validate_config_names_the_broken_keys() {
    harness::init();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("broken.yml");
    std::fs::write(
        &config,
        "scope: batman\n\
         name: pg-0\n\
         log:\n  level: LOUD\n\
         restapi:\n  listen: 127.0.0.1:8008\n  connect_address: 127.0.0.1:8008\n\
         etcd3:\n  hosts: 127.0.0.1:2379\n\
         postgresql:\n  listen: 127.0.0.1:5432\n  connect_address: 127.0.0.1:5432\n  \
         authentication:\n    superuser:\n      username: postgres\n    \
         replication:\n      username: replicator\n",
    )
    .unwrap();
    let out = harness::run_agent_cli(&["--validate-config", config.to_str().unwrap()], dir.path());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("--validate-config said:\n{text}");
    assert!(
        !out.status.success(),
        "a broken configuration must fail: {out:?}"
    );
    assert!(
        text.contains("postgresql.data_dir"),
        "names the missing key: {text}"
    );
    assert!(
        text.contains("log.level"),
        "names the invalid value's key: {text}"
    );
}

/// A member's REST API answers while its agent runs and stops answering once it is stopped, so
/// the harness's view of "running" matches the agent's. With `log_statement = all`, the role
/// passwords set at bootstrap still stay out of the server log (as in Patroni, statement
/// logging is off for that session).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_member_bootstraps_alone_and_stops_on_sigterm() {
    harness::init();
    let mut options = Options::default();
    options
        .parameters
        .insert("log_statement".into(), serde_json::json!("all"));
    let cluster = Cluster::start(1, options);
    assert_eq!(cluster.wait_for_leader().await, 0);
    let server_log =
        std::fs::read_to_string(cluster.member(0).pg_log_dir.join("postgresql.log")).unwrap();
    assert!(
        server_log.contains("statement:"),
        "log_statement = all is in effect"
    );
    for secret in [harness::SUPERUSER.1, harness::REPLICATION.1] {
        assert!(
            !server_log.contains(secret),
            "a role password reached the server log:\n{server_log}"
        );
    }
    let client = cluster.pg_connect(0).await;
    client
        .batch_execute("CREATE TABLE alone (id int)")
        .await
        .unwrap();
    cluster.terminate_agent(0);
    let status = cluster.wait_agent_exit(0, SHORT_TIMEOUT).await;
    assert!(status.success(), "SIGTERM is a clean shutdown: {status}");
    wait_for(SHORT_TIMEOUT, "the postmaster to stop", async || {
        anyhow::ensure!(
            cluster.postmaster_pid(0).is_none(),
            "postmaster still running"
        );
        Ok(())
    })
    .await;
    assert!(
        cluster.api_get(0, "/patroni").await.is_err(),
        "the REST API is gone"
    );
}
