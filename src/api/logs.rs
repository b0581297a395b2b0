//! The eight Quay listing endpoints: parameters, permissions, and Quay's response shapes.

use axum::Json;
use axum::Router;
use axum::extract::{Path, RawQuery, State};
use axum::routing::get;
use serde_json::{Value, json};

use super::auth::checked_repository;
use super::schemas::{
    AggregateFilterParams, AggregatePage, ErrorBody, FilterParams, LogsPage, OrgPath, PageParams,
    RangeParams, RepoPath,
};
use super::{ApiError, AppState, all_params, parse_namespace, query_param};
use crate::access::{Access, Caller, Resource};
use crate::domain::{DateRange, LogFilter, Namespace, RepositoryName, quay_datetime};
use crate::logs::{LogQuery, LogsError};

/// The listing routes, to be nested under `/api/v1`.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/user/logs", get(user_logs))
        .route("/user/aggregatelogs", get(user_aggregate))
        .route("/organization/{orgname}/logs", get(org_logs))
        .route("/organization/{orgname}/aggregatelogs", get(org_aggregate))
        .route("/repository/{namespace}/{repository}/logs", get(repo_logs))
        .route(
            "/repository/{namespace}/{repository}/aggregatelogs",
            get(repo_aggregate),
        )
        .route("/superuser/logs", get(superuser_logs))
        .route("/superuser/aggregatelogs", get(superuser_aggregate))
}

/// Whose logs a request lists.
struct Target {
    superuser: bool,
    namespace: Option<Namespace>,
    repository: Option<RepositoryName>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Listing {
    Logs,
    Aggregate,
}

async fn user_target(state: &AppState, caller: &Caller) -> Result<Target, ApiError> {
    caller
        .authorize(state.quay.as_deref(), Resource::User, Access::Read)
        .await?;
    let namespace = Namespace::parse(&caller.username).map_err(|e| {
        ApiError::InvalidRequest(format!("your user name is not a valid namespace: {e}"))
    })?;
    Ok(Target {
        superuser: false,
        namespace: Some(namespace),
        repository: None,
    })
}

async fn org_target(state: &AppState, caller: &Caller, orgname: &str) -> Result<Target, ApiError> {
    let namespace = parse_namespace(orgname)?;
    caller
        .authorize(
            state.quay.as_deref(),
            Resource::Organization(&namespace),
            Access::Read,
        )
        .await?;
    Ok(Target {
        superuser: false,
        namespace: Some(namespace),
        repository: None,
    })
}

async fn repo_target(
    state: &AppState,
    caller: &Caller,
    namespace: &str,
    repository: &str,
) -> Result<Target, ApiError> {
    let (namespace, repository) =
        checked_repository(caller, state, namespace, repository, Access::Read).await?;
    Ok(Target {
        superuser: false,
        namespace: Some(namespace),
        repository: Some(repository),
    })
}

async fn superuser_target(state: &AppState, caller: &Caller) -> Result<Target, ApiError> {
    caller
        .authorize(state.quay.as_deref(), Resource::Registry, Access::Read)
        .await?;
    Ok(Target {
        superuser: true,
        namespace: None,
        repository: None,
    })
}

/// Parses the common parameters into a query.
fn parse_query(
    state: &AppState,
    target: Target,
    query: &Option<String>,
    listing: Listing,
) -> Result<LogQuery, ApiError> {
    let max_days = match listing {
        Listing::Logs => state.config.export.max_range_days,
        Listing::Aggregate => state.config.logs.max_aggregate_days,
    };
    let range = DateRange::from_request(
        query_param(query, "starttime").as_deref(),
        query_param(query, "endtime").as_deref(),
        query_param(query, "timezone").as_deref(),
        chrono::Utc::now(),
        max_days,
    )
    .map_err(|e| ApiError::InvalidRequest(e.to_string()))?;
    let kinds = match listing {
        Listing::Logs => all_params(query, "kind"),
        Listing::Aggregate => Vec::new(),
    };
    let filter = LogFilter::parse(
        query_param(query, "performer").as_deref(),
        kinds.iter().map(String::as_str),
    )
    .map_err(|e| ApiError::InvalidRequest(e.to_string()))?;
    Ok(LogQuery::new(
        target.superuser,
        target.namespace,
        target.repository,
        filter.performer,
        filter.kinds,
        range,
    ))
}

/// The `search_unavailable` answer, or the 400 for a refused token or filter.
fn failure(e: LogsError, mut body: Value, empty_key: &str) -> Result<Json<Value>, ApiError> {
    match e {
        LogsError::BadToken(t) => Err(ApiError::InvalidRequest(t.to_string())),
        LogsError::BadQuery(q) => Err(ApiError::InvalidRequest(q.to_string())),
        // Our own database, not Splunk, is away: 503 like every other endpoint then.
        LogsError::Unavailable {
            reason: "database",
            message,
        } => Err(ApiError::Unavailable(message)),
        LogsError::Unavailable { message, .. } => {
            body[empty_key] = json!([]);
            body["search_unavailable"] = json!(true);
            body["message"] = json!(message);
            Ok(Json(body))
        }
    }
}

async fn list_logs(
    state: AppState,
    target: Target,
    query: Option<String>,
) -> Result<Json<Value>, ApiError> {
    let q = parse_query(&state, target, &query, Listing::Logs)?;
    let base = json!({
        "start_time": quay_datetime(&q.range.start),
        "end_time": quay_datetime(&q.range.end),
    });
    let Some(service) = state.logs.clone() else {
        return failure(not_configured(), base, "logs");
    };
    let next_page = query_param(&query, "next_page");
    match service.lookup(&q, next_page.as_deref()).await {
        Ok(page) => {
            let logs: Vec<Value> = page
                .logs
                .iter()
                .map(|e| {
                    if q.superuser {
                        serde_json::to_value(e.with_namespace())
                    } else {
                        serde_json::to_value(e)
                    }
                    .unwrap_or(Value::Null)
                })
                .collect();
            let mut body = base;
            body["logs"] = Value::Array(logs);
            if let Some(token) = page.next_page {
                body["next_page"] = json!(token);
            }
            Ok(Json(body))
        }
        Err(e) => failure(e, base, "logs"),
    }
}

async fn list_aggregate(
    state: AppState,
    target: Target,
    query: Option<String>,
) -> Result<Json<Value>, ApiError> {
    let q = parse_query(&state, target, &query, Listing::Aggregate)?;
    let Some(service) = state.logs.clone() else {
        return failure(not_configured(), json!({}), "aggregated");
    };
    match service.aggregate(&q).await {
        Ok(counts) => Ok(Json(json!({ "aggregated": counts }))),
        Err(e) => failure(e, json!({}), "aggregated"),
    }
}

fn not_configured() -> LogsError {
    crate::metrics::METRICS.incr("logexport_search_unavailable_total", "not_configured");
    LogsError::Unavailable {
        reason: "not_configured",
        message: "Splunk is not configured: set the [splunk] section to read logs".into(),
    }
}

/// The caller's own logs (Quay's).
#[utoipa::path(
    get,
    path = "/api/v1/user/logs",
    tag = "logs",
    operation_id = "listUserLogs",
    params(RangeParams, FilterParams, PageParams),
    responses(
        (status = 200, description = "a page; with `search_unavailable` when Splunk could not answer", body = LogsPage),
        (status = 400, description = "invalid date range (at most export.max_range_days days), filter or next_page", body = ErrorBody),
        (status = 401, description = "no or unknown credential", body = ErrorBody),
        (status = 503, description = "Quay (beside Quay) could not be asked who the caller is", body = ErrorBody),
    )
)]
async fn user_logs(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let target = user_target(&state, &caller).await?;
    list_logs(state, target, query).await
}

/// Counts of the caller's own logs per kind and day (Quay's).
#[utoipa::path(
    get,
    path = "/api/v1/user/aggregatelogs",
    tag = "logs",
    operation_id = "aggregateUserLogs",
    params(RangeParams, AggregateFilterParams),
    responses(
        (status = 200, description = "a page; with `search_unavailable` when Splunk could not answer", body = AggregatePage),
        (status = 400, description = "invalid date range (at most logs.max_aggregate_days, 32 by default days), filter or next_page", body = ErrorBody),
        (status = 401, description = "no or unknown credential", body = ErrorBody),
        (status = 503, description = "Quay (beside Quay) could not be asked who the caller is", body = ErrorBody),
    )
)]
async fn user_aggregate(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let target = user_target(&state, &caller).await?;
    list_aggregate(state, target, query).await
}

/// An organization's logs (Quay's).
#[utoipa::path(
    get,
    path = "/api/v1/organization/{orgname}/logs",
    tag = "logs",
    operation_id = "listOrgLogs",
    params(OrgPath, RangeParams, FilterParams, PageParams),
    responses(
        (status = 200, description = "a page; with `search_unavailable` when Splunk could not answer", body = LogsPage),
        (status = 400, description = "invalid date range (at most export.max_range_days days), filter or next_page", body = ErrorBody),
        (status = 401, description = "no or unknown credential", body = ErrorBody),
        (status = 403, description = "not an administrator of the namespace or repository", body = ErrorBody),
        (status = 503, description = "Quay (beside Quay) could not be asked who the caller is", body = ErrorBody),
    )
)]
async fn org_logs(
    State(state): State<AppState>,
    caller: Caller,
    Path(orgname): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let target = org_target(&state, &caller, &orgname).await?;
    list_logs(state, target, query).await
}

/// Counts of an organization's logs (Quay's).
#[utoipa::path(
    get,
    path = "/api/v1/organization/{orgname}/aggregatelogs",
    tag = "logs",
    operation_id = "aggregateOrgLogs",
    params(OrgPath, RangeParams, AggregateFilterParams),
    responses(
        (status = 200, description = "a page; with `search_unavailable` when Splunk could not answer", body = AggregatePage),
        (status = 400, description = "invalid date range (at most logs.max_aggregate_days, 32 by default days), filter or next_page", body = ErrorBody),
        (status = 401, description = "no or unknown credential", body = ErrorBody),
        (status = 403, description = "not an administrator of the namespace or repository", body = ErrorBody),
        (status = 503, description = "Quay (beside Quay) could not be asked who the caller is", body = ErrorBody),
    )
)]
async fn org_aggregate(
    State(state): State<AppState>,
    caller: Caller,
    Path(orgname): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let target = org_target(&state, &caller, &orgname).await?;
    list_aggregate(state, target, query).await
}

/// A repository's logs (Quay's).
#[utoipa::path(
    get,
    path = "/api/v1/repository/{namespace}/{repository}/logs",
    tag = "logs",
    operation_id = "listRepoLogs",
    params(RepoPath, RangeParams, FilterParams, PageParams),
    responses(
        (status = 200, description = "a page; with `search_unavailable` when Splunk could not answer", body = LogsPage),
        (status = 400, description = "invalid date range (at most export.max_range_days days), filter or next_page", body = ErrorBody),
        (status = 401, description = "no or unknown credential", body = ErrorBody),
        (status = 403, description = "not an administrator of the namespace or repository", body = ErrorBody),
        (status = 503, description = "Quay (beside Quay) could not be asked who the caller is", body = ErrorBody),
    )
)]
async fn repo_logs(
    State(state): State<AppState>,
    caller: Caller,
    Path((namespace, repository)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let target = repo_target(&state, &caller, &namespace, &repository).await?;
    list_logs(state, target, query).await
}

/// Counts of a repository's logs (Quay's).
#[utoipa::path(
    get,
    path = "/api/v1/repository/{namespace}/{repository}/aggregatelogs",
    tag = "logs",
    operation_id = "aggregateRepoLogs",
    params(RepoPath, RangeParams, AggregateFilterParams),
    responses(
        (status = 200, description = "a page; with `search_unavailable` when Splunk could not answer", body = AggregatePage),
        (status = 400, description = "invalid date range (at most logs.max_aggregate_days, 32 by default days), filter or next_page", body = ErrorBody),
        (status = 401, description = "no or unknown credential", body = ErrorBody),
        (status = 403, description = "not an administrator of the namespace or repository", body = ErrorBody),
        (status = 503, description = "Quay (beside Quay) could not be asked who the caller is", body = ErrorBody),
    )
)]
async fn repo_aggregate(
    State(state): State<AppState>,
    caller: Caller,
    Path((namespace, repository)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let target = repo_target(&state, &caller, &namespace, &repository).await?;
    list_aggregate(state, target, query).await
}

/// Every namespace's logs, for superusers (Quay's).
#[utoipa::path(
    get,
    path = "/api/v1/superuser/logs",
    tag = "logs",
    operation_id = "listAllLogs",
    params(RangeParams, FilterParams, PageParams),
    responses(
        (status = 200, description = "a page; with `search_unavailable` when Splunk could not answer", body = LogsPage),
        (status = 400, description = "invalid date range (at most export.max_range_days days), filter or next_page", body = ErrorBody),
        (status = 401, description = "no or unknown credential", body = ErrorBody),
        (status = 403, description = "not a superuser", body = ErrorBody),
        (status = 503, description = "Quay (beside Quay) could not be asked who the caller is", body = ErrorBody),
    )
)]
async fn superuser_logs(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let target = superuser_target(&state, &caller).await?;
    list_logs(state, target, query).await
}

/// Counts of every namespace's logs, for superusers (Quay's).
#[utoipa::path(
    get,
    path = "/api/v1/superuser/aggregatelogs",
    tag = "logs",
    operation_id = "aggregateAllLogs",
    params(RangeParams, AggregateFilterParams),
    responses(
        (status = 200, description = "a page; with `search_unavailable` when Splunk could not answer", body = AggregatePage),
        (status = 400, description = "invalid date range (at most logs.max_aggregate_days, 32 by default days), filter or next_page", body = ErrorBody),
        (status = 401, description = "no or unknown credential", body = ErrorBody),
        (status = 403, description = "not a superuser", body = ErrorBody),
        (status = 503, description = "Quay (beside Quay) could not be asked who the caller is", body = ErrorBody),
    )
)]
async fn superuser_aggregate(
    State(state): State<AppState>,
    caller: Caller,
    RawQuery(query): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let target = superuser_target(&state, &caller).await?;
    list_aggregate(state, target, query).await
}
