//! One audit event as the registry shows it (Quay's `Log.to_dict`).

use chrono::{DateTime, Utc};
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
    t.format("%a, %d %b %Y %H:%M:%S -0000").to_string()
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
        map.serialize_entry("datetime", &quay_datetime(&self.datetime))?;
        if let Some(p) = &self.performer {
            map.serialize_entry("performer", &PerformerJson(p))?;
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

struct PerformerJson<'a>(&'a PerformerInfo);

impl Serialize for PerformerJson<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let p = self.0;
        let mut map = serializer.serialize_map(Some(4))?;
        map.serialize_entry("kind", "user")?;
        map.serialize_entry("name", &p.name)?;
        map.serialize_entry("is_robot", &p.is_robot)?;
        map.serialize_entry(
            "avatar",
            &serde_json::json!({
                "name": p.name,
                "hash": p.avatar_hash,
                "color": p.avatar_color,
                "kind": if p.is_robot { "robot" } else { "user" },
            }),
        )?;
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_use_quays_rfc2822_form() {
        let t = DateTime::parse_from_rfc3339("2024-06-18T18:59:13Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(quay_datetime(&t), "Tue, 18 Jun 2024 18:59:13 -0000");
    }
}
