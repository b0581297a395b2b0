//! Time-sliced reading: an export's range is cut into slices, up to `parallel` of them are read
//! from Splunk at once (each a search of its own, within the cluster-wide search quota), and
//! their rows are handed on in the archive's order — Splunk's newest first, slice after slice.
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

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinSet;

use crate::metrics::METRICS;
use crate::splunk::{BuiltQuery, RowBatch, SearchFilters, SearchPermit, SplunkClient, SplunkError};

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

/// Cuts `[start, end)` into at most `count` contiguous slices of equal length (whole seconds
/// inside, the range's own bounds as given), newest first: `out[0].1 == end`,
/// `out.last().0 == start`, and each slice's start is the next one's end.
pub fn plan(start: DateTime<Utc>, end: DateTime<Utc>, count: usize) -> Vec<Slice> {
    let span = (end - start).num_seconds();
    let count = (count.max(1) as i64).min(span / 60).max(1);
    let step = span / count;
    let mut bounds: Vec<DateTime<Utc>> = (1..count)
        .map(|i| {
            let t = start + chrono::Duration::seconds(step * i);
            DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t)
        })
        .collect();
    bounds.insert(0, start);
    bounds.push(end);
    bounds.dedup();
    if bounds.len() < 2 {
        return vec![Slice { start, end }];
    }
    bounds
        .windows(2)
        .rev()
        .map(|w| Slice {
            start: w[0],
            end: w[1],
        })
        .collect()
}

/// The pieces each slice is first read in, newest first: one per slice, except that in a plan
/// of more than `2 × parallel` slices the last `parallel` slices are read in [`TAIL_PIECES`]
/// pieces each. Those finish together, and what they hold is what the archive still has to take
/// once Splunk is done, so smaller pieces make that tail shorter (in a short plan the extra
/// searches would cost more than they save).
pub fn pieces(slices: &[Slice], parallel: usize) -> Vec<Vec<Slice>> {
    let parallel = parallel.max(1);
    let tail_from = if slices.len() > 2 * parallel {
        slices.len() - parallel
    } else {
        slices.len()
    };
    slices
        .iter()
        .enumerate()
        .map(|(i, s)| {
            if i >= tail_from {
                plan(s.start, s.end, TAIL_PIECES)
            } else {
                vec![*s]
            }
        })
        .collect()
}

/// Slices for a range: one per six hours, at least one per parallel search and at most
/// `settings.slices` — every search costs Splunk a dispatch, so short ranges get few.
fn slice_count(filters: &SearchFilters, settings: &SliceSettings) -> usize {
    let hours = (filters.end - filters.start).num_hours().max(0) as usize;
    (hours / 6)
        .max(settings.parallel)
        .min(settings.slices)
        .max(1)
}

/// One slice of an export's range: `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slice {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// Where an earlier attempt stopped: its plan's slice count and the slices it finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resume {
    pub slices: usize,
    /// Set when the plan began with a probe's rows: they are the first slice, `[probed_until,
    /// end)`, and the other slices cut `[start, probed_until)`.
    pub probed_until: Option<DateTime<Utc>>,
    pub slices_done: usize,
}

/// The plan of `count` slices over `[start, end)`: by time alone, or after a probe, its rows
/// as the first slice and the rest of the range cut into the others.
pub fn plan_after(
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    count: usize,
    probed_until: Option<DateTime<Utc>>,
) -> Vec<Slice> {
    match probed_until {
        None => plan(start, end, count),
        Some(until) if until <= start => vec![Slice { start, end }],
        Some(until) => std::iter::once(Slice { start: until, end })
            .chain(plan(start, until, count.saturating_sub(1)))
            .collect(),
    }
}

/// Rows a slice planned after a probe is meant to hold: a search of about 0.3 s at an indexer's
/// 50,000 events/s, long next to what starting one costs, short enough to re-read after a cut.
const ROWS_PER_SLICE: u64 = 15_000;

/// The newest rows of an export's range, read by one search before the range is sliced: an
/// export no bigger than the probe is read by that one search, and a bigger one's plan fits the
/// number of rows the probe's rate predicts instead of the range's length alone (a small export
/// over ten days would otherwise be read by forty searches of a few hundred rows each, and at
/// month-end those searches' start-up costs would use most of Splunk's quota).
struct Probe {
    path: PathBuf,
    bytes: u64,
    /// The probe's place in the search quota once its search ended by itself, for a reader.
    permit: Option<SearchPermit>,
    /// The rows kept are every row in `[until, end)`; `until == start` when the range held no
    /// more than the probe read.
    until: DateTime<Utc>,
    rows: u64,
}

impl Probe {
    /// Reads up to `rows` of the newest rows to `path`, keeping whole seconds: rows of the
    /// oldest second read may be incomplete, so they are left to the slices after. The search
    /// itself stops at `rows` (`| head`): Splunk ends it and frees its place in the role's
    /// quota, which the first reader then takes over. (A search cut off by closing its stream
    /// holds that place until Splunk notices, so the next search would be refused meanwhile.)
    async fn read(
        splunk: &SplunkClient,
        filters: &SearchFilters,
        rows: u64,
        path: PathBuf,
    ) -> Result<Self, SliceError> {
        let query = query_for(filters, filters.start, filters.end)?.head(rows);
        let mut stream = splunk.export_holding(&query, None).await?;
        let file = tokio::fs::File::create(&path).await.map_err(spool_error)?;
        let mut out = BufWriter::with_capacity(64 * 1024, file);
        let mut batch = RowBatch::with_capacity(256, 256 * 1024);
        let (mut bytes, mut kept) = (0u64, 0u64);
        // Where the second being read began in the file: (second, bytes, rows) before it.
        let mut second: Option<(i64, u64, u64)> = None;
        loop {
            batch.clear();
            let more = stream.next_batch(&mut batch, 256).await?;
            for row in batch.iter() {
                let at = row_time(row).map_or(i64::MIN, |t| t.timestamp());
                if second.is_none_or(|(s, ..)| s != at) {
                    second = Some((at, bytes, kept));
                }
                out.write_all(row).await.map_err(spool_error)?;
                out.write_all(b"\n").await.map_err(spool_error)?;
                bytes += row.len() as u64 + 1;
                kept += 1;
            }
            if !more {
                break;
            }
        }
        // Fewer rows than asked for: the range held no more.
        let complete = kept < rows;
        let permit = stream.take_permit();
        out.flush().await.map_err(spool_error)?;
        drop(out);
        let until = match (complete, second) {
            (true, _) => filters.start,
            (false, Some((at, before_bytes, before_rows))) if at != i64::MIN => {
                let file = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(spool_error)?;
                file.set_len(before_bytes).map_err(spool_error)?;
                (bytes, kept) = (before_bytes, before_rows);
                DateTime::from_timestamp(at + 1, 0)
                    .unwrap_or(filters.end)
                    .clamp(filters.start, filters.end)
            }
            // A row without a time: nothing can be kept from the probe.
            (false, _) => {
                tokio::fs::write(&path, b"").await.map_err(spool_error)?;
                (bytes, kept) = (0, 0);
                filters.end
            }
        };
        tracing::debug!(rows = kept, complete, until = %until, "probe read");
        Ok(Self {
            path,
            bytes,
            permit,
            until,
            rows: kept,
        })
    }

    /// Slices for the whole plan (the probe's included): as many for the rest of the range,
    /// `[start, until)`, as the rows the probe's rate predicts there warrant, at most what the
    /// range's length allows; and whether that bound was not reached, so the slices are sized
    /// by their rows (no tail pieces needed: see [`pieces`]).
    fn slices_after(&self, filters: &SearchFilters, settings: &SliceSettings) -> (usize, bool) {
        if self.until <= filters.start {
            return (1, true);
        }
        let mut rest = filters.clone();
        rest.end = self.until;
        let by_time = slice_count(&rest, settings);
        let seen = (filters.end - self.until).num_milliseconds();
        let left = (self.until - filters.start).num_milliseconds();
        if self.rows == 0 || seen <= 0 {
            return (1 + by_time, false);
        }
        let predicted = (self.rows as f64 * left as f64 / seen as f64) as u64;
        let wanted = predicted.div_ceil(ROWS_PER_SLICE).max(1) as usize;
        (1 + wanted.min(by_time), wanted <= by_time)
    }
}

/// How often an idle reader looks again for a piece to split while one has no rate yet.
const SPLIT_POLL: Duration = Duration::from_millis(50);

/// Pieces each of the last slices is read in (see [`pieces`]).
const TAIL_PIECES: usize = 4;

/// How often a slice reader tries again for a search permit while the database is unreachable.
const DATABASE_WAIT: Duration = Duration::from_secs(1);

/// How long a reader ahead of the slice next in line waits for spool room before reading on.
const ROOM_WAIT: Duration = Duration::from_secs(10);

/// Where a piece's reader sends how it ended.
type PieceOutcome = oneshot::Sender<Result<Spooled, SliceError>>;

/// A piece read completely: its rows in a spool file.
struct Spooled {
    path: PathBuf,
    bytes: u64,
}

/// Progress counters a status document or metric can read.
#[derive(Debug, Default)]
pub struct SliceProgress {
    pub total: AtomicUsize,
    pub done: AtomicUsize,
    pub running: AtomicUsize,
}

/// One planned slice: the pieces it is read in, newest first (one unless it was split).
struct SliceParts {
    index: usize,
    pieces: Mutex<Vec<Arc<Piece>>>,
}

/// A part of a slice that one search reads: `[start, end)`, of which its reader keeps the rows
/// at or after `cut` (a split hands `[cut, …)`'s older part to a new piece).
struct Piece {
    end: DateTime<Utc>,
    path: PathBuf,
    state: Mutex<PieceState>,
    /// The reader's outcome; the consumer takes it when the piece is next in line.
    outcome: Mutex<Option<oneshot::Receiver<Result<Spooled, SliceError>>>>,
}

#[derive(Debug, Clone, Copy)]
struct PieceState {
    /// Rows older than this belong to a later piece (the piece's start until it is split).
    cut: DateTime<Utc>,
    /// The oldest `_time` kept so far (the piece's end before the first row).
    position: DateTime<Utc>,
    rows: u64,
    /// Being read: only such a piece may be split.
    running: bool,
    /// Its reader waited out [`ROOM_WAIT`] once: it reads on from then on, re-reads included.
    over_budget: bool,
}

impl Piece {
    fn new(start: DateTime<Utc>, end: DateTime<Utc>, path: PathBuf) -> (Arc<Self>, PieceOutcome) {
        let (tx, rx) = oneshot::channel();
        let piece = Arc::new(Self {
            end,
            path,
            state: Mutex::new(PieceState {
                cut: start,
                position: end,
                rows: 0,
                running: false,
                over_budget: false,
            }),
            outcome: Mutex::new(Some(rx)),
        });
        (piece, tx)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, PieceState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Rows still to come, by the rate read so far (`None` before the first row: unknown).
    fn rows_to_come(state: &PieceState, end: DateTime<Utc>) -> Option<u64> {
        let read = (end - state.position).num_milliseconds();
        let left = (state.position - state.cut).num_milliseconds();
        (state.rows > 0 && read > 0 && left > 0)
            .then(|| (state.rows as f64 * left as f64 / read as f64) as u64)
    }
}

/// The slices being read, shared by their readers so an idle one can split a busy one.
struct Plan {
    slices: Vec<Arc<SliceParts>>,
    /// Pieces beyond each slice's first (tail pieces, splits) so far: numbers their spool files.
    pieces: AtomicUsize,
    dir: PathBuf,
    /// See [`SliceSettings::split_min_rows`].
    split_min_rows: u64,
}

impl Plan {
    /// Whether a running piece has not kept a row yet, so whether it is worth splitting is not
    /// known: an idle reader that found nothing to split waits for it rather than leaving.
    fn awaiting_first_rows(&self) -> bool {
        self.split_min_rows > 0
            && self.slices.iter().any(|slice| {
                let pieces = slice.pieces.lock().unwrap_or_else(|p| p.into_inner());
                pieces.iter().any(|piece| {
                    let state = piece.state();
                    state.running && state.rows == 0
                })
            })
    }

    /// Splits the running piece with the most rows to come; returns the new piece to read.
    fn split(&self) -> Option<(usize, Arc<Piece>, PieceOutcome)> {
        if self.split_min_rows == 0 {
            return None;
        }
        let mut best: Option<(u64, &Arc<SliceParts>, usize)> = None;
        for slice in &self.slices {
            let pieces = slice.pieces.lock().unwrap_or_else(|p| p.into_inner());
            for (k, piece) in pieces.iter().enumerate() {
                let state = *piece.state();
                if !state.running {
                    continue;
                }
                if let Some(rows) = Piece::rows_to_come(&state, piece.end)
                    && rows >= self.split_min_rows
                    && best.is_none_or(|(most, _, _)| rows > most)
                {
                    best = Some((rows, slice, k));
                }
            }
        }
        let (_, slice, k) = best?;
        // Both locks while the cut moves and the new piece goes in: the consumer and the piece's
        // own reader see either neither or both.
        let mut pieces = slice.pieces.lock().unwrap_or_else(|p| p.into_inner());
        let piece = pieces.get(k)?.clone();
        let mut state = piece.state();
        let left = (state.position - state.cut).num_seconds();
        if !state.running || left < 2 {
            return None;
        }
        // Whole seconds, strictly between the cut and what the reader already kept.
        let middle = state.cut + chrono::Duration::seconds(left / 2);
        let middle = DateTime::from_timestamp(middle.timestamp(), 0)?;
        if middle <= state.cut || middle >= state.position {
            return None;
        }
        let older = state.cut;
        state.cut = middle;
        drop(state);
        let n = self.pieces.fetch_add(1, Ordering::Relaxed);
        let path = spool_path(&self.dir, slice.index, Some(n));
        let (new, tx) = Piece::new(older, middle, path);
        pieces.insert(k + 1, new.clone());
        METRICS.incr("logexport_export_slices_total", "split");
        Some((slice.index, new, tx))
    }
}

/// The rows of every slice, in archive order, while later slices are read ahead.
pub struct SlicedRows {
    plan: Arc<Plan>,
    /// Position in the plan: the slice, and the piece of it, being handed on.
    slice: usize,
    piece: usize,
    current: Option<(BufReader<tokio::fs::File>, PathBuf)>,
    line: Vec<u8>,
    rows: u64,
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
    _readers: JoinSet<()>,
    _dir: SpoolDir,
}

/// Disk accounting shared by the readers of one export.
struct Spool {
    bytes: AtomicU64,
    max: u64,
    freed: Notify,
    /// Index of the slice next in line; its readers never wait for room.
    head: AtomicUsize,
}

/// The export's spool directory, removed with everything in it when the export ends.
struct SpoolDir(PathBuf);

impl Drop for SpoolDir {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.0)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %self.0.display(), error = %e, "could not remove the export spool");
        }
    }
}

/// What every reader of one export shares.
#[derive(Clone)]
struct Readers {
    splunk: SplunkClient,
    filters: SearchFilters,
    spool: Arc<Spool>,
    progress: Arc<SliceProgress>,
    plan: Arc<Plan>,
    attempts: u32,
    /// Pieces no reader has taken yet, in archive order.
    queue: Arc<Mutex<VecDeque<Unread>>>,
    /// Readers (each one search at a time) still running.
    lanes: Arc<AtomicUsize>,
}

/// A piece waiting for a reader, with where its outcome goes (and, for the export's first
/// piece, where the news that Splunk accepted its search goes).
struct Unread {
    slice: usize,
    piece: Arc<Piece>,
    tx: PieceOutcome,
    started: Option<oneshot::Sender<Result<(), SliceError>>>,
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
                match Probe::read(splunk, filters, settings.probe_rows, path).await {
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
        let spool = Arc::new(Spool {
            bytes: AtomicU64::new(probe.as_ref().map_or(0, |p| p.bytes)),
            max: settings.spool_max_bytes,
            freed: Notify::new(),
            head: AtomicUsize::new(0),
        });
        let progress = Arc::new(SliceProgress::default());
        progress.total.store(slices.len(), Ordering::Relaxed);
        progress.done.store(skip, Ordering::Relaxed);
        let mut queue = VecDeque::new();
        let mut extra = 0;
        // The probe's rows are the first slice, read already; its place in the quota goes to
        // the first reader.
        let mut probe_permit = probe.as_mut().and_then(|p| p.permit.take());
        let mut probed = probe.map(|p| Spooled {
            path: p.path,
            bytes: p.bytes,
        });
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
                                let _ = tx.send(Ok(spooled));
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
        let lanes = settings.parallel.max(1).min(queue.len());
        let shared = Readers {
            splunk: splunk.clone(),
            filters: filters.clone(),
            spool: spool.clone(),
            progress: progress.clone(),
            plan: plan.clone(),
            attempts: settings.slice_attempts.max(1),
            queue: Arc::new(Mutex::new(queue)),
            // Searches this export may run at once; a quota answer lowers it (never below one).
            lanes: Arc::new(AtomicUsize::new(lanes)),
        };
        let mut readers = JoinSet::new();
        for _ in 0..lanes {
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
            line: Vec::with_capacity(64 * 1024),
            rows: 0,
            slices: slices.len(),
            handed_on: skip,
            boundary: None,
            probed_until,
            spool,
            progress,
            _readers: readers,
            _dir: dir_guard,
        })
    }

    /// Rows handed out so far.
    pub fn rows_read(&self) -> u64 {
        self.rows
    }

    /// The slices' progress.
    pub fn progress(&self) -> Arc<SliceProgress> {
        self.progress.clone()
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

    /// Appends rows to `batch` until it holds `max`, a slice ends, or every slice is handed on;
    /// `Ok(false)` once the last row was handed on.
    pub async fn next_batch(
        &mut self,
        batch: &mut RowBatch,
        max: usize,
    ) -> Result<bool, SliceError> {
        self.boundary = None;
        let more = self.fill(batch, max).await?;
        // A full batch that took a slice's last row ends at that slice's end too.
        if more
            && batch.len() >= max
            && let Some((reader, _)) = self.current.as_mut()
            && reader.fill_buf().await.map_err(spool_error)?.is_empty()
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
        self.spool.head.fetch_add(1, Ordering::AcqRel);
        self.spool.freed.notify_waiters();
    }

    async fn fill(&mut self, batch: &mut RowBatch, max: usize) -> Result<bool, SliceError> {
        while batch.len() < max {
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
                let file = tokio::fs::File::open(&spooled.path)
                    .await
                    .map_err(spool_error)?;
                tracing::debug!(
                    slice = self.slice,
                    piece = self.piece,
                    bytes = spooled.bytes,
                    "slice piece joins the archive"
                );
                self.current = Some((BufReader::with_capacity(256 * 1024, file), spooled.path));
                self.take_room(spooled.bytes);
                continue;
            };
            self.line.clear();
            let n = reader
                .read_until(b'\n', &mut self.line)
                .await
                .map_err(spool_error)?;
            if n == 0 {
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
                // A slice's rows go on without waiting for the next slice's search.
                if !batch.is_empty() {
                    return Ok(true);
                }
                self.boundary = None;
                continue;
            }
            let row = self.line.strip_suffix(b"\n").unwrap_or(&self.line);
            batch.push_text(row);
            self.rows += 1;
        }
        Ok(true)
    }

    /// A piece's bytes leave the read-ahead budget once it is next in line.
    fn take_room(&self, bytes: u64) {
        self.spool.bytes.fetch_sub(bytes, Ordering::AcqRel);
        self.spool.freed.notify_waiters();
    }
}

/// A piece's spool file: `slice-<slice>` for a slice's first piece, `slice-<slice>-<n>` for the
/// export's `n`-th piece beyond the first ones (tail pieces and splits).
fn spool_path(dir: &Path, slice: usize, extra: Option<usize>) -> PathBuf {
    match extra {
        None => dir.join(format!("slice-{slice:05}")),
        Some(n) => dir.join(format!("slice-{slice:05}-{n}")),
    }
}

fn spool_error(e: std::io::Error) -> SliceError {
    SliceError::Spool(e.to_string())
}

/// How reading an export's slices failed: Splunk, or the spool on this machine's disk — each
/// named as the party that failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SliceError {
    #[error(transparent)]
    Splunk(#[from] SplunkError),
    /// Writing or reading the export's spool files (`export.spool_dir`) failed.
    #[error("the export spool on local disk failed (export.spool_dir): {0}")]
    Spool(String),
}

impl SliceError {
    /// Worth another try: a Splunk answer that is, or a disk that may have room again.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Splunk(e) => e.is_retryable(),
            Self::Spool(_) => true,
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

/// The export's search narrowed to `[start, end)`.
fn query_for(
    filters: &SearchFilters,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<BuiltQuery, SplunkError> {
    let mut f = filters.clone();
    f.start = start;
    f.end = end;
    f.build()
        .map_err(|e| SplunkError::Config(format!("cannot build the search: {e}")))
}

/// A row's `_time` (Splunk's result rows carry it as text).
fn row_time(row: &[u8]) -> Option<DateTime<Utc>> {
    const KEY: &[u8] = b"\"_time\":\"";
    let at = memchr::memmem::find(row, KEY)? + KEY.len();
    let len = memchr::memchr(b'"', &row[at..])?;
    crate::splunk::parse_timestamp(std::str::from_utf8(&row[at..at + len]).ok()?)
}

impl Readers {
    /// One reader: takes the pieces in archive order, one search at a time; once every piece
    /// has been taken, helps the busiest one by splitting it. Ends early (one search fewer for
    /// this export, never none) when Splunk says its search quota is full.
    async fn lane(self, mut permit: Option<SearchPermit>) {
        // `permit`: a finished search's quota permit, kept for this reader's next search.
        loop {
            let next = self
                .queue
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop_front();
            let refused_for_quota = if let Some(unread) = next {
                let Unread {
                    slice,
                    piece,
                    tx,
                    started,
                } = unread;
                self.read(slice, &piece, tx, started, &mut permit).await
            } else if let Some((slice, piece, tx)) = self.plan.split() {
                self.read(slice, &piece, tx, None, &mut permit).await
            } else if self.plan.awaiting_first_rows() {
                // A running piece has no rate yet to judge it by: look again shortly, without
                // holding a search meanwhile.
                drop(permit.take());
                tokio::time::sleep(SPLIT_POLL).await;
                false
            } else {
                return;
            };
            // Splunk said its search quota is full (other users, another cluster): this export
            // reads with one search fewer from now on instead of failing.
            if refused_for_quota
                && self
                    .lanes
                    .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                        (n > 1).then(|| n - 1)
                    })
                    .is_ok()
            {
                METRICS.incr("logexport_export_slices_total", "concurrency_lowered");
                return;
            }
        }
    }

    /// Reads one piece of slice `slice` to its spool file, again after a retryable failure
    /// (from its cut: what a split handed away is not read again); says whether Splunk refused
    /// a search for its quota meanwhile.
    async fn read(
        &self,
        slice: usize,
        piece: &Arc<Piece>,
        tx: PieceOutcome,
        mut started: Option<oneshot::Sender<Result<(), SliceError>>>,
        permit: &mut Option<SearchPermit>,
    ) -> bool {
        self.progress.running.fetch_add(1, Ordering::Relaxed);
        piece.state().running = true;
        let mut refused_for_quota = false;
        let mut attempt = 0;
        let outcome = loop {
            attempt += 1;
            match self
                .read_once(slice, piece, &mut started, &mut refused_for_quota, permit)
                .await
            {
                Ok(spooled) => break Ok(spooled),
                // Our own database is away (the search quota lives there): nothing was asked of
                // Splunk, so the slice waits for it without spending an attempt. The runner stops
                // the export should its lease run out meanwhile.
                Err(e) if e.is_database() => {
                    attempt -= 1;
                    tokio::time::sleep(DATABASE_WAIT).await;
                }
                Err(e) if e.is_retryable() && attempt < self.attempts => {
                    refused_for_quota |= e.is_quota();
                    let delay = self.splunk.retry_policy().delay(attempt - 1);
                    tracing::warn!(
                        slice, attempt, error = %e, delay_ms = delay.as_millis() as u64,
                        "reading an export slice failed; reading that slice again"
                    );
                    METRICS.incr("logexport_export_slices_total", "read_again");
                    tokio::time::sleep(delay).await;
                }
                Err(e) => break Err(e),
            }
        };
        piece.state().running = false;
        self.progress.running.fetch_sub(1, Ordering::Relaxed);
        if let Err(e) = &outcome
            && let Some(started) = started.take()
        {
            let _ = started.send(Err(e.clone()));
        }
        if outcome.is_ok() {
            METRICS.incr("logexport_export_slices_total", "read");
        }
        let _ = tx.send(outcome);
        refused_for_quota
    }

    async fn read_once(
        &self,
        slice: usize,
        piece: &Arc<Piece>,
        started: &mut Option<oneshot::Sender<Result<(), SliceError>>>,
        refused_for_quota: &mut bool,
        permit: &mut Option<SearchPermit>,
    ) -> Result<Spooled, SliceError> {
        // A new attempt starts over: from the piece's end, down to its current cut.
        let search_start = {
            let mut state = piece.state();
            state.position = piece.end;
            state.rows = 0;
            state.cut
        };
        let query = query_for(&self.filters, search_start, piece.end)?;
        let answers = self.splunk.quota_answers();
        // Under the permit of this reader's previous search, when it finished just now: no
        // round trip to give it back and take it again between two pieces.
        let stream = self.splunk.export_holding(&query, permit.take()).await;
        // Even a quota answer the client's retries got past means Splunk is full.
        *refused_for_quota |= self.splunk.quota_answers() > answers;
        let mut stream = stream?;
        tracing::debug!(slice, start = %search_start, end = %piece.end, "slice search started");
        if let Some(started) = started.take() {
            let _ = started.send(Ok(()));
        }
        let file = tokio::fs::File::create(&piece.path)
            .await
            .map_err(spool_error)?;
        // Small buffers: up to `parallel` pieces are read at once, and the spool file is the buffer.
        let mut out = BufWriter::with_capacity(64 * 1024, file);
        let mut batch = RowBatch::with_capacity(256, 256 * 1024);
        let mut bytes = 0u64;
        let result = async {
            loop {
                batch.clear();
                let more = stream.next_batch(&mut batch, 256).await?;
                // Newest first: the rows before the first one older than the cut are this
                // piece's, and once one is older the rest belong to the piece split off. The
                // batch's last row is its oldest, so one `_time` per batch decides unless a split
                // moved the cut into this very batch.
                let (keep, reached_cut) = {
                    let mut state = piece.state();
                    let oldest = batch.iter().last().and_then(row_time);
                    if state.cut <= search_start || oldest.is_some_and(|t| t >= state.cut) {
                        if let Some(t) = oldest {
                            state.position = state.position.min(t);
                        }
                        state.rows += batch.len() as u64;
                        (batch.len(), false)
                    } else {
                        let mut keep = 0;
                        let mut reached_cut = false;
                        for row in batch.iter() {
                            let time = row_time(row).unwrap_or(state.position);
                            if time < state.cut {
                                reached_cut = true;
                                break;
                            }
                            state.position = state.position.min(time);
                            keep += 1;
                        }
                        state.rows += keep as u64;
                        (keep, reached_cut)
                    }
                };
                let mut written = 0u64;
                for row in batch.iter().take(keep) {
                    out.write_all(row).await.map_err(spool_error)?;
                    out.write_all(b"\n").await.map_err(spool_error)?;
                    written += row.len() as u64 + 1;
                }
                bytes += written;
                self.wait_for_room(slice, piece, written).await;
                if !more || reached_cut {
                    break;
                }
            }
            out.flush().await.map_err(spool_error)?;
            Ok::<_, SliceError>(())
        }
        .await;
        if let Err(e) = result {
            // The piece is read again from its end: what it spooled is given back.
            self.spool.bytes.fetch_sub(bytes, Ordering::AcqRel);
            self.spool.freed.notify_waiters();
            let _ = tokio::fs::remove_file(&piece.path).await;
            return Err(e);
        }
        *permit = stream.take_permit();
        tracing::debug!(slice, bytes, "slice piece read");
        Ok(Spooled {
            path: piece.path.clone(),
            bytes,
        })
    }

    /// Counts `bytes` against the read-ahead budget, waiting while it is spent — unless this
    /// slice is next in line, which always reads on. The budget is soft: a piece's reader ahead
    /// waits at most [`ROOM_WAIT`] once, then reads the piece to its end, because while it waits
    /// it holds a search (Splunk's quota) and a place among the export's readers that the slice
    /// next in line may need — a slice re-read after a cut, or one whose reader has not started
    /// yet (seen once with a 10M-event export: three readers far ahead waiting for room, the next
    /// slice waiting for a search; `tests/it/search_quota.rs` sets that up).
    async fn wait_for_room(&self, slice: usize, piece: &Piece, bytes: u64) {
        let spool = &self.spool;
        spool.bytes.fetch_add(bytes, Ordering::AcqRel);
        if piece.state().over_budget {
            return;
        }
        let deadline = tokio::time::Instant::now() + ROOM_WAIT;
        loop {
            let freed = spool.freed.notified();
            if spool.head.load(Ordering::Acquire) >= slice
                || spool.bytes.load(Ordering::Acquire) <= spool.max
            {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                METRICS.incr("logexport_export_slices_total", "spool_over_budget");
                piece.state().over_budget = true;
                return;
            }
            // A timeout as well: a notification sent between the check and the wait is not lost
            // for long.
            let _ = tokio::time::timeout(Duration::from_millis(200), freed).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    #[test]
    fn thirty_days_in_twenty_four_slices_newest_first() {
        let start = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
        let end = Utc.with_ymd_and_hms(2024, 1, 31, 0, 0, 0).unwrap();
        let slices = plan(start, end, 24);
        assert_eq!(slices.len(), 24);
        assert_eq!(slices[0].end, end);
        assert_eq!(slices[23].start, start);
        assert!(
            slices
                .iter()
                .all(|s| s.end - s.start == chrono::Duration::minutes(1800))
        );
    }

    #[test]
    fn short_ranges_get_fewer_slices() {
        let start = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(
            plan(start, start + chrono::Duration::seconds(90), 24).len(),
            1
        );
        assert_eq!(
            plan(start, start + chrono::Duration::minutes(5), 24).len(),
            5
        );
        assert_eq!(plan(start, start, 24).len(), 1);
    }

    proptest! {
        /// Every instant of the range is in exactly one slice, sub-second bounds included.
        #[test]
        fn slices_cover_the_range_exactly(
            start_us in 1_600_000_000_000_000i64..1_700_000_000_000_000i64,
            len_us in 0i64..(40 * 86_400 * 1_000_000),
            count in 1usize..64,
            parallel in 1usize..5,
            probes in proptest::collection::vec(0f64..1.0, 1..20),
        ) {
            let start = Utc.timestamp_micros(start_us).unwrap();
            let end = Utc.timestamp_micros(start_us + len_us).unwrap();
            let slices = plan(start, end, count);
            prop_assert!(!slices.is_empty() && slices.len() <= count);
            prop_assert_eq!(slices[0].end, end);
            prop_assert_eq!(slices.last().unwrap().start, start);
            for w in slices.windows(2) {
                prop_assert_eq!(w[0].start, w[1].end);
                prop_assert!(w[1].start < w[1].end);
            }
            // The pieces slices are first read in tile each slice the same way.
            let pieces = pieces(&slices, parallel);
            prop_assert_eq!(pieces.len(), slices.len());
            for (slice, parts) in slices.iter().zip(&pieces) {
                prop_assert_eq!(parts[0].end, slice.end);
                prop_assert_eq!(parts.last().unwrap().start, slice.start);
                for w in parts.windows(2) {
                    prop_assert_eq!(w[0].start, w[1].end);
                }
            }
            let flat: Vec<Slice> = pieces.into_iter().flatten().collect();
            for p in probes {
                let t = Utc.timestamp_micros(start_us + (len_us as f64 * p) as i64).unwrap();
                let holders = slices.iter().filter(|s| s.start <= t && t < s.end).count();
                prop_assert_eq!(holders, usize::from(t < end));
                let holders = flat.iter().filter(|s| s.start <= t && t < s.end).count();
                prop_assert_eq!(holders, usize::from(t < end));
            }
        }
    }
}
