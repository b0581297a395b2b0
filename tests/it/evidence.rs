//! Evidence for a series of exports (issue 26): every export of a namespace is a link of its
//! chain, the chain head is signed, manifests carry RFC 3161 time-stamps from a real TSA
//! (`openssl ts -reply` behind a small HTTP responder), and `logexport verify-chain` names
//! every kind of break.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use logexport::archive::ManifestKey;
use logexport::archive::manifest::Manifest;
use logexport::config::{Config, Secret, StorageKind};
use logexport::domain::ExportId;
use logexport::emulator::RunningEmulator;
use logexport::queue::chain::{self, Archived};
use logexport::storage::S3Store;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::export::{JANUARY, dataset};
use crate::helpers::{
    TempDir, TestApp, emulator_with_events, eventually, garage_s3_config, spawn_app_with,
    spawn_export_worker, test_config, test_db, use_emulator,
};

const TOKEN: &str = "splunk-test-token";

/// A time-stamp authority: a test CA, a TSA certificate with the timeStamping extended key
/// usage, and `openssl ts -reply` answering RFC 3161 requests over HTTP.
struct Tsa {
    dir: PathBuf,
    url: String,
    down: Arc<AtomicBool>,
    granted: Arc<AtomicU64>,
    stop: CancellationToken,
}

impl Drop for Tsa {
    fn drop(&mut self) {
        self.stop.cancel();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl is installed");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Tsa {
    async fn start() -> Self {
        let dir = std::env::temp_dir().join(format!("logexport-tsa-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("tsa.cnf"),
            "[ tsa ]\ndefault_tsa = tsa1\n[ tsa1 ]\ndir = .\nserial = ./serial\n\
             crypto_device = builtin\nsigner_cert = ./tsa.crt\ncerts = ./ca.crt\n\
             signer_key = ./tsa.key\nsigner_digest = sha256\ndefault_policy = 1.2.3.4.1\n\
             digests = sha256, sha384, sha512\naccuracy = secs:1\nordering = no\n\
             tsa_name = yes\ness_cert_id_chain = no\ness_cert_id_alg = sha256\n",
        )
        .unwrap();
        std::fs::write(dir.join("serial"), "01\n").unwrap();
        std::fs::write(
            dir.join("tsa.ext"),
            "basicConstraints=CA:false\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=critical,timeStamping\n",
        )
        .unwrap();
        openssl(
            &dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.crt",
                "-days",
                "2",
                "-subj",
                "/CN=logexport test TSA CA",
                "-addext",
                "basicConstraints=critical,CA:true",
                "-addext",
                "keyUsage=critical,keyCertSign",
            ],
        );
        openssl(
            &dir,
            &[
                "req",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-keyout",
                "tsa.key",
                "-out",
                "tsa.csr",
                "-subj",
                "/CN=logexport test TSA",
            ],
        );
        openssl(
            &dir,
            &[
                "x509",
                "-req",
                "-in",
                "tsa.csr",
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                "tsa.crt",
                "-days",
                "2",
                "-extfile",
                "tsa.ext",
            ],
        );
        let down = Arc::new(AtomicBool::new(false));
        let granted = Arc::new(AtomicU64::new(0));
        let lock = Arc::new(tokio::sync::Mutex::new(()));
        let (d, g, folder) = (down.clone(), granted.clone(), dir.clone());
        let app = axum::Router::new().route(
            "/",
            axum::routing::post(move |body: axum::body::Bytes| {
                let (down, granted, dir, lock) =
                    (d.clone(), g.clone(), folder.clone(), lock.clone());
                async move {
                    if down.load(Ordering::SeqCst) {
                        return (axum::http::StatusCode::SERVICE_UNAVAILABLE, Vec::new());
                    }
                    // `openssl ts -reply` keeps its serial number in a file: one at a time.
                    let _one = lock.lock().await;
                    let name = uuid::Uuid::new_v4().simple().to_string();
                    let (query, reply) = (format!("{name}.tsq"), format!("{name}.tsr"));
                    std::fs::write(dir.join(&query), &body).unwrap();
                    let out = tokio::process::Command::new("openssl")
                        .args(["ts", "-reply", "-config", "tsa.cnf", "-queryfile", &query])
                        .args(["-out", &reply])
                        .current_dir(&dir)
                        .output()
                        .await
                        .unwrap();
                    assert!(
                        out.status.success(),
                        "{}",
                        String::from_utf8_lossy(&out.stderr)
                    );
                    granted.fetch_add(1, Ordering::SeqCst);
                    (
                        axum::http::StatusCode::OK,
                        std::fs::read(dir.join(&reply)).unwrap(),
                    )
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let stop = CancellationToken::new();
        let until = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move { until.cancelled().await })
                .await
        });
        Self {
            dir,
            url,
            down,
            granted,
            stop,
        }
    }

    fn ca(&self) -> PathBuf {
        self.dir.join("ca.crt")
    }
}

/// The emulator with the known data set, the API, and a worker, storing archives in a local
/// folder: the folder an auditor is handed.
struct Env {
    app: TestApp,
    config: Config,
    archives: PathBuf,
    admin: String,
    worker: CancellationToken,
    _emulator: RunningEmulator,
    data: TempDir,
}

impl Drop for Env {
    fn drop(&mut self) {
        self.worker.cancel();
    }
}

impl Env {
    async fn start(adjust: impl FnOnce(&mut Config)) -> Self {
        let data = TempDir::new("logexport-ev");
        let emulator = emulator_with_events(&data.0, TOKEN, &dataset()).await;
        let (url, pool) = test_db().await;
        let mut config = test_config(&url);
        use_emulator(&mut config, &emulator, TOKEN);
        let archives = data.0.join("archives");
        std::fs::create_dir_all(&archives).unwrap();
        config.storage.kind = StorageKind::Local;
        config.storage.local.path = archives.clone();
        config.server.signing_key = Secret::new("local-links");
        config.export.manifest_signing_key = Secret::new(ManifestKey::generate().secret());
        adjust(&mut config);
        let app = spawn_app_with(pool.clone(), config.clone()).await;
        config.server.public_url = app.config.server.public_url.clone();
        let worker = CancellationToken::new();
        spawn_export_worker(pool, &config, &worker).await;
        let admin = app.token("alice", &["acme"], &[], false).await;
        Self {
            app,
            config,
            archives,
            admin,
            worker,
            _emulator: emulator,
            data,
        }
    }

    /// Replaces the API and the worker with ones running `adjust`ed configuration.
    async fn restart(&mut self, adjust: impl FnOnce(&mut Config)) {
        self.worker.cancel();
        adjust(&mut self.config);
        self.app = spawn_app_with(self.app.pool.clone(), self.config.clone()).await;
        self.config.server.public_url = self.app.config.server.public_url.clone();
        self.worker = CancellationToken::new();
        spawn_export_worker(self.app.pool.clone(), &self.config, &self.worker).await;
    }

    async fn request(&self, path: &str) -> String {
        self.app
            .request_export(
                &self.admin,
                path,
                &json!({"callback_email": "a@example.com"}),
            )
            .await
    }

    async fn status(&self, id: &str) -> Value {
        self.app
            .export_status(&self.admin, id)
            .await
            .json()
            .await
            .unwrap()
    }

    async fn succeeded(&self, id: &str) -> Value {
        let status = self.app.finished(&self.admin, id).await;
        assert_eq!(status["state"], "succeeded", "{status}");
        status
    }

    async fn manifest(&self, id: &str) -> Manifest {
        sqlx::query_scalar::<_, Value>("SELECT manifest FROM export_jobs WHERE id = $1::uuid")
            .bind(id)
            .fetch_one(&self.app.pool)
            .await
            .map(|m| serde_json::from_value(m).unwrap())
            .unwrap()
    }

    async fn manifest_or_none(&self, id: &str) -> Option<Value> {
        sqlx::query_scalar::<_, Option<Value>>(
            "SELECT manifest FROM export_jobs WHERE id = $1::uuid",
        )
        .bind(id)
        .fetch_one(&self.app.pool)
        .await
        .unwrap()
    }

    fn keys_url(&self) -> String {
        self.app.url("/api/v1/exportlogs/signing-keys")
    }

    fn head_url(&self, namespace: &str) -> String {
        self.app
            .url(&format!("/api/v1/exportlogs/chain?namespace={namespace}"))
    }

    async fn head(&self, namespace: &str) -> Value {
        let response = self
            .app
            .client
            .get(self.head_url(namespace))
            .bearer_auth(&self.admin)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    }
}

/// Runs `logexport verify-chain DIR ARGS…`; whether it passed, and what it printed.
async fn verify_chain(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_logexport"))
        .arg("verify-chain")
        .arg(dir)
        .args(args)
        .output()
        .await
        .expect("run logexport verify-chain");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, to.join(path.file_name().unwrap())).unwrap();
    }
}

/// The manifest file of link `sequence` in `dir`.
fn manifest_file(dir: &Path, sequence: u64) -> PathBuf {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".manifest.json"))
        .find(|p| {
            let m: Manifest = serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap();
            m.chain.is_some_and(|c| c.sequence == sequence)
        })
        .unwrap_or_else(|| panic!("no link {sequence}"))
}

fn archive_file(manifest: &Path) -> PathBuf {
    PathBuf::from(
        manifest
            .to_string_lossy()
            .trim_end_matches(".manifest.json"),
    )
}

fn read_manifest(path: &Path) -> Manifest {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn write_manifest(path: &Path, manifest: &Manifest) {
    std::fs::write(path, serde_json::to_vec_pretty(manifest).unwrap()).unwrap();
}

/// The links `verify-chain` printed as OK.
fn links_ok(out: &str) -> usize {
    out.lines()
        .filter(|l| l.starts_with("link ") && l.contains(": OK "))
        .count()
}

const ORG: &str = "/api/v1/organization/acme/exportlogs";
const REPO: &str = "/api/v1/repository/acme/web/exportlogs";

#[tokio::test]
async fn concurrent_exports_of_one_namespace_form_one_gap_free_chain() {
    let tsa = Tsa::start().await;
    let env = Env::start(|c| {
        c.worker.concurrency = 6;
        c.worker.per_namespace_limit = 6;
        c.export.timestamp_authority_url = tsa.url.clone();
        c.export.timestamp_authority_ca = Some(tsa.ca());
    })
    .await;
    // Organization and repository exports of acme: one chain, whatever the scope.
    let mut ids = Vec::new();
    for i in 0..6 {
        let path = if i % 2 == 0 { ORG } else { REPO };
        ids.push(env.request(&format!("{path}?{JANUARY}")).await);
    }
    let mut sequences = Vec::new();
    for id in &ids {
        env.succeeded(id).await;
        let manifest = env.manifest(id).await;
        let chain = manifest.chain.clone().expect("a chained manifest");
        assert_eq!(chain.namespace, "acme");
        assert!(manifest.timestamp_token.is_some(), "time-stamped");
        sequences.push(chain.sequence);
    }
    sequences.sort_unstable();
    assert_eq!(sequences, [1, 2, 3, 4, 5, 6], "consecutive, no duplicate");
    assert_eq!(tsa.granted.load(Ordering::SeqCst), 6);

    let head = env.head("acme").await;
    assert_eq!(head["sequence"], 6);
    assert!(head["signature"].is_string());
    let (ok, out) = verify_chain(
        &env.archives,
        &[
            "--keys-url",
            &env.keys_url(),
            "--head",
            &env.head_url("acme"),
            "--token",
            &env.admin,
            "--tsa-ca",
            tsa.ca().to_str().unwrap(),
        ],
    )
    .await;
    assert!(ok, "{out}");
    assert_eq!(links_ok(&out), 6, "one line per link: {out}");
    assert!(
        out.contains("head: OK sequence 6") && out.contains("time-stamped"),
        "{out}"
    );

    // LOGEXPORT_KEEP_EVIDENCE_DIR=DIR keeps the folder, the keys, the head and the TSA's CA, to
    // run docs/evidence.md's openssl recipes on.
    if let Some(keep) = std::env::var_os("LOGEXPORT_KEEP_EVIDENCE_DIR") {
        let keep = PathBuf::from(keep);
        copy_dir(&env.archives, &keep.join("exports"));
        let keys = reqwest::get(env.keys_url())
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        std::fs::write(keep.join("keys.json"), keys).unwrap();
        std::fs::write(keep.join("head.json"), head.to_string()).unwrap();
        std::fs::copy(tsa.ca(), keep.join("tsa-ca.pem")).unwrap();
    }

    // The head needs the rights of listing the namespace's exports.
    let stranger = env.app.token("mallory", &[], &[], false).await;
    let response = env
        .app
        .client
        .get(env.head_url("acme"))
        .bearer_auth(&stranger)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 403);
    // A namespace without exports has an empty signed chain.
    let mine = env
        .app
        .client
        .get(env.head_url("mallory"))
        .bearer_auth(&stranger)
        .send()
        .await
        .unwrap();
    let mine: Value = mine.json().await.unwrap();
    assert_eq!(
        (mine["sequence"].clone(), mine["manifest_sha256"].clone()),
        (json!(0), Value::Null)
    );
}

#[tokio::test]
async fn seals_at_the_same_moment_take_consecutive_numbers_and_a_retry_keeps_its_own() {
    let (_, pool) = test_db().await;
    let key = ManifestKey::generate();
    // Twenty running exports of one namespace, one of them a schedule's.
    let mut ids = Vec::new();
    for _ in 0..20 {
        let id = ExportId::new();
        sqlx::query(
            "INSERT INTO export_jobs (id, scope, namespace, requested_by, start_time, end_time,
                 format, compression, max_attempts, webhook_id, state, attempt)
             VALUES ($1, 'organization', 'acme', 'alice', now() - interval '1 day', now(),
                 'json', 'none', 3, 'msg', 'running', 1)",
        )
        .bind(id.0)
        .execute(&pool)
        .await
        .unwrap();
        ids.push(id);
    }
    let schedule = uuid::Uuid::new_v4();
    sqlx::query(
        "INSERT INTO export_schedules (id, owner, scope, namespace, period, timezone,
             first_period_start, delay_minutes, format, compression, next_period_start, next_run_at)
         VALUES ($1, 'alice', 'organization', 'acme', 'daily', 'UTC', '2026-01-01', 0, 'json',
             'none', '2026-01-02', '2026-01-02');
         ",
    )
    .bind(schedule)
    .execute(&pool)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO schedule_runs (schedule_id, period_start, period_end, export_id)
         VALUES ($1, '2026-01-01T00:00:00Z', '2026-01-02T00:00:00Z', $2)",
    )
    .bind(schedule)
    .bind(ids[7].0)
    .execute(&pool)
    .await
    .unwrap();

    let seal = |id: ExportId| {
        let (pool, key) = (pool.clone(), &key);
        async move {
            let archived = Archived {
                object_key: "k",
                logs: 1,
                logs_skipped: 0,
                bytes: 2,
                sha256: "00",
            };
            chain::seal(&pool, id, 1, archived, Some(&key.public()), |link| {
                let mut m: Manifest = serde_json::from_value(json!({
                    "version": 2, "export_id": id.to_string(), "namespace": "acme",
                    "repository": null, "filters": {"performer": null, "kind": []},
                    "range": {"start": "a", "end": "b", "timezone": "UTC"}, "format": "json",
                    "compression": "none", "logs": 1, "bytes": 2, "sha256": "00",
                    "created_at": link.signed_at.to_rfc3339(), "signed": false,
                    "key_id": null, "algorithm": null, "signature": null}))
                .unwrap();
                m.chain = Some(link.chain);
                m.schedule = link.schedule;
                m.sign(Some(key))
            })
            .await
            .unwrap()
            .expect("not fenced out")
            .manifest
        }
    };
    let manifests = futures::future::join_all(ids.iter().map(|id| seal(*id))).await;
    let mut by_sequence: Vec<&Manifest> = manifests.iter().collect();
    by_sequence.sort_by_key(|m| m.chain.as_ref().unwrap().sequence);
    for (n, m) in by_sequence.iter().enumerate() {
        let chain = m.chain.as_ref().unwrap();
        assert_eq!(chain.sequence, n as u64 + 1, "gap-free");
        let previous = n.checked_sub(1).map(|p| by_sequence[p].canonical_sha256());
        assert_eq!(
            chain.previous_manifest_sha256,
            previous,
            "link {} chained",
            n + 1
        );
        assert_eq!(m.verify(&[key.public()]), Ok(()));
    }
    assert_eq!(
        manifests[7].schedule.as_ref().map(|s| s.period.as_str()),
        Some("daily"),
        "a scheduled export's manifest names its schedule and period"
    );
    // A retried finish reuses the number it took; nothing new is built.
    let again = seal(ids[3]).await;
    assert_eq!(again, manifests[3]);
    assert_eq!(chain::head(&pool, "acme").await.unwrap().0, 20);
    // A stale attempt is fenced out.
    let stale = chain::seal(
        &pool,
        ids[0],
        9,
        Archived {
            object_key: "k",
            logs: 0,
            logs_skipped: 0,
            bytes: 0,
            sha256: "",
        },
        None,
        |_| unreachable!(),
    )
    .await
    .unwrap();
    assert!(stale.is_none());
}

#[tokio::test]
async fn a_tsa_that_is_down_delays_the_finish_and_another_worker_finishes_with_the_same_number() {
    let tsa = Tsa::start().await;
    let mut env = Env::start(|c| {
        c.export.timestamp_authority_url = tsa.url.clone();
        c.export.timestamp_authority_ca = Some(tsa.ca());
    })
    .await;
    let first = env.request(&format!("{ORG}?{JANUARY}")).await;
    env.succeeded(&first).await;

    tsa.down.store(true, Ordering::SeqCst);
    let second = env.request(&format!("{ORG}?{JANUARY}")).await;
    let waiting = eventually(60, "the wait for the TSA in the status", || async {
        let s = env.status(&second).await;
        (s["state"] == "running"
            && s["last_error"]
                .as_str()
                .is_some_and(|e| e.contains("waiting for the time-stamp authority")))
        .then_some(s)
    })
    .await;
    assert_eq!(waiting["attempts"], 1, "{waiting}");
    let sealed = env.manifest(&second).await;
    assert_eq!(sealed.chain.as_ref().unwrap().sequence, 2);
    assert!(sealed.timestamp_token.is_none());
    // A cancel now is too late: the export is a link already.
    env.app
        .client
        .delete(env.app.url(&format!("/api/v1/exportlogs/{second}")))
        .bearer_auth(&env.admin)
        .send()
        .await
        .unwrap();

    // The worker goes away (a cut); a new one takes over after the lease, then the TSA is back.
    env.restart(|_| {}).await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    tsa.down.store(false, Ordering::SeqCst);
    let status = env.succeeded(&second).await;
    let done = env.manifest(&second).await;
    assert_eq!(done.chain, sealed.chain, "the same link after the cut");
    assert!(done.timestamp_token.is_some());
    assert_eq!(status["logs_exported"], done.logs);
    let third = env.request(&format!("{REPO}?{JANUARY}")).await;
    env.succeeded(&third).await;
    assert_eq!(env.manifest(&third).await.chain.unwrap().sequence, 3);
    let exports: i64 = sqlx::query_scalar("SELECT count(*) FROM export_jobs")
        .fetch_one(&env.app.pool)
        .await
        .unwrap();
    assert_eq!(exports, 3, "nothing duplicated");
    let (ok, out) = verify_chain(
        &env.archives,
        &[
            "--keys-url",
            &env.keys_url(),
            "--tsa-ca",
            tsa.ca().to_str().unwrap(),
        ],
    )
    .await;
    assert!(ok && links_ok(&out) == 3, "{out}");
}

/// On S3 the archive's digest is copied into its metadata beside the seal; an attempt that stops
/// after the seal but before that copy leaves it to the attempt that finishes the export.
#[tokio::test]
async fn the_attempt_that_finishes_a_sealed_export_records_its_digest_on_s3() {
    let tsa = Tsa::start().await;
    let mut env = Env::start(|c| {
        c.storage.kind = StorageKind::S3;
        c.storage.s3 = garage_s3_config();
        c.export.timestamp_authority_url = tsa.url.clone();
        c.export.timestamp_authority_ca = Some(tsa.ca());
    })
    .await;
    tsa.down.store(true, Ordering::SeqCst);
    let id = env.request(&format!("{ORG}?{JANUARY}")).await;
    eventually(60, "the seal, then the wait for the TSA", || async {
        let s = env.status(&id).await;
        s["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("waiting for the time-stamp authority"))
            .then_some(())
    })
    .await;
    let key = crate::helpers::object_key(&env.app.pool, &id).await;
    let store = S3Store::from_config(&garage_s3_config()).await.unwrap();
    let digest = env.manifest(&id).await.sha256;
    eventually(30, "the digest copied beside the seal", || async {
        (store.recorded_sha256(&key).await.unwrap().as_deref() == Some(digest.as_str()))
            .then_some(())
    })
    .await;
    // As if that attempt had stopped before its copy: the metadata goes.
    let (client, bucket) = crate::storage::raw_client().await;
    client
        .copy_object()
        .bucket(&bucket)
        .key(&key)
        .copy_source(format!("{bucket}/{key}"))
        .metadata_directive(aws_sdk_s3::types::MetadataDirective::Replace)
        .send()
        .await
        .unwrap();
    assert_eq!(store.recorded_sha256(&key).await.unwrap(), None);

    // The worker goes away; a new one takes the export over after the lease, then the TSA is back.
    env.restart(|_| {}).await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    tsa.down.store(false, Ordering::SeqCst);
    let status = env.succeeded(&id).await;
    assert_eq!(status["sha256"].as_str(), Some(digest.as_str()));
    assert_eq!(
        store.recorded_sha256(&key).await.unwrap().as_deref(),
        Some(digest.as_str()),
        "the finishing attempt records the digest again"
    );
}

#[tokio::test]
async fn verify_chain_names_each_kind_of_break() {
    let tsa = Tsa::start().await;
    let key = ManifestKey::generate();
    let secret = key.secret();
    let env = Env::start(|c| {
        c.export.manifest_signing_key = Secret::new(secret);
        c.export.timestamp_authority_url = tsa.url.clone();
    })
    .await;
    for i in 0..5 {
        let path = if i % 2 == 0 { ORG } else { REPO };
        let id = env.request(&format!("{path}?{JANUARY}")).await;
        env.succeeded(&id).await;
    }
    let work = env.data.0.join("work");
    let keys = env.data.0.join("keys.json");
    let keys_json: Value = reqwest::get(env.keys_url())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    std::fs::write(&keys, keys_json.to_string()).unwrap();
    let head_file = env.data.0.join("head.json");
    std::fs::write(&head_file, env.head("acme").await.to_string()).unwrap();
    let ca = tsa.ca();
    let args = [
        "--public-key",
        keys.to_str().unwrap(),
        "--head-file",
        head_file.to_str().unwrap(),
        "--tsa-ca",
        ca.to_str().unwrap(),
    ];
    let (ok, out) = verify_chain(&env.archives, &args).await;
    assert!(ok, "{out}");

    // Each break, on a fresh copy of the folder.
    let broken = |name: &str| {
        let dir = work.join(name);
        copy_dir(&env.archives, &dir);
        dir
    };
    let dir = broken("missing");
    let third = manifest_file(&dir, 3);
    std::fs::remove_file(archive_file(&third)).unwrap();
    std::fs::remove_file(&third).unwrap();
    let (ok, out) = verify_chain(&dir, &args).await;
    assert!(
        !ok && out.contains("chain broken: missing sequence 3"),
        "{out}"
    );

    let dir = broken("duplicate");
    let third = manifest_file(&dir, 3);
    let copy = dir.join("copy.json");
    std::fs::copy(archive_file(&third), &copy).unwrap();
    std::fs::copy(&third, dir.join("copy.json.manifest.json")).unwrap();
    let (ok, out) = verify_chain(&dir, &args).await;
    assert!(
        !ok && out.contains("chain broken: duplicate sequence 3"),
        "{out}"
    );

    let dir = broken("manifest");
    let fourth = manifest_file(&dir, 4);
    let mut m = read_manifest(&fourth);
    m.logs += 1;
    write_manifest(&fourth, &m);
    let (ok, out) = verify_chain(&dir, &args).await;
    assert!(
        !ok && out.contains("chain broken: manifest 4 altered"),
        "{out}"
    );

    let dir = broken("archive");
    let archive = archive_file(&manifest_file(&dir, 2));
    let mut bytes = std::fs::read(&archive).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&archive, bytes).unwrap();
    let (ok, out) = verify_chain(&dir, &args).await;
    assert!(
        !ok && out.contains("chain broken: archive 2 altered"),
        "{out}"
    );

    // Validly signed (the key leaked, say) but naming another previous link.
    let dir = broken("unchained");
    let fifth = manifest_file(&dir, 5);
    let mut m = read_manifest(&fifth);
    m.chain.as_mut().unwrap().previous_manifest_sha256 = Some("00".repeat(32));
    m.timestamp_token = None;
    write_manifest(&fifth, &m.sign(Some(&key)));
    let (ok, out) = verify_chain(&dir, &args).await;
    assert!(
        !ok && out.contains("chain broken: link 5 not chained to 4"),
        "{out}"
    );

    // The last link deleted: only the signed head tells.
    let dir = broken("truncated");
    let fifth = manifest_file(&dir, 5);
    std::fs::remove_file(archive_file(&fifth)).unwrap();
    std::fs::remove_file(&fifth).unwrap();
    let (ok, out) = verify_chain(&dir, &args).await;
    assert!(
        !ok && out.contains("chain broken: head says 5 but the folder ends at 4"),
        "{out}"
    );

    // A time-stamp taken over other bytes (link 1's token on link 2).
    let dir = broken("timestamp");
    let token = read_manifest(&manifest_file(&dir, 1)).timestamp_token;
    let second = manifest_file(&dir, 2);
    let mut m = read_manifest(&second);
    m.timestamp_token = token;
    write_manifest(&second, &m);
    let (ok, out) = verify_chain(&dir, &args).await;
    assert!(
        !ok && out.contains("chain broken: time-stamp invalid on link 2"),
        "{out}"
    );
    // And a token checked against a CA that did not issue the TSA's certificate.
    let other_ca = Tsa::start().await;
    let other_ca_file = other_ca.ca();
    let mut other = args;
    other[5] = other_ca_file.to_str().unwrap();
    let (ok, out) = verify_chain(&env.archives, &other).await;
    assert!(
        !ok && out.contains("chain broken: time-stamp invalid on link 1"),
        "{out}"
    );
    assert!(out.contains("does not chain to the TSA CA"), "{out}");
}

#[tokio::test]
async fn a_key_rotation_mid_chain_verifies_with_the_key_history() {
    let old = ManifestKey::generate();
    let new = ManifestKey::generate();
    let old_secret = old.secret();
    let mut env = Env::start(|c| c.export.manifest_signing_key = Secret::new(old_secret)).await;
    for _ in 0..2 {
        let id = env.request(&format!("{ORG}?{JANUARY}")).await;
        env.succeeded(&id).await;
    }
    // Whole-second windows: the new key's first signature is a later second.
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (new_secret, old_x) = (new.secret(), old.public().x());
    env.restart(|c| {
        c.export.manifest_signing_key = Secret::new(new_secret);
        c.export.manifest_previous_public_keys = vec![old_x];
    })
    .await;
    for _ in 0..2 {
        let id = env.request(&format!("{ORG}?{JANUARY}")).await;
        env.succeeded(&id).await;
    }
    let keys: Value = reqwest::get(env.keys_url())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let keys = keys["keys"].as_array().unwrap().clone();
    assert_eq!(keys[0]["kid"], new.key_id.as_str(), "the current key first");
    assert!(keys[0]["signing_from"].is_string() && keys[0]["signing_until"].is_null());
    assert_eq!(keys[1]["kid"], old.key_id.as_str());
    assert!(
        keys[1]["signing_until"].is_string(),
        "the old key stopped: {keys:?}"
    );
    let (ok, out) = verify_chain(&env.archives, &["--keys-url", &env.keys_url()]).await;
    assert!(ok, "{out}");
    assert!(
        out.contains(&old.key_id) && out.contains(&new.key_id),
        "{out}"
    );

    // The first key's history starts open: a manifest it signed before chains and key history
    // existed (version 1, no chain) still verifies with `logexport verify`.
    assert!(keys[1]["signing_from"].is_null(), "{keys:?}");
    let first = manifest_file(&env.archives, 1);
    let mut legacy = read_manifest(&first);
    legacy.version = 1;
    legacy.chain = None;
    legacy.created_at = "2025-06-01T00:00:00Z".into();
    let legacy_path = env.data.0.join("legacy.manifest.json");
    write_manifest(&legacy_path, &legacy.sign(Some(&old)));
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_logexport"))
        .arg("verify")
        .arg(archive_file(&first))
        .arg("--manifest")
        .arg(&legacy_path)
        .args(["--keys-url", &env.keys_url()])
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // A manifest the old key signed after it was rotated out is refused.
    let dir = env.data.0.join("late");
    copy_dir(&env.archives, &dir);
    let fourth = manifest_file(&dir, 4);
    let mut m = read_manifest(&fourth);
    m.created_at = (chrono::Utc::now() + chrono::Duration::hours(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    write_manifest(&fourth, &m.sign(Some(&old)));
    let (ok, out) = verify_chain(&dir, &["--keys-url", &env.keys_url()]).await;
    assert!(
        !ok && out.contains("chain broken: manifest 4 not trusted")
            && out.contains("outside the signing period"),
        "{out}"
    );
}

#[tokio::test]
async fn an_export_cut_mid_stream_takes_its_number_only_when_it_completes() {
    let env = Env::start(|c| {
        // A cut stream fails the attempt at once; the next attempt resumes from its checkpoint.
        c.splunk.max_retries = 0;
        c.worker.max_attempts = 3;
        // Few slices, so a slice holds more rows than the cut lets through.
        c.export.slices = 2;
    })
    .await;
    env._emulator.set_faults(logexport::emulator::Faults {
        cut_once_after: Some(5),
        ..Default::default()
    });
    let cut = env.request(&format!("{ORG}?{JANUARY}")).await;
    eventually(60, "the first attempt cut", || async {
        let s = env.status(&cut).await;
        (s["state"] == "queued" && s["attempts"] == 1).then_some(())
    })
    .await;
    assert_eq!(
        env.manifest_or_none(&cut).await,
        None,
        "no number while it failed"
    );
    // Another export of the namespace completes meanwhile (its searches are not cut again).
    let other = env.request(&format!("{ORG}?{JANUARY}")).await;
    let other_status = env.succeeded(&other).await;
    let resumed = env.succeeded(&cut).await;
    assert_eq!(resumed["attempts"], 2);
    let mut links = [
        (
            other_status["finished_at"].as_str().unwrap().to_owned(),
            env.manifest(&other).await,
        ),
        (
            resumed["finished_at"].as_str().unwrap().to_owned(),
            env.manifest(&cut).await,
        ),
    ];
    links.sort_by_key(|(finished, _)| {
        chrono::DateTime::parse_from_rfc3339(finished).expect("finished_at is RFC 3339")
    });
    let sequences = links.map(|(_, m)| m.chain.unwrap().sequence);
    assert_eq!(sequences, [1, 2], "numbered in completion order");
    let (ok, out) = verify_chain(&env.archives, &["--keys-url", &env.keys_url()]).await;
    assert!(ok && links_ok(&out) == 2, "{out}");
}

#[tokio::test]
async fn an_archive_completed_but_never_sealed_is_deleted_by_the_next_attempt() {
    let mut env = Env::start(|_| {}).await;
    // The export waits in the queue while its row is made to look like an earlier attempt
    // completed an archive and lost its seal (the database went away after the upload).
    env.worker.cancel();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let id = env.request(&format!("{ORG}?{JANUARY}")).await;
    let orphan = format!("exportedactionlogs/{id}-0123456789abcdef.ndjson");
    let orphan_file = env.archives.join(orphan.replace('/', "_"));
    let orphan_manifest = env
        .archives
        .join(format!("{}.manifest.json", orphan.replace('/', "_")));
    std::fs::write(&orphan_file, "{\"an\": \"earlier attempt's archive\"}\n").unwrap();
    std::fs::write(&orphan_manifest, "{}").unwrap();
    let marked = sqlx::query(
        "UPDATE export_jobs SET unsealed_object_key = $2 WHERE id = $1::uuid AND state = 'queued'",
    )
    .bind(&id)
    .bind(&orphan)
    .execute(&env.app.pool)
    .await
    .unwrap();
    assert_eq!(marked.rows_affected(), 1, "the export was still queued");

    env.restart(|_| {}).await;
    let status = env.succeeded(&id).await;
    assert!(!orphan_file.exists(), "the unsealed archive is deleted");
    assert!(!orphan_manifest.exists(), "and its manifest with it");
    let files: Vec<String> = std::fs::read_dir(&env.archives)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains(&id))
        .collect();
    assert_eq!(files.len(), 2, "one archive and its manifest: {files:?}");
    let (key, left): (String, Option<String>) = sqlx::query_as(
        "SELECT object_key, unsealed_object_key FROM export_jobs WHERE id = $1::uuid",
    )
    .bind(&id)
    .fetch_one(&env.app.pool)
    .await
    .unwrap();
    assert_eq!(left, None, "the seal clears the unsealed key");
    assert!(files.contains(&key.replace('/', "_")), "{files:?} {key}");
    assert_eq!(status["attempts"], 1);
}
