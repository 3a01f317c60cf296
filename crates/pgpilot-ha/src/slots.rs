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
mod tests {
    use super::*;
    use pgpilot_dcs::MemberData;
    use serde_json::json;

    fn member(name: &str) -> Member {
        Member {
            name: name.into(),
            data: MemberData::default(),
            version: 0,
            lease: 0,
        }
    }

    fn slot(name: &str, ty: &str, active: bool, lsn: Option<u64>) -> SlotInfo {
        SlotInfo {
            name: name.into(),
            slot_type: ty.into(),
            database: (ty == "logical").then(|| "postgres".into()),
            plugin: (ty == "logical").then(|| "test_decoding".into()),
            active,
            lsn,
            xmin: None,
            lost: false,
        }
    }

    struct Case {
        members: Vec<Member>,
        retain: Vec<String>,
        permanent: BTreeMap<String, PermanentSlot>,
        ignore: Vec<SlotMatcher>,
        existing: Vec<SlotInfo>,
        retention: bool,
    }

    impl Case {
        fn new(members: &[&str]) -> Case {
            Case {
                members: members.iter().map(|m| member(m)).collect(),
                retain: Vec::new(),
                permanent: BTreeMap::new(),
                ignore: Vec::new(),
                existing: Vec::new(),
                retention: true,
            }
        }
        fn inputs(&self) -> SlotInputs<'_> {
            SlotInputs {
                me: "pg-1",
                leader: Some("pg-0"),
                retention: self.retention,
                members: &self.members,
                retain_slots: &self.retain,
                permanent: &self.permanent,
                ignore: &self.ignore,
                existing: &self.existing,
            }
        }
        fn plan(&self) -> SlotPlan {
            plan_slots(&self.inputs())
        }
    }

    /// `perm` (physical) and `logi` (logical, test_decoding on postgres).
    fn perm_and_logi() -> BTreeMap<String, PermanentSlot> {
        BTreeMap::from([
            ("perm".to_string(), PermanentSlot::Physical),
            (
                "logi".to_string(),
                PermanentSlot::Logical {
                    database: "postgres".into(),
                    plugin: "test_decoding".into(),
                },
            ),
        ])
    }

    fn drops(p: &SlotPlan) -> Vec<&str> {
        p.changes
            .iter()
            .filter_map(|c| match c {
                SlotChange::Drop(n) => Some(n.as_str()),
                _ => None,
            })
            .collect()
    }

    /// A wanted slot with `wal_status = 'lost'` is dropped and created again in the same plan,
    /// in that order (Patroni's "Trying to drop replication slot ... with wal_status=lost");
    /// not when it is active, not when `ignore_slots` keeps it, and its `xmin` adds no second
    /// drop. A lost slot nobody wants is simply dropped, as any unknown slot.
    #[test]
    fn lost_slots_are_dropped_and_created_again() {
        let mut c = Case::new(&["pg-1", "pg-2", "pg-3"]);
        c.permanent = perm_and_logi();
        let lost = |name: &str, ty: &str| SlotInfo {
            lost: true,
            ..slot(name, ty, false, Some(100))
        };
        c.existing = vec![
            SlotInfo {
                xmin: Some(42),
                ..lost("pg_2", "physical")
            },
            lost("pg_3", "physical"),
            lost("logi", "logical"),
            lost("perm", "physical"),
            lost("stray", "physical"),
        ];
        c.existing[1].active = true;
        c.ignore = vec![SlotMatcher {
            name: Some("perm".into()),
            ..SlotMatcher::default()
        }];
        let p = c.plan();
        assert_eq!(
            p.lost,
            BTreeSet::from(["logi".to_string(), "pg_2".to_string()])
        );
        assert_eq!(
            p.changes,
            vec![
                SlotChange::Drop("logi".into()),
                SlotChange::CreateLogical {
                    name: "logi".into(),
                    database: "postgres".into(),
                    plugin: "test_decoding".into(),
                },
                SlotChange::Drop("pg_2".into()),
                SlotChange::CreatePhysical("pg_2".into()),
                SlotChange::Drop("stray".into()),
            ]
        );
    }

    #[test]
    fn member_slots_are_created_for_others() {
        let c = Case::new(&["pg-1", "pg-2", "pg-3"]);
        let p = c.plan();
        assert_eq!(
            p.changes,
            vec![
                SlotChange::CreatePhysical("pg_2".into()),
                SlotChange::CreatePhysical("pg_3".into())
            ]
        );
    }

    #[test]
    fn unknown_inactive_unignored_slots_are_dropped() {
        let mut c = Case::new(&["pg-1", "pg-2"]);
        c.existing = vec![
            slot("pg_2", "physical", true, Some(1)),
            // A vanished member's slot: dropped.
            slot("pg_3", "physical", false, Some(1)),
            // Unknown but active: kept (until it is not).
            slot("pg_4", "physical", true, Some(1)),
            // Slots that match ignore_slots: kept.
            slot("keep_me", "physical", false, Some(1)),
            slot("cdc", "logical", false, Some(1)),
            // A user's slots that nothing lists: dropped, as Patroni drops them.
            slot("users", "physical", false, Some(1)),
            slot("logical_one", "logical", false, Some(1)),
        ];
        c.ignore = vec![
            SlotMatcher {
                name: Some("keep_me".into()),
                slot_type: Some("physical".into()),
                ..Default::default()
            },
            SlotMatcher {
                plugin: Some("test_decoding".into()),
                name: Some("cdc".into()),
                ..Default::default()
            },
        ];
        assert_eq!(drops(&c.plan()), vec!["pg_3", "users", "logical_one"]);
    }

    #[test]
    fn retained_member_slot_is_wanted_but_not_our_own() {
        let mut c = Case::new(&["pg-1"]);
        c.retain = vec!["pg_1".into(), "pg_2".into()];
        c.existing = vec![slot("pg_2", "physical", false, Some(5))];
        let p = c.plan();
        assert!(p.changes.is_empty());
        assert!(p.wanted.contains_key("pg_2"));
        assert!(!p.wanted.contains_key("pg_1"));
    }

    #[test]
    fn permanent_slots() {
        let mut c = Case::new(&["pg-1", "pg-2"]);
        c.permanent = BTreeMap::from([
            ("pg_2".to_string(), PermanentSlot::Physical),
            ("pg_1".to_string(), PermanentSlot::Physical),
            ("perm".to_string(), PermanentSlot::Physical),
            (
                "logi".to_string(),
                PermanentSlot::Logical {
                    database: "postgres".into(),
                    plugin: "test_decoding".into(),
                },
            ),
            ("Bad-Name".to_string(), PermanentSlot::Physical),
        ]);
        let p = c.plan();
        assert_eq!(
            p.changes,
            vec![
                SlotChange::CreateLogical {
                    name: "logi".into(),
                    database: "postgres".into(),
                    plugin: "test_decoding".into()
                },
                SlotChange::CreatePhysical("perm".into()),
                SlotChange::CreatePhysical("pg_2".into()),
            ]
        );
        assert_eq!(
            p.errors[0],
            "Invalid permanent replication slot name 'Bad-Name'"
        );
        // Removed from /config: both are dropped (an orphaned slot would hold WAL forever).
        let mut c = Case::new(&["pg-1"]);
        c.existing = vec![
            slot("perm", "physical", false, Some(1)),
            slot("logi", "logical", false, Some(1)),
        ];
        assert_eq!(drops(&c.plan()), vec!["perm", "logi"]);
        // Kept with another plugin in /config: dropped, to be created again.
        c.permanent = BTreeMap::from([(
            "logi".to_string(),
            PermanentSlot::Logical {
                database: "postgres".into(),
                plugin: "pgoutput".into(),
            },
        )]);
        assert_eq!(drops(&c.plan()), vec!["perm", "logi"]);
    }

    #[test]
    fn logical_permanent_slot_conflicting_with_member_slot() {
        let mut c = Case::new(&["pg-1", "pg-2"]);
        c.permanent = BTreeMap::from([(
            "pg_2".to_string(),
            PermanentSlot::Logical {
                database: "postgres".into(),
                plugin: "test_decoding".into(),
            },
        )]);
        let p = c.plan();
        assert_eq!(p.wanted.get("pg_2"), Some(&PermanentSlot::Physical));
        assert!(p.errors[0].contains("is conflicting with physical replication slot"));
    }

    #[test]
    fn replica_keeps_members_and_permanent_physical_slots_and_advances_them() {
        let mut c = Case::new(&["pg-0", "pg-1", "pg-2"]);
        c.permanent = perm_and_logi();
        c.existing = vec![
            slot("pg_0", "physical", false, Some(100)),
            slot("perm", "physical", false, Some(300)),
            slot("pg_2", "physical", true, Some(10)),
        ];
        let p = plan_slots_as(&c.inputs(), SlotRole::Replica { nofailover: false });
        // The leader's slot (pg_0) too; no logical slot on a replica.
        assert_eq!(
            p.wanted.keys().collect::<Vec<_>>(),
            vec!["perm", "pg_0", "pg_2"]
        );
        assert!(p.changes.is_empty());
        let status = json!({"pg_0": 200, "perm": 250, "pg_2": 50});
        assert_eq!(
            advance_changes(&p, &c.existing, status.as_object()),
            vec![SlotChange::Advance {
                name: "pg_0".into(),
                lsn: 200
            }]
        );
        // member_slots_ttl 0: only the permanent physical slots.
        c.retention = false;
        let p = plan_slots_as(&c.inputs(), SlotRole::Replica { nofailover: false });
        assert_eq!(p.wanted.keys().collect::<Vec<_>>(), vec!["perm"]);
    }

    /// After a failover the former primary keeps its copy of the new leader's slot, with the
    /// `xmin` the new leader's hot-standby feedback left in it: dropped (to be created clean);
    /// a slot in use keeps its `xmin`.
    #[test]
    fn stale_xmin_on_an_unused_physical_slot_is_dropped() {
        let mut c = Case::new(&["pg-0", "pg-1", "pg-2"]);
        let mut stale = slot("pg_0", "physical", false, Some(100));
        stale.xmin = Some(742);
        let mut used = slot("pg_2", "physical", true, Some(100));
        used.xmin = Some(742);
        c.existing = vec![stale, used];
        let p = plan_slots_as(&c.inputs(), SlotRole::Replica { nofailover: false });
        assert_eq!(drops(&p), ["pg_0"]);
        assert!(
            p.notes[0].contains("because of its xmin value 742"),
            "{:?}",
            p.notes
        );
        assert!(advance_changes(&p, &c.existing, None).is_empty());
        // No leader: nothing is cleaned.
        let mut inputs = c.inputs();
        inputs.leader = None;
        let p = plan_slots_as(&inputs, SlotRole::Replica { nofailover: false });
        assert!(drops(&p).is_empty());
    }

    #[test]
    fn nostream_up_the_replicatefrom_chain() {
        let members = vec![
            member("pg-0"),
            tagged("pg-1", json!({"nostream": true}), None),
            tagged("pg-2", json!({"replicatefrom": "pg-1"}), None),
            tagged("pg-3", json!({"replicatefrom": "pg-2"}), None),
            tagged("pg-4", json!({"replicatefrom": "pg-5"}), None),
            tagged("pg-5", json!({"replicatefrom": "pg-4"}), None),
        ];
        assert!(without_primary_slot(&members, "pg-1", true, None));
        assert!(without_primary_slot(&members, "pg-3", false, Some("pg-2")));
        assert!(!without_primary_slot(&members, "pg-9", false, Some("pg-0")));
        assert!(!without_primary_slot(&members, "pg-9", false, Some("gone")));
        // A loop ends.
        assert!(!without_primary_slot(&members, "pg-4", false, Some("pg-5")));
    }

    fn tagged(name: &str, tags: serde_json::Value, xlog: Option<u64>) -> Member {
        let mut m = member(name);
        m.data.tags = tags.as_object().cloned();
        m.data.xlog_location = xlog;
        m
    }

    /// Patroni's permanent_slots feature: pg-0 leads, pg-1 is a candidate, pg-2 is
    /// `nofailover`, pg-3 streams from pg-2 (`replicatefrom`). The leader keeps pg_3's slot
    /// (inactive there) and advances it to the position pg-3 reports; pg-2 keeps only pg_3's
    /// slot, active, and no permanent slot; a candidate keeps every other member's slot.
    #[test]
    fn cascading_and_nofailover_members() {
        let members = vec![
            member("pg-0"),
            member("pg-1"),
            tagged("pg-2", json!({"nofailover": true}), None),
            tagged("pg-3", json!({"replicatefrom": "pg-2"}), Some(900)),
        ];
        let permanent = BTreeMap::from([("perm".to_string(), PermanentSlot::Physical)]);
        let existing = vec![
            slot("pg_3", "physical", false, Some(500)),
            slot("perm", "physical", false, Some(100)),
        ];
        let inputs = |me: &'static str, retention: bool| SlotInputs {
            me,
            leader: Some("pg-0"),
            retention,
            members: &members,
            retain_slots: &[],
            permanent: &permanent,
            ignore: &[],
            existing: &existing,
        };
        let names = |p: &SlotPlan| p.wanted.keys().cloned().collect::<Vec<_>>();

        let leader = plan_slots(&inputs("pg-0", true));
        assert_eq!(names(&leader), ["perm", "pg_1", "pg_2", "pg_3"]);
        assert!(leader.expected_active.contains("perm"));
        assert!(!leader.expected_active.contains("pg_3"));
        assert_eq!(
            advance_changes(&leader, &existing, None),
            vec![SlotChange::Advance {
                name: "pg_3".into(),
                lsn: 900
            }]
        );
        // Without retention the leader keeps no slot for a member streaming elsewhere.
        assert_eq!(
            names(&plan_slots(&inputs("pg-0", false))),
            ["perm", "pg_1", "pg_2"]
        );

        let cascade = plan_slots_as(
            &inputs("pg-2", true),
            SlotRole::Replica { nofailover: true },
        );
        assert_eq!(names(&cascade), ["pg_3"]);
        assert!(cascade.expected_active.contains("pg_3"));
        assert!(advance_changes(&cascade, &existing, None).is_empty());
        let cascade = plan_slots_as(
            &inputs("pg-2", false),
            SlotRole::Replica { nofailover: true },
        );
        assert_eq!(names(&cascade), ["pg_3"]);

        let candidate = plan_slots_as(
            &inputs("pg-3", true),
            SlotRole::Replica { nofailover: false },
        );
        assert_eq!(names(&candidate), ["perm", "pg_0", "pg_1", "pg_2"]);
        let status = json!({"perm": 300});
        assert_eq!(
            advance_changes(&candidate, &existing, status.as_object()),
            vec![SlotChange::Advance {
                name: "perm".into(),
                lsn: 300
            }]
        );
    }

    #[test]
    fn status_document() {
        let mut c = Case::new(&["pg-1", "pg-2"]);
        c.permanent = perm_and_logi();
        c.existing = vec![
            slot("pg_2", "physical", true, Some(100)),
            slot("perm", "physical", false, Some(50)),
            slot("logi", "logical", false, Some(70)),
            slot("users", "physical", false, Some(10)),
        ];
        let p = c.plan();
        let ttl = Duration::from_secs(1800);
        let own = ("pg_1", 120);
        let slots = status_slots(&p, &c.existing, ttl, own, &c.permanent);
        assert_eq!(
            Value::Object(slots.clone().unwrap_or_default()),
            json!({"pg_1": 120, "pg_2": 100, "perm": 50, "logi": 70})
        );
        assert_eq!(
            Value::Object(
                status_slots(&p, &c.existing, Duration::ZERO, own, &c.permanent)
                    .unwrap_or_default()
            ),
            json!({"perm": 50, "logi": 70})
        );

        let now = Instant::now();
        let mut retain = BTreeMap::new();
        let expired = update_retain(&mut retain, slots.as_ref(), &c.inputs(), now, ttl);
        assert!(expired.is_empty());
        // Only member slots (the leader's own too, as in Patroni), never permanent ones.
        assert_eq!(retain.keys().collect::<Vec<_>>(), vec!["pg_1", "pg_2"]);
        // pg-2's key vanishes: kept until the ttl passes.
        let gone = Case::new(&["pg-1"]);
        let later = now + Duration::from_secs(1000);
        assert!(update_retain(&mut retain, slots.as_ref(), &gone.inputs(), later, ttl).is_empty());
        let expired = update_retain(&mut retain, None, &gone.inputs(), now + ttl, ttl);
        // Our own slot was stamped again at `later`: still retained.
        assert_eq!(expired, vec!["pg_2".to_string()]);
        assert_eq!(retain.keys().collect::<Vec<_>>(), vec!["pg_1"]);
    }
}
