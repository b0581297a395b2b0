//! Splunk HTTP Event Collector, as audit delivery posts to it: Quay's event envelope, the HEC
//! token, and the TLS options of `[audit]`.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};
use uuid::Uuid;

use crate::config::{Config, Secret};

/// A test seam, called with the event ids of a post just before it is sent, inside the
/// attempt: a test makes it panic to show that the event is shipped again later, neither lost
/// nor sent twice. Not set outside tests.
pub type BeforePost = Arc<dyn Fn(&[Uuid]) + Send + Sync>;

/// Why Splunk HEC did not take a post; each is worth another attempt.
#[derive(Debug, thiserror::Error)]
pub enum HecError {
    /// HEC's TLS certificate is not trusted.
    #[error("HEC {url}: {source}; {hint}")]
    Certificate {
        url: String,
        hint: String,
        #[source]
        source: reqwest::Error,
    },
    /// HEC could not be reached (connection, timeout).
    #[error("HEC unreachable: {0}")]
    Unreachable(#[source] reqwest::Error),
    /// HEC answered, and refused the events.
    #[error("HEC answered {status}: {body}")]
    Refused {
        status: reqwest::StatusCode,
        /// The start of HEC's answer (at most 200 characters).
        body: String,
    },
}

/// A client of Splunk HEC configured from `[audit]`.
#[derive(Clone)]
pub(super) struct Hec {
    http: reqwest::Client,
    pub(super) url: String,
    token: Secret,
    index: String,
    sourcetype: String,
    host: String,
    pub(super) before_post: Option<BeforePost>,
}

impl Hec {
    /// The client for `[audit]`, with its TLS options and timeout.
    pub(super) fn new(config: &Config) -> anyhow::Result<Self> {
        let audit = &config.audit;
        let http = crate::http_client::builder(
            audit.verify_ssl,
            audit.ssl_ca_path.as_deref(),
            "audit.ssl_ca_path",
        )
        .map_err(anyhow::Error::msg)?
        .timeout(Duration::from_secs(audit.timeout_seconds.max(1)))
        .build()?;
        let host = if audit.host.is_empty() {
            url::Url::parse(&config.server.public_url)
                .ok()
                .and_then(|u| u.host_str().map(str::to_owned))
                .unwrap_or_else(|| "logexport".into())
        } else {
            audit.host.clone()
        };
        Ok(Self {
            http,
            url: audit.hec_url.clone(),
            token: audit.hec_token.clone(),
            index: audit.index.clone(),
            sourcetype: audit.sourcetype.clone(),
            host,
            before_post: None,
        })
    }

    /// Sends `events` (with their `ids`) in Splunk's envelope, in one post.
    pub(super) async fn ship(
        &self,
        ids: &[Uuid],
        events: &[&Map<String, Value>],
    ) -> Result<(), HecError> {
        if let Some(hook) = &self.before_post {
            hook(ids);
        }
        let mut body = Vec::new();
        for event in events {
            let mut envelope = json!({
                "event": event,
                "time": event.get("datetime"),
                "host": self.host,
                "sourcetype": self.sourcetype,
            });
            if !self.index.is_empty() {
                envelope["index"] = Value::from(self.index.as_str());
            }
            serde_json::to_writer(&mut body, &envelope).expect("JSON to memory");
        }
        self.post(body).await
    }

    async fn post(&self, body: Vec<u8>) -> Result<(), HecError> {
        let response = self
            .http
            .post(&self.url)
            .header("authorization", format!("Splunk {}", self.token.expose()))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| {
                if crate::http_client::is_certificate_error(&e) {
                    HecError::Certificate {
                        url: self.url.clone(),
                        hint: crate::http_client::certificate_hint("audit.ssl_ca_path"),
                        source: e,
                    }
                } else {
                    HecError::Unreachable(e)
                }
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let text = response.text().await.unwrap_or_default();
        Err(HecError::Refused {
            status,
            body: text.chars().take(200).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_names_hec_its_status_and_its_answer() {
        let refused = HecError::Refused {
            status: reqwest::StatusCode::SERVICE_UNAVAILABLE,
            body: "Server is busy".into(),
        };
        assert_eq!(
            refused.to_string(),
            "HEC answered 503 Service Unavailable: Server is busy"
        );
    }
}
