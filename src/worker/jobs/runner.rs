//! The loop of one kind of job: claims due jobs, runs each attempt in a task of its own under a
//! lease its heartbeat renews, and records how it ended, fenced on the attempt.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::{Attempt, Failure, Job};
use crate::metrics::METRICS;
use crate::queue::QueueListener;
use crate::queue::jobs::{self, ClaimedJob, Ended};
use crate::worker::{UnitError, WorkKind, contain};

/// How many attempts of a kind run at once in this process, and how often an idle loop looks
/// for due jobs when no wake-up came.
#[derive(Debug, Clone, Copy)]
pub struct RunnerSettings {
    pub concurrency: usize,
    pub poll_interval: Duration,
}

/// An attempt's result and its progress, or how its task ended without them (a panic).
type Ran<P> = Result<(Result<(), Failure>, Attempt<P>), UnitError>;

/// Runs the jobs of one kind `J`.
pub struct JobRunner<J: Job> {
    pool: PgPool,
    job: Arc<J>,
    settings: RunnerSettings,
    owner: String,
    /// Cancelled at shutdown: an outcome no longer waits for the database then.
    shutdown: CancellationToken,
}

impl<J: Job> Clone for JobRunner<J> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            job: self.job.clone(),
            settings: self.settings,
            owner: self.owner.clone(),
            shutdown: self.shutdown.clone(),
        }
    }
}

impl<J: Job> JobRunner<J> {
    /// A runner of `job`'s kind with a lease owner unique to it.
    pub fn new(pool: PgPool, job: J, settings: RunnerSettings) -> Self {
        Self {
            pool,
            job: Arc::new(job),
            settings,
            owner: format!(
                "{}-{}-{}",
                J::KIND,
                std::process::id(),
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            ),
            shutdown: CancellationToken::new(),
        }
    }

    /// Runs `concurrency` loops until shutdown; attempts in flight finish first.
    pub async fn run(mut self, listener: QueueListener, shutdown: CancellationToken) {
        self.shutdown = shutdown.clone();
        let tracker = TaskTracker::new();
        for _ in 0..self.settings.concurrency.max(1) {
            let (this, listener, shutdown) = (self.clone(), listener.clone(), shutdown.clone());
            tracker.spawn(async move { this.run_loop(listener, shutdown).await });
        }
        tracker.close();
        tracker.wait().await;
    }

    async fn run_loop(&self, listener: QueueListener, shutdown: CancellationToken) {
        while !shutdown.is_cancelled() {
            let woken = listener.notify_due.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            match self.run_next().await {
                Ok(true) => continue,
                Ok(false) => crate::db::report_available(),
                Err(e) if crate::db::is_unavailable(&e) => {
                    crate::db::report_unavailable(component::<J>(), &e)
                }
                Err(e) => tracing::warn!(kind = J::KIND, error = %e, "claiming a job failed"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = &mut woken => {}
                _ = tokio::time::sleep(self.settings.poll_interval) => {}
            }
        }
    }

    /// Claims and runs one due job; false when none was due.
    pub async fn run_next(&self) -> sqlx::Result<bool> {
        let lease = self.job.lease();
        let max_attempts = self.job.max_attempts();
        let claimed = jobs::claim(&self.pool, J::KIND, &self.owner, lease, max_attempts).await?;
        let Some(claimed) = claimed else {
            return Ok(false);
        };
        let span = tracing::info_span!(
            "job",
            kind = J::KIND,
            job_id = claimed.id,
            attempt = claimed.attempt
        );
        self.attempt(claimed).instrument(span).await?;
        Ok(true)
    }

    async fn attempt(&self, claimed: ClaimedJob) -> sqlx::Result<()> {
        let (id, number) = (claimed.id, claimed.attempt);
        // A stored value that does not parse fails its job: it never runs with a default.
        let parsed = serde_json::from_value::<J::Args>(claimed.args)
            .map_err(|e| format!("the job's args do not parse: {e}"))
            .and_then(|args| {
                let progress = match claimed.progress {
                    None => Ok(J::Progress::default()),
                    Some(stored) => serde_json::from_value::<J::Progress>(stored),
                };
                progress
                    .map(|progress| (args, progress))
                    .map_err(|e| format!("the job's progress does not parse: {e}"))
            });
        let (args, progress) = match parsed {
            Ok(parsed) => parsed,
            Err(error) => {
                tracing::error!(%error, "the job is invalid");
                return self.record(id, number, Ended::Failed(error), None).await;
            }
        };
        let mut attempt = Attempt {
            id,
            number,
            max_attempts: claimed.max_attempts,
            progress,
        };
        let job = self.job.clone();
        let mut work = contain(J::WORK, async move {
            let result = job.run(args, &mut attempt).await;
            (result, attempt)
        });
        let lease = self.job.lease();
        let ran = loop {
            tokio::select! {
                ran = &mut work => break ran,
                _ = tokio::time::sleep(lease / 3) => {
                    match jobs::renew_lease(&self.pool, id, number, lease).await {
                        Ok(true) => {}
                        // Dropping the work aborts it: the job is another runner's now.
                        Ok(false) => {
                            tracing::warn!("the job's lease was taken over; this attempt stops");
                            return Ok(());
                        }
                        Err(e) => tracing::warn!(error = %e, "renewing the job's lease failed; trying again at the next heartbeat"),
                    }
                }
            }
        };
        let (ended, progress) = self.outcome(number, claimed.max_attempts, ran);
        let progress = match progress.map(|p| serde_json::to_value(&p)).transpose() {
            Ok(progress) => progress,
            Err(e) => {
                tracing::error!(error = %e, "the job's progress does not serialize; it is not saved");
                None
            }
        };
        METRICS.job_outcome(J::KIND, outcome_label(&ended));
        self.record(id, number, ended, progress).await
    }

    /// What the attempt's result means: a retryable failure (a panic is one) runs again after
    /// the backoff until the last attempt.
    fn outcome(
        &self,
        number: i32,
        max_attempts: i32,
        ran: Ran<J::Progress>,
    ) -> (Ended, Option<J::Progress>) {
        let (result, progress) = match ran {
            Ok((result, attempt)) => (result, Some(attempt.progress)),
            Err(unit) => (
                Err(Failure::Retry {
                    error: unit.to_string(),
                    after: None,
                }),
                None,
            ),
        };
        let ended = match result {
            Ok(()) => Ended::Succeeded,
            Err(Failure::Retry { error, after }) if number < max_attempts => {
                let delay = self
                    .job
                    .retry_policy()
                    .delay(number.max(1) as u32)
                    .max(after.unwrap_or_default());
                tracing::warn!(%error, retry_in = ?delay, "the job will be retried");
                Ended::RetryAfter(delay, error)
            }
            Err(Failure::Retry { error, .. }) | Err(Failure::GiveUp(error)) => {
                tracing::error!(%error, "the job failed");
                Ended::Failed(error)
            }
        };
        (ended, progress)
    }

    /// Records the attempt's end once the database takes it: what the attempt did (a delivered
    /// notice) is never done again because the database was away (its lease outlives an outage:
    /// see `RESTART_GRACE`).
    async fn record(
        &self,
        id: i64,
        number: i32,
        ended: Ended,
        progress: Option<serde_json::Value>,
    ) -> sqlx::Result<()> {
        let recorded = crate::db::retry_while_unavailable(
            component::<J>(),
            || self.shutdown.is_cancelled(),
            || jobs::finish(&self.pool, id, number, &ended, progress.as_ref()),
        )
        .await?;
        if !recorded {
            tracing::warn!("the job's lease lapsed before its outcome was recorded");
        }
        Ok(())
    }
}

/// The `component` label of `logexport_database_unavailable_total` for a kind's database
/// calls, as the loops before the runner named them.
fn component<J: Job>() -> &'static str {
    match J::WORK {
        WorkKind::Notification => "notify",
        WorkKind::AuditShipping => "audit",
        WorkKind::ScheduleTick => "schedule",
        WorkKind::Export | WorkKind::Housekeeping => "record",
    }
}

fn outcome_label(ended: &Ended) -> &'static str {
    match ended {
        Ended::Succeeded => "succeeded",
        Ended::RetryAfter(..) => "retried",
        Ended::Failed(_) => "failed",
    }
}
