//! The REST API over HTTPS (`restapi.certfile`/`keyfile`/`cafile`, `verify_client: optional`):
//! members publish https api_urls, health checks answer without a client certificate,
//! mutating endpoints demand one, and agents and pgpilotctl talk to each other over TLS.
//! `restapi.ciphers` limits the TLS 1.2 suites the API accepts (checked with `openssl s_client`).

mod harness;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use harness::{Cluster, Options, API_AUTH, FAILOVER_TIMEOUT};
use serde_json::{json, Value};

/// Bootstrap, a switchover driven by pgpilotctl (its candidate check and the leader's check of
/// the candidate both go over HTTPS), and the access rules of `verify_client: optional`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rest_api_speaks_https_and_mutating_calls_need_a_client_certificate() {
    harness::init();
    let options = Options {
        https: true,
        // Only one TLS 1.2 suite (the harness's certificates are ECDSA); TLS 1.3 is not
        // limited by an OpenSSL cipher string, as in Patroni.
        customize: Some(Arc::new(|_, doc: &mut Value| {
            doc["restapi"]["ciphers"] = json!("ECDHE-ECDSA-AES256-GCM-SHA384:!aNULL:!SSLv3");
        })),
        ..Options::default()
    };
    let cluster = Cluster::start(3, options);
    let leader = cluster.wait_for_leader().await;
    cluster.wait_for_replicas_streaming(2).await;
    let tls = cluster.tls.clone().unwrap();

    let member: Value = serde_json::from_str(
        &cluster
            .etcd_get(&format!("members/{}", cluster.member(leader).name))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(
        member["api_url"],
        json!(format!(
            "https://127.0.0.1:{}/patroni",
            cluster.member(leader).api_port
        ))
    );

    // Without a client certificate: reads work, writes get 403 before authentication.
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&tls.ca).unwrap()).unwrap();
    let anonymous = reqwest::Client::builder()
        .add_root_certificate(ca)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let base = cluster.member(leader).api_base();
    let r = anonymous
        .get(format!("{base}/primary"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = anonymous
        .post(format!("{base}/restart"))
        .basic_auth(API_AUTH.0, Some(API_AUTH.1))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    assert_eq!(r.text().await.unwrap(), "client certificate required");
    // Plain HTTP on the HTTPS port gets no answer.
    let plain = reqwest::Client::new()
        .get(format!(
            "http://127.0.0.1:{}/patroni",
            cluster.member(leader).api_port
        ))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(plain.is_err(), "plain HTTP must not be served: {plain:?}");
    // With the client certificate (the harness's client) but no password: 401.
    let (code, _) = cluster
        .api_call(leader, "POST", "/reload", Some(json!({})), false)
        .await
        .unwrap();
    assert_eq!(code, 401);

    // restapi.ciphers: the allowed TLS 1.2 suite and TLS 1.3 connect, another suite does not.
    let port = cluster.member(leader).api_port;
    assert!(
        openssl_connects(
            port,
            &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES256-GCM-SHA384"]
        )
        .await
    );
    assert!(
        !openssl_connects(
            port,
            &["-tls1_2", "-cipher", "ECDHE-ECDSA-AES128-GCM-SHA256"]
        )
        .await
    );
    assert!(openssl_connects(port, &["-tls1_3"]).await);

    // pgpilotctl over HTTPS: switchover to a named candidate.
    let cand = (0..3).find(|&i| i != leader).unwrap();
    let cand_name = cluster.member(cand).name.clone();
    let config = cluster.member(0).config_path.clone();
    let out = tokio::process::Command::new(Path::new(env!("CARGO_BIN_EXE_pgpilotctl")))
        .arg("-c")
        .arg(&config)
        .args(["switchover", "--force", "--candidate", &cand_name])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("Successfully switched over to \"{cand_name}\"")),
        "{stdout}"
    );
    let tl = cluster.primary_timeline(cand).await;
    cluster
        .wait_for_streaming_replica(leader, Some(tl), FAILOVER_TIMEOUT)
        .await;
}

/// Whether `openssl s_client` with `args` completes a handshake with the API on `port`.
async fn openssl_connects(port: u16, args: &[&str]) -> bool {
    let out = tokio::process::Command::new("openssl")
        .arg("s_client")
        .arg("-connect")
        .arg(format!("127.0.0.1:{port}"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .expect("run openssl s_client");
    let text = String::from_utf8_lossy(&out.stdout);
    eprintln!(
        "openssl s_client {args:?}: {}",
        text.lines()
            .find(|l| l.contains("Cipher is"))
            .unwrap_or("no cipher")
    );
    out.status.success() && !text.contains("Cipher is (NONE)")
}
