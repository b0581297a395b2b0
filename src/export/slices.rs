//! Time-sliced reading: an export's range is cut into slices, up to `parallel` of them are read
//! from Splunk at once (each a search of its own, within the cluster-wide search quota), and
//! their rows are handed on in the archive's order — Splunk's newest first, slice after slice.
//!
//! A slice is read to a spool file on local disk and handed on once its search completed, so a
//! cut stream or a quota answer costs a re-read of that slice only, never a row twice: slice
//! bounds are `[earliest, latest)` like Splunk's, so consecutive slices neither overlap nor leave
//! a gap. Memory is a few buffers per slice; the disk holds at most `spool_max_bytes` of slices
//! read ahead (the slice next in line is never held back, so reading always progresses).

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::sync::{Notify, Semaphore, oneshot};
use tokio::task::JoinSet;

use crate::metrics::METRICS;
use crate::splunk::{BuiltQuery, RowBatch, SearchFilters, SplunkClient, SplunkError};

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
    pub slices_done: usize,
}

/// A slice read completely: its rows in a spool file.
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

/// The rows of every slice, in archive order, while later slices are read ahead.
pub struct SlicedRows {
    pending: std::vec::IntoIter<oneshot::Receiver<Result<Spooled, SplunkError>>>,
    current: Option<(BufReader<tokio::fs::File>, PathBuf)>,
    line: Vec<u8>,
    rows: u64,
    /// Slices in the plan.
    slices: usize,
    /// Slices whose every row was handed on (those an earlier attempt finished included).
    handed_on: usize,
    /// Set when the last batch ended exactly at the end of a slice: slices handed on by then.
    boundary: Option<usize>,
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
    /// Index of the slice next in line; its reader never waits for room.
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
    ) -> Result<Self, SplunkError> {
        let count = resume.map_or_else(|| slice_count(filters, settings), |r| r.slices);
        let slices = plan(filters.start, filters.end, count);
        let skip = resume.map_or(0, |r| r.slices_done).min(slices.len());
        let queries = slices[skip..]
            .iter()
            .map(|s| {
                let mut f = filters.clone();
                f.start = s.start;
                f.end = s.end;
                f.build()
                    .map_err(|e| SplunkError::Config(format!("cannot build the search: {e}")))
            })
            .collect::<Result<Vec<BuiltQuery>, _>>()?;
        let dir = settings.spool_dir.join(name);
        tokio::fs::create_dir_all(&dir).await.map_err(|e| {
            SplunkError::Config(format!(
                "the export spool directory {} cannot be created (export.spool_dir): {e}",
                dir.display()
            ))
        })?;
        let dir = SpoolDir(dir);
        let spool = Arc::new(Spool {
            bytes: AtomicU64::new(0),
            max: settings.spool_max_bytes,
            freed: Notify::new(),
            head: AtomicUsize::new(0),
        });
        let progress = Arc::new(SliceProgress::default());
        progress.total.store(slices.len(), Ordering::Relaxed);
        progress.done.store(skip, Ordering::Relaxed);
        let gate = Arc::new(Semaphore::new(settings.parallel.max(1)));
        // Searches this export may run at once; a quota answer lowers it (never below one).
        let allowed = Arc::new(AtomicUsize::new(settings.parallel.max(1)));
        let mut readers = JoinSet::new();
        let mut pending = Vec::with_capacity(queries.len());
        let (started_tx, started) = oneshot::channel();
        let mut started_tx = Some(started_tx);
        for (index, query) in queries.into_iter().enumerate() {
            let (tx, rx) = oneshot::channel();
            pending.push(rx);
            let reader = SliceReader {
                splunk: splunk.clone(),
                query,
                index,
                path: dir.0.join(format!("slice-{index:05}")),
                spool: spool.clone(),
                progress: progress.clone(),
                attempts: settings.slice_attempts.max(1),
                started: if index == 0 { started_tx.take() } else { None },
                refused_for_quota: false,
            };
            let (gate, allowed) = (gate.clone(), allowed.clone());
            readers.spawn(async move {
                // Slices start in order, so the ones next in line are read first.
                let Ok(permit) = gate.acquire_owned().await else {
                    return;
                };
                let (outcome, refused_for_quota) = reader.read().await;
                // Splunk said its search quota is full (other users, another cluster): this
                // export reads with one search fewer from now on instead of failing.
                if refused_for_quota
                    && allowed
                        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                            (n > 1).then(|| n - 1)
                        })
                        .is_ok()
                {
                    METRICS.incr("logexport_export_slices_total", "concurrency_lowered");
                    permit.forget();
                }
                let _ = tx.send(outcome);
            });
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
            pending: pending.into_iter(),
            current: None,
            line: Vec::with_capacity(64 * 1024),
            rows: 0,
            slices: slices.len(),
            handed_on: skip,
            boundary: None,
            spool,
            progress,
            _readers: readers,
            _dir: dir,
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
    ) -> Result<bool, SplunkError> {
        self.boundary = None;
        let more = self.fill(batch, max).await?;
        // A full batch that took a slice's last row ends at that slice's end too.
        if more
            && batch.len() >= max
            && let Some((reader, _)) = self.current.as_mut()
            && reader.fill_buf().await.map_err(spool_error)?.is_empty()
        {
            self.end_slice().await;
        }
        Ok(more)
    }

    /// The current slice is handed on completely.
    async fn end_slice(&mut self) {
        if let Some((_, path)) = self.current.take() {
            let _ = tokio::fs::remove_file(&path).await;
        }
        self.handed_on += 1;
        self.boundary = Some(self.handed_on);
        self.spool.head.fetch_add(1, Ordering::AcqRel);
        self.spool.freed.notify_waiters();
    }

    async fn fill(&mut self, batch: &mut RowBatch, max: usize) -> Result<bool, SplunkError> {
        while batch.len() < max {
            let Some((reader, _)) = self.current.as_mut() else {
                let Some(next) = self.pending.next() else {
                    return Ok(false);
                };
                let spooled = next.await.map_err(|_| {
                    SplunkError::Protocol("a slice reader stopped without an outcome".into())
                })??;
                let file = tokio::fs::File::open(&spooled.path)
                    .await
                    .map_err(spool_error)?;
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
                self.end_slice().await;
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

    /// A slice's bytes leave the read-ahead budget once it is next in line.
    fn take_room(&self, bytes: u64) {
        self.spool.bytes.fetch_sub(bytes, Ordering::AcqRel);
        self.spool.freed.notify_waiters();
    }
}

fn spool_error(e: std::io::Error) -> SplunkError {
    SplunkError::Connection {
        message: format!("the export spool on local disk failed: {e}"),
    }
}

/// Reads one slice to its spool file, again from the start after a retryable failure.
struct SliceReader {
    splunk: SplunkClient,
    query: BuiltQuery,
    index: usize,
    path: PathBuf,
    spool: Arc<Spool>,
    progress: Arc<SliceProgress>,
    attempts: u32,
    started: Option<oneshot::Sender<Result<(), SplunkError>>>,
    /// Whether Splunk answered a search of this slice with its quota.
    refused_for_quota: bool,
}

impl SliceReader {
    /// Reads the slice; says too whether Splunk refused a search for its quota meanwhile.
    async fn read(mut self) -> (Result<Spooled, SplunkError>, bool) {
        self.progress.running.fetch_add(1, Ordering::Relaxed);
        let mut attempt = 0;
        let outcome = loop {
            attempt += 1;
            match self.read_once().await {
                Ok(spooled) => break Ok(spooled),
                Err(e) if e.is_retryable() && attempt < self.attempts => {
                    self.refused_for_quota |= e.is_quota();
                    let delay = self.splunk.retry_policy().delay(attempt - 1);
                    tracing::warn!(
                        slice = self.index, attempt, error = %e, delay_ms = delay.as_millis() as u64,
                        "reading an export slice failed; reading that slice again"
                    );
                    METRICS.incr("logexport_export_slices_total", "read_again");
                    tokio::time::sleep(delay).await;
                }
                Err(e) => break Err(e),
            }
        };
        self.progress.running.fetch_sub(1, Ordering::Relaxed);
        if let Err(e) = &outcome
            && let Some(started) = self.started.take()
        {
            let _ = started.send(Err(clone_error(e)));
        }
        if outcome.is_ok() {
            self.progress.done.fetch_add(1, Ordering::Relaxed);
            METRICS.incr("logexport_export_slices_total", "read");
        }
        (outcome, self.refused_for_quota)
    }

    async fn read_once(&mut self) -> Result<Spooled, SplunkError> {
        let answers = self.splunk.quota_answers();
        let stream = self.splunk.export(&self.query).await;
        // Even a quota answer the client's retries got past means Splunk is full.
        self.refused_for_quota |= self.splunk.quota_answers() > answers;
        let mut stream = stream?;
        if let Some(started) = self.started.take() {
            let _ = started.send(Ok(()));
        }
        let file = tokio::fs::File::create(&self.path)
            .await
            .map_err(spool_error)?;
        // Small buffers: up to `parallel` slices are read at once, and the spool file is the buffer.
        let mut out = BufWriter::with_capacity(64 * 1024, file);
        let mut batch = RowBatch::with_capacity(256, 256 * 1024);
        let mut bytes = 0u64;
        let result = async {
            loop {
                batch.clear();
                let more = stream.next_batch(&mut batch, 256).await?;
                let mut written = 0u64;
                for row in batch.iter() {
                    out.write_all(row).await.map_err(spool_error)?;
                    out.write_all(b"\n").await.map_err(spool_error)?;
                    written += row.len() as u64 + 1;
                }
                bytes += written;
                self.wait_for_room(written).await;
                if !more {
                    break;
                }
            }
            out.flush().await.map_err(spool_error)?;
            Ok::<_, SplunkError>(())
        }
        .await;
        if let Err(e) = result {
            // The slice is read again from its start: what it spooled is given back.
            self.spool.bytes.fetch_sub(bytes, Ordering::AcqRel);
            self.spool.freed.notify_waiters();
            let _ = tokio::fs::remove_file(&self.path).await;
            return Err(e);
        }
        Ok(Spooled {
            path: self.path.clone(),
            bytes,
        })
    }

    /// Counts `bytes` against the read-ahead budget, waiting while it is spent — unless this
    /// slice is next in line, which always reads on.
    async fn wait_for_room(&self, bytes: u64) {
        let spool = &self.spool;
        spool.bytes.fetch_add(bytes, Ordering::AcqRel);
        loop {
            let freed = spool.freed.notified();
            if spool.head.load(Ordering::Acquire) >= self.index
                || spool.bytes.load(Ordering::Acquire) <= spool.max
            {
                return;
            }
            // A timeout as well: a notification sent between the check and the wait is not lost
            // for long.
            let _ = tokio::time::timeout(Duration::from_millis(200), freed).await;
        }
    }
}

/// The first slice's failure, for `start` (the original goes to the slice's own outcome).
fn clone_error(e: &SplunkError) -> SplunkError {
    match e {
        SplunkError::Unauthorized { status, message } => SplunkError::Unauthorized {
            status: *status,
            message: message.clone(),
        },
        SplunkError::BadSearch { message } => SplunkError::BadSearch {
            message: message.clone(),
        },
        other => SplunkError::Http {
            status: 503,
            message: other.to_string(),
            retryable: other.is_retryable(),
        },
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
            for p in probes {
                let t = Utc.timestamp_micros(start_us + (len_us as f64 * p) as i64).unwrap();
                let holders = slices.iter().filter(|s| s.start <= t && t < s.end).count();
                prop_assert_eq!(holders, usize::from(t < end));
            }
        }
    }
}
