//! Write endpoints: `receivers/simple` (raw body) and HEC `collector/event` (JSON envelopes).

use axum::http::StatusCode;
use axum::response::Response;
use chrono::Utc;
use serde_json::Value;

use super::Shared;
use super::render::{self, Mode, xml_escape};
use super::store::StoredEvent;
use super::timefmt::event_time;

/// `receivers/simple`: the body is the event; JSON lines each become an event, other text one.
pub fn simple(
    shared: &Shared,
    body: &[u8],
    index: Option<&str>,
    sourcetype: Option<&str>,
) -> Response {
    let ctx = &shared.ctx;
    let index = index.filter(|s| !s.is_empty()).unwrap_or(&ctx.index);
    let sourcetype = sourcetype
        .filter(|s| !s.is_empty())
        .unwrap_or(&ctx.sourcetype);
    let text = String::from_utf8_lossy(body);
    let now = Utc::now().timestamp_micros();
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let all_json = !lines.is_empty()
        && lines
            .iter()
            .all(|l| serde_json::from_str::<Value>(l).is_ok());
    let events: Vec<String> = if all_json {
        lines.iter().map(|l| l.to_string()).collect()
    } else if text.trim().is_empty() {
        Vec::new()
    } else {
        vec![text.trim().to_string()]
    };
    for raw in events {
        shared
            .store
            .insert(StoredEvent::new(raw, index, sourcetype, now));
    }
    let xml = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<response>\n<results>\n<result>\n<field k='_index'>\n  <value><text>{}</text></value>\n</field>\n<field k='bytes'>\n  <value><text>{}</text></value>\n</field>\n<field k='host'>\n  <value><text>splunk-emulator</text></value>\n</field>\n<field k='sourcetype'>\n  <value><text>{}</text></value>\n</field>\n</result>\n</results>\n</response>\n",
        xml_escape(index),
        body.len(),
        xml_escape(sourcetype)
    );
    render::body(StatusCode::OK, Mode::Xml, xml)
}

fn hec_reply(status: StatusCode, text: &str, code: u32) -> Response {
    render::body(
        status,
        Mode::Json,
        serde_json::json!({"text": text, "code": code}).to_string(),
    )
}

/// HEC reply for a missing or wrong token.
pub fn hec_unauthorized() -> Response {
    hec_reply(StatusCode::UNAUTHORIZED, "Invalid authorization", 3)
}

/// HEC reply while the collector cannot take events.
pub fn hec_busy() -> Response {
    hec_reply(StatusCode::SERVICE_UNAVAILABLE, "Server is busy", 9)
}

/// HEC `collector/event`: one or more concatenated `{"event": ..., "time": ..., "index": ...}`.
pub fn hec(shared: &Shared, body: &[u8]) -> Response {
    let ctx = &shared.ctx;
    let now = Utc::now().timestamp_micros();
    let mut events = Vec::new();
    for (n, env) in serde_json::Deserializer::from_slice(body)
        .into_iter::<Value>()
        .enumerate()
    {
        let Ok(Value::Object(env)) = env else {
            return hec_reply(StatusCode::BAD_REQUEST, "Invalid data format", 6);
        };
        let Some(event) = env.get("event") else {
            return hec_reply(
                StatusCode::BAD_REQUEST,
                &format!("Event field is required (event {n})"),
                12,
            );
        };
        let raw = match event {
            Value::String(s) => s.clone(),
            Value::Null => {
                return hec_reply(StatusCode::BAD_REQUEST, "Event field cannot be blank", 13);
            }
            other => other.to_string(),
        };
        let fallback = env.get("time").and_then(event_time).unwrap_or(now);
        let index = env
            .get("index")
            .and_then(Value::as_str)
            .unwrap_or(&ctx.index)
            .to_string();
        let sourcetype = env
            .get("sourcetype")
            .and_then(Value::as_str)
            .unwrap_or(&ctx.sourcetype)
            .to_string();
        events.push(StoredEvent::new(raw, &index, &sourcetype, fallback));
    }
    if events.is_empty() {
        return hec_reply(StatusCode::BAD_REQUEST, "No data", 5);
    }
    for ev in events {
        shared.store.insert(ev);
    }
    hec_reply(StatusCode::OK, "Success", 0)
}
