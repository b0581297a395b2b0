//! Wiring: builds the API and worker components from configuration.

use std::sync::Arc;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::api::{self, AppState};
use crate::config::Config;
use crate::queue::QueueListener;
use crate::worker::{Housekeeper, Notifier, WorkerPool, WorkerSettings};

/// Runs the HTTP API until shutdown. Keys left empty in the configuration are the deployment's
/// stored ones (see [`crate::secrets`]), so links a separate `work` process signs verify here.
pub async fn serve(
    pool: PgPool,
    config: Arc<Config>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.server.bind)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on server.bind {}: {e}", config.server.bind))?;
    let config = Arc::new(crate::secrets::with_stored_secrets(&pool, &config).await?);
    let storage = crate::storage::open(&config).await?;
    let state = AppState::try_new(pool, config)
        .map_err(anyhow::Error::msg)?
        .with_storage(storage);
    api::serve(listener, state, shutdown).await
}

/// Runs export workers, the notifier, housekeeping, audit delivery and the scheduler's ticks
/// until shutdown; empty keys are the deployment's stored ones, as in [`serve`].
pub async fn work(
    pool: PgPool,
    config: Arc<Config>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    if config.schedule.enabled {
        crate::schedule::owner::check_service_token(&config.auth).await?;
    }
    let config = Arc::new(crate::secrets::with_stored_secrets(&pool, &config).await?);
    let storage = crate::storage::open(&config).await?;
    let handler = crate::export::handler(&config, storage.objects.clone(), &pool)?;
    let mailer = crate::notify::mailer_from_config(&config.email)?;
    let notifier = Notifier::new(pool.clone(), &config, mailer)?;
    let listener_stop = CancellationToken::new();
    let listener = QueueListener::spawn(pool.clone(), listener_stop.clone());
    let notifications = tokio::spawn(notifier.run(listener.clone(), shutdown.clone()));
    let housekeeping = tokio::spawn(
        Housekeeper::new(
            pool.clone(),
            (*config).clone(),
            Some(storage.objects.clone()),
        )
        .run(shutdown.clone()),
    );
    let audit = crate::audit::AuditDelivery::new(&config)?.map(|audit| {
        tokio::spawn(
            audit
                .into_runner(pool.clone())
                .run(listener.clone(), shutdown.clone()),
        )
    });
    // `schedule.enabled = false`: this process neither enqueues nor runs scheduler ticks.
    let scheduler = config.schedule.enabled.then(|| {
        tokio::spawn(
            crate::schedule::ScheduleTicks::new(pool.clone(), &config)
                .run(listener.clone(), shutdown.clone()),
        )
    });
    // One LISTEN connection wakes the export workers and every kind of job.
    WorkerPool::new(pool, WorkerSettings::from_config(&config.worker), handler)
        .run_with(&listener, shutdown)
        .await;
    let _ = notifications.await;
    let _ = housekeeping.await;
    if let Some(audit) = audit {
        let _ = audit.await;
    }
    if let Some(scheduler) = scheduler {
        let _ = scheduler.await;
    }
    listener_stop.cancel();
    Ok(())
}
