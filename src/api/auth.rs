//! Bearer-token callers, their permissions, and the token table.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use axum::http::HeaderMap;
use axum::http::header::ORIGIN;

use super::quay_auth::{Credential, QuayUser, Verdict};
use super::{ApiError, AppState};
use crate::config::AuthMode;
use crate::domain::{Namespace, RepositoryName};

/// What a caller wants with a repository's logs: Quay's rules differ for reading and exporting.
#[derive(Debug, Clone, Copy)]
pub enum RepositoryRight {
    ReadLogs,
    Export,
}

/// The authenticated caller and what it administers.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Caller {
    pub username: String,
    pub admin_orgs: Vec<String>,
    pub admin_repos: Vec<String>,
    pub superuser: bool,
    /// Quay's global read-only superuser (`global_readonly_super_user` in `endpoints/api/user.py`):
    /// reads every log and exports users' and organizations' logs, never a repository's. Token mode
    /// has no such token yet, hence the default.
    #[sqlx(default)]
    pub global_readonly_superuser: bool,
    /// Superusers reach every namespace (Quay's `FEATURE_SUPERUSERS_FULL_ACCESS`, from
    /// `auth.superusers_full_access`); without it they read the registry-wide logs only.
    #[sqlx(default)]
    pub superuser_full_access: bool,
    /// Quay mode: the caller's own Quay credential, to ask Quay about repositories.
    #[sqlx(skip)]
    pub quay: Option<Credential>,
}

impl Caller {
    /// Admin of the namespace (its organization admin, the user itself) or superuser.
    pub fn administers_namespace(&self, namespace: &str) -> bool {
        (self.superuser && self.superuser_full_access)
            || self.username == namespace
            || self.admin_orgs.iter().any(|o| o == namespace)
    }

    /// May export / read the organization's logs. As in Quay (`auth/permissions.py`), a user
    /// administers its own namespace, and Quay's UI addresses that namespace as an organization
    /// (`web/src/hooks/UseUsageLogs.ts`), so the user whose namespace it is passes too.
    pub fn may_access_organization(&self, org: &Namespace) -> bool {
        self.administers_namespace(org.as_str()) || self.global_readonly_superuser
    }

    /// May read the repository's logs: its admins, and global read-only superusers
    /// (`require_repo_admin(allow_for_global_readonly_superuser=True)` in Quay's `logs.py`).
    pub fn may_read_repository(&self, namespace: &Namespace, repository: &RepositoryName) -> bool {
        self.may_access_repository(namespace, repository) || self.global_readonly_superuser
    }

    /// May read the registry-wide logs (Quay's `/api/v1/superuser/logs`).
    pub fn may_read_superuser_logs(&self) -> bool {
        self.superuser || self.global_readonly_superuser
    }

    /// May export the repository's logs (and read them, see [`Caller::may_read_repository`]).
    pub fn may_access_repository(
        &self,
        namespace: &Namespace,
        repository: &RepositoryName,
    ) -> bool {
        let full = format!("{namespace}/{repository}");
        self.administers_namespace(namespace.as_str()) || self.admin_repos.contains(&full)
    }
}

impl Caller {
    /// A caller as Quay describes it (`user_view`); organizations it administers only.
    pub fn from_quay(user: &QuayUser, credential: Credential, full_access: bool) -> Self {
        Self {
            username: user.username.clone(),
            admin_orgs: user
                .organizations
                .iter()
                .filter(|o| o.is_org_admin)
                .map(|o| o.name.clone())
                .collect(),
            admin_repos: Vec::new(),
            superuser: user.super_user,
            global_readonly_superuser: user.global_readonly_super_user,
            superuser_full_access: full_access,
            quay: Some(credential),
        }
    }

    /// May export the repository's logs: [`Caller::may_access_repository`], else (Quay mode)
    /// Quay's `can_admin` for the caller.
    pub async fn may_export_repository(
        &self,
        state: &AppState,
        namespace: &Namespace,
        repository: &RepositoryName,
    ) -> Result<bool, ApiError> {
        if self.may_access_repository(namespace, repository) {
            return Ok(true);
        }
        self.quay_can_admin(state, namespace, repository).await
    }

    /// May read the repository's logs: [`Caller::may_read_repository`], else (Quay mode)
    /// Quay's `can_admin` for the caller.
    pub async fn may_read_repository_logs(
        &self,
        state: &AppState,
        namespace: &Namespace,
        repository: &RepositoryName,
    ) -> Result<bool, ApiError> {
        if self.may_read_repository(namespace, repository) {
            return Ok(true);
        }
        self.quay_can_admin(state, namespace, repository).await
    }

    /// Parses a repository path and checks the caller's `right` to it: 400 for a bad name, 403
    /// when the right is missing.
    pub async fn checked_repository(
        &self,
        state: &AppState,
        namespace: &str,
        repository: &str,
        right: RepositoryRight,
    ) -> Result<(Namespace, RepositoryName), ApiError> {
        let namespace = super::parse_namespace(namespace)?;
        let repository = RepositoryName::parse(repository)
            .map_err(|e| ApiError::InvalidRequest(e.to_string()))?;
        let allowed = match right {
            RepositoryRight::ReadLogs => {
                self.may_read_repository_logs(state, &namespace, &repository)
                    .await?
            }
            RepositoryRight::Export => {
                self.may_export_repository(state, &namespace, &repository)
                    .await?
            }
        };
        if !allowed {
            return Err(ApiError::Forbidden(format!(
                "you are not an administrator of repository {namespace}/{repository}"
            )));
        }
        Ok((namespace, repository))
    }

    async fn quay_can_admin(
        &self,
        state: &AppState,
        namespace: &Namespace,
        repository: &RepositoryName,
    ) -> Result<bool, ApiError> {
        let (Some(credential), Some(quay)) = (&self.quay, &state.quay) else {
            return Ok(false);
        };
        match quay.can_admin(credential, namespace, repository).await {
            Ok(Verdict::Known(can_admin)) => Ok(can_admin),
            Ok(Verdict::Unauthenticated) => Err(ApiError::Unauthorized),
            Ok(Verdict::Forbidden(_)) => Ok(false),
            Err(e) => Err(ApiError::Unavailable(e.to_string())),
        }
    }

    /// Refuses a state-changing request that a browser may have been tricked into sending: one
    /// authenticated by the Quay session cookie must carry `X-Requested-With` (Quay's UI sets
    /// it; a cross-site form cannot) and, when the browser names its `Origin`, come from one of
    /// `auth.allowed_origins`.
    pub fn check_not_forged(&self, state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(credential) = self.quay.as_ref().filter(|c| c.is_cookie()) else {
            return Ok(());
        };
        if !credential.requested_with() {
            return Err(ApiError::Forbidden(
                "a request authenticated by the Quay session cookie must carry X-Requested-With"
                    .into(),
            ));
        }
        if let Some(origin) = headers.get(ORIGIN) {
            let origin = origin.to_str().unwrap_or_default().trim_end_matches('/');
            if !state.config.auth.origins().iter().any(|o| o == origin) {
                return Err(ApiError::Forbidden(format!(
                    "requests from origin {origin:?} may not change anything (auth.allowed_origins)"
                )));
            }
        }
        Ok(())
    }
}

fn hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Creates a token and stores only its hash; the token is returned once.
pub async fn create_token(
    pool: &PgPool,
    username: &str,
    admin_orgs: &[String],
    admin_repos: &[String],
    superuser: bool,
) -> anyhow::Result<String> {
    let mut raw = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut raw);
    let token = format!(
        "lxp_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    );
    sqlx::query(
        "INSERT INTO api_tokens (id, token_hash, username, admin_orgs, admin_repos, superuser)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(uuid::Uuid::new_v4())
    .bind(hash(&token))
    .bind(username)
    .bind(admin_orgs)
    .bind(admin_repos)
    .bind(superuser)
    .execute(pool)
    .await?;
    Ok(token)
}

/// Known tokens for a few seconds, so a busy client costs no database round trip per request
/// for authentication. A revoked token stops working within [`TokenCache::TTL`].
#[derive(Debug, Default)]
pub struct TokenCache {
    entries: Mutex<HashMap<Vec<u8>, (Caller, Instant)>>,
}

impl TokenCache {
    /// How long a looked-up token is trusted without asking the database again.
    pub const TTL: Duration = Duration::from_secs(10);
    const MAX_ENTRIES: usize = 10_000;

    fn get(&self, key: &[u8]) -> Option<Caller> {
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(key)
            .filter(|(_, at)| at.elapsed() < Self::TTL)
            .map(|(caller, _)| caller.clone())
    }

    fn put(&self, key: Vec<u8>, caller: Caller) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if entries.len() >= Self::MAX_ENTRIES {
            entries.retain(|_, (_, at)| at.elapsed() < Self::TTL);
            if entries.len() >= Self::MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(key, (caller, Instant::now()));
    }
}

async fn lookup(state: &AppState, token: &str) -> Result<Option<Caller>, ApiError> {
    let key = hash(token);
    if let Some(caller) = state.tokens.get(&key) {
        return Ok(Some(caller));
    }
    let caller: Option<Caller> = sqlx::query_as::<_, Caller>(
        "SELECT username, admin_orgs, admin_repos, superuser FROM api_tokens
         WHERE token_hash = $1 AND revoked_at IS NULL",
    )
    .bind(&key)
    .fetch_optional(&state.pool)
    .await?
    .map(|caller| Caller {
        superuser_full_access: state.config.auth.superusers_full_access(),
        ..caller
    });
    if let Some(caller) = &caller {
        state.tokens.put(key, caller.clone());
    }
    Ok(caller)
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let caller = match state.config.auth.mode {
            AuthMode::Tokens => token_caller(parts, state).await?,
            AuthMode::Quay => quay_caller(parts, state).await?,
        };
        tracing::Span::current().record("caller", caller.username.as_str());
        Ok(caller)
    }
}

/// Token mode: a logexport token in `Authorization: Bearer`.
async fn token_caller(parts: &Parts, state: &AppState) -> Result<Caller, ApiError> {
    let header = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or(ApiError::Unauthorized)?;
    let token = header
        .strip_prefix("Bearer ")
        .map(str::trim)
        .filter(|t| !t.is_empty() && t.len() <= 256)
        .ok_or(ApiError::Unauthorized)?;
    lookup(state, token).await?.ok_or(ApiError::Unauthorized)
}

/// Quay mode: Quay says who the credential belongs to. Quay down is a 503, never a grant and
/// never a 401 (Quay's UI signs the user out on a 401).
async fn quay_caller(parts: &Parts, state: &AppState) -> Result<Caller, ApiError> {
    let credential = Credential::from_headers(&parts.headers).ok_or(ApiError::Unauthorized)?;
    let quay = state.quay.as_ref().ok_or_else(|| {
        ApiError::Unavailable("Quay identity lookups are not configured (auth.quay_url)".into())
    })?;
    match quay.user(&credential).await {
        Ok(Verdict::Known(user)) => Ok(Caller::from_quay(
            &user,
            credential,
            state.config.auth.superusers_full_access(),
        )),
        Ok(Verdict::Unauthenticated) => Err(ApiError::Unauthorized),
        Ok(Verdict::Forbidden(why)) => Err(ApiError::Forbidden(why)),
        Err(e) => Err(ApiError::Unavailable(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(username: &str, orgs: &[&str]) -> Caller {
        Caller {
            username: username.into(),
            admin_orgs: orgs.iter().map(|o| o.to_string()).collect(),
            admin_repos: vec![],
            superuser: false,
            global_readonly_superuser: false,
            superuser_full_access: false,
            quay: None,
        }
    }

    fn ns(name: &str) -> Namespace {
        Namespace::parse(name).unwrap()
    }

    #[test]
    fn a_user_administers_its_own_namespace_addressed_as_an_organization() {
        let ns1 = caller("ns1", &[]);
        assert!(ns1.may_access_organization(&ns("ns1")));
        assert!(!ns1.may_access_organization(&ns("acme")));
        assert!(caller("alice", &["acme"]).may_access_organization(&ns("acme")));
    }

    #[test]
    fn a_global_readonly_superuser_reads_everything_but_exports_no_repository() {
        let auditor = Caller {
            global_readonly_superuser: true,
            ..caller("auditor", &[])
        };
        let web = RepositoryName::parse("web").unwrap();
        assert!(auditor.may_access_organization(&ns("acme")));
        assert!(auditor.may_read_repository(&ns("acme"), &web));
        assert!(!auditor.may_access_repository(&ns("acme"), &web));
        assert!(auditor.may_read_superuser_logs());
        assert!(!caller("alice", &["acme"]).may_read_superuser_logs());
        assert!(!caller("alice", &["acme"]).may_read_repository(&ns("beta"), &web));
    }
}
