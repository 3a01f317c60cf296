//! `list`, `topology` and `history` output: pure functions from a [`Cluster`] snapshot to text.
//!
//! The member rows follow Patroni's `cluster_as_json` (what `GET /cluster` also serves) and
//! `output_members`: role names from the leader key, `/sync` and `/config`, lags against
//! `/status.optime` in MB (Python's round-half-even), `host:port` only when needed.

use pgpilot_dcs::{truthy, Cluster, Member, SyncMode};
use serde_json::{Map, Value};

use crate::table::{Format, Table};
use crate::yaml;

/// The parts of `/config` the CLI interprets (Patroni's `global_config`).
pub struct GlobalConfig<'a> {
    data: Option<&'a Map<String, Value>>,
}

impl<'a> GlobalConfig<'a> {
    pub fn from_cluster(c: &'a Cluster) -> GlobalConfig<'a> {
        GlobalConfig {
            data: c.config.as_ref().map(|c| &c.data),
        }
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.data.and_then(|d| d.get(key))
    }

    pub fn is_paused(&self) -> bool {
        self.get("pause").is_some_and(truthy)
    }

    pub fn is_standby_cluster(&self) -> bool {
        self.data.is_some_and(pgpilot_values::is_standby_cluster)
    }

    /// `synchronous_mode` as [`SyncMode::from_value`] reads it.
    fn sync_mode(&self) -> SyncMode {
        SyncMode::from_value(self.get("synchronous_mode"))
    }

    pub fn is_quorum_commit_mode(&self) -> bool {
        self.sync_mode().is_quorum()
    }

    pub fn is_synchronous_mode(&self) -> bool {
        self.sync_mode().is_active() && !self.is_standby_cluster()
    }

    /// `loop_wait` from `/config`, else `default`.
    pub fn loop_wait(&self, default: u64) -> u64 {
        self.get("loop_wait")
            .and_then(|v| v.as_u64().or_else(|| v.as_str()?.parse().ok()))
            .filter(|v| *v > 0)
            .unwrap_or(default)
    }
}

/// Host and port a member publishes (`conn_kwargs` first, else `conn_url`).
pub fn member_host_port(m: &Member) -> Option<(String, Option<u16>)> {
    if let Some(kw) = m.data.extra.get("conn_kwargs").and_then(Value::as_object) {
        let host = kw.get("host").and_then(Value::as_str)?.to_string();
        let port = kw
            .get("port")
            .and_then(|p| p.as_u64().or_else(|| p.as_str()?.parse().ok()))
            .and_then(|p| u16::try_from(p).ok());
        return Some((host, port));
    }
    m.data.host_port().map(|(h, p)| (h, Some(p)))
}

/// `0/3000060`.
pub fn format_lsn(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// One member as `cluster_as_json` describes it.
#[derive(Debug, Clone)]
pub struct MemberInfo {
    pub name: String,
    /// `leader`, `standby_leader`, `sync_standby`, `quorum_standby`, `replica`.
    pub role: String,
    pub state: String,
    pub host: Option<String>,
    pub port: Option<u16>,
    pub timeline: Option<Value>,
    pub pending_restart: bool,
    pub pending_restart_reason: Option<Map<String, Value>>,
    pub scheduled_restart: Option<Map<String, Value>>,
    pub tags: Option<Map<String, Value>>,
    /// Non-leaders only: `(lsn, lag)` for receive, replay and the legacy `xlog_location`;
    /// `None` = `unknown`.
    pub lsns: Option<[Option<(u64, u64)>; 3]>,
}

/// `cluster_as_json(cluster)['members']`, sorted by name.
pub fn members_info(c: &Cluster) -> Vec<MemberInfo> {
    let gc = GlobalConfig::from_cluster(c);
    let leader = c.leader.as_ref().map(|l| l.name.as_str());
    let sync_role = if gc.is_quorum_commit_mode() {
        "quorum_standby"
    } else {
        "sync_standby"
    };
    let optime = c.status.optime;
    let mut out: Vec<MemberInfo> = c
        .members
        .iter()
        .map(|m| {
            let is_leader = Some(m.name.as_str()) == leader;
            let role = if is_leader {
                if gc.is_standby_cluster() {
                    "standby_leader"
                } else {
                    "leader"
                }
            } else if gc.is_synchronous_mode()
                && c.sync.as_ref().is_some_and(|s| s.matches(&m.name, false))
            {
                sync_role
            } else {
                "replica"
            };
            let replication_state = if role != "leader" {
                m.data.replication_state.clone().unwrap_or_default()
            } else {
                String::new()
            };
            let state = if replication_state.is_empty() {
                m.data.state.clone()
            } else {
                replication_state
            };
            let (host, port) = match member_host_port(m) {
                Some((h, p)) if !h.is_empty() => (Some(h), p),
                _ => (None, None),
            };
            let lag = |lsn: Option<u64>| match lsn {
                Some(l) if l > 0 => Some((l, optime.saturating_sub(l))),
                _ => None,
            };
            let lsns = (!is_leader).then(|| {
                [
                    lag(m.data.receive_lsn),
                    lag(m.data.replay_lsn),
                    lag(m.data.xlog_location),
                ]
            });
            MemberInfo {
                name: m.name.clone(),
                role: role.to_string(),
                state,
                host,
                port,
                timeline: m.data.timeline.map(Value::from),
                pending_restart: m.data.pending_restart.unwrap_or(false),
                pending_restart_reason: m.data.pending_restart_reason.clone(),
                scheduled_restart: m.data.scheduled_restart.clone(),
                tags: m.data.tags.clone(),
                lsns,
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// `Leader`, `Standby Leader`, `Sync Standby`, `Replica` (Python's `str.title()` of the role).
fn title_case(role: &str) -> String {
    role.split('_')
        .map(|w| {
            let mut c = w.chars();
            match c.next() {
                Some(f) => f
                    .to_uppercase()
                    .chain(c.flat_map(char::to_lowercase))
                    .collect(),
                None => String::new(),
            }
        })
        .collect::<Vec<String>>()
        .join(" ")
}

/// MB, rounded half to even like Python's `round()`.
fn lag_mb(bytes: u64) -> i64 {
    // Lags fit f64 exactly far beyond any real WAL distance.
    (bytes as f64 / 1024.0 / 1024.0).round_ties_even() as i64
}

/// `topology_sort`: the leader, then replicas nested under their `replicatefrom` upstream.
/// Returns indices into `members` with the indentation level.
fn topology_order(members: &[MemberInfo]) -> Vec<(usize, usize)> {
    let leader = members.iter().position(|m| m.role.ends_with("leader"));
    let is_replica = |name: &str| {
        members
            .iter()
            .any(|m| !m.role.ends_with("leader") && m.name == name)
    };
    let leader_name: Option<String> = leader.map(|i| members[i].name.clone());
    // Upstream of every non-leader: its `replicatefrom` tag when that names another replica,
    // else the leader.
    let parents: Vec<Option<String>> = members
        .iter()
        .map(|m| {
            let wanted = m
                .tags
                .as_ref()
                .and_then(|t| t.get("replicatefrom"))
                .and_then(Value::as_str)
                .filter(|p| !p.is_empty());
            match wanted {
                Some(p) if p != m.name && is_replica(p) => Some(p.to_string()),
                _ => leader_name.clone(),
            }
        })
        .collect();
    fn walk(
        members: &[MemberInfo],
        parents: &[Option<String>],
        parent: Option<&str>,
        level: usize,
        out: &mut Vec<(usize, usize)>,
    ) {
        for (i, m) in members.iter().enumerate() {
            if !m.role.ends_with("leader") && parents[i].as_deref() == parent {
                out.push((i, level));
                walk(members, parents, Some(&m.name), level + 1, out);
            }
        }
    }
    let mut out = Vec::new();
    if let Some(l) = leader {
        out.push((l, 0));
    }
    walk(members, &parents, leader_name.as_deref(), 1, &mut out);
    out
}

/// The footer lines (` Maintenance mode: on`, scheduled switchover).
fn service_info(c: &Cluster) -> Vec<String> {
    let mut info = Vec::new();
    if GlobalConfig::from_cluster(c).is_paused() {
        info.push("Maintenance mode: on".to_string());
    }
    if let Some(f) = &c.failover {
        if let Some(at) = &f.scheduled_at {
            let mut s = format!("Switchover scheduled at: {at}");
            for (name, v) in [("from", &f.leader), ("to", &f.member)] {
                if let Some(v) = v {
                    s.push_str(&format!("\n{name:>24}: {v}"));
                }
            }
            info.push(s);
        }
    }
    info
}

/// `output_members(cluster, name, extended, fmt)`: the whole text `list` prints for one cluster.
pub fn render_members(c: &Cluster, name: &str, extended: bool, fmt: Format) -> String {
    let members = members_info(c);
    let with_host: Vec<&MemberInfo> = members.iter().filter(|m| m.host.is_some()).collect();

    let mut columns: Vec<String> = [
        "Cluster",
        "Member",
        "Host",
        "Role",
        "State",
        "TL",
        "Receive LSN",
        "Receive Lag",
        "Replay LSN",
        "Replay Lag",
    ]
    .map(String::from)
    .to_vec();
    let optional = [
        (
            "Pending restart",
            with_host.iter().any(|m| m.pending_restart),
        ),
        (
            "Pending restart reason",
            with_host.iter().any(|m| {
                m.pending_restart_reason
                    .as_ref()
                    .is_some_and(|r| !r.is_empty())
            }),
        ),
        (
            "Scheduled restart",
            with_host
                .iter()
                .any(|m| m.scheduled_restart.as_ref().is_some_and(|s| !s.is_empty())),
        ),
        (
            "Tags",
            with_host
                .iter()
                .any(|m| m.tags.as_ref().is_some_and(|t| !t.is_empty())),
        ),
    ];
    for (col, present) in optional {
        if extended || present {
            columns.push(col.to_string());
        }
    }

    let mut hosts: Vec<&str> = with_host.iter().filter_map(|m| m.host.as_deref()).collect();
    hosts.sort_unstable();
    hosts.dedup();
    let append_port = with_host.iter().any(|m| m.port.is_some_and(|p| p != 5432))
        || hosts.len() < with_host.len();

    let order: Vec<(usize, usize)> = if fmt == Format::Topology {
        topology_order(&members)
    } else {
        (0..members.len()).map(|i| (i, 0)).collect()
    };

    let s = |v: &str| Value::String(v.to_string());
    let mut rows = Vec::new();
    for (i, level) in order {
        let m = &members[i];
        let member_name = if level > 0 {
            format!("{}+ {}", " ".repeat((level - 1) * 2), m.name)
        } else {
            m.name.clone()
        };
        let mut host = m.host.clone().unwrap_or_default();
        if append_port && !host.is_empty() {
            if let Some(p) = m.port {
                host = format!("{host}:{p}");
            }
        }
        // receive, replay, legacy lsn: (lsn cell, lag cell); leader rows stay empty.
        let cells = |x: &Option<(u64, u64)>| match x {
            Some((lsn, lag)) => (s(&format_lsn(*lsn)), Value::from(lag_mb(*lag))),
            None => (s("unknown"), s("")),
        };
        let (mut receive, mut replay) = ((s(""), s("")), (s(""), s("")));
        if let Some([rc, rp, legacy]) = &m.lsns {
            receive = cells(rc);
            replay = cells(rp);
            // Members that publish only xlog_location (old agents).
            if rc.is_none() && rp.is_none() && legacy.is_some() {
                if m.state == "streaming" {
                    receive = cells(legacy);
                } else {
                    replay = cells(legacy);
                }
            }
        }
        let hide_long = fmt.is_pretty();
        let reason = m
            .pending_restart_reason
            .as_ref()
            .map(|r| {
                r.iter()
                    .map(|(param, v)| {
                        let old = v.get("old_value").map(crate::table::py_str);
                        let new = v.get("new_value").map(crate::table::py_str);
                        let full = format!(
                            "{param}: {}->{}",
                            old.unwrap_or_default(),
                            new.unwrap_or_default()
                        );
                        if hide_long && full.chars().count() > 50 {
                            format!("{param}: [hidden - too long]")
                        } else {
                            full
                        }
                    })
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default();
        let scheduled = m
            .scheduled_restart
            .as_ref()
            .map(|sr| {
                let mut v = sr
                    .get("schedule")
                    .map(crate::table::py_str)
                    .unwrap_or_default();
                if let Some(ver) = sr.get("postgres_version") {
                    v.push_str(&format!(" if version < {}", crate::table::py_str(ver)));
                }
                s(&v)
            })
            .unwrap_or_else(|| s(""));
        let tags = match &m.tags {
            Some(t) if !t.is_empty() => {
                let v = Value::Object(t.clone());
                match fmt {
                    Format::Json | Format::Yaml => v,
                    _ => s(yaml::dump(&v, fmt != Format::Pretty).trim()),
                }
            }
            _ => s(""),
        };
        let mut row = Vec::with_capacity(columns.len());
        for col in &columns {
            row.push(match col.as_str() {
                "Cluster" => s(name),
                "Member" => s(&member_name),
                "Host" => s(&host),
                "Role" => s(&title_case(&m.role)),
                "State" => s(&m.state),
                "TL" => m.timeline.clone().unwrap_or_else(|| s("")),
                "Receive LSN" => receive.0.clone(),
                "Receive Lag" => receive.1.clone(),
                "Replay LSN" => replay.0.clone(),
                "Replay Lag" => replay.1.clone(),
                "Pending restart" => s(if m.pending_restart { "*" } else { "" }),
                "Pending restart reason" => s(&reason),
                "Scheduled restart" => scheduled.clone(),
                _ => tags.clone(),
            });
        }
        rows.push(row);
    }

    let initialize = match c.initialize.as_deref() {
        None => "uninitialized",
        Some("") => "initializing",
        Some(sysid) => sysid,
    };
    let title = format!(" Cluster: {name} ({initialize}) ");
    let mut out = String::new();
    if fmt.is_pretty() {
        // The pretty table shows the cluster only in its title, and both lags as `Lag`.
        let columns: Vec<String> = columns[1..]
            .iter()
            .map(|c| match c.as_str() {
                "Receive Lag" | "Replay Lag" => "Lag".to_string(),
                _ => c.clone(),
            })
            .collect();
        let rows = rows.into_iter().map(|r| r[1..].to_vec()).collect();
        let table = Table {
            columns,
            rows,
            right_aligned: &["Receive LSN", "Replay LSN", "Lag", "TL"],
            title,
        };
        out.push_str(&table.render(fmt, "\t"));
        let info = service_info(c);
        if !info.is_empty() {
            out.push(' ');
            out.push_str(&info.join("\n "));
            out.push('\n');
        }
    } else {
        let table = Table {
            columns,
            rows,
            right_aligned: &[],
            title,
        };
        out.push_str(&table.render(fmt, "\t"));
    }
    out
}

/// `history`: `TL`, `LSN`, `Reason`, `Timestamp`, `New Leader`.
pub fn render_history(c: &Cluster, fmt: Format) -> String {
    let rows = c
        .history
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|l| {
            vec![
                Value::from(l.timeline),
                Value::from(l.lsn),
                Value::from(l.reason.clone()),
                Value::from(l.timestamp.clone().unwrap_or_default()),
                Value::from(l.leader.clone().unwrap_or_default()),
            ]
        })
        .collect();
    Table {
        columns: ["TL", "LSN", "Reason", "Timestamp", "New Leader"]
            .map(String::from)
            .to_vec(),
        rows,
        right_aligned: &["TL", "LSN"],
        title: String::new(),
    }
    .render(fmt, "\t")
}

#[cfg(test)]
mod tests {
    use super::*;
    use pgpilot_dcs::{ClusterConfig, Failover, HistoryLine, Leader, MemberData, Status};
    use serde_json::json;

    fn member(name: &str, port: u16, role: &str, data: serde_json::Value) -> Member {
        let mut d: MemberData = serde_json::from_value(data).unwrap();
        d.conn_url = format!("postgres://127.0.0.1:{port}/postgres");
        d.api_url = format!("http://127.0.0.1:{}/patroni", port - 46313);
        d.role = role.into();
        d.version = "4.1.4".into();
        Member {
            name: name.into(),
            data: d,
            version: 1,
            lease: 0,
        }
    }

    /// pg3 leads; pg1 streams 2.5 MB behind on receive, 3.5 MB on replay; pg2 is stopped
    /// and has no LSNs.
    fn demo() -> Cluster {
        let mb = 1024 * 1024;
        let optime = 0x0500_0000u64;
        Cluster {
            initialize: Some("7301234567890123456".into()),
            config: Some(ClusterConfig {
                data: json!({"ttl": 30, "loop_wait": 10})
                    .as_object()
                    .unwrap()
                    .clone(),
                version: 3,
            }),
            leader: Some(Leader {
                name: "pg3".into(),
                version: 5,
                lease: 1,
            }),
            status: Status {
                optime,
                ..Default::default()
            },
            members: vec![
                member(
                    "pg1",
                    54321,
                    "replica",
                    json!({"state": "running", "replication_state": "streaming",
                           "timeline": 2, "receive_lsn": optime - 5 * mb / 2,
                           "replay_lsn": optime - 7 * mb / 2, "xlog_location": optime}),
                ),
                member("pg2", 54322, "replica", json!({"state": "stopped"})),
                member(
                    "pg3",
                    54323,
                    "primary",
                    json!({"state": "running", "timeline": 2, "xlog_location": optime}),
                ),
            ],
            ..Default::default()
        }
    }

    #[test]
    fn pretty_list_matches_patronictl() {
        assert_eq!(
            render_members(&demo(), "demo", false, Format::Pretty),
            "\
+ Cluster: demo (7301234567890123456) -----------+----+-------------+-----+------------+-----+
| Member | Host            | Role    | State     | TL | Receive LSN | Lag | Replay LSN | Lag |
+--------+-----------------+---------+-----------+----+-------------+-----+------------+-----+
| pg1    | 127.0.0.1:54321 | Replica | streaming |  2 |   0/4D80000 |   2 |  0/4C80000 |   4 |
| pg2    | 127.0.0.1:54322 | Replica | stopped   |    |     unknown |     |    unknown |     |
| pg3    | 127.0.0.1:54323 | Leader  | running   |  2 |             |     |            |     |
+--------+-----------------+---------+-----------+----+-------------+-----+------------+-----+
"
        );
    }

    #[test]
    fn pretty_footer_pause_and_scheduled_switchover() {
        let mut c = demo();
        c.config
            .as_mut()
            .unwrap()
            .data
            .insert("pause".into(), json!(true));
        c.failover = Some(Failover {
            leader: Some("pg3".into()),
            member: Some("pg1".into()),
            scheduled_at: Some("2024-01-01T10:00:00+00:00".into()),
            version: 9,
        });
        let out = render_members(&c, "demo", false, Format::Pretty);
        assert!(out.ends_with(
            "+\n Maintenance mode: on\n Switchover scheduled at: 2024-01-01T10:00:00+00:00\n\
             \x20                   from: pg3\n                      to: pg1\n"
        ));
    }

    #[test]
    fn tsv_list_has_cluster_column_and_full_lag_names() {
        assert_eq!(
            render_members(&demo(), "demo", false, Format::Tsv),
            "Cluster\tMember\tHost\tRole\tState\tTL\tReceive LSN\tReceive Lag\tReplay LSN\tReplay Lag\n\
             demo\tpg1\t127.0.0.1:54321\tReplica\tstreaming\t2\t0/4D80000\t2\t0/4C80000\t4\n\
             demo\tpg2\t127.0.0.1:54322\tReplica\tstopped\t\tunknown\t\tunknown\t\n\
             demo\tpg3\t127.0.0.1:54323\tLeader\trunning\t2\t\t\t\t\n"
        );
    }

    #[test]
    fn json_list_omits_empty_cells() {
        assert_eq!(
            render_members(&demo(), "demo", false, Format::Json),
            "[{\"Cluster\": \"demo\", \"Member\": \"pg1\", \"Host\": \"127.0.0.1:54321\", \
             \"Role\": \"Replica\", \"State\": \"streaming\", \"TL\": 2, \"Receive LSN\": \
             \"0/4D80000\", \"Receive Lag\": 2, \"Replay LSN\": \"0/4C80000\", \"Replay Lag\": 4}, \
             {\"Cluster\": \"demo\", \"Member\": \"pg2\", \"Host\": \"127.0.0.1:54322\", \
             \"Role\": \"Replica\", \"State\": \"stopped\", \"Receive LSN\": \"unknown\", \
             \"Replay LSN\": \"unknown\"}, \
             {\"Cluster\": \"demo\", \"Member\": \"pg3\", \"Host\": \"127.0.0.1:54323\", \
             \"Role\": \"Leader\", \"State\": \"running\", \"TL\": 2}]\n"
        );
    }

    #[test]
    fn yaml_list_sorts_keys() {
        let mut c = demo();
        c.members.truncate(1);
        c.leader = None;
        assert_eq!(
            render_members(&c, "demo", false, Format::Yaml),
            "- Cluster: demo\n  Host: 127.0.0.1:54321\n  Member: pg1\n  Receive LSN: 0/4D80000\n  \
             Receive Lag: 2\n  Replay LSN: 0/4C80000\n  Replay Lag: 4\n  Role: Replica\n  \
             State: streaming\n  TL: 2\n\n"
        );
    }

    #[test]
    fn default_port_and_unique_hosts_show_bare_host() {
        let mut c = demo();
        for (i, m) in c.members.iter_mut().enumerate() {
            m.data.conn_url = format!("postgres://10.0.0.{}:5432/postgres", i + 1);
        }
        let out = render_members(&c, "demo", false, Format::Tsv);
        assert!(out.contains("\tpg1\t10.0.0.1\t"), "{out}");
    }

    #[test]
    fn extended_columns_tags_and_topology() {
        let mut c = demo();
        c.members[1].data.state = "running".into();
        c.members[1].data.replication_state = Some("streaming".into());
        c.members[1].data.tags = Some(
            json!({"replicatefrom": "pg1", "nofailover": true})
                .as_object()
                .unwrap()
                .clone(),
        );
        c.members[0].data.pending_restart = Some(true);
        c.members[0].data.pending_restart_reason = Some(
            json!({"max_connections": {"old_value": "100", "new_value": "200"}})
                .as_object()
                .unwrap()
                .clone(),
        );
        let out = render_members(&c, "demo", false, Format::Topology);
        let expected = [
            "+ Cluster: demo (7301234567890123456) +-----------+----+-------------+-----+------------+-----+-----------------+---------------------------+----------------------------------------+",
            "| Member  | Host            | Role    | State     | TL | Receive LSN | Lag | Replay LSN | Lag | Pending restart | Pending restart reason    | Tags                                   |",
            "+---------+-----------------+---------+-----------+----+-------------+-----+------------+-----+-----------------+---------------------------+----------------------------------------+",
            "| pg3     | 127.0.0.1:54323 | Leader  | running   |  2 |             |     |            |     |                 |                           |                                        |",
            "| + pg1   | 127.0.0.1:54321 | Replica | streaming |  2 |   0/4D80000 |   2 |  0/4C80000 |   4 | *               | max_connections: 100->200 |                                        |",
            "|   + pg2 | 127.0.0.1:54322 | Replica | streaming |    |     unknown |     |    unknown |     |                 |                           | {nofailover: true, replicatefrom: pg1} |",
            "+---------+-----------------+---------+-----------+----+-------------+-----+------------+-----+-----------------+---------------------------+----------------------------------------+",
        ];
        assert_eq!(out, format!("{}\n", expected.join("\n")));
        // Pretty (not topology) renders tags as a YAML block: one line per tag, rules between rows.
        let out = render_members(&c, "demo", false, Format::Pretty);
        assert!(out.contains("| nofailover: true   |\n"), "{out}");
        assert!(out.contains("| replicatefrom: pg1 |\n+--"), "{out}");
    }

    #[test]
    fn lag_rounds_half_to_even() {
        assert_eq!(lag_mb(512 * 1024), 0);
        assert_eq!(lag_mb(3 * 512 * 1024), 2);
        assert_eq!(lag_mb(1024 * 1024 + 1), 1);
    }

    #[test]
    fn history_from_cluster() {
        let mut c = demo();
        c.history = Some(vec![HistoryLine {
            timeline: 1,
            lsn: 25165984,
            reason: "no recovery target specified".into(),
            timestamp: None,
            leader: None,
        }]);
        assert_eq!(
            render_history(&c, Format::Tsv),
            "TL\tLSN\tReason\tTimestamp\tNew Leader\n1\t25165984\tno recovery target specified\t\t\n"
        );
    }
}
