//! `version`: prints pgpilotctl's version (patronictl's when invoked as `patronictl`) and, for a
//! cluster, each member's Patroni and PostgreSQL versions (`patronictl version`).

/// `format_pg_version(160004)` -> `16.4`, `90624` -> `9.6.24`.
pub(super) fn format_pg_version(v: u64) -> String {
    if v < 100_000 {
        format!("{}.{}.{}", v / 10000, v / 100 % 100, v % 100)
    } else {
        format!("{}.{}", v / 10000, v % 100)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatted_pg_versions() {
        assert_eq!(format_pg_version(160004), "16.4");
        assert_eq!(format_pg_version(90624), "9.6.24");
        assert_eq!(format_pg_version(100000), "10.0");
    }
}
