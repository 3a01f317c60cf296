//! Renders a JSON document as block-style YAML, the way a person writes a Patroni configuration:
//! mappings and sequences in block style, every string double-quoted (JSON escapes are valid YAML
//! double-quoted escapes, so no value can be misread: `"on"` stays a string), collections inside
//! sequences in flow style.

use serde_json::Value;

pub fn to_yaml(doc: &Value) -> String {
    let mut out = String::new();
    match doc {
        Value::Object(_) | Value::Array(_) => block(doc, 0, &mut out),
        other => {
            out.push_str(&flow(other));
            out.push('\n');
        }
    }
    out
}

fn block(v: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                let key = key(k);
                match v {
                    Value::Object(m) if !m.is_empty() => {
                        out.push_str(&format!("{pad}{key}:\n"));
                        block(v, indent + 2, out);
                    }
                    Value::Array(a) if !a.is_empty() => {
                        out.push_str(&format!("{pad}{key}:\n"));
                        block(v, indent + 2, out);
                    }
                    _ => out.push_str(&format!("{pad}{key}: {}\n", flow(v))),
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                out.push_str(&format!("{pad}- {}\n", flow(item)));
            }
        }
        other => out.push_str(&format!("{pad}{}\n", flow(other))),
    }
}

/// Plain keys when they are plainly safe (`use_pg_rewind`, `max_wal_senders`), quoted otherwise
/// (a key like `0` or `on` would change type when read back).
fn key(k: &str) -> String {
    let plain = k.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && k.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | '/'))
        && !matches!(
            k.to_ascii_lowercase().as_str(),
            "y" | "n" | "yes" | "no" | "on" | "off" | "true" | "false" | "null" | "~"
        );
    if plain {
        k.to_string()
    } else {
        Value::String(k.to_string()).to_string()
    }
}

/// JSON is YAML's flow style.
fn flow(v: &Value) -> String {
    v.to_string()
}
