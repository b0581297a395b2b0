//! A local stand-in for Splunk Enterprise's REST API (SPEC §7): search jobs, streaming export,
//! ingest, Splunk's auth forms and error shapes, a deterministic synthetic generator for
//! millions of events, and fault injection for tests.
//!
//! `spawn` runs it in-process (tests, the demo, benchmarks); `splunk-emulator` is the binary.

mod auth;
mod engine;
mod export;
mod ingest;
mod jobs;
mod pattern;
mod plan;
mod render;
mod routes;
mod server;
pub mod spl;
mod store;
pub mod synthetic;
mod time_arg;
mod timefmt;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use anyhow::Context as _;
use chrono::{DateTime, Utc};

use plan::{Ctx, Filter, Term};
use spl::CmpOp;
use store::{Store, StoredEvent};

pub use pattern::Pattern;

/// The Splunk version the emulator reports (≥ 9.0.2 so clients use the v2 search API).
pub const SPLUNK_VERSION: &str = "9.1.2";

/// How to run an emulator.
#[derive(Debug, Clone)]
pub struct EmulatorOptions {
    /// Listen address; port 0 picks a free port.
    pub bind: SocketAddr,
    /// Accepted as `Authorization: Bearer <token>` or `Splunk <token>` (and HEC token).
    pub token: Option<String>,
    /// Credentials for `auth/login` and HTTP basic auth.
    pub user: String,
    pub password: String,
    /// The index that data files, synthetic events and untargeted ingest land in.
    pub index: String,
    /// Sourcetype of loaded and synthetic events.
    pub sourcetype: String,
    /// NDJSON files of audit events, one per line.
    pub data_files: Vec<PathBuf>,
    /// A deterministic generated data set that needs no memory per event.
    pub synthetic: Option<SyntheticSpec>,
    /// Faults injected from the start (change later with [`RunningEmulator::set_faults`]).
    pub faults: Faults,
    /// PEM certificate chain and key for HTTPS; plain HTTP when `None`.
    pub tls: Option<(PathBuf, PathBuf)>,
}

impl Default for EmulatorOptions {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            token: None,
            user: "admin".into(),
            password: "changeme".into(),
            index: "quay_logs".into(),
            sourcetype: "_json".into(),
            data_files: Vec::new(),
            synthetic: None,
            faults: Faults::default(),
            tls: None,
        }
    }
}

/// The synthetic data set: `count` events spread over `[start, end)` across namespaces
/// `ns0..ns{namespaces-1}` (event `i` is in `ns{i % namespaces}`).
#[derive(Debug, Clone, PartialEq)]
pub struct SyntheticSpec {
    pub count: u64,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub namespaces: u32,
    /// Fraction of the events in the first tenth of the range (events cluster in time: a
    /// release day, a CI storm); 0 spreads them evenly.
    pub skew: f64,
}

/// Injected faults, and what searches cost (a real indexer's scan rate and search quota).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Faults {
    /// Added to every request before it is handled.
    pub latency_ms: u64,
    /// Fraction (0..=1) of search dispatches (job create, export) answered 503 with Splunk's
    /// concurrency-quota message.
    pub rate_503: f64,
    /// Export streams are cut (connection aborted, no `lastrow`) after this many rows.
    pub cut_after: Option<u64>,
    /// Export streams are throttled to this many bytes per second.
    pub slow_bytes_per_sec: Option<u64>,
    /// The first export stream of each search (same SPL and time bounds) is cut after this
    /// many rows; a repeated search is not cut (a transient failure).
    pub cut_once_after: Option<u64>,
    /// An indexer's scan rate: export streams deliver at most this many events per second,
    /// and a search job is done only after scanning the events it selects at this rate.
    pub search_events_per_sec: Option<u64>,
    /// Searches running at once (export streams, jobs not yet done) beyond this get Splunk's
    /// 503 role-quota answer, as `srchJobsQuota` does.
    pub max_concurrent_searches: Option<u64>,
    /// HTTP Event Collector answers 503 "Server is busy" (an indexer queue full, a restart).
    pub hec_unavailable: bool,
}

/// Ground-truth selection for tests, mirroring the filters logexport puts in its queries.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Index name; any index when `None`.
    pub index: Option<String>,
    /// `account` (the namespace).
    pub namespace: Option<String>,
    pub repository: Option<String>,
    /// Inclusive.
    pub earliest: Option<DateTime<Utc>>,
    /// Exclusive.
    pub latest: Option<DateTime<Utc>>,
}

/// Counters tests read to prove how a client used the API.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EmulatorStats {
    /// Search jobs created (`search/jobs`, `search/v2/jobs`, including oneshot).
    pub search_jobs_created: u64,
    /// Export requests that started streaming.
    pub export_requests: u64,
    /// Requests for job `results`/`events` pages.
    pub results_requests: u64,
    /// Requests answered 503 by fault injection.
    pub injected_503: u64,
    /// All HTTP requests received.
    pub http_requests: u64,
    /// Result rows sent in export streams.
    pub events_streamed: u64,
    /// Searches refused with 503 because `max_concurrent_searches` were running.
    pub quota_refused: u64,
    /// The most searches seen running at once.
    pub peak_searches: u64,
    /// Microseconds searches held a place in the quota, summed over every search that ended:
    /// with the wall time, how much of the role's quota was in use.
    pub search_busy_micros: u64,
    /// TCP connections accepted: how well a client keeps its connections.
    pub connections: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    jobs: AtomicU64,
    exports: AtomicU64,
    results: AtomicU64,
    injected_503: AtomicU64,
    requests: AtomicU64,
    events_streamed: AtomicU64,
    quota_refused: AtomicU64,
    running_searches: AtomicU64,
    peak_searches: AtomicU64,
    search_busy_micros: AtomicU64,
    /// Shared with the listener, which counts what it accepts.
    connections: Arc<AtomicU64>,
    /// When each search that ended held its place in the quota (see [`RunningEmulator::search_spans`]).
    search_spans: Mutex<Vec<(std::time::Instant, std::time::Instant)>>,
}

impl Counters {
    pub(crate) fn bump(c: &AtomicU64) {
        c.fetch_add(1, Ordering::Relaxed);
    }
}

/// State shared by every request handler.
pub(crate) struct Shared {
    pub token: Option<String>,
    pub user: String,
    pub password: String,
    pub ctx: Ctx,
    pub store: Store,
    pub faults: RwLock<Faults>,
    pub sessions: Mutex<HashSet<String>>,
    pub jobs: Mutex<HashMap<String, Arc<jobs::Job>>>,
    pub counters: Counters,
    pub next_sid: AtomicU64,
    /// Searches (SPL and time bounds) that have streamed once, for `cut_once_after`.
    pub streamed_once: Mutex<HashSet<String>>,
}

/// One running search counted against `max_concurrent_searches`; freed when dropped.
pub(crate) struct SearchSlot(Arc<Shared>, std::time::Instant);

impl SearchSlot {
    /// Takes a slot, or `None` when the quota is full (the caller answers 503).
    pub(crate) fn acquire(shared: &Arc<Shared>) -> Option<Self> {
        let c = &shared.counters;
        let limit = shared.faults().max_concurrent_searches.unwrap_or(u64::MAX);
        let taken = c
            .running_searches
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            });
        match taken {
            Ok(before) => {
                c.peak_searches.fetch_max(before + 1, Ordering::Relaxed);
                Some(Self(shared.clone(), std::time::Instant::now()))
            }
            Err(_) => {
                Counters::bump(&c.quota_refused);
                None
            }
        }
    }
}

impl Drop for SearchSlot {
    fn drop(&mut self) {
        let ended = std::time::Instant::now();
        let busy = (ended - self.1).as_micros() as u64;
        self.0
            .counters
            .search_busy_micros
            .fetch_add(busy, Ordering::Relaxed);
        self.0
            .counters
            .search_spans
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((self.1, ended));
        self.0
            .counters
            .running_searches
            .fetch_sub(1, Ordering::AcqRel);
    }
}

impl Shared {
    /// Whether this is the first stream of `search` (for `cut_once_after`).
    pub(crate) fn first_stream(&self, search: String) -> bool {
        self.streamed_once
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(search)
    }

    pub(crate) fn faults(&self) -> Faults {
        self.faults
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// A running emulator; dropping it without [`shutdown`](Self::shutdown) leaves it serving
/// until the runtime ends.
pub struct RunningEmulator {
    addr: SocketAddr,
    tls: bool,
    shared: Arc<Shared>,
    server: server::ServerHandle,
}

impl RunningEmulator {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT` (or `https://...` with TLS).
    pub fn base_url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Replaces the injected faults; applies to requests that start afterwards.
    pub fn set_faults(&self, f: Faults) {
        *self
            .shared
            .faults
            .write()
            .unwrap_or_else(|e| e.into_inner()) = f;
    }

    /// Indexes one event (into the emulator's index), as if sent through `receivers/simple`.
    pub fn ingest(&self, event: serde_json::Value) {
        let raw = event.to_string();
        let ctx = &self.shared.ctx;
        self.shared.store.insert(StoredEvent::new(
            raw,
            &ctx.index,
            &ctx.sourcetype,
            Utc::now().timestamp_micros(),
        ));
    }

    /// The events a filter selects, oldest first: indexed events and synthetic ones.
    pub fn events_in(&self, filter: &EventFilter) -> Vec<serde_json::Value> {
        let plan = Self::plan_of(filter);
        let ctx = &self.shared.ctx;
        engine::events(&plan, ctx, &self.shared.store)
            .map(|e| match e {
                plan::EventRef::Stored(s) => s.value(),
                plan::EventRef::Synth(i) => match &ctx.synthetic {
                    Some(spec) => synthetic::event(spec, i),
                    None => serde_json::Value::Null,
                },
            })
            .collect()
    }

    /// The search selecting what `filter` describes, oldest first.
    fn plan_of(filter: &EventFilter) -> plan::Plan {
        let eq = |field: &str, v: &Option<String>| {
            v.as_ref().map(|v| Term::Field {
                field: field.into(),
                op: CmpOp::Eq,
                value: Pattern::new(v.as_str(), true),
            })
        };
        let filter = Filter {
            terms: [
                eq("index", &filter.index),
                eq("account", &filter.namespace),
                eq("repository", &filter.repository),
            ]
            .into_iter()
            .flatten()
            .collect(),
            earliest: filter.earliest.map(|t| t.timestamp_micros()),
            latest: filter.latest.map(|t| t.timestamp_micros()),
        };
        plan::Plan {
            filter,
            desc: false,
            limit: None,
            row_ops: Vec::new(),
            rest: Vec::new(),
            max_results: None,
        }
    }

    /// How many events a filter selects (the ground truth an export's row count must equal).
    pub fn count_in(&self, filter: &EventFilter) -> u64 {
        let plan = Self::plan_of(filter);
        engine::events(&plan, &self.shared.ctx, &self.shared.store).count() as u64
    }

    /// A snapshot of the request counters.
    pub fn stats(&self) -> EmulatorStats {
        let c = &self.shared.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        EmulatorStats {
            search_jobs_created: get(&c.jobs),
            export_requests: get(&c.exports),
            results_requests: get(&c.results),
            injected_503: get(&c.injected_503),
            http_requests: get(&c.requests),
            events_streamed: get(&c.events_streamed),
            quota_refused: get(&c.quota_refused),
            peak_searches: get(&c.peak_searches),
            search_busy_micros: get(&c.search_busy_micros),
            connections: get(&c.connections),
        }
    }

    /// When each search that ended since `since` held its place in the quota, from its start to
    /// its end, in start order: where the role's quota sat idle.
    pub fn search_spans(
        &self,
        since: std::time::Instant,
    ) -> Vec<(std::time::Instant, std::time::Instant)> {
        let spans = self.shared.counters.search_spans.lock();
        let mut spans: Vec<_> = spans
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(start, _)| *start >= since)
            .copied()
            .collect();
        spans.sort();
        spans
    }

    /// Stops listening (later connections are refused) and ends open connections.
    pub async fn shutdown(self) {
        self.server.shutdown().await;
    }
}

fn load_file(path: &PathBuf, ctx: &Ctx, now: i64) -> anyhow::Result<Vec<StoredEvent>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("splunk emulator: cannot read data file {}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(line).with_context(
            || {
                format!(
                    "splunk emulator: {}:{} is not a JSON object",
                    path.display(),
                    n + 1
                )
            },
        )?;
        out.push(StoredEvent::new(
            line.to_string(),
            &ctx.index,
            &ctx.sourcetype,
            now,
        ));
    }
    Ok(out)
}

/// Loads the data and starts serving.
pub async fn spawn(opts: EmulatorOptions) -> anyhow::Result<RunningEmulator> {
    if let Some(s) = &opts.synthetic {
        anyhow::ensure!(
            s.end >= s.start,
            "splunk emulator: --synthetic-end is before --synthetic-start"
        );
        anyhow::ensure!(
            (0.0..=1.0).contains(&s.skew),
            "splunk emulator: --synthetic-skew must be between 0 and 1"
        );
        anyhow::ensure!(
            s.namespaces >= 1,
            "splunk emulator: --synthetic-namespaces must be at least 1"
        );
    }
    let ctx = Ctx::new(&opts.index, &opts.sourcetype, opts.synthetic.clone());
    let store = Store::default();
    let now = Utc::now().timestamp_micros();
    for path in &opts.data_files {
        store.extend(load_file(path, &ctx, now)?);
    }
    let shared = Arc::new(Shared {
        token: opts.token.clone(),
        user: opts.user.clone(),
        password: opts.password.clone(),
        ctx,
        store,
        faults: RwLock::new(opts.faults.clone()),
        sessions: Mutex::new(HashSet::new()),
        jobs: Mutex::new(HashMap::new()),
        counters: Counters::default(),
        next_sid: AtomicU64::new(1),
        streamed_once: Mutex::new(HashSet::new()),
    });
    let router = routes::router(shared.clone());
    let connections = shared.counters.connections.clone();
    let (addr, server) = server::start(opts.bind, opts.tls.as_ref(), router, connections).await?;
    Ok(RunningEmulator {
        addr,
        tls: opts.tls.is_some(),
        shared,
        server,
    })
}
