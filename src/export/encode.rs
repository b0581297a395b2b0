//! Splunk's rows mapped and encoded into the archive's lines, on the encoder threads. Each
//! slice's reader encodes what it reads while it reads, so the archive only joins encoded bytes
//! and a slice that finishes reading is ready to append.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::oneshot;

use super::encoders;
use crate::archive::ArchiveWriter;
use crate::domain::ExportFormat;
use crate::splunk::{RowBatch, SkipReason, SplunkError, map_row_text};

/// Skipped events whose reason is logged, per export.
const LOGGED_SKIPS: u64 = 10;

/// How one export's rows become archive lines; cheap to clone (one per batch handed over).
#[derive(Clone)]
pub struct RowEncoder {
    format: ExportFormat,
    kinds: Arc<[String]>,
    /// Skips logged so far by every reader of the export.
    skips_logged: Arc<AtomicU64>,
}

/// What a batch turned into.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    /// Logs encoded.
    pub logs: u64,
    /// Events that could not be mapped (no kind, no usable time), left out.
    pub skipped: u64,
}

/// A batch back from the encoder threads: its result, and its buffers for reuse.
pub struct Encoded {
    pub counts: Result<Counts, SplunkError>,
    pub batch: RowBatch,
    pub out: Vec<u8>,
}

impl RowEncoder {
    /// Encodes for an archive of `format` holding only `kinds` (every kind when empty).
    pub fn new(format: ExportFormat, kinds: &[String]) -> Self {
        Self {
            format,
            kinds: kinds.into(),
            skips_logged: Arc::default(),
        }
    }

    /// Maps and appends every row of `batch` to `out`, exactly as
    /// [`ArchiveWriter::write_log`] would. A row that is not a JSON object is an error: only a
    /// line Splunk broke can hold one.
    pub fn encode(&self, batch: &RowBatch, out: &mut Vec<u8>) -> Result<Counts, SplunkError> {
        let mut counts = Counts::default();
        for row in batch.iter() {
            let mut kept = false;
            match map_row_text(row, |log| {
                // Several kinds are searched as exclusions of the other known kinds, so an
                // unknown kind can come back: only the asked-for kinds go into the archive.
                kept = self.kinds.is_empty() || self.kinds.iter().any(|k| *k == log.kind);
                if kept {
                    ArchiveWriter::encode_log(self.format, &log, out);
                }
            }) {
                Ok(()) => counts.logs += u64::from(kept),
                Err(SkipReason::Malformed) => {
                    return Err(SplunkError::Protocol(
                        "a row of Splunk's export stream is not a JSON object".into(),
                    ));
                }
                Err(reason) => {
                    counts.skipped += 1;
                    if self.skips_logged.fetch_add(1, Ordering::Relaxed) < LOGGED_SKIPS {
                        tracing::warn!(?reason, "skipped an event that cannot be mapped");
                    }
                }
            }
        }
        Ok(counts)
    }

    /// [`RowEncoder::encode`] on an encoder thread, appending to `out`; `Err` if it panicked.
    pub fn spawn(&self, batch: RowBatch, mut out: Vec<u8>) -> oneshot::Receiver<Encoded> {
        let encoder = self.clone();
        let span = tracing::Span::current();
        encoders::spawn(move || {
            span.in_scope(|| {
                let counts = encoder.encode(&batch, &mut out);
                Encoded { counts, batch, out }
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(rows: &[&str]) -> RowBatch {
        let mut batch = RowBatch::default();
        for row in rows {
            batch.push_text(row.as_bytes());
        }
        batch
    }

    const PUSH: &str = r#"{"_time":"2024-01-02T03:04:05.000+00:00","_raw":"{\"kind\":\"push_repo\",\"datetime\":\"2024-01-02T03:04:05.000000\",\"account\":\"org\"}"}"#;
    const PULL: &str = r#"{"_time":"2024-01-02T03:04:04.000+00:00","_raw":"{\"kind\":\"pull_repo\",\"datetime\":\"2024-01-02T03:04:04.000000\",\"account\":\"org\"}"}"#;

    #[test]
    fn only_the_asked_for_kinds_are_encoded_and_unmappable_events_are_counted() {
        let encoder = RowEncoder::new(ExportFormat::Ndjson, &["push_repo".to_owned()]);
        let mut out = Vec::new();
        let counts = encoder
            .encode(&batch(&[PUSH, PULL, r#"{"_raw":"{}"}"#]), &mut out)
            .unwrap();
        assert_eq!(
            counts,
            Counts {
                logs: 1,
                skipped: 1
            }
        );
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 1);
        assert!(text.contains("push_repo"), "{text}");
    }

    #[test]
    fn a_broken_row_is_splunks_protocol_error() {
        let encoder = RowEncoder::new(ExportFormat::Json, &[]);
        let err = encoder
            .encode(&batch(&[PUSH, "{\"_raw\": tru"]), &mut Vec::new())
            .unwrap_err();
        assert!(matches!(err, SplunkError::Protocol(_)), "{err}");
    }
}
