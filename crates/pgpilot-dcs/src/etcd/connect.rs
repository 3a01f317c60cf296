//! Connecting to etcd: the client options (credentials, TLS, HTTP/2 keepalive), the start-up
//! checks (an etcd member answers, our keys are not refused), the reload of the TLS files, and
//! the periodic rediscovery of the etcd members.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{Compare, CompareOp, ConnectOptions, GetOptions, Txn, TxnOp};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::cache::{sleep_or_stop, watch_loop, Cache, CacheState};
use super::endpoints::{normalize_url, Endpoints};
use super::{EtcdDcs, EtcdOptions, EtcdTls};
use crate::{cluster_prefix, DcsError, Result};

/// Whether etcd's answer (as [`endpoints::describe`] renders it) refuses our credentials.
///
/// [`endpoints::describe`]: super::endpoints::describe
fn refused_credentials(answer: &str) -> bool {
    answer.contains("authentication failed")
        || answer.starts_with("PermissionDenied")
        || answer.starts_with("Unauthenticated")
}

/// The shortest HTTP/2 keepalive ping interval: above etcd's default
/// `grpc-keepalive-min-time` (5 s).
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(6);

/// The HTTP/2 keepalive ping interval for these timings: 6 s, or `loop_wait + retry_timeout`
/// when that is longer.
///
/// hyper pings when nothing was read from the connection for the interval. The agent reads
/// from it at least once per loop_wait while it runs (the leader's renewals, every member's
/// keepalive of its own lease, at most every max(loop_wait, ttl/3)), and each of those
/// requests has a deadline of retry_timeout, after which the client drops the connection: that
/// finds a dead connection (and with it a stalled watch) within about loop_wait +
/// retry_timeout. A ping sooner than that finds it no earlier in a cycle's terms, and at
/// Patroni's default timings (loop_wait 10) a 6 s ping was one more wake-up, two frames out
/// and one in, per cycle of an idle agent, for nothing. The ping stays as the backstop for a
/// connection nothing else reads from.
fn keepalive_interval(loop_wait: Duration, retry_timeout: Duration) -> Duration {
    KEEPALIVE_INTERVAL.max(loop_wait + retry_timeout)
}

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
        // rebuilt every few seconds. Every request of the HA cycle has its own deadline, and
        // the pings come only when the cycle's requests have not read anything for a while
        // ([`keepalive_interval`]).
        .with_keep_alive(
            keepalive_interval(opts.loop_wait, retry_timeout),
            retry_timeout,
        )
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
pub(super) fn tls_fingerprint(tls: &EtcdTls) -> Vec<u8> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pings_come_after_a_cycle_without_reads_and_never_under_etcds_minimum() {
        let s = Duration::from_secs;
        // Patroni's defaults: a renewal or a lease keepalive reads every 10 s.
        assert_eq!(keepalive_interval(s(10), s(10)), s(20));
        // The fast profiles keep etcd's floor plus a second.
        assert_eq!(keepalive_interval(s(1), s(3)), s(6));
        assert_eq!(keepalive_interval(s(1), s(2)), s(6));
    }
}
