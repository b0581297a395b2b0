//! The permission parity matrix, replayed in CI: for every credential and every endpoint Quay
//! also has, logexport's HTTP status must equal the one real Quay gave for the same request.
//!
//! `tests/fixtures/quay-parity.json` holds real Quay's answers, recorded by
//! `deploy/quay-parity/parity.py --record` against quay/quay run from source
//! (`../shared/tools/real-quay/`), once with Quay's default `FEATURE_SUPERUSERS_FULL_ACCESS: false`
//! ("off") and once with it on ("on"). Real Quay cannot run in CI, so logexport asks the stand-in
//! (`quay_standin.rs`), which follows Quay's permission model with the users, roles and tokens the
//! seed made (`seed.py`): ns0 administers organization ns1 (owners team) and owns namespace ns0;
//! bob is a plain member of ns1 with read on ns1/web; carol administers ns1/web only; quayadmin
//! is a superuser; auditor a global read-only superuser; dave is disabled.

use std::collections::HashMap;

use logexport::config::{AuthMode, Config, Secret};
use logexport::emulator::{self, EmulatorOptions};
use serde_json::Value;

use crate::helpers::{spawn_app, use_emulator};
use crate::quay_standin::{self, Grant, User, World};

const FIXTURE: &str = include_str!("../fixtures/quay-parity.json");
const SPLUNK_TOKEN: &str = "parity-splunk-token";
const SESSION: &str = "session-of-ns0";
const SESSION_CSRF: &str = "csrf-of-ns0";
const RANGE: &str = "starttime=12/01/2026&endtime=12/03/2026";
const BODY: &str = r#"{"callback_email": "auditor@example.com"}"#;

fn seeded_world(full_access: bool) -> World {
    let users = HashMap::from([
        (
            "ns0",
            User {
                admin_orgs: vec!["ns1"],
                ..User::default()
            },
        ),
        (
            "bob",
            User {
                member_orgs: vec!["ns1"],
                read_repos: vec!["ns1/web"],
                ..User::default()
            },
        ),
        (
            "carol",
            User {
                admin_repos: vec!["ns1/web"],
                ..User::default()
            },
        ),
        (
            "quayadmin",
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
        (
            "dave",
            User {
                disabled: true,
                ..User::default()
            },
        ),
    ]);
    World {
        users,
        organizations: vec!["ns1"],
        repositories: vec!["ns1/web", "ns1/api", "ns0/private"],
        full_access,
    }
}

fn static_name(name: &str) -> &'static str {
    ["ns0", "bob", "carol", "quayadmin", "auditor", "dave"]
        .into_iter()
        .find(|n| *n == name)
        .unwrap_or_else(|| panic!("no seeded user {name}"))
}

/// The headers of one credential of the fixture, and its grant for the stand-in.
fn credential(label: &str, entry: &Value) -> (Vec<(&'static str, String)>, Option<Grant>) {
    let cookie = format!("_csrf_token={SESSION}");
    let xrw = ("x-requested-with", "XMLHttpRequest".to_owned());
    match label {
        "cookie_csrf" => (
            vec![
                ("cookie", cookie),
                ("x-csrf-token", SESSION_CSRF.into()),
                xrw,
            ],
            None,
        ),
        "cookie_no_csrf" => (vec![("cookie", cookie), xrw], None),
        "cookie_wrong_csrf" => (
            vec![
                ("cookie", cookie),
                ("x-csrf-token", "not-the-token".into()),
                xrw,
            ],
            None,
        ),
        "bad_token" => (
            vec![("authorization", "Bearer not-a-real-token".into())],
            None,
        ),
        "no_credential" => (vec![], None),
        _ => {
            let user = static_name(entry["user"].as_str().unwrap());
            let scopes = entry["scopes"].as_str().unwrap();
            let scopes = scopes.split(" (").next().unwrap();
            (
                vec![("authorization", format!("Bearer {label}"))],
                Some(Grant::token(user, scopes)),
            )
        }
    }
}

fn quay_mode(config: &mut Config, quay_url: &str) {
    config.auth.mode = AuthMode::Quay;
    config.auth.quay_url = quay_url.into();
    config.auth.timeout_seconds = 2;
    config.auth.allowed_origins = vec![];
    config.splunk.search_timeout_seconds = 5;
    config.logs.page_token_key = Secret::new("parity page key");
}

async fn replay(label: &str) {
    let fixture: Value = serde_json::from_str(FIXTURE).expect("the fixture is JSON");
    let endpoints: Vec<(String, String)> = fixture["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let (method, path) = e.as_str().unwrap().split_once(' ').unwrap();
            (method.to_owned(), path.to_owned())
        })
        .collect();
    let credentials = fixture["credentials"].as_object().unwrap();
    let mut tokens = HashMap::new();
    let mut cases = Vec::new();
    for (name, entry) in credentials {
        let (headers, grant) = credential(name, entry);
        if let Some(grant) = grant {
            tokens.insert(name.clone(), grant);
        }
        let answers: Vec<u16> = entry[label]
            .as_array()
            .unwrap_or_else(|| panic!("{name} has no answers for {label}"))
            .iter()
            .map(|s| s.as_u64().unwrap() as u16)
            .collect();
        cases.push((name.clone(), headers, answers));
    }
    let sessions = HashMap::from([(SESSION.to_owned(), ("ns0", SESSION_CSRF.to_owned()))]);
    let (url, _standin) = quay_standin::start(seeded_world(label == "on"), tokens, sessions).await;
    let emu = emulator::spawn(EmulatorOptions {
        token: Some(SPLUNK_TOKEN.into()),
        ..EmulatorOptions::default()
    })
    .await
    .expect("emulator");
    let app = spawn_app(|c| {
        quay_mode(c, &url);
        use_emulator(c, &emu, SPLUNK_TOKEN);
    })
    .await;

    let mut differ = Vec::new();
    for (name, headers, answers) in &cases {
        for ((method, path), quay) in endpoints.iter().zip(answers) {
            let url = app.url(&format!("{path}?{RANGE}"));
            let mut request = match method.as_str() {
                "POST" => app
                    .client
                    .post(url)
                    .header("content-type", "application/json")
                    .body(BODY),
                _ => app.client.get(url),
            };
            for (header, value) in headers {
                request = request.header(*header, value);
            }
            let ours = request.send().await.unwrap().status().as_u16();
            if ours != *quay {
                differ.push(format!(
                    "{name} {method} {path}: Quay {quay}, logexport {ours}"
                ));
            }
        }
    }
    assert!(
        differ.is_empty(),
        "FEATURE_SUPERUSERS_FULL_ACCESS {label}: {} of {} cells differ from real Quay:\n{}",
        differ.len(),
        cases.len() * endpoints.len(),
        differ.join("\n")
    );
}

#[tokio::test]
async fn every_cell_agrees_with_real_quay_under_its_default_configuration() {
    replay("off").await;
}

#[tokio::test]
async fn every_cell_agrees_with_real_quay_with_superusers_full_access() {
    replay("on").await;
}
