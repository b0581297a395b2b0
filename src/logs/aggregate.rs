//! Counts per kind and day, counted by Splunk (`stats count by`), folded into local days here.
//!
//! Splunk buckets events by hour (`strftime(_time, "%Y-%m-%dT%H:00%z")`, the offset included so
//! the bucket is an exact instant whatever time zone the Splunk user formats in); the hours are
//! then folded into calendar days of the request's time zone. For zones whose offset is not a
//! whole number of hours somewhere in the range (e.g. Asia/Kolkata), buckets are minutes.

use std::collections::BTreeMap;

use chrono::{DateTime, NaiveDate, Offset, TimeZone};
use chrono_tz::Tz;
use serde::Serialize;

use crate::domain::{DateRange, day_start, quay_datetime};
use crate::splunk::Row;

use super::{LogQuery, LogsError, LogsService};

/// Most `stats` rows read back (hour buckets × kinds stay far below it for 32 days).
const MAX_STATS_ROWS: u64 = 500_000;

/// One entry of Quay's `aggregated` list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct AggregateCount {
    pub kind: String,
    pub count: u64,
    /// The day's start, RFC 2822 (`-0000` for UTC as Quay shows it, else the zone's offset).
    pub datetime: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bucket {
    Hour,
    Minute,
}

impl Bucket {
    fn for_range(range: &DateRange) -> Self {
        let tz = range.timezone;
        let mut t = range.start;
        while t <= range.end {
            let offset = tz.offset_from_utc_datetime(&t.naive_utc()).fix();
            if offset.local_minus_utc() % 3600 != 0 {
                return Self::Minute;
            }
            t += chrono::Duration::hours(1);
        }
        Self::Hour
    }

    fn format(self) -> &'static str {
        match self {
            Self::Hour => "%Y-%m-%dT%H:00%z",
            Self::Minute => "%Y-%m-%dT%H:%M%z",
        }
    }
}

impl LogsService {
    /// Event counts per kind and calendar day (in the range's time zone), oldest day first.
    pub async fn aggregate(&self, query: &LogQuery) -> Result<Vec<AggregateCount>, LogsError> {
        let bucket = Bucket::for_range(&query.range);
        let mut built = query.filters(&self.client, query.range.end).build()?;
        // Static text only: the format and field names come from code, never from input.
        built.spl.push_str(&format!(
            r#" | eval bucket=strftime(_time, "{}") | stats count by bucket, kind"#,
            bucket.format()
        ));
        let rows = self.run(&built, MAX_STATS_ROWS).await?;
        Ok(fold(&rows, query, query.range.timezone))
    }
}

/// Sums bucket counts into (local day, kind).
fn fold(rows: &[Row], query: &LogQuery, tz: Tz) -> Vec<AggregateCount> {
    let mut days: BTreeMap<(NaiveDate, String), u64> = BTreeMap::new();
    for row in rows {
        let Ok(obj) = row.to_object() else { continue };
        let text = |k: &str| obj.get(k).and_then(|v| v.as_str()).map(str::to_owned);
        let (Some(bucket), Some(kind)) = (text("bucket"), text("kind")) else {
            continue;
        };
        if !query.kinds.is_empty() && !query.kinds.contains(&kind) {
            continue; // a kind missing from the known list slipped past the exclusions
        }
        let count = match obj.get("count") {
            Some(serde_json::Value::String(s)) => s.parse().unwrap_or(0),
            Some(serde_json::Value::Number(n)) => n.as_u64().unwrap_or(0),
            _ => 0,
        };
        let Ok(at) = DateTime::parse_from_str(&bucket, "%Y-%m-%dT%H:%M%z") else {
            tracing::warn!(%bucket, "unreadable aggregate bucket from Splunk; skipped");
            continue;
        };
        let day = at.with_timezone(&tz).date_naive();
        *days.entry((day, kind)).or_default() += count;
    }
    days.into_iter()
        .map(|((day, kind), count)| AggregateCount {
            kind,
            count,
            datetime: day_label(day, tz),
        })
        .collect()
}

/// The start of `day` in `tz`, as Quay formats dates.
fn day_label(day: NaiveDate, tz: Tz) -> String {
    let start = day_start(day, tz);
    if tz == Tz::UTC {
        quay_datetime(&start)
    } else {
        start
            .with_timezone(&tz)
            .format("%a, %d %b %Y %H:%M:%S %z")
            .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(tz: &str) -> LogQuery {
        let range = DateRange::from_request(
            Some("2024-03-09"),
            Some("2024-03-11"),
            Some(tz),
            chrono::Utc::now(),
            32,
        )
        .unwrap();
        LogQuery::new(false, None, None, None, vec![], range)
    }

    #[test]
    fn folds_hours_into_local_days_across_dst() {
        let rows: Vec<Row> = [
            ("2024-03-10T04:00+0000", "push_repo", "2"), // 23:00 on the 9th in New York
            ("2024-03-10T05:00+0000", "push_repo", "3"), // 00:00 on the 10th (EST)
            ("2024-03-11T03:00+0000", "push_repo", "1"), // 23:00 on the 10th (EDT)
            ("2024-03-11T04:00+0000", "pull_repo", "4"), // 00:00 on the 11th (EDT)
        ]
        .iter()
        .map(|(b, k, c)| {
            Row::from_json(format!(r#"{{"bucket":"{b}","kind":"{k}","count":"{c}"}}"#)).unwrap()
        })
        .collect();
        let query = q("America/New_York");
        let got = fold(&rows, &query, query.range.timezone);
        let got: Vec<(String, u64, String)> = got
            .into_iter()
            .map(|a| (a.kind, a.count, a.datetime))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "push_repo".into(),
                    2,
                    "Sat, 09 Mar 2024 00:00:00 -0500".into()
                ),
                (
                    "push_repo".into(),
                    4,
                    "Sun, 10 Mar 2024 00:00:00 -0500".into()
                ),
                (
                    "pull_repo".into(),
                    4,
                    "Mon, 11 Mar 2024 00:00:00 -0400".into()
                ),
            ]
        );
        let utc = q("UTC");
        assert_eq!(
            fold(&rows, &utc, Tz::UTC)[0].datetime,
            "Sun, 10 Mar 2024 00:00:00 -0000"
        );
    }

    #[test]
    fn half_hour_zones_use_minute_buckets() {
        assert_eq!(Bucket::for_range(&q("UTC").range), Bucket::Hour);
        assert_eq!(
            Bucket::for_range(&q("America/New_York").range),
            Bucket::Hour
        );
        assert_eq!(Bucket::for_range(&q("Asia/Kolkata").range), Bucket::Minute);
    }
}
