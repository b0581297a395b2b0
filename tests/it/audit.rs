//! Audit delivery as a kind of job: an event whose post to Splunk HEC fails is retried after the
//! `[audit]` backoff and lands in Splunk exactly once; a job whose stored arguments do not parse
//! fails as invalid, and nothing is posted for it.

use std::sync::{Arc, Mutex};

use logexport::emulator::{EventFilter, Faults};
use logexport::queue::{QueueListener, jobs};
use serde_json::json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::helpers::{assert_still, audit_jobs, audit_waiting, eventually, spawn_app};
use crate::quay_auth::{audit_to, hec_emulator};

const MAIL: &str = r#"{"callback_email": "admin@example.com"}"#;

#[tokio::test]
async fn an_audit_event_whose_post_fails_is_retried_and_delivered_once() {
    let emulator = hec_emulator().await;
    emulator.set_faults(Faults {
        hec_unavailable: true,
        ..Faults::default()
    });
    let app = spawn_app(|c| audit_to(c, &emulator)).await;
    let ns1 = app.token("ns1", &[], &[], false).await;
    let accepted = app
        .post_export(&ns1, "/api/v1/organization/ns1/exportlogs", MAIL)
        .await;
    assert_eq!(accepted.status(), 200);

    let stop = CancellationToken::new();
    let listener = QueueListener::spawn(app.pool.clone(), stop.clone());
    let runner = crate::helpers::audit_runner(&app.pool, &app.config);
    let shipping = tokio::spawn(runner.run(listener, stop.clone()));
    let failed = eventually(10, "the first post refused", || async {
        let jobs = audit_jobs(&app.pool).await;
        (jobs.len() == 1 && jobs[0].last_error.is_some()).then_some(jobs)
    })
    .await;
    let error = failed[0].last_error.clone().unwrap_or_default();
    assert!(
        error.starts_with("HEC answered 503"),
        "names HEC and its answer: {error}"
    );
    assert!(
        emulator.events_in(&EventFilter::default()).is_empty(),
        "nothing in Splunk while HEC refuses"
    );

    emulator.set_faults(Faults::default());
    let in_splunk = || {
        emulator.events_in(&EventFilter {
            namespace: Some("ns1".into()),
            ..Default::default()
        })
    };
    eventually(20, "the event delivered", || async {
        (audit_waiting(&app.pool).await == 0 && !in_splunk().is_empty()).then_some(())
    })
    .await;
    // Longer than the backoff (1 s): a second delivery would be seen.
    assert_still(3, "the event in Splunk once", || async {
        in_splunk().len() == 1
    })
    .await;
    let stored = in_splunk();
    assert_eq!(stored[0]["kind"], "export_logs_success");
    assert_eq!(stored[0]["id"], failed[0].event_id.to_string());
    let jobs = audit_jobs(&app.pool).await;
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!(jobs[0].state, "succeeded", "{jobs:?}");
    assert!(jobs[0].attempt >= 2, "retried: {jobs:?}");
    assert_eq!(
        jobs[0].last_error.as_deref(),
        Some(error.as_str()),
        "the refused attempt's error is kept"
    );
    stop.cancel();
    shipping.await.unwrap();
}

#[tokio::test]
async fn an_audit_job_whose_args_do_not_parse_fails_as_invalid_without_posting() {
    let emulator = hec_emulator().await;
    let app = spawn_app(|c| audit_to(c, &emulator)).await;
    let key = Uuid::new_v4().to_string();
    let mut conn = app.pool.acquire().await.unwrap();
    let enqueued = jobs::enqueue_unique(
        &mut conn,
        jobs::AUDIT_EVENT,
        &key,
        &json!({"id": "not-an-id", "event": "not an object"}),
    )
    .await
    .unwrap();
    assert!(enqueued);
    drop(conn);

    let posts: Arc<Mutex<Vec<Vec<Uuid>>>> = Arc::default();
    let seen = posts.clone();
    let runner = logexport::audit::AuditDelivery::new(&app.config)
        .unwrap()
        .expect("the HEC sink")
        .with_before_post(Arc::new(move |ids: &[Uuid]| {
            seen.lock().unwrap().push(ids.to_vec())
        }))
        .into_runner(app.pool.clone());
    assert!(runner.run_next().await.unwrap(), "the job was claimed");
    assert!(!runner.run_next().await.unwrap(), "and is not retried");

    let (state, attempt, error): (String, i32, Option<String>) =
        sqlx::query_as("SELECT state, attempt, last_error FROM jobs WHERE unique_key = $1")
            .bind(&key)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!((state.as_str(), attempt), ("failed", 1));
    let error = error.unwrap_or_default();
    assert!(
        error.contains("the job's args do not parse"),
        "says what is wrong: {error}"
    );
    assert!(posts.lock().unwrap().is_empty(), "nothing was posted");
    assert!(emulator.events_in(&EventFilter::default()).is_empty());
}

#[tokio::test]
async fn housekeeping_forgets_delivered_audit_events_past_retention_and_keeps_failed_ones() {
    let emulator = hec_emulator().await;
    let app = spawn_app(|c| {
        audit_to(c, &emulator);
        c.worker.job_retention_days = 30;
    })
    .await;
    // (state, days since it finished) of each event's job.
    let rows = [
        ("succeeded", 31),
        ("succeeded", 1),
        ("failed", 31),
        ("queued", 0),
    ];
    let mut keys = Vec::new();
    for (state, days) in rows {
        let id = Uuid::new_v4();
        let mut conn = app.pool.acquire().await.unwrap();
        let args =
            json!({"id": id, "event": {"id": id.to_string(), "kind": "export_logs_success"}});
        jobs::enqueue_unique(&mut conn, jobs::AUDIT_EVENT, &id.to_string(), &args)
            .await
            .unwrap();
        sqlx::query(
            "UPDATE jobs SET state = $2,
                 finished_at = CASE WHEN $2 = 'queued' THEN NULL
                                    ELSE now() - make_interval(days => $3) END
             WHERE kind = 'audit_event' AND unique_key = $1",
        )
        .bind(id.to_string())
        .bind(state)
        .bind(days)
        .execute(&app.pool)
        .await
        .unwrap();
        keys.push(id);
    }

    logexport::worker::Housekeeper::new(app.pool.clone(), (*app.config).clone(), None)
        .run_once()
        .await;

    let left: Vec<Uuid> = audit_jobs(&app.pool)
        .await
        .into_iter()
        .map(|job| job.event_id)
        .collect();
    assert_eq!(
        left,
        vec![keys[1], keys[2], keys[3]],
        "only the delivered event past retention is gone"
    );
}
