//! The export's spool on local disk: one file per piece, written by the piece's reader as
//! frames of encoded archive lines and read back by the archive in its order; and the
//! read-ahead budget those files count against.
//!
//! A frame is a 12-byte header — the encoded bytes' length, the logs they hold and the events
//! left out, each a little-endian `u32` — then the bytes. A batch of rows is encoded on the
//! encoder threads while its reader reads the next one, so a piece is ready to append once its
//! search ends.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::sync::{Notify, oneshot};

use super::SliceError;
use super::pieces::Piece;
use crate::export::encode::{Counts, Encoded, RowEncoder};
use crate::metrics::METRICS;
use crate::splunk::RowBatch;

/// How long a reader ahead of the slice next in line waits for spool room before reading on.
pub(super) const ROOM_WAIT: Duration = Duration::from_secs(10);

const HEADER: usize = 12;

/// Disk accounting shared by the readers of one export.
pub(super) struct Spool {
    bytes: AtomicU64,
    max: u64,
    freed: Notify,
    /// Index of the slice next in line; its readers never wait for room.
    head: AtomicUsize,
}

impl Spool {
    /// A budget of `max` bytes, `used` of them taken already (the probe's).
    pub fn new(max: u64, used: u64) -> Self {
        Self {
            bytes: AtomicU64::new(used),
            max,
            freed: Notify::new(),
            head: AtomicUsize::new(0),
        }
    }

    /// Counts `bytes` of slice `slice` against the read-ahead budget, waiting while it is
    /// spent — unless this slice is next in line, which always reads on. The budget is soft: a
    /// piece's reader ahead waits at most [`ROOM_WAIT`] once, then reads the piece to its end,
    /// because while it waits it holds a search (Splunk's quota) and a place among the
    /// export's readers that the slice next in line may need — a slice re-read after a cut, or
    /// one whose reader has not started yet (seen once with a 10M-event export: three readers
    /// far ahead waiting for room, the next slice waiting for a search;
    /// `tests/it/search_quota.rs` sets that up).
    pub async fn reserve(&self, slice: usize, piece: &Piece, bytes: u64) {
        self.bytes.fetch_add(bytes, Ordering::AcqRel);
        if piece.state().over_budget {
            return;
        }
        let deadline = tokio::time::Instant::now() + ROOM_WAIT;
        loop {
            let freed = self.freed.notified();
            if self.head.load(Ordering::Acquire) >= slice
                || self.bytes.load(Ordering::Acquire) <= self.max
            {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                METRICS.incr("logexport_export_slices_total", "spool_over_budget");
                piece.state().over_budget = true;
                return;
            }
            // A timeout as well: a notification sent between the check and the wait is not
            // lost for long.
            let _ = tokio::time::timeout(Duration::from_millis(200), freed).await;
        }
    }

    /// `bytes` leave the budget: a piece that is next in line, or one given up to be read again.
    pub fn release(&self, bytes: u64) {
        self.bytes.fetch_sub(bytes, Ordering::AcqRel);
        self.freed.notify_waiters();
    }

    /// The slice next in line moved on by one.
    pub fn advance_head(&self) {
        self.head.fetch_add(1, Ordering::AcqRel);
        self.freed.notify_waiters();
    }
}

/// The export's spool directory, removed with everything in it when the export ends.
pub(super) struct SpoolDir(pub PathBuf);

impl Drop for SpoolDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.0.display(), error = %e, "could not remove the export spool");
        }
    }
}

pub(super) fn spool_error(e: std::io::Error) -> SliceError {
    SliceError::Spool(e.to_string())
}

/// Writes a piece's frames: each batch handed over is encoded on the encoder threads while the
/// next one is read, and written once it is encoded.
pub(super) struct FrameWriter {
    out: BufWriter<tokio::fs::File>,
    encoder: RowEncoder,
    /// The batch on the encoder threads, written by the next push or by `finish`.
    pending: Option<oneshot::Receiver<Encoded>>,
    spare_batch: Option<RowBatch>,
    spare_out: Option<Vec<u8>>,
}

impl FrameWriter {
    pub async fn create(path: &Path, encoder: RowEncoder) -> Result<Self, SliceError> {
        let file = tokio::fs::File::create(path).await.map_err(spool_error)?;
        Ok(Self {
            // Small buffers: up to `parallel` pieces are written at once, and the file is the
            // buffer.
            out: BufWriter::with_capacity(64 * 1024, file),
            encoder,
            pending: None,
            spare_batch: None,
            spare_out: None,
        })
    }

    /// An empty batch to fill: the buffers of a batch written before, when there is one.
    pub fn batch(&mut self) -> RowBatch {
        self.spare_batch
            .take()
            .unwrap_or_else(|| RowBatch::with_capacity(256, 256 * 1024))
    }

    /// Hands `batch` to the encoder threads and writes the batch handed over before it;
    /// returns the bytes written now.
    pub async fn push(&mut self, batch: RowBatch) -> Result<u64, SliceError> {
        if batch.is_empty() {
            self.spare_batch = Some(batch);
            return Ok(0);
        }
        let out = self
            .spare_out
            .take()
            .unwrap_or_else(|| Vec::with_capacity(128 * 1024));
        let next = self.encoder.spawn(batch, out);
        let written = self.write_pending().await?;
        self.pending = Some(next);
        Ok(written)
    }

    /// Writes what is still being encoded and flushes; returns the bytes written now.
    pub async fn finish(mut self) -> Result<u64, SliceError> {
        let written = self.write_pending().await?;
        self.out.flush().await.map_err(spool_error)?;
        Ok(written)
    }

    async fn write_pending(&mut self) -> Result<u64, SliceError> {
        let Some(pending) = self.pending.take() else {
            return Ok(0);
        };
        let Encoded {
            counts,
            mut batch,
            mut out,
        } = pending.await.map_err(|_| {
            SliceError::Encoding("an encoder thread panicked while mapping a batch".into())
        })?;
        let counts = counts?;
        let written = if counts == Counts::default() {
            0
        } else {
            let header = frame_header(out.len(), counts)?;
            self.out.write_all(&header).await.map_err(spool_error)?;
            self.out.write_all(&out).await.map_err(spool_error)?;
            (HEADER + out.len()) as u64
        };
        batch.clear();
        out.clear();
        self.spare_batch = Some(batch);
        self.spare_out = Some(out);
        Ok(written)
    }
}

fn frame_header(len: usize, counts: Counts) -> Result<[u8; HEADER], SliceError> {
    let field = |n: u64| {
        u32::try_from(n).map_err(|_| SliceError::Encoding(format!("a frame of {n} is too large")))
    };
    let mut header = [0u8; HEADER];
    header[..4].copy_from_slice(&field(len as u64)?.to_le_bytes());
    header[4..8].copy_from_slice(&field(counts.logs)?.to_le_bytes());
    header[8..].copy_from_slice(&field(counts.skipped)?.to_le_bytes());
    Ok(header)
}

/// Reads a piece's frames back in order.
pub(super) struct FrameReader {
    file: BufReader<tokio::fs::File>,
}

impl FrameReader {
    pub async fn open(path: &Path) -> Result<Self, SliceError> {
        let file = tokio::fs::File::open(path).await.map_err(spool_error)?;
        Ok(Self {
            file: BufReader::with_capacity(256 * 1024, file),
        })
    }

    /// Appends the next frame's bytes to `out`; `None` at the end of the file.
    pub async fn next(&mut self, out: &mut Vec<u8>) -> Result<Option<Counts>, SliceError> {
        if self.at_end().await? {
            return Ok(None);
        }
        let mut header = [0u8; HEADER];
        self.file
            .read_exact(&mut header)
            .await
            .map_err(spool_error)?;
        let field = |at: usize| {
            u32::from_le_bytes([header[at], header[at + 1], header[at + 2], header[at + 3]])
        };
        let len = field(0) as usize;
        let start = out.len();
        out.resize(start + len, 0);
        self.file
            .read_exact(&mut out[start..])
            .await
            .map_err(spool_error)?;
        Ok(Some(Counts {
            logs: field(4).into(),
            skipped: field(8).into(),
        }))
    }

    /// Whether every frame was read.
    pub async fn at_end(&mut self) -> Result<bool, SliceError> {
        Ok(self.file.fill_buf().await.map_err(spool_error)?.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::ExportFormat;

    const ROW: &str = r#"{"_time":"2024-01-02T03:04:05.000+00:00","_raw":"{\"kind\":\"push_repo\",\"datetime\":\"2024-01-02T03:04:05.000000\",\"account\":\"org\"}"}"#;

    #[tokio::test]
    async fn frames_come_back_in_order_with_their_counts() {
        let dir = std::env::temp_dir().join(format!("logexport-frames-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let _gone = SpoolDir(dir.clone());
        let path = dir.join("piece");
        let encoder = RowEncoder::new(ExportFormat::Ndjson, &[]);
        let mut writer = FrameWriter::create(&path, encoder.clone()).await.unwrap();
        let mut written = 0;
        for rows in [3, 0, 2, 1] {
            let mut batch = writer.batch();
            for _ in 0..rows {
                batch.push_text(ROW.as_bytes());
            }
            written += writer.push(batch).await.unwrap();
        }
        written += writer.finish().await.unwrap();
        assert_eq!(written, std::fs::metadata(&path).unwrap().len());

        let mut reader = FrameReader::open(&path).await.unwrap();
        let (mut out, mut logs) = (Vec::new(), Vec::new());
        while let Some(counts) = reader.next(&mut out).await.unwrap() {
            logs.push(counts.logs);
        }
        assert_eq!(logs, [3, 2, 1], "an empty batch writes no frame");
        let mut one = Vec::new();
        let mut batch = RowBatch::default();
        batch.push_text(ROW.as_bytes());
        encoder.encode(&batch, &mut one).unwrap();
        assert_eq!(
            out,
            one.repeat(6),
            "the frames hold exactly the encoded lines"
        );
    }
}
