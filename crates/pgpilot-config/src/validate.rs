//! `--validate-config`: the full schema check (spec/config.md §3.14), every problem with its
//! key path. Unlike a normal start it also refuses loopback `connect_address`es (Patroni does).

use serde_json::Value;

use crate::load::Reader;
use crate::{load_from_value, ConfigError, Problem};

const LOG_LEVELS: &[&str] = &[
    "DEBUG", "INFO", "WARN", "WARNING", "ERROR", "FATAL", "CRITICAL",
];

/// The full schema check behind `--validate-config`: every problem, each with its key path.
pub fn validate(doc: &Value) -> Vec<Problem> {
    let mut problems = match load_from_value(doc.clone()) {
        // The TLS files of https etcd endpoints are read as a start would read them.
        Ok(loaded) if loaded.config.etcd.protocol == "https" => {
            match loaded.config.etcd.tls().check() {
                Ok(()) => Vec::new(),
                Err(e) => vec![Problem {
                    path: loaded.config.etcd.section.clone(),
                    message: e.to_string(),
                }],
            }
        }
        Ok(_) => Vec::new(),
        Err(ConfigError::Invalid(p)) => p,
        Err(e) => vec![Problem {
            path: "<root>".into(),
            message: e.to_string(),
        }],
    };
    let mut r = Reader {
        doc,
        problems: Vec::new(),
    };
    let mut bad = |path: &str, msg: String| {
        problems.push(Problem {
            path: path.into(),
            message: msg,
        })
    };
    for path in ["restapi.connect_address", "postgresql.connect_address"] {
        if let Some(addr) = r.string(path, false) {
            let host = addr.rsplit_once(':').map_or(addr.as_str(), |(h, _)| h);
            if ["127.0.0.1", "0.0.0.0", "*", "::1", "localhost", "[::1]"].contains(&host) {
                bad(path, format!("{addr} didn't pass validation: must not contain \"127.0.0.1\", \"0.0.0.0\", \"*\", \"::1\", \"localhost\""));
            }
        }
    }
    if let Some(level) = r.string("log.level", false) {
        if !LOG_LEVELS.contains(&level.to_ascii_uppercase().as_str()) {
            bad(
                "log.level",
                format!(
                    "{level} didn't pass validation: must be one of {}",
                    LOG_LEVELS.join(", ")
                ),
            );
        }
    }
    let enums: &[(&str, &[&str])] = &[
        ("restapi.verify_client", &["none", "optional", "required"]),
        (
            "restapi.server_tokens",
            &["original", "productonly", "minimal"],
        ),
        ("log.type", &["plain", "json"]),
    ];
    for (path, allowed) in enums {
        if let Some(v) = r.string(path, false) {
            if !allowed.contains(&v.to_ascii_lowercase().as_str()) {
                bad(
                    path,
                    format!(
                        "{v} didn't pass validation: must be one of {}",
                        allowed.join(", ")
                    ),
                );
            }
        }
    }
    if let Some(v) = r.get("bootstrap.dcs.synchronous_mode") {
        if pgpilot_values::SyncMode::parse(v).is_none() {
            bad(
                "bootstrap.dcs.synchronous_mode",
                format!("{v} didn't pass validation: must be a boolean or quorum"),
            );
        }
    }
    // Below Patroni's floors only with pgpilot's guard on (crate::dynamic).
    let fenced = r.boolean("pgpilot.guard").unwrap_or(true);
    let floors = [
        (
            "ttl",
            crate::dynamic::MIN_TTL,
            crate::dynamic::FENCED_MIN_TTL,
        ),
        ("loop_wait", 1, 1),
        (
            "retry_timeout",
            crate::dynamic::MIN_RETRY_TIMEOUT,
            crate::dynamic::FENCED_MIN_RETRY_TIMEOUT,
        ),
    ];
    for (key, patroni_min, fenced_min) in floors {
        let path = format!("bootstrap.dcs.{key}");
        let min = if fenced { fenced_min } else { patroni_min } as f64;
        if let Some(n) = r.number(&path) {
            if n < min {
                let why = if !fenced && n >= fenced_min as f64 {
                    " (a shorter one needs pgpilot's guard: pgpilot.guard on)"
                } else if fenced && patroni_min != fenced_min {
                    " (with pgpilot's guard on; Patroni's own minimum is higher)"
                } else {
                    ""
                };
                bad(
                    &path,
                    format!("{n} didn't pass validation: must be at least {min}{why}"),
                );
            }
        }
    }
    let ranges: &[(&str, f64, f64)] = &[
        ("max_connections", 1.0, 262_143.0),
        ("max_locks_per_transaction", 10.0, 2_147_483_647.0),
        ("max_prepared_transactions", 0.0, 262_143.0),
        ("max_replication_slots", 0.0, 262_143.0),
        ("max_wal_senders", 0.0, 262_143.0),
        ("max_worker_processes", 0.0, 262_143.0),
    ];
    for (name, lo, hi) in ranges {
        let path = format!("bootstrap.dcs.postgresql.parameters.{name}");
        if let Some(n) = r.number(&path) {
            if n < *lo || n > *hi {
                bad(
                    &path,
                    format!("{n} didn't pass validation: not in range {lo}..{hi}"),
                );
            }
        }
    }
    if let Some(dir) = r.string("postgresql.data_dir", false) {
        let p = std::path::Path::new(&dir);
        if p.is_dir()
            && std::fs::read_dir(p).is_ok_and(|mut d| d.next().is_some())
            && !p.join("PG_VERSION").exists()
        {
            bad(
                "postgresql.data_dir",
                format!(
                    "{dir} didn't pass validation: not empty and not a PostgreSQL data directory"
                ),
            );
        }
    }
    if let Some(dir) = r.string("postgresql.bin_dir", false) {
        for bin in ["postgres", "pg_ctl", "initdb", "pg_controldata"] {
            if !std::path::Path::new(&dir).join(bin).exists() {
                bad(
                    "postgresql.bin_dir",
                    format!("{dir} didn't pass validation: {bin} not found"),
                );
                break;
            }
        }
    }
    problems.append(&mut r.problems);
    problems
}
