//! What the REST API asks of the agent between cycles: restart (now or scheduled),
//! reinitialize, reload. Each command is answered on its reply channel; long ones run as a
//! background task (see `tasks`).

use std::time::Duration;

use pgpilot_config::Config;
use pgpilot_dcs::Dcs;
use pgpilot_postgres::{PgControl, PgError, ReplicaMethod, StopMode, Upstream};
use pgpilot_types::{Command, Peers, RestartRequest, Role, State};
use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot};
use tracing::{error, info, warn};

use crate::decide::{follow_callback, ActionKind, PgChange};
use crate::hooks::CallbackAction;

use super::act::stop_postgres;
use super::Agent;

/// Why an immediate `POST /restart` is refused (the 503 text).
#[derive(Debug, thiserror::Error)]
pub(super) enum RestartRefused {
    #[error("{} already in progress", .0.describe())]
    InProgress(ActionKind),
    #[error("postgres is still starting")]
    Starting,
    #[error("restart conditions are not satisfied")]
    ConditionsNotMet,
}

/// A restart requested for later through `POST /restart` with `schedule`.
pub(super) struct ScheduledRestart {
    pub(super) at: jiff::Timestamp,
    pub(super) request: RestartRequest,
    /// `pg_postmaster_start_time()` when it was scheduled: a restart that happened meanwhile
    /// cancels it.
    pub(super) postmaster_start_time: Option<String>,
}

impl<D: Dcs, P: Peers, Pg: PgControl> Agent<D, P, Pg> {
    /// Carries out a request of the REST API between two cycles. The replies' send errors are
    /// ignored: one means the caller went away (its request timed out), nothing is left to tell.
    pub(super) async fn handle_command(&mut self, command: Command) {
        match command {
            Command::Wakeup => {}
            Command::Reload => self.reload(),
            Command::DeleteRestart { reply } => {
                let answer = if self.scheduled_restart.take().is_some() {
                    (200, "scheduled restart deleted".to_string())
                } else {
                    (404, "no restarts are scheduled".to_string())
                };
                let _ = reply.send(answer);
            }
            Command::Restart { request, reply } => {
                if let Some(at) = request.schedule {
                    if self.scheduled_restart.is_some() {
                        let _ = reply.send((409, "Another restart is already scheduled".into()));
                        return;
                    }
                    self.scheduled_restart = Some(ScheduledRestart {
                        at,
                        request,
                        postmaster_start_time: self
                            .last_pg
                            .as_ref()
                            .map(|p| p.postmaster_start_time.clone()),
                    });
                    let _ = reply.send((202, "Restart scheduled".into()));
                    return;
                }
                if let Err(refused) = self.restart_allowed(&request) {
                    let _ = reply.send((503, refused.to_string()));
                    return;
                }
                self.start_restart(&request, Some(reply));
            }
            Command::Reinitialize {
                force,
                from_leader,
                reply,
            } => {
                let answer = self.reinitialize(force, from_leader).await;
                let _ = reply.send(answer);
            }
        }
    }

    /// Whether an immediate restart can run now.
    pub(super) fn restart_allowed(&self, r: &RestartRequest) -> Result<(), RestartRefused> {
        if let Some(task) = &self.task {
            return Err(RestartRefused::InProgress(task.kind));
        }
        if self.state == State::Starting {
            return Err(RestartRefused::Starting);
        }
        if !self.restart_matches(r) {
            return Err(RestartRefused::ConditionsNotMet);
        }
        Ok(())
    }

    /// Patroni's `restart_matches`: the role, version and pending-restart filters.
    pub(super) fn restart_matches(&self, r: &RestartRequest) -> bool {
        let mut reason = None;
        if r.role
            .as_deref()
            .is_some_and(|role| role != self.role.as_str())
        {
            reason = Some("host role mismatch");
        }
        let version = self.last_pg.as_ref().map_or(0, |p| p.server_version);
        if r.postgres_version.is_some_and(|v| v <= version) {
            reason = Some("postgres version mismatch");
        }
        let pending = self
            .last_pg
            .as_ref()
            .is_some_and(|p| !p.pending_restart.is_empty());
        if r.restart_pending && !pending {
            reason = Some("pending restart flag is not set");
        }
        if let Some(reason) = reason {
            info!("not proceeding with the restart: {reason}");
            return false;
        }
        true
    }

    /// Restarts PostgreSQL in the background, in the role it has now.
    pub(super) fn start_restart(
        &mut self,
        r: &RestartRequest,
        reply: Option<oneshot::Sender<(u16, String)>>,
    ) {
        let pg = self.pg.clone();
        let hooks = self.hooks.clone();
        let stop_timeout = self.pg_ctl_timeout();
        let start_timeout = r.timeout.unwrap_or(if self.role == Role::Primary {
            self.dynamic
                .primary_start_timeout
                .max(self.pg_ctl_timeout())
        } else {
            self.pg_ctl_timeout()
        });
        self.state = State::Restarting;
        // `before_stop` runs, `on_stop` does not: a restart fires `on_restart` alone.
        self.spawn_task::<_, PgError>(ActionKind::Restart, async move {
            stop_postgres(&*pg, &hooks, StopMode::Fast, stop_timeout, None, None).await?;
            pg.start(start_timeout).await
        });
        self.when_done(CallbackAction::OnRestart, self.role);
        if let Some(task) = &mut self.task {
            task.reply = reply;
        }
    }

    /// Fires a scheduled restart that is due (spec/ha-loop.md §5.1 step 12).
    pub(super) async fn evaluate_scheduled_restart(&mut self) {
        let Some(sr) = &self.scheduled_restart else {
            return;
        };
        if self.task.is_some() || self.last_pg.is_none() {
            return;
        }
        let now = jiff::Timestamp::now();
        let delta = (sr.at.as_millisecond() - now.as_millisecond()) as f64 / 1000.0;
        let lw = self.dynamic.loop_wait.as_secs_f64();
        if delta > lw {
            return;
        }
        let Some(sr) = self.scheduled_restart.take() else {
            return;
        };
        if delta < -(lw * 1.5).floor() {
            warn!("Found a stale restart value, cleaning up: {}", sr.at);
            return;
        }
        let started = self
            .last_pg
            .as_ref()
            .map(|p| p.postmaster_start_time.clone());
        if sr.postmaster_start_time.is_some() && started != sr.postmaster_start_time {
            info!("Cancelling scheduled restart: postgres restart has already happened");
            return;
        }
        if delta > 0.0 {
            tokio::time::sleep(Duration::from_secs_f64(delta)).await;
        }
        info!("Manual scheduled restart at {}", sr.at);
        if self.restart_matches(&sr.request) {
            self.start_restart(&sr.request, None);
        }
    }

    /// `POST /reinitialize`: wipe the data directory of this replica and clone it again.
    pub(super) async fn reinitialize(&mut self, force: bool, from_leader: bool) -> (u16, String) {
        let cluster = match self.dcs.cluster().await {
            Ok(c) => c,
            Err(e) => {
                warn!("reinitialize: could not read the cluster from DCS: {e}");
                return (503, "Cluster has no leader, can not reinitialize".into());
            }
        };
        let Some(leader) = cluster.leader_member() else {
            return (503, "Cluster has no leader, can not reinitialize".into());
        };
        if leader.name == self.cfg.name {
            return (503, "I am the leader, can not reinitialize".into());
        }
        if let Some(task) = &self.task {
            if !force {
                return (503, format!("{} already in progress", task.kind.describe()));
            }
            if let Some(task) = self.task.take() {
                task.handle.abort();
            }
        }
        let source = if from_leader {
            leader
        } else {
            cluster
                .members
                .iter()
                .find(|m| {
                    m.name != self.cfg.name
                        && m.data.clonefrom()
                        && m.data.state == "running"
                        && !m.data.conn_url.is_empty()
                })
                .unwrap_or(leader)
        };
        let Some((host, port)) = source.data.host_port() else {
            return (
                503,
                format!("can not clone from '{}': no conn_url", source.name),
            );
        };
        info!(
            "reinitialize: removing the data directory and cloning from '{}'",
            source.name
        );
        let old_role = self.role;
        self.state = State::CreatingReplica;
        self.role = Role::Replica;
        let standby = self.standby_for(Some(&cluster), Some(leader.name.as_str()));
        let desired = self.desired(Some(standby));
        self.written = Some(desired.clone());
        self.sysid = None;
        self.last_pg = None;
        self.rewind.failed = false;
        self.rewind.check = false;
        let pg = self.pg.clone();
        let hooks = self.hooks.clone();
        let args = self.cfg.postgresql.basebackup.clone();
        // `--from-leader` always clones with pg_basebackup, as in Patroni.
        let methods = if from_leader {
            vec![ReplicaMethod::Basebackup]
        } else {
            self.cfg.postgresql.create_replica_methods.clone()
        };
        let timeout = self.pg_ctl_timeout();
        // The stop fires `on_stop` (Patroni's `_do_reinitialize`), so the start after the clone
        // is a plain `on_start` of a replica that stays a replica.
        let callback = follow_callback(true, old_role, Role::Replica, PgChange::Start);
        self.spawn_task::<_, PgError>(ActionKind::Reinitialize, async move {
            stop_postgres(
                &*pg,
                &hooks,
                StopMode::Immediate,
                timeout,
                Some(old_role),
                None,
            )
            .await?;
            pg.remove_data_dir().await?;
            pg.create_replica(&methods, Some(&Upstream { host, port }), &args)
                .await?;
            pg.write_config(&desired).await?;
            pg.start(timeout).await
        });
        self.when_done(callback, Role::Replica);
        (200, "reinitialize started".into())
    }

    /// `POST /reload` / SIGHUP: re-read the local configuration and apply what can change
    /// without a restart of the agent (PostgreSQL parameters, pg_hba, tags, credentials of the
    /// REST client). Identity (`name`, `scope`, `data_dir`) never changes at run time.
    pub(super) fn reload(&mut self) {
        let loaded = match Config::load(self.config_path.as_deref()) {
            Ok(l) => l,
            Err(e) => {
                error!("reload: the configuration is not valid, keeping the current one: {e}");
                return;
            }
        };
        // The new `log` section first, so that what this reload says is logged as it asks.
        if let Some(f) = &self.on_reload {
            f(&loaded.config);
        }
        for w in &loaded.warnings {
            warn!("{w}");
        }
        let mut cfg = loaded.config;
        if cfg.name != self.cfg.name
            || cfg.scope != self.cfg.scope
            || cfg.postgresql.data_dir != self.cfg.postgresql.data_dir
        {
            warn!("reload: name, scope and postgresql.data_dir can not change at run time; keeping them");
            cfg.name = self.cfg.name.clone();
            cfg.scope = self.cfg.scope.clone();
            cfg.postgresql.data_dir = self.cfg.postgresql.data_dir.clone();
        }
        self.cfg = cfg;
        // Rewrite the configuration files and reload PostgreSQL on the next cycle, even when
        // nothing changed (Patroni reloads on every SIGHUP / `POST /reload`).
        self.written = None;
        self.reload_requested = true;
        info!("Reloading the configuration");
    }

    /// `scheduled_restart` as Patroni publishes it: `schedule` plus the filters.
    pub(super) fn scheduled_restart_json(&self) -> Option<Map<String, Value>> {
        let sr = self.scheduled_restart.as_ref()?;
        let mut o = sr.request.published.clone();
        o.insert(
            "schedule".into(),
            Value::from(
                sr.at
                    .to_zoned_datetime(jiff::tz::TimeZone::UTC)
                    .strftime("%Y-%m-%dT%H:%M:%S%:z")
                    .to_string(),
            ),
        );
        Some(o)
    }
}

/// The next command, or never when there is no channel (or it closed).
pub(super) async fn recv(commands: &mut Option<mpsc::Receiver<Command>>) -> Option<Command> {
    match commands {
        Some(rx) => match rx.recv().await {
            Some(c) => Some(c),
            None => {
                *commands = None;
                std::future::pending().await
            }
        },
        None => std::future::pending().await,
    }
}
