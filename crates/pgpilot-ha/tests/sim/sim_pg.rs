//! The simulated PostgreSQL as the real agent drives it ([`SimPg`], `PgControl`): start, stop,
//! promote, clone, rewind and queries over the member's [`super::pg::Pg`] in the world, each
//! taking simulated time; a frozen server does not answer, and a process that is gone never
//! returns (module docs of [`super::seams`]).

use std::sync::MutexGuard;
use std::time::Duration;

use pgpilot_ha::sync::Ssn;
use pgpilot_postgres::{
    ControlData, CustomBootstrap, DataDirState, DesiredConfig, LogicalSlotState, Lsn, PgControl,
    PgError, PgSettings, PgState, ReplicaMethod, SlotChange, SlotInfo, StopMode, Upstream,
    WalSender,
};

use super::pg::{Conf, Control, Data, Proc, Rec, LSN_UNIT};
use super::seams::{gone_unless_alive, lock, millis, process_runs, Net, Shared};
use super::trace;

fn err(what: &str) -> PgError {
    PgError::Invalid(what.to_string())
}

/// `synchronous_standby_names` as `Ssn::render` writes it: `name`, `N (a,b)`, `ANY N (a,b)`.
pub fn parse_ssn(text: &str) -> Ssn {
    let text = text.trim();
    if text.is_empty() {
        return Ssn::empty();
    }
    let text = text.strip_prefix("ANY ").unwrap_or(text);
    let unquote = |n: &str| n.trim().trim_matches('"').replace("\"\"", "\"");
    match text.split_once('(') {
        Some((n, rest)) => {
            let numsync = n.trim().parse().unwrap_or(1);
            let names = rest.trim_end_matches(')').split(',').map(unquote).collect();
            Ssn { numsync, names }
        }
        None => Ssn {
            numsync: 1,
            names: [unquote(text)].into_iter().collect(),
        },
    }
}

/// The simulated PostgreSQL of member `i`, as the agent process of generation `gen` sees it.
pub struct SimPg {
    net: Net,
    i: usize,
    gen: u64,
    settings: PgSettings,
}

impl SimPg {
    pub fn new(net: Net, i: usize, gen: u64, settings: PgSettings) -> SimPg {
        SimPg {
            net,
            i,
            gen,
            settings,
        }
    }

    /// Waits `d` of virtual time as the process of `gen`; never returns if it is gone by then.
    async fn work(&self, d: Duration) {
        process_runs(&self.net, self.i, self.gen).await;
        tokio::time::sleep(d).await;
        gone_unless_alive(&self.net, self.i, self.gen).await;
    }

    /// A connection to our own server: refused when stopped or starting, hangs 5 s and fails
    /// while the server is SIGSTOPped.
    async fn connect(&self) -> Result<(), PgError> {
        let (proc, frozen) = {
            let s = lock(&self.net);
            let pg = &s.w.members[self.i].pg;
            (pg.proc, pg.frozen)
        };
        if frozen {
            self.work(Duration::from_secs(5)).await;
            return Err(PgError::Timeout(Duration::from_secs(5), "connect".into()));
        }
        match proc {
            Proc::Running => Ok(()),
            Proc::Starting => Err(PgError::Sql("the database system is starting up".into())),
            Proc::Stopped => Err(PgError::Sql("connection refused".into())),
        }
    }

    /// The member another member's `host` names, if this one can reach it and it answers.
    fn remote(&self, s: &Shared, host: &str) -> Option<usize> {
        let j = s.w.index(host)?;
        let pg = &s.w.members[j].pg;
        (j != self.i && s.w.reachable(self.i, j) && pg.running() && !pg.frozen && pg.data.is_some())
            .then_some(j)
    }

    /// What `tool` (pg_basebackup, pg_rewind) reads from the server at `host`, with the world
    /// locked; our own server must be stopped.
    fn copy_source(
        &self,
        host: &str,
        tool: &str,
    ) -> Result<(MutexGuard<'_, Shared>, Data), PgError> {
        let s = lock(&self.net);
        let j = self
            .remote(&s, host)
            .ok_or_else(|| err(&format!("{tool}: connection failed")))?;
        if s.w.members[self.i].pg.proc != Proc::Stopped {
            return Err(err(&format!("{tool}: the target server is running")));
        }
        let src = s.w.members[j].pg.data.clone().expect("source data");
        Ok((s, src))
    }

    /// `f` of our data directory, if there is one.
    fn with_data<T>(&self, f: impl FnOnce(&Data) -> T) -> Result<T, PgError> {
        let s = lock(&self.net);
        let d = s.w.members[self.i].pg.data.as_ref();
        d.map(f).ok_or_else(|| err("no data directory"))
    }

    fn trace(&self, s: &mut Shared, what: String) {
        let name = s.w.members[self.i].name.clone();
        trace!(s.w, "  {name}: {what}");
    }

    /// After every change of a server: the invariants.
    fn changed(s: &mut Shared) {
        s.w.invalidate();
        s.w.check();
    }
}

impl PgControl for SimPg {
    fn settings(&self) -> &PgSettings {
        &self.settings
    }

    fn data_dir_state(&self) -> DataDirState {
        match lock(&self.net).w.members[self.i].pg.data {
            Some(_) => DataDirState::Initialized,
            None => DataDirState::Empty,
        }
    }

    fn postmaster_pid(&self) -> Option<i32> {
        let s = lock(&self.net);
        (s.w.members[self.i].pg.proc != Proc::Stopped).then_some(1000 + self.i as i32)
    }

    async fn controldata(&self) -> pgpilot_postgres::Result<ControlData> {
        process_runs(&self.net, self.i, self.gen).await;
        self.with_data(|d| {
            let state = match d.control {
                Control::InProduction => "in production",
                Control::ShutDown => "shut down",
                Control::ShutDownInRecovery => "shut down in recovery",
                Control::InArchiveRecovery => "in archive recovery",
            };
            ControlData {
                system_identifier: d.sysid.clone(),
                state: state.into(),
                timeline: d.timeline(),
                checkpoint_lsn: Lsn(d.lsn()),
                redo_lsn: Lsn(d.lsn()),
                min_recovery_lsn: Lsn(0),
                min_recovery_timeline: 0,
                wal_log_hints: true,
                data_checksums: false,
                raw: Default::default(),
            }
        })
    }

    async fn initdb(&self, _options: &[String]) -> pgpilot_postgres::Result<()> {
        self.work(Duration::from_millis(1500)).await;
        let mut s = lock(&self.net);
        let id = s.w.next_id();
        // Every initdb its own system identifier, as in a real cluster.
        let sysid = (7_000_000_000_000_000_000u64 + id).to_string();
        let pg = &mut s.w.members[self.i].pg;
        if pg.data.is_some() {
            return Err(err("initdb: data directory not empty"));
        }
        pg.data = Some(Data {
            sysid,
            wal: vec![Rec { tl: 1, id }],
            control: Control::ShutDown,
            conf: Conf::default(),
        });
        self.trace(&mut s, "initdb".into());
        Ok(())
    }

    async fn write_config(&self, desired: &DesiredConfig) -> pgpilot_postgres::Result<bool> {
        process_runs(&self.net, self.i, self.gen).await;
        let conf = Conf {
            standby: desired
                .standby
                .as_ref()
                .map(|s| s.upstream.as_ref().map(|u| u.host.clone())),
            ssn: parse_ssn(
                desired
                    .parameters
                    .get("synchronous_standby_names")
                    .map_or("", String::as_str),
            ),
        };
        let mut s = lock(&self.net);
        Ok(s.w.members[self.i].pg.write_conf(&conf))
    }

    async fn start(&self, _timeout: Duration) -> pgpilot_postgres::Result<()> {
        process_runs(&self.net, self.i, self.gen).await;
        {
            let mut s = lock(&self.net);
            let pg = &mut s.w.members[self.i].pg;
            if pg.proc == Proc::Running {
                return Ok(());
            }
            if pg.data.is_none() {
                return Err(err("pg_ctl start: no data directory"));
            }
            pg.begin_start();
        }
        let d = millis(&self.net, 300, 3300);
        self.work(d).await;
        let mut s = lock(&self.net);
        let r = s.w.members[self.i].pg.finish_start();
        let line = format!(
            "started: {r:?} (in recovery: {})",
            s.w.members[self.i].pg.in_recovery
        );
        self.trace(&mut s, line);
        Self::changed(&mut s);
        r.map_err(|e| err(&e))
    }

    async fn stop(&self, mode: StopMode, _timeout: Duration) -> pgpilot_postgres::Result<()> {
        process_runs(&self.net, self.i, self.gen).await;
        let was_running = {
            let mut s = lock(&self.net);
            let id = s.w.next_id();
            let running = s.w.members[self.i].pg.proc != Proc::Stopped;
            if running {
                // No commit from the moment the shutdown starts.
                match mode {
                    StopMode::Immediate => s.w.members[self.i].pg.stop(false, id),
                    StopMode::Fast | StopMode::Smart => s.w.stop_fast(self.i, id),
                }
                self.trace(&mut s, format!("stopped ({mode:?})"));
                Self::changed(&mut s);
            }
            running
        };
        if was_running {
            let d = millis(&self.net, 100, 1000);
            self.work(d).await;
        }
        Ok(())
    }

    async fn kill_postmaster(&self, timeout: Duration) -> pgpilot_postgres::Result<()> {
        self.stop(StopMode::Immediate, timeout).await
    }

    async fn promote(&self, _timeout: Duration) -> pgpilot_postgres::Result<()> {
        let d = millis(&self.net, 200, 1500);
        self.work(d).await;
        let mut s = lock(&self.net);
        if s.w.members[self.i].pg.frozen {
            return Err(err("pg_ctl promote: server does not answer"));
        }
        let id = s.w.next_id();
        match s.w.members[self.i].pg.promote(id) {
            Some(_) => {
                // Known bug K6 (`sim` module docs): in quorum mode a switchover candidate
                // that is a voter promotes without any vote. Counted, not failed.
                let quorum = s.w.cfg.sync_mode == pgpilot_config::SyncMode::Quorum;
                let known = (quorum && s.nodes[self.i].candidate).then_some("K6");
                s.w.on_promote(self.i, known);
                Self::changed(&mut s);
                Ok(())
            }
            None => Err(err("pg_ctl promote: server is not in standby mode")),
        }
    }

    async fn reload(&self) -> pgpilot_postgres::Result<()> {
        process_runs(&self.net, self.i, self.gen).await;
        let mut s = lock(&self.net);
        if !s.w.members[self.i].pg.running() {
            return Err(err("pg_ctl reload: server is not running"));
        }
        s.w.members[self.i].pg.reload();
        Ok(())
    }

    async fn remote_wal_position(&self, at: &Upstream) -> pgpilot_postgres::Result<u64> {
        process_runs(&self.net, self.i, self.gen).await;
        let s = lock(&self.net);
        let j = self
            .remote(&s, &at.host)
            .ok_or_else(|| err("connection failed"))?;
        Ok(s.w.members[j].pg.data.as_ref().map_or(0, Data::lsn))
    }

    async fn remote_is_primary(&self, at: &Upstream) -> pgpilot_postgres::Result<bool> {
        process_runs(&self.net, self.i, self.gen).await;
        let s = lock(&self.net);
        let j = self
            .remote(&s, &at.host)
            .ok_or_else(|| err("connection failed"))?;
        Ok(!s.w.members[j].pg.in_recovery)
    }

    async fn prepare_rewind_source(&self, from: &Upstream) -> pgpilot_postgres::Result<()> {
        process_runs(&self.net, self.i, self.gen).await;
        let s = lock(&self.net);
        let j = self
            .remote(&s, &from.host)
            .ok_or_else(|| err("connection failed"))?;
        if s.w.members[j].pg.in_recovery {
            return Err(err("the rewind source is still in recovery"));
        }
        Ok(())
    }

    async fn query_state(&self) -> pgpilot_postgres::Result<PgState> {
        process_runs(&self.net, self.i, self.gen).await;
        self.connect().await?;
        let s = lock(&self.net);
        let w = &s.w;
        let pg = &w.members[self.i].pg;
        if !pg.running() {
            return Err(PgError::Sql("connection refused".into()));
        }
        let d = pg.data.as_ref().ok_or_else(|| err("no data directory"))?;
        let lsn = Some(Lsn(d.lsn()));
        let quorum = w.cfg.sync_mode == pgpilot_config::SyncMode::Quorum;
        let replication = if pg.in_recovery {
            Vec::new()
        } else {
            (0..w.members.len())
                .filter(|&j| w.connected(j, self.i))
                .map(|j| {
                    let name = w.members[j].name.clone();
                    let listed = pg.live_ssn.names.contains(&name);
                    let sync_state = match (listed, quorum) {
                        (true, true) => "quorum",
                        (true, false) => "sync",
                        _ => "async",
                    };
                    let at = Some(Lsn(w.members[j].pg.data.as_ref().map_or(0, Data::lsn)));
                    WalSender {
                        usename: Some("replicator".into()),
                        application_name: name,
                        client_addr: None,
                        state: "streaming".into(),
                        sync_state: sync_state.into(),
                        sync_priority: i32::from(listed),
                        write_lsn: at,
                        flush_lsn: at,
                        replay_lsn: at,
                    }
                })
                .collect()
        };
        let streaming = pg.in_recovery && w.upstream_of(self.i).is_some();
        Ok(PgState {
            in_recovery: pg.in_recovery,
            postmaster_start_time: "2026-01-01 00:00:00.000000+00:00".into(),
            server_version: 170000,
            timeline: d.timeline(),
            wal_flush_lsn: (!pg.in_recovery).then_some(Lsn(d.lsn())),
            receive_lsn: pg.in_recovery.then_some(lsn).flatten(),
            replay_lsn: pg.in_recovery.then_some(lsn).flatten(),
            replay_timestamp: None,
            replay_paused: false,
            replication_state: streaming.then(|| "streaming".into()),
            latest_end_lsn: None,
            replication,
            synchronous_commit: "on".into(),
            pending_restart: Default::default(),
        })
    }

    async fn create_roles(&self) -> pgpilot_postgres::Result<()> {
        self.work(Duration::from_millis(100)).await;
        self.connect().await
    }

    async fn run_post_bootstrap(&self, _command: &str) -> pgpilot_postgres::Result<()> {
        Ok(())
    }

    async fn custom_bootstrap(&self, _b: &CustomBootstrap) -> pgpilot_postgres::Result<()> {
        Err(err("not simulated"))
    }

    async fn start_no_wait(&self) -> pgpilot_postgres::Result<()> {
        Err(err("not simulated"))
    }

    async fn wait_for_end_of_recovery(&self) -> pgpilot_postgres::Result<()> {
        Err(err("not simulated"))
    }

    /// pg_basebackup: copies the source's WAL at the end of the copy (2 to 10 s).
    async fn create_replica(
        &self,
        _methods: &[ReplicaMethod],
        from: Option<&Upstream>,
        _basebackup: &[String],
    ) -> pgpilot_postgres::Result<String> {
        let from = from.ok_or_else(|| err("no method works without a leader"))?;
        let d = millis(&self.net, 2000, 10_000);
        self.work(d).await;
        let (mut s, src) = self.copy_source(&from.host, "pg_basebackup")?;
        s.w.members[self.i].pg.data = Some(Data {
            sysid: src.sysid,
            wal: src.wal,
            control: Control::InArchiveRecovery,
            conf: Conf::default(),
        });
        self.trace(&mut s, format!("cloned from {}", from.host));
        Ok("basebackup".into())
    }

    /// pg_rewind: the WAL cut back to what it shares with the source's (0.5 to 3.5 s).
    async fn rewind(&self, from: &Upstream) -> pgpilot_postgres::Result<()> {
        let d = millis(&self.net, 500, 3500);
        self.work(d).await;
        let (mut s, src) = self.copy_source(&from.host, "pg_rewind")?;
        match s.w.members[self.i].pg.data.as_mut() {
            Some(d) if d.sysid == src.sysid => {
                let k = d.common_prefix(&src);
                d.wal.truncate(k);
                d.control = Control::InArchiveRecovery;
                self.trace(&mut s, format!("rewound from {}", from.host));
                Ok(())
            }
            _ => Err(err("pg_rewind: no data to rewind")),
        }
    }

    async fn list_slots(&self) -> pgpilot_postgres::Result<Vec<SlotInfo>> {
        process_runs(&self.net, self.i, self.gen).await;
        self.connect().await?;
        Ok(Vec::new())
    }

    async fn change_slot(&self, _change: &SlotChange) -> pgpilot_postgres::Result<()> {
        process_runs(&self.net, self.i, self.gen).await;
        self.connect().await
    }

    async fn read_logical_slots(
        &self,
        _from: &Upstream,
        _names: &[String],
    ) -> pgpilot_postgres::Result<Vec<LogicalSlotState>> {
        Ok(Vec::new())
    }

    fn install_logical_slots(&self, _slots: &[LogicalSlotState]) -> pgpilot_postgres::Result<()> {
        Ok(())
    }

    async fn checkpoint(&self) -> pgpilot_postgres::Result<()> {
        process_runs(&self.net, self.i, self.gen).await;
        self.connect().await
    }

    /// The timeline switches of our WAL, up to `timeline`.
    async fn timeline_history(
        &self,
        timeline: u32,
    ) -> pgpilot_postgres::Result<Vec<(u32, Lsn, String)>> {
        process_runs(&self.net, self.i, self.gen).await;
        self.with_data(|d| {
            let mut out = Vec::new();
            for (k, pair) in d.wal.windows(2).enumerate() {
                if pair[1].tl > pair[0].tl && pair[1].tl <= timeline {
                    out.push((
                        pair[0].tl,
                        Lsn((k as u64 + 1) * LSN_UNIT),
                        "no recovery target specified".into(),
                    ));
                }
            }
            out
        })
    }

    async fn remove_data_dir(&self) -> pgpilot_postgres::Result<()> {
        process_runs(&self.net, self.i, self.gen).await;
        let mut s = lock(&self.net);
        let pg = &mut s.w.members[self.i].pg;
        if pg.proc != Proc::Stopped {
            return Err(err("the data directory is in use"));
        }
        pg.data = None;
        self.trace(&mut s, "data directory removed".into());
        Ok(())
    }

    /// The configuration on disk says standby (`Conf::standby`).
    fn standby_signal(&self) -> bool {
        let s = lock(&self.net);
        let d = s.w.members[self.i].pg.data.as_ref();
        d.is_some_and(|d| d.conf.standby.is_some())
    }

    /// The data directory is gone from where the agent looks (a stopped server's: the agent
    /// stops it first).
    fn move_aside_failed(&self) {
        let mut s = lock(&self.net);
        if s.nodes[self.i].gen != self.gen || s.w.members[self.i].pg.proc != Proc::Stopped {
            return;
        }
        s.w.members[self.i].pg.data = None;
        self.trace(
            &mut s,
            "failed bootstrap: data directory moved aside".into(),
        );
    }

    async fn archive_shutdown_checkpoint(
        &self,
        _archive_command: &str,
    ) -> pgpilot_postgres::Result<String> {
        Err(err("not simulated"))
    }
}
