//! TLS to every server logexport talks to, each a real server whose certificate comes from a test
//! CA made here (rcgen): Splunk and its HEC (the emulator's own TLS), SMTP with STARTTLS and with
//! implicit TLS (aiosmtpd), Postgres with `sslmode=verify-full` (a throwaway cluster with
//! `ssl = on`), S3 (Garage behind a TLS terminator), Quay (the stand-in behind it) and callbacks
//! (a receiver behind it). Each client trusts the CA through its own `*.ssl_ca_path` key and
//! works; given another CA, or none, it fails with an error naming the server and that key, and
//! nothing reaches the server in plain text.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use logexport::config::{AuditSink, AuthMode, Config, EmailConfig, Secret};
use logexport::domain::{CallbackUrl, EmailAddress};
use logexport::emulator::{self, EmulatorOptions, RunningEmulator};
use logexport::notify::{CallbackSender, Delivery, Mailer, Outcome, SmtpMailer};

use crate::helpers::{garage_s3_config, spawn_app, test_config};
use crate::notify::harness::{Receiver, SmtpSink, free_port, notice, scratch_dir, success};
use crate::quay_standin::{self, Grant, User, World};

mod servers;
use servers::{Pki, TlsFront, TlsPostgres};

const SPLUNK_TOKEN: &str = "tls-splunk-token";

/// A configuration that uses nothing but what a test sets (no SMTP, local storage in a scratch
/// directory).
fn base_config() -> Config {
    let mut config = test_config("postgres://postgres@127.0.0.1:5432/unused");
    config.storage.local.path = scratch_dir("tls-storage");
    config
}

/// Asserts `finding` failed, blaming `key`, in words that name `server` and `key`.
fn assert_refused(finding: &logexport::check::Finding, key: &str, server: &str) {
    assert_eq!(finding.failure, Some(key), "{finding}");
    assert!(finding.detail.contains(server), "{finding}");
    assert!(finding.detail.contains(key), "{finding}");
}

// ---- Splunk and HEC ----------------------------------------------------------------------

async fn splunk_over_tls(pki: &Pki) -> RunningEmulator {
    emulator::spawn(EmulatorOptions {
        token: Some(SPLUNK_TOKEN.into()),
        tls: Some((pki.cert(), pki.key())),
        ..EmulatorOptions::default()
    })
    .await
    .expect("emulator with TLS")
}

fn use_splunk(config: &mut Config, emulator: &RunningEmulator, ca: Option<&Path>) {
    let port = emulator.addr().port();
    config.splunk.host = "localhost".into();
    config.splunk.port = port;
    config.splunk.url_scheme = "https".into();
    config.splunk.verify_ssl = true;
    config.splunk.ssl_ca_path = ca.map(Path::to_path_buf);
    config.splunk.bearer_token = Secret::new(SPLUNK_TOKEN);
    config.splunk.max_retries = 0;
    config.audit.sink = AuditSink::Hec;
    config.audit.hec_url = format!("https://localhost:{port}/services/collector/event");
    config.audit.hec_token = Secret::new(SPLUNK_TOKEN);
    config.audit.ssl_ca_path = ca.map(Path::to_path_buf);
}

#[tokio::test]
async fn splunk_and_its_hec_verify_the_certificate_against_the_configured_ca() {
    let pki = Pki::new();
    let emulator = splunk_over_tls(&pki).await;
    let server = format!("localhost:{}", emulator.addr().port());

    let mut trusted = base_config();
    use_splunk(&mut trusted, &emulator, Some(&pki.ca()));
    for dependency in ["splunk", "hec"] {
        let finding = logexport::check::dependency(&trusted, dependency)
            .await
            .unwrap();
        assert!(finding.is_ok(), "{finding}");
    }
    // A real search over the verified connection.
    let client = logexport::splunk::SplunkClient::new(&trusted.splunk).unwrap();
    assert!(client.server_info().await.unwrap().starts_with('9'));

    for ca in [Some(pki.wrong_ca()), None] {
        let mut refused = base_config();
        use_splunk(&mut refused, &emulator, ca.as_deref());
        let finding = logexport::check::dependency(&refused, "splunk")
            .await
            .unwrap();
        assert_refused(&finding, "splunk.ssl_ca_path", &server);
        let error = logexport::splunk::SplunkClient::new(&refused.splunk)
            .unwrap()
            .server_info()
            .await
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("Splunk") && error.contains("splunk.ssl_ca_path"),
            "{error}"
        );
        let finding = logexport::check::dependency(&refused, "hec").await.unwrap();
        assert_refused(&finding, "audit.ssl_ca_path", &server);
    }

    // verify_ssl = false is the operator's explicit choice to skip the check (Quay's key).
    let mut unverified = base_config();
    use_splunk(&mut unverified, &emulator, None);
    unverified.splunk.verify_ssl = false;
    let finding = logexport::check::dependency(&unverified, "splunk")
        .await
        .unwrap();
    assert!(finding.is_ok(), "{finding}");
}

// ---- SMTP ----------------------------------------------------------------------------------

fn smtp_config(url: String, ca: Option<&Path>) -> EmailConfig {
    EmailConfig {
        transport: "smtp".into(),
        smtp_url: Secret::new(url),
        timeout_seconds: 5,
        ssl_ca_path: ca.map(Path::to_path_buf),
        ..EmailConfig::default()
    }
}

async fn smtp_over_tls(pki: &Pki, mode: &str, scheme_and_query: (&str, &str)) {
    let port = free_port();
    let cert = pki.cert().display().to_string();
    let key = pki.key().display().to_string();
    let sink = SmtpSink::start(
        port,
        &["--tls", mode, "--tls-cert", &cert, "--tls-key", &key],
    )
    .await;
    let (scheme, query) = scheme_and_query;
    let url = format!("{scheme}://localhost:{port}{query}");
    let to = EmailAddress::parse("alice@example.com").unwrap();

    let mailer = SmtpMailer::new(&smtp_config(url.clone(), Some(&pki.ca()))).unwrap();
    let delivery = mailer
        .send(&to, &notice(success("https://x.example/a")))
        .await;
    assert!(
        matches!(delivery, Delivery::Delivered { .. }),
        "{mode}: {delivery:?}"
    );
    assert_eq!(sink.messages().len(), 1, "{mode}");

    for ca in [Some(pki.wrong_ca()), None] {
        let config = smtp_config(url.clone(), ca.as_deref());
        let mailer = SmtpMailer::new(&config).unwrap();
        let delivery = mailer
            .send(&to, &notice(success("https://x.example/b")))
            .await;
        let Delivery::Retry { reason, .. } = &delivery else {
            panic!("{mode}: a refused certificate must not deliver: {delivery:?}");
        };
        assert!(
            reason.contains(&format!("localhost:{port}")) && reason.contains("email.ssl_ca_path"),
            "{mode}: {reason}"
        );
        let mut full = base_config();
        full.email = config;
        let finding = logexport::check::dependency(&full, "smtp").await.unwrap();
        assert_refused(&finding, "email.ssl_ca_path", &format!("localhost:{port}"));
    }
    // Nothing more arrived: no fallback to plain SMTP.
    assert_eq!(sink.messages().len(), 1, "{mode}");
}

#[tokio::test]
async fn smtp_with_starttls_verifies_the_certificate_against_the_configured_ca() {
    let pki = Pki::new();
    smtp_over_tls(&pki, "starttls", ("smtp", "?tls=required")).await;
}

#[tokio::test]
async fn smtp_with_implicit_tls_verifies_the_certificate_against_the_configured_ca() {
    let pki = Pki::new();
    smtp_over_tls(&pki, "implicit", ("smtps", "")).await;
}

// ---- Postgres ------------------------------------------------------------------------------

#[tokio::test]
async fn postgres_with_verify_full_checks_the_certificate_against_the_configured_ca() {
    let pki = Pki::new();
    let postgres = TlsPostgres::start(&pki).await;
    let server = format!("localhost:{}", postgres.port);

    let mut config = base_config();
    config.database.url = Secret::new(postgres.url());
    config.database.ssl_ca_path = Some(pki.ca());
    let pool = logexport::db::connect(&config.database).await.unwrap();
    let encrypted: bool =
        sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(encrypted, "the connection is not encrypted");
    logexport::db::migrate(&pool).await.unwrap();
    pool.close().await;
    let finding = logexport::check::dependency(&config, "postgres")
        .await
        .unwrap();
    assert!(finding.is_ok(), "{finding}");

    for ca in [Some(pki.wrong_ca()), None] {
        config.database.ssl_ca_path = ca;
        let error = logexport::db::connect(&config.database)
            .await
            .unwrap_err()
            .to_string();
        assert!(
            error.contains(&format!("Postgres at {server}"))
                && error.contains("database.ssl_ca_path"),
            "{error}"
        );
        let finding = logexport::check::dependency(&config, "postgres")
            .await
            .unwrap();
        assert_refused(&finding, "database.ssl_ca_path", &server);
    }
}

// ---- S3 ------------------------------------------------------------------------------------

#[tokio::test]
async fn s3_over_https_verifies_the_certificate_against_the_configured_ca() {
    let pki = Pki::new();
    let garage = garage_s3_config();
    let backend = url::Url::parse(garage.endpoint_url.as_deref().unwrap()).unwrap();
    let backend: SocketAddr = format!(
        "{}:{}",
        backend.host_str().unwrap(),
        backend.port().unwrap()
    )
    .parse()
    .unwrap();
    let front = TlsFront::start(&pki, backend).await;

    let mut config = base_config();
    config.storage.kind = logexport::config::StorageKind::S3;
    config.storage.s3 = garage;
    config.storage.s3.endpoint_url = Some(front.url());
    config.storage.s3.ssl_ca_path = Some(pki.ca());
    // The probe writes an object through a multipart upload, then deletes it: all over TLS.
    let finding = logexport::check::dependency(&config, "storage")
        .await
        .unwrap();
    assert!(finding.is_ok(), "{finding}");
    let handshakes = front.handshakes();
    assert!(handshakes > 0);

    for ca in [Some(pki.wrong_ca()), None] {
        config.storage.s3.ssl_ca_path = ca;
        let finding = logexport::check::dependency(&config, "storage")
            .await
            .unwrap();
        assert_refused(&finding, "storage.s3.ssl_ca_path", &front.url());
    }
    assert_eq!(
        front.handshakes(),
        handshakes,
        "a refused certificate still sent"
    );
}

// ---- Quay ----------------------------------------------------------------------------------

async fn quay_standin() -> (SocketAddr, Arc<quay_standin::Standin>) {
    let users = HashMap::from([(
        "alice",
        User {
            admin_orgs: vec!["acme"],
            ..User::default()
        },
    )]);
    let world = World {
        users,
        organizations: vec!["acme"],
        repositories: vec![],
        full_access: false,
    };
    let tokens = HashMap::from([(
        "alice-oauth".to_owned(),
        Grant::token("alice", "org:admin repo:admin user:read"),
    )]);
    let (url, standin) = quay_standin::start(world, tokens, HashMap::new()).await;
    let addr = url::Url::parse(&url).unwrap();
    let addr = format!("127.0.0.1:{}", addr.port().unwrap())
        .parse()
        .unwrap();
    (addr, standin)
}

#[tokio::test]
async fn quay_mode_verifies_quays_certificate_against_the_configured_ca() {
    let pki = Pki::new();
    let (backend, standin) = quay_standin().await;
    let front = TlsFront::start(&pki, backend).await;
    let export = "/api/v1/organization/acme/exportlogs";
    let body = r#"{"callback_email": "admin@example.com"}"#;

    let quay = |ca: Option<PathBuf>| {
        let url = front.url();
        move |c: &mut Config| {
            c.auth.mode = AuthMode::Quay;
            c.auth.quay_url = url;
            c.auth.timeout_seconds = 2;
            c.auth.ssl_ca_path = ca;
        }
    };
    let app = spawn_app(quay(Some(pki.ca()))).await;
    let response = app
        .client
        .post(app.url(export))
        .bearer_auth("alice-oauth")
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    assert!(!standin.requests.lock().unwrap().is_empty());
    let finding = logexport::check::dependency(&app.config, "quay")
        .await
        .unwrap();
    assert!(finding.is_ok(), "{finding}");

    for ca in [Some(pki.wrong_ca()), None] {
        let seen = standin.requests.lock().unwrap().len();
        let app = spawn_app(quay(ca)).await;
        let response = app
            .client
            .post(app.url(export))
            .bearer_auth("alice-oauth")
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        // Quay unavailable, as for any failure to reach it: never a grant.
        assert_eq!(response.status(), 503);
        assert_eq!(app.job_count().await, 0);
        assert_eq!(
            standin.requests.lock().unwrap().len(),
            seen,
            "Quay was asked"
        );
        let finding = logexport::check::dependency(&app.config, "quay")
            .await
            .unwrap();
        assert_refused(&finding, "auth.ssl_ca_path", &front.url());
    }
}

// ---- Callbacks -----------------------------------------------------------------------------

#[tokio::test]
async fn callbacks_to_https_receivers_verify_the_certificate_against_the_configured_ca() {
    let pki = Pki::new();
    let receiver = Receiver::start(Vec::new()).await;
    let front = TlsFront::start(&pki, SocketAddr::from(([127, 0, 0, 1], receiver.port))).await;
    let url = CallbackUrl::from_stored(&format!("{}/hooks/export", front.url())).unwrap();
    let sender = |ca: Option<PathBuf>| {
        let mut config = base_config().callback;
        config.timeout_seconds = 5;
        config.allowed_hosts = vec!["localhost".into()];
        config.ssl_ca_path = ca;
        CallbackSender::new(&config).unwrap()
    };

    let delivery = sender(Some(pki.ca()))
        .send(&url, &notice(success("https://x.example/a")))
        .await;
    assert!(
        matches!(delivery, Delivery::Delivered { .. }),
        "{delivery:?}"
    );
    let calls = receiver.calls();
    assert_eq!(calls.len(), 1);

    for ca in [Some(pki.wrong_ca()), None] {
        let delivery = sender(ca).send(&url, &notice(Outcome::TimedOut)).await;
        let Delivery::Retry { reason, .. } = &delivery else {
            panic!("a refused certificate must not deliver: {delivery:?}");
        };
        assert!(
            reason.contains(&format!("localhost:{}", front.port))
                && reason.contains("callback.ssl_ca_path"),
            "{reason}"
        );
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        receiver.calls().len(),
        1,
        "a refused certificate still delivered"
    );
}

#[tokio::test]
async fn the_time_stamp_authority_over_https_verifies_its_certificate_against_the_configured_ca() {
    use logexport::archive::timestamp::TimestampAuthority;
    let pki = Pki::new();
    // Any HTTP server behind the TLS front: what is tested is whether the request gets there.
    let backend = Receiver::start(Vec::new()).await;
    let front = TlsFront::start(&pki, SocketAddr::from(([127, 0, 0, 1], backend.port))).await;
    let url = format!("{}/tsa", front.url());
    let tsa = |ca: Option<PathBuf>| {
        TimestampAuthority::new(&url, Vec::new(), ca.as_deref(), Duration::from_secs(5)).unwrap()
    };

    // Trusted: the request reaches the TSA (which answers no token: not a TLS failure).
    let answered = tsa(Some(pki.ca())).stamp(b"manifest").await.unwrap_err();
    assert!(
        !answered
            .to_string()
            .contains("timestamp_authority_ssl_ca_path"),
        "{answered}"
    );
    assert_eq!(
        backend.calls().len(),
        1,
        "the request went through: {answered}"
    );

    for ca in [Some(pki.wrong_ca()), None] {
        let refused = tsa(ca).stamp(b"manifest").await.unwrap_err().to_string();
        assert!(
            refused.contains(&format!("localhost:{}", front.port))
                && refused.contains("export.timestamp_authority_ssl_ca_path"),
            "{refused}"
        );
    }
    assert_eq!(
        backend.calls().len(),
        1,
        "a refused certificate still sent the request"
    );
}

// ---- Configuration -------------------------------------------------------------------------

#[test]
fn every_ca_key_is_checked_at_start_up_naming_the_key() {
    let pki = Pki::new();
    let keys = [
        "database.ssl_ca_path",
        "splunk.ssl_ca_path",
        "storage.s3.ssl_ca_path",
        "email.ssl_ca_path",
        "callback.ssl_ca_path",
        "auth.ssl_ca_path",
        "audit.ssl_ca_path",
        "export.timestamp_authority_ca",
    ];
    let set = |config: &mut Config, key: &str, path: PathBuf| {
        let slot = match key {
            "database.ssl_ca_path" => &mut config.database.ssl_ca_path,
            "splunk.ssl_ca_path" => &mut config.splunk.ssl_ca_path,
            "storage.s3.ssl_ca_path" => &mut config.storage.s3.ssl_ca_path,
            "email.ssl_ca_path" => &mut config.email.ssl_ca_path,
            "callback.ssl_ca_path" => &mut config.callback.ssl_ca_path,
            "auth.ssl_ca_path" => &mut config.auth.ssl_ca_path,
            "audit.ssl_ca_path" => &mut config.audit.ssl_ca_path,
            _ => &mut config.export.timestamp_authority_ca,
        };
        *slot = Some(path);
    };
    let mut all = Config::default();
    for key in keys {
        set(&mut all, key, pki.ca());
    }
    all.validate().expect("every CA file is readable");
    assert_eq!(all.ca_files().len(), keys.len());

    let not_pem = pki.dir.join("not-a-certificate.pem");
    std::fs::write(&not_pem, "hello\n").unwrap();
    for key in keys {
        for bad in [pki.dir.join("missing.pem"), not_pem.clone()] {
            let mut config = Config::default();
            set(&mut config, key, bad);
            let error = config.validate().unwrap_err().to_string();
            assert!(
                error.starts_with(&format!("invalid configuration: {key}: ")),
                "{error}"
            );
        }
    }
}
