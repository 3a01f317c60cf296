//! The agent over fakes: a scripted PostgreSQL ([`FakePg`]), peers answering from a table
//! ([`FakePeers`]) and the in-memory DCS, on a paused clock. No process is started. For the
//! fixes that live in the agent's own code rather than in a pure function of `decide` or `sync`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use pgpilot_config::Config;
use pgpilot_dcs::memory::{MemoryDcs, MemoryStore};
use pgpilot_dcs::{Cluster, Dcs, MemberData};
use pgpilot_postgres::{
    ControlData, CustomBootstrap, DataDirState, DesiredConfig, LogicalSlotState, Lsn, PgControl,
    PgError, PgSettings, PgState, ReplicaMethod, SlotChange, SlotInfo, StopMode, Upstream,
    WalSender,
};
use pgpilot_types::{NodeSnapshot, PeerStatus, Peers};
use serde_json::Value;
use tokio::sync::watch;

use super::Agent;

const SYSID: &str = "7311111111111111111";
const TTL: Duration = Duration::from_secs(30);

/// What the fake PostgreSQL is and what the agent did to it.
#[derive(Default)]
struct PgScript {
    /// A postmaster runs.
    running: bool,
    /// `pg_controldata`'s `Database cluster state`.
    control_state: String,
    /// The primary's flush LSN, and the checkpoint a stop writes.
    wal: u64,
    /// What `SELECT pg_last_wal_receive_lsn()` answers on each other member (by host).
    remote_wal: BTreeMap<String, u64>,
    /// Every configuration the agent wrote, in order.
    written: Vec<DesiredConfig>,
    stops: usize,
}

struct FakePg {
    settings: PgSettings,
    script: Mutex<PgScript>,
}

impl FakePg {
    fn new(cfg: &Config, script: PgScript) -> FakePg {
        FakePg {
            settings: crate::params::pg_settings(cfg),
            script: Mutex::new(script),
        }
    }

    fn script(&self) -> MutexGuard<'_, PgScript> {
        self.script.lock().unwrap()
    }
}

fn not_here<T>(what: &str) -> pgpilot_postgres::Result<T> {
    Err(PgError::Invalid(format!("{what}: not in this test")))
}

impl PgControl for FakePg {
    fn settings(&self) -> &PgSettings {
        &self.settings
    }

    fn data_dir_state(&self) -> DataDirState {
        DataDirState::Initialized
    }

    fn postmaster_pid(&self) -> Option<i32> {
        self.script().running.then_some(4242)
    }

    async fn controldata(&self) -> pgpilot_postgres::Result<ControlData> {
        let s = self.script();
        Ok(ControlData {
            system_identifier: SYSID.into(),
            state: s.control_state.clone(),
            timeline: 1,
            checkpoint_lsn: Lsn(s.wal),
            redo_lsn: Lsn(s.wal),
            ..Default::default()
        })
    }

    async fn initdb(&self, _options: &[String]) -> pgpilot_postgres::Result<()> {
        not_here("initdb")
    }

    async fn write_config(&self, desired: &DesiredConfig) -> pgpilot_postgres::Result<bool> {
        self.script().written.push(desired.clone());
        Ok(true)
    }

    async fn start(&self, _timeout: Duration) -> pgpilot_postgres::Result<()> {
        let mut s = self.script();
        s.running = true;
        s.control_state = "in production".into();
        Ok(())
    }

    async fn stop(&self, _mode: StopMode, _timeout: Duration) -> pgpilot_postgres::Result<()> {
        let mut s = self.script();
        s.running = false;
        s.control_state = "shut down".into();
        s.stops += 1;
        Ok(())
    }

    async fn kill_postmaster(&self, _timeout: Duration) -> pgpilot_postgres::Result<()> {
        self.script().running = false;
        Ok(())
    }

    async fn promote(&self, _timeout: Duration) -> pgpilot_postgres::Result<()> {
        not_here("promote")
    }

    async fn reload(&self) -> pgpilot_postgres::Result<()> {
        Ok(())
    }

    async fn remote_wal_position(&self, at: &Upstream) -> pgpilot_postgres::Result<u64> {
        match self.script().remote_wal.get(&at.host) {
            Some(lsn) => Ok(*lsn),
            None => Err(PgError::Sql(format!("{}: connection refused", at.host))),
        }
    }

    async fn remote_is_primary(&self, _at: &Upstream) -> pgpilot_postgres::Result<bool> {
        Ok(false)
    }

    async fn prepare_rewind_source(&self, _from: &Upstream) -> pgpilot_postgres::Result<()> {
        not_here("prepare_rewind_source")
    }

    async fn query_state(&self) -> pgpilot_postgres::Result<PgState> {
        let s = self.script();
        if !s.running {
            return Err(PgError::Sql("connection refused".into()));
        }
        let standby = |name: &str, lsn: u64| WalSender {
            usename: Some("replicator".into()),
            application_name: name.into(),
            client_addr: None,
            state: "streaming".into(),
            sync_state: "quorum".into(),
            sync_priority: 1,
            write_lsn: Some(Lsn(lsn)),
            flush_lsn: Some(Lsn(lsn)),
            replay_lsn: Some(Lsn(lsn)),
        };
        Ok(PgState {
            in_recovery: false,
            postmaster_start_time: "2026-01-01 00:00:00.000000+00:00".into(),
            server_version: 170000,
            timeline: 1,
            wal_flush_lsn: Some(Lsn(s.wal)),
            receive_lsn: None,
            replay_lsn: None,
            replay_timestamp: None,
            replay_paused: false,
            replication_state: None,
            latest_end_lsn: None,
            replication: s
                .remote_wal
                .iter()
                .map(|(name, lsn)| standby(name, *lsn))
                .collect(),
            synchronous_commit: "on".into(),
            pending_restart: BTreeMap::new(),
        })
    }

    async fn create_roles(&self) -> pgpilot_postgres::Result<()> {
        not_here("create_roles")
    }

    async fn run_post_bootstrap(&self, _command: &str) -> pgpilot_postgres::Result<()> {
        not_here("run_post_bootstrap")
    }

    async fn custom_bootstrap(&self, _b: &CustomBootstrap) -> pgpilot_postgres::Result<()> {
        not_here("custom_bootstrap")
    }

    async fn start_no_wait(&self) -> pgpilot_postgres::Result<()> {
        not_here("start_no_wait")
    }

    async fn wait_for_end_of_recovery(&self) -> pgpilot_postgres::Result<()> {
        not_here("wait_for_end_of_recovery")
    }

    async fn create_replica(
        &self,
        _methods: &[ReplicaMethod],
        _from: Option<&Upstream>,
        _basebackup: &[String],
    ) -> pgpilot_postgres::Result<String> {
        not_here("create_replica")
    }

    async fn rewind(&self, _from: &Upstream) -> pgpilot_postgres::Result<()> {
        not_here("rewind")
    }

    async fn list_slots(&self) -> pgpilot_postgres::Result<Vec<SlotInfo>> {
        Ok(Vec::new())
    }

    async fn change_slot(&self, _change: &SlotChange) -> pgpilot_postgres::Result<()> {
        Ok(())
    }

    async fn read_logical_slots(
        &self,
        _from: &Upstream,
        _names: &[String],
    ) -> pgpilot_postgres::Result<Vec<LogicalSlotState>> {
        Ok(Vec::new())
    }

    fn install_logical_slots(&self, _slots: &[LogicalSlotState]) -> pgpilot_postgres::Result<()> {
        Ok(())
    }

    async fn checkpoint(&self) -> pgpilot_postgres::Result<()> {
        Ok(())
    }

    async fn timeline_history(
        &self,
        _timeline: u32,
    ) -> pgpilot_postgres::Result<Vec<(u32, Lsn, String)>> {
        Ok(Vec::new())
    }

    async fn remove_data_dir(&self) -> pgpilot_postgres::Result<()> {
        not_here("remove_data_dir")
    }

    fn standby_signal(&self) -> bool {
        false
    }

    fn move_aside_failed(&self) {}

    async fn archive_shutdown_checkpoint(
        &self,
        _archive_command: &str,
    ) -> pgpilot_postgres::Result<String> {
        not_here("archive_shutdown_checkpoint")
    }
}

/// The other members' `GET /patroni`, by name.
#[derive(Default)]
struct FakePeers(BTreeMap<String, PeerStatus>);

impl Peers for FakePeers {
    async fn peer_status(
        &self,
        name: &str,
        _api_url: &str,
        _timeout: Duration,
    ) -> Option<PeerStatus> {
        self.0.get(name).cloned()
    }

    async fn answers(&self, _api_url: &str, _timeout: Duration) -> bool {
        false
    }

    async fn post_failsafe(&self, _api_url: &str, _body: &Value, _timeout: Duration) -> bool {
        false
    }
}

fn replica_peer(name: &str, wal: u64) -> PeerStatus {
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

/// The local configuration of `name` (no watchdog, no guard, a data directory that does not
/// exist: nothing is read from or written to disk).
fn config(name: &str) -> Config {
    let doc = format!(
        "name: {name}\nscope: c\netcd3: {{host: '127.0.0.1:2379'}}\n\
         restapi: {{listen: '127.0.0.1:8008', connect_address: '{name}:8008'}}\n\
         postgresql: {{listen: '127.0.0.1:5432', connect_address: '{name}:5432', \
         data_dir: /nonexistent/pgpilot-agent-tests/{name}, \
         authentication: {{superuser: {{username: p}}, replication: {{username: r}}}}}}\n\
         watchdog: {{mode: 'off'}}\n"
    );
    let env = vec![("PATRONI_CONFIGURATION".to_string(), doc)];
    pgpilot_config::load(None, &env).unwrap().config
}

/// A cluster of pg1 (holding the leader key), pg2 and pg3 in `synchronous_mode` `mode`, with
/// `/sync` led by pg1 listing pg2 and pg3 (quorum 1). Returns pg1's DCS client and a reader.
async fn cluster_led_by_pg1(store: &MemoryStore, mode: &str) -> (Arc<MemoryDcs>, MemoryDcs) {
    let dcs = Arc::new(MemoryDcs::new(store.clone(), "/service", "c", "pg1", TTL));
    assert!(dcs.attempt_to_acquire_leader().await.unwrap());
    assert!(dcs.initialize(true, SYSID).await.unwrap());
    let config = format!(
        r#"{{"ttl": 30, "loop_wait": 10, "retry_timeout": 10, "synchronous_mode": "{mode}"}}"#
    );
    assert!(dcs.set_config(&config, None).await.unwrap());
    let sync = r#"{"leader": "pg1", "sync_standby": "pg2,pg3", "quorum": 1}"#;
    assert!(dcs.set_sync(sync, None).await.unwrap());
    for name in ["pg2", "pg3"] {
        let member = MemoryDcs::new(store.clone(), "/service", "c", name, TTL);
        let data = MemberData {
            conn_url: format!("postgres://{name}:5432/postgres"),
            api_url: format!("http://{name}:8008/patroni"),
            state: "running".into(),
            role: "replica".into(),
            timeline: Some(1),
            ..Default::default()
        };
        member.touch_member(&data).await.unwrap();
    }
    let reader = MemoryDcs::new(store.clone(), "/service", "c", "reader", TTL);
    (dcs, reader)
}

type TestAgent = Agent<MemoryDcs, FakePeers, FakePg>;

fn agent(
    dcs: Arc<MemoryDcs>,
    script: PgScript,
    peers: FakePeers,
) -> (TestAgent, Arc<FakePg>, watch::Receiver<Arc<NodeSnapshot>>) {
    let cfg = config("pg1");
    let pg = Arc::new(FakePg::new(&cfg, script));
    let (tx, rx) = watch::channel(Arc::new(NodeSnapshot::starting("pg1", "c")));
    let agent = Agent::new(cfg, dcs, pg.clone(), Arc::new(peers), tx);
    (agent, pg, rx)
}

/// K2 (the simulation's seed 3177): a primary whose agent restarted (a member crash) comes back
/// through "starting primary after failure"; the first configuration it writes must take
/// `synchronous_standby_names` from the `/sync` key it leads, not from the agent's memory
/// (empty after the restart: PostgreSQL would acknowledge commits alone while `/sync` still
/// lets a voter win a race without them). In every synchronous mode.
#[tokio::test(start_paused = true)]
async fn k2_restarted_primary_starts_with_the_ssn_of_its_sync_key() {
    for (mode, want) in [("quorum", "ANY 1 (pg2,pg3)"), ("on", "2 (pg2,pg3)")] {
        let store = MemoryStore::new();
        let (dcs, _reader) = cluster_led_by_pg1(&store, mode).await;
        let script = PgScript {
            running: false,
            control_state: "in production".into(),
            wal: 1000,
            ..Default::default()
        };
        let (mut agent, pg, _rx) = agent(dcs, script, FakePeers::default());
        let msg = agent.run_cycle().await.unwrap();
        assert_eq!(msg, "starting primary after failure", "{mode}");
        let s = pg.script();
        let first = s.written.first().expect("a configuration was written");
        assert!(first.standby.is_none(), "{mode}: started as a primary");
        assert_eq!(
            first
                .parameters
                .get("synchronous_standby_names")
                .map(String::as_str),
            Some(want),
            "K2 ({mode}): the restarted primary must start with the ssn its /sync key promises"
        );
    }
}

/// A switchover from pg1 to pg3 in quorum mode, pg3's server at `pg3_lsn` when asked over SQL
/// (its `/patroni` says 1000, the leader's position): one leader cycle. Returns the agent (for
/// the next cycle), its PostgreSQL, and the DCS as it is then.
async fn switchover_to_pg3(pg3_lsn: u64) -> (TestAgent, Arc<FakePg>, Cluster) {
    let store = MemoryStore::new();
    let (dcs, reader) = cluster_led_by_pg1(&store, "quorum").await;
    let failover = r#"{"leader": "pg1", "member": "pg3"}"#;
    assert!(dcs.set_failover(failover, None).await.unwrap());
    let script = PgScript {
        running: true,
        control_state: "in production".into(),
        wal: 1000,
        remote_wal: BTreeMap::from([("pg2".into(), 1000), ("pg3".into(), pg3_lsn)]),
        ..Default::default()
    };
    let peers = FakePeers(BTreeMap::from([
        ("pg2".into(), replica_peer("pg2", 1000)),
        ("pg3".into(), replica_peer("pg3", 1000)),
    ]));
    let (mut agent, pg, _rx) = agent(dcs, script, peers);
    let msg = agent.run_cycle().await.unwrap();
    assert_eq!(msg, "switchover: demoting myself");
    assert_eq!(
        pg.script().stops,
        1,
        "PostgreSQL was stopped for the switchover"
    );
    (agent, pg, reader.cluster().await.unwrap())
}

/// K6 (the simulation's seed 2863): in a synchronous mode a graceful demotion for a switchover
/// keeps the leader key (and PostgreSQL starts again as primary next cycle) when no candidate
/// received the shutdown checkpoint: here the named candidate pg3 is a `/sync` voter whose
/// `/patroni` still shows a position within `maximum_lag_on_failover`, but its server, asked
/// over SQL, never gets the checkpoint. Releasing the key let it promote without commits
/// acknowledged by another voter.
#[tokio::test(start_paused = true)]
async fn k6_switchover_keeps_the_key_when_the_candidate_misses_the_shutdown_checkpoint() {
    let (mut agent, _pg, c) = switchover_to_pg3(900).await;
    assert_eq!(
        c.leader_name(),
        Some("pg1"),
        "K6: the leader key must stay with pg1 when the candidate did not receive the \
         shutdown checkpoint"
    );
    assert!(
        c.failover.as_ref().is_none_or(|f| f.member.is_none()),
        "the switchover request is dropped: {:?}",
        c.failover
    );
    // The next cycle starts PostgreSQL again as the primary, under the key it kept.
    let msg = agent.run_cycle().await.unwrap();
    assert_eq!(msg, "starting primary after failure");

    // The same switchover to a candidate that received the checkpoint releases the key.
    let (_agent, _pg, c) = switchover_to_pg3(1000).await;
    assert_eq!(
        c.leader_name(),
        None,
        "the key goes to a caught-up candidate"
    );
}
