//! The HTTP/1.0 server: accept loop, request parsing, routing.

use std::sync::Arc;

use pgpilot_dcs::Dcs;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::NodeSnapshot;

pub struct ServerOptions {
    /// `restapi.authentication` (protects mutating endpoints; none exist yet in this version).
    pub auth: Option<(String, String)>,
}

/// Serves the API on `listener` until `shutdown` is cancelled.
pub async fn serve<D: Dcs>(
    listener: TcpListener,
    snapshot: watch::Receiver<Arc<NodeSnapshot>>,
    dcs: Arc<D>,
    options: ServerOptions,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let _ = (listener, snapshot, dcs, options, shutdown);
    unimplemented!()
}
