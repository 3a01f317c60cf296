//! In-process backend for tests and the simulation: etcd's semantics (revisions, leases with a
//! TTL that delete their keys on expiry, create-if-absent and compare transactions, watch
//! wake-ups) over a shared map. Time is `tokio::time`, so tests may pause it.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use crate::{cluster_prefix, Cluster, Dcs, DcsError, Leader, MemberData, Result, Status};

#[derive(Debug, Clone)]
struct Kv {
    value: String,
    create_revision: i64,
    mod_revision: i64,
    lease: i64,
}

#[derive(Default)]
struct State {
    revision: i64,
    keys: BTreeMap<String, Kv>,
    /// Lease id -> (ttl, deadline).
    leases: HashMap<i64, (Duration, Instant)>,
    next_lease: i64,
}

impl State {
    fn bump(&mut self) -> i64 {
        self.revision += 1;
        self.revision
    }

    /// Deletes the keys of every lease past its deadline. Returns whether anything changed.
    fn expire(&mut self, now: Instant) -> bool {
        let dead: Vec<i64> = self
            .leases
            .iter()
            .filter(|(_, (_, deadline))| *deadline <= now)
            .map(|(id, _)| *id)
            .collect();
        if dead.is_empty() {
            return false;
        }
        for id in &dead {
            self.leases.remove(id);
        }
        let before = self.keys.len();
        self.keys.retain(|_, kv| !dead.contains(&kv.lease));
        if self.keys.len() != before {
            self.bump();
        }
        true
    }

    fn put(&mut self, key: &str, value: &str, lease: i64) -> i64 {
        let rev = self.bump();
        let create_revision = self.keys.get(key).map_or(rev, |kv| kv.create_revision);
        self.keys.insert(
            key.to_string(),
            Kv {
                value: value.to_string(),
                create_revision,
                mod_revision: rev,
                lease,
            },
        );
        rev
    }

    fn delete(&mut self, key: &str) -> bool {
        if self.keys.remove(key).is_some() {
            self.bump();
            return true;
        }
        false
    }
}

/// The shared "server": clone it for every member.
#[derive(Clone)]
pub struct MemoryStore {
    state: Arc<Mutex<State>>,
    /// Notified on every change, to wake watchers: a `Notify` wakes them in the order they
    /// began to wait (a `watch` channel's order is random), so that a simulation on a paused
    /// clock replays the same way.
    changes: Arc<Notify>,
    available: Arc<AtomicBool>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        MemoryStore::new()
    }
}

impl MemoryStore {
    pub fn new() -> MemoryStore {
        MemoryStore {
            state: Arc::new(Mutex::new(State {
                next_lease: 1,
                ..Default::default()
            })),
            changes: Arc::new(Notify::new()),
            available: Arc::new(AtomicBool::new(true)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is plain data; a panic elsewhere does not make it unusable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn notify(&self) {
        self.changes.notify_waiters();
    }

    /// Fault injection: while false every call fails with `Unavailable` (a DCS outage).
    pub fn set_available(&self, up: bool) {
        self.available.store(up, Ordering::SeqCst);
        self.notify();
    }

    /// Runs `f` on the state after expiring leases; fails while the store is unavailable.
    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> Result<T> {
        if !self.available.load(Ordering::SeqCst) {
            return Err(DcsError::Unavailable("memory store is down".into()));
        }
        let (out, changed) = {
            let mut st = self.lock();
            let expired = st.expire(Instant::now());
            let before = st.revision;
            let out = f(&mut st);
            (out, expired || st.revision != before)
        };
        if changed {
            self.notify();
        }
        Ok(out)
    }

    fn earliest_deadline(&self) -> Option<Instant> {
        self.lock().leases.values().map(|(_, d)| *d).min()
    }
}

/// One member's client of a [`MemoryStore`].
pub struct MemoryDcs {
    store: MemoryStore,
    prefix: String,
    name: String,
    ttl: Mutex<Duration>,
    lease: Mutex<Option<i64>>,
    /// Fingerprints of (leader+config+failover, status) at the last `cluster()`.
    seen: Mutex<(String, String)>,
}

impl MemoryDcs {
    pub fn new(
        store: MemoryStore,
        namespace: &str,
        scope: &str,
        name: &str,
        ttl: Duration,
    ) -> MemoryDcs {
        MemoryDcs {
            store,
            prefix: cluster_prefix(namespace, scope),
            name: name.to_string(),
            ttl: Mutex::new(ttl),
            lease: Mutex::new(None),
            seen: Mutex::new((String::new(), String::new())),
        }
    }

    fn key(&self, rel: &str) -> String {
        format!("{}{rel}", self.prefix)
    }

    fn ttl(&self) -> Duration {
        *self.ttl.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Our lease, refreshed (granted anew if it expired).
    fn keepalive(&self, st: &mut State) -> i64 {
        let mut lease = self.lease.lock().unwrap_or_else(|e| e.into_inner());
        let ttl = self.ttl();
        let now = Instant::now();
        if let Some(id) = *lease {
            if let Some(entry) = st.leases.get_mut(&id) {
                entry.1 = now + entry.0;
                return id;
            }
        }
        let id = st.next_lease;
        st.next_lease += 1;
        st.leases.insert(id, (ttl, now + ttl));
        *lease = Some(id);
        id
    }

    fn fingerprints(&self, st: &State) -> (String, String) {
        let fp = |rel: &str| {
            st.keys.get(&self.key(rel)).map_or_else(
                || "-".to_string(),
                |kv| format!("{}@{}", kv.value, kv.mod_revision),
            )
        };
        (
            format!("{}|{}|{}", fp("leader"), fp("config"), fp("failover")),
            fp("status"),
        )
    }

    fn snapshot(&self, st: &State) -> Cluster {
        let entries: Vec<(String, &Kv)> = st
            .keys
            .range(self.prefix.clone()..)
            .take_while(|(k, _)| k.starts_with(&self.prefix))
            .map(|(k, v)| (k[self.prefix.len()..].to_string(), v))
            .collect();
        let mut c = Cluster::from_entries(
            entries
                .iter()
                .map(|(k, kv)| (k.as_str(), kv.value.as_str(), kv.mod_revision, kv.lease)),
        );
        c.revision = st.revision;
        c
    }

    fn cas_put(
        &self,
        rel: &str,
        value: &str,
        check: impl FnOnce(Option<&Kv>) -> bool,
        lease: bool,
    ) -> Result<bool> {
        let key = self.key(rel);
        self.store.with(|st| {
            let l = if lease { self.keepalive(st) } else { 0 };
            if !check(st.keys.get(&key)) {
                return false;
            }
            st.put(&key, value, l);
            true
        })
    }
}

impl MemoryDcs {
    /// Put, with a CAS on the key's mod_revision (0 when absent) when `version` is given.
    fn put_if_version(&self, rel: &str, value: &str, version: Option<i64>) -> Result<bool> {
        let matches =
            |kv: Option<&Kv>| version.is_none_or(|v| kv.map_or(0, |k| k.mod_revision) == v);
        self.cas_put(rel, value, matches, false)
    }
}

impl Dcs for MemoryDcs {
    fn member_name(&self) -> &str {
        &self.name
    }

    async fn cluster(&self) -> Result<Cluster> {
        self.store.with(|st| {
            *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = self.fingerprints(st);
            self.snapshot(st)
        })
    }

    async fn cluster_fresh(&self) -> Result<Cluster> {
        self.store.with(|st| self.snapshot(st))
    }

    async fn touch_member(&self, data: &MemberData) -> Result<()> {
        let key = self.key(&format!("members/{}", self.name));
        let json = data.to_json();
        self.store.with(|st| {
            let lease = self.keepalive(st);
            let same = st
                .keys
                .get(&key)
                .is_some_and(|kv| kv.value == json && kv.lease == lease);
            if !same {
                st.put(&key, &json, lease);
            }
        })
    }

    async fn attempt_to_acquire_leader(&self) -> Result<bool> {
        self.cas_put("leader", &self.name.clone(), |kv| kv.is_none(), true)
    }

    async fn update_leader(&self, _leader: Option<&Leader>) -> Result<bool> {
        let key = self.key("leader");
        let name = self.name.clone();
        self.store.with(|st| {
            let lease = self.keepalive(st);
            match st.keys.get(&key) {
                Some(kv) if kv.value == name && kv.lease == lease => true,
                Some(kv) if kv.value != name => false,
                _ => {
                    st.put(&key, &name, lease);
                    true
                }
            }
        })
    }

    async fn keep_leader_lease(&self) -> Result<bool> {
        let key = self.key("leader");
        self.store.with(|st| {
            let lease = self.keepalive(st);
            st.keys
                .get(&key)
                .is_some_and(|kv| kv.value == self.name && kv.lease == lease)
        })
    }

    async fn take_leader(&self) -> Result<()> {
        let key = self.key("leader");
        self.store.with(|st| {
            let lease = self.keepalive(st);
            st.put(&key, &self.name, lease);
        })
    }

    async fn delete_leader(&self) -> Result<bool> {
        let key = self.key("leader");
        self.store.with(|st| {
            if st.keys.get(&key).is_some_and(|kv| kv.value == self.name) {
                st.delete(&key)
            } else {
                false
            }
        })
    }

    async fn initialize(&self, create_new: bool, sysid: &str) -> Result<bool> {
        self.cas_put("initialize", sysid, |kv| !create_new || kv.is_none(), false)
    }

    async fn cancel_initialization(&self) -> Result<()> {
        let key = self.key("initialize");
        self.store.with(|st| {
            st.delete(&key);
        })
    }

    async fn set_config(&self, value: &str, version: Option<i64>) -> Result<bool> {
        self.put_if_version("config", value, version)
    }

    async fn set_failover(&self, value: &str, version: Option<i64>) -> Result<bool> {
        self.put_if_version("failover", value, version)
    }

    async fn set_sync(&self, value: &str, version: Option<i64>) -> Result<bool> {
        self.put_if_version("sync", value, version)
    }

    async fn delete_sync(&self, version: Option<i64>) -> Result<bool> {
        let key = self.key("sync");
        self.store.with(|st| {
            let current = st.keys.get(&key).map_or(0, |k| k.mod_revision);
            if version.is_some_and(|v| v != current) {
                return false;
            }
            st.delete(&key);
            true
        })
    }

    async fn set_history(&self, value: &str) -> Result<()> {
        self.cas_put("history", value, |_| true, false).map(|_| ())
    }

    async fn set_failsafe(&self, value: &str) -> Result<()> {
        self.cas_put("failsafe", value, |_| true, false).map(|_| ())
    }

    async fn write_status(&self, status: &Status) -> Result<()> {
        self.cas_put("status", &status.to_json(), |_| true, false)
            .map(|_| ())
    }

    fn set_ttl(&self, ttl: Duration) {
        *self.ttl.lock().unwrap_or_else(|e| e.into_inner()) = ttl;
        *self.lease.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    fn set_retry_timeout(&self, _retry_timeout: Duration) {}

    async fn watch(&self, timeout: Duration, leader_is_me: bool) -> bool {
        let deadline = Instant::now() + timeout;
        let seen = self.seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
        loop {
            // Registered before the state is read: a change made after the read wakes us.
            let changed = self.store.changes.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let fired = self.store.with(|st| {
                let (l, s) = self.fingerprints(st);
                l != seen.0 || (!leader_is_me && s != seen.1)
            });
            if matches!(fired, Ok(true)) {
                return true;
            }
            // Wake for the next change, the next lease expiry, or the end of the wait. While the
            // store is down its leases are not expired (their deadlines may have passed): only
            // its return (a change) or the end of the wait can wake us, else this loop spins.
            let until = match fired {
                Ok(_) => self
                    .store
                    .earliest_deadline()
                    .map_or(deadline, |d| d.min(deadline)),
                Err(_) => deadline,
            };
            // `biased`: ties go in order, so that a simulation on a paused clock replays.
            tokio::select! {
                biased;
                _ = &mut changed => {}
                _ = tokio::time::sleep_until(until) => {}
            }
            if Instant::now() >= deadline {
                return false;
            }
        }
    }

    async fn delete_cluster(&self) -> Result<()> {
        let prefix = self.prefix.clone();
        self.store.with(|st| {
            let keys: Vec<String> = st
                .keys
                .keys()
                .filter(|k| k.starts_with(&prefix))
                .cloned()
                .collect();
            for k in keys {
                st.delete(&k);
            }
        })
    }

    async fn close(&self) -> Result<()> {
        let id = self.lease.lock().unwrap_or_else(|e| e.into_inner()).take();
        self.store.with(|st| {
            if let Some(id) = id {
                st.leases.remove(&id);
                let before = st.keys.len();
                st.keys.retain(|_, kv| kv.lease != id);
                if st.keys.len() != before {
                    st.bump();
                }
            }
        })
    }
}
