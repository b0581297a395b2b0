//! Periodic cleanup: job retention, expired exported objects and stale multipart uploads.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::queue::storage;

/// Runs the cleanup tasks on an interval.
pub struct Housekeeper {
    pool: PgPool,
    config: Config,
}

impl Housekeeper {
    /// A housekeeper over the job table.
    pub fn new(pool: PgPool, config: Config) -> Self {
        Self { pool, config }
    }

    /// One pass of every cleanup task; errors are logged, never fatal.
    pub async fn run_once(&self) {
        let retention = chrono::Duration::days(i64::from(self.config.worker.job_retention_days));
        match storage::delete_finished_before(&self.pool, chrono::Utc::now() - retention).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(deleted = n, "deleted finished jobs past retention"),
            Err(e) => tracing::warn!(error = %e, "job retention cleanup failed"),
        }
    }

    /// Runs until shutdown.
    pub async fn run(self, shutdown: CancellationToken) {
        let interval = Duration::from_secs(self.config.worker.housekeeping_interval_seconds.max(1));
        loop {
            self.run_once().await;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => {}
            }
        }
    }
}
