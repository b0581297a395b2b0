//! Exports as a kind of the one job runner (`worker::jobs`): claimed from `export_jobs` with the
//! per-namespace limit, a heartbeat that stores progress and reads cancel requests, the time one
//! attempt may take, the shutdown grace, and the outcome mapping of sealed chain links, database
//! outages and orphan archives.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::contained::{UnitError, WorkKind};
use super::job::{JobContext, JobError, JobHandler, StopReason};
use super::jobs::{JobRunner, Kind, Recorder, Renewal, RunnerSettings, Step, Terms};
use crate::config::WorkerConfig;
use crate::domain::ExportId;
use crate::metrics::METRICS;
use crate::queue::jobs::NOTIFICATION;
use crate::queue::{Claim, ExportResult, Finish, QueueListener, RetryPolicy, storage};

/// The worker's tunables, derived from `[worker]`.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    pub worker_id: String,
    pub concurrency: usize,
    pub lease: Duration,
    pub heartbeat: Duration,
    pub retry: RetryPolicy,
    pub poll_interval: Duration,
    pub per_namespace_limit: u32,
    pub max_work: Duration,
    pub shutdown_grace: Duration,
}

impl WorkerSettings {
    /// Settings from configuration, with a unique worker id for this process.
    pub fn from_config(config: &WorkerConfig) -> Self {
        let lease = Duration::from_secs(config.lease_seconds);
        Self {
            worker_id: format!(
                "{}-{}-{}",
                hostname(),
                std::process::id(),
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            ),
            concurrency: config.concurrency,
            lease,
            // Renewing often also bounds how long a cancel request waits to be seen.
            heartbeat: (lease / 3).min(Duration::from_secs(2)),
            retry: RetryPolicy {
                base: Duration::from_secs(config.backoff_base_seconds),
                max: Duration::from_secs(config.backoff_max_seconds),
            },
            poll_interval: Duration::from_millis(config.poll_interval_ms),
            per_namespace_limit: config.per_namespace_limit,
            max_work: Duration::from_secs(config.max_work_seconds),
            shutdown_grace: Duration::from_secs(config.shutdown_grace_seconds),
        }
    }

    fn terms(&self) -> Terms {
        Terms {
            lease: self.lease,
            heartbeat: self.heartbeat,
            max_work: Some(self.max_work),
            shutdown_grace: Some(self.shutdown_grace),
        }
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".into())
}

/// The export workers of one process: the job runner with exports as its kind.
pub struct WorkerPool {
    runner: JobRunner<Exports>,
    owner: String,
    concurrency: usize,
}

impl WorkerPool {
    /// A pool running `handler` for each claimed export.
    pub fn new(pool: PgPool, settings: WorkerSettings, handler: Arc<dyn JobHandler>) -> Self {
        let runner_settings = RunnerSettings {
            concurrency: settings.concurrency,
            poll_interval: settings.poll_interval,
        };
        let owner = settings.worker_id.clone();
        let concurrency = settings.concurrency;
        let exports = Exports {
            settings,
            handler,
            notifier: std::sync::OnceLock::new(),
        };
        Self {
            runner: JobRunner::with_owner(pool, exports, runner_settings, owner.clone()),
            owner,
            concurrency,
        }
    }

    /// Claims and runs exports until `shutdown`, woken by a queue listener of its own; see
    /// [`WorkerPool::run_with`].
    pub async fn run(self, shutdown: CancellationToken) {
        let listener_stop = CancellationToken::new();
        let listener = QueueListener::spawn(self.runner.pool().clone(), listener_stop.clone());
        self.run_with(&listener, shutdown).await;
        listener_stop.cancel();
    }

    /// Claims and runs exports until `shutdown`, woken by `listener` (a process shares one with
    /// its other runners); then stops claiming, lets running exports finish within the grace
    /// period, and releases the leases of those that did not.
    pub async fn run_with(self, listener: &QueueListener, shutdown: CancellationToken) {
        // A finished export's notification is this process's notifier's to send.
        let _ = self.runner.kind().notifier.set(listener.clone());
        self.runner.kind().handler.start_up().await;
        // Operators (and deploy/verify.sh, the month-end benchmark) read these two lines.
        tracing::info!(worker_id = %self.owner, concurrency = self.concurrency, "worker started");
        self.runner.run(listener.clone(), shutdown).await;
        tracing::info!("worker stopped");
    }
}

/// The export kind: its settings and its body.
struct Exports {
    settings: WorkerSettings,
    handler: Arc<dyn JobHandler>,
    /// Wakes this process's notifier for the notification of an export finished here (see
    /// `queue::storage::finish`); unset while no listener runs (`run_next`), when the
    /// notifier's own looks find it.
    notifier: std::sync::OnceLock<QueueListener>,
}

/// A claimed export attempt, and when it was claimed.
struct ExportAttempt {
    claim: Claim,
    started: Instant,
}

#[async_trait]
impl Kind for Exports {
    type Claimed = ExportAttempt;
    type Output = Result<ExportResult, JobError>;

    fn unit(&self) -> WorkKind {
        WorkKind::Export
    }

    fn terms(&self) -> Terms {
        self.settings.terms()
    }

    fn component(&self, step: Step) -> &'static str {
        match step {
            Step::Claim => "claim",
            Step::Renew => "heartbeat",
            Step::Record => "record",
        }
    }

    fn wake_up<'l>(&self, listener: &'l QueueListener) -> &'l Notify {
        &listener.new_job
    }

    async fn ready(&self) {
        self.handler.ready_for_more().await;
    }

    async fn claim(&self, pool: &PgPool, owner: &str) -> sqlx::Result<Option<ExportAttempt>> {
        let claim = storage::claim_next(
            pool,
            owner,
            self.settings.lease,
            self.settings.per_namespace_limit,
        )
        .await?;
        Ok(claim.map(|claim| {
            METRICS.job_started();
            ExportAttempt {
                claim,
                started: Instant::now(),
            }
        }))
    }

    fn span(&self, claimed: &ExportAttempt) -> tracing::Span {
        let claim = &claimed.claim;
        let span = tracing::info_span!("export_job", export_id = %claim.id, attempt = claim.attempt, namespace = tracing::field::Empty);
        if let Ok(job) = &claim.job {
            span.record("namespace", tracing::field::display(&job.namespace));
        }
        span
    }

    fn context(&self, pool: &PgPool, claimed: &ExportAttempt) -> JobContext {
        JobContext::with_checkpoints(pool.clone(), claimed.claim.id, claimed.claim.attempt)
    }

    async fn renew(
        &self,
        pool: &PgPool,
        claimed: &ExportAttempt,
        ctx: &JobContext,
    ) -> sqlx::Result<Renewal> {
        let (logs, bytes) = ctx.progress();
        let progress = storage::Progress {
            logs_exported: logs,
            bytes_written: bytes,
            slices: ctx.slices(),
        };
        let (id, attempt) = (claimed.claim.id, claimed.claim.attempt);
        let renewed = storage::heartbeat(pool, id, attempt, self.settings.lease, &progress).await?;
        Ok(match renewed {
            Some(true) => Renewal::CancelRequested,
            Some(false) => Renewal::Held,
            None => Renewal::Lost,
        })
    }

    async fn run(
        self: Arc<Self>,
        pool: PgPool,
        claimed: Arc<ExportAttempt>,
        ctx: JobContext,
    ) -> Result<ExportResult, JobError> {
        // A stored request that does not parse ends the export as invalid, naming the column,
        // without running it.
        let job = match &claimed.claim.job {
            Ok(job) => job,
            Err(unreadable) => {
                let column = unreadable.column;
                let message = anyhow::Chain::new(unreadable)
                    .map(|e| e.to_string())
                    .collect::<Vec<_>>()
                    .join(": ");
                tracing::warn!(column, error = %message, "the stored export does not parse; it is not run");
                return Err(JobError::Invalid(message));
            }
        };
        // A sealed export (a link of its chain) is finished however many attempts it takes.
        if job.spent() > job.max_attempts
            && !crate::queue::chain::is_sealed(&pool, job.id)
                .await
                .unwrap_or(false)
        {
            return Err(JobError::Permanent(
                format!(
                    "the worker running the last attempt ({}) stopped responding",
                    job.max_attempts
                )
                .into(),
            ));
        }
        self.handler.run(job, &ctx).await
    }

    async fn record(
        &self,
        pool: &PgPool,
        claimed: &ExportAttempt,
        ctx: &JobContext,
        ran: Result<Result<ExportResult, JobError>, UnitError>,
        record: &Recorder,
    ) -> &'static str {
        let result = match ran {
            Ok(result) => result,
            // A panic is a failed attempt, retried like any other.
            Err(e @ UnitError::Panicked { .. }) => Err(JobError::Retryable(e.to_string().into())),
            Err(UnitError::Cancelled { .. }) => Err(JobError::Stopped),
        };
        if let Err(e) = &result {
            e.observe();
        }
        let outcome = Outcomes {
            pool,
            settings: &self.settings,
            handler: &self.handler,
            record,
            notifier: self.notifier.get(),
        };
        let label = outcome.record(&claimed.claim, ctx, result).await;
        METRICS.job_finished(label, claimed.started.elapsed());
        METRICS.job_outcome(WorkKind::Export.label(), label);
        label
    }
}

/// Records an export attempt's outcome, fenced on it.
struct Outcomes<'a> {
    pool: &'a PgPool,
    settings: &'a WorkerSettings,
    handler: &'a Arc<dyn JobHandler>,
    record: &'a Recorder,
    notifier: Option<&'a QueueListener>,
}

impl Outcomes<'_> {
    /// Writes the outcome (fenced) and returns its metrics label.
    async fn record(
        &self,
        claim: &Claim,
        ctx: &JobContext,
        result: Result<ExportResult, JobError>,
    ) -> &'static str {
        let (id, attempt) = (claim.id, claim.attempt);
        let finish = match (result, ctx.stop_reason()) {
            // Recorded even when the lease ran out meanwhile: the write is fenced, so it only
            // lands when no other worker took the job over.
            (Ok(result), _) => Finish::Succeeded(result),
            (Err(_), Some(StopReason::LostLease)) => {
                tracing::warn!(
                    "lease lost; this attempt stopped and the job's next holder continues it"
                );
                return "lost_lease";
            }
            // Before the sealed case: an outage is given back whether or not the export was
            // sealed (a seal whose answer the outage lost is reused by the next attempt).
            (Err(JobError::Database(e)), None) => {
                tracing::warn!(error = %e, "the database was unreachable during the attempt; it is given back, not spent");
                let release = self
                    .record
                    .write(|| storage::release(self.pool, id, attempt));
                if let Err(db) = release.await {
                    tracing::error!(error = %db, "could not give the attempt back; the lease will expire and another worker will reclaim it");
                }
                return "released";
            }
            (Err(e), reason)
                if reason != Some(StopReason::Shutdown)
                    && crate::queue::chain::is_sealed(self.pool, id)
                        .await
                        .unwrap_or(false) =>
            {
                // Sealed into its chain: failing or cancelling it now would leave a gap.
                let message = format!("finishing the sealed export: {e}");
                let delay = self.settings.retry.delay(1);
                tracing::warn!(error = %message, retry_in = ?delay, "will finish later");
                if let Err(db) = storage::retry_later(self.pool, id, attempt, delay, &message).await
                {
                    tracing::error!(error = %db, "could not schedule the finish; the lease will expire and another worker will reclaim it");
                }
                return "retried";
            }
            (Err(_), Some(StopReason::Shutdown)) => {
                return match storage::release(self.pool, id, attempt).await {
                    Ok(_) => {
                        tracing::info!("released at shutdown; another worker will run it");
                        "released"
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "could not release at shutdown; the lease will expire");
                        "released"
                    }
                };
            }
            (Err(_), Some(StopReason::Cancelled)) => Finish::Cancelled,
            (Err(_), Some(StopReason::TimedOut)) => Finish::TimedOut(format!(
                "the export did not finish within the time one attempt may take ({} s, worker.max_work_seconds)",
                self.settings.max_work.as_secs()
            )),
            (Err(JobError::Permanent(e)), None) => Finish::Failed(e.to_string()),
            (Err(JobError::Invalid(e)), None) => Finish::Invalid(e),
            (Err(e @ (JobError::Retryable(_) | JobError::Stopped)), None) => {
                let message = e.to_string();
                // (A request that does not parse ended as invalid before any retry.)
                let (spent, max_attempts) = match &claim.job {
                    Ok(job) => (job.spent(), job.max_attempts),
                    Err(_) => (claim.attempt, 0),
                };
                if spent < max_attempts {
                    let delay = self.settings.retry.delay(spent.max(1) as u32);
                    tracing::warn!(error = %message, retry_in = ?delay, "attempt failed; will retry");
                    let retry = self
                        .record
                        .write(|| storage::retry_later(self.pool, id, attempt, delay, &message));
                    if let Err(db) = retry.await {
                        tracing::error!(error = %db, "could not schedule the retry; the lease will expire and another worker will reclaim it");
                    }
                    return "retried";
                }
                Finish::Failed(format!("{message} (gave up after {spent} attempts)"))
            }
        };
        self.finish(id, attempt, &finish).await
    }

    /// Records the attempt's terminal outcome (fenced) and returns its metrics label.
    async fn finish(&self, id: ExportId, attempt: i32, finish: &Finish) -> &'static str {
        let label = match finish {
            Finish::Succeeded(_) => "succeeded",
            Finish::Failed(_) => "failed",
            Finish::TimedOut(_) => "timed_out",
            Finish::Invalid(_) => "invalid",
            Finish::Cancelled => "cancelled",
        };
        // Kept until the database takes it: a result lost to an outage would be worked again.
        let recorded = self
            .record
            .write(|| storage::finish(self.pool, id, attempt, finish))
            .await;
        // Its notification is due now (none for a cancelled export).
        if matches!(recorded, Ok(true))
            && !matches!(finish, Finish::Cancelled)
            && let Some(listener) = self.notifier
        {
            listener.job_due(NOTIFICATION).notify_one();
        }
        match recorded {
            Ok(true) => match finish {
                Finish::Failed(e) | Finish::TimedOut(e) | Finish::Invalid(e) => {
                    tracing::warn!(outcome = label, error = %e, "export finished")
                }
                _ => tracing::info!(outcome = label, "export finished"),
            },
            Ok(false) => {
                tracing::warn!("the job was reclaimed elsewhere; outcome not recorded");
                // Its new holder writes an archive of its own: this one would be an orphan. (Not
                // when this very outcome was recorded by a try whose answer the outage lost.)
                if let Finish::Succeeded(result) = finish {
                    let recorded_key = storage::get(self.pool, id)
                        .await
                        .map(|row| row.and_then(|r| r.object_key));
                    if matches!(&recorded_key, Ok(key) if key.as_deref() != Some(result.object_key.as_str()))
                    {
                        self.handler.discard(result).await;
                    }
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "could not record the outcome; the lease will expire and the job will be retried")
            }
        }
        label
    }
}
