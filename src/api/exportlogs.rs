//! The three Quay `exportlogs` endpoints: validate, authorize, enqueue.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::HeaderMap;
use serde::Deserialize;

use super::auth::{check_not_forged, checked_repository};
use super::schemas::{
    CallbackUrlOrNone, DayOrInstant, EmailOrNone, ErrorBody, ExportQueued, FilterParams,
    IdempotencyKey, OrgPath, PerformerName, RangeParams, RepoPath, TimeZoneName,
};
use super::{ApiError, AppState};
use crate::access::{Access, Caller, Resource};
use crate::domain::{
    CallbackUrl, Compression, DateRange, EmailAddress, ExportFormat, ExportScope, LogFilter,
    Namespace, RepositoryName,
};
use crate::queue::{NewExport, storage};

/// The JSON body: Quay's callback fields plus our extensions. Give `callback_email` or
/// `callback_url` (or both); the query's `starttime`, `endtime`, `timezone`, `performer` and
/// `kind` win over the body's. Unknown fields are refused (400 naming the field), as for
/// schedules: a misspelt `"fromat"` must not silently give the default format. Quay's clients
/// (its React UI's `UseUsageLogs.ts`, the Angular `logs-view.js`) send only the two callbacks.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExportBody {
    /// Where to POST the result (http or https; internal addresses are refused unless allowed
    /// by `callback.allowed_hosts`).
    #[schema(value_type = Option<CallbackUrlOrNone>)]
    callback_url: Option<String>,
    /// Who to e-mail the link to.
    #[schema(value_type = Option<EmailOrNone>, example = "ops@example.com")]
    callback_email: Option<String>,
    /// First day: `MM/DD/YYYY`, `YYYY-MM-DD` or RFC 3339.
    #[schema(value_type = Option<DayOrInstant>, example = "01/01/2024")]
    starttime: Option<String>,
    /// Last day (included), same forms.
    #[schema(value_type = Option<DayOrInstant>, example = "01/02/2024")]
    endtime: Option<String>,
    /// IANA time zone the days are in; default UTC.
    #[schema(value_type = Option<TimeZoneName>)]
    timezone: Option<String>,
    /// `json` (Quay's), `ndjson` or `csv`.
    #[schema(value_type = Option<ExportFormat>, example = "ndjson")]
    format: Option<String>,
    /// `none`, `gzip` or `zstd`.
    #[schema(value_type = Option<Compression>, example = "gzip")]
    compression: Option<String>,
    /// Only this performer's events.
    #[schema(value_type = Option<PerformerName>)]
    performer: Option<String>,
    /// Only these kinds.
    kind: Option<OneOrMany>,
}

/// `POST /api/v1/user/exportlogs`
#[utoipa::path(
    post,
    path = "/api/v1/user/exportlogs",
    tag = "exports",
    operation_id = "exportUserLogs",
    summary = "Export the caller's own logs (Quay's)",
    params(RangeParams, FilterParams, IdempotencyKey),
    request_body(content = Option<ExportBody>, description = "Quay's body; may be empty when everything is in the query", content_type = "application/json"),
    responses(
        (status = 200, description = "queued (or the export an earlier request with the same Idempotency-Key queued)", body = ExportQueued),
        (status = 400, description = "invalid date range, filter, callback or body; nothing is queued", body = ErrorBody),
        (status = 401, description = "no or unknown credential", body = ErrorBody),
        (status = 403, description = "not an administrator of the namespace or repository, or a forged cookie request", body = ErrorBody),
        (status = 503, description = "Quay (beside Quay) could not be asked who the caller is", body = ErrorBody),
    )
)]
pub async fn user(
    State(state): State<AppState>,
    caller: Caller,
    ip: ClientIp,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<ExportQueued>, ApiError> {
    check_not_forged(&caller, &state, &headers)?;
    let target = user_target(&state, &caller, Access::Export).await?;
    create(state, caller, ip, target, query, headers, body).await
}

/// `POST /api/v1/organization/{orgname}/exportlogs`
#[utoipa::path(
    post,
    path = "/api/v1/organization/{orgname}/exportlogs",
    tag = "exports",
    operation_id = "exportOrgLogs",
    summary = "Export an organization's logs (Quay's)",
    params(OrgPath, RangeParams, FilterParams, IdempotencyKey),
    request_body(content = Option<ExportBody>, description = "Quay's body; may be empty when everything is in the query", content_type = "application/json"),
    responses(
        (status = 200, description = "queued (or the export an earlier request with the same Idempotency-Key queued)", body = ExportQueued),
        (status = 400, description = "invalid date range, filter, callback or body; nothing is queued", body = ErrorBody),
        (status = 401, description = "no or unknown credential", body = ErrorBody),
        (status = 403, description = "not an administrator of the namespace or repository, or a forged cookie request", body = ErrorBody),
        (status = 503, description = "Quay (beside Quay) could not be asked who the caller is", body = ErrorBody),
    )
)]
pub async fn organization(
    State(state): State<AppState>,
    caller: Caller,
    ip: ClientIp,
    Path(orgname): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<ExportQueued>, ApiError> {
    check_not_forged(&caller, &state, &headers)?;
    let target = organization_target(&state, &caller, &orgname, Access::Export).await?;
    create(state, caller, ip, target, query, headers, body).await
}

/// `POST /api/v1/repository/{namespace}/{repository}/exportlogs`
#[utoipa::path(
    post,
    path = "/api/v1/repository/{namespace}/{repository}/exportlogs",
    tag = "exports",
    operation_id = "exportRepoLogs",
    summary = "Export a repository's logs (Quay's)",
    params(RepoPath, RangeParams, FilterParams, IdempotencyKey),
    request_body(content = Option<ExportBody>, description = "Quay's body; may be empty when everything is in the query", content_type = "application/json"),
    responses(
        (status = 200, description = "queued (or the export an earlier request with the same Idempotency-Key queued)", body = ExportQueued),
        (status = 400, description = "invalid date range, filter, callback or body; nothing is queued", body = ErrorBody),
        (status = 401, description = "no or unknown credential", body = ErrorBody),
        (status = 403, description = "not an administrator of the namespace or repository, or a forged cookie request", body = ErrorBody),
        (status = 503, description = "Quay (beside Quay) could not be asked who the caller is", body = ErrorBody),
    )
)]
pub async fn repository(
    State(state): State<AppState>,
    caller: Caller,
    ip: ClientIp,
    Path((namespace, repository)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<ExportQueued>, ApiError> {
    check_not_forged(&caller, &state, &headers)?;
    let target =
        repository_target(&state, &caller, &namespace, &repository, Access::Export).await?;
    create(state, caller, ip, target, query, headers, body).await
}

/// The caller's own namespace, if the caller may `access` it (Quay's `require_user_admin()`
/// beside Quay; anyone's own in token mode).
pub(super) async fn user_target(
    state: &AppState,
    caller: &Caller,
    access: Access,
) -> Result<Target, ApiError> {
    caller
        .authorize(state.quay.as_deref(), Resource::User, access)
        .await?;
    let namespace = Namespace::parse(&caller.username).map_err(|e| {
        ApiError::InvalidRequest(format!("your user name is not a valid namespace: {e}"))
    })?;
    Ok(Target {
        scope: ExportScope::User,
        namespace,
        repository: None,
    })
}

/// An organization the caller may `access` (its admins, or any for a superuser).
pub(super) async fn organization_target(
    state: &AppState,
    caller: &Caller,
    orgname: &str,
    access: Access,
) -> Result<Target, ApiError> {
    let namespace = parse_namespace(orgname)?;
    caller
        .authorize(
            state.quay.as_deref(),
            Resource::Organization(&namespace),
            access,
        )
        .await?;
    Ok(Target {
        scope: ExportScope::Organization,
        namespace,
        repository: None,
    })
}

/// A repository the caller may `access`, directly or through its namespace.
pub(super) async fn repository_target(
    state: &AppState,
    caller: &Caller,
    namespace: &str,
    repository: &str,
    access: Access,
) -> Result<Target, ApiError> {
    let (namespace, repository) =
        checked_repository(caller, state, namespace, repository, access).await?;
    Ok(Target {
        scope: ExportScope::Repository,
        namespace,
        repository: Some(repository),
    })
}

/// Parses a namespace from a path segment.
pub fn parse_namespace(value: &str) -> Result<Namespace, ApiError> {
    Namespace::parse(value).map_err(|e| ApiError::InvalidRequest(e.to_string()))
}

/// Whose logs a request exports, once the caller's right to them was checked.
pub(super) struct Target {
    pub(super) scope: ExportScope,
    pub(super) namespace: Namespace,
    pub(super) repository: Option<RepositoryName>,
}

/// Reads a request body up to the configured limit.
pub async fn read_body(body: Body, limit: usize) -> Result<bytes::Bytes, ApiError> {
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        ApiError::InvalidRequest(format!(
            "request body is larger than {limit} bytes (server.max_body_bytes)"
        ))
    })
}

/// Query parameters as (name, value) pairs; the first occurrence of a name wins.
pub fn query_param(query: &Option<String>, name: &str) -> Option<String> {
    let query = query.as_deref()?;
    url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// Every value of a repeatable query parameter, in order.
pub fn all_params(query: &Option<String>, name: &str) -> Vec<String> {
    let Some(q) = query.as_deref() else {
        return Vec::new();
    };
    url::form_urlencoded::parse(q.as_bytes())
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .collect()
}

/// One value or a list of them, as a JSON body may give a repeatable field.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub(super) enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn values(&self) -> Vec<String> {
        match self {
            OneOrMany::One(v) => vec![v.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

/// The export's filter: `performer` and `kind` (repeatable) from the query, else the body,
/// validated as the logs listing validates them.
pub fn export_filter(query: &Option<String>, body: &ExportBody) -> Result<LogFilter, ApiError> {
    parse_filter(query, body.performer.as_deref(), body.kind.as_ref())
}

/// A filter from the query's `performer` and `kind`, else the body's.
pub(super) fn parse_filter(
    query: &Option<String>,
    performer: Option<&str>,
    kind: Option<&OneOrMany>,
) -> Result<LogFilter, ApiError> {
    let performer = query_param(query, "performer").or_else(|| performer.map(str::to_owned));
    let mut kinds = all_params(query, "kind");
    if kinds.is_empty() {
        kinds = kind.map(OneOrMany::values).unwrap_or_default();
    }
    LogFilter::parse(performer.as_deref(), kinds.iter().map(String::as_str))
        .map_err(|e| ApiError::InvalidRequest(e.to_string()))
}

/// Parses a JSON body; an empty one is the default value.
pub(super) fn parse_json<T: serde::de::DeserializeOwned + Default>(
    bytes: &[u8],
) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::InvalidRequest(format!("malformed JSON body: {e}")))
}

/// A `callback_email` (empty: none).
pub(super) fn parse_email(value: Option<&str>) -> Result<Option<EmailAddress>, ApiError> {
    value
        .filter(|s| !s.is_empty())
        .map(|e| EmailAddress::parse(e).map_err(|e| ApiError::InvalidRequest(e.to_string())))
        .transpose()
}

/// A `callback_url` (empty: none), its host resolved and refused when internal.
pub(super) async fn parse_callback_url(
    state: &AppState,
    value: Option<&str>,
) -> Result<Option<CallbackUrl>, ApiError> {
    match value.filter(|s| !s.is_empty()) {
        Some(u) => Ok(Some(
            crate::notify::ssrf::parse_and_resolve(u, &state.allow)
                .await
                .map_err(|e| ApiError::InvalidRequest(e.to_string()))?,
        )),
        None => Ok(None),
    }
}

/// Refuses a request that would tell nobody about its export.
pub(super) fn require_callback(has_email: bool, has_url: bool) -> Result<(), ApiError> {
    if has_email || has_url {
        return Ok(());
    }
    Err(ApiError::InvalidRequest(
        "give callback_email or callback_url (or both): otherwise nobody learns where the export is".into(),
    ))
}

/// A `format`, else `default`.
pub(super) fn parse_format(value: Option<&str>, default: &str) -> Result<ExportFormat, ApiError> {
    value
        .unwrap_or(default)
        .parse()
        .map_err(|e: crate::domain::ParseEnumError| ApiError::InvalidRequest(e.to_string()))
}

/// A `compression`, else `default`.
pub(super) fn parse_compression(
    value: Option<&str>,
    default: &str,
) -> Result<Compression, ApiError> {
    value
        .unwrap_or(default)
        .parse()
        .map_err(|e: crate::domain::ParseEnumError| ApiError::InvalidRequest(e.to_string()))
}

/// The caller's address, for the audit trail (see [`crate::audit::client_ip`]).
pub struct ClientIp(Option<String>);

impl axum::extract::FromRequestParts<AppState> for ClientIp {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip());
        let forwarded = parts
            .headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok());
        Ok(Self(crate::audit::client_ip(
            peer,
            forwarded,
            &state.trusted_proxies,
        )))
    }
}

/// Validates and enqueues; records Quay's audit event either way, the success one in the job's
/// own transaction.
async fn create(
    state: AppState,
    caller: Caller,
    ip: ClientIp,
    target: Target,
    query: Option<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<ExportQueued>, ApiError> {
    let bytes = read_body(body, state.config.server.max_body_bytes).await?;
    let parsed: Result<ExportBody, ApiError> = parse_json(&bytes);
    let body = parsed.as_ref().ok();
    let audit = crate::audit::ExportRequest {
        account: target.namespace.as_str(),
        performer: &caller.username,
        repository: target.repository.as_ref().map(RepositoryName::as_str),
        ip: ip.0.as_deref(),
        callback_url: body.and_then(|b| b.callback_url.as_deref()),
        callback_email: body.and_then(|b| b.callback_email.as_deref()),
    };
    let export = match &parsed {
        Ok(body) => new_export(&state, &caller, &target, &query, &headers, body).await,
        Err(e) => Err(ApiError::InvalidRequest(e.to_string())),
    };
    let export = match export {
        Ok(export) => export,
        Err(error) => {
            let event = crate::audit::AuditEvent::export_refused(audit, &error.to_string());
            crate::audit::record(&mut *state.pool.acquire().await?, &state.config, &event).await?;
            return Err(error);
        }
    };
    let mut tx = state.pool.begin().await?;
    let (id, new) = storage::enqueue_in(&mut tx, &export).await?;
    if new {
        let event = crate::audit::AuditEvent::export_queued(audit, &id.to_string());
        crate::audit::record(&mut tx, &state.config, &event).await?;
    }
    tx.commit().await?;
    tracing::info!(export_id = %id, namespace = %export.namespace, scope = %export.scope, "export queued");
    Ok(Json(ExportQueued { export_id: id.0 }))
}

/// Validates the request into an export; every refusal here is a 400.
async fn new_export(
    state: &AppState,
    caller: &Caller,
    target: &Target,
    query: &Option<String>,
    headers: &HeaderMap,
    body: &ExportBody,
) -> Result<NewExport, ApiError> {
    let config = &state.config;

    // Query parameters (as Quay's UI sends them) win over body fields (as its docs show them).
    let pick = |name: &str, from_body: &Option<String>| {
        query_param(query, name).or_else(|| from_body.clone())
    };
    let range = DateRange::from_request(
        pick("starttime", &body.starttime).as_deref(),
        pick("endtime", &body.endtime).as_deref(),
        pick("timezone", &body.timezone).as_deref(),
        chrono::Utc::now(),
        config.export.max_range_days,
    )
    .map_err(|e| ApiError::InvalidRequest(e.to_string()))?;

    let callback_email = parse_email(body.callback_email.as_deref())?;
    let callback_url = parse_callback_url(state, body.callback_url.as_deref()).await?;
    require_callback(callback_email.is_some(), callback_url.is_some())?;
    let filter = export_filter(query, body)?;
    let format = parse_format(body.format.as_deref(), &config.export.default_format)?;
    let compression = parse_compression(
        body.compression.as_deref(),
        &config.export.default_compression,
    )?;
    let idempotency_key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => {
            let key = v
                .to_str()
                .ok()
                .filter(|k| {
                    !k.is_empty() && k.len() <= 255 && k.chars().all(|c| c.is_ascii_graphic())
                })
                .ok_or_else(|| {
                    ApiError::InvalidRequest(
                        "Idempotency-Key must be 1 to 255 printable ASCII characters".into(),
                    )
                })?;
            Some(key.to_owned())
        }
    };

    Ok(NewExport {
        scope: target.scope,
        namespace: target.namespace.clone(),
        repository: target.repository.clone(),
        requested_by: caller.username.clone(),
        range,
        format,
        compression,
        callback_url,
        callback_email,
        idempotency_key,
        max_attempts: config.worker.max_attempts,
        performer: filter.performer,
        kinds: filter.kinds,
    })
}
