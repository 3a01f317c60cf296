//! `pgpilot.client_continuity`: the poolers and proxies a planned switchover pauses and
//! re-points (see [`ClientContinuity`]).
//!
//! This is pgpilot's own section, so, unlike Patroni's keys, an unknown key in it is refused
//! rather than warned about: a misspelt `pause_timeout` would otherwise silently hold clients
//! for the default time, and a misspelt `primary_backend` would steer nothing.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde_json::Value;

use super::Reader;
use crate::{ClientContinuity, HaproxyAddress, HaproxyTarget};

const SECTION: &str = "pgpilot.client_continuity";
const KEYS: &[&str] = &["pause_timeout", "pgbouncer", "haproxy"];
const HAPROXY_KEYS: &[&str] = &[
    "socket",
    "address",
    "primary_backend",
    "replica_backend",
    "servers",
];
/// The longest `pause_timeout` accepted: clients held longer than this are better served by
/// an error they can retry.
const MAX_PAUSE: f64 = 300.0;

/// The section, or `None` when it is absent (or has a problem, recorded in `r`).
pub(super) fn client_continuity(r: &mut Reader<'_>) -> Option<ClientContinuity> {
    let section = r.get(SECTION)?;
    let Value::Object(m) = section else {
        r.problem(
            SECTION,
            format!("{section} didn't pass validation: expected a mapping"),
        );
        return None;
    };
    let before = r.problems.len();
    refuse_unknown(r, SECTION, m.keys(), KEYS);
    let pause = format!("{SECTION}.pause_timeout");
    let pause_timeout = match r.number(&pause) {
        None => 5.0,
        Some(n) if n > 0.0 && n <= MAX_PAUSE => n,
        Some(n) => {
            r.problem(
                &pause,
                format!("{n} didn't pass validation: must be more than 0 and at most {MAX_PAUSE} seconds"),
            );
            5.0
        }
    };
    let pgbouncer = pgbouncers(r);
    let haproxy = haproxies(r);
    if pgbouncer.is_empty() && haproxy.is_empty() {
        r.problem(
            SECTION,
            "names neither a pgbouncer nor an haproxy: remove the section or fill one in",
        );
    }
    (r.problems.len() == before).then(|| ClientContinuity {
        pause_timeout: Duration::from_secs_f64(pause_timeout),
        pgbouncer,
        haproxy,
    })
}

/// Each key of a mapping at `path` that is not one of `known` is a problem.
fn refuse_unknown<'k>(
    r: &mut Reader<'_>,
    path: &str,
    keys: impl Iterator<Item = &'k String>,
    known: &[&str],
) {
    for k in keys {
        if !known.contains(&k.as_str()) {
            r.problem(
                &format!("{path}.{k}"),
                format!("unknown key (expected one of {})", known.join(", ")),
            );
        }
    }
}

/// The list at `<section>.key` (a single item is a list of one), or empty; each item with its
/// path (`<section>.key[i]`).
fn items<'a>(r: &mut Reader<'a>, key: &str) -> Vec<(String, &'a Value)> {
    let path = format!("{SECTION}.{key}");
    let list = match r.get(&path) {
        None => Vec::new(),
        Some(Value::Array(items)) => items.iter().collect(),
        Some(one) => vec![one],
    };
    list.into_iter()
        .enumerate()
        .map(|(i, v)| (format!("{path}[{i}]"), v))
        .collect()
}

/// `pgbouncer`: admin console connection strings; each must parse as libpq's and name the
/// database `pgbouncer`, the only one where `PAUSE` and `RESUME` exist.
fn pgbouncers(r: &mut Reader<'_>) -> Vec<String> {
    let mut out = Vec::new();
    for (at, item) in items(r, "pgbouncer") {
        let Value::String(conninfo) = item else {
            r.problem(
                &at,
                format!("{item} didn't pass validation: expected a connection string"),
            );
            continue;
        };
        match tokio_postgres::Config::from_str(conninfo) {
            Ok(c) if c.get_dbname() == Some("pgbouncer") => out.push(conninfo.clone()),
            Ok(_) => r.problem(
                &at,
                "didn't pass validation: the admin console is database pgbouncer (dbname=pgbouncer)",
            ),
            // The message of a libpq parse error never repeats the string (it may hold a
            // password).
            Err(e) => r.problem(&at, format!("didn't pass validation: {e}")),
        }
    }
    out
}

/// `haproxy`: one mapping per HAProxy.
fn haproxies(r: &mut Reader<'_>) -> Vec<HaproxyTarget> {
    let mut out = Vec::new();
    for (at, item) in items(r, "haproxy") {
        let Value::Object(m) = item else {
            r.problem(
                &at,
                format!("{item} didn't pass validation: expected a mapping"),
            );
            continue;
        };
        refuse_unknown(r, &at, m.keys(), HAPROXY_KEYS);
        let text = |r: &mut Reader<'_>, key: &str| -> Option<String> {
            match m.get(key) {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
                Some(other) => {
                    r.problem(
                        &format!("{at}.{key}"),
                        format!("{other} didn't pass validation: expected a non-empty string"),
                    );
                    None
                }
            }
        };
        let address = match (text(r, "socket"), text(r, "address")) {
            (Some(s), None) => Some(HaproxyAddress::Unix(PathBuf::from(s))),
            (None, Some(a)) => match a.rsplit_once(':').map(|(_, p)| p.parse::<u16>()) {
                Some(Ok(_)) => Some(HaproxyAddress::Tcp(a)),
                _ => {
                    r.problem(
                        &format!("{at}.address"),
                        format!("{a} didn't pass validation: expected host:port"),
                    );
                    None
                }
            },
            (Some(_), Some(_)) => {
                r.problem(&at, "give either socket or address, not both");
                None
            }
            (None, None) => {
                r.problem(
                    &at,
                    "names no runtime API: give socket (a unix socket path) or address (host:port)",
                );
                None
            }
        };
        let primary_backend = text(r, "primary_backend");
        if primary_backend.is_none() && !m.contains_key("primary_backend") {
            r.problem(&format!("{at}.primary_backend"), "is not defined.");
        }
        let replica_backend = text(r, "replica_backend");
        let mut servers = BTreeMap::new();
        match m.get("servers") {
            None | Some(Value::Null) => {}
            Some(Value::Object(s)) => {
                for (member, server) in s {
                    match server {
                        Value::String(name) if !name.trim().is_empty() => {
                            servers.insert(member.clone(), name.trim().to_string());
                        }
                        other => r.problem(
                            &format!("{at}.servers.{member}"),
                            format!("{other} didn't pass validation: expected a server name"),
                        ),
                    }
                }
            }
            Some(other) => r.problem(
                &format!("{at}.servers"),
                format!(
                    "{other} didn't pass validation: expected a mapping of member name to server name"
                ),
            ),
        }
        if let (Some(address), Some(primary_backend)) = (address, primary_backend) {
            out.push(HaproxyTarget {
                address,
                primary_backend,
                replica_backend,
                servers,
            });
        }
    }
    out
}
