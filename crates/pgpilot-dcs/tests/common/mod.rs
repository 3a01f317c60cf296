//! Helpers of the etcd client tests against a real etcd (`etcd_members.rs`, `etcd_tls.rs`).

use std::time::{Duration, Instant};

use pgpilot_dcs::etcd::{EtcdDcs, EtcdOptions};
use pgpilot_dcs::{Dcs, MemberData};

/// Client options of these tests: scope `scope`, ttl 20 s, retry_timeout 3 s, loop_wait 1 s,
/// member discovery on, no credentials, no TLS.
pub fn options(endpoints: Vec<String>, scope: &str, name: &str) -> EtcdOptions {
    EtcdOptions {
        endpoints,
        namespace: "/service/".into(),
        scope: scope.into(),
        name: name.into(),
        ttl: Duration::from_secs(20),
        retry_timeout: Duration::from_secs(3),
        loop_wait: Duration::from_secs(1),
        username: None,
        password: None,
        discover_members: true,
        tls: Default::default(),
    }
}

/// A member key's value.
pub fn member(name: &str) -> MemberData {
    MemberData {
        conn_url: format!("postgres://127.0.0.1:5432/{name}"),
        api_url: format!("http://127.0.0.1:8008/patroni/{name}"),
        state: "running".into(),
        role: "primary".into(),
        version: "4.1.4".into(),
        ..Default::default()
    }
}

/// A write by another client reaches `dcs`'s watch-fed cache.
pub async fn sees_change(dcs: &EtcdDcs, other: &EtcdDcs, value: &str, what: &str) {
    let doc = format!(r#"{{"ttl":20,"note":"{value}"}}"#);
    assert!(
        other.set_config(&doc, None).await.unwrap(),
        "{what}: set_config"
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let c = dcs.cluster().await.expect("cluster");
        if c.config
            .as_ref()
            .is_some_and(|cfg| cfg.data.get("note").and_then(|v| v.as_str()) == Some(value))
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the watch cache did not see the change within 15 s"
        );
        dcs.watch(Duration::from_millis(500), false).await;
    }
}
