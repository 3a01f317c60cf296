//! The status document of `GET /patroni` and every health check (spec/rest-api.md §1.3).

use std::time::Instant;

use serde_json::Value;

use crate::NodeSnapshot;

/// Builds the status document as Patroni does, field order included.
pub fn status_document(snapshot: &NodeSnapshot, now: Instant) -> Value {
    let _ = (snapshot, now);
    unimplemented!()
}
