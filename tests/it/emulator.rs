//! The Splunk emulator through its HTTP API, as a Splunk client sees it.

use std::time::Duration;

use chrono::{TimeZone, Utc};
use logexport::emulator::{
    self, EmulatorOptions, EventFilter, Faults, RunningEmulator, SyntheticSpec,
};
use serde_json::{Value, json};

const TOKEN: &str = "test-token";

fn client() -> reqwest::Client {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("reqwest client")
}

async fn start(opts: EmulatorOptions) -> RunningEmulator {
    emulator::spawn(EmulatorOptions {
        token: Some(TOKEN.into()),
        ..opts
    })
    .await
    .expect("emulator starts")
}

fn audit(ns: &str, repo: &str, kind: &str, secs: i64) -> Value {
    json!({"kind": kind, "account": ns, "performer": "alice", "performer_kind": "user",
           "repository": repo, "ip": "10.0.0.1", "metadata_json": {"repo": repo}, "datetime": secs})
}

/// Emulator with a small data set: org1 at t=100,200,300 (repo a,b,a), org2 at t=150.
async fn small() -> RunningEmulator {
    let emu = start(EmulatorOptions::default()).await;
    emu.ingest(audit("org1", "a", "push_repo", 100));
    emu.ingest(audit("org1", "b", "pull_repo", 200));
    emu.ingest(audit("org1", "a", "create_tag", 300));
    emu.ingest(audit("org2", "c", "push_repo", 150));
    emu
}

async fn post(emu: &RunningEmulator, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
    client()
        .post(format!("{}{path}", emu.base_url()))
        .bearer_auth(TOKEN)
        .form(form)
        .send()
        .await
        .expect("request")
}

async fn get(emu: &RunningEmulator, path: &str) -> reqwest::Response {
    client()
        .get(format!("{}{path}", emu.base_url()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .expect("request")
}

async fn export_lines(emu: &RunningEmulator, form: &[(&str, &str)]) -> Vec<Value> {
    let mut f = form.to_vec();
    f.push(("output_mode", "json"));
    let r = post(emu, "/services/search/v2/jobs/export", &f).await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.expect("export body");
    text.lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect()
}

fn results_of(lines: &[Value]) -> Vec<Value> {
    lines
        .iter()
        .filter_map(|l| l.get("result").cloned())
        .collect()
}

async fn create_job(emu: &RunningEmulator, search: &str, extra: &[(&str, &str)]) -> String {
    let mut f = vec![("search", search), ("output_mode", "json")];
    f.extend_from_slice(extra);
    let r = post(emu, "/services/search/v2/jobs", &f).await;
    assert_eq!(r.status(), 201);
    r.json::<Value>().await.expect("json")["sid"]
        .as_str()
        .expect("sid")
        .to_string()
}

async fn wait_done(emu: &RunningEmulator, sid: &str) -> Value {
    for _ in 0..200 {
        let v: Value = get(
            emu,
            &format!("/services/search/v2/jobs/{sid}?output_mode=json"),
        )
        .await
        .json()
        .await
        .expect("status json");
        if v["entry"][0]["content"]["isDone"] == true {
            return v["entry"][0]["content"].clone();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("job {sid} never finished");
}

#[tokio::test]
async fn every_auth_form_is_accepted_and_anything_else_is_401() {
    let emu = small().await;
    let url = format!("{}/services/server/info", emu.base_url());
    let c = client();
    assert_eq!(
        c.get(&url)
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let splunk = c
        .get(&url)
        .header("Authorization", format!("Splunk {TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(splunk.status(), 200);
    assert!(
        splunk
            .text()
            .await
            .unwrap()
            .contains("<s:key name=\"version\">9.1.2</s:key>")
    );
    assert_eq!(
        c.get(&url)
            .basic_auth("admin", Some("changeme"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let login = c
        .post(format!("{}/services/auth/login", emu.base_url()))
        .form(&[("username", "admin"), ("password", "changeme")])
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), 200);
    let body = login.text().await.unwrap();
    let key = body
        .split("<sessionKey>")
        .nth(1)
        .and_then(|s| s.split("</sessionKey>").next())
        .unwrap();
    let with_session = c
        .get(&url)
        .header("Authorization", format!("Splunk {key}"))
        .send()
        .await
        .unwrap();
    assert_eq!(with_session.status(), 200);

    let bad_login = c
        .post(format!(
            "{}/servicesNS/admin/search/auth/login?output_mode=json",
            emu.base_url()
        ))
        .form(&[("username", "admin"), ("password", "wrong")])
        .send()
        .await
        .unwrap();
    assert_eq!(bad_login.status(), 401);

    let none = c.get(&url).send().await.unwrap();
    assert_eq!(none.status(), 401);
    assert!(
        none.text()
            .await
            .unwrap()
            .contains("<msg type=\"WARN\">call not properly authenticated</msg>")
    );
    assert_eq!(
        c.get(&url)
            .bearer_auth("nope")
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(
        c.get(&url)
            .basic_auth("admin", Some("nope"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let json_401: Value = c
        .get(format!("{url}?output_mode=json"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(json_401["messages"][0]["type"], "WARN");
    emu.shutdown().await;
}

#[tokio::test]
async fn job_lifecycle_status_paging_cancel_and_unknown_sid() {
    let emu = small().await;
    let sid = create_job(&emu, r#"search index="quay_logs" account="org1""#, &[]).await;
    let content = wait_done(&emu, &sid).await;
    assert_eq!(content["dispatchState"], "DONE");
    assert_eq!(content["resultCount"], 3);
    assert_eq!(content["eventCount"], 3);

    let xml = get(
        &emu,
        &format!("/servicesNS/admin/search/search/v2/jobs/{sid}"),
    )
    .await
    .text()
    .await
    .unwrap();
    for needle in [
        "<s:key name=\"dispatchState\">DONE</s:key>",
        "<s:key name=\"isDone\">1</s:key>",
        "<s:key name=\"eai:acl\">",
    ] {
        assert!(xml.contains(needle), "{needle} missing in {xml}");
    }

    let page: Value = post(
        &emu,
        &format!("/services/search/v2/jobs/{sid}/results"),
        &[("output_mode", "json"), ("offset", "1"), ("count", "1")],
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(page["init_offset"], 1);
    assert_eq!(page["preview"], false);
    let results = page["results"].as_array().unwrap();
    assert_eq!(results.len(), 1);
    // Newest first, as Splunk orders events: 300, 200, 100.
    assert_eq!(results[0]["repository"], "b");
    assert_eq!(results[0]["_time"], "1970-01-01T00:03:20.000+00:00");
    let raw: Value = serde_json::from_str(results[0]["_raw"].as_str().unwrap()).unwrap();
    assert_eq!(raw, audit("org1", "b", "pull_repo", 200));
    assert_eq!(results[0]["metadata_json"], r#"{"repo":"b"}"#);

    let all: Value = get(
        &emu,
        &format!("/services/search/jobs/{sid}/events?output_mode=json&count=0"),
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(all["results"].as_array().unwrap().len(), 3);

    let cancel = post(
        &emu,
        &format!("/services/search/v2/jobs/{sid}/control"),
        &[("action", "cancel")],
    )
    .await;
    assert_eq!(cancel.status(), 200);
    let gone = get(&emu, &format!("/services/search/v2/jobs/{sid}")).await;
    assert_eq!(gone.status(), 404);
    assert!(
        gone.text()
            .await
            .unwrap()
            .contains("<msg type=\"FATAL\">Unknown sid.</msg>")
    );
    let unknown: Value = get(
        &emu,
        "/services/search/v2/jobs/12345.6/results?output_mode=json",
    )
    .await
    .json()
    .await
    .unwrap();
    assert_eq!(unknown["messages"][0]["text"], "Unknown sid.");

    let sid2 = create_job(&emu, "account=org2", &[("exec_mode", "blocking")]).await;
    let del = client()
        .delete(format!("{}/services/search/v2/jobs/{sid2}", emu.base_url()))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(del.status(), 200);
    assert_eq!(
        get(&emu, &format!("/services/search/v2/jobs/{sid2}"))
            .await
            .status(),
        404
    );
    assert_eq!(emu.stats().search_jobs_created, 2);
    emu.shutdown().await;
}

#[tokio::test]
async fn export_streams_rows_with_lastrow_and_half_open_range() {
    let emu = small().await;
    let lines = export_lines(
        &emu,
        &[
            ("search", "search account=org1"),
            ("earliest_time", "100"),
            ("latest_time", "300"),
        ],
    )
    .await;
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["offset"], 0);
    assert_eq!(lines[1]["offset"], 1);
    assert!(lines[0].get("lastrow").is_none());
    assert_eq!(lines[1]["lastrow"], true);
    let times: Vec<&str> = lines
        .iter()
        .map(|l| l["result"]["_time"].as_str().unwrap())
        .collect();
    assert_eq!(
        times,
        [
            "1970-01-01T00:03:20.000+00:00",
            "1970-01-01T00:01:40.000+00:00"
        ]
    );

    // Fractional bounds; the search-string time terms narrow the request range.
    let lines = export_lines(
        &emu,
        &[
            ("search", "account=org1 earliest=150"),
            ("earliest_time", "99.5"),
            ("latest_time", "300.001"),
        ],
    )
    .await;
    assert_eq!(results_of(&lines).len(), 2);
    let empty = export_lines(&emu, &[("search", "account=nobody")]).await;
    assert!(results_of(&empty).is_empty());
    assert_eq!(empty.last().unwrap()["lastrow"], true);
    assert_eq!(emu.stats().export_requests, 3);
    assert_eq!(emu.stats().search_jobs_created, 0);
    emu.shutdown().await;
}

#[tokio::test]
async fn unsupported_spl_is_a_splunk_shaped_400() {
    let emu = small().await;
    let r = post(
        &emu,
        "/services/search/v2/jobs/export",
        &[
            ("search", "search account=a OR account=b"),
            ("output_mode", "json"),
        ],
    )
    .await;
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["messages"][0]["type"], "FATAL");
    assert!(
        v["messages"][0]["text"]
            .as_str()
            .unwrap()
            .starts_with("Error in 'search' command:")
    );

    let r = post(
        &emu,
        "/services/search/jobs",
        &[("search", "search account=\"unterminated")],
    )
    .await;
    assert_eq!(r.status(), 400);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("<msg type=\"FATAL\">Error in &apos;search&apos; command")
    );
    let r = post(
        &emu,
        "/services/search/jobs",
        &[("search", "search x=1 | delete")],
    )
    .await;
    assert_eq!(r.status(), 400);
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("Unknown search command &apos;delete&apos;.")
    );
    assert_eq!(emu.stats().search_jobs_created, 0);
    emu.shutdown().await;
}

#[tokio::test]
async fn sort_head_reverse_fields_eval_and_stats() {
    let emu = small().await;
    let repos = |lines: &[Value]| -> Vec<String> {
        results_of(lines)
            .iter()
            .map(|r| r["repository"].as_str().unwrap_or("-").to_string())
            .collect()
    };
    let asc = export_lines(&emu, &[("search", "search * | reverse")]).await;
    assert_eq!(repos(&asc), ["a", "c", "b", "a"]);
    let sorted = export_lines(
        &emu,
        &[("search", "search * | sort 0 repository, -_time | head 3")],
    )
    .await;
    let times: Vec<String> = results_of(&sorted)
        .iter()
        .map(|r| r["_time"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(repos(&sorted), ["a", "a", "b"]);
    assert!(times[0] > times[1], "ties broken by -_time: {times:?}");

    let eval = export_lines(
        &emu,
        &[(
            "search",
            r#"account=org2 | eval day=strftime(_time, "%Y-%m-%d %H:%M:%S") | fields day, account"#,
        )],
    )
    .await;
    let row = &results_of(&eval)[0];
    assert_eq!(row["day"], "1970-01-01 00:02:30");
    assert_eq!(row["account"], "org2");
    assert!(row.get("repository").is_none());
    assert!(row.get("_raw").is_some(), "internal fields stay");

    let stats = export_lines(
        &emu,
        &[(
            "search",
            "search index=quay_logs | stats count by account, repository",
        )],
    )
    .await;
    let got: Vec<(String, String, String)> = results_of(&stats)
        .iter()
        .map(|r| {
            (
                r["account"].as_str().unwrap().into(),
                r["repository"].as_str().unwrap().into(),
                r["count"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        got,
        [
            ("org1".into(), "a".into(), "2".into()),
            ("org1".into(), "b".into(), "1".into()),
            ("org2".into(), "c".into(), "1".into())
        ]
    );
    let total = export_lines(&emu, &[("search", "search account!=org2 | stats count")]).await;
    assert_eq!(results_of(&total)[0]["count"], "3");
    emu.shutdown().await;
}

#[tokio::test]
async fn faults_503_latency_and_cut_streams() {
    let emu = small().await;
    emu.set_faults(Faults {
        rate_503: 1.0,
        ..Faults::default()
    });
    let r = post(
        &emu,
        "/services/search/v2/jobs",
        &[("search", "search *"), ("output_mode", "json")],
    )
    .await;
    assert_eq!(r.status(), 503);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["messages"][0]["text"]
            .as_str()
            .unwrap()
            .contains("maximum number of concurrent historical searches")
    );
    assert_eq!(emu.stats().injected_503, 1);

    emu.set_faults(Faults {
        latency_ms: 150,
        ..Faults::default()
    });
    let t = std::time::Instant::now();
    assert_eq!(get(&emu, "/services/server/info").await.status(), 200);
    assert!(t.elapsed() >= Duration::from_millis(150));

    emu.set_faults(Faults {
        cut_after: Some(2),
        ..Faults::default()
    });
    let r = post(
        &emu,
        "/services/search/v2/jobs/export",
        &[("search", "search *"), ("output_mode", "json")],
    )
    .await;
    assert_eq!(r.status(), 200);
    let body = r.bytes().await;
    match body {
        Err(_) => {} // the connection was aborted mid-body, as a client should notice
        Ok(b) => {
            let text = String::from_utf8_lossy(&b);
            assert!(
                !text.contains("lastrow"),
                "cut stream must not end cleanly: {text}"
            );
            assert!(text.lines().count() <= 2);
        }
    }
    emu.set_faults(Faults {
        slow_bytes_per_sec: Some(4000),
        ..Faults::default()
    });
    let t = std::time::Instant::now();
    let lines = export_lines(&emu, &[("search", "search *")]).await;
    assert_eq!(results_of(&lines).len(), 4);
    assert!(
        t.elapsed() >= Duration::from_millis(250),
        "throttled: {:?}",
        t.elapsed()
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn ingested_events_become_searchable() {
    let emu = start(EmulatorOptions::default()).await;
    let simple = client()
        .post(format!(
            "{}/services/receivers/simple?index=quay_logs&sourcetype=quay",
            emu.base_url()
        ))
        .basic_auth("admin", Some("changeme"))
        .body(audit("viasimple", "r", "push_repo", 1_000).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(simple.status(), 200);
    let hec_body = format!(
        "{}{}",
        json!({"event": audit("viahec", "r", "push_repo", 2_000), "index": "quay_logs"}),
        json!({"event": {"kind": "pull_repo", "account": "viahec"}, "time": 3_000})
    );
    let hec = client()
        .post(format!("{}/services/collector/event", emu.base_url()))
        .header("Authorization", format!("Splunk {TOKEN}"))
        .body(hec_body)
        .send()
        .await
        .unwrap();
    assert_eq!(hec.status(), 200);
    assert_eq!(hec.json::<Value>().await.unwrap()["code"], 0);
    let denied = client()
        .post(format!("{}/services/collector/event", emu.base_url()))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(denied.status(), 401);

    let simple_rows = results_of(
        &export_lines(
            &emu,
            &[("search", "search sourcetype=quay account=viasimple")],
        )
        .await,
    );
    assert_eq!(simple_rows.len(), 1);
    let hec_rows = results_of(
        &export_lines(&emu, &[("search", "search index=quay_logs account=viahec")]).await,
    );
    assert_eq!(hec_rows.len(), 2);
    // HEC `time` is the fallback timestamp when the event has no `datetime`.
    assert_eq!(hec_rows[0]["_time"], "1970-01-01T00:50:00.000+00:00");
    assert_eq!(
        emu.events_in(&EventFilter {
            namespace: Some("viahec".into()),
            ..Default::default()
        })
        .len(),
        2
    );
    emu.shutdown().await;
}

fn spec() -> SyntheticSpec {
    SyntheticSpec {
        count: 10_000,
        start: Utc.with_ymd_and_hms(2024, 1, 1, 0, 0, 0).unwrap(),
        end: Utc.with_ymd_and_hms(2024, 1, 1, 10, 0, 0).unwrap(),
        namespaces: 7,
        skew: 0.0,
    }
}

#[tokio::test]
async fn synthetic_data_is_deterministic_and_filters_match_ground_truth() {
    let emu = start(EmulatorOptions {
        synthetic: Some(spec()),
        ..Default::default()
    })
    .await;
    let (from, to) = (
        Utc.with_ymd_and_hms(2024, 1, 1, 2, 0, 0).unwrap(),
        Utc.with_ymd_and_hms(2024, 1, 1, 3, 0, 0).unwrap(),
    );
    let want = emu.events_in(&EventFilter {
        namespace: Some("ns3".into()),
        earliest: Some(from),
        latest: Some(to),
        ..Default::default()
    });
    assert!(want.len() > 100);
    assert!(want.iter().all(|e| e["account"] == "ns3"));
    let (e, l) = (from.timestamp().to_string(), to.timestamp().to_string());
    let lines = export_lines(
        &emu,
        &[
            (
                "search",
                r#"search index="quay_logs" account="ns3" | reverse"#,
            ),
            ("earliest_time", &e),
            ("latest_time", &l),
        ],
    )
    .await;
    let got: Vec<Value> = results_of(&lines)
        .iter()
        .map(|r| serde_json::from_str(r["_raw"].as_str().unwrap()).unwrap())
        .collect();
    assert_eq!(got, want);
    assert_eq!(
        got[0],
        emulator::synthetic::event(&spec(), got_index(&got[0]))
    );

    // A job over synthetic data pages by offset; descending is the reverse of ascending.
    let sid = create_job(
        &emu,
        "search account=ns3",
        &[("earliest_time", &e), ("latest_time", &l)],
    )
    .await;
    assert_eq!(
        wait_done(&emu, &sid).await["resultCount"].as_u64().unwrap(),
        want.len() as u64
    );
    let page: Value = get(
        &emu,
        &format!("/services/search/v2/jobs/{sid}/results?output_mode=json&offset=0&count=2"),
    )
    .await
    .json()
    .await
    .unwrap();
    let newest: Value = serde_json::from_str(page["results"][0]["_raw"].as_str().unwrap()).unwrap();
    assert_eq!(&newest, want.last().unwrap());

    let repo_rows = results_of(
        &export_lines(
            &emu,
            &[(
                "search",
                "search account=ns3 repository=web | stats count by repository",
            )],
        )
        .await,
    );
    let total_web = emu
        .events_in(&EventFilter {
            namespace: Some("ns3".into()),
            repository: Some("web".into()),
            ..Default::default()
        })
        .len();
    assert_eq!(repo_rows[0]["count"], total_web.to_string());

    // The default `sort` keeps 10,000 rows as Splunk does; `sort 0` keeps all.
    let limited = export_lines(&emu, &[("search", "search * | sort _time | head 3")]).await;
    assert_eq!(results_of(&limited).len(), 3);
    emu.shutdown().await;
}

/// Finds the generator index of a synthetic event by its timestamp (events are evenly spaced).
fn got_index(ev: &Value) -> u64 {
    let t = chrono::DateTime::parse_from_rfc3339(ev["datetime"].as_str().unwrap()).unwrap();
    let s = spec();
    let span = (s.end - s.start).num_microseconds().unwrap() as i128;
    let off = (t.timestamp_micros() - s.start.timestamp_micros()) as i128;
    ((off * s.count as i128 + span - 1) / span) as u64
}

#[tokio::test]
async fn shutdown_refuses_new_connections() {
    let emu = small().await;
    let addr = emu.addr();
    emu.shutdown().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
