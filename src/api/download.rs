//! `GET /exportedlogs/{file}`: serves local-storage archives behind signed, expiring links
//! (the links are signed and checked by [`LocalStore`]).

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

use crate::archive::content_type_for_file_name;
use crate::storage::{DownloadError, LocalStore, content_disposition};

/// The HTTP status a refused link is answered with.
fn status(error: DownloadError) -> StatusCode {
    match error {
        DownloadError::Tampered => StatusCode::FORBIDDEN,
        DownloadError::Expired => StatusCode::GONE,
        DownloadError::NotFound => StatusCode::NOT_FOUND,
    }
}

impl IntoResponse for DownloadError {
    fn into_response(self) -> Response {
        (status(self), self.to_string()).into_response()
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
        super::DownloadLinkParams,
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
        (header::CONTENT_DISPOSITION, content_disposition(&file)),
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
