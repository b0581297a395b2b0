//! Builds SPL from structured filters; user input is only ever a quoted, escaped value.

use std::fmt::Write as _;

use chrono::{DateTime, Utc};

use crate::domain::{Namespace, Performer, RepositoryName};

/// What to search for. Names are validated newtypes; `index`, `sourcetype` and kinds are checked
/// when the query is built.
///
/// Included `kinds`: the SPL subset this service relies on (and the emulator implements) has no
/// `OR`, so at most ONE included kind is accepted (it becomes a `kind="…"` term); more are refused
/// with [`QueryError::SeveralKinds`] rather than filtered after fetching, because a post-filter
/// would make `| head N` and result offsets count the wrong rows. Run one query per kind instead.
/// `excluded_kinds` (Quay's `filter_kinds`) may hold any number: each is a `kind!="…"` term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SearchFilters {
    pub index: String,
    pub sourcetype: Option<String>,
    pub namespace: Option<Namespace>,
    pub repository: Option<RepositoryName>,
    pub performer: Option<Performer>,
    pub kinds: Vec<String>,
    pub excluded_kinds: Vec<String>,
    /// Inclusive start of the time range.
    pub start: DateTime<Utc>,
    /// Exclusive end of the time range.
    pub end: DateTime<Utc>,
}

/// A search ready to send: the SPL plus the time range as epoch-second request parameters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuiltQuery {
    /// The SPL text, starting with `search`.
    pub spl: String,
    /// `earliest_time` request parameter (inclusive), epoch seconds.
    pub earliest_time: String,
    /// `latest_time` request parameter (exclusive), epoch seconds.
    pub latest_time: String,
}

/// Why a query was not built; nothing is sent to Splunk.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// `*` would turn a literal value into a wildcard pattern.
    #[error("the {field} filter contains '*', which Splunk would treat as a wildcard")]
    Wildcard { field: &'static str },
    /// Control characters (newlines included) have no place in a search value.
    #[error("the {field} filter contains a control character")]
    ControlCharacter { field: &'static str },
    /// A value broke the syntax its field requires.
    #[error("invalid {field} {value:?}: {why}")]
    Invalid {
        field: &'static str,
        value: String,
        why: &'static str,
    },
    /// See [`SearchFilters`]: the SPL subset has no `OR`.
    #[error("at most one included kind can be searched at once, got {0}")]
    SeveralKinds(usize),
    /// The range ends before it starts.
    #[error("the time range ends before it starts")]
    ReversedRange,
}

/// Order of results by event time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SortOrder {
    NewestFirst,
    OldestFirst,
}

/// A field `stats count by` can group on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatsField {
    Kind,
    /// The event's calendar day `YYYY-MM-DD` (in the search's time zone, UTC for the emulator).
    Day,
    Namespace,
    Repository,
    Performer,
}

impl StatsField {
    fn name(self) -> &'static str {
        match self {
            Self::Kind => "kind",
            Self::Day => "day",
            Self::Namespace => "account",
            Self::Repository => "repository",
            Self::Performer => "performer",
        }
    }
}

impl SearchFilters {
    /// Filters on `index` over `[start, end)` with nothing else set.
    pub fn new(index: impl Into<String>, start: DateTime<Utc>, end: DateTime<Utc>) -> Self {
        Self {
            index: index.into(),
            sourcetype: None,
            namespace: None,
            repository: None,
            performer: None,
            kinds: Vec::new(),
            excluded_kinds: Vec::new(),
            start,
            end,
        }
    }

    /// The SPL and time parameters for these filters.
    pub fn build(&self) -> Result<BuiltQuery, QueryError> {
        if self.end < self.start {
            return Err(QueryError::ReversedRange);
        }
        check_index(&self.index)?;
        let mut spl = String::from("search");
        push_term(&mut spl, "index", "=", &self.index)?;
        if let Some(st) = &self.sourcetype {
            check_sourcetype(st)?;
            push_term(&mut spl, "sourcetype", "=", st)?;
        }
        if let Some(ns) = &self.namespace {
            push_term(&mut spl, "account", "=", ns.as_str())?;
        }
        if let Some(repo) = &self.repository {
            push_term(&mut spl, "repository", "=", repo.as_str())?;
        }
        if let Some(p) = &self.performer {
            push_term(&mut spl, "performer", "=", p.as_str())?;
        }
        match self.kinds.as_slice() {
            [] => {}
            [kind] => {
                check_kind(kind)?;
                push_term(&mut spl, "kind", "=", kind)?;
            }
            several => return Err(QueryError::SeveralKinds(several.len())),
        }
        for kind in &self.excluded_kinds {
            check_kind(kind)?;
            push_term(&mut spl, "kind", "!=", kind)?;
        }
        Ok(BuiltQuery {
            spl,
            earliest_time: epoch_param(&self.start),
            latest_time: epoch_param(&self.end),
        })
    }
}

impl BuiltQuery {
    /// Appends `| sort 0 [-]_time` (0 = no limit on the number of sorted rows).
    pub fn sort_by_time(mut self, order: SortOrder) -> Self {
        let sign = match order {
            SortOrder::NewestFirst => "-",
            SortOrder::OldestFirst => "",
        };
        let _ = write!(self.spl, " | sort 0 {sign}_time");
        self
    }

    /// Appends `| head N`.
    pub fn head(mut self, n: u64) -> Self {
        let _ = write!(self.spl, " | head {n}");
        self
    }

    /// Appends `| stats count by a, b` (with the `eval` that defines `day` when asked for).
    pub fn count_by(mut self, fields: &[StatsField]) -> Self {
        if fields.contains(&StatsField::Day) {
            self.spl
                .push_str(r#" | eval day=strftime(_time, "%Y-%m-%d")"#);
        }
        self.spl.push_str(" | stats count");
        for (i, f) in fields.iter().enumerate() {
            self.spl.push_str(if i == 0 { " by " } else { ", " });
            self.spl.push_str(f.name());
        }
        self
    }
}

/// Quotes and escapes a search value: `\` becomes `\\` first, then `"` becomes `\"`. Values with
/// `*` or control characters are refused, never sent.
pub fn quote_value(field: &'static str, value: &str) -> Result<String, QueryError> {
    if value.contains('*') {
        return Err(QueryError::Wildcard { field });
    }
    if value.chars().any(char::is_control) {
        return Err(QueryError::ControlCharacter { field });
    }
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    out.push_str(&value.replace('\\', "\\\\").replace('"', "\\\""));
    out.push('"');
    Ok(out)
}

/// Appends ` field<op>"value"`; `field` and `op` come from code, never from input.
pub(crate) fn push_term(
    spl: &mut String,
    field: &'static str,
    op: &'static str,
    value: &str,
) -> Result<(), QueryError> {
    let quoted = quote_value(field, value)?;
    spl.push(' ');
    spl.push_str(field);
    spl.push_str(op);
    spl.push_str(&quoted);
    Ok(())
}

/// Epoch seconds, with microseconds only when the instant has a fraction.
pub(crate) fn epoch_param(t: &DateTime<Utc>) -> String {
    let micros = t.timestamp_subsec_micros();
    if t.timestamp_subsec_nanos() == 0 {
        t.timestamp().to_string()
    } else {
        format!("{}.{micros:06}", t.timestamp())
    }
}

fn check_index(index: &str) -> Result<(), QueryError> {
    let ok = !index.is_empty()
        && index.len() <= 80
        && index
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        && !index.starts_with('-');
    ok.then_some(()).ok_or_else(|| QueryError::Invalid {
        field: "index",
        value: index.to_owned(),
        why: "Splunk index names are 1-80 lowercase letters, digits, '_' and '-'",
    })
}

fn check_sourcetype(st: &str) -> Result<(), QueryError> {
    let ok = !st.is_empty()
        && st.len() <= 255
        && st
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.' | b':' | b'/'));
    ok.then_some(()).ok_or_else(|| QueryError::Invalid {
        field: "sourcetype",
        value: st.to_owned(),
        why: "expected letters, digits, '_', '-', '.', ':' or '/'",
    })
}

fn check_kind(kind: &str) -> Result<(), QueryError> {
    let ok = !kind.is_empty()
        && kind.len() <= 64
        && kind
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    ok.then_some(()).ok_or_else(|| QueryError::Invalid {
        field: "kind",
        value: kind.to_owned(),
        why: "log kinds are lowercase letters, digits and '_'",
    })
}

#[cfg(test)]
#[path = "query_tests.rs"]
mod tests;
