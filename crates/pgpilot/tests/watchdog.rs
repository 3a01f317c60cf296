//! The watchdog with real agents (Patroni's `features/watchdog.feature`): a leader arms the
//! device with `ttl - safety_margin`, keeps it alive, takes a new ttl from `/config`, closes it
//! with the magic `V` in maintenance mode and on a clean shutdown; a member whose required
//! watchdog can not be used never becomes leader and says `watchdog_failed`. The device is the
//! `testing` driver's named pipe, read by the harness's `WatchdogMonitor`.

mod harness;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::ensure;
use harness::{Cluster, Options, WatchdogEvent, WatchdogMonitor, FAILOVER_TIMEOUT, SHORT_TIMEOUT};
use serde_json::{json, Value};

/// `watchdog: {mode: required, driver: testing, device: <member dir>/<file>}` for the members
/// `which` selects.
fn required_watchdog(file: &'static str, which: fn(usize) -> bool) -> Options {
    Options {
        customize: Some(Arc::new(move |i, doc: &mut Value| {
            if !which(i) {
                return;
            }
            let data_dir = PathBuf::from(doc["postgresql"]["data_dir"].as_str().unwrap());
            let device = data_dir.parent().unwrap().join(file);
            doc["watchdog"] = json!({"mode": "required", "driver": "testing", "device": device});
        })),
        ..Options::default()
    }
}

/// Waits until the events after `mark` satisfy `done`.
async fn wait_events(
    cluster: &Cluster,
    monitor: &WatchdogMonitor,
    mark: usize,
    what: &str,
    done: impl Fn(&[WatchdogEvent]) -> bool,
) {
    cluster
        .wait(SHORT_TIMEOUT, what, async || {
            let events = monitor.since(mark);
            ensure!(done(&events), "watchdog events so far: {events:?}");
            Ok(())
        })
        .await;
}

fn keepalives(events: &[WatchdogEvent]) -> usize {
    events
        .iter()
        .filter(|e| **e == WatchdogEvent::Keepalive)
        .count()
}

async fn patch_config(cluster: &Cluster, i: usize, body: Value) {
    let (code, text) = cluster
        .api_call(i, "PATCH", "/config", Some(body), true)
        .await
        .unwrap();
    assert_eq!(code, 200, "{text}");
}

/// A leader with `mode: required` arms the watchdog with ttl − 5 s and pings it; `ttl: 30` in
/// `/config` becomes a 25 s timeout; pausing closes it (`V`), resuming arms it again, and a
/// clean shutdown closes it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_arms_pings_reconfigures_and_closes_the_watchdog() {
    harness::init();
    let cluster = Cluster::new(1, required_watchdog("watchdog.fifo", |_| true));
    let monitor = WatchdogMonitor::start(&cluster.member(0).dir.join("watchdog.fifo"));
    cluster.start_agent(0);
    cluster.wait_for_leader().await;

    wait_events(
        &cluster,
        &monitor,
        0,
        "a 15 s timeout and keepalives",
        |e| e.first() == Some(&WatchdogEvent::Timeout(15)) && keepalives(e) >= 2,
    )
    .await;
    let log = cluster.agent_log(0);
    assert!(
        log.contains(&format!(
            "Watchdog test harness at {} activated with 15 second timeout, timing slack 14 seconds",
            monitor.path().display()
        )),
        "{log}"
    );
    assert_eq!(
        cluster.patroni(0).await.unwrap().get("watchdog_failed"),
        None
    );

    let mark = monitor.mark();
    patch_config(&cluster, 0, json!({"ttl": 30})).await;
    wait_events(
        &cluster,
        &monitor,
        mark,
        "the new ttl's 25 s timeout",
        |e| e.contains(&WatchdogEvent::Timeout(25)),
    )
    .await;

    let mark = monitor.mark();
    patch_config(&cluster, 0, json!({"pause": true})).await;
    wait_events(&cluster, &monitor, mark, "a magic close in pause", |e| {
        e.contains(&WatchdogEvent::MagicClose)
    })
    .await;
    // Maintenance mode keeps it closed.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after_close = monitor.since(mark);
    let closed_at = after_close
        .iter()
        .position(|e| *e == WatchdogEvent::MagicClose)
        .unwrap();
    assert_eq!(keepalives(&after_close[closed_at..]), 0, "{after_close:?}");

    let mark = monitor.mark();
    patch_config(&cluster, 0, json!({"pause": null})).await;
    wait_events(&cluster, &monitor, mark, "armed again after resume", |e| {
        e.contains(&WatchdogEvent::Timeout(25)) && keepalives(e) >= 1
    })
    .await;

    let mark = monitor.mark();
    cluster.terminate_agent(0);
    cluster.wait_agent_exit(0, SHORT_TIMEOUT).await;
    wait_events(&cluster, &monitor, mark, "a magic close on shutdown", |e| {
        e.ends_with(&[WatchdogEvent::MagicClose, WatchdogEvent::Closed])
    })
    .await;
    let log = cluster.agent_log(0);
    assert!(!log.contains("Error while"), "{log}");
}

/// A replica whose required watchdog device does not exist reports `watchdog_failed`, and
/// when the leader goes away it stays out of the race: no leader rather than an unfenced one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn required_watchdog_that_cannot_be_opened_never_leads() {
    harness::init();
    let cluster = Cluster::new(2, required_watchdog("no-such-watchdog", |i| i == 1));
    cluster.start_agent(0);
    assert_eq!(cluster.wait_for_leader().await, 0);
    cluster.start_agent(1);
    cluster.wait_for_replicas_streaming(1).await;
    cluster
        .wait(
            SHORT_TIMEOUT,
            "pg-1 to report watchdog_failed",
            async || {
                let doc = cluster.patroni(1).await?;
                ensure!(doc.get("watchdog_failed") == Some(&json!(true)), "{doc}");
                Ok(())
            },
        )
        .await;
    assert_eq!(
        cluster.patroni(0).await.unwrap().get("watchdog_failed"),
        None
    );

    cluster.terminate_agent(0);
    cluster.wait_agent_exit(0, SHORT_TIMEOUT).await;
    cluster
        .wait(FAILOVER_TIMEOUT, "pg-1 to refuse the race", async || {
            ensure!(cluster
                .agent_log_since_last_start(1)
                .contains("Watchdog device is not usable"));
            Ok(())
        })
        .await;
    // Several more cycles (loop_wait is 1 s): still no leader, still a replica.
    for _ in 0..10 {
        assert_eq!(cluster.leader_name(), None);
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(cluster.in_recovery(1).await.unwrap());
    let log = cluster.agent_log_since_last_start(1);
    assert!(
        log.contains("following a different leader because i am not the healthiest node"),
        "{log}"
    );
}
