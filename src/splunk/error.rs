//! Errors from talking to Splunk, classified as retryable or permanent, quoting Splunk's own words.

use std::sync::Arc;

use serde::Deserialize;

/// Longest slice of a Splunk error body quoted in an error message.
const MAX_QUOTED: usize = 500;

/// Something went wrong talking to Splunk. [`SplunkError::is_retryable`] says whether trying the
/// same request again later can succeed; messages never contain the bearer token.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SplunkError {
    /// 401/403: the configured token is wrong, expired or lacks the search capability.
    #[error(
        "Splunk rejected the bearer token (HTTP {status}): {message}; check splunk.bearer_token and the token's search permissions"
    )]
    Unauthorized { status: u16, message: String },
    /// 400: Splunk refused the search itself.
    #[error("Splunk refused the search (HTTP 400): {message}")]
    BadSearch { message: String },
    /// Any other HTTP error status (5xx and quota answers are retryable, other 4xx are not).
    #[error("Splunk answered HTTP {status}: {message}")]
    Http {
        status: u16,
        message: String,
        retryable: bool,
    },
    /// The connection failed, timed out or broke while reading.
    #[error("could not talk to Splunk: {message}")]
    Connection { message: String },
    /// The export stream ended before Splunk marked its last row: the result would be short.
    #[error(
        "the Splunk export stream ended after {rows} rows without its last row (connection cut)"
    )]
    StreamCut { rows: u64 },
    /// Splunk reported a fatal error inside a search (in-stream message or failed job).
    #[error("Splunk search failed: {message}")]
    SearchFailed { message: String, retryable: bool },
    /// The search job did not finish within `splunk.search_timeout_seconds`.
    #[error(
        "Splunk search job {sid} did not finish within {seconds}s (splunk.search_timeout_seconds)"
    )]
    SearchTimeout { sid: String, seconds: u64 },
    /// One line of the export stream exceeded the size limit.
    #[error("a Splunk export line exceeded {max} bytes")]
    LineTooLong { max: usize },
    /// Splunk answered something this client cannot read.
    #[error("unreadable answer from Splunk: {0}")]
    Protocol(String),
    /// The `[splunk]` configuration cannot be used.
    #[error("invalid Splunk configuration: {0}")]
    Config(String),
    /// Every search the service lets run at once (`splunk.max_concurrent_searches`) stayed busy
    /// for the whole wait: nothing was asked of Splunk.
    #[error(
        "all {limit} Splunk searches allowed at once (splunk.max_concurrent_searches) stayed busy for {seconds} s"
    )]
    Busy { limit: u32, seconds: u64 },
    /// The service's own database, which keeps the cluster-wide search quota, could not be
    /// reached (`unreachable`) or refused the quota's statement: nothing was asked of Splunk.
    #[error(
        "the service's database (Postgres) {}, so no Splunk search could start: {source}",
        if *unreachable { "is unreachable" } else { "failed keeping the Splunk search quota" }
    )]
    Database {
        unreachable: bool,
        #[source]
        source: Arc<sqlx::Error>,
    },
}

impl SplunkError {
    /// True when the same request may succeed later (5xx, quota, connection, timeout, cut stream).
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Http { retryable, .. } | Self::SearchFailed { retryable, .. } => *retryable,
            Self::Connection { .. }
            | Self::StreamCut { .. }
            | Self::SearchTimeout { .. }
            | Self::Busy { .. }
            | Self::Database { .. } => true,
            Self::Unauthorized { .. }
            | Self::BadSearch { .. }
            | Self::LineTooLong { .. }
            | Self::Protocol(_)
            | Self::Config(_) => false,
        }
    }

    /// Builds the error for a non-success HTTP answer from its status and body.
    pub fn from_response(status: u16, body: &[u8]) -> Self {
        let message = splunk_message(body).unwrap_or_else(|| fallback_text(status, body));
        match status {
            401 | 403 => Self::Unauthorized { status, message },
            400 if is_quota_message(&message) => Self::Http {
                status,
                message,
                retryable: true,
            },
            400 => Self::BadSearch { message },
            _ => {
                let retryable =
                    status >= 500 || status == 429 || status == 408 || is_quota_message(&message);
                Self::Http {
                    status,
                    message,
                    retryable,
                }
            }
        }
    }

    /// Classifies a reqwest transport error; the URL it names carries no credentials.
    pub(crate) fn transport(err: reqwest::Error) -> Self {
        let what = if err.is_timeout() {
            "timed out"
        } else if err.is_connect() {
            "connection failed"
        } else if err.is_body() || err.is_decode() {
            "reading the answer failed"
        } else {
            "request failed"
        };
        // `{:#}`-style chains are not available on reqwest::Error; walk sources by hand so the
        // root cause (refused, reset, DNS) reaches the operator.
        let mut message = format!("{what}: {err}");
        let mut source = std::error::Error::source(&err);
        while let Some(cause) = source {
            message.push_str(": ");
            message.push_str(&cause.to_string());
            source = cause.source();
        }
        if crate::http_client::mentions_certificate(&message) {
            message.push_str("; ");
            message.push_str(&crate::http_client::certificate_hint("splunk.ssl_ca_path"));
        }
        Self::Connection { message }
    }
}

impl SplunkError {
    /// Whether the service's own database, not Splunk, could not be reached: waiting for it
    /// spends nothing. (A statement it refused is [`SplunkError::Database`] too, but retried
    /// like any failure.)
    pub fn is_database(&self) -> bool {
        matches!(
            self,
            Self::Database {
                unreachable: true,
                ..
            }
        )
    }

    /// Whether Splunk refused the search for its concurrency quota (the role's `srchJobsQuota`).
    pub fn is_quota(&self) -> bool {
        match self {
            Self::Http { message, .. } | Self::SearchFailed { message, .. } => {
                is_quota_message(message)
            }
            _ => false,
        }
    }
}

/// True when Splunk's text says a concurrency or disk quota was hit, which clears by itself.
pub(crate) fn is_quota_message(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    lower.contains("maximum number of concurrent")
        || lower.contains("quota")
        || lower.contains("concurrency limit")
        || lower.contains("too many")
}

#[derive(Deserialize)]
struct JsonMessages {
    #[serde(default)]
    messages: Vec<JsonMessage>,
}

/// One `{"type": ..., "text": ...}` entry of a Splunk answer.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct JsonMessage {
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub text: String,
}

/// Splunk's own error text from a JSON (`{"messages":[..]}`) or XML (`<msg type=..>`) body.
pub fn splunk_message(body: &[u8]) -> Option<String> {
    let trimmed = body.trim_ascii_start();
    let texts = match trimmed.first() {
        Some(b'{') => serde_json::from_slice::<JsonMessages>(trimmed)
            .ok()?
            .messages
            .into_iter()
            .map(|m| format_message(&m.kind, &m.text))
            .collect::<Vec<_>>(),
        Some(b'<') => xml_messages(trimmed),
        _ => return None,
    };
    let joined = texts
        .into_iter()
        .filter(|t| !t.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    (!joined.is_empty()).then(|| quote(&joined))
}

fn format_message(kind: &str, text: &str) -> String {
    match (kind.is_empty(), text.trim()) {
        (_, "") => String::new(),
        (true, text) => text.to_owned(),
        (false, text) => format!("{kind}: {text}"),
    }
}

fn xml_messages(body: &[u8]) -> Vec<String> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_reader(body);
    let mut out = Vec::new();
    let mut current: Option<(String, String)> = None;
    let mut buf = Vec::new();
    loop {
        match reader.read_event_into(&mut buf) {
            Ok(Event::Start(e)) if e.local_name().as_ref() == b"msg" => {
                let kind = e
                    .attributes()
                    .flatten()
                    .find(|a| a.key.local_name().as_ref() == b"type")
                    .and_then(|a| a.unescape_value().ok().map(|v| v.into_owned()))
                    .unwrap_or_default();
                current = Some((kind, String::new()));
            }
            Ok(Event::Text(t)) => {
                if let (Some((_, text)), Ok(chunk)) = (current.as_mut(), t.unescape()) {
                    text.push_str(&chunk);
                }
            }
            Ok(Event::CData(t)) => {
                if let Some((_, text)) = current.as_mut() {
                    text.push_str(&String::from_utf8_lossy(&t));
                }
            }
            Ok(Event::End(e)) if e.local_name().as_ref() == b"msg" => {
                if let Some((kind, text)) = current.take() {
                    out.push(format_message(&kind, &text));
                }
            }
            Ok(Event::Eof) | Err(_) => break,
            _ => {}
        }
        buf.clear();
    }
    out
}

fn fallback_text(status: u16, body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        format!("no message (HTTP {status})")
    } else {
        quote(text)
    }
}

/// Shortens and de-controls text from Splunk so it cannot forge log lines.
fn quote(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(MAX_QUOTED)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    if text.chars().count() > MAX_QUOTED {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_json_messages() {
        let body = br#"{"messages":[{"type":"FATAL","text":"Error in 'search' command: Unable to parse the search"}]}"#;
        let err = SplunkError::from_response(400, body);
        assert!(matches!(err, SplunkError::BadSearch { .. }));
        assert!(!err.is_retryable());
        assert!(
            err.to_string()
                .contains("FATAL: Error in 'search' command: Unable to parse the search"),
            "{err}"
        );
    }

    #[test]
    fn quotes_xml_messages() {
        let body = br#"<?xml version="1.0" encoding="UTF-8"?>
<response>
  <messages>
    <msg type="WARN">call not properly authenticated</msg>
  </messages>
</response>"#;
        let err = SplunkError::from_response(401, body);
        assert!(!err.is_retryable());
        let text = err.to_string();
        assert!(text.contains("Splunk rejected the bearer token"), "{text}");
        assert!(
            text.contains("WARN: call not properly authenticated"),
            "{text}"
        );
    }

    #[test]
    fn classifies_statuses() {
        let quota = br#"{"messages":[{"type":"ERROR","text":"Search not executed: The maximum number of concurrent historical searches for this user based on their role quota has been reached."}]}"#;
        assert!(SplunkError::from_response(503, quota).is_retryable());
        assert!(SplunkError::from_response(400, quota).is_retryable());
        assert!(SplunkError::from_response(500, b"").is_retryable());
        assert!(SplunkError::from_response(429, b"").is_retryable());
        assert!(!SplunkError::from_response(403, b"").is_retryable());
        assert!(
            !SplunkError::from_response(
                404,
                b"<response><messages><msg type=\"FATAL\">Unknown sid.</msg></messages></response>"
            )
            .is_retryable()
        );
    }

    #[test]
    fn plain_bodies_are_quoted_without_control_characters() {
        let err = SplunkError::from_response(502, b"bad gateway\r\nX-Forged: 1");
        let text = err.to_string();
        assert!(!text.contains('\n') && !text.contains('\r'), "{text}");
        assert!(text.contains("bad gateway"));
        assert_eq!(splunk_message(b"not json"), None);
        assert!(
            SplunkError::from_response(503, b"")
                .to_string()
                .contains("no message")
        );
    }
}
