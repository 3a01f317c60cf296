//! The configuration files on disk: postgresql.conf (with postgresql.base.conf), pg_hba.conf,
//! the pgpass file, the signal files and postgresql.auto.conf, written atomically and only when
//! they change, and the directories PostgreSQL needs before it starts.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tracing::info;

use super::{io_err, Postgres};
use crate::files::{
    bootstrap_recovery_params, render_hba, render_pgpass, render_postgresql_conf,
    sanitize_auto_conf, OUR_HEADER,
};
use crate::{BootstrapRecovery, DataDirState, DesiredConfig, PgError, Result};

/// `O_NOFOLLOW`, from nix's libc.
fn libc_o_nofollow() -> i32 {
    nix::fcntl::OFlag::O_NOFOLLOW.bits()
}

/// Writes `path` atomically (tmp + rename) with mode 0600; returns whether the content changed.
/// The temporary file is created exclusively (`O_CREAT|O_EXCL`, never through a symlink) under
/// a name of this process: the pgpass file often lives in `/tmp`, where a predictable name
/// would let another local user plant a symlink and read the passwords.
pub(super) fn write_if_changed(path: &Path, content: &str) -> Result<bool> {
    use std::os::unix::fs::OpenOptionsExt;
    if std::fs::read_to_string(path).is_ok_and(|old| old == content) {
        return Ok(false);
    }
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".pgpilot-tmp.{}", std::process::id()));
    let tmp = path.with_file_name(name);
    let create = || {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc_o_nofollow())
            .open(&tmp)
    };
    let file = match create() {
        // Left over by a crash of an agent with the same PID: unlink (never follows) and retry.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            std::fs::remove_file(&tmp).map_err(io_err(&tmp))?;
            create()
        }
        other => other,
    };
    {
        use std::io::Write;
        let mut f = file.map_err(io_err(&tmp))?;
        f.write_all(content.as_bytes()).map_err(io_err(&tmp))?;
    }
    std::fs::rename(&tmp, path).map_err(io_err(path))?;
    Ok(true)
}

impl Postgres {
    /// Keeps the original configuration as postgresql.base.conf (Patroni's layout) unless that
    /// is already done or the current postgresql.conf is one we wrote.
    pub(super) fn move_base_conf(&self) -> Result<()> {
        let cfg = &self.settings.config_dir;
        let conf = cfg.join("postgresql.conf");
        let base = cfg.join("postgresql.base.conf");
        if base.exists() || !conf.exists() {
            return Ok(());
        }
        let ours = std::fs::read_to_string(&conf).is_ok_and(|t| t.starts_with(OUR_HEADER));
        if !ours {
            std::fs::rename(&conf, &base).map_err(io_err(&conf))?;
        }
        Ok(())
    }

    /// Renders and writes postgresql.conf, pg_hba.conf and the standby files. Returns true if any
    /// file changed on disk.
    pub async fn write_config(&self, desired: &DesiredConfig) -> Result<bool> {
        let cfg = &self.settings.config_dir;
        create_private_dir(cfg)?;
        self.check_directories(&desired.parameters)?;
        self.move_base_conf()?;
        let major = self.major().await;
        self.restore_command.store(
            desired
                .parameters
                .get("restore_command")
                .is_some_and(|c| !c.trim_matches('\'').is_empty()),
            std::sync::atomic::Ordering::Relaxed,
        );
        let mut changed = false;
        changed |= write_if_changed(
            &cfg.join("postgresql.conf"),
            &render_postgresql_conf(&self.settings, desired, major),
        )?;
        if !desired.pg_hba.is_empty() {
            changed |= write_if_changed(&cfg.join("pg_hba.conf"), &render_hba(&desired.pg_hba))?;
        }
        changed |= self.write_pgpass()?;
        let standby_signal = self.data().join("standby.signal");
        let recovery_signal = self.data().join("recovery.signal");
        // Which signal files must exist (true) or be absent (false); the others are left alone.
        let signals: Vec<(&Path, bool)> = match &desired.bootstrap_recovery {
            // The restore tool's recovery files and settings stay as it wrote them.
            BootstrapRecovery::KeepExisting => vec![],
            BootstrapRecovery::Params(_) => {
                let (_, standby, _) = bootstrap_recovery_params(&desired.bootstrap_recovery);
                vec![(&standby_signal, standby), (&recovery_signal, !standby)]
            }
            BootstrapRecovery::None => vec![(&standby_signal, desired.standby.is_some())],
        };
        for (signal, wanted) in signals {
            match (wanted, signal.exists()) {
                (true, false) => {
                    write_if_changed(signal, "")?;
                    changed = true;
                }
                (false, true) => {
                    std::fs::remove_file(signal).map_err(io_err(signal))?;
                    changed = true;
                }
                _ => {}
            }
        }
        if desired.bootstrap_recovery != BootstrapRecovery::KeepExisting {
            changed |= self.sanitize_auto_conf()?;
        }
        Ok(changed)
    }

    /// Writes the pgpass file (its directory created first, as Patroni's `check_directories`
    /// does at start). Returns whether it changed.
    pub(super) fn write_pgpass(&self) -> Result<bool> {
        if let Some(dir) = self.settings.pgpass.parent() {
            if !dir.as_os_str().is_empty() {
                ensure_directory(dir, "`postgresql.pgpass`")?;
            }
        }
        write_if_changed(&self.settings.pgpass, &render_pgpass(&self.settings))
    }

    /// Patroni's `check_directories`: every directory of `unix_socket_directories` and the
    /// `stats_temp_directory` exist and are writable before
    /// PostgreSQL starts (created when missing), so a socket directory under `/run` or a fresh
    /// tree does not make the start fail with "could not create lock file". Relative paths are
    /// taken from the data directory, and the ones inside it are left to initdb / the clone while
    /// it is still empty.
    fn check_directories(&self, parameters: &BTreeMap<String, String>) -> Result<()> {
        let mut wanted: Vec<(PathBuf, &str)> = Vec::new();
        if let Some(dirs) = parameters.get("unix_socket_directories") {
            for d in dirs.trim_matches('\'').split(',') {
                let d = d.trim();
                if !d.is_empty() {
                    wanted.push((PathBuf::from(d), "unix_socket_directories"));
                }
            }
        }
        if let Some(d) = parameters.get("stats_temp_directory") {
            let d = d.trim_matches('\'').trim();
            if !d.is_empty() {
                wanted.push((PathBuf::from(d), "stats_temp_directory"));
            }
        }
        let data = self.data();
        let data_empty = matches!(self.data_dir_state(), DataDirState::Empty);
        for (dir, key) in wanted {
            let dir = data.join(dir);
            if data_empty && dir.starts_with(data) {
                continue;
            }
            ensure_directory(&dir, key)?;
        }
        Ok(())
    }

    /// Removes recovery settings from `postgresql.auto.conf` (Patroni's `_sanitize_auto_conf`):
    /// ours in postgresql.conf must be the ones in force. Returns whether the file changed.
    fn sanitize_auto_conf(&self) -> Result<bool> {
        let path = self.data().join("postgresql.auto.conf");
        let Ok(text) = std::fs::read_to_string(&path) else {
            return Ok(false);
        };
        match sanitize_auto_conf(&text) {
            Some(clean) => {
                info!("removing recovery settings from {}", path.display());
                write_if_changed(&path, &clean)
            }
            None => Ok(false),
        }
    }
}

/// [`validate_directory`] with Patroni's message naming the setting `key` that wants `dir`.
fn ensure_directory(dir: &Path, key: &str) -> Result<()> {
    validate_directory(dir).map_err(|reason| {
        PgError::Invalid(format!("'{}' is defined in {key}, {reason}", dir.display()))
    })
}

/// Patroni's `validate_directory`: `dir` exists (created with its parents when missing) and a
/// file can be created in it. The error is the reason, in Patroni's words.
fn validate_directory(dir: &Path) -> std::result::Result<(), &'static str> {
    match std::fs::metadata(dir) {
        Err(_) => match std::fs::create_dir_all(dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
            Err(_) => Err("couldn't create the directory"),
        },
        Ok(m) if m.is_dir() => {
            let probe = dir.join(format!(".pgpilot-write-check.{}", std::process::id()));
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&probe)
                .and_then(|_| std::fs::remove_file(&probe))
                .map_err(|_| "the directory is not writable")
        }
        Ok(_) => Err("is not a directory"),
    }
}

pub(super) fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io_err(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A missing socket directory is created with its parents; a file where a directory is
    /// wanted is refused with Patroni's reason; an existing writable one is accepted and left
    /// with nothing in it.
    #[test]
    fn directories_are_created_or_refused() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("run/postgresql");
        assert_eq!(validate_directory(&nested), Ok(()));
        assert!(nested.is_dir());
        assert_eq!(validate_directory(&nested), Ok(()));
        assert_eq!(std::fs::read_dir(&nested).unwrap().count(), 0);
        let file = dir.path().join("file");
        std::fs::write(&file, "").unwrap();
        assert_eq!(validate_directory(&file), Err("is not a directory"));
        assert_eq!(
            validate_directory(&file.join("below")),
            Err("couldn't create the directory")
        );
    }

    /// The pgpass file is written through an exclusive temporary file: a symlink planted at
    /// the temporary name is removed, never written through, and the result is 0600.
    #[test]
    fn secrets_are_never_written_through_a_planted_symlink() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let pgpass = dir.path().join("pgpass");
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "untouched").unwrap();
        let tmp = dir
            .path()
            .join(format!("pgpass.pgpilot-tmp.{}", std::process::id()));
        std::os::unix::fs::symlink(&victim, &tmp).unwrap();
        assert!(write_if_changed(&pgpass, "*:*:*:u:secret\n").unwrap());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "untouched");
        assert_eq!(
            std::fs::read_to_string(&pgpass).unwrap(),
            "*:*:*:u:secret\n"
        );
        let mode = std::fs::metadata(&pgpass).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!tmp.exists());
        assert!(!write_if_changed(&pgpass, "*:*:*:u:secret\n").unwrap());
    }
}
