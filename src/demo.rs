//! The zero-setup demo (README command 1): the whole product on one machine, driven through
//! the HTTP API exactly as a registry client would, checked at the end.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{TimeZone, Utc};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::api::{self, AppState};
use crate::config::{Config, Secret, StorageKind};
use crate::emulator::{self, EmulatorOptions, EventFilter, SyntheticSpec};
use crate::queue::QueueListener;
use crate::worker::{Notifier, WorkerPool, WorkerSettings};

const EVENTS: u64 = 300_000;
const NAMESPACES: u32 = 5;
const ORG: &str = "ns0";
const SPLUNK_TOKEN: &str = "demo-splunk-token";

/// Runs the demo; fails unless the downloaded archive is complete.
pub async fn run() -> anyhow::Result<()> {
    crate::telemetry::install_crypto_provider();
    let started = Instant::now();
    let output = std::env::current_dir()?.join("demo-output");
    std::fs::create_dir_all(&output).context("creating ./demo-output")?;
    let database_url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/logexport_demo".into());

    println!("logexport demo");
    println!("  database        {}", redact(&database_url));
    crate::db::ensure_database(&database_url).await?;
    let mut config = Config::default();
    config.database.url = Secret::new(database_url);
    let pool = crate::db::connect(&config.database).await?;
    crate::db::migrate(&pool).await?;

    // Splunk: the emulator, in-process, with a deterministic synthetic data set.
    let spec = SyntheticSpec {
        count: EVENTS,
        start: Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap(),
        end: Utc.with_ymd_and_hms(2024, 1, 8, 0, 0, 0).unwrap(),
        namespaces: NAMESPACES,
        skew: 0.0,
    };
    let splunk = emulator::spawn(EmulatorOptions {
        token: Some(SPLUNK_TOKEN.into()),
        synthetic: Some(spec.clone()),
        ..EmulatorOptions::default()
    })
    .await?;
    println!(
        "  splunk          emulator at {} with {EVENTS} synthetic events in ns0..ns{}",
        splunk.base_url(),
        NAMESPACES - 1
    );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let api_addr = listener.local_addr()?;
    configure(&mut config, &output, api_addr, splunk.addr().port());
    let config = Arc::new(config);
    let storage = crate::storage::open(&config).await?;
    let shutdown = CancellationToken::new();

    let state = AppState::new(pool.clone(), config.clone()).with_storage(storage.clone());
    tokio::spawn(api::serve(listener, state, shutdown.clone()));
    let handler = crate::export::handler(&config, storage.objects.clone(), &pool)?;
    // One listener, as in `logexport work`: a finished export wakes the notifier through it.
    let queue_listener = QueueListener::spawn(pool.clone(), shutdown.clone());
    let workers = tokio::spawn({
        let pool = WorkerPool::new(
            pool.clone(),
            WorkerSettings::from_config(&config.worker),
            handler,
        );
        let (listener, shutdown) = (queue_listener.clone(), shutdown.clone());
        async move { pool.run_with(&listener, shutdown).await }
    });
    let mailer = crate::notify::mailer_from_config(&config.email)?;
    let notifier = Notifier::new(pool.clone(), &config, mailer)?;
    let notifications = tokio::spawn(notifier.run(queue_listener, shutdown.clone()));
    println!("  api             http://{api_addr}");

    let result = drive(&pool, &config, api_addr, &splunk, &spec, &output).await;
    shutdown.cancel();
    let _ = workers.await;
    let _ = notifications.await;
    splunk.shutdown().await;
    let summary = result?;
    println!();
    println!(
        "export complete in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    println!("  export id       {}", summary.export_id);
    println!(
        "  rows            {} (checked against the emulator's data)",
        summary.rows
    );
    println!("  size            {} bytes", summary.size);
    println!("  export time     {:.2} s", summary.export_seconds);
    println!("  download link   {}", summary.link);
    println!("                  (signed, valid 1 hour, served by the API while it runs)");
    println!("  archive file    {}", summary.file.display());
    println!("  e-mail          {}", summary.mail.display());
    println!(
        "  fetch it        curl -s -o export.json file://{}",
        summary.file.display()
    );
    Ok(())
}

fn configure(config: &mut Config, output: &Path, api: std::net::SocketAddr, splunk_port: u16) {
    config.server.public_url = format!("http://{api}");
    config.server.signing_key = Secret::new(format!("demo-{}", uuid::Uuid::new_v4()));
    config.splunk.host = "127.0.0.1".into();
    config.splunk.port = splunk_port;
    config.splunk.url_scheme = "http".into();
    config.splunk.bearer_token = Secret::new(SPLUNK_TOKEN);
    config.storage.kind = StorageKind::Local;
    config.storage.local.path = output.join("exported-logs");
    config.email.transport = "file".into();
    config.email.file_dir = output.join("mail");
    config.worker.poll_interval_ms = 200;
}

struct Summary {
    export_id: String,
    rows: u64,
    size: u64,
    export_seconds: f64,
    link: String,
    file: PathBuf,
    mail: PathBuf,
}

async fn drive(
    pool: &sqlx::PgPool,
    config: &Config,
    api: std::net::SocketAddr,
    splunk: &emulator::RunningEmulator,
    spec: &SyntheticSpec,
    output: &Path,
) -> anyhow::Result<Summary> {
    let token = crate::access::create_token(pool, "demo-admin", &[ORG.into()], &[], false).await?;
    let client = reqwest::Client::new();
    let url = format!(
        "http://{api}/api/v1/organization/{ORG}/exportlogs?starttime=01/01/2024&endtime=01/07/2024"
    );
    println!("\nPOST {url}");
    let response = client
        .post(&url)
        .bearer_auth(&token)
        .json(&serde_json::json!({"callback_email": "admin@example.com"}))
        .send()
        .await?;
    let status = response.status();
    let body: Value = response.json().await?;
    if !status.is_success() {
        bail!("the API refused the export: {status} {body}");
    }
    let export_id = body["export_id"]
        .as_str()
        .context("no export_id")?
        .to_owned();
    println!("  -> {body}");

    let status_url = format!("http://{api}/api/v1/exportlogs/{export_id}");
    let deadline = Instant::now() + Duration::from_secs(300);
    let done = loop {
        let status: Value = client
            .get(&status_url)
            .bearer_auth(&token)
            .send()
            .await?
            .json()
            .await?;
        let state = status["state"].as_str().unwrap_or_default().to_owned();
        println!(
            "  {:<10} {:>8} logs  {:>11} bytes  notification: {}",
            state,
            status["logs_exported"],
            status["bytes_written"],
            status["notification"]["state"].as_str().unwrap_or_default()
        );
        let notified = matches!(
            status["notification"]["state"].as_str(),
            Some("delivered" | "failed")
        );
        if state != "queued" && state != "running" && notified {
            break status;
        }
        if Instant::now() > deadline {
            bail!("the export did not finish within 5 minutes: {status}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    if done["state"] != "succeeded" {
        bail!("the export ended {}: {}", done["state"], done["last_error"]);
    }

    let link = done["exported_data_url"]
        .as_str()
        .context("no download link")?
        .to_owned();
    let archive = client
        .get(&link)
        .send()
        .await?
        .error_for_status()?
        .bytes()
        .await?;
    let doc: Value = serde_json::from_slice(&archive).context("the archive is not valid JSON")?;
    let logs = doc["logs"]
        .as_array()
        .context("the archive has no logs array")?;
    if logs.last() != Some(&serde_json::json!({"terminator": true})) {
        bail!("the archive does not end with the terminator");
    }
    let rows = (logs.len() - 1) as u64;
    let expected = splunk
        .events_in(&EventFilter {
            namespace: Some(ORG.into()),
            earliest: Some(spec.start),
            latest: Some(Utc.with_ymd_and_hms(2024, 1, 8, 0, 0, 0).unwrap()),
            ..EventFilter::default()
        })
        .len() as u64;
    if rows != expected || done["logs_exported"].as_u64() != Some(rows) {
        bail!("the archive holds {rows} logs; the emulator has {expected}");
    }
    let started = parse_time(&done["started_at"])?;
    let finished = parse_time(&done["finished_at"])?;
    let key: String = sqlx::query_scalar("SELECT object_key FROM export_jobs WHERE id = $1::uuid")
        .bind(&export_id)
        .fetch_one(pool)
        .await?;
    let file = config.storage.local.path.join(key.replace('/', "_"));
    let file = if file.exists() {
        file
    } else {
        find_newest(&config.storage.local.path)?
    };
    Ok(Summary {
        export_id,
        rows,
        size: archive.len() as u64,
        export_seconds: (finished - started).num_milliseconds() as f64 / 1000.0,
        link,
        file,
        mail: find_newest(&output.join("mail"))?,
    })
}

fn parse_time(value: &Value) -> anyhow::Result<chrono::DateTime<Utc>> {
    let text = value.as_str().context("missing timestamp")?;
    Ok(chrono::DateTime::parse_from_rfc3339(text)?.with_timezone(&Utc))
}

fn find_newest(dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .filter(|e| e.path().is_file())
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
        .map(|e| e.path())
        .with_context(|| format!("nothing written to {}", dir.display()))
}

fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}
