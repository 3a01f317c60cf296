//! Calls to members' REST APIs (patronictl's `request_patroni`): the member's `api_url` host with
//! the endpoint as the path, a JSON body, Basic auth from the configuration. Every request is
//! bounded (connect 5 s; the whole request by a per-call timeout).

use std::time::Duration;

use anyhow::{bail, Context};
use pgpilot_dcs::Member;
use reqwest::Method;
use serde_json::Value;

/// A finished HTTP exchange.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub body: String,
}

pub struct Rest {
    client: reqwest::Client,
    auth: Option<(String, Option<String>)>,
}

/// Time allowed for requests that return at once (GET /patroni, PATCH /config, DELETE ...).
pub const SHORT: Duration = Duration::from_secs(30);
/// Time allowed for requests that wait for the cluster (switchover, restart, reinitialize).
pub const LONG: Duration = Duration::from_secs(300);

/// `scheme://netloc/<endpoint>` from an `api_url` (`http://h:p/patroni`).
pub fn endpoint_url(api_url: &str, endpoint: Option<&str>) -> anyhow::Result<String> {
    let Some((scheme, rest)) = api_url.split_once("://") else {
        bail!("invalid api_url {api_url:?}");
    };
    match endpoint {
        None => Ok(api_url.to_string()),
        Some(e) => {
            let netloc = rest.split(['/', '?', '#']).next().unwrap_or(rest);
            Ok(format!("{scheme}://{netloc}/{}", e.trim_start_matches('/')))
        }
    }
}

impl Rest {
    pub fn new(
        auth: Option<(String, Option<String>)>,
        tls: &pgpilot_api::ClientTls,
    ) -> anyhow::Result<Rest> {
        let client = pgpilot_api::tls::client_builder(tls)?
            .connect_timeout(Duration::from_secs(5))
            .no_proxy()
            .build()
            .context("can not build the HTTP client")?;
        Ok(Rest { client, auth })
    }

    /// `method` on `endpoint` of `member` (no endpoint: the `api_url` itself, i.e. `/patroni`).
    pub async fn request(
        &self,
        member: &Member,
        method: Method,
        endpoint: Option<&str>,
        body: Option<&Value>,
        timeout: Duration,
    ) -> anyhow::Result<Reply> {
        if member.data.api_url.is_empty() {
            bail!("member {} has no api_url", member.name);
        }
        let url = endpoint_url(&member.data.api_url, endpoint)?;
        let mut req = self.client.request(method, &url).timeout(timeout);
        if let Some((user, pass)) = &self.auth {
            req = req.basic_auth(user, pass.as_deref());
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.with_context(|| url.clone())?;
        let status = resp.status().as_u16();
        let body = resp.text().await.with_context(|| url.clone())?;
        Ok(Reply { status, body })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_replaces_the_path() {
        assert_eq!(
            endpoint_url("http://127.0.0.1:8008/patroni", Some("switchover")).unwrap(),
            "http://127.0.0.1:8008/switchover"
        );
        assert_eq!(
            endpoint_url("http://h:1/patroni", None).unwrap(),
            "http://h:1/patroni"
        );
        assert!(endpoint_url("h:1", Some("x")).is_err());
    }
}
