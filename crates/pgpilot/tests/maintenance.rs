//! Day-to-day operations through the REST API: the access check of every mutating endpoint,
//! dynamic configuration (`PATCH /config`) applied with a reload or flagged for restart,
//! restarts (immediate, only-if-pending, scheduled), reinitialisation of a broken replica, and
//! maintenance mode (pause/resume).

mod harness;

use std::time::{Duration, Instant};

use anyhow::ensure;
use harness::{Cluster, Options, FAILOVER_TIMEOUT, SHORT_TIMEOUT};
use serde_json::{json, Value};

async fn show(cluster: &Cluster, i: usize, guc: &str) -> anyhow::Result<String> {
    let client = cluster.pg_connect_try(i).await?;
    let row = client.query_one(&format!("SHOW {guc}"), &[]).await?;
    Ok(row.get(0))
}

async fn start_time(cluster: &Cluster, i: usize) -> String {
    cluster.patroni(i).await.unwrap()["postmaster_start_time"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// Waits until every member key's `pause` field is `want` (`None`: absent).
async fn wait_member_keys_pause(cluster: &Cluster, want: Option<bool>) {
    cluster
        .wait(
            SHORT_TIMEOUT,
            &format!("pause {want:?} in every member key"),
            async || {
                for i in 0..cluster.len() {
                    let m = cluster
                        .etcd_get(&format!("members/{}", cluster.member(i).name))
                        .unwrap_or_default();
                    let m: Value = serde_json::from_str(&m)?;
                    ensure!(m.get("pause").and_then(Value::as_bool) == want, "{m}");
                }
                Ok(())
            },
        )
        .await;
}

/// Every mutating endpoint answers 401 without credentials and with wrong ones, as Patroni
/// does; malformed bodies get 400/411. Then `PATCH /config` changes `work_mem` (applied by a
/// reload on every member, no restart) and `max_connections` (flagged as a pending restart);
/// `POST /restart {"restart_pending": true}` restarts exactly the flagged members, and a
/// scheduled restart can be listed, cancelled, and fires at its time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_changes_reload_or_flag_a_restart_and_restarts_follow_their_filters() {
    harness::init();
    let cluster = Cluster::start(3, Options::default());
    let leader = cluster.wait_for_leader().await;
    cluster.wait_for_replicas_streaming(2).await;

    let unsafe_endpoints = [
        ("POST", "/restart"),
        ("DELETE", "/restart"),
        ("POST", "/reinitialize"),
        ("POST", "/reload"),
        ("PATCH", "/config"),
        ("PUT", "/config"),
        ("POST", "/switchover"),
        ("POST", "/failover"),
        ("DELETE", "/switchover"),
    ];
    let http = reqwest::Client::new();
    for (method, path) in unsafe_endpoints {
        let (code, text) = cluster
            .api_call(leader, method, path, Some(json!({"x": 1})), false)
            .await
            .unwrap();
        assert_eq!(
            (code, text.as_str()),
            (401, "no auth header received"),
            "{method} {path}"
        );
        let url = format!("{}{path}", cluster.member(leader).api_base());
        let reply = http
            .request(
                reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
                &url,
            )
            .basic_auth("admin", Some("wrong"))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(
            reply.status().as_u16(),
            401,
            "{method} {path} with a wrong password"
        );
        assert_eq!(
            reply.headers()["www-authenticate"].to_str().unwrap(),
            "Basic realm=\"Patroni\""
        );
    }
    let (code, _) = cluster
        .api_call(leader, "PATCH", "/config", None, true)
        .await
        .unwrap();
    assert_eq!(code, 411, "PATCH without a body");
    let (code, _) = cluster
        .api_call(leader, "PATCH", "/config", Some(json!([1, 2])), true)
        .await
        .unwrap();
    assert_eq!(code, 400, "PATCH with a JSON array");

    // work_mem: a reload, no restart.
    let before: Vec<String> = {
        let mut v = Vec::new();
        for i in 0..3 {
            v.push(start_time(&cluster, i).await);
        }
        v
    };
    let (code, body) = cluster
        .api_call(
            leader,
            "PATCH",
            "/config",
            Some(json!({"postgresql": {"parameters": {"work_mem": "7MB"}}})),
            true,
        )
        .await
        .unwrap();
    assert_eq!(code, 200, "{body}");
    let doc: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["postgresql"]["parameters"]["work_mem"], "7MB");
    assert_eq!(doc["ttl"], 20, "the rest of /config is kept: {doc}");
    for (i, started) in before.iter().enumerate() {
        cluster
            .wait(SHORT_TIMEOUT, "work_mem = 7MB", async || {
                let v = show(&cluster, i, "work_mem").await?;
                ensure!(v == "7MB", "work_mem is {v}");
                Ok(())
            })
            .await;
        assert_eq!(
            &start_time(&cluster, i).await,
            started,
            "no restart for work_mem"
        );
    }

    // max_connections: pending restart on every member, visible in /patroni and /cluster.
    let (code, _) = cluster
        .api_call(
            leader,
            "PATCH",
            "/config",
            Some(json!({"postgresql": {"parameters": {"max_connections": 150}}})),
            true,
        )
        .await
        .unwrap();
    assert_eq!(code, 200);
    for i in 0..3 {
        cluster
            .wait(SHORT_TIMEOUT, "pending restart", async || {
                let p = cluster.patroni(i).await?;
                ensure!(p["pending_restart"] == json!(true), "{p}");
                ensure!(
                    p["pending_restart_reason"]["max_connections"]["new_value"] == json!("150"),
                    "{}",
                    p["pending_restart_reason"]
                );
                Ok(())
            })
            .await;
    }
    let (_, c) = cluster.api_get(leader, "/cluster").await.unwrap();
    for m in c["members"].as_array().unwrap() {
        assert_eq!(m["pending_restart"], json!(true), "{m}");
    }

    // Restart filters.
    let (code, text) = cluster
        .api_call(
            leader,
            "POST",
            "/restart",
            Some(json!({"role": "boss"})),
            true,
        )
        .await
        .unwrap();
    assert_eq!(
        (code, text.as_str()),
        (
            400,
            "PostgreSQL role should be either primary, standby_leader, or replica"
        )
    );
    let (code, text) = cluster
        .api_call(
            leader,
            "POST",
            "/restart",
            Some(json!({"role": "replica"})),
            true,
        )
        .await
        .unwrap();
    assert_eq!(
        (code, text.as_str()),
        (503, "restart conditions are not satisfied")
    );
    let (code, text) = cluster
        .api_call(leader, "POST", "/restart", Some(json!({"nope": 1})), true)
        .await
        .unwrap();
    assert_eq!(
        (code, text.as_str()),
        (400, "Unknown filter for the scheduled restart: nope")
    );

    // Replicas first (a standby needs max_connections >= the primary's), then the leader.
    let order: Vec<usize> = (0..3).filter(|&i| i != leader).chain([leader]).collect();
    for &i in &order {
        let (code, text) = cluster
            .api_call(
                i,
                "POST",
                "/restart",
                Some(json!({"restart_pending": true})),
                true,
            )
            .await
            .unwrap();
        assert_eq!(
            (code, text.as_str()),
            (200, "restarted successfully"),
            "{}",
            cluster.member(i).name
        );
        assert_ne!(start_time(&cluster, i).await, before[i], "restarted");
        assert_eq!(show(&cluster, i, "max_connections").await.unwrap(), "150");
    }
    for i in 0..3 {
        cluster
            .wait(SHORT_TIMEOUT, "no pending restart", async || {
                let p = cluster.patroni(i).await?;
                ensure!(p.get("pending_restart").is_none(), "{p}");
                Ok(())
            })
            .await;
    }
    let (code, text) = cluster
        .api_call(
            leader,
            "POST",
            "/restart",
            Some(json!({"restart_pending": true})),
            true,
        )
        .await
        .unwrap();
    assert_eq!(
        (code, text.as_str()),
        (503, "restart conditions are not satisfied")
    );
    assert_eq!(
        cluster.leader_index(),
        Some(leader),
        "restarts keep the leader"
    );

    // Scheduled restart: listed, refused twice, cancelled; then fires at its time.
    let replica = order[0];
    let at = |s: i64| {
        jiff::Timestamp::now()
            .checked_add(jiff::SignedDuration::from_secs(s))
            .unwrap()
            .to_string()
    };
    let (code, text) = cluster
        .api_call(
            replica,
            "POST",
            "/restart",
            Some(json!({"schedule": at(3600)})),
            true,
        )
        .await
        .unwrap();
    assert_eq!((code, text.as_str()), (202, "Restart scheduled"));
    let (code, text) = cluster
        .api_call(
            replica,
            "POST",
            "/restart",
            Some(json!({"schedule": at(3600)})),
            true,
        )
        .await
        .unwrap();
    assert_eq!(
        (code, text.as_str()),
        (409, "Another restart is already scheduled")
    );
    cluster
        .wait(
            SHORT_TIMEOUT,
            "scheduled_restart in /patroni and the member key",
            async || {
                let p = cluster.patroni(replica).await?;
                ensure!(p["scheduled_restart"]["schedule"].is_string(), "{p}");
                let (_, c) = cluster.api_get(replica, "/cluster").await?;
                let m = c["members"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|m| m["name"] == json!(cluster.member(replica).name))
                    .cloned()
                    .unwrap_or_default();
                ensure!(m["scheduled_restart"].is_object(), "{m}");
                Ok(())
            },
        )
        .await;
    let (code, text) = cluster
        .api_call(replica, "DELETE", "/restart", None, true)
        .await
        .unwrap();
    assert_eq!((code, text.as_str()), (200, "scheduled restart deleted"));
    let (code, _) = cluster
        .api_call(replica, "DELETE", "/restart", None, true)
        .await
        .unwrap();
    assert_eq!(code, 404);
    let before = start_time(&cluster, replica).await;
    let (code, _) = cluster
        .api_call(
            replica,
            "POST",
            "/restart",
            Some(json!({"schedule": at(4)})),
            true,
        )
        .await
        .unwrap();
    assert_eq!(code, 202);
    let scheduled = Instant::now() + Duration::from_secs(4);
    cluster
        .wait(SHORT_TIMEOUT, "the scheduled restart", async || {
            ensure!(start_time(&cluster, replica).await != before, "not yet");
            Ok(())
        })
        .await;
    assert!(
        Instant::now() + Duration::from_millis(500) >= scheduled,
        "restarted early"
    );
}

/// A replica whose data directory was deleted under its running PostgreSQL is rebuilt by
/// `POST /reinitialize`: the orphaned postmaster is stopped, the directory cloned again from
/// the leader, and the replica streams with the rows written meanwhile. The leader refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reinitialize_rebuilds_a_replica_whose_data_directory_was_deleted() {
    harness::init();
    let cluster = Cluster::start(3, Options::default());
    let leader = cluster.wait_for_leader().await;
    cluster.wait_for_replicas_streaming(2).await;
    let sysid = cluster.system_identifier(leader).await;
    let (code, text) = cluster
        .api_call(leader, "POST", "/reinitialize", None, true)
        .await
        .unwrap();
    assert_eq!(
        (code, text.as_str()),
        (503, "I am the leader, can not reinitialize")
    );

    let replica = (0..3).find(|&i| i != leader).unwrap();
    let data = cluster.member(replica).data_dir.clone();
    std::fs::remove_dir_all(&data).unwrap();
    cluster
        .pg_connect(leader)
        .await
        .batch_execute("CREATE TABLE ri (id int PRIMARY KEY); INSERT INTO ri VALUES (1);")
        .await
        .unwrap();
    let (code, text) = cluster
        .api_call(
            replica,
            "POST",
            "/reinitialize",
            Some(json!({"force": true})),
            true,
        )
        .await
        .unwrap();
    assert_eq!((code, text.as_str()), (200, "reinitialize started"));
    cluster
        .wait_for_streaming_replica(replica, None, FAILOVER_TIMEOUT)
        .await;
    cluster.wait_for_row(replica, "ri", 1).await;
    assert_eq!(cluster.system_identifier(replica).await, sysid);
    assert!(data.join("PG_VERSION").exists());
    let others: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    cluster.wait_for_walsenders(leader, &others).await;
}

/// Maintenance mode: with `pause: true` every member key says so; the leader's agent can die
/// and its PostgreSQL keeps serving writes with no promotion anywhere, even after the lease
/// expired; a replica's agent stopped with SIGTERM leaves its PostgreSQL running. The restarted
/// agent adopts the running primary and takes the key back, and resume ends maintenance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_leaves_postgres_alone_and_resume_restores_management() {
    harness::init();
    let options = Options::default();
    let ttl = options.ttl;
    let cluster = Cluster::start(3, options);
    let leader = cluster.wait_for_leader().await;
    cluster.wait_for_replicas_streaming(2).await;
    let leader_name = cluster.member(leader).name.clone();
    cluster
        .pg_connect(leader)
        .await
        .batch_execute("CREATE TABLE pz (id int PRIMARY KEY, note text)")
        .await
        .unwrap();

    let (code, _) = cluster
        .api_call(
            leader,
            "PATCH",
            "/config",
            Some(json!({"pause": true})),
            true,
        )
        .await
        .unwrap();
    assert_eq!(code, 200);
    wait_member_keys_pause(&cluster, Some(true)).await;
    let (_, c) = cluster.api_get(leader, "/cluster").await.unwrap();
    assert_eq!(c["pause"], json!(true), "{c}");
    // Switchover without a candidate is refused in pause.
    let (code, text) = cluster
        .api_call(
            leader,
            "POST",
            "/switchover",
            Some(json!({"leader": leader_name})),
            true,
        )
        .await
        .unwrap();
    assert_eq!(
        (code, text.as_str()),
        (
            400,
            "Switchover is possible only to a specific candidate in a paused state"
        )
    );

    let pm = cluster.postmaster_pid(leader).expect("leader postmaster");
    cluster.kill_agent(leader);
    let replica = (0..3).find(|&i| i != leader).unwrap();
    cluster.terminate_agent(replica);
    let replica_pm = cluster.postmaster_pid(replica).expect("replica postmaster");
    cluster.wait_agent_exit(replica, SHORT_TIMEOUT).await;
    assert_eq!(
        cluster.postmaster_pid(replica),
        Some(replica_pm),
        "SIGTERM in pause leaves PostgreSQL running"
    );
    // Wait past the lease: nobody promotes, the old primary still takes writes.
    tokio::time::sleep(Duration::from_secs(ttl + 5)).await;
    assert_eq!(cluster.leader_name(), None, "the leader key expired");
    for i in (0..3).filter(|&i| i != leader) {
        assert!(
            cluster.in_recovery(i).await.unwrap(),
            "{} stayed a replica",
            cluster.member(i).name
        );
    }
    assert_eq!(cluster.postmaster_pid(leader), Some(pm));
    cluster
        .wait_writable(leader, "pz", 1, "paused, agent dead")
        .await;
    let other = (0..3).find(|&i| i != leader && i != replica).unwrap();
    assert!(
        cluster.agent_log(other).contains("PAUSE: "),
        "paused cycles are logged with the PAUSE prefix"
    );

    // The agents come back: the running primary takes the key again; nothing restarts.
    cluster.start_agent(leader);
    cluster.start_agent(replica);
    cluster
        .wait(
            SHORT_TIMEOUT,
            "the old leader to take the key back",
            async || {
                ensure!(
                    cluster.leader_name().as_deref() == Some(leader_name.as_str()),
                    "{:?}",
                    cluster.leader_name()
                );
                Ok(())
            },
        )
        .await;
    assert_eq!(
        cluster.postmaster_pid(leader),
        Some(pm),
        "PostgreSQL was adopted, not restarted"
    );
    assert_eq!(cluster.postmaster_pid(replica), Some(replica_pm));

    // Still paused: a switchover to a named candidate is carried out, and the old leader
    // comes back as a replica of the new one.
    let cand_name = cluster.member(replica).name.clone();
    let (code, text) = cluster
        .api_call(
            leader,
            "POST",
            "/switchover",
            Some(json!({"leader": leader_name, "candidate": cand_name})),
            true,
        )
        .await
        .unwrap();
    assert_eq!(code, 200, "{text}");
    assert_eq!(
        text,
        format!("Successfully switched over to \"{cand_name}\"")
    );
    let tl = cluster.primary_timeline(replica).await;
    cluster
        .wait_for_streaming_replica(leader, Some(tl), FAILOVER_TIMEOUT)
        .await;
    let leader = replica;

    let (code, _) = cluster
        .api_call(
            leader,
            "PATCH",
            "/config",
            Some(json!({"pause": null})),
            true,
        )
        .await
        .unwrap();
    assert_eq!(code, 200);
    wait_member_keys_pause(&cluster, None).await;
    // Management is back: a leader crash is failed over again.
    cluster.kill_agent(leader);
    cluster.kill_postmaster(leader);
    let new = cluster
        .wait_for_leader_except(&[leader], FAILOVER_TIMEOUT)
        .await;
    cluster.wait_writable(new, "pz", 2, "after resume").await;
}

/// Local configuration changes are applied without restarting the agent: `POST /reload` on one
/// member and SIGHUP on another re-read the YAML file, and the new `postgresql.parameters`
/// value reaches PostgreSQL with a reload (same postmaster).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_reload_and_sighup_apply_a_changed_local_configuration() {
    harness::init();
    let cluster = Cluster::start(2, Options::default());
    let leader = cluster.wait_for_leader().await;
    cluster.wait_for_replicas_streaming(1).await;
    let replica = 1 - leader;
    let pids = [
        cluster.postmaster_pid(0).unwrap(),
        cluster.postmaster_pid(1).unwrap(),
    ];
    for i in 0..2 {
        let path = &cluster.member(i).config_path;
        let text = std::fs::read_to_string(path).unwrap();
        // The local `postgresql.parameters` block is the one indented by two spaces.
        let edited = text.replacen(
            "\n  parameters:\n",
            "\n  parameters:\n    log_min_duration_statement: 1234\n",
            1,
        );
        assert_ne!(edited, text, "the parameters block was found");
        std::fs::write(path, edited).unwrap();
    }
    let (code, text) = cluster
        .api_call(leader, "POST", "/reload", None, true)
        .await
        .unwrap();
    assert_eq!((code, text.as_str()), (202, "reload scheduled"));
    harness::signal(
        cluster.agent_pid(replica).unwrap(),
        nix::sys::signal::Signal::SIGHUP,
    );
    for (i, pid) in pids.into_iter().enumerate() {
        cluster
            .wait(
                SHORT_TIMEOUT,
                "log_min_duration_statement = 1234ms",
                async || {
                    let v = show(&cluster, i, "log_min_duration_statement").await?;
                    ensure!(v == "1234ms", "{v}");
                    Ok(())
                },
            )
            .await;
        assert_eq!(cluster.postmaster_pid(i), Some(pid), "no restart");
    }
    assert!(cluster.agent_running(0) && cluster.agent_running(1));

    // Nothing changed: `POST /reload` still reloads PostgreSQL (Patroni does, and pglift waits
    // for pg_conf_load_time() to move after asking).
    let load_time = async |i: usize| -> anyhow::Result<String> {
        let row = cluster
            .pg_connect_try(i)
            .await?
            .query_one("SELECT pg_conf_load_time()::text", &[])
            .await?;
        Ok(row.get(0))
    };
    for i in 0..2 {
        let before = load_time(i).await.unwrap();
        let (code, _) = cluster
            .api_call(i, "POST", "/reload", None, true)
            .await
            .unwrap();
        assert_eq!(code, 202);
        cluster
            .wait(SHORT_TIMEOUT, "pg_conf_load_time() moves", async || {
                let now = load_time(i).await?;
                ensure!(now != before, "still {now}");
                Ok(())
            })
            .await;
    }
}
