//! Callback delivery: one signed `POST` of the outcome, classified for the queue.

use std::error::Error as _;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use reqwest::StatusCode;
use reqwest::header::{CONTENT_TYPE, HeaderValue, LOCATION, RETRY_AFTER};
use serde_json::{Value, json};
use url::Host;

use super::notice::{Delivery, Notice, Outcome};
use super::signing::SigningKey;
use super::ssrf::GuardedResolver;
use crate::config::CallbackConfig;
use crate::domain::CallbackUrl;
use crate::domain::{AllowList, SsrfError};

/// The `User-Agent` of every callback request.
pub const USER_AGENT: &str = concat!("logexport/", env!("CARGO_PKG_VERSION"));

/// The longest `Retry-After` hint passed on to the queue; a receiver cannot park a notice forever.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// The exact JSON body POSTed to the callback URL (Quay's fields plus size, count and expiry).
pub fn callback_payload(notice: &Notice) -> Value {
    let (url, logs, size, expires) = match &notice.outcome {
        Outcome::Succeeded {
            url,
            expires_at,
            logs_exported,
            size_bytes,
        } => (
            Some(url.as_str()),
            Some(*logs_exported),
            Some(*size_bytes),
            Some(expires_at.to_rfc3339_opts(SecondsFormat::Secs, true)),
        ),
        _ => (None, None, None, None),
    };
    let mut payload = json!({
        "export_id": notice.export_id.to_string(),
        "start_time": notice.range.start_day_label(),
        "end_time": notice.range.end_day_label(),
        "namespace": notice.namespace,
        "repository": notice.repository,
        "exported_data_url": url,
        "download_url": notice.download_url,
        "sha256": notice.sha256,
        "status": notice.outcome.quay_status(),
        "logs_exported": logs,
        "size_bytes": size,
        "expires_at": expires,
    });
    // Beyond Quay: why it failed, as the e-mail says (a paused schedule's notice says why here).
    if let Outcome::Failed { reason } | Outcome::InvalidRequest { reason } = &notice.outcome {
        payload["error"] = json!(reason);
    }
    payload
}

/// Sends callbacks: no redirects, a per-request timeout, the SSRF guard on the address actually
/// connected to, and Standard Webhooks signatures when a secret is configured.
#[derive(Debug, Clone)]
pub struct CallbackSender {
    client: reqwest::Client,
    allow: Arc<AllowList>,
    key: Option<SigningKey>,
    timeout: Duration,
}

impl CallbackSender {
    /// Builds the HTTP client from `[callback]`.
    pub fn new(cfg: &CallbackConfig) -> anyhow::Result<Self> {
        // reqwest is built without a default provider; another component may have installed it.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        let key = match cfg.signing_secret.is_empty() {
            true => None,
            false => Some(SigningKey::parse(cfg.signing_secret.expose())?),
        };
        let allow = Arc::new(AllowList::new(&cfg.allowed_hosts));
        let timeout = Duration::from_secs(cfg.timeout_seconds.max(1));
        let builder = crate::http_client::trust(
            reqwest::Client::builder(),
            cfg.ssl_ca_path.as_deref(),
            "callback.ssl_ca_path",
        )
        .map_err(anyhow::Error::msg)?;
        let client = builder
            .user_agent(USER_AGENT)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(timeout)
            .dns_resolver(Arc::new(GuardedResolver::new(allow.clone())))
            // A proxy would connect on our behalf, past the guard.
            .no_proxy()
            .build()
            .map_err(|e| anyhow::anyhow!("building the callback HTTP client: {e}"))?;
        Ok(Self {
            client,
            allow,
            key,
            timeout,
        })
    }

    /// Makes one delivery attempt of `notice` to `url` and says whether to retry.
    #[tracing::instrument(skip_all, fields(export_id = %notice.export_id, host = %url.host()))]
    pub async fn send(&self, url: &CallbackUrl, notice: &Notice) -> Delivery {
        let delivery = self.attempt(url, notice).await;
        match &delivery {
            Delivery::Delivered { receipt } => tracing::info!(%receipt, "callback delivered"),
            other => tracing::warn!(?other, "callback not delivered"),
        }
        delivery
    }

    async fn attempt(&self, url: &CallbackUrl, notice: &Notice) -> Delivery {
        // reqwest does not consult the resolver for IP literals, so check them here.
        if let Err(e) = self.check_literal(url) {
            return Delivery::give_up(format!("refused callback destination: {e}"));
        }
        let body = match serde_json::to_vec(&callback_payload(notice)) {
            Ok(body) => body,
            Err(e) => return Delivery::give_up(format!("encoding the callback body: {e}")),
        };
        let mut request = self
            .client
            .post(url.url().clone())
            .header(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(key) = &self.key {
            // A fresh timestamp per attempt keeps receivers' replay windows working on retries.
            let timestamp = Utc::now().timestamp();
            request = request
                .header("webhook-id", notice.webhook_id.as_str())
                .header("webhook-timestamp", timestamp.to_string())
                .header(
                    "webhook-signature",
                    key.sign(&notice.webhook_id, timestamp, &body),
                );
        }
        match request.body(body).send().await {
            Ok(response) => classify_response(&response),
            Err(e) => self.classify_error(&e),
        }
    }

    fn check_literal(&self, url: &CallbackUrl) -> Result<(), SsrfError> {
        let ip = match url.url().host() {
            Some(Host::Ipv4(v4)) => IpAddr::V4(v4),
            Some(Host::Ipv6(v6)) => IpAddr::V6(v6),
            _ => return Ok(()),
        };
        self.allow.check(url.host(), ip)
    }

    fn classify_error(&self, e: &reqwest::Error) -> Delivery {
        if let Some(ssrf) = find_source::<SsrfError>(e) {
            return match ssrf {
                SsrfError::Blocked { .. } => {
                    Delivery::give_up(format!("refused callback destination: {ssrf}"))
                }
                SsrfError::Unresolvable(_) => Delivery::retry(ssrf.to_string()),
            };
        }
        if e.is_timeout() {
            return Delivery::retry(format!(
                "callback receiver did not answer within {}s",
                self.timeout.as_secs()
            ));
        }
        if e.is_builder() {
            return Delivery::give_up(format!("callback request could not be built: {e}"));
        }
        let host = e
            .url()
            .map(|u| u.authority().to_owned())
            .unwrap_or_default();
        if crate::http_client::is_certificate_error(e) {
            return Delivery::retry(format!(
                "callback receiver {host}: {}; {}",
                chain(e),
                crate::http_client::certificate_hint("callback.ssl_ca_path")
            ));
        }
        // Connection refused/reset and the like: the receiver may come back.
        Delivery::retry(format!("callback receiver unreachable: {}", chain(e)))
    }
}

fn classify_response(response: &reqwest::Response) -> Delivery {
    let status = response.status();
    if status.is_success() {
        return Delivery::Delivered {
            receipt: format!("HTTP {status}"),
        };
    }
    if status.is_redirection() {
        let target = response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(|s| {
                s.chars()
                    .filter(|c| !c.is_control())
                    .take(200)
                    .collect::<String>()
            })
            .unwrap_or_default();
        return Delivery::give_up(format!(
            "callback receiver answered {status} redirecting to {target:?}; redirects are not \
             followed, configure the final URL"
        ));
    }
    let retryable = status.is_server_error()
        || status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS;
    let reason = format!("callback receiver answered {status}");
    if retryable {
        Delivery::Retry {
            reason,
            retry_after: retry_after(response),
        }
    } else {
        Delivery::give_up(reason)
    }
}

/// `Retry-After` in seconds (the HTTP-date form is rare for webhooks and ignored), capped.
fn retry_after(response: &reqwest::Response) -> Option<Duration> {
    let seconds: u64 = response
        .headers()
        .get(RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds).min(MAX_RETRY_AFTER))
}

fn find_source<T: std::error::Error + 'static>(e: &reqwest::Error) -> Option<&T> {
    let mut source = e.source();
    while let Some(err) = source {
        if let Some(found) = err.downcast_ref::<T>() {
            return Some(found);
        }
        source = err.source();
    }
    None
}

/// The error and its causes on one line (reqwest's own message is often just "error sending
/// request").
fn chain(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(err) = source {
        text.push_str(": ");
        text.push_str(&err.to_string());
        source = err.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{DateRange, ExportId};
    use chrono::DateTime;

    fn notice(outcome: Outcome) -> Notice {
        let now = DateTime::parse_from_rfc3339("2024-06-18T12:00:00Z")
            .unwrap()
            .to_utc();
        Notice {
            export_id: "6a0b9ea9-444c-4a19-9db8-113201c38cd4"
                .parse::<ExportId>()
                .unwrap(),
            namespace: "acme".into(),
            repository: None,
            range: DateRange::from_request(Some("06/01/2024"), Some("06/18/2024"), None, now, 366)
                .unwrap(),
            outcome,
            webhook_id: "msg_1".into(),
            download_url: Some("https://registry.example/api/v1/exportlogs/x/download".into()),
            sha256: Some("ab".repeat(32)),
        }
    }

    #[test]
    fn payload_for_success_has_every_field() {
        let expires_at = DateTime::parse_from_rfc3339("2024-06-18T19:59:00Z")
            .unwrap()
            .to_utc();
        let body = callback_payload(&notice(Outcome::Succeeded {
            url: url::Url::parse("https://s3.example.com/b/k?sig=1").unwrap(),
            expires_at,
            logs_exported: 42,
            size_bytes: 4096,
        }));
        assert_eq!(
            body,
            json!({
                "export_id": "6a0b9ea9-444c-4a19-9db8-113201c38cd4",
                "start_time": "06/01/2024",
                "end_time": "06/18/2024",
                "namespace": "acme",
                "repository": null,
                "exported_data_url": "https://s3.example.com/b/k?sig=1",
                "download_url": "https://registry.example/api/v1/exportlogs/x/download",
                "sha256": "ab".repeat(32),
                "status": "success",
                "logs_exported": 42,
                "size_bytes": 4096,
                "expires_at": "2024-06-18T19:59:00Z",
            })
        );
    }

    #[test]
    fn payload_for_failures_has_no_link() {
        for (outcome, status) in [
            (Outcome::Failed { reason: "x".into() }, "failed"),
            (Outcome::TimedOut, "timedout"),
            (
                Outcome::InvalidRequest { reason: "y".into() },
                "invalidrequest",
            ),
        ] {
            let body = callback_payload(&notice(outcome));
            assert_eq!(body["status"], status);
            assert_eq!(body["exported_data_url"], Value::Null);
            assert_eq!(body["expires_at"], Value::Null);
            assert_eq!(body["logs_exported"], Value::Null);
        }
        let body = callback_payload(&notice(Outcome::InvalidRequest {
            reason: "why".into(),
        }));
        assert_eq!(body["error"], "why");
    }

    #[test]
    fn invalid_whsec_secret_fails_construction() {
        let cfg = CallbackConfig {
            signing_secret: crate::config::Secret::new("whsec_***"),
            ..CallbackConfig::default()
        };
        let err = CallbackSender::new(&cfg).unwrap_err().to_string();
        assert!(err.contains("callback.signing_secret"), "{err}");
    }
}
