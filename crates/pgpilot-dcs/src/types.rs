//! The values stored under the cluster prefix, with the exact JSON forms Patroni writes and reads
//! (spec/dcs.md §2.2–2.4). Everything here is plain data: the backends fill a [`Cluster`] from one
//! prefix read (or the watch cache), and the HA cycle reads it.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::values::truthy;

/// The numeric version every pgpilot agent advertises in its member key and `/patroni`.
///
/// Peers (including real Patroni and patronictl) parse it as dotted integers and use it to pick
/// protocol details; it must stay `>= 4.0.0` (spec/dcs.md §2.3).
pub const PATRONI_COMPAT_VERSION: &str = "4.1.4";

/// The value of `members/<name>`, in Patroni's field order (spec/dcs.md §2.3).
///
/// Unknown fields written by other implementations are kept in `extra` so that reading and
/// re-serialising a member never loses data.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MemberData {
    #[serde(default)]
    pub conn_url: String,
    #[serde(default)]
    pub api_url: String,
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub role: String,
    #[serde(default)]
    pub version: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_after_promote: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_restart: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_restart_reason: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xlog_location: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_lsn: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receive_lsn: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replication_state: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeline: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_restart: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pause: Option<bool>,
    /// Fields this version does not model, kept verbatim.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl MemberData {
    /// Compact JSON exactly as Patroni writes it (`separators=(',', ':')`).
    pub fn to_json(&self) -> String {
        // Serialising plain strings, numbers and maps cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Lenient parse: invalid JSON gives an empty member (Patroni's readers do the same).
    /// A legacy value starting with `postgres` is a bare conn_url with `?application_name=<api_url>`.
    pub fn parse(text: &str) -> MemberData {
        if text.starts_with("postgres") {
            let (conn, api) = match text.split_once("?application_name=") {
                Some((c, a)) => (c.to_string(), a.to_string()),
                None => (text.to_string(), String::new()),
            };
            return MemberData {
                conn_url: conn,
                api_url: api,
                ..Default::default()
            };
        }
        serde_json::from_str(text).unwrap_or_default()
    }

    /// `nofailover` as Patroni derives it ([`crate::values::bool_tag`]).
    pub fn nofailover(&self) -> bool {
        self.tags
            .as_ref()
            .is_some_and(|t| crate::values::bool_tag(t, "nofailover", "failover_priority"))
    }

    /// `failover_priority` as Patroni derives it ([`crate::values::priority_tag`]).
    pub fn failover_priority(&self) -> i64 {
        self.tags.as_ref().map_or(1, |t| {
            crate::values::priority_tag(t, "nofailover", "failover_priority")
        })
    }

    /// The `nostream` tag: the member recovers from the archive and needs no slot.
    pub fn nostream(&self) -> bool {
        self.tags
            .as_ref()
            .and_then(|t| t.get("nostream"))
            .is_some_and(truthy)
    }

    /// `nosync` as Patroni derives it ([`crate::values::bool_tag`]).
    pub fn nosync(&self) -> bool {
        self.tags
            .as_ref()
            .is_some_and(|t| crate::values::bool_tag(t, "nosync", "sync_priority"))
    }

    /// `sync_priority` as Patroni derives it: 0 with the `nosync` tag, else the tag, default 1.
    pub fn sync_priority(&self) -> i64 {
        self.tags.as_ref().map_or(1, |t| {
            crate::values::priority_tag(t, "nosync", "sync_priority")
        })
    }

    /// The `replicatefrom` tag: the member this one streams from instead of the leader.
    pub fn replicatefrom(&self) -> Option<&str> {
        self.tags
            .as_ref()
            .and_then(|t| t.get("replicatefrom"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    }

    /// `clonefrom` tag.
    pub fn clonefrom(&self) -> bool {
        self.tags
            .as_ref()
            .and_then(|t| t.get("clonefrom"))
            .is_some_and(truthy)
    }

    /// Host and port parsed from `conn_url` (`postgres://host:port/postgres`).
    pub fn host_port(&self) -> Option<(String, u16)> {
        let rest = self.conn_url.split_once("://")?.1;
        let hostport = rest.split(['/', '?']).next()?;
        let hostport = hostport.rsplit_once('@').map_or(hostport, |(_, h)| h);
        match hostport.rsplit_once(':') {
            Some((h, p)) => Some((h.trim_matches(['[', ']']).to_string(), p.parse().ok()?)),
            None => Some((hostport.to_string(), 5432)),
        }
    }
}

/// One `members/<name>` key.
#[derive(Debug, Clone, PartialEq)]
pub struct Member {
    pub name: String,
    pub data: MemberData,
    /// mod_revision of the key.
    pub version: i64,
    /// Lease the key is attached to (0 = none).
    pub lease: i64,
}

/// The `leader` key: its value is the bare member name.
#[derive(Debug, Clone, PartialEq)]
pub struct Leader {
    pub name: String,
    pub version: i64,
    pub lease: i64,
}

/// The `config` key: the dynamic configuration document and its mod_revision (for CAS).
#[derive(Debug, Clone, PartialEq)]
pub struct ClusterConfig {
    pub data: Map<String, Value>,
    pub version: i64,
}

/// The `status` key: `{"optime": <int>, "slots"?: {...}, "retain_slots"?: [...]}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Status {
    #[serde(default)]
    pub optime: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slots: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retain_slots: Option<Vec<String>>,
}

impl Status {
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Accepts the JSON form and the legacy bare integer.
    pub fn parse(text: &str) -> Option<Status> {
        if let Ok(n) = text.trim().parse::<u64>() {
            return Some(Status {
                optime: n,
                ..Default::default()
            });
        }
        serde_json::from_str(text).ok()
    }
}

/// The `failover` key. The candidate is stored under `member`; `{}` means "cleared".
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Failover {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub leader: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub member: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_at: Option<String>,
    #[serde(skip)]
    pub version: i64,
}

impl Failover {
    /// Parses JSON or the legacy `leader:candidate` text. `{}` and empty values give `None`.
    pub fn parse(text: &str, version: i64) -> Option<Failover> {
        let mut f: Failover = match serde_json::from_str(text) {
            Ok(f) => f,
            Err(_) => {
                let (l, m) = text.split_once(':')?;
                Failover {
                    leader: Some(l.to_string()).filter(|s| !s.is_empty()),
                    member: Some(m.to_string()).filter(|s| !s.is_empty()),
                    ..Default::default()
                }
            }
        };
        f.version = version;
        if f.leader.is_none() && f.member.is_none() && f.scheduled_at.is_none() {
            return None;
        }
        Some(f)
    }
}

/// The `sync` key.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SyncState {
    #[serde(default)]
    pub leader: Option<String>,
    #[serde(default)]
    pub sync_standby: Option<String>,
    #[serde(default)]
    pub quorum: u32,
    #[serde(skip)]
    pub version: i64,
}

/// Patroni's reading of `/sync` (`dcs.SyncState`). Names compare case-insensitively, as
/// PostgreSQL compares `synchronous_standby_names`.
impl SyncState {
    /// A key without a leader says nothing: no voters, no members, matches no name.
    pub fn is_empty(&self) -> bool {
        self.leader.as_deref().is_none_or(str::is_empty)
    }

    /// The standbys of `sync_standby`: split on commas, trimmed, blanks dropped; none when the
    /// key [`is_empty`](SyncState::is_empty).
    pub fn voters(&self) -> impl Iterator<Item = &str> {
        let list = if self.is_empty() {
            ""
        } else {
            self.sync_standby.as_deref().unwrap_or("")
        };
        split_names(list)
    }

    /// The leader, then the [`voters`](SyncState::voters); none when the key is empty.
    pub fn members(&self) -> impl Iterator<Item = &str> {
        let leader = if self.is_empty() {
            None
        } else {
            self.leader.as_deref()
        };
        leader.into_iter().chain(self.voters())
    }

    /// Whether `name` is one of the voters (with `check_leader`, or the leader).
    pub fn matches(&self, name: &str, check_leader: bool) -> bool {
        if name.is_empty() || self.is_empty() {
            return false;
        }
        let name = name.to_lowercase();
        let leader = self
            .leader
            .as_deref()
            .filter(|_| check_leader)
            .map(str::trim);
        self.voters()
            .chain(leader)
            .any(|n| n.to_lowercase() == name)
    }

    /// Whether `name` is the key's leader.
    pub fn leader_matches(&self, name: &str) -> bool {
        !name.is_empty()
            && !self.is_empty()
            && self
                .leader
                .as_deref()
                .is_some_and(|l| l.to_lowercase() == name.to_lowercase())
    }
}

/// Patroni's `SyncState._str_to_list`.
fn split_names(list: &str) -> impl Iterator<Item = &str> {
    list.split(',').map(str::trim).filter(|n| !n.is_empty())
}

/// One line of `/history`: `[timeline, switch_lsn, reason, timestamp, new_leader]`; older entries
/// may have only the first three or four items.
#[derive(Debug, Clone, PartialEq)]
pub struct HistoryLine {
    pub timeline: u32,
    pub lsn: u64,
    pub reason: String,
    pub timestamp: Option<String>,
    pub leader: Option<String>,
}

impl HistoryLine {
    pub fn to_value(&self) -> Value {
        let mut v = vec![
            Value::from(self.timeline),
            Value::from(self.lsn),
            Value::from(self.reason.clone()),
        ];
        if let Some(ts) = &self.timestamp {
            v.push(Value::from(ts.clone()));
            if let Some(l) = &self.leader {
                v.push(Value::from(l.clone()));
            }
        }
        Value::Array(v)
    }

    pub fn from_value(v: &Value) -> Option<HistoryLine> {
        let a = v.as_array()?;
        Some(HistoryLine {
            timeline: u32::try_from(a.first()?.as_u64()?).ok()?,
            lsn: a.get(1)?.as_u64()?,
            reason: a.get(2).and_then(Value::as_str).unwrap_or("").to_string(),
            timestamp: a.get(3).and_then(Value::as_str).map(str::to_string),
            leader: a.get(4).and_then(Value::as_str).map(str::to_string),
        })
    }

    /// The whole `/history` value, compact JSON.
    pub fn lines_to_json(lines: &[HistoryLine]) -> String {
        Value::Array(lines.iter().map(HistoryLine::to_value).collect()).to_string()
    }

    pub fn parse_lines(text: &str) -> Option<Vec<HistoryLine>> {
        let v: Value = serde_json::from_str(text).ok()?;
        Some(
            v.as_array()?
                .iter()
                .filter_map(HistoryLine::from_value)
                .collect(),
        )
    }
}

/// One consistent view of the cluster prefix (spec/dcs.md §2.4).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Cluster {
    /// `None`: key absent; `Some("")`: bootstrap in progress; else the system identifier.
    pub initialize: Option<String>,
    pub config: Option<ClusterConfig>,
    pub leader: Option<Leader>,
    pub status: Status,
    /// Sorted by name.
    pub members: Vec<Member>,
    pub failover: Option<Failover>,
    pub sync: Option<SyncState>,
    pub history: Option<Vec<HistoryLine>>,
    pub failsafe: Option<Map<String, Value>>,
    /// etcd revision this view reflects (0 for backends without one).
    pub revision: i64,
}

impl Cluster {
    /// Builds the view from `(key relative to the prefix, value, mod_revision, lease)` tuples,
    /// exactly as Patroni's readers do (lenient: invalid JSON is treated as empty).
    pub fn from_entries<'a>(
        entries: impl IntoIterator<Item = (&'a str, &'a str, i64, i64)>,
    ) -> Cluster {
        let mut c = Cluster::default();
        for (key, value, version, lease) in entries {
            match key {
                "initialize" => c.initialize = Some(value.to_string()),
                "config" => {
                    let data = serde_json::from_str::<Value>(value)
                        .ok()
                        .and_then(|v| v.as_object().cloned())
                        .unwrap_or_default();
                    c.config = Some(ClusterConfig { data, version });
                }
                "leader" => {
                    c.leader = Some(Leader {
                        name: value.to_string(),
                        version,
                        lease,
                    })
                }
                "status" => c.status = Status::parse(value).unwrap_or_default(),
                "optime/leader" => {
                    if c.status.optime == 0 {
                        c.status.optime = value.trim().parse().unwrap_or(0);
                    }
                }
                "failover" => c.failover = Failover::parse(value, version),
                "sync" => {
                    c.sync = serde_json::from_str::<SyncState>(value).ok().map(|mut s| {
                        s.version = version;
                        s
                    })
                }
                "history" => c.history = HistoryLine::parse_lines(value),
                "failsafe" => {
                    c.failsafe = serde_json::from_str::<Value>(value)
                        .ok()
                        .and_then(|v| v.as_object().cloned())
                }
                k => {
                    if let Some(name) = k.strip_prefix("members/") {
                        if !name.is_empty() && !name.contains('/') {
                            c.members.push(Member {
                                name: name.to_string(),
                                data: MemberData::parse(value),
                                version,
                                lease,
                            });
                        }
                    }
                }
            }
        }
        // A `status` key wins over the legacy optime key whatever the iteration order.
        c.members.sort_by(|a, b| a.name.cmp(&b.name));
        c
    }

    pub fn is_unlocked(&self) -> bool {
        self.leader.as_ref().is_none_or(|l| l.name.is_empty())
    }

    pub fn leader_name(&self) -> Option<&str> {
        self.leader
            .as_ref()
            .map(|l| l.name.as_str())
            .filter(|n| !n.is_empty())
    }

    pub fn member(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|m| m.name == name)
    }

    pub fn leader_member(&self) -> Option<&Member> {
        self.leader_name().and_then(|n| self.member(n))
    }

    /// Timeline the cluster is on according to `/history`: last line + 1, 1 for `[]`, 0 if absent.
    pub fn timeline(&self) -> u32 {
        match &self.history {
            None => 0,
            Some(lines) => lines.last().map_or(1, |l| l.timeline + 1),
        }
    }

    /// Whether `/config` has `pause: true`.
    pub fn is_paused(&self) -> bool {
        self.config
            .as_ref()
            .and_then(|c| c.data.get("pause"))
            .is_some_and(truthy)
    }

    /// Whether `/config` makes this a standby cluster ([`pgpilot_values::is_standby_cluster`]).
    pub fn is_standby_cluster(&self) -> bool {
        self.config
            .as_ref()
            .is_some_and(|c| pgpilot_values::is_standby_cluster(&c.data))
    }
}

/// Base path of a cluster: `/` + namespace + `/` + scope with duplicate slashes collapsed, plus a
/// trailing `/` (the prefix read in one range request).
pub fn cluster_prefix(namespace: &str, scope: &str) -> String {
    let joined = format!("/{namespace}/{scope}/");
    let mut out = String::with_capacity(joined.len());
    for ch in joined.chars() {
        if ch == '/' && out.ends_with('/') {
            continue;
        }
        out.push(ch);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sync(leader: Option<&str>, standbys: Option<&str>) -> SyncState {
        SyncState {
            leader: leader.map(str::to_string),
            sync_standby: standbys.map(str::to_string),
            ..Default::default()
        }
    }

    /// Patroni's `SyncState` doctests, plus the splitting of `_str_to_list`.
    #[test]
    fn sync_state_reads_like_patroni() {
        let s = sync(Some("foo"), Some("bar,zoo"));
        assert!(!s.matches("foo", false));
        assert!(s.matches("fOo", true));
        assert!(s.matches("Bar", false));
        assert!(s.matches("zoO", false));
        assert!(!s.matches("baz", false));
        assert!(!s.matches("", true));
        assert!(s.leader_matches("FOO"));
        assert!(!s.leader_matches("bar"));
        assert_eq!(s.voters().collect::<Vec<_>>(), ["bar", "zoo"]);
        assert_eq!(s.members().collect::<Vec<_>>(), ["foo", "bar", "zoo"]);

        // Blanks around names and empty entries are dropped; case is kept in the lists.
        let s = sync(Some("L"), Some(" a , ,B,, "));
        assert_eq!(s.voters().collect::<Vec<_>>(), ["a", "B"]);
        assert!(s.matches("A", false) && s.matches("b", false));
        assert!(!s.matches(" a", false));

        // A key without a leader is empty: it lists nobody.
        for s in [
            SyncState::default(),
            sync(None, Some("a,b")),
            sync(Some(""), Some("a,b")),
        ] {
            assert!(s.is_empty());
            assert_eq!(s.voters().count(), 0);
            assert_eq!(s.members().count(), 0);
            assert!(!s.matches("a", true));
            assert!(!s.leader_matches(""));
        }

        // A leader alone: no voters, matched only with check_leader.
        let s = sync(Some("l"), None);
        assert!(!s.is_empty());
        assert_eq!(s.voters().count(), 0);
        assert_eq!(s.members().collect::<Vec<_>>(), ["l"]);
        assert!(!s.matches("l", false) && s.matches("L", true));

        // Non-ASCII names compare as Python's str.lower() does.
        assert!(sync(Some("l"), Some("Ärzte")).matches("ärzte", false));
    }

    #[test]
    fn prefix_collapses_slashes() {
        assert_eq!(cluster_prefix("/service/", "batman"), "/service/batman/");
        assert_eq!(cluster_prefix("service", "batman"), "/service/batman/");
    }

    #[test]
    fn member_json_is_compact_and_ordered() {
        let m = MemberData {
            conn_url: "postgres://127.0.0.1:5432/postgres".into(),
            api_url: "http://127.0.0.1:8008/patroni".into(),
            state: "running".into(),
            role: "replica".into(),
            version: PATRONI_COMPAT_VERSION.into(),
            xlog_location: Some(67_108_960),
            replay_lsn: Some(67_108_960),
            receive_lsn: Some(67_108_960),
            replication_state: Some("streaming".into()),
            timeline: Some(1),
            ..Default::default()
        };
        assert_eq!(
            m.to_json(),
            r#"{"conn_url":"postgres://127.0.0.1:5432/postgres","api_url":"http://127.0.0.1:8008/patroni","state":"running","role":"replica","version":"4.1.4","xlog_location":67108960,"replay_lsn":67108960,"receive_lsn":67108960,"replication_state":"streaming","timeline":1}"#
        );
        assert_eq!(MemberData::parse(&m.to_json()), m);
        assert_eq!(m.host_port(), Some(("127.0.0.1".into(), 5432)));
    }

    #[test]
    fn failover_cleared_and_legacy() {
        assert_eq!(Failover::parse("{}", 3), None);
        let f = Failover::parse(r#"{"leader":"a","member":"b"}"#, 7).unwrap();
        assert_eq!(f.member.as_deref(), Some("b"));
        assert_eq!(f.version, 7);
        assert_eq!(
            serde_json::to_string(&f).unwrap(),
            r#"{"leader":"a","member":"b"}"#
        );
        let l = Failover::parse("a:b", 1).unwrap();
        assert_eq!(
            (l.leader.as_deref(), l.member.as_deref()),
            (Some("a"), Some("b"))
        );
    }

    #[test]
    fn history_round_trip() {
        let text = r#"[[1,25165984,"no recovery target specified","2024-08-28T19:39:26.352526+00:00","pg2"]]"#;
        let lines = HistoryLine::parse_lines(text).unwrap();
        assert_eq!(lines[0].timeline, 1);
        assert_eq!(HistoryLine::lines_to_json(&lines), text);
    }

    #[test]
    fn cluster_from_entries() {
        let c = Cluster::from_entries([
            ("initialize", "7301234567890123456", 5, 0),
            ("leader", "pg1", 9, 42),
            (
                "members/pg2",
                r#"{"role":"replica","state":"running"}"#,
                8,
                42,
            ),
            (
                "members/pg1",
                r#"{"role":"primary","state":"running"}"#,
                7,
                42,
            ),
            ("members/x/y", "{}", 1, 0),
            ("status", r#"{"optime":1234}"#, 10, 0),
            ("history", "[]", 11, 0),
            ("failover", "{}", 12, 0),
        ]);
        assert_eq!(c.members.len(), 2);
        assert_eq!(c.members[0].name, "pg1");
        assert_eq!(c.leader_member().unwrap().data.role, "primary");
        assert_eq!(c.status.optime, 1234);
        assert_eq!(c.timeline(), 1);
        assert!(c.failover.is_none());
        assert!(!c.is_unlocked());
    }

    #[test]
    fn status_legacy_integer() {
        assert_eq!(Status::parse("123").unwrap().optime, 123);
        assert_eq!(
            Status::parse(r#"{"optime":5,"slots":{"pg2":5}}"#)
                .unwrap()
                .to_json(),
            r#"{"optime":5,"slots":{"pg2":5}}"#
        );
    }
}

/// A deterministic fuzz of the parsers of what other agents (Patroni's included) write into
/// etcd: mutated documents never panic; they parse or are refused.
#[cfg(test)]
mod fuzz {
    use super::*;

    #[test]
    fn mutated_dcs_documents_never_panic() {
        let seeds = [
            r#"{"conn_url":"postgres://127.0.0.1:5432/postgres","api_url":"http://127.0.0.1:8008/patroni","state":"running","role":"replica","version":"4.1.4","xlog_location":123,"timeline":2,"tags":{"nofailover":false,"failover_priority":"2","nosync":"true","sync_priority":-1}}"#,
            r#"{"optime":67108960,"slots":{"pg_1":67108960,"logical":1},"retain_slots":["pg_1"]}"#,
            r#"{"leader":"pg-0","member":"pg-1","scheduled_at":"2026-12-03T16:00:00+00:00"}"#,
            r#"{"leader":"pg-0","sync_standby":"pg-1,pg-2","quorum":1}"#,
            r#"[[1,25165984,"no recovery target specified","2026-12-03T16:00:00+00:00","pg-0"],[2,3,"x"]]"#,
        ];
        let mut rng = pgpilot_values::fuzz::XorShift::new(0x2545_f491_4f6c_dd1du64);
        let mut next = move || rng.next_u64();
        let alphabet = b"{}[]\":,0123456789-.eE truefalsnul\\\xc3\xa9";
        for i in 0..pgpilot_values::fuzz::runs(20_000) {
            let mut doc = seeds[i % seeds.len()].as_bytes().to_vec();
            for _ in 0..(next() % 6) {
                let pos = (next() as usize) % (doc.len() + 1);
                match next() % 3 {
                    0 if pos < doc.len() => doc[pos] = alphabet[(next() as usize) % alphabet.len()],
                    1 => doc.insert(pos, alphabet[(next() as usize) % alphabet.len()]),
                    _ if pos < doc.len() => {
                        doc.remove(pos);
                    }
                    _ => {}
                }
            }
            let text = String::from_utf8_lossy(&doc);
            let m = MemberData::parse(&text);
            let _ = (m.nofailover(), m.failover_priority(), m.sync_priority());
            let _ = Status::parse(&text);
            let _ = Failover::parse(&text, 1);
            let _ = HistoryLine::parse_lines(&text);
            if let Ok(s) = serde_json::from_str::<SyncState>(&text) {
                let _ = (s.is_empty(), s.voters().count(), s.members().count());
                let _ = s.matches("pg-1", true);
            }
        }
    }
}
