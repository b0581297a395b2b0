//! [`ArchiveWriter`]: the incremental encoder for the three formats.

use std::io;

use bytes::Bytes;
use serde::Serialize;

use super::csv;
use super::json;
use super::sink::Sink;
use crate::domain::{Compression, ExportFormat, ExportId, LogEntry};

/// What the JSON archive's header says about the export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ArchiveDetails {
    #[serde(skip)]
    pub export_id: ExportId,
    /// RFC 2822, as [`crate::domain::quay_datetime`] formats it.
    pub start_time: String,
    /// RFC 2822, as [`crate::domain::quay_datetime`] formats it.
    pub end_time: String,
    pub namespace: String,
    pub repository: Option<String>,
    /// The export's filter, when it has one (unfiltered archives keep Quay's details).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub performer: Option<String>,
    #[serde(rename = "kind", skip_serializing_if = "Vec::is_empty")]
    pub kinds: Vec<String>,
}

/// Encodes logs into an archive incrementally; the caller drains the bytes as they become ready.
pub struct ArchiveWriter {
    format: ExportFormat,
    sink: Sink,
    logs_written: u64,
}

impl ArchiveWriter {
    /// Starts an archive, writing its header (the JSON opening or the CSV header row).
    pub fn new(format: ExportFormat, compression: Compression, details: &ArchiveDetails) -> Self {
        let sink = match compression {
            Compression::None => Sink::plain(),
            Compression::Gzip => Sink::gzip(),
            Compression::Zstd => Sink::zstd(),
        };
        let mut writer = Self {
            format,
            sink,
            logs_written: 0,
        };
        writer.write_header(details);
        writer
    }

    /// Continues an archive whose first `logs_written` logs (and header) an earlier attempt
    /// already stored, up to a [`ArchiveWriter::end_member`].
    pub fn resume(format: ExportFormat, compression: Compression, logs_written: u64) -> Self {
        let sink = match compression {
            Compression::None => Sink::plain(),
            Compression::Gzip => Sink::gzip(),
            Compression::Zstd => Sink::zstd(),
        };
        Self {
            format,
            sink,
            logs_written,
        }
    }

    /// Takes every byte so far as a self-contained piece (a gzip member ends here), so the
    /// archive can later be continued from this point by [`ArchiveWriter::resume`].
    pub fn end_member(&mut self) -> io::Result<Bytes> {
        self.sink.end_member().map(Bytes::from)
    }

    fn write_header(&mut self, details: &ArchiveDetails) {
        let out = self.sink.stage();
        match self.format {
            ExportFormat::Json => {
                // Quay's layout: the export id, the details object, then the logs array.
                out.extend_from_slice(b"{\"export_id\": \"");
                out.extend_from_slice(details.export_id.to_string().as_bytes());
                out.extend_from_slice(b"\", \"details\": ");
                // Strings and an optional string always serialize.
                if serde_json::to_writer(&mut *out, details).is_err() {
                    out.extend_from_slice(b"{}");
                }
                out.extend_from_slice(b", \"logs\": [\n");
            }
            ExportFormat::Ndjson => {}
            ExportFormat::Csv => out.extend_from_slice(csv::HEADER),
        }
    }

    /// Appends one log.
    pub fn write_log(&mut self, log: &LogEntry<'_>) -> io::Result<()> {
        Self::encode_log(self.format, log, self.sink.stage());
        self.logs_written += 1;
        self.sink.maybe_compress()
    }

    /// Encodes one log of `format` into `out`, exactly as [`ArchiveWriter::write_log`] would:
    /// logs encode independently, so batches can be encoded on other threads and appended in
    /// order with [`ArchiveWriter::append_encoded`].
    pub fn encode_log(format: ExportFormat, log: &LogEntry<'_>, out: &mut Vec<u8>) {
        match format {
            ExportFormat::Json => {
                json::write_log(out, log);
                // Every log is followed by a comma: the terminator object always comes last.
                out.extend_from_slice(b",\n");
            }
            ExportFormat::Ndjson => {
                json::write_log(out, log);
                out.push(b'\n');
            }
            ExportFormat::Csv => csv::write_row(out, log),
        }
    }

    /// Appends `logs` logs encoded by [`ArchiveWriter::encode_log`] for this archive's format.
    pub fn append_encoded(&mut self, encoded: &[u8], logs: u64) -> io::Result<()> {
        self.sink.stage().extend_from_slice(encoded);
        self.logs_written += logs;
        self.sink.maybe_compress()
    }

    /// Bytes ready to be taken.
    pub fn buffered_len(&self) -> usize {
        self.sink.ready_len()
    }

    /// Takes all ready bytes when there are at least `at_least` of them; never copies.
    pub fn take_bytes(&mut self, at_least: usize) -> Option<Bytes> {
        let ready = self.sink.ready_len();
        (ready > 0 && ready >= at_least).then(|| Bytes::from(self.sink.take_ready()))
    }

    /// Takes every ready byte (possibly none).
    pub fn take_all(&mut self) -> Bytes {
        Bytes::from(self.sink.take_ready())
    }

    /// Writes the trailer (JSON terminator, gzip trailer) and returns the bytes not yet taken.
    pub fn finish(mut self) -> io::Result<Bytes> {
        if self.format == ExportFormat::Json {
            self.sink
                .stage()
                .extend_from_slice(b"{\"terminator\": true}]}");
        }
        self.sink.finish().map(Bytes::from)
    }

    /// How many logs were written so far.
    pub fn logs_written(&self) -> u64 {
        self.logs_written
    }

    /// The archive's format.
    pub fn format(&self) -> ExportFormat {
        self.format
    }
}
