//! The emulator costs what Splunk costs: an indexer's scan rate, the role's search quota, a
//! stream cut once, clustered synthetic events, and time bounds in every form Splunk takes.

use std::time::{Duration, Instant};

use chrono::{TimeZone, Utc};
use logexport::emulator::{self, EmulatorOptions, Faults, RunningEmulator, SyntheticSpec};
use serde_json::Value;

const TOKEN: &str = "cost-token";

fn client() -> reqwest::Client {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("reqwest client")
}

/// 20,000 synthetic events over 2024-01-01..2024-01-11 in one namespace.
async fn emulator(faults: Faults, skew: f64) -> RunningEmulator {
    emulator::spawn(EmulatorOptions {
        token: Some(TOKEN.into()),
        synthetic: Some(SyntheticSpec {
            count: 20_000,
            start: Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap(),
            end: Utc.with_ymd_and_hms(2024, 1, 11, 0, 0, 0).unwrap(),
            namespaces: 1,
            skew,
        }),
        faults,
        ..EmulatorOptions::default()
    })
    .await
    .expect("emulator starts")
}

async fn post(emu: &RunningEmulator, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
    let mut form = form.to_vec();
    form.push(("output_mode", "json"));
    client()
        .post(format!("{}/services/{path}", emu.base_url()))
        .bearer_auth(TOKEN)
        .form(&form)
        .send()
        .await
        .expect("request")
}

/// Result rows of a complete export, or `None` when the stream was cut.
async fn export(emu: &RunningEmulator, form: &[(&str, &str)]) -> Option<Vec<Value>> {
    let r = post(emu, "search/v2/jobs/export", form).await;
    assert_eq!(r.status(), 200, "export starts");
    let text = String::from_utf8(r.bytes().await.ok()?.to_vec()).expect("utf-8");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    let complete = lines.last().is_some_and(|l| l["lastrow"] == true);
    complete.then(|| {
        lines
            .iter()
            .filter_map(|l| l.get("result").cloned())
            .collect()
    })
}

/// Runs a blocking search job and checks it took at least `millis`.
async fn blocking_job_takes(emu: &RunningEmulator, form: &[(&str, &str)], millis: u64) {
    let mut form = form.to_vec();
    form.push(("exec_mode", "blocking"));
    let t = Instant::now();
    let r = post(emu, "search/v2/jobs", &form).await;
    assert_eq!(r.status(), 201);
    assert!(
        t.elapsed() >= Duration::from_millis(millis),
        "{:?}",
        t.elapsed()
    );
}

/// An event search between two ISO instants without an offset.
fn search_between<'a>(earliest: &'a str, latest: &'a str) -> [(&'static str, &'a str); 3] {
    [
        ("search", "search index=quay_logs"),
        ("earliest_time", earliest),
        ("latest_time", latest),
    ]
}

async fn count(emu: &RunningEmulator, earliest: &str, latest: &str) -> reqwest::Response {
    post(
        emu,
        "search/v2/jobs",
        &[
            ("search", "search index=quay_logs | stats count"),
            ("exec_mode", "oneshot"),
            ("earliest_time", earliest),
            ("latest_time", latest),
        ],
    )
    .await
}

async fn counted(emu: &RunningEmulator, earliest: &str, latest: &str) -> u64 {
    let r = count(emu, earliest, latest).await;
    assert_eq!(r.status(), 200, "{earliest}..{latest}");
    let v: Value = r.json().await.expect("json");
    v["results"][0]["count"]
        .as_str()
        .and_then(|c| c.parse().ok())
        .expect("a count")
}

#[tokio::test]
async fn time_bounds_in_every_form_splunk_takes() {
    let emu = emulator(Faults::default(), 0.0).await;
    // One day of ten: 2,000 events, whichever way the same instants are written.
    for (earliest, latest) in [
        ("1704153600", "1704240000"),
        ("1704153600.000", "1704240000.0"),
        ("2024-01-02T00:00:00", "2024-01-03T00:00:00"),
        ("2024-01-02T00:00:00.000", "2024-01-03T00:00:00.000"),
        ("2024-01-02T00:00:00Z", "2024-01-03T00:00:00Z"),
        ("2024-01-02T01:00:00+01:00", "2024-01-03T01:00:00.000+0100"),
        ("01/02/2024:00:00:00", "01/03/2024:00:00:00"),
    ] {
        assert_eq!(counted(&emu, earliest, latest).await, 2_000, "{earliest}");
    }
    // Relative modifiers resolve against now: the whole 2024 data set is long past.
    assert_eq!(counted(&emu, "-100y@y", "now").await, 20_000);
    assert_eq!(counted(&emu, "-1d@d", "now").await, 0);
    for bad in ["yesterday", "-1x", "2024-13-01T00:00:00", "now-1d"] {
        let r = count(&emu, bad, "now").await;
        assert_eq!(r.status(), 400, "{bad}");
        let v: Value = r.json().await.expect("json");
        assert_eq!(v["messages"][0]["type"], "FATAL");
        assert!(
            v["messages"][0]["text"]
                .as_str()
                .unwrap()
                .contains("earliest_time"),
            "{v}"
        );
    }
    emu.shutdown().await;
}

#[tokio::test]
async fn export_streams_and_jobs_cost_the_scan_rate() {
    // 20,000 events/s: 4,000 rows take at least 0.2 s to stream or to search.
    let emu = emulator(
        Faults {
            search_events_per_sec: Some(20_000),
            ..Faults::default()
        },
        0.0,
    )
    .await;
    let day = search_between("2024-01-02T00:00:00", "2024-01-04T00:00:00");
    let t = Instant::now();
    let rows = export(&emu, &day).await.expect("complete stream");
    assert_eq!(rows.len(), 4_000);
    assert!(
        t.elapsed() >= Duration::from_millis(200),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(emu.stats().events_streamed, 4_000);

    // A job that pages by re-searching pays for every row before the page it wants.
    blocking_job_takes(
        &emu,
        &[("search", "search index=quay_logs | head 6000")],
        300,
    )
    .await;
    // Quay's search client pages with `count`/`offset` on the job: the page's end is scanned.
    let page = [
        ("search", "search index=quay_logs"),
        ("count", "1000"),
        ("offset", "5000"),
    ];
    blocking_job_takes(&emu, &page, 300).await;
    // A count reads every matching event.
    let t = Instant::now();
    assert_eq!(
        counted(&emu, "2024-01-01T00:00:00", "2024-01-03T00:00:00").await,
        4_000
    );
    assert!(
        t.elapsed() >= Duration::from_millis(200),
        "{:?}",
        t.elapsed()
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn searches_beyond_the_role_quota_get_503_until_one_ends() {
    let emu = emulator(
        Faults {
            search_events_per_sec: Some(10_000),
            max_concurrent_searches: Some(2),
            ..Faults::default()
        },
        0.0,
    )
    .await;
    // Two jobs of 5,000 events each take 0.5 s: both hold a slot meanwhile.
    for _ in 0..2 {
        let r = post(
            &emu,
            "search/v2/jobs",
            &[("search", "search index=quay_logs | head 5000")],
        )
        .await;
        assert_eq!(r.status(), 201);
    }
    let refused = post(
        &emu,
        "search/v2/jobs/export",
        &[("search", "search index=quay_logs")],
    )
    .await;
    assert_eq!(refused.status(), 503);
    let v: Value = refused.json().await.expect("json");
    assert!(
        v["messages"][0]["text"]
            .as_str()
            .unwrap()
            .contains("role quota"),
        "{v}"
    );
    assert_eq!(emu.stats().quota_refused, 1);
    tokio::time::sleep(Duration::from_millis(900)).await;
    let rows = export(
        &emu,
        &[
            ("search", "search index=quay_logs"),
            ("latest_time", "1704070000"),
        ],
    )
    .await
    .expect("a slot is free again once the jobs are done");
    assert!(!rows.is_empty());
    assert_eq!(emu.stats().peak_searches, 2);
    emu.shutdown().await;
}

#[tokio::test]
async fn a_stream_cut_once_is_whole_when_the_same_search_is_repeated() {
    let emu = emulator(
        Faults {
            cut_once_after: Some(1_500),
            ..Faults::default()
        },
        0.0,
    )
    .await;
    let day = search_between("2024-01-02T00:00:00", "2024-01-03T00:00:00");
    assert!(export(&emu, &day).await.is_none(), "first stream is cut");
    assert_eq!(
        export(&emu, &day).await.expect("repeat is whole").len(),
        2_000
    );
    // Other bounds are another search, cut once in its turn.
    let other = search_between("2024-01-03T00:00:00", "2024-01-04T00:00:00");
    assert!(export(&emu, &other).await.is_none());
    assert_eq!(export(&emu, &other).await.expect("whole").len(), 2_000);
    emu.shutdown().await;
}

#[tokio::test]
async fn skewed_synthetic_events_cluster_in_the_first_tenth() {
    let emu = emulator(Faults::default(), 0.8).await;
    assert_eq!(
        counted(&emu, "2024-01-01T00:00:00", "2024-01-02T00:00:00").await,
        16_000
    );
    assert_eq!(
        counted(&emu, "2024-01-02T00:00:00", "2024-01-11T00:00:00").await,
        4_000
    );
    emu.shutdown().await;
}
