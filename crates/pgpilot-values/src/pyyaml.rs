//! YAML text exactly as PyYAML's `safe_dump` writes it (patronictl's output, Patroni's
//! `--generate-config`).
//!
//! patronictl renders every document with `yaml.safe_dump(data, default_flow_style=..,
//! allow_unicode=True, width=200)` (keys sorted, YAML 1.1 quoting rules) and machine output with
//! Python's `json.dumps` (`", "`/`": "` separators, ASCII only). `show-config` output is what users
//! diff and what `edit-config` compares, so byte-compatibility matters more than generality: this
//! emitter covers the subset Patroni documents contain (maps, lists, strings, numbers, booleans,
//! null). Line folding at 200 columns is not implemented.

use serde_json::{Map, Value};

use crate::python::py_float_repr;

/// `yaml.safe_dump(v, default_flow_style=flow, allow_unicode=True, width=200)`.
pub fn dump(v: &Value, flow: bool) -> String {
    let mut out = String::new();
    if flow {
        flow_node(&mut out, v);
        out.push('\n');
        return out;
    }
    match v {
        Value::Object(m) if !m.is_empty() => write_map(&mut out, m, 0, false),
        Value::Array(a) if !a.is_empty() => write_seq(&mut out, a, 0, false),
        other => {
            let (text, plain) = scalar(other, 2, false);
            out.push_str(&text);
            out.push('\n');
            // PyYAML closes a document whose root is a plain scalar with an explicit end marker.
            if plain && !matches!(other, Value::Object(_) | Value::Array(_)) {
                out.push_str("...\n");
            }
        }
    }
    out
}

fn sorted(m: &Map<String, Value>) -> Vec<(&String, &Value)> {
    let mut entries: Vec<_> = m.iter().collect();
    entries.sort_by(|a, b| a.0.cmp(b.0));
    entries
}

fn write_map(out: &mut String, m: &Map<String, Value>, indent: usize, first_inline: bool) {
    for (i, (k, v)) in sorted(m).into_iter().enumerate() {
        if i > 0 || !first_inline {
            out.push_str(&" ".repeat(indent));
        }
        out.push_str(&key(k));
        out.push(':');
        match v {
            Value::Object(sub) if !sub.is_empty() => {
                out.push('\n');
                write_map(out, sub, indent + 2, false);
            }
            // PyYAML does not indent a sequence that is a mapping value.
            Value::Array(items) if !items.is_empty() => {
                out.push('\n');
                write_seq(out, items, indent, false);
            }
            other => {
                out.push(' ');
                out.push_str(&scalar(other, indent + 2, false).0);
                out.push('\n');
            }
        }
    }
}

fn write_seq(out: &mut String, items: &[Value], indent: usize, first_inline: bool) {
    for (i, item) in items.iter().enumerate() {
        if i > 0 || !first_inline {
            out.push_str(&" ".repeat(indent));
        }
        out.push_str("- ");
        match item {
            Value::Object(m) if !m.is_empty() => write_map(out, m, indent + 2, true),
            Value::Array(a) if !a.is_empty() => write_seq(out, a, indent + 2, true),
            other => {
                out.push_str(&scalar(other, indent + 2, false).0);
                out.push('\n');
            }
        }
    }
}

fn flow_node(out: &mut String, v: &Value) {
    match v {
        Value::Object(m) => {
            out.push('{');
            for (i, (k, v)) in sorted(m).into_iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&scalar(&Value::String(k.clone()), 2, true).0);
                out.push_str(": ");
                flow_node(out, v);
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, v) in a.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                flow_node(out, v);
            }
            out.push(']');
        }
        other => out.push_str(&scalar(other, 2, true).0),
    }
}

fn key(k: &str) -> String {
    let a = analyze(k);
    if !resolves_implicitly(k) && a.block_plain && !a.multiline {
        k.to_string()
    } else if a.single_quoted && !a.multiline {
        single_quoted(k, 0)
    } else {
        double_quoted(k)
    }
}

/// A scalar (or empty collection) and whether it was written plain.
fn scalar(v: &Value, indent: usize, flow: bool) -> (String, bool) {
    match v {
        Value::Null => ("null".into(), true),
        Value::Bool(b) => (b.to_string(), true),
        Value::Number(n) => (number(n), true),
        Value::Object(_) => ("{}".into(), false),
        Value::Array(_) => ("[]".into(), false),
        Value::String(s) => {
            let a = analyze(s);
            let plain_ok = if flow { a.flow_plain } else { a.block_plain };
            if !s.is_empty() && !resolves_implicitly(s) && plain_ok {
                (s.clone(), true)
            } else if a.single_quoted {
                (single_quoted(s, indent), false)
            } else {
                (double_quoted(s), false)
            }
        }
    }
}

/// A number as PyYAML writes it (floats: `1.0e+20`, `0.5`, `100.0`, `.inf`).
pub fn number(n: &serde_json::Number) -> String {
    if n.is_i64() || n.is_u64() {
        return n.to_string();
    }
    let f = n.as_f64().unwrap_or(0.0);
    if f.is_nan() {
        return ".nan".into();
    }
    if f.is_infinite() {
        return if f > 0.0 {
            ".inf".into()
        } else {
            "-.inf".into()
        };
    }
    let text = py_float_repr(f).to_lowercase();
    if !text.contains('.') && text.contains('e') {
        text.replacen('e', ".0e", 1)
    } else {
        text
    }
}

#[derive(Debug, Default)]
struct Analysis {
    multiline: bool,
    flow_plain: bool,
    block_plain: bool,
    single_quoted: bool,
}

fn is_space_or_break(c: char) -> bool {
    matches!(
        c,
        '\0' | ' ' | '\t' | '\r' | '\n' | '\u{85}' | '\u{2028}' | '\u{2029}'
    )
}

fn is_break(c: char) -> bool {
    matches!(c, '\n' | '\u{85}' | '\u{2028}' | '\u{2029}')
}

/// PyYAML's `Emitter.analyze_scalar`, with `allow_unicode=True`.
fn analyze(s: &str) -> Analysis {
    let chars: Vec<char> = s.chars().collect();
    if chars.is_empty() {
        return Analysis {
            single_quoted: true,
            ..Default::default()
        };
    }
    let mut block_ind = false;
    let mut flow_ind = false;
    let mut line_breaks = false;
    let mut special = false;
    let (mut leading_space, mut leading_break) = (false, false);
    let (mut trailing_space, mut trailing_break) = (false, false);
    let (mut break_space, mut space_break) = (false, false);
    if s.starts_with("---") || s.starts_with("...") {
        block_ind = true;
        flow_ind = true;
    }
    let mut preceded_ws = true;
    let mut followed_ws = chars.len() == 1 || is_space_or_break(chars[1]);
    let (mut prev_space, mut prev_break) = (false, false);
    for (i, &ch) in chars.iter().enumerate() {
        if i == 0 {
            if "#,[]{}&*!|>'\"%@`".contains(ch) {
                flow_ind = true;
                block_ind = true;
            }
            if ch == '?' || ch == ':' {
                flow_ind = true;
                if followed_ws {
                    block_ind = true;
                }
            }
            if ch == '-' && followed_ws {
                flow_ind = true;
                block_ind = true;
            }
        } else {
            if ",?[]{}".contains(ch) {
                flow_ind = true;
            }
            if ch == ':' {
                flow_ind = true;
                if followed_ws {
                    block_ind = true;
                }
            }
            if ch == '#' && preceded_ws {
                flow_ind = true;
                block_ind = true;
            }
        }
        if is_break(ch) {
            line_breaks = true;
        }
        if !(ch == '\n' || (' '..='~').contains(&ch)) {
            let printable_unicode = (ch == '\u{85}'
                || ('\u{A0}'..='\u{D7FF}').contains(&ch)
                || ('\u{E000}'..='\u{FFFD}').contains(&ch)
                || ('\u{10000}'..'\u{10FFFF}').contains(&ch))
                && ch != '\u{FEFF}';
            if !printable_unicode {
                special = true;
            }
        }
        if ch == ' ' {
            if i == 0 {
                leading_space = true;
            }
            if i == chars.len() - 1 {
                trailing_space = true;
            }
            if prev_break {
                break_space = true;
            }
            prev_space = true;
            prev_break = false;
        } else if is_break(ch) {
            if i == 0 {
                leading_break = true;
            }
            if i == chars.len() - 1 {
                trailing_break = true;
            }
            if prev_space {
                space_break = true;
            }
            prev_space = false;
            prev_break = true;
        } else {
            prev_space = false;
            prev_break = false;
        }
        preceded_ws = is_space_or_break(ch);
        followed_ws = i + 2 >= chars.len() || is_space_or_break(chars[i + 2]);
    }
    let mut a = Analysis {
        multiline: line_breaks,
        flow_plain: true,
        block_plain: true,
        single_quoted: true,
    };
    if leading_space || leading_break || trailing_space || trailing_break {
        a.flow_plain = false;
        a.block_plain = false;
    }
    if break_space {
        a.flow_plain = false;
        a.block_plain = false;
        a.single_quoted = false;
    }
    if space_break || special {
        a.flow_plain = false;
        a.block_plain = false;
        a.single_quoted = false;
    }
    if line_breaks {
        a.flow_plain = false;
        a.block_plain = false;
    }
    if flow_ind {
        a.flow_plain = false;
    }
    if block_ind {
        a.block_plain = false;
    }
    a
}

fn single_quoted(s: &str, indent: usize) -> String {
    let mut out = String::from("'");
    let chars: Vec<char> = s.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let ch = chars[i];
        if is_break(ch) {
            let start = i;
            while i < chars.len() && is_break(chars[i]) {
                i += 1;
            }
            if chars[start] == '\n' {
                out.push('\n');
            }
            for &br in &chars[start..i] {
                if br == '\n' {
                    out.push('\n');
                } else {
                    out.push(br);
                }
            }
            out.push_str(&" ".repeat(indent));
            continue;
        }
        if ch == '\'' {
            out.push_str("''");
        } else {
            out.push(ch);
        }
        i += 1;
    }
    out.push('\'');
    out
}

fn double_quoted(s: &str) -> String {
    let mut out = String::from("\"");
    for ch in s.chars() {
        match ch {
            '\0' => out.push_str("\\0"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{b}' => out.push_str("\\v"),
            '\u{c}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            '\u{1b}' => out.push_str("\\e"),
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{85}' => out.push_str("\\N"),
            '\u{a0}' => out.push_str("\\_"),
            '\u{2028}' => out.push_str("\\L"),
            '\u{2029}' => out.push_str("\\P"),
            c if (' '..='~').contains(&c) => out.push(c),
            c if ('\u{A0}'..='\u{D7FF}').contains(&c)
                || ('\u{E000}'..='\u{FFFD}').contains(&c) && c != '\u{FEFF}'
                || ('\u{10000}'..'\u{10FFFF}').contains(&c) =>
            {
                out.push(c)
            }
            c if (c as u32) <= 0xFF => out.push_str(&format!("\\x{:02X}", c as u32)),
            c if (c as u32) <= 0xFFFF => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push_str(&format!("\\U{:08X}", c as u32)),
        }
    }
    out.push('"');
    out
}

/// Whether PyYAML's YAML 1.1 implicit resolvers would read `s` as something other than a string
/// (bool, null, int, float, timestamp, merge `<<`, value `=`): such strings must be quoted.
pub fn resolves_implicitly(s: &str) -> bool {
    matches!(
        s,
        "yes"
            | "Yes"
            | "YES"
            | "no"
            | "No"
            | "NO"
            | "true"
            | "True"
            | "TRUE"
            | "false"
            | "False"
            | "FALSE"
            | "on"
            | "On"
            | "ON"
            | "off"
            | "Off"
            | "OFF"
            | "~"
            | "null"
            | "Null"
            | "NULL"
            | ""
            | "<<"
            | "="
    ) || is_yaml_int(s)
        || is_yaml_float(s)
        || is_yaml_timestamp(s)
}

fn strip_sign(s: &str) -> &str {
    s.strip_prefix(['-', '+']).unwrap_or(s)
}

fn all(s: &str, f: impl Fn(char) -> bool) -> bool {
    !s.is_empty() && s.chars().all(f)
}

/// `:[0-5]?[0-9]` groups, one or more.
fn sexagesimal_tail(s: &str) -> bool {
    let mut parts = s.split(':');
    if parts.next() != Some("") {
        return false;
    }
    let mut n = 0;
    for p in parts {
        n += 1;
        let ok = match p.len() {
            1 => p.as_bytes()[0].is_ascii_digit(),
            2 => (b'0'..=b'5').contains(&p.as_bytes()[0]) && p.as_bytes()[1].is_ascii_digit(),
            _ => false,
        };
        if !ok {
            return false;
        }
    }
    n > 0
}

/// `[1-9][0-9_]*` followed by sexagesimal groups.
fn sexagesimal(s: &str) -> bool {
    let Some(colon) = s.find(':') else {
        return false;
    };
    let (head, tail) = s.split_at(colon);
    head.starts_with(|c: char| ('1'..='9').contains(&c))
        && all(head, |c| c.is_ascii_digit() || c == '_')
        && sexagesimal_tail(tail)
}

fn is_yaml_int(s: &str) -> bool {
    let u = strip_sign(s);
    if let Some(b) = u.strip_prefix("0b") {
        return all(b, |c| c == '0' || c == '1' || c == '_');
    }
    if let Some(x) = u.strip_prefix("0x") {
        return all(x, |c| c.is_ascii_hexdigit() || c == '_');
    }
    if u == "0" {
        return true;
    }
    if let Some(o) = u.strip_prefix('0') {
        return all(o, |c| ('0'..='7').contains(&c) || c == '_');
    }
    if u.starts_with(|c: char| ('1'..='9').contains(&c))
        && all(u, |c| c.is_ascii_digit() || c == '_')
    {
        return true;
    }
    sexagesimal(u)
}

fn exponent_ok(e: &str) -> bool {
    match e.strip_prefix(['e', 'E']) {
        Some(rest) => rest.starts_with(['-', '+']) && all(&rest[1..], |c| c.is_ascii_digit()),
        None => e.is_empty(),
    }
}

fn is_yaml_float(s: &str) -> bool {
    if matches!(s, ".nan" | ".NaN" | ".NAN") {
        return true;
    }
    let u = strip_sign(s);
    if matches!(u, ".inf" | ".Inf" | ".INF") {
        return true;
    }
    // [0-9][0-9_]*\.[0-9_]*(e[-+][0-9]+)?
    if let Some(dot) = u.find('.') {
        let (int, rest) = u.split_at(dot);
        let rest = &rest[1..];
        let frac_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '_'))
            .unwrap_or(rest.len());
        let (_, exp) = rest.split_at(frac_end);
        if int.starts_with(|c: char| c.is_ascii_digit())
            && all(int, |c| c.is_ascii_digit() || c == '_')
            && exponent_ok(exp)
        {
            return true;
        }
        // \.[0-9_]+(e[-+][0-9]+)?  (unsigned in PyYAML's pattern)
        if int.is_empty() && u.len() == s.len() && frac_end > 0 && exponent_ok(exp) {
            return true;
        }
        // [0-9][0-9_]*(:[0-5]?[0-9])+\.[0-9_]*
        if frac_end == rest.len() && int.contains(':') {
            let colon = int.find(':').unwrap_or(0);
            let (head, tail) = int.split_at(colon);
            if head.starts_with(|c: char| c.is_ascii_digit())
                && all(head, |c| c.is_ascii_digit() || c == '_')
                && sexagesimal_tail(tail)
            {
                return true;
            }
        }
    }
    false
}

fn digits(s: &str, min: usize, max: usize) -> bool {
    (min..=max).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
}

fn is_yaml_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    if b.len() == 10 && digits(&s[0..4], 4, 4) && b[4] == b'-' && b[7] == b'-' {
        return digits(&s[5..7], 2, 2) && digits(&s[8..10], 2, 2);
    }
    // yyyy-m?m-d?d(T|t|[ \t]+)h?h:mm:ss(.frac)?([ \t]*(Z|[-+]h?h(:mm)?))?
    let Some(t) = s.find(['T', 't', ' ', '\t']) else {
        return false;
    };
    let date: Vec<&str> = s[..t].split('-').collect();
    if date.len() != 3 || !digits(date[0], 4, 4) || !digits(date[1], 1, 2) || !digits(date[2], 1, 2)
    {
        return false;
    }
    let rest = s[t..].trim_start_matches(['T', 't']);
    let rest = if s[t..].starts_with(['T', 't']) {
        rest
    } else {
        rest.trim_start_matches([' ', '\t'])
    };
    let time_end = rest
        .find(|c: char| !(c.is_ascii_digit() || c == ':' || c == '.'))
        .unwrap_or(rest.len());
    let (time, tz) = rest.split_at(time_end);
    let (hms, _frac) = time.split_once('.').unwrap_or((time, ""));
    let parts: Vec<&str> = hms.split(':').collect();
    if parts.len() != 3
        || !digits(parts[0], 1, 2)
        || !digits(parts[1], 2, 2)
        || !digits(parts[2], 2, 2)
    {
        return false;
    }
    let tz = tz.trim_start_matches([' ', '\t']);
    if tz.is_empty() || tz == "Z" {
        return true;
    }
    let Some(off) = tz.strip_prefix(['-', '+']) else {
        return false;
    };
    let (h, m) = off.split_once(':').unwrap_or((off, "00"));
    digits(h, 1, 2) && digits(m, 2, 2)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn block_style_like_pyyaml() {
        let v = json!({
            "ttl": 30,
            "postgresql": {"parameters": {"wal_log_hints": "on", "max_connections": 100,
                "wal_keep_size": "128MB"}, "use_pg_rewind": true, "pg_hba": ["host all all 0.0.0.0/0 md5"]},
            "loop_wait": 10,
            "empty": {},
            "nothing": null,
            "list_of_maps": [{"b": 1, "a": "x"}, []],
        });
        assert_eq!(
            dump(&v, false),
            "empty: {}\n\
             list_of_maps:\n\
             - a: x\n  b: 1\n\
             - []\n\
             loop_wait: 10\n\
             nothing: null\n\
             postgresql:\n  \
               parameters:\n    \
                 max_connections: 100\n    \
                 wal_keep_size: 128MB\n    \
                 wal_log_hints: 'on'\n  \
               pg_hba:\n  \
               - host all all 0.0.0.0/0 md5\n  \
               use_pg_rewind: true\n\
             ttl: 30\n"
        );
    }

    #[test]
    fn flow_style_for_tags() {
        let v = json!({"replicatefrom": "pg1", "nofailover": true, "x": [1, "a b"]});
        assert_eq!(
            dump(&v, true),
            "{nofailover: true, replicatefrom: pg1, x: [1, a b]}\n"
        );
    }

    #[test]
    fn quoting_rules() {
        let q = |s: &str| scalar(&Value::String(s.into()), 2, false).0;
        assert_eq!(q("on"), "'on'");
        assert_eq!(q("10"), "'10'");
        assert_eq!(q("0700"), "'0700'");
        assert_eq!(q("1.5"), "'1.5'");
        assert_eq!(q("127.0.0.1"), "127.0.0.1");
        assert_eq!(q("127.0.0.1:5432"), "127.0.0.1:5432");
        assert_eq!(q("1:30"), "'1:30'");
        assert_eq!(q("*"), "'*'");
        assert_eq!(q(""), "''");
        assert_eq!(q("a: b"), "'a: b'");
        assert_eq!(q("it's"), "it's");
        assert_eq!(q("'x'"), "'''x'''");
        assert_eq!(q(" lead"), "' lead'");
        assert_eq!(q("2024-01-02"), "'2024-01-02'");
        assert_eq!(
            q("2024-08-28T19:39:26.352526+00:00"),
            "'2024-08-28T19:39:26.352526+00:00'"
        );
        assert_eq!(q("tab\there"), "\"tab\\there\"");
        assert_eq!(q("a\nb"), "'a\n\n  b'");
        assert_eq!(q("héllo"), "héllo");
        assert_eq!(q("- x"), "'- x'");
        assert_eq!(q("-x"), "-x");
        assert_eq!(
            q("host all all 0.0.0.0/0 md5"),
            "host all all 0.0.0.0/0 md5"
        );
    }

    #[test]
    fn floats_like_python() {
        let n = |f: f64| number(&serde_json::Number::from_f64(f).unwrap());
        assert_eq!(n(0.5), "0.5");
        assert_eq!(n(100.0), "100.0");
        assert_eq!(n(1e20), "1.0e+20");
        assert_eq!(n(1e-5), "1.0e-05");
    }
}
