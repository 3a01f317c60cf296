//! Replication slots, the act phase's slot duty (spec/ha-loop.md §5.9, planned by
//! [`crate::slots`]): the leader's members' and permanent slots, a replica's copies of the
//! permanent and logical slots, and `/status`'s slot fields.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;

use pgpilot_config::PermanentSlot;
use pgpilot_dcs::{Cluster, Dcs};
use pgpilot_postgres::{
    slot_name_for, PgControl, PgError, SlotChange, SlotInfo, StopMode, Upstream,
};
use pgpilot_types::{Peers, State};
use serde_json::{Map, Value};
use tracing::{error, info, warn};

use crate::decide::{ActionKind, Observation, PgView};
use crate::slots::{
    advance_changes, plan_slots, plan_slots_as, replica_logical_changes, status_slots,
    update_retain, without_primary_slot, SlotInputs, SlotPlan, SlotRole,
};

use super::Agent;

impl<D: Dcs, P: Peers, Pg: PgControl> Agent<D, P, Pg> {
    /// Replication slots on the leader (spec/ha-loop.md §5.9, planned by [`crate::slots`]):
    /// members' and permanent slots created, slots pgpilot no longer wants dropped when that is
    /// safe. Returns `/status.slots` and `/status.retain_slots`.
    pub(super) async fn sync_slots(
        &mut self,
        cluster: &Cluster,
        wal_position: u64,
    ) -> (Option<Map<String, Value>>, Option<Vec<String>>) {
        let now = Instant::now();
        let ttl = self.dynamic.member_slots_ttl;
        // Patroni resets the retention timers of `/status.retain_slots` on promotion.
        let mut retain = self.slot_retain.take().unwrap_or_else(|| {
            cluster
                .status
                .retain_slots
                .iter()
                .flatten()
                .map(|n| (n.clone(), now))
                .collect()
        });
        if !self.dynamic.use_slots {
            self.slot_retain = Some(BTreeMap::new());
            return (None, None);
        }
        let retain_slots = cluster.status.retain_slots.clone().unwrap_or_default();
        let existing = match self.pg.list_slots().await {
            Ok(e) => e,
            Err(e) => {
                warn!("could not read replication slots: {e}");
                let expired = update_retain(
                    &mut retain,
                    None,
                    &self.slot_inputs(cluster, &[], &[]),
                    now,
                    ttl,
                );
                log_expired(&expired, ttl);
                let names = retained(&retain);
                self.slot_retain = Some(retain);
                return (None, names);
            }
        };
        let inputs = self.slot_inputs(cluster, &retain_slots, &existing);
        let mut plan = plan_slots(&inputs);
        // A slot nobody streams through (a cascading member's) follows the member's position.
        let advances = advance_changes(&plan, &existing, cluster.status.slots.as_ref());
        plan.changes.extend(advances);
        let own = slot_name_for(&self.cfg.name);
        let published = status_slots(
            &plan,
            &existing,
            ttl,
            (&own, wal_position),
            &self.dynamic.permanent_slots,
        );
        let expired = update_retain(&mut retain, published.as_ref(), &inputs, now, ttl);
        let retain_names = retained(&retain);
        self.slot_retain = Some(retain);
        log_expired(&expired, ttl);
        self.carry_out(cluster, &mut plan).await;
        (published, retain_names)
    }

    /// Replica side of §5.9 on PostgreSQL 11+ in recovery: on a failover candidate the
    /// members' physical slots (with `member_slots_ttl` > 0; the leader's included) and the
    /// permanent physical slots, advanced to the leader's `/status.slots` positions; on a
    /// `nofailover` member the slots of the members that stream from it.
    pub(super) async fn sync_replica_slots(&mut self, obs: &Observation) {
        if let Some(cluster) = obs.cluster.as_ref() {
            self.sync_replica_slots_in(cluster, &obs.pg).await;
        }
    }

    /// [`Self::sync_replica_slots`] in the view `cluster` (failsafe mode passes one of its own).
    pub(super) async fn sync_replica_slots_in(&mut self, cluster: &Cluster, pg: &PgView) {
        let recovering = matches!(
            pg,
            PgView::Running {
                in_recovery: true,
                ..
            }
        );
        let version = self.last_pg.as_ref().map_or(0, |p| p.server_version);
        if !self.dynamic.use_slots || !recovering || version < 110_000 {
            return;
        }
        let existing = match self.pg.list_slots().await {
            Ok(e) => e,
            Err(e) => {
                warn!("could not read replication slots: {e}");
                return;
            }
        };
        let retain_slots = cluster.status.retain_slots.clone().unwrap_or_default();
        let inputs = self.slot_inputs(cluster, &retain_slots, &existing);
        let role = SlotRole::Replica {
            nofailover: !self.cfg.tags.can_failover(),
        };
        let mut plan = plan_slots_as(&inputs, role);
        plan.changes.extend(advance_changes(
            &plan,
            &existing,
            cluster.status.slots.as_ref(),
        ));
        // Copies of the permanent logical slots: not on a member without streaming or
        // cascading from one (no feedback reaches the primary, so its copies would not be safe
        // to use).
        if without_primary_slot(
            &cluster.members,
            &self.cfg.name,
            self.cfg.tags.nostream,
            self.cfg.tags.replicatefrom.as_deref(),
        ) {
            plan.replica_logical.clear();
        }
        let replayed = self
            .last_pg
            .as_ref()
            .and_then(|p| p.replay_lsn)
            .map_or(0, |l| l.0);
        let (advance, copy) =
            replica_logical_changes(&plan, &existing, cluster.status.slots.as_ref(), replayed);
        plan.changes.extend(advance);
        self.carry_out(cluster, &mut plan).await;
        if !copy.is_empty() {
            self.copy_logical_slots(cluster, &plan, copy).await;
        }
    }

    /// Patroni's `copy_logical_slots`: the state of the leader's logical slots we lack is read
    /// over a superuser connection, then PostgreSQL is stopped, the state files are put in
    /// `pg_replslot` and PostgreSQL starts again (a background restart task). A logical slot
    /// cannot be created on a standby; a copy made this way is advanced from then on, and is
    /// usable after a failover because `hot_standby_feedback` made the primary keep the
    /// catalog rows it needs.
    async fn copy_logical_slots(&mut self, cluster: &Cluster, plan: &SlotPlan, names: Vec<String>) {
        if self.task.is_some() {
            return;
        }
        let Some(leader) = cluster.leader.as_ref() else {
            return;
        };
        let Some((host, port)) = cluster
            .member(&leader.name)
            .and_then(|m| m.data.host_port())
        else {
            return;
        };
        let states = match self
            .pg
            .read_logical_slots(&Upstream { host, port }, &names)
            .await
        {
            Ok(s) => s,
            Err(e) => {
                error!(
                    "Failed to copy logical slots from the {} via postgresql connection: {e}",
                    leader.name
                );
                return;
            }
        };
        let states: Vec<_> = states
            .into_iter()
            .filter(|s| {
                let fits = plan.replica_logical.get(&s.name).is_some_and(|w| {
                    *w == PermanentSlot::Logical {
                        database: s.database.clone(),
                        plugin: s.plugin.clone(),
                    }
                });
                if !fits {
                    warn!(
                        "Will not copy the logical slot \"{}\" due to the configuration mismatch",
                        s.name
                    );
                }
                fits
            })
            .collect();
        if states.is_empty() {
            return;
        }
        let copied: Vec<&str> = states.iter().map(|s| s.name.as_str()).collect();
        info!(
            "Copying logical replication slots {copied:?} from the primary {}",
            leader.name
        );
        let pg = self.pg.clone();
        let timeout = self.pg_ctl_timeout();
        self.state = State::Restarting;
        self.spawn_task::<_, PgError>(ActionKind::Restart, async move {
            pg.stop(StopMode::Fast, timeout).await?;
            // Start again whether or not the files went in: a replica left down is worse
            // than a slot copied on the next attempt.
            let installed = pg.install_logical_slots(&states);
            pg.start(timeout).await?;
            installed
        });
    }

    /// Applies planned slot changes, logging each outcome with Patroni's sentences.
    async fn apply_slot_changes(&mut self, plan: &SlotPlan) {
        for change in &plan.changes {
            if let SlotChange::Drop(name) = change {
                if plan.lost.contains(name) {
                    info!("Trying to drop replication slot '{name}' with wal_status=lost");
                } else if !plan.wanted.contains_key(name) {
                    info!("Trying to drop unknown replication slot '{name}'");
                }
            }
            match (self.pg.change_slot(change).await, change) {
                (Ok(()), SlotChange::Drop(name)) => {
                    info!("Dropped replication slot '{name}'");
                }
                (Ok(()), _) => {}
                (Err(e), SlotChange::Drop(name)) => {
                    warn!("Unable to drop replication slot '{name}': {e}")
                }
                (Err(e), SlotChange::CreatePhysical(name)) => {
                    error!("Failed to create physical replication slot '{name}': {e}")
                }
                (Err(e), SlotChange::CreateLogical { name, plugin, .. }) => {
                    error!(
                        "Failed to create logical replication slot '{name}' plugin='{plugin}': {e}"
                    )
                }
                (
                    Err(e),
                    SlotChange::Advance { name, lsn }
                    | SlotChange::AdvanceLogical { name, lsn, .. },
                ) => {
                    error!(
                        "Error while advancing replication slot {name} to position '{}': {e}",
                        pgpilot_postgres::Lsn(*lsn)
                    )
                }
            }
        }
    }

    fn slot_inputs<'a>(
        &'a self,
        cluster: &'a Cluster,
        retain_slots: &'a [String],
        existing: &'a [SlotInfo],
    ) -> SlotInputs<'a> {
        let version = self.last_pg.as_ref().map_or(0, |p| p.server_version);
        SlotInputs {
            me: &self.cfg.name,
            leader: cluster.leader.as_ref().map(|l| l.name.as_str()),
            retention: !self.dynamic.member_slots_ttl.is_zero() && version >= 110_000,
            members: &cluster.members,
            retain_slots,
            permanent: &self.dynamic.permanent_slots,
            ignore: &self.dynamic.ignore_slots,
            existing,
        }
    }

    /// Logs the plan's sentences and applies its changes.
    async fn carry_out(&mut self, cluster: &Cluster, plan: &mut SlotPlan) {
        // As Patroni: nothing is dropped while paused, nor without `/config` in the DCS (the
        // permanent slots are not known). A lost slot kept is not created again either.
        if self.dynamic.pause || cluster.config.is_none() {
            let lost = std::mem::take(&mut plan.lost);
            plan.changes.retain(|c| match c {
                SlotChange::Drop(_) => false,
                SlotChange::CreatePhysical(name) | SlotChange::CreateLogical { name, .. } => {
                    !lost.contains(name)
                }
                _ => true,
            });
        }
        for e in &plan.errors {
            error!("{e}");
        }
        for n in &plan.notes {
            warn!("{n}");
        }
        self.apply_slot_changes(plan).await;
    }
}

fn log_expired(expired: &[String], ttl: Duration) {
    for name in expired {
        info!(
            "Replication slot '{name}' for absent cluster member is expired after {} sec.",
            ttl.as_secs()
        );
    }
}

/// `/status.retain_slots`: sorted names, `None` when empty.
fn retained(retain: &BTreeMap<String, Instant>) -> Option<Vec<String>> {
    let names: Vec<String> = retain.keys().cloned().collect();
    (!names.is_empty()).then_some(names)
}
