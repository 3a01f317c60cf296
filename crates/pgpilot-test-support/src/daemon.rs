//! A program that runs beside the cluster for one test (HAProxy, pgBouncer): started in the
//! foreground with its output in a log file, stopped by its PID in `Drop` (SIGTERM, then
//! SIGKILL), which also runs while a failed test unwinds; then the tail of its log is printed.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use super::{clean_env, signal, spawn_child, tail};

/// How long `Drop` waits after SIGTERM before SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);

/// Whether `bin` can be run; the reason a test is skipped when not.
pub fn installed(bin: &Path, package: &str) -> Result<(), String> {
    if bin.is_file() {
        Ok(())
    } else {
        Err(format!(
            "{} is not installed (Debian package {package}); skipping",
            bin.display()
        ))
    }
}

pub(crate) struct Daemon {
    name: &'static str,
    child: Child,
    pub(crate) log: PathBuf,
}

impl Daemon {
    /// Starts `cmd` with a clean environment in `dir`, its stdout and stderr appended to `log`.
    pub(crate) fn start(name: &'static str, mut cmd: Command, dir: &Path, log: PathBuf) -> Daemon {
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap_or_else(|e| panic!("open {}: {e}", log.display()));
        clean_env(&mut cmd, dir);
        cmd.stdin(Stdio::null())
            .stdout(out.try_clone().expect("clone log handle"))
            .stderr(out);
        let child = spawn_child(cmd).unwrap_or_else(|e| panic!("can not start {name}: {e}"));
        Daemon { name, child, log }
    }

    /// Panics with the log if the program has exited.
    pub(crate) fn assert_running(&mut self) {
        if let Ok(Some(status)) = self.child.try_wait() {
            panic!(
                "{} exited ({status}); its log:\n{}",
                self.name,
                tail(&self.log, 40)
            );
        }
    }

    /// Waits until `ready` holds, checking that the program still runs; panics after 30 s.
    pub(crate) fn wait_ready(&mut self, what: &str, mut ready: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            self.assert_running();
            if ready() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} not ready after 30 s ({what}); its log:\n{}",
                self.name,
                tail(&self.log, 40)
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let pid = self.child.id() as i32;
        if matches!(self.child.try_wait(), Ok(None)) {
            signal(pid, Signal::SIGTERM);
            let deadline = Instant::now() + STOP_GRACE;
            while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            if matches!(self.child.try_wait(), Ok(None)) {
                signal(pid, Signal::SIGKILL);
            }
        }
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "---- {} log {} ----\n{}",
                self.name,
                self.log.display(),
                tail(&self.log, 60)
            );
        }
    }
}
