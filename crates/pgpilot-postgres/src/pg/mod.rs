//! [`Postgres`]: the handle on the local instance.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;
use tokio::sync::Mutex;
use tracing::{debug, error, info, warn};

use crate::files::{
    bootstrap_recovery_params, render_hba, render_pgpass, render_postgresql_conf, role_dsn,
    sanitize_auto_conf, OUR_HEADER,
};
use crate::{
    BootstrapRecovery, ControlData, CustomBootstrap, DataDirState, DesiredConfig, LogicalSlotState,
    Lsn, PgError, PgMajor, PgSettings, PgState, ReplicaMethod, Result, SlotChange, SlotInfo,
    StopMode, Upstream, WalSender,
};

/// Deadline for one monitoring query or connection attempt.
const QUERY_TIMEOUT: Duration = Duration::from_secs(5);
/// How often a promotion or a kill of the postmaster looks whether it is done.
const POLL_PROCESS: Duration = Duration::from_millis(10);

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

/// The monitoring connection, and the queries every cycle runs prepared on it once (each then
/// costs one round trip and no parsing or planning in PostgreSQL).
struct Monitor {
    client: tokio_postgres::Client,
    /// Query texts and their statements on `client` (the monitoring query and the slot list:
    /// a handful, so a list).
    prepared: Vec<(String, tokio_postgres::Statement)>,
}

impl Monitor {
    /// `sql` prepared on this connection, once.
    async fn statement(
        &mut self,
        sql: &str,
    ) -> std::result::Result<tokio_postgres::Statement, tokio_postgres::Error> {
        if let Some((_, st)) = self.prepared.iter().find(|(text, _)| text == sql) {
            return Ok(st.clone());
        }
        let st = self.client.prepare(sql).await?;
        self.prepared.push((sql.to_string(), st.clone()));
        Ok(st)
    }

    /// Runs `sql` (prepared once) and returns its rows.
    async fn query(
        &mut self,
        sql: &str,
    ) -> std::result::Result<Vec<tokio_postgres::Row>, tokio_postgres::Error> {
        let st = self.statement(sql).await?;
        self.client.query(&st, &[]).await
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> PgError + '_ {
    move |source| PgError::Io {
        path: path.to_path_buf(),
        source,
    }
}

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

/// `O_NOFOLLOW`, from nix's libc.
fn libc_o_nofollow() -> i32 {
    nix::fcntl::OFlag::O_NOFOLLOW.bits()
}

/// Writes `path` atomically (tmp + rename) with mode 0600; returns whether the content changed.
/// The temporary file is created exclusively (`O_CREAT|O_EXCL`, never through a symlink) under
/// a name of this process: the pgpass file often lives in `/tmp`, where a predictable name
/// would let another local user plant a symlink and read the passwords.
fn write_if_changed(path: &Path, content: &str) -> Result<bool> {
    use std::os::unix::fs::OpenOptionsExt;
    if std::fs::read_to_string(path).is_ok_and(|old| old == content) {
        return Ok(false);
    }
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".pgpilot-tmp.{}", std::process::id()));
    let tmp = path.with_file_name(name);
    let create = || {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc_o_nofollow())
            .open(&tmp)
    };
    let file = match create() {
        // Left over by a crash of an agent with the same PID: unlink (never follows) and retry.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::remove_file(&tmp).map_err(io_err(&tmp))?;
            create()
        }
        other => other,
    };
    {
        use std::io::Write;
        let mut f = file.map_err(io_err(&tmp))?;
        f.write_all(content.as_bytes()).map_err(io_err(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io_err(path))?;
    Ok(true)
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

    /// `pg_controldata` of the data directory.
    pub async fn controldata(&self) -> Result<ControlData> {
        let mut cmd = Command::new(self.bin("pg_controldata"));
        cmd.arg("-D").arg(self.data());
        let out = self
            .run(cmd, "pg_controldata", Duration::from_secs(30))
            .await?;
        Ok(crate::files::parse_controldata(&out))
    }

    /// Runs `initdb` with the `bootstrap.initdb` options (already rendered as `--opt[=value]`),
    /// adding `--pgdata`, `--username=<superuser>` and `--pwfile` when a password is set.
    /// Moves the generated postgresql.conf to postgresql.base.conf.
    pub async fn initdb(&self, options: &[String]) -> Result<()> {
        let dir = self.data();
        create_private_dir(dir)?;
        let mut cmd = Command::new(self.bin("initdb"));
        cmd.arg(format!("--pgdata={}", dir.display()))
            .arg(format!("--username={}", self.settings.superuser.username))
            .args(options);
        let pwfile = dir.with_extension("pwfile");
        if let Some(pw) = &self.settings.superuser.password {
            write_if_changed(&pwfile, &format!("{pw}\n"))?;
            cmd.arg(format!("--pwfile={}", pwfile.display()));
        }
        let res = self.run(cmd, "initdb", Duration::from_secs(600)).await;
        let _ = std::fs::remove_file(&pwfile);
        res?;
        self.move_base_conf()?;
        Ok(())
    }

    /// Keeps the original configuration as postgresql.base.conf (Patroni's layout) unless that
    /// is already done or the current postgresql.conf is one we wrote.
    fn move_base_conf(&self) -> Result<()> {
        let cfg = &self.settings.config_dir;
        let conf = cfg.join("postgresql.conf");
        let base = cfg.join("postgresql.base.conf");
        if base.exists() || !conf.exists() {
            return Ok(());
        }
        let ours = std::fs::read_to_string(&conf).is_ok_and(|t| t.starts_with(OUR_HEADER));
        if !ours {
            std::fs::rename(&conf, &base).map_err(io_err(&conf))?;
        }
        Ok(())
    }

    /// Renders and writes postgresql.conf, pg_hba.conf and the standby files. Returns true if any
    /// file changed on disk.
    pub async fn write_config(&self, desired: &DesiredConfig) -> Result<bool> {
        let cfg = &self.settings.config_dir;
        create_private_dir(cfg)?;
        self.check_directories(&desired.parameters)?;
        self.move_base_conf()?;
        let major = self.major().await;
        self.restore_command.store(
            desired
                .parameters
                .get("restore_command")
                .is_some_and(|c| !c.trim_matches('\'').is_empty()),
            std::sync::atomic::Ordering::Relaxed,
        );
        let mut changed = false;
        changed |= write_if_changed(
            &cfg.join("postgresql.conf"),
            &render_postgresql_conf(&self.settings, desired, major),
        )?;
        if !desired.pg_hba.is_empty() {
            changed |= write_if_changed(&cfg.join("pg_hba.conf"), &render_hba(&desired.pg_hba))?;
        }
        changed |= self.write_pgpass()?;
        let standby_signal = self.data().join("standby.signal");
        let recovery_signal = self.data().join("recovery.signal");
        // Which signal files must exist (true) or be absent (false); the others are left alone.
        let signals: Vec<(&Path, bool)> = match &desired.bootstrap_recovery {
            // The restore tool's recovery files and settings stay as it wrote them.
            BootstrapRecovery::KeepExisting => vec![],
            BootstrapRecovery::Params(_) => {
                let (_, standby, _) = bootstrap_recovery_params(&desired.bootstrap_recovery);
                vec![(&standby_signal, standby), (&recovery_signal, !standby)]
            }
            BootstrapRecovery::None => vec![(&standby_signal, desired.standby.is_some())],
        };
        for (signal, wanted) in signals {
            match (wanted, signal.exists()) {
                (true, false) => {
                    write_if_changed(signal, "")?;
                    changed = true;
                }
                (false, true) => {
                    std::fs::remove_file(signal).map_err(io_err(signal))?;
                    changed = true;
                }
                _ => {}
            }
        }
        if desired.bootstrap_recovery != BootstrapRecovery::KeepExisting {
            changed |= self.sanitize_auto_conf()?;
        }
        Ok(changed)
    }

    /// Writes the pgpass file (its directory created first, as Patroni's `check_directories`
    /// does at start). Returns whether it changed.
    fn write_pgpass(&self) -> Result<bool> {
        if let Some(dir) = self.settings.pgpass.parent() {
            if !dir.as_os_str().is_empty() {
                ensure_directory(dir, "`postgresql.pgpass`")?;
            }
        }
        write_if_changed(&self.settings.pgpass, &render_pgpass(&self.settings))
    }

    /// Patroni's `check_directories`: every directory of `unix_socket_directories` and the
    /// `stats_temp_directory` exist and are writable before
    /// PostgreSQL starts (created when missing), so a socket directory under `/run` or a fresh
    /// tree does not make the start fail with "could not create lock file". Relative paths are
    /// taken from the data directory, and the ones inside it are left to initdb / the clone while
    /// it is still empty.
    fn check_directories(&self, parameters: &BTreeMap<String, String>) -> Result<()> {
        let mut wanted: Vec<(PathBuf, &str)> = Vec::new();
        if let Some(dirs) = parameters.get("unix_socket_directories") {
            for d in dirs.trim_matches('\'').split(',') {
                let d = d.trim();
                if !d.is_empty() {
                    wanted.push((PathBuf::from(d), "unix_socket_directories"));
                }
            }
        }
        if let Some(d) = parameters.get("stats_temp_directory") {
            let d = d.trim_matches('\'').trim();
            if !d.is_empty() {
                wanted.push((PathBuf::from(d), "stats_temp_directory"));
            }
        }
        let data = self.data();
        let data_empty = matches!(self.data_dir_state(), DataDirState::Empty);
        for (dir, key) in wanted {
            let dir = data.join(dir);
            if data_empty && dir.starts_with(data) {
                continue;
            }
            ensure_directory(&dir, key)?;
        }
        Ok(())
    }

    /// Removes recovery settings from `postgresql.auto.conf` (Patroni's `_sanitize_auto_conf`):
    /// ours in postgresql.conf must be the ones in force. Returns whether the file changed.
    fn sanitize_auto_conf(&self) -> Result<bool> {
        let path = self.data().join("postgresql.auto.conf");
        let Ok(text) = std::fs::read_to_string(&path) else {
            return Ok(false);
        };
        match sanitize_auto_conf(&text) {
            Some(clean) => {
                info!("removing recovery settings from {}", path.display());
                write_if_changed(&path, &clean)
            }
            None => Ok(false),
        }
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

    /// `pg_ctl stop -m <mode>`, waiting at most `timeout`. Succeeds if it was not running.
    /// (Sending the signal here and looking every 10 ms, as the promotion does, made a
    /// `POST /restart` answer before `/patroni` showed the restarted server in about a third of
    /// the `ctl` test's runs; not understood yet, so `pg_ctl stop -w` stays.)
    pub async fn stop(&self, mode: StopMode, timeout: Duration) -> Result<()> {
        *self.conn.lock().await = None;
        if self.postmaster_pid().is_none() {
            if let Some(pid) = self.orphan_postmaster() {
                return self.stop_orphan(pid, timeout).await;
            }
            return Ok(());
        }
        let m = match mode {
            StopMode::Smart => "smart",
            StopMode::Fast => "fast",
            StopMode::Immediate => "immediate",
        };
        let mut cmd = self.pg_ctl("stop");
        cmd.arg("-m")
            .arg(m)
            .arg("-w")
            .arg("-t")
            .arg(timeout.as_secs().max(1).to_string());
        match self
            .run(cmd, "pg_ctl stop", timeout + Duration::from_secs(5))
            .await
        {
            Ok(_) => Ok(()),
            Err(_) if self.postmaster_pid().is_none() => Ok(()),
            Err(e) => Err(e),
        }
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

    /// The WAL position a replica at `at` has received (or replayed), asked over SQL as the
    /// superuser: fresher than its REST status, which is published once per cycle.
    pub async fn remote_wal_position(&self, at: &Upstream) -> Result<u64> {
        let client = self.connect_to(at).await?;
        let row = client
            .query_one(
                "SELECT (GREATEST(pg_catalog.pg_last_wal_receive_lsn(), \
                 pg_catalog.pg_last_wal_replay_lsn()) - '0/0'::pg_lsn)::text",
                &[],
            )
            .await
            .map_err(|e| sql_err(&e))?;
        let text: Option<String> = row.get(0);
        Ok(text
            .and_then(|t| t.split('.').next().and_then(|n| n.parse().ok()))
            .unwrap_or(0))
    }

    /// Whether the server at `at` is out of recovery (a primary: it accepts writes), asked over
    /// SQL as the superuser.
    pub async fn remote_is_primary(&self, at: &Upstream) -> Result<bool> {
        let client = self.connect_to(at).await?;
        let row = client
            .query_one("SELECT NOT pg_catalog.pg_is_in_recovery()", &[])
            .await
            .map_err(|e| sql_err(&e))?;
        Ok(row.get(0))
    }

    /// A superuser connection to `at` (this member or another one), bounded by `QUERY_TIMEOUT`.
    async fn connect_to(&self, at: &Upstream) -> Result<tokio_postgres::Client> {
        self.connect_db(at, "postgres").await
    }

    /// A superuser connection to database `dbname` of `at`.
    async fn connect_db(&self, at: &Upstream, dbname: &str) -> Result<tokio_postgres::Client> {
        let target = crate::conn::Target {
            host: &at.host,
            port: at.port,
            dbname,
        };
        crate::conn::connect(
            &target,
            "superuser",
            &self.settings.superuser,
            QUERY_TIMEOUT,
        )
        .await
    }

    /// Call before [`Postgres::rewind`]. pg_rewind compares timelines through the source's
    /// control file, which a fresh primary updates only at its first checkpoint after
    /// promotion: without it pg_rewind finds "the
    /// same timeline" and leaves a diverged directory alone. So the source must be out of
    /// recovery, and a CHECKPOINT is run there (as superuser, like Patroni) first.
    pub async fn prepare_rewind_source(&self, from: &Upstream) -> Result<()> {
        let client = self.connect_to(from).await?;
        let row = client
            .query_one("SELECT pg_catalog.pg_is_in_recovery()", &[])
            .await
            .map_err(|e| sql_err(&e))?;
        if row.get::<_, bool>(0) {
            return Err(PgError::Sql(
                "the rewind source is still in recovery (promotion not finished)".into(),
            ));
        }
        client
            .batch_execute("CHECKPOINT")
            .await
            .map_err(|e| sql_err(&e))?;
        Ok(())
    }

    /// The local monitoring connection.
    async fn connect(&self) -> Result<tokio_postgres::Client> {
        let local = Upstream {
            host: self.settings.local_host.clone(),
            port: self.settings.port,
        };
        self.connect_to(&local).await
    }

    /// Runs `f` on the monitoring connection, reconnecting once if it is broken.
    async fn with_conn<T, F, Fut>(&self, f: F) -> Result<T>
    where
        F: Fn(tokio_postgres::Client) -> Fut,
        Fut: std::future::Future<
            Output = (
                tokio_postgres::Client,
                std::result::Result<T, tokio_postgres::Error>,
            ),
        >,
    {
        let mut guard = self.conn.lock().await;
        let Monitor { client, prepared } = self.monitor(guard.take()).await?;
        let (client, res) = tokio::time::timeout(QUERY_TIMEOUT, f(client))
            .await
            .map_err(|_| PgError::Timeout(QUERY_TIMEOUT, "query".into()))?;
        match res {
            Ok(v) => {
                *guard = Some(Monitor { client, prepared });
                Ok(v)
            }
            Err(e) => Err(sql_err(&e)),
        }
    }

    /// The monitoring connection `kept` if it is still open, else a new one (nothing
    /// prepared on it yet).
    async fn monitor(&self, kept: Option<Monitor>) -> Result<Monitor> {
        match kept {
            Some(m) if !m.client.is_closed() => Ok(m),
            _ => Ok(Monitor {
                client: self.connect().await?,
                prepared: Vec::new(),
            }),
        }
    }

    /// Runs `sql` on the monitoring connection, prepared there once. On a timeout or an error
    /// the connection is dropped (a new one is made next time).
    async fn prepared_query(&self, sql: &str) -> Result<Vec<tokio_postgres::Row>> {
        let mut guard = self.conn.lock().await;
        let mut m = self.monitor(guard.take()).await?;
        let rows = tokio::time::timeout(QUERY_TIMEOUT, m.query(sql))
            .await
            .map_err(|_| PgError::Timeout(QUERY_TIMEOUT, "query".into()))?
            .map_err(|e| sql_err(&e))?;
        *guard = Some(m);
        Ok(rows)
    }

    /// Runs SQL statements (no results) as the superuser.
    pub async fn execute(&self, sql: &str) -> Result<()> {
        let sql = sql.to_string();
        self.with_conn(move |c| {
            let sql = sql.clone();
            async move {
                let r = c.batch_execute(&sql).await;
                (c, r)
            }
        })
        .await
    }

    /// The monitoring query (one round trip).
    pub async fn query_state(&self) -> Result<PgState> {
        let query = state_query(self.major().await);
        let mut rows = self.prepared_query(&query).await?;
        if rows.len() != 1 {
            return Err(PgError::Sql(format!(
                "the monitoring query returned {} rows",
                rows.len()
            )));
        }
        let row = rows.remove(0);
        let lsn = |i: usize| -> Option<Lsn> {
            row.get::<_, Option<String>>(i)
                .and_then(|s| s.parse::<Lsn>().ok())
        };
        let in_recovery: bool = row.get(0);
        let replication_json: Option<String> = row.get(11);
        let replication: Vec<WalSender> = replication_json
            .and_then(|j| serde_json::from_str::<Vec<serde_json::Value>>(&j).ok())
            .unwrap_or_default()
            .into_iter()
            .map(|v| WalSender {
                usename: v["usename"].as_str().map(str::to_string),
                application_name: v["application_name"].as_str().unwrap_or("").to_string(),
                client_addr: v["client_addr"].as_str().map(str::to_string),
                state: v["state"].as_str().unwrap_or("").to_string(),
                sync_state: v["sync_state"].as_str().unwrap_or("").to_string(),
                sync_priority: v["sync_priority"]
                    .as_i64()
                    .and_then(|n| i32::try_from(n).ok())
                    .unwrap_or(0),
                write_lsn: v["write_lsn"].as_str().and_then(|s| s.parse().ok()),
                flush_lsn: v["flush_lsn"].as_str().and_then(|s| s.parse().ok()),
                replay_lsn: v["replay_lsn"].as_str().and_then(|s| s.parse().ok()),
            })
            .collect();
        let pending_json: Option<String> = row.get(12);
        let pending_restart: BTreeMap<String, (String, String)> = pending_json
            .and_then(|j| serde_json::from_str::<Vec<serde_json::Value>>(&j).ok())
            .unwrap_or_default()
            .into_iter()
            .filter_map(|v| {
                Some((
                    v["name"].as_str()?.to_string(),
                    (
                        v["setting"].as_str().unwrap_or("").to_string(),
                        v["new"].as_str().unwrap_or("?").to_string(),
                    ),
                ))
            })
            .collect();
        let receiver_status: Option<String> = row.get(9);
        let restore_command: Option<String> = row.get(10);
        let replication_state = if !in_recovery {
            None
        } else if receiver_status.as_deref() == Some("streaming") {
            Some("streaming".to_string())
        } else if restore_command.is_some_and(|c| !c.is_empty()) {
            Some("in archive recovery".to_string())
        } else {
            None
        };
        let server_version: i32 = row.get(2);
        if let Some(m) = PgMajor::from_version_num(server_version) {
            self.major.store(m.0, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(PgState {
            in_recovery,
            postmaster_start_time: row.get(1),
            server_version,
            timeline: u32::try_from(row.get::<_, Option<i32>>(3).unwrap_or(0)).unwrap_or(0),
            wal_flush_lsn: lsn(4),
            receive_lsn: lsn(5).or_else(|| lsn(6)),
            replay_lsn: lsn(6),
            replay_timestamp: row.get(7),
            replay_paused: row.get::<_, Option<bool>>(8).unwrap_or(false),
            replication_state,
            latest_end_lsn: lsn(13),
            replication,
            synchronous_commit: row.get(14),
            pending_restart,
        })
    }

    /// Creates or updates the superuser (password), replication and rewind roles. As Patroni
    /// does, statement logging is turned off for the session first, so the passwords never
    /// reach the server log, whatever `log_statement` says.
    pub async fn create_roles(&self) -> Result<()> {
        let s = &self.settings;
        let mut sql = String::new();
        if let Some(pw) = &s.superuser.password {
            sql.push_str(&format!(
                "ALTER ROLE {} WITH SUPERUSER LOGIN PASSWORD {};\n",
                quote_ident(&s.superuser.username),
                quote_literal(pw)
            ));
        }
        sql.push_str(&create_or_alter(
            &s.replication.username,
            "REPLICATION LOGIN",
            s.replication.password.as_deref(),
        ));
        if let Some(rw) = &s.rewind {
            if rw.username != s.superuser.username {
                sql.push_str(&create_or_alter(
                    &rw.username,
                    "LOGIN",
                    rw.password.as_deref(),
                ));
                let u = quote_ident(&rw.username);
                for f in [
                    "pg_catalog.pg_ls_dir(text, boolean, boolean)",
                    "pg_catalog.pg_stat_file(text, boolean)",
                    "pg_catalog.pg_read_binary_file(text)",
                    "pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean)",
                ] {
                    sql.push_str(&format!("GRANT EXECUTE ON function {f} TO {u};\n"));
                }
            }
        }
        // A simple query is logged whole before any of it runs: the SETs go first, alone, on
        // the same session.
        self.with_conn(move |c| {
            let sql = sql.clone();
            async move {
                let mut r = c
                    .batch_execute(
                        "SET log_statement TO none; SET log_min_duration_statement TO -1; \
                         SET log_min_error_statement TO 'log'",
                    )
                    .await;
                if r.is_ok() {
                    r = c.batch_execute(&sql).await;
                }
                if r.is_ok() {
                    r = c
                        .batch_execute(
                            "RESET log_min_error_statement; RESET log_min_duration_statement; \
                             RESET log_statement",
                        )
                        .await;
                }
                (c, r)
            }
        })
        .await
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

    /// Runs `bootstrap.post_bootstrap` with the superuser DSN as its one argument.
    pub async fn run_post_bootstrap(&self, command: &str) -> Result<()> {
        let s = &self.settings;
        let port = s.port.to_string();
        let dsn = role_dsn(
            &s.superuser,
            &[
                ("dbname", "postgres"),
                ("host", &s.local_host),
                ("port", &port),
            ],
            &[],
        );
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!("{command} \"$1\""))
            .arg("post_bootstrap")
            .arg(dsn)
            .env(
                "PGOPTIONS",
                "-c synchronous_commit=local -c statement_timeout=0",
            );
        self.run(cmd, "post_bootstrap", Duration::from_secs(3600))
            .await?;
        Ok(())
    }

    /// Runs a user's command (custom bootstrap, replica creation method) without a shell, its
    /// output going where the agent's goes, as Patroni runs it. Returns the exit code.
    ///
    /// Not bounded in time: a restore takes as long as the backup is large, and Patroni waits
    /// for it too. It ends with the agent: the child is killed when the task is dropped
    /// (shutdown aborts it).
    async fn run_user_command(
        &self,
        argv: &[String],
        pgpassfile: bool,
    ) -> std::result::Result<i32, String> {
        let Some((program, args)) = argv.split_first() else {
            return Err("empty command".into());
        };
        let mut cmd = Command::new(program);
        cmd.args(args).stdin(Stdio::null()).kill_on_drop(true);
        if pgpassfile {
            cmd.env("PGPASSFILE", &self.settings.pgpass);
        }
        let mut child = cmd.spawn().map_err(|e| e.to_string())?;
        let status = child.wait().await.map_err(|e| e.to_string())?;
        // A command killed by a signal has no code; Patroni's subprocess reports -<signal>.
        Ok(status.code().unwrap_or_else(|| {
            use std::os::unix::process::ExitStatusExt;
            -status.signal().unwrap_or(1)
        }))
    }

    /// Runs a custom bootstrap method instead of initdb (Patroni's `_custom_bootstrap`), then
    /// readies what it restored: no promote trigger file, and unless the recovery settings are
    /// to be written ([`BootstrapRecovery::Params`], by [`Postgres::write_config`]) or kept, no
    /// recovery files either. The original configuration is kept as postgresql.base.conf.
    pub async fn custom_bootstrap(&self, b: &CustomBootstrap) -> Result<()> {
        let m = &b.method;
        let argv = m.bootstrap_argv(&self.settings.scope, &self.data().display().to_string());
        info!("Running custom bootstrap script: {}", m.command);
        let failed = |detail: String| PgError::Command {
            command: format!("custom bootstrap script {}", m.command),
            detail,
        };
        match self.run_user_command(&argv, false).await {
            Ok(0) => {}
            Ok(code) => return Err(failed(format!("exited with code={code}"))),
            Err(e) => {
                error!("Exception during custom bootstrap: {e}");
                return Err(failed(e));
            }
        }
        if self.data_dir_state() != DataDirState::Initialized {
            return Err(failed(format!(
                "succeeded but left no PostgreSQL cluster in {}",
                self.data().display()
            )));
        }
        let mut remove = vec![self.data().join("promote")];
        if let BootstrapRecovery::Params(params) = &b.recovery {
            if let Some((_, trigger)) = params.iter().find(|(k, _)| k == "promote_trigger_file") {
                remove.push(self.data().join(trigger));
            }
        }
        if b.recovery == BootstrapRecovery::None {
            remove.extend(
                ["recovery.conf", "recovery.signal", "standby.signal"].map(|f| self.data().join(f)),
            );
        }
        for path in remove {
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(io_err(&path)(e));
                }
                _ => {}
            }
        }
        self.move_base_conf()
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

    /// Creates this replica's data directory with the first of `methods` that succeeds
    /// (Patroni's `create_replica`): the built-in pg_basebackup from `from` with `basebackup`
    /// options, or a user's command. Without `from` only the methods that work without a
    /// leader are tried. A failed method's leftovers are removed unless it has `keep_data`.
    /// Returns the name of the method that worked.
    pub async fn create_replica(
        &self,
        methods: &[ReplicaMethod],
        from: Option<&Upstream>,
        basebackup: &[String],
    ) -> Result<String> {
        let s = &self.settings;
        let connstring = from.map(|f| {
            let port = f.port.to_string();
            role_dsn(
                &s.replication,
                &[("dbname", "postgres"), ("host", &f.host), ("port", &port)],
                &[],
            )
        });
        if from.is_some() {
            self.write_pgpass()?;
        }
        let mut failures = Vec::new();
        for method in methods {
            let name = method.name();
            match (method, from) {
                (ReplicaMethod::Basebackup, Some(from)) => {
                    match self.basebackup(from, basebackup).await {
                        Ok(()) => {
                            info!("replica has been created using basebackup");
                            return Ok(name.to_string());
                        }
                        Err(e) => failures.push(format!("basebackup: {e}")),
                    }
                }
                (ReplicaMethod::Custom { .. }, None) if !method.works_without_leader() => {}
                (ReplicaMethod::Basebackup, None) => {}
                (
                    ReplicaMethod::Custom {
                        method: m,
                        keep_data,
                        ..
                    },
                    _,
                ) => {
                    self.clear_for_method(*keep_data).await?;
                    let argv = m.replica_argv(
                        &s.scope,
                        &self.data().display().to_string(),
                        connstring.as_deref().unwrap_or(""),
                    );
                    match self.run_user_command(&argv, from.is_some()).await {
                        Ok(0) => {
                            info!("replica has been created using {name}");
                            return Ok(name.to_string());
                        }
                        Ok(code) => {
                            error!(
                                "Error creating replica using method {name}: {} exited with code={code}",
                                m.command
                            );
                            failures.push(format!("{name}: exited with code={code}"));
                        }
                        Err(e) => {
                            error!("Error creating replica using method {name}: {e}");
                            failures.push(format!("{name}: {e}"));
                        }
                    }
                    if !keep_data && self.data_dir_state() != DataDirState::Empty {
                        self.remove_data_dir().await?;
                    }
                }
            }
        }
        Err(PgError::Command {
            command: "create replica".into(),
            detail: if failures.is_empty() {
                "no replica creation method can work without a leader".into()
            } else {
                format!("every method failed: {}", failures.join("; "))
            },
        })
    }

    /// Before a replica creation command: a data directory with something in it is emptied
    /// unless `keep_data`; an empty one is removed, since Patroni's removal deletes the
    /// directory itself and scripts written for it create the directory (e.g. copytree).
    async fn clear_for_method(&self, keep_data: bool) -> Result<()> {
        if self.data_dir_state() != DataDirState::Empty {
            if keep_data {
                info!("Leaving data directory uncleaned");
                return Ok(());
            }
            self.remove_data_dir().await?;
        }
        // A mount point can not be removed: the method then finds it empty.
        let _ = std::fs::remove_dir(self.data());
        Ok(())
    }

    /// Clones the data directory from `from` with pg_basebackup (`-X stream`), two attempts.
    pub async fn basebackup(&self, from: &Upstream, extra_args: &[String]) -> Result<()> {
        self.write_pgpass()?;
        let s = &self.settings;
        let port = from.port.to_string();
        let dsn = role_dsn(
            &s.replication,
            &[
                ("host", &from.host),
                ("port", &port),
                ("dbname", "postgres"),
                ("application_name", &s.name),
            ],
            &[],
        );
        let mut last = None;
        for attempt in 1..=2 {
            self.remove_data_dir().await?;
            create_private_dir(self.data())?;
            let mut cmd = Command::new(self.bin("pg_basebackup"));
            cmd.arg(format!("--pgdata={}", self.data().display()))
                .arg("-X")
                .arg("stream")
                .arg(format!("--dbname={dsn}"))
                .args(extra_args);
            // A spread checkpoint can keep a new replica waiting for up to checkpoint_timeout
            // (5 min by default) before the copy starts; ask for a fast one unless configured.
            if !extra_args
                .iter()
                .any(|a| a.starts_with("--checkpoint") || a == "-c")
            {
                cmd.arg("--checkpoint=fast");
            }
            match self
                .run(cmd, "pg_basebackup", Duration::from_secs(3600))
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) => {
                    warn!("pg_basebackup attempt {attempt} failed: {e}");
                    last = Some(e);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        Err(last.unwrap_or_else(|| PgError::Invalid("pg_basebackup failed".into())))
    }

    /// Refuses a pg_rewind that can not work on this data directory before running it: absent
    /// from `bin_dir`, or of another major (pg_rewind reads the control file and WAL of its
    /// own major only).
    async fn check_rewind_binary(&self) -> Result<()> {
        let bin = self.bin("pg_rewind");
        // Logged as "pg_rewind failed: <this>".
        let refused = PgError::Invalid;
        let mut cmd = Command::new(&bin);
        cmd.arg("--version");
        let out = self
            .run(cmd, "pg_rewind --version", Duration::from_secs(30))
            .await
            .map_err(|e| refused(format!("{} can not be run: {e}", bin.display())))?;
        let tool = PgMajor::from_version_output(&out);
        let data = self.data_dir_major();
        match (tool, data) {
            (Some(t), Some(d)) if t != d => Err(refused(format!(
                "{} is PostgreSQL {t} and the data directory PostgreSQL {d}: pg_rewind works \
                 on its own major only",
                bin.display()
            ))),
            _ => Ok(()),
        }
    }

    /// Runs pg_rewind against `from` (target must be stopped cleanly).
    pub async fn rewind(&self, from: &Upstream) -> Result<()> {
        self.check_rewind_binary().await?;
        self.write_pgpass()?;
        let s = &self.settings;
        let user = s.rewind.as_ref().unwrap_or(&s.superuser);
        let port = from.port.to_string();
        let dsn = role_dsn(
            user,
            &[
                ("host", &from.host),
                ("port", &port),
                ("dbname", "postgres"),
            ],
            &[],
        );
        let conf = s.config_dir.join("postgresql.conf");
        let options = self.major().await.rewind_options(
            self.restore_command
                .load(std::sync::atomic::Ordering::Relaxed),
            (s.config_dir != s.data_dir).then_some(conf.as_path()),
        );
        let mut cmd = Command::new(self.bin("pg_rewind"));
        cmd.args(options)
            .arg("-D")
            .arg(self.data())
            .arg(format!("--source-server={dsn}"))
            .env("PGOPTIONS", "-c statement_timeout=0");
        let out = self
            .run(cmd, "pg_rewind", Duration::from_secs(3600))
            .await?;
        info!("pg_rewind: {}", out.trim());
        Ok(())
    }

    /// The replication slots of this server (temporary ones left out), with the LSN Patroni
    /// publishes for each: `confirmed_flush_lsn` of a logical slot, `restart_lsn` of a physical
    /// one.
    pub async fn list_slots(&self) -> Result<Vec<SlotInfo>> {
        // `wal_status` is PostgreSQL 13's.
        let lost = if self.major().await >= PgMajor(13) {
            "coalesce(wal_status = 'lost', false)"
        } else {
            "false"
        };
        let sql = format!(
            "SELECT slot_name::text, slot_type::text, database::text, plugin::text, \
             active, \
             pg_catalog.pg_wal_lsn_diff(CASE WHEN slot_type = 'logical' \
             THEN confirmed_flush_lsn ELSE restart_lsn END, '0/0')::bigint, \
             xmin::text::bigint, {lost} \
             FROM pg_catalog.pg_replication_slots \
             WHERE NOT temporary"
        );
        let rows = self.prepared_query(&sql).await?;
        Ok(rows
            .iter()
            .map(|r| SlotInfo {
                name: r.get(0),
                slot_type: r.get(1),
                database: r.get(2),
                plugin: r.get(3),
                active: r.get(4),
                lsn: r
                    .get::<_, Option<i64>>(5)
                    .and_then(|n| u64::try_from(n).ok()),
                xmin: r
                    .get::<_, Option<i64>>(6)
                    .and_then(|n| u32::try_from(n).ok()),
                lost: r.get(7),
            })
            .collect())
    }

    /// The on-disk state of the logical slots `names` on the primary at `from`, to copy them
    /// onto this replica (Patroni's `copy_logical_slots`): read through a superuser connection
    /// with `pg_read_binary_file`. PostgreSQL 17's failover slots are left out (PostgreSQL
    /// synchronises those itself).
    pub async fn read_logical_slots(
        &self,
        from: &Upstream,
        names: &[String],
    ) -> Result<Vec<LogicalSlotState>> {
        let client = self.connect_to(from).await?;
        let version: i32 = client
            .query_one(
                "SELECT pg_catalog.current_setting('server_version_num')::int",
                &[],
            )
            .await
            .map_err(|e| sql_err(&e))?
            .get(0);
        let failover_slots =
            PgMajor::from_version_num(version).is_some_and(PgMajor::has_failover_slots);
        let not_failover = if failover_slots {
            " NOT failover AND"
        } else {
            ""
        };
        let sql = format!(
            "SELECT slot_name::text, datname::text, plugin::text, \
             pg_catalog.pg_read_binary_file('pg_replslot/' || slot_name || '/state') \
             FROM pg_catalog.pg_get_replication_slots() JOIN pg_catalog.pg_database ON datoid = oid \
             WHERE{not_failover} NOT pg_catalog.pg_is_in_recovery() AND slot_type = 'logical' \
             AND slot_name = ANY($1)"
        );
        let rows = tokio::time::timeout(QUERY_TIMEOUT, client.query(&sql, &[&names]))
            .await
            .map_err(|_| PgError::Timeout(QUERY_TIMEOUT, "query".into()))?
            .map_err(|e| sql_err(&e))?;
        Ok(rows
            .iter()
            .map(|r| LogicalSlotState {
                name: r.get(0),
                database: r.get(1),
                plugin: r.get(2),
                state: r.get(3),
            })
            .collect())
    }

    /// Writes copied logical slots into `pg_replslot` (PostgreSQL must be stopped): each state
    /// file into a fresh `<name>.tmp` directory, synced, then renamed over `<name>`, so that a
    /// crash leaves either the old slot or the new one.
    pub fn install_logical_slots(&self, slots: &[LogicalSlotState]) -> Result<()> {
        use std::io::Write;
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| PgError::Io { path, source }
        };
        let sync_dir = |dir: &Path| std::fs::File::open(dir).and_then(|d| d.sync_all());
        let root = self.data().join("pg_replslot");
        for slot in slots {
            // Names come from the primary's catalog and our configuration: anything but a
            // valid slot name is refused rather than joined into a path.
            if !crate::valid_slot_name(&slot.name) {
                return Err(PgError::Invalid(format!(
                    "refusing to copy a slot named {:?}",
                    slot.name
                )));
            }
            let dir = root.join(&slot.name);
            let tmp = root.join(format!("{}.tmp", slot.name));
            if tmp.exists() {
                std::fs::remove_dir_all(&tmp).map_err(io(&tmp))?;
            }
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&tmp)
                .map_err(io(&tmp))?;
            let file = tmp.join("state");
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&file)
                .map_err(io(&file))?;
            f.write_all(&slot.state).map_err(io(&file))?;
            f.sync_all().map_err(io(&file))?;
            sync_dir(&tmp).map_err(io(&tmp))?;
            if dir.exists() {
                std::fs::remove_dir_all(&dir).map_err(io(&dir))?;
            }
            std::fs::rename(&tmp, &dir).map_err(io(&dir))?;
            sync_dir(&dir).map_err(io(&dir))?;
        }
        sync_dir(&root).map_err(io(&root))
    }

    /// Runs `sql` in database `database` of this server (logical slots live in one database).
    async fn execute_in(&self, database: &str, sql: &str) -> Result<()> {
        let local = Upstream {
            host: self.settings.local_host.clone(),
            port: self.settings.port,
        };
        let client = self.connect_db(&local, database).await?;
        tokio::time::timeout(QUERY_TIMEOUT, client.batch_execute(sql))
            .await
            .map_err(|_| PgError::Timeout(QUERY_TIMEOUT, "query".into()))?
            .map_err(|e| sql_err(&e))
    }

    /// Creates or drops one slot. Drops only an inactive slot (an active one is reported as
    /// [`PgError::Sql`]). Logical slots are created from a connection to their database.
    pub async fn change_slot(&self, change: &SlotChange) -> Result<()> {
        match change {
            SlotChange::CreatePhysical(name) => {
                // Reserves WAL at once, as Patroni does, so that `restart_lsn` is set.
                self.execute(&format!(
                    "SELECT pg_catalog.pg_create_physical_replication_slot({}, true) \
                     WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_replication_slots \
                     WHERE slot_name = {0})",
                    quote_literal(name)
                ))
                .await
            }
            SlotChange::CreateLogical {
                name,
                database,
                plugin,
            } => {
                let sql = format!(
                    "SELECT pg_catalog.pg_create_logical_replication_slot({}, {}) \
                     WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_replication_slots \
                     WHERE slot_name = {0})",
                    quote_literal(name),
                    quote_literal(plugin)
                );
                self.execute_in(database, &sql).await
            }
            SlotChange::AdvanceLogical {
                name,
                database,
                lsn,
            } => {
                let sql = format!(
                    "SELECT pg_catalog.pg_replication_slot_advance({}, {})",
                    quote_literal(name),
                    quote_literal(&Lsn(*lsn).to_string())
                );
                self.execute_in(database, &sql).await
            }
            SlotChange::Advance { name, lsn } => {
                self.execute(&format!(
                    "SELECT pg_catalog.pg_replication_slot_advance({}, {})",
                    quote_literal(name),
                    quote_literal(&Lsn(*lsn).to_string())
                ))
                .await
            }
            SlotChange::Drop(name) => {
                let name = quote_literal(name);
                let rows = self
                    .with_conn(move |c| {
                        let sql = format!(
                            "WITH slots AS (SELECT slot_name, active \
                             FROM pg_catalog.pg_replication_slots WHERE slot_name = {name}), \
                             dropped AS (SELECT pg_catalog.pg_drop_replication_slot(slot_name), \
                             true AS dropped FROM slots WHERE NOT active) \
                             SELECT active, COALESCE(dropped, false) FROM slots \
                             FULL OUTER JOIN dropped ON true"
                        );
                        async move {
                            let r = c.query(&sql, &[]).await;
                            (c, r)
                        }
                    })
                    .await?;
                match rows.first().map(|r| r.get::<_, bool>(0)) {
                    Some(true) => Err(PgError::Sql("slot is active".into())),
                    _ => Ok(()),
                }
            }
        }
    }

    /// `CHECKPOINT`.
    pub async fn checkpoint(&self) -> Result<()> {
        self.execute("CHECKPOINT").await
    }

    /// Lines of `pg_wal/<timeline>.history`: (parent timeline, switch LSN, reason).
    pub async fn timeline_history(&self, timeline: u32) -> Result<Vec<(u32, Lsn, String)>> {
        let path = self.data().join(format!("pg_wal/{timeline:08X}.history"));
        let text = std::fs::read_to_string(&path).map_err(io_err(&path))?;
        Ok(crate::files::parse_history(&text))
    }

    /// A failed bootstrap leaves its data directory as `<data_dir>.failed` for inspection.
    pub fn move_aside_failed(&self) {
        let dir = &self.settings().data_dir;
        let mut failed = PathBuf::from(dir);
        failed.set_extension("failed");
        // Usually there is none; if an old one can not be removed the rename below says so.
        match std::fs::remove_dir_all(&failed) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                warn!("could not remove the old {}: {e}", failed.display());
            }
            _ => {}
        }
        if let Err(e) = std::fs::rename(dir, &failed) {
            error!("could not move {} aside: {e}", dir.display());
        }
    }

    /// Removes the data directory contents (only on an explicit, logged condition: see
    /// DESIGN.md).
    /// Runs on tokio's blocking pool: a large data directory takes seconds to remove, and the
    /// agent's one thread also serves the REST API.
    pub async fn remove_data_dir(&self) -> Result<()> {
        let dir = self.data().to_path_buf();
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(());
        };
        info!("removing the contents of {}", dir.display());
        let removed = tokio::task::spawn_blocking(move || -> Result<()> {
            for e in entries.flatten() {
                let p = e.path();
                let res = if p.is_dir() && !p.is_symlink() {
                    std::fs::remove_dir_all(&p)
                } else {
                    std::fs::remove_file(&p)
                };
                res.map_err(io_err(&p))?;
            }
            Ok(())
        })
        .await;
        match removed {
            Ok(r) => r,
            Err(e) => Err(PgError::Io {
                path: dir,
                source: std::io::Error::other(format!("removal task failed: {e}")),
            }),
        }
    }
}

/// tokio-postgres prints only "db error" for server errors: include the server's message.
fn sql_err(e: &tokio_postgres::Error) -> PgError {
    PgError::Sql(describe(e))
}

/// An error of tokio-postgres with the server's message, or the cause it wraps (TLS, I/O).
pub(crate) fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{}: {}", db.severity(), db.message()),
        None => format!(
            "{e}: {}",
            std::error::Error::source(e)
                .map(|s| s.to_string())
                .unwrap_or_default()
        ),
    }
}

/// [`validate_directory`] with Patroni's message naming the setting `key` that wants `dir`.
fn ensure_directory(dir: &Path, key: &str) -> Result<()> {
    validate_directory(dir).map_err(|reason| {
        PgError::Invalid(format!("'{}' is defined in {key}, {reason}", dir.display()))
    })
}

/// Patroni's `validate_directory`: `dir` exists (created with its parents when missing) and a
/// file can be created in it. The error is the reason, in Patroni's words.
fn validate_directory(dir: &Path) -> std::result::Result<(), &'static str> {
    match std::fs::metadata(dir) {
        Err(_) => match std::fs::create_dir_all(dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(_) => Err("couldn't create the directory"),
        },
        Ok(m) if m.is_dir() => {
            let probe = dir.join(format!(".pgpilot-write-check.{}", std::process::id()));
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&probe)
                .and_then(|_| std::fs::remove_file(&probe))
                .map_err(|_| "the directory is not writable")
        }
        Ok(_) => Err("is not a directory"),
    }
}

fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io_err(dir))
}

/// `"name"` with embedded quotes doubled.
pub fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

/// `'text'` with embedded quotes doubled (standard_conforming_strings is on since 9.1).
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn create_or_alter(user: &str, attrs: &str, password: Option<&str>) -> String {
    let pw = password.map_or_else(String::new, |p| format!(" PASSWORD {}", quote_literal(p)));
    let lit = quote_literal(user);
    let ident = quote_ident(user);
    format!(
        "DO $pgpilot$ BEGIN \
         IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = {lit}) THEN \
         EXECUTE {alter}; ELSE EXECUTE {create}; END IF; END $pgpilot$;\n",
        alter = quote_literal(&format!("ALTER ROLE {ident} WITH {attrs}{pw}")),
        create = quote_literal(&format!("CREATE ROLE {ident} WITH {attrs}{pw}")),
    )
}

/// The monitoring query for `major`: PostgreSQL 12's wal receiver has no `written_lsn`, its
/// `received_lsn` (flushed) is the nearest.
fn state_query(major: PgMajor) -> String {
    if major.wal_receiver_has_written_lsn() {
        STATE_QUERY.to_string()
    } else {
        STATE_QUERY.replace("written_lsn", "received_lsn")
    }
}

/// One round trip: everything `/patroni` and the HA cycle need. LSNs as text.
const STATE_QUERY: &str = "\
SELECT pg_catalog.pg_is_in_recovery(),
  pg_catalog.to_char(pg_catalog.pg_postmaster_start_time(), 'YYYY-MM-DD HH24:MI:SS.US') ||
    pg_catalog.replace(pg_catalog.to_char(pg_catalog.pg_postmaster_start_time(), 'TZH:TZM'), ' ', ''),
  pg_catalog.current_setting('server_version_num')::int,
  CASE WHEN pg_catalog.pg_is_in_recovery()
    THEN (SELECT received_tli FROM pg_catalog.pg_stat_get_wal_receiver())
    ELSE ('x' || pg_catalog.substr(pg_catalog.pg_walfile_name(pg_catalog.pg_current_wal_lsn()), 1, 8))::bit(32)::int END,
  CASE WHEN pg_catalog.pg_is_in_recovery() THEN NULL ELSE pg_catalog.pg_current_wal_flush_lsn()::text END,
  CASE WHEN pg_catalog.pg_is_in_recovery()
    THEN COALESCE((SELECT written_lsn FROM pg_catalog.pg_stat_get_wal_receiver() WHERE status = 'streaming'),
                  pg_catalog.pg_last_wal_receive_lsn())::text END,
  CASE WHEN pg_catalog.pg_is_in_recovery() THEN pg_catalog.pg_last_wal_replay_lsn()::text END,
  CASE WHEN pg_catalog.pg_is_in_recovery() THEN
    pg_catalog.to_char(pg_catalog.pg_last_xact_replay_timestamp(), 'YYYY-MM-DD HH24:MI:SS.US') ||
    pg_catalog.replace(pg_catalog.to_char(pg_catalog.pg_last_xact_replay_timestamp(), 'TZH:TZM'), ' ', '') END,
  CASE WHEN pg_catalog.pg_is_in_recovery() THEN pg_catalog.pg_is_wal_replay_paused() END,
  (SELECT status FROM pg_catalog.pg_stat_get_wal_receiver()),
  pg_catalog.current_setting('restore_command'),
  (SELECT pg_catalog.json_agg(r)::text FROM (SELECT usename, application_name,
     client_addr::text AS client_addr, state, sync_state, sync_priority,
     write_lsn::text AS write_lsn, flush_lsn::text AS flush_lsn, replay_lsn::text AS replay_lsn
     FROM pg_catalog.pg_stat_replication) r),
  (SELECT pg_catalog.json_agg(p)::text FROM (SELECT s.name, s.setting,
     COALESCE((SELECT f.setting FROM pg_catalog.pg_file_settings f
               WHERE f.name = s.name ORDER BY f.seqno DESC LIMIT 1), s.boot_val) AS new
     FROM pg_catalog.pg_settings s WHERE s.pending_restart) p),
  CASE WHEN pg_catalog.pg_is_in_recovery() THEN
    (SELECT latest_end_lsn::text FROM pg_catalog.pg_stat_get_wal_receiver()) END,
  pg_catalog.current_setting('synchronous_commit')";

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

    /// A missing socket directory is created with its parents; a file where a directory is
    /// wanted is refused with Patroni's reason; an existing writable one is accepted and left
    /// with nothing in it.
    #[test]
    fn directories_are_created_or_refused() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("run/postgresql");
        assert_eq!(validate_directory(&nested), Ok(()));
        assert!(nested.is_dir());
        assert_eq!(validate_directory(&nested), Ok(()));
        assert_eq!(std::fs::read_dir(&nested).unwrap().count(), 0);
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        assert_eq!(validate_directory(&file), Err("is not a directory"));
        assert_eq!(
            validate_directory(&file.join("below")),
            Err("couldn't create the directory")
        );
    }

    /// The pgpass file is written through an exclusive temporary file: a symlink planted at
    /// the temporary name is removed, never written through, and the result is 0600.
    #[test]
    fn secrets_are_never_written_through_a_planted_symlink() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let pgpass = dir.path().join("pgpass");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "untouched").unwrap();
        let tmp = dir
            .path()
            .join(format!("pgpass.pgpilot-tmp.{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &tmp).unwrap();
        assert!(write_if_changed(&pgpass, "*:*:*:u:secret\n").unwrap());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
        assert_eq!(
            std::fs::read_to_string(&pgpass).unwrap(),
            "*:*:*:u:secret\n"
        );
        let mode = std::fs::metadata(&pgpass).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!tmp.exists());
        assert!(!write_if_changed(&pgpass, "*:*:*:u:secret\n").unwrap());
    }
}
