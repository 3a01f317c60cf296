//! SQL on a member as the superuser: connections, the ids a writer left, system identifier,
//! recovery state, and the checks built on them.

use super::Cluster;
use crate::pg;
use crate::writer::WriterLog;

impl Cluster {
    /// Superuser connection to member `i` over TCP; panics if it fails.
    pub async fn pg_connect(&self, i: usize) -> tokio_postgres::Client {
        self.pg_connect_try(i)
            .await
            .unwrap_or_else(|e| panic!("connect to {}: {e:#}", self.members[i].name))
    }

    pub async fn pg_connect_try(&self, i: usize) -> anyhow::Result<tokio_postgres::Client> {
        let m = &self.members[i];
        if self.options.harness_via_socket {
            return pg::connect_socket(&m.socket_dir, m.pg_port).await;
        }
        pg::connect(m.pg_port).await
    }

    /// Every id of `table` (a [`Writer`](crate::Writer)'s table) on member `i`, in order.
    pub async fn ids(&self, i: usize, table: &str) -> Vec<i64> {
        self.pg_connect(i)
            .await
            .query(&format!("SELECT id FROM {table} ORDER BY id"), &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect()
    }

    /// Asserts that every id `log` saw acknowledged is in `table` on member `i`.
    pub async fn assert_no_acked_write_lost(&self, i: usize, table: &str, log: &WriterLog) {
        let present: std::collections::HashSet<i64> =
            self.ids(i, table).await.into_iter().collect();
        let lost: Vec<i64> = log
            .acked
            .iter()
            .map(|(id, _)| *id)
            .filter(|id| !present.contains(id))
            .collect();
        assert!(
            lost.is_empty(),
            "{} acknowledged writes are missing on {}: {:?}",
            lost.len(),
            self.members[i].name,
            &lost[..lost.len().min(20)]
        );
    }

    /// `SELECT system_identifier FROM pg_control_system()` on member `i`.
    pub async fn system_identifier(&self, i: usize) -> String {
        let client = self.pg_connect(i).await;
        client
            .query_one(
                "SELECT system_identifier::text FROM pg_control_system()",
                &[],
            )
            .await
            .expect("read system identifier")
            .get(0)
    }

    /// `SELECT pg_is_in_recovery()` on member `i`.
    pub async fn in_recovery(&self, i: usize) -> anyhow::Result<bool> {
        let client = self.pg_connect_try(i).await?;
        Ok(client
            .query_one("SELECT pg_is_in_recovery()", &[])
            .await?
            .get(0))
    }

    /// Panics if any member that answers SQL runs as a primary (`when` says at what point).
    pub async fn assert_none_writable(&self, when: &str) {
        for i in 0..self.len() {
            if let Ok(in_recovery) = self.in_recovery(i).await {
                assert!(in_recovery, "{} is writable {when}", self.members[i].name);
            }
        }
    }

    /// The names of the members whose `/patroni` says `role: primary`.
    pub async fn primaries(&self) -> Vec<String> {
        let mut primaries = Vec::new();
        for i in 0..self.len() {
            if let Ok(st) = self.patroni(i).await {
                if st["role"] == "primary" {
                    primaries.push(self.members[i].name.clone());
                }
            }
        }
        primaries
    }
}
