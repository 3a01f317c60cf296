//! `reload`: asks members, through their REST API, to reload their configuration
//! (`patronictl reload`).

use reqwest::Method;

use super::console::echo;
use super::members::get_members;
use super::Ctx;
use crate::args::Role;
use crate::config::DEFAULT_LOOP_WAIT;
use crate::http::SHORT;
use crate::list::GlobalConfig;

pub(super) async fn reload_cmd(
    ctx: &mut Ctx,
    name: &str,
    names: &[String],
    role: Role,
    force: bool,
) -> anyhow::Result<()> {
    let c = ctx.cluster(name).await?;
    let members = get_members(&c, name, names, role, force, "reload", true)?;
    let loop_wait = GlobalConfig::from_cluster(&c).loop_wait(DEFAULT_LOOP_WAIT);
    for m in members {
        let r = ctx
            .request(&m, Method::POST, Some("reload"), None, SHORT)
            .await?;
        match r.status {
            200 => echo(&format!("No changes to apply on member {}", m.name)),
            202 => echo(&format!(
                "Reload request received for member {} and will be processed within {loop_wait} seconds",
                m.name
            )),
            s => echo(&format!(
                "Failed: reload for member {}, status code={s}, ({})",
                m.name, r.body
            )),
        }
    }
    Ok(())
}
