//! CSV rows (RFC 4180): CRLF line ends; a field containing `,`, `"`, CR or LF is quoted, with
//! its quotes doubled.

use chrono::SecondsFormat;

use crate::domain::LogEntry;

/// The header row.
pub(super) const HEADER: &[u8] =
    b"datetime,kind,namespace,repository,performer,performer_is_robot,ip,metadata\r\n";

/// Appends one log as a CSV row.
pub(super) fn write_row(out: &mut Vec<u8>, log: &LogEntry<'_>) {
    // RFC 3339 UTC; fractional seconds only when the event has them.
    let datetime = log.datetime.to_rfc3339_opts(SecondsFormat::AutoSi, true);
    field(out, datetime.as_bytes());
    out.push(b',');
    field(out, log.kind.as_bytes());
    out.push(b',');
    field(out, log.namespace.as_deref().unwrap_or("").as_bytes());
    out.push(b',');
    field(out, log.repository.as_deref().unwrap_or("").as_bytes());
    out.push(b',');
    match &log.performer {
        Some(p) => {
            field(out, p.name.as_bytes());
            out.extend_from_slice(if p.is_robot { b",true," } else { b",false," });
        }
        None => out.extend_from_slice(b",,"),
    }
    field(out, log.ip.as_deref().unwrap_or("").as_bytes());
    out.push(b',');
    field(out, log.metadata.as_str().as_bytes());
    out.extend_from_slice(b"\r\n");
}

/// Appends one field, quoted only when RFC 4180 requires it.
fn field(out: &mut Vec<u8>, value: &[u8]) {
    if !value
        .iter()
        .any(|b| matches!(b, b',' | b'"' | b'\r' | b'\n'))
    {
        out.extend_from_slice(value);
        return;
    }
    out.reserve(value.len() + 2);
    out.push(b'"');
    for part in value.split_inclusive(|b| *b == b'"') {
        out.extend_from_slice(part);
        if part.last() == Some(&b'"') {
            out.push(b'"');
        }
    }
    out.push(b'"');
}
