//! The worker pool: claims jobs, runs them under a lease, and records how they ended.

mod contained;
mod housekeeping;
mod job;
pub mod jobs;
mod notifier;
mod runner;

pub use contained::{Contained, UnitError, WorkKind, contain};
pub use housekeeping::Housekeeper;
pub use job::{Cause, JobContext, JobError, JobHandler, NoopHandler, Party, StopReason};
pub use notifier::{Notifier, notice};
pub use runner::{WorkerPool, WorkerSettings};
