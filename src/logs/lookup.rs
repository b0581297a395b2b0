//! One page of logs: open the cursor, run one bounded Splunk search, map, seal the next cursor.

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::domain::LogEntry;
use crate::metrics::METRICS;
use crate::splunk::{Row, SortOrder, map_row, parse_timestamp};

use super::page_token::Cursor;
use super::walk::{Candidate, Step, consume};
use super::{LogQuery, LogsError, LogsService};

/// More than one search per page happens only when rows of kinds missing from
/// [`super::kinds::KNOWN_KINDS`] crowd a multi-kind listing; this bounds that case.
const MAX_SEARCHES_PER_PAGE: usize = 4;

/// One page of a listing.
#[derive(Debug, Clone)]
pub struct LogsPage {
    /// Newest first.
    pub logs: Vec<LogEntry<'static>>,
    /// Opaque token for the next page; `None` on the last page.
    pub next_page: Option<String>,
}

impl LogsService {
    /// One page of `query`, continuing after `next_page` when given.
    pub async fn lookup(
        &self,
        query: &LogQuery,
        next_page: Option<&str>,
    ) -> Result<LogsPage, LogsError> {
        let now = Utc::now();
        let binding = query.binding();
        let mut cursor = match next_page.filter(|t| !t.trim().is_empty()) {
            Some(token) => Some(self.key.open(token, &binding, now)?),
            None => None,
        };
        let want = self.page_size;
        let mut logs = Vec::with_capacity(want);
        for _ in 0..MAX_SEARCHES_PER_PAGE {
            let seen = cursor.as_ref().map_or(0, |c| c.seen.len());
            let fetch = (want - logs.len() + seen + 1) as u64;
            let end = match &cursor {
                Some(c) => boundary_end(c).min(query.range.end),
                None => query.range.end,
            };
            let built = query
                .filters(&self.client, end)
                .build()?
                .sort_by_time(SortOrder::NewestFirst)
                .head(fetch);
            let rows = self.run(&built, fetch).await?;
            let fetched_all = (rows.len() as u64) < fetch;
            let batch = rows.iter().map(|r| candidate(r, query)).collect();
            match consume(batch, fetched_all, &mut cursor, want, &mut logs) {
                Step::Exhausted => {
                    return Ok(LogsPage {
                        logs,
                        next_page: None,
                    });
                }
                Step::PageFull { more: false } => {
                    return Ok(LogsPage {
                        logs,
                        next_page: None,
                    });
                }
                Step::PageFull { more: true } => break,
                Step::NeedMore => continue,
            }
        }
        let next_page = match &cursor {
            Some(c) => Some(self.key.seal(c, &binding, now)?),
            None => None,
        };
        Ok(LogsPage { logs, next_page })
    }
}

/// The exclusive end just after the boundary millisecond.
fn boundary_end(c: &Cursor) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(c.boundary_ms.saturating_add(1))
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// Order key and (when it belongs in the listing) entry of one result row.
fn candidate(row: &Row, query: &LogQuery) -> Candidate {
    let obj = row.to_object().ok();
    let text = |name: &str| {
        obj.as_ref()
            .and_then(|o| o.get(name))
            .and_then(|v| v.as_str())
            .map(str::to_owned)
    };
    let raw = text("_raw");
    let hash_input = raw.as_deref().unwrap_or(row.as_str());
    let digest = Sha256::digest(hash_input.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    let hash = u64::from_be_bytes(first);
    let entry = match map_row(row) {
        Ok(e) => Some(e),
        Err(reason) => {
            METRICS.incr("logexport_logs_rows_skipped_total", &reason.to_string());
            None
        }
    };
    let time = text("_time")
        .as_deref()
        .and_then(parse_timestamp)
        .or_else(|| entry.as_ref().map(|e| e.datetime));
    let ms = time.map_or(0, |t| t.timestamp_millis());
    let entry = entry.filter(|e| query.admits(e));
    Candidate { ms, hash, entry }
}
