//! The read side against a real emulator: paging, token binding, filters, aggregates,
//! permissions and Splunk failures.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use chrono_tz::Tz;
use logexport::config::{Config, Secret};
use logexport::emulator::{self, EmulatorOptions, Faults, RunningEmulator, SyntheticSpec};
use serde_json::{Value, json};

use crate::helpers::{TestApp, spawn_app, use_emulator};

const SPLUNK_TOKEN: &str = "read-side-token";
const NAMESPACES: [&str; 3] = ["acme", "beta", "gamma"];
const REPOS: [&str; 3] = ["web", "api", "db"];
const PERFORMERS: [&str; 4] = ["alice", "bob", "acme+builder", "carol"];
const KINDS: [&str; 4] = ["push_repo", "pull_repo", "create_tag", "delete_tag"];

/// One generated event: its id (`metadata.n`) and the fields tests filter on.
#[derive(Debug, Clone)]
struct Event {
    n: u64,
    namespace: &'static str,
    repo: &'static str,
    performer: &'static str,
    kind: &'static str,
    time: DateTime<Utc>,
}

impl Event {
    fn json(&self) -> Value {
        json!({
            "kind": self.kind,
            "account": self.namespace,
            "performer": self.performer,
            "performer_kind": if self.performer.contains('+') { "robot" } else { "user" },
            "repository": self.repo,
            "ip": "10.0.0.1",
            "metadata_json": {"n": self.n, "namespace": self.namespace, "repo": self.repo},
            "datetime": self.time.to_rfc3339(),
        })
    }
}

/// ~1,300 events over 2024-03-08..2024-03-12 (across New York's DST change), with bursts of
/// up to 70 events in one second; deterministic.
fn data_set() -> Vec<Event> {
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = |m: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % m
    };
    let base = Utc.with_ymd_and_hms(2024, 3, 8, 0, 0, 0).unwrap();
    let mut events = Vec::new();
    let mut n = 0;
    for burst in 0..120 {
        let second = base + chrono::Duration::seconds(next(5 * 86_400) as i64);
        // Every tenth burst is large, so same-second groups straddle page boundaries.
        let size = if burst % 10 == 0 {
            40 + next(30)
        } else {
            1 + next(12)
        };
        for _ in 0..size {
            n += 1;
            events.push(Event {
                n,
                namespace: NAMESPACES[next(3) as usize],
                repo: REPOS[next(3) as usize],
                performer: PERFORMERS[next(4) as usize],
                kind: KINDS[next(4) as usize],
                time: second,
            });
        }
    }
    events
}

struct Env {
    emu: RunningEmulator,
    app: TestApp,
    events: Vec<Event>,
}

fn point_at(c: &mut Config, emu: &RunningEmulator, token: &str) {
    use_emulator(c, emu, token);
    c.splunk.search_timeout_seconds = 5;
    c.logs.page_token_key = Secret::new("test page key");
}

async fn start_emulator(synthetic: Option<SyntheticSpec>) -> RunningEmulator {
    emulator::spawn(EmulatorOptions {
        token: Some(SPLUNK_TOKEN.into()),
        synthetic,
        ..EmulatorOptions::default()
    })
    .await
    .expect("emulator")
}

async fn env() -> Env {
    let emu = start_emulator(None).await;
    let events = data_set();
    for e in &events {
        emu.ingest(e.json());
    }
    let app = spawn_app(|c| point_at(c, &emu, SPLUNK_TOKEN)).await;
    Env { emu, app, events }
}

async fn get(app: &TestApp, token: &str, path: &str) -> (u16, Value) {
    let resp = app
        .client
        .get(app.url(path))
        .bearer_auth(token)
        .send()
        .await
        .expect("request");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

const RANGE: &str = "starttime=03/08/2024&endtime=03/12/2024";

/// Walks every page; returns the logs and the page sizes.
async fn walk(app: &TestApp, token: &str, path_and_query: &str) -> (Vec<Value>, Vec<usize>) {
    let mut logs = Vec::new();
    let mut sizes = Vec::new();
    let mut next: Option<String> = None;
    for _ in 0..500 {
        let url = match &next {
            Some(t) => format!("{path_and_query}&next_page={}", urlencoding::encode(t)),
            None => path_and_query.to_owned(),
        };
        let (status, body) = get(app, token, &url).await;
        assert_eq!(status, 200, "{url}: {body}");
        assert!(body.get("search_unavailable").is_none(), "{body}");
        let page = body["logs"].as_array().expect("logs").clone();
        sizes.push(page.len());
        logs.extend(page);
        match body.get("next_page").and_then(Value::as_str) {
            Some(t) => next = Some(t.to_owned()),
            None => return (logs, sizes),
        }
    }
    panic!("more than 500 pages");
}

fn ids(logs: &[Value]) -> Vec<u64> {
    let mut ids: Vec<u64> = logs
        .iter()
        .map(|l| l["metadata"]["n"].as_u64().expect("metadata.n"))
        .collect();
    ids.sort_unstable();
    ids
}

fn expected(events: &[Event], keep: impl Fn(&Event) -> bool) -> Vec<u64> {
    let mut ids: Vec<u64> = events.iter().filter(|e| keep(e)).map(|e| e.n).collect();
    ids.sort_unstable();
    ids
}

fn assert_newest_first(logs: &[Value]) {
    let times: Vec<DateTime<Utc>> = logs
        .iter()
        .map(|l| {
            DateTime::parse_from_rfc2822(l["datetime"].as_str().expect("datetime"))
                .expect("RFC 2822")
                .with_timezone(&Utc)
        })
        .collect();
    assert!(times.windows(2).all(|w| w[0] >= w[1]), "not newest first");
}

fn assert_full_pages(sizes: &[usize]) {
    let (last, rest) = sizes.split_last().expect("a page");
    assert!(
        rest.iter().all(|s| *s == 20),
        "short page before the last: {sizes:?}"
    );
    assert!(*last <= 20);
}

#[tokio::test]
async fn paging_returns_every_event_once_newest_first_with_filters() {
    let env = env().await;
    let token = env.app.token("admin", &["acme"], &[], false).await;

    let (logs, sizes) = walk(
        &env.app,
        &token,
        &format!("/api/v1/organization/acme/logs?{RANGE}"),
    )
    .await;
    let want = expected(&env.events, |e| e.namespace == "acme");
    assert!(want.len() > 300, "data set too small: {}", want.len());
    assert_eq!(ids(&logs), want, "every acme event exactly once");
    assert_newest_first(&logs);
    assert_full_pages(&sizes);
    assert!(logs.iter().all(|l| l["metadata"]["namespace"] == "acme"));
    assert!(
        logs.iter().all(|l| l.get("namespace").is_none()),
        "no namespace block for org admins"
    );
    let robot = logs
        .iter()
        .find(|l| l["performer"]["name"] == "acme+builder")
        .expect("robot");
    assert_eq!(robot["performer"]["is_robot"], true);

    let (logs, sizes) = walk(
        &env.app,
        &token,
        &format!("/api/v1/organization/acme/logs?{RANGE}&performer=alice"),
    )
    .await;
    assert_eq!(
        ids(&logs),
        expected(&env.events, |e| e.namespace == "acme"
            && e.performer == "alice")
    );
    assert_full_pages(&sizes);

    let (logs, sizes) = walk(
        &env.app,
        &token,
        &format!("/api/v1/organization/acme/logs?{RANGE}&kind=push_repo&kind=create_tag"),
    )
    .await;
    let want = expected(&env.events, |e| {
        e.namespace == "acme" && (e.kind == "push_repo" || e.kind == "create_tag")
    });
    assert_eq!(ids(&logs), want);
    assert_newest_first(&logs);
    assert_full_pages(&sizes);

    let (logs, _) = walk(
        &env.app,
        &token,
        &format!("/api/v1/repository/acme/web/logs?{RANGE}&kind=delete_tag&performer=bob"),
    )
    .await;
    assert_eq!(
        ids(&logs),
        expected(&env.events, |e| {
            e.namespace == "acme"
                && e.repo == "web"
                && e.kind == "delete_tag"
                && e.performer == "bob"
        })
    );

    // Quay's envelope: the range as RFC 2822, the end exclusive.
    let (_, body) = get(
        &env.app,
        &token,
        &format!("/api/v1/organization/acme/logs?{RANGE}"),
    )
    .await;
    assert_eq!(body["start_time"], "Fri, 08 Mar 2024 00:00:00 -0000");
    assert_eq!(body["end_time"], "Wed, 13 Mar 2024 00:00:00 -0000");
    drop(env.emu);
}

#[tokio::test]
async fn tokens_are_bound_to_their_query_and_namespaces_never_leak() {
    let env = env().await;
    let both = env.app.token("both", &["acme", "beta"], &[], false).await;
    let first = |path: String| {
        let app = &env.app;
        let both = both.clone();
        async move {
            let (status, body) = get(app, &both, &path).await;
            assert_eq!(status, 200, "{body}");
            body["next_page"].as_str().expect("next_page").to_owned()
        }
    };
    let token = first(format!("/api/v1/organization/acme/logs?{RANGE}")).await;
    let enc = urlencoding::encode(&token).into_owned();

    let ok = get(
        &env.app,
        &both,
        &format!("/api/v1/organization/acme/logs?{RANGE}&next_page={enc}"),
    )
    .await;
    assert_eq!(ok.0, 200);
    for path in [
        format!("/api/v1/organization/beta/logs?{RANGE}&next_page={enc}"),
        format!("/api/v1/organization/acme/logs?{RANGE}&performer=alice&next_page={enc}"),
        format!("/api/v1/organization/acme/logs?{RANGE}&kind=push_repo&next_page={enc}"),
        format!(
            "/api/v1/organization/acme/logs?starttime=03/09/2024&endtime=03/12/2024&next_page={enc}"
        ),
        format!("/api/v1/repository/acme/web/logs?{RANGE}&next_page={enc}"),
    ] {
        let (status, body) = get(&env.app, &both, &path).await;
        assert_eq!(status, 400, "{path} accepted a foreign token: {body}");
        assert_eq!(body["error_type"], "invalid_request");
    }
    // One altered character anywhere.
    for pos in [0, token.len() / 2, token.len() - 1] {
        let mut altered: Vec<u8> = token.clone().into_bytes();
        altered[pos] = if altered[pos] == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(altered).unwrap();
        let (status, _) = get(
            &env.app,
            &both,
            &format!(
                "/api/v1/organization/acme/logs?{RANGE}&next_page={}",
                urlencoding::encode(&altered)
            ),
        )
        .await;
        assert_eq!(status, 400, "altered token at {pos} accepted");
    }
    // A token from a server with another key.
    let other = spawn_app(|c| {
        point_at(c, &env.emu, SPLUNK_TOKEN);
        c.logs.page_token_key = Secret::new("another key");
    })
    .await;
    let other_token = other.token("both", &["acme", "beta"], &[], false).await;
    let (status, _) = get(
        &other,
        &other_token,
        &format!("/api/v1/organization/acme/logs?{RANGE}&next_page={enc}"),
    )
    .await;
    assert_eq!(status, 400);

    // An admin of acme only: beta is forbidden whatever the parameters; acme shows only acme.
    let acme = env.app.token("acmeadmin", &["acme"], &[], false).await;
    for path in [
        format!("/api/v1/organization/beta/logs?{RANGE}"),
        format!("/api/v1/organization/beta/aggregatelogs?{RANGE}"),
        format!("/api/v1/repository/beta/web/logs?{RANGE}"),
        "/api/v1/superuser/logs".to_string(),
    ] {
        assert_eq!(get(&env.app, &acme, &path).await.0, 403, "{path}");
    }
    let (_, body) = get(
        &env.app,
        &acme,
        &format!("/api/v1/organization/acme/logs?{RANGE}&performer=beta&kind=push_repo"),
    )
    .await;
    assert!(
        body["logs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["metadata"]["namespace"] == "acme")
    );
    // Invalid parameters are refused, never replaced by defaults.
    for q in [
        "starttime=13/45/2024",
        "performer=%22%20OR%20x",
        "kind=Bad*",
        "timezone=Mars/Base",
        "next_page=garbage",
    ] {
        let (status, body) = get(
            &env.app,
            &acme,
            &format!("/api/v1/organization/acme/logs?{q}"),
        )
        .await;
        assert_eq!(status, 400, "{q}: {body}");
    }
}

fn expected_aggregate(events: &[Event], ns: &str, tz: Tz) -> BTreeMap<(String, String), u64> {
    let mut out = BTreeMap::new();
    for e in events.iter().filter(|e| e.namespace == ns) {
        let day: NaiveDate = e.time.with_timezone(&tz).date_naive();
        *out.entry((day.to_string(), e.kind.to_string()))
            .or_default() += 1;
    }
    out
}

fn got_aggregate(body: &Value, tz: Tz) -> BTreeMap<(String, String), u64> {
    body["aggregated"]
        .as_array()
        .unwrap_or_else(|| panic!("aggregated: {body}"))
        .iter()
        .map(|a| {
            let start = DateTime::parse_from_rfc2822(a["datetime"].as_str().unwrap()).unwrap();
            let local = start.with_timezone(&tz);
            assert_eq!(local.time(), chrono::NaiveTime::MIN, "day start {a}");
            (
                (
                    local.date_naive().to_string(),
                    a["kind"].as_str().unwrap().to_string(),
                ),
                a["count"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn aggregates_match_the_data_set_in_utc_and_new_york() {
    let env = env().await;
    let token = env.app.token("admin", &["acme"], &[], false).await;
    // The data spans 03/08..03/12 UTC; a wider range catches the New York evening of the 7th.
    let range = "starttime=03/07/2024&endtime=03/13/2024";
    let (status, body) = get(
        &env.app,
        &token,
        &format!("/api/v1/organization/acme/aggregatelogs?{range}"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        got_aggregate(&body, Tz::UTC),
        expected_aggregate(&env.events, "acme", Tz::UTC)
    );
    assert!(
        body["aggregated"][0]["datetime"]
            .as_str()
            .unwrap()
            .ends_with("-0000")
    );

    let ny: Tz = "America/New_York".parse().unwrap();
    let (status, body) = get(
        &env.app,
        &token,
        &format!("/api/v1/organization/acme/aggregatelogs?{range}&timezone=America/New_York"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let want = expected_aggregate(&env.events, "acme", ny);
    assert_eq!(got_aggregate(&body, ny), want);
    assert_ne!(
        want,
        expected_aggregate(&env.events, "acme", Tz::UTC),
        "time zone must matter"
    );

    // Performer filter and the 32-day limit.
    let (_, body) = get(
        &env.app,
        &token,
        &format!("/api/v1/organization/acme/aggregatelogs?{range}&performer=bob"),
    )
    .await;
    let total: u64 = got_aggregate(&body, Tz::UTC).values().sum();
    assert_eq!(
        total,
        env.events
            .iter()
            .filter(|e| e.namespace == "acme" && e.performer == "bob")
            .count() as u64
    );
    let (status, _) = get(
        &env.app,
        &token,
        "/api/v1/organization/acme/aggregatelogs?starttime=01/01/2024&endtime=03/01/2024",
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn permissions_and_the_superuser_view() {
    let env = env().await;
    let resp = env
        .app
        .client
        .get(env.app.url("/api/v1/user/logs"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let resp = env
        .app
        .client
        .get(env.app.url("/api/v1/organization/acme/logs"))
        .bearer_auth("lxp_unknown")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);

    // A user lists its own namespace ("gamma" here is a user).
    let gamma = env.app.token("gamma", &[], &[], false).await;
    let (logs, _) = walk(&env.app, &gamma, &format!("/api/v1/user/logs?{RANGE}")).await;
    assert_eq!(
        ids(&logs),
        expected(&env.events, |e| e.namespace == "gamma")
    );
    assert_eq!(
        get(&env.app, &gamma, "/api/v1/organization/acme/logs")
            .await
            .0,
        403
    );
    // Quay's UI addresses a user's own namespace as an organization; the user may read it.
    let (logs, _) = walk(
        &env.app,
        &gamma,
        &format!("/api/v1/organization/gamma/logs?{RANGE}"),
    )
    .await;
    assert_eq!(
        ids(&logs),
        expected(&env.events, |e| e.namespace == "gamma")
    );

    // A repository admin sees that repository only.
    let repo_admin = env.app.token("dev", &[], &["beta/api"], false).await;
    let (logs, _) = walk(
        &env.app,
        &repo_admin,
        &format!("/api/v1/repository/beta/api/logs?{RANGE}"),
    )
    .await;
    assert_eq!(
        ids(&logs),
        expected(&env.events, |e| e.namespace == "beta" && e.repo == "api")
    );
    assert_eq!(
        get(&env.app, &repo_admin, "/api/v1/repository/beta/web/logs")
            .await
            .0,
        403
    );
    assert_eq!(
        get(&env.app, &repo_admin, "/api/v1/organization/beta/logs")
            .await
            .0,
        403
    );

    // The superuser sees every namespace, each log with its namespace block.
    let root = env.app.token("root", &[], &[], true).await;
    let (logs, sizes) = walk(&env.app, &root, &format!("/api/v1/superuser/logs?{RANGE}")).await;
    assert_eq!(ids(&logs), expected(&env.events, |_| true));
    assert_full_pages(&sizes);
    assert!(
        logs.iter()
            .all(|l| l["namespace"]["name"] == l["metadata"]["namespace"])
    );
    let (status, body) = get(
        &env.app,
        &root,
        &format!("/api/v1/superuser/aggregatelogs?{RANGE}"),
    )
    .await;
    assert_eq!(status, 200);
    let total: u64 = got_aggregate(&body, Tz::UTC).values().sum();
    assert_eq!(total, env.events.len() as u64);
}

fn assert_unavailable(body: &Value, key: &str, needle: &str) {
    assert_eq!(body["search_unavailable"], true, "{body}");
    assert_eq!(body[key], json!([]), "{body}");
    let message = body["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(needle),
        "message {message:?} lacks {needle:?}"
    );
}

#[tokio::test]
async fn splunk_failures_answer_search_unavailable_within_the_deadline() {
    let env = env().await;
    let token = env.app.token("admin", &["acme"], &[], false).await;
    let logs = format!("/api/v1/organization/acme/logs?{RANGE}");
    let aggregate = format!("/api/v1/organization/acme/aggregatelogs?{RANGE}");

    // Splunk rejects our token.
    let wrong = spawn_app(|c| point_at(c, &env.emu, "not-the-token")).await;
    let wrong_user = wrong.token("admin", &["acme"], &[], false).await;
    let (status, body) = get(&wrong, &wrong_user, &logs).await;
    assert_eq!(status, 200);
    assert_unavailable(&body, "logs", "Splunk rejected the bearer token");
    let (_, body) = get(&wrong, &wrong_user, &aggregate).await;
    assert_unavailable(&body, "aggregated", "Splunk rejected the bearer token");

    // Every dispatch answered 503: retried, then unavailable.
    env.emu.set_faults(Faults {
        rate_503: 1.0,
        ..Faults::default()
    });
    let before = env.emu.stats().injected_503;
    let started = Instant::now();
    let (status, body) = get(&env.app, &token, &logs).await;
    assert_eq!(status, 200);
    assert_unavailable(&body, "logs", "503");
    assert!(
        env.emu.stats().injected_503 - before >= 2,
        "503 was not retried"
    );
    assert!(
        started.elapsed() < Duration::from_secs(6),
        "took {:?}",
        started.elapsed()
    );
    env.emu.set_faults(Faults::default());
    let (_, body) = get(&env.app, &token, &logs).await;
    assert!(
        body.get("search_unavailable").is_none(),
        "recovered: {body}"
    );

    // Splunk gone.
    let app = env.app;
    env.emu.shutdown().await;
    let started = Instant::now();
    let (status, body) = get(&app, &token, &logs).await;
    assert_eq!(status, 200);
    assert_unavailable(&body, "logs", "Splunk");
    let (_, body) = get(&app, &token, &aggregate).await;
    assert_unavailable(&body, "aggregated", "Splunk");
    assert!(
        started.elapsed() < Duration::from_secs(12),
        "took {:?}",
        started.elapsed()
    );
    let metrics = app.metrics().await;
    assert!(
        crate::helpers::metric(&metrics, "logexport_search_unavailable_total") >= 1.0,
        "not counted"
    );
}
