//! Archive encoders: turn a stream of log entries into the export file, incrementally.
//!
//! The [`ArchiveWriter`] fills a byte buffer that the pipeline drains part by part while it keeps
//! encoding, so memory stays bounded whatever the export size and no copy of the whole archive
//! ever exists.
//!
//! Decisions (also in the README):
//! - A gzip archive is served as `application/gzip` (file name `*.json.gz` etc.) *without*
//!   `Content-Encoding: gzip`: clients then save exactly the bytes that were stored instead of
//!   transparently decompressing them, and the reported size matches the file.
//! - CSV follows RFC 4180 to the letter: CRLF line ends, fields quoted when they contain `,`, `"`,
//!   CR or LF, quotes doubled. Values are written faithfully, without the `'` prefix some tools add
//!   against spreadsheet formula injection: the archive is an audit record and must not alter data,
//!   and no column can start with `=`, `+`, `-` or `@` from user input anyway (datetime starts with a
//!   digit, metadata is a JSON object starting with `{`, names are validated registry names).

pub mod chain;
mod csv;
pub mod digest;
mod json;
pub mod manifest;
mod sink;
pub mod timestamp;
pub mod verify;
pub mod verify_chain;
mod writer;

pub use digest::ResumableSha256;
pub use manifest::{Manifest, ManifestKey, PublicKey};
pub use writer::{ArchiveDetails, ArchiveWriter};

use crate::domain::{Compression, ExportFormat};

/// The archive's file extension, e.g. `json`, `csv.gz`.
pub fn file_extension(format: ExportFormat, compression: Compression) -> String {
    match compression {
        Compression::None => format.extension().to_owned(),
        Compression::Gzip => format!("{}.gz", format.extension()),
        Compression::Zstd => format!("{}.zst", format.extension()),
    }
}

/// The `Content-Type` the archive is stored and served with (never with a `Content-Encoding`).
pub fn content_type(format: ExportFormat, compression: Compression) -> &'static str {
    match compression {
        Compression::None => format.content_type(),
        Compression::Gzip => "application/gzip",
        Compression::Zstd => "application/zstd",
    }
}

/// The `Content-Type` for a stored file, guessed from its extension (local storage serves files
/// without a metadata store).
pub fn content_type_for_file_name(name: &str) -> &'static str {
    if name.ends_with(".gz") {
        "application/gzip"
    } else if name.ends_with(".zst") {
        "application/zstd"
    } else if name.ends_with(".ndjson") {
        ExportFormat::Ndjson.content_type()
    } else if name.ends_with(".json") {
        ExportFormat::Json.content_type()
    } else if name.ends_with(".csv") {
        ExportFormat::Csv.content_type()
    } else {
        "application/octet-stream"
    }
}

#[cfg(test)]
mod tests;
