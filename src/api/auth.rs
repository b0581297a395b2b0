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

use super::quay_auth::{Answer, Credential, QuayUser, Question, Verdict};
use super::{ApiError, AppState};
use crate::config::AuthMode;
use crate::domain::{ExportScope, Namespace, RepositoryName};

/// Whose logs a request reads or exports, for [`Caller::authorize`].
#[derive(Debug, Clone, Copy)]
pub enum Resource<'a> {
    /// The caller's own user namespace (Quay's `/api/v1/user/…` endpoints).
    User,
    Organization(&'a Namespace),
    Repository(&'a Namespace, &'a RepositoryName),
    /// Every namespace (Quay's `/api/v1/superuser/logs`).
    Registry,
}

/// What a request does with a [`Resource`]'s logs: Quay guards its `logs`/`aggregatelogs`
/// (read) and `exportlogs` (export) endpoints differently for repositories.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Read,
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
    /// Quay mode: the caller's own Quay credential, to put each permission question to Quay.
    /// The user name is empty when Quay would not say who it is (no `user:read` scope).
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
    /// A caller as Quay describes it (`user_view`), when the credential may read that.
    pub fn from_quay(user: &QuayUser, credential: Credential, full_access: bool) -> Self {
        Self {
            username: user.username.clone(),
            admin_orgs: Vec::new(),
            admin_repos: Vec::new(),
            superuser: user.super_user,
            global_readonly_superuser: user.global_readonly_super_user,
            superuser_full_access: full_access,
            quay: Some(credential),
        }
    }

    /// A Quay credential whose owner Quay would not name: every question still goes to Quay.
    fn unidentified(credential: Credential, full_access: bool) -> Self {
        Self {
            username: String::new(),
            admin_orgs: Vec::new(),
            admin_repos: Vec::new(),
            superuser: false,
            global_readonly_superuser: false,
            superuser_full_access: full_access,
            quay: Some(credential),
        }
    }

    /// The caller's user name, when known (always in token mode; beside Quay when the credential
    /// may read the user).
    pub fn known_username(&self) -> Option<&str> {
        Some(self.username.as_str()).filter(|u| !u.is_empty())
    }

    /// Whether the caller may `access` the logs of `resource`: 403 when not, 401 when Quay does
    /// not accept the credential, 503 when Quay cannot be asked.
    ///
    /// Token mode: the token's rights. Quay mode: Quay's own answer to the [`Question`] guarded
    /// as the Quay endpoint is.
    pub async fn authorize(
        &self,
        state: &AppState,
        resource: Resource<'_>,
        access: Access,
    ) -> Result<(), ApiError> {
        let (Some(credential), Some(quay)) = (&self.quay, &state.quay) else {
            return self.authorize_token(resource, access);
        };
        let ask = |question: Question| async move {
            quay.ask(credential, &question)
                .await
                .map_err(|e| ApiError::Unavailable(e.to_string()))
        };
        let refused = |answer: Answer, what: String| match answer {
            Answer::Unauthenticated => ApiError::CredentialRefused,
            _ => ApiError::Forbidden(format!("Quay does not let this credential {what}")),
        };
        match resource {
            Resource::User => match ask(Question::UserAdmin).await? {
                Answer::Granted if self.known_username().is_some() => Ok(()),
                Answer::Granted | Answer::NotFound => Err(ApiError::Forbidden(
                    "Quay did not say whose namespace this is (the user:read scope)".into(),
                )),
                answer => Err(refused(
                    answer,
                    "administer the user (Quay's require_user_admin: the user:admin scope)".into(),
                )),
            },
            Resource::Organization(org) => {
                match ask(Question::OrganizationAdmin(org.clone())).await? {
                    Answer::Granted | Answer::NotFound => Ok(()),
                    answer => Err(refused(
                        answer,
                        format!("administer organization {org} (the org:admin scope)"),
                    )),
                }
            }
            Resource::Repository(namespace, repository) => {
                let (verb, question): (_, fn(Namespace, RepositoryName) -> Question) = match access
                {
                    Access::Read => ("read", Question::RepositoryAdminRead),
                    Access::Export => ("export", Question::RepositoryAdminExport),
                };
                match ask(question(namespace.clone(), repository.clone())).await? {
                    Answer::Granted => Ok(()),
                    Answer::NotFound => Err(ApiError::NotFound(format!(
                        "no repository {namespace}/{repository}"
                    ))),
                    answer => Err(refused(
                        answer,
                        format!(
                            "{verb} the logs of repository {namespace}/{repository} (the repo:admin scope)"
                        ),
                    )),
                }
            }
            Resource::Registry => match ask(Question::AnySuperuser).await? {
                Answer::Granted | Answer::NotFound => Ok(()),
                answer => Err(refused(
                    answer,
                    "read the registry-wide logs (superusers, with the super:user scope)".into(),
                )),
            },
        }
    }

    /// Whether the caller may `access` a stored export or schedule of `scope` over `namespace`
    /// (and `repository`), requested or owned by `owner`. Beside Quay: the rule of the Quay
    /// endpoint that would have made it. Token mode: its requester or owner, the namespace's
    /// admins and superusers. A refusal is `Ok(false)`, so callers can answer 404 and not tell
    /// that the thing exists; Quay refusing the credential (401) or being down (503) is an error.
    pub async fn may_access_stored(
        &self,
        state: &AppState,
        scope: &str,
        namespace: &str,
        repository: Option<&str>,
        owner: &str,
        access: Access,
    ) -> Result<bool, ApiError> {
        if self.quay.is_none() {
            return Ok(owner == self.username || self.administers_namespace(namespace));
        }
        let (Ok(scope), Ok(namespace)) =
            (scope.parse::<ExportScope>(), Namespace::parse(namespace))
        else {
            return Ok(false);
        };
        let repository = repository.map(RepositoryName::parse).transpose();
        let Ok(repository) = repository else {
            return Ok(false);
        };
        let outcome = match (scope, &repository) {
            (ExportScope::User, _) => {
                if self.known_username() != Some(namespace.as_str()) {
                    return Ok(false);
                }
                self.authorize(state, Resource::User, access).await
            }
            (ExportScope::Organization, _) | (ExportScope::Repository, None) => {
                self.authorize(state, Resource::Organization(&namespace), access)
                    .await
            }
            (ExportScope::Repository, Some(repository)) => {
                self.authorize(state, Resource::Repository(&namespace, repository), access)
                    .await
            }
        };
        match outcome {
            Ok(()) => Ok(true),
            Err(ApiError::Forbidden(_) | ApiError::NotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Token mode's rules, the token's own rights.
    fn authorize_token(&self, resource: Resource<'_>, access: Access) -> Result<(), ApiError> {
        let (allowed, what) = match resource {
            Resource::User => (true, String::new()),
            Resource::Organization(org) => (
                self.may_access_organization(org),
                format!("you are not an administrator of organization {org}"),
            ),
            Resource::Repository(namespace, repository) => (
                match access {
                    Access::Read => self.may_read_repository(namespace, repository),
                    Access::Export => self.may_access_repository(namespace, repository),
                },
                format!("you are not an administrator of repository {namespace}/{repository}"),
            ),
            Resource::Registry => (
                self.may_read_superuser_logs(),
                "registry-wide logs are for superusers only".into(),
            ),
        };
        if allowed {
            Ok(())
        } else {
            Err(ApiError::Forbidden(what))
        }
    }

    /// Parses a repository path and checks the caller's `access` to it: 400 for a bad name, 403
    /// when the right is missing.
    pub async fn checked_repository(
        &self,
        state: &AppState,
        namespace: &str,
        repository: &str,
        access: Access,
    ) -> Result<(Namespace, RepositoryName), ApiError> {
        let namespace = super::parse_namespace(namespace)?;
        let repository = RepositoryName::parse(repository)
            .map_err(|e| ApiError::InvalidRequest(e.to_string()))?;
        self.authorize(state, Resource::Repository(&namespace, &repository), access)
            .await?;
        Ok((namespace, repository))
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
/// for authentication. Entries are trusted only while this process listens for revocations
/// ([`super::tokens::REVOKED_CHANNEL`]): a revocation empties the cache at once, and without a
/// listening connection every request asks the database.
#[derive(Debug, Default)]
pub struct TokenCache {
    entries: Mutex<HashMap<Vec<u8>, (Caller, Instant)>>,
    /// True while the revocation listener is connected and listening.
    listening: std::sync::atomic::AtomicBool,
    /// Bumped on every revocation: a lookup that read the database before one does not cache.
    generation: std::sync::atomic::AtomicU64,
}

impl TokenCache {
    /// How long a looked-up token is trusted without asking the database again.
    pub const TTL: Duration = Duration::from_secs(10);
    const MAX_ENTRIES: usize = 10_000;

    /// A cache that listens for revocations on `pool` for as long as it is alive.
    pub fn start(pool: &PgPool) -> std::sync::Arc<Self> {
        let cache = std::sync::Arc::new(Self::default());
        let weak = std::sync::Arc::downgrade(&cache);
        let pool = pool.clone();
        // Without a runtime (never in the service) the cache simply stays unused.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(listen_for_revocations(pool, weak));
        }
        cache
    }

    fn get(&self, key: &[u8]) -> Option<Caller> {
        if !self.listening.load(std::sync::atomic::Ordering::Acquire) {
            return None;
        }
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(key)
            .filter(|(_, at)| at.elapsed() < Self::TTL)
            .map(|(caller, _)| caller.clone())
    }

    fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    fn put(&self, key: Vec<u8>, caller: Caller, generation: u64) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if generation != self.generation() {
            return;
        }
        if entries.len() >= Self::MAX_ENTRIES {
            entries.retain(|_, (_, at)| at.elapsed() < Self::TTL);
            if entries.len() >= Self::MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(key, (caller, Instant::now()));
    }

    /// Stops trusting entries (`listening` false) or starts again, forgetting every entry.
    fn set_listening(&self, listening: bool) {
        self.listening
            .store(false, std::sync::atomic::Ordering::Release);
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        entries.clear();
        drop(entries);
        if listening {
            self.listening
                .store(true, std::sync::atomic::Ordering::Release);
        }
    }
}

/// Empties `cache` on every revocation; while not connected, the cache is not trusted. Ends
/// when the cache is dropped.
async fn listen_for_revocations(pool: PgPool, cache: std::sync::Weak<TokenCache>) {
    use sqlx::postgres::PgListener;
    loop {
        let listener = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(super::tokens::REVOKED_CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let mut listener = match listener.await {
            Ok(listener) => listener,
            Err(e) => {
                tracing::debug!(error = %e, "token revocation listener not connected");
                if cache.upgrade().is_none() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        match cache.upgrade() {
            Some(c) => c.set_listening(true),
            None => return,
        }
        loop {
            let heard = tokio::select! {
                heard = listener.try_recv() => heard,
                () = tokio::time::sleep(Duration::from_secs(5)) => {
                    if cache.upgrade().is_none() {
                        return;
                    }
                    continue;
                }
            };
            let Some(c) = cache.upgrade() else { return };
            match heard {
                // A revocation: forget every token (revocations are rare).
                Ok(Some(_)) => c.set_listening(true),
                // The connection dropped and notifications may have been missed: trust nothing
                // until a new connection listens.
                Ok(None) | Err(_) => {
                    c.set_listening(false);
                    break;
                }
            }
        }
    }
}

async fn lookup(state: &AppState, token: &str) -> Result<Option<Caller>, ApiError> {
    let key = hash(token);
    if let Some(caller) = state.tokens.get(&key) {
        return Ok(Some(caller));
    }
    let generation = state.tokens.generation();
    let caller: Option<Caller> = sqlx::query_as::<_, Caller>(
        "UPDATE api_tokens SET last_used_at = now()
         WHERE token_hash = $1 AND revoked_at IS NULL
         RETURNING username, admin_orgs, admin_repos, superuser",
    )
    .bind(&key)
    .fetch_optional(&state.pool)
    .await?
    .map(|caller| Caller {
        superuser_full_access: state.config.auth.superusers_full_access(),
        ..caller
    });
    if let Some(caller) = &caller {
        state.tokens.put(key, caller.clone(), generation);
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
    lookup(state, token)
        .await?
        .ok_or(ApiError::CredentialRefused)
}

/// Quay mode: the credential goes to Quay. A request that changes something first passes Quay's
/// own CSRF check (Quay refuses one without a credential the same way, with 403); then Quay says
/// who the caller is, if the credential may read that. Quay down is a 503, never a grant and
/// never a 401 (Quay's UI signs the user out on a 401).
async fn quay_caller(parts: &Parts, state: &AppState) -> Result<Caller, ApiError> {
    let quay = state.quay.as_ref().ok_or_else(|| {
        ApiError::Unavailable("Quay identity lookups are not configured (auth.quay_url)".into())
    })?;
    let changes = !matches!(
        parts.method,
        axum::http::Method::GET | axum::http::Method::HEAD | axum::http::Method::OPTIONS
    );
    let Some(credential) = Credential::from_headers(&parts.headers) else {
        return Err(if changes {
            ApiError::Forbidden(CSRF_REFUSAL.into())
        } else {
            ApiError::Unauthorized
        });
    };
    if changes {
        match quay.ask(&credential, &Question::Csrf).await {
            Ok(Answer::Granted) => {}
            Ok(_) => return Err(ApiError::Forbidden(CSRF_REFUSAL.into())),
            Err(e) => return Err(ApiError::Unavailable(e.to_string())),
        }
    }
    let full_access = state.config.auth.superusers_full_access();
    match quay.user(&credential).await {
        Ok(Verdict::Known(user)) => Ok(Caller::from_quay(&user, credential, full_access)),
        Ok(Verdict::Unauthenticated | Verdict::Forbidden(_)) => {
            Ok(Caller::unidentified(credential, full_access))
        }
        Err(e) => Err(ApiError::Unavailable(e.to_string())),
    }
}

/// Quay's refusal of a state-changing request that fails its CSRF check (`endpoints/csrf.py`).
const CSRF_REFUSAL: &str = "CSRF token was invalid or missing: a request that changes something \
needs a valid Quay OAuth token, or Quay's session cookie with its X-CSRF-Token";

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
