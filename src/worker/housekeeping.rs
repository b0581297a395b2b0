//! Periodic cleanup: job retention, expired exported objects and stale multipart uploads.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::contained::{WorkKind, contain};
use crate::config::Config;
use crate::queue::storage;
use crate::storage::{ObjectStore, manifest_key};

/// How long a succeeded `schedule_tick` job is kept. One accumulates per
/// `schedule.interval_seconds`; an hour of them shows an operator the recent ticks.
pub const SCHEDULE_TICK_RETENTION: chrono::Duration = chrono::Duration::hours(1);

/// Runs the cleanup tasks on an interval.
pub struct Housekeeper {
    pool: PgPool,
    config: Config,
    store: Option<Arc<dyn ObjectStore>>,
}

impl Housekeeper {
    /// A housekeeper over the job table and, when given, the object store.
    pub fn new(pool: PgPool, config: Config, store: Option<Arc<dyn ObjectStore>>) -> Self {
        Self {
            pool,
            config,
            store,
        }
    }

    /// One pass of every cleanup task; errors are logged, never fatal.
    pub async fn run_once(&self) {
        if let Some(store) = &self.store {
            self.delete_expired_objects(store.as_ref()).await;
            let older_than = Duration::from_secs(self.config.export.stale_upload_seconds);
            match store
                .abort_stale_uploads(&self.config.export.object_prefix, older_than)
                .await
            {
                Ok(0) => {}
                Ok(n) => tracing::info!(aborted = n, "aborted stale incomplete uploads"),
                Err(e) => tracing::warn!(error = %e, "aborting stale uploads failed"),
            }
        }
        let retention = chrono::Duration::days(i64::from(self.config.worker.job_retention_days));
        match storage::delete_finished_before(&self.pool, chrono::Utc::now() - retention).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "deleted finished jobs past retention"),
            Err(e) => tracing::warn!(error = %e, "job retention cleanup failed"),
        }
        // Delivered audit events: kept as long as finished exports, then only Splunk has them.
        let delivered = crate::queue::jobs::delete_succeeded_before(
            &self.pool,
            crate::queue::jobs::AUDIT_EVENT,
            chrono::Utc::now() - retention,
        );
        match delivered.await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "deleted delivered audit events past retention"),
            Err(e) => tracing::warn!(error = %e, "audit event retention cleanup failed"),
        }
        // Failed scheduler ticks stay, like failed audit events, for an operator to read.
        let ticked = crate::queue::jobs::delete_succeeded_before(
            &self.pool,
            crate::queue::jobs::SCHEDULE_TICK,
            chrono::Utc::now() - SCHEDULE_TICK_RETENTION,
        );
        match ticked.await {
            Ok(0) => {}
            Ok(n) => tracing::debug!(
                deleted = n,
                "deleted succeeded scheduler ticks past retention"
            ),
            Err(e) => tracing::warn!(error = %e, "scheduler tick retention cleanup failed"),
        }
    }

    async fn delete_expired_objects(&self, store: &dyn ObjectStore) {
        let retention = Duration::from_secs(self.config.export.object_retention_seconds);
        let expired = match storage::expired_objects(&self.pool, retention, 500).await {
            Ok(rows) => rows,
            Err(e) => {
                tracing::warn!(error = %e, "listing expired exports failed");
                return;
            }
        };
        for (id, key) in expired {
            // The manifest first: it must not outlive the archive it describes.
            let deleted = match store.delete(&manifest_key(&key)).await {
                Ok(()) => store.delete(&key).await,
                Err(e) => Err(e),
            };
            match deleted {
                Ok(()) => {
                    if let Err(e) = storage::mark_object_deleted(&self.pool, id).await {
                        tracing::warn!(export_id = %id, error = %e, "recording the deletion failed");
                    } else {
                        tracing::info!(export_id = %id, "deleted the exported archive past its retention");
                    }
                }
                Err(e) => {
                    tracing::warn!(export_id = %id, error = %e, "deleting an expired archive failed")
                }
            }
        }
    }

    /// Runs until shutdown; a pass that panics is logged and counted, and the next one runs.
    pub async fn run(self, shutdown: CancellationToken) {
        let interval = Duration::from_secs(self.config.worker.housekeeping_interval_seconds.max(1));
        let this = Arc::new(self);
        loop {
            let housekeeper = this.clone();
            let _logged = contain(WorkKind::Housekeeping, async move {
                housekeeper.run_once().await
            })
            .await;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }
}
