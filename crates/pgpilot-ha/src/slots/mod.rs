//! Replication slots on the leader (spec/ha-loop.md §5.9), as pure functions: which slots are
//! wanted (members' physical slots, members retained through `/status.retain_slots`, permanent
//! slots of `/config.slots`), which changes bring the server there, and what `/status`
//! publishes. The agent only reads `pg_replication_slots`, applies the changes and writes
//! `/status`.
//!
//! Drops follow Patroni (`_drop_incorrect_slots`): a slot that is not wanted here (nor a
//! replica's copy of a permanent logical slot), or is wanted with another type, database or
//! plugin, is dropped when it is inactive and matches no `ignore_slots` entry, and never while
//! the cluster is paused. A wanted slot whose WAL is lost (`wal_status = 'lost'`) is dropped
//! and created again in the same plan. A slot made outside pgpilot survives only through `ignore_slots` (or
//! `/config.slots`), as Patroni's documentation tells its users: an orphaned slot would hold
//! WAL on the primary until its disk is full, and a logical slot on a replica would hold back
//! the primary's vacuum through hot-standby feedback.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use pgpilot_config::{PermanentSlot, SlotMatcher};
use pgpilot_dcs::Member;
use pgpilot_postgres::{slot_name_for, valid_slot_name, SlotChange, SlotInfo};
use serde_json::{Map, Value};
use tokio::time::Instant;

/// What the slot plan is computed from.
pub struct SlotInputs<'a> {
    /// This member's name.
    pub me: &'a str,
    /// The leader's name, when there is one.
    pub leader: Option<&'a str>,
    /// Members' slots are retained on every failover candidate (`member_slots_ttl` > 0 and
    /// PostgreSQL 11+, which can advance a physical slot).
    pub retention: bool,
    /// The cluster's member keys.
    pub members: &'a [Member],
    /// `/status.retain_slots`: slots of members whose key vanished, still kept.
    pub retain_slots: &'a [String],
    pub permanent: &'a BTreeMap<String, PermanentSlot>,
    pub ignore: &'a [SlotMatcher],
    /// The slots that exist on this server.
    pub existing: &'a [SlotInfo],
}

/// The outcome of [`plan_slots`].
#[derive(Debug, Default, PartialEq)]
pub struct SlotPlan {
    /// Every slot that should exist, by name.
    pub wanted: BTreeMap<String, PermanentSlot>,
    /// The wanted slots that are members' slots (not permanent ones).
    pub member_slots: BTreeSet<String>,
    /// Wanted physical slots a member streams through right now (Patroni's `expected_active`):
    /// never advanced by us.
    pub expected_active: BTreeSet<String>,
    /// On a failover candidate: the permanent logical slots it keeps as copies of the
    /// leader's (created by copying the leader's slot state, then advanced), with their
    /// database and plugin.
    pub replica_logical: BTreeMap<String, PermanentSlot>,
    /// The position a member that streams from another member (`replicatefrom`) reports in its
    /// key (`xlog_location`): its slot here is inactive and is advanced to it.
    pub member_lsn: BTreeMap<String, u64>,
    pub changes: Vec<SlotChange>,
    /// Wanted slots whose WAL is lost (`wal_status = 'lost'`): dropped and created again, as
    /// Patroni does, since they can serve nobody any more.
    pub lost: BTreeSet<String>,
    /// Error sentences for the log (Patroni's).
    pub errors: Vec<String>,
    /// Warning sentences for the log (Patroni's).
    pub notes: Vec<String>,
}

fn same_kind(slot: &SlotInfo, want: &PermanentSlot) -> bool {
    match want {
        PermanentSlot::Physical => slot.slot_type == "physical",
        PermanentSlot::Logical { database, plugin } => {
            slot.slot_type == "logical"
                && slot.database.as_deref() == Some(database)
                && slot.plugin.as_deref() == Some(plugin)
        }
    }
}

/// Whether `slot` matches an `ignore_slots` entry.
pub fn ignored(ignore: &[SlotMatcher], slot: &SlotInfo) -> bool {
    ignore.iter().any(|m| {
        m.matches(
            &slot.name,
            &slot.slot_type,
            slot.database.as_deref(),
            slot.plugin.as_deref(),
        )
    })
}

/// Where the slots are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotRole {
    Leader,
    /// A replica (PostgreSQL 11+) following the leader. A failover candidate keeps the
    /// physical slots a leader would (members' with [`SlotInputs::retention`], the permanent
    /// ones) and advances them to the leader's `/status.slots` positions, so that a failover
    /// keeps them; a `nofailover` member keeps only the slots of the members that stream from
    /// it (`replicatefrom`). Permanent logical slots are copied from the leader (see
    /// [`replica_logical_changes`]).
    Replica {
        nofailover: bool,
    },
}

/// The slots the leader wants and the changes that get there.
pub fn plan_slots(i: &SlotInputs<'_>) -> SlotPlan {
    plan_slots_as(i, SlotRole::Leader)
}

/// The slots wanted in `role` and the changes that get there (creations and drops; see
/// [`advance_changes`] for advances). Patroni's `Cluster.get_replication_slots`.
pub fn plan_slots_as(i: &SlotInputs<'_>, role: SlotRole) -> SlotPlan {
    let mut plan = SlotPlan::default();
    let own = slot_name_for(i.me);
    let leading = role == SlotRole::Leader;
    let nofailover = matches!(role, SlotRole::Replica { nofailover: true });
    let has_member = |name: &str| i.members.iter().any(|m| m.name == name);
    // Whether `m` streams from us now: on a leader every member that does not name another
    // existing member as its upstream; on a replica the members that name us (not the leader).
    let streams_from_us = |m: &Member| {
        let upstream = m.data.replicatefrom();
        if leading {
            upstream.is_none_or(|up| up == i.me || !has_member(up))
        } else {
            upstream == Some(i.me) && Some(m.name.as_str()) != i.leader
        }
    };
    for m in i.members {
        if m.name == i.me || m.data.nostream() {
            continue;
        }
        let wanted = if i.retention {
            !nofailover || m.data.replicatefrom() == Some(i.me)
        } else {
            streams_from_us(m)
        };
        if !wanted {
            continue;
        }
        let name = slot_name_for(&m.name);
        if streams_from_us(m) {
            plan.expected_active.insert(name.clone());
        }
        if m.data.replicatefrom().is_some() {
            if let Some(lsn) = m.data.xlog_location {
                plan.member_lsn.insert(name.clone(), lsn);
            }
        }
        plan.member_slots.insert(name);
    }
    if !nofailover {
        for r in i.retain_slots {
            if *r != own {
                plan.member_slots.insert(r.clone());
            }
        }
    }
    for s in &plan.member_slots {
        plan.wanted.insert(s.clone(), PermanentSlot::Physical);
    }
    // A member that does not fail over keeps no permanent slot (Patroni's rule).
    let permanent = if nofailover {
        &BTreeMap::new()
    } else {
        i.permanent
    };
    for (name, spec) in permanent {
        if !valid_slot_name(name) {
            plan.errors
                .push(format!("Invalid permanent replication slot name '{name}'"));
            plan.errors.push(
                "Slot name may only contain lower case letters, numbers, and the underscore chars"
                    .into(),
            );
            continue;
        }
        match spec {
            // A member's slot of the same name serves as the permanent one; no slot for
            // ourselves.
            PermanentSlot::Physical => {
                if *name != own && !plan.wanted.contains_key(name) {
                    plan.wanted.insert(name.clone(), spec.clone());
                    // On the leader a permanent slot is in use, unless it is the slot of a
                    // member that streams from another member.
                    let cascading = i.members.iter().any(|m| {
                        slot_name_for(&m.name) == *name && m.data.replicatefrom().is_some()
                    });
                    if leading && !cascading {
                        plan.expected_active.insert(name.clone());
                    }
                }
            }
            PermanentSlot::Logical { .. } if !leading => {
                if !plan.member_slots.contains(name) {
                    plan.replica_logical.insert(name.clone(), spec.clone());
                }
            }
            PermanentSlot::Logical { database, plugin } => {
                if plan.member_slots.contains(name) {
                    plan.errors.push(format!(
                        "Permanent logical replication slot {{'{name}': {{'type': 'logical', 'database': '{database}', 'plugin': '{plugin}'}}}} is conflicting with physical replication slot for cluster member"
                    ));
                } else {
                    plan.wanted.insert(name.clone(), spec.clone());
                }
            }
        }
    }
    let existing: BTreeMap<&str, &SlotInfo> =
        i.existing.iter().map(|s| (s.name.as_str(), s)).collect();
    for (name, spec) in &plan.wanted {
        if let Some(slot) = existing.get(name.as_str()) {
            // Patroni's `_drop_incorrect_slots`: a wanted slot whose WAL was removed is dropped
            // (unless `ignore_slots` keeps it) and created again at once. One of the wrong kind
            // is dropped below and created on the next cycle.
            let recreate =
                slot.lost && !slot.active && same_kind(slot, spec) && !ignored(i.ignore, slot);
            if !recreate {
                continue;
            }
            plan.lost.insert(name.clone());
            plan.changes.push(SlotChange::Drop(name.clone()));
        }
        plan.changes.push(match spec {
            PermanentSlot::Physical => SlotChange::CreatePhysical(name.clone()),
            PermanentSlot::Logical { database, plugin } => SlotChange::CreateLogical {
                name: name.clone(),
                database: database.clone(),
                plugin: plugin.clone(),
            },
        });
    }
    for slot in i.existing {
        let fits = [&plan.wanted, &plan.replica_logical]
            .iter()
            .any(|m| m.get(&slot.name).is_some_and(|w| same_kind(slot, w)));
        if fits || slot.active || ignored(i.ignore, slot) {
            continue;
        }
        // A slot wanted with another type, database or plugin is dropped too; the right one
        // is created (or copied) on the next cycle.
        plan.changes.push(SlotChange::Drop(slot.name.clone()));
    }
    // Patroni's rule: a wanted physical slot nobody streams through that still holds an
    // `xmin` (hot-standby feedback from when it was in use, e.g. before a failover) would hold
    // back vacuum forever; it is dropped and created again, clean, on the next cycle. Only
    // with a leader, and on the leader only once it runs as a primary.
    let clean = i.leader.is_some_and(|l| l != i.me) || (leading && i.leader == Some(i.me));
    for slot in i.existing {
        if clean
            && slot.xmin.is_some()
            && !slot.active
            && !plan.lost.contains(&slot.name)
            && slot.slot_type == "physical"
            && matches!(plan.wanted.get(&slot.name), Some(PermanentSlot::Physical))
            && !plan.expected_active.contains(&slot.name)
        {
            plan.notes.push(format!(
                "Dropping physical replication slot {} because of its xmin value {}",
                slot.name,
                slot.xmin.unwrap_or_default()
            ));
            plan.changes.push(SlotChange::Drop(slot.name.clone()));
        }
    }
    plan
}

/// Advance every wanted physical slot that nobody streams through (not expected active, not
/// active) to the furthest position known for it: the leader's `/status.slots` and, for a
/// member streaming from another member, the position it reports in its key. On the leader
/// this keeps a cascading member's slot from holding WAL forever; on a replica it keeps the
/// copies of the leader's slots where the leader's are.
pub fn advance_changes(
    plan: &SlotPlan,
    existing: &[SlotInfo],
    leader_slots: Option<&Map<String, Value>>,
) -> Vec<SlotChange> {
    existing
        .iter()
        .filter(|s| !s.active && s.slot_type == "physical" && s.xmin.is_none())
        .filter(|s| matches!(plan.wanted.get(&s.name), Some(PermanentSlot::Physical)))
        .filter(|s| !plan.expected_active.contains(&s.name))
        .filter_map(|s| {
            let published = leader_slots
                .and_then(|m| m.get(&s.name))
                .and_then(Value::as_u64);
            let reported = plan.member_lsn.get(&s.name).copied();
            let target = published.max(reported)?;
            let restart = s.lsn?;
            (target > restart).then(|| SlotChange::Advance {
                name: s.name.clone(),
                lsn: target,
            })
        })
        .collect()
}

/// Patroni's `get_slot_name_on_primary(...) is None`: whether this member's WAL reaches it
/// without a slot on the primary, because it or a member up its `replicatefrom` chain is
/// `nostream`. Such a member keeps no copy of a logical slot (no feedback of its own reaches
/// the primary). `nostream` and `replicatefrom` are this member's own tags.
pub fn without_primary_slot(
    members: &[Member],
    me: &str,
    nostream: bool,
    replicatefrom: Option<&str>,
) -> bool {
    if nostream {
        return true;
    }
    let mut seen = vec![me];
    let mut next = replicatefrom;
    while let Some(name) = next {
        if seen.contains(&name) {
            return false;
        }
        let Some(m) = members.iter().find(|m| m.name == name) else {
            return false;
        };
        if m.data.nostream() {
            return true;
        }
        seen.push(name);
        next = m.data.replicatefrom();
    }
    false
}

/// On a failover candidate, for the permanent logical slots of `plan`: the existing copies to
/// advance (to the leader's published position, never past what this replica replayed) and
/// the names to copy from the leader (those the leader publishes and we lack). A slot of the
/// name with another database or plugin is left alone.
pub fn replica_logical_changes(
    plan: &SlotPlan,
    existing: &[SlotInfo],
    leader_slots: Option<&Map<String, Value>>,
    replayed: u64,
) -> (Vec<SlotChange>, Vec<String>) {
    let mut advance = Vec::new();
    let mut copy = Vec::new();
    for (name, spec) in &plan.replica_logical {
        let PermanentSlot::Logical { database, .. } = spec else {
            continue;
        };
        let published = leader_slots
            .and_then(|m| m.get(name))
            .and_then(Value::as_u64);
        match existing.iter().find(|s| s.name == *name) {
            Some(s) if same_kind(s, spec) => {
                let (Some(target), Some(at)) = (published, s.lsn) else {
                    continue;
                };
                let target = target.min(replayed);
                if at < target && !s.active {
                    advance.push(SlotChange::AdvanceLogical {
                        name: name.clone(),
                        database: database.clone(),
                        lsn: target,
                    });
                }
            }
            Some(_) => {}
            None if published.is_some() => copy.push(name.clone()),
            None => {}
        }
    }
    (advance, copy)
}

/// `/status.slots`: the LSN of every wanted slot that exists (member slots only when
/// `member_slots_ttl` > 0, as Patroni publishes them), and, like Patroni, the leader's own
/// slot name at `own_lsn` (its flush LSN: replicas advance their copy of the leader's slot to
/// it); `None` when empty.
pub fn status_slots(
    plan: &SlotPlan,
    existing: &[SlotInfo],
    member_slots_ttl: Duration,
    own: (&str, u64),
    permanent: &BTreeMap<String, PermanentSlot>,
) -> Option<Map<String, Value>> {
    let (own_name, own_lsn) = own;
    let own_published = !member_slots_ttl.is_zero()
        || matches!(permanent.get(own_name), Some(PermanentSlot::Physical));
    let mut map: Map<String, Value> = existing
        .iter()
        .filter(|s| {
            plan.wanted.get(&s.name).is_some_and(|w| same_kind(s, w))
                && (!member_slots_ttl.is_zero() || !plan.member_slots.contains(&s.name))
        })
        .filter_map(|s| s.lsn.map(|l| (s.name.clone(), Value::from(l))))
        .collect();
    if own_published && own_lsn > 0 {
        map.insert(own_name.to_string(), Value::from(own_lsn));
    }
    (!map.is_empty()).then_some(map)
}

/// Patroni's retention of absent members' slots: every member slot published in `slots`
/// (a member's, or our own name's when our key is missing; never a permanent physical slot)
/// is stamped `now`; entries older than `ttl` are removed and returned (for the log line
/// "Replication slot '…' for absent cluster member is expired after … sec.").
pub fn update_retain(
    retain: &mut BTreeMap<String, Instant>,
    published: Option<&Map<String, Value>>,
    i: &SlotInputs<'_>,
    now: Instant,
    ttl: Duration,
) -> Vec<String> {
    if let Some(published) = published {
        let mut members: BTreeSet<String> = i
            .members
            .iter()
            .filter(|m| !m.data.nostream())
            .map(|m| slot_name_for(&m.name))
            .collect();
        if !i.members.iter().any(|m| m.name == i.me) {
            members.insert(slot_name_for(i.me));
        }
        for name in published.keys() {
            let permanent_physical = matches!(i.permanent.get(name), Some(PermanentSlot::Physical));
            if members.contains(name) && !permanent_physical {
                retain.insert(name.clone(), now);
            }
        }
    }
    let expired: Vec<String> = retain
        .iter()
        .filter(|(_, at)| **at + ttl <= now)
        .map(|(n, _)| n.clone())
        .collect();
    for n in &expired {
        retain.remove(n);
    }
    expired
}

#[cfg(test)]
mod tests;
