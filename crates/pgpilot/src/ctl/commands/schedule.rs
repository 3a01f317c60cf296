//! Times as `patronictl` reads and prints them: the `--scheduled` timestamps of `restart` and
//! `switchover`, and the local-time stamps its output lines carry.

use anyhow::anyhow;

/// patronictl's `timestamp(precision)`: local time, `precision` digits of microseconds
/// (6 prints 5, as patronictl's slicing does; 0 prints none).
pub(super) fn timestamp(precision: usize) -> String {
    let now = jiff::ZonedDateTime::now();
    let base = now.strftime("%Y-%m-%d %H:%M:%S").to_string();
    if precision == 0 {
        return base;
    }
    let micros = format!("{:06}", now.subsec_nanosecond() / 1000);
    format!("{base}.{}", &micros[..precision - 1])
}

/// `parse_scheduled`: `None`/`now` mean immediately; naive timestamps get the local zone.
/// Returns Python's `isoformat()` of the parsed time.
pub(super) fn parse_scheduled(scheduled: Option<&str>) -> anyhow::Result<Option<String>> {
    let Some(s) = scheduled
        .map(str::trim)
        .filter(|s| !s.is_empty() && *s != "now")
    else {
        return Ok(None);
    };
    let err = || {
        anyhow!(
            "Unable to parse scheduled timestamp ({s}). It should be in an unambiguous format (e.g. ISO 8601)"
        )
    };
    // Split a trailing `Z` / `+HH:MM` / `-HHMM` / `+HH` offset from the civil part.
    let (civil, offset_secs) = split_offset(s);
    let dt: jiff::civil::DateTime = civil.trim().parse().map_err(|_| err())?;
    let offset = match offset_secs {
        Some(secs) => jiff::tz::Offset::from_seconds(secs).map_err(|_| err())?,
        None => dt
            .to_zoned_datetime(jiff::tz::TimeZone::system())
            .map_err(|_| err())?
            .offset(),
    };
    Ok(Some(isoformat(dt, offset)))
}

fn split_offset(s: &str) -> (&str, Option<i32>) {
    if let Some(c) = s.strip_suffix(['Z', 'z']) {
        return (c, Some(0));
    }
    // The offset starts at the last '+' or '-' after the time's 'T' or ' '.
    let time_start = s.find(['T', 't', ' ']).unwrap_or(s.len());
    let Some(pos) = s[time_start..].rfind(['+', '-']).map(|p| p + time_start) else {
        return (s, None);
    };
    let sign = if s.as_bytes()[pos] == b'-' { -1 } else { 1 };
    let digits: String = s[pos + 1..].chars().filter(char::is_ascii_digit).collect();
    let (h, m) = match digits.len() {
        1 | 2 => (digits.parse::<i32>().ok(), Some(0)),
        4 => (digits[..2].parse().ok(), digits[2..].parse().ok()),
        _ => (None, None),
    };
    match (h, m) {
        (Some(h), Some(m)) if s[pos + 1..].chars().all(|c| c.is_ascii_digit() || c == ':') => {
            (&s[..pos], Some(sign * (h * 3600 + m * 60)))
        }
        _ => (s, None),
    }
}

/// `datetime.isoformat()` of an aware datetime: microseconds only when non-zero.
fn isoformat(dt: jiff::civil::DateTime, offset: jiff::tz::Offset) -> String {
    let mut s = dt.strftime("%Y-%m-%dT%H:%M:%S").to_string();
    let micros = dt.subsec_nanosecond() / 1000;
    if micros != 0 {
        s.push_str(&format!(".{micros:06}"));
    }
    let secs = offset.seconds();
    let sign = if secs < 0 { '-' } else { '+' };
    let abs = secs.abs();
    s.push_str(&format!("{sign}{:02}:{:02}", abs / 3600, abs % 3600 / 60));
    s
}

pub(super) fn next_hour_example() -> String {
    let t = jiff::ZonedDateTime::now()
        .checked_add(jiff::SignedDuration::from_hours(1))
        .unwrap_or_else(|_| jiff::ZonedDateTime::now());
    t.strftime("%Y-%m-%dT%H:%M").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduled_timestamps() {
        assert_eq!(parse_scheduled(None).unwrap(), None);
        assert_eq!(parse_scheduled(Some("now")).unwrap(), None);
        assert_eq!(
            parse_scheduled(Some("2023-05-29T04:32:31-3"))
                .unwrap()
                .as_deref(),
            Some("2023-05-29T04:32:31-03:00")
        );
        assert_eq!(
            parse_scheduled(Some("2023-05-29T04:32:31.5Z"))
                .unwrap()
                .as_deref(),
            Some("2023-05-29T04:32:31.500000+00:00")
        );
        assert_eq!(
            parse_scheduled(Some("2023-05-29 04:32+02:00"))
                .unwrap()
                .as_deref(),
            Some("2023-05-29T04:32:00+02:00")
        );
        // Naive: the local zone is added.
        let local = parse_scheduled(Some("2023-05-29T04:32:31"))
            .unwrap()
            .unwrap();
        assert!(local.starts_with("2023-05-29T04:32:31"), "{local}");
        assert!(parse_scheduled(Some("tomorrow-ish")).is_err());
    }

    #[test]
    fn timestamps_have_patronictl_precision() {
        assert_eq!(timestamp(0).len(), 19);
        assert_eq!(timestamp(6).len(), 25);
    }
}
