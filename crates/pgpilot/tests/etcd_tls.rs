//! A cluster whose etcd speaks only TLS and asks for client certificates: the agents get
//! `etcd3.hosts` as https URLs with `cacert`/`cert`/`key`, bootstrap, and `pgpilotctl` reads
//! the same configuration.

mod harness;

use std::time::Duration;

use harness::{Cluster, Options};

const PGPILOTCTL: &str = env!("CARGO_BIN_EXE_pgpilotctl");

/// Two agents bootstrap one primary and one streaming replica through a TLS etcd with
/// `--client-cert-auth`; `pgpilotctl list` with a member's file sees both.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_members_bootstrap_through_a_tls_etcd() {
    harness::init();
    let cluster = Cluster::start(
        2,
        Options {
            etcd_tls: true,
            ..Options::default()
        },
    );
    assert!(cluster.etcd.urls()[0].starts_with("https://"));
    let leader = cluster.wait_for_leader().await;
    let replicas = cluster.wait_for_replicas_streaming(1).await;
    assert!(!replicas.contains(&leader));
    assert_eq!(
        cluster.leader_name().as_deref(),
        Some(cluster.member(leader).name.as_str())
    );

    let home = tempfile::tempdir().unwrap();
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(PGPILOTCTL)
            .arg("-c")
            .arg(&cluster.member(leader).config_path)
            .arg("list")
            .env_clear()
            .env("HOME", home.path())
            .env("PATH", "/usr/bin:/bin")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("pgpilotctl list within 60 s")
    .expect("run pgpilotctl");
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "pgpilotctl list failed");
    for i in 0..2 {
        assert!(stdout.contains(cluster.member(i).name.as_str()), "{stdout}");
    }
    assert!(
        stdout.contains("Leader") && stdout.contains("streaming"),
        "{stdout}"
    );
}
