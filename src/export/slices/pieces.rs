//! The slices and pieces being read, shared by the export's readers and the archive's side: an
//! idle reader splits the busiest running piece, and the archive takes each piece's outcome
//! when it is next in line.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use tokio::sync::oneshot;

use super::SliceError;
use crate::metrics::METRICS;

/// Where a piece's reader sends how it ended.
pub(super) type PieceOutcome = oneshot::Sender<Result<Spooled, SliceError>>;

/// A piece read completely: its encoded lines in a spool file.
pub(super) struct Spooled {
    pub path: PathBuf,
    pub bytes: u64,
}

/// One planned slice: the pieces it is read in, newest first (one unless it was split).
pub(super) struct SliceParts {
    pub index: usize,
    pub pieces: Mutex<Vec<Arc<Piece>>>,
}

/// A part of a slice that one search reads: `[start, end)`, of which its reader keeps the rows
/// at or after `cut` (a split hands `[cut, …)`'s older part to a new piece).
pub(super) struct Piece {
    pub end: DateTime<Utc>,
    pub path: PathBuf,
    state: Mutex<PieceState>,
    /// The reader's outcome; the consumer takes it when the piece is next in line.
    pub outcome: Mutex<Option<oneshot::Receiver<Result<Spooled, SliceError>>>>,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct PieceState {
    /// Rows older than this belong to a later piece (the piece's start until it is split).
    pub cut: DateTime<Utc>,
    /// The oldest `_time` kept so far (the piece's end before the first row).
    pub position: DateTime<Utc>,
    pub rows: u64,
    /// Being read: only such a piece may be split.
    pub running: bool,
    /// Its reader waited out the spool's `ROOM_WAIT` once: it reads on from then on, re-reads included.
    pub over_budget: bool,
}

impl Piece {
    pub fn new(
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        path: PathBuf,
    ) -> (Arc<Self>, PieceOutcome) {
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

    pub fn state(&self) -> std::sync::MutexGuard<'_, PieceState> {
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
pub(super) struct Plan {
    pub slices: Vec<Arc<SliceParts>>,
    /// Pieces beyond each slice's first (tail pieces, splits) so far: numbers their spool files.
    pub pieces: AtomicUsize,
    pub dir: PathBuf,
    /// See [`super::SliceSettings::split_min_rows`].
    pub split_min_rows: u64,
}

impl Plan {
    /// Whether a running piece has not kept a row yet, so whether it is worth splitting is not
    /// known: an idle reader that found nothing to split waits for it rather than leaving.
    pub fn awaiting_first_rows(&self) -> bool {
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
    pub fn split(&self) -> Option<(usize, Arc<Piece>, PieceOutcome)> {
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

/// A piece's spool file: `slice-<slice>` for a slice's first piece, `slice-<slice>-<n>` for the
/// export's `n`-th piece beyond the first ones (tail pieces and splits).
pub(super) fn spool_path(dir: &Path, slice: usize, extra: Option<usize>) -> PathBuf {
    match extra {
        None => dir.join(format!("slice-{slice:05}")),
        Some(n) => dir.join(format!("slice-{slice:05}-{n}")),
    }
}
