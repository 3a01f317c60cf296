//! The [`Agent`]: runs one HA cycle after another.
//!
//! ```text
//! observe (DCS snapshot from the watch cache, local PostgreSQL, peers only during a race)
//!   -> decide (pure)  -> act (pg_ctl, DCS writes)  -> publish (member key, /status, REST snapshot)
//! ```
//!
//! Long actions (bootstrap, clone, rewind, start) run as a background task; while one runs the
//! cycle keeps renewing the leader key and reports "<action> in progress". A cycle is woken
//! early by a DCS event (leader key changed, `/config` changed), by the end of a background
//! task, or by shutdown.
//!
//! Shutdown order (SIGTERM), in one place: stop the background task; unless paused, stop
//! PostgreSQL (fast), and if we hold the leader key publish the shutdown checkpoint as
//! `/status.optime` and delete the key (value-compare) so a replica takes over without waiting
//! for the TTL; touch our member key one last time. The REST API is stopped by the caller after
//! `run` returns.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use pgpilot_config::{Config, DynamicConfig};
use pgpilot_dcs::{Cluster, Dcs, HistoryLine, MemberData, Status, PATRONI_COMPAT_VERSION};
use pgpilot_postgres::{
    slot_name_for, DataDirState, DesiredConfig, PgState, Postgres, StandbyConfig, StopMode,
    Upstream,
};
use pgpilot_types::{Command, NodeSnapshot, PeerStatus, Peers, PgInfo, RestartRequest};
use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot, watch, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::decide::{
    decide, is_healthiest, manual_failover_from_leader, valid_sysid, ActionKind, DataState,
    Decision, ManualFailover, Observation, PgView,
};
use crate::params::{effective_parameters, effective_pg_hba};
use crate::sync::{self, Ssn, Standby, SyncKey, SyncParams, SyncStep, SyncView};

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The agent must stop and exit non-zero (system ID mismatch, failed bootstrap, ...).
    #[error("{0}")]
    Fatal(String),
}

/// How `run` ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Exit {
    /// Shutdown was requested and completed.
    Shutdown,
}

/// How a background action failed.
#[derive(Debug)]
enum TaskError {
    /// A precondition outside us is not met yet (the rewind source still promoting): try again
    /// next cycle; this is not a failed action.
    NotReady(String),
    Failed(String),
}

impl From<String> for TaskError {
    fn from(e: String) -> TaskError {
        TaskError::Failed(e)
    }
}

impl std::fmt::Display for TaskError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TaskError::NotReady(e) | TaskError::Failed(e) => f.write_str(e),
        }
    }
}

/// A background action and what to do with its result.
struct Task {
    kind: ActionKind,
    handle: JoinHandle<Result<(), TaskError>>,
    /// A REST caller waiting for the outcome (`POST /restart`).
    reply: Option<oneshot::Sender<(u16, String)>>,
}

/// A restart requested for later through `POST /restart` with `schedule`.
struct ScheduledRestart {
    at: jiff::Timestamp,
    request: RestartRequest,
    /// `pg_postmaster_start_time()` when it was scheduled: a restart that happened meanwhile
    /// cancels it.
    postmaster_start_time: Option<String>,
}

/// The agent of one member.
pub struct Agent<D: Dcs, P: Peers> {
    cfg: Config,
    dcs: Arc<D>,
    pg: Arc<Postgres>,
    /// Other members' REST APIs (the leader race, the duplicate-name check).
    peers: Arc<P>,
    /// The dynamic configuration in force (from `/config`, else the cache file, else
    /// `bootstrap.dcs`).
    dynamic: DynamicConfig,
    snapshot: watch::Sender<Arc<NodeSnapshot>>,
    /// The running background action, if any.
    task: Option<Task>,
    /// Signalled when a background action ends, to run the next cycle at once.
    task_done: Arc<Notify>,
    /// Time of the last successful leader key renewal (None: we do not hold it).
    last_renewal: Option<Instant>,
    /// Last DCS view read successfully, and when.
    last_cluster: Option<Arc<Cluster>>,
    last_dcs_ok: Option<Instant>,
    dcs_last_seen: u64,
    /// State string published in the member key and `/patroni`.
    state: String,
    /// Role published in the member key.
    role: String,
    /// Last monitoring query result.
    last_pg: Option<PgState>,
    sysid: Option<String>,
    /// pg_rewind against the current leader failed; do not loop on it.
    rewind_failed: bool,
    /// pg_rewind succeeded (possibly with nothing to do) since PostgreSQL last ran: the data
    /// directory no longer counts as a diverged former primary.
    rewind_done: bool,
    /// Set by our own demotion, cleared when a rewind ran or a leader on our timeline is
    /// followed: see `Observation::rewind_check`.
    rewind_check: bool,
    /// The desired configuration last written to disk (skip rewriting an unchanged one).
    written: Option<DesiredConfig>,
    /// Physical slots last synchronised on the primary.
    slots: Option<Vec<String>>,
    /// Timeline whose history we last published to `/history`.
    history_timeline: u32,
    /// Set when the cycle must run again immediately (e.g. after winning a race).
    run_again: bool,
    /// Warnings of the dynamic configuration already logged (log each once).
    logged_warnings: Vec<String>,
    /// Requests from the REST API (restart, reinitialize, reload, wake-ups).
    commands: Option<mpsc::Receiver<Command>>,
    /// The local configuration file, re-read on reload (`None`: environment only).
    config_path: Option<PathBuf>,
    scheduled_restart: Option<ScheduledRestart>,
    /// `synchronous_standby_names` as we manage it (empty unless primary in synchronous mode).
    ssn: Ssn,
    /// When `ssn` was last changed, and the primary's flush LSN taken once the change is
    /// surely in force (see `process_sync`).
    ssn_set_at: Option<Instant>,
    ssn_lsn: Option<u64>,
    /// A rewind source that was not ready is asked again only after this (one loop_wait).
    rewind_not_before: Option<Instant>,
    /// Since when our replica has been running without streaming from a running leader.
    not_streaming_since: Option<Instant>,
    /// `ssn` reflects what this process set (false after start until `/sync` was read).
    ssn_known: bool,
    /// Asking the primary to release us from synchronous duty before we stop: the member key
    /// then advertises `nosync: true, sync_priority: 0`.
    leaving_sync: bool,
    /// The strict-mode warning was logged for the current placeholder period.
    warned_strict: bool,
}

impl<D: Dcs, P: Peers> Agent<D, P> {
    pub fn new(
        cfg: Config,
        dcs: Arc<D>,
        pg: Arc<Postgres>,
        peers: Arc<P>,
        snapshot: watch::Sender<Arc<NodeSnapshot>>,
    ) -> Agent<D, P> {
        let dynamic = load_dynamic_cache(&cfg)
            .unwrap_or_else(|| DynamicConfig::from_document(&cfg.bootstrap.dcs).0);
        Agent {
            cfg,
            dcs,
            pg,
            peers,
            dynamic,
            snapshot,
            task: None,
            task_done: Arc::new(Notify::new()),
            last_renewal: None,
            last_cluster: None,
            last_dcs_ok: None,
            dcs_last_seen: 0,
            state: "stopped".into(),
            role: "uninitialized".into(),
            last_pg: None,
            sysid: None,
            rewind_failed: false,
            rewind_done: false,
            rewind_check: false,
            written: None,
            slots: None,
            history_timeline: 0,
            run_again: false,
            logged_warnings: Vec::new(),
            commands: None,
            config_path: None,
            scheduled_restart: None,
            ssn: Ssn::empty(),
            ssn_set_at: None,
            ssn_lsn: None,
            ssn_known: false,
            not_streaming_since: None,
            rewind_not_before: None,
            leaving_sync: false,
            warned_strict: false,
        }
    }

    /// Connects the REST API's command channel and names the file a reload re-reads.
    pub fn with_commands(
        mut self,
        commands: mpsc::Receiver<Command>,
        config_path: Option<PathBuf>,
    ) -> Agent<D, P> {
        self.commands = Some(commands);
        self.config_path = config_path;
        self
    }

    pub fn dynamic(&self) -> &DynamicConfig {
        &self.dynamic
    }

    /// Refuses to start when another live agent already uses our name (spec/ha-loop.md §5.0.3):
    /// its member key exists and its REST API answers.
    pub async fn check_unique_name(&self) -> Result<(), AgentError> {
        let cluster = loop {
            match self.dcs.cluster().await {
                Ok(c) => break c,
                Err(e) => {
                    warn!("Can not get cluster from dcs: {e}");
                    tokio::time::sleep(Duration::from_secs(5)).await;
                }
            }
        };
        if let Some(m) = cluster.member(&self.cfg.name) {
            if !m.data.api_url.is_empty()
                && self
                    .peers
                    .answers(&m.data.api_url, Duration::from_secs(3))
                    .await
            {
                return Err(AgentError::Fatal(format!(
                    "Can't start; there is already a node named '{}' running",
                    self.cfg.name
                )));
            }
        }
        Ok(())
    }

    /// Runs cycles until `shutdown` is cancelled, then shuts down in order.
    pub async fn run(&mut self, shutdown: CancellationToken) -> Result<Exit, AgentError> {
        loop {
            let started = Instant::now();
            let msg = match self.run_cycle().await {
                Ok(msg) => msg,
                Err(AgentError::Fatal(msg)) => {
                    error!("{msg}");
                    self.publish(started);
                    return Err(AgentError::Fatal(msg));
                }
            };
            if self.dynamic.pause {
                info!("PAUSE: {msg}");
            } else {
                info!("{msg}");
            }
            self.publish(started);
            let loop_wait = self.dynamic.loop_wait;
            let elapsed = started.elapsed();
            if elapsed > loop_wait + Duration::from_secs(1) {
                warn!("Loop time exceeded, rescheduling immediately.");
            }
            if std::mem::take(&mut self.run_again) {
                continue;
            }
            let remaining = loop_wait.saturating_sub(elapsed);
            let leader_is_me = self.last_renewal.is_some();
            let command = tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.dcs.watch(remaining, leader_is_me) => None,
                _ = self.task_done.notified() => None,
                c = recv(&mut self.commands) => c,
            };
            if shutdown.is_cancelled() {
                break;
            }
            if let Some(c) = command {
                self.handle_command(c).await;
            }
        }
        self.shutdown().await;
        Ok(Exit::Shutdown)
    }

    /// Carries out a request of the REST API between two cycles.
    async fn handle_command(&mut self, command: Command) {
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
                if let Err(msg) = self.restart_allowed(&request) {
                    let _ = reply.send((503, msg));
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

    /// Why an immediate restart can not run now (`Err` = the 503 text).
    fn restart_allowed(&self, r: &RestartRequest) -> Result<(), String> {
        if let Some(task) = &self.task {
            return Err(format!("{} already in progress", task.kind.describe()));
        }
        if self.state == "starting" {
            return Err("postgres is still starting".into());
        }
        if !self.restart_matches(r) {
            return Err("restart conditions are not satisfied".into());
        }
        Ok(())
    }

    /// Patroni's `restart_matches`: the role, version and pending-restart filters.
    fn restart_matches(&self, r: &RestartRequest) -> bool {
        let mut reason = None;
        if r.role.as_deref().is_some_and(|role| role != self.role) {
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
    fn start_restart(&mut self, r: &RestartRequest, reply: Option<oneshot::Sender<(u16, String)>>) {
        let pg = self.pg.clone();
        let stop_timeout = self.pg_ctl_timeout();
        let start_timeout = r.timeout.unwrap_or(if self.role == "primary" {
            self.dynamic
                .primary_start_timeout
                .max(self.pg_ctl_timeout())
        } else {
            self.pg_ctl_timeout()
        });
        self.state = "restarting".into();
        self.spawn_task(ActionKind::Restart, async move {
            pg.stop(StopMode::Fast, stop_timeout)
                .await
                .map_err(|e| e.to_string())?;
            pg.start(start_timeout).await.map_err(|e| e.to_string())
        });
        if let Some(task) = &mut self.task {
            task.reply = reply;
        }
    }

    /// Fires a scheduled restart that is due (spec/ha-loop.md §5.1 step 12).
    async fn evaluate_scheduled_restart(&mut self) {
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
    async fn reinitialize(&mut self, force: bool, from_leader: bool) -> (u16, String) {
        let cluster = match self.dcs.cluster().await {
            Ok(c) => c,
            Err(_) => return (503, "Cluster has no leader, can not reinitialize".into()),
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
        self.state = "creating replica".into();
        self.role = "replica".into();
        let standby = self.standby_for(Some(&cluster), Some(leader.name.as_str()));
        let desired = self.desired(Some(standby));
        self.written = Some(desired.clone());
        self.sysid = None;
        self.last_pg = None;
        self.rewind_failed = false;
        self.rewind_check = false;
        let pg = self.pg.clone();
        let args = self.cfg.postgresql.basebackup.clone();
        let timeout = self.pg_ctl_timeout();
        self.spawn_task(ActionKind::Reinitialize, async move {
            pg.stop(StopMode::Immediate, timeout)
                .await
                .map_err(|e| e.to_string())?;
            pg.remove_data_dir().await.map_err(|e| e.to_string())?;
            pg.basebackup(&Upstream { host, port }, &args)
                .await
                .map_err(|e| e.to_string())?;
            pg.write_config(&desired).await.map_err(|e| e.to_string())?;
            pg.start(timeout).await.map_err(|e| e.to_string())
        });
        (200, "reinitialize started".into())
    }

    /// `POST /reload` / SIGHUP: re-read the local configuration and apply what can change
    /// without a restart of the agent (PostgreSQL parameters, pg_hba, tags, credentials of the
    /// REST client). Identity (`name`, `scope`, `data_dir`) never changes at run time.
    fn reload(&mut self) {
        let loaded = match Config::load(self.config_path.as_deref()) {
            Ok(l) => l,
            Err(e) => {
                error!("reload: the configuration is not valid, keeping the current one: {e}");
                return;
            }
        };
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
        // Rewrite the configuration files (and reload PostgreSQL) on the next cycle.
        self.written = None;
        info!("Reloading the configuration");
    }

    /// One HA cycle: observe, decide, act. Returns the sentence to log.
    async fn run_cycle(&mut self) -> Result<String, AgentError> {
        // Observe the DCS.
        let cluster = match self.dcs.cluster().await {
            Ok(c) => {
                self.last_dcs_ok = Some(Instant::now());
                self.dcs_last_seen = epoch_secs();
                Some(c)
            }
            Err(e) => {
                error!("Error communicating with DCS: {e}");
                None
            }
        };
        if let Some(c) = &cluster {
            self.apply_dynamic(c);
            self.recover_ssn(c);
            self.last_cluster = Some(Arc::new(c.clone()));
            if c.leader_name() != Some(self.cfg.name.as_str()) {
                self.last_renewal = None;
            }
        }

        // Finish a background task that ended.
        if let Some(msg) = self.reap_task(cluster.as_ref()).await? {
            return Ok(msg);
        }

        // Observe PostgreSQL.
        let data = match self.pg.data_dir_state() {
            DataDirState::Empty => DataState::Empty,
            DataDirState::Invalid(r) => DataState::Invalid(r),
            DataDirState::Initialized => match self.system_identifier().await {
                Some(sysid) => DataState::Initialized { sysid },
                None => DataState::Invalid("pg_controldata failed".into()),
            },
        };
        let pg = self.observe_pg(&data).await;
        self.watch_replication(cluster.as_ref(), &pg);
        let peers = match (&cluster, &pg) {
            (
                Some(c),
                PgView::Running {
                    in_recovery: true, ..
                },
            ) if c.is_unlocked() && self.task.is_none() => self.fetch_peers(c).await,
            // The leader asked to hand over checks its candidates.
            (
                Some(c),
                PgView::Running {
                    in_recovery: false, ..
                },
            ) if c.failover.is_some()
                && c.leader_name() == Some(self.cfg.name.as_str())
                && self.task.is_none() =>
            {
                self.fetch_peers(c).await
            }
            _ => Vec::new(),
        };

        let obs = Observation {
            me: self.cfg.name.clone(),
            cluster: cluster.clone(),
            data,
            pg,
            action: self.task.as_ref().map(|t| t.kind),
            paused: cluster.as_ref().is_some_and(Cluster::is_paused),
            can_failover: self.cfg.tags.can_failover(),
            failover_priority: self.cfg.tags.failover_priority,
            can_bootstrap: true,
            maximum_lag_on_failover: self.dynamic.maximum_lag_on_failover,
            check_timeline: self.dynamic.check_timeline,
            use_pg_rewind: self
                .cfg
                .postgresql
                .use_pg_rewind
                .unwrap_or(self.dynamic.use_pg_rewind),
            remove_data_directory_on_rewind_failure: self
                .cfg
                .postgresql
                .remove_data_directory_on_rewind_failure,
            rewind_failed: self.rewind_failed,
            rewind_check: self.rewind_check,
            peers,
            self_demoted: self.rewind_check || self.rewind_done,
            sync: self.sync_params(),
        };
        let decision = decide(&obs);
        let msg = self.act(decision, &obs).await?;
        if obs.cluster.as_ref().is_some_and(|c| !c.is_unlocked()) {
            self.evaluate_scheduled_restart().await;
        }

        // Publish: member key every cycle (the backend skips unchanged values).
        if obs.cluster.is_some() {
            self.touch_member(obs.cluster.as_ref()).await;
        }
        Ok(msg)
    }

    /// A replica that stays unable to stream from a running leader may have WAL the leader
    /// never had (it streamed from a primary that kept running after losing its key): after
    /// a while its data is checked with pg_rewind like a demoted primary's (pg_rewind does
    /// nothing when there is no divergence).
    fn watch_replication(&mut self, cluster: Option<&Cluster>, pg: &PgView) {
        let leader_running = cluster
            .and_then(Cluster::leader_member)
            .is_some_and(|l| l.name != self.cfg.name && l.data.state == "running");
        let stuck = leader_running
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
        if since.elapsed() >= patience && !self.rewind_check {
            warn!(
                "not streaming from the leader for {}s: checking whether this replica diverged",
                since.elapsed().as_secs()
            );
            self.rewind_check = true;
            self.not_streaming_since = None;
        }
    }

    /// Reads `/config` into the dynamic configuration and applies TTL/retry changes.
    fn apply_dynamic(&mut self, cluster: &Cluster) {
        let Some(cfg) = &cluster.config else { return };
        if cfg.data.is_empty() || cfg.data == self.dynamic.raw {
            return;
        }
        let (dynamic, warnings) = DynamicConfig::from_document(&cfg.data);
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
    fn save_dynamic_cache(&self) {
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

    async fn system_identifier(&mut self) -> Option<String> {
        if self.sysid.is_none() {
            match self.pg.controldata().await {
                Ok(cd) => self.sysid = Some(cd.system_identifier),
                Err(e) => warn!("pg_controldata failed: {e}"),
            }
        }
        self.sysid.clone()
    }

    async fn observe_pg(&mut self, data: &DataState) -> PgView {
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
                        self.state = "running".into();
                    }
                    self.rewind_done = false;
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
                    && !self.pg.settings().data_dir.join("standby.signal").exists()
                    && !self.rewind_done;
                if self.task.is_none() && self.state == "running" {
                    self.state = "crashed".into();
                } else if self.task.is_none() && self.state != "crashed" {
                    self.state = "stopped".into();
                }
                PgView::Stopped {
                    was_primary,
                    clean: cd.state.starts_with("shut down"),
                }
            }
            Err(_) => PgView::Stopped {
                was_primary: false,
                clean: false,
            },
        }
    }

    /// Asks every other member with an api_url for its `/patroni`, in parallel, 2 s each.
    async fn fetch_peers(&self, cluster: &Cluster) -> Vec<PeerStatus> {
        let mut set = tokio::task::JoinSet::new();
        for m in &cluster.members {
            if m.name == self.cfg.name || m.data.api_url.is_empty() {
                continue;
            }
            let peers = self.peers.clone();
            let (name, url) = (m.name.clone(), m.data.api_url.clone());
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

    /// Handles the end of a background task. Returns a message when the cycle should end here.
    async fn reap_task(&mut self, cluster: Option<&Cluster>) -> Result<Option<String>, AgentError> {
        let Some(task) = &self.task else {
            return Ok(None);
        };
        if !task.handle.is_finished() {
            return Ok(None);
        }
        let Some(mut task) = self.task.take() else {
            return Ok(None);
        };
        let result = match (&mut task.handle).await {
            Ok(r) => r,
            Err(e) => Err(TaskError::Failed(format!(
                "task panicked or was cancelled: {e}"
            ))),
        };
        if let Some(reply) = task.reply.take() {
            // The caller may read /patroni right after our answer: show the restarted server.
            if result.is_ok() {
                if let Ok(st) = self.pg.query_state().await {
                    self.state = "running".into();
                    self.last_pg = Some(st);
                    self.publish(Instant::now());
                }
            }
            let answer = match &result {
                Ok(()) => (200, "restarted successfully".to_string()),
                Err(_) => (503, "restart failed".to_string()),
            };
            let _ = reply.send(answer);
        }
        match (task.kind, result) {
            (ActionKind::Bootstrap, Ok(())) => {
                return self.finish_bootstrap().await.map(Some);
            }
            (ActionKind::Bootstrap, Err(e)) => {
                error!("bootstrap failed: {e}");
                if let Err(e) = self.dcs.cancel_initialization().await {
                    error!("could not remove the initialize key: {e}");
                }
                let _ = self
                    .pg
                    .stop(StopMode::Immediate, Duration::from_secs(30))
                    .await;
                move_aside_failed(&self.cfg.postgresql.data_dir);
                return Err(AgentError::Fatal("Failed to bootstrap cluster".into()));
            }
            (ActionKind::Clone | ActionKind::Reinitialize, Err(e)) => {
                error!("failed to bootstrap from leader: {e}");
                self.state = "creating replica".into();
                let _ = self
                    .pg
                    .stop(StopMode::Immediate, Duration::from_secs(30))
                    .await;
                if let Err(e) = self.pg.remove_data_dir().await {
                    error!("could not clean the data directory after a failed clone: {e}");
                }
                self.sysid = None;
                self.written = None;
            }
            (ActionKind::Rewind, Err(TaskError::NotReady(why))) => {
                warn!("not running pg_rewind yet: {why}");
                self.rewind_not_before = Some(Instant::now() + self.dynamic.loop_wait);
            }
            (ActionKind::Rewind, Err(e)) => {
                error!("pg_rewind failed: {e}");
                self.rewind_failed = true;
            }
            (ActionKind::Rewind, Ok(())) => {
                info!("pg_rewind finished");
                self.rewind_failed = false;
                self.rewind_done = true;
                self.rewind_check = false;
                self.written = None;
            }
            (kind, Err(e)) => {
                error!("{} failed: {e}", kind.describe());
                if matches!(kind, ActionKind::Start | ActionKind::Restart) {
                    self.state = "start failed".into();
                    let holds =
                        cluster.and_then(Cluster::leader_name) == Some(self.cfg.name.as_str());
                    if holds {
                        // A lock holder whose PostgreSQL does not come back lets another member
                        // take over instead of holding the cluster hostage (spec/ha-loop.md §5.1.8).
                        let _ = self
                            .pg
                            .stop(StopMode::Immediate, self.pg_ctl_timeout())
                            .await;
                        self.role = "demoted".into();
                        self.last_renewal = None;
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

    /// The bootstrap task created a running primary: publish it (spec/ha-loop.md §5.1.7).
    async fn finish_bootstrap(&mut self) -> Result<String, AgentError> {
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
        self.last_renewal = Some(Instant::now());
        self.role = "primary".into();
        self.state = "running".into();
        self.save_dynamic_cache();
        self.run_again = true;
        Ok("initialized a new cluster".into())
    }

    fn spawn_task<F, E>(&mut self, kind: ActionKind, fut: F)
    where
        F: std::future::Future<Output = Result<(), E>> + Send + 'static,
        E: Into<TaskError> + Send + 'static,
    {
        let done = self.task_done.clone();
        let handle = tokio::spawn(async move {
            let r = fut.await.map_err(Into::into);
            done.notify_one();
            r
        });
        self.task = Some(Task {
            kind,
            handle,
            reply: None,
        });
    }

    fn pg_ctl_timeout(&self) -> Duration {
        self.cfg.postgresql.pg_ctl_timeout
    }

    /// The configuration files we want for a role. In synchronous mode pgpilot owns
    /// `synchronous_standby_names` (empty on replicas); otherwise the user's value stands.
    fn desired(&self, standby: Option<StandbyConfig>) -> DesiredConfig {
        let mut parameters = effective_parameters(&self.cfg, &self.dynamic);
        let params = self.sync_params();
        if params.active() {
            parameters.insert(
                "synchronous_standby_names".into(),
                self.ssn.render(params.quorum()),
            );
        }
        DesiredConfig {
            parameters,
            pg_hba: effective_pg_hba(&self.cfg, &self.dynamic),
            standby,
        }
    }

    /// The synchronous replication settings in force.
    fn sync_params(&self) -> SyncParams {
        SyncParams {
            mode: self.dynamic.synchronous_mode,
            strict: self.dynamic.synchronous_mode_strict,
            node_count: self.dynamic.synchronous_node_count,
            max_lag: self.dynamic.maximum_lag_on_syncnode,
        }
    }

    fn standby_for(&self, cluster: Option<&Cluster>, leader: Option<&str>) -> StandbyConfig {
        let upstream = leader
            .and_then(|l| cluster.and_then(|c| c.member(l)))
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
    async fn ensure_config(&mut self, desired: DesiredConfig) -> bool {
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

    async fn act(&mut self, decision: Decision, obs: &Observation) -> Result<String, AgentError> {
        let me = self.cfg.name.clone();
        let cluster = obs.cluster.as_ref();
        match decision {
            Decision::NoAction { msg } => Ok(msg),
            Decision::Fatal { msg } => Err(AgentError::Fatal(msg)),
            Decision::DemoteOffline => {
                self.demote(StopMode::Fast).await;
                Ok("demoted self because DCS is not accessible and I was a leader".into())
            }
            Decision::UpdateLockDuring { action } => match self.dcs.update_leader(None).await {
                Ok(true) => {
                    self.last_renewal = Some(Instant::now());
                    Ok(format!("updated leader lock during {}", action.describe()))
                }
                _ => {
                    self.last_renewal = None;
                    Ok(format!("{} in progress", action.describe()))
                }
            },
            Decision::DemoteImmediate { msg } => {
                self.demote(StopMode::Immediate).await;
                Ok(msg)
            }
            Decision::RaceBootstrap => match self.dcs.initialize(true, "").await {
                Ok(true) => {
                    self.start_bootstrap();
                    Ok("trying to bootstrap a new cluster".into())
                }
                Ok(false) => Ok("failed to acquire initialize lock".into()),
                Err(e) => Ok(format!("failed to acquire initialize lock: {e}")),
            },
            Decision::Clone { from, msg } => {
                let Some((host, port)) = cluster
                    .and_then(|c| c.member(&from))
                    .and_then(|m| m.data.host_port())
                else {
                    return Ok(format!("can not clone from '{from}': no conn_url"));
                };
                self.start_clone(Upstream { host, port }, cluster);
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
                    if let Err(e) = self
                        .pg
                        .stop(StopMode::Immediate, self.pg_ctl_timeout())
                        .await
                    {
                        error!("could not stop PostgreSQL, keeping the leader key: {e}");
                        return Ok(format!("not releasing the leader key: {e}"));
                    }
                }
                let _ = self.dcs.delete_leader().await;
                self.last_renewal = None;
                Ok(msg)
            }
            Decision::StartPostgres {
                as_primary,
                follow,
                msg,
            } => {
                let mut as_primary = as_primary;
                let mut msg = msg;
                if obs.cluster.as_ref().and_then(|c| c.leader_name()) == Some(me.as_str()) {
                    // The view may come from a cache while the DCS is frozen: start writable only
                    // after the lock was renewed for real, otherwise read-only.
                    if let Ok(true) = self.dcs.update_leader(None).await {
                        self.last_renewal = Some(Instant::now());
                    } else {
                        self.last_renewal = None;
                        if as_primary {
                            as_primary = false;
                            msg = "starting as readonly because i had the session lock".into();
                        }
                    }
                }
                let standby = if as_primary {
                    None
                } else {
                    Some(self.standby_for(cluster, follow.as_deref()))
                };
                self.role = if as_primary { "primary" } else { "replica" }.into();
                let desired = self.desired(standby);
                self.ensure_config(desired).await;
                self.state = "starting".into();
                let pg = self.pg.clone();
                let timeout = if as_primary {
                    self.dynamic
                        .primary_start_timeout
                        .max(self.pg_ctl_timeout())
                } else {
                    self.pg_ctl_timeout()
                };
                self.spawn_task(ActionKind::Start, async move {
                    pg.start(timeout).await.map_err(|e| e.to_string())
                });
                Ok(msg)
            }
            Decision::Rewind { leader } => {
                if self.rewind_not_before.is_some_and(|t| Instant::now() < t) {
                    return Ok(format!("waiting for the rewind source {leader}"));
                }
                let Some((host, port)) = cluster
                    .and_then(|c| c.member(&leader))
                    .and_then(|m| m.data.host_port())
                else {
                    return Ok(format!("can not rewind from '{leader}': no conn_url"));
                };
                let pg = self.pg.clone();
                let timeout = self.pg_ctl_timeout();
                self.spawn_task(ActionKind::Rewind, async move {
                    let source = Upstream { host, port };
                    // A source that is not ready (still promoting, unreachable) is not a
                    // failed rewind: try again next cycle.
                    pg.prepare_rewind_source(&source).await.map_err(|e| {
                        TaskError::NotReady(format!("rewind source not ready: {e}"))
                    })?;
                    // pg_rewind needs a cleanly shut down target; PostgreSQL 13+ pg_rewind runs
                    // crash recovery itself when it is not.
                    pg.stop(StopMode::Fast, timeout)
                        .await
                        .map_err(|e| TaskError::Failed(e.to_string()))?;
                    pg.rewind(&source)
                        .await
                        .map_err(|e| TaskError::Failed(e.to_string()))
                });
                Ok(format!("running pg_rewind from {leader}"))
            }
            Decision::RemoveDataDirectory { msg } => {
                warn!("{msg}");
                let _ = self
                    .pg
                    .stop(StopMode::Immediate, self.pg_ctl_timeout())
                    .await;
                if let Err(e) = self.pg.remove_data_dir().await {
                    error!("could not remove the data directory: {e}");
                }
                self.sysid = None;
                self.written = None;
                self.rewind_failed = false;
                self.run_again = true;
                Ok(msg)
            }
            Decision::AcquireLeader => self.acquire_leader(obs).await,
            Decision::NotHealthiest { msg } => {
                if let Some(Err(reason)) = cluster.map(|c| is_healthiest(obs, c)) {
                    info!("{reason}");
                }
                if matches!(
                    obs.pg,
                    PgView::Running {
                        in_recovery: false,
                        ..
                    }
                ) {
                    self.demote(StopMode::Immediate).await;
                    return Ok(msg.replace("following", "demoting self and following"));
                }
                Ok(msg)
            }
            Decision::RenewLeader => self.renew_leader(obs).await,
            Decision::Follow { leader } => self.follow(obs, &leader).await,
        }
    }

    /// Stops PostgreSQL. After a fast (offline) demotion it is restarted read-only with no
    /// upstream at once; after an immediate one it stays down and the next cycle, seeing a
    /// former primary in pg_controldata, decides between a rewind and a start as a replica.
    /// The configuration files are deliberately left as they were until then: writing
    /// `standby.signal` now would hide that this data directory was a primary.
    async fn demote(&mut self, mode: StopMode) {
        self.last_renewal = None;
        self.rewind_check = true;
        self.role = "demoted".into();
        self.state = "stopping".into();
        if let Err(e) = self.pg.stop(mode, self.pg_ctl_timeout()).await {
            error!("could not stop PostgreSQL while demoting: {e}");
        }
        self.state = "stopped".into();
        self.last_pg = None;
        self.publish(Instant::now());
        if mode == StopMode::Fast {
            let desired = self.desired(Some(StandbyConfig {
                upstream: None,
                slot_name: None,
            }));
            self.ensure_config(desired).await;
            self.role = "replica".into();
            self.state = "starting".into();
            let pg = self.pg.clone();
            let timeout = self.pg_ctl_timeout();
            self.spawn_task(ActionKind::Start, async move {
                pg.start(timeout).await.map_err(|e| e.to_string())
            });
        }
        self.run_again = true;
    }

    fn start_bootstrap(&mut self) {
        self.state = "initializing new cluster".into();
        self.role = "uninitialized".into();
        let pg = self.pg.clone();
        let initdb = self.cfg.bootstrap.initdb.clone();
        let post = self.cfg.bootstrap.post_bootstrap.clone();
        let desired = self.desired(None);
        let timeout = self.pg_ctl_timeout();
        self.written = Some(desired.clone());
        self.spawn_task::<_, String>(ActionKind::Bootstrap, async move {
            pg.initdb(&initdb).await.map_err(|e| e.to_string())?;
            pg.write_config(&desired).await.map_err(|e| e.to_string())?;
            pg.start(timeout).await.map_err(|e| e.to_string())?;
            pg.create_roles().await.map_err(|e| e.to_string())?;
            if let Some(cmd) = post {
                pg.run_post_bootstrap(&cmd)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok(())
        });
    }

    fn start_clone(&mut self, from: Upstream, cluster: Option<&Cluster>) {
        self.state = "creating replica".into();
        self.role = "replica".into();
        let leader = cluster.and_then(Cluster::leader_name).map(str::to_string);
        let standby = self.standby_for(cluster, leader.as_deref());
        let desired = self.desired(Some(standby));
        self.written = Some(desired.clone());
        let pg = self.pg.clone();
        let args = self.cfg.postgresql.basebackup.clone();
        let timeout = self.pg_ctl_timeout();
        self.sysid = None;
        self.spawn_task(ActionKind::Clone, async move {
            // A postmaster whose data directory was deleted under it still holds the port.
            pg.stop(StopMode::Immediate, timeout)
                .await
                .map_err(|e| e.to_string())?;
            pg.basebackup(&from, &args)
                .await
                .map_err(|e| e.to_string())?;
            pg.write_config(&desired).await.map_err(|e| e.to_string())?;
            pg.start(timeout).await.map_err(|e| e.to_string())
        });
    }

    async fn acquire_leader(&mut self, obs: &Observation) -> Result<String, AgentError> {
        match self.dcs.attempt_to_acquire_leader().await {
            Ok(true) => {
                self.last_renewal = Some(Instant::now());
                if let Some(f) = obs.cluster.as_ref().and_then(|c| c.failover.as_ref()) {
                    let _ = self.dcs.set_failover("{}", Some(f.version)).await;
                }
                if matches!(
                    obs.pg,
                    PgView::Running {
                        in_recovery: true,
                        ..
                    }
                ) {
                    if let Err(msg) = self.promote(obs).await {
                        return Ok(msg);
                    }
                    Ok("promoted self to leader by acquiring session lock".into())
                } else {
                    self.role = "primary".into();
                    Ok("acquired session lock as a leader".into())
                }
            }
            Ok(false) => Ok("following new leader after trying and failing to obtain lock".into()),
            Err(e) => Ok(format!("failed to obtain leader lock: {e}")),
        }
    }

    /// Promotes the local replica (we hold the lock). In synchronous mode `/sync` names us
    /// first (CAS) and ssn is in place before the first commit: `Err` = promotion postponed.
    async fn promote(&mut self, obs: &Observation) -> Result<(), String> {
        let params = self.sync_params();
        if params.active() {
            let current = obs.cluster.as_ref().and_then(|c| c.sync.as_ref());
            let (ssn, key) = sync::pre_promote(&params, &self.cfg.name, current);
            let written = self
                .dcs
                .set_sync(&key.document(&self.cfg.name), current.map(|s| s.version))
                .await;
            if !matches!(written, Ok(true)) {
                if let Err(e) = written {
                    warn!("could not write /sync: {e}");
                }
                return Err(
                    "Postponing promotion because synchronous replication state was updated by somebody else"
                        .into(),
                );
            }
            self.set_ssn(ssn);
            if let Some(mut d) = self.written.clone() {
                d.parameters = self.desired(None).parameters;
                if self.ensure_config(d).await {
                    let _ = self.pg.reload().await;
                }
            }
        }
        self.role = "primary".into();
        match self.pg.promote(self.pg_ctl_timeout()).await {
            Ok(()) => {
                let desired = self.desired(None);
                self.ensure_config(desired).await;
                self.slots = None;
                self.run_again = true;
            }
            Err(e) => error!("promote failed: {e}"),
        }
        Ok(())
    }

    /// After a start, before the first configuration is written: a `/sync` key that names us
    /// as leader promises its standbys every acknowledged commit, so a primary we (re)start
    /// must wait for them as that key says, not start with an empty ssn.
    fn recover_ssn(&mut self, cluster: &Cluster) {
        if self.ssn_known {
            return;
        }
        self.ssn_known = true;
        let params = self.sync_params();
        if let Some(key) = SyncKey::of(cluster.sync.as_ref(), &self.cfg.name) {
            if params.active() {
                self.set_ssn(sync::ssn_for_key(&params, Some(&key)));
            }
        }
    }

    fn set_ssn(&mut self, ssn: Ssn) {
        if ssn != self.ssn {
            let quorum = self.sync_params().quorum();
            info!(
                "Assigning synchronous standby status: synchronous_standby_names = '{}'",
                ssn.render(quorum)
            );
        }
        self.ssn = ssn;
        self.ssn_set_at = Some(Instant::now());
        self.ssn_lsn = None;
    }

    /// The leader's synchronous replication step (spec/ha-loop.md §5.7–5.8): one safe change
    /// of ssn or `/sync` per cycle, computed by [`sync::next_step`].
    async fn process_sync(&mut self, obs: &Observation) {
        let params = self.sync_params();
        let me = self.cfg.name.clone();
        let Some(cluster) = obs.cluster.as_ref() else {
            return;
        };
        if !params.active() {
            if !self.ssn.is_empty() {
                self.ssn = Ssn::empty();
            }
            if let Some(s) = &cluster.sync {
                if self.dcs.delete_sync(Some(s.version)).await.is_ok() {
                    info!("synchronous mode is off: removed /sync");
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
        if self.ssn_lsn.is_none()
            && self
                .ssn_set_at
                .is_none_or(|t| t.elapsed() >= Duration::from_millis(500))
        {
            self.ssn_lsn = Some(primary_lsn);
        }
        let key = SyncKey::of(cluster.sync.as_ref(), &me);
        let view = SyncView {
            params,
            ssn: &self.ssn,
            ssn_lsn: self.ssn_lsn.unwrap_or(u64::MAX),
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
                let placeholder = ssn.names.contains(sync::PLACEHOLDER);
                if placeholder && !self.warned_strict {
                    warn!("No active replication connections from Patroni members and synchronous_mode_strict is requested. Commits will be delayed.");
                }
                self.warned_strict = placeholder;
                self.set_ssn(ssn);
                let desired = self.desired(None);
                if self.ensure_config(desired).await {
                    if let Err(e) = self.pg.reload().await {
                        warn!("reload failed: {e}");
                    }
                }
                self.run_again = true;
            }
            SyncStep::WaitConfirm | SyncStep::Nothing => {}
        }
    }

    async fn renew_leader(&mut self, obs: &Observation) -> Result<String, AgentError> {
        let me = self.cfg.name.clone();
        let leader = obs.cluster.as_ref().and_then(|c| c.leader.clone());
        match self.dcs.update_leader(leader.as_ref()).await {
            Ok(true) => {
                self.last_renewal = Some(Instant::now());
            }
            res => {
                if let Err(e) = res {
                    error!("failed to update leader lock: {e}");
                }
                self.last_renewal = None;
                if matches!(
                    obs.pg,
                    PgView::Running {
                        in_recovery: false,
                        ..
                    }
                ) {
                    if obs.paused {
                        return Ok(
                            "continue to run as primary after failing to update leader lock in DCS"
                                .into(),
                        );
                    }
                    self.demote(StopMode::Immediate).await;
                    return Ok("demoted self because failed to update leader lock in DCS".into());
                }
                return Ok("not promoting because failed to update leader lock in DCS".into());
            }
        }
        if let PgView::Running {
            in_recovery,
            timeline,
            wal_position,
            ..
        } = obs.pg
        {
            if in_recovery {
                if obs.paused {
                    return Ok(format!("no action. I am ({me}), the leader with the lock"));
                }
                if let Err(msg) = self.promote(obs).await {
                    return Ok(msg);
                }
                return Ok("promoted self to leader because I had the session lock".into());
            }
            self.role = "primary".into();
            let status = Status {
                optime: wal_position,
                ..Default::default()
            };
            if let Err(e) = self.dcs.write_status(&status).await {
                warn!("could not write /status: {e}");
            }
            if let Some(c) = obs.cluster.as_ref() {
                self.publish_history(c, timeline).await;
                self.sync_slots(c).await;
                if c.initialize.as_deref().is_none_or(|i| !valid_sysid(i)) {
                    if let Some(sysid) = &self.sysid {
                        let _ = self.dcs.initialize(false, sysid).await;
                    }
                }
                if c.config.as_ref().is_none_or(|cfg| cfg.data.is_empty()) {
                    let doc = Value::Object(self.dynamic.raw.clone()).to_string();
                    let _ = self.dcs.set_config(&doc, None).await;
                }
            }
            let desired = self.desired(None);
            if self.ensure_config(desired).await {
                let _ = self.pg.reload().await;
            }
            self.process_sync(obs).await;
            if let Some(msg) = self.process_manual_failover(obs).await {
                return Ok(msg);
            }
        }
        Ok(format!("no action. I am ({me}), the leader with the lock"))
    }

    /// The leader's handling of `/failover` (spec/ha-loop.md §5.4). `Some(msg)` when it acted.
    async fn process_manual_failover(&mut self, obs: &Observation) -> Option<String> {
        let f = obs.cluster.as_ref()?.failover.clone()?;
        let seconds_until = f.scheduled_at.as_deref().filter(|_| !obs.paused).map(|at| {
            match at.parse::<jiff::Timestamp>() {
                Ok(ts) => {
                    (ts.as_millisecond() - jiff::Timestamp::now().as_millisecond()) as f64 / 1000.0
                }
                // Unparsable: treat as stale so that it is cleaned up.
                Err(_) => f64::NEG_INFINITY,
            }
        });
        let mut step = manual_failover_from_leader(obs, &f, seconds_until, self.dynamic.loop_wait);
        if let ManualFailover::SleepUntilDue(d) = step {
            tokio::time::sleep(d).await;
            info!(
                "Manual scheduled switchover at {}",
                f.scheduled_at.as_deref().unwrap_or("")
            );
            step = manual_failover_from_leader(obs, &f, Some(0.0), self.dynamic.loop_wait);
        }
        match step {
            ManualFailover::Wait { msg } => {
                info!("{msg}");
                None
            }
            ManualFailover::SleepUntilDue(_) => None,
            ManualFailover::Clear { msg } => {
                warn!("{msg}");
                info!("Cleaning up failover key");
                let _ = self.dcs.set_failover("{}", Some(f.version)).await;
                None
            }
            ManualFailover::Demote { candidate } => {
                self.demote_graceful(obs, candidate.as_deref()).await;
                Some("switchover: demoting myself".into())
            }
        }
    }

    /// Graceful demotion for a switchover (spec/ha-loop.md §5.5 `graceful`): checkpoint, fast
    /// stop, wait (bounded) until a candidate has received the shutdown checkpoint, publish it as
    /// `/status.optime`, release the key, and wait briefly for the new leader. PostgreSQL stays
    /// down; the next cycle rewinds if needed and starts it as a replica of the new leader.
    async fn demote_graceful(&mut self, obs: &Observation, candidate: Option<&str>) {
        info!("switchover: demoting myself");
        // A checkpoint now makes the shutdown checkpoint short.
        if let Err(e) = self.pg.checkpoint().await {
            warn!("CHECKPOINT before switchover failed: {e}");
        }
        self.state = "stopping".into();
        if let Err(e) = self.pg.stop(StopMode::Fast, self.pg_ctl_timeout()).await {
            // PostgreSQL is still running: keep the key (never two primaries).
            error!("could not stop PostgreSQL for the switchover, keeping the leader key: {e}");
            self.state = "running".into();
            return;
        }
        self.state = "stopped".into();
        self.role = "demoted".into();
        self.last_pg = None;
        self.rewind_check = true;
        // Peers deciding the race read our /patroni: it must not show a primary any more.
        self.publish(Instant::now());
        let checkpoint = match self.pg.controldata().await {
            Ok(cd) => cd.checkpoint_lsn.0,
            Err(e) => {
                warn!("pg_controldata after the switchover stop failed: {e}");
                0
            }
        };
        // Let a candidate receive the shutdown checkpoint so nothing acknowledged is lost. Its
        // WAL position is asked over SQL: its REST status is up to one loop_wait old.
        if let Some(cluster) = obs.cluster.as_ref() {
            let candidates: Vec<Upstream> = cluster
                .members
                .iter()
                .filter(|m| m.name != self.cfg.name && !m.data.nofailover())
                .filter(|m| candidate.is_none_or(|c| c == m.name))
                .filter_map(|m| m.data.host_port())
                .map(|(host, port)| Upstream { host, port })
                .collect();
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let mut caught_up = false;
                for c in &candidates {
                    if self
                        .pg
                        .remote_wal_position(c)
                        .await
                        .is_ok_and(|lsn| lsn >= checkpoint)
                    {
                        caught_up = true;
                        break;
                    }
                }
                if caught_up || Instant::now() > deadline {
                    if !caught_up && self.sync_params().active() {
                        // In synchronous mode the key goes only to a member that has every
                        // acknowledged commit: keep it, start again as primary, drop the request.
                        warn!("switchover aborted: no candidate received the shutdown checkpoint in time");
                        if let Some(f) = &cluster.failover {
                            let _ = self.dcs.set_failover("{}", Some(f.version)).await;
                        }
                        self.rewind_check = false;
                        self.run_again = true;
                        return;
                    }
                    if !caught_up {
                        warn!("no candidate received the shutdown checkpoint in time; releasing the leader key anyway");
                    }
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let status = Status {
            optime: checkpoint,
            ..Default::default()
        };
        let _ = self.dcs.write_status(&status).await;
        match self.dcs.delete_leader().await {
            Ok(true) => info!("Leader key released"),
            Ok(false) => {}
            Err(e) => error!("could not release the leader key: {e}"),
        }
        self.last_renewal = None;
        self.touch_member(obs.cluster.as_ref()).await;
        // Give the candidate a moment to take the key, so that the next cycle follows it.
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(c) = self.dcs.cluster().await {
                if c.leader_name().is_some_and(|l| l != self.cfg.name) {
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.run_again = true;
    }

    /// Keeps `/history` in line with our timeline after a promotion.
    async fn publish_history(&mut self, cluster: &Cluster, timeline: u32) {
        if timeline <= 1 {
            if cluster.history.is_none() {
                let _ = self.dcs.set_history("[]").await;
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

    /// Physical slots for every other member (spec/ha-loop.md §5.9), only when the member set
    /// changed.
    async fn sync_slots(&mut self, cluster: &Cluster) {
        if !self.dynamic.use_slots {
            return;
        }
        let mut wanted: Vec<String> = cluster
            .members
            .iter()
            .filter(|m| m.name != self.cfg.name)
            .map(|m| slot_name_for(&m.name))
            .collect();
        wanted.sort();
        if self.slots.as_ref() == Some(&wanted) {
            return;
        }
        match self.pg.sync_slots(&wanted).await {
            Ok(()) => self.slots = Some(wanted),
            Err(e) => warn!("could not synchronise replication slots: {e}"),
        }
    }

    async fn follow(&mut self, obs: &Observation, leader: &str) -> Result<String, AgentError> {
        let me = self.cfg.name.clone();
        if matches!(
            obs.pg,
            PgView::Running {
                in_recovery: false,
                ..
            }
        ) {
            if obs.paused {
                return Ok("continue to run as primary without lock".into());
            }
            self.demote(StopMode::Immediate).await;
            return Ok("demoting self because I do not have the lock and I was a leader".into());
        }
        self.role = "replica".into();
        self.slots = None;
        self.ssn = Ssn::empty();
        if let (Some(l), PgView::Running { timeline, .. }) = (
            obs.cluster.as_ref().and_then(Cluster::leader_member),
            &obs.pg,
        ) {
            if l.data.timeline.is_some_and(|tl| tl <= *timeline) {
                self.rewind_check = false;
            }
        }
        let standby = self.standby_for(obs.cluster.as_ref(), Some(leader));
        let desired = self.desired(Some(standby));
        if self.ensure_config(desired).await {
            // primary_conninfo and primary_slot_name are reloadable since PostgreSQL 13.
            if let Err(e) = self.pg.reload().await {
                warn!("reload failed: {e}");
            }
        }
        Ok(format!(
            "no action. I am ({me}), a secondary, and following a leader ({leader})"
        ))
    }

    /// Publishes our member key.
    async fn touch_member(&mut self, cluster: Option<&Cluster>) {
        let data = self.member_data(cluster);
        if let Err(e) = self.dcs.touch_member(&data).await {
            warn!("could not update the member key: {e}");
        }
    }

    fn member_data(&self, cluster: Option<&Cluster>) -> MemberData {
        let mut m = MemberData {
            conn_url: self.cfg.conn_url(),
            api_url: self.cfg.api_url(),
            state: self.state.clone(),
            role: self.role.clone(),
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
    fn effective_tags(&self) -> Map<String, Value> {
        let mut tags = self.cfg.tags.published.clone();
        if self.leaving_sync {
            tags.insert("nosync".into(), Value::Bool(true));
            tags.insert("sync_priority".into(), Value::from(0));
        }
        tags
    }

    /// Before a replica stops in synchronous mode it asks the primary to drop it from `/sync`
    /// and waits up to 2 × loop_wait, so commits do not hang on a standby that is going away.
    async fn leave_sync_duty(&mut self) {
        let me = self.cfg.name.clone();
        let listed = |c: &Cluster| sync::listed(c.sync.as_ref(), &me, false);
        if !self.sync_params().active()
            || self.role != "replica"
            || !self.last_cluster.as_deref().is_some_and(listed)
        {
            return;
        }
        self.leaving_sync = true;
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

    /// `scheduled_restart` as Patroni publishes it: `schedule` plus the filters.
    fn scheduled_restart_json(&self) -> Option<Map<String, Value>> {
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

    /// Publishes the REST snapshot.
    fn publish(&self, cycle_started: Instant) {
        let now = Instant::now();
        let pg = self.last_pg.as_ref().map(pg_info);
        let snap = NodeSnapshot {
            name: self.cfg.name.clone(),
            scope: self.cfg.scope.clone(),
            state: self.state.clone(),
            role: self.role.clone(),
            pg,
            leader_until: self.last_renewal.map(|t| t + self.dynamic.ttl),
            cluster: self.last_cluster.clone(),
            cluster_valid_until: self.last_dcs_ok.map(|t| t + self.dynamic.ttl),
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
            next_run: cycle_started.max(now) + self.dynamic.loop_wait,
            loop_wait: self.dynamic.loop_wait,
            scheduled_restart: self.scheduled_restart_json(),
        };
        self.snapshot.send_replace(Arc::new(snap));
    }

    /// The written shutdown order (module docs).
    async fn shutdown(&mut self) {
        if let Some(task) = self.task.take() {
            task.handle.abort();
        }
        let paused = self.last_cluster.as_deref().is_some_and(Cluster::is_paused);
        if paused {
            info!("Leader key is not deleted and Postgresql is not stopped due paused state");
            return;
        }
        let was_leader = self.last_renewal.is_some();
        if !was_leader {
            self.leave_sync_duty().await;
        }
        self.state = "stopping".into();
        match self.pg.stop(StopMode::Fast, self.pg_ctl_timeout()).await {
            Ok(()) => {
                self.state = "stopped".into();
                if was_leader {
                    if let Ok(cd) = self.pg.controldata().await {
                        let status = Status {
                            optime: cd.checkpoint_lsn.0,
                            ..Default::default()
                        };
                        let _ = self.dcs.write_status(&status).await;
                    }
                    match self.dcs.delete_leader().await {
                        Ok(true) => info!("Leader key released"),
                        Ok(false) => {}
                        Err(e) => error!("could not release the leader key: {e}"),
                    }
                }
            }
            Err(e) => {
                // PostgreSQL still runs: keep the key, a second primary must never appear.
                error!("could not stop PostgreSQL, keeping the leader key: {e}");
                return;
            }
        }
        self.last_pg = None;
        self.role = if was_leader { "demoted" } else { "replica" }.into();
        let cluster = self.last_cluster.clone();
        self.touch_member(cluster.as_deref()).await;
    }
}

fn pending_reason(p: &BTreeMap<String, (String, String)>) -> Map<String, Value> {
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

fn load_dynamic_cache(cfg: &Config) -> Option<DynamicConfig> {
    let text =
        std::fs::read_to_string(cfg.postgresql.data_dir.join("patroni.dynamic.json")).ok()?;
    let doc: Map<String, Value> = serde_json::from_str(&text).ok()?;
    Some(DynamicConfig::from_document(&doc).0)
}

/// A failed bootstrap leaves its data directory as `<data_dir>.failed` for inspection.
fn move_aside_failed(dir: &std::path::Path) {
    let mut failed = PathBuf::from(dir);
    failed.set_extension("failed");
    let _ = std::fs::remove_dir_all(&failed);
    if let Err(e) = std::fs::rename(dir, &failed) {
        error!("could not move {} aside: {e}", dir.display());
    }
}

/// The next command, or never when there is no channel (or it closed).
async fn recv(commands: &mut Option<mpsc::Receiver<Command>>) -> Option<Command> {
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

fn epoch_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn now_iso() -> String {
    jiff::ZonedDateTime::now()
        .strftime("%Y-%m-%dT%H:%M:%S%.6f%:z")
        .to_string()
}

/// The standbys the primary sees: member keys joined with `pg_stat_replication` rows (by
/// `application_name`, case-insensitive). Members replicating from someone else
/// (`replicatefrom`) or not running are not eligible.
fn standbys(cluster: &Cluster, me: &str, pg: &PgState) -> Vec<Standby> {
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
                sync_priority: m.data.sync_priority(),
                nofailover: m.data.nofailover(),
                streaming: row.is_some_and(|r| r.state == "streaming"),
                lsn: row.map_or(0, |r| r.sync_lsn(&pg.synchronous_commit).0),
                sync_state: row.map(|r| r.sync_state.clone()).unwrap_or_default(),
            })
        })
        .collect()
}
