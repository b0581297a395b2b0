//! Search time bounds (`earliest_time`, `latest_time`) in the forms Splunk takes: epoch seconds
//! with or without a fraction, ISO 8601 with or without fraction and offset (no offset: the
//! search user's time zone, UTC here), `%m/%d/%Y:%H:%M:%S`, and relative time modifiers
//! (`now`, `-24h`, `-7d@d`, `@w1`, `-1mon@mon+2d`).

use chrono::{DateTime, Datelike, Duration, Months, NaiveDate, NaiveDateTime, TimeZone, Utc};

use super::timefmt::{Micros, micros_from_epoch_secs};

/// Parses a time bound relative to `now`; `None` when Splunk would refuse it.
pub fn parse_time_arg(s: &str, now: Micros) -> Option<Micros> {
    let s = s.trim();
    if s.is_empty() {
        return None;
    }
    if let Ok(v) = s.parse::<f64>() {
        return micros_from_epoch_secs(v);
    }
    if let Ok(d) = DateTime::parse_from_rfc3339(s) {
        return Some(d.timestamp_micros());
    }
    for fmt in ["%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%z"] {
        if let Ok(d) = DateTime::parse_from_str(s, fmt) {
            return Some(d.timestamp_micros());
        }
    }
    for fmt in [
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M",
        "%m/%d/%Y:%H:%M:%S",
    ] {
        if let Ok(n) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(n.and_utc().timestamp_micros());
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        return Some(d.and_hms_opt(0, 0, 0)?.and_utc().timestamp_micros());
    }
    relative(s, Utc.timestamp_micros(now).single()?).map(|t| t.timestamp_micros())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Unit {
    Second,
    Minute,
    Hour,
    Day,
    Week,
    Month,
    Quarter,
    Year,
}

fn unit(name: &str) -> Option<Unit> {
    Some(match name {
        "s" | "sec" | "secs" | "second" | "seconds" => Unit::Second,
        "m" | "min" | "mins" | "minute" | "minutes" => Unit::Minute,
        "h" | "hr" | "hrs" | "hour" | "hours" => Unit::Hour,
        "d" | "day" | "days" => Unit::Day,
        "w" | "week" | "weeks" => Unit::Week,
        "mon" | "month" | "months" => Unit::Month,
        "q" | "qtr" | "qtrs" | "quarter" | "quarters" => Unit::Quarter,
        "y" | "yr" | "yrs" | "year" | "years" => Unit::Year,
        _ => return None,
    })
}

/// `now`, or offsets (`-1d`, `+2h`, `-mon`), an optional snap (`@d`, `@w1`) and more offsets.
fn relative(s: &str, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
    if s == "now" {
        return Some(now);
    }
    let mut t = now;
    let mut rest = s;
    let mut snapped = false;
    while !rest.is_empty() {
        let (sign, body) = match rest.as_bytes()[0] {
            b'+' => (1i64, &rest[1..]),
            b'-' => (-1i64, &rest[1..]),
            b'@' if !snapped => {
                snapped = true;
                let body = &rest[1..];
                let end = body.find(['+', '-']).unwrap_or(body.len());
                t = snap(t, &body[..end])?;
                rest = &body[end..];
                continue;
            }
            _ => return None,
        };
        let digits = body.bytes().take_while(u8::is_ascii_digit).count();
        let amount: i64 = if digits == 0 {
            1
        } else {
            body[..digits].parse().ok()?
        };
        let after = &body[digits..];
        let end = after.find(['+', '-', '@']).unwrap_or(after.len());
        t = shift(t, sign * amount, unit(&after[..end])?)?;
        rest = &after[end..];
    }
    Some(t)
}

fn shift(t: DateTime<Utc>, n: i64, unit: Unit) -> Option<DateTime<Utc>> {
    let months = |m: i64| -> Option<DateTime<Utc>> {
        let abs = Months::new(u32::try_from(m.unsigned_abs()).ok()?);
        if m >= 0 {
            t.checked_add_months(abs)
        } else {
            t.checked_sub_months(abs)
        }
    };
    match unit {
        Unit::Second => t.checked_add_signed(Duration::try_seconds(n)?),
        Unit::Minute => t.checked_add_signed(Duration::try_minutes(n)?),
        Unit::Hour => t.checked_add_signed(Duration::try_hours(n)?),
        Unit::Day => t.checked_add_signed(Duration::try_days(n)?),
        Unit::Week => t.checked_add_signed(Duration::try_weeks(n)?),
        Unit::Month => months(n),
        Unit::Quarter => months(n.checked_mul(3)?),
        Unit::Year => months(n.checked_mul(12)?),
    }
}

/// Rounds down to the start of the unit; `w0`..`w7` snap to that weekday (0 and 7: Sunday).
fn snap(t: DateTime<Utc>, spec: &str) -> Option<DateTime<Utc>> {
    let day = t.date_naive();
    let midnight = |d: NaiveDate| d.and_hms_opt(0, 0, 0).map(|n| n.and_utc());
    if let Some(weekday) = spec.strip_prefix('w').filter(|w| !w.is_empty()) {
        let target: u32 = weekday.parse().ok().filter(|w| *w <= 7)?;
        let back = (day.weekday().num_days_from_sunday() + 7 - target % 7) % 7;
        return midnight(day - Duration::days(back.into()));
    }
    let secs = t.timestamp();
    match unit(spec)? {
        Unit::Second => Utc.timestamp_opt(secs, 0).single(),
        Unit::Minute => Utc.timestamp_opt(secs - secs.rem_euclid(60), 0).single(),
        Unit::Hour => Utc.timestamp_opt(secs - secs.rem_euclid(3600), 0).single(),
        Unit::Day => midnight(day),
        Unit::Week => snap(t, "w0"),
        Unit::Month => midnight(day.with_day(1)?),
        Unit::Quarter => midnight(NaiveDate::from_ymd_opt(
            day.year(),
            (day.month0() / 3) * 3 + 1,
            1,
        )?),
        Unit::Year => midnight(NaiveDate::from_ymd_opt(day.year(), 1, 1)?),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Micros {
        DateTime::parse_from_rfc3339(s).unwrap().timestamp_micros()
    }

    /// Wednesday 2024-03-13 15:47:12.5 UTC.
    const NOW: &str = "2024-03-13T15:47:12.5Z";

    fn parse(s: &str) -> Option<Micros> {
        parse_time_arg(s, at(NOW))
    }

    #[test]
    fn absolute_forms() {
        let want = Some(at("2024-01-01T00:00:00Z"));
        for s in [
            "1704067200",
            "1704067200.000",
            "2024-01-01T00:00:00Z",
            "2024-01-01T00:00:00",
            "2024-01-01T00:00:00.000",
            "2024-01-01 00:00:00",
            "2024-01-01T01:00:00+01:00",
            "2024-01-01T01:00:00.000+0100",
            "01/01/2024:00:00:00",
            "2024-01-01",
        ] {
            assert_eq!(parse(s), want, "{s}");
        }
        assert_eq!(parse("1704067200.25"), Some(at("2024-01-01T00:00:00.25Z")));
        assert_eq!(
            parse("2024-01-01T00:00:00.123456"),
            Some(at("2024-01-01T00:00:00.123456Z"))
        );
    }

    #[test]
    fn relative_modifiers() {
        assert_eq!(parse("now"), Some(at(NOW)));
        assert_eq!(parse("-24h"), Some(at("2024-03-12T15:47:12.5Z")));
        assert_eq!(parse("-1d@d"), Some(at("2024-03-12T00:00:00Z")));
        assert_eq!(parse("@d"), Some(at("2024-03-13T00:00:00Z")));
        assert_eq!(parse("-15m"), Some(at("2024-03-13T15:32:12.5Z")));
        assert_eq!(parse("-h"), Some(at("2024-03-13T14:47:12.5Z")));
        assert_eq!(parse("+2hours"), Some(at("2024-03-13T17:47:12.5Z")));
        assert_eq!(parse("@w0"), Some(at("2024-03-10T00:00:00Z")));
        assert_eq!(parse("@w1"), Some(at("2024-03-11T00:00:00Z")));
        assert_eq!(parse("@w3"), Some(at("2024-03-13T00:00:00Z")));
        assert_eq!(parse("-1mon@mon"), Some(at("2024-02-01T00:00:00Z")));
        assert_eq!(parse("@mon+2d"), Some(at("2024-03-03T00:00:00Z")));
        assert_eq!(parse("@d-2h"), Some(at("2024-03-12T22:00:00Z")));
        assert_eq!(parse("@q"), Some(at("2024-01-01T00:00:00Z")));
        assert_eq!(parse("-1y@y"), Some(at("2023-01-01T00:00:00Z")));
        assert_eq!(parse("-7d@h"), Some(at("2024-03-06T15:00:00Z")));
    }

    #[test]
    fn refused_forms() {
        for s in [
            "",
            "yesterday",
            "-1x",
            "1d",
            "@",
            "@w8",
            "-1d@d@h",
            "2024-13-01T00:00:00",
            "NaN",
            "now-1d",
        ] {
            assert_eq!(parse(s), None, "{s:?}");
        }
    }
}
