//! `version`: prints pgpilotctl's version (patronictl's when invoked as `patronictl`) and, for a
//! cluster, each member's Patroni and PostgreSQL versions (`patronictl version`).

use pgpilot_dcs::PATRONI_COMPAT_VERSION;
use reqwest::Method;
use serde_json::Value;

use super::console::echo;
use super::members::members_with_role;
use super::Ctx;
use crate::args::Role;
use crate::http::SHORT;

/// `format_pg_version(160004)` -> `16.4`, `90624` -> `9.6.24`.
pub(super) fn format_pg_version(v: u64) -> String {
    if v < 100_000 {
        format!("{}.{}.{}", v / 10000, v / 100 % 100, v % 100)
    } else {
        format!("{}.{}", v / 10000, v % 100)
    }
}

pub(super) async fn version_cmd(
    ctx: &mut Ctx,
    cluster_name: Option<String>,
    member_names: &[String],
    group: Option<i64>,
    invoked_as_patronictl: bool,
) -> anyhow::Result<()> {
    if invoked_as_patronictl {
        echo(&format!("patronictl version {PATRONI_COMPAT_VERSION}"));
    } else {
        echo(&format!("pgpilotctl version {}", env!("CARGO_PKG_VERSION")));
    }
    let Some(name) = cluster_name else {
        return Ok(());
    };
    ctx.check_group(group)?;
    echo("");
    let c = ctx.cluster(&name).await?;
    for m in members_with_role(&c, Role::Any) {
        if m.data.api_url.is_empty() || !(member_names.is_empty() || member_names.contains(&m.name))
        {
            continue;
        }
        match ctx.request(&m, Method::GET, None, None, SHORT).await {
            Ok(r) => {
                let data: Value = serde_json::from_str(&r.body).unwrap_or(Value::Null);
                let version = data
                    .get("patroni")
                    .and_then(|p| p.get("version"))
                    .map(crate::table::py_str)
                    .unwrap_or_else(|| "None".into());
                let pg = data
                    .get("server_version")
                    .and_then(Value::as_u64)
                    .filter(|v| *v > 0)
                    .map(|v| format!(" PostgreSQL {}", format_pg_version(v)))
                    .unwrap_or_default();
                echo(&format!("{}: Patroni {version}{pg}", m.name));
            }
            Err(e) => echo(&format!("{}: failed to get version: {e:#}", m.name)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatted_pg_versions() {
        assert_eq!(format_pg_version(160004), "16.4");
        assert_eq!(format_pg_version(90624), "9.6.24");
        assert_eq!(format_pg_version(100000), "10.0");
    }
}
