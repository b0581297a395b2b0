//! E-mail delivery: one attempt through SMTP or into a directory, classified for the queue.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use async_trait::async_trait;
use chrono::Utc;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::PoolConfig;
use lettre::{AsyncFileTransport, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::message::render;
use super::notice::{Delivery, Notice};
use crate::config::EmailConfig;
use crate::domain::EmailAddress;

/// Sends the export e-mail; SMTP and file are the two real implementations.
#[async_trait]
pub trait Mailer: Send + Sync {
    /// Makes one delivery attempt of `notice` to `to` and says whether to retry.
    async fn send(&self, to: &EmailAddress, notice: &Notice) -> Delivery;
}

/// Builds the mailer `email.transport` asks for; errors name the offending key.
pub fn mailer_from_config(cfg: &EmailConfig) -> anyhow::Result<Arc<dyn Mailer>> {
    Ok(match cfg.transport.as_str() {
        "smtp" => Arc::new(SmtpMailer::new(cfg)?),
        "file" => Arc::new(FileMailer::new(cfg)?),
        "none" => {
            tracing::warn!("email.transport = \"none\": export e-mails will not be sent");
            Arc::new(NoMailer)
        }
        other => anyhow::bail!("email.transport: {other:?} is not smtp, file or none"),
    })
}

/// Turns a notice into a MIME message with the configured sender and title.
#[derive(Debug, Clone)]
struct Composer {
    from: Mailbox,
    registry_title: String,
}

impl Composer {
    fn new(cfg: &EmailConfig) -> anyhow::Result<Self> {
        let from: Mailbox = cfg.from.parse().map_err(|e| {
            anyhow::anyhow!("email.from: {:?} is not a valid mailbox: {e}", cfg.from)
        })?;
        let title = cfg.registry_title.trim();
        if title.is_empty() || title.chars().any(char::is_control) {
            anyhow::bail!(
                "email.registry_title: must be non-empty and must not contain line breaks or \
                 control characters"
            );
        }
        Ok(Self {
            from,
            registry_title: title.to_owned(),
        })
    }

    fn compose(&self, to: &EmailAddress, notice: &Notice) -> anyhow::Result<Message> {
        let content = render(&self.registry_title, notice, Utc::now());
        let mut builder = Message::builder()
            .from(self.from.clone())
            .to(Mailbox::new(None, to.address().clone()))
            .subject(content.subject);
        // A Message-ID stable across retries lets mail systems drop a duplicate if an attempt
        // was accepted but its reply was lost.
        if let Some(id) = message_id(&notice.webhook_id, self.from.email.domain()) {
            builder = builder.message_id(Some(id));
        }
        builder
            .multipart(MultiPart::alternative_plain_html(
                content.plain,
                content.html,
            ))
            .context("building the export e-mail")
    }
}

/// `<webhook_id@domain>` when the id is safe in a header; otherwise lettre generates one.
fn message_id(webhook_id: &str, domain: &str) -> Option<String> {
    let safe = |s: &str| {
        !s.is_empty()
            && s.len() <= 128
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    };
    (safe(webhook_id) && safe(domain)).then(|| format!("<{webhook_id}@{domain}>"))
}

/// Delivers through an SMTP server (plain, STARTTLS or TLS; optional auth) with a connection pool.
pub struct SmtpMailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    composer: Composer,
    timeout: Duration,
    /// `host:port`, for error messages (the URL itself may hold a password).
    server: String,
}

impl SmtpMailer {
    /// Builds the pooled transport from `email.smtp_url`; nothing is connected yet.
    pub fn new(cfg: &EmailConfig) -> anyhow::Result<Self> {
        let composer = Composer::new(cfg)?;
        let timeout = Duration::from_secs(cfg.timeout_seconds.max(1));
        // lettre's URL errors never echo the URL, so the password cannot leak through them.
        let builder = AsyncSmtpTransport::<Tokio1Executor>::from_url(cfg.smtp_url.expose())
            .map_err(|e| {
                anyhow::anyhow!(
                    "email.smtp_url: expected smtp://host:port, smtp://host:port?tls=required \
                     or smtps://host:port ({e})"
                )
            })?;
        let url = url::Url::parse(cfg.smtp_url.expose())
            .map_err(|_| anyhow::anyhow!("email.smtp_url: not a URL"))?;
        let host = url.host_str().unwrap_or_default().to_owned();
        let server = format!("{host}:{}", url.port().unwrap_or(25));
        let builder = match &cfg.ssl_ca_path {
            Some(path) => trust_ca(builder, &url, &host, path)?,
            None => builder,
        };
        let transport = builder
            .timeout(Some(timeout))
            .pool_config(PoolConfig::new().max_size(4))
            .build();
        Ok(Self {
            transport,
            composer,
            timeout,
            server,
        })
    }

    /// `host:port` of the SMTP server.
    pub fn server(&self) -> &str {
        &self.server
    }
}

/// The TLS mode `url` asks for (as lettre reads it), trusting `path`'s CA besides the system's.
fn trust_ca(
    builder: lettre::transport::smtp::AsyncSmtpTransportBuilder,
    url: &url::Url,
    host: &str,
    path: &std::path::Path,
) -> anyhow::Result<lettre::transport::smtp::AsyncSmtpTransportBuilder> {
    use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
    const KEY: &str = "email.ssl_ca_path";
    let mut params = TlsParameters::builder(host.to_owned());
    for der in crate::http_client::read_ca(path, KEY).map_err(anyhow::Error::msg)? {
        let cert = Certificate::from_der(der)
            .map_err(|e| anyhow::anyhow!("{KEY}: {}: {e}", path.display()))?;
        params = params.add_root_certificate(cert);
    }
    let params = params
        .build_rustls()
        .map_err(|e| anyhow::anyhow!("{KEY}: {}: {e}", path.display()))?;
    let tls = url
        .query_pairs()
        .find(|(k, _)| k == "tls")
        .map(|(_, v)| v.into_owned());
    Ok(match (url.scheme(), tls.as_deref()) {
        ("smtps", _) => builder.tls(Tls::Wrapper(params)),
        (_, Some("required")) => builder.tls(Tls::Required(params)),
        (_, Some("opportunistic")) => builder.tls(Tls::Opportunistic(params)),
        // Plain SMTP: the CA has nothing to verify.
        _ => builder,
    })
}

impl SmtpMailer {
    /// Connects once (TCP, EHLO, STARTTLS or TLS and login as configured) and says NOOP: what
    /// `logexport check` tries.
    pub async fn test_connection(&self) -> Result<(), lettre::transport::smtp::Error> {
        self.transport.test_connection().await.map(|_| ())
    }
}

#[async_trait]
impl Mailer for SmtpMailer {
    #[tracing::instrument(skip_all, fields(export_id = %notice.export_id, transport = "smtp"))]
    async fn send(&self, to: &EmailAddress, notice: &Notice) -> Delivery {
        let message = match self.composer.compose(to, notice) {
            Ok(message) => message,
            Err(e) => return Delivery::give_up(format!("{e:#}")),
        };
        // The per-command timeout bounds each read; this bounds the whole conversation.
        let attempt = tokio::time::timeout(self.timeout * 3, self.transport.send(message)).await;
        let delivery = match attempt {
            Err(_) => Delivery::retry(format!(
                "SMTP server did not finish the conversation within {}s",
                self.timeout.as_secs() * 3
            )),
            Ok(Ok(response)) => Delivery::Delivered {
                // A reply without text must not leave a trailing space.
                receipt: format!(
                    "SMTP {} {}",
                    response.code(),
                    response.first_line().unwrap_or_default()
                )
                .trim_end()
                .to_owned(),
            },
            Ok(Err(e)) => classify_smtp_error(&self.server, &e),
        };
        match &delivery {
            Delivery::Delivered { receipt } => tracing::info!(%receipt, "export e-mail sent"),
            other => tracing::warn!(?other, "export e-mail not sent"),
        }
        delivery
    }
}

/// Permanent rejections (5xx) are final, except authentication failures, which are our own
/// configuration and may be fixed before the last retry; everything else is transient.
fn classify_smtp_error(server: &str, e: &lettre::transport::smtp::Error) -> Delivery {
    if crate::http_client::is_certificate_error(e) {
        // Retried: the operator may fix the CA file or the server's certificate meanwhile.
        return Delivery::retry(format!(
            "SMTP server {server}: {e}; {}",
            crate::http_client::certificate_hint("email.ssl_ca_path")
        ));
    }
    let reason = format!("SMTP server {server}: {e}");
    let auth = e
        .status()
        .is_some_and(|code| matches!(code.to_string().as_str(), "530" | "534" | "535" | "538"));
    if e.is_permanent() && !auth {
        Delivery::give_up(reason)
    } else if e.is_timeout() {
        Delivery::retry(format!("SMTP server timed out: {e}"))
    } else {
        Delivery::retry(reason)
    }
}

/// Writes each message as `<uuid>.eml` into `email.file_dir` (demo and single-machine use).
pub struct FileMailer {
    transport: AsyncFileTransport<Tokio1Executor>,
    composer: Composer,
    dir: PathBuf,
}

impl FileMailer {
    /// Creates the directory if needed.
    pub fn new(cfg: &EmailConfig) -> anyhow::Result<Self> {
        let composer = Composer::new(cfg)?;
        std::fs::create_dir_all(&cfg.file_dir)
            .with_context(|| format!("email.file_dir: cannot create {}", cfg.file_dir.display()))?;
        Ok(Self {
            transport: AsyncFileTransport::new(&cfg.file_dir),
            composer,
            dir: cfg.file_dir.clone(),
        })
    }
}

#[async_trait]
impl Mailer for FileMailer {
    #[tracing::instrument(skip_all, fields(export_id = %notice.export_id, transport = "file"))]
    async fn send(&self, to: &EmailAddress, notice: &Notice) -> Delivery {
        let message = match self.composer.compose(to, notice) {
            Ok(message) => message,
            Err(e) => return Delivery::give_up(format!("{e:#}")),
        };
        match self.transport.send(message).await {
            Ok(id) => {
                let path = self.dir.join(format!("{id}.eml"));
                tracing::info!(path = %path.display(), "export e-mail written");
                Delivery::Delivered {
                    receipt: path.display().to_string(),
                }
            }
            // A full disk or a permission problem may be fixed by the operator.
            Err(e) => Delivery::retry(format!(
                "writing the e-mail into {}: {e}",
                self.dir.display()
            )),
        }
    }
}

/// `email.transport = "none"`: e-mail is switched off; notices are dropped with a warning.
pub struct NoMailer;

#[async_trait]
impl Mailer for NoMailer {
    async fn send(&self, to: &EmailAddress, notice: &Notice) -> Delivery {
        tracing::warn!(export_id = %notice.export_id, %to, "email.transport is none; export e-mail not sent");
        Delivery::Delivered {
            receipt: "not sent: email.transport is none".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    #[test]
    fn construction_refuses_bad_title_and_sender() {
        let mut cfg = EmailConfig {
            registry_title: "Quay\r\nBcc: victim@example.com".into(),
            ..EmailConfig::default()
        };
        let err = SmtpMailer::new(&cfg).err().unwrap().to_string();
        assert!(err.starts_with("email.registry_title"), "{err}");
        cfg.registry_title = "Quay".into();
        cfg.from = "not an address".into();
        let err = SmtpMailer::new(&cfg).err().unwrap().to_string();
        assert!(err.starts_with("email.from"), "{err}");
    }

    #[test]
    fn smtp_url_errors_never_show_the_password() {
        let cfg = EmailConfig {
            smtp_url: Secret::new("ftp://user:hunter2@mail.example.com:25"),
            ..EmailConfig::default()
        };
        let err = SmtpMailer::new(&cfg).err().unwrap().to_string();
        assert!(err.starts_with("email.smtp_url"), "{err}");
        assert!(!err.contains("hunter2"));
    }

    #[test]
    fn message_ids_are_stable_and_header_safe() {
        assert_eq!(
            message_id("msg_abc-1", "quay.local").as_deref(),
            Some("<msg_abc-1@quay.local>")
        );
        assert_eq!(message_id("a\r\nBcc: x", "quay.local"), None);
        assert_eq!(message_id("", "quay.local"), None);
    }
}
