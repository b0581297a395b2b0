//! One panic policy for every background loop: a unit of work that panics (an export attempt, a
//! notification delivery, an audit event's post, a scheduler tick) is logged, counted in
//! `logexport_background_panics_total{kind}` and treated as that unit's failure — and the loop
//! goes on to its next unit. "Exactly once" is asserted after a quiet period longer than the
//! retry backoff, so that a late duplicate would be seen.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use logexport::domain::{EmailAddress, ExportId};
use logexport::metrics::{METRICS, Scrape};
use logexport::notify::{Delivery, Mailer, Notice};
use logexport::queue::{ClaimedJob, ExportResult, NewExport, QueueListener, storage};
use logexport::schedule::{BeforeCommit, ScheduleTicks};
use logexport::worker::{JobContext, JobError, JobHandler, Notifier, WorkerPool, WorkerSettings};
use serde_json::json;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::helpers::{
    audit_jobs, audit_waiting, eventually, finished_export, metric, org_export, spawn_app,
    test_config, test_db, tick_jobs,
};
use crate::quay_auth::{audit_to, hec_emulator};

/// Longer than any retry below can take (backoff at most 1 s, polls of 100–200 ms): a duplicate
/// would have happened by then.
const QUIET: Duration = Duration::from_secs(3);

/// Panics of `kind` counted so far by this process.
fn panics(kind: &str) -> f64 {
    let scrape = METRICS.render(&Scrape::default());
    metric(
        &scrape,
        &format!("logexport_background_panics_total{{kind=\"{kind}\"}}"),
    )
}

fn export_of(namespace: &str) -> NewExport {
    org_export(namespace, "01/02/2024")
}

/// An export body that panics on the first attempt it is given, and succeeds on every other.
#[derive(Default)]
struct PanicsOnce {
    runs: Mutex<Vec<(ExportId, Instant)>>,
}

#[async_trait]
impl JobHandler for PanicsOnce {
    async fn run(&self, job: &ClaimedJob, _ctx: &JobContext) -> Result<ExportResult, JobError> {
        let first = {
            let mut runs = self.runs.lock().unwrap();
            runs.push((job.id, Instant::now()));
            runs.len() == 1
        };
        if first {
            panic!("the export body broke");
        }
        Ok(ExportResult {
            object_key: format!("noop/{}", job.id),
            ..ExportResult::default()
        })
    }
}

#[tokio::test]
async fn after_an_export_panics_its_attempt_is_retried_and_the_next_export_runs() {
    let (url, pool) = test_db().await;
    let config = test_config(&url);
    let before = panics("export");
    let broken = storage::enqueue(&pool, &export_of("acme")).await.unwrap();
    let handler = Arc::new(PanicsOnce::default());
    let stop = CancellationToken::new();
    let worker = tokio::spawn(
        WorkerPool::new(
            pool.clone(),
            WorkerSettings::from_config(&config.worker),
            handler.clone(),
        )
        .run(stop.clone()),
    );
    eventually(10, "the panicking attempt ran", || async {
        (!handler.runs.lock().unwrap().is_empty()).then_some(())
    })
    .await;
    let next = storage::enqueue(&pool, &export_of("other")).await.unwrap();
    for id in [broken, next] {
        eventually(20, "both exports succeeded", || async {
            let row = storage::get(&pool, id).await.unwrap()?;
            (row.state == "succeeded").then_some(())
        })
        .await;
    }
    tokio::time::sleep(QUIET).await;

    let runs = handler.runs.lock().unwrap().clone();
    let of = |id: ExportId| -> Vec<Instant> {
        runs.iter()
            .filter(|(job, _)| *job == id)
            .map(|(_, at)| *at)
            .collect()
    };
    let (broken_runs, next_runs) = (of(broken), of(next));
    assert_eq!(broken_runs.len(), 2, "the panic, then one retry");
    assert!(
        broken_runs[1] - broken_runs[0] >= Duration::from_millis(500),
        "retried after the worker's backoff"
    );
    assert_eq!(next_runs.len(), 1, "the next export ran once");
    let row = storage::get(&pool, broken).await.unwrap().unwrap();
    assert_eq!(row.attempt, 2, "the panic spent an attempt");
    let error = row.previous_error.unwrap_or_default();
    assert!(
        error.contains("the export job panicked: the export body broke"),
        "{error}"
    );
    assert_eq!(panics("export") - before, 1.0);
    stop.cancel();
    worker.await.unwrap();
}

/// A mailer that panics on its first message to one address, and delivers every other message.
struct PanickyMailer {
    address: &'static str,
    sends: Mutex<Vec<(String, Uuid, Instant)>>,
}

#[async_trait]
impl Mailer for PanickyMailer {
    async fn send(&self, to: &EmailAddress, notice: &Notice) -> Delivery {
        let first_to_address = {
            let mut sends = self.sends.lock().unwrap();
            let before = sends.iter().filter(|(a, _, _)| a == self.address).count();
            sends.push((to.to_string(), notice.export_id.0, Instant::now()));
            to.to_string() == self.address && before == 0
        };
        if first_to_address {
            panic!("the mail transport broke");
        }
        Delivery::Delivered {
            receipt: "250 queued".into(),
        }
    }
}

#[tokio::test]
async fn a_panicking_delivery_is_a_failed_attempt_retried_with_backoff_and_the_next_is_delivered() {
    let (url, pool) = test_db().await;
    let mut config = test_config(&url);
    config.email.max_attempts = 3;
    config.callback.backoff_base_seconds = 1;
    config.callback.backoff_max_seconds = 1;
    let before = panics("notification");
    let broken = finished_export(&pool, "acme", "broken@example.com").await;
    let mailer = Arc::new(PanickyMailer {
        address: "broken@example.com",
        sends: Mutex::default(),
    });
    let notifier = Notifier::new(pool.clone(), &config, mailer.clone()).unwrap();
    let stop = CancellationToken::new();
    let listener = QueueListener::spawn(pool.clone(), stop.clone());
    let notifying = tokio::spawn(notifier.run(listener, stop.clone()));

    // The panicking attempt is recorded as the e-mail's failed attempt (the error is kept
    // once a later attempt delivers).
    let error: String = eventually(10, "the failed attempt recorded", || async {
        storage::get(&pool, broken)
            .await
            .unwrap()?
            .notify_last_error
    })
    .await;
    assert!(
        error.contains("email: the notification delivery panicked: the mail transport broke"),
        "{error}"
    );
    let next = finished_export(&pool, "other", "next@example.com").await;
    for id in [broken, next] {
        eventually(20, "both notifications delivered", || async {
            let row = storage::get(&pool, id).await.unwrap()?;
            (row.notify_state == "delivered").then_some(())
        })
        .await;
    }
    tokio::time::sleep(QUIET).await;

    let sends = mailer.sends.lock().unwrap().clone();
    let to = |id: ExportId| -> Vec<Instant> {
        sends
            .iter()
            .filter(|(_, export, _)| *export == id.0)
            .map(|(_, _, at)| *at)
            .collect()
    };
    let (broken_sends, next_sends) = (to(broken), to(next));
    assert_eq!(broken_sends.len(), 2, "the panic, then one delivery");
    assert!(
        broken_sends[1] - broken_sends[0] >= Duration::from_millis(500),
        "retried after the notifier's backoff"
    );
    assert_eq!(next_sends.len(), 1, "the next notice sent once");
    let row = storage::get(&pool, broken).await.unwrap().unwrap();
    assert_eq!(row.notify_attempts, 2, "the panic counted as an attempt");
    assert_eq!(panics("notification") - before, 1.0);
    stop.cancel();
    notifying.await.unwrap();
}

#[tokio::test]
async fn a_panicking_audit_post_is_shipped_again_once_and_the_next_event_is_shipped() {
    let emulator = hec_emulator().await;
    let app = spawn_app(|c| audit_to(c, &emulator)).await;
    let ns1 = app.token("ns1", &[], &[], false).await;
    let request = || async {
        let accepted = app
            .post_export(
                &ns1,
                "/api/v1/organization/ns1/exportlogs",
                r#"{"callback_email": "admin@example.com"}"#,
            )
            .await;
        assert_eq!(accepted.status(), 200);
    };
    request().await;
    let first = audit_jobs(&app.pool).await[0].event_id;

    let before = panics("audit_shipping");
    // Each post the runner was about to send: its events, and when.
    type Posts = Arc<Mutex<Vec<(Vec<Uuid>, Instant)>>>;
    let batches: Posts = Arc::default();
    let seen = batches.clone();
    let runner = logexport::audit::AuditDelivery::new(&app.config)
        .unwrap()
        .expect("the HEC sink")
        .with_before_post(Arc::new(move |ids: &[Uuid]| {
            let first = {
                let mut seen = seen.lock().unwrap();
                seen.push((ids.to_vec(), Instant::now()));
                seen.len() == 1
            };
            if first {
                panic!("the audit post broke");
            }
        }))
        .into_runner(app.pool.clone());
    let stop = CancellationToken::new();
    let listener = QueueListener::spawn(app.pool.clone(), stop.clone());
    let shipping = tokio::spawn(runner.run(listener, stop.clone()));
    let shipped = |n: usize| {
        let (emulator, pool) = (&emulator, &app.pool);
        async move {
            let waiting = audit_waiting(pool).await;
            let stored = emulator.events_in(&logexport::emulator::EventFilter {
                namespace: Some("ns1".into()),
                ..Default::default()
            });
            (waiting == 0 && stored.len() >= n).then_some(stored)
        }
    };
    eventually(20, "the first event in Splunk", || shipped(1)).await;
    request().await;
    eventually(20, "the next event in Splunk", || shipped(2)).await;
    tokio::time::sleep(QUIET).await;

    let stored = emulator.events_in(&logexport::emulator::EventFilter {
        namespace: Some("ns1".into()),
        ..Default::default()
    });
    assert_eq!(stored.len(), 2, "each event exactly once: {stored:?}");
    let batches = batches.lock().unwrap().clone();
    assert_eq!(batches[0].0, vec![first], "the post that panicked");
    assert_eq!(batches[1].0, vec![first], "the same event again");
    assert!(
        batches[1].1 - batches[0].1 >= Duration::from_millis(500),
        "shipped again after the audit backoff"
    );
    assert_eq!(batches.len(), 3, "then the next event's post: {batches:?}");
    assert!(!batches[2].0.contains(&first));
    assert_eq!(panics("audit_shipping") - before, 1.0);
    let jobs = audit_jobs(&app.pool).await;
    assert_eq!(jobs.len(), 2, "one job per event: {jobs:?}");
    assert_eq!(
        (jobs[0].state.as_str(), jobs[0].attempt),
        ("succeeded", 2),
        "the panic counted as an attempt: {jobs:?}"
    );
    assert!(
        jobs[0]
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("the audit post broke"),
        "the panic is the attempt's error: {jobs:?}"
    );
    assert_eq!((jobs[1].state.as_str(), jobs[1].attempt), ("succeeded", 1));
    stop.cancel();
    shipping.await.unwrap();
}

/// The exports a schedule made, by period start.
async fn scheduled(pool: &PgPool, schedule_id: &str) -> Vec<chrono::DateTime<Utc>> {
    sqlx::query_scalar("SELECT start_time FROM export_jobs WHERE schedule_id = $1 ORDER BY 1")
        .bind(Uuid::parse_str(schedule_id).unwrap())
        .fetch_all(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn after_a_scheduler_tick_panics_the_next_tick_makes_each_period_once() {
    let app = spawn_app(|c| c.schedule.interval_seconds = 1).await;
    let alice = app.token("alice", &["acme"], &[], false).await;
    let three_days_ago = (Utc::now() - chrono::Duration::days(3)).format("%Y-%m-%d");
    let schedule = app
        .create_schedule(
            &alice,
            "/api/v1/organization/acme/exportschedules",
            json!({"period": "daily", "timezone": "UTC", "start_date": three_days_ago.to_string(),
                   "delay_minutes": 0, "callback_email": "audit@example.com"}),
        )
        .await;

    let before = panics("schedule_tick");
    // The first turn panics with its three exports written and uncommitted.
    let turns = Arc::new(AtomicUsize::new(0));
    let counted = turns.clone();
    let hook: BeforeCommit = Arc::new(move |_| {
        let turn = counted.fetch_add(1, Ordering::SeqCst);
        Box::pin(async move {
            if turn == 0 {
                panic!("the scheduler broke mid-turn");
            }
        })
    });
    let stop = CancellationToken::new();
    let listener = QueueListener::spawn(app.pool.clone(), stop.clone());
    let ticks = ScheduleTicks::new(app.pool.clone(), &app.config).with_before_commit(hook);
    let scheduling = tokio::spawn(ticks.run(listener, stop.clone()));
    eventually(20, "the closed days exported", || async {
        (scheduled(&app.pool, &schedule).await.len() >= 3).then_some(())
    })
    .await;
    tokio::time::sleep(QUIET).await;

    let made = scheduled(&app.pool, &schedule).await;
    assert_eq!(made.len(), 3, "each closed day exactly once: {made:?}");
    let days: HashMap<_, _> = made.iter().map(|d| (d.date_naive(), ())).collect();
    assert_eq!(days.len(), 3, "three distinct days: {made:?}");
    assert_eq!(
        turns.load(Ordering::SeqCst),
        2,
        "the panicked turn, then one"
    );
    assert_eq!(panics("schedule_tick") - before, 1.0);
    // The panic was a failed attempt of its tick's job, retried (finding nothing left to do).
    let failed: Vec<_> = tick_jobs(&app.pool)
        .await
        .into_iter()
        .filter(|job| job.last_error.is_some())
        .collect();
    assert_eq!(failed.len(), 1, "{failed:?}");
    let error = failed[0].last_error.clone().unwrap_or_default();
    assert!(
        error.contains("the scheduler broke mid-turn"),
        "says what panicked: {error}"
    );
    assert_eq!(
        (failed[0].state.as_str(), failed[0].attempt),
        ("succeeded", 2)
    );
    stop.cancel();
    scheduling.await.unwrap();
}

#[tokio::test]
async fn a_tick_that_always_panics_gives_up_after_three_attempts_and_the_ticks_go_on() {
    let app = spawn_app(|c| c.schedule.interval_seconds = 1).await;
    let alice = app.token("alice", &["acme"], &[], false).await;
    let yesterday = (Utc::now() - chrono::Duration::days(1)).format("%Y-%m-%d");
    let schedule = app
        .create_schedule(
            &alice,
            "/api/v1/organization/acme/exportschedules",
            json!({"period": "daily", "timezone": "UTC", "start_date": yesterday.to_string(),
                   "delay_minutes": 0, "callback_email": "audit@example.com"}),
        )
        .await;
    let hook: BeforeCommit = Arc::new(|_| Box::pin(async { panic!("the scheduler is broken") }));
    let stop = CancellationToken::new();
    let listener = QueueListener::spawn(app.pool.clone(), stop.clone());
    let ticks = ScheduleTicks::new(app.pool.clone(), &app.config).with_before_commit(hook);
    let scheduling = tokio::spawn(ticks.run(listener, stop.clone()));

    let failed = eventually(20, "a tick given up", || async {
        tick_jobs(&app.pool)
            .await
            .into_iter()
            .find(|job| job.state == "failed")
    })
    .await;
    assert_eq!(
        failed.attempt, 4,
        "three ticks, then the give-up: {failed:?}"
    );
    let error = failed.last_error.clone().unwrap_or_default();
    assert!(
        error.contains("gave up after 3 failed attempts"),
        "says why it stopped: {error}"
    );
    eventually(5, "later periods' ticks", || async {
        let later = tick_jobs(&app.pool)
            .await
            .into_iter()
            .filter(|job| job.period > failed.period)
            .count();
        (later >= 2).then_some(())
    })
    .await;
    assert!(scheduled(&app.pool, &schedule).await.is_empty());
    stop.cancel();
    scheduling.await.unwrap();
}
