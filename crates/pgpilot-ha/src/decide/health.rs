//! Patroni's `is_healthiest_node` and `manual_failover_process_no_leader` (spec/ha-loop.md
//! §5.2): may this member take a free leader key?

use pgpilot_dcs::{Cluster, Failover};
use pgpilot_types::PeerStatus;

use crate::sync;

use super::{DataState, Observation, PgView};

/// Patroni's `is_healthiest_node` (spec/ha-loop.md §5.2). `Err` carries the reason, logged by
/// the agent.
pub fn is_healthiest(o: &Observation, cluster: &Cluster) -> Result<(), String> {
    if o.pre_promote_backoff {
        return Err(
            "backoff: skip leader race after pre_promote script failure and releasing the lock voluntarily"
                .into(),
        );
    }
    let PgView::Running {
        in_recovery,
        timeline,
        wal_position,
        ..
    } = o.pg
    else {
        return Err("postgres is not running".into());
    };
    if !in_recovery {
        // A running primary may take the lock back unless it is on an older timeline than the
        // cluster (a stale primary after a failover it missed).
        if o.paused {
            return match cluster.initialize.as_deref() {
                None | Some("") => Ok(()),
                Some(init) => match &o.data {
                    DataState::Initialized { sysid } if sysid == init => Ok(()),
                    _ => Err("system ID mismatch".into()),
                },
            };
        }
        let cluster_tl = cluster.timeline();
        if cluster_tl > 0 && timeline < cluster_tl {
            return Err(format!(
                "my timeline {timeline} is behind the cluster timeline {cluster_tl}"
            ));
        }
        return Ok(());
    }
    let failover = cluster.failover.as_ref();
    if o.paused {
        // In maintenance mode only a named candidate may take over.
        if o.can_failover && failover.and_then(|f| f.member.as_deref()) == Some(o.me.as_str()) {
            return Ok(());
        }
        return Err("paused".into());
    }
    if !o.can_failover {
        return Err("nofailover".into());
    }
    if let Some(f) = failover {
        // A switchover in synchronous (or quorum) mode may only go to a synchronous standby.
        if o.sync.active()
            && f.leader.is_some()
            && !cluster
                .sync
                .as_ref()
                .is_some_and(|s| s.matches(&o.me, true))
        {
            return Err("switchover: I am not a synchronous standby".into());
        }
        // The timeline check stays on the manual path; only the lag check is dropped there.
        check_timeline(o, cluster, timeline)?;
        return manual_failover_no_leader(o, cluster, f, wal_position);
    }
    // Patroni's order: after the manual failover (whose winner still fails to arm the device
    // and lets the key go) and before the comparison with the other members.
    if !o.watchdog_usable {
        return Err("Watchdog device is not usable".into());
    }
    if !o.guard_usable {
        return Err("The guard process is not running".into());
    }
    // Rule 8: the members listed in `/failsafe` join the comparison (the agent asks them too).
    if super::excluded_from_race(o) {
        return Err("failsafe mode: I am not listed in /failsafe".into());
    }
    if o.failsafe_mode && o.started_within_ttl {
        return Err(
            "failsafe mode: started less than a ttl ago (a POST /failsafe accepted before a \
             restart may still bind this member)"
                .into(),
        );
    }
    if !sync::may_race(&o.sync, &o.me, cluster.sync.as_ref()) {
        return Err("I am not a synchronous standby (not listed in /sync)".into());
    }
    let optime = cluster.status.optime;
    if optime > wal_position && optime - wal_position > o.maximum_lag_on_failover {
        return Err(format!(
            "My wal position exceeds maximum replication lag ({} > {})",
            optime - wal_position,
            o.maximum_lag_on_failover
        ));
    }
    check_timeline(o, cluster, timeline)?;
    let votes = compare_with_peers(o, cluster, wal_position, None)?;
    check_votes(o, cluster, votes)
}

/// `check_timeline`: a member on an older timeline than the cluster's may not win.
fn check_timeline(o: &Observation, cluster: &Cluster, timeline: u32) -> Result<(), String> {
    if o.check_timeline {
        let cluster_tl = cluster.timeline();
        if timeline == 0 || timeline < cluster_tl {
            return Err(format!(
                "My timeline {timeline} is behind last known cluster timeline {cluster_tl}"
            ));
        }
    }
    Ok(())
}

/// Quorum mode: enough voters not ahead of us answered (spec/ha-loop.md §5.8).
fn check_votes(o: &Observation, cluster: &Cluster, votes: usize) -> Result<(), String> {
    if !o.sync.quorum() || sync::quorum_votes_enough(cluster.sync.as_ref(), &o.me, votes) {
        return Ok(());
    }
    Err(format!(
        "not enough quorum votes: {votes} of the voters {:?} are not ahead of me, quorum is {}",
        sync::voting_set(cluster.sync.as_ref()),
        cluster.sync.as_ref().map_or(0, |s| s.quorum)
    ))
}

/// The WAL comparison of `_is_healthiest_node` against every reachable peer allowed to promote
/// (except `exclude`, the former leader of a manual failover). In synchronous (`on`) mode only
/// `/sync` members count, and the former leader may be ahead (what it has beyond the standbys
/// was never acknowledged). Returns the quorum votes: voters that are not ahead of us.
fn compare_with_peers(
    o: &Observation,
    cluster: &Cluster,
    wal_position: u64,
    exclude: Option<&str>,
) -> Result<usize, String> {
    let s = cluster.sync.as_ref();
    let sync_on = o.sync.active() && !o.sync.quorum();
    let former_leader = |name: &str| o.sync.active() && s.is_some_and(|s| s.leader_matches(name));
    let mut votes = 0;
    for peer in &o.peers {
        if peer.name == o.me || Some(peer.name.as_str()) == exclude {
            continue;
        }
        let voter = o.sync.quorum() && s.is_some_and(|s| s.matches(&peer.name, true));
        let allowed = !peer.nofailover && !peer.watchdog_failed;
        if !allowed && !voter {
            continue;
        }
        if sync_on && !s.is_some_and(|s| s.matches(&peer.name, true)) {
            continue;
        }
        if peer.is_primary {
            return Err(format!("Primary ({}) is still alive", peer.name));
        }
        if peer.wal_position > wal_position {
            if former_leader(&peer.name) || !allowed {
                continue;
            }
            return Err(format!(
                "Wal position of {} is ahead of my wal position",
                peer.name
            ));
        }
        if voter && peer.wal_position > 0 {
            votes += 1;
        }
        if allowed
            && !former_leader(&peer.name)
            && peer.wal_position == wal_position
            && peer.failover_priority > o.failover_priority
        {
            return Err(format!(
                "{} has equally tolerable WAL position and priority {}, while this node has priority {}",
                peer.name, peer.failover_priority, o.failover_priority
            ));
        }
    }
    Ok(votes)
}

/// `manual_failover_process_no_leader` (spec/ha-loop.md §5.2): a switchover or failover was
/// requested and the leader key is gone. The named candidate wins; others wait while it is
/// healthy; if it is not, the members except the former leader race without the lag check.
fn manual_failover_no_leader(
    o: &Observation,
    cluster: &Cluster,
    f: &Failover,
    wal_position: u64,
) -> Result<(), String> {
    let healthy = |p: &&PeerStatus| !p.nofailover && !p.watchdog_failed && p.name != o.me;
    if f.member.as_deref() == Some(o.me.as_str()) {
        return Ok(());
    }
    if o.sync.active()
        && !o.sync.quorum()
        && !cluster
            .sync
            .as_ref()
            .is_some_and(|s| s.matches(&o.me, true))
    {
        return Err("manual failover: I am not a synchronous standby".into());
    }
    if let Some(candidate) = f.member.as_deref() {
        if o.peers.iter().filter(healthy).any(|p| p.name == candidate) {
            return Err(format!(
                "manual failover: the candidate {candidate} is healthy, waiting for it"
            ));
        }
    }
    if f.leader.as_deref() == Some(o.me.as_str()) {
        if let Some(other) = o.peers.iter().find(healthy) {
            return Err(format!(
                "manual failover: I was the leader and {} is healthy",
                other.name
            ));
        }
        return Ok(());
    }
    let votes = compare_with_peers(o, cluster, wal_position, f.leader.as_deref())?;
    check_votes(o, cluster, votes)
}
