//! What the CLI reads from a Patroni YAML file: the cluster name, the DCS, and REST credentials.
//!
//! The file is loaded with [`pgpilot_config::load_document`] (the same YAML + `PATRONI_*` merge
//! as the agent) but not validated: patronictl accepts any Patroni file, or none at all. Only
//! `scope`, `namespace`, the `etcd3`/`etcd` section, `ctl` and `restapi.authentication` are read.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde_json::{Map, Value};

/// Default `loop_wait`/`ttl`/`retry_timeout` when `/config` has none (Patroni's defaults).
pub const DEFAULT_LOOP_WAIT: u64 = 10;

/// The CLI's view of the configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct CtlConfig {
    pub scope: Option<String>,
    pub namespace: String,
    /// etcd endpoints as URLs (`http://host:port` or `https://host:port`).
    pub endpoints: Vec<String>,
    /// `cacert`/`cert`/`key` of the etcd section, for https endpoints.
    pub etcd_tls: pgpilot_dcs::etcd::EtcdTls,
    /// `use_proxies` (or `proxy`): talk to the endpoints as given, without asking etcd for
    /// its other members.
    pub use_proxies: bool,
    pub etcd_username: Option<String>,
    pub etcd_password: Option<String>,
    /// Basic auth for the REST API: `ctl.authentication`, else `restapi.authentication`.
    pub rest_auth: Option<(String, Option<String>)>,
    /// `ctl.insecure` or `-k`: do not verify the REST API's certificate.
    pub insecure: bool,
    /// `ctl.cacert`, else `restapi.cafile`: CA of the REST API's certificate.
    pub cacert: Option<PathBuf>,
    /// `ctl.certfile`/`ctl.keyfile`: client certificate for the REST API.
    pub certfile: Option<PathBuf>,
    pub keyfile: Option<PathBuf>,
    /// `ctl.keyfile_password`: the password of an encrypted `keyfile`.
    pub keyfile_password: Option<String>,
    /// `citus.group` (Citus is not supported; kept to refuse clearly).
    pub citus_group: Option<i64>,
}

/// The default config path: `~/.config/patroni/patronictl.yaml` (click's app dir on Linux).
pub fn default_config_path(env: &[(String, String)]) -> Option<PathBuf> {
    let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let base = get("XDG_CONFIG_HOME")
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .or_else(|| get("HOME").map(|h| Path::new(&h).join(".config")))?;
    Some(base.join("patroni").join("patronictl.yaml"))
}

/// Schemes accepted by `--dcs-url` and their default ports, in patronictl's order (used to
/// guess a missing scheme from the port).
const DCS_DEFAULTS: &[(&str, u16)] = &[
    ("zookeeper", 2181),
    ("exhibitor", 8181),
    ("consul", 8500),
    ("etcd", 2379),
    ("etcd3", 2379),
];

/// A parsed `--dcs-url DCS://HOST:PORT/NAMESPACE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DcsUrl {
    pub scheme: String,
    pub host: String,
    pub port: u16,
    pub namespace: Option<String>,
}

/// patronictl's `parse_dcs`: scheme defaults by port (else `etcd`), host to `localhost`, port to
/// the scheme's default; a path other than `/` becomes the namespace.
pub fn parse_dcs_url(url: &str) -> anyhow::Result<DcsUrl> {
    let (scheme, rest) = match url.split_once("//") {
        Some((s, r)) => (s.strip_suffix(':').unwrap_or(s), r),
        None => ("", url),
    };
    let (netloc, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    let hostport = netloc.rsplit_once('@').map_or(netloc, |(_, h)| h);
    let (host, port) = if let Some(stripped) = hostport.strip_prefix('[') {
        // [v6]:port
        match stripped.split_once(']') {
            Some((h, p)) => (h.to_string(), p.strip_prefix(':').unwrap_or("")),
            None => bail!("Invalid IPv6 URL: {url}"),
        }
    } else {
        match hostport.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p),
            None => (hostport.to_string(), ""),
        }
    };
    let port: Option<u16> = if port.is_empty() {
        None
    } else {
        Some(
            port.parse()
                .with_context(|| format!("Port could not be cast to integer value as '{port}'"))?,
        )
    };
    let scheme = if scheme.is_empty() {
        DCS_DEFAULTS
            .iter()
            .find(|(_, p)| Some(*p) == port)
            .map_or("etcd", |(s, _)| s)
            .to_string()
    } else {
        let s = scheme.to_ascii_lowercase();
        if !DCS_DEFAULTS.iter().any(|(n, _)| *n == s) {
            bail!("Unknown dcs scheme: {scheme}");
        }
        s
    };
    let default_port = DCS_DEFAULTS
        .iter()
        .find(|(n, _)| *n == scheme)
        .map_or(2379, |(_, p)| *p);
    let path = path.trim();
    Ok(DcsUrl {
        host: if host.is_empty() {
            "localhost".into()
        } else {
            host.to_ascii_lowercase()
        },
        port: port.unwrap_or(default_port),
        namespace: (!path.is_empty() && path != "/").then(|| path.to_string()),
        scheme,
    })
}

fn get<'a>(doc: &'a Value, path: &str) -> Option<&'a Value> {
    let mut cur = doc;
    for part in path.split('.') {
        cur = cur.as_object()?.get(part)?;
    }
    Some(cur).filter(|v| !v.is_null())
}

fn string(doc: &Value, path: &str) -> Option<String> {
    match get(doc, path)? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn credentials(doc: &Value, path: &str) -> Option<(String, Option<String>)> {
    let user = string(doc, &format!("{path}.username"))?;
    Some((user, string(doc, &format!("{path}.password"))))
}

impl CtlConfig {
    /// Builds the CLI configuration from the merged document and `--dcs-url`.
    pub fn from_document(
        mut doc: Value,
        dcs_url: Option<&str>,
        insecure: bool,
    ) -> anyhow::Result<CtlConfig> {
        if let Some(url) = dcs_url {
            let parsed = parse_dcs_url(url)?;
            if let Some(map) = doc.as_object_mut() {
                for (name, _) in DCS_DEFAULTS {
                    map.remove(*name);
                }
                let mut section = Map::new();
                section.insert(
                    "host".into(),
                    Value::from(format!("{}:{}", parsed.host, parsed.port)),
                );
                map.insert(parsed.scheme.clone(), Value::Object(section));
                if let Some(ns) = &parsed.namespace {
                    map.insert("namespace".into(), Value::from(ns.clone()));
                }
            }
        }
        // The same reading of the etcd section as the agent's (schemes, TLS files, refusals).
        let etcd = match pgpilot_config::etcd_from_document(&doc)? {
            Some((etcd, warnings)) => {
                for w in warnings {
                    tracing::warn!("{w}");
                }
                Some(etcd)
            }
            None => {
                if let Some(other) = ["consul", "zookeeper", "exhibitor", "kubernetes", "raft"]
                    .into_iter()
                    .find(|n| get(&doc, n).is_some())
                {
                    bail!("The {other} DCS is not supported by pgpilotctl: only etcd (v3 API)");
                }
                None
            }
        };
        Ok(CtlConfig {
            scope: string(&doc, "scope"),
            namespace: string(&doc, "namespace").unwrap_or_else(|| "/service/".into()),
            endpoints: etcd.as_ref().map(|e| e.urls()).unwrap_or_default(),
            etcd_tls: etcd.as_ref().map(|e| e.tls()).unwrap_or_default(),
            use_proxies: etcd.as_ref().is_some_and(|e| e.use_proxies),
            etcd_username: etcd.as_ref().and_then(|e| e.username.clone()),
            etcd_password: etcd.as_ref().and_then(|e| e.password.clone()),
            rest_auth: credentials(&doc, "ctl.authentication")
                .or_else(|| credentials(&doc, "restapi.authentication")),
            insecure: insecure || get(&doc, "ctl.insecure").is_some_and(pgpilot_dcs::truthy),
            cacert: string(&doc, "ctl.cacert")
                .or_else(|| string(&doc, "restapi.cafile"))
                .map(PathBuf::from),
            certfile: string(&doc, "ctl.certfile").map(PathBuf::from),
            keyfile: string(&doc, "ctl.keyfile").map(PathBuf::from),
            keyfile_password: string(&doc, "ctl.keyfile_password"),
            citus_group: get(&doc, "citus.group").and_then(Value::as_i64),
        })
    }

    /// Loads `path` (an explicit path must exist; the default one may be missing), merges
    /// `PATRONI_*` variables, then applies `--dcs-url`.
    pub fn load(
        path: Option<&Path>,
        explicit: bool,
        env: &[(String, String)],
        dcs_url: Option<&str>,
        insecure: bool,
    ) -> anyhow::Result<CtlConfig> {
        let readable = path.is_some_and(|p| std::fs::File::open(p).is_ok());
        if explicit && !readable {
            bail!(
                "Provided config file {} not existing or no read rights. Check the -c/--config-file parameter",
                path.map(|p| p.display().to_string()).unwrap_or_default()
            );
        }
        let doc = pgpilot_config::load_document(path.filter(|_| readable), env)?;
        CtlConfig::from_document(doc, dcs_url, insecure)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn url(s: &str) -> DcsUrl {
        parse_dcs_url(s).unwrap()
    }

    #[test]
    fn dcs_url_forms() {
        assert_eq!(
            url("etcd3://127.0.0.1:2399/customnamespace"),
            DcsUrl {
                scheme: "etcd3".into(),
                host: "127.0.0.1".into(),
                port: 2399,
                namespace: Some("/customnamespace".into()),
            }
        );
        let u = url("etcd://:2399");
        assert_eq!((u.host.as_str(), u.port), ("localhost", 2399));
        let u = url("etcd://test");
        assert_eq!((u.host.as_str(), u.port, u.namespace), ("test", 2379, None));
        let u = url("");
        assert_eq!(
            (u.scheme.as_str(), u.host.as_str(), u.port),
            ("etcd", "localhost", 2379)
        );
        // No scheme: guessed from the port.
        assert_eq!(url("localhost:8500").scheme, "consul");
        assert_eq!(url("Host.Example:2379/").scheme, "etcd");
        assert_eq!(url("Host.Example:2379/").host, "host.example");
        assert_eq!(url("etcd3://h/").namespace, None);
    }

    #[test]
    fn dcs_url_errors() {
        assert_eq!(
            parse_dcs_url("redis://x").unwrap_err().to_string(),
            "Unknown dcs scheme: redis"
        );
        assert!(parse_dcs_url("etcd3://h:port").is_err());
    }

    #[test]
    fn dcs_url_replaces_the_dcs_section() {
        let doc = json!({"scope": "demo", "etcd3": {"hosts": ["a:1", "b"]},
                         "restapi": {"authentication": {"username": "u", "password": "p"}}});
        let c = CtlConfig::from_document(doc.clone(), None, false).unwrap();
        assert_eq!(c.endpoints, vec!["http://a:1", "http://b:2379"]);
        assert_eq!(c.namespace, "/service/");
        assert_eq!(c.rest_auth, Some(("u".into(), Some("p".into()))));
        let c = CtlConfig::from_document(doc, Some("etcd3://x:2400/ns"), true).unwrap();
        assert_eq!(c.endpoints, vec!["http://x:2400"]);
        assert_eq!(c.namespace, "/ns");
        assert!(c.insecure);
    }

    #[test]
    fn ctl_auth_wins_and_other_dcs_refused() {
        let doc = json!({"etcd3": {"host": "h:1"},
                         "ctl": {"authentication": {"username": "c"}},
                         "restapi": {"authentication": {"username": "u", "password": "p"}}});
        let c = CtlConfig::from_document(doc, None, false).unwrap();
        assert_eq!(c.endpoints, vec!["http://h:1"]);
        assert_eq!(c.rest_auth, Some(("c".into(), None)));
        // Patroni's v2 section is never read as v3 (disjoint key spaces).
        let err = CtlConfig::from_document(json!({"etcd": {"host": "h:1"}}), None, false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("etcd") && err.contains("v2"), "{err}");
        let err = CtlConfig::from_document(json!({"consul": {"host": "h"}}), None, false)
            .unwrap_err()
            .to_string();
        assert!(err.contains("consul"), "{err}");
    }
}
