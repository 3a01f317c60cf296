//! Switchover and manual failover through the REST API (`POST /switchover`, `POST /failover`):
//! the leader hands over to a named candidate or to the healthiest replica without losing an
//! acknowledged write, scheduled switchovers wait for their time, and a failover to a named
//! candidate works while the leader is down.

mod harness;

use std::time::{Duration, Instant};

use harness::{secs, Cluster, Options, Writer, FAILOVER_TIMEOUT};
use serde_json::json;

/// Two switchovers under a client writing every 10 ms: first to a named candidate, then to
/// whichever replica is healthiest. Each answers 200 with Patroni's sentence, every
/// acknowledged row is on the final leader, and the old leaders stream from the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchover_loses_no_acknowledged_write_and_the_old_leader_follows() {
    harness::init();
    let cluster = Cluster::start(3, Options::default());
    let first = cluster.wait_for_leader().await;
    cluster.wait_for_replicas_streaming(2).await;
    cluster
        .pg_connect(first)
        .await
        .batch_execute("CREATE TABLE sw (id bigint PRIMARY KEY, at timestamptz)")
        .await
        .unwrap();
    let ports: Vec<u16> = (0..3).map(|i| cluster.member(i).pg_port).collect();
    let writer = Writer::start(&ports, "sw");
    tokio::time::sleep(Duration::from_secs(1)).await;

    // 1. To a named candidate.
    let candidate = (0..3).find(|&i| i != first).unwrap();
    let (leader_name, cand_name) = (
        cluster.member(first).name.clone(),
        cluster.member(candidate).name.clone(),
    );
    let started = Instant::now();
    let (code, text) = cluster
        .api_call(
            first,
            "POST",
            "/switchover",
            Some(json!({"leader": leader_name, "candidate": cand_name})),
            true,
        )
        .await
        .unwrap();
    eprintln!(
        "POST /switchover answered {code} {text:?} after {}",
        secs(started.elapsed())
    );
    assert_eq!(code, 200, "{text}");
    assert_eq!(
        text,
        format!("Successfully switched over to \"{cand_name}\"")
    );
    assert_eq!(cluster.leader_name().as_deref(), Some(cand_name.as_str()));
    let new_tl = cluster.primary_timeline(candidate).await;
    cluster
        .wait_for_streaming_replica(first, Some(new_tl), FAILOVER_TIMEOUT)
        .await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    // 2. To anyone: the healthiest replica takes over.
    let second = candidate;
    let second_name = cand_name.clone();
    let (code, text) = cluster
        .api_call(
            second,
            "POST",
            "/switchover",
            Some(json!({"leader": second_name})),
            true,
        )
        .await
        .unwrap();
    assert_eq!(code, 200, "{text}");
    let third = cluster
        .wait_for_leader_except(&[second], FAILOVER_TIMEOUT)
        .await;
    assert_eq!(
        text,
        format!(
            "Successfully switched over to \"{}\"",
            cluster.member(third).name
        )
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    // More rounds for measurements: PGPILOT_SWITCHOVER_ROUNDS=5 switches over 5 more times.
    let rounds: usize = std::env::var("PGPILOT_SWITCHOVER_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut third = third;
    for _ in 0..rounds {
        cluster.switchover(third, None).await;
        let next = cluster
            .wait_for_leader_except(&[third], FAILOVER_TIMEOUT)
            .await;
        let tl = cluster.primary_timeline(next).await;
        cluster
            .wait_for_streaming_replica(third, Some(tl), FAILOVER_TIMEOUT)
            .await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        third = next;
    }
    let log = writer.finish().await;

    // Every acknowledged row is on the final leader; the others follow it.
    let present = cluster.ids(third, "sw").await;
    let lost: Vec<i64> = log
        .acked
        .iter()
        .map(|(id, _)| *id)
        .filter(|id| present.binary_search(id).is_err())
        .collect();
    assert!(
        log.acked.len() > 100,
        "the writer wrote: {}",
        log.acked.len()
    );
    assert!(lost.is_empty(), "acknowledged rows lost: {lost:?}");
    let tl = cluster.primary_timeline(third).await;
    for i in (0..3).filter(|&i| i != third) {
        cluster
            .wait_for_streaming_replica(i, Some(tl), FAILOVER_TIMEOUT)
            .await;
    }
    let others: Vec<usize> = (0..3).filter(|&i| i != third).collect();
    cluster.wait_for_walsenders(third, &others).await;
    let mut gaps = log.gaps();
    eprintln!(
        "switchover write gaps (ttl 20, loop_wait 1, retry_timeout 3): {} over {} acknowledged writes",
        gaps.iter().map(|g| secs(*g)).collect::<Vec<_>>().join(", "),
        log.acked.len()
    );
    gaps.sort();
    if let Some(median) = gaps.get(gaps.len() / 2) {
        eprintln!(
            "switchover write gap median of {}: {}",
            gaps.len(),
            secs(*median)
        );
    }
    // /history names both promotions.
    let (code, history) = cluster.api_get(third, "/history").await.unwrap();
    assert_eq!(code, 200);
    assert!(history.as_array().unwrap().len() >= 2, "{history}");
}

/// A switchover scheduled a few seconds ahead is accepted with 202, shown in `/cluster`, can be
/// cancelled with `DELETE /switchover`, and once scheduled again happens at its time, not
/// before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_switchover_happens_at_its_time() {
    harness::init();
    let cluster = Cluster::start(3, Options::default());
    let leader = cluster.wait_for_leader().await;
    cluster.wait_for_replicas_streaming(2).await;
    let leader_name = cluster.member(leader).name.clone();
    let at = |secs: i64| {
        jiff::Timestamp::now()
            .checked_add(jiff::SignedDuration::from_secs(secs))
            .unwrap()
            .to_string()
    };

    // Validation, as Patroni answers.
    let bad = [
        (
            json!({"candidate": "x"}),
            400,
            "Switchover could be performed only from a specific leader",
        ),
        (
            json!({"leader": leader_name, "candidate": leader_name}),
            400,
            "Switchover target and source are the same",
        ),
        (
            json!({"leader": "nobody"}),
            412,
            "leader name does not match",
        ),
        (
            json!({"leader": leader_name, "candidate": "nobody"}),
            412,
            "candidate does not exists",
        ),
        (
            json!({"leader": leader_name, "scheduled_at": "2000-01-01T00:00:00+00:00"}),
            422,
            "Cannot schedule switchover in the past",
        ),
        (
            json!({"leader": leader_name, "scheduled_at": "2099-01-01T00:00:00"}),
            400,
            "Timezone information is mandatory for the scheduled switchover",
        ),
    ];
    for (body, want_code, want_text) in bad {
        let (code, text) = cluster
            .api_call(leader, "POST", "/switchover", Some(body.clone()), true)
            .await
            .unwrap();
        assert_eq!((code, text.as_str()), (want_code, want_text), "{body}");
    }
    let (code, text) = cluster
        .api_call(leader, "POST", "/failover", Some(json!({})), true)
        .await
        .unwrap();
    assert_eq!(code, 400, "an empty body is refused: {text}");
    let (code, _) = cluster
        .api_call(
            leader,
            "POST",
            "/failover",
            Some(json!({"leader": leader_name})),
            true,
        )
        .await
        .unwrap();
    assert_eq!(code, 400, "failover without a candidate");

    // Schedule, see it, cancel it.
    let (code, text) = cluster
        .api_call(
            leader,
            "POST",
            "/switchover",
            Some(json!({"leader": leader_name, "scheduled_at": at(3600)})),
            true,
        )
        .await
        .unwrap();
    assert_eq!((code, text.as_str()), (202, "Switchover scheduled"));
    let (_, c) = cluster.api_get(leader, "/cluster").await.unwrap();
    assert_eq!(c["scheduled_switchover"]["from"], json!(leader_name), "{c}");
    let (code, text) = cluster
        .api_call(leader, "DELETE", "/switchover", None, true)
        .await
        .unwrap();
    assert_eq!((code, text.as_str()), (200, "scheduled switchover deleted"));
    let (code, _) = cluster
        .api_call(leader, "DELETE", "/switchover", None, true)
        .await
        .unwrap();
    assert_eq!(code, 404);

    // Schedule 8 s ahead: nothing happens before, the leader changes after.
    let scheduled = Instant::now() + Duration::from_secs(8);
    let (code, text) = cluster
        .api_call(
            leader,
            "POST",
            "/switchover",
            Some(json!({"leader": leader_name, "scheduled_at": at(8)})),
            true,
        )
        .await
        .unwrap();
    assert_eq!(code, 202, "{text}");
    let new = cluster
        .wait_for_leader_except(&[leader], FAILOVER_TIMEOUT)
        .await;
    let now = Instant::now();
    assert!(
        now + Duration::from_millis(500) >= scheduled,
        "the switchover happened {} before its time",
        secs(scheduled.duration_since(now))
    );
    eprintln!(
        "scheduled switchover: {} leader {} after its time",
        cluster.member(new).name,
        secs(now.saturating_duration_since(scheduled))
    );
    let tl = cluster.primary_timeline(new).await;
    cluster
        .wait_for_streaming_replica(leader, Some(tl), FAILOVER_TIMEOUT)
        .await;
}

/// With the leader's agent and PostgreSQL killed, `POST /failover` names a candidate that
/// would not win the race on its own (lower failover_priority): once the old lease expires,
/// that candidate is promoted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failover_to_a_named_candidate_while_the_leader_is_down() {
    harness::init();
    let mut options = Options::default();
    // Member 1 would win an ordinary race against member 2 (same WAL, higher priority).
    options.tags.insert(
        1,
        json!({"failover_priority": 5}).as_object().unwrap().clone(),
    );
    let cluster = Cluster::start(3, options);
    let leader = cluster.wait_for_leader().await;
    cluster.wait_for_replicas_streaming(2).await;
    let replicas: Vec<usize> = (0..3).filter(|&i| i != leader).collect();
    // The candidate: the replica with the lower priority when member 1 is a replica.
    let candidate = if replicas.contains(&1) {
        *replicas.iter().find(|&&i| i != 1).unwrap()
    } else {
        replicas[0]
    };
    let cand_name = cluster.member(candidate).name.clone();
    cluster
        .pg_connect(leader)
        .await
        .batch_execute(
            "CREATE TABLE fo (id int PRIMARY KEY, note text); INSERT INTO fo VALUES (1, 'before');",
        )
        .await
        .unwrap();
    for &r in &replicas {
        cluster.wait_for_row(r, "fo", 1).await;
    }
    cluster.kill_agent(leader);
    cluster.kill_postmaster(leader);

    let (code, text) = cluster
        .api_call(
            candidate,
            "POST",
            "/failover",
            Some(json!({"candidate": cand_name})),
            true,
        )
        .await
        .unwrap();
    // The old lease (ttl 20) may outlive the API's 20 s poll: both answers are Patroni's.
    assert!(
        (code == 200 && text == format!("Successfully failed over to \"{cand_name}\""))
            || (code == 503 && text.starts_with("Failover status unknown")),
        "{code} {text}"
    );
    let new = cluster
        .wait_for_leader_except(&[leader], FAILOVER_TIMEOUT)
        .await;
    assert_eq!(cluster.member(new).name, cand_name);
    cluster
        .wait_writable(new, "fo", 2, "after the failover")
        .await;
    let other = *replicas.iter().find(|&&i| i != candidate).unwrap();
    let tl = cluster.primary_timeline(new).await;
    cluster
        .wait_for_streaming_replica(other, Some(tl), FAILOVER_TIMEOUT)
        .await;
}
