//! One member's handle ([`Member`]) and its agent process: start, kill, terminate, wait for
//! its exit, its log, and its postmaster.

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context;
use nix::sys::signal::Signal;

use super::Cluster;
use crate::{
    agent_bin, clean_env, kill_postmaster_of, postmaster_pid, signal, spawn_child, wait_for,
    Standalone,
};

/// One member: its name, ports, paths and (when running) its agent process.
pub struct Member {
    pub index: usize,
    pub name: String,
    /// `<tmp>/member-<i>`: config, logs, pgpass, sockets, data.
    pub dir: PathBuf,
    pub data_dir: PathBuf,
    pub socket_dir: PathBuf,
    /// PostgreSQL server logs (`logging_collector` writes here).
    pub pg_log_dir: PathBuf,
    pub config_path: PathBuf,
    /// The agent's stdout + stderr, appended across restarts.
    pub log_path: PathBuf,
    pub pg_port: u16,
    pub api_port: u16,
    /// `http` or `https`.
    pub api_scheme: &'static str,
    pub(super) agent: Mutex<Option<Child>>,
    /// Set when the harness starts the agent, cleared when a test kills or stops it or waits
    /// for it to exit: an agent that exits while this is set fails the test at once.
    pub(super) expect_running: AtomicBool,
}

impl Member {
    /// A plain PostgreSQL made by hand in this member's data directory, on its port and socket
    /// directory (for adoption and foreign-data-directory tests).
    pub fn standalone(&self) -> Standalone {
        Standalone::init(
            &self.data_dir,
            self.pg_port,
            &self.socket_dir,
            &self.dir.join("standalone.log"),
        )
    }

    pub fn api_base(&self) -> String {
        format!("{}://127.0.0.1:{}", self.api_scheme, self.api_port)
    }
}

impl Cluster {
    /// Starts `pgpilot <member.yml>` for member `i` (again, after a kill, with the same config).
    pub fn start_agent(&self, i: usize) {
        let m = &self.members[i];
        let mut slot = m.agent.lock().unwrap();
        if let Some(child) = slot.as_mut() {
            assert!(
                !matches!(child.try_wait(), Ok(None)),
                "agent {} is already running",
                m.name
            );
        }
        let mut log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&m.log_path)
            .expect("open agent log");
        use std::io::Write;
        let _ = writeln!(
            log,
            "==== harness: starting agent {} ({}) ====",
            m.name,
            timestamp()
        );
        let agent = self.options.agent.clone().unwrap_or_else(agent_bin);
        let mut cmd = Command::new(agent);
        cmd.arg(&m.config_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log);
        clean_env(&mut cmd, &m.dir);
        cmd.envs(self.options.agent_env.iter().map(|(k, v)| (k, v)));
        let child = spawn_child(cmd).unwrap_or_else(|e| panic!("can not start the agent: {e}"));
        *slot = Some(child);
        m.expect_running.store(true, Ordering::SeqCst);
    }

    /// PID of member `i`'s agent if it is running.
    pub fn agent_pid(&self, i: usize) -> Option<i32> {
        let mut slot = self.members[i].agent.lock().unwrap();
        let child = slot.as_mut()?;
        matches!(child.try_wait(), Ok(None)).then(|| child.id() as i32)
    }

    pub fn agent_running(&self, i: usize) -> bool {
        self.agent_pid(i).is_some()
    }

    /// SIGKILL the agent (its PostgreSQL keeps running) and reap it.
    pub fn kill_agent(&self, i: usize) {
        self.members[i]
            .expect_running
            .store(false, Ordering::SeqCst);
        let mut slot = self.members[i].agent.lock().unwrap();
        if let Some(child) = slot.as_mut() {
            signal(child.id() as i32, Signal::SIGKILL);
            let _ = child.wait();
        }
    }

    /// SIGTERM the agent: Patroni's graceful shutdown (stop PostgreSQL, release the leader key).
    pub fn terminate_agent(&self, i: usize) {
        self.members[i]
            .expect_running
            .store(false, Ordering::SeqCst);
        if let Some(pid) = self.agent_pid(i) {
            signal(pid, Signal::SIGTERM);
        }
    }

    /// Waits for member `i`'s agent to exit by itself; panics after `timeout`.
    pub async fn wait_agent_exit(&self, i: usize, timeout: Duration) -> ExitStatus {
        self.members[i]
            .expect_running
            .store(false, Ordering::SeqCst);
        let name = &self.members[i].name;
        wait_for(timeout, &format!("agent {name} to exit"), async || {
            let mut slot = self.members[i].agent.lock().unwrap();
            let child = slot.as_mut().context("agent was never started")?;
            child.try_wait()?.context("still running")
        })
        .await
    }

    /// Panics if an agent the test expects to run has exited (a crash or a refusal to start):
    /// waiting the full timeout for a cluster state would only hide why.
    pub fn assert_agents_alive(&self) {
        for m in &self.members {
            if !m.expect_running.load(Ordering::SeqCst) {
                continue;
            }
            let mut slot = m.agent.lock().unwrap();
            if let Some(Ok(Some(status))) = slot.as_mut().map(Child::try_wait) {
                m.expect_running.store(false, Ordering::SeqCst);
                drop(slot);
                panic!(
                    "agent {} exited unexpectedly ({status}); its log is below",
                    m.name
                );
            }
        }
    }

    /// The postmaster PID of member `i` from `postmaster.pid`, if alive.
    pub fn postmaster_pid(&self, i: usize) -> Option<i32> {
        postmaster_pid(&self.members[i].data_dir)
    }

    /// SIGKILL member `i`'s postmaster (by the PID in `postmaster.pid`); returns the PID.
    pub fn kill_postmaster(&self, i: usize) -> Option<i32> {
        kill_postmaster_of(&self.members[i].data_dir)
    }

    /// The whole agent log of member `i`.
    pub fn agent_log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.members[i].log_path).unwrap_or_default()
    }

    /// The agent log of member `i` since its last start by the harness.
    pub fn agent_log_since_last_start(&self, i: usize) -> String {
        let log = self.agent_log(i);
        match log.rfind("==== harness: starting agent") {
            Some(pos) => log[pos..].to_string(),
            None => log,
        }
    }
}

/// Wall-clock time for log markers.
fn timestamp() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    format!("unix time {:.3}", now.as_secs_f64())
}
