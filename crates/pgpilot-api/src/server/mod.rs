//! The HTTP/1.0 server (plain or TLS): accept loop, routing, the access check of mutating
//! requests, and the read-side endpoints; the write side is in `write.rs`.
//!
//! This file holds the options, the accept loop and the handling of one connection; the
//! routing and the read side are in `route.rs`, the access check's pieces in `access.rs`,
//! `GET /cluster`'s document in `cluster.rs`, the tests over a real socket in `tests.rs`.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgpilot_dcs::Dcs;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::failsafe::FailsafeSender;
use crate::http::{read_request, write_response, Response};
use crate::tls::ServerTls;
use crate::write::resolve_allowlist;
use crate::{Client, Command, LivePg, NodeSnapshot, PgInfo};

mod access;
mod cluster;
mod route;
#[cfg(test)]
mod tests;

use access::base64;
pub use cluster::cluster_json;
use route::handle;

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
    /// The last live answer, when it came and the agent's snapshot it completed (shared by
    /// concurrent health checks; a new snapshot makes it stale, see `route::live_snapshot`).
    live_cache: std::sync::Mutex<Option<(Instant, Arc<NodeSnapshot>, PgInfo)>>,
}

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
