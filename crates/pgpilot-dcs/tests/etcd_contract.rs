//! The DCS contract against a real etcd (Debian's `etcd-server`, v3.4): Patroni's key layout and
//! exact stored bytes, the leader race, lease expiry, watch wake-ups, CAS, and behaviour while
//! etcd is frozen.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pgpilot_dcs::etcd::{EtcdDcs, EtcdOptions};
use pgpilot_dcs::{Dcs, MemberData, Status};

/// A real etcd on 127.0.0.1 free ports, killed by PID on drop.
struct Etcd {
    child: Child,
    endpoint: String,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

impl Etcd {
    fn start() -> Etcd {
        let bin = "/usr/bin/etcd";
        assert!(
            std::path::Path::new(bin).exists(),
            "{bin} is missing: apt-get install etcd-server"
        );
        let dir = tempfile::tempdir().unwrap();
        let (client, peer) = (free_port(), free_port());
        let curl = format!("http://127.0.0.1:{client}");
        let purl = format!("http://127.0.0.1:{peer}");
        let child = Command::new(bin)
            .args(["--data-dir", dir.path().join("data").to_str().unwrap()])
            .args([
                "--listen-client-urls",
                &curl,
                "--advertise-client-urls",
                &curl,
            ])
            .args([
                "--listen-peer-urls",
                &purl,
                "--initial-advertise-peer-urls",
                &purl,
            ])
            .args(["--initial-cluster", &format!("default={purl}")])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let etcd = Etcd {
            child,
            endpoint: format!("127.0.0.1:{client}"),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(&etcd.endpoint).is_err() {
            assert!(Instant::now() < deadline, "etcd did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        etcd
    }

    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn client(etcd: &Etcd, name: &str, ttl: u64) -> Arc<EtcdDcs> {
    Arc::new(
        EtcdDcs::connect(EtcdOptions {
            endpoints: vec![etcd.endpoint.clone()],
            namespace: "/service/".into(),
            scope: "batman".into(),
            name: name.into(),
            ttl: Duration::from_secs(ttl),
            retry_timeout: Duration::from_secs(2),
            loop_wait: Duration::from_secs(1),
            username: None,
            password: None,
        })
        .await
        .unwrap(),
    )
}

/// Raw bytes as stored, read with a plain etcd client.
async fn raw(etcd: &Etcd, key: &str) -> Option<(String, i64)> {
    let mut c = etcd_client::Client::connect([etcd.endpoint.clone()], None)
        .await
        .unwrap();
    let resp = c.get(key, None).await.unwrap();
    resp.kvs()
        .first()
        .map(|kv| (kv.value_str().unwrap().to_string(), kv.lease()))
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

/// Exactly one of three racers wins `/initialize` and the leader key; the stored values are the
/// bare name and the sysid; leader and member share one lease; the holder keeps it and only the
/// holder can release it.
#[tokio::test]
async fn races_layout_and_release() {
    let etcd = Etcd::start();
    let a = client(&etcd, "pg1", 20).await;
    let b = client(&etcd, "pg2", 20).await;
    let c = client(&etcd, "pg3", 20).await;

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

    winner
        .touch_member(&member_data(winner.member_name()))
        .await
        .unwrap();
    winner
        .initialize(false, "7311111111111111111")
        .await
        .unwrap();
    let (leader, leader_lease) = raw(&etcd, "/service/batman/leader").await.unwrap();
    assert_eq!(leader, winner.member_name());
    let (member, member_lease) = raw(
        &etcd,
        &format!("/service/batman/members/{}", winner.member_name()),
    )
    .await
    .unwrap();
    assert_eq!(member, member_data(winner.member_name()).to_json());
    assert!(
        member.starts_with(r#"{"conn_url":"postgres://"#),
        "{member}"
    );
    assert_eq!(
        leader_lease, member_lease,
        "leader and member share one lease"
    );
    assert_ne!(leader_lease, 0);
    assert_eq!(
        raw(&etcd, "/service/batman/initialize").await.unwrap().0,
        "7311111111111111111"
    );

    assert!(winner.update_leader(None).await.unwrap());
    assert!(
        !loser.delete_leader().await.unwrap(),
        "only the holder may release"
    );
    assert!(winner.delete_leader().await.unwrap());
    assert!(raw(&etcd, "/service/batman/leader").await.is_none());
    // The cache sees our own writes at once.
    let view = winner.cluster().await.unwrap();
    assert!(view.is_unlocked());
    assert_eq!(view.initialize.as_deref(), Some("7311111111111111111"));
}

/// A leader that stops renewing loses the key when its lease expires, and the expiry wakes a
/// waiting replica at once instead of at the end of its wait.
#[tokio::test]
async fn lease_expiry_wakes_replicas() {
    let etcd = Etcd::start();
    let leader = client(&etcd, "pg1", 2).await;
    let replica = client(&etcd, "pg2", 20).await;
    assert!(leader.attempt_to_acquire_leader().await.unwrap());
    let view = replica.cluster().await.unwrap();
    assert_eq!(view.leader_name(), Some("pg1"));
    // The leader stops renewing (as a hung agent would): no free-running keepalive keeps it.
    let started = Instant::now();
    let woke = replica.watch(Duration::from_secs(30), false).await;
    let waited = started.elapsed();
    assert!(woke, "woken by the leader key's expiry");
    assert!(waited < Duration::from_secs(20), "woke after {waited:?}");
    eprintln!("replica woken {waited:?} after the leader stopped renewing a 2 s lease");
    assert!(replica.cluster().await.unwrap().is_unlocked());
    assert!(replica.attempt_to_acquire_leader().await.unwrap());
}

/// `/config` and `/failover` CAS on mod_revision; `{}` clears the failover key; `/status` is
/// stored as Patroni's compact JSON.
#[tokio::test]
async fn cas_and_values() {
    let etcd = Etcd::start();
    let a = client(&etcd, "pg1", 20).await;
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

    a.write_status(&Status {
        optime: 67_108_960,
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(
        raw(&etcd, "/service/batman/status").await.unwrap().0,
        r#"{"optime":67108960}"#
    );
    a.delete_cluster().await.unwrap();
    assert!(a.cluster_fresh().await.unwrap().members.is_empty());
}

/// With etcd frozen (SIGSTOP), calls fail within the retry timeout instead of hanging, so a
/// primary can demote before its lease could expire.
#[tokio::test]
async fn frozen_etcd_fails_fast() {
    let etcd = Etcd::start();
    let a = client(&etcd, "pg1", 20).await;
    assert!(a.attempt_to_acquire_leader().await.unwrap());
    etcd.signal("-STOP");
    let started = Instant::now();
    let renewed = a.update_leader(None).await;
    let took = started.elapsed();
    etcd.signal("-CONT");
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
