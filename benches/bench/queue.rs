//! Sections 4 and 5: claim+complete throughput of an in-process `WorkerPool` with the no-op
//! handler, and the pickup latency of an idle one (LISTEN/NOTIFY, polling only every second).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use logexport::config::{DatabaseConfig, WorkerConfig};
use logexport::domain::{Compression, DateRange, ExportFormat, ExportScope, Namespace};
use logexport::queue::{NewExport, storage};
use logexport::worker::{NoopHandler, WorkerPool, WorkerSettings};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio_util::sync::CancellationToken;

use crate::db::Databases;
use crate::table::{Table, quantile, rate, thousands, verdict};

const JOBS: i64 = 20_000;
const NAMESPACES: i64 = 1_000;
const CLAIM_CONCURRENCY: usize = 16;
const POOL_CONNECTIONS: u32 = 20;
const PICKUP_JOBS: usize = 200;
/// How long the claim benchmark may run before it reports what it has.
const CLAIM_TIME_LIMIT: Duration = Duration::from_secs(60);

/// Runs sections 4 and 5 and prints their tables.
pub async fn run(databases: &Databases) -> anyhow::Result<()> {
    let (url, pool) = databases.fresh("queue", POOL_CONNECTIONS).await?;
    let monitor = PgPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .context("connecting the monitor")?;
    let result = async {
        // The service's own pool (`db::pool_options`) beside sqlx's default, which tests every
        // connection with a round trip before each statement.
        let service = logexport::db::pool_options(&DatabaseConfig {
            max_connections: POOL_CONNECTIONS,
            ..DatabaseConfig::default()
        })
        .connect(&url)
        .await
        .context("connecting the service's pool")?;
        let mut table = Table::new(
            format!(
                "Queue claim + complete (in-process WorkerPool, NoopHandler, concurrency {CLAIM_CONCURRENCY}, pool {POOL_CONNECTIONS} connections)"
            ),
            &[
                "pool",
                "jobs done",
                "jobs queued",
                "namespaces",
                "seconds (first start → last finish)",
                "wall s",
                "jobs/s",
            ],
        );
        claim_throughput(
            &pool,
            &monitor,
            "sqlx's default (a test before each use)",
            &mut table,
        )
        .await?;
        // The target is the service's: the pool it runs with.
        let service_rate = claim_throughput(
            &service,
            &monitor,
            "the service's (a test after 1 s idle)",
            &mut table,
        )
        .await?;
        table.note(format!(
            "- target ≥ 1,000 jobs/s through the service's pool: {}",
            verdict(service_rate >= 1000.0)
        ));
        table.print();
        service.close().await;
        sqlx::query("TRUNCATE export_jobs CASCADE")
            .execute(&monitor)
            .await?;
        pickup_latency(&pool, &monitor).await
    }
    .await;
    monitor.close().await;
    pool.close().await;
    result
}

fn settings(concurrency: usize) -> WorkerSettings {
    let config = WorkerConfig {
        concurrency,
        poll_interval_ms: 1000,
        ..WorkerConfig::default()
    };
    WorkerSettings::from_config(&config)
}

async fn count_succeeded(monitor: &PgPool) -> anyhow::Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM export_jobs WHERE state = 'succeeded'")
            .fetch_one(monitor)
            .await?,
    )
}

/// Claims and completes [`JOBS`] jobs through `pool` on an empty queue; adds a row to `table`
/// and returns the jobs per second.
async fn claim_throughput(
    pool: &PgPool,
    monitor: &PgPool,
    name: &str,
    table: &mut Table,
) -> anyhow::Result<f64> {
    sqlx::query("TRUNCATE export_jobs CASCADE")
        .execute(monitor)
        .await?;
    // One statement, spread over many namespaces so the per-namespace limit does not serialize.
    sqlx::query(
        "INSERT INTO export_jobs (id, scope, namespace, requested_by, start_time, end_time,
             format, compression, max_attempts, webhook_id)
         SELECT gen_random_uuid(), 'organization', 'ns' || (i % $2), 'bench',
                '2024-01-01T00:00:00Z', '2024-01-31T00:00:00Z', 'json', 'none', 3,
                'msg_' || md5(i::text)
         FROM generate_series(1, $1) AS i",
    )
    .bind(JOBS)
    .bind(NAMESPACES)
    .execute(monitor)
    .await
    .context("inserting the queue jobs")?;

    let shutdown = CancellationToken::new();
    let began = Instant::now();
    let workers = tokio::spawn(
        WorkerPool::new(
            pool.clone(),
            settings(CLAIM_CONCURRENCY),
            Arc::new(NoopHandler),
        )
        .run(shutdown.clone()),
    );
    // A slow queue is a result to report, not a reason to stall the whole benchmark.
    let deadline = began + CLAIM_TIME_LIMIT;
    let mut done = count_succeeded(monitor).await?;
    while done < JOBS && Instant::now() < deadline {
        // The rate comes from the jobs' own times; each look costs Postgres about 10 ms over
        // 20,000 rows, which at every 50 ms took a fifth of a core from the claims measured.
        tokio::time::sleep(Duration::from_millis(500)).await;
        done = count_succeeded(monitor).await?;
    }
    let wall = began.elapsed().as_secs_f64();
    shutdown.cancel();
    let _ = workers.await;
    let db_seconds: f64 = sqlx::query_scalar(
        "SELECT coalesce(EXTRACT(EPOCH FROM max(finished_at) - min(started_at))::float8, 0)
         FROM export_jobs WHERE state = 'succeeded'",
    )
    .fetch_one(monitor)
    .await?;
    let per_sec = done as f64 / db_seconds.max(1e-3);

    table.row(vec![
        name.to_owned(),
        thousands(done.max(0) as u64),
        thousands(JOBS as u64),
        thousands(NAMESPACES as u64),
        format!("{db_seconds:.2}"),
        format!("{wall:.2}"),
        rate(per_sec),
    ]);
    if done < JOBS {
        table.note(format!(
            "- {name}: stopped after {} s with {} of {} jobs done",
            CLAIM_TIME_LIMIT.as_secs(),
            thousands(done.max(0) as u64),
            thousands(JOBS as u64)
        ));
    }
    Ok(per_sec)
}

async fn pickup_latency(pool: &PgPool, monitor: &PgPool) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let workers = tokio::spawn(
        WorkerPool::new(pool.clone(), settings(4), Arc::new(NoopHandler)).run(shutdown.clone()),
    );
    // Let the pool go idle (its LISTEN connection up, its first empty claim done).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let start = "2024-01-01T00:00:00Z".parse()?;
    let end = "2024-01-31T00:00:00Z".parse()?;
    for i in 0..PICKUP_JOBS {
        let export = NewExport {
            scope: ExportScope::Organization,
            namespace: Namespace::parse(&format!("pickup{}", i % 10))?,
            repository: None,
            requested_by: "bench".into(),
            range: DateRange {
                start,
                end,
                timezone: chrono_tz::Tz::UTC,
            },
            format: ExportFormat::Json,
            compression: Compression::None,
            callback_url: None,
            callback_email: None,
            idempotency_key: None,
            max_attempts: 3,
            performer: None,
            kinds: Vec::new(),
        };
        storage::enqueue(pool, &export).await?;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while count_succeeded(monitor).await? < PICKUP_JOBS as i64 {
        anyhow::ensure!(
            Instant::now() < deadline,
            "pickup jobs did not finish within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    shutdown.cancel();
    let _ = workers.await;
    let mut pickups: Vec<f64> = sqlx::query_scalar(
        "SELECT (EXTRACT(EPOCH FROM started_at - created_at) * 1000)::float8 FROM export_jobs",
    )
    .fetch_all(monitor)
    .await?;
    pickups.sort_by(f64::total_cmp);
    let median = quantile(&pickups, 0.5).unwrap_or(f64::INFINITY);
    let p95 = quantile(&pickups, 0.95).unwrap_or(f64::INFINITY);
    let max = pickups.last().copied().unwrap_or(f64::INFINITY);

    let mut table = Table::new(
        "Pickup latency (idle WorkerPool, poll interval 1000 ms, 200 jobs enqueued 10 ms apart)",
        &["jobs", "median ms", "p95 ms", "max ms"],
    );
    table.row(vec![
        thousands(pickups.len() as u64),
        format!("{median:.1}"),
        format!("{p95:.1}"),
        format!("{max:.1}"),
    ]);
    table.note(format!(
        "- pickup = started_at − created_at; target median < 50 ms: {}",
        verdict(median < 50.0)
    ));
    table.print();
    Ok(())
}
