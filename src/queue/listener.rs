//! LISTEN/NOTIFY wake-ups for idle export workers and job runners.
//!
//! A notification wakes one idle claimer of the kind it names in each process, not all of them:
//! a claimer that finds work looks again at once (see `worker::jobs::runner`), and a burst of
//! work sends a burst of notifications, while a single due job costs each process one claim
//! instead of one per claimer of every kind. A job a process enqueues for itself wakes only that
//! process. (At month-end on 6 processes, waking every claimer of every kind made 35 claims of
//! `jobs` per finished export: 5,329 statements for 150 exports.)

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::jobs::KINDS;

/// Channel notified when a job becomes runnable.
pub const CHANNEL_NEW_JOB: &str = "logexport_new_job";
/// Channel notified when a job of the `jobs` table (a notification) becomes due; the payload
/// is its kind, or `kind@process` for a job the process [`process_token`] names runs first.
pub const CHANNEL_NOTIFY: &str = "logexport_notify";

/// This process among every process listening: a job a process announces for itself (the
/// notification of an export it finished) wakes only that process's runner. The others would
/// each spend a claim finding it taken; should it not claim it, their next look does.
pub fn process_token() -> &'static str {
    static TOKEN: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    TOKEN.get_or_init(|| {
        format!(
            "{}-{}",
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        )
    })
}

/// The kind a `CHANNEL_NOTIFY` payload names, when this process is to look for it.
fn due_here(payload: &str) -> Option<&str> {
    match payload.split_once('@') {
        Some((kind, process)) => (process == process_token()).then_some(kind),
        None => Some(payload),
    }
}

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
                CHANNEL_NOTIFY => {
                    if let Some(kind) = due_here(notification.payload()) {
                        self.job_due(kind).notify_one();
                    }
                }
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{due_here, process_token};

    #[test]
    fn a_job_announced_for_another_process_does_not_wake_this_one() {
        assert_eq!(due_here("notification"), Some("notification"));
        let mine = format!("notification@{}", process_token());
        assert_eq!(due_here(&mine), Some("notification"));
        assert_eq!(due_here("notification@4242-0badcafe"), None);
    }
}
