//! The log object (Quay's `Log.to_dict`) written straight into the output buffer: the export's
//! hottest loop, so no serializer state, no formatting machinery and no intermediate strings. The
//! bytes equal `serde_json::to_vec(&log)` (a test holds them to it).

use crate::domain::{LogEntry, push_quay_datetime};

/// Appends one log object as compact JSON.
pub(super) fn write_log(out: &mut Vec<u8>, log: &LogEntry<'_>) {
    out.extend_from_slice(br#"{"kind":"#);
    string(out, &log.kind);
    out.extend_from_slice(br#","metadata":"#);
    out.extend_from_slice(log.metadata.as_str().as_bytes());
    out.extend_from_slice(br#","ip":"#);
    match &log.ip {
        Some(ip) => string(out, ip),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(br#","datetime":""#);
    push_quay_datetime(out, &log.datetime);
    out.push(b'"');
    if let Some(p) = &log.performer {
        out.extend_from_slice(br#","performer":{"kind":"user","name":"#);
        string(out, &p.name);
        out.extend_from_slice(if p.is_robot {
            br#","is_robot":true,"avatar":{"name":"#
        } else {
            br#","is_robot":false,"avatar":{"name":"#
        });
        string(out, &p.name);
        // The hash is hex digits and the colour one of Quay's palette: nothing to escape.
        out.extend_from_slice(br#","hash":""#);
        out.extend_from_slice(p.avatar_hash.as_bytes());
        out.extend_from_slice(br#"","color":""#);
        out.extend_from_slice(p.avatar_color.as_bytes());
        out.push(b'"');
        out.extend_from_slice(if p.is_robot {
            br#","kind":"robot"}}"#
        } else {
            br#","kind":"user"}}"#
        });
    }
    out.push(b'}');
}

/// A JSON string literal; text needing no escape (nearly all of it) is copied as it is.
fn string(out: &mut Vec<u8>, s: &str) {
    // Every byte is tested (no early exit), which the compiler turns into vector code.
    let plain = s.bytes().fold(true, |plain, b| {
        plain & (b >= 0x20) & (b != b'"') & (b != b'\\')
    });
    if plain {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else if serde_json::to_writer(&mut *out, s).is_err() {
        // Writing a string into a Vec cannot fail; keep the document well-formed regardless.
        out.extend_from_slice(b"\"\"");
    }
}
