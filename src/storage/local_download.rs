//! `GET /exportedlogs/{file}`: serves local-storage archives behind signed, expiring links.

use std::sync::Arc;
use std::time::SystemTime;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use tokio_util::io::ReaderStream;

use super::LocalStore;
use crate::archive::content_type_for_file_name;

/// Why a download link was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DownloadError {
    /// The signature does not match the file and expiry (403).
    #[error("the download link is invalid")]
    Tampered,
    /// The link was valid but has expired (410).
    #[error("the download link has expired")]
    Expired,
    /// The archive does not exist (any more) (404).
    #[error("the exported file does not exist")]
    NotFound,
}

impl DownloadError {
    /// The HTTP status this refusal is answered with.
    pub fn status(self) -> StatusCode {
        match self {
            DownloadError::Tampered => StatusCode::FORBIDDEN,
            DownloadError::Expired => StatusCode::GONE,
            DownloadError::NotFound => StatusCode::NOT_FOUND,
        }
    }
}

impl IntoResponse for DownloadError {
    fn into_response(self) -> Response {
        (self.status(), self.to_string()).into_response()
    }
}

/// The link's query string.
#[derive(Debug, Deserialize)]
pub struct DownloadQuery {
    pub expires: Option<String>,
    pub signature: Option<String>,
}

/// Streams the archive a valid link points at, as an attachment.
#[utoipa::path(
    get,
    path = "/exportedlogs/{file}",
    tag = "export status",
    operation_id = "fetchLocalArchive",
    summary = "An archive in local storage, by the signed link (local storage only)",
    security(()),
    params(
        ("file" = String, Path, description = "the archive's file name"),
        crate::api::DownloadLinkParams,
    ),
    responses(
        (status = 200, description = "the archive", content_type = "application/octet-stream", body = Vec<u8>),
        (status = 403, description = "the link is invalid", content_type = "text/plain", body = String),
        (status = 404, description = "the file does not exist", content_type = "text/plain", body = String),
        (status = 410, description = "the link has expired", content_type = "text/plain", body = String),
    )
)]
pub async fn serve_download(
    State(store): State<Arc<LocalStore>>,
    Path(file): Path<String>,
    Query(query): Query<DownloadQuery>,
) -> Result<Response, DownloadError> {
    let (Some(expires), Some(signature)) = (query.expires, query.signature) else {
        return Err(DownloadError::Tampered);
    };
    let path = store.verify_download(&file, &expires, &signature, SystemTime::now())?;
    // Deleted between the check and the open (retention): still a plain 404.
    let opened = tokio::fs::File::open(&path)
        .await
        .map_err(|_| DownloadError::NotFound)?;
    let length = opened
        .metadata()
        .await
        .map_err(|_| DownloadError::NotFound)?
        .len();
    let headers = [
        (
            header::CONTENT_TYPE,
            content_type_for_file_name(&file).to_owned(),
        ),
        (header::CONTENT_LENGTH, length.to_string()),
        (
            header::CONTENT_DISPOSITION,
            super::key::content_disposition(&file),
        ),
        (header::CACHE_CONTROL, "private, no-store".to_owned()),
    ];
    Ok((headers, Body::from_stream(ReaderStream::new(opened))).into_response())
}

/// A router with `GET /exportedlogs/{file}` bound to `store`; merge it into the API's router.
pub fn download_router<S>(store: Arc<LocalStore>) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    Router::new()
        .route("/exportedlogs/{file}", get(serve_download))
        .with_state(store)
}
