//! A client writing one row every 10 ms through a multi-host connection string with
//! `target_session_attrs=read-write`, as an application behind libpq would, or through one
//! address (HAProxy, pgBouncer). It records every acknowledged row and every failed attempt, so
//! a test can check that no acknowledged write is lost and measure the write gap of a role
//! change.
//!
//! The INSERT goes over the simple query protocol: a pooler in transaction mode (pgBouncer 1.18)
//! may hand the next message to another server connection, where a prepared statement would not
//! exist.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
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
    /// Each distinct error text of the failed attempts, with how often it came.
    pub errors: BTreeMap<String, usize>,
}

impl WriterLog {
    /// The longest time from a failed attempt that follows an acknowledged write to the next
    /// acknowledged write: the write unavailability of a role change.
    pub fn longest_gap(&self) -> Option<Duration> {
        self.gaps().into_iter().max()
    }

    /// The longest gap as its first failed attempt and the acknowledgement that ended it.
    pub fn longest_gap_span(&self) -> Option<(Instant, Instant)> {
        self.gap_spans()
            .into_iter()
            .max_by_key(|(f, a)| a.duration_since(*f))
    }

    /// The longest time between two acknowledged writes (zero with fewer than two).
    pub fn longest_ack_gap(&self) -> Duration {
        self.acked
            .windows(2)
            .map(|w| w[1].1.duration_since(w[0].1))
            .max()
            .unwrap_or_default()
    }

    /// The error texts with their counts, most frequent first, on one line.
    pub fn error_summary(&self) -> String {
        let mut errors: Vec<(&String, &usize)> = self.errors.iter().collect();
        errors.sort_by(|a, b| b.1.cmp(a.1));
        errors
            .iter()
            .map(|(e, n)| format!("{n} x {e:?}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn fail(&mut self, error: String) {
        self.failures.push(Instant::now());
        *self.errors.entry(error).or_default() += 1;
    }

    /// Every write gap: from the first failed attempt after an acknowledged write to the next
    /// acknowledged write, in order.
    pub fn gaps(&self) -> Vec<Duration> {
        self.gap_spans()
            .into_iter()
            .map(|(f, a)| a.duration_since(f))
            .collect()
    }

    /// Every write gap as its first failed attempt and the acknowledgement that ended it.
    fn gap_spans(&self) -> Vec<(Instant, Instant)> {
        let mut spans = Vec::new();
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
                    spans.push((f, *a));
                }
            }
        }
        spans
    }
}

/// A client task that runs until told to stop and then hands over its log.
struct Task<T> {
    stop: Arc<AtomicBool>,
    handle: tokio::task::JoinHandle<T>,
}

impl<T: Send + 'static> Task<T> {
    /// Spawns `run(stop flag)`.
    fn spawn<F, Fut>(run: F) -> Task<T>
    where
        F: FnOnce(Arc<AtomicBool>) -> Fut,
        Fut: std::future::Future<Output = T> + Send + 'static,
    {
        let stop = Arc::new(AtomicBool::new(false));
        let handle = tokio::spawn(run(stop.clone()));
        Task { stop, handle }
    }

    async fn finish(self) -> T {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.await.expect("client task")
    }
}

pub struct Writer {
    task: Task<WriterLog>,
    /// How many writes were acknowledged so far, readable while the writer runs.
    acked: Arc<AtomicUsize>,
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
        Writer::start_conninfo(conninfo, table)
    }

    /// Starts writing into `table` through the libpq connection string `conninfo`.
    pub fn start_conninfo(conninfo: String, table: &str) -> Writer {
        let table = table.to_string();
        let acked = Arc::new(AtomicUsize::new(0));
        let count = acked.clone();
        let task = Task::spawn(|flag| async move {
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
                        Err(e) => {
                            log.fail(error_text(&e));
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    }
                }
                let Some(c) = &client else { continue };
                let id = next_id;
                next_id += 1;
                let sql = format!("INSERT INTO {table} VALUES ({id}, now())");
                let res = tokio::time::timeout(Duration::from_secs(5), c.batch_execute(&sql)).await;
                match res {
                    Ok(Ok(())) => {
                        log.acked.push((id, Instant::now()));
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                    Ok(Err(e)) => {
                        log.fail(error_text(&e));
                        client = None;
                    }
                    Err(_) => {
                        log.fail("no answer within 5 s".into());
                        client = None;
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            log
        });
        Writer { task, acked }
    }

    /// How many writes were acknowledged so far.
    pub fn acked(&self) -> usize {
        self.acked.load(Ordering::Relaxed)
    }

    pub async fn finish(self) -> WriterLog {
        self.task.finish().await
    }

    /// Starts writing into `table` as [`Writer::start`] does, but over one connection to each
    /// of `ports` instead of a connection string walked in order: each write goes to the member
    /// that took the last one, and once that fails, to every connected member at once, the
    /// first to acknowledge becoming the target. A member whose connection is gone is
    /// reconnected in the background, at most every 100 ms.
    ///
    /// Its gaps are the servers' own write unavailability: they leave out what a libpq client
    /// spends connecting to, authenticating with and refusing each read-only host before it
    /// reaches the new primary, which grows with the number of members.
    pub fn start_direct(ports: &[u16], table: &str) -> Writer {
        let conninfos: Vec<String> = ports
            .iter()
            .map(|p| {
                format!(
                    "host=127.0.0.1 port={p} user={} password={} dbname=postgres connect_timeout=2",
                    SUPERUSER.0, SUPERUSER.1
                )
            })
            .collect();
        let table = table.to_string();
        let acked = Arc::new(AtomicUsize::new(0));
        let count = acked.clone();
        let task = Task::spawn(|flag| async move {
            let n = conninfos.len();
            let mut log = WriterLog::default();
            let mut clients: Vec<Option<Arc<tokio_postgres::Client>>> = vec![None; n];
            let mut connecting = vec![false; n];
            let mut next_connect = vec![Instant::now(); n];
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            let mut target: Option<usize> = None;
            let mut next_id: i64 = 1;
            while !flag.load(Ordering::Relaxed) {
                while let Ok((i, client)) = rx.try_recv() {
                    connecting[i] = false;
                    clients[i] = client;
                }
                let now = Instant::now();
                for i in 0..n {
                    if clients[i].as_ref().is_some_and(|c| c.is_closed()) {
                        clients[i] = None;
                    }
                    if clients[i].is_none() && !connecting[i] && now >= next_connect[i] {
                        connecting[i] = true;
                        next_connect[i] = now + Duration::from_millis(100);
                        let (conninfo, tx) = (conninfos[i].clone(), tx.clone());
                        tokio::spawn(async move {
                            let connect = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls);
                            let client =
                                match tokio::time::timeout(Duration::from_secs(2), connect).await {
                                    Ok(Ok((c, conn))) => {
                                        tokio::spawn(conn);
                                        // Refused writes are the point of this client: keep
                                        // the servers from logging each one (work that would
                                        // compete with the role change it measures).
                                        let quiet = "SET log_min_messages = panic; \
                                                 SET log_min_error_statement = panic";
                                        c.batch_execute(quiet).await.ok().map(|()| Arc::new(c))
                                    }
                                    _ => None,
                                };
                            let _ = tx.send((i, client));
                        });
                    }
                }
                let targets: Vec<usize> = match target {
                    Some(t) if clients[t].is_some() => vec![t],
                    _ => (0..n).filter(|&i| clients[i].is_some()).collect(),
                };
                if targets.is_empty() {
                    log.fail("no member connected".into());
                    target = None;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
                let id = next_id;
                next_id += 1;
                let sql = Arc::new(format!("INSERT INTO {table} VALUES ({id}, now())"));
                let mut writes = tokio::task::JoinSet::new();
                for i in targets {
                    let (client, sql) = (clients[i].clone(), sql.clone());
                    writes.spawn(async move {
                        let Some(c) = client else {
                            return (i, Err("not connected".to_string()));
                        };
                        let res =
                            tokio::time::timeout(Duration::from_secs(5), c.batch_execute(&sql))
                                .await;
                        (
                            i,
                            match res {
                                Ok(Ok(())) => Ok(()),
                                Ok(Err(e)) => Err(error_text(&e)),
                                Err(_) => Err("no answer within 5 s".to_string()),
                            },
                        )
                    });
                }
                let mut acked_on = None;
                let mut error = None;
                while let Some(joined) = writes.join_next().await {
                    match joined {
                        Ok((i, Ok(()))) => {
                            acked_on = Some(i);
                            break;
                        }
                        Ok((_, Err(e))) => {
                            error.get_or_insert(e);
                        }
                        Err(e) => {
                            error.get_or_insert(e.to_string());
                        }
                    }
                }
                // The writes still running went to members that were not the first to answer;
                // their answers no longer matter.
                writes.abort_all();
                match acked_on {
                    Some(i) => {
                        log.acked.push((id, Instant::now()));
                        count.fetch_add(1, Ordering::Relaxed);
                        target = Some(i);
                    }
                    None => {
                        log.fail(error.unwrap_or_default());
                        target = None;
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            log
        });
        Writer { task, acked }
    }
}

/// What a [`Reader`] saw.
#[derive(Debug, Default)]
pub struct ReaderLog {
    /// Each answered read: when it started (before connecting) and when its answer came, and
    /// whether the server was in recovery (a replica).
    pub reads: Vec<(Instant, Instant, bool)>,
    /// Each distinct error text of the failed reads, with how often it came.
    pub errors: BTreeMap<String, usize>,
}

impl ReaderLog {
    /// The reads answered by a primary (`pg_is_in_recovery()` false): `(start, answer)`.
    pub fn on_primary(&self) -> impl Iterator<Item = (Instant, Instant)> + '_ {
        self.reads.iter().filter(|r| !r.2).map(|r| (r.0, r.1))
    }
}

/// A client that opens a new connection every 100 ms through `conninfo` (e.g. HAProxy's
/// replicas port) and asks `SELECT pg_is_in_recovery()`, to see where reads land.
pub struct Reader(Task<ReaderLog>);

impl Reader {
    pub fn start(conninfo: String) -> Reader {
        Reader(Task::spawn(|flag| async move {
            let mut log = ReaderLog::default();
            while !flag.load(Ordering::Relaxed) {
                let started = Instant::now();
                let read = async {
                    let (c, conn) = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls)
                        .await
                        .map_err(|e| error_text(&e))?;
                    tokio::spawn(conn);
                    let rows = c
                        .simple_query("SELECT pg_is_in_recovery()")
                        .await
                        .map_err(|e| error_text(&e))?;
                    rows.iter()
                        .find_map(|m| match m {
                            tokio_postgres::SimpleQueryMessage::Row(r) => {
                                r.get(0).map(|v| v == "t")
                            }
                            _ => None,
                        })
                        .ok_or_else(|| "no row".to_string())
                };
                match tokio::time::timeout(Duration::from_secs(5), read).await {
                    Ok(Ok(in_recovery)) => log.reads.push((started, Instant::now(), in_recovery)),
                    Ok(Err(e)) => *log.errors.entry(e).or_default() += 1,
                    Err(_) => *log.errors.entry("no answer within 5 s".into()).or_default() += 1,
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            log
        }))
    }

    pub async fn finish(self) -> ReaderLog {
        self.0.finish().await
    }
}

/// The server's message when there is one (`cannot execute INSERT in a read-only transaction`),
/// else the client's error.
pub(crate) fn error_text(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => db.message().to_string(),
        None => e.to_string(),
    }
}
