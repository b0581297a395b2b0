//! The export/listing time range: calendar days or exact instants, turned into a UTC half-open range.

use chrono::{DateTime, Days, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// A half-open UTC range `[start, end)` plus the timezone its calendar days were read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DateRange {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub timezone: Tz,
}

/// One end of a requested range, as the caller wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeBound {
    /// A calendar day (`MM/DD/YYYY` or `YYYY-MM-DD`), read in the request's timezone.
    Day(NaiveDate),
    /// An exact instant (RFC 3339).
    Instant(DateTime<Utc>),
}

/// Why a range was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DateRangeError {
    #[error("invalid {field} {value:?}: expected MM/DD/YYYY, YYYY-MM-DD or an RFC 3339 timestamp")]
    Unparseable { field: &'static str, value: String },
    #[error("invalid timezone {0:?}: expected an IANA name such as UTC or Europe/Berlin")]
    Timezone(String),
    #[error("endtime is before starttime")]
    EndBeforeStart,
    #[error("the range covers {days} days; at most {max} are allowed")]
    TooLong { days: i64, max: u32 },
}

impl RangeBound {
    /// Parses one bound; `field` names it in the error.
    pub fn parse(field: &'static str, value: &str) -> Result<Self, DateRangeError> {
        let value = value.trim();
        let unparseable = || DateRangeError::Unparseable {
            field,
            value: value.chars().take(64).collect(),
        };
        if value.len() > 64 {
            return Err(unparseable());
        }
        let four_digit_year = value.rsplit('/').next().is_some_and(|y| y.len() == 4);
        if four_digit_year {
            if let Ok(day) = NaiveDate::parse_from_str(value, "%m/%d/%Y") {
                return Ok(Self::Day(day));
            }
        }
        if value.len() == 10 {
            if let Ok(day) = NaiveDate::parse_from_str(value, "%Y-%m-%d") {
                return Ok(Self::Day(day));
            }
        }
        DateTime::parse_from_rfc3339(value)
            .map(|t| Self::Instant(t.with_timezone(&Utc)))
            .map_err(|_| unparseable())
    }
}

/// The UTC instant at which `day` begins in `tz` (the first valid local time when midnight is skipped).
pub fn day_start(day: NaiveDate, tz: Tz) -> DateTime<Utc> {
    let mut local = day.and_time(NaiveTime::MIN);
    for _ in 0..48 {
        if let Some(t) = tz.from_local_datetime(&local).earliest() {
            return t.with_timezone(&Utc);
        }
        local += chrono::Duration::minutes(30);
    }
    Utc.from_utc_datetime(&day.and_time(NaiveTime::MIN))
}

impl DateRange {
    /// Builds a range from the request's `starttime`, `endtime` and `timezone`.
    ///
    /// Absent bounds default to yesterday and today; day bounds include the whole end day.
    pub fn from_request(
        starttime: Option<&str>,
        endtime: Option<&str>,
        timezone: Option<&str>,
        now: DateTime<Utc>,
        max_days: u32,
    ) -> Result<Self, DateRangeError> {
        let timezone = parse_timezone(timezone)?;
        let today = now.with_timezone(&timezone).date_naive();
        let start = match starttime.filter(|s| !s.trim().is_empty()) {
            Some(s) => RangeBound::parse("starttime", s)?,
            None => RangeBound::Day(today - Days::new(1)),
        };
        let end = match endtime.filter(|s| !s.trim().is_empty()) {
            Some(s) => RangeBound::parse("endtime", s)?,
            None => RangeBound::Day(today),
        };
        Self::new(start, end, timezone, max_days)
    }

    /// Builds a range from parsed bounds.
    pub fn new(
        start: RangeBound,
        end: RangeBound,
        timezone: Tz,
        max_days: u32,
    ) -> Result<Self, DateRangeError> {
        let start = match start {
            RangeBound::Day(d) => day_start(d, timezone),
            RangeBound::Instant(t) => t,
        };
        let end = match end {
            RangeBound::Day(d) => day_start(d + Days::new(1), timezone),
            RangeBound::Instant(t) => t,
        };
        if end < start {
            return Err(DateRangeError::EndBeforeStart);
        }
        let seconds = (end - start).num_seconds();
        // A day range spanning a DST change is a few hours off 24 h per day; round to days.
        let days = (seconds + 43_200) / 86_400;
        if days > i64::from(max_days) {
            return Err(DateRangeError::TooLong {
                days,
                max: max_days,
            });
        }
        Ok(Self {
            start,
            end,
            timezone,
        })
    }

    /// The start as Quay's callback shows it: `MM/DD/YYYY` in the request's timezone.
    pub fn start_day_label(&self) -> String {
        self.start
            .with_timezone(&self.timezone)
            .format("%m/%d/%Y")
            .to_string()
    }

    /// The last day covered (inclusive), `MM/DD/YYYY` in the request's timezone.
    pub fn end_day_label(&self) -> String {
        let last = if self.end > self.start {
            self.end - chrono::Duration::seconds(1)
        } else {
            self.end
        };
        last.with_timezone(&self.timezone)
            .format("%m/%d/%Y")
            .to_string()
    }
}

/// Parses an IANA timezone name; `None` or empty means UTC.
pub fn parse_timezone(value: Option<&str>) -> Result<Tz, DateRangeError> {
    match value.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(Tz::UTC),
        Some(name) => name
            .parse::<Tz>()
            .map_err(|_| DateRangeError::Timezone(name.chars().take(64).collect())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn range(
        start: Option<&str>,
        end: Option<&str>,
        tz: Option<&str>,
    ) -> Result<DateRange, DateRangeError> {
        DateRange::from_request(start, end, tz, utc("2024-06-18T12:00:00Z"), 366)
    }

    #[test]
    fn day_range_includes_the_whole_end_day() {
        let r = range(Some("01/01/2024"), Some("01/31/2024"), None).unwrap();
        assert_eq!(r.start, utc("2024-01-01T00:00:00Z"));
        assert_eq!(r.end, utc("2024-02-01T00:00:00Z"));
        let iso = range(Some("2024-01-01"), Some("2024-01-31"), None).unwrap();
        assert_eq!(iso, r);
        assert_eq!(r.start_day_label(), "01/01/2024");
        assert_eq!(r.end_day_label(), "01/31/2024");
    }

    #[test]
    fn timezone_shifts_day_boundaries() {
        let r = range(
            Some("01/01/2024"),
            Some("01/01/2024"),
            Some("America/New_York"),
        )
        .unwrap();
        assert_eq!(r.start, utc("2024-01-01T05:00:00Z"));
        assert_eq!(r.end, utc("2024-01-02T05:00:00Z"));
        assert_eq!(r.end_day_label(), "01/01/2024");
    }

    #[test]
    fn instants_are_exact() {
        let r = range(
            Some("2024-01-01T10:00:00+02:00"),
            Some("2024-01-01T12:30:00Z"),
            None,
        )
        .unwrap();
        assert_eq!(r.start, utc("2024-01-01T08:00:00Z"));
        assert_eq!(r.end, utc("2024-01-01T12:30:00Z"));
    }

    #[test]
    fn defaults_are_yesterday_through_today() {
        let r = range(None, None, None).unwrap();
        assert_eq!(r.start, utc("2024-06-17T00:00:00Z"));
        assert_eq!(r.end, utc("2024-06-19T00:00:00Z"));
    }

    #[test]
    fn refuses_bad_input() {
        for bad in [
            "13/01/2024",
            "garbage",
            "2024-02-30",
            "01/01/24",
            "1/1/2024x",
        ] {
            assert!(
                matches!(
                    range(Some(bad), Some("01/31/2024"), None),
                    Err(DateRangeError::Unparseable { .. })
                ),
                "{bad} accepted"
            );
        }
        assert_eq!(
            range(Some("02/01/2024"), Some("01/01/2024"), None),
            Err(DateRangeError::EndBeforeStart)
        );
        assert!(matches!(
            range(Some("01/01/2022"), Some("01/31/2024"), None),
            Err(DateRangeError::TooLong { .. })
        ));
        assert!(matches!(
            range(None, None, Some("Mars/Olympus")),
            Err(DateRangeError::Timezone(_))
        ));
    }

    #[test]
    fn max_days_is_inclusive() {
        let now = utc("2024-06-18T12:00:00Z");
        assert!(
            DateRange::from_request(Some("01/01/2024"), Some("01/31/2024"), None, now, 31).is_ok()
        );
        assert!(
            DateRange::from_request(Some("01/01/2024"), Some("02/01/2024"), None, now, 31).is_err()
        );
    }
}
