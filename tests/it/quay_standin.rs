//! A Quay stand-in for CI, where real Quay cannot run: it answers the endpoints logexport asks
//! with the permission model of quay/quay, so that `tests/it/quay_parity.rs` can replay the
//! answers recorded from real Quay (`tests/fixtures/quay-parity.json`) and fail on any drift.
//!
//! The model, from quay/quay at ffba0c70:
//! - `auth/permissions.py` (`QuayDeferredPermissionUser`): an OAuth token's scopes cap the roles it
//!   carries. `user:admin` gives the user's admin need (`SCOPE_MAX_USER_ROLES`), `user:read` its
//!   read need; `org:admin` the organization admin needs, of the user's own namespace too
//!   (`SCOPE_MAX_TEAM_ROLES`); `repo:admin` the repository admin needs, of the repositories of
//!   the user's namespace and of the organizations it administers (`SCOPE_MAX_REPO_ROLES`);
//!   `super:user` the superuser need. A session cookie is `DIRECT_LOGIN`: every need. A global
//!   read-only superuser is one whatever the scopes (`allow_if_global_readonly_superuser`).
//! - `endpoints/api/__init__.py`: `require_user_admin`, `require_repo_admin(...)`,
//!   `allow_if_superuser_with_full_access`, `allow_if_any_superuser`; `csrf_protect` first on
//!   every non-GET request (`endpoints/csrf.py`): a valid OAuth token passes, a session needs its
//!   `X-CSRF-Token`, anything else is 403.
//! - The endpoints asked, each with the guard of its Quay source: `endpoints/api/user.py`
//!   (`User.get`, `UserNotificationList.get`), `organization.py` (`OrganizationMemberList.get`,
//!   `Organization.get`, `OrganizationMember.get`), `permission.py`
//!   (`RepositoryUserPermissionList.get`, `RepositoryUserTransitivePermission.get`),
//!   `superuser.py` (`SuperUserList.get`, `SuperUserManagement.get`). Errors in the shape of
//!   `endpoints/api/__init__.py` (`{"error_message", "error_type", ...}`).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// What the stand-in does for every request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Behaviour {
    Normal,
    Fail500,
    Hang,
}

/// A Quay user and its roles.
#[derive(Debug, Clone, Default)]
pub struct User {
    pub super_user: bool,
    pub global_readonly: bool,
    pub disabled: bool,
    /// organizations whose admin team the user is on
    pub admin_orgs: Vec<&'static str>,
    /// organizations the user is a plain member of
    pub member_orgs: Vec<&'static str>,
    /// repositories (`ns/repo`) with a direct admin / read permission
    pub admin_repos: Vec<&'static str>,
    pub read_repos: Vec<&'static str>,
}

/// What a credential carries: its user and, for an OAuth token, its scopes (`None`: a session,
/// Quay's `DIRECT_LOGIN`, which carries every need).
#[derive(Debug, Clone)]
pub struct Grant {
    pub user: &'static str,
    pub scopes: Option<HashSet<String>>,
}

impl Grant {
    pub fn token(user: &'static str, scopes: &str) -> Self {
        Self {
            user,
            scopes: Some(scopes.split_whitespace().map(str::to_owned).collect()),
        }
    }

    pub fn session(user: &'static str) -> Self {
        Self { user, scopes: None }
    }

    fn has(&self, scope: &str) -> bool {
        self.scopes.as_ref().is_none_or(|s| s.contains(scope))
    }
}

/// The registry the stand-in pretends to be.
pub struct World {
    pub users: HashMap<&'static str, User>,
    pub organizations: Vec<&'static str>,
    pub repositories: Vec<&'static str>,
    /// Quay's `FEATURE_SUPERUSERS_FULL_ACCESS`
    pub full_access: bool,
}

pub struct Standin {
    pub world: World,
    /// bearer token → grant
    pub tokens: Mutex<HashMap<String, Grant>>,
    /// session cookie value (`_csrf_token=<value>`) → (user, the session's CSRF token)
    pub sessions: Mutex<HashMap<String, (&'static str, String)>>,
    pub behaviour: Mutex<Behaviour>,
    /// every path asked, with its query
    pub requests: Mutex<Vec<String>>,
    /// users who lost their admin roles (organizations' admin teams, repositories) since
    pub demoted: Mutex<HashSet<&'static str>>,
}

/// Who a request is, as Quay's `process_oauth` / session loading sees it.
enum Who {
    Nobody,
    /// a credential Quay does not accept (unknown, expired, a disabled user's)
    Refused,
    Known(Grant, Option<String>),
}

impl Standin {
    fn who(&self, headers: &HeaderMap) -> Who {
        let grant = if let Some(auth) = header(headers, "authorization") {
            let tokens = self.tokens.lock().unwrap();
            match auth.strip_prefix("Bearer ").and_then(|t| tokens.get(t)) {
                Some(grant) => (grant.clone(), None),
                None => return Who::Refused,
            }
        } else if let Some(cookie) = header(headers, "cookie") {
            let sessions = self.sessions.lock().unwrap();
            let session = cookie
                .split(';')
                .filter_map(|c| c.trim().split_once('='))
                .find(|(k, _)| *k == "_csrf_token")
                .and_then(|(_, v)| sessions.get(v));
            match session {
                Some((user, csrf)) => (Grant::session(user), Some(csrf.clone())),
                None => return Who::Nobody,
            }
        } else {
            return Who::Nobody;
        };
        if self
            .world
            .users
            .get(grant.0.user)
            .is_none_or(|u| u.disabled)
        {
            return Who::Refused;
        }
        Who::Known(grant.0, grant.1)
    }

    fn user(&self, grant: &Grant) -> &User {
        &self.world.users[grant.user]
    }

    fn org_admin_role(&self, user: &'static str, org: &str) -> bool {
        user == org
            || (!self.demoted.lock().unwrap().contains(user)
                && self.world.users[user].admin_orgs.contains(&org))
    }

    /// `AdministerOrganizationPermission(org)`.
    fn administers_org(&self, grant: &Grant, org: &str) -> bool {
        grant.has("org:admin") && self.org_admin_role(grant.user, org)
    }

    /// `AdministerRepositoryPermission(ns, repo)`.
    fn administers_repo(&self, grant: &Grant, namespace: &str, repository: &str) -> bool {
        let full = format!("{namespace}/{repository}");
        grant.has("repo:admin")
            && (self.org_admin_role(grant.user, namespace)
                || (!self.demoted.lock().unwrap().contains(grant.user)
                    && self.user(grant).admin_repos.contains(&full.as_str())))
    }

    /// `SuperUserPermission().can()`: a superuser whose credential carries `super:user`.
    fn superuser(&self, grant: &Grant) -> bool {
        self.user(grant).super_user && grant.has("super:user")
    }

    fn readonly_superuser(&self, grant: &Grant) -> bool {
        self.user(grant).global_readonly
    }

    /// The organization endpoints' test (`OrgLogs.get`, `OrganizationMemberList.get`, ...).
    fn org_guard(&self, grant: &Grant, org: &str) -> bool {
        self.administers_org(grant, org)
            || self.readonly_superuser(grant)
            || (self.world.full_access && self.superuser(grant))
    }

    /// `require_repo_admin(allow_for_global_readonly_superuser=True, allow_for_superuser=True)`.
    fn repo_read_guard(&self, grant: &Grant, namespace: &str, repository: &str) -> bool {
        self.administers_repo(grant, namespace, repository)
            || (self.world.full_access && (self.superuser(grant) || self.readonly_superuser(grant)))
            || self.readonly_superuser(grant)
    }

    fn any_superuser_guard(&self, grant: &Grant) -> bool {
        self.superuser(grant) || self.readonly_superuser(grant)
    }
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

pub fn quay_error(status: StatusCode, error_type: &str, message: &str) -> Response {
    let body = json!({"status": status.as_u16(), "error_type": error_type, "title": error_type,
        "detail": message, "error_message": message, "type": format!("/api/v1/error/{error_type}")});
    (status, Json(body)).into_response()
}

fn not_found() -> Response {
    quay_error(StatusCode::NOT_FOUND, "not_found", "Not Found")
}

fn unauthorized() -> Response {
    quay_error(
        StatusCode::UNAUTHORIZED,
        "invalid_token",
        "Requires authentication",
    )
}

fn forbidden() -> Response {
    quay_error(StatusCode::FORBIDDEN, "insufficient_scope", "Unauthorized")
}

/// Records the request and applies the [`Behaviour`]: `Some` is the response to send instead.
async fn behave(standin: &Standin, request: String) -> Option<Response> {
    standin.requests.lock().unwrap().push(request);
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

/// Records the request, applies the [`Behaviour`], then the caller's identity: `Err` is the
/// response to send (401 for a GET Quay cannot attribute, as `check_anon_protection` does).
async fn enter(standin: &Standin, uri: &Uri, headers: &HeaderMap) -> Result<Grant, Response> {
    if let Some(response) = behave(standin, uri.to_string()).await {
        return Err(response);
    }
    match standin.who(headers) {
        Who::Known(grant, _) => Ok(grant),
        Who::Nobody | Who::Refused => Err(unauthorized()),
    }
}

type S = State<Arc<Standin>>;

/// `User.get`: `require_scope(READ_USER)` with `UserReadPermission` (user:read or user:admin).
async fn user_view(State(s): S, uri: Uri, headers: HeaderMap) -> Response {
    let grant = match enter(&s, &uri, &headers).await {
        Ok(grant) => grant,
        Err(response) => return response,
    };
    if !(grant.has("user:read") || grant.has("user:admin")) {
        return unauthorized();
    }
    let user = s.user(&grant);
    let orgs: Vec<_> = user
        .admin_orgs
        .iter()
        .chain(&user.member_orgs)
        .map(|org| {
            json!({"name": org, "avatar": {}, "public": false, "preferred_namespace": false,
                   "is_org_admin": grant.has("user:admin") && s.administers_org(&grant, org)})
        })
        .collect();
    let mut view = json!({"anonymous": false, "username": grant.user, "avatar": {},
        "can_create_repo": true, "is_me": true, "organizations": orgs});
    if s.superuser(&grant) {
        view["super_user"] = json!(true);
    }
    if user.global_readonly {
        view["global_readonly_super_user"] = json!(true);
    }
    Json(view).into_response()
}

/// `UserNotificationList.get`: `@require_user_admin()`.
async fn user_notifications(State(s): S, uri: Uri, headers: HeaderMap) -> Response {
    match enter(&s, &uri, &headers).await {
        Ok(grant) if grant.has("user:admin") => {
            Json(json!({"notifications": [], "additional": false})).into_response()
        }
        Ok(_) => forbidden(),
        Err(response) => response,
    }
}

/// `OrganizationMemberList.get`: the organization test, then 404 for no such organization.
async fn org_members(
    State(s): S,
    Path(org): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    match enter(&s, &uri, &headers).await {
        Ok(grant) if s.org_guard(&grant, &org) => {
            if s.world.organizations.contains(&org.as_str()) {
                Json(json!({"members": []})).into_response()
            } else {
                not_found()
            }
        }
        Ok(_) => forbidden(),
        Err(response) => response,
    }
}

/// `RepositoryUserPermissionList.get`: the repository read guard.
async fn repo_permissions(
    State(s): S,
    Path((namespace, repository)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    match enter(&s, &uri, &headers).await {
        Ok(grant) if s.repo_read_guard(&grant, &namespace, &repository) => {
            let full = format!("{namespace}/{repository}");
            if !s.world.repositories.contains(&full.as_str()) {
                return not_found();
            }
            Json(json!({"permissions": {}})).into_response()
        }
        Ok(_) => forbidden(),
        Err(response) => response,
    }
}

/// `RepositoryUserPermission.put`: `csrf_protect`, `require_repo_admin(allow_for_superuser=True)`,
/// then the body's schema: logexport sends `{}`, refused with 400 once the guards passed.
async fn repo_permission_put(
    State(s): S,
    Path((namespace, repository, _user)): Path<(String, String, String)>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    if let Some(response) = behave(&s, format!("PUT {uri}")).await {
        return response;
    }
    let grant = match s.who(&headers) {
        Who::Known(grant, None) => grant,
        Who::Known(grant, Some(csrf))
            if header(&headers, "x-csrf-token") == Some(csrf.as_str()) =>
        {
            grant
        }
        _ => {
            return (
                StatusCode::FORBIDDEN,
                Json(json!({"error": "CSRF token was invalid or missing."})),
            )
                .into_response();
        }
    };
    let allowed = s.administers_repo(&grant, &namespace, &repository)
        || (s.world.full_access && s.superuser(&grant));
    if !allowed {
        return forbidden();
    }
    quay_error(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        "'role' is a required property",
    )
}

/// `SuperUserList.get`: `@require_fresh_login` first — the stand-in's sessions signed in longer
/// ago than Quay's `FRESH_LOGIN_TIMEOUT` (10 minutes), as the seeded session was when real Quay's
/// answers were recorded, so a session gets 401 — then `allow_if_any_superuser()`.
async fn superuser_users(State(s): S, uri: Uri, headers: HeaderMap) -> Response {
    match enter(&s, &uri, &headers).await {
        Ok(grant) if grant.scopes.is_none() => quay_error(
            StatusCode::UNAUTHORIZED,
            "fresh_login_required",
            "The operation you are trying to perform requires you to re-enter your password.",
        ),
        Ok(grant) if s.any_superuser_guard(&grant) => Json(json!({"users": []})).into_response(),
        Ok(_) => forbidden(),
        Err(response) => response,
    }
}

/// `SuperUserManagement.get`: `allow_if_any_superuser()`, then the user or 404.
async fn superuser_user(
    State(s): S,
    Path(username): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    match enter(&s, &uri, &headers).await {
        Ok(grant) if s.any_superuser_guard(&grant) => match s.world.users.get(username.as_str()) {
            Some(user) => Json(
                json!({"kind": "user", "name": username, "username": username,
                "email": format!("{username}@example.com"), "verified": true, "avatar": {},
                "super_user": user.super_user, "global_readonly_super_user": user.global_readonly,
                "enabled": !user.disabled}),
            )
            .into_response(),
            None => not_found(),
        },
        Ok(_) => forbidden(),
        Err(response) => response,
    }
}

/// `Organization.get` with its teams (as the service token sees it).
async fn organization(
    State(s): S,
    Path(org): Path<String>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    match enter(&s, &uri, &headers).await {
        Ok(grant) if s.org_guard(&grant, &org) => {
            if !s.world.organizations.contains(&org.as_str()) {
                return not_found();
            }
            Json(json!({"name": org, "teams": {
                "owners": {"name": "owners", "role": "admin"},
                "readers": {"name": "readers", "role": "member"},
            }}))
            .into_response()
        }
        Ok(_) => forbidden(),
        Err(response) => response,
    }
}

/// `OrganizationMember.get`: the member's teams; 404 for no member.
async fn org_member(
    State(s): S,
    Path((org, member)): Path<(String, String)>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    match enter(&s, &uri, &headers).await {
        Ok(grant) if s.org_guard(&grant, &org) => {
            let Some(user) = s.world.users.get(member.as_str()) else {
                return not_found();
            };
            let (name, user) = (
                s.world.users.get_key_value(member.as_str()).unwrap().0,
                user,
            );
            let team = if s.org_admin_role(name, &org) && user.admin_orgs.contains(&org.as_str()) {
                "owners"
            } else if user.admin_orgs.contains(&org.as_str())
                || user.member_orgs.contains(&org.as_str())
            {
                "readers"
            } else {
                return not_found();
            };
            Json(json!({"name": member, "kind": "user", "teams": [{"name": team}], "repositories": []}))
                .into_response()
        }
        Ok(_) => forbidden(),
        Err(response) => response,
    }
}

/// `RepositoryUserTransitivePermission.get`: the user's direct roles on the repository; 404 for
/// none.
async fn transitive(
    State(s): S,
    Path((namespace, repository, username)): Path<(String, String, String)>,
    uri: Uri,
    headers: HeaderMap,
) -> Response {
    match enter(&s, &uri, &headers).await {
        Ok(grant) if s.repo_read_guard(&grant, &namespace, &repository) => {
            let full = format!("{namespace}/{repository}");
            let Some((name, user)) = s.world.users.get_key_value(username.as_str()) else {
                return not_found();
            };
            let role = if s.demoted.lock().unwrap().contains(name) {
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
                None => not_found(),
            }
        }
        Ok(_) => forbidden(),
        Err(response) => response,
    }
}

/// `POST /api/v1/signin` with `{}`: `csrf_protect` first (403), then the body's schema (400).
async fn signin(State(s): S, method: Method, uri: Uri, headers: HeaderMap) -> Response {
    if let Some(response) = behave(&s, format!("{method} {uri}")).await {
        return response;
    }
    let passes = match s.who(&headers) {
        Who::Known(grant, None) => grant.scopes.is_some(),
        Who::Known(_, Some(csrf)) => header(&headers, "x-csrf-token") == Some(csrf.as_str()),
        Who::Nobody | Who::Refused => false,
    };
    if !passes {
        return (
            StatusCode::FORBIDDEN,
            Json(json!({"error": "CSRF token was invalid or missing."})),
        )
            .into_response();
    }
    quay_error(
        StatusCode::BAD_REQUEST,
        "invalid_request",
        "'username' is a required property",
    )
}

/// The stand-in on an ephemeral port: its URL and its state.
pub async fn start(
    world: World,
    tokens: HashMap<String, Grant>,
    sessions: HashMap<String, (&'static str, String)>,
) -> (String, Arc<Standin>) {
    use axum::routing::{get, post};
    let standin = Arc::new(Standin {
        world,
        tokens: Mutex::new(tokens),
        sessions: Mutex::new(sessions),
        behaviour: Mutex::new(Behaviour::Normal),
        requests: Mutex::new(Vec::new()),
        demoted: Mutex::new(HashSet::new()),
    });
    let app = axum::Router::new()
        .route("/api/v1/user/", get(user_view))
        .route("/api/v1/user/notifications", get(user_notifications))
        .route("/api/v1/signin", post(signin))
        .route("/api/v1/superuser/users/", get(superuser_users))
        .route("/api/v1/superuser/users/{username}", get(superuser_user))
        .route("/api/v1/organization/{org}", get(organization))
        .route("/api/v1/organization/{org}/members", get(org_members))
        .route(
            "/api/v1/organization/{org}/members/{member}",
            get(org_member),
        )
        .route(
            "/api/v1/repository/{namespace}/{repository}/permissions/user/",
            get(repo_permissions),
        )
        .route(
            "/api/v1/repository/{namespace}/{repository}/permissions/user/{username}",
            axum::routing::put(repo_permission_put),
        )
        .route(
            "/api/v1/repository/{namespace}/{repository}/permissions/user/{username}/transitive",
            get(transitive),
        )
        .fallback(|uri: Uri, State(standin): S| async move {
            standin.requests.lock().unwrap().push(uri.to_string());
            // Not Quay's JSON: a route Quay does not have.
            (StatusCode::NOT_FOUND, "<html>Not Found</html>").into_response()
        })
        .with_state(standin.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, standin)
}
