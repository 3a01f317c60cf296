//! pglift (PyPI, 3.x) drives pgpilot as it drives Patroni, with pgpilot and pgpilotctl as its
//! `patroni.execpath` and `patroni.ctlpath`: a two-node cluster created instance by instance,
//! status, `instance exec -- pgpilotctl list`, a `pgconf` change (pglift waits for
//! `pg_conf_load_time()` to move after `POST /reload`), a `pghba` change and a reload, a restart through
//! `POST /restart` (pglift gives it 5 s), stop and start of an instance, `patroni logs`, a
//! switchover, and drop. The site settings and the pg_hba template are the ones a pglift user
//! writes for Patroni (pglift's own template has no `replication` line). Needs PyPI; skipped
//! with the reason printed where pglift can not be installed.

mod harness;

use std::path::{Path, PathBuf};
use std::time::Duration;

use harness::{Etcd, SHORT_TIMEOUT};
use nix::sys::signal::Signal;

const PGPILOTCTL: &str = env!("CARGO_BIN_EXE_pgpilotctl");
const SCOPE: &str = "pgl";

/// A pglift site in a temporary directory: its settings, its instances' processes (started by
/// pglift as daemons, so killed here by the PIDs in their files when the test ends).
struct Site {
    dir: tempfile::TempDir,
    pglift: PathBuf,
    _etcd: Etcd,
}

struct Node {
    name: &'static str,
    node: &'static str,
    pg_port: u16,
    api_port: u16,
}

impl Site {
    fn new(pglift: PathBuf) -> Site {
        let etcd = Etcd::start();
        let dir = tempfile::Builder::new()
            .prefix("pgpilot-pglift-")
            .tempdir()
            .unwrap();
        let root = dir.path();
        let conf = root.join("config/pglift");
        std::fs::create_dir_all(conf.join("postgresql")).unwrap();
        let settings = format!(
            "prefix: {root}/srv\n\
             run_prefix: {root}/run\n\
             postgresql:\n  \
               bindir: /usr/lib/postgresql/{{version}}/bin\n  \
               auth:\n    local: trust\n    host: trust\n  \
               replrole: replication\n  \
               socket_directory: {root}/run/pgsql\n\
             patroni:\n  \
               execpath: {agent}\n  \
               ctlpath: {ctl}\n  \
               enforce_config_validation: false\n  \
               etcd:\n    hosts:\n    - {etcd}\n",
            root = root.display(),
            agent = harness::agent_bin().display(),
            ctl = PGPILOTCTL,
            etcd = etcd.endpoint().trim_start_matches("http://"),
        );
        std::fs::write(conf.join("settings.yaml"), settings).unwrap();
        // pglift's pg_hba.conf template plus the replication lines the replica's clone needs.
        std::fs::write(
            conf.join("postgresql/pg_hba.conf"),
            "local   all             {surole}                                {auth.local}\n\
             local   all             all                                     {auth.local}\n\
             host    all             all             127.0.0.1/32            {auth.host}\n\
             local   replication     {replrole}                              {auth.local}\n\
             host    replication     {replrole}      127.0.0.1/32            {auth.host}\n",
        )
        .unwrap();
        Site {
            dir,
            pglift,
            _etcd: etcd,
        }
    }

    fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Runs `pglift args...` in the site (bounded), `input` on its stdin; returns (success,
    /// stdout + stderr).
    async fn run_with(&self, args: &[&str], input: &[u8]) -> (bool, String) {
        use tokio::io::AsyncWriteExt;
        let root = self.root();
        let mut child = tokio::process::Command::new(&self.pglift)
            .args(["--log-level", "INFO"])
            .args(args)
            .env_clear()
            .env("HOME", root)
            .env("XDG_CONFIG_HOME", root.join("config"))
            .env("XDG_DATA_HOME", root.join("data"))
            .env("XDG_RUNTIME_DIR", root.join("run"))
            .env("PATH", "/usr/bin:/bin")
            .env("LANG", "C.UTF-8")
            .current_dir(root)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("run pglift: {e}"));
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(input).await.unwrap();
        drop(stdin);
        let out = tokio::time::timeout(Duration::from_secs(180), child.wait_with_output())
            .await
            .unwrap_or_else(|_| panic!("pglift {args:?} did not finish in 180 s"))
            .unwrap_or_else(|e| panic!("run pglift: {e}"));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        eprintln!("$ pglift {}\n{text}", args.join(" "));
        (out.status.success(), text)
    }

    async fn run(&self, args: &[&str]) -> (bool, String) {
        self.run_with(args, b"").await
    }

    async fn ok(&self, args: &[&str]) -> String {
        let (ok, text) = self.run(args).await;
        if !ok {
            self.print_logs();
        }
        assert!(ok, "pglift {args:?} failed:\n{text}");
        text
    }

    async fn create(&self, n: &Node) {
        let port = n.pg_port.to_string();
        let api = format!("127.0.0.1:{}", n.api_port);
        let cluster = format!("--patroni-cluster={SCOPE}");
        let node = format!("--patroni-node={}", n.node);
        let connect = format!("--patroni-restapi-connect-address={api}");
        let listen = format!("--patroni-restapi-listen={api}");
        self.ok(&[
            "instance",
            "create",
            n.name,
            "--version=15",
            "--port",
            &port,
            &cluster,
            &node,
            &connect,
            &listen,
            "--patroni-postgresql-connect-host=127.0.0.1",
        ])
        .await;
    }

    fn data_dir(&self, name: &str) -> PathBuf {
        self.root().join(format!("srv/srv/pgsql/15/{name}/data"))
    }

    fn agent_pid(&self, name: &str) -> Option<i32> {
        let path = self.root().join(format!("run/patroni/15-{name}.pid"));
        std::fs::read_to_string(path).ok()?.trim().parse().ok()
    }

    fn print_logs(&self) {
        for name in ["main", "second"] {
            let log = self
                .root()
                .join(format!("srv/log/patroni/15-{name}/patroni.log"));
            eprintln!(
                "--- {} (last 40 lines)\n{}",
                log.display(),
                harness::tail(&log, 40)
            );
        }
    }

    /// `SELECT ...` on an instance through its socket, as pglift's user.
    async fn query(&self, n: &Node, sql: &str) -> anyhow::Result<String> {
        let client = harness::connect_socket(&self.root().join("run/pgsql"), n.pg_port).await?;
        Ok(client.query_one(sql, &[]).await?.get(0))
    }
    /// Waits until `pg_is_in_recovery()` on `n` is `in_recovery`.
    async fn wait_in_recovery(&self, n: &Node, in_recovery: bool, what: &str) {
        harness::wait_for(SHORT_TIMEOUT, what, async || {
            let st = self.query(n, "SELECT pg_is_in_recovery()::text").await?;
            anyhow::ensure!(st == in_recovery.to_string(), "in recovery: {st}");
            Ok(())
        })
        .await;
    }
}

impl Drop for Site {
    fn drop(&mut self) {
        for name in ["main", "second"] {
            if let Some(pid) = self.agent_pid(name) {
                if harness::pid_alive(pid) {
                    harness::signal(pid, Signal::SIGKILL);
                }
            }
            harness::kill_postmaster_of(&self.data_dir(name));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pglift_drives_a_two_node_pgpilot_cluster() {
    harness::init();
    let pglift = match harness::pglift() {
        Ok(p) => p,
        Err(reason) => {
            eprintln!("SKIPPED: pglift can not be installed from PyPI: {reason}");
            return;
        }
    };
    let site = Site::new(pglift);
    let main = Node {
        name: "main",
        node: "n1",
        pg_port: harness::free_port(),
        api_port: harness::free_port(),
    };
    let second = Node {
        name: "second",
        node: "n2",
        pg_port: harness::free_port(),
        api_port: harness::free_port(),
    };

    site.ok(&["site-configure", "install"]).await;
    // The first instance bootstraps the cluster; the second clones it and streams.
    site.create(&main).await;
    site.create(&second).await;
    for n in [&main, &second] {
        let status = site.ok(&["instance", "status", n.name]).await;
        assert!(status.contains("PostgreSQL: running"), "{status}");
    }
    // The clone is done when `instance create` returns; the replica's member key says
    // `streaming` from its next cycle on (pglift leaves loop_wait at Patroni's 10 s).
    let mut list = String::new();
    harness::wait_for(
        SHORT_TIMEOUT,
        "pgpilotctl list shows n2 streaming",
        async || {
            let (ok, text) = site
                .run(&["instance", "exec", "main", "--", PGPILOTCTL, "list"])
                .await;
            anyhow::ensure!(ok && text.contains("streaming"), "{text}");
            list = text;
            Ok(())
        },
    )
    .await;
    assert!(list.contains("| n1") && list.contains("Leader"), "{list}");
    assert!(
        list.contains("| n2") && list.contains("streaming"),
        "{list}"
    );

    // pgconf: pglift rewrites the Patroni YAML, POSTs /reload and waits loop_wait for
    // pg_conf_load_time() to move; it fails the command when it does not.
    site.ok(&["pgconf", "-i", "main", "set", "work_mem=8MB"])
        .await;
    assert_eq!(site.query(&main, "SHOW work_mem").await.unwrap(), "8MB");
    site.ok(&[
        "pghba",
        "-i",
        "main",
        "add",
        "--database",
        "db1",
        "--user",
        "u1",
        "--connection-address",
        "127.0.0.1/32",
        "--method",
        "trust",
    ])
    .await;
    // pglift only writes the YAML's `postgresql.pg_hba`; `instance reload` applies it.
    site.ok(&["instance", "reload", "main"]).await;
    harness::wait_for(
        SHORT_TIMEOUT,
        "the new pg_hba line is in force",
        async || {
            let rules = site
                .query(
                    &main,
                    "SELECT count(*)::text FROM pg_hba_file_rules WHERE 'db1' = ANY(database)",
                )
                .await?;
            anyhow::ensure!(rules == "1", "{rules} rules for db1");
            Ok(())
        },
    )
    .await;

    // Restart through POST /restart (pglift's client gives up after 5 s).
    let before = site
        .query(&main, "SELECT pg_postmaster_start_time()::text")
        .await
        .unwrap();
    site.ok(&["instance", "restart", "main"]).await;
    let after = site
        .query(&main, "SELECT pg_postmaster_start_time()::text")
        .await
        .unwrap();
    assert_ne!(before, after, "restarted");

    // Stop and start an instance: its agent goes and comes back, PostgreSQL with it.
    site.ok(&["instance", "stop", "second"]).await;
    assert!(harness::postmaster_pid(&site.data_dir("second")).is_none());
    site.ok(&["instance", "start", "second"]).await;
    site.wait_in_recovery(&second, true, "n2 runs as a replica again")
        .await;

    let logs = site.ok(&["patroni", "-i", "main", "logs"]).await;
    assert!(
        logs.contains("I am (n1), the leader with the lock"),
        "{logs}"
    );

    // A switchover with pgpilotctl, through pglift.
    site.ok(&[
        "instance",
        "exec",
        "main",
        "--",
        PGPILOTCTL,
        "switchover",
        "--candidate",
        "n2",
        "--force",
        SCOPE,
    ])
    .await;
    site.wait_in_recovery(&second, false, "n2 is the primary")
        .await;

    // Drop both: agents and PostgreSQL are gone, the data directories too.
    for n in [&second, &main] {
        let pid = site.agent_pid(n.name);
        // pglift asks for confirmation on stdin (`drop` has no --yes).
        let (ok, text) = site.run_with(&["instance", "drop", n.name], b"y\n").await;
        assert!(ok, "drop {}: {text}", n.name);
        assert!(!site.data_dir(n.name).exists(), "{} data removed", n.name);
        if let Some(pid) = pid {
            assert!(!harness::pid_alive(pid), "{}'s agent stopped", n.name);
        }
    }
}
