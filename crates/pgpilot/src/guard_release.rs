//! The guard's way to the DCS (`pgpilot_ha::guard::run_guard`'s `release`): the agent sends its
//! etcd settings as the first line on the guard's pipe (`release {json}`, not on the command line,
//! which every user can read, since it may hold the etcd password), and the guard connects only
//! when it has to give the leader key back: its agent and its PostgreSQL are both gone.

use std::io::BufRead;
use std::path::PathBuf;
use std::time::Duration;

use pgpilot_config::Config;
use pgpilot_dcs::etcd::{EtcdDcs, EtcdOptions, EtcdTls};
use pgpilot_dcs::Dcs;
use pgpilot_ha::guard::Release;
use serde_json::{json, Value};

/// The first word of the preamble line.
const PREAMBLE: &str = "release";

/// The line the agent sends first to its guard.
pub fn preamble(cfg: &Config, retry_timeout: Duration) -> String {
    let etcd = &cfg.etcd;
    let doc = json!({
        "endpoints": etcd.urls(),
        "namespace": cfg.namespace,
        "scope": cfg.scope,
        "name": cfg.name,
        "username": etcd.username,
        "password": etcd.password,
        "discover_members": !etcd.use_proxies,
        "section": etcd.section,
        "cacert": etcd.cacert,
        "cert": etcd.cert,
        "key": etcd.key,
        "key_password": etcd.key_password,
        "retry_timeout_ms": u64::try_from(retry_timeout.as_millis()).unwrap_or(u64::MAX),
    });
    format!("{PREAMBLE} {doc}")
}

/// Reads the preamble from stdin (the guard's first line) and turns it into the release. `None`
/// (logged) when the line is not one: the guard then only fences.
pub fn read_preamble() -> Option<Release> {
    let mut line = String::new();
    if let Err(e) = std::io::stdin().lock().read_line(&mut line) {
        tracing::warn!("guard: can not read the etcd settings from the agent ({e}); the leader key is left to expire");
        return None;
    }
    let Some(options) = line
        .trim_end()
        .strip_prefix(PREAMBLE)
        .and_then(|j| serde_json::from_str::<Value>(j.trim()).ok())
        .and_then(|doc| options(&doc))
    else {
        tracing::warn!("guard: the agent sent no etcd settings; the leader key is left to expire");
        return None;
    };
    Some(Box::new(move || release(options)))
}

fn options(doc: &Value) -> Option<EtcdOptions> {
    let text = |k: &str| doc[k].as_str().map(str::to_string);
    let path = |k: &str| doc[k].as_str().map(PathBuf::from);
    let retry_timeout = Duration::from_millis(doc["retry_timeout_ms"].as_u64()?);
    Some(EtcdOptions {
        endpoints: doc["endpoints"]
            .as_array()?
            .iter()
            .filter_map(|e| e.as_str().map(str::to_string))
            .collect(),
        namespace: text("namespace")?,
        scope: text("scope")?,
        name: text("name")?,
        // The guard grants no lease of its own that matters: it only deletes a key.
        ttl: Duration::from_secs(30),
        retry_timeout,
        loop_wait: Duration::from_secs(1),
        username: text("username"),
        password: text("password"),
        discover_members: doc["discover_members"].as_bool().unwrap_or(true),
        tls: EtcdTls {
            section: text("section").unwrap_or_default(),
            cacert: path("cacert"),
            cert: path("cert"),
            key: path("key"),
            key_password: text("key_password"),
        },
    })
}

/// Deletes the leader key if it still names this member (a value-compare transaction), within
/// two retry_timeouts.
fn release(options: EtcdOptions) -> Result<bool, String> {
    let budget = options.retry_timeout * 2;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("can not start a runtime: {e}"))?;
    runtime.block_on(async move {
        let dcs = EtcdDcs::connect_within(options, budget)
            .await
            .map_err(|e| e.to_string())?;
        let released = dcs.delete_leader().await.map_err(|e| e.to_string());
        if let Err(e) = dcs.close().await {
            tracing::debug!("guard: closing the etcd client: {e}");
        }
        released
    })
}
