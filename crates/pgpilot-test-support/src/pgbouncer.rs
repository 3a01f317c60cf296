//! pgBouncer (Debian's 1.18, `/usr/sbin/pgbouncer`) in transaction pooling mode in front of an
//! address, typically [`HaProxy`](super::HaProxy)'s primary port: client → pgBouncer → HAProxy →
//! PostgreSQL. It listens on 127.0.0.1 only, lets any client in (`auth_type = any`) and logs in
//! to the server as the harness's superuser; user `pgbouncer` may run the admin console's
//! commands (`PAUSE`, `RESUME`). Runs in the foreground as the test's user.

use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use super::cluster::SUPERUSER;
use super::daemon::{installed, Daemon};
use super::free_port;

/// Debian's pgBouncer.
pub const PGBOUNCER_BIN: &str = "/usr/sbin/pgbouncer";

pub struct PgBouncer {
    _daemon: Daemon,
    /// The port clients connect to.
    pub port: u16,
    /// The configuration file's text.
    pub config: String,
}

impl PgBouncer {
    /// Whether pgBouncer is installed; the reason to skip the test when not.
    pub fn installed() -> Result<(), String> {
        installed(Path::new(PGBOUNCER_BIN), "pgbouncer")
    }

    /// The configuration: database `postgres` on `127.0.0.1:server_port`, clients on
    /// `127.0.0.1:port`. No `logfile`: in the foreground it logs to stderr.
    pub fn config(port: u16, server_port: u16) -> String {
        format!(
            "[databases]\n\
             postgres = host=127.0.0.1 port={server_port} dbname=postgres user={} password={}\n\n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             unix_socket_dir =\n\
             auth_type = any\n\
             admin_users = pgbouncer\n\
             pool_mode = transaction\n\
             max_client_conn = 100\n\
             default_pool_size = 10\n\
             ignore_startup_parameters = extra_float_digits\n\
             server_login_retry = 1\n",
            SUPERUSER.0, SUPERUSER.1,
        )
    }

    /// Starts pgBouncer in `<cluster_dir>/pgbouncer/` in front of `127.0.0.1:server_port`;
    /// waits until it accepts connections.
    pub fn start(cluster_dir: &Path, server_port: u16) -> PgBouncer {
        let dir = cluster_dir.join("pgbouncer");
        std::fs::create_dir_all(&dir).expect("create the pgbouncer dir");
        let port = free_port();
        let config = PgBouncer::config(port, server_port);
        let path = dir.join("pgbouncer.ini");
        std::fs::write(&path, &config).expect("write pgbouncer.ini");
        let mut cmd = Command::new(PGBOUNCER_BIN);
        cmd.arg(&path);
        let mut daemon = Daemon::start("pgbouncer", cmd, &dir, dir.join("pgbouncer.log"));
        daemon.wait_ready("listening", || {
            TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(1))
                .is_ok()
        });
        eprintln!("harness: pgbouncer on 127.0.0.1:{port} in front of 127.0.0.1:{server_port}");
        PgBouncer {
            _daemon: daemon,
            port,
            config,
        }
    }

    /// A libpq connection string to pgBouncer's admin console, as its `admin_users`.
    pub fn admin_conninfo(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user=pgbouncer dbname=pgbouncer connect_timeout=2",
            self.port
        )
    }

    /// The databases `SHOW DATABASES` reports paused (its `paused` column is 1).
    pub async fn paused_databases(&self) -> anyhow::Result<Vec<String>> {
        let (client, conn) =
            tokio_postgres::connect(&self.admin_conninfo(), tokio_postgres::NoTls).await?;
        let conn = tokio::spawn(conn);
        let mut paused = Vec::new();
        for msg in client.simple_query("SHOW DATABASES").await? {
            if let tokio_postgres::SimpleQueryMessage::Row(row) = msg {
                if row.try_get("paused")? == Some("1") {
                    paused.push(row.try_get("name")?.unwrap_or_default().to_string());
                }
            }
        }
        drop(client);
        conn.abort();
        Ok(paused)
    }

    /// A libpq connection string to pgBouncer's `postgres` database.
    pub fn conninfo(&self) -> String {
        format!(
            "host=127.0.0.1 port={} user={} dbname=postgres connect_timeout=2",
            self.port, SUPERUSER.0
        )
    }
}
