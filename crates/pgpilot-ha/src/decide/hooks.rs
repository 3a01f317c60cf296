//! The decisions around the user's hooks (spec/ha-loop.md §5.12): which callback a start,
//! restart or reload fires, what follows a `pre_promote` run, and whether a crashed primary
//! hands over at once (`primary_start_timeout: 0`) because another member can take over.

use pgpilot_dcs::Cluster;
use pgpilot_types::Role;

use crate::hooks::CallbackAction;

use super::Observation;

/// What the agent did to a PostgreSQL it (re)configures to follow a leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PgChange {
    Start,
    Restart,
    Reload,
}

/// Patroni's `Postgresql.follow()`: a PostgreSQL that ran before in another role (it was a
/// primary or demoted, or it switches between replica and standby leader) fires
/// `on_role_change` instead of `on_start` / `on_restart` / `on_reload`. Before the first
/// callback of this agent (`called` false) every start is a plain `on_start`.
pub fn follow_callback(called: bool, old: Role, new: Role, change: PgChange) -> CallbackAction {
    let standby_roles = [Role::Replica, Role::StandbyLeader];
    let role_change = called
        && (matches!(old, Role::Primary | Role::Demoted)
            || (old != new && standby_roles.contains(&old) && standby_roles.contains(&new)));
    match (role_change, change) {
        (true, _) => CallbackAction::OnRoleChange,
        (false, PgChange::Start) => CallbackAction::OnStart,
        (false, PgChange::Restart) => CallbackAction::OnRestart,
        (false, PgChange::Reload) => CallbackAction::OnReload,
    }
}

/// How a `pre_promote` run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrePromoteOutcome {
    /// Exit code 0 (or no `pre_promote` configured).
    Succeeded,
    /// A non-zero exit, a signal, or a command that could not be started.
    Failed,
    /// The leader key could not be renewed while it ran (it was killed).
    LostLock,
}

/// What follows a `pre_promote` run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterPrePromote {
    Promote,
    /// Give the key back (and stay out of the next races for a ttl): log `msg`.
    Release {
        msg: String,
    },
    /// Do not promote, keep the key: log `msg`.
    Cancel {
        msg: String,
    },
}

/// Patroni's `enforce_primary_role` after a failed `pre_promote` (spec/ha-loop.md §5.3) and
/// `handle_long_action_in_progress` for a lock lost during it: a fencing script that refused
/// means this member must not lead, so outside maintenance mode it releases the key; in
/// maintenance mode the key stays (nothing is promoted automatically there).
pub fn after_pre_promote(outcome: PrePromoteOutcome, paused: bool) -> AfterPrePromote {
    match outcome {
        PrePromoteOutcome::Succeeded => AfterPrePromote::Promote,
        PrePromoteOutcome::Failed if !paused => AfterPrePromote::Release {
            msg: "Promotion cancelled because the pre-promote script failed".into(),
        },
        PrePromoteOutcome::Failed => AfterPrePromote::Cancel {
            msg: "Promotion cancelled because the pre-promote script failed".into(),
        },
        PrePromoteOutcome::LostLock => AfterPrePromote::Cancel {
            msg: "lost leader before promote".into(),
        },
    }
}

/// Patroni's `is_failover_possible` (spec/ha-loop.md §5.4) over the peers' `/patroni`
/// answers: another member that may be promoted answers, runs as a replica, and is within
/// `maximum_lag_on_failover` of the cluster's last known position; in synchronous mode it is
/// listed in `/sync`.
pub fn failover_possible(o: &Observation, cluster: &Cluster) -> bool {
    let optime = cluster.status.optime;
    o.peers.iter().any(|p| {
        p.name != o.me
            && !p.nofailover
            && p.failover_priority > 0
            && !p.watchdog_failed
            && !p.is_primary
            && optime.saturating_sub(p.wal_position) <= o.maximum_lag_on_failover
            && (!o.sync.active()
                || cluster
                    .sync
                    .as_ref()
                    .is_some_and(|s| s.matches(&p.name, false)))
    })
}
