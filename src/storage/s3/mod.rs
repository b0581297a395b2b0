//! S3 (or an S3-compatible store such as Garage or MinIO) through aws-sdk-s3: the store here,
//! the configured client in [`client`], multipart uploads in [`upload`].

mod client;
mod upload;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::types::ChecksumAlgorithm;
use url::Url;

use self::client::{S3Inner, sdk_error};
use self::upload::S3Upload;
use super::{ObjectMeta, ObjectStore, StorageError, Upload, UploadCheckpoint};
use crate::config::S3Config;

/// A bucket in S3 or an S3-compatible store.
#[derive(Clone)]
pub struct S3Store {
    inner: Arc<S3Inner>,
}

impl S3Store {
    /// Builds the client from `[storage.s3]`: static credentials when both keys are set,
    /// otherwise the AWS default chain (environment, profile, web identity, IMDS).
    pub async fn from_config(cfg: &S3Config) -> anyhow::Result<Self> {
        Ok(Self {
            inner: Arc::new(S3Inner::connect(cfg).await?),
        })
    }

    /// The object's recorded SHA-256 (`x-amz-meta-sha256`), if any.
    pub async fn recorded_sha256(&self, key: &str) -> Result<Option<String>, StorageError> {
        let s = &self.inner;
        let head = s
            .client
            .head_object()
            .bucket(&s.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| sdk_error(&s.system, "head object", e))?;
        Ok(head.metadata().and_then(|m| m.get("sha256")).cloned())
    }

    /// How long the signing credentials still last, when they are temporary (STS, IRSA, …).
    async fn credentials_left(&self) -> Option<Duration> {
        use aws_credential_types::provider::ProvideCredentials;
        let provider = self.inner.credentials.as_ref()?;
        let credentials = provider.provide_credentials().await.ok()?;
        let expiry = credentials.expiry()?;
        Some(expiry.duration_since(SystemTime::now()).unwrap_or_default())
    }

    /// The size at which parts are uploaded: the configured size, at least 10 MiB.
    pub fn part_size(&self) -> usize {
        self.inner.part_size
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn begin_upload(
        &self,
        key: &str,
        meta: &ObjectMeta,
    ) -> Result<Box<dyn Upload>, StorageError> {
        Ok(Box::new(S3Upload::new(
            self.inner.clone(),
            key.to_owned(),
            meta.clone(),
        )))
    }

    async fn resume_upload(
        &self,
        key: &str,
        meta: &ObjectMeta,
        at: &UploadCheckpoint,
    ) -> Result<Box<dyn Upload>, StorageError> {
        let upload = S3Upload::resume(self.inner.clone(), key.to_owned(), meta.clone(), at).await?;
        Ok(Box::new(upload))
    }

    async fn download_url(&self, key: &str, expires_in: Duration) -> Result<Url, StorageError> {
        let s = &self.inner;
        let presigning = PresigningConfig::expires_in(expires_in)
            .map_err(|e| StorageError::permanent(&s.system, "presign download link", e))?;
        let file_name = key.rsplit('/').next().unwrap_or(key);
        let request = s
            .client
            .get_object()
            .bucket(&s.bucket)
            .key(key)
            .response_content_disposition(super::key::content_disposition(file_name))
            .presigned(presigning)
            .await
            .map_err(|e| sdk_error(&s.system, "presign download link", e))?;
        Url::parse(request.uri()).map_err(|e| {
            StorageError::permanent(&s.system, "presign download link", format!("bad URL: {e}"))
        })
    }

    async fn download_link(
        &self,
        key: &str,
        expires_in: Duration,
    ) -> Result<(Url, Duration), StorageError> {
        let lifetime = match self.credentials_left().await {
            Some(left) => expires_in.min(left),
            None => expires_in,
        };
        Ok((self.download_url(key, lifetime).await?, lifetime))
    }

    async fn record_sha256(
        &self,
        key: &str,
        meta: &ObjectMeta,
        bytes: u64,
        sha256: &str,
    ) -> Result<(), StorageError> {
        // Metadata is fixed at upload, and the digest is known only at the end: the object is
        // copied onto itself with the metadata replaced (server-side; CopyObject takes ≤ 5 GiB).
        const MAX_COPY: u64 = 5 * 1024 * 1024 * 1024;
        let s = &self.inner;
        if bytes > MAX_COPY {
            tracing::info!(%key, "archive over 5 GiB: its SHA-256 is in the manifest only");
            return Ok(());
        }
        let mut copy = s
            .client
            .copy_object()
            .bucket(&s.bucket)
            .key(key)
            .copy_source(format!(
                "{}/{}",
                s.bucket,
                urlencoding::encode(key).replace("%2F", "/")
            ))
            .metadata_directive(aws_sdk_s3::types::MetadataDirective::Replace)
            .metadata("sha256", sha256)
            .content_type(&meta.content_type)
            .content_disposition(meta.content_disposition());
        if s.part_checksums {
            // The copy is one part, so S3 keeps a full-object SHA-256 of it
            // (`head-object --checksum-mode ENABLED` shows `ChecksumSHA256`).
            copy = copy.checksum_algorithm(ChecksumAlgorithm::Sha256);
        }
        copy.send()
            .await
            .map_err(|e| sdk_error(&s.system, "record the SHA-256 (copy object)", e))?;
        Ok(())
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        let s = &self.inner;
        s.client
            .delete_object()
            .bucket(&s.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| sdk_error(&s.system, "delete object", e))?;
        Ok(())
    }

    async fn size(&self, key: &str) -> Result<Option<u64>, StorageError> {
        let s = &self.inner;
        match s
            .client
            .head_object()
            .bucket(&s.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(head) => Ok(Some(
                head.content_length()
                    .and_then(|l| u64::try_from(l).ok())
                    .unwrap_or(0),
            )),
            Err(SdkError::ServiceError(e)) if e.err().is_not_found() => Ok(None),
            Err(e) => Err(sdk_error(&s.system, "head object", e)),
        }
    }

    async fn abort_stale_uploads(
        &self,
        prefix: &str,
        older_than: Duration,
    ) -> Result<usize, StorageError> {
        let s = &self.inner;
        let cutoff = SystemTime::now()
            .checked_sub(older_than)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let mut aborted = 0;
        for upload in self.list_uploads(prefix).await? {
            let stale = upload
                .initiated
                .is_some_and(|initiated| initiated <= cutoff);
            if !stale {
                continue;
            }
            let result = s
                .client
                .abort_multipart_upload()
                .bucket(&s.bucket)
                .key(&upload.key)
                .upload_id(&upload.upload_id)
                .send()
                .await;
            match result {
                Ok(_) => aborted += 1,
                // Completed or aborted by someone else meanwhile: nothing left to clean.
                Err(SdkError::ServiceError(e)) if e.err().meta().code() == Some("NoSuchUpload") => {
                }
                Err(e) => return Err(sdk_error(&s.system, "abort stale upload", e)),
            }
        }
        Ok(aborted)
    }

    async fn list_incomplete_uploads(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        Ok(self
            .list_uploads(prefix)
            .await?
            .into_iter()
            .map(|u| u.key)
            .collect())
    }
}

/// One incomplete multipart upload.
struct PendingUpload {
    key: String,
    upload_id: String,
    initiated: Option<SystemTime>,
}

impl S3Store {
    /// Every incomplete multipart upload under `prefix`, following the listing's pages.
    async fn list_uploads(&self, prefix: &str) -> Result<Vec<PendingUpload>, StorageError> {
        let s = &self.inner;
        let mut found = Vec::new();
        let mut key_marker: Option<String> = None;
        let mut upload_id_marker: Option<String> = None;
        loop {
            let page = s
                .client
                .list_multipart_uploads()
                .bucket(&s.bucket)
                .prefix(prefix)
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(upload_id_marker.take())
                .send()
                .await
                .map_err(|e| sdk_error(&s.system, "list multipart uploads", e))?;
            for upload in page.uploads() {
                if let (Some(key), Some(upload_id)) = (upload.key(), upload.upload_id()) {
                    found.push(PendingUpload {
                        key: key.to_owned(),
                        upload_id: upload_id.to_owned(),
                        initiated: upload
                            .initiated()
                            .and_then(|t| SystemTime::try_from(*t).ok()),
                    });
                }
            }
            if page.is_truncated() != Some(true) {
                return Ok(found);
            }
            key_marker = page.next_key_marker().map(str::to_owned);
            upload_id_marker = page.next_upload_id_marker().map(str::to_owned);
            if key_marker.is_none() && upload_id_marker.is_none() {
                // A truncated page without markers would loop forever; stop with what we have.
                return Ok(found);
            }
        }
    }
}
