//! The dynamic configuration (`/config`, seeded from `bootstrap.dcs`), read leniently every cycle.

use std::time::Duration;

use serde_json::{Map, Value};

/// Typed view of the `/config` document with the defaults of spec/config.md §3.8 and the timing
/// rule `loop_wait + 2 × retry_timeout ≤ ttl` applied.
#[derive(Debug, Clone, PartialEq)]
pub struct DynamicConfig {
    pub ttl: Duration,
    pub loop_wait: Duration,
    pub retry_timeout: Duration,
    pub maximum_lag_on_failover: u64,
    pub primary_start_timeout: Duration,
    pub check_timeline: bool,
    pub max_timelines_history: usize,
    pub pause: bool,
    pub use_pg_rewind: bool,
    pub use_slots: bool,
    /// `postgresql.parameters` of the dynamic document, values as strings.
    pub parameters: Map<String, Value>,
    pub pg_hba: Option<Vec<String>>,
    /// The document as stored (unknown keys kept).
    pub raw: Map<String, Value>,
}

impl Default for DynamicConfig {
    fn default() -> Self {
        DynamicConfig::from_document(&Map::new()).0
    }
}

impl DynamicConfig {
    /// Reads a `/config` document. Never fails: invalid values fall back to defaults; every
    /// adjustment (timing rule, bad types) is returned as a warning for the log.
    pub fn from_document(doc: &Map<String, Value>) -> (DynamicConfig, Vec<String>) {
        let _ = doc;
        unimplemented!()
    }
}
