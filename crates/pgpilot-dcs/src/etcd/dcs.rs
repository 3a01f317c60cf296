//! The [`Dcs`] trait implemented on etcd: the HA cycle's reads (from the watch cache) and its
//! writes (puts and transactions with Patroni's conditions; the leader and member keys on our
//! lease).

use std::time::Duration;

use etcd_client::{Compare, CompareOp, DeleteOptions, PutOptions, Txn, TxnOp, TxnOpResponse};

use super::EtcdDcs;
use crate::{Cluster, Dcs, Leader, MemberData, Result, Status};

impl Dcs for EtcdDcs {
    fn member_name(&self) -> &str {
        &self.name
    }

    async fn cluster(&self) -> Result<Cluster> {
        let generations = (
            *self.cache.leader_events.borrow(),
            *self.cache.status_events.borrow(),
        );
        let cached = {
            let st = self.cache.lock();
            st.healthy.then(|| {
                let mut parsed = self.parsed.lock().unwrap_or_else(|e| e.into_inner());
                // The member keys are parsed again only when a key changed: an idle cycle
                // costs a copy, not a JSON parse of every member.
                match parsed.as_ref() {
                    Some((generation, c))
                        if *generation == st.generation && c.revision == st.revision =>
                    {
                        c.clone()
                    }
                    _ => {
                        let mut c = Cluster::from_entries(
                            st.entries
                                .iter()
                                .map(|(k, (v, r, l))| (k.as_str(), v.as_str(), *r, *l)),
                        );
                        c.revision = st.revision;
                        *parsed = Some((st.generation, c.clone()));
                        c
                    }
                }
            })
        };
        let c = match cached {
            Some(c) => c,
            None => self.read(false).await?,
        };
        *self.seen.lock().unwrap_or_else(|e| e.into_inner()) = generations;
        Ok(c)
    }

    async fn cluster_fresh(&self) -> Result<Cluster> {
        self.read(false).await
    }

    async fn touch_member(&self, data: &MemberData) -> Result<()> {
        let lease = self.keepalive(false, self.deadline()).await?;
        let json = data.to_json();
        let rel = format!("members/{}", self.name);
        let unchanged = self
            .cache
            .lock()
            .entries
            .get(&rel)
            .is_some_and(|(v, _, l)| *v == json && *l == lease);
        if unchanged {
            return Ok(());
        }
        self.put(&rel, &json, Some(lease)).await
    }

    async fn attempt_to_acquire_leader(&self) -> Result<bool> {
        // One deadline for the keepalive and the transaction: the whole attempt fits in
        // retry_timeout, as the timing rule loop_wait + 2 × retry_timeout ≤ ttl assumes.
        let deadline = self.deadline();
        let lease = self.keepalive(true, deadline).await?;
        let won = self
            .cas_put(
                "leader",
                &self.name,
                Compare::create_revision(self.key("leader"), CompareOp::Equal, 0),
                Some(lease),
                deadline,
            )
            .await?;
        Ok(won)
    }

    async fn update_leader(&self, leader: Option<&Leader>) -> Result<bool> {
        // One deadline for the keepalive and the rebinding transaction (see
        // attempt_to_acquire_leader).
        let deadline = self.deadline();
        let lease = self.keepalive(true, deadline).await?;
        let cached = self.cache.lock().entries.get("leader").cloned();
        let current = leader
            .map(|l| (l.name.clone(), l.lease))
            .or(cached.map(|(v, _, l)| (v, l)));
        if current
            .as_ref()
            .is_some_and(|(n, l)| *n == self.name && *l == lease)
        {
            return Ok(true);
        }
        // The key is on another (lost) lease of ours, or gone: rebind it if it is still ours,
        // or re-create it if nobody holds it.
        let key = self.key("leader");
        let put = TxnOp::put(
            key.clone(),
            self.name.clone(),
            Some(PutOptions::new().with_lease(lease)),
        );
        let inner = Txn::new()
            .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
            .and_then([put.clone()]);
        let txn = Txn::new()
            .when([Compare::value(key, CompareOp::Equal, self.name.clone())])
            .and_then([put])
            .or_else([TxnOp::txn(inner)]);
        let (ok, rev, responses) = self.txn(txn, deadline).await?;
        let ok = ok
            || responses.iter().any(|r| match r {
                TxnOpResponse::Txn(t) => t.succeeded(),
                _ => false,
            });
        if ok {
            self.cache.apply_put("leader", &self.name, rev, lease);
        }
        Ok(ok)
    }

    async fn keep_leader_lease(&self) -> Result<bool> {
        let lease = self.keepalive(true, self.deadline()).await?;
        let cached = self.cache.lock().entries.get("leader").cloned();
        // A lease etcd had forgotten was replaced by a new one (`keepalive`): the key went with
        // the old lease and is not ours any more.
        Ok(cached.is_some_and(|(name, _, l)| name == self.name && l == lease))
    }

    async fn take_leader(&self) -> Result<()> {
        let lease = self.keepalive(true, self.deadline()).await?;
        self.put("leader", &self.name.clone(), Some(lease)).await
    }

    async fn delete_leader(&self) -> Result<bool> {
        let key = self.key("leader");
        let txn = Txn::new()
            .when([Compare::value(
                key.clone(),
                CompareOp::Equal,
                self.name.clone(),
            )])
            .and_then([TxnOp::delete(key, None::<DeleteOptions>)]);
        let (ok, rev, _) = self.txn(txn, self.deadline()).await?;
        if ok {
            self.cache.apply_delete("leader", rev);
        }
        Ok(ok)
    }

    async fn initialize(&self, create_new: bool, sysid: &str) -> Result<bool> {
        if create_new {
            return self
                .cas_put(
                    "initialize",
                    sysid,
                    Compare::create_revision(self.key("initialize"), CompareOp::Equal, 0),
                    None,
                    self.deadline(),
                )
                .await;
        }
        self.put("initialize", sysid, None).await?;
        Ok(true)
    }

    async fn cancel_initialization(&self) -> Result<()> {
        let key = self.key("initialize");
        let resp = self
            .request("delete", self.deadline(), move |mut c| {
                let key = key.clone();
                async move { c.delete(key, None).await }
            })
            .await?;
        self.cache
            .apply_delete("initialize", resp.header().map_or(0, |h| h.revision()));
        Ok(())
    }

    async fn set_config(&self, value: &str, version: Option<i64>) -> Result<bool> {
        self.put_if_version("config", value, version).await
    }

    async fn set_failover(&self, value: &str, version: Option<i64>) -> Result<bool> {
        self.put_if_version("failover", value, version).await
    }

    async fn set_sync(&self, value: &str, version: Option<i64>) -> Result<bool> {
        self.put_if_version("sync", value, version).await
    }

    async fn delete_sync(&self, version: Option<i64>) -> Result<bool> {
        let key = self.key("sync");
        let mut txn = Txn::new();
        if let Some(v) = version {
            txn = txn.when([Compare::mod_revision(key.clone(), CompareOp::Equal, v)]);
        }
        let txn = txn.and_then([TxnOp::delete(key, None::<DeleteOptions>)]);
        let (ok, rev, _) = self.txn(txn, self.deadline()).await?;
        if ok {
            self.cache.apply_delete("sync", rev);
        }
        Ok(ok)
    }

    async fn set_history(&self, value: &str) -> Result<()> {
        self.put("history", value, None).await
    }

    async fn set_failsafe(&self, value: &str) -> Result<()> {
        self.put("failsafe", value, None).await
    }

    async fn write_status(&self, status: &Status) -> Result<()> {
        let json = status.to_json();
        // An idle primary's optime does not move: skip the write (the cache holds our own
        // writes and every change made by others).
        let unchanged = {
            let st = self.cache.lock();
            st.healthy && st.entries.get("status").is_some_and(|(v, _, _)| *v == json)
        };
        if unchanged {
            return Ok(());
        }
        self.put("status", &json, None).await
    }

    fn set_ttl(&self, ttl: Duration) {
        *self.ttl.lock().unwrap_or_else(|e| e.into_inner()) = ttl;
        if let Ok(mut l) = self.lease.try_lock() {
            *l = None;
        }
    }

    fn set_retry_timeout(&self, retry_timeout: Duration) {
        *self.retry_timeout.lock().unwrap_or_else(|e| e.into_inner()) = retry_timeout;
    }

    async fn watch(&self, timeout: Duration, leader_is_me: bool) -> bool {
        let (seen_leader, seen_status) = *self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let mut leader_rx = self.cache.leader_events.subscribe();
        let mut status_rx = self.cache.status_events.subscribe();
        let fired = |l: u64, s: u64| l != seen_leader || (!leader_is_me && s != seen_status);
        if fired(*leader_rx.borrow(), *status_rx.borrow()) {
            return true;
        }
        let wait = async {
            loop {
                tokio::select! {
                    r = leader_rx.changed() => if r.is_err() { return false },
                    r = status_rx.changed(), if !leader_is_me => if r.is_err() { return false },
                }
                if fired(*leader_rx.borrow(), *status_rx.borrow()) {
                    return true;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.unwrap_or(false)
    }

    async fn delete_cluster(&self) -> Result<()> {
        let prefix = self.prefix.clone();
        self.request("delete prefix", self.deadline(), move |mut c| {
            let prefix = prefix.clone();
            async move {
                c.delete(prefix, Some(DeleteOptions::new().with_prefix()))
                    .await
            }
        })
        .await?;
        Ok(())
    }

    async fn close(&self) -> Result<()> {
        *self.keepalive_stream.lock().await = None;
        let id = self.lease.lock().await.take();
        if let Some(id) = id {
            self.request("lease revoke", self.deadline(), move |mut c| async move {
                c.lease_revoke(id).await
            })
            .await?;
        }
        Ok(())
    }
}
