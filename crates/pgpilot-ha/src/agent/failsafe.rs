//! Failsafe mode, the agent's side (the policy and why it is safe: `decide::failsafe`): the
//! leader keeps `/failsafe` up to date; a primary that lost the DCS runs a round of
//! `POST /failsafe` and, if everyone listed accepted, counts it as a renewal sent when the
//! round started; a replica reads what its REST API accepted and puts that leader in its view
//! of an unlocked cluster.

use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;

use pgpilot_dcs::{Cluster, Dcs};
use pgpilot_postgres::{slot_name_for, PgControl, StopMode};
use pgpilot_types::{FailsafeLeader, Peers, Role};
use serde_json::{json, Map, Value};
use tracing::{error, info, warn};

use crate::decide::{
    after_failsafe_round, failsafe_topology, inject_leader, AfterFailsafe, KnownLeader,
    Observation, PgView,
};

use super::Agent;

/// Patroni's `POST /failsafe`: 2 s per request, one retry.
const POST_TIMEOUT: Duration = Duration::from_secs(2);
const POST_ATTEMPTS: usize = 2;

impl<D: Dcs, P: Peers, Pg: PgControl> Agent<D, P, Pg> {
    /// The leader named by a `POST /failsafe` received less than a ttl ago and after our last
    /// promotion; only with failsafe mode on.
    fn known_failsafe_leader(&self) -> Option<FailsafeLeader> {
        if !self.dynamic.failsafe_mode {
            return None;
        }
        let leader = self.failsafe_posts.as_ref()?.borrow().clone()?;
        let reset = self.failsafe_reset_at.map(Instant::into_std);
        let fresh = leader.received.elapsed() < self.dynamic.ttl;
        (fresh && reset.is_none_or(|r| leader.received > r)).then_some(leader)
    }

    /// The view with the failsafe leader in it (`decide::inject_leader`), when the key is gone.
    pub(super) fn with_failsafe_leader(&self, mut cluster: Cluster) -> Cluster {
        if cluster.is_unlocked() {
            if let Some(l) = self.known_failsafe_leader() {
                let known = KnownLeader {
                    name: &l.name,
                    conn_url: &l.conn_url,
                    api_url: &l.api_url,
                    slots: l.slots.as_ref(),
                };
                inject_leader(&mut cluster, &known, &self.cfg.name);
            }
        }
        cluster
    }

    /// A replica that can not read the DCS while a leader's `POST /failsafe` keeps the cluster
    /// going still advances its copies of the leader's slots, to the positions that leader
    /// sent (Patroni's `_sync_replication_slots(dcs_failed=True)` with failsafe mode on): the
    /// last DCS view, with the leader of the request in it and its slot positions.
    pub(super) async fn failsafe_replica_slots(&mut self, obs: &Observation) {
        if obs.cluster.is_some() || self.known_failsafe_leader().is_none() {
            return;
        }
        let Some(mut view) = self.last_cluster.as_deref().cloned() else {
            return;
        };
        // The request stands for the key; `with_failsafe_leader` fills an unlocked view only.
        view.leader = None;
        let view = self.with_failsafe_leader(view);
        if view.leader.is_some() {
            self.sync_replica_slots_in(&view, &obs.pg).await;
        }
    }

    /// The `slots` of our `POST /failsafe`: the positions of the slots the last `/status` we
    /// wrote named, read again now (a slot that can not be read keeps its last value), and
    /// our own slot name at `wal_position`, as `/status.slots`.
    pub(super) async fn failsafe_slots(&self, wal_position: Option<u64>) -> Map<String, Value> {
        let mut slots = self
            .last_cluster
            .as_deref()
            .and_then(|c| c.status.slots.clone())
            .unwrap_or_default();
        if let Ok(existing) = self.pg.list_slots().await {
            for s in existing {
                if let (Some(v), Some(lsn)) = (slots.get_mut(&s.name), s.lsn) {
                    *v = Value::from(lsn);
                }
            }
        }
        if let Some(pos) = wal_position {
            slots.insert(slot_name_for(&self.cfg.name), Value::from(pos));
        }
        slots
    }

    /// Until when `/patroni` reports failsafe active: our own last round as a primary, or the
    /// leader that asked us.
    pub(super) fn failsafe_active_until(&self) -> Option<std::time::Instant> {
        let own = self
            .failsafe_until
            .map(|t| t.into_std())
            .filter(|_| self.dynamic.failsafe_mode);
        let asked = self
            .known_failsafe_leader()
            .map(|l| l.received + self.dynamic.ttl);
        own.max(asked)
    }

    /// Failsafe is over for this member: it renewed the key, promoted or demoted.
    pub(super) fn reset_failsafe(&mut self) {
        self.failsafe_until = None;
        self.failsafe_reset_at = Some(Instant::now());
    }

    /// The leader's part, after a successful renewal: `/failsafe` lists every member with an
    /// api_url and us; written (unconditional put) only when it differs from the view.
    pub(super) async fn write_failsafe(&self, cluster: &Cluster) {
        if !self.dynamic.failsafe_mode {
            return;
        }
        let want = failsafe_topology(cluster, &self.cfg.name, &self.cfg.api_url());
        if cluster.failsafe.as_ref() == Some(&want) {
            return;
        }
        let text = Value::Object(want).to_string();
        // Written again next cycle while it differs.
        if let Err(e) = self.dcs.set_failsafe(&text).await {
            warn!("could not write /failsafe: {e}");
        }
    }

    /// The members of `/failsafe` that have no member key, `(name, api_url)`: with failsafe
    /// mode on they join the WAL comparison of a leader race (Patroni's rule 8).
    pub(super) fn failsafe_only_members(&self, cluster: &Cluster) -> Vec<(String, String)> {
        if !self.dynamic.failsafe_mode {
            return Vec::new();
        }
        cluster
            .failsafe
            .iter()
            .flatten()
            .filter(|(name, _)| **name != self.cfg.name && cluster.member(name).is_none())
            .filter_map(|(name, url)| Some((name.clone(), url.as_str()?.to_string())))
            .filter(|(_, url)| !url.is_empty())
            .collect()
    }

    /// Patroni's `check_failsafe_topology` and what follows it: `POST /failsafe` to `members`
    /// in parallel (2 s, one retry each); all accepted -> stay primary with the watchdog kept
    /// alive and the guard armed from the round's start, as after a renewal sent then; else
    /// demote offline. Returns the sentence of the cycle.
    pub(super) async fn failsafe_round(
        &mut self,
        members: Vec<(String, String)>,
        obs: &Observation,
    ) -> String {
        let wal_position = match obs.pg {
            PgView::Running { wal_position, .. } => Some(wal_position),
            _ => None,
        };
        let slots = self.failsafe_slots(wal_position).await;
        // Taken before the first request: every acknowledgement comes after it, so each member
        // honours us until at least `start + ttl` (see `decide::failsafe`).
        let start = self.guard.renewal_started();
        let body = json!({
            "name": self.cfg.name,
            "conn_url": self.cfg.conn_url(),
            "api_url": self.cfg.api_url(),
            "slots": slots,
        });
        let mut set = JoinSet::new();
        for (name, url) in members {
            let peers = self.peers.clone();
            let body = body.clone();
            set.spawn(async move {
                for _ in 0..POST_ATTEMPTS {
                    if peers.post_failsafe(&url, &body, POST_TIMEOUT).await {
                        return (name, true);
                    }
                }
                (name, false)
            });
        }
        let mut answers = Vec::new();
        while let Some(res) = set.join_next().await {
            match res {
                Ok(answer) => answers.push(answer),
                // A panicked request task: that member did not accept.
                Err(e) => answers.push((format!("(a request task: {e})"), false)),
            }
        }
        answers.sort();
        match after_failsafe_round(&answers) {
            AfterFailsafe::Lead { msg } => {
                self.last_renewal = Some(start.at);
                self.watchdog.keepalive();
                if !self.guard.arm(start, self.dynamic.ttl) {
                    // The guard is on and did not take the deadline: this member may not lead.
                    error!("{}", self.guard.refusal());
                    return self.demote_offline().await;
                }
                self.failsafe_until = Some(start.at + self.dynamic.ttl);
                self.role = Role::Primary;
                msg
            }
            AfterFailsafe::Demote { msg } => {
                info!("{msg}");
                self.demote_offline().await
            }
        }
    }

    /// Patroni's `demote('offline')` after losing the DCS.
    pub(super) async fn demote_offline(&mut self) -> String {
        self.demote(StopMode::Fast).await;
        "demoted self because DCS is not accessible and I was a leader".into()
    }
}
