//! The standby cluster (spec/ha-loop.md §5.10, `/config.standby_cluster`): the member holding
//! the leader key is a *standby leader* that replicates from a remote primary and never
//! promotes; the other members replicate from it as usual. This module builds the recovery
//! configuration that points at the remote primary, creates the standby leader's data directory
//! from it at bootstrap, keeps the standby leader following it each cycle, and turns a primary
//! into a standby leader when `standby_cluster` is added to a running cluster (`demote-cluster`).
//!
//! Removing `standby_cluster` (`promote-cluster`) needs nothing here: the key holder is then an
//! ordinary leader in recovery, and the ordinary renewal promotes it.

use pgpilot_dcs::{Dcs, Status};
use pgpilot_postgres::{PgControl, PgError, ReplicaMethod, StandbyConfig, StopMode, Upstream};
use pgpilot_types::{Peers, Role, State};
use pgpilot_values::MethodCommand;
use tracing::{error, info, warn};

use crate::decide::{follow_callback, ActionKind, Observation, PgChange, PgView};

use super::act::{stop_postgres, FollowConfig};
use super::{Agent, AgentError};

impl<D: Dcs, P: Peers, Pg: PgControl> Agent<D, P, Pg> {
    /// The recovery target of the standby leader: the remote primary of `standby_cluster`
    /// (`host`/`port`), with `primary_slot_name` only when it is set there (Patroni's code;
    /// `use_slots: false` turns it off too). No upstream when only `restore_command` is set.
    pub(super) fn remote_standby(&self) -> StandbyConfig {
        let sc = self.dynamic.standby_cluster.as_ref();
        StandbyConfig {
            upstream: sc
                .and_then(|s| s.remote())
                .map(|(host, port)| Upstream { host, port }),
            slot_name: sc
                .and_then(|s| s.primary_slot_name.clone())
                .filter(|_| self.dynamic.use_slots),
        }
    }

    /// The configuration files of a member replicating from the remote primary: the replica
    /// configuration of [`Agent::desired`] plus `recovery_min_apply_delay`, which Patroni
    /// applies only when following the remote.
    fn desired_remote(&self) -> pgpilot_postgres::DesiredConfig {
        let mut desired = self.desired(Some(self.remote_standby()));
        if let Some(delay) = self
            .dynamic
            .standby_cluster
            .as_ref()
            .and_then(|s| s.recovery_min_apply_delay.clone())
        {
            desired
                .parameters
                .insert("recovery_min_apply_delay".into(), delay);
        }
        desired
    }

    /// `standby_cluster.create_replica_methods` resolved against the local configuration, as
    /// Patroni reads any `postgresql.<name>` section: `basebackup`, or the method of that
    /// section (listed in `postgresql.create_replica_methods` or not); a name without a section
    /// runs as its own command, as in Patroni (said in the log). None given = `basebackup`.
    fn standby_replica_methods(&self) -> Vec<ReplicaMethod> {
        let names = self
            .dynamic
            .standby_cluster
            .as_ref()
            .map(|s| s.create_replica_methods.clone())
            .unwrap_or_default();
        if names.is_empty() {
            return vec![ReplicaMethod::Basebackup];
        }
        let pg = &self.cfg.postgresql;
        names
            .into_iter()
            .map(|name| {
                if name == "basebackup" {
                    return ReplicaMethod::Basebackup;
                }
                let known = pg
                    .create_replica_methods
                    .iter()
                    .chain(&pg.other_replica_methods)
                    .find(|m| m.name() == name);
                match known {
                    Some(m) => m.clone(),
                    None => {
                        warn!(
                            "standby_cluster.create_replica_methods: {name} has no \
                             postgresql.{name} section with a command; running `{name}` as its \
                             command, as Patroni does"
                        );
                        ReplicaMethod::Custom {
                            method: MethodCommand {
                                name: name.clone(),
                                command: name.clone(),
                                argv: vec![name],
                                keys: Vec::new(),
                                no_params: false,
                            },
                            no_leader: false,
                            keep_data: false,
                        }
                    }
                }
            })
            .collect()
    }

    /// The winner of the initialize race of a standby cluster (Patroni's
    /// `bootstrap_standby_leader`): creates the data directory from the remote primary and
    /// starts it replicating from there. Success is published by `finish_bootstrap` (initialize
    /// key, `/config`, leader key, role `standby_leader`); failure cancels the initialization
    /// like a failed initdb (no half cluster is left).
    pub(super) fn start_standby_bootstrap(&mut self) {
        self.role = Role::Uninitialized;
        self.state = State::CreatingReplica;
        let desired = self.desired_remote();
        self.written = Some(desired.clone());
        let from = desired.standby.as_ref().and_then(|s| s.upstream.clone());
        let methods = self.standby_replica_methods();
        let pg = self.pg.clone();
        let hooks = self.hooks.clone();
        let args = self.cfg.postgresql.basebackup.clone();
        let timeout = self.pg_ctl_timeout();
        self.sysid = None;
        info!(
            "clone from remote member {}",
            from.as_ref().map_or_else(
                || "(none)".to_string(),
                |u| format!("{}:{}", u.host, u.port)
            )
        );
        self.spawn_task::<_, PgError>(ActionKind::Bootstrap, async move {
            if methods.is_empty() {
                return Err(PgError::Invalid(
                    "standby_cluster.create_replica_methods names no usable method".into(),
                ));
            }
            stop_postgres(&*pg, &hooks, StopMode::Immediate, timeout, None, None).await?;
            pg.create_replica(&methods, from.as_ref(), &args).await?;
            pg.write_config(&desired).await?;
            pg.start(timeout).await
        });
        if let Some(task) = &mut self.task {
            task.standby_leader = true;
        }
    }

    /// Points PostgreSQL (in recovery) at the remote primary as the standby leader and reloads
    /// it when the files changed (restarts it when PostgreSQL < 13 must see a new
    /// `primary_conninfo`). Returns the sentence of the cycle.
    pub(super) async fn follow_remote(&mut self, msg_if_same: String, msg_if_new: &str) -> String {
        let old_role = self.role;
        self.role = Role::StandbyLeader;
        let msg = if old_role == Role::StandbyLeader {
            msg_if_same
        } else {
            msg_if_new.to_string()
        };
        let desired = self.desired_remote();
        match self
            .apply_follow_config(desired, old_role, Role::StandbyLeader)
            .await
        {
            FollowConfig::Restarting { .. } => {
                format!("{msg}; restarting to follow the remote primary")
            }
            FollowConfig::Reloaded => msg,
            // Patroni fires `on_role_change` when a member becomes standby leader without a
            // restart, whether or not its recovery settings changed.
            FollowConfig::Unchanged => {
                if old_role != Role::StandbyLeader {
                    let callback = follow_callback(
                        self.hooks.called(),
                        old_role,
                        Role::StandbyLeader,
                        PgChange::Reload,
                    );
                    self.hooks.fire(callback, Role::StandbyLeader);
                }
                msg
            }
        }
    }

    /// [`crate::decide::Decision::RenewStandbyLeader`]: Patroni's `update_lock` then
    /// `enforce_follow_remote_member`. The standby leader publishes its replay position as
    /// `/status.optime` and keeps the replication slots of its members.
    pub(super) async fn renew_standby_leader(
        &mut self,
        obs: &Observation,
    ) -> Result<String, AgentError> {
        let me = self.cfg.name.clone();
        if !self.renew_observed_lock(obs).await {
            return Ok("not promoting because failed to update leader lock in DCS".into());
        }
        if let (PgView::Running { wal_position, .. }, Some(c)) = (&obs.pg, obs.cluster.as_ref()) {
            let (slots, retain_slots) = self.sync_slots(c, *wal_position).await;
            let status = Status {
                optime: *wal_position,
                slots,
                retain_slots,
            };
            if let Err(e) = self.dcs.write_status(&status).await {
                warn!("could not write /status: {e}");
            }
            self.publish_leader_documents(c).await;
        }
        Ok(self
            .follow_remote(
                format!("no action. I am ({me}), the standby leader with the lock"),
                "promoted self to a standby leader because i had the session lock",
            )
            .await)
    }

    /// [`crate::decide::Decision::DemoteCluster`]: `standby_cluster` was added while we run the
    /// primary (`demote-cluster`). The key is renewed first; then PostgreSQL stops (fast), the
    /// shutdown checkpoint becomes `/status.optime`, and PostgreSQL starts again in recovery
    /// following the remote primary, as the standby leader under the same key.
    ///
    /// With archiving on (`archive_mode` `on` or `always` and an `archive_command` among the
    /// parameters pgpilot writes), the shutdown checkpoint's WAL file is archived with
    /// `archive_command`, as Patroni does. Unlike Patroni, the key is always kept (Patroni
    /// hands it to a replica that already received the shutdown checkpoint, if any, when it
    /// does not archive).
    pub(super) async fn demote_cluster(&mut self, obs: &Observation) -> Result<String, AgentError> {
        if !self.renew_observed_lock(obs).await {
            self.demote(StopMode::Immediate).await;
            return Ok("demoted self because failed to update leader lock in DCS".into());
        }
        info!("demoting to a standby cluster");
        // Not done here (see the README's "Standby cluster"): say so where it matters.
        warn!(
            "demote-cluster: pgpilot does not run pg_rewind against the remote primary; if this \
             cluster wrote WAL the remote does not have, the standby leader will not be able \
             to follow it and must be reinitialized"
        );
        self.state = State::Stopping;
        if let Err(e) = self.stop_then_disarm(StopMode::Fast).await {
            // Still a primary: keep the key, try again next cycle.
            error!("could not stop PostgreSQL to demote to a standby cluster: {e}");
            self.state = State::Running;
            return Ok("cannot be a real primary in standby cluster".into());
        }
        self.role = Role::Demoted;
        self.state = State::Stopped;
        self.last_pg = None;
        self.rewind.check = false;
        match self.archive_command_in_force() {
            Some(command) => {
                if let Err(e) = self.pg.archive_shutdown_checkpoint(&command).await {
                    error!("Failed to archive WAL file with the shutdown checkpoint: {e}");
                }
            }
            None => info!("Not archiving latest checkpoint WAL file. Archiving is not configured."),
        }
        self.publish_shutdown_checkpoint("demote-cluster").await;
        self.start_following_remote(true);
        Ok("cannot be a real primary in standby cluster".into())
    }

    /// `archive_command` when archiving is on in the parameters pgpilot writes (Patroni reads
    /// the server's settings: one set only in `postgresql.base.conf` is not seen here).
    fn archive_command_in_force(&self) -> Option<String> {
        let params = self.desired(None).parameters;
        let mode = params.get("archive_mode").map(|m| m.to_ascii_lowercase());
        // PostgreSQL's spellings of `on` count too.
        if !matches!(
            mode.as_deref(),
            Some("on" | "always" | "true" | "yes" | "1")
        ) {
            return None;
        }
        params
            .get("archive_command")
            .filter(|c| !c.trim().is_empty())
            .cloned()
    }

    /// [`crate::decide::Decision::StartFollowingRemote`] (and the end of `demote-cluster`):
    /// starts PostgreSQL in recovery replicating from the remote primary, as the standby leader
    /// or, with no leader in the standby cluster, as a replica.
    pub(super) fn start_following_remote(&mut self, standby_leader: bool) {
        let role = if standby_leader {
            Role::StandbyLeader
        } else {
            Role::Replica
        };
        let callback = follow_callback(self.hooks.called(), self.role, role, PgChange::Start);
        self.disable_fencing_unless_leading();
        self.role = role;
        self.state = State::Starting;
        let desired = self.desired_remote();
        let pg = self.pg.clone();
        let timeout = self.pg_ctl_timeout();
        self.spawn_task::<_, PgError>(ActionKind::Start, async move {
            pg.write_config(&desired).await?;
            pg.start(timeout).await
        });
        // Written by the task; remembered so that the next cycle does not rewrite it.
        self.written = Some(self.desired_remote());
        self.when_done(callback, role);
        self.run_again = true;
    }

    /// A member that is not a primary needs no watchdog; a standby leader keeps its guard and
    /// watchdog as its renewals arm them.
    fn disable_fencing_unless_leading(&mut self) {
        if self.last_renewal.is_none() {
            self.disable_fencing();
        }
    }
}
