//! Exports narrowed by performer and kinds hold exactly the matching events, in every format.

use serde_json::{Value, json};

use crate::export::{
    ExportEnv, JANUARY, dataset, download, fingerprint_event, fingerprint_log, gunzip, january,
    parse_csv_rows, sorted,
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
    let bytes = if status["compression"] == "gzip" {
        gunzip(&bytes)
    } else {
        bytes
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

#[tokio::test]
async fn a_performer_filter_keeps_only_that_performers_events() {
    let env = ExportEnv::start(&dataset(), |_| {}).await;
    let id = env
        .request(
            &format!("/api/v1/organization/acme/exportlogs?{JANUARY}&performer=user1"),
            json!({"callback_email": "a@example.com", "compression": "gzip"}),
        )
        .await;
    let (status, text) = archive_text(&env, &id).await;
    assert_eq!(status["filters"], json!({"performer": "user1", "kind": []}));
    let doc: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(doc["details"]["performer"], "user1");
    let logs = doc["logs"].as_array().unwrap();
    let got = sorted(
        logs.iter()
            .filter(|l| l.get("terminator").is_none())
            .map(fingerprint_log)
            .collect(),
    );
    let want = expected(&env, None, |e| e["performer"] == "user1");
    assert!(!want.is_empty());
    assert_eq!(got, want);
}

#[tokio::test]
async fn several_kinds_in_the_body_keep_exactly_those_kinds() {
    let env = ExportEnv::start(&dataset(), |_| {}).await;
    let id = env
        .request(
            &format!("/api/v1/organization/acme/exportlogs?{JANUARY}"),
            json!({"callback_email": "a@example.com", "format": "ndjson",
                   "kind": ["push_repo", "create_tag"]}),
        )
        .await;
    let (status, text) = archive_text(&env, &id).await;
    assert_eq!(
        status["filters"]["kind"],
        json!(["create_tag", "push_repo"])
    );
    let got = sorted(
        text.lines()
            .map(|l| fingerprint_log(&serde_json::from_str(l).unwrap()))
            .collect(),
    );
    let want = expected(&env, None, |e| {
        e["kind"] == "push_repo" || e["kind"] == "create_tag"
    });
    assert!(!want.is_empty());
    assert_eq!(got, want);
}

#[tokio::test]
async fn a_repository_and_kind_filter_in_csv() {
    let env = ExportEnv::start(&dataset(), |_| {}).await;
    let id = env
        .request(
            &format!("/api/v1/repository/acme/web/exportlogs?{JANUARY}&kind=pull_repo"),
            json!({"callback_email": "a@example.com", "format": "csv"}),
        )
        .await;
    let (_, text) = archive_text(&env, &id).await;
    let rows = parse_csv_rows(&text);
    let kind_column = rows[0]
        .iter()
        .position(|h| h == "kind")
        .expect("kind column");
    let want = expected(&env, Some("web"), |e| e["kind"] == "pull_repo");
    assert!(!want.is_empty());
    assert_eq!(rows.len() - 1, want.len());
    assert!(rows[1..].iter().all(|r| r[kind_column] == "pull_repo"));
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
