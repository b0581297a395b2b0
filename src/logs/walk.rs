//! Keyset pagination over Splunk's newest-first results (pure logic, no I/O).
//!
//! Scheme: rows are ordered by (`_time` millisecond descending, tiebreak ascending), the
//! tiebreak being a hash of the event's `_raw`. After a page, the cursor holds the millisecond
//! `T` of the last row consumed and the multiset of tiebreaks of every row consumed at `T`.
//! The next page runs ONE search over `[start, T + 1 ms)` sorted `-_time` with
//! `head N + |seen| + 1`, drops the rows whose tiebreak is in the multiset (once per copy) and
//! consumes the next `N` in order.
//!
//! Why this returns every event exactly once, whatever order Splunk gives rows sharing a
//! millisecond: after each page, the rows returned are exactly "every row newer than `T`" plus
//! the `seen` rows at `T`. The search returns the `N + |seen| + 1` newest rows not newer than
//! `T`; at most `|seen|` of them were returned before, so at least `N` (+1 to know whether more
//! exist) new ones are fetched when they exist, and any unreturned row newer than the new
//! boundary is newer than some fetched row, hence fetched and consumed first.

use crate::domain::LogEntry;

use super::page_token::Cursor;

/// One fetched row: its order key and, when it matches the query, its log entry.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// `_time` in epoch milliseconds.
    pub ms: i64,
    /// Stable tiebreak (hash of `_raw`).
    pub hash: u64,
    /// `None` for rows fetched but not shown (post-filtered kind, unmappable event).
    pub entry: Option<LogEntry<'static>>,
}

/// What a batch gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The page is full; `more` when more matching rows (may) follow.
    PageFull { more: bool },
    /// Every remaining row was consumed: this is the last page.
    Exhausted,
    /// The batch ran out before the page filled, but Splunk may hold more rows.
    NeedMore,
}

/// Consumes a batch into `out` (up to `want` entries), advancing `cursor`.
///
/// `fetched_all` is true when the search returned fewer rows than requested (nothing older
/// remains).
pub fn consume(
    mut batch: Vec<Candidate>,
    fetched_all: bool,
    cursor: &mut Option<Cursor>,
    want: usize,
    out: &mut Vec<LogEntry<'static>>,
) -> Step {
    batch.sort_by(|a, b| b.ms.cmp(&a.ms).then(a.hash.cmp(&b.hash)));
    let old_boundary = cursor.as_ref().map(|c| c.boundary_ms);
    let mut skip: Vec<u64> = cursor.as_ref().map(|c| c.seen.clone()).unwrap_or_default();
    let mut already_seen = |c: &Candidate| {
        if Some(c.ms) != old_boundary {
            return false;
        }
        match skip.iter().position(|h| *h == c.hash) {
            Some(p) => {
                skip.swap_remove(p);
                true
            }
            None => false,
        }
    };
    let mut rows = batch.into_iter();
    while out.len() < want {
        let Some(c) = rows.next() else {
            return if fetched_all {
                Step::Exhausted
            } else {
                Step::NeedMore
            };
        };
        if already_seen(&c) {
            continue;
        }
        match cursor {
            Some(cur) if cur.boundary_ms == c.ms => cur.seen.push(c.hash),
            _ => {
                *cursor = Some(Cursor {
                    boundary_ms: c.ms,
                    seen: vec![c.hash],
                })
            }
        }
        if let Some(e) = c.entry {
            out.push(e);
        }
    }
    let more_here = rows.any(|c| !already_seen(&c) && c.entry.is_some());
    Step::PageFull {
        more: more_here || !fetched_all,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};
    use proptest::prelude::*;

    /// Identical events (same millisecond and hash) are indistinguishable, as in Splunk.
    fn label(ms: i64, hash: u64) -> String {
        format!("{ms}:{hash}")
    }

    fn matches(hash: u64) -> bool {
        !hash.is_multiple_of(4)
    }

    fn entry(ms: i64, hash: u64) -> LogEntry<'static> {
        LogEntry {
            kind: label(ms, hash).into(),
            datetime: DateTime::<Utc>::UNIX_EPOCH,
            namespace: None,
            repository: None,
            ip: None,
            metadata: Default::default(),
            performer: None,
        }
    }

    /// Simulates Splunk: rows sorted by time desc with ties in an arbitrary (seeded) order,
    /// limited to `[.., latest)` and `head n`.
    fn search(data: &[(i64, u64)], latest_ms: Option<i64>, n: usize, seed: u64) -> Vec<Candidate> {
        let mut rows: Vec<(usize, &(i64, u64))> = data
            .iter()
            .enumerate()
            .filter(|(_, r)| latest_ms.is_none_or(|l| r.0 < l))
            .collect();
        rows.sort_by_key(|(i, r)| {
            (
                std::cmp::Reverse(r.0),
                (*i as u64).wrapping_mul(seed | 1) % 97,
            )
        });
        rows.into_iter()
            .take(n)
            .map(|(_, r)| Candidate {
                ms: r.0,
                hash: r.1,
                entry: matches(r.1).then(|| entry(r.0, r.1)),
            })
            .collect()
    }

    fn walk(data: &[(i64, u64)], page: usize, seed: u64) -> Vec<Vec<String>> {
        let mut cursor: Option<Cursor> = None;
        let mut pages = Vec::new();
        for _ in 0..10_000 {
            let mut out = Vec::new();
            let last = loop {
                let seen = cursor.as_ref().map_or(0, |c| c.seen.len());
                let n = page - out.len() + seen + 1;
                let batch = search(data, cursor.as_ref().map(|c| c.boundary_ms + 1), n, seed);
                let all = batch.len() < n;
                match consume(batch, all, &mut cursor, page, &mut out) {
                    Step::Exhausted => break true,
                    Step::PageFull { more } => break !more,
                    Step::NeedMore => continue,
                }
            };
            assert!(out.len() == page || last, "short page that is not the last");
            pages.push(out.into_iter().map(|e| e.kind.into_owned()).collect());
            if last {
                return pages;
            }
        }
        panic!("no end");
    }

    proptest! {
        #[test]
        fn every_matching_row_exactly_once_newest_first(
            raw in proptest::collection::vec((0i64..15, 0u64..12), 0..150),
            page in 1usize..7,
            seed in any::<u64>(),
        ) {
            let pages = walk(&raw, page, seed);
            let got: Vec<String> = pages.concat();
            let mut want: Vec<String> = raw.iter().filter(|r| matches(r.1)).map(|r| label(r.0, r.1)).collect();
            let mut sorted_got = got.clone();
            sorted_got.sort();
            want.sort();
            prop_assert_eq!(sorted_got, want);
            // Newest first across the whole walk.
            let time_of = |k: &str| k.split(':').next().unwrap().parse::<i64>().unwrap();
            prop_assert!(got.windows(2).all(|w| time_of(&w[0]) >= time_of(&w[1])));
        }
    }
}
