//! The HTTP client for Splunk's REST API: TLS, bearer token, timeouts and retries.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::{Method, RequestBuilder, Response};
use sqlx::PgPool;

use super::{SearchFilters, SearchPermit, SearchQuota, SplunkError};
use crate::config::{Config, Secret, SplunkConfig};

/// Most bytes of an error body read to quote Splunk's message.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// How often and how patiently failed requests are tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0 = try once).
    pub max_retries: u32,
    /// Delay before the first retry; doubles for each further one.
    pub base_delay: Duration,
    /// Upper bound of one delay.
    pub max_delay: Duration,
}

impl RetryPolicy {
    /// The delay before retry number `attempt` (0-based): exponential, with jitter so that many
    /// workers hitting a busy Splunk do not retry in lockstep (the queue's backoff formula).
    pub fn delay(&self, attempt: u32) -> Duration {
        crate::queue::RetryPolicy {
            base: self.base_delay,
            max: self.max_delay,
        }
        .delay(attempt.saturating_add(1))
    }
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 4,
            base_delay: Duration::from_millis(500),
            max_delay: Duration::from_secs(30),
        }
    }
}

/// A Splunk REST client built from `[splunk]`; cheap to clone (one connection pool).
#[derive(Clone)]
pub struct SplunkClient {
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    http: reqwest::Client,
    /// `<scheme>://<host>:<port>/services/`
    base: String,
    token: Secret,
    retry: RetryPolicy,
    search_timeout: Duration,
    index: String,
    sourcetype: Option<String>,
    /// The cluster-wide search limit; `None` in tests that talk to Splunk directly.
    quota: Option<SearchQuota>,
    /// Quota answers (503 "maximum number of concurrent searches") seen, retried or not.
    quota_answers: Arc<std::sync::atomic::AtomicU64>,
}

impl std::fmt::Debug for SplunkClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SplunkClient")
            .field("base", &self.inner.base)
            .field("index", &self.inner.index)
            .finish_non_exhaustive()
    }
}

/// Installs aws-lc-rs as the process's rustls provider unless one is installed already.
pub fn install_crypto_provider() {
    // An Err only means another provider won the race, which is fine for us.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

impl SplunkClient {
    /// Builds a client from the `[splunk]` configuration.
    pub fn new(config: &SplunkConfig) -> Result<Self, SplunkError> {
        install_crypto_provider();
        let scheme = match config.url_scheme.as_str() {
            s @ ("http" | "https") => s,
            other => {
                return Err(SplunkError::Config(format!(
                    "splunk.url_scheme must be http or https, not {other:?}"
                )));
            }
        };
        let host = config.host.trim();
        if host.is_empty() || host.contains(['/', '@', '?', '#', ' ']) {
            return Err(SplunkError::Config(format!(
                "splunk.host must be a host name or IP address, not {host:?}"
            )));
        }
        let host = if host.contains(':') && !host.starts_with('[') {
            format!("[{host}]")
        } else {
            host.to_owned()
        };
        let base = format!("{scheme}://{host}:{}/services/", config.port);
        url::Url::parse(&base)
            .map_err(|e| SplunkError::Config(format!("splunk.host/port give no valid URL: {e}")))?;

        let http = crate::http_client::builder(
            config.verify_ssl,
            config.ssl_ca_path.as_deref(),
            "splunk.ssl_ca_path",
        )
        .map_err(|e| SplunkError::Config(e.to_string()))?
        .connect_timeout(Duration::from_secs(config.connect_timeout_seconds.max(1)))
        // A read timeout bounds silence, not the whole response: exports stream for hours.
        .read_timeout(Duration::from_secs(config.read_timeout_seconds.max(1)))
        .build()
        .map_err(|e| SplunkError::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                http,
                base,
                token: config.bearer_token.clone(),
                retry: RetryPolicy {
                    max_retries: config.max_retries,
                    ..RetryPolicy::default()
                },
                search_timeout: Duration::from_secs(config.search_timeout_seconds.max(1)),
                index: config.index_prefix.clone(),
                sourcetype: config.sourcetype.clone().filter(|s| !s.is_empty()),
                quota: None,
                quota_answers: Arc::default(),
            }),
        })
    }

    /// A client for the whole configuration: `[splunk]`, sharing the cluster-wide search limit
    /// (`splunk.max_concurrent_searches`) through the service's database, on the process's own
    /// `pool` (a pool of its own would cost Postgres a few more connections per process).
    pub fn from_config(config: &Config, pool: &PgPool) -> Result<Self, SplunkError> {
        let client = Self::new(&config.splunk)?;
        let limit = config.splunk.max_concurrent_searches;
        if limit == 0 {
            return Ok(client);
        }
        Ok(client.with_search_quota(SearchQuota::new(pool.clone(), limit)))
    }

    /// How many quota answers this client (and its clones) has had from Splunk so far.
    pub fn quota_answers(&self) -> u64 {
        self.inner
            .quota_answers
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Returns once fewer of this process's searches wait for a place in the search quota than
    /// it has places (at once without a quota).
    pub async fn until_quota_line_short(&self) {
        if let Some(quota) = &self.inner.quota {
            quota.until_line_short().await;
        }
    }

    /// Makes the search quota ready (its places, its listener), when there is one.
    pub async fn start_quota(&self) -> Result<(), SplunkError> {
        match &self.inner.quota {
            Some(quota) => quota.start().await,
            None => Ok(()),
        }
    }

    /// The same client taking a permit from `quota` for every search it starts.
    pub fn with_search_quota(mut self, quota: SearchQuota) -> Self {
        Arc::make_mut(&mut self.inner).quota = Some(quota);
        self
    }

    /// A permit for one search, when a quota is set; waits up to the search timeout for one.
    pub(crate) async fn search_permit(
        &self,
        purpose: &str,
    ) -> Result<Option<SearchPermit>, SplunkError> {
        match &self.inner.quota {
            Some(quota) => quota
                .acquire(purpose, self.inner.search_timeout)
                .await
                .map(Some),
            None => Ok(None),
        }
    }

    /// The same client with another retry policy (tests use short delays).
    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        Arc::make_mut(&mut self.inner).retry = retry;
        self
    }

    /// The retry policy in force.
    pub fn retry_policy(&self) -> RetryPolicy {
        self.inner.retry
    }

    /// The index searched (`splunk.index_prefix`, used as the exact name as Quay does).
    pub fn index(&self) -> &str {
        &self.inner.index
    }

    /// The configured sourcetype filter, if any.
    pub fn sourcetype(&self) -> Option<&str> {
        self.inner.sourcetype.as_deref()
    }

    /// How long one search job may take (`splunk.search_timeout_seconds`).
    pub fn search_timeout(&self) -> Duration {
        self.inner.search_timeout
    }

    /// Filters over `[start, end)` for this client's index and sourcetype; add namespace etc.
    pub fn filters(&self, start: DateTime<Utc>, end: DateTime<Utc>) -> SearchFilters {
        SearchFilters {
            sourcetype: self.inner.sourcetype.clone(),
            ..SearchFilters::new(self.inner.index.clone(), start, end)
        }
    }

    /// `server/info`, with the token: Splunk's version when it answers and accepts the token.
    pub async fn server_info(&self) -> Result<String, SplunkError> {
        let resp = self
            .send(Method::GET, "server/info", |r| {
                r.query(&[("output_mode", "json")])
            })
            .await?;
        let info: serde_json::Value = resp
            .json()
            .await
            .map_err(|e| SplunkError::Protocol(format!("server/info: {e}")))?;
        Ok(info["entry"][0]["content"]["version"]
            .as_str()
            .unwrap_or("of unknown version")
            .to_owned())
    }

    /// The full URL of a REST path below `/services/`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{}", self.inner.base, path.trim_start_matches('/'))
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let builder = self.inner.http.request(method, self.url(path));
        if self.inner.token.is_empty() {
            builder
        } else {
            builder.bearer_auth(self.inner.token.expose())
        }
    }

    /// Sends a request built by `build` until it succeeds, fails permanently or retries run out.
    /// A non-success answer becomes a [`SplunkError`] quoting Splunk's message.
    pub(crate) async fn send(
        &self,
        method: Method,
        path: &str,
        build: impl Fn(RequestBuilder) -> RequestBuilder,
    ) -> Result<Response, SplunkError> {
        self.send_with(self.inner.retry, method, path, build).await
    }

    /// Like [`SplunkClient::send`] with an explicit retry policy.
    pub(crate) async fn send_with(
        &self,
        retry: RetryPolicy,
        method: Method,
        path: &str,
        build: impl Fn(RequestBuilder) -> RequestBuilder,
    ) -> Result<Response, SplunkError> {
        let mut attempt = 0;
        loop {
            let err = match build(self.request(method.clone(), path)).send().await {
                Ok(resp) if resp.status().is_success() => return Ok(resp),
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let body = read_capped(resp).await;
                    SplunkError::from_response(status, &body)
                }
                Err(e) => SplunkError::transport(e),
            };
            if err.is_quota() {
                self.inner
                    .quota_answers
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            if !err.is_retryable() || attempt >= retry.max_retries {
                return Err(err);
            }
            let delay = retry.delay(attempt);
            tracing::warn!(
                error = %err, attempt = attempt + 1, delay_ms = delay.as_millis() as u64,
                "Splunk request failed, retrying"
            );
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }
}

/// Reads at most [`MAX_ERROR_BODY`] bytes of an answer; errors while reading end it early.
async fn read_capped(mut resp: Response) -> Vec<u8> {
    let mut body = Vec::new();
    while let Ok(Some(chunk)) = resp.chunk().await {
        let room = MAX_ERROR_BODY - body.len();
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() >= MAX_ERROR_BODY {
            break;
        }
    }
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_stays_capped() {
        let p = RetryPolicy {
            max_retries: 10,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        };
        for _ in 0..50 {
            let d0 = p.delay(0);
            assert!(d0 >= Duration::from_millis(50) && d0 <= Duration::from_millis(100));
            let d3 = p.delay(3);
            assert!(d3 >= Duration::from_millis(400) && d3 <= Duration::from_millis(800));
            assert!(p.delay(30) <= Duration::from_secs(1));
        }
    }

    #[test]
    fn builds_urls_and_refuses_bad_config() {
        let cfg = SplunkConfig {
            host: "::1".into(),
            url_scheme: "http".into(),
            ..SplunkConfig::default()
        };
        let client = SplunkClient::new(&cfg).unwrap();
        assert_eq!(
            client.url("search/v2/jobs/export"),
            "http://[::1]:8089/services/search/v2/jobs/export"
        );
        for (host, scheme) in [("a/b", "https"), ("", "https"), ("h", "ftp")] {
            let cfg = SplunkConfig {
                host: host.into(),
                url_scheme: scheme.into(),
                ..SplunkConfig::default()
            };
            assert!(matches!(
                SplunkClient::new(&cfg),
                Err(SplunkError::Config(_))
            ));
        }
        let cfg = SplunkConfig {
            ssl_ca_path: Some("/nonexistent/ca.pem".into()),
            ..SplunkConfig::default()
        };
        let err = SplunkClient::new(&cfg).unwrap_err();
        assert!(err.to_string().contains("splunk.ssl_ca_path"), "{err}");
    }

    #[test]
    fn debug_output_hides_the_token() {
        let cfg = SplunkConfig {
            bearer_token: Secret::new("s3cr3t-token"),
            ..SplunkConfig::default()
        };
        let client = SplunkClient::new(&cfg).unwrap();
        assert!(!format!("{client:?}").contains("s3cr3t"));
    }
}
