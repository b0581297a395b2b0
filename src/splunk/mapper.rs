//! Maps one Splunk result row to the registry's log object (SPEC §5), parsing in place.

use std::borrow::Cow;
use std::cell::{LazyCell, RefCell};

use serde_json::value::RawValue;

use super::Row;
use super::avatar::avatar;
use super::fields::{Scalar, metadata};
use super::raw_event::{self, Member};
use super::scan;

use crate::domain::{LogEntry, Metadata, PerformerInfo};

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
pub fn map_row(row: &Row) -> Result<LogEntry<'static>, SkipReason> {
    map_row_with(row, |entry| entry.into_owned())
}

/// Maps a result row and hands the entry, still borrowing from the row, to `use_entry`: the
/// export path encodes each event this way without copying its text.
///
/// The row is read up to `_raw`, which is unescaped as it is read; the rest of the row (Splunk's
/// extracted fields, as long again as `_raw`) is read only when the event in `_raw` lacks a field
/// the log object uses.
pub fn map_row_with<R>(
    row: &Row,
    use_entry: impl FnOnce(LogEntry<'_>) -> R,
) -> Result<R, SkipReason> {
    map_row_text(row.as_bytes(), use_entry)
}

/// [`map_row_with`] for a row given as its JSON text (a row of a [`super::RowBatch`]).
pub fn map_row_text<R>(
    row: &[u8],
    use_entry: impl FnOnce(LogEntry<'_>) -> R,
) -> Result<R, SkipReason> {
    map_row_text_via(row, true, use_entry)
}

/// [`map_row_text`], reading `_raw` in place when it can (`fast`) or always unescaping it first
/// (the general path, which the tests hold the fast one to).
fn map_row_text_via<R>(
    row: &[u8],
    fast: bool,
    use_entry: impl FnOnce(LogEntry<'_>) -> R,
) -> Result<R, SkipReason> {
    let mut object = scan::Object::open(row).map_err(|_| SkipReason::Malformed)?;
    // `_raw` is unescaped (when it must be) into a buffer kept per thread: no allocation per row.
    thread_local! {
        static RAW: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }
    RAW.with(|cell| {
        let mut fresh = Vec::new();
        let mut kept = cell.try_borrow_mut();
        let buffer = match &mut kept {
            Ok(kept) => &mut **kept,
            Err(_) => &mut fresh,
        };
        let mut top = Members::default();
        // `_raw` read in place, or else unescaped into `buffer` (when it is a string).
        let mut in_place = None;
        let mut raw_is_text = false;
        while let Some(key) = object.next_key().map_err(|_| SkipReason::Malformed)? {
            if key == b"_raw" {
                let mut found = Members::default();
                let end = fast
                    .then(|| raw_event::read(row, object.value_start(), |k, v| found.take(k, v)))
                    .flatten();
                if let Some(end) = end {
                    object
                        .value_read_to(end)
                        .map_err(|_| SkipReason::Malformed)?;
                    in_place = Some(found);
                } else {
                    raw_is_text = object
                        .unescape_value(buffer)
                        .map_err(|_| SkipReason::Malformed)?;
                }
                break;
            }
            let value = object.value().map_err(|_| SkipReason::Malformed)?;
            top.take(key, Member::Json(value));
        }
        // A `_raw` that is not a JSON object leaves only the extracted fields.
        let inner = match in_place {
            Some(found) => found.with_metadata_unescaped(buffer),
            None if raw_is_text => Members::read(buffer).unwrap_or_default(),
            None => Members::default(),
        };
        let top = LazyCell::new(move || {
            while let Some(key) = object.next_key()? {
                let value = object.value()?;
                top.take(key, Member::Json(value));
            }
            Ok::<_, scan::NotAnObject>(top)
        });
        let top = || {
            LazyCell::force(&top)
                .as_ref()
                .map_err(|_| SkipReason::Malformed)
        };
        map_members(&inner, top).map(use_entry)
    })
}

/// Maps one Quay audit event given as a JSON object (e.g. an NDJSON line), without Splunk's
/// envelope.
pub fn map_event_json(event: &str) -> Result<LogEntry<'static>, SkipReason> {
    let members = Members::read(event.as_bytes()).ok_or(SkipReason::Malformed)?;
    let none = Members::default();
    map_members(&members, || Ok(&none)).map(|entry| entry.into_owned())
}

/// The members of an event (or of a row's top level) the mapper may use, undecoded: each is
/// decoded only if it is needed, and plain strings need no decoding at all.
#[derive(Default)]
struct Members<'a> {
    time: Option<Member<'a>>,
    kind: Option<Member<'a>>,
    account: Option<Member<'a>>,
    performer: Option<Member<'a>>,
    performer_email: Option<Member<'a>>,
    performer_kind: Option<Member<'a>>,
    repository: Option<Member<'a>>,
    ip: Option<Member<'a>>,
    datetime: Option<Member<'a>>,
    metadata_json: Option<Member<'a>>,
    metadata: Option<Member<'a>>,
}

impl<'a> Members<'a> {
    /// The members of the JSON object `text`; `None` if it is not one.
    fn read(text: &'a [u8]) -> Option<Self> {
        let mut found = Self::default();
        scan::members(text, |key, value| found.take(key, Member::Json(value))).ok()?;
        Some(found)
    }

    /// Keeps `value` if `key` names a member the mapper uses (the last one wins).
    fn take(&mut self, key: &[u8], value: Member<'a>) {
        let slot = match key {
            b"_time" => &mut self.time,
            b"kind" => &mut self.kind,
            b"account" => &mut self.account,
            b"performer" => &mut self.performer,
            b"performer_email" => &mut self.performer_email,
            b"performer_kind" => &mut self.performer_kind,
            b"repository" => &mut self.repository,
            b"ip" => &mut self.ip,
            b"datetime" => &mut self.datetime,
            b"metadata_json" => &mut self.metadata_json,
            b"metadata" => &mut self.metadata,
            _ => return,
        };
        *slot = Some(value);
    }

    /// The same members with an escaped metadata object (read in place from `_raw`) turned into
    /// JSON text in `buffer`; every other member still borrows from the row.
    fn with_metadata_unescaped<'b>(self, buffer: &'b mut Vec<u8>) -> Members<'b>
    where
        'a: 'b,
    {
        buffer.clear();
        let mut ends = [0usize; 2];
        for (member, end) in [self.metadata_json, self.metadata].iter().zip(&mut ends) {
            if let Some(Member::Escaped(text)) = member {
                raw_event::unescape_quotes(text, buffer);
            }
            *end = buffer.len();
        }
        let buffer: &'b [u8] = buffer;
        let unescaped = |member: Option<Member<'a>>, range: std::ops::Range<usize>| match member {
            Some(Member::Escaped(_)) => Some(Member::Json(&buffer[range])),
            other => other,
        };
        Members {
            metadata_json: unescaped(self.metadata_json, 0..ends[0]),
            metadata: unescaped(self.metadata, ends[0]..ends[1]),
            ..self
        }
    }
}

/// A member's value. A string without escapes (nearly every one) is borrowed as it is written;
/// anything else goes through the JSON parser, which also rejects what is not valid JSON.
fn scalar(member: Option<Member<'_>>) -> Option<Scalar<'_>> {
    let body = match member? {
        Member::Text(body) => body,
        Member::Escaped(_) => return Some(Scalar::Object),
        Member::Json(text) => match text.strip_prefix(b"\"").and_then(|t| t.strip_suffix(b"\"")) {
            Some(body) if !body.contains(&b'\\') => body,
            _ => return serde_json::from_slice(text).ok(),
        },
    };
    Some(Scalar::Str(Cow::Borrowed(std::str::from_utf8(body).ok()?)))
}

/// A member's value as non-empty text.
fn text(member: Option<Member<'_>>) -> Option<Cow<'_, str>> {
    match scalar(member)? {
        Scalar::Str(Cow::Borrowed(s)) => has_text(s).then_some(Cow::Borrowed(s)),
        other => other.text().map(|t| Cow::Owned(t.into_owned())),
    }
}

/// Whether `s` holds more than whitespace; a value starting with a visible ASCII character (nearly
/// every one) is answered without trimming.
fn has_text(s: &str) -> bool {
    match s.as_bytes().first() {
        Some(b) if b.is_ascii_graphic() => true,
        _ => !s.trim().is_empty(),
    }
}

/// A metadata member holding an object (or a JSON string of one).
fn metadata_of(member: Option<Member<'_>>) -> Option<Metadata<'_>> {
    // Checked as JSON only here, and only until one candidate holds an object.
    match member? {
        Member::Json(text) => metadata(serde_json::from_slice::<&RawValue>(text).ok()?),
        // A string without escapes holds no quote, so at most an empty object.
        Member::Text(body) => Metadata::from_object(Cow::Borrowed(
            serde_json::from_slice::<&RawValue>(body).ok()?,
        )),
        Member::Escaped(_) => None,
    }
}

/// Builds the log entry from `inner` (the event in `_raw`), asking for `top` (the row's extracted
/// fields) only for a field `inner` lacks. The performer's e-mail and kind come from the same
/// place as the performer's name.
fn map_members<'a, 't>(
    inner: &Members<'a>,
    top: impl Fn() -> Result<&'t Members<'a>, SkipReason>,
) -> Result<LogEntry<'a>, SkipReason>
where
    'a: 't,
{
    let either = |member: fn(&Members<'a>) -> Option<Member<'a>>| match text(member(inner)) {
        Some(found) => Ok(Some(found)),
        None => top().map(|top| text(member(top))),
    };
    let kind = either(|m| m.kind)?.ok_or(SkipReason::NoKind)?;
    let datetime = match scalar(inner.datetime).and_then(|s| s.timestamp()) {
        Some(datetime) => datetime,
        None => {
            let top = top()?;
            [top.datetime, inner.time, top.time]
                .into_iter()
                .find_map(|member| scalar(member)?.timestamp())
                .ok_or(SkipReason::NoTimestamp)?
        }
    };
    let metadata = match metadata_of(inner.metadata_json).or_else(|| metadata_of(inner.metadata)) {
        Some(metadata) => metadata,
        None => {
            let top = top()?;
            metadata_of(top.metadata_json)
                .or_else(|| metadata_of(top.metadata))
                .unwrap_or_default()
        }
    };
    let (source, name) = match text(inner.performer) {
        Some(name) => (inner, Some(name)),
        None => {
            let top = top()?;
            (top, text(top.performer))
        }
    };
    let performer = name.map(|name| {
        let email = text(source.performer_email);
        let performer_kind = text(source.performer_kind);
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
        namespace: either(|m| m.account)?,
        repository: either(|m| m.repository)?,
        ip: either(|m| m.ip)?,
        metadata,
        performer,
    })
}

#[cfg(test)]
#[path = "mapper_tests.rs"]
mod tests;
