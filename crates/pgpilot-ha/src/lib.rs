//! The HA brain: the pure [`decide`] function and the [`Agent`] that runs the cycle
//! (observe → decide → act → publish, DESIGN.md "One HA cycle").

mod agent;
pub mod continuity;
pub mod decide;
#[cfg(test)]
mod decide_tests;
pub mod guard;
pub mod hooks;
mod localtime;
mod params;
pub mod slots;
pub mod sync;
pub mod watchdog;

pub use agent::{pg_info, Agent, AgentError, Exit};
pub use decide::{
    decide, is_healthiest, manual_failover_from_leader, ActionKind, DataState, Decision,
    ManualFailover, Observation, PgView,
};
pub use localtime::{local_now, local_zone};
pub use params::{effective_parameters, effective_pg_hba, pg_settings};
pub use sync::SyncParams;
