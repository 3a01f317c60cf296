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
            status_slots(&p, &c.existing, Duration::ZERO, own, &c.permanent).unwrap_or_default()
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
