//! A new cluster: initdb, a custom bootstrap method, `post_bootstrap`, and moving a failed
//! bootstrap's data directory aside.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;
use tracing::{error, info, warn};

use super::config::{create_private_dir, write_if_changed};
use super::{io_err, Postgres};
use crate::files::role_dsn;
use crate::{BootstrapRecovery, CustomBootstrap, DataDirState, PgError, Result};

impl Postgres {
    /// Runs `initdb` with the `bootstrap.initdb` options (already rendered as `--opt[=value]`),
    /// adding `--pgdata`, `--username=<superuser>` and `--pwfile` when a password is set.
    /// Moves the generated postgresql.conf to postgresql.base.conf.
    pub async fn initdb(&self, options: &[String]) -> Result<()> {
        let dir = self.data();
        create_private_dir(dir)?;
        let mut cmd = Command::new(self.bin("initdb"));
        cmd.arg(format!("--pgdata={}", dir.display()))
            .arg(format!("--username={}", self.settings.superuser.username))
            .args(options);
        let pwfile = dir.with_extension("pwfile");
        if let Some(pw) = &self.settings.superuser.password {
            write_if_changed(&pwfile, &format!("{pw}\n"))?;
            cmd.arg(format!("--pwfile={}", pwfile.display()));
        }
        let res = self.run(cmd, "initdb", Duration::from_secs(600)).await;
        let _ = std::fs::remove_file(&pwfile);
        res?;
        self.move_base_conf()?;
        Ok(())
    }

    /// Runs `bootstrap.post_bootstrap` with the superuser DSN as its one argument.
    pub async fn run_post_bootstrap(&self, command: &str) -> Result<()> {
        let s = &self.settings;
        let port = s.port.to_string();
        let dsn = role_dsn(
            &s.superuser,
            &[
                ("dbname", "postgres"),
                ("host", &s.local_host),
                ("port", &port),
            ],
            &[],
        );
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg(format!("{command} \"$1\""))
            .arg("post_bootstrap")
            .arg(dsn)
            .env(
                "PGOPTIONS",
                "-c synchronous_commit=local -c statement_timeout=0",
            );
        self.run(cmd, "post_bootstrap", Duration::from_secs(3600))
            .await?;
        Ok(())
    }

    /// Runs a user's command (custom bootstrap, replica creation method) without a shell, its
    /// output going where the agent's goes, as Patroni runs it. Returns the exit code.
    ///
    /// Not bounded in time: a restore takes as long as the backup is large, and Patroni waits
    /// for it too. It ends with the agent: the child is killed when the task is dropped
    /// (shutdown aborts it).
    pub(super) async fn run_user_command(
        &self,
        argv: &[String],
        pgpassfile: bool,
    ) -> std::result::Result<i32, String> {
        let Some((program, args)) = argv.split_first() else {
            return Err("empty command".into());
        };
        let mut cmd = Command::new(program);
        cmd.args(args).stdin(Stdio::null()).kill_on_drop(true);
        if pgpassfile {
            cmd.env("PGPASSFILE", &self.settings.pgpass);
        }
        let mut child = cmd.spawn().map_err(|e| e.to_string())?;
        let status = child.wait().await.map_err(|e| e.to_string())?;
        // A command killed by a signal has no code; Patroni's subprocess reports -<signal>.
        Ok(status.code().unwrap_or_else(|| {
            use std::os::unix::process::ExitStatusExt;
            -status.signal().unwrap_or(1)
        }))
    }

    /// Runs a custom bootstrap method instead of initdb (Patroni's `_custom_bootstrap`), then
    /// readies what it restored: no promote trigger file, and unless the recovery settings are
    /// to be written ([`BootstrapRecovery::Params`], by [`Postgres::write_config`]) or kept, no
    /// recovery files either. The original configuration is kept as postgresql.base.conf.
    pub async fn custom_bootstrap(&self, b: &CustomBootstrap) -> Result<()> {
        let m = &b.method;
        let argv = m.bootstrap_argv(&self.settings.scope, &self.data().display().to_string());
        info!("Running custom bootstrap script: {}", m.command);
        let failed = |detail: String| PgError::Command {
            command: format!("custom bootstrap script {}", m.command),
            detail,
        };
        match self.run_user_command(&argv, false).await {
            Ok(0) => {}
            Ok(code) => return Err(failed(format!("exited with code={code}"))),
            Err(e) => {
                error!("Exception during custom bootstrap: {e}");
                return Err(failed(e));
            }
        }
        if self.data_dir_state() != DataDirState::Initialized {
            return Err(failed(format!(
                "succeeded but left no PostgreSQL cluster in {}",
                self.data().display()
            )));
        }
        let mut remove = vec![self.data().join("promote")];
        if let BootstrapRecovery::Params(params) = &b.recovery {
            if let Some((_, trigger)) = params.iter().find(|(k, _)| k == "promote_trigger_file") {
                remove.push(self.data().join(trigger));
            }
        }
        if b.recovery == BootstrapRecovery::None {
            remove.extend(
                ["recovery.conf", "recovery.signal", "standby.signal"].map(|f| self.data().join(f)),
            );
        }
        for path in remove {
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(io_err(&path)(e));
                }
                _ => {}
            }
        }
        self.move_base_conf()
    }

    /// A failed bootstrap leaves its data directory as `<data_dir>.failed` for inspection.
    pub fn move_aside_failed(&self) {
        let dir = &self.settings().data_dir;
        let mut failed = PathBuf::from(dir);
        failed.set_extension("failed");
        // Usually there is none; if an old one can not be removed the rename below says so.
        match std::fs::remove_dir_all(&failed) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                warn!("could not remove the old {}: {e}", failed.display());
            }
            _ => {}
        }
        if let Err(e) = std::fs::rename(dir, &failed) {
            error!("could not move {} aside: {e}", dir.display());
        }
    }
}
