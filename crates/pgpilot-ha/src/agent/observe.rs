//! The observe phase: the dynamic configuration from `/config` (and its cache file), the local
//! PostgreSQL, the stuck-replica watch, and the peers' REST status during a leader race.

use std::time::Duration;

use tokio::time::Instant;

use pgpilot_config::{Config, DynamicConfig};
use pgpilot_dcs::{Cluster, Dcs};
use pgpilot_postgres::PgControl;
use pgpilot_types::{PeerStatus, Peers, State};
use serde_json::{Map, Value};
use tracing::warn;

use crate::decide::{DataState, PgView};

use super::Agent;

impl<D: Dcs, P: Peers, Pg: PgControl> Agent<D, P, Pg> {
    /// A replica that stays unable to stream from a running leader may have WAL the leader
    /// never had (it streamed from a primary that kept running after losing its key): after
    /// a while its data is checked with pg_rewind like a demoted primary's (pg_rewind does
    /// nothing when there is no divergence). Not for a `nostream` replica.
    pub(super) fn watch_replication(&mut self, cluster: Option<&Cluster>, pg: &PgView) {
        let leader_running = cluster
            .and_then(Cluster::leader_member)
            .is_some_and(|l| l.name != self.cfg.name && l.data.state == "running");
        // A `nostream` replica never streams, by design: nothing to suspect.
        let stuck = leader_running
            && !self.cfg.tags.nostream
            && self.task.is_none()
            && matches!(
                pg,
                PgView::Running {
                    in_recovery: true,
                    streaming: false,
                    ..
                }
            );
        if !stuck {
            self.not_streaming_since = None;
            return;
        }
        let since = *self.not_streaming_since.get_or_insert_with(Instant::now);
        let patience = (self.dynamic.loop_wait * 5).max(Duration::from_secs(15));
        if since.elapsed() >= patience && !self.rewind.check {
            warn!(
                "not streaming from the leader for {}s: checking whether this replica diverged",
                since.elapsed().as_secs()
            );
            self.rewind.check = true;
            self.not_streaming_since = None;
        }
    }

    /// Reads `/config` into the dynamic configuration and applies TTL/retry changes.
    pub(super) fn apply_dynamic(&mut self, cluster: &Cluster) {
        let Some(cfg) = &cluster.config else { return };
        if cfg.data.is_empty() || cfg.data == self.dynamic.raw {
            return;
        }
        let (dynamic, warnings) = DynamicConfig::from_document_fenced(&cfg.data, self.cfg.guard);
        for w in warnings {
            if !self.logged_warnings.contains(&w) {
                warn!("{w}");
                self.logged_warnings.push(w);
            }
        }
        if dynamic.ttl != self.dynamic.ttl {
            self.dcs.set_ttl(dynamic.ttl);
        }
        if dynamic.retry_timeout != self.dynamic.retry_timeout {
            self.dcs.set_retry_timeout(dynamic.retry_timeout);
        }
        self.dynamic = dynamic;
        self.save_dynamic_cache();
    }

    /// Writes `<data_dir>/patroni.dynamic.json` (tmp file + rename) when the data directory
    /// exists.
    pub(super) fn save_dynamic_cache(&self) {
        let dir = &self.cfg.postgresql.data_dir;
        if !dir.join("PG_VERSION").exists() {
            return;
        }
        let path = dir.join("patroni.dynamic.json");
        let tmp = dir.join("patroni.dynamic.json.tmp");
        let text = Value::Object(self.dynamic.raw.clone()).to_string();
        let res = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = res {
            warn!("could not save {}: {e}", path.display());
        }
    }

    pub(super) async fn system_identifier(&mut self) -> Option<String> {
        if self.sysid.is_none() {
            match self.pg.controldata().await {
                Ok(cd) => self.sysid = Some(cd.system_identifier),
                Err(e) => warn!("pg_controldata failed: {e}"),
            }
        }
        self.sysid.clone()
    }

    pub(super) async fn observe_pg(&mut self, data: &DataState) -> PgView {
        if !matches!(data, DataState::Initialized { .. }) {
            self.last_pg = None;
            return PgView::Stopped {
                was_primary: false,
                clean: true,
            };
        }
        if self.pg.postmaster_pid().is_some() {
            match self.pg.query_state().await {
                Ok(st) => {
                    let view = PgView::Running {
                        in_recovery: st.in_recovery,
                        timeline: st.timeline,
                        wal_position: st.wal_position().0,
                        streaming: st.replication_state.as_deref() == Some("streaming"),
                    };
                    if self.task.is_none() {
                        self.state = State::Running;
                    }
                    self.rewind.done = false;
                    self.last_pg = Some(st);
                    return view;
                }
                Err(e) => {
                    self.last_pg = None;
                    if self.task.is_none() {
                        warn!("Error communicating with PostgreSQL. Will try again later: {e}");
                    }
                    return PgView::Unresponsive;
                }
            }
        }
        self.last_pg = None;
        match self.pg.controldata().await {
            Ok(cd) => {
                let was_primary = matches!(cd.state.as_str(), "in production" | "shut down")
                    && !self.pg.standby_signal()
                    && !self.rewind.done;
                // In maintenance mode a dead postmaster is just `stopped` (Patroni's wording:
                // nothing will recover it); otherwise one found dead was `crashed`.
                let paused = self.dynamic.pause;
                if self.task.is_none() && self.state == State::Running && !paused {
                    self.state = State::Crashed;
                } else if self.task.is_none() && (self.state != State::Crashed || paused) {
                    self.state = State::Stopped;
                }
                PgView::Stopped {
                    was_primary,
                    clean: cd.state.starts_with("shut down"),
                }
            }
            Err(e) => {
                if self.task.is_none() {
                    warn!("pg_controldata failed: {e}");
                }
                PgView::Stopped {
                    was_primary: false,
                    clean: false,
                }
            }
        }
    }

    /// Asks every other member with an api_url for its `/patroni`, in parallel, 2 s each; with
    /// failsafe mode on, also the members listed only in `/failsafe`.
    pub(super) async fn fetch_peers(&self, cluster: &Cluster) -> Vec<PeerStatus> {
        let mut set = tokio::task::JoinSet::new();
        let members = cluster
            .members
            .iter()
            .filter(|m| m.name != self.cfg.name && !m.data.api_url.is_empty())
            .map(|m| (m.name.clone(), m.data.api_url.clone()))
            .chain(self.failsafe_only_members(cluster));
        for (name, url) in members {
            let peers = self.peers.clone();
            set.spawn(async move { peers.peer_status(&name, &url, Duration::from_secs(2)).await });
        }
        let mut peers = Vec::new();
        while let Some(res) = set.join_next().await {
            if let Ok(Some(p)) = res {
                peers.push(p);
            }
        }
        peers
    }
}

/// The dynamic configuration cached in the data directory, with its warnings (logged at start
/// like those of `bootstrap.dcs`: a `/config` equal to it is not read again).
pub(super) fn load_dynamic_cache(cfg: &Config) -> Option<(DynamicConfig, Vec<String>)> {
    let text =
        std::fs::read_to_string(cfg.postgresql.data_dir.join("patroni.dynamic.json")).ok()?;
    let doc: Map<String, Value> = serde_json::from_str(&text).ok()?;
    Some(DynamicConfig::from_document_fenced(&doc, cfg.guard))
}
