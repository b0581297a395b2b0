//! The audit trail of export requests, as Quay keeps it: `export_logs_success` and
//! `export_logs_failure` (quay/quay `endpoints/api/logs.py` `_log_export_success` /
//! `_log_export_failure`), written where Quay's audit logs live — Splunk, through HTTP Event
//! Collector, in the event shape of Quay's Splunk producers (`data/logs_model/splunk_logs_model.py`
//! `log_action`, `logs_producer/splunk_hec_logs_producer.py`).
//!
//! Each event is an `audit_event` job (`worker::jobs`) enqueued in the request's own transaction;
//! [`AuditDelivery`] (run by the workers' job runner) delivers it with retries. The request never
//! waits on Splunk, an event survives Splunk being down, and a redelivered event carries the same
//! `id`.

mod delivery;
mod hec;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::config::{AuditSink, Config};
use crate::queue::jobs::{AUDIT_EVENT, enqueue_unique};

pub use delivery::{AuditDelivery, AuditEventArgs};
pub use hec::{BeforePost, HecError};

/// One audit event, before it is shaped for the sink.
#[derive(Debug, Clone)]
pub struct AuditEvent {
    pub id: Uuid,
    pub kind: &'static str,
    /// The namespace the export is of (Quay's `account`).
    pub account: String,
    pub performer: String,
    pub repository: Option<String>,
    /// The caller's address (see [`client_ip`]).
    pub ip: Option<String>,
    pub metadata: Value,
    pub at: DateTime<Utc>,
}

/// The export request that an event describes.
#[derive(Debug, Clone, Copy)]
pub struct ExportRequest<'a> {
    pub account: &'a str,
    pub performer: &'a str,
    pub repository: Option<&'a str>,
    pub ip: Option<&'a str>,
    pub callback_url: Option<&'a str>,
    pub callback_email: Option<&'a str>,
}

impl AuditEvent {
    /// `export_logs_success`: metadata as Quay's (`export_id`, `message`, `url`, `email`, `repo`).
    pub fn export_queued(request: ExportRequest<'_>, export_id: &str) -> Self {
        let metadata = json!({
            "export_id": export_id,
            "message": "queued for export",
        });
        Self::new("export_logs_success", request, metadata)
    }

    /// `export_logs_failure` for a request refused after the caller was authorized (Quay logs
    /// none for callers it refuses outright: they could write into anyone's audit log).
    pub fn export_refused(request: ExportRequest<'_>, error: &str) -> Self {
        Self::new("export_logs_failure", request, json!({ "error": error }))
    }

    fn new(kind: &'static str, request: ExportRequest<'_>, mut metadata: Value) -> Self {
        metadata["url"] = request
            .callback_url
            .map_or(Value::Null, |u| redact_url(u).into());
        metadata["email"] = request.callback_email.map_or(Value::Null, Value::from);
        if let Some(repo) = request.repository {
            metadata["repo"] = Value::from(repo);
        }
        Self {
            id: Uuid::new_v4(),
            kind,
            account: request.account.to_owned(),
            performer: request.performer.to_owned(),
            repository: request.repository.map(str::to_owned),
            ip: request.ip.map(str::to_owned),
            metadata,
            at: Utc::now(),
        }
    }

    /// Quay's `log_data`, plus the event's `id` so a redelivery can be recognised.
    pub fn log_data(&self) -> Map<String, Value> {
        let mut metadata = self.metadata.clone();
        metadata["date/time"] = Value::from(self.at.format("%Y-%m-%d %H:%M:%S%.6f").to_string());
        let data = json!({
            "id": self.id.to_string(),
            "kind": self.kind,
            "account": self.account,
            "performer": self.performer,
            "repository": self.repository,
            "ip": self.ip,
            "metadata_json": metadata,
            // Quay's HEC producer writes datetimes as epoch seconds (`_splunk_json_serialize`).
            "datetime": self.at.timestamp(),
        });
        match data {
            Value::Object(data) => data,
            _ => unreachable!("an object literal"),
        }
    }
}

/// A callback URL without what may be a credential (user info, query, fragment).
fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.set_query(None);
            parsed.set_fragment(None);
            parsed.to_string()
        }
        Err(_) => "(not a URL)".into(),
    }
}

/// Enqueues `event`'s delivery in the caller's transaction, once per event id; nothing when
/// `[audit] sink = "none"`.
pub async fn record(
    conn: &mut sqlx::PgConnection,
    config: &Config,
    event: &AuditEvent,
) -> sqlx::Result<()> {
    if config.audit.sink == AuditSink::None {
        return Ok(());
    }
    let args = serde_json::to_value(AuditEventArgs::of(event))
        .map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    enqueue_unique(conn, AUDIT_EVENT, &event.id.to_string(), &args).await?;
    Ok(())
}

/// The caller's address: the connection's peer, or — when the peer is one of
/// `server.trusted_proxies` — the last address in `X-Forwarded-For` that is not a trusted proxy.
pub fn client_ip(
    peer: Option<std::net::IpAddr>,
    forwarded_for: Option<&str>,
    trusted: &[ipnet::IpNet],
) -> Option<String> {
    let peer = peer?;
    let is_trusted = |ip: &std::net::IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return Some(peer.to_string());
    }
    let mut chosen = peer;
    for hop in forwarded_for.unwrap_or_default().rsplit(',') {
        let Ok(ip) = hop.trim().parse::<std::net::IpAddr>() else {
            break;
        };
        chosen = ip;
        if !is_trusted(&ip) {
            break;
        }
    }
    Some(chosen.to_string())
}

/// `server.trusted_proxies` as networks (validated when the configuration loaded).
pub fn trusted_proxies(config: &Config) -> Vec<ipnet::IpNet> {
    config
        .server
        .trusted_proxies
        .iter()
        .filter_map(|p| crate::domain::parse_net(p))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> ExportRequest<'static> {
        ExportRequest {
            account: "acme",
            performer: "alice",
            repository: Some("web"),
            ip: Some("192.0.2.7"),
            callback_url: Some("https://u:p@hooks.example.com/x?token=s3cret#f"),
            callback_email: Some("a@example.com"),
        }
    }

    #[test]
    fn events_have_quays_shape() {
        let event = AuditEvent::export_queued(request(), "abc").log_data();
        assert_eq!(event["kind"], "export_logs_success");
        assert_eq!(event["account"], "acme");
        assert_eq!(event["performer"], "alice");
        assert_eq!(event["repository"], "web");
        let metadata = &event["metadata_json"];
        assert_eq!(metadata["export_id"], "abc");
        assert_eq!(metadata["message"], "queued for export");
        assert_eq!(metadata["url"], "https://hooks.example.com/x");
        assert_eq!(metadata["email"], "a@example.com");
        assert_eq!(metadata["repo"], "web");
        assert!(event["datetime"].is_i64());
        let failure = AuditEvent::export_refused(request(), "invalid request").log_data();
        assert_eq!(failure["kind"], "export_logs_failure");
        assert_eq!(failure["metadata_json"]["error"], "invalid request");
        assert!(failure["metadata_json"].get("export_id").is_none());
    }

    #[test]
    fn forwarded_addresses_count_only_behind_a_trusted_proxy() {
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        let ip = |s: &str| Some(s.parse().unwrap());
        assert_eq!(
            client_ip(ip("203.0.113.9"), Some("198.51.100.1"), &trusted).as_deref(),
            Some("203.0.113.9")
        );
        assert_eq!(
            client_ip(ip("10.1.1.1"), Some("198.51.100.1, 10.2.2.2"), &trusted).as_deref(),
            Some("198.51.100.1")
        );
        // A client cannot push a fake address in front of the proxy's own entry.
        assert_eq!(
            client_ip(ip("10.1.1.1"), Some("1.2.3.4, 198.51.100.1"), &trusted).as_deref(),
            Some("198.51.100.1")
        );
        assert_eq!(
            client_ip(ip("10.1.1.1"), Some("garbage"), &trusted).as_deref(),
            Some("10.1.1.1")
        );
        assert_eq!(client_ip(None, None, &trusted), None);
    }
}
