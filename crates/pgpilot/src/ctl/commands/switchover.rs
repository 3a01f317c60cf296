//! `switchover` and `failover`: hand the leadership to another member through the leader's REST
//! API (the candidate's when there is no leader), or write the DCS failover key when no API
//! answers (`patronictl switchover` / `patronictl failover`).

use anyhow::{anyhow, bail};
use pgpilot_dcs::Dcs;
use reqwest::Method;
use serde_json::{Map, Value};

use super::console::{confirm, echo, prompt};
use super::members::{leader_member, output_members};
use super::schedule::{next_hour_example, parse_scheduled, timestamp};
use super::Ctx;
use crate::http::LONG;
use crate::list::GlobalConfig;
use crate::table::Format;
use crate::yaml;

fn title(action: &str) -> String {
    let mut c = action.chars();
    c.next()
        .map(|f| f.to_uppercase().chain(c).collect())
        .unwrap_or_default()
}

/// `_do_failover_or_switchover`.
pub(super) async fn failover_cmd(
    ctx: &mut Ctx,
    action: &str,
    name: &str,
    mut candidate: Option<String>,
    force: bool,
    mut switchover_leader: Option<String>,
    mut switchover_scheduled: Option<String>,
) -> anyhow::Result<()> {
    let dcs = ctx.dcs(name).await?;
    let mut c = dcs.cluster_fresh().await?;
    echo("Current cluster topology");
    output_members(&c, name, Format::Pretty);
    let gc = GlobalConfig::from_cluster(&c);
    let cluster_leader = c.leader_name().map(str::to_string);

    if action == "switchover" {
        let Some(leader) = &cluster_leader else {
            bail!("This cluster has no leader");
        };
        if switchover_leader.is_none() {
            switchover_leader = Some(if force {
                leader.clone()
            } else {
                let p = if gc.is_standby_cluster() {
                    "Standby Leader"
                } else {
                    "Primary"
                };
                prompt(p, Some(leader))?
            });
        }
        if switchover_leader.as_ref() != Some(leader) {
            bail!(
                "Member {} is not the leader of cluster {name}",
                switchover_leader.unwrap_or_default()
            );
        }
    }

    let mut candidates: Vec<String> = c
        .members
        .iter()
        .filter(|m| Some(&m.name) != cluster_leader.as_ref() && !m.data.nofailover())
        .map(|m| m.name.clone())
        .collect();
    candidates.sort();
    if candidates.is_empty() {
        bail!("No candidates found to {action} to");
    }
    if candidate.is_none() && !force {
        let listed: Vec<String> = candidates.iter().map(|n| format!("'{n}'")).collect();
        candidate = Some(prompt(
            &format!("Candidate [{}]", listed.join(", ")),
            Some(""),
        )?);
    }
    let candidate = candidate.filter(|c| !c.is_empty());
    if action == "failover" && candidate.is_none() {
        bail!("Failover could be performed only to a specific candidate");
    }
    if let Some(cand) = &candidate {
        if !candidates.contains(cand) {
            if Some(cand) == cluster_leader.as_ref() {
                bail!("Member {cand} is already the leader of cluster {name}");
            }
            bail!("Member {cand} does not exist in cluster {name} or is tagged as nofailover");
        }
    }
    // Patroni's `not cluster.sync.is_empty and not cluster.sync.matches(candidate, True)`.
    let sync = c.sync.clone().unwrap_or_default();
    if !force && action == "failover" && gc.is_synchronous_mode() && !sync.is_empty() {
        let cand = candidate.clone().unwrap_or_default();
        if !sync.matches(&cand, true)
            && !confirm(&format!(
                "Are you sure you want to failover to the asynchronous node {cand}?"
            ))?
        {
            bail!("Aborting {action}");
        }
    }

    let mut scheduled_at = None;
    if action == "switchover" {
        if switchover_scheduled.is_none() && !force {
            switchover_scheduled = Some(prompt(
                &format!(
                    "When should the switchover take place (e.g. {} ) ",
                    next_hour_example()
                ),
                Some("now"),
            )?);
        }
        scheduled_at = parse_scheduled(switchover_scheduled.as_deref())?;
        if scheduled_at.is_some() && gc.is_paused() {
            bail!("Can't schedule switchover in the paused state");
        }
    }

    let mut value = Map::new();
    value.insert(
        "candidate".into(),
        candidate.clone().map_or(Value::Null, Value::from),
    );
    if action == "switchover" {
        value.insert(
            "leader".into(),
            switchover_leader.clone().map_or(Value::Null, Value::from),
        );
    }
    if let Some(at) = &scheduled_at {
        value.insert("scheduled_at".into(), Value::from(at.clone()));
    }
    let value = Value::Object(value);

    if !force {
        let demote = cluster_leader
            .as_ref()
            .map(|l| format!(", demoting current leader {l}"))
            .unwrap_or_default();
        if let Some(at) = &scheduled_at {
            if !confirm(&format!(
                "Are you sure you want to schedule switchover of cluster {name} at {at}{demote}?"
            ))? {
                bail!("Aborting scheduled {action}");
            }
        } else if !confirm(&format!(
            "Are you sure you want to {action} cluster {name}{demote}?"
        ))? {
            bail!("Aborting {action}");
        }
    }

    // The leader's API (else the candidate's) performs it; the DCS key is the fallback.
    let target = match &cluster_leader {
        Some(_) => leader_member(&c),
        None => candidate.as_deref().and_then(|n| c.member(n).cloned()),
    };
    let result = match &target {
        Some(m) => {
            let mut r = ctx
                .request(m, Method::POST, Some(action), Some(&value), LONG)
                .await;
            if let Ok(reply) = &r {
                if reply.status == 501
                    && action == "switchover"
                    && reply
                        .body
                        .contains("Server does not support this operation")
                {
                    r = ctx
                        .request(m, Method::POST, Some("failover"), Some(&value), LONG)
                        .await;
                }
            }
            r
        }
        None => Err(anyhow!("no member to send the request to")),
    };
    match result {
        Ok(r) if r.status == 200 || r.status == 202 => {
            c = dcs.cluster_fresh().await?;
            echo(&format!("{} {}", timestamp(6), r.body));
        }
        Ok(r) => {
            if r.body.contains("status unknown") {
                echo(&format!(
                    "{} result unknown, details: {}, {}",
                    title(action),
                    r.status,
                    r.body
                ));
            } else {
                echo(&format!(
                    "{} failed, details: {}, {}",
                    title(action),
                    r.status,
                    r.body
                ));
            }
            return Ok(());
        }
        Err(e) => {
            tracing::warn!("{e:#}");
            echo(&format!(
                "{} Could not {action} using Patroni api, falling back to DCS",
                timestamp(6)
            ));
            let mut f = Map::new();
            if let Some(l) = &switchover_leader {
                f.insert("leader".into(), Value::from(l.clone()));
            }
            if let Some(cand) = &candidate {
                f.insert("member".into(), Value::from(cand.clone()));
            }
            if let Some(at) = &scheduled_at {
                f.insert("scheduled_at".into(), Value::from(at.clone()));
            }
            dcs.set_failover(&yaml::py_json_compact(&Value::Object(f)), None)
                .await?;
        }
    }
    output_members(&c, name, Format::Pretty);
    Ok(())
}
