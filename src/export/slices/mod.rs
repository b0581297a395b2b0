//! Time-sliced reading: an export's range is cut into slices, up to `parallel` of them are read
//! from Splunk at once (each a search of its own, within the cluster-wide search quota), and
//! their rows, encoded as archive lines, are handed on in the archive's order — Splunk's newest first, slice after slice.
//!
//! A slice is read to a spool file on local disk and handed on once its search completed, so a
//! cut stream or a quota answer costs a re-read of that slice only, never a row twice: slice
//! bounds are `[earliest, latest)` like Splunk's, so consecutive slices neither overlap nor leave
//! a gap. Memory is a few buffers per slice; the disk holds at most `spool_max_bytes` of slices
//! read ahead (the slice next in line is never held back, so reading always progresses).
//!
//! Events cluster in time, so equal slices are not equal work. Once every slice has started, a
//! reader that runs out of slices splits the running piece with the most rows still to come (by
//! the rate it has read at): that piece's reader keeps the newer half of what it has not read
//! yet and stops its stream where the older half begins, and the idle reader searches the older
//! half as a piece of its own. A slice is its pieces, newest first, so the archive and the
//! checkpoints (per planned slice) are the same whatever was split.
//!
//! Each reader encodes the rows it reads into the archive's lines on the encoder threads while
//! it reads on, so a spooled piece holds archive bytes (frames, see [`spool`]) and joins the
//! archive as one copy: the encoding of an export overlaps its reading instead of following it.
//!
//! Files: [`plan`] (the arithmetic), [`probe`] (the first search that sizes the plan),
//! [`pieces`] (the shared state of what is being read, and splitting), [`readers`] (the
//! searches), [`spool`] (the files and their budget); this file hands the pieces on in order.

mod pieces;
mod plan;
mod probe;
mod readers;
mod spool;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tracing::Instrument;

pub use plan::{Resume, Slice, pieces, plan, plan_after};

use super::encode::RowEncoder;
use crate::splunk::{SearchFilters, SplunkClient, SplunkError};
use pieces::{Piece, Plan, SliceParts, spool_path};
use plan::slice_count;
use probe::Probe;
use readers::{Readers, Unread, query_for};
use spool::{FrameReader, Spool, SpoolDir};

/// How an export's range is sliced and read.
#[derive(Debug, Clone)]
pub struct SliceSettings {
    /// Slices read at once by one export (each one Splunk search).
    pub parallel: usize,
    /// How many slices a range is cut into (fewer for short ranges: no slice under a minute).
    pub slices: usize,
    /// Where slices read ahead wait for their turn.
    pub spool_dir: PathBuf,
    /// Bytes of read-ahead slices on disk before readers of later slices wait.
    pub spool_max_bytes: u64,
    /// Attempts per slice (a cut stream, a quota answer past the client's own retries).
    pub slice_attempts: u32,
    /// A running piece is split only with at least this many rows to come; 0: never.
    pub split_min_rows: u64,
    /// Rows the first search reads before the plan is made (see [`Probe`]); 0: plan by time.
    pub probe_rows: u64,
}

/// Progress counters a status document or metric can read.
#[derive(Debug, Default)]
pub struct SliceProgress {
    pub total: AtomicUsize,
    pub done: AtomicUsize,
    pub running: AtomicUsize,
    /// A piece's reading failed for good.
    pub failed: AtomicBool,
}

/// Encoded archive lines handed on, with the logs they hold and the events left out.
#[derive(Debug, Default)]
pub struct Chunk {
    pub bytes: Vec<u8>,
    pub logs: u64,
    pub skipped: u64,
}

impl Chunk {
    /// Empties the chunk, keeping its buffer.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.logs = 0;
        self.skipped = 0;
    }
}

/// The encoded lines of every slice, in archive order, while later slices are read ahead.
pub struct SlicedRows {
    plan: Arc<Plan>,
    /// Position in the plan: the slice, and the piece of it, being handed on.
    slice: usize,
    piece: usize,
    current: Option<(FrameReader, PathBuf)>,
    /// Slices in the plan.
    slices: usize,
    /// Slices whose every row was handed on (those an earlier attempt finished included).
    handed_on: usize,
    /// Set when the last batch ended exactly at the end of a slice: slices handed on by then.
    boundary: Option<usize>,
    /// See [`Resume::probed_until`].
    probed_until: Option<DateTime<Utc>>,
    spool: Arc<Spool>,
    progress: Arc<SliceProgress>,
    /// The readers still at work (see [`Readers::lanes`]).
    lanes: Arc<AtomicUsize>,
    _readers: JoinSet<()>,
    _dir: SpoolDir,
}

impl SlicedRows {
    /// Starts reading `filters`' range in slices; returns once the first slice's search was
    /// accepted by Splunk, so a refused token or search fails before anything is uploaded.
    /// `resume` continues an earlier attempt: the same plan, without the slices it finished.
    pub async fn start(
        splunk: &SplunkClient,
        filters: &SearchFilters,
        settings: &SliceSettings,
        name: &str,
        resume: Option<Resume>,
        encoder: RowEncoder,
    ) -> Result<Self, SliceError> {
        let dir = settings.spool_dir.join(name);
        tokio::fs::create_dir_all(&dir).await.map_err(|e| {
            SliceError::Spool(format!(
                "the directory {} cannot be created: {e}",
                dir.display()
            ))
        })?;
        let dir_guard = SpoolDir(dir.clone());
        let mut probe = match resume {
            None if settings.probe_rows > 0 => {
                let path = spool_path(&dir, 0, None);
                match Probe::read(splunk, filters, settings.probe_rows, path, encoder.clone()).await
                {
                    Ok(probe) => Some(probe),
                    // The probe only shapes the plan: a cut stream or a busy Splunk leaves the
                    // plan to time, whose readers retry slice by slice.
                    Err(e) if e.is_retryable() || e.is_database() => {
                        tracing::warn!(error = %e, "the first search before planning failed; slicing by time");
                        None
                    }
                    Err(e) => return Err(e),
                }
            }
            _ => None,
        };
        let (count, probed_until, sized_by_rows) = match (&probe, resume) {
            (Some(p), _) => {
                let (count, sized) = p.slices_after(filters, settings);
                (count, Some(p.until), sized)
            }
            (None, Some(r)) => (r.slices, r.probed_until, false),
            (None, None) => (slice_count(filters, settings), None, false),
        };
        let slices = plan_after(filters.start, filters.end, count, probed_until);
        let skip = resume.map_or(0, |r| r.slices_done).min(slices.len());
        // Every slice's search must build before anything runs.
        for s in &slices[skip..] {
            query_for(filters, s.start, s.end)?;
        }
        // The probe's bytes count once its file is written (below).
        let spool = Arc::new(Spool::new(settings.spool_max_bytes, 0));
        let progress = Arc::new(SliceProgress::default());
        progress.total.store(slices.len(), Ordering::Relaxed);
        progress.done.store(skip, Ordering::Relaxed);
        let mut queue = VecDeque::new();
        let mut extra = 0;
        // The probe's rows are the first slice, read already; its place in the quota goes to
        // the first reader.
        let mut probe_permit = probe.as_mut().and_then(|p| p.permit.take());
        let mut probed = probe.map(|p| p.spooled);
        // Slices the probe sized hold about `ROWS_PER_SLICE` rows each: tail pieces would only
        // add searches (and at month-end other exports keep the quota busy meanwhile).
        let mut bounds_of = if sized_by_rows {
            slices[skip..].iter().map(|s| vec![*s]).collect()
        } else {
            pieces(&slices[skip..], settings.parallel)
        };
        if probed.is_some()
            && let Some(first) = bounds_of.first_mut()
        {
            first.truncate(1);
        }
        let parts = bounds_of
            .into_iter()
            .enumerate()
            .map(|(index, bounds)| {
                let pieces = bounds
                    .iter()
                    .enumerate()
                    .map(|(k, b)| {
                        let path = if k == 0 {
                            spool_path(&dir, index, None)
                        } else {
                            extra += 1;
                            spool_path(&dir, index, Some(extra - 1))
                        };
                        let (piece, tx) = Piece::new(b.start, b.end, path);
                        match probed.take() {
                            Some(spooled) => {
                                // The first slice: next in line, so its bytes never wait.
                                let spool = spool.clone();
                                let piece = piece.clone();
                                tokio::spawn(
                                    async move {
                                        let spooled = spooled.await;
                                        if let Ok(s) = &spooled {
                                            spool.reserve(0, &piece, s.bytes).await;
                                        }
                                        let _ = tx.send(spooled);
                                    }
                                    .in_current_span(),
                                );
                            }
                            None => queue.push_back(Unread {
                                slice: index,
                                piece: piece.clone(),
                                tx,
                                started: None,
                            }),
                        }
                        piece
                    })
                    .collect();
                Arc::new(SliceParts {
                    index,
                    pieces: Mutex::new(pieces),
                })
            })
            .collect();
        let (started_tx, started) = oneshot::channel();
        let mut started_tx = Some(started_tx);
        // After a probe Splunk has accepted the export's search already.
        if probed_until.is_none()
            && let Some(first) = queue.front_mut()
        {
            first.started = started_tx.take();
        }
        let plan = Arc::new(Plan {
            slices: parts,
            pieces: AtomicUsize::new(extra),
            dir: dir.clone(),
            split_min_rows: settings.split_min_rows,
        });
        let lane_count = settings.parallel.max(1).min(queue.len());
        // Searches this export may run at once: a reader leaves when it is done, or for a quota
        // answer (never the last one).
        let lanes = Arc::new(AtomicUsize::new(lane_count));
        let shared = Readers {
            splunk: splunk.clone(),
            filters: filters.clone(),
            encoder,
            spool: spool.clone(),
            progress: progress.clone(),
            plan: plan.clone(),
            attempts: settings.slice_attempts.max(1),
            queue: Arc::new(Mutex::new(queue)),
            lanes: lanes.clone(),
        };
        let mut readers = JoinSet::new();
        for _ in 0..lane_count {
            readers.spawn(shared.clone().lane(probe_permit.take()));
        }
        // With every slice finished by an earlier attempt there is no first search to wait for.
        drop(started_tx);
        match started.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(e),
            // The first reader ended without starting: its outcome says why.
            Err(_) => {}
        }
        Ok(Self {
            plan,
            slice: 0,
            piece: 0,
            current: None,
            slices: slices.len(),
            handed_on: skip,
            boundary: None,
            probed_until,
            spool,
            progress,
            lanes,
            _readers: readers,
            _dir: dir_guard,
        })
    }

    /// The slices' progress.
    pub fn progress(&self) -> Arc<SliceProgress> {
        self.progress.clone()
    }

    /// Whether Splunk has nothing left to give this reading: every reader ended and every
    /// piece is on local disk, so only the archive's side is left to do.
    pub fn everything_read(&self) -> bool {
        self.lanes.load(Ordering::Acquire) == 0 && !self.progress.failed.load(Ordering::Acquire)
    }

    /// The plan's slice count.
    pub fn slice_count(&self) -> usize {
        self.slices
    }

    /// Where the probe's rows end, when the plan began with a probe (a checkpoint records it).
    pub fn probed_until(&self) -> Option<DateTime<Utc>> {
        self.probed_until
    }

    /// Slices handed on so far, when the last batch ended exactly where a slice ends: the
    /// archive up to that batch holds exactly those slices, so a later attempt can continue
    /// from there.
    pub fn boundary(&self) -> Option<usize> {
        self.boundary
    }

    /// Appends encoded lines to `chunk` until it holds `max` bytes, a slice ends, or every
    /// slice is handed on; `Ok(false)` once the last line was handed on.
    pub async fn next_chunk(&mut self, chunk: &mut Chunk, max: usize) -> Result<bool, SliceError> {
        self.boundary = None;
        let more = self.fill(chunk, max).await?;
        // A full chunk that took a slice's last line ends at that slice's end too.
        if more
            && chunk.bytes.len() >= max
            && let Some((reader, _)) = self.current.as_mut()
            && reader.at_end().await?
            && self.next_piece().is_none()
        {
            if let Some((_, path)) = self.current.take() {
                let _ = tokio::fs::remove_file(&path).await;
            }
            self.end_slice();
        }
        Ok(more)
    }

    /// The piece after the current one in the current slice, if the slice has one.
    fn next_piece(&self) -> Option<Arc<Piece>> {
        let slice = self.plan.slices.get(self.slice)?;
        let pieces = slice.pieces.lock().unwrap_or_else(|p| p.into_inner());
        pieces.get(self.piece + 1).cloned()
    }

    /// The current slice is handed on completely.
    fn end_slice(&mut self) {
        self.slice += 1;
        self.piece = 0;
        self.handed_on += 1;
        self.progress.done.fetch_add(1, Ordering::Relaxed);
        self.boundary = Some(self.handed_on);
        self.spool.advance_head();
    }

    async fn fill(&mut self, chunk: &mut Chunk, max: usize) -> Result<bool, SliceError> {
        while chunk.bytes.len() < max {
            let Some((reader, _)) = self.current.as_mut() else {
                let Some(slice) = self.plan.slices.get(self.slice) else {
                    return Ok(false);
                };
                let piece = {
                    let pieces = slice.pieces.lock().unwrap_or_else(|p| p.into_inner());
                    pieces[self.piece].clone()
                };
                let outcome = piece
                    .outcome
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .take();
                let spooled = match outcome {
                    Some(rx) => rx.await.map_err(|_| {
                        SliceError::from(SplunkError::Protocol(
                            "a slice reader stopped without an outcome".into(),
                        ))
                    })??,
                    None => {
                        return Err(SliceError::from(SplunkError::Protocol(
                            "a slice piece was handed on twice".into(),
                        )));
                    }
                };
                let reader = FrameReader::open(&spooled.path).await?;
                tracing::debug!(
                    slice = self.slice,
                    piece = self.piece,
                    bytes = spooled.bytes,
                    "slice piece joins the archive"
                );
                self.current = Some((reader, spooled.path));
                // A piece's bytes leave the read-ahead budget once it is next in line.
                self.spool.release(spooled.bytes);
                continue;
            };
            let Some(counts) = reader.next(&mut chunk.bytes).await? else {
                if let Some((_, path)) = self.current.take() {
                    let _ = tokio::fs::remove_file(&path).await;
                }
                // The piece is done, so no piece is split off it any more: the list is final
                // up to its successor.
                if self.next_piece().is_some() {
                    self.piece += 1;
                    continue;
                }
                self.end_slice();
                // A slice's lines go on without waiting for the next slice's search.
                if !chunk.bytes.is_empty() {
                    return Ok(true);
                }
                self.boundary = None;
                continue;
            };
            chunk.logs += counts.logs;
            chunk.skipped += counts.skipped;
        }
        Ok(true)
    }
}

/// How reading an export's slices failed: Splunk, the spool on this machine's disk, or the
/// encoding of what was read — each named as the party that failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SliceError {
    #[error(transparent)]
    Splunk(#[from] SplunkError),
    /// Writing or reading the export's spool files (`export.spool_dir`) failed.
    #[error("the export spool on local disk failed (export.spool_dir): {0}")]
    Spool(String),
    /// Mapping and encoding the rows read failed (an encoder thread panicked).
    #[error("encoding the archive failed: {0}")]
    Encoding(String),
}

impl SliceError {
    /// Worth another try: a Splunk answer that is, or a disk that may have room again.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Splunk(e) => e.is_retryable(),
            Self::Spool(_) => true,
            Self::Encoding(_) => false,
        }
    }

    /// The service's own database (the search quota) could not be reached.
    pub fn is_database(&self) -> bool {
        matches!(self, Self::Splunk(e) if e.is_database())
    }

    /// Splunk said its search quota is full.
    pub fn is_quota(&self) -> bool {
        matches!(self, Self::Splunk(e) if e.is_quota())
    }
}
