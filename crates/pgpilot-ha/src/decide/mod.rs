//! `decide()`: the HA policy as a pure function.
//!
//! The agent observes the DCS and the local PostgreSQL, packs what it saw into an
//! [`Observation`], and asks [`decide`] what to do. No I/O, no clock, no randomness happens here:
//! every branch of Patroni's `_run_cycle` (spec/ha-loop.md §5.1–5.3) that pgpilot implements is a
//! row in the table tests (`decide_tests.rs`). Some decisions need the outcome of one more DCS
//! operation (the leader race, the lock renewal before a start): a pure follow-up
//! ([`after_acquire`], [`start_after_renewal`]) takes that outcome and says what comes next, so
//! `act` executes without deciding anything itself.
//!
//! `health.rs`: may this member take a free leader key (`is_healthiest_node`, manual failover
//! without a leader). `manual.rs`: the leader's side of a switchover. `hooks.rs`: which
//! callback fires, what follows `pre_promote`, and whether another member can take over.
//! `failsafe.rs`: failsafe mode (the `/failsafe` key, the round of a primary that lost the DCS,
//! and why it is safe).

use std::time::Duration;

use pgpilot_dcs::Cluster;
use pgpilot_types::PeerStatus;
use serde_json::{Map, Value};

use crate::sync::SyncParams;

mod failsafe;
mod health;
mod hooks;
mod manual;

pub use failsafe::{
    after_failsafe_round, excluded_from_race, failsafe_topology, inject_leader, members_to_ask,
    AfterFailsafe, KnownLeader,
};
pub use health::is_healthiest;
pub use hooks::{
    after_pre_promote, failover_possible, follow_callback, AfterPrePromote, PgChange,
    PrePromoteOutcome,
};
pub use manual::{manual_failover_from_leader, ManualFailover};

/// The long-running action in progress, if any (run as a background task by the agent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionKind {
    Bootstrap,
    /// The bootstrap task waits for the cluster a custom method restored to end its recovery.
    BootstrapRecovery,
    Clone,
    /// A replica creation method that needs no leader (`no_leader`) runs.
    CloneWithoutLeader,
    Rewind,
    Start,
    Reinitialize,
    Restart,
}

impl ActionKind {
    /// The words Patroni uses in "<action> in progress" / "updated leader lock during <action>".
    pub fn describe(self) -> &'static str {
        match self {
            ActionKind::Bootstrap | ActionKind::BootstrapRecovery => "bootstrap",
            ActionKind::Clone => "bootstrap from leader",
            ActionKind::CloneWithoutLeader => "bootstrap (without leader)",
            ActionKind::Rewind => "rewind",
            ActionKind::Start => "starting",
            ActionKind::Reinitialize => "reinitialize",
            ActionKind::Restart => "restart",
        }
    }
}

/// What the data directory holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataState {
    Empty,
    /// Initialized; the system identifier from pg_controldata.
    Initialized {
        sysid: String,
    },
    Invalid(String),
}

/// The local PostgreSQL as observed this cycle.
#[derive(Debug, Clone, PartialEq)]
pub enum PgView {
    /// Running and answering the monitoring query.
    Running {
        in_recovery: bool,
        timeline: u32,
        /// Primary: flush LSN; replica: max(receive, replay).
        wal_position: u64,
        /// Replica: streaming from an upstream.
        streaming: bool,
    },
    /// A postmaster exists but does not answer (starting up, or shutting down).
    Unresponsive,
    /// No postmaster. `was_primary`: pg_controldata says the cluster was last a primary
    /// (`in production` or `shut down`), so it may have diverged from a new leader.
    Stopped { was_primary: bool, clean: bool },
}

/// Everything `decide` may look at.
#[derive(Debug, Clone)]
pub struct Observation {
    pub me: String,
    /// `None`: the DCS could not be read this cycle.
    pub cluster: Option<Cluster>,
    pub data: DataState,
    pub pg: PgView,
    pub action: Option<ActionKind>,
    /// Cluster paused (`/config` `pause: true`).
    pub paused: bool,
    /// `nofailover` / `failover_priority` allow promotion.
    pub can_failover: bool,
    pub failover_priority: i64,
    /// A `bootstrap` section exists in the local configuration.
    pub can_bootstrap: bool,
    /// One of `create_replica_methods` works without a leader (`no_leader`).
    pub can_clone_without_leader: bool,
    pub maximum_lag_on_failover: u64,
    pub check_timeline: bool,
    pub use_pg_rewind: bool,
    pub remove_data_directory_on_rewind_failure: bool,
    /// A rewind against the current leader already failed (and data must not be removed).
    pub rewind_failed: bool,
    /// We demoted ourselves since PostgreSQL last started: before following a leader on a newer
    /// timeline our data may have to be rewound.
    pub rewind_check: bool,
    /// Peers' `/patroni` answers, gathered only when the cluster has no leader.
    pub peers: Vec<PeerStatus>,
    /// We stopped PostgreSQL ourselves to hand over (and it has not run since): in maintenance
    /// mode it is still brought back as a replica.
    pub self_demoted: bool,
    /// Synchronous replication settings (`synchronous_mode` & co).
    pub sync: SyncParams,
    /// The watchdog can do its duty: `false` only with `watchdog.mode: required` and a device
    /// that can not be used. Such a member does not run for leader.
    pub watchdog_usable: bool,
    /// The guard process (`crate::guard`) can fence this member: `false` only when it is on
    /// and could not be started. Such a member does not run for leader.
    pub guard_usable: bool,
    /// `primary_start_timeout`: zero means a crashed primary hands over at once when another
    /// member can take over.
    pub primary_start_timeout: Duration,
    /// We released the leader key because `pre_promote` failed less than a ttl ago: stay out
    /// of the race.
    pub pre_promote_backoff: bool,
    /// `/config.standby_cluster` makes this a standby cluster (spec/ha-loop.md §5.10): the
    /// lock holder is a standby leader replicating from the remote primary and never promotes.
    pub standby_cluster: bool,
    /// `failsafe_mode` of the dynamic configuration.
    pub failsafe_mode: bool,
    /// The `/failsafe` key of the last DCS view read (kept while the DCS is unreachable).
    pub failsafe: Option<Map<String, Value>>,
    /// This agent started less than a ttl ago: with failsafe mode on it may have accepted a
    /// `POST /failsafe` before a restart and forgotten it, so it stays out of the race.
    pub started_within_ttl: bool,
}

impl Observation {
    fn holds_lock(&self) -> bool {
        self.cluster
            .as_ref()
            .and_then(Cluster::leader_name)
            .is_some_and(|l| l == self.me)
    }
}

/// What the agent does this cycle. Each variant carries the sentence(s) the agent logs.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Nothing to change; log `msg`.
    NoAction { msg: String },
    /// Race for `/initialize`; the winner starts initdb in the background.
    RaceBootstrap,
    /// Standby cluster: race for `/initialize`; the winner creates its data directory from the
    /// remote primary (`standby_cluster.create_replica_methods`) and becomes the standby leader.
    RaceStandbyBootstrap,
    /// Clone the data directory from `from` (`create_replica_methods`), then follow the leader.
    Clone { from: String, msg: String },
    /// No member to clone from: create the data directory with the replica creation methods
    /// that need none (`no_leader`), e.g. a restore from a backup.
    CloneWithoutLeader { msg: String },
    /// Write `/initialize` with our system identifier (adopting existing data).
    AdoptInitialize { sysid: String },
    /// Refuse to go on: log at CRITICAL and exit non-zero.
    Fatal { msg: String },
    /// The DCS is unreachable and we run a primary: stop it and restart read-only without an
    /// upstream.
    DemoteOffline,
    /// The DCS is unreachable, we run a primary and failsafe mode is on: `POST /failsafe` to
    /// these members `(name, api_url)`; all accept -> stay primary, else demote offline
    /// ([`after_failsafe_round`]).
    FailsafeRound { members: Vec<(String, String)> },
    /// Renew the leader key during a background action.
    UpdateLockDuring { action: ActionKind },
    /// We lost the lock while PostgreSQL runs as a primary during an action: stop it now.
    DemoteImmediate { msg: String },
    /// Renew the leader key; on success make sure PostgreSQL runs as a writable primary
    /// (promote if it is in recovery); on failure demote.
    RenewLeader,
    /// Try to take the leader key (create-if-absent); won: promote; lost: follow.
    AcquireLeader,
    /// Not the healthiest: log `reason`, then stay a replica; `demote`: PostgreSQL runs as a
    /// primary (not paused), stop it at once (immediate) before following.
    NotHealthiest {
        reason: String,
        demote: bool,
        msg: String,
    },
    /// Follow `leader`: demote if primary, make sure the replica configuration points at it.
    Follow { leader: String },
    /// PostgreSQL is stopped: start it. `as_primary` only when we hold the lock and it was a
    /// primary. `renew_lock_first`: we hold the lock in a view that may come from the watch
    /// cache, so renew it first and pass the outcome through [`start_after_renewal`].
    StartPostgres {
        as_primary: bool,
        follow: Option<String>,
        msg: String,
        renew_lock_first: bool,
    },
    /// Standby cluster, PostgreSQL stopped: start it replicating from the remote primary, as
    /// the standby leader (`standby_leader`: we hold the key) or, with no leader at all, as a
    /// replica until someone takes the key.
    StartFollowingRemote { standby_leader: bool, msg: String },
    /// Standby cluster: renew the leader key; on success keep PostgreSQL in recovery
    /// replicating from the remote primary (never promote); on failure say so.
    RenewStandbyLeader,
    /// Standby cluster and we hold the key while PostgreSQL runs as a primary (`/config` just
    /// gained `standby_cluster`: `demote-cluster`): renew the key, stop PostgreSQL and start it
    /// again as the standby leader following the remote primary, keeping the key.
    DemoteCluster,
    /// Former primary must rewind against `leader` before following it.
    Rewind { leader: String },
    /// Rewind is impossible and the configuration allows it: remove the data directory so the
    /// next cycle clones a fresh copy.
    RemoveDataDirectory { msg: String },
    /// We hold the lock but cannot serve as primary: release it.
    ReleaseLock { msg: String },
    /// Our primary crashed, `primary_start_timeout` is 0 and another member can take over:
    /// release the key instead of starting it again (Patroni's `recover()`).
    FailOverAfterCrash,
}

/// What follows a [`Decision::AcquireLeader`] attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterAcquire {
    /// Won and PostgreSQL is in recovery: promote it.
    Promote,
    /// Won and PostgreSQL already runs as a primary.
    Lead,
    /// Won in a standby cluster: follow the remote primary as the standby leader (no
    /// promotion; a primary is demoted by the next cycle's [`Decision::DemoteCluster`]).
    StandbyLeader,
    /// Lost the race, or the DCS failed: log `msg`; `demote`: PostgreSQL runs as a primary
    /// without the lock (not paused), stop it at once.
    Lost { demote: bool, msg: String },
}

/// What a leader does when its watchdog could not be armed in `required` mode (Patroni's
/// `enforce_primary_role`): a primary stops at once and lets the key go; a replica does not
/// promote and lets the key go. Carries the sentence of the cycle.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchdogRefused {
    Demote { msg: String },
    Release { msg: String },
}

/// The pure follow-up of a failed watchdog activation while holding the key.
pub fn after_watchdog_refused(o: &Observation) -> WatchdogRefused {
    after_fence_refused(o, "watchdog")
}

/// The same for a guard process that is on but not running: the key goes as it would for a
/// `required` watchdog.
pub fn after_guard_refused(o: &Observation) -> WatchdogRefused {
    after_fence_refused(o, "the guard process")
}

fn after_fence_refused(o: &Observation, fence: &str) -> WatchdogRefused {
    if matches!(
        o.pg,
        PgView::Running {
            in_recovery: false,
            ..
        }
    ) {
        WatchdogRefused::Demote {
            msg: format!("Demoting self because {fence} could not be activated"),
        }
    } else {
        WatchdogRefused::Release {
            msg: format!("Not promoting self because {fence} could not be activated"),
        }
    }
}

/// The pure follow-up of a lock attempt, given its outcome (`Ok(won)` or the DCS error).
/// Patroni: `follow('demoted self due after trying and failing to obtain lock', 'following new
/// leader after trying and failing to obtain lock')`.
pub fn after_acquire(outcome: Result<bool, String>, o: &Observation) -> AfterAcquire {
    let pg_primary = matches!(
        o.pg,
        PgView::Running {
            in_recovery: false,
            ..
        }
    );
    match outcome {
        Ok(true) if o.standby_cluster => AfterAcquire::StandbyLeader,
        Ok(true) if pg_primary => AfterAcquire::Lead,
        Ok(true) => AfterAcquire::Promote,
        Ok(false) if pg_primary && !o.paused => AfterAcquire::Lost {
            demote: true,
            msg: "demoted self due after trying and failing to obtain lock".into(),
        },
        Ok(false) if pg_primary => AfterAcquire::Lost {
            demote: false,
            msg: "continue to run as primary without lock".into(),
        },
        Ok(false) => AfterAcquire::Lost {
            demote: false,
            msg: "following new leader after trying and failing to obtain lock".into(),
        },
        Err(e) => AfterAcquire::Lost {
            demote: false,
            msg: format!("failed to obtain leader lock: {e}"),
        },
    }
}

/// The follow-up of a [`Decision::StartPostgres`] with `renew_lock_first`, given whether the
/// renewal succeeded: a primary starts writable only after the lock was renewed for real (the
/// view may come from the watch cache while the DCS is frozen), otherwise read-only. Returns
/// `(as_primary, msg)`.
pub fn start_after_renewal(as_primary: bool, msg: String, renewed: bool) -> (bool, String) {
    if as_primary && !renewed {
        return (
            false,
            "starting as readonly because i had the session lock".into(),
        );
    }
    (as_primary, msg)
}

/// A system identifier as Patroni accepts it in `/initialize`: at least 10 digits.
pub fn valid_sysid(s: &str) -> bool {
    s.len() >= 10 && s.bytes().all(|b| b.is_ascii_digit())
}

pub fn decide(o: &Observation) -> Decision {
    let me = o.me.as_str();
    let pg_primary = matches!(
        o.pg,
        PgView::Running {
            in_recovery: false,
            ..
        }
    );

    // Step 17: the DCS is gone. A primary must not keep accepting writes it cannot prove it
    // may accept: its lease will expire and another member may be promoted.
    let Some(cluster) = &o.cluster else {
        // Failsafe mode: the members listed in `/failsafe` may vouch for us instead (see
        // `failsafe.rs` for why that is safe).
        if let Some(members) = members_to_ask(o) {
            return Decision::FailsafeRound { members };
        }
        if pg_primary && !o.paused {
            return Decision::DemoteOffline;
        }
        // A primary stopped by a failed lock renewal comes back read-only, with no upstream
        // until the DCS tells who leads.
        if let (PgView::Stopped { .. }, DataState::Initialized { .. }, None, false) =
            (&o.pg, &o.data, o.action, o.paused)
        {
            return Decision::StartPostgres {
                as_primary: false,
                follow: None,
                msg: "starting as a secondary".into(),
                renew_lock_first: false,
            };
        }
        return Decision::NoAction {
            msg: "DCS is not accessible".into(),
        };
    };
    let holds_lock = o.holds_lock();

    // Step 5: a background action runs.
    if let Some(action) = o.action {
        if holds_lock {
            return Decision::UpdateLockDuring { action };
        }
        if action == ActionKind::BootstrapRecovery {
            return Decision::NoAction {
                msg: "waiting for end of recovery after bootstrap".into(),
            };
        }
        if action != ActionKind::Bootstrap && pg_primary && !o.paused {
            return Decision::DemoteImmediate {
                msg: format!("lost leader lock during {}", action.describe()),
            };
        }
        return Decision::NoAction {
            msg: format!("{} in progress", action.describe()),
        };
    }

    // Step 9: empty or unusable data directory.
    match &o.data {
        DataState::Empty => {
            if holds_lock {
                return Decision::ReleaseLock {
                    msg: "released leader key because the data directory is empty".into(),
                };
            }
            if o.paused {
                return Decision::NoAction {
                    msg: "running with empty data directory".into(),
                };
            }
            if cluster.is_unlocked()
                && cluster.initialize.is_none()
                && o.can_failover
                && o.can_bootstrap
            {
                if o.standby_cluster {
                    return Decision::RaceStandbyBootstrap;
                }
                return Decision::RaceBootstrap;
            }
            if let Some(leader) = cluster.leader_member() {
                let source = cluster
                    .members
                    .iter()
                    .find(|m| {
                        m.name != me
                            && m.data.clonefrom()
                            && m.data.state == "running"
                            && !m.data.conn_url.is_empty()
                    })
                    .unwrap_or(leader);
                let msg = if source.name == leader.name {
                    format!("trying to bootstrap from leader '{}'", source.name)
                } else {
                    format!("trying to bootstrap from replica '{}'", source.name)
                };
                return Decision::Clone {
                    from: source.name.clone(),
                    msg,
                };
            }
            // Patroni: not while another member races for `/initialize` (value "").
            if o.can_clone_without_leader && cluster.initialize.as_deref() != Some("") {
                return Decision::CloneWithoutLeader {
                    msg: "trying to bootstrap (without leader)".into(),
                };
            }
            let waiting_for = if o.standby_cluster {
                "standby_leader"
            } else {
                "leader"
            };
            return Decision::NoAction {
                msg: format!("waiting for {waiting_for} to bootstrap"),
            };
        }
        DataState::Invalid(_) => {
            return Decision::NoAction {
                msg: "data dir for the cluster is not empty, but system ID is invalid; consider doing reinitialize".into(),
            };
        }
        DataState::Initialized { sysid } => {
            // Step 10: never run a data directory of another cluster.
            match cluster.initialize.as_deref() {
                Some(init) if valid_sysid(init) && init != sysid => {
                    if o.paused {
                        if holds_lock {
                            return Decision::ReleaseLock {
                                msg: format!("system ID mismatch, node {me} belongs to a different cluster: {init} != {sysid}"),
                            };
                        }
                        return Decision::NoAction {
                            msg: format!("system ID mismatch, node {me} belongs to a different cluster: {init} != {sysid}"),
                        };
                    }
                    return Decision::Fatal {
                        msg: format!(
                            "system ID mismatch, node {me} belongs to a different cluster: {init} != {sysid}"
                        ),
                    };
                }
                Some(init) if valid_sysid(init) => {}
                _ => {
                    if cluster.is_unlocked() && !o.paused {
                        if matches!(
                            o.pg,
                            PgView::Running {
                                in_recovery: true,
                                ..
                            }
                        ) {
                            return Decision::Fatal {
                                msg: "No initialize key in DCS and PostgreSQL is running as replica, aborting start".into(),
                            };
                        }
                        return Decision::AdoptInitialize {
                            sysid: sysid.clone(),
                        };
                    }
                }
            }
        }
    }

    // Step 11: PostgreSQL is not running.
    match &o.pg {
        PgView::Stopped { was_primary, .. } => {
            // In maintenance mode a stopped PostgreSQL stays stopped, unless we stopped it
            // ourselves for a manual switchover (`self_demoted`): then it comes back as a
            // replica of the new leader, as Patroni's graceful demotion does.
            let self_demoted = o.self_demoted && !holds_lock && cluster.leader_name().is_some();
            if o.paused && !self_demoted {
                if holds_lock {
                    return Decision::ReleaseLock {
                        msg: "removed leader key because postgres is not running".into(),
                    };
                }
                return Decision::NoAction {
                    msg: "postgres is not running".into(),
                };
            }
            // Standby cluster (Patroni's `recover`): the lock holder starts as the standby
            // leader, and with nobody holding the key a member replicates from the remote
            // primary until the race picks a standby leader. Neither is ever a primary.
            if o.standby_cluster && (holds_lock || cluster.is_unlocked()) {
                let msg = if holds_lock {
                    "starting as a standby leader because i had the session lock"
                } else {
                    "trying to follow a remote member because standby cluster is unhealthy"
                };
                return Decision::StartFollowingRemote {
                    standby_leader: holds_lock,
                    msg: msg.into(),
                };
            }
            if holds_lock {
                // The peers were asked for their status because the timeout is zero.
                if o.primary_start_timeout.is_zero() && failover_possible(o, cluster) {
                    return Decision::FailOverAfterCrash;
                }
                if *was_primary {
                    return Decision::StartPostgres {
                        as_primary: true,
                        follow: None,
                        msg: "starting primary after failure".into(),
                        renew_lock_first: true,
                    };
                }
                return Decision::StartPostgres {
                    as_primary: false,
                    follow: None,
                    msg: "starting as readonly because i had the session lock".into(),
                    renew_lock_first: true,
                };
            }
            let leader = cluster.leader_name().map(str::to_string);
            if *was_primary {
                if let Some(leader) = &leader {
                    // A former primary may have diverged from the new leader: rewind first.
                    if o.use_pg_rewind && !o.rewind_failed {
                        return Decision::Rewind {
                            leader: leader.clone(),
                        };
                    }
                    if o.rewind_failed && o.remove_data_directory_on_rewind_failure {
                        return Decision::RemoveDataDirectory {
                            msg: "removing data directory because pg_rewind failed".into(),
                        };
                    }
                    // The data may have diverged from the leader's (that is why pg_rewind
                    // ran): started as a replica it would either fail to stream or, worse,
                    // serve data the cluster never had. Wait for an operator (reinitialize)
                    // instead, as Patroni does after a failed rewind.
                    if o.rewind_failed {
                        return Decision::NoAction {
                            msg: format!(
                                "not starting PostgreSQL as a replica of {leader}: pg_rewind \
                                 failed and remove_data_directory_on_rewind_failure is off; \
                                 reinitialize this member"
                            ),
                        };
                    }
                }
            }
            return Decision::StartPostgres {
                as_primary: false,
                follow: leader,
                msg: "starting as a secondary".into(),
                renew_lock_first: false,
            };
        }
        PgView::Unresponsive => {
            if holds_lock {
                return Decision::UpdateLockDuring {
                    action: ActionKind::Start,
                };
            }
            return Decision::NoAction {
                msg: "PostgreSQL is not accepting connections yet".into(),
            };
        }
        PgView::Running { .. } => {}
    }

    // Steps 12: leader race or normal operation.
    if cluster.is_unlocked() {
        return match is_healthiest(o, cluster) {
            Ok(()) => Decision::AcquireLeader,
            Err(reason) => {
                // Patroni's `follow(demote_reason, follow_reason)`: a primary is demoted
                // (immediate) unless paused, when it keeps running without the lock.
                let not_allowed = !o.can_failover && !o.paused;
                let demote = pg_primary && !o.paused;
                let msg = match (pg_primary, o.paused, not_allowed) {
                    (true, true, _) => "continue to run as primary without lock",
                    (true, false, true) => {
                        "demoting self because I am not allowed to become primary"
                    }
                    (true, false, false) => "demoting self because i am not the healthiest node",
                    (false, _, true) => {
                        "following a different leader because I am not allowed to promote"
                    }
                    (false, _, false) => {
                        "following a different leader because i am not the healthiest node"
                    }
                };
                Decision::NotHealthiest {
                    reason,
                    demote,
                    msg: msg.into(),
                }
            }
        };
    }
    if holds_lock && o.standby_cluster {
        // Patroni's `enforce_follow_remote_member`: a primary under the key of a standby
        // cluster is demoted to a standby leader; in maintenance mode it keeps running as a
        // primary, and keeps its key.
        if pg_primary {
            if o.paused {
                return Decision::RenewLeader;
            }
            return Decision::DemoteCluster;
        }
        return Decision::RenewStandbyLeader;
    }
    if holds_lock {
        if o.paused && !pg_primary {
            let candidate_is_me =
                cluster.failover.as_ref().and_then(|f| f.member.as_deref()) == Some(me);
            if !candidate_is_me {
                return Decision::ReleaseLock {
                    msg: "removed leader lock because postgres is not running as primary".into(),
                };
            }
        }
        return Decision::RenewLeader;
    }
    if let (
        Some(leader),
        PgView::Running {
            in_recovery: true,
            timeline,
            ..
        },
    ) = (cluster.leader_member(), &o.pg)
    {
        // After our own demotion, a leader on a newer timeline may have forked before the end
        // of our WAL: rewind (pg_rewind does nothing when there is no divergence).
        let leader_tl = leader.data.timeline.unwrap_or(0);
        if o.rewind_check && o.use_pg_rewind && !o.rewind_failed && leader_tl > *timeline {
            return Decision::Rewind {
                leader: leader.name.clone(),
            };
        }
    }
    // Someone else holds the lock: a primary must stop accepting writes now (Patroni's
    // `demote('immediate-nolock')`), except in maintenance mode.
    if pg_primary {
        if o.paused {
            return Decision::NoAction {
                msg: "continue to run as primary without lock".into(),
            };
        }
        let msg = if o.standby_cluster {
            "cannot be a real primary in a standby cluster"
        } else {
            "demoting self because I do not have the lock and I was a leader"
        };
        return Decision::DemoteImmediate { msg: msg.into() };
    }
    Decision::Follow {
        // `is_unlocked` was checked above, so the leader name exists.
        leader: cluster.leader_name().unwrap_or_default().to_string(),
    }
}
