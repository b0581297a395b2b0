//! LISTEN/NOTIFY wake-ups for idle export workers and job runners.
//!
//! A notification wakes one idle claimer of the kind it names in each process, not all of them:
//! a claimer that finds work looks again at once (see `worker::jobs::runner`), and a burst of
//! work sends a burst of notifications, while a single due job costs each process one claim
//! instead of one per claimer of every kind. A job a process runs itself (the notification of an
//! export it finished) is not announced through Postgres at all: its worker wakes the
//! process's runner (see `worker::exports`). (At month-end on 6 processes, waking every claimer
//! of every kind made 35 claims of `jobs` per finished export: 5,329 statements for 150
//! exports.)

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::jobs::KINDS;

/// Channel notified when a job becomes runnable.
pub const CHANNEL_NEW_JOB: &str = "logexport_new_job";
/// Channel notified when a job of the `jobs` table becomes due; the payload is its kind.
pub const CHANNEL_NOTIFY: &str = "logexport_notify";

/// Wakes local waiters when Postgres announces new work; polling remains the fallback.
#[derive(Debug, Clone, Default)]
pub struct QueueListener {
    /// An export became runnable.
    pub new_job: Arc<Notify>,
    /// A job of the `jobs` table became due, one wake-up per kind (in [`KINDS`]' order), and a
    /// last one for every kind not in [`KINDS`] (a test's own).
    jobs_due: Arc<[Notify; KINDS.len() + 1]>,
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

    /// The wake-up of the `jobs` table's `kind`.
    pub fn job_due(&self, kind: &str) -> &Notify {
        &self.jobs_due[Self::index(kind)]
    }

    fn index(kind: &str) -> usize {
        KINDS.iter().position(|k| *k == kind).unwrap_or(KINDS.len())
    }

    async fn listen(&self, pool: &PgPool, shutdown: &CancellationToken) -> sqlx::Result<()> {
        let mut listener = PgListener::connect_with(pool).await?;
        listener
            .listen_all([CHANNEL_NEW_JOB, CHANNEL_NOTIFY])
            .await?;
        // Anything announced while we were disconnected is found by the next claims.
        self.new_job.notify_waiters();
        self.jobs_due.iter().for_each(Notify::notify_waiters);
        loop {
            let notification = tokio::select! {
                _ = shutdown.cancelled() => return Ok(()),
                n = listener.recv() => n?,
            };
            match notification.channel() {
                CHANNEL_NEW_JOB => self.new_job.notify_one(),
                CHANNEL_NOTIFY => self.job_due(notification.payload()).notify_one(),
                _ => {}
            }
        }
    }
}
