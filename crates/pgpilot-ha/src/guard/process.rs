//! The guard process (`pgpilot --guard DATA_DIR`): reads the agent's messages from stdin, keeps
//! the lease deadline on `CLOCK_BOOTTIME`, and fences when it passes (module docs of
//! [`super`]). No async runtime: one thread reads the pipe, one waits on a `CLOCK_BOOTTIME`
//! timerfd set to the deadline, and the main thread waits for either. A sleep's timeout does
//! not count suspended time, a `CLOCK_BOOTTIME` timer does: after a suspend that outlived the
//! deadline it fires as the machine resumes. Without a timerfd (it could not be created) the
//! main thread wakes every [`POLL`] to read the clock instead.
//!
//! [`GuardState`] is the pure part (messages and the clock in, [`Step`] out), tested without
//! processes; `fence` is the part that signals PostgreSQL.
//!
//! The fence starts [`DRAIN`] before the deadline with a fast shutdown: SIGINT to the
//! postmaster. PostgreSQL then sends SIGTERM to every client backend at once, so nothing is
//! committed or acknowledged from that moment on, writes its shutdown checkpoint, and keeps its
//! WAL senders until each standby has confirmed everything up to that checkpoint: what was
//! acknowledged before the fence reaches the replicas, so even asynchronous replication loses
//! nothing when the whole fence fits in the drain. A fast shutdown has no bound of its own (a
//! long checkpoint, a standby that stopped answering), so at the deadline a postmaster still
//! there gets SIGQUIT, the immediate shutdown: its backends are gone at once, nothing more is
//! written to WAL, and the next start is an ordinary crash recovery. SIGKILL of the postmaster
//! alone would leave the backends running until they notice. If the postmaster is still there
//! [`KILL_AFTER`] later (stuck, or itself stopped), SIGKILL goes to its process group, which
//! holds every backend (pg_ctl starts the postmaster as a session leader).

use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::{kill, killpg, Signal};
use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use nix::unistd::Pid;
use tracing::{error, info, warn};

use super::{boot_time, Message};

/// The longest the main loop sleeps without reading the clock while armed, when it has no
/// timerfd.
const POLL: Duration = Duration::from_millis(100);
/// How long before the deadline the fence starts with a fast shutdown (module docs): the time
/// the shutdown checkpoint and the WAL senders' last round get, out of the leadership's
/// validity. The keeper renews at least every `loop_wait + max(loop_wait / 2, 1 s)`, so a live
/// agent's renewals keep the guard several seconds away from it even at a ttl of 8.
pub const DRAIN: Duration = Duration::from_secs(1);
/// How long the postmaster gets to go after SIGQUIT before SIGKILL (below [`super::margin`]'s
/// smallest value, so the whole fence is over before the key can expire).
pub const KILL_AFTER: Duration = Duration::from_millis(500);
/// How long the guard waits for a SIGKILLed postmaster to be gone, for the log.
const GONE_AFTER_KILL: Duration = Duration::from_secs(5);

/// What the guard does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Wait for a message; at most this long when armed (`None`: disarmed, no deadline).
    Wait(Option<Duration>),
    /// The deadline is at most [`DRAIN`] away (`left`, zero once it passed): stop PostgreSQL
    /// now, with a fast shutdown for at most `left`, then an immediate one.
    Fence { left: Duration },
    /// Disarmed and the agent is gone: nothing left to guard.
    Exit,
}

/// The guard's deadline bookkeeping. Times are readings of `CLOCK_BOOTTIME`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct GuardState {
    /// Armed until then: PostgreSQL is gone by then, its fence starts [`DRAIN`] earlier.
    deadline: Option<Duration>,
    /// The agent closed the pipe (it exited, crashed or was killed).
    agent_gone: bool,
}

impl GuardState {
    /// A message read at `now`. `arm` counts from the agent's stamp when the stamp is not in the
    /// future (the time the line waited in the pipe is not given away twice), else from `now`;
    /// the latest message wins.
    pub fn message(&mut self, msg: Message, now: Duration) {
        self.deadline = match msg {
            Message::Arm { valid, stamp } => {
                let from = stamp.filter(|s| *s <= now).unwrap_or(now);
                Some(from + valid)
            }
            Message::Disarm => None,
        };
    }

    /// The pipe reached its end.
    pub fn agent_gone(&mut self) {
        self.agent_gone = true;
    }

    pub fn is_agent_gone(&self) -> bool {
        self.agent_gone
    }

    pub fn deadline(&self) -> Option<Duration> {
        self.deadline
    }

    /// When the fence starts: [`DRAIN`] before the deadline.
    pub fn fence_at(&self) -> Option<Duration> {
        self.deadline.map(|d| d.saturating_sub(DRAIN))
    }

    /// The fence ran: disarmed until the agent (if any) arms again.
    pub fn fenced(&mut self) {
        self.deadline = None;
    }

    pub fn step(&self, now: Duration) -> Step {
        match (self.deadline, self.fence_at()) {
            (Some(d), Some(start)) if now >= start => Step::Fence {
                left: d.saturating_sub(now),
            },
            (_, Some(start)) => Step::Wait(Some(start - now)),
            _ if self.agent_gone => Step::Exit,
            _ => Step::Wait(None),
        }
    }
}

enum Input {
    Line(String),
    Eof,
    /// The timerfd expired (the deadline, on `CLOCK_BOOTTIME`).
    Tick,
}

/// A `CLOCK_BOOTTIME` timerfd and the thread that turns its expirations into [`Input::Tick`]
/// (at the start of the fence).
fn deadline_timer(me: u32, tx: mpsc::Sender<Input>) -> Option<Arc<TimerFd>> {
    let timer = match TimerFd::new(ClockId::CLOCK_BOOTTIME, TimerFlags::TFD_CLOEXEC) {
        Ok(t) => Arc::new(t),
        Err(e) => {
            warn!("guard {me}: no CLOCK_BOOTTIME timerfd ({e}); reading the clock every {} ms instead", POLL.as_millis());
            return None;
        }
    };
    let waiting = Arc::clone(&timer);
    let thread = std::thread::Builder::new()
        .name("guard-timer".into())
        .spawn(move || {
            // `wait` blocks until the timer, as last set by the main thread, expires.
            while waiting.wait().is_ok() {
                if tx.send(Input::Tick).is_err() {
                    return;
                }
            }
        });
    match thread {
        Ok(_) => Some(timer),
        Err(e) => {
            warn!("guard {me}: can not start the timer thread ({e}); reading the clock every {} ms instead", POLL.as_millis());
            None
        }
    }
}

/// Sets `timer` to `deadline` (a `CLOCK_BOOTTIME` reading), or disarms it.
fn set_timer(me: u32, timer: &TimerFd, deadline: Option<Duration>) {
    let set = match deadline {
        // A zero expiration would disarm the timer: a deadline at 0 has passed anyway.
        Some(d) => timer.set(
            Expiration::OneShot(TimeSpec::from_duration(d.max(Duration::from_nanos(1)))),
            TimerSetTimeFlags::TFD_TIMER_ABSTIME,
        ),
        None => timer.unset(),
    };
    if let Err(e) = set {
        // The main loop still wakes at the deadline on its own (without suspend).
        warn!("guard {me}: can not set the deadline timer: {e}");
    }
}

/// The guard's main loop for the PostgreSQL of `data_dir`; returns the exit code.
/// How the guard gives the leader key back when the agent and PostgreSQL are both gone: `Ok(true)`
/// released, `Ok(false)` not this member's key (any more), `Err` the DCS could not be asked.
pub type Release = Box<dyn FnOnce() -> Result<bool, String> + Send>;

/// The guard's main loop. With `release`, a guard whose agent is gone while leading and whose
/// postmaster is gone too (the agent and PostgreSQL killed, the guard alive) gives the leader key
/// back at once, so that a replica takes over without waiting for the lease to expire: nothing
/// here can write any more, and the key would only keep the cluster without a primary.
pub fn run_guard(data_dir: &Path, mut release: Option<Release>) -> i32 {
    let me = std::process::id();
    let Some(_) = boot_time() else {
        error!("guard {me}: CLOCK_BOOTTIME can not be read; the guard can not keep a deadline");
        return 1;
    };
    info!("guard {me}: guarding {}", data_dir.display());
    let (tx, rx) = mpsc::channel();
    let tx_timer = tx.clone();
    let reader = std::thread::Builder::new()
        .name("guard-stdin".into())
        .spawn(move || {
            use std::io::BufRead;
            for line in std::io::stdin().lock().lines() {
                let Ok(line) = line else { break };
                if tx.send(Input::Line(line)).is_err() {
                    return;
                }
            }
            let _ = tx.send(Input::Eof);
        });
    if let Err(e) = reader {
        error!("guard {me}: can not start the reader thread: {e}");
        return 1;
    }
    let timer = deadline_timer(me, tx_timer);
    // The wait of the main thread: the deadline itself with a timer, slices of POLL without.
    let wait_limit = |limit: Option<Duration>| match &timer {
        Some(_) => limit,
        None => limit.map(|t| t.min(POLL)),
    };
    let now = || boot_time().unwrap_or_default();
    let mut state = GuardState::default();
    let mut timer_set: Option<Duration> = None;
    loop {
        if state.is_agent_gone() && state.deadline().is_some() && postmaster(data_dir).is_none() {
            if let Some(release) = release.take() {
                warn!("guard {me}: the agent and PostgreSQL are both gone while leading: releasing the leader key so that a replica takes over without waiting for the ttl");
                match release() {
                    Ok(true) => info!("guard {me}: leader key released"),
                    Ok(false) => info!("guard {me}: the leader key is not this member's any more; nothing to release"),
                    Err(e) => error!("guard {me}: could not release the leader key ({e}); it expires with its lease"),
                }
                // Nothing left to fence.
                state.fenced();
                continue;
            }
        }
        if let Some(t) = &timer {
            if state.fence_at() != timer_set {
                set_timer(me, t, state.fence_at());
                timer_set = state.fence_at();
            }
        }
        match state.step(now()) {
            Step::Exit => {
                info!("guard {me}: the agent is gone and the guard is disarmed; exiting");
                return 0;
            }
            Step::Fence { left } => {
                fence(me, data_dir, left);
                state.fenced();
                if state.is_agent_gone() {
                    return 0;
                }
            }
            Step::Wait(limit) if state.is_agent_gone() && timer.is_none() => {
                // Nothing more can come from the pipe: just watch the clock.
                std::thread::sleep(limit.unwrap_or(POLL).min(POLL));
            }
            Step::Wait(limit) => {
                // Agent gone while armed: look for the postmaster's end every POLL (the
                // release above), not only at the deadline.
                let limit = match limit {
                    Some(t) if state.is_agent_gone() && release.is_some() => Some(t.min(POLL)),
                    other => other,
                };
                let input = match wait_limit(limit) {
                    Some(t) => rx.recv_timeout(t),
                    None => rx.recv().map_err(|_| RecvTimeoutError::Disconnected),
                };
                match input {
                    Ok(Input::Line(line)) => match Message::parse(&line) {
                        Some(msg) => {
                            let was_armed = state.deadline().is_some();
                            state.message(msg, now());
                            match (was_armed, msg) {
                                (false, Message::Arm { valid, .. }) => info!(
                                    "guard {me}: armed, PostgreSQL is stopped in {} ms unless the lease is renewed",
                                    valid.as_millis()
                                ),
                                (true, Message::Disarm) => info!("guard {me}: disarmed"),
                                _ => {}
                            }
                        }
                        None => warn!("guard {me}: ignoring the unknown message {line:?}"),
                    },
                    Err(RecvTimeoutError::Disconnected) if state.is_agent_gone() => {
                        // No sender is left (the timer thread ended too): watch the clock.
                        std::thread::sleep(limit.unwrap_or(POLL).min(POLL));
                    }
                    Ok(Input::Eof) | Err(RecvTimeoutError::Disconnected) => {
                        state.agent_gone();
                        if let Some(d) = state.deadline() {
                            warn!(
                                "guard {me}: the agent is gone while leading; PostgreSQL is stopped at the lease deadline in {} ms",
                                d.saturating_sub(now()).as_millis()
                            );
                        }
                    }
                    Ok(Input::Tick) | Err(RecvTimeoutError::Timeout) => {}
                }
            }
        }
    }
}

/// Stops the postmaster of `data_dir`, if one runs (module docs): a fast shutdown given `left`,
/// then an immediate one, then SIGKILL.
fn fence(me: u32, data_dir: &Path, left: Duration) {
    let Some(pid) = postmaster(data_dir) else {
        warn!(
            "guard {me}: the lease deadline passed without a renewal; no postmaster runs in {}, nothing to stop",
            data_dir.display()
        );
        return;
    };
    let target = Pid::from_raw(pid);
    if !left.is_zero() {
        error!(
            "guard {me}: the leader key was not renewed in time: stopping PostgreSQL (postmaster {pid}) with a fast shutdown, immediate in {} ms, before the key can expire",
            left.as_millis()
        );
        match kill(target, Signal::SIGINT) {
            Ok(()) if wait_gone(pid, left) => {
                info!("guard {me}: PostgreSQL stopped (fast shutdown: the standbys received all of its WAL)");
                return;
            }
            Ok(()) => warn!(
                "guard {me}: the fast shutdown of postmaster {pid} did not end in {} ms; immediate shutdown",
                left.as_millis()
            ),
            Err(e) => error!("guard {me}: SIGINT to postmaster {pid} failed: {e}"),
        }
    } else {
        error!(
            "guard {me}: the leader key was not renewed in time: stopping PostgreSQL (postmaster {pid}) with an immediate shutdown before the key can expire"
        );
    }
    if let Err(e) = kill(target, Signal::SIGQUIT) {
        error!("guard {me}: SIGQUIT to postmaster {pid} failed: {e}");
    }
    if wait_gone(pid, KILL_AFTER) {
        info!("guard {me}: PostgreSQL stopped (immediate shutdown)");
        return;
    }
    error!(
        "guard {me}: postmaster {pid} still runs {} ms after SIGQUIT; SIGKILL to it and its backends",
        KILL_AFTER.as_millis()
    );
    let group = nix::unistd::getpgid(Some(target)).ok() == Some(target);
    let killed = if group {
        killpg(target, Signal::SIGKILL)
    } else {
        kill(target, Signal::SIGKILL)
    };
    if let Err(e) = killed {
        error!("guard {me}: SIGKILL to postmaster {pid} failed: {e}");
    }
    if wait_gone(pid, GONE_AFTER_KILL) {
        info!("guard {me}: PostgreSQL killed");
    } else {
        error!("guard {me}: postmaster {pid} is still there after SIGKILL");
    }
}

/// The postmaster of `data_dir`: the live PID of `postmaster.pid` whose working directory is that
/// data directory (the postmaster's is), so that a reused PID is never signalled. When the
/// working directory can not be read, a process named `postgres` or `postmaster` passes.
fn postmaster(data_dir: &Path) -> Option<i32> {
    let pid = pgpilot_postgres::live_postmaster_pid(data_dir)?;
    let canonical = |p: &Path| std::fs::canonicalize(p).ok();
    match std::fs::read_link(format!("/proc/{pid}/cwd")) {
        Ok(cwd) => (canonical(&cwd) == canonical(data_dir) || cwd == data_dir).then_some(pid),
        Err(_) => {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
            matches!(comm.trim(), "postgres" | "postmaster").then_some(pid)
        }
    }
}

/// Waits up to `limit` until `pid` is gone (a zombie counts as gone); `true` if it is.
fn wait_gone(pid: i32, limit: Duration) -> bool {
    let step = Duration::from_millis(10);
    let mut waited = Duration::ZERO;
    while running(pid) {
        if waited >= limit {
            return false;
        }
        std::thread::sleep(step);
        waited += step;
    }
    true
}

/// The process exists and is not a zombie.
fn running(pid: i32) -> bool {
    if kill(Pid::from_raw(pid), None).is_err() {
        return false;
    }
    let stat = PathBuf::from(format!("/proc/{pid}/stat"));
    match std::fs::read_to_string(stat) {
        // `pid (comm) S ...`: the state follows the last `)`.
        Ok(s) => s
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_none_or(|state| state != "Z"),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    use std::process::{Child, Command};

    use super::*;

    /// A stand-in postmaster: `sh -c script` in its own process group, working in `data_dir`,
    /// named by `data_dir/postmaster.pid` as a real postmaster is.
    fn fake_postmaster(data_dir: &Path, script: &str) -> Child {
        let child = Command::new("sh")
            .args(["-c", script])
            .current_dir(data_dir)
            .process_group(0)
            .spawn()
            .unwrap();
        std::fs::write(
            data_dir.join("postmaster.pid"),
            format!("{}\n{}\n", child.id(), data_dir.display()),
        )
        .unwrap();
        child
    }

    /// The fence asks the postmaster of `postmaster.pid` for a fast shutdown (SIGINT); one still
    /// there when the drain is over gets SIGQUIT, one that ignores that too (or is stuck) is
    /// killed with its process group after `KILL_AFTER`. With nothing left of the drain, SIGQUIT
    /// comes first.
    #[test]
    fn fence_drains_then_quits_then_kills() {
        let dir = tempfile::tempdir().unwrap();
        let mut pm = fake_postmaster(dir.path(), "exec sleep 60");
        fence(0, dir.path(), DRAIN);
        let status = pm.wait().unwrap();
        assert_eq!(status.signal(), Some(Signal::SIGINT as i32), "{status:?}");

        let mut pm = fake_postmaster(dir.path(), "exec sleep 60");
        fence(0, dir.path(), Duration::ZERO);
        let status = pm.wait().unwrap();
        assert_eq!(status.signal(), Some(Signal::SIGQUIT as i32), "{status:?}");

        let mut pm = fake_postmaster(dir.path(), "trap '' INT; sleep 60 & wait");
        // Let the shell install its trap before the fence.
        std::thread::sleep(Duration::from_millis(200));
        fence(0, dir.path(), Duration::from_millis(200));
        let status = pm.wait().unwrap();
        assert_eq!(status.signal(), Some(Signal::SIGQUIT as i32), "{status:?}");
        // The shell's `sleep` is left in its process group: gone with it.
        let _ = killpg(Pid::from_raw(pm.id() as i32), Signal::SIGKILL);

        let mut pm = fake_postmaster(dir.path(), "trap '' INT QUIT; sleep 60 & wait");
        std::thread::sleep(Duration::from_millis(200));
        fence(0, dir.path(), Duration::from_millis(200));
        let status = pm.wait().unwrap();
        assert_eq!(status.signal(), Some(9), "{status:?}");
    }

    /// A `postmaster.pid` naming a live process that does not work in this data directory (a
    /// reused PID) or another data directory is never signalled; no file, nothing to do.
    #[test]
    fn fence_never_signals_what_is_not_this_postmaster() {
        let dir = tempfile::tempdir().unwrap();
        fence(0, dir.path(), DRAIN);
        let elsewhere = tempfile::tempdir().unwrap();
        let mut other = Command::new("sleep")
            .arg("60")
            .current_dir(elsewhere.path())
            .spawn()
            .unwrap();
        std::fs::write(
            dir.path().join("postmaster.pid"),
            format!("{}\n{}\n", other.id(), dir.path().display()),
        )
        .unwrap();
        assert_eq!(postmaster(dir.path()), None, "another working directory");
        fence(0, dir.path(), DRAIN);
        std::fs::write(
            dir.path().join("postmaster.pid"),
            format!("{}\n{}\n", other.id(), elsewhere.path().display()),
        )
        .unwrap();
        fence(0, dir.path(), DRAIN);
        assert_eq!(other.try_wait().unwrap(), None, "still running");
        other.kill().unwrap();
        other.wait().unwrap();
    }
}
