//! An operator's first hour, with the real `logexport` binary: the shipped defaults plus only
//! Splunk's address and token and a database URL.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::process::{Child, Command};

use crate::export::{JANUARY, dataset};
use crate::helpers::{eventually, test_db};
use crate::notify::harness::{Receiver, free_port, scratch_dir};

/// The service binary cargo built for these tests.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_logexport")
}

/// A deployment directory: a config file with the defaults plus the given lines, on its own
/// database, with the emulator holding the January data set as Splunk.
pub struct Deployment {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub port: u16,
    pub database_url: String,
    pub pool: sqlx::PgPool,
    _emulator: Option<logexport::emulator::RunningEmulator>,
}

impl Deployment {
    /// A deployment whose database is migrated; `extra` is appended to the config file.
    pub async fn new(extra: &str) -> Self {
        let dir = scratch_dir("operator");
        let events: Vec<String> = dataset().iter().map(Value::to_string).collect();
        std::fs::write(dir.join("events.ndjson"), events.join("\n")).unwrap();
        let emulator = logexport::emulator::spawn(logexport::emulator::EmulatorOptions {
            token: Some("splunk-test-token".into()),
            data_files: vec![dir.join("events.ndjson")],
            ..Default::default()
        })
        .await
        .expect("emulator");
        let (database_url, pool) = test_db().await;
        let port = free_port();
        let config = dir.join("logexport.toml");
        std::fs::write(
            &config,
            format!(
                "[server]\nbind = \"127.0.0.1:{port}\"\npublic_url = \"http://127.0.0.1:{port}\"\n\
                 [database]\nurl = \"{database_url}\"\n\
                 [splunk]\nhost = \"127.0.0.1\"\nport = {}\nurl_scheme = \"http\"\n\
                 bearer_token = \"splunk-test-token\"\n\
                 [storage.local]\npath = \"{}\"\n\
                 [callback]\nallowed_hosts = [\"127.0.0.1/32\"]\n{extra}\n",
                emulator.addr().port(),
                dir.join("archives").display(),
            ),
        )
        .unwrap();
        Self {
            dir,
            config,
            port,
            database_url,
            pool,
            _emulator: Some(emulator),
        }
    }

    /// `logexport --config <file> <args>`, run to its end: (exit success, stdout, stderr).
    pub async fn command(&self, args: &[&str]) -> (bool, String, String) {
        self.command_with(args, &[]).await
    }

    /// Like [`Deployment::command`] with environment overrides (`LOGEXPORT_…`).
    pub async fn command_with(
        &self,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> (bool, String, String) {
        let output = Command::new(binary())
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .current_dir(&self.dir)
            .env_remove("DATABASE_URL")
            .envs(env.iter().copied())
            .output()
            .await
            .expect("the logexport binary runs");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    }

    /// Starts `logexport <what>` (serve, work, run) in the background; killed when dropped.
    pub fn start(&self, what: &str) -> Child {
        Command::new(binary())
            .arg("--config")
            .arg(&self.config)
            .arg(what)
            .current_dir(&self.dir)
            .env_remove("DATABASE_URL")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("the logexport binary starts")
    }

    /// A token made with `logexport token create`.
    pub async fn token(&self, args: &[&str]) -> String {
        let mut all = vec!["token", "create"];
        all.extend_from_slice(args);
        let (ok, out, err) = self.command(&all).await;
        assert!(ok, "token create failed: {err}");
        out.trim().to_owned()
    }

    /// The API's URL of `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Waits for `/readyz` to answer 200.
    pub async fn ready(&self) {
        let client = reqwest::Client::new();
        eventually(30, "the API to be ready", || async {
            let r = client.get(self.url("/readyz")).send().await.ok()?;
            (r.status() == 200).then_some(())
        })
        .await;
    }

    /// Requests an organization export of January for acme with a callback and returns the
    /// finished export's status document.
    pub async fn export_to_the_end(&self, token: &str) -> Value {
        let client = reqwest::Client::new();
        let receiver = Receiver::start(vec![]).await;
        let response = client
            .post(self.url(&format!("/api/v1/organization/acme/exportlogs?{JANUARY}")))
            .bearer_auth(token)
            .json(&json!({"callback_url": format!("http://127.0.0.1:{}/done", receiver.port)}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let id = response.json::<Value>().await.unwrap()["export_id"]
            .as_str()
            .unwrap()
            .to_owned();
        eventually(60, "the export to finish", || async {
            let status: Value = client
                .get(self.url(&format!("/api/v1/exportlogs/{id}")))
                .bearer_auth(token)
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            matches!(
                status["state"].as_str(),
                Some("succeeded" | "failed" | "invalid" | "timed_out")
            )
            .then_some(status)
        })
        .await
    }
}

impl Drop for Deployment {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Downloads `url`; its status and body.
async fn download(url: &str) -> (u16, Vec<u8>) {
    let response = reqwest::get(url).await.unwrap();
    let status = response.status().as_u16();
    (status, response.bytes().await.unwrap().to_vec())
}

async fn assert_link_downloads(status: &Value) {
    assert_eq!(status["state"], "succeeded", "{status:#}");
    let link = status["exported_data_url"].as_str().expect("a link");
    let (code, body) = download(link).await;
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let archive: Value = serde_json::from_slice(&body).expect("a JSON archive");
    assert_eq!(
        archive["logs"].as_array().unwrap().len() as i64,
        status["logs_exported"].as_i64().unwrap() + 1,
        "every log plus the terminator"
    );
}

#[tokio::test]
async fn with_the_default_signing_key_run_mints_links_that_download() {
    let deployment = Deployment::new("").await;
    let token = deployment
        .token(&["--user", "alice", "--admin-org", "acme"])
        .await;
    let _run = deployment.start("run");
    deployment.ready().await;
    let status = deployment.export_to_the_end(&token).await;
    assert_link_downloads(&status).await;

    // The default configuration writes unsigned manifests: verify checks the rest when asked.
    let (_, archive) = download(status["exported_data_url"].as_str().unwrap()).await;
    let manifest = reqwest::Client::new()
        .get(status["manifest_url"].as_str().expect("a manifest"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let archive_path = deployment.dir.join("export.json");
    std::fs::write(&archive_path, &archive).unwrap();
    std::fs::write(deployment.dir.join("export.json.manifest.json"), &manifest).unwrap();
    let path = archive_path.to_str().unwrap();
    let (ok, out, _) = deployment.command(&["verify", path]).await;
    assert!(!ok, "no signature, no --allow-unsigned: not OK\n{out}");
    assert!(out.contains("--allow-unsigned"), "{out}");
    let (ok, out, err) = deployment
        .command(&["verify", path, "--allow-unsigned"])
        .await;
    assert!(ok, "{out}{err}");
    assert!(out.starts_with("OK: "), "{out}");
    assert!(
        out.contains(&format!("holds {} logs", status["logs_exported"])),
        "{out}"
    );
    assert!(
        out.contains("NO SIGNATURE CHECKED (the manifest is unsigned)"),
        "{out}"
    );
    let mut tampered = archive.clone();
    let at = tampered.len() / 2;
    tampered[at] ^= 1;
    std::fs::write(&archive_path, &tampered).unwrap();
    let (ok, out, _) = deployment
        .command(&["verify", path, "--allow-unsigned"])
        .await;
    assert!(!ok, "{out}");
    assert!(out.contains("MISMATCH digest"), "{out}");
}

#[tokio::test]
async fn split_serve_and_work_processes_share_one_stored_signing_key() {
    let deployment = Deployment::new("").await;
    let token = deployment
        .token(&["--user", "alice", "--admin-org", "acme"])
        .await;
    let _serve = deployment.start("serve");
    let _work = deployment.start("work");
    deployment.ready().await;
    let status = deployment.export_to_the_end(&token).await;
    assert_link_downloads(&status).await;
    // One key for the whole deployment, kept in Postgres; a restarted API still accepts it.
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM service_secrets WHERE name = 'server.signing_key'",
    )
    .fetch_one(&deployment.pool)
    .await
    .unwrap();
    assert_eq!(stored, 1);
}

#[tokio::test]
async fn check_says_one_line_per_dependency_and_fails_when_one_fails() {
    let deployment = Deployment::new("[email]\nsmtp_url = \"smtp://127.0.0.1:9\"\n").await;
    let (ok, out, err) = deployment.command(&["check"]).await;
    assert!(!ok, "the closed SMTP port fails the check:\n{out}");
    assert!(err.contains("1 of 4 dependencies failed"), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(lines[0].starts_with("ok    postgres"), "{out}");
    assert!(lines[0].contains("every migration applied"), "{out}");
    assert!(lines[1].starts_with("ok    splunk"), "{out}");
    assert!(lines[1].contains("token accepted"), "{out}");
    assert!(lines[2].starts_with("ok    storage"), "{out}");
    assert!(
        lines[2].contains("wrote and deleted a probe object"),
        "{out}"
    );
    assert!(lines[3].starts_with("FAIL  smtp"), "{out}");
    assert!(lines[3].contains("email.smtp_url"), "{out}");
    // The probe object is gone again.
    let left: Vec<_> = std::fs::read_dir(deployment.dir.join("archives"))
        .unwrap()
        .collect();
    assert!(left.is_empty(), "{left:?}");

    // A wrong Splunk token and an SMTP server that answers.
    let sink = crate::notify::harness::SmtpSink::start(free_port(), &[]).await;
    let smtp = format!("smtp://127.0.0.1:{}", sink.port);
    let (ok, out, _) = deployment
        .command_with(
            &["check"],
            &[
                ("LOGEXPORT_SPLUNK__BEARER_TOKEN", "wrong"),
                ("LOGEXPORT_EMAIL__SMTP_URL", &smtp),
            ],
        )
        .await;
    assert!(!ok);
    assert!(
        out.lines().any(|l| l.starts_with("FAIL  splunk")
            && l.contains("refused the token")
            && l.contains("splunk.bearer_token")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("ok    smtp") && l.contains("EHLO")),
        "{out}"
    );
}

#[tokio::test]
async fn check_tries_the_s3_bucket_with_a_probe_object() {
    if std::env::var("LOGEXPORT_TEST_S3_BUCKET").is_err() {
        panic!("LOGEXPORT_TEST_S3_BUCKET is not set: source .test-env/garage.env");
    }
    let s3 = crate::helpers::garage_s3_config();
    let deployment = Deployment::new("[email]\ntransport = \"none\"\n").await;
    let env = [
        ("LOGEXPORT_STORAGE__KIND", "s3".to_owned()),
        ("LOGEXPORT_STORAGE__S3__BUCKET", s3.bucket.clone()),
        ("LOGEXPORT_STORAGE__S3__REGION", s3.region.clone()),
        (
            "LOGEXPORT_STORAGE__S3__ENDPOINT_URL",
            s3.endpoint_url.clone().unwrap(),
        ),
        ("LOGEXPORT_STORAGE__S3__FORCE_PATH_STYLE", "true".to_owned()),
        (
            "LOGEXPORT_STORAGE__S3__ACCESS_KEY_ID",
            s3.access_key_id.expose().to_owned(),
        ),
        (
            "LOGEXPORT_STORAGE__S3__SECRET_ACCESS_KEY",
            s3.secret_access_key.expose().to_owned(),
        ),
    ];
    let env_refs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (ok, out, err) = deployment.command_with(&["check"], &env_refs).await;
    assert!(ok, "{out}{err}");
    assert!(
        out.lines().any(|l| l.starts_with("ok    storage")
            && l.contains(&format!("bucket {}", s3.bucket))),
        "{out}"
    );
    let mut wrong = env_refs.clone();
    wrong.retain(|(k, _)| *k != "LOGEXPORT_STORAGE__S3__SECRET_ACCESS_KEY");
    wrong.push(("LOGEXPORT_STORAGE__S3__SECRET_ACCESS_KEY", "not-the-secret"));
    let (ok, out, _) = deployment.command_with(&["check"], &wrong).await;
    assert!(!ok);
    assert!(
        out.lines()
            .any(|l| l.starts_with("FAIL  storage") && l.contains("storage.s3.bucket")),
        "{out}"
    );
}

#[tokio::test]
async fn migrate_creates_a_missing_database_and_check_names_it_before() {
    let deployment = Deployment::new("").await;
    let name = format!("logexport_test_{}", uuid::Uuid::new_v4().simple());
    let url = format!("{}/{name}", crate::helpers::postgres_base());
    let env = [("LOGEXPORT_DATABASE__URL", url.as_str())];
    let (ok, out, _) = deployment.command_with(&["check"], &env).await;
    assert!(!ok);
    let postgres = out.lines().next().unwrap_or_default();
    assert!(postgres.starts_with("FAIL  postgres"), "{out}");
    assert!(
        postgres.contains(&format!("database {name} does not exist"))
            && postgres.contains("logexport migrate")
            && postgres.contains(&format!("createdb -h 127.0.0.1 -p 5432 -U postgres {name}")),
        "{postgres}"
    );
    let (ok, out, err) = deployment.command_with(&["migrate"], &env).await;
    assert!(ok, "{out}{err}");
    assert!(out.contains("migrations applied"), "{out}");
    let (_, out, _) = deployment.command_with(&["check"], &env).await;
    assert!(out.starts_with("ok    postgres"), "{out}");
}

#[tokio::test]
async fn readyz_is_not_ready_until_migrations_are_applied() {
    let name = format!("logexport_test_{}", uuid::Uuid::new_v4().simple());
    let url = format!("{}/{name}", crate::helpers::postgres_base());
    logexport::db::ensure_database(&url).await.unwrap();
    let pool = sqlx::PgPool::connect(&url).await.unwrap();
    let app = crate::helpers::spawn_app_with(pool.clone(), crate::helpers::test_config(&url)).await;
    let readyz = || async {
        let r = app.client.get(app.url("/readyz")).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    };
    let (status, body) = readyz().await;
    assert_eq!(status, 503);
    assert!(body.contains("logexport migrate"), "{body}");
    logexport::db::migrate(&pool).await.unwrap();
    assert_eq!(readyz().await, (200, "ready\n".to_owned()));
}

#[tokio::test]
async fn token_list_shows_rights_and_last_use_but_never_the_secret() {
    let deployment = Deployment::new("").await;
    let alice = deployment
        .token(&[
            "--user",
            "alice",
            "--admin-org",
            "acme",
            "--admin-repo",
            "beta/web",
        ])
        .await;
    let _root = deployment.token(&["--user", "root", "--superuser"]).await;
    let app = crate::helpers::spawn_app_with(
        deployment.pool.clone(),
        crate::helpers::test_config(&deployment.database_url),
    )
    .await;
    let used = app
        .client
        .get(app.url("/api/v1/exportlogs"))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(used.status(), 200);
    let (ok, out, err) = deployment.command(&["token", "list"]).await;
    assert!(ok, "{err}");
    assert!(!out.contains(&alice), "the secret is never shown:\n{out}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[0].starts_with("ID"), "{out}");
    let alice_line = lines.iter().find(|l| l.contains(" alice ")).expect("alice");
    assert!(
        alice_line.ends_with("admin-org acme, admin-repo beta/web"),
        "{alice_line}"
    );
    let root_line = lines.iter().find(|l| l.contains(" root ")).expect("root");
    assert!(root_line.ends_with("superuser"), "{root_line}");
    // alice was used (a date in LAST USED), root never was ("-" there and under REVOKED).
    let columns = |line: &str| -> Vec<String> {
        line.split("  ")
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .map(str::to_owned)
            .collect()
    };
    assert!(columns(alice_line)[3].ends_with('Z'), "{alice_line}");
    assert_eq!(columns(root_line)[3], "-", "{root_line}");
    assert_eq!(columns(root_line)[4], "-", "{root_line}");
}

#[tokio::test]
async fn a_revoked_token_gets_401_at_once_in_every_api_process() {
    let deployment = Deployment::new("").await;
    let alice = deployment
        .token(&["--user", "alice", "--admin-org", "acme"])
        .await;
    // Two API processes: the real binary, and one in this test process.
    let _serve = deployment.start("serve");
    deployment.ready().await;
    let app = crate::helpers::spawn_app_with(
        deployment.pool.clone(),
        crate::helpers::test_config(&deployment.database_url),
    )
    .await;
    let client = reqwest::Client::new();
    let list_in = |base: String| {
        let client = client.clone();
        let alice = alice.clone();
        async move {
            client
                .get(format!("{base}/api/v1/exportlogs"))
                .bearer_auth(&alice)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let bases = [deployment.url(""), app.url("")];
    // Warm both caches (twice: the second answer comes from the cache).
    for base in &bases {
        assert_eq!(list_in(base.clone()).await, 200);
        assert_eq!(list_in(base.clone()).await, 200);
    }
    let (ok, out, _) = deployment.command(&["token", "list"]).await;
    assert!(ok);
    let id = out
        .lines()
        .find(|l| l.contains(" alice "))
        .and_then(|l| l.split_whitespace().next())
        .expect("alice's id")
        .to_owned();
    let (ok, out, err) = deployment.command(&["token", "revoke", &id]).await;
    assert!(ok, "{err}");
    assert_eq!(out.trim(), format!("token {id} revoked"));
    let revoked = std::time::Instant::now();
    for base in &bases {
        // The revocation reaches each process by NOTIFY, in milliseconds; the cache's own
        // lifetime (10 s) plays no part.
        eventually(1, "the revoked token to be refused", || {
            let base = base.clone();
            let list_in = &list_in;
            async move { (list_in(base).await == 401).then_some(()) }
        })
        .await;
    }
    let took = revoked.elapsed();
    println!("revocation took effect in both processes within {took:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");
    let (ok, _, err) = deployment
        .command(&["token", "revoke", "00000000-0000-0000-0000-000000000000"])
        .await;
    assert!(!ok);
    assert!(err.contains("no token has the id"), "{err}");
}

#[tokio::test]
async fn an_unknown_field_in_an_export_body_is_refused_naming_it() {
    let app = crate::helpers::spawn_app(|_| {}).await;
    let alice = app.token("alice", &["acme"], &[], false).await;
    let path = format!("/api/v1/organization/acme/exportlogs?{JANUARY}");
    let response = app
        .post_export(
            &alice,
            &path,
            r#"{"callback_email": "a@example.com", "fromat": "csv"}"#,
        )
        .await;
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    let message = body["error_message"].as_str().unwrap();
    assert!(message.contains("unknown field `fromat`"), "{message}");
    assert_eq!(app.job_count().await, 0, "nothing is enqueued");
    // What Quay's own clients send is accepted.
    for body in [
        r#"{"callback_email": "a@example.com"}"#,
        r#"{"callback_url": "http://127.0.0.1:9/done"}"#,
    ] {
        assert_eq!(
            app.post_export(&alice, &path, body).await.status(),
            200,
            "{body}"
        );
    }
}

#[tokio::test]
async fn serve_warns_at_start_about_a_dependency_that_fails_the_check() {
    let deployment = Deployment::new("[email]\nsmtp_url = \"smtp://127.0.0.1:9\"\n").await;
    let mut serve = Command::new(binary())
        .arg("--config")
        .arg(&deployment.config)
        .arg("serve")
        .current_dir(&deployment.dir)
        .env_remove("DATABASE_URL")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // It serves all the same: the check only warns.
    deployment.ready().await;
    let mut stderr = serve.stderr.take().unwrap();
    let mut seen = String::new();
    let found = tokio::time::timeout(Duration::from_secs(20), async {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 4096];
        while !seen.contains("email.smtp_url") {
            let n = stderr.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            seen.push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    })
    .await;
    assert!(found.is_ok(), "no warning within 20 s:\n{seen}");
    assert!(seen.contains("dependency check failed"), "{seen}");
    assert!(seen.contains("email.smtp_url"), "{seen}");
    assert!(!seen.contains("dependency=\"postgres\""), "{seen}");
    let _ = serve.kill().await;
}
