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
