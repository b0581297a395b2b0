//! Every SQL statement on `export_schedules` and `schedule_runs`. The scheduler's writes happen
//! inside the transaction that holds the schedule's row lock, so a crashed scheduler leaves
//! nothing half done.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::{NewSchedule, PeriodRange, ScheduleRow, Skipped};
use crate::domain::{ExportId, Performer, RepositoryName};

const SELECT_ROW: &str = "SELECT * FROM export_schedules";

/// Stores a new, active schedule.
pub async fn insert(pool: &PgPool, id: Uuid, schedule: &NewSchedule) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO export_schedules (id, owner, scope, namespace, repository, period, timezone,
             first_period_start, delay_minutes, format, compression, performer, kinds,
             callback_url, callback_email, next_period_start, next_run_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $8, $16)",
    )
    .bind(id)
    .bind(&schedule.owner)
    .bind(schedule.scope.as_str())
    .bind(schedule.namespace.as_str())
    .bind(schedule.repository.as_ref().map(RepositoryName::as_str))
    .bind(schedule.grid.period.as_str())
    .bind(schedule.grid.timezone.name())
    .bind(schedule.first_period_start)
    .bind(schedule.delay_minutes as i32)
    .bind(schedule.format.as_str())
    .bind(schedule.compression.as_str())
    .bind(schedule.performer.as_ref().map(Performer::as_str))
    .bind(&schedule.kinds)
    .bind(schedule.callback_url.as_ref().map(ToString::to_string))
    .bind(schedule.callback_email.as_ref().map(ToString::to_string))
    .bind(schedule.first_run_at())
    .execute(pool)
    .await?;
    Ok(())
}

/// Reads one schedule.
pub async fn get(pool: &PgPool, id: Uuid) -> sqlx::Result<Option<ScheduleRow>> {
    sqlx::query_as(&format!("{SELECT_ROW} WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// A namespace's schedules (only one repository's when given), oldest first.
pub async fn list(
    pool: &PgPool,
    namespace: &str,
    repository: Option<&str>,
) -> sqlx::Result<Vec<ScheduleRow>> {
    sqlx::query_as(&format!(
        "{SELECT_ROW}
         WHERE namespace = $1 AND ($2::text IS NULL OR repository = $2)
         ORDER BY created_at, id"
    ))
    .bind(namespace)
    .bind(repository)
    .fetch_all(pool)
    .await
}

/// Deletes a schedule and its run records; its exports stay. False when it did not exist.
pub async fn delete(pool: &PgPool, id: Uuid) -> sqlx::Result<bool> {
    let result = sqlx::query("DELETE FROM export_schedules WHERE id = $1")
        .bind(id)
        .execute(pool)
        .await?;
    Ok(result.rows_affected() == 1)
}

/// A change asked for with `PATCH`; `None` fields stay as they are.
#[derive(Debug, Clone, Default)]
pub struct Changes {
    /// `Some(true)` pauses, `Some(false)` resumes (and clears the pause reason).
    pub paused: Option<bool>,
    /// `Some(None)` removes the channel.
    pub callback_email: Option<Option<String>>,
    pub callback_url: Option<Option<String>>,
    pub format: Option<&'static str>,
    pub compression: Option<&'static str>,
}

/// Applies `changes` and returns the schedule as it is now. The row is locked first, so a change
/// never lands in the middle of a scheduler run of the same schedule.
pub async fn update(
    pool: &PgPool,
    id: Uuid,
    changes: &Changes,
) -> sqlx::Result<Option<ScheduleRow>> {
    let state = changes.paused.map(|p| if p { "paused" } else { "active" });
    let pause_reason = changes
        .paused
        .map(|p| p.then_some("paused through the API"));
    sqlx::query_as(
        "UPDATE export_schedules
         SET state = coalesce($2, state),
             paused_reason = CASE WHEN $3 THEN $4 ELSE paused_reason END,
             callback_email = CASE WHEN $5 THEN $6 ELSE callback_email END,
             callback_url = CASE WHEN $7 THEN $8 ELSE callback_url END,
             format = coalesce($9, format),
             compression = coalesce($10, compression),
             updated_at = now()
         WHERE id = $1
         RETURNING *",
    )
    .bind(id)
    .bind(state)
    .bind(pause_reason.is_some())
    .bind(pause_reason.flatten())
    .bind(changes.callback_email.is_some())
    .bind(changes.callback_email.clone().flatten())
    .bind(changes.callback_url.is_some())
    .bind(changes.callback_url.clone().flatten())
    .bind(changes.format)
    .bind(changes.compression)
    .fetch_optional(pool)
    .await
}

/// Locks the most overdue active schedule due at `now` that another scheduler is not working on
/// (and that this pass has not handled yet); the lock lasts until `conn`'s transaction ends.
pub async fn lock_next_due(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    handled: &[Uuid],
) -> sqlx::Result<Option<ScheduleRow>> {
    sqlx::query_as(&format!(
        "{SELECT_ROW}
         WHERE state = 'active' AND next_run_at <= $1 AND NOT (id = ANY($2))
         ORDER BY next_run_at
         LIMIT 1
         FOR UPDATE SKIP LOCKED"
    ))
    .bind(now)
    .bind(handled)
    .fetch_optional(conn)
    .await
}

/// Records the run of one period with the id its export will have. False when the period already
/// has a run: then no export may be enqueued for it.
pub async fn insert_run(
    conn: &mut PgConnection,
    schedule_id: Uuid,
    period: PeriodRange,
    export_id: ExportId,
) -> sqlx::Result<bool> {
    let result = sqlx::query(
        "INSERT INTO schedule_runs (schedule_id, period_start, period_end, export_id)
         VALUES ($1, $2, $3, $4)
         ON CONFLICT (schedule_id, period_start) DO NOTHING",
    )
    .bind(schedule_id)
    .bind(period.start)
    .bind(period.end)
    .bind(export_id.0)
    .execute(conn)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// Adds periods beyond the catch-up limit to the schedule's skipped count and range.
pub async fn record_skipped(
    conn: &mut PgConnection,
    id: Uuid,
    skipped: &Skipped,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE export_schedules
         SET skipped_periods = skipped_periods + $2,
             oldest_skipped_period = coalesce(oldest_skipped_period, $3),
             newest_skipped_period = $4,
             updated_at = now()
         WHERE id = $1",
    )
    .bind(id)
    .bind(skipped.count)
    .bind(skipped.oldest)
    .bind(skipped.newest)
    .execute(conn)
    .await?;
    Ok(())
}

/// Moves the schedule's cursor to the next period still to come, and when it is due.
pub async fn advance(
    conn: &mut PgConnection,
    id: Uuid,
    next_period_start: DateTime<Utc>,
    next_run_at: DateTime<Utc>,
    ran_at: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE export_schedules
         SET next_period_start = $2, next_run_at = $3, last_run_at = $4, updated_at = now()
         WHERE id = $1",
    )
    .bind(id)
    .bind(next_period_start)
    .bind(next_run_at)
    .bind(ran_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records (or, with `None`, clears) why the schedule's due runs wait: shown in its status until
/// a check succeeds. A failed turn records it after its transaction was rolled back; a turn that
/// ran clears it inside its own (which holds the row's lock).
pub async fn set_blocked(
    executor: impl sqlx::PgExecutor<'_>,
    id: Uuid,
    reason: Option<&str>,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE export_schedules
         SET blocked_reason = $2,
             blocked_since = CASE WHEN $2::text IS NULL THEN NULL
                                  ELSE coalesce(blocked_since, now()) END
         WHERE id = $1 AND blocked_reason IS DISTINCT FROM $2",
    )
    .bind(id)
    .bind(reason)
    .execute(executor)
    .await?;
    Ok(())
}

/// Pauses the schedule with the reason shown in its status.
pub async fn pause(conn: &mut PgConnection, id: Uuid, reason: &str) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE export_schedules
         SET state = 'paused', paused_reason = $2, updated_at = now()
         WHERE id = $1",
    )
    .bind(id)
    .bind(reason)
    .execute(conn)
    .await?;
    Ok(())
}

/// One export a schedule made, for its status document.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ScheduledExport {
    pub export_id: Uuid,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub state: String,
    /// Why it failed, or why the schedule paused instead of exporting the period.
    pub last_error: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// The schedule's newest exports (including pause notices), newest period first.
pub async fn recent_exports(
    pool: &PgPool,
    id: Uuid,
    limit: i64,
) -> sqlx::Result<Vec<ScheduledExport>> {
    sqlx::query_as(
        "SELECT id AS export_id, start_time AS period_start, end_time AS period_end, state,
                last_error, created_at
         FROM export_jobs WHERE schedule_id = $1
         ORDER BY created_at DESC, start_time DESC
         LIMIT $2",
    )
    .bind(id)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// The newest period a schedule ran, with its export's state (`None` once retention removed it).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LastRun {
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub export_id: Option<Uuid>,
    pub export_state: Option<String>,
    pub created_at: DateTime<Utc>,
}

/// The schedule's newest run.
pub async fn last_run(pool: &PgPool, id: Uuid) -> sqlx::Result<Option<LastRun>> {
    sqlx::query_as(
        "SELECT r.period_start, r.period_end, r.export_id, j.state AS export_state, r.created_at
         FROM schedule_runs r LEFT JOIN export_jobs j ON j.id = r.export_id
         WHERE r.schedule_id = $1
         ORDER BY r.period_start DESC
         LIMIT 1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// Schedules by state and the most overdue active schedule's lag, for metrics.
#[derive(Debug, Clone, Default)]
pub struct ScheduleStats {
    pub active: i64,
    pub paused: i64,
    /// Seconds since the most overdue active schedule's next period became due; 0 when none is.
    pub max_lag_seconds: f64,
    /// When any schedule last ran, as seen in the database.
    pub last_run_at: Option<DateTime<Utc>>,
}

/// Reads [`ScheduleStats`] at `now`.
pub async fn stats(pool: &PgPool, now: DateTime<Utc>) -> sqlx::Result<ScheduleStats> {
    let (active, paused, lag, last_run_at): (i64, i64, Option<f64>, Option<DateTime<Utc>>) =
        sqlx::query_as(
            "SELECT count(*) FILTER (WHERE state = 'active'),
                    count(*) FILTER (WHERE state = 'paused'),
                    max(extract(epoch FROM ($1 - next_run_at))::float8)
                        FILTER (WHERE state = 'active' AND next_run_at < $1),
                    max(last_run_at)
             FROM export_schedules",
        )
        .bind(now)
        .fetch_one(pool)
        .await?;
    Ok(ScheduleStats {
        active,
        paused,
        max_lag_seconds: lag.unwrap_or(0.0).max(0.0),
        last_run_at,
    })
}
