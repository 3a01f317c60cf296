//! [`Postgres`]: the handle on the local instance.

use std::time::Duration;

use crate::{
    ControlData, DataDirState, DesiredConfig, Lsn, PgSettings, PgState, Result, StopMode,
    Upstream,
};

/// The local PostgreSQL instance. Cheap to share behind an `Arc`; keeps one monitoring
/// connection open between cycles and reconnects when it breaks.
pub struct Postgres {
    settings: PgSettings,
}

impl Postgres {
    pub fn new(settings: PgSettings) -> Self {
        Postgres { settings }
    }

    pub fn settings(&self) -> &PgSettings {
        &self.settings
    }

    /// What the data directory holds (no process started).
    pub fn data_dir_state(&self) -> DataDirState {
        unimplemented!()
    }

    /// PID of a live postmaster owning our data directory (postmaster.pid + signal 0), if any.
    pub fn postmaster_pid(&self) -> Option<i32> {
        unimplemented!()
    }

    /// `pg_controldata` of the data directory.
    pub async fn controldata(&self) -> Result<ControlData> {
        unimplemented!()
    }

    /// Runs `initdb` with the `bootstrap.initdb` options (already rendered as `--opt[=value]`),
    /// adding `--pgdata`, `--username=<superuser>` and `--pwfile` when a password is set.
    /// Moves the generated postgresql.conf to postgresql.base.conf.
    pub async fn initdb(&self, options: &[String]) -> Result<()> {
        let _ = options;
        unimplemented!()
    }

    /// Renders and writes postgresql.conf, pg_hba.conf and the standby files. Returns true if any
    /// file changed on disk.
    pub async fn write_config(&self, desired: &DesiredConfig) -> Result<bool> {
        let _ = desired;
        unimplemented!()
    }

    /// Starts the postmaster and waits until it accepts connections, at most `timeout`.
    pub async fn start(&self, timeout: Duration) -> Result<()> {
        let _ = timeout;
        unimplemented!()
    }

    /// `pg_ctl stop -m <mode>`, waiting at most `timeout`. Succeeds if it was not running.
    pub async fn stop(&self, mode: StopMode, timeout: Duration) -> Result<()> {
        let _ = (mode, timeout);
        unimplemented!()
    }

    /// `pg_ctl promote -w`.
    pub async fn promote(&self, timeout: Duration) -> Result<()> {
        let _ = timeout;
        unimplemented!()
    }

    /// `pg_ctl reload`.
    pub async fn reload(&self) -> Result<()> {
        unimplemented!()
    }

    /// The monitoring query (one round trip).
    pub async fn query_state(&self) -> Result<PgState> {
        unimplemented!()
    }

    /// Creates or updates the superuser (password), replication and rewind roles.
    pub async fn create_roles(&self) -> Result<()> {
        unimplemented!()
    }

    /// Runs `bootstrap.post_bootstrap` with the superuser DSN as its one argument.
    pub async fn run_post_bootstrap(&self, command: &str) -> Result<()> {
        let _ = command;
        unimplemented!()
    }

    /// Clones the data directory from `from` with pg_basebackup (`-X stream`), two attempts.
    pub async fn basebackup(&self, from: &Upstream, extra_args: &[String]) -> Result<()> {
        let _ = (from, extra_args);
        unimplemented!()
    }

    /// Runs pg_rewind against `from` (target must be stopped cleanly).
    pub async fn rewind(&self, from: &Upstream) -> Result<()> {
        let _ = from;
        unimplemented!()
    }

    /// Makes the physical replication slots equal to `wanted` (creates missing, drops other
    /// inactive physical slots).
    pub async fn sync_slots(&self, wanted: &[String]) -> Result<()> {
        let _ = wanted;
        unimplemented!()
    }

    /// `CHECKPOINT`.
    pub async fn checkpoint(&self) -> Result<()> {
        unimplemented!()
    }

    /// Lines of `pg_wal/<timeline>.history`: (parent timeline, switch LSN, reason).
    pub async fn timeline_history(&self, timeline: u32) -> Result<Vec<(u32, Lsn, String)>> {
        let _ = timeline;
        unimplemented!()
    }

    /// Removes the data directory (only on an explicit, logged condition: see DESIGN.md).
    pub async fn remove_data_dir(&self) -> Result<()> {
        unimplemented!()
    }
}
