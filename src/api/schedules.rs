//! Scheduled exports (beyond Quay): create, list, show, pause/resume/redirect, delete.
//!
//! Creating a schedule takes the same permissions and validates its fields exactly as
//! `exportlogs` does (same errors; nothing is stored on a refusal).

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::auth::check_not_forged;
use super::exportlogs::{
    OneOrMany, Target, organization_target, parse_callback_url, parse_compression, parse_email,
    parse_filter, parse_format, parse_json, read_body, repository_target, require_callback,
    user_target,
};
use super::schemas::{
    CallbackUrlOrNone, EmailOrNone, ErrorBody, FilterParams, OrgPath, PerformerName, RepoPath,
    Schedule, ScheduleCreated, ScheduleDeleted, ScheduleList, SchedulePath, TimeZoneName,
};
use super::{ApiError, AppState};
use crate::access::{Access, Caller};
use crate::domain::{Compression, ExportFormat, parse_timezone};
use crate::schedule::storage::{self, Changes};
use crate::schedule::{Grid, MAX_DELAY_MINUTES, NewSchedule, Period, ScheduleRow};

/// How many of a schedule's exports its document lists.
const RECENT_EXPORTS: i64 = 10;

/// The body of `POST …/exportschedules`.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleBody {
    /// `daily`, `weekly` or `monthly`.
    #[schema(example = "daily")]
    period: Option<String>,
    /// IANA time zone the periods are in; default UTC.
    #[schema(value_type = Option<TimeZoneName>, example = "Europe/Berlin")]
    timezone: Option<String>,
    start_date: Option<String>,
    delay_minutes: Option<u32>,
    #[schema(value_type = Option<ExportFormat>)]
    format: Option<String>,
    #[schema(value_type = Option<Compression>)]
    compression: Option<String>,
    #[schema(value_type = Option<PerformerName>)]
    performer: Option<String>,
    kind: Option<OneOrMany>,
    #[schema(value_type = Option<EmailOrNone>, example = "ops@example.com")]
    callback_email: Option<String>,
    #[schema(value_type = Option<CallbackUrlOrNone>)]
    callback_url: Option<String>,
}

/// The body of `PATCH /exportschedules/{id}`: a field left out stays; an empty callback removes
/// that channel.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleChanges {
    paused: Option<bool>,
    #[schema(value_type = Option<EmailOrNone>)]
    callback_email: Option<String>,
    #[schema(value_type = Option<CallbackUrlOrNone>)]
    callback_url: Option<String>,
    #[schema(value_type = Option<ExportFormat>)]
    format: Option<String>,
    #[schema(value_type = Option<Compression>)]
    compression: Option<String>,
}

/// `POST /api/v1/user/exportschedules`
#[utoipa::path(
    post,
    path = "/api/v1/user/exportschedules",
    tag = "schedules",
    operation_id = "createUserSchedule",
    summary = "Schedule exports of the caller's own logs",
    params(FilterParams),
    request_body(content = ScheduleBody, content_type = "application/json"),
    responses(
        (status = 200, description = "created", body = ScheduleCreated),
        (status = 400, description = "invalid period, time zone, start date, delay, filter, callback or body; nothing is stored", body = ErrorBody),
        (status = 401, description = "no or unknown credential", body = ErrorBody),
        (status = 403, description = "a request with the Quay session cookie but without X-Requested-With or from an origin not allowed; beside Quay without auth.quay_service_token", body = ErrorBody),
        (status = 503, description = "Quay (beside Quay) could not be asked who the caller is", body = ErrorBody),
    )
)]
pub async fn create_user(
    State(state): State<AppState>,
    caller: Caller,
    headers: axum::http::HeaderMap,
    RawQuery(query): RawQuery,
    body: Body,
) -> Result<Json<ScheduleCreated>, ApiError> {
    check_not_forged(&caller, &state, &headers)?;
    let target = user_target(&state, &caller, Access::Export).await?;
    create(state, caller, target, query, body).await
}

/// `POST /api/v1/organization/{orgname}/exportschedules`
#[utoipa::path(
    post,
    path = "/api/v1/organization/{orgname}/exportschedules",
    tag = "schedules",
    operation_id = "createOrgSchedule",
    summary = "Schedule exports of an organization's logs",
    params(OrgPath, FilterParams),
    request_body(content = ScheduleBody, content_type = "application/json"),
    responses(
        (status = 200, description = "created", body = ScheduleCreated),
        (status = 400, description = "invalid period, time zone, start date, delay, filter, callback or body; nothing is stored", body = ErrorBody),
        (status = 401, description = "no or unknown credential", body = ErrorBody),
        (status = 403, description = "a request with the Quay session cookie but without X-Requested-With or from an origin not allowed; not an administrator; beside Quay without auth.quay_service_token", body = ErrorBody),
        (status = 503, description = "Quay (beside Quay) could not be asked who the caller is", body = ErrorBody),
    )
)]
pub async fn create_organization(
    State(state): State<AppState>,
    caller: Caller,
    headers: axum::http::HeaderMap,
    Path(orgname): Path<String>,
    RawQuery(query): RawQuery,
    body: Body,
) -> Result<Json<ScheduleCreated>, ApiError> {
    check_not_forged(&caller, &state, &headers)?;
    let target = organization_target(&state, &caller, &orgname, Access::Export).await?;
    create(state, caller, target, query, body).await
}

/// `POST /api/v1/repository/{namespace}/{repository}/exportschedules`
#[utoipa::path(
    post,
    path = "/api/v1/repository/{namespace}/{repository}/exportschedules",
    tag = "schedules",
    operation_id = "createRepoSchedule",
    summary = "Schedule exports of a repository's logs",
    params(RepoPath, FilterParams),
    request_body(content = ScheduleBody, content_type = "application/json"),
    responses(
        (status = 200, description = "created", body = ScheduleCreated),
        (status = 400, description = "invalid period, time zone, start date, delay, filter, callback or body; nothing is stored", body = ErrorBody),
        (status = 401, description = "no or unknown credential", body = ErrorBody),
        (status = 403, description = "a request with the Quay session cookie but without X-Requested-With or from an origin not allowed; not an administrator; beside Quay without auth.quay_service_token", body = ErrorBody),
        (status = 503, description = "Quay (beside Quay) could not be asked who the caller is", body = ErrorBody),
    )
)]
pub async fn create_repository(
    State(state): State<AppState>,
    caller: Caller,
    headers: axum::http::HeaderMap,
    Path((namespace, repository)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    body: Body,
) -> Result<Json<ScheduleCreated>, ApiError> {
    check_not_forged(&caller, &state, &headers)?;
    let target =
        repository_target(&state, &caller, &namespace, &repository, Access::Export).await?;
    create(state, caller, target, query, body).await
}

async fn create(
    state: AppState,
    caller: Caller,
    target: Target,
    query: Option<String>,
    body: Body,
) -> Result<Json<ScheduleCreated>, ApiError> {
    if state.config.auth.mode == crate::config::AuthMode::Quay
        && state.config.auth.quay_service_token.expose().is_empty()
    {
        return Err(ApiError::Forbidden(
            crate::schedule::owner::QUAY_MODE_REFUSAL.into(),
        ));
    }
    if caller.known_username().is_none() {
        return Err(ApiError::Forbidden(
            "a schedule runs on its owner's rights, which Quay is asked about by name: use a \
             credential Quay lets read who it is (the user:read scope)"
                .into(),
        ));
    }
    let config = &state.config;
    let bytes = read_body(body, config.server.max_body_bytes).await?;
    let body: ScheduleBody = parse_json(&bytes)?;

    let period: Period = body
        .period
        .as_deref()
        .ok_or_else(|| {
            ApiError::InvalidRequest("give period: daily, weekly or monthly".to_owned())
        })?
        .parse()
        .map_err(|e: crate::schedule::period::InvalidPeriod| {
            ApiError::InvalidRequest(e.to_string())
        })?;
    if period.max_days() > config.export.max_range_days {
        return Err(ApiError::InvalidRequest(format!(
            "a {period} period covers up to {} days; at most {} are allowed",
            period.max_days(),
            config.export.max_range_days
        )));
    }
    let timezone = parse_timezone(body.timezone.as_deref())
        .map_err(|e| ApiError::InvalidRequest(e.to_string()))?;
    let grid = Grid::new(period, timezone);
    let first_period_start = match body.start_date.as_deref().filter(|s| !s.trim().is_empty()) {
        Some(day) => grid
            .parse_start_date(day)
            .map_err(|e| ApiError::InvalidRequest(e.to_string()))?,
        None => grid.containing(Utc::now()),
    };
    let delay_minutes = body.delay_minutes.unwrap_or(60);
    if delay_minutes > MAX_DELAY_MINUTES {
        return Err(ApiError::InvalidRequest(format!(
            "delay_minutes {delay_minutes} is too long; at most {MAX_DELAY_MINUTES} (a week)"
        )));
    }
    let callback_email = parse_email(body.callback_email.as_deref())?;
    let callback_url = parse_callback_url(&state, body.callback_url.as_deref()).await?;
    require_callback(callback_email.is_some(), callback_url.is_some())?;
    let filter = parse_filter(&query, body.performer.as_deref(), body.kind.as_ref())?;
    let format = parse_format(body.format.as_deref(), &config.export.default_format)?;
    let compression = parse_compression(
        body.compression.as_deref(),
        &config.export.default_compression,
    )?;

    let schedule = NewSchedule {
        owner: caller.username,
        scope: target.scope,
        namespace: target.namespace,
        repository: target.repository,
        grid,
        first_period_start,
        delay_minutes,
        format,
        compression,
        performer: filter.performer,
        kinds: filter.kinds,
        callback_url,
        callback_email,
    };
    let id = Uuid::new_v4();
    storage::insert(&state.pool, id, &schedule).await?;
    tracing::info!(schedule_id = %id, namespace = %schedule.namespace, period = %period, "export schedule created");
    Ok(Json(ScheduleCreated {
        schedule_id: id,
        first_period_start,
        next_run_at: schedule.first_run_at(),
    }))
}

/// `GET /api/v1/user/exportschedules`
#[utoipa::path(
    get,
    path = "/api/v1/user/exportschedules",
    tag = "schedules",
    operation_id = "listUserSchedules",
    summary = "The caller's own schedules",
    params(),
    responses(
        (status = 200, description = "the schedules", body = ScheduleList),
        (status = 400, description = "the caller's name is not a valid namespace", body = ErrorBody),
        (status = 401, description = "no or unknown credential", body = ErrorBody),
        (status = 503, description = "Quay (beside Quay) could not be asked who the caller is", body = ErrorBody),
    )
)]
pub async fn list_user(
    State(state): State<AppState>,
    caller: Caller,
) -> Result<Json<serde_json::Value>, ApiError> {
    let target = user_target(&state, &caller, Access::Read).await?;
    list(state, target).await
}

/// `GET /api/v1/organization/{orgname}/exportschedules`: the organization's schedules, its
/// repositories' included.
#[utoipa::path(
    get,
    path = "/api/v1/organization/{orgname}/exportschedules",
    tag = "schedules",
    operation_id = "listOrgSchedules",
    summary = "An organization's schedules, its repositories' included",
    params(OrgPath),
    responses(
        (status = 200, description = "the schedules", body = ScheduleList),
        (status = 400, description = "invalid namespace or repository name", body = ErrorBody),
        (status = 401, description = "no or unknown credential", body = ErrorBody),
        (status = 403, description = "not an administrator", body = ErrorBody),
        (status = 503, description = "Quay (beside Quay) could not be asked who the caller is", body = ErrorBody),
    )
)]
pub async fn list_organization(
    State(state): State<AppState>,
    caller: Caller,
    Path(orgname): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let target = organization_target(&state, &caller, &orgname, Access::Read).await?;
    list(state, target).await
}

/// `GET /api/v1/repository/{namespace}/{repository}/exportschedules`
#[utoipa::path(
    get,
    path = "/api/v1/repository/{namespace}/{repository}/exportschedules",
    tag = "schedules",
    operation_id = "listRepoSchedules",
    summary = "A repository's schedules",
    params(RepoPath),
    responses(
        (status = 200, description = "the schedules", body = ScheduleList),
        (status = 400, description = "invalid namespace or repository name", body = ErrorBody),
        (status = 401, description = "no or unknown credential", body = ErrorBody),
        (status = 403, description = "not an administrator", body = ErrorBody),
        (status = 503, description = "Quay (beside Quay) could not be asked who the caller is", body = ErrorBody),
    )
)]
pub async fn list_repository(
    State(state): State<AppState>,
    caller: Caller,
    Path((namespace, repository)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let target = repository_target(&state, &caller, &namespace, &repository, Access::Read).await?;
    list(state, target).await
}

async fn list(state: AppState, target: Target) -> Result<Json<serde_json::Value>, ApiError> {
    let rows = storage::list(
        &state.pool,
        target.namespace.as_str(),
        target.repository.as_ref().map(|r| r.as_str()),
    )
    .await?;
    let mut schedules = Vec::with_capacity(rows.len());
    for row in &rows {
        schedules.push(schedule_json(&state, row, RECENT_EXPORTS).await?);
    }
    Ok(Json(json!({ "schedules": schedules })))
}

/// The schedule if `caller` may see it: its owner, the namespace's admins and superusers. Anyone
/// else gets the same 404 as for an id that does not exist.
///
/// Beside Quay, the rule of the Quay endpoint the schedule's exports stand for: its logs to read
/// the schedule, its exportlogs to change or delete it.
async fn visible_schedule(
    state: &AppState,
    caller: &Caller,
    id: &str,
    access: Access,
) -> Result<ScheduleRow, ApiError> {
    let not_found = || ApiError::NotFound(format!("no export schedule {id:?} visible to you"));
    let id: Uuid = id.parse().map_err(|_| not_found())?;
    let row = storage::get(&state.pool, id).await?.ok_or_else(not_found)?;
    let visible = caller
        .may_access_stored(
            state.quay.as_deref(),
            &row.scope,
            &row.namespace,
            row.repository.as_deref(),
            &row.owner,
            access,
        )
        .await?;
    if !visible {
        return Err(not_found());
    }
    Ok(row)
}

/// `GET /api/v1/exportschedules/{schedule_id}`
#[utoipa::path(
    get,
    path = "/api/v1/exportschedules/{schedule_id}",
    tag = "schedules",
    operation_id = "getSchedule",
    params(SchedulePath),
    responses(
        (status = 200, description = "the schedule", body = Schedule),
        (status = 401, description = "no or unknown credential", body = ErrorBody),
        (status = 404, description = "no such schedule visible to the caller (its owner, the namespace's admins, superusers)", body = ErrorBody),
        (status = 503, description = "Quay (beside Quay) could not be asked who the caller is", body = ErrorBody),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let row = visible_schedule(&state, &caller, &id, Access::Read).await?;
    Ok(Json(schedule_json(&state, &row, RECENT_EXPORTS).await?))
}

/// `PATCH /api/v1/exportschedules/{schedule_id}`: pause, resume, change the delivery.
#[utoipa::path(
    patch,
    path = "/api/v1/exportschedules/{schedule_id}",
    tag = "schedules",
    operation_id = "updateSchedule",
    params(SchedulePath),
    request_body(content = ScheduleChanges, content_type = "application/json"),
    responses(
        (status = 200, description = "the changed schedule", body = Schedule),
        (status = 400, description = "invalid callback, format, compression or body, or no delivery left", body = ErrorBody),
        (status = 401, description = "no or unknown credential", body = ErrorBody),
        (status = 403, description = "a request with the Quay session cookie but without X-Requested-With or from an origin not allowed", body = ErrorBody),
        (status = 404, description = "no such schedule visible to the caller (its owner, the namespace's admins, superusers)", body = ErrorBody),
        (status = 503, description = "Quay (beside Quay) could not be asked who the caller is", body = ErrorBody),
    )
)]
pub async fn update(
    State(state): State<AppState>,
    caller: Caller,
    headers: axum::http::HeaderMap,
    Path(id): Path<String>,
    body: Body,
) -> Result<Json<serde_json::Value>, ApiError> {
    check_not_forged(&caller, &state, &headers)?;
    let row = visible_schedule(&state, &caller, &id, Access::Export).await?;
    let config = &state.config;
    let bytes = read_body(body, config.server.max_body_bytes).await?;
    let body: ScheduleChanges = parse_json(&bytes)?;

    let mut changes = Changes {
        paused: body.paused,
        ..Changes::default()
    };
    if let Some(email) = body.callback_email.as_deref() {
        changes.callback_email = Some(parse_email(Some(email))?.map(|e| e.to_string()));
    }
    if let Some(url) = body.callback_url.as_deref() {
        let url = parse_callback_url(&state, Some(url)).await?;
        changes.callback_url = Some(url.map(|u| u.to_string()));
    }
    let has_email = match &changes.callback_email {
        Some(email) => email.is_some(),
        None => row.callback_email.is_some(),
    };
    let has_url = match &changes.callback_url {
        Some(url) => url.is_some(),
        None => row.callback_url.is_some(),
    };
    require_callback(has_email, has_url)?;
    if let Some(format) = body.format.as_deref() {
        changes.format = Some(parse_format(Some(format), &config.export.default_format)?.as_str());
    }
    if let Some(compression) = body.compression.as_deref() {
        changes.compression = Some(
            parse_compression(Some(compression), &config.export.default_compression)?.as_str(),
        );
    }
    let row = storage::update(&state.pool, row.id, &changes)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no export schedule {id:?}")))?;
    tracing::info!(schedule_id = %row.id, state = %row.state, "export schedule changed");
    Ok(Json(schedule_json(&state, &row, RECENT_EXPORTS).await?))
}

/// `DELETE /api/v1/exportschedules/{schedule_id}`: the schedule goes, its exports stay.
#[utoipa::path(
    delete,
    path = "/api/v1/exportschedules/{schedule_id}",
    tag = "schedules",
    operation_id = "deleteSchedule",
    params(SchedulePath),
    responses(
        (status = 200, description = "deleted; its exports stay", body = ScheduleDeleted),
        (status = 401, description = "no or unknown credential", body = ErrorBody),
        (status = 403, description = "a request with the Quay session cookie but without X-Requested-With or from an origin not allowed", body = ErrorBody),
        (status = 404, description = "no such schedule visible to the caller (its owner, the namespace's admins, superusers)", body = ErrorBody),
        (status = 503, description = "Quay (beside Quay) could not be asked who the caller is", body = ErrorBody),
    )
)]
pub async fn delete(
    State(state): State<AppState>,
    caller: Caller,
    headers: axum::http::HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<ScheduleDeleted>, ApiError> {
    check_not_forged(&caller, &state, &headers)?;
    let row = visible_schedule(&state, &caller, &id, Access::Export).await?;
    if !storage::delete(&state.pool, row.id).await? {
        return Err(ApiError::NotFound(format!("no export schedule {id:?}")));
    }
    tracing::info!(schedule_id = %row.id, "export schedule deleted");
    Ok(Json(ScheduleDeleted {
        schedule_id: row.id,
        message: "deleted; the exports it made stay",
    }))
}

/// The schedule's status document, with up to `recent` of its exports.
async fn schedule_json(
    state: &AppState,
    row: &ScheduleRow,
    recent: i64,
) -> Result<serde_json::Value, ApiError> {
    let now = Utc::now();
    let grid = row.grid().map_err(ApiError::internal)?;
    let last_run = storage::last_run(&state.pool, row.id).await?;
    let exports = storage::recent_exports(&state.pool, row.id, recent).await?;
    let local_day = |t: DateTime<Utc>| {
        t.with_timezone(&grid.timezone)
            .date_naive()
            .format("%Y-%m-%d")
            .to_string()
    };
    Ok(json!({
        "schedule_id": row.id,
        "owner": row.owner,
        "scope": row.scope,
        "namespace": row.namespace,
        "repository": row.repository,
        "period": row.period,
        "timezone": row.timezone,
        "start_date": local_day(row.first_period_start),
        "first_period_start": row.first_period_start,
        "delay_minutes": row.delay_minutes,
        "format": row.format,
        "compression": row.compression,
        "filters": {
            "performer": row.performer,
            "kind": row.kinds,
        },
        "callback_email": row.callback_email,
        "callback_url": row.callback_url,
        "state": row.state,
        "paused_reason": row.paused_reason,
        "blocked_reason": row.blocked_reason,
        "blocked_since": row.blocked_since,
        "next_period": {
            "start": row.next_period_start,
            "end": grid.next(row.next_period_start),
            "day": local_day(row.next_period_start),
        },
        "next_period_start": row.next_period_start,
        "next_run_at": row.is_active().then_some(row.next_run_at),
        "lag_seconds": row.lag_seconds(now),
        "last_run_at": row.last_run_at,
        "last_run": last_run.map(|r| json!({
            "period_start": r.period_start,
            "period_end": r.period_end,
            "export_id": r.export_id,
            "state": r.export_state,
            "enqueued_at": r.created_at,
        })),
        "skipped_periods": {
            "count": row.skipped_periods,
            "oldest": row.oldest_skipped_period,
            "newest": row.newest_skipped_period,
        },
        "exports": exports.iter().map(|e| json!({
            "export_id": e.export_id,
            "period_start": e.period_start,
            "period_end": e.period_end,
            "state": e.state,
            "last_error": e.last_error,
            "created_at": e.created_at,
        })).collect::<Vec<_>>(),
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }))
}
