//! SQL: the monitoring connection kept between cycles with its prepared queries, the monitoring
//! query, superuser connections to other members, roles, and quoting.

use std::collections::BTreeMap;

use super::{Postgres, QUERY_TIMEOUT};
use crate::{Lsn, PgError, PgMajor, PgState, Result, Upstream, WalSender};

/// The monitoring connection, and the queries every cycle runs prepared on it once (each then
/// costs one round trip and no parsing or planning in PostgreSQL).
pub(super) struct Monitor {
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

impl Postgres {
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
    pub(super) async fn connect_to(&self, at: &Upstream) -> Result<tokio_postgres::Client> {
        self.connect_db(at, "postgres").await
    }

    /// A superuser connection to database `dbname` of `at`.
    pub(super) async fn connect_db(
        &self,
        at: &Upstream,
        dbname: &str,
    ) -> Result<tokio_postgres::Client> {
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

    /// The local monitoring connection.
    async fn connect(&self) -> Result<tokio_postgres::Client> {
        let local = Upstream {
            host: self.settings.local_host.clone(),
            port: self.settings.port,
        };
        self.connect_to(&local).await
    }

    /// Runs `f` on the monitoring connection, reconnecting once if it is broken.
    pub(super) async fn with_conn<T, F, Fut>(&self, f: F) -> Result<T>
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
    pub(super) async fn prepared_query(&self, sql: &str) -> Result<Vec<tokio_postgres::Row>> {
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

    /// `CHECKPOINT`.
    pub async fn checkpoint(&self) -> Result<()> {
        self.execute("CHECKPOINT").await
    }
}

/// tokio-postgres prints only "db error" for server errors: include the server's message.
pub(super) fn sql_err(e: &tokio_postgres::Error) -> PgError {
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
