//! The members' configuration: the Patroni YAML the harness writes for each member, and its
//! rewrite and reload during a test.

use anyhow::ensure;
use serde_json::{json, Value};

use super::{Cluster, Member, API_AUTH, ETCD_ROOT_PASSWORD, HBA, REPLICATION, REWIND, SUPERUSER};
use crate::{to_yaml, SHORT_TIMEOUT};

impl Cluster {
    /// Rewrites member `i`'s configuration file as the harness wrote it, then changed by
    /// `change`, and has its agent re-read it (`POST /reload`); returns once the agent logged
    /// the reload.
    pub async fn reconfigure(&self, i: usize, change: impl Fn(&mut Value)) {
        let m = &self.members[i];
        let mut doc = self.member_config(m);
        change(&mut doc);
        std::fs::write(&m.config_path, to_yaml(&doc)).expect("write member config");
        const RELOADED: &str = "Reloading the configuration";
        let before = self.agent_log(i).matches(RELOADED).count();
        let (code, text) = self
            .api_call(i, "POST", "/reload", None, true)
            .await
            .unwrap_or_else(|e| panic!("POST /reload: {e:#}"));
        assert_eq!(code, 202, "POST /reload: {text}");
        self.wait(
            SHORT_TIMEOUT,
            &format!("{} to reload", m.name),
            async || {
                ensure!(
                    self.agent_log(i).matches(RELOADED).count() > before,
                    "not logged yet"
                );
                Ok(())
            },
        )
        .await;
    }

    /// The Patroni configuration of one member.
    pub(super) fn member_config(&self, m: &Member) -> Value {
        let o = &self.options;
        let mut parameters = json!({
            "unix_socket_directories": m.socket_dir,
            "logging_collector": "on",
            "log_directory": m.pg_log_dir,
            "log_filename": "postgresql.log",
            "log_line_prefix": "%m [%p] %q%u@%d ",
            // Only a process crash is simulated here, never a host crash: skip the fsyncs.
            "fsync": "off",
        });
        let params = parameters.as_object_mut().unwrap();
        for (k, v) in &o.parameters {
            params.insert(k.clone(), v.clone());
        }
        let mut doc = json!({
            "scope": o.scope,
            "namespace": "/service/",
            "name": m.name,
            "log": { "level": o.log_level },
            "restapi": {
                "listen": format!("127.0.0.1:{}", m.api_port),
                "connect_address": format!("127.0.0.1:{}", m.api_port),
                "authentication": { "username": API_AUTH.0, "password": API_AUTH.1 },
            },
            "etcd3": self.etcd_section(),
            "bootstrap": {
                "dcs": {
                    "ttl": o.ttl,
                    "loop_wait": o.loop_wait,
                    "retry_timeout": o.retry_timeout,
                    "maximum_lag_on_failover": o.maximum_lag_on_failover,
                    "postgresql": {
                        "use_pg_rewind": o.use_pg_rewind,
                        "use_slots": o.use_slots,
                        "parameters": o.dcs_parameters,
                    },
                },
                "initdb": [{ "encoding": "UTF8" }],
            },
            "postgresql": {
                "listen": format!("127.0.0.1:{}", m.pg_port),
                "connect_address": format!("127.0.0.1:{}", m.pg_port),
                "data_dir": m.data_dir,
                "bin_dir": o.bin_dir,
                "pgpass": m.dir.join("pgpass"),
                "authentication": {
                    "superuser": { "username": SUPERUSER.0, "password": SUPERUSER.1 },
                    "replication": { "username": REPLICATION.0, "password": REPLICATION.1 },
                    "rewind": { "username": REWIND.0, "password": REWIND.1 },
                },
                "parameters": parameters,
                "pg_hba": HBA,
            },
        });
        if let Some(t) = &self.tls {
            doc["restapi"]["certfile"] = json!(t.server_cert);
            doc["restapi"]["keyfile"] = json!(t.server_key);
            doc["restapi"]["cafile"] = json!(t.ca);
            doc["restapi"]["verify_client"] = json!("optional");
            doc["ctl"] = json!({
                "certfile": t.client_cert,
                "keyfile": t.client_key,
                "cacert": t.ca,
            });
        }
        if let Some(tags) = o.tags.get(&m.index) {
            doc["tags"] = Value::Object(tags.clone());
        }
        if let Some(customize) = &o.customize {
            customize(m.index, &mut doc);
        }
        doc
    }

    /// The `etcd3` section of the members' configuration.
    fn etcd_section(&self) -> Value {
        let mut section = match self.etcd.tls() {
            Some(t) => json!({
                "hosts": self.etcd.urls(),
                "cacert": t.ca,
                "cert": t.client_cert,
                "key": t.client_key,
            }),
            None => json!({ "hosts": self.etcd.endpoints() }),
        };
        if self.options.etcd_auth {
            section["username"] = json!("root");
            section["password"] = json!(ETCD_ROOT_PASSWORD);
        }
        section
    }
}
