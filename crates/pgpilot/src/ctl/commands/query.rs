//! `query`: runs SQL on a member chosen by role or name and prints the rows as a table, again
//! every few seconds with `--watch` (`patronictl query`).

use std::time::Duration;

use pgpilot_dcs::Cluster;
use serde_json::Value;

use super::console::out;
use super::members::{any_member, conn_host_port};
use super::schedule::timestamp;
use super::Ctx;
use crate::args::Role;
use crate::table::{Format, Table};

pub(super) struct QueryArgs {
    pub(super) role: Option<Role>,
    pub(super) member: Option<String>,
    pub(super) sql: String,
    pub(super) username: Option<String>,
    pub(super) password: Option<String>,
    pub(super) dbname: Option<String>,
    pub(super) fmt: Format,
    pub(super) delimiter: String,
}

/// Result of one `query`: column names (none for an error line) and rows.
type QueryOutput = (Vec<String>, Vec<Vec<Value>>);

pub(super) async fn query_cmd(
    ctx: &mut Ctx,
    name: &str,
    q: &QueryArgs,
    watch: Option<f64>,
) -> anyhow::Result<()> {
    let c = ctx.cluster(name).await?;
    let mut client: Option<tokio_postgres::Client> = None;
    loop {
        let (columns, rows) = match query_member(&c, &mut client, q).await {
            Ok(r) => r,
            Err(message) => {
                client = None;
                (
                    Vec::new(),
                    vec![vec![Value::from(timestamp(0)), Value::from(message)]],
                )
            }
        };
        let columns = if columns.is_empty() && q.fmt.is_pretty() {
            // prettytable names unnamed columns itself.
            (1..=rows.first().map_or(0, Vec::len))
                .map(|i| format!("Field {i}"))
                .collect()
        } else {
            columns
        };
        let table = Table {
            columns,
            rows,
            right_aligned: &[],
            title: String::new(),
        };
        out(&table.render(q.fmt, &q.delimiter));
        let Some(secs) = watch else {
            return Ok(());
        };
        tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    }
}

/// `query_member`: `Err` is the text of patronictl's error line.
async fn query_member(
    c: &Cluster,
    client: &mut Option<tokio_postgres::Client>,
    q: &QueryArgs,
) -> Result<QueryOutput, String> {
    let sqlstate = |e: &tokio_postgres::Error| {
        let msg = match e.code() {
            Some(c) => c.code().to_string(),
            None => {
                let mut msg = e.to_string();
                let mut src = std::error::Error::source(e);
                while let Some(cause) = src {
                    msg.push_str(&format!(": {cause}"));
                    src = cause.source();
                }
                msg
            }
        };
        format!("ERROR, SQLSTATE: {}", msg.replace('\n', " "))
    };
    if client.as_ref().is_none_or(|c| c.is_closed()) {
        let member = any_member(c, q.role, q.member.as_deref()).map_err(|e| e.to_string())?;
        let no_conn = || match (&q.member, q.role) {
            (Some(m), _) => format!("No connection to member {m} is available"),
            (None, Some(r)) => format!("No connection to role {} is available", r.name()),
            (None, None) => "No connection is available".to_string(),
        };
        let Some(member) = member else {
            return Err(no_conn());
        };
        let (host, port) = conn_host_port(&member).map_err(|e| e.to_string())?;
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let user = q
            .username
            .clone()
            .or_else(|| env("PGUSER"))
            .or_else(|| env("USER"))
            .unwrap_or_else(|| "postgres".into());
        let mut cfg = tokio_postgres::Config::new();
        cfg.host(&host)
            .port(port)
            .user(&user)
            .dbname(
                q.dbname
                    .clone()
                    .or_else(|| env("PGDATABASE"))
                    .unwrap_or(user.clone()),
            )
            .application_name(env("PGAPPNAME").unwrap_or_else(|| "Patroni ctl".into()))
            .connect_timeout(Duration::from_secs(5));
        if let Some(p) = q.password.clone().or_else(|| env("PGPASSWORD")) {
            cfg.password(p);
        }
        let (cl, conn) = cfg
            .connect(tokio_postgres::NoTls)
            .await
            .map_err(|e| sqlstate(&e))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let role = match (&q.member, q.role) {
            (Some(_), _) => Role::Any,
            (None, r) => r.unwrap_or(Role::Leader),
        };
        if matches!(
            role,
            Role::Replica | Role::Standby | Role::StandbyLeader | Role::Primary
        ) {
            let rows = cl
                .simple_query("SELECT pg_catalog.pg_is_in_recovery()")
                .await
                .map_err(|e| sqlstate(&e))?;
            let in_recovery = rows.iter().find_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(|v| v == "t"),
                _ => None,
            });
            let in_recovery = in_recovery.unwrap_or(true);
            let ok = if role == Role::Primary {
                !in_recovery
            } else {
                in_recovery
            };
            if !ok {
                return Err(no_conn());
            }
        }
        *client = Some(cl);
    }
    let Some(cl) = client.as_ref() else {
        return Err("No connection is available".into());
    };
    // Column types of a single statement, to give values the types psycopg would (booleans,
    // numbers); a multi-statement script cannot be prepared and stays text.
    let types: Vec<tokio_postgres::types::Type> = match cl.prepare(&q.sql).await {
        Ok(st) => st.columns().iter().map(|c| c.type_().clone()).collect(),
        Err(_) => Vec::new(),
    };
    let messages = cl.simple_query(&q.sql).await.map_err(|e| sqlstate(&e))?;
    // Like a DB-API cursor: the result of the last statement that returned rows.
    let mut columns: Vec<String> = Vec::new();
    let mut rows: Vec<Vec<Value>> = Vec::new();
    let mut fresh = true;
    for m in messages {
        match m {
            tokio_postgres::SimpleQueryMessage::RowDescription(cols) => {
                columns = cols.iter().map(|c| c.name().to_string()).collect();
                rows.clear();
                fresh = false;
            }
            tokio_postgres::SimpleQueryMessage::Row(r) => {
                if fresh {
                    columns = r.columns().iter().map(|c| c.name().to_string()).collect();
                    rows.clear();
                    fresh = false;
                }
                rows.push(
                    (0..r.len())
                        .map(|i| typed_value(r.get(i), types.get(i)))
                        .collect(),
                );
            }
            tokio_postgres::SimpleQueryMessage::CommandComplete(_) => fresh = true,
            _ => {}
        }
    }
    Ok((columns, rows))
}

/// A text value from the simple query protocol as the Python driver would return it.
fn typed_value(text: Option<&str>, ty: Option<&tokio_postgres::types::Type>) -> Value {
    use tokio_postgres::types::Type;
    let Some(text) = text else {
        return Value::Null;
    };
    let parsed = match ty {
        Some(t) if *t == Type::BOOL => Some(Value::Bool(text == "t")),
        Some(t) if [Type::INT2, Type::INT4, Type::INT8, Type::OID].contains(t) => {
            text.parse::<i64>().ok().map(Value::from)
        }
        Some(t) if *t == Type::FLOAT4 || *t == Type::FLOAT8 => text
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number),
        _ => None,
    };
    parsed.unwrap_or_else(|| Value::from(text))
}
