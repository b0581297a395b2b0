//! One audit event as the registry shows it (Quay's `Log.to_dict`).

use chrono::{DateTime, Datelike, Timelike, Utc};
use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};

/// Who performed an action, with Quay's avatar block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PerformerInfo {
    pub name: String,
    pub is_robot: bool,
    /// Lowercase hex SHA-256 of the trimmed, lowercased e-mail (or name when there is none).
    pub avatar_hash: String,
    pub avatar_color: &'static str,
}

/// One mapped audit event.
#[derive(Debug, Clone, PartialEq)]
pub struct LogEntry {
    pub kind: String,
    pub datetime: DateTime<Utc>,
    pub namespace: Option<String>,
    pub repository: Option<String>,
    pub ip: Option<String>,
    /// Always a JSON object.
    pub metadata: serde_json::Map<String, serde_json::Value>,
    pub performer: Option<PerformerInfo>,
}

/// Quay's date format for logs: RFC 2822 with `-0000`, e.g. `Tue, 18 Jun 2024 18:59:13 -0000`.
pub fn quay_datetime(t: &DateTime<Utc>) -> String {
    QuayDatetime(t).to_string()
}

impl LogEntry {
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

impl Serialize for LogEntry {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        self.serialize_fields(&mut map)?;
        map.end()
    }
}

/// A log object carrying Quay's superuser `namespace` block.
pub struct LogWithNamespace<'a>(&'a LogEntry);

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

/// Quay's time format, written by hand: chrono's `format` re-parses its pattern on every call,
/// which showed up in export profiles.
struct QuayDatetime<'a>(&'a DateTime<Utc>);

impl std::fmt::Display for QuayDatetime<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
        const MONTHS: [&str; 12] = [
            "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
        ];
        let t = self.0;
        write!(
            f,
            "{}, {:02} {} {} {:02}:{:02}:{:02} -0000",
            DAYS[t.weekday().num_days_from_monday() as usize],
            t.day(),
            MONTHS[t.month0() as usize],
            t.year(),
            t.hour(),
            t.minute(),
            t.second()
        )
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
    fn new(p: &'a PerformerInfo) -> Self {
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
            metadata: serde_json::json!({"tag": "v1"})
                .as_object()
                .unwrap()
                .clone(),
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
