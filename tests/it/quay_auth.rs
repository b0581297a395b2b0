//! `[auth] mode = "quay"` against a Quay identity stand-in, and the audit trail through the
//! emulator's HTTP Event Collector.
//!
//! The stand-in answers in the shapes of quay/quay:
//! - `GET /api/v1/user/`: `endpoints/api/user.py` `User.get` → `user_view` (`username`,
//!   `super_user` / `global_readonly_super_user` only for such users, `organizations[]` with
//!   `name` and `is_org_admin`); 401 without a valid session or token (`require_user_read`).
//! - `GET /api/v1/repository/{ns}/{repo}`: `endpoints/api/repository.py` `Repository.get`
//!   (`can_write`, `can_admin`); 403 without read permission, 404 for an unknown repository.
//! - Errors: `endpoints/api/__init__.py` (`{"error_message", "error_type", "status", ...}`).
//! - Sessions: the `_csrf_token` cookie (Quay's `SESSION_COOKIE_NAME`, `config.py`).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use logexport::config::{AuditSink, AuthMode, Config, Secret};
use logexport::emulator::{self, EmulatorOptions, Faults, RunningEmulator};
use serde_json::{Value, json};

use crate::helpers::{TestApp, eventually, spawn_app};

const MAIL: &str = r#"{"callback_email": "admin@example.com"}"#;
const SPLUNK_TOKEN: &str = "audit-side-token";
/// The emulator takes one token, for searches and HEC alike.
const HEC_TOKEN: &str = SPLUNK_TOKEN;

/// What the stand-in does for every request.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Behaviour {
    Normal,
    Fail500,
    Hang,
}

#[derive(Debug, Clone)]
struct User {
    super_user: bool,
    global_readonly: bool,
    /// org → is_org_admin
    orgs: Vec<(&'static str, bool)>,
    /// repositories (ns/repo) the user administers, and those it may only read
    admin_repos: Vec<&'static str>,
    read_repos: Vec<&'static str>,
}

struct Standin {
    /// bearer token or session cookie value → user name
    credentials: Mutex<HashMap<String, &'static str>>,
    users: HashMap<&'static str, User>,
    behaviour: Mutex<Behaviour>,
    /// every path asked, with its query
    requests: Mutex<Vec<String>>,
    /// users who lost their organizations' admin team since
    demoted: Mutex<HashSet<&'static str>>,
}

impl Standin {
    fn who(&self, headers: &HeaderMap) -> Option<&'static str> {
        let credentials = self.credentials.lock().unwrap();
        if let Some(auth) = headers.get("authorization").and_then(|v| v.to_str().ok()) {
            return auth
                .strip_prefix("Bearer ")
                .and_then(|t| credentials.get(t).copied());
        }
        let cookie = headers.get("cookie").and_then(|v| v.to_str().ok())?;
        cookie
            .split(';')
            .filter_map(|c| c.trim().split_once('='))
            .find(|(k, _)| *k == "_csrf_token")
            .and_then(|(_, v)| credentials.get(v).copied())
    }
}

fn quay_error(status: StatusCode, error_type: &str, message: &str) -> Response {
    let body = json!({"status": status.as_u16(), "error_type": error_type, "title": error_type,
        "detail": message, "error_message": message, "type": format!("/api/v1/error/{error_type}")});
    (status, Json(body)).into_response()
}

async fn behave(standin: &Standin, uri: &Uri) -> Option<Response> {
    standin.requests.lock().unwrap().push(uri.to_string());
    let behaviour = *standin.behaviour.lock().unwrap();
    match behaviour {
        Behaviour::Normal => None,
        Behaviour::Fail500 => Some(quay_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "boom",
        )),
        Behaviour::Hang => {
            tokio::time::sleep(Duration::from_secs(30)).await;
            None
        }
    }
}

async fn user_endpoint(
    State(standin): State<Arc<Standin>>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Some(response) = behave(&standin, &uri).await {
        return response;
    }
    let Some(name) = standin.who(&headers) else {
        return quay_error(StatusCode::UNAUTHORIZED, "invalid_token", "Unauthorized");
    };
    let user = &standin.users[name];
    let mut view = json!({
        "anonymous": false,
        "username": name,
        "avatar": {"name": name, "hash": "0", "color": "#000", "kind": "user"},
        "can_create_repo": true,
        "is_me": true,
        "organizations": user.orgs.iter().map(|(org, admin)| json!({
            "name": org, "avatar": {}, "can_create_repo": admin, "public": false,
            "is_org_admin": admin, "preferred_namespace": false,
        })).collect::<Vec<_>>(),
    });
    if user.super_user {
        view["super_user"] = json!(true);
    }
    if user.global_readonly {
        view["global_readonly_super_user"] = json!(true);
    }
    Json(view).into_response()
}

async fn repository_endpoint(
    State(standin): State<Arc<Standin>>,
    Path((namespace, repository)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Some(response) = behave(&standin, &uri).await {
        return response;
    }
    let Some(name) = standin.who(&headers) else {
        return quay_error(StatusCode::UNAUTHORIZED, "invalid_token", "Unauthorized");
    };
    let full = format!("{namespace}/{repository}");
    if !["acme/web", "acme/api", "beta/web"].contains(&full.as_str()) {
        return quay_error(StatusCode::NOT_FOUND, "not_found", "Not Found");
    }
    let user = &standin.users[name];
    let admin = user.admin_repos.contains(&full.as_str());
    if !admin && !user.read_repos.contains(&full.as_str()) {
        return quay_error(StatusCode::FORBIDDEN, "insufficient_scope", "Unauthorized");
    }
    Json(json!({
        "namespace": namespace, "name": repository, "kind": "image", "description": "",
        "is_public": false, "is_organization": true, "is_starred": false,
        "status_token": "", "trust_enabled": false, "tag_expiration_s": 1209600,
        "is_free_account": true, "state": "NORMAL",
        "can_write": admin, "can_admin": admin,
    }))
    .into_response()
}

/// The service token's requests (a global read-only superuser's): anything else is refused.
async fn as_service(standin: &Standin, uri: &Uri, headers: &HeaderMap) -> Option<Response> {
    if let Some(response) = behave(standin, uri).await {
        return Some(response);
    }
    match standin.who(headers) {
        Some("auditor") => None,
        Some(_) => Some(quay_error(
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            "Unauthorized",
        )),
        None => Some(quay_error(
            StatusCode::UNAUTHORIZED,
            "invalid_token",
            "Unauthorized",
        )),
    }
}

impl Standin {
    fn is_org_admin(&self, user: &str, org: &str) -> bool {
        !self.demoted.lock().unwrap().contains(user)
            && self
                .users
                .get(user)
                .is_some_and(|u| u.orgs.iter().any(|(o, admin)| *o == org && *admin))
    }
}

/// `endpoints/api/superuser.py` `SuperUserManagement.get` → `user_view`.
async fn superuser_user_endpoint(
    State(standin): State<Arc<Standin>>,
    Path(username): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Some(response) = as_service(&standin, &uri, &headers).await {
        return response;
    }
    let Some(user) = standin.users.get(username.as_str()) else {
        return quay_error(StatusCode::NOT_FOUND, "not_found", "Not Found");
    };
    Json(
        json!({"kind": "user", "name": username, "username": username,
        "email": format!("{username}@example.com"), "verified": true, "avatar": {},
        "super_user": user.super_user, "enabled": true}),
    )
    .into_response()
}

/// `endpoints/api/organization.py` `Organization.get` → `org_view` with its `teams` and roles.
async fn organization_endpoint(
    State(standin): State<Arc<Standin>>,
    Path(org): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Some(response) = as_service(&standin, &uri, &headers).await {
        return response;
    }
    if org != "acme" {
        return quay_error(StatusCode::NOT_FOUND, "not_found", "Not Found");
    }
    Json(
        json!({"name": org, "email": "", "avatar": {}, "is_admin": true, "is_member": true,
        "teams": {
            "owners": {"name": "owners", "description": "", "role": "admin", "avatar": {},
                       "can_view": true, "repo_count": 0, "member_count": 1, "is_synced": false},
            "devs": {"name": "devs", "description": "", "role": "member", "avatar": {},
                     "can_view": true, "repo_count": 0, "member_count": 1, "is_synced": false},
        },
        "ordered_teams": ["owners", "devs"], "invoice_email": false, "tag_expiration_s": 1209600,
        "is_free_account": true}),
    )
    .into_response()
}

/// `endpoints/api/organization.py` `OrganizationMember.get`: the member's teams; 404 for no
/// member.
async fn member_endpoint(
    State(standin): State<Arc<Standin>>,
    Path((org, member)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Some(response) = as_service(&standin, &uri, &headers).await {
        return response;
    }
    let member_of = standin
        .users
        .get(member.as_str())
        .is_some_and(|u| u.orgs.iter().any(|(o, _)| *o == org));
    if !member_of {
        return quay_error(StatusCode::NOT_FOUND, "not_found", "Not Found");
    }
    let team = if standin.is_org_admin(&member, &org) {
        "owners"
    } else {
        "devs"
    };
    Json(json!({"name": member, "kind": "user", "avatar": {},
        "teams": [{"name": team, "avatar": {}}], "repositories": []}))
    .into_response()
}

/// `endpoints/api/permission.py` `RepositoryUserTransitivePermission.get`: the user's roles on
/// the repository, directly or through a team; 404 for none.
async fn transitive_endpoint(
    State(standin): State<Arc<Standin>>,
    Path((namespace, repository, username)): Path<(String, String, String)>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Some(response) = as_service(&standin, &uri, &headers).await {
        return response;
    }
    let full = format!("{namespace}/{repository}");
    let Some(user) = standin.users.get(username.as_str()) else {
        return quay_error(StatusCode::NOT_FOUND, "not_found", "Not Found");
    };
    let role = if standin.demoted.lock().unwrap().contains(username.as_str()) {
        None
    } else if user.admin_repos.contains(&full.as_str()) {
        Some("admin")
    } else if user.read_repos.contains(&full.as_str()) {
        Some("read")
    } else {
        None
    };
    match role {
        Some(role) => Json(json!({"permissions": [{"role": role}]})).into_response(),
        None => quay_error(StatusCode::NOT_FOUND, "not_found", "Not Found"),
    }
}

/// The stand-in on an ephemeral port, with alice (admin of acme), bob (member of acme with
/// admin rights on acme/web only), root (superuser) and auditor (global read-only superuser).
async fn start_standin() -> (String, Arc<Standin>) {
    let user = |orgs: Vec<(&'static str, bool)>, admin_repos, read_repos| User {
        super_user: false,
        global_readonly: false,
        orgs,
        admin_repos,
        read_repos,
    };
    let mut users = HashMap::new();
    users.insert("alice", user(vec![("acme", true)], vec![], vec![]));
    users.insert(
        "bob",
        user(vec![("acme", false)], vec!["acme/web"], vec!["acme/api"]),
    );
    users.insert(
        "root",
        User {
            super_user: true,
            ..user(vec![], vec![], vec![])
        },
    );
    users.insert(
        "auditor",
        User {
            global_readonly: true,
            ..user(vec![], vec![], vec![])
        },
    );
    let credentials: HashMap<String, &'static str> = [
        ("alice-oauth", "alice"),
        ("bob-oauth", "bob"),
        ("root-oauth", "root"),
        ("auditor-oauth", "auditor"),
        ("alice-session", "alice"),
        ("service-oauth", "auditor"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let standin = Arc::new(Standin {
        credentials: Mutex::new(credentials),
        users,
        behaviour: Mutex::new(Behaviour::Normal),
        requests: Mutex::new(Vec::new()),
        demoted: Mutex::new(HashSet::new()),
    });
    let app = axum::Router::new()
        .route("/api/v1/user/", axum::routing::get(user_endpoint))
        .route(
            "/api/v1/repository/{namespace}/{repository}",
            axum::routing::get(repository_endpoint),
        )
        .route(
            "/api/v1/superuser/users/{username}",
            axum::routing::get(superuser_user_endpoint),
        )
        .route(
            "/api/v1/organization/{org}",
            axum::routing::get(organization_endpoint),
        )
        .route(
            "/api/v1/organization/{org}/members/{member}",
            axum::routing::get(member_endpoint),
        )
        .route(
            "/api/v1/repository/{namespace}/{repository}/permissions/user/{username}/transitive",
            axum::routing::get(transitive_endpoint),
        )
        .fallback(|uri: Uri, State(standin): State<Arc<Standin>>| async move {
            standin.requests.lock().unwrap().push(uri.to_string());
            quay_error(StatusCode::NOT_FOUND, "not_found", "Not Found")
        })
        .with_state(standin.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, standin)
}

fn quay_mode(config: &mut Config, quay_url: &str) {
    config.auth.mode = AuthMode::Quay;
    config.auth.quay_url = quay_url.into();
    config.auth.timeout_seconds = 1;
}

struct Env {
    app: TestApp,
    standin: Arc<Standin>,
}

async fn env(adjust: impl FnOnce(&mut Config)) -> Env {
    let (url, standin) = start_standin().await;
    let app = spawn_app(|c| {
        quay_mode(c, &url);
        adjust(c);
    })
    .await;
    Env { app, standin }
}

impl Env {
    async fn post(&self, bearer: &str, path: &str) -> reqwest::Response {
        self.app
            .client
            .post(self.app.url(path))
            .bearer_auth(bearer)
            .header("content-type", "application/json")
            .body(MAIL)
            .send()
            .await
            .unwrap()
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
    // Repository admin comes from Quay's can_admin: yes on acme/web, read-only on acme/api.
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
    // The organization admin needs no repository lookup.
    let before = env.quay_calls();
    assert_eq!(
        env.post("alice-oauth", "/api/v1/repository/acme/api/exportlogs")
            .await
            .status(),
        200
    );
    assert_eq!(env.quay_calls(), before, "alice's identity was cached");

    // The global read-only superuser exports organizations, never repositories.
    assert_eq!(env.post("auditor-oauth", org).await.status(), 200);
    assert_eq!(
        env.post("auditor-oauth", "/api/v1/repository/acme/web/exportlogs")
            .await
            .status(),
        403
    );
    // A superuser reaches other organizations only with superusers_full_access (off by
    // default in quay mode, as Quay's FEATURE_SUPERUSERS_FULL_ACCESS).
    assert_eq!(env.post("root-oauth", org).await.status(), 403);
    let full = self::env(|c| c.auth.superusers_full_access = Some(true)).await;
    assert_eq!(full.post("root-oauth", org).await.status(), 200);
    assert_eq!(
        full.post("root-oauth", "/api/v1/repository/beta/web/exportlogs")
            .await
            .status(),
        200
    );

    // Unknown credentials and no credential are 401.
    assert_eq!(env.post("nobody", org).await.status(), 401);
    let anonymous = env
        .app
        .client
        .post(env.app.url(org))
        .body(MAIL)
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
    assert_eq!(env.app.job_count().await, 6);
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

    let forged = post(vec![]).await;
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
    assert_eq!(env.quay_calls(), 1, "20 requests, one Quay call");

    env.standin
        .credentials
        .lock()
        .unwrap()
        .remove("alice-oauth");
    // Within cache_seconds the cached identity still holds; after it, Quay's 401 is ours.
    eventually(10, "the revoked token is refused", || async {
        (get().await == 401).then_some(())
    })
    .await;
    assert_eq!(env.quay_calls(), 2);
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
        asked.iter().all(|p| p == "/api/v1/user/"),
        "only the identity was asked: {asked:?}"
    );
    assert_eq!(env.app.job_count().await, 0);
}

async fn hec_emulator() -> RunningEmulator {
    emulator::spawn(EmulatorOptions {
        token: Some(SPLUNK_TOKEN.into()),
        ..EmulatorOptions::default()
    })
    .await
    .expect("emulator")
}

fn audit_to(config: &mut Config, emu: &RunningEmulator) {
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
    let (url, standin) = start_standin().await;
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

    // HEC is down: the requests were answered, the events wait in the outbox.
    let worker = logexport::audit::Shipper::new(app.pool.clone(), &app.config)
        .unwrap()
        .expect("hec sink");
    assert_eq!(worker.ship_once().await.unwrap(), 0);
    let waiting: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_outbox")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(waiting, 2);

    emu.set_faults(Faults::default());
    let shutdown = tokio_util::sync::CancellationToken::new();
    let shipping = tokio::spawn(worker.run(shutdown.clone()));
    let logs = eventually(20, "both audit events in Splunk", || async {
        let logs = audit_events(&app, "alice-oauth").await;
        (logs.len() == 2).then_some(logs)
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
    let outbox: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_outbox")
        .fetch_one(&app.pool)
        .await
        .unwrap();
    assert_eq!(outbox, 0);
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
    let worker = logexport::audit::Shipper::new(app.pool.clone(), &app.config)
        .unwrap()
        .expect("hec sink");
    assert_eq!(worker.ship_once().await.unwrap(), 1);
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
    assert_eq!(worker.ship_once().await.unwrap(), 0);
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

    let env = env(|c| c.auth.quay_service_token = Secret::new("service-oauth")).await;
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
    for (id, bearer, why) in [
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
