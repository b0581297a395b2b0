//! API errors in Quay's shape: `{"status", "error_type", "title", "detail", "error_message", "type"}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::access::Refusal;

/// An error answered to an API client.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    InvalidRequest(String),
    #[error(
        "authentication required: send Authorization: Bearer <token> (beside Quay: a Quay OAuth token or the Quay session)"
    )]
    Unauthorized,
    #[error(
        "the credential sent was not accepted: an unknown, expired or revoked token (beside Quay: a credential Quay does not accept, or a disabled user's)"
    )]
    CredentialRefused,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    Gone(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error; see the service log for request {0}")]
    Internal(String),
}

impl ApiError {
    fn parts(&self) -> (StatusCode, &'static str) {
        match self {
            Self::InvalidRequest(_) => (StatusCode::BAD_REQUEST, "invalid_request"),
            Self::Unauthorized | Self::CredentialRefused => {
                (StatusCode::UNAUTHORIZED, "invalid_token")
            }
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "insufficient_scope"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            Self::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            Self::Gone(_) => (StatusCode::GONE, "gone"),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal_error"),
        }
    }

    /// Logs an unexpected failure and hides its details from the client. The reference given
    /// is the request's `X-Request-Id`, which the request's log span carries too.
    pub fn internal(error: impl std::fmt::Display) -> Self {
        let reference = REQUEST_ID
            .try_with(Clone::clone)
            .unwrap_or_else(|_| uuid::Uuid::new_v4().to_string());
        tracing::error!(%error, reference = %reference, "request failed");
        Self::Internal(reference)
    }
}

/// Seconds a client is asked to wait (`Retry-After`) when a dependency is unavailable.
pub const RETRY_AFTER_SECONDS: u64 = 5;

impl ApiError {
    /// The answer while Postgres cannot be reached: 503 naming the database, with Retry-After.
    pub fn database_unavailable(error: &sqlx::Error) -> Self {
        crate::db::report_unavailable("api", error);
        tracing::warn!(%error, "request refused: the database is unreachable");
        Self::Unavailable(
            "the service's database (Postgres) is unreachable; nothing was recorded, try again \
             shortly"
                .into(),
        )
    }
}

tokio::task_local! {
    /// The `X-Request-Id` of the request being handled.
    static REQUEST_ID: String;
}

/// Makes the request's `X-Request-Id` the reference of a 500 answered to it.
pub async fn with_request_reference(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let id = request
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    if id.is_empty() {
        return next.run(request).await;
    }
    REQUEST_ID.scope(id, next.run(request)).await
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        if crate::db::is_unavailable(&e) {
            return Self::database_unavailable(&e);
        }
        Self::internal(format!("database: {e}"))
    }
}

impl From<Refusal> for ApiError {
    fn from(refusal: Refusal) -> Self {
        match refusal {
            Refusal::Forbidden(why) => Self::Forbidden(why),
            Refusal::NotFound(what) => Self::NotFound(what),
            Refusal::CredentialRefused => Self::CredentialRefused,
            Refusal::QuayUnavailable(e) => Self::Unavailable(e.to_string()),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, error_type) = self.parts();
        let message = self.to_string();
        let body = super::schemas::ErrorBody {
            status: status.as_u16(),
            error_type,
            title: error_type,
            detail: message.clone(),
            error_message: message,
            kind: format!("/api/v1/error/{error_type}"),
        };
        let mut response = (status, Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(RETRY_AFTER_SECONDS),
            );
        }
        response
    }
}
