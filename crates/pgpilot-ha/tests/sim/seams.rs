//! The real agent's seams, implemented over the simulated world ([`super::real`]): the peers'
//! REST APIs ([`SimPeers`], `Peers`), a DCS client that fails while its member is isolated
//! ([`NetDcs`]), the guard process ([`SimGuard`], `GuardLink`), the watchdog device
//! ([`SimWatchdogs`]) and a freezable task ([`Freezable`], SIGSTOP of the agent); the simulated
//! PostgreSQL (`PgControl`) is [`super::sim_pg::SimPg`].
//!
//! They share one [`Net`]: the [`World`] (its members' `Pg`, partitions, guard deadlines,
//! acknowledged commits and invariants) and the state of each real agent process.
//! The lock is never held across an await. Every operation of a process that is gone (the agent
//! was killed or its member crashed: an older [`Node::gen`]) never returns, as nothing answers a
//! dead process; its background tasks hang with it.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use pgpilot_config::WatchdogConfig;
use pgpilot_dcs::{Cluster, Dcs, DcsError, Leader, MemberData, Status};
use pgpilot_ha::guard::{GuardError, GuardLink, Message};
use pgpilot_ha::watchdog::{WatchdogDevice, WatchdogError, WatchdogOpener};
use pgpilot_types::{NodeSnapshot, PeerStatus, Peers};
use serde_json::Value;
use tokio::sync::watch;
use tokio::time::Instant;

use super::counting::CountingDcs;
use super::trace;
use super::{Bug, World};

/// One real agent process (beside the world's `Member` of the same index).
#[derive(Default)]
pub struct Node {
    /// Bumped whenever the process is gone: calls of an older generation never return.
    pub gen: u64,
    /// The process runs (not killed, not crashed, not exited).
    pub alive: bool,
    /// SIGSTOPped: the task is not polled.
    pub frozen: bool,
    pub waker: Option<Waker>,
    /// Notified at the thaw (for the agent's background tasks: [`process_runs`]).
    pub thawed: Arc<tokio::sync::Notify>,
    /// What its REST API serves (`GET /patroni`).
    pub snapshot: Option<watch::Receiver<Arc<NodeSnapshot>>>,
    /// It took the leader key last as the candidate `/failover` named.
    pub candidate: bool,
    /// Its agent holds the watchdog device open (opened, not closed with the magic `V`).
    pub watchdog_open: bool,
    /// The agent exited with this message (`AgentError::Fatal`).
    pub exited: Option<String>,
}

pub struct Shared {
    pub w: World,
    pub nodes: Vec<Node>,
}

pub type Net = Arc<Mutex<Shared>>;

pub fn lock(net: &Net) -> MutexGuard<'_, Shared> {
    net.lock().unwrap_or_else(|e| e.into_inner())
}

/// A process of generation `gen` of member `i` is gone: what it waits for never comes.
pub(super) async fn gone_unless_alive(net: &Net, i: usize, gen: u64) {
    let dead = {
        let s = lock(net);
        s.nodes[i].gen != gen || !s.nodes[i].alive
    };
    if dead {
        std::future::pending::<()>().await;
    }
}

/// Before the agent process of generation `gen` starts an operation: never if it is gone, after
/// the thaw if it is frozen. Its background tasks are tasks of their own (the agent's `Freezable`
/// does not hold them): an operation under way, a child process, goes on during a freeze, the
/// next one waits for the thaw.
pub(super) async fn process_runs(net: &Net, i: usize, gen: u64) {
    loop {
        let thawed = lock(net).nodes[i].thawed.clone();
        let notified = thawed.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if !lock(net).nodes[i].frozen {
            break;
        }
        notified.await;
    }
    gone_unless_alive(net, i, gen).await;
}

/// A random duration in `lo..hi` milliseconds from the world's seeded generator.
pub(super) fn millis(net: &Net, lo: u64, hi: u64) -> Duration {
    let mut s = lock(net);
    Duration::from_millis(lo + s.w.rng.below(hi - lo))
}

/// The other members' REST APIs as member `i` reaches them.
pub struct SimPeers {
    pub net: Net,
    pub i: usize,
}

impl Peers for SimPeers {
    /// `GET /patroni`: the peer's last published snapshot. An isolated or frozen peer (or an
    /// isolated caller) times out; a dead agent refuses at once.
    async fn peer_status(
        &self,
        name: &str,
        _api_url: &str,
        timeout: Duration,
    ) -> Option<PeerStatus> {
        enum Answer {
            Hang,
            Refused,
            Doc(Option<PeerStatus>),
        }
        let answer = {
            let s = lock(&self.net);
            match s.w.index(name) {
                None => Answer::Refused,
                Some(j) if !s.w.reachable(self.i, j) || s.nodes[j].frozen => Answer::Hang,
                Some(j) if !s.nodes[j].alive => Answer::Refused,
                Some(j) => Answer::Doc(s.nodes[j].snapshot.as_ref().and_then(|rx| {
                    let snap = rx.borrow();
                    let pg = snap.pg.as_ref()?;
                    let wal_position = if pg.in_recovery {
                        pg.receive_lsn.max(pg.replay_lsn).unwrap_or(0)
                    } else {
                        pg.wal_flush_lsn.unwrap_or(0)
                    };
                    Some(PeerStatus {
                        name: name.to_string(),
                        is_primary: !pg.in_recovery,
                        wal_position,
                        timeline: Some(pg.timeline),
                        nofailover: false,
                        failover_priority: 1,
                        watchdog_failed: false,
                        raw: Value::Null,
                    })
                })),
            }
        };
        match answer {
            Answer::Hang => {
                tokio::time::sleep(timeout).await;
                None
            }
            Answer::Refused => None,
            Answer::Doc(d) => d,
        }
    }

    async fn answers(&self, api_url: &str, timeout: Duration) -> bool {
        let host = api_url
            .trim_start_matches("http://")
            .split(':')
            .next()
            .unwrap_or("")
            .to_string();
        self.peer_status(&host, api_url, timeout).await.is_some()
    }

    async fn post_failsafe(&self, _api_url: &str, _body: &Value, _timeout: Duration) -> bool {
        false
    }
}

/// Member `i`'s DCS client: calls fail while it is isolated (without reaching the store), and a
/// failed read costs `retry_timeout` as the etcd client's does.
pub struct NetDcs {
    pub inner: CountingDcs,
    pub net: Net,
    pub i: usize,
    pub retry_timeout: Duration,
}

impl NetDcs {
    fn isolated(&self) -> bool {
        lock(&self.net).w.members[self.i].partitioned
    }

    async fn call<T: std::fmt::Debug, F: Future<Output = pgpilot_dcs::Result<T>>>(
        &self,
        what: &str,
        f: impl FnOnce() -> F,
    ) -> pgpilot_dcs::Result<T> {
        let read = what.starts_with("cluster");
        if !read {
            // A write is a round trip to etcd (a read is served from the watch cache): the
            // store may go away, or the member be isolated, while it is on its way.
            let d = millis(&self.net, 2, 40);
            tokio::time::sleep(d).await;
        }
        let r = if self.isolated() {
            Err(DcsError::Unavailable("isolated".into()))
        } else {
            f().await
        };
        if !read && what != "touch_member" {
            let mut s = lock(&self.net);
            let name = s.w.members[self.i].name.clone();
            trace!(s.w, "  {name}: dcs {what}: {r:?}");
        }
        if r.is_err() {
            tokio::time::sleep(if read {
                self.retry_timeout
            } else {
                Duration::from_secs(1)
            })
            .await;
        }
        r
    }
}

impl Dcs for NetDcs {
    fn member_name(&self) -> &str {
        self.inner.member_name()
    }
    /// The agent applies the `/config` it reads (`apply_dynamic`): its synchronous mode is the
    /// world's `Member::sync_seen`.
    async fn cluster(&self) -> pgpilot_dcs::Result<Cluster> {
        let r = self.call("cluster", || self.inner.cluster()).await;
        if let Some(cfg) = r.as_ref().ok().and_then(|c| c.config.as_ref()) {
            if !cfg.data.is_empty() {
                let dynamic = pgpilot_config::DynamicConfig::from_document(&cfg.data).0;
                lock(&self.net).w.members[self.i].sync_seen = dynamic.synchronous_mode.is_active();
            }
        }
        r
    }
    async fn cluster_fresh(&self) -> pgpilot_dcs::Result<Cluster> {
        self.call("cluster_fresh", || self.inner.cluster_fresh())
            .await
    }
    async fn touch_member(&self, data: &MemberData) -> pgpilot_dcs::Result<()> {
        self.call("touch_member", || self.inner.touch_member(data))
            .await
    }
    /// Notes whether `/failover` named this member when it took the key (known bug K6). With
    /// `Bug::PromoteWithoutLock` a lost race is reported as won.
    async fn attempt_to_acquire_leader(&self) -> pgpilot_dcs::Result<bool> {
        let r = self
            .call("attempt_to_acquire_leader", || async {
                let r = self.inner.attempt_to_acquire_leader().await;
                let lie = lock(&self.net).w.bug == Bug::PromoteWithoutLock;
                if lie && matches!(r, Ok(false)) {
                    return Ok(true);
                }
                r
            })
            .await;
        if matches!(r, Ok(true)) {
            let mut s = lock(&self.net);
            s.w.invalidate();
            let me = s.w.members[self.i].name.clone();
            let named =
                s.w.checker_cluster()
                    .failover
                    .as_ref()
                    .is_some_and(|f| f.member.as_deref() == Some(me.as_str()));
            s.nodes[self.i].candidate = named;
        }
        r
    }
    /// Notes a renewal that re-creates an expired key (`World::note_stale_renewal`).
    async fn update_leader(&self, leader: Option<&Leader>) -> pgpilot_dcs::Result<bool> {
        self.call("update_leader", || async {
            let gone = {
                let s = lock(&self.net);
                s.w.invalidate();
                !s.w.dcs_down() && s.w.leader_holder().is_none()
            };
            let r = self.inner.update_leader(leader).await;
            if gone && matches!(r, Ok(true)) {
                let mut s = lock(&self.net);
                let watched = s.nodes[self.i].watchdog_open;
                s.w.note_stale_recreation(self.i, watched);
            }
            r
        })
        .await
    }
    async fn keep_leader_lease(&self) -> pgpilot_dcs::Result<bool> {
        self.call("keep_leader_lease", || self.inner.keep_leader_lease())
            .await
    }
    async fn take_leader(&self) -> pgpilot_dcs::Result<()> {
        self.call("take_leader", || self.inner.take_leader()).await
    }
    async fn delete_leader(&self) -> pgpilot_dcs::Result<bool> {
        self.call("delete_leader", || self.inner.delete_leader())
            .await
    }
    async fn initialize(&self, create_new: bool, sysid: &str) -> pgpilot_dcs::Result<bool> {
        self.call("initialize", || self.inner.initialize(create_new, sysid))
            .await
    }
    async fn cancel_initialization(&self) -> pgpilot_dcs::Result<()> {
        self.call("cancel_initialization", || {
            self.inner.cancel_initialization()
        })
        .await
    }
    async fn set_config(&self, value: &str, version: Option<i64>) -> pgpilot_dcs::Result<bool> {
        self.call("set_config", || self.inner.set_config(value, version))
            .await
    }
    async fn set_failover(&self, value: &str, version: Option<i64>) -> pgpilot_dcs::Result<bool> {
        self.call("set_failover", || self.inner.set_failover(value, version))
            .await
    }
    async fn set_sync(&self, value: &str, version: Option<i64>) -> pgpilot_dcs::Result<bool> {
        self.call("set_sync", || self.inner.set_sync(value, version))
            .await
    }
    async fn delete_sync(&self, version: Option<i64>) -> pgpilot_dcs::Result<bool> {
        self.call("delete_sync", || self.inner.delete_sync(version))
            .await
    }
    async fn set_history(&self, value: &str) -> pgpilot_dcs::Result<()> {
        self.call("set_history", || self.inner.set_history(value))
            .await
    }
    async fn set_failsafe(&self, value: &str) -> pgpilot_dcs::Result<()> {
        self.call("set_failsafe", || self.inner.set_failsafe(value))
            .await
    }
    async fn write_status(&self, status: &Status) -> pgpilot_dcs::Result<()> {
        self.call("write_status", || self.inner.write_status(status))
            .await
    }
    fn set_ttl(&self, ttl: Duration) {
        self.inner.set_ttl(ttl);
    }
    fn set_retry_timeout(&self, retry_timeout: Duration) {
        self.inner.set_retry_timeout(retry_timeout);
    }
    /// An isolated member hears of no event.
    async fn watch(&self, timeout: Duration, leader_is_me: bool) -> bool {
        let deaf = self.isolated();
        if deaf {
            tokio::time::sleep(timeout).await;
            return false;
        }
        self.inner.watch(timeout, leader_is_me).await
    }
    async fn delete_cluster(&self) -> pgpilot_dcs::Result<()> {
        self.call("delete_cluster", || self.inner.delete_cluster())
            .await
    }
    async fn close(&self) -> pgpilot_dcs::Result<()> {
        self.call("close", || self.inner.close()).await
    }
}

/// The guard process of member `i`, spawned by the agent of generation `gen`: its deadline is
/// the world's `Member::guard` (fenced by `World::fence`), on the agent's (virtual) clock.
pub struct SimGuard {
    pub net: Net,
    pub i: usize,
    pub gen: u64,
}

impl GuardLink for SimGuard {
    fn clock(&self) -> Option<Duration> {
        None
    }

    fn send(&mut self, msg: Message) -> Result<(), GuardError> {
        let mut s = lock(&self.net);
        if s.nodes[self.i].gen != self.gen {
            // This guard was left behind (its agent is gone): the world keeps it as an orphan.
            return Ok(());
        }
        s.w.members[self.i].guard = match msg {
            Message::Arm { valid, .. } => Some(Instant::now() + valid),
            Message::Disarm => None,
        };
        Ok(())
    }

    /// End of file: a disarmed guard exits, an armed one keeps its deadline (as an orphan).
    fn close(self: Box<Self>, _disarmed: bool) {
        let mut s = lock(&self.net);
        let m = &mut s.w.members[self.i];
        m.orphan_guard = m.guard.take().max(m.orphan_guard);
    }
}

/// A task that is not polled while its member's agent is frozen (SIGSTOP): timers that expire
/// meanwhile are seen at the thaw.
pub struct Freezable {
    pub net: Net,
    pub i: usize,
    pub fut: Pin<Box<dyn Future<Output = ()>>>,
}

impl Future for Freezable {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        {
            let mut s = lock(&self.net);
            if s.nodes[self.i].frozen {
                s.nodes[self.i].waker = Some(cx.waker().clone());
                return Poll::Pending;
            }
        }
        self.fut.as_mut().poll(cx)
    }
}

/// Member `i`'s `/dev/watchdog`, as the agent of generation `gen` opens it: its deadline is the
/// world's `Member::watchdog` (`World::watchdog_resets` resets the member at it). Opening starts
/// the timer, setting the timeout and every keepalive restart it, the magic close stops it; a
/// device left open by a process that is gone keeps counting.
pub struct SimWatchdogs {
    pub net: Net,
    pub i: usize,
    pub gen: u64,
}

struct SimDevice {
    net: Net,
    i: usize,
    gen: u64,
    timeout: i64,
}

impl SimDevice {
    fn set_deadline(&self, deadline: Option<Instant>) {
        let mut s = lock(&self.net);
        if s.nodes[self.i].gen == self.gen {
            s.w.members[self.i].watchdog = deadline;
        }
    }

    fn restart(&self) {
        let t = Duration::from_secs(self.timeout.unsigned_abs());
        self.set_deadline(Some(Instant::now() + t));
    }
}

impl WatchdogDevice for SimDevice {
    fn describe(&self) -> String {
        "simulated watchdog".into()
    }
    fn can_set_timeout(&self) -> bool {
        true
    }
    fn can_be_disabled(&self) -> bool {
        true
    }
    fn set_timeout(&mut self, seconds: i64) -> Result<(), WatchdogError> {
        self.timeout = seconds;
        self.restart();
        Ok(())
    }
    fn timeout(&mut self) -> Result<i64, WatchdogError> {
        Ok(self.timeout)
    }
    fn keepalive(&mut self) -> Result<(), WatchdogError> {
        self.restart();
        Ok(())
    }
    fn close(self: Box<Self>) -> Result<(), WatchdogError> {
        self.set_deadline(None);
        let mut s = lock(&self.net);
        if s.nodes[self.i].gen == self.gen {
            s.nodes[self.i].watchdog_open = false;
        }
        Ok(())
    }
}

impl WatchdogOpener for SimWatchdogs {
    fn open(&self, _config: &WatchdogConfig) -> Result<Box<dyn WatchdogDevice>, WatchdogError> {
        let dev = SimDevice {
            net: self.net.clone(),
            i: self.i,
            gen: self.gen,
            // The driver's default until the agent sets its own.
            timeout: 60,
        };
        dev.restart();
        let mut s = lock(&self.net);
        if s.nodes[self.i].gen == self.gen {
            s.nodes[self.i].watchdog_open = true;
        }
        drop(s);
        Ok(Box::new(dev))
    }
    fn usable(&self, _config: &WatchdogConfig) -> bool {
        true
    }
    fn describe(&self, _config: &WatchdogConfig) -> String {
        "simulated watchdog".into()
    }
}
