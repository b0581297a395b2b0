//! Field values of a Splunk row or Quay audit event, decoded without a `Value` tree.

use std::borrow::Cow;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::timestamp::{epoch_from_f64, parse_timestamp};
use crate::domain::Metadata;

/// One field value; strings borrow from the input unless they had escapes. Multivalue fields
/// (JSON arrays, as Splunk returns them) keep their first value.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Scalar<'a> {
    Str(Cow<'a, str>),
    Int(i64),
    Float(f64),
    Bool(bool),
    Null,
    Object,
}

impl<'a> Scalar<'a> {
    /// The value as non-empty text.
    pub fn text(&self) -> Option<Cow<'_, str>> {
        let text = match self {
            Self::Str(s) => Cow::Borrowed(s.as_ref()),
            Self::Int(i) => Cow::Owned(i.to_string()),
            Self::Float(f) => Cow::Owned(f.to_string()),
            Self::Bool(b) => Cow::Borrowed(if *b { "true" } else { "false" }),
            Self::Null | Self::Object => return None,
        };
        (!text.trim().is_empty()).then_some(text)
    }

    /// The value as a timestamp: numbers are epoch seconds, text is parsed.
    pub fn timestamp(&self) -> Option<DateTime<Utc>> {
        match self {
            Self::Int(i) => DateTime::from_timestamp(*i, 0),
            Self::Float(f) => epoch_from_f64(*f),
            Self::Str(s) => parse_timestamp(s),
            Self::Bool(_) | Self::Null | Self::Object => None,
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Scalar<'a> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(ScalarVisitor(std::marker::PhantomData))
    }
}

struct ScalarVisitor<'a>(std::marker::PhantomData<&'a ()>);

impl<'de: 'a, 'a> Visitor<'de> for ScalarVisitor<'a> {
    type Value = Scalar<'a>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(v)))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(Scalar::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(i64::try_from(v).map_or(Scalar::Float(v as f64), Scalar::Int))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Scalar::Float(v))
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Scalar::Bool(v))
    }
    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Null)
    }
    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        Scalar::deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let first = seq.next_element::<Scalar<'a>>()?.unwrap_or(Scalar::Null);
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(first)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Scalar::Object)
    }
}

/// Reads a metadata field: an object as it is (borrowed), a string holding a JSON object
/// (`metadata_json` as Quay stores it) parsed, the first usable value of a multivalue field;
/// `None` for anything else, so the next candidate field is tried.
pub(crate) fn metadata(raw: &RawValue) -> Option<Metadata<'_>> {
    let text = raw.get();
    match text.as_bytes().first()? {
        b'{' => Metadata::from_object(Cow::Borrowed(raw)),
        b'"' => {
            let inner: Cow<'_, str> = serde_json::from_str(text).ok()?;
            let object: &RawValue = serde_json::from_str(inner.trim()).ok()?;
            Metadata::from_object(Cow::Owned(object.to_owned()))
        }
        b'[' => {
            let items: Vec<&RawValue> = serde_json::from_str(text).ok()?;
            items
                .into_iter()
                .find_map(|item| metadata(item).map(Metadata::into_owned))
        }
        _ => None,
    }
}
