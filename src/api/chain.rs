//! `GET /api/v1/exportlogs/chain?namespace=NS` (the signed head of a namespace's chain of
//! manifests) and `GET /api/v1/exportlogs/signing-keys` (the manifest keys and when each
//! signed).

use axum::Json;
use axum::extract::{RawQuery, State};
use chrono::{SecondsFormat, Utc};
use serde_json::{Value, json};

use super::schemas::{ChainParams, ErrorBody, SigningKeys};
use super::{ApiError, AppState, parse_namespace, query_param};
use crate::access::Caller;
use crate::archive::ManifestKey;
use crate::archive::chain::ChainHead;
use crate::queue::chain;

/// `GET /api/v1/exportlogs/chain?namespace=NS`
#[utoipa::path(
    get,
    path = "/api/v1/exportlogs/chain",
    tag = "export status",
    operation_id = "getChainHead",
    params(ChainParams),
    responses(
        (status = 200, description = "the namespace's last link, signed now (sequence 0: no export yet); see docs/evidence.md", body = ChainHead),
        (status = 400, description = "no or invalid namespace", body = ErrorBody),
        (status = 401, description = "no or unknown credential", body = ErrorBody),
        (status = 403, description = "the caller may not list this namespace's exports", body = ErrorBody),
        (status = 503, description = "Quay (beside Quay) could not be asked who the caller is", body = ErrorBody),
    )
)]
pub async fn head(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Json<ChainHead>, ApiError> {
    let namespace = query_param(&query, "namespace")
        .ok_or_else(|| ApiError::InvalidRequest("namespace is required".into()))?;
    let namespace = parse_namespace(&namespace)?;
    // Who may list all of a namespace's exports may see where its chain ends.
    if !super::exports::may_list_all(&state, &caller, Some(&namespace), None).await? {
        return Err(ApiError::Forbidden(format!(
            "only {}'s admins may read its chain head",
            namespace.as_str()
        )));
    }
    let (sequence, manifest_sha256) = chain::head(&state.pool, namespace.as_str()).await?;
    let key = signing_key(&state);
    let now = Utc::now();
    if let Some(key) = &key {
        let mut conn = state.pool.acquire().await?;
        chain::record_key_use(&mut conn, &key.public(), truncate(now)).await?;
    }
    let head = ChainHead {
        namespace: namespace.as_str().to_owned(),
        sequence,
        manifest_sha256,
        signed_at: now.to_rfc3339_opts(SecondsFormat::Secs, true),
        key_id: None,
        signature: None,
    }
    .sign(key.as_ref());
    Ok(Json(head))
}

fn truncate(t: chrono::DateTime<Utc>) -> chrono::DateTime<Utc> {
    chrono::DateTime::from_timestamp(t.timestamp(), 0).unwrap_or(t)
}

/// The configured signing key; an unusable one was refused when the configuration loaded.
fn signing_key(state: &AppState) -> Option<ManifestKey> {
    let secret = state.config.export.manifest_signing_key.expose();
    (!secret.is_empty())
        .then(|| ManifestKey::parse(secret).ok())
        .flatten()
}

/// `GET /api/v1/exportlogs/signing-keys`: the public keys manifests verify with (a JWK set,
/// RFC 8037), the current one first, each with the period it signed in once it has signed.
/// Public: recipients of an archive need no account.
#[utoipa::path(
    get,
    path = "/api/v1/exportlogs/signing-keys",
    tag = "export status",
    operation_id = "getSigningKeys",
    security(()),
    responses(
        (status = 200, description = "a JWK set (RFC 8037), the current key first; empty when manifests are unsigned. `signing_from`/`signing_until`: when the key signed (until null: still signing)", body = SigningKeys),
    )
)]
pub async fn signing_keys(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let history = chain::key_history(&state.pool).await?;
    // Configured keys first (the current one, then earlier ones), with their history when they
    // have signed; then keys only the history still knows.
    let mut keys: Vec<Value> = Vec::new();
    for key in state.signing_keys.iter() {
        let known = history.iter().find(|k| k.key_id == key.key_id);
        keys.push(known.unwrap_or(key).jwk());
    }
    for key in &history {
        if !state.signing_keys.iter().any(|k| k.key_id == key.key_id) {
            keys.push(key.jwk());
        }
    }
    Ok(Json(json!({ "keys": keys })))
}
