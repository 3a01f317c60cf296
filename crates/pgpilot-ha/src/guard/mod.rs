//! The guard (issue 12 item 2, DESIGN.md second invariant): fencing that does not need the agent
//! to be scheduled. A frozen agent (SIGSTOP, a stuck disk, a paused cgroup) can neither renew
//! its lease nor demote; without a guard its PostgreSQL stays writable after the leader key
//! expired and another member was promoted: split brain, lost writes.
//!
//! The guard is a separate process (`pgpilot --guard DATA_DIR`, the same binary) that the agent
//! spawns at start in a session of its own, so that a signal to the agent's process or process
//! group (SIGSTOP, SIGKILL, a terminal's SIGINT) does not reach it. They talk over the guard's
//! stdin, a pipe only the agent writes, one line per message ([`Message`]):
//!
//! * `arm <valid_ms> <stamp_ms>`: after every successful leader key renewal (outside maintenance
//!   mode), "my leadership is valid for `valid_ms` more milliseconds". The agent computes it from
//!   when the renewal request was **sent**: etcd counts the lease's ttl from when it handles the
//!   keepalive, which is after we sent it, so `sent + ttl` is never later than the real expiry.
//!   `valid = ttl - elapsed since sent - margin` ([`margin`]). `stamp_ms` is the agent's reading
//!   of `CLOCK_BOOTTIME` when it computed `valid`: the guard turns the duration into a deadline on
//!   its own `CLOCK_BOOTTIME` (which keeps counting across a suspend, unlike `CLOCK_MONOTONIC`)
//!   and, since both processes read the same clock, subtracts the time the line spent in the
//!   pipe (a member frozen as a whole, guard included, must not read an old renewal as fresh).
//! * `disarm`: this member may no longer fence: it lost or released the key and PostgreSQL is
//!   stopped or in recovery, the cluster is paused (maintenance mode: no automatic action), or
//!   the agent shut down cleanly. The guard never stops a PostgreSQL it was not armed for.
//! * end of file: the agent is gone (exit, crash, SIGKILL). Disarmed, the guard exits; armed, it
//!   keeps the deadline and fences at it unless the postmaster is gone already.
//!
//! When the deadline comes near without a new `arm`, the guard stops the postmaster: a fast
//! shutdown from [`process::DRAIN`] before the deadline, so that the standbys receive every
//! acknowledged commit, and an immediate one at the deadline (see `process.rs`). It is on by default; `pgpilot.guard: off` (or
//! `PGPILOT_GUARD=off`) turns it off. A guard that can not be started or that died and can not
//! be started again makes the member refuse leadership, as a `required` watchdog does.
//!
//! The agent holds a [`Guard`]; the process behind it is a [`GuardLink`], so the HA core runs in
//! unit tests and the simulation with [`Guard::off`] or a fake link. [`ProcessLink`] is the real
//! one; [`run_guard`] is the guard process's main loop.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::time::Instant;
use tracing::{error, info, warn};

mod link;
mod process;
#[cfg(test)]
mod tests;

pub use link::ProcessLink;
pub use process::{run_guard, GuardState, Release, Step};

/// The smallest margin between the guard's deadline and the earliest moment the leader key can
/// expire in etcd.
const MIN_MARGIN: Duration = Duration::from_secs(1);

/// How much earlier than `sent + ttl` the guard fences: a tenth of the ttl, at least 1 s (2 s at
/// Patroni's ttl 20, 1 s at a ttl of 8).
///
/// What it covers: the rate difference between this host's clock and the etcd leader's (a
/// clock disciplined by NTP is off by at most 500 ppm: 10 ms over 20 s; the margin allows 5 %),
/// the line's way through the pipe, and the fence itself, which must be over before the key can
/// expire: the immediate shutdown at the deadline (milliseconds; the fast shutdown before it
/// comes out of the leadership's validity) and, if the postmaster does not go, the SIGKILL after
/// [`process::KILL_AFTER`] (0.5 s, below the smallest margin).
pub fn margin(ttl: Duration) -> Duration {
    (ttl / 10).max(MIN_MARGIN)
}

/// How long leadership stays valid after a renewal sent `elapsed` ago: `ttl - elapsed - margin`,
/// zero when that is negative (the guard then fences at once: the previous deadline, earlier
/// still, has passed too).
pub fn valid_for(ttl: Duration, elapsed: Duration) -> Duration {
    ttl.saturating_sub(elapsed + margin(ttl))
}

/// A line of the agent-to-guard protocol (module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Message {
    /// Leadership valid for `valid` after `stamp` (`CLOCK_BOOTTIME`, when known).
    Arm {
        valid: Duration,
        stamp: Option<Duration>,
    },
    Disarm,
}

impl Message {
    /// The line, with its newline.
    pub fn encode(&self) -> String {
        match self {
            Message::Arm { valid, stamp } => match stamp {
                Some(s) => format!("arm {} {}\n", valid.as_millis(), s.as_millis()),
                None => format!("arm {}\n", valid.as_millis()),
            },
            Message::Disarm => "disarm\n".into(),
        }
    }

    /// A line without its newline; `None` for anything else (the guard logs and ignores it).
    pub fn parse(line: &str) -> Option<Message> {
        let mut words = line.split_whitespace();
        let msg = match words.next()? {
            "arm" => {
                let valid = Duration::from_millis(words.next()?.parse().ok()?);
                let stamp = match words.next() {
                    Some(w) => Some(Duration::from_millis(w.parse().ok()?)),
                    None => None,
                };
                Message::Arm { valid, stamp }
            }
            "disarm" => Message::Disarm,
            _ => return None,
        };
        words.next().is_none().then_some(msg)
    }
}

/// `CLOCK_BOOTTIME`: time since boot, counting a suspend. `None` only if the kernel refuses it.
pub fn boot_time() -> Option<Duration> {
    let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME).ok()?;
    let secs = u64::try_from(ts.tv_sec()).ok()?;
    let nanos = u32::try_from(ts.tv_nsec()).ok()?;
    Some(Duration::new(secs, nanos))
}

/// A guard link failed: the process could not be started, or is gone and could not be started
/// again, or did not take a message.
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error("can not start the guard process: {0}")]
    Spawn(#[source] std::io::Error),
    #[error("can not write to the guard process: {0}")]
    Write(#[source] std::io::Error),
}

/// The agent's end of the guard: the real process ([`ProcessLink`]) or a test's fake.
pub trait GuardLink: Send {
    /// The clock the guard keeps its deadline on (`CLOCK_BOOTTIME`); `None`: the agent's clock
    /// measures the renewal instead (tests, the simulation's paused clock).
    fn clock(&self) -> Option<Duration>;
    /// Delivers one message. A guard process that died is started again first.
    fn send(&mut self, msg: Message) -> Result<(), GuardError>;
    /// Clean shutdown: closes the pipe (end of file) and, when the last message was `disarm`,
    /// waits briefly for the guard to exit.
    fn close(self: Box<Self>, disarmed: bool);
}

/// When a renewal request was sent, on the agent's clock and on the guard's.
#[derive(Debug, Clone, Copy)]
pub struct RenewalStart {
    pub at: Instant,
    boot: Option<Duration>,
}

/// The agent's guard (module docs). A cheap handle: the agent's lease keeper (`agent/keeper.rs`)
/// arms the same guard between cycles, so the state lives behind a mutex (never held across an
/// await: every method is a few field updates and at most one write to a pipe).
#[derive(Clone)]
pub struct Guard(Arc<Mutex<GuardInner>>);

struct GuardInner {
    link: Option<Box<dyn GuardLink>>,
    /// Why the guard can not do its duty (it could not start, or a message was refused): the
    /// member does not run for leader and a leader lets the key go.
    failed: Option<String>,
    /// The last message the guard took was `arm`: it may fence this member's PostgreSQL.
    armed: bool,
}

impl Guard {
    fn with(link: Option<Box<dyn GuardLink>>, failed: Option<String>) -> Guard {
        Guard(Arc::new(Mutex::new(GuardInner {
            link,
            failed,
            armed: false,
        })))
    }

    fn inner(&self) -> MutexGuard<'_, GuardInner> {
        // A panic while the lock was held left plain fields behind, nothing half-written that a
        // later call could misread: go on with them.
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// No guard (`pgpilot.guard: off`, unit tests, the simulation): nothing is ever fenced by it
    /// and it never stands in the way of leadership.
    pub fn off() -> Guard {
        Guard::with(None, None)
    }

    /// A guard behind `link` (the process is running, disarmed).
    pub fn new(link: Box<dyn GuardLink>) -> Guard {
        Guard::with(Some(link), None)
    }

    /// A guard that is on but could not be started: the member refuses leadership.
    pub fn failed(reason: String) -> Guard {
        error!("{reason}; this member will not take the leader key");
        Guard::with(None, Some(reason))
    }

    /// Whether the guard can do its duty (always, when it is off).
    pub fn is_healthy(&self) -> bool {
        self.inner().failed.is_none()
    }

    /// Why it can not, for the log.
    pub fn failure(&self) -> Option<String> {
        self.inner().failed.clone()
    }

    /// The sentence to log when a guard that is on keeps this member from leading.
    pub fn refusal(&self) -> String {
        self.failure()
            .unwrap_or_else(|| "the guard process is not running".into())
    }

    pub fn is_armed(&self) -> bool {
        self.inner().armed
    }

    /// Take this just before sending a leader key renewal (or acquisition) to the DCS.
    pub fn renewal_started(&self) -> RenewalStart {
        RenewalStart {
            at: Instant::now(),
            boot: self.inner().link.as_ref().and_then(|l| l.clock()),
        }
    }

    /// After a successful renewal sent at `start`: arms the guard until `start + ttl - margin`.
    /// Returns `false` when the guard is on and did not take it (the member must not lead).
    pub fn arm(&self, start: RenewalStart, ttl: Duration) -> bool {
        let mut inner = self.inner();
        let inner = &mut *inner;
        let Some(link) = inner.link.as_mut() else {
            return inner.failed.is_none();
        };
        let now = link.clock();
        let elapsed = match (start.boot, now) {
            (Some(b0), Some(b1)) => b1.saturating_sub(b0),
            _ => start.at.elapsed(),
        };
        let valid = valid_for(ttl, elapsed);
        match link.send(Message::Arm { valid, stamp: now }) {
            Ok(()) => {
                if !inner.armed {
                    info!(
                        "guard armed: PostgreSQL is stopped if the leader key is not renewed within {} ms",
                        valid.as_millis()
                    );
                }
                if inner.failed.take().is_some() {
                    info!("the guard process is running again");
                }
                inner.armed = true;
                true
            }
            Err(e) => {
                error!("{e}");
                inner.failed = Some(e.to_string());
                false
            }
        }
    }

    /// Once per cycle: a guard that failed (it died and could not be started again, or did not
    /// take a message) is tried again with a `disarm`, which starts a new process if the old one
    /// is gone. Until that works the member stays out of the leader race.
    pub fn retry(&self) {
        let mut inner = self.inner();
        let inner = &mut *inner;
        if inner.failed.is_none() {
            return;
        }
        let Some(link) = inner.link.as_mut() else {
            return;
        };
        if link.send(Message::Disarm).is_ok() {
            info!("the guard process is running again");
            inner.failed = None;
            inner.armed = false;
        }
    }

    /// This member may no longer fence (module docs): tells the guard, if it is armed.
    pub fn disarm(&self) {
        let mut inner = self.inner();
        let inner = &mut *inner;
        if !inner.armed {
            return;
        }
        let Some(link) = inner.link.as_mut() else {
            return;
        };
        match link.send(Message::Disarm) {
            Ok(()) => {
                info!("guard disarmed");
                inner.armed = false;
            }
            // Not taken: the guard is gone (a new one starts disarmed) or stuck (its pipe is
            // full). At worst its old deadline stops a PostgreSQL that is no primary any more:
            // a restart, never a second primary. Tried again at the next disarm.
            Err(e) => warn!("could not disarm the guard: {e}"),
        }
    }

    /// Clean shutdown (the last step of the agent's shutdown order): closes the pipe. A disarmed
    /// guard exits; an armed one (PostgreSQL could not be stopped) keeps its deadline.
    pub fn close(&self) {
        let mut inner = self.inner();
        if let Some(link) = inner.link.take() {
            if inner.armed {
                warn!("leaving the guard armed: it stops PostgreSQL at the lease deadline");
            }
            link.close(!inner.armed);
        }
    }
}
