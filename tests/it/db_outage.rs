//! The service's own Postgres stopping and starting again while exports, notifications,
//! schedules and audit events are in flight: every request meanwhile gets 503 with Retry-After,
//! and every export accepted before, during or after comes out once, with exact rows, one
//! archive, one notice and no attempt spent, with no process restarted.
//!
//! The test runs a throwaway Postgres cluster of its own (initdb + pg_ctl on a free port) so it
//! can stop it without disturbing the suite's shared server.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use logexport::config::{AuditSink, Config, Secret, StorageKind};
use logexport::emulator::{self, EmulatorOptions, Faults, RunningEmulator};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::helpers::{TestApp, eventually, spawn_app_with, test_config, use_emulator};
use crate::notify::harness::{Receiver, Reply, free_port};

const SPLUNK_TOKEN: &str = "splunk-outage-token";
/// Outages, in seconds: shorter than a lease (the workers keep their jobs through them) and
/// longer (their leases run out and the jobs are taken over when Postgres is back). Every one is
/// longer than the pool's acquire timeout.
const OUTAGES: [u64; 4] = [4, 13, 6, 13];
const ACQUIRE_TIMEOUT: u64 = 2;
const LEASE: u64 = 10;
/// Namespaces with January 2024 data, one per export requested through the API.
const NAMESPACES: usize = 24;

/// A Postgres cluster of the test's own, in a temporary directory, run as the `postgres` user
/// when the test runs as root (Postgres refuses to run as root).
struct ThrowawayPostgres {
    dir: PathBuf,
    port: u16,
}

impl ThrowawayPostgres {
    async fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("logexport-pg-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let this = Self {
            dir,
            port: free_port(),
        };
        if is_root() {
            let status = std::process::Command::new("chown")
                .args(["postgres:postgres"])
                .arg(&this.dir)
                .status()
                .unwrap();
            assert!(status.success(), "chown the cluster directory");
        }
        let data = this.data();
        this.pg(
            "initdb",
            &[
                "-D",
                data.as_str(),
                "-A",
                "trust",
                "-U",
                "postgres",
                "--no-sync",
            ],
        )
        .await;
        this.up().await;
        this
    }

    fn data(&self) -> String {
        self.dir.join("data").display().to_string()
    }

    fn url(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    async fn up(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("postgres.log").display().to_string();
        let data = self.data();
        let args = [
            "-D",
            data.as_str(),
            "-o",
            options.as_str(),
            "-l",
            log.as_str(),
            "-w",
            "start",
        ];
        self.pg("pg_ctl", &args).await;
    }

    /// Stops the server the way an outage does: open connections are cut.
    async fn down(&self) {
        let data = self.data();
        self.pg("pg_ctl", &["-D", data.as_str(), "-m", "fast", "-w", "stop"])
            .await;
    }

    async fn pg(&self, tool: &str, args: &[&str]) {
        let binary = pg_bin().join(tool);
        let mut command = if is_root() {
            let mut c = tokio::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&binary);
            c
        } else {
            tokio::process::Command::new(&binary)
        };
        let output = command
            .args(args)
            .output()
            .await
            .expect("run a Postgres tool");
        assert!(
            output.status.success(),
            "{tool} {args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

impl Drop for ThrowawayPostgres {
    fn drop(&mut self) {
        let binary = pg_bin().join("pg_ctl");
        let data = self.data();
        let args = ["-D", data.as_str(), "-m", "immediate", "-w", "stop"];
        let _ = if is_root() {
            std::process::Command::new("runuser")
                .args(["-u", "postgres", "--"])
                .arg(&binary)
                .args(args)
                .output()
        } else {
            std::process::Command::new(&binary).args(args).output()
        };
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Where `initdb` and `pg_ctl` are: `LOGEXPORT_TEST_PG_BIN`, else the newest
/// `/usr/lib/postgresql/<version>/bin` (Debian's layout), else `pg_config --bindir`.
fn pg_bin() -> PathBuf {
    if let Ok(dir) = std::env::var("LOGEXPORT_TEST_PG_BIN") {
        return PathBuf::from(dir);
    }
    let mut debian: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    debian.sort();
    if let Some((_, bin)) = debian.pop() {
        return bin;
    }
    let output = std::process::Command::new("pg_config")
        .arg("--bindir")
        .output()
        .expect("Postgres server binaries (initdb, pg_ctl): set LOGEXPORT_TEST_PG_BIN");
    PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
}

fn is_root() -> bool {
    std::env::var("USER").is_ok_and(|u| u == "root")
        || std::process::Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// January 2024 events: namespace `ns{i}` has `january_rows(i)` of them. Scheduled namespaces
/// `sched{c}` have `daily_rows(k)` events on each of the three days before today.
fn dataset(today: chrono::DateTime<Utc>) -> Vec<Value> {
    let base = Utc
        .with_ymd_and_hms(2024, 1, 1, 0, 0, 0)
        .unwrap()
        .timestamp();
    let mut events = Vec::new();
    for i in 0..NAMESPACES {
        let rows = january_rows(i);
        let step = 31 * 86_400 / rows as i64;
        for j in 0..rows as i64 {
            events.push(event(&format!("ns{i}"), base + j * step, j));
        }
    }
    for c in 0..OUTAGES.len() {
        for k in 1..=3 {
            let day = (today - chrono::Duration::days(k)).timestamp();
            for j in 0..daily_rows(k) as i64 {
                events.push(event(&format!("sched{c}"), day + j * 60, j));
            }
        }
    }
    events
}

fn event(namespace: &str, datetime: i64, j: i64) -> Value {
    json!({"kind": "pull_repo", "account": namespace, "repository": "web",
           "performer": format!("user{}", j % 7), "performer_email": format!("user{}@example.com", j % 7),
           "ip": "198.51.100.7", "datetime": datetime,
           "metadata_json": {"tag": format!("release-{j}"), "digest": "sha256:0123456789abcdef0123456789abcdef"}})
}

fn january_rows(i: usize) -> u64 {
    2_000 + 173 * i as u64
}

fn daily_rows(days_ago: i64) -> u64 {
    40 + 11 * days_ago as u64
}

/// An export the test expects: its id, where its rows come from and how many.
#[derive(Debug, Clone)]
struct Expected {
    rows: u64,
    /// Requested through the API (and so has one audit event).
    requested: bool,
}

struct Outcome {
    status: u16,
    retry_after: Option<String>,
    body: String,
}

async fn outcome(response: reqwest::Response) -> Outcome {
    Outcome {
        status: response.status().as_u16(),
        retry_after: response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body: response.text().await.unwrap_or_default(),
    }
}

struct Harness {
    app: TestApp,
    pool: PgPool,
    admin: String,
    receiver: Receiver,
    local_dir: PathBuf,
}

impl Harness {
    async fn request_export(&self, namespace: &str, key: Option<&str>) -> reqwest::Response {
        let mut request = self
            .app
            .client
            .post(self.app.url(&format!(
                "/api/v1/organization/{namespace}/exportlogs?starttime=01/01/2024&endtime=01/31/2024"
            )))
            .bearer_auth(&self.admin)
            .json(&json!({"callback_url": format!("http://127.0.0.1:{}/cb", self.receiver.port),
                          "format": "ndjson"}));
        if let Some(key) = key {
            request = request.header("idempotency-key", key);
        }
        request.send().await.expect("request")
    }

    /// Requests an export that must be accepted now.
    async fn accepted(&self, namespace: &str) -> String {
        let response = self.request_export(namespace, None).await;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or_default();
        assert_eq!(status, 200, "{body}");
        body["export_id"].as_str().unwrap().to_owned()
    }

    /// Every request a client might send while Postgres is away, all at once.
    async fn requests_during_outage(&self, namespace: &str, known: &str) -> Vec<(String, Outcome)> {
        let status_path = format!("/api/v1/exportlogs/{known}");
        let schedule_path = format!("/api/v1/organization/{namespace}/exportschedules");
        let (export, status, stranger, schedules, ready) = tokio::join!(
            self.request_export(namespace, Some("during-outage")),
            self.app
                .client
                .get(self.app.url(&status_path))
                .bearer_auth(&self.admin)
                .send(),
            self.app
                .client
                .get(self.app.url(&status_path))
                .bearer_auth("a-token-never-seen-before")
                .send(),
            self.app
                .client
                .get(self.app.url(&schedule_path))
                .bearer_auth(&self.admin)
                .send(),
            self.app.client.get(self.app.url("/readyz")).send(),
        );
        vec![
            ("POST exportlogs".into(), outcome(export).await),
            ("GET export status".into(), outcome(status.unwrap()).await),
            ("an unknown token".into(), outcome(stranger.unwrap()).await),
            ("GET schedules".into(), outcome(schedules.unwrap()).await),
            ("GET /readyz".into(), outcome(ready.unwrap()).await),
        ]
    }

    async fn states(&self) -> HashMap<String, (String, i32, i64, Option<String>)> {
        let rows: Vec<(uuid::Uuid, String, i32, i64, Option<String>)> = sqlx::query_as(
            "SELECT id, state, attempt - attempts_forgiven, logs_exported, object_key
             FROM export_jobs",
        )
        .fetch_all(&self.pool)
        .await
        .unwrap_or_default();
        rows.into_iter()
            .map(|(id, state, spent, logs, key)| (id.to_string(), (state, spent, logs, key)))
            .collect()
    }
}

/// Starts what `logexport work` runs (export workers, the job runner's kinds, scheduler) on a
/// pool of its own, as a separate process would.
async fn spawn_worker_process(config: &Config, stop: &CancellationToken) {
    let pool = logexport::db::connect(&config.database)
        .await
        .expect("worker pool");
    tokio::spawn(logexport::service::work(
        pool,
        Arc::new(config.clone()),
        stop.clone(),
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_outages_get_503_and_lose_nothing() {
    logexport::telemetry::install_crypto_provider();
    if let Ok(filter) = std::env::var("LOGEXPORT_TEST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(false)
            .try_init();
    }
    let started = std::time::Instant::now();
    let postgres = ThrowawayPostgres::start().await;
    let url = postgres.url("logexport_outage");
    logexport::db::ensure_database(&url).await.unwrap();

    let today = Utc::now()
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .unwrap()
        .and_utc();
    let data = std::env::temp_dir().join(format!("logexport-outage-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&data).unwrap();
    let file = data.join("events.ndjson");
    let lines: Vec<String> = dataset(today).iter().map(Value::to_string).collect();
    std::fs::write(&file, lines.join("\n")).unwrap();
    let emulator: RunningEmulator = emulator::spawn(EmulatorOptions {
        token: Some(SPLUNK_TOKEN.into()),
        data_files: vec![file],
        ..EmulatorOptions::default()
    })
    .await
    .expect("emulator");
    // Slow enough that exports are still reading when Postgres goes away.
    emulator.set_faults(Faults {
        slow_bytes_per_sec: Some(60_000),
        ..Faults::default()
    });
    // Callbacks take a moment, so some are in flight when Postgres goes away.
    let receiver = Receiver::start(vec![Reply::Hang(Duration::from_millis(700)); 400]).await;

    let mut config = test_config(&url);
    config.database.acquire_timeout_seconds = ACQUIRE_TIMEOUT;
    config.database.max_connections = 10;
    use_emulator(&mut config, &emulator, SPLUNK_TOKEN);
    config.splunk.max_concurrent_searches = 12;
    // Sliced by time: the emulator sends 60 KB/s per stream to keep exports in flight through
    // the outages, and a small export read as one stream (the probe) would finish ~3x later.
    config.export.probe_rows = 0;
    config.worker.lease_seconds = LEASE;
    config.worker.concurrency = 3;
    config.worker.max_attempts = 3;
    config.storage.kind = StorageKind::Local;
    config.storage.local.path = data.join("archives");
    config.server.signing_key = Secret::new("outage-test-signing-key");
    config.schedule.interval_seconds = 1;
    config.audit.sink = AuditSink::Hec;
    config.audit.hec_url = format!("{}/services/collector/event", emulator.base_url());
    config.audit.hec_token = Secret::new(SPLUNK_TOKEN);
    config.audit.poll_interval_ms = 200;
    config.audit.backoff_base_seconds = 1;
    config.audit.backoff_max_seconds = 1;
    config.email.transport = "none".into();

    let api_pool = logexport::db::connect(&config.database).await.unwrap();
    logexport::db::migrate(&api_pool).await.unwrap();
    let app = spawn_app_with(api_pool, config.clone()).await;
    let orgs: Vec<String> = (0..NAMESPACES)
        .map(|i| format!("ns{i}"))
        .chain((0..OUTAGES.len()).map(|c| format!("sched{c}")))
        .collect();
    let orgs: Vec<&str> = orgs.iter().map(String::as_str).collect();
    let admin = app.token("alice", &orgs, &[], false).await;
    // A pool for the test's own checks, which waits out the outages.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .connect(&url)
        .await
        .unwrap();
    let h = Harness {
        pool,
        admin,
        local_dir: config.storage.local.path.clone(),
        receiver,
        app,
    };

    // Two worker processes.
    let stop = CancellationToken::new();
    spawn_worker_process(&config, &stop).await;
    spawn_worker_process(&config, &stop).await;

    let mut expected: HashMap<String, Expected> = HashMap::new();
    let mut schedules: Vec<(String, usize)> = Vec::new();
    let mut refused = Vec::new();
    let mut next_namespace = 0;
    for (cycle, seconds) in OUTAGES.iter().enumerate() {
        // Before: two exports, a schedule with three closed days, and something running.
        for _ in 0..2 {
            let id = h.accepted(&format!("ns{next_namespace}")).await;
            expected.insert(
                id,
                Expected {
                    rows: january_rows(next_namespace),
                    requested: true,
                },
            );
            next_namespace += 1;
        }
        let schedule = h
            .app
            .create_schedule(
                &h.admin,
                &format!("/api/v1/organization/sched{cycle}/exportschedules"),
                json!({"period": "daily", "start_date": (today - chrono::Duration::days(3)).format("%Y-%m-%d").to_string(),
                       "delay_minutes": 0, "format": "ndjson",
                       "callback_url": format!("http://127.0.0.1:{}/cb", h.receiver.port)}),
            )
            .await;
        schedules.push((schedule, cycle));
        eventually(30, "an export running", || async {
            let states = h.states().await;
            states
                .values()
                .any(|(state, ..)| state == "running")
                .then_some(())
        })
        .await;

        postgres.down().await;
        let down_at = std::time::Instant::now();
        let known = expected.keys().next().unwrap().clone();
        for (what, answer) in h
            .requests_during_outage(&format!("ns{next_namespace}"), &known)
            .await
        {
            refused.push((cycle, what, answer));
        }
        let health = h
            .app
            .client
            .get(h.app.url("/healthz"))
            .send()
            .await
            .unwrap();
        assert_eq!(health.status(), 200, "/healthz stays up");
        tokio::time::sleep(Duration::from_secs(*seconds).saturating_sub(down_at.elapsed())).await;
        postgres.up().await;
        eventually(20, "/readyz ready again by itself", || async {
            let ready = h.app.client.get(h.app.url("/readyz")).send().await.ok()?;
            (ready.status() == 200).then_some(())
        })
        .await;

        // After: the request refused during the outage is sent again, and another one.
        for _ in 0..2 {
            let id = h.accepted(&format!("ns{next_namespace}")).await;
            expected.insert(
                id,
                Expected {
                    rows: january_rows(next_namespace),
                    requested: true,
                },
            );
            next_namespace += 1;
        }
    }

    // Every request during an outage: 503, Retry-After, and the database named as the cause.
    assert_eq!(refused.len(), OUTAGES.len() * 5);
    for (cycle, what, answer) in &refused {
        assert_eq!(
            answer.status, 503,
            "outage {cycle}, {what}: {}",
            answer.body
        );
        assert!(
            answer.retry_after.is_some(),
            "outage {cycle}, {what}: no Retry-After"
        );
        assert!(
            answer.body.contains("database"),
            "outage {cycle}, {what}: {}",
            answer.body
        );
    }

    // The scheduled exports: three per schedule, no more.
    let scheduled = eventually(60, "every schedule's three periods enqueued", || async {
        let rows: Vec<(uuid::Uuid, uuid::Uuid)> =
            sqlx::query_as("SELECT id, schedule_id FROM export_jobs WHERE schedule_id IS NOT NULL")
                .fetch_all(&h.pool)
                .await
                .ok()?;
        (rows.len() >= 3 * schedules.len()).then_some(rows)
    })
    .await;
    for (schedule, cycle) in &schedules {
        let periods: Vec<(chrono::DateTime<Utc>,)> = sqlx::query_as(
            "SELECT start_time FROM export_jobs WHERE schedule_id = $1::uuid ORDER BY start_time",
        )
        .bind(schedule)
        .fetch_all(&h.pool)
        .await
        .unwrap();
        assert_eq!(periods.len(), 3, "schedule {cycle}: one export per period");
    }
    for (id, schedule_id) in &scheduled {
        let start: chrono::DateTime<Utc> =
            sqlx::query_scalar("SELECT start_time FROM export_jobs WHERE id = $1")
                .bind(id)
                .fetch_one(&h.pool)
                .await
                .unwrap();
        let days_ago = (today - start).num_days();
        assert!((1..=3).contains(&days_ago), "{schedule_id}: period {start}");
        expected.insert(
            id.to_string(),
            Expected {
                rows: daily_rows(days_ago),
                requested: false,
            },
        );
    }

    // Every export succeeds, on its first counted attempt, with exact rows.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let states = loop {
        let states = h.states().await;
        let finished = expected.keys().all(|id| {
            states
                .get(id)
                .is_some_and(|(state, ..)| state != "queued" && state != "running")
        });
        if finished {
            break states;
        }
        if tokio::time::Instant::now() > deadline {
            // What the exports still open left on their rows, to tell where they stopped.
            let open: Vec<Value> = sqlx::query_scalar(
                "SELECT to_jsonb(j) - 'manifest' FROM export_jobs j
                 WHERE state IN ('queued', 'running')",
            )
            .fetch_all(&h.pool)
            .await
            .unwrap();
            panic!("exports still open after 120 s: {open:#?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        states.len(),
        expected.len(),
        "no export beyond those accepted"
    );
    for (id, want) in &expected {
        let (state, spent, logs, _) = &states[id];
        assert_eq!(state, "succeeded", "{id}");
        if *spent != 1 {
            // What each attempt left on the row, to tell which path spent one.
            let row: Value = sqlx::query_scalar(
                "SELECT to_jsonb(j) - 'manifest' - 'checkpoint' FROM export_jobs j
                 WHERE id = $1::uuid",
            )
            .bind(id)
            .fetch_one(&h.pool)
            .await
            .unwrap();
            panic!("{id}: an outage spent an attempt ({spent} spent): {row:#}");
        }
        assert_eq!(*logs as u64, want.rows, "{id}");
    }

    // The long outages outlasted the leases of the exports running then: those were taken over,
    // and the attempts the outages ended were given back.
    let taken_over: i64 =
        sqlx::query_scalar("SELECT count(*) FROM export_jobs WHERE attempts_forgiven > 0")
            .fetch_one(&h.pool)
            .await
            .unwrap();
    assert!(taken_over >= 1, "no lease ran out during the long outages");
    // One notice per export, after a quiet period.
    eventually(60, "a notice for every export", || async {
        let calls = h.receiver.calls();
        (calls.len() >= expected.len()).then_some(())
    })
    .await;
    let mut quiet = h.receiver.calls().len();
    loop {
        tokio::time::sleep(Duration::from_secs(3)).await;
        let now = h.receiver.calls().len();
        if now == quiet {
            break;
        }
        quiet = now;
    }
    let mut notices: HashMap<String, Vec<Value>> = HashMap::new();
    for call in h.receiver.calls() {
        let body: Value = serde_json::from_slice(&call.body).unwrap();
        notices
            .entry(body["export_id"].as_str().unwrap().to_owned())
            .or_default()
            .push(body);
    }
    assert_eq!(notices.len(), expected.len());
    for (id, want) in &expected {
        let got = &notices[id];
        assert_eq!(got.len(), 1, "{id}: {got:?}");
        assert_eq!(got[0]["status"], "success", "{id}: {got:?}");
        assert_eq!(got[0]["logs_exported"], want.rows, "{id}");
    }

    // One archive per export, holding exactly its rows.
    let mut archives = Vec::new();
    for entry in std::fs::read_dir(&h.local_dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if !name.ends_with(".manifest.json") {
            assert!(!name.ends_with(".partial"), "a partial upload left: {name}");
            archives.push(name);
        }
    }
    archives.sort();
    assert_eq!(
        archives.len(),
        expected.len(),
        "one archive per export: {archives:#?}"
    );
    for (id, want) in &expected {
        let key = states[id].3.clone().expect("object key");
        let text = std::fs::read_to_string(h.local_dir.join(key.replace('/', "_"))).unwrap();
        assert_eq!(text.lines().count() as u64, want.rows, "{id}");
    }

    // One audit event per export requested through the API, none for the refused requests.
    let audit = eventually(30, "every audit event in Splunk", || async {
        let events = emulator.events_in(&logexport::emulator::EventFilter::default());
        let audit: Vec<Value> = events
            .into_iter()
            .filter(|e| {
                e["kind"]
                    .as_str()
                    .is_some_and(|k| k.starts_with("export_logs_"))
            })
            .collect();
        let requested = expected.values().filter(|e| e.requested).count();
        (audit.len() >= requested).then_some(audit)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let again = emulator
        .events_in(&logexport::emulator::EventFilter::default())
        .into_iter()
        .filter(|e| {
            e["kind"]
                .as_str()
                .is_some_and(|k| k.starts_with("export_logs_"))
        })
        .count();
    assert_eq!(again, audit.len(), "no audit event shipped twice");
    let requested = expected.values().filter(|e| e.requested).count();
    assert_eq!(
        audit.len(),
        requested,
        "one audit event per accepted request"
    );
    let mut per_export: HashMap<String, usize> = HashMap::new();
    for event in &audit {
        assert_eq!(event["kind"], "export_logs_success", "{event}");
        let metadata = match &event["metadata_json"] {
            Value::String(s) => serde_json::from_str(s).unwrap(),
            other => other.clone(),
        };
        *per_export
            .entry(
                metadata["export_id"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
            .or_default() += 1;
    }
    for (id, want) in expected.iter().filter(|(_, e)| e.requested) {
        assert_eq!(per_export.get(id), Some(&1), "{id}: {:?}", want);
    }

    stop.cancel();
    let _ = std::fs::remove_dir_all(&data);
    eprintln!(
        "{} outages ({OUTAGES:?} s), {} exports ({taken_over} taken over after a lease ran out), \
         {} requests refused with 503, in {:?}",
        OUTAGES.len(),
        expected.len(),
        refused.len(),
        started.elapsed()
    );
}

/// The pool tests only a connection that sat idle (see `db::pool_options`): one that Postgres
/// closed meanwhile, as a restart does, is replaced before a query gets it.
#[tokio::test]
async fn a_pooled_connection_postgres_closed_while_idle_is_replaced_before_use() {
    let (url, admin) = crate::helpers::test_db().await;
    let mut config = test_config(&url);
    config.database.max_connections = 1;
    let pool = logexport::db::connect(&config.database).await.unwrap();
    let backend = "SELECT pg_backend_pid()";
    let first: i32 = sqlx::query_scalar(backend).fetch_one(&pool).await.unwrap();
    // Back in the pool (sqlx tests it on its way back) before Postgres closes it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let closed: bool = sqlx::query_scalar("SELECT pg_terminate_backend($1)")
        .bind(first)
        .fetch_one(&admin)
        .await
        .unwrap();
    assert!(closed);
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    let second: i32 = sqlx::query_scalar(backend)
        .fetch_one(&pool)
        .await
        .expect("a new connection, not the one Postgres closed");
    assert_ne!(first, second);
}
