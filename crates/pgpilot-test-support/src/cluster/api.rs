//! The harness's calls to a member's REST API (status, `/config`, switchover) and its reads of
//! the cluster's keys in etcd.

use std::time::Duration;

use anyhow::{ensure, Context};
use serde_json::{json, Value};

use super::{Cluster, API_AUTH};
use crate::FAILOVER_TIMEOUT;

impl Cluster {
    /// `GET <path>` on member `i`'s REST API: status code and JSON body (a non-JSON body comes
    /// back as a JSON string). Err when the API does not answer.
    pub async fn api_get(&self, i: usize, path: &str) -> anyhow::Result<(u16, Value)> {
        let url = format!("{}{path}", self.members[i].api_base());
        let reply = self
            .http
            .get(&url)
            .send()
            .await
            .with_context(|| format!("GET {url}"))?;
        let code = reply.status().as_u16();
        let text = reply
            .text()
            .await
            .with_context(|| format!("GET {url}: body"))?;
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        Ok((code, body))
    }

    /// `PATCH /config` on member `i` with `body` (authenticated): `(status, body text)`.
    pub async fn patch_config(&self, i: usize, body: Value) -> anyhow::Result<(u16, String)> {
        self.api_call(i, "PATCH", "/config", Some(body), true).await
    }

    /// `<method> <path>` on member `i`'s REST API with a JSON body (`None`: no body at all) and,
    /// when `auth`, the harness's Basic credentials: status code and body text.
    pub async fn api_call(
        &self,
        i: usize,
        method: &str,
        path: &str,
        body: Option<Value>,
        auth: bool,
    ) -> anyhow::Result<(u16, String)> {
        let url = format!("{}{path}", self.members[i].api_base());
        let method = reqwest::Method::from_bytes(method.as_bytes())?;
        let mut rb = self
            .http
            .request(method.clone(), &url)
            .timeout(Duration::from_secs(60));
        if auth {
            rb = rb.basic_auth(API_AUTH.0, Some(API_AUTH.1));
        }
        if let Some(b) = body {
            rb = rb
                .header("Content-Type", "application/json")
                .body(b.to_string());
        }
        let reply = rb.send().await.with_context(|| format!("{method} {url}"))?;
        let code = reply.status().as_u16();
        Ok((code, reply.text().await.unwrap_or_default()))
    }

    /// `POST /switchover` on member `leader` naming it the leader and, if given, `candidate`;
    /// asserts the answer is 200 and returns its text (Patroni's `Successfully switched over
    /// to "<name>"`).
    pub async fn switchover(&self, leader: usize, candidate: Option<usize>) -> String {
        let mut body = json!({ "leader": self.members[leader].name });
        if let Some(c) = candidate {
            body["candidate"] = json!(self.members[c].name);
        }
        let (code, text) = self
            .api_call(leader, "POST", "/switchover", Some(body), true)
            .await
            .unwrap_or_else(|e| panic!("POST /switchover: {e:#}"));
        assert_eq!(code, 200, "POST /switchover: {text}");
        text
    }

    /// Waits until member `i` reports itself a running primary in `/patroni` (a switchover's
    /// API answer comes when the leader key moved, before the promotion ends) and returns its
    /// timeline.
    pub async fn primary_timeline(&self, i: usize) -> u64 {
        let name = &self.members[i].name;
        self.wait(
            FAILOVER_TIMEOUT,
            &format!("{name} to run as primary"),
            async || {
                let p = self.patroni(i).await?;
                ensure!(
                    p["role"] == "primary" && p["state"] == "running",
                    "{name}: {p}"
                );
                p["timeline"].as_u64().context("no timeline")
            },
        )
        .await
    }

    /// `GET /patroni` of member `i` (Err unless the API answers 200).
    pub async fn patroni(&self, i: usize) -> anyhow::Result<Value> {
        let (code, body) = self.api_get(i, "/patroni").await?;
        ensure!(
            code == 200,
            "GET /patroni on {}: {code} {body}",
            self.members[i].name
        );
        Ok(body)
    }

    // -----------------------------------------------------------------------------------------
    // etcd

    /// `/service/<scope>/<rel>`.
    pub fn key(&self, rel: &str) -> String {
        format!("/service/{}/{rel}", self.options.scope)
    }

    /// The value of `/service/<scope>/<rel>` (e.g. `leader`, `initialize`, `members/pg-0`).
    pub fn etcd_get(&self, rel: &str) -> Option<String> {
        self.etcd.get(&self.key(rel)).expect("read etcd")
    }

    /// Like [`Cluster::etcd_get`], `None` also when etcd does not answer (a fault may be on).
    pub fn etcd_try_get(&self, rel: &str) -> Option<String> {
        self.etcd.get(&self.key(rel)).ok().flatten()
    }

    /// The leader key's value (the member name), read from etcd.
    pub fn leader_name(&self) -> Option<String> {
        self.etcd_try_get("leader")
    }

    pub fn leader_index(&self) -> Option<usize> {
        self.leader_name().and_then(|n| self.index_of(&n))
    }
}
