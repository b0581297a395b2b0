//! The scheduler's tick as a kind of job (`worker::jobs`): one `schedule_tick` job per tick
//! period (`schedule.interval_seconds`, counted from the Unix epoch), its unique key the period's
//! start, so any number of worker processes enqueue and run each period's tick once.
//!
//! An attempt first enqueues the next period's tick, then ticks: the chain goes on whatever the
//! tick does. Every process enqueues the current period's tick when it starts, so ticks resume
//! after all workers were down. A tick that fails or panics is a failed attempt, tried again
//! after a short backoff up to [`TICK_ATTEMPTS`] times; the next period's tick does its work in
//! any case, since a tick handles whatever is due at its time. Enqueuing the next tick is tried
//! until it succeeds: a job that gave up on it would end the chain. Exactly once per schedule period rests
//! on the scheduler's row locks and run keys (`scheduler`), not on this.

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::scheduler::{BeforeCommit, Scheduler, TickReport};
use crate::config::Config;
use crate::queue::jobs::{self, SCHEDULE_TICK};
use crate::queue::{QueueListener, RetryPolicy};
use crate::worker::WorkKind;
use crate::worker::jobs::{Attempt, Failure, Job, JobRunner, RunnerSettings};

/// Attempts at one period's tick. Few: the next period's tick, enqueued before this one ticked,
/// does what a failed one could not.
pub const TICK_ATTEMPTS: i32 = 3;

/// Long, since a tick re-checks each due schedule's owner with Quay one after another; a lease
/// that lapses after a crash costs nothing, the next period's tick is already queued.
const LEASE: Duration = Duration::from_secs(600);

/// A `schedule_tick` job's arguments: the start of its tick period.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TickArgs {
    pub due: DateTime<Utc>,
}

/// The start of the tick period `at` is in: `at` floored to `interval` since the Unix epoch.
pub fn period_start(at: DateTime<Utc>, interval: Duration) -> DateTime<Utc> {
    let interval = interval.as_secs().max(1) as i64;
    let secs = at.timestamp();
    let floored = secs - secs.rem_euclid(interval);
    DateTime::from_timestamp(floored, 0).unwrap_or(at)
}

/// The unique key of the tick of the period starting at `start`: RFC 3339, in seconds.
pub fn unique_key(start: DateTime<Utc>) -> String {
    start.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The kind of job that runs one scheduler tick.
pub struct ScheduleTicks {
    scheduler: Scheduler,
    pool: PgPool,
    interval: Duration,
}

impl ScheduleTicks {
    /// Ticks every `schedule.interval_seconds`, with the scheduler of `config`.
    pub fn new(pool: PgPool, config: &Config) -> Self {
        Self {
            scheduler: Scheduler::new(pool.clone(), config),
            pool,
            interval: Duration::from_secs(config.schedule.interval_seconds.max(1)),
        }
    }

    /// Installs the scheduler's [`BeforeCommit`] test hook.
    pub fn with_before_commit(mut self, hook: BeforeCommit) -> Self {
        self.scheduler = self.scheduler.with_before_commit(hook);
        self
    }

    /// Enqueues the current period's tick unless it exists, then runs ticks until shutdown.
    pub async fn run(self, listener: QueueListener, shutdown: CancellationToken) {
        let start = period_start(Utc::now(), self.interval);
        let enqueued = crate::db::retry_while_unavailable(
            "schedule",
            || shutdown.is_cancelled(),
            || enqueue(&self.pool, start),
        )
        .await;
        if let Err(error) = enqueued {
            tracing::warn!(%error, "enqueuing the current scheduler tick failed; ticks go on from any queued one");
        }
        self.into_runner().run(listener, shutdown).await
    }

    /// The runner of this kind: one tick at a time per process, looking for a due tick four
    /// times per interval so that none starts a whole period late.
    pub fn into_runner(self) -> JobRunner<Self> {
        let settings = RunnerSettings {
            concurrency: 1,
            poll_interval: (self.interval / 4)
                .clamp(Duration::from_millis(250), Duration::from_secs(5)),
        };
        JobRunner::new(self.pool.clone(), self, settings)
    }
}

/// Enqueues the tick of the period starting at `start`, due then; false when it exists.
async fn enqueue(pool: &PgPool, start: DateTime<Utc>) -> sqlx::Result<bool> {
    let args = serde_json::to_value(TickArgs { due: start })
        .map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    let mut conn = pool.acquire().await?;
    jobs::enqueue_unique_at(
        &mut conn,
        SCHEDULE_TICK,
        &unique_key(start),
        &args,
        Some(start),
    )
    .await
}

impl Job for ScheduleTicks {
    const KIND: &'static str = SCHEDULE_TICK;
    const WORK: WorkKind = WorkKind::ScheduleTick;
    type Args = TickArgs;
    type Progress = ();

    /// Unbounded for the runner, so that a job never gives up before the next tick is enqueued;
    /// the tick itself is tried [`TICK_ATTEMPTS`] times (see `run`).
    fn max_attempts(&self) -> i32 {
        i32::MAX
    }

    /// From a second up to one interval: a retry never waits past the next period's tick.
    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            base: Duration::from_secs(1),
            max: self.interval,
        }
    }

    fn lease(&self) -> Duration {
        LEASE
    }

    async fn run(&self, args: TickArgs, attempt: &mut Attempt<()>) -> Result<(), Failure> {
        // The wall clock, unless it lags the database's (which found the tick due): a late tick
        // handles whatever is due by now.
        let now = Utc::now().max(args.due);
        let next = period_start(now, self.interval) + self.interval;
        // Without the next tick this attempt fails before ticking, and is retried however often
        // it takes: the chain of ticks never ends.
        if let Err(e) = enqueue(&self.pool, next).await {
            return Err(Failure::Retry {
                error: format!("enqueuing the next scheduler tick failed: {e}"),
                after: None,
            });
        }
        if attempt.number > TICK_ATTEMPTS {
            return Err(Failure::GiveUp(format!(
                "the scheduler tick gave up after {TICK_ATTEMPTS} failed attempts (their errors \
                 are logged); the next period's tick does its work"
            )));
        }
        match self.scheduler.tick(now).await {
            Ok(report) if report != TickReport::default() => {
                tracing::info!(?report, "scheduler tick");
                Ok(())
            }
            Ok(_) => Ok(()),
            Err(e) => {
                // Each period is enqueued with its run row or not at all: a retry or the next
                // tick does what this one could not.
                if crate::db::is_unavailable(&e) {
                    crate::db::report_unavailable("schedule", &e);
                }
                Err(Failure::Retry {
                    error: format!("scheduler tick failed: {e}"),
                    after: None,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    #[test]
    fn a_tick_period_starts_at_the_instant_floored_to_the_interval() {
        let thirty = Duration::from_secs(30);
        assert_eq!(
            period_start(at("2026-12-06T06:15:44.900Z"), thirty),
            at("2026-12-06T06:15:30Z")
        );
        assert_eq!(
            period_start(at("2026-12-06T06:15:30Z"), thirty),
            at("2026-12-06T06:15:30Z")
        );
        assert_eq!(
            period_start(at("1969-12-31T23:59:59Z"), thirty),
            at("1969-12-31T23:59:30Z")
        );
        let hour = Duration::from_secs(3600);
        assert_eq!(
            period_start(at("2026-12-06T06:59:59Z"), hour),
            at("2026-12-06T06:00:00Z")
        );
    }

    #[test]
    fn a_ticks_unique_key_is_its_period_start_in_rfc_3339() {
        let start = period_start(at("2026-12-06T06:15:44.9+01:00"), Duration::from_secs(30));
        assert_eq!(unique_key(start), "2026-12-06T05:15:30Z");
    }

    #[test]
    fn tick_args_are_the_due_instant_and_nothing_else() {
        let args: TickArgs =
            serde_json::from_value(serde_json::json!({"due": "2026-12-06T05:15:30Z"})).unwrap();
        assert_eq!(args.due, at("2026-12-06T05:15:30Z"));
        assert!(serde_json::from_value::<TickArgs>(serde_json::json!({"due": "soon"})).is_err());
        assert!(
            serde_json::from_value::<TickArgs>(
                serde_json::json!({"due": "2026-12-06T05:15:30Z", "extra": 1})
            )
            .is_err()
        );
    }
}
