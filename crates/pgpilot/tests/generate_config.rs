//! `pgpilot --generate-sample-config` and `pgpilot --generate-config`: the configuration they
//! write loads and validates, carries what the running PostgreSQL has (data directory, port,
//! settings, pg_hba.conf, binaries), and is byte for byte what Patroni 4's own generator writes
//! for the same input (when Patroni can be installed from PyPI; skipped with the reason
//! otherwise).

mod harness;

use std::path::{Path, PathBuf};

use harness::{Standalone, PG_BIN_DIR, SUPERUSER};

const PGPILOT: &str = env!("CARGO_BIN_EXE_pgpilot");

/// Runs `exe args...` with only `env` (and PATH, HOME); returns (success, stdout, stderr).
fn run(exe: &Path, args: &[&str], env: &[(&str, &str)], home: &Path) -> (bool, String, String) {
    let out = std::process::Command::new(exe)
        .args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", home)
        .env("LANG", "C.UTF-8")
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", exe.display()));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Patroni's `patroni` executable next to the harness's patronictl, or why there is none.
fn patroni() -> Result<PathBuf, String> {
    let ctl = harness::patronictl()?;
    Ok(ctl.with_file_name("patroni"))
}

/// Stops the standalone server however the test ends.
struct Running(Standalone);

impl Drop for Running {
    fn drop(&mut self) {
        harness::kill_postmaster_of(&self.0.data_dir);
    }
}

#[test]
fn the_sample_validates_once_the_environment_names_the_rest() {
    harness::init();
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("PATRONI_SCOPE", "demo"),
        ("PATRONI_NAME", "pg1"),
        ("PATRONI_ETCD3_HOSTS", "'10.0.0.1:2379'"),
        ("PATRONI_RESTAPI_LISTEN", "10.0.0.11:8008"),
        ("PATRONI_RESTAPI_CONNECT_ADDRESS", "10.0.0.11:8008"),
        ("PATRONI_POSTGRESQL_LISTEN", "10.0.0.11:5432"),
        ("PATRONI_POSTGRESQL_CONNECT_ADDRESS", "10.0.0.11:5432"),
        ("PATRONI_POSTGRESQL_DATA_DIR", "/var/lib/postgresql/15/main"),
        ("PATRONI_POSTGRESQL_BIN_DIR", PG_BIN_DIR),
        ("PATRONI_SUPERUSER_PASSWORD", "su-secret"),
        ("PATRONI_REPLICATION_PASSWORD", "repl-secret"),
        ("PATRONI_REWIND_USERNAME", "rewind_user"),
        ("PATRONI_REWIND_PASSWORD", "rewind-secret"),
    ];
    // Into a directory that does not exist yet.
    let out = dir.path().join("etc/pgpilot/pgpilot.yml");
    let out_arg = out.to_string_lossy().into_owned();
    let (ok, _, err) = run(
        Path::new(PGPILOT),
        &["--generate-sample-config", &out_arg],
        &env,
        dir.path(),
    );
    assert!(ok, "{err}");
    let text = std::fs::read_to_string(&out).unwrap();
    eprintln!("{text}");
    assert!(!text.contains("#FIXME"), "every placeholder is filled");
    assert!(
        text.contains("password_encryption: scram-sha-256"),
        "{text}"
    );
    assert!(text.contains("wal_keep_size: 128MB"), "{text}");
    let (ok, _, problems) = run(
        Path::new(PGPILOT),
        &["--validate-config", &out_arg],
        &[],
        dir.path(),
    );
    assert!(ok, "the sample does not validate:\n{problems}");
    // The environment alone validates too (--validate-config reads the PATRONI_* variables
    // the agent takes out of its environment at start).
    let mut env_only: Vec<(&str, &str)> = env.to_vec();
    env_only.extend([
        ("PATRONI_SUPERUSER_USERNAME", "postgres"),
        ("PATRONI_REPLICATION_USERNAME", "replicator"),
    ]);
    let (ok, _, problems) = run(
        Path::new(PGPILOT),
        &["--validate-config"],
        &env_only,
        dir.path(),
    );
    assert!(ok, "the environment does not validate:\n{problems}");

    match patroni() {
        Ok(patroni) => {
            let (ok, theirs, err) = run(&patroni, &["--generate-sample-config"], &env, dir.path());
            assert!(ok, "patroni --generate-sample-config: {err}");
            assert_eq!(text, theirs, "the same text as Patroni's");
        }
        Err(reason) => eprintln!("SKIPPED the comparison with Patroni: {reason}"),
    }

    // No binaries: Patroni's message, a non-zero exit.
    let (ok, _, err) = run(
        Path::new(PGPILOT),
        &["--generate-sample-config"],
        &[("PATRONI_POSTGRESQL_BIN_DIR", "/nonexistent")],
        dir.path(),
    );
    assert!(
        !ok && err.contains("Failed to get postgres version"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_running_server_is_read_into_the_configuration() {
    harness::init();
    let dir = tempfile::tempdir().unwrap();
    let port = harness::free_port();
    let pg = Running(Standalone::init(
        &dir.path().join("data"),
        port,
        &dir.path().join("sock"),
        &dir.path().join("pg.log"),
    ));
    pg.0.start();
    let port_text = port.to_string();
    let dsn = format!(
        "host={} port={port} user={} password={}",
        pg.0.socket_dir.display(),
        SUPERUSER.0,
        SUPERUSER.1
    );
    let env = [("PATRONI_NAME", "pg1")];
    let (ok, text, err) = run(
        Path::new(PGPILOT),
        &["--generate-config", "--dsn", &dsn],
        &env,
        dir.path(),
    );
    assert!(ok, "{err}");
    eprintln!("{text}");
    let doc = pgpilot_config::yaml::parse(&text, "generated").unwrap();
    let pgs = &doc["postgresql"];
    let data_dir = std::fs::canonicalize(&pg.0.data_dir).unwrap();
    assert_eq!(pgs["data_dir"], data_dir.to_string_lossy().as_ref());
    assert_eq!(pgs["bin_dir"], PG_BIN_DIR);
    assert_eq!(pgs["listen"], format!("127.0.0.1:{port}").as_str());
    assert!(
        pgs["connect_address"]
            .as_str()
            .unwrap()
            .ends_with(&format!(":{port_text}")),
        "{pgs}"
    );
    assert_eq!(pgs["authentication"]["superuser"]["username"], SUPERUSER.0);
    assert_eq!(pgs["authentication"]["replication"]["username"], "#FIXME");
    let hba: Vec<&str> = pgs["pg_hba"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l.as_str())
        .collect();
    assert!(
        !hba.is_empty() && hba.iter().all(|l| !l.starts_with('#')),
        "{hba:?}"
    );
    let params = &doc["bootstrap"]["dcs"]["postgresql"]["parameters"];
    assert_eq!(params["fsync"], "off", "a setting from postgresql.conf");
    assert_eq!(params["max_connections"], "100");
    assert_eq!(
        pgs["parameters"]["hba_file"],
        data_dir.join("pg_hba.conf").to_string_lossy().as_ref()
    );

    match patroni() {
        Ok(patroni) => {
            let (ok, theirs, err) = run(
                &patroni,
                &["--generate-config", "--dsn", &dsn],
                &env,
                dir.path(),
            );
            assert!(ok, "patroni --generate-config: {err}");
            assert_eq!(text, theirs, "the same text as Patroni's");
        }
        Err(reason) => eprintln!("SKIPPED the comparison with Patroni: {reason}"),
    }

    // A user who is not a superuser is refused, as Patroni refuses it.
    harness::connect_socket(&pg.0.socket_dir, port)
        .await
        .unwrap()
        .batch_execute("CREATE ROLE plain LOGIN PASSWORD 'plain'")
        .await
        .unwrap();
    let plain = format!(
        "host={} port={port} user=plain password=plain dbname=postgres",
        pg.0.socket_dir.display()
    );
    let (ok, _, err) = run(
        Path::new(PGPILOT),
        &["--generate-config", "--dsn", &plain],
        &env,
        dir.path(),
    );
    assert!(
        !ok && err.contains("The provided user does not have superuser privilege"),
        "{err}"
    );
}
