//! What a job body is, and what it is given while it runs.

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use sqlx::PgPool;

use crate::domain::ExportId;
use crate::queue::{ClaimedJob, ExportResult, storage};

/// How a job attempt failed. Its [`Cause`] names the party that failed, which the export's
/// status, the log line and `logexport_export_attempt_failures_total` carry.
#[derive(Debug, Clone, thiserror::Error)]
pub enum JobError {
    /// Worth another attempt (Splunk 5xx/quota/connection, storage 5xx, a cut stream).
    #[error(transparent)]
    Retryable(Cause),
    /// Will fail the same way again (Splunk rejected the token, a bad search).
    #[error(transparent)]
    Permanent(Cause),
    /// The request itself cannot be served (the party is the request).
    #[error("{0}")]
    Invalid(String),
    /// The job stopped because its token was cancelled; the runner knows why.
    #[error("stopped")]
    Stopped,
    /// The service's own database could not be reached: not the job's fault, so the attempt is
    /// given back rather than spent.
    #[error(transparent)]
    Database(Cause),
}

impl JobError {
    /// A step on the service's own database failed: given back when the database could not be
    /// reached (not the job's fault), otherwise worth another attempt.
    pub fn database(step: &str, e: sqlx::Error) -> Self {
        if crate::db::is_unavailable(&e) {
            let context = format!("the database could not be reached while {step}");
            Self::Database(Cause::with_context(Party::Database, &context, e))
        } else {
            Self::Retryable(Cause::with_context(Party::Database, step, e))
        }
    }

    /// The party that failed (`None` for a job that was stopped).
    pub fn party(&self) -> Option<Party> {
        match self {
            Self::Retryable(c) | Self::Permanent(c) | Self::Database(c) => Some(c.party),
            Self::Invalid(_) => Some(Party::Request),
            Self::Stopped => None,
        }
    }

    /// Counts the failed attempt by the party that failed and logs which party it was.
    pub fn observe(&self) {
        if let Some(party) = self.party() {
            crate::metrics::METRICS.incr("logexport_export_attempt_failures_total", party.label());
            tracing::info!(party = party.label(), error = %self, "the attempt failed in {party}");
        }
    }
}

/// Who failed an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Party {
    /// Splunk, where the logs are read.
    Splunk,
    /// The archive store (S3 or the local directory).
    Storage,
    /// The export spool on local disk (`export.spool_dir`).
    Spool,
    /// Encoding the archive.
    Encoding,
    /// E-mail or callback delivery.
    Notification,
    /// The service's own database (Postgres).
    Database,
    /// The export request itself.
    Request,
    /// The worker's own code: a panic, a worker that stopped responding, an unexpected value.
    Worker,
}

impl Party {
    /// Every party, in the order of [`crate::metrics::ATTEMPT_FAILURE_PARTIES`].
    pub const ALL: [Party; 8] = [
        Self::Splunk,
        Self::Storage,
        Self::Spool,
        Self::Encoding,
        Self::Notification,
        Self::Database,
        Self::Request,
        Self::Worker,
    ];

    /// Its metric label and log field.
    pub fn label(self) -> &'static str {
        match self {
            Self::Splunk => "splunk",
            Self::Storage => "storage",
            Self::Spool => "spool",
            Self::Encoding => "encoding",
            Self::Notification => "notification",
            Self::Database => "database",
            Self::Request => "request",
            Self::Worker => "worker",
        }
    }
}

impl std::fmt::Display for Party {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// Why an attempt failed: the party, its words (the export's status text), and the typed error
/// it came from when there is one.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct Cause {
    /// Who failed.
    pub party: Party,
    message: String,
    #[source]
    source: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

impl Cause {
    /// A cause with only a message.
    pub fn new(party: Party, message: impl Into<String>) -> Self {
        Self {
            party,
            message: message.into(),
            source: None,
        }
    }

    /// A cause that keeps `error`, in its own words.
    pub fn of(party: Party, error: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self {
            party,
            message: error.to_string(),
            source: Some(Arc::new(error)),
        }
    }

    /// A cause that keeps `error`, its words after `context`.
    pub fn with_context(
        party: Party,
        context: &str,
        error: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self {
            party,
            message: format!("{context}: {error}"),
            source: Some(Arc::new(error)),
        }
    }
}

/// A bare message names no outside party: the worker's own code failed.
impl From<String> for Cause {
    fn from(message: String) -> Self {
        Self::new(Party::Worker, message)
    }
}

impl From<&str> for Cause {
    fn from(message: &str) -> Self {
        Self::new(Party::Worker, message)
    }
}

/// Why the runner asked a job to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    Cancelled,
    TimedOut,
    Shutdown,
    LostLease,
}

/// Given to a running job: its stop signal and its progress counters.
#[derive(Debug, Clone, Default)]
pub struct JobContext {
    token: CancellationToken,
    reason: Arc<Mutex<Option<StopReason>>>,
    logs: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
    slices: Arc<[AtomicU64; 3]>,
    checkpoints: Option<CheckpointStore>,
    lease: Option<Arc<LeaseClock>>,
    /// Run once when the job no longer reads from Splunk (see [`JobContext::reading_done`]).
    reading_done: Arc<ReadingDone>,
}

/// What the runner does when a job stops reading from Splunk.
#[derive(Default)]
struct ReadingDone(Mutex<Option<Box<dyn FnOnce() + Send>>>);

impl std::fmt::Debug for ReadingDone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReadingDone")
    }
}

/// What the worker knows of its lease: until when no other worker can hold the job.
#[derive(Debug)]
struct LeaseClock {
    until: Mutex<Instant>,
    /// What is left of the lease before an irreversible step (completing the upload).
    enough: Duration,
}

/// Where a job's checkpoints go: its row, fenced by the attempt.
#[derive(Debug, Clone)]
struct CheckpointStore {
    pool: PgPool,
    id: ExportId,
    attempt: i32,
}

impl JobContext {
    /// A fresh context.
    pub fn new() -> Self {
        Self::default()
    }

    /// A context whose checkpoints are recorded on the job's row for this attempt.
    pub fn with_checkpoints(pool: PgPool, id: ExportId, attempt: i32) -> Self {
        Self {
            checkpoints: Some(CheckpointStore { pool, id, attempt }),
            ..Self::default()
        }
    }

    /// The same context, tracking a lease valid until `until`; [`JobContext::hold_lease`] then
    /// waits for `enough` of it to be left.
    pub fn with_lease(mut self, until: Instant, enough: Duration) -> Self {
        self.lease = Some(Arc::new(LeaseClock {
            until: Mutex::new(until),
            enough,
        }));
        self
    }

    /// The same context, running `done` once the job says it no longer reads from Splunk.
    pub fn on_reading_done(self, done: impl FnOnce() + Send + 'static) -> Self {
        *self
            .reading_done
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(Box::new(done));
        self
    }

    /// Says the job has read everything it needs from Splunk and only finishes now (completing
    /// the upload, sealing, the manifest): the worker may start another export meanwhile, whose
    /// reading overlaps this one's finish.
    pub fn reading_done(&self) {
        let done = self
            .reading_done
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(done) = done {
            done();
        }
    }

    /// Records a renewal: no other worker can hold the job before `until`.
    pub fn lease_renewed(&self, until: Instant) {
        if let Some(lease) = &self.lease {
            *lease.until.lock().unwrap_or_else(|p| p.into_inner()) = until;
        }
    }

    /// Until when this worker surely holds the job (`None`: no lease is tracked).
    pub fn lease_until(&self) -> Option<Instant> {
        let lease = self.lease.as_ref()?;
        Some(*lease.until.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Waits until the lease has enough time left for an irreversible step, so that no other
    /// worker can take the job over meanwhile; while the database is away and no renewal comes,
    /// this waits until the job is stopped (the lease runs out) and returns `Stopped`.
    pub async fn hold_lease(&self) -> Result<(), JobError> {
        let Some(lease) = &self.lease else {
            return Ok(());
        };
        loop {
            if self.is_stopped() {
                return Err(JobError::Stopped);
            }
            let until = *lease.until.lock().unwrap_or_else(|p| p.into_inner());
            if until.saturating_duration_since(Instant::now()) >= lease.enough {
                return Ok(());
            }
            tokio::select! {
                _ = self.stopped() => {}
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    }

    /// Records how far the job got, for the next attempt; `Ok(false)` when there is nowhere to
    /// record it or the job is no longer this attempt's.
    pub async fn save_checkpoint(&self, checkpoint: &serde_json::Value) -> sqlx::Result<bool> {
        match &self.checkpoints {
            Some(c) => storage::save_checkpoint(&c.pool, c.id, c.attempt, checkpoint).await,
            None => Ok(false),
        }
    }

    /// The database, job and attempt this context's writes are fenced on (`None` outside a
    /// worker, e.g. in benchmarks).
    pub fn fenced(&self) -> Option<(&PgPool, ExportId, i32)> {
        self.checkpoints
            .as_ref()
            .map(|c| (&c.pool, c.id, c.attempt))
    }

    /// Resolves when the job must stop; select on it around every await that can block.
    pub async fn stopped(&self) {
        self.token.cancelled().await
    }

    /// True once the job was asked to stop.
    pub fn is_stopped(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Asks the job to stop; the first reason wins.
    pub fn stop(&self, reason: StopReason) {
        let mut current = self.reason.lock().unwrap_or_else(|p| p.into_inner());
        current.get_or_insert(reason);
        self.token.cancel();
    }

    /// Why the job was asked to stop, if it was.
    pub fn stop_reason(&self) -> Option<StopReason> {
        *self.reason.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records progress; the heartbeat writes it to the job row.
    pub fn report_progress(&self, logs_exported: u64, bytes_written: u64) {
        self.logs.store(logs_exported, Ordering::Relaxed);
        self.bytes.store(bytes_written, Ordering::Relaxed);
    }

    /// Records the time slices' progress: how many, how many read, searches reading now.
    pub fn report_slices(&self, total: u64, done: u64, running: u64) {
        for (slot, value) in self.slices.iter().zip([total, done, running]) {
            slot.store(value, Ordering::Relaxed);
        }
    }

    /// The last reported slice progress: total, done, searches running.
    pub fn slices(&self) -> [u64; 3] {
        [0, 1, 2].map(|i| self.slices[i].load(Ordering::Relaxed))
    }

    /// The last reported progress.
    pub fn progress(&self) -> (u64, u64) {
        (
            self.logs.load(Ordering::Relaxed),
            self.bytes.load(Ordering::Relaxed),
        )
    }
}

/// The body of a job. Two implementations: the export pipeline, and a no-op for queue
/// tests and benchmarks.
#[async_trait]
pub trait JobHandler: Send + Sync + 'static {
    /// Runs one attempt. Must return promptly (cleaning up) once `ctx.stopped()` fires.
    async fn run(&self, job: &ClaimedJob, ctx: &JobContext) -> Result<ExportResult, JobError>;

    /// Removes what a successful attempt produced when its outcome could not be recorded
    /// because another worker holds the job now (which produces its own).
    async fn discard(&self, _result: &ExportResult) {}

    /// Returns once another attempt is worth starting in this process (see
    /// `ExportJob::ready_for_more`); at once by default.
    async fn ready_for_more(&self) {}

    /// Prepares, before the first claim, what every attempt will use (see
    /// `ExportJob::start_up`); nothing by default.
    async fn start_up(&self) {}
}

/// A job body that does nothing but succeed; measures the queue itself.
#[derive(Debug, Clone, Default)]
pub struct NoopHandler;

#[async_trait]
impl JobHandler for NoopHandler {
    async fn run(&self, job: &ClaimedJob, _ctx: &JobContext) -> Result<ExportResult, JobError> {
        Ok(ExportResult {
            object_key: format!("noop/{}", job.id),
            ..ExportResult::default()
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::{Cause, JobContext, JobError, Party};

    #[test]
    fn an_error_keeps_its_party_its_words_and_its_cause() {
        let io = std::io::Error::other("disk full");
        let e = JobError::Retryable(Cause::with_context(
            Party::Encoding,
            "encoding the archive failed",
            io,
        ));
        assert_eq!(e.to_string(), "encoding the archive failed: disk full");
        assert_eq!(e.party(), Some(Party::Encoding));
        let cause = std::error::Error::source(&e).expect("the I/O error is kept");
        assert_eq!(cause.to_string(), "disk full");
        // A bare message is the worker's own; an invalid request is the request's.
        assert_eq!(
            JobError::Retryable("the export job panicked".into()).party(),
            Some(Party::Worker)
        );
        assert_eq!(
            JobError::Invalid("no such format".into()).party(),
            Some(Party::Request)
        );
        assert_eq!(JobError::Stopped.party(), None);
        let labels: Vec<&str> = Party::ALL.iter().map(|p| p.label()).collect();
        assert_eq!(labels, crate::metrics::ATTEMPT_FAILURE_PARTIES);
    }

    #[test]
    fn a_database_failure_keeps_the_sqlx_error_and_says_whether_it_was_reachable() {
        let away = JobError::database("sealing the export", sqlx::Error::PoolTimedOut);
        assert!(matches!(away, JobError::Database(_)), "{away:?}");
        assert!(
            away.to_string()
                .starts_with("the database could not be reached while sealing the export: "),
            "{away}"
        );
        let failed = JobError::database("sealing the export", sqlx::Error::RowNotFound);
        assert!(matches!(failed, JobError::Retryable(_)), "{failed:?}");
        for (e, sqlx_error) in [
            (away, sqlx::Error::PoolTimedOut),
            (failed, sqlx::Error::RowNotFound),
        ] {
            assert_eq!(e.party(), Some(Party::Database));
            let cause = std::error::Error::source(&e).expect("the sqlx error is kept");
            assert_eq!(cause.to_string(), sqlx_error.to_string());
        }
    }

    #[test]
    fn reading_done_hands_the_slot_over_once_whichever_clone_says_it() {
        let calls = Arc::new(AtomicU32::new(0));
        let ctx = JobContext::new().on_reading_done({
            let calls = calls.clone();
            move || {
                calls.fetch_add(1, Ordering::Relaxed);
            }
        });
        let clone = ctx.clone();
        ctx.reading_done();
        clone.reading_done();
        ctx.reading_done();
        assert_eq!(calls.load(Ordering::Relaxed), 1);
        // A context without a hand-over (benchmarks, tests) ignores it.
        JobContext::new().reading_done();
    }
}
