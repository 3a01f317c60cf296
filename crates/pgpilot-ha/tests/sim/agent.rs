//! The simulated agent: `Agent::run_cycle` of `src/agent.rs`, step by step, over the real
//! `MemoryDcs` (through the counting layer of `counting`) and the simulated PostgreSQL.
//!
//! Observe → [`decide`] → act, as the real agent does, with the same state fields
//! (`last_renewal`, `rewind_check`, `ssn`, ...). Differences, all forced by the simulation:
//! a cycle runs at one virtual instant (nothing else happens while it acts), except that a DCS
//! read that fails costs `retry_timeout` before the cycle goes on, and a freeze may cut a cycle
//! between deciding and acting. Loops that wait for other members inside one action (the
//! graceful demotion waiting for a candidate to receive the shutdown checkpoint, then for the new
//! leader) are evaluated once: the fast shutdown delivers the checkpoint to connected standbys
//! synchronously, which is what the waiting is for.

use std::time::Duration;

use super::counting::CountingDcs;
use pgpilot_config::DynamicConfig;
use pgpilot_dcs::{Cluster, Dcs, MemberData, Status};
use pgpilot_ha::decide::{after_acquire, start_after_renewal, valid_sysid, AfterAcquire};
use pgpilot_ha::sync::{self, Ssn, Standby, SyncKey, SyncParams, SyncStep, SyncView};
use pgpilot_ha::{
    decide, manual_failover_from_leader, ActionKind, DataState, Decision, ManualFailover,
    Observation, PgView,
};
use pgpilot_types::PeerStatus;
use tokio::time::Instant;

use super::pg::{Conf, Control, Data, Proc, Rec};
use super::{ready, Bug, World};

/// The monitoring query's answer (`PgState` of the real agent), taken at observe time.
#[derive(Clone, Debug)]
pub struct PgSnap {
    pub in_recovery: bool,
    pub timeline: u32,
    pub wal_position: u64,
    pub streaming: bool,
    /// `pg_stat_replication`: (application_name, flush LSN, sync_state).
    pub replication: Vec<(String, u64, String)>,
}

#[derive(Clone, Debug)]
pub enum TaskOp {
    Bootstrap,
    Clone { from: String, conf: Conf },
    Rewind { from: String },
    Start,
}

#[derive(Debug)]
pub enum TaskError {
    NotReady(String),
    Failed(String),
}

pub struct Task {
    pub kind: ActionKind,
    pub op: TaskOp,
    pub done_at: Instant,
    /// Set when the background work ended (the real agent's `JoinHandle::is_finished`).
    pub result: Option<Result<(), TaskError>>,
}

/// What an agent does when it next gets the CPU.
pub enum Pending {
    /// The DCS read failed after `retry_timeout`: go on with the cycle without a cluster.
    AfterDcsError,
    /// Decided before a freeze: act on the stale observation.
    Act(Box<Observation>, Decision),
}

pub struct Agent {
    pub dcs: CountingDcs,
    pub dynamic: DynamicConfig,
    pub last_renewal: Option<Instant>,
    pub state: String,
    pub role: String,
    pub last_pg: Option<PgSnap>,
    pub sysid: Option<String>,
    pub rewind_failed: bool,
    pub rewind_done: bool,
    pub rewind_check: bool,
    pub written: Option<Conf>,
    pub ssn: Ssn,
    pub ssn_set_at: Option<Instant>,
    pub ssn_lsn: Option<u64>,
    /// `Agent::ssn_known`.
    pub ssn_known: bool,
    pub task: Option<Task>,
    pub run_again: bool,
    /// What `GET /patroni` answers: the snapshot published at the end of the last cycle.
    pub published: Option<PgSnap>,
    pub next_run: Instant,
    pub pending: Option<(Instant, Pending)>,
    /// `Watchdog::activate` was called (the real `WatchdogState::active`): renewals ping the
    /// device. A restarted agent starts without it, even if its predecessor's device counts.
    pub watchdog_active: bool,
}

impl Agent {
    pub fn new(dcs: CountingDcs, dynamic: DynamicConfig, now: Instant) -> Agent {
        Agent {
            dcs,
            dynamic,
            last_renewal: None,
            state: "stopped".into(),
            role: "uninitialized".into(),
            last_pg: None,
            sysid: None,
            rewind_failed: false,
            rewind_done: false,
            rewind_check: false,
            written: None,
            ssn: Ssn::empty(),
            ssn_set_at: None,
            ssn_lsn: None,
            ssn_known: false,
            task: None,
            run_again: false,
            published: None,
            next_run: now,
            pending: None,
            watchdog_active: false,
        }
    }

    pub fn sync_params(&self) -> SyncParams {
        SyncParams {
            mode: self.dynamic.synchronous_mode,
            strict: self.dynamic.synchronous_mode_strict,
            node_count: self.dynamic.synchronous_node_count,
            max_lag: self.dynamic.maximum_lag_on_syncnode,
        }
    }

    /// `Agent::desired`: in synchronous mode pgpilot owns ssn.
    fn desired(&self, standby: Option<Option<String>>) -> Conf {
        let ssn = if self.sync_params().active() {
            self.ssn.clone()
        } else {
            Ssn::empty()
        };
        Conf { standby, ssn }
    }

    fn set_ssn(&mut self, ssn: Ssn, now: Instant) {
        self.ssn = ssn;
        self.ssn_set_at = Some(now);
        self.ssn_lsn = None;
    }
}

macro_rules! trace {
    ($w:expr, $($arg:tt)*) => {
        if $w.tracing {
            let line = format!($($arg)*);
            $w.trace_line(line);
        }
    };
}
pub(crate) use trace;

/// A DCS call of member `i`: fails while it is partitioned (the store itself fails while
/// unavailable).
macro_rules! call {
    ($w:expr, $i:expr, |$d:ident| $body:expr) => {{
        if $w.members[$i].partitioned {
            Err(pgpilot_dcs::DcsError::Unavailable("partitioned".into()))
        } else {
            $w.invalidate();
            let $d = &$w.members[$i].agent.as_ref().expect("agent").dcs;
            ready($body)
        }
    }};
}

impl World {
    fn agent(&mut self, i: usize) -> &mut Agent {
        self.members[i].agent.as_mut().expect("agent running")
    }

    /// Runs what member `i`'s agent has to do now: a whole cycle, or the rest of one.
    pub fn run_agent(&mut self, i: usize) {
        let now = self.now();
        let pending = self.agent(i).pending.take();
        match pending {
            Some((_, Pending::Act(obs, decision))) => {
                self.note_stale_renewal(i, &decision);
                let msg = self.act(i, decision.clone(), &obs);
                self.end_cycle(i, &obs, &decision, msg, false);
            }
            Some((_, Pending::AfterDcsError)) => self.cycle_rest(i, None, true),
            None => {
                let cluster = call!(self, i, |d| d.cluster()).ok();
                let Some(c) = cluster else {
                    // `cluster()` blocks for retry_timeout before it fails.
                    let rt = self.agent(i).dynamic.retry_timeout;
                    self.agent(i).pending = Some((now + rt, Pending::AfterDcsError));
                    return;
                };
                self.cycle_rest(i, Some(c), true);
            }
        }
    }

    /// A thawed agent renewing the leader key on a decision taken before its freeze: if the key
    /// is gone meanwhile, `update_leader` re-creates it (both backends do, as Patroni's etcd3
    /// does) without any race. If the agent had activated its watchdog this is a violation
    /// (invariant 4): every renewal pinged the device, which fires `safety_margin` before the
    /// key can expire, so the member should have been reset. Otherwise (no watchdog in the
    /// run, or a key holder whose watchdog is not active: module docs, "The watchdog gap") what
    /// it costs is the watchdog gap's, counted apart (`gap_mark`).
    fn note_stale_renewal(&mut self, i: usize, decision: &Decision) {
        if !matches!(
            decision,
            Decision::RenewLeader | Decision::UpdateLockDuring { .. }
        ) || self.dcs_down()
        {
            return;
        }
        let me = self.members[i].name.clone();
        let holder = self.leader_holder();
        if holder.is_none() {
            // `update_leader` will re-create the key: leadership taken back without a race.
            trace!(
                self,
                "  {me}: thawed with a stale decision to renew the leader key, which is gone: it re-creates it"
            );
            self.stats.stale_renewals += 1;
            let watched = self.watchdog_timeout(i).is_some() && self.agent(i).watchdog_active;
            if watched {
                let msg = format!(
                    "invariant 4: {me}, thawed, renews the leader key on a decision taken before its freeze although the key expired meanwhile (its watchdog, active, should have reset it first; armed until {:?})",
                    self.members[i].watchdog.map(|t| t - self.start)
                );
                self.violate(msg);
            } else {
                self.stats.unwatched_stale_renewals +=
                    u64::from(self.watchdog_timeout(i).is_some());
                self.mark_gap();
            }
        }
    }

    /// Observes and decides; acts unless `act_now` is false (a freeze cuts the cycle here).
    pub fn cycle_rest(&mut self, i: usize, cluster: Option<Cluster>, act_now: bool) {
        let me = self.members[i].name.clone();
        let now = self.now();
        if let Some(c) = &cluster {
            let a = self.agent(i);
            apply_dynamic(a, c);
            // `Agent::recover_ssn`.
            if !a.ssn_known {
                a.ssn_known = true;
                let params = a.sync_params();
                if let Some(key) = sync::SyncKey::of(c.sync.as_ref(), &me) {
                    if params.active() {
                        a.set_ssn(sync::ssn_for_key(&params, Some(&key)), now);
                    }
                }
            }
            if c.leader_name() != Some(me.as_str()) {
                a.last_renewal = None;
            }
        }
        if let Some(msg) = self.reap_task(i, cluster.as_ref()) {
            if let Some(a) = self.members[i].agent.as_mut() {
                a.published = a.last_pg.clone();
            }
            let line = if self.tracing {
                format!("(reap) {msg}")
            } else {
                String::new()
            };
            self.finish_cycle(i, &line, true);
            return;
        }
        let obs = self.observe(i, cluster, now);
        let decision = decide(&obs);
        if !act_now {
            trace!(self, "  {me} decided {decision:?} and froze before acting");
            let until = self.members[i].frozen_until.unwrap_or(now);
            self.agent(i).pending = Some((until, Pending::Act(Box::new(obs), decision)));
            return;
        }
        let msg = self.act(i, decision.clone(), &obs);
        self.end_cycle(i, &obs, &decision, msg, true);
    }

    fn end_cycle(&mut self, i: usize, obs: &Observation, d: &Decision, msg: String, full: bool) {
        if self.members[i].agent.is_none() {
            // The agent exited (fatal).
            return;
        }
        if obs.cluster.is_some() {
            self.touch_member(i);
        }
        let a = self.agent(i);
        a.published = a.last_pg.clone();
        let line = if self.tracing {
            format!("{d:?} -> {msg}")
        } else {
            String::new()
        };
        self.finish_cycle(i, &line, full);
    }

    /// `Agent::renewed`: a successful renewal or acquisition sent at `now` arms the guard until
    /// `now + ttl - margin` (the simulated DCS answers at once).
    ///
    /// It pings the watchdog too (`Watchdog::keepalive`), if this agent activated it.
    fn renewed(&mut self, i: usize, now: Instant) {
        let ttl = self.agent(i).dynamic.ttl;
        self.agent(i).last_renewal = Some(now);
        self.members[i].guard = Some(now + ttl - pgpilot_ha::guard::margin(ttl));
        if let Some(t) = self.watchdog_timeout(i) {
            if self.agent(i).watchdog_active && self.members[i].watchdog.is_some() {
                self.members[i].watchdog = Some(now + t);
            }
        }
    }

    /// The timeout this agent arms its watchdog with, `None` if it arms none (`WatchdogSim`).
    pub fn watchdog_timeout(&self, i: usize) -> Option<Duration> {
        let a = self.members[i].agent.as_ref()?;
        self.cfg
            .watchdog
            .timeout(a.dynamic.ttl, a.dynamic.loop_wait)
    }

    /// `Agent::arm_watchdog` / `Watchdog::activate`, right after a successful acquisition or
    /// renewal (or bootstrap), before this member runs a primary: the device is opened (or
    /// taken over from a dead predecessor) with the timeout set, which restarts its timer.
    fn activate_watchdog(&mut self, i: usize, now: Instant) {
        if let Some(t) = self.watchdog_timeout(i) {
            self.agent(i).watchdog_active = true;
            self.members[i].watchdog = Some(now + t);
        }
    }

    fn finish_cycle(&mut self, i: usize, line: &str, full: bool) {
        if self.members[i].agent.is_none() {
            return;
        }
        // `Agent::disarm_when_not_leading` (and the disarm after a demotion's stop): a member
        // without the key whose PostgreSQL is stopped or in recovery may fence no more.
        // The watchdog is closed at the same points (`Agent::disable_fencing`).
        if self.agent(i).last_renewal.is_none() && !self.members[i].pg.writable() {
            self.members[i].guard = None;
            self.members[i].watchdog = None;
            self.agent(i).watchdog_active = false;
        }
        let now = self.now();
        let name = self.members[i].name.clone();
        trace!(self, "  {name}: {line}");
        if full {
            self.members[i].gap = false;
        }
        let a = self.agent(i);
        a.next_run = if std::mem::take(&mut a.run_again) {
            now
        } else {
            now + a.dynamic.loop_wait
        };
    }

    fn pg_snap(&self, i: usize) -> Option<PgSnap> {
        let pg = &self.members[i].pg;
        let d = pg.data.as_ref()?;
        if !pg.running() {
            return None;
        }
        let replication = if pg.in_recovery {
            Vec::new()
        } else {
            (0..self.members.len())
                .filter(|&j| self.connected(j, i))
                .map(|j| {
                    let name = self.members[j].name.clone();
                    let listed = pg.live_ssn.names.contains(&name);
                    let state = match (listed, self.quorum_mode()) {
                        (true, true) => "quorum",
                        (true, false) => "sync",
                        _ => "async",
                    };
                    let lsn = self.members[j].pg.data.as_ref().map_or(0, Data::lsn);
                    (name, lsn, state.to_string())
                })
                .collect()
        };
        Some(PgSnap {
            in_recovery: pg.in_recovery,
            timeline: d.timeline(),
            wal_position: d.lsn(),
            streaming: pg.in_recovery && self.upstream_of(i).is_some(),
            replication,
        })
    }

    fn quorum_mode(&self) -> bool {
        self.cfg.sync_mode == pgpilot_config::SyncMode::Quorum
    }

    fn observe(&mut self, i: usize, cluster: Option<Cluster>, now: Instant) -> Observation {
        let me = self.members[i].name.clone();
        let data = match &self.members[i].pg.data {
            None => DataState::Empty,
            Some(d) => {
                let sysid = d.sysid.clone();
                let a = self.agent(i);
                DataState::Initialized {
                    sysid: a.sysid.get_or_insert(sysid).clone(),
                }
            }
        };
        let pg = if !matches!(data, DataState::Initialized { .. }) {
            self.agent(i).last_pg = None;
            PgView::Stopped {
                was_primary: false,
                clean: true,
            }
        } else if self.members[i].pg.proc != Proc::Stopped {
            match self.pg_snap(i) {
                Some(s) => {
                    let view = PgView::Running {
                        in_recovery: s.in_recovery,
                        timeline: s.timeline,
                        wal_position: s.wal_position,
                        streaming: s.streaming,
                    };
                    let a = self.agent(i);
                    if a.task.is_none() {
                        a.state = "running".into();
                    }
                    a.rewind_done = false;
                    a.last_pg = Some(s);
                    view
                }
                None => {
                    self.agent(i).last_pg = None;
                    PgView::Unresponsive
                }
            }
        } else {
            let d = self.members[i].pg.data.as_ref().expect("data");
            let control = d.control;
            let standby_signal = d.conf.standby.is_some();
            let a = self.agent(i);
            a.last_pg = None;
            let was_primary = matches!(control, Control::InProduction | Control::ShutDown)
                && !standby_signal
                && !a.rewind_done;
            if a.task.is_none() && a.state == "running" {
                a.state = "crashed".into();
            } else if a.task.is_none() && a.state != "crashed" {
                a.state = "stopped".into();
            }
            PgView::Stopped {
                was_primary,
                clean: matches!(control, Control::ShutDown | Control::ShutDownInRecovery),
            }
        };
        let a = self.members[i].agent.as_ref().expect("agent");
        let no_task = a.task.is_none();
        let peers = match (&cluster, &pg) {
            (
                Some(c),
                PgView::Running {
                    in_recovery: true, ..
                },
            ) if c.is_unlocked() && no_task => self.fetch_peers(i, c),
            (
                Some(c),
                PgView::Running {
                    in_recovery: false, ..
                },
            ) if c.failover.is_some() && c.leader_name() == Some(me.as_str()) && no_task => {
                self.fetch_peers(i, c)
            }
            _ => Vec::new(),
        };
        let _ = now;
        let a = self.members[i].agent.as_ref().expect("agent");
        Observation {
            me,
            paused: a.dynamic.pause,
            cluster,
            data,
            pg,
            action: a.task.as_ref().map(|t| t.kind),
            can_failover: true,
            failover_priority: 1,
            can_bootstrap: true,
            can_clone_without_leader: false,
            maximum_lag_on_failover: a.dynamic.maximum_lag_on_failover,
            check_timeline: a.dynamic.check_timeline,
            use_pg_rewind: a.dynamic.use_pg_rewind,
            remove_data_directory_on_rewind_failure: false,
            rewind_failed: a.rewind_failed,
            rewind_check: a.rewind_check,
            peers,
            self_demoted: a.rewind_check || a.rewind_done,
            sync: a.sync_params(),
            // Not modelled (see the module docs of `sim`): no member is refused for it.
            watchdog_usable: true,
            // Nor is the guard.
            guard_usable: true,
            // The peers are not asked after a crash, so a zero timeout never hands over here.
            primary_start_timeout: a.dynamic.primary_start_timeout,
            // No hooks are simulated: `pre_promote` never fails.
            pre_promote_backoff: false,
            // Standby clusters are not simulated (see the module docs of `sim`).
            standby_cluster: false,
            // Failsafe mode is not modelled (module docs).
            failsafe_mode: false,
            failsafe: None,
            started_within_ttl: false,
        }
    }

    /// `GET /patroni` of every other member listed in the DCS: their last published snapshot,
    /// if their agent answers (running, not frozen, reachable).
    fn fetch_peers(&self, i: usize, c: &Cluster) -> Vec<PeerStatus> {
        let mut peers = Vec::new();
        for m in &c.members {
            let Some(j) = self.index(&m.name) else {
                continue;
            };
            if j == i || !self.reachable(i, j) {
                continue;
            }
            let Some(a) = &self.members[j].agent else {
                continue;
            };
            if self.members[j].frozen_until.is_some() {
                continue;
            }
            let Some(s) = &a.published else { continue };
            peers.push(PeerStatus {
                name: m.name.clone(),
                is_primary: !s.in_recovery,
                wal_position: s.wal_position,
                timeline: Some(s.timeline),
                nofailover: false,
                failover_priority: 1,
                watchdog_failed: false,
                raw: serde_json::Value::Null,
            });
        }
        peers
    }

    fn reap_task(&mut self, i: usize, cluster: Option<&Cluster>) -> Option<String> {
        let me = self.members[i].name.clone();
        let a = self.agent(i);
        if a.task.as_ref().is_none_or(|t| t.result.is_none()) {
            return None;
        }
        let mut task = a.task.take().expect("task");
        let result = task.result.take().expect("result");
        match (task.kind, result) {
            (ActionKind::Bootstrap, Ok(())) => return Some(self.finish_bootstrap(i)),
            (ActionKind::Bootstrap, Err(_)) => {
                self.fatal(i, "Failed to bootstrap cluster");
                return Some("Failed to bootstrap cluster".into());
            }
            (ActionKind::Clone, Err(_)) => {
                let id = self.next_id();
                let m = &mut self.members[i];
                m.pg.stop(false, id);
                m.pg.data = None;
                let a = self.agent(i);
                a.state = "creating replica".into();
                a.sysid = None;
                a.written = None;
            }
            (ActionKind::Rewind, Err(TaskError::NotReady(why))) => {
                trace!(self, "  {me}: not running pg_rewind yet: {why}");
            }
            (ActionKind::Rewind, Err(TaskError::Failed(why))) => {
                trace!(self, "  {me}: pg_rewind failed: {why}");
                self.agent(i).rewind_failed = true;
            }
            (ActionKind::Rewind, Ok(())) => {
                let a = self.agent(i);
                a.rewind_failed = false;
                a.rewind_done = true;
                a.rewind_check = false;
                a.written = None;
            }
            (kind, Err(TaskError::Failed(why) | TaskError::NotReady(why))) => {
                trace!(self, "  {me}: {} failed: {why}", kind.describe());
                if matches!(kind, ActionKind::Start | ActionKind::Restart) {
                    self.agent(i).state = "start failed".into();
                    if cluster.and_then(Cluster::leader_name) == Some(me.as_str()) {
                        let id = self.next_id();
                        self.members[i].pg.stop(false, id);
                        let a = self.agent(i);
                        a.role = "demoted".into();
                        a.last_renewal = None;
                        let _ = call!(self, i, |d| d.delete_leader());
                        return Some(
                            "removed leader key after trying and failing to start postgres".into(),
                        );
                    }
                }
            }
            (_, Ok(())) => {}
        }
        None
    }

    fn finish_bootstrap(&mut self, i: usize) -> String {
        let sysid = self.members[i]
            .pg
            .data
            .as_ref()
            .map(|d| d.sysid.clone())
            .unwrap_or_default();
        self.agent(i).sysid = Some(sysid.clone());
        let config = self.cfg.config_doc();
        let res = call!(self, i, |d| d.initialize(false, &sysid))
            .and_then(|_| call!(self, i, |d| d.set_config(&config, None)))
            .and_then(|_| call!(self, i, |d| d.take_leader()));
        if res.is_err() {
            // The real agent exits here and leaves PostgreSQL running.
            self.fatal(
                i,
                "Failed to bootstrap cluster: could not publish it in DCS",
            );
            return "Failed to bootstrap cluster: could not publish it in DCS".into();
        }
        let now = self.now();
        self.renewed(i, now);
        // The new primary is published only with its watchdog armed.
        self.activate_watchdog(i, now);
        let a = self.agent(i);
        a.role = "primary".into();
        a.state = "running".into();
        a.run_again = true;
        "initialized a new cluster".into()
    }

    fn spawn_task(&mut self, i: usize, kind: ActionKind, op: TaskOp) {
        let now = self.now();
        let dur = match op {
            TaskOp::Bootstrap => 3000,
            TaskOp::Clone { .. } => 2000 + self.rng.below(8000),
            TaskOp::Rewind { .. } => 500 + self.rng.below(3000),
            TaskOp::Start => 300 + self.rng.below(3000),
        };
        if matches!(op, TaskOp::Start) {
            self.members[i].pg.begin_start();
        }
        self.agent(i).task = Some(Task {
            kind,
            op,
            done_at: now + Duration::from_millis(dur),
            result: None,
        });
    }

    /// `ensure_config`: write when different from what we last wrote; returns whether a file
    /// changed on disk.
    fn ensure_config(&mut self, i: usize, desired: Conf) -> bool {
        let a = self.agent(i);
        if a.written.as_ref() == Some(&desired) {
            return false;
        }
        a.written = Some(desired.clone());
        self.members[i].pg.write_conf(&desired)
    }

    fn act(&mut self, i: usize, decision: Decision, obs: &Observation) -> String {
        let now = self.now();
        let cluster = obs.cluster.as_ref();
        match decision {
            Decision::NoAction { msg } => msg,
            Decision::Fatal { msg } => {
                self.fatal(i, &msg);
                msg
            }
            Decision::DemoteOffline => {
                self.demote(i, true);
                "demoted self because DCS is not accessible and I was a leader".into()
            }
            // The simulation runs with failsafe mode off (not modelled: module docs).
            Decision::FailsafeRound { .. } => panic!("failsafe round without failsafe mode"),
            Decision::UpdateLockDuring { action } => {
                match call!(self, i, |d| d.update_leader(None)) {
                    Ok(true) => {
                        self.renewed(i, now);
                        format!("updated leader lock during {}", action.describe())
                    }
                    _ => {
                        self.agent(i).last_renewal = None;
                        format!("{} in progress", action.describe())
                    }
                }
            }
            Decision::DemoteImmediate { msg } => {
                self.demote(i, false);
                msg
            }
            Decision::RaceStandbyBootstrap
            | Decision::StartFollowingRemote { .. }
            | Decision::RenewStandbyLeader
            | Decision::DemoteCluster => {
                unreachable!("standby clusters are not simulated: {decision:?}")
            }
            Decision::RaceBootstrap => match call!(self, i, |d| d.initialize(true, "")) {
                Ok(true) => {
                    let a = self.agent(i);
                    a.state = "initializing new cluster".into();
                    let desired = a.desired(None);
                    a.written = Some(desired);
                    self.spawn_task(i, ActionKind::Bootstrap, TaskOp::Bootstrap);
                    "trying to bootstrap a new cluster".into()
                }
                Ok(false) => "failed to acquire initialize lock".into(),
                Err(e) => format!("failed to acquire initialize lock: {e}"),
            },
            Decision::Clone { from, msg } => {
                let leader = cluster.and_then(Cluster::leader_name).map(str::to_string);
                let a = self.agent(i);
                a.state = "creating replica".into();
                a.role = "replica".into();
                let conf = a.desired(Some(leader));
                a.written = Some(conf.clone());
                a.sysid = None;
                let id = self.next_id();
                self.members[i].pg.stop(false, id);
                self.spawn_task(i, ActionKind::Clone, TaskOp::Clone { from, conf });
                msg
            }
            // The simulated members configure no replica creation method without a leader.
            Decision::CloneWithoutLeader { msg } => msg,
            Decision::AdoptInitialize { sysid } => {
                let create_new = cluster.is_none_or(|c| c.initialize.is_none());
                if let Err(e) = call!(self, i, |d| d.initialize(create_new, &sysid)) {
                    return format!("failed to write initialize key: {e}");
                }
                self.agent(i).run_again = true;
                format!("adopting the existing data directory: initialize key set to {sysid}")
            }
            Decision::ReleaseLock { msg } => {
                let _ = call!(self, i, |d| d.delete_leader());
                self.agent(i).last_renewal = None;
                msg
            }
            Decision::FailOverAfterCrash => {
                let _ = call!(self, i, |d| d.delete_leader());
                let a = self.agent(i);
                a.last_renewal = None;
                a.rewind_check = true;
                "stopped PostgreSQL to fail over after a crash".into()
            }
            Decision::StartPostgres {
                as_primary,
                follow,
                msg,
                renew_lock_first,
            } => {
                let (as_primary, msg) = if renew_lock_first {
                    let renewed = matches!(call!(self, i, |d| d.update_leader(None)), Ok(true));
                    if renewed {
                        self.renewed(i, now);
                    } else {
                        self.agent(i).last_renewal = None;
                    }
                    start_after_renewal(as_primary, msg, renewed)
                } else {
                    (as_primary, msg)
                };
                let standby = if as_primary { None } else { Some(follow) };
                let a = self.agent(i);
                a.role = if as_primary { "primary" } else { "replica" }.into();
                let desired = a.desired(standby);
                self.ensure_config(i, desired);
                self.agent(i).state = "starting".into();
                self.spawn_task(i, ActionKind::Start, TaskOp::Start);
                msg
            }
            Decision::Rewind { leader } => {
                self.spawn_task(
                    i,
                    ActionKind::Rewind,
                    TaskOp::Rewind {
                        from: leader.clone(),
                    },
                );
                format!("running pg_rewind from {leader}")
            }
            Decision::RemoveDataDirectory { msg } => {
                let id = self.next_id();
                self.members[i].pg.stop(false, id);
                self.members[i].pg.data = None;
                let a = self.agent(i);
                a.sysid = None;
                a.written = None;
                a.rewind_failed = false;
                a.run_again = true;
                msg
            }
            Decision::AcquireLeader => self.acquire_leader(i, obs),
            Decision::NotHealthiest {
                reason,
                demote,
                msg,
            } => {
                if demote {
                    self.demote(i, false);
                    return msg;
                }
                format!("{msg} ({reason})")
            }
            Decision::RenewLeader => self.renew_leader(i, obs),
            Decision::Follow { leader } => self.follow(i, obs, &leader),
        }
    }

    /// `Agent::demote`: fast = offline (restart read-only without upstream), else immediate.
    fn demote(&mut self, i: usize, fast: bool) {
        let id = self.next_id();
        if fast {
            self.stop_fast(i, id);
        } else {
            self.members[i].pg.stop(false, id);
        }
        let a = self.agent(i);
        a.last_renewal = None;
        a.rewind_check = true;
        a.role = "demoted".into();
        a.state = "stopped".into();
        a.last_pg = None;
        a.published = None;
        if fast {
            let desired = a.desired(Some(None));
            self.ensure_config(i, desired);
            let a = self.agent(i);
            a.role = "replica".into();
            a.state = "starting".into();
            self.spawn_task(i, ActionKind::Start, TaskOp::Start);
        }
        self.agent(i).run_again = true;
    }

    fn acquire_leader(&mut self, i: usize, obs: &Observation) -> String {
        let now = self.now();
        let outcome = call!(self, i, |d| d.attempt_to_acquire_leader()).map_err(|e| e.to_string());
        if outcome == Ok(true) {
            self.renewed(i, now);
            if let Some(f) = obs.cluster.as_ref().and_then(|c| c.failover.as_ref()) {
                let _ = call!(self, i, |d| d.set_failover("{}", Some(f.version)));
            }
        }
        match after_acquire(outcome, obs) {
            AfterAcquire::Promote => {
                self.activate_watchdog(i, now);
                if let Err(msg) = self.promote(i, obs) {
                    return msg;
                }
                "promoted self to leader by acquiring session lock".into()
            }
            AfterAcquire::StandbyLeader => unreachable!("standby clusters are not simulated"),
            AfterAcquire::Lead => {
                self.activate_watchdog(i, now);
                self.agent(i).role = "primary".into();
                "acquired session lock as a leader".into()
            }
            AfterAcquire::Lost { demote, msg } => {
                if demote {
                    self.demote(i, false);
                }
                msg
            }
        }
    }

    /// `Agent::promote`: in synchronous mode `/sync` names us first (CAS) and ssn is in place
    /// before the first commit.
    fn promote(&mut self, i: usize, obs: &Observation) -> Result<(), String> {
        let me = self.members[i].name.clone();
        let params = self.agent(i).sync_params();
        let now = self.now();
        if params.active() {
            let current = obs.cluster.as_ref().and_then(|c| c.sync.as_ref());
            let (ssn, key) = sync::pre_promote(&params, &me, current);
            let doc = key.document(&me);
            let written = call!(self, i, |d| d.set_sync(&doc, current.map(|s| s.version)));
            if !matches!(written, Ok(true)) {
                return Err(
                    "Postponing promotion because synchronous replication state was updated by somebody else"
                        .into(),
                );
            }
            self.agent(i).set_ssn(ssn, now);
            let a = self.agent(i);
            if let Some(mut d) = a.written.clone() {
                d.ssn = a.desired(None).ssn;
                if self.ensure_config(i, d) {
                    self.members[i].pg.reload();
                }
            }
        }
        self.agent(i).role = "primary".into();
        let behind = self.behind_newest_timeline(i);
        let k4 = !obs.check_timeline && behind;
        // K5: the manual-failover race (`/failover` present, leader gone) skips the timeline check
        // that Patroni's `_is_healthiest_node` makes.
        let k5 = obs.check_timeline
            && behind
            && obs.cluster.as_ref().is_some_and(|c| c.failover.is_some());
        let id = self.next_id();
        if self.members[i].pg.promote(id).is_some() {
            // Known policy bugs (see `known_bug_*` in simulation.rs). K1: in quorum mode a named
            // switchover candidate that is not a `/sync` voter is promoted. K3: in quorum mode the
            // former `/sync` leader promotes again and `pre_promote` lowers the quorum.
            let sync_state = obs.cluster.as_ref().and_then(|c| c.sync.as_ref());
            let k1 = params.quorum()
                && obs.cluster.as_ref().is_some_and(|c| {
                    c.failover
                        .as_ref()
                        .is_some_and(|f| f.member.as_deref() == Some(me.as_str()))
                        && !c.sync.as_ref().is_some_and(|s| s.matches(&me, true))
                });
            let k3 = params.quorum()
                && sync_state.is_some_and(|s| s.leader.as_deref() == Some(me.as_str()));
            // K4: with check_timeline off, a member on an older timeline than the newest one in
            // the cluster (a diverged former primary that was not rewound) wins a race by LSN.
            // K6: in quorum mode a named switchover candidate that is a voter promotes without
            // any vote, after the leader released the key although the candidate never received
            // its shutdown checkpoint.
            let k6 = params.quorum()
                && obs.cluster.as_ref().is_some_and(|c| {
                    c.failover
                        .as_ref()
                        .is_some_and(|f| f.member.as_deref() == Some(me.as_str()))
                });
            let known = if k1 {
                Some("K1")
            } else if k3 {
                Some("K3")
            } else if k4 {
                Some("K4")
            } else if k5 {
                Some("K5")
            } else if k6 {
                Some("K6")
            } else {
                None
            };
            self.on_promote(i, known);
            let desired = self.agent(i).desired(None);
            self.ensure_config(i, desired);
            self.agent(i).run_again = true;
        }
        Ok(())
    }

    /// The leader's synchronous replication step: one change of ssn or `/sync` per cycle.
    fn process_sync(&mut self, i: usize, obs: &Observation) {
        let me = self.members[i].name.clone();
        let now = self.now();
        let Some(cluster) = obs.cluster.as_ref() else {
            return;
        };
        let params = self.agent(i).sync_params();
        if !params.active() {
            self.agent(i).ssn = Ssn::empty();
            if let Some(s) = &cluster.sync {
                let _ = call!(self, i, |d| d.delete_sync(Some(s.version)));
            }
            return;
        }
        let Some(pg) = self.agent(i).last_pg.clone() else {
            return;
        };
        let primary_lsn = pg.wal_position;
        let a = self.agent(i);
        if a.ssn_lsn.is_none()
            && a.ssn_set_at
                .is_none_or(|t| now - t >= Duration::from_millis(500))
        {
            a.ssn_lsn = Some(primary_lsn);
        }
        let standbys = standbys(cluster, &me, &pg);
        let key = SyncKey::of(cluster.sync.as_ref(), &me);
        let a = self.agent(i);
        let view = SyncView {
            params,
            ssn: &a.ssn,
            ssn_lsn: a.ssn_lsn.unwrap_or(u64::MAX),
            key: key.as_ref(),
            standbys: &standbys,
            primary_lsn,
        };
        let step = sync::next_step(&view);
        trace!(self, "  {me}: sync step {step:?}");
        match step {
            SyncStep::WriteKey(k) => {
                let version = cluster.sync.as_ref().map(|s| s.version);
                if let Ok(true) = call!(self, i, |d| d.set_sync(&k.document(&me), version)) {
                    self.agent(i).run_again = true;
                }
            }
            SyncStep::SetSsn(ssn) => {
                self.agent(i).set_ssn(ssn, now);
                let desired = self.agent(i).desired(None);
                if self.ensure_config(i, desired) {
                    self.members[i].pg.reload();
                }
                self.agent(i).run_again = true;
            }
            SyncStep::WaitConfirm | SyncStep::Nothing => {}
        }
    }

    fn renew_leader(&mut self, i: usize, obs: &Observation) -> String {
        let me = self.members[i].name.clone();
        let now = self.now();
        let leader = obs.cluster.as_ref().and_then(|c| c.leader.clone());
        match call!(self, i, |d| d.update_leader(leader.as_ref())) {
            Ok(true) => {
                self.renewed(i, now);
                self.activate_watchdog(i, now);
            }
            _ => {
                self.agent(i).last_renewal = None;
                if matches!(
                    obs.pg,
                    PgView::Running {
                        in_recovery: false,
                        ..
                    }
                ) {
                    if obs.paused {
                        return "continue to run as primary after failing to update leader lock in DCS".into();
                    }
                    self.demote(i, false);
                    return "demoted self because failed to update leader lock in DCS".into();
                }
                return "not promoting because failed to update leader lock in DCS".into();
            }
        }
        if let PgView::Running {
            in_recovery,
            wal_position,
            ..
        } = obs.pg
        {
            if in_recovery {
                if obs.paused {
                    return format!("no action. I am ({me}), the leader with the lock");
                }
                if let Err(msg) = self.promote(i, obs) {
                    return msg;
                }
                return "promoted self to leader because I had the session lock".into();
            }
            self.agent(i).role = "primary".into();
            let status = Status {
                optime: wal_position,
                ..Default::default()
            };
            let _ = call!(self, i, |d| d.write_status(&status));
            if let Some(c) = obs.cluster.as_ref() {
                self.publish_history(i, c);
                if c.initialize.as_deref().is_none_or(|v| !valid_sysid(v)) {
                    if let Some(sysid) = self.agent(i).sysid.clone() {
                        let _ = call!(self, i, |d| d.initialize(false, &sysid));
                    }
                }
            }
            let desired = self.agent(i).desired(None);
            if self.ensure_config(i, desired) {
                self.members[i].pg.reload();
            }
            self.process_sync(i, obs);
            if let Some(msg) = self.process_manual_failover(i, obs) {
                return msg;
            }
        }
        format!("no action. I am ({me}), the leader with the lock")
    }

    /// `Agent::publish_history`: `/history` follows our timeline (one line per switch, from
    /// the simulated WAL instead of the timeline history file).
    fn publish_history(&mut self, i: usize, c: &Cluster) {
        let Some(d) = self.members[i].pg.data.as_ref() else {
            return;
        };
        let tl = d.timeline();
        if c.timeline() == tl || (tl <= 1 && c.history.is_some()) {
            return;
        }
        let mut lines = Vec::new();
        for (k, w) in d.wal.windows(2).enumerate() {
            if w[1].tl != w[0].tl {
                lines.push(pgpilot_dcs::HistoryLine {
                    timeline: w[0].tl,
                    lsn: (k as u64 + 1) * super::pg::LSN_UNIT,
                    reason: "no recovery target specified".into(),
                    timestamp: None,
                    leader: None,
                });
            }
        }
        let doc = pgpilot_dcs::HistoryLine::lines_to_json(&lines);
        let _ = call!(self, i, |d| d.set_history(&doc));
    }

    fn process_manual_failover(&mut self, i: usize, obs: &Observation) -> Option<String> {
        let f = obs.cluster.as_ref()?.failover.clone()?;
        let loop_wait = self.agent(i).dynamic.loop_wait;
        // Scheduled switchovers are not generated by the simulation.
        match manual_failover_from_leader(obs, &f, None, loop_wait) {
            ManualFailover::Wait { .. } | ManualFailover::SleepUntilDue(_) => None,
            ManualFailover::Clear { msg } => {
                let _ = call!(self, i, |d| d.set_failover("{}", Some(f.version)));
                trace!(self, "  {}: {msg}; cleared /failover", self.members[i].name);
                None
            }
            ManualFailover::Demote { candidate } => {
                self.demote_graceful(i, obs, candidate.as_deref());
                Some("switchover: demoting myself".into())
            }
        }
    }

    /// `Agent::demote_graceful`, its two waiting loops evaluated once (module docs).
    fn demote_graceful(&mut self, i: usize, obs: &Observation, _candidate: Option<&str>) {
        let id = self.next_id();
        self.stop_fast(i, id);
        let checkpoint = self.members[i].pg.data.as_ref().map_or(0, Data::lsn);
        let a = self.agent(i);
        a.state = "stopped".into();
        a.role = "demoted".into();
        a.last_pg = None;
        a.rewind_check = true;
        a.published = None;
        // `Agent::demote_graceful`: a candidate must have received the shutdown checkpoint
        // (the real agent waits up to 5 s; here `stop_fast` already delivered it to every
        // connected standby); in synchronous mode the switchover is aborted otherwise.
        let caught_up = (0..self.members.len()).any(|j| {
            j != i
                && self.reachable(i, j)
                && _candidate.is_none_or(|c| c == self.members[j].name)
                && self.members[j].pg.data.as_ref().map_or(0, Data::lsn) >= checkpoint
        });
        if !caught_up && self.agent(i).sync_params().active() {
            if let Some(f) = obs.cluster.as_ref().and_then(|c| c.failover.clone()) {
                let _ = call!(self, i, |d| d.set_failover("{}", Some(f.version)));
            }
            let a = self.agent(i);
            a.rewind_check = false;
            a.run_again = true;
            return;
        }
        let status = Status {
            optime: checkpoint,
            ..Default::default()
        };
        let _ = call!(self, i, |d| d.write_status(&status));
        let _ = call!(self, i, |d| d.delete_leader());
        self.agent(i).last_renewal = None;
        let _ = obs;
        self.touch_member(i);
        self.agent(i).run_again = true;
    }

    fn follow(&mut self, i: usize, obs: &Observation, leader: &str) -> String {
        let me = self.members[i].name.clone();
        if self.bug == Bug::PromoteWithoutLock
            && self.index(leader).is_some_and(|j| !self.reachable(i, j))
            && matches!(
                obs.pg,
                PgView::Running {
                    in_recovery: true,
                    ..
                }
            )
        {
            // Deliberately broken policy: "the leader is unreachable, take over" without the
            // leader key.
            let _ = self.promote(i, obs);
            return "BUG: promoted without the lock because the leader is unreachable".into();
        }
        let a = self.agent(i);
        a.role = "replica".into();
        a.ssn = Ssn::empty();
        if let (Some(l), PgView::Running { timeline, .. }) = (
            obs.cluster.as_ref().and_then(Cluster::leader_member),
            &obs.pg,
        ) {
            if l.data.timeline.is_some_and(|tl| tl <= *timeline) {
                a.rewind_check = false;
            }
        }
        let desired = a.desired(Some(Some(leader.to_string())));
        if self.ensure_config(i, desired) {
            self.members[i].pg.reload();
        }
        format!("no action. I am ({me}), a secondary, and following a leader ({leader})")
    }

    pub fn touch_member(&mut self, i: usize) {
        let a = self.members[i].agent.as_ref().expect("agent");
        let name = &self.members[i].name;
        let mut m = MemberData {
            conn_url: format!("postgres://{name}:5432/postgres"),
            api_url: format!("http://{name}:8008/patroni"),
            state: a.state.clone(),
            role: a.role.clone(),
            version: pgpilot_dcs::PATRONI_COMPAT_VERSION.into(),
            ..Default::default()
        };
        if let Some(st) = &a.last_pg {
            if a.task.is_none() {
                m.xlog_location = Some(st.wal_position);
            }
            if st.in_recovery {
                m.replay_lsn = Some(st.wal_position);
                m.receive_lsn = Some(st.wal_position);
                m.replication_state = st.streaming.then(|| "streaming".to_string());
            }
            m.timeline = Some(st.timeline);
        }
        let _ = call!(self, i, |d| d.touch_member(&m));
    }

    /// Applies the end of background work that is due (the task's future completing).
    pub fn complete_task(&mut self, i: usize) {
        let now = self.now();
        let Some(t) = self.members[i].agent.as_ref().and_then(|a| a.task.as_ref()) else {
            return;
        };
        if t.result.is_some() || t.done_at > now || self.members[i].frozen_until.is_some() {
            return;
        }
        let op = t.op.clone();
        let what = format!("{op:?}");
        let result = match op {
            TaskOp::Start => self.members[i].pg.finish_start().map_err(TaskError::Failed),
            TaskOp::Bootstrap => {
                let id = self.next_id();
                let conf = self.agent(i).desired(None);
                let pg = &mut self.members[i].pg;
                pg.data = Some(Data {
                    sysid: self.cfg.sysid.clone(),
                    wal: vec![Rec { tl: 1, id }],
                    control: Control::ShutDown,
                    conf,
                });
                pg.begin_start();
                pg.finish_start().map_err(TaskError::Failed)
            }
            TaskOp::Clone { from, conf } => match self.source(i, &from, false) {
                Some(src) => {
                    let d = self.members[src].pg.data.clone().expect("source data");
                    let pg = &mut self.members[i].pg;
                    pg.data = Some(Data {
                        sysid: d.sysid,
                        wal: d.wal,
                        control: Control::InArchiveRecovery,
                        conf,
                    });
                    pg.begin_start();
                    pg.finish_start().map_err(TaskError::Failed)
                }
                None => Err(TaskError::Failed("basebackup failed".into())),
            },
            TaskOp::Rewind { from } => match self.source(i, &from, true) {
                None => Err(TaskError::NotReady("rewind source not ready".into())),
                Some(src) => {
                    let id = self.next_id();
                    self.stop_fast(i, id);
                    let s = self.members[src].pg.data.clone().expect("source data");
                    let pg = &mut self.members[i].pg;
                    match pg.data.as_mut() {
                        Some(d) if d.sysid == s.sysid => {
                            let k = d.common_prefix(&s);
                            d.wal.truncate(k);
                            d.control = Control::InArchiveRecovery;
                            Ok(())
                        }
                        _ => Err(TaskError::Failed("no data to rewind".into())),
                    }
                }
            },
        };
        let name = self.members[i].name.clone();
        trace!(self, "  {name}: background {what} finished: {result:?}");
        let a = self.agent(i);
        if let Some(t) = a.task.as_mut() {
            t.result = Some(result);
        }
        // `task_done` wakes the loop at once.
        a.next_run = a.next_run.min(now);
    }

    /// Whether `i`'s timeline is older than the newest timeline some member has reached.
    fn behind_newest_timeline(&self, i: usize) -> bool {
        let mine = self.members[i].pg.data.as_ref().map_or(0, Data::timeline);
        self.members
            .iter()
            .filter_map(|m| m.pg.data.as_ref())
            .any(|d| d.timeline() > mine)
    }

    /// A member to clone or rewind from: reachable, running, not frozen (and a primary for a
    /// rewind, as `prepare_rewind_source` demands).
    fn source(&self, i: usize, name: &str, primary: bool) -> Option<usize> {
        let j = self.index(name)?;
        let pg = &self.members[j].pg;
        let ok = j != i
            && self.reachable(i, j)
            && pg.running()
            && !pg.frozen
            && pg.data.is_some()
            && (!primary || !pg.in_recovery);
        ok.then_some(j)
    }
}

/// `Agent::apply_dynamic`: `/config` read every cycle.
fn apply_dynamic(a: &mut Agent, c: &Cluster) {
    let Some(cfg) = &c.config else { return };
    if cfg.data.is_empty() || cfg.data == a.dynamic.raw {
        return;
    }
    let (dynamic, _warnings) = DynamicConfig::from_document(&cfg.data);
    if dynamic.ttl != a.dynamic.ttl {
        a.dcs.set_ttl(dynamic.ttl);
    }
    a.dynamic = dynamic;
}

/// The real agent's `standbys()`: member keys joined with `pg_stat_replication`.
fn standbys(cluster: &Cluster, me: &str, pg: &PgSnap) -> Vec<Standby> {
    cluster
        .members
        .iter()
        .filter(|m| m.name != me && m.data.state == "running")
        .map(|m| {
            let row = pg
                .replication
                .iter()
                .find(|r| r.0.eq_ignore_ascii_case(&m.name));
            Standby {
                name: m.name.clone(),
                nosync: false,
                sync_priority: 1,
                nofailover: m.data.nofailover(),
                streaming: row.is_some(),
                lsn: row.map_or(0, |r| r.1),
                sync_state: row.map(|r| r.2.clone()).unwrap_or_default(),
            }
        })
        .collect()
}
