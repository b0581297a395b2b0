//! The `logexport` service binary.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = logexport::cli::Cli::parse();
    if matches!(cli.command, logexport::cli::Command::Demo)
        && std::env::var_os("RUST_LOG").is_none()
    {
        // The demo prints its own progress; service logs would drown it.
        // SAFETY: no other thread exists yet; the runtime is built below.
        unsafe { std::env::set_var("RUST_LOG", "warn") };
    }
    logexport::telemetry::init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(logexport::cli::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
