//! The act phase: executes the [`Decision`](crate::decide::Decision) of the cycle —
//! configuration files, follow/rewind, demotion (replication slots are [`super::slot_duty`]'s)
//! — and the one way this agent stops PostgreSQL ([`stop_postgres`]: `before_stop`, the stop,
//! `on_stop`, and the `primary_stop_timeout` kill).

use std::time::Duration;

use tokio::time::Instant;

use pgpilot_dcs::{Cluster, Dcs};
use pgpilot_postgres::{
    slot_name_for, BootstrapRecovery, DesiredConfig, PgControl, PgError, PgMajor, StandbyConfig,
    StopMode, Upstream,
};
use pgpilot_types::{Peers, RestartRequest, Role, State};
use tracing::{error, info, warn};

use crate::decide::{
    follow_callback, start_after_renewal, ActionKind, DataState, Decision, Observation, PgChange,
    PgView,
};
use crate::guard::RenewalStart;
use crate::hooks::{CallbackAction, Hooks};
use crate::params::{effective_parameters, effective_pg_hba};
use crate::sync::Ssn;

use super::tasks::TaskError;
use super::{keeper, Agent, AgentError};

/// Stops PostgreSQL as Patroni's `Postgresql.stop` does: if a postmaster runs, `before_stop`
/// first (waited for at most `timeout`), then the stop, then `on_stop` for `on_stop`'s role
/// (`None` inside a restart, whose callback is `on_restart`). With `kill_after` (Patroni's
/// `primary_stop_timeout`, synchronous mode only) a stop that takes longer is escalated to an
/// immediate shutdown and then to SIGKILL of the postmaster and its backends.
pub(super) async fn stop_postgres<Pg: PgControl>(
    pg: &Pg,
    hooks: &Hooks,
    mode: StopMode,
    timeout: Duration,
    on_stop: Option<Role>,
    kill_after: Option<Duration>,
) -> Result<(), PgError> {
    let running = pg.postmaster_pid().is_some();
    if running {
        hooks.before_stop(timeout).await;
    }
    match kill_after {
        None => pg.stop(mode, timeout).await?,
        Some(limit) => {
            if let Err(e) = pg.stop(mode, limit).await {
                if pg.postmaster_pid().is_some() {
                    warn!("Timeout during postmaster stop, aborting Postgres. ({e})");
                    let stopped = mode != StopMode::Immediate
                        && pg.stop(StopMode::Immediate, limit).await.is_ok();
                    if !stopped {
                        warn!("Sending SIGKILL to Postmaster and its children");
                        pg.kill_postmaster(timeout).await?;
                    }
                }
            }
        }
    }
    if let (true, Some(role)) = (running, on_stop) {
        hooks.fire(CallbackAction::OnStop, role);
    }
    Ok(())
}

impl<D: Dcs, P: Peers, Pg: PgControl> Agent<D, P, Pg> {
    pub(super) fn pg_ctl_timeout(&self) -> Duration {
        self.cfg.postgresql.pg_ctl_timeout
    }

    /// Patroni's `primary_stop_timeout()`: the limit of a primary's stop, only in synchronous
    /// mode and when set.
    pub(super) fn primary_stop_timeout(&self) -> Option<Duration> {
        let t = self.dynamic.primary_stop_timeout;
        (!t.is_zero() && self.sync_params().active()).then_some(t)
    }

    /// Stops PostgreSQL with the hooks (see [`stop_postgres`]); `on_stop` fires for the role
    /// PostgreSQL has now.
    pub(super) async fn stop_pg(&mut self, mode: StopMode) -> Result<(), PgError> {
        let role = self.role;
        stop_postgres(
            &*self.pg,
            &self.hooks,
            mode,
            self.pg_ctl_timeout(),
            Some(role),
            None,
        )
        .await
    }

    /// An immediate stop that fires no callback (cleaning up after a failed bootstrap, clone or
    /// start); `before_stop` still runs if PostgreSQL does.
    pub(super) async fn stop_without_callback(&self, timeout: Duration) -> Result<(), PgError> {
        stop_postgres(
            &*self.pg,
            &self.hooks,
            StopMode::Immediate,
            timeout,
            None,
            None,
        )
        .await
    }

    /// `pg_ctl reload`, then `on_reload`.
    pub(super) async fn reload_pg(&mut self) {
        match self.pg.reload().await {
            Ok(()) => {
                self.reload_requested = false;
                self.hooks.fire(CallbackAction::OnReload, self.role);
            }
            Err(e) => warn!("reload failed: {e}"),
        }
    }

    /// The configuration files we want for a role. In synchronous mode pgpilot owns
    /// `synchronous_standby_names` (empty on replicas); otherwise the user's value stands.
    pub(super) fn desired(&self, standby: Option<StandbyConfig>) -> DesiredConfig {
        let mut parameters = effective_parameters(&self.cfg, &self.dynamic);
        if standby.is_some() {
            // `postgresql.recovery_conf` (restore_command and the like) while a replica.
            parameters.extend(self.cfg.postgresql.recovery_conf.clone());
            // In a standby cluster every member may fetch WAL with the cluster's
            // `restore_command` (over `recovery_conf`), as Patroni writes it.
            if let Some(sc) = &self.dynamic.standby_cluster {
                for (k, v) in [
                    ("restore_command", &sc.restore_command),
                    ("archive_cleanup_command", &sc.archive_cleanup_command),
                ] {
                    if let Some(v) = v {
                        parameters.insert(k.into(), v.clone());
                    }
                }
            }
        }
        let params = self.sync_params();
        if params.active() {
            parameters.insert(
                "synchronous_standby_names".into(),
                self.sync_duty.ssn.render(params.quorum()),
            );
        }
        DesiredConfig {
            parameters,
            pg_hba: effective_pg_hba(&self.cfg, &self.dynamic),
            standby,
            bootstrap_recovery: BootstrapRecovery::None,
        }
    }

    pub(super) fn standby_for(
        &self,
        cluster: Option<&Cluster>,
        leader: Option<&str>,
    ) -> StandbyConfig {
        // `nostream`: recover from the archive only, as Patroni writes it.
        if self.cfg.tags.nostream {
            return StandbyConfig {
                upstream: None,
                slot_name: None,
            };
        }
        // Patroni's `_get_node_to_follow`: the `replicatefrom` member while its key exists
        // (cascading replication), else the leader.
        let upstream_member = self
            .cfg
            .tags
            .replicatefrom
            .as_deref()
            .filter(|r| *r != self.cfg.name && leader.is_some())
            .and_then(|r| cluster.and_then(|c| c.member(r)))
            .filter(|m| m.data.host_port().is_some())
            .or_else(|| leader.and_then(|l| cluster.and_then(|c| c.member(l))));
        let upstream = upstream_member
            .and_then(|m| m.data.host_port())
            .map(|(host, port)| Upstream { host, port });
        StandbyConfig {
            upstream,
            slot_name: self
                .dynamic
                .use_slots
                .then(|| slot_name_for(&self.cfg.name)),
        }
    }

    /// Writes the configuration files if they differ from what we last wrote. Returns whether
    /// a file changed on disk.
    pub(super) async fn ensure_config(&mut self, desired: DesiredConfig) -> bool {
        if self.written.as_ref() == Some(&desired) {
            return false;
        }
        match self.pg.write_config(&desired).await {
            Ok(changed) => {
                self.written = Some(desired);
                changed
            }
            Err(e) => {
                error!("could not write PostgreSQL configuration: {e}");
                false
            }
        }
    }

    pub(super) async fn act(
        &mut self,
        decision: Decision,
        obs: &Observation,
    ) -> Result<String, AgentError> {
        let cluster = obs.cluster.as_ref();
        match decision {
            Decision::NoAction { msg } => Ok(msg),
            Decision::Fatal { msg } => Err(AgentError::Fatal(msg)),
            Decision::DemoteOffline => Ok(self.demote_offline().await),
            Decision::FailsafeRound { members } => Ok(self.failsafe_round(members, obs).await),
            Decision::UpdateLockDuring { action } => match self.renew_lock(None).await {
                Ok(true) => Ok(format!("updated leader lock during {}", action.describe())),
                res => {
                    if let Err(e) = res {
                        error!("failed to update leader lock: {e}");
                    }
                    self.lease_released();
                    Ok(format!("{} in progress", action.describe()))
                }
            },
            Decision::DemoteImmediate { msg } => {
                self.demote(StopMode::Immediate).await;
                Ok(msg)
            }
            Decision::RaceStandbyBootstrap => match self.dcs.initialize(true, "").await {
                Ok(true) => {
                    self.start_standby_bootstrap();
                    Ok("trying to bootstrap a new standby leader".into())
                }
                Ok(false) => Ok("failed to acquire initialize lock".into()),
                Err(e) => Ok(format!("failed to acquire initialize lock: {e}")),
            },
            Decision::StartFollowingRemote {
                standby_leader,
                msg,
            } => {
                if self.start_not_before.is_some_and(|t| Instant::now() < t) {
                    return Ok(
                        "waiting before starting PostgreSQL again after a failed start".into(),
                    );
                }
                self.start_following_remote(standby_leader);
                Ok(msg)
            }
            Decision::RenewStandbyLeader => self.renew_standby_leader(obs).await,
            Decision::DemoteCluster => self.demote_cluster(obs).await,
            Decision::RaceBootstrap => match self.dcs.initialize(true, "").await {
                Ok(true) => {
                    self.start_bootstrap();
                    Ok("trying to bootstrap a new cluster".into())
                }
                Ok(false) => Ok("failed to acquire initialize lock".into()),
                Err(e) => Ok(format!("failed to acquire initialize lock: {e}")),
            },
            Decision::Clone { .. } | Decision::CloneWithoutLeader { .. }
                if self.clone_not_before.is_some_and(|t| Instant::now() < t) =>
            {
                Ok("waiting before creating the replica again after a failed attempt".into())
            }
            Decision::Clone { from, msg } => {
                let Some((host, port)) = cluster
                    .and_then(|c| c.member(&from))
                    .and_then(|m| m.data.host_port())
                else {
                    return Ok(format!("can not clone from '{from}': no conn_url"));
                };
                self.start_clone(Some(Upstream { host, port }), cluster);
                Ok(msg)
            }
            Decision::CloneWithoutLeader { msg } => {
                self.start_clone(None, cluster);
                Ok(msg)
            }
            Decision::AdoptInitialize { sysid } => {
                // Create-if-absent only when the key is absent (Patroni: `create_new=(initialize
                // is None)`): a bootstrap race value `""` left by an agent that died before
                // publishing its system identifier is overwritten, not re-raced forever.
                let create_new = cluster.is_none_or(|c| c.initialize.is_none());
                if let Err(e) = self.dcs.initialize(create_new, &sysid).await {
                    return Ok(format!("failed to write initialize key: {e}"));
                }
                self.run_again = true;
                Ok(format!(
                    "adopting the existing data directory: initialize key set to {sysid}"
                ))
            }
            Decision::ReleaseLock { msg } => {
                // A data directory deleted under a running primary: the postmaster (found by
                // its working directory) keeps accepting writes until it is stopped, so it
                // stops before the key goes; if it can not be stopped, the key stays.
                if !matches!(obs.data, DataState::Initialized { .. }) {
                    if let Err(e) = self.stop_pg(StopMode::Immediate).await {
                        error!("could not stop PostgreSQL, keeping the leader key: {e}");
                        return Ok(format!("not releasing the leader key: {e}"));
                    }
                }
                // Going on is safe: the key is on our lease, so a key we failed to delete
                // expires within ttl since we stop renewing it. PostgreSQL is not a primary
                // here (stopped, in recovery, or paused): the watchdog has no duty left.
                if let Err(e) = self.dcs.delete_leader().await {
                    error!("could not release the leader key: {e}");
                }
                self.lease_released();
                self.disable_fencing();
                Ok(msg)
            }
            Decision::StartPostgres {
                as_primary,
                follow,
                msg,
                renew_lock_first,
            } => {
                if self.start_not_before.is_some_and(|t| Instant::now() < t) {
                    return Ok(
                        "waiting before starting PostgreSQL again after a failed start".into(),
                    );
                }
                let (as_primary, msg) = if renew_lock_first {
                    let renewed = match self.renew_lock(None).await {
                        Ok(renewed) => renewed,
                        Err(e) => {
                            warn!("could not renew the leader lock before starting: {e}");
                            false
                        }
                    };
                    if !renewed {
                        self.lease_released();
                    }
                    start_after_renewal(as_primary, msg, renewed)
                } else {
                    (as_primary, msg)
                };
                // Patroni's `recover`: only a primary restarting under its key keeps the
                // watchdog; a replica has no use for it until it is promoted.
                if !as_primary {
                    self.disable_fencing();
                }
                let standby = if as_primary {
                    None
                } else {
                    Some(self.standby_for(cluster, follow.as_deref()))
                };
                // Patroni: a primary restarting after a crash fires `on_start`; a replica start
                // goes through `follow()`, where a former primary's start is a role change.
                let callback = if as_primary {
                    CallbackAction::OnStart
                } else {
                    follow_callback(
                        self.hooks.called(),
                        self.role,
                        Role::Replica,
                        PgChange::Start,
                    )
                };
                self.role = if as_primary {
                    Role::Primary
                } else {
                    Role::Replica
                };
                let desired = self.desired(standby);
                self.ensure_config(desired).await;
                self.state = State::Starting;
                let pg = self.pg.clone();
                let timeout = if as_primary {
                    self.dynamic
                        .primary_start_timeout
                        .max(self.pg_ctl_timeout())
                } else {
                    self.pg_ctl_timeout()
                };
                self.spawn_task(ActionKind::Start, async move { pg.start(timeout).await });
                self.when_done(callback, self.role);
                Ok(msg)
            }
            Decision::FailOverAfterCrash => {
                // Patroni's `demote('immediate')` of a stopped primary: nothing to stop, the
                // key goes, and the next cycle starts PostgreSQL as a replica (after a rewind
                // if needed).
                info!("Primary crashed. Failing over.");
                self.disable_fencing();
                self.lease_released();
                self.rewind.check = true;
                self.role = Role::Demoted;
                match self.dcs.delete_leader().await {
                    Ok(true) => info!("Leader key released"),
                    Ok(false) => {}
                    // On our lease: it expires within ttl since we stop renewing it.
                    Err(e) => error!("could not release the leader key: {e}"),
                }
                Ok("stopped PostgreSQL to fail over after a crash".into())
            }
            Decision::Rewind { leader } => {
                if self.rewind.not_before.is_some_and(|t| Instant::now() < t) {
                    return Ok(format!("waiting for the rewind source {leader}"));
                }
                let Some((host, port)) = cluster
                    .and_then(|c| c.member(&leader))
                    .and_then(|m| m.data.host_port())
                else {
                    return Ok(format!("can not rewind from '{leader}': no conn_url"));
                };
                let pg = self.pg.clone();
                let hooks = self.hooks.clone();
                let role = self.role;
                let timeout = self.pg_ctl_timeout();
                self.spawn_task::<_, TaskError>(ActionKind::Rewind, async move {
                    let source = Upstream { host, port };
                    // A source that is not ready (still promoting, unreachable) is not a
                    // failed rewind: try again next cycle.
                    pg.prepare_rewind_source(&source)
                        .await
                        .map_err(TaskError::NotReady)?;
                    // pg_rewind needs a cleanly shut down target; PostgreSQL 13+ pg_rewind runs
                    // crash recovery itself when it is not.
                    stop_postgres(&*pg, &hooks, StopMode::Fast, timeout, Some(role), None).await?;
                    Ok(pg.rewind(&source).await?)
                });
                Ok(format!("running pg_rewind from {leader}"))
            }
            Decision::RemoveDataDirectory { msg } => {
                warn!("{msg}");
                // Another member holds the leader key here; a postmaster that survives is
                // stopped again by the clone that follows, which needs its port.
                if let Err(e) = self.stop_pg(StopMode::Immediate).await {
                    error!("could not stop PostgreSQL before removing the data directory: {e}");
                }
                if let Err(e) = self.pg.remove_data_dir().await {
                    error!("could not remove the data directory: {e}");
                }
                self.sysid = None;
                self.written = None;
                self.rewind.failed = false;
                self.run_again = true;
                Ok(msg)
            }
            Decision::AcquireLeader => self.acquire_leader(obs).await,
            Decision::NotHealthiest {
                reason,
                demote,
                msg,
            } => {
                info!("{reason}");
                if demote {
                    self.demote(StopMode::Immediate).await;
                }
                Ok(msg)
            }
            Decision::RenewLeader => self.renew_leader(obs).await,
            Decision::Follow { leader } => {
                let msg = self.follow(obs, &leader).await;
                self.sync_replica_slots(obs).await;
                msg
            }
        }
    }

    /// Stops PostgreSQL. After a fast (offline) demotion it is restarted read-only with no
    /// upstream at once; after an immediate one it stays down and the next cycle, seeing a
    /// former primary in pg_controldata, decides between a rewind and a start as a replica.
    /// The configuration files are deliberately left as they were until then: writing
    /// `standby.signal` now would hide that this data directory was a primary.
    ///
    /// Returns whether PostgreSQL stopped: if not, it may still be a primary and the watchdog
    /// stays armed.
    pub(super) async fn demote(&mut self, mode: StopMode) -> bool {
        self.lease_released();
        self.failsafe_until = None;
        self.rewind.check = true;
        self.state = State::Stopping;
        let stopped = match self.stop_then_disarm(mode).await {
            Ok(()) => true,
            Err(e) => {
                error!("could not stop PostgreSQL while demoting: {e}");
                false
            }
        };
        self.role = Role::Demoted;
        self.state = State::Stopped;
        self.last_pg = None;
        self.publish(Instant::now());
        if mode == StopMode::Fast {
            let desired = self.desired(Some(StandbyConfig {
                upstream: None,
                slot_name: None,
            }));
            self.ensure_config(desired).await;
            let callback = follow_callback(
                self.hooks.called(),
                Role::Demoted,
                Role::Replica,
                PgChange::Start,
            );
            self.role = Role::Replica;
            self.state = State::Starting;
            let pg = self.pg.clone();
            let timeout = self.pg_ctl_timeout();
            self.spawn_task(ActionKind::Start, async move { pg.start(timeout).await });
            self.when_done(callback, Role::Replica);
        }
        self.run_again = true;
        stopped
    }

    /// After a leader's clean stop (`what`: shutdown, demote-cluster): the shutdown checkpoint
    /// from pg_control becomes `/status.optime`. Without it the replicas compare their member
    /// keys' positions.
    pub(super) async fn publish_shutdown_checkpoint(&mut self, what: &str) {
        match self.pg.controldata().await {
            Ok(cd) => {
                let status = pgpilot_dcs::Status {
                    optime: cd.checkpoint_lsn.0,
                    ..Default::default()
                };
                if let Err(e) = self.dcs.write_status(&status).await {
                    warn!("could not write /status: {e}");
                }
            }
            Err(e) => warn!("pg_controldata after the {what} stop failed: {e}"),
        }
    }

    /// Stops PostgreSQL, which may be a primary, and closes the watchdog once it is down. If it
    /// can not be stopped the watchdog stays armed, without keepalives, and resets the host
    /// before the key can expire. (Patroni closes it a little earlier, at the "safepoint" when
    /// no client backend is left; a shutdown checkpoint that outlasts the watchdog timeout
    /// resets the host here.)
    ///
    /// `on_stop` fires for the role PostgreSQL had; in synchronous mode `primary_stop_timeout`
    /// bounds the stop (see [`stop_postgres`]).
    pub(super) async fn stop_then_disarm(&mut self, mode: StopMode) -> Result<(), PgError> {
        let kill_after = self.primary_stop_timeout();
        stop_postgres(
            &*self.pg,
            &self.hooks,
            mode,
            self.pg_ctl_timeout(),
            Some(self.role),
            kill_after,
        )
        .await?;
        self.disable_fencing();
        Ok(())
    }

    /// Renews the leader key (`update_leader`) and, when that succeeded, notes it as sent now
    /// (see [`Self::renewed`]).
    pub(super) async fn renew_lock(
        &mut self,
        leader: Option<&pgpilot_dcs::Leader>,
    ) -> Result<bool, pgpilot_dcs::DcsError> {
        let start = self.guard.renewal_started();
        let renewed = self.dcs.update_leader(leader).await;
        match renewed {
            Ok(true) => self.renewed(start),
            Ok(false) | Err(_) => self.stats.leader_renewal_failures += 1,
        }
        renewed
    }

    /// Renews the leader key of the cycle's view (`update_lock`); a failure is logged and
    /// forgets the last renewal. Whether it was renewed.
    pub(super) async fn renew_observed_lock(&mut self, obs: &Observation) -> bool {
        let leader = obs.cluster.as_ref().and_then(|c| c.leader.clone());
        match self.renew_lock(leader.as_ref()).await {
            Ok(true) => true,
            res => {
                if let Err(e) = res {
                    error!("failed to update leader lock: {e}");
                }
                self.lease_released();
                false
            }
        }
    }

    /// A successful leader key renewal (or acquisition) whose request was sent at `start`: note
    /// it, keep the watchdog alive, and arm the guard until `start + ttl - margin` (outside
    /// maintenance mode, where nothing is fenced automatically).
    pub(super) fn renewed(&mut self, start: RenewalStart) {
        self.last_renewal = Some(start.at);
        self.keeper.renewed(
            start.at,
            keeper::Terms {
                ttl: self.dynamic.ttl,
                loop_wait: self.dynamic.loop_wait,
                // A `pg_ctl` command is given pg_ctl_timeout + 5 s (pgpilot-postgres).
                window: self
                    .dynamic
                    .ttl
                    .max(self.pg_ctl_timeout() + Duration::from_secs(5)),
                paused: self.dynamic.pause,
            },
        );
        // Patroni: a leader that reached the DCS is no longer in failsafe.
        self.failsafe_until = None;
        self.stats.leader_renewals += 1;
        self.watchdog.keepalive();
        if !self.dynamic.pause {
            self.guard.arm(start, self.dynamic.ttl);
        }
    }

    /// This member may fence no more (not leading, maintenance mode, PostgreSQL stopped): the
    /// watchdog is closed and the guard disarmed.
    pub(super) fn disable_fencing(&mut self) {
        self.keeper.fencing_off(self.dynamic.pause);
        self.watchdog.disable();
        self.guard.disarm();
    }

    /// This member no longer counts on the leader key (lost, released, or left to expire): the
    /// lease keeper stops renewing it too.
    pub(super) fn lease_released(&mut self) {
        self.last_renewal = None;
        self.keeper.released();
    }

    /// After acting: a member that does not hold the key and whose PostgreSQL is stopped or in
    /// recovery has nothing left for the watchdog to fence. A primary without the key keeps it
    /// armed (without keepalives) until it is stopped.
    pub(super) fn disarm_when_not_leading(&mut self, obs: &Observation) {
        let not_primary = matches!(
            obs.pg,
            PgView::Stopped { .. }
                | PgView::Running {
                    in_recovery: true,
                    ..
                }
        );
        let fencing = self.watchdog.is_running() || self.guard.is_armed();
        if fencing && self.last_renewal.is_none() && not_primary {
            self.disable_fencing();
        }
    }

    pub(super) async fn follow(
        &mut self,
        obs: &Observation,
        leader: &str,
    ) -> Result<String, AgentError> {
        let me = self.cfg.name.clone();
        let old_role = self.role;
        self.role = Role::Replica;
        self.slot_retain = None;
        self.sync_duty.ssn = Ssn::empty();
        if let (Some(l), PgView::Running { timeline, .. }) = (
            obs.cluster.as_ref().and_then(Cluster::leader_member),
            &obs.pg,
        ) {
            if l.data.timeline.is_some_and(|tl| tl <= *timeline) {
                self.rewind.check = false;
            }
        }
        let standby = self.standby_for(obs.cluster.as_ref(), Some(leader));
        let desired = self.desired(Some(standby));
        if let FollowConfig::Restarting { major } = self
            .apply_follow_config(desired, old_role, Role::Replica)
            .await
        {
            return Ok(format!(
                "restarting to follow a new leader ({leader}): PostgreSQL {major} reads \
                 primary_conninfo only at start"
            ));
        }
        let whom = if obs.standby_cluster {
            "a standby leader"
        } else {
            "a leader"
        };
        Ok(format!(
            "no action. I am ({me}), a secondary, and following {whom} ({leader})"
        ))
    }

    /// Writes the configuration of a member in recovery (`desired`) and makes PostgreSQL use it:
    /// a reload that fires `on_role_change`/`on_reload` for the move from `old_role` to `role`,
    /// or a restart when PostgreSQL (before 13) reads a new `primary_conninfo` only at start.
    pub(super) async fn apply_follow_config(
        &mut self,
        desired: DesiredConfig,
        old_role: Role,
        role: Role,
    ) -> FollowConfig {
        let upstream_before = self.written.as_ref().map(|w| w.standby.clone());
        let upstream_changed = upstream_before.is_some_and(|s| s != desired.standby);
        if !self.ensure_config(desired).await {
            return FollowConfig::Unchanged;
        }
        // primary_conninfo and primary_slot_name are reloadable since PostgreSQL 13; before,
        // the walreceiver keeps its upstream until PostgreSQL restarts.
        let major = self
            .last_pg
            .as_ref()
            .and_then(|p| PgMajor::from_version_num(p.server_version));
        if let Some(m) = major.filter(|m| upstream_changed && !m.reloads_primary_conninfo()) {
            self.start_restart(&RestartRequest::default(), None);
            return FollowConfig::Restarting {
                major: m.to_string(),
            };
        }
        match self.pg.reload().await {
            Ok(()) => {
                self.reload_requested = false;
                let callback =
                    follow_callback(self.hooks.called(), old_role, role, PgChange::Reload);
                self.hooks.fire(callback, role);
            }
            Err(e) => warn!("reload failed: {e}"),
        }
        FollowConfig::Reloaded
    }
}

/// What [`Agent::apply_follow_config`] did.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum FollowConfig {
    /// The files were already as wanted.
    Unchanged,
    /// The files changed and PostgreSQL reloaded them (or the reload failed, logged).
    Reloaded,
    /// PostgreSQL `major` restarts (a background task) to read the new upstream.
    Restarting { major: String },
}
