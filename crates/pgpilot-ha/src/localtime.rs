//! Local time for log lines and the published `xlog` stamps, without jiff's time zone database.
//!
//! `jiff::ZonedDateTime::now()` finds the system time zone through jiff's database, which lists
//! every name under `/usr/share/zoneinfo` (about 600) the first time it is used and keeps the list
//! for the life of the process: about 110 KiB of heap in the agent and as much in its guard, all
//! of it to name the zone, which no timestamp pgpilot writes shows. [`local_zone`] reads the same
//! TZif file jiff would (`TZ`, else `/etc/localtime`) once, like Python's `time.localtime` after
//! `tzset()` at start; whatever it can not read falls back to `jiff::tz::TimeZone::system()`.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use jiff::tz::TimeZone;
use jiff::{Timestamp, ZonedDateTime};

/// Now, in [`local_zone`].
pub fn local_now() -> ZonedDateTime {
    Timestamp::now().to_zoned_datetime(local_zone().clone())
}

/// The local time zone, found once (see the module docs).
pub fn local_zone() -> &'static TimeZone {
    static ZONE: OnceLock<TimeZone> = OnceLock::new();
    ZONE.get_or_init(|| {
        find(std::env::var_os("TZ").as_deref(), &zoneinfo_dir()).unwrap_or_else(TimeZone::system)
    })
}

/// Where named zones are: `TZDIR`, as jiff reads it, else the usual place.
fn zoneinfo_dir() -> PathBuf {
    std::env::var_os("TZDIR")
        .filter(|d| !d.is_empty())
        .map_or_else(|| PathBuf::from("/usr/share/zoneinfo"), PathBuf::from)
}

/// The zone `TZ` (or, unset, `/etc/localtime`) names, as jiff reads it: empty is UTC; a POSIX
/// rule (`EST5EDT,M3.2.0,M11.1.0`) is that rule unless it starts with `:`; an absolute path is
/// that TZif file; anything else is a name under `zoneinfo`. `None` for what is left to jiff
/// (a relative path, an unreadable or invalid file, a value that is not UTF-8).
fn find(tz: Option<&std::ffi::OsStr>, zoneinfo: &Path) -> Option<TimeZone> {
    let Some(tz) = tz else {
        return tzif(Path::new("/etc/localtime"));
    };
    if tz.is_empty() {
        return Some(TimeZone::UTC);
    }
    let tz = tz.to_str()?;
    let spec = match tz.strip_prefix(':') {
        Some(spec) => spec,
        None => {
            if let Ok(rule) = TimeZone::posix(tz) {
                return Some(rule);
            }
            tz
        }
    };
    if spec.starts_with('/') {
        return tzif(Path::new(spec));
    }
    if spec.is_empty()
        || spec
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return None;
    }
    tzif(&zoneinfo.join(spec))
}

/// The TZif file at `path`, named after the part below `zoneinfo/` of its path or, a symbolic
/// link, of the link's target, as jiff names it.
fn tzif(path: &Path) -> Option<TimeZone> {
    let data = std::fs::read(path).ok()?;
    let named = std::fs::read_link(path).unwrap_or_else(|_| path.to_path_buf());
    let name = named
        .to_str()
        .and_then(|p| p.rsplit_once("zoneinfo/"))
        .map_or("Local", |(_, name)| name);
    TimeZone::tzif(name, &data).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::OsStr;

    #[test]
    fn empty_tz_is_utc() {
        assert_eq!(
            find(Some(OsStr::new("")), Path::new("/nonexistent")),
            Some(TimeZone::UTC)
        );
    }

    #[test]
    fn posix_rule() {
        let tz = find(Some(OsStr::new("EST5EDT,M3.2.0,M11.1.0")), Path::new("/x")).unwrap();
        let winter: Timestamp = "2026-01-15T12:00:00Z".parse().unwrap();
        let summer: Timestamp = "2026-07-15T12:00:00Z".parse().unwrap();
        assert_eq!(tz.to_offset(winter).seconds(), -5 * 3600);
        assert_eq!(tz.to_offset(summer).seconds(), -4 * 3600);
    }

    #[test]
    fn names_and_paths_as_jiff_reads_them() {
        let zoneinfo = Path::new("/usr/share/zoneinfo");
        if !zoneinfo.join("Europe/Berlin").is_file() {
            return; // no tzdata here
        }
        let summer: Timestamp = "2026-07-15T12:00:00Z".parse().unwrap();
        for spec in [
            "Europe/Berlin",
            ":Europe/Berlin",
            "/usr/share/zoneinfo/Europe/Berlin",
            ":/usr/share/zoneinfo/Europe/Berlin",
        ] {
            let tz = find(Some(OsStr::new(spec)), zoneinfo).unwrap();
            assert_eq!(tz.to_offset(summer).seconds(), 2 * 3600, "{spec}");
            assert_eq!(tz.iana_name(), Some("Europe/Berlin"), "{spec}");
        }
        for spec in ["../etc/passwd", "Europe//Berlin", "relative/../x", ":"] {
            assert!(find(Some(OsStr::new(spec)), zoneinfo).is_none(), "{spec}");
        }
    }

    #[test]
    fn same_offset_as_jiff_for_this_process() {
        let now = Timestamp::now();
        assert_eq!(
            local_zone().to_offset(now),
            TimeZone::system().to_offset(now)
        );
    }
}
