//! The end of an export once its archive is complete: seal it as the next link of its
//! namespace's chain, time-stamp the manifest when a TSA is configured, store the manifest
//! beside the archive. From the seal on the export can only succeed: a TSA that is down or
//! slow delays the finish (noted in the export's status) and a later attempt resumes here.

use std::time::Duration;

use chrono::{SecondsFormat, Utc};

use super::pipeline::{ExportJob, storage_error};
use crate::archive::Manifest;
use crate::archive::manifest::{ManifestFilters, ManifestRange};
use crate::queue::chain::{self, Archived, Link, Sealed};
use crate::queue::{ClaimedJob, ExportResult};
use crate::storage::{ObjectMeta, manifest_key};
use crate::worker::{JobContext, JobError};

/// Longest wait between two requests to a TSA that is down.
const TSA_RETRY_MAX: Duration = Duration::from_secs(30);

impl ExportJob {
    /// Seals the complete archive into the namespace's chain (or, outside a worker, signs an
    /// unchained manifest).
    pub(super) async fn seal(
        &self,
        job: &ClaimedJob,
        ctx: &JobContext,
        archived: Archived<'_>,
    ) -> Result<Sealed, JobError> {
        let key = self.settings.manifest_key.as_deref();
        let draft = |signed_at: chrono::DateTime<Utc>| Manifest {
            version: 1,
            export_id: job.id.to_string(),
            namespace: job.namespace.to_string(),
            repository: job.repository.as_ref().map(ToString::to_string),
            filters: ManifestFilters {
                performer: job.performer.as_ref().map(ToString::to_string),
                kind: job.kinds.clone(),
            },
            range: ManifestRange {
                start: job.range.start.to_rfc3339_opts(SecondsFormat::AutoSi, true),
                end: job.range.end.to_rfc3339_opts(SecondsFormat::AutoSi, true),
                timezone: job.range.timezone.name().to_owned(),
            },
            format: job.format.to_string(),
            compression: job.compression.to_string(),
            logs: archived.logs,
            bytes: archived.bytes,
            sha256: archived.sha256.to_owned(),
            created_at: signed_at.to_rfc3339_opts(SecondsFormat::Secs, true),
            signed: false,
            key_id: None,
            algorithm: None,
            signature: None,
            chain: None,
            schedule: None,
            timestamp_token: None,
        };
        let Some((pool, id, attempt)) = ctx.fenced() else {
            return Ok(Sealed {
                manifest: draft(Utc::now()).sign(key),
                object_key: archived.object_key.to_owned(),
                logs_skipped: archived.logs_skipped,
            });
        };
        // A cancel seen before the seal still cancels; after it the export is a link.
        if ctx.is_stopped() {
            return Err(JobError::Stopped);
        }
        let public = key.map(crate::archive::ManifestKey::public);
        let sealed = chain::seal(
            pool,
            id,
            attempt,
            archived,
            public.as_ref(),
            |link: Link| {
                let mut manifest = draft(link.signed_at);
                manifest.version = 2;
                manifest.chain = Some(link.chain);
                manifest.schedule = link.schedule;
                manifest.sign(key)
            },
        )
        .await
        .map_err(|e| JobError::database("sealing the export into its chain", e))?;
        let sealed = sealed.ok_or(JobError::Stopped)?;
        if let Some(chain) = &sealed.manifest.chain {
            tracing::info!(
                sequence = chain.sequence,
                "sealed as the next link of the namespace's chain"
            );
        }
        Ok(sealed)
    }

    /// Time-stamps and stores the sealed manifest beside the archive, and answers the result.
    pub(super) async fn deliver(
        &self,
        job: &ClaimedJob,
        ctx: &JobContext,
        meta: &ObjectMeta,
        sealed: Sealed,
    ) -> Result<ExportResult, JobError> {
        let Sealed {
            mut manifest,
            object_key,
            logs_skipped,
        } = sealed;
        if manifest.timestamp_token.is_none()
            && let Some(tsa) = &self.settings.timestamp
        {
            manifest.timestamp_token = Some(stamp(tsa, &manifest, ctx).await?);
        }
        let text = serde_json::to_vec_pretty(&manifest)
            .map_err(|e| JobError::Permanent(format!("cannot write the manifest: {e}").into()))?;
        let manifest_meta = ObjectMeta {
            content_type: "application/json".into(),
            filename: format!("{}.manifest.json", meta.filename),
        };
        let mut upload = self
            .store
            .begin_upload(&manifest_key(&object_key), &manifest_meta)
            .await
            .map_err(storage_error)?;
        upload
            .write(bytes::Bytes::from(text))
            .await
            .map_err(storage_error)?;
        upload.complete().await.map_err(storage_error)?;
        let (url, lifetime) = self
            .store
            .download_link(&object_key, self.settings.url_expiry)
            .await
            .map_err(storage_error)?;
        tracing::debug!(export_id = %job.id, "manifest stored");
        Ok(ExportResult {
            sha256: manifest.sha256.clone(),
            manifest: serde_json::to_value(&manifest).map_err(|e| {
                JobError::Permanent(format!("cannot record the manifest: {e}").into())
            })?,
            object_key,
            download_url: url.to_string(),
            url_expires_at: Utc::now()
                + chrono::Duration::from_std(lifetime).unwrap_or(chrono::Duration::hours(1)),
            logs_exported: manifest.logs,
            logs_skipped,
            bytes_written: manifest.bytes,
        })
    }
}

/// Asks the TSA until it answers; each failure is noted in the export's status. Returns when the
/// job must stop (shutdown, lost lease, time limit, a cancel that raced the seal): the runner
/// then retries the sealed export rather than ending it, and the next attempt resumes here.
async fn stamp(
    tsa: &crate::archive::timestamp::TimestampAuthority,
    manifest: &Manifest,
    ctx: &JobContext,
) -> Result<String, JobError> {
    let canonical = manifest.canonical();
    let mut delay = Duration::from_millis(500);
    for n in 1u32.. {
        let error = tokio::select! {
            _ = ctx.stopped() => return Err(JobError::Stopped),
            stamped = tsa.stamp(&canonical) => match stamped {
                Ok(token) => return Ok(token),
                Err(e) => e,
            },
        };
        let note = format!(
            "waiting for the time-stamp authority (try {n}, next in {} s): {error}",
            delay.as_secs_f32()
        );
        tracing::warn!(error = %error, try_number = n, "time-stamping the manifest failed; retrying");
        if let Some((pool, id, attempt)) = ctx.fenced()
            && let Err(e) = chain::note_waiting(pool, id, attempt, &note).await
        {
            tracing::warn!(error = %e, "recording the wait for the TSA failed");
        }
        tokio::select! {
            _ = ctx.stopped() => return Err(JobError::Stopped),
            _ = tokio::time::sleep(delay) => {}
        }
        delay = (delay * 2).min(TSA_RETRY_MAX);
    }
    unreachable!("the loop returns")
}
