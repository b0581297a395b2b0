//! Every SQL statement on `jobs`, the table of the job runner (`worker::jobs`). Writes of a
//! running attempt are fenced on (id, attempt) and the `running` state, so a runner that lost its
//! lease changes nothing.

use std::time::Duration;

use sqlx::{PgConnection, PgPool};

use super::CHANNEL_NOTIFY;
use super::lease::RESTART_GRACE;

/// The kind of the one notification of a finished export (unique key: the export's id).
pub const NOTIFICATION: &str = "notification";
/// The kind of an audit event's delivery to Splunk HEC (unique key: the event's id).
pub const AUDIT_EVENT: &str = "audit_event";
/// The kind of one scheduler tick (unique key: the tick period's start, RFC 3339).
pub const SCHEDULE_TICK: &str = "schedule_tick";
/// Every kind the runner knows, as the metrics list them.
pub const KINDS: [&str; 3] = [NOTIFICATION, AUDIT_EVENT, SCHEDULE_TICK];

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// A job's lifecycle state, as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Queued,
    Running,
    Succeeded,
    Failed,
}

impl State {
    /// Every state, as the metrics list them.
    pub const ALL: [State; 4] = [Self::Queued, Self::Running, Self::Succeeded, Self::Failed];

    /// The name stored in the `state` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
        }
    }
}

/// An attempt a runner claimed: fencing uses `(id, attempt)`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClaimedJob {
    pub id: i64,
    pub attempt: i32,
    pub max_attempts: i32,
    pub args: serde_json::Value,
    /// `None` until an attempt saved some.
    pub progress: Option<serde_json::Value>,
}

/// Inserts a job of `kind`, due now, unless one with the same `unique_key` exists, and wakes
/// idle runners when the caller's transaction commits. Returns whether a job was inserted.
pub async fn enqueue_unique(
    conn: &mut PgConnection,
    kind: &str,
    unique_key: &str,
    args: &serde_json::Value,
) -> sqlx::Result<bool> {
    enqueue_unique_at(conn, kind, unique_key, args, None).await
}

/// [`enqueue_unique`] for a job due at `run_at` (now when `None`).
pub async fn enqueue_unique_at(
    conn: &mut PgConnection,
    kind: &str,
    unique_key: &str,
    args: &serde_json::Value,
    run_at: Option<chrono::DateTime<chrono::Utc>>,
) -> sqlx::Result<bool> {
    let (inserted, _woken): (i64, i64) = sqlx::query_as(
        "WITH job AS (
             INSERT INTO jobs (kind, unique_key, args, run_at)
             VALUES ($1, $2, $3, coalesce($5, now()))
             ON CONFLICT (kind, unique_key) DO NOTHING
             RETURNING id),
         woke AS (SELECT pg_notify($4, $1) FROM job)
         SELECT (SELECT count(*) FROM job), (SELECT count(*) FROM woke)",
    )
    .bind(kind)
    .bind(unique_key)
    .bind(args)
    .bind(CHANNEL_NOTIFY)
    .bind(run_at)
    .fetch_one(conn)
    .await?;
    Ok(inserted == 1)
}

/// Claims the next due job of `kind` (queued and due, or running with a lease that lapsed outside
/// a restart of Postgres) and starts a new attempt with a lease held by `owner`.
pub async fn claim(
    pool: &PgPool,
    kind: &str,
    owner: &str,
    lease: Duration,
    max_attempts: i32,
) -> sqlx::Result<Option<ClaimedJob>> {
    sqlx::query_as(
        "UPDATE jobs
         SET state = 'running', attempt = attempt + 1, max_attempts = $4, lease_owner = $2,
             lease_expires_at = now() + make_interval(secs => $3)
         WHERE id = (
             SELECT id FROM jobs
             WHERE kind = $1
               AND ((state = 'queued' AND run_at <= now())
                    OR (state = 'running' AND lease_expires_at < now()
                        AND now() > pg_postmaster_start_time() + make_interval(secs => $5)))
             ORDER BY run_at
             LIMIT 1
             FOR UPDATE SKIP LOCKED)
         RETURNING id, attempt, max_attempts, args, progress",
    )
    .bind(kind)
    .bind(owner)
    .bind(secs(lease))
    .bind(max_attempts)
    .bind(secs(RESTART_GRACE))
    .fetch_optional(pool)
    .await
}

/// Extends the attempt's lease; false when the job is no longer this attempt's.
pub async fn renew_lease(
    pool: &PgPool,
    id: i64,
    attempt: i32,
    lease: Duration,
) -> sqlx::Result<bool> {
    let result = sqlx::query(
        "UPDATE jobs SET lease_expires_at = now() + make_interval(secs => $3)
         WHERE id = $1 AND attempt = $2 AND state = 'running'",
    )
    .bind(id)
    .bind(attempt)
    .bind(secs(lease))
    .execute(pool)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// How an attempt ended, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ended {
    Succeeded,
    /// Run again after the delay; the error is kept.
    RetryAfter(Duration, String),
    Failed(String),
}

/// Records the attempt's end and the progress it made, fenced on the attempt. Returns false when
/// fenced out. A success keeps the last failed attempt's error.
pub async fn finish(
    pool: &PgPool,
    id: i64,
    attempt: i32,
    ended: &Ended,
    progress: Option<&serde_json::Value>,
) -> sqlx::Result<bool> {
    let (state, delay, error) = match ended {
        Ended::Succeeded => (State::Succeeded, 0.0, None),
        Ended::RetryAfter(d, e) => (State::Queued, secs(*d), Some(e.as_str())),
        Ended::Failed(e) => (State::Failed, 0.0, Some(e.as_str())),
    };
    let result = sqlx::query(
        "UPDATE jobs
         SET state = $3, last_error = coalesce($5, last_error),
             run_at = CASE WHEN $3 = 'queued' THEN now() + make_interval(secs => $4) ELSE run_at END,
             lease_owner = NULL, lease_expires_at = NULL, progress = coalesce($6, progress),
             finished_at = CASE WHEN $3 = 'queued' THEN NULL ELSE now() END
         WHERE id = $1 AND attempt = $2 AND state = 'running'",
    )
    .bind(id)
    .bind(attempt)
    .bind(state.as_str())
    .bind(delay)
    .bind(error)
    .bind(progress)
    .execute(pool)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// Deletes the succeeded jobs of `kind` that finished before `before`; returns how many. Failed
/// ones stay for an operator to read.
pub async fn delete_succeeded_before(
    pool: &PgPool,
    kind: &str,
    before: chrono::DateTime<chrono::Utc>,
) -> sqlx::Result<u64> {
    let result = sqlx::query(
        "DELETE FROM jobs WHERE kind = $1 AND state = 'succeeded' AND finished_at < $2",
    )
    .bind(kind)
    .bind(before)
    .execute(pool)
    .await?;
    Ok(result.rows_affected())
}

/// Jobs per kind and state, for metrics.
pub async fn count_by_kind_and_state(pool: &PgPool) -> sqlx::Result<Vec<(String, String, i64)>> {
    sqlx::query_as("SELECT kind, state, count(*) FROM jobs GROUP BY kind, state")
        .fetch_all(pool)
        .await
}

/// Seconds the oldest due queued job of each kind has waited past its due time.
pub async fn oldest_queued_seconds(pool: &PgPool) -> sqlx::Result<Vec<(String, f64)>> {
    sqlx::query_as(
        "SELECT kind, EXTRACT(EPOCH FROM now() - min(run_at))::float8 FROM jobs
         WHERE state = 'queued' AND run_at <= now() GROUP BY kind",
    )
    .fetch_all(pool)
    .await
}
