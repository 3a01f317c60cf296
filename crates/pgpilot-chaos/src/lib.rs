//! `pgpilot-chaos`: proves or disproves, on a real local cluster, the two promises of an HA
//! agent — in synchronous mode no acknowledged commit is ever lost, and there are never two
//! writable primaries.
//!
//! For each mode (async, sync, sync-strict, quorum) it starts a fresh etcd and three `pgpilot`
//! agents on loopback with the integration-test harness (the `pgpilot-test-support` crate,
//! `harness` below), runs a bank-transfer workload through a multi-host connection
//! string with `target_session_attrs=read-write` ([`workload`]), injects faults on the current
//! leader one after another and waits for the cluster to recover after each ([`faults`]), then
//! checks on the final leader which acknowledged transfers are missing and whether two members
//! ever accepted writes at the same time ([`analysis`]). [`report`] prints the table and
//! decides the exit code.
//!
//! This crate is a tool, not a library others build on: its errors are `anyhow` throughout (the
//! lib target exists so that `tests/chaos_short.rs` can call [`run::run`] in-process).

pub(crate) use pgpilot_test_support as harness;

pub mod analysis;
pub mod config;
pub mod faults;
pub mod netns;
pub mod report;
pub mod run;
pub mod workload;

pub use config::{Config, Fault, Mode};
pub use report::Report;
