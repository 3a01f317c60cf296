//! The commands: each reads the cluster from the DCS, asks for confirmation where patronictl
//! does, then either writes the DCS directly (`edit-config`, `remove`, the failover fallback) or
//! calls members' REST APIs. Messages are patronictl's, word for word.
//!
//! Here: the per-invocation context (`Ctx`) and the dispatch (`run`). Each command has a file of
//! its own; what several commands share is in `console`, `members` and `schedule`.

mod cluster_role;
mod console;
mod dsn;
mod edit_config;
mod flush;
mod history;
mod list_topology;
mod members;
mod pause;
mod query;
mod reinit;
mod reload;
mod remove;
mod restart;
mod schedule;
mod switchover;
mod version;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use pgpilot_dcs::etcd::{EtcdDcs, EtcdOptions};
use pgpilot_dcs::{Cluster, Dcs, Member};
use reqwest::Method;
use serde_json::{Map, Value};

use crate::args::Command;
use crate::config::{CtlConfig, DEFAULT_LOOP_WAIT};
use crate::http::{Reply, Rest};
use crate::table::Format;

use cluster_role::change_cluster_role;
use console::prompt;
pub(crate) use console::Aborted;
use dsn::dsn_cmd;
use edit_config::{edit_config_cmd, show_config_cmd, EditArgs};
use flush::flush_cmd;
use history::history_cmd;
use list_topology::list_cmd;
use pause::toggle_pause;
use query::{query_cmd, QueryArgs};
use reinit::reinit_cmd;
use reload::reload_cmd;
use remove::remove_cmd;
use restart::{restart_cmd, RestartArgs};
use switchover::failover_cmd;
use version::version_cmd;

/// Shared state of one invocation: configuration, REST client, DCS clients per cluster.
pub(crate) struct Ctx {
    cfg: CtlConfig,
    rest: Rest,
    dcs: HashMap<String, Arc<EtcdDcs>>,
}

impl Ctx {
    pub(crate) fn new(cfg: CtlConfig) -> anyhow::Result<Ctx> {
        let rest = Rest::new(
            cfg.rest_auth.clone(),
            &pgpilot_api::ClientTls {
                cacert: cfg.cacert.clone(),
                certfile: cfg.certfile.clone(),
                keyfile: cfg.keyfile.clone(),
                insecure: cfg.insecure,
                keyfile_password: cfg.keyfile_password.clone(),
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
            tls: self.cfg.etcd_tls.clone(),
        };
        // EtcdDcs::connect retries forever while etcd is down (the agent's behaviour); a CLI
        // gives up after one retry_timeout-sized budget, with the reason (e.g. a TLS error).
        // Only reading is checked at start: `list` works for a read-only etcd user.
        let endpoints = self.cfg.endpoints.join(",");
        let dcs = tokio::time::timeout(
            Duration::from_secs(20),
            EtcdDcs::connect_reader_within(opts, Duration::from_secs(15)),
        )
        .await
        .map_err(|_| anyhow!("DCS is not accessible: no etcd answered at {endpoints}"))?
        .map_err(|e| anyhow!("{e} (etcd at {endpoints})"))?;
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
pub(crate) async fn run(
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
            dsn_cmd(ctx, &name, role, member.as_deref()).await
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
            show_config_cmd(ctx, &name).await
        }
        Command::Version {
            cluster_name,
            member_names,
            group,
        } => {
            version_cmd(
                ctx,
                cluster_name,
                &member_names,
                group,
                invoked_as_patronictl,
            )
            .await
        }
        Command::History {
            cluster_name,
            group,
            fmt,
        } => {
            ctx.check_group(group)?;
            let name = ctx.cluster_name(cluster_name)?;
            history_cmd(ctx, &name, fmt).await
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
