//! The export job: Splunk → archive → storage; the notifier then delivers the outcome.

mod encoders;
mod pipeline;

use std::sync::Arc;
use std::time::Duration;

pub use pipeline::ExportJob;

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
}

impl ExportSettings {
    /// Settings from configuration.
    pub fn from_config(config: &Config) -> Self {
        Self {
            object_prefix: config.export.object_prefix.clone(),
            url_expiry: Duration::from_secs(config.export.url_expiry_seconds),
            chunk_bytes: 1 << 20,
        }
    }
}

/// Builds the export job body from configuration, over an already opened store.
pub fn handler(
    config: &Config,
    store: Arc<dyn ObjectStore>,
) -> anyhow::Result<Arc<dyn JobHandler>> {
    let splunk = SplunkClient::from_config(config)
        .map_err(|e| anyhow::anyhow!("splunk configuration: {e}"))?;
    Ok(Arc::new(ExportJob::new(
        splunk,
        store,
        ExportSettings::from_config(config),
    )))
}
