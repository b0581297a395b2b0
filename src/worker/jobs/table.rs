//! Every [`Job`] is a [`Kind`] of the one loop, stored in the `jobs` table (`queue::jobs`): its
//! arguments and progress are read back into its types, a failure is retried after the kind's
//! backoff until its last attempt, and a panic is a failed attempt.

use std::sync::Arc;

use async_trait::async_trait;
use sqlx::PgPool;
use tokio::sync::Notify;

use super::kind::{Kind, Recorder, Renewal, Step, Terms};
use super::{Attempt, Failure, Job};
use crate::metrics::METRICS;
use crate::queue::QueueListener;
use crate::queue::jobs::{self, ClaimedJob, Ended};
use crate::worker::{JobContext, StopReason, UnitError, WorkKind};

/// What an attempt of a [`Job`] returned: `None` when it was dropped because its lease was taken
/// over; `Err` when its stored arguments or progress do not parse.
type Ran<P> = Option<Result<(Result<(), Failure>, Attempt<P>), String>>;

#[async_trait]
impl<J: Job> Kind for J {
    type Claimed = ClaimedJob;
    type Output = Ran<J::Progress>;

    fn unit(&self) -> WorkKind {
        J::WORK
    }

    fn terms(&self) -> Terms {
        let lease = self.lease();
        Terms {
            lease,
            heartbeat: lease / 3,
            max_work: None,
            shutdown_grace: None,
        }
    }

    /// The names the loops before the runner gave their database calls.
    fn component(&self, _step: Step) -> &'static str {
        match J::WORK {
            WorkKind::Notification => "notify",
            WorkKind::AuditShipping => "audit",
            WorkKind::ScheduleTick => "schedule",
            WorkKind::Export | WorkKind::Housekeeping => "record",
        }
    }

    fn wake_up<'l>(&self, listener: &'l QueueListener) -> &'l Notify {
        listener.job_due(J::KIND)
    }

    async fn claim(&self, pool: &PgPool, owner: &str) -> sqlx::Result<Option<ClaimedJob>> {
        jobs::claim(pool, J::KIND, owner, self.lease(), self.max_attempts()).await
    }

    fn span(&self, claimed: &ClaimedJob) -> tracing::Span {
        tracing::info_span!(
            "job",
            kind = J::KIND,
            job_id = claimed.id,
            attempt = claimed.attempt
        )
    }

    async fn renew(
        &self,
        pool: &PgPool,
        claimed: &ClaimedJob,
        _ctx: &JobContext,
    ) -> sqlx::Result<Renewal> {
        let held = jobs::renew_lease(pool, claimed.id, claimed.attempt, self.lease()).await?;
        Ok(if held { Renewal::Held } else { Renewal::Lost })
    }

    async fn run(
        self: Arc<Self>,
        _pool: PgPool,
        claimed: Arc<ClaimedJob>,
        ctx: JobContext,
    ) -> Ran<J::Progress> {
        // A stored value that does not parse fails its job: it never runs with a default.
        let parsed = serde_json::from_value::<J::Args>(claimed.args.clone())
            .map_err(|e| format!("the job's args do not parse: {e}"))
            .and_then(|args| {
                let progress = match &claimed.progress {
                    None => Ok(J::Progress::default()),
                    Some(stored) => serde_json::from_value::<J::Progress>(stored.clone()),
                };
                progress
                    .map(|progress| (args, progress))
                    .map_err(|e| format!("the job's progress does not parse: {e}"))
            });
        let (args, progress) = match parsed {
            Ok(parsed) => parsed,
            Err(error) => return Some(Err(error)),
        };
        let mut attempt = Attempt {
            id: claimed.id,
            number: claimed.attempt,
            max_attempts: claimed.max_attempts,
            progress,
        };
        let result = {
            let body = Job::run(&*self, args, &mut attempt);
            tokio::pin!(body);
            loop {
                tokio::select! {
                    result = &mut body => break Some(result),
                    // A job's body does not watch the stop signal: it runs to its end at shutdown
                    // and at a cancel, and is dropped only once its job is another runner's.
                    _ = ctx.stopped(), if !ctx.is_stopped() || ctx.stop_reason() == Some(StopReason::LostLease) => {
                        if ctx.stop_reason() == Some(StopReason::LostLease) {
                            break None;
                        }
                    }
                }
            }
        };
        result.map(|result| Ok((result, attempt)))
    }

    async fn record(
        &self,
        pool: &PgPool,
        claimed: &ClaimedJob,
        _ctx: &JobContext,
        ran: Result<Ran<J::Progress>, UnitError>,
        record: &Recorder,
    ) -> &'static str {
        let (id, number) = (claimed.id, claimed.attempt);
        let (ended, progress) = match ran {
            Ok(None) => return "lost_lease",
            Ok(Some(Err(invalid))) => {
                tracing::error!(error = %invalid, "the job is invalid");
                (Ended::Failed(invalid), None)
            }
            Ok(Some(Ok((result, attempt)))) => (
                ended(self, number, claimed.max_attempts, result),
                Some(attempt.progress),
            ),
            // A panic is a failed attempt; the progress it made is lost with its task.
            Err(unit) => {
                let retry = Failure::Retry {
                    error: unit.to_string(),
                    after: None,
                };
                (ended(self, number, claimed.max_attempts, Err(retry)), None)
            }
        };
        let progress = match progress.map(|p| serde_json::to_value(&p)).transpose() {
            Ok(progress) => progress,
            Err(e) => {
                tracing::error!(error = %e, "the job's progress does not serialize; it is not saved");
                None
            }
        };
        let label = match &ended {
            Ended::Succeeded => "succeeded",
            Ended::RetryAfter(..) => "retried",
            Ended::Failed(_) => "failed",
        };
        METRICS.job_outcome(J::KIND, label);
        // Recorded once the database takes it: what the attempt did (a delivered notice) is never
        // done again because the database was away (its lease outlives an outage: see
        // `RESTART_GRACE`).
        let finish = record.write(|| jobs::finish(pool, id, number, &ended, progress.as_ref()));
        match finish.await {
            Ok(true) => {}
            Ok(false) => tracing::warn!("the job's lease lapsed before its outcome was recorded"),
            Err(e) => {
                tracing::error!(error = %e, "could not record the job's outcome; it runs again once its lease lapses")
            }
        }
        label
    }
}

/// What an attempt's result means: a retryable failure runs again after the job's backoff until
/// its last attempt.
fn ended<J: Job>(job: &J, number: i32, max_attempts: i32, result: Result<(), Failure>) -> Ended {
    match result {
        Ok(()) => Ended::Succeeded,
        Err(Failure::Retry { error, after }) if number < max_attempts => {
            let delay = job
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
    }
}
