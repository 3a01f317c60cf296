//! PostgreSQL connections as `postgresql.authentication` configures them: TLS with client
//! certificates (the acceptance suite's and the pglift seed's set-up: `ssl=on`,
//! `hostssl ... clientcert=verify-ca`, `sslmode`/`sslrootcert`/`sslcert`/`sslkey` per role)
//! and the unix socket (`use_unix_socket` with `local ... trust`).

mod harness;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use harness::{Cluster, Options, FAILOVER_TIMEOUT, SUPERUSER};
use pgpilot_postgres::{Credentials, PgSettings, Postgres};
use serde_json::{json, Map, Value};

/// The roles' TLS options: every agent connection over TCP must present the client
/// certificate (pg_hba says `clientcert=verify-ca`) and check the server's against the CA.
fn tls_auth(doc: &mut Value, t: &harness::TlsFiles) {
    for (role, mode) in [
        ("superuser", "verify-full"),
        ("replication", "verify-ca"),
        ("rewind", "verify-ca"),
    ] {
        let r = &mut doc["postgresql"]["authentication"][role];
        r["sslmode"] = json!(mode);
        r["sslrootcert"] = json!(t.ca);
        r["sslcert"] = json!(t.client_cert);
        r["sslkey"] = json!(t.client_key);
    }
    doc["postgresql"]["pg_hba"] = json!([
        "local all all trust",
        "hostssl all all 127.0.0.1/32 md5 clientcert=verify-ca",
        "hostssl replication all 127.0.0.1/32 md5 clientcert=verify-ca",
    ]);
}

/// Bootstrap, a replica cloned with pg_basebackup and streaming, and a switchover, with a
/// pg_hba.conf that accepts TCP connections only over TLS with a client certificate. Then the
/// sslmode rules seen from the library: a wrong CA and a host name the certificate does not
/// name are refused where libpq refuses them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_whose_pg_hba_demands_tls_client_certificates_runs_and_switches_over() {
    harness::init();
    let (_certs_dir, certs) = harness::temp_certs();
    let t = certs.clone();
    let mut parameters = Map::new();
    parameters.insert("ssl".into(), json!("on"));
    parameters.insert("ssl_ca_file".into(), json!(certs.ca));
    parameters.insert("ssl_cert_file".into(), json!(certs.server_cert));
    parameters.insert("ssl_key_file".into(), json!(certs.server_key));
    let options = Options {
        parameters,
        harness_via_socket: true,
        customize: Some(Arc::new(move |_, doc: &mut Value| tls_auth(doc, &t))),
        ..Options::default()
    };
    let cluster = Cluster::start(2, options);
    let leader = cluster.wait_for_leader().await;
    let replicas = cluster.wait_for_replicas_streaming(1).await;
    let replica = replicas[0];

    // The walreceiver and the agent's monitoring connection both came in over TLS.
    let rows = cluster
        .pg_connect(leader)
        .await
        .query(
            "SELECT a.backend_type, a.application_name, s.ssl, a.client_addr IS NOT NULL \
             FROM pg_catalog.pg_stat_ssl s JOIN pg_catalog.pg_stat_activity a USING (pid) \
             WHERE a.backend_type = 'walsender' OR a.application_name = 'pgpilot'",
            &[],
        )
        .await
        .unwrap();
    let seen: Vec<(String, String, bool, bool)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3)))
        .collect();
    eprintln!("connections on the leader: {seen:?}");
    let replica_name = cluster.member(replica).name.clone();
    assert!(
        seen.iter()
            .any(|(b, app, ssl, tcp)| b == "walsender" && *app == replica_name && *ssl && *tcp),
        "the replica streams over TLS: {seen:?}"
    );
    assert!(
        seen.iter()
            .any(|(b, app, ssl, tcp)| b == "client backend" && app == "pgpilot" && *ssl && *tcp),
        "the agent monitors over TLS: {seen:?}"
    );

    // A switchover: the new leader's agent and the old leader's walreceiver reconnect over TLS.
    cluster.switchover(leader, Some(replica)).await;
    let tl = cluster.primary_timeline(replica).await;
    cluster
        .wait_for_streaming_replica(leader, Some(tl), FAILOVER_TIMEOUT)
        .await;

    // The library's sslmode rules against the running server (its certificate names
    // IP:127.0.0.1 only).
    let port = cluster.member(replica).pg_port;
    let settings = |host: &str, options: &[(&str, &str)]| PgSettings {
        name: "probe".into(),
        scope: "probe".into(),
        data_dir: PathBuf::from("/nonexistent"),
        config_dir: PathBuf::from("/nonexistent"),
        bin_dir: PathBuf::new(),
        listen_addresses: host.into(),
        port,
        local_host: host.into(),
        superuser: Credentials {
            username: SUPERUSER.0.into(),
            password: Some(SUPERUSER.1.into()),
            options: options
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        },
        replication: Credentials::default(),
        rewind: None,
        pgpass: PathBuf::from("/nonexistent/pgpass"),
        pg_ctl_timeout: Duration::from_secs(5),
    };
    let ca = certs.ca.display().to_string();
    let cert = certs.client_cert.display().to_string();
    let key = certs.client_key.display().to_string();
    let client = [("sslcert", cert.as_str()), ("sslkey", key.as_str())];
    let with = |extra: &[(&'static str, &str)]| {
        let mut all: Vec<(&str, &str)> = client.to_vec();
        all.extend_from_slice(extra);
        all.into_iter()
            .map(|(k, v)| (k, v.to_string()))
            .collect::<Vec<_>>()
    };
    let probe = |host: &str, opts: Vec<(&str, String)>| {
        let pairs: Vec<(&str, &str)> = opts.iter().map(|(k, v)| (*k, v.as_str())).collect();
        Postgres::new(settings(host, &pairs))
    };
    // verify-ca by address and by name: the chain is what counts.
    for host in ["127.0.0.1", "localhost"] {
        let pg = probe(
            host,
            with(&[("sslmode", "verify-ca"), ("sslrootcert", &ca)]),
        );
        pg.query_state()
            .await
            .unwrap_or_else(|e| panic!("verify-ca to {host}: {e}"));
    }
    // verify-full: 127.0.0.1 is in the certificate, localhost is not.
    let pg = probe(
        "127.0.0.1",
        with(&[("sslmode", "verify-full"), ("sslrootcert", &ca)]),
    );
    pg.query_state().await.expect("verify-full to 127.0.0.1");
    let pg = probe(
        "localhost",
        with(&[("sslmode", "verify-full"), ("sslrootcert", &ca)]),
    );
    let e = pg.query_state().await.unwrap_err().to_string();
    assert!(e.contains("certificate"), "verify-full to localhost: {e}");
    // Another CA: refused, and the error says why.
    let (_other_dir, other) = harness::temp_certs();
    let other_ca = other.ca.display().to_string();
    let pg = probe(
        "127.0.0.1",
        with(&[("sslmode", "verify-ca"), ("sslrootcert", &other_ca)]),
    );
    let e = pg.query_state().await.unwrap_err().to_string();
    assert!(e.contains("certificate"), "wrong CA: {e}");
    // No client certificate: the server's pg_hba refuses, as for libpq.
    let pg = probe("127.0.0.1", vec![("sslmode", "require".to_string())]);
    let e = pg.query_state().await.unwrap_err().to_string();
    assert!(e.contains("certificate"), "no client certificate: {e}");
    // An encrypted client key (PKCS#8) is decrypted with sslpassword, as libpq does; without
    // it, or with a wrong one, the connection is refused and says why.
    let encrypted = harness::encrypted_key(&certs.client_key, "s3cret")
        .display()
        .to_string();
    let enc = |password: Option<&str>| {
        let mut opts = vec![
            ("sslmode", "verify-ca".to_string()),
            ("sslrootcert", ca.clone()),
            ("sslcert", cert.clone()),
            ("sslkey", encrypted.clone()),
        ];
        if let Some(p) = password {
            opts.push(("sslpassword", p.to_string()));
        }
        probe("127.0.0.1", opts)
    };
    enc(Some("s3cret"))
        .query_state()
        .await
        .expect("an encrypted key with its sslpassword");
    let e = enc(None).query_state().await.unwrap_err().to_string();
    assert!(e.contains("sslpassword is not set"), "no sslpassword: {e}");
    let e = enc(Some("wrong"))
        .query_state()
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("can not decrypt"), "wrong sslpassword: {e}");
    cluster.assert_agents_alive();
}

/// `use_unix_socket`: the agent's superuser connections go through the socket, so a pg_hba.conf
/// that rejects the superuser over TCP still lets it bootstrap, create the roles and lead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn use_unix_socket_connects_the_agent_through_the_socket() {
    harness::init();
    let options = Options {
        harness_via_socket: true,
        customize: Some(Arc::new(|_, doc: &mut Value| {
            doc["postgresql"]["use_unix_socket"] = json!(true);
            doc["postgresql"]["pg_hba"] = json!([
                "local all all trust",
                format!("host all {} 127.0.0.1/32 reject", SUPERUSER.0),
                "host all all 127.0.0.1/32 md5",
                "host replication all 127.0.0.1/32 md5",
            ]);
        })),
        ..Options::default()
    };
    let cluster = Cluster::start(2, options);
    let leader = cluster.wait_for_leader().await;
    cluster.wait_for_replicas_streaming(1).await;
    let rows = cluster
        .pg_connect(leader)
        .await
        .query(
            "SELECT client_addr IS NULL FROM pg_catalog.pg_stat_activity \
             WHERE application_name = 'pgpilot'",
            &[],
        )
        .await
        .unwrap();
    let via_socket: Vec<bool> = rows.iter().map(|r| r.get(0)).collect();
    assert!(
        !via_socket.is_empty() && via_socket.iter().all(|s| *s),
        "the agent's connections come through the socket: {via_socket:?}"
    );
    let log = cluster.agent_log(leader);
    assert!(
        !log.contains("use_unix_socket"),
        "use_unix_socket is not reported as ignored:\n{log}"
    );
    cluster.assert_agents_alive();
}

/// Patroni's acceptance suite makes one self-signed certificate (`openssl req -x509`, so
/// `CA:TRUE`) and uses it as CA, server and client certificate everywhere: REST with
/// `verify_client: required`, PostgreSQL `ssl=on` with `clientcert=verify-ca` and
/// `sslmode=verify-ca`. OpenSSL accepts a peer whose certificate is itself trusted; webpki
/// calls it "CA used as end entity". pgpilot accepts it as OpenSSL does, and still refuses a
/// client without a certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_self_signed_certificate_trusted_as_itself_works_for_rest_and_postgresql() {
    harness::init();
    let dir = tempfile::Builder::new()
        .prefix("pgpilot-selfsigned-")
        .tempdir()
        .unwrap();
    let (cert, key) = (
        dir.path().join("patroni.crt"),
        dir.path().join("patroni.key"),
    );
    let out = std::process::Command::new("openssl")
        .args([
            "req",
            "-nodes",
            "-new",
            "-x509",
            "-subj",
            "/CN=batman.patroni",
        ])
        .args(["-addext", "subjectAltName=IP:127.0.0.1", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let t = harness::TlsFiles {
        ca: cert.clone(),
        server_cert: cert.clone(),
        server_key: key.clone(),
        client_cert: cert.clone(),
        client_key: key.clone(),
    };
    let mut parameters = Map::new();
    parameters.insert("ssl".into(), json!("on"));
    parameters.insert("ssl_ca_file".into(), json!(cert));
    parameters.insert("ssl_cert_file".into(), json!(cert));
    parameters.insert("ssl_key_file".into(), json!(key));
    let options = Options {
        parameters,
        harness_via_socket: true,
        customize: Some(Arc::new(move |_, doc: &mut Value| {
            tls_auth(doc, &t);
            doc["restapi"]["certfile"] = json!(t.server_cert);
            doc["restapi"]["keyfile"] = json!(t.server_key);
            doc["restapi"]["cafile"] = json!(t.ca);
            doc["restapi"]["verify_client"] = json!("required");
            doc["ctl"] = json!({
                "cacert": t.ca,
                "certfile": t.client_cert,
                "keyfile": t.client_key,
            });
        })),
        ..Options::default()
    };
    let cluster = Cluster::start(2, options);
    // The harness's own REST client does not know this certificate: ask with one that
    // presents it, as the suite's client does (`ctl.insecure`, client certificate).
    let mut identity = std::fs::read(&cert).unwrap();
    identity.extend(std::fs::read(&key).unwrap());
    let with_cert = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .identity(reqwest::Identity::from_pem(&identity).unwrap())
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let status = |i: usize| {
        let url = format!("https://127.0.0.1:{}/patroni", cluster.member(i).api_port);
        let client = with_cert.clone();
        async move {
            let r = client.get(&url).send().await?;
            anyhow::Ok((r.status().as_u16(), r.json::<Value>().await?))
        }
    };
    // The leader runs as primary; the replica (its walreceiver with verify-ca, its agent
    // asking the leader over REST with the certificate) streams.
    let deadline = std::time::Instant::now() + FAILOVER_TIMEOUT;
    let (leader, replica) = loop {
        if let Some(leader) = cluster.leader_index() {
            let replica = 1 - leader;
            if let (Ok((200, l)), Ok((_, r))) = (status(leader).await, status(replica).await) {
                if l["role"] == "primary" && r["replication_state"] == "streaming" {
                    break (leader, replica);
                }
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no streaming pair: {:?} {:?}",
            status(0).await.ok(),
            status(1).await.ok()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    eprintln!("leader {leader}, replica {replica} streaming");
    // pgpilotctl with `ctl.cacert` naming the same self-signed certificate (the agents' own
    // REST client too): trusted as itself, as OpenSSL does, with its IP name checked.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_pgpilotctl"))
        .arg("-c")
        .arg(&cluster.member(leader).config_path)
        .args(["reload", "pgpilot-test", "--force"])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let said =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert_eq!(
        said.matches("Reload request received for member").count(),
        2,
        "both members answered POST /reload over the self-signed TLS: {said}"
    );
    let url = format!(
        "https://127.0.0.1:{}/patroni",
        cluster.member(leader).api_port
    );
    let without = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let refused = without.get(&url).send().await;
    assert!(
        refused.is_err(),
        "verify_client required refuses a client without a certificate: {refused:?}"
    );
    cluster.assert_agents_alive();
}
