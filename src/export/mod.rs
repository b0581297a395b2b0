//! The export job: Splunk → archive → storage, handed to the notifier.

use std::sync::Arc;

use crate::config::Config;
use crate::worker::JobHandler;

/// Builds the export job body from configuration.
pub async fn handler_from_config(_config: &Config) -> anyhow::Result<Arc<dyn JobHandler>> {
    anyhow::bail!("the export pipeline is not implemented yet")
}
