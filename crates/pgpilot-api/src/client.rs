//! Outbound REST calls: peers' `/patroni` during a leader race, the duplicate-name check, and
//! failsafe mode's `POST /failsafe`.

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
        let Some(base) = base_url(api_url) else {
            return false;
        };
        self.get(&format!("{base}/liveness"), timeout)
            .send()
            .await
            .is_ok()
    }

    /// `POST <api_url host>/failsafe` with `body` (Patroni's `call_failsafe_member`): `true`
    /// only for 200 `Accepted`. The answer is logged as Patroni does.
    pub async fn post_failsafe(&self, api_url: &str, body: &Value, timeout: Duration) -> bool {
        let Some(base) = base_url(api_url) else {
            return false;
        };
        let url = format!("{base}/failsafe");
        let mut rb = self.http.post(&url).timeout(timeout).json(body);
        if let Some((u, p)) = &self.auth {
            rb = rb.basic_auth(u, Some(p));
        }
        match rb.send().await {
            Ok(resp) => {
                let code = resp.status().as_u16();
                let text = resp.text().await.unwrap_or_default();
                tracing::info!("Got response from {url}: {code} {text}");
                code == 200 && text == "Accepted"
            }
            Err(e) => {
                tracing::warn!("Request failed: POST {url} ({e})");
                false
            }
        }
    }
}

/// `scheme://host:port` of an api_url (Patroni's `get_endpoint_url` drops the path).
fn base_url(api_url: &str) -> Option<String> {
    let (scheme, rest) = api_url.split_once("://")?;
    Some(format!(
        "{scheme}://{}",
        rest.split('/').next().unwrap_or("")
    ))
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

    async fn post_failsafe(&self, api_url: &str, body: &Value, timeout: Duration) -> bool {
        Client::post_failsafe(self, api_url, body, timeout).await
    }
}
