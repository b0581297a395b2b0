//! `[auth] mode = "quay"`: Quay decides. Each permission is a [`Question`] put to one of Quay's
//! own endpoints that is guarded exactly as the Quay endpoint logexport serves, with the caller's
//! own credential passed on unchanged, so logexport's answer is Quay's by construction, whatever
//! the token's scopes, the caller's roles and Quay's features. `GET /api/v1/user/`
//! (`endpoints/api/user.py` `user_view`) only says who the caller is, when the credential may
//! read that (the `user:read` scope).
//!
//! Answers are cached per credential digest (and question) for `auth.cache_seconds`; concurrent
//! lookups share one call to Quay. The credential itself is kept only for the request that
//! carries it.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::http::HeaderMap;
use axum::http::header::{AUTHORIZATION, COOKIE};
use moka::future::Cache;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::config::AuthConfig;
use crate::domain::{Namespace, RepositoryName};

const CSRF_HEADER: &str = "x-csrf-token";
const REQUESTED_WITH: &str = "x-requested-with";

/// The caller's Quay credential, exactly as it came: an `Authorization` header, or the UI's
/// session cookie with the headers Quay's UI sends beside it.
#[derive(Clone)]
pub enum Credential {
    Authorization(String),
    Cookie {
        cookie: String,
        csrf_token: Option<String>,
        requested_with: Option<String>,
    },
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Authorization(_) => f.write_str("Credential::Authorization(<redacted>)"),
            Self::Cookie { .. } => f.write_str("Credential::Cookie(<redacted>)"),
        }
    }
}

impl Credential {
    /// The credential a request carries, if any (an `Authorization` header wins over cookies).
    pub fn from_headers(headers: &HeaderMap) -> Option<Self> {
        let text = |name| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty() && v.len() <= 8192)
                .map(str::to_owned)
        };
        if let Some(authorization) = text(AUTHORIZATION.as_str()) {
            return Some(Self::Authorization(authorization));
        }
        let cookie = text(COOKIE.as_str())?;
        Some(Self::Cookie {
            cookie,
            csrf_token: text(CSRF_HEADER),
            requested_with: text(REQUESTED_WITH),
        })
    }

    /// Whether the browser sent it by itself (a cookie), so cross-site forgery is possible.
    pub fn is_cookie(&self) -> bool {
        matches!(self, Self::Cookie { .. })
    }

    /// Whether the request carries the `X-Requested-With` header Quay's UI sets on every call,
    /// which a cross-site form cannot send.
    pub fn requested_with(&self) -> bool {
        match self {
            Self::Authorization(_) => true,
            Self::Cookie { requested_with, .. } => requested_with.is_some(),
        }
    }

    /// The cache key of a question about the request's CSRF token: the credential and the token
    /// the request carries (Quay compares the token with the one in the session).
    fn csrf_digest(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        hasher.update(self.digest());
        if let Self::Cookie {
            csrf_token: Some(token),
            ..
        } = self
        {
            hasher.update(b"\0csrf\0");
            hasher.update(token.as_bytes());
        }
        hasher.finalize().into()
    }

    /// The cache key: a digest, so the credential itself is never stored.
    fn digest(&self) -> [u8; 32] {
        let mut hasher = Sha256::new();
        match self {
            Self::Authorization(value) => {
                hasher.update(b"authorization\0");
                hasher.update(value.as_bytes());
            }
            Self::Cookie { cookie, .. } => {
                hasher.update(b"cookie\0");
                hasher.update(cookie.as_bytes());
            }
        }
        hasher.finalize().into()
    }

    fn apply(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            Self::Authorization(value) => request.header(AUTHORIZATION, value),
            Self::Cookie {
                cookie,
                csrf_token,
                requested_with,
            } => {
                let mut request = request.header(COOKIE, cookie);
                if let Some(token) = csrf_token {
                    request = request.header(CSRF_HEADER, token);
                }
                if let Some(value) = requested_with {
                    request = request.header(REQUESTED_WITH, value);
                }
                request
            }
        }
    }
}

/// Who Quay says the caller is (`user_view`).
#[derive(Debug, Clone, Deserialize)]
pub struct QuayUser {
    pub username: String,
    #[serde(default)]
    pub super_user: bool,
    #[serde(default)]
    pub global_readonly_super_user: bool,
}

/// What Quay answered about a credential.
#[derive(Debug, Clone)]
pub enum Verdict<T> {
    /// Quay knows the credential.
    Known(T),
    /// Quay refused it (401): not signed in, expired or revoked.
    Unauthenticated,
    /// Quay knows the credential but it may not be used for this (e.g. an OAuth token
    /// without the `user:read` scope).
    Forbidden(String),
}

/// What a scheduled export exports, for [`QuayIdentity::owner_may_export`].
#[derive(Debug, Clone, Copy)]
pub struct OwnerTarget<'a> {
    /// The user endpoint: only the owner's own namespace.
    pub user_scope: bool,
    pub namespace: &'a Namespace,
    pub repository: Option<&'a RepositoryName>,
}

/// Quay could not answer: unreachable, too slow, or a server error. Never a grant.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{0}")]
pub struct QuayUnavailable(pub String);

/// `auth.quay_service_token` could not be used for a schedule owner's check.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ServiceCheckError {
    #[error(transparent)]
    Unavailable(#[from] QuayUnavailable),
    /// Quay refused the token itself: it lacks the rights or scopes, expired or was revoked.
    #[error(
        "Quay refused auth.quay_service_token on {path} with HTTP {status}: the token may not \
         check schedule owners (see \"Running beside Quay\" for the tokens that can)"
    )]
    Refused { path: String, status: u16 },
}

/// A question Quay answers for itself: one of Quay's own endpoints guarded by exactly the
/// permission test and OAuth scope of the Quay endpoint logexport serves, asked with the caller's
/// own credential. Quay's answer is logexport's answer, whatever the credential's scopes, the
/// caller's roles and Quay's features (quay/quay `endpoints/api/logs.py` for the guards of the
/// endpoints served; the endpoint asked is named on each question).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Question {
    /// `@require_user_admin()`, the guard of Quay's user `logs`, `aggregatelogs` and
    /// `exportlogs`; asked on `GET /api/v1/user/notifications` (`endpoints/api/user.py`
    /// `UserNotificationList.get`, the same decorator and nothing else).
    UserAdmin,
    /// `@require_scope(ORG_ADMIN)` and `AdministerOrganizationPermission(org) or
    /// allow_if_global_readonly_superuser() or allow_if_superuser_with_full_access()`, the guard
    /// of Quay's organization `logs`, `aggregatelogs` and `exportlogs`; asked on
    /// `GET /api/v1/organization/{org}/members` (`endpoints/api/organization.py`
    /// `OrganizationMemberList.get`, the same test). Its 404, for a user's namespace addressed
    /// as an organization as Quay's UI does, comes after the test passed.
    OrganizationAdmin(Namespace),
    /// `@require_repo_admin(allow_for_global_readonly_superuser=True, allow_for_superuser=True)`,
    /// the guard of Quay's repository `logs` and `aggregatelogs`; asked on
    /// `GET /api/v1/repository/{ns}/{repo}/permissions/user/` (`endpoints/api/permission.py`
    /// `RepositoryUserPermissionList.get`, the same decorator).
    RepositoryAdminRead(Namespace, RepositoryName),
    /// `@require_repo_admin(allow_for_superuser=True)`, the guard of Quay's repository
    /// `exportlogs`, which no GET of Quay's shares; asked on
    /// `PUT /api/v1/repository/{ns}/{repo}/permissions/user/{PROBE_USER}` with an empty JSON
    /// object (`endpoints/api/permission.py` `RepositoryUserPermission.put`: the same decorator,
    /// then `@validate_json_request("UserPermission")`, which refuses the body with 400 before
    /// anything is done — and the user does not exist).
    RepositoryAdminExport(Namespace, RepositoryName),
    /// `@require_fresh_login`, `@require_scope(SUPERUSER)` and `allow_if_any_superuser()`, the
    /// guard of Quay's `/api/v1/superuser/logs`; asked on `GET /api/v1/superuser/users/?limit=1`
    /// (`endpoints/api/superuser.py` `SuperUserList.get`, the same guards).
    AnySuperuser,
    /// Quay's API-wide CSRF check (`endpoints/csrf.py` `csrf_protect`, first of
    /// `api.decorators` in `endpoints/api/__init__.py`), which every non-GET request meets
    /// before anything else; asked with `POST /api/v1/signin` and an empty JSON object, which
    /// Quay refuses with 403 when the check fails and with 400 (no username; nothing done)
    /// when it passes.
    Csrf,
}

impl Question {
    fn segments(&self) -> Vec<&str> {
        match self {
            Self::UserAdmin => vec!["api", "v1", "user", "notifications"],
            Self::OrganizationAdmin(org) => {
                vec!["api", "v1", "organization", org.as_str(), "members"]
            }
            Self::RepositoryAdminRead(namespace, repository) => vec![
                "api",
                "v1",
                "repository",
                namespace.as_str(),
                repository.as_str(),
                "permissions",
                "user",
                "",
            ],
            Self::RepositoryAdminExport(namespace, repository) => vec![
                "api",
                "v1",
                "repository",
                namespace.as_str(),
                repository.as_str(),
                "permissions",
                "user",
                PROBE_USER,
            ],
            Self::AnySuperuser => vec!["api", "v1", "superuser", "users", ""],
            Self::Csrf => vec!["api", "v1", "signin"],
        }
    }

    fn query(&self) -> Option<(&'static str, &'static str)> {
        match self {
            Self::UserAdmin | Self::AnySuperuser => Some(("limit", "1")),
            _ => None,
        }
    }

    fn method(&self) -> reqwest::Method {
        match self {
            Self::Csrf => reqwest::Method::POST,
            Self::RepositoryAdminExport(..) => reqwest::Method::PUT,
            _ => reqwest::Method::GET,
        }
    }

    /// Whether Quay is asked with a request whose body it refuses (400) once the guard passed.
    fn refused_body(&self) -> bool {
        matches!(self, Self::Csrf | Self::RepositoryAdminExport(..))
    }

    /// The endpoint asked, for logs and errors (names left out).
    fn path(&self) -> &'static str {
        match self {
            Self::UserAdmin => "/api/v1/user/notifications",
            Self::OrganizationAdmin(_) => "/api/v1/organization/…/members",
            Self::RepositoryAdminRead(..) => "/api/v1/repository/…/permissions/user/",
            Self::RepositoryAdminExport(..) => "/api/v1/repository/…/permissions/user/…",
            Self::AnySuperuser => "/api/v1/superuser/users/",
            Self::Csrf => "/api/v1/signin",
        }
    }
}

/// The user named in [`Question::RepositoryAdminExport`]; the body sent with it is refused
/// before the name is even looked up, so whether such a user exists does not matter.
const PROBE_USER: &str = "logexport-permission-probe";

/// Quay's answer to a [`Question`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// The permission test passed.
    Granted,
    /// The permission test passed and then Quay found no such thing.
    NotFound,
    /// The credential is valid but may not do this (Quay's 403).
    Denied,
    /// Quay does not accept the credential (Quay's 401: unknown, expired, revoked, disabled).
    Unauthenticated,
}

/// The Quay instance and its answers.
pub struct QuayIdentity {
    http: reqwest::Client,
    base: url::Url,
    users: Cache<[u8; 32], Verdict<Arc<QuayUser>>>,
    answers: Cache<([u8; 32], Question), Answer>,
    calls: AtomicU64,
}

impl std::fmt::Debug for QuayIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuayIdentity")
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

/// Why the client for Quay cannot be built from `[auth]`.
#[derive(Debug, thiserror::Error)]
pub enum QuayClientError {
    /// `auth.quay_url` does not parse.
    #[error("auth.quay_url is not a URL: {0}")]
    Url(#[source] url::ParseError),
    /// `auth.ssl_ca_path` cannot be used.
    #[error(transparent)]
    CaFile(#[from] crate::http_client::CaFileError),
    /// The TLS library refused the client's settings.
    #[error("cannot build the HTTP client for Quay: {0}")]
    Client(#[source] reqwest::Error),
}

impl QuayIdentity {
    /// A client for `auth.quay_url` with the `[auth]` settings.
    pub fn new(config: &AuthConfig) -> Result<Self, QuayClientError> {
        let mut base = url::Url::parse(&config.quay_url).map_err(QuayClientError::Url)?;
        if !base.path().ends_with('/') {
            let path = format!("{}/", base.path());
            base.set_path(&path);
        }
        base.set_query(None);
        let timeout = Duration::from_secs(config.timeout_seconds.max(1));
        let http = crate::http_client::builder(
            config.verify_ssl,
            config.ssl_ca_path.as_deref(),
            "auth.ssl_ca_path",
        )?
        .connect_timeout(timeout)
        .timeout(timeout)
        .build()
        .map_err(QuayClientError::Client)?;
        let ttl = Duration::from_secs(config.cache_seconds);
        let max = config.cache_max_entries;
        Ok(Self {
            http,
            base,
            users: Cache::builder().max_capacity(max).time_to_live(ttl).build(),
            answers: Cache::builder().max_capacity(max).time_to_live(ttl).build(),
            calls: AtomicU64::new(0),
        })
    }

    /// Requests sent to Quay so far (for tests and metrics).
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// `GET /api/v1/user/` with the caller's credential.
    pub async fn user(
        &self,
        credential: &Credential,
    ) -> Result<Verdict<Arc<QuayUser>>, QuayUnavailable> {
        let url = self.url(&["api", "v1", "user", ""]);
        self.users
            .try_get_with(credential.digest(), async {
                let response = self.get(url, credential).await?;
                match response.status().as_u16() {
                    200 => {
                        let user: QuayUser = response.json().await.map_err(|e| {
                            QuayUnavailable(format!(
                                "Quay answered /api/v1/user/ with an unexpected body: {e}"
                            ))
                        })?;
                        Ok(Verdict::Known(Arc::new(user)))
                    }
                    401 => Ok(Verdict::Unauthenticated),
                    403 => Ok(Verdict::Forbidden(
                        "Quay does not let this credential read the user (an OAuth token needs the user:read scope)".into(),
                    )),
                    status => Err(unexpected("/api/v1/user/", status)),
                }
            })
            .await
            .map_err(|e: Arc<QuayUnavailable>| (*e).clone())
    }

    /// Asks Quay `question` with the caller's own credential; answers are cached per credential
    /// and question for `auth.cache_seconds`.
    pub async fn ask(
        &self,
        credential: &Credential,
        question: &Question,
    ) -> Result<Answer, QuayUnavailable> {
        let digest = match question {
            Question::Csrf => credential.csrf_digest(),
            _ => credential.digest(),
        };
        self.answers
            .try_get_with((digest, question.clone()), async {
                let mut url = self.url(&question.segments());
                if let Some((key, value)) = question.query() {
                    url.query_pairs_mut().append_pair(key, value);
                }
                let mut request = self.http.request(question.method(), url);
                if question.refused_body() {
                    // The empty JSON object Quay's schema validation refuses.
                    request = request
                        .header("content-type", "application/json")
                        .body("{}");
                }
                let response = self.send(request, credential).await?;
                let path = question.path();
                let status = response.status().as_u16();
                match (question.refused_body(), status) {
                    // The body was refused: the guards before it passed.
                    (true, 400) => Ok(Answer::Granted),
                    (true, 200..=299) => Err(unexpected(path, status)),
                    (false, 200) => Ok(Answer::Granted),
                    (_, 401) => Ok(Answer::Unauthenticated),
                    (_, 403) => Ok(Answer::Denied),
                    // Quay's own "not found" comes after the permission test passed; any other
                    // 404 (a proxy, a Quay without the endpoint) proves nothing.
                    (_, 404) if is_quay_not_found(response).await => Ok(Answer::NotFound),
                    (_, status) => Err(unexpected(path, status)),
                }
            })
            .await
            .map_err(|e: Arc<QuayUnavailable>| (*e).clone())
    }

    /// Tries `auth.quay_service_token` once on each endpoint a schedule's owner check calls, with
    /// names that do not exist: Quay runs its permission test before it looks the name up, so a
    /// token that may ask gets Quay's "not found" and one that may not gets 401 or 403.
    pub async fn check_service_token(
        &self,
        token: &crate::config::Secret,
    ) -> Result<(), ServiceCheckError> {
        let credential = Credential::Authorization(format!("Bearer {}", token.expose()));
        let absent = format!("logexport-probe-{}", uuid::Uuid::new_v4().simple());
        let paths: [&[&str]; 3] = [
            &["api", "v1", "superuser", "users", &absent],
            &["api", "v1", "organization", &absent, "members", &absent],
            &[
                "api",
                "v1",
                "repository",
                &absent,
                &absent,
                "permissions",
                "user",
                &absent,
                "transitive",
            ],
        ];
        for segments in paths {
            self.service_get::<serde_json::Value>(&credential, segments)
                .await?;
        }
        Ok(())
    }

    /// Whether `owner` may still export `target`, asked with logexport's own Quay token
    /// (`auth.quay_service_token`, see [`QuayIdentity::check_service_token`]): `Ok(None)`
    /// yes, `Ok(Some(reason))` no. For scheduled exports, whose owner sends no credential.
    /// Follows quay/quay `endpoints/api/superuser.py` (`user_view`: `super_user`, `enabled`),
    /// `endpoints/api/organization.py` (`org_view.teams[].role`, `OrganizationMember.get`) and
    /// `endpoints/api/permission.py` (`RepositoryUserTransitivePermission.get`).
    pub async fn owner_may_export(
        &self,
        token: &crate::config::Secret,
        owner: &Namespace,
        target: OwnerTarget<'_>,
        full_access: bool,
    ) -> Result<Option<String>, ServiceCheckError> {
        let credential = Credential::Authorization(format!("Bearer {}", token.expose()));
        #[derive(Deserialize)]
        struct User {
            #[serde(default)]
            super_user: bool,
            #[serde(default = "enabled")]
            enabled: bool,
        }
        fn enabled() -> bool {
            true
        }
        let path = ["api", "v1", "superuser", "users", owner.as_str()];
        let Some(user) = self.service_get::<User>(&credential, &path).await? else {
            return Ok(Some(format!("{owner} no longer exists in Quay")));
        };
        if !user.enabled {
            return Ok(Some(format!("{owner} is disabled in Quay")));
        }
        let namespace = target.namespace;
        if (user.super_user && full_access) || namespace == owner {
            return Ok(None);
        }
        if target.repository.is_none() && target.user_scope {
            return Ok(Some(format!("{owner} does not own namespace {namespace}")));
        }
        if self.org_admin(&credential, namespace, owner).await? {
            return Ok(None);
        }
        let Some(repository) = target.repository else {
            return Ok(Some(format!(
                "{owner} is no longer an administrator of organization {namespace}"
            )));
        };
        #[derive(Deserialize)]
        struct Roles {
            #[serde(default)]
            permissions: Vec<Role>,
        }
        #[derive(Deserialize)]
        struct Role {
            role: String,
        }
        let path = [
            "api",
            "v1",
            "repository",
            namespace.as_str(),
            repository.as_str(),
            "permissions",
            "user",
            owner.as_str(),
            "transitive",
        ];
        let roles = self.service_get::<Roles>(&credential, &path).await?;
        if roles.is_some_and(|r| r.permissions.iter().any(|p| p.role == "admin")) {
            return Ok(None);
        }
        Ok(Some(format!(
            "{owner} is no longer an administrator of repository {namespace}/{repository}"
        )))
    }

    /// Whether `member` is on a team of organization `org` whose role is `admin`.
    async fn org_admin(
        &self,
        credential: &Credential,
        org: &Namespace,
        member: &Namespace,
    ) -> Result<bool, ServiceCheckError> {
        #[derive(Deserialize)]
        struct Organization {
            #[serde(default)]
            teams: std::collections::HashMap<String, Team>,
        }
        #[derive(Deserialize)]
        struct Team {
            #[serde(default)]
            role: String,
        }
        #[derive(Deserialize)]
        struct Member {
            #[serde(default)]
            teams: Vec<MemberTeam>,
        }
        #[derive(Deserialize)]
        struct MemberTeam {
            name: String,
        }
        let path = ["api", "v1", "organization", org.as_str()];
        let Some(organization) = self.service_get::<Organization>(credential, &path).await? else {
            return Ok(false);
        };
        let path = [
            "api",
            "v1",
            "organization",
            org.as_str(),
            "members",
            member.as_str(),
        ];
        let Some(member) = self.service_get::<Member>(credential, &path).await? else {
            return Ok(false);
        };
        Ok(member.teams.iter().any(|t| {
            organization
                .teams
                .get(&t.name)
                .is_some_and(|team| team.role == "admin")
        }))
    }

    /// A GET with logexport's own token: `Ok(None)` for Quay's 404; 401/403 mean the token may
    /// not ask this, which is the operator's to fix ([`ServiceCheckError::Refused`]).
    async fn service_get<T: serde::de::DeserializeOwned>(
        &self,
        credential: &Credential,
        segments: &[&str],
    ) -> Result<Option<T>, ServiceCheckError> {
        let response = self.get(self.url(segments), credential).await?;
        let path = service_path(segments);
        match response.status().as_u16() {
            200 => response.json().await.map(Some).map_err(|e| {
                QuayUnavailable(format!("Quay answered {path} with an unexpected body: {e}")).into()
            }),
            404 if is_quay_not_found(response).await => Ok(None),
            status @ (401 | 403) => Err(ServiceCheckError::Refused { path, status }),
            status => Err(unexpected(&path, status).into()),
        }
    }

    fn url(&self, segments: &[&str]) -> url::Url {
        let mut url = self.base.clone();
        url.path_segments_mut()
            .expect("an http(s) URL has path segments")
            .pop_if_empty()
            .extend(segments);
        url
    }

    async fn get(
        &self,
        url: url::Url,
        credential: &Credential,
    ) -> Result<reqwest::Response, QuayUnavailable> {
        self.send(self.http.get(url), credential).await
    }

    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        credential: &Credential,
    ) -> Result<reqwest::Response, QuayUnavailable> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let request = credential.apply(request.header("accept", "application/json"));
        request.send().await.map_err(|e| {
            let why = if e.is_timeout() {
                "did not answer in time (auth.timeout_seconds)"
            } else if e.is_connect() {
                "cannot be reached"
            } else {
                "failed to answer"
            };
            if crate::http_client::is_certificate_error(&e) {
                // The operator's fix, in the log: the caller only learns that Quay is unavailable.
                tracing::warn!(
                    error = %e,
                    hint = %crate::http_client::certificate_hint("auth.ssl_ca_path"),
                    "Quay identity lookup failed"
                );
            } else {
                tracing::warn!(error = %e, "Quay identity lookup failed");
            }
            QuayUnavailable(format!("Quay {why}; try again shortly"))
        })
    }
}

/// Whether a 404 is Quay's own "not found" (`{"error_type": "not_found", ...}`).
async fn is_quay_not_found(response: reqwest::Response) -> bool {
    #[derive(Deserialize)]
    struct QuayError {
        error_type: String,
    }
    response
        .json::<QuayError>()
        .await
        .is_ok_and(|e| e.error_type == "not_found")
}

/// A service-token path for errors: the endpoint with the names left out.
fn service_path(segments: &[&str]) -> String {
    let shown = segments.len().min(4);
    let mut path = format!("/{}", segments[..shown].join("/"));
    if shown < segments.len() {
        path.push_str("/…");
    }
    path
}

fn unexpected(path: &str, status: u16) -> QuayUnavailable {
    tracing::warn!(
        status,
        path,
        "Quay answered an identity lookup with an error"
    );
    QuayUnavailable(format!(
        "Quay answered {path} with HTTP {status}; try again shortly"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(url: &str) -> QuayIdentity {
        crate::telemetry::install_crypto_provider();
        QuayIdentity::new(&AuthConfig {
            quay_url: url.into(),
            ..AuthConfig::default()
        })
        .unwrap()
    }

    #[test]
    fn urls_are_built_from_segments_under_the_base_path() {
        let quay = identity("https://quay.example.com/prefix?x=1");
        assert_eq!(
            quay.url(&["api", "v1", "user", ""]).as_str(),
            "https://quay.example.com/prefix/api/v1/user/"
        );
        // A segment cannot add a query, a fragment or a level, whatever it holds…
        assert_eq!(
            quay.url(&["api", "v1", "repository", "a?b#c/d"]).as_str(),
            "https://quay.example.com/prefix/api/v1/repository/a%3Fb%23c%2Fd"
        );
        // …and dot segments, which the URL library would resolve, are no valid names.
        for dots in [".", "..", "%2e%2e"] {
            assert!(Namespace::parse(dots).is_err(), "{dots}");
            assert!(RepositoryName::parse(dots).is_err(), "{dots}");
        }
    }

    #[test]
    fn credentials_never_show_in_debug_output_and_digests_differ_by_kind() {
        let mut headers = HeaderMap::new();
        headers.insert(COOKIE, "_csrf_token=s3cret".parse().unwrap());
        let cookie = Credential::from_headers(&headers).unwrap();
        assert!(!format!("{cookie:?}").contains("s3cret"));
        assert!(cookie.is_cookie() && !cookie.requested_with());
        headers.insert(AUTHORIZATION, "Bearer s3cret".parse().unwrap());
        let bearer = Credential::from_headers(&headers).unwrap();
        assert!(!bearer.is_cookie() && bearer.requested_with());
        assert!(!format!("{bearer:?}").contains("s3cret"));
        assert_ne!(cookie.digest(), bearer.digest());
    }
}
