//! The DCS contract, written once and run against a real etcd (Debian's `etcd-server`, v3.4) and
//! the in-memory backend: leader race, lease expiry, watch wake-ups, CAS, outages. The etcd runs
//! also check the exact stored bytes of Patroni's key layout. The etcd is the test harness's
//! ([`pgpilot_test_support::Etcd`]): free loopback ports, killed by PID on drop.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pgpilot_dcs::etcd::{EtcdDcs, EtcdOptions};
use pgpilot_dcs::memory::{MemoryDcs, MemoryStore};
use pgpilot_dcs::{Dcs, MemberData, Status};
use pgpilot_test_support::Etcd;
use std::future::Future;

async fn client(etcd: &Etcd, name: &str, ttl: u64) -> Arc<EtcdDcs> {
    Arc::new(
        EtcdDcs::connect(EtcdOptions {
            endpoints: vec![etcd.endpoint()],
            namespace: "/service/".into(),
            scope: "batman".into(),
            name: name.into(),
            ttl: Duration::from_secs(ttl),
            retry_timeout: Duration::from_secs(2),
            loop_wait: Duration::from_secs(1),
            username: None,
            password: None,
            discover_members: true,
            tls: Default::default(),
        })
        .await
        .unwrap(),
    )
}

/// Raw bytes as stored, read by the harness over etcd's own JSON gateway.
async fn raw(etcd: &Etcd, key: &str) -> Option<(String, i64)> {
    etcd.get_kv(key).unwrap().map(|kv| (kv.value, kv.lease))
}

fn member_data(name: &str) -> MemberData {
    MemberData {
        conn_url: format!("postgres://127.0.0.1:5432/{name}"),
        api_url: format!("http://127.0.0.1:8008/patroni/{name}"),
        state: "running".into(),
        role: "replica".into(),
        version: "4.1.4".into(),
        xlog_location: Some(1234),
        ..Default::default()
    }
}

/// Exactly one of three racers wins `/initialize` and the leader key; leader and member share
/// one lease; the holder keeps it and only the holder can release it; the view sees our own
/// writes at once.
async fn races_and_release<D: Dcs, F: Future<Output = Arc<D>>>(
    make: impl Fn(&'static str, u64) -> F,
    etcd: Option<&Etcd>,
) {
    let (a, b, c) = (
        make("pg1", 20).await,
        make("pg2", 20).await,
        make("pg3", 20).await,
    );
    let (ia, ib, ic) = tokio::join!(
        a.initialize(true, ""),
        b.initialize(true, ""),
        c.initialize(true, "")
    );
    let wins = [ia.unwrap(), ib.unwrap(), ic.unwrap()];
    assert_eq!(wins.iter().filter(|w| **w).count(), 1, "{wins:?}");
    let (la, lb, lc) = tokio::join!(
        a.attempt_to_acquire_leader(),
        b.attempt_to_acquire_leader(),
        c.attempt_to_acquire_leader()
    );
    let wins = [la.unwrap(), lb.unwrap(), lc.unwrap()];
    assert_eq!(wins.iter().filter(|w| **w).count(), 1, "{wins:?}");
    let (winner, loser) = if wins[0] {
        (&a, &b)
    } else if wins[1] {
        (&b, &a)
    } else {
        (&c, &a)
    };
    let name = winner.member_name().to_string();
    winner.touch_member(&member_data(&name)).await.unwrap();
    winner
        .initialize(false, "7311111111111111111")
        .await
        .unwrap();
    if let Some(etcd) = etcd {
        stored_bytes(etcd, &name).await;
    }
    let view = winner.cluster().await.unwrap();
    assert_eq!(view.leader_name(), Some(name.as_str()));
    let me = view.member(&name).unwrap();
    assert_eq!(me.data, member_data(&name));
    assert_eq!(
        me.lease,
        view.leader.as_ref().unwrap().lease,
        "one lease for both keys"
    );
    assert!(winner.update_leader(None).await.unwrap());
    assert!(
        !loser.update_leader(None).await.unwrap(),
        "not the loser's key"
    );
    assert!(winner.keep_leader_lease().await.unwrap());
    assert!(
        !loser.keep_leader_lease().await.unwrap(),
        "the keeper's renewal says whose key it is"
    );
    assert!(
        !loser.delete_leader().await.unwrap(),
        "only the holder may release"
    );
    assert!(winner.delete_leader().await.unwrap());
    assert!(
        !winner.keep_leader_lease().await.unwrap(),
        "a released key is not ours any more"
    );
    let view = winner.cluster_fresh().await.unwrap();
    assert!(
        view.is_unlocked(),
        "and the keeper's renewal did not bring it back"
    );
    let view = winner.cluster().await.unwrap();
    assert!(view.is_unlocked());
    assert_eq!(view.initialize.as_deref(), Some("7311111111111111111"));
}

/// Patroni's exact bytes: the bare leader name, compact member JSON, the sysid, one lease.
async fn stored_bytes(etcd: &Etcd, winner: &str) {
    let (leader, leader_lease) = raw(etcd, "/service/batman/leader").await.unwrap();
    assert_eq!(leader, winner);
    let (member, member_lease) = raw(etcd, &format!("/service/batman/members/{winner}"))
        .await
        .unwrap();
    assert_eq!(member, member_data(winner).to_json());
    assert!(
        member.starts_with(r#"{"conn_url":"postgres://"#),
        "{member}"
    );
    assert_eq!(leader_lease, member_lease);
    assert_ne!(leader_lease, 0);
    assert_eq!(
        raw(etcd, "/service/batman/initialize").await.unwrap().0,
        "7311111111111111111"
    );
}

/// A leader that stops renewing loses the key when its lease expires (no free-running
/// keepalive keeps a hung agent's lock), and the expiry wakes a waiting replica at once.
async fn lease_expiry_wakes_replicas<D: Dcs, F: Future<Output = Arc<D>>>(
    make: impl Fn(&'static str, u64) -> F,
) {
    let leader = make("pg1", 2).await;
    let replica = make("pg2", 20).await;
    assert!(leader.attempt_to_acquire_leader().await.unwrap());
    // The replica's watch-fed cache sees the new key shortly after the write.
    let seen = Instant::now();
    while replica.cluster().await.unwrap().leader_name() != Some("pg1") {
        assert!(
            seen.elapsed() < Duration::from_secs(5),
            "the replica never saw pg1 lead"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // A wake may be owed to an event the replica has already read (the leader key's own
    // put): like Patroni's, a watch says "something changed", and the agent just runs one
    // more cycle. So wait until a wake shows the key gone; without the expiry's wake the
    // 30 s watch would outlast the 20 s bound below.
    let started = Instant::now();
    let mut wakes = 0;
    while !replica.cluster().await.unwrap().is_unlocked() {
        assert!(
            replica.watch(Duration::from_secs(30), false).await,
            "woken by the leader key's expiry"
        );
        wakes += 1;
    }
    let waited = started.elapsed();
    assert!(waited < Duration::from_secs(20), "woke after {waited:?}");
    eprintln!(
        "replica saw the key gone {waited:?} after the leader stopped renewing a 2 s lease ({wakes} wakes)"
    );
    assert!(replica.attempt_to_acquire_leader().await.unwrap());
}

/// `/config` and `/failover` CAS on mod_revision; `{}` clears the failover key; `/status` and
/// removal of the whole cluster.
async fn cas_and_values<D: Dcs, F: Future<Output = Arc<D>>>(
    make: impl Fn(&'static str, u64) -> F,
    etcd: Option<&Etcd>,
) {
    let a = make("pg1", 20).await;
    assert!(a.set_config(r#"{"ttl":30}"#, None).await.unwrap());
    let v1 = a.cluster_fresh().await.unwrap().config.unwrap().version;
    assert!(a.set_config(r#"{"ttl":40}"#, Some(v1)).await.unwrap());
    assert!(
        !a.set_config(r#"{"ttl":50}"#, Some(v1)).await.unwrap(),
        "stale version refused"
    );
    assert_eq!(
        a.cluster_fresh().await.unwrap().config.unwrap().data["ttl"],
        40
    );
    a.set_failover(r#"{"leader":"pg1","member":"pg2"}"#, None)
        .await
        .unwrap();
    let f = a.cluster_fresh().await.unwrap().failover.unwrap();
    assert_eq!(f.member.as_deref(), Some("pg2"));
    assert!(a.set_failover("{}", Some(f.version)).await.unwrap());
    assert!(a.cluster_fresh().await.unwrap().failover.is_none());
    // /sync: CAS put, stale version refused, CAS delete.
    assert!(a
        .set_sync(r#"{"leader":"pg1","sync_standby":"pg2","quorum":0}"#, None)
        .await
        .unwrap());
    let s = a.cluster_fresh().await.unwrap().sync.unwrap();
    assert_eq!(s.sync_standby.as_deref(), Some("pg2"));
    assert!(!a
        .set_sync(
            r#"{"leader":"pg1","sync_standby":null,"quorum":0}"#,
            Some(s.version - 1)
        )
        .await
        .unwrap());
    assert!(!a.delete_sync(Some(s.version - 1)).await.unwrap());
    assert!(a.delete_sync(Some(s.version)).await.unwrap());
    assert!(a.cluster_fresh().await.unwrap().sync.is_none());
    let status = Status {
        optime: 67_108_960,
        ..Default::default()
    };
    a.write_status(&status).await.unwrap();
    assert_eq!(a.cluster_fresh().await.unwrap().status.optime, 67_108_960);
    if let Some(etcd) = etcd {
        assert_eq!(
            raw(etcd, "/service/batman/status").await.unwrap().0,
            r#"{"optime":67108960}"#
        );
    }
    // /failsafe: unconditional put without a lease, Patroni's compact JSON.
    let failsafe =
        r#"{"pg1":"http://127.0.0.1:8008/patroni","pg2":"http://127.0.0.2:8008/patroni"}"#;
    a.set_failsafe(failsafe).await.unwrap();
    let read = a.cluster_fresh().await.unwrap().failsafe.unwrap();
    assert_eq!(read["pg2"], "http://127.0.0.2:8008/patroni");
    if let Some(etcd) = etcd {
        assert_eq!(
            raw(etcd, "/service/batman/failsafe").await.unwrap().0,
            failsafe
        );
    }
    a.delete_cluster().await.unwrap();
    assert!(a.cluster_fresh().await.unwrap().members.is_empty());
    assert!(a.cluster_fresh().await.unwrap().config.is_none());
}

fn memory(store: MemoryStore) -> impl Fn(&'static str, u64) -> std::future::Ready<Arc<MemoryDcs>> {
    move |name, ttl| {
        std::future::ready(Arc::new(MemoryDcs::new(
            store.clone(),
            "/service/",
            "batman",
            name,
            Duration::from_secs(ttl),
        )))
    }
}

#[tokio::test]
async fn etcd_races_and_release() {
    let etcd = Etcd::start();
    races_and_release(|n, t| client(&etcd, n, t), Some(&etcd)).await;
}

#[tokio::test]
async fn memory_races_and_release() {
    races_and_release(memory(MemoryStore::new()), None).await;
}

#[tokio::test]
async fn etcd_lease_expiry_wakes_replicas() {
    let etcd = Etcd::start();
    lease_expiry_wakes_replicas(|n, t| client(&etcd, n, t)).await;
}

#[tokio::test]
async fn memory_lease_expiry_wakes_replicas() {
    lease_expiry_wakes_replicas(memory(MemoryStore::new())).await;
}

#[tokio::test]
async fn etcd_cas_and_values() {
    let etcd = Etcd::start();
    cas_and_values(|n, t| client(&etcd, n, t), Some(&etcd)).await;
}

#[tokio::test]
async fn memory_cas_and_values() {
    cas_and_values(memory(MemoryStore::new()), None).await;
}

/// While the memory store is down every call fails at once; it recovers when the store returns.
#[tokio::test]
async fn memory_outage_fails_calls() {
    let store = MemoryStore::new();
    let a = memory(store.clone())("pg1", 20).await;
    assert!(a.attempt_to_acquire_leader().await.unwrap());
    store.set_available(false);
    assert!(a.update_leader(None).await.is_err());
    assert!(a.cluster().await.is_err());
    store.set_available(true);
    assert!(a.update_leader(None).await.unwrap());
}

/// The sum of the samples of `metric` whose labels contain every one of `labels`.
fn metric(text: &str, metric: &str, labels: &[&str]) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(metric) && labels.iter().all(|want| l.contains(want)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Renewals reuse one LeaseKeepAlive stream: etcd sees one stream opened and a message per
/// renewal, not a stream per renewal. A lost lease is replaced and renewals go on.
#[tokio::test]
async fn etcd_renewals_share_one_keepalive_stream() {
    let etcd = Etcd::start();
    let a = client(&etcd, "pg1", 20).await;
    let keepalive = ["grpc_method=\"LeaseKeepAlive\""];
    let before = etcd.metrics().unwrap();
    assert!(a.attempt_to_acquire_leader().await.unwrap());
    for _ in 0..5 {
        assert!(a.update_leader(None).await.unwrap());
    }
    let after = etcd.metrics().unwrap();
    let started = metric(&after, "grpc_server_started_total", &keepalive)
        - metric(&before, "grpc_server_started_total", &keepalive);
    let received = metric(&after, "grpc_server_msg_received_total", &keepalive)
        - metric(&before, "grpc_server_msg_received_total", &keepalive);
    // The acquisition refreshes the lease too: 6 keepalives in all, on one stream.
    assert_eq!(
        started, 1.0,
        "keepalive streams opened for an acquisition and 5 renewals"
    );
    assert_eq!(
        received, 6.0,
        "keepalive messages for an acquisition and 5 renewals"
    );

    // The lease revoked behind our back: the stream answers that etcd no longer knows it, a new
    // lease is granted and the vanished key is created again on it (as Patroni does).
    let lease = raw(&etcd, "/service/batman/leader").await.unwrap().1;
    etcd.revoke_lease(lease).unwrap();
    assert!(a.update_leader(None).await.unwrap());
    assert!(a.update_leader(None).await.unwrap());
    let (_, renewed_on) = raw(&etcd, "/service/batman/leader").await.unwrap();
    assert_ne!(renewed_on, lease, "a new lease holds the key");
}

/// With etcd frozen (SIGSTOP), calls fail within the retry timeout instead of hanging, so a
/// primary can demote before its lease could expire.
#[tokio::test]
async fn etcd_frozen_fails_fast() {
    let etcd = Etcd::start();
    let a = client(&etcd, "pg1", 20).await;
    assert!(a.attempt_to_acquire_leader().await.unwrap());
    etcd.pause();
    let started = Instant::now();
    let renewed = a.update_leader(None).await;
    let took = started.elapsed();
    etcd.resume();
    assert!(renewed.is_err(), "{renewed:?}");
    assert!(took < Duration::from_secs(8), "took {took:?}");
    eprintln!("update_leader failed {took:?} after etcd froze (retry_timeout 2 s)");
    // And the same client recovers when etcd is back.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(true) = a.update_leader(None).await {
            break;
        }
        assert!(Instant::now() < deadline, "did not recover");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
