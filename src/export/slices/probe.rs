//! The newest rows of an export's range, read by one search before the range is sliced: an
//! export no bigger than the probe is read by that one search, and a bigger one's plan fits the
//! number of rows the probe's rate predicts instead of the range's length alone (a small export
//! over ten days would otherwise be read by forty searches of a few hundred rows each, and at
//! month-end those searches' start-up costs would use most of Splunk's quota).

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use futures::FutureExt;
use futures::future::BoxFuture;

use super::pieces::Spooled;
use super::plan::{ROWS_PER_SLICE, slice_count, slices_for_rows};
use super::readers::{query_for, row_time};
use super::spool::{FrameWriter, spool_error};
use super::{SliceError, SliceSettings};
use crate::export::encode::RowEncoder;
use crate::splunk::{RowBatch, SearchFilters, SearchPermit, SplunkClient};

/// Rows gathered before they go to the encoder threads (always whole seconds).
const BATCH_ROWS: usize = 256;

/// Rows the probe reads: `rows`, or a whole slice's worth ([`ROWS_PER_SLICE`]) when its search
/// got its place in the quota while other searches wanted one too (see
/// [`SearchPermit::contended`]). Reading an export's range by several searches at once only
/// pays while places are free: at month-end every place is taken by some export's search, a
/// search more for this export's rows takes a place another export's search would use, and each
/// search costs Splunk its start and the quota a hand-over. So a small export is read by one
/// search under contention, and by the probe and one search after it when Splunk is idle (where
/// the probe's shortness lets a bigger export's slices start sooner).
fn rows_to_read(rows: u64, contended: bool) -> u64 {
    if contended {
        rows.max(ROWS_PER_SLICE)
    } else {
        rows
    }
}

pub(super) struct Probe {
    /// The probe's rows in their spool file, once the file is written: its last rows are still
    /// being encoded and written when [`Probe::read`] returns, while the first reader's search
    /// reads on (the probe's place in the quota does not wait for the encoder and the disk).
    pub spooled: BoxFuture<'static, Result<Spooled, SliceError>>,
    /// The probe's place in the search quota once its search ended by itself, for a reader;
    /// `None` when the probe read the whole range (the place moved on at once).
    pub permit: Option<SearchPermit>,
    /// The rows kept are every row in `[until, end)`; `until == start` when the range held no
    /// more than the probe read.
    pub until: DateTime<Utc>,
    rows: u64,
}

impl Probe {
    /// Reads up to `rows` of the newest rows (a slice's worth while the quota is contended, see
    /// [`rows_to_read`]) to `path`, encoded, keeping whole seconds: rows of
    /// the oldest second read may be incomplete, so they are left to the slices after. The
    /// search itself stops at `rows` (`| head`): Splunk ends it and frees its place in the
    /// role's quota, which the first reader then takes over. (A search cut off by closing its
    /// stream holds that place until Splunk notices, so the next search would be refused
    /// meanwhile.)
    pub async fn read(
        splunk: &SplunkClient,
        filters: &SearchFilters,
        rows: u64,
        path: PathBuf,
        encoder: RowEncoder,
    ) -> Result<Self, SliceError> {
        let query = query_for(filters, filters.start, filters.end)?;
        let permit = splunk.search_permit("export").await?;
        let rows = rows_to_read(rows, permit.as_ref().is_some_and(SearchPermit::contended));
        let mut stream = splunk.export_holding(&query.head(rows), permit).await?;
        let mut out = FrameWriter::create(&path, encoder).await?;
        let mut incoming = RowBatch::with_capacity(256, 256 * 1024);
        // Rows not yet handed to the encoder: whole seconds, then the second being read, which
        // starts at row `second_from`.
        let mut gathered = out.batch();
        let mut second: Option<i64> = None;
        let mut second_from = 0;
        let (mut bytes, mut read, mut handed) = (0u64, 0u64, 0u64);
        let (mut permit, mut complete) = (None, false);
        loop {
            incoming.clear();
            let more = stream.next_batch(&mut incoming, 256).await?;
            if !more {
                // The search is over: its place moves on before the last rows go to the
                // encoder (see `Readers::read_once`), kept for the first reader only while rows
                // are left to read. At month-end most exports are this one search, and their
                // places would otherwise stay idle until the plan found nothing left. Fewer
                // rows than asked for: the range held no more.
                complete = read + (incoming.len() as u64) < rows;
                permit = stream.take_permit().filter(|_| !complete);
                if complete {
                    // The search it went to runs first (see `Readers::read_once`).
                    tokio::task::yield_now().await;
                }
            }
            for row in incoming.iter() {
                let at = row_time(row).map_or(i64::MIN, |t| t.timestamp());
                if second != Some(at) {
                    // A new second: the rows gathered so far are whole seconds.
                    if gathered.len() >= BATCH_ROWS {
                        handed += gathered.len() as u64;
                        let full = std::mem::replace(&mut gathered, out.batch());
                        bytes += out.push(full).await?;
                    }
                    second = Some(at);
                    second_from = gathered.len();
                }
                gathered.push_text(row);
                read += 1;
            }
            if !more {
                break;
            }
        }
        drop(stream);
        let (until, kept) = match (complete, second) {
            (true, _) => (filters.start, read),
            (false, Some(at)) if at != i64::MIN => {
                gathered.truncate(second_from);
                let until = DateTime::from_timestamp(at + 1, 0)
                    .unwrap_or(filters.end)
                    .clamp(filters.start, filters.end);
                (until, handed + gathered.len() as u64)
            }
            // A row without a time: nothing can be kept from the probe.
            (false, _) => (filters.end, 0),
        };
        tracing::debug!(rows = kept, complete, until = %until, "probe read");
        let spooled = async move {
            bytes += out.push(gathered).await?;
            bytes += out.finish().await?;
            if kept == 0 && bytes > 0 {
                tokio::fs::write(&path, b"").await.map_err(spool_error)?;
                bytes = 0;
            }
            Ok(Spooled { path, bytes })
        };
        Ok(Self {
            spooled: spooled.boxed(),
            permit,
            until,
            rows: kept,
        })
    }

    /// Slices for the whole plan (the probe's included): as many for the rest of the range,
    /// `[start, until)`, as the rows the probe's rate predicts there warrant (whole rounds of the
    /// export's parallel searches, see [`slices_for_rows`]), at most what the
    /// range's length allows; and whether that bound was not reached, so the slices are sized
    /// by their rows (no tail pieces needed: see [`super::plan::pieces`]).
    pub fn slices_after(&self, filters: &SearchFilters, settings: &SliceSettings) -> (usize, bool) {
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
        let wanted = slices_for_rows(predicted, settings.parallel);
        (1 + wanted.min(by_time), wanted <= by_time)
    }
}

#[cfg(test)]
mod tests {
    use super::{ROWS_PER_SLICE, rows_to_read};

    #[test]
    fn a_contended_probe_reads_a_whole_slice_an_idle_one_its_setting() {
        assert_eq!(rows_to_read(2_000, false), 2_000);
        assert_eq!(rows_to_read(2_000, true), ROWS_PER_SLICE);
        // A probe set bigger than a slice stays as set.
        assert_eq!(rows_to_read(50_000, true), 50_000);
        assert_eq!(rows_to_read(50_000, false), 50_000);
    }
}
