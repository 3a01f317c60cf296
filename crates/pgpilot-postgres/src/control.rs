//! [`PgControl`]: what the HA agent asks of its PostgreSQL, as a trait, so that the agent can be
//! driven over a simulated PostgreSQL as it is over the DCS ([`Postgres`] is the real one).

use std::future::Future;
use std::time::Duration;

use crate::{
    ControlData, CustomBootstrap, DataDirState, DesiredConfig, LogicalSlotState, Lsn, PgSettings,
    PgState, Postgres, ReplicaMethod, Result, SlotChange, SlotInfo, StopMode, Upstream,
};

/// The operations the agent performs on its PostgreSQL. Each has the meaning (and the
/// timeouts) of the [`Postgres`] method of the same name.
pub trait PgControl: Send + Sync + 'static {
    fn settings(&self) -> &PgSettings;
    fn data_dir_state(&self) -> DataDirState;
    fn postmaster_pid(&self) -> Option<i32>;
    fn controldata(&self) -> impl Future<Output = Result<ControlData>> + Send;
    fn initdb(&self, options: &[String]) -> impl Future<Output = Result<()>> + Send;
    fn write_config(&self, desired: &DesiredConfig) -> impl Future<Output = Result<bool>> + Send;
    fn start(&self, timeout: Duration) -> impl Future<Output = Result<()>> + Send;
    fn stop(&self, mode: StopMode, timeout: Duration) -> impl Future<Output = Result<()>> + Send;
    fn kill_postmaster(&self, timeout: Duration) -> impl Future<Output = Result<()>> + Send;
    fn promote(&self, timeout: Duration) -> impl Future<Output = Result<()>> + Send;
    fn reload(&self) -> impl Future<Output = Result<()>> + Send;
    fn remote_wal_position(&self, at: &Upstream) -> impl Future<Output = Result<u64>> + Send;
    fn remote_is_primary(&self, at: &Upstream) -> impl Future<Output = Result<bool>> + Send;
    fn prepare_rewind_source(&self, from: &Upstream) -> impl Future<Output = Result<()>> + Send;
    fn query_state(&self) -> impl Future<Output = Result<PgState>> + Send;
    fn create_roles(&self) -> impl Future<Output = Result<()>> + Send;
    fn run_post_bootstrap(&self, command: &str) -> impl Future<Output = Result<()>> + Send;
    fn custom_bootstrap(&self, b: &CustomBootstrap) -> impl Future<Output = Result<()>> + Send;
    fn start_no_wait(&self) -> impl Future<Output = Result<()>> + Send;
    fn wait_for_end_of_recovery(&self) -> impl Future<Output = Result<()>> + Send;
    fn create_replica(
        &self,
        methods: &[ReplicaMethod],
        from: Option<&Upstream>,
        basebackup: &[String],
    ) -> impl Future<Output = Result<String>> + Send;
    fn rewind(&self, from: &Upstream) -> impl Future<Output = Result<()>> + Send;
    fn list_slots(&self) -> impl Future<Output = Result<Vec<SlotInfo>>> + Send;
    fn change_slot(&self, change: &SlotChange) -> impl Future<Output = Result<()>> + Send;
    fn read_logical_slots(
        &self,
        from: &Upstream,
        names: &[String],
    ) -> impl Future<Output = Result<Vec<LogicalSlotState>>> + Send;
    fn install_logical_slots(&self, slots: &[LogicalSlotState]) -> Result<()>;
    fn checkpoint(&self) -> impl Future<Output = Result<()>> + Send;
    fn timeline_history(
        &self,
        timeline: u32,
    ) -> impl Future<Output = Result<Vec<(u32, Lsn, String)>>> + Send;
    fn remove_data_dir(&self) -> impl Future<Output = Result<()>> + Send;
    /// Whether the data directory holds `standby.signal` (read by the agent, never written but
    /// through [`write_config`](Self::write_config)).
    fn standby_signal(&self) -> bool;
    /// After a failed bootstrap: the data directory is moved aside as `<data_dir>.failed` for
    /// inspection (problems are logged).
    fn move_aside_failed(&self);
    fn archive_shutdown_checkpoint(
        &self,
        archive_command: &str,
    ) -> impl Future<Output = Result<String>> + Send;
}

impl PgControl for Postgres {
    fn settings(&self) -> &PgSettings {
        Postgres::settings(self)
    }
    fn data_dir_state(&self) -> DataDirState {
        Postgres::data_dir_state(self)
    }
    fn postmaster_pid(&self) -> Option<i32> {
        Postgres::postmaster_pid(self)
    }
    fn controldata(&self) -> impl Future<Output = Result<ControlData>> + Send {
        Postgres::controldata(self)
    }
    fn initdb(&self, options: &[String]) -> impl Future<Output = Result<()>> + Send {
        Postgres::initdb(self, options)
    }
    fn write_config(&self, desired: &DesiredConfig) -> impl Future<Output = Result<bool>> + Send {
        Postgres::write_config(self, desired)
    }
    fn start(&self, timeout: Duration) -> impl Future<Output = Result<()>> + Send {
        Postgres::start(self, timeout)
    }
    fn stop(&self, mode: StopMode, timeout: Duration) -> impl Future<Output = Result<()>> + Send {
        Postgres::stop(self, mode, timeout)
    }
    fn kill_postmaster(&self, timeout: Duration) -> impl Future<Output = Result<()>> + Send {
        Postgres::kill_postmaster(self, timeout)
    }
    fn promote(&self, timeout: Duration) -> impl Future<Output = Result<()>> + Send {
        Postgres::promote(self, timeout)
    }
    fn reload(&self) -> impl Future<Output = Result<()>> + Send {
        Postgres::reload(self)
    }
    fn remote_wal_position(&self, at: &Upstream) -> impl Future<Output = Result<u64>> + Send {
        Postgres::remote_wal_position(self, at)
    }
    fn remote_is_primary(&self, at: &Upstream) -> impl Future<Output = Result<bool>> + Send {
        Postgres::remote_is_primary(self, at)
    }
    fn prepare_rewind_source(&self, from: &Upstream) -> impl Future<Output = Result<()>> + Send {
        Postgres::prepare_rewind_source(self, from)
    }
    fn query_state(&self) -> impl Future<Output = Result<PgState>> + Send {
        Postgres::query_state(self)
    }
    fn create_roles(&self) -> impl Future<Output = Result<()>> + Send {
        Postgres::create_roles(self)
    }
    fn run_post_bootstrap(&self, command: &str) -> impl Future<Output = Result<()>> + Send {
        Postgres::run_post_bootstrap(self, command)
    }
    fn custom_bootstrap(&self, b: &CustomBootstrap) -> impl Future<Output = Result<()>> + Send {
        Postgres::custom_bootstrap(self, b)
    }
    fn start_no_wait(&self) -> impl Future<Output = Result<()>> + Send {
        Postgres::start_no_wait(self)
    }
    fn wait_for_end_of_recovery(&self) -> impl Future<Output = Result<()>> + Send {
        Postgres::wait_for_end_of_recovery(self)
    }
    fn create_replica(
        &self,
        methods: &[ReplicaMethod],
        from: Option<&Upstream>,
        basebackup: &[String],
    ) -> impl Future<Output = Result<String>> + Send {
        Postgres::create_replica(self, methods, from, basebackup)
    }
    fn rewind(&self, from: &Upstream) -> impl Future<Output = Result<()>> + Send {
        Postgres::rewind(self, from)
    }
    fn list_slots(&self) -> impl Future<Output = Result<Vec<SlotInfo>>> + Send {
        Postgres::list_slots(self)
    }
    fn change_slot(&self, change: &SlotChange) -> impl Future<Output = Result<()>> + Send {
        Postgres::change_slot(self, change)
    }
    fn read_logical_slots(
        &self,
        from: &Upstream,
        names: &[String],
    ) -> impl Future<Output = Result<Vec<LogicalSlotState>>> + Send {
        Postgres::read_logical_slots(self, from, names)
    }
    fn install_logical_slots(&self, slots: &[LogicalSlotState]) -> Result<()> {
        Postgres::install_logical_slots(self, slots)
    }
    fn checkpoint(&self) -> impl Future<Output = Result<()>> + Send {
        Postgres::checkpoint(self)
    }
    fn timeline_history(
        &self,
        timeline: u32,
    ) -> impl Future<Output = Result<Vec<(u32, Lsn, String)>>> + Send {
        Postgres::timeline_history(self, timeline)
    }
    fn remove_data_dir(&self) -> impl Future<Output = Result<()>> + Send {
        Postgres::remove_data_dir(self)
    }
    fn archive_shutdown_checkpoint(
        &self,
        archive_command: &str,
    ) -> impl Future<Output = Result<String>> + Send {
        Postgres::archive_shutdown_checkpoint(self, archive_command)
    }
    fn standby_signal(&self) -> bool {
        self.settings().data_dir.join("standby.signal").exists()
    }
    fn move_aside_failed(&self) {
        Postgres::move_aside_failed(self)
    }
}
