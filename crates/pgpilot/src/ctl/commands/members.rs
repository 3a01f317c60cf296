//! Choosing the members a command acts on, as `patronictl`'s `get_members`,
//! `get_any_member` and friends do, and the confirmation and result lines around them.

use anyhow::bail;
use pgpilot_dcs::{Cluster, Member, MemberData};

use super::console::{confirm, echo, out, prompt};
use crate::args::Role;
use crate::http::Reply;
use crate::list;
use crate::table::Format;

/// A member as patronictl's `cluster.leader.member` gives it when the leader key names a member
/// that has no key: name only.
pub(super) fn bare_member(name: &str) -> Member {
    Member {
        name: name.to_string(),
        data: MemberData::default(),
        version: 0,
        lease: 0,
    }
}

pub(super) fn leader_member(c: &Cluster) -> Option<Member> {
    let name = c.leader_name()?;
    Some(c.member(name).cloned().unwrap_or_else(|| bare_member(name)))
}

/// `get_all_members(cluster, role)`.
pub(super) fn members_with_role(c: &Cluster, role: Role) -> Vec<Member> {
    match role {
        Role::Leader | Role::Primary | Role::StandbyLeader => {
            let Some(l) = leader_member(c) else {
                return Vec::new();
            };
            let r = l.data.role.as_str();
            let ok = match role {
                Role::Leader => true,
                Role::StandbyLeader => r != "primary" && r != "master",
                _ => r != "standby_leader",
            };
            if ok {
                vec![l]
            } else {
                Vec::new()
            }
        }
        Role::Replica | Role::Standby => {
            let leader = c.leader.as_ref().map(|l| l.name.as_str());
            c.members
                .iter()
                .filter(|m| Some(m.name.as_str()) != leader)
                .cloned()
                .collect()
        }
        Role::Any => c.members.clone(),
    }
}

/// `get_any_member(cluster, role, member)`.
pub(super) fn any_member(
    c: &Cluster,
    role: Option<Role>,
    member: Option<&str>,
) -> anyhow::Result<Option<Member>> {
    let role = match (member, role) {
        (Some(_), Some(_)) => bail!("--role and --member are mutually exclusive options"),
        (Some(_), None) => Role::Any,
        (None, r) => r.unwrap_or(Role::Leader),
    };
    Ok(members_with_role(c, role)
        .into_iter()
        .find(|m| member.is_none_or(|n| m.name == n)))
}

/// `get_all_members_leader_first`: members with an api_url, the leader first.
pub(super) fn members_leader_first(c: &Cluster) -> Vec<Member> {
    let leader = leader_member(c).filter(|l| !l.data.api_url.is_empty());
    let mut out: Vec<Member> = leader.iter().cloned().collect();
    let leader_name = leader.map(|l| l.name);
    out.extend(
        c.members
            .iter()
            .filter(|m| !m.data.api_url.is_empty() && Some(&m.name) != leader_name.as_ref())
            .cloned(),
    );
    out
}

/// `host` and `port` of a member's `conn_url` for `dsn` and `query`.
pub(super) fn conn_host_port(m: &Member) -> anyhow::Result<(String, u16)> {
    match list::member_host_port(m) {
        Some((h, p)) => Ok((h, p.unwrap_or(5432))),
        None => bail!("Member {} has no connection address", m.name),
    }
}

pub(super) fn output_members(c: &Cluster, name: &str, fmt: Format) {
    out(&list::render_members(c, name, false, fmt));
}

/// `get_members`: members of `role` (optionally among `names`), prompting for one when none is
/// given, then the confirmation.
#[allow(clippy::too_many_arguments)]
pub(super) fn get_members(
    c: &Cluster,
    cluster_name: &str,
    names: &[String],
    role: Role,
    force: bool,
    action: &str,
    ask_confirmation: bool,
) -> anyhow::Result<Vec<Member>> {
    let members = members_with_role(c, role);
    let candidates: Vec<String> = members.iter().map(|m| m.name.clone()).collect();
    if !names.is_empty() || !candidates.is_empty() || !force {
        if names.is_empty() && candidates.is_empty() {
            bail!("{cluster_name} cluster doesn't have any members");
        }
        output_members(c, cluster_name, Format::Pretty);
    }
    let mut wanted: Vec<String> = if !names.is_empty() {
        let w: Vec<String> = names
            .iter()
            .filter(|n| candidates.contains(n))
            .cloned()
            .collect();
        if w.is_empty() {
            bail!("No {} among provided members", role.name());
        }
        w
    } else if action != "reinitialize" {
        candidates.clone()
    } else {
        Vec::new()
    };
    if wanted.is_empty() && !force {
        wanted = vec![prompt(
            &format!(
                "Which member do you want to {action} [{}]?",
                candidates.join(", ")
            ),
            Some(""),
        )?];
    }
    for n in &wanted {
        if !candidates.contains(n) {
            bail!("{n} is not a member of cluster");
        }
    }
    let selected: Vec<Member> = members
        .into_iter()
        .filter(|m| wanted.contains(&m.name))
        .collect();
    if ask_confirmation {
        confirm_members_action(&selected, force, action, None, false)?;
    }
    Ok(selected)
}

pub(super) fn confirm_members_action(
    members: &[Member],
    force: bool,
    action: &str,
    scheduled_at: Option<&str>,
    pending: bool,
) -> anyhow::Result<()> {
    if force {
        return Ok(());
    }
    let names: Vec<&str> = members.iter().map(|m| m.name.as_str()).collect();
    match scheduled_at {
        Some(at) => {
            let ok = if pending {
                confirm("The nodes needing a restart will be identified at the scheduled time, and might be different from the ones showing pending restart right now. Is this fine?")?
            } else {
                confirm(&format!(
                    "Are you sure you want to schedule {action} of members {} at {}?",
                    names.join(", "),
                    at.replacen('T', " ", 1)
                ))?
            };
            if !ok {
                bail!("Aborted scheduled {action}");
            }
        }
        None => {
            if !confirm(&format!(
                "Are you sure you want to {action} members {}?",
                names.join(", ")
            ))? {
                bail!("Aborted {action}");
            }
        }
    }
    Ok(())
}

/// `check_response`: prints `Failed: ...` for status >= 400, else `Success: ...`.
pub(super) fn check_response(r: &Reply, member: &str, action: &str, silent_success: bool) -> bool {
    if r.status >= 400 {
        echo(&format!(
            "Failed: {action} for member {member}, status code={}, ({})",
            r.status, r.body
        ));
        return false;
    }
    if !silent_success {
        echo(&format!("Success: {action} for member {member}"));
    }
    true
}
