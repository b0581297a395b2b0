//! `[auth] mode = "quay"`: the Quay instance beside logexport says who a caller is and what it
//! administers, from the caller's own Quay credential, passed on unchanged.
//!
//! Follows quay/quay: `endpoints/api/user.py` (`user_view`: `username`, `super_user`,
//! `global_readonly_super_user`, `organizations[].{name, is_org_admin}`) and
//! `endpoints/api/repository.py` (`Repository.get` → `can_admin`). Answers are cached per
//! credential digest for `auth.cache_seconds`; concurrent lookups of one credential share one
//! call to Quay. The credential itself is kept only for the request that carries it.

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
    #[serde(default)]
    pub organizations: Vec<QuayOrganization>,
}

/// One of the caller's organizations (`user_view.org_view`).
#[derive(Debug, Clone, Deserialize)]
pub struct QuayOrganization {
    pub name: String,
    #[serde(default)]
    pub is_org_admin: bool,
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

/// The Quay instance and its answers.
pub struct QuayIdentity {
    http: reqwest::Client,
    base: url::Url,
    users: Cache<[u8; 32], Verdict<Arc<QuayUser>>>,
    repositories: Cache<([u8; 32], String), Verdict<bool>>,
    calls: AtomicU64,
}

impl std::fmt::Debug for QuayIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuayIdentity")
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

impl QuayIdentity {
    /// A client for `auth.quay_url` with the `[auth]` settings.
    pub fn new(config: &AuthConfig) -> Result<Self, String> {
        let mut base = url::Url::parse(&config.quay_url)
            .map_err(|e| format!("auth.quay_url is not a URL: {e}"))?;
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
        .map_err(|e| format!("cannot build the HTTP client for Quay: {e}"))?;
        let ttl = Duration::from_secs(config.cache_seconds);
        let max = config.cache_max_entries;
        Ok(Self {
            http,
            base,
            users: Cache::builder().max_capacity(max).time_to_live(ttl).build(),
            repositories: Cache::builder().max_capacity(max).time_to_live(ttl).build(),
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

    /// Whether the caller administers the repository (`can_admin`); Quay's 403 and 404 are a no.
    pub async fn can_admin(
        &self,
        credential: &Credential,
        namespace: &Namespace,
        repository: &RepositoryName,
    ) -> Result<Verdict<bool>, QuayUnavailable> {
        // Both names passed Namespace/RepositoryName validation, and each is one path segment.
        let mut url = self.url(&[
            "api",
            "v1",
            "repository",
            namespace.as_str(),
            repository.as_str(),
        ]);
        url.query_pairs_mut().append_pair("includeTags", "false");
        let key = (credential.digest(), format!("{namespace}/{repository}"));
        self.repositories
            .try_get_with(key, async {
                let response = self.get(url, credential).await?;
                match response.status().as_u16() {
                    200 => {
                        #[derive(Deserialize)]
                        struct Repository {
                            #[serde(default)]
                            can_admin: bool,
                        }
                        let repo: Repository = response.json().await.map_err(|e| {
                            QuayUnavailable(format!(
                                "Quay answered /api/v1/repository/… with an unexpected body: {e}"
                            ))
                        })?;
                        Ok(Verdict::Known(repo.can_admin))
                    }
                    401 => Ok(Verdict::Unauthenticated),
                    403 | 404 => Ok(Verdict::Known(false)),
                    status => Err(unexpected("/api/v1/repository/…", status)),
                }
            })
            .await
            .map_err(|e: Arc<QuayUnavailable>| (*e).clone())
    }

    /// Whether `owner` may still export `target`, asked with logexport's own Quay token
    /// (`auth.quay_service_token`, a global read-only superuser's or a superuser's): `Ok(None)`
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
    ) -> Result<Option<String>, QuayUnavailable> {
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
    ) -> Result<bool, QuayUnavailable> {
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

    /// A GET with logexport's own token: `Ok(None)` for 404; 401/403 mean the token is wrong or
    /// lacks rights, which is an operator's problem, so unavailable rather than a verdict.
    async fn service_get<T: serde::de::DeserializeOwned>(
        &self,
        credential: &Credential,
        segments: &[&str],
    ) -> Result<Option<T>, QuayUnavailable> {
        let response = self.get(self.url(segments), credential).await?;
        let path = format!("/{}", segments[..segments.len().min(4)].join("/"));
        match response.status().as_u16() {
            200 => response.json().await.map(Some).map_err(|e| {
                QuayUnavailable(format!(
                    "Quay answered {path}… with an unexpected body: {e}"
                ))
            }),
            404 => Ok(None),
            status @ (401 | 403) => Err(QuayUnavailable(format!(
                "Quay refused auth.quay_service_token on {path}… (HTTP {status}): it must be a \
                 superuser's or a global read-only superuser's OAuth token"
            ))),
            status => Err(unexpected(&path, status)),
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
        self.calls.fetch_add(1, Ordering::Relaxed);
        let request = credential.apply(self.http.get(url).header("accept", "application/json"));
        request.send().await.map_err(|e| {
            let why = if e.is_timeout() {
                "did not answer in time (auth.timeout_seconds)"
            } else if e.is_connect() {
                "cannot be reached"
            } else {
                "failed to answer"
            };
            tracing::warn!(error = %e, "Quay identity lookup failed");
            QuayUnavailable(format!("Quay {why}; try again shortly"))
        })
    }
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
