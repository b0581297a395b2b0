//! The Splunk client, query builder and mapper against a spawned Splunk emulator.

use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use logexport::config::{Secret, SplunkConfig};
use logexport::domain::{Namespace, Performer, RepositoryName};
use logexport::emulator::{self, EmulatorOptions, Faults, RunningEmulator, SyntheticSpec};
use logexport::splunk::{
    BuiltQuery, RetryPolicy, Row, RowBatch, SearchFilters, SplunkClient, SplunkError, StatsField,
    map_row, quote_value,
};
use serde_json::{Value, json};

const TOKEN: &str = "splunk-it-token";

async fn start(opts: EmulatorOptions) -> RunningEmulator {
    emulator::spawn(EmulatorOptions {
        token: Some(TOKEN.into()),
        ..opts
    })
    .await
    .expect("emulator starts")
}

/// An emulator serving `count` synthetic events of `ns0`, spread over `seconds` from
/// 1_700_000_000, with `faults`.
async fn synthetic(count: u64, seconds: i64, faults: Faults) -> RunningEmulator {
    start(EmulatorOptions {
        synthetic: Some(SyntheticSpec {
            count,
            start: at(1_700_000_000),
            end: at(1_700_000_000 + seconds),
            namespaces: 1,
            skew: 0.0,
        }),
        faults,
        ..EmulatorOptions::default()
    })
    .await
}

fn client_with_token(emu: &RunningEmulator, token: &str) -> SplunkClient {
    let cfg = SplunkConfig {
        host: "127.0.0.1".into(),
        port: emu.addr().port(),
        url_scheme: "http".into(),
        bearer_token: Secret::new(token),
        connect_timeout_seconds: 5,
        read_timeout_seconds: 30,
        search_timeout_seconds: 30,
        max_retries: 20,
        ..SplunkConfig::default()
    };
    SplunkClient::new(&cfg)
        .expect("client builds")
        .with_retry_policy(RetryPolicy {
            max_retries: 20,
            base_delay: Duration::from_millis(5),
            max_delay: Duration::from_millis(50),
        })
}

fn client(emu: &RunningEmulator) -> SplunkClient {
    client_with_token(emu, TOKEN)
}

fn at(secs: i64) -> DateTime<Utc> {
    Utc.timestamp_opt(secs, 0).single().expect("valid time")
}

fn ns(name: &str) -> Namespace {
    Namespace::parse(name).expect("valid namespace")
}

fn audit(account: &str, repo: &str, kind: &str, secs: i64) -> Value {
    json!({"kind": kind, "account": account, "performer": "alice", "performer_kind": "user",
           "performer_email": "alice@example.com", "repository": repo, "ip": "10.0.0.1",
           "metadata_json": {"repo": repo, "t": secs}, "datetime": secs})
}

/// Streams a whole export, mapping each row; returns `(namespace, repository, epoch seconds)`.
async fn export_all(client: &SplunkClient, query: &BuiltQuery) -> Vec<(String, String, i64)> {
    let mut stream = client.export(query).await.expect("export starts");
    let mut out = Vec::new();
    while let Some(row) = stream.next_row().await {
        let entry = map_row(&row.expect("row")).expect("row maps");
        out.push((
            entry.namespace.unwrap_or_default().into_owned(),
            entry.repository.unwrap_or_default().into_owned(),
            entry.datetime.timestamp(),
        ));
    }
    out.sort_by_key(|r| r.2);
    out
}

/// org1 at t=1000 (a), 1500 (b), 1999 (a), 2000 (a); org2 at 1000 and 1500.
async fn two_namespaces() -> RunningEmulator {
    let emu = start(EmulatorOptions::default()).await;
    for (account, repo, t) in [
        ("org1", "a", 1000),
        ("org1", "b", 1500),
        ("org1", "a", 1999),
        ("org1", "a", 2000),
        ("org2", "a", 1000),
        ("org2", "c", 1500),
    ] {
        emu.ingest(audit(account, repo, "push_repo", t));
    }
    emu
}

#[tokio::test]
async fn namespace_repository_and_time_filters_hold_at_the_range_edges() {
    let emu = two_namespaces().await;
    let client = client(&emu);

    let org1 = SearchFilters {
        namespace: Some(ns("org1")),
        ..client.filters(at(1000), at(2000))
    };
    let rows = export_all(&client, &org1.build().unwrap()).await;
    let want: Vec<(String, String, i64)> = [("a", 1000), ("b", 1500), ("a", 1999)]
        .iter()
        .map(|(r, t)| ("org1".to_owned(), (*r).to_owned(), *t))
        .collect();
    // Earliest (1000) is inclusive, latest (2000) exclusive; org2 never appears.
    assert_eq!(rows, want);

    let repo_a = SearchFilters {
        repository: Some(RepositoryName::parse("a").unwrap()),
        ..org1.clone()
    };
    let rows = export_all(&client, &repo_a.build().unwrap()).await;
    assert_eq!(
        rows.iter().map(|r| r.2).collect::<Vec<_>>(),
        [1000, 1999],
        "{rows:?}"
    );

    // The same filters through a search job, paged, give the same rows.
    let paged = client
        .search_rows(&org1.build().unwrap(), 100)
        .await
        .expect("search job");
    let mut times: Vec<i64> = paged
        .iter()
        .map(|r| map_row(r).expect("maps").datetime.timestamp())
        .collect();
    times.sort();
    assert_eq!(times, [1000, 1500, 1999]);

    // `stats count by` through the typed pipe.
    let counts = client
        .search_rows(
            &org1.build().unwrap().count_by(&[StatsField::Repository]),
            100,
        )
        .await
        .expect("stats search");
    let mut counts: Vec<(String, String)> = counts
        .iter()
        .map(|r| {
            (
                r.field_text("repository").unwrap(),
                r.field_text("count").unwrap(),
            )
        })
        .collect();
    counts.sort();
    assert_eq!(
        counts,
        [
            ("a".to_owned(), "2".to_owned()),
            ("b".to_owned(), "1".to_owned())
        ]
    );
    emu.shutdown().await;
}

fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[tokio::test]
async fn a_100k_event_export_streams_with_bounded_memory() {
    const N: u64 = 100_000;
    let emu = synthetic(N, 86_400, Faults::default()).await;
    let client = client(&emu);
    let query = SearchFilters {
        namespace: Some(ns("ns0")),
        ..client.filters(at(1_700_000_000), at(1_700_086_400))
    }
    .build()
    .unwrap();

    let started = Instant::now();
    let base_rss = rss_bytes().unwrap_or(0);
    let mut peak_growth = 0u64;
    let mut stream = client.export(&query).await.expect("export starts");
    let (mut rows, mut mapped, mut bytes) = (0u64, 0u64, 0u64);
    while let Some(row) = stream.next_row().await {
        let row = row.expect("no stream error");
        rows += 1;
        bytes += row.as_bytes().len() as u64;
        if let Ok(entry) = map_row(&row) {
            assert_eq!(entry.namespace.as_deref(), Some("ns0"));
            mapped += 1;
        }
        if rows % 10_000 == 0 {
            peak_growth = peak_growth.max(rss_bytes().unwrap_or(0).saturating_sub(base_rss));
        }
    }
    assert_eq!(rows, N, "every event exported exactly once");
    assert_eq!(mapped, N, "every synthetic event maps");
    // Holding the rows would need about `bytes`; streaming must stay far below that.
    assert!(
        peak_growth < bytes / 2 && peak_growth < 64 << 20,
        "memory grew by {peak_growth} bytes while streaming {bytes} bytes"
    );
    eprintln!(
        "streamed {rows} rows ({bytes} bytes) in {:?}, peak RSS growth {peak_growth} bytes",
        started.elapsed()
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn searches_one_after_another_keep_one_connection() {
    // Each whole answer is read to its end after `lastrow`, so its connection goes back to the
    // client's pool: at month-end every small export is a search, and with Splunk's TLS a new
    // connection each would be a handshake each.
    let emu = synthetic(2_000, 2_000, Faults::default()).await;
    let client = client(&emu);
    let query = client
        .filters(at(1_700_000_000), at(1_700_002_000))
        .build()
        .unwrap();
    for _ in 0..4 {
        let mut stream = client.export(&query).await.expect("export starts");
        let mut rows = 0;
        while let Some(row) = stream.next_row().await {
            row.expect("ok");
            rows += 1;
        }
        assert_eq!(rows, 2_000);
        // What follows `lastrow` is read in the background, at once.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(emu.stats().export_requests, 4);
    assert_eq!(emu.stats().connections, 1, "a connection per search");
    emu.shutdown().await;
}

#[tokio::test]
async fn rows_are_handed_on_as_they_arrive() {
    let emu = synthetic(
        400,
        400,
        Faults {
            slow_bytes_per_sec: Some(100_000),
            ..Faults::default()
        },
    )
    .await;
    let client = client(&emu);
    let query = client
        .filters(at(1_700_000_000), at(1_700_000_400))
        .build()
        .unwrap();
    let started = Instant::now();
    let mut stream = client.export(&query).await.expect("export starts");
    let first = stream.next_row().await.expect("a first row").expect("ok");
    let first_after = started.elapsed();
    let mut rows = 1;
    while let Some(row) = stream.next_row().await {
        row.expect("ok");
        rows += 1;
    }
    let total = started.elapsed();
    assert_eq!(rows, 400);
    assert!(map_row(&first).is_ok());
    assert!(
        first_after * 3 < total,
        "first row after {first_after:?}, whole stream {total:?}"
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn batches_are_full_and_hold_exactly_the_rows_read_one_by_one() {
    const N: u64 = 3_000;
    let emu = synthetic(N, 3_000, Faults::default()).await;
    let client = client(&emu);
    let query = client
        .filters(at(1_700_000_000), at(1_700_003_000))
        .build()
        .unwrap();
    let mut one_by_one = Vec::new();
    let mut stream = client.export(&query).await.expect("export starts");
    while let Some(row) = stream.next_row().await {
        one_by_one.push(row.expect("ok").as_bytes().to_vec());
    }

    // A few rows one by one first: the lines already split must not be lost or repeated.
    let mut stream = client.export(&query).await.expect("export starts");
    let mut batched: Vec<Vec<u8>> = Vec::new();
    for _ in 0..3 {
        batched.push(
            stream
                .next_row()
                .await
                .unwrap()
                .unwrap()
                .as_bytes()
                .to_vec(),
        );
    }
    let mut sizes = Vec::new();
    let mut batch = RowBatch::default();
    loop {
        let more = stream
            .next_batch(&mut batch, 1_000)
            .await
            .expect("no error");
        sizes.push(batch.len());
        batched.extend(batch.iter().map(<[u8]>::to_vec));
        batch.clear();
        if !more {
            break;
        }
    }
    assert_eq!(batched.len() as u64, N);
    assert_eq!(batched, one_by_one, "same rows in the same order");
    let (last, full) = sizes.split_last().unwrap();
    assert!(
        full.iter().all(|&n| n >= 1_000),
        "batches end only when full: {sizes:?}"
    );
    assert!(*last <= 1_000 + 100, "{sizes:?}");
    for row in batched.iter().take(5) {
        let row = Row::from_json(row.clone()).expect("a JSON object");
        assert!(map_row(&row).is_ok());
    }

    // A cut stream fails the batch read; it never ends as if complete.
    emu.set_faults(Faults {
        cut_after: Some(2_500),
        ..Faults::default()
    });
    let mut stream = client.export(&query).await.expect("export starts");
    let mut rows = 0;
    let err = loop {
        match stream.next_batch(&mut batch, 1_000).await {
            Ok(true) => rows += batch.len(),
            Ok(false) => panic!("a cut stream ended as complete after {rows} rows"),
            Err(e) => break e,
        }
        batch.clear();
    };
    assert!(matches!(err, SplunkError::StreamCut { .. }), "{err:?}");
    assert!(rows <= 2_500, "{rows}");
    emu.shutdown().await;
}

#[tokio::test]
async fn transient_503s_are_retried_and_results_stay_complete() {
    let emu = two_namespaces().await;
    emu.set_faults(Faults {
        rate_503: 0.5,
        ..Faults::default()
    });
    let client = client(&emu);
    let filters = SearchFilters {
        namespace: Some(ns("org1")),
        ..client.filters(at(0), at(10_000))
    };
    for _ in 0..5 {
        let rows = export_all(&client, &filters.build().unwrap()).await;
        assert_eq!(rows.len(), 4, "{rows:?}");
        let paged = client
            .search_rows(&filters.build().unwrap(), 100)
            .await
            .expect("search job despite 503s");
        assert_eq!(paged.len(), 4);
    }
    assert!(emu.stats().injected_503 > 0, "the fault never fired");

    // Without retries the same fault surfaces as a retryable error.
    let impatient = client.clone().with_retry_policy(RetryPolicy {
        max_retries: 0,
        ..client.retry_policy()
    });
    emu.set_faults(Faults {
        rate_503: 1.0,
        ..Faults::default()
    });
    let err = impatient
        .export(&filters.build().unwrap())
        .await
        .expect_err("always 503");
    assert!(err.is_retryable(), "{err}");
    assert!(err.to_string().contains("503"), "{err}");
    emu.shutdown().await;
}

#[tokio::test]
async fn a_cut_stream_is_a_retryable_error_not_a_short_result() {
    let emu = synthetic(
        10_000,
        10_000,
        Faults {
            cut_after: Some(2_500),
            ..Faults::default()
        },
    )
    .await;
    let client = client(&emu);
    let query = client
        .filters(at(1_700_000_000), at(1_700_010_000))
        .build()
        .unwrap();
    let mut stream = client.export(&query).await.expect("export starts");
    let mut rows = 0u64;
    let err = loop {
        match stream.next_row().await {
            Some(Ok(_)) => rows += 1,
            Some(Err(e)) => break e,
            None => panic!("stream ended successfully after {rows} of 10000 rows"),
        }
    };
    assert!(err.is_retryable(), "{err}");
    assert!(matches!(err, SplunkError::StreamCut { .. }), "{err:?}");
    assert!(rows <= 2_500, "{rows}");
    assert!(stream.next_row().await.is_none(), "nothing after the error");
    emu.shutdown().await;
}

#[tokio::test]
async fn a_rejected_token_is_a_permanent_error_naming_splunk() {
    let emu = two_namespaces().await;
    let wrong = "definitely-wrong-token";
    let client = client_with_token(&emu, wrong);
    let query = client.filters(at(0), at(10_000)).build().unwrap();
    for err in [
        client.export(&query).await.expect_err("401"),
        client.search_rows(&query, 10).await.expect_err("401"),
    ] {
        assert!(!err.is_retryable(), "{err}");
        let text = err.to_string();
        assert!(text.contains("Splunk rejected the bearer token"), "{text}");
        assert!(!text.contains(wrong), "the token leaked: {text}");
    }
    emu.shutdown().await;
}

#[tokio::test]
async fn injection_attempts_never_return_another_namespaces_events() {
    // Two namespaces from an NDJSON data set, plus an event whose account literally is hostile.
    let hostile = r#"x" OR account="victim"#;
    let path = std::env::temp_dir().join(format!("splunk-it-{}.ndjson", uuid::Uuid::new_v4()));
    let lines: Vec<String> = [
        audit("victim", "secret", "push_repo", 1000),
        audit("victim", "secret", "pull_repo", 1001),
        audit("attacker", "mine", "push_repo", 1002),
        audit(hostile, "odd", "push_repo", 1003),
    ]
    .iter()
    .map(Value::to_string)
    .collect();
    std::fs::write(&path, lines.join("\n") + "\n").expect("write data set");
    let emu = start(EmulatorOptions {
        data_files: vec![path.clone()],
        ..EmulatorOptions::default()
    })
    .await;
    let client = client(&emu);

    for bad in [
        r#"x" OR account="*"#,
        r#"a\" | delete"#,
        "*",
        "attacker\nvictim",
        "attacker | search account=victim",
        "[search account=victim]",
    ] {
        assert!(Namespace::parse(bad).is_err(), "namespace {bad:?} accepted");
        assert!(Performer::parse(bad).is_err(), "performer {bad:?} accepted");
        let kinds = SearchFilters {
            namespace: Some(ns("attacker")),
            excluded_kinds: vec![bad.into()],
            ..client.filters(at(0), at(10_000))
        };
        assert!(kinds.build().is_err(), "kind {bad:?} accepted");
    }

    // A free-text value through the escaping is searched literally: it finds only the event
    // whose account is exactly that text, never the victim's.
    let base = client.filters(at(0), at(10_000)).build().unwrap();
    let literal = BuiltQuery {
        spl: format!(
            "{} account={}",
            base.spl,
            quote_value("account", hostile).unwrap()
        ),
        ..base.clone()
    };
    let rows = export_all(&client, &literal).await;
    assert_eq!(rows, [(hostile.to_owned(), "odd".to_owned(), 1003)]);
    assert!(quote_value("account", r#"x" OR account="*"#).is_err());

    // The attacker's own filtered export holds only its own events.
    let own = SearchFilters {
        namespace: Some(ns("attacker")),
        ..client.filters(at(0), at(10_000))
    };
    let rows = export_all(&client, &own.build().unwrap()).await;
    assert_eq!(rows, [("attacker".to_owned(), "mine".to_owned(), 1002)]);
    emu.shutdown().await;
    let _ = std::fs::remove_file(path);
}

/// Makes a CA and a server certificate for 127.0.0.1 with the `openssl` command; returns
/// `(ca.pem, server.pem, server.key)`.
fn make_certs(
    dir: &std::path::Path,
) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let run = |args: &[&str]| {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl runs");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=logexport test CA",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        "/CN=127.0.0.1",
    ]);
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .expect("write ext");
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
    (
        dir.join("ca.pem"),
        dir.join("server.pem"),
        dir.join("server.key"),
    )
}

#[tokio::test]
async fn https_with_a_private_ca_is_verified_through_ssl_ca_path() {
    let dir = std::env::temp_dir().join(format!("splunk-it-tls-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let (ca, cert, key) = make_certs(&dir);
    let emu = start(EmulatorOptions {
        tls: Some((cert, key)),
        ..EmulatorOptions::default()
    })
    .await;
    emu.ingest(audit("org1", "a", "push_repo", 1000));
    let cfg = |ca_path: Option<std::path::PathBuf>, verify: bool| SplunkConfig {
        host: "127.0.0.1".into(),
        port: emu.addr().port(),
        url_scheme: "https".into(),
        bearer_token: Secret::new(TOKEN),
        verify_ssl: verify,
        ssl_ca_path: ca_path,
        max_retries: 0,
        ..SplunkConfig::default()
    };
    let query = SearchFilters::new("quay_logs", at(0), at(10_000))
        .build()
        .unwrap();

    let trusted = SplunkClient::new(&cfg(Some(ca), true)).expect("client");
    assert_eq!(export_all(&trusted, &query).await.len(), 1);

    // Without the CA the certificate is refused, unless verification is switched off.
    let untrusted = SplunkClient::new(&cfg(None, true)).expect("client");
    let err = untrusted.export(&query).await.expect_err("unknown CA");
    assert!(err.to_string().contains("Splunk"), "{err}");
    let unverified = SplunkClient::new(&cfg(None, false)).expect("client");
    assert_eq!(export_all(&unverified, &query).await.len(), 1);
    emu.shutdown().await;
    let _ = std::fs::remove_dir_all(dir);
}
