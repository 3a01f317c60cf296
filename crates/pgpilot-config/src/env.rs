//! `PATRONI_*` environment variables merged over the file (spec/config.md §3.13).

use serde_json::{Map, Value};

use crate::yaml;

const DCS_SUFFIXES: &[&str] = &[
    "HOST",
    "HOSTS",
    "PORT",
    "USE_PROXIES",
    "PROTOCOL",
    "SRV",
    "SRV_SUFFIX",
    "URL",
    "PROXY",
    "CACERT",
    "CERT",
    "KEY",
    "VERIFY",
    "TOKEN",
    "CHECKS",
    "DC",
    "CONSISTENCY",
    "REGISTER_SERVICE",
    "SERVICE_CHECK_INTERVAL",
    "SERVICE_CHECK_TLS_SERVER_NAME",
    "SERVICE_TAGS",
    "NAMESPACE",
    "CONTEXT",
    "USE_ENDPOINTS",
    "SCOPE_LABEL",
    "ROLE_LABEL",
    "POD_IP",
    "PORTS",
    "LABELS",
    "BYPASS_API_SERVICE",
    "RETRIABLE_HTTP_CODES",
    "KEY_PASSWORD",
    "USE_SSL",
    "SET_ACLS",
    "GROUP",
    "DATABASE",
    "LEADER_LABEL_VALUE",
    "FOLLOWER_LABEL_VALUE",
    "STANDBY_LEADER_LABEL_VALUE",
    "TMP_ROLE_LABEL",
    "AUTH_DATA",
    "BOOTSTRAP_LABELS",
];
const USER_PARAMS: &[&str] = &[
    "USERNAME",
    "PASSWORD",
    "SSLMODE",
    "SSLCERT",
    "SSLKEY",
    "SSLPASSWORD",
    "SSLROOTCERT",
    "SSLCRL",
    "SSLCRLDIR",
    "GSSENCMODE",
    "CHANNEL_BINDING",
    "SSLNEGOTIATION",
];

fn set(doc: &mut Map<String, Value>, path: &[&str], value: Value) {
    let mut cur = doc;
    for key in &path[..path.len() - 1] {
        let entry = cur
            .entry(key.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
        if !entry.is_object() {
            *entry = Value::Object(Map::new());
        }
        // Just made sure it is an object.
        let Value::Object(next) = entry else { return };
        cur = next;
    }
    cur.insert(path[path.len() - 1].to_string(), value);
}

/// Patroni's `parse_bool` of a variable; `None` when it is no boolean word, and then Patroni
/// ignores the variable (the file's value, if any, stays).
fn parse_bool(s: &str) -> Option<Value> {
    pgpilot_values::parse_bool_str(s).map(Value::Bool)
}

fn parse_int(s: &str) -> Value {
    s.trim()
        .parse::<i64>()
        .map_or_else(|_| Value::from(s), Value::from)
}

/// A YAML list given as `'h1:2379','h2:2379'` or `[a, b]` or `a,b`.
fn parse_list(s: &str) -> Value {
    let t = s.trim();
    let wrapped = if t.starts_with('[') {
        t.to_string()
    } else {
        format!("[{t}]")
    };
    match yaml::parse(&wrapped, "environment") {
        Ok(v @ Value::Array(_)) => v,
        _ => Value::Array(t.split(',').map(|x| Value::from(x.trim())).collect()),
    }
}

fn parse_dict(s: &str) -> Value {
    match yaml::parse(s, "environment") {
        Ok(v @ Value::Object(_)) => v,
        _ => Value::from(s),
    }
}

/// Merges recognised `PATRONI_*` variables into `doc`.
pub fn apply(doc: &mut Map<String, Value>, env: &[(String, String)]) {
    for (name, value) in env {
        // pgpilot's own variables: only `PGPILOT_GUARD` so far (`pgpilot.guard`).
        if name == "PGPILOT_GUARD" {
            let v = parse_bool(value).unwrap_or_else(|| Value::from(value.clone()));
            set(doc, &["pgpilot", "guard"], v);
            continue;
        }
        let Some(rest) = name.strip_prefix("PATRONI_") else {
            continue;
        };
        let v = value.clone();
        match rest {
            "NAME" | "NAMESPACE" | "SCOPE" => {
                set(doc, &[rest.to_ascii_lowercase().as_str()], Value::from(v));
                continue;
            }
            "THREAD_POOL_SIZE" => {
                set(doc, &["thread_pool_size"], parse_int(&v));
                continue;
            }
            "LOGLEVEL" => {
                set(doc, &["log", "level"], Value::from(v));
                continue;
            }
            "CONFIGURATION" => continue,
            _ => {}
        }
        if let Some(p) = rest.strip_prefix("RESTAPI_") {
            let key = p.to_ascii_lowercase();
            let val = match p {
                "USERNAME" | "PASSWORD" => {
                    set(doc, &["restapi", "authentication", &key], Value::from(v));
                    continue;
                }
                "HTTP_EXTRA_HEADERS" | "HTTPS_EXTRA_HEADERS" => parse_dict(&v),
                "ALLOWLIST" => parse_list(&v),
                "ALLOWLIST_INCLUDE_MEMBERS" => match parse_bool(&v) {
                    Some(b) => b,
                    None => continue,
                },
                "REQUEST_QUEUE_SIZE" => parse_int(&v),
                "LISTEN" | "CONNECT_ADDRESS" | "CERTFILE" | "KEYFILE" | "KEYFILE_PASSWORD"
                | "CAFILE" | "CIPHERS" | "VERIFY_CLIENT" | "SERVER_TOKENS" => Value::from(v),
                _ => continue,
            };
            set(doc, &["restapi", &key], val);
        } else if let Some(p) = rest.strip_prefix("CTL_") {
            let key = p.to_ascii_lowercase();
            match p {
                "USERNAME" | "PASSWORD" => {
                    set(doc, &["ctl", "authentication", &key], Value::from(v))
                }
                "INSECURE" => {
                    if let Some(b) = parse_bool(&v) {
                        set(doc, &["ctl", "insecure"], b)
                    }
                }
                "CACERT" | "CERTFILE" | "KEYFILE" | "KEYFILE_PASSWORD" => {
                    set(doc, &["ctl", &key], Value::from(v))
                }
                _ => {}
            }
        } else if let Some(p) = rest.strip_prefix("POSTGRESQL_") {
            let key = p.to_ascii_lowercase();
            match p {
                "LISTEN" | "CONNECT_ADDRESS" | "PROXY_ADDRESS" | "CONFIG_DIR" | "DATA_DIR"
                | "PGPASS" | "BIN_DIR" => set(doc, &["postgresql", &key], Value::from(v)),
                _ => {
                    if let Some(bin) = p.strip_prefix("BIN_") {
                        let b = bin.to_ascii_lowercase();
                        if [
                            "pg_ctl",
                            "initdb",
                            "pg_controldata",
                            "pg_basebackup",
                            "postgres",
                            "pg_isready",
                            "pg_rewind",
                        ]
                        .contains(&b.as_str())
                        {
                            set(doc, &["postgresql", "bin_name", &b], Value::from(v));
                        }
                    }
                }
            }
        } else if let Some((user, p)) = ["REPLICATION_", "SUPERUSER_", "REWIND_"]
            .iter()
            .find_map(|u| rest.strip_prefix(u).map(|p| (u.trim_end_matches('_'), p)))
        {
            if USER_PARAMS.contains(&p) {
                let u = user.to_ascii_lowercase();
                set(
                    doc,
                    &["postgresql", "authentication", &u, &p.to_ascii_lowercase()],
                    Value::from(v),
                );
            }
        } else if let Some(p) = rest.strip_prefix("LOG_") {
            let key = p.to_ascii_lowercase();
            let val = match p {
                "MAX_QUEUE_SIZE" | "FILE_SIZE" | "FILE_NUM" | "MODE" => parse_int(&v),
                "STATIC_FIELDS" | "LOGGERS" => parse_dict(&v),
                "DEDUPLICATE_HEARTBEAT_LOGS" => match parse_bool(&v) {
                    Some(b) => b,
                    None => continue,
                },
                "TYPE" | "LEVEL" | "TRACEBACK_LEVEL" | "FORMAT" | "DATEFORMAT" | "DIR" => {
                    Value::from(v)
                }
                _ => continue,
            };
            set(doc, &["log", &key], val);
        } else if let Some((section, suffix)) = DCS_SUFFIXES
            .iter()
            .filter_map(|s| rest.strip_suffix(&format!("_{s}")).map(|sec| (sec, *s)))
            .max_by_key(|(_, s)| s.len())
        {
            if section.is_empty() || section.contains('_') && !section.starts_with("ETCD") {
                continue;
            }
            let sec = section.to_ascii_lowercase();
            let val = match suffix {
                "PORT" | "GROUP" => parse_int(&v),
                "HOSTS" | "PORTS" | "CHECKS" | "SERVICE_TAGS" | "RETRIABLE_HTTP_CODES" => {
                    parse_list(&v)
                }
                "LABELS" | "SET_ACLS" | "AUTH_DATA" | "BOOTSTRAP_LABELS" => parse_dict(&v),
                "USE_PROXIES" | "REGISTER_SERVICE" | "USE_ENDPOINTS" | "BYPASS_API_SERVICE"
                | "VERIFY" => match parse_bool(&v) {
                    Some(b) => b,
                    None => continue,
                },
                _ => Value::from(v),
            };
            set(doc, &[&sec, &suffix.to_ascii_lowercase()], val);
        } else if let Some(p) = rest
            .strip_prefix("ETCD3_")
            .or_else(|| rest.strip_prefix("ETCD_"))
        {
            if p == "USERNAME" || p == "PASSWORD" {
                let sec = if rest.starts_with("ETCD3_") {
                    "etcd3"
                } else {
                    "etcd"
                };
                set(doc, &[sec, &p.to_ascii_lowercase()], Value::from(v));
            }
        }
    }
}
