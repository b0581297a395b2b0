//! Exports end to end: HTTP API → queue → worker → emulator → archive → Garage → download link.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use logexport::config::{Config, Secret, StorageKind};
use logexport::emulator::{EventFilter, Faults, RunningEmulator};
use logexport::storage::ObjectStore;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::helpers::{
    TempDir, TestApp, assert_newest_first, emulator_with_events, garage_s3_config, spawn_app_with,
    spawn_export_worker, test_config, test_db, use_emulator,
};

const TOKEN: &str = "splunk-test-token";

/// The known data set: two organizations, a user namespace, several repositories, performers
/// (robots too), and events at the exact range edges.
pub fn dataset() -> Vec<Value> {
    let mut events = Vec::new();
    let base = Utc
        .with_ymd_and_hms(2024, 1, 1, 0, 0, 0)
        .unwrap()
        .timestamp();
    for i in 0..600i64 {
        let namespace = ["acme", "other", "alice"][(i % 3) as usize];
        let repository = ["web", "api", "db"][(i / 3 % 3) as usize];
        let performer = if i % 7 == 0 {
            format!("{namespace}+deployer")
        } else {
            format!("user{}", i % 5)
        };
        let kind = ["push_repo", "pull_repo", "create_tag", "delete_tag"][(i % 4) as usize];
        let metadata = if i % 2 == 0 {
            json!({"tag": format!("v{i}"), "n": i})
        } else {
            json!(format!("{{\"tag\": \"v{i}\"}}"))
        };
        events.push(json!({
            "kind": kind,
            "account": namespace,
            "repository": repository,
            "performer": performer,
            "performer_email": format!("user{}@example.com", i % 5),
            "performer_kind": if i % 7 == 0 { "robot" } else { "user" },
            "ip": format!("10.0.{}.{}", i % 256, i % 100),
            "metadata_json": metadata,
            // Spread over 2024-01-01 .. 2024-01-31, plus a few in February.
            "datetime": base + i * 4_700,
        }));
    }
    // Exactly at the edges of January (start inclusive, end exclusive).
    for (t, label) in [
        (base, "start-edge"),
        (base + 31 * 86_400, "end-edge"),
        (base + 31 * 86_400 - 1, "last-second"),
    ] {
        events.push(
            json!({"kind": "push_repo", "account": "acme", "repository": "web", "performer": "edge",
                           "metadata_json": {"label": label}, "ip": "192.0.2.1", "datetime": t}),
        );
    }
    // Unmappable: no kind.
    events.push(json!({"account": "acme", "repository": "web", "datetime": base + 100}));
    events
}

/// Everything an export needs, running.
pub struct ExportEnv {
    pub app: TestApp,
    pub emulator: RunningEmulator,
    pub store: Arc<dyn ObjectStore>,
    pub prefix: String,
    pub admin: String,
    worker_stop: CancellationToken,
    _data: TempDir,
}

impl Drop for ExportEnv {
    fn drop(&mut self) {
        self.worker_stop.cancel();
    }
}

impl ExportEnv {
    /// Starts the emulator with `events`, the API and one worker process, storing in Garage.
    pub async fn start(events: &[Value], adjust: impl FnOnce(&mut Config)) -> Self {
        let data = TempDir::new("logexport-it");
        let emulator = emulator_with_events(&data.0, TOKEN, events).await;
        let (url, pool) = test_db().await;
        let mut config = test_config(&url);
        use_emulator(&mut config, &emulator, TOKEN);
        config.splunk.max_retries = 3;
        config.storage.kind = StorageKind::S3;
        config.storage.s3 = garage_s3_config();
        let prefix = format!("it-{}/", uuid::Uuid::new_v4().simple());
        config.export.object_prefix = prefix.clone();
        adjust(&mut config);

        let store = logexport::storage::open(&config)
            .await
            .expect("storage")
            .objects;
        let worker_stop = CancellationToken::new();
        spawn_export_worker(pool.clone(), &config, &worker_stop).await;
        let app = spawn_app_with(pool, config).await;
        let admin = app.token("alice", &["acme"], &[], false).await;
        Self {
            app,
            emulator,
            store,
            prefix,
            admin,
            worker_stop,
            _data: data,
        }
    }

    /// Requests an NDJSON export of acme's January and returns its id.
    pub async fn request_january_ndjson(&self) -> String {
        self.request(
            &format!("/api/v1/organization/acme/exportlogs?{JANUARY}"),
            json!({"callback_email": "a@example.com", "format": "ndjson"}),
        )
        .await
    }

    /// Requests an export and returns its id.
    pub async fn request(&self, path: &str, body: Value) -> String {
        self.app.request_export(&self.admin, path, &body).await
    }

    /// Polls the export's status document until `done` holds for it, and returns it.
    pub async fn status_until(
        &self,
        id: &str,
        secs: u64,
        what: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        self.app
            .status_until(&self.admin, id, secs, what, done)
            .await
    }

    /// Waits until the export reaches a terminal state and returns its status document.
    pub async fn finished(&self, id: &str) -> Value {
        self.app.finished(&self.admin, id).await
    }

    /// The ground truth for a namespace/repository over January 2024.
    pub fn expected(
        &self,
        namespace: &str,
        repository: Option<&str>,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
    ) -> Vec<Value> {
        self.emulator.events_in(&EventFilter {
            namespace: Some(namespace.into()),
            repository: repository.map(Into::into),
            earliest: Some(start),
            latest: Some(end),
            ..EventFilter::default()
        })
    }

    /// Starts a notifier process (mail and callbacks) with the app's configuration.
    pub fn start_notifier(&self) -> (CancellationToken, tokio::task::JoinHandle<()>) {
        let config = &self.app.config;
        let mailer = logexport::notify::mailer_from_config(&config.email).expect("mailer");
        let notifier = logexport::worker::Notifier::new(self.app.pool.clone(), config, mailer)
            .expect("notifier");
        let stop = CancellationToken::new();
        let listener = logexport::queue::QueueListener::spawn(self.app.pool.clone(), stop.clone());
        (stop.clone(), tokio::spawn(notifier.run(listener, stop)))
    }
}

pub async fn download(url: &str) -> reqwest::Response {
    reqwest::get(url).await.expect("download")
}

/// Decompresses with the `zstd` command-line tool (Debian `zstd`), as an operator would.
pub fn unzstd_cli(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("zstd")
        .args(["-d", "-c", "-q"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("the zstd CLI is installed (deploy/test.sh installs it)");
    let mut stdin = child.stdin.take().unwrap();
    let input = bytes.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap().unwrap();
    assert!(out.status.success(), "zstd -d failed: {:?}", out.status);
    out.stdout
}

pub fn gunzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::MultiGzDecoder::new(bytes)
        .read_to_end(&mut out)
        .expect("valid gzip");
    out
}

/// Reduces a log object (or an emulator event) to the facts both must agree on.
pub fn fingerprint_log(log: &Value) -> String {
    let when = DateTime::parse_from_rfc2822(log["datetime"].as_str().unwrap())
        .unwrap()
        .timestamp();
    let performer = log["performer"]["name"].as_str().unwrap_or_default();
    let meta = &log["metadata"];
    format!(
        "{when}|{}|{performer}|{}|{}",
        log["kind"].as_str().unwrap(),
        log["ip"].as_str().unwrap_or_default(),
        meta["tag"]
            .as_str()
            .or(meta["label"].as_str())
            .unwrap_or_default()
    )
}

pub fn fingerprint_event(event: &Value) -> Option<String> {
    event.get("kind")?;
    let meta = match &event["metadata_json"] {
        Value::String(s) => serde_json::from_str(s).unwrap(),
        other => other.clone(),
    };
    Some(format!(
        "{}|{}|{}|{}|{}",
        event["datetime"].as_i64().unwrap(),
        event["kind"].as_str().unwrap(),
        event["performer"].as_str().unwrap_or_default(),
        event["ip"].as_str().unwrap_or_default(),
        meta["tag"]
            .as_str()
            .or(meta["label"].as_str())
            .unwrap_or_default()
    ))
}

/// The fingerprints of the logs in an uncompressed archive of `format` (json, ndjson or csv),
/// comparable with [`fingerprint_event`]'s.
pub fn archive_fingerprints(format: &str, text: &str) -> Vec<String> {
    match format {
        "json" => {
            let doc: Value = serde_json::from_str(text).expect("the archive parses as JSON");
            doc["logs"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|l| l.get("terminator").is_none())
                .map(fingerprint_log)
                .collect()
        }
        "ndjson" => text
            .lines()
            .map(|l| fingerprint_log(&serde_json::from_str(l).unwrap()))
            .collect(),
        "csv" => {
            let rows = parse_csv_rows(text);
            assert_eq!(
                rows[0].join(","),
                "datetime,kind,namespace,repository,performer,performer_is_robot,ip,metadata"
            );
            rows[1..]
                .iter()
                .map(|r| {
                    let when = DateTime::parse_from_rfc3339(&r[0]).unwrap().timestamp();
                    let meta: Value = serde_json::from_str(&r[7]).unwrap();
                    format!(
                        "{when}|{}|{}|{}|{}",
                        r[1],
                        r[4],
                        r[6],
                        meta["tag"]
                            .as_str()
                            .or(meta["label"].as_str())
                            .unwrap_or_default()
                    )
                })
                .collect()
        }
        other => panic!("no such format: {other}"),
    }
}

pub fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

pub fn parse_csv_rows(text: &str) -> Vec<Vec<String>> {
    // RFC 4180: quoted fields may hold commas, quotes (doubled) and line breaks.
    let (mut rows, mut row, mut field, mut quoted, mut chars) = (
        Vec::new(),
        Vec::new(),
        String::new(),
        false,
        text.chars().peekable(),
    );
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                field.push('"');
                chars.next();
            }
            (true, '"') => quoted = false,
            (true, c) => field.push(c),
            (false, '"') => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut field)),
            (false, '\r') => {}
            (false, '\n') => {
                row.push(std::mem::take(&mut field));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => field.push(c),
        }
    }
    if !field.is_empty() || !row.is_empty() {
        row.push(field);
        rows.push(row);
    }
    rows
}

pub fn january() -> (DateTime<Utc>, DateTime<Utc>) {
    (
        Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap(),
        Utc.with_ymd_and_hms(2024, 2, 1, 0, 0, 0).unwrap(),
    )
}

pub const JANUARY: &str = "starttime=01/01/2024&endtime=01/31/2024";

#[tokio::test]
async fn archives_hold_exactly_the_namespaces_events_in_every_format() {
    let env = ExportEnv::start(&dataset(), |_| {}).await;
    let (start, end) = january();
    let expected = sorted(
        env.expected("acme", None, start, end)
            .iter()
            .filter_map(fingerprint_event)
            .collect(),
    );
    assert!(
        expected.len() > 150,
        "data set too small: {}",
        expected.len()
    );
    assert!(
        expected.iter().any(|e| e.ends_with("start-edge"))
            && expected.iter().any(|e| e.ends_with("last-second"))
    );
    assert!(!expected.iter().any(|e| e.ends_with("end-edge")));

    let path = format!("/api/v1/organization/acme/exportlogs?{JANUARY}");
    let mut results = Vec::new();
    for (format, compression) in [
        ("json", "none"),
        ("json", "gzip"),
        ("ndjson", "none"),
        ("csv", "gzip"),
        ("json", "zstd"),
        ("csv", "zstd"),
    ] {
        let id = env.request(&path, json!({"callback_email": "admin@example.com", "format": format, "compression": compression})).await;
        let status = env.finished(&id).await;
        assert_eq!(status["state"], "succeeded", "{status}");
        assert_eq!(status["status"], "success");
        assert_eq!(
            status["logs_exported"].as_u64().unwrap() as usize,
            expected.len()
        );
        assert_eq!(
            status["logs_skipped"], 1,
            "the event without a kind is counted and skipped"
        );
        let link = status["exported_data_url"].as_str().expect("link");
        let response = download(link).await;
        assert_eq!(response.status(), 200);
        let disposition = response.headers()["content-disposition"]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(disposition.contains("attachment"), "{disposition}");
        let response_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_owned();
        let mut bytes = response.bytes().await.unwrap().to_vec();
        assert_eq!(
            bytes.len() as u64,
            status["bytes_written"].as_u64().unwrap()
        );
        if compression == "gzip" {
            bytes = gunzip(&bytes);
        }
        if compression == "zstd" {
            assert_eq!(response_type, "application/zstd");
            bytes = unzstd_cli(&bytes);
        }
        let text = String::from_utf8(bytes).unwrap();
        if format == "json" {
            let doc: Value = serde_json::from_str(&text).expect("the archive parses as JSON");
            assert_eq!(doc["export_id"], id.as_str());
            assert_eq!(doc["details"]["namespace"], "acme");
            let logs = doc["logs"].as_array().unwrap();
            assert_eq!(logs.last().unwrap(), &json!({"terminator": true}));
        }
        if format == "csv" {
            let rows = parse_csv_rows(&text);
            assert!(rows[1..].iter().all(|r| r[2] == "acme"));
        }
        let prints = archive_fingerprints(format, &text);
        let prints = sorted(prints);
        assert_eq!(
            prints, expected,
            "{format}+{compression} differs from the emulator's data"
        );
        results.push(prints);
    }
    assert_eq!(
        env.emulator.stats().search_jobs_created,
        0,
        "exports read through the export endpoint"
    );
    assert!(
        (expected.len() as u64) < Config::default().export.probe_rows,
        "the namespace is smaller than the first search before planning"
    );
    assert_eq!(
        env.emulator.stats().export_requests,
        6,
        "an export no bigger than the probe is read by that one Splunk search"
    );
}

#[tokio::test]
async fn repository_user_and_empty_exports_hold_only_their_events() {
    let env = ExportEnv::start(&dataset(), |_| {}).await;
    let (start, end) = january();

    let id = env
        .request(
            &format!("/api/v1/repository/acme/api/exportlogs?{JANUARY}"),
            json!({"callback_email": "a@example.com", "format": "ndjson"}),
        )
        .await;
    let status = env.finished(&id).await;
    let text = download(status["exported_data_url"].as_str().unwrap())
        .await
        .text()
        .await
        .unwrap();
    let got = sorted(
        text.lines()
            .map(|l| fingerprint_log(&serde_json::from_str(l).unwrap()))
            .collect(),
    );
    let want = sorted(
        env.expected("acme", Some("api"), start, end)
            .iter()
            .filter_map(fingerprint_event)
            .collect(),
    );
    assert!(!want.is_empty());
    assert_eq!(got, want);

    let id = env
        .request(
            &format!("/api/v1/user/exportlogs?{JANUARY}"),
            json!({"callback_email": "a@example.com", "format": "ndjson"}),
        )
        .await;
    let status = env.finished(&id).await;
    let text = download(status["exported_data_url"].as_str().unwrap())
        .await
        .text()
        .await
        .unwrap();
    let got = sorted(
        text.lines()
            .map(|l| fingerprint_log(&serde_json::from_str(l).unwrap()))
            .collect(),
    );
    let want = sorted(
        env.expected("alice", None, start, end)
            .iter()
            .filter_map(fingerprint_event)
            .collect(),
    );
    assert_eq!(got, want);

    let id = env
        .request(
            "/api/v1/organization/acme/exportlogs?starttime=06/01/2023&endtime=06/02/2023",
            json!({"callback_email": "a@example.com"}),
        )
        .await;
    let status = env.finished(&id).await;
    assert_eq!(status["state"], "succeeded");
    assert_eq!(status["logs_exported"], 0);
    let doc: Value = download(status["exported_data_url"].as_str().unwrap())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(doc["logs"], json!([{"terminator": true}]));
}

#[tokio::test]
async fn the_link_expires_refuses_tampering_and_the_key_is_not_guessable() {
    let env = ExportEnv::start(&dataset(), |c| c.export.url_expiry_seconds = 3).await;
    let id = env
        .request(
            &format!("/api/v1/organization/acme/exportlogs?{JANUARY}"),
            json!({"callback_email": "a@example.com"}),
        )
        .await;
    let status = env.finished(&id).await;
    let link = status["exported_data_url"].as_str().unwrap().to_owned();
    let key = crate::helpers::object_key(&env.app.pool, &id).await;
    let suffix = key
        .strip_prefix(&format!("{}{id}-", env.prefix))
        .expect("key layout");
    let random = suffix.split('.').next().unwrap();
    assert!(
        random.len() >= 32 && random.chars().all(|c| c.is_ascii_hexdigit()),
        "{key}"
    );

    let signature_at = link.find("X-Amz-Signature=").expect("presigned") + "X-Amz-Signature=".len();
    let mut tampered = link.clone().into_bytes();
    tampered[signature_at] = if tampered[signature_at] == b'0' {
        b'1'
    } else {
        b'0'
    };
    assert_eq!(
        download(&String::from_utf8(tampered).unwrap())
            .await
            .status(),
        403
    );
    assert_eq!(download(&link).await.status(), 200);
    tokio::time::sleep(Duration::from_secs(4)).await;
    // Garage answers an expired presigned URL with 400 "Date is too old" (AWS says 403).
    let expired = download(&link).await;
    let status = expired.status();
    let body = expired.text().await.unwrap_or_default();
    assert!(
        status == 400 || status == 403,
        "the link outlived its expiry: {status} {body}"
    );
}

#[tokio::test]
async fn splunk_rejecting_the_token_fails_the_export_at_once() {
    let env = ExportEnv::start(&dataset(), |c| {
        c.splunk.bearer_token = Secret::new("wrong-token")
    })
    .await;
    let id = env
        .request(
            &format!("/api/v1/organization/acme/exportlogs?{JANUARY}"),
            json!({"callback_email": "a@example.com"}),
        )
        .await;
    let status = env.finished(&id).await;
    assert_eq!(status["state"], "failed");
    assert_eq!(status["attempts"], 1, "a permanent error is not retried");
    let error = status["last_error"].as_str().unwrap();
    assert!(
        error.contains("Splunk") && !error.contains("wrong-token"),
        "{error}"
    );
    assert_eq!(status["notification"]["state"], "pending");
    assert!(
        env.store
            .list_incomplete_uploads(&env.prefix)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_spool_disk_failure_is_reported_as_the_disk_not_as_splunk() {
    // The spool directory cannot be created: its parent is a file.
    let blocker = std::env::temp_dir().join(format!("logexport-it-{}", uuid::Uuid::new_v4()));
    std::fs::write(&blocker, b"not a directory").unwrap();
    let spool = blocker.join("spool");
    let env = ExportEnv::start(&dataset(), |c| {
        c.export.spool_dir = Some(spool.clone());
        c.worker.max_attempts = 1;
    })
    .await;
    let id = env
        .request(
            &format!("/api/v1/organization/acme/exportlogs?{JANUARY}"),
            json!({"callback_email": "a@example.com"}),
        )
        .await;
    let status = env.finished(&id).await;
    let _ = std::fs::remove_file(&blocker);
    assert_eq!(status["state"], "failed", "{status}");
    let error = status["last_error"].as_str().unwrap();
    assert!(error.contains("spool on local disk"), "{error}");
    assert!(!error.contains("Splunk"), "Splunk is not to blame: {error}");
    assert_eq!(
        env.emulator.stats().export_requests,
        0,
        "nothing was asked of Splunk"
    );
    // The metric names the party too.
    let metrics = env.app.metrics().await;
    let failures = |party: &str| {
        crate::helpers::metric(
            &metrics,
            &format!("logexport_export_attempt_failures_total{{outcome=\"{party}\"}}"),
        )
    };
    assert_eq!(failures("spool"), 1.0, "{metrics}");
    assert_eq!(failures("splunk"), 0.0);
}

#[tokio::test]
async fn transient_503s_are_retried_and_the_export_is_complete() {
    let env = ExportEnv::start(&dataset(), |_| {}).await;
    env.emulator.set_faults(Faults {
        rate_503: 0.5,
        ..Faults::default()
    });
    let (start, end) = january();
    let id = env.request_january_ndjson().await;
    let status = env.finished(&id).await;
    assert_eq!(status["state"], "succeeded", "{status}");
    let text = download(status["exported_data_url"].as_str().unwrap())
        .await
        .text()
        .await
        .unwrap();
    assert_eq!(
        text.lines().count(),
        env.expected("acme", None, start, end)
            .iter()
            .filter_map(fingerprint_event)
            .count()
    );
}

#[tokio::test]
async fn a_cut_stream_fails_the_attempt_and_the_retry_is_complete_without_duplicates() {
    // No re-reads of a slice within the attempt: a cut fails the attempt.
    let env = ExportEnv::start(&dataset(), |c| c.splunk.max_retries = 0).await;
    env.emulator.set_faults(Faults {
        cut_after: Some(3),
        ..Faults::default()
    });
    let (start, end) = january();
    let id = env.request_january_ndjson().await;
    let failed_once = env
        .status_until(&id, 30, "first attempt failed", |status| {
            status["state"] == "queued" && status["attempts"] == 1
        })
        .await;
    let error = failed_once["last_error"].as_str().unwrap();
    assert!(error.to_lowercase().contains("splunk"), "{error}");
    assert!(
        env.store
            .list_incomplete_uploads(&env.prefix)
            .await
            .unwrap()
            .is_empty(),
        "orphaned multipart upload"
    );
    env.emulator.set_faults(Faults::default());
    let status = env.finished(&id).await;
    assert_eq!(status["state"], "succeeded");
    assert_eq!(status["attempts"], 2);
    let text = download(status["exported_data_url"].as_str().unwrap())
        .await
        .text()
        .await
        .unwrap();
    let got: Vec<String> = text
        .lines()
        .map(|l| fingerprint_log(&serde_json::from_str(l).unwrap()))
        .collect();
    let want = sorted(
        env.expected("acme", None, start, end)
            .iter()
            .filter_map(fingerprint_event)
            .collect(),
    );
    assert_eq!(sorted(got), want, "missing or duplicated rows");
    assert!(
        env.store
            .list_incomplete_uploads(&env.prefix)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn a_slice_cut_once_is_read_again_alone_and_the_archive_is_in_order() {
    let env = ExportEnv::start(&dataset(), |c| c.splunk.max_retries = 2).await;
    // Every slice's first stream breaks after 3 rows; its second is whole.
    env.emulator.set_faults(Faults {
        cut_once_after: Some(3),
        ..Faults::default()
    });
    let (start, end) = january();
    let id = env.request_january_ndjson().await;
    let status = env.finished(&id).await;
    assert_eq!(status["state"], "succeeded", "{status}");
    assert_eq!(
        status["attempts"], 1,
        "re-reading slices kept the attempt alive"
    );
    let text = download(status["exported_data_url"].as_str().unwrap())
        .await
        .text()
        .await
        .unwrap();
    let logs: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_newest_first(&logs);
    let want = sorted(
        env.expected("acme", None, start, end)
            .iter()
            .filter_map(fingerprint_event)
            .collect(),
    );
    let got = sorted(logs.iter().map(fingerprint_log).collect());
    assert_eq!(got, want, "missing or duplicated rows");
    // Only the cut slices' first three rows were read twice.
    let slices =
        logexport::export::slices::plan(start, end, Config::default().export.slices as usize).len()
            as u64;
    let matching = env.expected("acme", None, start, end).len() as u64;
    let streamed = env.emulator.stats().events_streamed;
    assert!(
        streamed <= matching + 3 * slices,
        "{streamed} rows read for {matching} matching events"
    );
}

#[tokio::test]
async fn cancel_stops_a_running_export_and_aborts_its_upload() {
    // Sliced by time from the start, so slices are reported while the first ones are read.
    let env = ExportEnv::start(&dataset(), |c| c.export.probe_rows = 0).await;
    env.emulator.set_faults(Faults {
        slow_bytes_per_sec: Some(2_000),
        ..Faults::default()
    });
    let id = env
        .request(
            &format!("/api/v1/organization/acme/exportlogs?{JANUARY}"),
            json!({"callback_email": "a@example.com"}),
        )
        .await;
    // A running export shows its slices and an estimate of the time left.
    let running = env
        .status_until(&id, 30, "slices reported", |status| {
            status["state"] == "running" && status["slices_done"].as_i64() >= Some(1)
        })
        .await;
    let slices = Config::default().export.slices;
    assert_eq!(running["slices_total"], slices, "{running}");
    assert!(running["searches_running"].as_i64() >= Some(1), "{running}");
    assert!(
        running["estimated_seconds_left"].as_i64() >= Some(0),
        "{running}"
    );
    let response = env
        .app
        .client
        .delete(env.app.url(&format!("/api/v1/exportlogs/{id}")))
        .bearer_auth(&env.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let asked = std::time::Instant::now();
    let status = env.finished(&id).await;
    assert_eq!(status["state"], "cancelled");
    assert!(
        asked.elapsed() < Duration::from_secs(6),
        "took {:?}",
        asked.elapsed()
    );
    assert_eq!(status["notification"]["state"], "skipped");
    assert!(status["exported_data_url"].is_null());
    assert!(
        env.store
            .list_incomplete_uploads(&env.prefix)
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn the_demo_runs_end_to_end_and_checks_its_archive() {
    // README command 1, in-process: it fails unless the archive it downloads back is complete.
    logexport::demo::run().await.expect("demo");
}

/// Events that cluster: 80 % of acme's January in its first three days, at sub-second times,
/// some sharing a second (and a few other namespaces' events among them).
fn clustered() -> Vec<Value> {
    let base = Utc
        .with_ymd_and_hms(2024, 1, 1, 0, 0, 0)
        .unwrap()
        .timestamp() as f64;
    (0..3000)
        .map(|i| {
            let at = if i % 5 == 4 {
                // Spread over the 4th to the 31st.
                base + 3.0 * 86_400.0 + f64::from(i) * 800.0 + 0.5
            } else {
                // Clustered: about one event every 86 s, pairs within the same second.
                base + f64::from(i / 2) * 172.8 + f64::from(i % 2) * 0.25 + 0.125
            };
            json!({
                "kind": "push_repo",
                "account": if i % 11 == 0 { "other" } else { "acme" },
                "repository": "web",
                "performer": "alice",
                "ip": "10.0.0.1",
                "metadata_json": {"tag": format!("v{i}")},
                "datetime": at,
            })
        })
        .collect()
}

#[tokio::test]
async fn clustered_events_get_their_busy_slices_split_and_every_event_exactly_once() {
    // Six slices: the oldest holds the whole cluster, so it is still running when the five
    // light ones are done and their readers look for work to split (48 slices left that to
    // timing: the cluster spread over five slices could end before the last slice started).
    let env = ExportEnv::start(&clustered(), |c| {
        c.export.split_min_rows = 30;
        c.export.probe_rows = 0;
        c.export.slices = 6;
    })
    .await;
    // Slow searches, so the busy slices are still running when the others are done.
    env.emulator.set_faults(Faults {
        search_events_per_sec: Some(1_000),
        ..Faults::default()
    });
    let id = env.request_january_ndjson().await;
    let status = env.finished(&id).await;
    assert_eq!(status["state"], "succeeded", "{status}");
    let text = download(status["exported_data_url"].as_str().unwrap())
        .await
        .text()
        .await
        .unwrap();
    let logs: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_newest_first(&logs);
    let (start, end) = january();
    let tag = |meta: &Value| meta["tag"].as_str().map(str::to_owned);
    let want: Vec<String> = env
        .expected("acme", None, start, end)
        .iter()
        .filter_map(|e| tag(&e["metadata_json"]))
        .collect();
    let got: Vec<String> = logs.iter().filter_map(|l| tag(&l["metadata"])).collect();
    assert_eq!(got.len(), logs.len());
    assert_eq!(
        sorted(got),
        sorted(want),
        "missing or duplicated rows across split pieces"
    );
    let metrics = logexport::metrics::METRICS.render(&Default::default());
    assert!(
        crate::helpers::metric(&metrics, "logexport_export_slices_total{outcome=\"split\"}") >= 1.0,
        "no slice was split:\n{metrics}"
    );
    // A split stops the busy stream where the new piece begins: nothing is read twice.
    let matching = env.expected("acme", None, start, end).len() as u64;
    let streamed = env.emulator.stats().events_streamed;
    assert!(
        streamed <= matching + 256 * 48,
        "{streamed} rows read for {matching} matching events"
    );
}
