//! What the one loop needs of a kind of job. Every [`super::Job`] on the `jobs` table is a kind
//! (`table.rs`); exports, on `export_jobs` with their per-namespace fairness, checkpoints and
//! cancel requests, are the other (`worker::exports`).

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::PgPool;
use tokio::sync::Notify;

use crate::queue::QueueListener;
use crate::worker::{JobContext, UnitError, WorkKind};

/// A kind's lease and time limits.
#[derive(Debug, Clone, Copy)]
pub struct Terms {
    /// How long a claim or renewal holds the job.
    pub lease: Duration,
    /// How often the heartbeat renews it.
    pub heartbeat: Duration,
    /// How long one attempt may run before it is asked to stop (`None`: as long as it takes).
    pub max_work: Option<Duration>,
    /// How long attempts in flight may go on after shutdown before they are asked to stop
    /// (`None`: until they end).
    pub shutdown_grace: Option<Duration>,
}

impl Terms {
    /// Until when a lease claimed or renewed by a request sent at `sent` surely holds: the
    /// database counts the lease from when it ran the statement, which is later, and half a
    /// heartbeat is kept in hand for the attempt to stop.
    pub fn lease_deadline(&self, sent: std::time::Instant) -> std::time::Instant {
        sent + self.lease.saturating_sub(self.heartbeat / 2)
    }
}

/// What a heartbeat's renewal found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    /// The lease is renewed.
    Held,
    /// The lease is renewed, and the job's owner asked for it to stop.
    CancelRequested,
    /// The job is no longer this attempt's (taken over or finished elsewhere).
    Lost,
}

/// Which of the loop's database calls failed, for `logexport_database_unavailable_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Claim,
    Renew,
    Record,
}

/// A kind of job as the one loop runs it: where its attempts are claimed and renewed, what one
/// attempt does, and how its end is recorded. Every write of an attempt is fenced on it.
#[async_trait]
pub trait Kind: Send + Sync + 'static {
    /// A claimed attempt.
    type Claimed: Send + Sync + 'static;
    /// What an attempt's body returns.
    type Output: Send + 'static;

    /// The panic policy's and the logs' name for this kind.
    fn unit(&self) -> WorkKind;
    /// The kind's lease and time limits.
    fn terms(&self) -> Terms;
    /// The `component` label of a failed database call of `step`.
    fn component(&self, step: Step) -> &'static str;
    /// The wake-up the kind's enqueues send.
    fn wake_up<'l>(&self, listener: &'l QueueListener) -> &'l Notify;

    /// Returns once this process is ready to claim another attempt; at once by default.
    async fn ready(&self) {}
    /// Claims the next due attempt with a lease held by `owner`.
    async fn claim(&self, pool: &PgPool, owner: &str) -> sqlx::Result<Option<Self::Claimed>>;
    /// The span an attempt's log lines carry.
    fn span(&self, claimed: &Self::Claimed) -> tracing::Span;
    /// The context an attempt starts with (the loop adds the lease and the slot hand-over).
    fn context(&self, _pool: &PgPool, _claimed: &Self::Claimed) -> JobContext {
        JobContext::new()
    }
    /// Renews the attempt's lease, storing the progress its context reports.
    async fn renew(
        &self,
        pool: &PgPool,
        claimed: &Self::Claimed,
        ctx: &JobContext,
    ) -> sqlx::Result<Renewal>;
    /// One attempt's body, run in a task of its own. Must return promptly once `ctx.stopped()`
    /// fires with a reason the kind acts on.
    async fn run(
        self: Arc<Self>,
        pool: PgPool,
        claimed: Arc<Self::Claimed>,
        ctx: JobContext,
    ) -> Self::Output;
    /// Records how the attempt ended (`Err`: its task panicked, or was dropped when it did not
    /// stop in time), fenced on it, and returns the outcome's metrics label. `record` runs a
    /// write until the database takes it or the runner stops waiting.
    async fn record(
        &self,
        pool: &PgPool,
        claimed: &Self::Claimed,
        ctx: &JobContext,
        ran: Result<Self::Output, UnitError>,
        record: &Recorder,
    ) -> &'static str;
}

/// Runs an attempt's fenced writes through an outage of the database, until the runner stops
/// waiting (the shutdown grace is over).
#[derive(Debug, Clone)]
pub struct Recorder {
    pub(super) component: &'static str,
    pub(super) hard_stop: tokio_util::sync::CancellationToken,
}

impl Recorder {
    /// Runs `op` until it reaches the database or the runner stops waiting.
    pub async fn write<T, Fut>(&self, op: impl FnMut() -> Fut) -> sqlx::Result<T>
    where
        Fut: std::future::Future<Output = sqlx::Result<T>>,
    {
        let hard_stop = &self.hard_stop;
        crate::db::retry_while_unavailable(self.component, || hard_stop.is_cancelled(), op).await
    }
}
