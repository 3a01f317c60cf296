//! etcd v3 backend over native gRPC (etcd-client). Stored bytes and lease/txn semantics are
//! Patroni's (spec/dcs.md §2.5), so Patroni agents and patronictl interoperate.
//!
//! * One lease per agent, TTL = `ttl`, attached to the leader key and our member key.
//! * The lease is kept alive **only by the HA cycle** (`update_leader` forces a keepalive,
//!   `touch_member` refreshes it at most every ttl/3). There is deliberately no free-running
//!   keepalive task: if the agent hangs, its lease must expire so another member can take over.
//! * Reads for the HA cycle come from a watch-fed cache: one range read, then a watch from the
//!   next revision. Our own writes are applied to the cache at once. When the watch is broken the
//!   cache is not trusted: `cluster()` falls back to a direct read, and fails if that fails, so a
//!   primary notices that the DCS is gone instead of acting on a stale view.
//! * Requests and the watch go to one etcd member at a time and move to another when it fails
//!   ([`endpoints`]): a request fails only when no member answered within retry_timeout.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, PutOptions,
    Txn, TxnOp, TxnOpResponse, WatchOptions,
};

mod endpoints;
mod tls;

use endpoints::{normalize_url, Endpoints};
pub use tls::EtcdTls;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::{cluster_prefix, Cluster, Dcs, DcsError, Leader, MemberData, Result, Status};

/// How to reach etcd and who we are.
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    /// Endpoints: `http://host:port`, `https://host:port`, or `host:port` (http). All of one
    /// scheme: a mix is refused.
    pub endpoints: Vec<String>,
    pub namespace: String,
    pub scope: String,
    pub name: String,
    pub ttl: Duration,
    pub retry_timeout: Duration,
    pub loop_wait: Duration,
    pub username: Option<String>,
    pub password: Option<String>,
    /// Add the members etcd reports to `endpoints` (Patroni's default; `use_proxies` turns it
    /// off when the endpoints are proxies or load balancers).
    pub discover_members: bool,
    /// CA and client certificate for `https` endpoints.
    pub tls: EtcdTls,
}

/// One cached key: value, mod_revision, lease.
type Entry = (String, i64, i64);

#[derive(Default)]
struct CacheState {
    /// Keys relative to the prefix.
    entries: BTreeMap<String, Entry>,
    revision: i64,
    /// The watch stream is established and applying events.
    healthy: bool,
    /// Bumped on every change of `entries` (the key of `EtcdDcs::parsed`).
    generation: u64,
}

/// The watch-fed copy of the cluster prefix.
struct Cache {
    state: Mutex<CacheState>,
    /// Bumped on every change of `leader`, `config` or `failover`.
    leader_events: watch::Sender<u64>,
    /// Bumped on every change of `status`.
    status_events: watch::Sender<u64>,
}

impl Cache {
    fn lock(&self) -> std::sync::MutexGuard<'_, CacheState> {
        // A panic while holding this lock leaves plain data behind; keep using it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bump_for(&self, key: &str) {
        if key == "leader" || key == "config" || key == "failover" {
            self.leader_events.send_modify(|n| *n += 1);
        } else if key == "status" || key == "optime/leader" {
            self.status_events.send_modify(|n| *n += 1);
        }
    }

    fn apply_put(&self, key: &str, value: &str, rev: i64, lease: i64) {
        {
            let mut st = self.lock();
            if st.entries.get(key).is_some_and(|(_, r, _)| *r >= rev) {
                return;
            }
            st.entries
                .insert(key.to_string(), (value.to_string(), rev, lease));
            st.revision = st.revision.max(rev);
            st.generation += 1;
        }
        self.bump_for(key);
    }

    fn apply_delete(&self, key: &str, rev: i64) {
        let removed = {
            let mut st = self.lock();
            st.revision = st.revision.max(rev);
            match st.entries.get(key) {
                Some((_, r, _)) if *r < rev || rev == 0 => {
                    st.generation += 1;
                    st.entries.remove(key).is_some()
                }
                _ => false,
            }
        };
        if removed {
            self.bump_for(key);
        }
    }
}

/// etcd v3 client for one member.
pub struct EtcdDcs {
    endpoints: Arc<Endpoints>,
    prefix: String,
    /// The endpoints are https (TLS files in use).
    https: bool,
    /// The options we connected with; `reload_tls` replaces their TLS files.
    settings: Mutex<EtcdOptions>,
    /// What the TLS files in use held when they were read ([`tls_fingerprint`]): a reload that
    /// finds the same keeps the connections.
    tls_read: Mutex<Vec<u8>>,
    name: String,
    ttl: Mutex<Duration>,
    retry_timeout: Mutex<Duration>,
    loop_wait: Duration,
    /// Our lease, granted lazily; `None` after it was lost or the TTL changed.
    lease: tokio::sync::Mutex<Option<i64>>,
    /// Last successful keepalive (for touch_member's once-per-loop_wait refresh).
    last_keepalive: Mutex<Option<Instant>>,
    /// The lease keepalive stream, kept open between renewals (see [`KeepAliveStream`]).
    keepalive_stream: tokio::sync::Mutex<Option<KeepAliveStream>>,
    cache: Arc<Cache>,
    /// Generations of the cache events the HA loop has already seen (set by `cluster()`).
    seen: Mutex<(u64, u64)>,
    /// The cluster last parsed from the cache, with the cache generation it was parsed at.
    parsed: Mutex<Option<(u64, Cluster)>>,
    stop: CancellationToken,
}

/// One LeaseKeepAlive stream per agent, reused by every renewal: a renewal is then one gRPC
/// message each way. Opening a stream per renewal cost a new HTTP/2 stream (headers, etcd's
/// flow-control ping and its answer, a reset when it was dropped) four writes instead of one.
/// The stream belongs to the etcd member it was opened on and to one lease; it is dropped on
/// any error or late answer (a late answer would pair the next request with a stale reply).
struct KeepAliveStream {
    lease: i64,
    member: u64,
    keeper: etcd_client::LeaseKeeper,
    stream: etcd_client::LeaseKeepAliveStream,
}

impl Drop for EtcdDcs {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Whether etcd's answer (as [`endpoints::describe`] renders it) refuses our credentials.
fn refused_credentials(answer: &str) -> bool {
    answer.contains("authentication failed")
        || answer.starts_with("PermissionDenied")
        || answer.starts_with("Unauthenticated")
}

/// HTTP/2 keepalive ping interval: above etcd's default `grpc-keepalive-min-time` (5 s).
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(6);

/// Refuses to go on when etcd denies us our keys (a user without a role on the namespace
/// prefix, no user against an etcd with authentication on): every cycle would fail, so say it
/// at start, with what to grant. A `writer` checks with one transaction whose condition never
/// holds: etcd checks the permissions of both branches (a write of one key, a read of the
/// prefix) and runs neither's write; a reader only reads. Other failures are left to the
/// cycle, which retries them.
async fn check_access(
    endpoints: &Endpoints,
    prefix: &str,
    retry_timeout: Duration,
    writer: bool,
) -> Result<()> {
    let (key, range) = (format!("{prefix}initialize"), prefix.to_string());
    let answer = endpoints
        .call(
            "access check",
            Instant::now() + retry_timeout,
            move |mut c| {
                let read = TxnOp::get(
                    range.clone(),
                    Some(
                        GetOptions::new()
                            .with_prefix()
                            .with_keys_only()
                            .with_limit(1),
                    ),
                );
                let txn = if writer {
                    Txn::new()
                        .when([Compare::create_revision(key.clone(), CompareOp::Less, 0)])
                        .and_then([TxnOp::put(key.clone(), "", None)])
                        .or_else([read])
                } else {
                    Txn::new().and_then([read])
                };
                async move { c.txn(txn).await }
            },
        )
        .await;
    match answer {
        Err(DcsError::Request(e))
            if refused_credentials(&e)
                || e.contains("permission denied")
                || e.contains("user name is empty") =>
        {
            Err(DcsError::Config(format!(
                "etcd refuses us the keys under {prefix}: {e} (the etcd user needs a role with \
                 {} permission on that prefix, or etcd3.username/password if etcd has \
                 authentication on)",
                if writer { "readwrite" } else { "read" }
            )))
        }
        _ => Ok(()),
    }
}

/// The client options of `opts` (its TLS files read now when `https`), with and without the
/// user (for an etcd whose authentication is not enabled).
fn client_options(
    opts: &EtcdOptions,
    https: bool,
    retry_timeout: Duration,
) -> Result<(ConnectOptions, ConnectOptions)> {
    let mut copts = ConnectOptions::new()
        .with_connect_timeout(retry_timeout)
        // etcd refuses HTTP/2 pings more often than every 5 s (grpc-keepalive-min-time): it
        // answers GOAWAY "too many pings" and the connection, the watch and the cache are
        // rebuilt every few seconds. Dead connections are found by these pings within 6 s +
        // retry_timeout; every request of the HA cycle has its own deadline anyway.
        .with_keep_alive(KEEPALIVE_INTERVAL, retry_timeout)
        .with_keep_alive_while_idle(true);
    if https {
        copts = copts.with_tls(opts.tls.options()?);
    }
    let anonymous = copts.clone();
    if let (Some(u), Some(p)) = (&opts.username, &opts.password) {
        // The token etcd hands out expires (--auth-token-ttl): etcd-client authenticates again
        // when a request is refused with "invalid auth token" and repeats it.
        copts = copts
            .with_user(u.clone(), p.clone())
            .with_auto_token_refresh(true);
    }
    Ok((copts, anonymous))
}

/// The paths and contents of the TLS files of `tls` (a file that can not be read counts by its
/// error), to tell a reload with the same files from one with renewed ones.
fn tls_fingerprint(tls: &EtcdTls) -> Vec<u8> {
    let mut out = Vec::new();
    for path in [&tls.cacert, &tls.cert, &tls.key] {
        out.push(0);
        if let Some(path) = path {
            out.extend_from_slice(path.as_os_str().as_encoded_bytes());
            out.push(0);
            match std::fs::read(path) {
                Ok(bytes) => out.extend_from_slice(&bytes),
                Err(e) => out.extend_from_slice(e.to_string().as_bytes()),
            }
        }
    }
    // A new key password with the same files is a change too.
    out.push(0);
    if let Some(p) = &tls.key_password {
        out.extend_from_slice(p.as_bytes());
    }
    out
}

impl EtcdDcs {
    /// Reads the TLS files of `tls` (the etcd section of a reloaded configuration: the same
    /// paths, or new ones) and builds every new etcd connection with them from now on; the
    /// clients built before are forgotten, so the next request to each member connects with
    /// the new certificates (streams already open go on on their connection). A file that can
    /// not be read leaves everything as it was and says why. Nothing to do with http endpoints,
    /// nor when the files (paths and contents) are the ones in use: pglift, for one, sends a
    /// reload with every PostgreSQL setting it changes.
    pub fn reload_tls(&self, tls: EtcdTls) -> Result<()> {
        if !self.https {
            return Ok(());
        }
        let read = tls_fingerprint(&tls);
        if *self.tls_read.lock().unwrap_or_else(|e| e.into_inner()) == read {
            info!("etcd TLS files unchanged: the etcd connections stay as they are");
            return Ok(());
        }
        let mut settings = self
            .settings
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        settings.tls = tls;
        let (copts, anonymous) = client_options(&settings, true, self.retry_timeout())?;
        self.endpoints.replace_options(copts, anonymous);
        *self.settings.lock().unwrap_or_else(|e| e.into_inner()) = settings;
        *self.tls_read.lock().unwrap_or_else(|e| e.into_inner()) = read;
        info!("etcd TLS files read again: new connections use them");
        Ok(())
    }

    /// Connects (retrying every 5 s while no etcd member answers, logging `waiting on etcd`),
    /// discovers the etcd cluster's members and starts the watch cache. Settings that can never
    /// work (a bad TLS file, mixed schemes, credentials etcd refuses) fail at once.
    pub async fn connect(opts: EtcdOptions) -> Result<EtcdDcs> {
        EtcdDcs::connect_until(opts, None, true).await
    }

    /// [`EtcdDcs::connect`] that gives up after `budget` (a test) with the reason of the last
    /// failure (e.g. the TLS handshake error).
    pub async fn connect_within(opts: EtcdOptions, budget: Duration) -> Result<EtcdDcs> {
        EtcdDcs::connect_until(opts, Some(Instant::now() + budget), true).await
    }

    /// [`EtcdDcs::connect_within`] for a client that may only read (`pgpilotctl list` with a
    /// read-only etcd user): only reading the cluster's keys is checked at start; a write it
    /// is not allowed gets etcd's refusal when it is tried.
    pub async fn connect_reader_within(opts: EtcdOptions, budget: Duration) -> Result<EtcdDcs> {
        EtcdDcs::connect_until(opts, Some(Instant::now() + budget), false).await
    }

    async fn connect_until(
        opts: EtcdOptions,
        give_up: Option<Instant>,
        writer: bool,
    ) -> Result<EtcdDcs> {
        if opts.endpoints.is_empty() {
            return Err(DcsError::Config("no etcd endpoint configured".into()));
        }
        let urls: Vec<String> = opts.endpoints.iter().map(|e| normalize_url(e)).collect();
        let https = urls.iter().filter(|u| u.starts_with("https://")).count();
        if https > 0 && https < urls.len() {
            return Err(DcsError::Config(format!(
                "the etcd endpoints mix http and https ({}): use one scheme for all of them",
                urls.join(", ")
            )));
        }
        if https == 0 && opts.tls.is_set() {
            warn!(
                "etcd TLS files are configured but the endpoints are http ({}): they are not used",
                urls.join(", ")
            );
        }
        let (copts, anonymous) = client_options(&opts, https > 0, opts.retry_timeout)?;
        let endpoints = Arc::new(Endpoints::new(
            &urls,
            copts,
            anonymous,
            opts.discover_members,
        ));
        loop {
            let deadline = Instant::now() + opts.retry_timeout;
            match endpoints
                .call("status", deadline, |mut c| async move { c.status().await })
                .await
            {
                Ok(_) => break,
                // Refused credentials ("authentication failed, invalid user ID or password")
                // do not change by waiting. Other answers are waited on as before.
                Err(DcsError::Request(e)) if refused_credentials(&e) => {
                    let hint = if opts.username.is_some() {
                        " (check the etcd username and password)"
                    } else {
                        ""
                    };
                    return Err(DcsError::Config(format!("etcd refused us: {e}{hint}")));
                }
                Err(e) => {
                    // etcd refusing a client without a certificate (TLS 1.3) shows here only as
                    // a cancelled request: say what is likely missing.
                    let e = match e {
                        DcsError::Unavailable(m) if https > 0 && opts.tls.cert.is_none() => {
                            DcsError::Unavailable(format!(
                                "{m}; no client certificate is configured ({}.cert, {}.key): \
                             needed if etcd runs with --client-cert-auth",
                                opts.tls.section_name(),
                                opts.tls.section_name()
                            ))
                        }
                        other => other,
                    };
                    if give_up.is_some_and(|t| Instant::now() + Duration::from_secs(5) > t) {
                        return Err(e);
                    }
                    warn!("waiting on etcd: {e}");
                }
            }
            tokio::time::sleep(Duration::from_secs(5)).await;
        }
        endpoints
            .discover(Instant::now() + opts.retry_timeout)
            .await;
        let prefix = cluster_prefix(&opts.namespace, &opts.scope);
        check_access(&endpoints, &prefix, opts.retry_timeout, writer).await?;
        let (leader_events, _) = watch::channel(0);
        let (status_events, _) = watch::channel(0);
        let cache = Arc::new(Cache {
            state: Mutex::new(CacheState::default()),
            leader_events,
            status_events,
        });
        let dcs = EtcdDcs {
            endpoints,
            prefix,
            https: https > 0,
            settings: Mutex::new(opts.clone()),
            tls_read: Mutex::new(tls_fingerprint(&opts.tls)),
            name: opts.name,
            ttl: Mutex::new(opts.ttl),
            retry_timeout: Mutex::new(opts.retry_timeout),
            loop_wait: opts.loop_wait,
            lease: tokio::sync::Mutex::new(None),
            last_keepalive: Mutex::new(None),
            keepalive_stream: tokio::sync::Mutex::new(None),
            cache,
            seen: Mutex::new((0, 0)),
            parsed: Mutex::new(None),
            stop: CancellationToken::new(),
        };
        tokio::spawn(watch_loop(
            dcs.endpoints.clone(),
            dcs.prefix.clone(),
            dcs.cache.clone(),
            dcs.retry_timeout(),
            dcs.stop.clone(),
        ));
        tokio::spawn(rediscover_loop(
            dcs.endpoints.clone(),
            dcs.retry_timeout(),
            dcs.stop.clone(),
        ));
        Ok(dcs)
    }

    /// The etcd members this client knows (configured and discovered), as URLs.
    pub fn known_endpoints(&self) -> Vec<String> {
        self.endpoints.urls()
    }

    fn retry_timeout(&self) -> Duration {
        *self.retry_timeout.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The deadline of a request (or of a group of requests that form one operation) started
    /// now: no etcd member answering within retry_timeout is a DCS failure.
    fn deadline(&self) -> Instant {
        Instant::now() + self.retry_timeout()
    }

    fn ttl(&self) -> Duration {
        *self.ttl.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn key(&self, rel: &str) -> String {
        format!("{}{rel}", self.prefix)
    }

    /// One request, answered by whichever etcd member can (see [`endpoints`]).
    async fn request<T, F, Fut>(&self, what: &str, deadline: Instant, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: Fn(Client) -> Fut + Clone + Send + 'static,
        Fut: std::future::Future<Output = std::result::Result<T, etcd_client::Error>>
            + Send
            + 'static,
    {
        self.endpoints.call(what, deadline, f).await.map(|(v, _)| v)
    }

    /// Our lease, granted if we have none.
    async fn lease(&self, deadline: Instant) -> Result<i64> {
        let mut guard = self.lease.lock().await;
        if let Some(id) = *guard {
            return Ok(id);
        }
        let ttl = i64::try_from(self.ttl().as_secs()).unwrap_or(30);
        let resp = self
            .request("lease grant", deadline, move |mut c| async move {
                c.lease_grant(ttl, None).await
            })
            .await?;
        info!("granted etcd lease {:x} with ttl {ttl}s", resp.id());
        *guard = Some(resp.id());
        *self
            .last_keepalive
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        Ok(resp.id())
    }

    /// Refreshes our lease; a lease etcd no longer knows is replaced by a new one. Forced by
    /// the leader every cycle; otherwise (a replica's member key) at most every third of the
    /// TTL: a member key that lives on needs no more, and etcd is spared a request per member
    /// per loop_wait.
    async fn keepalive(&self, force: bool, deadline: Instant) -> Result<i64> {
        if !force {
            let every = self.loop_wait.max(self.ttl() / 3);
            let recent = self
                .last_keepalive
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_some_and(|t| t.elapsed() < every);
            if recent {
                return self.lease(deadline).await;
            }
        }
        let id = self.lease(deadline).await?;
        let alive = match self.keepalive_on_stream(id, deadline).await {
            Some(alive) => alive,
            None => self.open_keepalive_stream(id, deadline).await?,
        };
        if !alive {
            warn!("etcd lease {id:x} was lost; granting a new one");
            *self.keepalive_stream.lock().await = None;
            *self.lease.lock().await = None;
            return self.lease(deadline).await;
        }
        *self
            .last_keepalive
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        Ok(id)
    }

    /// A keepalive of lease `id` on the stream kept open: `Some(alive)` when etcd answered
    /// (`false`: it no longer knows the lease), `None` when there is no usable stream (none
    /// yet, another lease, its member no longer the one to use, an error, no answer within its
    /// share of the deadline): the caller then opens a new one through the endpoint plan.
    async fn keepalive_on_stream(&self, id: i64, deadline: Instant) -> Option<bool> {
        let mut slot = self.keepalive_stream.lock().await;
        let mut open = slot.take()?;
        if open.lease != id || !self.endpoints.is_current(open.member) {
            return None;
        }
        // The share a request's first member gets (endpoints::Endpoints::call), so that a
        // frozen member leaves the rest of the deadline to the others.
        let left = deadline.saturating_duration_since(Instant::now());
        let members = u32::try_from(self.endpoints.len()).unwrap_or(u32::MAX);
        let budget = (left / members.saturating_add(1))
            .max(endpoints::MIN_SHARE)
            .min(left);
        let answer = tokio::time::timeout(budget, async {
            open.keeper.keep_alive().await?;
            open.stream.message().await
        })
        .await;
        match answer {
            Ok(Ok(Some(resp))) => {
                let alive = resp.ttl() > 0;
                if alive {
                    *slot = Some(open);
                }
                Some(alive)
            }
            Ok(Ok(None)) => {
                debug!("etcd closed the lease keepalive stream; opening a new one");
                None
            }
            Ok(Err(e)) => {
                debug!("lease keepalive stream: {e}; opening a new one");
                None
            }
            Err(_) => {
                debug!(
                    "no answer on the lease keepalive stream within {budget:?}; opening a new one"
                );
                None
            }
        }
    }

    /// Opens a keepalive stream for lease `id` (which sends one keepalive and reads its
    /// answer) and keeps it for the next renewals; returns whether the lease is alive.
    /// etcd-client reports an expired lease as an error ("lease not found"), etcd itself may
    /// answer NotFound: both mean the lease is gone and a new one is needed.
    async fn open_keepalive_stream(&self, id: i64, deadline: Instant) -> Result<bool> {
        let (opened, member) = self
            .endpoints
            .call("lease keepalive", deadline, move |mut c| async move {
                match c.lease_keep_alive(id).await {
                    Ok(pair) => Ok(Some(pair)),
                    Err(etcd_client::Error::LeaseKeepAliveError(m)) if m.contains("not found") => {
                        Ok(None)
                    }
                    Err(etcd_client::Error::GRpcStatus(s)) if s.code() == tonic::Code::NotFound => {
                        Ok(None)
                    }
                    Err(e) => Err(e),
                }
            })
            .await?;
        let Some((keeper, stream)) = opened else {
            return Ok(false);
        };
        *self.keepalive_stream.lock().await = Some(KeepAliveStream {
            lease: id,
            member,
            keeper,
            stream,
        });
        Ok(true)
    }

    async fn put(&self, rel: &str, value: &str, lease: Option<i64>) -> Result<()> {
        let opts = lease.map(|l| PutOptions::new().with_lease(l));
        let (key, val) = (self.key(rel), value.to_string());
        let resp = self
            .request("put", self.deadline(), move |mut c| {
                let (key, val, opts) = (key.clone(), val.clone(), opts.clone());
                async move { c.put(key, val, opts).await }
            })
            .await?;
        let rev = resp.header().map_or(0, |h| h.revision());
        self.cache.apply_put(rel, value, rev, lease.unwrap_or(0));
        Ok(())
    }

    /// Runs a txn; returns whether it succeeded, its revision and the responses.
    async fn txn(&self, txn: Txn, deadline: Instant) -> Result<(bool, i64, Vec<TxnOpResponse>)> {
        let resp = self
            .request("txn", deadline, move |mut c| {
                let txn = txn.clone();
                async move { c.txn(txn).await }
            })
            .await?;
        let rev = resp.header().map_or(0, |h| h.revision());
        Ok((resp.succeeded(), rev, resp.op_responses()))
    }

    async fn cas_put(
        &self,
        rel: &str,
        value: &str,
        compare: Compare,
        lease: Option<i64>,
        deadline: Instant,
    ) -> Result<bool> {
        let opts = lease.map(|l| PutOptions::new().with_lease(l));
        let txn = Txn::new()
            .when([compare])
            .and_then([TxnOp::put(self.key(rel), value, opts)]);
        let (ok, rev, _) = self.txn(txn, deadline).await?;
        if ok {
            self.cache.apply_put(rel, value, rev, lease.unwrap_or(0));
        }
        Ok(ok)
    }

    /// Put, with a CAS on the key's mod_revision when `version` is given (`/config`,
    /// `/failover`). `Ok(false)` = the key changed meanwhile.
    async fn put_if_version(&self, rel: &str, value: &str, version: Option<i64>) -> Result<bool> {
        match version {
            Some(v) => {
                let cmp = Compare::mod_revision(self.key(rel), CompareOp::Equal, v);
                self.cas_put(rel, value, cmp, None, self.deadline()).await
            }
            None => self.put(rel, value, None).await.map(|()| true),
        }
    }

    async fn read(&self, serializable: bool) -> Result<Cluster> {
        let mut opts = GetOptions::new().with_prefix();
        if serializable {
            opts = opts.with_serializable();
        }
        let prefix = self.prefix.clone();
        let resp = self
            .request("range", self.deadline(), move |mut c| {
                let (prefix, opts) = (prefix.clone(), opts.clone());
                async move { c.get(prefix, Some(opts)).await }
            })
            .await?;
        let entries: Vec<(String, String, i64, i64)> = resp
            .kvs()
            .iter()
            .filter_map(|kv| {
                let key = kv.key_str().ok()?.strip_prefix(&self.prefix)?.to_string();
                Some((
                    key,
                    kv.value_str().ok()?.to_string(),
                    kv.mod_revision(),
                    kv.lease(),
                ))
            })
            .collect();
        let mut c = Cluster::from_entries(
            entries
                .iter()
                .map(|(k, v, r, l)| (k.as_str(), v.as_str(), *r, *l)),
        );
        c.revision = resp.header().map_or(0, |h| h.revision());
        Ok(c)
    }
}

/// How often the list of etcd members is asked again (Patroni refreshes its cache of etcd
/// members every 5 minutes too).
const REDISCOVER_EVERY: Duration = Duration::from_secs(300);

async fn rediscover_loop(endpoints: Arc<Endpoints>, timeout: Duration, stop: CancellationToken) {
    loop {
        sleep_or_stop(&stop, REDISCOVER_EVERY).await;
        if stop.is_cancelled() {
            return;
        }
        endpoints.discover(Instant::now() + timeout).await;
    }
}

/// Keeps the cache in line with etcd: range, then watch from the next revision on the member
/// that answered; starts over on any error, compaction or cancellation, and when requests
/// moved to another member (the watched one failed: a silent, SIGSTOPped member would
/// otherwise hold the stream open with no events until the HTTP/2 pings time out).
async fn watch_loop(
    endpoints: Arc<Endpoints>,
    prefix: String,
    cache: Arc<Cache>,
    timeout: Duration,
    stop: CancellationToken,
) {
    let mut moved = endpoints.subscribe();
    loop {
        if stop.is_cancelled() {
            return;
        }
        moved.borrow_and_update();
        let range_prefix = prefix.clone();
        let range = endpoints
            .call("watch range", Instant::now() + timeout, move |mut c| {
                let p = range_prefix.clone();
                async move { c.get(p, Some(GetOptions::new().with_prefix())).await }
            })
            .await;
        let (resp, member) = match range {
            Ok(r) => r,
            Err(e) => {
                debug!("watch cache: range failed: {e}");
                cache.lock().healthy = false;
                sleep_or_stop(&stop, Duration::from_secs(1)).await;
                continue;
            }
        };
        let revision = resp.header().map_or(0, |h| h.revision());
        {
            let mut st = cache.lock();
            st.entries = resp
                .kvs()
                .iter()
                .filter_map(|kv| {
                    let key = kv.key_str().ok()?.strip_prefix(&prefix)?.to_string();
                    Some((
                        key,
                        (
                            kv.value_str().ok()?.to_string(),
                            kv.mod_revision(),
                            kv.lease(),
                        ),
                    ))
                })
                .collect();
            st.revision = revision;
            st.generation += 1;
        }
        cache.leader_events.send_modify(|n| *n += 1);
        cache.status_events.send_modify(|n| *n += 1);
        // The watch goes to the member that served the range.
        let Some((id, mut client)) = endpoints.preferred().filter(|(id, _)| *id == member) else {
            cache.lock().healthy = false;
            continue;
        };
        let opts = WatchOptions::new()
            .with_prefix()
            .with_start_revision(revision + 1);
        let mut stream =
            match tokio::time::timeout(timeout, client.watch(prefix.clone(), Some(opts))).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    cache.lock().healthy = false;
                    if endpoints::is_member_failure(&e) {
                        endpoints.failed(id, &format!("watch: {e}"));
                    }
                    sleep_or_stop(&stop, Duration::from_secs(1)).await;
                    continue;
                }
                Err(_) => {
                    cache.lock().healthy = false;
                    endpoints.failed(id, "watch: no answer");
                    continue;
                }
            };
        cache.lock().healthy = true;
        loop {
            let msg = tokio::select! {
                _ = stop.cancelled() => return,
                changed = moved.changed() => {
                    if changed.is_err() || !endpoints.is_current(id) {
                        debug!("watch cache: requests moved to another etcd member, following");
                        break;
                    }
                    continue;
                }
                m = stream.message() => m,
            };
            match msg {
                Ok(Some(resp)) => {
                    if resp.canceled() || resp.compact_revision() > 0 {
                        if resp.canceled() && resp.compact_revision() == 0 {
                            // e.g. "no leader": this member lost the etcd quorum.
                            endpoints
                                .failed(id, &format!("watch canceled: {}", resp.cancel_reason()));
                        }
                        break;
                    }
                    for ev in resp.events() {
                        let Some(kv) = ev.kv() else { continue };
                        let Some(key) = kv.key_str().ok().and_then(|k| k.strip_prefix(&prefix))
                        else {
                            continue;
                        };
                        match ev.event_type() {
                            EventType::Put => cache.apply_put(
                                key,
                                kv.value_str().unwrap_or(""),
                                kv.mod_revision(),
                                kv.lease(),
                            ),
                            EventType::Delete => cache.apply_delete(key, kv.mod_revision()),
                        }
                    }
                }
                Ok(None) => {
                    endpoints.failed(id, "watch stream closed");
                    break;
                }
                Err(e) => {
                    if endpoints::is_member_failure(&e) {
                        endpoints.failed(id, &format!("watch stream: {e}"));
                    }
                    break;
                }
            }
        }
        cache.lock().healthy = false;
        debug!("watch cache: stream ended, starting over");
    }
}

async fn sleep_or_stop(stop: &CancellationToken, d: Duration) {
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = tokio::time::sleep(d) => {}
    }
}

impl Dcs for EtcdDcs {
    fn member_name(&self) -> &str {
        &self.name
    }

    async fn cluster(&self) -> Result<Cluster> {
        let generations = (
            *self.cache.leader_events.borrow(),
            *self.cache.status_events.borrow(),
        );
        let cached = {
            let st = self.cache.lock();
            st.healthy.then(|| {
                let mut parsed = self.parsed.lock().unwrap_or_else(|e| e.into_inner());
                // The member keys are parsed again only when a key changed: an idle cycle
                // costs a copy, not a JSON parse of every member.
                match parsed.as_ref() {
                    Some((generation, c))
                        if *generation == st.generation && c.revision == st.revision =>
                    {
                        c.clone()
                    }
                    _ => {
                        let mut c = Cluster::from_entries(
                            st.entries
                                .iter()
                                .map(|(k, (v, r, l))| (k.as_str(), v.as_str(), *r, *l)),
                        );
                        c.revision = st.revision;
                        *parsed = Some((st.generation, c.clone()));
                        c
                    }
                }
            })
        };
        let c = match cached {
            Some(c) => c,
            None => self.read(false).await?,
        };
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = generations;
        Ok(c)
    }

    async fn cluster_fresh(&self) -> Result<Cluster> {
        self.read(false).await
    }

    async fn touch_member(&self, data: &MemberData) -> Result<()> {
        let lease = self.keepalive(false, self.deadline()).await?;
        let json = data.to_json();
        let rel = format!("members/{}", self.name);
        let unchanged = self
            .cache
            .lock()
            .entries
            .get(&rel)
            .is_some_and(|(v, _, l)| *v == json && *l == lease);
        if unchanged {
            return Ok(());
        }
        self.put(&rel, &json, Some(lease)).await
    }

    async fn attempt_to_acquire_leader(&self) -> Result<bool> {
        // One deadline for the keepalive and the transaction: the whole attempt fits in
        // retry_timeout, as the timing rule loop_wait + 2 × retry_timeout ≤ ttl assumes.
        let deadline = self.deadline();
        let lease = self.keepalive(true, deadline).await?;
        let won = self
            .cas_put(
                "leader",
                &self.name,
                Compare::create_revision(self.key("leader"), CompareOp::Equal, 0),
                Some(lease),
                deadline,
            )
            .await?;
        Ok(won)
    }

    async fn update_leader(&self, leader: Option<&Leader>) -> Result<bool> {
        // One deadline for the keepalive and the rebinding transaction (see
        // attempt_to_acquire_leader).
        let deadline = self.deadline();
        let lease = self.keepalive(true, deadline).await?;
        let cached = self.cache.lock().entries.get("leader").cloned();
        let current = leader
            .map(|l| (l.name.clone(), l.lease))
            .or(cached.map(|(v, _, l)| (v, l)));
        if current
            .as_ref()
            .is_some_and(|(n, l)| *n == self.name && *l == lease)
        {
            return Ok(true);
        }
        // The key is on another (lost) lease of ours, or gone: rebind it if it is still ours,
        // or re-create it if nobody holds it.
        let key = self.key("leader");
        let put = TxnOp::put(
            key.clone(),
            self.name.clone(),
            Some(PutOptions::new().with_lease(lease)),
        );
        let inner = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([put.clone()]);
        let txn = Txn::new()
            .when([Compare::value(key, CompareOp::Equal, self.name.clone())])
            .and_then([put])
            .or_else([TxnOp::txn(inner)]);
        let (ok, rev, responses) = self.txn(txn, deadline).await?;
        let ok = ok
            || responses.iter().any(|r| match r {
                TxnOpResponse::Txn(t) => t.succeeded(),
                _ => false,
            });
        if ok {
            self.cache.apply_put("leader", &self.name, rev, lease);
        }
        Ok(ok)
    }

    async fn keep_leader_lease(&self) -> Result<bool> {
        let lease = self.keepalive(true, self.deadline()).await?;
        let cached = self.cache.lock().entries.get("leader").cloned();
        // A lease etcd had forgotten was replaced by a new one (`keepalive`): the key went with
        // the old lease and is not ours any more.
        Ok(cached.is_some_and(|(name, _, l)| name == self.name && l == lease))
    }

    async fn take_leader(&self) -> Result<()> {
        let lease = self.keepalive(true, self.deadline()).await?;
        self.put("leader", &self.name.clone(), Some(lease)).await
    }

    async fn delete_leader(&self) -> Result<bool> {
        let key = self.key("leader");
        let txn = Txn::new()
            .when([Compare::value(
                key.clone(),
                CompareOp::Equal,
                self.name.clone(),
            )])
            .and_then([TxnOp::delete(key, None::<DeleteOptions>)]);
        let (ok, rev, _) = self.txn(txn, self.deadline()).await?;
        if ok {
            self.cache.apply_delete("leader", rev);
        }
        Ok(ok)
    }

    async fn initialize(&self, create_new: bool, sysid: &str) -> Result<bool> {
        if create_new {
            return self
                .cas_put(
                    "initialize",
                    sysid,
                    Compare::create_revision(self.key("initialize"), CompareOp::Equal, 0),
                    None,
                    self.deadline(),
                )
                .await;
        }
        self.put("initialize", sysid, None).await?;
        Ok(true)
    }

    async fn cancel_initialization(&self) -> Result<()> {
        let key = self.key("initialize");
        let resp = self
            .request("delete", self.deadline(), move |mut c| {
                let key = key.clone();
                async move { c.delete(key, None).await }
            })
            .await?;
        self.cache
            .apply_delete("initialize", resp.header().map_or(0, |h| h.revision()));
        Ok(())
    }

    async fn set_config(&self, value: &str, version: Option<i64>) -> Result<bool> {
        self.put_if_version("config", value, version).await
    }

    async fn set_failover(&self, value: &str, version: Option<i64>) -> Result<bool> {
        self.put_if_version("failover", value, version).await
    }

    async fn set_sync(&self, value: &str, version: Option<i64>) -> Result<bool> {
        self.put_if_version("sync", value, version).await
    }

    async fn delete_sync(&self, version: Option<i64>) -> Result<bool> {
        let key = self.key("sync");
        let mut txn = Txn::new();
        if let Some(v) = version {
            txn = txn.when([Compare::mod_revision(key.clone(), CompareOp::Equal, v)]);
        }
        let txn = txn.and_then([TxnOp::delete(key, None::<DeleteOptions>)]);
        let (ok, rev, _) = self.txn(txn, self.deadline()).await?;
        if ok {
            self.cache.apply_delete("sync", rev);
        }
        Ok(ok)
    }

    async fn set_history(&self, value: &str) -> Result<()> {
        self.put("history", value, None).await
    }

    async fn set_failsafe(&self, value: &str) -> Result<()> {
        self.put("failsafe", value, None).await
    }

    async fn write_status(&self, status: &Status) -> Result<()> {
        let json = status.to_json();
        // An idle primary's optime does not move: skip the write (the cache holds our own
        // writes and every change made by others).
        let unchanged = {
            let st = self.cache.lock();
            st.healthy && st.entries.get("status").is_some_and(|(v, _, _)| *v == json)
        };
        if unchanged {
            return Ok(());
        }
        self.put("status", &json, None).await
    }

    fn set_ttl(&self, ttl: Duration) {
        *self.ttl.lock().unwrap_or_else(|e| e.into_inner()) = ttl;
        if let Ok(mut l) = self.lease.try_lock() {
            *l = None;
        }
    }

    fn set_retry_timeout(&self, retry_timeout: Duration) {
        *self.retry_timeout.lock().unwrap_or_else(|e| e.into_inner()) = retry_timeout;
    }

    async fn watch(&self, timeout: Duration, leader_is_me: bool) -> bool {
        let (seen_leader, seen_status) = *self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let mut leader_rx = self.cache.leader_events.subscribe();
        let mut status_rx = self.cache.status_events.subscribe();
        let fired = |l: u64, s: u64| l != seen_leader || (!leader_is_me && s != seen_status);
        if fired(*leader_rx.borrow(), *status_rx.borrow()) {
            return true;
        }
        let wait = async {
            loop {
                tokio::select! {
                    r = leader_rx.changed() => if r.is_err() { return false },
                    r = status_rx.changed(), if !leader_is_me => if r.is_err() { return false },
                }
                if fired(*leader_rx.borrow(), *status_rx.borrow()) {
                    return true;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.unwrap_or(false)
    }

    async fn delete_cluster(&self) -> Result<()> {
        let prefix = self.prefix.clone();
        self.request("delete prefix", self.deadline(), move |mut c| {
            let prefix = prefix.clone();
            async move {
                c.delete(prefix, Some(DeleteOptions::new().with_prefix()))
                    .await
            }
        })
        .await?;
        Ok(())
    }

    async fn close(&self) -> Result<()> {
        *self.keepalive_stream.lock().await = None;
        let id = self.lease.lock().await.take();
        if let Some(id) = id {
            self.request("lease revoke", self.deadline(), move |mut c| async move {
                c.lease_revoke(id).await
            })
            .await?;
        }
        Ok(())
    }
}
