//! The `logexport` service binary.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    logexport::telemetry::init();
    let cli = logexport::cli::Cli::parse();
    match logexport::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
