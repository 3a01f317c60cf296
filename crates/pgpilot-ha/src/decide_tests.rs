//! Table tests of `decide()`: one row per branch of the HA cycle, asserting the exact decision
//! and the sentence logged (spec/ha-loop.md §5.1–5.3). No processes, no clock.

use pgpilot_types::PeerStatus;
use std::time::Duration;

use pgpilot_dcs::{Cluster, Failover, HistoryLine, Leader, Member, MemberData, Status};
use serde_json::{json, Value};

use crate::decide::{
    decide, manual_failover_from_leader, ActionKind, DataState, Decision, ManualFailover,
    Observation, PgView,
};

const SYSID: &str = "7311111111111111111";

fn member(name: &str, role: &str, timeline: Option<u32>, tags: Option<Value>) -> Member {
    Member {
        name: name.into(),
        data: MemberData {
            conn_url: format!("postgres://127.0.0.1:5432/{name}"),
            api_url: format!("http://127.0.0.1:8008/{name}"),
            state: "running".into(),
            role: role.into(),
            timeline,
            tags: tags.and_then(|t| t.as_object().cloned()),
            ..Default::default()
        },
        version: 1,
        lease: 1,
    }
}

/// pg1 (leader), pg2 (me), pg3; initialized; history `[]`.
fn cluster(leader: Option<&str>) -> Cluster {
    Cluster {
        initialize: Some(SYSID.into()),
        leader: leader.map(|l| Leader {
            name: l.into(),
            version: 1,
            lease: 1,
        }),
        members: vec![
            member("pg1", "primary", Some(1), None),
            member("pg2", "replica", Some(1), None),
            member("pg3", "replica", Some(1), None),
        ],
        status: Status {
            optime: 1000,
            ..Default::default()
        },
        history: Some(vec![]),
        ..Default::default()
    }
}

fn replica(wal: u64) -> PgView {
    PgView::Running {
        in_recovery: true,
        timeline: 1,
        wal_position: wal,
        streaming: true,
    }
}

fn primary(timeline: u32) -> PgView {
    PgView::Running {
        in_recovery: false,
        timeline,
        wal_position: 1000,
        streaming: false,
    }
}

fn peer(name: &str, wal: u64) -> PeerStatus {
    PeerStatus {
        name: name.into(),
        is_primary: false,
        wal_position: wal,
        timeline: Some(1),
        nofailover: false,
        failover_priority: 1,
        watchdog_failed: false,
        raw: Value::Null,
    }
}

/// Me = pg2, a streaming replica following pg1.
fn obs() -> Observation {
    Observation {
        me: "pg2".into(),
        cluster: Some(cluster(Some("pg1"))),
        data: DataState::Initialized {
            sysid: SYSID.into(),
        },
        pg: replica(1000),
        action: None,
        paused: false,
        can_failover: true,
        failover_priority: 1,
        can_bootstrap: true,
        can_clone_without_leader: false,
        maximum_lag_on_failover: 1_048_576,
        check_timeline: false,
        use_pg_rewind: true,
        remove_data_directory_on_rewind_failure: false,
        rewind_failed: false,
        rewind_check: false,
        peers: vec![],
        self_demoted: false,
        sync: crate::sync::SyncParams::off(),
        watchdog_usable: true,
        guard_usable: true,
        primary_start_timeout: Duration::from_secs(300),
        pre_promote_backoff: false,
        standby_cluster: false,
        failsafe_mode: false,
        failsafe: None,
        started_within_ttl: false,
    }
}

/// A `/failsafe` key listing these members.
fn failsafe_key(names: &[&str]) -> Option<serde_json::Map<String, Value>> {
    Some(
        names
            .iter()
            .map(|n| (n.to_string(), json!(format!("http://127.0.0.1:8008/{n}"))))
            .collect(),
    )
}

/// Failsafe mode on with this `/failsafe` key, the DCS unreachable, PostgreSQL a primary.
fn failsafe_primary(o: &mut Observation, names: &[&str]) {
    o.cluster = None;
    o.pg = primary(1);
    o.failsafe_mode = true;
    o.failsafe = failsafe_key(names);
}

fn ask(names: &[&str]) -> Decision {
    Decision::FailsafeRound {
        members: names
            .iter()
            .map(|n| (n.to_string(), format!("http://127.0.0.1:8008/{n}")))
            .collect(),
    }
}

fn no_action(msg: &str) -> Decision {
    Decision::NoAction { msg: msg.into() }
}

/// A replica that is not the healthiest follows; `reason` is what `is_healthiest` says.
fn not_healthiest(reason: &str) -> Decision {
    Decision::NotHealthiest {
        reason: reason.into(),
        demote: false,
        msg: "following a different leader because i am not the healthiest node".into(),
    }
}

fn start_secondary(follow: Option<&str>) -> Decision {
    Decision::StartPostgres {
        as_primary: false,
        follow: follow.map(str::to_string),
        msg: "starting as a secondary".into(),
        renew_lock_first: false,
    }
}

/// No leader, a `/failover` key `{leader, member}`.
fn with_failover(leader: Option<&str>, member: Option<&str>) -> Option<Cluster> {
    let mut c = cluster(None);
    c.failover = Some(Failover {
        leader: leader.map(str::to_string),
        member: member.map(str::to_string),
        scheduled_at: None,
        version: 7,
    });
    Some(c)
}

/// `synchronous_mode: quorum`.
fn quorum_mode() -> crate::sync::SyncParams {
    crate::sync::SyncParams {
        mode: pgpilot_config::SyncMode::Quorum,
        ..crate::sync::SyncParams::off()
    }
}

/// `c` with a `/sync` key led by `leader`, listing `voters`, with `quorum`.
fn with_sync(c: Option<Cluster>, leader: &str, voters: &str, quorum: u32) -> Option<Cluster> {
    c.map(|mut c| {
        c.sync = Some(pgpilot_dcs::SyncState {
            leader: Some(leader.into()),
            sync_standby: Some(voters.into()),
            quorum,
            version: 5,
        });
        c
    })
}

/// A cluster on timeline 2 (`/history` has one line) whose `/failover` key is
/// `{leader, member}`, without a leader.
fn with_failover_on_timeline_2(leader: Option<&str>, member: Option<&str>) -> Option<Cluster> {
    with_failover(leader, member).map(|mut c| {
        c.history = Some(vec![HistoryLine {
            timeline: 1,
            lsn: 10,
            reason: "x".into(),
            timestamp: None,
            leader: None,
        }]);
        c
    })
}

/// The leader's side of a switchover (§5.4): when to demote, wait, or clear the key.
#[test]
fn manual_failover_from_leader_table() {
    let lw = Duration::from_secs(10);
    let leader_obs = |peers: Vec<PeerStatus>| {
        let mut o = obs();
        o.cluster = Some(cluster(Some("pg2")));
        o.pg = primary(1);
        o.peers = peers;
        o
    };
    let f = |leader: Option<&str>, member: Option<&str>| Failover {
        leader: leader.map(str::to_string),
        member: member.map(str::to_string),
        scheduled_at: Some("2099-01-01T00:00:00+00:00".into()),
        version: 3,
    };
    let demote = |c: Option<&str>| ManualFailover::Demote {
        candidate: c.map(str::to_string),
    };
    type Row = (
        &'static str,
        Observation,
        Failover,
        Option<f64>,
        ManualFailover,
    );
    let rows: Vec<Row> = vec![
        (
            "to pg3, healthy",
            leader_obs(vec![peer("pg3", 1000)]),
            f(Some("pg2"), Some("pg3")),
            None,
            demote(Some("pg3")),
        ),
        (
            "to anyone",
            leader_obs(vec![peer("pg1", 1000)]),
            f(Some("pg2"), None),
            None,
            demote(None),
        ),
        (
            "failover without leader name",
            leader_obs(vec![peer("pg3", 1000)]),
            f(None, Some("pg3")),
            None,
            demote(Some("pg3")),
        ),
        (
            "candidate lagging",
            {
                let mut o = leader_obs(vec![peer("pg3", 0)]);
                o.maximum_lag_on_failover = 100;
                o
            },
            {
                let mut o = f(None, Some("pg3"));
                o.scheduled_at = None;
                o
            },
            None,
            ManualFailover::Clear {
                msg: "manual failover: no healthy members found, failover is not possible".into(),
            },
        ),
        (
            "candidate unreachable",
            leader_obs(vec![]),
            f(None, Some("pg3")),
            None,
            ManualFailover::Clear {
                msg: "manual failover: no healthy members found, failover is not possible".into(),
            },
        ),
        (
            "candidate nofailover",
            leader_obs(vec![PeerStatus {
                nofailover: true,
                ..peer("pg3", 1000)
            }]),
            f(None, Some("pg3")),
            None,
            ManualFailover::Clear {
                msg: "manual failover: no healthy members found, failover is not possible".into(),
            },
        ),
        (
            "leader mismatch",
            leader_obs(vec![peer("pg3", 1000)]),
            f(Some("pg1"), Some("pg3")),
            None,
            ManualFailover::Clear {
                msg: "manual failover: leader name does not match: pg1 != pg2".into(),
            },
        ),
        (
            "candidate is me",
            leader_obs(vec![]),
            f(None, Some("pg2")),
            None,
            ManualFailover::Clear {
                msg: "manual failover: I am already the leader, no need to failover".into(),
            },
        ),
        (
            "paused without candidate",
            {
                let mut o = leader_obs(vec![peer("pg3", 1000)]);
                o.paused = true;
                o
            },
            f(Some("pg2"), None),
            None,
            ManualFailover::Clear {
                msg: "Switchover is possible only to a specific candidate in a paused state".into(),
            },
        ),
        // K1 (the simulation's seed 440): in quorum mode too a switchover goes only to a
        // `/sync` member; a non-voter may miss commits the voters acknowledged.
        (
            "quorum mode, to pg3, a voter",
            {
                let mut o = leader_obs(vec![peer("pg3", 1000)]);
                o.sync = quorum_mode();
                o.cluster = with_sync(o.cluster, "pg2", "pg1,pg3", 1);
                o
            },
            f(Some("pg2"), Some("pg3")),
            None,
            demote(Some("pg3")),
        ),
        (
            "quorum mode, to pg3, not in /sync (K1)",
            {
                let mut o = leader_obs(vec![peer("pg3", 1000)]);
                o.sync = quorum_mode();
                o.cluster = with_sync(o.cluster, "pg2", "pg1", 0);
                o
            },
            f(Some("pg2"), Some("pg3")),
            None,
            ManualFailover::Clear {
                msg: "manual failover: no healthy members found, failover is not possible".into(),
            },
        ),
        (
            "scheduled later",
            leader_obs(vec![peer("pg3", 1000)]),
            f(Some("pg2"), Some("pg3")),
            Some(60.0),
            ManualFailover::Wait {
                msg: "Awaiting switchover at 2099-01-01T00:00:00+00:00 (in 60 seconds)".into(),
            },
        ),
        (
            "scheduled within loop_wait",
            leader_obs(vec![peer("pg3", 1000)]),
            f(Some("pg2"), Some("pg3")),
            Some(2.5),
            ManualFailover::SleepUntilDue(Duration::from_millis(2500)),
        ),
        (
            "scheduled, due",
            leader_obs(vec![peer("pg3", 1000)]),
            f(Some("pg2"), Some("pg3")),
            Some(-3.0),
            demote(Some("pg3")),
        ),
        (
            "scheduled, stale",
            leader_obs(vec![peer("pg3", 1000)]),
            f(Some("pg2"), Some("pg3")),
            Some(-16.0),
            ManualFailover::Clear {
                msg: "Found a stale switchover value, cleaning up: 2099-01-01T00:00:00+00:00"
                    .into(),
            },
        ),
    ];
    let mut failures = Vec::new();
    for (name, o, f, delta, want) in rows {
        let got = manual_failover_from_leader(&o, &f, delta, lw);
        if got != want {
            failures.push(format!("{name}:\n   want {want:?}\n    got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// An unlocked cluster with `leader` injected as a recent `POST /failsafe` names it.
fn injected(leader: &str) -> Option<Cluster> {
    let mut c = cluster(None);
    crate::decide::inject_leader(
        &mut c,
        &crate::decide::KnownLeader {
            name: leader,
            conn_url: "postgres://127.0.0.9:5432/postgres",
            api_url: "http://127.0.0.9:8008/patroni",
            slots: None,
        },
        "pg2",
    );
    Some(c)
}

/// Failsafe mode's pure parts: the `/failsafe` key the leader writes, the follow-up of a
/// round, and the injected leader.
#[test]
fn failsafe_topology_round_and_injected_leader() {
    use crate::decide::{after_failsafe_round, failsafe_topology, AfterFailsafe};
    let mut c = cluster(Some("pg2"));
    c.members[2].data.api_url.clear();
    c.members.retain(|m| m.name != "pg2");
    let key = failsafe_topology(&c, "pg2", "http://127.0.0.2:8008/patroni");
    assert_eq!(
        serde_json::to_string(&key).unwrap(),
        r#"{"pg1":"http://127.0.0.1:8008/pg1","pg2":"http://127.0.0.2:8008/patroni"}"#,
        "members without api_url are left out, the leader itself is added"
    );
    let ok = |n: &str| (n.to_string(), true);
    assert_eq!(
        after_failsafe_round(&[ok("pg1"), ok("pg3")]),
        AfterFailsafe::Lead {
            msg: "continue to run as a leader because failsafe mode is enabled and all members are accessible".into()
        }
    );
    assert_eq!(
        after_failsafe_round(&[]),
        after_failsafe_round(&[ok("pg1")])
    );
    assert_eq!(
        after_failsafe_round(&[ok("pg1"), ("pg3".into(), false)]),
        AfterFailsafe::Demote {
            msg: "demoted self because DCS is not accessible and I was a leader (failsafe: no acknowledgement from pg3)".into()
        }
    );
    // Injected: an existing member key is used as is; a missing one is built from the POST,
    // in name order; a held key, or our own name, is left alone.
    let c = injected("pg1").unwrap();
    assert_eq!(c.leader_name(), Some("pg1"));
    assert_eq!(c.members.len(), 3);
    let c = injected("pg25").unwrap();
    assert_eq!(c.leader_name(), Some("pg25"));
    let names: Vec<&str> = c.members.iter().map(|m| m.name.as_str()).collect();
    assert_eq!(names, ["pg1", "pg2", "pg25", "pg3"]);
    let m = c.member("pg25").unwrap();
    assert_eq!(m.data.conn_url, "postgres://127.0.0.9:5432/postgres");
    assert_eq!(m.data.host_port(), Some(("127.0.0.9".into(), 5432)));
    assert_eq!(injected("pg2").unwrap().leader_name(), None);
    let mut held = cluster(Some("pg3"));
    crate::decide::inject_leader(
        &mut held,
        &crate::decide::KnownLeader {
            name: "pg1",
            conn_url: "",
            api_url: "",
            slots: None,
        },
        "pg2",
    );
    assert_eq!(held.leader_name(), Some("pg3"));
    // The leader's slot positions replace `/status.slots` (it can not write them any more).
    let slots = serde_json::json!({"pg2": 200, "pg1": 150});
    let mut c = cluster(None);
    c.status.slots = serde_json::json!({"pg2": 100}).as_object().cloned();
    crate::decide::inject_leader(
        &mut c,
        &crate::decide::KnownLeader {
            name: "pg1",
            conn_url: "",
            api_url: "",
            slots: slots.as_object(),
        },
        "pg2",
    );
    assert_eq!(c.status.slots.as_ref(), slots.as_object());
}

#[test]
fn decision_table() {
    fn unlocked() -> Option<Cluster> {
        Some(cluster(None))
    }
    fn mine() -> Option<Cluster> {
        Some(cluster(Some("pg2")))
    }
    fn stopped(was_primary: bool) -> PgView {
        PgView::Stopped {
            was_primary,
            clean: true,
        }
    }
    type Row = (&'static str, Box<dyn Fn(&mut Observation)>, Decision);
    let rows: Vec<Row> = vec![
        // §5.1.17: DCS unreachable.
        ("dcs down, primary", Box::new(|o| { o.cluster = None; o.pg = primary(1) }), Decision::DemoteOffline),
        ("dcs down, replica", Box::new(|o| o.cluster = None), no_action("DCS is not accessible")),
        ("dcs down, paused primary", Box::new(|o| { o.cluster = None; o.pg = primary(1); o.paused = true }), no_action("DCS is not accessible")),
        ("dcs down, stopped after demotion", Box::new(|o| { o.cluster = None; o.pg = stopped(true) }), start_secondary(None)),
        ("dcs down, stopped, paused", Box::new(|o| { o.cluster = None; o.pg = stopped(true); o.paused = true }), no_action("DCS is not accessible")),
        // §5.1.17 with failsafe mode: ask the other members of the last `/failsafe` seen.
        ("failsafe, dcs down, primary listed", Box::new(|o| failsafe_primary(o, &["pg1", "pg2", "pg3"])), ask(&["pg1", "pg3"])),
        ("failsafe, dcs down, single member", Box::new(|o| failsafe_primary(o, &["pg2"])), ask(&[])),
        ("failsafe, dcs down, primary not listed", Box::new(|o| failsafe_primary(o, &["pg1", "pg3"])), Decision::DemoteOffline),
        ("failsafe, dcs down, empty key", Box::new(|o| failsafe_primary(o, &[])), Decision::DemoteOffline),
        ("failsafe, dcs down, no key", Box::new(|o| { failsafe_primary(o, &[]); o.failsafe = None }), Decision::DemoteOffline),
        ("failsafe off, dcs down, key listing me", Box::new(|o| { failsafe_primary(o, &["pg1", "pg2"]); o.failsafe_mode = false }), Decision::DemoteOffline),
        ("failsafe, dcs down, paused primary", Box::new(|o| { failsafe_primary(o, &["pg1", "pg2"]); o.paused = true }), no_action("DCS is not accessible")),
        ("failsafe, dcs down, replica", Box::new(|o| { failsafe_primary(o, &["pg1", "pg2"]); o.pg = replica(1000) }), no_action("DCS is not accessible")),
        ("failsafe, dcs down, stopped after demotion", Box::new(|o| { failsafe_primary(o, &["pg1", "pg2"]); o.pg = stopped(true) }), start_secondary(None)),
        // §5.2 rule 8: a member absent from a non-empty `/failsafe` does not take the key.
        ("failsafe, unlocked, not listed", Box::new(|o| { o.cluster = unlocked(); o.failsafe_mode = true; o.failsafe = failsafe_key(&["pg1", "pg3"]) }), not_healthiest("failsafe mode: I am not listed in /failsafe")),
        ("failsafe, unlocked, listed", Box::new(|o| { o.cluster = unlocked(); o.failsafe_mode = true; o.failsafe = failsafe_key(&["pg1", "pg2", "pg3"]) }), Decision::AcquireLeader),
        ("failsafe, unlocked, empty key", Box::new(|o| { o.cluster = unlocked(); o.failsafe_mode = true; o.failsafe = failsafe_key(&[]) }), Decision::AcquireLeader),
        ("failsafe, unlocked, agent started within a ttl", Box::new(|o| { o.cluster = unlocked(); o.failsafe_mode = true; o.started_within_ttl = true }), not_healthiest("failsafe mode: started less than a ttl ago (a POST /failsafe accepted before a restart may still bind this member)")),
        ("failsafe off, unlocked, agent started within a ttl", Box::new(|o| { o.cluster = unlocked(); o.started_within_ttl = true }), Decision::AcquireLeader),
        ("failsafe, unlocked, primary, agent started within a ttl", Box::new(|o| { o.cluster = unlocked(); o.pg = primary(1); o.failsafe_mode = true; o.started_within_ttl = true }), Decision::AcquireLeader),
        ("failsafe off, unlocked, not listed", Box::new(|o| { o.cluster = unlocked(); o.failsafe = failsafe_key(&["pg1", "pg3"]) }), Decision::AcquireLeader),
        // The leader of a recent POST /failsafe stands in for the expired key: follow it.
        ("failsafe, unlocked, leader known from POST", Box::new(|o| { o.cluster = injected("pg1"); o.failsafe_mode = true; o.failsafe = failsafe_key(&["pg1", "pg2", "pg3"]) }), Decision::Follow { leader: "pg1".into() }),
        ("failsafe, unlocked, leader known from POST, its key gone", Box::new(|o| { o.cluster = injected("pg9"); o.failsafe_mode = true; o.failsafe = failsafe_key(&["pg9", "pg2", "pg3"]) }), Decision::Follow { leader: "pg9".into() }),
        ("failsafe, unlocked, leader known from POST, own primary", Box::new(|o| { o.cluster = injected("pg1"); o.pg = primary(1); o.failsafe_mode = true }), Decision::DemoteImmediate { msg: "demoting self because I do not have the lock and I was a leader".into() }),
        // §5.1.5: a background action runs.
        ("action, lock holder", Box::new(|o| { o.cluster = mine(); o.action = Some(ActionKind::Start) }), Decision::UpdateLockDuring { action: ActionKind::Start }),
        ("action, primary without lock", Box::new(|o| { o.pg = primary(1); o.action = Some(ActionKind::Rewind) }), Decision::DemoteImmediate { msg: "lost leader lock during rewind".into() }),
        ("action, replica", Box::new(|o| o.action = Some(ActionKind::Clone)), no_action("bootstrap from leader in progress")),
        ("bootstrap without lock", Box::new(|o| { o.cluster = unlocked(); o.pg = primary(1); o.action = Some(ActionKind::Bootstrap) }), no_action("bootstrap in progress")),
        ("custom bootstrap recovering", Box::new(|o| { o.cluster = Some(Cluster { initialize: Some(String::new()), ..Default::default() }); o.data = DataState::Empty; o.pg = PgView::Unresponsive; o.action = Some(ActionKind::BootstrapRecovery) }), no_action("waiting for end of recovery after bootstrap")),
        ("clone without leader in progress", Box::new(|o| { o.cluster = unlocked(); o.action = Some(ActionKind::CloneWithoutLeader) }), no_action("bootstrap (without leader) in progress")),
        // §5.1.9: empty data directory.
        ("empty, holds lock", Box::new(|o| { o.cluster = mine(); o.data = DataState::Empty }), Decision::ReleaseLock { msg: "released leader key because the data directory is empty".into() }),
        ("empty, paused", Box::new(|o| { o.data = DataState::Empty; o.paused = true }), no_action("running with empty data directory")),
        ("empty, fresh cluster", Box::new(|o| { o.cluster = Some(Cluster::default()); o.data = DataState::Empty; o.pg = stopped(false) }), Decision::RaceBootstrap),
        ("empty, fresh cluster, nofailover", Box::new(|o| { o.cluster = Some(Cluster::default()); o.data = DataState::Empty; o.can_failover = false }), no_action("waiting for leader to bootstrap")),
        ("empty, leader exists", Box::new(|o| o.data = DataState::Empty), Decision::Clone { from: "pg1".into(), msg: "trying to bootstrap from leader 'pg1'".into() }),
        ("empty, clonefrom replica", Box::new(|o| {
            o.data = DataState::Empty;
            let mut c = cluster(Some("pg1"));
            c.members[2] = member("pg3", "replica", Some(1), Some(json!({"clonefrom": true})));
            o.cluster = Some(c);
        }), Decision::Clone { from: "pg3".into(), msg: "trying to bootstrap from replica 'pg3'".into() }),
        ("empty, initialized but no leader", Box::new(|o| { o.cluster = unlocked(); o.data = DataState::Empty }), no_action("waiting for leader to bootstrap")),
        // A no_leader replica creation method restores a member of a cluster without a leader,
        // but not while another member races for `/initialize` (value "").
        ("empty, no leader, no_leader method", Box::new(|o| { o.cluster = unlocked(); o.data = DataState::Empty; o.can_clone_without_leader = true }),
            Decision::CloneWithoutLeader { msg: "trying to bootstrap (without leader)".into() }),
        ("empty, no leader, no_leader method, nofailover, fresh", Box::new(|o| { o.cluster = Some(Cluster::default()); o.data = DataState::Empty; o.can_failover = false; o.can_clone_without_leader = true }),
            Decision::CloneWithoutLeader { msg: "trying to bootstrap (without leader)".into() }),
        ("empty, no_leader method, concurrent bootstrap", Box::new(|o| { o.cluster = Some(Cluster { initialize: Some(String::new()), ..Default::default() }); o.data = DataState::Empty; o.can_clone_without_leader = true }),
            no_action("waiting for leader to bootstrap")),
        ("empty, fresh cluster, no_leader method: race first", Box::new(|o| { o.cluster = Some(Cluster::default()); o.data = DataState::Empty; o.can_clone_without_leader = true }), Decision::RaceBootstrap),
        ("empty, leader exists, no_leader method: clone", Box::new(|o| { o.data = DataState::Empty; o.can_clone_without_leader = true }), Decision::Clone { from: "pg1".into(), msg: "trying to bootstrap from leader 'pg1'".into() }),
        ("invalid data dir", Box::new(|o| o.data = DataState::Invalid("x".into())), no_action("data dir for the cluster is not empty, but system ID is invalid; consider doing reinitialize")),
        // §5.1.10: system identifier.
        ("sysid mismatch", Box::new(|o| o.data = DataState::Initialized { sysid: "7322222222222222222".into() }),
            Decision::Fatal { msg: format!("system ID mismatch, node pg2 belongs to a different cluster: {SYSID} != 7322222222222222222") }),
        ("no initialize key, primary: adopt", Box::new(|o| { let mut c = cluster(None); c.initialize = None; o.cluster = Some(c); o.pg = primary(1) }), Decision::AdoptInitialize { sysid: SYSID.into() }),
        ("no initialize key, replica", Box::new(|o| { let mut c = cluster(None); c.initialize = None; o.cluster = Some(c) }),
            Decision::Fatal { msg: "No initialize key in DCS and PostgreSQL is running as replica, aborting start".into() }),
        // §5.1.11: PostgreSQL stopped.
        ("stopped, lock holder, was primary", Box::new(|o| { o.cluster = mine(); o.pg = stopped(true) }),
            Decision::StartPostgres { as_primary: true, follow: None, msg: "starting primary after failure".into(), renew_lock_first: true }),
        // primary_start_timeout: 0 hands over at once, only to a member that can take over.
        ("stopped, lock holder, start timeout 0, healthy replica", Box::new(|o| {
            o.cluster = mine(); o.pg = stopped(true); o.primary_start_timeout = Duration::ZERO; o.peers = vec![peer("pg3", 1000)];
        }), Decision::FailOverAfterCrash),
        ("stopped, lock holder, start timeout 0, nobody to take over", Box::new(|o| {
            o.cluster = mine(); o.pg = stopped(true); o.primary_start_timeout = Duration::ZERO;
        }), Decision::StartPostgres { as_primary: true, follow: None, msg: "starting primary after failure".into(), renew_lock_first: true }),
        ("stopped, lock holder, start timeout 0, only a lagging or nofailover replica", Box::new(|o| {
            o.cluster = mine(); o.pg = stopped(true); o.primary_start_timeout = Duration::ZERO;
            let mut nofailover = peer("pg1", 1000);
            nofailover.nofailover = true;
            o.peers = vec![peer("pg3", 0), nofailover];
            o.maximum_lag_on_failover = 10;
        }), Decision::StartPostgres { as_primary: true, follow: None, msg: "starting primary after failure".into(), renew_lock_first: true }),
        ("stopped, lock holder, start timeout 300, healthy replica", Box::new(|o| {
            o.cluster = mine(); o.pg = stopped(true); o.peers = vec![peer("pg3", 1000)];
        }), Decision::StartPostgres { as_primary: true, follow: None, msg: "starting primary after failure".into(), renew_lock_first: true }),
        // A member that released the key after a failed pre_promote sits out the races for a ttl.
        ("leader race during the pre_promote backoff", Box::new(|o| { o.cluster = unlocked(); o.pre_promote_backoff = true }),
            not_healthiest("backoff: skip leader race after pre_promote script failure and releasing the lock voluntarily")),
        ("stopped, lock holder, was replica", Box::new(|o| { o.cluster = mine(); o.pg = stopped(false) }),
            Decision::StartPostgres { as_primary: false, follow: None, msg: "starting as readonly because i had the session lock".into(), renew_lock_first: true }),
        ("stopped former primary, rewind", Box::new(|o| o.pg = stopped(true)), Decision::Rewind { leader: "pg1".into() }),
        ("stopped former primary, no rewind configured", Box::new(|o| { o.pg = stopped(true); o.use_pg_rewind = false }), start_secondary(Some("pg1"))),
        ("rewind failed, remove allowed", Box::new(|o| { o.pg = stopped(true); o.rewind_failed = true; o.remove_data_directory_on_rewind_failure = true }),
            Decision::RemoveDataDirectory { msg: "removing data directory because pg_rewind failed".into() }),
        // Regression: the diverged data directory was started as a replica after pg_rewind failed.
        ("rewind failed, remove not allowed: the diverged data directory is never started", Box::new(|o| { o.pg = stopped(true); o.rewind_failed = true }),
            Decision::NoAction { msg: "not starting PostgreSQL as a replica of pg1: pg_rewind failed and remove_data_directory_on_rewind_failure is off; reinitialize this member".into() }),
        ("stopped replica", Box::new(|o| o.pg = stopped(false)), start_secondary(Some("pg1"))),
        ("stopped, unlocked", Box::new(|o| { o.cluster = unlocked(); o.pg = stopped(false) }), start_secondary(None)),
        ("stopped, paused, lock holder", Box::new(|o| { o.cluster = mine(); o.pg = stopped(true); o.paused = true }),
            Decision::ReleaseLock { msg: "removed leader key because postgres is not running".into() }),
        ("stopped, paused", Box::new(|o| { o.pg = stopped(false); o.paused = true }), no_action("postgres is not running")),
        ("unresponsive, lock holder", Box::new(|o| { o.cluster = mine(); o.pg = PgView::Unresponsive }), Decision::UpdateLockDuring { action: ActionKind::Start }),
        ("unresponsive replica", Box::new(|o| o.pg = PgView::Unresponsive), no_action("PostgreSQL is not accepting connections yet")),
        // §5.2: leader race.
        ("race, healthiest", Box::new(|o| { o.cluster = unlocked(); o.peers = vec![peer("pg3", 900)] }), Decision::AcquireLeader),
        ("race, peer ahead", Box::new(|o| { o.cluster = unlocked(); o.peers = vec![peer("pg3", 1001)] }), not_healthiest("Wal position of pg3 is ahead of my wal position")),
        ("race, primary alive", Box::new(|o| { o.cluster = unlocked(); o.peers = vec![PeerStatus { is_primary: true, ..peer("pg1", 1000) }] }), not_healthiest("Primary (pg1) is still alive")),
        ("race, too far behind", Box::new(|o| { o.cluster = unlocked(); o.pg = replica(1); o.maximum_lag_on_failover = 10 }), not_healthiest("My wal position exceeds maximum replication lag (999 > 10)")),
        ("race, equal WAL, higher peer priority", Box::new(|o| { o.cluster = unlocked(); o.peers = vec![PeerStatus { failover_priority: 2, ..peer("pg3", 1000) }] }), not_healthiest("pg3 has equally tolerable WAL position and priority 2, while this node has priority 1")),
        ("race, equal WAL, equal priority", Box::new(|o| { o.cluster = unlocked(); o.peers = vec![peer("pg3", 1000)] }), Decision::AcquireLeader),
        ("race, nofailover peer ahead is ignored", Box::new(|o| { o.cluster = unlocked(); o.peers = vec![PeerStatus { nofailover: true, ..peer("pg3", 5000) }] }), Decision::AcquireLeader),
        ("race, nofailover", Box::new(|o| { o.cluster = unlocked(); o.can_failover = false }),
            Decision::NotHealthiest { reason: "nofailover".into(), demote: false, msg: "following a different leader because I am not allowed to promote".into() }),
        // Patroni's `is_healthiest_node` asks "am I primary?" before "nofailover?".
        ("race, nofailover primary", Box::new(|o| { o.cluster = unlocked(); o.can_failover = false; o.pg = primary(1) }), Decision::AcquireLeader),
        ("race, nofailover stale primary", Box::new(|o| {
            let mut c = cluster(None);
            c.history = Some(vec![HistoryLine { timeline: 1, lsn: 10, reason: "x".into(), timestamp: None, leader: None }]);
            o.cluster = Some(c);
            o.pg = primary(1);
            o.can_failover = false;
        }), Decision::NotHealthiest { reason: "my timeline 1 is behind the cluster timeline 2".into(), demote: true, msg: "demoting self because I am not allowed to become primary".into() }),
        ("race, paused replica", Box::new(|o| { o.cluster = unlocked(); o.paused = true }), not_healthiest("paused")),
        ("race, check_timeline", Box::new(|o| {
            let mut c = cluster(None);
            c.history = Some(vec![HistoryLine { timeline: 1, lsn: 10, reason: "x".into(), timestamp: None, leader: None }]);
            o.cluster = Some(c);
            o.check_timeline = true;
        }), not_healthiest("My timeline 1 is behind last known cluster timeline 2")),
        ("race, running primary", Box::new(|o| { o.cluster = unlocked(); o.pg = primary(1) }), Decision::AcquireLeader),
        ("race, stale primary on an old timeline", Box::new(|o| {
            let mut c = cluster(None);
            c.history = Some(vec![HistoryLine { timeline: 1, lsn: 10, reason: "x".into(), timestamp: None, leader: None }]);
            o.cluster = Some(c);
            o.pg = primary(1);
        }), Decision::NotHealthiest { reason: "my timeline 1 is behind the cluster timeline 2".into(), demote: true, msg: "demoting self because i am not the healthiest node".into() }),
        ("race, paused primary of another cluster keeps running", Box::new(|o| {
            let mut c = cluster(None);
            c.initialize = Some("not a sysid".into());
            o.cluster = Some(c);
            o.pg = primary(1);
            o.paused = true;
        }), Decision::NotHealthiest { reason: "system ID mismatch".into(), demote: false, msg: "continue to run as primary without lock".into() }),
        // §5.2.7: a required watchdog that can not be used keeps a replica out of the race;
        // a running primary and a manual failover's candidate still take the key (and then
        // let it go when the device does not arm: `after_watchdog_refused`).
        ("race, required watchdog unusable", Box::new(|o| { o.cluster = unlocked(); o.watchdog_usable = false }), not_healthiest("Watchdog device is not usable")),
        ("race, required watchdog unusable, primary", Box::new(|o| { o.cluster = unlocked(); o.pg = primary(1); o.watchdog_usable = false }), Decision::AcquireLeader),
        ("switchover to me, required watchdog unusable", Box::new(|o| { o.cluster = with_failover(Some("pg1"), Some("pg2")); o.watchdog_usable = false }), Decision::AcquireLeader),
        ("race, guard not running", Box::new(|o| { o.cluster = unlocked(); o.guard_usable = false }), not_healthiest("The guard process is not running")),
        ("lock holder, guard not running", Box::new(|o| { o.cluster = mine(); o.pg = primary(1); o.guard_usable = false }), Decision::RenewLeader),
        ("lock holder, required watchdog unusable", Box::new(|o| { o.cluster = mine(); o.pg = primary(1); o.watchdog_usable = false }), Decision::RenewLeader),
        // §5.3: a leader exists.
        ("lock holder", Box::new(|o| { o.cluster = mine(); o.pg = primary(1) }), Decision::RenewLeader),
        ("follower", Box::new(|_| {}), Decision::Follow { leader: "pg1".into() }),
        ("primary without lock", Box::new(|o| o.pg = primary(1)),
            Decision::DemoteImmediate { msg: "demoting self because I do not have the lock and I was a leader".into() }),
        ("paused primary without lock", Box::new(|o| { o.pg = primary(1); o.paused = true }), no_action("continue to run as primary without lock")),
        ("demoted, leader on newer timeline", Box::new(|o| {
            let mut c = cluster(Some("pg1"));
            c.members[0].data.timeline = Some(2);
            o.cluster = Some(c);
            o.rewind_check = true;
        }), Decision::Rewind { leader: "pg1".into() }),
        ("demoted, leader on same timeline", Box::new(|o| o.rewind_check = true), Decision::Follow { leader: "pg1".into() }),
        // §5.2 manual failover without a leader.
        ("switchover to me, peer ahead", Box::new(|o| { o.cluster = with_failover(Some("pg1"), Some("pg2")); o.peers = vec![peer("pg3", 2000)] }), Decision::AcquireLeader),
        ("switchover to pg3, healthy", Box::new(|o| { o.cluster = with_failover(Some("pg1"), Some("pg3")); o.peers = vec![peer("pg3", 500)] }), not_healthiest("manual failover: the candidate pg3 is healthy, waiting for it")),
        ("switchover to pg3, unreachable: race without former leader", Box::new(|o| { o.cluster = with_failover(Some("pg1"), Some("pg3")); o.peers = vec![peer("pg1", 5000)] }), Decision::AcquireLeader),
        ("switchover to anyone, I am ahead", Box::new(|o| { o.cluster = with_failover(Some("pg1"), None); o.peers = vec![peer("pg3", 500)] }), Decision::AcquireLeader),
        ("switchover to anyone, peer ahead", Box::new(|o| { o.cluster = with_failover(Some("pg1"), None); o.peers = vec![peer("pg3", 5000)] }), not_healthiest("Wal position of pg3 is ahead of my wal position")),
        // K1 (the simulation's seed 440): the named candidate of a quorum-mode switchover takes
        // the key only as a `/sync` member; a non-voter may miss commits the voters acknowledged.
        ("quorum mode, switchover to me, a voter", Box::new(|o| { o.sync = quorum_mode(); o.cluster = with_sync(with_failover(Some("pg1"), Some("pg2")), "pg1", "pg2,pg3", 1) }), Decision::AcquireLeader),
        ("quorum mode, switchover to me, not in /sync (K1)", Box::new(|o| { o.sync = quorum_mode(); o.cluster = with_sync(with_failover(Some("pg1"), Some("pg2")), "pg1", "pg3", 0) }),
            not_healthiest("switchover: I am not a synchronous standby")),
        // K5 (the simulation's seed 931): the race after a switchover without a candidate keeps
        // `check_timeline` (only the lag check is dropped): a former primary on an older
        // timeline with a longer WAL must not win it.
        ("switchover to anyone, check_timeline, I am ahead on the cluster timeline", Box::new(|o| {
            o.cluster = with_failover_on_timeline_2(Some("pg1"), None);
            o.pg = PgView::Running { in_recovery: true, timeline: 2, wal_position: 2000, streaming: false };
            o.check_timeline = true;
            o.peers = vec![PeerStatus { timeline: Some(2), ..peer("pg3", 1500) }];
        }), Decision::AcquireLeader),
        ("switchover to anyone, check_timeline, I am ahead on an older timeline (K5)", Box::new(|o| {
            o.cluster = with_failover_on_timeline_2(Some("pg1"), None);
            o.pg = PgView::Running { in_recovery: true, timeline: 1, wal_position: 2000, streaming: false };
            o.check_timeline = true;
            o.peers = vec![PeerStatus { timeline: Some(2), ..peer("pg3", 1500) }];
        }), not_healthiest("My timeline 1 is behind last known cluster timeline 2")),
        ("manual failover ignores the lag limit", Box::new(|o| { o.cluster = with_failover(None, Some("pg2")); o.pg = replica(1); o.maximum_lag_on_failover = 0 }), Decision::AcquireLeader),
        ("paused, candidate is me", Box::new(|o| { o.cluster = with_failover(None, Some("pg2")); o.paused = true }), Decision::AcquireLeader),
        ("paused, candidate is pg3", Box::new(|o| { o.cluster = with_failover(None, Some("pg3")); o.paused = true }), not_healthiest("paused")),
        ("paused, nofailover candidate", Box::new(|o| { o.cluster = with_failover(None, Some("pg2")); o.paused = true; o.can_failover = false }), not_healthiest("paused")),
        ("paused, stopped", Box::new(|o| { o.paused = true; o.pg = stopped(false) }), no_action("postgres is not running")),
        ("paused, stopped by our own switchover", Box::new(|o| { o.paused = true; o.pg = stopped(true); o.self_demoted = true }), Decision::Rewind { leader: "pg1".into() }),
        ("paused, rewound after our own switchover", Box::new(|o| { o.paused = true; o.pg = stopped(false); o.self_demoted = true }), start_secondary(Some("pg1"))),
        // §5.3 pause: the lock holder whose PostgreSQL is not primary lets the key go.
        ("paused, lock holder in recovery", Box::new(|o| { o.cluster = mine(); o.paused = true }),
            Decision::ReleaseLock { msg: "removed leader lock because postgres is not running as primary".into() }),
        ("paused, lock holder in recovery, candidate", Box::new(|o| { let mut c = with_failover(None, Some("pg2")).unwrap(); c.leader = mine().unwrap().leader; o.cluster = Some(c); o.paused = true }), Decision::RenewLeader),
        ("paused, lock holder primary", Box::new(|o| { o.cluster = mine(); o.paused = true; o.pg = primary(1) }), Decision::RenewLeader),
    ];
    let mut failures = Vec::new();
    for (name, setup, want) in rows {
        let mut o = obs();
        setup(&mut o);
        let got = decide(&o);
        if got != want {
            failures.push(format!("{name}:\n   want {want:?}\n    got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Exhaustive over (DCS view) × (PostgreSQL) × (pause) × (action): the decisions that make or
/// keep a writable primary never happen without a readable DCS in which the lock is ours or
/// free, and an unreachable DCS always demotes a running, unpaused primary.
#[test]
fn safety_over_every_combination() {
    // A `/failover` key naming us must not change who may be writable.
    let failover_to_me = |leader: Option<&str>| {
        let mut c = cluster(leader);
        c.failover = Some(Failover {
            leader: Some("pg1".into()),
            member: Some("pg2".into()),
            scheduled_at: None,
            version: 1,
        });
        Some(c)
    };
    let views: Vec<(&str, Option<Cluster>)> = vec![
        ("mine", Some(cluster(Some("pg2")))),
        ("mine, failover key", failover_to_me(Some("pg2"))),
        ("other", Some(cluster(Some("pg1")))),
        ("other, failover to me", failover_to_me(Some("pg1"))),
        ("unlocked", Some(cluster(None))),
        ("unlocked, failover to me", failover_to_me(None)),
        ("down", None),
    ];
    let pgs = vec![
        primary(1),
        replica(1000),
        PgView::Stopped {
            was_primary: true,
            clean: false,
        },
        PgView::Stopped {
            was_primary: false,
            clean: true,
        },
        PgView::Unresponsive,
    ];
    let actions = [
        None,
        Some(ActionKind::Start),
        Some(ActionKind::Clone),
        Some(ActionKind::Bootstrap),
        Some(ActionKind::Restart),
        Some(ActionKind::Reinitialize),
    ];
    for (view, c) in &views {
        for pg in &pgs {
            for (paused, self_demoted) in
                [(false, false), (true, false), (false, true), (true, true)]
            {
                for action in actions {
                    let mut o = obs();
                    o.cluster = c.clone();
                    o.pg = pg.clone();
                    o.paused = paused;
                    o.self_demoted = self_demoted;
                    o.action = action;
                    let d = decide(&o);
                    let ctx = format!(
                        "{view} {pg:?} paused={paused} self_demoted={self_demoted} action={action:?}: {d:?}"
                    );
                    let unpaused_primary = !paused
                        && matches!(
                            pg,
                            PgView::Running {
                                in_recovery: false,
                                ..
                            }
                        );
                    match &d {
                        Decision::RenewLeader | Decision::UpdateLockDuring { .. } => {
                            assert!(view.starts_with("mine"), "{ctx}")
                        }
                        Decision::StartPostgres {
                            as_primary: true, ..
                        } => assert!(view.starts_with("mine"), "{ctx}"),
                        Decision::AcquireLeader => assert!(view.starts_with("unlocked"), "{ctx}"),
                        _ => {}
                    }
                    if *view == "down" && unpaused_primary {
                        assert_eq!(d, Decision::DemoteOffline, "{ctx}");
                    }
                    if view.starts_with("other") && unpaused_primary && action.is_none() {
                        assert!(
                            matches!(d, Decision::DemoteImmediate { .. }),
                            "a primary without the lock must demote: {ctx}"
                        );
                    }
                    // A primary in an unlocked cluster takes the lock or stops being one; it
                    // never goes on as a primary that merely "follows".
                    if view.starts_with("unlocked") && unpaused_primary && action.is_none() {
                        assert!(
                            matches!(
                                d,
                                Decision::AcquireLeader
                                    | Decision::NotHealthiest { demote: true, .. }
                            ),
                            "{ctx}"
                        );
                    }
                    // Demotion is never decided in maintenance mode.
                    if paused {
                        assert!(
                            !matches!(
                                d,
                                Decision::NotHealthiest { demote: true, .. }
                                    | Decision::DemoteOffline
                                    | Decision::DemoteImmediate { .. }
                            ),
                            "{ctx}"
                        );
                    }
                }
            }
        }
    }
}

/// The follow-ups of a lock attempt and of the renewal before a start, given their outcome.
#[test]
fn follow_ups_after_a_lock_attempt_or_renewal() {
    use crate::decide::{after_acquire, start_after_renewal, AfterAcquire};
    let lost = |demote: bool, msg: &str| AfterAcquire::Lost {
        demote,
        msg: msg.into(),
    };
    type Row = (
        &'static str,
        Result<bool, String>,
        PgView,
        bool,
        AfterAcquire,
    );
    let rows: Vec<Row> = vec![
        (
            "won, replica",
            Ok(true),
            replica(1000),
            false,
            AfterAcquire::Promote,
        ),
        (
            "won, primary",
            Ok(true),
            primary(1),
            false,
            AfterAcquire::Lead,
        ),
        (
            "lost, replica",
            Ok(false),
            replica(1000),
            false,
            lost(
                false,
                "following new leader after trying and failing to obtain lock",
            ),
        ),
        (
            "lost, primary",
            Ok(false),
            primary(1),
            false,
            lost(
                true,
                "demoted self due after trying and failing to obtain lock",
            ),
        ),
        (
            "lost, paused primary",
            Ok(false),
            primary(1),
            true,
            lost(false, "continue to run as primary without lock"),
        ),
        (
            "DCS error, replica",
            Err("timeout".into()),
            replica(1000),
            false,
            lost(false, "failed to obtain leader lock: timeout"),
        ),
    ];
    for (name, outcome, pg, paused, want) in rows {
        let mut o = obs();
        o.pg = pg;
        o.paused = paused;
        assert_eq!(after_acquire(outcome, &o), want, "{name}");
    }
    let primary_msg = || "starting primary after failure".to_string();
    assert_eq!(
        start_after_renewal(true, primary_msg(), true),
        (true, primary_msg())
    );
    assert_eq!(
        start_after_renewal(true, primary_msg(), false),
        (
            false,
            "starting as readonly because i had the session lock".to_string()
        )
    );
    let readonly = || "starting as readonly because i had the session lock".to_string();
    assert_eq!(
        start_after_renewal(false, readonly(), false),
        (false, readonly())
    );
}

/// A leader whose required watchdog does not arm (Patroni's `enforce_primary_role`), or whose
/// guard process is on but not running, lets the key go: a primary demotes first.
#[test]
fn after_the_watchdog_or_guard_refused() {
    use crate::decide::{after_guard_refused, after_watchdog_refused, WatchdogRefused};
    type Refusal = fn(&Observation) -> WatchdogRefused;
    let refusals: [(Refusal, &str); 2] = [
        (after_watchdog_refused, "watchdog"),
        (after_guard_refused, "the guard process"),
    ];
    for (refused, fence) in refusals {
        let mut o = obs();
        o.cluster = Some(cluster(Some("pg2")));
        o.pg = primary(1);
        assert_eq!(
            refused(&o),
            WatchdogRefused::Demote {
                msg: format!("Demoting self because {fence} could not be activated")
            }
        );
        o.pg = replica(1000);
        assert_eq!(
            refused(&o),
            WatchdogRefused::Release {
                msg: format!("Not promoting self because {fence} could not be activated")
            }
        );
    }
}

/// Patroni's `follow()` callback choice: a start, restart or reload of a PostgreSQL that was
/// a primary (or demoted), or that switches between replica and standby leader, is a role
/// change; before the first callback everything is a plain start.
#[test]
fn callback_after_a_start_restart_or_reload() {
    use crate::decide::{follow_callback, PgChange};
    use crate::hooks::CallbackAction::*;
    use pgpilot_types::Role::*;
    let rows = [
        (false, Primary, Replica, PgChange::Start, OnStart),
        (false, Uninitialized, Replica, PgChange::Start, OnStart),
        (true, Primary, Replica, PgChange::Start, OnRoleChange),
        (true, Demoted, Replica, PgChange::Start, OnRoleChange),
        (true, Demoted, Replica, PgChange::Reload, OnRoleChange),
        (true, Replica, Replica, PgChange::Start, OnStart),
        (true, Replica, Replica, PgChange::Restart, OnRestart),
        (true, Replica, Replica, PgChange::Reload, OnReload),
        (
            true,
            Replica,
            StandbyLeader,
            PgChange::Restart,
            OnRoleChange,
        ),
        (true, StandbyLeader, Replica, PgChange::Reload, OnRoleChange),
        (true, Uninitialized, Replica, PgChange::Start, OnStart),
    ];
    for (called, old, new, change, want) in rows {
        assert_eq!(
            follow_callback(called, old, new, change),
            want,
            "called={called} {old} -> {new} {change:?}"
        );
    }
}

/// After `pre_promote`: success promotes; a failure gives the key back (kept in maintenance
/// mode); a lock lost while it ran cancels the promotion.
#[test]
fn after_a_pre_promote_run() {
    use crate::decide::{after_pre_promote, AfterPrePromote, PrePromoteOutcome};
    let cancelled = "Promotion cancelled because the pre-promote script failed".to_string();
    assert_eq!(
        after_pre_promote(PrePromoteOutcome::Succeeded, false),
        AfterPrePromote::Promote
    );
    assert_eq!(
        after_pre_promote(PrePromoteOutcome::Failed, false),
        AfterPrePromote::Release {
            msg: cancelled.clone()
        }
    );
    assert_eq!(
        after_pre_promote(PrePromoteOutcome::Failed, true),
        AfterPrePromote::Cancel { msg: cancelled }
    );
    assert_eq!(
        after_pre_promote(PrePromoteOutcome::LostLock, false),
        AfterPrePromote::Cancel {
            msg: "lost leader before promote".into()
        }
    );
}

/// `is_failover_possible`: in synchronous mode only a `/sync` member counts.
#[test]
fn failover_possible_in_synchronous_mode_needs_a_sync_standby() {
    use crate::decide::failover_possible;
    let mut o = obs();
    o.peers = vec![peer("pg3", 1000)];
    let mut c = cluster(Some("pg2"));
    assert!(failover_possible(&o, &c));
    o.sync = crate::sync::SyncParams {
        mode: pgpilot_config::SyncMode::On,
        ..crate::sync::SyncParams::off()
    };
    assert!(!failover_possible(&o, &c));
    c.sync = Some(pgpilot_dcs::SyncState {
        leader: Some("pg2".into()),
        sync_standby: Some("pg3".into()),
        ..Default::default()
    });
    assert!(failover_possible(&o, &c));
    o.peers[0].is_primary = true;
    assert!(!failover_possible(&o, &c));
}

/// Failsafe mode over every PostgreSQL view, maintenance flag and `/failsafe` key with the DCS
/// unreachable: a round is decided only for an unpaused running primary listed in the key, and
/// never asks itself; an unpaused primary otherwise demotes offline (never keeps running
/// without a round).
#[test]
fn failsafe_round_only_for_a_listed_unpaused_primary() {
    let pgs = [
        primary(1),
        replica(1000),
        PgView::Stopped {
            was_primary: true,
            clean: true,
        },
        PgView::Unresponsive,
    ];
    let keys: [Option<&[&str]>; 5] = [
        None,
        Some(&[]),
        Some(&["pg2"]),
        Some(&["pg1", "pg3"]),
        Some(&["pg1", "pg2", "pg3"]),
    ];
    for pg in &pgs {
        for paused in [false, true] {
            for key in keys {
                for mode in [false, true] {
                    let mut o = obs();
                    o.cluster = None;
                    o.pg = pg.clone();
                    o.paused = paused;
                    o.failsafe_mode = mode;
                    o.failsafe = key.and_then(failsafe_key);
                    let d = decide(&o);
                    let ctx = format!("{pg:?} paused={paused} key={key:?} mode={mode}: {d:?}");
                    let unpaused_primary = !paused && *pg == primary(1);
                    let listed = key.is_some_and(|k| k.contains(&"pg2"));
                    match &d {
                        Decision::FailsafeRound { members } => {
                            assert!(mode && unpaused_primary && listed, "{ctx}");
                            assert!(members.iter().all(|(n, _)| n != "pg2"), "{ctx}");
                            assert_eq!(members.len() + 1, key.map_or(0, <[_]>::len), "{ctx}");
                        }
                        Decision::DemoteOffline => assert!(unpaused_primary, "{ctx}"),
                        _ => assert!(!unpaused_primary, "{ctx}"),
                    }
                }
            }
        }
    }
}

/// The standby cluster (spec/ha-loop.md §5.10): one row per decision that differs from a normal
/// cluster. The lock holder is a standby leader that never promotes; a primary under the key is
/// demoted (`demote-cluster`); without `standby_cluster` the same holder promotes
/// (`promote-cluster`).
#[test]
fn standby_cluster_decisions() {
    fn mine() -> Option<Cluster> {
        Some(cluster(Some("pg2")))
    }
    fn unlocked() -> Option<Cluster> {
        Some(cluster(None))
    }
    fn stopped(was_primary: bool) -> PgView {
        PgView::Stopped {
            was_primary,
            clean: true,
        }
    }
    type Row = (&'static str, Box<dyn Fn(&mut Observation)>, Decision);
    let rows: Vec<Row> = vec![
        (
            "empty, fresh cluster: race to clone the remote",
            Box::new(|o| {
                o.cluster = Some(Cluster::default());
                o.data = DataState::Empty
            }),
            Decision::RaceStandbyBootstrap,
        ),
        (
            "empty, race lost, no leader yet",
            Box::new(|o| {
                o.cluster = Some(Cluster {
                    initialize: Some(String::new()),
                    ..Default::default()
                });
                o.data = DataState::Empty
            }),
            no_action("waiting for standby_leader to bootstrap"),
        ),
        (
            "empty, nofailover",
            Box::new(|o| {
                o.cluster = Some(Cluster::default());
                o.data = DataState::Empty;
                o.can_failover = false
            }),
            no_action("waiting for standby_leader to bootstrap"),
        ),
        (
            "empty, standby leader exists: clone from it",
            Box::new(|o| o.data = DataState::Empty),
            Decision::Clone {
                from: "pg1".into(),
                msg: "trying to bootstrap from leader 'pg1'".into(),
            },
        ),
        (
            "stopped, lock holder",
            Box::new(|o| {
                o.cluster = mine();
                o.pg = stopped(false)
            }),
            Decision::StartFollowingRemote {
                standby_leader: true,
                msg: "starting as a standby leader because i had the session lock".into(),
            },
        ),
        (
            "stopped, lock holder, was primary: still never a primary",
            Box::new(|o| {
                o.cluster = mine();
                o.pg = stopped(true)
            }),
            Decision::StartFollowingRemote {
                standby_leader: true,
                msg: "starting as a standby leader because i had the session lock".into(),
            },
        ),
        (
            "stopped, unlocked",
            Box::new(|o| {
                o.cluster = unlocked();
                o.pg = stopped(false)
            }),
            Decision::StartFollowingRemote {
                standby_leader: false,
                msg: "trying to follow a remote member because standby cluster is unhealthy".into(),
            },
        ),
        (
            "stopped, standby leader exists",
            Box::new(|o| o.pg = stopped(false)),
            start_secondary(Some("pg1")),
        ),
        (
            "lock holder in recovery: renew, never promote",
            Box::new(|o| o.cluster = mine()),
            Decision::RenewStandbyLeader,
        ),
        (
            "paused lock holder in recovery keeps the key",
            Box::new(|o| {
                o.cluster = mine();
                o.paused = true
            }),
            Decision::RenewStandbyLeader,
        ),
        (
            "lock holder primary: demote-cluster",
            Box::new(|o| {
                o.cluster = mine();
                o.pg = primary(1)
            }),
            Decision::DemoteCluster,
        ),
        (
            "paused lock holder primary keeps running",
            Box::new(|o| {
                o.cluster = mine();
                o.pg = primary(1);
                o.paused = true
            }),
            Decision::RenewLeader,
        ),
        (
            "primary without lock",
            Box::new(|o| o.pg = primary(1)),
            Decision::DemoteImmediate {
                msg: "cannot be a real primary in a standby cluster".into(),
            },
        ),
        (
            "race, healthiest",
            Box::new(|o| {
                o.cluster = unlocked();
                o.peers = vec![peer("pg3", 900)]
            }),
            Decision::AcquireLeader,
        ),
        (
            "race, peer ahead",
            Box::new(|o| {
                o.cluster = unlocked();
                o.peers = vec![peer("pg3", 1001)]
            }),
            not_healthiest("Wal position of pg3 is ahead of my wal position"),
        ),
        (
            "follower of the standby leader",
            Box::new(|_| {}),
            Decision::Follow {
                leader: "pg1".into(),
            },
        ),
        (
            "promote-cluster: standby_cluster removed, lock holder promotes",
            Box::new(|o| {
                o.cluster = mine();
                o.standby_cluster = false
            }),
            Decision::RenewLeader,
        ),
    ];
    let mut failures = Vec::new();
    for (name, setup, want) in rows {
        let mut o = obs();
        o.standby_cluster = true;
        setup(&mut o);
        let got = decide(&o);
        if got != want {
            failures.push(format!("{name}:\n   want {want:?}\n    got {got:?}"));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    // Won the race in a standby cluster: follow the remote, never promote.
    use crate::decide::{after_acquire, AfterAcquire};
    let mut o = obs();
    o.standby_cluster = true;
    assert_eq!(after_acquire(Ok(true), &o), AfterAcquire::StandbyLeader);
    o.pg = primary(1);
    assert_eq!(after_acquire(Ok(true), &o), AfterAcquire::StandbyLeader);
}

/// In a standby cluster no combination of DCS view, PostgreSQL state and pause leads to a
/// decision that promotes or starts a primary: the only writable primary is the remote one.
#[test]
fn standby_cluster_never_promotes() {
    let views = [cluster(Some("pg2")), cluster(Some("pg1")), cluster(None)];
    let pgs = [
        primary(1),
        replica(1000),
        PgView::Stopped {
            was_primary: true,
            clean: false,
        },
        PgView::Stopped {
            was_primary: false,
            clean: true,
        },
        PgView::Unresponsive,
    ];
    for c in &views {
        for pg in &pgs {
            for paused in [false, true] {
                let mut o = obs();
                o.standby_cluster = true;
                o.cluster = Some(c.clone());
                o.pg = pg.clone();
                o.paused = paused;
                let d = decide(&o);
                let in_recovery = !matches!(
                    pg,
                    PgView::Running {
                        in_recovery: false,
                        ..
                    }
                );
                let ctx = format!("{:?} {pg:?} paused={paused}: {d:?}", c.leader_name());
                assert!(
                    !matches!(
                        d,
                        Decision::StartPostgres {
                            as_primary: true,
                            ..
                        }
                    ),
                    "{ctx}"
                );
                // RenewLeader promotes a lock holder in recovery.
                if in_recovery {
                    assert!(!matches!(d, Decision::RenewLeader), "{ctx}");
                }
            }
        }
    }
}

/// Known bug K4 (found by the simulation's removed mirror at seed 10759; not met in 1,000 seeds
/// of the real agents): with `check_timeline: false` (the default, as in Patroni), a former
/// primary that diverged and was not rewound keeps a longer WAL on an older timeline; in a later
/// race its LSN looks ahead of everyone's and it wins, promoting without the commits of the
/// newer timeline. Patroni compares LSNs the same way. Open as a policy question: compare
/// (timeline, LSN), or keep a member whose timeline is behind `/history` out of races even
/// without `check_timeline`. The test states the wanted outcome.
#[test]
#[ignore = "known bug K4: without check_timeline a diverged member on an older timeline wins by LSN"]
fn known_bug_k4_diverged_member_on_an_older_timeline_wins_a_race_by_lsn() {
    let mut o = obs();
    o.cluster = with_failover_on_timeline_2(None, None).map(|mut c| {
        c.failover = None;
        c
    });
    o.pg = PgView::Running {
        in_recovery: true,
        timeline: 1,
        wal_position: 2000,
        streaming: false,
    };
    o.check_timeline = false;
    o.peers = vec![PeerStatus {
        timeline: Some(2),
        ..peer("pg3", 1500)
    }];
    let got = decide(&o);
    assert!(
        matches!(got, Decision::NotHealthiest { .. }),
        "a member on timeline 1 behind /history's timeline 2 won the race: {got:?}"
    );
}
