//! The simulation's agents (issue 11 item 2): every member is a real `pgpilot_ha::Agent` (its
//! `run`: cycles, lease keeper, background tasks), spawned on one paused current-thread runtime,
//! over its own DCS client of one shared `MemoryStore` ([`super::counting`], behind
//! [`seams::NetDcs`]), the simulated PostgreSQL of [`super::pg`] ([`super::sim_pg::SimPg`]), the
//! other members' REST APIs ([`seams::SimPeers`], each answering from the peer agent's last
//! published `NodeSnapshot`), a guard ([`seams::SimGuard`]) and a watchdog device
//! ([`seams::SimWatchdogs`]) whose deadlines are the [`World`]'s guard and watchdog models. The
//! world (members' PostgreSQL, client commits, replication, acknowledgements, the guard's fence,
//! the watchdog's reset, the invariants) is [`World`].
//!
//! One step: the clock moves by a random amount in ticks of at most [`TICK`] (agents run at
//! their own times in between: cycles, DCS waits, PostgreSQL operations that take virtual time),
//! and at every tick faults end when due, guards fence and watchdogs reset at their deadlines,
//! replicas stream, commits are acknowledged per the `synchronous_standby_names` in force and
//! the invariants are checked; then a fault or request may be injected and clients commit on
//! every writable primary. Invariants 1 (at most one writable primary) and 3 (a writable primary
//! holds the leader key once the cluster is bootstrapped) are also checked after every change a
//! simulated PostgreSQL makes (start, stop, promote), and invariant 2 (no acknowledged commit
//! lost in synchronous modes) at every promotion and at the end of the run, after 120 s without
//! faults. The losses of the known bug K6 (in quorum mode the switchover candidate named in
//! `/failover`, a voter, takes the key and promotes without any vote; here after the leader died
//! before handing over, seed 468) are counted, not failed.
//!
//! Faults, from the seeded scheduler: crash of a whole member (agent, guard, PostgreSQL, watchdog),
//! crash of PostgreSQL alone, kill of the agent alone (PostgreSQL, an armed guard and an open
//! watchdog keep running), freeze of the agent (its task is not polled; PostgreSQL frozen too in
//! 70 % of them) wherever it is waiting, mid-cycle included (an operation its background task had
//! under way goes on, as a child process would; the next one waits for the thaw), DCS outage,
//! isolation of one member (its DCS calls fail, peers' REST calls to or from it time out, it
//! streams to nobody), switchover requests with and without a candidate, `/config` edits of
//! synchronous_mode and strict (in 30 % of the seeds; a commit counts as synchronous when `/config`
//! and the acknowledging agent's last read of it say so). A process that is gone never sees an
//! answer to what it waited for (its background tasks hang with it). The watchdog is on
//! (`automatic`, `safety_margin` 5) unless `PGPILOT_SIM_WATCHDOG` says otherwise.
//!
//! Timing: a DCS write takes 2 to 40 ms (reads come from the watch cache, at once), a failed
//! read costs `retry_timeout`, a failed write 1 s; initdb 1.5 s, start 0.3 to 3.3 s, promote 0.2
//! to 1.5 s, stop 0.1 to 1 s (writes end when it begins), basebackup 2 to 10 s, pg_rewind 0.5 to
//! 3.5 s; a query to a frozen PostgreSQL fails after 5 s. Every initdb draws its own system
//! identifier.
//!
//! Not modelled here: asymmetric partitions, graceful agent shutdown, failsafe, pause, tags,
//! slots (the simulated server has none), REST commands, custom bootstrap, synchronous_commit
//! levels other than flush, a stale watch cache in the DCS client, `patroni.dynamic.json` (the
//! agent reads and writes it in its data directory on the file system: there is none here, so a
//! restarted agent starts from `bootstrap.dcs`, which is the run's `/config`). The deliberate
//! bugs the checker must catch ([`Bug`]) are the world's: a PostgreSQL that acknowledges
//! asynchronously, a lock that lies, a guard or a watchdog that never fences.
//!
//! Determinism: everything runs on one thread with a paused clock and the world's seeded
//! generator; `tokio::select!` in the agent and the memory store's watch are `biased` and the
//! store wakes watchers in order, so `real_agent_run_is_deterministic` sees one seed give the
//! same trace twice.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use pgpilot_config::Config;
use pgpilot_ha::guard::Guard;
use pgpilot_ha::{Agent, AgentError};
use pgpilot_types::NodeSnapshot;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::pg::Proc;
use super::seams::{lock, Freezable, Net, NetDcs, Node, Shared, SimGuard, SimPeers, SimWatchdogs};
use super::sim_pg::SimPg;
use super::trace;
use super::{paused_runtime, Bug, Rng, RunSettings, Stats, WatchdogSim, World};

/// The longest the world goes without replicating, acknowledging and checking.
pub const TICK: Duration = Duration::from_millis(250);

/// The local configuration of member `name` (the bootstrap section carries `/config`).
fn member_config(name: &str, dcs_doc: &str, watchdog: WatchdogSim) -> Config {
    let watchdog = match watchdog {
        WatchdogSim::Off => "{mode: 'off'}".to_string(),
        WatchdogSim::On { safety_margin } => {
            format!("{{mode: automatic, safety_margin: {safety_margin}}}")
        }
    };
    let doc = format!(
        "name: {name}\nscope: sim\netcd3: {{host: '127.0.0.1:2379'}}\n\
         restapi: {{listen: '127.0.0.1:8008', connect_address: '{name}:8008'}}\n\
         postgresql: {{listen: '127.0.0.1:5432', connect_address: '{name}:5432', \
         data_dir: /nonexistent/pgpilot-sim/{name}, \
         authentication: {{superuser: {{username: p}}, replication: {{username: r}}}}}}\n\
         watchdog: {watchdog}\nbootstrap: {{dcs: {dcs_doc}}}\n"
    );
    let env = vec![("PATRONI_CONFIGURATION".to_string(), doc)];
    pgpilot_config::load(None, &env)
        .expect("simulated member configuration")
        .config
}

/// The outcome of one seed.
pub struct Outcome {
    pub violation: Option<String>,
    pub stats: Stats,
    pub trace: Vec<String>,
}

/// A cluster of real agents (module docs).
pub struct RealWorld {
    pub net: Net,
    handles: Vec<Option<JoinHandle<()>>>,
    restart_at: Vec<Option<Instant>>,
    frozen_until: Vec<Option<Instant>>,
    step: usize,
    steps: usize,
}

impl RealWorld {
    pub fn new(seed: u64, bug: Bug, tracing: bool, run: RunSettings) -> RealWorld {
        let mut w = World::new(seed, bug, tracing, run.timing);
        w.cfg.watchdog = run.watchdog;
        RealWorld::of(w)
    }

    /// Real agents for the members of `w` (its configuration, generator and settings).
    pub fn of(mut w: World) -> RealWorld {
        let n = w.members.len();
        let now = Instant::now();
        let mut restart_at = Vec::new();
        for _ in 0..n {
            // Agents start within the first loop_wait, in seeded order.
            restart_at.push(Some(now + Duration::from_millis(w.rng.below(10_000))));
        }
        let steps = w.cfg.steps;
        let nodes = (0..n).map(|_| Node::default()).collect();
        RealWorld {
            net: Arc::new(std::sync::Mutex::new(Shared { w, nodes })),
            handles: (0..n).map(|_| None).collect(),
            restart_at,
            frozen_until: vec![None; n],
            step: 0,
            steps,
        }
    }

    fn n(&self) -> usize {
        self.handles.len()
    }

    /// Starts the agent process of member `i` (a new generation).
    fn spawn(&mut self, i: usize) {
        let net = self.net.clone();
        let (config, gen, dcs) = {
            let mut s = lock(&net);
            let name = s.w.members[i].name.clone();
            let config = member_config(&name, &s.w.cfg.config_doc(), s.w.cfg.watchdog);
            let node = &mut s.nodes[i];
            node.gen += 1;
            node.alive = true;
            node.frozen = false;
            node.exited = None;
            let gen = node.gen;
            // Until it reads `/config`, the agent runs `bootstrap.dcs`: the `/config` of now.
            s.w.members[i].sync_seen = s.w.cfg.active();
            let inner = s.w.cfg.client(&s.w.store, &name, &s.w.ops);
            let retry_timeout = Duration::from_secs(s.w.cfg.retry_timeout);
            trace!(s.w, "event: {name} agent started");
            (
                config,
                gen,
                NetDcs {
                    inner,
                    net: net.clone(),
                    i,
                    retry_timeout,
                },
            )
        };
        let (tx, rx) = watch::channel(Arc::new(NodeSnapshot::starting(&config.name, "sim")));
        lock(&net).nodes[i].snapshot = Some(rx);
        let settings = pgpilot_ha::pg_settings(&config);
        let pg = SimPg::new(net.clone(), i, gen, settings);
        let peers = SimPeers {
            net: net.clone(),
            i,
        };
        let guard = Guard::new(Box::new(SimGuard {
            net: net.clone(),
            i,
            gen,
        }));
        let watchdogs = SimWatchdogs {
            net: net.clone(),
            i,
            gen,
        };
        let member = config.name.clone();
        let mut agent = Agent::new(config, Arc::new(dcs), Arc::new(pg), Arc::new(peers), tx)
            .with_watchdog(Arc::new(watchdogs))
            .with_guard(guard);
        let net2 = net.clone();
        // The agent's own log lines name their member (`PGPILOT_SIM_LOG` in `simulation.rs`).
        let span = tracing::info_span!("agent", member = %member);
        let fut = async move {
            if let Err(AgentError::Fatal(msg)) = agent.run(CancellationToken::new()).await {
                let mut s = lock(&net2);
                if s.nodes[i].gen == gen {
                    s.nodes[i].exited = Some(msg);
                }
            }
        }
        .instrument(span);
        self.handles[i] = Some(tokio::task::spawn_local(Freezable {
            net,
            i,
            fut: Box::pin(fut),
        }));
    }

    /// The agent process of member `i` is gone (SIGKILL, crash, exit): its task is dropped and
    /// whatever its background tasks wait for never comes. An armed guard keeps its deadline.
    fn kill(&mut self, i: usize) {
        if let Some(h) = self.handles[i].take() {
            h.abort();
        }
        self.frozen_until[i] = None;
        let mut s = lock(&self.net);
        let node = &mut s.nodes[i];
        node.gen += 1;
        node.alive = false;
        node.frozen = false;
        node.waker = None;
        node.snapshot = None;
        // The device stays armed (`Member::watchdog`), held by no process.
        node.watchdog_open = false;
        let m = &mut s.w.members[i];
        m.orphan_guard = m.guard.take().max(m.orphan_guard);
    }

    /// The agent process of member `i` is gone until `back`.
    fn kill_until(&mut self, i: usize, back: Instant) {
        self.kill(i);
        self.restart_at[i] = Some(back);
    }

    /// The earliest moment a fault ends or a guard fences.
    fn next_event(&self) -> Option<Instant> {
        let s = lock(&self.net);
        let mut t: Vec<Instant> = Vec::new();
        t.extend(s.w.dcs_down_until);
        for m in &s.w.members {
            t.extend(m.partition_until);
            t.extend(m.guard);
            t.extend(m.orphan_guard);
            t.extend(m.watchdog);
        }
        t.extend(self.restart_at.iter().flatten());
        t.extend(self.frozen_until.iter().flatten());
        t.into_iter().min()
    }

    /// Ends faults that are due: guards fence, the DCS comes back, partitions heal, agents thaw
    /// or start again (an agent that exited comes back 10 s later).
    fn end_faults(&mut self) {
        let now = Instant::now();
        let mut restart = Vec::new();
        let mut reset = Vec::new();
        {
            let mut s = lock(&self.net);
            s.w.invalidate();
            s.w.fence();
            s.w.watchdog_resets();
            for i in 0..s.w.members.len() {
                // Reset by its watchdog (`crash_member`): the agent process is gone too.
                if let Some(back) = s.w.members[i].restart_at.take() {
                    reset.push((i, back));
                }
            }
            if s.w.dcs_down_until.is_some_and(|t| t <= now) {
                s.w.dcs_down_until = None;
                s.w.store.set_available(true);
                s.w.invalidate();
                trace!(s.w, "event: DCS available again");
            }
            for i in 0..s.w.members.len() {
                let m = &mut s.w.members[i];
                if m.partition_until.is_some_and(|t| t <= now) {
                    m.partition_until = None;
                    m.partitioned = false;
                    let name = m.name.clone();
                    trace!(s.w, "event: {name} partition healed");
                }
                if self.frozen_until[i].is_some_and(|t| t <= now) {
                    self.frozen_until[i] = None;
                    s.w.members[i].pg.frozen = false;
                    s.nodes[i].frozen = false;
                    if let Some(waker) = s.nodes[i].waker.take() {
                        waker.wake();
                    }
                    s.nodes[i].thawed.notify_waiters();
                    let name = s.w.members[i].name.clone();
                    trace!(s.w, "event: {name} thawed");
                }
                if let Some(msg) = s.nodes[i].exited.take() {
                    let name = s.w.members[i].name.clone();
                    *s.w.stats
                        .fatal
                        .entry(msg.replace(&name, "<me>"))
                        .or_default() += 1;
                    trace!(
                        s.w,
                        "  {name}: FATAL {msg}; the agent exits (restarted in 10 s)"
                    );
                    restart.push(i);
                }
            }
        }
        for (i, back) in reset {
            self.kill_until(i, back);
        }
        for i in restart {
            self.kill_until(i, now + Duration::from_secs(10));
        }
        for i in 0..self.n() {
            if self.restart_at[i].is_some_and(|t| t <= now) {
                self.restart_at[i] = None;
                self.spawn(i);
            }
        }
    }

    /// Replication, acknowledgements, the invariants.
    fn world_tick(&mut self, writes: bool) {
        let mut s = lock(&self.net);
        s.w.invalidate();
        s.w.replicate();
        if writes {
            s.w.client_writes();
        }
        s.w.acknowledge();
        s.w.check();
    }

    pub fn violation(&self) -> bool {
        lock(&self.net).w.violation.is_some()
    }

    fn faulty(&self) -> usize {
        let s = lock(&self.net);
        (0..self.n())
            .filter(|&i| {
                !s.nodes[i].alive
                    || self.frozen_until[i].is_some()
                    || s.w.members[i].partitioned
                    || self.restart_at[i].is_some()
            })
            .count()
    }

    /// The seeded scheduler's choice of fault or request for this step.
    fn inject(&mut self) {
        let now = Instant::now();
        let room = self.faulty() < 2;
        let net = self.net.clone();
        let mut s = lock(&net);
        let n = s.w.members.len() as u64;
        let i = s.w.rng.below(n) as usize;
        let name = s.w.members[i].name.clone();
        let secs = |rng: &mut Rng, lo: u64, hi: u64| {
            Duration::from_millis(lo * 1000 + rng.below((hi - lo) * 1000))
        };
        let healthy = s.nodes[i].alive && !s.nodes[i].frozen && !s.w.members[i].partitioned;
        match s.w.rng.below(1000) {
            0..=7 if healthy && room => {
                let d = secs(&mut s.w.rng, 1, 60);
                trace!(
                    s.w,
                    "event: crash {name} (agent and PostgreSQL), back in {d:?}"
                );
                s.w.fault("crash member");
                s.w.crash_member(i, now + d);
                s.w.members[i].restart_at = None;
                drop(s);
                self.kill_until(i, now + d);
            }
            8..=13 if s.w.members[i].pg.proc != Proc::Stopped && !s.w.members[i].pg.frozen => {
                trace!(s.w, "event: crash PostgreSQL of {name}");
                s.w.fault("crash postgres");
                let id = s.w.next_id();
                s.w.members[i].pg.stop(false, id);
                s.w.invalidate();
                s.w.check();
            }
            14..=19 if healthy && room => {
                let d = secs(&mut s.w.rng, 1, 40);
                trace!(
                    s.w,
                    "event: kill the agent of {name} (PostgreSQL keeps running), back in {d:?}"
                );
                s.w.fault("kill agent");
                drop(s);
                self.kill_until(i, now + d);
            }
            20..=29 if healthy && room => {
                let d = secs(&mut s.w.rng, 1, 60);
                let with_pg = s.w.rng.chance(70);
                trace!(
                    s.w,
                    "event: freeze {name} for {d:?} (postgres too: {with_pg})"
                );
                s.w.fault("freeze agent");
                s.nodes[i].frozen = true;
                s.w.members[i].pg.frozen = with_pg;
                self.frozen_until[i] = Some(now + d);
            }
            30..=33 if s.w.dcs_down_until.is_none() => {
                let d = secs(&mut s.w.rng, 1, 40);
                trace!(s.w, "event: DCS outage for {d:?}");
                s.w.fault("dcs outage");
                s.w.store.set_available(false);
                s.w.invalidate();
                s.w.dcs_down_until = Some(now + d);
            }
            34..=41 if healthy && room => {
                let d = secs(&mut s.w.rng, 1, 60);
                trace!(s.w, "event: isolate {name} for {d:?}");
                s.w.fault("isolation");
                s.w.members[i].partitioned = true;
                s.w.members[i].partition_until = Some(now + d);
            }
            52..=56 if s.w.cfg.config_changes && s.w.dcs_down_until.is_none() => s.w.edit_config(),
            42..=51 if s.w.dcs_down_until.is_none() => s.w.request_switchover(),
            _ => {}
        }
    }

    fn summary(&self) {
        let mut s = lock(&self.net);
        if !s.w.tracing {
            return;
        }
        let calls: u64 = s.w.ops.snapshot().calls.values().sum();
        let mut line = format!("  dcs: {calls} calls, {}", s.w.dcs_state());
        for (m, node) in s.w.members.iter().zip(&s.nodes) {
            let pg = &m.pg;
            let (tl, len) = pg
                .data
                .as_ref()
                .map_or((0, 0), |d| (d.timeline(), d.wal.len()));
            let _ = write!(
                line,
                "\n  {}: agent={}{}{} pg={:?}{}{} tl={tl} wal={len} up={:?} ssn={}/{:?} guard={:?} watchdog={:?}",
                m.name,
                if node.alive { "up" } else { "DOWN" },
                if node.frozen { " FROZEN" } else { "" },
                if m.partitioned { " ISOLATED" } else { "" },
                pg.proc,
                if pg.writable() { " PRIMARY" } else { "" },
                if pg.frozen { " frozen" } else { "" },
                pg.live_upstream,
                pg.live_ssn.numsync,
                pg.live_ssn.names,
                m.guard.map(|t| t.saturating_duration_since(Instant::now())),
                m.watchdog.map(|t| t.saturating_duration_since(Instant::now())),
            );
        }
        s.w.trace_line(line);
    }

    /// A fleet run's fault injection (`World::fault_plan`): when the plan's time comes, one
    /// fault or request from the usual mix ([`RealWorld::inject`], retried until it injects
    /// something), then the next time.
    fn inject_planned(&mut self) {
        let now = Instant::now();
        let next = {
            let mut s = lock(&self.net);
            let Some(plan) = s.w.fault_plan.clone() else {
                return;
            };
            match plan.next_at {
                Some(t) => t,
                None => {
                    let t = now + s.w.exponential(plan.mean);
                    s.w.set_next_fault(t);
                    t
                }
            }
        };
        if now < next {
            return;
        }
        let before = lock(&self.net).w.injected();
        for _ in 0..1000 {
            self.inject();
            if lock(&self.net).w.injected() != before {
                break;
            }
        }
        let mut s = lock(&self.net);
        if let Some(mean) = s.w.fault_plan.as_ref().map(|p| p.mean) {
            let t = now + s.w.exponential(mean);
            s.w.set_next_fault(t);
        }
    }

    /// Moves the clock by a random amount in ticks, then injects and commits.
    pub async fn step(&mut self, faults: bool) {
        self.step += 1;
        let dt = {
            let mut s = lock(&self.net);
            s.w.stats.steps += 1;
            if s.w.rng.chance(5) {
                Duration::from_millis(5_000 + s.w.rng.below(15_000))
            } else {
                Duration::from_millis(50 + s.w.rng.below(2_000))
            }
        };
        let target = Instant::now() + dt;
        loop {
            let mut next = (Instant::now() + TICK).min(target);
            if let Some(t) = self.next_event() {
                next = next.min(t.max(Instant::now()));
            }
            tokio::time::sleep_until(next).await;
            self.end_faults();
            self.world_tick(false);
            if self.violation() || Instant::now() >= target {
                break;
            }
        }
        if self.violation() {
            return;
        }
        {
            let mut s = lock(&self.net);
            let t = Instant::now() - s.w.start;
            let step = self.step;
            trace!(s.w, "step {step} t={t:?}");
        }
        if faults {
            if lock(&self.net).w.fault_plan.is_some() {
                self.inject_planned();
            } else {
                self.inject();
            }
        }
        self.world_tick(true);
        self.summary();
    }

    /// Heals everything, lets the cluster settle for 120 s, then checks that every acknowledged
    /// commit still tracked is on the primary.
    async fn settle(&mut self) {
        let now = Instant::now();
        {
            let mut s = lock(&self.net);
            for m in &mut s.w.members {
                if m.partitioned {
                    m.partition_until = Some(now);
                }
            }
            if s.w.dcs_down_until.is_some() {
                s.w.dcs_down_until = Some(now);
            }
            trace!(s.w, "settle: faults healed");
        }
        for t in self
            .restart_at
            .iter_mut()
            .chain(&mut self.frozen_until)
            .flatten()
        {
            *t = now;
        }
        let end = now + Duration::from_secs(120);
        while Instant::now() < end && !self.violation() {
            self.step(false).await;
        }
        lock(&self.net).w.check_end();
    }

    pub async fn run(&mut self) {
        {
            let mut s = lock(&self.net);
            let cfg = format!("{:?}", s.w.cfg);
            trace!(s.w, "config: {cfg}");
        }
        for _ in 0..self.steps {
            self.step(true).await;
            if self.violation() {
                return;
            }
        }
        self.settle().await;
    }

    /// Drops every agent task.
    pub fn shutdown(&mut self) {
        for i in 0..self.n() {
            self.kill(i);
        }
    }
}

/// One seed of the real agents.
pub fn run_real_seed(seed: u64, tracing: bool, run: RunSettings) -> Outcome {
    run_real_seed_with(seed, Bug::None, tracing, run)
}

/// One seed with a deliberate bug of the world ([`Bug`]) that the checker must catch.
pub fn run_real_seed_with(seed: u64, bug: Bug, tracing: bool, run: RunSettings) -> Outcome {
    let rt = paused_runtime();
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, async move {
        let mut rw = RealWorld::new(seed, bug, tracing, run);
        rw.run().await;
        rw.shutdown();
        let mut s = lock(&rw.net);
        let counts = s.w.ops.snapshot();
        let line = format!("dcs calls: {:?}", counts.calls);
        s.w.trace_line(line);
        if let Some(k) = s.w.tainted {
            s.w.stats.known_seeds.insert(k, 1);
        }
        Outcome {
            violation: s.w.violation.clone(),
            stats: s.w.stats.clone(),
            trace: std::mem::take(&mut s.w.trace),
        }
    })
}

/// Faults by kind, for the summary.
pub fn faults_line(faults: &BTreeMap<&'static str, u64>) -> String {
    faults
        .iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}
