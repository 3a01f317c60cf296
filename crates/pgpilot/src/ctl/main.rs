//! `pgpilotctl`: a drop-in for Patroni's `patronictl` (spec/ctl.md §4). Parses the command line,
//! loads the configuration, runs one command on a small runtime and maps errors to click's
//! conventions: `Error: <message>` and exit status 1, `Aborted!` when a prompt is abandoned.
//! Invoked through a link named `patronictl` it reports patronictl's version string.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

mod args;
mod commands;
mod config;
mod edit;
mod http;
mod list;
mod table;
mod yaml;

fn init_logging() {
    // patronictl logs at WARNING unless LOGLEVEL / PATRONI_LOGLEVEL / PATRONI_LOG_LEVEL says
    // otherwise.
    let mut level = "warn".to_string();
    for name in ["LOGLEVEL", "PATRONI_LOGLEVEL", "PATRONI_LOG_LEVEL"] {
        if let Ok(v) = std::env::var(name) {
            level = match v.to_ascii_lowercase().as_str() {
                "critical" | "fatal" => "error".into(),
                "warning" => "warn".into(),
                other => other.into(),
            };
        }
    }
    let level: tracing_subscriber::filter::LevelFilter = level
        .parse()
        .unwrap_or(tracing_subscriber::filter::LevelFilter::WARN);
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_target(false)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .try_init();
}

fn main() -> ExitCode {
    let invoked_as = std::env::args()
        .next()
        .map(PathBuf::from)
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let cli = args::Cli::parse();
    init_logging();
    match run(cli, invoked_as == "patronictl") {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            if e.downcast_ref::<commands::Aborted>().is_some() {
                eprintln!("Aborted!");
            } else {
                eprintln!("Error: {e:#}");
            }
            ExitCode::FAILURE
        }
    }
}

fn run(cli: args::Cli, invoked_as_patronictl: bool) -> anyhow::Result<()> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    let explicit = cli.config_file.is_some();
    let path = cli
        .config_file
        .clone()
        .or_else(|| config::default_config_path(&env));
    let cfg = config::CtlConfig::load(
        path.as_deref(),
        explicit,
        &env,
        cli.dcs_url.as_deref(),
        cli.insecure,
    )?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut ctx = commands::Ctx::new(cfg)?;
        commands::run(&mut ctx, cli.command, invoked_as_patronictl).await
    })
}
