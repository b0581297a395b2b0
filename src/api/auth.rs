//! The HTTP side of authentication: reading the caller off a request (the [`Caller`] extractor),
//! and the checks that belong to HTTP (forged browser requests, repository paths). The rules
//! themselves are in [`crate::access`].

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::header::ORIGIN;
use axum::http::request::Parts;

use super::{ApiError, AppState};
use crate::access::quay::{Answer, Credential, Question, Verdict};
use crate::access::{Access, Caller, Resource, tokens};
use crate::config::AuthMode;
use crate::domain::{Namespace, RepositoryName};

/// Parses a repository path and checks `caller`'s `access` to it: 400 for a bad name, 403
/// when the right is missing.
pub async fn checked_repository(
    caller: &Caller,
    state: &AppState,
    namespace: &str,
    repository: &str,
    access: Access,
) -> Result<(Namespace, RepositoryName), ApiError> {
    let namespace = super::parse_namespace(namespace)?;
    let repository =
        RepositoryName::parse(repository).map_err(|e| ApiError::InvalidRequest(e.to_string()))?;
    caller
        .authorize(
            state.quay.as_deref(),
            Resource::Repository(&namespace, &repository),
            access,
        )
        .await?;
    Ok((namespace, repository))
}

/// Refuses a state-changing request that a browser may have been tricked into sending: one
/// authenticated by the Quay session cookie must carry `X-Requested-With` (Quay's UI sets
/// it; a cross-site form cannot) and, when the browser names its `Origin`, come from one of
/// `auth.allowed_origins`.
pub fn check_not_forged(
    caller: &Caller,
    state: &AppState,
    headers: &HeaderMap,
) -> Result<(), ApiError> {
    let Some(credential) = caller.quay.as_ref().filter(|c| c.is_cookie()) else {
        return Ok(());
    };
    if !credential.requested_with() {
        return Err(ApiError::Forbidden(
            "a request authenticated by the Quay session cookie must carry X-Requested-With".into(),
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
    let full_access = state.config.auth.superusers_full_access();
    tokens::lookup(&state.pool, &state.tokens, token, full_access)
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
