//! Indexed events (data files and ingest), kept sorted by `_time` in memory.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};

use serde_json::Value;

use super::timefmt::{Micros, event_time, splunk_time};

/// One indexed event with its extracted fields and pre-rendered result object.
#[derive(Debug)]
pub struct StoredEvent {
    pub time: Micros,
    pub index: String,
    pub sourcetype: String,
    pub raw: String,
    /// Top-level members of a JSON event as Splunk extracts them (objects as JSON text).
    pub fields: Vec<(String, String)>,
    /// The row as `results`/`export` render it, computed once at ingest.
    pub result_json: String,
}

/// Fields Splunk sets itself; an event member with the same name does not override them.
fn is_reserved(name: &str) -> bool {
    name.starts_with('_') || name == "index" || name == "sourcetype"
}

fn field_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

fn push_json_str(out: &mut String, s: &str) {
    out.push_str(&Value::String(s.to_string()).to_string());
}

impl StoredEvent {
    /// Builds an event from its raw text; `_time` is the event's `datetime`, else `fallback`.
    pub fn new(raw: String, index: &str, sourcetype: &str, fallback: Micros) -> Self {
        let parsed: Option<serde_json::Map<String, Value>> = serde_json::from_str(&raw).ok();
        let time = parsed
            .as_ref()
            .and_then(|m| m.get("datetime"))
            .and_then(event_time)
            .unwrap_or(fallback);
        let fields: Vec<(String, String)> = parsed
            .iter()
            .flat_map(|m| m.iter())
            .filter(|(k, _)| !is_reserved(k))
            .filter_map(|(k, v)| field_text(v).map(|t| (k.clone(), t)))
            .collect();
        let mut result_json = String::with_capacity(raw.len() * 2 + 128);
        result_json.push_str("{\"_raw\":");
        push_json_str(&mut result_json, &raw);
        result_json.push_str(",\"_time\":");
        push_json_str(&mut result_json, &splunk_time(time));
        result_json.push_str(",\"index\":");
        push_json_str(&mut result_json, index);
        result_json.push_str(",\"sourcetype\":");
        push_json_str(&mut result_json, sourcetype);
        for (k, v) in &fields {
            result_json.push(',');
            push_json_str(&mut result_json, k);
            result_json.push(':');
            push_json_str(&mut result_json, v);
        }
        result_json.push('}');
        Self {
            time,
            index: index.to_string(),
            sourcetype: sourcetype.to_string(),
            raw,
            fields,
            result_json,
        }
    }

    /// A field's value: Splunk's own fields first, then extracted ones.
    pub fn field(&self, name: &str) -> Option<Cow<'_, str>> {
        match name {
            "index" => Some(Cow::Borrowed(&self.index)),
            "sourcetype" => Some(Cow::Borrowed(&self.sourcetype)),
            "_raw" => Some(Cow::Borrowed(&self.raw)),
            "_time" => Some(Cow::Owned(splunk_time(self.time))),
            _ => self
                .fields
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| Cow::Borrowed(v.as_str())),
        }
    }

    /// The event as JSON (its raw text parsed; a non-JSON event becomes a string).
    pub fn value(&self) -> Value {
        serde_json::from_str(&self.raw).unwrap_or_else(|_| Value::String(self.raw.clone()))
    }
}

/// All indexed events, ascending by `_time` (ties keep arrival order).
#[derive(Debug, Default)]
pub struct Store {
    events: RwLock<Vec<Arc<StoredEvent>>>,
}

impl Store {
    /// Adds one event in time order.
    pub fn insert(&self, ev: StoredEvent) {
        let mut events = self.events.write().unwrap_or_else(|e| e.into_inner());
        let pos = events.partition_point(|e| e.time <= ev.time);
        events.insert(pos, Arc::new(ev));
    }

    /// Adds many events at once (data files), re-sorting once.
    pub fn extend(&self, evs: Vec<StoredEvent>) {
        let mut events = self.events.write().unwrap_or_else(|e| e.into_inner());
        events.extend(evs.into_iter().map(Arc::new));
        events.sort_by_key(|e| e.time);
    }

    /// The events in `[earliest, latest)` that satisfy `keep`, ascending by time.
    pub fn select(
        &self,
        earliest: Option<Micros>,
        latest: Option<Micros>,
        keep: impl Fn(&StoredEvent) -> bool,
    ) -> Vec<Arc<StoredEvent>> {
        let events = self.events.read().unwrap_or_else(|e| e.into_inner());
        let lo = earliest.map_or(0, |t| events.partition_point(|e| e.time < t));
        let hi = latest.map_or(events.len(), |t| events.partition_point(|e| e.time < t));
        events
            .get(lo..hi.max(lo))
            .unwrap_or_default()
            .iter()
            .filter(|e| keep(e))
            .cloned()
            .collect()
    }

    /// Names of the indexes that hold at least one event.
    pub fn index_names(&self) -> BTreeSet<String> {
        let events = self.events.read().unwrap_or_else(|e| e.into_inner());
        events.iter().map(|e| e.index.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extraction_and_time() {
        let raw = r#"{"kind":"push_repo","account":"org","metadata_json":{"a":1},"ip":null,"n":3,"datetime":"2024-01-05T10:00:00Z","index":"evil"}"#;
        let ev = StoredEvent::new(raw.into(), "quay_logs", "_json", 0);
        assert_eq!(ev.time, 1_704_448_800_000_000);
        assert_eq!(ev.field("index").as_deref(), Some("quay_logs"));
        assert_eq!(ev.field("metadata_json").as_deref(), Some(r#"{"a":1}"#));
        assert_eq!(ev.field("n").as_deref(), Some("3"));
        assert_eq!(ev.field("ip"), None);
        let row: Value = serde_json::from_str(&ev.result_json).unwrap();
        assert_eq!(row["_raw"], raw);
        assert_eq!(row["_time"], "2024-01-05T10:00:00.000+00:00");
        assert_eq!(row["index"], "quay_logs");
    }

    #[test]
    fn select_is_half_open_and_sorted() {
        let store = Store::default();
        for t in [3, 1, 2, 2] {
            store.insert(StoredEvent::new(
                format!(r#"{{"datetime":{t}}}"#),
                "i",
                "s",
                0,
            ));
        }
        let times: Vec<_> = store
            .select(Some(2_000_000), Some(3_000_000), |_| true)
            .iter()
            .map(|e| e.time)
            .collect();
        assert_eq!(times, vec![2_000_000, 2_000_000]);
    }
}
