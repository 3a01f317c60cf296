//! `GET /cluster`'s document (Patroni's `cluster_as_json`), also what `patronictl list` shows.

use pgpilot_dcs::Cluster;
use serde_json::{json, Map, Value};

use crate::status::sync_flags;
use crate::{NodeSnapshot, Role};

fn lsn_text(l: u64) -> String {
    format!("{:X}/{:X}", l >> 32, l & 0xffff_ffff)
}

/// `cluster_as_json`: what `GET /cluster` and `patronictl list` show.
pub fn cluster_json(snap: &NodeSnapshot, c: &Cluster) -> Value {
    let leader = c.leader_name();
    let standby_cluster = c.is_standby_cluster();
    let optime = c.status.optime;
    let mut members = Vec::new();
    for m in &c.members {
        let d = &m.data;
        let is_leader = Some(m.name.as_str()) == leader;
        let mut probe = snap.clone();
        probe.name = m.name.clone();
        probe.role = Role::Replica;
        let (sync, quorum) = sync_flags(&probe, Some(c));
        let role = if is_leader {
            if standby_cluster {
                "standby_leader"
            } else {
                "leader"
            }
        } else if sync {
            "sync_standby"
        } else if quorum {
            "quorum_standby"
        } else {
            "replica"
        };
        let mut o = Map::new();
        o.insert("name".into(), json!(m.name));
        o.insert("role".into(), json!(role));
        let state = if is_leader {
            d.state.clone()
        } else {
            d.replication_state
                .clone()
                .unwrap_or_else(|| d.state.clone())
        };
        o.insert("state".into(), json!(state));
        o.insert("api_url".into(), json!(d.api_url));
        if let Some((host, port)) = d.host_port() {
            o.insert("host".into(), json!(host));
            o.insert("port".into(), json!(port));
        }
        if let Some(tl) = d.timeline {
            o.insert("timeline".into(), json!(tl));
        }
        if d.pending_restart == Some(true) {
            o.insert("pending_restart".into(), json!(true));
            if let Some(r) = &d.pending_restart_reason {
                o.insert("pending_restart_reason".into(), Value::Object(r.clone()));
            }
        }
        if let Some(s) = &d.scheduled_restart {
            o.insert("scheduled_restart".into(), Value::Object(s.clone()));
        }
        if let Some(t) = &d.tags {
            o.insert("tags".into(), Value::Object(t.clone()));
        }
        if !is_leader {
            for (field, lsn) in [
                ("receive", d.receive_lsn),
                ("replay", d.replay_lsn),
                ("", d.xlog_location),
            ] {
                let (lk, gk) = if field.is_empty() {
                    ("lsn".to_string(), "lag".to_string())
                } else {
                    (format!("{field}_lsn"), format!("{field}_lag"))
                };
                match lsn {
                    Some(l) => {
                        o.insert(lk, json!(lsn_text(l)));
                        o.insert(gk, json!(optime.saturating_sub(l)));
                    }
                    None => {
                        o.insert(lk, json!("unknown"));
                        o.insert(gk, json!("unknown"));
                    }
                }
            }
        }
        members.push(Value::Object(o));
    }
    let mut out = Map::new();
    out.insert("members".into(), Value::Array(members));
    out.insert("scope".into(), json!(snap.scope));
    if c.is_paused() {
        out.insert("pause".into(), json!(true));
    }
    if let Some(f) = c.failover.as_ref().filter(|f| f.scheduled_at.is_some()) {
        let mut s = Map::new();
        s.insert("at".into(), json!(f.scheduled_at));
        if let Some(l) = &f.leader {
            s.insert("from".into(), json!(l));
        }
        if let Some(m) = &f.member {
            s.insert("to".into(), json!(m));
        }
        out.insert("scheduled_switchover".into(), Value::Object(s));
    }
    Value::Object(out)
}
