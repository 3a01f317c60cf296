//! The HTTP/1.0 server (plain or TLS): accept loop, routing, the access check of mutating
//! requests, and the read-side endpoints; the write side is in `write.rs`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgpilot_dcs::{Cluster, Dcs, HistoryLine};
use serde_json::{json, Map, Value};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::failsafe::{self, FailsafeSender};
use crate::health::{health_code, liveness, readiness};
use crate::http::{python_json, read_request, write_response, Request, Response};
use crate::metrics;
use crate::status::{status_document, sync_flags};
use crate::tls::{ServerTls, VerifyClient};
use crate::write::{self, allowed, resolve_allowlist};
use crate::{Client, Command, LivePg, NodeSnapshot, PgInfo, Role, State};

/// Connections served at once; more wait in the listen backlog.
const MAX_CONNECTIONS: usize = 64;
/// A client must send its request within this time.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

pub struct ServerOptions {
    /// `restapi.authentication`: required for every mutating request.
    pub auth: Option<(String, String)>,
    /// `restapi.allowlist`: who may call mutating endpoints (empty: anyone).
    pub allowlist: Vec<String>,
    /// `restapi.allowlist_include_members`.
    pub allowlist_include_members: bool,
    /// Where restart/reinitialize/reload requests go (`None`: answered 503).
    pub commands: Option<mpsc::Sender<Command>>,
    /// For the switchover feasibility check (peers' `/patroni`).
    pub client: Client,
    /// HTTPS (`restapi.certfile`).
    pub tls: Option<ServerTls>,
    /// PostgreSQL's state asked at request time.
    pub live_pg: Option<LivePg>,
    /// Where `POST /failsafe` leaves the leader it names, for the agent (`None`: answered 503).
    pub failsafe: Option<FailsafeSender>,
}

pub(crate) struct Shared<D> {
    pub(crate) snapshot: watch::Receiver<Arc<NodeSnapshot>>,
    pub(crate) dcs: Arc<D>,
    /// Expected `Authorization` header value.
    auth_header: Option<String>,
    allowlist: Vec<(IpAddr, u8)>,
    allowlist_include_members: bool,
    pub(crate) commands: Option<mpsc::Sender<Command>>,
    pub(crate) client: Client,
    tls: Option<ServerTls>,
    live_pg: Option<LivePg>,
    pub(crate) failsafe: Option<FailsafeSender>,
    /// The last live answer and when it came (shared by concurrent health checks).
    live_cache: std::sync::Mutex<Option<(Instant, PgInfo)>>,
}

/// How long one live PostgreSQL answer serves further requests.
const LIVE_PG_TTL: Duration = Duration::from_millis(250);
/// A PostgreSQL that does not answer within this falls back to the cycle's snapshot.
const LIVE_PG_TIMEOUT: Duration = Duration::from_secs(2);

/// Serves the API on `listener` until `shutdown` is cancelled.
pub async fn serve<D: Dcs>(
    listener: TcpListener,
    snapshot: watch::Receiver<Arc<NodeSnapshot>>,
    dcs: Arc<D>,
    options: ServerOptions,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let shared = Arc::new(Shared {
        snapshot,
        dcs,
        auth_header: options
            .auth
            .map(|(u, p)| format!("Basic {}", base64(format!("{u}:{p}").as_bytes()))),
        allowlist: resolve_allowlist(&options.allowlist).await,
        allowlist_include_members: options.allowlist_include_members,
        commands: options.commands,
        client: options.client,
        tls: options.tls,
        live_pg: options.live_pg,
        failsafe: options.failsafe,
        live_cache: std::sync::Mutex::new(None),
    });
    let limit = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    debug!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = limit.clone().acquire_owned().await else {
            return Ok(());
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let _permit = permit;
            match &shared.tls {
                None => serve_connection(&shared, stream, peer, false).await,
                Some(tls) => {
                    let accepted =
                        tokio::time::timeout(READ_TIMEOUT, tls.acceptor.accept(stream)).await;
                    let stream = match accepted {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            debug!("TLS handshake with {peer} failed: {e}");
                            return;
                        }
                        Err(_) => return,
                    };
                    let client_cert = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .is_some_and(|c| !c.is_empty());
                    serve_connection(&shared, stream, peer, client_cert).await;
                }
            }
        });
    }
}

/// One request and its answer on an accepted (plain or TLS) connection.
async fn serve_connection<D: Dcs, S>(
    shared: &Arc<Shared<D>>,
    stream: S,
    peer: std::net::SocketAddr,
    client_cert: bool,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let (read, mut write) = tokio::io::split(stream);
    let resp = match tokio::time::timeout(READ_TIMEOUT, read_request(read)).await {
        Ok(Ok(req)) => handle(shared, &req, peer.ip(), client_cert).await,
        Ok(Err(bad)) => Response::error(bad.0, bad.1),
        Err(_) => return,
    };
    if let Err(e) = write_response(&mut write, &resp).await {
        debug!("reply to {peer} failed: {e}");
    }
    // Ends the TLS session properly (close_notify); for plain TCP, a FIN.
    let _ = tokio::io::AsyncWriteExt::shutdown(&mut write).await;
}

async fn handle<D: Dcs>(
    shared: &Arc<Shared<D>>,
    req: &Request,
    peer: IpAddr,
    client_cert: bool,
) -> Response {
    let snap = shared.snapshot.borrow().clone();
    let now = Instant::now();
    let bare = matches!(req.method.as_str(), "HEAD" | "OPTIONS");
    if req.method == "GET" || bare {
        let snap = failsafe::with_received(shared.failsafe.as_ref(), snap);
        let snap = live_snapshot(shared, snap, req).await;
        let mut resp = get(shared, &snap, req, now).await;
        resp.bare = bare;
        return resp;
    }
    // The access check of every mutating endpoint (spec/rest-api.md §1.6): allowlist, then
    // Basic authentication. `POST /failsafe` comes while the DCS is unreachable, so the
    // members' addresses are not asked for it (Patroni's `allowlist_check_members=False`).
    let post_failsafe = req.method == "POST" && req.first_segment() == "failsafe";
    let members = shared.allowlist_include_members && !post_failsafe;
    if (!shared.allowlist.is_empty() || members) && !allowed_client(shared, peer, members).await {
        return Response::text(403, "Access is denied");
    }
    if shared
        .tls
        .as_ref()
        .is_some_and(|t| t.verify_client != VerifyClient::None)
        && !client_cert
    {
        return Response::text(403, "client certificate required");
    }
    if let Some(expected) = &shared.auth_header {
        let Some(given) = req.header("Authorization") else {
            return unauthorized("no auth header received");
        };
        if !constant_time_eq(given.as_bytes(), expected.as_bytes()) {
            return unauthorized("not authenticated");
        }
    }
    if post_failsafe {
        return failsafe::post(shared, req);
    }
    write::handle(shared, req).await
}

/// The snapshot with PostgreSQL's state asked right now (at most every `LIVE_PG_TTL`), for the
/// status document and the health checks. Cluster views and `/liveness` need no query.
async fn live_snapshot<D: Dcs>(
    shared: &Shared<D>,
    snap: Arc<NodeSnapshot>,
    req: &Request,
) -> Arc<NodeSnapshot> {
    let first = req.first_segment();
    let Some(live) = &shared.live_pg else {
        return snap;
    };
    // As Patroni's `get_postgresql_status`: asked while PostgreSQL is running, starting or
    // restarting (a postmaster the agent just started may answer before the next cycle has
    // seen it); during a stop, a clone or a bootstrap the snapshot is the truth.
    if !matches!(
        snap.state,
        State::Running | State::Starting | State::Restarting
    ) || matches!(first, "cluster" | "history" | "config" | "liveness")
    {
        return snap;
    }
    let cached = {
        let c = shared.live_cache.lock().unwrap_or_else(|e| e.into_inner());
        c.as_ref()
            .filter(|(at, _)| at.elapsed() < LIVE_PG_TTL)
            .map(|(_, info)| info.clone())
    };
    let info = match cached {
        Some(info) => Some(info),
        None => match tokio::time::timeout(LIVE_PG_TIMEOUT, live()).await {
            Ok(Some(info)) => {
                *shared.live_cache.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some((Instant::now(), info.clone()));
                Some(info)
            }
            _ => None,
        },
    };
    let mut fresh = (*snap).clone();
    match info {
        Some(info) => fresh.pg = Some(info),
        // The postmaster died (or stopped answering) since the last cycle: say so now, as
        // Patroni does, rather than serve "running" to the load balancer until the next cycle.
        None if snap.state == State::Running => {
            fresh.state = State::Unknown;
            fresh.pg = None;
        }
        // Still starting (or restarting): not answering yet is no news.
        None => return snap,
    }
    Arc::new(fresh)
}

async fn allowed_client<D: Dcs>(shared: &Shared<D>, peer: IpAddr, members: bool) -> bool {
    if allowed(peer, &shared.allowlist) {
        return true;
    }
    if !members {
        return false;
    }
    let Ok(cluster) = shared.dcs.cluster().await else {
        return false;
    };
    let hosts: Vec<String> = cluster
        .members
        .iter()
        .filter_map(|m| {
            let rest = m.data.api_url.split_once("://")?.1;
            let hostport = rest.split('/').next()?;
            let host = match hostport.rsplit_once(':') {
                Some((h, _)) => h,
                None => hostport,
            };
            Some(host.trim_matches(['[', ']']).to_string())
        })
        .collect();
    allowed(peer, &resolve_allowlist(&hosts).await)
}

fn unauthorized(msg: &str) -> Response {
    let mut r = Response::text(401, msg);
    r.extra_headers
        .push(("WWW-Authenticate".into(), "Basic realm=\"Patroni\"".into()));
    r
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn get<D: Dcs>(
    shared: &Arc<Shared<D>>,
    snap: &NodeSnapshot,
    req: &Request,
    now: Instant,
) -> Response {
    let first = req.first_segment();
    match first {
        "patroni" => Response::json(200, python_json(&status_document(snap, now))),
        "metrics" => {
            let mut resp = Response::text(200, metrics::render(snap, &status_document(snap, now)));
            resp.content_type = metrics::CONTENT_TYPE;
            resp
        }
        "liveness" => Response::status_only(liveness(snap, now)),
        "readiness" => Response::status_only(readiness(snap, req, now)),
        "cluster" => match shared.dcs.cluster_fresh().await {
            Ok(c) => Response::json(200, python_json(&cluster_json(snap, &c))),
            Err(e) => Response::text(503, format!("DCS is not accessible: {e}")),
        },
        "history" => match shared.dcs.cluster_fresh().await {
            Ok(c) => {
                let lines: Vec<Value> = c
                    .history
                    .unwrap_or_default()
                    .iter()
                    .map(HistoryLine::to_value)
                    .collect();
                Response::json(200, python_json(&Value::Array(lines)))
            }
            Err(e) => Response::text(503, format!("DCS is not accessible: {e}")),
        },
        "failsafe" => failsafe::get(snap),
        "config" => match shared.dcs.cluster_fresh().await {
            Ok(Cluster {
                config: Some(cfg), ..
            }) => Response::json(200, python_json(&Value::Object(cfg.data))),
            _ => Response::status_only(502),
        },
        _ => Response::json(
            health_code(snap, req, now),
            python_json(&status_document(snap, now)),
        ),
    }
}

fn lsn_text(l: u64) -> String {
    format!("{:X}/{:X}", l >> 32, l & 0xffff_ffff)
}

/// `cluster_as_json`: what `GET /cluster` and `patronictl list` show.
pub fn cluster_json(snap: &NodeSnapshot, c: &Cluster) -> Value {
    let leader = c.leader_name();
    let standby_cluster = c.is_standby_cluster();
    let optime = c.status.optime;
    let mut members = Vec::new();
    for m in &c.members {
        let d = &m.data;
        let is_leader = Some(m.name.as_str()) == leader;
        let mut probe = snap.clone();
        probe.name = m.name.clone();
        probe.role = Role::Replica;
        let (sync, quorum) = sync_flags(&probe, Some(c));
        let role = if is_leader {
            if standby_cluster {
                "standby_leader"
            } else {
                "leader"
            }
        } else if sync {
            "sync_standby"
        } else if quorum {
            "quorum_standby"
        } else {
            "replica"
        };
        let mut o = Map::new();
        o.insert("name".into(), json!(m.name));
        o.insert("role".into(), json!(role));
        let state = if is_leader {
            d.state.clone()
        } else {
            d.replication_state
                .clone()
                .unwrap_or_else(|| d.state.clone())
        };
        o.insert("state".into(), json!(state));
        o.insert("api_url".into(), json!(d.api_url));
        if let Some((host, port)) = d.host_port() {
            o.insert("host".into(), json!(host));
            o.insert("port".into(), json!(port));
        }
        if let Some(tl) = d.timeline {
            o.insert("timeline".into(), json!(tl));
        }
        if d.pending_restart == Some(true) {
            o.insert("pending_restart".into(), json!(true));
            if let Some(r) = &d.pending_restart_reason {
                o.insert("pending_restart_reason".into(), Value::Object(r.clone()));
            }
        }
        if let Some(s) = &d.scheduled_restart {
            o.insert("scheduled_restart".into(), Value::Object(s.clone()));
        }
        if let Some(t) = &d.tags {
            o.insert("tags".into(), Value::Object(t.clone()));
        }
        if !is_leader {
            for (field, lsn) in [
                ("receive", d.receive_lsn),
                ("replay", d.replay_lsn),
                ("", d.xlog_location),
            ] {
                let (lk, gk) = if field.is_empty() {
                    ("lsn".to_string(), "lag".to_string())
                } else {
                    (format!("{field}_lsn"), format!("{field}_lag"))
                };
                match lsn {
                    Some(l) => {
                        o.insert(lk, json!(lsn_text(l)));
                        o.insert(gk, json!(optime.saturating_sub(l)));
                    }
                    None => {
                        o.insert(lk, json!("unknown"));
                        o.insert(gk, json!("unknown"));
                    }
                }
            }
        }
        members.push(Value::Object(o));
    }
    let mut out = Map::new();
    out.insert("members".into(), Value::Array(members));
    out.insert("scope".into(), json!(snap.scope));
    if c.is_paused() {
        out.insert("pause".into(), json!(true));
    }
    if let Some(f) = c.failover.as_ref().filter(|f| f.scheduled_at.is_some()) {
        let mut s = Map::new();
        s.insert("at".into(), json!(f.scheduled_at));
        if let Some(l) = &f.leader {
            s.insert("from".into(), json!(l));
        }
        if let Some(m) = &f.member {
            s.insert("to".into(), json!(m));
        }
        out.insert("scheduled_switchover".into(), Value::Object(s));
    }
    Value::Object(out)
}

fn base64(input: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    use pgpilot_dcs::memory::{MemoryDcs, MemoryStore};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn exchange(addr: std::net::SocketAddr, raw: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(raw.as_bytes()).await.unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    /// Serves `snap` on a free loopback port with these options.
    async fn start(
        snap: NodeSnapshot,
        options: ServerOptions,
    ) -> (
        std::net::SocketAddr,
        CancellationToken,
        tokio::task::JoinHandle<std::io::Result<()>>,
    ) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // The server only borrows the latest value, which a closed channel still holds.
        let (_, rx) = watch::channel(Arc::new(snap));
        let dcs = Arc::new(MemoryDcs::new(
            MemoryStore::new(),
            "/service",
            "batman",
            "pg1",
            Duration::from_secs(20),
        ));
        let stop = CancellationToken::new();
        let server = tokio::spawn(serve(listener, rx, dcs, options, stop.clone()));
        (addr, stop, server)
    }

    fn options(auth: Option<(String, String)>, live_pg: Option<LivePg>) -> ServerOptions {
        ServerOptions {
            auth,
            allowlist: Vec::new(),
            allowlist_include_members: false,
            commands: None,
            client: Client::new(None),
            tls: None,
            live_pg,
            failsafe: None,
        }
    }

    /// Over a real socket: HEAD/OPTIONS answer a bare HTTP/1.0 status line with no headers,
    /// GET /patroni answers JSON, an unauthenticated POST gets 401 with Patroni's realm.
    #[tokio::test]
    async fn wire_format() {
        let mut snap = NodeSnapshot::starting("pg1", "batman");
        snap.state = State::Running;
        let auth = Some(("admin".into(), "secret".into()));
        let (addr, stop, server) = start(snap, options(auth, None)).await;
        assert_eq!(
            exchange(addr, "OPTIONS /replica HTTP/1.0\r\n\r\n").await,
            "HTTP/1.0 503 Service Unavailable\r\n\r\n"
        );
        assert_eq!(
            exchange(addr, "HEAD /health HTTP/1.1\r\nHost: x\r\n\r\n").await,
            "HTTP/1.0 200 OK\r\n\r\n"
        );
        let get = exchange(addr, "GET /patroni HTTP/1.1\r\nHost: x\r\n\r\n").await;
        assert!(get.starts_with("HTTP/1.0 200 OK\r\n"), "{get}");
        assert!(get.contains("Content-Type: application/json\r\n"), "{get}");
        let body: serde_json::Value =
            serde_json::from_str(get.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        assert_eq!(body["patroni"]["name"], "pg1");
        assert_eq!(body["state"], "running");
        let post = exchange(addr, "POST /restart HTTP/1.0\r\nContent-Length: 0\r\n\r\n").await;
        assert!(post.starts_with("HTTP/1.0 401 Unauthorized\r\n"), "{post}");
        assert!(
            post.contains("WWW-Authenticate: Basic realm=\"Patroni\""),
            "{post}"
        );
        let bad = exchange(addr, "\r\n").await;
        assert!(bad.starts_with("HTTP/1.0 400 "), "{bad}");
        stop.cancel();
        server.await.unwrap().unwrap();
    }

    /// Health checks ask PostgreSQL at request time: a replica promoted since the last cycle's
    /// snapshot already answers 200 on /primary's role check (role from the live query).
    #[tokio::test]
    async fn health_checks_use_the_live_postgres_state() {
        let mut snap = NodeSnapshot::starting("pg1", "batman");
        snap.state = State::Running;
        snap.pg = Some(PgInfo {
            in_recovery: true,
            ..Default::default()
        });
        let live: LivePg = Arc::new(|| {
            Box::pin(async {
                Some(PgInfo {
                    in_recovery: false,
                    wal_flush_lsn: Some(42),
                    ..Default::default()
                })
            })
        });
        let (addr, stop, server) = start(snap, options(None, Some(live))).await;
        let get = exchange(addr, "GET /patroni HTTP/1.0\r\n\r\n").await;
        let body: serde_json::Value =
            serde_json::from_str(get.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        assert_eq!(body["role"], "primary", "{body}");
        assert_eq!(body["xlog"]["location"], 42, "{body}");
        stop.cancel();
        server.await.unwrap().unwrap();
    }

    /// A postmaster killed since the last cycle: the live query fails, and the health checks
    /// answer 503 with `state: unknown` at once (Patroni's answer), not "running" until the
    /// next cycle notices.
    #[tokio::test]
    async fn a_failed_live_query_reports_unknown_at_once() {
        let mut snap = NodeSnapshot::starting("pg1", "batman");
        snap.state = State::Running;
        snap.pg = Some(PgInfo {
            in_recovery: true,
            ..Default::default()
        });
        let dead: LivePg = Arc::new(|| Box::pin(async { None }));
        let (addr, stop, server) = start(snap, options(None, Some(dead))).await;
        let get = exchange(addr, "GET /replica HTTP/1.0\r\n\r\n").await;
        assert!(get.starts_with("HTTP/1.0 503 "), "{get}");
        let body: serde_json::Value =
            serde_json::from_str(get.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        assert_eq!(body["state"], "unknown", "{body}");
        stop.cancel();
        server.await.unwrap().unwrap();
    }

    /// A postmaster the agent has just (re)started answers before the next cycle has seen it:
    /// the status document carries what PostgreSQL says (role, timeline) with the agent's state,
    /// as Patroni's does; while it does not answer yet, the snapshot stands (no "unknown").
    #[tokio::test]
    async fn a_starting_postgres_is_asked_too() {
        let mut snap = NodeSnapshot::starting("pg1", "batman");
        snap.state = State::Starting;
        snap.role = Role::Primary;
        let answering: LivePg = Arc::new(|| {
            Box::pin(async {
                Some(PgInfo {
                    in_recovery: false,
                    timeline: 1,
                    ..Default::default()
                })
            })
        });
        let (addr, stop, server) = start(snap.clone(), options(None, Some(answering))).await;
        let get = exchange(addr, "GET / HTTP/1.0\r\n\r\n").await;
        let body: serde_json::Value =
            serde_json::from_str(get.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        assert_eq!(body["state"], "starting", "{body}");
        assert_eq!(body["role"], "primary", "{body}");
        assert_eq!(body["timeline"], 1, "{body}");
        stop.cancel();
        server.await.unwrap().unwrap();

        let silent: LivePg = Arc::new(|| Box::pin(async { None }));
        let (addr, stop, server) = start(snap, options(None, Some(silent))).await;
        let get = exchange(addr, "GET / HTTP/1.0\r\n\r\n").await;
        let body: serde_json::Value =
            serde_json::from_str(get.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        assert_eq!(body["state"], "starting", "{body}");
        assert_eq!(body["role"], "primary", "{body}");
        stop.cancel();
        server.await.unwrap().unwrap();
    }

    /// Slow clients (connections that never finish their request) neither block the health
    /// checks of others nor stay open: each is closed after `READ_TIMEOUT` (the clock is
    /// paused, so this takes no wall time).
    #[tokio::test(start_paused = true)]
    async fn slow_clients_do_not_block_health_checks_and_are_dropped() {
        let mut snap = NodeSnapshot::starting("pg1", "batman");
        snap.state = State::Running;
        let (addr, stop, server) = start(snap, options(None, None)).await;
        let mut idle = Vec::new();
        for _ in 0..MAX_CONNECTIONS / 2 {
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(b"GET /patroni HTTP/1.0\r\nHost: slow")
                .await
                .unwrap();
            idle.push(s);
        }
        let answer = exchange(addr, "HEAD /health HTTP/1.0\r\n\r\n").await;
        assert_eq!(answer, "HTTP/1.0 200 OK\r\n\r\n");
        for mut s in idle {
            let mut buf = Vec::new();
            let read = tokio::time::timeout(READ_TIMEOUT * 2, s.read_to_end(&mut buf)).await;
            assert!(
                matches!(read, Ok(Ok(0))),
                "a slow client is closed without an answer: {read:?} {buf:?}"
            );
        }
        stop.cancel();
        server.await.unwrap().unwrap();
    }

    /// Every mutating endpoint × {no credentials, wrong password, address outside the
    /// allowlist}: Patroni's 401 (with its realm) and 403 `Access is denied`, before any body is
    /// looked at; GETs stay open.
    #[tokio::test]
    async fn authorization_matrix_of_the_mutating_endpoints() {
        let endpoints = [
            ("POST", "/restart"),
            ("DELETE", "/restart"),
            ("POST", "/reinitialize"),
            ("POST", "/reload"),
            ("PATCH", "/config"),
            ("PUT", "/config"),
            ("POST", "/switchover"),
            ("POST", "/failover"),
            ("DELETE", "/switchover"),
            ("POST", "/failsafe"),
        ];
        let auth = Some(("admin".to_string(), "secret".to_string()));
        let snap = || {
            let mut s = NodeSnapshot::starting("pg1", "batman");
            s.state = State::Running;
            s
        };
        let (open, stop_open, server_open) = start(snap(), options(auth.clone(), None)).await;
        let mut outside = options(auth, None);
        outside.allowlist = vec!["10.255.255.1".into()];
        let (fenced, stop_fenced, server_fenced) = start(snap(), outside).await;
        let wrong = format!("Basic {}", base64(b"admin:wrong"));
        for (method, path) in endpoints {
            let bare = format!("{method} {path} HTTP/1.0\r\nContent-Length: 2\r\n\r\n{{}}");
            let got = exchange(open, &bare).await;
            assert!(
                got.starts_with("HTTP/1.0 401 "),
                "{method} {path} without credentials: {got}"
            );
            assert!(
                got.contains("WWW-Authenticate: Basic realm=\"Patroni\""),
                "{got}"
            );
            let with_wrong = format!(
                "{method} {path} HTTP/1.0\r\nAuthorization: {wrong}\r\nContent-Length: 2\r\n\r\n{{}}"
            );
            let got = exchange(open, &with_wrong).await;
            assert!(
                got.starts_with("HTTP/1.0 401 "),
                "{method} {path} wrong password: {got}"
            );
            let got = exchange(fenced, &bare).await;
            assert!(
                got.starts_with("HTTP/1.0 403 "),
                "{method} {path} outside the allowlist: {got}"
            );
            assert!(got.ends_with("Access is denied"), "{got}");
        }
        let health = exchange(fenced, "GET /health HTTP/1.0\r\n\r\n").await;
        assert!(health.starts_with("HTTP/1.0 200 "), "{health}");
        for (stop, server) in [(stop_open, server_open), (stop_fenced, server_fenced)] {
            stop.cancel();
            server.await.unwrap().unwrap();
        }
    }

    fn body_of(answer: &str) -> &str {
        answer.split("\r\n\r\n").nth(1).unwrap_or("")
    }

    fn post_failsafe_request(auth: &str) -> String {
        let body = r#"{"name":"pg2","conn_url":"postgres://127.0.0.2:5432/postgres","api_url":"http://127.0.0.2:8008/patroni","slots":{}}"#;
        format!(
            "POST /failsafe HTTP/1.0\r\nAuthorization: {auth}\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    /// `GET /failsafe` serves the `/failsafe` key of the last DCS view (also once it is stale:
    /// it is wanted while the DCS is away), and 502 when failsafe mode is off or the key absent.
    #[tokio::test]
    async fn get_failsafe_serves_the_last_key_and_502_without_failsafe_mode() {
        let key = serde_json::json!({"pg1": "http://127.0.0.1:8008/patroni", "pg2": "http://127.0.0.2:8008/patroni"});
        let cluster = Cluster {
            failsafe: key.as_object().cloned(),
            ..Default::default()
        };
        let mut snap = NodeSnapshot::starting("pg1", "batman");
        snap.state = State::Running;
        snap.cluster = Some(Arc::new(cluster));
        let (off, stop_off, server_off) = start(snap.clone(), options(None, None)).await;
        snap.failsafe_mode = true;
        let (on, stop_on, server_on) = start(snap.clone(), options(None, None)).await;
        snap.cluster = Some(Arc::new(Cluster::default()));
        let (no_key, stop_no_key, server_no_key) = start(snap, options(None, None)).await;
        let got = exchange(off, "GET /failsafe HTTP/1.0\r\n\r\n").await;
        assert!(got.starts_with("HTTP/1.0 502 "), "{got}");
        let got = exchange(on, "GET /failsafe HTTP/1.0\r\n\r\n").await;
        assert!(got.starts_with("HTTP/1.0 200 "), "{got}");
        assert_eq!(
            serde_json::from_str::<Value>(body_of(&got)).unwrap(),
            key,
            "{got}"
        );
        let got = exchange(no_key, "GET /failsafe HTTP/1.0\r\n\r\n").await;
        assert!(got.starts_with("HTTP/1.0 502 "), "{got}");
        for (stop, server) in [
            (stop_off, server_off),
            (stop_on, server_on),
            (stop_no_key, server_no_key),
        ] {
            stop.cancel();
            server.await.unwrap().unwrap();
        }
    }

    /// `POST /failsafe` on a replica: authenticated (the members part of the allowlist is not
    /// asked: the DCS is down when it comes), 200 `Accepted` with the replica's LSN in the `lsn`
    /// header, the sender handed to the agent, and `/patroni` reporting failsafe active at
    /// once. A primary answers 500 `Running as a leader`; without failsafe mode, 502.
    #[tokio::test]
    async fn post_failsafe_on_a_replica_names_the_leader_for_the_agent() {
        let auth = Some(("admin".to_string(), "secret".to_string()));
        let good = format!("Basic {}", base64(b"admin:secret"));
        let mut replica = NodeSnapshot::starting("pg3", "batman");
        replica.state = State::Running;
        replica.failsafe_mode = true;
        replica.pg = Some(PgInfo {
            in_recovery: true,
            receive_lsn: Some(67_108_960),
            replay_lsn: Some(67_108_000),
            ..Default::default()
        });
        let (tx, rx) = watch::channel(None);
        let mut opts = options(auth.clone(), None);
        opts.allowlist_include_members = true;
        opts.failsafe = Some(tx);
        let (addr, stop, server) = start(replica.clone(), opts).await;
        let before = exchange(addr, "GET /patroni HTTP/1.0\r\n\r\n").await;
        assert!(!before.contains("failsafe_mode_is_active"), "{before}");
        let got = exchange(addr, &post_failsafe_request(&good)).await;
        assert!(got.starts_with("HTTP/1.0 200 "), "{got}");
        assert!(got.contains("\r\nlsn: 67108960\r\n"), "{got}");
        assert_eq!(body_of(&got), "Accepted");
        let leader = rx
            .borrow()
            .clone()
            .expect("the sender is handed to the agent");
        assert_eq!(leader.name, "pg2");
        assert_eq!(leader.api_url, "http://127.0.0.2:8008/patroni");
        assert_eq!(leader.conn_url, "postgres://127.0.0.2:5432/postgres");
        let status = exchange(addr, "GET /patroni HTTP/1.0\r\n\r\n").await;
        let doc: Value = serde_json::from_str(body_of(&status)).unwrap();
        assert_eq!(doc["failsafe_mode_is_active"], true, "{status}");
        let metrics = exchange(addr, "GET /metrics HTTP/1.0\r\n\r\n").await;
        assert!(
            metrics.contains("patroni_failsafe_mode_is_active{scope=\"batman\",name=\"pg3\"} 1\n"),
            "{metrics}"
        );
        // Patroni's body is required: 400 for an empty one.
        let empty = format!(
            "POST /failsafe HTTP/1.0\r\nAuthorization: {good}\r\nContent-Length: 2\r\n\r\n{{}}"
        );
        assert!(exchange(addr, &empty).await.starts_with("HTTP/1.0 400 "));
        // Other mutating endpoints still check the members part of the allowlist.
        let restart = format!(
            "POST /restart HTTP/1.0\r\nAuthorization: {good}\r\nContent-Length: 2\r\n\r\n{{}}"
        );
        assert!(exchange(addr, &restart).await.starts_with("HTTP/1.0 403 "));
        stop.cancel();
        server.await.unwrap().unwrap();

        let mut primary = replica.clone();
        primary.pg = Some(PgInfo {
            in_recovery: false,
            ..Default::default()
        });
        let (tx, rx) = watch::channel(None);
        let mut opts = options(auth.clone(), None);
        opts.failsafe = Some(tx);
        let (addr, stop, server) = start(primary, opts).await;
        let got = exchange(addr, &post_failsafe_request(&good)).await;
        assert!(got.starts_with("HTTP/1.0 500 "), "{got}");
        assert_eq!(body_of(&got), "Running as a leader");
        assert!(rx.borrow().is_none());
        stop.cancel();
        server.await.unwrap().unwrap();

        let mut off = replica;
        off.failsafe_mode = false;
        let (tx, rx) = watch::channel(None);
        let mut opts = options(auth, None);
        opts.failsafe = Some(tx);
        let (addr, stop, server) = start(off, opts).await;
        let got = exchange(addr, &post_failsafe_request(&good)).await;
        assert!(got.starts_with("HTTP/1.0 502 "), "{got}");
        assert!(rx.borrow().is_none());
        stop.cancel();
        server.await.unwrap().unwrap();
    }

    /// A deterministic fuzz of the JSON bodies of the mutating endpoints, authenticated: no
    /// panic, every answer a status line, and the server still answers afterwards.
    #[tokio::test]
    async fn random_bodies_of_mutating_endpoints_never_break_the_server() {
        let mut snap = NodeSnapshot::starting("pg1", "batman");
        snap.state = State::Running;
        let auth = Some(("admin".to_string(), "secret".to_string()));
        let (addr, stop, server) = start(snap, options(auth, None)).await;
        let header = format!("Basic {}", base64(b"admin:secret"));
        let endpoints = [
            ("POST", "/restart"),
            ("POST", "/reinitialize"),
            ("PATCH", "/config"),
            ("PUT", "/config"),
            ("POST", "/switchover"),
            ("POST", "/failover"),
            ("POST", "/failsafe"),
        ];
        let keys = [
            "leader",
            "candidate",
            "scheduled_at",
            "schedule",
            "role",
            "postgres_version",
            "timeout",
            "restart_pending",
            "force",
            "from_leader",
            "ttl",
            "loop_wait",
            "pause",
            "synchronous_mode",
            "postgresql",
            "slots",
            "maximum_lag_on_failover",
        ];
        let values = [
            "null",
            "true",
            "-1",
            "1e308",
            "18446744073709551616",
            "\"\"",
            "\"pg1\"",
            "\"2026-13-45T99:99:99\"",
            "[]",
            "{}",
            "{\"parameters\":{\"x\":[1]}}",
            "\"\\u0000\"",
        ];
        let mut rng = pgpilot_values::fuzz::XorShift::new(0x6a09_e667_f3bc_c908u64);
        let mut next = move || rng.next_u64() as usize;
        for i in 0..pgpilot_values::fuzz::runs(600) {
            let (method, path) = endpoints[i % endpoints.len()];
            let body = match next() % 5 {
                0 => "{".to_string(),
                1 => "[1,2]".to_string(),
                _ => {
                    let fields: Vec<String> = (0..next() % 4)
                        .map(|_| {
                            format!(
                                "\"{}\": {}",
                                keys[next() % keys.len()],
                                values[next() % values.len()]
                            )
                        })
                        .collect();
                    format!("{{{}}}", fields.join(", "))
                }
            };
            let req = format!(
                "{method} {path} HTTP/1.0\r\nAuthorization: {header}\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            let got = exchange(addr, &req).await;
            assert!(
                got.starts_with("HTTP/1.0 "),
                "{method} {path} {body}: {got:?}"
            );
        }
        let health = exchange(addr, "GET /health HTTP/1.0\r\n\r\n").await;
        assert!(health.starts_with("HTTP/1.0 200 "), "{health}");
        stop.cancel();
        server.await.unwrap().unwrap();
    }

    #[test]
    fn base64_basic_auth() {
        assert_eq!(base64(b"admin:admin"), "YWRtaW46YWRtaW4=");
        assert_eq!(base64(b"ab"), "YWI=");
        assert_eq!(base64(b"abc"), "YWJj");
    }
}
