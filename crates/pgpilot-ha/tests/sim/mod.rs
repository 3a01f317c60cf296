//! The deterministic simulation (DESIGN.md "Test layers" 3). [`World`] is the cluster around
//! the agents: each member's simulated PostgreSQL ([`pg`]) with WAL histories that can fork,
//! client commits, replication, acknowledgements per the `synchronous_standby_names` in force,
//! the guard's fence and the watchdog's reset at their deadlines, the seeded generator and the
//! safety invariants. [`real`] runs the real `pgpilot_ha::Agent` of every member in it, through
//! the seams of [`seams`] and [`sim_pg`] (`PgControl`, `Peers`, `GuardLink`, `WatchdogOpener`,
//! and a `Dcs` over one shared `MemoryStore`); [`setup`] draws a seed's configuration and
//! [`stats`] counts what it did; its module docs say what one step does and what is modelled. Each
//! agent's DCS client counts its calls and the etcd requests they would cost ([`counting`]); the
//! fleet run ([`fleet`]) runs many clusters with faults at a set rate to turn those counts into
//! rates per cluster.
//!
//! The invariants: (1) at most one writable primary; (2) no acknowledged commit lost in
//! synchronous modes (checked at every promotion and at the end of a run); (3) once the cluster
//! is bootstrapped, a writable primary holds the leader key (a frozen or killed agent's primary
//! too: its guard fences it before the key can expire, its watchdog resets the member); (4) an
//! agent never re-creates its expired leader key by a renewal while its watchdog device is open
//! (every renewal pinged the device, which fires `safety_margin` before the key can expire).
//!
//! The watchdog gap. A key holder whose watchdog is not open (no device in the run, or a
//! leader whose PostgreSQL is not running as primary: the agent arms the watchdog only for
//! primary duty, as Patroni's `enforce_primary_role` does) may renew its key after it expired:
//! `update_leader` re-creates it without a race (both backends do, as Patroni's etcd3 does).
//! Such renewals are counted (`Stats::stale_renewals`, `unwatched_stale_renewals`) and what they
//! could cost in synchronous modes is excused as the gap's (`gap_mark`, `Stats::gap_lost`).
//!
//! Known bugs and liveness gaps found by the simulation (most of them by the hand-written mirror
//! of the agent's cycle it ran before the real agents, removed with its seeds):
//! - K1 (fixed): a quorum-mode switchover to a member outside `/sync`. K5 (fixed): the
//!   manual-failover race skipped the timeline check. Both guarded by rows of
//!   `src/decide_tests.rs`.
//! - K2 (fixed): a restarted primary started with an empty ssn, and the quorum step emptied ssn
//!   before `/sync` (`src/agent/tests.rs`, and the pure test in `tests/simulation.rs`). An
//!   acknowledgement with an empty ssn while `/sync` names voters is still marked (`Ack::k2`).
//! - K6 (fixed for the case found: a graceful demotion keeps the key when no candidate received
//!   the shutdown checkpoint, `src/agent/tests.rs`): in quorum mode a switchover candidate
//!   named in `/failover`, a voter, takes the key and promotes without any vote. A variant
//!   remains with the real agents (the leader dies before it hands over, seed 468): its losses
//!   are counted as K6, not failed.
//! - K4 (open): without `check_timeline`, a diverged member on an older timeline wins a race by
//!   LSN (ignored test in `src/decide_tests.rs`).
//! - L1 to L6 (liveness, no data at risk): a cluster left without a leader after the faults end
//!   (`Stats::no_leader_why`; the ignored tests in `tests/simulation.rs` name each with its
//!   seeds).

pub mod counting;
pub mod fleet;
pub mod pg;
pub mod real;
pub mod seams;
pub mod setup;
pub mod sim_pg;
pub mod stats;

use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use pgpilot_config::SyncMode;
use pgpilot_dcs::memory::{MemoryDcs, MemoryStore};
use pgpilot_dcs::{Cluster, Dcs};
use tokio::time::Instant;

use counting::Ops;
use pg::{Pg, Rec};
pub use setup::{Bug, Rng, RunSettings, SimConfig, Timing, WatchdogSim};
pub use stats::Stats;

/// A trace line, formatted only when the run is traced.
macro_rules! trace {
    ($w:expr, $($arg:tt)*) => {
        if $w.tracing {
            let line = format!($($arg)*);
            $w.trace_line(line);
        }
    };
}
pub(crate) use trace;

/// Polls a future that never waits (the memory DCS never does) to completion.
pub fn ready<T>(f: impl Future<Output = T>) -> T {
    let mut f = pin!(f);
    match f.as_mut().poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(v) => v,
        Poll::Pending => panic!("a simulated call waited"),
    }
}

/// A fleet run's faults: one at a time, at exponentially distributed intervals of mean
/// `mean`, drawn from the seeded scheduler's usual mix (`real::RealWorld::inject`).
#[derive(Clone, Debug)]
pub struct FaultPlan {
    pub mean: Duration,
    pub next_at: Option<Instant>,
}

pub struct Member {
    pub name: String,
    pub pg: Pg,
    /// Reset by its watchdog: when the member's agent comes back ([`real`] restarts it).
    pub restart_at: Option<Instant>,
    pub partitioned: bool,
    pub partition_until: Option<Instant>,
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
    /// The agent's synchronous mode as of the last `/config` it read.
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
    /// Bumped when synchronous mode is turned on or off.
    mode_epoch: u64,
    /// Commits acknowledged before the last stale renewal of a thawed agent (`acks[..gap_mark]`):
    /// losing them is the watchdog gap's doing (set only in runs without a watchdog).
    gap_mark: usize,
    /// The checker's view of the store, dropped on every DCS call and every clock advance.
    cache: std::cell::RefCell<Option<Cluster>>,
    /// The agents' DCS calls, counted (`counting`).
    pub ops: Arc<Ops>,
    /// Clients commit on every writable primary (off: an idle cluster).
    pub writes: bool,
    /// `None`: the seeded scheduler may inject a fault or request every step (the safety
    /// run); `Some`: faults at the plan's rate only (a fleet run).
    pub fault_plan: Option<FaultPlan>,
}

impl World {
    pub fn new(seed: u64, bug: Bug, tracing: bool, timing: Option<Timing>) -> World {
        let mut rng = Rng::new(seed);
        let mut cfg = SimConfig::draw(&mut rng);
        // Drawn apart so that the seeds of the other draws keep their meaning.
        cfg.config_changes = Rng::new(seed ^ 0xC0F1_6C4A_4E6E_5000).chance(30);
        if let Some(t) = timing {
            cfg.ttl = t.ttl;
            cfg.loop_wait = t.loop_wait;
            cfg.retry_timeout = t.retry_timeout;
        }
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
                // The removed mirror agents drew their start times here: drawn still, so that
                // the seeds of earlier runs and notes keep their meaning.
                rng.below(10_000);
                Member {
                    name: format!("pg{}", k + 1),
                    pg: Pg::new(),
                    restart_at: None,
                    partitioned: false,
                    partition_until: None,
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
            mode_epoch: 0,
            gap_mark: 0,
            cache: std::cell::RefCell::new(None),
            ops,
            writes: true,
            fault_plan: None,
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
            if m.pg.proc == pg::Proc::Stopped || !self.bug.guard_fences() {
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
            if !self.bug.watchdog_fires() {
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
            } else if let Some(k) = known.or(self.tainted) {
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

    /// A real agent's `update_leader` re-created the leader key, which had expired (a renewal on
    /// a decision taken before the key was gone, as by a thawed agent). A violation (invariant
    /// 4) if its watchdog device was open: every renewal pinged it, so it should have reset the
    /// member `safety_margin` before the key could expire. Otherwise what it costs is the
    /// watchdog gap's (module docs).
    pub fn note_stale_recreation(&mut self, i: usize, watched: bool) {
        let me = self.members[i].name.clone();
        trace!(
            self,
            "  {me}: renewed the leader key, which had expired: it re-created it"
        );
        self.stats.stale_renewals += 1;
        if watched {
            let msg = format!(
                "invariant 4: {me} renews the leader key although it expired meanwhile (its watchdog, open, should have reset it first; armed until {:?})",
                self.members[i].watchdog.map(|t| t - self.start)
            );
            self.violate(msg);
        } else {
            self.stats.unwatched_stale_renewals += u64::from(self.cfg.watchdog != WatchdogSim::Off);
            self.mark_gap();
        }
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
        for i in writable {
            let m = &self.members[i];
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
            let alone = (0..self.members.len()).all(|j| {
                j == i || self.members[j].pg.data.as_ref().map(|d| d.sysid.as_str()) != sysid
            });
            if !holds && bootstrapped && !alone {
                let msg = format!(
                    "invariant 3: {} runs a writable primary without the leader key (held by {:?})",
                    m.name,
                    c.leader_name(),
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
            if !pg.writable() || pg.frozen {
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
            let sync_mode = self.cfg.active() && self.members[p].sync_seen;
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

    fn fault(&mut self, what: &'static str) {
        *self.stats.faults.entry(what).or_default() += 1;
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
}

/// A current-thread runtime on a paused clock: one per simulated cluster.
pub fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime")
}
