//! Failsafe mode (`failsafe_mode: true`, spec/ha-loop.md §5.1 step 17 and §5.10), the pure
//! part: the `/failsafe` key the leader maintains, which members a primary that lost the DCS
//! must ask before it may stay a primary, what follows their answers, and the leader a
//! replica learnt from a `POST /failsafe` standing in for the expired leader key.
//!
//! Why a primary may keep taking writes without the DCS: every member listed in `/failsafe`
//! (the leader writes every member with an api_url there, itself included, while the DCS
//! works) answered `Accepted` to a round that started at `t`. A member that accepted counts
//! the sender as leader until it received the POST + ttl, which is after `t + ttl`: if it
//! reaches the DCS and finds the key expired, the sender is put back in its view as the leader
//! ([`inject_leader`]) and it follows instead of racing; if it does not reach the DCS it can
//! not race at all. A member absent from a non-empty `/failsafe` never wins a race
//! (`is_healthiest` rule 8), so a member the primary did not ask can not take over either.
//! A member's promise lives in its agent's memory: an agent restarted within a ttl of
//! accepting would have forgotten it, so with failsafe mode on a replica stays out of the race
//! for a ttl after its agent started (pgpilot's addition; Patroni lets it race at once).
//! Hence the primary's leadership is as good until `t + ttl` as after a renewal sent at `t`,
//! and the agent extends the guard's deadline from `t` exactly as a renewal does (the guard
//! fences at `t + ttl - margin` unless the next round or renewal succeeds). One member that
//! does not answer (crashed, partitioned, its agent killed) and the primary demotes.
//!
//! Timing: a round takes at most 2 × 2 s (Patroni's timeout and retry) and rounds follow each
//! other within `max(loop_wait, retry_timeout + round)` (a failed DCS read costs up to
//! retry_timeout; after a failed renewal the member key is not touched), which the timing rule
//! `loop_wait + 2 × retry_timeout ≤ ttl` keeps inside `ttl - margin` when the members answer
//! promptly. A round that ends after the guard's deadline comes too late: the guard has
//! fenced, which errs on the safe side (a restart, never a second primary).

use pgpilot_dcs::{Cluster, Leader, Member, MemberData};
use serde_json::{Map, Value};

use super::{Observation, PgView};

/// The `/failsafe` key the leader wants: every member with an api_url, and the leader itself
/// (`own_api_url`) if its member key is missing (Patroni's `_failsafe_config`).
pub fn failsafe_topology(cluster: &Cluster, me: &str, own_api_url: &str) -> Map<String, Value> {
    let mut key: Map<String, Value> = cluster
        .members
        .iter()
        .filter(|m| !m.data.api_url.is_empty())
        .map(|m| (m.name.clone(), Value::from(m.data.api_url.clone())))
        .collect();
    if !key.contains_key(me) {
        key.insert(me.to_string(), Value::from(own_api_url));
    }
    key
}

/// A primary that can not reach the DCS (its read or its lock renewal failed), outside
/// maintenance mode: with failsafe mode on and its own name in the last `/failsafe` it saw, the
/// other members listed there, `(name, api_url)`, to ask with `POST /failsafe` (empty: a
/// single-member cluster, which stays primary). `None`: demote as without failsafe mode
/// (mode off, no usable key, not listed, not a running primary, paused).
pub fn members_to_ask(o: &Observation) -> Option<Vec<(String, String)>> {
    let primary = matches!(
        o.pg,
        PgView::Running {
            in_recovery: false,
            ..
        }
    );
    if !o.failsafe_mode || o.paused || !primary {
        return None;
    }
    let key = o.failsafe.as_ref()?;
    if !key.contains_key(&o.me) {
        return None;
    }
    Some(
        key.iter()
            .filter(|(name, _)| **name != o.me)
            .map(|(name, url)| {
                let url = url.as_str().map_or_else(|| url.to_string(), str::to_string);
                (name.clone(), url)
            })
            .collect(),
    )
}

/// What a primary does after its failsafe round.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterFailsafe {
    /// Everyone asked accepted: stay primary, leadership valid from the round's start.
    Lead { msg: String },
    /// Someone did not: demote (offline), as without failsafe mode.
    Demote { msg: String },
}

/// The follow-up of a failsafe round given each asked member's answer (`true`: 200
/// `Accepted`).
pub fn after_failsafe_round(answers: &[(String, bool)]) -> AfterFailsafe {
    let missing: Vec<&str> = answers
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(name, _)| name.as_str())
        .collect();
    if missing.is_empty() {
        return AfterFailsafe::Lead {
            msg: "continue to run as a leader because failsafe mode is enabled and all members are accessible".into(),
        };
    }
    AfterFailsafe::Demote {
        msg: format!(
            "demoted self because DCS is not accessible and I was a leader (failsafe: no \
             acknowledgement from {})",
            missing.join(", ")
        ),
    }
}

/// The `/failsafe` rule of the leader race (`is_healthiest_node` rule 8): with failsafe mode
/// on, a member absent from a non-empty `/failsafe` may not take the key.
pub fn excluded_from_race(o: &Observation) -> bool {
    o.failsafe_mode
        && o.failsafe
            .as_ref()
            .is_some_and(|k| !k.is_empty() && !k.contains_key(&o.me))
}

/// The leader named by a recent `POST /failsafe`, as the agent passes it in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KnownLeader<'a> {
    pub name: &'a str,
    pub conn_url: &'a str,
    pub api_url: &'a str,
    /// The slot positions it sent (`None`: it sent none).
    pub slots: Option<&'a Map<String, Value>>,
}

/// Patroni's `Failsafe.update_cluster`: with failsafe mode on and the leader key gone, the
/// leader known from a `POST /failsafe` received less than a ttl ago (the agent checks the
/// time) is put in the view as the key's holder, with a member entry from what it sent if its
/// own member key expired too, so that this member follows it instead of racing; the slot
/// positions it sent replace `/status.slots`, which it can no longer write, so that this
/// member's copies of its slots follow it.
pub fn inject_leader(cluster: &mut Cluster, leader: &KnownLeader, me: &str) {
    if !cluster.is_unlocked() || leader.name == me || leader.name.is_empty() {
        return;
    }
    cluster.status.slots = leader.slots.cloned();
    cluster.leader = Some(Leader {
        name: leader.name.to_string(),
        version: 0,
        lease: 0,
    });
    if cluster.member(leader.name).is_none() {
        let member = Member {
            name: leader.name.to_string(),
            data: MemberData {
                conn_url: leader.conn_url.to_string(),
                api_url: leader.api_url.to_string(),
                state: "running".into(),
                role: "primary".into(),
                ..Default::default()
            },
            version: 0,
            lease: 0,
        };
        let at = cluster
            .members
            .partition_point(|m| m.name.as_str() < leader.name);
        cluster.members.insert(at, member);
    }
}
