//! The worker pool: claims jobs, runs them under a lease, and records how they ended.

mod housekeeping;
mod job;
mod runner;

pub use housekeeping::Housekeeper;
pub use job::{JobContext, JobError, JobHandler, NoopHandler, StopReason};
pub use runner::{WorkerPool, WorkerSettings};
