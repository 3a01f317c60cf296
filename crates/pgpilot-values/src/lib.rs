//! The values every part of pgpilot reads the same way, at the bottom of the crate graph so
//! that the configuration loader, the DCS layer, PostgreSQL control, the agent, the REST API and
//! `pgpilotctl` share one reading: Patroni's booleans and `synchronous_mode` ([`patroni`]), WAL
//! positions ([`Lsn`]), the user's bootstrap and replica creation commands ([`methods`]), Python's
//! `repr(float)` and `json.dumps` ([`python`]), PyYAML's `safe_dump` ([`pyyaml`]), the two facts read from a certificate
//! ([`x509`]), and encrypted private keys ([`keys`]).

pub mod fuzz;
pub mod keys;
mod lsn;
pub mod methods;
pub mod patroni;
pub mod python;
pub mod pyyaml;
pub mod x509;

pub use lsn::Lsn;
pub use methods::{python_str, BootstrapRecovery, CustomBootstrap, MethodCommand, ReplicaMethod};
pub use patroni::{
    bool_tag, conflicting_tags, guc_value, is_standby_cluster, parse_bool, parse_bool_str,
    priority_tag, py_truthy, truthy, SyncMode, AUTH_LIBPQ_OPTIONS,
};
