//! Outbound REST calls: peers' `/patroni` during a leader race, and the duplicate-name check.

use std::time::Duration;

use pgpilot_types::{PeerStatus, Peers};
use serde_json::Value;

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

    /// `GET <api_url>` (which ends in `/patroni`): see [`Peers::peer_status`].
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

impl Peers for Client {
    async fn peer_status(
        &self,
        name: &str,
        api_url: &str,
        timeout: Duration,
    ) -> Option<PeerStatus> {
        Client::peer_status(self, name, api_url, timeout).await
    }

    async fn answers(&self, api_url: &str, timeout: Duration) -> bool {
        Client::answers(self, api_url, timeout).await
    }
}
