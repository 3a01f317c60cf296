//! What one chaos run does: the modes, the faults, the workload size and the HA timings.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde_json::{json, Value};

/// The replication mode of one cluster, written into `bootstrap.dcs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Mode {
    /// `synchronous_mode: off`: a failover may lose the last acknowledged commits.
    Async,
    /// `synchronous_mode: on`.
    Sync,
    /// `synchronous_mode: on` + `synchronous_mode_strict: true`.
    SyncStrict,
    /// `synchronous_mode: quorum`.
    Quorum,
}

impl Mode {
    pub const ALL: [Mode; 4] = [Mode::Async, Mode::Sync, Mode::SyncStrict, Mode::Quorum];

    pub fn name(self) -> &'static str {
        match self {
            Mode::Async => "async",
            Mode::Sync => "sync",
            Mode::SyncStrict => "sync-strict",
            Mode::Quorum => "quorum",
        }
    }

    /// Whether this mode promises that no acknowledged commit is lost.
    pub fn is_sync(self) -> bool {
        self != Mode::Async
    }

    /// Writes this mode into a member's `bootstrap.dcs` document.
    pub fn apply(self, dcs: &mut Value) {
        let (mode, strict) = match self {
            Mode::Async => (json!(false), false),
            Mode::Sync => (json!(true), false),
            Mode::SyncStrict => (json!(true), true),
            Mode::Quorum => (json!("quorum"), false),
        };
        dcs["synchronous_mode"] = mode;
        if strict {
            dcs["synchronous_mode_strict"] = json!(true);
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Mode::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| format!("unknown mode {s:?} (async, sync, sync-strict, quorum)"))
    }
}

/// One fault, injected on the current leader while the workload runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Fault {
    /// SIGKILL the leader's agent and its postmaster; the agent is started again once another
    /// member holds the leader key.
    Kill9,
    /// SIGSTOP the leader's agent for longer than ttl, then SIGCONT (PostgreSQL keeps running).
    FreezeAgent,
    /// `pg_ctl stop -m immediate` on the leader's data directory.
    PgImmediate,
    /// Delete the leader's data directory.
    RmDatadir,
    /// SIGSTOP etcd for longer than ttl, then SIGCONT.
    EtcdStop,
    /// SIGKILL one of the three etcd members for longer than ttl (the others keep quorum),
    /// then start it again; round `r` takes member `(r - 1) % 3`, so every position in
    /// `etcd3.hosts` is hit, the first one (where requests start) included.
    EtcdMemberLoss,
    /// Cut the leader off etcd and its replicas (network namespaces; root only).
    Partition,
    /// Several switchovers back to back through `POST /switchover`.
    SwitchoverStorm,
    /// Several `POST /restart` on the leader and the replicas.
    RestartStorm,
}

impl Fault {
    pub const ALL: [Fault; 9] = [
        Fault::Kill9,
        Fault::FreezeAgent,
        Fault::PgImmediate,
        Fault::RmDatadir,
        Fault::EtcdStop,
        Fault::EtcdMemberLoss,
        Fault::Partition,
        Fault::SwitchoverStorm,
        Fault::RestartStorm,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Fault::Kill9 => "kill9",
            Fault::FreezeAgent => "freeze-agent",
            Fault::PgImmediate => "pg-immediate",
            Fault::RmDatadir => "rm-datadir",
            Fault::EtcdStop => "etcd-stop",
            Fault::EtcdMemberLoss => "etcd-member-loss",
            Fault::Partition => "partition",
            Fault::SwitchoverStorm => "switchover-storm",
            Fault::RestartStorm => "restart-storm",
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Fault {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Fault::ALL
            .into_iter()
            .find(|m| m.name() == s)
            .ok_or_else(|| {
                let names: Vec<_> = Fault::ALL.iter().map(|f| f.name()).collect();
                format!("unknown fault {s:?} ({} or all)", names.join(", "))
            })
    }
}

/// Parses `a,b,c` (or `all`) into a list without duplicates, in the given order.
pub fn parse_list<T: FromStr<Err = String> + PartialEq + Copy>(
    text: &str,
    all: &[T],
) -> Result<Vec<T>, String> {
    if text.trim() == "all" {
        return Ok(all.to_vec());
    }
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let v = part.parse::<T>()?;
        if !out.contains(&v) {
            out.push(v);
        }
    }
    if out.is_empty() {
        return Err("the list is empty".into());
    }
    Ok(out)
}

/// Everything a chaos run needs.
#[derive(Debug, Clone)]
pub struct Config {
    pub modes: Vec<Mode>,
    pub faults: Vec<Fault>,
    /// How many times each fault runs in each mode.
    pub rounds: usize,
    pub accounts: i32,
    pub clients: usize,
    pub ttl: u64,
    pub loop_wait: u64,
    pub retry_timeout: u64,
    /// Upper bound for the cluster to recover after one fault (a write acknowledged again, one
    /// primary and two streaming replicas).
    pub recovery_timeout: Duration,
    /// Keep each cluster's directory (configs, agent and PostgreSQL logs, data).
    pub keep_dir: bool,
    /// The `pgpilot` agent binary.
    pub agent: PathBuf,
}

impl Config {
    /// The defaults of the command line, with `agent` as the agent binary.
    pub fn new(agent: PathBuf) -> Config {
        Config {
            modes: vec![Mode::Async],
            faults: vec![Fault::Kill9, Fault::PgImmediate, Fault::SwitchoverStorm],
            rounds: 1,
            accounts: 100,
            clients: 4,
            ttl: 20,
            loop_wait: 1,
            retry_timeout: 3,
            recovery_timeout: Duration::from_secs(90),
            keep_dir: false,
            agent,
        }
    }

    /// The agents' minimums (with pgpilot's guard on, which the chaos clusters run: ttl 5,
    /// retry_timeout 2) and the timing rule, checked before any cluster starts.
    pub fn validate(&self) -> Result<(), String> {
        // pgpilot_config::{FENCED_MIN_TTL, FENCED_MIN_RETRY_TIMEOUT}; the agent raises lower
        // values, so a run below them would not test what it says.
        let (ttl_min, retry_min) = (5, 2);
        if self.ttl < ttl_min || self.loop_wait < 1 || self.retry_timeout < retry_min {
            return Err(format!(
                "ttl >= {ttl_min}, loop_wait >= 1 and retry_timeout >= {retry_min} (the minimums with pgpilot's guard on)"
            ));
        }
        if self.loop_wait + 2 * self.retry_timeout > self.ttl {
            return Err("loop_wait + 2 * retry_timeout must not exceed ttl".into());
        }
        if self.accounts < 2 || self.clients == 0 || self.rounds == 0 {
            return Err("--accounts >= 2, --clients >= 1 and --rounds >= 1".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_parse_in_order_without_duplicates() {
        assert_eq!(
            parse_list("sync,async,sync", &Mode::ALL),
            Ok(vec![Mode::Sync, Mode::Async])
        );
        assert_eq!(parse_list("all", &Fault::ALL), Ok(Fault::ALL.to_vec()));
        assert!(parse_list("kill9,nope", &Fault::ALL).is_err());
        assert!(parse_list("", &Mode::ALL).is_err());
    }

    #[test]
    fn modes_write_patroni_keys() {
        let mut dcs = json!({});
        Mode::SyncStrict.apply(&mut dcs);
        assert_eq!(
            dcs,
            json!({"synchronous_mode": true, "synchronous_mode_strict": true})
        );
        let mut dcs = json!({});
        Mode::Quorum.apply(&mut dcs);
        assert_eq!(dcs, json!({"synchronous_mode": "quorum"}));
    }

    #[test]
    fn timings_follow_patronis_rule() {
        let mut c = Config::new("pgpilot".into());
        assert!(c.validate().is_ok());
        c.ttl = 4;
        assert!(c.validate().is_err());
        c.ttl = 8;
        c.retry_timeout = 2;
        assert!(c.validate().is_ok());
        c.ttl = 20;
        c.retry_timeout = 10;
        assert!(c.validate().is_err());
    }
}
