//! The status document, the callback and the 500 answer say only what is so.

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::export::{JANUARY, dataset};
use crate::helpers::{TestApp, eventually, spawn_app_with, test_config, test_db};
use crate::notify::harness::{Receiver, free_port, scratch_dir};

const TOKEN: &str = "splunk-test-token";

/// The API and `logexport work` on one database with local storage; Splunk at `splunk_port`.
async fn service(splunk_port: u16, token: &str) -> (TestApp, CancellationToken) {
    let (url, pool) = test_db().await;
    let mut config = test_config(&url);
    config.splunk.host = "127.0.0.1".into();
    config.splunk.port = splunk_port;
    config.splunk.url_scheme = "http".into();
    config.splunk.bearer_token = logexport::config::Secret::new(token);
    config.splunk.max_retries = 0;
    config.storage.local.path = scratch_dir("status").join("archives");
    let app = spawn_app_with(pool.clone(), config).await;
    let stop = CancellationToken::new();
    tokio::spawn(logexport::service::work(
        pool,
        app.config.clone(),
        stop.clone(),
    ));
    (app, stop)
}

async fn status(app: &TestApp, token: &str, id: &str) -> Value {
    app.export_status(token, id).await.json().await.unwrap()
}

async fn request(app: &TestApp, token: &str, receiver: &Receiver) -> String {
    let body = json!({"callback_url": format!("http://127.0.0.1:{}/done", receiver.port)});
    app.request_export(
        token,
        &format!("/api/v1/organization/acme/exportlogs?{JANUARY}"),
        &body,
    )
    .await
}

async fn emulator_on(port: u16, dir: &std::path::Path) -> logexport::emulator::RunningEmulator {
    let events: Vec<String> = dataset().iter().map(Value::to_string).collect();
    std::fs::write(dir.join("events.ndjson"), events.join("\n")).unwrap();
    logexport::emulator::spawn(logexport::emulator::EmulatorOptions {
        bind: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        token: Some(TOKEN.into()),
        data_files: vec![dir.join("events.ndjson")],
        ..Default::default()
    })
    .await
    .expect("emulator")
}

#[tokio::test]
async fn a_refused_connection_is_named_and_a_successful_retry_moves_it_to_previous_error() {
    let port = free_port();
    let (app, _stop) = service(port, TOKEN).await;
    let alice = app.token("alice", &["acme"], &[], false).await;
    let receiver = Receiver::start(vec![]).await;
    let id = request(&app, &alice, &receiver).await;

    // Splunk is not there: the first attempt fails on the connection, and says so.
    let failed = eventually(30, "the first attempt to fail", || async {
        let s = status(&app, &alice, &id).await;
        s["last_error"].is_string().then_some(s)
    })
    .await;
    let error = failed["last_error"].as_str().unwrap();
    assert!(error.contains("could not talk to Splunk"), "{error}");
    assert!(error.contains("connection"), "{error}");
    assert!(!error.contains("HTTP 503"), "{error}");

    // Splunk comes up; the retry succeeds.
    let dir = scratch_dir("status-splunk");
    let _emulator = emulator_on(port, &dir).await;
    let done = eventually(60, "the retry to succeed", || async {
        let s = status(&app, &alice, &id).await;
        (s["state"] == "succeeded").then_some(s)
    })
    .await;
    assert!(done["attempts"].as_i64().unwrap() >= 2, "{done:#}");
    assert_eq!(done["last_error"], Value::Null, "{done:#}");
    let previous = done["previous_error"].as_str().expect("previous_error");
    assert!(previous.contains("could not talk to Splunk"), "{previous}");
    // Finished: every slice done, no search running.
    assert_eq!(done["slices_done"], done["slices_total"], "{done:#}");
    assert_eq!(done["searches_running"], 0, "{done:#}");
    assert_eq!(done["estimated_seconds_left"], Value::Null);
}

#[tokio::test]
async fn the_requester_is_not_given_the_operators_hints() {
    let dir = scratch_dir("status-hints");
    let port = free_port();
    let _emulator = emulator_on(port, &dir).await;
    let (app, _stop) = service(port, "wrong-token").await;
    let alice = app.token("alice", &["acme"], &[], false).await;
    let receiver = Receiver::start(vec![]).await;
    let id = request(&app, &alice, &receiver).await;
    let done = eventually(30, "the export to fail", || async {
        let s = status(&app, &alice, &id).await;
        (s["state"] == "failed").then_some(s)
    })
    .await;
    let error = done["last_error"].as_str().unwrap();
    assert!(error.contains("Splunk rejected"), "{error}");
    assert!(!error.contains("splunk.bearer_token"), "{error}");
    assert!(!error.contains("check "), "{error}");
    let call = eventually(30, "the callback", || async {
        receiver.calls().first().cloned()
    })
    .await;
    let body: Value = serde_json::from_slice(&call.body).unwrap();
    assert_eq!(body["status"], "failed");
    let said = body.to_string();
    assert!(!said.contains("splunk.bearer_token"), "{said}");
    assert!(said.contains("Splunk rejected"), "{said}");
    // The operator still reads the hint in the stored error (and the worker's log).
    let stored: String =
        sqlx::query_scalar("SELECT last_error FROM export_jobs WHERE id = $1::uuid")
            .bind(&id)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert!(stored.contains("check splunk.bearer_token"), "{stored}");
}

#[tokio::test]
async fn a_500_names_the_request_id_the_log_carries() {
    let (url, pool) = test_db().await;
    let app = spawn_app_with(pool.clone(), test_config(&url)).await;
    let alice = app.token("alice", &["acme"], &[], false).await;
    let id = app
        .request_export(
            &alice,
            &format!("/api/v1/organization/acme/exportlogs?{JANUARY}"),
            &json!({"callback_email": "a@example.com"}),
        )
        .await;
    // Break the table the status reads, as a botched manual change would.
    sqlx::query("ALTER TABLE export_jobs RENAME COLUMN namespace TO namespace_gone")
        .execute(&pool)
        .await
        .unwrap();
    let response = app
        .client
        .get(app.url(&format!("/api/v1/exportlogs/{id}")))
        .bearer_auth(&alice)
        .header("x-request-id", "req-operator-test-1")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 500);
    assert_eq!(response.headers()["x-request-id"], "req-operator-test-1");
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        body["detail"],
        "internal error; see the service log for request req-operator-test-1"
    );
    // Without a client-chosen id the service makes one, and names that same one.
    let response = app
        .client
        .get(app.url(&format!("/api/v1/exportlogs/{id}")))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 500);
    let request_id = response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = response.json().await.unwrap();
    assert!(
        body["detail"].as_str().unwrap().ends_with(&request_id),
        "{body} vs {request_id}"
    );
}
