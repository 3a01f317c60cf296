//! The bank: `accounts` accounts with equal balances and `clients` concurrent clients, each
//! moving a small amount between two random accounts in one transaction that also logs the
//! transfer under a client-generated unique id and the port of the server that accepted it.
//!
//! Clients connect like an application behind libpq: one multi-host connection string with
//! `target_session_attrs=read-write` and a short connect timeout, reconnecting after any error.
//! Each connection lives at most [`CONNECTION_LIFETIME`] and each client rotates the host order
//! between connections (as a pool with a maximum connection age and `load_balance_hosts` would),
//! so that when two members accept writes at once, clients end up on both and the acknowledgement
//! log shows it.
//!
//! Every COMMIT that returned OK is recorded with the member and timeline that accepted it and
//! the times the COMMIT was sent and acknowledged; a COMMIT whose outcome is unknown (an error or
//! a timeout during or after it) is recorded as indeterminate. An error before COMMIT leaves the
//! transaction uncommitted (the connection is dropped, which rolls it back).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::harness::{Cluster, SUPERUSER};

/// Upper bound of one connection attempt (also `connect_timeout` per host).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(4);
/// Upper bound of one statement; a COMMIT past it is indeterminate.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(5);
/// A client reconnects after this long on one connection (see the module comment).
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(1);
/// Pause between two transactions of one client (keeps a 2-core machine usable).
const THINK_TIME: Duration = Duration::from_millis(10);
/// Pause after a failed attempt.
const RETRY_PAUSE: Duration = Duration::from_millis(100);
/// The balance every account starts with.
pub const INITIAL_BALANCE: i64 = 1000;

/// One acknowledged transfer.
#[derive(Debug, Clone)]
pub struct Ack {
    pub id: String,
    /// Index of the member that accepted it.
    pub member: usize,
    /// That member's timeline when the connection was opened (a primary's timeline does not
    /// change while it runs).
    pub timeline: u32,
    /// When the client sent COMMIT: the commit happened after this.
    pub sent: Instant,
    /// When COMMIT returned OK: the commit happened before this.
    pub acked: Instant,
}

/// What the clients saw, shared by all of them.
#[derive(Debug, Default, Clone)]
pub struct Log {
    pub acks: Vec<Ack>,
    /// Transfers whose COMMIT outcome is unknown, with the time it became unknown.
    pub indeterminate: Vec<(String, Instant)>,
    /// Failed attempts (connect, statement or COMMIT).
    pub failures: Vec<Instant>,
    /// The direct sampler's acknowledged probe writes (see [`Prober`]); not checked for loss.
    pub probes: Vec<Ack>,
}

/// The running clients.
pub struct Bank {
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Log>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// Creates the tables on the primary, member `leader`, and gives every account
/// [`INITIAL_BALANCE`].
pub async fn create_schema(cluster: &Cluster, leader: usize, accounts: i32) -> anyhow::Result<()> {
    let client = cluster.pg_connect_try(leader).await?;
    client
        .batch_execute(
            "CREATE TABLE accounts (id int PRIMARY KEY, balance bigint NOT NULL);
             CREATE TABLE transfers (id text PRIMARY KEY, src int NOT NULL, dst int NOT NULL,
                                     amount bigint NOT NULL, port int NOT NULL,
                                     at timestamptz NOT NULL DEFAULT now());
             CREATE TABLE probes (id text PRIMARY KEY, at timestamptz NOT NULL DEFAULT now());",
        )
        .await
        .context("create the bank tables")?;
    client
        .execute(
            "INSERT INTO accounts SELECT g, $2 FROM generate_series(1, $1) g",
            &[&accounts, &INITIAL_BALANCE],
        )
        .await
        .context("open the accounts")?;
    Ok(())
}

/// What the final leader holds.
#[derive(Debug, Clone)]
pub struct Ledger {
    pub total_balance: i64,
    pub transfer_ids: std::collections::HashSet<String>,
}

/// Reads the total balance and every transfer id from member `i`.
pub async fn read_ledger(cluster: &Cluster, i: usize) -> anyhow::Result<Ledger> {
    let client = cluster.pg_connect_try(i).await?;
    let total: i64 = client
        .query_one("SELECT sum(balance)::bigint FROM accounts", &[])
        .await
        .context("sum the balances")?
        .get(0);
    let rows = client
        .query("SELECT id FROM transfers", &[])
        .await
        .context("read the transfer log")?;
    Ok(Ledger {
        total_balance: total,
        transfer_ids: rows.iter().map(|r| r.get(0)).collect(),
    })
}

impl Bank {
    /// Starts `clients` clients against the members listening on `ports` (index = member),
    /// and one [`Prober`] per member.
    pub fn start(ports: &[u16], clients: usize, accounts: i32) -> Bank {
        let stop = Arc::new(AtomicBool::new(false));
        let log = Arc::new(Mutex::new(Log::default()));
        let tasks = (0..clients)
            .map(|n| {
                let client = Client {
                    n,
                    ports: ports.to_vec(),
                    accounts,
                    stop: stop.clone(),
                    log: log.clone(),
                    rng: XorShift::new(0x9e37_79b9_7f4a_7c15 ^ (n as u64 + 1)),
                };
                tokio::spawn(client.run())
            })
            .collect::<Vec<_>>();
        let mut tasks = tasks;
        for member in 0..ports.len() {
            let prober = Prober {
                member,
                ports: ports.to_vec(),
                stop: stop.clone(),
                log: log.clone(),
            };
            tasks.push(tokio::spawn(prober.run()));
        }
        Bank { stop, log, tasks }
    }

    /// A copy of everything recorded so far.
    pub fn snapshot(&self) -> Log {
        lock(&self.log).clone()
    }

    /// Whether some transfer was acknowledged after `t`.
    pub fn acked_since(&self, t: Instant) -> bool {
        lock(&self.log).acks.iter().rev().any(|a| a.acked > t)
    }

    /// Stops the clients and returns the complete log.
    pub async fn stop(mut self) -> Log {
        self.stop.store(true, Ordering::SeqCst);
        for t in std::mem::take(&mut self.tasks) {
            // A client stops within one statement timeout; a panic in one is a bug worth seeing.
            if let Err(e) = t.await {
                eprintln!("chaos: a bank client failed: {e}");
            }
        }
        lock(&self.log).clone()
    }
}

impl Drop for Bank {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The log lock; a client that panicked while holding it left a log that is still valid
/// (every push is a single operation), so poisoning is ignored.
fn lock(log: &Mutex<Log>) -> MutexGuard<'_, Log> {
    log.lock().unwrap_or_else(|p| p.into_inner())
}

struct Client {
    n: usize,
    ports: Vec<u16>,
    accounts: i32,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Log>>,
    rng: XorShift,
}

/// An open connection to the member that accepted it.
struct Session {
    client: tokio_postgres::Client,
    member: usize,
    timeline: u32,
    opened: Instant,
    update: tokio_postgres::Statement,
    insert: tokio_postgres::Statement,
}

impl Client {
    async fn run(mut self) {
        let mut session: Option<Session> = None;
        let mut seq: u64 = 0;
        let mut rotation = self.n;
        while !self.stop.load(Ordering::SeqCst) {
            if session
                .as_ref()
                .is_some_and(|s| s.opened.elapsed() > CONNECTION_LIFETIME)
            {
                session = None;
            }
            let s = match &session {
                Some(s) => s,
                None => {
                    rotation += 1;
                    match tokio::time::timeout(
                        CONNECT_TIMEOUT * 2,
                        self.connect(rotation % self.ports.len()),
                    )
                    .await
                    {
                        Ok(Ok(s)) => session.insert(s),
                        _ => {
                            lock(&self.log).failures.push(Instant::now());
                            tokio::time::sleep(RETRY_PAUSE).await;
                            continue;
                        }
                    }
                }
            };
            seq += 1;
            let id = format!("c{}-{seq}", self.n);
            let src = self.rng.below(self.accounts as u64) as i32 + 1;
            let mut dst = self.rng.below(self.accounts as u64 - 1) as i32 + 1;
            if dst >= src {
                dst += 1;
            }
            let amount = self.rng.below(10) as i64 + 1;
            // Lower account id first: concurrent transfers never deadlock.
            let mut moves = [(src, -amount), (dst, amount)];
            moves.sort();
            let body = async {
                s.client.batch_execute("BEGIN").await?;
                for (account, delta) in moves {
                    s.client.execute(&s.update, &[&account, &delta]).await?;
                }
                s.client
                    .execute(&s.insert, &[&id, &src, &dst, &amount])
                    .await?;
                Ok::<_, tokio_postgres::Error>(())
            };
            if !matches!(
                tokio::time::timeout(STATEMENT_TIMEOUT, body).await,
                Ok(Ok(()))
            ) {
                // Not committed: dropping the connection rolls the transaction back.
                lock(&self.log).failures.push(Instant::now());
                session = None;
                tokio::time::sleep(RETRY_PAUSE).await;
                continue;
            }
            let sent = Instant::now();
            let commit = tokio::time::timeout(STATEMENT_TIMEOUT, s.client.batch_execute("COMMIT"));
            match commit.await {
                Ok(Ok(())) => lock(&self.log).acks.push(Ack {
                    id,
                    member: s.member,
                    timeline: s.timeline,
                    sent,
                    acked: Instant::now(),
                }),
                _ => {
                    let now = Instant::now();
                    {
                        let mut log = lock(&self.log);
                        log.indeterminate.push((id, now));
                        log.failures.push(now);
                    }
                    session = None;
                    tokio::time::sleep(RETRY_PAUSE).await;
                    continue;
                }
            }
            tokio::time::sleep(THINK_TIME).await;
        }
    }

    /// Connects through the multi-host string (hosts rotated by `first`) to a writable member
    /// and asks it which member and timeline it is.
    async fn connect(&self, first: usize) -> anyhow::Result<Session> {
        let mut order: Vec<u16> = self.ports.clone();
        order.rotate_left(first);
        let conninfo = format!(
            "host={} port={} user={} password={} dbname=postgres \
             target_session_attrs=read-write connect_timeout={} application_name=pgpilot-chaos",
            vec!["127.0.0.1"; order.len()].join(","),
            order
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(","),
            SUPERUSER.0,
            SUPERUSER.1,
            CONNECT_TIMEOUT.as_secs(),
        );
        let (client, connection) =
            tokio_postgres::connect(&conninfo, tokio_postgres::NoTls).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        let (member, timeline) = identify(&client, &self.ports)
            .await?
            .context("connected to a member in recovery")?;
        let update = client
            .prepare("UPDATE accounts SET balance = balance + $2 WHERE id = $1")
            .await?;
        let insert = client
            .prepare(
                "INSERT INTO transfers (id, src, dst, amount, port) \
                 VALUES ($1, $2, $3, $4, inet_server_port())",
            )
            .await?;
        Ok(Session {
            client,
            member,
            timeline,
            opened: Instant::now(),
            update,
            insert,
        })
    }
}

/// Which member `client` is connected to (by its port) and, if it is not in recovery, its
/// timeline: on a primary the current WAL file name starts with the timeline (8 hex digits).
async fn identify(
    client: &tokio_postgres::Client,
    ports: &[u16],
) -> anyhow::Result<Option<(usize, u32)>> {
    let row = client
        .query_one(
            "SELECT inet_server_port(), CASE WHEN pg_is_in_recovery() THEN NULL \
             ELSE substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8) END",
            &[],
        )
        .await?;
    let port: i32 = row.get(0);
    let member = ports
        .iter()
        .position(|&p| i32::from(p) == port)
        .with_context(|| format!("connected to unknown port {port}"))?;
    let Some(tli) = row.get::<_, Option<String>>(1) else {
        return Ok(None);
    };
    let timeline = u32::from_str_radix(&tli, 16).with_context(|| format!("timeline {tli:?}"))?;
    Ok(Some((member, timeline)))
}

/// The direct split-brain sampler of one member: every [`PROBE_INTERVAL`], on its own
/// connection to that member only, asks whether it is out of recovery and, if so, writes a probe
/// row. Acknowledged probes go through the same analysis as transfers, so two members accepting
/// writes at once show even when no bank client happened to reach the second one.
struct Prober {
    member: usize,
    ports: Vec<u16>,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Log>>,
}

/// How often a [`Prober`] samples its member.
const PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// Upper bound of one probe (connect, or one statement).
const PROBE_TIMEOUT: Duration = Duration::from_secs(1);

impl Prober {
    async fn run(self) {
        let conninfo = format!(
            "host=127.0.0.1 port={} user={} password={} dbname=postgres connect_timeout=1 \
             application_name=pgpilot-chaos-probe",
            self.ports[self.member], SUPERUSER.0, SUPERUSER.1
        );
        let mut client: Option<tokio_postgres::Client> = None;
        let mut seq: u64 = 0;
        let mut tick = tokio::time::interval(PROBE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        while !self.stop.load(Ordering::SeqCst) {
            tick.tick().await;
            if client.is_none() {
                let connect = tokio_postgres::connect(&conninfo, tokio_postgres::NoTls);
                match tokio::time::timeout(PROBE_TIMEOUT, connect).await {
                    Ok(Ok((c, connection))) => {
                        tokio::spawn(async move {
                            let _ = connection.await;
                        });
                        client = Some(c);
                    }
                    _ => {
                        // Down or cut off: try again a little later.
                        tokio::time::sleep(PROBE_INTERVAL * 4).await;
                        continue;
                    }
                }
            }
            let Some(c) = &client else { continue };
            seq += 1;
            let id = format!("p{}-{seq}", self.member);
            let probe = async {
                let Some((member, timeline)) = identify(c, &self.ports).await? else {
                    return Ok(None);
                };
                let sent = Instant::now();
                c.execute("INSERT INTO probes (id) VALUES ($1)", &[&id])
                    .await?;
                anyhow::Ok(Some(Ack {
                    id: id.clone(),
                    member,
                    timeline,
                    sent,
                    acked: Instant::now(),
                }))
            };
            match tokio::time::timeout(PROBE_TIMEOUT, probe).await {
                Ok(Ok(Some(ack))) => lock(&self.log).probes.push(ack),
                Ok(Ok(None)) => {}
                _ => client = None,
            }
        }
    }
}

/// A small xorshift generator: the workload needs spread, not quality.
struct XorShift(u64);

impl XorShift {
    fn new(seed: u64) -> XorShift {
        XorShift(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// A number in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}
