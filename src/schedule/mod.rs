//! Scheduled exports: a schedule turns each closed period (daily, weekly, monthly, in its time
//! zone) into exactly one export, enqueued by the scheduler that runs in the worker processes.
//!
//! `period` is the calendar arithmetic (pure), `storage` every SQL statement on the schedule
//! tables, `owner` the re-check of the owner's rights at each run, `scheduler` the tick, `ticks` the
//! kind of job that runs it once per `schedule.interval_seconds` on the job runner.

pub mod owner;
pub mod period;
pub mod scheduler;
pub mod storage;
pub mod ticks;

use chrono::{DateTime, Duration, Utc};
use chrono_tz::Tz;
use uuid::Uuid;

pub use period::{Due, Grid, Period, PeriodRange, Skipped, StartDateError};
pub use scheduler::{BeforeCommit, Scheduler, TickReport};
pub use ticks::ScheduleTicks;

use crate::domain::{
    CallbackUrl, Compression, DateRange, EmailAddress, ExportFormat, ExportScope, Namespace,
    Performer, RepositoryName,
};
use crate::queue::NewExport;

/// Longest wait after a period closes before its export starts (a week).
pub const MAX_DELAY_MINUTES: u32 = 7 * 24 * 60;

/// A validated schedule, ready to store.
#[derive(Debug, Clone)]
pub struct NewSchedule {
    pub owner: String,
    pub scope: ExportScope,
    pub namespace: Namespace,
    pub repository: Option<RepositoryName>,
    pub grid: Grid,
    /// The start of the first period to export.
    pub first_period_start: DateTime<Utc>,
    pub delay_minutes: u32,
    pub format: ExportFormat,
    pub compression: Compression,
    pub performer: Option<Performer>,
    pub kinds: Vec<String>,
    pub callback_url: Option<CallbackUrl>,
    pub callback_email: Option<EmailAddress>,
}

impl NewSchedule {
    /// When the first period is due: its end plus the delay.
    pub fn first_run_at(&self) -> DateTime<Utc> {
        self.grid.next(self.first_period_start) + Duration::minutes(i64::from(self.delay_minutes))
    }
}

/// A stored schedule, as every reader sees it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ScheduleRow {
    pub id: Uuid,
    pub owner: String,
    pub scope: String,
    pub namespace: String,
    pub repository: Option<String>,
    pub period: String,
    pub timezone: String,
    pub first_period_start: DateTime<Utc>,
    pub delay_minutes: i32,
    pub format: String,
    pub compression: String,
    pub performer: Option<String>,
    pub kinds: Vec<String>,
    pub callback_url: Option<String>,
    pub callback_email: Option<String>,
    pub state: String,
    pub paused_reason: Option<String>,
    /// Why the due runs wait although the schedule is active (Quay refuses the service token).
    pub blocked_reason: Option<String>,
    pub blocked_since: Option<DateTime<Utc>>,
    pub next_period_start: DateTime<Utc>,
    pub next_run_at: DateTime<Utc>,
    pub skipped_periods: i64,
    pub oldest_skipped_period: Option<DateTime<Utc>>,
    pub newest_skipped_period: Option<DateTime<Utc>>,
    pub last_run_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A stored value that no longer parses (only a manual edit of the table can do that).
#[derive(Debug, Clone, thiserror::Error)]
#[error("schedule {id} holds an invalid {field}: {detail}")]
pub struct CorruptSchedule {
    id: Uuid,
    field: &'static str,
    detail: String,
}

impl ScheduleRow {
    fn corrupt(&self, field: &'static str, detail: impl ToString) -> CorruptSchedule {
        CorruptSchedule {
            id: self.id,
            field,
            detail: detail.to_string(),
        }
    }

    /// True while the scheduler runs it.
    pub fn is_active(&self) -> bool {
        self.state == "active"
    }

    /// The schedule's time zone.
    pub fn timezone(&self) -> Result<Tz, CorruptSchedule> {
        self.timezone
            .parse()
            .map_err(|_| self.corrupt("timezone", &self.timezone))
    }

    /// The schedule's periods.
    pub fn grid(&self) -> Result<Grid, CorruptSchedule> {
        let period: Period = self.period.parse().map_err(|e| self.corrupt("period", e))?;
        Ok(Grid::new(period, self.timezone()?))
    }

    /// The wait after a period closes.
    pub fn delay(&self) -> Duration {
        Duration::minutes(i64::from(self.delay_minutes.max(0)))
    }

    /// How far behind the scheduler is with this schedule at `now`: zero when nothing is overdue.
    pub fn lag_seconds(&self, now: DateTime<Utc>) -> i64 {
        if !self.is_active() {
            return 0;
        }
        (now - self.next_run_at).num_seconds().max(0)
    }

    /// The export of `period`, as if the owner had requested it through the API.
    pub fn export_for(
        &self,
        period: PeriodRange,
        max_attempts: u32,
    ) -> Result<NewExport, CorruptSchedule> {
        let repository = match &self.repository {
            Some(r) => Some(RepositoryName::parse(r).map_err(|e| self.corrupt("repository", e))?),
            None => None,
        };
        let performer = match &self.performer {
            Some(p) => Some(Performer::parse(p).map_err(|e| self.corrupt("performer", e))?),
            None => None,
        };
        let callback_email = match &self.callback_email {
            Some(e) => Some(EmailAddress::parse(e).map_err(|e| self.corrupt("callback_email", e))?),
            None => None,
        };
        let callback_url = match &self.callback_url {
            Some(u) => {
                Some(CallbackUrl::from_stored(u).map_err(|e| self.corrupt("callback_url", e))?)
            }
            None => None,
        };
        Ok(NewExport {
            scope: self.scope.parse().map_err(|e| self.corrupt("scope", e))?,
            namespace: Namespace::parse(&self.namespace)
                .map_err(|e| self.corrupt("namespace", e))?,
            repository,
            requested_by: self.owner.clone(),
            range: DateRange {
                start: period.start,
                end: period.end,
                timezone: self.timezone()?,
            },
            format: self.format.parse().map_err(|e| self.corrupt("format", e))?,
            compression: self
                .compression
                .parse()
                .map_err(|e| self.corrupt("compression", e))?,
            callback_url,
            callback_email,
            idempotency_key: None,
            max_attempts,
            performer,
            kinds: self.kinds.clone(),
        })
    }
}
