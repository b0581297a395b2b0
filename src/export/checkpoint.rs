//! Checkpoints: how far an export got, recorded on its row whenever the archive so far holds
//! exactly its first slices and the upload made those bytes durable. The next attempt — after a
//! cut stream or quota answers past the retry budget, a shutdown, or a killed worker's lease
//! running out — continues the same upload and reads only the slices after it.

use serde::{Deserialize, Serialize};

use super::slices::Resume;
use crate::archive::ResumableSha256;
use crate::queue::ClaimedJob;
use crate::storage::UploadCheckpoint;
use crate::worker::{JobContext, JobError, StopReason};

/// What a later attempt needs to continue an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExportCheckpoint {
    /// The object being written.
    pub key: String,
    /// The plan's slice count (the plan is recomputed from it, the export's range and
    /// `probed_until`).
    pub slices: usize,
    /// Where the rows the first search read before the plan was made end (see
    /// [`super::slices::Resume::probed_until`]); absent in a plan sliced by time only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probed_until: Option<chrono::DateTime<chrono::Utc>>,
    /// Slices, newest first, whose every row is in the upload.
    pub slices_done: usize,
    pub logs: u64,
    pub skipped: u64,
    pub bytes: u64,
    /// The SHA-256 of the bytes so far, to continue.
    pub digest: ResumableSha256,
    pub upload: UploadCheckpoint,
}

impl ExportCheckpoint {
    /// The checkpoint an earlier attempt left on the job, if it can be read.
    pub fn of(job: &ClaimedJob) -> Option<Self> {
        let value = job.checkpoint.as_ref()?;
        match serde_json::from_value(value.clone()) {
            Ok(checkpoint) => Some(checkpoint),
            Err(e) => {
                tracing::warn!(error = %e, "ignoring an unreadable checkpoint; starting over");
                None
            }
        }
    }

    /// Where the slices continue.
    pub fn resume(&self) -> Resume {
        Resume {
            slices: self.slices,
            probed_until: self.probed_until,
            slices_done: self.slices_done,
        }
    }
}

/// Whether another attempt will take the export over, so its upload should be left for it
/// rather than aborted.
pub fn another_attempt_follows(error: &JobError, job: &ClaimedJob, ctx: &JobContext) -> bool {
    match error {
        JobError::Retryable(_) => {
            job.spent() < job.max_attempts && ctx.stop_reason() != Some(StopReason::Cancelled)
        }
        // The attempt is given back: the same export runs again once the database is back.
        JobError::Database(_) => ctx.stop_reason() != Some(StopReason::Cancelled),
        JobError::Stopped => matches!(
            ctx.stop_reason(),
            Some(StopReason::Shutdown | StopReason::LostLease)
        ),
        JobError::Permanent(_) | JobError::Invalid(_) => false,
    }
}
