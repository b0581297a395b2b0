//! The job runner's migration on a database the previous schema populated: queued and running
//! exports still finish, every pending notification is delivered exactly once (a channel already
//! delivered is not sent again), settled ones are never re-sent, audit events wait as they were,
//! and the status API shows the notification states it showed before.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use logexport::config::Secret;
use logexport::emulator::{self, EmulatorOptions};
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::helpers::{
    assert_still, eventually, postgres_base, spawn_app_with, spawn_export_worker, test_config,
    use_emulator,
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
    let audit: Vec<Uuid> = (0..3).map(|_| Uuid::new_v4()).collect();
    for id in &audit {
        sqlx::query("INSERT INTO audit_outbox (id, event, attempts) VALUES ($1, $2, 1)")
            .bind(id)
            .bind(json!({"event": {"action": "export.requested"}, "id": id}))
            .execute(&pool)
            .await
            .unwrap();
    }

    logexport::db::migrate(&pool)
        .await
        .expect("the job runner's migration");

    let mut config = test_config(&url);
    use_emulator(&mut config, &emulator, TOKEN);
    config.storage.local.path = scratch_dir("job-migration");
    config.email.transport = "smtp".into();
    config.email.smtp_url = Secret::new(format!("smtp://127.0.0.1:{}", sink.port));
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
    let outbox: Vec<(Uuid, i32)> =
        sqlx::query_as("SELECT id, attempts FROM audit_outbox ORDER BY id")
            .fetch_all(&pool)
            .await
            .unwrap();
    let mut expected: Vec<(Uuid, i32)> = audit.iter().map(|id| (*id, 1)).collect();
    expected.sort();
    assert_eq!(outbox, expected, "the audit events wait as they were");

    // The real worker: exports and notifications.
    let stop = CancellationToken::new();
    spawn_export_worker(pool.clone(), &app.config, &stop).await;
    let mailer = logexport::notify::mailer_from_config(&app.config.email).unwrap();
    let notifier = logexport::worker::Notifier::new(pool.clone(), &app.config, mailer).unwrap();
    let listener = logexport::queue::QueueListener::spawn(pool.clone(), stop.clone());
    let notifying = tokio::spawn(notifier.run(listener, stop.clone()));

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
    stop.cancel();
    notifying.await.unwrap();
}
