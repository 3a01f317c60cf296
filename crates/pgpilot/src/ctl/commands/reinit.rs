//! `reinit`: has replicas rebuilt from scratch through their REST API, optionally waiting until
//! they are done (`patronictl reinit`).

use std::time::Duration;

use pgpilot_dcs::Member;
use reqwest::Method;
use serde_json::{json, Value};

use super::console::{confirm, echo};
use super::members::{check_response, get_members};
use super::Ctx;
use crate::args::Role;
use crate::http::{LONG, SHORT};

pub(super) async fn reinit_cmd(
    ctx: &mut Ctx,
    name: &str,
    names: &[String],
    force: bool,
    from_leader: bool,
    wait: bool,
) -> anyhow::Result<()> {
    let c = ctx.cluster(name).await?;
    let members = get_members(&c, name, names, Role::Replica, force, "reinitialize", true)?;
    let mut waiting: Vec<Member> = Vec::new();
    for m in members {
        let mut body = json!({"force": force, "from_leader": from_leader});
        let started = loop {
            let r = ctx
                .request(&m, Method::POST, Some("reinitialize"), Some(&body), LONG)
                .await?;
            let started = check_response(&r, &m.name, "reinitialize", false);
            if !started
                && r.body.ends_with(" already in progress")
                && !force
                && confirm("Do you want to cancel it and reinitialize anyway?")?
            {
                body["force"] = Value::Bool(true);
                continue;
            }
            break started;
        };
        if started && wait {
            waiting.push(m);
        }
    }
    let mut last_display: Vec<String> = Vec::new();
    while !waiting.is_empty() {
        let names: Vec<String> = waiting.iter().map(|m| m.name.clone()).collect();
        if names != last_display {
            echo(&format!(
                "Waiting for reinitialize to complete on: {}",
                names.join(", ")
            ));
            last_display = names;
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut still = Vec::new();
        for m in waiting {
            let r = ctx
                .request(&m, Method::GET, Some("patroni"), None, SHORT)
                .await?;
            let data: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
            if data.get("state").and_then(Value::as_str) != Some("creating replica") {
                echo(&format!("Reinitialize is completed on: {}", m.name));
            } else {
                still.push(m);
            }
        }
        waiting = still;
    }
    Ok(())
}
