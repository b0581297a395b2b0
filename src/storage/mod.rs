//! Object storage for finished archives: S3 (multipart, presigned links) or a local directory
//! (links signed and checked by this service).
//!
//! Both implement [`ObjectStore`]; the export pipeline streams an archive through an [`Upload`]
//! and mails the link from [`ObjectStore::download_url`].

mod error;
mod key;
mod local;
mod s3;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use url::Url;

pub use error::{DownloadError, StorageError};
pub use key::{ObjectMeta, content_disposition, manifest_key, object_key};
pub use local::LocalStore;
pub use s3::S3Store;

use crate::config::{Config, StorageKind};

/// Where archives are stored.
#[async_trait]
pub trait ObjectStore: Send + Sync {
    /// Starts writing the object `key`; nothing is visible under the key until
    /// [`Upload::complete`].
    async fn begin_upload(
        &self,
        key: &str,
        meta: &ObjectMeta,
    ) -> Result<Box<dyn Upload>, StorageError>;

    /// A link that downloads the object as an attachment until `expires_in` has passed.
    async fn download_url(&self, key: &str, expires_in: Duration) -> Result<Url, StorageError>;

    /// Like [`ObjectStore::download_url`], with how long the link really works: never longer than
    /// the credentials that sign it (temporary S3 credentials may end before `expires_in`).
    async fn download_link(
        &self,
        key: &str,
        expires_in: Duration,
    ) -> Result<(Url, Duration), StorageError> {
        Ok((self.download_url(key, expires_in).await?, expires_in))
    }

    /// Deletes the object; deleting a missing object succeeds.
    async fn delete(&self, key: &str) -> Result<(), StorageError>;

    /// The object's size, or `None` when it does not exist.
    async fn size(&self, key: &str) -> Result<Option<u64>, StorageError>;

    /// Aborts incomplete uploads under `prefix` started more than `older_than` ago; returns how
    /// many were aborted.
    async fn abort_stale_uploads(
        &self,
        prefix: &str,
        older_than: Duration,
    ) -> Result<usize, StorageError>;

    /// Keys of the incomplete uploads under `prefix` (S3 multipart uploads, local partial files).
    async fn list_incomplete_uploads(&self, prefix: &str) -> Result<Vec<String>, StorageError>;

    /// Records the SHA-256 of the object's `bytes` with the object itself where the store can
    /// (S3: user metadata `x-amz-meta-sha256`); a no-op elsewhere.
    async fn record_sha256(
        &self,
        _key: &str,
        _meta: &ObjectMeta,
        _bytes: u64,
        _sha256: &str,
    ) -> Result<(), StorageError> {
        Ok(())
    }

    /// Continues an upload an earlier attempt left at `at`; fails when it no longer exists.
    async fn resume_upload(
        &self,
        key: &str,
        meta: &ObjectMeta,
        at: &UploadCheckpoint,
    ) -> Result<Box<dyn Upload>, StorageError>;
}

/// Where an unfinished upload stands, durably: what a later attempt needs to continue it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "store", rename_all = "lowercase")]
pub enum UploadCheckpoint {
    /// A multipart upload and its uploaded parts.
    S3 {
        upload_id: String,
        parts: Vec<UploadedPart>,
        bytes: u64,
    },
    /// The partial file's first `bytes` bytes.
    Local { bytes: u64 },
}

/// One uploaded part of a multipart upload.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UploadedPart {
    pub number: i32,
    pub etag: Option<String>,
    pub crc32: Option<String>,
}

/// One object being written. Dropping it without [`Upload::complete`] aborts it (best effort,
/// in the background); housekeeping's [`ObjectStore::abort_stale_uploads`] catches the rest.
#[async_trait]
pub trait Upload: Send {
    /// Appends bytes. Full parts are uploaded while the caller keeps producing; at most a couple
    /// of parts are in memory at once. On failure the upload is aborted.
    async fn write(&mut self, chunk: Bytes) -> Result<(), StorageError>;

    /// The SHA-256 (lowercase hex) of everything written, when the caller has it: a store whose
    /// request signatures cover the body's hash takes it instead of hashing the body again.
    fn body_sha256(&mut self, _sha256: &str) {}

    /// Publishes the object; returns its size in bytes. On failure the upload is aborted.
    async fn complete(self: Box<Self>) -> Result<u64, StorageError>;

    /// Discards everything written so far.
    async fn abort(self: Box<Self>) -> Result<(), StorageError>;

    /// Makes everything written so far durable and says where the upload stands, or `None` when
    /// it cannot be made durable now (S3: less than a minimum part is waiting).
    async fn checkpoint(&mut self) -> Result<Option<UploadCheckpoint>, StorageError>;

    /// Leaves the upload as it stands for a later attempt to continue (no abort).
    fn suspend(self: Box<Self>);
}

/// The configured store, plus the local store itself when downloads are served by this service.
#[derive(Clone)]
pub struct Storage {
    /// The store archives are written to.
    pub objects: Arc<dyn ObjectStore>,
    /// Set when `storage.kind = "local"`: mount `api::download_router` with it, so links
    /// verify with the same signing key that made them.
    pub local: Option<Arc<LocalStore>>,
}

/// Opens the store `storage.kind` names.
pub async fn open(cfg: &Config) -> anyhow::Result<Storage> {
    match cfg.storage.kind {
        StorageKind::S3 => Ok(Storage {
            objects: Arc::new(S3Store::from_config(&cfg.storage.s3).await?),
            local: None,
        }),
        StorageKind::Local => {
            let local = Arc::new(LocalStore::from_config(cfg)?);
            Ok(Storage {
                objects: local.clone(),
                local: Some(local),
            })
        }
    }
}

/// Opens the store `storage.kind` names (see [`open`] for the download route of local storage).
pub async fn from_config(cfg: &Config) -> anyhow::Result<Arc<dyn ObjectStore>> {
    Ok(open(cfg).await?.objects)
}
