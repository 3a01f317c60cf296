//! The leader's side of a switchover or manual failover: what it does about a `/failover` key
//! (`process_manual_failover_from_leader`, spec/ha-loop.md §5.4).

use std::time::Duration;

use pgpilot_dcs::Failover;
use pgpilot_types::PeerStatus;

use super::{Observation, PgView};

/// What the leader does about a `/failover` key (`process_manual_failover_from_leader`,
/// spec/ha-loop.md §5.4).
#[derive(Debug, Clone, PartialEq)]
pub enum ManualFailover {
    /// Scheduled for later: nothing to do this cycle.
    Wait { msg: String },
    /// Scheduled within this cycle: sleep this long, then decide again.
    SleepUntilDue(Duration),
    /// Demote gracefully so that `candidate` (or the healthiest replica) takes over.
    Demote { candidate: Option<String> },
    /// The request can not or need not be carried out: clear the key (CAS on its version).
    Clear { msg: String },
}

/// The leader's answer to `/failover`. `seconds_until_scheduled`: how far the scheduled time
/// is (negative: in the past), computed by the caller from its clock; `None` when not
/// scheduled. `o.peers` holds the candidates' `/patroni` answers.
pub fn manual_failover_from_leader(
    o: &Observation,
    f: &Failover,
    seconds_until_scheduled: Option<f64>,
    loop_wait: Duration,
) -> ManualFailover {
    if let Some(delta) = seconds_until_scheduled {
        let lw = loop_wait.as_secs_f64();
        if delta > lw {
            return ManualFailover::Wait {
                msg: format!(
                    "Awaiting switchover at {} (in {delta:.0} seconds)",
                    f.scheduled_at.as_deref().unwrap_or("")
                ),
            };
        }
        if delta < -(lw * 1.5).floor() {
            return ManualFailover::Clear {
                msg: format!(
                    "Found a stale switchover value, cleaning up: {}",
                    f.scheduled_at.as_deref().unwrap_or("")
                ),
            };
        }
        if delta > 0.0 {
            return ManualFailover::SleepUntilDue(Duration::from_secs_f64(delta));
        }
    }
    let me = o.me.as_str();
    if f.leader.as_deref().is_some_and(|l| l != me) {
        return ManualFailover::Clear {
            msg: format!(
                "manual failover: leader name does not match: {} != {me}",
                f.leader.as_deref().unwrap_or("")
            ),
        };
    }
    if f.member.as_deref() == Some(me) {
        return ManualFailover::Clear {
            msg: "manual failover: I am already the leader, no need to failover".into(),
        };
    }
    if f.member.is_none() && o.paused {
        return ManualFailover::Clear {
            msg: "Switchover is possible only to a specific candidate in a paused state".into(),
        };
    }
    let my_wal = match o.pg {
        PgView::Running { wal_position, .. } => wal_position,
        _ => 0,
    };
    let optime = o
        .cluster
        .as_ref()
        .map_or(my_wal, |c| c.status.optime.max(my_wal));
    let sync_state = o.cluster.as_ref().and_then(|c| c.sync.as_ref());
    // A switchover in synchronous or quorum mode goes to a `/sync` member.
    let sync_on = o.sync.active();
    let good: Vec<&PeerStatus> = o
        .peers
        .iter()
        .filter(|p| {
            p.name != me
                && !p.nofailover
                && !p.watchdog_failed
                && !p.is_primary
                && f.member.as_deref().is_none_or(|c| c == p.name)
                && optime.saturating_sub(p.wal_position) <= o.maximum_lag_on_failover
                // A switchover in synchronous mode goes to a synchronous standby.
                && (!sync_on || sync_state.is_some_and(|s| s.matches(&p.name, false)))
        })
        .collect();
    // Quorum mode without a named candidate: enough voters must be able to elect one.
    let needed = if o.sync.quorum() && f.member.is_none() {
        let good_voters = good
            .iter()
            .filter(|p| sync_state.is_some_and(|s| s.matches(&p.name, true)))
            .count();
        good_voters >= sync_state.map_or(0, |s| s.quorum as usize)
    } else {
        true
    };
    if !good.is_empty() && needed {
        ManualFailover::Demote {
            candidate: f.member.clone(),
        }
    } else {
        ManualFailover::Clear {
            msg: "manual failover: no healthy members found, failover is not possible".into(),
        }
    }
}
