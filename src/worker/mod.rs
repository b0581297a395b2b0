//! Background work: the one job runner (`jobs`), its kinds (exports, notifications), the job
//! context and errors, the panic policy, and housekeeping.

mod contained;
mod exports;
mod housekeeping;
mod job;
pub mod jobs;
mod notifier;

pub use contained::{Contained, UnitError, WorkKind, contain};
pub use exports::{WorkerPool, WorkerSettings};
pub use housekeeping::Housekeeper;
pub use job::{Cause, JobContext, JobError, JobHandler, NoopHandler, Party, StopReason};
pub use notifier::{Notifier, notice};
