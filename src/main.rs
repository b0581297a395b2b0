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

/// Fixes glibc's mmap threshold at 512 KiB. Left dynamic, glibc raises it each time a large
/// buffer is freed, after which such buffers are carved from the heaps and the heaps keep them: a
/// worker's memory then grew by a quarter over the first second or two of every export, so a long
/// export peaked higher than a short one. At glibc's default of 128 KiB, the network read buffers
/// (which the HTTP client allocates anew as it reads) were fresh mappings faulted in page by page,
/// over a quarter of the reading thread's CPU time. At 512 KiB those come from the heaps and are
/// reused, while the 1 MiB upload chunks are still mapped and go back to the system when freed:
/// the same CPU time as a threshold of 32 MiB, and memory as flat as at 128 KiB.
fn fixed_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        const THRESHOLD: libc::c_int = 512 * 1024;
        // SAFETY: mallopt only sets an allocator parameter; it is called before any other
        // thread exists and its result (0 on failure) only means the default stays.
        if unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, THRESHOLD) } == 0 {
            eprintln!("warning: could not fix the allocator's mmap threshold");
        }
    }
}
