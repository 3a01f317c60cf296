//! The etcd client against a real etcd (Debian's `etcd-server`, v3.4) over TLS and with
//! authentication: certificates made with `openssl` in a temp dir (CA, server certificate for
//! 127.0.0.1 with an IP SAN, client certificate), etcd on https client URLs with
//! `--client-cert-auth`; and an etcd with `auth enable` (root user) and a short
//! `--auth-token-ttl`. The etcd is the test harness's ([`pgpilot_test_support::Etcd`]): free
//! loopback ports, killed by PID on drop.

use std::sync::Arc;
use std::time::{Duration, Instant};

use pgpilot_dcs::etcd::{EtcdDcs, EtcdOptions, EtcdTls};
use pgpilot_dcs::Dcs;
use pgpilot_test_support::{make_certs, temp_certs, Etcd, EtcdSetup, TlsFiles};

mod common;
use common::{member, sees_change};

fn options(endpoints: Vec<String>, name: &str, tls: EtcdTls) -> EtcdOptions {
    EtcdOptions {
        tls,
        ..common::options(endpoints, "tls", name)
    }
}

fn client_tls(files: &TlsFiles) -> EtcdTls {
    EtcdTls {
        section: "etcd3".into(),
        cacert: Some(files.ca.clone()),
        cert: Some(files.client_cert.clone()),
        key: Some(files.client_key.clone()),
        key_password: None,
    }
}

async fn connect(opts: EtcdOptions) -> Arc<EtcdDcs> {
    Arc::new(
        EtcdDcs::connect_within(opts, Duration::from_secs(30))
            .await
            .expect("connect"),
    )
}

/// The error of a connection that must be refused, within the budget.
async fn refused(opts: EtcdOptions) -> String {
    let started = Instant::now();
    let r = tokio::time::timeout(
        Duration::from_secs(30),
        EtcdDcs::connect_within(opts, Duration::from_secs(6)),
    )
    .await
    .expect("connect_within gives up within its budget");
    let e = match r {
        Ok(_) => panic!("the connection was accepted"),
        Err(e) => e.to_string(),
    };
    eprintln!("refused after {:?}: {e}", started.elapsed());
    e
}

/// A TLS etcd (`--client-cert-auth`) and its certificates; `_dir` holds the files.
fn tls_etcd(members: usize) -> (Etcd, TlsFiles, tempfile::TempDir) {
    let (dir, files) = temp_certs();
    let etcd = Etcd::start_with(EtcdSetup {
        members,
        tls: Some(files.clone()),
        client_cert_auth: true,
        ..Default::default()
    });
    (etcd, files, dir)
}

/// Over TLS with a client certificate (one client with cert and key in one file): one winner
/// of the bootstrap and leader races, the loser's watch wakes when the leader lets go, and the
/// winner keeps renewing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_leader_race_and_watch() {
    let (etcd, files, _dir) = tls_etcd(1);
    assert_eq!(etcd.urls()[0], format!("https://{}", etcd.endpoint()));
    let a = connect(options(etcd.urls(), "pg1", client_tls(&files))).await;
    // `key` defaults to the `cert` file: one PEM holding both works.
    let combined = files.client_cert.with_file_name("client-and-key.pem");
    let mut pem = std::fs::read(&files.client_cert).unwrap();
    pem.extend(std::fs::read(&files.client_key).unwrap());
    std::fs::write(&combined, pem).unwrap();
    let one_file = EtcdTls {
        cert: Some(combined),
        key: None,
        ..client_tls(&files)
    };
    let b = connect(options(etcd.urls(), "pg2", one_file)).await;
    // An encrypted (PKCS#8) client key with its `key_password`.
    let encrypted = EtcdTls {
        key: Some(pgpilot_test_support::encrypted_key(
            &files.client_key,
            "s3cret",
        )),
        key_password: Some("s3cret".into()),
        ..client_tls(&files)
    };
    let c = connect(options(etcd.urls(), "pg3", encrypted)).await;
    c.cluster()
        .await
        .expect("read over TLS with the decrypted key");
    assert!(a
        .known_endpoints()
        .iter()
        .all(|u| u.starts_with("https://")));

    let (ia, ib) = tokio::join!(a.initialize(true, "123"), b.initialize(true, "123"));
    assert_eq!([ia.unwrap(), ib.unwrap()].iter().filter(|w| **w).count(), 1);
    a.touch_member(&member("pg1")).await.unwrap();
    b.touch_member(&member("pg2")).await.unwrap();
    let (la, lb) = tokio::join!(a.attempt_to_acquire_leader(), b.attempt_to_acquire_leader());
    let (la, lb) = (la.unwrap(), lb.unwrap());
    assert!(la ^ lb, "exactly one leader: {la} {lb}");
    let (winner, loser, winner_name) = if la { (&a, &b, "pg1") } else { (&b, &a, "pg2") };
    assert!(winner.update_leader(None).await.unwrap());

    // The loser's watch-fed cache sees the leader, then is woken by its release.
    let seen = Instant::now();
    while loser.cluster().await.unwrap().leader_name() != Some(winner_name) {
        assert!(
            seen.elapsed() < Duration::from_secs(5),
            "the loser never saw the leader"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let released = {
        let winner = winner.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(300)).await;
            winner.delete_leader().await
        })
    };
    let started = Instant::now();
    while !loser.cluster().await.unwrap().is_unlocked() {
        assert!(
            loser.watch(Duration::from_secs(30), false).await,
            "woken by the release"
        );
        assert!(started.elapsed() < Duration::from_secs(10));
    }
    assert!(released.await.unwrap().unwrap());
    eprintln!(
        "watch woke {:?} after the release was sent",
        started.elapsed()
    );
    assert!(loser.attempt_to_acquire_leader().await.unwrap());
    let fresh = winner.cluster_fresh().await.unwrap();
    assert_eq!(fresh.members.len(), 2);
}

/// A 3-member TLS cluster: with any one member killed, renewals and reads still work.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_three_members_one_killed_still_serves() {
    let (etcd, files, _dir) = tls_etcd(3);
    // One configured member: the others are discovered (their https client URLs).
    // Patroni's default retry_timeout and ttl: a renewal may span an etcd election (see
    // etcd_members.rs).
    let leader = connect(EtcdOptions {
        retry_timeout: Duration::from_secs(10),
        ttl: Duration::from_secs(30),
        ..options(vec![etcd.urls()[0].clone()], "pg1", client_tls(&files))
    })
    .await;
    let known = leader.known_endpoints();
    assert_eq!(known.len(), 3, "discovered {known:?}");
    assert!(known.iter().all(|u| u.starts_with("https://")), "{known:?}");
    leader.touch_member(&member("pg1")).await.unwrap();
    assert!(leader.attempt_to_acquire_leader().await.unwrap());
    for victim in [0, 1] {
        etcd.kill_member(victim);
        for cycle in 0..3 {
            let started = Instant::now();
            let renewed = leader.update_leader(None).await;
            eprintln!(
                "e{victim} dead, cycle {cycle}: {renewed:?} in {:?}",
                started.elapsed()
            );
            assert!(matches!(renewed, Ok(true)), "{renewed:?}");
        }
        let c = leader.cluster_fresh().await.unwrap();
        assert_eq!(c.leader_name(), Some("pg1"));
        etcd.restart_member(victim);
        etcd.wait_all_healthy();
    }
}

/// etcd with `--client-cert-auth` refuses a client without a certificate, and a client that
/// trusts another CA refuses etcd; both errors say why. A bad file is refused before any
/// connection, named with its key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_refusals_name_the_problem() {
    let (etcd, files, dir) = tls_etcd(1);

    let no_cert = EtcdTls {
        cert: None,
        key: None,
        ..client_tls(&files)
    };
    let e = refused(options(etcd.urls(), "pg1", no_cert)).await;
    assert!(
        e.contains("no client certificate is configured (etcd3.cert, etcd3.key)"),
        "no client certificate: {e}"
    );

    let other = make_certs(&dir.path().join("other"));
    let wrong_ca = EtcdTls {
        cacert: Some(other.ca.clone()),
        ..client_tls(&files)
    };
    let e = refused(options(etcd.urls(), "pg1", wrong_ca)).await;
    assert!(
        e.contains("UnknownIssuer") || e.contains("invalid peer certificate"),
        "wrong CA: {e}"
    );

    let missing = EtcdTls {
        cacert: Some(dir.path().join("nope.crt")),
        ..client_tls(&files)
    };
    let e = refused(options(etcd.urls(), "pg1", missing)).await;
    assert!(
        e.contains("etcd3.cacert") && e.contains("nope.crt") && e.contains("missing"),
        "{e}"
    );

    let not_pem = dir.path().join("key.txt");
    std::fs::write(&not_pem, "not a key").unwrap();
    let bad_key = EtcdTls {
        key: Some(not_pem),
        ..client_tls(&files)
    };
    let e = refused(options(etcd.urls(), "pg1", bad_key)).await;
    assert!(e.contains("etcd3.key") && e.contains("not PEM"), "{e}");

    // Never a downgrade: http and https endpoints together are refused.
    let mixed = vec![etcd.urls()[0].clone(), "http://127.0.0.1:1".to_string()];
    let e = refused(options(mixed, "pg1", client_tls(&files))).await;
    assert!(e.contains("mix http and https"), "{e}");
}

fn auth_etcd(token_ttl: Option<u64>) -> Etcd {
    Etcd::start_with(EtcdSetup {
        root_password: Some("s3cret".into()),
        auth_token_ttl: token_ttl,
        ..Default::default()
    })
}

fn with_user(mut opts: EtcdOptions, user: &str, password: &str) -> EtcdOptions {
    opts.username = Some(user.into());
    opts.password = Some(password.into());
    opts
}

/// `auth enable` with a root user: the right password works, a wrong one is refused at once
/// with etcd's reason; no credentials, or a user without readwrite on the cluster's prefix, are
/// refused at start with what to grant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_right_and_wrong_password() {
    let etcd = auth_etcd(None);
    let urls = etcd.urls();
    let dcs = connect(with_user(
        options(urls.clone(), "pg1", EtcdTls::default()),
        "root",
        "s3cret",
    ))
    .await;
    dcs.touch_member(&member("pg1")).await.unwrap();
    assert!(dcs.attempt_to_acquire_leader().await.unwrap());
    assert_eq!(
        dcs.cluster_fresh().await.unwrap().leader_name(),
        Some("pg1")
    );

    let started = Instant::now();
    let e = refused(with_user(
        options(urls.clone(), "pg2", EtcdTls::default()),
        "root",
        "wrong",
    ))
    .await;
    assert!(
        e.contains("authentication failed") && e.contains("username and password"),
        "{e}"
    );
    assert!(!e.contains("wrong"), "the password is not shown: {e}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "refused at once"
    );

    // Without credentials etcd refuses every key: refused at start, saying what is missing.
    let e = refused(options(urls.clone(), "pg3", EtcdTls::default())).await;
    assert!(e.contains("refuses us the keys under /service/tls/"), "{e}");

    // A user whose role covers another prefix, or only reading ours: refused at start too.
    // A user with readwrite on our prefix works.
    etcd.add_user("other", "pw1", "/service/other/", "READWRITE")
        .unwrap();
    etcd.add_user("reader", "pw2", "/service/tls/", "READ")
        .unwrap();
    etcd.add_user("writer", "pw3", "/service/tls/", "READWRITE")
        .unwrap();
    for (user, password) in [("other", "pw1"), ("reader", "pw2")] {
        let e = refused(with_user(
            options(urls.clone(), "pg4", EtcdTls::default()),
            user,
            password,
        ))
        .await;
        assert!(
            e.contains("permission denied") && e.contains("readwrite permission"),
            "{user}: {e}"
        );
    }
    // pgpilotctl only checks reading: a read-only user may list.
    let reader = EtcdDcs::connect_reader_within(
        with_user(
            options(urls.clone(), "pgpilotctl", EtcdTls::default()),
            "reader",
            "pw2",
        ),
        Duration::from_secs(30),
    )
    .await
    .expect("a reader connects");
    assert!(reader.cluster_fresh().await.is_ok());
    let writer = connect(with_user(
        options(urls, "pg4", EtcdTls::default()),
        "writer",
        "pw3",
    ))
    .await;
    writer.touch_member(&member("pg4")).await.unwrap();
    assert_eq!(
        etcd.get("/service/tls/initialize").unwrap(),
        None,
        "the access check wrote nothing"
    );
}

/// The auth token expires (`--auth-token-ttl=2`, unused for longer than that): the client
/// authenticates again by itself and the requests of the HA cycle keep working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_token_expiry_is_survived() {
    let etcd = auth_etcd(Some(2));
    let dcs = connect(with_user(
        options(etcd.urls(), "pg1", EtcdTls::default()),
        "root",
        "s3cret",
    ))
    .await;
    let other = connect(with_user(
        options(etcd.urls(), "pg2", EtcdTls::default()),
        "root",
        "s3cret",
    ))
    .await;
    dcs.touch_member(&member("pg1")).await.unwrap();
    assert!(dcs.attempt_to_acquire_leader().await.unwrap());
    for round in 0..2 {
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert!(
            dcs.update_leader(None).await.unwrap(),
            "round {round}: renewal after the token expired"
        );
        dcs.touch_member(&member("pg1")).await.unwrap();
        let c = other.cluster_fresh().await.unwrap();
        assert_eq!(c.leader_name(), Some("pg1"), "round {round}");
        // The watch cache of the other client follows a change made after the expiry.
        sees_change(
            &other,
            &dcs,
            &format!("round-{round}"),
            "after the token expired",
        )
        .await;
    }
}

/// A username against an etcd without `auth enable`: etcd says authentication is not enabled,
/// and the client works without a token, as Patroni's does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn username_without_auth_enable_works() {
    let etcd = Etcd::start();
    let dcs = connect(with_user(
        options(etcd.urls(), "pg1", EtcdTls::default()),
        "root",
        "whatever",
    ))
    .await;
    dcs.touch_member(&member("pg1")).await.unwrap();
    assert!(dcs.attempt_to_acquire_leader().await.unwrap());
    assert_eq!(
        etcd.get("/service/tls/leader").unwrap().as_deref(),
        Some("pg1")
    );
}

/// TLS with client certificates and `auth enable` together: the password decides, a wrong one
/// is refused at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_and_auth_together() {
    let (dir, files) = temp_certs();
    let etcd = Etcd::start_with(EtcdSetup {
        tls: Some(files.clone()),
        client_cert_auth: true,
        root_password: Some("s3cret".into()),
        ..Default::default()
    });
    let dcs = connect(with_user(
        options(etcd.urls(), "pg1", client_tls(&files)),
        "root",
        "s3cret",
    ))
    .await;
    dcs.touch_member(&member("pg1")).await.unwrap();
    assert!(dcs.attempt_to_acquire_leader().await.unwrap());
    let e = refused(with_user(
        options(etcd.urls(), "pg2", client_tls(&files)),
        "root",
        "wrong",
    ))
    .await;
    assert!(e.contains("authentication failed"), "{e}");
    drop(dir);
}
