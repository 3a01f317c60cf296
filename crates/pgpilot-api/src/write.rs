//! The mutating endpoints (spec/rest-api.md §1.5): validation with Patroni's messages and codes,
//! the DCS writes the API does itself (`/config`, `/failover`), and the requests it forwards to
//! the agent over a channel (restart, reinitialize, reload). The HA loop acts on `/failover`; the
//! API only writes it, wakes the local agent and watches the outcome.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use pgpilot_dcs::{truthy, Cluster, Dcs, SyncMode};
use serde_json::{Map, Value};
use tokio::sync::oneshot;

use crate::http::{python_json, Request, Response};
use crate::server::Shared;
use crate::{Command, RestartRequest};

/// `_read_json_content`: no Content-Length -> 411 (or `{}` when the body is optional); an empty
/// body with an optional one -> `{}`; otherwise a JSON object, non-empty unless optional.
pub(crate) fn read_json(req: &Request, optional: bool) -> Result<Map<String, Value>, Response> {
    let Some(body) = &req.body else {
        return if optional {
            Ok(Map::new())
        } else {
            Err(Response::error(411, "Length Required"))
        };
    };
    if body.is_empty() && optional {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(m)) if optional || !m.is_empty() => Ok(m),
        _ => Err(Response::error(400, "Bad Request")),
    }
}

/// Patroni's `patch_config`: `null` deletes a key, objects merge recursively, other values
/// replace when their text differs. Returns whether anything changed.
pub fn deep_merge(config: &mut Map<String, Value>, patch: &Map<String, Value>) -> bool {
    let mut changed = false;
    for (name, value) in patch {
        if value.is_null() {
            if config.remove(name).is_some_and(|v| !v.is_null()) {
                changed = true;
            }
            continue;
        }
        match (config.get_mut(name), value) {
            (Some(Value::Object(cur)), Value::Object(p)) => {
                if deep_merge(cur, p) {
                    changed = true;
                }
            }
            (Some(cur), Value::Object(_)) => {
                *cur = value.clone();
                changed = true;
            }
            (Some(cur), _) => {
                if py_str(cur) != py_str(value) {
                    *cur = value.clone();
                    changed = true;
                }
            }
            (None, _) => {
                config.insert(name.clone(), value.clone());
                changed = true;
            }
        }
    }
    changed
}

/// Python's `str()` of a JSON value, as far as the comparison in `patch_config` needs it.
fn py_str(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Null => "None".into(),
        other => other.to_string(),
    }
}

/// `parse_schedule`: an ISO 8601 timestamp with a time zone, in the future. `Err((code, text))`.
pub fn parse_schedule(text: &str, action: &str) -> Result<jiff::Timestamp, (u16, String)> {
    let unparsable = || {
        (
            422,
            "Unable to parse scheduled timestamp. It should be in an unambiguous format, e.g. ISO 8601"
                .to_string(),
        )
    };
    let ts = match text.trim().parse::<jiff::Timestamp>() {
        Ok(ts) => ts,
        Err(_) => {
            // A valid date and time without an offset is refused for the missing time zone.
            return if text.trim().parse::<jiff::civil::DateTime>().is_ok() {
                Err((
                    400,
                    format!("Timezone information is mandatory for the scheduled {action}"),
                ))
            } else {
                Err(unparsable())
            };
        }
    };
    if ts < jiff::Timestamp::now() {
        return Err((422, format!("Cannot schedule {action} in the past")));
    }
    Ok(ts)
}

/// `timeout` of `POST /restart`: seconds as a number or a string with a unit (`30s`, `2min`).
pub fn parse_timeout(v: &Value) -> Option<Duration> {
    let secs = match v {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => {
            let s = s.trim();
            let split = s
                .find(|c: char| !(c.is_ascii_digit() || c == '.'))
                .unwrap_or(s.len());
            let (num, unit) = s.split_at(split);
            let n: f64 = num.parse().ok()?;
            let mult = match unit.trim() {
                "" | "s" => 1.0,
                "ms" => 0.001,
                "min" => 60.0,
                "h" => 3600.0,
                "d" => 86400.0,
                _ => return None,
            };
            n * mult
        }
        _ => return None,
    };
    (secs.is_finite() && secs >= 1.0).then(|| Duration::from_secs(secs as u64))
}

/// `postgres_version_to_int`: `X.Y` (X ≥ 10) or `X.Y.Z` -> `server_version_num`.
fn postgres_version_to_int(text: &str) -> Result<i32, String> {
    let parts: Result<Vec<i32>, _> = text.split('.').map(str::parse::<i32>).collect();
    let Ok(mut parts) = parts else {
        return Err(format!("Invalid PostgreSQL version: {text}"));
    };
    if parts.len() < 2 || (parts.len() == 2 && parts[0] < 10) || parts.len() > 3 {
        return Err(format!(
            "Invalid PostgreSQL version format: X.Y or X.Y.Z is accepted: {text}"
        ));
    }
    if parts.len() == 2 {
        parts.insert(1, 0);
    }
    Ok(parts[0] * 10000 + parts[1] * 100 + parts[2])
}

async fn ask_agent(
    shared: &Shared<impl Dcs>,
    make: impl FnOnce(oneshot::Sender<(u16, String)>) -> Command,
) -> Response {
    let Some(tx) = &shared.commands else {
        return Response::text(503, "agent is not running");
    };
    let (reply_tx, reply_rx) = oneshot::channel();
    if tx.send(make(reply_tx)).await.is_err() {
        return Response::text(503, "agent is not running");
    }
    match reply_rx.await {
        Ok((code, text)) => Response::text(code, text),
        Err(_) => Response::text(503, "agent is shutting down"),
    }
}

fn wake(shared: &Shared<impl Dcs>) {
    if let Some(tx) = &shared.commands {
        let _ = tx.try_send(Command::Wakeup);
    }
}

/// Routes a mutating request that passed the access check.
pub(crate) async fn handle<D: Dcs>(shared: &Arc<Shared<D>>, req: &Request) -> Response {
    let first = req.first_segment();
    match (req.method.as_str(), first) {
        ("POST", "restart") => post_restart(shared, req).await,
        ("DELETE", "restart") => ask_agent(shared, |reply| Command::DeleteRestart { reply }).await,
        ("POST", "reinitialize") => {
            let body = match read_json(req, true) {
                Ok(b) => b,
                Err(r) => return r,
            };
            let force = body.get("force").is_some_and(truthy);
            let from_leader = body.get("from_leader").is_some_and(truthy);
            ask_agent(shared, |reply| Command::Reinitialize {
                force,
                from_leader,
                reply,
            })
            .await
        }
        ("POST", "reload") => {
            if let Some(tx) = &shared.commands {
                let _ = tx.send(Command::Reload).await;
            }
            Response::text(202, "reload scheduled")
        }
        ("PATCH", "config") => patch_config(shared, req).await,
        ("PUT", "config") => put_config(shared, req).await,
        ("POST", "switchover") => switchover(shared, req, "switchover").await,
        ("POST", "failover") => switchover(shared, req, "failover").await,
        ("DELETE", "switchover") => delete_switchover(shared).await,
        (m, _) => Response::error(501, &format!("Unsupported method ('{m}')")),
    }
}

async fn post_restart<D: Dcs>(shared: &Arc<Shared<D>>, req: &Request) -> Response {
    let body = match read_json(req, true) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let paused = match shared.dcs.cluster().await {
        Ok(c) => c.is_paused(),
        Err(_) => shared.snapshot.borrow().paused,
    };
    if paused && body.contains_key("schedule") {
        return Response::text(500, "Can't schedule restart in the paused state");
    }
    let mut r = RestartRequest {
        published: body.clone(),
        ..Default::default()
    };
    for (k, v) in &body {
        match k.as_str() {
            "schedule" => {
                let Some(text) = v.as_str() else {
                    return Response::text(
                        422,
                        "Unable to parse scheduled timestamp. It should be in an unambiguous format, e.g. ISO 8601",
                    );
                };
                match parse_schedule(text, "restart") {
                    Ok(ts) => r.schedule = Some(ts),
                    Err((code, msg)) => return Response::text(code, msg),
                }
            }
            "role" => match v.as_str() {
                Some(role @ ("primary" | "standby_leader" | "replica")) => {
                    r.role = Some(role.to_string());
                }
                _ => {
                    return Response::text(
                        400,
                        "PostgreSQL role should be either primary, standby_leader, or replica",
                    )
                }
            },
            "postgres_version" => {
                let text = match v {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                match postgres_version_to_int(&text) {
                    Ok(n) => r.postgres_version = Some(n),
                    Err(msg) => return Response::text(400, msg),
                }
            }
            "timeout" => match parse_timeout(v) {
                Some(t) => r.timeout = Some(t),
                None => {
                    return Response::text(400, "Timeout should be a positive number of seconds")
                }
            },
            // Patroni's Ha.restart tests `'restart_pending' in restart_data`: the key's presence,
            // whatever its value.
            "restart_pending" => r.restart_pending = true,
            other => {
                return Response::text(
                    400,
                    format!("Unknown filter for the scheduled restart: {other}"),
                )
            }
        }
    }
    ask_agent(shared, |reply| Command::Restart { request: r, reply }).await
}

async fn patch_config<D: Dcs>(shared: &Arc<Shared<D>>, req: &Request) -> Response {
    let patch = match read_json(req, false) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let cluster = match shared.dcs.cluster_fresh().await {
        Ok(c) => c,
        Err(_) => return Response::error(503, "Service Unavailable"),
    };
    let Some(cfg) = cluster.config else {
        return Response::error(503, "Service Unavailable");
    };
    let mut data = cfg.data.clone();
    if deep_merge(&mut data, &patch) {
        let text = Value::Object(data.clone()).to_string();
        match shared.dcs.set_config(&text, Some(cfg.version)).await {
            Ok(true) => {}
            Ok(false) => return Response::error(409, "Conflict"),
            Err(_) => return Response::error(503, "Service Unavailable"),
        }
    }
    wake(shared);
    Response::json(200, python_json(&Value::Object(data)))
}

async fn put_config<D: Dcs>(shared: &Arc<Shared<D>>, req: &Request) -> Response {
    let doc = match read_json(req, false) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let same = match shared.dcs.cluster_fresh().await {
        Ok(Cluster {
            config: Some(cfg), ..
        }) => cfg.data == doc,
        _ => false,
    };
    if !same {
        let text = Value::Object(doc.clone()).to_string();
        if !matches!(shared.dcs.set_config(&text, None).await, Ok(true)) {
            return Response::error(502, "Bad Gateway");
        }
        wake(shared);
    }
    Response::json(200, python_json(&Value::Object(doc)))
}

async fn delete_switchover<D: Dcs>(shared: &Arc<Shared<D>>) -> Response {
    let cluster = match shared.dcs.cluster_fresh().await {
        Ok(c) => c,
        Err(_) => return Response::error(503, "Service Unavailable"),
    };
    match cluster.failover {
        Some(f) if f.scheduled_at.is_some() => {
            match shared.dcs.set_failover("{}", Some(f.version)).await {
                Ok(true) => Response::text(200, "scheduled switchover deleted"),
                _ => Response::error(409, "Conflict"),
            }
        }
        _ => Response::text(404, "no switchover is scheduled"),
    }
}

/// `POST /switchover` and `POST /failover` (the same handler; `action` differs).
async fn switchover<D: Dcs>(shared: &Arc<Shared<D>>, req: &Request, action: &str) -> Response {
    let body = match read_json(req, false) {
        Ok(b) => b,
        Err(r) => return r,
    };
    let text = |k: &str| {
        body.get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    let leader = text("leader");
    let candidate = text("candidate").or_else(|| text("member"));
    let scheduled_at = body.get("scheduled_at").filter(|v| !v.is_null());
    let cluster = match shared.dcs.cluster_fresh().await {
        Ok(c) => c,
        Err(e) => return Response::text(503, format!("DCS is not accessible: {e}")),
    };
    let paused = cluster.is_paused();

    // Validation, in Patroni's order.
    if action == "failover" && candidate.is_none() {
        return Response::text(
            400,
            "Failover could be performed only to a specific candidate",
        );
    }
    if action == "switchover" && leader.is_none() {
        return Response::text(
            400,
            "Switchover could be performed only from a specific leader",
        );
    }
    let mut schedule = None;
    if let Some(at) = scheduled_at {
        if action == "failover" {
            return Response::text(400, "Failover can't be scheduled");
        }
        if paused {
            return Response::text(400, "Can't schedule switchover in the paused state");
        }
        let Some(at) = at.as_str() else {
            return Response::text(
                422,
                "Unable to parse scheduled timestamp. It should be in an unambiguous format, e.g. ISO 8601",
            );
        };
        match parse_schedule(at, action) {
            Ok(ts) => schedule = Some(ts),
            Err((code, msg)) => return Response::text(code, msg),
        }
    }
    if paused && candidate.is_none() {
        return Response::text(
            400,
            "Switchover is possible only to a specific candidate in a paused state",
        );
    }
    // A failover with a leader is a switchover.
    let action = if action == "failover" && leader.is_some() {
        "switchover"
    } else {
        action
    };
    if leader.is_some() && leader == candidate {
        return Response::text(400, "Switchover target and source are the same");
    }
    if schedule.is_none() {
        if let Some(reason) =
            failover_impossible(shared, &cluster, &leader, &candidate, action).await
        {
            return Response::text(412, reason);
        }
    }

    let mut value = Map::new();
    if let Some(l) = &leader {
        value.insert("leader".into(), Value::from(l.clone()));
    }
    if let Some(c) = &candidate {
        value.insert("member".into(), Value::from(c.clone()));
    }
    if let Some(ts) = schedule {
        let zoned = ts.to_zoned_datetime(jiff::tz::TimeZone::UTC);
        value.insert(
            "scheduled_at".into(),
            Value::from(zoned.strftime("%Y-%m-%dT%H:%M:%S%.f%:z").to_string()),
        );
    }
    if !matches!(
        shared
            .dcs
            .set_failover(&Value::Object(value).to_string(), None)
            .await,
        Ok(true)
    ) {
        return Response::text(503, "failed to write failover key into DCS");
    }
    wake(shared);
    if schedule.is_some() {
        return Response::text(202, "Switchover scheduled");
    }
    poll_result(shared, cluster.leader_name(), candidate.as_deref(), action).await
}

/// `is_failover_possible` of the API (spec/rest-api.md §1.5 step 6); `Some(reason)` -> 412.
async fn failover_impossible<D: Dcs>(
    shared: &Arc<Shared<D>>,
    cluster: &Cluster,
    leader: &Option<String>,
    candidate: &Option<String>,
    action: &str,
) -> Option<String> {
    if let Some(l) = leader {
        if cluster.leader_name() != Some(l.as_str()) {
            return Some("leader name does not match".into());
        }
    }
    let sync_only = crate::status::sync_mode(cluster) == SyncMode::On && action == "switchover";
    let members: Vec<_> = match candidate {
        Some(c) => {
            if sync_only && !crate::status::in_sync_key(cluster, c) {
                return Some("candidate name does not match with sync_standby".into());
            }
            let m: Vec<_> = cluster.members.iter().filter(|m| &m.name == c).collect();
            if m.is_empty() {
                return Some("candidate does not exists".into());
            }
            m
        }
        None => {
            let m: Vec<_> = cluster
                .members
                .iter()
                .filter(|m| {
                    Some(m.name.as_str()) != cluster.leader_name() && !m.data.api_url.is_empty()
                })
                .filter(|m| !sync_only || crate::status::in_sync_key(cluster, &m.name))
                .collect();
            if m.is_empty() && sync_only {
                return Some(format!(
                    "{action} is not possible: can not find sync_standby"
                ));
            }
            if m.is_empty() {
                return Some(format!(
                    "{action} is not possible: cluster does not have members except leader"
                ));
            }
            m
        }
    };
    let mut set = tokio::task::JoinSet::new();
    for m in members {
        let client = shared.client.clone();
        let (name, url) = (m.name.clone(), m.data.api_url.clone());
        set.spawn(async move {
            client
                .peer_status(&name, &url, Duration::from_secs(2))
                .await
        });
    }
    while let Some(r) = set.join_next().await {
        if let Ok(Some(p)) = r {
            if !p.nofailover && !p.watchdog_failed {
                return None;
            }
        }
    }
    Some(format!(
        "{action} is not possible: no good candidates have been found"
    ))
}

/// Watches the DCS until the leader changed, the `/failover` key vanished, or time is up.
async fn poll_result<D: Dcs>(
    shared: &Arc<Shared<D>>,
    old_leader: Option<&str>,
    candidate: Option<&str>,
    action: &str,
) -> Response {
    let (done, title) = if action == "failover" {
        ("failed", "Failover")
    } else {
        ("switched", "Switchover")
    };
    let loop_wait = shared.snapshot.borrow().loop_wait.as_secs().max(10);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(2 * loop_wait);
    while tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let Ok(c) = shared.dcs.cluster().await else {
            continue;
        };
        if let Some(new) = c.leader_name() {
            if Some(new) != old_leader {
                return match candidate {
                    Some(cand) if cand != new => Response::text(
                        200,
                        format!(
                            "{} over to \"{new}\" instead of \"{cand}\"",
                            capitalize(done)
                        ),
                    ),
                    _ => Response::text(200, format!("Successfully {done} over to \"{new}\"")),
                };
            }
        }
        if c.failover.is_none() {
            return Response::text(503, format!("{title} failed"));
        }
    }
    Response::text(
        503,
        format!(
            "{title} status unknown after {} seconds; operation may still be in progress",
            2 * loop_wait
        ),
    )
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

/// `restapi.allowlist` entries: an address or a CIDR block.
pub(crate) fn allowed(client: IpAddr, allow: &[(IpAddr, u8)]) -> bool {
    allow
        .iter()
        .any(|(net, bits)| in_block(client, *net, *bits))
}

fn in_block(ip: IpAddr, net: IpAddr, bits: u8) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(b)) => {
            let bits = u32::from(bits.min(32));
            let mask = if bits == 0 {
                0
            } else {
                u32::MAX << (32 - bits)
            };
            u32::from(a) & mask == u32::from(b) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(b)) => {
            let bits = u32::from(bits.min(128));
            let mask = if bits == 0 {
                0
            } else {
                u128::MAX << (128 - bits)
            };
            u128::from(a) & mask == u128::from(b) & mask
        }
        _ => false,
    }
}

/// Resolves allowlist entries (`10.0.0.0/8`, `192.168.1.5`, `db1.example.com`).
pub(crate) async fn resolve_allowlist(entries: &[String]) -> Vec<(IpAddr, u8)> {
    let mut out = Vec::new();
    for e in entries {
        if let Some((net, bits)) = e.split_once('/') {
            if let (Ok(ip), Ok(bits)) = (net.parse::<IpAddr>(), bits.parse::<u8>()) {
                out.push((ip, bits));
                continue;
            }
        }
        if let Ok(ip) = e.parse::<IpAddr>() {
            out.push((ip, if ip.is_ipv4() { 32 } else { 128 }));
            continue;
        }
        if let Ok(addrs) = tokio::net::lookup_host((e.as_str(), 0)).await {
            for a in addrs {
                out.push((a.ip(), if a.is_ipv4() { 32 } else { 128 }));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(m) => m,
            _ => unreachable!(),
        }
    }

    #[test]
    fn deep_merge_follows_patch_config() {
        let mut c = obj(
            json!({"ttl": 30, "postgresql": {"parameters": {"work_mem": "4MB", "a": 1}}, "x": 1}),
        );
        assert!(
            !deep_merge(&mut c, &obj(json!({"ttl": "30"}))),
            "str() equal: no change"
        );
        assert!(deep_merge(
            &mut c,
            &obj(
                json!({"postgresql": {"parameters": {"work_mem": "8MB", "a": null}}, "x": null, "pause": true})
            )
        ));
        assert_eq!(
            Value::Object(c.clone()),
            json!({"ttl": 30, "postgresql": {"parameters": {"work_mem": "8MB"}}, "pause": true})
        );
        assert!(!deep_merge(&mut c, &obj(json!({"missing": null}))));
    }

    #[test]
    fn schedules() {
        assert_eq!(
            parse_schedule("2000-01-01T00:00:00+00:00", "restart")
                .unwrap_err()
                .0,
            422
        );
        let e = parse_schedule("2099-01-01T00:00:00", "switchover").unwrap_err();
        assert_eq!(
            e,
            (
                400,
                "Timezone information is mandatory for the scheduled switchover".into()
            )
        );
        assert_eq!(parse_schedule("tomorrow", "restart").unwrap_err().0, 422);
        assert!(parse_schedule("2099-01-01T00:00:00+02:00", "restart").is_ok());
    }

    #[test]
    fn versions_and_timeouts() {
        assert_eq!(postgres_version_to_int("15.4"), Ok(150004));
        assert_eq!(postgres_version_to_int("9.6.24"), Ok(90624));
        assert!(postgres_version_to_int("9.6").is_err());
        assert!(postgres_version_to_int("x").is_err());
        assert_eq!(parse_timeout(&json!(30)), Some(Duration::from_secs(30)));
        assert_eq!(
            parse_timeout(&json!("2min")),
            Some(Duration::from_secs(120))
        );
        assert_eq!(parse_timeout(&json!(0)), None);
        assert_eq!(parse_timeout(&json!("abc")), None);
    }

    #[test]
    fn allowlist_blocks() {
        let allow = vec![
            ("10.0.0.0".parse().unwrap(), 8),
            ("127.0.0.1".parse().unwrap(), 32),
        ];
        assert!(allowed("10.1.2.3".parse().unwrap(), &allow));
        assert!(allowed("::ffff:127.0.0.1".parse().unwrap(), &allow));
        assert!(!allowed("127.0.0.2".parse().unwrap(), &allow));
    }
}
