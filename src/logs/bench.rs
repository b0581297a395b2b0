//! Read-side latency figures: the first page, page 500 and a 31-day aggregate, p50/p95 over
//! repeated runs against a running service (tests and the bench binary call it).

use std::time::{Duration, Instant};

use anyhow::Context as _;

/// Measures `GET /api/v1/organization/ns0/{logs,aggregatelogs}` on the service at `base_url`
/// (`http://host:port`) with `runs` repetitions each; `range` is the query string of the range
/// (e.g. `starttime=01/01/2024&endtime=01/31/2024`). Returns a human-readable report.
pub async fn bench_read_side(
    client: &reqwest::Client,
    base_url: &str,
    token: &str,
    range: &str,
    runs: usize,
) -> anyhow::Result<String> {
    let logs = format!("{base_url}/api/v1/organization/ns0/logs?{range}");
    let get = |url: String| async move {
        let started = Instant::now();
        let body: serde_json::Value = client
            .get(&url)
            .bearer_auth(token)
            .send()
            .await
            .context("request")?
            .error_for_status()
            .context("status")?
            .json()
            .await
            .context("body")?;
        anyhow::ensure!(
            body.get("search_unavailable").is_none(),
            "search unavailable: {body}"
        );
        Ok::<_, anyhow::Error>((started.elapsed(), body))
    };
    let mut first = Vec::new();
    for _ in 0..runs {
        first.push(get(logs.clone()).await?.0);
    }
    // Walk to page 500 once, then time fetching it again with the same token.
    let mut token_500: Option<String> = None;
    let mut walk = Duration::ZERO;
    for _ in 1..500 {
        let url = match &token_500 {
            Some(t) => format!("{logs}&next_page={}", urlencoding::encode(t)),
            None => logs.clone(),
        };
        let (took, body) = get(url).await?;
        walk += took;
        token_500 = body["next_page"].as_str().map(str::to_owned);
        anyhow::ensure!(token_500.is_some(), "fewer than 500 pages");
    }
    let page_500 = format!(
        "{logs}&next_page={}",
        urlencoding::encode(token_500.as_deref().unwrap_or_default())
    );
    let mut deep = Vec::new();
    for _ in 0..runs {
        deep.push(get(page_500.clone()).await?.0);
    }
    let aggregate = format!("{base_url}/api/v1/organization/ns0/aggregatelogs?{range}");
    let mut agg = Vec::new();
    for _ in 0..runs {
        agg.push(get(aggregate.clone()).await?.0);
    }
    Ok(format!(
        "first page: {}\npage 500:   {}\n(walk to page 500: {:.1?} for 499 pages)\naggregate:  {}",
        summary(&mut first),
        summary(&mut deep),
        walk,
        summary(&mut agg)
    ))
}

fn summary(samples: &mut [Duration]) -> String {
    samples.sort_unstable();
    let at = |q: f64| {
        let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
        samples[i]
    };
    format!(
        "p50 {:.1?}  p95 {:.1?}  max {:.1?}  (n={})",
        at(0.5),
        at(0.95),
        samples.last().copied().unwrap_or_default(),
        samples.len()
    )
}
