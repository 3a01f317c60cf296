//! The real [`GuardLink`]: the guard process, started from the agent's own executable with the
//! write end of a pipe as its stdin.

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::{Duration, Instant};

use nix::fcntl::{fcntl, FcntlArg, OFlag};
use tracing::{info, warn};

use super::{boot_time, GuardError, GuardLink, Message};

/// How long a clean shutdown waits for a disarmed guard to exit before killing it.
const EXIT_WAIT: Duration = Duration::from_secs(2);

/// The guard process and the pipe to it.
pub struct ProcessLink {
    program: PathBuf,
    args: Vec<OsString>,
    /// The first line every guard started by this link reads (see [`Self::with_preamble`]).
    preamble: Option<String>,
    child: Child,
    stdin: ChildStdin,
}

impl ProcessLink {
    /// Starts `program args...` (the agent's executable with the guard's arguments) with stdin a
    /// pipe from us and the agent's stdout and stderr (its log).
    pub fn spawn(program: &Path, args: Vec<OsString>) -> Result<ProcessLink, GuardError> {
        let (child, stdin) = start(program, &args)?;
        Ok(ProcessLink {
            program: program.to_path_buf(),
            args,
            preamble: None,
            child,
            stdin,
        })
    }

    /// Sends `line` (one line, no newline) to the guard now and first thing to every guard this
    /// link starts again: settings the guard needs before any message, kept out of its command
    /// line because they may hold secrets (`ps` shows arguments to every user).
    pub fn with_preamble(mut self, line: String) -> Result<ProcessLink, GuardError> {
        write_line(&mut self.stdin, &line)?;
        self.preamble = Some(line);
        Ok(self)
    }

    /// The guard's PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A guard that exited (killed by someone, crashed) is started again, disarmed; the message
    /// being sent arms it.
    fn respawn_if_gone(&mut self) -> Result<(), GuardError> {
        let Ok(Some(status)) = self.child.try_wait() else {
            return Ok(());
        };
        warn!(
            "the guard process {} exited ({status}); starting it again",
            self.child.id()
        );
        let (child, mut stdin) = start(&self.program, &self.args)?;
        if let Some(line) = &self.preamble {
            write_line(&mut stdin, line)?;
        }
        self.child = child;
        self.stdin = stdin;
        Ok(())
    }
}

/// Writes `line` and a newline in one write (the pipe is empty: a new guard has read nothing
/// yet, and a pipe holds 64 KiB).
fn write_line(stdin: &mut ChildStdin, line: &str) -> Result<(), GuardError> {
    stdin
        .write_all(format!("{line}\n").as_bytes())
        .map_err(GuardError::Write)
}

/// Spawns the guard in a session (and process group) of its own: SIGSTOP, SIGKILL or SIGINT sent
/// to the agent's process group, or a hangup of its terminal, do not reach it. The pipe's write
/// end is non-blocking: a guard that stops reading fails the write instead of hanging the cycle.
fn start(program: &Path, args: &[OsString]) -> Result<(Child, ChildStdin), GuardError> {
    use std::os::unix::process::CommandExt;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit());
    // SAFETY: setsid(2) is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()
                .map(drop)
                .map_err(std::io::Error::from)
        });
    }
    let mut child = cmd.spawn().map_err(GuardError::Spawn)?;
    let Some(stdin) = child.stdin.take() else {
        // `Stdio::piped()` always gives a stdin; stop the child rather than leave it orphaned.
        let _ = child.kill();
        let _ = child.wait();
        return Err(GuardError::Spawn(std::io::Error::other(
            "no pipe to the guard",
        )));
    };
    let set = fcntl(&stdin, FcntlArg::F_GETFL)
        .map(OFlag::from_bits_truncate)
        .and_then(|fl| fcntl(&stdin, FcntlArg::F_SETFL(fl | OFlag::O_NONBLOCK)));
    if let Err(e) = set {
        let _ = child.kill();
        let _ = child.wait();
        return Err(GuardError::Spawn(e.into()));
    }
    info!("started the guard process {}", child.id());
    Ok((child, stdin))
}

impl GuardLink for ProcessLink {
    fn clock(&self) -> Option<Duration> {
        boot_time()
    }

    fn send(&mut self, msg: Message) -> Result<(), GuardError> {
        self.respawn_if_gone()?;
        // One line is far below PIPE_BUF: written whole or not at all.
        self.stdin
            .write_all(msg.encode().as_bytes())
            .map_err(GuardError::Write)
    }

    fn close(self: Box<Self>, disarmed: bool) {
        let ProcessLink {
            mut child, stdin, ..
        } = *self;
        drop(stdin);
        if !disarmed {
            return;
        }
        let started = Instant::now();
        loop {
            match child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) if started.elapsed() < EXIT_WAIT => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                // Disarmed: nothing is lost by killing it.
                _ => {
                    warn!("the guard process {} did not exit; killing it", child.id());
                    let _ = child.kill();
                    let _ = child.wait();
                    return;
                }
            }
        }
    }
}
