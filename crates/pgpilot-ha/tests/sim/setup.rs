//! What a seed draws before the run: the scheduler's generator ([`Rng`]), the cluster's
//! configuration ([`SimConfig`], its `/config` and the members' DCS clients), the watchdog
//! ([`WatchdogSim`]) and the deliberate bug the checker must catch ([`Bug`]).

use std::sync::Arc;
use std::time::Duration;

use pgpilot_config::SyncMode;
use pgpilot_dcs::memory::{MemoryDcs, MemoryStore};

use super::counting::{CountingDcs, Ops};

/// splitmix64: small, seedable, good enough for scheduling.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// A deliberately broken variant, to prove the checks are not vacuous.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bug {
    None,
    /// The lock lies: a member's attempt to take the leader key succeeds while another member
    /// holds it, so the agent promotes without the key (a broken DCS client or store).
    PromoteWithoutLock,
    /// The simulated primary acknowledges commits without waiting for synchronous standbys.
    AckAsync,
    /// The guard is armed but never stops PostgreSQL at its deadline.
    GuardNeverFences,
    /// The guard never fences and the watchdog, armed and pinged, never resets its member (a
    /// device whose timer does not fire): nothing fences a leader whose agent stopped renewing.
    NoFencing,
}

impl Bug {
    pub(super) fn watchdog_fires(self) -> bool {
        self != Bug::NoFencing
    }

    pub(super) fn guard_fences(self) -> bool {
        !matches!(self, Bug::GuardNeverFences | Bug::NoFencing)
    }
}

/// The watchdog of a run (`pgpilot_ha::watchdog`, Patroni's `watchdog` section).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WatchdogSim {
    /// No device (`mode: off`, or no `/dev/watchdog`): the guard alone fences.
    Off,
    /// `mode: automatic` with a working device and this `safety_margin` (seconds; -1: ttl/2).
    On { safety_margin: i64 },
}

impl WatchdogSim {
    /// `mode: automatic`, `safety_margin: 5`: Patroni's defaults, with a device present.
    pub const DEFAULT: WatchdogSim = WatchdogSim::On { safety_margin: 5 };
}

/// What a safety run sets for every seed: the members' watchdog and, when asked, the timing
/// (`PGPILOT_SIM_TIMING`) instead of Patroni's defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RunSettings {
    pub watchdog: WatchdogSim,
    pub timing: Option<Timing>,
}

impl From<WatchdogSim> for RunSettings {
    fn from(watchdog: WatchdogSim) -> Self {
        RunSettings {
            watchdog,
            timing: None,
        }
    }
}

/// `ttl`, `loop_wait` and `retry_timeout` of `/config`, in seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    pub ttl: u64,
    pub loop_wait: u64,
    pub retry_timeout: u64,
}

/// As `PGPILOT_SIM_TIMING` takes it: `ttl,loop_wait,retry_timeout`.
impl std::fmt::Display for Timing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{},{},{}", self.ttl, self.loop_wait, self.retry_timeout)
    }
}

/// The cluster configuration drawn for one seed.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub members: usize,
    pub sync_mode: SyncMode,
    pub strict: bool,
    pub node_count: usize,
    pub use_pg_rewind: bool,
    pub check_timeline: bool,
    /// `/config` is edited during the run (synchronous_mode off/on/quorum, strict).
    pub config_changes: bool,
    pub steps: usize,
    /// `ttl`, `loop_wait`, `retry_timeout` in seconds (Patroni's defaults, 30/10/10, unless a
    /// fleet run asks for others).
    pub ttl: u64,
    pub loop_wait: u64,
    pub retry_timeout: u64,
    /// The members' watchdog ([`WatchdogSim::DEFAULT`] unless the run asks for another).
    pub watchdog: WatchdogSim,
}

impl SimConfig {
    pub(super) fn draw(rng: &mut Rng) -> SimConfig {
        let members = match rng.below(10) {
            0..=6 => 3,
            7..=8 => 4,
            _ => 5,
        };
        let sync_mode = match rng.below(10) {
            0..=3 => SyncMode::Off,
            4..=6 => SyncMode::On,
            _ => SyncMode::Quorum,
        };
        SimConfig {
            members,
            sync_mode,
            strict: rng.chance(30),
            node_count: if rng.chance(25) { 2 } else { 1 },
            use_pg_rewind: rng.chance(90),
            check_timeline: rng.chance(50),
            config_changes: false,
            steps: 200,
            ttl: 30,
            loop_wait: 10,
            retry_timeout: 10,
            watchdog: WatchdogSim::DEFAULT,
        }
    }

    /// `/config` as written at bootstrap (`bootstrap.dcs`).
    pub fn config_doc(&self) -> String {
        let mode = match self.sync_mode {
            SyncMode::Off => serde_json::Value::Bool(false),
            SyncMode::On => serde_json::Value::Bool(true),
            SyncMode::Quorum => serde_json::Value::from("quorum"),
        };
        serde_json::json!({
            "ttl": self.ttl,
            "loop_wait": self.loop_wait,
            "retry_timeout": self.retry_timeout,
            "maximum_lag_on_failover": 1048576,
            "check_timeline": self.check_timeline,
            "synchronous_mode": mode,
            "synchronous_mode_strict": self.strict,
            "synchronous_node_count": self.node_count,
            "postgresql": {"use_pg_rewind": self.use_pg_rewind, "use_slots": true},
        })
        .to_string()
    }

    pub(super) fn active(&self) -> bool {
        self.sync_mode != SyncMode::Off
    }

    /// A member's DCS client, counting into `ops`.
    pub(super) fn client(&self, store: &MemoryStore, name: &str, ops: &Arc<Ops>) -> CountingDcs {
        let ttl = Duration::from_secs(self.ttl);
        let dcs = MemoryDcs::new(store.clone(), "service", "sim", name, ttl);
        CountingDcs::new(dcs, ops.clone(), ttl, Duration::from_secs(self.loop_wait))
    }
}
