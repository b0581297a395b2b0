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
    fixed_mmap_threshold();
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

/// Fixes glibc's mmap threshold at its default (128 KiB). Left dynamic, glibc raises it each time
/// a large buffer (an upload chunk, a batch of rows) is freed, after which such buffers are carved
/// from the heaps instead and the heaps keep them: a worker's memory then grew by a quarter over
/// the first second or two of every export, so a long export peaked higher than a short one.
/// Fixed, large buffers go back to the system when freed and memory is flat whatever the size.
fn fixed_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const THRESHOLD: libc::c_int = 128 * 1024;
        // SAFETY: mallopt only sets an allocator parameter; it is called before any other
        // thread exists and its result (0 on failure) only means the default stays.
        if unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, THRESHOLD) } == 0 {
            eprintln!("warning: could not fix the allocator's mmap threshold");
        }
    }
}
