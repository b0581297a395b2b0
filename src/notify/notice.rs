//! What a notification says: which export, over which range, and how it ended.

use chrono::{DateTime, Utc};
use url::Url;

use crate::domain::{DateRange, ExportId};

/// How an export ended; every export gets exactly one notice with one of these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The archive is stored and downloadable until `expires_at`.
    Succeeded {
        url: Url,
        expires_at: DateTime<Utc>,
        logs_exported: u64,
        size_bytes: u64,
    },
    /// The export failed after its last attempt; `reason` is shown to the requester.
    Failed { reason: String },
    /// The export ran past `worker.max_work_seconds`.
    TimedOut,
    /// The request could not be carried out as asked (e.g. the namespace no longer exists).
    InvalidRequest { reason: String },
}

impl Outcome {
    /// The `status` value Quay's callback uses for this outcome.
    pub fn quay_status(&self) -> &'static str {
        match self {
            Self::Succeeded { .. } => "success",
            Self::Failed { .. } => "failed",
            Self::TimedOut => "timedout",
            Self::InvalidRequest { .. } => "invalidrequest",
        }
    }

    /// A short human phrase for the outcome, used in mail bodies and logs.
    pub fn describe(&self) -> &'static str {
        match self {
            Self::Succeeded { .. } => "succeeded",
            Self::Failed { .. } => "failed",
            Self::TimedOut => "timed out",
            Self::InvalidRequest { .. } => "was an invalid request",
        }
    }
}

/// The stable link that mints a fresh download link for an export (beyond Quay).
pub fn download_url(public_url: &str, id: uuid::Uuid) -> String {
    format!(
        "{}/api/v1/exportlogs/{id}/download",
        public_url.trim_end_matches('/')
    )
}

/// One notification to deliver, built by the notifier loop from the export row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notice {
    pub export_id: ExportId,
    pub namespace: String,
    pub repository: Option<String>,
    pub range: DateRange,
    pub outcome: Outcome,
    /// Stable across retries of this notice (stored by the queue); the callback's `webhook-id`
    /// and the mail's Message-ID are derived from it so receivers can drop duplicates.
    pub webhook_id: String,
    /// The stable link that mints a fresh download link while the archive exists (beyond Quay),
    /// for a succeeded export.
    pub download_url: Option<String>,
    /// SHA-256 of the archive's stored bytes, for a succeeded export.
    pub sha256: Option<String>,
}

/// The result of one delivery attempt; the queue decides what happens next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Accepted by the mail server, written to a file, or answered 2xx. `receipt` says where or
    /// how (the SMTP reply, the `.eml` path, the HTTP status) for logs and the demo.
    Delivered { receipt: String },
    /// A transient failure: try again later. `retry_after` is the receiver's own hint
    /// (`Retry-After`), which the queue should honour when it is longer than its backoff.
    Retry {
        reason: String,
        retry_after: Option<std::time::Duration>,
    },
    /// A permanent failure: retrying cannot help; record `reason` and stop.
    GiveUp { reason: String },
}

impl Delivery {
    /// A retry without a receiver hint.
    pub fn retry(reason: impl Into<String>) -> Self {
        Self::Retry {
            reason: reason.into(),
            retry_after: None,
        }
    }

    /// A permanent failure.
    pub fn give_up(reason: impl Into<String>) -> Self {
        Self::GiveUp {
            reason: reason.into(),
        }
    }

    /// True for [`Delivery::Delivered`].
    pub fn is_delivered(&self) -> bool {
        matches!(self, Self::Delivered { .. })
    }
}
