//! `flush`: cancels members' scheduled restarts, or the cluster's scheduled switchover
//! (`patronictl flush`).

use pgpilot_dcs::Dcs;
use reqwest::Method;

use super::console::echo;
use super::members::{check_response, get_members, members_leader_first};
use super::schedule::timestamp;
use super::Ctx;
use crate::args::{FlushTarget, Role};
use crate::http::SHORT;

pub(super) async fn flush_cmd(
    ctx: &mut Ctx,
    name: &str,
    names: &[String],
    target: FlushTarget,
    role: Role,
    force: bool,
) -> anyhow::Result<()> {
    let dcs = ctx.dcs(name).await?;
    let c = dcs.cluster_fresh().await?;
    match target {
        FlushTarget::Restart => {
            for m in get_members(&c, name, names, role, force, "flush", true)? {
                if m.data
                    .scheduled_restart
                    .as_ref()
                    .is_some_and(|s| !s.is_empty())
                {
                    let r = ctx
                        .request(&m, Method::DELETE, Some("restart"), None, SHORT)
                        .await?;
                    check_response(&r, &m.name, "flush scheduled restart", false);
                } else {
                    echo(&format!("No scheduled restart for member {}", m.name));
                }
            }
        }
        FlushTarget::Switchover => {
            let Some(failover) = c.failover.as_ref().filter(|f| f.scheduled_at.is_some()) else {
                echo("No pending scheduled switchover");
                return Ok(());
            };
            for m in members_leader_first(&c) {
                match ctx
                    .request(&m, Method::DELETE, Some("switchover"), None, SHORT)
                    .await
                {
                    Ok(r) if r.status == 200 || r.status == 404 => {
                        let prefix = if r.status == 200 { "Success" } else { "Failed" };
                        echo(&format!("{prefix}: {}", r.body));
                        return Ok(());
                    }
                    Ok(r) => echo(&format!(
                        "Failed: member={}, status_code={}, ({})",
                        m.name, r.status, r.body
                    )),
                    Err(e) => {
                        tracing::warn!("{e:#}");
                        tracing::warn!("Member {} is not accessible", m.name);
                    }
                }
            }
            tracing::warn!("Failing over to DCS");
            echo(&format!(
                "{} Could not find any accessible member of cluster {name}",
                timestamp(6)
            ));
            dcs.set_failover("{}", Some(failover.version)).await?;
        }
    }
    Ok(())
}
