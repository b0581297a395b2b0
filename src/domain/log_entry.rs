//! One audit event as the registry shows it (Quay's `Log.to_dict`).

use std::borrow::Cow;
use std::sync::Arc;

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};
use serde_json::value::RawValue;

/// Who performed an action, with Quay's avatar block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PerformerInfo<'a> {
    pub name: Cow<'a, str>,
    pub is_robot: bool,
    /// Lowercase hex SHA-256 of the trimmed, lowercased e-mail (or name when there is none);
    /// shared, because an export repeats the same few performers millions of times.
    pub avatar_hash: Arc<str>,
    pub avatar_color: &'static str,
}

/// One mapped audit event. Text borrows from the Splunk row it was read from where it can, so
/// the export path maps and encodes an event without copying it; [`LogEntry::into_owned`]
/// detaches it.
#[derive(Debug, Clone, PartialEq)]
pub struct LogEntry<'a> {
    pub kind: Cow<'a, str>,
    pub datetime: DateTime<Utc>,
    pub namespace: Option<Cow<'a, str>>,
    pub repository: Option<Cow<'a, str>>,
    pub ip: Option<Cow<'a, str>>,
    pub metadata: Metadata<'a>,
    pub performer: Option<PerformerInfo<'a>>,
}

/// An event's metadata: always a JSON object, kept as the JSON text the event holds (members in
/// the producer's order) so it is copied to the archive rather than parsed and rebuilt.
#[derive(Debug, Clone, Default)]
pub struct Metadata<'a>(Option<Cow<'a, RawValue>>);

impl<'a> Metadata<'a> {
    /// Metadata from JSON text that is known to hold an object (`None` for anything else).
    pub fn from_object(raw: Cow<'a, RawValue>) -> Option<Self> {
        raw.get().starts_with('{').then_some(Self(Some(raw)))
    }

    /// Metadata built from a JSON map.
    pub fn from_map(map: &serde_json::Map<String, serde_json::Value>) -> Self {
        let text = serde_json::to_string(map).unwrap_or_else(|_| "{}".into());
        Self(RawValue::from_string(text).ok().map(Cow::Owned))
    }

    /// The object's JSON text (`{}` when the event has none).
    pub fn as_str(&self) -> &str {
        self.0.as_deref().map_or("{}", RawValue::get)
    }

    /// The object parsed, for callers that inspect members.
    pub fn to_map(&self) -> serde_json::Map<String, serde_json::Value> {
        serde_json::from_str(self.as_str()).unwrap_or_default()
    }

    /// Whether the object has no members.
    pub fn is_empty(&self) -> bool {
        self.to_map().is_empty()
    }

    /// The same metadata, owning its text.
    pub fn into_owned(self) -> Metadata<'static> {
        Metadata(self.0.map(|raw| Cow::Owned(raw.into_owned())))
    }
}

/// Equal when the objects are equal as JSON, whatever their spacing or member order.
impl PartialEq for Metadata<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str() || self.to_map() == other.to_map()
    }
}

impl Serialize for Metadata<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match &self.0 {
            Some(raw) => raw.serialize(serializer),
            None => serializer.serialize_map(Some(0))?.end(),
        }
    }
}

impl PerformerInfo<'_> {
    /// The same performer, owning its name.
    pub fn into_owned(self) -> PerformerInfo<'static> {
        PerformerInfo {
            name: Cow::Owned(self.name.into_owned()),
            is_robot: self.is_robot,
            avatar_hash: self.avatar_hash,
            avatar_color: self.avatar_color,
        }
    }
}

/// Quay's date format for logs: RFC 2822 with `-0000`, e.g. `Tue, 18 Jun 2024 18:59:13 -0000`.
pub fn quay_datetime(t: &DateTime<Utc>) -> String {
    QuayDatetime(t).to_string()
}

impl LogEntry<'_> {
    /// The same event, owning all its text.
    pub fn into_owned(self) -> LogEntry<'static> {
        let owned = |s: Option<Cow<'_, str>>| s.map(|s| Cow::Owned(s.into_owned()));
        LogEntry {
            kind: Cow::Owned(self.kind.into_owned()),
            datetime: self.datetime,
            namespace: owned(self.namespace),
            repository: owned(self.repository),
            ip: owned(self.ip),
            metadata: self.metadata.into_owned(),
            performer: self.performer.map(PerformerInfo::into_owned),
        }
    }

    /// The log object with the `namespace` block superuser listings add.
    pub fn with_namespace(&self) -> LogWithNamespace<'_> {
        LogWithNamespace(self)
    }

    fn serialize_fields<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
        map.serialize_entry("kind", &self.kind)?;
        map.serialize_entry("metadata", &self.metadata)?;
        map.serialize_entry("ip", &self.ip)?;
        map.serialize_entry("datetime", &QuayDatetime(&self.datetime))?;
        if let Some(p) = &self.performer {
            map.serialize_entry("performer", &PerformerJson::new(p))?;
        }
        Ok(())
    }
}

impl Serialize for LogEntry<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        self.serialize_fields(&mut map)?;
        map.end()
    }
}

/// A log object carrying Quay's superuser `namespace` block.
pub struct LogWithNamespace<'a>(&'a LogEntry<'a>);

impl Serialize for LogWithNamespace<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        self.0.serialize_fields(&mut map)?;
        if let Some(ns) = &self.0.namespace {
            map.serialize_entry(
                "namespace",
                &serde_json::json!({"kind": "org", "name": ns, "avatar": serde_json::Value::Null}),
            )?;
        }
        map.end()
    }
}

/// Appends Quay's date form (`Tue, 18 Jun 2024 18:59:13 -0000`), written by hand: chrono's
/// `format` re-parses its pattern on every call, which showed up in export profiles.
pub fn push_quay_datetime(out: &mut Vec<u8>, t: &DateTime<Utc>) {
    const DAYS: [&[u8]; 7] = [b"Mon", b"Tue", b"Wed", b"Thu", b"Fri", b"Sat", b"Sun"];
    const MONTHS: [&[u8]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    fn two(out: &mut Vec<u8>, n: u32) {
        out.extend_from_slice(&[b'0' + (n / 10 % 10) as u8, b'0' + (n % 10) as u8]);
    }
    // Read the fields from the naive time once: `DateTime`'s accessors each redo the offset.
    let t = t.naive_utc();
    let year = t.year();
    out.extend_from_slice(DAYS[t.weekday().num_days_from_monday() as usize]);
    out.extend_from_slice(b", ");
    two(out, t.day());
    out.push(b' ');
    out.extend_from_slice(MONTHS[t.month0() as usize]);
    out.push(b' ');
    if (1000..=9999).contains(&year) {
        let y = year as u32;
        two(out, y / 100);
        two(out, y % 100);
    } else {
        out.extend_from_slice(year.to_string().as_bytes());
    }
    out.push(b' ');
    two(out, t.hour());
    out.push(b':');
    two(out, t.minute());
    out.push(b':');
    two(out, t.second());
    out.extend_from_slice(b" -0000");
}

/// Quay's time format as a `Display` value.
struct QuayDatetime<'a>(&'a DateTime<Utc>);

impl std::fmt::Display for QuayDatetime<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut out = Vec::with_capacity(32);
        push_quay_datetime(&mut out, self.0);
        f.write_str(std::str::from_utf8(&out).map_err(|_| std::fmt::Error)?)
    }
}

impl Serialize for QuayDatetime<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[derive(Serialize)]
struct PerformerJson<'a> {
    kind: &'static str,
    name: &'a str,
    is_robot: bool,
    avatar: AvatarJson<'a>,
}

#[derive(Serialize)]
struct AvatarJson<'a> {
    name: &'a str,
    hash: &'a str,
    color: &'static str,
    kind: &'static str,
}

impl<'a> PerformerJson<'a> {
    fn new(p: &'a PerformerInfo<'a>) -> Self {
        Self {
            kind: "user",
            name: &p.name,
            is_robot: p.is_robot,
            avatar: AvatarJson {
                name: &p.name,
                hash: &p.avatar_hash,
                color: p.avatar_color,
                kind: if p.is_robot { "robot" } else { "user" },
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_as_quays_log_object() {
        let t = DateTime::parse_from_rfc3339("2024-06-18T18:59:13Z")
            .unwrap()
            .with_timezone(&Utc);
        let entry = LogEntry {
            kind: "push_repo".into(),
            datetime: t,
            namespace: Some("acme".into()),
            repository: Some("web".into()),
            ip: Some("192.0.2.1".into()),
            metadata: Metadata::from_map(serde_json::json!({"tag": "v1"}).as_object().unwrap()),
            performer: Some(PerformerInfo {
                name: "acme+bot".into(),
                is_robot: true,
                avatar_hash: "ab".into(),
                avatar_color: "#969696",
            }),
        };
        assert_eq!(
            serde_json::to_value(&entry).unwrap(),
            serde_json::json!({
                "kind": "push_repo", "metadata": {"tag": "v1"}, "ip": "192.0.2.1",
                "datetime": "Tue, 18 Jun 2024 18:59:13 -0000",
                "performer": {"kind": "user", "name": "acme+bot", "is_robot": true,
                    "avatar": {"name": "acme+bot", "hash": "ab", "color": "#969696", "kind": "robot"}},
            })
        );
        let with_ns = serde_json::to_value(entry.with_namespace()).unwrap();
        assert_eq!(with_ns["namespace"]["name"], "acme");
    }

    #[test]
    fn hand_written_dates_match_chrono_everywhere() {
        for secs in (-2_000_000_000i64..4_000_000_000).step_by(86_399 * 37 + 13) {
            let t = DateTime::from_timestamp(secs, 0).unwrap();
            assert_eq!(
                quay_datetime(&t),
                t.format("%a, %d %b %Y %H:%M:%S -0000").to_string()
            );
        }
    }

    #[test]
    fn dates_use_quays_rfc2822_form() {
        let t = DateTime::parse_from_rfc3339("2024-06-18T18:59:13Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(quay_datetime(&t), "Tue, 18 Jun 2024 18:59:13 -0000");
    }
}
