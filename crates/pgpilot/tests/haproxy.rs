//! The programs in front of the cluster, as real processes: HAProxy routing by the REST API's
//! `/primary` and `/replica` health checks (Patroni's templates, seed timings `inter 3s fall 3
//! rise 2`), and pgBouncer in transaction pooling mode in front of HAProxy. A client writes
//! through them every 10 ms across a switchover and a crash; with `synchronous_mode` no
//! acknowledged write may be lost. The write gap and the client errors of each event are
//! printed (`--no-capture`), never asserted: the machine is shared.

mod harness;

use std::time::{Duration, Instant};

use anyhow::{ensure, Context};
use harness::{
    secs, Cluster, HaProxy, Options, PgBouncer, Reader, Writer, SHORT_TIMEOUT, SUPERUSER,
};
use serde_json::json;

/// `n` members with `synchronous_mode: true`.
fn sync_cluster(n: usize) -> Cluster {
    Cluster::start(
        n,
        Options {
            customize: Some(std::sync::Arc::new(|_, doc| {
                doc["bootstrap"]["dcs"]["synchronous_mode"] = json!(true);
            })),
            ..Options::default()
        },
    )
}

/// A libpq connection string through HAProxy's `port`.
fn via(port: u16) -> String {
    format!(
        "host=127.0.0.1 port={port} user={} password={} dbname=postgres connect_timeout=2",
        SUPERUSER.0, SUPERUSER.1
    )
}

/// Waits until `/sync` names `leader` and a standby that `leader` streams to synchronously:
/// from then on every acknowledged commit is on two members.
async fn wait_for_sync_standby(cluster: &Cluster, leader: usize) {
    let name = cluster.member(leader).name.clone();
    cluster
        .wait(SHORT_TIMEOUT, "a synchronous standby", async || {
            let text = cluster.etcd_get("sync").context("no /sync key")?;
            let v: serde_json::Value = serde_json::from_str(&text)?;
            ensure!(v["leader"] == name.as_str(), "/sync is {text}");
            let row = cluster
                .pg_connect_try(leader)
                .await?
                .query_one(
                    "SELECT count(*) FROM pg_stat_replication WHERE sync_state IN ('sync', 'quorum')",
                    &[],
                )
                .await?;
            ensure!(row.get::<_, i64>(0) > 0, "no synchronous walsender yet");
            Ok(())
        })
        .await;
}

/// Runs `act` (which returns the new primary) while a [`Writer`] writes into `table` through
/// `write_via` and a [`Reader`] reads through HAProxy's replicas port. Then waits until the
/// other running members stream from the new primary, HAProxy routes to exactly them and the
/// writer's writes are acknowledged again, lets the clients run one more check interval, and
/// asserts: every acknowledged write is on the new primary, the primary section routes to it
/// alone, and no read landed on a primary outside the change (from the event until HAProxy's
/// routing settled; a read overlapping that span counts as in it). Prints the figures. Returns
/// the new primary.
async fn measure(
    cluster: &Cluster,
    haproxy: &mut HaProxy,
    event: &str,
    write_via: String,
    table: &str,
    act: impl AsyncFnOnce() -> usize,
) -> usize {
    let writer = Writer::start_conninfo(write_via, table);
    let reader = Reader::start(via(haproxy.replicas_port));
    tokio::time::sleep(Duration::from_secs(2)).await;

    let started = Instant::now();
    let new = act().await;
    let elected = started.elapsed();
    let tl = cluster.primary_timeline(new).await;
    let replicas: Vec<usize> = (0..cluster.len())
        .filter(|&i| i != new && cluster.agent_running(i))
        .collect();
    for &r in &replicas {
        cluster
            .wait_for_streaming_replica(r, Some(tl), harness::FAILOVER_TIMEOUT)
            .await;
    }
    haproxy.wait_routing(cluster, new, &replicas).await;
    let settled = Instant::now();
    // Writes flow again through the proxies (a pooler may still refuse clients for a while),
    // and the routing stays for one more check interval of HAProxy.
    let before = writer.acked();
    cluster
        .wait(harness::FAILOVER_TIMEOUT, "writes to resume", async || {
            ensure!(
                writer.acked() >= before + 20,
                "{} new",
                writer.acked() - before
            );
            Ok(())
        })
        .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let primary_up = haproxy.routing("primary").unwrap();
    let writes = writer.finish().await;
    let reads = reader.finish().await;

    assert_eq!(
        primary_up,
        vec![cluster.member(new).name.clone()],
        "{event}: the primary section routes to the new primary alone"
    );
    assert!(
        writes.acked.len() > 50,
        "{event}: the writer wrote only {} rows",
        writes.acked.len()
    );
    cluster
        .assert_no_acked_write_lost(new, table, &writes)
        .await;
    // A read overlapping the change is not steady state.
    let steady: Vec<(Instant, Instant)> = reads
        .on_primary()
        .filter(|&(from, to)| to < started || from > settled)
        .collect();
    assert!(
        steady.is_empty(),
        "{event}: {} reads through the replicas port landed on a primary outside the change",
        steady.len()
    );
    eprintln!(
        "{event}: {} leader after {}, haproxy routing settled after {}; write gap {} \
         ({} acknowledged writes, all present on the new primary; {} client errors: {}); \
         reads via the replicas port: {} answered, {} on a primary during the change, \
         {} failed ({})",
        cluster.member(new).name,
        secs(elected),
        secs(settled.duration_since(started)),
        secs(writes.longest_ack_gap()),
        writes.acked.len(),
        writes.failures.len(),
        writes.error_summary(),
        reads.reads.len(),
        reads.on_primary().count(),
        reads.errors.values().sum::<usize>(),
        reads
            .errors
            .iter()
            .map(|(e, n)| format!("{n} x {e:?}"))
            .collect::<Vec<_>>()
            .join("; "),
    );
    new
}

/// A switchover through `POST /switchover` from `leader`; returns the new leader.
async fn switchover(cluster: &Cluster, leader: usize) -> usize {
    cluster.switchover(leader, None).await;
    cluster
        .wait_for_leader_except(&[leader], harness::FAILOVER_TIMEOUT)
        .await
}

/// A crash of `leader`: its agent and postmaster SIGKILLed; returns the new leader.
async fn crash(cluster: &Cluster, leader: usize) -> usize {
    cluster.kill_agent(leader);
    assert!(cluster.kill_postmaster(leader).is_some());
    cluster
        .wait_for_leader_except(&[leader], harness::FAILOVER_TIMEOUT)
        .await
}

/// Whether to skip the test: a program it runs is not installed (the reason is printed).
fn missing(programs: &[Result<(), String>]) -> bool {
    harness::init();
    let missing: Vec<&String> = programs.iter().filter_map(|p| p.as_ref().err()).collect();
    for why in &missing {
        eprintln!("{why}");
    }
    !missing.is_empty()
}

/// Starts a cluster of `n` in synchronous mode with `tables` created, and HAProxy in front of
/// it routing to it; returns them and the leader.
async fn setup(n: usize, tables: &[&str]) -> (Cluster, HaProxy, usize) {
    let cluster = sync_cluster(n);
    let leader = cluster.wait_for_leader().await;
    let replicas = cluster.wait_for_replicas_streaming(n - 1).await;
    wait_for_sync_standby(&cluster, leader).await;
    let client = cluster.pg_connect(leader).await;
    for t in tables {
        client
            .batch_execute(&format!(
                "CREATE TABLE {t} (id bigint PRIMARY KEY, at timestamptz)"
            ))
            .await
            .unwrap();
    }
    let mut haproxy = HaProxy::start(&cluster);
    let took = haproxy.wait_routing(&cluster, leader, &replicas).await;
    eprintln!("haproxy routes to the cluster after {}", secs(took));
    (cluster, haproxy, leader)
}

/// HAProxy with Patroni's `/primary` and `/replica` checks follows a switchover and a crash of
/// the leader (agent and postmaster SIGKILLed) in synchronous mode: every write acknowledged
/// through its primary port is on the new primary, its primary section ends up routing to the
/// new primary alone, and reads through its replicas port reach a primary only while the
/// change is under way (HAProxy needs `fall 3` checks to drop the promoted member).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_follows_a_switchover_and_a_crash_without_losing_an_acknowledged_write() {
    if missing(&[HaProxy::installed()]) {
        return;
    }
    let (cluster, mut haproxy, leader) = setup(3, &["via_haproxy_sw", "via_haproxy_crash"]).await;
    let primary = via(haproxy.primary_port);

    let new = measure(
        &cluster,
        &mut haproxy,
        "switchover via haproxy",
        primary.clone(),
        "via_haproxy_sw",
        async || switchover(&cluster, leader).await,
    )
    .await;

    wait_for_sync_standby(&cluster, new).await;
    measure(
        &cluster,
        &mut haproxy,
        "crash (kill -9 of agent and postmaster) via haproxy",
        primary,
        "via_haproxy_crash",
        async || crash(&cluster, new).await,
    )
    .await;
}

/// `pgpilot.client_continuity` for the test's HAProxy (its admin socket, which the agents
/// reach: the test and its programs run as the agents' user) and `pgbouncer`, if any.
fn continuity_section(haproxy: &HaProxy, pgbouncer: Option<&PgBouncer>) -> serde_json::Value {
    json!({
        "pause_timeout": 5,
        "pgbouncer": pgbouncer.map(|p| vec![p.admin_conninfo()]).unwrap_or_default(),
        "haproxy": [{
            "socket": haproxy.socket,
            "primary_backend": "primary",
            "replica_backend": "replicas",
        }],
    })
}

/// pgBouncer in transaction pooling mode in front of HAProxy's primary port (client →
/// pgBouncer → HAProxy → PostgreSQL) across switchovers in synchronous mode, first as Patroni
/// would leave them, then with `pgpilot.client_continuity` turned on by a reload (the old
/// primary pauses pgBouncer and steers HAProxy), then a crash of the primary with it on (the
/// promoted member forces itself up in HAProxy): no write acknowledged through pgBouncer or
/// HAProxy is lost, pgBouncer is not left paused, and the primary section routes to the new
/// primary alone. The write gap and the client errors of each switchover are printed, to
/// compare; they are not asserted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbouncer_over_haproxy_loses_no_acknowledged_write_in_a_switchover_with_and_without_client_continuity(
) {
    if missing(&[HaProxy::installed(), PgBouncer::installed()]) {
        return;
    }
    let (cluster, mut haproxy, leader) = setup(
        2,
        &[
            "via_pgbouncer",
            "via_pgbouncer_cont",
            "via_haproxy_cont",
            "via_pgbouncer_crash_cont",
        ],
    )
    .await;
    let pgbouncer = PgBouncer::start(cluster.dir(), haproxy.primary_port);
    let new = measure(
        &cluster,
        &mut haproxy,
        "switchover via pgbouncer (transaction pooling) and haproxy",
        pgbouncer.conninfo(),
        "via_pgbouncer",
        async || switchover(&cluster, leader).await,
    )
    .await;

    let section = continuity_section(&haproxy, Some(&pgbouncer));
    for i in 0..cluster.len() {
        cluster
            .reconfigure(i, |doc| {
                doc["pgpilot"]["client_continuity"] = section.clone();
            })
            .await;
    }
    wait_for_sync_standby(&cluster, new).await;
    let back = measure(
        &cluster,
        &mut haproxy,
        "switchover via pgbouncer and haproxy, with client continuity",
        pgbouncer.conninfo(),
        "via_pgbouncer_cont",
        async || switchover(&cluster, new).await,
    )
    .await;
    let paused = pgbouncer.paused_databases().await.unwrap();
    assert!(paused.is_empty(), "pgbouncer left paused: {paused:?}");

    wait_for_sync_standby(&cluster, back).await;
    let direct = via(haproxy.primary_port);
    let last = measure(
        &cluster,
        &mut haproxy,
        "switchover via haproxy, with client continuity",
        direct,
        "via_haproxy_cont",
        async || switchover(&cluster, back).await,
    )
    .await;
    let paused = pgbouncer.paused_databases().await.unwrap();
    assert!(paused.is_empty(), "pgbouncer left paused: {paused:?}");

    // A crash: nobody pauses anything; the promoted member forces itself up in HAProxy.
    wait_for_sync_standby(&cluster, last).await;
    measure(
        &cluster,
        &mut haproxy,
        "crash (kill -9 of agent and postmaster) via pgbouncer and haproxy, with client continuity",
        pgbouncer.conninfo(),
        "via_pgbouncer_crash_cont",
        async || crash(&cluster, last).await,
    )
    .await;
}
