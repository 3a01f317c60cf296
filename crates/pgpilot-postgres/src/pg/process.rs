//! Process control: the postmaster's PID, pg_ctl start, stop, promote and reload, killing a
//! postmaster, and archiving the shutdown checkpoint's WAL file of a demoted cluster.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::process::Command;
use tracing::{debug, info};

use super::Postgres;
use crate::{PgError, Result, StopMode};

/// How often a stop, a promotion or a kill of the postmaster looks whether it is done.
const POLL_PROCESS: Duration = Duration::from_millis(10);

/// PID of a live postmaster owning `data_dir`: the first line of `postmaster.pid`, whose second
/// line names this data directory, and a process with that PID exists (signal 0). Blocking file
/// reads only, so the guard process (no runtime) uses it too.
pub fn live_postmaster_pid(data_dir: &Path) -> Option<i32> {
    let text = std::fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    let mut lines = text.lines();
    let pid: i32 = lines.next()?.trim().parse().ok()?;
    let dir = lines.next()?.trim();
    // PostgreSQL writes the absolute path it was started with, normally the one we use: compare
    // the resolved paths only when the texts differ.
    let ours = Path::new(dir) == data_dir
        || std::fs::canonicalize(dir).ok() == std::fs::canonicalize(data_dir).ok();
    if !ours || pid <= 0 {
        return None;
    }
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
        .is_ok()
        .then_some(pid)
}

impl Postgres {
    /// PID of a live postmaster owning our data directory (postmaster.pid + signal 0), if any.
    pub fn postmaster_pid(&self) -> Option<i32> {
        let pid = live_postmaster_pid(self.data())?;
        self.last_pid
            .store(pid, std::sync::atomic::Ordering::Relaxed);
        Some(pid)
    }

    /// A postmaster we saw before that still runs although `postmaster.pid` is gone: its data
    /// directory was deleted under it. Recognised by its working directory, which is the
    /// (deleted) data directory.
    fn orphan_postmaster(&self) -> Option<i32> {
        let pid = self.last_pid.load(std::sync::atomic::Ordering::Relaxed);
        if pid <= 0 {
            return None;
        }
        let cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).ok()?;
        let cwd = cwd.to_string_lossy();
        let dir = self.data().to_string_lossy().into_owned();
        (cwd == dir || cwd == format!("{dir} (deleted)")).then_some(pid)
    }

    /// Stops an orphan postmaster (SIGQUIT, then SIGKILL) and waits until it is gone.
    async fn stop_orphan(&self, pid: i32, timeout: Duration) -> Result<()> {
        use nix::sys::signal::{kill, Signal};
        let target = nix::unistd::Pid::from_raw(pid);
        info!("stopping postmaster {pid} whose data directory was removed");
        let _ = kill(target, Signal::SIGQUIT);
        let deadline = tokio::time::Instant::now() + timeout;
        while kill(target, None).is_ok() {
            if tokio::time::Instant::now() > deadline {
                let _ = kill(target, Signal::SIGKILL);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            if tokio::time::Instant::now() > deadline + Duration::from_secs(5) {
                return Err(PgError::Timeout(
                    timeout,
                    "stopping an orphan postmaster".into(),
                ));
            }
        }
        self.last_pid.store(0, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// Where the server log goes: a sibling of the data directory, so pg_basebackup never
    /// copies it.
    fn log_file(&self) -> PathBuf {
        let mut p = self.data().as_os_str().to_owned();
        p.push(".log");
        PathBuf::from(p)
    }

    fn pg_ctl(&self, action: &str) -> Command {
        let mut cmd = Command::new(self.bin("pg_ctl"));
        cmd.arg(action).arg("-D").arg(self.data());
        cmd
    }

    /// Starts the postmaster and waits until it accepts connections, at most `timeout`.
    pub async fn start(&self, timeout: Duration) -> Result<()> {
        if self.postmaster_pid().is_some() {
            return Ok(());
        }
        self.check_versions().await?;
        let mut cmd = self.pg_ctl("start");
        cmd.arg("-w")
            .arg("-t")
            .arg(timeout.as_secs().max(1).to_string())
            .arg("-l")
            .arg(self.log_file());
        if self.settings.config_dir != self.settings.data_dir {
            cmd.arg("-o").arg(format!(
                "--config-file={}",
                self.settings.config_dir.join("postgresql.conf").display()
            ));
        }
        *self.conn.lock().await = None;
        self.run(cmd, "pg_ctl start", timeout + Duration::from_secs(5))
            .await?;
        info!("postgres started");
        Ok(())
    }

    /// Stops PostgreSQL in `mode` (the signal `pg_ctl stop -m <mode>` sends), waiting at most
    /// `timeout` for the postmaster to be gone. Succeeds if it was not running.
    pub async fn stop(&self, mode: StopMode, timeout: Duration) -> Result<()> {
        *self.conn.lock().await = None;
        let Some(pid) = self.postmaster_pid() else {
            if let Some(pid) = self.orphan_postmaster() {
                return self.stop_orphan(pid, timeout).await;
            }
            return Ok(());
        };
        // The signal pg_ctl stop sends, sent here: `pg_ctl stop -w` then looks for the end
        // only every 100 ms, which a switchover's write gap paid in full (PostgreSQL 15-17).
        use nix::sys::signal::{kill, Signal};
        let signal = match mode {
            StopMode::Smart => Signal::SIGTERM,
            StopMode::Fast => Signal::SIGINT,
            StopMode::Immediate => Signal::SIGQUIT,
        };
        if let Err(e) = kill(nix::unistd::Pid::from_raw(pid), signal) {
            if self.postmaster_pid().is_none() {
                return Ok(());
            }
            return Err(PgError::Command {
                command: format!("kill -{} {pid}", signal.as_str()),
                detail: e.to_string(),
            });
        }
        debug!("sent {} to postmaster {pid}", signal.as_str());
        self.wait_until_gone(timeout, "stopping PostgreSQL").await
    }

    /// Waits until the postmaster is gone (its pid file removed, or its process dead), looking
    /// every 10 ms, at most `timeout`.
    async fn wait_until_gone(&self, timeout: Duration, what: &str) -> Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        while self.postmaster_pid().is_some() {
            if tokio::time::Instant::now() > deadline {
                return Err(PgError::Timeout(timeout, what.into()));
            }
            tokio::time::sleep(POLL_PROCESS).await;
        }
        Ok(())
    }

    /// SIGKILL to the postmaster and its process group (pg_ctl starts it as a session leader,
    /// so the group holds every backend), then waits at most `timeout` until it is gone. The
    /// last resort of a stop that took longer than `primary_stop_timeout`.
    pub async fn kill_postmaster(&self, timeout: Duration) -> Result<()> {
        use nix::sys::signal::{kill, killpg, Signal};
        let Some(pid) = self.postmaster_pid() else {
            return Ok(());
        };
        *self.conn.lock().await = None;
        let target = nix::unistd::Pid::from_raw(pid);
        if killpg(target, Signal::SIGKILL).is_err() {
            // Not a group leader (started by other means): the postmaster alone; its backends
            // exit when they notice it is gone.
            let _ = kill(target, Signal::SIGKILL);
        }
        self.wait_until_gone(timeout, "killing the postmaster")
            .await
    }

    /// `pg_ctl promote -W`, then waits (at most `timeout`) until PostgreSQL is out of recovery,
    /// asking it every 10 ms: `pg_ctl promote -w` looks at the control file only every 100 ms.
    /// `pg_is_in_recovery()` turns false after the control file says "in production", when the
    /// server accepts writes.
    pub async fn promote(&self, timeout: Duration) -> Result<()> {
        let mut cmd = self.pg_ctl("promote");
        cmd.arg("-W");
        self.run(cmd, "pg_ctl promote", timeout + Duration::from_secs(5))
            .await?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.postmaster_pid().is_none() {
                return Err(PgError::Invalid(
                    "PostgreSQL stopped during the promotion".into(),
                ));
            }
            match self
                .prepared_query("SELECT pg_catalog.pg_is_in_recovery()")
                .await
            {
                Ok(rows) if rows.first().is_some_and(|r| !r.get::<_, bool>(0)) => return Ok(()),
                Ok(_) => {}
                Err(e) => debug!("waiting for the promotion: {e}"),
            }
            if tokio::time::Instant::now() > deadline {
                return Err(PgError::Timeout(timeout, "pg_ctl promote".into()));
            }
            tokio::time::sleep(POLL_PROCESS).await;
        }
    }

    /// `pg_ctl reload`.
    pub async fn reload(&self) -> Result<()> {
        self.run(
            self.pg_ctl("reload"),
            "pg_ctl reload",
            Duration::from_secs(30),
        )
        .await?;
        Ok(())
    }

    /// Patroni's `archive_shutdown_checkpoint_wal`, for `demote-cluster` with archiving on: a
    /// fast shutdown leaves its shutdown checkpoint in a WAL file that is not complete, so the
    /// archiver never sends it, and a standby cluster restoring from the archive would miss
    /// it. `archive_command` runs for the file of the latest checkpoint's REDO (of a stopped
    /// server: the shutdown checkpoint), in the data directory, with `%p`, `%f`, `%r`
    /// replaced as Patroni does (`%p` relative, as PostgreSQL's archiver gives it). Returns the
    /// file's name.
    pub async fn archive_shutdown_checkpoint(&self, archive_command: &str) -> Result<String> {
        let control = self.controldata().await?;
        let file = control
            .raw
            .get("Latest checkpoint's REDO WAL file")
            .filter(|f| !f.is_empty())
            .cloned()
            .ok_or_else(|| PgError::Command {
                command: "pg_controldata".into(),
                detail: "Cannot extract latest checkpoint's WAL file name".into(),
            })?;
        // Relative to the data directory the command runs in, as PostgreSQL's archiver passes
        // `%p` (and right for a relative `data_dir` too).
        let path = format!("pg_wal/{file}");
        let line = archiver_command(archive_command, &path, &file);
        info!("archiving {file}, the WAL file of the shutdown checkpoint: {line}");
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(&line).current_dir(self.data());
        self.run(cmd, "archive_command", Duration::from_secs(3600))
            .await?;
        Ok(file)
    }

    /// `pg_ctl start` without waiting: a restored cluster recovering with hot_standby off does
    /// not accept connections until its recovery ends, which may take hours.
    pub async fn start_no_wait(&self) -> Result<()> {
        if self.postmaster_pid().is_some() {
            return Ok(());
        }
        let mut cmd = self.pg_ctl("start");
        cmd.arg("-W").arg("-l").arg(self.log_file());
        if self.settings.config_dir != self.settings.data_dir {
            cmd.arg("-o").arg(format!(
                "--config-file={}",
                self.settings.config_dir.join("postgresql.conf").display()
            ));
        }
        *self.conn.lock().await = None;
        self.run(cmd, "pg_ctl start", self.settings.pg_ctl_timeout)
            .await?;
        Ok(())
    }

    /// Waits until PostgreSQL runs out of recovery (Patroni's "waiting for end of recovery
    /// after bootstrap"), as long as it takes; fails as soon as the postmaster is gone (a
    /// recovery target with `shutdown`, a missing WAL file, a crash).
    pub async fn wait_for_end_of_recovery(&self) -> Result<()> {
        let mut missing = 0;
        loop {
            if self.postmaster_pid().is_none() {
                missing += 1;
                // pg_ctl start -W returns before the postmaster writes its pid file.
                if missing >= 5 {
                    return Err(PgError::Invalid(
                        "PostgreSQL stopped before the end of recovery after bootstrap".into(),
                    ));
                }
            } else {
                missing = 0;
                if let Ok(st) = self.query_state().await {
                    if !st.in_recovery {
                        return Ok(());
                    }
                }
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// `command` (an `archive_command`) for the WAL file `file` at `path`, as Patroni builds it
/// (`_build_archiver_command`): `%p` the path, `%f` the file name, `%r` the first segment
/// name, `%%` a percent sign; any other `%x` stays as it is.
fn archiver_command(command: &str, path: &str, file: &str) -> String {
    let mut out = String::with_capacity(command.len() + path.len());
    let mut chars = command.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('p') => out.push_str(path),
            Some('f') => out.push_str(file),
            Some('r') => out.push_str("000000010000000000000001"),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archiver_placeholders_as_patroni_replaces_them() {
        assert_eq!(
            archiver_command(
                "cp %p /archive/%f && echo %r 100%% %x%",
                "/d/pg_wal/F1",
                "F1"
            ),
            "cp /d/pg_wal/F1 /archive/F1 && echo 000000010000000000000001 100% %x%"
        );
    }
}
