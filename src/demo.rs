//! The zero-setup demo (README command 1).

/// Runs the demo.
pub async fn run() -> anyhow::Result<()> {
    anyhow::bail!("the demo is not implemented yet")
}
