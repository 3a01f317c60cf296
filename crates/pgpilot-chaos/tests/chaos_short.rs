//! A short chaos run proves that no acknowledged commit is lost and no two members accept writes
//! at once, in the synchronous modes, under a crash failover (kill -9), an immediate PostgreSQL
//! stop and a switchover storm: the tool's own check, run in-process on a real local cluster
//! (etcd + 3 agents on loopback). Bounded to about 3 minutes on 2 cores.
//!
//! The agent is the `pgpilot` binary next to this test's `pgpilot-chaos` in the target
//! directory (`cargo nextest run --workspace` builds it; otherwise this test runs
//! `cargo build -p pgpilot --bin pgpilot` first), or `PGPILOT_CHAOS_AGENT`.

use std::path::PathBuf;
use std::process::Command;

use pgpilot_chaos::run::{prepare, run};
use pgpilot_chaos::{Config, Fault, Mode};

fn agent_binary() -> PathBuf {
    if let Some(a) = std::env::var_os("PGPILOT_CHAOS_AGENT") {
        return PathBuf::from(a);
    }
    let agent = PathBuf::from(env!("CARGO_BIN_EXE_pgpilot-chaos")).with_file_name("pgpilot");
    if !agent.is_file() {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "-p", "pgpilot", "--bin", "pgpilot"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .expect("run cargo build -p pgpilot --bin pgpilot");
        assert!(
            status.success(),
            "cargo build -p pgpilot --bin pgpilot failed"
        );
    }
    assert!(agent.is_file(), "{} is missing", agent.display());
    agent
}

#[test]
fn short_chaos_run_loses_no_acknowledged_commit_and_finds_no_split_brain() {
    pgpilot_api::tls::install_provider();
    let mut cfg = Config::new(agent_binary());
    cfg.modes = vec![Mode::Sync, Mode::Quorum];
    cfg.faults = vec![Fault::Kill9, Fault::PgImmediate, Fault::SwitchoverStorm];
    cfg.rounds = 1;
    // Single-threaded here: prepare() sets the harness's environment and drops root.
    let prepared = prepare(&cfg).expect("prepare the chaos run");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let started = std::time::Instant::now();
    let report = runtime.block_on(run(&cfg, &prepared));
    eprintln!(
        "chaos_short: {:.0} s\n{}",
        started.elapsed().as_secs_f64(),
        report.table()
    );
    assert!(report.tool_errors.is_empty(), "{:#?}", report.tool_errors);
    assert!(report.corruption.is_empty(), "{:#?}", report.corruption);
    let ran = report.runs.iter().filter(|r| r.skipped.is_none()).count();
    assert_eq!(ran, 6, "every fault ran in both modes");
    assert!(
        report.runs.iter().all(|r| r.acked > 0),
        "writes went through"
    );
    assert_eq!(
        report.lost(),
        0,
        "lost acknowledged commits: {:#?}",
        report.violations()
    );
    assert_eq!(
        report.split_brain_windows(),
        0,
        "split-brain windows: {:#?}",
        report.violations()
    );
}
