//! A privileged helper for tests that need root after the harness dropped the test process to
//! the user `pgpilot` (network namespaces, links, programs that need `CAP_NET_ADMIN`).
//!
//! The caller starts it while still root, before [`crate::init`], with bash functions (see
//! [`RootHelper::start`]); the helper runs `setup`, prints `ready` (or `error: ...`, cleans up
//! and exits), then answers one line per command read on its stdin (`ok[ <payload>]` or
//! `error: ...`). It runs `cleanup` when its stdin closes — when the test process exits,
//! normally, by panic or by SIGKILL — and on SIGTERM/SIGHUP.
//! Used by `pgpilot-chaos`'s partition fault and [`crate::Keepalived`].

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

/// What every helper runs after the caller's functions.
const MAIN: &str = r#"
# Ctrl-C reaches the whole process group: stay alive until the test closes our stdin.
trap '' INT
trap 'cleanup; exit 0' TERM HUP
if ! out=$(setup 2>&1); then
    cleanup
    echo "error: $out" | tr '\n' ' '
    echo
    exit 1
fi
echo ready
while read -r cmd i arg; do
    handle "$cmd" "$i" "$arg"
done
cleanup
"#;

/// The helper process and its pipes; closing stdin (on drop) makes it clean up and exit.
pub struct RootHelper {
    /// What it is, in messages (`netns`, `keepalived`).
    name: &'static str,
    io: Mutex<Io>,
}

struct Io {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl RootHelper {
    /// Runs bash as this (root) process, with `env` and a fixed `PATH`, and waits for its
    /// `ready`. `functions` defines `setup` (builds everything; its output is the error),
    /// `cleanup` (removes it, whatever `setup` got to) and `handle CMD I ARG` (answers one
    /// command: prints `ok[ <payload>]` or `error: ...` on one line). `Err` is the reason, to
    /// print when the test or fault is skipped.
    pub fn start(
        name: &'static str,
        functions: &str,
        env: &[(&str, String)],
    ) -> Result<RootHelper, String> {
        let mut cmd = Command::new("/bin/bash");
        cmd.arg("-c")
            .arg(format!("set -u\n{functions}\n{MAIN}"))
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("start the {name} helper: {e}"))?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            // Both were requested as pipes just above.
            let _ = child.kill();
            return Err(format!("the {name} helper has no pipes"));
        };
        let mut io = Io {
            child,
            stdin: Some(stdin),
            stdout: BufReader::new(stdout),
        };
        let mut line = String::new();
        let _ = io.stdout.read_line(&mut line);
        if line.trim() != "ready" {
            let _ = io.child.wait();
            return Err(format!("the {name} helper's setup failed: {}", line.trim()));
        }
        Ok(RootHelper {
            name,
            io: Mutex::new(io),
        })
    }

    /// Sends one command line; returns the payload of its `ok` answer.
    pub fn command(&self, cmd: &str) -> anyhow::Result<String> {
        let name = self.name;
        let mut io = self.io.lock().unwrap_or_else(|p| p.into_inner());
        let stdin = io
            .stdin
            .as_mut()
            .with_context(|| format!("the {name} helper is closed"))?;
        writeln!(stdin, "{cmd}").with_context(|| format!("write to the {name} helper"))?;
        stdin.flush()?;
        let mut line = String::new();
        io.stdout
            .read_line(&mut line)
            .with_context(|| format!("read from the {name} helper"))?;
        let line = line.trim();
        match line.strip_prefix("ok") {
            Some(payload) if payload.is_empty() || payload.starts_with(' ') => {
                Ok(payload.trim().to_string())
            }
            _ => bail!("{name} helper: {cmd}: {line:?}"),
        }
    }
}

impl Drop for RootHelper {
    /// Closes the helper's stdin (it removes what it built) and waits up to 10 s for it.
    fn drop(&mut self) {
        let io = self.io.get_mut().unwrap_or_else(|p| p.into_inner());
        io.stdin = None;
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if !matches!(io.child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        eprintln!(
            "the {} helper did not finish its cleanup within 10 s",
            self.name
        );
    }
}
