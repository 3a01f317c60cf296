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
//!
//! The agent's clock is tokio's (`tokio::time::Instant`, `sleep`), the same as the system clock
//! in production, so that a runtime with a paused clock drives every wait of the cycle.
//!
//! One file per phase of the cycle:
//!
//! | file | what it does |
//! |---|---|
//! | `mod.rs` | the struct, `run` (wake-ups, commands, shutdown) and `run_cycle` (one cycle, in order) |
//! | `observe.rs` | `/config` into the dynamic configuration, the local PostgreSQL, peers during a race |
//! | `tasks.rs` | background actions (bootstrap, clone, rewind, start) and reaping their outcome |
//! | `act.rs` | executing the decision: configuration files, follow/rewind, demotion, slots |
//! | `leader.rs` | the leader race and promotion, renewal, switchover and manual failover |
//! | `keeper.rs` | the lease keeper: renews the lease between cycles when a cycle is late |
//! | `failsafe.rs` | failsafe mode: `/failsafe`, the round of a primary that lost the DCS |
//! | `sync_duty.rs` | `synchronous_standby_names` and `/sync`, one safe step per cycle |
//! | `commands.rs` | REST commands: restart (now or scheduled), reinitialize, reload |
//! | `publish.rs` | the member key, `/history`, the REST snapshot |
//! | `shutdown.rs` | the shutdown order above |
//!
//! The watchdog (`crate::watchdog`) is armed before this member runs a primary (promotion,
//! bootstrap, taking or holding the key), kept alive with every renewal, and closed once
//! PostgreSQL is stopped or no longer a primary without the key, in maintenance mode, and on a
//! clean shutdown. If PostgreSQL can not be stopped it stays armed without keepalives: the host
//! is reset before the key expires.
//!
//! The guard process (`crate::guard`) hooks into the same points: every successful renewal
//! outside maintenance mode arms it until `sent + ttl - margin` (the instant is taken before the
//! request goes to the DCS), and it is disarmed wherever the watchdog is closed. A member whose
//! guard is on but not running does not run for leader, and a leader in that state lets the key
//! go as with a `required` watchdog that does not arm.
//!
//! Failsafe mode (`failsafe.rs`, reasoning in `decide::failsafe`): a primary that lost the DCS
//! stays one while every member listed in `/failsafe` accepts its `POST /failsafe`; such a round
//! counts as a renewal sent when the round started: the watchdog is kept alive and the guard
//! armed until `start + ttl - margin`, so the guard does not fence the primary failsafe keeps.
//!
//! The user's hooks (`crate::hooks`) are run where Patroni runs them: `before_stop` and
//! `on_stop` around every stop of a running PostgreSQL (`act::stop_postgres`), the callback a
//! start, restart or reload fires once it is done (chosen by `decide::follow_callback`),
//! `on_role_change` after a promotion and after a primary that failed to start gave its key up,
//! `on_start` after bootstrap and on the first cycle that finds PostgreSQL running, and
//! `pre_promote` before a promotion, waited for while the key is renewed.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use pgpilot_config::{Config, DynamicConfig};
use pgpilot_dcs::{Cluster, Dcs};
use pgpilot_postgres::{DataDirState, DesiredConfig, PgControl, PgState, Postgres, ReplicaMethod};
use pgpilot_types::{AgentStats, Command, FailsafeLeader, NodeSnapshot, Peers, Role, State};
use tokio::sync::{mpsc, watch, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::decide::{decide, ActionKind, DataState, Observation, PgView};
use crate::guard::Guard;
use crate::hooks::{CallbackAction, HookSettings, Hooks};
use crate::sync::Ssn;
use crate::watchdog::{SystemWatchdogs, Watchdog, WatchdogOpener};

mod act;
mod commands;
mod failsafe;
mod keeper;
mod leader;
mod observe;
mod publish;
mod shutdown;
mod slot_duty;
mod standby;
mod sync_duty;
mod tasks;
#[cfg(test)]
mod tests;

use commands::{recv, ScheduledRestart};
use observe::load_dynamic_cache;
use publish::epoch_secs;
pub use publish::pg_info;
use tasks::Task;

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

/// What this member knows about pg_rewind.
#[derive(Debug, Default)]
struct Rewind {
    /// pg_rewind against the current leader failed; do not loop on it.
    failed: bool,
    /// pg_rewind succeeded (possibly with nothing to do) since PostgreSQL last ran: the data
    /// directory no longer counts as a diverged former primary.
    done: bool,
    /// Set by our own demotion, cleared when a rewind ran or a leader on our timeline is
    /// followed: see `Observation::rewind_check`.
    check: bool,
    /// A rewind source that was not ready is asked again only after this (one loop_wait).
    not_before: Option<Instant>,
}

/// The synchronous-replication duty: what the primary set and when, and a replica's request to
/// be released from it before it stops.
#[derive(Debug, Default)]
struct SyncDuty {
    /// `synchronous_standby_names` as we manage it (empty unless primary in synchronous mode).
    ssn: Ssn,
    /// When `ssn` was last changed, and the primary's flush LSN taken once the change is
    /// surely in force (see `process_sync`).
    ssn_set_at: Option<Instant>,
    ssn_lsn: Option<u64>,
    /// `ssn` reflects what this process set (false after start until `/sync` was read).
    ssn_known: bool,
    /// Asking the primary to release us from synchronous duty before we stop: the member key
    /// then advertises `nosync: true, sync_priority: 0`.
    leaving: bool,
    /// The strict-mode warning was logged for the current period without a standby.
    warned_strict: bool,
}

/// What the binary does with a reloaded configuration (see [`Agent::on_reload`]).
pub type ReloadHook = Box<dyn Fn(&Config) + Send + Sync>;

/// The agent of one member.
pub struct Agent<D: Dcs, P: Peers, Pg: PgControl = Postgres> {
    cfg: Config,
    dcs: Arc<D>,
    pg: Arc<Pg>,
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
    /// Renews the lease when the cycle is late (`keeper.rs`).
    keeper: Arc<keeper::Keeper>,
    /// Last DCS view read successfully, and when.
    last_cluster: Option<Arc<Cluster>>,
    last_dcs_ok: Option<Instant>,
    dcs_last_seen: u64,
    /// State published in the member key and `/patroni`.
    state: State,
    /// Role published in the member key.
    role: Role,
    /// Last monitoring query result.
    last_pg: Option<PgState>,
    sysid: Option<String>,
    /// pg_rewind bookkeeping of this member (see [`Rewind`]).
    rewind: Rewind,
    /// After a failed start, the next one waits until this (one loop_wait): a start refused
    /// at once (a data directory of another major than bin_dir) would otherwise be retried
    /// in a tight loop, since a finished task runs the next cycle at once.
    start_not_before: Option<Instant>,
    /// `POST /reload` / SIGHUP asked for a reload of PostgreSQL that no reload has served yet.
    reload_requested: bool,
    /// After a failed clone: the next one waits until then.
    clone_not_before: Option<Instant>,
    /// The primary's synchronous-replication duty (see [`SyncDuty`]).
    sync_duty: SyncDuty,
    /// The desired configuration last written to disk (skip rewriting an unchanged one).
    written: Option<DesiredConfig>,
    /// Retention of absent members' slots (`/status.retain_slots`) with the time each was
    /// last seen; `None` until the first cycle as leader, which starts them from `/status`.
    slot_retain: Option<BTreeMap<String, Instant>>,
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
    /// Since when our replica has been running without streaming from a running leader.
    not_streaming_since: Option<Instant>,
    /// The watchdog device, armed only for leader duty (module docs).
    watchdog: Watchdog,
    /// The guard process, armed with every renewal outside maintenance mode (module docs).
    guard: Guard,
    /// Callbacks, `pre_promote`, `before_stop` (module docs).
    hooks: Hooks,
    /// When we last gave the key back because `pre_promote` failed: for a ttl after it this
    /// member stays out of the leader race.
    pre_promote_released_at: Option<Instant>,
    /// What this agent counts about its own work (the `pgpilot_*` metrics).
    stats: AgentStats,
    /// Called with the new configuration after a reload, for what the binary owns (logging).
    on_reload: Option<ReloadHook>,
    /// What the REST API's `POST /failsafe` last received (`None`: no API, as in tests).
    failsafe_posts: Option<watch::Receiver<Option<FailsafeLeader>>>,
    /// A `POST /failsafe` received before this is forgotten (reset when we promote).
    failsafe_reset_at: Option<Instant>,
    /// When this agent started (failsafe mode keeps a replica out of the race for a ttl
    /// after it: see `decide::failsafe`).
    started_at: Instant,
    /// This cycle's lock renewal failed for a DCS error and a failsafe round ran instead: the
    /// member key is not touched (Patroni's `finally` skips it after a DCS error), which would
    /// cost one more retry_timeout before the next round.
    skip_touch: bool,
    /// As a primary without the DCS: failsafe is active until then (the last successful
    /// round's start + ttl); cleared by a renewal, a promotion, a demotion.
    failsafe_until: Option<Instant>,
}

impl<D: Dcs, P: Peers, Pg: PgControl> Agent<D, P, Pg> {
    pub fn new(
        cfg: Config,
        dcs: Arc<D>,
        pg: Arc<Pg>,
        peers: Arc<P>,
        snapshot: watch::Sender<Arc<NodeSnapshot>>,
    ) -> Agent<D, P, Pg> {
        // The warnings of what is in force at start (among them what failsafe mode leaves
        // out), whichever document it comes from.
        let (dynamic, warnings, source) = match load_dynamic_cache(&cfg) {
            Some((dynamic, warnings)) => (dynamic, warnings, "patroni.dynamic.json"),
            None => {
                let (dynamic, warnings) =
                    DynamicConfig::from_document_fenced(&cfg.bootstrap.dcs, cfg.guard);
                (dynamic, warnings, "bootstrap.dcs")
            }
        };
        for w in warnings {
            warn!("{source}: {w}");
        }
        let watchdog = Watchdog::new(
            Arc::new(SystemWatchdogs),
            &cfg.watchdog,
            dynamic.ttl,
            dynamic.loop_wait,
        );
        let hooks = Hooks::new(
            &cfg.scope,
            HookSettings::effective(&cfg.postgresql, &dynamic),
        );
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
            keeper: Arc::default(),
            last_cluster: None,
            last_dcs_ok: None,
            dcs_last_seen: 0,
            state: State::Stopped,
            role: Role::Uninitialized,
            last_pg: None,
            sysid: None,
            rewind: Rewind::default(),
            start_not_before: None,
            clone_not_before: None,
            reload_requested: false,
            sync_duty: SyncDuty::default(),
            written: None,
            slot_retain: None,
            history_timeline: 0,
            run_again: false,
            logged_warnings: Vec::new(),
            commands: None,
            config_path: None,
            scheduled_restart: None,
            not_streaming_since: None,
            watchdog,
            guard: Guard::off(),
            hooks,
            pre_promote_released_at: None,
            stats: AgentStats::default(),
            on_reload: None,
            failsafe_posts: None,
            failsafe_reset_at: None,
            started_at: Instant::now(),
            skip_touch: false,
            failsafe_until: None,
        }
    }

    /// Opens watchdog devices with `opener` instead of the system's (tests).
    pub fn with_watchdog(mut self, opener: Arc<dyn WatchdogOpener>) -> Agent<D, P, Pg> {
        self.watchdog = Watchdog::new(
            opener,
            &self.cfg.watchdog,
            self.dynamic.ttl,
            self.dynamic.loop_wait,
        );
        self
    }

    /// Fences through `guard` (the binary starts the process; without this call there is no
    /// guard, as in unit tests and the simulation).
    pub fn with_guard(mut self, guard: Guard) -> Agent<D, P, Pg> {
        self.guard = guard;
        self
    }

    /// Reads the leader the REST API's `POST /failsafe` names (failsafe mode).
    pub fn with_failsafe(
        mut self,
        posts: watch::Receiver<Option<FailsafeLeader>>,
    ) -> Agent<D, P, Pg> {
        self.failsafe_posts = Some(posts);
        self
    }

    /// Connects the REST API's command channel and names the file a reload re-reads.
    pub fn with_commands(
        mut self,
        commands: mpsc::Receiver<Command>,
        config_path: Option<PathBuf>,
    ) -> Agent<D, P, Pg> {
        self.commands = Some(commands);
        self.config_path = config_path;
        self
    }

    /// Calls `f` with the new local configuration after every successful reload (`POST
    /// /reload`, SIGHUP): the binary applies the `log` section with it.
    pub fn on_reload(mut self, f: ReloadHook) -> Agent<D, P, Pg> {
        self.on_reload = Some(f);
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

    /// Runs cycles until `shutdown` is cancelled, then shuts down in order. The lease keeper
    /// (`keeper.rs`) runs alongside; shutdown stops its renewals.
    pub async fn run(&mut self, shutdown: CancellationToken) -> Result<Exit, AgentError> {
        let keeper = Arc::clone(&self.keeper).run(
            Arc::clone(&self.dcs),
            self.guard.clone(),
            self.watchdog.clone(),
        );
        // `biased`: branches ready at the same poll are taken in order, not at random, so that
        // a run on a paused clock replays the same way (the simulation's seeds); any order is
        // one a random pick could have made.
        tokio::select! {
            biased;
            exit = self.run_cycles(shutdown) => exit,
            never = keeper => match never {},
        }
    }

    async fn run_cycles(&mut self, shutdown: CancellationToken) -> Result<Exit, AgentError> {
        loop {
            self.keeper.busy();
            let started = Instant::now();
            let msg = match self.run_cycle().await {
                Ok(msg) => msg,
                Err(AgentError::Fatal(msg)) => {
                    error!("{msg}");
                    self.publish(started);
                    return Err(AgentError::Fatal(msg));
                }
            };
            self.stats.cycles += 1;
            self.stats.last_cycle = started.elapsed();
            if self.dynamic.pause {
                info!("PAUSE: {msg}");
            } else {
                info!("{msg}");
            }
            if self.reload_requested && self.task.is_none() {
                if self.pg.postmaster_pid().is_some() {
                    // The cycle rewrote the files without a change to reload for.
                    self.reload_pg().await;
                } else {
                    // The next start reads the files as they are now.
                    self.reload_requested = false;
                }
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
            let next_cycle = Instant::now() + loop_wait.saturating_sub(elapsed);
            let leader_is_me = self.last_renewal.is_some();
            self.keeper.idle();
            loop {
                let remaining = next_cycle.saturating_duration_since(Instant::now());
                // With nothing left of the wait (a cycle overran loop_wait, as every cycle does
                // while the DCS is down: a failed read costs retry_timeout) there is nothing to
                // wait for, only commands already waiting to take; the select below would find
                // its zero-timeout watch ready first and never let one through, not even the
                // reload that brings new etcd certificates.
                let command = if remaining.is_zero() {
                    self.commands.as_mut().and_then(|rx| rx.try_recv().ok())
                } else {
                    // `biased`: see `run`.
                    tokio::select! {
                        biased;
                        _ = shutdown.cancelled() => None,
                        _ = self.dcs.watch(remaining, leader_is_me) => None,
                        _ = self.task_done.notified() => None,
                        c = recv(&mut self.commands) => c,
                    }
                };
                match command {
                    // A reload is applied by the next regular cycle, as Patroni's SIGHUP is:
                    // tools that sample pg_conf_load_time() after asking (pglift) must see it
                    // change, and the wait for the next cycle goes on.
                    Some(Command::Reload) if !shutdown.is_cancelled() => self.reload(),
                    Some(c) if !shutdown.is_cancelled() => {
                        self.keeper.busy();
                        self.handle_command(c).await;
                        break;
                    }
                    _ => break,
                }
            }
            if shutdown.is_cancelled() {
                break;
            }
        }
        self.shutdown().await;
        Ok(Exit::Shutdown)
    }

    /// Patroni's step 13: the first cycle that finds PostgreSQL running with nothing in
    /// progress fires `on_start` unless a callback was already fired (the agent joined a
    /// running PostgreSQL).
    fn first_on_start(&mut self, obs: &Observation) {
        let PgView::Running { in_recovery, .. } = obs.pg else {
            return;
        };
        if self.task.is_some() || self.hooks.called() {
            return;
        }
        let role = match self.role {
            Role::Uninitialized if in_recovery => Role::Replica,
            Role::Uninitialized => Role::Primary,
            role => role,
        };
        self.hooks.fire(CallbackAction::OnStart, role);
    }

    /// One HA cycle: observe, decide, act. Returns the sentence to log.
    async fn run_cycle(&mut self) -> Result<String, AgentError> {
        // What the lease keeper did since the last cycle.
        self.stats.leader_renewals += self.keeper.take_renewals();
        if self.last_renewal.is_some() {
            self.last_renewal = self.keeper.renewed_at().max(self.last_renewal);
        }
        self.skip_touch = false;
        // Observe the DCS.
        let cluster = match self.dcs.cluster().await {
            Ok(c) => {
                self.last_dcs_ok = Some(Instant::now());
                self.dcs_last_seen = epoch_secs();
                Some(c)
            }
            Err(e) => {
                error!("Error communicating with DCS: {e}");
                self.stats.dcs_read_errors += 1;
                None
            }
        };
        if let Some(c) = &cluster {
            self.apply_dynamic(c);
            self.recover_ssn(c);
            self.last_cluster = Some(Arc::new(c.clone()));
            if c.leader_name() != Some(self.cfg.name.as_str()) {
                self.lease_released();
                self.failsafe_until = None;
            }
        }
        // Failsafe mode: the leader of a recent `POST /failsafe` holds the expired key.
        let cluster = cluster.map(|c| self.with_failsafe_leader(c));

        // The hooks follow the local section (reloads) over `/config`'s `postgresql` section.
        self.hooks
            .configure(HookSettings::effective(&self.cfg.postgresql, &self.dynamic));

        // The watchdog follows the local section and the key's timing; maintenance mode
        // closes it (Patroni: "paused -> disable watchdog") and disarms the guard: no automatic
        // action, fencing included.
        self.watchdog
            .configure(&self.cfg.watchdog, self.dynamic.ttl, self.dynamic.loop_wait);
        if self.dynamic.pause {
            self.disable_fencing();
        }
        self.guard.retry();

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
            // A crashed primary with `primary_start_timeout: 0` hands over only if someone
            // can take over.
            (Some(c), PgView::Stopped { .. })
                if self.dynamic.primary_start_timeout.is_zero()
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
            action: self.task.as_ref().map(Task::observed_kind),
            // Patroni's `is_paused()`: the last `/config` seen, so maintenance mode holds while
            // the DCS is unreachable (a paused primary is never demoted offline).
            paused: self.dynamic.pause,
            can_failover: self.cfg.tags.can_failover(),
            failover_priority: self.cfg.tags.failover_priority,
            can_bootstrap: true,
            can_clone_without_leader: self
                .cfg
                .postgresql
                .create_replica_methods
                .iter()
                .any(ReplicaMethod::works_without_leader),
            maximum_lag_on_failover: self.dynamic.maximum_lag_on_failover,
            // Patroni checks timelines only outside standby clusters.
            check_timeline: self.dynamic.check_timeline && self.dynamic.standby_cluster.is_none(),
            use_pg_rewind: self
                .cfg
                .postgresql
                .use_pg_rewind
                .unwrap_or(self.dynamic.use_pg_rewind),
            remove_data_directory_on_rewind_failure: self
                .cfg
                .postgresql
                .remove_data_directory_on_rewind_failure,
            rewind_failed: self.rewind.failed,
            rewind_check: self.rewind.check,
            peers,
            self_demoted: self.rewind.check || self.rewind.done,
            sync: self.sync_params(),
            watchdog_usable: self.watchdog.is_healthy(),
            guard_usable: self.guard.is_healthy(),
            primary_start_timeout: self.dynamic.primary_start_timeout,
            pre_promote_backoff: self
                .pre_promote_released_at
                .is_some_and(|t| t.elapsed() < self.dynamic.ttl),
            standby_cluster: self.dynamic.standby_cluster.is_some(),
            failsafe_mode: self.dynamic.failsafe_mode,
            started_within_ttl: self.started_at.elapsed() < self.dynamic.ttl,
            failsafe: cluster
                .as_ref()
                .or(self.last_cluster.as_deref())
                .and_then(|c| c.failsafe.clone()),
        };
        if obs.action == Some(ActionKind::BootstrapRecovery) {
            self.state = State::StartingAfterCustomBootstrap;
        }
        let decision = decide(&obs);
        let msg = self.act(decision, &obs).await?;
        self.failsafe_replica_slots(&obs).await;
        self.first_on_start(&obs);
        self.disarm_when_not_leading(&obs);
        if obs.cluster.as_ref().is_some_and(|c| !c.is_unlocked()) {
            self.evaluate_scheduled_restart().await;
        }

        // Publish: member key every cycle (the backend skips unchanged values).
        if obs.cluster.is_some() && !self.skip_touch {
            self.touch_member(obs.cluster.as_ref()).await;
        }
        Ok(msg)
    }
}
