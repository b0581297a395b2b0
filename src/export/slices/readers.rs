//! The export's readers: each one search at a time, taking the pieces in archive order and
//! encoding what it reads into the piece's spool file; once every piece has been taken, an idle
//! reader helps the busiest one by splitting it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::oneshot;

use super::pieces::{Piece, PieceOutcome, Plan, Spooled};
use super::spool::{FrameWriter, Spool};
use super::{SliceError, SliceProgress};
use crate::export::encode::RowEncoder;
use crate::metrics::METRICS;
use crate::splunk::{BuiltQuery, SearchFilters, SearchPermit, SplunkClient, SplunkError};

/// How often an idle reader looks again for a piece to split while one has no rate yet.
const SPLIT_POLL: Duration = Duration::from_millis(50);

/// How often a slice reader tries again for a search permit while the database is unreachable.
const DATABASE_WAIT: Duration = Duration::from_secs(1);

/// What every reader of one export shares.
#[derive(Clone)]
pub(super) struct Readers {
    pub splunk: SplunkClient,
    pub filters: SearchFilters,
    pub encoder: RowEncoder,
    pub spool: Arc<Spool>,
    pub progress: Arc<SliceProgress>,
    pub plan: Arc<Plan>,
    pub attempts: u32,
    /// Pieces no reader has taken yet, in archive order.
    pub queue: Arc<Mutex<VecDeque<Unread>>>,
    /// Readers (each one search at a time) still at work: a reader leaves once nothing is left
    /// to read or split, or for a quota answer while it is not the last.
    pub lanes: Arc<AtomicUsize>,
}

/// A piece waiting for a reader, with where its outcome goes (and, for the export's first
/// piece, where the news that Splunk accepted its search goes).
pub(super) struct Unread {
    pub slice: usize,
    pub piece: Arc<Piece>,
    pub tx: PieceOutcome,
    pub started: Option<oneshot::Sender<Result<(), SliceError>>>,
}

/// The export's search narrowed to `[start, end)`.
pub(super) fn query_for(
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
pub(super) fn row_time(row: &[u8]) -> Option<DateTime<Utc>> {
    const KEY: &[u8] = b"\"_time\":\"";
    let at = memchr::memmem::find(row, KEY)? + KEY.len();
    let len = memchr::memchr(b'"', &row[at..])?;
    crate::splunk::parse_timestamp(std::str::from_utf8(&row[at..at + len]).ok()?)
}

impl Readers {
    /// One reader: takes the pieces in archive order, one search at a time; once every piece
    /// has been taken, helps the busiest one by splitting it. Ends early (one search fewer for
    /// this export, never none) when Splunk says its search quota is full.
    pub async fn lane(self, permit: Option<SearchPermit>) {
        let lanes = self.lanes.clone();
        if !self.take_pieces(permit).await {
            lanes.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Whether the reader left for a quota answer, counted out of `lanes` already.
    async fn take_pieces(self, mut permit: Option<SearchPermit>) -> bool {
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
                return false;
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
                return true;
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
        if let Err(e) = &outcome {
            self.progress.failed.store(true, Ordering::Release);
            if let Some(started) = started.take() {
                let _ = started.send(Err(e.clone()));
            }
        }
        if outcome.is_ok() {
            METRICS.incr("logexport_export_slices_total", "read");
        }
        let _ = tx.send(outcome);
        refused_for_quota
    }

    /// A finished search's quota permit, kept for this reader's next search while there may be
    /// one (a piece not taken yet, or another piece still running that it may split); otherwise
    /// given back now. At month-end another export's search waits for it: each small export's
    /// last search would otherwise hold its place idle while its file is finished.
    fn kept_for_next(&self, permit: Option<SearchPermit>) -> Option<SearchPermit> {
        let unread = !self
            .queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_empty();
        // This reader's own piece counts as running.
        let others_running = self.progress.running.load(Ordering::Acquire) > 1;
        permit.filter(|_| unread || others_running)
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
        let handed_over = permit.is_some();
        let stream = self.splunk.export_holding(&query, permit.take()).await;
        // Even a quota answer the client's retries got past means Splunk is full, unless this
        // search took the place of this reader's own search that had just ended: Splunk may
        // not have counted that end yet (the emulator once sent a search's last row before
        // freeing its place, and one such answer lowered a 2M export to 2 searches for good,
        // 25 % slower). A place Splunk keeps refusing fails the piece as a quota answer, which
        // lowers the export's searches all the same.
        if !handed_over {
            *refused_for_quota |= self.splunk.quota_answers() > answers;
        }
        let mut stream = stream?;
        tracing::debug!(slice, start = %search_start, end = %piece.end, "slice search started");
        if let Some(started) = started.take() {
            let _ = started.send(Ok(()));
        }
        let mut out = FrameWriter::create(&piece.path, self.encoder.clone()).await?;
        let mut bytes = 0u64;
        let result = async {
            loop {
                let mut batch = out.batch();
                let more = stream.next_batch(&mut batch, 256).await?;
                if !more {
                    // Splunk's search is over: its place in the quota moves on now, to this
                    // reader's next search or to whoever waits, before this batch is encoded
                    // and its file finished (waits for the encoder threads and the spool that
                    // would leave the place idle: at month-end on 6 processes a 90th percentile
                    // of 3-4 ms, against 0.05 ms for the hand-over itself).
                    *permit = self.kept_for_next(stream.take_permit());
                    if permit.is_none() {
                        // The search it went to runs first (woken on this thread, it would
                        // otherwise wait for this batch's encoding).
                        tokio::task::yield_now().await;
                    }
                }
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
                batch.truncate(keep);
                // Encoded on the encoder threads while the next batch is read.
                let written = out.push(batch).await?;
                bytes += written;
                self.spool.reserve(slice, piece, written).await;
                if !more || reached_cut {
                    break;
                }
            }
            let written = out.finish().await?;
            bytes += written;
            self.spool.reserve(slice, piece, written).await;
            Ok::<_, SliceError>(())
        }
        .await;
        if let Err(e) = result {
            // The piece is read again from its end: what it spooled is given back.
            self.spool.release(bytes);
            let _ = tokio::fs::remove_file(&piece.path).await;
            return Err(e);
        }
        tracing::debug!(slice, bytes, "slice piece read");
        Ok(Spooled {
            path: piece.path.clone(),
            bytes,
        })
    }
}
