//! Maps one Splunk result row to the registry's log object (SPEC §5), parsing in place.

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::Row;
use super::avatar::avatar;
use super::fields::{Fields, Metadata, Scalar};

use crate::domain::{LogEntry, PerformerInfo};

/// Why a row could not become a log entry; the caller counts and skips it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SkipReason {
    /// The row is not a JSON object.
    #[error("the Splunk row is not a JSON object")]
    Malformed,
    /// Neither `_raw` nor the extracted fields name the event's kind.
    #[error("the Splunk event has no kind")]
    NoKind,
    /// Neither `datetime` nor `_time` holds a usable timestamp.
    #[error("the Splunk event has no usable timestamp")]
    NoTimestamp,
}

/// Maps a result row: fields from the `_raw` JSON event first, Splunk's extracted top-level
/// fields as fallback, `_time` as the fallback timestamp. Never panics on any input.
pub fn map_row(row: &Row) -> Result<LogEntry, SkipReason> {
    let mut top: Fields<'_> =
        serde_json::from_slice(row.as_bytes()).map_err(|_| SkipReason::Malformed)?;
    // Taken, not cloned: `_raw` is usually the largest allocation of a row.
    let raw_text: Option<Cow<'_, str>> = match top.raw.take() {
        Some(Scalar::Str(s)) if s.trim_start().starts_with('{') => Some(s),
        _ => None,
    };
    // A `_raw` that is not JSON (or not an object) leaves only the extracted fields.
    // Only objects reach here: `raw_text` starts with `{` and rows are checked when made.
    let inner: Fields<'_> = match &raw_text {
        Some(text) => serde_json::from_str(text).unwrap_or_default(),
        None => Fields::default(),
    };
    map_fields(&inner, &top)
}

/// Maps one Quay audit event given as a JSON object (e.g. an NDJSON line), without Splunk's
/// envelope.
pub fn map_event_json(event: &str) -> Result<LogEntry, SkipReason> {
    // Derived struct deserializers also accept arrays; an event must be an object.
    if !event.trim_start().starts_with('{') {
        return Err(SkipReason::Malformed);
    }
    let fields: Fields<'_> = serde_json::from_str(event).map_err(|_| SkipReason::Malformed)?;
    map_fields(&fields, &Fields::default())
}

fn map_fields(inner: &Fields<'_>, top: &Fields<'_>) -> Result<LogEntry, SkipReason> {
    let text = |a: &Option<Scalar<'_>>, b: &Option<Scalar<'_>>| -> Option<String> {
        a.as_ref()
            .and_then(Scalar::text)
            .or_else(|| b.as_ref().and_then(Scalar::text))
            .map(Cow::into_owned)
    };
    let kind = text(&inner.kind, &top.kind).ok_or(SkipReason::NoKind)?;
    let datetime = [&inner.datetime, &top.datetime, &inner.time, &top.time]
        .into_iter()
        .find_map(|s| s.as_ref().and_then(Scalar::timestamp))
        .ok_or(SkipReason::NoTimestamp)?;
    let metadata = [
        &inner.metadata_json,
        &inner.metadata,
        &top.metadata_json,
        &top.metadata,
    ]
    .into_iter()
    // Parsed only here, and only until one candidate holds an object.
    .find_map(|raw| {
        let raw = (*raw)?;
        serde_json::from_str::<Metadata>(raw.get()).ok()?.0
    })
    .unwrap_or_default();
    let performer = text(&inner.performer, &top.performer).map(|name| {
        let email = text(&inner.performer_email, &top.performer_email);
        let performer_kind = text(&inner.performer_kind, &top.performer_kind);
        let is_robot = performer_kind.as_deref() == Some("robot") || name.contains('+');
        let (avatar_hash, avatar_color) = avatar(&name, email.as_deref());
        PerformerInfo {
            name,
            is_robot,
            avatar_hash,
            avatar_color,
        }
    });
    Ok(LogEntry {
        kind,
        datetime,
        namespace: text(&inner.account, &top.account),
        repository: text(&inner.repository, &top.repository),
        ip: text(&inner.ip, &top.ip),
        metadata,
        performer,
    })
}

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

/// Reads a metadata value: an object as is, a string holding a JSON object parsed, else nothing.
pub(crate) fn metadata_from_str(s: &str) -> Option<Map<String, Value>> {
    serde_json::from_str::<Map<String, Value>>(s).ok()
}

#[cfg(test)]
#[path = "mapper_tests.rs"]
mod tests;
