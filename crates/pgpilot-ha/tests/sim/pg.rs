//! A simulated PostgreSQL server: just enough state for the HA invariants.
//!
//! The WAL is a list of records `(timeline, id)`; ids are unique in a run (client commits,
//! promotion and shutdown-checkpoint markers), so two WALs that hold the same record at the same
//! index share everything before it, and a fork after a promotion is visible as different records
//! at the same index. A replica streams from its upstream only while its WAL is a prefix of the
//! upstream's; a diverged one needs a rewind (truncate to the common prefix) or a clone.
//!
//! Two copies of the configuration exist, as in a real server: what is on disk (`Data::conf`,
//! written by the agent) and what is in force (`live_*`, read at start and on reload).

use pgpilot_ha::sync::Ssn;

/// Bytes per WAL record: LSNs are `index × LSN_UNIT`, so lag limits in bytes keep their meaning.
pub const LSN_UNIT: u64 = 8192;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rec {
    pub tl: u32,
    pub id: u64,
}

/// `Database cluster state` of pg_controldata.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    InProduction,
    ShutDown,
    ShutDownInRecovery,
    InArchiveRecovery,
}

/// The configuration files the agent writes: `standby.signal` + `primary_conninfo`
/// (`Some(upstream)`, `Some(None)` = standby without upstream) and `synchronous_standby_names`.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct Conf {
    pub standby: Option<Option<String>>,
    pub ssn: Ssn,
}

#[derive(Clone, Debug)]
pub struct Data {
    pub sysid: String,
    pub wal: Vec<Rec>,
    pub control: Control,
    /// On disk.
    pub conf: Conf,
}

impl Data {
    pub fn timeline(&self) -> u32 {
        self.wal.last().map_or(1, |r| r.tl)
    }

    pub fn lsn(&self) -> u64 {
        self.wal.len() as u64 * LSN_UNIT
    }

    /// Whether our WAL is a prefix of `other`'s (ids are unique: comparing the last record
    /// suffices).
    pub fn prefix_of(&self, other: &Data) -> bool {
        if self.sysid != other.sysid || self.wal.len() > other.wal.len() {
            return false;
        }
        match self.wal.last() {
            None => true,
            Some(r) => other.wal[self.wal.len() - 1] == *r,
        }
    }

    /// Whether the record `rec` sits at `index` of our WAL.
    pub fn has(&self, index: usize, rec: Rec) -> bool {
        self.wal.get(index) == Some(&rec)
    }

    /// Length of the common prefix with `other`.
    pub fn common_prefix(&self, other: &Data) -> usize {
        let mut k = self.wal.len().min(other.wal.len());
        while k > 0 && self.wal[k - 1] != other.wal[k - 1] {
            k -= 1;
        }
        k
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proc {
    Stopped,
    /// A postmaster exists but does not accept connections yet (`pg_ctl start` running).
    Starting,
    Running,
}

#[derive(Debug)]
pub struct Pg {
    pub data: Option<Data>,
    pub proc: Proc,
    pub in_recovery: bool,
    /// `synchronous_standby_names` in force.
    pub live_ssn: Ssn,
    /// `primary_conninfo` in force (replicas).
    pub live_upstream: Option<String>,
    /// SIGSTOPped with its host: answers nothing, streams nothing.
    pub frozen: bool,
    /// Indexes of local commits waiting for synchronous standbys.
    pub waiting: Vec<usize>,
}

impl Pg {
    pub fn new() -> Pg {
        Pg {
            data: None,
            proc: Proc::Stopped,
            in_recovery: false,
            live_ssn: Ssn::empty(),
            live_upstream: None,
            frozen: false,
            waiting: Vec::new(),
        }
    }

    pub fn running(&self) -> bool {
        self.proc == Proc::Running
    }

    /// Running as a primary (accepts writes unless frozen).
    pub fn writable(&self) -> bool {
        self.running() && !self.in_recovery
    }

    /// `pg_ctl start` began: the postmaster exists.
    pub fn begin_start(&mut self) {
        if self.proc == Proc::Stopped {
            self.proc = Proc::Starting;
        }
    }

    /// `pg_ctl start -w` returned: a standby when `standby.signal` exists, else a primary (on the
    /// same timeline: crash recovery does not switch timelines).
    pub fn finish_start(&mut self) -> Result<(), String> {
        if self.proc == Proc::Running {
            return Ok(());
        }
        if self.proc != Proc::Starting {
            return Err("postmaster is not running".into());
        }
        let Some(d) = self.data.as_mut() else {
            return Err("no data directory".into());
        };
        self.in_recovery = d.conf.standby.is_some();
        self.live_upstream = d.conf.standby.clone().flatten();
        self.live_ssn = d.conf.ssn.clone();
        d.control = if self.in_recovery {
            Control::InArchiveRecovery
        } else {
            Control::InProduction
        };
        self.proc = Proc::Running;
        Ok(())
    }

    /// Stops the server. `fast`: a clean shutdown (a primary writes a shutdown checkpoint,
    /// `ckpt_id`); otherwise immediate (or a crash): pg_controldata keeps its running state.
    /// Waiting commits are never acknowledged.
    pub fn stop(&mut self, fast: bool, ckpt_id: u64) {
        self.waiting.clear();
        if self.proc == Proc::Stopped {
            return;
        }
        let was_running = self.proc == Proc::Running;
        self.proc = Proc::Stopped;
        self.live_upstream = None;
        let Some(d) = self.data.as_mut() else { return };
        if fast && was_running {
            if self.in_recovery {
                d.control = Control::ShutDownInRecovery;
            } else {
                let tl = d.timeline();
                d.wal.push(Rec { tl, id: ckpt_id });
                d.control = Control::ShutDown;
            }
        }
    }

    /// `pg_ctl promote`: a new timeline (one past the newest this server knows), standby.signal
    /// removed.
    pub fn promote(&mut self, marker_id: u64) -> Option<u32> {
        if !self.running() || !self.in_recovery {
            return None;
        }
        let d = self.data.as_mut()?;
        let tl = d.wal.iter().map(|r| r.tl).max().unwrap_or(1) + 1;
        d.wal.push(Rec { tl, id: marker_id });
        d.control = Control::InProduction;
        d.conf.standby = None;
        self.in_recovery = false;
        self.live_upstream = None;
        Some(tl)
    }

    /// Writes the configuration files; returns whether anything changed on disk.
    pub fn write_conf(&mut self, conf: &Conf) -> bool {
        let Some(d) = self.data.as_mut() else {
            return false;
        };
        if d.conf == *conf {
            return false;
        }
        d.conf = conf.clone();
        true
    }

    /// `pg_ctl reload`: `synchronous_standby_names` and `primary_conninfo` (reloadable since
    /// PostgreSQL 13) take effect.
    pub fn reload(&mut self) {
        if !self.running() || self.frozen {
            return;
        }
        let Some(d) = self.data.as_ref() else { return };
        self.live_ssn = d.conf.ssn.clone();
        if self.in_recovery {
            self.live_upstream = d.conf.standby.clone().flatten();
        }
    }
}
