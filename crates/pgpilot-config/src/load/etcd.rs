//! The `etcd3` section (and the refused `etcd` one): endpoints, their one scheme, credentials
//! and TLS files; also read alone by pgpilotctl.

use std::path::PathBuf;

use serde_json::Value;

use super::Reader;
use crate::{ConfigError, EtcdConfig};

/// One etcd endpoint as `host:port`: a URL scheme and trailing slash are dropped, the port
/// defaults to 2379.
pub fn etcd_endpoint(h: &str) -> String {
    let h = h.trim();
    let h = h
        .split_once("://")
        .map_or(h, |(_, rest)| rest)
        .trim_end_matches('/');
    if h.rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
    {
        h.to_string()
    } else {
        format!("{h}:2379")
    }
}

/// The endpoints of an etcd section as written: `hosts` (list or comma string), else `host`,
/// `url` or `proxy` (comma strings), each maybe with a scheme.
fn etcd_hosts(r: &mut Reader<'_>, section: &str) -> Vec<String> {
    let split = |s: &str| -> Vec<String> {
        s.split(',')
            .map(str::trim)
            .filter(|x| !x.is_empty())
            .map(str::to_string)
            .collect()
    };
    if let Some(v) = r.get(&format!("{section}.hosts")) {
        return match v {
            Value::Array(a) => a
                .iter()
                .filter_map(Value::as_str)
                .map(|h| h.trim().to_string())
                .collect(),
            Value::String(s) => split(s),
            _ => Vec::new(),
        };
    }
    for key in ["host", "url", "proxy"] {
        if let Some(s) = r.string(&format!("{section}.{key}"), false) {
            return split(&s);
        }
    }
    Vec::new()
}

/// An endpoint as it may be shown: `scheme://user:password@host` loses `user:password@`.
fn without_userinfo(endpoint: &str) -> String {
    // Up to the last `@`, as the endpoint parser reads it: a password may contain `@`.
    match endpoint.split_once("://") {
        Some((scheme, rest)) => match rest.rsplit_once('@') {
            Some((_, host)) => format!("{scheme}://{host}"),
            None => endpoint.to_string(),
        },
        None => endpoint.to_string(),
    }
}

/// The `etcd3` (or `etcd`) section: endpoints, their one scheme, credentials and TLS files.
///
/// The scheme of an endpoint is its URL's (`url: https://...`, `hosts: [https://h:2379]`), else
/// `protocol`, else http. An https endpoint is never turned into a plaintext one: endpoints of
/// different schemes, or a URL scheme that contradicts `protocol`, are refused. As in Patroni,
/// user and password may come from a URL (`https://user:pass@host`).
pub(super) fn etcd_section(
    r: &mut Reader<'_>,
    section: &str,
    warnings: &mut Vec<String>,
) -> EtcdConfig {
    let written = etcd_hosts(r, section);
    if written.is_empty() && r.get(section).is_some() {
        r.problem(&format!("{section}.hosts"), "is not defined.");
    }
    let protocol_key = format!("{section}.protocol");
    let configured = r.string(&protocol_key, false);
    if let Some(p) = &configured {
        if p != "http" && p != "https" {
            r.problem(
                &protocol_key,
                format!("{p} didn't pass validation: expected http or https"),
            );
        }
    }
    let mut schemes: Vec<String> = Vec::new();
    let mut hosts = Vec::new();
    let mut url_user: Option<(String, Option<String>)> = None;
    for h in &written {
        let (scheme, rest) = match h.split_once("://") {
            Some((s, rest)) => (Some(s.to_ascii_lowercase()), rest),
            None => (None, h.as_str()),
        };
        let rest = rest.split('/').next().unwrap_or_default();
        let rest = match rest.rsplit_once('@') {
            Some((userinfo, host)) => {
                let (u, p) = match userinfo.split_once(':') {
                    Some((u, p)) => (u.to_string(), Some(p.to_string())),
                    None => (userinfo.to_string(), None),
                };
                url_user.get_or_insert((u, p));
                host
            }
            None => rest,
        };
        if let Some(s) = &scheme {
            if s != "http" && s != "https" {
                r.problem(
                    &format!("{section}.hosts"),
                    format!(
                        "{} didn't pass validation: the scheme must be http or https",
                        without_userinfo(h)
                    ),
                );
            }
        }
        let scheme = scheme
            .or_else(|| configured.clone())
            .unwrap_or_else(|| "http".into());
        if !schemes.contains(&scheme) {
            schemes.push(scheme);
        }
        hosts.push(etcd_endpoint(rest));
    }
    if schemes.len() > 1 {
        r.problem(
            &format!("{section}.hosts"),
            format!(
                "{} didn't pass validation: the endpoints mix {}; use one scheme for all of them",
                written
                    .iter()
                    .map(|h| without_userinfo(h))
                    .collect::<Vec<_>>()
                    .join(","),
                schemes.join(" and ")
            ),
        );
    }
    let protocol = schemes
        .first()
        .cloned()
        .or_else(|| configured.clone())
        .unwrap_or_else(|| "http".into());
    if let Some(p) = &configured {
        if *p != protocol && schemes.len() == 1 {
            r.problem(
                &protocol_key,
                format!("{p} didn't pass validation: the endpoints say {protocol}"),
            );
        }
    }
    let path = |r: &mut Reader<'_>, key: &str| {
        r.string(&format!("{section}.{key}"), false)
            .map(PathBuf::from)
    };
    let (cacert, cert, key) = (path(r, "cacert"), path(r, "cert"), path(r, "key"));
    if protocol != "https" {
        let unused: Vec<String> = [("cacert", &cacert), ("cert", &cert), ("key", &key)]
            .iter()
            .filter(|(_, v)| v.is_some())
            .map(|(k, _)| format!("{section}.{k}"))
            .collect();
        if !unused.is_empty() {
            warnings.push(format!(
                "{} not used: the etcd endpoints are http (set {section}.protocol: https or https:// URLs for TLS)",
                unused.join(", ")
            ));
        }
    }
    let (url_username, url_password) = url_user.unzip();
    EtcdConfig {
        section: section.to_string(),
        hosts,
        protocol,
        username: r
            .string(&format!("{section}.username"), false)
            .or(url_username),
        password: r
            .string(&format!("{section}.password"), false)
            .or(url_password.flatten()),
        use_proxies: r.get(&format!("{section}.proxy")).is_some()
            || r.boolean(&format!("{section}.use_proxies"))
                .unwrap_or(false),
        cacert,
        cert,
        key,
        key_password: r.string(&format!("{section}.key_password"), false),
    }
}

/// Why an `etcd:` section (Patroni's etcd v2 API) stops the agent and pgpilotctl. The v2 and v3
/// key spaces of etcd are disjoint: read as v3, a section that Patroni members use through v2
/// would show an empty cluster, and an agent could bootstrap a second one beside them.
pub(super) const ETCD_V2_REFUSED: &str =
    "is Patroni's etcd v2 API, which pgpilot does not speak: pgpilot \
     uses etcd's v3 API, whose keys are separate from v2's, so it would not see a cluster kept in \
     v2 and could bootstrap a second one. Rename the section to etcd3 (same keys; \
     PATRONI_ETCD3_* for the environment) once the cluster's keys live in the v3 store: a new \
     cluster, or a Patroni cluster switched to etcd3 (stop it, copy its keys into v3, e.g. \
     `etcdctl migrate` on etcd 3.4, then start the members with etcd3)";

/// The etcd section of a merged document (`etcd3`, else `etcd`), without validating anything
/// else: what pgpilotctl reads. `Ok(None)` when there is no etcd section.
pub fn etcd_from_document(doc: &Value) -> Result<Option<(EtcdConfig, Vec<String>)>, ConfigError> {
    let mut r = Reader {
        doc,
        problems: Vec::new(),
    };
    let Some(section) = ["etcd3", "etcd"].into_iter().find(|s| r.get(s).is_some()) else {
        return Ok(None);
    };
    if section == "etcd" {
        r.problem("etcd", ETCD_V2_REFUSED);
        return Err(ConfigError::Invalid(r.problems));
    }
    let mut warnings = Vec::new();
    let etcd = etcd_section(&mut r, section, &mut warnings);
    if !r.problems.is_empty() {
        return Err(ConfigError::Invalid(r.problems));
    }
    Ok(Some((etcd, warnings)))
}

#[cfg(test)]
mod tests {
    /// Nothing of a URL's user or password survives, whatever characters the password holds.
    #[test]
    fn userinfo_is_dropped_up_to_the_last_at() {
        for (url, shown) in [
            ("https://u:p@h:2379", "https://h:2379"),
            ("https://u:p@ss@h:2379", "https://h:2379"),
            ("http://h:2379", "http://h:2379"),
            ("h:2379", "h:2379"),
        ] {
            assert_eq!(super::without_userinfo(url), shown, "{url}");
        }
    }
}
