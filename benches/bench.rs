//! The logexport benchmark: measures, on this machine and in one run, the emulator's export
//! ceiling, end-to-end export throughput and worker memory, HTTP enqueue throughput and latency,
//! queue claim throughput and pickup latency, log-listing latency; prints one Markdown table per section.
//!
//! Run with `cargo bench --bench logexport-bench -- [--quick] [--sizes N,..] [--formats F,..]
//! [--skip-e2e] [--skip-http] [--skip-queue] [--skip-reads]`, or with `-- --month-end` for the
//! month-end section alone. It builds the release `logexport` and
//! `splunk-emulator` binaries first (they run as separate processes) and needs Postgres on
//! 127.0.0.1:5432 (override with `LOGEXPORT_BENCH_DATABASE_URL`, a URL without database name).

#[path = "bench/ceiling.rs"]
mod ceiling;
#[path = "bench/db.rs"]
mod db;
#[path = "bench/e2e.rs"]
mod e2e;
#[path = "bench/http.rs"]
mod http;
#[path = "bench/month_end.rs"]
mod month_end;
#[path = "bench/procs.rs"]
mod procs;
#[path = "bench/queue.rs"]
mod queue;
#[path = "bench/reads.rs"]
mod reads;
#[path = "bench/splunk_rate.rs"]
mod splunk_rate;
#[path = "bench/table.rs"]
mod table;
#[path = "bench/targets.rs"]
mod targets;

use std::time::Duration;

use anyhow::Context;
use clap::Parser;

use e2e::{FormatSpec, TOTAL_EVENTS};

/// Command-line options (after `cargo bench --bench logexport-bench --`).
#[derive(Debug, Parser)]
#[command(name = "logexport-bench")]
struct Args {
    /// Only 100k and 1M events for the end-to-end section, and shorter HTTP runs.
    #[arg(long)]
    quick: bool,
    /// Export sizes in events, comma-separated (at most 10,000,000).
    #[arg(long, value_delimiter = ',')]
    sizes: Option<Vec<u64>>,
    /// Archive formats: json, json+gzip, json+zstd, csv (also ndjson, csv+gzip, csv+zstd, ...).
    #[arg(long, value_delimiter = ',')]
    formats: Option<Vec<String>>,
    /// Runs of the emulator ceiling and of the uncompressed local JSON export at each size; the
    /// pipeline / ceiling ratio compares their medians (this VM's noise moves single runs by up
    /// to ±20 %).
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Skip the emulator ceiling and end-to-end export sections.
    #[arg(long)]
    skip_e2e: bool,
    /// Skip the HTTP enqueue section.
    #[arg(long)]
    skip_http: bool,
    /// Skip the queue claim and pickup-latency sections.
    #[arg(long)]
    skip_queue: bool,
    /// Skip the log-listing (read side) section.
    #[arg(long)]
    skip_reads: bool,
    /// Seconds the HTTP enqueue load runs (default 10, 5 with --quick).
    #[arg(long)]
    http_seconds: Option<u64>,
    /// Concurrent in-flight HTTP requests.
    #[arg(long, default_value_t = 32)]
    http_concurrency: usize,
    /// Do not run `cargo build --release --bins` first (use the binaries already built).
    #[arg(long)]
    no_build: bool,
    /// Also run exports against Splunk's costs: the emulator throttled to an indexer's scan rate
    /// with Splunk's search quota (sliced vs one search vs raw streams, skew, a cut stream,
    /// Quay's algorithm, peak memory). Takes long: Quay's algorithm is quadratic.
    #[arg(long)]
    splunk_rate: bool,
    /// Only the `--splunk-rate` section.
    #[arg(long)]
    only_splunk_rate: bool,
    /// Events over 30 days for the `--splunk-rate` comparisons.
    #[arg(long, default_value_t = 2_000_000)]
    rate_events: u64,
    /// An indexer's scan rate per search for `--splunk-rate`.
    #[arg(long, default_value_t = 50_000)]
    rate_per_sec: u64,
    /// Rounds of the comparison with 3 raw streams (raw streams, then the default export to
    /// each storage, per round); more than one adds a table of every round and the medians.
    #[arg(long, default_value_t = 1)]
    rate_rounds: usize,
    /// Only those rounds: skip one search at a time, skew and the cut stream.
    #[arg(long)]
    rate_rounds_only: bool,
    /// Sizes for Quay's algorithm side by side with logexport.
    #[arg(long, value_delimiter = ',', default_values_t = [200_000u64, 1_000_000])]
    quay_sizes: Vec<u64>,
    /// Sizes for the worker's peak memory at Splunk's rate.
    #[arg(long, value_delimiter = ',', default_values_t = [100_000u64, 1_000_000, 10_000_000])]
    rss_sizes: Vec<u64>,
    /// Only the month-end section: many small exports at once over many namespaces, read by
    /// several worker processes at Splunk's cost (`--rate-per-sec`), and the fairness check.
    #[arg(long)]
    month_end: bool,
    /// Worker processes for the month-end section's 150 small exports.
    #[arg(long, value_delimiter = ',', default_values_t = [1usize, 3, 6])]
    month_end_workers: Vec<usize>,
    /// `export.probe_rows` settings the month-end loads run with, side by side.
    #[arg(long, value_delimiter = ',', default_values_t = [0u64, 2_000])]
    month_end_probe_rows: Vec<u64>,
    /// Which month-end loads run: `small` (150 × 8,000 events), `large` (10 × 107,000),
    /// `single` (1 × 50,000), and `fairness` (100 exports of one namespace, then one of another).
    #[arg(long, value_delimiter = ',', default_values_t = ["small".to_string(), "large".into(), "single".into(), "fairness".into()])]
    month_end_loads: Vec<String>,
    /// Rounds of the month-end loads, one after the other (1, 3, 6 processes, then again); more
    /// than one adds a table of each load's efficiency per round and the median, as one run moves
    /// by a few hundredths on this kind of machine.
    #[arg(long, default_value_t = 1)]
    month_end_rounds: usize,
    /// A setting for the month-end worker processes as `LOGEXPORT_…=value` (repeatable), to
    /// compare settings such as `LOGEXPORT_DATABASE__MAX_CONNECTIONS=4` in the same run of the
    /// emulator's cost model.
    #[arg(long = "month-end-set", value_parser = setting)]
    month_end_settings: Vec<(String, String)>,
    /// Passed by `cargo bench` to every bench binary; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// `KEY=value`, the key a `LOGEXPORT_` setting.
fn setting(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if key.starts_with("LOGEXPORT_") => Ok((key.into(), value.into())),
        _ => Err(format!("{text:?} is not LOGEXPORT_<KEY>=<value>")),
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    logexport::telemetry::install_crypto_provider();
    let sizes = match &args.sizes {
        Some(s) => s.clone(),
        None if args.quick => vec![100_000, 1_000_000],
        None => vec![100_000, 1_000_000, 10_000_000],
    };
    anyhow::ensure!(
        sizes.iter().all(|&n| n > 0 && n <= TOTAL_EVENTS),
        "--sizes must be between 1 and {TOTAL_EVENTS}"
    );
    let formats = match &args.formats {
        Some(f) => f
            .iter()
            .map(|s| FormatSpec::parse(s))
            .collect::<anyhow::Result<Vec<_>>>()?,
        None => ["json", "json+gzip", "json+zstd", "csv"]
            .iter()
            .map(|s| FormatSpec::parse(s))
            .collect::<anyhow::Result<Vec<_>>>()?,
    };

    print_header();
    let binaries = procs::Binaries::prepare(!args.no_build)?;
    let databases = db::Databases::from_env();

    let mut failures = Vec::new();
    if args.month_end {
        let mut loads = Vec::new();
        let wanted = |name: &str| args.month_end_loads.iter().any(|l| l == name);
        for &probe_rows in &args.month_end_probe_rows {
            for &workers in &args.month_end_workers {
                if wanted("small") {
                    loads.push(month_end::Load {
                        exports: 150,
                        namespaces: 50,
                        events: 8_000,
                        workers,
                        probe_rows,
                    });
                }
            }
            if wanted("large") {
                loads.push(month_end::Load {
                    exports: 10,
                    namespaces: 5,
                    events: 107_000,
                    workers: 3,
                    probe_rows,
                });
            }
            if wanted("single") {
                loads.push(month_end::Load {
                    exports: 1,
                    namespaces: 1,
                    events: 50_000,
                    workers: 1,
                    probe_rows,
                });
            }
        }
        let section = month_end::MonthEnd {
            binaries: &binaries,
            databases: &databases,
            per_sec: args.rate_per_sec.max(1),
            loads,
            rounds: args.month_end_rounds.max(1),
            fairness: wanted("fairness"),
            settings: args.month_end_settings.clone(),
        };
        let result = section.run().await;
        databases.drop_all().await;
        return result;
    }
    if args.splunk_rate || args.only_splunk_rate {
        let spec = splunk_rate::RateSpec {
            events_per_sec: args.rate_per_sec.max(1),
            events: args.rate_events.max(1),
            // 0 skips a section: `--quay-sizes 0 --rss-sizes 0`.
            quay_sizes: args.quay_sizes.iter().copied().filter(|n| *n > 0).collect(),
            rss_sizes: args.rss_sizes.iter().copied().filter(|n| *n > 0).collect(),
            rounds: args.rate_rounds.max(1),
            rounds_only: args.rate_rounds_only,
        };
        if let Err(e) = splunk_rate::run(&binaries, &databases, &spec).await {
            failures.push(format!("Splunk-rate exports: {e:#}"));
        }
    }
    if args.only_splunk_rate {
        databases.drop_all().await;
        return if failures.is_empty() {
            Ok(())
        } else {
            anyhow::bail!("some sections failed:\n  {}", failures.join("\n  "))
        };
    }
    if !args.skip_e2e
        && let Err(e) = e2e::run(&binaries, &databases, &sizes, &formats, args.repeat.max(1)).await
    {
        failures.push(format!("end-to-end: {e:#}"));
    }
    if !args.skip_reads
        && let Err(e) = reads::run(&databases).await
    {
        failures.push(format!("log listings: {e:#}"));
    }
    if !args.skip_http {
        let default = if args.quick { 5 } else { 10 };
        let seconds = Duration::from_secs(args.http_seconds.unwrap_or(default));
        if let Err(e) = http::run(&databases, seconds, args.http_concurrency.max(1)).await {
            failures.push(format!("HTTP enqueue: {e:#}"));
        }
    }
    if !args.skip_queue
        && let Err(e) = queue::run(&databases).await
    {
        failures.push(format!("queue: {e:#}"));
    }
    databases.drop_all().await;
    if failures.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("some sections failed:\n  {}", failures.join("\n  "))
    }
}

/// The machine facts and the command line, so a table can be reproduced and judged.
fn print_header() {
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let memory = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or_else(
            || "?".into(),
            |kib| format!("{:.1} GiB", kib as f64 / 1048576.0),
        );
    let load = std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let command = if args.is_empty() {
        "cargo bench --bench logexport-bench".to_owned()
    } else {
        format!("cargo bench --bench logexport-bench -- {}", args.join(" "))
    };
    println!("# logexport benchmark\n");
    println!(
        "Machine: {cpus} CPUs ({model}), {memory} RAM, load average at start {load}; {}\n",
        chrono::Utc::now().format("%Y-%m-%d %H:%M UTC")
    );
    println!("Command: `{command}`\n");
}
