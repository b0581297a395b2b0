//! Search jobs for the read side: create, poll until done, page results, cancel.

use std::time::Duration;

use bytes::Bytes;
use reqwest::Method;
use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;
use tokio::time::Instant;

use super::client::RetryPolicy;
use super::error::{is_quota_message, splunk_message};
use super::{BuiltQuery, Row, SearchPermit, SplunkClient, SplunkError};

/// Largest page requested at once from a job's results.
pub const MAX_PAGE: u64 = 10_000;

/// A running or finished Splunk search job. Dropping it cancels the job on Splunk (in the
/// background) so abandoned searches do not hold Splunk's concurrency quota.
#[derive(Debug)]
pub struct SearchJob {
    client: SplunkClient,
    sid: String,
    deadline: Instant,
    cancel_on_drop: bool,
    /// This search's share of the Splunk quota, held until the job is cancelled or dropped.
    permit: Option<SearchPermit>,
}

/// Where a job stands, from `GET search/v2/jobs/{sid}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobStatus {
    pub dispatch_state: String,
    pub is_done: bool,
    pub is_failed: bool,
    pub result_count: u64,
    pub event_count: u64,
    /// Splunk's messages about the job, `TYPE: text`.
    pub messages: Vec<String>,
}

#[derive(Deserialize)]
struct Created {
    sid: String,
}

impl SplunkClient {
    /// Creates a search job (`exec_mode=normal`) over the query's time range.
    pub async fn create_job(&self, query: &BuiltQuery) -> Result<SearchJob, SplunkError> {
        let form = [
            ("search", query.spl.as_str()),
            ("exec_mode", "normal"),
            ("output_mode", "json"),
            ("earliest_time", query.earliest_time.as_str()),
            ("latest_time", query.latest_time.as_str()),
        ];
        let permit = self.search_permit("search job").await?;
        let resp = self
            .send(Method::POST, "search/v2/jobs", |r| r.form(&form))
            .await?;
        let body = resp.bytes().await.map_err(SplunkError::transport)?;
        let sid = parse_sid(&body)?;
        Ok(SearchJob {
            client: self.clone(),
            sid,
            deadline: Instant::now() + self.search_timeout(),
            cancel_on_drop: true,
            permit,
        })
    }

    /// Runs a search to completion and returns at most `max_rows` result rows (for small results
    /// such as `stats count by`); the job is cancelled afterwards.
    pub async fn search_rows(
        &self,
        query: &BuiltQuery,
        max_rows: u64,
    ) -> Result<Vec<Row>, SplunkError> {
        let mut job = self.create_job(query).await?;
        job.wait().await?;
        let mut rows = Vec::new();
        while (rows.len() as u64) < max_rows {
            let want = (max_rows - rows.len() as u64).min(MAX_PAGE);
            let page = job.results(rows.len() as u64, want).await?;
            let got = page.len() as u64;
            rows.extend(page);
            if got < want {
                break;
            }
        }
        job.cancel().await;
        Ok(rows)
    }

    async fn cancel_sid(&self, sid: &str) -> Result<(), SplunkError> {
        let path = format!("search/v2/jobs/{}/control", urlencoding::encode(sid));
        let quick = RetryPolicy {
            max_retries: 1,
            base_delay: Duration::from_millis(200),
            max_delay: Duration::from_millis(200),
        };
        match self
            .send_with(quick, Method::POST, &path, |r| {
                r.form(&[("action", "cancel"), ("output_mode", "json")])
            })
            .await
        {
            Ok(_) | Err(SplunkError::Http { status: 404, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

impl SearchJob {
    /// Splunk's search id.
    pub fn sid(&self) -> &str {
        &self.sid
    }

    /// The job's current status.
    pub async fn status(&self) -> Result<JobStatus, SplunkError> {
        let path = format!("search/v2/jobs/{}", urlencoding::encode(&self.sid));
        let resp = self
            .client
            .send(Method::GET, &path, |r| r.query(&[("output_mode", "json")]))
            .await?;
        let body = resp.bytes().await.map_err(SplunkError::transport)?;
        parse_status(&body)
    }

    /// Polls until the job is done. A failed job, or one still running at the deadline
    /// (`splunk.search_timeout_seconds` after creation, then cancelled), is an error.
    pub async fn wait(&mut self) -> Result<JobStatus, SplunkError> {
        let mut interval = Duration::from_millis(50);
        loop {
            let status = self.status().await?;
            if status.is_failed || is_cancelled(&status.dispatch_state) {
                let message = if status.messages.is_empty() {
                    format!("job {} ended {}", self.sid, status.dispatch_state)
                } else {
                    status.messages.join("; ")
                };
                // Our SPL is built by code and bad searches are refused at creation (400), so a
                // job failing later is most likely a transient Splunk problem: retryable.
                let retryable =
                    status.dispatch_state != "BAD_INPUT_CANCEL" || is_quota_message(&message);
                return Err(SplunkError::SearchFailed { message, retryable });
            }
            if status.is_done {
                return Ok(status);
            }
            let now = Instant::now();
            if now >= self.deadline {
                let seconds = self.client.search_timeout().as_secs();
                let sid = self.sid.clone();
                self.cancel_now().await;
                return Err(SplunkError::SearchTimeout { sid, seconds });
            }
            tokio::time::sleep(interval.min(self.deadline - now)).await;
            interval = (interval * 2).min(Duration::from_millis(500));
        }
    }

    /// One page of results: at most `count` rows starting at `offset`.
    pub async fn results(&self, offset: u64, count: u64) -> Result<Vec<Row>, SplunkError> {
        let path = format!("search/v2/jobs/{}/results", urlencoding::encode(&self.sid));
        let (offset, count) = (offset.to_string(), count.min(MAX_PAGE).to_string());
        let resp = self
            .client
            .send(Method::GET, &path, |r| {
                r.query(&[
                    ("output_mode", "json"),
                    ("offset", offset.as_str()),
                    ("count", count.as_str()),
                ])
            })
            .await?;
        let body = resp.bytes().await.map_err(SplunkError::transport)?;
        parse_results(&body)
    }

    /// Cancels the job now (errors are logged: the job expires on Splunk anyway).
    pub async fn cancel(mut self) {
        self.cancel_now().await;
    }

    async fn cancel_now(&mut self) {
        self.cancel_on_drop = false;
        if let Err(e) = self.client.cancel_sid(&self.sid).await {
            tracing::warn!(sid = %self.sid, error = %e, "could not cancel Splunk search job");
        }
        self.permit = None;
    }
}

impl Drop for SearchJob {
    fn drop(&mut self) {
        if !self.cancel_on_drop {
            return;
        }
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let client = self.client.clone();
            let sid = std::mem::take(&mut self.sid);
            handle.spawn(async move {
                if let Err(e) = client.cancel_sid(&sid).await {
                    tracing::warn!(%sid, error = %e, "could not cancel Splunk search job");
                }
            });
        }
    }
}

fn is_cancelled(state: &str) -> bool {
    matches!(
        state,
        "INTERNAL_CANCEL" | "USER_CANCEL" | "BAD_INPUT_CANCEL" | "QUIT"
    )
}

fn parse_sid(body: &[u8]) -> Result<String, SplunkError> {
    if let Ok(created) = serde_json::from_slice::<Created>(body) {
        return Ok(created.sid);
    }
    // Splunk answers in XML when a proxy or old version ignores output_mode.
    let text = String::from_utf8_lossy(body);
    let sid = text
        .split_once("<sid>")
        .and_then(|(_, rest)| rest.split_once("</sid>"))
        .map(|(sid, _)| sid.trim().to_owned())
        .filter(|sid| !sid.is_empty());
    sid.ok_or_else(|| {
        SplunkError::Protocol(format!(
            "job creation answer has no sid: {}",
            splunk_message(body).unwrap_or_else(|| "no message".into())
        ))
    })
}

fn parse_status(body: &[u8]) -> Result<JobStatus, SplunkError> {
    let doc: Value = serde_json::from_slice(body)
        .map_err(|e| SplunkError::Protocol(format!("job status is not JSON: {e}")))?;
    let content = doc
        .pointer("/entry/0/content")
        .ok_or_else(|| SplunkError::Protocol("job status has no entry content".into()))?;
    let flag = |key: &str| match content.get(key) {
        Some(Value::Bool(b)) => *b,
        Some(Value::Number(n)) => n.as_u64() == Some(1),
        Some(Value::String(s)) => s == "1" || s.eq_ignore_ascii_case("true"),
        _ => false,
    };
    let count = |key: &str| match content.get(key) {
        Some(Value::Number(n)) => n.as_u64().unwrap_or(0),
        Some(Value::String(s)) => s.parse().unwrap_or(0),
        _ => 0,
    };
    let dispatch_state = content
        .get("dispatchState")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    let messages = content
        .get("messages")
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|m| {
                    let text = m.get("text")?.as_str()?;
                    let kind = m.get("type").and_then(Value::as_str).unwrap_or("");
                    Some(format!("{kind}: {text}"))
                })
                .collect()
        })
        .unwrap_or_default();
    Ok(JobStatus {
        is_done: flag("isDone") || dispatch_state == "DONE",
        is_failed: flag("isFailed") || dispatch_state == "FAILED",
        dispatch_state,
        result_count: count("resultCount"),
        event_count: count("eventCount"),
        messages,
    })
}

#[derive(Deserialize)]
struct ResultsDoc<'a> {
    #[serde(borrow, default)]
    results: Vec<&'a RawValue>,
    #[serde(borrow, default)]
    result: Option<&'a RawValue>,
}

/// Rows of a results page: one JSON document with `results`, or (as some servers stream it)
/// one document per line with `result` or `results`.
fn parse_results(body: &Bytes) -> Result<Vec<Row>, SplunkError> {
    let rows_of = |buf: &Bytes, doc: ResultsDoc<'_>| {
        doc.results
            .into_iter()
            .chain(doc.result)
            .map(|raw| Row::from_raw_in(buf, raw))
            .collect::<Vec<_>>()
    };
    if let Ok(doc) = serde_json::from_slice::<ResultsDoc<'_>>(body) {
        return Ok(rows_of(body, doc));
    }
    let mut rows = Vec::new();
    for line in body.split(|b| *b == b'\n') {
        if line.trim_ascii().is_empty() {
            continue;
        }
        let doc: ResultsDoc<'_> = serde_json::from_slice(line)
            .map_err(|e| SplunkError::Protocol(format!("results page is not JSON: {e}")))?;
        rows.extend(rows_of(body, doc));
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_sids_in_json_and_xml() {
        assert_eq!(
            parse_sid(br#"{"sid":"1653561573.457"}"#).unwrap(),
            "1653561573.457"
        );
        assert_eq!(
            parse_sid(b"<?xml version='1.0'?>\n<response>\n  <sid>abc.1</sid>\n</response>")
                .unwrap(),
            "abc.1"
        );
        assert!(parse_sid(b"{}").is_err());
    }

    #[test]
    fn reads_job_status() {
        let body = br#"{"entry":[{"name":"search x","content":{"dispatchState":"DONE","isDone":true,"isFailed":false,"resultCount":"12","eventCount":12,"messages":[{"type":"INFO","text":"fine"}]}}]}"#;
        let s = parse_status(body).unwrap();
        assert!(s.is_done && !s.is_failed);
        assert_eq!((s.result_count, s.event_count), (12, 12));
        assert_eq!(s.messages, ["INFO: fine"]);
        let failed =
            br#"{"entry":[{"content":{"dispatchState":"FAILED","isDone":"1","isFailed":"1"}}]}"#;
        assert!(parse_status(failed).unwrap().is_failed);
        assert!(parse_status(b"{}").is_err());
    }

    #[test]
    fn reads_results_pages_in_both_shapes() {
        let doc = Bytes::from_static(
            br#"{"preview":false,"init_offset":0,"messages":[],"fields":[{"name":"count"}],"results":[{"kind":"a","count":"2"},{"kind":"b","count":"1"}]}"#,
        );
        let rows = parse_results(&doc).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].field_text("count").as_deref(), Some("1"));
        let lines = Bytes::from_static(b"{\"result\":{\"a\":\"1\"}}\n{\"result\":{\"a\":\"2\"}}\n");
        let rows = parse_results(&lines).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[1].as_str(), r#"{"a":"2"}"#);
        assert!(parse_results(&Bytes::from_static(b"{\"results\":")).is_err());
    }
}
