//! Typed rows: an export whose stored request was corrupted by hand after it was accepted ends
//! `invalid` with an error naming the column, and exports nothing — no Splunk search, no
//! archive — instead of running with a default (a repository export widened to its namespace, a
//! performer filter dropped, another format).

use logexport::config::StorageKind;
use logexport::domain::{ExportId, ExportScope, Performer, RepositoryName};
use logexport::emulator::{self, EmulatorOptions};
use logexport::queue::{NewExport, storage};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::helpers::{
    eventually, garage_s3_config, org_export, spawn_app_with, spawn_export_worker, test_config,
    test_db, use_emulator,
};

const TOKEN: &str = "splunk-test-token";

/// acme/web's January 2024, by user1, as JSON: every column the corruptions below touch is set.
fn web_export() -> NewExport {
    NewExport {
        scope: ExportScope::Repository,
        repository: Some(RepositoryName::parse("web").unwrap()),
        performer: Some(Performer::parse("user1").unwrap()),
        ..org_export("acme", "01/31/2024")
    }
}

/// The column each statement corrupts; none of these columns has a CHECK constraint.
const CORRUPTIONS: [(&str, &str); 7] = [
    (
        "repository",
        "UPDATE export_jobs SET repository = 'not a repo!!' WHERE id = $1",
    ),
    // Empty on a repository export: run, it would cover all of acme.
    (
        "repository",
        "UPDATE export_jobs SET repository = NULL WHERE id = $1",
    ),
    (
        "performer",
        "UPDATE export_jobs SET performer = 'Bob Smith!' WHERE id = $1",
    ),
    (
        "format",
        "UPDATE export_jobs SET format = 'xml' WHERE id = $1",
    ),
    (
        "namespace",
        "UPDATE export_jobs SET namespace = 'Acme Corp' WHERE id = $1",
    ),
    (
        "compression",
        "UPDATE export_jobs SET compression = 'rar' WHERE id = $1",
    ),
    (
        "timezone",
        "UPDATE export_jobs SET timezone = 'Mars/Olympus' WHERE id = $1",
    ),
];

#[derive(Debug, sqlx::FromRow)]
struct Outcome {
    state: String,
    attempt: i32,
    last_error: Option<String>,
    object_key: Option<String>,
    unsealed_object_key: Option<String>,
    notify_state: String,
}

async fn outcome(pool: &PgPool, id: ExportId) -> Outcome {
    sqlx::query_as(
        "SELECT state, attempt, last_error, object_key, unsealed_object_key, notify_state
         FROM export_jobs WHERE id = $1",
    )
    .bind(id.0)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_row_corrupted_by_hand_ends_invalid_naming_the_column_and_exports_nothing() {
    let emulator = emulator::spawn(EmulatorOptions {
        token: Some(TOKEN.into()),
        ..EmulatorOptions::default()
    })
    .await
    .expect("emulator");
    for i in 0..20 {
        emulator.ingest(
            json!({"kind": "push_repo", "account": "acme", "repository": "web",
            "performer": "user1", "datetime": 1_704_067_200 + i * 3600}),
        );
    }
    let (url, pool) = test_db().await;
    let mut config = test_config(&url);
    use_emulator(&mut config, &emulator, TOKEN);
    config.storage.kind = StorageKind::S3;
    config.storage.s3 = garage_s3_config();
    config.export.object_prefix = format!("it-{}/", uuid::Uuid::new_v4().simple());

    // Accepted, then corrupted before any worker runs.
    let mut corrupted = Vec::new();
    for (column, statement) in CORRUPTIONS {
        let id = storage::enqueue(&pool, &web_export()).await.unwrap();
        let changed = sqlx::query(statement)
            .bind(id.0)
            .execute(&pool)
            .await
            .unwrap();
        assert_eq!(changed.rows_affected(), 1, "{statement}");
        corrupted.push((column, id));
    }
    // `state` and `scope` need no such care: their CHECK constraints refuse any other value, so
    // a stored state or scope always parses.
    let (_, probe) = corrupted[0];
    for statement in [
        "UPDATE export_jobs SET state = 'bogus' WHERE id = $1",
        "UPDATE export_jobs SET scope = 'galaxy' WHERE id = $1",
    ] {
        let refused = sqlx::query(statement).bind(probe.0).execute(&pool).await;
        assert!(refused.is_err(), "Postgres took {statement}");
    }

    let stop = CancellationToken::new();
    spawn_export_worker(pool.clone(), &config, &stop).await;
    for (column, id) in &corrupted {
        eventually(
            30,
            &format!("the export with a bad {column} ended"),
            || async {
                let state = outcome(&pool, *id).await.state;
                (state != "queued" && state != "running").then_some(())
            },
        )
        .await;
        let ended = outcome(&pool, *id).await;
        assert_eq!(ended.state, "invalid", "{column}: {ended:?}");
        let error = ended.last_error.as_deref().unwrap_or_default();
        assert!(
            error.contains(&format!("column {column} does not parse")),
            "{column}: {error}"
        );
        assert_eq!(ended.attempt, 1, "{column}: claimed once, never retried");
        assert_eq!(
            (ended.object_key, ended.unsealed_object_key),
            (None, None),
            "{column}: no archive"
        );
        assert_eq!(ended.notify_state, "pending", "{column}: its one notice");
    }
    // The problem with the value, not only the column, is in the error.
    let bad_repository = outcome(&pool, corrupted[0].1).await.last_error.unwrap();
    assert!(
        bad_repository.contains("\"not a repo!!\""),
        "{bad_repository}"
    );
    let empty_repository = outcome(&pool, corrupted[1].1).await.last_error.unwrap();
    assert!(
        empty_repository.contains("export is of one repository"),
        "{empty_repository}"
    );
    let stats = emulator.stats();
    assert_eq!(
        (stats.search_jobs_created, stats.export_requests),
        (0, 0),
        "a corrupted export reached Splunk: {stats:?}"
    );

    // The requester reads why in the status document.
    let app = spawn_app_with(pool.clone(), config.clone()).await;
    let alice = app.token("alice", &["acme"], &[], false).await;
    let status: Value = app
        .export_status(&alice, &corrupted[3].1.to_string())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(status["state"], "invalid", "{status}");
    assert_eq!(status["status"], "invalidrequest", "{status}");
    assert!(
        status["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("column format") && e.contains("\"xml\"")),
        "{status}"
    );

    // The same worker exports the same request uncorrupted: the counters above could see it.
    let sound = storage::enqueue(&pool, &web_export()).await.unwrap();
    eventually(60, "the sound export succeeded", || async {
        (outcome(&pool, sound).await.state == "succeeded").then_some(())
    })
    .await;
    let stats = emulator.stats();
    assert!(
        stats.search_jobs_created + stats.export_requests > 0,
        "{stats:?}"
    );
    let key = outcome(&pool, sound).await.object_key.expect("an archive");
    let store = logexport::storage::from_config(&config).await.unwrap();
    assert!(store.size(&key).await.unwrap().is_some(), "{key} stored");
    for (column, id) in &corrupted {
        assert_eq!(
            outcome(&pool, *id).await.attempt,
            1,
            "{column}: never run again"
        );
    }
    stop.cancel();
}
