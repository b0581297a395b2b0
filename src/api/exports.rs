//! `GET /api/v1/exportlogs` (the caller's exports, newest first) and
//! `GET /api/v1/exportlogs/{export_id}/download` (a freshly signed link to the archive).

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use super::schemas::{ErrorBody, ExportList, ExportListParams, ExportPath};
use super::status::{status_json, visible_row};
use super::{ApiError, AppState, parse_namespace, query_param};
use crate::access::{Access, Caller, Refusal, Resource};
use crate::domain::RepositoryName;
use crate::logs::page_token::TOKEN_LIFETIME;
use crate::queue::JobState;
use crate::queue::storage::{self, ExportListing};

const DEFAULT_LIMIT: i64 = 20;
const MAX_LIMIT: i64 = 100;

/// Where a listing page stopped, sealed into `next_page`.
#[derive(Serialize, Deserialize)]
struct ListCursor {
    /// `created_at` of the last export shown, epoch microseconds.
    #[serde(rename = "t")]
    created_at: i64,
    #[serde(rename = "id")]
    id: Uuid,
    /// Issue time, epoch seconds.
    #[serde(rename = "i")]
    issued: i64,
}

/// `GET /api/v1/exportlogs?namespace=N[&repository=R][&state=S][&limit=L][&next_page=T]`
#[utoipa::path(
    get,
    path = "/api/v1/exportlogs",
    tag = "export status",
    operation_id = "listExports",
    params(ExportListParams),
    responses(
        (status = 200, description = "a page of exports, newest first", body = ExportList),
        (status = 400, description = "invalid namespace, repository, state, limit or next_page", body = ErrorBody),
        (status = 401, description = "no or unknown credential", body = ErrorBody),
        (status = 503, description = "Quay (beside Quay) could not be asked who the caller is", body = ErrorBody),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let namespace = query_param(&query, "namespace")
        .map(|n| parse_namespace(&n))
        .transpose()?;
    let repository = query_param(&query, "repository")
        .map(|r| RepositoryName::parse(&r).map_err(|e| ApiError::InvalidRequest(e.to_string())))
        .transpose()?;
    if repository.is_some() && namespace.is_none() {
        return Err(ApiError::InvalidRequest(
            "repository needs its namespace: give namespace as well".into(),
        ));
    }
    let job_state = match query_param(&query, "state") {
        Some(s) => Some(JobState::parse(&s).ok_or_else(|| {
            ApiError::InvalidRequest(format!(
                "invalid state {s:?}: expected one of queued running succeeded failed timed_out invalid cancelled"
            ))
        })?),
        None => None,
    };
    let limit = match query_param(&query, "limit") {
        Some(l) => l
            .parse::<i64>()
            .ok()
            .filter(|l| (1..=MAX_LIMIT).contains(l))
            .ok_or_else(|| {
                ApiError::InvalidRequest(format!("invalid limit {l:?}: 1 to {MAX_LIMIT}"))
            })?,
        None => DEFAULT_LIMIT,
    };
    let everyone = may_list_all(&state, &caller, namespace.as_ref(), repository.as_ref()).await?;
    if !everyone && caller.known_username().is_none() {
        return Err(ApiError::Forbidden(
            "Quay does not let this credential see who it is (the user:read scope), so only a \
             namespace it may read the logs of can be listed: give namespace=…"
                .into(),
        ));
    }
    let requested_by = (!everyone).then_some(caller.username.as_str());
    let binding = binding(
        &caller.username,
        namespace.as_ref().map(|n| n.as_str()),
        repository.as_ref().map(|r| r.as_str()),
        job_state,
        everyone,
    );
    let now = Utc::now();
    let before = match query_param(&query, "next_page") {
        Some(token) => Some(open(&state, &token, &binding, now)?),
        None => None,
    };
    let mut rows = storage::list_exports(
        &state.pool,
        &ExportListing {
            namespace: namespace.as_ref().map(|n| n.as_str()),
            repository: repository.as_ref().map(|r| r.as_str()),
            state: job_state,
            requested_by,
            before,
            limit: limit + 1,
        },
    )
    .await?;
    let more = rows.len() as i64 > limit;
    rows.truncate(limit as usize);
    let public_url = &state.config.server.public_url;
    let mut body = json!({
        "exports": rows.iter().map(|r| status_json(r, public_url)).collect::<Vec<_>>(),
    });
    if more && let Some(last) = rows.last() {
        let cursor = ListCursor {
            created_at: last.created_at.timestamp_micros(),
            id: last.id,
            issued: now.timestamp(),
        };
        let plain = serde_json::to_vec(&cursor).map_err(ApiError::internal)?;
        let token = state
            .list_key
            .seal_bytes(&plain, &binding)
            .map_err(|e| ApiError::InvalidRequest(e.to_string()))?;
        body["next_page"] = Value::String(token);
    }
    Ok(Json(body))
}

/// What a `next_page` token is bound to: the caller and every filter, so it opens for exactly
/// the listing it was issued for.
fn binding(
    username: &str,
    namespace: Option<&str>,
    repository: Option<&str>,
    state: Option<JobState>,
    everyone: bool,
) -> Vec<u8> {
    let mut h = Sha256::new();
    for field in [
        "logexport-export-listing-v1",
        username,
        namespace.unwrap_or(""),
        repository.unwrap_or(""),
        state.map_or("", JobState::as_str),
        if everyone { "all" } else { "own" },
    ] {
        h.update((field.len() as u64).to_be_bytes());
        h.update(field.as_bytes());
    }
    h.finalize().to_vec()
}

fn open(
    state: &AppState,
    token: &str,
    binding: &[u8],
    now: DateTime<Utc>,
) -> Result<(DateTime<Utc>, Uuid), ApiError> {
    let invalid = || {
        ApiError::InvalidRequest(
            "next_page is not valid for this listing (altered, or issued for another caller or filter)"
                .into(),
        )
    };
    let plain = state
        .list_key
        .open_bytes(token, binding)
        .map_err(|_| invalid())?;
    let cursor: ListCursor = serde_json::from_slice(&plain).map_err(|_| invalid())?;
    let issued = DateTime::from_timestamp(cursor.issued, 0).ok_or_else(invalid)?;
    if now - issued > TOKEN_LIFETIME {
        return Err(ApiError::InvalidRequest(
            "next_page has expired (tokens are valid for 2 days); start again from the first page"
                .into(),
        ));
    }
    let created_at = DateTime::from_timestamp_micros(cursor.created_at).ok_or_else(invalid)?;
    Ok((created_at, cursor.id))
}

/// Whether the caller sees every export of `namespace` (or of its `repository`), not only their
/// own. Token mode: a namespace's admins (and its user, and superusers). Beside Quay: whoever
/// Quay lets read that namespace's (or repository's) logs, as an organization (Quay's UI
/// addresses a user's own namespace that way too) or as the caller's own user namespace.
pub(super) async fn may_list_all(
    state: &AppState,
    caller: &Caller,
    namespace: Option<&crate::domain::Namespace>,
    repository: Option<&RepositoryName>,
) -> Result<bool, ApiError> {
    let Some(namespace) = namespace else {
        return Ok(false);
    };
    if caller.quay.is_none() {
        return Ok(caller.administers_namespace(namespace.as_str()));
    }
    let resource = match repository {
        Some(repository) => Resource::Repository(namespace, repository),
        None => Resource::Organization(namespace),
    };
    let mut outcome = caller
        .authorize(state.quay.as_deref(), resource, Access::Read)
        .await;
    if matches!(outcome, Err(Refusal::Forbidden(_)))
        && repository.is_none()
        && caller.known_username() == Some(namespace.as_str())
    {
        outcome = caller
            .authorize(state.quay.as_deref(), Resource::User, Access::Read)
            .await;
    }
    match outcome {
        Ok(()) => Ok(true),
        Err(Refusal::Forbidden(_) | Refusal::NotFound(_)) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// `GET /api/v1/exportlogs/{export_id}/download`: 302 to a link signed now.
#[utoipa::path(
    get,
    path = "/api/v1/exportlogs/{export_id}/download",
    tag = "export status",
    operation_id = "downloadExport",
    params(ExportPath),
    responses(
        (status = 302, description = "to a link signed now, valid `export.url_expiry_seconds` or until the archive is deleted",
            headers(
                ("Location" = String, description = "the signed link"),
                ("X-Link-Expires-At" = String, description = "RFC 3339"),
            )),
        (status = 401, description = "no or unknown credential", body = ErrorBody),
        (status = 404, description = "no such export visible to the caller", body = ErrorBody),
        (status = 409, description = "the export has no archive (not succeeded)", body = ErrorBody),
        (status = 410, description = "the archive was deleted (retention passed)", body = ErrorBody),
        (status = 503, description = "no archive storage configured, or Quay (beside Quay) unreachable", body = ErrorBody),
    )
)]
pub async fn download(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let row = visible_row(&state, &caller, &id, Access::Read).await?;
    let export_state = row.state();
    if export_state != JobState::Succeeded {
        return Err(ApiError::Conflict(format!(
            "export {} has no archive to download: it is {}",
            row.id,
            export_state.as_str()
        )));
    }
    let config = &state.config.export;
    let deleted_at = row.finished_at.map(|f| {
        f + chrono::Duration::seconds(config.object_retention_seconds.min(i64::MAX as u64) as i64)
    });
    let left = deleted_at
        .map(|d| (d - Utc::now()).num_seconds())
        .unwrap_or(0);
    let (Some(key), None, true) = (row.object_key.as_deref(), row.object_deleted_at, left > 0)
    else {
        return Err(ApiError::Gone(format!(
            "the archive of export {} was deleted (archives are kept {} s): request the export again",
            row.id, config.object_retention_seconds
        )));
    };
    let Some(objects) = &state.objects else {
        return Err(ApiError::Unavailable(
            "this API process has no archive storage configured ([storage])".into(),
        ));
    };
    // Valid for the configured time or until the archive's deletion, whichever comes first.
    let wanted = Duration::from_secs(config.url_expiry_seconds.min(left as u64).max(1));
    let (url, lifetime) = objects
        .download_link(key, wanted)
        .await
        .map_err(ApiError::internal)?;
    let expires_at = Utc::now() + chrono::Duration::from_std(lifetime).unwrap_or_default();
    let mut response = StatusCode::FOUND.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::LOCATION,
        HeaderValue::from_str(url.as_str()).map_err(ApiError::internal)?,
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    if let Ok(v) = HeaderValue::from_str(&expires_at.to_rfc3339()) {
        headers.insert("x-link-expires-at", v);
    }
    Ok(response)
}

/// `GET /api/v1/exportlogs/{export_id}/manifest`: the archive's signed manifest.
#[utoipa::path(
    get,
    path = "/api/v1/exportlogs/{export_id}/manifest",
    tag = "export status",
    operation_id = "getExportManifest",
    params(ExportPath),
    responses(
        (status = 200, description = "the signed manifest (verify with `logexport verify`)", body = crate::archive::Manifest),
        (status = 401, description = "no or unknown credential", body = ErrorBody),
        (status = 404, description = "no such export visible to the caller", body = ErrorBody),
        (status = 409, description = "the export has no manifest (not succeeded)", body = ErrorBody),
        (status = 503, description = "Quay (beside Quay) could not be asked who the caller is", body = ErrorBody),
    )
)]
pub async fn manifest(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let row = visible_row(&state, &caller, &id, Access::Read).await?;
    let state_now = row.state();
    row.manifest.map(Json).ok_or_else(|| {
        ApiError::Conflict(format!(
            "export {} has no manifest: it is {}",
            row.id,
            state_now.as_str()
        ))
    })
}
