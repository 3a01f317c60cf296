//! One hook process: spawned in a process group of its own so that it can be killed with every
//! child it started (Patroni's `CancellableExecutor` suspends the process, lists its children
//! and kills them one by one; a process group does that in one signal), and always reaped.

use std::io;
use std::process::{ExitStatus, Stdio};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

/// A running hook. Dropping it while the process runs kills its process group; tokio reaps a
/// dropped child in the background, so no zombie is left either way.
pub(crate) struct Script {
    child: Child,
    /// The process group: the child's PID (`process_group(0)`).
    pgid: Pid,
    /// The child was reaped (its group may still have members).
    reaped: bool,
}

impl Script {
    /// Starts `argv` (non-empty) with the agent's environment, working directory, stdout and
    /// stderr (as Patroni starts its hooks), no stdin, in a new process group.
    pub(crate) fn spawn(argv: &[String]) -> io::Result<Script> {
        let Some((program, args)) = argv.split_first() else {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "empty command"));
        };
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .process_group(0)
            .spawn()?;
        let Some(pid) = child.id() else {
            // Only a reaped child has no id, and this one was just spawned.
            return Err(io::Error::other(
                "the hook exited before it could be watched",
            ));
        };
        let pgid = Pid::from_raw(i32::try_from(pid).map_err(io::Error::other)?);
        Ok(Script {
            child,
            pgid,
            reaped: false,
        })
    }

    pub(crate) fn pgid(&self) -> Pid {
        self.pgid
    }

    /// Waits for the process to exit and reaps it.
    pub(crate) async fn wait(&mut self) -> io::Result<ExitStatus> {
        let status = self.child.wait().await;
        self.reaped = status.is_ok();
        status
    }

    /// Kills the whole process group (SIGKILL) and reaps the process.
    pub(crate) async fn kill(&mut self) {
        kill_group(self.pgid);
        if let Err(e) = self.child.wait().await {
            tracing::warn!("could not reap a killed hook: {e}");
        }
        self.reaped = true;
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        if !self.reaped {
            kill_group(self.pgid);
        }
    }
}

/// SIGKILL to a process group; returns whether a process was there to receive it.
pub(crate) fn kill_group(pgid: Pid) -> bool {
    killpg(pgid, Signal::SIGKILL).is_ok()
}

/// An exit status as Python's `returncode`: the exit code, or minus the signal number.
pub(crate) fn returncode(status: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    status
        .code()
        .or_else(|| status.signal().map(|s| -s))
        .unwrap_or(-1)
}

/// A command line as Python prints a list of strings (`['/bin/cb', 'on_start']`), so that the
/// log lines read as Patroni's.
pub(crate) fn py_list(argv: &[String]) -> String {
    let items: Vec<String> = argv
        .iter()
        .map(|a| format!("'{}'", a.replace('\\', "\\\\").replace('\'', "\\'")))
        .collect();
    format!("[{}]", items.join(", "))
}
