//! Exports narrowed by performer and kinds hold exactly the matching events, in every format.

use serde_json::{Value, json};

use crate::export::{
    ExportEnv, JANUARY, archive_fingerprints, dataset, download, fingerprint_event, gunzip,
    january, sorted, unzstd_cli,
};

/// The archive's text (gunzipped when needed) of a finished export.
async fn archive_text(env: &ExportEnv, id: &str) -> (Value, String) {
    let status = env.finished(id).await;
    assert_eq!(status["state"], "succeeded", "{status}");
    let bytes = download(status["exported_data_url"].as_str().unwrap())
        .await
        .bytes()
        .await
        .unwrap()
        .to_vec();
    let bytes = match status["compression"].as_str() {
        Some("gzip") => gunzip(&bytes),
        Some("zstd") => unzstd_cli(&bytes),
        _ => bytes,
    };
    (status, String::from_utf8(bytes).unwrap())
}

/// The fingerprints of acme's January events that `keep` selects.
fn expected(
    env: &ExportEnv,
    repository: Option<&str>,
    keep: impl Fn(&Value) -> bool,
) -> Vec<String> {
    let (start, end) = january();
    sorted(
        env.expected("acme", repository, start, end)
            .iter()
            .filter(|e| keep(e))
            .filter_map(fingerprint_event)
            .collect(),
    )
}

const FORMATS: [&str; 3] = ["json", "ndjson", "csv"];

/// Exports `path` with `body` in every format and checks each archive holds exactly `want`.
async fn exports_exactly(env: &ExportEnv, path: &str, body: Value, want: &[String]) -> Vec<Value> {
    assert!(!want.is_empty(), "the filter selects something");
    let mut statuses = Vec::new();
    for format in FORMATS {
        let mut body = body.clone();
        body["format"] = json!(format);
        body["callback_email"] = json!("a@example.com");
        let id = env.request(path, body).await;
        let (status, text) = archive_text(env, &id).await;
        assert_eq!(
            sorted(archive_fingerprints(format, &text)),
            want,
            "{format}: exactly the matching events"
        );
        if format == "json" {
            let doc: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(doc["details"]["performer"], status["filters"]["performer"]);
            // The archive names the kinds only when there are some.
            let kinds = doc["details"].get("kind").cloned().unwrap_or(json!([]));
            assert_eq!(kinds, status["filters"]["kind"]);
        }
        statuses.push(status);
    }
    statuses
}

#[tokio::test]
async fn a_performer_filter_keeps_only_that_performers_events() {
    let env = ExportEnv::start(&dataset(), |_| {}).await;
    let want = expected(&env, None, |e| e["performer"] == "user1");
    let statuses = exports_exactly(
        &env,
        &format!("/api/v1/organization/acme/exportlogs?{JANUARY}&performer=user1"),
        json!({"compression": "gzip"}),
        &want,
    )
    .await;
    for status in statuses {
        assert_eq!(status["filters"], json!({"performer": "user1", "kind": []}));
    }
}

#[tokio::test]
async fn several_kinds_in_the_body_keep_exactly_those_kinds() {
    let env = ExportEnv::start(&dataset(), |_| {}).await;
    let want = expected(&env, None, |e| {
        e["kind"] == "push_repo" || e["kind"] == "create_tag"
    });
    let statuses = exports_exactly(
        &env,
        &format!("/api/v1/organization/acme/exportlogs?{JANUARY}"),
        json!({"kind": ["push_repo", "create_tag"]}),
        &want,
    )
    .await;
    for status in statuses {
        assert_eq!(
            status["filters"]["kind"],
            json!(["create_tag", "push_repo"])
        );
    }
}

#[tokio::test]
async fn a_repository_and_kind_filter_in_every_format() {
    let env = ExportEnv::start(&dataset(), |_| {}).await;
    let want = expected(&env, Some("web"), |e| e["kind"] == "pull_repo");
    exports_exactly(
        &env,
        &format!("/api/v1/repository/acme/web/exportlogs?{JANUARY}&kind=pull_repo"),
        json!({"compression": "zstd"}),
        &want,
    )
    .await;
}

#[tokio::test]
async fn a_bad_filter_is_refused_and_nothing_is_queued() {
    let env = ExportEnv::start(&dataset(), |_| {}).await;
    for (query, body) in [
        (
            "&kind=Push%20Repo",
            json!({"callback_email": "a@example.com"}),
        ),
        (
            "&performer=bad%20name!",
            json!({"callback_email": "a@example.com"}),
        ),
        (
            "",
            json!({"callback_email": "a@example.com", "kind": ["ok", "x\"y"]}),
        ),
        ("", json!({"callback_email": "a@example.com", "kind": 7})),
    ] {
        let response = env
            .app
            .post_export(
                &env.admin,
                &format!("/api/v1/organization/acme/exportlogs?{JANUARY}{query}"),
                &body.to_string(),
            )
            .await;
        assert_eq!(response.status(), 400, "{query} {body}");
        let error: Value = response.json().await.unwrap();
        assert!(error["error_message"].is_string(), "{error}");
    }
    assert_eq!(env.app.job_count().await, 0);
}
