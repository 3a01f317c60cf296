//! [`Postgres`]: the handle on the local instance.
//!
//! This file holds the handle itself: its settings, the binaries it runs, the major version
//! every version-dependent choice follows and what the data directory holds. Its other methods
//! are grouped by responsibility: `process.rs` (pg_ctl start, stop, promote, reload and the
//! postmaster), `sql.rs` (the monitoring connection and the queries), `slots.rs` (replication
//! slots), `config.rs` (the configuration files), `bootstrap.rs` (initdb, custom bootstrap) and
//! `replica.rs` (replica creation, pg_basebackup, pg_rewind, removing the data directory).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;
use tokio::sync::Mutex;
use tracing::{debug, warn};

use crate::{ControlData, DataDirState, Lsn, PgError, PgMajor, PgSettings, Result};

mod bootstrap;
mod config;
mod process;
mod replica;
mod slots;
mod sql;

pub use process::live_postmaster_pid;
pub(crate) use sql::describe;
use sql::Monitor;
pub use sql::{quote_ident, quote_literal};

/// Deadline for one monitoring query or connection attempt.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);

/// The local PostgreSQL instance. Cheap to share behind an `Arc`; keeps one monitoring
/// connection open between cycles and reconnects when it breaks.
pub struct Postgres {
    settings: PgSettings,
    /// The monitoring connection (None until first use or after an error).
    conn: Mutex<Option<Monitor>>,
    /// The last postmaster PID read from `postmaster.pid`: finds a postmaster whose data
    /// directory was deleted under it (see [`Postgres::stop`]).
    last_pid: std::sync::atomic::AtomicI32,
    /// The major version the version-dependent behaviour follows (0 until known): the running
    /// server's `server_version_num`, else `postgres --version` of `bin_dir` (see
    /// [`Postgres::major`]).
    major: std::sync::atomic::AtomicU32,
    /// The configuration last written sets a `restore_command` (pg_rewind may fetch WAL).
    restore_command: std::sync::atomic::AtomicBool,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PgError + '_ {
    move |source| PgError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl Postgres {
    pub fn new(settings: PgSettings) -> Self {
        Postgres {
            settings,
            conn: Mutex::new(None),
            last_pid: std::sync::atomic::AtomicI32::new(0),
            major: std::sync::atomic::AtomicU32::new(0),
            restore_command: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub fn settings(&self) -> &PgSettings {
        &self.settings
    }

    fn bin(&self, name: &str) -> PathBuf {
        if self.settings.bin_dir.as_os_str().is_empty() {
            PathBuf::from(name)
        } else {
            self.settings.bin_dir.join(name)
        }
    }

    fn data(&self) -> &Path {
        &self.settings.data_dir
    }

    /// Runs a binary with a deadline; stdout on success, an error with stderr otherwise.
    async fn run(&self, mut cmd: Command, what: &str, timeout: Duration) -> Result<String> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .env("LANG", "C")
            .env("LC_ALL", "C")
            .env("PGPASSFILE", &self.settings.pgpass)
            .kill_on_drop(true);
        debug!("running {what}");
        let child = cmd.spawn().map_err(|e| PgError::Command {
            command: what.to_string(),
            detail: e.to_string(),
        })?;
        let out = match tokio::time::timeout(timeout, child.wait_with_output()).await {
            Ok(r) => r.map_err(|e| PgError::Command {
                command: what.to_string(),
                detail: e.to_string(),
            })?,
            Err(_) => return Err(PgError::Timeout(timeout, what.to_string())),
        };
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() {
            return Ok(stdout);
        }
        let stderr = String::from_utf8_lossy(&out.stderr);
        Err(PgError::Command {
            command: what.to_string(),
            detail: format!("{} {}", out.status, format!("{stderr}{stdout}").trim()),
        })
    }

    /// The major version every version-dependent choice follows: the running server's once the
    /// monitoring query has seen it, else the one of `bin_dir`'s `postgres --version`, else
    /// [`PgMajor::NEWEST`] (with a warning) when the binary can not be asked.
    pub async fn major(&self) -> PgMajor {
        use std::sync::atomic::Ordering;
        let known = self.major.load(Ordering::Relaxed);
        if known != 0 {
            return PgMajor(known);
        }
        match self.bin_major().await {
            Ok(m) => {
                self.major.store(m.0, Ordering::Relaxed);
                m
            }
            Err(e) => {
                warn!("{e}; assuming PostgreSQL {}", PgMajor::NEWEST);
                PgMajor::NEWEST
            }
        }
    }

    /// The major of `bin_dir`'s binaries (`postgres --version`).
    pub async fn bin_major(&self) -> Result<PgMajor> {
        let mut cmd = Command::new(self.bin("postgres"));
        cmd.arg("--version");
        let out = self
            .run(cmd, "postgres --version", Duration::from_secs(30))
            .await?;
        PgMajor::from_version_output(&out).ok_or_else(|| {
            PgError::Invalid(format!(
                "can not read the version of postgres --version: {out}"
            ))
        })
    }

    /// The major of the data directory (`PG_VERSION`), if it has one.
    pub fn data_dir_major(&self) -> Option<PgMajor> {
        std::fs::read_to_string(self.data().join("PG_VERSION"))
            .ok()
            .and_then(|t| PgMajor::from_pg_version_file(&t))
    }

    /// Refuses a data directory of another major than `bin_dir`'s binaries (PostgreSQL would
    /// refuse it too, with a message only its log shows), or older than pgpilot supports.
    /// When `postgres --version` can not be run (no `bin_dir`, and no `postgres` on PATH
    /// although pg_ctl is), there is nothing to compare: pg_ctl's own checks remain.
    pub async fn check_versions(&self) -> Result<()> {
        let bin = match self.bin_major().await {
            Ok(m) => m,
            Err(e) => {
                warn!("not checking the major version of the data directory: {e}");
                return Ok(());
            }
        };
        if bin < PgMajor::OLDEST {
            return Err(PgError::Invalid(format!(
                "{} holds PostgreSQL {bin}; pgpilot supports {} and newer",
                self.settings.bin_dir.display(),
                PgMajor::OLDEST
            )));
        }
        match self.data_dir_major() {
            Some(data) if data != bin => Err(PgError::Invalid(format!(
                "the data directory {} is of PostgreSQL {data} but bin_dir {} holds PostgreSQL \
                 {bin}: set postgresql.bin_dir to PostgreSQL {data}'s binaries, or upgrade \
                 the data directory (pg_upgrade)",
                self.data().display(),
                self.settings.bin_dir.display()
            ))),
            _ => Ok(()),
        }
    }

    /// What the data directory holds (no process started).
    pub fn data_dir_state(&self) -> DataDirState {
        let dir = self.data();
        // The usual answer first, from two stats (no directory listing every cycle).
        if dir.join("PG_VERSION").exists() && dir.join("global/pg_control").exists() {
            return DataDirState::Initialized;
        }
        match std::fs::read_dir(dir) {
            Err(_) => DataDirState::Empty,
            Ok(mut entries) => {
                if entries.next().is_none() {
                    DataDirState::Empty
                } else {
                    DataDirState::Invalid(format!(
                        "{} is not empty and holds no PostgreSQL cluster",
                        dir.display()
                    ))
                }
            }
        }
    }

    /// `pg_controldata` of the data directory.
    pub async fn controldata(&self) -> Result<ControlData> {
        let mut cmd = Command::new(self.bin("pg_controldata"));
        cmd.arg("-D").arg(self.data());
        let out = self
            .run(cmd, "pg_controldata", Duration::from_secs(30))
            .await?;
        Ok(crate::files::parse_controldata(&out))
    }

    /// Lines of `pg_wal/<timeline>.history`: (parent timeline, switch LSN, reason).
    pub async fn timeline_history(&self, timeline: u32) -> Result<Vec<(u32, Lsn, String)>> {
        let path = self.data().join(format!("pg_wal/{timeline:08X}.history"));
        let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
        Ok(crate::files::parse_history(&text))
    }
}
