//! The integration-test harness is the `pgpilot-test-support` crate
//! (`crates/pgpilot-test-support`); every test file here says `mod harness;` and uses it as
//! `harness::…`. The one thing this crate adds: [`init`] hands the harness the agent binary
//! cargo just built for these tests (`CARGO_BIN_EXE_pgpilot`, which only this crate's tests
//! see); `PGPILOT_TEST_AGENT` still names another agent to run instead.

pub use pgpilot_test_support::*;

/// Prepares the test process with this build's `pgpilot` as the agent; call it first in every
/// integration test (idempotent). See [`pgpilot_test_support::init_with_agent`].
pub fn init() {
    pgpilot_test_support::init_with_agent(env!("CARGO_BIN_EXE_pgpilot"));
}

/// Runs this build's `pgpilotctl -c <config> args...` with a clean environment (bounded to
/// 120 s) and returns its exit code and its stdout followed by its stderr, echoed for the log.
// Each test file compiles this module; those that run no pgpilotctl do not use it.
#[allow(dead_code)]
pub async fn pgpilotctl(config: &std::path::Path, args: &[&str]) -> (i32, String) {
    let home = tempfile::tempdir().expect("a temporary HOME");
    let out = tokio::time::timeout(
        std::time::Duration::from_secs(120),
        tokio::process::Command::new(env!("CARGO_BIN_EXE_pgpilotctl"))
            .arg("-c")
            .arg(config)
            .args(args)
            .env_clear()
            .env("HOME", home.path())
            .env("PATH", "/usr/bin:/bin")
            .stdin(std::process::Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("pgpilotctl finished in 120 s")
    .expect("run pgpilotctl");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("$ pgpilotctl {}\n{text}", args.join(" "));
    (out.status.code().unwrap_or(-1), text)
}
