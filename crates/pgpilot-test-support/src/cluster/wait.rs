//! Waiting for cluster states: a leader, streaming replicas, a write or a row, walsenders;
//! every poll first checks that no agent died unexpectedly.

use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};

use super::Cluster;
use crate::{wait_for, BOOTSTRAP_TIMEOUT, FAILOVER_TIMEOUT, SHORT_TIMEOUT};

impl Cluster {
    /// [`wait_for`] that first checks, at every poll, that no agent died unexpectedly.
    pub async fn wait<T>(
        &self,
        timeout: Duration,
        what: &str,
        mut check: impl AsyncFnMut() -> anyhow::Result<T>,
    ) -> T {
        wait_for(timeout, what, async || {
            self.assert_agents_alive();
            check().await
        })
        .await
    }

    /// Waits until some member holds the leader key and its `/patroni` says a running primary;
    /// returns its index.
    pub async fn wait_for_leader(&self) -> usize {
        self.wait_for_leader_except(&[], BOOTSTRAP_TIMEOUT).await
    }

    /// Like [`Cluster::wait_for_leader`], for a leader other than the members in `not`.
    pub async fn wait_for_leader_except(&self, not: &[usize], timeout: Duration) -> usize {
        let what = if not.is_empty() {
            let names: Vec<_> = not.iter().map(|&i| self.members[i].name.as_str()).collect();
            format!("a leader other than {names:?} running a primary")
        } else {
            "a leader running a primary".to_string()
        };
        self.wait(timeout, &what, async || {
            let name = self
                .etcd
                .get(&self.key("leader"))?
                .context("no leader key in etcd")?;
            let i = self
                .index_of(&name)
                .with_context(|| format!("unknown leader {name:?}"))?;
            ensure!(!not.contains(&i), "leader is still {name}");
            let st = self.patroni(i).await?;
            ensure!(
                st["role"] == "primary" && st["state"] == "running",
                "leader {name} reports role {} state {}",
                st["role"],
                st["state"]
            );
            Ok(i)
        })
        .await
    }

    /// Waits until at least `n` members report through `/patroni` that they run as replicas and
    /// stream (`replication_state == "streaming"`); returns their indices.
    pub async fn wait_for_replicas_streaming(&self, n: usize) -> Vec<usize> {
        self.wait_for_replicas_streaming_within(n, BOOTSTRAP_TIMEOUT)
            .await
    }

    pub async fn wait_for_replicas_streaming_within(
        &self,
        n: usize,
        timeout: Duration,
    ) -> Vec<usize> {
        self.wait(timeout, &format!("{n} streaming replicas"), async || {
            let mut streaming = Vec::new();
            let mut seen = Vec::new();
            for i in 0..self.members.len() {
                if !self.agent_running(i) {
                    continue;
                }
                match self.patroni(i).await {
                    Ok(st) => {
                        seen.push(format!(
                            "{}: {}/{}/{}",
                            self.members[i].name, st["role"], st["state"], st["replication_state"]
                        ));
                        if st["role"] == "replica"
                            && st["state"] == "running"
                            && st["replication_state"] == "streaming"
                        {
                            streaming.push(i);
                        }
                    }
                    Err(e) => seen.push(format!("{}: {e:#}", self.members[i].name)),
                }
            }
            ensure!(streaming.len() >= n, "members: {}", seen.join("; "));
            Ok(streaming)
        })
        .await
    }

    /// Waits until member `i` is a running replica streaming on timeline `timeline` (if given).
    pub async fn wait_for_streaming_replica(
        &self,
        i: usize,
        timeline: Option<u64>,
        timeout: Duration,
    ) {
        let name = &self.members[i].name;
        self.wait(
            timeout,
            &format!("{name} to stream as a replica"),
            async || {
                let st = self.patroni(i).await?;
                ensure!(
                    st["role"] == "replica"
                        && st["state"] == "running"
                        && st["replication_state"] == "streaming",
                    "{name}: role {} state {} replication_state {}",
                    st["role"],
                    st["state"],
                    st["replication_state"]
                );
                if let Some(tl) = timeline {
                    ensure!(
                        st["timeline"].as_u64() == Some(tl),
                        "{name} on timeline {}",
                        st["timeline"]
                    );
                }
                Ok(())
            },
        )
        .await;
    }

    /// Waits until `INSERT INTO <table> VALUES (<id>, <note>)` succeeds on member `i` (retrying
    /// while it is read-only or unreachable); returns the time it took.
    pub async fn wait_writable(&self, i: usize, table: &str, id: i32, note: &str) -> Duration {
        let start = Instant::now();
        let name = &self.members[i].name;
        self.wait(
            FAILOVER_TIMEOUT,
            &format!("a write to succeed on {name}"),
            async || {
                let client = self.pg_connect_try(i).await?;
                client
                    .execute(
                        &format!("INSERT INTO {table} VALUES ($1, $2)"),
                        &[&id, &note],
                    )
                    .await?;
                Ok(())
            },
        )
        .await;
        start.elapsed()
    }

    /// Waits until the row `id` of `table` is visible on member `i`.
    pub async fn wait_for_row(&self, i: usize, table: &str, id: i32) {
        let name = &self.members[i].name;
        self.wait(
            SHORT_TIMEOUT,
            &format!("row {id} of {table} on {name}"),
            async || {
                let client = self.pg_connect_try(i).await?;
                let rows = client
                    .query(&format!("SELECT 1 FROM {table} WHERE id = $1"), &[&id])
                    .await?;
                ensure!(rows.len() == 1, "not there yet");
                Ok(())
            },
        )
        .await;
    }

    /// Rows of `pg_stat_replication` on member `i` joined with the slot each walsender uses:
    /// `(application_name, state, slot_name)`.
    pub async fn replication_rows(
        &self,
        i: usize,
    ) -> anyhow::Result<Vec<(String, String, Option<String>)>> {
        let client = self.pg_connect_try(i).await?;
        let rows = client
            .query(
                "SELECT r.application_name, r.state, s.slot_name::text \
                 FROM pg_stat_replication r \
                 LEFT JOIN pg_replication_slots s ON s.active_pid = r.pid \
                 ORDER BY 1",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect())
    }

    /// Waits until member `i`'s `pg_stat_replication` shows every member of `replicas`
    /// streaming, each through its own slot.
    pub async fn wait_for_walsenders(&self, i: usize, replicas: &[usize]) {
        let mut expected: Vec<String> = replicas
            .iter()
            .map(|&r| self.members[r].name.clone())
            .collect();
        expected.sort();
        let what = format!("{} to stream to {expected:?}", self.members[i].name);
        let use_slots = self.options.use_slots;
        self.wait(SHORT_TIMEOUT, &what, async || {
            let rows = self.replication_rows(i).await?;
            for name in &expected {
                let row = rows.iter().find(|r| &r.0 == name);
                let Some((_, state, slot)) = row else {
                    bail!("no walsender for {name}; rows: {rows:?}");
                };
                ensure!(state == "streaming", "{name} is {state}");
                if use_slots {
                    let want = crate::expected_slot_name(name);
                    ensure!(
                        slot.as_deref() == Some(&want),
                        "{name} uses slot {slot:?}, not {want}"
                    );
                }
            }
            Ok(())
        })
        .await;
    }
}
