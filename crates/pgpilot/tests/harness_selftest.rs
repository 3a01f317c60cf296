//! The harness's own parts, tested without the agent: etcd started as the unprivileged user and
//! read/written through the gRPC gateway, a bare PostgreSQL 15 made by hand, the configuration
//! files it writes.

mod harness;

use std::time::Duration;

use harness::{Cluster, Etcd, Options, Standalone};
use serde_json::json;

/// base64 as etcd's gateway expects it: RFC 4648 test vectors, both directions.
#[test]
fn base64_matches_rfc4648_vectors() {
    let vectors = [
        ("", ""),
        ("f", "Zg=="),
        ("fo", "Zm8="),
        ("foo", "Zm9v"),
        ("foob", "Zm9vYg=="),
        ("fooba", "Zm9vYmE="),
        ("foobar", "Zm9vYmFy"),
        ("/service/batman/leader", "L3NlcnZpY2UvYmF0bWFuL2xlYWRlcg=="),
    ];
    for (plain, encoded) in vectors {
        assert_eq!(harness::base64_encode(plain.as_bytes()), encoded);
        assert_eq!(harness::base64_decode(encoded).unwrap(), plain.as_bytes());
    }
    assert!(harness::base64_decode("Zm9v!").is_err());
}

/// Slot names follow Patroni's mangling: lower case, `-` and `.` become `_`, other characters
/// their decimal code point.
#[test]
fn expected_slot_names_follow_patroni() {
    assert_eq!(harness::expected_slot_name("pg-1"), "pg_1");
    assert_eq!(harness::expected_slot_name("Postgres.2"), "postgres_2");
    assert_eq!(harness::expected_slot_name("a+b"), "au0043b");
}

/// The YAML writer quotes every string, so `"on"` stays a string and paths stay paths.
#[test]
fn yaml_writer_renders_block_style_with_quoted_strings() {
    let doc = json!({
        "scope": "batman",
        "bootstrap": {"dcs": {"ttl": 20, "postgresql": {"parameters": {"wal_log_hints": "on"}}},
                      "initdb": [{"encoding": "UTF8"}, "data-checksums"]},
        "tags": {},
        "on": true,
    });
    let text = harness::to_yaml(&doc);
    let expected = "\
scope: \"batman\"
bootstrap:
  dcs:
    ttl: 20
    postgresql:
      parameters:
        wal_log_hints: \"on\"
  initdb:
    - {\"encoding\":\"UTF8\"}
    - \"data-checksums\"
tags: {}
\"on\": true
";
    assert_eq!(text, expected);
}

/// Failure reports collapse the sentence an idle agent logs every second.
#[test]
fn log_tail_collapses_repeated_sentences() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("agent.log");
    let idle = "INFO: no action. I am (pg-0), the leader with the lock";
    std::fs::write(
        &log,
        format!(
            "2026-11-24 14:16:47,123 {idle}\n2026-11-24 14:16:48,123 {idle}\n\
             2026-11-24 14:16:49,001 {idle}\n2026-11-24 14:16:50,001 WARNING: other\n"
        ),
    )
    .unwrap();
    assert_eq!(
        harness::log_tail(&log, 80),
        format!(
            "2026-11-24 14:16:47,123 {idle}\n    [... 2 more like the line above]\n\
             2026-11-24 14:16:50,001 WARNING: other"
        )
    );
    assert_eq!(
        harness::log_tail(&log, 1),
        "2026-11-24 14:16:50,001 WARNING: other"
    );
}

/// etcd runs as the unprivileged user on loopback; keys round-trip through the gateway; a
/// paused etcd stops answering and answers again after SIGCONT.
#[test]
fn etcd_runs_unprivileged_and_keys_round_trip() {
    harness::init();
    assert!(
        !nix::unistd::geteuid().is_root(),
        "the test process must not be root any more"
    );
    let etcd = Etcd::start();
    let pid = etcd.pid().unwrap();
    assert_eq!(harness::pid_uid(pid), Some(nix::unistd::geteuid().as_raw()));

    assert_eq!(etcd.get("/service/t/leader").unwrap(), None);
    etcd.put("/service/t/leader", "pg-0").unwrap();
    etcd.put("/service/t/members/pg-0", r#"{"role":"primary"}"#)
        .unwrap();
    etcd.put("/service/u/leader", "other").unwrap();
    let kv = etcd.get_kv("/service/t/leader").unwrap().unwrap();
    assert_eq!(kv.value, "pg-0");
    assert!(kv.create_revision > 0 && kv.mod_revision >= kv.create_revision);
    assert_eq!(kv.lease, 0);
    let keys: Vec<String> = etcd
        .list("/service/t/")
        .unwrap()
        .into_iter()
        .map(|kv| kv.key)
        .collect();
    assert_eq!(keys, ["/service/t/leader", "/service/t/members/pg-0"]);
    assert_eq!(etcd.delete("/service/t/leader").unwrap(), 1);
    assert_eq!(etcd.get("/service/t/leader").unwrap(), None);
    assert_eq!(etcd.lease_ttl(12345).unwrap(), -1, "unknown lease");

    etcd.pause();
    let start = std::time::Instant::now();
    assert!(!etcd.healthy(), "a paused etcd must not answer");
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "requests to a paused etcd time out"
    );
    etcd.resume();
    assert!(etcd.healthy());
    assert_eq!(
        etcd.get("/service/u/leader").unwrap().as_deref(),
        Some("other")
    );

    etcd.stop();
    assert!(!harness::pid_alive(pid));
}

/// A bare PostgreSQL 15 made by hand (initdb + pg_ctl start) runs as the unprivileged user and
/// accepts the superuser over TCP with a password; its system identifier reads the same through
/// SQL and pg_controldata.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn standalone_postgresql_starts_and_accepts_the_superuser() {
    harness::init();
    let dir = tempfile::tempdir().unwrap();
    let pg = Standalone::init(
        &dir.path().join("data"),
        harness::free_port(),
        &dir.path().join("sock"),
        &dir.path().join("pg.log"),
    );
    let sysid_before = pg.system_identifier();
    pg.start();
    let _guard = PostmasterGuard(pg.clone());
    let pid = pg.postmaster_pid().expect("postmaster running");
    assert_eq!(harness::pid_uid(pid), Some(nix::unistd::geteuid().as_raw()));

    let client = pg.connect().await;
    let version: String = client
        .query_one("SHOW server_version", &[])
        .await
        .unwrap()
        .get(0);
    assert!(version.starts_with("15."), "server_version {version}");
    let sysid: String = client
        .query_one(
            "SELECT system_identifier::text FROM pg_control_system()",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(sysid, sysid_before);
    assert!(sysid.len() >= 10 && sysid.bytes().all(|b| b.is_ascii_digit()));
    pg.create_replication_role().await;
    drop(client);

    let before = harness::dir_fingerprint(&pg.data_dir);
    assert!(before.contains_key(std::path::Path::new("global/pg_control")));
    pg.stop();
    assert!(!harness::pid_alive(pid));
    assert_eq!(pg.postmaster_pid(), None);
}

/// The cluster fixture writes one configuration per member with distinct free ports, and the
/// agent's own configuration loader reads back what the harness meant.
#[test]
fn cluster_configs_load_with_the_agents_loader() {
    harness::init();
    let cluster = Cluster::new(3, Options::default());
    let mut ports = std::collections::HashSet::new();
    for i in 0..3 {
        let m = cluster.member(i);
        assert!(
            ports.insert(m.pg_port) && ports.insert(m.api_port),
            "ports are distinct"
        );
        let loaded = pgpilot_config::load(Some(&m.config_path), &[])
            .unwrap_or_else(|e| panic!("{}: {e}", m.config_path.display()));
        let cfg = loaded.config;
        assert_eq!(cfg.name, format!("pg-{i}"));
        assert_eq!(cfg.scope, "pgpilot-test");
        assert_eq!(cfg.postgresql.port, m.pg_port);
        assert_eq!(cfg.postgresql.data_dir, m.data_dir);
        assert_eq!(cfg.restapi.listen, format!("127.0.0.1:{}", m.api_port));
        assert_eq!(cfg.etcd.hosts, vec![cluster.etcd.endpoint()]);
        assert_eq!(cfg.bootstrap.dcs["ttl"], 20);
        assert_eq!(
            cfg.bootstrap.dcs["postgresql"]["parameters"]["wal_log_hints"],
            "on"
        );
        assert!(
            loaded.warnings.is_empty(),
            "unexpected warnings: {:?}",
            loaded.warnings
        );
    }
}

/// Kills a hand-made postmaster if the test fails before stopping it.
struct PostmasterGuard(Standalone);

impl Drop for PostmasterGuard {
    fn drop(&mut self) {
        harness::kill_postmaster_of(&self.0.data_dir);
    }
}
