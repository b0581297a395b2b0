//! The worker loop: claim under the concurrency limit, run with heartbeat and deadline, record.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::contained::{UnitError, WorkKind, contain};
use super::job::{JobContext, JobError, JobHandler, StopReason};
use crate::config::WorkerConfig;
use crate::db;
use crate::domain::ExportId;
use crate::metrics::METRICS;
use crate::queue::{
    Claim, ClaimedJob, ExportResult, Finish, QueueListener, RetryPolicy, UnreadableColumn, storage,
};

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

impl WorkerSettings {
    /// Until when a lease renewed (or claimed) by a request sent at `sent` surely holds: the
    /// database counts the lease from when it ran the statement, which is later, and half a
    /// heartbeat is kept in hand for the job to stop.
    fn lease_deadline(&self, sent: Instant) -> Instant {
        sent + self.lease.saturating_sub(self.heartbeat / 2)
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

    /// Claims and runs jobs until `shutdown`, woken by a queue listener of its own; see
    /// [`WorkerPool::run_with`].
    pub async fn run(self, shutdown: CancellationToken) {
        let listener_stop = CancellationToken::new();
        let listener = QueueListener::spawn(self.pool.clone(), listener_stop.clone());
        self.run_with(&listener, shutdown).await;
        listener_stop.cancel();
    }

    /// Claims and runs jobs until `shutdown`, woken by `listener` (a process shares one with
    /// its job runners); then stops claiming, lets running jobs finish within the grace period,
    /// and releases the leases of those that did not.
    pub async fn run_with(self, listener: &QueueListener, shutdown: CancellationToken) {
        let slots = Arc::new(Semaphore::new(self.settings.concurrency));
        // Exports past their reading (finishing: completing the upload, sealing) give their slot
        // to the next export and hold one of these instead: as many again at most.
        let finishing = Arc::new(Semaphore::new(self.settings.concurrency));
        let tracker = TaskTracker::new();
        let hard_stop = CancellationToken::new();
        tracing::info!(worker_id = %self.settings.worker_id, concurrency = self.settings.concurrency, "worker started");

        // A few claimers in parallel: one claim is several round trips, so a single claimer
        // would cap the process at 1/latency jobs per second however many slots are free.
        let claimers = self.settings.concurrency.clamp(1, 4);
        futures::future::join_all((0..claimers).map(|_| {
            self.claim_loop(
                listener, &slots, &finishing, &tracker, &shutdown, &hard_stop,
            )
        }))
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
            // Outcomes still waiting for the database are left to the leases.
            hard_stop.cancel();
            tracker.wait().await;
        }
        tracing::info!("worker stopped");
    }
    /// Claims jobs into free slots until shutdown; several run side by side.
    async fn claim_loop(
        &self,
        listener: &QueueListener,
        slots: &Arc<Semaphore>,
        finishing: &Arc<Semaphore>,
        tracker: &TaskTracker,
        shutdown: &CancellationToken,
        hard_stop: &CancellationToken,
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
            let asked = Instant::now();
            let claim = storage::claim_next(
                &self.pool,
                &self.settings.worker_id,
                self.settings.lease,
                self.settings.per_namespace_limit,
            )
            .await;
            if claim.is_ok() {
                db::report_available();
            }
            match claim {
                Ok(Some(claim)) => {
                    let held = Arc::new(Mutex::new(vec![permit]));
                    let attempt = AttemptRunner {
                        pool: self.pool.clone(),
                        settings: self.settings.clone(),
                        handler: self.handler.clone(),
                        running: self.running.clone(),
                        lease_until: self.settings.lease_deadline(asked),
                        hard_stop: hard_stop.clone(),
                        slot: SlotHandOver {
                            held: held.clone(),
                            finishing: finishing.clone(),
                        },
                    };
                    let span = tracing::info_span!("export_job", export_id = %claim.id, attempt = claim.attempt, namespace = tracing::field::Empty);
                    if let Ok(job) = &claim.job {
                        span.record("namespace", tracing::field::display(&job.namespace));
                    }
                    tracker.spawn(
                        async move {
                            attempt.run(claim).await;
                            // Freed now, whatever clones of the hand-over outlive the attempt.
                            held.lock().unwrap_or_else(|p| p.into_inner()).clear();
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
                    if db::is_unavailable(&e) {
                        // Claiming pauses until the database is back; running jobs go on.
                        db::report_unavailable("claim", &e);
                    } else {
                        tracing::warn!(error = %e, "claiming a job failed; retrying after the poll interval");
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(self.settings.poll_interval) => {}
                    }
                }
            }
        }
    }
}

/// An attempt's slot in the process; once the export stops reading from Splunk it is given to
/// the next export for a place among the finishing ones, when one is free (see
/// [`JobContext::reading_done`]).
#[derive(Clone)]
struct SlotHandOver {
    held: Arc<Mutex<Vec<tokio::sync::OwnedSemaphorePermit>>>,
    finishing: Arc<Semaphore>,
}

impl SlotHandOver {
    fn hand_over(&self) {
        if let Ok(finishing) = self.finishing.clone().try_acquire_owned() {
            let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
            // The slot goes back to the claimers; the place among the finishing ones is kept.
            *held = vec![finishing];
        }
    }
}

/// Runs one claimed attempt and records its outcome.
struct AttemptRunner {
    pool: PgPool,
    settings: WorkerSettings,
    handler: Arc<dyn JobHandler>,
    running: Arc<Mutex<HashMap<ExportId, JobContext>>>,
    /// Until when the claim surely holds the job.
    lease_until: Instant,
    /// Set once the shutdown grace is over: outcomes no longer wait for the database.
    hard_stop: CancellationToken,
    slot: SlotHandOver,
}

impl AttemptRunner {
    async fn run(self, claim: Claim) {
        let job = match claim.job {
            Ok(job) => job,
            Err(unreadable) => return self.refuse(claim.id, claim.attempt, unreadable).await,
        };
        // An irreversible step (completing the upload) waits for a third of a lease in hand.
        let slot = self.slot.clone();
        let ctx = JobContext::with_checkpoints(self.pool.clone(), job.id, job.attempt)
            .with_lease(self.lease_until, self.settings.lease / 3)
            .on_reading_done(move || slot.hand_over());
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

        // A sealed export (a link of its chain) is finished however many attempts it takes.
        let result = if job.spent() > job.max_attempts
            && !crate::queue::chain::is_sealed(&self.pool, job.id)
                .await
                .unwrap_or(false)
        {
            Err(JobError::Permanent(
                format!(
                    "the worker running the last attempt ({}) stopped responding",
                    job.max_attempts
                )
                .into(),
            ))
        } else {
            self.run_body(&job, &ctx).await
        };
        heartbeat.abort();
        if let Err(e) = &result {
            e.observe();
        }
        let outcome = self.record(&job, &ctx, result).await;
        METRICS.job_finished(outcome, started.elapsed());
        if let Ok(mut running) = self.running.lock() {
            running.remove(&job.id);
        }
    }

    /// Ends a claimed job whose stored request does not parse as invalid, without running it:
    /// the fenced finish names the column and schedules the export's one notice.
    async fn refuse(self, id: ExportId, attempt: i32, unreadable: UnreadableColumn) {
        METRICS.job_started();
        let started = Instant::now();
        let column = unreadable.column;
        let message = format!("{:#}", anyhow::Error::new(unreadable));
        tracing::warn!(column, error = %message, "the stored export does not parse; it is not run");
        let outcome = self.finish(id, attempt, &Finish::Invalid(message)).await;
        METRICS.job_finished(outcome, started.elapsed());
    }

    async fn run_body(&self, job: &ClaimedJob, ctx: &JobContext) -> Result<ExportResult, JobError> {
        let handler = self.handler.clone();
        let (job_copy, ctx_copy) = (job.clone(), ctx.clone());
        let mut body = contain(WorkKind::Export, async move {
            handler.run(&job_copy, &ctx_copy).await
        });
        let ended = tokio::select! {
            ended = &mut body => ended,
            _ = tokio::time::sleep(self.settings.max_work) => {
                ctx.stop(StopReason::TimedOut);
                match tokio::time::timeout(Duration::from_secs(30), &mut body).await {
                    Ok(ended) => ended,
                    // Dropping the body aborts its task.
                    Err(_) => return Err(JobError::Stopped),
                }
            }
        };
        match ended {
            Ok(result) => result,
            // A panic is a failed attempt, retried like any other.
            Err(e @ UnitError::Panicked { .. }) => Err(JobError::Retryable(e.to_string().into())),
            Err(UnitError::Cancelled { .. }) => Err(JobError::Stopped),
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
                let release = self.recorded(|| storage::release(&self.pool, id, attempt));
                if let Err(db) = release.await {
                    tracing::error!(error = %db, "could not give the attempt back; the lease will expire and another worker will reclaim it");
                }
                return "released";
            }
            (Err(e), reason)
                if reason != Some(StopReason::Shutdown)
                    && crate::queue::chain::is_sealed(&self.pool, id)
                        .await
                        .unwrap_or(false) =>
            {
                // Sealed into its chain: failing or cancelling it now would leave a gap.
                let message = format!("finishing the sealed export: {e}");
                let delay = self.settings.retry.delay(1);
                tracing::warn!(error = %message, retry_in = ?delay, "will finish later");
                if let Err(db) =
                    storage::retry_later(&self.pool, id, attempt, delay, &message).await
                {
                    tracing::error!(error = %db, "could not schedule the finish; the lease will expire and another worker will reclaim it");
                }
                return "retried";
            }
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
                "the export did not finish within the time one attempt may take ({} s, worker.max_work_seconds)",
                self.settings.max_work.as_secs()
            )),
            (Err(JobError::Permanent(e)), None) => Finish::Failed(e.to_string()),
            (Err(JobError::Invalid(e)), None) => Finish::Invalid(e),
            (Err(e @ (JobError::Retryable(_) | JobError::Stopped)), None) => {
                let message = e.to_string();
                let spent = job.spent();
                if spent < job.max_attempts {
                    let delay = self.settings.retry.delay(spent.max(1) as u32);
                    tracing::warn!(error = %message, retry_in = ?delay, "attempt failed; will retry");
                    let retry = self.recorded(|| {
                        storage::retry_later(&self.pool, id, attempt, delay, &message)
                    });
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
        let recorded = self.recorded(|| storage::finish(&self.pool, id, attempt, finish));
        match recorded.await {
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
                    let recorded_key = storage::get(&self.pool, id)
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

    /// Runs a fenced write of this attempt's outcome, waiting out an outage of the database.
    async fn recorded<T, Fut>(&self, op: impl FnMut() -> Fut) -> sqlx::Result<T>
    where
        Fut: std::future::Future<Output = sqlx::Result<T>>,
    {
        db::retry_while_unavailable("record", || self.hard_stop.is_cancelled(), op).await
    }
}

/// Renews the lease and stores progress; stops the job when it was cancelled or reclaimed, or
/// when its lease runs out while the database cannot be reached (another worker may take the
/// job over once it is back, and continues from the checkpoint).
async fn heartbeat(
    pool: PgPool,
    id: ExportId,
    attempt: i32,
    settings: WorkerSettings,
    ctx: JobContext,
) {
    let mut ticker = tokio::time::interval(settings.heartbeat);
    ticker.tick().await;
    loop {
        let Some(deadline) = ctx.lease_until() else {
            return;
        };
        let deadline = tokio::time::Instant::from_std(deadline);
        tokio::select! {
            _ = ticker.tick() => {}
            _ = tokio::time::sleep_until(deadline) => return lease_ran_out(&ctx),
        }
        let (logs, bytes) = ctx.progress();
        let progress = storage::Progress {
            logs_exported: logs,
            bytes_written: bytes,
            slices: ctx.slices(),
        };
        let sent = Instant::now();
        let renewal = storage::heartbeat(&pool, id, attempt, settings.lease, &progress);
        match tokio::time::timeout_at(deadline, renewal).await {
            Ok(Ok(Some(cancel_requested))) => {
                db::report_available();
                ctx.lease_renewed(settings.lease_deadline(sent));
                if cancel_requested {
                    tracing::info!("cancel requested; stopping");
                    ctx.stop(StopReason::Cancelled);
                }
            }
            Ok(Ok(None)) => {
                ctx.stop(StopReason::LostLease);
                return;
            }
            Ok(Err(e)) if db::is_unavailable(&e) => db::report_unavailable("heartbeat", &e),
            Ok(Err(e)) => tracing::warn!(error = %e, "lease renewal failed"),
            Err(_) => return lease_ran_out(&ctx),
        }
    }
}

/// Past the lease another worker may already run this job: stop before duplicating it.
fn lease_ran_out(ctx: &JobContext) {
    tracing::warn!(
        "the lease ran out without a renewal (database unreachable); stopping this attempt, \
         which is not counted: the job continues from its checkpoint once the database is back"
    );
    ctx.stop(StopReason::LostLease);
}
