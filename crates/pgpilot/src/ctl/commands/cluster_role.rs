//! `demote-cluster` and `promote-cluster`: turn the cluster into a standby cluster or back into a
//! primary one, then wait until its leader runs in the new role (`patronictl demote-cluster` /
//! `patronictl promote-cluster`).

use std::time::Duration;

use anyhow::bail;
use pgpilot_dcs::Dcs;
use reqwest::Method;
use serde_json::{json, Map, Value};

use super::console::{confirm, echo};
use super::members::{bare_member, leader_member, output_members};
use super::Ctx;
use crate::http::SHORT;
use crate::table::Format;

/// `change_cluster_role`: demote to a standby cluster (`standby_config` given) or promote.
pub(super) async fn change_cluster_role(
    ctx: &mut Ctx,
    name: &str,
    force: bool,
    standby_config: Option<Map<String, Value>>,
) -> anyhow::Result<()> {
    let demote = standby_config.is_some();
    let action = if demote { "demot" } else { "promot" };
    let target_role = if demote { "standby_leader" } else { "primary" };
    let dcs = ctx.dcs(name).await?;
    let c = dcs.cluster_fresh().await?;
    let Some(leader_name) = c.leader_name().map(str::to_string) else {
        bail!("Cluster has no leader, {action}ion is not possible");
    };
    let leader = leader_member(&c).unwrap_or_else(|| bare_member(&leader_name));
    if leader.data.role == target_role {
        bail!("Cluster is already in the required state");
    }
    echo("Current cluster topology");
    output_members(&c, name, Format::Pretty);
    if !force
        && !confirm(&format!(
            "Are you sure you want to {action}e {name} cluster?"
        ))?
    {
        bail!("Aborted cluster {action}ion");
    }
    let body = json!({"standby_cluster": standby_config.map_or(Value::Null, Value::Object)});
    match ctx
        .request(&leader, Method::PATCH, Some("config"), Some(&body), SHORT)
        .await
    {
        Ok(r) if r.status == 200 => {}
        Ok(r) => bail!(
            "Failed to {action}e {name} cluster: /config PATCH status code={}, ({})",
            r.status,
            r.body
        ),
        Err(e) => bail!("Failed to {action}e {name} cluster: {e:#}"),
    }
    let mut c;
    loop {
        c = dcs.cluster_fresh().await?;
        let now = jiff::ZonedDateTime::now()
            .strftime("%Y-%m-%d %H:%M:%S")
            .to_string();
        let unlocked = c.is_unlocked();
        let lead = c.leader_name().and_then(|n| c.member(n));
        let role = lead.map(|m| m.data.role.clone());
        let state = lead.map(|m| m.data.state.clone());
        let old_state = c.member(&leader_name).map(|m| m.data.state.clone());
        if !unlocked
            && role.as_deref() == Some(target_role)
            && state.as_deref() == Some("running")
            && (!demote || old_state.as_deref() == Some("running"))
        {
            echo(&format!("{now} cluster is successfully {action}ed"));
            break;
        }
        let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "None".into());
        let mut parts = vec![
            format!(
                "{now} cluster is unlocked: {}",
                if unlocked { "True" } else { "False" }
            ),
            format!("leader role: {}", show(&role)),
            format!("leader state: {}", show(&state)),
        ];
        if demote && c.leader_name() != Some(leader_name.as_str()) {
            if let Some(s) = &old_state {
                parts.push(format!("previous leader state: '{s}'"));
            }
        }
        echo(&parts.join(", "));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    output_members(&c, name, Format::Pretty);
    Ok(())
}
