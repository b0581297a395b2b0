//! The queue and worker pool: exactly-once, reclaim, fencing, retries, limits, wake-up, shutdown.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use logexport::config::Config;
use logexport::domain::{EmailAddress, ExportId};
use logexport::queue::{
    CHANNEL_NOTIFY, ClaimedJob, ExportResult, Finish, NewExport, QueueListener, storage,
};
use logexport::worker::{
    JobContext, JobError, JobHandler, NoopHandler, Notifier, WorkerPool, WorkerSettings,
};
use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tokio_util::sync::CancellationToken;

use crate::helpers::{eventually, org_export, test_config, test_db};

fn new_export(namespace: &str, max_attempts: u32) -> NewExport {
    NewExport {
        max_attempts,
        ..org_export(namespace, "01/02/2024")
    }
}

async fn state_of(pool: &PgPool, id: ExportId) -> (String, i32) {
    sqlx::query_as("SELECT state, attempt FROM export_jobs WHERE id = $1")
        .bind(id.0)
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Waits until the job is in `state`.
async fn wait_for_state(pool: &PgPool, id: ExportId, state: &str, secs: u64, what: &str) {
    eventually(secs, what, || async {
        (state_of(pool, id).await.0 == state).then_some(())
    })
    .await
}

/// A job body whose behaviour each test chooses, recording what happened.
#[derive(Default)]
struct Probe {
    runs: Mutex<HashMap<ExportId, Vec<Instant>>>,
    running: Mutex<HashMap<String, usize>>,
    max_running: Mutex<HashMap<String, usize>>,
    started: AtomicUsize,
    behaviour: Behaviour,
}

#[derive(Default, Clone, Copy, Debug)]
enum Behaviour {
    #[default]
    Succeed,
    SleepThenSucceed(Duration),
    SleepThenRetryable(Duration),
    AlwaysRetryable,
    BlockUntilStopped,
    Panic,
}

impl Probe {
    /// Waits until `n` attempts have started.
    async fn wait_started(&self, n: usize, secs: u64, what: &str) {
        eventually(secs, what, || async {
            (self.started.load(Ordering::SeqCst) == n).then_some(())
        })
        .await
    }
}

#[async_trait]
impl JobHandler for Probe {
    async fn run(&self, job: &ClaimedJob, ctx: &JobContext) -> Result<ExportResult, JobError> {
        self.started.fetch_add(1, Ordering::SeqCst);
        self.runs
            .lock()
            .unwrap()
            .entry(job.id)
            .or_default()
            .push(Instant::now());
        let ns = job.namespace.to_string();
        {
            let mut running = self.running.lock().unwrap();
            let n = running.entry(ns.clone()).or_default();
            *n += 1;
            let mut max = self.max_running.lock().unwrap();
            let m = max.entry(ns.clone()).or_default();
            *m = (*m).max(*n);
        }
        let result = match self.behaviour {
            Behaviour::Succeed => Ok(ExportResult::default()),
            Behaviour::SleepThenSucceed(d) => {
                tokio::time::sleep(d).await;
                Ok(ExportResult::default())
            }
            Behaviour::SleepThenRetryable(d) => {
                tokio::time::sleep(d).await;
                Err(JobError::Retryable("Splunk answered 503".into()))
            }
            Behaviour::AlwaysRetryable => Err(JobError::Retryable("Splunk answered 503".into())),
            Behaviour::BlockUntilStopped => {
                ctx.stopped().await;
                Err(JobError::Stopped)
            }
            Behaviour::Panic => panic!("boom"),
        };
        *self.running.lock().unwrap().get_mut(&ns).unwrap() -= 1;
        result
    }
}

fn settings(config: &Config) -> WorkerSettings {
    WorkerSettings::from_config(&config.worker)
}

fn start_pool(
    pool: &PgPool,
    config: &Config,
    probe: Arc<Probe>,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let shutdown = CancellationToken::new();
    let handle =
        tokio::spawn(WorkerPool::new(pool.clone(), settings(config), probe).run(shutdown.clone()));
    (shutdown, handle)
}

#[tokio::test]
async fn many_workers_run_every_job_exactly_once() {
    let (url, pool) = test_db().await;
    let mut config = test_config(&url);
    config.worker.concurrency = 4;
    let probe = Arc::new(Probe {
        behaviour: Behaviour::SleepThenSucceed(Duration::from_millis(5)),
        ..Probe::default()
    });
    let mut ids = Vec::new();
    for i in 0..120 {
        ids.push(
            storage::enqueue(&pool, &new_export(&format!("ns{}", i % 40), 3))
                .await
                .unwrap(),
        );
    }
    let pools: Vec<_> = (0..3)
        .map(|_| start_pool(&pool, &config, probe.clone()))
        .collect();
    eventually(60, "all jobs succeeded", || async {
        let done: i64 =
            sqlx::query_scalar("SELECT count(*) FROM export_jobs WHERE state = 'succeeded'")
                .fetch_one(&pool)
                .await
                .unwrap();
        (done == 120).then_some(())
    })
    .await;
    for (stop, handle) in pools {
        stop.cancel();
        handle.await.unwrap();
    }
    let runs = probe.runs.lock().unwrap().clone();
    assert_eq!(runs.len(), 120);
    assert!(runs.values().all(|r| r.len() == 1), "a job ran twice");
    for id in ids {
        assert_eq!(state_of(&pool, id).await, ("succeeded".into(), 1));
    }
}

#[tokio::test]
async fn a_killed_workers_job_is_reclaimed_after_the_lease_and_finished_elsewhere() {
    let (url, pool) = test_db().await;
    let mut config = test_config(&url);
    config.worker.lease_seconds = 3;
    let id = storage::enqueue(&pool, &new_export("acme", 3))
        .await
        .unwrap();

    // The doomed worker runs on its own runtime, which is torn down without any cleanup, the
    // way a killed process disappears: its tasks and connections just vanish.
    let doomed_probe = Arc::new(Probe {
        behaviour: Behaviour::BlockUntilStopped,
        ..Probe::default()
    });
    let doomed_settings = settings(&config);
    let probe = doomed_probe.clone();
    let doomed_url = url.clone();
    let (kill, killed) = std::sync::mpsc::channel::<()>();
    let doomed = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        runtime.spawn(async move {
            let doomed_pool = sqlx::PgPool::connect(&doomed_url).await.unwrap();
            WorkerPool::new(doomed_pool, doomed_settings, probe)
                .run(CancellationToken::new())
                .await
        });
        let _ = killed.recv();
        runtime.shutdown_background();
    });
    doomed_probe
        .wait_started(1, 10, "doomed worker started the job")
        .await;
    kill.send(()).unwrap();
    doomed.join().unwrap();
    let killed_at = Instant::now();

    let rescuer = Arc::new(Probe::default());
    let (stop, handle) = start_pool(&pool, &config, rescuer.clone());
    wait_for_state(&pool, id, "succeeded", 20, "job finished by the rescuer").await;
    assert!(
        killed_at.elapsed() >= Duration::from_secs(2),
        "reclaimed before the lease expired"
    );
    assert_eq!(state_of(&pool, id).await, ("succeeded".into(), 2));
    assert_eq!(rescuer.started.load(Ordering::SeqCst), 1);
    stop.cancel();
    handle.await.unwrap();
}

#[tokio::test]
async fn a_stale_workers_late_writes_change_nothing() {
    let (_, pool) = test_db().await;
    let id = storage::enqueue(&pool, &new_export("acme", 3))
        .await
        .unwrap();
    let lease = Duration::from_secs(30);
    let first = storage::claim_next(&pool, "worker-a", lease, 1)
        .await
        .unwrap()
        .expect("claimed");
    // Worker A stalls; its lease runs out and worker B reclaims the job.
    sqlx::query(
        "UPDATE export_jobs SET lease_expires_at = now() - interval '1 second' WHERE id = $1",
    )
    .bind(id.0)
    .execute(&pool)
    .await
    .unwrap();
    let second = storage::claim_next(&pool, "worker-b", lease, 1)
        .await
        .unwrap()
        .expect("reclaimed");
    assert_eq!((first.attempt, second.attempt), (1, 2));

    assert_eq!(
        storage::heartbeat(
            &pool,
            id,
            first.attempt,
            lease,
            &storage::Progress {
                logs_exported: 99,
                bytes_written: 99,
                slices: [4, 2, 2],
            }
        )
        .await
        .unwrap(),
        None
    );
    assert!(
        !storage::finish(&pool, id, first.attempt, &Finish::Failed("late".into()))
            .await
            .unwrap()
    );
    assert!(
        !storage::retry_later(&pool, id, first.attempt, lease, "late")
            .await
            .unwrap()
    );
    assert!(!storage::release(&pool, id, first.attempt).await.unwrap());
    let (state, last_error, logs): (String, Option<String>, i64) =
        sqlx::query_as("SELECT state, last_error, logs_exported FROM export_jobs WHERE id = $1")
            .bind(id.0)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!((state.as_str(), last_error, logs), ("running", None, 0));

    assert!(
        storage::finish(
            &pool,
            id,
            second.attempt,
            &Finish::Succeeded(ExportResult::default())
        )
        .await
        .unwrap()
    );
    assert_eq!(state_of(&pool, id).await, ("succeeded".into(), 2));
}

/// The claim's one probe: an expired lease before any due job, due jobs oldest first, and a
/// namespace at its limit passed over.
#[tokio::test]
async fn a_claim_takes_an_expired_lease_first_then_the_oldest_due_job_of_a_namespace_below_its_limit()
 {
    let (_, pool) = test_db().await;
    let lease = Duration::from_secs(30);
    let stalled = storage::enqueue(&pool, &new_export("acme", 3))
        .await
        .unwrap();
    storage::claim_next(&pool, "worker-a", lease, 1)
        .await
        .unwrap()
        .expect("claimed");
    let busy = storage::enqueue(&pool, &new_export("acme", 3))
        .await
        .unwrap();
    let due = storage::enqueue(&pool, &new_export("globex", 3))
        .await
        .unwrap();
    let later = storage::enqueue(&pool, &new_export("initech", 3))
        .await
        .unwrap();
    sqlx::query(
        "UPDATE export_jobs SET lease_expires_at = now() - interval '1 second' WHERE id = $1",
    )
    .bind(stalled.0)
    .execute(&pool)
    .await
    .unwrap();

    let mut order = Vec::new();
    while let Some(claim) = storage::claim_next(&pool, "worker-b", lease, 1)
        .await
        .unwrap()
    {
        order.push(claim.id);
    }
    // acme's second export waits: its first runs again (the expired lease, taken over).
    assert_eq!(order, vec![stalled, due, later]);
    assert_eq!(state_of(&pool, stalled).await, ("running".into(), 2));
    assert_eq!(state_of(&pool, busy).await, ("queued".into(), 0));
}

#[tokio::test]
async fn retries_back_off_and_stop_at_max_attempts() {
    let (url, pool) = test_db().await;
    let mut config = test_config(&url);
    config.worker.backoff_base_seconds = 1;
    config.worker.backoff_max_seconds = 10;
    let id = storage::enqueue(&pool, &new_export("acme", 3))
        .await
        .unwrap();
    let probe = Arc::new(Probe {
        behaviour: Behaviour::AlwaysRetryable,
        ..Probe::default()
    });
    let (stop, handle) = start_pool(&pool, &config, probe.clone());
    wait_for_state(&pool, id, "failed", 30, "job failed for good").await;
    stop.cancel();
    handle.await.unwrap();
    let runs = probe.runs.lock().unwrap()[&id].clone();
    assert_eq!(runs.len(), 3, "ran {} times", runs.len());
    let first_gap = runs[1] - runs[0];
    let second_gap = runs[2] - runs[1];
    assert!(first_gap >= Duration::from_millis(500), "{first_gap:?}");
    assert!(second_gap >= Duration::from_millis(1000), "{second_gap:?}");
    let (attempt, error, notify): (i32, String, String) =
        sqlx::query_as("SELECT attempt, last_error, notify_state FROM export_jobs WHERE id = $1")
            .bind(id.0)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(attempt, 3);
    assert!(
        error.contains("503") && error.contains("3 attempts"),
        "{error}"
    );
    assert_eq!(notify, "pending", "the one failure notice is scheduled");
}

#[tokio::test]
async fn a_panicking_job_counts_as_a_failed_attempt() {
    let (url, pool) = test_db().await;
    let config = test_config(&url);
    let id = storage::enqueue(&pool, &new_export("acme", 1))
        .await
        .unwrap();
    let probe = Arc::new(Probe {
        behaviour: Behaviour::Panic,
        ..Probe::default()
    });
    let (stop, handle) = start_pool(&pool, &config, probe);
    wait_for_state(&pool, id, "failed", 10, "job failed").await;
    stop.cancel();
    handle.await.unwrap();
}

#[tokio::test]
async fn the_per_namespace_limit_holds_under_concurrency() {
    for limit in [1u32, 2] {
        let (url, pool) = test_db().await;
        let mut config = test_config(&url);
        config.worker.concurrency = 4;
        config.worker.per_namespace_limit = limit;
        for _ in 0..8 {
            storage::enqueue(&pool, &new_export("busy", 3))
                .await
                .unwrap();
        }
        storage::enqueue(&pool, &new_export("quiet", 3))
            .await
            .unwrap();
        let probe = Arc::new(Probe {
            behaviour: Behaviour::SleepThenSucceed(Duration::from_millis(150)),
            ..Probe::default()
        });
        let pools: Vec<_> = (0..3)
            .map(|_| start_pool(&pool, &config, probe.clone()))
            .collect();
        eventually(60, "all jobs done", || async {
            let done: i64 =
                sqlx::query_scalar("SELECT count(*) FROM export_jobs WHERE state = 'succeeded'")
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            (done == 9).then_some(())
        })
        .await;
        for (stop, handle) in pools {
            stop.cancel();
            handle.await.unwrap();
        }
        let max = probe.max_running.lock().unwrap()["busy"];
        assert_eq!(max, limit as usize, "limit {limit} but {max} ran at once");
    }
}

#[tokio::test]
async fn a_notify_wakes_an_idle_worker_well_before_the_poll_interval() {
    let (url, pool) = test_db().await;
    let mut config = test_config(&url);
    config.worker.poll_interval_ms = 20_000;
    let probe = Arc::new(Probe::default());
    let (stop, handle) = start_pool(&pool, &config, probe.clone());
    // Let the worker go idle on its first empty claim.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let enqueued = Instant::now();
    storage::enqueue(&pool, &new_export("acme", 3))
        .await
        .unwrap();
    probe.wait_started(1, 10, "job started").await;
    let pickup = enqueued.elapsed();
    assert!(
        pickup < Duration::from_secs(5),
        "picked up after {pickup:?}; the poll interval is 20 s"
    );
    stop.cancel();
    handle.await.unwrap();
}

/// The per-namespace limit holds a namespace's second export back while its first runs; the
/// worker's claimers meanwhile found nothing and wait. The first one's end wakes them: the
/// second starts at once, not at the next poll.
#[tokio::test]
async fn a_namespaces_next_export_starts_when_its_running_one_ends_not_at_the_next_poll() {
    let (url, pool) = test_db().await;
    let mut config = test_config(&url);
    config.worker.poll_interval_ms = 20_000;
    config.worker.per_namespace_limit = 1;
    config.worker.concurrency = 4;
    for (n, behaviour) in [
        Behaviour::SleepThenSucceed(Duration::from_millis(300)),
        Behaviour::SleepThenRetryable(Duration::from_millis(300)),
    ]
    .into_iter()
    .enumerate()
    {
        let probe = Arc::new(Probe {
            behaviour,
            ..Probe::default()
        });
        let (stop, handle) = start_pool(&pool, &config, probe.clone());
        // Every claimer idle on an empty queue.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let namespace = format!("acme{n}");
        let first = storage::enqueue(&pool, &new_export(&namespace, 3))
            .await
            .unwrap();
        probe.wait_started(1, 10, "first job started").await;
        storage::enqueue(&pool, &new_export(&namespace, 3))
            .await
            .unwrap();
        // Held back by the limit: the claimer it woke found nothing to run.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(probe.started.load(Ordering::SeqCst), 1);
        // Finished, or back in the queue to be tried later.
        eventually(10, "the first job stopped running", || async {
            (state_of(&pool, first).await.0 != "running").then_some(())
        })
        .await;
        let ended = Instant::now();
        probe.wait_started(2, 10, "second job started").await;
        let waited = ended.elapsed();
        assert!(
            waited < Duration::from_secs(5),
            "{behaviour:?}: the second export started {waited:?} after the first stopped \
             running; the poll interval is 20 s"
        );
        stop.cancel();
        handle.await.unwrap();
    }
}

/// An export's notification is the notifier's of the process that finished it, woken in the
/// process: no `NOTIFY` goes out for it (each would wake every process's listener, and every
/// listening backend of Postgres), and the notice does not wait for the notifier's next look.
#[tokio::test]
async fn an_export_finished_here_wakes_this_process_notifier_without_a_notify() {
    let (url, pool) = test_db().await;
    let mut config = test_config(&url);
    config.worker.poll_interval_ms = 20_000;
    // What another process would hear on the notifications' channel.
    let mut elsewhere = PgListener::connect_with(&pool).await.unwrap();
    elsewhere.listen(CHANNEL_NOTIFY).await.unwrap();
    let stop = CancellationToken::new();
    let listener = QueueListener::spawn(pool.clone(), stop.clone());
    let mailer = logexport::notify::mailer_from_config(&config.email).unwrap();
    let notifier = Notifier::new(pool.clone(), &config, mailer).unwrap();
    let notifying = tokio::spawn(notifier.run(listener.clone(), stop.clone()));
    let workers = WorkerPool::new(
        pool.clone(),
        WorkerSettings::from_config(&config.worker),
        Arc::new(NoopHandler),
    );
    let working = tokio::spawn({
        let (listener, stop) = (listener.clone(), stop.clone());
        async move { workers.run_with(&listener, stop).await }
    });
    // Every claimer idle on an empty queue.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let export = NewExport {
        callback_email: Some(EmailAddress::parse("admin@example.com").unwrap()),
        ..new_export("acme", 3)
    };
    let enqueued = Instant::now();
    let id = storage::enqueue(&pool, &export).await.unwrap();
    eventually(10, "the notice sent", || async {
        let row = storage::get(&pool, id).await.unwrap()?;
        (row.notify_state == "delivered").then_some(())
    })
    .await;
    let sent = enqueued.elapsed();
    assert!(
        sent < Duration::from_secs(5),
        "the notice went out {sent:?} after the request; the poll interval is 20 s"
    );
    let announced = tokio::time::timeout(Duration::from_millis(500), elsewhere.recv()).await;
    assert!(
        announced.is_err(),
        "announced to every process: {announced:?}"
    );
    stop.cancel();
    working.await.unwrap();
    notifying.await.unwrap();
}

#[tokio::test]
async fn shutdown_drains_finishing_jobs_and_releases_the_rest() {
    let (url, pool) = test_db().await;
    let mut config = test_config(&url);
    config.worker.shutdown_grace_seconds = 1;
    let stuck = storage::enqueue(&pool, &new_export("stuck", 3))
        .await
        .unwrap();
    let probe = Arc::new(Probe {
        behaviour: Behaviour::BlockUntilStopped,
        ..Probe::default()
    });
    let (stop, handle) = start_pool(&pool, &config, probe.clone());
    probe.wait_started(1, 10, "job started").await;
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), handle)
        .await
        .expect("worker stopped")
        .unwrap();
    // Released without counting the attempt, ready for another worker at once.
    assert_eq!(state_of(&pool, stuck).await, ("queued".into(), 0));

    let quick = storage::enqueue(&pool, &new_export("quick", 3))
        .await
        .unwrap();
    let probe = Arc::new(Probe {
        behaviour: Behaviour::SleepThenSucceed(Duration::from_millis(300)),
        ..Probe::default()
    });
    let (stop, handle) = start_pool(&pool, &config, probe.clone());
    probe.wait_started(2, 10, "jobs started").await;
    stop.cancel();
    handle.await.unwrap();
    assert_eq!(state_of(&pool, quick).await.0, "succeeded");
    assert_eq!(state_of(&pool, stuck).await.0, "succeeded");
}

#[tokio::test]
async fn cancelling_a_running_job_stops_it_within_seconds() {
    let (url, pool) = test_db().await;
    let config = test_config(&url);
    let id = storage::enqueue(&pool, &new_export("acme", 3))
        .await
        .unwrap();
    let probe = Arc::new(Probe {
        behaviour: Behaviour::BlockUntilStopped,
        ..Probe::default()
    });
    let (stop, handle) = start_pool(&pool, &config, probe.clone());
    probe.wait_started(1, 10, "job started").await;
    assert_eq!(
        storage::cancel(&pool, id).await.unwrap(),
        storage::CancelOutcome::Requested
    );
    let asked = Instant::now();
    wait_for_state(&pool, id, "cancelled", 10, "job cancelled").await;
    assert!(asked.elapsed() < Duration::from_secs(5));
    let notify: String = sqlx::query_scalar("SELECT notify_state FROM export_jobs WHERE id = $1")
        .bind(id.0)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(
        notify, "skipped",
        "a cancelled export sends no notification"
    );
    stop.cancel();
    handle.await.unwrap();
}

#[tokio::test]
async fn a_job_past_max_work_seconds_times_out() {
    let (url, pool) = test_db().await;
    let mut config = test_config(&url);
    config.worker.max_work_seconds = 1;
    let id = storage::enqueue(&pool, &new_export("acme", 3))
        .await
        .unwrap();
    let probe = Arc::new(Probe {
        behaviour: Behaviour::BlockUntilStopped,
        ..Probe::default()
    });
    let (stop, handle) = start_pool(&pool, &config, probe.clone());
    wait_for_state(&pool, id, "timed_out", 10, "job timed out").await;
    assert_eq!(
        probe.started.load(Ordering::SeqCst),
        1,
        "a timed-out export is not retried"
    );
    stop.cancel();
    handle.await.unwrap();
}
