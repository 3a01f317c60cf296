//! A replica's data directory: creation by pg_basebackup or a user's method, pg_rewind with
//! its checks, and removing the data directory's contents.

use std::time::Duration;

use tokio::process::Command;
use tracing::{error, info, warn};

use super::config::create_private_dir;
use super::sql::sql_err;
use super::{io_err, Postgres};
use crate::files::role_dsn;
use crate::{DataDirState, PgError, PgMajor, ReplicaMethod, Result, Upstream};

impl Postgres {
    /// Creates this replica's data directory with the first of `methods` that succeeds
    /// (Patroni's `create_replica`): the built-in pg_basebackup from `from` with `basebackup`
    /// options, or a user's command. Without `from` only the methods that work without a
    /// leader are tried. A failed method's leftovers are removed unless it has `keep_data`.
    /// Returns the name of the method that worked.
    pub async fn create_replica(
        &self,
        methods: &[ReplicaMethod],
        from: Option<&Upstream>,
        basebackup: &[String],
    ) -> Result<String> {
        let s = &self.settings;
        let connstring = from.map(|f| {
            let port = f.port.to_string();
            role_dsn(
                &s.replication,
                &[("dbname", "postgres"), ("host", &f.host), ("port", &port)],
                &[],
            )
        });
        if from.is_some() {
            self.write_pgpass()?;
        }
        let mut failures = Vec::new();
        for method in methods {
            let name = method.name();
            match (method, from) {
                (ReplicaMethod::Basebackup, Some(from)) => {
                    match self.basebackup(from, basebackup).await {
                        Ok(()) => {
                            info!("replica has been created using basebackup");
                            return Ok(name.to_string());
                        }
                        Err(e) => failures.push(format!("basebackup: {e}")),
                    }
                }
                (ReplicaMethod::Custom { .. }, None) if !method.works_without_leader() => {}
                (ReplicaMethod::Basebackup, None) => {}
                (
                    ReplicaMethod::Custom {
                        method: m,
                        keep_data,
                        ..
                    },
                    _,
                ) => {
                    self.clear_for_method(*keep_data).await?;
                    let argv = m.replica_argv(
                        &s.scope,
                        &self.data().display().to_string(),
                        connstring.as_deref().unwrap_or(""),
                    );
                    match self.run_user_command(&argv, from.is_some()).await {
                        Ok(0) => {
                            info!("replica has been created using {name}");
                            return Ok(name.to_string());
                        }
                        Ok(code) => {
                            error!(
                                "Error creating replica using method {name}: {} exited with code={code}",
                                m.command
                            );
                            failures.push(format!("{name}: exited with code={code}"));
                        }
                        Err(e) => {
                            error!("Error creating replica using method {name}: {e}");
                            failures.push(format!("{name}: {e}"));
                        }
                    }
                    if !keep_data && self.data_dir_state() != DataDirState::Empty {
                        self.remove_data_dir().await?;
                    }
                }
            }
        }
        Err(PgError::Command {
            command: "create replica".into(),
            detail: if failures.is_empty() {
                "no replica creation method can work without a leader".into()
            } else {
                format!("every method failed: {}", failures.join("; "))
            },
        })
    }

    /// Before a replica creation command: a data directory with something in it is emptied
    /// unless `keep_data`; an empty one is removed, since Patroni's removal deletes the
    /// directory itself and scripts written for it create the directory (e.g. copytree).
    async fn clear_for_method(&self, keep_data: bool) -> Result<()> {
        if self.data_dir_state() != DataDirState::Empty {
            if keep_data {
                info!("Leaving data directory uncleaned");
                return Ok(());
            }
            self.remove_data_dir().await?;
        }
        // A mount point can not be removed: the method then finds it empty.
        let _ = std::fs::remove_dir(self.data());
        Ok(())
    }

    /// Clones the data directory from `from` with pg_basebackup (`-X stream`), two attempts.
    pub async fn basebackup(&self, from: &Upstream, extra_args: &[String]) -> Result<()> {
        self.write_pgpass()?;
        let s = &self.settings;
        let port = from.port.to_string();
        let dsn = role_dsn(
            &s.replication,
            &[
                ("host", &from.host),
                ("port", &port),
                ("dbname", "postgres"),
                ("application_name", &s.name),
            ],
            &[],
        );
        let mut last = None;
        for attempt in 1..=2 {
            self.remove_data_dir().await?;
            create_private_dir(self.data())?;
            let mut cmd = Command::new(self.bin("pg_basebackup"));
            cmd.arg(format!("--pgdata={}", self.data().display()))
                .arg("-X")
                .arg("stream")
                .arg(format!("--dbname={dsn}"))
                .args(extra_args);
            // A spread checkpoint can keep a new replica waiting for up to checkpoint_timeout
            // (5 min by default) before the copy starts; ask for a fast one unless configured.
            if !extra_args
                .iter()
                .any(|a| a.starts_with("--checkpoint") || a == "-c")
            {
                cmd.arg("--checkpoint=fast");
            }
            match self
                .run(cmd, "pg_basebackup", Duration::from_secs(3600))
                .await
            {
                Ok(_) => return Ok(()),
                Err(e) => {
                    warn!("pg_basebackup attempt {attempt} failed: {e}");
                    last = Some(e);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        Err(last.unwrap_or_else(|| PgError::Invalid("pg_basebackup failed".into())))
    }

    /// Refuses a pg_rewind that can not work on this data directory before running it: absent
    /// from `bin_dir`, or of another major (pg_rewind reads the control file and WAL of its
    /// own major only).
    async fn check_rewind_binary(&self) -> Result<()> {
        let bin = self.bin("pg_rewind");
        // Logged as "pg_rewind failed: <this>".
        let refused = PgError::Invalid;
        let mut cmd = Command::new(&bin);
        cmd.arg("--version");
        let out = self
            .run(cmd, "pg_rewind --version", Duration::from_secs(30))
            .await
            .map_err(|e| refused(format!("{} can not be run: {e}", bin.display())))?;
        let tool = PgMajor::from_version_output(&out);
        let data = self.data_dir_major();
        match (tool, data) {
            (Some(t), Some(d)) if t != d => Err(refused(format!(
                "{} is PostgreSQL {t} and the data directory PostgreSQL {d}: pg_rewind works \
                 on its own major only",
                bin.display()
            ))),
            _ => Ok(()),
        }
    }

    /// Call before [`Postgres::rewind`]. pg_rewind compares timelines through the source's
    /// control file, which a fresh primary updates only at its first checkpoint after
    /// promotion: without it pg_rewind finds "the
    /// same timeline" and leaves a diverged directory alone. So the source must be out of
    /// recovery, and a CHECKPOINT is run there (as superuser, like Patroni) first.
    pub async fn prepare_rewind_source(&self, from: &Upstream) -> Result<()> {
        let client = self.connect_to(from).await?;
        let row = client
            .query_one("SELECT pg_catalog.pg_is_in_recovery()", &[])
            .await
            .map_err(|e| sql_err(&e))?;
        if row.get::<_, bool>(0) {
            return Err(PgError::Sql(
                "the rewind source is still in recovery (promotion not finished)".into(),
            ));
        }
        client
            .batch_execute("CHECKPOINT")
            .await
            .map_err(|e| sql_err(&e))?;
        Ok(())
    }

    /// Runs pg_rewind against `from` (target must be stopped cleanly).
    pub async fn rewind(&self, from: &Upstream) -> Result<()> {
        self.check_rewind_binary().await?;
        self.write_pgpass()?;
        let s = &self.settings;
        let user = s.rewind.as_ref().unwrap_or(&s.superuser);
        let port = from.port.to_string();
        let dsn = role_dsn(
            user,
            &[
                ("host", &from.host),
                ("port", &port),
                ("dbname", "postgres"),
            ],
            &[],
        );
        let conf = s.config_dir.join("postgresql.conf");
        let options = self.major().await.rewind_options(
            self.restore_command
                .load(std::sync::atomic::Ordering::Relaxed),
            (s.config_dir != s.data_dir).then_some(conf.as_path()),
        );
        let mut cmd = Command::new(self.bin("pg_rewind"));
        cmd.args(options)
            .arg("-D")
            .arg(self.data())
            .arg(format!("--source-server={dsn}"))
            .env("PGOPTIONS", "-c statement_timeout=0");
        let out = self
            .run(cmd, "pg_rewind", Duration::from_secs(3600))
            .await?;
        info!("pg_rewind: {}", out.trim());
        Ok(())
    }

    /// Removes the data directory contents (only on an explicit, logged condition: see
    /// DESIGN.md).
    /// Runs on tokio's blocking pool: a large data directory takes seconds to remove, and the
    /// agent's one thread also serves the REST API.
    pub async fn remove_data_dir(&self) -> Result<()> {
        let dir = self.data().to_path_buf();
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return Ok(());
        };
        info!("removing the contents of {}", dir.display());
        let removed = tokio::task::spawn_blocking(move || -> Result<()> {
            for e in entries.flatten() {
                let p = e.path();
                let res = if p.is_dir() && !p.is_symlink() {
                    std::fs::remove_dir_all(&p)
                } else {
                    std::fs::remove_file(&p)
                };
                res.map_err(io_err(&p))?;
            }
            Ok(())
        })
        .await;
        match removed {
            Ok(r) => r,
            Err(e) => Err(PgError::Io {
                path: dir,
                source: std::io::Error::other(format!("removal task failed: {e}")),
            }),
        }
    }
}
