//! Monitoring: `GET /metrics` of running members, read by a Prometheus text-format parser,
//! carries Patroni's metric families with the values `GET /patroni` shows.

mod harness;

use std::collections::HashMap;

use anyhow::ensure;
use harness::{Cluster, Options, FAILOVER_TIMEOUT};
use prometheus_parse::{Sample, Scrape, Value as Metric};
use serde_json::{json, Value};

/// One scrape of member `i`: the Content-Type and the parsed body.
async fn scrape(cluster: &Cluster, i: usize) -> (String, Scrape, String) {
    let url = format!("{}/metrics", cluster.member(i).api_base());
    let reply = reqwest::get(&url).await.unwrap();
    assert_eq!(reply.status(), 200, "GET {url}");
    let content_type = reply.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    let body = reply.text().await.unwrap();
    let parsed = Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).unwrap();
    (content_type, parsed, body)
}

fn by_name(scrape: &Scrape) -> HashMap<&str, &Sample> {
    scrape
        .samples
        .iter()
        .map(|s| (s.metric.as_str(), s))
        .collect()
}

fn value(samples: &HashMap<&str, &Sample>, name: &str) -> f64 {
    match samples.get(name).map(|s| &s.value) {
        Some(Metric::Gauge(v) | Metric::Counter(v)) => *v,
        other => panic!("{name}: {other:?}"),
    }
}

/// The Patroni 4.1 families and their types (PostgreSQL 15: the 9.6+ ones included).
const PATRONI_FAMILIES: &[(&str, &str)] = &[
    ("patroni_version", "gauge"),
    ("patroni_postgres_running", "gauge"),
    ("patroni_postmaster_start_time", "gauge"),
    ("patroni_primary", "gauge"),
    ("patroni_xlog_location", "counter"),
    ("patroni_standby_leader", "gauge"),
    ("patroni_replica", "gauge"),
    ("patroni_sync_standby", "gauge"),
    ("patroni_quorum_standby", "gauge"),
    ("patroni_xlog_received_location", "counter"),
    ("patroni_xlog_replayed_location", "counter"),
    ("patroni_xlog_replayed_timestamp", "gauge"),
    ("patroni_xlog_paused", "gauge"),
    ("patroni_postgres_streaming", "gauge"),
    ("patroni_postgres_in_archive_recovery", "gauge"),
    ("patroni_postgres_server_version", "gauge"),
    ("patroni_cluster_unlocked", "gauge"),
    ("patroni_failsafe_mode_is_active", "gauge"),
    ("patroni_postgres_timeline", "gauge"),
    ("patroni_dcs_last_seen", "gauge"),
    ("patroni_pending_restart", "gauge"),
    ("patroni_is_paused", "gauge"),
    ("patroni_postgres_state", "gauge"),
];

/// After a switchover the new leader's scrape says primary on the next timeline, with one
/// promotion counted and its `pg_ctl promote` time; the former leader's says replica.
async fn switchover_moves_the_primary_metric(cluster: &Cluster, leader: usize, replica: usize) {
    let old_tl = cluster.patroni(leader).await.unwrap()["timeline"]
        .as_f64()
        .unwrap();
    let body = json!({
        "leader": cluster.member(leader).name,
        "candidate": cluster.member(replica).name,
    });
    let (code, text) = cluster
        .api_call(leader, "POST", "/switchover", Some(body), true)
        .await
        .unwrap();
    assert_eq!(code, 200, "{text}");
    assert_eq!(
        cluster
            .wait_for_leader_except(&[leader], FAILOVER_TIMEOUT)
            .await,
        replica
    );
    cluster
        .wait(
            FAILOVER_TIMEOUT,
            "both scrapes after the switchover",
            async || {
                let (_, new, body) = scrape(cluster, replica).await;
                let new = by_name(&new);
                ensure!(value(&new, "patroni_primary") == 1.0, "{body}");
                ensure!(
                    value(&new, "patroni_postgres_timeline") == old_tl + 1.0,
                    "{body}"
                );
                ensure!(value(&new, "pgpilot_promotions_total") == 1.0, "{body}");
                let took = value(&new, "pgpilot_last_promotion_duration_seconds");
                ensure!(took > 0.0 && took < 60.0, "{body}");
                let (_, old, body) = scrape(cluster, leader).await;
                let old = by_name(&old);
                ensure!(value(&old, "patroni_replica") == 1.0, "{body}");
                ensure!(value(&old, "patroni_primary") == 0.0, "{body}");
                eprintln!("switchover: pg_ctl promote took {took} s");
                Ok(())
            },
        )
        .await;
}

/// A leader and a streaming replica each serve `/metrics` as `text/plain; version=0.0.4`:
/// every Patroni family with its type and HELP, the `scope`/`name` labels on every sample,
/// `patroni_primary` 1 only on the leader and `patroni_replica` 1 only on the replica, timeline,
/// server version and WAL positions as `/patroni` reports them (WAL read between two
/// `/patroni` calls), and the agent's own counters moving; then a switchover moves them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_of_a_leader_and_a_replica_match_their_status() {
    harness::init();
    let cluster = Cluster::start(2, Options::default());
    let leader = cluster.wait_for_leader().await;
    let replica = cluster.wait_for_replicas_streaming(1).await[0];
    assert_ne!(leader, replica);

    for i in [leader, replica] {
        let name = cluster.member(i).name.clone();
        let before: Value = cluster.patroni(i).await.unwrap();
        let (content_type, scrape, body) = scrape(&cluster, i).await;
        let after: Value = cluster.patroni(i).await.unwrap();
        assert_eq!(content_type, "text/plain; version=0.0.4");
        let samples = by_name(&scrape);

        for (family, kind) in PATRONI_FAMILIES {
            let sample = samples
                .get(family)
                .unwrap_or_else(|| panic!("{family} missing:\n{body}"));
            let parsed_kind = match sample.value {
                Metric::Gauge(_) => "gauge",
                Metric::Counter(_) => "counter",
                _ => "other",
            };
            assert_eq!(parsed_kind, *kind, "{family}");
            assert!(scrape.docs.contains_key(*family), "HELP of {family}");
        }
        for s in &scrape.samples {
            assert_eq!(
                s.labels.get("scope"),
                Some(cluster.options.scope.as_str()),
                "{s:?}"
            );
            assert_eq!(s.labels.get("name"), Some(name.as_str()), "{s:?}");
        }
        assert_eq!(
            scrape.docs["patroni_primary"],
            "Value is 1 if this node is the leader, 0 otherwise."
        );
        assert_eq!(value(&samples, "patroni_version"), 40104.0);

        let is_leader = i == leader;
        assert_eq!(
            before["role"],
            if is_leader { "primary" } else { "replica" }
        );
        assert_eq!(
            value(&samples, "patroni_primary"),
            f64::from(u8::from(is_leader))
        );
        assert_eq!(
            value(&samples, "patroni_replica"),
            f64::from(u8::from(!is_leader))
        );
        assert_eq!(value(&samples, "patroni_postgres_running"), 1.0);
        assert_eq!(value(&samples, "patroni_postgres_state"), 5.0);
        assert_eq!(
            value(&samples, "patroni_postgres_timeline"),
            before["timeline"].as_f64().unwrap()
        );
        assert_eq!(
            value(&samples, "patroni_postgres_server_version"),
            before["server_version"].as_f64().unwrap()
        );
        assert_eq!(value(&samples, "patroni_cluster_unlocked"), 0.0);
        assert_eq!(
            value(&samples, "patroni_postgres_streaming"),
            f64::from(u8::from(!is_leader))
        );
        assert!(value(&samples, "patroni_postmaster_start_time") > 1.0e9);
        let dcs_last_seen = value(&samples, "patroni_dcs_last_seen");
        assert!(
            before["dcs_last_seen"].as_f64().unwrap() <= dcs_last_seen
                && dcs_last_seen <= after["dcs_last_seen"].as_f64().unwrap(),
            "{before} / {dcs_last_seen} / {after}"
        );
        let wal_keys: &[(&str, &str)] = if is_leader {
            &[("patroni_xlog_location", "location")]
        } else {
            &[
                ("patroni_xlog_received_location", "received_location"),
                ("patroni_xlog_replayed_location", "replayed_location"),
            ]
        };
        for (metric, key) in wal_keys {
            let got = value(&samples, metric);
            let (lo, hi) = (
                before["xlog"][key].as_f64().unwrap(),
                after["xlog"][key].as_f64().unwrap(),
            );
            assert!(
                lo > 0.0 && lo <= got && got <= hi,
                "{metric}: {lo} <= {got} <= {hi}"
            );
        }
        if is_leader {
            assert_eq!(value(&samples, "patroni_xlog_received_location"), 0.0);
        } else {
            assert_eq!(value(&samples, "patroni_xlog_location"), 0.0);
        }

        assert!(value(&samples, "pgpilot_ha_cycles_total") >= 1.0, "{body}");
        let renewals = value(&samples, "pgpilot_leader_renewals_total");
        if is_leader {
            assert!(renewals >= 1.0, "{body}");
        } else {
            assert_eq!(renewals, 0.0, "{body}");
        }
        assert_eq!(value(&samples, "pgpilot_promotions_total"), 0.0);
    }

    switchover_moves_the_primary_metric(&cluster, leader, replica).await;
}
