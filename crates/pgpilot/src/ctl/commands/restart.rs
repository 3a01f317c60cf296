//! `restart`: restarts members' PostgreSQL through their REST API, now or at a scheduled time,
//! optionally only where a restart is pending or the version is older (`patronictl restart`).

use anyhow::{anyhow, bail};
use reqwest::Method;
use serde_json::{Map, Value};

use super::console::{echo, prompt};
use super::members::{check_response, confirm_members_action, get_members};
use super::schedule::{next_hour_example, parse_scheduled};
use super::Ctx;
use crate::args::Role;
use crate::http::{LONG, SHORT};
use crate::list::GlobalConfig;

pub(super) struct RestartArgs {
    pub(super) role: Role,
    pub(super) p_any: bool,
    pub(super) scheduled: Option<String>,
    pub(super) version: Option<String>,
    pub(super) pending: bool,
    pub(super) timeout: Option<String>,
    pub(super) force: bool,
}

/// A pseudo-random index for `--any` (no cryptographic need).
fn random_index(len: usize) -> usize {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos() as usize);
    if len == 0 {
        0
    } else {
        (nanos ^ std::process::id() as usize) % len
    }
}

/// `postgres_version_to_int` validation (`X.Y` for 10+, `X.Y.Z`).
fn check_pg_version(v: &str) -> anyhow::Result<()> {
    let bad = || anyhow!("Invalid PostgreSQL version format: X.Y or X.Y.Z is accepted: {v}");
    let parts: Vec<u32> = v
        .split('.')
        .map(|p| p.parse::<u32>().map_err(|_| bad()))
        .collect::<anyhow::Result<_>>()?;
    if parts.len() < 2 || parts.len() == 2 && parts[0] < 10 || parts.len() > 3 {
        return Err(bad());
    }
    Ok(())
}

pub(super) async fn restart_cmd(
    ctx: &mut Ctx,
    name: &str,
    names: &[String],
    a: RestartArgs,
) -> anyhow::Result<()> {
    let c = ctx.cluster(name).await?;
    let mut members = get_members(&c, name, names, a.role, a.force, "restart", false)?;
    let mut scheduled = a.scheduled;
    if scheduled.is_none() && !a.force {
        scheduled = Some(prompt(
            &format!(
                "When should the restart take place (e.g. {}) ",
                next_hour_example()
            ),
            Some("now"),
        )?);
    }
    let scheduled_at = parse_scheduled(scheduled.as_deref())?;
    let mut content = Map::new();
    if a.pending {
        content.insert("restart_pending".into(), Value::Bool(true));
        // A scheduled restart decides at the scheduled time which members still need it.
        if scheduled_at.is_none() {
            members.retain(|m| m.data.pending_restart.unwrap_or(false));
        }
    }
    if a.p_any && !members.is_empty() {
        let keep = members.swap_remove(random_index(members.len()));
        members = vec![keep];
    }
    confirm_members_action(
        &members,
        a.force,
        "restart",
        scheduled_at.as_deref(),
        a.pending,
    )?;
    let mut version = a.version;
    if version.is_none() && !a.force {
        version = Some(prompt(
            "Restart if the PostgreSQL version is less than provided (e.g. 9.5.2) ",
            Some(""),
        )?);
    }
    if let Some(v) = version.filter(|v| !v.is_empty()) {
        check_pg_version(&v)?;
        content.insert("postgres_version".into(), Value::from(v));
    }
    if let Some(at) = &scheduled_at {
        if GlobalConfig::from_cluster(&c).is_paused() {
            bail!("Can't schedule restart in the paused state");
        }
        content.insert("schedule".into(), Value::from(at.clone()));
    }
    if let Some(t) = a.timeout {
        content.insert("timeout".into(), Value::from(t));
    }
    let body = Value::Object(content);
    for m in members {
        if body.get("schedule").is_some()
            && a.force
            && m.data
                .scheduled_restart
                .as_ref()
                .is_some_and(|s| !s.is_empty())
        {
            let r = ctx
                .request(&m, Method::DELETE, Some("restart"), None, SHORT)
                .await?;
            check_response(&r, &m.name, "flush scheduled restart", true);
        }
        let r = ctx
            .request(&m, Method::POST, Some("restart"), Some(&body), LONG)
            .await?;
        match r.status {
            200 => echo(&format!("Success: restart on member {}", m.name)),
            202 => echo(&format!("Success: restart scheduled on member {}", m.name)),
            409 => echo(&format!(
                "Failed: another restart is already scheduled on member {}",
                m.name
            )),
            s => echo(&format!(
                "Failed: restart for member {}, status code={s}, ({})",
                m.name, r.body
            )),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pg_versions() {
        assert!(check_pg_version("9.6.24").is_ok());
        assert!(check_pg_version("16.4").is_ok());
        assert!(check_pg_version("9.6").is_err());
        assert!(check_pg_version("16").is_err());
        assert!(check_pg_version("x.1").is_err());
    }
}
