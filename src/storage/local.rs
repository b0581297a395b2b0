//! Local storage: a directory, with download links this service signs and checks itself.
//!
//! An object key maps to one flat file name (`/` becomes `_`), so every stored file is a plain
//! name in the directory and the download route never resolves paths.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use tokio::io::{AsyncSeekExt, AsyncWriteExt};
use url::Url;

use super::{DownloadError, ObjectMeta, ObjectStore, StorageError, Upload, UploadCheckpoint};
use crate::config::Config;

const SYSTEM: &str = "local storage";
/// Suffix of files still being written; never served.
const PARTIAL: &str = ".partial";

type HmacSha256 = Hmac<Sha256>;

/// Archives in a directory, served by `GET /exportedlogs/{file}` with signed, expiring links.
pub struct LocalStore {
    dir: PathBuf,
    /// The service's public base URL, without a trailing `/`.
    public_url: String,
    signing_key: Vec<u8>,
}

impl LocalStore {
    /// Uses `dir` (created if missing); links start with `public_url` and are signed with
    /// `signing_key`.
    pub fn new(dir: &Path, public_url: &str, signing_key: &[u8]) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir).map_err(|e| {
            anyhow::anyhow!("storage.local.path: cannot create {}: {e}", dir.display())
        })?;
        Url::parse(public_url).map_err(|e| anyhow::anyhow!("server.public_url: {e}"))?;
        anyhow::ensure!(!signing_key.is_empty(), "local storage needs a signing key");
        Ok(Self {
            dir: dir.to_owned(),
            public_url: public_url.trim_end_matches('/').to_owned(),
            signing_key: signing_key.to_owned(),
        })
    }

    /// From `storage.local.path`, `server.public_url` and `server.signing_key` (random for this
    /// store when empty: links then only verify through this very store; the service fills an
    /// empty key from Postgres first, see [`crate::secrets`]).
    pub fn from_config(cfg: &Config) -> anyhow::Result<Self> {
        let key = if cfg.server.signing_key.is_empty() {
            rand::random::<[u8; 32]>().to_vec()
        } else {
            cfg.server.signing_key.expose().as_bytes().to_vec()
        };
        Self::new(&cfg.storage.local.path, &cfg.server.public_url, &key)
    }

    /// The directory holding the archives.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn signature(&self, file: &str, expires: &str) -> HmacSha256 {
        let mut mac =
            HmacSha256::new_from_slice(&self.signing_key).expect("HMAC accepts any key length");
        mac.update(file.as_bytes());
        mac.update(b"\n");
        mac.update(expires.as_bytes());
        mac
    }

    /// Checks a download link's signature and expiry and returns the file to serve:
    /// [`DownloadError::Tampered`] when the signature does not match the file and expiry,
    /// [`DownloadError::Expired`] when it did but has passed, [`DownloadError::NotFound`] when the
    /// file is gone (or is not a plain file name).
    pub fn verify_download(
        &self,
        file: &str,
        expires: &str,
        signature: &str,
        now: SystemTime,
    ) -> Result<PathBuf, DownloadError> {
        let given = hex::decode(signature).map_err(|_| DownloadError::Tampered)?;
        self.signature(file, expires)
            .verify_slice(&given)
            .map_err(|_| DownloadError::Tampered)?;
        let expires: u64 = expires.parse().map_err(|_| DownloadError::Tampered)?;
        let now = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if now >= expires {
            return Err(DownloadError::Expired);
        }
        // Only plain names are ever signed; refuse anything else even with a valid signature.
        if !is_plain_file_name(file) || file.ends_with(PARTIAL) {
            return Err(DownloadError::NotFound);
        }
        let path = self.dir.join(file);
        if !path.is_file() {
            return Err(DownloadError::NotFound);
        }
        Ok(path)
    }

    fn path_for(&self, key: &str) -> Result<(String, PathBuf), StorageError> {
        let name = file_name(key);
        if !is_plain_file_name(&name) {
            return Err(StorageError::permanent(
                SYSTEM,
                "map key to file",
                format!("key {key:?} is not a usable file name"),
            ));
        }
        let path = self.dir.join(&name);
        Ok((name, path))
    }

    /// Partial files under `prefix` with their last modification time.
    async fn partial_files(
        &self,
        prefix: &str,
    ) -> Result<Vec<(PathBuf, SystemTime)>, StorageError> {
        let prefix = file_name(prefix);
        let mut entries = tokio::fs::read_dir(&self.dir)
            .await
            .map_err(|e| io_error("list directory", e))?;
        let mut found = Vec::new();
        while let Some(entry) = entries
            .next_entry()
            .await
            .map_err(|e| io_error("list directory", e))?
        {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if !name.starts_with(&prefix) || !name.ends_with(PARTIAL) {
                continue;
            }
            let modified = entry
                .metadata()
                .await
                .and_then(|m| m.modified())
                .unwrap_or(UNIX_EPOCH);
            found.push((entry.path(), modified));
        }
        Ok(found)
    }
}

/// The flat file name of an object key.
fn file_name(key: &str) -> String {
    key.replace(['/', '\\'], "_")
}

/// A name that stays inside the directory: no separators, no `.`/`..`, no hidden files.
pub(super) fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && !name.contains(['/', '\\', '\0'])
        && name.len() <= 255
}

fn io_error(operation: &'static str, e: io::Error) -> StorageError {
    // Local I/O problems (disk full, permissions) do not fix themselves within a retry delay
    // often, but they can (space freed); treat them as retryable and let max_attempts bound it.
    StorageError::retryable(SYSTEM, operation, e)
}

#[async_trait]
impl ObjectStore for LocalStore {
    async fn begin_upload(
        &self,
        key: &str,
        _meta: &ObjectMeta,
    ) -> Result<Box<dyn Upload>, StorageError> {
        let (_, path) = self.path_for(key)?;
        let partial = partial_path(&path);
        let file = tokio::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&partial)
            .await
            .map_err(|e| io_error("create file", e))?;
        Ok(Box::new(LocalUpload {
            file: Some(file),
            partial,
            path,
            total: 0,
        }))
    }

    async fn resume_upload(
        &self,
        key: &str,
        _meta: &ObjectMeta,
        at: &UploadCheckpoint,
    ) -> Result<Box<dyn Upload>, StorageError> {
        let UploadCheckpoint::Local { bytes } = *at else {
            return Err(StorageError::permanent(
                SYSTEM,
                "resume upload",
                "the checkpoint is not a local partial file",
            ));
        };
        let (_, path) = self.path_for(key)?;
        let partial = partial_path(&path);
        let mut file = tokio::fs::OpenOptions::new()
            .write(true)
            .open(&partial)
            .await
            .map_err(|e| io_error("reopen partial file", e))?;
        let length = file
            .metadata()
            .await
            .map_err(|e| io_error("reopen partial file", e))?
            .len();
        if length < bytes {
            return Err(StorageError::permanent(
                SYSTEM,
                "resume upload",
                format!("the partial file holds {length} bytes, the checkpoint {bytes}"),
            ));
        }
        // What the earlier attempt wrote after its checkpoint is written again.
        file.set_len(bytes)
            .await
            .map_err(|e| io_error("truncate partial file", e))?;
        file.seek(io::SeekFrom::Start(bytes))
            .await
            .map_err(|e| io_error("seek partial file", e))?;
        Ok(Box::new(LocalUpload {
            file: Some(file),
            partial,
            path,
            total: bytes,
        }))
    }

    async fn download_url(&self, key: &str, expires_in: Duration) -> Result<Url, StorageError> {
        let (name, _) = self.path_for(key)?;
        let expires = (SystemTime::now() + expires_in)
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            .to_string();
        let signature = hex::encode(self.signature(&name, &expires).finalize().into_bytes());
        let mut url = Url::parse(&format!("{}/exportedlogs/", self.public_url))
            .map_err(|e| StorageError::permanent(SYSTEM, "build download link", e))?;
        url.path_segments_mut()
            .map_err(|()| StorageError::permanent(SYSTEM, "build download link", "bad base URL"))?
            .pop_if_empty()
            .push(&name);
        url.query_pairs_mut()
            .append_pair("expires", &expires)
            .append_pair("signature", &signature);
        Ok(url)
    }

    async fn delete(&self, key: &str) -> Result<(), StorageError> {
        let (_, path) = self.path_for(key)?;
        match tokio::fs::remove_file(&path).await {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_error("delete file", e)),
            _ => Ok(()),
        }
    }

    async fn size(&self, key: &str) -> Result<Option<u64>, StorageError> {
        let (_, path) = self.path_for(key)?;
        match tokio::fs::metadata(&path).await {
            Ok(m) => Ok(Some(m.len())),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_error("stat file", e)),
        }
    }

    async fn abort_stale_uploads(
        &self,
        prefix: &str,
        older_than: Duration,
    ) -> Result<usize, StorageError> {
        let cutoff = SystemTime::now()
            .checked_sub(older_than)
            .unwrap_or(UNIX_EPOCH);
        let mut removed = 0;
        for (path, modified) in self.partial_files(prefix).await? {
            if modified <= cutoff {
                match tokio::fs::remove_file(&path).await {
                    Ok(()) => removed += 1,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_error("delete partial file", e)),
                }
            }
        }
        Ok(removed)
    }

    async fn list_incomplete_uploads(&self, prefix: &str) -> Result<Vec<String>, StorageError> {
        Ok(self
            .partial_files(prefix)
            .await?
            .into_iter()
            .filter_map(|(path, _)| {
                let name = path.file_name()?.to_str()?;
                Some(name.strip_suffix(PARTIAL)?.to_owned())
            })
            .collect())
    }
}

fn partial_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(PARTIAL);
    PathBuf::from(name)
}

/// A file being written: `<name>.partial`, renamed into place on completion.
struct LocalUpload {
    file: Option<tokio::fs::File>,
    partial: PathBuf,
    path: PathBuf,
    total: u64,
}

impl LocalUpload {
    async fn complete_inner(&mut self) -> Result<u64, StorageError> {
        let Some(mut file) = self.file.take() else {
            return Err(StorageError::permanent(
                SYSTEM,
                "complete",
                "upload already finished",
            ));
        };
        file.flush().await.map_err(|e| io_error("write file", e))?;
        // Durable before it becomes visible: a crash never leaves a truncated archive in place.
        file.sync_all()
            .await
            .map_err(|e| io_error("sync file", e))?;
        drop(file);
        tokio::fs::rename(&self.partial, &self.path)
            .await
            .map_err(|e| io_error("publish file", e))?;
        Ok(self.total)
    }

    fn remove_partial(&mut self) -> io::Result<()> {
        self.file = None;
        match std::fs::remove_file(&self.partial) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

#[async_trait]
impl Upload for LocalUpload {
    async fn write(&mut self, chunk: Bytes) -> Result<(), StorageError> {
        let Some(file) = self.file.as_mut() else {
            return Err(StorageError::permanent(
                SYSTEM,
                "write",
                "upload already finished",
            ));
        };
        if let Err(e) = file.write_all(&chunk).await {
            let _ = self.remove_partial();
            return Err(io_error("write file", e));
        }
        self.total += chunk.len() as u64;
        Ok(())
    }

    async fn complete(mut self: Box<Self>) -> Result<u64, StorageError> {
        let result = self.complete_inner().await;
        if result.is_err() {
            let _ = self.remove_partial();
        }
        result
    }

    async fn abort(mut self: Box<Self>) -> Result<(), StorageError> {
        self.remove_partial()
            .map_err(|e| io_error("delete partial file", e))
    }

    async fn checkpoint(&mut self) -> Result<Option<UploadCheckpoint>, StorageError> {
        let Some(file) = self.file.as_mut() else {
            return Ok(None);
        };
        file.flush().await.map_err(|e| io_error("write file", e))?;
        file.sync_data()
            .await
            .map_err(|e| io_error("sync file", e))?;
        Ok(Some(UploadCheckpoint::Local { bytes: self.total }))
    }

    fn suspend(mut self: Box<Self>) {
        // The partial file stays for the next attempt; without a file, drop removes nothing.
        self.file = None;
    }
}

impl Drop for LocalUpload {
    fn drop(&mut self) {
        // Not completed: the partial file is garbage. Removing one file is quick enough to do
        // synchronously here.
        if self.file.is_some() {
            let _ = self.remove_partial();
        }
    }
}
