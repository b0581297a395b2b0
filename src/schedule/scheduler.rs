//! The scheduler: on every tick (a `schedule_tick` job, see `ticks`), each due schedule's closed
//! periods become exports.
//!
//! Exactly once per period, whatever the number of schedulers and however they crash: the
//! schedule's row is locked (`FOR UPDATE SKIP LOCKED`, so schedulers share the work instead of
//! queueing behind each other), and each period's `schedule_runs` row — keyed on (schedule,
//! period start) — is written in the same transaction as its export. A crash before the commit
//! leaves neither; a second scheduler that somehow reached the same period inserts no run and so
//! enqueues nothing.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::owner::{self, Target};
use super::{ScheduleRow, storage};
use crate::access::quay::ServiceCheckError;
use crate::config::Config;
use crate::domain::{ExportId, Namespace, RepositoryName};
use crate::metrics::METRICS;
use crate::queue::storage as queue;

/// A test hook run with a schedule's transaction still open, its runs and exports written: a test
/// can stop the scheduler there to show that a crash before the commit leaves nothing behind, or
/// panic there to show that the next tick still runs.
pub type BeforeCommit = Arc<dyn Fn(Uuid) -> BoxFuture<'static, ()> + Send + Sync>;

/// Turns closed periods into exports; any number may run against one database.
#[derive(Clone)]
pub struct Scheduler {
    pool: PgPool,
    max_catch_up: u32,
    max_attempts: u32,
    auth: crate::config::AuthConfig,
    /// Quay mode: where the owners' rights are re-checked.
    quay: Option<Arc<crate::access::QuayIdentity>>,
    before_commit: Option<BeforeCommit>,
}

/// What one tick did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TickReport {
    /// Exports enqueued, one per period.
    pub enqueued: u64,
    /// Periods beyond the catch-up limit, skipped and recorded.
    pub skipped: u64,
    /// Schedules paused because their owner lost access.
    pub paused: u64,
}

/// How one schedule's turn ended.
enum Turn {
    Ran { enqueued: u64, skipped: u64 },
    Paused,
}

impl Scheduler {
    /// A scheduler with `[schedule]` and the export's attempt limit from `config`.
    pub fn new(pool: PgPool, config: &Config) -> Self {
        Self {
            pool,
            max_catch_up: config.schedule.max_catch_up_periods.max(1),
            max_attempts: config.worker.max_attempts,
            auth: config.auth.clone(),
            quay: (config.auth.mode == crate::config::AuthMode::Quay)
                .then(|| crate::access::QuayIdentity::new(&config.auth).ok())
                .flatten()
                .map(Arc::new),
            before_commit: None,
        }
    }

    /// Installs the [`BeforeCommit`] test hook.
    pub fn with_before_commit(mut self, hook: BeforeCommit) -> Self {
        self.before_commit = Some(hook);
        self
    }

    /// Handles every schedule due at `now` once, most overdue first. `now` is the scheduler's
    /// clock: tests pass any instant.
    pub async fn tick(&self, now: DateTime<Utc>) -> sqlx::Result<TickReport> {
        let mut report = TickReport::default();
        let mut handled: Vec<Uuid> = Vec::new();
        loop {
            let mut tx = self.pool.begin().await?;
            let Some(row) = storage::lock_next_due(&mut tx, now, &handled).await? else {
                tx.commit().await?;
                return Ok(report);
            };
            handled.push(row.id);
            let turn = self.take_turn(&mut tx, &row, now).await;
            let turn = match turn {
                Ok(turn) => turn,
                Err(e) => {
                    tx.rollback().await?;
                    self.record_failed_turn(&row, &e).await?;
                    continue;
                }
            };
            if row.blocked_reason.is_some() {
                storage::set_blocked(&mut *tx, row.id, None).await?;
                tracing::info!(schedule_id = %row.id, "schedule unblocked: Quay answered its owner check");
            }
            if let Some(hook) = &self.before_commit {
                hook(row.id).await;
            }
            tx.commit().await?;
            match turn {
                Turn::Ran { enqueued, skipped } => {
                    report.enqueued += enqueued;
                    report.skipped += skipped;
                    METRICS.add("logexport_schedule_runs_total", "enqueued", enqueued);
                    METRICS.add("logexport_schedule_runs_total", "skipped", skipped);
                }
                Turn::Paused => {
                    report.paused += 1;
                    METRICS.incr("logexport_schedule_runs_total", "paused");
                }
            }
        }
    }

    /// A turn that failed is retried next tick. When Quay refused logexport's own service token,
    /// the schedule's document says so (`blocked_reason`) until a check succeeds, and
    /// `logexport_schedule_runs_total{outcome="blocked"}` counts it, for an alert.
    async fn record_failed_turn(
        &self,
        row: &ScheduleRow,
        error: &anyhow::Error,
    ) -> sqlx::Result<()> {
        let refused = error
            .downcast_ref::<ServiceCheckError>()
            .filter(|e| matches!(e, ServiceCheckError::Refused { .. }));
        let Some(refused) = refused else {
            tracing::warn!(schedule_id = %row.id, error = %error, "schedule run failed; retried next tick");
            return Ok(());
        };
        METRICS.incr("logexport_schedule_runs_total", "blocked");
        let reason = refused.to_string();
        if row.blocked_reason.as_deref() != Some(reason.as_str()) {
            tracing::error!(schedule_id = %row.id, error = %reason, "schedule blocked: Quay refuses auth.quay_service_token");
            storage::set_blocked(&self.pool, row.id, Some(&reason)).await?;
        }
        Ok(())
    }

    /// One schedule's turn, inside the transaction holding its row lock.
    #[tracing::instrument(skip_all, fields(schedule_id = %row.id, namespace = %row.namespace))]
    async fn take_turn(
        &self,
        conn: &mut PgConnection,
        row: &ScheduleRow,
        now: DateTime<Utc>,
    ) -> anyhow::Result<Turn> {
        let grid = row.grid()?;
        let due = grid.due(row.next_period_start, now, row.delay(), self.max_catch_up);
        let Some(first) = due.run.first().copied() else {
            // Not due after all (the stored due time was stale): recompute it.
            let next_run_at = grid.next(row.next_period_start) + row.delay();
            storage::advance(conn, row.id, row.next_period_start, next_run_at, now).await?;
            return Ok(Turn::Ran {
                enqueued: 0,
                skipped: 0,
            });
        };

        let namespace = Namespace::parse(&row.namespace)?;
        let repository = row
            .repository
            .as_deref()
            .map(RepositoryName::parse)
            .transpose()?;
        let target = Target {
            scope: row.scope.parse()?,
            namespace: &namespace,
            repository: repository.as_ref(),
        };
        if let Some(reason) =
            owner::may_still_export(conn, &self.auth, self.quay.as_deref(), &row.owner, target)
                .await?
        {
            self.pause_with_notice(conn, row, first, &reason).await?;
            return Ok(Turn::Paused);
        }

        let mut skipped = 0;
        if let Some(s) = &due.skipped {
            tracing::warn!(
                skipped = s.count,
                oldest = %s.oldest,
                newest = %s.newest,
                "periods older than schedule.max_catch_up_periods are skipped"
            );
            storage::record_skipped(conn, row.id, s).await?;
            skipped = s.count.max(0) as u64;
        }
        let mut enqueued = 0;
        for period in &due.run {
            let export_id = ExportId::new();
            // The run row first: if this period already has one, its export exists (or is being
            // committed by another scheduler) and nothing more may be enqueued for it.
            if storage::insert_run(conn, row.id, *period, export_id).await? {
                let export = row.export_for(*period, self.max_attempts)?;
                queue::insert(conn, export_id, &export, Some(row.id)).await?;
                tracing::info!(export_id = %export_id, period_start = %period.start, "scheduled export queued");
                enqueued += 1;
            }
        }
        let next = due.run.last().map_or(row.next_period_start, |p| p.end);
        storage::advance(conn, row.id, next, grid.next(next) + row.delay(), now).await?;
        Ok(Turn::Ran { enqueued, skipped })
    }

    /// Pauses the schedule and sends its recipients one notice why: an export of the due period
    /// recorded as refused, which the notifier delivers like any export's outcome.
    async fn pause_with_notice(
        &self,
        conn: &mut PgConnection,
        row: &ScheduleRow,
        period: super::PeriodRange,
        reason: &str,
    ) -> anyhow::Result<()> {
        tracing::warn!(reason, "owner lost access; schedule paused");
        let paused = format!("owner lost access: {reason}");
        storage::pause(conn, row.id, &paused).await?;
        let notice = format!(
            "scheduled export {} is paused because {reason}; the period from {} was not exported. \
             Resume it (PATCH /api/v1/exportschedules/{} with {{\"paused\": false}}) once access \
             is restored: the periods missed meanwhile are caught up.",
            row.id, period.start, row.id
        );
        let export_id = ExportId::new();
        let export = row.export_for(period, self.max_attempts)?;
        queue::insert(conn, export_id, &export, Some(row.id)).await?;
        queue::refuse_in(conn, export_id, &notice).await?;
        Ok(())
    }
}
