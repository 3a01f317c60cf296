//! PostgreSQL made by hand, the way a DBA would before pgpilot arrives: `initdb` + `pg_ctl start`
//! of a plain standalone server. Used by the adoption and system-identifier tests, and by the
//! harness self-test.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::Context;

use super::cluster::{HBA, REPLICATION, SUPERUSER};
use super::{clean_env, init, postmaster_pid, PG_BIN_DIR};

/// A standalone PostgreSQL 15 data directory listening on `127.0.0.1:port`, with the same
/// superuser credentials and `pg_hba.conf` rules the cluster members use.
#[derive(Debug, Clone)]
pub struct Standalone {
    pub data_dir: PathBuf,
    pub port: u16,
    pub socket_dir: PathBuf,
    /// `pg_ctl -l` log (server log).
    pub log_path: PathBuf,
}

impl Standalone {
    /// `initdb` into `data_dir` (absent or empty) and configures port, socket directory and
    /// `pg_hba.conf`. Does not start it.
    pub fn init(data_dir: &Path, port: u16, socket_dir: &Path, log_path: &Path) -> Standalone {
        init();
        let parent = data_dir.parent().expect("data dir has a parent");
        std::fs::create_dir_all(parent).expect("create data dir parent");
        std::fs::create_dir_all(socket_dir).expect("create socket dir");
        let pwfile = parent.join(".standalone-pwfile");
        std::fs::write(&pwfile, format!("{}\n", SUPERUSER.1)).expect("write pwfile");
        run(
            Command::new(Path::new(PG_BIN_DIR).join("initdb"))
                .arg("-D")
                .arg(data_dir)
                .arg(format!("--username={}", SUPERUSER.0))
                .arg(format!("--pwfile={}", pwfile.display()))
                .arg("--encoding=UTF8")
                .arg("--auth-local=trust")
                .arg("--auth-host=md5")
                .arg("--no-sync"),
            parent,
        )
        .expect("initdb");
        std::fs::remove_file(&pwfile).ok();
        let conf = format!(
            "\n# standalone server made by the test harness\nlisten_addresses = '127.0.0.1'\n\
             port = {port}\nunix_socket_directories = '{}'\nfsync = off\n",
            socket_dir.display()
        );
        append(&data_dir.join("postgresql.conf"), &conf);
        std::fs::write(data_dir.join("pg_hba.conf"), HBA.join("\n") + "\n").expect("pg_hba.conf");
        Standalone {
            data_dir: data_dir.to_path_buf(),
            port,
            socket_dir: socket_dir.to_path_buf(),
            log_path: log_path.to_path_buf(),
        }
    }

    /// `pg_ctl start -w`.
    pub fn start(&self) {
        run(
            Command::new(Path::new(PG_BIN_DIR).join("pg_ctl"))
                .arg("-D")
                .arg(&self.data_dir)
                .arg("-l")
                .arg(&self.log_path)
                .args(["-w", "-t", "120", "start"]),
            self.data_dir.parent().unwrap(),
        )
        .unwrap_or_else(|e| panic!("{e:#}\n{}", super::tail(&self.log_path, 40)));
    }

    /// `pg_ctl stop -m fast -w`.
    pub fn stop(&self) {
        run(
            Command::new(Path::new(PG_BIN_DIR).join("pg_ctl"))
                .arg("-D")
                .arg(&self.data_dir)
                .args(["-m", "fast", "-w", "-t", "120", "stop"]),
            self.data_dir.parent().unwrap(),
        )
        .expect("pg_ctl stop");
    }

    pub fn postmaster_pid(&self) -> Option<i32> {
        postmaster_pid(&self.data_dir)
    }

    /// Superuser connection over TCP.
    pub async fn connect(&self) -> tokio_postgres::Client {
        connect(self.port)
            .await
            .unwrap_or_else(|e| panic!("connect to standalone: {e:#}"))
    }

    /// Creates the replication role the cluster configuration names, as a DBA preparing for HA
    /// would (adoption does not create roles: only a bootstrap does).
    pub async fn create_replication_role(&self) {
        let client = self.connect().await;
        client
            .batch_execute(&format!(
                "CREATE ROLE {} WITH REPLICATION LOGIN PASSWORD '{}'",
                REPLICATION.0, REPLICATION.1
            ))
            .await
            .expect("create the replication role");
    }

    pub fn system_identifier(&self) -> String {
        controldata_system_identifier(&self.data_dir)
    }
}

/// `Database system identifier` from `pg_controldata` (works while the server is down).
pub fn controldata_system_identifier(data_dir: &Path) -> String {
    controldata_field(data_dir, "Database system identifier")
}

/// The value of `field` in `pg_controldata`'s output (works while the server is down), e.g.
/// `Database cluster state` (`shut down` after a clean stop, `in production` after a crash or an
/// immediate shutdown).
pub fn controldata_field(data_dir: &Path, field: &str) -> String {
    let out = Command::new(Path::new(PG_BIN_DIR).join("pg_controldata"))
        .arg(data_dir)
        .env("LC_ALL", "C")
        .output()
        .expect("run pg_controldata");
    assert!(
        out.status.success(),
        "pg_controldata {}: {:?}",
        data_dir.display(),
        out
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("pg_controldata prints no {field:?}"))
}

/// Superuser connection to `127.0.0.1:port` (3 s connect timeout); the connection task runs on
/// the test's runtime.
pub async fn connect(port: u16) -> anyhow::Result<tokio_postgres::Client> {
    let conninfo = format!(
        "host=127.0.0.1 port={port} user={} password={} dbname=postgres connect_timeout=3 \
         application_name=pgpilot-test-harness",
        SUPERUSER.0, SUPERUSER.1
    );
    let (client, connection) = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tokio_postgres::connect(&conninfo, tokio_postgres::NoTls),
    )
    .await
    .context("connecting took more than 5 s")?
    .with_context(|| format!("connect to 127.0.0.1:{port}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// A superuser connection through the unix socket in `dir`.
pub async fn connect_socket(dir: &Path, port: u16) -> anyhow::Result<tokio_postgres::Client> {
    let mut cfg = tokio_postgres::Config::new();
    cfg.host_path(dir)
        .port(port)
        .user(SUPERUSER.0)
        .dbname("postgres")
        .application_name("pgpilot-test-harness")
        .connect_timeout(std::time::Duration::from_secs(3));
    let (client, connection) = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        cfg.connect(tokio_postgres::NoTls),
    )
    .await
    .context("connecting took more than 5 s")?
    .with_context(|| format!("connect to {}/.s.PGSQL.{port}", dir.display()))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .expect("open for append");
    f.write_all(text.as_bytes()).expect("append");
}

/// Runs a PostgreSQL tool to completion. stdout/stderr go to files, never to pipes: `pg_ctl start`
/// leaves a postmaster behind that would hold a pipe open forever.
fn run(cmd: &mut Command, dir: &Path) -> anyhow::Result<()> {
    let out_path = dir.join(".harness-command.out");
    let out = std::fs::File::create(&out_path)?;
    clean_env(cmd, dir);
    let status = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out)
        .status()
        .with_context(|| format!("run {cmd:?}"))?;
    let output = std::fs::read_to_string(&out_path).unwrap_or_default();
    std::fs::remove_file(&out_path).ok();
    anyhow::ensure!(status.success(), "{cmd:?} failed ({status}):\n{output}");
    Ok(())
}
