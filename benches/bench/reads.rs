//! Read side: first page, page 500 and a 31-day aggregate of `GET …/logs` / `…/aggregatelogs` on
//! a namespace with 1,000,000 events (the epic's success criterion: each under 1 s at p95).

use std::sync::Arc;

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
    let report = logexport::logs::bench::bench_read_side(
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
