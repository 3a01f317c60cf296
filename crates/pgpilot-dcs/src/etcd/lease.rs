//! Our etcd lease: granted lazily, renewed by the HA cycle over one LeaseKeepAlive stream kept
//! open between renewals, replaced when etcd no longer knows it.

use std::time::Instant;

use tracing::{debug, info, warn};

use super::endpoints;
use super::EtcdDcs;
use crate::Result;

/// One LeaseKeepAlive stream per agent, reused by every renewal: a renewal is then one gRPC
/// message each way. Opening a stream per renewal cost a new HTTP/2 stream (headers, etcd's
/// flow-control ping and its answer, a reset when it was dropped) four writes instead of one.
/// The stream belongs to the etcd member it was opened on and to one lease; it is dropped on
/// any error or late answer (a late answer would pair the next request with a stale reply).
pub(super) struct KeepAliveStream {
    lease: i64,
    member: u64,
    keeper: etcd_client::LeaseKeeper,
    stream: etcd_client::LeaseKeepAliveStream,
}

impl EtcdDcs {
    /// Our lease, granted if we have none.
    async fn lease(&self, deadline: Instant) -> Result<i64> {
        let mut guard = self.lease.lock().await;
        if let Some(id) = *guard {
            return Ok(id);
        }
        let ttl = i64::try_from(self.ttl().as_secs()).unwrap_or(30);
        let resp = self
            .request("lease grant", deadline, move |mut c| async move {
                c.lease_grant(ttl, None).await
            })
            .await?;
        info!("granted etcd lease {:x} with ttl {ttl}s", resp.id());
        *guard = Some(resp.id());
        *self
            .last_keepalive
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        Ok(resp.id())
    }

    /// Refreshes our lease; a lease etcd no longer knows is replaced by a new one. Forced by
    /// the leader every cycle; otherwise (a replica's member key) at most every third of the
    /// TTL: a member key that lives on needs no more, and etcd is spared a request per member
    /// per loop_wait.
    pub(super) async fn keepalive(&self, force: bool, deadline: Instant) -> Result<i64> {
        if !force {
            let every = self.loop_wait.max(self.ttl() / 3);
            let recent = self
                .last_keepalive
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_some_and(|t| t.elapsed() < every);
            if recent {
                return self.lease(deadline).await;
            }
        }
        let id = self.lease(deadline).await?;
        let alive = match self.keepalive_on_stream(id, deadline).await {
            Some(alive) => alive,
            None => self.open_keepalive_stream(id, deadline).await?,
        };
        if !alive {
            warn!("etcd lease {id:x} was lost; granting a new one");
            *self.keepalive_stream.lock().await = None;
            *self.lease.lock().await = None;
            return self.lease(deadline).await;
        }
        *self
            .last_keepalive
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        Ok(id)
    }

    /// A keepalive of lease `id` on the stream kept open: `Some(alive)` when etcd answered
    /// (`false`: it no longer knows the lease), `None` when there is no usable stream (none
    /// yet, another lease, its member no longer the one to use, an error, no answer within its
    /// share of the deadline): the caller then opens a new one through the endpoint plan.
    async fn keepalive_on_stream(&self, id: i64, deadline: Instant) -> Option<bool> {
        let mut slot = self.keepalive_stream.lock().await;
        let mut open = slot.take()?;
        if open.lease != id || !self.endpoints.is_current(open.member) {
            return None;
        }
        // The share a request's first member gets (endpoints::Endpoints::call), so that a
        // frozen member leaves the rest of the deadline to the others.
        let left = deadline.saturating_duration_since(Instant::now());
        let members = u32::try_from(self.endpoints.len()).unwrap_or(u32::MAX);
        let budget = (left / members.saturating_add(1))
            .max(endpoints::MIN_SHARE)
            .min(left);
        let answer = tokio::time::timeout(budget, async {
            open.keeper.keep_alive().await?;
            open.stream.message().await
        })
        .await;
        match answer {
            Ok(Ok(Some(resp))) => {
                let alive = resp.ttl() > 0;
                if alive {
                    *slot = Some(open);
                }
                Some(alive)
            }
            Ok(Ok(None)) => {
                debug!("etcd closed the lease keepalive stream; opening a new one");
                None
            }
            Ok(Err(e)) => {
                debug!("lease keepalive stream: {e}; opening a new one");
                None
            }
            Err(_) => {
                debug!(
                    "no answer on the lease keepalive stream within {budget:?}; opening a new one"
                );
                None
            }
        }
    }

    /// Opens a keepalive stream for lease `id` (which sends one keepalive and reads its
    /// answer) and keeps it for the next renewals; returns whether the lease is alive.
    /// etcd-client reports an expired lease as an error ("lease not found"), etcd itself may
    /// answer NotFound: both mean the lease is gone and a new one is needed.
    async fn open_keepalive_stream(&self, id: i64, deadline: Instant) -> Result<bool> {
        let (opened, member) = self
            .endpoints
            .call("lease keepalive", deadline, move |mut c| async move {
                match c.lease_keep_alive(id).await {
                    Ok(pair) => Ok(Some(pair)),
                    Err(etcd_client::Error::LeaseKeepAliveError(m)) if m.contains("not found") => {
                        Ok(None)
                    }
                    Err(etcd_client::Error::GRpcStatus(s)) if s.code() == tonic::Code::NotFound => {
                        Ok(None)
                    }
                    Err(e) => Err(e),
                }
            })
            .await?;
        let Some((keeper, stream)) = opened else {
            return Ok(false);
        };
        *self.keepalive_stream.lock().await = Some(KeepAliveStream {
            lease: id,
            member,
            keeper,
            stream,
        });
        Ok(true)
    }
}
