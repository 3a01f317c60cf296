//! `pgpilot --generate-sample-config [FILE]` and `pgpilot --generate-config [--dsn DSN] [FILE]`:
//! a configuration to start from, as Patroni's `config_generator.py` writes it (same keys,
//! same section order, same `#FIXME` placeholders, PyYAML's text), to `FILE` or stdout.
//!
//! The sample takes its defaults from the PostgreSQL of `postgresql.bin_dir` (`postgres
//! --version`); the other one reads a running PostgreSQL: its non-default settings, data
//! directory, port, `pg_hba.conf`/`pg_ident.conf` and binaries, connecting with `--dsn` and the
//! libpq variables (`PGHOST`, `PGPORT`, `PGUSER`, `PGPASSWORD`, `PGSSLMODE`, ...). Both start
//! from the `PATRONI_*` environment, as Patroni's do.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use pgpilot_config::LogConfig;
use pgpilot_postgres::{Credentials, PgMajor};
use pgpilot_values::{parse_bool, pyyaml};
use serde_json::{json, Map, Value};

/// What Patroni writes where the user has to fill something in.
pub const NO_VALUE: &str = "#FIXME";

/// The parameters Patroni passes on the postmaster's command line, with their defaults
/// (`ConfigHandler.CMDLINE_OPTIONS`, `None` where Patroni has none).
const CMDLINE_OPTIONS: &[(&str, Option<&str>)] = &[
    ("listen_addresses", None),
    ("port", None),
    ("cluster_name", None),
    ("wal_level", Some("hot_standby")),
    ("hot_standby", Some("on")),
    ("max_connections", Some("100")),
    ("max_wal_senders", Some("10")),
    ("wal_keep_segments", Some("8")),
    ("wal_keep_size", Some("128MB")),
    ("max_prepared_transactions", Some("0")),
    ("max_locks_per_transaction", Some("64")),
    ("track_commit_timestamp", Some("off")),
    ("max_replication_slots", Some("10")),
    ("max_worker_processes", Some("8")),
    ("wal_log_hints", Some("on")),
];

/// libpq connection options a superuser's `authentication` section takes, and the variable
/// each one is read from when the DSN does not say (Patroni's `_AUTH_ALLOWED_PARAMETERS_MAPPING`).
const AUTH_PARAMETERS: &[(&str, &str)] = &[
    ("user", "PGUSER"),
    ("password", "PGPASSWORD"),
    ("sslmode", "PGSSLMODE"),
    ("sslcert", "PGSSLCERT"),
    ("sslkey", "PGSSLKEY"),
    ("sslpassword", ""),
    ("sslrootcert", "PGSSLROOTCERT"),
    ("sslcrl", "PGSSLCRL"),
    ("sslcrldir", "PGSSLCRLDIR"),
    ("gssencmode", "PGGSSENCMODE"),
    ("channel_binding", "PGCHANNELBINDING"),
    ("sslnegotiation", "PGSSLNEGOTIATION"),
];

/// Writes the generated configuration to `output` (its directory created) or stdout.
pub fn run(
    sample: bool,
    dsn: Option<&str>,
    output: Option<&Path>,
    env: &[(String, String)],
) -> anyhow::Result<()> {
    let mut config = template(env)?;
    if sample {
        fill_sample(&mut config)?;
    } else {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("can not start the runtime")?;
        runtime.block_on(fill_from_running(&mut config, dsn, env))?;
    }
    let text = render(config);
    match output {
        Some(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("can not create {}", dir.display()))?;
            }
            std::fs::write(path, text).with_context(|| format!("can not write {}", path.display()))
        }
        None => {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            out.write_all(text.as_bytes())?;
            out.flush()?;
            Ok(())
        }
    }
}

/// The host name and its first address (IPv4 before IPv6), or `#FIXME` for both.
fn address() -> (String, String) {
    use std::net::ToSocketAddrs;
    let Ok(host) = nix::unistd::gethostname() else {
        return (NO_VALUE.into(), NO_VALUE.into());
    };
    let host = host.to_string_lossy().into_owned();
    let mut addrs: Vec<std::net::IpAddr> = match (host.as_str(), 0).to_socket_addrs() {
        Ok(a) => a.map(|a| a.ip()).collect(),
        Err(_) => return (NO_VALUE.into(), NO_VALUE.into()),
    };
    // A stable sort on the family only, as Patroni's: the resolver's order within each.
    addrs.sort_by_key(|a| a.is_ipv6());
    match addrs.first() {
        Some(ip) => (host, ip.to_string()),
        None => (NO_VALUE.into(), NO_VALUE.into()),
    }
}

/// Patroni's built-in dynamic configuration (`Config.__DEFAULT_CONFIG` without
/// `standby_cluster`).
fn default_dynamic() -> Value {
    let parameters: Map<String, Value> = CMDLINE_OPTIONS
        .iter()
        .filter(|(name, _)| !matches!(*name, "wal_keep_segments" | "wal_keep_size"))
        .filter_map(|(name, v)| v.map(|v| (name.to_string(), python_default(v))))
        .collect();
    json!({
        "ttl": 30,
        "loop_wait": 10,
        "retry_timeout": 10,
        "postgresql": {"use_slots": true, "parameters": parameters},
    })
}

/// Patroni's defaults are Python ints where they are numbers.
fn python_default(v: &str) -> Value {
    v.parse::<i64>()
        .map_or_else(|_| Value::from(v), Value::from)
}

/// The starting point of both generators: placeholders, this host's address, the default
/// dynamic configuration, and over it what the `PATRONI_*` variables say.
fn template(env: &[(String, String)]) -> anyhow::Result<Value> {
    let (host, ip) = address();
    let mut config = json!({
        "scope": NO_VALUE,
        "name": host,
        "restapi": {"connect_address": format!("{ip}:8008"), "listen": format!("{ip}:8008")},
        "log": {
            "type": "plain",
            "level": "INFO",
            "traceback_level": "ERROR",
            "format": LogConfig::DEFAULT_FORMAT,
            "max_queue_size": 1000,
        },
        "postgresql": {
            "data_dir": NO_VALUE,
            "connect_address": format!("{ip}:5432"),
            "listen": format!("{ip}:5432"),
            "bin_dir": "",
            "authentication": {
                "superuser": {"username": "postgres", "password": NO_VALUE},
                "replication": {"username": "replicator", "password": NO_VALUE},
            },
        },
        "tags": {
            "failover_priority": 1,
            "sync_priority": 1,
            "noloadbalance": false,
            "clonefrom": true,
            "nosync": false,
            "nostream": false,
        },
    });
    let mut local = pgpilot_config::load_document(None, env).map_err(|e| anyhow!("{e}"))?;
    if let Value::Object(m) = &mut local {
        let bootstrap = m
            .entry("bootstrap")
            .or_insert_with(|| Value::Object(Map::new()));
        if let Value::Object(b) = bootstrap {
            b.insert("dcs".into(), default_dynamic());
        }
    }
    pgpilot_config::deep_merge(&mut config, local);
    Ok(config)
}

/// Mutable access to a nested map, created where missing.
fn section<'a>(v: &'a mut Value, path: &[&str]) -> &'a mut Map<String, Value> {
    let mut cur = v;
    for key in path {
        if !cur.is_object() {
            *cur = Value::Object(Map::new());
        }
        let Value::Object(m) = cur else {
            unreachable!("made an object just above")
        };
        cur = m
            .entry(key.to_string())
            .or_insert_with(|| Value::Object(Map::new()));
    }
    if !cur.is_object() {
        *cur = Value::Object(Map::new());
    }
    match cur {
        Value::Object(m) => m,
        _ => unreachable!("made an object just above"),
    }
}

fn str_at<'a>(v: &'a Value, path: &[&str]) -> Option<&'a str> {
    path.iter().try_fold(v, |v, k| v.get(k))?.as_str()
}

/// `--generate-sample-config`: defaults for the major of `postgresql.bin_dir`.
fn fill_sample(config: &mut Value) -> anyhow::Result<()> {
    let bin_dir = str_at(config, &["postgresql", "bin_dir"]).unwrap_or("");
    let postgres = str_at(config, &["postgresql", "bin_name", "postgres"]).unwrap_or("postgres");
    let exe = if bin_dir.is_empty() {
        PathBuf::from(postgres)
    } else {
        Path::new(bin_dir).join(postgres)
    };
    let out = std::process::Command::new(&exe)
        .arg("--version")
        .output()
        .map_err(|e| anyhow!("Failed to get postgres version: {}: {e}", exe.display()))?;
    let version = String::from_utf8_lossy(&out.stdout);
    let major = PgMajor::from_version_output(&version)
        .ok_or_else(|| anyhow!("Failed to get postgres version: {}", version.trim()))?;
    // Patroni's switch is at 10; pgpilot runs 12 and later, all of which take SCRAM.
    let auth = "scram-sha-256";
    let repl_user = str_at(
        config,
        &["postgresql", "authentication", "replication", "username"],
    )
    .unwrap_or("replicator")
    .to_string();
    let pg = section(config, &["postgresql"]);
    pg.insert("parameters".into(), json!({ "password_encryption": auth }));
    pg.insert(
        "pg_hba".into(),
        json!([
            format!("host all all all {auth}"),
            format!("host replication {repl_user} all {auth}"),
        ]),
    );
    let params = section(config, &["bootstrap", "dcs", "postgresql", "parameters"]);
    if major.keeps_wal_by_size() {
        params.insert("wal_keep_size".into(), "128MB".into());
    } else {
        params.insert("wal_keep_segments".into(), 8.into());
    }
    params.insert("wal_level".into(), "replica".into());
    let hints = params
        .get("wal_log_hints")
        .and_then(parse_bool)
        .unwrap_or(false);
    section(config, &["bootstrap", "dcs", "postgresql"])
        .insert("use_pg_rewind".into(), hints.into());
    // As Patroni's `setdefault('rewind', {'username': 'rewind_user'})`: a rewind section
    // the environment started (a password only) gets no user name.
    section(config, &["postgresql", "authentication"])
        .entry("rewind")
        .or_insert_with(|| json!({"username": "rewind_user"}));
    section(config, &["postgresql", "authentication", "rewind"])
        .entry("password")
        .or_insert_with(|| NO_VALUE.into());
    Ok(())
}

/// A libpq connection string, `key=value ...` or a `postgresql://` URI, as a map (Patroni's
/// `parse_dsn`). `None` when it does not parse.
pub fn parse_dsn(dsn: &str) -> Option<BTreeMap<String, String>> {
    let dsn = dsn.trim();
    if let Some(rest) = dsn
        .strip_prefix("postgresql://")
        .or_else(|| dsn.strip_prefix("postgres://"))
    {
        return parse_uri(rest);
    }
    let mut out = BTreeMap::new();
    let mut chars = dsn.chars().peekable();
    loop {
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.peek().is_none() {
            break;
        }
        let key: String =
            std::iter::from_fn(|| chars.next_if(|c| *c != '=' && !c.is_whitespace())).collect();
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        if chars.next() != Some('=') || key.is_empty() {
            return None;
        }
        while chars.peek().is_some_and(|c| c.is_whitespace()) {
            chars.next();
        }
        let mut value = String::new();
        if chars.peek() == Some(&'\'') {
            chars.next();
            loop {
                match chars.next()? {
                    '\\' => value.push(chars.next()?),
                    '\'' => break,
                    c => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.push(chars.next()?);
                } else {
                    value.push(c);
                }
            }
        }
        out.insert(key, value);
    }
    Some(out)
}

fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `[user[:password]@][host][:port][/dbname][?param=value&...]`.
fn parse_uri(rest: &str) -> Option<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let (main, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, dbname) = main.split_once('/').unwrap_or((main, ""));
    let hostport = match authority.rsplit_once('@') {
        Some((userinfo, hostport)) => {
            let (user, password) = userinfo
                .split_once(':')
                .map_or((userinfo, None), |(u, p)| (u, Some(p)));
            if !user.is_empty() {
                out.insert("user".into(), percent_decode(user)?);
            }
            if let Some(p) = password {
                out.insert("password".into(), percent_decode(p)?);
            }
            hostport
        }
        None => authority,
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, after) = v6.split_once(']')?;
        (h, after.strip_prefix(':'))
    } else {
        hostport
            .rsplit_once(':')
            .map_or((hostport, None), |(h, p)| (h, Some(p)))
    };
    if !host.is_empty() {
        out.insert("host".into(), percent_decode(host)?);
    }
    if let Some(p) = port.filter(|p| !p.is_empty()) {
        out.insert("port".into(), p.to_string());
    }
    if !dbname.is_empty() {
        out.insert("dbname".into(), percent_decode(dbname)?);
    }
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=')?;
        out.insert(percent_decode(k)?, percent_decode(v)?);
    }
    Some(out)
}

fn env_var<'a>(env: &'a [(String, String)], name: &str) -> Option<&'a str> {
    env.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

/// Asks for the password on the terminal without echo (Patroni's `getpass`), or reads a line
/// from stdin when it is not a terminal.
fn ask_password() -> anyhow::Result<String> {
    use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
    use std::io::{BufRead, Write};
    let stdin = std::io::stdin();
    eprint!("Please enter the user password:");
    std::io::stderr().flush()?;
    let saved = tcgetattr(&stdin).ok();
    if let Some(t) = &saved {
        let mut quiet = t.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        tcsetattr(&stdin, SetArg::TCSANOW, &quiet)?;
    }
    let mut line = String::new();
    let read = stdin.lock().read_line(&mut line);
    if let Some(t) = &saved {
        tcsetattr(&stdin, SetArg::TCSANOW, t)?;
        eprintln!();
    }
    read?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

/// `--generate-config`: the settings, files and binaries of the running PostgreSQL.
async fn fill_from_running(
    config: &mut Value,
    dsn: Option<&str>,
    env: &[(String, String)],
) -> anyhow::Result<()> {
    let parsed = match dsn {
        Some(d) => {
            let mut m = parse_dsn(d)
                .filter(|m| !m.is_empty())
                .ok_or_else(|| anyhow!("Failed to parse DSN string"))?;
            // Patroni's parse_dsn fills these in (to compare connection strings), and they
            // end up in the superuser's section.
            for (k, v) in [
                ("sslmode", "prefer"),
                ("gssencmode", "prefer"),
                ("channel_binding", "prefer"),
                ("sslnegotiation", "postgres"),
            ] {
                m.entry(k.to_string()).or_insert_with(|| v.to_string());
            }
            m
        }
        None => BTreeMap::new(),
    };
    let from = |key: &str, var: &str| {
        parsed
            .get(key)
            .map(String::as_str)
            .or_else(|| env_var(env, var))
            .map(str::to_string)
    };

    // The superuser as it connects: the DSN, else the libpq variables, else the OS user.
    let mut su = Map::new();
    for (param, var) in AUTH_PARAMETERS {
        if let Some(v) = from(param, var) {
            su.insert(param.to_string(), v.into());
        }
    }
    let username = match su.remove("user") {
        Some(Value::String(u)) => u,
        _ => nix::unistd::User::from_uid(nix::unistd::geteuid())
            .ok()
            .flatten()
            .map(|u| u.name)
            .ok_or_else(|| anyhow!("can not tell the current user name: set PGUSER"))?,
    };
    su.insert("username".into(), username.clone().into());
    let password = match su.get("password").and_then(Value::as_str) {
        Some(p) => p.to_string(),
        None => {
            let p = ask_password()?;
            su.insert("password".into(), p.clone().into());
            p
        }
    };
    let options: BTreeMap<String, String> = su
        .iter()
        .filter(|(k, _)| !matches!(k.as_str(), "username" | "password"))
        .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
        .collect();
    let creds = Credentials {
        username: username.clone(),
        password: (!password.is_empty()).then_some(password),
        options,
    };
    let host = from("host", "PGHOST").unwrap_or_else(|| "/var/run/postgresql".into());
    let port_text = from("port", "PGPORT");
    let port: u16 = match &port_text {
        Some(p) => p
            .parse()
            .map_err(|_| anyhow!("Failed to establish PostgreSQL connection: invalid port {p}"))?,
        None => 5432,
    };
    let dbname = from("dbname", "PGDATABASE").unwrap_or_else(|| username.clone());
    let client =
        pgpilot_postgres::connect_superuser(&host, port, &dbname, &creds, Duration::from_secs(10))
            .await
            .map_err(|e| anyhow!("Failed to establish PostgreSQL connection: {e}"))?;
    let query_err =
        |e: tokio_postgres::Error| anyhow!("Failed to establish PostgreSQL connection: {e}");
    let row = client
        .query_one(
            "SELECT current_setting('server_version_num')::int, current_setting('is_superuser')",
            &[],
        )
        .await
        .map_err(query_err)?;
    let major = PgMajor::from_version_num(row.get(0)).unwrap_or(PgMajor::NEWEST);
    let is_superuser: String = row.get(1);
    // Options the server's libpq generation does not know are left out.
    su.retain(|k, _| {
        matches!(k.as_str(), "username" | "password") || major.knows_conninfo_option(k)
    });
    if parse_bool(&Value::from(is_superuser)) != Some(true) {
        bail!("The provided user does not have superuser privilege");
    }
    section(config, &["postgresql"]).insert(
        "authentication".into(),
        json!({
            "superuser": su,
            "replication": {"username": NO_VALUE, "password": NO_VALUE},
        }),
    );

    // Settings from the configuration files, the command line or the environment, and the
    // ones Patroni always needs.
    let required: Vec<String> = ["hba_file", "ident_file", "config_file", "data_directory"]
        .into_iter()
        .chain(CMDLINE_OPTIONS.iter().map(|(n, _)| *n))
        .map(str::to_string)
        .collect();
    let rows = client
        .query(
            "SELECT name, pg_catalog.current_setting(name) FROM pg_catalog.pg_settings \
             WHERE context <> 'internal' \
             AND source IN ('configuration file', 'command line', 'environment variable') \
             AND category <> 'Write-Ahead Log / Recovery Target' \
             AND setting <> '(disabled)' \
             OR name = ANY($1)",
            &[&required],
        )
        .await
        .map_err(query_err)?;
    let mut listen = None;
    let mut pg_port = None;
    for row in rows {
        let name: String = row.get(0);
        let value: String = row.get(1);
        match name.as_str() {
            "data_directory" => {
                section(config, &["postgresql"]).insert("data_dir".into(), value.into());
            }
            "cluster_name" if !value.is_empty() => config["scope"] = value.into(),
            "archive_command"
            | "restore_command"
            | "archive_cleanup_command"
            | "recovery_end_command"
            | "ssl_passphrase_command"
            | "hba_file"
            | "ident_file"
            | "config_file" => {
                // Commands stay local (whoever writes /config would run them everywhere);
                // the file locations too, so they are never moved.
                section(config, &["postgresql", "parameters"]).insert(name, value.into());
            }
            "port" => pg_port = Some(value),
            "listen_addresses" => listen = Some(value),
            _ => {
                section(config, &["bootstrap", "dcs", "postgresql", "parameters"])
                    .insert(name, value.into());
            }
        }
    }
    let connect_ip = str_at(config, &["postgresql", "connect_address"])
        .unwrap_or(NO_VALUE)
        .split(':')
        .next()
        .unwrap_or(NO_VALUE)
        .to_string();
    let connect_port = parsed
        .get("port")
        .cloned()
        .or_else(|| env_var(env, "PGPORT").map(str::to_string))
        .or_else(|| pg_port.clone())
        .unwrap_or_default();
    let pg = section(config, &["postgresql"]);
    pg.insert(
        "connect_address".into(),
        format!("{connect_ip}:{connect_port}").into(),
    );
    pg.insert(
        "listen".into(),
        format!(
            "{}:{}",
            listen.unwrap_or_default(),
            pg_port.unwrap_or_default()
        )
        .into(),
    );

    conf_files(config, major)?;
    let data_dir = str_at(config, &["postgresql", "data_dir"])
        .unwrap_or(NO_VALUE)
        .to_string();
    section(config, &["postgresql"]).insert(
        "bin_dir".into(),
        bin_dir_of_running(Path::new(&data_dir))?.into(),
    );
    Ok(())
}

/// `postgresql.pg_hba` and `pg_ident` from the files in the data directory, when the server
/// uses those (files elsewhere may not be ours to rewrite).
fn conf_files(config: &mut Value, major: PgMajor) -> anyhow::Result<()> {
    let data_dir = PathBuf::from(str_at(config, &["postgresql", "data_dir"]).unwrap_or(""));
    let param =
        |name: &str| str_at(config, &["postgresql", "parameters", name]).map(str::to_string);
    let (hba_file, ident_file) = (param("hba_file"), param("ident_file"));
    let mut hba_types = vec![
        "local",
        "host",
        "hostssl",
        "hostnossl",
        "hostgssenc",
        "hostnogssenc",
    ];
    if major >= PgMajor(16) {
        hba_types.extend(["include", "include_if_exists", "include_dir"]);
    }
    let hba_path = data_dir.join("pg_hba.conf");
    if hba_file.as_deref() == Some(&*hba_path.to_string_lossy()) {
        let text = std::fs::read_to_string(&hba_path)
            .map_err(|e| anyhow!("Failed to read pg_hba.conf: {e}"))?;
        let lines: Vec<Value> = text
            .lines()
            .map(str::trim)
            .filter(|l| {
                l.split_whitespace()
                    .next()
                    .is_some_and(|t| hba_types.contains(&t))
            })
            .map(Value::from)
            .collect();
        section(config, &["postgresql"]).insert("pg_hba".into(), lines.into());
    }
    let ident_path = data_dir.join("pg_ident.conf");
    if ident_file.as_deref() == Some(&*ident_path.to_string_lossy()) {
        let text = std::fs::read_to_string(&ident_path)
            .map_err(|e| anyhow!("Failed to read pg_ident.conf: {e}"))?;
        let lines: Vec<Value> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(Value::from)
            .collect();
        if !lines.is_empty() {
            section(config, &["postgresql"]).insert("pg_ident".into(), lines.into());
        }
    }
    Ok(())
}

/// The directory of the running postmaster's executable: the live postmaster of the data
/// directory ([`pgpilot_postgres::live_postmaster_pid`]), then `/proc/<pid>/exe`.
fn bin_dir_of_running(data_dir: &Path) -> anyhow::Result<String> {
    let pid = pgpilot_postgres::live_postmaster_pid(data_dir).ok_or_else(|| {
        anyhow!(
            "Error while reading postmaster.pid file: no running postmaster of {} found",
            data_dir.display()
        )
    })?;
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .map_err(|_| anyhow!("Obtained postmaster pid doesn't exist."))?;
    Ok(exe
        .parent()
        .map(|d| d.to_string_lossy().into_owned())
        .unwrap_or_default())
}

/// `yaml.safe_dump` of one block, stripped, each line after the first prefixed.
fn block(name: &str, value: Value, prefix: &str) -> String {
    let mut m = Map::new();
    m.insert(name.to_string(), value);
    let text = pyyaml::dump(&Value::Object(m), false);
    let text = text.trim();
    format!("{prefix}{}", text.replace('\n', &format!("\n{prefix}")))
}

/// The document in Patroni's order with its comments; no newline at the end, as Patroni's.
fn render(mut config: Value) -> String {
    let mut out: Vec<String> = Vec::new();
    let Value::Object(m) = &mut config else {
        return String::new();
    };
    let section = |m: &mut Map<String, Value>, out: &mut Vec<String>, name: &str| {
        if let Some(v) = m.remove(name) {
            if v.is_object() {
                out.push(String::new());
            }
            out.push(block(name, v, ""));
        }
    };
    for name in [
        "scope",
        "namespace",
        "name",
        "log",
        "restapi",
        "ctl",
        "citus",
        "consul",
        "etcd",
        "etcd3",
        "exhibitor",
        "kubernetes",
        "raft",
        "zookeeper",
    ] {
        section(m, &mut out, name);
    }
    if let Some(bootstrap) = m.remove("bootstrap") {
        out.push(
            "\n# The bootstrap configuration. Works only when the cluster is not yet initialized."
                .into(),
        );
        out.push("# If the cluster is already initialized, all changes in the `bootstrap` section are ignored!".into());
        out.push("bootstrap:".into());
        if let Some(Value::Object(mut dcs)) = bootstrap.get("dcs").cloned() {
            out.push("  # This section will be written into <dcs>:/<namespace>/<scope>/config after initializing".into());
            out.push("  # new cluster and all other cluster members will use it as a `global configuration`.".into());
            out.push(
                "  # WARNING! If you want to change any of the parameters that were set up".into(),
            );
            out.push(
                "  # via `bootstrap.dcs` section, please use `patronictl edit-config`!".into(),
            );
            out.push("  dcs:".into());
            for name in ["loop_wait", "retry_timeout", "ttl"] {
                if let Some(v) = dcs.remove(name) {
                    out.push(block(name, v, "    "));
                }
            }
            for (name, v) in dcs {
                out.push(block(&name, v, "    "));
            }
        }
    }
    for name in ["postgresql", "watchdog", "tags"] {
        section(m, &mut out, name);
    }
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dsn_key_value_and_uri() {
        let kv =
            parse_dsn("host=/tmp port=5433 user='a b' password=x\\ y sslmode = require").unwrap();
        assert_eq!(kv["host"], "/tmp");
        assert_eq!(kv["port"], "5433");
        assert_eq!(kv["user"], "a b");
        assert_eq!(kv["password"], "x y");
        assert_eq!(kv["sslmode"], "require");
        let uri =
            parse_dsn("postgresql://u%40x:p@db.example:6432/app?sslmode=verify-full").unwrap();
        assert_eq!(uri["user"], "u@x");
        assert_eq!(uri["password"], "p");
        assert_eq!(uri["host"], "db.example");
        assert_eq!(uri["port"], "6432");
        assert_eq!(uri["dbname"], "app");
        assert_eq!(uri["sslmode"], "verify-full");
        assert_eq!(parse_dsn("postgres://[::1]:5432").unwrap()["host"], "::1");
        assert!(parse_dsn("host").is_none());
        assert!(parse_dsn("user='unterminated").is_none());
    }

    /// The text has Patroni's section order, comments and placeholders, and loads back as a
    /// configuration whose only problems are the placeholders.
    #[test]
    fn rendered_in_patronis_order() {
        let env = vec![("PATRONI_SCOPE".to_string(), "demo".to_string())];
        let mut config = template(&env).unwrap();
        section(&mut config, &["postgresql"]).insert("data_dir".into(), "/data".into());
        let text = render(config);
        assert!(!text.ends_with('\n'));
        let order: Vec<usize> = [
            "scope: demo",
            "\nname: ",
            "\nlog:\n  format: '%(asctime)s %(levelname)s: %(message)s'",
            "\nrestapi:",
            "\nbootstrap:\n  # This section",
            "  dcs:\n    loop_wait: 10\n    retry_timeout: 10\n    ttl: 30\n    postgresql:",
            "\npostgresql:",
            "\ntags:\n  clonefrom: true",
        ]
        .iter()
        .map(|s| text.find(s).unwrap_or_else(|| panic!("{s:?} in:\n{text}")))
        .collect();
        assert!(order.windows(2).all(|w| w[0] < w[1]), "{order:?}\n{text}");
        assert!(text.contains("      max_connections: 100\n"), "{text}");
        assert!(text.contains("      wal_level: hot_standby\n"), "{text}");
        assert!(text.contains("password: '#FIXME'"), "{text}");
        let doc = pgpilot_config::yaml::parse(&text, "generated").unwrap();
        assert_eq!(doc["scope"], "demo");
        assert_eq!(doc["bootstrap"]["dcs"]["postgresql"]["use_slots"], true);
    }
}
