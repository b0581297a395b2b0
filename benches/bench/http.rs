//! Section 3: `POST .../exportlogs` throughput and latency against the in-process API.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use logexport::api::{self, AppState};
use logexport::config::Config;
use tokio_util::sync::CancellationToken;

use crate::db::Databases;
use crate::table::{Table, millis, quantile, rate, thousands, verdict};

const ORGS: usize = 16;
const WARMUP: Duration = Duration::from_secs(1);

/// What one client task saw.
#[derive(Default)]
struct ClientResult {
    latencies: Vec<Duration>,
    errors: u64,
    first_error: Option<String>,
}

/// Runs section 3 and prints its table.
pub async fn run(
    databases: &Databases,
    seconds: Duration,
    concurrency: usize,
) -> anyhow::Result<()> {
    let (_, pool) = databases.fresh("http", concurrency.min(32) as u32).await?;
    let orgs: Vec<String> = (0..ORGS).map(|i| format!("benchorg{i}")).collect();
    let token = logexport::access::create_token(&pool, "bench", &orgs, &[], false).await?;
    let state = AppState::new(pool.clone(), Arc::new(Config::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the API listener")?;
    let base = format!("http://{}", listener.local_addr()?);
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(api::serve(listener, state, shutdown.clone()));

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .context("building the HTTP client")?;
    // Warm up connections and the pool, then measure.
    drive(&client, &base, &token, &orgs, concurrency, WARMUP).await;
    let began = Instant::now();
    let results = drive(&client, &base, &token, &orgs, concurrency, seconds).await;
    let elapsed = began.elapsed();
    shutdown.cancel();
    let _ = server.await;
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM export_jobs")
        .fetch_one(&pool)
        .await?;
    pool.close().await;

    let mut latencies: Vec<Duration> = results
        .iter()
        .flat_map(|r| r.latencies.iter().copied())
        .collect();
    latencies.sort_unstable();
    let errors: u64 = results.iter().map(|r| r.errors).sum();
    if let Some(e) = results.iter().find_map(|r| r.first_error.clone()) {
        eprintln!("first HTTP error: {e}");
    }
    let ok = latencies.len() as u64;
    let per_sec = ok as f64 / elapsed.as_secs_f64();
    let pct = |q| quantile(&latencies, q).map_or_else(|| "-".into(), millis);
    let p99 = quantile(&latencies, 0.99).unwrap_or(Duration::MAX);

    let mut table = Table::new(
        format!(
            "HTTP enqueue (`POST /api/v1/organization/<org>/exportlogs`, {concurrency} in flight, {:.0} s)",
            elapsed.as_secs_f64()
        ),
        &[
            "requests", "errors", "req/s", "p50 ms", "p95 ms", "p99 ms", "max ms",
        ],
    );
    table.row(vec![
        thousands(ok),
        thousands(errors),
        rate(per_sec),
        pct(0.50),
        pct(0.95),
        pct(0.99),
        latencies.last().copied().map_or_else(|| "-".into(), millis),
    ]);
    table.note(format!(
        "- targets: ≥ 2,000 req/s ({}), p99 < 25 ms ({}); {} export rows in the database",
        verdict(per_sec >= 2000.0),
        verdict(p99 < Duration::from_millis(25)),
        thousands(rows.max(0) as u64)
    ));
    table.print();
    anyhow::ensure!(errors == 0, "{errors} requests failed");
    Ok(())
}

/// `concurrency` tasks each sending one request at a time until `duration` has passed.
async fn drive(
    client: &reqwest::Client,
    base: &str,
    token: &str,
    orgs: &[String],
    concurrency: usize,
    duration: Duration,
) -> Vec<ClientResult> {
    let deadline = Instant::now() + duration;
    let tasks: Vec<_> = (0..concurrency)
        .map(|task| {
            let client = client.clone();
            let urls: Vec<String> = orgs
                .iter()
                .map(|org| {
                    format!(
                        "{base}/api/v1/organization/{org}/exportlogs?starttime=01/01/2024&endtime=01/31/2024"
                    )
                })
                .collect();
            let auth = format!("Bearer {token}");
            tokio::spawn(async move {
                let mut result = ClientResult::default();
                let mut i = task;
                while Instant::now() < deadline {
                    let url = &urls[i % urls.len()];
                    i += 1;
                    let sent = Instant::now();
                    let response = client
                        .post(url)
                        .header("authorization", &auth)
                        .header("content-type", "application/json")
                        .body(r#"{"callback_email": "a@example.com"}"#)
                        .send()
                        .await;
                    let outcome = match response {
                        Ok(r) if r.status().is_success() => r.bytes().await.map_err(|e| e.to_string()),
                        Ok(r) => Err(format!("{} {}", r.status(), r.text().await.unwrap_or_default())),
                        Err(e) => Err(e.to_string()),
                    };
                    match outcome {
                        Ok(_) => result.latencies.push(sent.elapsed()),
                        Err(e) => {
                            result.errors += 1;
                            result.first_error.get_or_insert(e);
                        }
                    }
                }
                result
            })
        })
        .collect();
    let mut results = Vec::with_capacity(tasks.len());
    for task in tasks {
        if let Ok(r) = task.await {
            results.push(r);
        }
    }
    results
}
