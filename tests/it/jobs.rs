//! The job runner with a kind of its own: a panicking attempt is a failed attempt retried after
//! the backoff while the loop runs the next job, a retry keeps the progress the attempt saved, and
//! a job whose stored arguments do not parse fails naming them, never running; an attempt whose job
//! another runner took over is dropped and records nothing, and one in flight at shutdown runs to
//! its end.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use logexport::queue::{QueueListener, RetryPolicy, jobs};
use logexport::worker::WorkKind;
use logexport::worker::jobs::{Attempt, Failure, Job, JobRunner, RunnerSettings};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::helpers::{eventually, test_db};

const KIND: &str = "test_chores";

#[derive(Debug, Serialize, Deserialize)]
enum Chore {
    PanicOnce,
    RetryOnce,
    Succeed,
    /// Runs for this many milliseconds, then succeeds.
    Take(u64),
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Tries {
    failed: u32,
}

#[derive(Default)]
struct Chores {
    /// (chore, attempt, when) of every attempt that began.
    runs: Mutex<Vec<(String, i32, Instant)>>,
    /// Set when a `Take` chore ended, by running to its end or by being dropped.
    took: AtomicBool,
    dropped: AtomicBool,
}

/// Sets `dropped` when a `Take` chore is dropped before its end.
struct DropGuard<'a>(&'a Chores);

impl Drop for DropGuard<'_> {
    fn drop(&mut self) {
        if !self.0.took.load(Ordering::SeqCst) {
            self.0.dropped.store(true, Ordering::SeqCst);
        }
    }
}

struct ChoreKind(Arc<Chores>, Duration);

impl ChoreKind {
    fn new(chores: Arc<Chores>) -> Self {
        Self(chores, Duration::from_secs(30))
    }
}

impl Job for ChoreKind {
    const KIND: &'static str = KIND;
    const WORK: WorkKind = WorkKind::Housekeeping;
    type Args = Chore;
    type Progress = Tries;

    fn max_attempts(&self) -> i32 {
        3
    }

    fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            base: Duration::from_secs(1),
            max: Duration::from_secs(1),
        }
    }

    fn lease(&self) -> Duration {
        self.1
    }

    async fn run(&self, chore: Chore, attempt: &mut Attempt<Tries>) -> Result<(), Failure> {
        self.0
            .runs
            .lock()
            .unwrap()
            .push((format!("{chore:?}"), attempt.number, Instant::now()));
        match chore {
            Chore::PanicOnce if attempt.number == 1 => panic!("the chore broke"),
            Chore::RetryOnce if attempt.progress.failed == 0 => {
                attempt.progress.failed += 1;
                Err(Failure::Retry {
                    error: "not yet".into(),
                    after: None,
                })
            }
            Chore::RetryOnce if attempt.number != 2 => {
                Err(Failure::GiveUp("the progress was lost".into()))
            }
            Chore::Take(ms) => {
                let _guard = DropGuard(&self.0);
                tokio::time::sleep(Duration::from_millis(ms)).await;
                self.0.took.store(true, Ordering::SeqCst);
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

async fn enqueue(pool: &PgPool, key: &str, args: serde_json::Value) {
    let mut conn = pool.acquire().await.unwrap();
    assert!(
        jobs::enqueue_unique(&mut conn, KIND, key, &args)
            .await
            .unwrap()
    );
    assert!(
        !jobs::enqueue_unique(&mut conn, KIND, key, &args)
            .await
            .unwrap(),
        "a unique key is enqueued once"
    );
}

async fn job(pool: &PgPool, key: &str) -> (String, i32, Option<String>) {
    sqlx::query_as(
        "SELECT state, attempt, last_error FROM jobs WHERE kind = $1 AND unique_key = $2",
    )
    .bind(KIND)
    .bind(key)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_panicking_job_is_a_failed_attempt_and_the_loop_runs_the_next() {
    let (_, pool) = test_db().await;
    enqueue(&pool, "panics", json!("PanicOnce")).await;
    enqueue(&pool, "retries", json!("RetryOnce")).await;
    enqueue(&pool, "succeeds", json!("Succeed")).await;
    enqueue(&pool, "unreadable", json!({"Sweep": 3})).await;
    let chores = Arc::new(Chores::default());
    let runner = JobRunner::new(
        pool.clone(),
        ChoreKind::new(chores.clone()),
        RunnerSettings {
            concurrency: 1,
            poll_interval: Duration::from_millis(100),
        },
    );
    let stop = CancellationToken::new();
    let listener = QueueListener::spawn(pool.clone(), stop.clone());
    let running = tokio::spawn(runner.run(listener, stop.clone()));

    for key in ["panics", "retries", "succeeds", "unreadable"] {
        eventually(20, &format!("the {key} job settled"), || async {
            let (state, ..) = job(&pool, key).await;
            (state == "succeeded" || state == "failed").then_some(())
        })
        .await;
    }
    let (state, attempt, error) = job(&pool, "panics").await;
    assert_eq!((state.as_str(), attempt), ("succeeded", 2), "{error:?}");
    let error = error.unwrap();
    assert!(error.contains("panicked: the chore broke"), "{error}");
    assert_eq!(
        job(&pool, "retries").await.0,
        "succeeded",
        "its progress was kept"
    );
    assert_eq!(job(&pool, "succeeds").await.0, "succeeded");
    let (state, attempt, error) = job(&pool, "unreadable").await;
    assert_eq!((state.as_str(), attempt), ("failed", 1));
    assert!(error.unwrap().contains("the job's args do not parse"));

    let runs = chores.runs.lock().unwrap().clone();
    let of = |chore: &str| -> Vec<(i32, Instant)> {
        runs.iter()
            .filter(|(c, ..)| c == chore)
            .map(|(_, n, at)| (*n, *at))
            .collect()
    };
    let panics = of("PanicOnce");
    assert_eq!(panics.iter().map(|(n, _)| *n).collect::<Vec<_>>(), [1, 2]);
    assert!(
        panics[1].1 - panics[0].1 >= Duration::from_millis(500),
        "retried after the backoff"
    );
    assert_eq!(of("Succeed").len(), 1);
    assert!(
        of("Succeed")[0].1 < panics[1].1,
        "the next job ran while the panicked one waited"
    );
    assert!(!runs.iter().any(|(c, ..)| c.contains("Sweep")), "never ran");
    stop.cancel();
    running.await.unwrap();
}

fn settings() -> RunnerSettings {
    RunnerSettings {
        concurrency: 1,
        poll_interval: Duration::from_millis(100),
    }
}

async fn started(chores: &Chores) {
    eventually(10, "the attempt started", || async {
        (!chores.runs.lock().unwrap().is_empty()).then_some(())
    })
    .await;
}

#[tokio::test]
async fn an_attempt_whose_job_another_runner_took_over_is_dropped_and_records_nothing() {
    let (_, pool) = test_db().await;
    enqueue(&pool, "long", json!({"Take": 60_000})).await;
    let chores = Arc::new(Chores::default());
    // A 3 s lease: the heartbeat renews it every second.
    let kind = ChoreKind(chores.clone(), Duration::from_secs(3));
    let runner = JobRunner::new(pool.clone(), kind, settings());
    let stop = CancellationToken::new();
    let listener = QueueListener::spawn(pool.clone(), stop.clone());
    let running = tokio::spawn(runner.run(listener, stop.clone()));
    started(&chores).await;

    // Another runner's claim: a new attempt under another owner.
    sqlx::query(
        "UPDATE jobs SET attempt = attempt + 1, lease_owner = 'another runner'
         WHERE kind = $1 AND unique_key = 'long'",
    )
    .bind(KIND)
    .execute(&pool)
    .await
    .unwrap();
    eventually(
        10,
        "the attempt was dropped at its next renewal",
        || async { chores.dropped.load(Ordering::SeqCst).then_some(()) },
    )
    .await;
    // Its end is not recorded over the new holder's attempt.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (state, attempt, error) = job(&pool, "long").await;
    assert_eq!((state.as_str(), attempt, error), ("running", 2, None));
    let owner: String =
        sqlx::query_scalar("SELECT lease_owner FROM jobs WHERE unique_key = 'long'")
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(owner, "another runner");
    assert!(!chores.took.load(Ordering::SeqCst));
    // Nothing is in flight: the runner stops at once.
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .expect("the runner stopped")
        .unwrap();
}

#[tokio::test]
async fn an_attempt_in_flight_at_shutdown_runs_to_its_end_and_is_recorded() {
    let (_, pool) = test_db().await;
    enqueue(&pool, "short", json!({"Take": 1_500})).await;
    let chores = Arc::new(Chores::default());
    let runner = JobRunner::new(pool.clone(), ChoreKind::new(chores.clone()), settings());
    let stop = CancellationToken::new();
    let listener = QueueListener::spawn(pool.clone(), stop.clone());
    let running = tokio::spawn(runner.run(listener, stop.clone()));
    started(&chores).await;
    stop.cancel();
    running.await.unwrap();
    assert!(chores.took.load(Ordering::SeqCst), "it ran to its end");
    assert!(!chores.dropped.load(Ordering::SeqCst));
    let (state, attempt, _) = job(&pool, "short").await;
    assert_eq!((state.as_str(), attempt), ("succeeded", 1));
}
