//! One Splunk result row, kept as the JSON text Splunk sent so the mapper parses it in place.

use bytes::Bytes;
use serde_json::value::RawValue;

use super::SplunkError;

/// One search result: the JSON object Splunk sent under `result`, not yet parsed into fields.
///
/// Rows from the export stream share the buffer of the chunk they arrived in, so handing a row on
/// costs no copy; [`crate::splunk::map_row`] parses it directly. A row from the export stream's
/// fast path is checked by that parse rather than before it.
#[derive(Clone, PartialEq, Eq)]
pub struct Row(Bytes);

impl Row {
    /// A row from the text of a JSON object; refuses anything else.
    pub fn from_json(text: impl Into<Bytes>) -> Result<Self, SplunkError> {
        let bytes = text.into();
        let raw: &RawValue = serde_json::from_slice(&bytes)
            .map_err(|e| SplunkError::Protocol(format!("result row is not JSON: {e}")))?;
        if !raw.get().starts_with('{') {
            return Err(SplunkError::Protocol(
                "result row is not a JSON object".into(),
            ));
        }
        Ok(Self(bytes))
    }

    /// A row from bytes the caller found in Splunk's layout but did not parse; the mapper's parse
    /// reports them as malformed if they are not a JSON object after all.
    pub(crate) fn unchecked(bytes: Bytes) -> Self {
        Self(bytes)
    }

    /// A row from a raw value that lies inside `buffer` (zero copy), or a copy otherwise.
    pub(crate) fn from_raw_in(buffer: &Bytes, raw: &RawValue) -> Self {
        let text = raw.get().as_bytes();
        let start = (text.as_ptr() as usize).wrapping_sub(buffer.as_ptr() as usize);
        if start <= buffer.len() && text.len() <= buffer.len() - start {
            Self(buffer.slice(start..start + text.len()))
        } else {
            Self(Bytes::copy_from_slice(text))
        }
    }

    /// The row's JSON text.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The row's JSON text as a string (it was valid UTF-8 JSON when the row was made).
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("{}")
    }

    /// The row as a JSON object, for small results such as `stats count by` rows.
    pub fn to_object(&self) -> Result<serde_json::Map<String, serde_json::Value>, SplunkError> {
        serde_json::from_slice(&self.0)
            .map_err(|e| SplunkError::Protocol(format!("result row is not a JSON object: {e}")))
    }

    /// A field's value as text: strings as they are, numbers printed, first value of a multivalue.
    pub fn field_text(&self, name: &str) -> Option<String> {
        let obj = self.to_object().ok()?;
        let value = match obj.get(name)? {
            serde_json::Value::Array(items) => items.first()?.clone(),
            other => other.clone(),
        };
        match value {
            serde_json::Value::String(s) => Some(s),
            serde_json::Value::Null => None,
            other => Some(other.to_string()),
        }
    }
}

impl std::fmt::Debug for Row {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Row").field(&self.as_str()).finish()
    }
}

/// Rows copied out of the stream into one buffer that is reused batch after batch.
///
/// A [`Row`] keeps the whole network chunk it came in alive; a batch of them, handed to another
/// thread, made the allocator's footprint creep up for the first second of every export. Copied
/// rows let each chunk be freed by the thread that read it, as soon as its lines are split.
#[derive(Debug, Default)]
pub struct RowBatch {
    text: Vec<u8>,
    ends: Vec<usize>,
}

impl RowBatch {
    /// An empty batch with room for `rows` rows of `bytes` bytes in all.
    pub fn with_capacity(rows: usize, bytes: usize) -> Self {
        Self {
            text: Vec::with_capacity(bytes),
            ends: Vec::with_capacity(rows),
        }
    }

    /// Appends a copy of `row`.
    pub fn push(&mut self, row: &Row) {
        self.push_text(row.as_bytes());
    }

    /// Appends a copy of a row's JSON text, found in Splunk's layout but not yet parsed (the
    /// mapper's parse checks it).
    pub(crate) fn push_text(&mut self, text: &[u8]) {
        self.text.extend_from_slice(text);
        self.ends.push(self.text.len());
    }

    /// How many rows the batch holds.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether the batch holds no row.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Forgets the rows, keeping the buffers.
    pub fn clear(&mut self) {
        self.text.clear();
        self.ends.clear();
    }

    /// Keeps the first `rows` rows.
    pub(crate) fn truncate(&mut self, rows: usize) {
        if rows < self.ends.len() {
            let end = rows.checked_sub(1).map_or(0, |last| self.ends[last]);
            self.text.truncate(end);
            self.ends.truncate(rows);
        }
    }

    /// Each row's JSON text, in order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        self.ends.iter().scan(0, |start, &end| {
            let row = &self.text[*start..end];
            *start = end;
            Some(row)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_hands_back_each_row_and_keeps_its_buffers() {
        let mut batch = RowBatch::with_capacity(4, 64);
        assert!(batch.is_empty());
        for text in [r#"{"a":1}"#, "{}", r#"{"b":"é"}"#] {
            batch.push(&Row::from_json(text).unwrap());
        }
        assert_eq!(batch.len(), 3);
        let rows: Vec<&[u8]> = batch.iter().collect();
        assert_eq!(rows, [&br#"{"a":1}"#[..], b"{}", r#"{"b":"é"}"#.as_bytes()]);
        let capacity = batch.text.capacity();
        batch.clear();
        assert!(batch.is_empty());
        assert_eq!(batch.iter().count(), 0);
        assert_eq!(batch.text.capacity(), capacity);
    }

    #[test]
    fn rows_inside_a_buffer_share_it() {
        let buffer = Bytes::from_static(br#"{"result":{"a":"1"},"x":2}"#);
        #[derive(serde::Deserialize)]
        struct Env<'a> {
            #[serde(borrow)]
            result: &'a RawValue,
        }
        let env: Env<'_> = serde_json::from_slice(&buffer).unwrap();
        let row = Row::from_raw_in(&buffer, env.result);
        assert_eq!(row.as_str(), r#"{"a":"1"}"#);
        assert_eq!(row.as_bytes().as_ptr(), buffer[10..].as_ptr());
        assert_eq!(row.field_text("a").as_deref(), Some("1"));
    }

    #[test]
    fn field_text_reads_numbers_and_multivalues() {
        let row = Row::from_json(r#"{"count":"12","n":3,"mv":["x","y"],"z":null}"#).unwrap();
        assert_eq!(row.field_text("count").as_deref(), Some("12"));
        assert_eq!(row.field_text("n").as_deref(), Some("3"));
        assert_eq!(row.field_text("mv").as_deref(), Some("x"));
        assert_eq!(row.field_text("z"), None);
        assert!(Row::from_json("[1]").is_err());
        assert!(Row::from_json("{").is_err());
    }
}
