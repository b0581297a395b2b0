//! The plan: an export's range cut into slices, newest first, and the pieces each slice is
//! first read in. Pure arithmetic on time; the probe's rate sizes it (see [`super::probe`]).

use chrono::{DateTime, Utc};

use super::SliceSettings;
use crate::splunk::SearchFilters;

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
pub(super) fn slice_count(filters: &SearchFilters, settings: &SliceSettings) -> usize {
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
pub(super) const ROWS_PER_SLICE: u64 = 15_000;

/// Slices for `rows` still to read after the probe: one while they fit a slice; else about one
/// per [`ROWS_PER_SLICE`], rounded to a multiple of `parallel`. The export's searches then end
/// together: 45,000 rows as 4 slices on 3 searches would read the fourth alone at the end, as
/// long again as the three before it, while 3 slices of 15,000 end at once.
pub(super) fn slices_for_rows(rows: u64, parallel: usize) -> usize {
    if rows <= ROWS_PER_SLICE {
        return 1;
    }
    let parallel = parallel.max(1) as u64;
    let rounds = (rows as f64 / (parallel * ROWS_PER_SLICE) as f64).round() as u64;
    (rounds.max(1) * parallel) as usize
}

/// Pieces each of the last slices is read in (see [`pieces`]).
const TAIL_PIECES: usize = 4;

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use proptest::prelude::*;

    #[test]
    fn rows_after_the_probe_make_whole_rounds_of_searches() {
        // (rows, parallel) -> slices
        for (rows, parallel, slices) in [
            (0, 3, 1),
            (15_000, 3, 1),
            (15_001, 3, 3),
            (44_000, 3, 3),
            (45_100, 3, 3),
            (55_000, 3, 3),
            (70_000, 3, 6),
            (102_000, 3, 6),
            (135_000, 3, 9),
            (55_000, 1, 4),
            (55_000, 0, 4),
        ] {
            assert_eq!(
                slices_for_rows(rows, parallel),
                slices,
                "{rows} rows, {parallel} at once"
            );
        }
    }

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
