//! The Postgres export queue: rows, states, and every SQL statement that touches them.

pub mod chain;
mod claimed;
pub mod jobs;
mod lease;
mod listener;
mod retry_policy;
pub mod storage;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

pub use claimed::{Claim, UnreadableColumn};
pub use listener::{CHANNEL_NEW_JOB, CHANNEL_NOTIFY, QueueListener};
pub use retry_policy::RetryPolicy;

use crate::domain::{
    CallbackUrl, Compression, DateRange, EmailAddress, ExportFormat, ExportId, ExportScope,
    Namespace, Performer, RepositoryName,
};

/// An export job's lifecycle state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
    TimedOut,
    Invalid,
    Cancelled,
}

impl JobState {
    /// The name stored in the `state` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Running => "running",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::TimedOut => "timed_out",
            Self::Invalid => "invalid",
            Self::Cancelled => "cancelled",
        }
    }

    /// Reads a stored state name.
    pub fn parse(value: &str) -> Option<Self> {
        Some(match value {
            "queued" => Self::Queued,
            "running" => Self::Running,
            "succeeded" => Self::Succeeded,
            "failed" => Self::Failed,
            "timed_out" => Self::TimedOut,
            "invalid" => Self::Invalid,
            "cancelled" => Self::Cancelled,
            _ => return None,
        })
    }

    /// The status Quay's callback and e-mail use for a terminal state.
    pub fn quay_status(self) -> Option<&'static str> {
        match self {
            Self::Succeeded => Some("success"),
            Self::Failed => Some("failed"),
            Self::TimedOut => Some("timedout"),
            Self::Invalid => Some("invalidrequest"),
            _ => None,
        }
    }

    /// Every state, for metrics.
    pub const ALL: [JobState; 7] = [
        Self::Queued,
        Self::Running,
        Self::Succeeded,
        Self::Failed,
        Self::TimedOut,
        Self::Invalid,
        Self::Cancelled,
    ];
}

/// A validated export request, ready to enqueue.
#[derive(Debug, Clone)]
pub struct NewExport {
    pub scope: ExportScope,
    pub namespace: Namespace,
    pub repository: Option<RepositoryName>,
    pub requested_by: String,
    pub range: DateRange,
    pub format: ExportFormat,
    pub compression: Compression,
    pub callback_url: Option<CallbackUrl>,
    pub callback_email: Option<EmailAddress>,
    pub idempotency_key: Option<String>,
    pub max_attempts: u32,
    /// Only this performer's events (the listing's `performer` filter).
    pub performer: Option<Performer>,
    /// Only events of any of these kinds; empty for all. Sorted and deduplicated.
    pub kinds: Vec<String>,
}

/// A job claimed by a worker: the request plus the attempt that fences its writes.
#[derive(Debug, Clone)]
pub struct ClaimedJob {
    pub id: ExportId,
    /// Fences this attempt's writes; grows with every claim.
    pub attempt: i32,
    /// Attempts that an outage of the database ended, which do not count against `max_attempts`.
    pub attempts_forgiven: i32,
    pub max_attempts: i32,
    pub scope: ExportScope,
    pub namespace: Namespace,
    pub repository: Option<RepositoryName>,
    pub requested_by: String,
    pub range: DateRange,
    pub format: ExportFormat,
    pub compression: Compression,
    pub performer: Option<Performer>,
    pub kinds: Vec<String>,
    /// Where an earlier attempt got to, as the export recorded it.
    pub checkpoint: Option<serde_json::Value>,
}

impl ClaimedJob {
    /// Attempts spent on the job so far, this one included: those the database's outages ended
    /// are not counted.
    pub fn spent(&self) -> i32 {
        self.attempt - self.attempts_forgiven
    }
}

/// Everything the status endpoint and the notifier read about one export.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ExportRow {
    pub id: Uuid,
    pub scope: String,
    pub namespace: String,
    pub repository: Option<String>,
    pub requested_by: String,
    pub start_time: DateTime<Utc>,
    pub end_time: DateTime<Utc>,
    pub timezone: String,
    pub format: String,
    pub compression: String,
    pub callback_url: Option<String>,
    pub callback_email: Option<String>,
    pub state: String,
    pub attempt: i32,
    /// Attempts an outage of the database ended (not counted; see [`ClaimedJob::spent`]).
    pub attempts_forgiven: i32,
    pub max_attempts: i32,
    pub run_at: DateTime<Utc>,
    pub cancel_requested: bool,
    pub logs_exported: i64,
    pub logs_skipped: i64,
    pub bytes_written: i64,
    pub object_key: Option<String>,
    pub download_url: Option<String>,
    pub url_expires_at: Option<DateTime<Utc>>,
    pub object_deleted_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    /// An earlier attempt's error, kept once a later attempt succeeded.
    pub previous_error: Option<String>,
    /// The notification's state ('none', 'pending', 'delivered', 'failed', 'skipped'), read from
    /// its job (see `storage::SELECT_ROW`); this and the fields below are absent (defaults)
    /// where a statement returns the bare export row, as the claim does.
    #[sqlx(default, rename = "notification_state")]
    pub notify_state: String,
    #[sqlx(default)]
    pub notify_attempts: i32,
    #[sqlx(default)]
    pub notify_run_at: Option<DateTime<Utc>>,
    #[sqlx(default)]
    pub notify_last_error: Option<String>,
    #[sqlx(default)]
    pub notified_at: Option<DateTime<Utc>>,
    pub webhook_id: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub performer: Option<String>,
    pub kinds: Vec<String>,
    pub slices_total: i32,
    pub slices_done: i32,
    pub searches_running: i32,
    pub checkpoint: Option<serde_json::Value>,
    pub sha256: Option<String>,
    pub manifest: Option<serde_json::Value>,
    /// The schedule that made this export, if one did.
    pub schedule_id: Option<Uuid>,
}

impl ExportRow {
    /// The stored state. The column's CHECK constraint (migration 0001) admits exactly the
    /// names of [`JobState`], so the fallback is unreachable short of dropping the constraint
    /// (tests/it/typed_rows.rs shows Postgres refusing any other value).
    pub fn state(&self) -> JobState {
        JobState::parse(&self.state).unwrap_or(JobState::Failed)
    }
}

/// What a successful export produced.
#[derive(Debug, Clone, Default)]
pub struct ExportResult {
    pub object_key: String,
    pub download_url: String,
    pub url_expires_at: DateTime<Utc>,
    pub logs_exported: u64,
    pub logs_skipped: u64,
    pub bytes_written: u64,
    /// SHA-256 of the stored bytes, lowercase hex.
    pub sha256: String,
    /// The signed manifest stored beside the archive.
    pub manifest: serde_json::Value,
}

/// How an attempt ended, as the queue records it.
#[derive(Debug, Clone)]
pub enum Finish {
    Succeeded(ExportResult),
    Failed(String),
    TimedOut(String),
    Invalid(String),
    Cancelled,
}
