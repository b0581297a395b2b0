//! The worker loop: claim under the concurrency limit, run with heartbeat and deadline, record.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::job::{JobContext, JobError, JobHandler, StopReason};
use crate::config::WorkerConfig;
use crate::domain::ExportId;
use crate::metrics::METRICS;
use crate::queue::{ClaimedJob, ExportResult, Finish, QueueListener, RetryPolicy, storage};

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
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "worker".into())
}

/// A pool of job slots in one process.
pub struct WorkerPool {
    pool: PgPool,
    settings: WorkerSettings,
    handler: Arc<dyn JobHandler>,
    running: Arc<Mutex<HashMap<ExportId, JobContext>>>,
}

impl WorkerPool {
    /// A pool running `handler` for each claimed job.
    pub fn new(pool: PgPool, settings: WorkerSettings, handler: Arc<dyn JobHandler>) -> Self {
        Self {
            pool,
            settings,
            handler,
            running: Arc::default(),
        }
    }

    /// Claims and runs jobs until `shutdown`; then stops claiming, lets running jobs finish
    /// within the grace period, and releases the leases of those that did not.
    pub async fn run(self, shutdown: CancellationToken) {
        let listener_stop = CancellationToken::new();
        let listener = QueueListener::spawn(self.pool.clone(), listener_stop.clone());
        let slots = Arc::new(Semaphore::new(self.settings.concurrency));
        let tracker = TaskTracker::new();
        tracing::info!(worker_id = %self.settings.worker_id, concurrency = self.settings.concurrency, "worker started");

        // A few claimers in parallel: one claim is several round trips, so a single claimer
        // would cap the process at 1/latency jobs per second however many slots are free.
        let claimers = self.settings.concurrency.clamp(1, 4);
        futures::future::join_all(
            (0..claimers).map(|_| self.claim_loop(&listener, &slots, &tracker, &shutdown)),
        )
        .await;

        tracker.close();
        let in_flight = self.running.lock().map(|r| r.len()).unwrap_or(0);
        tracing::info!(in_flight, grace = ?self.settings.shutdown_grace, "worker draining");
        if tokio::time::timeout(self.settings.shutdown_grace, tracker.wait())
            .await
            .is_err()
        {
            let contexts: Vec<JobContext> = self
                .running
                .lock()
                .map(|r| r.values().cloned().collect())
                .unwrap_or_default();
            for ctx in contexts {
                ctx.stop(StopReason::Shutdown);
            }
            tracker.wait().await;
        }
        listener_stop.cancel();
        tracing::info!("worker stopped");
    }
    /// Claims jobs into free slots until shutdown; several run side by side.
    async fn claim_loop(
        &self,
        listener: &QueueListener,
        slots: &Arc<Semaphore>,
        tracker: &TaskTracker,
        shutdown: &CancellationToken,
    ) {
        loop {
            let permit = tokio::select! {
                _ = shutdown.cancelled() => break,
                permit = slots.clone().acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            // Register for the wake-up before claiming so a NOTIFY in between is not lost.
            let woken = listener.new_job.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let claim = storage::claim_next(
                &self.pool,
                &self.settings.worker_id,
                self.settings.lease,
                self.settings.per_namespace_limit,
            )
            .await;
            match claim {
                Ok(Some(job)) => {
                    let attempt = AttemptRunner {
                        pool: self.pool.clone(),
                        settings: self.settings.clone(),
                        handler: self.handler.clone(),
                        running: self.running.clone(),
                    };
                    let span = tracing::info_span!("export_job", export_id = %job.id, attempt = job.attempt, namespace = %job.namespace);
                    tracker.spawn(
                        async move {
                            attempt.run(job).await;
                            drop(permit);
                        }
                        .instrument(span),
                    );
                }
                Ok(None) => {
                    drop(permit);
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = &mut woken => {}
                        _ = tokio::time::sleep(self.settings.poll_interval) => {}
                    }
                }
                Err(e) => {
                    drop(permit);
                    tracing::warn!(error = %e, "claiming a job failed; retrying after the poll interval");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(self.settings.poll_interval) => {}
                    }
                }
            }
        }
    }
}

/// Runs one claimed attempt and records its outcome.
struct AttemptRunner {
    pool: PgPool,
    settings: WorkerSettings,
    handler: Arc<dyn JobHandler>,
    running: Arc<Mutex<HashMap<ExportId, JobContext>>>,
}

impl AttemptRunner {
    async fn run(self, job: ClaimedJob) {
        let ctx = JobContext::with_checkpoints(self.pool.clone(), job.id, job.attempt);
        if let Ok(mut running) = self.running.lock() {
            running.insert(job.id, ctx.clone());
        }
        METRICS.job_started();
        let started = Instant::now();
        let heartbeat = tokio::spawn(heartbeat(
            self.pool.clone(),
            job.id,
            job.attempt,
            self.settings.clone(),
            ctx.clone(),
        ));

        let result = if job.attempt > job.max_attempts {
            Err(JobError::Permanent(format!(
                "the worker running the last attempt ({}) stopped responding",
                job.max_attempts
            )))
        } else {
            self.run_body(&job, &ctx).await
        };
        heartbeat.abort();
        let outcome = self.record(&job, &ctx, result).await;
        METRICS.job_finished(outcome, started.elapsed());
        if let Ok(mut running) = self.running.lock() {
            running.remove(&job.id);
        }
    }

    async fn run_body(&self, job: &ClaimedJob, ctx: &JobContext) -> Result<ExportResult, JobError> {
        let handler = self.handler.clone();
        let (job_copy, ctx_copy) = (job.clone(), ctx.clone());
        // Its own task, so a panic is caught and counted as a failed attempt.
        let mut body =
            tokio::spawn(async move { handler.run(&job_copy, &ctx_copy).await }.in_current_span());
        let joined = tokio::select! {
            joined = &mut body => joined,
            _ = tokio::time::sleep(self.settings.max_work) => {
                ctx.stop(StopReason::TimedOut);
                match tokio::time::timeout(Duration::from_secs(30), &mut body).await {
                    Ok(joined) => joined,
                    Err(_) => {
                        body.abort();
                        return Err(JobError::Stopped);
                    }
                }
            }
        };
        match joined {
            Ok(result) => result,
            Err(e) if e.is_panic() => Err(JobError::Retryable("the export job panicked".into())),
            Err(_) => Err(JobError::Stopped),
        }
    }

    /// Writes the outcome (fenced) and returns its metrics label.
    async fn record(
        &self,
        job: &ClaimedJob,
        ctx: &JobContext,
        result: Result<ExportResult, JobError>,
    ) -> &'static str {
        let (id, attempt) = (job.id, job.attempt);
        let finish = match (result, ctx.stop_reason()) {
            (_, Some(StopReason::LostLease)) => {
                tracing::warn!("lease lost to another worker; this attempt's result is discarded");
                return "lost_lease";
            }
            (Ok(result), _) => Finish::Succeeded(result),
            (Err(_), Some(StopReason::Shutdown)) => {
                return match storage::release(&self.pool, id, attempt).await {
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
                "the export did not finish within worker.max_work_seconds ({} s)",
                self.settings.max_work.as_secs()
            )),
            (Err(JobError::Permanent(e)), None) => Finish::Failed(e),
            (Err(JobError::Invalid(e)), None) => Finish::Invalid(e),
            (Err(e @ (JobError::Retryable(_) | JobError::Stopped)), None) => {
                let message = e.to_string();
                if attempt < job.max_attempts {
                    let delay = self.settings.retry.delay(attempt as u32);
                    tracing::warn!(error = %message, retry_in = ?delay, "attempt failed; will retry");
                    if let Err(db) =
                        storage::retry_later(&self.pool, id, attempt, delay, &message).await
                    {
                        tracing::error!(error = %db, "could not schedule the retry; the lease will expire and another worker will reclaim it");
                    }
                    return "retried";
                }
                Finish::Failed(format!("{message} (gave up after {attempt} attempts)"))
            }
        };
        let label = match &finish {
            Finish::Succeeded(_) => "succeeded",
            Finish::Failed(_) => "failed",
            Finish::TimedOut(_) => "timed_out",
            Finish::Invalid(_) => "invalid",
            Finish::Cancelled => "cancelled",
        };
        match storage::finish(&self.pool, id, attempt, &finish).await {
            Ok(true) => tracing::info!(outcome = label, "export finished"),
            Ok(false) => tracing::warn!("the job was reclaimed elsewhere; outcome not recorded"),
            Err(e) => {
                tracing::error!(error = %e, "could not record the outcome; the lease will expire and the job will be retried")
            }
        }
        label
    }
}

/// Renews the lease and stores progress; stops the job when it was cancelled or reclaimed.
async fn heartbeat(
    pool: PgPool,
    id: ExportId,
    attempt: i32,
    settings: WorkerSettings,
    ctx: JobContext,
) {
    let mut last_renewed = Instant::now();
    let mut ticker = tokio::time::interval(settings.heartbeat);
    ticker.tick().await;
    loop {
        ticker.tick().await;
        let (logs, bytes) = ctx.progress();
        let progress = storage::Progress {
            logs_exported: logs,
            bytes_written: bytes,
            slices: ctx.slices(),
        };
        match storage::heartbeat(&pool, id, attempt, settings.lease, &progress).await {
            Ok(Some(cancel_requested)) => {
                last_renewed = Instant::now();
                if cancel_requested {
                    tracing::info!("cancel requested; stopping");
                    ctx.stop(StopReason::Cancelled);
                }
            }
            Ok(None) => {
                ctx.stop(StopReason::LostLease);
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "lease renewal failed");
                // Past the lease another worker may already run this job: stop before duplicating it.
                if last_renewed.elapsed() >= settings.lease {
                    ctx.stop(StopReason::LostLease);
                    return;
                }
            }
        }
    }
}
