//! `pgpilot CONFIG`: the agent. Parses arguments, loads the configuration, sets up logging in
//! Patroni's format, starts the guard process, wires the DCS, PostgreSQL, the REST API and the
//! HA agent together, and maps SIGTERM/SIGINT to the agent's ordered shutdown.
//!
//! `pgpilot --guard DATA_DIR` (hidden) is the guard process the agent starts
//! (`pgpilot_ha::guard`); it is never started by hand.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context;
use pgpilot_api::{Client, NodeSnapshot, ServerOptions};
use pgpilot_config::{Config, Loaded};
use pgpilot_dcs::etcd::{EtcdDcs, EtcdOptions};
use pgpilot_ha::guard::{Guard, ProcessLink};
use pgpilot_ha::{Agent, AgentError};
use pgpilot_postgres::Postgres;
use tokio_util::sync::CancellationToken;

mod args;
mod generate;
mod guard_release;
mod logging;

fn main() -> ExitCode {
    // First, while this is the only thread: the PATRONI_* variables (passwords among them) are
    // read into the configuration and leave the environment the children inherit.
    pgpilot_config::take_environment();
    let args = match args::parse(std::env::args_os().skip(1)) {
        Ok(args) => args,
        Err(e) => {
            eprintln!(
                "error: {e}\n\n{}\n\nFor more information, try '--help'.",
                args::USAGE
            );
            return ExitCode::from(2);
        }
    };
    if args.help {
        print!("{}", args::help());
        return ExitCode::SUCCESS;
    }
    if args.version {
        println!("pgpilot {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    if args.generate_sample_config || args.generate_config {
        let env = pgpilot_config::environment();
        return match generate::run(
            args.generate_sample_config,
            args.dsn.as_deref(),
            args.config.as_deref(),
            env,
        ) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{e:#}");
                ExitCode::FAILURE
            }
        };
    }
    if args.validate_config {
        return validate(args.config.as_deref());
    }
    if let Some(data_dir) = &args.guard {
        return guard(data_dir, &args);
    }
    let loaded = match Config::load(args.config.as_deref()) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e:#}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(e) = logging::init(&loaded.config.log) {
        eprintln!("can not set up logging: {e:#}");
        return ExitCode::FAILURE;
    }
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    if nix::unistd::geteuid().is_root() {
        logging::critical("pgpilot refuses to run as root: PostgreSQL can not run as root. Start it as the PostgreSQL owner (e.g. runuser -u postgres -- pgpilot CONFIG).");
        return ExitCode::FAILURE;
    }
    // One thread runs everything: one cycle per loop_wait and a few REST requests need no
    // more, and with the HA loop, the REST server, the etcd client and the PostgreSQL
    // connection on the same thread, no message between them wakes another thread (with the
    // loop on the main thread and the rest on a worker, cross-thread wake-ups were most of the
    // idle CPU). Every wait in the agent is async; blocking work has tokio's blocking pool.
    // The watchdog keeps its own thread and the guard is its own process.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            logging::critical(&format!("can not start the runtime: {e}"));
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(loaded, args.config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            logging::critical(&format!("{e:#}"));
            ExitCode::FAILURE
        }
    }
}

/// The guard process (`pgpilot_ha::guard`), logging where the agent logs.
fn guard(data_dir: &std::path::Path, args: &args::Args) -> ExitCode {
    let mut log: pgpilot_config::LogConfig = args
        .guard_log
        .as_deref()
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or_default();
    // The agent rotates `patroni.log`; two processes rotating one file would lose lines.
    log.file_size = 0;
    if let Err(e) = logging::init(&log) {
        eprintln!("can not set up logging: {e:#}");
        return ExitCode::FAILURE;
    }
    let release = guard_release::read_preamble();
    match pgpilot_ha::guard::run_guard(data_dir, release) {
        0 => ExitCode::SUCCESS,
        _ => ExitCode::FAILURE,
    }
}

/// Starts the guard process for this configuration, or says why there is none. A guard that is
/// on and can not be started keeps this member out of the leader race (`Guard::failed`).
fn start_guard(cfg: &Config) -> Guard {
    if !cfg.guard {
        tracing::warn!("pgpilot.guard is off: a frozen agent's PostgreSQL stays writable until its agent runs again");
        return Guard::off();
    }
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(e) => {
            return Guard::failed(format!(
                "can not start the guard process: can not find the pgpilot executable: {e}"
            ))
        }
    };
    let mut args: Vec<OsString> = vec!["--guard".into(), cfg.postgresql.data_dir.clone().into()];
    if let Ok(log) = serde_json::to_string(&cfg.log) {
        args.push("--guard-log".into());
        args.push(log.into());
    }
    let retry_timeout =
        pgpilot_config::DynamicConfig::from_document_fenced(&cfg.bootstrap.dcs, cfg.guard)
            .0
            .retry_timeout;
    match ProcessLink::spawn(&exe, args)
        .and_then(|link| link.with_preamble(guard_release::preamble(cfg, retry_timeout)))
    {
        Ok(link) => Guard::new(Box::new(link)),
        Err(e) => Guard::failed(e.to_string()),
    }
}

fn validate(path: Option<&std::path::Path>) -> ExitCode {
    // The environment as it was at start: take_environment() removed the PATRONI_* variables.
    match pgpilot_config::load_document(path, pgpilot_config::environment()) {
        Ok(doc) => {
            let problems = pgpilot_config::validate(&doc);
            if problems.is_empty() {
                return ExitCode::SUCCESS;
            }
            for p in problems {
                eprintln!("{p}");
            }
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(loaded: Loaded, config_path: Option<PathBuf>) -> anyhow::Result<()> {
    let cfg = loaded.config;
    let auth = |c: &Option<pgpilot_config::Credentials>| {
        c.as_ref()
            .map(|a| (a.username.clone(), a.password.clone().unwrap_or_default()))
    };
    let client_tls = pgpilot_api::ClientTls {
        cacert: cfg.ctl.tls.cacert.clone(),
        certfile: cfg.ctl.tls.certfile.clone(),
        keyfile: cfg.ctl.tls.keyfile.clone(),
        insecure: cfg.ctl.tls.insecure,
        keyfile_password: cfg.ctl.tls.keyfile_password.clone(),
    };
    let client = Client::with_tls(auth(&cfg.ctl.authentication), &client_tls)
        .context("can not set up the REST client")?;
    let server_tls = match &cfg.restapi.tls {
        Some(t) => Some(
            pgpilot_api::tls::server_tls(
                &t.certfile,
                &t.keyfile,
                t.keyfile_password.as_deref(),
                t.cafile.as_deref(),
                &t.verify_client,
                t.ciphers.as_deref(),
            )
            .context("can not set up HTTPS for the REST API")?,
        ),
        None => None,
    };
    let pg = Arc::new(Postgres::new(pgpilot_ha::pg_settings(&cfg)));

    // The dynamic configuration known before the first DCS read gives the lease TTL.
    let bootstrap_dynamic =
        pgpilot_config::DynamicConfig::from_document_fenced(&cfg.bootstrap.dcs, cfg.guard).0;
    let dcs = EtcdDcs::connect(EtcdOptions {
        endpoints: cfg.etcd.urls(),
        namespace: cfg.namespace.clone(),
        scope: cfg.scope.clone(),
        name: cfg.name.clone(),
        ttl: bootstrap_dynamic.ttl,
        retry_timeout: bootstrap_dynamic.retry_timeout,
        loop_wait: bootstrap_dynamic.loop_wait,
        username: cfg.etcd.username.clone(),
        password: cfg.etcd.password.clone(),
        discover_members: !cfg.etcd.use_proxies,
        tls: cfg.etcd.tls(),
    })
    .await
    .context("can not connect to etcd")?;
    let dcs = Arc::new(dcs);

    let (snap_tx, snap_rx) =
        tokio::sync::watch::channel(Arc::new(NodeSnapshot::starting(&cfg.name, &cfg.scope)));
    let restapi_listen = cfg.restapi.listen.clone();
    // Restart, reinitialize and reload requests travel from the API to the agent.
    let (cmd_tx, cmd_rx) = tokio::sync::mpsc::channel(16);
    // Failsafe mode: what `POST /failsafe` accepted, read by the agent each cycle.
    let (failsafe_tx, failsafe_rx) = tokio::sync::watch::channel(None);
    let api_options = ServerOptions {
        auth: auth(&cfg.restapi.authentication),
        allowlist: cfg.restapi.allowlist.clone(),
        allowlist_include_members: cfg.restapi.allowlist_include_members,
        commands: Some(cmd_tx.clone()),
        client: client.clone(),
        tls: server_tls,
        live_pg: Some(live_pg(pg.clone())),
        failsafe: Some(failsafe_tx),
    };
    let guard = start_guard(&cfg);
    // A reload (SIGHUP, POST /reload) applies the log section and reads the etcd TLS files
    // again (renewed certificates need no restart); other etcd settings need a restart.
    let reload_dcs = dcs.clone();
    let on_reload = move |cfg: &Config| {
        logging::reconfigure(&cfg.log);
        if let Err(e) = reload_dcs.reload_tls(cfg.etcd.tls()) {
            tracing::error!("reload: keeping the etcd TLS files read before: {e}");
        }
    };
    let mut agent = Agent::new(cfg, dcs.clone(), pg, Arc::new(client), snap_tx)
        .with_commands(cmd_rx, config_path)
        .on_reload(Box::new(on_reload))
        .with_guard(guard)
        .with_failsafe(failsafe_rx);
    agent
        .check_unique_name()
        .await
        .map_err(anyhow::Error::from)?;

    let listener = tokio::net::TcpListener::bind(&restapi_listen)
        .await
        .with_context(|| format!("can not listen on restapi.listen {restapi_listen}"))?;
    let api_shutdown = CancellationToken::new();
    let api = tokio::spawn(pgpilot_api::serve(
        listener,
        snap_rx,
        dcs.clone(),
        api_options,
        api_shutdown.clone(),
    ));

    let shutdown = CancellationToken::new();
    tokio::spawn(wait_for_signal(shutdown.clone()));
    tokio::spawn(reload_on_sighup(cmd_tx));
    let result = agent.run(shutdown).await;
    api_shutdown.cancel();
    let _ = api.await;
    match result {
        Ok(_) => Ok(()),
        Err(AgentError::Fatal(msg)) => Err(anyhow::anyhow!(msg)),
    }
}

/// The API's live view of PostgreSQL: the agent's monitoring query.
fn live_pg(pg: Arc<Postgres>) -> pgpilot_api::LivePg {
    Arc::new(move || {
        let pg = pg.clone();
        Box::pin(async move {
            pg.query_state()
                .await
                .ok()
                .map(|st| pgpilot_ha::pg_info(&st))
        })
    })
}

/// SIGHUP re-reads the configuration, like `POST /reload`.
async fn reload_on_sighup(commands: tokio::sync::mpsc::Sender<pgpilot_api::Command>) {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut hup) = signal(SignalKind::hangup()) else {
        tracing::error!("can not install the SIGHUP handler");
        return;
    };
    while hup.recv().await.is_some() {
        tracing::info!("received SIGHUP, reloading the configuration");
        if commands.send(pgpilot_api::Command::Reload).await.is_err() {
            return;
        }
    }
}

async fn wait_for_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("can not install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::info!("received shutdown signal");
    shutdown.cancel();
}
