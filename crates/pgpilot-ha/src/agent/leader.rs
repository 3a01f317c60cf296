//! The leader key: the race for it and promotion, its renewal each cycle (with the
//! synchronous-replication duty and `/config`/`/status` writes), and handing it over in a
//! switchover or manual failover.

use std::time::Duration;

use tokio::time::Instant;

use pgpilot_dcs::{Dcs, Status};
use pgpilot_postgres::{PgControl, StopMode, Upstream};
use pgpilot_types::{Peers, Role, State};
use serde_json::Value;
use tracing::{error, info, warn};

use crate::continuity;
use crate::decide::{
    after_acquire, after_guard_refused, after_pre_promote, after_watchdog_refused,
    manual_failover_from_leader, members_to_ask, valid_sysid, AfterAcquire, AfterPrePromote,
    ManualFailover, Observation, PgView, PrePromoteOutcome, WatchdogRefused,
};
use crate::hooks::{self, CallbackAction};
use crate::sync;

use super::{Agent, AgentError, Rewind};

/// What [`Agent::promote`] did. Postponing is not a failure: the cycle reports it and the next
/// one tries again.
#[derive(Debug, PartialEq, Eq)]
#[must_use]
pub(super) enum Promotion {
    /// `pg_ctl promote` was run (its failure is logged; the next cycle, still seeing a replica
    /// while holding the lock, promotes again).
    Done,
    /// Synchronous mode: `/sync` could not be written to name us first, so PostgreSQL was not
    /// promoted. Carries the sentence of the cycle.
    Postponed(&'static str),
    /// `pre_promote` failed (the key was given back outside maintenance mode) or the key was
    /// lost while it ran. Carries the sentence of the cycle.
    Cancelled(String),
}

impl Promotion {
    /// The sentence of a cycle whose promotion did not happen.
    fn not_done(self) -> Option<String> {
        match self {
            Promotion::Done => None,
            Promotion::Postponed(msg) => Some(msg.into()),
            Promotion::Cancelled(msg) => Some(msg),
        }
    }
}

impl<D: Dcs, P: Peers, Pg: PgControl> Agent<D, P, Pg> {
    pub(super) async fn acquire_leader(&mut self, obs: &Observation) -> Result<String, AgentError> {
        let start = self.guard.renewal_started();
        let outcome = self
            .dcs
            .attempt_to_acquire_leader()
            .await
            .map_err(|e| e.to_string());
        if outcome == Ok(true) {
            self.renewed(start);
            if let Some(f) = obs.cluster.as_ref().and_then(|c| c.failover.as_ref()) {
                // A stale `/failover` key is harmless (the next leader cycle clears it too),
                // but say so.
                if let Err(e) = self.dcs.set_failover("{}", Some(f.version)).await {
                    warn!("could not clear the failover key: {e}");
                }
            }
        }
        match after_acquire(outcome, obs) {
            AfterAcquire::Promote => {
                if let Some(msg) = self.arm_watchdog(obs).await {
                    return Ok(msg);
                }
                if let Some(msg) = self.promote(obs).await.not_done() {
                    return Ok(msg);
                }
                Ok("promoted self to leader by acquiring session lock".into())
            }
            AfterAcquire::Lead => {
                if let Some(msg) = self.arm_watchdog(obs).await {
                    return Ok(msg);
                }
                self.role = Role::Primary;
                Ok("acquired session lock as a leader".into())
            }
            AfterAcquire::StandbyLeader => Ok(self
                .follow_remote(
                    "promoted self to a standby leader by acquiring session lock".into(),
                    "promoted self to a standby leader by acquiring session lock",
                )
                .await),
            AfterAcquire::Lost { demote, msg } => {
                if demote {
                    self.demote(StopMode::Immediate).await;
                }
                Ok(msg)
            }
        }
    }

    /// Patroni's `enforce_primary_role` first step: outside maintenance mode a leader arms its
    /// watchdog before running a primary. If `required` and it does not arm, the key goes
    /// (after stopping a primary at once): `Some(sentence of the cycle)`. The same for a guard
    /// process that is on and did not take the renewal's deadline (it could not be started
    /// again).
    async fn arm_watchdog(&mut self, obs: &Observation) -> Option<String> {
        if obs.paused {
            return None;
        }
        let refused = if !self.guard.is_healthy() {
            error!("{}", self.guard.refusal());
            after_guard_refused(obs)
        } else if self.watchdog.is_running() || self.watchdog.activate() {
            return None;
        } else {
            after_watchdog_refused(obs)
        };
        let msg = match refused {
            WatchdogRefused::Demote { msg } => {
                if !self.demote(StopMode::Immediate).await {
                    // Still a primary: keep the key (the armed-or-not watchdog fences).
                    return Some(msg);
                }
                msg
            }
            WatchdogRefused::Release { msg } => msg,
        };
        self.lease_released();
        match self.dcs.delete_leader().await {
            Ok(true) => info!("Leader key released"),
            Ok(false) => {}
            // On our lease: it expires within ttl since we stop renewing it.
            Err(e) => error!("could not release the leader key: {e}"),
        }
        Some(msg)
    }

    /// Promotes the local replica (we hold the lock). In synchronous mode `/sync` names us
    /// first (CAS) and ssn is in place before the first commit, else the promotion is
    /// [`Promotion::Postponed`].
    pub(super) async fn promote(&mut self, obs: &Observation) -> Promotion {
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
                return Promotion::Postponed(
                    "Postponing promotion because synchronous replication state was updated by somebody else",
                );
            }
            self.set_ssn(ssn);
            if let Some(mut d) = self.written.clone() {
                d.parameters = self.desired(None).parameters;
                if self.ensure_config(d).await {
                    self.reload_pg().await;
                }
            }
        }
        let outcome = self.run_pre_promote().await;
        match after_pre_promote(outcome, obs.paused) {
            AfterPrePromote::Promote => {}
            AfterPrePromote::Release { msg } => {
                warn!("Releasing the leader key voluntarily because the pre-promote script failed");
                self.pre_promote_released_at = Some(Instant::now());
                self.lease_released();
                match self.dcs.delete_leader().await {
                    Ok(true) => info!("Leader key released"),
                    Ok(false) => {}
                    // On our lease: it expires within ttl since we stop renewing it.
                    Err(e) => error!("could not release the leader key: {e}"),
                }
                return Promotion::Cancelled(msg);
            }
            AfterPrePromote::Cancel { msg } => return Promotion::Cancelled(msg),
        }
        self.role = Role::Primary;
        // Patroni resets failsafe on promotion: a POST /failsafe from before no longer counts.
        self.reset_failsafe();
        // And the rewind state (`before_promote`): a pg_rewind that failed while this member
        // was a replica (its source went away mid-switchover) says nothing about the data
        // directory once it is the primary's. Kept, it refused every later start as a replica
        // after a demotion ("pg_rewind failed ... reinitialize this member"): found by
        // pgpilot-chaos' switchover storm.
        self.rewind = Rewind::default();
        let promote_started = Instant::now();
        match self.pg.promote(self.pg_ctl_timeout()).await {
            Ok(()) => {
                self.stats.promotions += 1;
                self.stats.last_promotion = Some(promote_started.elapsed());
                self.hooks.fire(CallbackAction::OnRoleChange, Role::Primary);
                self.announce_primary(obs);
                let desired = self.desired(None);
                self.ensure_config(desired).await;
                self.slot_retain = None;
                self.run_again = true;
            }
            Err(e) => error!("promote failed: {e}"),
        }
        Promotion::Done
    }

    /// Runs `pre_promote` (if set) and waits for it, renewing the leader key every loop_wait
    /// meanwhile as Patroni's cycle does while its promote task runs (the watchdog is kept
    /// alive with it). A renewal that fails kills the script: the key may be someone else's
    /// soon and this member must not promote.
    async fn run_pre_promote(&mut self) -> PrePromoteOutcome {
        let Some(command) = self.hooks.pre_promote() else {
            return PrePromoteOutcome::Succeeded;
        };
        let mut script = match hooks::spawn_pre_promote(&command) {
            Ok(s) => s,
            Err(msg) => {
                error!("{msg}");
                return PrePromoteOutcome::Failed;
            }
        };
        loop {
            match tokio::time::timeout(self.dynamic.loop_wait, script.wait()).await {
                Ok(Ok(status)) => {
                    let code = hooks::exit_code(status);
                    info!("pre_promote script `{command}` exited with {code}");
                    return if code == 0 {
                        PrePromoteOutcome::Succeeded
                    } else {
                        PrePromoteOutcome::Failed
                    };
                }
                Ok(Err(e)) => {
                    error!("Exception when calling `{command}`: {e}");
                    return PrePromoteOutcome::Failed;
                }
                Err(_) => match self.renew_lock(None).await {
                    Ok(true) => {}
                    res => {
                        if let Err(e) = res {
                            error!("failed to update leader lock: {e}");
                        }
                        self.lease_released();
                        info!("Terminating {command}");
                        script.kill().await;
                        return PrePromoteOutcome::LostLock;
                    }
                },
            }
        }
    }

    pub(super) async fn renew_leader(&mut self, obs: &Observation) -> Result<String, AgentError> {
        let me = self.cfg.name.clone();
        let leader = obs.cluster.as_ref().and_then(|c| c.leader.clone());
        match self.renew_lock(leader.as_ref()).await {
            Ok(true) => {
                if let Some(msg) = self.arm_watchdog(obs).await {
                    return Ok(msg);
                }
            }
            res => {
                if let Err(e) = &res {
                    error!("failed to update leader lock: {e}");
                }
                self.lease_released();
                // Patroni: a DCS error here is handled as a DCS that can not be read (step
                // 17); with failsafe mode on the members listed in `/failsafe` may vouch for
                // us. A key found to be someone else's (`Ok(false)`) is not a DCS error.
                if res.is_err() {
                    if let Some(members) = members_to_ask(obs) {
                        error!("Error communicating with DCS");
                        self.skip_touch = true;
                        return Ok(self.failsafe_round(members, obs).await);
                    }
                }
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
                if let Some(msg) = self.promote(obs).await.not_done() {
                    return Ok(msg);
                }
                return Ok("promoted self to leader because I had the session lock".into());
            }
            self.role = Role::Primary;
            let (slots, retain_slots) = match obs.cluster.as_ref() {
                Some(c) => self.sync_slots(c, wal_position).await,
                None => (None, None),
            };
            let status = Status {
                optime: wal_position,
                slots,
                retain_slots,
            };
            if let Err(e) = self.dcs.write_status(&status).await {
                warn!("could not write /status: {e}");
            }
            if let Some(c) = obs.cluster.as_ref() {
                self.write_failsafe(c).await;
                self.publish_history(c, timeline).await;
                self.publish_leader_documents(c).await;
            }
            let desired = self.desired(None);
            if self.ensure_config(desired).await {
                self.reload_pg().await;
            }
            self.process_sync(obs).await;
            if let Some(msg) = self.process_manual_failover(obs).await {
                return Ok(msg);
            }
        }
        Ok(format!("no action. I am ({me}), the leader with the lock"))
    }

    /// The leader writes `/initialize` (our system identifier) and `/config` (the dynamic
    /// configuration it runs with) when they are missing; written again next cycle while they
    /// are.
    pub(super) async fn publish_leader_documents(&mut self, c: &pgpilot_dcs::Cluster) {
        if c.initialize.as_deref().is_none_or(|i| !valid_sysid(i)) {
            if let Some(sysid) = &self.sysid {
                if let Err(e) = self.dcs.initialize(false, sysid).await {
                    warn!("could not write the initialize key: {e}");
                }
            }
        }
        if c.config.as_ref().is_none_or(|cfg| cfg.data.is_empty()) {
            let doc = Value::Object(self.dynamic.raw.clone()).to_string();
            if let Err(e) = self.dcs.set_config(&doc, None).await {
                warn!("could not write /config: {e}");
            }
        }
    }

    /// The leader's handling of `/failover` (spec/ha-loop.md §5.4). `Some(msg)` when it acted.
    pub(super) async fn process_manual_failover(&mut self, obs: &Observation) -> Option<String> {
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
                // A key left behind is cleaned up by the next leader cycle.
                if let Err(e) = self.dcs.set_failover("{}", Some(f.version)).await {
                    warn!("could not clear the failover key: {e}");
                }
                None
            }
            ManualFailover::Demote { candidate } => {
                self.demote_graceful(obs, candidate.as_deref()).await;
                Some("switchover: demoting myself".into())
            }
        }
    }

    /// With `pgpilot.client_continuity`, right after a promotion: forces this member up (and
    /// every other member down) in HAProxy's primary backends, and down in the replica
    /// backends, so that clients reach it without waiting for `rise` health checks (after a
    /// crash of the old primary too), then reconnects and resumes every pgBouncer. In a task of its own: the cycle does not wait for the
    /// proxies, and each step is logged by `crate::continuity`.
    fn announce_primary(&self, obs: &Observation) {
        let Some(cfg) = self.cfg.client_continuity.clone() else {
            return;
        };
        let me = self.cfg.name.clone();
        let others: Vec<String> = obs
            .cluster
            .as_ref()
            .map(|c| c.members.iter().map(|m| m.name.clone()).collect())
            .unwrap_or_default();
        tokio::spawn(async move {
            let others: Vec<&str> = others.iter().map(String::as_str).collect();
            continuity::after_promotion(&cfg, &me, &others).await;
        });
    }

    /// Graceful demotion for a switchover (spec/ha-loop.md §5.5 `graceful`): checkpoint, fast
    /// stop, wait (bounded) until a candidate has received the shutdown checkpoint, publish it as
    /// `/status.optime`, release the key, and wait briefly for the new leader. PostgreSQL stays
    /// down; the next cycle rewinds if needed and starts it as a replica of the new leader.
    ///
    /// With `pgpilot.client_continuity` the clients are held (poolers paused, this member forced
    /// down in HAProxy) from after the checkpoint until the new primary accepts writes or
    /// `pause_timeout` passes, and then routed to it (`crate::continuity`). The hold is released
    /// here, after [`Agent::hand_over`] returns whatever path it took, and never changes what
    /// the demotion does.
    pub(super) async fn demote_graceful(&mut self, obs: &Observation, candidate: Option<&str>) {
        info!("switchover: demoting myself");
        // A checkpoint now makes the shutdown checkpoint short.
        if let Err(e) = self.pg.checkpoint().await {
            warn!("CHECKPOINT before switchover failed: {e}");
        }
        // Until the stop this member is the primary and does not renew its key: the poolers'
        // PAUSE gets retry_timeout at most, which the timing rule leaves within the lease
        // renewed this cycle (loop_wait + 2 x retry_timeout <= ttl).
        let pause_wait = self.dynamic.retry_timeout;
        let hold = match self.cfg.client_continuity.clone() {
            Some(c) => Some(continuity::hold(&c, &self.cfg.name, pause_wait).await),
            None => None,
        };
        let released = self.hand_over(obs, candidate).await;
        if let Some(hold) = hold {
            let new = if released {
                self.new_primary_writable(hold.deadline()).await
            } else {
                None
            };
            hold.release(new.as_deref()).await;
        }
    }

    /// Waits (until `deadline`) for another member to hold the leader key and run as a
    /// primary, asked over SQL; its name.
    async fn new_primary_writable(&self, deadline: Instant) -> Option<String> {
        loop {
            if let Ok(c) = self.dcs.cluster().await {
                let leader = c
                    .leader_name()
                    .filter(|l| *l != self.cfg.name)
                    .and_then(|l| c.member(l));
                if let Some((m, (host, port))) =
                    leader.and_then(|m| m.data.host_port().map(|hp| (m, hp)))
                {
                    let at = Upstream { host, port };
                    let left = deadline.saturating_duration_since(Instant::now());
                    if let Ok(Ok(true)) =
                        tokio::time::timeout(left, self.pg.remote_is_primary(&at)).await
                    {
                        return Some(m.name.clone());
                    }
                }
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The demotion of [`Agent::demote_graceful`] after its checkpoint: whether the leader key
    /// was released (false: PostgreSQL could not be stopped, or the switchover was aborted).
    async fn hand_over(&mut self, obs: &Observation, candidate: Option<&str>) -> bool {
        self.state = State::Stopping;
        if let Err(e) = self.stop_then_disarm(StopMode::Fast).await {
            // PostgreSQL is still running: keep the key (never two primaries).
            error!("could not stop PostgreSQL for the switchover, keeping the leader key: {e}");
            self.state = State::Running;
            return false;
        }
        self.state = State::Stopped;
        self.role = Role::Demoted;
        self.last_pg = None;
        self.rewind.check = true;
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
                        // A key left behind is cleaned up by the next leader cycle.
                        if let Some(f) = &cluster.failover {
                            if let Err(e) = self.dcs.set_failover("{}", Some(f.version)).await {
                                warn!("could not clear the failover key: {e}");
                            }
                        }
                        self.rewind.check = false;
                        self.run_again = true;
                        return false;
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
        // Without it the candidates compare their member keys' positions instead.
        if let Err(e) = self.dcs.write_status(&status).await {
            warn!("could not write /status: {e}");
        }
        match self.dcs.delete_leader().await {
            Ok(true) => info!("Leader key released"),
            Ok(false) => {}
            Err(e) => error!("could not release the leader key: {e}"),
        }
        self.lease_released();
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
        true
    }
}
