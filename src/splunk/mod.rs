//! Everything that talks to Splunk: the REST client, the streaming export, search jobs, the safe
//! query builder and the mapping of result rows to the registry's log objects.
//!
//! The export pipeline uses [`SplunkClient::export`] (one streaming request, rows as they arrive)
//! and [`map_row`]; the read side uses search jobs ([`SplunkClient::create_job`],
//! [`SplunkClient::search_rows`]). Every query is built from [`SearchFilters`].

mod avatar;
mod client;
mod error;
mod export_stream;
mod fields;
mod lines;
mod mapper;
mod query;
mod quota;
mod raw_event;
mod row;
mod scan;
mod search_job;
mod timestamp;

pub use avatar::{AVATAR_COLORS, avatar};
pub use client::{RetryPolicy, SplunkClient, install_crypto_provider};
pub use error::{SplunkError, splunk_message};
pub use export_stream::{ExportStream, MAX_LINE_BYTES};
pub use mapper::{SkipReason, map_event_json, map_row, map_row_text, map_row_with};
pub use query::{BuiltQuery, QueryError, SearchFilters, SortOrder, StatsField, quote_value};
pub use quota::{LOCAL_HOLD, SearchPermit, SearchQuota};
pub use row::{Row, RowBatch};
pub use search_job::{JobStatus, MAX_PAGE, SearchJob};
pub use timestamp::parse_timestamp;
