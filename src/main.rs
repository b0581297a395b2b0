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

/// Fixes glibc's mmap threshold at 32 MiB. Left dynamic, glibc raises it each time a large
/// buffer is freed, and a worker's memory grew by a quarter over the first second or two of every
/// export, so a long export peaked higher than a short one. Fixed at glibc's default of 128 KiB,
/// every network read buffer, batch and upload chunk was a fresh mapping whose pages were faulted
/// in one by one and unmapped again (over a quarter of the reading thread's CPU time). Fixed above the
/// size of any buffer an export uses, those buffers are reused from the heaps: memory is flat
/// whatever the export's size, and no page is faulted in twice.
fn fixed_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const THRESHOLD: libc::c_int = 32 * 1024 * 1024;
        // SAFETY: mallopt only sets an allocator parameter; it is called before any other
        // thread exists and its result (0 on failure) only means the default stays.
        if unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, THRESHOLD) } == 0 {
            eprintln!("warning: could not fix the allocator's mmap threshold");
        }
    }
}
