//! Schedule periods as exact UTC instants: local midnight (daily), Monday's local midnight
//! (weekly), the first of the month's local midnight (monthly), in the schedule's time zone.
//!
//! A period is `[start, next start)`, so consecutive periods neither overlap nor leave a gap, and a
//! day across a daylight-saving change is 23 or 25 hours long. Periods are numbered by their local
//! calendar position (day, week or month since year 1), which makes "how many periods between"
//! arithmetic instead of a walk.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, Days, Duration, NaiveDate, Utc};
use chrono_tz::Tz;

use crate::domain::day_start;

/// How long each of a schedule's periods is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Period {
    Daily,
    Weekly,
    Monthly,
}

/// A period name outside `daily`, `weekly`, `monthly`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid period {0:?}: expected daily, weekly or monthly")]
pub struct InvalidPeriod(String);

impl Period {
    /// The name stored in the database and used on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Daily => "daily",
            Self::Weekly => "weekly",
            Self::Monthly => "monthly",
        }
    }

    /// The most calendar days one period covers.
    pub fn max_days(self) -> u32 {
        match self {
            Self::Daily => 1,
            Self::Weekly => 7,
            Self::Monthly => 31,
        }
    }
}

impl fmt::Display for Period {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Period {
    type Err = InvalidPeriod;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "daily" => Ok(Self::Daily),
            "weekly" => Ok(Self::Weekly),
            "monthly" => Ok(Self::Monthly),
            _ => Err(InvalidPeriod(s.chars().take(32).collect())),
        }
    }
}

/// A `start_date` that does not begin a period.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StartDateError {
    #[error("invalid start_date {0:?}: expected YYYY-MM-DD")]
    Unparseable(String),
    #[error(
        "start_date {day} is a {weekday}; weekly periods start on Monday (use {before} or {after})"
    )]
    NotMonday {
        day: NaiveDate,
        weekday: chrono::Weekday,
        before: NaiveDate,
        after: NaiveDate,
    },
    #[error("start_date {0} is not the first of a month; monthly periods start on the 1st")]
    NotFirstOfMonth(NaiveDate),
}

/// The periods of one schedule: a length and the time zone its calendar is read in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grid {
    pub period: Period,
    pub timezone: Tz,
}

/// The first instant of the year-1 calendar day 0001-01-01 (a Monday) is index 0's reference.
const MONDAY_DAYS_FROM_CE: i32 = 1;

impl Grid {
    /// A grid of `period`s in `timezone`.
    pub fn new(period: Period, timezone: Tz) -> Self {
        Self { period, timezone }
    }

    /// The start of the period that begins on local day `day`; refused when `day` begins none.
    pub fn start_on(&self, day: NaiveDate) -> Result<DateTime<Utc>, StartDateError> {
        match self.period {
            Period::Daily => {}
            Period::Weekly if day.weekday() != chrono::Weekday::Mon => {
                let back = u64::from(day.weekday().num_days_from_monday());
                let before = day - Days::new(back);
                return Err(StartDateError::NotMonday {
                    day,
                    weekday: day.weekday(),
                    before,
                    after: before + Days::new(7),
                });
            }
            Period::Weekly => {}
            Period::Monthly if day.day() != 1 => return Err(StartDateError::NotFirstOfMonth(day)),
            Period::Monthly => {}
        }
        Ok(day_start(day, self.timezone))
    }

    /// Parses a `YYYY-MM-DD` start date and returns the start of the period it begins.
    pub fn parse_start_date(&self, value: &str) -> Result<DateTime<Utc>, StartDateError> {
        let value = value.trim();
        let day = (value.len() == 10)
            .then(|| NaiveDate::parse_from_str(value, "%Y-%m-%d").ok())
            .flatten()
            .ok_or_else(|| StartDateError::Unparseable(value.chars().take(32).collect()))?;
        self.start_on(day)
    }

    /// The start of the period containing `instant`.
    pub fn containing(&self, instant: DateTime<Utc>) -> DateTime<Utc> {
        self.start_of(self.index(instant))
    }

    /// The start of the period after the one containing `start`.
    pub fn next(&self, start: DateTime<Utc>) -> DateTime<Utc> {
        self.start_of(self.index(start) + 1)
    }

    /// The period's position on the local calendar: days, Monday-weeks or months since year 1.
    fn index(&self, instant: DateTime<Utc>) -> i64 {
        let day = instant.with_timezone(&self.timezone).date_naive();
        match self.period {
            Period::Daily => i64::from(day.num_days_from_ce()),
            Period::Weekly => i64::from(day.num_days_from_ce() - MONDAY_DAYS_FROM_CE).div_euclid(7),
            Period::Monthly => i64::from(day.year()) * 12 + i64::from(day.month0()),
        }
    }

    /// The first local day of the period at `index`.
    fn first_day(&self, index: i64) -> NaiveDate {
        let day = match self.period {
            Period::Daily => i32::try_from(index)
                .ok()
                .and_then(NaiveDate::from_num_days_from_ce_opt),
            Period::Weekly => i32::try_from(index * 7 + i64::from(MONDAY_DAYS_FROM_CE))
                .ok()
                .and_then(NaiveDate::from_num_days_from_ce_opt),
            Period::Monthly => i32::try_from(index.div_euclid(12))
                .ok()
                .and_then(|y| NaiveDate::from_ymd_opt(y, index.rem_euclid(12) as u32 + 1, 1)),
        };
        // Indexes come from real dates plus a few periods; chrono's range is ±262,000 years.
        day.unwrap_or(NaiveDate::MAX)
    }

    fn start_of(&self, index: i64) -> DateTime<Utc> {
        day_start(self.first_day(index), self.timezone)
    }

    /// The periods from `cursor` (the oldest not yet handled) that have closed `delay` before
    /// `now`, oldest first; beyond `max_catch_up` the oldest are skipped and reported.
    pub fn due(
        &self,
        cursor: DateTime<Utc>,
        now: DateTime<Utc>,
        delay: Duration,
        max_catch_up: u32,
    ) -> Due {
        // The period containing `now - delay` is still open (or in its delay): every period
        // before it is due.
        let horizon = self.index(now - delay);
        let first = self.index(cursor);
        let count = (horizon - first).max(0);
        let skip = (count - i64::from(max_catch_up)).max(0);
        let skipped = (skip > 0).then(|| Skipped {
            count: skip,
            oldest: self.start_of(first),
            newest: self.start_of(first + skip - 1),
        });
        let run = (first + skip..horizon)
            .map(|i| PeriodRange {
                start: self.start_of(i),
                end: self.start_of(i + 1),
            })
            .collect();
        Due { run, skipped }
    }
}

/// One period: `[start, end)` in UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeriodRange {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// Periods too old to catch up on: how many, and the first and last one's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Skipped {
    pub count: i64,
    pub oldest: DateTime<Utc>,
    pub newest: DateTime<Utc>,
}

/// What a schedule owes at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// The periods to export now, oldest first.
    pub run: Vec<PeriodRange>,
    /// Older periods beyond the catch-up limit, not exported.
    pub skipped: Option<Skipped>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn day(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    fn berlin(period: Period) -> Grid {
        Grid::new(period, chrono_tz::Europe::Berlin)
    }

    fn hours(start: DateTime<Utc>, end: DateTime<Utc>) -> i64 {
        (end - start).num_hours()
    }

    #[test]
    fn berlin_days_across_the_daylight_saving_changes_are_23_and_25_hours() {
        let g = berlin(Period::Daily);
        let spring = g.start_on(day("2026-03-29")).unwrap();
        assert_eq!(spring, utc("2026-03-28T23:00:00Z"));
        assert_eq!(g.next(spring), utc("2026-03-29T22:00:00Z"));
        assert_eq!(hours(spring, g.next(spring)), 23);
        let autumn = g.start_on(day("2026-10-25")).unwrap();
        assert_eq!(autumn, utc("2026-10-24T22:00:00Z"));
        assert_eq!(hours(autumn, g.next(autumn)), 25);
        let ordinary = g.start_on(day("2026-06-01")).unwrap();
        assert_eq!(hours(ordinary, g.next(ordinary)), 24);
    }

    #[test]
    fn weekly_periods_start_on_monday_midnight() {
        let g = berlin(Period::Weekly);
        // 2026-03-04 is a Wednesday; its week began on Monday 2026-03-02, local midnight.
        assert_eq!(
            g.containing(utc("2026-03-04T12:00:00Z")),
            utc("2026-03-01T23:00:00Z")
        );
        let week = g.start_on(day("2026-03-23")).unwrap();
        // The week with the spring change is an hour short.
        assert_eq!(hours(week, g.next(week)), 7 * 24 - 1);
        let err = g.start_on(day("2026-03-04")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "start_date 2026-03-04 is a Wed; weekly periods start on Monday (use 2026-03-02 or 2026-03-09)"
        );
    }

    #[test]
    fn monthly_periods_follow_the_calendar() {
        let g = Grid::new(Period::Monthly, Tz::UTC);
        let lengths: Vec<i64> = (1..=12)
            .map(|m| {
                let start = g
                    .start_on(NaiveDate::from_ymd_opt(2024, m, 1).unwrap())
                    .unwrap();
                (g.next(start) - start).num_days()
            })
            .collect();
        assert_eq!(lengths, [31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31]);
        let dec = g.start_on(day("2024-12-01")).unwrap();
        assert_eq!(g.next(dec), utc("2025-01-01T00:00:00Z"));
        assert!(matches!(
            g.start_on(day("2024-12-02")),
            Err(StartDateError::NotFirstOfMonth(_))
        ));
    }

    #[test]
    fn periods_are_contiguous_over_a_year_in_every_length() {
        for tz in [
            chrono_tz::Europe::Berlin,
            chrono_tz::America::Santiago,
            chrono_tz::Australia::Lord_Howe,
            Tz::UTC,
        ] {
            for period in [Period::Daily, Period::Weekly, Period::Monthly] {
                let g = Grid::new(period, tz);
                let mut start = g.containing(utc("2026-01-01T12:00:00Z"));
                let end = utc("2027-01-01T00:00:00Z");
                while start < end {
                    let next = g.next(start);
                    assert!(next > start, "{tz} {period}: {start} does not advance");
                    // The next period begins exactly where this one ends, and contains its own start.
                    assert_eq!(g.containing(next), next, "{tz} {period} at {next}");
                    assert_eq!(g.containing(next - Duration::seconds(1)), start);
                    start = next;
                }
            }
        }
    }

    #[test]
    fn a_skipped_local_midnight_starts_the_day_at_the_first_valid_instant() {
        // Santiago moved its clocks from 00:00 to 01:00 on 2026-09-06.
        let g = Grid::new(Period::Daily, chrono_tz::America::Santiago);
        let start = g.start_on(day("2026-09-06")).unwrap();
        assert_eq!(start, utc("2026-09-06T04:00:00Z"));
        assert_eq!(hours(start, g.next(start)), 23);
        assert_eq!(g.next(g.start_on(day("2026-09-05")).unwrap()), start);
    }

    #[test]
    fn due_periods_wait_for_the_delay_and_run_oldest_first() {
        let g = Grid::new(Period::Daily, Tz::UTC);
        let cursor = utc("2026-11-23T00:00:00Z");
        let delay = Duration::minutes(60);
        // 00:30: yesterday closed but its delay has not passed.
        let due = g.due(cursor, utc("2026-11-28T00:30:00Z"), delay, 31);
        assert_eq!(due.run.len(), 4);
        let due = g.due(cursor, utc("2026-11-28T01:00:00Z"), delay, 31);
        assert_eq!(due.run.len(), 5);
        assert_eq!(due.run[0].start, cursor);
        assert_eq!(due.run[4].end, utc("2026-11-28T00:00:00Z"));
        assert!(due.run.windows(2).all(|w| w[0].end == w[1].start));
        assert_eq!(due.skipped, None);
        // A cursor in the future owes nothing.
        assert!(
            g.due(
                utc("2026-12-01T00:00:00Z"),
                utc("2026-11-28T01:00:00Z"),
                delay,
                31
            )
            .run
            .is_empty()
        );
    }

    #[test]
    fn catch_up_is_capped_and_the_skipped_periods_are_reported() {
        let g = Grid::new(Period::Daily, Tz::UTC);
        let due = g.due(
            utc("2026-01-01T00:00:00Z"),
            utc("2026-03-01T12:00:00Z"),
            Duration::zero(),
            31,
        );
        // January and February: 59 days, of which the newest 31 run.
        assert_eq!(due.run.len(), 31);
        assert_eq!(due.run[0].start, utc("2026-01-29T00:00:00Z"));
        assert_eq!(due.run[30].end, utc("2026-03-01T00:00:00Z"));
        let skipped = due.skipped.unwrap();
        assert_eq!(skipped.count, 28);
        assert_eq!(skipped.oldest, utc("2026-01-01T00:00:00Z"));
        assert_eq!(skipped.newest, utc("2026-01-28T00:00:00Z"));
    }
}
