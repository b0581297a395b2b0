//! One S3 object being written: parts upload in background tasks while the caller fills the next.

use std::collections::VecDeque;
use std::sync::Arc;

use async_trait::async_trait;
use aws_runtime::auth::PayloadSigningOverride;
use aws_sdk_s3::config::interceptors::BeforeTransmitInterceptorContextMut;
use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_sdk_s3::error::BoxError;
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use bytes::{Bytes, BytesMut};
use tokio::task::JoinHandle;

use super::client::{MIN_PART_SIZE, S3Inner, sdk_error};
use crate::storage::{ObjectMeta, StorageError, Upload, UploadCheckpoint, UploadedPart};

/// Parts uploading at once: one sending while the next fills keeps the pipeline busy, and memory
/// stays bounded at about (this + 2) parts (the one filling and one spare buffer).
const MAX_IN_FLIGHT: usize = 2;

/// A part's upload; yields the part and, when nothing else holds it any more, its buffer.
type PartTask = JoinHandle<Result<(CompletedPart, Option<BytesMut>), StorageError>>;

/// An upload that becomes a multipart upload once the first full part exists; an archive
/// smaller than one part is sent with a single `PutObject` on completion.
pub(super) struct S3Upload {
    s3: Arc<S3Inner>,
    key: String,
    meta: ObjectMeta,
    pending: BytesMut,
    /// The buffer of a part uploaded already, for the next part: an export of hundreds of parts
    /// then maps and zeroes fresh memory for its first parts only.
    spare: Option<BytesMut>,
    upload_id: Option<String>,
    in_flight: VecDeque<PartTask>,
    done_parts: Vec<CompletedPart>,
    next_part_number: i32,
    total: u64,
    /// The SHA-256 of everything written, when the caller gave it ([`Upload::body_sha256`]).
    body_sha256: Option<String>,
    /// Set once completed or aborted, so `Drop` knows there is nothing to clean up.
    finished: bool,
}

impl S3Upload {
    pub(super) fn new(s3: Arc<S3Inner>, key: String, meta: ObjectMeta) -> Self {
        Self {
            s3,
            key,
            meta,
            pending: BytesMut::new(),
            spare: None,
            upload_id: None,
            in_flight: VecDeque::new(),
            done_parts: Vec::new(),
            next_part_number: 1,
            total: 0,
            body_sha256: None,
            finished: false,
        }
    }

    /// An upload continuing at `at`, after checking that S3 still has it.
    pub(super) async fn resume(
        s3: Arc<S3Inner>,
        key: String,
        meta: ObjectMeta,
        at: &UploadCheckpoint,
    ) -> Result<Self, StorageError> {
        let UploadCheckpoint::S3 {
            upload_id,
            parts,
            bytes,
        } = at
        else {
            return Err(StorageError::permanent(
                &s3.system,
                "resume upload",
                "the checkpoint is not an S3 multipart upload",
            ));
        };
        s3.client
            .list_parts()
            .bucket(&s3.bucket)
            .key(&key)
            .upload_id(upload_id)
            .max_parts(1)
            .send()
            .await
            .map_err(|e| sdk_error(&s3.system, "list parts of the upload to resume", e))?;
        let done_parts: Vec<CompletedPart> = parts
            .iter()
            .map(|p| {
                CompletedPart::builder()
                    .part_number(p.number)
                    .set_e_tag(p.etag.clone())
                    .set_checksum_crc32(p.crc32.clone())
                    .build()
            })
            .collect();
        let next_part_number = parts.iter().map(|p| p.number).max().unwrap_or(0) + 1;
        Ok(Self {
            s3,
            key,
            meta,
            pending: BytesMut::new(),
            spare: None,
            upload_id: Some(upload_id.clone()),
            in_flight: VecDeque::new(),
            done_parts,
            next_part_number,
            total: *bytes,
            body_sha256: None,
            finished: false,
        })
    }

    async fn checkpoint_inner(&mut self) -> Result<Option<UploadCheckpoint>, StorageError> {
        if self.pending.len() >= MIN_PART_SIZE {
            let part = self.pending.split().freeze();
            self.start_part(part).await?;
        }
        // Bytes short of a part stay in memory: S3 takes no smaller part but the last.
        if !self.pending.is_empty() || self.upload_id.is_none() {
            return Ok(None);
        }
        while !self.in_flight.is_empty() {
            self.wait_oldest().await?;
        }
        let mut parts: Vec<UploadedPart> = self
            .done_parts
            .iter()
            .map(|p| UploadedPart {
                number: p.part_number().unwrap_or_default(),
                etag: p.e_tag().map(str::to_owned),
                crc32: p.checksum_crc32().map(str::to_owned),
            })
            .collect();
        parts.sort_by_key(|p| p.number);
        Ok(Some(UploadCheckpoint::S3 {
            upload_id: self.upload_id.clone().unwrap_or_default(),
            parts,
            bytes: self.total,
        }))
    }

    async fn ensure_multipart(&mut self) -> Result<String, StorageError> {
        if let Some(id) = &self.upload_id {
            return Ok(id.clone());
        }
        let s = &self.s3;
        let mut request = s
            .client
            .create_multipart_upload()
            .bucket(&s.bucket)
            .key(&self.key)
            .content_type(&self.meta.content_type)
            .content_disposition(self.meta.content_disposition());
        if s.part_checksums {
            request = request.checksum_algorithm(ChecksumAlgorithm::Crc32);
        }
        let created = request
            .send()
            .await
            .map_err(|e| sdk_error(&s.system, "create multipart upload", e))?;
        let id = created.upload_id().ok_or_else(|| {
            StorageError::permanent(
                &s.system,
                "create multipart upload",
                "no upload id returned",
            )
        })?;
        self.upload_id = Some(id.to_owned());
        Ok(id.to_owned())
    }

    /// Starts uploading one part, first waiting for the oldest part when enough are in flight.
    async fn start_part(&mut self, body: Bytes) -> Result<(), StorageError> {
        let upload_id = self.ensure_multipart().await?;
        while self.in_flight.len() >= MAX_IN_FLIGHT {
            self.wait_oldest().await?;
        }
        let number = self.next_part_number;
        self.next_part_number += 1;
        let s = self.s3.clone();
        let key = self.key.clone();
        self.in_flight.push_back(tokio::spawn(async move {
            let length = i64::try_from(body.len()).unwrap_or(i64::MAX);
            let mut request = s
                .client
                .upload_part()
                .bucket(&s.bucket)
                .key(&key)
                .upload_id(upload_id)
                .part_number(number)
                .content_length(length)
                .body(ByteStream::from(body.clone()));
            if s.part_checksums {
                request = request.checksum_algorithm(ChecksumAlgorithm::Crc32);
            }
            let out = request
                .send()
                .await
                .map_err(|e| sdk_error(&s.system, "upload part", e))?;
            let part = CompletedPart::builder()
                .part_number(number)
                .set_e_tag(out.e_tag().map(str::to_owned))
                .set_checksum_crc32(out.checksum_crc32().map(str::to_owned))
                .build();
            // The request is done with the body; a part cut from a caller's chunk is not whole.
            let buffer = body
                .try_into_mut()
                .ok()
                .filter(|b| b.capacity() >= s.part_size);
            Ok((part, buffer))
        }));
        Ok(())
    }

    async fn wait_oldest(&mut self) -> Result<(), StorageError> {
        let Some(task) = self.in_flight.pop_front() else {
            return Ok(());
        };
        let (part, buffer) = task.await.map_err(|e| {
            StorageError::permanent(&self.s3.system, "upload part", format!("task failed: {e}"))
        })??;
        self.done_parts.push(part);
        if let Some(mut buffer) = buffer {
            buffer.clear();
            self.spare = Some(buffer);
        }
        Ok(())
    }

    async fn write_inner(&mut self, mut chunk: Bytes) -> Result<(), StorageError> {
        let part_size = self.s3.part_size;
        self.total += chunk.len() as u64;
        if !self.pending.is_empty() {
            let take = (part_size - self.pending.len()).min(chunk.len());
            self.pending.extend_from_slice(&chunk.split_to(take));
            if self.pending.len() == part_size {
                let part = self.pending.split().freeze();
                self.start_part(part).await?;
            }
        }
        // Whole parts straight from the chunk, without copying.
        while chunk.len() >= part_size {
            let part = chunk.split_to(part_size);
            self.start_part(part).await?;
        }
        if !chunk.is_empty() {
            if self.pending.is_empty()
                && self.pending.capacity() < part_size
                && let Some(spare) = self.spare.take()
            {
                self.pending = spare;
            }
            if self.pending.capacity() < part_size {
                self.pending.reserve(part_size);
            }
            self.pending.extend_from_slice(&chunk);
        }
        Ok(())
    }

    async fn complete_inner(&mut self) -> Result<u64, StorageError> {
        let s = self.s3.clone();
        if self.upload_id.is_none() {
            // Smaller than one part: a single request, and no multipart upload to clean up.
            let body = self.pending.split().freeze();
            // The body is everything written, so its hash is the one the caller gave.
            let known = self
                .body_sha256
                .take()
                .filter(|_| body.len() as u64 == self.total);
            let put = s
                .client
                .put_object()
                .bucket(&s.bucket)
                .key(&self.key)
                .content_type(&self.meta.content_type)
                .content_disposition(self.meta.content_disposition())
                .body(ByteStream::from(body))
                .customize();
            let put = match known {
                Some(sha256) => put.interceptor(KnownBodySha256(sha256)),
                None => put,
            };
            put.send()
                .await
                .map_err(|e| sdk_error(&s.system, "put object", e))?;
            return Ok(self.total);
        }
        if !self.pending.is_empty() {
            let last = self.pending.split().freeze();
            self.start_part(last).await?;
        }
        while !self.in_flight.is_empty() {
            self.wait_oldest().await?;
        }
        let mut parts = std::mem::take(&mut self.done_parts);
        parts.sort_by_key(|p| p.part_number());
        let upload_id = self.upload_id.clone().unwrap_or_default();
        s.client
            .complete_multipart_upload()
            .bucket(&s.bucket)
            .key(&self.key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(|e| sdk_error(&s.system, "complete multipart upload", e))?;
        Ok(self.total)
    }

    async fn abort_inner(&mut self) -> Result<(), StorageError> {
        self.finished = true;
        // Stop part uploads first so none lands after the abort and resurrects storage use.
        for task in self.in_flight.drain(..) {
            task.abort();
            let _ = task.await;
        }
        self.pending = BytesMut::new();
        let Some(upload_id) = self.upload_id.take() else {
            return Ok(());
        };
        let s = &self.s3;
        s.client
            .abort_multipart_upload()
            .bucket(&s.bucket)
            .key(&self.key)
            .upload_id(upload_id)
            .send()
            .await
            .map_err(|e| sdk_error(&s.system, "abort multipart upload", e))?;
        Ok(())
    }

    /// Runs a step; on failure aborts the whole upload (best effort) and returns the step's error.
    async fn or_abort<T>(&mut self, result: Result<T, StorageError>) -> Result<T, StorageError> {
        if result.is_err()
            && let Err(abort_error) = self.abort_inner().await
        {
            tracing::warn!(key = %self.key, error = %abort_error, "aborting a failed upload failed too");
        }
        result
    }
}

#[async_trait]
impl Upload for S3Upload {
    async fn write(&mut self, chunk: Bytes) -> Result<(), StorageError> {
        if self.finished {
            return Err(StorageError::permanent(
                &self.s3.system,
                "write",
                "upload already finished",
            ));
        }
        let result = self.write_inner(chunk).await;
        self.or_abort(result).await
    }

    fn body_sha256(&mut self, sha256: &str) {
        self.body_sha256 = Some(sha256.to_owned());
    }

    async fn complete(mut self: Box<Self>) -> Result<u64, StorageError> {
        let result = self.complete_inner().await;
        let result = self.or_abort(result).await;
        self.finished = true;
        result
    }

    async fn abort(mut self: Box<Self>) -> Result<(), StorageError> {
        self.abort_inner().await
    }

    async fn checkpoint(&mut self) -> Result<Option<UploadCheckpoint>, StorageError> {
        let result = self.checkpoint_inner().await;
        self.or_abort(result).await
    }

    fn suspend(mut self: Box<Self>) {
        // Parts not yet confirmed are not in any checkpoint; the next attempt re-uploads them.
        for task in self.in_flight.drain(..) {
            task.abort();
        }
        self.finished = true;
    }
}

/// Gives the request signer a body's SHA-256 known already (the archive's digest), so it signs
/// that instead of hashing the body a second time (at month-end that second pass took about 9 %
/// of a worker's CPU samples). S3 checks the body against it as against the signer's own.
#[derive(Debug)]
struct KnownBodySha256(String);

impl Intercept for KnownBodySha256 {
    fn name(&self) -> &'static str {
        "KnownBodySha256"
    }

    fn modify_before_signing(
        &self,
        _context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        cfg.interceptor_state()
            .store_put(PayloadSigningOverride::Precomputed(self.0.clone()));
        Ok(())
    }
}

impl Drop for S3Upload {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        for task in self.in_flight.drain(..) {
            task.abort();
        }
        let Some(upload_id) = self.upload_id.take() else {
            return;
        };
        // Dropped mid-way (cancelled job, panic): abort in the background so no multipart
        // upload lingers; housekeeping catches it if there is no runtime left to do this.
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let s = self.s3.clone();
        let key = std::mem::take(&mut self.key);
        runtime.spawn(async move {
            let result = s
                .client
                .abort_multipart_upload()
                .bucket(&s.bucket)
                .key(&key)
                .upload_id(upload_id)
                .send()
                .await;
            if let Err(e) = result {
                let e = sdk_error(&s.system, "abort dropped upload", e);
                tracing::warn!(%key, error = %e, "could not abort a dropped upload; housekeeping will");
            }
        });
    }
}
