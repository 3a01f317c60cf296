//! The role and state an agent publishes (member key, `GET /patroni`, `pgpilotctl list`), as
//! enums so that a misspelt role cannot compile; [`Role::as_str`] and [`State::as_str`] give
//! Patroni's exact strings.

use std::fmt;

/// The role of this member as the agent sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Holds (or is about to hold) the leader key and runs a writable primary.
    Primary,
    Replica,
    /// The leader of a standby cluster (follows a remote primary).
    StandbyLeader,
    /// Was primary and stopped itself (lost lock, switchover, shutdown).
    Demoted,
    /// Before the first cycle decided anything.
    Uninitialized,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Primary => "primary",
            Role::Replica => "replica",
            Role::StandbyLeader => "standby_leader",
            Role::Demoted => "demoted",
            Role::Uninitialized => "uninitialized",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the agent says its PostgreSQL is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Stopped,
    Starting,
    Running,
    Stopping,
    Restarting,
    /// Stopped without the agent asking (found dead).
    Crashed,
    StartFailed,
    /// A clone (pg_basebackup) is running.
    CreatingReplica,
    /// initdb of a new cluster is running.
    InitializingNewCluster,
    /// Only in a REST answer: the agent saw PostgreSQL running, and the query made for this
    /// request failed (Patroni's `get_postgresql_status` says `unknown` then).
    Unknown,
    /// A custom bootstrap method (`bootstrap.method`) is running.
    RunningCustomBootstrap,
    /// The cluster a custom bootstrap restored is starting (and recovering).
    StartingAfterCustomBootstrap,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Stopped => "stopped",
            State::Starting => "starting",
            State::Running => "running",
            State::Stopping => "stopping",
            State::Restarting => "restarting",
            State::Crashed => "crashed",
            State::StartFailed => "start failed",
            State::CreatingReplica => "creating replica",
            State::InitializingNewCluster => "initializing new cluster",
            State::Unknown => "unknown",
            State::RunningCustomBootstrap => "running custom bootstrap script",
            State::StartingAfterCustomBootstrap => "starting after custom bootstrap",
        }
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
