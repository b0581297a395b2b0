//! `logexport check`: tries each configured dependency once and says, one line each, whether it
//! answers. `run`, `serve` and `work` run the same checks at start and only warn.

use std::fmt;
use std::time::Duration;

use sqlx::postgres::PgPoolOptions;

use crate::config::{AuditSink, AuthMode, Config};

/// How long one dependency may take to answer.
const TIMEOUT: Duration = Duration::from_secs(10);

/// One dependency's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The dependency, e.g. `postgres`, `splunk`, `storage`.
    pub dependency: &'static str,
    /// What was found: how it answered, or why it failed.
    pub detail: String,
    /// `None` for a dependency that answered, else the configuration key most likely to blame.
    pub failure: Option<&'static str>,
}

impl Finding {
    fn ok(dependency: &'static str, detail: impl Into<String>) -> Self {
        Self {
            dependency,
            detail: detail.into(),
            failure: None,
        }
    }

    fn failed(dependency: &'static str, key: &'static str, detail: impl Into<String>) -> Self {
        Self {
            dependency,
            detail: detail.into(),
            failure: Some(key),
        }
    }

    /// True when the dependency answered as it should.
    pub fn is_ok(&self) -> bool {
        self.failure.is_none()
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.failure {
            None => write!(f, "ok    {:<9} {}", self.dependency, self.detail),
            Some(key) => write!(
                f,
                "FAIL  {:<9} {} (check {key})",
                self.dependency, self.detail
            ),
        }
    }
}

/// Tries every configured dependency once, in parallel.
pub async fn check(config: &Config) -> Vec<Finding> {
    let (postgres, splunk, storage, email, quay, audit) = tokio::join!(
        postgres(config),
        splunk(config),
        storage(config),
        email(config),
        quay(config),
        audit(config),
    );
    [
        Some(postgres),
        Some(splunk),
        Some(storage),
        email,
        quay,
        audit,
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// Tries one dependency by its name in [`Finding::dependency`] (`postgres`, `splunk`, `storage`,
/// `smtp`, `quay`, `hec`); `None` when the configuration does not use it or the name is unknown.
pub async fn dependency(config: &Config, name: &str) -> Option<Finding> {
    match name {
        "postgres" => Some(postgres(config).await),
        "splunk" => Some(splunk(config).await),
        "storage" => Some(storage(config).await),
        "smtp" => email(config).await,
        "quay" => quay(config).await,
        "hec" => audit(config).await,
        _ => None,
    }
}

/// Runs [`check`] in the background and logs a warning per failed dependency (start of `run`,
/// `serve` and `work`: a dependency that is down now may be up by the first export).
pub fn warn_in_background(config: &Config) {
    let config = config.clone();
    tokio::spawn(async move {
        for finding in check(&config).await {
            if finding.is_ok() {
                tracing::info!(dependency = finding.dependency, detail = %finding.detail, "dependency answers");
            } else {
                tracing::warn!(
                    dependency = finding.dependency,
                    key = finding.failure.unwrap_or_default(),
                    detail = %finding.detail,
                    "dependency check failed (run `logexport check` for the list)"
                );
            }
        }
    });
}

async fn postgres(config: &Config) -> Finding {
    const NAME: &str = "postgres";
    let url = config.database.url.expose();
    let options = match crate::db::connect_options(&config.database) {
        Ok(options) => options,
        Err(e) => {
            let key = match config.database.ssl_ca_path {
                Some(_) if url.parse::<sqlx::postgres::PgConnectOptions>().is_ok() => {
                    "database.ssl_ca_path"
                }
                _ => "database.url",
            };
            return Finding::failed(NAME, key, format!("{e:#}"));
        }
    };
    let database = options.get_database().unwrap_or("postgres").to_owned();
    let pool = match PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(TIMEOUT)
        .connect_with(options.clone())
        .await
    {
        Ok(pool) => pool,
        Err(e) if crate::http_client::is_certificate_error(&e) => {
            let detail = crate::db::connect_error(&options, &e).unwrap_or_else(|| e.to_string());
            return Finding::failed(NAME, "database.ssl_ca_path", detail);
        }
        Err(e) => {
            let missing = e.as_database_error().and_then(|d| d.code()).as_deref() == Some("3D000");
            let detail = if missing {
                format!(
                    "database {database} does not exist: `logexport migrate` creates it{}",
                    crate::db::createdb_command(url)
                        .map(|c| format!(" (or: {c})"))
                        .unwrap_or_default()
                )
            } else {
                format!("cannot connect: {e}")
            };
            return Finding::failed(NAME, "database.url", detail);
        }
    };
    let finding = match crate::db::pending_migrations(&pool).await {
        Ok(pending) if pending.is_empty() => Finding::ok(
            NAME,
            format!("database {database}, every migration applied"),
        ),
        Ok(pending) => Finding::failed(
            NAME,
            "database.url",
            format!(
                "database {database}: {} migration(s) not applied; run `logexport migrate`",
                pending.len()
            ),
        ),
        Err(e) => Finding::failed(NAME, "database.url", format!("cannot read migrations: {e}")),
    };
    pool.close().await;
    finding
}

async fn splunk(config: &Config) -> Finding {
    const NAME: &str = "splunk";
    let client = match crate::splunk::SplunkClient::new(&config.splunk) {
        Ok(client) => client.with_retry_policy(crate::splunk::RetryPolicy {
            max_retries: 0,
            ..Default::default()
        }),
        Err(e) => return Finding::failed(NAME, "splunk.host", e.to_string()),
    };
    match tokio::time::timeout(TIMEOUT, client.server_info()).await {
        Ok(Ok(version)) => Finding::ok(
            NAME,
            format!(
                "{}:{} answers (Splunk {version}), token accepted",
                config.splunk.host, config.splunk.port
            ),
        ),
        Ok(Err(crate::splunk::SplunkError::Unauthorized { status, .. })) => Finding::failed(
            NAME,
            "splunk.bearer_token",
            format!("Splunk refused the token (HTTP {status})"),
        ),
        Ok(Err(e)) if crate::http_client::mentions_certificate(&e.to_string()) => Finding::failed(
            NAME,
            "splunk.ssl_ca_path",
            format!("{}:{}: {e}", config.splunk.host, config.splunk.port),
        ),
        Ok(Err(e)) => Finding::failed(NAME, "splunk.host", e.to_string()),
        Err(_) => Finding::failed(
            NAME,
            "splunk.host",
            format!("no answer within {}s", TIMEOUT.as_secs()),
        ),
    }
}

async fn storage(config: &Config) -> Finding {
    const NAME: &str = "storage";
    let (key_name, place) = match config.storage.kind {
        crate::config::StorageKind::S3 => (
            "storage.s3.bucket",
            format!("bucket {}", config.storage.s3.bucket),
        ),
        crate::config::StorageKind::Local => (
            "storage.local.path",
            format!("directory {}", config.storage.local.path.display()),
        ),
    };
    let probe = async {
        let store = crate::storage::from_config(config)
            .await
            .map_err(|e| format!("{e:#}"))?;
        let key = format!(
            "{}logexport-check-{}",
            config.export.object_prefix,
            uuid::Uuid::new_v4().simple()
        );
        let meta = crate::storage::ObjectMeta {
            content_type: "text/plain".into(),
            filename: "logexport-check.txt".into(),
        };
        let mut upload = store
            .begin_upload(&key, &meta)
            .await
            .map_err(|e| format!("cannot write a probe object: {e}"))?;
        upload
            .write(bytes::Bytes::from_static(b"logexport check\n"))
            .await
            .map_err(|e| format!("cannot write a probe object: {e}"))?;
        upload
            .complete()
            .await
            .map_err(|e| format!("cannot write a probe object: {e}"))?;
        store
            .delete(&key)
            .await
            .map_err(|e| format!("wrote a probe object but cannot delete it: {e}"))?;
        Ok::<_, String>(())
    };
    match tokio::time::timeout(TIMEOUT, probe).await {
        Ok(Ok(())) => Finding::ok(NAME, format!("{place}: wrote and deleted a probe object")),
        Ok(Err(e)) if crate::http_client::mentions_certificate(&e) => Finding::failed(
            NAME,
            "storage.s3.ssl_ca_path",
            format!(
                "{place} at {}: {e}",
                config
                    .storage
                    .s3
                    .endpoint_url
                    .as_deref()
                    .unwrap_or("AWS S3")
            ),
        ),
        Ok(Err(e)) => Finding::failed(NAME, key_name, format!("{place}: {e}")),
        Err(_) => Finding::failed(
            NAME,
            key_name,
            format!("{place}: no answer within {}s", TIMEOUT.as_secs()),
        ),
    }
}

async fn email(config: &Config) -> Option<Finding> {
    const NAME: &str = "smtp";
    match config.email.transport.as_str() {
        "smtp" => {}
        "file" => {
            return Some(match std::fs::create_dir_all(&config.email.file_dir) {
                Ok(()) => Finding::ok(
                    "email",
                    format!("writes mail to {}", config.email.file_dir.display()),
                ),
                Err(e) => Finding::failed(
                    "email",
                    "email.file_dir",
                    format!("cannot create {}: {e}", config.email.file_dir.display()),
                ),
            });
        }
        _ => return None,
    }
    let mailer = match crate::notify::SmtpMailer::new(&config.email) {
        Ok(mailer) => mailer,
        Err(e) => return Some(Finding::failed(NAME, "email.smtp_url", format!("{e:#}"))),
    };
    let server = url::Url::parse(config.email.smtp_url.expose())
        .ok()
        .and_then(|u| Some(format!("{}:{}", u.host_str()?, u.port().unwrap_or(25))))
        .unwrap_or_else(|| "the SMTP server".into());
    Some(
        match tokio::time::timeout(TIMEOUT, mailer.test_connection()).await {
            Ok(Ok(())) => Finding::ok(NAME, format!("{server} answers EHLO")),
            Ok(Err(e)) if crate::http_client::is_certificate_error(&e) => Finding::failed(
                NAME,
                "email.ssl_ca_path",
                format!(
                    "{server}: {e}; {}",
                    crate::http_client::certificate_hint("email.ssl_ca_path")
                ),
            ),
            Ok(Err(e)) => Finding::failed(NAME, "email.smtp_url", format!("{server}: {e}")),
            Err(_) => Finding::failed(
                NAME,
                "email.smtp_url",
                format!("{server}: no answer within {}s", TIMEOUT.as_secs()),
            ),
        },
    )
}

async fn quay(config: &Config) -> Option<Finding> {
    const NAME: &str = "quay";
    if config.auth.mode != AuthMode::Quay {
        return None;
    }
    let auth = &config.auth;
    let client = match crate::http_client::builder(
        auth.verify_ssl,
        auth.ssl_ca_path.as_deref(),
        "auth.ssl_ca_path",
    )
    .map_err(|e| e.to_string())
    .and_then(|b| b.timeout(TIMEOUT).build().map_err(|e| e.to_string()))
    {
        Ok(client) => client,
        Err(e) => return Some(Finding::failed(NAME, "auth.ssl_ca_path", e)),
    };
    Some(match client.get(&auth.quay_url).send().await {
        Err(e) if crate::http_client::is_certificate_error(&e) => Finding::failed(
            NAME,
            "auth.ssl_ca_path",
            format!(
                "{}: {}; {}",
                auth.quay_url,
                error_chain(&e),
                crate::http_client::certificate_hint("auth.ssl_ca_path")
            ),
        ),
        Ok(r) if r.status().is_server_error() => Finding::failed(
            NAME,
            "auth.quay_url",
            format!("{} answered HTTP {}", auth.quay_url, r.status().as_u16()),
        ),
        Ok(r) => Finding::ok(
            NAME,
            format!("{} answers (HTTP {})", auth.quay_url, r.status().as_u16()),
        ),
        Err(e) => Finding::failed(
            NAME,
            "auth.quay_url",
            format!("{}: {}", auth.quay_url, error_chain(&e)),
        ),
    })
}

async fn audit(config: &Config) -> Option<Finding> {
    const NAME: &str = "hec";
    if config.audit.sink != AuditSink::Hec {
        return None;
    }
    let audit = &config.audit;
    let client = match crate::http_client::builder(
        audit.verify_ssl,
        audit.ssl_ca_path.as_deref(),
        "audit.ssl_ca_path",
    )
    .map_err(|e| e.to_string())
    .and_then(|b| b.timeout(TIMEOUT).build().map_err(|e| e.to_string()))
    {
        Ok(client) => client,
        Err(e) => return Some(Finding::failed(NAME, "audit.ssl_ca_path", e)),
    };
    // An empty batch: HEC answers 400 "No data" (code 5) to an accepted token, 401/403 otherwise,
    // and nothing is indexed.
    let answer = client
        .post(&audit.hec_url)
        .header(
            reqwest::header::AUTHORIZATION,
            format!("Splunk {}", audit.hec_token.expose()),
        )
        .body("")
        .send()
        .await;
    Some(match answer {
        Err(e) if crate::http_client::is_certificate_error(&e) => Finding::failed(
            NAME,
            "audit.ssl_ca_path",
            format!(
                "{}: {}; {}",
                audit.hec_url,
                error_chain(&e),
                crate::http_client::certificate_hint("audit.ssl_ca_path")
            ),
        ),
        Ok(r) if matches!(r.status().as_u16(), 401 | 403) => Finding::failed(
            NAME,
            "audit.hec_token",
            format!("HEC refused the token (HTTP {})", r.status().as_u16()),
        ),
        Ok(r) if r.status().is_success() || r.status().as_u16() == 400 => {
            Finding::ok(NAME, format!("{} answers, token accepted", audit.hec_url))
        }
        Ok(r) => Finding::failed(
            NAME,
            "audit.hec_url",
            format!("{} answered HTTP {}", audit.hec_url, r.status().as_u16()),
        ),
        Err(e) => Finding::failed(
            NAME,
            "audit.hec_url",
            format!("{}: {}", audit.hec_url, error_chain(&e)),
        ),
    })
}

/// An error with its causes, so "connection refused" reaches the operator.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
