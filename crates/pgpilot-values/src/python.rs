//! Values written as Python writes them, for the texts Patroni's users and tools compare byte
//! for byte: `repr(float)` and `json.dumps` (patronictl output, DCS values, JSON log lines,
//! metrics).

use serde_json::Value;

/// Python's `repr(float)`: `0.5`, `100.0`, `1e+20`, `1e-05`.
pub fn py_float_repr(f: f64) -> String {
    if f.is_nan() {
        return "NaN".into();
    }
    if f.is_infinite() {
        return if f > 0.0 {
            "Infinity".into()
        } else {
            "-Infinity".into()
        };
    }
    // Rust's Debug switches to exponent notation at the same thresholds as Python's repr.
    let text = format!("{f:?}");
    match text.split_once('e') {
        Some((mantissa, exp)) => {
            let (sign, digits) = match exp.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', exp),
            };
            format!("{mantissa}e{sign}{digits:0>2}")
        }
        None => text,
    }
}

/// Python's `json.dumps(v)`: `", "` and `": "` separators, non-ASCII escaped.
pub fn py_json(v: &Value) -> String {
    let mut out = String::new();
    write_json(&mut out, v, ", ", ": ");
    out
}

/// `json.dumps(v, separators=(',', ':'))`: what Patroni writes into the DCS.
pub fn py_json_compact(v: &Value) -> String {
    let mut out = String::new();
    write_json(&mut out, v, ",", ":");
    out
}

fn write_json(out: &mut String, v: &Value, item_sep: &str, key_sep: &str) {
    match v {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => match n.as_f64() {
            Some(f) if n.is_f64() => out.push_str(&py_float_repr(f)),
            _ => out.push_str(&n.to_string()),
        },
        Value::String(s) => json_string(out, s),
        Value::Array(a) => {
            out.push('[');
            for (i, item) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                write_json(out, item, item_sep, key_sep);
            }
            out.push(']');
        }
        Value::Object(m) => {
            out.push('{');
            for (i, (k, item)) in m.iter().enumerate() {
                if i > 0 {
                    out.push_str(item_sep);
                }
                json_string(out, k);
                out.push_str(key_sep);
                write_json(out, item, item_sep, key_sep);
            }
            out.push('}');
        }
    }
}

fn json_string(out: &mut String, s: &str) {
    out.push('"');
    for ch in s.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (' '..='~').contains(&c) => out.push(c),
            c => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn floats_like_python() {
        assert_eq!(py_float_repr(1e16), "1e+16");
        assert_eq!(py_float_repr(1e15), "1000000000000000.0");
        assert_eq!(py_float_repr(0.0001), "0.0001");
        assert_eq!(py_float_repr(0.00001), "1e-05");
        assert_eq!(py_float_repr(1796338500.0), "1796338500.0");
    }

    #[test]
    fn python_json() {
        let v = json!({"Member": "pg1", "TL": 1, "Tags": {"a": "é"}});
        assert_eq!(
            py_json(&v),
            r#"{"Member": "pg1", "TL": 1, "Tags": {"a": "\u00e9"}}"#
        );
        assert_eq!(py_json_compact(&json!({"a": [1, 2]})), r#"{"a":[1,2]}"#);
    }
}
