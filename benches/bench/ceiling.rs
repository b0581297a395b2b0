//! The emulator ceiling: how fast its export endpoint can be read and thrown away.

use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use futures::StreamExt;

use crate::procs::Emulator;

/// One read of an export stream.
pub struct CeilingRun {
    pub lines: u64,
    pub bytes: u64,
    pub elapsed: Duration,
}

/// Epoch seconds as the Splunk client sends them (fraction only when needed).
fn epoch(t: &DateTime<Utc>) -> String {
    let micros = t.timestamp_subsec_micros();
    if micros == 0 {
        t.timestamp().to_string()
    } else {
        format!("{}.{micros:06}", t.timestamp())
    }
}

/// Streams `POST search/v2/jobs/export` for ns0 over `[start, end)` and counts newlines.
pub async fn read_export(
    client: &reqwest::Client,
    emulator: &Emulator,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> anyhow::Result<CeilingRun> {
    let (earliest, latest) = (epoch(&start), epoch(&end));
    let form = [
        ("search", r#"search index="quay_logs" account="ns0""#),
        ("output_mode", "json"),
        ("earliest_time", earliest.as_str()),
        ("latest_time", latest.as_str()),
    ];
    let began = Instant::now();
    let response = client
        .post(format!(
            "{}/services/search/v2/jobs/export",
            emulator.base_url
        ))
        .bearer_auth(&emulator.token)
        .form(&form)
        .send()
        .await
        .context("emulator export request")?
        .error_for_status()
        .context("emulator export request")?;
    let mut body = response.bytes_stream();
    let (mut lines, mut bytes) = (0u64, 0u64);
    while let Some(chunk) = body.next().await {
        let chunk = chunk.context("reading the emulator export stream")?;
        bytes += chunk.len() as u64;
        lines += memchr::memchr_iter(b'\n', &chunk).count() as u64;
    }
    Ok(CeilingRun {
        lines,
        bytes,
        elapsed: began.elapsed(),
    })
}
