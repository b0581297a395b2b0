//! Every SQL statement on `export_jobs`. Worker writes are fenced on (id, attempt) and the
//! `running` state, so a worker that lost its lease changes nothing.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Postgres, Transaction};
use uuid::Uuid;

use super::jobs::{self, NOTIFICATION};
use super::{CHANNEL_NEW_JOB, Claim, ExportRow, Finish, JobState, NewExport};
use crate::domain::{ExportId, Performer, RepositoryName};

/// An export with its notification, read from the notification's job: a finished export
/// without one sent none (cancelled: 'skipped'), and one still running has none yet.
const SELECT_ROW: &str = "SELECT * FROM (
     SELECT e.*,
            CASE WHEN n.id IS NULL THEN
                     CASE WHEN e.state = 'cancelled' THEN 'skipped' ELSE 'none' END
                 WHEN n.state = 'succeeded' THEN 'delivered'
                 WHEN n.state = 'failed' THEN 'failed'
                 ELSE 'pending' END AS notification_state,
            coalesce(n.attempt, 0) AS notify_attempts,
            CASE WHEN n.state IN ('queued', 'running') THEN n.run_at END AS notify_run_at,
            n.last_error AS notify_last_error,
            CASE WHEN n.state = 'succeeded' THEN n.finished_at END AS notified_at
     FROM export_jobs e
     LEFT JOIN jobs n ON n.kind = 'notification' AND n.unique_key = e.id::text) AS export_jobs";

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

pub use super::lease::RESTART_GRACE;

/// Inserts a new export and wakes a worker. With an idempotency key seen from the same caller
/// within 24 hours, returns the earlier export's id instead and inserts nothing.
pub async fn enqueue(pool: &PgPool, export: &NewExport) -> sqlx::Result<ExportId> {
    let mut tx = pool.begin().await?;
    let (id, _) = enqueue_in(&mut tx, export).await?;
    tx.commit().await?;
    Ok(id)
}

/// [`enqueue`] inside the caller's transaction, so what else the caller records commits or
/// rolls back with the job. Also says whether the job is new (false: an idempotent replay).
pub async fn enqueue_in(
    tx: &mut Transaction<'_, Postgres>,
    export: &NewExport,
) -> sqlx::Result<(ExportId, bool)> {
    if let Some(key) = &export.idempotency_key {
        // Serialize concurrent requests carrying the same key from the same caller.
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext($1), hashtext($2))")
            .bind(&export.requested_by)
            .bind(key)
            .execute(&mut **tx)
            .await?;
        let earlier: Option<(Uuid, DateTime<Utc>)> = sqlx::query_as(
            "SELECT id, created_at FROM export_jobs WHERE requested_by = $1 AND idempotency_key = $2",
        )
        .bind(&export.requested_by)
        .bind(key)
        .fetch_optional(&mut **tx)
        .await?;
        if let Some((id, created_at)) = earlier {
            if Utc::now() - created_at < chrono::Duration::hours(24) {
                return Ok((ExportId(id), false));
            }
            sqlx::query("UPDATE export_jobs SET idempotency_key = NULL WHERE id = $1")
                .bind(id)
                .execute(&mut **tx)
                .await?;
        }
    }
    let id = ExportId::new();
    insert(tx, id, export, None).await?;
    Ok((id, true))
}

/// Inserts the job as `id` and wakes idle workers in one statement, on the caller's connection
/// or inside its transaction (the wake-up is then sent when it commits). `schedule_id` links a
/// scheduled export to its schedule. No idempotency-key handling: see [`enqueue_in`].
pub async fn insert(
    conn: &mut sqlx::PgConnection,
    id: ExportId,
    export: &NewExport,
    schedule_id: Option<Uuid>,
) -> sqlx::Result<()> {
    sqlx::query(
        "WITH job AS (
             INSERT INTO export_jobs (id, scope, namespace, repository, requested_by, start_time,
                 end_time, timezone, format, compression, callback_url, callback_email,
                 idempotency_key, max_attempts, webhook_id, performer, kinds, schedule_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,
                 $19)
             RETURNING id)
         SELECT pg_notify($18, '') FROM job",
    )
    .bind(id.0)
    .bind(export.scope.as_str())
    .bind(export.namespace.as_str())
    .bind(export.repository.as_ref().map(RepositoryName::as_str))
    .bind(&export.requested_by)
    .bind(export.range.start)
    .bind(export.range.end)
    .bind(export.range.timezone.name())
    .bind(export.format.as_str())
    .bind(export.compression.as_str())
    .bind(export.callback_url.as_ref().map(ToString::to_string))
    .bind(export.callback_email.as_ref().map(ToString::to_string))
    .bind(&export.idempotency_key)
    .bind(export.max_attempts as i32)
    .bind(format!("msg_{}", Uuid::new_v4().simple()))
    .bind(export.performer.as_ref().map(Performer::as_str))
    .bind(&export.kinds)
    .bind(CHANNEL_NEW_JOB)
    .bind(schedule_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Ends a job just enqueued in the caller's transaction as `invalid` with `reason`, before any
/// worker saw it, and enqueues its one notice: how a request refused after it was accepted
/// (a schedule whose owner lost access) still tells its recipients why.
pub async fn refuse_in(
    conn: &mut sqlx::PgConnection,
    id: ExportId,
    reason: &str,
) -> sqlx::Result<()> {
    let refused = sqlx::query(
        "UPDATE export_jobs
         SET state = 'invalid', last_error = $2, finished_at = now(), updated_at = now(),
             notify_state = 'pending'
         WHERE id = $1 AND state = 'queued'",
    )
    .bind(id.0)
    .bind(reason)
    .execute(&mut *conn)
    .await?;
    if refused.rows_affected() == 1 {
        enqueue_notification(conn, id).await?;
    }
    Ok(())
}

/// The one notification of a finished export: a job of kind [`NOTIFICATION`] whose unique key
/// is the export's id, so a second one cannot exist.
async fn enqueue_notification(conn: &mut sqlx::PgConnection, id: ExportId) -> sqlx::Result<()> {
    jobs::enqueue_unique(
        conn,
        NOTIFICATION,
        &id.0.to_string(),
        &serde_json::json!({ "export_id": id.0 }),
    )
    .await?;
    Ok(())
}

async fn notify(tx: &mut Transaction<'_, Postgres>, channel: &str) -> sqlx::Result<()> {
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(channel)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Claims the next runnable job (due and queued, or running with an expired lease) in a short
/// transaction, respecting the per-namespace limit, and starts a new attempt with a fresh lease.
/// A claimed row whose request no longer parses is returned as such, for the runner to end.
pub async fn claim_next(
    pool: &PgPool,
    worker_id: &str,
    lease: Duration,
    per_namespace_limit: u32,
) -> sqlx::Result<Option<Claim>> {
    let mut skipped: Vec<String> = Vec::new();
    for _ in 0..16 {
        let mut tx = pool.begin().await?;
        // One statement finds the candidate and takes its namespace's lock: the longest-expired
        // lease first (its job has waited longest), else the longest-due queued job, each by an
        // index-ordered probe that reads a handful of rows whatever the queue length (one OR
        // would not), and each passing over namespaces already at their limit (by the running
        // index), so a queue whose oldest jobs wait for a busy namespace costs one probe, not
        // one round of statements per busy namespace. The count under the lock below decides.
        // Claiming is then four round trips (begin, this, the update, commit), and finding
        // nothing three: at month-end, every process's claimer wakes when a namespace's next
        // export may run, and all but one find nothing.
        let candidate: Option<(Uuid, String)> = sqlx::query_as(
            "WITH expired AS (
                 SELECT id, namespace FROM export_jobs q
                 WHERE state = 'running' AND lease_expires_at < now() AND NOT (namespace = ANY($1))
                   AND now() > pg_postmaster_start_time() + make_interval(secs => $2)
                   AND (SELECT count(*) FROM export_jobs r
                        WHERE r.namespace = q.namespace AND r.state = 'running'
                          AND r.lease_expires_at >= now()) < $3
                 ORDER BY lease_expires_at
                 LIMIT 1
                 FOR UPDATE SKIP LOCKED),
             due AS (
                 SELECT id, namespace FROM export_jobs q
                 WHERE state = 'queued' AND run_at <= now() AND NOT (namespace = ANY($1))
                   AND NOT EXISTS (SELECT 1 FROM expired)
                   AND (SELECT count(*) FROM export_jobs r
                        WHERE r.namespace = q.namespace AND r.state = 'running'
                          AND (r.lease_expires_at >= now()
                               OR now() <= pg_postmaster_start_time() + make_interval(secs => $2))
                       ) < $3
                 ORDER BY run_at
                 LIMIT 1
                 FOR UPDATE SKIP LOCKED),
             candidate AS (
                 SELECT id, namespace FROM expired
                 UNION ALL
                 SELECT id, namespace FROM due),
             -- Two claimers could each see the namespace below its limit; its lock makes the
             -- recount below see the other's committed claim.
             locked AS (
                 SELECT id, namespace,
                        pg_advisory_xact_lock(hashtext('logexport.ns'), hashtext(namespace))
                 FROM candidate)
             SELECT id, namespace FROM locked",
        )
        .bind(&skipped)
        .bind(secs(RESTART_GRACE))
        .bind(i64::from(per_namespace_limit))
        .fetch_optional(&mut *tx)
        .await?;
        let Some((id, namespace)) = candidate else {
            tx.commit().await?;
            return Ok(None);
        };
        // Under the lock this statement's snapshot includes every committed claim in the
        // namespace, so counting and claiming in one statement is race-free. Taking over a lease
        // held across a restart of Postgres forgives the attempt it interrupts: the database's
        // outage, not the job, ended it. (A job still held in the restart grace counts as running.)
        let row: Option<ExportRow> = sqlx::query_as(
            "UPDATE export_jobs
             SET state = 'running', attempt = attempt + 1, worker_id = $2,
                 attempts_forgiven = attempts_forgiven + CASE
                     WHEN state = 'running'
                      AND lease_expires_at - make_interval(secs => $3) < pg_postmaster_start_time()
                     THEN 1 ELSE 0 END,
                 lease_expires_at = now() + make_interval(secs => $3),
                 started_at = coalesce(started_at, now()), updated_at = now()
             WHERE id = $1
               AND (SELECT count(*) FROM export_jobs r
                    WHERE r.namespace = $4 AND r.state = 'running'
                      AND (r.lease_expires_at >= now()
                           OR now() <= pg_postmaster_start_time() + make_interval(secs => $6))
                      AND r.id <> $1) < $5
             RETURNING *",
        )
        .bind(id)
        .bind(worker_id)
        .bind(secs(lease))
        .bind(&namespace)
        .bind(i64::from(per_namespace_limit))
        .bind(secs(RESTART_GRACE))
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            tx.rollback().await?;
            skipped.push(namespace);
            continue;
        };
        tx.commit().await?;
        return Ok(Some(Claim::from(&row)));
    }
    Ok(None)
}

/// A running attempt's progress, as the heartbeat records it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Progress {
    pub logs_exported: u64,
    pub bytes_written: u64,
    /// Time slices: total, read, searches reading now.
    pub slices: [u64; 3],
}

/// Extends the lease and records progress. `None` means the job is no longer this attempt's
/// (reclaimed or finished elsewhere); `Some(true)` means a cancel was requested.
pub async fn heartbeat(
    pool: &PgPool,
    id: ExportId,
    attempt: i32,
    lease: Duration,
    progress: &Progress,
) -> sqlx::Result<Option<bool>> {
    let [total, done, running] = progress.slices.map(|n| n.min(i32::MAX as u64) as i32);
    sqlx::query_scalar(
        "UPDATE export_jobs
         SET lease_expires_at = now() + make_interval(secs => $3),
             logs_exported = $4, bytes_written = $5, slices_total = $6, slices_done = $7,
             searches_running = $8, updated_at = now()
         WHERE id = $1 AND attempt = $2 AND state = 'running'
         RETURNING cancel_requested",
    )
    .bind(id.0)
    .bind(attempt)
    .bind(secs(lease))
    .bind(progress.logs_exported as i64)
    .bind(progress.bytes_written as i64)
    .bind(total)
    .bind(done)
    .bind(running)
    .fetch_optional(pool)
    .await
}

/// SQL, a count: sends `NOTIFY` on `$channel` (a parameter) for each row of `$stopped` (a CTE of
/// exports that stopped running, with their `namespace`) whose namespace has another export queued
/// and due: one that `worker.per_namespace_limit` held back while it ran. A claimer looks for it
/// then, which otherwise would wait for a claimer's poll (`worker.poll_interval_ms`), the slot the
/// export leaves having been handed on when its reading ended, before the namespace was free.
macro_rules! wake_for_namespaces_next {
    ($channel:literal, $stopped:literal) => {
        concat!(
            "(SELECT count(pg_notify(",
            $channel,
            ", '')) FROM ",
            $stopped,
            " x
              WHERE EXISTS (SELECT 1 FROM export_jobs q
                            WHERE q.namespace = x.namespace AND q.state = 'queued'
                              AND q.run_at <= now()))"
        )
    };
}

/// Records the attempt's terminal outcome and, in the same statement, enqueues the one
/// notification (none for a cancelled export). Returns false when fenced out.
pub async fn finish(
    pool: &PgPool,
    id: ExportId,
    attempt: i32,
    finish: &Finish,
) -> sqlx::Result<bool> {
    let (state, error, result) = match finish {
        Finish::Succeeded(r) => (JobState::Succeeded, None, Some(r)),
        Finish::Failed(e) => (JobState::Failed, Some(e.as_str()), None),
        Finish::TimedOut(e) => (JobState::TimedOut, Some(e.as_str()), None),
        Finish::Invalid(e) => (JobState::Invalid, Some(e.as_str()), None),
        Finish::Cancelled => (JobState::Cancelled, None, None),
    };
    // One statement (one round trip, its own transaction): the outcome and the notification
    // job commit together, or neither does, with a claimer's wake-up when the namespace's next
    // export may run now. The notification's state on the export's row is set here already, so
    // the jobs table's mirror trigger finds nothing to change. No `NOTIFY` for the notification
    // job: this process's notifier sends it, woken by the worker in the process (see
    // `worker::exports`), and a `NOTIFY` would wake every process's listener, and every
    // listening backend of Postgres, for it (at month-end on 6 processes, 12 backends per
    // export); should this process's notifier not claim it, the others' next look does.
    let (updated, _next): (i64, i64) = sqlx::query_as(concat!(
        "WITH done AS (
             UPDATE export_jobs
             SET state = $3,
                 last_error = CASE WHEN $3 = 'succeeded' THEN NULL ELSE coalesce($4, last_error) END,
                 lease_expires_at = NULL,
                 -- A success moves an earlier attempt's error aside, and has read every slice.
                 previous_error = CASE WHEN $3 = 'succeeded' THEN last_error ELSE previous_error END,
                 slices_done = CASE WHEN $3 = 'succeeded' THEN slices_total ELSE slices_done END,
                 searches_running = 0,
                 finished_at = now(), updated_at = now(), checkpoint = NULL,
                 object_key = coalesce($5, object_key), download_url = $6, url_expires_at = $7,
                 logs_exported = coalesce($8, logs_exported), logs_skipped = coalesce($9, logs_skipped),
                 bytes_written = coalesce($10, bytes_written),
                 notify_state = CASE WHEN $3 = 'cancelled' THEN 'skipped' ELSE 'pending' END,
                 sha256 = coalesce($11, sha256), manifest = coalesce($12, manifest)
             WHERE id = $1 AND attempt = $2 AND state = 'running'
             RETURNING id, namespace),
         job AS (
             INSERT INTO jobs (kind, unique_key, args)
             SELECT $13, id::text, jsonb_build_object('export_id', id) FROM done WHERE $3 <> 'cancelled'
             ON CONFLICT (kind, unique_key) DO NOTHING
             RETURNING id)
         SELECT (SELECT count(*) FROM done), ",
        wake_for_namespaces_next!("$14", "done"),
    ))
    .bind(id.0)
    .bind(attempt)
    .bind(state.as_str())
    .bind(error)
    .bind(result.map(|r| r.object_key.as_str()))
    .bind(result.map(|r| r.download_url.as_str()))
    .bind(result.map(|r| r.url_expires_at))
    .bind(result.map(|r| r.logs_exported as i64))
    .bind(result.map(|r| r.logs_skipped as i64))
    .bind(result.map(|r| r.bytes_written as i64))
    .bind(result.map(|r| r.sha256.as_str()))
    .bind(result.map(|r| &r.manifest))
    .bind(NOTIFICATION)
    .bind(CHANNEL_NEW_JOB)
    .fetch_one(pool)
    .await?;
    Ok(updated == 1)
}

/// Records how far this attempt got (see `export::checkpoint`). Returns false when fenced out:
/// the job is no longer this attempt's.
pub async fn save_checkpoint(
    pool: &PgPool,
    id: ExportId,
    attempt: i32,
    checkpoint: &serde_json::Value,
) -> sqlx::Result<bool> {
    let result = sqlx::query(
        "UPDATE export_jobs SET checkpoint = $3, updated_at = now()
         WHERE id = $1 AND attempt = $2 AND state = 'running'",
    )
    .bind(id.0)
    .bind(attempt)
    .bind(checkpoint)
    .execute(pool)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// Puts the job back in the queue to run again after `delay`. Returns false when fenced out.
pub async fn retry_later(
    pool: &PgPool,
    id: ExportId,
    attempt: i32,
    delay: Duration,
    error: &str,
) -> sqlx::Result<bool> {
    let (requeued, _next): (i64, i64) = sqlx::query_as(concat!(
        "WITH requeued AS (
             UPDATE export_jobs
             SET state = 'queued', run_at = now() + make_interval(secs => $3),
                 lease_expires_at = NULL, worker_id = NULL, last_error = $4, updated_at = now()
             WHERE id = $1 AND attempt = $2 AND state = 'running'
             RETURNING namespace)
         SELECT (SELECT count(*) FROM requeued), ",
        wake_for_namespaces_next!("$5", "requeued"),
    ))
    .bind(id.0)
    .bind(attempt)
    .bind(secs(delay))
    .bind(error)
    .bind(CHANNEL_NEW_JOB)
    .fetch_one(pool)
    .await?;
    Ok(requeued == 1)
}

/// Returns a job interrupted by shutdown to the queue without counting the attempt.
pub async fn release(pool: &PgPool, id: ExportId, attempt: i32) -> sqlx::Result<bool> {
    let mut tx = pool.begin().await?;
    let result = sqlx::query(
        "UPDATE export_jobs
         SET state = 'queued', attempt = attempt - 1, run_at = now(), lease_expires_at = NULL,
             worker_id = NULL, updated_at = now()
         WHERE id = $1 AND attempt = $2 AND state = 'running'",
    )
    .bind(id.0)
    .bind(attempt)
    .execute(&mut *tx)
    .await?;
    notify(&mut tx, CHANNEL_NEW_JOB).await?;
    tx.commit().await?;
    Ok(result.rows_affected() == 1)
}

/// What the export listing selects; `None` fields do not filter.
#[derive(Debug, Clone, Default)]
pub struct ExportListing<'a> {
    pub namespace: Option<&'a str>,
    pub repository: Option<&'a str>,
    pub state: Option<JobState>,
    /// Only this requester's exports.
    pub requested_by: Option<&'a str>,
    /// Keyset: only exports before this `(created_at, id)`, newest first.
    pub before: Option<(DateTime<Utc>, Uuid)>,
    pub limit: i64,
}

/// Exports newest first (`created_at`, then id), at most `limit`.
pub async fn list_exports(pool: &PgPool, q: &ExportListing<'_>) -> sqlx::Result<Vec<ExportRow>> {
    let (before_at, before_id) = q.before.unzip();
    sqlx::query_as(&format!(
        "{SELECT_ROW}
         WHERE ($1::text IS NULL OR namespace = $1)
           AND ($2::text IS NULL OR repository = $2)
           AND ($3::text IS NULL OR state = $3)
           AND ($4::text IS NULL OR requested_by = $4)
           AND ($5::timestamptz IS NULL OR (created_at, id) < ($5, $6))
         ORDER BY created_at DESC, id DESC
         LIMIT $7"
    ))
    .bind(q.namespace)
    .bind(q.repository)
    .bind(q.state.map(JobState::as_str))
    .bind(q.requested_by)
    .bind(before_at)
    .bind(before_id)
    .bind(q.limit)
    .fetch_all(pool)
    .await
}

/// The outcome of a cancel request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// It had not started: it is cancelled now.
    Cancelled,
    /// It is running: its worker stops within seconds.
    Requested,
    /// It had already finished.
    AlreadyFinished(JobState),
    NotFound,
}

/// Cancels a queued job at once, or flags a running one for its worker.
pub async fn cancel(pool: &PgPool, id: ExportId) -> sqlx::Result<CancelOutcome> {
    let state: Option<String> = sqlx::query_scalar(
        "UPDATE export_jobs
         SET state = CASE WHEN state = 'queued' THEN 'cancelled' ELSE state END,
             finished_at = CASE WHEN state = 'queued' THEN now() ELSE finished_at END,
             notify_state = CASE WHEN state = 'queued' THEN 'skipped' ELSE notify_state END,
             -- A sealed export is a link of its chain already: it finishes.
             cancel_requested = (state IN ('queued', 'running') AND chain_sequence IS NULL)
                 OR cancel_requested,
             updated_at = now()
         WHERE id = $1
         RETURNING (SELECT state FROM export_jobs WHERE id = $1)",
    )
    .bind(id.0)
    .fetch_optional(pool)
    .await?;
    Ok(match state.as_deref().and_then(JobState::parse) {
        None => CancelOutcome::NotFound,
        Some(JobState::Queued) => CancelOutcome::Cancelled,
        Some(JobState::Running) => CancelOutcome::Requested,
        Some(done) => CancelOutcome::AlreadyFinished(done),
    })
}

/// Reads one export.
pub async fn get(pool: &PgPool, id: ExportId) -> sqlx::Result<Option<ExportRow>> {
    sqlx::query_as(&format!("{SELECT_ROW} WHERE id = $1"))
        .bind(id.0)
        .fetch_optional(pool)
        .await
}

/// Number of jobs in each state, for metrics.
pub async fn count_by_state(pool: &PgPool) -> sqlx::Result<Vec<(String, i64)>> {
    sqlx::query_as("SELECT state, count(*) FROM export_jobs GROUP BY state")
        .fetch_all(pool)
        .await
}

/// Seconds the oldest queued job has waited since it was requested (0 when none waits).
pub async fn oldest_queued_seconds(pool: &PgPool) -> sqlx::Result<f64> {
    sqlx::query_scalar(
        "SELECT COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0)::float8
         FROM export_jobs WHERE state = 'queued'",
    )
    .fetch_one(pool)
    .await
}

/// Deletes finished exports older than the retention period, with their notification once it
/// is settled; returns how many exports.
pub async fn delete_finished_before(pool: &PgPool, before: DateTime<Utc>) -> sqlx::Result<u64> {
    let deleted: i64 = sqlx::query_scalar(
        "WITH gone AS (
             DELETE FROM export_jobs e
             WHERE finished_at < $1
               AND NOT EXISTS (SELECT 1 FROM jobs n
                               WHERE n.kind = 'notification' AND n.unique_key = e.id::text
                                 AND n.state IN ('queued', 'running'))
             RETURNING id),
         notices AS (
             DELETE FROM jobs
             WHERE kind = 'notification' AND unique_key IN (SELECT id::text FROM gone))
         SELECT count(*) FROM gone",
    )
    .bind(before)
    .fetch_one(pool)
    .await?;
    Ok(deleted.max(0) as u64)
}

/// Exported objects whose retention has passed and that are not deleted yet; with them the
/// archive an export that ended without success completed but never sealed.
pub async fn expired_objects(
    pool: &PgPool,
    retention: Duration,
    limit: i64,
) -> sqlx::Result<Vec<(Uuid, String)>> {
    sqlx::query_as(
        "SELECT id, coalesce(object_key, unsealed_object_key) FROM export_jobs
         WHERE coalesce(object_key, unsealed_object_key) IS NOT NULL
           AND object_deleted_at IS NULL
           AND finished_at < now() - make_interval(secs => $1)
         ORDER BY finished_at LIMIT $2",
    )
    .bind(secs(retention))
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Records that an exported object was deleted.
pub async fn mark_object_deleted(pool: &PgPool, id: Uuid) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE export_jobs SET object_deleted_at = now(), updated_at = now() WHERE id = $1",
    )
    .bind(id)
    .execute(pool)
    .await?;
    Ok(())
}
