//! One export attempt, streamed end to end: the slices' readers map and encode rows as they
//! arrive from Splunk, the archive appends and compresses the encoded lines in order, and full
//! chunks go to the upload while the next ones are read. Memory is bounded by
//! a chunk plus the upload's parts in flight, whatever the export's size.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use async_trait::async_trait;

use super::ExportSettings;
use super::checkpoint::{ExportCheckpoint, another_attempt_follows};
use super::encode::RowEncoder;
use super::slices::{Chunk, SliceError, SliceProgress, SlicedRows};
use crate::archive::{self, ArchiveDetails, ArchiveWriter, ResumableSha256};
use crate::domain::quay_datetime;
use crate::metrics::METRICS;
use crate::queue::chain::{self, LeftBehind};
use crate::queue::{ClaimedJob, ExportResult};
use crate::splunk::{SplunkClient, SplunkError};
use crate::storage::{ObjectMeta, ObjectStore, StorageError, Upload, manifest_key, object_key};
use crate::worker::{Cause, JobContext, JobError, JobHandler, Party};

/// The export job body.
pub struct ExportJob {
    splunk: SplunkClient,
    pub(super) store: Arc<dyn ObjectStore>,
    pub(super) settings: ExportSettings,
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

/// A Splunk failure; a failure of the search quota's database names the database.
fn splunk_error(e: SplunkError) -> JobError {
    let party = match e {
        SplunkError::Database { .. } => Party::Database,
        _ => Party::Splunk,
    };
    if e.is_database() {
        JobError::Database(Cause::of(party, e))
    } else if e.is_retryable() {
        JobError::Retryable(Cause::of(party, e))
    } else {
        JobError::Permanent(Cause::of(party, e))
    }
}

/// A failure reading the slices, blamed on the party that failed: Splunk, the spool disk, or
/// the encoding of what was read.
fn slice_error(e: SliceError) -> JobError {
    match e {
        SliceError::Splunk(e) => splunk_error(e),
        spool @ SliceError::Spool(_) => JobError::Retryable(Cause::of(Party::Spool, spool)),
        encoding @ SliceError::Encoding(_) => {
            JobError::Retryable(Cause::of(Party::Encoding, encoding))
        }
    }
}

pub(super) fn storage_error(e: StorageError) -> JobError {
    if e.is_retryable() {
        JobError::Retryable(Cause::of(Party::Storage, e))
    } else {
        JobError::Permanent(Cause::of(Party::Storage, e))
    }
}

fn encode_error(e: std::io::Error) -> JobError {
    JobError::Retryable(Cause::with_context(
        Party::Encoding,
        "encoding the archive failed",
        e,
    ))
}

/// Counts from a completed stream (or where an earlier attempt's checkpoint left them).
#[derive(Debug, Default)]
struct Streamed {
    logs: u64,
    skipped: u64,
    bytes: u64,
    /// SHA-256 of the stored bytes.
    digest: ResumableSha256,
}

#[async_trait]
impl JobHandler for ExportJob {
    /// Not while as many of this process's searches wait for Splunk's search quota as it has
    /// places: an export started then would only wait too, holding a slot and its namespace's
    /// turn, while a process whose searches do not wait could start it. At month-end on 6
    /// processes, starting regardless left a few namespaces' last exports to run alone at the
    /// end (0.4-0.5 s of the quota idle after it was last full, against 0.1 s).
    async fn ready_for_more(&self) {
        self.splunk.until_quota_line_short().await;
    }

    /// The Splunk search quota's places and its listener for freed places, made ready before
    /// the first export rather than by it: at month-end every process's first searches would
    /// otherwise wait on that statement and on a new connection to Postgres, while the quota
    /// stands idle.
    async fn start_up(&self) {
        if let Err(e) = self.splunk.start_quota().await {
            // The first search tries again.
            tracing::warn!(error = %e, "preparing the Splunk search quota failed");
        }
    }

    #[tracing::instrument(skip_all, fields(export_id = %job.id, attempt = job.attempt))]
    async fn run(&self, job: &ClaimedJob, ctx: &JobContext) -> Result<ExportResult, JobError> {
        let ext = archive::file_extension(job.format, job.compression);
        let meta = ObjectMeta {
            content_type: archive::content_type(job.format, job.compression).to_owned(),
            filename: format!("exportedlogs-{}-{}.{ext}", job.namespace, job.id),
        };
        // What earlier attempts left, in one read: a sealed archive (only its finish is left),
        // or one completed without its seal (deleted first).
        if let Some((pool, id, attempt)) = ctx.fenced() {
            let left = chain::left_behind(pool, id)
                .await
                .map_err(|e| JobError::database("reading what earlier attempts left", e))?;
            match left {
                LeftBehind::Nothing => {}
                LeftBehind::Sealed(sealed) => {
                    tracing::info!("the archive is sealed already; finishing it");
                    // The attempt that sealed it may have stopped before its digest was
                    // recorded with the object (the two run side by side): recorded again.
                    let (bytes, sha256) = (sealed.manifest.bytes, sealed.manifest.sha256.clone());
                    let key = sealed.object_key.clone();
                    let finish = self.deliver(job, ctx, &meta, *sealed);
                    return self
                        .beside_the_digest(&key, &meta, bytes, &sha256, finish)
                        .await;
                }
                // An earlier attempt completed an archive but lost its seal: no export will
                // name it, so it goes before this attempt writes its own.
                LeftBehind::Unsealed(orphan) => {
                    tracing::info!(key = %orphan, "deleting the archive an earlier attempt completed but could not seal");
                    for key in [manifest_key(&orphan), orphan.clone()] {
                        self.store.delete(&key).await.map_err(storage_error)?;
                    }
                    chain::forget_unsealed(pool, id, attempt, &orphan)
                        .await
                        .map_err(|e| JobError::database("forgetting the deleted archive", e))?;
                }
            }
        }
        let mut filters = self.splunk.filters(job.range.start, job.range.end);
        filters.namespace = Some(job.namespace.clone());
        filters.repository = job.repository.clone();
        filters.performer = job.performer.clone();
        // One kind is a `kind=` term; several become `kind!=` exclusions of every other known
        // kind (the SPL subset has no `OR`), and the encoder drops what else comes back.
        match job.kinds.len() {
            0 => {}
            1 => filters.kinds = job.kinds.clone(),
            _ => filters.excluded_kinds = crate::logs::kinds::exclusions_for(&job.kinds),
        }
        filters
            .build()
            .map_err(|e| JobError::Invalid(format!("cannot build the Splunk search: {e}")))?;

        let started = std::time::Instant::now();
        let encoder = RowEncoder::new(job.format, &job.kinds);
        // Each reading of the export has a spool directory of its own, removed by that reading
        // alone when it ends: no other attempt or worker on this machine can remove it from
        // under a reading still in use.
        let spool_name = format!(
            "{}-{}-{}",
            job.id,
            job.attempt,
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let mut checkpoint = ExportCheckpoint::of(job);
        // Splunk first: a rejected token or bad search must not leave an upload behind.
        let mut rows = tokio::select! {
            _ = ctx.stopped() => return Err(JobError::Stopped),
            rows = SlicedRows::start(
                &self.splunk,
                &filters,
                &self.settings.slices,
                &spool_name,
                checkpoint.as_ref().map(ExportCheckpoint::resume),
                encoder.clone(),
            ) => rows.map_err(slice_error)?,
        };
        let mut resumed = None;
        if let Some(at) = &checkpoint {
            match self.store.resume_upload(&at.key, &meta, &at.upload).await {
                Ok(upload) => {
                    METRICS.incr("logexport_export_checkpoints_total", "resumed");
                    tracing::info!(
                        slices_done = at.slices_done,
                        slices = at.slices,
                        logs = at.logs,
                        "continuing the upload an earlier attempt checkpointed"
                    );
                    resumed = Some(upload);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the checkpointed upload cannot be continued; starting over");
                    checkpoint = None;
                    // The resumed reading ends first: its searches give their permits back, and
                    // its spool goes with it before the new reading starts its own.
                    drop(rows);
                    let spool_name = format!("{spool_name}-over");
                    rows = SlicedRows::start(
                        &self.splunk,
                        &filters,
                        &self.settings.slices,
                        &spool_name,
                        None,
                        encoder,
                    )
                    .await
                    .map_err(slice_error)?;
                }
            }
        }
        let (key, mut upload, writer, base) = match (checkpoint, resumed) {
            (Some(at), Some(upload)) => {
                let writer = ArchiveWriter::resume(job.format, job.compression, at.logs);
                let base = Streamed {
                    logs: at.logs,
                    skipped: at.skipped,
                    bytes: at.bytes,
                    digest: at.digest.clone(),
                };
                (at.key, upload, writer, base)
            }
            _ => {
                let key = object_key(&self.settings.object_prefix, job.id, &ext);
                let upload = self
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
                    performer: job.performer.as_ref().map(ToString::to_string),
                    kinds: job.kinds.clone(),
                };
                let writer = ArchiveWriter::new(job.format, job.compression, &details);
                (key, upload, writer, Streamed::default())
            }
        };
        let mut saves = Checkpoints {
            key: key.clone(),
            slices: rows.slice_count(),
            probed_until: rows.probed_until(),
            saved: base.bytes > 0,
            base,
        };

        match self
            .stream(&mut rows, writer, upload.as_mut(), ctx, &mut saves)
            .await
        {
            Ok(streamed) => {
                tracing::debug!(
                    logs = streamed.logs,
                    "every row encoded; completing the upload"
                );
                ctx.reading_done();
                // Completing is final: only while no other worker can take the job over (its
                // lease may have run out while the database was away).
                if let Err(e) = self.ready_to_complete(ctx, &key).await {
                    if saves.saved {
                        upload.suspend();
                    } else if let Err(abort) = upload.abort().await {
                        tracing::warn!(error = %abort, "aborting the upload failed; housekeeping will remove it");
                    }
                    return Err(e);
                }
                let sha256 = streamed.digest.finish_hex();
                upload.body_sha256(&sha256);
                let size = upload.complete().await.map_err(storage_error)?;
                // Never longer-lived than the credentials that sign it.
                tracing::info!(
                    logs = streamed.logs,
                    skipped = streamed.skipped,
                    bytes = size,
                    "archive uploaded"
                );
                debug_assert_eq!(size, streamed.bytes);
                METRICS.export_succeeded(started.elapsed(), streamed.logs, size);
                let archived = chain::Archived {
                    object_key: &key,
                    logs: streamed.logs,
                    logs_skipped: streamed.skipped,
                    bytes: size,
                    sha256: &sha256,
                };
                let finish = async {
                    let sealed = self.seal(job, ctx, archived).await?;
                    self.deliver(job, ctx, &meta, sealed).await
                };
                self.beside_the_digest(&key, &meta, size, &sha256, finish)
                    .await
            }
            Err(e) if saves.saved && another_attempt_follows(&e, job, ctx) => {
                // The next attempt continues this upload from the last checkpoint.
                upload.suspend();
                Err(e)
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

    async fn discard(&self, result: &ExportResult) {
        // A sealed archive is a link of its namespace's chain: whichever attempt finishes the
        // export delivers it, so it is never discarded.
        if result.manifest.get("chain").is_some_and(|c| !c.is_null()) {
            return;
        }
        self.discard_archive(&result.object_key).await;
    }
}

impl ExportJob {
    /// Runs `finish` (the seal, the manifest) while the archive's digest is recorded with the
    /// object (on S3 a server-side copy), which needs neither; the export succeeds once both are
    /// done, and neither is cut short by the other's failure (the finish's error comes first).
    async fn beside_the_digest(
        &self,
        key: &str,
        meta: &ObjectMeta,
        bytes: u64,
        sha256: &str,
        finish: impl Future<Output = Result<ExportResult, JobError>>,
    ) -> Result<ExportResult, JobError> {
        let (recorded, result) =
            tokio::join!(self.store.record_sha256(key, meta, bytes, sha256), finish);
        let result = result?;
        recorded.map_err(storage_error)?;
        Ok(result)
    }

    /// Whether the upload may be completed: the lease holds long enough that no other worker
    /// can take the job over meanwhile, and the archive's key is on the job's row, so that an
    /// archive whose seal is lost is found and deleted by the next attempt.
    async fn ready_to_complete(&self, ctx: &JobContext, key: &str) -> Result<(), JobError> {
        ctx.hold_lease().await?;
        let Some((pool, id, attempt)) = ctx.fenced() else {
            return Ok(());
        };
        match chain::completing(pool, id, attempt, key).await {
            Ok(true) => Ok(()),
            Ok(false) => Err(JobError::Stopped),
            Err(e) => Err(JobError::database(
                "recording the archive about to be completed",
                e,
            )),
        }
    }

    /// Deletes an archive and its manifest that no job row will point at.
    async fn discard_archive(&self, key: &str) {
        for key in [manifest_key(key), key.to_owned()] {
            if let Err(e) = self.store.delete(&key).await {
                tracing::warn!(error = %e, key, "could not delete an archive no export records");
            }
        }
    }

    async fn stream(
        &self,
        rows: &mut SlicedRows,
        mut writer: ArchiveWriter,
        upload: &mut dyn Upload,
        ctx: &JobContext,
        saves: &mut Checkpoints,
    ) -> Result<Streamed, JobError> {
        let base = std::mem::take(&mut saves.base);
        let slices = rows.progress();
        report_slices(ctx, &slices);
        let mut bytes = base.bytes;
        let mut digest = base.digest;
        let mut skipped = base.skipped;
        // The readers encode what they read; here the encoded lines are appended (and
        // compressed) in the archive's order, and full chunks go to the upload while the
        // readers read on.
        let append = async {
            let mut chunk = Chunk::default();
            loop {
                chunk.clear();
                let more = rows
                    .next_chunk(&mut chunk, CHUNK_BYTES)
                    .await
                    .map_err(slice_error)?;
                skipped += chunk.skipped;
                writer
                    .append_encoded(&chunk.bytes, chunk.logs)
                    .map_err(encode_error)?;
                if let Some(slices_done) = rows.boundary() {
                    // The archive so far holds exactly the first `slices_done` slices.
                    let piece = writer.end_member().map_err(encode_error)?;
                    bytes += piece.len() as u64;
                    digest.update(&piece);
                    upload.write(piece).await.map_err(storage_error)?;
                    // A checkpoint spares a later attempt the reading done so far. Once Splunk
                    // has given everything, only the archive's side is left (a few seconds at
                    // most, the read-ahead on disk), and making the upload durable at each
                    // boundary there (waiting for every S3 part in flight, or an fsync) would
                    // hold up exactly that end. An attempt that dies in it reads again from
                    // the last checkpoint taken while reading.
                    if !rows.everything_read() {
                        let so_far = Streamed {
                            logs: writer.logs_written(),
                            skipped,
                            bytes,
                            digest: digest.clone(),
                        };
                        saves.save(ctx, upload, slices_done, so_far).await?;
                    }
                } else if let Some(full) = writer.take_bytes(self.settings.chunk_bytes) {
                    bytes += full.len() as u64;
                    digest.update(&full);
                    upload.write(full).await.map_err(storage_error)?;
                }
                ctx.report_progress(writer.logs_written(), bytes);
                if !more {
                    return Ok::<_, JobError>(());
                }
            }
        };
        // The slices' progress goes to the heartbeat while slices are read ahead of the archive.
        let report = async {
            loop {
                report_slices(ctx, &slices);
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
            }
        };
        tokio::select! {
            biased;
            _ = ctx.stopped() => return Err(JobError::Stopped),
            appended = append => appended?,
            never = report => match never {},
        };
        let logs = writer.logs_written();
        let tail = writer.finish().map_err(encode_error)?;
        bytes += tail.len() as u64;
        digest.update(&tail);
        if !tail.is_empty() {
            upload.write(tail).await.map_err(storage_error)?;
        }
        ctx.report_progress(logs, bytes);
        report_slices(ctx, &slices);
        Ok(Streamed {
            logs,
            skipped,
            bytes,
            digest,
        })
    }
}

/// Records checkpoints for one attempt.
struct Checkpoints {
    key: String,
    slices: usize,
    probed_until: Option<chrono::DateTime<chrono::Utc>>,
    /// Whether a checkpoint of this upload is on record (this attempt's or an earlier one's).
    saved: bool,
    /// The counts the attempt starts from (an earlier attempt's checkpoint, else zero).
    base: Streamed,
}

impl Checkpoints {
    /// Makes the upload durable up to here and records that, when the store can now.
    async fn save(
        &mut self,
        ctx: &JobContext,
        upload: &mut dyn Upload,
        slices_done: usize,
        so_far: Streamed,
    ) -> Result<(), JobError> {
        let Some(at) = upload.checkpoint().await.map_err(storage_error)? else {
            return Ok(());
        };
        let checkpoint = ExportCheckpoint {
            key: self.key.clone(),
            slices: self.slices,
            probed_until: self.probed_until,
            slices_done,
            logs: so_far.logs,
            skipped: so_far.skipped,
            bytes: so_far.bytes,
            digest: so_far.digest,
            upload: at,
        };
        let value = serde_json::to_value(&checkpoint)
            .map_err(|e| JobError::Permanent(format!("cannot record a checkpoint: {e}").into()))?;
        match ctx.save_checkpoint(&value).await {
            Ok(recorded) => {
                if recorded {
                    METRICS.incr("logexport_export_checkpoints_total", "saved");
                }
                self.saved |= recorded;
            }
            // Progress goes on; a later checkpoint or a full retry covers the gap.
            Err(e) => tracing::warn!(error = %e, "recording a checkpoint failed"),
        }
        Ok(())
    }
}

fn report_slices(ctx: &JobContext, slices: &SliceProgress) {
    let get = |n: &std::sync::atomic::AtomicUsize| n.load(Ordering::Relaxed) as u64;
    ctx.report_slices(get(&slices.total), get(&slices.done), get(&slices.running));
}

/// Encoded bytes taken from the spool at a time: the archive appends and compresses them in one
/// go, and a few of them make an upload chunk.
const CHUNK_BYTES: usize = 256 * 1024;
