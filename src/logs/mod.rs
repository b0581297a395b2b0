//! The read side: Quay-compatible `logs` and `aggregatelogs` listings served from Splunk.
//!
//! [`LogsService::lookup`] pages through a namespace's (or, for superusers, the registry's)
//! events newest first with an encrypted keyset cursor ([`page_token`], [`walk`]); each page
//! costs one bounded Splunk search. [`LogsService::aggregate`] counts events per kind and day
//! with one `stats count by` search. The eight endpoints live in `api::logs`; this module
//! does not depend on the HTTP layer.

mod aggregate;
pub mod kinds;
mod lookup;
pub mod page_token;
pub mod walk;

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

use crate::config::Config;
use crate::domain::{DateRange, LogEntry, Namespace, Performer, RepositoryName};
use crate::splunk::{
    BuiltQuery, QueryError, RetryPolicy, Row, SearchFilters, SplunkClient, SplunkError,
};

pub use aggregate::AggregateCount;
pub use lookup::LogsPage;
pub use page_token::{TokenError, TokenKey};

/// What a listing selects. Every query but a superuser's carries a namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogQuery {
    /// Registry-wide (superuser endpoints): no namespace filter, entries carry `namespace`.
    pub superuser: bool,
    pub namespace: Option<Namespace>,
    pub repository: Option<RepositoryName>,
    pub performer: Option<Performer>,
    /// Kinds to list (any of them); empty for all. Sorted and deduplicated by [`LogQuery::new`].
    pub kinds: Vec<String>,
    pub range: DateRange,
}

/// Why a listing has no results to show.
#[derive(Debug, thiserror::Error)]
pub enum LogsError {
    /// The `next_page` token was refused (400).
    #[error(transparent)]
    BadToken(#[from] TokenError),
    /// The filters cannot be searched (400).
    #[error("invalid filter: {0}")]
    BadQuery(#[from] QueryError),
    /// Splunk could not answer; the listing says `search_unavailable`.
    #[error("{message}")]
    Unavailable {
        /// Metric label: `not_configured`, `unauthorized`, `connection`, `timeout`, `http`, ...
        reason: &'static str,
        message: String,
    },
}

/// Reads logs from Splunk for the listing endpoints.
#[derive(Debug)]
pub struct LogsService {
    client: SplunkClient,
    key: TokenKey,
    page_size: usize,
    deadline: Duration,
}

impl LogQuery {
    /// A query; `kinds` are sorted and deduplicated so equal filters bind tokens equally.
    pub fn new(
        superuser: bool,
        namespace: Option<Namespace>,
        repository: Option<RepositoryName>,
        performer: Option<Performer>,
        mut kinds: Vec<String>,
        range: DateRange,
    ) -> Self {
        kinds.sort();
        kinds.dedup();
        Self {
            superuser,
            namespace,
            repository,
            performer,
            kinds,
            range,
        }
    }

    fn binding(&self) -> page_token::QueryBinding<'_> {
        page_token::QueryBinding {
            superuser: self.superuser,
            namespace: self.namespace.as_ref(),
            repository: self.repository.as_ref(),
            performer: self.performer.as_ref(),
            kinds: &self.kinds,
            range: &self.range,
        }
    }

    /// Splunk filters over `[range.start, end)`. One kind is a `kind=` term; several become
    /// `kind!=` exclusions of every other known kind (the SPL subset has no `OR`).
    fn filters(&self, client: &SplunkClient, end: DateTime<Utc>) -> SearchFilters {
        let mut f = client.filters(self.range.start, end.max(self.range.start));
        f.namespace = self.namespace.clone();
        f.repository = self.repository.clone();
        f.performer = self.performer.clone();
        match self.kinds.len() {
            0 => {}
            1 => f.kinds = self.kinds.clone(),
            _ => f.excluded_kinds = kinds::exclusions_for(&self.kinds),
        }
        f
    }

    /// Defence in depth and post-filter: whether a mapped entry belongs in this listing.
    fn admits(&self, e: &LogEntry<'_>) -> bool {
        if let Some(ns) = &self.namespace
            && e.namespace.as_deref() != Some(ns.as_str())
        {
            crate::metrics::METRICS.incr("logexport_logs_rows_skipped_total", "namespace");
            tracing::warn!(namespace = %ns, "Splunk returned an event of another namespace; dropped");
            return false;
        }
        if let Some(repo) = &self.repository
            && e.repository.as_deref() != Some(repo.as_str())
        {
            return false;
        }
        self.kinds.is_empty() || self.kinds.iter().any(|k| *k == e.kind)
    }
}

impl LogsService {
    /// A service for the configured Splunk; `Err` when the `[splunk]` section is unusable.
    pub fn new(config: &Config, pool: &PgPool) -> Result<Self, SplunkError> {
        // Interactive listings retry briefly: the caller is waiting, and the deadline bounds all.
        let client = SplunkClient::from_config(config, pool)?.with_retry_policy(RetryPolicy {
            max_retries: 2,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(1),
        });
        Ok(Self {
            client,
            key: TokenKey::from_secret(&config.logs.page_token_key),
            page_size: config.logs.page_size.max(1) as usize,
            deadline: Duration::from_secs(config.splunk.search_timeout_seconds.max(1)),
        })
    }

    /// Runs one search job and reads at most `max_rows` rows, within the search deadline. When
    /// the deadline passes or the caller goes away, the job is dropped, which cancels it on
    /// Splunk.
    async fn run(&self, query: &BuiltQuery, max_rows: u64) -> Result<Vec<Row>, LogsError> {
        let started = std::time::Instant::now();
        let result =
            tokio::time::timeout(self.deadline, self.client.search_rows(query, max_rows)).await;
        let outcome = match result {
            Ok(Ok(rows)) => Ok(rows),
            Ok(Err(e)) => Err(unavailable(&e)),
            Err(_) => Err(LogsError::Unavailable {
                reason: "timeout",
                message: format!(
                    "Splunk did not answer within {}s (splunk.search_timeout_seconds); the search was cancelled",
                    self.deadline.as_secs()
                ),
            }),
        };
        if let Err(LogsError::Unavailable { reason, message }) = &outcome {
            crate::metrics::METRICS.incr("logexport_search_unavailable_total", reason);
            tracing::warn!(reason, error = %message, elapsed_ms = started.elapsed().as_millis() as u64, "log search unavailable");
        }
        outcome
    }
}

/// Classifies a Splunk failure for the `search_unavailable` answer and its metric.
fn unavailable(e: &SplunkError) -> LogsError {
    let reason = match e {
        SplunkError::Unauthorized { .. } => "unauthorized",
        SplunkError::Connection { .. } => "connection",
        SplunkError::SearchTimeout { .. } => "timeout",
        SplunkError::Http { .. } => "http",
        SplunkError::Busy { .. } => "busy",
        SplunkError::SearchFailed { .. } | SplunkError::BadSearch { .. } => "search_failed",
        SplunkError::Config(_) => "not_configured",
        SplunkError::Database { .. } => "database",
        _ => "protocol",
    };
    LogsError::Unavailable {
        reason,
        message: e.to_string(),
    }
}
