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

/// `GET /metrics`: Prometheus text.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    operation_id = "metrics",
    security(()),
    responses(
        (status = 200, description = "Prometheus text format 0.0.4", content_type = "text/plain", body = String),
    )
)]
pub async fn metrics(State(state): State<AppState>) -> Response {
    let depth = storage::count_by_state(&state.pool)
        .await
        .unwrap_or_default();
    let schedules = crate::schedule::storage::stats(&state.pool, chrono::Utc::now())
        .await
        .unwrap_or_default();
    let mut body = METRICS.render(&depth);
    body.push_str(&crate::metrics::render_schedules(&schedules));
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        body,
    )
        .into_response()
}

/// Counts responses by status code.
pub async fn count_responses(request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    METRICS.incr("logexport_http_responses_total", response.status().as_str());
    response
}
