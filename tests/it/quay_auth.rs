//! `[auth] mode = "quay"` against the Quay stand-in (`quay_standin.rs`, Quay's permission model),
//! and the audit trail through the emulator's HTTP Event Collector. The whole credential × endpoint
//! matrix against real Quay's recorded answers is `quay_parity.rs`; these tests cover the rest:
//! caching, failures, cookies, hostile names, schedules and the service token.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use logexport::config::{AuditSink, AuthMode, Config, Secret};
use logexport::emulator::{self, EmulatorOptions, Faults, RunningEmulator};
use serde_json::{Value, json};

use crate::helpers::{TestApp, audit_jobs, audit_runner, audit_waiting, eventually, spawn_app};
use crate::quay_standin::{self, Behaviour, Grant, Standin, User, World};

const MAIL: &str = r#"{"callback_email": "admin@example.com"}"#;
const SPLUNK_TOKEN: &str = "audit-side-token";
/// The emulator takes one token, for searches and HEC alike.
const HEC_TOKEN: &str = SPLUNK_TOKEN;
/// Every scope Quay has: what the tokens below carry unless a test says otherwise.
const ALL_SCOPES: &str =
    "org:admin repo:admin repo:create repo:read repo:write user:admin user:read super:user";

/// The stand-in with alice (admin of acme), bob (member of acme, admin of acme/web only, read on
/// acme/api), root (superuser) and auditor (global read-only superuser); `full_access` is Quay's
/// FEATURE_SUPERUSERS_FULL_ACCESS. Tokens `<user>-oauth` carry every scope; `service-oauth` is the
/// auditor's; `alice-session` is alice's session cookie, whose CSRF token is `csrf`.
async fn start_standin(full_access: bool) -> (String, std::sync::Arc<Standin>) {
    let users = HashMap::from([
        (
            "alice",
            User {
                admin_orgs: vec!["acme"],
                ..User::default()
            },
        ),
        (
            "bob",
            User {
                member_orgs: vec!["acme"],
                admin_repos: vec!["acme/web"],
                read_repos: vec!["acme/api"],
                ..User::default()
            },
        ),
        (
            "root",
            User {
                super_user: true,
                ..User::default()
            },
        ),
        (
            "auditor",
            User {
                global_readonly: true,
                ..User::default()
            },
        ),
    ]);
    let world = World {
        users,
        organizations: vec!["acme", "beta"],
        repositories: vec!["acme/web", "acme/api", "beta/web"],
        full_access,
    };
    let tokens = [
        ("alice-oauth", "alice"),
        ("bob-oauth", "bob"),
        ("root-oauth", "root"),
        ("auditor-oauth", "auditor"),
        ("service-oauth", "auditor"),
    ]
    .into_iter()
    .map(|(token, user)| (token.to_owned(), Grant::token(user, ALL_SCOPES)))
    .collect();
    let sessions = HashMap::from([("alice-session".to_owned(), ("alice", "csrf".to_owned()))]);
    quay_standin::start(world, tokens, sessions).await
}

fn quay_mode(config: &mut Config, quay_url: &str) {
    config.auth.mode = AuthMode::Quay;
    config.auth.quay_url = quay_url.into();
    config.auth.timeout_seconds = 1;
}

struct Env {
    app: TestApp,
    standin: std::sync::Arc<Standin>,
}

async fn env(adjust: impl FnOnce(&mut Config)) -> Env {
    env_with(false, adjust).await
}

async fn env_with(full_access: bool, adjust: impl FnOnce(&mut Config)) -> Env {
    let (url, standin) = start_standin(full_access).await;
    let app = spawn_app(|c| {
        quay_mode(c, &url);
        adjust(c);
    })
    .await;
    Env { app, standin }
}

impl Env {
    async fn post(&self, bearer: &str, path: &str) -> reqwest::Response {
        self.app.post_export(bearer, path, MAIL).await
    }

    fn quay_calls(&self) -> usize {
        self.standin.requests.lock().unwrap().len()
    }
}

#[tokio::test]
async fn quay_decides_who_may_export_what() {
    let env = env(|_| {}).await;
    let org = "/api/v1/organization/acme/exportlogs";
    assert_eq!(env.post("alice-oauth", org).await.status(), 200);
    // Authenticated but not allowed is 403, never 401 (Quay's UI signs users out on a 401).
    let refused = env.post("bob-oauth", org).await;
    assert_eq!(refused.status(), 403);
    // A user administers its own namespace, addressed as an organization (Quay's UI does so).
    assert_eq!(
        env.post("bob-oauth", "/api/v1/organization/bob/exportlogs")
            .await
            .status(),
        200
    );
    assert_eq!(
        env.post("bob-oauth", "/api/v1/user/exportlogs")
            .await
            .status(),
        200
    );
    // Repository admin is Quay's answer: yes on acme/web, read-only on acme/api.
    assert_eq!(
        env.post("bob-oauth", "/api/v1/repository/acme/web/exportlogs")
            .await
            .status(),
        200
    );
    assert_eq!(
        env.post("bob-oauth", "/api/v1/repository/acme/api/exportlogs")
            .await
            .status(),
        403
    );
    assert_eq!(
        env.post("bob-oauth", "/api/v1/repository/beta/web/exportlogs")
            .await
            .status(),
        403
    );
    // An organization admin administers its repositories; asked again, Quay's answers are cached.
    assert_eq!(
        env.post("alice-oauth", "/api/v1/repository/acme/api/exportlogs")
            .await
            .status(),
        200
    );
    let before = env.quay_calls();
    assert_eq!(
        env.post("alice-oauth", "/api/v1/repository/acme/api/exportlogs")
            .await
            .status(),
        200
    );
    assert_eq!(env.quay_calls(), before, "alice's answers were cached");

    // The global read-only superuser exports organizations, never repositories.
    assert_eq!(env.post("auditor-oauth", org).await.status(), 200);
    assert_eq!(
        env.post("auditor-oauth", "/api/v1/repository/acme/web/exportlogs")
            .await
            .status(),
        403
    );
    // A superuser reaches other organizations only when Quay's FEATURE_SUPERUSERS_FULL_ACCESS is
    // on (Quay's default is off); logexport follows Quay, not a setting of its own.
    assert_eq!(env.post("root-oauth", org).await.status(), 403);
    let full = env_with(true, |_| {}).await;
    assert_eq!(full.post("root-oauth", org).await.status(), 200);
    assert_eq!(
        full.post("root-oauth", "/api/v1/repository/beta/web/exportlogs")
            .await
            .status(),
        200
    );

    // A credential Quay does not accept: 401 on a read; on a POST Quay's CSRF check comes first
    // and answers 403, and so does logexport. No credential at all: the same.
    assert_eq!(env.post("nobody", org).await.status(), 403);
    let read = env
        .app
        .client
        .get(env.app.url("/api/v1/organization/acme/logs"))
        .bearer_auth("nobody")
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 401);
    let body: Value = read.json().await.unwrap();
    assert!(
        body["error_message"]
            .as_str()
            .unwrap()
            .contains("not accepted"),
        "a token was sent, so the text does not ask for one: {body}"
    );
    let anonymous = env
        .app
        .client
        .post(env.app.url(org))
        .body(MAIL)
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 403);
    assert_eq!(env.app.job_count().await, 7);
}

#[tokio::test]
async fn the_global_readonly_superuser_reads_every_listing() {
    let env = env(|_| {}).await;
    let get = |bearer: &'static str, path: &'static str| {
        let app = &env.app;
        async move {
            app.client
                .get(app.url(path))
                .bearer_auth(bearer)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    // The listing of exports shows the auditor's own (none yet); the status of alice's export
    // stays hers and her organization's admins'.
    assert_eq!(get("auditor-oauth", "/api/v1/exportlogs").await, 200);
    // Reads go through the same rules as the listings (no Splunk here: 503 names it, but the
    // permission answer comes first).
    for path in [
        "/api/v1/organization/acme/logs",
        "/api/v1/repository/acme/web/aggregatelogs",
        "/api/v1/superuser/logs",
    ] {
        assert_ne!(get("auditor-oauth", path).await, 403, "{path}");
    }
    assert_eq!(get("bob-oauth", "/api/v1/superuser/logs").await, 403);
    assert_eq!(
        get("bob-oauth", "/api/v1/organization/acme/logs").await,
        403
    );
    assert_ne!(
        get("bob-oauth", "/api/v1/repository/acme/web/logs").await,
        403
    );
    assert_eq!(
        get("bob-oauth", "/api/v1/repository/acme/api/logs").await,
        403
    );
    assert_ne!(get("root-oauth", "/api/v1/superuser/logs").await, 403);
}

#[tokio::test]
async fn the_ui_session_cookie_works_and_cross_site_requests_change_nothing() {
    let env = env(|_| {}).await;
    let org = "/api/v1/organization/acme/exportlogs";
    let post = |headers: Vec<(&'static str, String)>| {
        let app = &env.app;
        async move {
            let mut request = app
                .client
                .post(app.url(org))
                .header("cookie", "_csrf_token=alice-session; other=1")
                .header("content-type", "application/json")
                .body(MAIL);
            for (name, value) in headers {
                request = request.header(name, value);
            }
            request.send().await.unwrap()
        }
    };
    // As Quay's UI sends it (web/src/libs/axios.ts): X-Requested-With and X-CSRF-Token.
    let ui = |origin: Option<String>| {
        let mut headers = vec![
            ("x-requested-with", "XMLHttpRequest".to_owned()),
            ("x-csrf-token", "csrf".to_owned()),
        ];
        if let Some(origin) = origin {
            headers.push(("origin", origin));
        }
        headers
    };
    let quay_origin = env.app.config.auth.quay_url.clone();
    assert_eq!(post(ui(None)).await.status(), 200);
    assert_eq!(post(ui(Some(quay_origin))).await.status(), 200);
    assert_eq!(env.app.job_count().await, 2);

    // Quay's own CSRF check: a missing or wrong X-CSRF-Token is refused first.
    for csrf in [None, Some("wrong")] {
        let mut headers = vec![("x-requested-with", "XMLHttpRequest".to_owned())];
        headers.extend(csrf.map(|c| ("x-csrf-token", c.to_owned())));
        let forged = post(headers).await;
        assert_eq!(forged.status(), 403, "{csrf:?}");
        let body: Value = forged.json().await.unwrap();
        assert!(
            body["error_message"].as_str().unwrap().contains("CSRF"),
            "{body}"
        );
    }
    // The right token without X-Requested-With: logexport's own guard as well.
    let forged = post(vec![("x-csrf-token", "csrf".to_owned())]).await;
    assert_eq!(forged.status(), 403);
    let body: Value = forged.json().await.unwrap();
    assert!(
        body["error_message"]
            .as_str()
            .unwrap()
            .contains("X-Requested-With"),
        "{body}"
    );
    let foreign = post(ui(Some("https://evil.example".into()))).await;
    assert_eq!(foreign.status(), 403);
    assert_eq!(env.app.job_count().await, 2, "nothing enqueued");

    // Reads need no such header: the Logs tab's GETs work with the cookie alone.
    let read = env
        .app
        .client
        .get(env.app.url("/api/v1/exportlogs?namespace=acme"))
        .header("cookie", "_csrf_token=alice-session")
        .send()
        .await
        .unwrap();
    assert_eq!(read.status(), 200);
    let exports: Value = read.json().await.unwrap();
    assert_eq!(exports["exports"].as_array().unwrap().len(), 2);

    // Cancelling an export changes state, so it is guarded too.
    let id = exports["exports"][0]["export_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let delete = |headers: Vec<(&'static str, String)>| {
        let app = &env.app;
        let id = id.clone();
        async move {
            let mut request = app
                .client
                .delete(app.url(&format!("/api/v1/exportlogs/{id}")))
                .header("cookie", "_csrf_token=alice-session");
            for (name, value) in headers {
                request = request.header(name, value);
            }
            request.send().await.unwrap().status()
        }
    };
    assert_eq!(delete(vec![]).await, 403);
    assert_eq!(delete(ui(None)).await, 200);
}

#[tokio::test]
async fn quay_failures_are_503_never_401_and_never_a_grant() {
    let env = env(|_| {}).await;
    let org = "/api/v1/organization/acme/exportlogs";
    for behaviour in [Behaviour::Fail500, Behaviour::Hang] {
        *env.standin.behaviour.lock().unwrap() = behaviour;
        let started = std::time::Instant::now();
        let response = env.post("alice-oauth", org).await;
        assert_eq!(response.status(), 503, "{behaviour:?}");
        let body: Value = response.json().await.unwrap();
        assert!(
            body["error_message"].as_str().unwrap().contains("Quay"),
            "{body}"
        );
        assert!(started.elapsed() < Duration::from_secs(10), "{behaviour:?}");
    }
    // Quay is back: nothing was cached from the failures.
    *env.standin.behaviour.lock().unwrap() = Behaviour::Normal;
    assert_eq!(env.post("alice-oauth", org).await.status(), 200);

    // The repository lookup fails the same way once the identity is known.
    *env.standin.behaviour.lock().unwrap() = Behaviour::Fail500;
    assert_eq!(
        env.post("bob-oauth", "/api/v1/repository/acme/web/exportlogs")
            .await
            .status(),
        503
    );
    assert_eq!(env.app.job_count().await, 1);

    // Unreachable: a port nobody listens on.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let gone = spawn_app(|c| quay_mode(c, &closed)).await;
    let response = gone
        .client
        .post(gone.url(org))
        .bearer_auth("alice-oauth")
        .body(MAIL)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(gone.job_count().await, 0);
}

#[tokio::test]
async fn answers_are_cached_per_credential_and_revocation_bites_after_the_cache_time() {
    let env = env(|c| c.auth.cache_seconds = 2).await;
    let list = "/api/v1/exportlogs?namespace=acme";
    let get = || async {
        env.app
            .client
            .get(env.app.url(list))
            .bearer_auth("alice-oauth")
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    };
    let concurrent: Vec<u16> = futures::future::join_all((0..10).map(|_| get())).await;
    assert!(concurrent.iter().all(|s| *s == 200), "{concurrent:?}");
    for _ in 0..10 {
        assert_eq!(get().await, 200);
    }
    // One call per question: who alice is, and whether she may read acme's logs.
    assert_eq!(
        env.quay_calls(),
        2,
        "20 requests, one Quay call per question"
    );

    env.standin.tokens.lock().unwrap().remove("alice-oauth");
    // Within cache_seconds the cached identity still holds; after it, Quay's 401 is ours.
    eventually(10, "the revoked token is refused", || async {
        (get().await == 401).then_some(())
    })
    .await;
    assert_eq!(env.quay_calls(), 4);
}

#[tokio::test]
async fn hostile_names_never_reach_quay() {
    let env = env(|_| {}).await;
    for path in [
        "/api/v1/repository/acme/..%2F..%2Fuser/exportlogs",
        "/api/v1/repository/acme/web%3Fx=1/exportlogs",
        "/api/v1/repository/acme/web%2Fx/exportlogs",
        "/api/v1/repository/..%2Facme/web/exportlogs",
        "/api/v1/repository/acme/%2e%2e/exportlogs",
        "/api/v1/organization/acme%2F..%2Fsuperuser/exportlogs",
        "/api/v1/repository/acme/web%23x/exportlogs",
    ] {
        let response = env.post("bob-oauth", path).await;
        assert!(
            matches!(response.status().as_u16(), 400 | 404),
            "{path}: {}",
            response.status()
        );
    }
    let asked: HashSet<String> = env
        .standin
        .requests
        .lock()
        .unwrap()
        .iter()
        .cloned()
        .collect();
    assert!(
        asked
            .iter()
            .all(|p| p == "/api/v1/user/" || p == "POST /api/v1/signin"),
        "only the identity and the CSRF check were asked: {asked:?}"
    );
    assert_eq!(env.app.job_count().await, 0);
}

pub(crate) async fn hec_emulator() -> RunningEmulator {
    emulator::spawn(EmulatorOptions {
        token: Some(SPLUNK_TOKEN.into()),
        ..EmulatorOptions::default()
    })
    .await
    .expect("emulator")
}

pub(crate) fn audit_to(config: &mut Config, emu: &RunningEmulator) {
    config.splunk.host = "127.0.0.1".into();
    config.splunk.port = emu.addr().port();
    config.splunk.url_scheme = "http".into();
    config.splunk.bearer_token = Secret::new(SPLUNK_TOKEN);
    config.splunk.search_timeout_seconds = 5;
    config.audit.sink = AuditSink::Hec;
    config.audit.hec_url = format!("{}/services/collector/event", emu.base_url());
    config.audit.hec_token = Secret::new(HEC_TOKEN);
    config.audit.backoff_base_seconds = 1;
    config.audit.backoff_max_seconds = 1;
    config.audit.poll_interval_ms = 100;
    config.server.trusted_proxies = vec!["127.0.0.1/32".into()];
}

async fn audit_events(app: &TestApp, bearer: &str) -> Vec<Value> {
    let today = chrono::Utc::now().format("%m/%d/%Y");
    let response = app
        .client
        .get(app.url(&format!(
            "/api/v1/organization/acme/logs?starttime={today}&endtime={today}"
        )))
        .bearer_auth(bearer)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    body["logs"].as_array().unwrap().clone()
}

#[tokio::test]
async fn export_requests_leave_quays_audit_events_even_when_hec_was_down() {
    let emu = hec_emulator().await;
    emu.set_faults(Faults {
        hec_unavailable: true,
        ..Faults::default()
    });
    let (url, standin) = start_standin(false).await;
    let app = spawn_app(|c| {
        quay_mode(c, &url);
        audit_to(c, &emu);
    })
    .await;
    let _ = standin;
    let accepted = app
        .client
        .post(app.url("/api/v1/organization/acme/exportlogs"))
        .bearer_auth("alice-oauth")
        .header("x-forwarded-for", "198.51.100.7")
        .body(r#"{"callback_url": "https://hooks.example.com/x?secret=1"}"#)
        .send()
        .await
        .unwrap();
    // The callback host is not allowed here, so this one is refused after authorization.
    assert_eq!(accepted.status(), 400);
    let accepted = app
        .client
        .post(app.url("/api/v1/organization/acme/exportlogs"))
        .bearer_auth("alice-oauth")
        .header("x-forwarded-for", "198.51.100.7")
        .body(MAIL)
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 200);
    let export_id = accepted.json::<Value>().await.unwrap()["export_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // A refusal for lack of rights is not written into acme's audit log (as Quay).
    let outsider = app
        .client
        .post(app.url("/api/v1/organization/acme/exportlogs"))
        .bearer_auth("bob-oauth")
        .body(MAIL)
        .send()
        .await
        .unwrap();
    assert_eq!(outsider.status(), 403);

    // HEC is down: the requests were answered, each event's post fails and the event waits.
    let runner = audit_runner(&app.pool, &app.config);
    assert!(runner.run_next().await.unwrap(), "the first event tried");
    assert!(runner.run_next().await.unwrap(), "the second event tried");
    assert!(
        !runner.run_next().await.unwrap(),
        "both wait for the audit backoff"
    );
    let jobs = audit_jobs(&app.pool).await;
    assert_eq!(jobs.len(), 2, "{jobs:?}");
    for job in &jobs {
        assert_eq!((job.state.as_str(), job.attempt), ("queued", 1), "{jobs:?}");
        let error = job.last_error.as_deref().unwrap_or_default();
        assert!(error.starts_with("HEC answered 503"), "{error}");
    }

    emu.set_faults(Faults::default());
    let shutdown = tokio_util::sync::CancellationToken::new();
    let listener = logexport::queue::QueueListener::spawn(app.pool.clone(), shutdown.clone());
    let shipping = tokio::spawn(runner.run(listener, shutdown.clone()));
    let logs = eventually(20, "both audit events in Splunk", || async {
        let logs = audit_events(&app, "alice-oauth").await;
        (logs.len() == 2).then_some(logs)
    })
    .await;
    eventually(10, "both audit jobs settled", || async {
        (audit_waiting(&app.pool).await == 0).then_some(())
    })
    .await;
    shutdown.cancel();
    shipping.await.unwrap();

    let success = logs
        .iter()
        .find(|l| l["kind"] == "export_logs_success")
        .expect("success event");
    assert_eq!(success["performer"]["name"], "alice", "{success}");
    assert_eq!(success["ip"], "198.51.100.7", "{success}");
    assert_eq!(success["metadata"]["export_id"], export_id.as_str());
    assert_eq!(success["metadata"]["message"], "queued for export");
    assert_eq!(success["metadata"]["email"], "admin@example.com");
    let failure = logs
        .iter()
        .find(|l| l["kind"] == "export_logs_failure")
        .expect("failure event");
    assert_eq!(
        failure["metadata"]["url"], "https://hooks.example.com/x",
        "the query string may hold a secret: {failure}"
    );
    assert!(
        failure["metadata"]["error"]
            .as_str()
            .unwrap()
            .contains("callback")
    );
    let jobs = audit_jobs(&app.pool).await;
    assert!(
        jobs.iter()
            .all(|job| job.state == "succeeded" && job.attempt == 2),
        "each delivered on its second attempt: {jobs:?}"
    );
    // Exactly one of each in Splunk.
    let stored = emu.events_in(&logexport::emulator::EventFilter {
        namespace: Some("acme".into()),
        ..Default::default()
    });
    assert_eq!(stored.len(), 2, "{stored:?}");
}

#[tokio::test]
async fn token_mode_keeps_the_own_namespace_rule_and_records_the_trail_too() {
    let emu = hec_emulator().await;
    let app = spawn_app(|c| audit_to(c, &emu)).await;
    let ns1 = app.token("ns1", &[], &[], false).await;
    let accepted = app
        .post_export(&ns1, "/api/v1/organization/ns1/exportlogs", MAIL)
        .await;
    assert_eq!(accepted.status(), 200);
    let runner = audit_runner(&app.pool, &app.config);
    assert!(runner.run_next().await.unwrap());
    assert!(!runner.run_next().await.unwrap(), "one event, one job");
    let jobs = audit_jobs(&app.pool).await;
    assert_eq!(jobs.len(), 1, "{jobs:?}");
    assert_eq!((jobs[0].state.as_str(), jobs[0].attempt), ("succeeded", 1));
    let stored = emu.events_in(&logexport::emulator::EventFilter {
        namespace: Some("ns1".into()),
        ..Default::default()
    });
    assert_eq!(stored.len(), 1);
    // A token holder with no rights on acme gets 403, and acme's audit log stays clean.
    assert_eq!(
        app.post_export(&ns1, "/api/v1/organization/acme/exportlogs", MAIL)
            .await
            .status(),
        403
    );
    assert!(!runner.run_next().await.unwrap(), "nothing to ship");
    assert_eq!(audit_jobs(&app.pool).await.len(), 1);
}

#[tokio::test]
async fn schedules_in_quay_mode_recheck_their_owner_in_quay_before_each_run() {
    use logexport::schedule::Scheduler;
    let at = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap().to_utc();
    let body = json!({"period": "daily", "timezone": "UTC", "start_date": "2026-01-10",
                      "callback_email": "audit@example.com"});
    async fn create(app: &TestApp, bearer: &str, path: &str, body: &Value) -> reqwest::Response {
        app.client
            .post(app.url(path))
            .bearer_auth(bearer)
            .json(body)
            .send()
            .await
            .unwrap()
    }
    // Without logexport's own Quay token nothing could re-check the owner: refused, saying why.
    let without = env(|_| {}).await;
    let refused = create(
        &without.app,
        "alice-oauth",
        "/api/v1/organization/acme/exportschedules",
        &body,
    )
    .await;
    assert_eq!(refused.status(), 403);
    let text = refused.text().await.unwrap();
    assert!(text.contains("quay_service_token"), "{text}");

    let env = env(|c| {
        c.auth.quay_service_token = Secret::new("service-oauth");
        c.auth.cache_seconds = 1;
    })
    .await;
    let org = create(
        &env.app,
        "alice-oauth",
        "/api/v1/organization/acme/exportschedules",
        &body,
    )
    .await;
    assert_eq!(org.status(), 200);
    let org_id = org.json::<Value>().await.unwrap()["schedule_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let repo = create(
        &env.app,
        "bob-oauth",
        "/api/v1/repository/acme/web/exportschedules",
        &body,
    )
    .await;
    assert_eq!(repo.status(), 200);
    let repo_id = repo.json::<Value>().await.unwrap()["schedule_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let scheduler = || Scheduler::new(env.app.pool.clone(), &env.app.config);

    // Both owners still have their rights in Quay: two days each.
    let report = scheduler().tick(at("2026-01-12T02:00:00Z")).await.unwrap();
    assert_eq!(report.enqueued, 4);

    // Quay down: the run waits (nothing enqueued, nothing paused), never runs on no answer.
    *env.standin.behaviour.lock().unwrap() = Behaviour::Fail500;
    let report = scheduler().tick(at("2026-01-13T02:00:00Z")).await.unwrap();
    assert_eq!(report.enqueued, 0);
    *env.standin.behaviour.lock().unwrap() = Behaviour::Normal;

    // Alice leaves acme's owners team and bob loses admin on acme/web: both schedules pause.
    env.standin.demoted.lock().unwrap().extend(["alice", "bob"]);
    scheduler().tick(at("2026-01-14T02:00:00Z")).await.unwrap();
    // Their owners no longer see them (Quay would not let them read those logs); an auditor does.
    for (id, owner, why) in [
        (
            &org_id,
            "alice-oauth",
            "no longer an administrator of organization acme",
        ),
        (
            &repo_id,
            "bob-oauth",
            "no longer an administrator of repository acme/web",
        ),
    ] {
        // (once Quay's cached "yes" from creating it expires: auth.cache_seconds)
        eventually(
            10,
            "the demoted owner no longer sees the schedule",
            || async {
                let hidden = env
                    .app
                    .client
                    .get(env.app.url(&format!("/api/v1/exportschedules/{id}")))
                    .bearer_auth(owner)
                    .send()
                    .await
                    .unwrap();
                (hidden.status() == 404).then_some(())
            },
        )
        .await;
        let bearer = "auditor-oauth";
        let doc: Value = env
            .app
            .client
            .get(env.app.url(&format!("/api/v1/exportschedules/{id}")))
            .bearer_auth(bearer)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(doc["state"], "paused", "{doc}");
        assert!(
            doc["paused_reason"].as_str().unwrap().contains(why),
            "{doc}"
        );
    }
    let exported: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM export_jobs WHERE schedule_id IS NOT NULL AND state <> 'invalid'",
    )
    .fetch_one(&env.app.pool)
    .await
    .unwrap();
    assert_eq!(exported, 4, "no period ran without the owner's rights");
}

#[tokio::test]
async fn a_service_token_quay_refuses_stops_start_up_and_blocks_schedules_visibly() {
    use logexport::schedule::Scheduler;
    use logexport::schedule::owner::check_service_token;
    let at = |s: &str| chrono::DateTime::parse_from_rfc3339(s).unwrap().to_utc();
    // A plain superuser's token, under Quay's default FEATURE_SUPERUSERS_FULL_ACCESS = false: Quay
    // refuses it on the organization endpoints (recorded from real Quay as member.super_all 403),
    // so start-up stops with one line naming the key and Quay's answer.
    let plain = env(|c| c.auth.quay_service_token = Secret::new("root-oauth")).await;
    let refused = check_service_token(&plain.app.config.auth)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        refused
            .starts_with("invalid configuration: auth.quay_service_token: Quay answered HTTP 403"),
        "{refused}"
    );
    assert!(!refused.contains('\n'), "one line: {refused}");
    // With full access on in Quay, the same token does the job; so does a global read-only
    // superuser's under either setting.
    let full = env_with(true, |c| {
        c.auth.quay_service_token = Secret::new("root-oauth")
    })
    .await;
    check_service_token(&full.app.config.auth).await.unwrap();
    let env = env(|c| c.auth.quay_service_token = Secret::new("service-oauth")).await;
    check_service_token(&env.app.config.auth).await.unwrap();

    let body = json!({"period": "daily", "timezone": "UTC", "start_date": "2026-01-10",
                      "callback_email": "audit@example.com"});
    let created = env
        .app
        .client
        .post(env.app.url("/api/v1/organization/acme/exportschedules"))
        .bearer_auth("alice-oauth")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 200);
    let id = created.json::<Value>().await.unwrap()["schedule_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let document = || async {
        env.app
            .client
            .get(env.app.url(&format!("/api/v1/exportschedules/{id}")))
            .bearer_auth("alice-oauth")
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap()
    };
    let scheduler = || Scheduler::new(env.app.pool.clone(), &env.app.config);

    // The token is revoked in Quay: the run waits, and the schedule says why.
    let token = env
        .standin
        .tokens
        .lock()
        .unwrap()
        .remove("service-oauth")
        .unwrap();
    let report = scheduler().tick(at("2026-01-12T02:00:00Z")).await.unwrap();
    assert_eq!(report.enqueued, 0);
    let doc = document().await;
    assert_eq!(doc["state"], "active", "{doc}");
    let reason = doc["blocked_reason"].as_str().expect("blocked_reason");
    assert!(
        reason.contains("auth.quay_service_token") && reason.contains("HTTP 401"),
        "{doc}"
    );
    assert!(doc["blocked_since"].is_string(), "{doc}");
    let scrape = logexport::metrics::METRICS.render(&Default::default());
    assert!(
        crate::helpers::metric(
            &scrape,
            "logexport_schedule_runs_total{outcome=\"blocked\"}"
        ) >= 1.0,
        "counted for the alert"
    );

    // A working token again: the missed days run and the reason is gone.
    env.standin
        .tokens
        .lock()
        .unwrap()
        .insert("service-oauth".into(), token);
    let report = scheduler().tick(at("2026-01-12T02:00:00Z")).await.unwrap();
    assert_eq!(report.enqueued, 2);
    let doc = document().await;
    assert!(doc["blocked_reason"].is_null(), "{doc}");
}
