//! Reading a claimed row back into the domain types. A stored value that no longer parses (a
//! row edited by hand, say) makes the job invalid, naming the column: it is never run with a
//! default, which could widen it (a repository export over the whole namespace, a performer
//! filter dropped) or change what it writes (another format).

use std::error::Error;

use chrono_tz::Tz;

use super::{ClaimedJob, ExportRow};
use crate::domain::{
    DateRange, DateRangeError, ExportId, ExportScope, Namespace, Performer, RepositoryName,
};

/// A stored column whose value does not parse into its domain type.
#[derive(Debug, thiserror::Error)]
#[error("the export's stored column {column} does not parse")]
pub struct UnreadableColumn {
    /// The column's name in `export_jobs`.
    pub column: &'static str,
    #[source]
    pub cause: Box<dyn Error + Send + Sync>,
}

impl UnreadableColumn {
    fn new(column: &'static str, cause: impl Into<Box<dyn Error + Send + Sync>>) -> Self {
        Self {
            column,
            cause: cause.into(),
        }
    }

    /// A `map_err` adapter naming `column`.
    fn of<E: Error + Send + Sync + 'static>(column: &'static str) -> impl FnOnce(E) -> Self {
        move |cause| Self::new(column, cause)
    }
}

/// A claimed attempt: the fence its writes carry, and the stored request read into the domain
/// types. A row that does not parse is claimed all the same, so that the runner ends it as
/// invalid through its fenced finish (which schedules the export's one notice).
#[derive(Debug)]
pub struct Claim {
    pub id: ExportId,
    /// Fences this attempt's writes.
    pub attempt: i32,
    pub job: Result<ClaimedJob, UnreadableColumn>,
}

impl From<&ExportRow> for Claim {
    fn from(row: &ExportRow) -> Self {
        Self {
            id: ExportId(row.id),
            attempt: row.attempt,
            job: ClaimedJob::try_from(row),
        }
    }
}

impl TryFrom<&ExportRow> for ClaimedJob {
    type Error = UnreadableColumn;

    fn try_from(row: &ExportRow) -> Result<Self, Self::Error> {
        let scope: ExportScope = row.scope.parse().map_err(UnreadableColumn::of("scope"))?;
        let repository = row
            .repository
            .as_deref()
            .map(RepositoryName::parse)
            .transpose()
            .map_err(UnreadableColumn::of("repository"))?;
        if scope == ExportScope::Repository && repository.is_none() {
            return Err(UnreadableColumn::new(
                "repository",
                "it is empty, but the export is of one repository",
            ));
        }
        Ok(Self {
            id: ExportId(row.id),
            attempt: row.attempt,
            attempts_forgiven: row.attempts_forgiven,
            max_attempts: row.max_attempts,
            scope,
            namespace: Namespace::parse(&row.namespace)
                .map_err(UnreadableColumn::of("namespace"))?,
            repository,
            requested_by: row.requested_by.clone(),
            range: row.range()?,
            format: row.format.parse().map_err(UnreadableColumn::of("format"))?,
            compression: row
                .compression
                .parse()
                .map_err(UnreadableColumn::of("compression"))?,
            performer: row
                .performer
                .as_deref()
                .map(Performer::parse)
                .transpose()
                .map_err(UnreadableColumn::of("performer"))?,
            kinds: row.kinds.clone(),
            checkpoint: row.checkpoint.clone(),
        })
    }
}

impl ExportRow {
    /// The stored range with its timezone.
    pub fn range(&self) -> Result<DateRange, UnreadableColumn> {
        if self.end_time < self.start_time {
            return Err(UnreadableColumn::new(
                "end_time",
                format!("it is before start_time ({})", self.start_time),
            ));
        }
        // Not `parse_timezone`, which reads an empty value as UTC: what was stored is a name.
        let timezone: Tz = self.timezone.parse().map_err(|_| {
            UnreadableColumn::new(
                "timezone",
                DateRangeError::Timezone(self.timezone.chars().take(64).collect()),
            )
        })?;
        Ok(DateRange {
            start: self.start_time,
            end: self.end_time,
            timezone,
        })
    }

    /// The stored range for labelling its days (the status document, the notice). When the
    /// stored timezone does not parse, the days are labelled in UTC: the instants are exact, and
    /// the export itself ended invalid with an error naming the column (see [`Self::range`]).
    pub fn labelled_range(&self) -> DateRange {
        self.range().unwrap_or(DateRange {
            start: self.start_time,
            end: self.end_time,
            timezone: Tz::UTC,
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use uuid::Uuid;

    use super::*;

    fn row() -> ExportRow {
        let at = Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap();
        ExportRow {
            id: Uuid::new_v4(),
            scope: "repository".into(),
            namespace: "acme".into(),
            repository: Some("web".into()),
            requested_by: "alice".into(),
            start_time: at,
            end_time: at + chrono::Duration::days(31),
            timezone: "Europe/Berlin".into(),
            format: "csv".into(),
            compression: "gzip".into(),
            callback_url: None,
            callback_email: None,
            state: "running".into(),
            attempt: 1,
            attempts_forgiven: 0,
            max_attempts: 3,
            run_at: at,
            cancel_requested: false,
            logs_exported: 0,
            logs_skipped: 0,
            bytes_written: 0,
            object_key: None,
            download_url: None,
            url_expires_at: None,
            object_deleted_at: None,
            last_error: None,
            previous_error: None,
            notify_state: "none".into(),
            notify_attempts: 0,
            notify_run_at: None,
            notify_last_error: None,
            notified_at: None,
            webhook_id: "msg_1".into(),
            created_at: at,
            updated_at: at,
            started_at: None,
            finished_at: None,
            performer: Some("myorg+deploy_bot".into()),
            kinds: vec!["push_repo".into()],
            slices_total: 0,
            slices_done: 0,
            searches_running: 0,
            checkpoint: None,
            sha256: None,
            manifest: None,
            schedule_id: None,
        }
    }

    fn column_of(row: &ExportRow) -> &'static str {
        ClaimedJob::try_from(row).expect_err("refused").column
    }

    #[test]
    fn a_sound_row_reads_into_the_domain_types() {
        let job = ClaimedJob::try_from(&row()).expect("parses");
        assert_eq!(job.repository.as_ref().map(|r| r.as_str()), Some("web"));
        assert_eq!(
            job.performer.as_ref().map(|p| p.as_str()),
            Some("myorg+deploy_bot")
        );
        assert_eq!(job.format, crate::domain::ExportFormat::Csv);
        assert_eq!(job.range.timezone, chrono_tz::Europe::Berlin);
    }

    #[test]
    fn each_unreadable_column_is_named_never_defaulted() {
        type Corruption = (&'static str, fn(&mut ExportRow));
        let cases: [Corruption; 10] = [
            ("scope", |r| r.scope = "galaxy".into()),
            ("namespace", |r| r.namespace = "Acme Corp".into()),
            ("repository", |r| r.repository = Some("not a repo!!".into())),
            ("repository", |r| r.repository = None),
            ("performer", |r| r.performer = Some("Bob Smith".into())),
            ("format", |r| r.format = "xml".into()),
            ("compression", |r| r.compression = "rar".into()),
            ("timezone", |r| r.timezone = "Mars/Olympus".into()),
            ("timezone", |r| r.timezone = String::new()),
            ("end_time", |r| {
                r.end_time = r.start_time - chrono::Duration::days(1)
            }),
        ];
        for (column, corrupt) in cases {
            let mut bad = row();
            corrupt(&mut bad);
            assert_eq!(column_of(&bad), column);
        }
    }

    #[test]
    fn the_error_names_the_column_and_the_values_problem() {
        let mut bad = row();
        bad.format = "xml".into();
        let error = anyhow::Error::new(ClaimedJob::try_from(&bad).unwrap_err());
        let text = format!("{error:#}");
        assert!(text.contains("column format"), "{text}");
        assert!(text.contains("\"xml\"") && text.contains("json"), "{text}");
    }

    #[test]
    fn an_organization_export_needs_no_repository() {
        let mut org = row();
        org.scope = "organization".into();
        org.repository = None;
        assert!(ClaimedJob::try_from(&org).is_ok());
    }

    #[test]
    fn labels_fall_back_to_utc_only_for_an_unreadable_timezone() {
        let mut bad = row();
        assert_eq!(bad.labelled_range().timezone, chrono_tz::Europe::Berlin);
        bad.timezone = "Mars/Olympus".into();
        assert_eq!(bad.labelled_range().timezone, Tz::UTC);
        assert_eq!(bad.labelled_range().start, bad.start_time);
    }
}
