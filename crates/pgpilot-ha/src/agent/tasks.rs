//! Background actions (bootstrap, clone, rewind, start, restart): started by `act`, reaped at
//! the start of the next cycles. While one runs, the cycle only renews the leader key.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use pgpilot_dcs::{Cluster, Dcs};
use pgpilot_postgres::{BootstrapRecovery, PgControl, PgError, StopMode, Upstream};
use pgpilot_types::{Peers, Role, State};
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::{JoinError, JoinHandle};
use tracing::{error, info, warn};

use crate::decide::{follow_callback, ActionKind, PgChange};
use crate::hooks::CallbackAction;

use super::act::stop_postgres;
use super::{Agent, AgentError};

/// How a background action failed: the typed PostgreSQL error of the step that failed.
#[derive(Debug, thiserror::Error)]
pub(super) enum TaskError {
    /// A precondition outside us is not met yet (the rewind source still promoting): try again
    /// next cycle; this is not a failed action.
    #[error("rewind source not ready: {0}")]
    NotReady(#[source] PgError),
    #[error(transparent)]
    Failed(#[from] PgError),
    /// The task panicked or was aborted.
    #[error("task panicked or was cancelled: {0}")]
    Aborted(#[from] JoinError),
}

/// A background action and what to do with its result.
pub(super) struct Task {
    pub(super) kind: ActionKind,
    pub(super) handle: JoinHandle<Result<(), TaskError>>,
    /// A REST caller waiting for the outcome (`POST /restart`).
    pub(super) reply: Option<oneshot::Sender<(u16, String)>>,
    /// Set by a custom bootstrap while its restored cluster recovers: the cycle then reports
    /// [`ActionKind::BootstrapRecovery`].
    pub(super) recovering: Arc<AtomicBool>,
    /// Set by the task itself when its work is over, just before it wakes the loop: the cycle
    /// that wakes must reap it, and the `JoinHandle` may not count as finished yet then.
    pub(super) finished: Arc<AtomicBool>,
    /// The callback fired when the action succeeds, and the role it is given (`on_start` after
    /// a start, `on_restart` after a restart, `on_role_change` when the role changed).
    pub(super) callback: Option<(CallbackAction, Role)>,
    /// A bootstrap that creates a standby cluster's standby leader from the remote primary:
    /// it is published with role `standby_leader`.
    pub(super) standby_leader: bool,
}

impl Task {
    /// The action as the cycle observes it.
    pub(super) fn observed_kind(&self) -> ActionKind {
        if self.kind == ActionKind::Bootstrap && self.recovering.load(Ordering::Relaxed) {
            ActionKind::BootstrapRecovery
        } else {
            self.kind
        }
    }
}

impl<D: Dcs, P: Peers, Pg: PgControl> Agent<D, P, Pg> {
    /// Handles the end of a background task. Returns a message when the cycle should end here.
    pub(super) async fn reap_task(
        &mut self,
        cluster: Option<&Cluster>,
    ) -> Result<Option<String>, AgentError> {
        let Some(task) = &self.task else {
            return Ok(None);
        };
        if !task.finished.load(Ordering::Acquire) && !task.handle.is_finished() {
            return Ok(None);
        }
        let Some(mut task) = self.task.take() else {
            return Ok(None);
        };
        let result = match (&mut task.handle).await {
            Ok(r) => r,
            Err(e) => Err(TaskError::Aborted(e)),
        };
        if let (Ok(()), Some((action, role))) = (&result, task.callback) {
            self.hooks.fire(action, role);
        }
        if let Some(reply) = task.reply.take() {
            // The caller may read /patroni right after our answer: show the restarted server.
            if result.is_ok() {
                if let Ok(st) = self.pg.query_state().await {
                    self.state = State::Running;
                    self.last_pg = Some(st);
                    self.publish(Instant::now());
                }
            }
            let answer = match &result {
                Ok(()) => (200, "restarted successfully".to_string()),
                Err(_) => (503, "restart failed".to_string()),
            };
            // The REST caller may have gone away (timed out): nothing is left to tell.
            let _ = reply.send(answer);
        }
        match (task.kind, result) {
            (ActionKind::Bootstrap | ActionKind::BootstrapRecovery, Ok(())) => {
                return self.finish_bootstrap(task.standby_leader).await.map(Some);
            }
            (ActionKind::Bootstrap | ActionKind::BootstrapRecovery, Err(e)) => {
                error!("bootstrap failed: {e}");
                return Err(self.cancel_initialization().await);
            }
            (
                kind @ (ActionKind::Clone
                | ActionKind::CloneWithoutLeader
                | ActionKind::Reinitialize),
                Err(e),
            ) => {
                if kind == ActionKind::CloneWithoutLeader {
                    error!("failed to bootstrap (without leader): {e}");
                } else {
                    error!("failed to bootstrap from leader: {e}");
                }
                self.state = State::CreatingReplica;
                // A replica that never joined: the next clone stops a survivor again.
                if let Err(e) = self.stop_without_callback(Duration::from_secs(30)).await {
                    error!("could not stop PostgreSQL after the failed clone: {e}");
                }
                if let Err(e) = self.pg.remove_data_dir().await {
                    error!("could not clean the data directory after a failed clone: {e}");
                }
                self.sysid = None;
                self.written = None;
                // The next attempt waits a cycle, as Patroni's does: a clone that fails at
                // once (no space, no permission, no route) is not retried in a busy loop.
                self.clone_not_before = Some(Instant::now() + self.dynamic.loop_wait);
            }
            (ActionKind::Rewind, Err(TaskError::NotReady(why))) => {
                warn!("not running pg_rewind yet: {why}");
                self.rewind.not_before = Some(Instant::now() + self.dynamic.loop_wait);
            }
            (ActionKind::Rewind, Err(e)) => {
                error!("pg_rewind failed: {e}");
                self.rewind.failed = true;
            }
            (ActionKind::Rewind, Ok(())) => {
                info!("pg_rewind finished");
                self.rewind.failed = false;
                self.rewind.done = true;
                self.rewind.check = false;
                self.written = None;
            }
            (kind, Err(e)) => {
                error!("{} failed: {e}", kind.describe());
                if matches!(kind, ActionKind::Start | ActionKind::Restart) {
                    self.state = State::StartFailed;
                    self.start_not_before = Some(Instant::now() + self.dynamic.loop_wait);
                    let holds =
                        cluster.and_then(Cluster::leader_name) == Some(self.cfg.name.as_str());
                    if holds {
                        // A lock holder whose PostgreSQL does not come back lets another member
                        // take over instead of holding the cluster hostage (spec/ha-loop.md §5.1.8).
                        // If this stop fails too the key is still released: a primary that
                        // comes up later without the key is demoted by the next cycle.
                        if let Err(e) = self.stop_without_callback(self.pg_ctl_timeout()).await {
                            error!("could not stop PostgreSQL after its failed start: {e}");
                        }
                        // Patroni's `post_recover`: a primary (or standby leader) that gives
                        // its key up this way says so with `on_role_change demoted`.
                        if matches!(self.role, Role::Primary | Role::StandbyLeader) {
                            self.hooks.fire(CallbackAction::OnRoleChange, Role::Demoted);
                        }
                        self.role = Role::Demoted;
                        self.lease_released();
                        self.disable_fencing();
                        if let Err(e) = self.dcs.delete_leader().await {
                            error!("could not release the leader key: {e}");
                        }
                        return Ok(Some(
                            "removed leader key after trying and failing to start postgres".into(),
                        ));
                    }
                }
            }
            (_, Ok(())) => {}
        }
        Ok(None)
    }

    /// The bootstrap task created a running primary, or in a standby cluster a standby leader
    /// replicating from the remote primary: publish it (spec/ha-loop.md §5.1.7).
    pub(super) async fn finish_bootstrap(
        &mut self,
        standby_leader: bool,
    ) -> Result<String, AgentError> {
        self.sysid = None;
        let sysid = match self.pg.controldata().await {
            Ok(cd) => cd.system_identifier,
            Err(e) => {
                return Err(AgentError::Fatal(format!(
                    "Failed to bootstrap cluster: {e}"
                )))
            }
        };
        self.sysid = Some(sysid.clone());
        // The new primary is published only with its watchdog armed.
        if !self.watchdog.activate() {
            error!("Cancelling bootstrap because watchdog activation failed");
            return Err(self.cancel_initialization().await);
        }
        if let Some(why) = self.guard.failure() {
            error!("Cancelling bootstrap because the guard process is not running: {why}");
            return Err(self.cancel_initialization().await);
        }
        let start = self.guard.renewal_started();
        let config = Value::Object(self.cfg.bootstrap.dcs.clone()).to_string();
        let res = async {
            self.dcs.initialize(false, &sysid).await?;
            self.dcs.set_config(&config, None).await?;
            self.dcs.take_leader().await
        }
        .await;
        if let Err(e) = res {
            return Err(AgentError::Fatal(format!(
                "Failed to bootstrap cluster: could not publish it in DCS: {e}"
            )));
        }
        self.renewed(start);
        self.role = if standby_leader {
            Role::StandbyLeader
        } else {
            Role::Primary
        };
        self.state = State::Running;
        self.hooks.fire(CallbackAction::OnStart, self.role);
        self.save_dynamic_cache();
        self.run_again = true;
        Ok("initialized a new cluster".into())
    }

    /// A bootstrap that can not be finished (spec/ha-loop.md §5.1.7 `cancel_initialization`):
    /// the initialize key goes, PostgreSQL stops, the data directory is moved aside for
    /// inspection, and the agent exits with the returned error.
    async fn cancel_initialization(&mut self) -> AgentError {
        info!("removing initialize key after failed attempt to bootstrap the cluster");
        if let Err(e) = self.dcs.cancel_initialization().await {
            error!("could not remove the initialize key: {e}");
        }
        // No callback: Patroni fires none while bootstrapping.
        if let Err(e) = self.stop_without_callback(Duration::from_secs(30)).await {
            error!("could not stop PostgreSQL after the failed bootstrap: {e}");
        }
        self.pg.move_aside_failed();
        AgentError::Fatal("Failed to bootstrap cluster".into())
    }

    pub(super) fn spawn_task<F, E>(&mut self, kind: ActionKind, fut: F)
    where
        F: std::future::Future<Output = Result<(), E>> + Send + 'static,
        E: Into<TaskError> + Send + 'static,
    {
        let done = self.task_done.clone();
        let finished = Arc::new(AtomicBool::new(false));
        let finished_in_task = finished.clone();
        let handle = tokio::spawn(async move {
            let r = fut.await.map_err(Into::into);
            finished_in_task.store(true, Ordering::Release);
            done.notify_one();
            r
        });
        self.task = Some(Task {
            kind,
            handle,
            reply: None,
            recovering: Arc::new(AtomicBool::new(false)),
            finished,
            callback: None,
            standby_leader: false,
        });
    }

    /// The callback the running task fires when it succeeds.
    pub(super) fn when_done(&mut self, action: CallbackAction, role: Role) {
        if let Some(task) = &mut self.task {
            task.callback = Some((action, role));
        }
    }

    pub(super) fn start_bootstrap(&mut self) {
        self.role = Role::Uninitialized;
        let pg = self.pg.clone();
        let post = self.cfg.bootstrap.post_bootstrap.clone();
        let desired = self.desired(None);
        let timeout = self.pg_ctl_timeout();
        self.written = Some(desired.clone());
        let Some(custom) = self.cfg.bootstrap.method.clone() else {
            self.state = State::InitializingNewCluster;
            let initdb = self.cfg.bootstrap.initdb.clone();
            self.spawn_task::<_, PgError>(ActionKind::Bootstrap, async move {
                pg.initdb(&initdb).await?;
                pg.write_config(&desired).await?;
                pg.start(timeout).await?;
                pg.create_roles().await?;
                if let Some(cmd) = post {
                    pg.run_post_bootstrap(&cmd).await?;
                }
                Ok(())
            });
            return;
        };
        // A custom method never falls back to initdb: its failure fails the bootstrap.
        self.state = State::RunningCustomBootstrap;
        let recovering = Arc::new(AtomicBool::new(false));
        let flag = recovering.clone();
        self.spawn_task::<_, PgError>(ActionKind::Bootstrap, async move {
            pg.custom_bootstrap(&custom).await?;
            // First start: the restore's recovery settings, and trust for our two roles
            // whose passwords the restored cluster does not know yet.
            let mut first = desired.clone();
            first.bootstrap_recovery = custom.recovery.clone();
            first.pg_hba = pgpilot_postgres::custom_bootstrap_hba(pg.settings()).await;
            pg.write_config(&first).await?;
            flag.store(true, Ordering::Relaxed);
            pg.start_no_wait().await?;
            pg.wait_for_end_of_recovery().await?;
            flag.store(false, Ordering::Relaxed);
            pg.create_roles().await?;
            if let Some(cmd) = post {
                pg.run_post_bootstrap(&cmd).await?;
            }
            // Our own configuration from now on; hot_standby (postmaster context) needs a
            // restart if the recovery turned it off, the rest a reload.
            pg.write_config(&desired).await?;
            if first.bootstrap_recovery == BootstrapRecovery::None {
                pg.reload().await
            } else {
                pg.stop(StopMode::Fast, timeout).await?;
                pg.start(timeout).await
            }
        });
        if let Some(task) = &mut self.task {
            task.recovering = recovering;
        }
    }

    /// Creates this member's data directory with `create_replica_methods` (from `from`, or
    /// without a leader), then starts it as a replica.
    pub(super) fn start_clone(&mut self, from: Option<Upstream>, cluster: Option<&Cluster>) {
        let callback = follow_callback(
            self.hooks.called(),
            self.role,
            Role::Replica,
            PgChange::Start,
        );
        self.state = State::CreatingReplica;
        self.role = Role::Replica;
        let leader = cluster.and_then(Cluster::leader_name).map(str::to_string);
        let standby = self.standby_for(cluster, leader.as_deref());
        let desired = self.desired(Some(standby));
        self.written = Some(desired.clone());
        let pg = self.pg.clone();
        let hooks = self.hooks.clone();
        let args = self.cfg.postgresql.basebackup.clone();
        let methods = self.cfg.postgresql.create_replica_methods.clone();
        let timeout = self.pg_ctl_timeout();
        self.sysid = None;
        let kind = if from.is_some() {
            ActionKind::Clone
        } else {
            ActionKind::CloneWithoutLeader
        };
        self.spawn_task::<_, PgError>(kind, async move {
            // A postmaster whose data directory was deleted under it still holds the port.
            stop_postgres(&*pg, &hooks, StopMode::Immediate, timeout, None, None).await?;
            pg.create_replica(&methods, from.as_ref(), &args).await?;
            pg.write_config(&desired).await?;
            pg.start(timeout).await
        });
        self.when_done(callback, Role::Replica);
    }
}
