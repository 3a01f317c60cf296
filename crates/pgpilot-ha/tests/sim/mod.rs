//! The deterministic simulation (DESIGN.md "Test layers" 3): several members, each a simulated
//! agent ([`agent`]) calling the real `decide()`, `manual_failover_from_leader` and `sync`
//! functions over one real `MemoryStore`, beside a simulated PostgreSQL ([`pg`]); a seeded
//! scheduler injects faults and client commits on tokio's paused clock; the safety invariants are
//! checked after every agent action and every scheduler step. Each agent's DCS client counts its
//! calls and the etcd requests they would cost ([`counting`]); the fleet run ([`fleet`]) runs many
//! clusters with faults at a set rate to turn those counts into rates per cluster.
//!
//! Beside that mirror of the agent's cycle, [`real`] runs the real `pgpilot_ha::Agent` over the
//! same `World` (its PostgreSQL, commits, guard and watchdog models and invariants), through the
//! seams of [`seams`] (`PgControl`, `Peers`, `GuardLink`, `WatchdogOpener`); its module docs say
//! what it models. What follows describes the mirror.
//!
//! One step: the clock moves by a random amount (every agent cycle, background task end and fault
//! end due on the way runs at its own time), a fault or request may be injected, replicas stream,
//! clients commit on every writable primary, commits are acknowledged per the primary's
//! `synchronous_standby_names` in force, agents whose time came run, invariants are checked.
//!
//! Modelled: bootstrap race, clone, rewind, start/stop/crash/promote of PostgreSQL with WAL
//! histories that can fork; synchronous and quorum replication with ssn on disk vs in force;
//! crash of a whole member, crash of PostgreSQL alone, kill of the agent alone (PostgreSQL keeps
//! running), freeze of the agent (and usually its PostgreSQL), possibly between deciding and
//! acting; DCS outage; isolation of one member (its DCS calls fail, it streams to nobody, peers
//! cannot read its `/patroni`); switchover requests with and without a candidate; `/config`
//! edits of synchronous_mode and strict; `/patroni` answers as of the peer's last cycle; watch
//! wake-ups; a failed DCS read costs retry_timeout; the guard (issue 12: armed by every
//! renewal until `ttl - margin`, a process apart that a freeze or kill of the agent leaves
//! running, stopping PostgreSQL at its deadline), so the invariants make no exception for a
//! frozen or killed agent's primary; the watchdog ([`WatchdogSim`], on by default with
//! Patroni's `safety_margin` 5; a run may turn it off or change the margin): activated as the
//! agent does (after taking or renewing the key as leader, after bootstrap) with timeout
//! `ttl - safety_margin` (`ttl / 2` for -1; none below `loop_wait`), pinged by every successful
//! renewal of an agent that activated it, closed where the agent closes it (no key and no
//! primary), left counting by an agent that is killed or exits; at its deadline it resets the
//! whole member at that instant, as a member crash does (agent, guard and postmaster, frozen or
//! not), and the member comes back 1 to 60 s later.
//!
//! The watchdog gap. A frozen agent may have decided to renew the leader key before its freeze;
//! thawed after the key expired, `update_leader` re-creates it without a race (both backends
//! do, as Patroni's etcd3 does) and it goes on leading on an old view. The guard has stopped
//! its primary meanwhile, but the re-created leadership may still cost acknowledged commits:
//! those are excused as the gap's (`gap_mark`, `Stats::gap_lost`).
//!
//! The watchdog closes the gap for an agent that activated it, that is for a leader running
//! its primary: every successful renewal pings the device, so it fires at most
//! `ttl - safety_margin` after the last renewal, `safety_margin` before the key can expire, and
//! an agent frozen past its key's expiry has been reset with its pending decision. (An agent
//! restarted while its predecessor's device counts renews without pinging until it activates,
//! so the old, earlier deadline stands.) Such a stale renewal is a violation (invariant 4), not
//! excused. It does not close it for a key holder whose watchdog is not active, because the
//! agent arms the watchdog only for primary duty (as Patroni's `enforce_primary_role` does) and
//! closes it once PostgreSQL is stopped or in recovery without the key: a leader that demoted
//! (offline, after a DCS outage) or whose PostgreSQL crashed, and holds or gets the key back
//! while PostgreSQL starts (`UpdateLockDuring`; `StartPostgres` with `renew_lock_first` in a
//! restarted agent, whose watchdog is not active yet), renews without any device armed; frozen
//! between deciding and acting, thawed after the key expired, it re-creates the key (seed 1178:
//! DemoteOffline, then `UpdateLockDuring { Start }`, frozen 50 s; the guard stops the starting
//! PostgreSQL, the thawed agent re-creates the key). Those renewals are still excused as the
//! gap's, counted in `Stats::unwatched_stale_renewals`; none has lost an acknowledged commit in
//! the sweeps (`gap_lost` 0). Closing them is a matter for `update_leader` (not re-creating a
//! key that is gone), not for the watchdog. The guard still fences where the watchdog is not
//! armed or fires later: a killed agent's orphaned guard keeps its deadline after the restarted
//! agent re-armed the watchdog, a starting PostgreSQL under the key, a `safety_margin` below the
//! guard's `ttl / 10`, a timeout below `loop_wait`.
//!
//! Not modelled: pause, scheduled switchovers and restarts, REST restart/reinitialize, failsafe,
//! standby clusters, tags (nofailover, nosync, priorities, replicatefrom, clonefrom), slots,
//! `watchdog.mode: required` (a member without a device refusing leadership; every device here
//! opens), watchdog devices that ignore the timeout asked for or can not be disabled, the lease
//! keeper (no cycle here waits longer than a failed DCS read),
//! archive/restore_command, failing pg_rewind or basebackup (they fail only when their
//! source is unavailable), graceful agent shutdown (`leave_sync_duty`), synchronous_commit levels
//! other than flush, maximum_lag_on_syncnode, ttl/loop_wait changes, a stale watch cache in the
//! DCS client (memory reads are linearizable), asymmetric partitions, DCS latency other than the
//! failing read.

pub mod agent;
pub mod counting;
pub mod fleet;
pub mod pg;
pub mod real;
pub mod seams;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use pgpilot_config::{DynamicConfig, SyncMode};
use pgpilot_dcs::memory::{MemoryDcs, MemoryStore};
use pgpilot_dcs::{Cluster, Dcs};
use tokio::time::Instant;

use agent::{trace, Agent, Pending};
use counting::{CountingDcs, Ops};
use pg::{Pg, Rec};

/// Polls a future that never waits (the memory DCS never does) to completion.
pub fn ready<T>(f: impl Future<Output = T>) -> T {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("a simulated call waited"),
    }
}

/// Polls a future once: `None` if it would wait.
pub fn poll_once<T>(f: impl Future<Output = T>) -> Option<T> {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => Some(v),
        Poll::Pending => None,
    }
}

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
    /// A replica that cannot reach the leader promotes without the leader key.
    PromoteWithoutLock,
    /// The simulated primary acknowledges commits without waiting for synchronous standbys.
    AckAsync,
    /// The watchdog is armed and pinged but never resets its member (a device whose timer does
    /// not fire), while the run counts on it.
    WatchdogNeverFires,
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

    /// The device timeout the agent arms for `ttl` and `loop_wait` (`WatchdogConfig::timeout`),
    /// `None` when it arms none: off, or a timeout the real agent refuses as unsafe (below
    /// `loop_wait`: "Watchdog not supported because leader TTL ... is less than 2x loop_wait";
    /// outside 1..65535: "Invalid timeout"; in automatic mode it then leads without one).
    pub fn timeout(self, ttl: Duration, loop_wait: Duration) -> Option<Duration> {
        let WatchdogSim::On { safety_margin } = self else {
            return None;
        };
        let cfg = pgpilot_config::WatchdogConfig {
            safety_margin,
            ..Default::default()
        };
        let t = cfg.timeout(ttl);
        let loop_wait = i64::try_from(loop_wait.as_secs()).unwrap_or(i64::MAX);
        ((1..0xFFFF).contains(&t) && t >= loop_wait).then(|| Duration::from_secs(t.unsigned_abs()))
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
    pub sysid: String,
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
    fn draw(rng: &mut Rng) -> SimConfig {
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
            sysid: "7000000000000000001".into(),
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

    fn dynamic(&self) -> DynamicConfig {
        let doc: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(&self.config_doc()).expect("config json");
        DynamicConfig::from_document(&doc).0
    }

    fn active(&self) -> bool {
        self.sync_mode != SyncMode::Off
    }

    /// A member's DCS client, counting into `ops`.
    fn client(&self, store: &MemoryStore, name: &str, ops: &Arc<Ops>) -> CountingDcs {
        let ttl = Duration::from_secs(self.ttl);
        let dcs = MemoryDcs::new(store.clone(), "service", "sim", name, ttl);
        CountingDcs::new(dcs, ops.clone(), ttl, Duration::from_secs(self.loop_wait))
    }
}

/// A fleet run's faults: one at a time, at exponentially distributed intervals of mean
/// `mean`, drawn from the seeded scheduler's usual mix (`World::inject`).
#[derive(Clone, Debug)]
pub struct FaultPlan {
    pub mean: Duration,
    pub next_at: Option<Instant>,
}

pub struct Member {
    pub name: String,
    pub pg: Pg,
    /// `None` while the agent process is down.
    pub agent: Option<Agent>,
    /// When the agent comes back (after a crash).
    pub restart_at: Option<Instant>,
    /// SIGSTOPped (the agent, and the PostgreSQL when `pg.frozen`) until then.
    pub frozen_until: Option<Instant>,
    pub partitioned: bool,
    pub partition_until: Option<Instant>,
    /// The agent has not completed a cycle since it was frozen or restarted (shown in the
    /// trace; the invariants hold through it: the guard fences its primary, the watchdog resets
    /// a frozen leader).
    pub gap: bool,
    /// The guard of the running agent, while armed: its deadline (`pgpilot_ha::guard`). It is a
    /// process of its own: a freeze of the agent does not stop it.
    pub guard: Option<Instant>,
    /// The guard of an agent that was killed or exited while armed: it keeps its deadline and
    /// fences at it, whatever the restarted agent does (as the real one does).
    pub orphan_guard: Option<Instant>,
    /// The watchdog device, while armed: the instant it resets the member unless pinged. Like
    /// the real device it outlives its agent (a device closed without the magic `V` keeps
    /// counting): a killed or exited agent leaves it armed, and a restarted agent takes it
    /// over only when it activates the watchdog again.
    pub watchdog: Option<Instant>,
    /// A real agent's ([`real`]) synchronous mode as of the last `/config` it read (the mirror
    /// agent's is its `dynamic`).
    pub sync_seen: bool,
}

/// An acknowledged commit.
#[derive(Clone, Debug)]
pub struct Ack {
    pub rec: Rec,
    pub index: usize,
    pub member: String,
    pub at: Duration,
    /// Acknowledged while synchronous mode was on (in `/config` and for the acknowledging
    /// agent), in the current synchronous epoch (see `World::mode_epoch`).
    pub sync_mode: bool,
    pub epoch: u64,
    /// Known bug K2: acknowledged with an empty ssn while `/sync` still named standbys who may
    /// win a race without this commit.
    pub k2: bool,
    pub lost: bool,
}

#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub seeds: u64,
    pub steps: u64,
    pub cycles: u64,
    pub commits: u64,
    pub acked: u64,
    pub promotions: u64,
    pub switchovers_requested: u64,
    pub faults: BTreeMap<&'static str, u64>,
    /// Acknowledged commits lost in asynchronous mode (allowed), and synchronous ones
    /// acknowledged before a thawed agent re-created an expired leader key (`gap_mark`;
    /// excused only in runs without a watchdog, module docs).
    pub async_lost: u64,
    pub gap_lost: u64,
    /// PostgreSQL stopped by a guard at its deadline.
    pub fences: u64,
    /// Members reset by their watchdog (not pinged in time).
    pub watchdog_resets: u64,
    /// Thawed agents that renewed the leader key on a decision taken before their freeze while
    /// the key was gone (a violation, invariant 4, if their watchdog was active).
    pub stale_renewals: u64,
    /// Of those, in runs with a watchdog: agents that held the key without an active watchdog
    /// (the part of the gap the watchdog leaves open, module docs).
    pub unwatched_stale_renewals: u64,
    /// Seeds that ended without a writable leader after the quiet period.
    pub no_leader_at_end: u64,
    pub no_leader_why: BTreeMap<&'static str, u64>,
    /// The agent exited (Decision::Fatal or a failed bootstrap), by message.
    pub fatal: BTreeMap<String, u64>,
    /// Acknowledged commits lost to known bugs (tolerated in the main run), and in how many
    /// seeds.
    pub known_lost: BTreeMap<&'static str, u64>,
    pub known_seeds: BTreeMap<&'static str, u64>,
    pub by_mode: BTreeMap<String, u64>,
}

impl Stats {
    pub fn add(&mut self, o: &Stats) {
        self.seeds += o.seeds;
        self.steps += o.steps;
        self.cycles += o.cycles;
        self.commits += o.commits;
        self.acked += o.acked;
        self.promotions += o.promotions;
        self.switchovers_requested += o.switchovers_requested;
        for (k, v) in &o.faults {
            *self.faults.entry(k).or_default() += v;
        }
        self.async_lost += o.async_lost;
        self.gap_lost += o.gap_lost;
        self.stale_renewals += o.stale_renewals;
        self.unwatched_stale_renewals += o.unwatched_stale_renewals;
        self.fences += o.fences;
        self.watchdog_resets += o.watchdog_resets;
        self.no_leader_at_end += o.no_leader_at_end;
        for (k, v) in &o.no_leader_why {
            *self.no_leader_why.entry(k).or_default() += v;
        }
        for (k, v) in &o.fatal {
            *self.fatal.entry(k.clone()).or_default() += v;
        }
        for (k, v) in &o.known_lost {
            *self.known_lost.entry(k).or_default() += v;
        }
        for (k, v) in &o.known_seeds {
            *self.known_seeds.entry(k).or_default() += v;
        }
        for (k, v) in &o.by_mode {
            *self.by_mode.entry(k.clone()).or_default() += v;
        }
    }
}

pub struct World {
    pub cfg: SimConfig,
    pub bug: Bug,
    pub rng: Rng,
    pub store: MemoryStore,
    checker: MemoryDcs,
    pub members: Vec<Member>,
    pub tracing: bool,
    /// The last lines of the trace (all of them when tracing).
    pub trace: Vec<String>,
    ids: u64,
    pub acks: Vec<Ack>,
    pub stats: Stats,
    dcs_down_until: Option<Instant>,
    start: Instant,
    pub violation: Option<String>,
    /// Count known policy bugs instead of failing on them.
    pub tolerate_known: bool,
    /// A known bug lost commits in this run: later losses follow from it (diverged histories
    /// that are never repaired) and are counted with it.
    tainted: Option<&'static str>,
    /// Commits acknowledged before the last promotion of known bug K3 (it weakened their
    /// protection): `acks[..k3_mark]`.
    k3_mark: usize,
    /// Bumped when synchronous mode is turned on or off.
    mode_epoch: u64,
    /// Commits acknowledged before the last stale renewal of a thawed agent (`acks[..gap_mark]`):
    /// losing them is the watchdog gap's doing (set only in runs without a watchdog).
    gap_mark: usize,
    step: usize,
    /// The checker's view of the store, dropped on every DCS call and every clock advance.
    cache: std::cell::RefCell<Option<Cluster>>,
    /// The agents' DCS calls, counted (`counting`).
    pub ops: Arc<Ops>,
    /// Clients commit on every writable primary (off: an idle cluster).
    pub writes: bool,
    /// `None`: the seeded scheduler may inject a fault or request every step (the safety
    /// run); `Some`: faults at the plan's rate only (a fleet run).
    pub fault_plan: Option<FaultPlan>,
    /// The members are real agents ([`real`]), none of them a mirror `Agent`: an acknowledged
    /// commit counts as synchronous when `/config` says so (no run of theirs edits it).
    pub real_agents: bool,
}

impl World {
    pub fn new(seed: u64, bug: Bug, tracing: bool) -> World {
        let mut rng = Rng::new(seed);
        let mut cfg = SimConfig::draw(&mut rng);
        // Drawn apart so that the seeds of the other draws keep their meaning.
        cfg.config_changes = Rng::new(seed ^ 0xC0F1_6C4A_4E6E_5000).chance(30);
        World::with_config(cfg, rng, bug, tracing)
    }

    /// A world for `cfg`, scheduled by `rng` from here on.
    pub fn with_config(cfg: SimConfig, mut rng: Rng, bug: Bug, tracing: bool) -> World {
        let store = MemoryStore::new();
        let now = Instant::now();
        let ttl = Duration::from_secs(cfg.ttl);
        let ops = Arc::new(Ops::default());
        let members = (0..cfg.members)
            .map(|k| {
                let name = format!("pg{}", k + 1);
                let dcs = cfg.client(&store, &name, &ops);
                let mut agent = Agent::new(dcs, cfg.dynamic(), now);
                // Agents start within the first loop_wait, in seeded order.
                agent.next_run = now + Duration::from_millis(rng.below(10_000));
                Member {
                    name,
                    pg: Pg::new(),
                    agent: Some(agent),
                    restart_at: None,
                    frozen_until: None,
                    partitioned: false,
                    partition_until: None,
                    gap: false,
                    guard: None,
                    orphan_guard: None,
                    watchdog: None,
                    sync_seen: false,
                }
            })
            .collect();
        let checker = MemoryDcs::new(store.clone(), "service", "sim", "checker", ttl);
        let mut stats = Stats {
            seeds: 1,
            ..Default::default()
        };
        stats.by_mode.insert(
            format!(
                "{:?}{} n={}{}",
                cfg.sync_mode,
                if cfg.strict { " strict" } else { "" },
                cfg.node_count,
                if cfg.config_changes { " +changes" } else { "" }
            ),
            1,
        );
        World {
            cfg,
            bug,
            rng,
            store,
            checker,
            members,
            tracing,
            trace: Vec::new(),
            ids: 0,
            acks: Vec::new(),
            stats,
            dcs_down_until: None,
            start: now,
            violation: None,
            tolerate_known: true,
            tainted: None,
            k3_mark: 0,
            mode_epoch: 0,
            gap_mark: 0,
            step: 0,
            cache: std::cell::RefCell::new(None),
            ops,
            writes: true,
            fault_plan: None,
            real_agents: false,
        }
    }

    pub fn now(&self) -> Instant {
        Instant::now()
    }

    fn elapsed(&self) -> Duration {
        self.now() - self.start
    }

    pub fn next_id(&mut self) -> u64 {
        self.ids += 1;
        self.ids
    }

    pub fn trace_line(&mut self, line: String) {
        self.trace.push(line);
    }

    pub fn index(&self, name: &str) -> Option<usize> {
        self.members.iter().position(|m| m.name == name)
    }

    /// Whether `i` and `j` can talk (a partition isolates one member from everyone).
    pub fn reachable(&self, i: usize, j: usize) -> bool {
        i == j || (!self.members[i].partitioned && !self.members[j].partitioned)
    }

    /// Whether replica `j`'s walreceiver streams from `p`.
    pub fn connected(&self, j: usize, p: usize) -> bool {
        if j == p {
            return false;
        }
        let (r, u) = (&self.members[j].pg, &self.members[p].pg);
        r.running()
            && r.in_recovery
            && !r.frozen
            && r.live_upstream.as_deref() == Some(self.members[p].name.as_str())
            && u.running()
            && !u.frozen
            && self.reachable(j, p)
            && match (&r.data, &u.data) {
                (Some(a), Some(b)) => a.prefix_of(b),
                _ => false,
            }
    }

    pub fn upstream_of(&self, j: usize) -> Option<usize> {
        let up = self.members[j].pg.live_upstream.as_deref()?;
        let p = self.index(up)?;
        self.connected(j, p).then_some(p)
    }

    /// Fast shutdown: a primary's walsenders send everything up to the shutdown checkpoint to
    /// the standbys connected at that moment before they exit.
    pub fn stop_fast(&mut self, i: usize, ckpt_id: u64) {
        let was_primary = self.members[i].pg.writable();
        let receivers: Vec<usize> = (0..self.members.len())
            .filter(|&j| was_primary && self.connected(j, i))
            .collect();
        self.members[i].pg.stop(true, ckpt_id);
        if let Some(d) = self.members[i].pg.data.clone() {
            for j in receivers {
                if let Some(r) = self.members[j].pg.data.as_mut() {
                    r.wal = d.wal.clone();
                }
            }
        }
    }

    /// Forgets the checker's view (the store may have changed).
    pub fn invalidate(&self) {
        *self.cache.borrow_mut() = None;
    }

    fn checker_cluster(&self) -> Cluster {
        if let Some(c) = self.cache.borrow().as_ref() {
            return c.clone();
        }
        let c = self.read_store();
        *self.cache.borrow_mut() = Some(c.clone());
        c
    }

    fn read_store(&self) -> Cluster {
        let down = self.dcs_down_until.is_some();
        if down {
            self.store.set_available(true);
        }
        let c = ready(self.checker.cluster()).expect("checker read");
        if down {
            self.store.set_available(false);
        }
        c
    }

    /// Guards whose deadline passed stop their member's PostgreSQL at once, a frozen postmaster
    /// too (the SIGKILL that follows reaches a stopped process). The real guard starts a fast
    /// shutdown a second earlier, which only ends writability sooner: stopping at the deadline
    /// is the later, harder case for the invariants.
    fn fence(&mut self) {
        let now = self.now();
        for i in 0..self.members.len() {
            let m = &mut self.members[i];
            let due = [m.guard, m.orphan_guard]
                .into_iter()
                .flatten()
                .any(|t| t <= now);
            if !due {
                continue;
            }
            if m.guard.is_some_and(|t| t <= now) {
                m.guard = None;
            }
            if m.orphan_guard.is_some_and(|t| t <= now) {
                m.orphan_guard = None;
            }
            if m.pg.proc == pg::Proc::Stopped {
                continue;
            }
            let id = self.next_id();
            let m = &mut self.members[i];
            m.pg.stop(false, id);
            m.pg.frozen = false;
            self.stats.fences += 1;
            trace!(
                self,
                "event: the guard of {} stops its PostgreSQL at the lease deadline",
                self.members[i].name
            );
        }
    }

    /// The whole member goes down (a crash, or a reset by its watchdog) and its agent comes
    /// back at `back`: every process dies (agent, guard, postmaster, a SIGSTOPped one too) and
    /// the watchdog is not armed after the reboot. A partition stays (the network is not the
    /// member's).
    fn crash_member(&mut self, i: usize, back: Instant) {
        let id = self.next_id();
        let m = &mut self.members[i];
        m.pg.stop(false, id);
        m.pg.frozen = false;
        m.agent = None;
        m.frozen_until = None;
        m.guard = None;
        m.orphan_guard = None;
        m.watchdog = None;
        m.restart_at = Some(back);
    }

    /// Watchdogs not pinged in time reset their member, at their deadline, like a member crash
    /// (Patroni's watchdog resets the host). The member comes back after a reboot of 1 to 60 s.
    fn watchdog_resets(&mut self) {
        let now = self.now();
        for i in 0..self.members.len() {
            if self.members[i].watchdog.is_none_or(|t| t > now) {
                continue;
            }
            if self.bug == Bug::WatchdogNeverFires {
                self.members[i].watchdog = None;
                continue;
            }
            let back = now + Duration::from_millis(1000 + self.rng.below(59_000));
            trace!(
                self,
                "event: the watchdog of {} was not pinged in time: it resets the member, back at +{:?}",
                self.members[i].name,
                back - now
            );
            self.stats.watchdog_resets += 1;
            self.crash_member(i, back);
        }
    }

    /// initdb started PostgreSQL; the agent takes the leader key when it reaps the task.
    fn bootstrapping(&self, i: usize) -> bool {
        self.members[i]
            .agent
            .as_ref()
            .and_then(|a| a.task.as_ref())
            .is_some_and(|t| t.kind == pgpilot_ha::ActionKind::Bootstrap)
    }

    pub fn fatal(&mut self, i: usize, msg: &str) {
        let name = self.members[i].name.clone();
        *self
            .stats
            .fatal
            .entry(msg.replace(&name, "<me>"))
            .or_default() += 1;
        trace!(
            self,
            "  {}: FATAL {msg}; the agent exits (restarted in 10 s)",
            self.members[i].name
        );
        let now = self.now();
        let m = &mut self.members[i];
        m.agent = None;
        m.gap = true;
        m.restart_at = Some(now + Duration::from_secs(10));
        m.orphan_guard = m.guard.take().max(m.orphan_guard);
    }

    fn violate(&mut self, msg: String) {
        if self.violation.is_none() {
            trace!(self, "VIOLATION: {msg}");
            self.violation = Some(msg);
        }
    }

    /// Invariant 2 at a promotion.
    /// `known`: the promotion is an instance of a known bug; with `tolerate_known` its losses
    /// are counted instead of failing the run.
    pub fn on_promote(&mut self, i: usize, known: Option<&'static str>) {
        self.stats.promotions += 1;
        let name = self.members[i].name.clone();
        let Some(d) = self.members[i].pg.data.clone() else {
            return;
        };
        trace!(
            self,
            "  {name}: PROMOTED to timeline {} at lsn {}",
            d.timeline(),
            d.wal.len()
        );
        if known == Some("K3") && self.tolerate_known {
            self.k3_mark = self.acks.len();
        }
        let what = match known {
            Some(k) => format!("promotion of {name} (known bug {k})"),
            None => format!("promotion of {name}"),
        };
        self.check_lost(&d, &what, known.filter(|_| self.tolerate_known));
    }

    fn check_lost(&mut self, d: &pg::Data, what: &str, known: Option<&'static str>) {
        let sync = self.cfg.active();
        let epoch = self.mode_epoch;
        let mut violation = None;
        let k3_mark = self.k3_mark;
        let gap_mark = self.gap_mark;
        for (n, a) in self.acks.iter_mut().enumerate().filter(|(_, a)| !a.lost) {
            if d.has(a.index, a.rec) {
                continue;
            }
            a.lost = true;
            if !sync || !a.sync_mode || a.epoch != epoch {
                self.stats.async_lost += 1;
            } else if n < gap_mark {
                self.stats.gap_lost += 1;
            } else if let Some(k) = known.or(self.tainted).or((n < k3_mark).then_some("K3")) {
                *self.stats.known_lost.entry(k).or_default() += 1;
                self.tainted = Some(k);
            } else if a.k2 && self.tolerate_known {
                *self.stats.known_lost.entry("K2").or_default() += 1;
                self.tainted = Some("K2");
            } else if violation.is_none() {
                violation = Some(format!(
                    "invariant 2: {what} loses commit {} (acknowledged by {} at {:?}, wal index {}{})",
                    a.rec.id,
                    a.member,
                    a.at,
                    a.index,
                    if a.k2 {
                        ", with an empty ssn while /sync named voters: known bug K2"
                    } else {
                        ""
                    }
                ));
            }
        }
        if let Some(v) = violation {
            self.violate(v);
        }
    }

    pub fn dcs_down(&self) -> bool {
        self.dcs_down_until.is_some()
    }

    pub fn leader_holder(&self) -> Option<String> {
        self.checker_cluster().leader_name().map(str::to_string)
    }

    pub fn mark_gap(&mut self) {
        self.gap_mark = self.acks.len();
    }

    /// Synchronous mode, `/sync` led by `p` names standbys (read only when ssn is empty).
    fn quorum_voters_listed(&self, p: usize) -> bool {
        if !self.cfg.active() {
            return false;
        }
        let c = self.checker_cluster();
        c.sync.as_ref().is_some_and(|s| {
            s.leader.as_deref() == Some(self.members[p].name.as_str())
                && s.voters().next().is_some()
        })
    }

    /// Invariants 1 and 3, after every action. Nothing excuses a frozen or killed agent's
    /// primary: its guard fences it before its key can expire.
    fn check(&mut self) {
        let writable: Vec<usize> = (0..self.members.len())
            .filter(|&i| self.members[i].pg.writable())
            .collect();
        if writable.len() > 1 {
            let names: Vec<&str> = writable
                .iter()
                .map(|&i| self.members[i].name.as_str())
                .collect();
            self.violate(format!("invariant 1: two writable primaries {names:?}"));
        }
        let now = self.now();
        for i in writable {
            // A member about to run again at this instant (`run_again`) is judged after it did.
            if self.bootstrapping(i) || self.due(i) {
                continue;
            }
            let m = &self.members[i];
            // A killed agent renews nothing: its primary must hold the key (until its guard
            // fences it, before the key can expire).
            let last_renewal = m.agent.as_ref().and_then(|a| a.last_renewal);
            let ttl = m
                .agent
                .as_ref()
                .map_or(Duration::from_secs(self.cfg.ttl), |a| a.dynamic.ttl);
            let renewed = last_renewal.is_some_and(|t| now - t < ttl);
            if renewed {
                continue;
            }
            let c = self.checker_cluster();
            let holds = c.leader_name() == Some(m.name.as_str());
            // A bootstrap whose DCS writes failed leaves its primary running while the agent
            // exits (`finish_bootstrap`); nobody else has data until `/initialize` holds a
            // system identifier, so that window is not a split brain.
            let bootstrapped = c
                .initialize
                .as_deref()
                .is_some_and(pgpilot_ha::decide::valid_sysid);
            // The real agent's bootstrap publishes `/initialize`, `/config` and the key in three
            // requests, each taking time (`real`, where every initdb draws its own system
            // identifier): between the first and the last its primary runs without the key, and
            // is still the only data directory of its cluster.
            let sysid = m.pg.data.as_ref().map(|d| d.sysid.as_str());
            let alone = self.real_agents
                && (0..self.members.len()).all(|j| {
                    j == i || self.members[j].pg.data.as_ref().map(|d| d.sysid.as_str()) != sysid
                });
            if !holds && bootstrapped && !alone {
                let msg = format!(
                    "invariant 3: {} runs a writable primary without the leader key (held by {:?}) and last renewed {:?} ago",
                    m.name,
                    c.leader_name(),
                    last_renewal.map(|t| now - t)
                );
                self.violate(msg);
            }
        }
    }

    fn client_writes(&mut self) {
        if !self.writes {
            return;
        }
        for i in 0..self.members.len() {
            let pg = &self.members[i].pg;
            if !pg.writable() || pg.frozen || self.bootstrapping(i) {
                continue;
            }
            let n = self.rng.below(3);
            for _ in 0..n {
                let id = self.next_id();
                let pg = &mut self.members[i].pg;
                let d = pg.data.as_mut().expect("data");
                let rec = Rec {
                    tl: d.timeline(),
                    id,
                };
                d.wal.push(rec);
                pg.waiting.push(d.wal.len() - 1);
                self.stats.commits += 1;
            }
        }
    }

    fn acknowledge(&mut self) {
        let at = self.elapsed();
        for p in 0..self.members.len() {
            let pg = &self.members[p].pg;
            if !pg.writable() || pg.frozen || pg.waiting.is_empty() {
                continue;
            }
            let ssn = pg.live_ssn.clone();
            let waiting = pg.waiting.clone();
            let mut still = Vec::new();
            let sync_mode = self.cfg.active()
                && if self.real_agents {
                    self.members[p].sync_seen
                } else {
                    self.members[p]
                        .agent
                        .as_ref()
                        .is_some_and(|a| a.sync_params().active())
                };
            let epoch = self.mode_epoch;
            let k2 = ssn.is_empty() && self.quorum_voters_listed(p);
            for idx in waiting {
                let have = ssn
                    .names
                    .iter()
                    .filter_map(|n| self.index(n))
                    .filter(|&j| {
                        self.connected(j, p)
                            && self.members[j]
                                .pg
                                .data
                                .as_ref()
                                .is_some_and(|d| d.wal.len() > idx)
                    })
                    .count();
                if ssn.is_empty() || have >= ssn.numsync || self.bug == Bug::AckAsync {
                    let rec = self.members[p].pg.data.as_ref().expect("data").wal[idx];
                    self.acks.push(Ack {
                        rec,
                        index: idx,
                        member: self.members[p].name.clone(),
                        at,
                        sync_mode,
                        epoch,
                        k2,
                        lost: false,
                    });
                    self.stats.acked += 1;
                } else {
                    still.push(idx);
                }
            }
            self.members[p].pg.waiting = still;
        }
    }

    fn replicate(&mut self) {
        for j in 0..self.members.len() {
            let Some(p) = self.upstream_of(j) else {
                continue;
            };
            let src = self.members[p].pg.data.as_ref().expect("data");
            let have = self.members[j].pg.data.as_ref().expect("data").wal.len();
            let missing = src.wal.len() - have;
            if missing == 0 {
                continue;
            }
            let take = if self.rng.chance(70) {
                missing
            } else {
                1 + self.rng.below(missing as u64) as usize
            };
            let recs: Vec<Rec> = src.wal[have..have + take].to_vec();
            self.members[j]
                .pg
                .data
                .as_mut()
                .expect("data")
                .wal
                .extend(recs);
        }
    }

    /// Ends faults that are due: restarts, thaws, healed partitions, the DCS back.
    fn end_faults(&mut self) {
        self.fence();
        self.watchdog_resets();
        let now = self.now();
        if self.dcs_down_until.is_some_and(|t| t <= now) {
            self.dcs_down_until = None;
            self.store.set_available(true);
            self.invalidate();
            trace!(self, "event: DCS available again");
        }
        for i in 0..self.members.len() {
            let m = &mut self.members[i];
            if m.restart_at.is_some_and(|t| t <= now) {
                m.restart_at = None;
                let dcs = self.cfg.client(&self.store, &m.name, &self.ops);
                m.agent = Some(Agent::new(dcs, self.cfg.dynamic(), now));
                trace!(self, "event: {} agent restarted", self.members[i].name);
            }
            let m = &mut self.members[i];
            if m.frozen_until.is_some_and(|t| t <= now) {
                m.frozen_until = None;
                m.pg.frozen = false;
                if let Some(a) = m.agent.as_mut() {
                    if let Some((t, _)) = a.pending.as_mut() {
                        *t = now;
                    }
                }
                trace!(self, "event: {} thawed", self.members[i].name);
            }
            let m = &mut self.members[i];
            if m.partition_until.is_some_and(|t| t <= now) {
                m.partition_until = None;
                m.partitioned = false;
                trace!(self, "event: {} partition healed", self.members[i].name);
            }
        }
    }

    fn fault(&mut self, what: &'static str) {
        *self.stats.faults.entry(what).or_default() += 1;
    }

    fn faulty(&self) -> usize {
        self.members
            .iter()
            .filter(|m| {
                m.agent.is_none()
                    || m.frozen_until.is_some()
                    || m.partitioned
                    || m.restart_at.is_some()
            })
            .count()
    }

    /// The seeded scheduler's choice of fault or request for this step.
    fn inject(&mut self) {
        let now = self.now();
        let n = self.members.len() as u64;
        let i = self.rng.below(n) as usize;
        let name = self.members[i].name.clone();
        let secs = |rng: &mut Rng, lo: u64, hi: u64| {
            Duration::from_millis(lo * 1000 + rng.below((hi - lo) * 1000))
        };
        let healthy = self.members[i].agent.is_some()
            && self.members[i].frozen_until.is_none()
            && !self.members[i].partitioned;
        let room = self.faulty() < 2;
        match self.rng.below(1000) {
            0..=7 if healthy && room => {
                let d = secs(&mut self.rng, 1, 60);
                trace!(
                    self,
                    "event: crash {name} (agent and PostgreSQL), back in {d:?}"
                );
                self.fault("crash member");
                self.crash_member(i, now + d);
            }
            8..=13
                if self.members[i].pg.proc != pg::Proc::Stopped && !self.members[i].pg.frozen =>
            {
                trace!(self, "event: crash PostgreSQL of {name}");
                self.fault("crash postgres");
                let id = self.next_id();
                self.members[i].pg.stop(false, id);
            }
            14..=19 if healthy && room => {
                let d = secs(&mut self.rng, 1, 40);
                trace!(
                    self,
                    "event: kill the agent of {name} (PostgreSQL keeps running), back in {d:?}"
                );
                self.fault("kill agent");
                let m = &mut self.members[i];
                m.agent = None;
                m.orphan_guard = m.guard.take().max(m.orphan_guard);
                m.gap = true;
                m.restart_at = Some(now + d);
            }
            20..=29 if healthy && room => {
                let d = secs(&mut self.rng, 1, 60);
                let with_pg = self.rng.chance(70);
                let mid_cycle = self.rng.chance(50)
                    && self.members[i]
                        .agent
                        .as_ref()
                        .is_some_and(|a| a.pending.is_none());
                trace!(self, "event: freeze {name} for {d:?} (postgres too: {with_pg}, mid-cycle: {mid_cycle})");
                self.fault("freeze");
                self.members[i].frozen_until = Some(now + d);
                self.members[i].gap = true;
                if mid_cycle {
                    // The freeze cuts a cycle between deciding and acting.
                    match self.call_cluster(i) {
                        Some(c) => self.cycle_rest(i, Some(c), false),
                        None => {
                            let rt = self.members[i]
                                .agent
                                .as_ref()
                                .expect("agent")
                                .dynamic
                                .retry_timeout;
                            self.members[i].agent.as_mut().expect("agent").pending =
                                Some((now + d + rt, Pending::AfterDcsError));
                        }
                    }
                }
                self.members[i].pg.frozen = with_pg;
            }
            30..=33 if self.dcs_down_until.is_none() => {
                let d = secs(&mut self.rng, 1, 40);
                trace!(self, "event: DCS outage for {d:?}");
                self.fault("dcs outage");
                self.store.set_available(false);
                self.invalidate();
                self.dcs_down_until = Some(now + d);
            }
            34..=41 if healthy && room => {
                let d = secs(&mut self.rng, 1, 60);
                trace!(self, "event: partition {name} for {d:?}");
                self.fault("partition");
                self.members[i].partitioned = true;
                self.members[i].partition_until = Some(now + d);
            }
            52..=56 if self.cfg.config_changes && self.dcs_down_until.is_none() => {
                self.edit_config();
            }
            42..=51 if self.dcs_down_until.is_none() => self.request_switchover(),
            _ => {}
        }
    }

    /// `/config` edited: synchronous_mode off, on or quorum, strict or not.
    fn edit_config(&mut self) {
        {
            let before = self.cfg.active();
            self.cfg.sync_mode = match self.rng.below(3) {
                0 => SyncMode::Off,
                1 => SyncMode::On,
                _ => SyncMode::Quorum,
            };
            self.cfg.strict = self.rng.chance(30);
            if before != self.cfg.active() {
                // Commits acknowledged before synchronous mode was turned off (or before it
                // was turned on) are not promised to survive a failover any more.
                self.mode_epoch += 1;
            }
            trace!(
                self,
                "event: /config edited: synchronous_mode {:?} strict {}",
                self.cfg.sync_mode,
                self.cfg.strict
            );
            self.fault("config change");
            let doc = self.cfg.config_doc();
            let _ = ready(self.checker.set_config(&doc, None));
            self.invalidate();
        }
    }

    /// `patronictl switchover` from the current leader, to a random member half of the time.
    fn request_switchover(&mut self) {
        let c = self.checker_cluster();
        let Some(leader) = c.leader_name().map(str::to_string) else {
            return;
        };
        let candidate = if self.rng.chance(50) {
            let k = self.rng.below(self.members.len() as u64) as usize;
            Some(self.members[k].name.clone()).filter(|c| *c != leader)
        } else {
            None
        };
        trace!(
            self,
            "event: switchover requested from {leader} to {candidate:?}"
        );
        self.stats.switchovers_requested += 1;
        let mut doc = serde_json::json!({"leader": leader});
        if let Some(c) = candidate {
            doc["member"] = serde_json::Value::from(c);
        }
        let _ = ready(self.checker.set_failover(&doc.to_string(), None));
        self.invalidate();
    }

    fn call_cluster(&self, i: usize) -> Option<Cluster> {
        if self.members[i].partitioned {
            return None;
        }
        ready(self.members[i].agent.as_ref()?.dcs.cluster()).ok()
    }

    fn due(&self, i: usize) -> bool {
        let now = self.now();
        let m = &self.members[i];
        if m.frozen_until.is_some() {
            return false;
        }
        let Some(a) = &m.agent else { return false };
        match &a.pending {
            Some((t, _)) => *t <= now,
            None => a.next_run <= now,
        }
    }

    /// `Dcs::watch` with a zero timeout on each agent's own client: a change of the leader,
    /// config or failover key (or of status, for a non-leader) since its last `cluster()` wakes
    /// it early.
    fn wake_watchers(&mut self) {
        if self.dcs_down_until.is_some() {
            return;
        }
        let now = self.now();
        for m in &mut self.members {
            if m.partitioned || m.frozen_until.is_some() {
                continue;
            }
            let Some(a) = m.agent.as_mut() else { continue };
            if a.pending.is_some() || a.next_run <= now {
                continue;
            }
            let leader_is_me = a.last_renewal.is_some();
            if poll_once(a.dcs.watch(Duration::ZERO, leader_is_me)) == Some(true) {
                a.next_run = now;
            }
        }
    }

    fn run_agents(&mut self) {
        for _round in 0..4 {
            let mut order: Vec<usize> = (0..self.members.len()).filter(|&i| self.due(i)).collect();
            if order.is_empty() {
                return;
            }
            for k in (1..order.len()).rev() {
                let j = self.rng.below(k as u64 + 1) as usize;
                order.swap(k, j);
            }
            for i in order {
                if !self.due(i) {
                    continue;
                }
                self.stats.cycles += 1;
                self.run_agent(i);
                self.acknowledge();
                self.check();
                if self.violation.is_some() {
                    return;
                }
            }
            self.wake_watchers();
        }
    }

    fn complete_tasks(&mut self) {
        for i in 0..self.members.len() {
            self.complete_task(i);
        }
    }

    /// The DCS as the trace shows it: leader, `/sync`, `/failover`, `/initialize`, outage.
    fn dcs_state(&self) -> String {
        let c = self.checker_cluster();
        format!(
            "leader={:?} sync={:?} failover={:?} init={:?}{}",
            c.leader_name(),
            c.sync
                .as_ref()
                .map(|s| (s.leader.clone(), s.sync_standby.clone(), s.quorum)),
            c.failover
                .as_ref()
                .map(|f| (f.leader.clone(), f.member.clone())),
            c.initialize,
            if self.dcs_down_until.is_some() {
                " (DOWN)"
            } else {
                ""
            }
        )
    }

    fn summary(&mut self) {
        if !self.tracing {
            return;
        }
        let mut s = format!("  dcs: {}", self.dcs_state());
        for m in &self.members {
            let pg = &m.pg;
            let (tl, len, last) = pg.data.as_ref().map_or((0, 0, None), |d| {
                (
                    d.timeline(),
                    d.wal.len(),
                    d.wal.last().map(|r| (r.tl, r.id)),
                )
            });
            let _ = write!(
                s,
                "\n  {}: agent={} pg={:?}{}{} tl={tl} wal={len} last={last:?} up={:?} ssn={}/{:?} waiting={}",
                m.name,
                match (&m.agent, m.frozen_until.is_some(), m.partitioned) {
                    (None, _, _) => "DOWN".to_string(),
                    (Some(a), f, p) => format!(
                        "{}/{}{}{}{}",
                        a.role,
                        a.state,
                        if f { " FROZEN" } else { "" },
                        if p { " PARTITIONED" } else { "" },
                        if m.gap { " gap" } else { "" }
                    ),
                },
                pg.proc,
                if pg.running() && !pg.in_recovery { " PRIMARY" } else { "" },
                if pg.frozen { " frozen" } else { "" },
                pg.live_upstream,
                pg.live_ssn.numsync,
                pg.live_ssn.names,
                pg.waiting.len(),
            );
        }
        self.trace.push(s);
    }

    /// The earliest moment something is scheduled: an agent's next cycle, the end of a
    /// background task or of a fault.
    fn next_event(&self) -> Option<Instant> {
        let mut t: Vec<Instant> = Vec::new();
        t.extend(self.dcs_down_until);
        for m in &self.members {
            t.extend(m.restart_at);
            t.extend(m.frozen_until);
            t.extend(m.partition_until);
            t.extend(m.guard);
            t.extend(m.orphan_guard);
            t.extend(m.watchdog);
            if m.frozen_until.is_some() {
                continue;
            }
            if let Some(a) = &m.agent {
                t.push(a.pending.as_ref().map_or(a.next_run, |p| p.0));
                if let Some(task) = a.task.as_ref().filter(|t| t.result.is_none()) {
                    t.push(task.done_at);
                }
            }
        }
        t.into_iter().min()
    }

    async fn advance_to(&mut self, t: Instant) {
        let now = self.now();
        if t > now {
            tokio::time::advance(t - now).await;
            self.invalidate();
        }
    }

    /// Moves the clock by a random amount, running every agent cycle, task end and fault end
    /// due on the way at its time.
    async fn advance(&mut self) {
        let dt = if self.rng.chance(5) {
            Duration::from_millis(5_000 + self.rng.below(15_000))
        } else {
            Duration::from_millis(50 + self.rng.below(2_000))
        };
        let target = self.now() + dt;
        let mut same_instant = 0;
        while let Some(t) = self.next_event().filter(|t| *t <= target) {
            if t <= self.now() {
                same_instant += 1;
                if same_instant > 200 {
                    let due: Vec<&str> = (0..self.members.len())
                        .filter(|&i| self.due(i))
                        .map(|i| self.members[i].name.as_str())
                        .collect();
                    let msg = format!(
                        "livelock: {due:?} run cycle after cycle without the clock moving (run_again every time)"
                    );
                    self.violate(msg);
                    return;
                }
            } else {
                same_instant = 0;
            }
            self.advance_to(t).await;
            self.end_faults();
            self.complete_tasks();
            self.replicate();
            self.acknowledge();
            self.run_agents();
            if self.violation.is_some() {
                return;
            }
        }
        self.advance_to(target).await;
    }

    async fn step(&mut self, faults: bool) {
        self.step += 1;
        self.stats.steps += 1;
        self.advance().await;
        if self.violation.is_some() {
            return;
        }
        trace!(self, "step {} t={:?}", self.step, self.elapsed());
        self.end_faults();
        self.complete_tasks();
        if faults {
            match self.fault_plan {
                None => self.inject(),
                Some(_) => self.inject_planned(),
            }
        }
        self.replicate();
        self.client_writes();
        self.acknowledge();
        self.check();
        self.wake_watchers();
        self.run_agents();
        self.summary();
    }

    /// Heals everything and lets the cluster settle; then every acknowledged commit still
    /// tracked must be on the primary.
    async fn settle(&mut self) {
        let now = self.now();
        for m in &mut self.members {
            if m.restart_at.is_some() {
                m.restart_at = Some(now);
            }
            if m.frozen_until.is_some() {
                m.frozen_until = Some(now);
            }
            if m.partitioned {
                m.partition_until = Some(now);
            }
        }
        if self.dcs_down_until.is_some() {
            self.dcs_down_until = Some(now);
        }
        trace!(self, "settle: faults healed");
        let end = now + Duration::from_secs(120);
        while self.now() < end && self.violation.is_none() {
            self.step(false).await;
        }
        self.check_end();
    }

    /// After the quiet period: every acknowledged commit still tracked must be on the writable
    /// leader (a run without one is counted).
    fn check_end(&mut self) {
        let c = self.checker_cluster();
        let primary = c
            .leader_name()
            .and_then(|l| self.index(l))
            .filter(|&i| self.members[i].pg.writable());
        match primary {
            Some(p) => {
                let d = self.members[p].pg.data.clone().expect("data");
                self.check_lost(&d, "the end of the run", None);
            }
            None => {
                self.stats.no_leader_at_end += 1;
                let why = match c.initialize.as_deref() {
                    None => "no /initialize",
                    Some("") => "/initialize still \"\" (bootstrap never published)",
                    Some(_) => "cluster bootstrapped",
                };
                *self.stats.no_leader_why.entry(why).or_default() += 1;
            }
        }
    }

    pub async fn run(&mut self) {
        trace!(self, "config: {:?}", self.cfg);
        for _ in 0..self.cfg.steps {
            self.step(true).await;
            if self.violation.is_some() {
                return;
            }
        }
        self.settle().await;
    }
}

/// The outcome of one seed.
pub struct Outcome {
    pub violation: Option<String>,
    pub stats: Stats,
    pub trace: Vec<String>,
}

/// A current-thread runtime on a paused clock: one per simulated cluster.
pub fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime")
}

/// One seed with the members' watchdog set to `watchdog` (the drawn configuration otherwise).
pub fn run_seed_with(
    seed: u64,
    bug: Bug,
    tracing: bool,
    tolerate_known: bool,
    watchdog: WatchdogSim,
) -> Outcome {
    paused_runtime().block_on(async move {
        let mut w = World::new(seed, bug, tracing);
        w.cfg.watchdog = watchdog;
        w.tolerate_known = tolerate_known;
        w.run().await;
        if let Some(k) = w.tainted {
            w.stats.known_seeds.insert(k, 1);
        }
        Outcome {
            violation: w.violation,
            stats: w.stats,
            trace: w.trace,
        }
    })
}
