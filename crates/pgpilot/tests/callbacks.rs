//! The user's hooks with real agents (Patroni's `postgresql.callbacks`, `pre_promote`, and
//! `primary_start_timeout: 0` from `features/recovery.feature`): each member's callbacks append
//! `<action> <role> <scope>` to a file in its directory, as Patroni's `features/callback2.py`
//! does.

mod harness;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::ensure;
use harness::{Cluster, Options, FAILOVER_TIMEOUT, SHORT_TIMEOUT};
use serde_json::{json, Value};

/// The file member `i`'s callbacks write.
fn cb_log(cluster: &Cluster, i: usize) -> PathBuf {
    cluster.member(i).dir.join("cb.log")
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Options whose members run `callback.sh <their cb.log>` for every callback, plus `extra` on
/// the configuration of each member.
fn with_callbacks(extra: fn(usize, &mut Value)) -> Options {
    Options {
        customize: Some(Arc::new(move |i, doc: &mut Value| {
            let data_dir = PathBuf::from(doc["postgresql"]["data_dir"].as_str().unwrap());
            let member_dir = data_dir.parent().unwrap().to_path_buf();
            let script = member_dir.join("callback.sh");
            // Also records any PATRONI_* variable the callback inherited (there must be none).
            std::fs::write(
                &script,
                "#!/bin/sh\nlog=$1\nshift\necho \"$@\" >> \"$log\"\n\
                 env | grep '^PATRONI_' >> \"$log.env\" || true\n",
            )
            .unwrap();
            let command = format!(
                "sh {} {}",
                script.display(),
                member_dir.join("cb.log").display()
            );
            let actions = [
                "on_start",
                "on_stop",
                "on_restart",
                "on_reload",
                "on_role_change",
            ];
            let callbacks: serde_json::Map<String, Value> = actions
                .iter()
                .map(|a| (a.to_string(), json!(command)))
                .collect();
            doc["postgresql"]["callbacks"] = Value::Object(callbacks);
            extra(i, doc);
        })),
        // A password from the environment, as container deployments pass it.
        agent_env: vec![(
            "PATRONI_REPLICATION_PASSWORD".into(),
            "from-the-environment".into(),
        )],
        ..Options::default()
    }
}

/// Waits until member `i`'s callback file has the line `want`.
async fn wait_callback(cluster: &Cluster, i: usize, want: &str) {
    let path = cb_log(cluster, i);
    cluster
        .wait(
            FAILOVER_TIMEOUT,
            &format!("'{want}' in {}", path.display()),
            async || {
                let got = lines(&path);
                ensure!(got.iter().any(|l| l == want), "callbacks so far: {got:?}");
                Ok(())
            },
        )
        .await;
}

/// Bootstrap fires `on_start primary` on the new leader and a clone `on_start replica`; a
/// switchover fires `on_role_change primary` on the candidate, and `on_stop primary` then
/// `on_role_change replica` on the old leader; a clean shutdown fires `on_stop`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_fire_on_bootstrap_switchover_and_shutdown() {
    harness::init();
    let cluster = Cluster::new(2, with_callbacks(|_, _| {}));
    let scope = cluster.options.scope.clone();
    cluster.start_agent(0);
    assert_eq!(cluster.wait_for_leader().await, 0);
    wait_callback(&cluster, 0, &format!("on_start primary {scope}")).await;
    cluster.start_agent(1);
    cluster.wait_for_replicas_streaming(1).await;
    wait_callback(&cluster, 1, &format!("on_start replica {scope}")).await;

    // The agents read PATRONI_REPLICATION_PASSWORD (the replica streams with it) and their
    // callbacks did not inherit it.
    for i in 0..2 {
        let inherited =
            std::fs::read_to_string(cluster.member(i).dir.join("cb.log.env")).unwrap_or_default();
        assert!(
            inherited.trim().is_empty(),
            "PATRONI_* variables reached a callback: {inherited}"
        );
    }
    cluster.switchover(0, Some(1)).await;
    wait_callback(&cluster, 1, &format!("on_role_change primary {scope}")).await;
    wait_callback(&cluster, 0, &format!("on_stop primary {scope}")).await;
    wait_callback(&cluster, 0, &format!("on_role_change replica {scope}")).await;
    let old_leader = lines(&cb_log(&cluster, 0));
    let stop = old_leader
        .iter()
        .position(|l| l == &format!("on_stop primary {scope}"))
        .unwrap();
    let follow = old_leader
        .iter()
        .position(|l| l == &format!("on_role_change replica {scope}"))
        .unwrap();
    assert!(stop < follow, "{old_leader:?}");

    cluster.terminate_agent(1);
    cluster.wait_agent_exit(1, SHORT_TIMEOUT).await;
    // The agent waits for its last callback before it exits.
    let new_leader = lines(&cb_log(&cluster, 1));
    eprintln!("callbacks of the old leader: {old_leader:?}\nof the new leader: {new_leader:?}");
    assert_eq!(
        new_leader.last().map(String::as_str),
        Some(format!("on_stop primary {scope}").as_str()),
        "{new_leader:?}"
    );
    let log = cluster.agent_log(1);
    assert!(!log.contains("Failed to execute"), "{log}");
}

/// A candidate whose `pre_promote` exits non-zero does not promote: it logs Patroni's
/// sentences, gives the key back and sits out the next race, so the old leader, which has no
/// such script, takes the key again and the candidate follows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_pre_promote_gives_the_key_back() {
    harness::init();
    let cluster = Cluster::new(
        2,
        with_callbacks(|i, doc| {
            if i == 1 {
                let data_dir = PathBuf::from(doc["postgresql"]["data_dir"].as_str().unwrap());
                let fence_log = data_dir.parent().unwrap().join("fence.log");
                doc["postgresql"]["pre_promote"] = json!(format!(
                    "sh -c 'echo refused >> {}; exit 3'",
                    fence_log.display()
                ));
            }
        }),
    );
    let scope = cluster.options.scope.clone();
    cluster.start_agent(0);
    assert_eq!(cluster.wait_for_leader().await, 0);
    cluster.start_agent(1);
    cluster.wait_for_replicas_streaming(1).await;

    let (leader, candidate) = (
        cluster.member(0).name.clone(),
        cluster.member(1).name.clone(),
    );
    // The answer depends on when the candidate gives up; what follows is what matters.
    let answer = cluster
        .api_call(
            0,
            "POST",
            "/switchover",
            Some(json!({"leader": leader, "candidate": candidate})),
            true,
        )
        .await;
    eprintln!("POST /switchover answered {answer:?}");

    cluster
        .wait(
            FAILOVER_TIMEOUT,
            "the candidate cancels its promotion",
            async || {
                let log = cluster.agent_log(1);
                ensure!(
                    log.contains("pre_promote script `sh -c")
                        && log.contains("exited with 3")
                        && log.contains(
                            "Releasing the leader key voluntarily because the pre-promote script failed"
                        )
                        && log.contains("Promotion cancelled because the pre-promote script failed"),
                    "not yet"
                );
                Ok(())
            },
        )
        .await;
    assert_eq!(
        lines(&cluster.member(1).dir.join("fence.log"))
            .first()
            .map(String::as_str),
        Some("refused")
    );
    let leader = cluster.wait_for_leader_except(&[1], FAILOVER_TIMEOUT).await;
    assert_eq!(leader, 0);
    cluster
        .wait(
            FAILOVER_TIMEOUT,
            "the candidate follows again",
            async || {
                let st = cluster.patroni(1).await?;
                ensure!(st["role"] == "replica" && st["state"] == "running", "{st}");
                Ok(())
            },
        )
        .await;
    assert!(
        !lines(&cb_log(&cluster, 1)).contains(&format!("on_role_change primary {scope}")),
        "the candidate was never promoted"
    );
    assert_eq!(
        cluster.primary_timeline(0).await,
        2,
        "the old leader promoted again once"
    );
}

/// `master_start_timeout: 0` (Patroni's `features/recovery.feature`): when the leader's
/// postmaster dies, the replica takes over at once instead of the leader restarting it, and the
/// old leader comes back as a replica (`on_role_change replica`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zero_start_timeout_fails_over_after_a_crash() {
    harness::init();
    let cluster = Cluster::new(
        2,
        with_callbacks(|_, doc| {
            doc["bootstrap"]["dcs"]["master_start_timeout"] = json!(0);
        }),
    );
    let scope = cluster.options.scope.clone();
    cluster.start_agent(0);
    assert_eq!(cluster.wait_for_leader().await, 0);
    cluster.start_agent(1);
    cluster.wait_for_replicas_streaming(1).await;

    assert!(cluster.kill_postmaster(0).is_some());
    let leader = cluster.wait_for_leader_except(&[0], FAILOVER_TIMEOUT).await;
    assert_eq!(leader, 1);
    let log = cluster.agent_log(0);
    assert!(log.contains("Primary crashed. Failing over."), "{log}");
    assert!(
        log.contains("stopped PostgreSQL to fail over after a crash"),
        "{log}"
    );
    wait_callback(&cluster, 1, &format!("on_role_change primary {scope}")).await;
    wait_callback(&cluster, 0, &format!("on_role_change replica {scope}")).await;
}
