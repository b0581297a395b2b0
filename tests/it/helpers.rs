//! The test harness: a fresh database per test and the real application on port 0.

use std::net::SocketAddr;
use std::sync::Arc;

use logexport::api::{self, AppState};
use logexport::config::{Config, Secret};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio_util::sync::CancellationToken;

/// A directory of its own under the system's temporary directory, removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    /// A fresh, empty directory whose name starts with `prefix`.
    pub fn new(prefix: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("{prefix}-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("a temporary directory");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The Splunk emulator serving `events` (written as NDJSON into `dir`) to `token`.
pub async fn emulator_with_events(
    dir: &std::path::Path,
    token: &str,
    events: &[serde_json::Value],
) -> logexport::emulator::RunningEmulator {
    let file = dir.join("events.ndjson");
    let lines: Vec<String> = events.iter().map(serde_json::Value::to_string).collect();
    std::fs::write(&file, lines.join("\n")).expect("the events file");
    logexport::emulator::spawn(logexport::emulator::EmulatorOptions {
        token: Some(token.into()),
        data_files: vec![file],
        ..Default::default()
    })
    .await
    .expect("emulator")
}

/// Asserts that `holds` stays true for `secs` seconds, looking every 50 ms: "exactly one" or
/// "none yet" only after a quiet period long enough for a late duplicate to show.
pub async fn stays<F, Fut>(secs: u64, what: &str, mut holds: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let until = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
    while tokio::time::Instant::now() < until {
        assert!(holds().await, "no longer {what}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert!(holds().await, "no longer {what}");
}

/// What tests ask of the API about exports, beyond a single request.
impl TestApp {
    /// Requests an export that must be accepted, and returns its id.
    pub async fn request_export(
        &self,
        token: &str,
        path: &str,
        body: &serde_json::Value,
    ) -> String {
        let response = self.post_export(token, path, &body.to_string()).await;
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        assert_eq!(status, 200, "{text}");
        let body: serde_json::Value = serde_json::from_str(&text).expect("a JSON answer");
        body["export_id"].as_str().expect("an export_id").to_owned()
    }

    /// Polls an export's status document until `done` holds for it, and returns it.
    pub async fn status_until(
        &self,
        token: &str,
        id: &str,
        secs: u64,
        what: &str,
        done: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        eventually(secs, what, || async {
            let status: serde_json::Value =
                self.export_status(token, id).await.json().await.ok()?;
            done(&status).then_some(status)
        })
        .await
    }

    /// Waits (up to 60 s) until an export reaches a terminal state; returns its status document.
    pub async fn finished(&self, token: &str, id: &str) -> serde_json::Value {
        self.status_until(token, id, 60, "export finished", |status| {
            matches!(
                status["state"].as_str(),
                Some("succeeded" | "failed" | "timed_out" | "invalid" | "cancelled")
            )
        })
        .await
    }
}

/// Base server URL; each test creates its own database on it.
pub fn postgres_base() -> String {
    std::env::var("LOGEXPORT_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// The object key recorded for export `id` (its archive's key in storage).
pub async fn object_key(pool: &PgPool, id: &str) -> String {
    sqlx::query_scalar("SELECT object_key FROM export_jobs WHERE id = $1::uuid")
        .bind(id)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// A migrated database of its own; returns its URL and a pool.
pub async fn test_db() -> (String, PgPool) {
    logexport::telemetry::install_crypto_provider();
    let name = format!("logexport_test_{}", uuid::Uuid::new_v4().simple());
    let url = format!("{}/{name}", postgres_base());
    logexport::db::ensure_database(&url)
        .await
        .expect("Postgres reachable (run deploy/test.sh)");
    let pool = PgPoolOptions::new()
        .max_connections(20)
        .connect(&url)
        .await
        .expect("connect to test database");
    logexport::db::migrate(&pool).await.expect("migrations");
    (url, pool)
}

/// A configuration pointing at the test database, with fast timings.
pub fn test_config(database_url: &str) -> Config {
    let mut config = Config::default();
    config.database.url = Secret::new(database_url);
    config.worker.poll_interval_ms = 200;
    config.worker.backoff_base_seconds = 1;
    config.worker.backoff_max_seconds = 2;
    config.worker.lease_seconds = 6;
    config.worker.shutdown_grace_seconds = 2;
    config.callback.allowed_hosts = vec!["127.0.0.1/32".into()];
    config.email.transport = "none".into();
    config
}

/// The API running on an ephemeral port.
pub struct TestApp {
    pub addr: SocketAddr,
    pub pool: PgPool,
    pub config: Arc<Config>,
    pub client: reqwest::Client,
    shutdown: CancellationToken,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Starts the API on its own database; `adjust` tweaks the configuration first.
pub async fn spawn_app(adjust: impl FnOnce(&mut Config)) -> TestApp {
    let (url, pool) = test_db().await;
    let mut config = test_config(&url);
    adjust(&mut config);
    spawn_app_with(pool, config).await
}

/// Starts the API on an existing pool and configuration.
pub async fn spawn_app_with(pool: PgPool, mut config: Config) -> TestApp {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    config.server.public_url = format!("http://{addr}");
    let config = Arc::new(config);
    let shutdown = CancellationToken::new();
    let mut state = AppState::new(pool.clone(), config.clone());
    // S3 archives get fresh links from the API (local storage would create its directory).
    if config.storage.kind == logexport::config::StorageKind::S3 {
        let storage = logexport::storage::open(&config).await.expect("storage");
        state = state.with_storage(storage);
    }
    tokio::spawn(api::serve(listener, state, shutdown.clone()));
    TestApp {
        addr,
        pool,
        config,
        client: reqwest::Client::new(),
        shutdown,
    }
}

impl TestApp {
    /// The URL of an API path.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Creates a token for a caller.
    pub async fn token(
        &self,
        user: &str,
        orgs: &[&str],
        repos: &[&str],
        superuser: bool,
    ) -> String {
        let orgs: Vec<String> = orgs.iter().map(|s| s.to_string()).collect();
        let repos: Vec<String> = repos.iter().map(|s| s.to_string()).collect();
        logexport::access::create_token(&self.pool, user, &orgs, &repos, superuser)
            .await
            .expect("create token")
    }

    /// POSTs an export request; `path` is e.g. `/api/v1/organization/acme/exportlogs?starttime=…`.
    pub async fn post_export(&self, token: &str, path: &str, body: &str) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .expect("request")
    }

    /// GETs an export's status.
    pub async fn export_status(&self, token: &str, id: &str) -> reqwest::Response {
        self.client
            .get(self.url(&format!("/api/v1/exportlogs/{id}")))
            .bearer_auth(token)
            .send()
            .await
            .expect("request")
    }

    /// POSTs a schedule; `path` is e.g. `/api/v1/organization/acme/exportschedules`.
    pub async fn post_schedule(
        &self,
        token: &str,
        path: &str,
        body: &serde_json::Value,
    ) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .bearer_auth(token)
            .json(body)
            .send()
            .await
            .expect("request")
    }

    /// The scrape of `/metrics`.
    pub async fn metrics(&self) -> String {
        self.client
            .get(self.url("/metrics"))
            .send()
            .await
            .expect("scrape")
            .text()
            .await
            .expect("scrape body")
    }

    /// Creates a schedule that must be accepted and returns its id.
    pub async fn create_schedule(
        &self,
        token: &str,
        path: &str,
        body: serde_json::Value,
    ) -> String {
        let response = self.post_schedule(token, path, &body).await;
        let status = response.status();
        let text = response.text().await.expect("body");
        assert_eq!(status, 200, "{text}");
        let body: serde_json::Value = serde_json::from_str(&text).expect("JSON");
        body["schedule_id"]
            .as_str()
            .expect("schedule_id")
            .to_owned()
    }

    /// GETs a schedule's document.
    pub async fn schedule(&self, token: &str, id: &str) -> reqwest::Response {
        self.client
            .get(self.url(&format!("/api/v1/exportschedules/{id}")))
            .bearer_auth(token)
            .send()
            .await
            .expect("request")
    }

    /// PATCHes a schedule.
    pub async fn patch_schedule(
        &self,
        token: &str,
        id: &str,
        body: serde_json::Value,
    ) -> reqwest::Response {
        self.client
            .patch(self.url(&format!("/api/v1/exportschedules/{id}")))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("request")
    }

    /// DELETEs a schedule.
    pub async fn delete_schedule(&self, token: &str, id: &str) -> reqwest::Response {
        self.client
            .delete(self.url(&format!("/api/v1/exportschedules/{id}")))
            .bearer_auth(token)
            .send()
            .await
            .expect("request")
    }

    /// Number of rows in the job table.
    pub async fn job_count(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM export_jobs")
            .fetch_one(&self.pool)
            .await
            .expect("count")
    }
}

/// Waits until `check` returns Some, polling every 50 ms, or panics after `secs`.
pub async fn eventually<T, F, Fut>(secs: u64, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {secs}s waiting for {what}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// The Garage store `deploy/garage.sh` started, as S3 configuration (part size 5 MiB).
pub fn garage_s3_config() -> logexport::config::S3Config {
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!(
                "{name} is not set: start Garage with deploy/garage.sh (or run deploy/test.sh), \
                 then `source .test-env/garage.env`"
            )
        })
    };
    logexport::config::S3Config {
        bucket: var("LOGEXPORT_TEST_S3_BUCKET"),
        region: var("LOGEXPORT_TEST_S3_REGION"),
        endpoint_url: Some(var("LOGEXPORT_TEST_S3_ENDPOINT")),
        force_path_style: true,
        access_key_id: Secret::new(var("LOGEXPORT_TEST_S3_ACCESS_KEY")),
        secret_access_key: Secret::new(var("LOGEXPORT_TEST_S3_SECRET_KEY")),
        part_size_mib: 5,
        checksum: "when_required".into(),
        ssl_ca_path: None,
    }
}

/// Points `config` at the emulator, which accepts `token`.
pub fn use_emulator(
    config: &mut Config,
    emulator: &logexport::emulator::RunningEmulator,
    token: &str,
) {
    config.splunk.host = "127.0.0.1".into();
    config.splunk.port = emulator.addr().port();
    config.splunk.url_scheme = "http".into();
    config.splunk.bearer_token = Secret::new(token);
}

/// Asserts the logs of an archive are newest first (Quay's `datetime`, RFC 2822), as one Splunk
/// stream delivers them, across every slice boundary.
pub fn assert_newest_first(logs: &[serde_json::Value]) {
    let times: Vec<chrono::DateTime<chrono::Utc>> = logs
        .iter()
        .map(|l| {
            chrono::DateTime::parse_from_rfc2822(l["datetime"].as_str().expect("datetime"))
                .expect("an RFC 2822 datetime")
                .to_utc()
        })
        .collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "not newest first");
}

/// The sum of the samples in `scrape` whose series starts with `series` (a name, or a name with
/// its labels as served); 0 when there is none.
pub fn metric(scrape: &str, series: &str) -> f64 {
    scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.strip_prefix(series))
        .filter_map(|rest| rest.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// Starts an export worker pool over `pool` with `config`'s storage and settings, as
/// `logexport work` would; it stops when `stop` is cancelled.
pub async fn spawn_export_worker(
    pool: sqlx::PgPool,
    config: &Config,
    stop: &tokio_util::sync::CancellationToken,
) {
    let storage = logexport::storage::open(config).await.expect("storage");
    let handler = logexport::export::handler(config, storage.objects, &pool).expect("handler");
    tokio::spawn(
        logexport::worker::WorkerPool::new(
            pool,
            logexport::worker::WorkerSettings::from_config(&config.worker),
            handler,
        )
        .run(stop.clone()),
    );
}

/// An organization export of `namespace` from 2024-01-01 to `last_day` (`MM/DD/YYYY`), as JSON,
/// requested by alice, notifying admin@example.com, with 3 attempts.
pub fn org_export(namespace: &str, last_day: &str) -> logexport::queue::NewExport {
    use logexport::domain::{
        Compression, DateRange, EmailAddress, ExportFormat, ExportScope, Namespace,
    };
    logexport::queue::NewExport {
        scope: ExportScope::Organization,
        namespace: Namespace::parse(namespace).expect("namespace"),
        repository: None,
        requested_by: "alice".into(),
        range: DateRange::from_request(
            Some("01/01/2024"),
            Some(last_day),
            None,
            chrono::Utc::now(),
            366,
        )
        .expect("range"),
        format: ExportFormat::Json,
        compression: Compression::None,
        callback_url: None,
        callback_email: Some(EmailAddress::parse("admin@example.com").expect("email")),
        idempotency_key: None,
        max_attempts: 3,
        performer: None,
        kinds: Vec::new(),
    }
}

/// Enqueues an export of `namespace` notifying `email` and ends it as a worker would (failed,
/// after its one attempt), so that its one notification is due. No other export may be queued.
pub async fn finished_export(
    pool: &PgPool,
    namespace: &str,
    email: &str,
) -> logexport::domain::ExportId {
    use logexport::domain::EmailAddress;
    use logexport::queue::{Finish, NewExport, storage};
    let export = NewExport {
        callback_email: Some(EmailAddress::parse(email).expect("email")),
        max_attempts: 1,
        ..org_export(namespace, "01/31/2024")
    };
    let id = storage::enqueue(pool, &export).await.expect("enqueue");
    let claim = storage::claim_next(pool, "helper", std::time::Duration::from_secs(60), 100)
        .await
        .expect("claim")
        .expect("the export just queued");
    assert_eq!(claim.id, id, "no other export may be queued");
    let failed = Finish::Failed("Splunk answered HTTP 503".into());
    let finished = storage::finish(pool, id, claim.attempt, &failed).await;
    assert!(finished.expect("finish"));
    id
}

/// Asserts that `check` holds now and keeps holding for `secs` seconds: how a test says
/// "exactly one" or "none yet" so that a late duplicate is seen.
pub async fn assert_still<F, Fut>(secs: u64, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
    loop {
        assert!(check().await, "{what} stopped holding");
        if tokio::time::Instant::now() > deadline {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// One audit event's delivery job, as the jobs table holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditJob {
    pub event_id: uuid::Uuid,
    pub state: String,
    /// Attempts begun so far.
    pub attempt: i32,
    pub last_error: Option<String>,
}

/// Every audit event's delivery job, oldest first.
pub async fn audit_jobs(pool: &PgPool) -> Vec<AuditJob> {
    let rows: Vec<(String, String, i32, Option<String>)> = sqlx::query_as(
        "SELECT unique_key, state, attempt, last_error FROM jobs
         WHERE kind = 'audit_event' ORDER BY created_at, id",
    )
    .fetch_all(pool)
    .await
    .expect("the audit jobs");
    rows.into_iter()
        .map(|(key, state, attempt, last_error)| AuditJob {
            event_id: key.parse().expect("an audit job's key is its event id"),
            state,
            attempt,
            last_error,
        })
        .collect()
}

/// How many audit events wait for delivery (queued, or in flight).
pub async fn audit_waiting(pool: &PgPool) -> usize {
    audit_jobs(pool)
        .await
        .iter()
        .filter(|job| job.state == "queued" || job.state == "running")
        .count()
}

/// The runner of audit delivery for `config` (whose `[audit]` sink is HEC).
pub fn audit_runner(
    pool: &PgPool,
    config: &Config,
) -> logexport::worker::jobs::JobRunner<logexport::audit::AuditDelivery> {
    logexport::audit::AuditDelivery::new(config)
        .expect("the audit configuration")
        .expect("the HEC sink")
        .into_runner(pool.clone())
}

/// One scheduler tick's job, as the jobs table holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TickJob {
    /// The start of its tick period (its unique key, RFC 3339).
    pub period: chrono::DateTime<chrono::Utc>,
    pub state: String,
    /// Attempts begun so far.
    pub attempt: i32,
    pub last_error: Option<String>,
}

/// Every scheduler tick's job, by period.
pub async fn tick_jobs(pool: &PgPool) -> Vec<TickJob> {
    let rows: Vec<(String, String, i32, Option<String>)> = sqlx::query_as(
        "SELECT unique_key, state, attempt, last_error FROM jobs
         WHERE kind = 'schedule_tick' ORDER BY unique_key",
    )
    .fetch_all(pool)
    .await
    .expect("the tick jobs");
    rows.into_iter()
        .map(|(key, state, attempt, last_error)| TickJob {
            period: chrono::DateTime::parse_from_rfc3339(&key)
                .expect("a tick job's key is its period start")
                .to_utc(),
            state,
            attempt,
            last_error,
        })
        .collect()
}
