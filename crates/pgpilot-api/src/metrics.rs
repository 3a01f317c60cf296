//! `GET /metrics`: Prometheus text exposition (format 0.0.4) with Patroni 4.1's metric names,
//! types, HELP texts and order, followed by pgpilot's own `pgpilot_*` counters.
//!
//! Patroni's values come from the status document of `GET /patroni` ([`status_document`]),
//! the same one the request would have got there, so a scrape and `/patroni` never disagree.
//!
//! The text is written here rather than through a client library: Patroni's output has a
//! comment line (`# Values: ...`) between HELP and TYPE of `patroni_postgres_state`, counters
//! without a `_total` suffix, and two metrics present only for PostgreSQL 9.6+; a registry
//! built for OpenMetrics (prometheus-client) renames counters to `*_total` and ends with
//! `# EOF`, which would change what dashboards written for Patroni query.
//!
//! [`status_document`]: crate::status::status_document

use std::fmt::Write as _;
use std::time::Duration;

use pgpilot_values::python::py_float_repr;
use serde_json::Value;

use crate::NodeSnapshot;

/// The `Content-Type` of the reply (Prometheus text format 0.0.4).
pub(crate) const CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// Patroni's `PostgresqlState` in index order (the `patroni_postgres_state` value): the state
/// string of the status document and the name shown in the `# Values:` line.
const POSTGRES_STATES: [(&str, &str); 15] = [
    ("initializing new cluster", "initdb"),
    ("initdb failed", "initdb_failed"),
    ("running custom bootstrap script", "custom_bootstrap"),
    ("custom bootstrap failed", "custom_bootstrap_failed"),
    ("creating replica", "creating_replica"),
    ("running", "running"),
    ("starting", "starting"),
    ("starting after custom bootstrap", "bootstrap_starting"),
    ("start failed", "start_failed"),
    ("restarting", "restarting"),
    ("restart failed", "restart_failed"),
    ("stopping", "stopping"),
    ("stopped", "stopped"),
    ("stop failed", "stop_failed"),
    ("crashed", "crashed"),
];

/// Writes one metric family of one sample: `# HELP`, optional comment lines, `# TYPE`, sample.
struct Exposition {
    out: String,
    labels: String,
}

impl Exposition {
    fn new(scope: &str, name: &str) -> Exposition {
        Exposition {
            out: String::new(),
            labels: format!(
                "{{scope=\"{}\",name=\"{}\"}}",
                escape_label(scope),
                escape_label(name)
            ),
        }
    }

    fn metric(&mut self, name: &str, kind: &str, help: &str, comment: Option<&str>, value: &str) {
        // Writing to a String cannot fail.
        let _ = writeln!(self.out, "# HELP {name} {help}");
        if let Some(c) = comment {
            let _ = writeln!(self.out, "# {c}");
        }
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
        let _ = writeln!(self.out, "{name}{} {value}", self.labels);
    }

    fn gauge(&mut self, name: &str, help: &str, value: impl ToString) {
        self.metric(name, "gauge", help, None, &value.to_string());
    }

    fn counter(&mut self, name: &str, help: &str, value: impl ToString) {
        self.metric(name, "counter", help, None, &value.to_string());
    }
}

/// A label value in the exposition format: backslash, double quote and newline escaped.
fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Python's truthiness of an optional document field, as `int(...)` prints it.
fn flag(v: Option<&Value>) -> u8 {
    u8::from(v.is_some_and(pgpilot_dcs::truthy))
}

fn int(v: Option<&Value>) -> i64 {
    v.and_then(Value::as_i64).unwrap_or(0)
}

/// Epoch seconds of one of the document's timestamps (`2024-08-28 19:39:26.352526+00:00`) as
/// Python prints `timedelta.total_seconds()` (always with a fraction), or `0` when absent.
fn epoch_seconds(v: Option<&Value>) -> String {
    let Some(ts) = v
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<jiff::Timestamp>().ok())
    else {
        return "0".into();
    };
    // Microseconds are exact in an f64 and one division rounds as Python's does.
    let secs = ts.as_microsecond() as f64 / 1e6;
    py_float_repr(secs)
}

fn seconds(d: Duration) -> String {
    py_float_repr(d.as_secs_f64())
}

/// Renders `/metrics` from the status document `doc` of `snap` (Patroni's `do_GET_metrics`).
pub(crate) fn render(snap: &NodeSnapshot, doc: &Value) -> String {
    let mut m = Exposition::new(&snap.scope, &snap.name);
    let get = |k: &str| doc.get(k);
    let xlog = |k: &str| doc.get("xlog").and_then(|x| x.get(k));
    let state = get("state").and_then(Value::as_str).unwrap_or("unknown");
    let role = get("role").and_then(Value::as_str).unwrap_or("");

    let version = doc
        .pointer("/patroni/version")
        .and_then(Value::as_str)
        .unwrap_or("0");
    let padded: String = version.split('.').map(|p| format!("{p:0>2}")).collect();
    m.gauge("patroni_version", "Patroni semver without periods.", padded);
    m.gauge(
        "patroni_postgres_running",
        "Value is 1 if Postgres is running, 0 otherwise.",
        u8::from(state == "running"),
    );
    m.gauge(
        "patroni_postmaster_start_time",
        "Epoch seconds since Postgres started.",
        epoch_seconds(get("postmaster_start_time")),
    );
    m.gauge(
        "patroni_primary",
        "Value is 1 if this node is the leader, 0 otherwise.",
        u8::from(role == "primary"),
    );
    m.counter(
        "patroni_xlog_location",
        "Current location of the Postgres transaction log, 0 if this node is not the leader.",
        int(xlog("location")),
    );
    m.gauge(
        "patroni_standby_leader",
        "Value is 1 if this node is the standby_leader, 0 otherwise.",
        u8::from(role == "standby_leader"),
    );
    m.gauge(
        "patroni_replica",
        "Value is 1 if this node is a replica, 0 otherwise.",
        u8::from(role == "replica"),
    );
    m.gauge(
        "patroni_sync_standby",
        "Value is 1 if this node is a sync standby, 0 otherwise.",
        flag(get("sync_standby")),
    );
    m.gauge(
        "patroni_quorum_standby",
        "Value is 1 if this node is a quorum standby, 0 otherwise.",
        flag(get("quorum_standby")),
    );
    m.counter(
        "patroni_xlog_received_location",
        "Current location of the received Postgres transaction log, 0 if this node is not a replica.",
        int(xlog("received_location")),
    );
    m.counter(
        "patroni_xlog_replayed_location",
        "Current location of the replayed Postgres transaction log, 0 if this node is not a replica.",
        int(xlog("replayed_location")),
    );
    m.gauge(
        "patroni_xlog_replayed_timestamp",
        "Current timestamp of the replayed Postgres transaction log, 0 if null.",
        epoch_seconds(xlog("replayed_timestamp")),
    );
    m.gauge(
        "patroni_xlog_paused",
        "Value is 1 if the Postgres xlog is paused, 0 otherwise.",
        u8::from(xlog("paused") == Some(&Value::Bool(true))),
    );
    let server_version = int(get("server_version"));
    if server_version >= 90600 {
        let replication_state = get("replication_state").and_then(Value::as_str);
        m.gauge(
            "patroni_postgres_streaming",
            "Value is 1 if Postgres is streaming, 0 otherwise.",
            u8::from(replication_state == Some("streaming")),
        );
        m.gauge(
            "patroni_postgres_in_archive_recovery",
            "Value is 1 if Postgres is replicating from archive, 0 otherwise.",
            u8::from(replication_state == Some("in archive recovery")),
        );
    }
    m.gauge(
        "patroni_postgres_server_version",
        "Version of Postgres (if running), 0 otherwise.",
        server_version,
    );
    m.gauge(
        "patroni_cluster_unlocked",
        "Value is 1 if the cluster is unlocked, 0 if locked.",
        flag(get("cluster_unlocked")),
    );
    m.gauge(
        "patroni_failsafe_mode_is_active",
        "Value is 1 if failsafe mode is active, 0 if inactive.",
        flag(get("failsafe_mode_is_active")),
    );
    m.gauge(
        "patroni_failsafe_mode_enabled",
        "Value is 1 if failsafe_mode is enabled, 0 otherwise.",
        u8::from(snap.failsafe_mode),
    );
    // The `/failsafe` key as last read (kept while the DCS is away), as Patroni's
    // `dcs.failsafe`.
    let member = snap
        .cluster
        .as_ref()
        .and_then(|c| c.failsafe.as_ref())
        .is_some_and(|f| f.contains_key(&snap.name));
    m.gauge(
        "patroni_failsafe_member",
        "Value is 1 if this node is a member of failsafe, 0 otherwise.",
        u8::from(member),
    );
    m.gauge(
        "patroni_postgres_timeline",
        "Postgres timeline of this node (if running), 0 otherwise.",
        int(get("timeline")),
    );
    m.gauge(
        "patroni_dcs_last_seen",
        "Epoch timestamp when DCS was last contacted successfully by Patroni.",
        int(get("dcs_last_seen")),
    );
    m.gauge(
        "patroni_pending_restart",
        "Value is 1 if the node needs a restart, 0 otherwise.",
        flag(get("pending_restart")),
    );
    m.gauge(
        "patroni_is_paused",
        "Value is 1 if auto failover is disabled, 0 otherwise.",
        flag(get("pause")),
    );
    let values: Vec<String> = POSTGRES_STATES
        .iter()
        .enumerate()
        .map(|(i, (_, name))| format!("{i}={name}"))
        .collect();
    let index = POSTGRES_STATES
        .iter()
        .position(|(s, _)| *s == state)
        .map_or(-1, |i| i as i64);
    m.metric(
        "patroni_postgres_state",
        "gauge",
        "Numeric representation of Postgres state.",
        Some(&format!("Values: {}", values.join(", "))),
        &index.to_string(),
    );

    // pgpilot's own, from the agent's counters.
    let st = &snap.stats;
    m.counter(
        "pgpilot_ha_cycles_total",
        "HA cycles completed since the agent started.",
        st.cycles,
    );
    m.gauge(
        "pgpilot_ha_last_cycle_duration_seconds",
        "Wall time of the last completed HA cycle.",
        seconds(st.last_cycle),
    );
    m.counter(
        "pgpilot_dcs_read_errors_total",
        "HA cycles whose read of the cluster from the DCS failed.",
        st.dcs_read_errors,
    );
    m.counter(
        "pgpilot_leader_renewals_total",
        "Successful acquisitions and renewals of the leader key by this member.",
        st.leader_renewals,
    );
    m.counter(
        "pgpilot_leader_renewal_failures_total",
        "Renewals of the leader key that failed or found the key no longer ours.",
        st.leader_renewal_failures,
    );
    m.counter(
        "pgpilot_promotions_total",
        "Promotions of the local PostgreSQL completed by this agent.",
        st.promotions,
    );
    if let Some(d) = st.last_promotion {
        m.gauge(
            "pgpilot_last_promotion_duration_seconds",
            "How long the last pg_ctl promote of this member took.",
            seconds(d),
        );
    }
    m.out
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;
    use crate::status::status_document;
    use crate::{PgInfo, Role, State};

    fn families(text: &str) -> Vec<(String, String, String)> {
        // (name, type, sample line) per family, from the text alone.
        let mut out = Vec::new();
        let mut kind = String::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                kind = rest.split(' ').nth(1).unwrap_or_default().to_string();
            } else if !line.starts_with('#') {
                let name = line.split('{').next().unwrap().to_string();
                out.push((name, kind.clone(), line.to_string()));
            }
        }
        out
    }

    /// A member with nothing running yet: every Patroni metric but the two 9.6+ ones, values
    /// 0, the state `stopped` (12), the labels on every sample, Patroni's version padded.
    #[test]
    fn stopped_member_renders_patroni_families() {
        let snap = NodeSnapshot::starting("pg1", "batman");
        let text = render(&snap, &status_document(&snap, Instant::now()));
        let names: Vec<String> = families(&text).into_iter().map(|f| f.0).collect();
        assert_eq!(
            names,
            [
                "patroni_version",
                "patroni_postgres_running",
                "patroni_postmaster_start_time",
                "patroni_primary",
                "patroni_xlog_location",
                "patroni_standby_leader",
                "patroni_replica",
                "patroni_sync_standby",
                "patroni_quorum_standby",
                "patroni_xlog_received_location",
                "patroni_xlog_replayed_location",
                "patroni_xlog_replayed_timestamp",
                "patroni_xlog_paused",
                "patroni_postgres_server_version",
                "patroni_cluster_unlocked",
                "patroni_failsafe_mode_is_active",
                "patroni_failsafe_mode_enabled",
                "patroni_failsafe_member",
                "patroni_postgres_timeline",
                "patroni_dcs_last_seen",
                "patroni_pending_restart",
                "patroni_is_paused",
                "patroni_postgres_state",
                "pgpilot_ha_cycles_total",
                "pgpilot_ha_last_cycle_duration_seconds",
                "pgpilot_dcs_read_errors_total",
                "pgpilot_leader_renewals_total",
                "pgpilot_leader_renewal_failures_total",
                "pgpilot_promotions_total",
            ]
        );
        assert!(text.starts_with(
            "# HELP patroni_version Patroni semver without periods.\n\
             # TYPE patroni_version gauge\n\
             patroni_version{scope=\"batman\",name=\"pg1\"} 040104\n"
        ));
        assert!(text.contains(
            "# HELP patroni_postgres_state Numeric representation of Postgres state.\n\
             # Values: 0=initdb, 1=initdb_failed, 2=custom_bootstrap, 3=custom_bootstrap_failed, \
             4=creating_replica, 5=running, 6=starting, 7=bootstrap_starting, 8=start_failed, \
             9=restarting, 10=restart_failed, 11=stopping, 12=stopped, 13=stop_failed, 14=crashed\n\
             # TYPE patroni_postgres_state gauge\n\
             patroni_postgres_state{scope=\"batman\",name=\"pg1\"} 12\n"
        ));
        assert!(text.contains("patroni_cluster_unlocked{scope=\"batman\",name=\"pg1\"} 1\n"));
        assert!(text.contains("patroni_postmaster_start_time{scope=\"batman\",name=\"pg1\"} 0\n"));
        assert!(text.ends_with("pgpilot_promotions_total{scope=\"batman\",name=\"pg1\"} 0\n"));
    }

    /// A streaming replica: role, WAL positions, replay timestamp in epoch seconds with
    /// Python's float digits, the 9.6+ streaming gauge; and the agent's counters.
    #[test]
    fn running_replica_values_follow_the_status_document() {
        let mut snap = NodeSnapshot::starting("pg 2", "bat\"man");
        snap.state = State::Running;
        snap.role = Role::Replica;
        snap.dcs_last_seen = 1_764_802_466;
        snap.pg = Some(PgInfo {
            in_recovery: true,
            postmaster_start_time: "2026-12-03 22:54:26.352526+00:00".into(),
            server_version: 150_010,
            timeline: 3,
            receive_lsn: Some(0x3000060),
            replay_lsn: Some(0x3000000),
            replay_timestamp: Some("2026-12-03 22:55:00+00:00".into()),
            replication_state: Some("streaming".into()),
            ..Default::default()
        });
        snap.stats.cycles = 7;
        snap.stats.last_cycle = Duration::from_millis(12);
        snap.stats.last_promotion = Some(Duration::from_millis(1500));
        snap.failsafe_mode = true;
        let cluster = pgpilot_dcs::Cluster {
            failsafe: serde_json::json!({"pg 2": "http://127.0.0.1:8009/patroni"})
                .as_object()
                .cloned(),
            ..Default::default()
        };
        snap.cluster = Some(std::sync::Arc::new(cluster));
        let text = render(&snap, &status_document(&snap, Instant::now()));
        let value = |name: &str| {
            families(&text)
                .into_iter()
                .find(|f| f.0 == name)
                .map(|f| f.2.rsplit(' ').next().unwrap().to_string())
                .unwrap()
        };
        assert!(text.contains("patroni_replica{scope=\"bat\\\"man\",name=\"pg 2\"} 1\n"));
        assert_eq!(value("patroni_primary"), "0");
        assert_eq!(value("patroni_postgres_running"), "1");
        assert_eq!(value("patroni_postgres_state"), "5");
        assert_eq!(value("patroni_postmaster_start_time"), "1796338466.352526");
        assert_eq!(value("patroni_xlog_replayed_timestamp"), "1796338500.0");
        assert_eq!(value("patroni_xlog_location"), "0");
        assert_eq!(value("patroni_xlog_received_location"), "50331744");
        assert_eq!(value("patroni_xlog_replayed_location"), "50331648");
        assert_eq!(value("patroni_postgres_streaming"), "1");
        assert_eq!(value("patroni_postgres_in_archive_recovery"), "0");
        assert_eq!(value("patroni_postgres_server_version"), "150010");
        assert_eq!(value("patroni_postgres_timeline"), "3");
        assert_eq!(value("patroni_dcs_last_seen"), "1764802466");
        assert_eq!(value("patroni_failsafe_mode_enabled"), "1");
        assert_eq!(value("patroni_failsafe_member"), "1");
        assert_eq!(value("pgpilot_ha_cycles_total"), "7");
        assert_eq!(value("pgpilot_ha_last_cycle_duration_seconds"), "0.012");
        assert_eq!(value("pgpilot_last_promotion_duration_seconds"), "1.5");
        let types: Vec<(String, String)> = families(&text)
            .into_iter()
            .filter(|f| f.1 == "counter")
            .map(|f| (f.0, f.1))
            .collect();
        assert_eq!(types.len(), 8, "{types:?}");
    }
}
