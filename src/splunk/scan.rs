//! A single pass over a JSON object's top level that finds each member's value without decoding
//! it. A Splunk row repeats the event twice (the escaped `_raw` text and the extracted fields),
//! and the mapper needs little beyond `_raw`: decoding every member with a full JSON parser was
//! most of an export's CPU time. Values are decoded later, and only those the mapper uses, by
//! `serde_json`, which checks them then; `_raw` is unescaped as it is scanned.
//!
//! The scanner works on bytes: a row is not checked for UTF-8 as a whole, only the values that
//! are decoded are.

use std::borrow::Cow;

/// The row is not a well-formed JSON object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct NotAnObject;

/// A cursor over the members of one JSON object: [`Object::next_key`] reads a key, then exactly
/// one of [`Object::value`] or [`Object::unescape_value`] reads its value. Strings, nesting and
/// separators are checked; scalars are delimited but left to whoever decodes them. Stopping
/// before the end leaves the rest of the object unread (and unchecked).
pub(crate) struct Object<'a> {
    b: &'a [u8],
    at: usize,
    closed: bool,
}

impl<'a> Object<'a> {
    /// Opens the object `text`, which must start (after whitespace) with `{`.
    pub(crate) fn open(text: &'a [u8]) -> Result<Self, NotAnObject> {
        let b = text;
        let at = skip_ws(b, 0);
        if b.get(at) != Some(&b'{') {
            return Err(NotAnObject);
        }
        let mut object = Self {
            b,
            at: skip_ws(b, at + 1),
            closed: false,
        };
        if b.get(object.at) == Some(&b'}') {
            object.close(object.at)?;
        }
        Ok(object)
    }

    /// The next member's key as written (escapes left in), or `None` after the last member.
    pub(crate) fn next_key(&mut self) -> Result<Option<&'a [u8]>, NotAnObject> {
        if self.closed {
            return Ok(None);
        }
        let (b, at) = (self.b, self.at);
        if b.get(at) != Some(&b'"') {
            return Err(NotAnObject);
        }
        let key_end = string_end(b, at)?;
        let colon = skip_ws(b, key_end);
        if b.get(colon) != Some(&b':') {
            return Err(NotAnObject);
        }
        self.at = skip_ws(b, colon + 1);
        Ok(Some(&b[at + 1..key_end - 1]))
    }

    /// The current member's value as JSON text.
    pub(crate) fn value(&mut self) -> Result<&'a [u8], NotAnObject> {
        let start = self.at;
        let end = value_end(self.b, start)?;
        self.after_value(end)?;
        Ok(&self.b[start..end])
    }

    /// Reads the current member's value and, when it is a string, writes it unescaped into `out`
    /// in the same pass (`Ok(true)`). `Ok(false)` leaves `out` empty: the value is not a string,
    /// or holds an escape JSON does not allow (the object around it is still well formed).
    pub(crate) fn unescape_value(&mut self, out: &mut Vec<u8>) -> Result<bool, NotAnObject> {
        out.clear();
        let (b, start) = (self.b, self.at);
        if b.get(start) != Some(&b'"') {
            self.value()?;
            return Ok(false);
        }
        // Unescaping only shrinks a string, so the rest of the input (plus one word of slack)
        // bounds the output: eight bytes are copied at a time with fixed-size stores, whatever
        // part of them is text, instead of one `memcpy` call per run between two escapes.
        out.resize(b.len() - start + 8, 0);
        let (mut i, mut w) = (start + 1, 0);
        loop {
            while let Some(chunk) = b.get(i..i + 8) {
                out[w..w + 8].copy_from_slice(chunk);
                let hits = specials(chunk);
                if hits != 0 {
                    let text = (hits.trailing_zeros() / 8) as usize;
                    i += text;
                    w += text;
                    break;
                }
                i += 8;
                w += 8;
            }
            let at = next_special(b, i).ok_or(NotAnObject)?;
            out[w..w + (at - i)].copy_from_slice(&b[i..at]);
            w += at - i;
            if b[at] == b'"' {
                out.truncate(w);
                self.after_value(at + 1)?;
                return Ok(true);
            }
            out[w] = match b.get(at + 1) {
                Some(b'"') => b'"',
                Some(b'\\') => b'\\',
                Some(b'/') => b'/',
                Some(b'b') => 0x08,
                Some(b'f') => 0x0c,
                Some(b'n') => b'\n',
                Some(b'r') => b'\r',
                Some(b't') => b'\t',
                // `\u` escapes, rare in audit events, go through the full JSON parser.
                _ => {
                    let end = string_end(b, start)?;
                    self.after_value(end)?;
                    out.clear();
                    return Ok(
                        match serde_json::from_slice::<Cow<'_, str>>(&b[start..end]) {
                            Ok(text) => {
                                out.extend_from_slice(text.as_bytes());
                                true
                            }
                            Err(_) => false,
                        },
                    );
                }
            };
            w += 1;
            i = at + 2;
        }
    }

    /// Where the current member's value starts, for a caller that reads it itself.
    pub(crate) fn value_start(&self) -> usize {
        self.at
    }

    /// Moves past the current member's value, which the caller read up to `end`.
    pub(crate) fn value_read_to(&mut self, end: usize) -> Result<(), NotAnObject> {
        self.after_value(end)
    }

    fn after_value(&mut self, end: usize) -> Result<(), NotAnObject> {
        let at = skip_ws(self.b, end);
        match self.b.get(at) {
            Some(b',') => {
                self.at = skip_ws(self.b, at + 1);
                Ok(())
            }
            Some(b'}') => self.close(at),
            _ => Err(NotAnObject),
        }
    }

    /// At the object's closing brace: only whitespace may follow.
    fn close(&mut self, brace: usize) -> Result<(), NotAnObject> {
        self.closed = true;
        self.at = brace + 1;
        if skip_ws(self.b, self.at) == self.b.len() {
            Ok(())
        } else {
            Err(NotAnObject)
        }
    }
}

/// Calls `member(key, value)` for each member of the JSON object `text`, in order, with the
/// value's JSON text. Keys are handed over as written; a key holding an escape is skipped (no
/// field the mapper reads needs one).
pub(crate) fn members<'a>(
    text: &'a [u8],
    mut member: impl FnMut(&'a [u8], &'a [u8]),
) -> Result<(), NotAnObject> {
    let mut object = Object::open(text)?;
    while let Some(key) = object.next_key()? {
        let value = object.value()?;
        if !key.contains(&b'\\') {
            member(key, value);
        }
    }
    Ok(())
}

fn skip_ws(b: &[u8], mut at: usize) -> usize {
    while matches!(b.get(at), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        at += 1;
    }
    at
}

/// Just past the string starting with the quote at `at`.
fn string_end(b: &[u8], at: usize) -> Result<usize, NotAnObject> {
    let mut i = at + 1;
    loop {
        i = next_special(b, i).ok_or(NotAnObject)?;
        if b[i] == b'"' {
            return Ok(i + 1);
        }
        // An escape: the next byte is part of it (`\"`, `\\`, `\u`, ...).
        i += 2;
    }
}

/// A mask with the high bit set in each byte of the 8-byte `chunk` that is `"` or `\\` (exact up
/// to the first such byte, which is all callers use).
fn specials(chunk: &[u8]) -> u64 {
    const ONES: u64 = 0x0101_0101_0101_0101;
    const HIGHS: u64 = 0x8080_8080_8080_8080;
    let has = |word: u64, byte: u8| {
        let x = word ^ (ONES * u64::from(byte));
        x.wrapping_sub(ONES) & !x & HIGHS
    };
    let mut word = [0u8; 8];
    word.copy_from_slice(chunk);
    let word = u64::from_le_bytes(word);
    has(word, b'"') | has(word, b'\\')
}

/// The position of the first `"` or `\\` at or after `from`. Eight bytes are tested at a time
/// (SWAR) without `memchr`'s setup cost, which dominates on the short runs between the escapes
/// of a `_raw` string.
pub(crate) fn next_special(b: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while let Some(chunk) = b.get(i..i + 8) {
        let hits = specials(chunk);
        if hits != 0 {
            return Some(i + (hits.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    b.get(i..)?
        .iter()
        .position(|c| matches!(c, b'"' | b'\\'))
        .map(|p| i + p)
}

/// The closing brackets a nested value still owes, innermost last: the first 64 levels as bits
/// (no allocation for any value an audit event holds), deeper ones in a vector.
#[derive(Default)]
pub(super) struct Closers {
    depth: usize,
    /// Bit `n` set: level `n` is an object (else an array).
    bits: u64,
    deeper: Vec<u8>,
}

impl Closers {
    pub(super) fn open(&mut self, opener: u8) {
        let closer = if opener == b'{' { b'}' } else { b']' };
        if self.depth < 64 {
            let bit = 1u64 << self.depth;
            self.bits = if closer == b'}' {
                self.bits | bit
            } else {
                self.bits & !bit
            };
        } else {
            self.deeper.push(closer);
        }
        self.depth += 1;
    }

    /// The closer the innermost open level expects, which is then closed.
    pub(super) fn close(&mut self) -> Option<u8> {
        self.depth = self.depth.checked_sub(1)?;
        if self.depth < 64 {
            Some(if self.bits & (1u64 << self.depth) != 0 {
                b'}'
            } else {
                b']'
            })
        } else {
            self.deeper.pop()
        }
    }

    /// Whether every level opened was closed.
    pub(super) fn is_empty(&self) -> bool {
        self.depth == 0
    }
}

/// Just past the value starting at `at`.
fn value_end(b: &[u8], at: usize) -> Result<usize, NotAnObject> {
    match b.get(at) {
        Some(b'"') => string_end(b, at),
        Some(b'{' | b'[') => {
            let mut closers = Closers::default();
            let mut i = at;
            while let Some(&c) = b.get(i) {
                match c {
                    b'"' => {
                        i = string_end(b, i)?;
                        continue;
                    }
                    b'{' | b'[' => closers.open(c),
                    b'}' | b']' => {
                        if closers.close() != Some(c) {
                            return Err(NotAnObject);
                        }
                        if closers.is_empty() {
                            return Ok(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
            Err(NotAnObject)
        }
        Some(_) => {
            let len = b[at..]
                .iter()
                .position(|c| matches!(c, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))
                .unwrap_or(b.len() - at);
            if len == 0 {
                Err(NotAnObject)
            } else {
                Ok(at + len)
            }
        }
        None => Err(NotAnObject),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;

    fn collect(text: &str) -> Result<Vec<(String, String)>, NotAnObject> {
        let mut out = Vec::new();
        members(text.as_bytes(), |k, v| {
            out.push((
                String::from_utf8(k.to_vec()).unwrap(),
                String::from_utf8(v.to_vec()).unwrap(),
            ));
        })?;
        Ok(out)
    }

    #[test]
    fn finds_each_member_with_its_json_text() {
        let text = r#" { "_raw" : "{\"kind\":\"a\\\\b\"}", "n": -1.5e3, "mv": ["x", {"y": "}"}],
            "o": {"a": [1, {"b": null}]}, "t": true } "#;
        let got = collect(text).unwrap();
        let keys: Vec<&str> = got.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["_raw", "n", "mv", "o", "t"]);
        let doc: Value = serde_json::from_str(text).unwrap();
        for (k, v) in &got {
            assert_eq!(serde_json::from_str::<Value>(v).unwrap(), doc[k], "{k}");
        }
        assert_eq!(collect("{}").unwrap(), []);
    }

    #[test]
    fn refuses_what_is_not_one_whole_object() {
        for bad in [
            "",
            "[]",
            "{",
            r#"{"a""#,
            r#"{"a":}"#,
            r#"{"a":"x}"#,
            r#"{"a":[1}"#,
            r#"{"a":1,}"#,
            r#"{"a":1} x"#,
            r#"{"a":{"b":1]}"#,
            r#"{"a" 1}"#,
            r#"{a:1}"#,
        ] {
            assert_eq!(collect(bad), Err(NotAnObject), "{bad:?}");
        }
    }

    proptest! {
        /// Every object serde_json writes is read back member by member, values intact.
        #[test]
        fn agrees_with_serde_json(members_in in proptest::collection::vec(
            ("[a-z_]{1,8}", prop_oneof![
                any::<String>().prop_map(Value::String),
                any::<i64>().prop_map(|n| json!(n)),
                any::<bool>().prop_map(Value::Bool),
                proptest::collection::vec(any::<String>(), 0..3).prop_map(|v| json!(v)),
                (any::<String>(), any::<String>()).prop_map(|(k, v)| json!({k: [v]})),
            ]),
            0..6,
        ), pretty in any::<bool>()) {
            let object: serde_json::Map<String, Value> = members_in.into_iter().collect();
            let text = if pretty {
                serde_json::to_string_pretty(&object).unwrap()
            } else {
                serde_json::to_string(&object).unwrap()
            };
            let got = collect(&text).unwrap();
            prop_assert_eq!(got.len(), object.len());
            for (k, v) in got {
                prop_assert_eq!(&serde_json::from_str::<Value>(&v).unwrap(), &object[&k]);
            }
        }

        /// `_raw` is unescaped in the same pass that delimits it, exactly as serde_json reads it.
        #[test]
        fn unescapes_strings_as_serde_json_does(value in any::<String>(), after in any::<bool>()) {
            let text = if after {
                format!(r#"{{"_raw":{},"next":[1,"x"]}}"#, json!(value))
            } else {
                format!(r#"{{"_raw":{}}}"#, json!(value))
            };
            let mut object = Object::open(text.as_bytes()).unwrap();
            prop_assert_eq!(object.next_key().unwrap(), Some(&b"_raw"[..]));
            let mut out = Vec::new();
            prop_assert!(object.unescape_value(&mut out).unwrap());
            prop_assert_eq!(String::from_utf8(out).unwrap(), value);
            if after {
                prop_assert_eq!(object.next_key().unwrap(), Some(&b"next"[..]));
                prop_assert_eq!(object.value().unwrap(), &br#"[1,"x"]"#[..]);
            }
            prop_assert_eq!(object.next_key().unwrap(), None);
        }

        #[test]
        fn never_panics(text in ".*") {
            let _ = collect(&text);
        }
    }
}

#[cfg(test)]
mod object_tests {
    use super::*;

    #[test]
    fn unescape_value_handles_every_escape_and_refuses_what_is_not_a_string() {
        let text = br#"{"a":"q\"b\\s\/n\nt\tr\rf\fb\bu\u00e9\ud83d\ude00","b":12,"c":"bad\x","d":{"e":"}"}}"#;
        let mut object = Object::open(text).unwrap();
        let mut out = Vec::new();
        assert_eq!(object.next_key(), Ok(Some(&b"a"[..])));
        assert_eq!(object.unescape_value(&mut out), Ok(true));
        assert_eq!(out, "q\"b\\s/n\nt\tr\rf\u{c}b\u{8}ué😀".as_bytes());
        assert_eq!(object.next_key(), Ok(Some(&b"b"[..])));
        assert_eq!(object.unescape_value(&mut out), Ok(false));
        assert!(out.is_empty());
        // An escape JSON does not allow: not a usable string, but the object reads on.
        assert_eq!(object.next_key(), Ok(Some(&b"c"[..])));
        assert_eq!(object.unescape_value(&mut out), Ok(false));
        assert_eq!(object.next_key(), Ok(Some(&b"d"[..])));
        assert_eq!(object.value(), Ok(&br#"{"e":"}"}"#[..]));
        assert_eq!(object.next_key(), Ok(None));
        assert_eq!(object.next_key(), Ok(None));
    }

    #[test]
    fn nesting_deeper_than_the_bit_stack_is_matched_too() {
        let levels = 100;
        let open: String = (0..levels)
            .map(|n| if n % 2 == 0 { "[" } else { r#"{"k":"# })
            .collect();
        let closers: Vec<&str> = (0..levels)
            .rev()
            .map(|n| if n % 2 == 0 { "]" } else { "}" })
            .collect();
        let nested = format!("{open}1{}", closers.concat());
        let text = format!(r#"{{"v":{nested},"w":2}}"#);
        let mut got = Vec::new();
        members(text.as_bytes(), |k, v| got.push((k.to_vec(), v.to_vec()))).unwrap();
        assert_eq!(got[0], (b"v".to_vec(), nested.clone().into_bytes()));
        assert_eq!(got[1], (b"w".to_vec(), b"2".to_vec()));
        // A wrong closer deep inside, beyond the first 64 levels, and one within them.
        for wrong_at in [10, 90] {
            let mut bad = closers.clone();
            bad[wrong_at] = if bad[wrong_at] == "]" { "}" } else { "]" };
            let text = format!(r#"{{"v":{open}1{}}}"#, bad.concat());
            assert_eq!(
                members(text.as_bytes(), |_, _| {}),
                Err(NotAnObject),
                "{wrong_at}"
            );
        }
    }

    #[test]
    fn an_object_must_be_whole() {
        assert!(Object::open(b"{}").unwrap().next_key().unwrap().is_none());
        assert!(Object::open(b" { } ").is_ok());
        assert_eq!(Object::open(b"{} x").err(), Some(NotAnObject));
        assert_eq!(Object::open(b"[]").err(), Some(NotAnObject));
        let mut cut = Object::open(br#"{"a":"x"#).unwrap();
        assert_eq!(cut.next_key(), Ok(Some(&b"a"[..])));
        assert_eq!(cut.unescape_value(&mut Vec::new()), Err(NotAnObject));
    }
}

#[cfg(test)]
mod special_tests {
    use super::next_special;

    #[test]
    fn finds_quotes_and_backslashes_at_every_offset() {
        for len in 0..40 {
            for at in 0..len {
                for special in [b'"', b'\\'] {
                    let mut text = vec![b'a'; len];
                    text[at] = special;
                    for from in 0..=len {
                        let want = (from <= at).then_some(at);
                        assert_eq!(next_special(&text, from), want, "{len} {at} {from}");
                    }
                }
            }
            assert_eq!(next_special(&vec![b'x'; len], 0), None);
        }
        // Bytes with the high bit set are not mistaken for either.
        assert_eq!(next_special("ééééé\"".as_bytes(), 0), Some(10));
    }
}
