//! One chaos run: for each mode a fresh cluster, the bank workload, the faults one after
//! another (each followed by a bounded wait for recovery), then the check on the final leader.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use pgpilot_dcs::{SyncMode, SyncState};
use serde_json::{json, Value};

use crate::analysis;
use crate::config::{Config, Fault, Mode};
use crate::faults::{self, Outcome};
use crate::harness::{self, Cluster, Options};
use crate::netns::{Netns, Proxies};
use crate::report::{secs, Report, RunResult};
use crate::workload::{self, Bank, INITIAL_BALANCE};

/// Members per cluster.
const MEMBERS: usize = 3;
/// etcd members of each chaos cluster.
const ETCD_MEMBERS: usize = 3;
/// Upper bound for bootstrap (initdb + 2 clones) on a slow shared machine.
const BOOTSTRAP_TIMEOUT: Duration = Duration::from_secs(180);
/// Workload time before the first fault and after the last one.
const SETTLE: Duration = Duration::from_secs(3);
/// Lines of each agent log printed when a fault did not recover.
const LOG_TAIL: usize = 40;

/// What must happen in the process before the async runtime starts (single-threaded): the
/// agent binary handed to the harness, the netns helper forked while still root, then the
/// harness's privilege drop (as root, to the user `pgpilot`).
pub struct Prepared {
    netns: Option<Netns>,
}

/// Prepares the process for [`run`]. Call it once, first, before any thread is started.
pub fn prepare(cfg: &Config) -> anyhow::Result<Prepared> {
    anyhow::ensure!(
        cfg.agent.is_file(),
        "the agent binary {} does not exist; build it with `cargo build -p pgpilot --bin pgpilot` \
         or name it with --agent / PGPILOT_CHAOS_AGENT",
        cfg.agent.display()
    );
    // The harness reads these: the agent to run (copied to a world-readable place as root) and
    // whether Drop keeps the cluster directory. Single-threaded here, so setting them is sound.
    std::env::set_var("PGPILOT_TEST_AGENT", &cfg.agent);
    if cfg.keep_dir {
        std::env::set_var("PGPILOT_KEEP_TEST_DIR", "1");
    }
    let netns = if cfg.faults.contains(&Fault::Partition) {
        match Netns::prepare(MEMBERS) {
            Ok(n) => Some(n),
            Err(why) => {
                eprintln!("chaos: the partition fault will be skipped: {why}");
                None
            }
        }
    } else {
        None
    };
    harness::init();
    Ok(Prepared { netns })
}

/// Runs every mode of `cfg` and returns what was found. A mode that fails (cluster did not
/// start or recover) is recorded in [`Report::tool_errors`] and the next mode runs.
pub async fn run(cfg: &Config, prepared: &Prepared) -> Report {
    let mut report = Report::default();
    for &mode in &cfg.modes {
        if let Err(e) = run_mode(cfg, mode, prepared.netns.as_ref(), &mut report).await {
            eprintln!("chaos: [{mode}] FAILED: {e:#}");
            report.tool_errors.push(format!("{mode}: {e:#}"));
        }
    }
    report
}

/// One fault injection's span of time.
struct Span {
    fault: Fault,
    start: Instant,
    skipped: Option<String>,
}

async fn run_mode(
    cfg: &Config,
    mode: Mode,
    netns: Option<&Netns>,
    report: &mut Report,
) -> anyhow::Result<()> {
    let mut options = Options {
        scope: "pgpilot-chaos".into(),
        ttl: cfg.ttl,
        loop_wait: cfg.loop_wait,
        retry_timeout: cfg.retry_timeout,
        customize: Some(Arc::new(move |_, doc: &mut Value| {
            mode.apply(&mut doc["bootstrap"]["dcs"]);
        })),
        // Three etcd members, as production runs them (and as etcd-member-loss needs).
        etcd_members: ETCD_MEMBERS,
        ..Options::default()
    };
    // With network namespaces (see crate::netns): agents started through a wrapper that enters
    // their namespace, configurations moved to the members' addresses, proxies so that etcd is
    // reachable from the members and the members from here on the harness's usual addresses.
    // Declared before the cluster: dropped after it.
    let mut proxies = Proxies::new();
    let wrapper_dir = tempfile::Builder::new()
        .prefix("pgpilot-chaos-")
        .tempdir()
        .context("create a temporary directory")?;
    if let Some(n) = netns {
        let ips: Vec<Ipv4Addr> = (0..MEMBERS).map(|i| n.member_ip(i)).collect();
        let bridge = n.bridge_ip();
        options.agent = Some(n.agent_wrapper(wrapper_dir.path(), &harness::agent_bin())?);
        options.customize = Some(Arc::new(move |i, doc: &mut Value| {
            mode.apply(&mut doc["bootstrap"]["dcs"]);
            into_namespace(doc, ips[i], bridge);
        }));
    }
    eprintln!("chaos: [{mode}] starting etcd and {MEMBERS} members");
    let cluster = tokio::task::block_in_place(|| Cluster::new(MEMBERS, options));
    if let Some(n) = netns {
        let local = |port| SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        for endpoint in cluster.etcd.endpoints() {
            let etcd_port: u16 = endpoint
                .rsplit_once(':')
                .and_then(|(_, p)| p.parse().ok())
                .context("etcd endpoint without a port")?;
            proxies
                .forward(
                    SocketAddr::from((n.bridge_ip(), etcd_port)),
                    local(etcd_port),
                )
                .await?;
        }
        for i in 0..MEMBERS {
            let m = cluster.member(i);
            for port in [m.pg_port, m.api_port] {
                proxies
                    .forward(local(port), SocketAddr::from((n.member_ip(i), port)))
                    .await?;
            }
        }
    }
    for i in 0..MEMBERS {
        cluster.start_agent(i);
    }
    eprintln!(
        "chaos: [{mode}] cluster directory {}",
        cluster.dir().display()
    );
    let started = Instant::now();
    let leader = wait_recovered(&cluster, None, started, BOOTSTRAP_TIMEOUT)
        .await
        .context("bootstrap")?;
    eprintln!(
        "chaos: [{mode}] bootstrapped in {} (leader {})",
        secs(started.elapsed()),
        cluster.member(leader).name
    );
    workload::create_schema(&cluster, leader, cfg.accounts).await?;
    let ports: Vec<u16> = (0..MEMBERS).map(|i| cluster.member(i).pg_port).collect();
    let bank = Bank::start(&ports, cfg.clients, cfg.accounts);
    tokio::time::sleep(SETTLE).await;

    let mut spans: Vec<Span> = Vec::new();
    let result = faults_in_turn(cfg, mode, &cluster, &bank, netns, &mut spans).await;
    if result.is_ok() {
        tokio::time::sleep(SETTLE).await;
    }
    let log = bank.stop().await;

    // The check on the final leader. After a failed recovery the replicas may still be broken:
    // a running primary holding the leader key is enough to count.
    let checked = async {
        let leader = if result.is_ok() {
            wait_recovered(&cluster, None, Instant::now(), cfg.recovery_timeout).await?
        } else {
            wait_primary(&cluster, cfg.recovery_timeout).await?
        };
        workload::read_ledger(&cluster, leader).await
    };
    let ledger = match checked.await {
        Ok(l) => Some(l),
        Err(e) => {
            report
                .tool_errors
                .push(format!("{mode}: can not read the final ledger: {e:#}"));
            None
        }
    };
    let expected = i64::from(cfg.accounts) * INITIAL_BALANCE;
    if let Some(l) = &ledger {
        if l.total_balance != expected {
            report.corruption.push(format!(
                "{mode}: total balance {} instead of {expected}",
                l.total_balance
            ));
        }
    }

    // Attribute every event to the span it happened in.
    let span_of = |t: Instant| spans.iter().rposition(|s| s.start <= t).unwrap_or(0);
    let windows = analysis::split_brain_windows(&log.acks);
    let sampled = analysis::split_brain_windows(&log.probes);
    for (ws, seen) in [(&windows, "client writes"), (&sampled, "probes")] {
        for w in ws {
            eprintln!(
                "chaos: [{mode}] SPLIT BRAIN ({seen}): {} kept accepting writes for {} after {} \
                 had started",
                cluster.member(w.old).name,
                secs(w.length),
                cluster.member(w.new).name
            );
        }
    }
    let present = |id: &str| ledger.as_ref().is_some_and(|l| l.transfer_ids.contains(id));
    let mut rows: Vec<RunResult> = spans
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let end = spans
                .get(i + 1)
                .map(|n| n.start)
                .unwrap_or_else(Instant::now);
            RunResult {
                fault: s.fault,
                mode,
                skipped: s.skipped.clone(),
                acked: 0,
                lost: Vec::new(),
                indeterminate: 0,
                indeterminate_present: 0,
                windows: Vec::new(),
                sampled: Vec::new(),
                recovery: analysis::recovery_time(&log.acks, &log.failures, s.start, end),
            }
        })
        .collect();
    if !rows.is_empty() {
        for a in &log.acks {
            let row = &mut rows[span_of(a.acked)];
            row.acked += 1;
            if ledger.is_some() && !present(&a.id) {
                row.lost.push(a.id.clone());
            }
        }
        for (id, t) in &log.indeterminate {
            let row = &mut rows[span_of(*t)];
            row.indeterminate += 1;
            if present(id) {
                row.indeterminate_present += 1;
            }
        }
        for w in &windows {
            rows[span_of(w.start)].windows.push(w.length);
        }
        for w in &sampled {
            rows[span_of(w.start)].sampled.push(w.length);
        }
    }
    let unique: HashSet<&str> = log.acks.iter().map(|a| a.id.as_str()).collect();
    eprintln!(
        "chaos: [{mode}] done: {} transfers acknowledged ({} unique), {} lost, {} indeterminate",
        log.acks.len(),
        unique.len(),
        rows.iter().map(|r| r.lost.len()).sum::<usize>(),
        log.indeterminate.len()
    );
    report.runs.extend(rows);
    result
}

/// Every fault of `cfg`, `cfg.rounds` times each, one after another on the current leader.
async fn faults_in_turn(
    cfg: &Config,
    mode: Mode,
    cluster: &Cluster,
    bank: &Bank,
    netns: Option<&Netns>,
    spans: &mut Vec<Span>,
) -> anyhow::Result<()> {
    for &fault in &cfg.faults {
        for round in 1..=cfg.rounds {
            let leader = wait_recovered(cluster, None, Instant::now(), cfg.recovery_timeout)
                .await
                .context("before the fault")?;
            let name = cluster.member(leader).name.clone();
            let tag = format!("[{mode}] {fault} {round}/{}", cfg.rounds);
            eprintln!("chaos: {tag}: on leader {name}");
            let start = Instant::now();
            spans.push(Span {
                fault,
                start,
                skipped: None,
            });
            let outcome = faults::inject(fault, round, cluster, leader, cfg, netns)
                .await
                .with_context(|| format!("{tag}: injecting"));
            match outcome {
                Ok(Outcome::Injected) => {}
                Ok(Outcome::Skipped(why)) => {
                    eprintln!("chaos: {tag}: skipped: {why}");
                    if let Some(s) = spans.last_mut() {
                        s.skipped = Some(why);
                    }
                    break;
                }
                Err(e) => {
                    print_logs(cluster);
                    return Err(e);
                }
            }
            let injected = start.elapsed();
            let after = Instant::now();
            match wait_recovered(cluster, Some(bank), after, cfg.recovery_timeout).await {
                Ok(new_leader) => {
                    let log = bank.snapshot();
                    let gap =
                        analysis::recovery_time(&log.acks, &log.failures, start, Instant::now());
                    eprintln!(
                        "chaos: {tag}: fault lasted {}, recovered {} later; leader {}; write gap {}",
                        secs(injected),
                        secs(after.elapsed()),
                        cluster.member(new_leader).name,
                        gap.map_or("none".into(), secs)
                    );
                }
                Err(e) => {
                    print_logs(cluster);
                    bail!("{tag}: the cluster did not recover: {e:#}");
                }
            }
        }
    }
    Ok(())
}

/// Waits until one member holds the leader key and runs as primary, the others run as streaming
/// replicas, and (with `bank`) a transfer was acknowledged after `since`. Returns the leader.
async fn wait_recovered(
    cluster: &Cluster,
    bank: Option<&Bank>,
    since: Instant,
    timeout: Duration,
) -> anyhow::Result<usize> {
    let start = Instant::now();
    loop {
        let mut seen = Vec::new();
        let leader = tokio::task::block_in_place(|| cluster.leader_index());
        let mut primary_ok = false;
        let mut streaming = 0;
        for i in 0..cluster.len() {
            let name = &cluster.member(i).name;
            if !cluster.agent_running(i) {
                seen.push(format!("{name}: agent not running"));
                continue;
            }
            match cluster.patroni(i).await {
                Ok(st) => {
                    seen.push(format!(
                        "{name}: {}/{}/{}",
                        st["role"], st["state"], st["replication_state"]
                    ));
                    let running = st["state"] == "running";
                    if Some(i) == leader && st["role"] == "primary" && running {
                        primary_ok = true;
                    } else if st["role"] == "replica"
                        && running
                        && st["replication_state"] == "streaming"
                    {
                        streaming += 1;
                    }
                }
                Err(e) => seen.push(format!("{name}: {e:#}")),
            }
        }
        let acked = bank.is_none_or(|b| b.acked_since(since));
        // In synchronous modes the cluster is whole again only once `/sync` names a standby
        // of the new leader: until then no failover is possible, by design.
        let protected = leader.is_some_and(|l| {
            tokio::task::block_in_place(|| sync_settled(cluster, &cluster.member(l).name))
        });
        if !protected {
            seen.push("/sync names no standby of the leader yet".into());
        }
        if let (Some(l), true, true, true, true) = (
            leader,
            primary_ok,
            streaming == cluster.len() - 1,
            acked,
            protected,
        ) {
            return Ok(l);
        }
        if start.elapsed() > timeout {
            bail!(
                "not recovered within {timeout:?}: leader key {:?}; {}; {}",
                leader.map(|l| cluster.member(l).name.clone()),
                seen.join("; "),
                if acked {
                    "writes acknowledged"
                } else {
                    "no write acknowledged since the fault"
                }
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Without synchronous mode in `/config`: true. With it: `/sync` names `leader` and at least
/// one standby.
fn sync_settled(cluster: &Cluster, leader: &str) -> bool {
    sync_standbys(cluster, leader).is_none_or(|s| !s.is_empty())
}

/// `None` without synchronous mode in `/config`; else the standbys `/sync` lists for `leader`
/// (empty when it names another leader or none).
pub(crate) fn sync_standbys(cluster: &Cluster, leader: &str) -> Option<Vec<String>> {
    let config: Value = cluster
        .etcd_try_get("config")
        .and_then(|c| serde_json::from_str(&c).ok())
        .unwrap_or_default();
    if !SyncMode::from_value(config.get("synchronous_mode")).is_active() {
        return None;
    }
    let sync: SyncState = cluster
        .etcd_try_get("sync")
        .and_then(|c| serde_json::from_str(&c).ok())
        .unwrap_or_default();
    if !sync.leader_matches(leader) {
        return Some(Vec::new());
    }
    Some(sync.voters().map(str::to_string).collect())
}

/// Waits until the member holding the leader key reports a running primary; returns it.
async fn wait_primary(cluster: &Cluster, timeout: Duration) -> anyhow::Result<usize> {
    let start = Instant::now();
    loop {
        if let Some(l) = tokio::task::block_in_place(|| cluster.leader_index()) {
            if let Ok(st) = cluster.patroni(l).await {
                if st["role"] == "primary" && st["state"] == "running" {
                    return Ok(l);
                }
            }
        }
        if start.elapsed() > timeout {
            bail!("no running primary holding the leader key within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// The tail of every agent log, for a fault that did not recover.
fn print_logs(cluster: &Cluster) {
    for i in 0..cluster.len() {
        let m = cluster.member(i);
        eprintln!(
            "---- {} agent log {} (last {LOG_TAIL} lines) ----\n{}",
            m.name,
            m.log_path.display(),
            harness::log_tail(&m.log_path, LOG_TAIL)
        );
    }
}

/// Moves one member's configuration from 127.0.0.1 to its namespace: PostgreSQL and the REST API
/// on `member`, etcd through the proxy on `bridge`, and `pg_hba.conf` open to the bridge's
/// subnet (peers replicate from there; this process's proxies connect from `bridge`).
fn into_namespace(doc: &mut Value, member: Ipv4Addr, bridge: Ipv4Addr) {
    let on = |v: &Value, ip: Ipv4Addr| {
        v.as_str()
            .map(|s| json!(s.replace("127.0.0.1", &ip.to_string())))
    };
    for section in ["postgresql", "restapi"] {
        for key in ["listen", "connect_address"] {
            if let Some(v) = on(&doc[section][key], member) {
                doc[section][key] = v;
            }
        }
    }
    if let Some(hosts) = doc["etcd3"]["hosts"].as_array_mut() {
        for h in hosts.iter_mut() {
            if let Some(v) = on(h, bridge) {
                *h = v;
            }
        }
    }
    // The endpoints are this process's proxies: the addresses etcd advertises (127.0.0.1)
    // mean nothing inside the namespace.
    doc["etcd3"]["use_proxies"] = json!(true);
    let [a, b, c, _] = bridge.octets();
    let subnet = format!("{a}.{b}.{c}.0/24");
    if let Some(hba) = doc["postgresql"]["pg_hba"].as_array_mut() {
        hba.push(json!(format!("host all all {subnet} md5")));
        hba.push(json!(format!("host replication all {subnet} md5")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_moves_into_its_namespace() {
        let mut doc = json!({
            "postgresql": {
                "listen": "127.0.0.1:5432",
                "connect_address": "127.0.0.1:5432",
                "pg_hba": ["local all all trust"],
            },
            "restapi": { "listen": "127.0.0.1:8008", "connect_address": "127.0.0.1:8008" },
            "etcd3": { "hosts": ["127.0.0.1:2379"] },
        });
        into_namespace(
            &mut doc,
            Ipv4Addr::new(169, 254, 100, 11),
            Ipv4Addr::new(169, 254, 100, 1),
        );
        assert_eq!(doc["postgresql"]["listen"], "169.254.100.11:5432");
        assert_eq!(doc["restapi"]["connect_address"], "169.254.100.11:8008");
        assert_eq!(doc["etcd3"]["hosts"][0], "169.254.100.1:2379");
        assert_eq!(
            doc["postgresql"]["pg_hba"][2],
            "host replication all 169.254.100.0/24 md5"
        );
    }
}
