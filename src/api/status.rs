//! `GET` and `DELETE /api/v1/exportlogs/{export_id}`.

use axum::Json;
use axum::extract::{Path, State};
use serde_json::json;

use super::auth::check_not_forged;
use super::schemas::{CancelAccepted, ErrorBody, ExportPath, ExportStatus};
use super::{ApiError, AppState};
use crate::access::{Access, Caller};
use crate::domain::ExportId;
use crate::notify::download_url;
use crate::queue::storage::{self, CancelOutcome};
use crate::queue::{ExportRow, JobState};

pub(super) async fn visible_row(
    state: &AppState,
    caller: &Caller,
    id: &str,
    access: Access,
) -> Result<ExportRow, ApiError> {
    let not_found = || ApiError::NotFound(format!("no export {id:?} visible to you"));
    let id: ExportId = id.parse().map_err(|_| not_found())?;
    let row = storage::get(&state.pool, id).await?.ok_or_else(not_found)?;
    let visible = caller
        .may_access_stored(
            state.quay.as_deref(),
            &row.scope,
            &row.namespace,
            row.repository.as_deref(),
            &row.requested_by,
            access,
        )
        .await?;
    if !visible {
        return Err(not_found());
    }
    Ok(row)
}

/// A running export's time left, from the pace of its slices so far (they are equally long in
/// time, not in events, so this is a rough guide when events cluster).
fn estimated_seconds_left(row: &ExportRow) -> Option<i64> {
    if row.state() != JobState::Running || row.slices_done <= 0 {
        return None;
    }
    let elapsed = (chrono::Utc::now() - row.started_at?).num_seconds().max(0);
    let left = i64::from(row.slices_total - row.slices_done).max(0);
    Some(elapsed * left / i64::from(row.slices_done))
}

/// The status document for one export; `public_url` roots its `download_url`.
pub fn status_json(row: &ExportRow, public_url: &str) -> serde_json::Value {
    let state = row.state();
    let range = row.labelled_range();
    let link_valid = row.object_deleted_at.is_none()
        && row.url_expires_at.is_some_and(|t| t > chrono::Utc::now());
    json!({
        "export_id": row.id,
        "state": state,
        "status": state.quay_status(),
        "scope": row.scope,
        "namespace": row.namespace,
        "repository": row.repository,
        "requested_by": row.requested_by,
        "start_time": row.start_time,
        "end_time": row.end_time,
        "timezone": row.timezone,
        "start_day": range.start_day_label(),
        "end_day": range.end_day_label(),
        "format": row.format,
        "compression": row.compression,
        "schedule_id": row.schedule_id,
        "period_start": row.schedule_id.map(|_| row.start_time),
        "period_end": row.schedule_id.map(|_| row.end_time),
        "filters": {
            "performer": row.performer,
            "kind": row.kinds,
        },
        "attempts": row.attempt - row.attempts_forgiven,
        "max_attempts": row.max_attempts,
        "next_attempt_at": (state == JobState::Queued).then_some(row.run_at),
        "cancel_requested": row.cancel_requested,
        "logs_exported": row.logs_exported,
        "logs_skipped": row.logs_skipped,
        "slices_total": row.slices_total,
        "slices_done": row.slices_done,
        "searches_running": row.searches_running,
        "estimated_seconds_left": estimated_seconds_left(row),
        "bytes_written": row.bytes_written,
        "exported_data_url": if link_valid { row.download_url.clone() } else { None },
        "download_url": (state == JobState::Succeeded && row.object_deleted_at.is_none())
            .then(|| download_url(public_url, row.id)),
        "sha256": row.sha256,
        "manifest_url": row.manifest.is_some().then(|| format!(
            "{}/api/v1/exportlogs/{}/manifest",
            public_url.trim_end_matches('/'),
            row.id
        )),
        "url_expires_at": row.url_expires_at,
        "object_deleted": row.object_deleted_at.is_some(),
        // The requester reads these: operator hints (which key to check) stay in the log.
        "last_error": row.last_error.as_deref().map(crate::notify::wording::for_requester),
        "previous_error": row.previous_error.as_deref().map(crate::notify::wording::for_requester),
        "created_at": row.created_at,
        "started_at": row.started_at,
        "finished_at": row.finished_at,
        "updated_at": row.updated_at,
        "notification": {
            "state": row.notify_state,
            "email": row.callback_email,
            "callback_url": row.callback_url,
            "attempts": row.notify_attempts,
            "next_attempt_at": (row.notify_state == "pending").then_some(row.notify_run_at).flatten(),
            "last_error": row.notify_last_error,
            "delivered_at": row.notified_at,
            "webhook_id": row.webhook_id,
        },
    })
}

/// `GET /api/v1/exportlogs/{export_id}`
#[utoipa::path(
    get,
    path = "/api/v1/exportlogs/{export_id}",
    tag = "export status",
    operation_id = "getExport",
    params(ExportPath),
    responses(
        (status = 200, description = "the status document", body = ExportStatus),
        (status = 401, description = "no or unknown credential", body = ErrorBody),
        (status = 404, description = "no such export visible to the caller (the requester, the namespace's admins, superusers)", body = ErrorBody),
        (status = 503, description = "Quay (beside Quay) could not be asked who the caller is", body = ErrorBody),
    )
)]
pub async fn get(
    State(state): State<AppState>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let row = visible_row(&state, &caller, &id, Access::Read).await?;
    Ok(Json(status_json(&row, &state.config.server.public_url)))
}

/// `DELETE /api/v1/exportlogs/{export_id}`
#[utoipa::path(
    delete,
    path = "/api/v1/exportlogs/{export_id}",
    tag = "export status",
    operation_id = "cancelExport",
    params(ExportPath),
    responses(
        (status = 200, description = "cancelled, or cancel requested", body = CancelAccepted),
        (status = 401, description = "no or unknown credential", body = ErrorBody),
        (status = 403, description = "a request with the Quay session cookie but without X-Requested-With, or from an origin not allowed", body = ErrorBody),
        (status = 404, description = "no such export visible to the caller", body = ErrorBody),
        (status = 409, description = "the export already finished", body = ErrorBody),
        (status = 503, description = "Quay (beside Quay) could not be asked who the caller is", body = ErrorBody),
    )
)]
pub async fn cancel(
    State(state): State<AppState>,
    caller: Caller,
    headers: axum::http::HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<CancelAccepted>, ApiError> {
    check_not_forged(&caller, &state, &headers)?;
    let row = visible_row(&state, &caller, &id, Access::Export).await?;
    let export_id = ExportId(row.id);
    let outcome = storage::cancel(&state.pool, export_id).await?;
    let message = match outcome {
        CancelOutcome::Cancelled => "cancelled before it started",
        CancelOutcome::Requested => "cancel requested; the worker stops within seconds",
        CancelOutcome::AlreadyFinished(s) => {
            return Err(ApiError::Conflict(format!(
                "export {export_id} already finished ({})",
                s.as_str()
            )));
        }
        CancelOutcome::NotFound => return Err(ApiError::NotFound(format!("no export {id:?}"))),
    };
    Ok(Json(CancelAccepted {
        export_id: export_id.0,
        message,
    }))
}
