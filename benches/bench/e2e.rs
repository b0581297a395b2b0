//! Sections 1 and 2: the emulator ceiling, then real exports by fresh `logexport work`
//! processes, with their throughput and peak memory.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use logexport::config::Config;
use logexport::domain::{Compression, DateRange, ExportFormat, ExportScope, Namespace};
use logexport::queue::{ExportRow, JobState, NewExport, storage};
use logexport::storage::ObjectStore;
use sqlx::PgPool;

use crate::ceiling;
use crate::db::Databases;
use crate::procs::{Binaries, Emulator, EmulatorSpec, Worker};
use crate::table::{Table, rate, run_rates, thousands, verdict};
pub use crate::targets::FormatSpec;
use crate::targets::{S3Env, Target};

/// Events the emulator serves; sizes select a prefix of them.
pub const TOTAL_EVENTS: u64 = 10_000_000;
const SYNTHETIC_START: &str = "2024-01-01T00:00:00Z";
const SYNTHETIC_END: &str = "2024-01-31T00:00:00Z";
const MIB: f64 = 1024.0 * 1024.0;
/// S3 runs write real multipart uploads; keep them to sizes that finish quickly.
const S3_MAX_EVENTS: u64 = 1_000_000;

/// The instants covering exactly the first `n` synthetic events: event `i` is at
/// `start + i * (end - start) / TOTAL_EVENTS` (`emulator::synthetic::time_of`) and the
/// export range is end-exclusive, so `[start, start + n * span / TOTAL)` holds events `0..n`.
fn range_for(n: u64) -> anyhow::Result<(DateTime<Utc>, DateTime<Utc>)> {
    let start: DateTime<Utc> = SYNTHETIC_START.parse()?;
    let end: DateTime<Utc> = SYNTHETIC_END.parse()?;
    let span = (end - start).num_microseconds().context("span")? as i128;
    let offset = (i128::from(n) * span / i128::from(TOTAL_EVENTS)) as i64;
    Ok((start, start + chrono::Duration::microseconds(offset)))
}

/// What one export run measured.
struct ExportRun {
    export_seconds: f64,
    wall_seconds: f64,
    bytes: u64,
    peak_rss: u64,
}

/// Shared context of the end-to-end runs.
struct Bench<'a> {
    binaries: &'a Binaries,
    emulator: &'a Emulator,
    db_url: String,
    pool: PgPool,
    scratch: PathBuf,
}

/// Runs sections 1 and 2 and prints their tables.
pub async fn run(
    binaries: &Binaries,
    databases: &Databases,
    sizes: &[u64],
    formats: &[FormatSpec],
    repeat: usize,
) -> anyhow::Result<()> {
    let scratch = std::env::temp_dir().join(format!("logexport-bench-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).context("creating the scratch directory")?;
    let emulator = Emulator::start(
        &binaries.emulator,
        &EmulatorSpec {
            events: TOTAL_EVENTS,
            start: SYNTHETIC_START,
            end: SYNTHETIC_END,
            log: &scratch.join("emulator.log"),
        },
    )
    .await?;
    let result = async {
        let ceilings = ceiling_section(&emulator, sizes, repeat).await?;
        let (db_url, pool) = databases.fresh("e2e", 4).await?;
        let bench = Bench {
            binaries,
            emulator: &emulator,
            db_url,
            pool,
            scratch: scratch.clone(),
        };
        export_section(&bench, sizes, formats, &ceilings, repeat).await
    }
    .await;
    emulator.stop().await;
    if result.is_ok() {
        let _ = std::fs::remove_dir_all(&scratch);
    } else {
        eprintln!("logs kept in {}", scratch.display());
    }
    result
}

async fn ceiling_section(
    emulator: &Emulator,
    sizes: &[u64],
    repeat: usize,
) -> anyhow::Result<BTreeMap<u64, f64>> {
    let client = reqwest::Client::builder()
        .build()
        .context("building the HTTP client")?;
    let mut table = Table::new(
        "Emulator ceiling (export endpoint read and discarded; the median of the runs)",
        &["events", "seconds", "events/s", "MB/s", "lines read"],
    );
    let mut rates = BTreeMap::new();
    for &n in sizes {
        let (start, end) = range_for(n)?;
        let mut runs = Vec::new();
        for _ in 0..repeat {
            let run = ceiling::read_export(&client, emulator, start, end).await?;
            anyhow::ensure!(
                run.lines >= n,
                "the emulator streamed {} lines for {n} events",
                run.lines
            );
            runs.push(run);
        }
        runs.sort_by_key(|r| r.elapsed);
        let run = &runs[runs.len() / 2];
        let secs = run.elapsed.as_secs_f64();
        rates.insert(n, n as f64 / secs);
        table.row(vec![
            thousands(n),
            format!("{secs:.2}"),
            rate(n as f64 / secs),
            format!("{:.1}", run.bytes as f64 / 1e6 / secs),
            thousands(run.lines),
        ]);
        if repeat > 1 {
            let every = run_rates(n, runs.iter().map(|r| r.elapsed.as_secs_f64()));
            table.note(format!(
                "- {} events, every run: {every} events/s",
                thousands(n)
            ));
        }
    }
    table.print();
    Ok(rates)
}

async fn export_section(
    bench: &Bench<'_>,
    sizes: &[u64],
    formats: &[FormatSpec],
    ceilings: &BTreeMap<u64, f64>,
    repeat: usize,
) -> anyhow::Result<()> {
    let mut table = Table::new(
        "End-to-end export (fresh `logexport work` process, concurrency 1; local JSON: the median of the runs, the highest peak RSS)",
        &[
            "storage",
            "format",
            "events",
            "export s",
            "wall s",
            "logs/s",
            "MB written",
            "peak RSS MiB",
        ],
    );
    let mut rss: BTreeMap<String, Vec<(u64, u64)>> = BTreeMap::new();
    let mut samples = Vec::new();
    let mut json_rates = Vec::new();
    let local_dir = bench.scratch.join("archives");
    std::fs::create_dir_all(&local_dir).context("creating the archive directory")?;
    let s3 = S3Env::from_env();
    let mut targets = vec![Target::Local(&local_dir)];
    if let Some(s3) = &s3 {
        targets.push(Target::S3(s3));
    }
    for target in &targets {
        for &spec in formats {
            for &n in sizes {
                if matches!(target, Target::S3(_))
                    && (n > S3_MAX_EVENTS || spec.format != ExportFormat::Json)
                {
                    continue;
                }
                // The runs the ratio compares are repeated like the ceiling; the others run once.
                let compared = matches!(target, Target::Local(_))
                    && spec.format == ExportFormat::Json
                    && spec.compression == Compression::None;
                let mut runs = Vec::new();
                for _ in 0..if compared { repeat } else { 1 } {
                    runs.push(export_once(bench, target, spec, n).await.with_context(|| {
                        format!("{} {} export of {n} events", target.name(), spec.label())
                    })?);
                }
                runs.sort_by(|a, b| a.export_seconds.total_cmp(&b.export_seconds));
                if runs.len() > 1 {
                    let every = run_rates(n, runs.iter().map(|r| r.export_seconds));
                    samples.push(format!(
                        "- {} {} at {} events, every run: {every} logs/s",
                        target.name(),
                        spec.label(),
                        thousands(n),
                    ));
                }
                // The median run, with the highest peak memory of all the runs.
                let peak_rss = runs.iter().map(|r| r.peak_rss).max().unwrap_or(0);
                let run = ExportRun {
                    peak_rss,
                    ..runs.swap_remove(runs.len() / 2)
                };
                let logs_per_sec = n as f64 / run.export_seconds;
                if matches!(target, Target::Local(_)) {
                    rss.entry(spec.label()).or_default().push((n, run.peak_rss));
                    if spec.format == ExportFormat::Json && spec.compression == Compression::None {
                        json_rates.push((n, logs_per_sec));
                    }
                }
                table.row(vec![
                    target.name().into(),
                    spec.label(),
                    thousands(n),
                    format!("{:.2}", run.export_seconds),
                    format!("{:.2}", run.wall_seconds),
                    rate(logs_per_sec),
                    format!("{:.1}", run.bytes as f64 / 1e6),
                    format!("{:.1}", run.peak_rss as f64 / MIB),
                ]);
            }
        }
    }
    if let Some(s3) = &s3 {
        table.note(format!(
            "S3 runs ({}, bucket {}): json formats up to {} events.",
            s3.endpoint,
            s3.bucket,
            thousands(S3_MAX_EVENTS)
        ));
    } else {
        table.note("S3 runs skipped: set LOGEXPORT_TEST_S3_* (`source .test-env/garage.env`).");
    }
    for line in samples {
        table.note(line);
    }
    for (n, logs_per_sec) in json_rates {
        if let Some(ceiling) = ceilings.get(&n) {
            let ratio = logs_per_sec / ceiling * 100.0;
            table.note(format!(
                "- json pipeline / emulator ceiling at {} events ({}): {ratio:.1} % (target ≥ 60 %: {})",
                thousands(n),
                if repeat > 1 {
                    format!("medians of {repeat} runs")
                } else {
                    "one run each".to_owned()
                },
                verdict(ratio >= 60.0)
            ));
        }
    }
    for (label, points) in &rss {
        let (Some(first), Some(last)) = (points.iter().min(), points.iter().max()) else {
            continue;
        };
        if first.0 == last.0 {
            continue;
        }
        let growth = last.1 as f64 / first.1 as f64 * 100.0 - 100.0;
        let ok = growth < 20.0 && (last.1 as f64) < 100.0 * MIB;
        table.note(format!(
            "- {label} peak RSS {} → {} events: {:.1} → {:.1} MiB, {growth:+.1} % (target < 20 % and < 100 MiB: {})",
            thousands(first.0),
            thousands(last.0),
            first.1 as f64 / MIB,
            last.1 as f64 / MIB,
            verdict(ok)
        ));
    }
    table.print();
    Ok(())
}

/// One export by a fresh worker process: enqueue, wait for success, measure, verify, clean up.
async fn export_once(
    bench: &Bench<'_>,
    target: &Target<'_>,
    spec: FormatSpec,
    n: u64,
) -> anyhow::Result<ExportRun> {
    let emulator = bench.emulator;
    let mut env = worker_env(&bench.db_url, emulator.port, &emulator.token);
    let mut config = Config::default();
    target.configure(&mut env, &mut config);
    let store: Arc<dyn ObjectStore> = logexport::storage::from_config(&config).await?;

    let (start, end) = range_for(n)?;
    let export = org_export(start, end, spec)?;
    let log = bench
        .scratch
        .join(format!("worker-{}-{}-{n}.log", target.name(), spec.label()));
    let (row, wall_seconds, usage) = run_export(
        &bench.binaries.logexport,
        &bench.pool,
        &env,
        &export,
        &bench.scratch,
        &log,
    )
    .await?;

    let (Some(started), Some(finished)) = (row.started_at, row.finished_at) else {
        anyhow::bail!("a succeeded export without started_at/finished_at");
    };
    let export_seconds = (finished - started).num_microseconds().unwrap_or(0) as f64 / 1e6;
    anyhow::ensure!(
        row.logs_exported == n as i64 && row.logs_skipped == 0,
        "exported {} logs ({} skipped), expected {n}",
        row.logs_exported,
        row.logs_skipped
    );
    let key = row.object_key.context("no object key")?;
    let size = store.size(&key).await?.context("the archive is missing")?;
    anyhow::ensure!(
        size == row.bytes_written as u64 && size > 0,
        "archive has {size} bytes, the job recorded {}",
        row.bytes_written
    );
    if let Target::Local(dir) = target {
        check_prefix(&dir.join(key.replace('/', "_")), spec)?;
    }
    store.delete(&key).await?;
    Ok(ExportRun {
        export_seconds,
        wall_seconds,
        bytes: size,
        peak_rss: usage.peak_rss,
    })
}

/// A worker's settings for the emulator at `port`: one export at a time, no e-mail.
pub fn worker_env(db_url: &str, port: u16, token: &str) -> Vec<(String, String)> {
    [
        ("DATABASE_URL", db_url),
        ("LOGEXPORT_SPLUNK__HOST", "127.0.0.1"),
        ("LOGEXPORT_SPLUNK__PORT", &port.to_string()),
        ("LOGEXPORT_SPLUNK__URL_SCHEME", "http"),
        ("LOGEXPORT_SPLUNK__BEARER_TOKEN", token),
        ("LOGEXPORT_EMAIL__TRANSPORT", "none"),
        ("LOGEXPORT_WORKER__CONCURRENCY", "1"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// An export of organization `ns0` over `[start, end)`, tried once.
pub fn org_export(
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    spec: FormatSpec,
) -> anyhow::Result<NewExport> {
    Ok(NewExport {
        scope: ExportScope::Organization,
        namespace: Namespace::parse("ns0")?,
        repository: None,
        requested_by: "bench".into(),
        range: DateRange {
            start,
            end,
            timezone: chrono_tz::Tz::UTC,
        },
        format: spec.format,
        compression: spec.compression,
        callback_url: None,
        callback_email: None,
        idempotency_key: None,
        max_attempts: 1,
        performer: None,
        kinds: Vec::new(),
    })
}

/// What a worker process used for one export.
pub struct WorkerUsage {
    pub peak_rss: u64,
    /// CPU seconds (user + system), startup included.
    pub cpu_seconds: f64,
}

/// Runs `export` with a fresh `logexport work` process configured by `env` and waits for it to
/// succeed; returns its row, the wall time from enqueue and what the worker used.
pub async fn run_export(
    logexport: &Path,
    pool: &PgPool,
    env: &[(String, String)],
    export: &NewExport,
    scratch: &Path,
    log: &Path,
) -> anyhow::Result<(ExportRow, f64, WorkerUsage)> {
    let mut worker = Worker::start(logexport, env, scratch, log)?;
    let began = Instant::now();
    let id = storage::enqueue(pool, export).await?;
    let row = loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let row = storage::get(pool, id)
            .await?
            .context("the export row disappeared")?;
        match row.state() {
            JobState::Succeeded => break row,
            JobState::Queued | JobState::Running => {}
            other => anyhow::bail!(
                "the export ended {} ({}); see {}",
                other.as_str(),
                row.last_error.unwrap_or_default(),
                log.display()
            ),
        }
        anyhow::ensure!(
            worker.is_running(),
            "the worker exited; see {}",
            log.display()
        );
    };
    let wall_seconds = began.elapsed().as_secs_f64();
    let usage = WorkerUsage {
        peak_rss: worker.peak_rss()?,
        cpu_seconds: worker.cpu_seconds()?,
    };
    worker.stop().await;
    Ok((row, wall_seconds, usage))
}

/// A cheap content check that the file is the requested encoding.
fn check_prefix(path: &Path, spec: FormatSpec) -> anyhow::Result<()> {
    let mut head = [0u8; 16];
    let mut file =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    file.read_exact(&mut head).context("reading the archive")?;
    let expected: &[u8] = match (spec.compression, spec.format) {
        (Compression::Gzip, _) => &[0x1f, 0x8b],
        // The zstd frame magic number, little-endian 0xFD2FB528.
        (Compression::Zstd, _) => &[0x28, 0xb5, 0x2f, 0xfd],
        (Compression::None, ExportFormat::Json) => b"{",
        (Compression::None, ExportFormat::Csv) => b"datetime,kind,",
        (Compression::None, ExportFormat::Ndjson) => b"{",
    };
    anyhow::ensure!(
        head.starts_with(expected),
        "{} does not start like a {} archive",
        path.display(),
        spec.label()
    );
    Ok(())
}
