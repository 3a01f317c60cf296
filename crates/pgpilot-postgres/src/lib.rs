//! Everything that touches PostgreSQL: the data directory, `initdb`, `pg_ctl`, `pg_basebackup`,
//! `pg_rewind`, `pg_controldata`, the files we manage (`postgresql.conf` including
//! `postgresql.base.conf`, `pg_hba.conf`, `standby.signal`, recovery settings) and SQL through
//! `tokio-postgres`. It knows nothing of the DCS or of HA policy: the HA cycle tells it what to do.
//!
//! Every external command and query is bounded by a timeout. What differs between PostgreSQL
//! majors (12 to 18) is decided in one place, [`PgMajor`] (`version.rs`).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

mod conn;
mod control;
mod files;
mod pg;
mod tls;
mod version;

pub use conn::connect_superuser;
pub use control::PgControl;
pub use pg::{live_postmaster_pid, quote_ident, quote_literal, Postgres};
pub use pgpilot_values::{BootstrapRecovery, CustomBootstrap, Lsn, MethodCommand, ReplicaMethod};
pub use version::PgMajor;

#[derive(Debug, thiserror::Error)]
pub enum PgError {
    /// A binary exited non-zero or could not be spawned.
    #[error("{command} failed: {detail}")]
    Command { command: String, detail: String },
    /// A query or connection failed.
    #[error("PostgreSQL query failed: {0}")]
    Sql(String),
    /// File system trouble in the data or config directory.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("timed out after {0:?}: {1}")]
    Timeout(Duration, String),
    #[error("{0}")]
    Invalid(String),
}

pub type Result<T> = std::result::Result<T, PgError>;

/// A role's credentials (from `postgresql.authentication.<role>`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Credentials {
    pub username: String,
    pub password: Option<String>,
    /// The role's libpq options (`sslmode`, `sslcert`, `sslkey`, `sslrootcert`, `sslcrl`,
    /// `sslcrldir`, `sslpassword`, `gssencmode`, `channel_binding`, `sslnegotiation`): used by
    /// the agent's own connections and written into every connection string for libpq tools.
    pub options: BTreeMap<String, String>,
}

/// Static settings of the local instance (from the local configuration).
#[derive(Debug, Clone)]
pub struct PgSettings {
    /// Member name: `application_name` in `primary_conninfo`, and the slot name source.
    pub name: String,
    /// Cluster name (`cluster_name` GUC).
    pub scope: String,
    pub data_dir: PathBuf,
    /// Where postgresql.conf / pg_hba.conf are written (defaults to data_dir).
    pub config_dir: PathBuf,
    /// Directory of the PostgreSQL binaries; empty = rely on PATH.
    pub bin_dir: PathBuf,
    /// `listen_addresses` (comma list as in `postgresql.listen`).
    pub listen_addresses: String,
    pub port: u16,
    /// Host used for our own local connections: the first listen host (`127.0.0.1` for
    /// `*`/`0.0.0.0`), or a unix socket directory (an absolute path) with `use_unix_socket`.
    pub local_host: String,
    pub superuser: Credentials,
    pub replication: Credentials,
    pub rewind: Option<Credentials>,
    /// pgpass file written before pg_basebackup / pg_rewind / post_bootstrap.
    pub pgpass: PathBuf,
    pub pg_ctl_timeout: Duration,
}

/// What the data directory holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DataDirState {
    /// Absent or empty.
    Empty,
    /// Has PG_VERSION and global/pg_control.
    Initialized,
    /// Non-empty but not a usable cluster (reason for the log).
    Invalid(String),
}

/// Parsed `pg_controldata` output (only the fields the HA cycle needs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ControlData {
    /// `Database system identifier` as the decimal string Patroni stores in `/initialize`.
    pub system_identifier: String,
    /// `Database cluster state`: `in production`, `shut down`, `shut down in recovery`,
    /// `in crash recovery`, `in archive recovery`, `shutting down`, ...
    pub state: String,
    /// `Latest checkpoint's TimeLineID`.
    pub timeline: u32,
    /// `Latest checkpoint location`.
    pub checkpoint_lsn: Lsn,
    /// `Latest checkpoint's REDO location`.
    pub redo_lsn: Lsn,
    /// `Minimum recovery ending location`.
    pub min_recovery_lsn: Lsn,
    /// `Min recovery ending loc's timeline`.
    pub min_recovery_timeline: u32,
    pub wal_log_hints: bool,
    pub data_checksums: bool,
    /// Every `key: value` line, for anything else.
    pub raw: BTreeMap<String, String>,
}

/// How to stop PostgreSQL (`pg_ctl stop -m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopMode {
    Smart,
    Fast,
    Immediate,
}

/// One row of `pg_stat_replication` (the `replication` list of `/patroni`).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct WalSender {
    pub usename: Option<String>,
    pub application_name: String,
    pub client_addr: Option<String>,
    pub state: String,
    pub sync_state: String,
    pub sync_priority: i32,
    /// `write_lsn`, `flush_lsn`, `replay_lsn` (not part of `/patroni`).
    #[serde(skip)]
    pub write_lsn: Option<Lsn>,
    #[serde(skip)]
    pub flush_lsn: Option<Lsn>,
    #[serde(skip)]
    pub replay_lsn: Option<Lsn>,
}

impl WalSender {
    /// The position `synchronous_commit` waits for: `remote_apply` → replay, `remote_write` →
    /// write, else flush.
    pub fn sync_lsn(&self, synchronous_commit: &str) -> Lsn {
        match synchronous_commit {
            "remote_apply" => self.replay_lsn,
            "remote_write" => self.write_lsn,
            _ => self.flush_lsn,
        }
        .unwrap_or_default()
    }
}

/// The result of the one monitoring query run each cycle on a running instance.
#[derive(Debug, Clone, PartialEq)]
pub struct PgState {
    pub in_recovery: bool,
    /// `pg_postmaster_start_time()` as `YYYY-MM-DD HH:MM:SS.ffffff+TZ`.
    pub postmaster_start_time: String,
    pub server_version: i32,
    /// Primary: timeline of the current WAL file; replica: wal receiver's received_tli (or 0).
    pub timeline: u32,
    /// Primary: `pg_current_wal_flush_lsn()`.
    pub wal_flush_lsn: Option<Lsn>,
    /// Replica: `pg_last_wal_receive_lsn()` (written_lsn on PG13+ when streaming), replay LSN.
    pub receive_lsn: Option<Lsn>,
    pub replay_lsn: Option<Lsn>,
    /// `pg_last_xact_replay_timestamp()` rendered like `postmaster_start_time`.
    pub replay_timestamp: Option<String>,
    /// `pg_is_wal_replay_paused()`.
    pub replay_paused: bool,
    /// Replica: wal receiver streaming -> `streaming`; else `in archive recovery` if a
    /// restore_command is set; else None.
    pub replication_state: Option<String>,
    /// Upstream's last known end of WAL from the wal receiver (`latest_end_lsn`).
    pub latest_end_lsn: Option<Lsn>,
    pub replication: Vec<WalSender>,
    /// `synchronous_commit` of the instance.
    pub synchronous_commit: String,
    /// `pg_settings` rows with `pending_restart = true`: name -> (old/current value, new value).
    pub pending_restart: BTreeMap<String, (String, String)>,
}

impl PgState {
    /// The WAL position this member advertises: primary = flush LSN, replica = max(receive, replay).
    pub fn wal_position(&self) -> Lsn {
        if self.in_recovery {
            self.receive_lsn.max(self.replay_lsn).unwrap_or_default()
        } else {
            self.wal_flush_lsn.unwrap_or_default()
        }
    }
}

/// Where a replica streams from, or where pg_basebackup / pg_rewind read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub host: String,
    pub port: u16,
}

/// The managed configuration the HA cycle wants on disk. Rendering is deterministic so that an
/// unchanged desire writes nothing.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DesiredConfig {
    /// GUCs written to postgresql.conf after `include 'postgresql.base.conf'` (already merged:
    /// cluster-wide dynamic ones, local ones). listen_addresses, port, cluster_name, hot_standby
    /// are forced by [`Postgres::write_config`] from [`PgSettings`].
    pub parameters: BTreeMap<String, String>,
    /// Full pg_hba.conf lines.
    pub pg_hba: Vec<String>,
    /// `Some` = run as a standby (writes standby.signal + primary_conninfo,
    /// primary_slot_name, recovery_target_timeline='latest'); `None` = primary (removes them).
    pub standby: Option<StandbyConfig>,
    /// Only while a custom bootstrap's restored directory first starts: its recovery settings
    /// and signal file (or those the restore left), with `hot_standby` off when recovery ends
    /// in a promotion. [`BootstrapRecovery::None`] everywhere else.
    pub bootstrap_recovery: BootstrapRecovery,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct StandbyConfig {
    /// `None` = standby with no upstream (offline demotion).
    pub upstream: Option<Upstream>,
    /// `primary_slot_name`; None when use_slots is off.
    pub slot_name: Option<String>,
}

/// pg_hba.conf lines while a custom bootstrap's restored cluster first runs (see
/// `files::custom_bootstrap_hba`), with `local_host` resolved when it is a host name.
pub async fn custom_bootstrap_hba(s: &PgSettings) -> Vec<String> {
    let resolved: Vec<std::net::IpAddr> =
        if s.local_host.starts_with('/') || s.local_host.parse::<std::net::IpAddr>().is_ok() {
            Vec::new()
        } else {
            match tokio::net::lookup_host((s.local_host.as_str(), s.port)).await {
                Ok(addrs) => {
                    let mut ips: Vec<std::net::IpAddr> = addrs.map(|a| a.ip()).collect();
                    ips.sort();
                    ips.dedup();
                    ips
                }
                Err(e) => {
                    tracing::warn!("could not resolve {}: {e}", s.local_host);
                    Vec::new()
                }
            }
        };
    files::custom_bootstrap_hba(s, &resolved)
}

/// One row of `pg_replication_slots` as the agent reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotInfo {
    pub name: String,
    /// `physical` or `logical`.
    pub slot_type: String,
    pub database: Option<String>,
    pub plugin: Option<String>,
    pub active: bool,
    /// `confirmed_flush_lsn` (logical) or `restart_lsn` (physical), when set.
    pub lsn: Option<u64>,
    /// `xmin`, when set: a physical slot keeps the hot-standby feedback it last received.
    pub xmin: Option<u32>,
    /// `wal_status = 'lost'` (PostgreSQL 13+): WAL the slot needs was removed
    /// (`max_slot_wal_keep_size`), so it can serve nobody any more.
    pub lost: bool,
}

/// A logical slot of the primary, as copied onto a replica: its `pg_replslot/<name>/state`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogicalSlotState {
    pub name: String,
    pub database: String,
    pub plugin: String,
    pub state: Vec<u8>,
}

/// A change to the slots of this server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SlotChange {
    CreatePhysical(String),
    CreateLogical {
        name: String,
        database: String,
        plugin: String,
    },
    /// Only an inactive slot is dropped.
    Drop(String),
    /// `pg_replication_slot_advance` (on a standby PostgreSQL stops at the replayed position).
    Advance {
        name: String,
        lsn: u64,
    },
    /// `pg_replication_slot_advance` of a logical slot, from a connection to its database.
    AdvanceLogical {
        name: String,
        database: String,
        lsn: u64,
    },
}

/// Patroni's rule for replication slot names (`^[a-z0-9_]{1,63}$`): the names pgpilot creates,
/// accepts in `/config.slots`, and joins into a `pg_replslot` path.
pub fn valid_slot_name(name: &str) -> bool {
    (1..=63).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Physical slot name for a member (spec/ha-loop.md §5.9): lower-cased, `-` and `.` become `_`,
/// any other char becomes `u` + its decimal code point (`u%04d`), cut to 63 chars.
pub fn slot_name_for(member: &str) -> String {
    let mut out = String::new();
    for ch in member.to_lowercase().chars() {
        match ch {
            'a'..='z' | '0'..='9' | '_' => out.push(ch),
            '-' | '.' => out.push('_'),
            other => out.push_str(&format!("u{:04}", other as u32)),
        }
    }
    out.chars().take(63).collect()
}
