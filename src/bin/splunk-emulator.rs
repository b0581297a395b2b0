//! `splunk-emulator`: a local stand-in for Splunk's REST API (see `logexport::emulator`).

use std::net::SocketAddr;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use clap::Parser;
use logexport::emulator::{self, EmulatorOptions, Faults, SyntheticSpec};

/// Serves Splunk's search, export and ingest REST API from local data.
#[derive(Debug, Parser)]
#[command(name = "splunk-emulator", version)]
struct Args {
    /// Listen address.
    #[arg(long, default_value = "127.0.0.1:8089")]
    bind: SocketAddr,
    /// Token accepted as `Authorization: Bearer <token>` or `Splunk <token>` (also for HEC).
    #[arg(long, env = "SPLUNK_EMULATOR_TOKEN")]
    token: Option<String>,
    /// User for auth/login and HTTP basic auth.
    #[arg(long, default_value = "admin")]
    user: String,
    /// Password for auth/login and HTTP basic auth.
    #[arg(long, default_value = "changeme", env = "SPLUNK_EMULATOR_PASSWORD")]
    password: String,
    /// Index that loaded and synthetic events belong to.
    #[arg(long, default_value = "quay_logs")]
    index: String,
    /// Sourcetype of loaded and synthetic events.
    #[arg(long, default_value = "_json")]
    sourcetype: String,
    /// NDJSON file of Quay audit events (repeatable).
    #[arg(long = "data")]
    data: Vec<PathBuf>,
    /// Number of synthetic events.
    #[arg(long)]
    synthetic: Option<u64>,
    /// First synthetic timestamp (RFC 3339).
    #[arg(long, default_value = "2024-01-01T00:00:00Z")]
    synthetic_start: DateTime<Utc>,
    /// End of the synthetic range, exclusive (RFC 3339).
    #[arg(long, default_value = "2024-02-01T00:00:00Z")]
    synthetic_end: DateTime<Utc>,
    /// Number of synthetic namespaces (ns0..ns{K-1}).
    #[arg(long, default_value_t = 10)]
    synthetic_namespaces: u32,
    /// Fraction of the synthetic events in the first tenth of the range (0: evenly spread).
    #[arg(long, default_value_t = 0.0)]
    synthetic_skew: f64,
    /// An indexer's scan rate: export streams deliver at most N events/s and a search job is
    /// done only after scanning its events at N/s (a real indexer: about 50000).
    #[arg(long)]
    search_events_per_sec: Option<u64>,
    /// Searches running at once beyond N get Splunk's 503 role-quota answer (srchJobsQuota).
    #[arg(long)]
    max_concurrent_searches: Option<u64>,
    /// Cut the first export stream of each search after N rows; a repeated search is not cut.
    #[arg(long)]
    fault_cut_once_after: Option<u64>,
    /// Added latency per request, in milliseconds.
    #[arg(long, default_value_t = 0)]
    fault_latency_ms: u64,
    /// Fraction of search dispatches answered 503 (concurrency quota).
    #[arg(long, default_value_t = 0.0)]
    fault_503_rate: f64,
    /// Cut export streams after this many rows.
    #[arg(long)]
    fault_cut_after: Option<u64>,
    /// Throttle export streams to this many bytes per second.
    #[arg(long)]
    fault_slow_bytes_per_sec: Option<u64>,
    /// PEM certificate chain for HTTPS.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for HTTPS.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let a = Args::parse();
    anyhow::ensure!(
        (0.0..=1.0).contains(&a.fault_503_rate),
        "--fault-503-rate must be between 0 and 1"
    );
    let opts = EmulatorOptions {
        bind: a.bind,
        token: a.token,
        user: a.user,
        password: a.password,
        index: a.index,
        sourcetype: a.sourcetype,
        data_files: a.data,
        synthetic: a.synthetic.map(|count| SyntheticSpec {
            count,
            start: a.synthetic_start,
            end: a.synthetic_end,
            namespaces: a.synthetic_namespaces,
            skew: a.synthetic_skew,
        }),
        faults: Faults {
            latency_ms: a.fault_latency_ms,
            rate_503: a.fault_503_rate,
            cut_after: a.fault_cut_after,
            slow_bytes_per_sec: a.fault_slow_bytes_per_sec,
            cut_once_after: a.fault_cut_once_after,
            search_events_per_sec: a.search_events_per_sec.filter(|n| *n > 0),
            max_concurrent_searches: a.max_concurrent_searches,
            hec_unavailable: false,
        },
        tls: a.tls_cert.zip(a.tls_key),
    };
    let running = emulator::spawn(opts).await?;
    // One line on stdout so scripts can wait for readiness and learn the port.
    println!("splunk-emulator listening on {}", running.base_url());
    // SIGTERM too: as a container's PID 1 (`docker stop`, Kubernetes) that is the signal sent.
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result?,
        _ = terminate.recv() => {}
    }
    running.shutdown().await;
    eprintln!("splunk-emulator stopped");
    Ok(())
}
