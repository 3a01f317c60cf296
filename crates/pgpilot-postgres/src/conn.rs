//! The agent's own connections to PostgreSQL (monitoring, role creation, a peer's WAL
//! position, the rewind source's checkpoint), made as a configured role: its user name,
//! password and libpq options, over TCP or a unix socket.

use std::time::Duration;

use tokio_postgres::config::{ChannelBinding, SslMode, SslNegotiation};
use tracing::debug;

use crate::tls::{client_config, PgTls};
use crate::{Credentials, PgError, Result};

/// Where to connect: a host name or address, or a unix socket directory (an absolute path).
pub(crate) struct Target<'a> {
    pub host: &'a str,
    pub port: u16,
    /// Database name (`postgres` for everything but logical slot creation).
    pub dbname: &'a str,
}

/// Connects to `target` as `creds` (named `role` in errors), to its database,
/// everything bounded by `timeout`.
pub(crate) async fn connect(
    target: &Target<'_>,
    role: &str,
    creds: &Credentials,
    timeout: Duration,
) -> Result<tokio_postgres::Client> {
    let opt = |k: &str| creds.options.get(k).map(String::as_str);
    let unix = target.host.starts_with('/');
    let mut cfg = tokio_postgres::Config::new();
    if unix {
        cfg.host_path(target.host);
    } else {
        cfg.host(target.host);
    }
    cfg.port(target.port)
        .user(&creds.username)
        .dbname(target.dbname)
        .application_name("pgpilot")
        .connect_timeout(timeout);
    if let Some(pw) = &creds.password {
        cfg.password(pw);
    }
    let key = |k: &str| format!("postgresql.authentication.{role}.{k}");
    // libpq never negotiates TLS over a unix socket, whatever sslmode says; neither do we.
    let mode = if unix {
        "disable"
    } else {
        opt("sslmode").unwrap_or("prefer")
    };
    cfg.ssl_mode(match mode {
        "disable" => SslMode::Disable,
        "allow" | "prefer" => SslMode::Prefer,
        _ => SslMode::Require,
    });
    cfg.channel_binding(match opt("channel_binding") {
        Some("require") => ChannelBinding::Require,
        Some("disable") => ChannelBinding::Disable,
        _ => ChannelBinding::Prefer,
    });
    if opt("sslnegotiation") == Some("direct") && !unix {
        cfg.ssl_negotiation(SslNegotiation::Direct);
    }
    if opt("gssencmode") == Some("require") {
        return Err(PgError::Invalid(format!(
            "{}: require is not supported by pgpilot's own connections (no GSSAPI); use prefer or disable",
            key("gssencmode")
        )));
    }
    let what = format!(
        "connect to {}:{} as {}",
        target.host, target.port, creds.username
    );
    let connected = if mode == "disable" {
        tokio::time::timeout(timeout, cfg.connect(tokio_postgres::NoTls))
            .await
            .map(|r| r.map(|(client, conn)| spawn_connection(client, conn)))
    } else {
        let tls = PgTls::new(client_config(role, &creds.options)?);
        tokio::time::timeout(timeout, cfg.connect(tls))
            .await
            .map(|r| r.map(|(client, conn)| spawn_connection(client, conn)))
    };
    connected
        .map_err(|_| PgError::Timeout(timeout, what.clone()))?
        .map_err(|e| PgError::Sql(format!("{what}: {}", crate::pg::describe(&e))))
}

/// Drives the connection in the background; the client is what the caller keeps.
fn spawn_connection<S, T>(
    client: tokio_postgres::Client,
    conn: tokio_postgres::Connection<S, T>,
) -> tokio_postgres::Client
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            debug!("connection closed: {e}");
        }
    });
    client
}

/// A superuser connection to `host` (a name, an address or a unix socket directory) for a
/// one-off tool (`pgpilot --generate-config`): the agent's own connection rules, TLS included,
/// with `creds`' libpq options.
pub async fn connect_superuser(
    host: &str,
    port: u16,
    dbname: &str,
    creds: &Credentials,
    timeout: Duration,
) -> Result<tokio_postgres::Client> {
    connect(&Target { host, port, dbname }, "superuser", creds, timeout).await
}
