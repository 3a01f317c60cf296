//! `dsn`: prints the `host=... port=...` connection string of a member chosen by role or name
//! (`patronictl dsn`).

use anyhow::anyhow;

use super::console::echo;
use super::members::{any_member, conn_host_port};
use super::Ctx;
use crate::args::Role;

pub(super) async fn dsn_cmd(
    ctx: &mut Ctx,
    name: &str,
    role: Option<Role>,
    member: Option<&str>,
) -> anyhow::Result<()> {
    let c = ctx.cluster(name).await?;
    let m =
        any_member(&c, role, member)?.ok_or_else(|| anyhow!("Can not find a suitable member"))?;
    let (host, port) = conn_host_port(&m)?;
    echo(&format!("host={host} port={port}"));
    Ok(())
}
