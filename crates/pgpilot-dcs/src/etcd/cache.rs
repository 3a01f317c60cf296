//! The watch-fed cache of the cluster prefix: the cached keys, the events the HA loop waits
//! on, and the task that keeps the cache in line with etcd (a range read, then a watch).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{EventType, GetOptions, WatchOptions};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::endpoints::{self, Endpoints};

/// One cached key: value, mod_revision, lease.
type Entry = (String, i64, i64);

#[derive(Default)]
pub(super) struct CacheState {
    /// Keys relative to the prefix.
    pub(super) entries: BTreeMap<String, Entry>,
    pub(super) revision: i64,
    /// The watch stream is established and applying events.
    pub(super) healthy: bool,
    /// Bumped on every change of `entries` (the key of `EtcdDcs::parsed`).
    pub(super) generation: u64,
}

/// The watch-fed copy of the cluster prefix.
pub(super) struct Cache {
    pub(super) state: Mutex<CacheState>,
    /// Bumped on every change of `leader`, `config` or `failover`.
    pub(super) leader_events: watch::Sender<u64>,
    /// Bumped on every change of `status`.
    pub(super) status_events: watch::Sender<u64>,
}

impl Cache {
    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, CacheState> {
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

    pub(super) fn apply_put(&self, key: &str, value: &str, rev: i64, lease: i64) {
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

    /// A direct read's keys (relative key, value, mod_revision, lease): the cache never shows
    /// an older value of a key than a view the HA loop already got, even while its own range
    /// and watch lag behind that read (so `cluster()` does not go back in time after a
    /// `cluster_fresh()` or a read made while the watch was down). A key the read did not
    /// find stays until the watch delivers its deletion: the cache may lag, never regress.
    pub(super) fn absorb(&self, entries: &[(String, String, i64, i64)]) {
        for (key, value, rev, lease) in entries {
            self.apply_put(key, value, *rev, *lease);
        }
    }

    /// The watch loop's range read at `revision`: the whole prefix as it was then. A key
    /// newer than that (a direct read absorbed meanwhile, see [`Self::absorb`]) stays.
    fn install_range(&self, mut entries: BTreeMap<String, Entry>, revision: i64) {
        {
            let mut st = self.lock();
            let before = std::mem::take(&mut st.entries);
            entries.extend(before.into_iter().filter(|(_, (_, r, _))| *r > revision));
            st.entries = entries;
            st.revision = st.revision.max(revision);
            st.generation += 1;
        }
        self.leader_events.send_modify(|n| *n += 1);
        self.status_events.send_modify(|n| *n += 1);
    }

    pub(super) fn apply_delete(&self, key: &str, rev: i64) {
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

/// A range response's keys under `prefix`: (key relative to it, value, mod_revision, lease).
pub(super) fn range_entries(
    resp: &etcd_client::GetResponse,
    prefix: &str,
) -> Vec<(String, String, i64, i64)> {
    resp.kvs()
        .iter()
        .filter_map(|kv| {
            let key = kv.key_str().ok()?.strip_prefix(prefix)?.to_string();
            Some((
                key,
                kv.value_str().ok()?.to_string(),
                kv.mod_revision(),
                kv.lease(),
            ))
        })
        .collect()
}

/// Keeps the cache in line with etcd: range, then watch from the next revision on the member
/// that answered; starts over on any error, compaction or cancellation, and when requests
/// moved to another member (the watched one failed: a silent, SIGSTOPped member would
/// otherwise hold the stream open with no events until the HTTP/2 pings time out).
pub(super) async fn watch_loop(
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
        let entries = range_entries(&resp, &prefix)
            .into_iter()
            .map(|(k, v, r, l)| (k, (v, r, l)))
            .collect();
        cache.install_range(entries, revision);
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

pub(super) async fn sleep_or_stop(stop: &CancellationToken, d: Duration) {
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = tokio::time::sleep(d) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache() -> Cache {
        Cache {
            state: Mutex::new(CacheState::default()),
            leader_events: watch::channel(0).0,
            status_events: watch::channel(0).0,
        }
    }

    fn leader(c: &Cache) -> Option<(String, i64)> {
        c.lock()
            .entries
            .get("leader")
            .map(|(v, r, _)| (v.clone(), *r))
    }

    /// The contract test's race (CI, etcd_lease_expiry_wakes_replicas): the watch loop's range
    /// ran before the leader key was written, a direct read saw it, then the range was
    /// installed. The cache must not lose the key the direct read returned.
    #[test]
    fn a_range_older_than_a_direct_read_does_not_take_its_keys_back() {
        let c = cache();
        c.absorb(&[("leader".into(), "pg1".into(), 7, 42)]);
        c.install_range(BTreeMap::new(), 5);
        assert_eq!(leader(&c), Some(("pg1".into(), 7)));
        // The watch then replays the put at 7 (ignored) and later events in order.
        c.apply_put("leader", "pg1", 7, 42);
        c.apply_delete("leader", 9);
        assert_eq!(leader(&c), None);
        // A newer range replaces everything.
        c.absorb(&[("leader".into(), "pg1".into(), 11, 42)]);
        c.install_range(
            BTreeMap::from([("leader".to_string(), ("pg2".to_string(), 12, 43))]),
            12,
        );
        assert_eq!(leader(&c), Some(("pg2".into(), 12)));
        c.install_range(BTreeMap::new(), 13);
        assert_eq!(leader(&c), None);
    }
}
