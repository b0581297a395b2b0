//! The job runner's migration on a database the previous schema populated: queued and running
//! exports still finish, every pending notification is delivered exactly once (a channel already
//! delivered is not sent again), settled ones are never re-sent, the status API shows the
//! notification states it showed before, and every audit event of the outbox becomes a job
//! (migration 28) that ships it to Splunk HEC exactly once.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use logexport::config::{AuditSink, Secret};
use logexport::emulator::{self, EmulatorOptions};
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::helpers::{
    assert_still, audit_jobs, audit_runner, audit_waiting, eventually, postgres_base,
    spawn_app_with, spawn_export_worker, test_config, use_emulator,
};
use crate::notify::harness::{Receiver, SmtpSink, free_port, scratch_dir};

const TOKEN: &str = "splunk-test-token";
/// The first version of the job runner's schema.
const JOBS_MIGRATION: i64 = 20260101000026;
const DELIVERED_AT: &str = "2026-01-02T03:04:05Z";

/// The database at the schema before the job runner.
async fn previous_schema() -> (String, PgPool) {
    logexport::telemetry::install_crypto_provider();
    let url = format!(
        "{}/logexport_test_{}",
        postgres_base(),
        Uuid::new_v4().simple()
    );
    logexport::db::ensure_database(&url)
        .await
        .expect("Postgres");
    let pool = PgPoolOptions::new()
        .max_connections(20)
        .connect(&url)
        .await
        .expect("connect");
    let all = &logexport::db::MIGRATOR;
    let before = Migrator {
        migrations: all
            .migrations
            .iter()
            .filter(|m| m.version < JOBS_MIGRATION)
            .cloned()
            .collect::<Vec<_>>()
            .into(),
        ..Migrator::DEFAULT
    };
    before.run(&pool).await.expect("the previous migrations");
    (url, pool)
}

/// An export row as the previous code wrote it: `state`, then the notification's columns.
struct OldRow {
    name: &'static str,
    state: &'static str,
    email: Option<&'static str>,
    callback: bool,
    notify_state: &'static str,
    notify_attempts: i32,
    /// Seconds from now the notification's lease ends (negative: it lapsed).
    notify_lease: Option<i32>,
    notify_last_error: Option<&'static str>,
    email_done: bool,
}

const ROWS: [OldRow; 8] = [
    OldRow {
        name: "queued",
        state: "queued",
        email: Some("queued@example.com"),
        callback: false,
        notify_state: "none",
        notify_attempts: 0,
        notify_lease: None,
        notify_last_error: None,
        email_done: false,
    },
    OldRow {
        name: "running",
        state: "running",
        email: Some("running@example.com"),
        callback: false,
        notify_state: "none",
        notify_attempts: 0,
        notify_lease: None,
        notify_last_error: None,
        email_done: false,
    },
    OldRow {
        name: "pending",
        state: "succeeded",
        email: Some("pending@example.com"),
        callback: false,
        notify_state: "pending",
        notify_attempts: 0,
        notify_lease: None,
        notify_last_error: None,
        email_done: false,
    },
    // A notifier died while it held this one.
    OldRow {
        name: "leased",
        state: "failed",
        email: Some("leased@example.com"),
        callback: false,
        notify_state: "pending",
        notify_attempts: 1,
        notify_lease: Some(-60),
        notify_last_error: None,
        email_done: false,
    },
    // Its e-mail went out; its callback is to be retried.
    OldRow {
        name: "partial",
        state: "succeeded",
        email: Some("partial@example.com"),
        callback: true,
        notify_state: "pending",
        notify_attempts: 1,
        notify_lease: None,
        notify_last_error: Some("callback: the receiver answered HTTP 500"),
        email_done: true,
    },
    OldRow {
        name: "delivered",
        state: "succeeded",
        email: Some("delivered@example.com"),
        callback: true,
        notify_state: "delivered",
        notify_attempts: 1,
        notify_lease: None,
        notify_last_error: None,
        email_done: true,
    },
    OldRow {
        name: "failed",
        state: "failed",
        email: None,
        callback: true,
        notify_state: "failed",
        notify_attempts: 3,
        notify_lease: None,
        notify_last_error: Some("callback: the receiver answered HTTP 404 (attempt 3 of 3)"),
        email_done: false,
    },
    OldRow {
        name: "skipped",
        state: "cancelled",
        email: Some("skipped@example.com"),
        callback: false,
        notify_state: "skipped",
        notify_attempts: 0,
        notify_lease: None,
        notify_last_error: None,
        email_done: false,
    },
];

async fn insert_old(pool: &PgPool, row: &OldRow, callback_url: &str) -> Uuid {
    let id = Uuid::new_v4();
    let finished = !matches!(row.state, "queued" | "running");
    sqlx::query(
        "INSERT INTO export_jobs (id, scope, namespace, requested_by, start_time, end_time,
             format, compression, callback_url, callback_email, state, attempt, max_attempts,
             lease_expires_at, worker_id, started_at, finished_at, download_url, url_expires_at,
             last_error, notify_state, notify_attempts, notify_run_at, notify_lease_expires_at,
             notify_last_error, notified_at, email_done, callback_done, webhook_id)
         VALUES ($1, 'organization', 'acme', 'alice', '2024-01-01T00:00:00Z',
             '2024-02-01T00:00:00Z', 'json', 'none', $2, $3, $4,
             CASE WHEN $4 = 'queued' THEN 0 ELSE 1 END, 3,
             CASE WHEN $4 = 'running' THEN now() - interval '1 minute' END,
             CASE WHEN $4 = 'running' THEN 'a-worker-that-died' END,
             CASE WHEN $4 = 'queued' THEN NULL ELSE now() END,
             CASE WHEN $5 THEN now() END,
             CASE WHEN $4 = 'succeeded' THEN 'http://127.0.0.1:9/archive' END,
             CASE WHEN $4 = 'succeeded' THEN now() + interval '7 days' END,
             CASE WHEN $4 = 'failed' THEN 'Splunk answered HTTP 503' END,
             $6, $7, CASE WHEN $6 = 'pending' THEN now() END,
             now() + make_interval(secs => $8), $9,
             CASE WHEN $6 = 'delivered' THEN $10::timestamptz END, $11, $6 = 'delivered',
             'msg_' || replace($1::text, '-', ''))",
    )
    .bind(id)
    .bind(row.callback.then_some(callback_url))
    .bind(row.email)
    .bind(row.state)
    .bind(finished)
    .bind(row.notify_state)
    .bind(row.notify_attempts)
    .bind(row.notify_lease.map(f64::from))
    .bind(row.notify_last_error)
    .bind(DELIVERED_AT)
    .bind(row.email_done)
    .execute(pool)
    .await
    .expect("a row of the previous schema");
    id
}

#[tokio::test]
async fn the_migration_keeps_every_export_and_notification_and_sends_each_notice_once() {
    let emulator = emulator::spawn(EmulatorOptions {
        token: Some(TOKEN.into()),
        ..EmulatorOptions::default()
    })
    .await
    .expect("emulator");
    for i in 0..10 {
        emulator.ingest(
            json!({"kind": "push_repo", "account": "acme", "repository": "web",
            "performer": "bob", "datetime": 1_704_067_200 + i * 3600}),
        );
    }
    let sink = SmtpSink::start(free_port(), &[]).await;
    let receiver = Receiver::start(Vec::new()).await;
    let callback_url = receiver.url("/hook").to_string();

    let (url, pool) = previous_schema().await;
    let mut ids = HashMap::new();
    for row in &ROWS {
        ids.insert(row.name, insert_old(&pool, row, &callback_url).await);
    }
    let audit = insert_old_audit_events(&pool).await;

    logexport::db::migrate(&pool)
        .await
        .expect("the job runner's migration");

    let mut config = test_config(&url);
    use_emulator(&mut config, &emulator, TOKEN);
    config.storage.local.path = scratch_dir("job-migration");
    config.email.transport = "smtp".into();
    config.email.smtp_url = Secret::new(format!("smtp://127.0.0.1:{}", sink.port));
    config.audit.sink = AuditSink::Hec;
    config.audit.hec_url = format!("{}/services/collector/event", emulator.base_url());
    config.audit.hec_token = Secret::new(TOKEN);
    config.audit.backoff_base_seconds = 1;
    config.audit.backoff_max_seconds = 1;
    config.audit.poll_interval_ms = 100;
    let app = spawn_app_with(pool.clone(), config).await;
    let alice = app.token("alice", &["acme"], &[], false).await;
    let status = |name: &'static str| {
        let (app, alice, id) = (&app, &alice, ids[name]);
        async move {
            let response = app.export_status(alice, &id.to_string()).await;
            assert_eq!(response.status(), 200, "{name}");
            response.json::<Value>().await.unwrap()
        }
    };

    // Before any worker runs, the status shows each notification as the old columns held it.
    for row in &ROWS {
        let doc = status(row.name).await;
        let notification = &doc["notification"];
        assert_eq!(
            notification["state"], row.notify_state,
            "{}: {doc}",
            row.name
        );
        assert_eq!(
            notification["attempts"], row.notify_attempts,
            "{}",
            row.name
        );
        assert_eq!(
            notification["last_error"].as_str(),
            row.notify_last_error,
            "{}",
            row.name
        );
        assert_eq!(
            notification["next_attempt_at"].is_string(),
            row.notify_state == "pending",
            "{}: {doc}",
            row.name
        );
        let delivered_at = notification["delivered_at"]
            .as_str()
            .map(|t| t.parse::<DateTime<Utc>>().unwrap());
        let expected = (row.notify_state == "delivered")
            .then(|| DELIVERED_AT.parse::<DateTime<Utc>>().unwrap());
        assert_eq!(delivered_at, expected, "{}", row.name);
    }
    let outbox: Option<String> = sqlx::query_scalar("SELECT to_regclass('audit_outbox')::text")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(outbox, None, "the outbox is gone");
    let moved: Vec<(Uuid, String, i32, Option<String>)> = audit_jobs(&pool)
        .await
        .into_iter()
        .map(|job| (job.event_id, job.state, job.attempt, job.last_error))
        .collect();
    let mut moved_sorted = moved.clone();
    moved_sorted.sort();
    let mut expected: Vec<(Uuid, String, i32, Option<String>)> = audit
        .iter()
        .map(|(id, old)| {
            let error = old.last_error.map(str::to_owned);
            (*id, "queued".to_owned(), old.attempts, error)
        })
        .collect();
    expected.sort();
    assert_eq!(
        moved_sorted, expected,
        "each audit event waits as a job, with its attempts and last error"
    );

    // The real worker: exports and notifications.
    let stop = CancellationToken::new();
    spawn_export_worker(pool.clone(), &app.config, &stop).await;
    let mailer = logexport::notify::mailer_from_config(&app.config.email).unwrap();
    let notifier = logexport::worker::Notifier::new(pool.clone(), &app.config, mailer).unwrap();
    let listener = logexport::queue::QueueListener::spawn(pool.clone(), stop.clone());
    let notifying = tokio::spawn(notifier.run(listener.clone(), stop.clone()));
    let shipping = tokio::spawn(audit_runner(&pool, &app.config).run(listener, stop.clone()));

    for name in ["queued", "running"] {
        let doc = eventually(60, &format!("the {name} export finished"), || async {
            let doc = status(name).await;
            (doc["state"] != "queued" && doc["state"] != "running").then_some(doc)
        })
        .await;
        assert_eq!(doc["state"], "succeeded", "{name}: {doc}");
        assert_eq!(doc["logs_exported"], 10, "{name}");
    }
    for name in ["queued", "running", "pending", "leased", "partial"] {
        eventually(
            30,
            &format!("the {name} notification delivered"),
            || async { (status(name).await["notification"]["state"] == "delivered").then_some(()) },
        )
        .await;
    }
    let mails_to = |address: &str| {
        sink.messages()
            .iter()
            .filter(|m| m.envelope_to.contains(address))
            .count()
    };
    let once = [
        "queued@example.com",
        "running@example.com",
        "pending@example.com",
        "leased@example.com",
    ];
    assert_still(3, "one notice each, none re-sent", || async {
        once.iter().all(|a| mails_to(a) == 1)
            && [
                "partial@example.com",
                "delivered@example.com",
                "skipped@example.com",
            ]
            .iter()
            .all(|a| mails_to(a) == 0)
            && receiver.calls().len() == 1
    })
    .await;
    assert_eq!(sink.messages().len(), once.len(), "no other e-mail");
    let call: Value = serde_json::from_slice(&receiver.calls()[0].body).unwrap();
    assert_eq!(
        call["export_id"],
        ids["partial"].to_string(),
        "the one callback retried"
    );

    // What the API shows now: the pending ones delivered on their next attempt, the settled ones
    // as they were.
    let expected = [
        ("queued", "delivered", 1),
        ("running", "delivered", 1),
        ("pending", "delivered", 1),
        ("leased", "delivered", 2),
        ("partial", "delivered", 2),
        ("delivered", "delivered", 1),
        ("failed", "failed", 3),
        ("skipped", "skipped", 0),
    ];
    for (name, state, attempts) in expected {
        let doc = status(name).await;
        assert_eq!(doc["notification"]["state"], state, "{name}: {doc}");
        assert_eq!(doc["notification"]["attempts"], attempts, "{name}: {doc}");
    }
    let partial = status("partial").await;
    assert_eq!(
        partial["notification"]["last_error"], "callback: the receiver answered HTTP 500",
        "an earlier attempt's error is kept"
    );

    // Each audit event of the outbox in Splunk exactly once, its job succeeded.
    let shipped = || {
        let stored = emulator.events_in(&emulator::EventFilter {
            namespace: Some(AUDIT_ACCOUNT.into()),
            ..Default::default()
        });
        let mut ids: Vec<Uuid> = stored
            .iter()
            .map(|e| e["id"].as_str().unwrap().parse().unwrap())
            .collect();
        ids.sort();
        ids
    };
    let mut all: Vec<Uuid> = audit.iter().map(|(id, _)| *id).collect();
    all.sort();
    eventually(30, "the outbox's audit events in Splunk", || async {
        (shipped() == all && audit_waiting(&pool).await == 0).then_some(())
    })
    .await;
    assert_still(3, "each audit event shipped once", || async {
        shipped() == all
    })
    .await;
    for job in audit_jobs(&pool).await {
        assert_eq!(job.state, "succeeded", "{job:?}");
    }
    stop.cancel();
    notifying.await.unwrap();
    shipping.await.unwrap();
}

/// The `account` of the audit events the previous schema held.
const AUDIT_ACCOUNT: &str = "audit-acme";

/// An audit event waiting in the outbox, as the previous shipper left it.
struct OldAuditEvent {
    attempts: i32,
    /// Seconds from now it is due.
    due_in: i32,
    /// Seconds from now a shipper's lease on it ends.
    leased_for: Option<i32>,
    last_error: Option<&'static str>,
}

static OLD_AUDIT_EVENTS: [OldAuditEvent; 3] = [
    OldAuditEvent {
        attempts: 0,
        due_in: 0,
        leased_for: None,
        last_error: None,
    },
    // HEC refused it twice; its next attempt is a moment away.
    OldAuditEvent {
        attempts: 2,
        due_in: 2,
        leased_for: None,
        last_error: Some("HEC answered 503 Service Unavailable: Server is busy"),
    },
    // A shipper of the previous version holds it.
    OldAuditEvent {
        attempts: 1,
        due_in: 0,
        leased_for: Some(2),
        last_error: Some("HEC unreachable: connection refused"),
    },
];

/// Fills the outbox with [`OLD_AUDIT_EVENTS`] in Quay's event shape; returns their ids.
async fn insert_old_audit_events(pool: &PgPool) -> Vec<(Uuid, &'static OldAuditEvent)> {
    let mut ids = Vec::new();
    for old in &OLD_AUDIT_EVENTS {
        let id = Uuid::new_v4();
        let event = json!({
            "id": id.to_string(), "kind": "export_logs_success", "account": AUDIT_ACCOUNT,
            "performer": "alice", "repository": null, "ip": "192.0.2.7",
            "metadata_json": {"export_id": Uuid::new_v4().to_string(),
                              "message": "queued for export"},
            "datetime": Utc::now().timestamp(),
        });
        sqlx::query(
            "INSERT INTO audit_outbox (id, event, attempts, next_attempt_at, leased_until,
                 last_error)
             VALUES ($1, $2, $3, now() + make_interval(secs => $4),
                 now() + make_interval(secs => $5), $6)",
        )
        .bind(id)
        .bind(event)
        .bind(old.attempts)
        .bind(f64::from(old.due_in))
        .bind(old.leased_for.map(f64::from))
        .bind(old.last_error)
        .execute(pool)
        .await
        .expect("an audit event of the previous schema");
        ids.push((id, old));
    }
    ids
}
