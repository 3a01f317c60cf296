//! `list` and `topology`: the members of one or more clusters as a table or as a tree, again
//! every few seconds with `--watch` (`patronictl list` / `patronictl topology`).

use std::time::Duration;

use super::console::{clear_screen, echo, out};
use super::schedule::timestamp;
use super::Ctx;
use crate::list;
use crate::table::Format;

pub(super) async fn list_cmd(
    ctx: &mut Ctx,
    mut names: Vec<String>,
    extended: bool,
    ts: bool,
    fmt: Format,
    watch: Option<f64>,
) -> anyhow::Result<()> {
    if names.is_empty() {
        match &ctx.cfg.scope {
            Some(s) => names.push(s.clone()),
            None => {
                tracing::warn!("Listing members: No cluster names were provided");
                return Ok(());
            }
        }
    }
    if watch.is_some() {
        clear_screen();
    }
    loop {
        if ts {
            echo(&timestamp(0));
        }
        for name in &names {
            let c = ctx.cluster(name).await?;
            out(&list::render_members(&c, name, extended, fmt));
        }
        let Some(secs) = watch else {
            return Ok(());
        };
        tokio::time::sleep(Duration::from_secs_f64(secs)).await;
        clear_screen();
    }
}
