//! Time conventions: every instant is Unix seconds (`i64`, UTC). The current time is always
//! injected by the caller (the adapter reads Envoy's clock, tests use a fixed value); nothing in
//! this crate reads the system clock.

use std::fmt;

/// Unix time in whole seconds, UTC.
pub type UnixSeconds = i64;

/// A source of the current time. The filter implements it over Envoy's clock; tests use
/// [`FixedClock`].
pub trait Clock {
    fn now(&self) -> UnixSeconds;
}

/// A clock that always reads the same instant (for tests and offline tools).
#[derive(Debug, Clone, Copy)]
pub struct FixedClock(pub UnixSeconds);

impl Clock for FixedClock {
    fn now(&self) -> UnixSeconds {
        self.0
    }
}

/// Why an RFC 3339 timestamp was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimestampError(&'static str);

impl fmt::Display for TimestampError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "not an RFC 3339 timestamp ({})", self.0)
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Inverse of [`days_from_civil`]: (year, month, day).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = if z >= 0 { z } else { z - 146_096 } / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

fn digits(s: &[u8], what: &'static str) -> Result<u32, TimestampError> {
    let mut v: u32 = 0;
    if s.is_empty() {
        return Err(TimestampError(what));
    }
    for &b in s {
        if !b.is_ascii_digit() {
            return Err(TimestampError(what));
        }
        v = v * 10 + u32::from(b - b'0');
    }
    Ok(v)
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`; the fraction is truncated to seconds.
pub fn parse_rfc3339(s: &str) -> Result<UnixSeconds, TimestampError> {
    let b = s.as_bytes();
    if b.len() < 20 {
        return Err(TimestampError("too short"));
    }
    let sep = |i: usize, c: &[u8]| b.get(i).is_some_and(|x| c.contains(x));
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
        return Err(TimestampError("expected YYYY-MM-DDTHH:MM:SS"));
    }
    let part = |a: usize, z: usize| b.get(a..z).unwrap_or_default();
    let year = i64::from(digits(part(0, 4), "year")?);
    let month = digits(part(5, 7), "month")?;
    let day = digits(part(8, 10), "day")?;
    let hour = digits(part(11, 13), "hour")?;
    let minute = digits(part(14, 16), "minute")?;
    let second = digits(part(17, 19), "second")?;
    if !(1..=12).contains(&month) || day == 0 || day > days_in_month(year, month) {
        return Err(TimestampError("no such date"));
    }
    if hour > 23 || minute > 59 || second > 60 {
        return Err(TimestampError("no such time of day"));
    }
    let mut rest = part(19, b.len());
    if rest.first() == Some(&b'.') {
        let n = rest
            .iter()
            .skip(1)
            .take_while(|c| c.is_ascii_digit())
            .count();
        if n == 0 {
            return Err(TimestampError("empty fraction"));
        }
        rest = rest.get(1 + n..).unwrap_or_default();
    }
    let offset: i64 = match rest {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let h = i64::from(digits(&[*h1, *h2], "offset hours")?);
            let m = i64::from(digits(&[*m1, *m2], "offset minutes")?);
            if h > 23 || m > 59 {
                return Err(TimestampError("offset out of range"));
            }
            let v = h * 3600 + m * 60;
            if *sign == b'+' {
                v
            } else {
                -v
            }
        }
        _ => return Err(TimestampError("expected Z or ±HH:MM after the time")),
    };
    let days = days_from_civil(year, month, day);
    let secs =
        days * 86_400 + i64::from(hour) * 3600 + i64::from(minute) * 60 + i64::from(second.min(59));
    Ok(secs - offset)
}

/// Formats as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn format_rfc3339(t: UnixSeconds) -> String {
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

/// Formats as an IMF-fixdate (RFC 9110), e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
pub fn format_http_date(t: UnixSeconds) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let days = t.div_euclid(86_400);
    let secs = t.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let weekday = DAYS
        .get(days.rem_euclid(7) as usize)
        .copied()
        .unwrap_or("Thu");
    let month = MONTHS
        .get((m as usize).wrapping_sub(1))
        .copied()
        .unwrap_or("Jan");
    format!(
        "{weekday}, {d:02} {month} {y:04} {:02}:{:02}:{:02} GMT",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_known_values() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_rfc3339("2026-12-03T15:35:15Z"), Ok(1_796_312_115));
        assert_eq!(format_rfc3339(1_796_312_115), "2026-12-03T15:35:15Z");
        assert_eq!(
            parse_rfc3339("2026-12-03T16:35:15.123+01:00"),
            Ok(1_796_312_115)
        );
        assert_eq!(
            parse_rfc3339("2024-02-29T00:00:00Z")
                .map(format_rfc3339)
                .as_deref(),
            Ok("2024-02-29T00:00:00Z")
        );
        assert_eq!(
            format_http_date(784_111_777),
            "Sun, 06 Nov 1994 08:49:37 GMT"
        );
        for t in [-86_401, 0, 951_782_400, 4_102_444_800] {
            assert_eq!(parse_rfc3339(&format_rfc3339(t)), Ok(t));
        }
    }

    #[test]
    fn refuses_malformed() {
        for s in [
            "",
            "2026-12-03",
            "2026-13-01T00:00:00Z",
            "2025-02-29T00:00:00Z",
            "2026-12-03T24:00:00Z",
            "2026-12-03T10:00:00",
            "2026-12-03T10:00:00+1:00",
            "2026-12-03T10:00:00.Z",
            "２026-12-03T10:00:00Z",
            "2026-12-03T10:00:00Zjunk",
        ] {
            assert!(parse_rfc3339(s).is_err(), "{s}");
        }
    }
}
