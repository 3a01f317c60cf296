//! `edit-config` and `show-config`: change the cluster's dynamic configuration in the DCS, from an
//! editor, a YAML file or `--set`/`--pg` pairs, after showing the diff; or print it as YAML
//! (`patronictl edit-config` / `patronictl show-config`).

use std::io::Write;

use anyhow::{anyhow, bail, Context};
use pgpilot_dcs::Dcs;
use serde_json::{json, Value};

use super::console::{confirm, echo};
use super::Ctx;
use crate::edit;
use crate::yaml;

pub(super) struct EditArgs {
    pub(super) quiet: bool,
    pub(super) kvpairs: Vec<String>,
    pub(super) pgkvpairs: Vec<String>,
    pub(super) apply_filename: Option<String>,
    pub(super) replace_filename: Option<String>,
    pub(super) force: bool,
}

fn read_yaml_source(filename: &str) -> anyhow::Result<Value> {
    let text = if filename == "-" {
        let mut s = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut s)
            .context("can not read stdin")?;
        s
    } else {
        std::fs::read_to_string(filename).with_context(|| format!("can not read {filename}"))?
    };
    Ok(pgpilot_config::yaml::parse(&text, filename)?)
}

/// `apply_yaml_file`: `patch_config` of the file into a copy of `data`.
fn apply_yaml_file(data: &Value, filename: &str) -> anyhow::Result<Value> {
    let mut changed = data.as_object().cloned().unwrap_or_default();
    match read_yaml_source(filename)? {
        Value::Object(patch) => {
            edit::patch_config(&mut changed, &patch);
        }
        other => bail!("{filename}: expected a YAML mapping, got {other}"),
    }
    Ok(Value::Object(changed))
}

fn invoke_editor(before: &str, cluster_name: &str) -> anyhow::Result<(String, Value)> {
    let editor = std::env::var("EDITOR")
        .ok()
        .filter(|e| !e.is_empty())
        .or_else(|| {
            ["editor", "vi"].iter().find_map(|e| {
                std::env::var_os("PATH").and_then(|paths| {
                    std::env::split_paths(&paths)
                        .map(|p| p.join(e))
                        .find(|p| p.is_file())
                        .map(|p| p.display().to_string())
                })
            })
        })
        .ok_or_else(|| {
            anyhow!("EDITOR environment variable is not set. editor or vi are not available")
        })?;
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!("{}-config-", cluster_name.replace('/', "_")))
        .suffix(".yaml")
        .tempfile()
        .context("can not create a temporary file")?;
    tmp.write_all(before.as_bytes())
        .and_then(|()| tmp.flush())
        .context("can not write the temporary file")?;
    let status = std::process::Command::new(&editor)
        .arg(tmp.path())
        .status()
        .with_context(|| format!("can not run {editor}"))?;
    if !status.success() {
        bail!(
            "Editor exited with return code {}",
            status.code().unwrap_or(-1)
        );
    }
    let after = std::fs::read_to_string(tmp.path()).context("can not read the edited file")?;
    let data = pgpilot_config::yaml::parse(&after, &tmp.path().display().to_string())?;
    Ok((after, data))
}

pub(super) async fn edit_config_cmd(ctx: &mut Ctx, name: &str, a: EditArgs) -> anyhow::Result<()> {
    let dcs = ctx.dcs(name).await?;
    let c = dcs.cluster_fresh().await?;
    let Some(config) = &c.config else {
        bail!("The config key does not exist in the cluster {name}");
    };
    let original = Value::Object(config.data.clone());
    let before = yaml::dump(&original, false);
    let mut after: Option<String> = None;
    let mut changed = original.clone();
    if let Some(f) = &a.replace_filename {
        changed = apply_yaml_file(&json!({}), f)?;
        after = Some(yaml::dump(&changed, false));
    }
    if let Some(f) = &a.apply_filename {
        changed = apply_yaml_file(&changed, f)?;
        after = Some(yaml::dump(&changed, false));
    }
    if !a.kvpairs.is_empty() || !a.pgkvpairs.is_empty() {
        let pairs: Vec<String> = a
            .kvpairs
            .iter()
            .cloned()
            .chain(
                a.pgkvpairs
                    .iter()
                    .map(|p| format!("postgresql.parameters.{}", p.trim_start())),
            )
            .collect();
        changed = edit::apply_config_changes(&changed, &pairs)?;
        after = Some(yaml::dump(&changed, false));
    }
    let after = match after {
        Some(a) => a,
        None => {
            let (text, data) = invoke_editor(&before, name)?;
            changed = data;
            text
        }
    };
    if changed == original {
        if !a.quiet {
            echo("Not changed");
        }
        return Ok(());
    }
    if !a.quiet {
        for line in edit::unified_diff(&before, &after) {
            echo(&line);
        }
    }
    let from_stdin =
        a.apply_filename.as_deref() == Some("-") || a.replace_filename.as_deref() == Some("-");
    if from_stdin && !a.force {
        echo("Use --force option to apply changes");
        return Ok(());
    }
    if a.force || confirm("Apply these changes?")? {
        let written = dcs
            .set_config(&yaml::py_json_compact(&changed), Some(config.version))
            .await?;
        if !written {
            bail!("Config modification aborted due to concurrent changes");
        }
        echo("Configuration changed");
    }
    Ok(())
}

pub(super) async fn show_config_cmd(ctx: &mut Ctx, name: &str) -> anyhow::Result<()> {
    let c = ctx.cluster(name).await?;
    if let Some(cfg) = &c.config {
        echo(&yaml::dump(&Value::Object(cfg.data.clone()), false));
    }
    Ok(())
}
