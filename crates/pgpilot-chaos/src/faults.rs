//! The faults, each injected on the current leader while the workload runs. Every function
//! returns once the fault is over (the process resumed, the agent started again, the storm
//! done); recovery is then awaited by the caller ([`crate::run`]).
//!
//! As root the whole process runs as the unprivileged user `pgpilot` by the time faults run
//! (the harness dropped privileges so that PostgreSQL accepts to start): the agents, their
//! PostgreSQL and etcd are that user's processes, so signals and `pg_ctl` work as that user.
//! Only the network partition needs root, and goes through the helper in [`crate::netns`].

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};
use nix::sys::signal::Signal;
use serde_json::json;

use crate::config::{Config, Fault};
use crate::harness::{self, Cluster, PG_BIN_DIR};
use crate::netns::Netns;

/// How many switchovers one `switchover-storm` does.
const SWITCHOVERS: usize = 3;
/// Pause between two polls of the cluster state.
const POLL: Duration = Duration::from_millis(250);

/// What happened to one injection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Injected,
    /// Not run, with the reason (printed and shown in the report).
    Skipped(String),
}

/// Injects `fault` on member `leader` and returns when the fault itself is over.
pub async fn inject(
    fault: Fault,
    round: usize,
    cluster: &Cluster,
    leader: usize,
    cfg: &Config,
    netns: Option<&Netns>,
) -> anyhow::Result<Outcome> {
    // Longer than ttl: the leader key expires while the fault lasts.
    let hold = Duration::from_secs(cfg.ttl + 10);
    match fault {
        Fault::Kill9 => kill9(cluster, leader, cfg).await?,
        Fault::FreezeAgent => {
            let pid = cluster
                .agent_pid(leader)
                .context("the leader's agent is not running")?;
            let _resume = Resume(pid);
            harness::signal(pid, Signal::SIGSTOP);
            tokio::time::sleep(hold).await;
        }
        Fault::PgImmediate => pg_stop_immediate(cluster, leader)?,
        Fault::RmDatadir => {
            let dir = &cluster.member(leader).data_dir;
            // PostgreSQL may write files while they go: retry a few times.
            let mut last = None;
            for _ in 0..5 {
                match std::fs::remove_dir_all(dir) {
                    Ok(()) => {
                        last = None;
                        break;
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        last = None;
                        break;
                    }
                    Err(e) => last = Some(e),
                }
            }
            if let Some(e) = last {
                bail!("remove {}: {e}", dir.display());
            }
            // The fault lasts until the member has a data directory again (its agent stopped
            // the orphaned postmaster and cloned a new copy): until then its old postmaster may
            // still look like a healthy primary from outside.
            let deadline = Instant::now() + cfg.recovery_timeout;
            while !dir.join("PG_VERSION").exists() || !dir.join("global/pg_control").exists() {
                ensure!(
                    Instant::now() < deadline,
                    "{} was not re-created within {:?}",
                    dir.display(),
                    cfg.recovery_timeout
                );
                tokio::time::sleep(POLL).await;
            }
        }
        Fault::EtcdStop => {
            cluster.etcd.pause();
            tokio::time::sleep(hold).await;
            cluster.etcd.resume();
        }
        Fault::EtcdMemberLoss => {
            if cluster.etcd.len() < 3 {
                return Ok(Outcome::Skipped(format!(
                    "needs 3 etcd members, the cluster has {}",
                    cluster.etcd.len()
                )));
            }
            let victim = round.saturating_sub(1) % cluster.etcd.len();
            eprintln!(
                "chaos: killing etcd member {victim} ({})",
                cluster.etcd.member_endpoint(victim)
            );
            cluster.etcd.kill_member(victim);
            tokio::time::sleep(hold).await;
            tokio::task::block_in_place(|| cluster.etcd.restart_member(victim));
        }
        Fault::Partition => {
            let Some(netns) = netns else {
                return Ok(Outcome::Skipped(crate::netns::unavailable_reason()));
            };
            netns.partition(leader)?;
            let healed = async {
                tokio::time::sleep(hold).await;
                netns.heal(leader)
            };
            healed.await?;
        }
        Fault::SwitchoverStorm => switchover_storm(cluster, cfg).await?,
        Fault::RestartStorm => restart_storm(cluster, leader).await?,
    }
    Ok(Outcome::Injected)
}

/// SIGCONT on drop: a frozen agent never stays frozen, even when the tool fails.
struct Resume(i32);

impl Drop for Resume {
    fn drop(&mut self) {
        harness::signal(self.0, Signal::SIGCONT);
    }
}

/// SIGKILL the leader's agent and postmaster, wait until another member holds the leader key,
/// start the agent again (it rejoins as a replica).
async fn kill9(cluster: &Cluster, leader: usize, cfg: &Config) -> anyhow::Result<()> {
    tokio::task::block_in_place(|| {
        cluster.kill_agent(leader);
        cluster.kill_postmaster(leader);
    });
    let start = Instant::now();
    let result = loop {
        match cluster.leader_index() {
            Some(l) if l != leader => break Ok(()),
            _ if start.elapsed() > cfg.recovery_timeout => {
                break Err(anyhow::anyhow!(
                    "no other member took the leader key within {:?}",
                    cfg.recovery_timeout
                ))
            }
            _ => tokio::time::sleep(POLL).await,
        }
    };
    // Started again in any case: a stopped member would only hide the failure's cause.
    cluster.start_agent(leader);
    result
}

/// `pg_ctl stop -m immediate` on the leader's data directory, as this (unprivileged) process,
/// then a wait until that postmaster is gone. pg_ctl's own wait (`-w`) watches
/// `postmaster.pid`, which the agent may have written again for a new postmaster before pg_ctl
/// looked (it restarts a crashed primary within a tenth of a second): pg_ctl then reports
/// "server does not shut down" for a server that did.
fn pg_stop_immediate(cluster: &Cluster, leader: usize) -> anyhow::Result<()> {
    let m = cluster.member(leader);
    let pid = cluster
        .postmaster_pid(leader)
        .context("the leader has no postmaster to stop")?;
    let mut cmd = Command::new(std::path::Path::new(PG_BIN_DIR).join("pg_ctl"));
    cmd.arg("stop")
        .arg("-D")
        .arg(&m.data_dir)
        .args(["-m", "immediate", "-W"]);
    harness::clean_env(&mut cmd, &m.dir);
    let out = tokio::task::block_in_place(|| cmd.stdin(Stdio::null()).output())
        .context("run pg_ctl stop -m immediate")?;
    ensure!(
        out.status.success(),
        "pg_ctl stop -m immediate failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let asked = Instant::now();
    while harness::pid_alive(pid) {
        ensure!(
            asked.elapsed() < Duration::from_secs(30),
            "postmaster {pid} still runs 30 s after pg_ctl stop -m immediate"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(())
}

/// The member names that report themselves a streaming replica.
async fn streaming_replicas(cluster: &Cluster) -> Vec<usize> {
    let mut out = Vec::new();
    for i in 0..cluster.len() {
        if let Ok(st) = cluster.patroni(i).await {
            if st["role"] == "replica"
                && st["state"] == "running"
                && st["replication_state"] == "streaming"
            {
                out.push(i);
            }
        }
    }
    out
}

/// [`SWITCHOVERS`] switchovers, each to a streaming replica as soon as the previous candidate
/// runs as primary (`pgpilotctl switchover --force` sends the same request).
async fn switchover_storm(cluster: &Cluster, cfg: &Config) -> anyhow::Result<()> {
    for n in 1..=SWITCHOVERS {
        let start = Instant::now();
        let (leader, candidate) = loop {
            let leader = cluster.leader_index();
            let mut replicas = streaming_replicas(cluster).await;
            if let Some(l) = leader {
                // In synchronous modes a switchover goes to a `/sync` standby only.
                let listed = tokio::task::block_in_place(|| {
                    crate::run::sync_standbys(cluster, &cluster.member(l).name)
                });
                if let Some(listed) = listed {
                    replicas.retain(|&r| listed.contains(&cluster.member(r).name));
                }
                // Rotate through the members rather than bouncing between two.
                if let Some(&c) = replicas.iter().find(|&&r| r > l).or(replicas.first()) {
                    break (l, c);
                }
            }
            ensure!(
                start.elapsed() < cfg.recovery_timeout,
                "switchover {n}: no leader with a streaming replica within {:?}",
                cfg.recovery_timeout
            );
            tokio::time::sleep(POLL).await;
        };
        let body = json!({
            "leader": cluster.member(leader).name,
            "candidate": cluster.member(candidate).name,
        });
        let (code, text) = cluster
            .api_call(leader, "POST", "/switchover", Some(body), true)
            .await?;
        ensure!(
            code == 200,
            "switchover {n} ({} -> {}): HTTP {code} {text}",
            cluster.member(leader).name,
            cluster.member(candidate).name
        );
        loop {
            let now_primary = cluster.leader_index() == Some(candidate)
                && cluster
                    .patroni(candidate)
                    .await
                    .is_ok_and(|st| st["role"] == "primary" && st["state"] == "running");
            if now_primary {
                break;
            }
            ensure!(
                start.elapsed() < cfg.recovery_timeout,
                "switchover {n}: {} not primary within {:?}",
                cluster.member(candidate).name,
                cfg.recovery_timeout
            );
            tokio::time::sleep(POLL).await;
        }
        eprintln!(
            "chaos:   switchover {n}/{SWITCHOVERS}: {} -> {} in {:.1} s",
            cluster.member(leader).name,
            cluster.member(candidate).name,
            start.elapsed().as_secs_f64()
        );
    }
    Ok(())
}

/// `POST /restart` on the leader, each replica, and the leader again, back to back. A refused
/// restart (e.g. 503 while the member is busy) is printed, not fatal: the storm is the fault,
/// the recovery that follows is what is measured.
async fn restart_storm(cluster: &Cluster, leader: usize) -> anyhow::Result<()> {
    let mut order = vec![leader];
    order.extend((0..cluster.len()).filter(|&i| i != leader));
    order.push(leader);
    for i in order {
        let name = &cluster.member(i).name;
        match cluster
            .api_call(i, "POST", "/restart", Some(json!({})), true)
            .await
        {
            Ok((code, _)) if (200..300).contains(&code) => {
                eprintln!("chaos:   restart of {name}: HTTP {code}")
            }
            Ok((code, text)) => eprintln!("chaos:   restart of {name} refused: HTTP {code} {text}"),
            Err(e) => eprintln!("chaos:   restart of {name} failed: {e:#}"),
        }
    }
    Ok(())
}
