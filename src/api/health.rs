//! Liveness, readiness and metrics.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::metrics::METRICS;
use crate::queue::storage;

/// `GET /healthz`: the process answers.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    operation_id = "healthz",
    security(()),
    responses(
        (status = 200, description = "the process answers", content_type = "text/plain", body = String),
    )
)]
pub async fn healthz() -> &'static str {
    "ok\n"
}

/// `GET /readyz`: the database answers.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    operation_id = "readyz",
    security(()),
    responses(
        (status = 200, description = "the database answers", content_type = "text/plain", body = String),
        (status = 503, description = "the database does not answer", content_type = "text/plain", body = String),
    )
)]
pub async fn readyz(State(state): State<AppState>) -> Response {
    match sqlx::query("SELECT 1").execute(&state.pool).await {
        Ok(_) => (StatusCode::OK, "ready\n").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "readiness check failed");
            (StatusCode::SERVICE_UNAVAILABLE, "database unreachable\n").into_response()
        }
    }
}

/// `GET /metrics`: OpenMetrics text, with the queue and schedules read at scrape time.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    operation_id = "metrics",
    security(()),
    responses(
        (status = 200, description = "OpenMetrics text (prometheus-client)", content_type = "application/openmetrics-text", body = String),
    )
)]
pub async fn metrics(State(state): State<AppState>) -> Response {
    let scrape = crate::metrics::Scrape {
        queue_depth: storage::count_by_state(&state.pool)
            .await
            .unwrap_or_default(),
        oldest_queued_seconds: storage::oldest_queued_seconds(&state.pool)
            .await
            .unwrap_or_default(),
        schedules: crate::schedule::storage::stats(&state.pool, chrono::Utc::now())
            .await
            .unwrap_or_default(),
    };
    (
        [(
            axum::http::header::CONTENT_TYPE,
            crate::metrics::CONTENT_TYPE,
        )],
        METRICS.render(&scrape),
    )
        .into_response()
}

/// Counts responses by status, and times them under the matched route's template (an
/// unmatched path counts as `unmatched`, so no input grows the label set).
pub async fn count_responses(request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    METRICS.http_response(
        &method,
        &route,
        response.status().as_u16(),
        started.elapsed(),
    );
    response
}
