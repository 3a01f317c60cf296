//! YAML and JSON text exactly as patronictl prints them: PyYAML's `safe_dump`
//! ([`pgpilot_values::pyyaml`]) and Python's `json.dumps` ([`pgpilot_values::python`]).

pub use pgpilot_values::python::{py_float_repr, py_json, py_json_compact};
pub use pgpilot_values::pyyaml::dump;
