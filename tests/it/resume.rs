//! Checkpoints: an attempt that fails or dies after some slices leaves a checkpoint, and the
//! next attempt continues the same upload, reading only the slices after it.

use std::collections::HashSet;
use std::io::Read;

use chrono::{TimeZone, Utc};
use logexport::config::{Config, StorageKind};
use logexport::emulator::{self, EmulatorOptions, Faults, RunningEmulator, SyntheticSpec};
use logexport::worker::{WorkerPool, WorkerSettings};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::helpers::{
    TestApp, assert_newest_first, eventually, garage_s3_config, spawn_app_with,
    spawn_export_worker, test_config, test_db, use_emulator,
};

const TOKEN: &str = "resume-token";
const EVENTS: u64 = 40_000;

/// 40,000 synthetic events in January 2024, read at `per_sec` events/s per search.
async fn splunk(per_sec: u64) -> RunningEmulator {
    emulator::spawn(EmulatorOptions {
        token: Some(TOKEN.into()),
        synthetic: Some(SyntheticSpec {
            count: EVENTS,
            start: Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap(),
            end: Utc.with_ymd_and_hms(2024, 2, 1, 0, 0, 0).unwrap(),
            namespaces: 1,
            skew: 0.0,
        }),
        faults: Faults {
            search_events_per_sec: Some(per_sec),
            ..Faults::default()
        },
        ..EmulatorOptions::default()
    })
    .await
    .expect("emulator")
}

fn configure(config: &mut Config, emu: &RunningEmulator) {
    use_emulator(config, emu, TOKEN);
    // A cut slice fails the attempt at once: the next attempt has to continue it.
    config.splunk.max_retries = 0;
    config.worker.max_attempts = 3;
    config.export.object_prefix = format!("it-{}/", uuid::Uuid::new_v4().simple());
    // Sliced by time: the cuts these tests make land in slices, not in the first search.
    config.export.probe_rows = 0;
}

async fn request(app: &TestApp, token: &str, compression: &str) -> String {
    let body = serde_json::json!({
        "callback_email": "ops@example.com", "format": "ndjson", "compression": compression,
    });
    let r = app
        .post_export(
            token,
            "/api/v1/organization/ns0/exportlogs?starttime=01/01/2024&endtime=01/31/2024",
            &body.to_string(),
        )
        .await;
    assert_eq!(r.status(), 200);
    let body: Value = r.json().await.unwrap();
    body["export_id"].as_str().unwrap().to_owned()
}

/// Slices the export's checkpoint says are in the upload.
async fn slices_done(app: &TestApp, id: &str) -> Option<u64> {
    let checkpoint: Option<Value> =
        sqlx::query_scalar("SELECT checkpoint FROM export_jobs WHERE id = $1::uuid")
            .bind(id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    checkpoint?["slices_done"].as_u64()
}

async fn finished(app: &TestApp, token: &str, id: &str) -> Value {
    eventually(120, "export finished", || async {
        let s: Value = app.export_status(token, id).await.json().await.ok()?;
        matches!(s["state"].as_str(), Some("succeeded" | "failed")).then_some(s)
    })
    .await
}

/// The archive: from its local file when `local` is the storage directory, else by its link.
async fn archive_bytes(
    app: &TestApp,
    id: &str,
    status: &Value,
    local: Option<&std::path::PathBuf>,
) -> Vec<u8> {
    let Some(dir) = local else {
        let link = status["exported_data_url"].as_str().unwrap();
        return reqwest::get(link)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .to_vec();
    };
    let key = crate::helpers::object_key(&app.pool, id).await;
    std::fs::read(dir.join(key.replace('/', "_"))).expect("the archive file")
}

/// Every event exactly once, newest first, in an NDJSON archive (gzip: several members).
fn check_archive(status: &Value, bytes: &[u8]) {
    assert_eq!(status["state"], "succeeded", "{status}");
    assert_eq!(status["logs_exported"], EVENTS);
    assert_eq!(status["bytes_written"], bytes.len() as u64);
    let mut text = String::new();
    if bytes.starts_with(&[0x1f, 0x8b]) {
        flate2::read::MultiGzDecoder::new(bytes)
            .read_to_string(&mut text)
            .unwrap();
    } else {
        text = String::from_utf8(bytes.to_vec()).unwrap();
    }
    let logs: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(logs.len() as u64, EVENTS);
    assert_newest_first(&logs);
    let distinct: HashSet<String> = logs.iter().map(Value::to_string).collect();
    assert_eq!(distinct.len() as u64, EVENTS, "no event twice");
}

#[tokio::test]
async fn a_failed_attempt_is_continued_in_the_same_multipart_upload() {
    // Every stream is cut after 10 rows once the first checkpoint is recorded.
    fails_then_resumes(true, |rate| Faults {
        search_events_per_sec: Some(rate),
        cut_after: Some(10),
        ..Faults::default()
    })
    .await;
}

#[tokio::test]
async fn quota_answers_past_the_retry_budget_are_continued_from_the_checkpoint() {
    fails_then_resumes(false, |rate| Faults {
        search_events_per_sec: Some(rate),
        rate_503: 1.0,
        ..Faults::default()
    })
    .await;
}

/// An export that fails once it checkpointed some slices (by `fault`) continues in its second
/// attempt from the checkpoint, on S3 (the same multipart upload) or local storage.
async fn fails_then_resumes(s3: bool, fault: impl Fn(u64) -> Faults) {
    const RATE: u64 = 3_000;
    let emu = splunk(RATE).await;
    let (url, pool) = test_db().await;
    let mut config = test_config(&url);
    configure(&mut config, &emu);
    let archives = std::env::temp_dir().join(format!("logexport-resume-{}", uuid::Uuid::new_v4()));
    if s3 {
        config.storage.kind = StorageKind::S3;
        config.storage.s3 = garage_s3_config();
    } else {
        std::fs::create_dir_all(&archives).unwrap();
        config.storage.kind = StorageKind::Local;
        config.storage.local.path = archives.clone();
    }
    let prefix = config.export.object_prefix.clone();
    let app = spawn_app_with(pool.clone(), config.clone()).await;
    config.server.public_url = app.config.server.public_url.clone();
    let storage = logexport::storage::open(&config).await.expect("storage");
    let handler =
        logexport::export::handler(&config, storage.objects.clone(), &pool).expect("handler");
    let stop = CancellationToken::new();
    tokio::spawn(
        WorkerPool::new(pool, WorkerSettings::from_config(&config.worker), handler)
            .run(stop.clone()),
    );
    let token = app.token("admin", &["ns0"], &[], false).await;
    // Uncompressed: S3 checkpoints need a minimum part (5 MiB) of archive between them.
    let id = request(&app, &token, "none").await;

    let done = eventually(60, "a checkpoint", || async {
        slices_done(&app, &id).await.filter(|n| *n >= 3)
    })
    .await;
    emu.set_faults(fault(RATE));
    eventually(60, "the first attempt failed", || async {
        let s: Value = app.export_status(&token, &id).await.json().await.ok()?;
        (s["state"] == "queued" && s["attempts"] == 1).then_some(())
    })
    .await;
    let checkpointed = slices_done(&app, &id)
        .await
        .expect("the checkpoint outlives the attempt");
    assert!(checkpointed >= done);
    assert_eq!(
        storage
            .objects
            .list_incomplete_uploads(&prefix)
            .await
            .unwrap()
            .len(),
        1,
        "the upload is kept for the next attempt"
    );
    let read_by_first = emu.stats().events_streamed;
    emu.set_faults(Faults::default());

    let status = finished(&app, &token, &id).await;
    assert_eq!(status["attempts"], 2);
    let bytes = archive_bytes(&app, &id, &status, (!s3).then_some(&archives)).await;
    check_archive(&status, &bytes);
    let read_by_second = emu.stats().events_streamed - read_by_first;
    assert!(
        read_by_second < EVENTS * 95 / 100,
        "the second attempt read {read_by_second} rows: it did not skip the checkpointed slices"
    );
    assert!(
        storage
            .objects
            .list_incomplete_uploads(&prefix)
            .await
            .unwrap()
            .is_empty(),
        "no upload left behind"
    );
    stop.cancel();
    let _ = std::fs::remove_dir_all(&archives);
}

#[tokio::test]
async fn a_killed_workers_export_is_continued_by_another_after_its_lease() {
    let emu = splunk(10_000).await;
    let (url, pool) = test_db().await;
    let archives = std::env::temp_dir().join(format!("logexport-resume-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&archives).unwrap();
    let mut config = test_config(&url);
    configure(&mut config, &emu);
    config.storage.kind = StorageKind::Local;
    config.storage.local.path = archives.clone();
    config.worker.lease_seconds = 3;
    let app = spawn_app_with(pool.clone(), config.clone()).await;
    let token = app.token("admin", &["ns0"], &[], false).await;
    config.server.public_url = app.config.server.public_url.clone();

    // A real worker process, killed without warning once it checkpointed some slices.
    let mut worker = tokio::process::Command::new(env!("CARGO_BIN_EXE_logexport"))
        .arg("work")
        .current_dir(&archives)
        .env("DATABASE_URL", &url)
        .env("LOGEXPORT_SPLUNK__HOST", "127.0.0.1")
        .env("LOGEXPORT_SPLUNK__PORT", emu.addr().port().to_string())
        .env("LOGEXPORT_SPLUNK__URL_SCHEME", "http")
        .env("LOGEXPORT_SPLUNK__BEARER_TOKEN", TOKEN)
        .env("LOGEXPORT_STORAGE__KIND", "local")
        .env("LOGEXPORT_STORAGE__LOCAL__PATH", &archives)
        .env("LOGEXPORT_SERVER__PUBLIC_URL", &config.server.public_url)
        .env(
            "LOGEXPORT_EXPORT__OBJECT_PREFIX",
            &config.export.object_prefix,
        )
        .env("LOGEXPORT_WORKER__LEASE_SECONDS", "3")
        .env("LOGEXPORT_EXPORT__PROBE_ROWS", "0")
        .env("LOGEXPORT_EMAIL__TRANSPORT", "none")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("run the logexport binary");
    let id = request(&app, &token, "gzip").await;
    eventually(60, "a checkpoint", || async {
        slices_done(&app, &id).await.filter(|n| *n >= 10)
    })
    .await;
    worker.kill().await.expect("kill the worker");
    let read_by_first = emu.stats().events_streamed;

    // Another worker takes the job over once the dead one's lease ran out.
    let stop = CancellationToken::new();
    spawn_export_worker(pool, &config, &stop).await;
    let status = finished(&app, &token, &id).await;
    assert_eq!(status["attempts"], 2);
    let bytes = archive_bytes(&app, &id, &status, Some(&archives)).await;
    check_archive(&status, &bytes);
    let read = emu.stats().events_streamed;
    assert!(
        read <= EVENTS * 115 / 100,
        "{read} rows read from Splunk for {EVENTS} exported (first attempt: {read_by_first})"
    );
    stop.cancel();
    let _ = std::fs::remove_dir_all(&archives);
}
