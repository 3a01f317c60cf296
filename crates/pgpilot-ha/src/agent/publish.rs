//! The publish phase: our member key, `/history` after a promotion, and the snapshot the REST
//! API serves.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use pgpilot_dcs::{Cluster, Dcs, HistoryLine, MemberData, PATRONI_COMPAT_VERSION};
use pgpilot_postgres::{PgControl, PgState};
use pgpilot_types::{NodeSnapshot, Peers, PgInfo};
use serde_json::{Map, Value};
use tracing::warn;

use super::Agent;

impl<D: Dcs, P: Peers, Pg: PgControl> Agent<D, P, Pg> {
    /// Keeps `/history` in line with our timeline after a promotion.
    pub(super) async fn publish_history(&mut self, cluster: &Cluster, timeline: u32) {
        if timeline <= 1 {
            // Written again next cycle while it is missing.
            if cluster.history.is_none() {
                if let Err(e) = self.dcs.set_history("[]").await {
                    warn!("could not write /history: {e}");
                }
            }
            self.history_timeline = timeline;
            return;
        }
        if self.history_timeline == timeline && cluster.timeline() == timeline {
            return;
        }
        let lines = match self.pg.timeline_history(timeline).await {
            Ok(lines) => lines,
            Err(e) => {
                warn!("could not read the history of timeline {timeline}: {e}");
                return;
            }
        };
        let old = cluster.history.clone().unwrap_or_default();
        let last = lines.len().saturating_sub(1);
        let history: Vec<HistoryLine> = lines
            .into_iter()
            .enumerate()
            .map(|(i, (tl, lsn, reason))| {
                if let Some(prev) = old.iter().find(|h| h.timeline == tl) {
                    return prev.clone();
                }
                HistoryLine {
                    timeline: tl,
                    lsn: lsn.0,
                    reason,
                    timestamp: (i == last).then(now_iso),
                    leader: (i == last).then(|| self.cfg.name.clone()),
                }
            })
            .collect();
        match self
            .dcs
            .set_history(&HistoryLine::lines_to_json(&history))
            .await
        {
            Ok(()) => self.history_timeline = timeline,
            Err(e) => warn!("could not write /history: {e}"),
        }
    }

    /// Publishes our member key.
    pub(super) async fn touch_member(&mut self, cluster: Option<&Cluster>) {
        let data = self.member_data(cluster);
        if let Err(e) = self.dcs.touch_member(&data).await {
            warn!("could not update the member key: {e}");
        }
    }

    pub(super) fn member_data(&self, cluster: Option<&Cluster>) -> MemberData {
        let mut m = MemberData {
            conn_url: self.cfg.conn_url(),
            api_url: self.cfg.api_url(),
            state: self.state.as_str().into(),
            role: self.role.as_str().into(),
            version: PATRONI_COMPAT_VERSION.into(),
            ..Default::default()
        };
        let tags = self.effective_tags();
        if !tags.is_empty() {
            m.tags = Some(tags);
        }
        if let Some(st) = &self.last_pg {
            if self.task.is_none() {
                m.xlog_location = Some(st.wal_position().0);
            }
            if st.in_recovery {
                m.replay_lsn = st.replay_lsn.map(|l| l.0);
                m.receive_lsn = st.receive_lsn.map(|l| l.0);
                m.replication_state = st.replication_state.clone();
            }
            if st.timeline > 0 {
                m.timeline = Some(st.timeline);
            }
            if !st.pending_restart.is_empty() {
                m.pending_restart = Some(true);
                m.pending_restart_reason = Some(pending_reason(&st.pending_restart));
            }
        }
        if cluster.is_some_and(Cluster::is_paused) {
            m.pause = Some(true);
        }
        m.scheduled_restart = self.scheduled_restart_json();
        m
    }

    /// The configured tags, plus `nosync: true, sync_priority: 0` while we ask to leave
    /// synchronous duty.
    pub(super) fn effective_tags(&self) -> Map<String, Value> {
        let mut tags = self.cfg.tags.published.clone();
        if self.sync_duty.leaving {
            tags.insert("nosync".into(), Value::Bool(true));
            tags.insert("sync_priority".into(), Value::from(0));
        }
        tags
    }

    /// Publishes the REST snapshot.
    pub(super) fn publish(&self, cycle_started: Instant) {
        let now = Instant::now();
        let pg = self.last_pg.as_ref().map(pg_info);
        let snap = NodeSnapshot {
            name: self.cfg.name.clone(),
            scope: self.cfg.scope.clone(),
            state: self.state,
            role: self.role,
            pg,
            leader_until: self.last_renewal.map(|t| (t + self.dynamic.ttl).into_std()),
            cluster: self.last_cluster.clone(),
            cluster_valid_until: self.last_dcs_ok.map(|t| (t + self.dynamic.ttl).into_std()),
            dcs_last_seen: self.dcs_last_seen,
            paused: self.dynamic.pause,
            tags: self.effective_tags(),
            configured_tags: self.cfg.tags.published.clone(),
            database_system_identifier: self.sysid.clone(),
            pending_restart_reason: self
                .last_pg
                .as_ref()
                .filter(|s| !s.pending_restart.is_empty())
                .map(|s| pending_reason(&s.pending_restart)),
            maximum_lag_on_failover: self.dynamic.maximum_lag_on_failover,
            ttl: self.dynamic.ttl,
            next_run: (cycle_started.max(now) + self.dynamic.loop_wait).into_std(),
            loop_wait: self.dynamic.loop_wait,
            scheduled_restart: self.scheduled_restart_json(),
            watchdog_failed: !self.watchdog.is_healthy(),
            failsafe_mode: self.dynamic.failsafe_mode,
            failsafe_active_until: self.failsafe_active_until(),
            stats: self.stats,
        };
        self.snapshot.send_replace(Arc::new(snap));
    }
}

pub(super) fn pending_reason(p: &BTreeMap<String, (String, String)>) -> Map<String, Value> {
    p.iter()
        .map(|(k, (old, new))| {
            let mut o = Map::new();
            o.insert("old_value".into(), Value::from(old.clone()));
            o.insert("new_value".into(), Value::from(new.clone()));
            (k.clone(), Value::Object(o))
        })
        .collect()
}

/// The REST API's view of one monitoring-query result.
pub fn pg_info(st: &PgState) -> PgInfo {
    PgInfo {
        in_recovery: st.in_recovery,
        postmaster_start_time: st.postmaster_start_time.clone(),
        server_version: st.server_version,
        timeline: st.timeline,
        wal_flush_lsn: st.wal_flush_lsn.map(|l| l.0),
        receive_lsn: st.receive_lsn.map(|l| l.0),
        replay_lsn: st.replay_lsn.map(|l| l.0),
        replay_timestamp: st.replay_timestamp.clone(),
        replay_paused: st.replay_paused,
        replication_state: st.replication_state.clone(),
        latest_end_lsn: st.latest_end_lsn.map(|l| l.0),
        replication: st
            .replication
            .iter()
            .filter_map(|w| serde_json::to_value(w).ok())
            .collect(),
    }
}

pub(super) fn epoch_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub(super) fn now_iso() -> String {
    crate::local_now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6f%:z")
        .to_string()
}
