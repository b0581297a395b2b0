//! Wiring: builds the API and worker components from configuration.

use std::sync::Arc;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::api::{self, AppState};
use crate::config::Config;
use crate::worker::{Housekeeper, WorkerPool, WorkerSettings};

/// Runs the HTTP API until shutdown.
pub async fn serve(
    pool: PgPool,
    config: Arc<Config>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.server.bind)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on server.bind {}: {e}", config.server.bind))?;
    api::serve(listener, AppState::new(pool, config), shutdown).await
}

/// Runs export workers, the notifier and housekeeping until shutdown.
pub async fn work(
    pool: PgPool,
    config: Arc<Config>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let handler = crate::export::handler_from_config(&config).await?;
    let housekeeping =
        tokio::spawn(Housekeeper::new(pool.clone(), (*config).clone()).run(shutdown.clone()));
    WorkerPool::new(pool, WorkerSettings::from_config(&config.worker), handler)
        .run(shutdown)
        .await;
    let _ = housekeeping.await;
    Ok(())
}
