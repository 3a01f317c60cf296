//! Outbound REST calls: peers' `/patroni` during a leader race, and the duplicate-name check.

use std::time::Duration;

use serde_json::Value;

/// What a peer's `GET /patroni` says, reduced to what the leader race needs.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerStatus {
    pub name: String,
    /// The peer reports it is not in recovery (`xlog.location` present or role primary).
    pub is_primary: bool,
    /// max(received_location, replayed_location), or location for a primary.
    pub wal_position: u64,
    pub timeline: Option<u32>,
    pub nofailover: bool,
    pub failover_priority: i64,
    pub watchdog_failed: bool,
    /// The whole document, for logs.
    pub raw: Value,
}

impl PeerStatus {
    /// Reads a `/patroni` document; `None` when it has no `xlog` (PostgreSQL not running).
    pub fn from_document(name: &str, doc: Value) -> Option<PeerStatus> {
        let xlog = doc.get("xlog").or_else(|| doc.get("wal"))?.clone();
        let role = doc.get("role").and_then(Value::as_str).unwrap_or("");
        let location = xlog.get("location").and_then(Value::as_u64);
        let is_primary = location.is_some() || role == "primary" || role == "master";
        let wal_position = location.unwrap_or_else(|| {
            let r = xlog
                .get("received_location")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            let p = xlog
                .get("replayed_location")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            r.max(p)
        });
        let tags = doc.get("tags").cloned().unwrap_or(Value::Null);
        let nofailover = tags.get("nofailover").is_some_and(pgpilot_dcs::truthy);
        let failover_priority = tags
            .get("failover_priority")
            .and_then(|v| {
                v.as_i64()
                    .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            })
            .unwrap_or(1);
        Some(PeerStatus {
            name: name.to_string(),
            is_primary,
            wal_position,
            timeline: doc
                .get("timeline")
                .and_then(Value::as_u64)
                .and_then(|t| u32::try_from(t).ok()),
            nofailover: nofailover || failover_priority <= 0,
            failover_priority,
            watchdog_failed: doc.get("watchdog_failed").is_some_and(pgpilot_dcs::truthy),
            raw: doc,
        })
    }
}

/// HTTP client with Basic auth (`ctl.authentication`, else `restapi.authentication`).
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    auth: Option<(String, String)>,
}

impl Client {
    pub fn new(auth: Option<(String, String)>) -> Client {
        crate::tls::install_provider();
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap_or_default();
        Client { http, auth }
    }

    /// A client for peers that may speak HTTPS. Like Patroni's daemon, it does not verify
    /// server certificates unless it presents a client certificate itself.
    pub fn with_tls(
        auth: Option<(String, String)>,
        tls: &crate::ClientTls,
    ) -> Result<Client, crate::TlsError> {
        let mut tls = tls.clone();
        if tls.certfile.is_none() {
            tls.insecure = true;
        }
        let http = crate::tls::client_builder(&tls)?
            .pool_max_idle_per_host(0)
            .build()
            .map_err(|e| crate::TlsError::Config(format!("HTTP client: {e}")))?;
        Ok(Client { http, auth })
    }

    fn get(&self, url: &str, timeout: Duration) -> reqwest::RequestBuilder {
        let mut rb = self.http.get(url).timeout(timeout);
        if let Some((u, p)) = &self.auth {
            rb = rb.basic_auth(u, Some(p));
        }
        rb
    }

    /// `GET <api_url>` (which ends in `/patroni`). `None` when unreachable, not 200, or the reply
    /// has no `xlog` (PostgreSQL not running): such a peer does not take part in the race.
    pub async fn peer_status(
        &self,
        name: &str,
        api_url: &str,
        timeout: Duration,
    ) -> Option<PeerStatus> {
        let resp = self.get(api_url, timeout).send().await.ok()?;
        if resp.status().as_u16() != 200 {
            return None;
        }
        let doc: Value = resp.json().await.ok()?;
        PeerStatus::from_document(name, doc)
    }

    /// The duplicate-name check: `GET <api_url host>/liveness`; `true` if anything answered
    /// with an HTTP response within `timeout`.
    pub async fn answers(&self, api_url: &str, timeout: Duration) -> bool {
        let base = match api_url.split_once("://") {
            Some((scheme, rest)) => format!("{scheme}://{}", rest.split('/').next().unwrap_or("")),
            None => return false,
        };
        self.get(&format!("{base}/liveness"), timeout)
            .send()
            .await
            .is_ok()
    }
}
