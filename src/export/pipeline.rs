//! One export attempt, streamed end to end: rows are mapped and encoded as they arrive from
//! Splunk, and full chunks go to the upload while the next ones are read. Memory is bounded by
//! a chunk plus the upload's parts in flight, whatever the export's size.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;

use super::ExportSettings;
use crate::archive::{self, ArchiveDetails, ArchiveWriter};
use crate::domain::quay_datetime;
use crate::queue::{ClaimedJob, ExportResult};
use crate::splunk::{ExportStream, SplunkClient, SplunkError, map_row};
use crate::storage::{ObjectMeta, ObjectStore, StorageError, Upload, object_key};
use crate::worker::{JobContext, JobError, JobHandler};

/// The export job body.
pub struct ExportJob {
    splunk: SplunkClient,
    store: Arc<dyn ObjectStore>,
    settings: ExportSettings,
}

impl ExportJob {
    /// An export job reading `splunk` and writing to `store`.
    pub fn new(
        splunk: SplunkClient,
        store: Arc<dyn ObjectStore>,
        settings: ExportSettings,
    ) -> Self {
        Self {
            splunk,
            store,
            settings,
        }
    }
}

fn splunk_error(e: SplunkError) -> JobError {
    if e.is_retryable() {
        JobError::Retryable(e.to_string())
    } else {
        JobError::Permanent(e.to_string())
    }
}

fn storage_error(e: StorageError) -> JobError {
    if e.is_retryable() {
        JobError::Retryable(e.to_string())
    } else {
        JobError::Permanent(e.to_string())
    }
}

fn encode_error(e: std::io::Error) -> JobError {
    JobError::Retryable(format!("encoding the archive failed: {e}"))
}

/// Counts from a completed stream.
struct Streamed {
    logs: u64,
    skipped: u64,
    bytes: u64,
}

#[async_trait]
impl JobHandler for ExportJob {
    #[tracing::instrument(skip_all, fields(export_id = %job.id, attempt = job.attempt))]
    async fn run(&self, job: &ClaimedJob, ctx: &JobContext) -> Result<ExportResult, JobError> {
        let mut filters = self.splunk.filters(job.range.start, job.range.end);
        filters.namespace = Some(job.namespace.clone());
        filters.repository = job.repository.clone();
        let query = filters
            .build()
            .map_err(|e| JobError::Invalid(format!("cannot build the Splunk search: {e}")))?;

        // Splunk first: a rejected token or bad search must not leave an upload behind.
        let mut rows = tokio::select! {
            _ = ctx.stopped() => return Err(JobError::Stopped),
            rows = self.splunk.export(&query) => rows.map_err(splunk_error)?,
        };

        let ext = archive::file_extension(job.format, job.compression);
        let key = object_key(&self.settings.object_prefix, job.id, &ext);
        let meta = ObjectMeta {
            content_type: archive::content_type(job.format, job.compression).to_owned(),
            filename: format!("exportedlogs-{}-{}.{ext}", job.namespace, job.id),
        };
        let mut upload = self
            .store
            .begin_upload(&key, &meta)
            .await
            .map_err(storage_error)?;
        let details = ArchiveDetails {
            export_id: job.id,
            start_time: quay_datetime(&job.range.start),
            end_time: quay_datetime(&job.range.end),
            namespace: job.namespace.to_string(),
            repository: job.repository.as_ref().map(ToString::to_string),
        };
        let writer = ArchiveWriter::new(job.format, job.compression, &details);

        match self.stream(&mut rows, writer, upload.as_mut(), ctx).await {
            Ok(streamed) => {
                let size = upload.complete().await.map_err(storage_error)?;
                let url = self
                    .store
                    .download_url(&key, self.settings.url_expiry)
                    .await
                    .map_err(storage_error)?;
                tracing::info!(
                    logs = streamed.logs,
                    skipped = streamed.skipped,
                    bytes = size,
                    "archive uploaded"
                );
                debug_assert_eq!(size, streamed.bytes);
                Ok(ExportResult {
                    object_key: key,
                    download_url: url.to_string(),
                    url_expires_at: Utc::now()
                        + chrono::Duration::from_std(self.settings.url_expiry)
                            .unwrap_or(chrono::Duration::hours(1)),
                    logs_exported: streamed.logs,
                    logs_skipped: streamed.skipped,
                    bytes_written: size,
                })
            }
            Err(e) => {
                // Nothing of a failed attempt stays behind; the next attempt starts a new upload.
                if let Err(abort) = upload.abort().await {
                    tracing::warn!(error = %abort, "aborting the upload failed; housekeeping will remove it");
                }
                Err(e)
            }
        }
    }
}

impl ExportJob {
    async fn stream(
        &self,
        rows: &mut ExportStream,
        mut writer: ArchiveWriter,
        upload: &mut dyn Upload,
        ctx: &JobContext,
    ) -> Result<Streamed, JobError> {
        let stopped = ctx.stopped();
        tokio::pin!(stopped);
        let mut skipped = 0u64;
        let mut bytes = 0u64;
        loop {
            let next = tokio::select! {
                biased;
                _ = &mut stopped => return Err(JobError::Stopped),
                next = rows.next_row() => next,
            };
            match next {
                None => break,
                Some(Err(e)) => return Err(splunk_error(e)),
                Some(Ok(row)) => match map_row(&row) {
                    Ok(log) => writer.write_log(&log).map_err(encode_error)?,
                    Err(reason) => {
                        skipped += 1;
                        if skipped <= 10 {
                            tracing::warn!(?reason, "skipped an event that cannot be mapped");
                        }
                    }
                },
            }
            if let Some(chunk) = writer.take_bytes(self.settings.chunk_bytes) {
                bytes += chunk.len() as u64;
                tokio::select! {
                    biased;
                    _ = &mut stopped => return Err(JobError::Stopped),
                    written = upload.write(chunk) => written.map_err(storage_error)?,
                }
                ctx.report_progress(writer.logs_written(), bytes);
            }
        }
        let logs = writer.logs_written();
        let tail = writer.finish().map_err(encode_error)?;
        bytes += tail.len() as u64;
        if !tail.is_empty() {
            upload.write(tail).await.map_err(storage_error)?;
        }
        ctx.report_progress(logs, bytes);
        Ok(Streamed {
            logs,
            skipped,
            bytes,
        })
    }
}
