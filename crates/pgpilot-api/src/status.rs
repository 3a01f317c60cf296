//! The status document of `GET /patroni` and every health check (spec/rest-api.md §1.3).

use std::time::Instant;

use pgpilot_dcs::{Cluster, SyncMode, PATRONI_COMPAT_VERSION};
use serde_json::{json, Map, Value};

use crate::{NodeSnapshot, PgInfo, Role};

/// `synchronous_mode` of the cluster's `/config`.
pub(crate) fn sync_mode(c: &Cluster) -> SyncMode {
    SyncMode::from_value(
        c.config
            .as_ref()
            .and_then(|cfg| cfg.data.get("synchronous_mode")),
    )
}

/// Whether `name` is a standby listed in `/sync` (Patroni's `cluster.sync.matches(name)`).
pub(crate) fn in_sync_key(c: &Cluster, name: &str) -> bool {
    c.sync.as_ref().is_some_and(|s| s.matches(name, false))
}

/// Whether this node is listed in `/sync` (case-insensitive) — `(sync, quorum)` flags.
pub(crate) fn sync_flags(s: &NodeSnapshot, cluster: Option<&Cluster>) -> (bool, bool) {
    let Some(c) = cluster else {
        return (false, false);
    };
    let mode = sync_mode(c);
    if !mode.is_active() || s.role != Role::Replica {
        return (false, false);
    }
    let listed = in_sync_key(c, &s.name);
    if mode.is_quorum() {
        (false, listed)
    } else {
        (listed, false)
    }
}

/// The `role` of `/patroni` for a running PostgreSQL (Patroni's `get_postgresql_status`):
/// `primary` or `replica` from `pg_is_in_recovery()`, except that in a standby cluster a member
/// in recovery reports the agent's role, so the standby leader says `standby_leader`.
pub fn reported_role(s: &NodeSnapshot, pg: &PgInfo) -> &'static str {
    let standby_cluster = s
        .cluster
        .as_deref()
        .is_some_and(Cluster::is_standby_cluster);
    match (pg.in_recovery, standby_cluster) {
        (false, _) => "primary",
        (true, true) => s.role.as_str(),
        (true, false) => "replica",
    }
}

/// Builds the status document as Patroni does, field order included.
pub fn status_document(s: &NodeSnapshot, now: Instant) -> Value {
    let mut d = Map::new();
    let cluster = s.fresh_cluster(now);
    d.insert("state".into(), json!(s.state.as_str()));
    if let Some(pg) = &s.pg {
        d.insert(
            "postmaster_start_time".into(),
            json!(pg.postmaster_start_time),
        );
        d.insert("role".into(), json!(reported_role(s, pg)));
        d.insert("server_version".into(), json!(pg.server_version));
        let xlog = if pg.in_recovery {
            let replayed = pg.replay_lsn.unwrap_or(0);
            json!({
                "received_location": pg.receive_lsn.unwrap_or(replayed),
                "replayed_location": replayed,
                "replayed_timestamp": pg.replay_timestamp,
                "paused": pg.replay_paused,
            })
        } else {
            json!({"location": pg.wal_flush_lsn.unwrap_or(0)})
        };
        d.insert("xlog".into(), xlog);
        d.insert("timeline".into(), json!(pg.timeline));
        if pg.in_recovery {
            if let Some(rs) = &pg.replication_state {
                d.insert("replication_state".into(), json!(rs));
            }
        }
        if !pg.replication.is_empty() {
            d.insert("replication".into(), Value::Array(pg.replication.clone()));
        }
        let (sync, quorum) = sync_flags(s, cluster);
        if sync {
            d.insert("sync_standby".into(), json!(true));
        }
        if quorum {
            d.insert("quorum_standby".into(), json!(true));
        }
    } else {
        d.insert("role".into(), json!(s.role.as_str()));
    }
    if s.paused {
        d.insert("pause".into(), json!(true));
    }
    if cluster.is_none_or(Cluster::is_unlocked) {
        d.insert("cluster_unlocked".into(), json!(true));
    }
    if s.failsafe_is_active(now) {
        d.insert("failsafe_mode_is_active".into(), json!(true));
    }
    d.insert("dcs_last_seen".into(), json!(s.dcs_last_seen));
    if !s.tags.is_empty() {
        d.insert("tags".into(), Value::Object(s.tags.clone()));
    }
    if let Some(sysid) = &s.database_system_identifier {
        d.insert("database_system_identifier".into(), json!(sysid));
    }
    if let Some(reason) = &s.pending_restart_reason {
        d.insert("pending_restart".into(), json!(true));
        d.insert(
            "pending_restart_reason".into(),
            Value::Object(reason.clone()),
        );
    }
    if let Some(sr) = &s.scheduled_restart {
        d.insert("scheduled_restart".into(), Value::Object(sr.clone()));
    }
    d.insert(
        "patroni".into(),
        json!({"version": PATRONI_COMPAT_VERSION, "scope": s.scope, "name": s.name}),
    );
    if s.watchdog_failed {
        d.insert("watchdog_failed".into(), json!(true));
    }
    Value::Object(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `watchdog_failed: true` only when the watchdog is required and unusable, after
    /// `patroni` as Patroni writes it; peers read it to leave the member out of leader races.
    #[test]
    fn watchdog_failed_only_when_true() {
        let mut s = NodeSnapshot::starting("pg1", "batman");
        let doc = status_document(&s, Instant::now());
        assert!(doc.get("watchdog_failed").is_none(), "{doc}");
        s.watchdog_failed = true;
        let doc = status_document(&s, Instant::now());
        let keys: Vec<&String> = doc.as_object().unwrap().keys().collect();
        assert_eq!(keys[keys.len() - 2..], ["patroni", "watchdog_failed"]);
        assert_eq!(doc["watchdog_failed"], json!(true));
    }
}
