//! The job runner with a kind of its own: a panicking attempt is a failed attempt retried after
//! the backoff while the loop runs the next job, a retry keeps the progress the attempt saved, and
//! a job whose stored arguments do not parse fails naming them, never running.

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
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Tries {
    failed: u32,
}

#[derive(Default)]
struct Chores {
    /// (chore, attempt, when) of every attempt that began.
    runs: Mutex<Vec<(String, i32, Instant)>>,
}

struct ChoreKind(Arc<Chores>);

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
        Duration::from_secs(30)
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
        ChoreKind(chores.clone()),
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
