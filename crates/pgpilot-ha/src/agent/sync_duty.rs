//! The primary's synchronous-replication duty: `synchronous_standby_names` and the `/sync` key
//! moved one safe step per cycle (see [`crate::sync`]), and a replica leaving that duty before
//! it stops.

use std::time::Duration;

use tokio::time::Instant;

use pgpilot_dcs::{Cluster, Dcs};
use pgpilot_postgres::{PgControl, PgState};
use pgpilot_types::{Peers, Role};
use serde_json::Value;
use tracing::{info, warn};

use crate::decide::Observation;
use crate::sync::{self, Ssn, Standby, SyncKey, SyncParams, SyncStep, SyncView};

use super::Agent;

impl<D: Dcs, P: Peers, Pg: PgControl> Agent<D, P, Pg> {
    /// The synchronous replication settings in force.
    pub(super) fn sync_params(&self) -> SyncParams {
        SyncParams {
            // Synchronous replication is ignored in a standby cluster, as in Patroni.
            mode: if self.dynamic.standby_cluster.is_some() {
                pgpilot_config::SyncMode::Off
            } else {
                self.dynamic.synchronous_mode
            },
            strict: self.dynamic.synchronous_mode_strict,
            node_count: self.dynamic.synchronous_node_count,
            max_lag: self.dynamic.maximum_lag_on_syncnode,
        }
    }

    /// After a start, before the first configuration is written: a `/sync` key that names us
    /// as leader promises its standbys every acknowledged commit, so a primary we (re)start
    /// must wait for them as that key says, not start with an empty ssn.
    pub(super) fn recover_ssn(&mut self, cluster: &Cluster) {
        if self.sync_duty.ssn_known {
            return;
        }
        self.sync_duty.ssn_known = true;
        let params = self.sync_params();
        if let Some(key) = SyncKey::of(cluster.sync.as_ref(), &self.cfg.name) {
            if params.active() {
                self.set_ssn(sync::ssn_for_key(&params, Some(&key)));
            }
        }
    }

    pub(super) fn set_ssn(&mut self, ssn: Ssn) {
        if ssn != self.sync_duty.ssn {
            let quorum = self.sync_params().quorum();
            info!(
                "Assigning synchronous standby status: synchronous_standby_names = '{}'",
                ssn.render(quorum)
            );
        }
        self.sync_duty.ssn = ssn;
        self.sync_duty.ssn_set_at = Some(Instant::now());
        self.sync_duty.ssn_lsn = None;
    }

    /// The leader's synchronous replication step (spec/ha-loop.md §5.7–5.8): one safe change
    /// of ssn or `/sync` per cycle, computed by [`sync::next_step`].
    pub(super) async fn process_sync(&mut self, obs: &Observation) {
        let params = self.sync_params();
        let me = self.cfg.name.clone();
        let Some(cluster) = obs.cluster.as_ref() else {
            return;
        };
        if !params.active() {
            if !self.sync_duty.ssn.is_empty() {
                self.sync_duty.ssn = Ssn::empty();
            }
            if let Some(s) = &cluster.sync {
                // Tried again next cycle while the key is there.
                match self.dcs.delete_sync(Some(s.version)).await {
                    Ok(_) => info!("synchronous mode is off: removed /sync"),
                    Err(e) => warn!("could not remove /sync: {e}"),
                }
            }
            return;
        }
        let Some(pg) = self.last_pg.as_ref() else {
            return;
        };
        let primary_lsn = pg.wal_flush_lsn.map_or(0, |l| l.0);
        let standbys = standbys(cluster, &me, pg);
        // The new value governs commits once the walsenders processed the reload: take the
        // flush LSN of that moment from a cycle at least half a second after the change.
        if self.sync_duty.ssn_lsn.is_none()
            && self
                .sync_duty
                .ssn_set_at
                .is_none_or(|t| t.elapsed() >= Duration::from_millis(500))
        {
            self.sync_duty.ssn_lsn = Some(primary_lsn);
        }
        self.warn_strict_without_standby(&params, &standbys, primary_lsn);
        let key = SyncKey::of(cluster.sync.as_ref(), &me);
        let view = SyncView {
            params,
            ssn: &self.sync_duty.ssn,
            ssn_lsn: self.sync_duty.ssn_lsn.unwrap_or(u64::MAX),
            key: key.as_ref(),
            standbys: &standbys,
            primary_lsn,
        };
        match sync::next_step(&view) {
            SyncStep::WriteKey(k) => {
                let version = cluster.sync.as_ref().map(|s| s.version);
                match self.dcs.set_sync(&k.document(&me), version).await {
                    Ok(true) => {
                        info!(
                            "Synchronous standby status assigned to {:?} (quorum {})",
                            k.voters, k.quorum
                        );
                        self.run_again = true;
                    }
                    Ok(false) => warn!("Synchronous replication key updated by someone else"),
                    Err(e) => warn!("could not write /sync: {e}"),
                }
            }
            SyncStep::SetSsn(ssn) => {
                self.set_ssn(ssn);
                let desired = self.desired(None);
                if self.ensure_config(desired).await {
                    self.reload_pg().await;
                }
                self.run_again = true;
            }
            SyncStep::WaitConfirm | SyncStep::Nothing => {}
        }
    }

    /// Patroni's warning, once each time strict mode finds no eligible standby streaming:
    /// commits now wait for the standbys `/sync` last named (or for the placeholder nobody can
    /// satisfy) until one comes back. Log alerts written for Patroni match it.
    fn warn_strict_without_standby(
        &mut self,
        params: &SyncParams,
        standbys: &[Standby],
        primary_lsn: u64,
    ) {
        let short = params.strict && sync::candidates(params, standbys, primary_lsn).is_empty();
        if short && !self.sync_duty.warned_strict {
            let ssn = &self.sync_duty.ssn;
            let old = if ssn.is_empty() || ssn.names.contains(sync::PLACEHOLDER) {
                String::new()
            } else {
                format!(
                    "Continue using old value of synchronous_standby_names=\"{}\". ",
                    ssn.render(params.quorum())
                )
            };
            warn!("No active replication connections from Patroni members and synchronous_mode_strict is requested. {old}Commits will be delayed.");
        }
        self.sync_duty.warned_strict = short;
    }

    /// Before a replica stops in synchronous mode it asks the primary to drop it from `/sync`
    /// and waits up to 2 × loop_wait, so commits do not hang on a standby that is going away.
    pub(super) async fn leave_sync_duty(&mut self) {
        let me = self.cfg.name.clone();
        let listed = |c: &Cluster| c.sync.as_ref().is_some_and(|s| s.matches(&me, false));
        if !self.sync_params().active()
            || self.role != Role::Replica
            || !self.last_cluster.as_deref().is_some_and(listed)
        {
            return;
        }
        self.sync_duty.leaving = true;
        let cluster = self.last_cluster.clone();
        self.touch_member(cluster.as_deref()).await;
        self.publish(Instant::now());
        info!("Waiting for primary to release us from synchronous standby");
        let deadline = Instant::now() + 2 * self.dynamic.loop_wait;
        while Instant::now() < deadline {
            match self.dcs.cluster().await {
                Ok(c) if !listed(&c) => break,
                _ => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    }
}

/// The standbys the primary sees: member keys joined with `pg_stat_replication` rows (by
/// `application_name`, case-insensitive). Members replicating from someone else
/// (`replicatefrom`) or not running are not eligible.
pub(super) fn standbys(cluster: &Cluster, me: &str, pg: &PgState) -> Vec<Standby> {
    cluster
        .members
        .iter()
        .filter(|m| m.name != me && m.data.state == "running")
        .filter_map(|m| {
            let upstream = m.data.tags.as_ref().and_then(|t| t.get("replicatefrom"));
            if upstream.and_then(Value::as_str).is_some_and(|r| r != me) {
                return None;
            }
            let row = pg
                .replication
                .iter()
                .find(|r| r.application_name.eq_ignore_ascii_case(&m.name));
            Some(Standby {
                name: m.name.clone(),
                nosync: m.data.nosync(),
                sync_priority: m.data.sync_priority(),
                nofailover: m.data.nofailover(),
                streaming: row.is_some_and(|r| r.state == "streaming"),
                lsn: row.map_or(0, |r| r.sync_lsn(&pg.synchronous_commit).0),
                sync_state: row.map(|r| r.sync_state.clone()).unwrap_or_default(),
            })
        })
        .collect()
}
