//! The separate processes: the release `splunk-emulator` and `logexport work`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// The two release binaries the benchmark runs as processes.
pub struct Binaries {
    pub logexport: PathBuf,
    pub emulator: PathBuf,
}

impl Binaries {
    /// Finds the binaries next to this bench executable (`target/release/`), building them
    /// first with `cargo build --release --bins` when `build` is set.
    pub fn prepare(build: bool) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("locating the bench executable")?;
        // The bench runs from target/release/deps/; the binaries sit in target/release/.
        let release = exe
            .parent()
            .and_then(Path::parent)
            .context("the bench executable is not inside target/release/deps")?
            .to_path_buf();
        if build {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let target_dir = release.parent().unwrap_or(&release).to_path_buf();
            eprintln!("building the release binaries (cargo build --release --bins)...");
            let status = std::process::Command::new(cargo)
                .args(["build", "--release", "--bins"])
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .env("CARGO_TARGET_DIR", &target_dir)
                .status()
                .context("running cargo build --release --bins")?;
            anyhow::ensure!(status.success(), "cargo build --release --bins failed");
        }
        let found = Self {
            logexport: release.join("logexport"),
            emulator: release.join("splunk-emulator"),
        };
        for bin in [&found.logexport, &found.emulator] {
            anyhow::ensure!(
                bin.is_file(),
                "{} is missing: run `cargo build --release --bins` (or drop --no-build)",
                bin.display()
            );
        }
        Ok(found)
    }
}

/// Sends `signal` to a child we started.
fn signal(child: &Child, signal: libc::c_int) {
    if let Some(pid) = child.id() {
        // SAFETY: kill(2) on the pid of our own, not yet reaped, child process.
        unsafe {
            libc::kill(pid as libc::pid_t, signal);
        }
    }
}

/// Asks a child to stop with `sig`, and kills it when it has not exited after `grace`.
async fn stop_child(mut child: Child, sig: libc::c_int, grace: Duration) {
    signal(&child, sig);
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        let _ = child.kill().await;
    }
}

/// A running emulator with synthetic events.
pub struct Emulator {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub base_url: String,
    pub port: u16,
    pub token: String,
}

/// What the emulator serves.
pub struct EmulatorSpec<'a> {
    pub events: u64,
    pub start: &'a str,
    pub end: &'a str,
    pub log: &'a Path,
}

impl Emulator {
    /// Starts the emulator on a free port and waits for its readiness line.
    pub async fn start(bin: &Path, spec: &EmulatorSpec<'_>) -> anyhow::Result<Self> {
        let token = format!("bench-{}", uuid::Uuid::new_v4().simple());
        let log = std::fs::File::create(spec.log).context("creating the emulator log file")?;
        let mut child = Command::new(bin)
            .args(["--bind", "127.0.0.1:0", "--token", &token])
            .args(["--synthetic", &spec.events.to_string()])
            .args(["--synthetic-start", spec.start, "--synthetic-end", spec.end])
            .args(["--synthetic-namespaces", "1"])
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let stdout = child.stdout.take().context("emulator stdout")?;
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .context("the emulator did not get ready within 30 s")?
            .context("reading the emulator's stdout")?
            .with_context(|| {
                format!(
                    "the emulator exited before getting ready; see {}",
                    spec.log.display()
                )
            })?;
        let base_url = line
            .strip_prefix("splunk-emulator listening on ")
            .with_context(|| format!("unexpected emulator output {line:?}"))?
            .trim_end_matches('/')
            .to_owned();
        let port = url::Url::parse(&base_url)
            .ok()
            .and_then(|u| u.port())
            .with_context(|| format!("no port in the emulator URL {base_url}"))?;
        Ok(Self {
            child,
            base_url,
            port,
            token,
        })
    }

    /// Stops the emulator (it shuts down on SIGINT).
    pub async fn stop(self) {
        stop_child(self.child, libc::SIGINT, Duration::from_secs(5)).await;
    }
}

/// A `logexport work` process configured through the environment.
pub struct Worker {
    child: Child,
}

impl Worker {
    /// Starts `logexport work` in `dir` (so no config file is picked up) with exactly `env` as
    /// its `LOGEXPORT_*`/`DATABASE_URL` settings, logging to `log`.
    pub fn start(
        bin: &Path,
        env: &[(String, String)],
        dir: &Path,
        log: &Path,
    ) -> anyhow::Result<Self> {
        let log = std::fs::File::create(log).context("creating the worker log file")?;
        let mut command = Command::new(bin);
        command.arg("work").current_dir(dir);
        // Variables such as LOGEXPORT_TEST_S3_* are not configuration keys and would be refused.
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("LOGEXPORT_") {
                command.env_remove(key);
            }
        }
        let child = command
            .env_remove("DATABASE_URL")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("starting {} work", bin.display()))?;
        Ok(Self { child })
    }

    /// The process's peak resident set size (`VmHWM`) in bytes.
    pub fn peak_rss(&self) -> anyhow::Result<u64> {
        let pid = self.child.id().context("the worker has exited")?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .context("reading the worker's /proc status")?;
        let kib: u64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .context("no VmHWM in /proc/<pid>/status")?;
        Ok(kib * 1024)
    }

    /// CPU seconds the process has used so far (user + system).
    pub fn cpu_seconds(&self) -> anyhow::Result<f64> {
        let pid = self.child.id().context("the worker has exited")?;
        cpu_seconds(&pid.to_string())
    }

    /// Whether the process is still running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Stops the worker gracefully (SIGTERM).
    pub async fn stop(self) {
        stop_child(self.child, libc::SIGTERM, Duration::from_secs(10)).await;
    }
}

/// CPU seconds (user + system) process `pid` (or `self`) has used, from `/proc/<pid>/stat`.
pub fn cpu_seconds(pid: &str) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name is in parentheses and may hold spaces: fields are counted after it.
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line, 12 and 13 after the name.
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<u64>().ok());
    let (Some(user), Some(system)) = (ticks(11), ticks(12)) else {
        anyhow::bail!("unexpected /proc/{pid}/stat: {stat}");
    };
    Ok((user + system) as f64 / ticks_per_second())
}

/// The kernel's clock ticks per second, the unit of the CPU times in `/proc`.
fn ticks_per_second() -> f64 {
    // SAFETY: sysconf only reads a constant of the running system.
    unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64
}

/// CPU seconds used so far by every running process called `name` (`/proc/<pid>/comm`), such
/// as the test Garage the S3 exports write to.
pub fn cpu_seconds_named(name: &str) -> f64 {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|pid| pid.bytes().all(|b| b.is_ascii_digit()))
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == name)
        })
        .filter_map(|pid| cpu_seconds(&pid).ok())
        .sum()
}

/// Seconds every core of the machine has spent idle (idle + iowait in `/proc/stat`), summed.
pub fn machine_idle_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return 0.0;
    };
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    (ticks.get(3).unwrap_or(&0) + ticks.get(4).unwrap_or(&0)) as f64 / ticks_per_second()
}
