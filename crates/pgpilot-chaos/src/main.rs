//! `pgpilot-chaos`: a bank-transfer workload under faults on a local 3-member pgpilot cluster;
//! prints a markdown table and exits non-zero when an acknowledged commit was lost in a
//! synchronous mode, two members accepted writes at once, or the tool failed. See the README's
//! "Chaos testing" section.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use pgpilot_chaos::config::parse_list;
use pgpilot_chaos::report::EXIT_TOOL_FAILURE;
use pgpilot_chaos::{run, Config, Fault, Mode};

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Chaos testing of pgpilot: lost commits and split brains under faults"
)]
struct Args {
    /// Replication modes, each on a fresh cluster: async, sync, sync-strict, quorum (or all).
    #[arg(long, default_value = "async")]
    modes: String,
    /// Faults: kill9, freeze-agent, pg-immediate, rm-datadir, etcd-stop, etcd-member-loss,
    /// partition, switchover-storm, restart-storm (or all).
    #[arg(long, default_value = "kill9,pg-immediate,switchover-storm")]
    faults: String,
    /// How many times each fault runs in each mode.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Bank accounts.
    #[arg(long, default_value_t = 100)]
    accounts: i32,
    /// Concurrent clients.
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// bootstrap.dcs.ttl (seconds; below Patroni's 20 only because the agents run their guard).
    #[arg(long, default_value_t = 20)]
    ttl: u64,
    /// bootstrap.dcs.loop_wait (seconds).
    #[arg(long, default_value_t = 1)]
    loop_wait: u64,
    /// bootstrap.dcs.retry_timeout (seconds).
    #[arg(long, default_value_t = 3)]
    retry_timeout: u64,
    /// Upper bound for the cluster to recover after one fault (seconds).
    #[arg(long, default_value_t = 90)]
    recovery_timeout: u64,
    /// Keep each cluster's directory (configs, agent and PostgreSQL logs) for post-mortems.
    #[arg(long)]
    keep_dir: bool,
    /// The pgpilot agent binary [default: `pgpilot` next to this executable, i.e. the output
    /// of `cargo build -p pgpilot --bin pgpilot` in the same target directory].
    #[arg(long, env = "PGPILOT_CHAOS_AGENT")]
    agent: Option<PathBuf>,
}

fn config(args: Args) -> anyhow::Result<Config> {
    let agent = match args.agent {
        Some(a) => a,
        None => std::env::current_exe()
            .context("locate this executable")?
            .with_file_name("pgpilot"),
    };
    let mut cfg = Config::new(agent);
    cfg.modes = parse_list(&args.modes, &Mode::ALL).map_err(|e| anyhow::anyhow!("--modes: {e}"))?;
    cfg.faults =
        parse_list(&args.faults, &Fault::ALL).map_err(|e| anyhow::anyhow!("--faults: {e}"))?;
    cfg.rounds = args.rounds;
    cfg.accounts = args.accounts;
    cfg.clients = args.clients;
    cfg.ttl = args.ttl;
    cfg.loop_wait = args.loop_wait;
    cfg.retry_timeout = args.retry_timeout;
    cfg.recovery_timeout = Duration::from_secs(args.recovery_timeout);
    cfg.keep_dir = args.keep_dir;
    cfg.validate().map_err(anyhow::Error::msg)?;
    Ok(cfg)
}

fn main() {
    pgpilot_api::tls::install_provider();
    let code = match real_main() {
        Ok(code) => code,
        Err(e) => {
            eprintln!("pgpilot-chaos: error: {e:#}");
            EXIT_TOOL_FAILURE
        }
    };
    std::process::exit(code);
}

fn real_main() -> anyhow::Result<i32> {
    let cfg = config(Args::parse())?;
    // Before any thread exists: environment for the harness, the root-only netns helper, the
    // privilege drop.
    let prepared = run::prepare(&cfg)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("start the async runtime")?;
    // Ctrl-C drops the run: the clusters' `Drop` stops agents and postmasters by PID, the netns
    // helper removes its namespaces; then the partial table is lost, the exit code says so.
    let report = runtime.block_on(async {
        tokio::select! {
            report = run::run(&cfg, &prepared) => Some(report),
            _ = tokio::signal::ctrl_c() => None,
        }
    });
    let Some(report) = report else {
        eprintln!("pgpilot-chaos: interrupted; the clusters were stopped");
        return Ok(EXIT_TOOL_FAILURE);
    };
    println!("{}", report.table());
    for v in report.violations() {
        println!("VIOLATION: {v}");
    }
    for e in &report.tool_errors {
        println!("TOOL FAILURE: {e}");
    }
    Ok(report.exit_code())
}
