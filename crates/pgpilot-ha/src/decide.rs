//! `decide()`: the HA policy as a pure function.
//!
//! The agent observes the DCS and the local PostgreSQL, packs what it saw into an
//! [`Observation`], and asks [`decide`] what to do. No I/O, no clock, no randomness happens here:
//! every branch of Patroni's `_run_cycle` (spec/ha-loop.md §5.1–5.3) that pgpilot implements is a
//! row in the table tests below. Some decisions need the outcome of one more DCS operation (the
//! leader race, the bootstrap race); the decision names the operation and both outcomes, and
//! `act` picks the sentence that matches what happened.

use std::time::Duration;

use pgpilot_dcs::{Cluster, Failover};
use pgpilot_types::PeerStatus;

use crate::sync::{self, SyncParams};

/// The long-running action in progress, if any (run as a background task by the agent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ActionKind {
    Bootstrap,
    Clone,
    Rewind,
    Start,
    Reinitialize,
    Restart,
}

impl ActionKind {
    /// The words Patroni uses in "<action> in progress" / "updated leader lock during <action>".
    pub fn describe(self) -> &'static str {
        match self {
            ActionKind::Bootstrap => "bootstrap",
            ActionKind::Clone => "bootstrap from leader",
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
    /// Clone the data directory from `from` (pg_basebackup), then follow the leader.
    Clone { from: String, msg: String },
    /// Write `/initialize` with our system identifier (adopting existing data).
    AdoptInitialize { sysid: String },
    /// Refuse to go on: log at CRITICAL and exit non-zero.
    Fatal { msg: String },
    /// The DCS is unreachable and we run a primary: stop it and restart read-only without an
    /// upstream.
    DemoteOffline,
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
    /// Former primary must rewind against `leader` before following it.
    Rewind { leader: String },
    /// Rewind is impossible and the configuration allows it: remove the data directory so the
    /// next cycle clones a fresh copy.
    RemoveDataDirectory { msg: String },
    /// We hold the lock but cannot serve as primary: release it.
    ReleaseLock { msg: String },
}

/// What follows a [`Decision::AcquireLeader`] attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterAcquire {
    /// Won and PostgreSQL is in recovery: promote it.
    Promote,
    /// Won and PostgreSQL already runs as a primary.
    Lead,
    /// Lost the race, or the DCS failed: log `msg`; `demote`: PostgreSQL runs as a primary
    /// without the lock (not paused), stop it at once.
    Lost { demote: bool, msg: String },
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
            return Decision::NoAction {
                msg: "waiting for leader to bootstrap".into(),
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
            if holds_lock {
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
        return Decision::DemoteImmediate {
            msg: "demoting self because I do not have the lock and I was a leader".into(),
        };
    }
    Decision::Follow {
        // `is_unlocked` was checked above, so the leader name exists.
        leader: cluster.leader_name().unwrap_or_default().to_string(),
    }
}

/// Patroni's `is_healthiest_node` (spec/ha-loop.md §5.2), without sync/quorum/failsafe (later
/// issues). `Err` carries the reason, logged by the agent.
pub fn is_healthiest(o: &Observation, cluster: &Cluster) -> Result<(), String> {
    let PgView::Running {
        in_recovery,
        timeline,
        wal_position,
        ..
    } = o.pg
    else {
        return Err("postgres is not running".into());
    };
    if !in_recovery {
        // A running primary may take the lock back unless it is on an older timeline than the
        // cluster (a stale primary after a failover it missed).
        if o.paused {
            return match cluster.initialize.as_deref() {
                None | Some("") => Ok(()),
                Some(init) => match &o.data {
                    DataState::Initialized { sysid } if sysid == init => Ok(()),
                    _ => Err("system ID mismatch".into()),
                },
            };
        }
        let cluster_tl = cluster.timeline();
        if cluster_tl > 0 && timeline < cluster_tl {
            return Err(format!(
                "my timeline {timeline} is behind the cluster timeline {cluster_tl}"
            ));
        }
        return Ok(());
    }
    let failover = cluster.failover.as_ref();
    if o.paused {
        // In maintenance mode only a named candidate may take over.
        if o.can_failover && failover.and_then(|f| f.member.as_deref()) == Some(o.me.as_str()) {
            return Ok(());
        }
        return Err("paused".into());
    }
    if !o.can_failover {
        return Err("nofailover".into());
    }
    if let Some(f) = failover {
        // A switchover in synchronous (or quorum) mode may only go to a synchronous standby.
        if o.sync.active()
            && f.leader.is_some()
            && !cluster
                .sync
                .as_ref()
                .is_some_and(|s| s.matches(&o.me, true))
        {
            return Err("switchover: I am not a synchronous standby".into());
        }
        // The timeline check stays on the manual path; only the lag check is dropped there.
        check_timeline(o, cluster, timeline)?;
        return manual_failover_no_leader(o, cluster, f, wal_position);
    }
    if !sync::may_race(&o.sync, &o.me, cluster.sync.as_ref()) {
        return Err("I am not a synchronous standby (not listed in /sync)".into());
    }
    let optime = cluster.status.optime;
    if optime > wal_position && optime - wal_position > o.maximum_lag_on_failover {
        return Err(format!(
            "My wal position exceeds maximum replication lag ({} > {})",
            optime - wal_position,
            o.maximum_lag_on_failover
        ));
    }
    check_timeline(o, cluster, timeline)?;
    let votes = compare_with_peers(o, cluster, wal_position, None)?;
    check_votes(o, cluster, votes)
}

/// `check_timeline`: a member on an older timeline than the cluster's may not win.
fn check_timeline(o: &Observation, cluster: &Cluster, timeline: u32) -> Result<(), String> {
    if o.check_timeline {
        let cluster_tl = cluster.timeline();
        if timeline == 0 || timeline < cluster_tl {
            return Err(format!(
                "My timeline {timeline} is behind last known cluster timeline {cluster_tl}"
            ));
        }
    }
    Ok(())
}

/// Quorum mode: enough voters not ahead of us answered (spec/ha-loop.md §5.8).
fn check_votes(o: &Observation, cluster: &Cluster, votes: usize) -> Result<(), String> {
    if !o.sync.quorum() || sync::quorum_votes_enough(cluster.sync.as_ref(), &o.me, votes) {
        return Ok(());
    }
    Err(format!(
        "not enough quorum votes: {votes} of the voters {:?} are not ahead of me, quorum is {}",
        sync::voting_set(cluster.sync.as_ref()),
        cluster.sync.as_ref().map_or(0, |s| s.quorum)
    ))
}

/// The WAL comparison of `_is_healthiest_node` against every reachable peer allowed to promote
/// (except `exclude`, the former leader of a manual failover). In synchronous (`on`) mode only
/// `/sync` members count, and the former leader may be ahead (what it has beyond the standbys
/// was never acknowledged). Returns the quorum votes: voters that are not ahead of us.
fn compare_with_peers(
    o: &Observation,
    cluster: &Cluster,
    wal_position: u64,
    exclude: Option<&str>,
) -> Result<usize, String> {
    let s = cluster.sync.as_ref();
    let sync_on = o.sync.active() && !o.sync.quorum();
    let former_leader = |name: &str| o.sync.active() && s.is_some_and(|s| s.leader_matches(name));
    let mut votes = 0;
    for peer in &o.peers {
        if peer.name == o.me || Some(peer.name.as_str()) == exclude {
            continue;
        }
        let voter = o.sync.quorum() && s.is_some_and(|s| s.matches(&peer.name, true));
        let allowed = !peer.nofailover && !peer.watchdog_failed;
        if !allowed && !voter {
            continue;
        }
        if sync_on && !s.is_some_and(|s| s.matches(&peer.name, true)) {
            continue;
        }
        if peer.is_primary {
            return Err(format!("Primary ({}) is still alive", peer.name));
        }
        if peer.wal_position > wal_position {
            if former_leader(&peer.name) || !allowed {
                continue;
            }
            return Err(format!(
                "Wal position of {} is ahead of my wal position",
                peer.name
            ));
        }
        if voter && peer.wal_position > 0 {
            votes += 1;
        }
        if allowed
            && !former_leader(&peer.name)
            && peer.wal_position == wal_position
            && peer.failover_priority > o.failover_priority
        {
            return Err(format!(
                "{} has equally tolerable WAL position and priority {}, while this node has priority {}",
                peer.name, peer.failover_priority, o.failover_priority
            ));
        }
    }
    Ok(votes)
}

/// `manual_failover_process_no_leader` (spec/ha-loop.md §5.2): a switchover or failover was
/// requested and the leader key is gone. The named candidate wins; others wait while it is
/// healthy; if it is not, the members except the former leader race without the lag check.
fn manual_failover_no_leader(
    o: &Observation,
    cluster: &Cluster,
    f: &Failover,
    wal_position: u64,
) -> Result<(), String> {
    let healthy = |p: &&PeerStatus| !p.nofailover && !p.watchdog_failed && p.name != o.me;
    if f.member.as_deref() == Some(o.me.as_str()) {
        return Ok(());
    }
    if o.sync.active()
        && !o.sync.quorum()
        && !cluster
            .sync
            .as_ref()
            .is_some_and(|s| s.matches(&o.me, true))
    {
        return Err("manual failover: I am not a synchronous standby".into());
    }
    if let Some(candidate) = f.member.as_deref() {
        if o.peers.iter().filter(healthy).any(|p| p.name == candidate) {
            return Err(format!(
                "manual failover: the candidate {candidate} is healthy, waiting for it"
            ));
        }
    }
    if f.leader.as_deref() == Some(o.me.as_str()) {
        if let Some(other) = o.peers.iter().find(healthy) {
            return Err(format!(
                "manual failover: I was the leader and {} is healthy",
                other.name
            ));
        }
        return Ok(());
    }
    let votes = compare_with_peers(o, cluster, wal_position, f.leader.as_deref())?;
    check_votes(o, cluster, votes)
}

/// What the leader does about a `/failover` key (`process_manual_failover_from_leader`,
/// spec/ha-loop.md §5.4).
#[derive(Debug, Clone, PartialEq)]
pub enum ManualFailover {
    /// Scheduled for later: nothing to do this cycle.
    Wait { msg: String },
    /// Scheduled within this cycle: sleep this long, then decide again.
    SleepUntilDue(Duration),
    /// Demote gracefully so that `candidate` (or the healthiest replica) takes over.
    Demote { candidate: Option<String> },
    /// The request can not or need not be carried out: clear the key (CAS on its version).
    Clear { msg: String },
}

/// The leader's answer to `/failover`. `seconds_until_scheduled`: how far the scheduled time
/// is (negative: in the past), computed by the caller from its clock; `None` when not
/// scheduled. `o.peers` holds the candidates' `/patroni` answers.
pub fn manual_failover_from_leader(
    o: &Observation,
    f: &Failover,
    seconds_until_scheduled: Option<f64>,
    loop_wait: Duration,
) -> ManualFailover {
    if let Some(delta) = seconds_until_scheduled {
        let lw = loop_wait.as_secs_f64();
        if delta > lw {
            return ManualFailover::Wait {
                msg: format!(
                    "Awaiting switchover at {} (in {delta:.0} seconds)",
                    f.scheduled_at.as_deref().unwrap_or("")
                ),
            };
        }
        if delta < -(lw * 1.5).floor() {
            return ManualFailover::Clear {
                msg: format!(
                    "Found a stale switchover value, cleaning up: {}",
                    f.scheduled_at.as_deref().unwrap_or("")
                ),
            };
        }
        if delta > 0.0 {
            return ManualFailover::SleepUntilDue(Duration::from_secs_f64(delta));
        }
    }
    let me = o.me.as_str();
    if f.leader.as_deref().is_some_and(|l| l != me) {
        return ManualFailover::Clear {
            msg: format!(
                "manual failover: leader name does not match: {} != {me}",
                f.leader.as_deref().unwrap_or("")
            ),
        };
    }
    if f.member.as_deref() == Some(me) {
        return ManualFailover::Clear {
            msg: "manual failover: I am already the leader, no need to failover".into(),
        };
    }
    if f.member.is_none() && o.paused {
        return ManualFailover::Clear {
            msg: "Switchover is possible only to a specific candidate in a paused state".into(),
        };
    }
    let my_wal = match o.pg {
        PgView::Running { wal_position, .. } => wal_position,
        _ => 0,
    };
    let optime = o
        .cluster
        .as_ref()
        .map_or(my_wal, |c| c.status.optime.max(my_wal));
    let sync_state = o.cluster.as_ref().and_then(|c| c.sync.as_ref());
    // A switchover in synchronous or quorum mode goes to a `/sync` member.
    let sync_on = o.sync.active();
    let good: Vec<&PeerStatus> = o
        .peers
        .iter()
        .filter(|p| {
            p.name != me
                && !p.nofailover
                && !p.watchdog_failed
                && !p.is_primary
                && f.member.as_deref().is_none_or(|c| c == p.name)
                && optime.saturating_sub(p.wal_position) <= o.maximum_lag_on_failover
                // A switchover in synchronous mode goes to a synchronous standby.
                && (!sync_on || sync_state.is_some_and(|s| s.matches(&p.name, false)))
        })
        .collect();
    // Quorum mode without a named candidate: enough voters must be able to elect one.
    let needed = if o.sync.quorum() && f.member.is_none() {
        let good_voters = good
            .iter()
            .filter(|p| sync_state.is_some_and(|s| s.matches(&p.name, true)))
            .count();
        good_voters >= sync_state.map_or(0, |s| s.quorum as usize)
    } else {
        true
    };
    if !good.is_empty() && needed {
        ManualFailover::Demote {
            candidate: f.member.clone(),
        }
    } else {
        ManualFailover::Clear {
            msg: "manual failover: no healthy members found, failover is not possible".into(),
        }
    }
}
