//! Health-check status codes (spec/rest-api.md §1.2).

use std::time::Instant;

use pgpilot_dcs::Cluster;
use serde_json::Value;

use crate::http::Request;
use crate::status::sync_flags;
use crate::{NodeSnapshot, State};

/// `lag` query value: bytes, or a number with a unit (`16kB`, `64MB`, `1GB`, `1TB`).
pub fn parse_lag(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let mult: f64 = match unit.trim() {
        "" | "B" => 1.0,
        "kB" | "KB" | "k" => 1024.0,
        "MB" | "M" => 1024.0 * 1024.0,
        "GB" | "G" => 1024.0 * 1024.0 * 1024.0,
        "TB" | "T" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    Some((n * mult) as u64)
}

fn is_standby_cluster(c: Option<&Cluster>) -> bool {
    c.is_some_and(Cluster::is_standby_cluster)
}

struct Codes {
    leader: u16,
    primary: u16,
    standby_leader: u16,
    replica: u16,
}

fn codes(s: &NodeSnapshot, req: &Request, now: Instant) -> Codes {
    let role =
        s.pg.as_ref()
            .map_or(s.role.as_str(), |pg| crate::status::reported_role(s, pg));
    let cluster = s.fresh_cluster(now);
    let leader_optime = cluster
        .map_or(0, |c| c.status.optime)
        .max(s.pg.as_ref().and_then(|p| p.latest_end_lsn).unwrap_or(0));
    let lagging = match req.param("lag").and_then(parse_lag) {
        Some(max) => {
            let replayed = s.pg.as_ref().and_then(|p| p.replay_lsn).unwrap_or(0);
            leader_optime > replayed.saturating_add(max)
        }
        None => false,
    };
    let rs_ok = req.param("replication_state").is_none_or(|want| {
        s.pg.as_ref().and_then(|p| p.replication_state.as_deref()) == Some(want)
    });
    let noloadbalance = s
        .configured_tags
        .get("noloadbalance")
        .is_some_and(pgpilot_dcs::truthy);
    let mut replica =
        if !noloadbalance && !lagging && role == "replica" && s.state == State::Running && rs_ok {
            200
        } else {
            503
        };
    let (mut leader, mut primary, mut standby_leader) = (503, 503, 503);
    if cluster.is_none() && s.paused {
        if role == "primary" || role == "standby_leader" {
            leader = 200;
        }
        if role == "primary" {
            primary = 200;
        }
        if role == "standby_leader" {
            standby_leader = 200;
        }
    } else if s.is_leader(now) {
        leader = 200;
        if is_standby_cluster(cluster) {
            // Patroni: the standby leader answers neither `/primary` nor `/replica`.
            replica = 503;
            if role == "replica" || role == "standby_leader" {
                standby_leader = 200;
            }
        } else if role == "primary" {
            primary = 200;
        }
    }
    Codes {
        leader,
        primary,
        standby_leader,
        replica,
    }
}

/// `tag_<key>=<value>` filters against the configured tags.
fn tags_match(s: &NodeSnapshot, req: &Request) -> bool {
    req.query.iter().all(|(k, want)| {
        let Some(tag) = k.strip_prefix("tag_") else {
            return true;
        };
        match s.configured_tags.get(tag) {
            None => false,
            Some(Value::String(v)) => v == want,
            Some(other) => other.to_string().to_lowercase() == want.to_lowercase(),
        }
    })
}

/// The status code of a health-check path (§1.2 matching order).
pub fn health_code(s: &NodeSnapshot, req: &Request, now: Instant) -> u16 {
    let c = codes(s, req, now);
    let path = if req.path == "/" {
        "/primary"
    } else {
        req.path.as_str()
    };
    let filtered = |code: u16| {
        if code == 200 && !tags_match(s, req) {
            503
        } else {
            code
        }
    };
    if path.contains("standby_leader") || path.contains("standby-leader") {
        return c.standby_leader;
    }
    if path.contains("leader") {
        return c.leader;
    }
    if path.contains("master") || path.contains("primary") || path.contains("read-write") {
        return c.primary;
    }
    if path.contains("replica") {
        return filtered(c.replica);
    }
    if path.contains("read-only") && !path.contains("sync") && !path.contains("quorum") {
        let code = if c.primary == 200 || c.standby_leader == 200 {
            200
        } else {
            c.replica
        };
        return filtered(code);
    }
    if path.contains("health") {
        return filtered(if s.state == State::Running { 200 } else { 503 });
    }
    let cluster = s.fresh_cluster(now);
    if cluster.is_none() {
        return 503;
    }
    let (sync, quorum) = sync_flags(s, cluster);
    let leaderish = c.primary == 200 || c.standby_leader == 200;
    let code = match path {
        "/sync" | "/synchronous" if sync => c.replica,
        "/quorum" if quorum => c.replica,
        "/async" | "/asynchronous" if !sync && !quorum => c.replica,
        "/read-only-quorum" | "/read-only-sync" | "/read-only-synchronous" if leaderish => 200,
        "/read-only-quorum" if quorum => c.replica,
        "/read-only-sync" | "/read-only-synchronous" if sync => c.replica,
        _ => 503,
    };
    filtered(code)
}

/// `GET /liveness`: the HA loop is not stuck.
pub fn liveness(s: &NodeSnapshot, now: Instant) -> u16 {
    let primary = s.pg.as_ref().is_some_and(|p| !p.in_recovery);
    let factor = if primary { 1 } else { 2 };
    if s.paused || s.next_run + s.ttl * factor > now {
        200
    } else {
        503
    }
}

/// `GET /readiness?lag=&mode=apply|write`.
pub fn readiness(s: &NodeSnapshot, req: &Request, now: Instant) -> u16 {
    if s.is_leader(now) {
        return 200;
    }
    let Some(pg) = &s.pg else { return 503 };
    if s.state != State::Running || pg.replication_state.as_deref() != Some("streaming") {
        return 503;
    }
    let leader_optime = s
        .fresh_cluster(now)
        .map(|c| c.status.optime)
        .or(pg.latest_end_lsn);
    let Some(optime) = leader_optime else {
        // Neither the DCS nor the walreceiver tells the leader's position: ready only while
        // failsafe mode keeps the cluster going (Patroni's rule).
        return if s.failsafe_is_active(now) { 200 } else { 503 };
    };
    let max = req
        .param("lag")
        .and_then(parse_lag)
        .unwrap_or(s.maximum_lag_on_failover);
    let pos = if req.param("mode") == Some("write") {
        pg.receive_lsn
    } else {
        pg.replay_lsn
    }
    .unwrap_or(0);
    if optime.saturating_sub(pos) <= max {
        200
    } else {
        503
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use pgpilot_dcs::{Cluster, Leader};
    use serde_json::json;

    use super::*;
    use crate::http::parse_query;
    use crate::{NodeSnapshot, PgInfo, Role};

    fn req(target: &str) -> Request {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        Request {
            method: "GET".into(),
            path: path.into(),
            query: parse_query(query),
            headers: vec![],
            body: None,
        }
    }

    fn snapshot(primary: bool, leader: bool, now: Instant) -> NodeSnapshot {
        let mut s = NodeSnapshot::starting("pg1", "batman");
        s.state = State::Running;
        s.role = if primary {
            Role::Primary
        } else {
            Role::Replica
        };
        s.pg = Some(PgInfo {
            in_recovery: !primary,
            timeline: 1,
            wal_flush_lsn: primary.then_some(1000),
            receive_lsn: (!primary).then_some(1000),
            replay_lsn: (!primary).then_some(1000),
            replication_state: (!primary).then(|| "streaming".to_string()),
            ..Default::default()
        });
        s.leader_until = leader.then_some(now + Duration::from_secs(20));
        let cluster = Cluster {
            leader: Some(Leader {
                name: if leader { "pg1" } else { "pg0" }.into(),
                version: 1,
                lease: 1,
            }),
            status: pgpilot_dcs::Status {
                optime: 1000,
                ..Default::default()
            },
            ..Default::default()
        };
        s.cluster = Some(Arc::new(cluster));
        s.cluster_valid_until = Some(now + Duration::from_secs(20));
        s.configured_tags = json!({"zone": "a", "clonefrom": true})
            .as_object()
            .cloned()
            .unwrap_or_default();
        s
    }

    /// Patroni's codes for every health endpoint, for a leader, a streaming replica, a lagging
    /// one, a noloadbalance one, and a primary that lost its lock.
    #[test]
    fn health_code_table() {
        let now = Instant::now();
        let primary = snapshot(true, true, now);
        let replica = snapshot(false, false, now);
        let mut lagging = snapshot(false, false, now);
        if let Some(pg) = lagging.pg.as_mut() {
            pg.replay_lsn = Some(10);
        }
        let mut noload = snapshot(false, false, now);
        noload
            .configured_tags
            .insert("noloadbalance".into(), json!(true));
        let unlocked_primary = snapshot(true, false, now);
        let mut stopped = snapshot(false, false, now);
        stopped.state = State::Stopped;
        stopped.pg = None;
        let rows: &[(&str, &NodeSnapshot, &str, u16)] = &[
            ("primary", &primary, "/", 200),
            ("primary", &primary, "/primary", 200),
            ("primary", &primary, "/master", 200),
            ("primary", &primary, "/read-write", 200),
            ("primary", &primary, "/leader", 200),
            ("primary", &primary, "/standby-leader", 503),
            ("primary", &primary, "/replica", 503),
            ("primary", &primary, "/read-only", 200),
            ("primary", &primary, "/health", 200),
            ("primary", &primary, "/async", 503),
            ("primary", &primary, "/whatever", 503),
            ("replica", &replica, "/", 503),
            ("replica", &replica, "/primary", 503),
            ("replica", &replica, "/leader", 503),
            ("replica", &replica, "/replica", 200),
            ("replica", &replica, "/read-only", 200),
            ("replica", &replica, "/health", 200),
            ("replica", &replica, "/async", 200),
            ("replica", &replica, "/sync", 503),
            ("replica", &replica, "/replica?lag=1MB", 200),
            ("replica", &replica, "/replica?tag_zone=a", 200),
            ("replica", &replica, "/replica?tag_zone=b", 503),
            ("replica", &replica, "/replica?tag_clonefrom=true", 200),
            ("replica", &replica, "/replica?tag_missing=x", 503),
            (
                "replica",
                &replica,
                "/replica?replication_state=streaming",
                200,
            ),
            (
                "replica",
                &replica,
                "/replica?replication_state=in%20archive%20recovery",
                503,
            ),
            ("lagging", &lagging, "/replica?lag=100", 503),
            ("lagging", &lagging, "/replica", 200),
            ("noloadbalance", &noload, "/replica", 503),
            ("noloadbalance", &noload, "/health", 200),
            ("unlocked primary", &unlocked_primary, "/primary", 503),
            ("unlocked primary", &unlocked_primary, "/leader", 503),
            ("stopped", &stopped, "/health", 503),
            ("stopped", &stopped, "/replica", 503),
        ];
        let mut failures = Vec::new();
        for (who, snap, target, want) in rows {
            let got = health_code(snap, &req(target), now);
            if got != *want {
                failures.push(format!("{who} GET {target}: want {want}, got {got}"));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    /// A standby cluster (`/config.standby_cluster` with a host): the standby leader answers
    /// `/standby-leader` and `/leader`, not `/primary` nor `/replica`; its replicas answer as
    /// replicas; `standby_cluster: {}` is no standby cluster.
    #[test]
    fn standby_cluster_health_codes() {
        let now = Instant::now();
        let with_config = |mut s: NodeSnapshot, doc: serde_json::Value| {
            let mut c = s.cluster.as_deref().cloned().unwrap_or_default();
            c.config = Some(pgpilot_dcs::ClusterConfig {
                data: doc.as_object().cloned().unwrap_or_default(),
                version: 1,
            });
            s.cluster = Some(Arc::new(c));
            s
        };
        let standby = json!({"standby_cluster": {"host": "10.0.0.1", "port": 5432}});
        let mut leader = with_config(snapshot(false, true, now), standby.clone());
        leader.role = Role::StandbyLeader;
        let replica = with_config(snapshot(false, false, now), standby);
        let not_standby = with_config(
            snapshot(false, true, now),
            json!({"standby_cluster": {"primary_slot_name": "x"}}),
        );
        let rows: &[(&str, &NodeSnapshot, &str, u16)] = &[
            ("standby leader", &leader, "/standby-leader", 200),
            ("standby leader", &leader, "/standby_leader", 200),
            ("standby leader", &leader, "/leader", 200),
            ("standby leader", &leader, "/primary", 503),
            ("standby leader", &leader, "/", 503),
            ("standby leader", &leader, "/replica", 503),
            ("standby leader", &leader, "/read-only", 200),
            ("standby replica", &replica, "/standby-leader", 503),
            ("standby replica", &replica, "/replica", 200),
            ("standby replica", &replica, "/primary", 503),
            (
                "no host/port/restore_command",
                &not_standby,
                "/standby-leader",
                503,
            ),
        ];
        let mut failures = Vec::new();
        for (who, snap, target, want) in rows {
            let got = health_code(snap, &req(target), now);
            if got != *want {
                failures.push(format!("{who} GET {target}: want {want}, got {got}"));
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    #[test]
    fn lag_units() {
        assert_eq!(parse_lag("1024"), Some(1024));
        assert_eq!(parse_lag("16kB"), Some(16 * 1024));
        assert_eq!(parse_lag("64MB"), Some(64 << 20));
        assert_eq!(parse_lag("1GB"), Some(1 << 30));
        assert_eq!(parse_lag("x"), None);
    }

    #[test]
    fn liveness_and_readiness() {
        let now = Instant::now();
        let mut s = snapshot(false, false, now);
        s.next_run = now;
        assert_eq!(liveness(&s, now), 200);
        assert_eq!(liveness(&s, now + Duration::from_secs(100)), 503);
        assert_eq!(readiness(&s, &req("/readiness"), now), 200);
        if let Some(pg) = s.pg.as_mut() {
            pg.replay_lsn = Some(0);
        }
        assert_eq!(readiness(&s, &req("/readiness?lag=10"), now), 503);
        assert_eq!(
            readiness(&s, &req("/readiness?lag=10&mode=write"), now),
            200
        );
    }

    /// A streaming replica that can see neither the DCS nor the leader's position through its
    /// walreceiver is ready only while failsafe mode is active (Patroni's `_readiness`).
    #[test]
    fn readiness_without_the_dcs_counts_on_failsafe() {
        let now = Instant::now();
        let mut s = snapshot(false, false, now);
        let later = now + Duration::from_secs(30);
        assert_eq!(
            readiness(&s, &req("/readiness"), later),
            503,
            "DCS view stale"
        );
        s.failsafe_active_until = Some(later + Duration::from_secs(5));
        assert_eq!(
            readiness(&s, &req("/readiness"), later),
            200,
            "failsafe active"
        );
        assert_eq!(
            readiness(&s, &req("/readiness"), later + Duration::from_secs(10)),
            503,
            "failsafe over"
        );
        // The walreceiver's position stands in for the DCS: lag decides, not failsafe.
        if let Some(pg) = s.pg.as_mut() {
            pg.latest_end_lsn = Some(1000);
            pg.replay_lsn = Some(0);
        }
        assert_eq!(readiness(&s, &req("/readiness?lag=10"), later), 503);
    }
}
