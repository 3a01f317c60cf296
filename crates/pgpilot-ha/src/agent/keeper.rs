//! The lease keeper (issue 12 item 3): renews the leader key's lease when the HA cycle is late,
//! so that a slow cycle (a long `pg_ctl`, a slow etcd read, a slow peer) does not eat the lease.
//!
//! The cycle renews the key once per `loop_wait` as before; the keeper only acts when the last
//! renewal is older than `loop_wait` plus a grace ([`grace`]). It then sends a keepalive of our
//! lease and nothing else ([`Dcs::keep_leader_lease`]: the key is never created or rebound, so a
//! key the agent released can not come back), and on success does what a renewal does: keeps
//! the watchdog alive and arms the guard from the instant the request was sent.
//!
//! It stops renewing when:
//! * the agent stops leading ([`Keeper::released`], wherever the agent drops its claim on the
//!   key): a generation counter makes a renewal that was in flight at that moment arm nothing,
//!   so the keeper never re-arms a guard the agent just disarmed;
//! * the cycle in progress has run for longer than its longest bounded wait ([`Keeper::busy`],
//!   [`Terms::window`]: `pg_ctl_timeout` plus the 5 s the agent adds to a `pg_ctl` command, and
//!   never less than `ttl`): the agent is stuck, not slow. The lease then lapses within `ttl`,
//!   and the guard, armed by the last renewal, fences PostgreSQL before that. A stuck agent
//!   keeps the key for at most `window + ttl` (95 s at Patroni's defaults) instead of `ttl`; it
//!   never keeps a writable primary past its guard's deadline;
//! * the agent shuts down (as in Patroni, whose loop stops): the key is deleted, or left to
//!   expire with the guard armed when PostgreSQL can not be stopped.
//!
//! It runs in the agent's task (`Agent::run` polls it next to the cycle), on the same clock, so
//! a runtime with a paused clock drives it too. An agent blocked in a system call blocks it as
//! well (the binary runs a single-threaded runtime): that case is the guard's.

use std::convert::Infallible;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use pgpilot_dcs::Dcs;
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::guard::Guard;
use crate::watchdog::Watchdog;

/// After a failed keeper renewal, the next try waits this long (the DCS client has already
/// retried within `retry_timeout`).
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// How late the cycle's renewal may be before the keeper renews: half a `loop_wait`, at least
/// 1 s (a cycle normally renews within a second of its start, and starts every `loop_wait`).
pub(super) fn grace(loop_wait: Duration) -> Duration {
    (loop_wait / 2).max(Duration::from_secs(1))
}

/// What the keeper's renewals follow, as of the agent's last renewal.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Terms {
    pub ttl: Duration,
    pub loop_wait: Duration,
    /// The longest a cycle may run before the keeper stops (module docs).
    pub window: Duration,
    /// Maintenance mode: renewals arm no guard, as the cycle's do not.
    pub paused: bool,
}

/// The agent's side and the keeper's side of the lease (module docs).
#[derive(Default)]
pub(super) struct Keeper {
    state: Mutex<State>,
    wake: Notify,
}

#[derive(Default)]
struct State {
    /// Bumped by [`Keeper::released`].
    generation: u64,
    /// The agent holds the key; when the last renewal (the cycle's or ours) was sent.
    renewed_at: Option<Instant>,
    /// Since when the agent has been busy (a cycle, a command); `None` while it waits.
    busy_since: Option<Instant>,
    terms: Terms,
    /// Renewals made by the keeper, not yet counted in the agent's statistics.
    renewals: u64,
    /// The "cycle is stuck" warning was logged for the current busy period.
    warned_stuck: bool,
    /// The last keeper renewal failed (logged once until one succeeds: during a DCS outage the
    /// cycle says it every cycle already).
    failing: bool,
}

impl Keeper {
    fn state(&self) -> MutexGuard<'_, State> {
        // Plain fields only, each write complete: a panic elsewhere leaves nothing half-done.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The agent renewed (or took) the key with a request sent at `at`.
    pub(super) fn renewed(&self, at: Instant, terms: Terms) {
        let mut st = self.state();
        st.renewed_at = Some(st.renewed_at.map_or(at, |t| t.max(at)));
        st.terms = terms;
        drop(st);
        self.wake.notify_one();
    }

    /// The agent closed the watchdog and disarmed the guard (maintenance mode, PostgreSQL
    /// stopped): a keeper renewal in flight must not arm them again; the next ones follow the
    /// cycle's rule (`paused`).
    pub(super) fn fencing_off(&self, paused: bool) {
        let mut st = self.state();
        st.generation += 1;
        st.terms.paused = paused;
    }

    /// The agent no longer counts on the key (it lost it, released it, or lets it expire): no
    /// more renewals, and none in flight arms anything.
    pub(super) fn released(&self) {
        let mut st = self.state();
        st.generation += 1;
        st.renewed_at = None;
    }

    /// The agent started a cycle or a command.
    pub(super) fn busy(&self) {
        let mut st = self.state();
        if st.busy_since.is_none() {
            st.busy_since = Some(Instant::now());
            st.warned_stuck = false;
        }
    }

    /// The agent waits for its next cycle.
    pub(super) fn idle(&self) {
        self.state().busy_since = None;
    }

    /// The last renewal's send time, if the agent holds the key.
    pub(super) fn renewed_at(&self) -> Option<Instant> {
        self.state().renewed_at
    }

    /// Renewals made since the last call.
    pub(super) fn take_renewals(&self) -> u64 {
        std::mem::take(&mut self.state().renewals)
    }

    /// When the keeper should look again, or `None` to wait for the agent.
    fn next_due(&self) -> Option<Instant> {
        let st = self.state();
        let loop_wait = st.terms.loop_wait;
        st.renewed_at.map(|at| at + loop_wait + grace(loop_wait))
    }

    /// Whether a renewal is due now: the generation it is made for, and its terms.
    fn due(&self) -> Option<(u64, Terms)> {
        let mut st = self.state();
        let at = st.renewed_at?;
        let terms = st.terms;
        if at.elapsed() < terms.loop_wait + grace(terms.loop_wait) {
            return None;
        }
        let busy_for = st.busy_since.map(|t| t.elapsed());
        if busy_for.is_some_and(|b| b >= terms.window) {
            if !std::mem::replace(&mut st.warned_stuck, true) {
                warn!(
                    "the HA cycle has been running for {:.1} s, longer than any of its waits: the lease keeper stops renewing the leader key",
                    busy_for.unwrap_or_default().as_secs_f64()
                );
            }
            return None;
        }
        Some((st.generation, terms))
    }

    /// Runs forever: polled by `Agent::run` next to the cycle.
    pub(super) async fn run<D: Dcs>(
        self: Arc<Self>,
        dcs: Arc<D>,
        guard: Guard,
        watchdog: Watchdog,
    ) -> Infallible {
        loop {
            match self.next_due() {
                None => self.wake.notified().await,
                Some(due) => {
                    // `biased`: ties go in order, for a replayable simulation (`Agent::run`).
                    tokio::select! {
                        biased;
                        _ = tokio::time::sleep_until(due) => {}
                        _ = self.wake.notified() => continue,
                    }
                }
            }
            let Some((generation, terms)) = self.due() else {
                // Renewed meanwhile (the next due time is later), or stuck: wait for the agent.
                if self.next_due().is_some_and(|d| d <= Instant::now()) {
                    self.wake.notified().await;
                }
                continue;
            };
            let start = guard.renewal_started();
            let outcome = dcs.keep_leader_lease().await;
            // No await from here to the fences: in the agent the keeper shares the cycle's task,
            // so a release can not slip in between the check in `settle` and the arm.
            match self.settle(generation, start.at, outcome) {
                Settled::Renewed => {
                    watchdog.keepalive();
                    if !terms.paused {
                        guard.arm(start, terms.ttl);
                    }
                }
                Settled::Stopped => {}
                Settled::Failed => {
                    // Tried again after a short pause (the DCS client has retried already).
                    tokio::select! {
                        biased;
                        _ = tokio::time::sleep(RETRY_PAUSE) => {}
                        _ = self.wake.notified() => {}
                    }
                }
            }
        }
    }

    /// Books the outcome of a renewal sent at `sent` for `generation`.
    fn settle(
        &self,
        generation: u64,
        sent: Instant,
        outcome: pgpilot_dcs::Result<bool>,
    ) -> Settled {
        let mut st = self.state();
        if st.generation != generation || st.renewed_at.is_none() {
            // Released while the request was in flight: nothing to arm.
            return Settled::Stopped;
        }
        match outcome {
            Ok(true) => {
                if std::mem::take(&mut st.failing) {
                    info!("the lease keeper reaches the DCS again");
                }
                let since = st.renewed_at.map(|t| sent - t).unwrap_or_default();
                st.renewed_at = Some(sent);
                st.renewals += 1;
                info!(
                    "lease renewed by the lease keeper {:.1} s after the last renewal: the HA cycle is late",
                    since.as_secs_f64()
                );
                Settled::Renewed
            }
            Ok(false) => {
                // Not ours any more: the cycle will see it and act; the keeper stops.
                warn!("the lease keeper found the leader key gone or on another lease");
                st.generation += 1;
                st.renewed_at = None;
                Settled::Stopped
            }
            Err(e) => {
                if !std::mem::replace(&mut st.failing, true) {
                    warn!("the lease keeper could not renew the lease: {e}");
                }
                Settled::Failed
            }
        }
    }
}

/// What became of one keeper renewal.
enum Settled {
    /// The lease was renewed for the generation it was sent for: keep the fences alive.
    Renewed,
    /// The agent released the key meanwhile, or it is not ours: nothing to do.
    Stopped,
    /// The DCS did not answer: try again shortly.
    Failed,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard::{GuardError, GuardLink, Message};
    use crate::watchdog::SystemWatchdogs;
    use pgpilot_config::WatchdogConfig;
    use pgpilot_dcs::memory::{MemoryDcs, MemoryStore};

    const TTL: Duration = Duration::from_secs(10);
    const LOOP_WAIT: Duration = Duration::from_secs(2);

    /// Counts the guard's `arm` messages.
    struct CountingLink(Arc<Mutex<u32>>);

    impl GuardLink for CountingLink {
        fn clock(&self) -> Option<Duration> {
            None
        }
        fn send(&mut self, msg: Message) -> Result<(), GuardError> {
            if matches!(msg, Message::Arm { .. }) {
                *self.0.lock().unwrap() += 1;
            }
            Ok(())
        }
        fn close(self: Box<Self>, _disarmed: bool) {}
    }

    struct Fixture {
        store: MemoryStore,
        dcs: Arc<MemoryDcs>,
        keeper: Arc<Keeper>,
        arms: Arc<Mutex<u32>>,
    }

    /// A leader (key taken through the DCS) whose keeper runs in the background.
    async fn leader() -> Fixture {
        let store = MemoryStore::new();
        let dcs = Arc::new(MemoryDcs::new(store.clone(), "/service", "c", "a", TTL));
        assert!(dcs.attempt_to_acquire_leader().await.unwrap());
        let keeper = Arc::new(Keeper::default());
        let arms = Arc::new(Mutex::new(0));
        let guard = Guard::new(Box::new(CountingLink(arms.clone())));
        let watchdog = Watchdog::new(
            Arc::new(SystemWatchdogs),
            &WatchdogConfig::default(),
            TTL,
            LOOP_WAIT,
        );
        tokio::spawn(Arc::clone(&keeper).run(Arc::clone(&dcs), guard, watchdog));
        Fixture {
            store,
            dcs,
            keeper,
            arms,
        }
    }

    /// The window is the ttl here (no longer `pg_ctl` wait in these tests).
    fn terms(paused: bool) -> Terms {
        Terms {
            ttl: TTL,
            loop_wait: LOOP_WAIT,
            window: TTL,
            paused,
        }
    }

    async fn leader_of(f: &Fixture) -> Option<String> {
        let reader = MemoryDcs::new(f.store.clone(), "/service", "c", "b", TTL);
        reader
            .cluster()
            .await
            .unwrap()
            .leader_name()
            .map(str::to_string)
    }

    async fn advance(d: Duration) {
        tokio::time::sleep(d).await;
    }

    /// A cycle that runs for 9 s (under ttl 10, loop_wait 2) without renewing: the keeper renews
    /// the lease and arms the guard, so the key outlives the lease's ttl. Without the keeper the
    /// key would have expired at 10 s.
    #[tokio::test(start_paused = true)]
    async fn a_slow_cycle_keeps_the_key() {
        let f = leader().await;
        f.keeper.busy();
        f.keeper.renewed(Instant::now(), terms(false));
        advance(Duration::from_millis(9_500)).await;
        assert_eq!(leader_of(&f).await.as_deref(), Some("a"));
        assert!(
            *f.arms.lock().unwrap() >= 2,
            "the guard was armed by the keeper"
        );
        assert!(f.keeper.take_renewals() >= 2);
        // The cycle ends in time and the key is still there well past the first ttl.
        f.keeper.idle();
        f.keeper.renewed(Instant::now(), terms(false));
        advance(Duration::from_secs(5)).await;
        assert_eq!(leader_of(&f).await.as_deref(), Some("a"));
    }

    /// A cycle stuck for longer than its window: the keeper stops, the lease lapses within ttl after
    /// that, and the guard got no deadline after the keeper stopped.
    #[tokio::test(start_paused = true)]
    async fn a_stuck_cycle_lets_the_key_expire() {
        let f = leader().await;
        f.keeper.busy();
        f.keeper.renewed(Instant::now(), terms(false));
        advance(TTL).await;
        let arms = *f.arms.lock().unwrap();
        advance(TTL + Duration::from_secs(1)).await;
        assert_eq!(leader_of(&f).await, None, "the key expired");
        assert_eq!(
            *f.arms.lock().unwrap(),
            arms,
            "no arm after the keeper stopped"
        );
    }

    /// Once the agent lets the key go, the keeper renews nothing: the key expires on time.
    #[tokio::test(start_paused = true)]
    async fn released_means_no_renewal() {
        let f = leader().await;
        f.keeper.busy();
        f.keeper.renewed(Instant::now(), terms(false));
        f.keeper.released();
        advance(TTL + Duration::from_secs(1)).await;
        assert_eq!(leader_of(&f).await, None);
        assert_eq!(*f.arms.lock().unwrap(), 0);
    }

    /// In maintenance mode the keeper renews the key but arms no guard, as the cycle does.
    #[tokio::test(start_paused = true)]
    async fn paused_renews_without_arming() {
        let f = leader().await;
        f.keeper.busy();
        f.keeper.renewed(Instant::now(), terms(true));
        advance(Duration::from_millis(9_500)).await;
        assert!(f.keeper.take_renewals() >= 2);
        assert_eq!(*f.arms.lock().unwrap(), 0);
    }

    /// The keeper's renewal never brings back a key that is gone (deleted by the agent, or
    /// expired): `keep_leader_lease` says so and the keeper stops.
    #[tokio::test(start_paused = true)]
    async fn a_deleted_key_is_not_recreated() {
        let f = leader().await;
        f.keeper.busy();
        f.keeper.renewed(Instant::now(), terms(false));
        assert!(f.dcs.delete_leader().await.unwrap());
        advance(Duration::from_secs(8)).await;
        assert_eq!(leader_of(&f).await, None);
        assert_eq!(*f.arms.lock().unwrap(), 0);
        assert_eq!(f.keeper.renewed_at(), None, "the keeper gave up");
    }
}
