//! Month-end (`--month-end`): many small exports requested at once over many namespaces, read
//! by K `logexport work` processes from a Splunk that costs what a default role costs (the
//! emulator at 50,000 events/s per search, 3 searches at once). Splunk's limit is what the role
//! can read: total events / (3 × 50,000/s); efficiency is that limit over the wall time from the
//! first request to the last success. Every export's row count is checked against the events
//! its filter selects.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use logexport::domain::{ExportId, Namespace};
use logexport::emulator::{
    self, EmulatorOptions, EventFilter, Faults, RunningEmulator, SyntheticSpec,
};
use logexport::queue::{ExportRow, JobState, NewExport, storage};
use logexport::storage::manifest_key;
use sqlx::PgPool;

use crate::db::Databases;
use crate::e2e::{org_export, worker_env};
use crate::procs::{Binaries, Worker, cpu_seconds, cpu_seconds_named, machine_idle_seconds};
use crate::table::{Table, quantile, thousands, verdict};
use crate::targets::{FormatSpec, S3Env, Target};

const TOKEN: &str = "month-end-bench";
const START: &str = "2024-01-01T00:00:00Z";
const END: &str = "2024-01-31T00:00:00Z";

/// One load: `exports` exports of `events` events each, spread over `namespaces`, read by
/// `workers` processes.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    pub exports: usize,
    pub namespaces: usize,
    pub events: u64,
    pub workers: usize,
    /// `export.probe_rows` for the workers.
    pub probe_rows: u64,
}

/// What one load measured.
struct Measured {
    wall: f64,
    limit: f64,
    median: f64,
    p95: f64,
    searches: u64,
    quota_busy: f64,
    idle: Idle,
    /// Milliseconds from the end of the search before to each search's start: a place's
    /// hand-over (median, 90th percentile; see [`handover_gaps`]).
    handover: (f64, f64),
    cpu: CpuUse,
}

/// CPU seconds spent, by whom: the worker processes, Postgres, Garage, this bench (with the
/// emulator it runs), and what the machine's cores left idle.
#[derive(Debug, Clone, Copy, Default)]
struct CpuUse {
    workers: f64,
    postgres: f64,
    garage: f64,
    bench: f64,
    idle: f64,
}

impl CpuUse {
    /// The counters now; `since` turns two readings into a load's use.
    fn now(workers: &[Worker]) -> Self {
        Self {
            workers: workers.iter().filter_map(|w| w.cpu_seconds().ok()).sum(),
            postgres: cpu_seconds_named("postgres"),
            garage: cpu_seconds_named("garage"),
            bench: cpu_seconds("self").unwrap_or(0.0),
            idle: machine_idle_seconds(),
        }
    }

    fn since(self, before: Self) -> Self {
        Self {
            workers: self.workers - before.workers,
            postgres: self.postgres - before.postgres,
            garage: self.garage - before.garage,
            bench: self.bench - before.bench,
            idle: self.idle - before.idle,
        }
    }
}

/// Where the role's quota sat idle during a load, in seconds of the whole quota (idle places ×
/// seconds / quota): before it first filled, between then and the last moment it was full, and
/// after. With the seconds it was in use / quota, they add up to the wall time.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct Idle {
    pub start: f64,
    pub between: f64,
    pub end: f64,
}

impl Idle {
    /// The idle quota over `[t0, t1]` given when each search held a place (`quota` places).
    pub(crate) fn of(spans: &[(Instant, Instant)], t0: Instant, t1: Instant, quota: usize) -> Self {
        let at = |t: Instant| t.clamp(t0, t1).duration_since(t0).as_secs_f64();
        let mut edges: Vec<(f64, i64)> = spans
            .iter()
            .flat_map(|(a, b)| [(at(*a), 1), (at(*b), -1)])
            .collect();
        // Ends before starts at the same instant: a place handed over is not counted twice.
        edges.sort_by(|x, y| x.0.total_cmp(&y.0).then(x.1.cmp(&y.1)));
        let wall = at(t1);
        let full = quota as i64;
        // (from, to, idle places) for every stretch of constant use.
        let mut stretches = Vec::new();
        let (mut level, mut since) = (0i64, 0.0);
        for (t, step) in edges {
            stretches.push((since, t, (full - level).max(0)));
            level += step;
            since = t;
        }
        stretches.push((since, wall, (full - level).max(0)));
        let filled = |s: &&(f64, f64, i64)| s.2 == 0 && s.1 > s.0;
        let first_full = stretches.iter().find(filled).map(|s| s.0);
        let last_full = stretches.iter().rev().find(filled).map(|s| s.1);
        let mut idle = Self::default();
        for (from, to, places) in stretches {
            let seconds = (to - from) * places as f64 / quota as f64;
            match (first_full, last_full) {
                (Some(first), _) if to <= first => idle.start += seconds,
                (_, Some(last)) if from >= last => idle.end += seconds,
                _ => idle.between += seconds,
            }
        }
        idle
    }
}

/// For each search after the first, the milliseconds since the latest search before it ended, in
/// ascending order: how long a place stood free between one search and the next.
pub(crate) fn handover_gaps(spans: &[(Instant, Instant)]) -> Vec<f64> {
    let mut ends: Vec<Instant> = spans.iter().map(|s| s.1).collect();
    ends.sort();
    let mut gaps: Vec<f64> = spans
        .iter()
        .filter_map(|(start, _)| {
            let before = ends.partition_point(|end| end <= start);
            (before > 0).then(|| start.duration_since(ends[before - 1]).as_secs_f64() * 1e3)
        })
        .collect();
    gaps.sort_by(f64::total_cmp);
    gaps
}

pub struct MonthEnd<'a> {
    pub binaries: &'a Binaries,
    pub databases: &'a Databases,
    pub per_sec: u64,
    pub loads: Vec<Load>,
    /// Times every load runs, round after round.
    pub rounds: usize,
    /// Whether the fairness check runs after the loads.
    pub fairness: bool,
    /// Settings every worker process gets beside the bench's own (`--month-end-set`).
    pub settings: Vec<(String, String)>,
}

impl MonthEnd<'_> {
    pub async fn run(&self) -> anyhow::Result<()> {
        let scratch =
            std::env::temp_dir().join(format!("logexport-month-end-{}", std::process::id()));
        let archives = scratch.join("archives");
        std::fs::create_dir_all(&archives).context("creating the scratch directory")?;
        let s3 = S3Env::from_env();
        let target = match &s3 {
            Some(s3) => Target::S3(s3),
            None => Target::Local(&archives),
        };
        let mut table = Table::new(
            format!(
                "Month-end: many exports at once ({}/s per search, Splunk quota 3 searches; JSON to {})",
                thousands(self.per_sec),
                target.name()
            ),
            &[
                "load",
                "export.probe_rows",
                "worker processes",
                "wall s",
                "Splunk's limit s",
                "efficiency",
                "quota in use",
                "quota idle s: start / between / end",
                "hand-over ms: median / p90",
                "searches / export",
                "enqueue → success median / p95 s",
                "CPU s: workers / Postgres / Garage / bench / idle",
            ],
        );
        let mut failed = None;
        // Each load's efficiency, round by round.
        let mut efficiencies = vec![Vec::new(); self.loads.len()];
        let runs = (0..self.rounds).flat_map(|_| self.loads.iter().enumerate());
        for (n, (l, load)) in runs.enumerate() {
            match self.load(*load, &target, &scratch, n).await {
                Ok(m) => {
                    efficiencies[l].push(m.limit / m.wall);
                    table.row(vec![
                        format!(
                            "{} × {} events, {} namespaces",
                            load.exports,
                            thousands(load.events),
                            load.namespaces
                        ),
                        load.probe_rows.to_string(),
                        load.workers.to_string(),
                        format!("{:.2}", m.wall),
                        format!("{:.2}", m.limit),
                        format!("{:.3}", m.limit / m.wall),
                        format!("{:.0} %", 100.0 * m.quota_busy / (3.0 * m.wall)),
                        format!(
                            "{:.2} / {:.2} / {:.2}",
                            m.idle.start, m.idle.between, m.idle.end
                        ),
                        format!("{:.1} / {:.1}", m.handover.0, m.handover.1),
                        format!("{:.1}", m.searches as f64 / load.exports as f64),
                        format!("{:.2} / {:.2}", m.median, m.p95),
                        format!(
                            "{:.1} / {:.1} / {:.1} / {:.1} / {:.1}",
                            m.cpu.workers, m.cpu.postgres, m.cpu.garage, m.cpu.bench, m.cpu.idle
                        ),
                    ])
                }
                Err(e) => {
                    failed = Some(e.context(format!("{load:?}")));
                    break;
                }
            }
        }
        table.note(
            "efficiency = Splunk's limit / wall time, the limit being total events / (3 × the rate); \
             quota in use = seconds searches held a place in the emulator's quota / (3 × wall); \
             quota idle = idle places × seconds / 3, before the quota first filled, until it was \
             last full, and after; CPU s = CPU seconds from the first request until the bench \
             saw the last success (it looks every 50 ms), the bench including the emulator, idle \
             being what the machine's cores left unused",
        );
        table.print();
        if self.rounds > 1 && failed.is_none() {
            self.rounds_table(&efficiencies).print();
        }
        if failed.is_none() && self.fairness {
            match self.fairness(&target, &scratch).await {
                Ok(line) => println!("{line}\n"),
                Err(e) => failed = Some(e.context("fairness")),
            }
        }
        if failed.is_none() && std::env::var_os("LOGEXPORT_BENCH_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&scratch);
        } else {
            eprintln!("logs kept in {}", scratch.display());
        }
        failed.map_or(Ok(()), Err)
    }

    /// Each load's efficiency per round, and the median of its rounds.
    fn rounds_table(&self, efficiencies: &[Vec<f64>]) -> Table {
        let mut headers = vec!["load".to_string(), "worker processes".into()];
        headers.extend((1..=self.rounds).map(|r| format!("round {r}")));
        headers.push("median".into());
        let mut table = Table::new("Month-end efficiency, round by round", &headers);
        for (load, runs) in self.loads.iter().zip(efficiencies) {
            let mut sorted = runs.clone();
            sorted.sort_by(f64::total_cmp);
            let mut row = vec![
                format!(
                    "{} × {} events, probe_rows {}",
                    load.exports,
                    thousands(load.events),
                    load.probe_rows
                ),
                load.workers.to_string(),
            ];
            row.extend(runs.iter().map(|e| format!("{e:.3}")));
            row.push(quantile(&sorted, 0.5).map_or("-".into(), |m| format!("{m:.3}")));
            table.row(row);
        }
        table
    }

    /// Runs one load from a fresh database and emulator.
    async fn load(
        &self,
        load: Load,
        target: &Target<'_>,
        scratch: &Path,
        n: usize,
    ) -> anyhow::Result<Measured> {
        let per_namespace = load.exports.div_ceil(load.namespaces).max(1);
        let total = load.events * (load.namespaces * per_namespace) as u64;
        let emu = self.emulator(total, load.namespaces).await?;
        let (db_url, pool) = self.databases.fresh("month_end", 8).await?;
        let (start, end): (DateTime<Utc>, DateTime<Utc>) = (START.parse()?, END.parse()?);
        let window = (end - start) / per_namespace as i32;
        // Export e: namespace e mod M, the (e / M)-th window of its range.
        let requests: Vec<(String, DateTime<Utc>, DateTime<Utc>)> = (0..load.exports)
            .map(|e| {
                let w = (e / load.namespaces) as i32;
                (
                    format!("ns{}", e % load.namespaces),
                    start + window * w,
                    start + window * (w + 1),
                )
            })
            .collect();
        let expected: Vec<u64> = requests
            .iter()
            .map(|(ns, lo, hi)| {
                emu.count_in(&EventFilter {
                    namespace: Some(ns.clone()),
                    earliest: Some(*lo),
                    latest: Some(*hi),
                    ..EventFilter::default()
                })
            })
            .collect();
        let events: u64 = expected.iter().sum();

        let mut workers = self.workers(&db_url, &emu, target, scratch, &load, n)?;
        // A running service's workers are up before month-end comes: process start-up is not
        // an export's cost.
        wait_until_started(scratch, n, load.workers).await?;
        let before = emu.stats();
        let cpu_before = CpuUse::now(&workers);
        let t0 = Instant::now();
        let mut ids = Vec::with_capacity(requests.len());
        for (ns, lo, hi) in &requests {
            ids.push(storage::enqueue(&pool, &export(ns, *lo, *hi)?).await?);
        }
        let outcome = wait_for(&pool, &ids, Duration::from_secs(600), &mut workers).await;
        let after = emu.stats();
        let cpu = CpuUse::now(&workers).since(cpu_before);
        let spans = emu.search_spans(t0);
        for worker in workers {
            worker.stop().await;
        }
        emu.shutdown().await;
        let rows = outcome?;
        let mut waits = Vec::new();
        let first = rows
            .iter()
            .map(|r| r.created_at)
            .min()
            .context("no exports")?;
        let mut last = first;
        for ((row, want), id) in rows.iter().zip(&expected).zip(&ids) {
            anyhow::ensure!(
                row.logs_exported as u64 == *want,
                "export {id} has {} rows, its filter selects {want}",
                row.logs_exported
            );
            let finished = row.finished_at.context("no finished_at")?;
            waits.push((finished - row.created_at).num_milliseconds() as f64 / 1e3);
            last = last.max(finished);
        }
        waits.sort_by(f64::total_cmp);
        // Each run writes about 1 GB of archives; an S3 store that kept every run's would slow
        // the next ones down (Garage at 4.9 GB measured 0.75-0.83 where it had measured 0.94).
        let mut config = logexport::config::Config::default();
        target.configure(&mut Vec::new(), &mut config);
        let store = logexport::storage::from_config(&config).await?;
        for key in rows.iter().filter_map(|r| r.object_key.as_deref()) {
            for key in [manifest_key(key), key.to_owned()] {
                store.delete(&key).await?;
            }
        }
        let wall = (last - first).num_milliseconds() as f64 / 1e3;
        let idle = Idle::of(&spans, t0, t0 + Duration::from_secs_f64(wall), 3);
        let handovers = handover_gaps(&spans);
        Ok(Measured {
            wall,
            limit: events as f64 / (3.0 * self.per_sec as f64),
            median: quantile(&waits, 0.5).unwrap_or(0.0),
            p95: quantile(&waits, 0.95).unwrap_or(0.0),
            searches: after.export_requests - before.export_requests,
            quota_busy: (after.search_busy_micros - before.search_busy_micros) as f64 / 1e6,
            idle,
            handover: (
                quantile(&handovers, 0.5).unwrap_or(0.0),
                quantile(&handovers, 0.9).unwrap_or(0.0),
            ),
            cpu,
        })
    }

    /// One namespace with 100 queued exports, then one export of another namespace: how long
    /// the second namespace's export waits to start.
    async fn fairness(&self, target: &Target<'_>, scratch: &Path) -> anyhow::Result<String> {
        let emu = self.emulator(200_000, 2).await?;
        let (db_url, pool) = self.databases.fresh("month_end", 8).await?;
        let three = Load {
            exports: 101,
            namespaces: 2,
            events: 0,
            workers: 3,
            probe_rows: 0,
        };
        let mut workers = self.workers(&db_url, &emu, target, scratch, &three, 99)?;
        let (start, end): (DateTime<Utc>, DateTime<Utc>) = (START.parse()?, END.parse()?);
        let day = chrono::Duration::days(1);
        let mut busy = Vec::new();
        for d in 0..100 {
            let lo = start + day * (d % 30);
            busy.push(storage::enqueue(&pool, &export("ns0", lo, lo + day)?).await?);
        }
        let lone = storage::enqueue(&pool, &export("ns1", start, end)?).await?;
        let rows = wait_for(&pool, &[lone], Duration::from_secs(300), &mut workers).await;
        let still_queued = busy.len() - started(&pool, &busy).await?;
        for worker in workers {
            worker.stop().await;
        }
        emu.shutdown().await;
        let row = rows?.remove(0);
        let started = row.started_at.context("no started_at")?;
        let waited = (started - row.created_at).num_milliseconds() as f64 / 1e3;
        Ok(format!(
            "Fairness: 100 exports of ns0 queued first, then 1 of ns1 (3 worker processes): ns1's export started {waited:.2} s after its request, with {still_queued} of ns0's still waiting — {}",
            verdict(waited < 5.0)
        ))
    }

    async fn emulator(&self, events: u64, namespaces: usize) -> anyhow::Result<RunningEmulator> {
        emulator::spawn(EmulatorOptions {
            token: Some(TOKEN.into()),
            synthetic: Some(SyntheticSpec {
                count: events,
                start: START.parse()?,
                end: END.parse()?,
                namespaces: namespaces as u32,
                skew: 0.0,
            }),
            faults: Faults {
                search_events_per_sec: Some(self.per_sec),
                max_concurrent_searches: Some(3),
                ..Faults::default()
            },
            ..EmulatorOptions::default()
        })
        .await
    }

    /// `load.workers` worker processes with the product's defaults, the role's 3 searches as the
    /// cluster-wide quota, and `load.probe_rows`.
    fn workers(
        &self,
        db_url: &str,
        emu: &RunningEmulator,
        target: &Target<'_>,
        scratch: &Path,
        load: &Load,
        n: usize,
    ) -> anyhow::Result<Vec<Worker>> {
        let mut env: Vec<(String, String)> = worker_env(db_url, emu.addr().port(), TOKEN)
            .into_iter()
            .filter(|(k, _)| k != "LOGEXPORT_WORKER__CONCURRENCY")
            .collect();
        env.push((
            "LOGEXPORT_SPLUNK__MAX_CONCURRENT_SEARCHES".into(),
            "3".into(),
        ));
        env.push((
            "LOGEXPORT_EXPORT__PROBE_ROWS".into(),
            load.probe_rows.to_string(),
        ));
        env.extend(self.settings.iter().cloned());
        let mut config = logexport::config::Config::default();
        target.configure(&mut env, &mut config);
        (0..load.workers)
            .map(|w| {
                Worker::start(
                    &self.binaries.logexport,
                    &env,
                    scratch,
                    &scratch.join(format!("worker-{n}-{w}.log")),
                )
            })
            .collect()
    }
}

/// Waits until each of the `workers` processes of load `n` logged that its loop runs, and a
/// little longer for its LISTEN connection.
async fn wait_until_started(scratch: &Path, n: usize, workers: usize) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    for w in 0..workers {
        let log = scratch.join(format!("worker-{n}-{w}.log"));
        while !std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("worker started")
        {
            anyhow::ensure!(
                Instant::now() < deadline,
                "worker {w} did not start; see {}",
                log.display()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    Ok(())
}

fn export(namespace: &str, start: DateTime<Utc>, end: DateTime<Utc>) -> anyhow::Result<NewExport> {
    let mut export = org_export(start, end, FormatSpec::parse("json")?)?;
    export.namespace = Namespace::parse(namespace)?;
    Ok(export)
}

/// Waits until every export in `ids` succeeded (one query per look, so the bench's polling
/// costs the database little); any other end, or a worker exiting, fails.
async fn wait_for(
    pool: &PgPool,
    ids: &[ExportId],
    limit: Duration,
    workers: &mut [Worker],
) -> anyhow::Result<Vec<ExportRow>> {
    let uuids: Vec<uuid::Uuid> = ids.iter().map(|id| id.0).collect();
    let deadline = Instant::now() + limit;
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (succeeded, ended): (i64, i64) = sqlx::query_as(
            "SELECT count(*) FILTER (WHERE state = 'succeeded'),
                    count(*) FILTER (WHERE state NOT IN ('queued', 'running', 'succeeded'))
             FROM export_jobs WHERE id = ANY($1)",
        )
        .bind(&uuids)
        .fetch_one(pool)
        .await?;
        if ended > 0 || succeeded as usize == ids.len() {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the exports did not finish within {limit:?}"
        );
        anyhow::ensure!(
            workers.iter_mut().all(Worker::is_running),
            "a worker exited"
        );
    }
    let mut rows = Vec::with_capacity(ids.len());
    for id in ids {
        rows.push(
            storage::get(pool, *id)
                .await?
                .context("an export row disappeared")?,
        );
    }
    // The export that ended otherwise, not one still running beside it.
    let failed = rows.iter().find(|r| {
        !matches!(
            r.state(),
            JobState::Queued | JobState::Running | JobState::Succeeded
        )
    });
    if let Some(row) = failed {
        anyhow::bail!(
            "export {} ended {} ({})",
            row.id,
            row.state().as_str(),
            row.last_error.clone().unwrap_or_default()
        );
    }
    Ok(rows)
}

/// How many of `ids` have started.
async fn started(pool: &PgPool, ids: &[ExportId]) -> anyhow::Result<usize> {
    let uuids: Vec<uuid::Uuid> = ids.iter().map(|id| id.0).collect();
    let n: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM export_jobs WHERE id = ANY($1) AND started_at IS NOT NULL",
    )
    .bind(&uuids)
    .fetch_one(pool)
    .await?;
    Ok(n as usize)
}
