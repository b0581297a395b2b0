//! LISTEN/NOTIFY wake-ups for idle export workers and job runners.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// Channel notified when a job becomes runnable.
pub const CHANNEL_NEW_JOB: &str = "logexport_new_job";
/// Channel notified when a job of the `jobs` table (a notification) becomes due; the payload
/// is its kind.
pub const CHANNEL_NOTIFY: &str = "logexport_notify";

/// Wakes local waiters when Postgres announces new work; polling remains the fallback.
#[derive(Debug, Clone, Default)]
pub struct QueueListener {
    pub new_job: Arc<Notify>,
    pub notify_due: Arc<Notify>,
}

impl QueueListener {
    /// Listens until `shutdown`, reconnecting after connection loss.
    pub fn spawn(pool: PgPool, shutdown: CancellationToken) -> Self {
        let this = Self::default();
        let wake = this.clone();
        tokio::spawn(async move {
            while !shutdown.is_cancelled() {
                if let Err(e) = wake.listen(&pool, &shutdown).await {
                    if crate::db::is_unavailable(&e) {
                        // Once per outage, not once per reconnect attempt.
                        crate::db::report_unavailable("listen", &e);
                    } else {
                        tracing::warn!(error = %e, "queue listener lost its connection; polling until it reconnects");
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        });
        this
    }

    async fn listen(&self, pool: &PgPool, shutdown: &CancellationToken) -> sqlx::Result<()> {
        let mut listener = PgListener::connect_with(pool).await?;
        listener
            .listen_all([CHANNEL_NEW_JOB, CHANNEL_NOTIFY])
            .await?;
        // Anything announced while we were disconnected is found by the next claim.
        self.new_job.notify_waiters();
        self.notify_due.notify_waiters();
        loop {
            let notification = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                n = listener.recv() => n?,
            };
            match notification.channel() {
                CHANNEL_NEW_JOB => {
                    self.new_job.notify_waiters();
                    self.new_job.notify_one();
                }
                CHANNEL_NOTIFY => {
                    self.notify_due.notify_waiters();
                    self.notify_due.notify_one();
                }
                _ => {}
            }
        }
    }
}
