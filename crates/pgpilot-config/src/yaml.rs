//! The one place that parses YAML, with PyYAML's reading of Patroni files: `on`/`yes`/`off`/`no`
//! are booleans, `0700` is octal, a duplicate key is an error.

use serde_json::Value;

use crate::ConfigError;

/// Parses one YAML document into JSON values (map order kept). `origin` names the source in
/// errors (a file path or an environment variable).
pub fn parse(text: &str, origin: &str) -> Result<Value, ConfigError> {
    if text.trim().is_empty() {
        return Ok(Value::Object(Default::default()));
    }
    let options = serde_saphyr::options! {
        legacy_octal_numbers: true,
        duplicate_keys: serde_saphyr::DuplicateKeyPolicy::Error,
    };
    let v: Value =
        serde_saphyr::from_str_with_options(text, options).map_err(|e| ConfigError::Yaml {
            path: origin.to_string(),
            message: e.to_string(),
        })?;
    Ok(if v.is_null() {
        Value::Object(Default::default())
    } else {
        v
    })
}

/// Renders a value as YAML (for `--validate-config --print` and messages).
pub fn to_string(v: &Value) -> String {
    serde_saphyr::to_string(v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pyyaml_booleans_and_octal() {
        let v = parse("a: on\nb: yes\nc: off\nd: 0700\ne: \"on\"\n", "t").unwrap();
        assert_eq!(v["a"], Value::Bool(true));
        assert_eq!(v["b"], Value::Bool(true));
        assert_eq!(v["c"], Value::Bool(false));
        assert_eq!(v["d"], Value::from(0o700));
        assert_eq!(v["e"], Value::from("on"));
    }

    #[test]
    fn duplicate_keys_refused() {
        let e = parse("a: 1\na: 2\n", "x.yml").unwrap_err().to_string();
        assert!(e.contains("x.yml"), "{e}");
    }
}
