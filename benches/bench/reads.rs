//! Read side: first page, page 500 and a 31-day aggregate of `GET …/logs` / `…/aggregatelogs` on
//! a namespace with 1,000,000 events (the epic's success criterion: each under 1 s at p95).

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{TimeZone, Utc};
use logexport::api::{self, AppState};
use logexport::config::{Config, Secret};
use logexport::emulator::{self, EmulatorOptions, SyntheticSpec};
use tokio_util::sync::CancellationToken;

use crate::db::Databases;

const EVENTS: u64 = 1_000_000;
const RUNS: usize = 20;

/// Runs the section and prints its table.
pub async fn run(databases: &Databases) -> anyhow::Result<()> {
    let splunk = emulator::spawn(EmulatorOptions {
        token: Some("bench-token".into()),
        synthetic: Some(SyntheticSpec {
            count: EVENTS,
            start: Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap(),
            end: Utc.with_ymd_and_hms(2024, 2, 1, 0, 0, 0).unwrap(),
            namespaces: 1,
            skew: 0.0,
        }),
        ..EmulatorOptions::default()
    })
    .await?;
    let (url, pool) = databases.fresh("reads", 8).await?;
    let mut config = Config::default();
    config.database.url = Secret::new(url);
    config.splunk.host = "127.0.0.1".into();
    config.splunk.port = splunk.addr().port();
    config.splunk.url_scheme = "http".into();
    config.splunk.bearer_token = Secret::new("bench-token");
    config.logs.page_token_key = Secret::new("bench-page-token-key");
    let token =
        logexport::access::create_token(&pool, "bench", &["ns0".into()], &[], false).await?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .context("bind")?;
    let base = format!("http://{}", listener.local_addr()?);
    let shutdown = CancellationToken::new();
    let state = AppState::new(pool.clone(), Arc::new(config));
    let server = tokio::spawn(api::serve(listener, state, shutdown.clone()));

    println!("## Log listings (1,000,000 events in one namespace, {RUNS} runs each)\n");
    let report = bench_read_side(
        &reqwest::Client::new(),
        &base,
        &token,
        "starttime=01/01/2024&endtime=01/31/2024",
        RUNS,
    )
    .await;
    shutdown.cancel();
    let _ = server.await;
    pool.close().await;
    splunk.shutdown().await;
    println!("```\n{}\n```\n", report?);
    Ok(())
}

/// Measures `GET /api/v1/organization/ns0/{logs,aggregatelogs}` on the service at `base_url`
/// (`http://host:port`) with `runs` repetitions each; `range` is the query string of the range
/// (e.g. `starttime=01/01/2024&endtime=01/31/2024`). Returns a human-readable report.
async fn bench_read_side(
    client: &reqwest::Client,
    base_url: &str,
    token: &str,
    range: &str,
    runs: usize,
) -> anyhow::Result<String> {
    let logs = format!("{base_url}/api/v1/organization/ns0/logs?{range}");
    let get = |url: String| async move {
        let started = Instant::now();
        let body: serde_json::Value = client
            .get(&url)
            .bearer_auth(token)
            .send()
            .await
            .context("request")?
            .error_for_status()
            .context("status")?
            .json()
            .await
            .context("body")?;
        anyhow::ensure!(
            body.get("search_unavailable").is_none(),
            "search unavailable: {body}"
        );
        Ok::<_, anyhow::Error>((started.elapsed(), body))
    };
    let mut first = Vec::new();
    for _ in 0..runs {
        first.push(get(logs.clone()).await?.0);
    }
    // Walk to page 500 once, then time fetching it again with the same token.
    let mut token_500: Option<String> = None;
    let mut walk = Duration::ZERO;
    for _ in 1..500 {
        let url = match &token_500 {
            Some(t) => format!("{logs}&next_page={}", urlencoding::encode(t)),
            None => logs.clone(),
        };
        let (took, body) = get(url).await?;
        walk += took;
        token_500 = body["next_page"].as_str().map(str::to_owned);
        anyhow::ensure!(token_500.is_some(), "fewer than 500 pages");
    }
    let page_500 = format!(
        "{logs}&next_page={}",
        urlencoding::encode(token_500.as_deref().unwrap_or_default())
    );
    let mut deep = Vec::new();
    for _ in 0..runs {
        deep.push(get(page_500.clone()).await?.0);
    }
    let aggregate = format!("{base_url}/api/v1/organization/ns0/aggregatelogs?{range}");
    let mut agg = Vec::new();
    for _ in 0..runs {
        agg.push(get(aggregate.clone()).await?.0);
    }
    Ok(format!(
        "first page: {}\npage 500:   {}\n(walk to page 500: {:.1?} for 499 pages)\naggregate:  {}",
        summary(&mut first),
        summary(&mut deep),
        walk,
        summary(&mut agg)
    ))
}

fn summary(samples: &mut [Duration]) -> String {
    samples.sort_unstable();
    let at = |q: f64| {
        let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[i]
    };
    format!(
        "p50 {:.1?}  p95 {:.1?}  max {:.1?}  (n={})",
        at(0.5),
        at(0.95),
        samples.last().copied().unwrap_or_default(),
        samples.len()
    )
}
