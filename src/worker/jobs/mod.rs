//! The durable job runner, in the manner of River, Oban and crates.io's `crates_io_worker`: every
//! kind of background work runs through one loop (`runner.rs`) with one claim, one lease renewed
//! by a heartbeat, state changes fenced on the attempt number, one retry policy and one panic
//! policy (`contain`: a panicking job is a failed attempt, and the loop lives on).
//!
//! The loop runs any [`Kind`] (`kind.rs`). Every [`Job`] is one (`table.rs`): a kind with typed
//! arguments, stored in the `jobs` table (`queue::jobs` holds its SQL). Exports are the other,
//! stored in `export_jobs` for their per-namespace fairness, checkpoints and cancel requests
//! (`worker::exports`).

mod kind;
mod runner;
mod table;

use std::future::Future;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use kind::{Kind, Recorder, Renewal, Step, Terms};
pub use runner::{JobRunner, RunnerSettings};

use super::WorkKind;
use crate::queue::RetryPolicy;

/// A kind of job: what it stores, how often it may run and what one attempt does.
pub trait Job: Send + Sync + 'static {
    /// The `kind` column of its rows.
    const KIND: &'static str;
    /// The panic metric's label for this kind.
    const WORK: WorkKind;
    /// What the job is about, stored in `args`; a row whose arguments do not parse fails.
    type Args: Serialize + DeserializeOwned + Send + 'static;
    /// What earlier attempts finished, stored in `progress`, read by the next attempt (its
    /// `Default` before any attempt saved some).
    type Progress: Serialize + DeserializeOwned + Default + Send + 'static;

    /// Attempts before a retryable failure becomes final.
    fn max_attempts(&self) -> i32;
    /// The backoff between attempts.
    fn retry_policy(&self) -> RetryPolicy;
    /// How long a claim holds the job without a heartbeat; longer than any single call it makes.
    fn lease(&self) -> Duration;
    /// One attempt. `attempt.progress` is saved with the attempt's outcome, whatever it is.
    fn run(
        &self,
        args: Self::Args,
        attempt: &mut Attempt<Self::Progress>,
    ) -> impl Future<Output = Result<(), Failure>> + Send;
}

/// The attempt being run: its number (1 for the first) and the job's progress so far.
#[derive(Debug)]
pub struct Attempt<P> {
    pub id: i64,
    pub number: i32,
    pub max_attempts: i32,
    pub progress: P,
}

/// How an attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// Worth another attempt, after the kind's backoff or `after` if that is longer.
    #[error("{error}")]
    Retry {
        error: String,
        after: Option<Duration>,
    },
    /// Final: the job fails now.
    #[error("{0}")]
    GiveUp(String),
}
