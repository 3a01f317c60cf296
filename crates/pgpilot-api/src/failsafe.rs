//! Failsafe mode's endpoints (spec/rest-api.md): `GET /failsafe` serves the last `/failsafe`
//! key this member saw; `POST /failsafe` is how a primary that lost the DCS asks this member to
//! keep it as leader. The answer is stored in a `watch` channel that the agent reads each
//! cycle (the API shares no lock with the cycle): for `ttl` after it this member counts the
//! sender as the leader of an unlocked cluster and does not run for the key.

use std::sync::Arc;
use std::time::Instant;

use pgpilot_dcs::Dcs;
use pgpilot_types::FailsafeLeader;
use serde_json::Value;
use tokio::sync::watch;

use crate::http::{python_json, Request, Response};
use crate::server::Shared;
use crate::write::read_json;
use crate::NodeSnapshot;

/// Where the API leaves what `POST /failsafe` told it; the agent holds the receiver.
pub type FailsafeSender = watch::Sender<Option<FailsafeLeader>>;

/// `GET /failsafe`: the `/failsafe` key of the last DCS view (it is wanted most while the DCS
/// is unreachable); 502 when failsafe mode is off or the key is absent.
pub(crate) fn get(snap: &NodeSnapshot) -> Response {
    let key = snap
        .cluster
        .as_deref()
        .and_then(|c| c.failsafe.as_ref())
        .filter(|_| snap.failsafe_mode);
    match key {
        Some(map) => Response::json(200, python_json(&Value::Object(map.clone()))),
        None => Response::error(502, "Bad Gateway"),
    }
}

/// `POST /failsafe` (access already checked, without the members part of the allowlist): 502
/// when failsafe mode is off; 500 `Running as a leader` when PostgreSQL runs as a primary
/// here; else the sender is remembered as the leader and the answer is 200 `Accepted` with
/// this member's received/replayed LSN in the `lsn` header.
pub(crate) fn post<D: Dcs>(shared: &Arc<Shared<D>>, req: &Request) -> Response {
    let snap = shared.snapshot.borrow().clone();
    if !snap.failsafe_mode {
        return Response::error(502, "Bad Gateway");
    }
    let body = match read_json(req, false) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let text = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_string);
    let Some(name) = text("name").filter(|n| !n.is_empty()) else {
        return Response::error(400, "Bad Request");
    };
    if snap.pg.as_ref().is_some_and(|p| !p.in_recovery) {
        return Response::text(500, "Running as a leader");
    }
    let Some(tx) = &shared.failsafe else {
        // No agent listens (a server without one): nothing would honour the promise.
        return Response::text(503, "failsafe is not available");
    };
    tx.send_replace(Some(FailsafeLeader {
        name,
        conn_url: text("conn_url").unwrap_or_default(),
        api_url: text("api_url").unwrap_or_default(),
        slots: body.get("slots").and_then(Value::as_object).cloned(),
        received: Instant::now(),
    }));
    let mut resp = Response::text(200, "Accepted");
    let lsn = snap
        .pg
        .as_ref()
        .and_then(|p| match (p.receive_lsn, p.replay_lsn) {
            (Some(r), Some(p)) => Some(r.max(p)),
            (r, p) => r.or(p),
        });
    if let Some(lsn) = lsn {
        resp.extra_headers.push(("lsn".into(), lsn.to_string()));
    }
    resp
}

/// The snapshot with failsafe shown active when a `POST /failsafe` arrived less than a ttl
/// ago, even if the agent has not run a cycle since (Patroni's replicas report it at once).
pub(crate) fn with_received(
    failsafe: Option<&FailsafeSender>,
    snap: Arc<NodeSnapshot>,
) -> Arc<NodeSnapshot> {
    let Some(received) = failsafe.and_then(|tx| tx.borrow().as_ref().map(|l| l.received)) else {
        return snap;
    };
    let until = received + snap.ttl;
    if !snap.failsafe_mode || snap.failsafe_active_until.is_some_and(|t| t >= until) {
        return snap;
    }
    let mut s = (*snap).clone();
    s.failsafe_active_until = Some(until);
    Arc::new(s)
}
