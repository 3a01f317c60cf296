//! Configuration loading: Patroni files, directories, environment, validation, dynamic config.

use std::time::Duration;

use pgpilot_config::{
    load, validate, yaml, ClientContinuity, ConfigError, DynamicConfig, HaproxyAddress,
    HaproxyTarget, WatchdogConfig, WatchdogDriver, WatchdogMode,
};
use serde_json::{json, Map, Value};

const SAMPLE: &str = r#"
scope: batman
namespace: /service/
name: postgresql0

restapi:
  listen: 127.0.0.1:8008
  connect_address: 127.0.0.1:8008
  authentication:
    username: admin
    password: admin

etcd3:
  host: 127.0.0.1:2379

bootstrap:
  dcs:
    ttl: 30
    loop_wait: 10
    retry_timeout: 10
    maximum_lag_on_failover: 1048576
    postgresql:
      use_pg_rewind: true
      parameters:
        max_connections: 200
        wal_log_hints: on
  initdb:
  - encoding: UTF8
  - data-checksums
  pg_hba:
  - host replication replicator 127.0.0.1/32 md5
  - host all all 0.0.0.0/0 md5

postgresql:
  listen: 127.0.0.1:5432
  connect_address: 127.0.0.1:5432
  data_dir: data/postgresql0
  pgpass: /tmp/pgpass0
  authentication:
    replication:
      username: replicator
      password: rep-pass
    superuser:
      username: postgres
      password: zalando
    rewind:
      username: rewind_user
      password: rewind_password
  parameters:
    unix_socket_directories: '..'
    max_connections: 500

watchdog:
  mode: automatic

tags:
  noloadbalance: false
  clonefrom: false
  nostream: false
  custom: "x"
"#;

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

/// A Patroni sample file loads with every modelled key typed, unknown keys warned once.
#[test]
fn patroni_sample_loads() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "p.yml", SAMPLE);
    let loaded = load(Some(&path), &env(&[("HOME", "/home/x")])).unwrap();
    let c = &loaded.config;
    assert_eq!(c.name, "postgresql0");
    assert_eq!(c.scope, "batman");
    assert_eq!(c.namespace, "/service/");
    assert_eq!(c.etcd.hosts, vec!["127.0.0.1:2379"]);
    assert_eq!(
        c.bootstrap.initdb,
        vec!["--encoding=UTF8", "--data-checksums"]
    );
    assert_eq!(c.bootstrap.pg_hba.len(), 2);
    assert_eq!(c.postgresql.port, 5432);
    assert_eq!(c.postgresql.listen_addresses, "127.0.0.1");
    assert_eq!(c.postgresql.config_dir, c.postgresql.data_dir);
    assert_eq!(
        c.postgresql.rewind.as_ref().unwrap().username,
        "rewind_user"
    );
    assert!(!c.postgresql.parameters.contains_key("max_connections"));
    assert_eq!(c.api_url(), "http://127.0.0.1:8008/patroni");
    assert_eq!(c.conn_url(), "postgres://127.0.0.1:5432/postgres");
    // false predefined booleans are not published; custom tags are.
    assert_eq!(
        Value::Object(c.tags.published.clone()),
        json!({"custom": "x"})
    );
    assert_eq!(c.ctl.authentication.as_ref().unwrap().username, "admin");
    // `watchdog` is modelled: no warning names it.
    assert!(
        !loaded.warnings.iter().any(|w| w.contains("watchdog")),
        "{:?}",
        loaded.warnings
    );
    assert_eq!(c.watchdog.mode, WatchdogMode::Automatic);
    assert!(loaded
        .warnings
        .iter()
        .any(|w| w.contains("max_connections")));
}

/// A directory of YAML files is merged in sorted order, later files winning.
#[test]
fn directory_merge() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "00-base.yml", SAMPLE);
    write(
        dir.path(),
        "10-override.yaml",
        "name: pg9\npostgresql:\n  listen: 127.0.0.1:6000\n",
    );
    write(dir.path(), "README.txt", "not yaml: [");
    let c = load(Some(dir.path()), &env(&[])).unwrap().config;
    assert_eq!(c.name, "pg9");
    assert_eq!(c.postgresql.port, 6000);
    assert_eq!(c.postgresql.superuser.username, "postgres");
}

/// PATRONI_* variables override the file; a config can come from the environment alone.
#[test]
fn environment_overrides_and_env_only() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "p.yml", SAMPLE);
    let e = env(&[
        ("PATRONI_NAME", "pg7"),
        ("PATRONI_ETCD3_HOSTS", "'10.0.0.1:2379','10.0.0.2:2379'"),
        ("PATRONI_POSTGRESQL_LISTEN", "0.0.0.0:5433"),
        ("PATRONI_SUPERUSER_PASSWORD", "s3cret"),
        ("PATRONI_RESTAPI_USERNAME", "u"),
    ]);
    let c = load(Some(&path), &e).unwrap().config;
    assert_eq!(c.name, "pg7");
    assert_eq!(c.etcd.hosts, vec!["10.0.0.1:2379", "10.0.0.2:2379"]);
    assert_eq!(c.postgresql.port, 5433);
    assert_eq!(c.postgresql.superuser.password.as_deref(), Some("s3cret"));
    assert_eq!(c.restapi.authentication.unwrap().username, "u");

    let only = env(&[
        ("PATRONI_NAME", "a"),
        ("PATRONI_SCOPE", "s"),
        ("PATRONI_RESTAPI_LISTEN", "127.0.0.1:8008"),
        ("PATRONI_RESTAPI_CONNECT_ADDRESS", "127.0.0.1:8008"),
        ("PATRONI_ETCD3_HOST", "127.0.0.1:2379"),
        ("PATRONI_POSTGRESQL_LISTEN", "127.0.0.1:5432"),
        ("PATRONI_POSTGRESQL_CONNECT_ADDRESS", "127.0.0.1:5432"),
        ("PATRONI_POSTGRESQL_DATA_DIR", "/tmp/d"),
        ("PATRONI_SUPERUSER_USERNAME", "postgres"),
        ("PATRONI_REPLICATION_USERNAME", "rep"),
    ]);
    let c = load(None, &only).unwrap().config;
    assert_eq!((c.name.as_str(), c.scope.as_str()), ("a", "s"));
    assert_eq!(c.namespace, "/service");
}

/// Boolean PATRONI_* variables are read with Patroni's parse_bool; a value it does not know
/// (`y`, `maybe`) is ignored, as Patroni ignores it, and the file's value stays.
#[test]
fn environment_booleans_follow_parse_bool() {
    let text = format!("{SAMPLE}\nctl:\n  insecure: true\n");
    let insecure = |value: &str| {
        let e = env(&[
            ("PATRONI_CONFIGURATION", text.as_str()),
            ("PATRONI_CTL_INSECURE", value),
        ]);
        load(None, &e).unwrap().config.ctl.tls.insecure
    };
    for (value, want) in [
        ("off", false),
        ("No", false),
        ("0", false),
        ("FALSE", false),
        ("y", true),
        ("n", true),
        ("maybe", true),
        ("", true),
    ] {
        assert_eq!(insecure(value), want, "PATRONI_CTL_INSECURE={value:?}");
    }
    let e = env(&[
        ("PATRONI_CONFIGURATION", SAMPLE),
        ("PATRONI_RESTAPI_ALLOWLIST_INCLUDE_MEMBERS", "Yes"),
    ]);
    assert!(
        load(None, &e)
            .unwrap()
            .config
            .restapi
            .allowlist_include_members
    );
}

/// `--validate-config` accepts exactly the `synchronous_mode` values the dynamic configuration
/// reads (Patroni's validator: `quorum` in any case, or a parse_bool word).
#[test]
fn synchronous_mode_validator_and_reader_agree() {
    use pgpilot_config::SyncMode;
    let cases = [
        (json!("quorum"), Some(SyncMode::Quorum)),
        (json!("Quorum"), Some(SyncMode::Quorum)),
        (json!(true), Some(SyncMode::On)),
        (json!("on"), Some(SyncMode::On)),
        (json!("ON"), Some(SyncMode::On)),
        (json!("yes"), Some(SyncMode::On)),
        (json!(1), Some(SyncMode::On)),
        (json!(false), Some(SyncMode::Off)),
        (json!("off"), Some(SyncMode::Off)),
        (json!("0"), Some(SyncMode::Off)),
        (json!("y"), None),
        (json!("sync"), None),
        (json!(2), None),
    ];
    for (value, want) in cases {
        let mut doc = yaml::parse(SAMPLE, "f").unwrap();
        doc["bootstrap"]["dcs"]["synchronous_mode"] = value.clone();
        let rejected = validate(&doc)
            .iter()
            .any(|p| p.path == "bootstrap.dcs.synchronous_mode");
        assert_eq!(rejected, want.is_none(), "validator on {value}");
        let (d, _) = dynamic(json!({ "synchronous_mode": value }));
        assert_eq!(d.synchronous_mode, want.unwrap_or(SyncMode::Off), "{value}");
    }
}

/// Every missing required key is named in one error.
#[test]
fn missing_keys_are_all_named() {
    let err = load(None, &env(&[("PATRONI_CONFIGURATION", "name: x\n")])).unwrap_err();
    let ConfigError::Invalid(problems) = err else {
        panic!("{err}")
    };
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    for key in [
        "scope",
        "restapi.listen",
        "restapi.connect_address",
        "etcd3",
        "postgresql.listen",
        "postgresql.connect_address",
        "postgresql.data_dir",
        "postgresql.authentication.superuser",
        "postgresql.authentication.replication",
    ] {
        assert!(paths.contains(&key), "{key} missing from {paths:?}");
    }
}

/// Patroni's `etcd:` (v2 API) section, from the file or the environment, stops the agent with
/// the key named and what to change: etcd's v2 and v3 key spaces are disjoint, so reading it as
/// v3 could bootstrap a second cluster beside Patroni members that use v2.
#[test]
fn etcd_v2_section_is_refused() {
    let text = SAMPLE.replace("etcd3:", "etcd:");
    assert_ne!(text, SAMPLE);
    for source in [
        env(&[("PATRONI_CONFIGURATION", &text)]),
        env(&[
            (
                "PATRONI_CONFIGURATION",
                &SAMPLE.replace("etcd3:", "unused:"),
            ),
            ("PATRONI_ETCD_HOSTS", "127.0.0.1:2379"),
        ]),
    ] {
        let err = load(None, &source).unwrap_err().to_string();
        assert!(err.contains("etcd: is Patroni's etcd v2 API"), "{err}");
        assert!(err.contains("Rename the section to etcd3"), "{err}");
    }
}

/// Forbidden initdb options and a bad listen port are refused with their key paths.
#[test]
fn invalid_values_named() {
    let text = SAMPLE
        .replace("  - data-checksums", "  - data-checksums\n  - pgdata: /x")
        .replace("listen: 127.0.0.1:5432", "listen: 127.0.0.1:port");
    let err = load(None, &env(&[("PATRONI_CONFIGURATION", &text)]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("bootstrap.initdb: pgdata"), "{err}");
    assert!(err.contains("postgresql.listen"), "{err}");
}

/// `postgresql.authentication.<role>` carries libpq options (Patroni's
/// `_AUTH_ALLOWED_PARAMETERS`), also from `PATRONI_<ROLE>_SSL*`; an unknown one is named, an
/// invalid enumerated value refused; `use_unix_socket` is read.
#[test]
fn authentication_libpq_options_are_read_and_checked() {
    let text = SAMPLE
        .replace(
            "      username: replicator\n",
            "      username: replicator\n      sslmode: verify-ca\n      sslrootcert: /ca.pem\n      sslcompression: 1\n",
        )
        .replace(
            "\n  parameters:\n",
            "\n  use_unix_socket: true\n  parameters:\n",
        );
    let loaded = load(
        None,
        &env(&[
            ("PATRONI_CONFIGURATION", &text),
            ("PATRONI_SUPERUSER_SSLCERT", "/client.pem"),
        ]),
    )
    .unwrap();
    let pg = &loaded.config.postgresql;
    assert_eq!(pg.replication.options["sslmode"], "verify-ca");
    assert_eq!(pg.replication.options["sslrootcert"], "/ca.pem");
    assert_eq!(pg.superuser.options["sslcert"], "/client.pem");
    assert!(pg.use_unix_socket && !pg.use_unix_socket_repl);
    assert!(
        loaded
            .warnings
            .iter()
            .any(|w| w.contains("postgresql.authentication.replication.sslcompression")),
        "{:?}",
        loaded.warnings
    );
    assert!(
        !loaded
            .warnings
            .iter()
            .any(|w| w.contains("use_unix_socket")),
        "{:?}",
        loaded.warnings
    );

    let bad = SAMPLE.replace(
        "      username: postgres\n",
        "      username: postgres\n      sslmode: verify_full\n",
    );
    let err = load(None, &env(&[("PATRONI_CONFIGURATION", &bad)]))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("postgresql.authentication.superuser.sslmode") && err.contains("verify-full"),
        "{err}"
    );
}

/// Duplicate keys are refused; PyYAML's booleans are read as booleans.
#[test]
fn yaml_semantics() {
    assert!(yaml::parse("a: 1\na: 2", "f").is_err());
    assert_eq!(yaml::parse("x: yes", "f").unwrap()["x"], Value::Bool(true));
}

/// --validate-config lists loopback connect addresses and out-of-range values.
#[test]
fn validate_lists_every_problem() {
    let doc = yaml::parse(
        &SAMPLE.replace("max_connections: 200", "max_connections: 0"),
        "f",
    )
    .unwrap();
    let problems = validate(&doc);
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert!(paths.contains(&"restapi.connect_address"), "{paths:?}");
    assert!(paths.contains(&"postgresql.connect_address"), "{paths:?}");
    assert!(
        paths.contains(&"bootstrap.dcs.postgresql.parameters.max_connections"),
        "{paths:?}"
    );
}

fn dynamic(v: Value) -> (DynamicConfig, Vec<String>) {
    let Value::Object(m) = v else { panic!() };
    DynamicConfig::from_document(&m)
}

/// Below Patroni's floors (ttl 20, retry_timeout 3) only with pgpilot's guard: the fast profile
/// is honoured when fenced, raised with the reason otherwise; nothing goes below 5 / 2.
#[test]
fn short_ttl_needs_the_guard() {
    let Value::Object(fast) = json!({"ttl": 8, "loop_wait": 1, "retry_timeout": 2}) else {
        panic!()
    };
    let (d, w) = DynamicConfig::from_document_fenced(&fast, true);
    let secs = |d: &DynamicConfig| {
        (
            d.ttl.as_secs(),
            d.loop_wait.as_secs(),
            d.retry_timeout.as_secs(),
        )
    };
    assert_eq!(secs(&d), (8, 1, 2));
    assert!(w.is_empty(), "{w:?}");
    let (d, w) = DynamicConfig::from_document_fenced(&fast, false);
    assert_eq!(secs(&d), (20, 1, 3));
    assert_eq!(
        w,
        [
            "ttl=8 is below the minimum 20; using 20 (a shorter one needs pgpilot's guard: pgpilot.guard on)",
            "retry_timeout=2 is below the minimum 3; using 3 (a shorter one needs pgpilot's guard: pgpilot.guard on)",
        ]
    );
    let Value::Object(tiny) = json!({"ttl": 3, "loop_wait": 1, "retry_timeout": 1}) else {
        panic!()
    };
    let (d, w) = DynamicConfig::from_document_fenced(&tiny, true);
    assert_eq!(secs(&d), (5, 1, 2));
    assert_eq!(w.len(), 2, "{w:?}");

    // The validator: refused without the guard, with the reason; accepted with it.
    let with = |guard: &str| {
        yaml::parse(
            &format!("{SAMPLE}\npgpilot:\n  guard: {guard}\n").replace("ttl: 30", "ttl: 8"),
            "f",
        )
        .unwrap()
    };
    let ttl_problems = |doc: &Value| -> Vec<String> {
        validate(doc)
            .into_iter()
            .filter(|p| p.path == "bootstrap.dcs.ttl")
            .map(|p| p.message)
            .collect()
    };
    assert!(ttl_problems(&with("on")).is_empty());
    let off = ttl_problems(&with("off"));
    assert_eq!(off.len(), 1, "{off:?}");
    assert!(off[0].contains("needs pgpilot's guard"), "{off:?}");
}

/// Defaults and the timing rule loop_wait + 2*retry_timeout <= ttl.
#[test]
fn dynamic_timing_rule() {
    let (d, w) = dynamic(json!({}));
    assert_eq!(
        (d.ttl, d.loop_wait, d.retry_timeout),
        (
            Duration::from_secs(30),
            Duration::from_secs(10),
            Duration::from_secs(10)
        )
    );
    assert!(w.is_empty());
    assert!(d.use_slots);
    assert_eq!(d.maximum_lag_on_failover, 1_048_576);

    let (d, w) = dynamic(json!({"ttl": 20, "loop_wait": 1, "retry_timeout": 3}));
    assert_eq!(
        (
            d.ttl.as_secs(),
            d.loop_wait.as_secs(),
            d.retry_timeout.as_secs()
        ),
        (20, 1, 3)
    );
    assert!(w.is_empty());

    let (d, w) = dynamic(json!({"ttl": 20, "loop_wait": 10, "retry_timeout": 5}));
    assert_eq!((d.loop_wait.as_secs(), d.retry_timeout.as_secs()), (10, 5));
    assert!(w.is_empty());

    let (d, w) = dynamic(json!({"ttl": 20, "loop_wait": 10, "retry_timeout": 8}));
    assert_eq!(d.loop_wait.as_secs(), 4);
    assert_eq!(w.len(), 1);

    let (d, w) = dynamic(json!({"ttl": "20", "loop_wait": 10, "retry_timeout": 10}));
    assert_eq!((d.loop_wait.as_secs(), d.retry_timeout.as_secs()), (1, 9));
    assert_eq!(w.len(), 1);

    let (d, w) = dynamic(json!({"ttl": 5, "loop_wait": 0}));
    assert_eq!((d.ttl.as_secs(), d.loop_wait.as_secs()), (20, 1));
    assert!(w.len() >= 2);

    let (d, _) = dynamic(
        json!({"pause": true, "master_start_timeout": 12, "postgresql": {"use_slots": false, "use_pg_rewind": true}}),
    );
    assert!(d.pause && !d.use_slots && d.use_pg_rewind);
    assert_eq!(d.primary_start_timeout.as_secs(), 12);
    let _ = Map::<String, Value>::new();
}

/// `primary_*_timeout` over their legacy `master_*` spellings; the stop timeout defaults to 0
/// (no limit) and the start timeout to 300; `postgresql.callbacks`, `pre_promote` and
/// `before_stop` of `/config` are read for members that do not set them locally.
#[test]
fn dynamic_start_stop_timeouts_and_hooks() {
    let (d, _) = dynamic(json!({}));
    assert_eq!(d.primary_start_timeout.as_secs(), 300);
    assert_eq!(d.primary_stop_timeout.as_secs(), 0);
    assert_eq!((d.callbacks.clone(), d.pre_promote.clone()), (None, None));

    let (d, _) = dynamic(json!({"master_stop_timeout": 7, "master_start_timeout": 0}));
    assert_eq!(d.primary_stop_timeout.as_secs(), 7);
    assert_eq!(d.primary_start_timeout.as_secs(), 0);

    let (d, _) = dynamic(json!({
        "primary_stop_timeout": "9", "master_stop_timeout": 7,
        "postgresql": {"callbacks": {"on_start": "/bin/cb"}, "pre_promote": "/bin/fence", "before_stop": ""},
    }));
    assert_eq!(d.primary_stop_timeout.as_secs(), 9);
    assert_eq!(
        d.callbacks.unwrap().get("on_start").map(String::as_str),
        Some("/bin/cb")
    );
    assert_eq!(d.pre_promote.as_deref(), Some("/bin/fence"));
    assert_eq!(d.before_stop, None);
}

/// The local `postgresql.callbacks`, `pre_promote` and `before_stop` are read and no longer
/// named in the "not implemented" warning.
#[test]
fn local_callbacks_pre_promote_and_before_stop() {
    let doc = SAMPLE.replace(
        "  data_dir: data/postgresql0\n",
        "  data_dir: data/postgresql0\n  callbacks:\n    on_role_change: /bin/cb --flag\n  pre_promote: /bin/fence\n  before_stop: /bin/drain\n",
    );
    let loaded = load(None, &env(&[("PATRONI_CONFIGURATION", &doc)])).unwrap();
    let pg = &loaded.config.postgresql;
    assert_eq!(
        pg.callbacks.get("on_role_change").map(String::as_str),
        Some("/bin/cb --flag")
    );
    assert_eq!(pg.pre_promote.as_deref(), Some("/bin/fence"));
    assert_eq!(pg.before_stop.as_deref(), Some("/bin/drain"));
    let warnings = loaded.warnings.join("\n");
    assert!(!warnings.contains("callbacks"), "{warnings}");
    assert!(!warnings.contains("pre_promote"), "{warnings}");
}

/// `SAMPLE` with its etcd3 section replaced.
fn with_etcd(section: &str) -> Vec<(String, String)> {
    let doc = SAMPLE.replace("etcd3:\n  host: 127.0.0.1:2379\n", section);
    env(&[("PATRONI_CONFIGURATION", &doc)])
}

fn problems(e: &[(String, String)]) -> String {
    match load(None, e) {
        Ok(_) => panic!("accepted"),
        Err(err) => err.to_string(),
    }
}

/// https endpoints: from `url`'s scheme, from `protocol`, or from each `hosts` URL; the TLS
/// files are read; a URL's user and password are taken as Patroni does.
#[test]
fn etcd_https_endpoints_and_tls_files() {
    let c = load(
        None,
        &with_etcd("etcd3:\n  url: https://u:p@h1:2400/\n  cacert: /ca.pem\n"),
    )
    .unwrap()
    .config;
    assert_eq!(c.etcd.urls(), vec!["https://h1:2400"]);
    assert_eq!(c.etcd.username.as_deref(), Some("u"));
    assert_eq!(c.etcd.password.as_deref(), Some("p"));
    assert_eq!(c.etcd.tls().cacert.unwrap().to_str(), Some("/ca.pem"));

    let loaded = load(
        None,
        &with_etcd(
            "etcd3:\n  hosts: h1:2379,h2\n  protocol: https\n  cert: /c.pem\n  key: /k.pem\n",
        ),
    )
    .unwrap();
    let c = loaded.config;
    assert_eq!(c.etcd.urls(), vec!["https://h1:2379", "https://h2:2379"]);
    let tls = c.etcd.tls();
    assert_eq!(tls.section, "etcd3");
    assert_eq!(tls.cert.unwrap().to_str(), Some("/c.pem"));
    assert_eq!(tls.key.unwrap().to_str(), Some("/k.pem"));
    assert!(
        !loaded.warnings.iter().any(|w| w.contains("etcd3")),
        "{:?}",
        loaded.warnings
    );

    let c = load(
        None,
        &with_etcd("etcd3:\n  hosts:\n  - https://h1:2379\n  - https://h2:2379\n"),
    )
    .unwrap()
    .config;
    assert_eq!(c.etcd.protocol, "https");
    assert_eq!(c.etcd.hosts, vec!["h1:2379", "h2:2379"]);
}

/// Never a downgrade: mixed schemes, a URL that contradicts `protocol` and an unknown protocol
/// are refused with their keys.
#[test]
fn etcd_scheme_conflicts_are_refused() {
    let e = problems(&with_etcd(
        "etcd3:\n  hosts:\n  - https://h1:2379\n  - http://h2:2379\n",
    ));
    assert!(
        e.contains("etcd3.hosts") && e.contains("mix https and http"),
        "{e}"
    );
    let e = problems(&with_etcd(
        "etcd3:\n  hosts: https://u:pw@h1:2379,h2:2379\n  protocol: http\n",
    ));
    assert!(e.contains("etcd3.hosts") && e.contains("mix"), "{e}");
    assert!(!e.contains("pw"), "the password is not shown: {e}");
    let e = problems(&with_etcd(
        "etcd3:\n  url: http://h1:2379\n  protocol: https\n",
    ));
    assert!(
        e.contains("etcd3.protocol") && e.contains("the endpoints say http"),
        "{e}"
    );
    let e = problems(&with_etcd("etcd3:\n  host: h1\n  protocol: grpcs\n"));
    assert!(
        e.contains("etcd3.protocol") && e.contains("http or https"),
        "{e}"
    );
}

/// Keys that are not used are named: TLS files with http endpoints, and keys pgpilot does not
/// implement (an encrypted key's password, SRV discovery).
#[test]
fn etcd_unused_keys_are_warned() {
    let w = load(None, &with_etcd("etcd3:\n  host: h1\n  cacert: /ca.pem\n"))
        .unwrap()
        .warnings;
    assert!(
        w.iter()
            .any(|w| w.contains("etcd3.cacert not used") && w.contains("http")),
        "{w:?}"
    );
    let loaded = load(
        None,
        &with_etcd("etcd3:\n  host: h1\n  key_password: x\n  srv: example.com\n"),
    )
    .unwrap();
    assert_eq!(loaded.config.etcd.key_password.as_deref(), Some("x"));
    assert_eq!(loaded.config.etcd.tls().key_password.as_deref(), Some("x"));
    let w = loaded.warnings;
    assert!(
        w.iter().any(|w| w.contains("not implemented")
            && !w.contains("etcd3.key_password")
            && w.contains("etcd3.srv")),
        "{w:?}"
    );
}

/// `PATRONI_ETCD3_PROTOCOL`/`CACERT`/`CERT`/`KEY` set the keys of the etcd3 section, as
/// Patroni's environment does.
#[test]
fn etcd_tls_from_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "p.yml", SAMPLE);
    let e = env(&[
        ("PATRONI_ETCD3_PROTOCOL", "https"),
        ("PATRONI_ETCD3_CACERT", "/etc/etcd/ca.pem"),
        ("PATRONI_ETCD3_CERT", "/etc/etcd/client.pem"),
        ("PATRONI_ETCD3_KEY", "/etc/etcd/client.key"),
        ("PATRONI_ETCD3_USERNAME", "patroni"),
        ("PATRONI_ETCD3_PASSWORD", "pw"),
    ]);
    let c = load(Some(&path), &e).unwrap().config;
    assert_eq!(c.etcd.urls(), vec!["https://127.0.0.1:2379"]);
    let tls = c.etcd.tls();
    assert_eq!(tls.cacert.unwrap().to_str(), Some("/etc/etcd/ca.pem"));
    assert_eq!(tls.cert.unwrap().to_str(), Some("/etc/etcd/client.pem"));
    assert_eq!(tls.key.unwrap().to_str(), Some("/etc/etcd/client.key"));
    assert_eq!(c.etcd.username.as_deref(), Some("patroni"));
    assert_eq!(c.etcd.password.as_deref(), Some("pw"));
}

/// `--validate-config` reads the TLS files of https etcd endpoints as a start does.
#[test]
fn validate_reads_the_etcd_tls_files() {
    let doc = yaml::parse(
        &SAMPLE.replace(
            "etcd3:\n  host: 127.0.0.1:2379\n",
            "etcd3:\n  url: https://127.0.0.1:2379\n  cacert: /nonexistent/ca.pem\n",
        ),
        "test",
    )
    .unwrap();
    let problems = validate(&doc);
    assert!(
        problems.iter().any(|p| p.path == "etcd3"
            && p.message
                .contains("etcd3.cacert: /nonexistent/ca.pem: missing")),
        "{problems:?}"
    );
}

/// `SAMPLE` with its watchdog section replaced by `section` (YAML lines of the mapping).
fn with_watchdog(section: &str) -> Vec<(String, String)> {
    let doc = SAMPLE.replace(
        "watchdog:\n  mode: automatic\n",
        &format!("watchdog:\n{section}"),
    );
    env(&[("PATRONI_CONFIGURATION", &doc)])
}

/// The watchdog section: Patroni's defaults, its runtime spellings of `mode` (PyYAML reads
/// `off` as false), the hidden `driver`, and the margin that gives the timeout.
#[test]
fn watchdog_section() {
    let read = |section: &str| load(None, &with_watchdog(section)).unwrap().config.watchdog;
    assert_eq!(read(""), WatchdogConfig::default());
    assert_eq!(
        WatchdogConfig::default(),
        WatchdogConfig {
            mode: WatchdogMode::Automatic,
            device: "/dev/watchdog".into(),
            safety_margin: 5,
            driver: WatchdogDriver::Linux,
        }
    );
    for (mode, want) in [
        ("off", WatchdogMode::Off),
        ("'off'", WatchdogMode::Off),
        ("false", WatchdogMode::Off),
        ("disabled", WatchdogMode::Off),
        ("disable", WatchdogMode::Off),
        ("automatic", WatchdogMode::Automatic),
        ("auto", WatchdogMode::Automatic),
        ("required", WatchdogMode::Required),
        ("Require", WatchdogMode::Required),
    ] {
        assert_eq!(read(&format!("  mode: {mode}\n")).mode, want, "{mode}");
    }
    let w =
        read("  mode: required\n  driver: testing\n  device: /tmp/wd.fifo\n  safety_margin: -1\n");
    assert_eq!(
        w,
        WatchdogConfig {
            mode: WatchdogMode::Required,
            device: "/tmp/wd.fifo".into(),
            safety_margin: -1,
            driver: WatchdogDriver::Testing,
        }
    );
    let ttl = Duration::from_secs(30);
    assert_eq!(w.timeout(ttl), 15, "-1: half the ttl");
    assert_eq!(
        WatchdogConfig::default().timeout(ttl),
        25,
        "ttl - safety_margin"
    );
}

/// A mode, margin or driver Patroni's validator refuses is refused with its key path: a
/// misspelt `required` must not run a leader without its fence.
#[test]
fn watchdog_section_problems_are_named() {
    for (section, path, what) in [
        (
            "  mode: requried\n",
            "watchdog.mode",
            "requried didn't pass validation",
        ),
        (
            "  mode: on\n",
            "watchdog.mode",
            "true didn't pass validation",
        ),
        (
            "  safety_margin: -2\n",
            "watchdog.safety_margin",
            "-2 didn't pass validation",
        ),
        (
            "  safety_margin: five\n",
            "watchdog.safety_margin",
            "\"five\" didn't pass",
        ),
        (
            "  driver: ipmi\n",
            "watchdog.driver",
            "ipmi didn't pass validation",
        ),
        (
            "  device: [a, b]\n",
            "watchdog.device",
            "didn't pass validation",
        ),
    ] {
        let err = problems(&with_watchdog(section));
        assert!(err.contains(&format!("{path}: ")), "{section}: {err}");
        assert!(err.contains(what), "{section}: {err}");
    }
    let doc = yaml::parse(
        &SAMPLE.replace("  mode: automatic", "  mode: sometimes"),
        "f",
    )
    .unwrap();
    let paths: Vec<String> = validate(&doc).into_iter().map(|p| p.path).collect();
    assert_eq!(
        paths.iter().filter(|p| *p == "watchdog.mode").count(),
        1,
        "--validate-config names it once: {paths:?}"
    );
}

/// `SAMPLE` with `extra` added under its `bootstrap:` section and `pg_extra` under
/// `postgresql:` (both indented by the caller as YAML wants).
fn with_methods(extra: &str, pg_extra: &str) -> Vec<(String, String)> {
    let doc = SAMPLE
        .replace("bootstrap:\n", &format!("bootstrap:\n{extra}"))
        .replace(
            "postgresql:\n  listen:",
            &format!("postgresql:\n{pg_extra}  listen:"),
        );
    env(&[("PATRONI_CONFIGURATION", &doc)])
}

/// A custom bootstrap method is read with its command split as a shell would, its other keys
/// kept in order with Python's spelling, and its recovery settings; no warning names it.
#[test]
fn custom_bootstrap_method_is_read() {
    let loaded = load(
        None,
        &with_methods(
            "  method: backup_restore\n  backup_restore:\n    command: /usr/bin/restore --from=\"my backup\"\n    test-argument: test-value\n    sleep: 0\n    no_params: false\n    recovery_conf:\n      recovery_target_action: promote\n      restore_command: cp /archive/%f %p\n",
            "",
        ),
    )
    .unwrap();
    let b = loaded.config.bootstrap.method.expect("a custom method");
    assert_eq!(b.method.name, "backup_restore");
    assert_eq!(b.method.argv, ["/usr/bin/restore", "--from=my backup"]);
    assert!(!b.method.no_params);
    assert_eq!(
        b.method.bootstrap_argv("batman", "/d"),
        [
            "/usr/bin/restore",
            "--from=my backup",
            "--scope=batman",
            "--datadir=/d",
            "--test-argument=test-value",
            "--sleep=0"
        ]
    );
    assert_eq!(
        b.recovery,
        pgpilot_config::BootstrapRecovery::Params(vec![
            ("recovery_target_action".into(), "promote".into()),
            ("restore_command".into(), "cp /archive/%f %p".into()),
        ])
    );
    assert!(
        !loaded
            .warnings
            .iter()
            .any(|w| w.contains("backup_restore") || w.contains("bootstrap.method")),
        "{:?}",
        loaded.warnings
    );
}

/// `keep_existing_recovery_conf` keeps the restore's recovery files; `method: initdb` is the
/// default.
#[test]
fn keep_existing_recovery_conf_and_initdb() {
    let c = load(
        None,
        &with_methods(
            "  method: pgbackrest\n  pgbackrest:\n    command: pgbackrest restore\n    keep_existing_recovery_conf: true\n    no_params: true\n",
            "",
        ),
    )
    .unwrap()
    .config;
    let b = c.bootstrap.method.unwrap();
    assert_eq!(b.recovery, pgpilot_config::BootstrapRecovery::KeepExisting);
    assert_eq!(
        b.method.bootstrap_argv("s", "/d"),
        ["pgbackrest", "restore"]
    );
    let c = load(None, &with_methods("  method: initdb\n", ""))
        .unwrap()
        .config;
    assert!(c.bootstrap.method.is_none());
}

/// A method without its section or its command is refused, naming the key: Patroni would run
/// initdb instead and turn a restore into an empty cluster.
#[test]
fn custom_bootstrap_without_section_or_command_is_refused() {
    let text = problems(&with_methods("  method: from_backup\n", ""));
    assert!(text.contains("bootstrap.method"), "{text}");
    assert!(text.contains("from_backup"), "{text}");
    let text = problems(&with_methods(
        "  method: from_backup\n  from_backup:\n    recovery_conf: {}\n",
        "",
    ));
    assert!(text.contains("bootstrap.from_backup.command"), "{text}");
    let text = problems(&with_methods(
        "  method: from_backup\n  from_backup:\n    command: restore 'unbalanced\n",
        "",
    ));
    assert!(text.contains("bootstrap.from_backup.command"), "{text}");
}

/// `create_replica_methods` in order, each with its section; basebackup by default; a method
/// without a section runs its name (warned); the legacy singular key is read.
#[test]
fn create_replica_methods_are_read() {
    let c = load(None, &with_methods("", "")).unwrap().config;
    assert_eq!(
        c.postgresql.create_replica_methods,
        [pgpilot_config::ReplicaMethod::Basebackup]
    );
    let loaded = load(
        None,
        &with_methods(
            "",
            "  create_replica_methods:\n  - wal_e\n  - restore\n  - basebackup\n  wal_e:\n    command: /bin/wal-e restore\n    no_leader: 1\n    keep_data: true\n    envdir: /etc/wal-e\n",
        ),
    )
    .unwrap();
    let methods = &loaded.config.postgresql.create_replica_methods;
    assert_eq!(methods.len(), 3);
    let pgpilot_config::ReplicaMethod::Custom {
        method,
        no_leader,
        keep_data,
    } = &methods[0]
    else {
        panic!("{methods:?}")
    };
    assert!(*no_leader && *keep_data);
    assert_eq!(
        method.replica_argv("batman", "/d", "dbname=postgres"),
        [
            "/bin/wal-e",
            "restore",
            "--no_leader=1",
            "--keep_data=True",
            "--envdir=/etc/wal-e",
            "--scope=batman",
            "--role=replica",
            "--datadir=/d",
            "--connstring=dbname=postgres"
        ]
    );
    let pgpilot_config::ReplicaMethod::Custom { method, .. } = &methods[1] else {
        panic!("{methods:?}")
    };
    assert_eq!(method.argv, ["restore"]);
    assert_eq!(methods[2], pgpilot_config::ReplicaMethod::Basebackup);
    let warned: Vec<_> = loaded
        .warnings
        .iter()
        .filter(|w| w.contains("restore") || w.contains("wal_e"))
        .collect();
    assert_eq!(warned.len(), 1, "{:?}", loaded.warnings);
    assert!(warned[0].contains("postgresql.restore"), "{warned:?}");

    let c = load(
        None,
        &with_methods("", "  create_replica_method:\n  - basebackup\n"),
    )
    .unwrap()
    .config;
    assert_eq!(
        c.postgresql.create_replica_methods,
        [pgpilot_config::ReplicaMethod::Basebackup]
    );
    let text = problems(&with_methods("", "  create_replica_methods: basebackup\n"));
    assert!(text.contains("postgresql.create_replica_methods"), "{text}");
}

/// A `postgresql.<name>` section with a `command` that `create_replica_methods` does not list
/// is a method a standby cluster may name (Patroni reads any such section): read, and not named
/// as an unknown key; `standby_cluster.create_replica_methods` naming a method with no section
/// is warned about (it runs as its own command).
#[test]
fn other_method_sections_serve_the_standby_cluster() {
    let doc = SAMPLE
        .replace(
            "bootstrap:\n  dcs:\n",
            "bootstrap:\n  dcs:\n    standby_cluster:\n      host: 10.0.0.1\n      create_replica_methods: [wal_g, nosection, basebackup]\n",
        )
        .replace(
            "postgresql:\n  listen:",
            "postgresql:\n  wal_g:\n    command: wal-g backup-fetch\n    no_leader: true\n  listen:",
        );
    let loaded = load(None, &env(&[("PATRONI_CONFIGURATION", &doc)])).unwrap();
    let pg = &loaded.config.postgresql;
    assert_eq!(
        pg.create_replica_methods,
        [pgpilot_config::ReplicaMethod::Basebackup]
    );
    assert_eq!(
        pg.other_replica_methods.len(),
        1,
        "{:?}",
        pg.other_replica_methods
    );
    let pgpilot_config::ReplicaMethod::Custom {
        method, no_leader, ..
    } = &pg.other_replica_methods[0]
    else {
        panic!("{:?}", pg.other_replica_methods)
    };
    assert_eq!(method.argv, ["wal-g", "backup-fetch"]);
    assert!(*no_leader);
    assert!(
        !loaded
            .warnings
            .iter()
            .any(|w| w.contains("postgresql.wal_g")),
        "{:?}",
        loaded.warnings
    );
    let warned: Vec<_> = loaded
        .warnings
        .iter()
        .filter(|w| w.contains("standby_cluster.create_replica_methods"))
        .collect();
    assert_eq!(warned.len(), 1, "{:?}", loaded.warnings);
    assert!(warned[0].contains("nosection"), "{warned:?}");
}

/// A deterministic fuzz of the loader: mutated Patroni files and `/config` documents never
/// panic; they load (with warnings) or are refused with a message naming something.
#[test]
fn mutated_configurations_never_panic() {
    let mut rng = pgpilot_values::fuzz::XorShift::new(0x853c_49e6_748f_ea9bu64);
    let mut next = move || rng.next_u64();
    let alphabet = b": -\n\t'\"{}[],#&*!|>%@`0123456789.abcxyz~\xc3\xa9";
    for _ in 0..pgpilot_values::fuzz::runs(3_000) {
        let mut text = SAMPLE.as_bytes().to_vec();
        for _ in 0..(1 + next() % 4) {
            let pos = (next() as usize) % (text.len() + 1);
            match next() % 3 {
                0 if pos < text.len() => {
                    text[pos] = alphabet[(next() as usize) % alphabet.len()];
                }
                1 => text.insert(pos, alphabet[(next() as usize) % alphabet.len()]),
                _ if pos < text.len() => {
                    text.remove(pos);
                }
                _ => {}
            }
        }
        let text = String::from_utf8_lossy(&text).into_owned();
        match load(None, &env(&[("PATRONI_CONFIGURATION", &text)])) {
            Ok(loaded) => {
                let (_, _) = DynamicConfig::from_document(&loaded.config.bootstrap.dcs);
            }
            Err(e) => assert!(!e.to_string().is_empty()),
        }
    }
    for _ in 0..pgpilot_values::fuzz::runs(3_000) {
        let mut doc = json!({
            "ttl": 30, "loop_wait": 10, "retry_timeout": 10, "synchronous_mode": "quorum",
            "synchronous_node_count": 2, "pause": "on", "maximum_lag_on_failover": "1MB",
            "postgresql": {"parameters": {"max_connections": 100}, "use_slots": "yes"},
            "slots": {"a": {"type": "logical"}}, "standby_cluster": {"host": "x"}
        });
        let values = [
            json!(null),
            json!(-1),
            json!(1e300),
            json!("x"),
            json!([1, "a"]),
            json!({"k": {}}),
            json!(true),
            json!(u64::MAX),
        ];
        let obj = doc.as_object_mut().unwrap();
        let keys: Vec<String> = obj.keys().cloned().collect();
        for _ in 0..(1 + next() % 4) {
            let k = &keys[(next() as usize) % keys.len()];
            obj.insert(k.clone(), values[(next() as usize) % values.len()].clone());
        }
        let (_, _) = DynamicConfig::from_document(obj);
    }
}

/// Found by the fuzz above: a huge `retry_timeout` in `/config` overflowed the timing rule's
/// arithmetic (a panic in debug builds, wrapped timings in release). It is clamped, with a
/// warning, and the rule still holds.
#[test]
fn huge_timings_in_config_are_clamped_not_overflowed() {
    let doc = json!({"ttl": 30, "loop_wait": i64::MAX, "retry_timeout": i64::MAX});
    let (d, warnings) = DynamicConfig::from_document(doc.as_object().unwrap());
    assert!(
        warnings.iter().any(|w| w.contains("above the maximum")),
        "{warnings:?}"
    );
    assert!(d.loop_wait + 2 * d.retry_timeout <= d.ttl, "{d:?}");
}

/// `pgpilot.guard` is on by default, turned off by the key (any Patroni boolean spelling) or by
/// `PGPILOT_GUARD`, which wins over the file; a value that is no boolean is refused with its
/// path; the key is modelled, so no unknown-key warning names it.
#[test]
fn guard_is_on_by_default_and_can_be_turned_off() {
    let with = |section: &str, extra: &[(&str, &str)]| {
        let doc = format!("{SAMPLE}{section}");
        let mut pairs = vec![("PATRONI_CONFIGURATION", doc.as_str())];
        pairs.extend_from_slice(extra);
        load(None, &env(&pairs))
    };
    assert!(with("", &[]).unwrap().config.guard);
    for off in ["off", "false", "'no'"] {
        let loaded = with(&format!("pgpilot:\n  guard: {off}\n"), &[]).unwrap();
        assert!(!loaded.config.guard, "{off}");
        assert!(
            !loaded.warnings.iter().any(|w| w.contains("pgpilot.guard")),
            "{:?}",
            loaded.warnings
        );
    }
    assert!(!with("", &[("PGPILOT_GUARD", "off")]).unwrap().config.guard);
    assert!(
        with("pgpilot:\n  guard: off\n", &[("PGPILOT_GUARD", "on")])
            .unwrap()
            .config
            .guard
    );
    let e = with("pgpilot:\n  guard: sometimes\n", &[]).unwrap_err();
    assert!(e.to_string().contains("pgpilot.guard: sometimes"), "{e}");
    let e = with("", &[("PGPILOT_GUARD", "maybe")]).unwrap_err();
    assert!(e.to_string().contains("pgpilot.guard: maybe"), "{e}");
}

/// The `log` section as Patroni reads it: a JSON `format` list with renames, `dateformat`,
/// `static_fields`, `dir` with `file_size`/`file_num`/`mode` (octal in YAML), Patroni's
/// defaults when absent; implemented keys leave the "not implemented" warning, the others
/// (`traceback_level`, `loggers`, ...) stay in it.
#[test]
fn log_section_is_read() {
    let doc = format!(
        "{SAMPLE}log:\n  type: json\n  level: DEBUG\n  format:\n  - asctime\n  - levelname: level\n  - message\n  dateformat: '%Y-%m-%dT%H:%M:%S'\n  static_fields:\n    app: pgpilot\n  dir: /var/log/pgpilot\n  file_size: 1000\n  file_num: 2\n  mode: 0640\n  traceback_level: DEBUG\n  loggers:\n    patroni.ha: INFO\n"
    );
    let loaded = load(None, &env(&[("PATRONI_CONFIGURATION", &doc)])).unwrap();
    let log = &loaded.config.log;
    assert!(log.format_json);
    assert_eq!(log.level, "DEBUG");
    assert_eq!(
        log.json_fields,
        [
            ("asctime".to_string(), "asctime".to_string()),
            ("levelname".into(), "level".into()),
            ("message".into(), "message".into()),
        ]
    );
    assert_eq!(log.dateformat.as_deref(), Some("%Y-%m-%dT%H:%M:%S"));
    assert_eq!(
        Value::Object(log.static_fields.clone()),
        json!({"app": "pgpilot"})
    );
    assert_eq!(
        log.dir.as_deref(),
        Some(std::path::Path::new("/var/log/pgpilot"))
    );
    assert_eq!(
        (log.file_size, log.file_num, log.mode),
        (1000, 2, Some(0o640))
    );
    let warnings = loaded.warnings.join("\n");
    assert!(warnings.contains("log.traceback_level"), "{warnings}");
    assert!(warnings.contains("log.loggers"), "{warnings}");
    for implemented in [
        "log.format",
        "log.dateformat",
        "log.static_fields",
        "log.file_size",
        "log.file_num",
        "log.mode",
        "log.dir",
        "log.type",
    ] {
        assert!(!warnings.contains(implemented), "{implemented}: {warnings}");
    }

    let defaults = load(None, &env(&[("PATRONI_CONFIGURATION", SAMPLE)])).unwrap();
    let log = &defaults.config.log;
    assert_eq!(
        (log.file_size, log.file_num, log.mode),
        (25_000_000, 4, None)
    );
    assert_eq!(log.plain_format, "%(asctime)s %(levelname)s: %(message)s");
    assert!(!log.format_json);
}

/// `postgresql.recovery_conf`: a replica's recovery settings, without the recovery targets and
/// the upstream (Patroni's build_recovery_params leaves those to itself); no warning names it.
#[test]
fn recovery_conf_is_read_without_targets_or_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let text = SAMPLE.replace(
        "\npostgresql:\n",
        "\npostgresql:\n  recovery_conf:\n    restore_command: pgbackrest archive-get %f \"%p\"\n    \
         recovery_min_apply_delay: 5min\n    recovery_target_time: '2026-01-01'\n    \
         primary_conninfo: host=x\n",
    );
    assert_ne!(text, SAMPLE);
    let path = write(dir.path(), "p.yml", &text);
    let loaded = load(Some(&path), &env(&[("HOME", "/home/x")])).unwrap();
    let rc = &loaded.config.postgresql.recovery_conf;
    assert_eq!(
        rc.iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect::<Vec<_>>(),
        [
            ("recovery_min_apply_delay", "5min"),
            ("restore_command", "pgbackrest archive-get %f \"%p\""),
        ]
    );
    assert!(
        !loaded.warnings.iter().any(|w| w.contains("recovery_conf")),
        "{:?}",
        loaded.warnings
    );
}

/// `restapi.keyfile_password` and `ctl.keyfile_password` (also from `PATRONI_*`) are read, and
/// no warning names them.
#[test]
fn keyfile_passwords_are_read() {
    let dir = tempfile::tempdir().unwrap();
    let text = SAMPLE.replace(
        "\nrestapi:\n",
        "\nrestapi:\n  certfile: /etc/ssl/api.pem\n  keyfile: /etc/ssl/api.key\n  keyfile_password: one\n",
    );
    assert_ne!(text, SAMPLE);
    let path = write(dir.path(), "p.yml", &text);
    let loaded = load(
        Some(&path),
        &env(&[("HOME", "/home/x"), ("PATRONI_CTL_KEYFILE_PASSWORD", "two")]),
    )
    .unwrap();
    let tls = loaded.config.restapi.tls.as_ref().unwrap();
    assert_eq!(tls.keyfile_password.as_deref(), Some("one"));
    assert_eq!(
        loaded.config.ctl.tls.keyfile_password.as_deref(),
        Some("two")
    );
    assert!(
        !loaded
            .warnings
            .iter()
            .any(|w| w.contains("keyfile_password")),
        "{:?}",
        loaded.warnings
    );
}

/// `pgpilot.client_continuity` is off when absent; read whole (defaults filled in) without an
/// unknown-key warning; and each bad value is refused with its key path, including a key the
/// section does not know (it is pgpilot's own, so a typo is an error, not a warning).
#[test]
fn client_continuity_is_read_and_each_bad_value_named() {
    let with = |section: &str| {
        let doc = format!("{SAMPLE}pgpilot:\n  client_continuity:\n{section}");
        load(None, &env(&[("PATRONI_CONFIGURATION", doc.as_str())]))
    };
    let plain = load(None, &env(&[("PATRONI_CONFIGURATION", SAMPLE)])).unwrap();
    assert_eq!(plain.config.client_continuity, None);

    let loaded = with(
        "    pause_timeout: 2.5\n\
         \x20   pgbouncer:\n\
         \x20   - host=127.0.0.1 port=6432 dbname=pgbouncer user=pgbouncer\n\
         \x20   - postgresql://pgbouncer@10.0.0.2:6432/pgbouncer\n\
         \x20   haproxy:\n\
         \x20   - socket: /run/haproxy/admin.sock\n\
         \x20     primary_backend: primary\n\
         \x20     replica_backend: replicas\n\
         \x20     servers: {postgresql0: pg0}\n\
         \x20   - address: 127.0.0.1:9999\n\
         \x20     primary_backend: writes\n",
    )
    .unwrap();
    assert!(
        !loaded
            .warnings
            .iter()
            .any(|w| w.contains("client_continuity")),
        "{:?}",
        loaded.warnings
    );
    let first = HaproxyTarget {
        address: HaproxyAddress::Unix("/run/haproxy/admin.sock".into()),
        primary_backend: "primary".into(),
        replica_backend: Some("replicas".into()),
        servers: [("postgresql0".to_string(), "pg0".to_string())].into(),
    };
    assert_eq!(first.server("postgresql0"), "pg0");
    assert_eq!(first.server("postgresql1"), "postgresql1");
    assert_eq!(
        loaded.config.client_continuity,
        Some(ClientContinuity {
            pause_timeout: Duration::from_millis(2500),
            pgbouncer: vec![
                "host=127.0.0.1 port=6432 dbname=pgbouncer user=pgbouncer".into(),
                "postgresql://pgbouncer@10.0.0.2:6432/pgbouncer".into(),
            ],
            haproxy: vec![
                first,
                HaproxyTarget {
                    address: HaproxyAddress::Tcp("127.0.0.1:9999".into()),
                    primary_backend: "writes".into(),
                    replica_backend: None,
                    servers: Default::default(),
                },
            ],
        })
    );
    // A single connection string is a list of one; pause_timeout defaults to 5 s.
    let one = with("    pgbouncer: dbname=pgbouncer host=/tmp\n").unwrap();
    let c = one.config.client_continuity.unwrap();
    assert_eq!(
        (c.pause_timeout, c.pgbouncer.len()),
        (Duration::from_secs(5), 1)
    );

    for (section, path, says) in [
        ("    pause_timeout: 0\n    pgbouncer: dbname=pgbouncer\n", "pgpilot.client_continuity.pause_timeout", "more than 0"),
        ("    pause_timeout: soon\n    pgbouncer: dbname=pgbouncer\n", "pgpilot.client_continuity.pause_timeout", "expected a number"),
        ("    pgbouncer: host=127.0.0.1 dbname=postgres\n", "pgpilot.client_continuity.pgbouncer[0]", "dbname=pgbouncer"),
        ("    pgbouncer: [\"host=x port=notaport dbname=pgbouncer\"]\n", "pgpilot.client_continuity.pgbouncer[0]", "didn't pass validation"),
        ("    pgbouncer: dbname=pgbouncer\n    pause_timout: 3\n", "pgpilot.client_continuity.pause_timout", "unknown key"),
        ("    haproxy:\n    - primary_backend: primary\n", "pgpilot.client_continuity.haproxy[0]", "socket"),
        ("    haproxy:\n    - socket: /s\n      address: 127.0.0.1:1\n      primary_backend: p\n", "pgpilot.client_continuity.haproxy[0]", "not both"),
        ("    haproxy:\n    - address: localhost\n      primary_backend: p\n", "pgpilot.client_continuity.haproxy[0].address", "host:port"),
        ("    haproxy:\n    - socket: /s\n", "pgpilot.client_continuity.haproxy[0].primary_backend", "not defined"),
        ("    haproxy:\n    - socket: /s\n      primary_backend: p\n      backend: q\n", "pgpilot.client_continuity.haproxy[0].backend", "unknown key"),
        ("    haproxy:\n    - socket: /s\n      primary_backend: p\n      servers: [a]\n", "pgpilot.client_continuity.haproxy[0].servers", "mapping"),
        ("    pause_timeout: 3\n", "pgpilot.client_continuity", "neither"),
    ] {
        match with(section) {
            Err(ConfigError::Invalid(problems)) => assert!(
                problems.iter().any(|p| p.path == path && p.message.contains(says)),
                "{section}: {problems:?}"
            ),
            other => panic!("{section}: {other:?}"),
        }
    }
}
