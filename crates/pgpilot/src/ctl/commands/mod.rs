//! The commands: each reads the cluster from the DCS, asks for confirmation where patronictl
//! does, then either writes the DCS directly (`edit-config`, `remove`, the failover fallback) or
//! calls members' REST APIs. Messages are patronictl's, word for word.

mod console;
mod members;
mod schedule;

use std::collections::HashMap;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use pgpilot_dcs::etcd::{EtcdDcs, EtcdOptions};
use pgpilot_dcs::{Cluster, Dcs, Member, PATRONI_COMPAT_VERSION};
use reqwest::Method;
use serde_json::{json, Map, Value};

use crate::args::{Command, FlushTarget, OutFormat, Role};
use crate::config::{CtlConfig, DEFAULT_LOOP_WAIT};
use crate::edit;
use crate::http::{Reply, Rest, LONG, SHORT};
use crate::list::{self, GlobalConfig};
use crate::table::{Format, Table};
use crate::yaml;

pub(crate) use console::Aborted;
use console::{clear_screen, confirm, echo, out, prompt};
use members::{
    any_member, bare_member, check_response, confirm_members_action, conn_host_port, get_members,
    leader_member, members_leader_first, members_with_role, output_members,
};
use schedule::{next_hour_example, parse_scheduled, timestamp};

/// `postgres_version_to_int` validation (`X.Y` for 10+, `X.Y.Z`).
fn check_pg_version(v: &str) -> anyhow::Result<()> {
    let bad = || anyhow!("Invalid PostgreSQL version format: X.Y or X.Y.Z is accepted: {v}");
    let parts: Vec<u32> = v
        .split('.')
        .map(|p| p.parse::<u32>().map_err(|_| bad()))
        .collect::<anyhow::Result<_>>()?;
    if parts.len() < 2 || parts.len() == 2 && parts[0] < 10 || parts.len() > 3 {
        return Err(bad());
    }
    Ok(())
}

/// `format_pg_version(160004)` -> `16.4`, `90624` -> `9.6.24`.
pub fn format_pg_version(v: u64) -> String {
    if v < 100_000 {
        format!("{}.{}.{}", v / 10000, v / 100 % 100, v % 100)
    } else {
        format!("{}.{}", v / 10000, v % 100)
    }
}

/// Shared state of one invocation: configuration, REST client, DCS clients per cluster.
pub struct Ctx {
    pub cfg: CtlConfig,
    rest: Rest,
    dcs: HashMap<String, Arc<EtcdDcs>>,
}

impl Ctx {
    pub fn new(cfg: CtlConfig) -> anyhow::Result<Ctx> {
        let rest = Rest::new(
            cfg.rest_auth.clone(),
            &pgpilot_api::ClientTls {
                cacert: cfg.cacert.clone(),
                certfile: cfg.certfile.clone(),
                keyfile: cfg.keyfile.clone(),
                insecure: cfg.insecure,
            },
        )?;
        Ok(Ctx {
            cfg,
            rest,
            dcs: HashMap::new(),
        })
    }

    fn check_group(&self, group: Option<i64>) -> anyhow::Result<()> {
        if group.is_some() || self.cfg.citus_group.is_some() {
            bail!("Citus clusters are not supported by pgpilotctl");
        }
        Ok(())
    }

    fn cluster_name(&self, given: Option<String>) -> anyhow::Result<String> {
        given.or_else(|| self.cfg.scope.clone()).ok_or_else(|| {
            anyhow!("Missing argument 'CLUSTER_NAME' (and no scope in the configuration)")
        })
    }

    /// The DCS client for cluster `scope` (connected once per invocation).
    async fn dcs(&mut self, scope: &str) -> anyhow::Result<Arc<EtcdDcs>> {
        if let Some(d) = self.dcs.get(scope) {
            return Ok(d.clone());
        }
        if self.cfg.endpoints.is_empty() {
            bail!("Can not find suitable configuration of distributed configuration store");
        }
        let opts = EtcdOptions {
            endpoints: self.cfg.endpoints.clone(),
            namespace: self.cfg.namespace.clone(),
            scope: scope.to_string(),
            name: "pgpilotctl".into(),
            ttl: Duration::from_secs(30),
            retry_timeout: Duration::from_secs(10),
            loop_wait: Duration::from_secs(DEFAULT_LOOP_WAIT),
            username: self.cfg.etcd_username.clone(),
            password: self.cfg.etcd_password.clone(),
            discover_members: !self.cfg.use_proxies,
        };
        // EtcdDcs::connect retries forever while etcd is down (the agent's behaviour); a CLI
        // gives up after one retry_timeout-sized budget.
        let dcs = tokio::time::timeout(Duration::from_secs(15), EtcdDcs::connect(opts))
            .await
            .map_err(|_| {
                anyhow!(
                    "DCS is not accessible: no etcd answered at {}",
                    self.cfg.endpoints.join(",")
                )
            })??;
        let dcs = Arc::new(dcs);
        self.dcs.insert(scope.to_string(), dcs.clone());
        Ok(dcs)
    }

    async fn cluster(&mut self, scope: &str) -> anyhow::Result<Cluster> {
        let dcs = self.dcs(scope).await?;
        Ok(dcs.cluster_fresh().await?)
    }

    async fn request(
        &self,
        m: &Member,
        method: Method,
        endpoint: Option<&str>,
        body: Option<&Value>,
        timeout: Duration,
    ) -> anyhow::Result<Reply> {
        self.rest.request(m, method, endpoint, body, timeout).await
    }
}

/// Runs one command.
pub async fn run(
    ctx: &mut Ctx,
    command: Command,
    invoked_as_patronictl: bool,
) -> anyhow::Result<()> {
    match command {
        Command::List {
            cluster_names,
            group,
            extended,
            ts,
            fmt,
            watch,
        } => {
            ctx.check_group(group)?;
            list_cmd(
                ctx,
                cluster_names,
                extended,
                ts,
                fmt.to_format(),
                watch.interval(),
            )
            .await
        }
        Command::Topology {
            cluster_names,
            group,
            watch,
        } => {
            ctx.check_group(group)?;
            list_cmd(
                ctx,
                cluster_names,
                false,
                false,
                Format::Topology,
                watch.interval(),
            )
            .await
        }
        Command::Dsn {
            cluster_name,
            group,
            role,
            member,
        } => {
            ctx.check_group(group)?;
            let name = ctx.cluster_name(cluster_name)?;
            let c = ctx.cluster(&name).await?;
            let m = any_member(&c, role, member.as_deref())?
                .ok_or_else(|| anyhow!("Can not find a suitable member"))?;
            let (host, port) = conn_host_port(&m)?;
            echo(&format!("host={host} port={port}"));
            Ok(())
        }
        Command::Query {
            cluster_name,
            group,
            fmt,
            file,
            password,
            username,
            watch,
            role,
            member,
            delimiter,
            command,
            dbname,
        } => {
            ctx.check_group(group)?;
            let sql = match (file, command) {
                (Some(_), Some(_)) => bail!("--file and --command are mutually exclusive options"),
                (Some(f), None) => std::fs::read_to_string(&f)
                    .with_context(|| format!("can not read {}", f.display()))?,
                (None, Some(c)) => c,
                (None, None) => bail!("You need to specify either --command or --file"),
            };
            if role.is_some() && member.is_some() {
                bail!("--role and --member are mutually exclusive options");
            }
            let password = if password {
                Some(prompt("Password", None)?)
            } else {
                None
            };
            let name = ctx.cluster_name(cluster_name)?;
            let q = QueryArgs {
                role,
                member,
                sql,
                username,
                password,
                dbname,
                fmt: fmt.to_format(),
                delimiter,
            };
            query_cmd(ctx, &name, &q, watch.interval()).await
        }
        Command::Remove {
            cluster_name,
            group,
            fmt,
        } => {
            ctx.check_group(group)?;
            remove_cmd(ctx, &cluster_name, fmt).await
        }
        Command::Reload {
            cluster_name,
            member_names,
            group,
            role,
            force,
        } => {
            ctx.check_group(group)?;
            reload_cmd(ctx, &cluster_name, &member_names, role, force).await
        }
        Command::Restart {
            cluster_name,
            member_names,
            group,
            role,
            p_any,
            scheduled,
            pg_version,
            pending,
            timeout,
            force,
        } => {
            ctx.check_group(group)?;
            let r = RestartArgs {
                role,
                p_any,
                scheduled,
                version: pg_version,
                pending,
                timeout,
                force,
            };
            restart_cmd(ctx, &cluster_name, &member_names, r).await
        }
        Command::Reinit {
            cluster_name,
            member_names,
            group,
            force,
            from_leader,
            wait,
        } => {
            ctx.check_group(group)?;
            reinit_cmd(ctx, &cluster_name, &member_names, force, from_leader, wait).await
        }
        Command::Failover {
            cluster_name,
            group,
            candidate,
            force,
        } => {
            ctx.check_group(group)?;
            let name = ctx.cluster_name(cluster_name)?;
            failover_cmd(ctx, "failover", &name, candidate, force, None, None).await
        }
        Command::Switchover {
            cluster_name,
            group,
            leader,
            candidate,
            scheduled,
            force,
        } => {
            ctx.check_group(group)?;
            let name = ctx.cluster_name(cluster_name)?;
            failover_cmd(
                ctx,
                "switchover",
                &name,
                candidate,
                force,
                leader,
                scheduled,
            )
            .await
        }
        Command::Flush {
            cluster_name,
            args,
            group,
            role,
            force,
        } => {
            ctx.check_group(group)?;
            let (members, target) = crate::args::split_flush_args(&args).map_err(|e| anyhow!(e))?;
            flush_cmd(ctx, &cluster_name, &members, target, role, force).await
        }
        Command::Pause {
            cluster_name,
            group,
            wait,
        } => {
            ctx.check_group(group)?;
            let name = ctx.cluster_name(cluster_name)?;
            toggle_pause(ctx, &name, true, wait).await
        }
        Command::Resume {
            cluster_name,
            group,
            wait,
        } => {
            ctx.check_group(group)?;
            let name = ctx.cluster_name(cluster_name)?;
            toggle_pause(ctx, &name, false, wait).await
        }
        Command::EditConfig {
            cluster_name,
            group,
            quiet,
            kvpairs,
            pgkvpairs,
            apply_filename,
            replace_filename,
            force,
        } => {
            ctx.check_group(group)?;
            let name = ctx.cluster_name(cluster_name)?;
            let e = EditArgs {
                quiet,
                kvpairs,
                pgkvpairs,
                apply_filename,
                replace_filename,
                force,
            };
            edit_config_cmd(ctx, &name, e).await
        }
        Command::ShowConfig {
            cluster_name,
            group,
        } => {
            ctx.check_group(group)?;
            let name = ctx.cluster_name(cluster_name)?;
            let c = ctx.cluster(&name).await?;
            if let Some(cfg) = &c.config {
                echo(&yaml::dump(&Value::Object(cfg.data.clone()), false));
            }
            Ok(())
        }
        Command::Version {
            cluster_name,
            member_names,
            group,
        } => {
            if invoked_as_patronictl {
                echo(&format!("patronictl version {PATRONI_COMPAT_VERSION}"));
            } else {
                echo(&format!("pgpilotctl version {}", env!("CARGO_PKG_VERSION")));
            }
            let Some(name) = cluster_name else {
                return Ok(());
            };
            ctx.check_group(group)?;
            echo("");
            let c = ctx.cluster(&name).await?;
            for m in members_with_role(&c, Role::Any) {
                if m.data.api_url.is_empty()
                    || !(member_names.is_empty() || member_names.contains(&m.name))
                {
                    continue;
                }
                match ctx.request(&m, Method::GET, None, None, SHORT).await {
                    Ok(r) => {
                        let data: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
                        let version = data
                            .get("patroni")
                            .and_then(|p| p.get("version"))
                            .map(crate::table::py_str)
                            .unwrap_or_else(|| "None".into());
                        let pg = data
                            .get("server_version")
                            .and_then(Value::as_u64)
                            .filter(|v| *v > 0)
                            .map(|v| format!(" PostgreSQL {}", format_pg_version(v)))
                            .unwrap_or_default();
                        echo(&format!("{}: Patroni {version}{pg}", m.name));
                    }
                    Err(e) => echo(&format!("{}: failed to get version: {e:#}", m.name)),
                }
            }
            Ok(())
        }
        Command::History {
            cluster_name,
            group,
            fmt,
        } => {
            ctx.check_group(group)?;
            let name = ctx.cluster_name(cluster_name)?;
            let c = ctx.cluster(&name).await?;
            out(&list::render_history(&c, fmt.to_format()));
            Ok(())
        }
        Command::DemoteCluster {
            cluster_name,
            force,
            host,
            port,
            restore_command,
            primary_slot_name,
        } => {
            if host.is_none() && port.is_none() && restore_command.is_none() {
                bail!("At least --host, --port or --restore-command should be specified");
            }
            let mut data = Map::new();
            if let Some(h) = host.filter(|h| !h.is_empty()) {
                data.insert("host".into(), Value::from(h));
            }
            if let Some(p) = port.filter(|p| *p != 0) {
                data.insert("port".into(), Value::from(p));
            }
            if let Some(s) = primary_slot_name.filter(|s| !s.is_empty()) {
                data.insert("primary_slot_name".into(), Value::from(s));
            }
            if let Some(r) = restore_command.filter(|r| !r.is_empty()) {
                data.insert("restore_command".into(), Value::from(r));
            }
            let name = ctx.cluster_name(cluster_name)?;
            change_cluster_role(ctx, &name, force, Some(data)).await
        }
        Command::PromoteCluster {
            cluster_name,
            force,
        } => {
            let name = ctx.cluster_name(cluster_name)?;
            change_cluster_role(ctx, &name, force, None).await
        }
    }
}

async fn list_cmd(
    ctx: &mut Ctx,
    mut names: Vec<String>,
    extended: bool,
    ts: bool,
    fmt: Format,
    watch: Option<f64>,
) -> anyhow::Result<()> {
    if names.is_empty() {
        match &ctx.cfg.scope {
            Some(s) => names.push(s.clone()),
            None => {
                tracing::warn!("Listing members: No cluster names were provided");
                return Ok(());
            }
        }
    }
    if watch.is_some() {
        clear_screen();
    }
    loop {
        if ts {
            echo(&timestamp(0));
        }
        for name in &names {
            let c = ctx.cluster(name).await?;
            out(&list::render_members(&c, name, extended, fmt));
        }
        let Some(secs) = watch else {
            return Ok(());
        };
        tokio::time::sleep(Duration::from_secs_f64(secs)).await;
        clear_screen();
    }
}

struct QueryArgs {
    role: Option<Role>,
    member: Option<String>,
    sql: String,
    username: Option<String>,
    password: Option<String>,
    dbname: Option<String>,
    fmt: Format,
    delimiter: String,
}

/// Result of one `query`: column names (none for an error line) and rows.
type QueryOutput = (Vec<String>, Vec<Vec<Value>>);

async fn query_cmd(
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

async fn remove_cmd(ctx: &mut Ctx, name: &str, fmt: OutFormat) -> anyhow::Result<()> {
    let dcs = ctx.dcs(name).await?;
    let c = dcs.cluster_fresh().await?;
    output_members(&c, name, fmt.to_format());
    if prompt("Please confirm the cluster name to remove", None)? != name {
        bail!("Cluster names specified do not match");
    }
    let message = "Yes I am aware";
    let typed = prompt(
        &format!(
            "You are about to remove all information in DCS for {name}, please type: \"{message}\""
        ),
        None,
    )?;
    if typed != message {
        bail!("You did not exactly type \"{message}\"");
    }
    if let Some(leader) = c.leader_name() {
        let typed = prompt(
            "This cluster currently is healthy. Please specify the leader name to continue",
            None,
        )?;
        if typed != leader {
            bail!("You did not specify the current leader of the cluster");
        }
    }
    dcs.delete_cluster().await?;
    Ok(())
}

async fn reload_cmd(
    ctx: &mut Ctx,
    name: &str,
    names: &[String],
    role: Role,
    force: bool,
) -> anyhow::Result<()> {
    let c = ctx.cluster(name).await?;
    let members = get_members(&c, name, names, role, force, "reload", true)?;
    let loop_wait = GlobalConfig::from_cluster(&c).loop_wait(DEFAULT_LOOP_WAIT);
    for m in members {
        let r = ctx
            .request(&m, Method::POST, Some("reload"), None, SHORT)
            .await?;
        match r.status {
            200 => echo(&format!("No changes to apply on member {}", m.name)),
            202 => echo(&format!(
                "Reload request received for member {} and will be processed within {loop_wait} seconds",
                m.name
            )),
            s => echo(&format!(
                "Failed: reload for member {}, status code={s}, ({})",
                m.name, r.body
            )),
        }
    }
    Ok(())
}

struct RestartArgs {
    role: Role,
    p_any: bool,
    scheduled: Option<String>,
    version: Option<String>,
    pending: bool,
    timeout: Option<String>,
    force: bool,
}

/// A pseudo-random index for `--any` (no cryptographic need).
fn random_index(len: usize) -> usize {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as usize);
    if len == 0 {
        0
    } else {
        (nanos ^ std::process::id() as usize) % len
    }
}

async fn restart_cmd(
    ctx: &mut Ctx,
    name: &str,
    names: &[String],
    a: RestartArgs,
) -> anyhow::Result<()> {
    let c = ctx.cluster(name).await?;
    let mut members = get_members(&c, name, names, a.role, a.force, "restart", false)?;
    let mut scheduled = a.scheduled;
    if scheduled.is_none() && !a.force {
        scheduled = Some(prompt(
            &format!(
                "When should the restart take place (e.g. {}) ",
                next_hour_example()
            ),
            Some("now"),
        )?);
    }
    let scheduled_at = parse_scheduled(scheduled.as_deref())?;
    let mut content = Map::new();
    if a.pending {
        content.insert("restart_pending".into(), Value::Bool(true));
        // A scheduled restart decides at the scheduled time which members still need it.
        if scheduled_at.is_none() {
            members.retain(|m| m.data.pending_restart.unwrap_or(false));
        }
    }
    if a.p_any && !members.is_empty() {
        let keep = members.swap_remove(random_index(members.len()));
        members = vec![keep];
    }
    confirm_members_action(
        &members,
        a.force,
        "restart",
        scheduled_at.as_deref(),
        a.pending,
    )?;
    let mut version = a.version;
    if version.is_none() && !a.force {
        version = Some(prompt(
            "Restart if the PostgreSQL version is less than provided (e.g. 9.5.2) ",
            Some(""),
        )?);
    }
    if let Some(v) = version.filter(|v| !v.is_empty()) {
        check_pg_version(&v)?;
        content.insert("postgres_version".into(), Value::from(v));
    }
    if let Some(at) = &scheduled_at {
        if GlobalConfig::from_cluster(&c).is_paused() {
            bail!("Can't schedule restart in the paused state");
        }
        content.insert("schedule".into(), Value::from(at.clone()));
    }
    if let Some(t) = a.timeout {
        content.insert("timeout".into(), Value::from(t));
    }
    let body = Value::Object(content);
    for m in members {
        if body.get("schedule").is_some()
            && a.force
            && m.data
                .scheduled_restart
                .as_ref()
                .is_some_and(|s| !s.is_empty())
        {
            let r = ctx
                .request(&m, Method::DELETE, Some("restart"), None, SHORT)
                .await?;
            check_response(&r, &m.name, "flush scheduled restart", true);
        }
        let r = ctx
            .request(&m, Method::POST, Some("restart"), Some(&body), LONG)
            .await?;
        match r.status {
            200 => echo(&format!("Success: restart on member {}", m.name)),
            202 => echo(&format!("Success: restart scheduled on member {}", m.name)),
            409 => echo(&format!(
                "Failed: another restart is already scheduled on member {}",
                m.name
            )),
            s => echo(&format!(
                "Failed: restart for member {}, status code={s}, ({})",
                m.name, r.body
            )),
        }
    }
    Ok(())
}

async fn reinit_cmd(
    ctx: &mut Ctx,
    name: &str,
    names: &[String],
    force: bool,
    from_leader: bool,
    wait: bool,
) -> anyhow::Result<()> {
    let c = ctx.cluster(name).await?;
    let members = get_members(&c, name, names, Role::Replica, force, "reinitialize", true)?;
    let mut waiting: Vec<Member> = Vec::new();
    for m in members {
        let mut body = json!({"force": force, "from_leader": from_leader});
        let started = loop {
            let r = ctx
                .request(&m, Method::POST, Some("reinitialize"), Some(&body), LONG)
                .await?;
            let started = check_response(&r, &m.name, "reinitialize", false);
            if !started
                && r.body.ends_with(" already in progress")
                && !force
                && confirm("Do you want to cancel it and reinitialize anyway?")?
            {
                body["force"] = Value::Bool(true);
                continue;
            }
            break started;
        };
        if started && wait {
            waiting.push(m);
        }
    }
    let mut last_display: Vec<String> = Vec::new();
    while !waiting.is_empty() {
        let names: Vec<String> = waiting.iter().map(|m| m.name.clone()).collect();
        if names != last_display {
            echo(&format!(
                "Waiting for reinitialize to complete on: {}",
                names.join(", ")
            ));
            last_display = names;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut still = Vec::new();
        for m in waiting {
            let r = ctx
                .request(&m, Method::GET, Some("patroni"), None, SHORT)
                .await?;
            let data: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
            if data.get("state").and_then(Value::as_str) != Some("creating replica") {
                echo(&format!("Reinitialize is completed on: {}", m.name));
            } else {
                still.push(m);
            }
        }
        waiting = still;
    }
    Ok(())
}

fn title(action: &str) -> String {
    let mut c = action.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// `_do_failover_or_switchover`.
async fn failover_cmd(
    ctx: &mut Ctx,
    action: &str,
    name: &str,
    mut candidate: Option<String>,
    force: bool,
    mut switchover_leader: Option<String>,
    mut switchover_scheduled: Option<String>,
) -> anyhow::Result<()> {
    let dcs = ctx.dcs(name).await?;
    let mut c = dcs.cluster_fresh().await?;
    echo("Current cluster topology");
    output_members(&c, name, Format::Pretty);
    let gc = GlobalConfig::from_cluster(&c);
    let cluster_leader = c.leader_name().map(str::to_string);

    if action == "switchover" {
        let Some(leader) = &cluster_leader else {
            bail!("This cluster has no leader");
        };
        if switchover_leader.is_none() {
            switchover_leader = Some(if force {
                leader.clone()
            } else {
                let p = if gc.is_standby_cluster() {
                    "Standby Leader"
                } else {
                    "Primary"
                };
                prompt(p, Some(leader))?
            });
        }
        if switchover_leader.as_ref() != Some(leader) {
            bail!(
                "Member {} is not the leader of cluster {name}",
                switchover_leader.unwrap_or_default()
            );
        }
    }

    let mut candidates: Vec<String> = c
        .members
        .iter()
        .filter(|m| Some(&m.name) != cluster_leader.as_ref() && !m.data.nofailover())
        .map(|m| m.name.clone())
        .collect();
    candidates.sort();
    if candidates.is_empty() {
        bail!("No candidates found to {action} to");
    }
    if candidate.is_none() && !force {
        let listed: Vec<String> = candidates.iter().map(|n| format!("'{n}'")).collect();
        candidate = Some(prompt(
            &format!("Candidate [{}]", listed.join(", ")),
            Some(""),
        )?);
    }
    let candidate = candidate.filter(|c| !c.is_empty());
    if action == "failover" && candidate.is_none() {
        bail!("Failover could be performed only to a specific candidate");
    }
    if let Some(cand) = &candidate {
        if !candidates.contains(cand) {
            if Some(cand) == cluster_leader.as_ref() {
                bail!("Member {cand} is already the leader of cluster {name}");
            }
            bail!("Member {cand} does not exist in cluster {name} or is tagged as nofailover");
        }
    }
    let sync = list::sync_members(&c);
    if !force && action == "failover" && gc.is_synchronous_mode() && !sync.is_empty() {
        let cand = candidate.clone().unwrap_or_default();
        let leader_matches = c
            .sync
            .as_ref()
            .and_then(|s| s.leader.as_deref())
            .is_some_and(|l| l.eq_ignore_ascii_case(&cand));
        if !sync.contains(&cand.to_lowercase())
            && !leader_matches
            && !confirm(&format!(
                "Are you sure you want to failover to the asynchronous node {cand}?"
            ))?
        {
            bail!("Aborting {action}");
        }
    }

    let mut scheduled_at = None;
    if action == "switchover" {
        if switchover_scheduled.is_none() && !force {
            switchover_scheduled = Some(prompt(
                &format!(
                    "When should the switchover take place (e.g. {} ) ",
                    next_hour_example()
                ),
                Some("now"),
            )?);
        }
        scheduled_at = parse_scheduled(switchover_scheduled.as_deref())?;
        if scheduled_at.is_some() && gc.is_paused() {
            bail!("Can't schedule switchover in the paused state");
        }
    }

    let mut value = Map::new();
    value.insert(
        "candidate".into(),
        candidate.clone().map_or(Value::Null, Value::from),
    );
    if action == "switchover" {
        value.insert(
            "leader".into(),
            switchover_leader.clone().map_or(Value::Null, Value::from),
        );
    }
    if let Some(at) = &scheduled_at {
        value.insert("scheduled_at".into(), Value::from(at.clone()));
    }
    let value = Value::Object(value);

    if !force {
        let demote = cluster_leader
            .as_ref()
            .map(|l| format!(", demoting current leader {l}"))
            .unwrap_or_default();
        if let Some(at) = &scheduled_at {
            if !confirm(&format!(
                "Are you sure you want to schedule switchover of cluster {name} at {at}{demote}?"
            ))? {
                bail!("Aborting scheduled {action}");
            }
        } else if !confirm(&format!(
            "Are you sure you want to {action} cluster {name}{demote}?"
        ))? {
            bail!("Aborting {action}");
        }
    }

    // The leader's API (else the candidate's) performs it; the DCS key is the fallback.
    let target = match &cluster_leader {
        Some(_) => leader_member(&c),
        None => candidate.as_deref().and_then(|n| c.member(n).cloned()),
    };
    let result = match &target {
        Some(m) => {
            let mut r = ctx
                .request(m, Method::POST, Some(action), Some(&value), LONG)
                .await;
            if let Ok(reply) = &r {
                if reply.status == 501
                    && action == "switchover"
                    && reply
                        .body
                        .contains("Server does not support this operation")
                {
                    r = ctx
                        .request(m, Method::POST, Some("failover"), Some(&value), LONG)
                        .await;
                }
            }
            r
        }
        None => Err(anyhow!("no member to send the request to")),
    };
    match result {
        Ok(r) if r.status == 200 || r.status == 202 => {
            c = dcs.cluster_fresh().await?;
            echo(&format!("{} {}", timestamp(6), r.body));
        }
        Ok(r) => {
            if r.body.contains("status unknown") {
                echo(&format!(
                    "{} result unknown, details: {}, {}",
                    title(action),
                    r.status,
                    r.body
                ));
            } else {
                echo(&format!(
                    "{} failed, details: {}, {}",
                    title(action),
                    r.status,
                    r.body
                ));
            }
            return Ok(());
        }
        Err(e) => {
            tracing::warn!("{e:#}");
            echo(&format!(
                "{} Could not {action} using Patroni api, falling back to DCS",
                timestamp(6)
            ));
            let mut f = Map::new();
            if let Some(l) = &switchover_leader {
                f.insert("leader".into(), Value::from(l.clone()));
            }
            if let Some(cand) = &candidate {
                f.insert("member".into(), Value::from(cand.clone()));
            }
            if let Some(at) = &scheduled_at {
                f.insert("scheduled_at".into(), Value::from(at.clone()));
            }
            dcs.set_failover(&yaml::py_json_compact(&Value::Object(f)), None)
                .await?;
        }
    }
    output_members(&c, name, Format::Pretty);
    Ok(())
}

async fn flush_cmd(
    ctx: &mut Ctx,
    name: &str,
    names: &[String],
    target: FlushTarget,
    role: Role,
    force: bool,
) -> anyhow::Result<()> {
    let dcs = ctx.dcs(name).await?;
    let c = dcs.cluster_fresh().await?;
    match target {
        FlushTarget::Restart => {
            for m in get_members(&c, name, names, role, force, "flush", true)? {
                if m.data
                    .scheduled_restart
                    .as_ref()
                    .is_some_and(|s| !s.is_empty())
                {
                    let r = ctx
                        .request(&m, Method::DELETE, Some("restart"), None, SHORT)
                        .await?;
                    check_response(&r, &m.name, "flush scheduled restart", false);
                } else {
                    echo(&format!("No scheduled restart for member {}", m.name));
                }
            }
        }
        FlushTarget::Switchover => {
            let Some(failover) = c.failover.as_ref().filter(|f| f.scheduled_at.is_some()) else {
                echo("No pending scheduled switchover");
                return Ok(());
            };
            for m in members_leader_first(&c) {
                match ctx
                    .request(&m, Method::DELETE, Some("switchover"), None, SHORT)
                    .await
                {
                    Ok(r) if r.status == 200 || r.status == 404 => {
                        let prefix = if r.status == 200 { "Success" } else { "Failed" };
                        echo(&format!("{prefix}: {}", r.body));
                        return Ok(());
                    }
                    Ok(r) => echo(&format!(
                        "Failed: member={}, status_code={}, ({})",
                        m.name, r.status, r.body
                    )),
                    Err(e) => {
                        tracing::warn!("{e:#}");
                        tracing::warn!("Member {} is not accessible", m.name);
                    }
                }
            }
            tracing::warn!("Failing over to DCS");
            echo(&format!(
                "{} Could not find any accessible member of cluster {name}",
                timestamp(6)
            ));
            dcs.set_failover("{}", Some(failover.version)).await?;
        }
    }
    Ok(())
}

async fn toggle_pause(ctx: &mut Ctx, name: &str, paused: bool, wait: bool) -> anyhow::Result<()> {
    let dcs = ctx.dcs(name).await?;
    let c = dcs.cluster_fresh().await?;
    if GlobalConfig::from_cluster(&c).is_paused() == paused {
        bail!(
            "Cluster is {} paused",
            if paused { "already" } else { "not" }
        );
    }
    let (verb, done) = if paused {
        ("pause", "paused")
    } else {
        ("resume", "resumed")
    };
    let body = json!({"pause": if paused { Value::Bool(true) } else { Value::Null }});
    for m in members_leader_first(&c) {
        let r = match ctx
            .request(&m, Method::PATCH, Some("config"), Some(&body), SHORT)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("{e:#}");
                tracing::warn!("Member {} is not accessible", m.name);
                continue;
            }
        };
        if r.status == 200 {
            if wait {
                wait_until_pause_is_applied(&dcs, paused, &c).await?;
            } else {
                echo(&format!("Success: cluster management is {done}"));
            }
        } else {
            echo(&format!(
                "Failed: {verb} cluster management status code={}, ({})",
                r.status, r.body
            ));
        }
        return Ok(());
    }
    bail!("Can not find accessible cluster member")
}

async fn wait_until_pause_is_applied(
    dcs: &EtcdDcs,
    paused: bool,
    old: &Cluster,
) -> anyhow::Result<()> {
    echo(&format!(
        "'{}' request sent, waiting until it is recognized by all nodes",
        if paused { "pause" } else { "resume" }
    ));
    let versions: HashMap<&str, i64> = old
        .members
        .iter()
        .filter(|m| !m.data.api_url.is_empty())
        .map(|m| (m.name.as_str(), m.version))
        .collect();
    let loop_wait = GlobalConfig::from_cluster(old).loop_wait(DEFAULT_LOOP_WAIT);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(loop_wait + 1);
    let applied = |c: &Cluster| {
        c.members
            .iter()
            .filter(|m| versions.contains_key(m.name.as_str()))
            .all(|m| m.data.pause.unwrap_or(false) == paused)
    };
    let mut cluster = dcs.cluster_fresh().await?;
    while !applied(&cluster) {
        if tokio::time::Instant::now() >= deadline {
            let remaining: Vec<&str> = cluster
                .members
                .iter()
                .filter(|m| {
                    m.data.pause.unwrap_or(false) != paused
                        && versions
                            .get(m.name.as_str())
                            .is_some_and(|v| *v != m.version)
                })
                .map(|m| m.name.as_str())
                .collect();
            if !remaining.is_empty() {
                echo(&format!(
                    "{} members didn't recognized pause state after {loop_wait} seconds",
                    remaining.join(", ")
                ));
                return Ok(());
            }
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        cluster = dcs.cluster_fresh().await?;
    }
    echo(&format!(
        "Success: cluster management is {}",
        if paused { "paused" } else { "resumed" }
    ));
    Ok(())
}

struct EditArgs {
    quiet: bool,
    kvpairs: Vec<String>,
    pgkvpairs: Vec<String>,
    apply_filename: Option<String>,
    replace_filename: Option<String>,
    force: bool,
}

fn read_yaml_source(filename: &str) -> anyhow::Result<Value> {
    let text = if filename == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
            .context("can not read stdin")?;
        s
    } else {
        std::fs::read_to_string(filename).with_context(|| format!("can not read {filename}"))?
    };
    Ok(pgpilot_config::yaml::parse(&text, filename)?)
}

/// `apply_yaml_file`: `patch_config` of the file into a copy of `data`.
fn apply_yaml_file(data: &Value, filename: &str) -> anyhow::Result<Value> {
    let mut changed = data.as_object().cloned().unwrap_or_default();
    match read_yaml_source(filename)? {
        Value::Object(patch) => {
            edit::patch_config(&mut changed, &patch);
        }
        other => bail!("{filename}: expected a YAML mapping, got {other}"),
    }
    Ok(Value::Object(changed))
}

fn invoke_editor(before: &str, cluster_name: &str) -> anyhow::Result<(String, Value)> {
    let editor = std::env::var("EDITOR")
        .ok()
        .filter(|e| !e.is_empty())
        .or_else(|| {
            ["editor", "vi"].iter().find_map(|e| {
                std::env::var_os("PATH").and_then(|paths| {
                    std::env::split_paths(&paths)
                        .map(|p| p.join(e))
                        .find(|p| p.is_file())
                        .map(|p| p.display().to_string())
                })
            })
        })
        .ok_or_else(|| {
            anyhow!("EDITOR environment variable is not set. editor or vi are not available")
        })?;
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!("{}-config-", cluster_name.replace('/', "_")))
        .suffix(".yaml")
        .tempfile()
        .context("can not create a temporary file")?;
    tmp.write_all(before.as_bytes())
        .and_then(|()| tmp.flush())
        .context("can not write the temporary file")?;
    let status = std::process::Command::new(&editor)
        .arg(tmp.path())
        .status()
        .with_context(|| format!("can not run {editor}"))?;
    if !status.success() {
        bail!(
            "Editor exited with return code {}",
            status.code().unwrap_or(-1)
        );
    }
    let after = std::fs::read_to_string(tmp.path()).context("can not read the edited file")?;
    let data = pgpilot_config::yaml::parse(&after, &tmp.path().display().to_string())?;
    Ok((after, data))
}

async fn edit_config_cmd(ctx: &mut Ctx, name: &str, a: EditArgs) -> anyhow::Result<()> {
    let dcs = ctx.dcs(name).await?;
    let c = dcs.cluster_fresh().await?;
    let Some(config) = &c.config else {
        bail!("The config key does not exist in the cluster {name}");
    };
    let original = Value::Object(config.data.clone());
    let before = yaml::dump(&original, false);
    let mut after: Option<String> = None;
    let mut changed = original.clone();
    if let Some(f) = &a.replace_filename {
        changed = apply_yaml_file(&json!({}), f)?;
        after = Some(yaml::dump(&changed, false));
    }
    if let Some(f) = &a.apply_filename {
        changed = apply_yaml_file(&changed, f)?;
        after = Some(yaml::dump(&changed, false));
    }
    if !a.kvpairs.is_empty() || !a.pgkvpairs.is_empty() {
        let pairs: Vec<String> = a
            .kvpairs
            .iter()
            .cloned()
            .chain(
                a.pgkvpairs
                    .iter()
                    .map(|p| format!("postgresql.parameters.{}", p.trim_start())),
            )
            .collect();
        changed = edit::apply_config_changes(&changed, &pairs)?;
        after = Some(yaml::dump(&changed, false));
    }
    let after = match after {
        Some(a) => a,
        None => {
            let (text, data) = invoke_editor(&before, name)?;
            changed = data;
            text
        }
    };
    if changed == original {
        if !a.quiet {
            echo("Not changed");
        }
        return Ok(());
    }
    if !a.quiet {
        for line in edit::unified_diff(&before, &after) {
            echo(&line);
        }
    }
    let from_stdin =
        a.apply_filename.as_deref() == Some("-") || a.replace_filename.as_deref() == Some("-");
    if from_stdin && !a.force {
        echo("Use --force option to apply changes");
        return Ok(());
    }
    if a.force || confirm("Apply these changes?")? {
        let written = dcs
            .set_config(&yaml::py_json_compact(&changed), Some(config.version))
            .await?;
        if !written {
            bail!("Config modification aborted due to concurrent changes");
        }
        echo("Configuration changed");
    }
    Ok(())
}

/// `change_cluster_role`: demote to a standby cluster (`standby_config` given) or promote.
async fn change_cluster_role(
    ctx: &mut Ctx,
    name: &str,
    force: bool,
    standby_config: Option<Map<String, Value>>,
) -> anyhow::Result<()> {
    let demote = standby_config.is_some();
    let action = if demote { "demot" } else { "promot" };
    let target_role = if demote { "standby_leader" } else { "primary" };
    let dcs = ctx.dcs(name).await?;
    let c = dcs.cluster_fresh().await?;
    let Some(leader_name) = c.leader_name().map(str::to_string) else {
        bail!("Cluster has no leader, {action}ion is not possible");
    };
    let leader = leader_member(&c).unwrap_or_else(|| bare_member(&leader_name));
    if leader.data.role == target_role {
        bail!("Cluster is already in the required state");
    }
    echo("Current cluster topology");
    output_members(&c, name, Format::Pretty);
    if !force
        && !confirm(&format!(
            "Are you sure you want to {action}e {name} cluster?"
        ))?
    {
        bail!("Aborted cluster {action}ion");
    }
    let body = json!({"standby_cluster": standby_config.map_or(Value::Null, Value::Object)});
    match ctx
        .request(&leader, Method::PATCH, Some("config"), Some(&body), SHORT)
        .await
    {
        Ok(r) if r.status == 200 => {}
        Ok(r) => bail!(
            "Failed to {action}e {name} cluster: /config PATCH status code={}, ({})",
            r.status,
            r.body
        ),
        Err(e) => bail!("Failed to {action}e {name} cluster: {e:#}"),
    }
    let mut c;
    loop {
        c = dcs.cluster_fresh().await?;
        let now = jiff::ZonedDateTime::now()
            .strftime("%Y-%m-%d %H:%M:%S")
            .to_string();
        let unlocked = c.is_unlocked();
        let lead = c.leader_name().and_then(|n| c.member(n));
        let role = lead.map(|m| m.data.role.clone());
        let state = lead.map(|m| m.data.state.clone());
        let old_state = c.member(&leader_name).map(|m| m.data.state.clone());
        if !unlocked
            && role.as_deref() == Some(target_role)
            && state.as_deref() == Some("running")
            && (!demote || old_state.as_deref() == Some("running"))
        {
            echo(&format!("{now} cluster is successfully {action}ed"));
            break;
        }
        let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "None".into());
        let mut parts = vec![
            format!(
                "{now} cluster is unlocked: {}",
                if unlocked { "True" } else { "False" }
            ),
            format!("leader role: {}", show(&role)),
            format!("leader state: {}", show(&state)),
        ];
        if demote && c.leader_name() != Some(leader_name.as_str()) {
            if let Some(s) = &old_state {
                parts.push(format!("previous leader state: '{s}'"));
            }
        }
        echo(&parts.join(", "));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    output_members(&c, name, Format::Pretty);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pg_versions() {
        assert!(check_pg_version("9.6.24").is_ok());
        assert!(check_pg_version("16.4").is_ok());
        assert!(check_pg_version("9.6").is_err());
        assert!(check_pg_version("16").is_err());
        assert!(check_pg_version("x.1").is_err());
        assert_eq!(format_pg_version(160004), "16.4");
        assert_eq!(format_pg_version(90624), "9.6.24");
        assert_eq!(format_pg_version(100000), "10.0");
    }
}
