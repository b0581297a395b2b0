//! One streaming export request (`search/v2/jobs/export`), read row by row as it arrives.

use std::ops::{ControlFlow, Range};

use bytes::Bytes;
use futures::Stream;
use reqwest::{Method, Response};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::error::{JsonMessage, is_quota_message};
use super::lines::{LineSplitter, LineTooLong};
use super::{BuiltQuery, Row, RowBatch, SearchPermit, SplunkClient, SplunkError};

/// Longest export line accepted; a longer one is an error rather than unbounded memory.
pub const MAX_LINE_BYTES: usize = 8 * 1024 * 1024;
/// What is read after `lastrow` to keep the connection, at most, and for how long.
const DRAIN_BYTES: usize = 64 * 1024;
const DRAIN_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// One line of Splunk's JSON export stream.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(default)]
    preview: bool,
    #[serde(default)]
    lastrow: bool,
    #[serde(borrow, default)]
    result: Option<&'a RawValue>,
    #[serde(default)]
    messages: Vec<JsonMessage>,
}

/// The rows of one export search, in the order Splunk sends them.
///
/// Memory stays bounded by one chunk plus one line whatever the result size. The stream ends
/// successfully only after Splunk's `lastrow` marker, or when the answer ended cleanly without a
/// single result (Splunk sends no rows, or only message lines, for an empty result). An answer
/// that stops after rows but before `lastrow` is a retryable [`SplunkError::StreamCut`].
pub struct ExportStream {
    response: Option<Response>,
    lines: LineSplitter,
    rows: u64,
    finished: bool,
    /// Ended with Splunk's whole result (not cut, not failed).
    complete: bool,
    /// This search's share of the Splunk quota, held until the stream is dropped.
    _permit: Option<SearchPermit>,
}

impl std::fmt::Debug for ExportStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExportStream")
            .field("rows", &self.rows)
            .field("finished", &self.finished)
            .finish_non_exhaustive()
    }
}

impl SplunkClient {
    /// Starts one export search; failures before the first byte are retried per the policy.
    pub async fn export(&self, query: &BuiltQuery) -> Result<ExportStream, SplunkError> {
        self.export_holding(query, None).await
    }

    /// [`SplunkClient::export`] under `permit`, a finished search's share of the quota handed
    /// on to the next search (see [`ExportStream::take_permit`]); takes a new one without it.
    pub async fn export_holding(
        &self,
        query: &BuiltQuery,
        permit: Option<SearchPermit>,
    ) -> Result<ExportStream, SplunkError> {
        let form = [
            ("search", query.spl.as_str()),
            ("output_mode", "json"),
            ("earliest_time", query.earliest_time.as_str()),
            ("latest_time", query.latest_time.as_str()),
        ];
        let permit = match permit {
            Some(permit) => Some(permit),
            None => self.search_permit("export").await?,
        };
        let response = self
            .send(Method::POST, "search/v2/jobs/export", |r| r.form(&form))
            .await?;
        Ok(ExportStream::new(response, permit))
    }
}

impl ExportStream {
    fn new(response: Response, permit: Option<SearchPermit>) -> Self {
        Self {
            response: Some(response),
            lines: LineSplitter::new(MAX_LINE_BYTES),
            rows: 0,
            finished: false,
            complete: false,
            _permit: permit,
        }
    }

    /// The search's quota permit, once Splunk sent the whole result (the search is over), for
    /// the next search to run under without giving it back first; `None` before that.
    pub fn take_permit(&mut self) -> Option<SearchPermit> {
        if self.complete {
            self._permit.take()
        } else {
            None
        }
    }

    /// Rows handed out so far.
    pub fn rows_read(&self) -> u64 {
        self.rows
    }

    /// The next row; `None` once the result is complete. After an error the stream is over.
    pub async fn next_row(&mut self) -> Option<Result<Row, SplunkError>> {
        if self.finished {
            return None;
        }
        let outcome = self.advance().await;
        if !matches!(outcome, Some(Ok(_))) {
            self.finish();
        }
        outcome
    }

    /// Appends rows to `batch` until it holds at least `max` of them or the result is complete,
    /// waiting for Splunk as needed, so an export hands rows on in batches of one size whatever
    /// the network's pace. Rows are copied straight from the network's chunks. `Ok(false)` once
    /// the result is complete (`batch` may have received its last rows); after an error the
    /// stream is over.
    pub async fn next_batch(
        &mut self,
        batch: &mut RowBatch,
        max: usize,
    ) -> Result<bool, SplunkError> {
        // Lines `next_row` split but did not hand out yet go first.
        while !self.lines.is_drained() && !self.finished && batch.len() < max {
            match self.next_row().await {
                Some(Ok(row)) => batch.push(&row),
                Some(Err(e)) => return Err(e),
                None => return Ok(false),
            }
        }
        while !self.finished && batch.len() < max {
            let Some(response) = self.response.as_mut() else {
                break;
            };
            let chunk = match response.chunk().await {
                Ok(Some(chunk)) => chunk,
                Ok(None) => {
                    let last = self.at_end();
                    self.finish();
                    match last {
                        Some(Ok(row)) => batch.push(&row),
                        Some(Err(e)) => return Err(e),
                        None => {}
                    }
                    break;
                }
                Err(e) => {
                    tracing::warn!(rows = self.rows, error = %e, "Splunk export stream broke");
                    self.finish();
                    return Err(SplunkError::StreamCut { rows: self.rows });
                }
            };
            let rows = &mut self.rows;
            let split = self.lines.split(&chunk, |line| {
                if let Some((range, lastrow)) = fast_row_range(line) {
                    batch.push_text(&line[range]);
                    *rows += 1;
                    return if lastrow {
                        ControlFlow::Break(None)
                    } else {
                        ControlFlow::Continue(())
                    };
                }
                match classify_envelope(&Bytes::copy_from_slice(line), rows) {
                    LineOutcome::Row(row) => {
                        batch.push(&row);
                        ControlFlow::Continue(())
                    }
                    LineOutcome::Skip => ControlFlow::Continue(()),
                    LineOutcome::LastRow(row) => {
                        if let Some(row) = row {
                            batch.push(&row);
                        }
                        ControlFlow::Break(None)
                    }
                    LineOutcome::Fail(e) => ControlFlow::Break(Some(e)),
                }
            });
            match split {
                Ok(None) => {}
                // The last row, or a failure: either way the stream is over.
                Ok(Some(None)) => self.finish_whole(),
                Ok(Some(Some(e))) => {
                    self.finish();
                    return Err(e);
                }
                Err(LineTooLong) => {
                    self.finish();
                    return Err(SplunkError::LineTooLong {
                        max: MAX_LINE_BYTES,
                    });
                }
            }
        }
        Ok(!self.finished)
    }

    /// Turns the reader into a `Stream` of rows, for combinators.
    pub fn into_stream(self) -> impl Stream<Item = Result<Row, SplunkError>> + Send {
        futures::stream::unfold(self, |mut s| async move {
            let item = s.next_row().await?;
            Some((item, s))
        })
    }

    fn finish(&mut self) {
        self.finished = true;
        // Dropping the response closes the connection instead of draining a long stream.
        self.response = None;
    }

    /// Over with the whole result: Splunk's search is done. The little that may follow
    /// `lastrow` (the end of the chunked answer) is read in the background, so that the
    /// connection goes back to the client's pool for the next search instead of being closed:
    /// at month-end each small export's search would otherwise open a connection of its own,
    /// and with Splunk's TLS a handshake.
    fn finish_whole(&mut self) {
        if let Some(response) = self.response.take() {
            drain(response);
        }
        self.finish();
        self.complete = true;
    }

    async fn advance(&mut self) -> Option<Result<Row, SplunkError>> {
        loop {
            while let Some(line) = self.lines.next_line() {
                match self.handle_line(&line) {
                    LineOutcome::Row(row) => return Some(Ok(row)),
                    LineOutcome::LastRow(row) => {
                        self.finish_whole();
                        return row.map(Ok);
                    }
                    LineOutcome::Skip => {}
                    LineOutcome::Fail(e) => return Some(Err(e)),
                }
            }
            let response = self.response.as_mut()?;
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if let Err(LineTooLong) = self.lines.push(chunk) {
                        return Some(Err(SplunkError::LineTooLong {
                            max: MAX_LINE_BYTES,
                        }));
                    }
                }
                Ok(None) => return self.at_end(),
                // A broken connection mid-stream: the rows so far are not the whole result.
                Err(e) => {
                    tracing::warn!(rows = self.rows, error = %e, "Splunk export stream broke");
                    return Some(Err(SplunkError::StreamCut { rows: self.rows }));
                }
            }
        }
    }

    fn at_end(&mut self) -> Option<Result<Row, SplunkError>> {
        if let Some(last) = self.lines.finish() {
            // An unterminated final line is complete JSON when it carries `lastrow`; a cut line
            // fails to parse and is reported as a cut below.
            match self.handle_line(&last) {
                LineOutcome::LastRow(row) => {
                    self.finish_whole();
                    return row.map(Ok);
                }
                LineOutcome::Row(_) | LineOutcome::Fail(SplunkError::Protocol(_)) => {
                    return Some(Err(SplunkError::StreamCut { rows: self.rows }));
                }
                LineOutcome::Fail(e) => return Some(Err(e)),
                LineOutcome::Skip => {}
            }
        }
        if self.rows == 0 {
            // An empty result: Splunk sends no rows at all.
            self.complete = true;
            None
        } else {
            Some(Err(SplunkError::StreamCut { rows: self.rows }))
        }
    }

    fn handle_line(&mut self, line: &Bytes) -> LineOutcome {
        classify(line, &mut self.rows)
    }
}

/// What one line of the export stream holds; `rows` counts the result rows seen.
fn classify(line: &Bytes, rows: &mut u64) -> LineOutcome {
    if let Some((range, lastrow)) = fast_row_range(line) {
        *rows += 1;
        let row = Row::unchecked(line.slice(range));
        return if lastrow {
            LineOutcome::LastRow(Some(row))
        } else {
            LineOutcome::Row(row)
        };
    }
    classify_envelope(line, rows)
}

/// [`classify`] for a line not in Splunk's usual result layout: parsed as a whole.
fn classify_envelope(line: &Bytes, rows: &mut u64) -> LineOutcome {
    if line.trim_ascii().is_empty() {
        return LineOutcome::Skip;
    }
    let env: Envelope<'_> = match serde_json::from_slice(line) {
        Ok(env) => env,
        Err(e) => {
            return LineOutcome::Fail(SplunkError::Protocol(format!(
                "export line {} is not JSON: {e}",
                *rows + 1
            )));
        }
    };
    if let Some(err) = fatal_message(&env.messages) {
        return LineOutcome::Fail(err);
    }
    if env.preview {
        return LineOutcome::Skip;
    }
    let row = env.result.map(|raw| Row::from_raw_in(line, raw));
    if row.is_some() {
        *rows += 1;
    }
    match (row, env.lastrow) {
        (row, true) => LineOutcome::LastRow(row),
        (Some(row), false) => LineOutcome::Row(row),
        (None, false) => LineOutcome::Skip,
    }
}

/// Where the row lies in a result line in exactly the layout Splunk writes,
/// `{"preview":false,"offset":N[,"lastrow":true],"result":{...}}`, found without parsing the line:
/// the row's own parse (in the mapper) checks it, so each byte is read once. Any other line takes
/// the general path.
fn fast_row_range(line: &[u8]) -> Option<(Range<usize>, bool)> {
    const PREFIX: &[u8] = br#"{"preview":false,"offset":"#;
    const LASTROW: &[u8] = br#","lastrow":true"#;
    const RESULT: &[u8] = br#","result":{"#;
    let rest = line.strip_prefix(PREFIX)?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 {
        return None;
    }
    let rest = &rest[digits..];
    let (lastrow, rest) = match rest.strip_prefix(LASTROW) {
        Some(rest) => (true, rest),
        None => (false, rest),
    };
    let body = rest.strip_prefix(RESULT)?;
    if !body.ends_with(b"}}") {
        return None;
    }
    // From the result's `{` to its `}`, leaving the envelope's closing brace.
    let start = line.len() - body.len() - 1;
    Some((start..line.len() - 1, lastrow))
}

enum LineOutcome {
    Row(Row),
    LastRow(Option<Row>),
    Skip,
    Fail(SplunkError),
}

/// An in-stream FATAL/ERROR message ends the export; quota messages are retryable.
fn fatal_message(messages: &[JsonMessage]) -> Option<SplunkError> {
    let fatal: Vec<&JsonMessage> = messages
        .iter()
        .filter(|m| m.kind.eq_ignore_ascii_case("FATAL") || m.kind.eq_ignore_ascii_case("ERROR"))
        .collect();
    if fatal.is_empty() {
        return None;
    }
    let message = fatal
        .iter()
        .map(|m| format!("{}: {}", m.kind, m.text.replace(char::is_control, " ")))
        .collect::<Vec<_>>()
        .join("; ");
    let retryable = is_quota_message(&message);
    Some(SplunkError::SearchFailed { message, retryable })
}

/// Reads what is left of a whole answer in the background, so that its connection is kept for the
/// next request; gives up (closing it) past [`DRAIN_BYTES`] or [`DRAIN_WAIT`].
fn drain(mut response: Response) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    runtime.spawn(async move {
        let mut left = DRAIN_BYTES;
        let _ = tokio::time::timeout(DRAIN_WAIT, async {
            while let Ok(Some(chunk)) = response.chunk().await {
                left = left.saturating_sub(chunk.len());
                if left == 0 {
                    break;
                }
            }
        })
        .await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn outcome(line: &str) -> LineOutcome {
        let mut s = ExportStream {
            response: None,
            lines: LineSplitter::new(1024),
            rows: 0,
            finished: false,
            complete: false,
            _permit: None,
        };
        s.handle_line(&Bytes::copy_from_slice(line.as_bytes()))
    }

    #[test]
    fn classifies_export_lines() {
        assert!(matches!(
            outcome(r#"{"preview":true,"offset":0,"result":{"a":"1"}}"#),
            LineOutcome::Skip
        ));
        match outcome(r#"{"preview":false,"offset":0,"result":{"a":"1"}}"#) {
            LineOutcome::Row(row) => assert_eq!(row.as_str(), r#"{"a":"1"}"#),
            _ => panic!("expected a row"),
        }
        // Another member order takes the general path to the same row.
        match outcome(r#"{"result":{"a":"1"},"offset":0,"preview":false}"#) {
            LineOutcome::Row(row) => assert_eq!(row.as_str(), r#"{"a":"1"}"#),
            _ => panic!("expected a row"),
        }
        match outcome(r#"{"preview":false,"offset":12,"lastrow":true,"result":{"b":{"c":2}}}"#) {
            LineOutcome::LastRow(Some(row)) => assert_eq!(row.as_str(), r#"{"b":{"c":2}}"#),
            _ => panic!("expected the last row"),
        }
        assert!(matches!(
            outcome(r#"{"preview":false,"offset":9,"lastrow":true,"result":{"a":"1"}}"#),
            LineOutcome::LastRow(Some(_))
        ));
        assert!(matches!(
            outcome(r#"{"preview":false,"lastrow":true}"#),
            LineOutcome::LastRow(None)
        ));
        assert!(matches!(
            outcome(r#"{"preview":false,"messages":[{"type":"INFO","text":"ok"}]}"#),
            LineOutcome::Skip
        ));
        match outcome(
            r#"{"preview":false,"messages":[{"type":"FATAL","text":"Unknown search command 'delete'."}]}"#,
        ) {
            LineOutcome::Fail(e) => {
                assert!(!e.is_retryable());
                assert!(e.to_string().contains("Unknown search command"), "{e}");
            }
            _ => panic!("expected a failure"),
        }
        assert!(matches!(
            outcome(r#"{"preview":false,"result":{"a""#),
            LineOutcome::Fail(SplunkError::Protocol(_))
        ));
    }

    #[test]
    fn quota_messages_in_stream_are_retryable() {
        let err = fatal_message(&[JsonMessage {
            kind: "ERROR".into(),
            text: "The maximum number of concurrent historical searches has been reached".into(),
        }])
        .unwrap();
        assert!(err.is_retryable());
    }
}
