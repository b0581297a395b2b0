//! Time handling: Splunk's `_time` text, parsing event timestamps and SPL `strftime`.

use chrono::format::{Item, StrftimeItems};
use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};

/// Microseconds since the Unix epoch: the emulator's only internal time unit.
pub type Micros = i64;

/// Days since 1970-01-01 to a civil date (proleptic Gregorian), without allocating.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn push_digits(buf: &mut Vec<u8>, v: u64, width: usize) {
    let mut tmp = [b'0'; 20];
    let mut n = v;
    let mut i = tmp.len();
    while n > 0 || tmp.len() - i < width {
        i -= 1;
        tmp[i] = b'0' + (n % 10) as u8;
        n /= 10;
    }
    buf.extend_from_slice(&tmp[i..]);
}

/// Writes `YYYY-MM-DDTHH:MM:SS.` followed by `frac_digits` (3 or 6) fraction digits and `+00:00`.
pub fn write_iso(buf: &mut Vec<u8>, t: Micros, frac_digits: u32) {
    let secs = t.div_euclid(1_000_000);
    let micros = t.rem_euclid(1_000_000) as u64;
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let sod = secs.rem_euclid(86_400) as u64;
    push_digits(buf, y.max(0) as u64, 4);
    buf.push(b'-');
    push_digits(buf, m as u64, 2);
    buf.push(b'-');
    push_digits(buf, d as u64, 2);
    buf.push(b'T');
    push_digits(buf, sod / 3600, 2);
    buf.push(b':');
    push_digits(buf, (sod / 60) % 60, 2);
    buf.push(b':');
    push_digits(buf, sod % 60, 2);
    buf.push(b'.');
    if frac_digits == 6 {
        push_digits(buf, micros, 6);
    } else {
        push_digits(buf, micros / 1000, 3);
    }
    buf.extend_from_slice(b"+00:00");
}

/// Splunk's `_time` rendering in results: ISO 8601 with milliseconds and offset.
pub fn splunk_time(t: Micros) -> String {
    let mut buf = Vec::with_capacity(29);
    write_iso(&mut buf, t, 3);
    String::from_utf8(buf).unwrap_or_default()
}

/// Converts epoch seconds (possibly fractional) to micros.
pub fn micros_from_epoch_secs(secs: f64) -> Option<Micros> {
    if !secs.is_finite() || secs.abs() > 1e13 {
        return None;
    }
    Some((secs * 1_000_000.0).round() as Micros)
}

/// The timestamp an event carries in its `datetime` value (epoch number, numeric string or ISO 8601).
pub fn event_time(v: &serde_json::Value) -> Option<Micros> {
    match v {
        serde_json::Value::Number(n) => n.as_f64().and_then(micros_from_epoch_secs),
        serde_json::Value::String(s) => parse_datetime_text(s),
        _ => None,
    }
}

fn parse_datetime_text(s: &str) -> Option<Micros> {
    let s = s.trim();
    if let Ok(v) = s.parse::<f64>() {
        return micros_from_epoch_secs(v);
    }
    if let Ok(d) = DateTime::parse_from_rfc3339(s) {
        return Some(d.timestamp_micros());
    }
    // Python's `str(datetime)` and other offset-less forms are taken as UTC.
    for fmt in ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f"] {
        if let Ok(n) = NaiveDateTime::parse_from_str(s, fmt) {
            return Some(n.and_utc().timestamp_micros());
        }
    }
    for fmt in ["%Y-%m-%d %H:%M:%S%.f%z", "%Y-%m-%dT%H:%M:%S%.f%z"] {
        if let Ok(d) = DateTime::parse_from_str(s, fmt) {
            return Some(d.timestamp_micros());
        }
    }
    DateTime::parse_from_rfc2822(s)
        .ok()
        .map(|d| d.timestamp_micros())
}

/// A validated `strftime` format (Splunk's `%3N`/`%6N`/`%N` sub-second forms translated).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StrftimeFormat {
    text: String,
    /// Worked out once: counting asks for it once per event.
    granularity: Micros,
}

impl StrftimeFormat {
    /// Checks every specifier; `None` when one is unknown.
    pub fn parse(fmt: &str) -> Option<Self> {
        let translated = fmt
            .replace("%3N", "%3f")
            .replace("%6N", "%6f")
            .replace("%9N", "%9f")
            .replace("%N", "%3f")
            .replace("%Q", "%3f");
        if StrftimeItems::new(&translated).any(|i| matches!(i, Item::Error)) {
            return None;
        }
        Some(Self {
            granularity: granularity_of(&translated),
            text: translated,
        })
    }

    /// The coarsest time step the format cannot tell apart (a day, an hour, a minute or a
    /// second), so results can be reused across events in the same step.
    pub fn granularity(&self) -> Micros {
        self.granularity
    }

    /// Formats a time in UTC.
    pub fn format(&self, t: Micros) -> String {
        match Utc.timestamp_micros(t).single() {
            Some(d) => d.format(&self.text).to_string(),
            None => String::new(),
        }
    }
}

fn granularity_of(format: &str) -> Micros {
    const SECOND: Micros = 1_000_000;
    let has = |spec: &str| format.contains(spec);
    if ["%f", "%3f", "%6f", "%9f", "%.f", "%s", "%c", "%+"]
        .iter()
        .any(|s| has(s))
    {
        1
    } else if ["%S", "%T", "%r", "%X"].iter().any(|s| has(s)) {
        SECOND
    } else if ["%M", "%R"].iter().any(|s| has(s)) {
        60 * SECOND
    } else if ["%H", "%I", "%k", "%l", "%p", "%P"].iter().any(|s| has(s)) {
        3600 * SECOND
    } else {
        86_400 * SECOND
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn splunk_time_shape() {
        assert_eq!(
            splunk_time(1_704_448_800_000_000),
            "2024-01-05T10:00:00.000+00:00"
        );
        assert_eq!(
            splunk_time(1_704_448_800_123_999),
            "2024-01-05T10:00:00.123+00:00"
        );
    }

    #[test]
    fn datetime_forms() {
        let want = Some(1_704_448_800_000_000);
        assert_eq!(event_time(&serde_json::json!(1_704_448_800)), want);
        assert_eq!(event_time(&serde_json::json!("1704448800")), want);
        assert_eq!(event_time(&serde_json::json!("2024-01-05T10:00:00Z")), want);
        assert_eq!(event_time(&serde_json::json!("2024-01-05 10:00:00")), want);
        assert_eq!(
            event_time(&serde_json::json!("2024-01-05T11:00:00+01:00")),
            want
        );
        assert_eq!(
            event_time(&serde_json::json!("Fri, 05 Jan 2024 10:00:00 -0000")),
            want
        );
        assert_eq!(event_time(&serde_json::json!("yesterday")), None);
    }

    #[test]
    fn strftime_validation() {
        let f = StrftimeFormat::parse("%Y-%m-%d %H:%M:%S").unwrap();
        assert_eq!(f.format(1_704_448_800_000_000), "2024-01-05 10:00:00");
        assert!(StrftimeFormat::parse("%Y-%!").is_none());
    }

    proptest! {
        #[test]
        fn write_iso_matches_chrono(t in -2_000_000_000_000_000i64..8_000_000_000_000_000i64) {
            let t = t.max(0);
            let mut buf = Vec::new();
            write_iso(&mut buf, t, 6);
            let want = Utc.timestamp_micros(t).unwrap().format("%Y-%m-%dT%H:%M:%S%.6f+00:00").to_string();
            prop_assert_eq!(String::from_utf8(buf).unwrap(), want);
        }
    }
}
