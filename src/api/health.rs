//! Liveness, readiness and metrics.

use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::metrics::METRICS;
use crate::queue::{JobState, storage};

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

/// `GET /readyz`: the database answers and every migration this build knows is applied.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    operation_id = "readyz",
    security(()),
    responses(
        (status = 200, description = "the database answers and is migrated", content_type = "text/plain", body = String),
        (status = 503, description = "the database does not answer, or migrations are not applied", content_type = "text/plain", body = String),
    )
)]
pub async fn readyz(State(state): State<AppState>) -> Response {
    // Answered within a probe's usual timeout, not after the pool's acquire timeout. Ready means
    // reachable and migrated: a never-migrated database would answer every request with 500.
    let probe = crate::db::pending_migrations(&state.pool);
    match tokio::time::timeout(READY_TIMEOUT, probe).await {
        Ok(Ok(pending)) if pending.is_empty() => {
            crate::db::report_available();
            (StatusCode::OK, "ready\n").into_response()
        }
        Ok(Ok(pending)) => {
            crate::db::report_available();
            tracing::warn!(
                pending = pending.len(),
                "not ready: run `logexport migrate`"
            );
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "database not migrated: run `logexport migrate`\n",
            )
                .into_response()
        }
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "readiness check failed");
            if crate::db::is_unavailable(&e) {
                crate::db::report_unavailable("api", &e);
            }
            not_ready()
        }
        Err(_) => {
            tracing::warn!(timeout = ?READY_TIMEOUT, "readiness check failed: the database did not answer in time");
            not_ready()
        }
    }
}

/// How long `/readyz` and the scrape's database gauges wait for Postgres.
const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

fn not_ready() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [(
            axum::http::header::RETRY_AFTER,
            super::error::RETRY_AFTER_SECONDS.to_string(),
        )],
        "database unreachable\n",
    )
        .into_response()
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
    // The process's own counters are served even while Postgres is away (they show the outage);
    // the gauges read from it are then left out rather than holding the scrape.
    let now = chrono::Utc::now();
    let read = async {
        tokio::try_join!(
            storage::count_by_state(&state.pool),
            storage::oldest_queued_seconds(&state.pool),
            crate::schedule::storage::stats(&state.pool, now),
            crate::queue::jobs::count_by_kind_and_state(&state.pool),
            crate::queue::jobs::oldest_queued_seconds(&state.pool),
        )
    };
    let scrape = match tokio::time::timeout(READY_TIMEOUT, read).await {
        Ok(Ok((counts, oldest_queued_seconds, schedules, jobs, jobs_oldest))) => {
            crate::metrics::Scrape {
                queue_depth: queue_depth(&counts),
                oldest_queued_seconds,
                schedules_active: schedules.active,
                schedules_paused: schedules.paused,
                schedule_max_lag_seconds: schedules.max_lag_seconds,
                schedule_last_run: schedules.last_run_at.map_or(0, |t| t.timestamp()),
                jobs: runner_jobs(&jobs, &counts),
                jobs_oldest_queued_seconds: runner_oldest(&jobs_oldest, oldest_queued_seconds),
            }
        }
        _ => crate::metrics::Scrape {
            queue_depth: queue_depth(&[]),
            ..crate::metrics::Scrape::default()
        },
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

/// Every queue state with its count from `counts` (0 when absent), so a state that emptied
/// reads 0 and not its last value.
fn queue_depth(counts: &[(String, i64)]) -> Vec<(String, i64)> {
    JobState::ALL
        .iter()
        .map(|state| {
            let n = counts
                .iter()
                .find(|(s, _)| s == state.as_str())
                .map_or(0, |(_, n)| *n);
            (state.as_str().to_owned(), n)
        })
        .collect()
}

/// Every known kind of the job runner in every state, with its count from `counts` (0 when
/// absent); exports (kind `export`) in their own states, from `exports`.
fn runner_jobs(
    counts: &[(String, String, i64)],
    exports: &[(String, i64)],
) -> Vec<(String, String, i64)> {
    let export = crate::worker::WorkKind::Export.label();
    let mut all: Vec<(String, String, i64)> = queue_depth(exports)
        .into_iter()
        .map(|(state, n)| (export.to_owned(), state, n))
        .collect();
    for kind in crate::queue::jobs::KINDS {
        for state in crate::queue::jobs::State::ALL {
            let n = counts
                .iter()
                .find(|(k, s, _)| k == kind && s == state.as_str())
                .map_or(0, |(_, _, n)| *n);
            all.push((kind.to_owned(), state.as_str().to_owned(), n));
        }
    }
    all
}

/// Every known kind of the job runner with how long its oldest due job waits (0 when none);
/// exports' is `exports`.
fn runner_oldest(waits: &[(String, f64)], exports: f64) -> Vec<(String, f64)> {
    let export = crate::worker::WorkKind::Export.label();
    std::iter::once((export.to_owned(), exports))
        .chain(crate::queue::jobs::KINDS.iter().map(|kind| {
            let seconds = waits
                .iter()
                .find(|(k, _)| k == kind)
                .map_or(0.0, |(_, s)| *s);
            ((*kind).to_owned(), seconds)
        }))
        .collect()
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
