//! The notification stage's loop: claims due notifications, makes one delivery attempt per
//! channel through `notify`, and records the result with its own backoff — never re-running
//! the export.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;
use url::Url;

use super::contained::{WorkKind, contain};
use crate::config::Config;
use crate::domain::{CallbackUrl, EmailAddress, ExportId};
use crate::metrics::METRICS;
use crate::notify::wording::for_requester;
use crate::notify::{CallbackSender, Delivery, Mailer, Notice, Outcome};
use crate::queue::storage::{self, NotifyResult};
use crate::queue::{ExportRow, JobState, QueueListener, RetryPolicy};

/// Delivers the one notification of every finished export.
#[derive(Clone)]
pub struct Notifier {
    pool: PgPool,
    mailer: Arc<dyn Mailer>,
    callbacks: Arc<CallbackSender>,
    retry: RetryPolicy,
    email_attempts: i32,
    callback_attempts: i32,
    lease: Duration,
    poll_interval: Duration,
    concurrency: usize,
    public_url: String,
    /// Cancelled at shutdown: a result no longer waits for the database then.
    shutdown: CancellationToken,
}

impl Notifier {
    /// A notifier with the configured mail transport and callback client.
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
            poll_interval: Duration::from_millis(config.worker.poll_interval_ms),
            public_url: config.server.public_url.clone(),
            concurrency: 4,
            shutdown: CancellationToken::new(),
        })
    }

    /// Runs until shutdown; in-flight deliveries finish first.
    pub async fn run(self, listener: QueueListener, shutdown: CancellationToken) {
        let tracker = TaskTracker::new();
        for _ in 0..self.concurrency {
            let mut this = self.clone();
            this.shutdown = shutdown.clone();
            let (listener, shutdown) = (listener.clone(), shutdown.clone());
            tracker.spawn(async move { this.run_one(listener, shutdown).await });
        }
        tracker.close();
        tracker.wait().await;
    }

    async fn run_one(&self, listener: QueueListener, shutdown: CancellationToken) {
        while !shutdown.is_cancelled() {
            let woken = listener.notify_due.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let this = self.clone();
            match contain(
                WorkKind::Notification,
                async move { this.deliver_next().await },
            )
            .await
            {
                Ok(Ok(true)) => continue,
                Ok(Ok(false)) => crate::db::report_available(),
                Ok(Err(e)) if crate::db::is_unavailable(&e) => {
                    crate::db::report_unavailable("notify", &e)
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "claiming a notification failed"),
                // Outside a channel's send (whose panic is a failed attempt, see `send`): the
                // claim counted the attempt, and its lease running out retries the notification.
                Err(_) => {}
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = &mut woken => {}
                _ = tokio::time::sleep(self.poll_interval) => {}
            }
        }
    }

    /// Delivers one due notification; false when none was due.
    pub async fn deliver_next(&self) -> sqlx::Result<bool> {
        let Some(row) = storage::claim_notification(&self.pool, self.lease).await? else {
            return Ok(false);
        };
        let span =
            tracing::info_span!("notify", export_id = %row.id, attempt = row.notify_attempts);
        self.deliver(row).instrument(span).await?;
        Ok(true)
    }

    async fn deliver(&self, row: ExportRow) -> sqlx::Result<()> {
        let notice = notice(&row, &self.public_url);
        let mut email_done = row.email_done;
        let mut callback_done = row.callback_done;
        let mut retry: Vec<String> = Vec::new();
        let mut hint: Option<Duration> = None;
        let mut gave_up: Vec<String> = Vec::new();

        if let (false, Some(address)) = (email_done, row.callback_email.as_deref()) {
            let started = std::time::Instant::now();
            let delivery = match EmailAddress::parse(address) {
                Ok(to) => {
                    let (mailer, notice) = (self.mailer.clone(), notice.clone());
                    send(async move { mailer.send(&to, &notice).await }).await
                }
                Err(e) => Delivery::give_up(e.to_string()),
            };
            hint = hint.max(retry_after(&delivery));
            email_done = self.classify(
                "email",
                started,
                delivery,
                row.notify_attempts,
                self.email_attempts,
                &mut retry,
                &mut gave_up,
            );
        }
        if let (false, Some(url)) = (callback_done, row.callback_url.as_deref()) {
            let started = std::time::Instant::now();
            let delivery = match CallbackUrl::from_stored(url) {
                Ok(url) => {
                    let (callbacks, notice) = (self.callbacks.clone(), notice.clone());
                    send(async move { callbacks.send(&url, &notice).await }).await
                }
                Err(e) => Delivery::give_up(e.to_string()),
            };
            hint = hint.max(retry_after(&delivery));
            callback_done = self.classify(
                "callback",
                started,
                delivery,
                row.notify_attempts,
                self.callback_attempts,
                &mut retry,
                &mut gave_up,
            );
        }

        let result = if !retry.is_empty() {
            // The receiver's own Retry-After wins when it asks for more time than our backoff.
            let delay = self
                .retry
                .delay(row.notify_attempts.max(1) as u32)
                .max(hint.unwrap_or_default());
            tracing::warn!(reasons = ?retry, retry_in = ?delay, "notification will be retried");
            NotifyResult::RetryAfter(delay, retry.join("; "))
        } else if !gave_up.is_empty() {
            tracing::error!(reasons = ?gave_up, "notification given up");
            NotifyResult::GaveUp(gave_up.join("; "))
        } else {
            tracing::info!("notification delivered");
            NotifyResult::Delivered
        };
        // What was delivered is recorded once the database takes it, never delivered again
        // because the database was away (its lease outlives an outage: see RESTART_GRACE).
        let recorded = crate::db::retry_while_unavailable(
            "notify",
            || self.shutdown.is_cancelled(),
            || {
                storage::finish_notification(
                    &self.pool,
                    row.id,
                    row.notify_attempts,
                    &result,
                    email_done,
                    callback_done,
                )
            },
        )
        .await?;
        if !recorded {
            tracing::warn!("notification lease lapsed before the result was recorded");
        }
        Ok(())
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
