//! Domain values, each parsed once at the edge so nothing downstream re-validates strings.

mod callback_url;
mod date_range;
mod email;
mod export;
mod log_entry;
mod log_filter;
mod names;
mod net;

pub use callback_url::{CallbackUrl, CallbackUrlError};
pub use date_range::{DateRange, DateRangeError, RangeBound, day_start, parse_timezone};
pub use email::{EmailAddress, EmailAddressError};
pub use export::{Compression, ExportFormat, ExportId, ExportScope, ParseEnumError};
pub use log_entry::{
    LogEntry, LogWithNamespace, Metadata, PerformerInfo, push_quay_datetime, quay_datetime,
};
pub use log_filter::{LogFilter, LogFilterError};
pub use names::{InvalidName, Namespace, Performer, RepositoryName};
pub use net::{AllowList, SsrfError, parse_net};
