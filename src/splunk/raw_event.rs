//! Reads the audit event in a row's `_raw` straight from its escaped text.
//!
//! `_raw` is a JSON string holding the event's JSON, so every quote of the event arrives as `\"`.
//! Unescaping the whole string and scanning the result again was the largest part of an export's
//! CPU time. Nearly every event needs no other escape, and then each of its strings can be read
//! in place: the bytes between `\"` and `\"` are the value. Anything else (an escaped backslash,
//! a `\n`, a `\u` escape, whitespace other than spaces) makes [`read`] give up, and the caller
//! takes the general path, which unescapes `_raw` first. Both paths give the same members.

use super::scan::{Closers, next_special};

/// A member value of the event, as found in the escaped text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Member<'a> {
    /// JSON text: a number or literal here, any value on the general path.
    Json(&'a [u8]),
    /// The content of a string that holds no escape: its bytes are its value.
    Text(&'a [u8]),
    /// An object or array whose only escapes are the `\"` of its strings; see [`unescape_quotes`].
    Escaped(&'a [u8]),
}

/// Reads the event held in the JSON string that starts with the quote at `b[at]`, calling
/// `member(key, value)` for each of its members in order, and returns the position just past
/// the string's closing quote. `None` when the event needs the general path: it then may have
/// reported some members already, which the caller discards.
pub(super) fn read<'a>(
    b: &'a [u8],
    at: usize,
    mut member: impl FnMut(&'a [u8], Member<'a>),
) -> Option<usize> {
    let at_byte = |i: usize| b.get(i).copied();
    // `\"`: a quote of the event.
    let quote_at = |i: usize| at_byte(i) == Some(b'\\') && at_byte(i + 1) == Some(b'"');
    let spaces = |mut i: usize| {
        while at_byte(i) == Some(b' ') {
            i += 1;
        }
        i
    };
    // The string starting with the `\"` at `i`: its content, and the position after its end.
    let string = |i: usize| -> Option<(&'a [u8], usize)> {
        let end = next_special(b, i + 2)?;
        quote_at(end).then(|| (&b[i + 2..end], end + 2))
    };

    if at_byte(at) != Some(b'"') {
        return None;
    }
    let mut i = spaces(at + 1);
    if at_byte(i) != Some(b'{') {
        return None;
    }
    i = spaces(i + 1);
    if at_byte(i) == Some(b'}') {
        i += 1;
    } else {
        loop {
            if !quote_at(i) {
                return None;
            }
            let (key, after_key) = string(i)?;
            i = spaces(after_key);
            if at_byte(i) != Some(b':') {
                return None;
            }
            i = spaces(i + 1);
            let value = match at_byte(i)? {
                b'\\' => {
                    let (text, after) = string(i).filter(|_| quote_at(i))?;
                    i = after;
                    Member::Text(text)
                }
                b'{' | b'[' => {
                    let end = nested_end(b, i)?;
                    let value = Member::Escaped(&b[i..end]);
                    i = end;
                    value
                }
                _ => {
                    let len = b[i..]
                        .iter()
                        .position(|c| matches!(c, b',' | b'}' | b']' | b' ' | b'\\' | b'"'))?;
                    if len == 0 {
                        return None;
                    }
                    let value = Member::Json(&b[i..i + len]);
                    i += len;
                    value
                }
            };
            member(key, value);
            i = spaces(i);
            match at_byte(i)? {
                b',' => i = spaces(i + 1),
                b'}' => {
                    i += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    i = spaces(i);
    (at_byte(i) == Some(b'"')).then_some(i + 1)
}

/// Just past the object or array starting at `b[at]`, if every string inside it is `\"`-quoted
/// without escapes of its own.
fn nested_end(b: &[u8], at: usize) -> Option<usize> {
    let mut closers = Closers::default();
    let mut i = at;
    while let Some(&c) = b.get(i) {
        match c {
            b'\\' => {
                if b.get(i + 1) != Some(&b'"') {
                    return None;
                }
                let end = next_special(b, i + 2)?;
                if b[end] != b'\\' || b.get(end + 1) != Some(&b'"') {
                    return None;
                }
                i = end + 2;
                continue;
            }
            // The end of `_raw` itself, inside the value: not an event this path reads.
            b'"' => return None,
            b'{' | b'[' => closers.open(c),
            b'}' | b']' => {
                if closers.close() != Some(c) {
                    return None;
                }
                if closers.is_empty() {
                    return Some(i + 1);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// Appends the JSON text of an [`Member::Escaped`] value to `out`: its only escapes are `\"`.
pub(super) fn unescape_quotes(escaped: &[u8], out: &mut Vec<u8>) {
    out.extend(escaped.iter().copied().filter(|&c| c != b'\\'));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(text: &str) -> Option<(Vec<(String, Member<'_>)>, usize)> {
        let mut found = Vec::new();
        let end = read(text.as_bytes(), 0, |k, v| {
            found.push((String::from_utf8(k.to_vec()).unwrap(), v));
        })?;
        Some((found, end))
    }

    #[test]
    fn reads_strings_numbers_and_nested_values_in_place() {
        let text = r#""{\"kind\":\"push_repo\", \"n\": -1.5e3,\"ok\":true,\"m\":{\"a\":[1,{\"b\":\"}\"}]},\"e\":\"\"}",next"#;
        let (found, end) = members(text).unwrap();
        assert_eq!(&text[end..], ",next");
        assert_eq!(
            found,
            [
                ("kind".into(), Member::Text(b"push_repo")),
                ("n".into(), Member::Json(b"-1.5e3")),
                ("ok".into(), Member::Json(b"true")),
                ("m".into(), Member::Escaped(br#"{\"a\":[1,{\"b\":\"}\"}]}"#)),
                ("e".into(), Member::Text(b"")),
            ]
        );
        let mut json = Vec::new();
        unescape_quotes(br#"{\"a\":[1,{\"b\":\"}\"}]}"#, &mut json);
        assert_eq!(json, br#"{"a":[1,{"b":"}"}]}"#);
        assert_eq!(members(r#""{}""#).unwrap().1, 4);
        assert_eq!(members(r#"" { } ""#).unwrap().1, 7);
    }

    #[test]
    fn gives_up_on_anything_needing_the_general_path() {
        for text in [
            // Escapes other than `\"`: an escaped quote or backslash inside a value, a newline.
            r#""{\"kind\":\"a\\\"b\"}""#,
            r#""{\"kind\":\"a\\\\b\"}""#,
            r#""{\"k\\\"ey\":\"a\"}""#,
            r#""{\"kind\":\"a\"}\n""#,
            r#""{\n\"kind\":\"a\"}""#,
            r#""{\"kind\":\"\u00e9\"}""#,
            r#""{\"m\":{\"a\":\"x\\\"y\"}}""#,
            // Not an object, or not a whole one.
            r#""[1]""#,
            r#""plain text""#,
            r#""{\"kind\":\"a\""#,
            r#""{\"kind\":\"a\",}""#,
            r#""{\"kind\" \"a\"}""#,
            r#""{\"m\":{\"a\":1]}""#,
            r#""{\"m\":{\"a\":1}"#,
            r#""{\"kind\":}""#,
            r#""{\"kind\":\"a\"} x""#,
            "",
            r#"12"#,
        ] {
            assert_eq!(members(text), None, "{text}");
        }
    }
}
