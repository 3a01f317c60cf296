//! A client writing one row every 10 ms through a multi-host connection string with
//! `target_session_attrs=read-write`, as an application behind libpq would. It records every
//! acknowledged row and every failed attempt, so a test can check that no acknowledged write is
//! lost and measure the write gap of a role change.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::cluster::SUPERUSER;

/// What the writer saw.
#[derive(Debug, Default)]
pub struct WriterLog {
    /// Acknowledged ids, with the time of the acknowledgement.
    pub acked: Vec<(i64, Instant)>,
    /// Times of failed attempts (connect or INSERT).
    pub failures: Vec<Instant>,
}

impl WriterLog {
    /// The longest time from a failed attempt that follows an acknowledged write to the next
    /// acknowledged write: the write unavailability of a role change.
    pub fn longest_gap(&self) -> Option<Duration> {
        self.gaps().into_iter().max()
    }

    /// Every write gap: from the first failed attempt after an acknowledged write to the next
    /// acknowledged write, in order.
    pub fn gaps(&self) -> Vec<Duration> {
        let mut gaps = Vec::new();
        for &f in &self.failures {
            let before = self.acked.iter().rev().find(|(_, t)| *t < f);
            let after = self.acked.iter().find(|(_, t)| *t > f);
            if let (Some(_), Some((_, a))) = (before, after) {
                // Only the first failure of a run counts: its predecessor event is an ack.
                let first_of_run = !self
                    .failures
                    .iter()
                    .any(|&g| g < f && before.is_some_and(|(_, b)| g > *b));
                if first_of_run {
                    gaps.push(a.duration_since(f));
                }
            }
        }
        gaps
    }
}

pub struct Writer {
    stop: Arc<AtomicBool>,
    handle: tokio::task::JoinHandle<WriterLog>,
}

impl Writer {
    /// Starts writing into `table (id bigint primary key, at timestamptz)` (created by the
    /// caller) on whichever of `ports` is writable.
    pub fn start(ports: &[u16], table: &str) -> Writer {
        let hosts = vec!["127.0.0.1"; ports.len()].join(",");
        let ports = ports
            .iter()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let conninfo = format!(
            "host={hosts} port={ports} user={} password={} dbname=postgres \
             target_session_attrs=read-write connect_timeout=2",
            SUPERUSER.0, SUPERUSER.1
        );
        let sql = format!("INSERT INTO {table} VALUES ($1, now())");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = tokio::spawn(async move {
            let mut log = WriterLog::default();
            let mut client: Option<tokio_postgres::Client> = None;
            let mut next_id: i64 = 1;
            while !flag.load(Ordering::Relaxed) {
                if client.is_none() {
                    match tokio_postgres::connect(&conninfo, tokio_postgres::NoTls).await {
                        Ok((c, conn)) => {
                            tokio::spawn(conn);
                            client = Some(c);
                        }
                        Err(_) => {
                            log.failures.push(Instant::now());
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    }
                }
                let Some(c) = &client else { continue };
                let id = next_id;
                next_id += 1;
                let res =
                    tokio::time::timeout(Duration::from_secs(5), c.execute(&sql, &[&id])).await;
                match res {
                    Ok(Ok(_)) => log.acked.push((id, Instant::now())),
                    _ => {
                        log.failures.push(Instant::now());
                        client = None;
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            log
        });
        Writer { stop, handle }
    }

    pub async fn finish(self) -> WriterLog {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.await.expect("writer task")
    }
}
