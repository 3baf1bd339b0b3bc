//! Times, durations and sizes as users write them on command lines, in config files and in
//! query strings.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A value that is not a valid time, duration or size; the message says what is accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    #[error("invalid time {0:?}: use unix seconds, RFC 3339 (2026-12-01T03:12:00Z), `now`, or a relative time such as -30s, -15m, -2h, -7d")]
    Time(String),
    #[error("invalid duration {0:?}: use a number with a unit, such as 30s, 15m, 2h, 7d")]
    Duration(String),
    #[error("invalid size {0:?}: use bytes or a number with KiB, MiB, GiB or TiB, such as 500MiB")]
    Size(String),
}

/// Milliseconds since the unix epoch (0 before it).
pub fn unix_millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A duration such as `30s`, `15m`, `2h`, `7d`, `1h30m` (humantime's syntax). A bare number
/// is refused: whether it means seconds or days is a guess.
pub fn parse_duration(s: &str) -> Result<Duration, UnitError> {
    let t = s.trim();
    if t.is_empty() || t.bytes().all(|b| b.is_ascii_digit()) || t.len() > 64 {
        return Err(UnitError::Duration(s.to_string()));
    }
    humantime::parse_duration(t).map_err(|_| UnitError::Duration(s.to_string()))
}

/// A size in bytes: `1073741824`, `500MiB`, `1GiB`, `64 KiB`. Decimal prefixes (`MB`) are
/// refused rather than guessed.
pub fn parse_size(s: &str) -> Result<u64, UnitError> {
    let err = || UnitError::Size(s.to_string());
    let t = s.trim();
    let digits = t.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return Err(err());
    }
    let n: u64 = t[..digits].parse().map_err(|_| err())?;
    let shift = match t[digits..].trim() {
        "" | "B" => 0,
        "KiB" => 10,
        "MiB" => 20,
        "GiB" => 30,
        "TiB" => 40,
        _ => return Err(err()),
    };
    n.checked_mul(1u64 << shift).ok_or_else(err)
}

/// A point in time: unix seconds (`1764559920`, fractions allowed), RFC 3339
/// (`2026-12-01T03:12:00Z`, `2026-12-01T04:12:00+01:00`, `2026-12-01 03:12:00`), `now`, or
/// relative to `now` (`-30s`, `-15m`, `-2h`, `-7d`).
pub fn parse_time(s: &str, now: SystemTime) -> Result<SystemTime, UnitError> {
    let err = || UnitError::Time(s.to_string());
    let t = s.trim();
    if t.len() > 64 {
        return Err(err());
    }
    if t == "now" {
        return Ok(now);
    }
    if let Some(rel) = t.strip_prefix('-') {
        let d = parse_duration(rel).map_err(|_| err())?;
        return now.checked_sub(d).ok_or_else(err);
    }
    if !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        let secs: f64 = t.parse().map_err(|_| err())?;
        if !secs.is_finite() || secs > 1e12 {
            return Err(err());
        }
        return UNIX_EPOCH
            .checked_add(Duration::from_secs_f64(secs))
            .ok_or_else(err);
    }
    parse_rfc3339(t).ok_or_else(err)
}

/// RFC 3339 with `Z`, a numeric offset, or none (UTC).
fn parse_rfc3339(t: &str) -> Option<SystemTime> {
    let (base, offset_secs) = split_offset(t)?;
    let at = humantime::parse_rfc3339_weak(base).ok()?;
    if offset_secs >= 0 {
        at.checked_sub(Duration::from_secs(offset_secs as u64))
    } else {
        at.checked_add(Duration::from_secs(offset_secs.unsigned_abs()))
    }
}

/// The time without its zone, and the zone's offset east of UTC in seconds.
fn split_offset(t: &str) -> Option<(&str, i64)> {
    if let Some(base) = t.strip_suffix('Z').or_else(|| t.strip_suffix('z')) {
        return Some((base, 0));
    }
    // `+HH:MM` / `-HH:MM` after the time part (a date's own dashes come before the `T`).
    let tail_at = t.len().checked_sub(6)?;
    let tail = t.get(tail_at..)?;
    let b = tail.as_bytes();
    if t.len() > 16 && (b[0] == b'+' || b[0] == b'-') && b[3] == b':' {
        let hours: i64 = tail.get(1..3)?.parse().ok()?;
        let minutes: i64 = tail.get(4..6)?.parse().ok()?;
        if hours > 23 || minutes > 59 {
            return None;
        }
        let secs = hours * 3600 + minutes * 60;
        return Some((&t[..tail_at], if b[0] == b'-' { -secs } else { secs }));
    }
    Some((t, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn times_in_every_accepted_form() {
        let now = at(1_764_560_000);
        assert_eq!(parse_time("now", now), Ok(now));
        assert_eq!(parse_time("-30s", now), Ok(at(1_764_560_000 - 30)));
        assert_eq!(parse_time("-15m", now), Ok(at(1_764_560_000 - 900)));
        assert_eq!(parse_time("-2h", now), Ok(at(1_764_560_000 - 7200)));
        assert_eq!(parse_time("-7d", now), Ok(at(1_764_560_000 - 7 * 86400)));
        assert_eq!(parse_time("1764559920", now), Ok(at(1_764_559_920)));
        assert_eq!(
            parse_time("1764559920.5", now),
            Ok(at(1_764_559_920) + Duration::from_millis(500))
        );
        // 2026-12-01T03:12:00Z
        let t = at(1_796_094_720);
        assert_eq!(parse_time("2026-12-01T03:12:00Z", now), Ok(t));
        assert_eq!(parse_time("2026-12-01T04:12:00+01:00", now), Ok(t));
        assert_eq!(parse_time("2026-11-30T22:12:00-05:00", now), Ok(t));
        assert_eq!(parse_time("2026-12-01 03:12:00", now), Ok(t));
    }

    #[test]
    fn bad_times_are_refused_with_what_is_accepted() {
        let now = at(1_764_560_000);
        for bad in [
            "",
            "yesterday",
            "-",
            "-5",
            "-5x",
            "2026-13-01T00:00:00Z",
            "1e99",
            "..",
            "+3h",
        ] {
            let e = parse_time(bad, now).unwrap_err();
            assert!(e.to_string().contains("RFC 3339"), "{bad}: {e}");
        }
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86400)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        for bad in ["", "7", "seven days", "-3s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("500MiB"), Ok(500 << 20));
        assert_eq!(parse_size("64 KiB"), Ok(64 << 10));
        assert_eq!(parse_size("4096"), Ok(4096));
        for bad in ["", "1GB", "GiB", "-1GiB", "1.5GiB", "99999999999999TiB"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
