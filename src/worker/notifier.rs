//! The notification stage as a kind of job (`worker::jobs`): one job per finished export,
//! enqueued with its outcome. An attempt makes one delivery per channel not yet done through
//! `notify`, and the runner records the result with the callback backoff — never re-running the
//! export. [`Notifier`] runs the kind.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use url::Url;
use uuid::Uuid;

use super::contained::{WorkKind, contain};
use super::jobs::{Attempt, Failure, Job, JobRunner, RunnerSettings};
use crate::config::Config;
use crate::domain::{CallbackUrl, EmailAddress, ExportId};
use crate::metrics::METRICS;
use crate::notify::wording::for_requester;
use crate::notify::{CallbackSender, Delivery, Mailer, Notice, Outcome};
use crate::queue::jobs::NOTIFICATION;
use crate::queue::{ExportRow, JobState, QueueListener, RetryPolicy, storage};

/// Delivers the one notification of every finished export: the runner of [`Notification`] jobs.
#[derive(Clone)]
pub struct Notifier {
    runner: JobRunner<Notification>,
}

impl Notifier {
    /// A notifier with the configured mail transport and callback client.
    pub fn new(pool: PgPool, config: &Config, mailer: Arc<dyn Mailer>) -> anyhow::Result<Self> {
        let settings = RunnerSettings {
            concurrency: 4,
            poll_interval: Duration::from_millis(config.worker.poll_interval_ms),
        };
        let job = Notification::new(pool.clone(), config, mailer)?;
        Ok(Self {
            runner: JobRunner::new(pool, job, settings),
        })
    }

    /// Runs until shutdown; in-flight deliveries finish first.
    pub async fn run(self, listener: QueueListener, shutdown: CancellationToken) {
        self.runner.run(listener, shutdown).await
    }

    /// Delivers one due notification; false when none was due.
    pub async fn deliver_next(&self) -> sqlx::Result<bool> {
        self.runner.run_next().await
    }
}

/// The notification job's arguments: the finished export it tells about.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NotificationArgs {
    pub export_id: Uuid,
}

/// The channels already delivered or given up, so a retry of one never repeats the other
/// (none, as a new job's empty progress says).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct Channels {
    pub email_done: bool,
    pub callback_done: bool,
}

/// The kind of job that delivers an export's notice by e-mail and callback.
pub struct Notification {
    pool: PgPool,
    mailer: Arc<dyn Mailer>,
    callbacks: Arc<CallbackSender>,
    retry: RetryPolicy,
    email_attempts: i32,
    callback_attempts: i32,
    lease: Duration,
    public_url: String,
}

impl Notification {
    /// The kind with the configured mail transport, callback client and limits.
    pub fn new(pool: PgPool, config: &Config, mailer: Arc<dyn Mailer>) -> anyhow::Result<Self> {
        Ok(Self {
            pool,
            mailer,
            callbacks: Arc::new(CallbackSender::new(&config.callback)?),
            retry: RetryPolicy {
                base: Duration::from_secs(config.callback.backoff_base_seconds),
                max: Duration::from_secs(config.callback.backoff_max_seconds),
            },
            email_attempts: config.email.max_attempts as i32,
            callback_attempts: config.callback.max_attempts as i32,
            // Longer than a callback or SMTP exchange can take, so two notifiers never overlap.
            lease: Duration::from_secs(
                config
                    .callback
                    .timeout_seconds
                    .max(config.email.timeout_seconds)
                    * 2
                    + 30,
            ),
            public_url: config.server.public_url.clone(),
        })
    }
}

impl Job for Notification {
    const KIND: &'static str = NOTIFICATION;
    const WORK: WorkKind = WorkKind::Notification;
    type Args = NotificationArgs;
    type Progress = Channels;

    fn max_attempts(&self) -> i32 {
        // Each channel stops at its own limit (see `classify`); this bounds the job.
        self.email_attempts.max(self.callback_attempts).max(1)
    }

    fn retry_policy(&self) -> RetryPolicy {
        self.retry
    }

    fn lease(&self) -> Duration {
        self.lease
    }

    async fn run(
        &self,
        args: NotificationArgs,
        attempt: &mut Attempt<Channels>,
    ) -> Result<(), Failure> {
        let span =
            tracing::info_span!("notify", export_id = %args.export_id, attempt = attempt.number);
        self.deliver(ExportId(args.export_id), attempt)
            .instrument(span)
            .await
    }
}

impl Notification {
    async fn deliver(&self, id: ExportId, attempt: &mut Attempt<Channels>) -> Result<(), Failure> {
        let row = match storage::get(&self.pool, id).await {
            Ok(Some(row)) => row,
            Ok(None) => return Err(Failure::GiveUp(format!("export {id} no longer exists"))),
            Err(e) => {
                return Err(Failure::Retry {
                    error: format!("reading export {id} from the database failed: {e}"),
                    after: None,
                });
            }
        };
        let notice = notice(&row, &self.public_url);
        let channels = &mut attempt.progress;
        let number = attempt.number;
        let mut retry: Vec<String> = Vec::new();
        let mut hint: Option<Duration> = None;
        let mut gave_up: Vec<String> = Vec::new();

        if let (false, Some(address)) = (channels.email_done, row.callback_email.as_deref()) {
            let started = std::time::Instant::now();
            let delivery = match EmailAddress::parse(address) {
                Ok(to) => {
                    let (mailer, notice) = (self.mailer.clone(), notice.clone());
                    send(async move { mailer.send(&to, &notice).await }).await
                }
                Err(e) => Delivery::give_up(e.to_string()),
            };
            hint = hint.max(retry_after(&delivery));
            channels.email_done = self.classify(
                "email",
                started,
                delivery,
                number,
                self.email_attempts,
                &mut retry,
                &mut gave_up,
            );
        }
        if let (false, Some(url)) = (channels.callback_done, row.callback_url.as_deref()) {
            let started = std::time::Instant::now();
            let delivery = match CallbackUrl::from_stored(url) {
                Ok(url) => {
                    let (callbacks, notice) = (self.callbacks.clone(), notice.clone());
                    send(async move { callbacks.send(&url, &notice).await }).await
                }
                Err(e) => Delivery::give_up(e.to_string()),
            };
            hint = hint.max(retry_after(&delivery));
            channels.callback_done = self.classify(
                "callback",
                started,
                delivery,
                number,
                self.callback_attempts,
                &mut retry,
                &mut gave_up,
            );
        }

        if !retry.is_empty() {
            // The receiver's own Retry-After wins when it asks for more time than our backoff.
            tracing::warn!(reasons = ?retry, "notification will be retried");
            Err(Failure::Retry {
                error: retry.join("; "),
                after: hint,
            })
        } else if !gave_up.is_empty() {
            tracing::error!(reasons = ?gave_up, "notification given up");
            Err(Failure::GiveUp(gave_up.join("; ")))
        } else {
            tracing::info!("notification delivered");
            Ok(())
        }
    }

    /// Counts and times a channel's delivery and says whether the channel is done.
    #[allow(clippy::too_many_arguments)]
    fn classify(
        &self,
        channel: &'static str,
        started: std::time::Instant,
        delivery: Delivery,
        attempt: i32,
        max_attempts: i32,
        retry: &mut Vec<String>,
        gave_up: &mut Vec<String>,
    ) -> bool {
        let (outcome, done) = match delivery {
            Delivery::Delivered { receipt } => {
                tracing::info!(channel, receipt = %receipt, "delivered");
                ("delivered", true)
            }
            Delivery::Retry { reason, .. } if attempt < max_attempts => {
                retry.push(format!("{channel}: {reason}"));
                ("retry", false)
            }
            Delivery::Retry { reason, .. } | Delivery::GiveUp { reason } => {
                gave_up.push(format!(
                    "{channel}: {reason} (attempt {attempt} of {max_attempts})"
                ));
                ("failed", true)
            }
        };
        METRICS.notification(channel, outcome, started.elapsed());
        done
    }
}

/// One channel's delivery attempt as a unit of its own: a panic in it is that channel's failed
/// attempt, retried with the notifier's backoff and counted against its attempts like any
/// transient failure, while a channel already delivered is not sent again.
async fn send(delivery: impl Future<Output = Delivery> + Send + 'static) -> Delivery {
    contain(WorkKind::Notification, delivery)
        .await
        .unwrap_or_else(|e| Delivery::retry(e.to_string()))
}

fn retry_after(delivery: &Delivery) -> Option<Duration> {
    match delivery {
        Delivery::Retry { retry_after, .. } => *retry_after,
        _ => None,
    }
}

/// The notice for a finished export row; `public_url` roots its stable download link.
pub fn notice(row: &ExportRow, public_url: &str) -> Notice {
    let outcome = match row.state() {
        JobState::Succeeded => match row.download_url.as_deref().map(Url::parse) {
            Some(Ok(url)) => Outcome::Succeeded {
                url,
                expires_at: row.url_expires_at.unwrap_or_else(chrono::Utc::now),
                logs_exported: row.logs_exported.max(0) as u64,
                size_bytes: row.bytes_written.max(0) as u64,
            },
            _ => Outcome::Failed {
                reason: "the archive's link is missing".into(),
            },
        },
        JobState::TimedOut => Outcome::TimedOut,
        // The requester reads the reason: operator hints stay in the worker's log.
        JobState::Invalid => Outcome::InvalidRequest {
            reason: for_requester(row.last_error.as_deref().unwrap_or_default()),
        },
        _ => Outcome::Failed {
            reason: for_requester(row.last_error.as_deref().unwrap_or("the export failed")),
        },
    };
    Notice {
        export_id: ExportId(row.id),
        namespace: row.namespace.clone(),
        repository: row.repository.clone(),
        range: row.labelled_range(),
        outcome,
        download_url: (row.state() == JobState::Succeeded)
            .then(|| crate::notify::download_url(public_url, row.id)),
        sha256: row.sha256.clone(),
        webhook_id: row.webhook_id.clone(),
    }
}
