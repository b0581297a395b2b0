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

use super::{ApiError, AppState};
use crate::domain::{Namespace, RepositoryName};

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
}

impl Caller {
    /// Admin of the namespace (its organization admin, the user itself) or superuser.
    pub fn administers_namespace(&self, namespace: &str) -> bool {
        self.superuser
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
    let caller: Option<Caller> = sqlx::query_as(
        "SELECT username, admin_orgs, admin_repos, superuser FROM api_tokens
         WHERE token_hash = $1 AND revoked_at IS NULL",
    )
    .bind(&key)
    .fetch_optional(&state.pool)
    .await?;
    if let Some(caller) = &caller {
        state.tokens.put(key, caller.clone());
    }
    Ok(caller)
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
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
        let caller = lookup(state, token).await?.ok_or(ApiError::Unauthorized)?;
        tracing::Span::current().record("caller", caller.username.as_str());
        Ok(caller)
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
