//! Scheduled exports: the API, the scheduler's exactly-once periods (across time zones, concurrent
//! schedulers and a scheduler killed mid-run), pause/resume/delete, a revoked owner, catch-up.
//!
//! The scheduler's clock is the `now` each `tick` is given, so these tests drive days and months
//! in milliseconds; the tests of the `schedule_tick` jobs that run it in the workers use the wall
//! clock, ticking every second.

use std::sync::Arc;

use chrono::{DateTime, Duration, Utc};
use logexport::queue::{QueueListener, jobs};
use logexport::schedule::{BeforeCommit, ScheduleTicks, Scheduler};
use serde_json::{Value, json};
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use uuid::Uuid;

use crate::helpers::{
    TestApp, eventually, spawn_app, spawn_app_with, stays, test_config, test_db, tick_jobs,
    use_emulator,
};
use crate::notify::harness::Receiver;

const ACME: &str = "/api/v1/organization/acme/exportschedules";

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().to_utc()
}

fn scheduler(app: &TestApp) -> Scheduler {
    Scheduler::new(app.pool.clone(), &app.config)
}

/// A pool of its own, as another worker process would have.
async fn process_pool(app: &TestApp, connections: u32) -> PgPool {
    PgPoolOptions::new()
        .max_connections(connections)
        .connect(app.config.database.url.expose())
        .await
        .expect("connect")
}

/// The periods a schedule exported (not its pause notices), oldest first.
async fn periods(pool: &PgPool, schedule_id: &str) -> Vec<(DateTime<Utc>, DateTime<Utc>)> {
    sqlx::query_as(
        "SELECT start_time, end_time FROM export_jobs
         WHERE schedule_id = $1 AND state <> 'invalid' ORDER BY start_time",
    )
    .bind(Uuid::parse_str(schedule_id).unwrap())
    .fetch_all(pool)
    .await
    .unwrap()
}

fn assert_contiguous(periods: &[(DateTime<Utc>, DateTime<Utc>)]) {
    for w in periods.windows(2) {
        assert_eq!(w[0].1, w[1].0, "a gap or an overlap between periods");
    }
}

async fn json_of(response: reqwest::Response) -> Value {
    let status = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(status, 200, "{text}");
    serde_json::from_str(&text).unwrap()
}

async fn error_of(response: reqwest::Response) -> (u16, String) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    (status, body["error_message"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn a_daily_schedule_started_five_days_ago_creates_exactly_five_contiguous_day_exports() {
    let app = spawn_app(|_| {}).await;
    let alice = app.token("alice", &["acme"], &[], false).await;
    let id = app
        .create_schedule(
            &alice,
            ACME,
            json!({"period": "daily", "timezone": "America/New_York", "start_date": "2026-01-10",
                   "callback_email": "audit@example.com", "format": "csv", "compression": "gzip"}),
        )
        .await;

    // 02:00 on the 15th in New York: the 14th closed, and its default 60-minute delay is over.
    let now = at("2026-01-15T07:00:00Z");
    assert_eq!(scheduler(&app).tick(now).await.unwrap().enqueued, 5);
    let made = periods(&app.pool, &id).await;
    assert_eq!(made.len(), 5);
    assert_eq!(made[0].0, at("2026-01-10T05:00:00Z"), "New York midnight");
    assert_eq!(made[4].1, at("2026-01-15T05:00:00Z"));
    assert_contiguous(&made);
    assert!(made.iter().all(|(s, e)| *e - *s == Duration::hours(24)));

    // The same clock again creates nothing; the 15th is due once it closed plus the delay.
    assert_eq!(scheduler(&app).tick(now).await.unwrap().enqueued, 0);
    let before_delay = at("2026-01-16T05:59:00Z");
    assert_eq!(
        scheduler(&app).tick(before_delay).await.unwrap().enqueued,
        0
    );
    let after_delay = at("2026-01-16T06:00:00Z");
    assert_eq!(scheduler(&app).tick(after_delay).await.unwrap().enqueued, 1);

    // Each export is the owner's, for exactly its period, visible in its status document.
    let first: Uuid = sqlx::query_scalar(
        "SELECT id FROM export_jobs WHERE schedule_id = $1 ORDER BY start_time LIMIT 1",
    )
    .bind(Uuid::parse_str(&id).unwrap())
    .fetch_one(&app.pool)
    .await
    .unwrap();
    let status = json_of(app.export_status(&alice, &first.to_string()).await).await;
    assert_eq!(status["schedule_id"], id.as_str());
    assert_eq!(status["period_start"], "2026-01-10T05:00:00Z");
    assert_eq!(status["period_end"], "2026-01-11T05:00:00Z");
    assert_eq!(status["start_day"], "01/10/2026");
    assert_eq!(status["end_day"], "01/10/2026");
    assert_eq!(status["timezone"], "America/New_York");
    assert_eq!(status["requested_by"], "alice");
    assert_eq!(status["format"], "csv");
    assert_eq!(status["compression"], "gzip");
    assert_eq!(status["state"], "queued");

    let doc = json_of(app.schedule(&alice, &id).await).await;
    assert_eq!(doc["state"], "active");
    assert_eq!(doc["start_date"], "2026-01-10");
    assert_eq!(doc["next_period"]["start"], "2026-01-16T05:00:00Z");
    assert_eq!(doc["next_period"]["day"], "2026-01-16");
    assert_eq!(doc["next_run_at"], "2026-01-17T06:00:00Z");
    assert_eq!(doc["last_run"]["period_start"], "2026-01-15T05:00:00Z");
    assert_eq!(doc["last_run"]["state"], "queued");
    assert_eq!(doc["skipped_periods"]["count"], 0);
    assert_eq!(doc["exports"].as_array().unwrap().len(), 6);
}

#[tokio::test]
async fn a_berlin_daily_schedule_has_23_and_25_hour_days_across_the_clock_changes() {
    let app = spawn_app(|_| {}).await;
    let alice = app.token("alice", &["acme"], &[], false).await;
    let body = |start: &str| {
        json!({"period": "daily", "timezone": "Europe/Berlin", "start_date": start,
               "delay_minutes": 0, "callback_email": "audit@example.com"})
    };
    let march = app.create_schedule(&alice, ACME, body("2026-03-27")).await;
    let october = app.create_schedule(&alice, ACME, body("2026-10-24")).await;

    scheduler(&app)
        .tick(at("2026-03-31T00:00:00Z"))
        .await
        .unwrap();
    let spring = periods(&app.pool, &march).await;
    let hours: Vec<i64> = spring.iter().map(|(s, e)| (*e - *s).num_hours()).collect();
    assert_eq!(
        hours,
        [24, 24, 23, 24],
        "27, 28, 29 (clocks forward), 30 March"
    );
    assert_eq!(spring[2].0, at("2026-03-28T23:00:00Z"));
    assert_eq!(spring[2].1, at("2026-03-29T22:00:00Z"));
    assert_contiguous(&spring);

    scheduler(&app)
        .tick(at("2026-10-27T00:00:00Z"))
        .await
        .unwrap();
    let autumn = periods(&app.pool, &october).await;
    let hours: Vec<i64> = autumn.iter().map(|(s, e)| (*e - *s).num_hours()).collect();
    assert_eq!(hours, [24, 25, 24], "24, 25 (clocks back), 26 October");
    assert_eq!(autumn[1].0, at("2026-10-24T22:00:00Z"));
    assert_eq!(autumn[1].1, at("2026-10-25T23:00:00Z"));
    assert_contiguous(&autumn);
}

/// Four schedules in four time zones, ticked by `processes` schedulers at once with their own
/// connection pools, as many times as the clock advances: each period becomes one export.
async fn concurrent_schedulers_create_each_period_once(processes: usize) {
    let app = spawn_app(|_| {}).await;
    let alice = app.token("alice", &["acme"], &[], false).await;
    let mut ids = Vec::new();
    for tz in ["UTC", "Europe/Berlin", "Asia/Tokyo", "America/New_York"] {
        let body = json!({"period": "daily", "timezone": tz, "start_date": "2026-01-01",
                          "delay_minutes": 0, "callback_email": "audit@example.com"});
        ids.push(app.create_schedule(&alice, ACME, body).await);
    }
    let mut schedulers = Vec::new();
    for _ in 0..processes {
        schedulers.push(Scheduler::new(process_pool(&app, 2).await, &app.config));
    }

    let mut enqueued = 0;
    for step in 1..=12 {
        let now = at("2026-01-01T00:00:00Z") + Duration::days(3) * step;
        enqueued += tick_together(&schedulers, now).await;
    }

    // Up to 2026-02-06T00:00Z: 1 January to 5 February in UTC, Berlin and Tokyo (36 days), to
    // 4 February in New York (35).
    assert_eq!(enqueued, 36 + 36 + 36 + 35);
    assert_eq!(app.job_count().await, 143);
    for (id, expected) in ids.iter().zip([36, 36, 36, 35]) {
        let made = periods(&app.pool, id).await;
        assert_eq!(made.len(), expected, "{id}");
        assert_contiguous(&made);
    }

    // The backstop: a scheduler with a stale view (its cursor back 20 days) finds every period
    // already run and enqueues nothing.
    sqlx::query(
        "UPDATE export_schedules
         SET next_period_start = first_period_start + interval '20 days',
             next_run_at = first_period_start",
    )
    .execute(&app.pool)
    .await
    .unwrap();
    let report = schedulers[0]
        .tick(at("2026-02-06T00:00:00Z"))
        .await
        .unwrap();
    assert_eq!(report.enqueued, 0);
    assert_eq!(app.job_count().await, 143);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_schedulers_together_create_each_period_once() {
    concurrent_schedulers_create_each_period_once(2).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn three_schedulers_together_create_each_period_once() {
    concurrent_schedulers_create_each_period_once(3).await;
}

/// Ticks every scheduler at once and returns how many exports they enqueued together.
async fn tick_together(schedulers: &[Scheduler], now: DateTime<Utc>) -> u64 {
    let ticks: Vec<_> = schedulers
        .iter()
        .map(|s| {
            let s = s.clone();
            tokio::spawn(async move { s.tick(now).await.unwrap() })
        })
        .collect();
    let mut enqueued = 0;
    for tick in ticks {
        enqueued += tick.await.unwrap().enqueued;
    }
    enqueued
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn three_schedulers_one_killed_between_enqueue_and_commit_still_make_each_period_once() {
    let app = spawn_app(|_| {}).await;
    let alice = app.token("alice", &["acme"], &[], false).await;
    let mut ids = Vec::new();
    for tz in ["UTC", "Europe/Berlin", "Asia/Tokyo"] {
        let body = json!({"period": "daily", "timezone": tz, "start_date": "2026-01-01",
                          "delay_minutes": 0, "callback_email": "audit@example.com"});
        ids.push(app.create_schedule(&alice, ACME, body).await);
    }
    // 1 to 5 January have closed in all three zones.
    let now = at("2026-01-06T00:00:00Z");

    // The doomed process: one connection, whose server process we will kill.
    let doomed_pool = process_pool(&app, 1).await;
    let pid: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(&doomed_pool)
        .await
        .unwrap();
    let (reached, mut reached_rx) = tokio::sync::mpsc::unbounded_channel();
    let hook: BeforeCommit = Arc::new(move |id| {
        let reached = reached.clone();
        Box::pin(async move {
            let _ = reached.send(id);
            std::future::pending::<()>().await
        })
    });
    let doomed = Scheduler::new(doomed_pool, &app.config).with_before_commit(hook);
    let task = tokio::spawn(async move { doomed.tick(now).await });
    let stuck = reached_rx
        .recv()
        .await
        .expect("the scheduler reached its commit");

    // Its five runs and exports are written, uncommitted: nobody sees them. The two other
    // processes meanwhile do the other schedules and skip the locked one rather than wait for it
    // or duplicate it.
    assert_eq!(app.job_count().await, 0);
    let survivors = [
        Scheduler::new(process_pool(&app, 2).await, &app.config),
        Scheduler::new(process_pool(&app, 2).await, &app.config),
    ];
    assert_eq!(tick_together(&survivors, now).await, 10);
    let stuck_jobs: i64 =
        sqlx::query_scalar("SELECT count(*) FROM export_jobs WHERE schedule_id = $1")
            .bind(stuck)
            .fetch_one(&app.pool)
            .await
            .unwrap();
    assert_eq!(stuck_jobs, 0);

    // The process dies: its connection goes and Postgres rolls its transaction back.
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(pid)
        .execute(&app.pool)
        .await
        .unwrap();
    task.abort();
    let _ = task.await;
    eventually(10, "the killed backend to exit", || async {
        let alive: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE pid = $1")
            .bind(pid)
            .fetch_one(&app.pool)
            .await
            .ok()?;
        (alive == 0).then_some(())
    })
    .await;
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM schedule_runs WHERE schedule_id = $1")
        .bind(stuck)
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(
        runs, 0,
        "neither a run without its export nor an export without its run"
    );

    // The next ticks create the killed process's periods exactly once.
    assert_eq!(tick_together(&survivors, now).await, 5);
    assert_eq!(tick_together(&survivors, now).await, 0);
    assert_eq!(app.job_count().await, 15);
    for id in &ids {
        let made = periods(&app.pool, id).await;
        assert_eq!(made.len(), 5, "{id}");
        assert_contiguous(&made);
    }
}

#[tokio::test]
async fn a_schedule_is_paused_resumed_redirected_and_deleted_and_its_exports_stay() {
    let app = spawn_app(|_| {}).await;
    let alice = app.token("alice", &["acme"], &[], false).await;
    let bob = app.token("bob", &["other"], &[], false).await;
    let root = app.token("root", &[], &[], true).await;
    let id = app
        .create_schedule(
            &alice,
            ACME,
            json!({"period": "daily", "start_date": "2026-01-01", "delay_minutes": 0,
                   "callback_email": "audit@example.com"}),
        )
        .await;
    let s = scheduler(&app);
    assert_eq!(
        s.tick(at("2026-01-03T00:00:00Z")).await.unwrap().enqueued,
        2
    );

    let doc = json_of(
        app.patch_schedule(&alice, &id, json!({"paused": true}))
            .await,
    )
    .await;
    assert_eq!(doc["state"], "paused");
    assert_eq!(doc["paused_reason"], "paused through the API");
    assert_eq!(doc["next_run_at"], Value::Null);
    assert_eq!(
        s.tick(at("2026-01-06T00:00:00Z")).await.unwrap().enqueued,
        0
    );

    // The delivery changes (here while paused); the last channel cannot be removed.
    let doc = json_of(
        app.patch_schedule(
            &alice,
            &id,
            json!({"callback_email": "", "callback_url": "http://127.0.0.1:9/hook",
                   "format": "ndjson", "compression": "zstd"}),
        )
        .await,
    )
    .await;
    assert_eq!(doc["callback_email"], Value::Null);
    assert_eq!(doc["callback_url"], "http://127.0.0.1:9/hook");
    assert_eq!(doc["format"], "ndjson");
    let (status, message) = error_of(
        app.patch_schedule(&alice, &id, json!({"callback_url": ""}))
            .await,
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        message.starts_with("give callback_email or callback_url"),
        "{message}"
    );
    let (status, message) = error_of(
        app.patch_schedule(&alice, &id, json!({"format": "xml"}))
            .await,
    )
    .await;
    assert_eq!(
        (status, message.as_str()),
        (
            400,
            "invalid format \"xml\": expected one of json ndjson csv"
        )
    );
    let (status, message) = error_of(
        app.patch_schedule(&alice, &id, json!({"period": "weekly"}))
            .await,
    )
    .await;
    assert_eq!(status, 400);
    assert!(message.contains("unknown field `period`"), "{message}");

    // Resuming catches up on the periods missed while paused, with the new delivery.
    let doc = json_of(
        app.patch_schedule(&alice, &id, json!({"paused": false}))
            .await,
    )
    .await;
    assert_eq!(doc["state"], "active");
    assert_eq!(doc["paused_reason"], Value::Null);
    assert_eq!(
        s.tick(at("2026-01-06T00:00:00Z")).await.unwrap().enqueued,
        3
    );
    assert_contiguous(&periods(&app.pool, &id).await);
    let (format, callback_url): (String, Option<String>) = sqlx::query_as(
        "SELECT format, callback_url FROM export_jobs ORDER BY start_time DESC LIMIT 1",
    )
    .fetch_one(&app.pool)
    .await
    .unwrap();
    assert_eq!(format, "ndjson");
    assert_eq!(callback_url.as_deref(), Some("http://127.0.0.1:9/hook"));

    // Someone who neither owns it nor administers acme cannot tell it exists; a superuser can.
    assert_eq!(app.schedule(&bob, &id).await.status(), 404);
    assert_eq!(
        app.patch_schedule(&bob, &id, json!({"paused": true}))
            .await
            .status(),
        404
    );
    assert_eq!(app.delete_schedule(&bob, &id).await.status(), 404);
    assert_eq!(app.schedule(&root, &id).await.status(), 200);
    let list = json_of(
        app.client
            .get(app.url(ACME))
            .bearer_auth(&alice)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(list["schedules"].as_array().unwrap().len(), 1);
    assert_eq!(list["schedules"][0]["schedule_id"], id.as_str());
    let refused = app
        .client
        .get(app.url(ACME))
        .bearer_auth(&bob)
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);

    // Deleted: gone from the API and the scheduler; the five exports stay, still saying whence.
    let done = json_of(app.delete_schedule(&alice, &id).await).await;
    assert_eq!(done["schedule_id"], id.as_str());
    assert_eq!(app.schedule(&alice, &id).await.status(), 404);
    assert_eq!(
        s.tick(at("2026-01-09T00:00:00Z")).await.unwrap().enqueued,
        0
    );
    assert_eq!(app.job_count().await, 5);
    let export: Uuid = sqlx::query_scalar("SELECT id FROM export_jobs LIMIT 1")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    let status = json_of(app.export_status(&alice, &export.to_string()).await).await;
    assert_eq!(status["schedule_id"], id.as_str());
}

#[tokio::test]
async fn an_owner_who_lost_access_pauses_the_schedule_and_gets_one_notice_saying_so() {
    let receiver = Receiver::start(vec![]).await;
    let app = spawn_app(|_| {}).await;
    let alice = app.token("alice", &["acme"], &[], false).await;
    let hook = format!("http://127.0.0.1:{}/hook", receiver.port);
    let id = app
        .create_schedule(
            &alice,
            ACME,
            json!({"period": "daily", "start_date": "2026-01-01", "delay_minutes": 0,
                   "callback_url": hook}),
        )
        .await;
    let s = scheduler(&app);
    assert_eq!(
        s.tick(at("2026-01-03T00:00:00Z")).await.unwrap().enqueued,
        2
    );

    // Alice's token for acme is revoked; the token she still has administers another org only.
    sqlx::query("UPDATE api_tokens SET revoked_at = now() WHERE username = 'alice'")
        .execute(&app.pool)
        .await
        .unwrap();
    let alice = app.token("alice", &["other"], &[], false).await;
    let report = s.tick(at("2026-01-05T00:00:00Z")).await.unwrap();
    assert_eq!((report.enqueued, report.paused), (0, 1));

    // The owner can still see her schedule (404 would hide why it stopped).
    let doc = json_of(app.schedule(&alice, &id).await).await;
    assert_eq!(doc["state"], "paused");
    let reason = doc["paused_reason"].as_str().unwrap();
    assert_eq!(
        reason,
        "owner lost access: alice is no longer an administrator of organization acme"
    );

    // One notice: the due period's export, refused with the reason; nothing more while paused.
    assert_eq!(
        s.tick(at("2026-01-08T00:00:00Z")).await.unwrap(),
        Default::default()
    );
    let refused: Vec<(Uuid, String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT id, notify_state, start_time FROM export_jobs WHERE state = 'invalid'",
    )
    .fetch_all(&app.pool)
    .await
    .unwrap();
    assert_eq!(refused.len(), 1);
    assert_eq!(refused[0].1, "pending");
    assert_eq!(refused[0].2, at("2026-01-03T00:00:00Z"));
    assert_eq!(periods(&app.pool, &id).await.len(), 2);

    // The notifier delivers it as any export's notice, once.
    let mailer = logexport::notify::mailer_from_config(&app.config.email).unwrap();
    let notifier = logexport::worker::Notifier::new(app.pool.clone(), &app.config, mailer).unwrap();
    assert!(notifier.deliver_next().await.unwrap());
    assert!(!notifier.deliver_next().await.unwrap());
    let calls = receiver.calls();
    assert_eq!(calls.len(), 1);
    let body: Value = serde_json::from_slice(&calls[0].body).unwrap();
    assert_eq!(body["export_id"], refused[0].0.to_string());
    assert_eq!(body["status"], "invalidrequest");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains(&format!("scheduled export {id} is paused because alice is no longer an administrator of organization acme")),
        "{error}"
    );

    // Resumed without access: paused again at the next run, with one more notice.
    json_of(
        app.patch_schedule(&alice, &id, json!({"paused": false}))
            .await,
    )
    .await;
    assert_eq!(s.tick(at("2026-01-09T00:00:00Z")).await.unwrap().paused, 1);
    // Access restored and resumed: the periods missed meanwhile are exported.
    app.token("alice", &["acme"], &[], false).await;
    json_of(
        app.patch_schedule(&alice, &id, json!({"paused": false}))
            .await,
    )
    .await;
    assert_eq!(
        s.tick(at("2026-01-09T00:00:00Z")).await.unwrap().enqueued,
        6
    );
    let made = periods(&app.pool, &id).await;
    assert_eq!(made.len(), 8);
    assert_contiguous(&made);
}

#[tokio::test]
async fn catch_up_after_downtime_is_capped_and_the_skipped_periods_are_reported() {
    let app = spawn_app(|config| config.schedule.max_catch_up_periods = 3).await;
    let alice = app.token("alice", &["acme"], &[], false).await;
    let id = app
        .create_schedule(
            &alice,
            ACME,
            json!({"period": "daily", "start_date": "2026-01-01", "delay_minutes": 0,
                   "callback_email": "audit@example.com"}),
        )
        .await;

    // Ten days closed while no scheduler ran: the newest three are exported, oldest first.
    let report = scheduler(&app)
        .tick(at("2026-01-11T00:00:00Z"))
        .await
        .unwrap();
    assert_eq!((report.enqueued, report.skipped), (3, 7));
    let made = periods(&app.pool, &id).await;
    let starts: Vec<DateTime<Utc>> = made.iter().map(|p| p.0).collect();
    assert_eq!(
        starts,
        [
            at("2026-01-08T00:00:00Z"),
            at("2026-01-09T00:00:00Z"),
            at("2026-01-10T00:00:00Z")
        ]
    );

    let doc = json_of(app.schedule(&alice, &id).await).await;
    assert_eq!(doc["skipped_periods"]["count"], 7);
    assert_eq!(doc["skipped_periods"]["oldest"], "2026-01-01T00:00:00Z");
    assert_eq!(doc["skipped_periods"]["newest"], "2026-01-07T00:00:00Z");
    assert_eq!(doc["next_period"]["start"], "2026-01-11T00:00:00Z");
    // Its next period was due on 12 January, long before the real clock: it lags.
    assert!(doc["lag_seconds"].as_i64().unwrap() > 0);

    let metrics = app.metrics().await;
    assert!(
        metrics.contains("logexport_schedules{state=\"active\"} 1"),
        "{metrics}"
    );
    assert!(metrics.contains("logexport_schedules{state=\"paused\"} 0"));
    assert!(metrics.contains("logexport_schedule_runs_total{outcome=\"skipped\"} 7"));
    assert!(metrics.contains("logexport_schedule_runs_total{outcome=\"enqueued\"} 3"));
    let lag = metrics
        .lines()
        .find_map(|l| l.strip_prefix("logexport_schedule_lag_seconds "))
        .unwrap();
    assert!(lag.parse::<f64>().unwrap() > 0.0);
}

#[tokio::test]
async fn schedule_requests_are_checked_like_exports_and_a_refusal_stores_nothing() {
    let app = spawn_app(|_| {}).await;
    let alice = app.token("alice", &["acme"], &[], false).await;
    let bob = app.token("bob", &[], &[], false).await;
    let cb = "audit@example.com";
    let cases = [
        (
            &bob,
            ACME,
            json!({"period": "daily", "callback_email": cb}),
            403,
            "you are not an administrator of organization acme",
        ),
        (
            &bob,
            "/api/v1/repository/acme/web/exportschedules",
            json!({"period": "daily", "callback_email": cb}),
            403,
            "you are not an administrator of repository acme/web",
        ),
        (
            &alice,
            ACME,
            json!({"callback_email": cb}),
            400,
            "give period: daily, weekly or monthly",
        ),
        (
            &alice,
            ACME,
            json!({"period": "hourly", "callback_email": cb}),
            400,
            "invalid period \"hourly\": expected daily, weekly or monthly",
        ),
        (
            &alice,
            ACME,
            json!({"period": "daily", "timezone": "Mars/Base", "callback_email": cb}),
            400,
            "invalid timezone \"Mars/Base\": expected an IANA name such as UTC or Europe/Berlin",
        ),
        (
            &alice,
            ACME,
            json!({"period": "daily"}),
            400,
            "give callback_email or callback_url (or both): otherwise nobody learns where the export is",
        ),
        (
            &alice,
            ACME,
            json!({"period": "daily", "callback_url": "http://169.254.169.254/x"}),
            400,
            "invalid callback_url: callback host 169.254.169.254 resolves to 169.254.169.254, an internal address",
        ),
        (
            &alice,
            ACME,
            json!({"period": "daily", "callback_email": cb, "format": "xml"}),
            400,
            "invalid format \"xml\": expected one of json ndjson csv",
        ),
        (
            &alice,
            ACME,
            json!({"period": "daily", "callback_email": cb, "kind": "Push Repo"}),
            400,
            "invalid kind \"Push Repo\": log kinds are lowercase letters, digits and '_'",
        ),
        (
            &alice,
            ACME,
            json!({"period": "weekly", "start_date": "2026-03-04", "callback_email": cb}),
            400,
            "start_date 2026-03-04 is a Wed; weekly periods start on Monday (use 2026-03-02 or 2026-03-09)",
        ),
        (
            &alice,
            ACME,
            json!({"period": "monthly", "start_date": "2026-03-04", "callback_email": cb}),
            400,
            "start_date 2026-03-04 is not the first of a month; monthly periods start on the 1st",
        ),
        (
            &alice,
            ACME,
            json!({"period": "daily", "start_date": "03/04/2026", "callback_email": cb}),
            400,
            "invalid start_date \"03/04/2026\": expected YYYY-MM-DD",
        ),
        (
            &alice,
            ACME,
            json!({"period": "daily", "delay_minutes": 20000, "callback_email": cb}),
            400,
            "delay_minutes 20000 is too long; at most 10080 (a week)",
        ),
    ];
    for (token, path, body, status, message) in cases {
        let (got, text) = error_of(app.post_schedule(token, path, &body).await).await;
        assert_eq!((got, text.as_str()), (status, message), "{body}");
    }
    // The same refusal text as exportlogs gives for the same input.
    let (_, export_error) = error_of(
        app.post_export(
            &alice,
            "/api/v1/organization/acme/exportlogs",
            r#"{"timezone": "Mars/Base", "callback_email": "audit@example.com"}"#,
        )
        .await,
    )
    .await;
    assert!(export_error.starts_with("invalid timezone \"Mars/Base\""));
    let (status, text) = error_of(
        app.post_schedule(
            &alice,
            ACME,
            &json!({"period": "daily", "callback_email": cb, "starttime": "x"}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 400);
    assert!(
        text.starts_with("malformed JSON body: unknown field `starttime`"),
        "{text}"
    );
    let unauthenticated = app
        .client
        .post(app.url(ACME))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(unauthenticated.status(), 401);
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM export_schedules")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(stored, 0, "nothing stored on a refusal");

    // Every scope: bob's own namespace weekly, a repository of acme monthly.
    let mine = app
        .create_schedule(
            &bob,
            "/api/v1/user/exportschedules",
            json!({"period": "weekly", "start_date": "2026-03-02", "callback_email": cb}),
        )
        .await;
    let repo = "/api/v1/repository/acme/web/exportschedules";
    app.create_schedule(
        &alice,
        repo,
        json!({"period": "monthly", "start_date": "2026-03-01", "timezone": "Asia/Tokyo",
               "callback_email": cb, "performer": "deployer", "kind": ["push_repo"]}),
    )
    .await;
    let get = |token: &String, path: &str| {
        app.client
            .get(app.url(path))
            .bearer_auth(token.clone())
            .send()
    };
    let list = json_of(get(&bob, "/api/v1/user/exportschedules").await.unwrap()).await;
    assert_eq!(list["schedules"][0]["schedule_id"], mine.as_str());
    assert_eq!(list["schedules"][0]["scope"], "user");
    assert_eq!(list["schedules"][0]["namespace"], "bob");
    assert_eq!(
        list["schedules"][0]["next_period"]["end"],
        "2026-03-09T00:00:00Z"
    );
    let list = json_of(get(&alice, repo).await.unwrap()).await;
    let schedule = &list["schedules"][0];
    assert_eq!(schedule["repository"], "web");
    assert_eq!(schedule["period"], "monthly");
    assert_eq!(schedule["first_period_start"], "2026-02-28T15:00:00Z");
    assert_eq!(
        schedule["filters"],
        json!({"performer": "deployer", "kind": ["push_repo"]})
    );
    let list = json_of(get(&alice, ACME).await.unwrap()).await;
    assert_eq!(
        list["schedules"].as_array().unwrap().len(),
        1,
        "the repository's, in acme"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nightly_schedule_runs_in_the_workers_and_posts_each_closed_day_to_its_callback() {
    // The real clock this time: the workers' scheduler ticks every second with the wall clock.
    let today = Utc::now().date_naive();
    let day = |back: u64| {
        (today - chrono::Days::new(back))
            .and_hms_opt(0, 0, 0)
            .unwrap()
            .and_utc()
    };
    let (first, second) = (day(2), day(1));
    let mut events = Vec::new();
    for (start, hours) in [
        (first, [1, 13, 23]),
        (second, [0, 2, 12]),
        (day(0), [0, 0, 0]),
    ] {
        for h in hours {
            events.push(
                json!({"kind": "push_repo", "account": "acme", "repository": "web",
                               "performer": "alice", "ip": "192.0.2.1",
                               "datetime": (start + Duration::hours(h)).timestamp()}),
            );
        }
    }
    // The first day's last second belongs to it, the second's first instant to the second.
    events.push(
        json!({"kind": "delete_tag", "account": "acme", "repository": "web",
                       "performer": "alice", "ip": "192.0.2.1",
                       "datetime": (second - Duration::seconds(1)).timestamp()}),
    );
    let dir = std::env::temp_dir().join(format!("logexport-sched-{}", Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("events.ndjson");
    let lines: Vec<String> = events.iter().map(Value::to_string).collect();
    std::fs::write(&file, lines.join("\n")).unwrap();
    let emulator = logexport::emulator::spawn(logexport::emulator::EmulatorOptions {
        token: Some("splunk-test-token".into()),
        data_files: vec![file],
        ..Default::default()
    })
    .await
    .expect("emulator");

    let receiver = Receiver::start(vec![]).await;
    let (url, pool) = test_db().await;
    let mut config = test_config(&url);
    use_emulator(&mut config, &emulator, "splunk-test-token");
    config.storage.local.path = dir.join("archives");
    config.schedule.interval_seconds = 1;
    let app = spawn_app_with(pool.clone(), config).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let workers = tokio::spawn(logexport::service::work(
        pool,
        app.config.clone(),
        stop.clone(),
    ));

    let alice = app.token("alice", &["acme"], &[], false).await;
    let id = app
        .create_schedule(
            &alice,
            ACME,
            json!({"period": "daily", "timezone": "UTC",
                   "start_date": first.format("%Y-%m-%d").to_string(), "delay_minutes": 0,
                   "callback_url": format!("http://127.0.0.1:{}/nightly", receiver.port)}),
        )
        .await;

    let calls = eventually(60, "two callbacks", || async {
        let calls = receiver.calls();
        (calls.len() >= 2).then_some(calls)
    })
    .await;
    let mut bodies: Vec<Value> = calls
        .iter()
        .map(|c| serde_json::from_slice(&c.body).unwrap())
        .collect();
    bodies.sort_by_key(|b| b["start_time"].as_str().unwrap().to_owned());
    let label = |t: DateTime<Utc>| t.format("%m/%d/%Y").to_string();
    assert_eq!(bodies[0]["start_time"], label(first));
    assert_eq!(bodies[0]["end_time"], label(first));
    assert_eq!(bodies[0]["status"], "success");
    assert_eq!(
        bodies[0]["logs_exported"], 4,
        "three events and the last second"
    );
    assert_eq!(bodies[1]["start_time"], label(second));
    assert_eq!(bodies[1]["logs_exported"], 3, "from midnight on");

    // Today has not closed: the schedule says what comes next, and no third export comes in
    // three of the scheduler's ticks.
    let doc = eventually(10, "the schedule waiting for today", || async {
        let doc = json_of(app.schedule(&alice, &id).await).await;
        (doc["next_period"]["start"] == json!(day(0)) && doc["last_run"]["state"] == "succeeded")
            .then_some(doc)
    })
    .await;
    assert_eq!(doc["lag_seconds"], 0);
    stays(3, "two callbacks", || async { receiver.calls().len() == 2 }).await;
    stop.cancel();
    let _ = workers.await;
    let _ = std::fs::remove_dir_all(&dir);
}

/// A schedule whose last three days have closed, for the wall-clock tests.
async fn three_closed_days(app: &TestApp) -> String {
    let alice = app.token("alice", &["acme"], &[], false).await;
    let three_days_ago = (Utc::now() - Duration::days(3)).format("%Y-%m-%d");
    app.create_schedule(
        &alice,
        ACME,
        json!({"period": "daily", "timezone": "UTC", "start_date": three_days_ago.to_string(),
               "delay_minutes": 0, "callback_email": "audit@example.com"}),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_ticking_on_the_job_runner_enqueue_and_run_each_tick_period_once() {
    let app = spawn_app(|c| c.schedule.interval_seconds = 1).await;
    let schedule = three_closed_days(&app).await;

    // Two worker processes, each with its own pool and listener, started together.
    let stop = tokio_util::sync::CancellationToken::new();
    let mut processes = Vec::new();
    for _ in 0..2 {
        let pool = process_pool(&app, 2).await;
        let listener = QueueListener::spawn(pool.clone(), stop.clone());
        let ticks = ScheduleTicks::new(pool, &app.config);
        processes.push(tokio::spawn(ticks.run(listener, stop.clone())));
    }
    eventually(20, "five ticks done", || async {
        let done = tick_jobs(&app.pool)
            .await
            .iter()
            .filter(|job| job.state == "succeeded")
            .count();
        (done >= 5).then_some(())
    })
    .await;
    stop.cancel();
    for process in processes {
        process.await.unwrap();
    }

    let ticks = tick_jobs(&app.pool).await;
    let mut tick_periods: Vec<_> = ticks.iter().map(|job| job.period).collect();
    tick_periods.dedup();
    assert_eq!(
        tick_periods.len(),
        ticks.len(),
        "one job per period: {ticks:?}"
    );
    for job in &ticks {
        assert_eq!(job.period.timestamp_subsec_nanos(), 0, "{job:?}");
        assert_eq!(job.last_error, None, "{job:?}");
    }
    let done: Vec<_> = ticks
        .iter()
        .filter(|job| job.state == "succeeded")
        .collect();
    assert!(done.len() >= 5, "{ticks:?}");
    assert!(
        done.iter().all(|job| job.attempt == 1),
        "each period's tick ran once: {ticks:?}"
    );
    // Only the next period's tick may wait: no second chain of ticks was started.
    let waiting = ticks.iter().filter(|job| job.state == "queued").count();
    assert!(waiting <= 1, "{ticks:?}");
    assert_eq!(
        periods(&app.pool, &schedule).await.len(),
        3,
        "each closed day exported once"
    );
}

#[tokio::test]
async fn a_tick_job_whose_args_do_not_parse_fails_as_invalid_and_ticks_nothing() {
    let app = spawn_app(|c| c.schedule.interval_seconds = 1).await;
    let schedule = three_closed_days(&app).await;
    let mut conn = app.pool.acquire().await.unwrap();
    let key = "2026-12-06T06:00:00Z";
    let enqueued = jobs::enqueue_unique(
        &mut conn,
        jobs::SCHEDULE_TICK,
        key,
        &json!({"due": "tomorrow"}),
    )
    .await
    .unwrap();
    assert!(enqueued);
    drop(conn);

    let runner = ScheduleTicks::new(app.pool.clone(), &app.config).into_runner();
    assert!(runner.run_next().await.unwrap(), "the job was claimed");
    assert!(!runner.run_next().await.unwrap(), "and is not retried");

    let ticks = tick_jobs(&app.pool).await;
    assert_eq!(ticks.len(), 1, "no next tick was enqueued: {ticks:?}");
    assert_eq!((ticks[0].state.as_str(), ticks[0].attempt), ("failed", 1));
    let error = ticks[0].last_error.clone().unwrap_or_default();
    assert!(
        error.contains("the job's args do not parse"),
        "says what is wrong: {error}"
    );
    assert!(
        periods(&app.pool, &schedule).await.is_empty(),
        "nothing was ticked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_process_with_the_scheduler_disabled_enqueues_and_runs_no_ticks() {
    let dir = std::env::temp_dir().join(format!("logexport-sched-{}", Uuid::new_v4().simple()));
    let (url, pool) = test_db().await;
    let mut config = test_config(&url);
    config.storage.local.path = dir.join("archives");
    config.schedule.interval_seconds = 1;
    config.schedule.enabled = false;
    let app = spawn_app_with(pool.clone(), config).await;
    let schedule = three_closed_days(&app).await;
    // A tick some other process enqueued: this one leaves it alone.
    let mut conn = app.pool.acquire().await.unwrap();
    let due = Utc::now() - Duration::seconds(1);
    let key = due.format("%Y-%m-%dT%H:%M:%SZ").to_string();
    jobs::enqueue_unique(&mut conn, jobs::SCHEDULE_TICK, &key, &json!({"due": due}))
        .await
        .unwrap();
    drop(conn);

    let stop = tokio_util::sync::CancellationToken::new();
    let workers = tokio::spawn(logexport::service::work(
        pool,
        app.config.clone(),
        stop.clone(),
    ));
    stays(3, "no tick ran", || async {
        let ticks = tick_jobs(&app.pool).await;
        ticks.len() == 1 && ticks[0].state == "queued" && ticks[0].attempt == 0
    })
    .await;
    assert!(periods(&app.pool, &schedule).await.is_empty());
    stop.cancel();
    let _ = workers.await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn housekeeping_forgets_succeeded_ticks_after_an_hour_and_keeps_failed_ones() {
    let app = spawn_app(|_| {}).await;
    // (state, minutes since it finished) of each period's tick.
    let rows = [
        ("succeeded", 61),
        ("succeeded", 59),
        ("failed", 61),
        ("queued", 0),
    ];
    let mut periods = Vec::new();
    for (n, (state, minutes)) in rows.into_iter().enumerate() {
        let due = at("2026-12-06T06:00:00Z") + Duration::seconds(30 * n as i64);
        let key = due.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let mut conn = app.pool.acquire().await.unwrap();
        jobs::enqueue_unique(&mut conn, jobs::SCHEDULE_TICK, &key, &json!({"due": due}))
            .await
            .unwrap();
        sqlx::query(
            "UPDATE jobs SET state = $2,
                 finished_at = CASE WHEN $2 = 'queued' THEN NULL
                                    ELSE now() - make_interval(mins => $3) END
             WHERE kind = 'schedule_tick' AND unique_key = $1",
        )
        .bind(&key)
        .bind(state)
        .bind(minutes)
        .execute(&app.pool)
        .await
        .unwrap();
        periods.push(due);
    }

    logexport::worker::Housekeeper::new(app.pool.clone(), (*app.config).clone(), None)
        .run_once()
        .await;

    let left: Vec<_> = tick_jobs(&app.pool)
        .await
        .into_iter()
        .map(|job| job.period)
        .collect();
    assert_eq!(
        left,
        periods[1..],
        "only the tick that succeeded over an hour ago is gone"
    );
}
