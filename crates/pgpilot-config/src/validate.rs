//! placeholder
use serde_json::Value;
use crate::Problem;

/// The full schema check behind `--validate-config`: every problem, each with its key path.
pub fn validate(doc: &Value) -> Vec<Problem> {
    let _ = doc;
    unimplemented!()
}
