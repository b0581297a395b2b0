//! The export job: Splunk → archive → storage; the notifier then delivers the outcome.

pub mod checkpoint;
mod encode;
mod encoders;
mod finish;
mod pipeline;
pub mod slices;

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;

pub use pipeline::ExportJob;

use crate::archive::ManifestKey;
use crate::archive::timestamp::TimestampAuthority;
use crate::config::Config;
use crate::splunk::SplunkClient;
use crate::storage::ObjectStore;
use crate::worker::JobHandler;

/// The export's tunables, from `[export]` and `[storage.s3]`.
#[derive(Debug, Clone)]
pub struct ExportSettings {
    pub object_prefix: String,
    pub url_expiry: Duration,
    /// Bytes gathered before handing them to the upload.
    pub chunk_bytes: usize,
    /// How the range is sliced and read from Splunk.
    pub slices: slices::SliceSettings,
    /// Signs each archive's manifest; `None`: manifests say they are unsigned.
    pub manifest_key: Option<Arc<ManifestKey>>,
    /// Time-stamps each manifest (`export.timestamp_authority_url`); `None`: no time-stamps.
    pub timestamp: Option<Arc<TimestampAuthority>>,
}

impl ExportSettings {
    /// Settings from configuration; an unusable `export.manifest_signing_key` is an error.
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        let secret = config.export.manifest_signing_key.expose();
        let manifest_key = if secret.is_empty() {
            None
        } else {
            Some(Arc::new(ManifestKey::parse(secret)?))
        };
        Ok(Self {
            manifest_key,
            timestamp: timestamp_authority(config)?,
            object_prefix: config.export.object_prefix.clone(),
            url_expiry: Duration::from_secs(config.export.url_expiry_seconds),
            chunk_bytes: 1 << 20,
            slices: slices::SliceSettings {
                parallel: match config.splunk.max_concurrent_searches {
                    0 => 3,
                    n => n as usize,
                },
                slices: config.export.slices.max(1) as usize,
                split_min_rows: config.export.split_min_rows,
                probe_rows: config.export.probe_rows,
                spool_dir: config
                    .export
                    .spool_dir
                    .clone()
                    .unwrap_or_else(|| std::env::temp_dir().join("logexport-spool")),
                spool_max_bytes: config.export.spool_max_mib.saturating_mul(1 << 20),
                slice_attempts: config.splunk.max_retries.saturating_add(1),
            },
        })
    }
}

/// The TSA from `export.timestamp_authority_url` (and its CA from
/// `export.timestamp_authority_ca`), when one is configured.
fn timestamp_authority(config: &Config) -> anyhow::Result<Option<Arc<TimestampAuthority>>> {
    let url = config.export.timestamp_authority_url.trim();
    if url.is_empty() {
        return Ok(None);
    }
    let ca = match &config.export.timestamp_authority_ca {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| {
                anyhow::anyhow!(
                    "export.timestamp_authority_ca: cannot read {}: {e}",
                    path.display()
                )
            })?;
            crate::archive::timestamp::load_ca(&pem)
                .map_err(|e| anyhow::anyhow!("export.timestamp_authority_ca: {e}"))?
        }
        None => Vec::new(),
    };
    Ok(Some(Arc::new(TimestampAuthority::new(
        url,
        ca,
        config.export.timestamp_authority_ssl_ca_path.as_deref(),
        Duration::from_secs(config.export.timestamp_authority_timeout_seconds.max(1)),
    )?)))
}

/// Builds the export job body from configuration, over an already opened store.
pub fn handler(
    config: &Config,
    store: Arc<dyn ObjectStore>,
    pool: &PgPool,
) -> anyhow::Result<Arc<dyn JobHandler>> {
    let splunk = SplunkClient::from_config(config, pool)
        .map_err(|e| anyhow::anyhow!("splunk configuration: {e}"))?;
    Ok(Arc::new(ExportJob::new(
        splunk,
        store,
        ExportSettings::from_config(config)?,
    )))
}
