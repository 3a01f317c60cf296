//! What differs between PostgreSQL majors, in one place. The major comes from the data
//! directory's `PG_VERSION` or `postgres --version` of `bin_dir` before PostgreSQL runs, and
//! from `server_version_num` once it does ([`crate::Postgres::major`]); everything that
//! depends on it asks a method here. The facts are Patroni's (`postgresql/config.py`,
//! `postgresql/rewind.py`) and PostgreSQL's release notes. Supported: 12 and newer.

use std::collections::BTreeMap;
use std::fmt;

/// A PostgreSQL major version: 12, 13, ... (10 and later number majors by the first part).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PgMajor(pub u32);

impl fmt::Display for PgMajor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// libpq connection options and the first major whose libpq knows them (Patroni's
/// `AUTH_ALLOWED_PARAMETERS_VERSIONS`). A walreceiver given an option its libpq does not know
/// refuses the whole `primary_conninfo`.
const CONNINFO_OPTION_SINCE: &[(&str, u32)] = &[
    ("gssencmode", 12),
    ("channel_binding", 13),
    ("sslpassword", 13),
    ("sslcrldir", 14),
    ("sslcertmode", 16),
    ("sslnegotiation", 17),
];

/// The WAL segment size Patroni assumes when converting `wal_keep_segments` ↔ `wal_keep_size`
/// (the real one is in pg_control, but the point is only cross-version compatibility).
const SEGMENT_MB: u64 = 16;

impl PgMajor {
    /// The oldest major pgpilot runs (the `standby.signal` layout and recovery settings in
    /// postgresql.conf arrived with 12).
    pub const OLDEST: PgMajor = PgMajor(12);
    /// The newest major this code was tested with; assumed when nothing tells otherwise.
    pub const NEWEST: PgMajor = PgMajor(18);

    /// From `server_version_num` (`120022` → 12, `180001` → 18).
    pub fn from_version_num(num: i32) -> Option<PgMajor> {
        let num = u32::try_from(num).ok()?;
        (num >= 100_000).then_some(PgMajor(num / 10_000))
    }

    /// From the data directory's `PG_VERSION` (`"12\n"`; `"9.6"` for old ones).
    pub fn from_pg_version_file(text: &str) -> Option<PgMajor> {
        parse_major(text.trim())
    }

    /// From `postgres --version`: `postgres (PostgreSQL) 12.22`,
    /// `postgres (PostgreSQL) 15.14 (Debian 15.14-0+deb12u1)`, `... 18beta1`.
    pub fn from_version_output(text: &str) -> Option<PgMajor> {
        let (_, rest) = text.split_once("(PostgreSQL)")?;
        parse_major(rest.split_whitespace().next()?)
    }

    /// `wal_keep_size` (13+) instead of `wal_keep_segments` (12 and older).
    pub fn keeps_wal_by_size(self) -> bool {
        self.0 >= 13
    }

    /// `pg_stat_get_wal_receiver()` has `written_lsn`/`flushed_lsn` (13+); 12 has
    /// `received_lsn` (what was flushed) only.
    pub fn wal_receiver_has_written_lsn(self) -> bool {
        self.0 >= 13
    }

    /// `primary_conninfo` and `primary_slot_name` are read on reload (13+); on 12 a replica
    /// must restart to follow another upstream.
    pub fn reloads_primary_conninfo(self) -> bool {
        self.0 >= 13
    }

    /// Replication slots have the `failover` flag (17+): PostgreSQL synchronises those to
    /// standbys itself, so pgpilot does not copy them.
    pub fn has_failover_slots(self) -> bool {
        self.0 >= 17
    }

    /// Whether this major's libpq knows the connection option `key`.
    pub fn knows_conninfo_option(self, key: &str) -> bool {
        CONNINFO_OPTION_SINCE
            .iter()
            .find(|(k, _)| *k == key)
            .is_none_or(|(_, since)| self.0 >= *since)
    }

    /// The options Patroni adds to pg_rewind, given whether a `restore_command` is set and
    /// whether postgresql.conf lives outside the data directory: `--restore-target-wal` from
    /// 13 (before 15 only when postgresql.conf is in the data directory, where pg_rewind looks
    /// for restore_command), with `--config-file` from 15 when it is elsewhere.
    pub fn rewind_options(
        self,
        restore_command: bool,
        config_file_outside: Option<&std::path::Path>,
    ) -> Vec<String> {
        let can_restore =
            restore_command && (self.0 >= 15 || (self.0 >= 13 && config_file_outside.is_none()));
        let mut out = Vec::new();
        if can_restore {
            out.push("--restore-target-wal".to_string());
            if let Some(conf) = config_file_outside {
                out.push(format!("--config-file={}", conf.display()));
            }
        }
        out
    }

    /// Rewrites the merged parameters for this major (Patroni's conversion): on 13+
    /// `wal_keep_segments` is dropped and becomes `wal_keep_size` (segments × 16MB) unless that
    /// is set; before 13 `wal_keep_size` is dropped and becomes `wal_keep_segments`
    /// ((MB + 8) / 16) unless that is set.
    pub fn adapt_parameters(self, params: &mut BTreeMap<String, String>) {
        if self.keeps_wal_by_size() {
            if let Some(segments) = params.remove("wal_keep_segments") {
                if !params.contains_key("wal_keep_size") {
                    if let Ok(n) = segments.trim().parse::<u64>() {
                        params.insert("wal_keep_size".into(), format!("{}MB", n * SEGMENT_MB));
                    }
                }
            }
        } else if let Some(size) = params.remove("wal_keep_size") {
            if !params.contains_key("wal_keep_segments") {
                if let Some(mb) = parse_megabytes(&size) {
                    params.insert(
                        "wal_keep_segments".into(),
                        ((mb + SEGMENT_MB / 2) / SEGMENT_MB).to_string(),
                    );
                }
            }
        }
    }
}

/// `12`, `12.3`, `9.6`, `18beta1` → the major (`9.6` → 9: older than any supported one).
fn parse_major(s: &str) -> Option<PgMajor> {
    let digits: String = s.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok().map(PgMajor)
}

/// A size GUC in megabytes: a bare number is MB (`wal_keep_size`'s unit); kB, MB, GB, TB.
fn parse_megabytes(s: &str) -> Option<u64> {
    let s = s.trim().trim_matches('\'');
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().ok()?;
    match unit.trim() {
        "" | "MB" => Some(n),
        "kB" => Some(n / 1024),
        "GB" => Some(n * 1024),
        "TB" => Some(n * 1024 * 1024),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn major_from_every_source() {
        assert_eq!(PgMajor::from_version_num(120022), Some(PgMajor(12)));
        assert_eq!(PgMajor::from_version_num(180006), Some(PgMajor(18)));
        assert_eq!(PgMajor::from_version_num(90624), None);
        assert_eq!(PgMajor::from_pg_version_file("12\n"), Some(PgMajor(12)));
        assert_eq!(PgMajor::from_pg_version_file("9.6\n"), Some(PgMajor(9)));
        assert_eq!(PgMajor::from_pg_version_file(""), None);
        assert_eq!(
            PgMajor::from_version_output("postgres (PostgreSQL) 12.22\n"),
            Some(PgMajor(12))
        );
        assert_eq!(
            PgMajor::from_version_output("postgres (PostgreSQL) 15.14 (Debian 15.14-0+deb12u1)"),
            Some(PgMajor(15))
        );
        assert_eq!(
            PgMajor::from_version_output("postgres (PostgreSQL) 18beta1"),
            Some(PgMajor(18))
        );
        assert_eq!(PgMajor::from_version_output("garbage"), None);
    }

    fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    /// PostgreSQL 12 refuses to start with `wal_keep_size` in its configuration.
    #[test]
    fn wal_keep_size_becomes_segments_before_13() {
        let mut p = params(&[("wal_keep_size", "128MB"), ("max_connections", "100")]);
        PgMajor(12).adapt_parameters(&mut p);
        assert_eq!(
            p,
            params(&[("wal_keep_segments", "8"), ("max_connections", "100")])
        );
        let mut p = params(&[("wal_keep_size", "1GB")]);
        PgMajor(12).adapt_parameters(&mut p);
        assert_eq!(p, params(&[("wal_keep_segments", "64")]));
        // An explicit wal_keep_segments wins.
        let mut p = params(&[("wal_keep_size", "128MB"), ("wal_keep_segments", "3")]);
        PgMajor(12).adapt_parameters(&mut p);
        assert_eq!(p, params(&[("wal_keep_segments", "3")]));
    }

    #[test]
    fn wal_keep_segments_becomes_size_from_13() {
        for major in [13, 15, 18] {
            let mut p = params(&[("wal_keep_segments", "10")]);
            PgMajor(major).adapt_parameters(&mut p);
            assert_eq!(p, params(&[("wal_keep_size", "160MB")]));
            let mut p = params(&[("wal_keep_segments", "10"), ("wal_keep_size", "128MB")]);
            PgMajor(major).adapt_parameters(&mut p);
            assert_eq!(p, params(&[("wal_keep_size", "128MB")]));
        }
    }

    #[test]
    fn version_switches() {
        assert!(!PgMajor(16).has_failover_slots());
        assert!(PgMajor(17).has_failover_slots());
        assert!(!PgMajor(12).reloads_primary_conninfo());
        assert!(PgMajor(13).reloads_primary_conninfo());
        assert!(!PgMajor(12).wal_receiver_has_written_lsn());
        assert!(PgMajor(13).wal_receiver_has_written_lsn());
        assert!(!PgMajor(12).knows_conninfo_option("channel_binding"));
        assert!(PgMajor(12).knows_conninfo_option("gssencmode"));
        assert!(PgMajor(12).knows_conninfo_option("sslmode"));
        assert!(!PgMajor(16).knows_conninfo_option("sslnegotiation"));
        assert!(PgMajor(17).knows_conninfo_option("sslnegotiation"));
    }

    /// Patroni's pg_rewind options by major.
    #[test]
    fn rewind_options_by_major() {
        let conf = std::path::Path::new("/etc/pg/postgresql.conf");
        assert!(PgMajor(12).rewind_options(true, None).is_empty());
        assert!(PgMajor(15).rewind_options(false, Some(conf)).is_empty());
        assert_eq!(
            PgMajor(13).rewind_options(true, None),
            ["--restore-target-wal"]
        );
        assert!(PgMajor(14).rewind_options(true, Some(conf)).is_empty());
        assert_eq!(
            PgMajor(15).rewind_options(true, Some(conf)),
            [
                "--restore-target-wal",
                "--config-file=/etc/pg/postgresql.conf"
            ]
        );
        assert_eq!(
            PgMajor(18).rewind_options(true, None),
            ["--restore-target-wal"]
        );
    }
}
