//! A cluster whose etcd speaks only TLS and asks for client certificates: the agents get
//! `etcd3.hosts` as https URLs with `cacert`/`cert`/`key`, bootstrap, and `pgpilotctl` reads
//! the same configuration. With authentication turned on as well, a switchover and a crash
//! failover go through it. Renewed certificates are read again on a reload, without a restart.

mod harness;

use harness::{make_certs, Cluster, Options, FAILOVER_TIMEOUT, SHORT_TIMEOUT};

/// Two agents bootstrap one primary and one streaming replica through a TLS etcd with
/// `--client-cert-auth`; `pgpilotctl list` with a member's file sees both; then a switchover
/// and a crash failover go through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_members_bootstrap_switch_over_and_fail_over_through_a_tls_etcd() {
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

    let (code, stdout) = harness::pgpilotctl(&cluster.member(leader).config_path, &["list"]).await;
    assert_eq!(code, 0, "pgpilotctl list failed: {stdout}");
    for i in 0..2 {
        assert!(stdout.contains(cluster.member(i).name.as_str()), "{stdout}");
    }
    assert!(
        stdout.contains("Leader") && stdout.contains("streaming"),
        "{stdout}"
    );
    switchover_then_crash_failover(&cluster).await;
}

/// Through an etcd over TLS with a password (`auth enable`, the agents log in as `root` and
/// present their client certificate, which etcd does not require here: its JSON gateway, the
/// harness's way in, refuses certificates once auth is on; `pgpilot-dcs`'s `tls_and_auth_together`
/// covers both required at once): bootstrap, a switchover to the replica, then a crash of the new
/// leader (agent and postmaster killed) fails over to the old one, and the crashed member
/// rejoins as a replica when its agent starts again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchover_and_crash_failover_through_a_tls_etcd_with_authentication() {
    harness::init();
    let cluster = Cluster::start(
        2,
        Options {
            etcd_tls: true,
            etcd_auth: true,
            ..Options::default()
        },
    );
    switchover_then_crash_failover(&cluster).await;
}

/// etcd's certificates are replaced by ones of a new CA and etcd restarts with them: the agents,
/// which trust the old CA, lose etcd (the primary demotes itself) until a reload (`POST /reload`,
/// as SIGHUP) makes them read their etcd TLS files again, now the new CA's; then the cluster
/// has a leader and a streaming replica again, with no agent restarted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewed_etcd_certificates_are_read_on_reload() {
    harness::init();
    let cluster = Cluster::start(
        2,
        Options {
            etcd_tls: true,
            ..Options::default()
        },
    );
    let leader = cluster.wait_for_leader().await;
    cluster.wait_for_replicas_streaming(1).await;
    let pids: Vec<Option<i32>> = (0..2).map(|i| cluster.agent_pid(i)).collect();

    // A reload with the same files keeps the etcd connections.
    let (code, text) = cluster
        .api_call(0, "POST", "/reload", Some(serde_json::json!({})), true)
        .await
        .unwrap();
    assert!(code == 200 || code == 202, "POST /reload: {code} {text}");
    cluster
        .wait(SHORT_TIMEOUT, "the reload to be applied", async || {
            let log = cluster.agent_log(0);
            anyhow::ensure!(log.contains("etcd TLS files unchanged"), "not yet");
            Ok(())
        })
        .await;
    assert!(!cluster.agent_log(0).contains("etcd TLS files read again"));

    // A new CA, new server and client certificates, at the same paths.
    let ca = cluster.etcd.tls().unwrap().ca.clone();
    make_certs(ca.parent().unwrap());
    cluster.etcd.restart_member(0);
    cluster
        .wait(
            FAILOVER_TIMEOUT,
            "the primary to demote without etcd",
            async || {
                let (code, _) = cluster
                    .api_call(leader, "GET", "/primary", None, false)
                    .await?;
                anyhow::ensure!(code == 503, "GET /primary answers {code}");
                Ok(())
            },
        )
        .await;

    for i in 0..2 {
        let (code, text) = cluster
            .api_call(i, "POST", "/reload", Some(serde_json::json!({})), true)
            .await
            .unwrap();
        assert!(code == 200 || code == 202, "POST /reload: {code} {text}");
    }
    let leader = cluster.wait_for_leader().await;
    let replicas = cluster.wait_for_replicas_streaming(1).await;
    assert!(!replicas.contains(&leader));
    let after: Vec<Option<i32>> = (0..2).map(|i| cluster.agent_pid(i)).collect();
    assert_eq!(pids, after, "no agent was restarted");
    assert!(cluster.agent_log(0).contains("etcd TLS files read again"));
}

/// A switchover to the replica, then a crash of the new leader (agent and postmaster killed):
/// the other member takes over, and the crashed one rejoins as a replica when its agent starts
/// again.
async fn switchover_then_crash_failover(cluster: &Cluster) {
    let first = cluster.wait_for_leader().await;
    cluster.wait_for_replicas_streaming(1).await;
    let second = 1 - first;

    let text = cluster.switchover(first, Some(second)).await;
    eprintln!("switchover: {text}");
    assert_eq!(
        cluster.leader_name().as_deref(),
        Some(cluster.member(second).name.as_str())
    );
    let timeline = cluster.primary_timeline(second).await;
    cluster
        .wait_for_streaming_replica(first, Some(timeline), FAILOVER_TIMEOUT)
        .await;

    cluster.kill_agent(second);
    cluster.kill_postmaster(second);
    let elected = cluster
        .wait_for_leader_except(&[second], FAILOVER_TIMEOUT)
        .await;
    assert_eq!(elected, first, "the surviving member takes over");
    let timeline = cluster.primary_timeline(first).await;
    cluster.start_agent(second);
    cluster
        .wait_for_streaming_replica(second, Some(timeline), FAILOVER_TIMEOUT)
        .await;
}
