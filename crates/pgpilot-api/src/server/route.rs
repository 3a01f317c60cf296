//! Routing a request: the read side (`GET`, `HEAD`, `OPTIONS`, with PostgreSQL's state asked
//! at request time), then the access check of every mutating request before the write side.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgpilot_dcs::{Cluster, Dcs, HistoryLine};
use serde_json::Value;

use super::access::{allowed_client, constant_time_eq, unauthorized};
use super::{cluster_json, Shared};
use crate::failsafe;
use crate::health::{health_code, liveness, readiness};
use crate::http::{python_json, Request, Response};
use crate::metrics;
use crate::status::status_document;
use crate::tls::VerifyClient;
use crate::write;
use crate::{NodeSnapshot, State};

/// How long one live PostgreSQL answer serves further requests.
const LIVE_PG_TTL: Duration = Duration::from_millis(250);
/// A PostgreSQL that does not answer within this falls back to the cycle's snapshot.
const LIVE_PG_TIMEOUT: Duration = Duration::from_secs(2);

pub(super) async fn handle<D: Dcs>(
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
    // An answer is shared for LIVE_PG_TTL, and only while the agent has published nothing
    // newer: a restart it finished (and answered `POST /restart` for) publishes a snapshot,
    // and a GET right after must see the new postmaster, not an answer from before.
    let cached = {
        let c = shared.live_cache.lock().unwrap_or_else(|e| e.into_inner());
        c.as_ref()
            .filter(|(at, of, _)| at.elapsed() < LIVE_PG_TTL && Arc::ptr_eq(of, &snap))
            .map(|(_, _, info)| info.clone())
    };
    let info = match cached {
        Some(info) => Some(info),
        None => match tokio::time::timeout(LIVE_PG_TIMEOUT, live()).await {
            Ok(Some(info)) => {
                *shared.live_cache.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some((Instant::now(), snap.clone(), info.clone()));
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
