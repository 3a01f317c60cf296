//! `pause` and `resume`: switch the cluster's automatic management off or on, optionally waiting
//! until every member has seen it (`patronictl pause` / `patronictl resume`).

use std::collections::HashMap;
use std::time::Duration;

use anyhow::bail;
use pgpilot_dcs::etcd::EtcdDcs;
use pgpilot_dcs::{Cluster, Dcs};
use reqwest::Method;
use serde_json::{json, Value};

use super::console::echo;
use super::members::members_leader_first;
use super::Ctx;
use crate::config::DEFAULT_LOOP_WAIT;
use crate::http::SHORT;
use crate::list::GlobalConfig;

pub(super) async fn toggle_pause(
    ctx: &mut Ctx,
    name: &str,
    paused: bool,
    wait: bool,
) -> anyhow::Result<()> {
    let dcs = ctx.dcs(name).await?;
    let c = dcs.cluster_fresh().await?;
    if GlobalConfig::from_cluster(&c).is_paused() == paused {
        bail!(
            "Cluster is {} paused",
            if paused { "already" } else { "not" }
        );
    }
    let (verb, done) = if paused {
        ("pause", "paused")
    } else {
        ("resume", "resumed")
    };
    let body = json!({"pause": if paused { Value::Bool(true) } else { Value::Null }});
    for m in members_leader_first(&c) {
        let r = match ctx
            .request(&m, Method::PATCH, Some("config"), Some(&body), SHORT)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!("{e:#}");
                tracing::warn!("Member {} is not accessible", m.name);
                continue;
            }
        };
        if r.status == 200 {
            if wait {
                wait_until_pause_is_applied(&dcs, paused, &c).await?;
            } else {
                echo(&format!("Success: cluster management is {done}"));
            }
        } else {
            echo(&format!(
                "Failed: {verb} cluster management status code={}, ({})",
                r.status, r.body
            ));
        }
        return Ok(());
    }
    bail!("Can not find accessible cluster member")
}

async fn wait_until_pause_is_applied(
    dcs: &EtcdDcs,
    paused: bool,
    old: &Cluster,
) -> anyhow::Result<()> {
    echo(&format!(
        "'{}' request sent, waiting until it is recognized by all nodes",
        if paused { "pause" } else { "resume" }
    ));
    let versions: HashMap<&str, i64> = old
        .members
        .iter()
        .filter(|m| !m.data.api_url.is_empty())
        .map(|m| (m.name.as_str(), m.version))
        .collect();
    let loop_wait = GlobalConfig::from_cluster(old).loop_wait(DEFAULT_LOOP_WAIT);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(loop_wait + 1);
    let applied = |c: &Cluster| {
        c.members
            .iter()
            .filter(|m| versions.contains_key(m.name.as_str()))
            .all(|m| m.data.pause.unwrap_or(false) == paused)
    };
    let mut cluster = dcs.cluster_fresh().await?;
    while !applied(&cluster) {
        if tokio::time::Instant::now() >= deadline {
            let remaining: Vec<&str> = cluster
                .members
                .iter()
                .filter(|m| {
                    m.data.pause.unwrap_or(false) != paused
                        && versions
                            .get(m.name.as_str())
                            .is_some_and(|v| *v != m.version)
                })
                .map(|m| m.name.as_str())
                .collect();
            if !remaining.is_empty() {
                echo(&format!(
                    "{} members didn't recognized pause state after {loop_wait} seconds",
                    remaining.join(", ")
                ));
                return Ok(());
            }
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        cluster = dcs.cluster_fresh().await?;
    }
    echo(&format!(
        "Success: cluster management is {}",
        if paused { "paused" } else { "resumed" }
    ));
    Ok(())
}
