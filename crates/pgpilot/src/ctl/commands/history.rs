//! `history`: prints the cluster's failover history, one line a timeline, from the DCS
//! (`patronictl history`).

use super::console::out;
use super::Ctx;
use crate::args::OutFormat;
use crate::list;

pub(super) async fn history_cmd(ctx: &mut Ctx, name: &str, fmt: OutFormat) -> anyhow::Result<()> {
    let c = ctx.cluster(name).await?;
    out(&list::render_history(&c, fmt.to_format()));
    Ok(())
}
