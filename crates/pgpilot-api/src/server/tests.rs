//! The server over a real socket: wire format, live PostgreSQL state, slow clients, the
//! access check of every mutating endpoint, failsafe, and a fuzz of the write bodies.

use super::*;

use pgpilot_dcs::memory::{MemoryDcs, MemoryStore};
use pgpilot_dcs::Cluster;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::{Role, State};

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
    // The server only borrows the latest value, which a closed channel still holds.
    let (_, rx) = watch::channel(Arc::new(snap));
    serve_snapshots(rx, options).await
}

/// Serves the snapshots `rx` receives on a free loopback port with these options.
async fn serve_snapshots(
    rx: watch::Receiver<Arc<NodeSnapshot>>,
    options: ServerOptions,
) -> (
    std::net::SocketAddr,
    CancellationToken,
    tokio::task::JoinHandle<std::io::Result<()>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
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

/// Live answers are shared for a moment, but never across a snapshot the agent published
/// since: after a restart the agent answers `POST /restart` once it has published the new
/// postmaster, and a GET right after must not get the answer from before the restart.
#[tokio::test]
async fn a_new_snapshot_makes_the_shared_live_answer_stale() {
    use std::sync::atomic::{AtomicU64, Ordering};
    let mut snap = NodeSnapshot::starting("pg1", "batman");
    snap.state = State::Running;
    let started = Arc::new(AtomicU64::new(1));
    let asked = started.clone();
    let live: LivePg = Arc::new(move || {
        let n = asked.load(Ordering::SeqCst);
        Box::pin(async move {
            Some(PgInfo {
                postmaster_start_time: format!("start {n}"),
                ..Default::default()
            })
        })
    });
    let (tx, rx) = watch::channel(Arc::new(snap.clone()));
    let (addr, stop, server) = serve_snapshots(rx, options(None, Some(live))).await;
    let start_time = |raw: String| -> Value {
        let body: Value = serde_json::from_str(raw.split("\r\n\r\n").nth(1).unwrap()).unwrap();
        body["postmaster_start_time"].clone()
    };
    let get = "GET /patroni HTTP/1.0\r\n\r\n";
    assert_eq!(start_time(exchange(addr, get).await), "start 1");
    // PostgreSQL restarted and the agent published a new snapshot, well within the sharing
    // time (a loaded machine may take longer; the answer is then asked again anyway).
    started.store(2, Ordering::SeqCst);
    tx.send(Arc::new(snap)).unwrap();
    assert_eq!(start_time(exchange(addr, get).await), "start 2");
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
    let restart =
        format!("POST /restart HTTP/1.0\r\nAuthorization: {good}\r\nContent-Length: 2\r\n\r\n{{}}");
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
