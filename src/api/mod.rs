//! The HTTP API: Quay-compatible `exportlogs`, export status, export schedules, health and
//! metrics.

pub mod auth;
mod chain;
mod download;
mod error;
mod exportlogs;
mod exports;
mod health;
mod logs;
mod openapi;
mod schedules;
mod schemas;
mod status;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::http::{HeaderName, Request};
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use sqlx::PgPool;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;

pub use download::{DownloadQuery, download_router, serve_download};
pub use error::ApiError;
pub use exportlogs::{all_params, parse_namespace, query_param, read_body};
pub use openapi::ApiDoc;
pub use schemas::DownloadLinkParams;
pub use status::status_json;

use crate::access::tokens::TokenCache;
use crate::access::{QuayClientError, QuayIdentity};
use crate::config::{AuthMode, Config};
use crate::domain::AllowList;
use crate::storage::{LocalStore, ObjectStore, Storage};

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub config: Arc<Config>,
    pub allow: Arc<AllowList>,
    /// Set with local storage: this service serves the signed download links.
    pub local_store: Option<Arc<LocalStore>>,
    /// The archives' store, for fresh download links; `None` when storage is not configured.
    pub objects: Option<Arc<dyn ObjectStore>>,
    /// Seals the export listing's `next_page` tokens.
    pub list_key: crate::logs::TokenKey,
    /// The public keys manifests are verified with: the signing key's, then earlier ones.
    pub signing_keys: Arc<Vec<crate::archive::PublicKey>>,
    /// The logs/aggregatelogs read side; `None` when the `[splunk]` section is unusable.
    pub logs: Option<Arc<crate::logs::LogsService>>,
    /// Recently seen API tokens.
    pub tokens: Arc<TokenCache>,
    /// Quay mode: the Quay instance that vouches for callers.
    pub quay: Option<Arc<QuayIdentity>>,
    /// `server.trusted_proxies`, parsed.
    pub trusted_proxies: Arc<Vec<ipnet::IpNet>>,
}

impl AppState {
    /// State for the given pool and configuration. An unusable Quay configuration (quay mode)
    /// is logged and answers every request with 503; [`AppState::try_new`] refuses it instead.
    pub fn new(pool: PgPool, config: Arc<Config>) -> Self {
        let quay = quay_identity(&config).unwrap_or_else(|e| {
            tracing::error!(error = %e, "Quay identity lookups unusable: every request gets 503");
            None
        });
        Self::assemble(pool, config, quay)
    }

    /// State for the given pool and configuration; fails when quay mode's client cannot be built.
    pub fn try_new(pool: PgPool, config: Arc<Config>) -> Result<Self, QuayClientError> {
        let quay = quay_identity(&config)?;
        Ok(Self::assemble(pool, config, quay))
    }

    fn assemble(pool: PgPool, config: Arc<Config>, quay: Option<Arc<QuayIdentity>>) -> Self {
        let allow = Arc::new(AllowList::new(&config.callback.allowed_hosts));
        let list_key = crate::logs::TokenKey::from_secret(&config.logs.page_token_key);
        let signing_keys = Arc::new(signing_keys(&config));
        let logs = match crate::logs::LogsService::new(&config, &pool) {
            Ok(service) => Some(Arc::new(service)),
            Err(e) => {
                tracing::warn!(error = %e, "log listings disabled: Splunk is not usable");
                None
            }
        };
        let trusted_proxies = Arc::new(crate::audit::trusted_proxies(&config));
        let tokens = TokenCache::start(&pool);
        Self {
            quay,
            trusted_proxies,
            pool,
            config,
            allow,
            local_store: None,
            objects: None,
            list_key,
            signing_keys,
            logs,
            tokens,
        }
    }

    /// Mints download links from `storage` (and serves local-storage downloads).
    pub fn with_storage(mut self, storage: Storage) -> Self {
        self.local_store = storage.local;
        self.objects = Some(storage.objects);
        self
    }
}

/// Quay mode's client for identity and permission lookups (`None` in tokens mode).
fn quay_identity(config: &Config) -> Result<Option<Arc<QuayIdentity>>, QuayClientError> {
    match config.auth.mode {
        AuthMode::Tokens => Ok(None),
        AuthMode::Quay => QuayIdentity::new(&config.auth).map(|q| Some(Arc::new(q))),
    }
}

/// The manifest keys to publish; invalid ones were refused when the configuration loaded.
fn signing_keys(config: &Config) -> Vec<crate::archive::PublicKey> {
    let current = crate::archive::ManifestKey::parse(config.export.manifest_signing_key.expose())
        .ok()
        .map(|k| k.public());
    let previous = config
        .export
        .manifest_previous_public_keys
        .iter()
        .filter_map(|k| crate::archive::PublicKey::parse(k).ok());
    current.into_iter().chain(previous).collect()
}

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The full router.
pub fn router(state: AppState) -> Router {
    let api = Router::new()
        .route("/user/exportlogs", post(exportlogs::user))
        .route(
            "/organization/{orgname}/exportlogs",
            post(exportlogs::organization),
        )
        .route(
            "/repository/{namespace}/{repository}/exportlogs",
            post(exportlogs::repository),
        )
        .route("/exportlogs", get(exports::list))
        .route(
            "/exportlogs/{export_id}",
            get(status::get).delete(status::cancel),
        )
        .route("/exportlogs/{export_id}/download", get(exports::download))
        .route("/exportlogs/{export_id}/manifest", get(exports::manifest))
        .route("/exportlogs/signing-keys", get(chain::signing_keys))
        .route("/exportlogs/chain", get(chain::head))
        .route(
            "/user/exportschedules",
            get(schedules::list_user).post(schedules::create_user),
        )
        .route(
            "/organization/{orgname}/exportschedules",
            get(schedules::list_organization).post(schedules::create_organization),
        )
        .route(
            "/repository/{namespace}/{repository}/exportschedules",
            get(schedules::list_repository).post(schedules::create_repository),
        )
        .route(
            "/exportschedules/{schedule_id}",
            get(schedules::get)
                .patch(schedules::update)
                .delete(schedules::delete),
        )
        .route("/openapi.json", get(openapi::openapi_json))
        .merge(logs::routes());
    let mut router = Router::new().nest("/api/v1", api);
    if let Some(store) = &state.local_store {
        router = router.merge(download_router(store.clone()));
    }
    router
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .fallback(|| async { ApiError::NotFound("no such endpoint".into()) })
        .layer(axum::middleware::from_fn(health::count_responses))
        .layer(axum::middleware::from_fn(error::with_request_reference))
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &Request<_>| {
                let request_id = request
                    .headers()
                    .get(&REQUEST_ID)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default();
                tracing::info_span!(
                    "request",
                    method = %request.method(),
                    path = %request.uri().path(),
                    request_id = %request_id,
                    caller = tracing::field::Empty,
                )
            }),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .layer(tower_http::timeout::TimeoutLayer::with_status_code(
            axum::http::StatusCode::REQUEST_TIMEOUT,
            Duration::from_secs(120),
        ))
        .with_state(state)
}

/// Serves the router until `shutdown`.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<()> {
    tracing::info!(addr = %listener.local_addr()?, "API listening");
    let app = router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    // Each write goes out at once (TCP_NODELAY): with Nagle's algorithm the end of a streamed
    // download would wait for the client's delayed ACK, 40 ms on Linux.
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY on a connection");
        }
    });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await?;
    Ok(())
}
