//! Timestamps as audit events and Splunk write them, parsed without allocating in the common
//! forms.

use chrono::{DateTime, NaiveDate, NaiveDateTime, NaiveTime, Utc};

/// Parses a timestamp: epoch seconds (integer or fraction, as text too), RFC 3339 / ISO 8601
/// with `Z`, `+hh:mm` or `+hhmm`, naive ISO 8601 (taken as UTC, with `T` or a space), or RFC 2822.
pub fn parse_timestamp(text: &str) -> Option<DateTime<Utc>> {
    let s = text.trim();
    if s.is_empty() {
        return None;
    }
    if s.bytes()
        .all(|b| b.is_ascii_digit() || b == b'.' || b == b'-')
    {
        return parse_epoch_text(s);
    }
    // Splunk's `_time` and Quay's `datetime` take this path; the general parsers below try
    // several patterns and each re-reads its format string.
    if let Some(t) = parse_iso_fast(s.as_bytes()) {
        return Some(t);
    }
    parse_general(s)
}

/// Every accepted form other than epoch seconds, through chrono's parsers.
pub(super) fn parse_general(s: &str) -> Option<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc));
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%z"] {
        if let Ok(t) = DateTime::parse_from_str(s, fmt) {
            return Some(t.with_timezone(&Utc));
        }
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%d %H:%M",
    ] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(s, fmt) {
            return Some(t.and_utc());
        }
    }
    if let Ok(t) = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return t.and_hms_opt(0, 0, 0).map(|t| t.and_utc());
    }
    DateTime::parse_from_rfc2822(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// `YYYY-MM-DD[T ]HH:MM:SS[.f{1,9}][Z|±hh:mm|±hhmm]` (no offset: UTC), read without
/// allocation; `None` for anything else, which the general parsers then handle.
pub(super) fn parse_iso_fast(b: &[u8]) -> Option<DateTime<Utc>> {
    fn number(digits: &[u8]) -> Option<u32> {
        digits.iter().try_fold(0u32, |n, &d| {
            d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
        })
    }
    let shape_ok = b.len() >= 19
        && b[4] == b'-'
        && b[7] == b'-'
        && matches!(b[10], b'T' | b' ')
        && b[13] == b':'
        && b[16] == b':';
    if !shape_ok {
        return None;
    }
    let date = NaiveDate::from_ymd_opt(
        i32::try_from(number(&b[..4])?).ok()?,
        number(&b[5..7])?,
        number(&b[8..10])?,
    )?;
    let mut rest = &b[19..];
    let mut nanos = 0u32;
    if let Some(after_dot) = rest.strip_prefix(b".") {
        let digits = after_dot.iter().take_while(|d| d.is_ascii_digit()).count();
        if digits == 0 || digits > 9 {
            return None;
        }
        nanos = number(&after_dot[..digits])? * 10u32.pow(9 - digits as u32);
        rest = &after_dot[digits..];
    }
    let time = NaiveTime::from_hms_nano_opt(
        number(&b[11..13])?,
        number(&b[14..16])?,
        number(&b[17..19])?,
        nanos,
    )?;
    let east_seconds = match rest {
        [] | [b'Z'] => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] | [sign @ (b'+' | b'-'), h1, h2, m1, m2] => {
            let (hours, minutes) = (number(&[*h1, *h2])?, number(&[*m1, *m2])?);
            if hours > 23 || minutes > 59 {
                return None;
            }
            let seconds = i64::from(hours * 3600 + minutes * 60);
            if *sign == b'-' { -seconds } else { seconds }
        }
        _ => return None,
    };
    let local = NaiveDateTime::new(date, time);
    if east_seconds == 0 {
        return Some(local.and_utc());
    }
    Some((local - chrono::Duration::seconds(east_seconds)).and_utc())
}

/// Epoch seconds written as text, parsed exactly (no float rounding of the fraction).
fn parse_epoch_text(s: &str) -> Option<DateTime<Utc>> {
    let (negative, unsigned) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (int, frac) = unsigned.split_once('.').unwrap_or((unsigned, ""));
    let digits_only = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    if !digits_only(int) || !digits_only(frac) || (int.is_empty() && frac.is_empty()) {
        return None;
    }
    let secs: i64 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let digits = &frac[..frac.len().min(9)];
    let nanos: u32 = if digits.is_empty() {
        0
    } else {
        format!("{digits:0<9}").parse().ok()?
    };
    if negative {
        epoch(-secs, nanos, true)
    } else {
        epoch(secs, nanos, false)
    }
}

/// An epoch value from a JSON number.
pub(crate) fn epoch_from_f64(v: f64) -> Option<DateTime<Utc>> {
    if !v.is_finite() {
        return None;
    }
    let secs = v.floor();
    let nanos = (((v - secs) * 1e9).round() as u32).min(999_999_999);
    if secs.abs() > 1e15 {
        return None;
    }
    DateTime::from_timestamp(secs as i64, nanos)
}

fn epoch(secs: i64, nanos: u32, negative: bool) -> Option<DateTime<Utc>> {
    if negative && nanos > 0 {
        DateTime::from_timestamp(secs - 1, 1_000_000_000 - nanos)
    } else {
        DateTime::from_timestamp(secs, nanos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    proptest::proptest! {
        /// The allocation-free ISO reader agrees with chrono's parsers wherever it answers.
        #[test]
        fn fast_iso_agrees_with_the_general_parsers(
            s in "[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{0,10})?(Z|[+-][0-9]{2}:?[0-9]{2})?",
        ) {
            if let Some(fast) = parse_iso_fast(s.as_bytes()) {
                proptest::prop_assert_eq!(Some(fast), parse_general(&s), "{}", s);
            }
        }
    }

    #[test]
    fn fast_iso_reads_splunk_and_quay_forms() {
        for (text, want) in [
            ("2024-06-18T18:59:13.000+00:00", "2024-06-18T18:59:13Z"),
            ("2024-06-18T20:59:13.250+02:00", "2024-06-18T18:59:13.25Z"),
            ("2024-06-18 18:59:13.123456", "2024-06-18T18:59:13.123456Z"),
            ("2024-06-18T13:59:13-0500", "2024-06-18T18:59:13Z"),
            ("2024-06-18T18:59:13Z", "2024-06-18T18:59:13Z"),
        ] {
            assert_eq!(parse_iso_fast(text.as_bytes()), Some(t(want)), "{text}");
        }
        for other in [
            "2024-06-18T18:59",
            "2024-02-30T00:00:00",
            "2024-06-18T18:59:60Z",
        ] {
            assert_eq!(parse_iso_fast(other.as_bytes()), None, "{other}");
        }
    }
}
