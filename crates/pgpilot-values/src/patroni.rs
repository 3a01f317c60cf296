//! How Patroni reads the loosely typed values of its documents: `/config`, member tags, REST
//! request bodies and `PATRONI_*` variables. One function for each reading, so the agent, the
//! REST API, `pgpilotctl` and the configuration loader cannot drift apart.

use serde_json::{Map, Value};

/// The keys of a `postgresql.authentication.<role>` entry besides `username` and `password`:
/// the libpq options Patroni accepts there (its `_AUTH_ALLOWED_PARAMETERS`) and passes on to
/// every connection made as that role.
pub const AUTH_LIBPQ_OPTIONS: &[&str] = &[
    "sslmode",
    "sslcert",
    "sslkey",
    "sslpassword",
    "sslrootcert",
    "sslcrl",
    "sslcrldir",
    "gssencmode",
    "channel_binding",
    "sslnegotiation",
];

/// Patroni's `utils.parse_bool`: `str(value).lower()` is one of `on`, `true`, `yes`, `1` (true)
/// or `off`, `false`, `no`, `0` (false); anything else is `None`.
///
/// Whole words only: `y`, `n`, `o`, `t`, `of` and the empty string are `None` (prefixes are
/// PostgreSQL's rule for GUC booleans, not Patroni's). Numbers read as their Python `str()`:
/// `1` and `0` only, so `2` and `1.0` are `None`; null, arrays and objects are `None`.
pub fn parse_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) => parse_bool_str(s),
        Value::Number(n) if n.is_f64() => None,
        Value::Number(n) => match n.as_i64() {
            Some(1) => Some(true),
            Some(0) => Some(false),
            _ => None,
        },
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

/// [`parse_bool`] of a string (an environment variable, a query parameter).
pub fn parse_bool_str(s: &str) -> Option<bool> {
    match s.to_lowercase().as_str() {
        "on" | "true" | "yes" | "1" => Some(true),
        "off" | "false" | "no" | "0" => Some(false),
        _ => None,
    }
}

/// Patroni's `bool(parse_bool(value))` (`global_config.check_mode`): true only for a value
/// [`parse_bool`] reads as true; false, absent-like and unrecognised values are false.
pub fn truthy(v: &Value) -> bool {
    parse_bool(v) == Some(true)
}

/// Python's `bool(value)` of a JSON value: `None`, `False`, `0`, `""`, `[]` and `{}` are false.
pub fn py_truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(m) => !m.is_empty(),
    }
}

/// Patroni's `global_config.is_standby_cluster`, the one rule for "this is a standby cluster"
/// read by the agent, the REST API and the CLI: `/config.standby_cluster` is a mapping whose
/// `host`, `port` or `restore_command` is set (Python-truthy).
pub fn is_standby_cluster(config: &Map<String, Value>) -> bool {
    config
        .get("standby_cluster")
        .and_then(Value::as_object)
        .is_some_and(|s| {
            ["host", "port", "restore_command"]
                .iter()
                .any(|k| s.get(*k).is_some_and(py_truthy))
        })
}

/// Patroni's `parse_int` of a tag: a number, or a string holding one.
fn tag_int(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A boolean tag with its priority companion (`nofailover`/`failover_priority`,
/// `nosync`/`sync_priority`), as Patroni's `Tags._bool_tag` reads it: the boolean when it is
/// set at all (it wins over the priority), else `priority <= 0`.
pub fn bool_tag(tags: &Map<String, Value>, bool_name: &str, priority_name: &str) -> bool {
    match tags.get(bool_name) {
        Some(Value::Null) | None => tag_int(tags.get(priority_name)).is_some_and(|p| p <= 0),
        Some(v) => truthy(v),
    }
}

/// The priority of such a pair, as Patroni's `Tags._priority_tag`: 0 when the boolean is true,
/// else the priority tag, 1 when absent or not a number.
pub fn priority_tag(tags: &Map<String, Value>, bool_name: &str, priority_name: &str) -> i64 {
    if tags.get(bool_name).is_some_and(truthy) {
        return 0;
    }
    tag_int(tags.get(priority_name)).unwrap_or(1)
}

/// Patroni's warnings for contradictory tags (`nofailover: true` with a positive
/// `failover_priority`, or `false` with one `<= 0`; the same for `nosync`/`sync_priority`),
/// word for word: log alerts match them.
pub fn conflicting_tags(tags: &Map<String, Value>) -> Vec<String> {
    let python = |v: &Value| match v {
        Value::Bool(true) => "True".to_string(),
        Value::Bool(false) => "False".to_string(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let mut out = Vec::new();
    for (b, p) in [
        ("nofailover", "failover_priority"),
        ("nosync", "sync_priority"),
    ] {
        let (Some(bv), Some(pv)) = (tags.get(b), tag_int(tags.get(p))) else {
            continue;
        };
        let on = truthy(bv);
        if (on && pv > 0) || (!on && pv <= 0) {
            let shown = python(bv);
            out.push(format!(
                "Conflicting configuration between {b}: {shown} and {p}: {pv}. Defaulting to {b}: {shown}"
            ));
        }
    }
    out
}

/// A YAML value as PostgreSQL takes it in postgresql.conf: booleans `on`/`off`, strings as
/// they are, null empty.
pub fn guc_value(v: &Value) -> String {
    match v {
        Value::Bool(true) => "on".into(),
        Value::Bool(false) => "off".into(),
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// `synchronous_mode` of `/config` (spec/ha-loop.md §5.7–5.8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMode {
    #[default]
    Off,
    On,
    Quorum,
}

impl SyncMode {
    /// Patroni's `validator.validate_synchronous_mode`: the string `quorum` in any case, else
    /// whatever [`parse_bool`] reads. `None`: a value the validator rejects.
    pub fn parse(v: &Value) -> Option<SyncMode> {
        if v.as_str().is_some_and(|s| s.to_lowercase() == "quorum") {
            return Some(SyncMode::Quorum);
        }
        parse_bool(v).map(|on| if on { SyncMode::On } else { SyncMode::Off })
    }

    /// What the agent, the REST API and the CLI act on (Patroni's `is_quorum_commit_mode` and
    /// `check_mode('synchronous_mode')`): absent and invalid values mean off.
    pub fn from_value(v: Option<&Value>) -> SyncMode {
        v.and_then(SyncMode::parse).unwrap_or_default()
    }

    /// `on` or `quorum`: synchronous replication is requested.
    pub fn is_active(self) -> bool {
        self != SyncMode::Off
    }

    pub fn is_quorum(self) -> bool {
        self == SyncMode::Quorum
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Strings: whole words in any case; no prefixes, no single letters, no trimming.
    const TRUE_WORDS: &[&str] = &["on", "ON", "true", "True", "yes", "Yes", "YES", "1"];
    const FALSE_WORDS: &[&str] = &["off", "Off", "false", "FALSE", "no", "No", "0"];
    const NO_WORDS: &[&str] = &[
        "y", "Y", "n", "t", "f", "o", "of", "ye", "tru", "", " on", "on ", "2", "-1", "1.0",
        "none", "null", "quorum", "garbage",
    ];

    #[test]
    fn parse_bool_is_patronis_whole_word_rule() {
        let words = [
            (TRUE_WORDS, Some(true)),
            (FALSE_WORDS, Some(false)),
            (NO_WORDS, None),
        ];
        let mut cases: Vec<(Value, Option<bool>)> = words
            .iter()
            .flat_map(|(list, want)| list.iter().map(|s| (json!(s), *want)))
            .collect();
        // Other JSON values read as their Python str(): True, False, 1, 0, 2, 1.0, None, [], {}.
        cases.extend([
            (json!(true), Some(true)),
            (json!(false), Some(false)),
            (json!(1), Some(true)),
            (json!(0), Some(false)),
        ]);
        let others = [
            json!(2),
            json!(-1),
            json!(1.0),
            json!(0.0),
            Value::Null,
            json!([]),
            json!({}),
        ];
        cases.extend(others.into_iter().map(|v| (v, None)));
        for (input, want) in &cases {
            assert_eq!(parse_bool(input), *want, "parse_bool({input})");
            assert_eq!(truthy(input), *want == Some(true), "truthy({input})");
            if let Value::String(s) = input {
                assert_eq!(parse_bool_str(s), *want, "parse_bool_str({s:?})");
            }
        }
    }

    #[test]
    fn sync_mode_accepts_what_patronis_validator_accepts() {
        let quorum = ["quorum", "Quorum", "QUORUM"].map(|s| (json!(s), Some(SyncMode::Quorum)));
        // Everything else is parse_bool's: the same words, the same refusals.
        let words = [
            (TRUE_WORDS, Some(SyncMode::On)),
            (FALSE_WORDS, Some(SyncMode::Off)),
        ];
        let mut cases: Vec<(Value, Option<SyncMode>)> = words
            .iter()
            .flat_map(|(list, want)| list.iter().map(|s| (json!(s), *want)))
            .chain(quorum)
            .collect();
        cases.extend([
            (json!(true), Some(SyncMode::On)),
            (json!(0), Some(SyncMode::Off)),
        ]);
        let refused = ["quorum ", "y", "o", "", "sync", "any"].map(|s| json!(s));
        cases.extend(
            refused
                .into_iter()
                .chain([json!(2), Value::Null])
                .map(|v| (v, None)),
        );
        for (input, want) in &cases {
            assert_eq!(SyncMode::parse(input), *want, "SyncMode::parse({input})");
            let read = SyncMode::from_value(Some(input));
            assert_eq!(read, want.unwrap_or(SyncMode::Off), "from_value({input})");
        }
        assert_eq!(SyncMode::from_value(None), SyncMode::Off);
        assert!(SyncMode::On.is_active() && !SyncMode::On.is_quorum());
        assert!(SyncMode::Quorum.is_active() && SyncMode::Quorum.is_quorum());
        assert!(!SyncMode::Off.is_active());
    }
}

#[cfg(test)]
mod tag_tests {
    use super::*;
    use serde_json::json;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap_or_default()
    }

    /// Patroni's `Tags` rules: the boolean wins when set; the priority decides alone otherwise.
    #[test]
    fn boolean_and_priority_tags_follow_patroni() {
        let cases = [
            (json!({}), false, 1),
            (json!({"failover_priority": 0}), true, 0),
            (json!({"failover_priority": "2"}), false, 2),
            (json!({"nofailover": true, "failover_priority": 1}), true, 0),
            (
                json!({"nofailover": false, "failover_priority": 0}),
                false,
                0,
            ),
            (json!({"nofailover": true}), true, 0),
        ];
        for (tags, nofailover, priority) in cases {
            let t = map(tags.clone());
            assert_eq!(
                bool_tag(&t, "nofailover", "failover_priority"),
                nofailover,
                "{tags}"
            );
            assert_eq!(
                priority_tag(&t, "nofailover", "failover_priority"),
                priority,
                "{tags}"
            );
        }
    }

    #[test]
    fn conflicts_are_worded_as_patroni_words_them() {
        assert_eq!(
            conflicting_tags(&map(json!({"nofailover": true, "failover_priority": 1}))),
            ["Conflicting configuration between nofailover: True and failover_priority: 1. Defaulting to nofailover: True"]
        );
        assert_eq!(
            conflicting_tags(&map(json!({"nosync": false, "sync_priority": "0"}))),
            ["Conflicting configuration between nosync: False and sync_priority: 0. Defaulting to nosync: False"]
        );
        assert!(
            conflicting_tags(&map(json!({"nofailover": true, "failover_priority": 0}))).is_empty()
        );
        assert!(conflicting_tags(&map(json!({"failover_priority": 0}))).is_empty());
    }
}
