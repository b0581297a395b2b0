//! The exportlogs API: enqueueing, validation, permissions, idempotency, status.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app};

const ORG_PATH: &str = "/api/v1/organization/acme/exportlogs";
const MAIL: &str = r#"{"callback_email": "admin@example.com"}"#;

struct Row {
    namespace: String,
    repository: Option<String>,
    scope: String,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
}

async fn row(app: &TestApp, id: &str) -> Row {
    let (namespace, repository, scope, start, end): (String, Option<String>, String, DateTime<Utc>, DateTime<Utc>) =
        sqlx::query_as(
            "SELECT namespace, repository, scope, start_time, end_time FROM export_jobs WHERE id = $1::uuid",
        )
        .bind(id)
        .fetch_one(&app.pool)
        .await
        .expect("row");
    Row {
        namespace,
        repository,
        scope,
        start,
        end,
    }
}

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

async fn export_id(response: reqwest::Response) -> String {
    assert_eq!(response.status(), 200, "{:?}", response.text().await);
    let body: Value = response.json().await.unwrap();
    body["export_id"].as_str().expect("export_id").to_owned()
}

#[tokio::test]
async fn each_endpoint_enqueues_one_job_with_the_right_scope_and_range() {
    let app = spawn_app(|_| {}).await;
    let alice = app.token("alice", &["acme"], &[], false).await;

    let id = export_id(
        app.post_export(
            &alice,
            "/api/v1/user/exportlogs?starttime=01/01/2024&endtime=01/31/2024",
            MAIL,
        )
        .await,
    )
    .await;
    let r = row(&app, &id).await;
    assert_eq!(
        (r.namespace.as_str(), r.scope.as_str(), r.repository),
        ("alice", "user", None)
    );
    assert_eq!(
        (r.start, r.end),
        (utc("2024-01-01T00:00:00Z"), utc("2024-02-01T00:00:00Z"))
    );

    // Body fields and the ISO day form.
    let body = json!({"callback_email": "admin@example.com", "starttime": "2024-01-01", "endtime": "2024-01-31"});
    let id = export_id(app.post_export(&alice, ORG_PATH, &body.to_string()).await).await;
    let r = row(&app, &id).await;
    assert_eq!(
        (r.namespace.as_str(), r.scope.as_str()),
        ("acme", "organization")
    );
    assert_eq!(
        (r.start, r.end),
        (utc("2024-01-01T00:00:00Z"), utc("2024-02-01T00:00:00Z"))
    );

    // A timezone shifts which midnight the days start at.
    let id = export_id(
        app.post_export(
            &alice,
            "/api/v1/repository/acme/web/exportlogs?starttime=01/01/2024&endtime=01/01/2024&timezone=Asia/Tokyo",
            MAIL,
        )
        .await,
    )
    .await;
    let r = row(&app, &id).await;
    assert_eq!(
        (
            r.namespace.as_str(),
            r.repository.as_deref(),
            r.scope.as_str()
        ),
        ("acme", Some("web"), "repository")
    );
    assert_eq!(
        (r.start, r.end),
        (utc("2023-12-31T15:00:00Z"), utc("2024-01-01T15:00:00Z"))
    );

    assert_eq!(app.job_count().await, 3);
}

#[tokio::test]
async fn bad_input_is_refused_with_a_message_and_nothing_is_enqueued() {
    let app = spawn_app(|c| c.callback.allowed_hosts.clear()).await;
    let alice = app.token("alice", &["acme"], &[], false).await;
    let q = "?starttime=01/01/2024&endtime=01/31/2024";
    let oversized = format!(
        r#"{{"callback_email": "admin@example.com", "pad": "{}"}}"#,
        "x".repeat(70_000)
    );
    let cases: Vec<(String, String, &str)> = vec![
        (
            format!("{ORG_PATH}?starttime=garbage&endtime=01/31/2024"),
            MAIL.into(),
            "starttime",
        ),
        (
            format!("{ORG_PATH}?starttime=02/30/2024"),
            MAIL.into(),
            "starttime",
        ),
        (
            format!("{ORG_PATH}?starttime=02/01/2024&endtime=01/01/2024"),
            MAIL.into(),
            "before",
        ),
        (
            format!("{ORG_PATH}?starttime=01/01/2020&endtime=01/31/2024"),
            MAIL.into(),
            "days",
        ),
        (
            format!("{ORG_PATH}{q}&timezone=Mars/Base"),
            MAIL.into(),
            "timezone",
        ),
        (format!("{ORG_PATH}{q}"), "{}".into(), "callback"),
        (format!("{ORG_PATH}{q}"), "".into(), "callback"),
        (
            format!("{ORG_PATH}{q}"),
            r#"{"callback_email": "not-an-address"}"#.into(),
            "callback_email",
        ),
        (
            format!("{ORG_PATH}{q}"),
            r#"{"callback_email": "a@example.com\r\nBcc: x@evil.com"}"#.into(),
            "callback_email",
        ),
        (
            format!("{ORG_PATH}{q}"),
            r#"{"callback_email": "a@example.com\nSubject: hi"}"#.into(),
            "callback_email",
        ),
        (
            format!("{ORG_PATH}{q}"),
            r#"{"callback_url": "ftp://example.com/x"}"#.into(),
            "http",
        ),
        (
            format!("{ORG_PATH}{q}"),
            r#"{"callback_url": "http://user:pw@example.com/x"}"#.into(),
            "credentials",
        ),
        (
            format!("{ORG_PATH}{q}"),
            r#"{"callback_url": "http://127.0.0.1:8080/hook"}"#.into(),
            "internal",
        ),
        (
            format!("{ORG_PATH}{q}"),
            r#"{"callback_url": "http://10.0.0.5/hook"}"#.into(),
            "internal",
        ),
        (
            format!("{ORG_PATH}{q}"),
            r#"{"callback_url": "http://169.254.169.254/latest/meta-data"}"#.into(),
            "internal",
        ),
        (
            format!("{ORG_PATH}{q}"),
            r#"{"callback_url": "http://[::1]/hook"}"#.into(),
            "internal",
        ),
        (
            format!("{ORG_PATH}{q}"),
            r#"{"callback_url": "http://2130706433/hook"}"#.into(),
            "internal",
        ),
        (
            format!("{ORG_PATH}{q}"),
            r#"{"callback_url": "http://0x7f.0.0.1/hook"}"#.into(),
            "internal",
        ),
        (
            format!("{ORG_PATH}{q}"),
            r#"{"callback_url": "http://[::ffff:a9fe:a9fe]/"}"#.into(),
            "internal",
        ),
        (
            format!("{ORG_PATH}{q}"),
            r#"{"callback_url": "http://localhost:9/hook"}"#.into(),
            "internal",
        ),
        (
            format!("{ORG_PATH}{q}"),
            r#"{"callback_email": "admin@example.com", "format": "xml"}"#.into(),
            "format",
        ),
        (
            format!("{ORG_PATH}{q}"),
            r#"{"callback_email": "admin@example.com", "compression": "zip"}"#.into(),
            "compression",
        ),
        (
            format!("{ORG_PATH}{q}"),
            r#"{"callback_email": "#.into(),
            "malformed JSON",
        ),
        (
            format!("{ORG_PATH}{q}"),
            r#"["callback_email"]"#.into(),
            "malformed JSON",
        ),
        (format!("{ORG_PATH}{q}"), oversized, "larger than"),
        (
            "/api/v1/organization/Acme/exportlogs".into(),
            MAIL.into(),
            "namespace",
        ),
        (
            "/api/v1/organization/a%22%20OR%20account%3D%22*/exportlogs".into(),
            MAIL.into(),
            "namespace",
        ),
        (
            "/api/v1/repository/acme/Bad%20Repo/exportlogs".into(),
            MAIL.into(),
            "repository",
        ),
    ];
    for (path, body, needle) in cases {
        let response = app.post_export(&alice, &path, &body).await;
        let status = response.status();
        let json: Value = response.json().await.expect("JSON error body");
        assert_eq!(status, 400, "{path} {body:.80}: {json}");
        assert_eq!(json["error_type"], "invalid_request");
        let message = json["error_message"].as_str().unwrap_or_default();
        assert!(
            message.contains(needle),
            "{path} {body:.80}: message {message:?} lacks {needle:?}"
        );
        assert_eq!(json["detail"], json["error_message"]);
    }
    assert_eq!(
        app.job_count().await,
        0,
        "a rejected request enqueued a job"
    );
}

#[tokio::test]
async fn authentication_and_permissions_are_enforced() {
    let app = spawn_app(|_| {}).await;
    let bob = app.token("bob", &[], &["acme/web"], false).await;
    let alice = app.token("alice", &["acme"], &[], false).await;

    let anonymous = app
        .client
        .post(app.url(ORG_PATH))
        .body(MAIL)
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    assert_eq!(
        app.post_export("lxp_unknown", ORG_PATH, MAIL)
            .await
            .status(),
        401
    );

    let response = app.post_export(&bob, ORG_PATH, MAIL).await;
    assert_eq!(response.status(), 403);
    let body: Value = response.json().await.unwrap();
    assert!(body["error_message"].as_str().unwrap().contains("acme"));
    assert_eq!(
        app.post_export(&bob, "/api/v1/repository/acme/api/exportlogs", MAIL)
            .await
            .status(),
        403
    );
    assert_eq!(
        app.post_export(&bob, "/api/v1/organization/other/exportlogs", MAIL)
            .await
            .status(),
        403
    );
    assert_eq!(app.job_count().await, 0);

    // Bob administers one repository and may export it and his own namespace.
    let bobs = export_id(
        app.post_export(&bob, "/api/v1/repository/acme/web/exportlogs", MAIL)
            .await,
    )
    .await;
    let alices = export_id(app.post_export(&alice, ORG_PATH, MAIL).await).await;
    // Quay's UI exports a personal namespace through the organization endpoint.
    assert_eq!(
        app.post_export(&bob, "/api/v1/organization/bob/exportlogs", MAIL)
            .await
            .status(),
        200
    );

    // A non-admin can never read another caller's export; the org admin can read exports of her org.
    assert_eq!(app.export_status(&bob, &alices).await.status(), 404);
    assert_eq!(app.export_status(&alice, &bobs).await.status(), 200);
    let mallory = app.token("mallory", &["other"], &[], false).await;
    assert_eq!(app.export_status(&mallory, &bobs).await.status(), 404);
    assert_eq!(
        app.export_status(&mallory, "not-a-uuid").await.status(),
        404
    );
    let root = app.token("root", &[], &[], true).await;
    let status: Value = app.export_status(&root, &bobs).await.json().await.unwrap();
    assert_eq!(status["state"], "queued");
    assert_eq!(status["namespace"], "acme");
    assert_eq!(status["repository"], "web");
    assert_eq!(status["notification"]["email"], "admin@example.com");
}

#[tokio::test]
async fn idempotency_key_returns_the_same_export() {
    let app = spawn_app(|_| {}).await;
    let alice = app.token("alice", &["acme"], &[], false).await;
    let post = |key: &'static str| {
        let request = app
            .client
            .post(app.url(ORG_PATH))
            .bearer_auth(&alice)
            .header("idempotency-key", key)
            .body(MAIL);
        async move { export_id(request.send().await.unwrap()).await }
    };
    let (a, b) = tokio::join!(post("k-1"), post("k-1"));
    assert_eq!(a, b);
    assert_eq!(post("k-1").await, a);
    assert_ne!(post("k-2").await, a);
    assert_eq!(app.job_count().await, 2);
    // Another caller's identical key is a different request.
    let root = app.token("root", &[], &[], true).await;
    let other = app
        .client
        .post(app.url(ORG_PATH))
        .bearer_auth(&root)
        .header("idempotency-key", "k-1")
        .body(MAIL)
        .send()
        .await
        .unwrap();
    assert_ne!(export_id(other).await, a);
}

#[tokio::test]
async fn cancel_a_queued_export_and_health_endpoints() {
    let app = spawn_app(|_| {}).await;
    let alice = app.token("alice", &["acme"], &[], false).await;
    let id = export_id(app.post_export(&alice, ORG_PATH, MAIL).await).await;
    let response = app
        .client
        .delete(app.url(&format!("/api/v1/exportlogs/{id}")))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let status: Value = app.export_status(&alice, &id).await.json().await.unwrap();
    assert_eq!(status["state"], "cancelled");
    assert_eq!(status["notification"]["state"], "skipped");
    let again = app
        .client
        .delete(app.url(&format!("/api/v1/exportlogs/{id}")))
        .bearer_auth(&alice)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);

    assert_eq!(
        app.client
            .get(app.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        app.client
            .get(app.url("/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("logexport_queue_jobs{state=\"cancelled\"} 1"),
        "{metrics}"
    );
    let response = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert!(response.headers().contains_key("x-request-id"));
}
