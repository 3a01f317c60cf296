//! `remove`: after the cluster's name, a typed phrase and, for a healthy cluster, its leader's
//! name are confirmed, deletes all the cluster's keys from the DCS (`patronictl remove`).

use anyhow::bail;
use pgpilot_dcs::Dcs;

use super::console::prompt;
use super::members::output_members;
use super::Ctx;
use crate::args::OutFormat;

pub(super) async fn remove_cmd(ctx: &mut Ctx, name: &str, fmt: OutFormat) -> anyhow::Result<()> {
    let dcs = ctx.dcs(name).await?;
    let c = dcs.cluster_fresh().await?;
    output_members(&c, name, fmt.to_format());
    if prompt("Please confirm the cluster name to remove", None)? != name {
        bail!("Cluster names specified do not match");
    }
    let message = "Yes I am aware";
    let typed = prompt(
        &format!(
            "You are about to remove all information in DCS for {name}, please type: \"{message}\""
        ),
        None,
    )?;
    if typed != message {
        bail!("You did not exactly type \"{message}\"");
    }
    if let Some(leader) = c.leader_name() {
        let typed = prompt(
            "This cluster currently is healthy. Please specify the leader name to continue",
            None,
        )?;
        if typed != leader {
            bail!("You did not specify the current leader of the cluster");
        }
    }
    dcs.delete_cluster().await?;
    Ok(())
}
