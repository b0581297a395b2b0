//! Exports against a Splunk that costs what a real indexer costs (`--splunk-rate`): the emulator
//! throttled to an indexer's scan rate with Splunk's search quota, 2,000,000 events over 30
//! days. Compares time-sliced exports with 3 searches to one search at a time and to 3 raw
//! streams read in parallel, with clustered events, with a stream cut at 90 %, and Quay's own
//! paging algorithm (one search job per 5,000 rows with count/offset, polled every 0.5 s).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use logexport::emulator::{self, EmulatorOptions, Faults, RunningEmulator, SyntheticSpec};
use sha2::{Digest, Sha256};
use sqlx::PgPool;

use crate::db::Databases;
use crate::e2e::{org_export, run_export, worker_env};
use crate::month_end::Idle;
use crate::procs::{Binaries, cpu_seconds, cpu_seconds_named};
use crate::table::{Table, rate, thousands};
use crate::targets::{FormatSpec, S3Env, Target};

const TOKEN: &str = "splunk-rate-bench";
const START: &str = "2024-01-01T00:00:00Z";
const END: &str = "2024-01-31T00:00:00Z";

/// What the section runs.
pub struct RateSpec {
    /// A real indexer's rate per search.
    pub events_per_sec: u64,
    /// Events in the 30-day range.
    pub events: u64,
    /// Sizes for Quay's algorithm side by side with logexport.
    pub quay_sizes: Vec<u64>,
    /// Sizes for the worker's peak memory.
    pub rss_sizes: Vec<u64>,
    /// Rounds of raw streams vs the default export (see [`rounds_section`]).
    pub rounds: usize,
    /// Only those rounds.
    pub rounds_only: bool,
}

struct Ctx<'a> {
    binaries: &'a Binaries,
    db_url: String,
    pool: PgPool,
    scratch: PathBuf,
    archives: PathBuf,
    spec: &'a RateSpec,
}

impl Ctx<'_> {
    /// Local storage, and S3 when `.test-env/garage.env` was sourced.
    fn targets<'a>(&'a self, s3: Option<&'a S3Env>) -> Vec<Target<'a>> {
        let mut targets = vec![Target::Local(&self.archives)];
        targets.extend(s3.map(Target::S3));
        targets
    }
}

/// One export: seconds from start to finish, peak RSS, rows Splunk sent, the archive's digest,
/// and the CPU it cost.
struct Run {
    seconds: f64,
    peak_rss: u64,
    streamed: u64,
    sha256: Option<String>,
    cpu: Cpu,
    /// Searches the export ran, and where the role's quota sat idle meanwhile (its `between`:
    /// from the first moment every place was in use to the last).
    searches: usize,
    idle: Idle,
}

/// CPU seconds spent during one run by the processes sharing the machine's cores: the worker,
/// this bench process (which runs the emulator) and Garage (S3 runs).
#[derive(Default)]
struct Cpu {
    worker: f64,
    emulator: f64,
    garage: f64,
}

impl Cpu {
    /// The bench process's and Garage's CPU seconds so far.
    fn now() -> (f64, f64) {
        (
            cpu_seconds("self").unwrap_or(0.0),
            cpu_seconds_named("garage"),
        )
    }

    fn since(before: (f64, f64), worker: f64) -> Self {
        let (emulator, garage) = Self::now();
        Self {
            worker,
            emulator: emulator - before.0,
            garage: garage - before.1,
        }
    }

    fn cell(&self) -> String {
        format!(
            "{:.1} / {:.1} / {:.1}",
            self.worker, self.emulator, self.garage
        )
    }
}

pub async fn run(
    binaries: &Binaries,
    databases: &Databases,
    spec: &RateSpec,
) -> anyhow::Result<()> {
    let scratch = std::env::temp_dir().join(format!("logexport-rate-{}", std::process::id()));
    let archives = scratch.join("archives");
    std::fs::create_dir_all(&archives).context("creating the scratch directory")?;
    let (db_url, pool) = databases.fresh("rate", 4).await?;
    let ctx = Ctx {
        binaries,
        db_url,
        pool,
        scratch: scratch.clone(),
        archives,
        spec,
    };
    let result = sections(&ctx).await;
    // LOGEXPORT_BENCH_KEEP keeps the workers' logs (run with RUST_LOG=logexport=debug for a
    // timeline of each export's slices).
    if result.is_ok() && std::env::var_os("LOGEXPORT_BENCH_KEEP").is_none() {
        let _ = std::fs::remove_dir_all(&scratch);
    } else {
        eprintln!("logs kept in {}", scratch.display());
    }
    result
}

async fn sections(ctx: &Ctx<'_>) -> anyhow::Result<()> {
    let spec = ctx.spec;
    if spec.rounds_only {
        return rounds_section(ctx).await;
    }
    let n = spec.events;
    let (start, end): (DateTime<Utc>, DateTime<Utc>) = (START.parse()?, END.parse()?);
    let mut table = Table::new(
        format!(
            "Exports against Splunk's costs ({} events over 30 days, {}/s per search, Splunk quota 3 searches; JSON)",
            thousands(n),
            thousands(spec.events_per_sec)
        ),
        &[
            "run",
            "storage",
            "seconds",
            "logs/s",
            "× one search",
            "rows read / exported",
            "peak RSS MiB",
            "CPU s: worker / emulator / Garage",
        ],
    );
    let json = FormatSpec::parse("json")?;
    let ndjson = FormatSpec::parse("ndjson")?;
    let s3 = S3Env::from_env();
    let targets = ctx.targets(s3.as_ref());

    let even = emulator_for(spec, n, 0.0, None).await?;
    let before = Cpu::now();
    let raw = raw_streams(&even, start, end, 3).await?;
    table.row(vec![
        "3 raw streams read in parallel (no archive)".into(),
        "-".into(),
        format!("{raw:.2}"),
        rate(n as f64 / raw),
        "-".into(),
        "1.00".into(),
        "-".into(),
        Cpu::since(before, 0.0).cell(),
    ]);
    for target in &targets {
        let one = export(ctx, &even, target, json, n, 1).await?;
        let three = export(ctx, &even, target, json, n, 3).await?;
        for (label, r) in [
            ("1 search at a time", &one),
            ("3 searches (default)", &three),
        ] {
            table.row(row(label, target.name(), n, r, one.seconds));
        }
        table.note(format!(
            "{}: 3 searches / 1 search: {:.2}× faster; 3 searches / 3 raw streams: {:.1} % of their time",
            target.name(),
            one.seconds / three.seconds,
            100.0 * three.seconds / raw
        ));
    }
    even.shutdown().await;

    let skewed = emulator_for(spec, n, 0.8, None).await?;
    let one = export(ctx, &skewed, &targets[0], json, n, 1).await?;
    let three = export(ctx, &skewed, &targets[0], json, n, 3).await?;
    table.row(row(
        "skew 0.8: 1 search at a time",
        "local",
        n,
        &one,
        one.seconds,
    ));
    table.row(row("skew 0.8: 3 searches", "local", n, &three, one.seconds));
    table.note(format!(
        "skew 0.8 (80 % of the events in the first 3 days): 3 searches / 1 search: {:.2}× faster",
        one.seconds / three.seconds
    ));
    skewed.shutdown().await;

    // The same export uncut and with its stream cut once at 90 % of the events: NDJSON, whose
    // bytes do not carry the export id, so equal archives have equal digests.
    let plain = emulator_for(spec, n, 0.0, None).await?;
    let uncut = export(ctx, &plain, &targets[0], ndjson, n, 3).await?;
    plain.shutdown().await;
    let cutting = emulator_for(spec, n, 0.0, Some(n * 9 / 10)).await?;
    let cut = export(ctx, &cutting, &targets[0], ndjson, n, 3).await?;
    cutting.shutdown().await;
    table.row(row("NDJSON, 3 searches", "local", n, &uncut, uncut.seconds));
    table.row(row(
        "NDJSON, stream cut once at 90 %",
        "local",
        n,
        &cut,
        uncut.seconds,
    ));
    table.note(format!(
        "cut once at 90 %: rows read {:.3}× the rows exported; archive {} the uncut run's (SHA-256 {})",
        cut.streamed as f64 / n as f64,
        if cut.sha256 == uncut.sha256 { "identical to" } else { "DIFFERENT from" },
        cut.sha256.as_deref().unwrap_or("?")
    ));
    table.print();

    if spec.rounds > 1 {
        rounds_section(ctx).await?;
    }
    if !spec.quay_sizes.is_empty() {
        quay_section(ctx, start, end).await?;
    }
    if spec.rss_sizes.is_empty() {
        return Ok(());
    }
    rss_section(ctx, json).await
}

/// The comparison with 3 raw streams, `spec.rounds` times in a row: one run moves by a few
/// percent on this shared machine, so every round is shown with the medians.
async fn rounds_section(ctx: &Ctx<'_>) -> anyhow::Result<()> {
    let spec = ctx.spec;
    let n = spec.events;
    let (start, end): (DateTime<Utc>, DateTime<Utc>) = (START.parse()?, END.parse()?);
    let json = FormatSpec::parse("json")?;
    let s3 = S3Env::from_env();
    let targets = ctx.targets(s3.as_ref());
    let mut header = vec!["round".to_owned(), "3 raw streams s".to_owned()];
    for target in &targets {
        header.push(format!("{}: 3 searches s", target.name()));
        header.push(format!("{}: % of raw", target.name()));
        header.push(format!(
            "{}: CPU s worker / emulator / Garage",
            target.name()
        ));
        header.push(format!(
            "{}: searches; quota idle between them s",
            target.name()
        ));
    }
    let mut table = Table::new(
        format!(
            "3 searches against 3 raw streams, {} rounds ({} events over 30 days, {}/s per search; JSON)",
            spec.rounds,
            thousands(n),
            thousands(spec.events_per_sec)
        ),
        &header,
    );
    let emu = emulator_for(spec, n, 0.0, None).await?;
    let mut ratios: Vec<Vec<f64>> = vec![Vec::new(); targets.len()];
    for round in 1..=spec.rounds {
        let raw = raw_streams(&emu, start, end, 3).await?;
        let mut cells = vec![round.to_string(), format!("{raw:.2}")];
        for (i, target) in targets.iter().enumerate() {
            let r = export(ctx, &emu, target, json, n, 3).await?;
            let ratio = 100.0 * r.seconds / raw;
            ratios[i].push(ratio);
            cells.push(format!("{:.2}", r.seconds));
            cells.push(format!("{ratio:.1} %"));
            cells.push(r.cpu.cell());
            cells.push(format!("{}; {:.2}", r.searches, r.idle.between));
        }
        table.row(cells);
    }
    emu.shutdown().await;
    for (target, mut ratios) in targets.iter().zip(ratios) {
        ratios.sort_by(f64::total_cmp);
        table.note(format!(
            "{}: 3 searches took {:.1} % of the 3 raw streams' time (median of {}; {:.1} – {:.1} %)",
            target.name(),
            ratios[ratios.len() / 2],
            ratios.len(),
            ratios[0],
            ratios[ratios.len() - 1]
        ));
    }
    table.print();
    Ok(())
}

fn row(label: &str, storage: &str, n: u64, r: &Run, baseline: f64) -> Vec<String> {
    vec![
        label.into(),
        storage.into(),
        format!("{:.2}", r.seconds),
        rate(n as f64 / r.seconds),
        format!("{:.2}", baseline / r.seconds),
        format!("{:.3}", r.streamed as f64 / n as f64),
        format!("{:.1}", r.peak_rss as f64 / (1024.0 * 1024.0)),
        r.cpu.cell(),
    ]
}

async fn emulator_for(
    spec: &RateSpec,
    n: u64,
    skew: f64,
    cut_once_after: Option<u64>,
) -> anyhow::Result<RunningEmulator> {
    emulator::spawn(EmulatorOptions {
        token: Some(TOKEN.into()),
        synthetic: Some(SyntheticSpec {
            count: n,
            start: START.parse()?,
            end: END.parse()?,
            namespaces: 1,
            skew,
        }),
        faults: Faults {
            search_events_per_sec: Some(spec.events_per_sec),
            max_concurrent_searches: Some(3),
            cut_once_after,
            ..Faults::default()
        },
        ..EmulatorOptions::default()
    })
    .await
}

/// Exports all of `emu`'s events with a fresh worker allowed `searches` at once.
async fn export(
    ctx: &Ctx<'_>,
    emu: &RunningEmulator,
    target: &Target<'_>,
    format: FormatSpec,
    n: u64,
    searches: u32,
) -> anyhow::Result<Run> {
    let mut env = worker_env(&ctx.db_url, emu.addr().port(), TOKEN);
    env.push((
        "LOGEXPORT_SPLUNK__MAX_CONCURRENT_SEARCHES".into(),
        searches.to_string(),
    ));
    let mut config = logexport::config::Config::default();
    target.configure(&mut env, &mut config);
    let store = logexport::storage::from_config(&config).await?;
    let (start, end) = (START.parse()?, END.parse()?);
    let log = ctx
        .scratch
        .join(format!("worker-{}-{searches}.log", target.name()));
    let before = emu.stats().events_streamed;
    let cpu_before = Cpu::now();
    let t0 = Instant::now();
    let (row, _, usage) = run_export(
        &ctx.binaries.logexport,
        &ctx.pool,
        &env,
        &org_export(start, end, format)?,
        &ctx.scratch,
        &log,
    )
    .await?;
    let t1 = Instant::now();
    anyhow::ensure!(
        row.logs_exported == n as i64,
        "exported {} of {n} events",
        row.logs_exported
    );
    let (Some(started), Some(finished)) = (row.started_at, row.finished_at) else {
        anyhow::bail!("a succeeded export without started_at/finished_at");
    };
    let key = row.object_key.context("no object key")?;
    let sha256 = match target {
        Target::Local(dir) => Some(file_sha256(&dir.join(key.replace('/', "_")))?),
        Target::S3(_) => None,
    };
    store.delete(&key).await?;
    let spans = emu.search_spans(t0);
    let idle = Idle::of(&spans, t0, t1, searches as usize);
    Ok(Run {
        searches: spans.len(),
        idle,
        seconds: (finished - started).num_microseconds().unwrap_or(0) as f64 / 1e6,
        peak_rss: usage.peak_rss,
        streamed: emu.stats().events_streamed - before,
        sha256,
        cpu: Cpu::since(cpu_before, usage.cpu_seconds),
    })
}

fn file_sha256(path: &Path) -> anyhow::Result<String> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher)?;
    Ok(hex::encode(hasher.finalize()))
}

/// Seconds to read `[start, end)` as `streams` equal time slices in parallel with curl.
async fn raw_streams(
    emu: &RunningEmulator,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    streams: i64,
) -> anyhow::Result<f64> {
    let step = (end - start) / streams as i32;
    let began = Instant::now();
    let mut children = Vec::new();
    for i in 0..streams {
        let (lo, hi) = (start + step * i as i32, start + step * (i + 1) as i32);
        children.push(
            tokio::process::Command::new("curl")
                .args(["-sS", "--fail", "-o", "/dev/null", "-H"])
                .arg(format!("Authorization: Bearer {TOKEN}"))
                .arg(format!("{}/services/search/v2/jobs/export", emu.base_url()))
                .args([
                    "--data-urlencode",
                    "search=search index=quay_logs account=ns0",
                ])
                .args(["-d", "output_mode=json"])
                .arg("-d")
                .arg(format!("earliest_time={}", lo.timestamp()))
                .arg("-d")
                .arg(format!("latest_time={}", hi.timestamp()))
                .status(),
        );
    }
    for child in children {
        anyhow::ensure!(
            child.await.context("running curl")?.success(),
            "curl failed"
        );
    }
    Ok(began.elapsed().as_secs_f64())
}

/// Quay's export algorithm (quay/quay `workers/exportactionlogsworker.py` over
/// `splunk_logs_model.py` / `splunk_search_client.py`): one search job per 5,000 rows, created
/// with `count`/`offset`, polled every 0.5 s, then its page read.
async fn quay_export(
    emu: &RunningEmulator,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> anyhow::Result<(u64, u64)> {
    let client = reqwest::Client::new();
    let base = format!("{}/services/search/v2/jobs", emu.base_url());
    let (mut offset, mut rows, mut jobs) = (0u64, 0u64, 0u64);
    loop {
        let form = [
            ("search", "search index=quay_logs account=ns0".to_owned()),
            ("output_mode", "json".into()),
            (
                "earliest_time",
                start.format("%Y-%m-%dT%H:%M:%S").to_string(),
            ),
            ("latest_time", end.format("%Y-%m-%dT%H:%M:%S").to_string()),
            ("count", "5000".into()),
            ("offset", offset.to_string()),
        ];
        let created: serde_json::Value = client
            .post(&base)
            .bearer_auth(TOKEN)
            .form(&form)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        jobs += 1;
        let sid = created["sid"].as_str().context("no sid")?.to_owned();
        let total = loop {
            let status: serde_json::Value = client
                .get(format!("{base}/{sid}?output_mode=json"))
                .bearer_auth(TOKEN)
                .send()
                .await?
                .error_for_status()?
                .json()
                .await?;
            let content = &status["entry"][0]["content"];
            if content["isDone"] == true {
                break content["resultCount"].as_u64().unwrap_or(0);
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        };
        let page: serde_json::Value = client
            .get(format!(
                "{base}/{sid}/results?output_mode=json&count=5000&offset={offset}"
            ))
            .bearer_auth(TOKEN)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let got = page["results"].as_array().map_or(0, Vec::len) as u64;
        rows += got;
        offset += 5000;
        if got == 0 || offset >= total {
            return Ok((rows, jobs));
        }
    }
}

async fn quay_section(
    ctx: &Ctx<'_>,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> anyhow::Result<()> {
    let spec = ctx.spec;
    let mut table = Table::new(
        format!(
            "Quay's algorithm against the same cost model ({}/s per search; JSON, local)",
            thousands(spec.events_per_sec)
        ),
        &[
            "events",
            "Quay: seconds",
            "Quay: search jobs",
            "logexport: seconds",
            "Quay / logexport",
        ],
    );
    for &n in &spec.quay_sizes {
        let emu = emulator_for(spec, n, 0.0, None).await?;
        let began = Instant::now();
        let (rows, jobs) = quay_export(&emu, start, end).await?;
        let quay = began.elapsed().as_secs_f64();
        anyhow::ensure!(rows == n, "Quay's algorithm read {rows} of {n} rows");
        let ours = export(
            ctx,
            &emu,
            &Target::Local(&ctx.archives),
            FormatSpec::parse("json")?,
            n,
            3,
        )
        .await?;
        emu.shutdown().await;
        table.row(vec![
            thousands(n),
            format!("{quay:.1}"),
            thousands(jobs),
            format!("{:.2}", ours.seconds),
            format!("{:.1}×", quay / ours.seconds),
        ]);
    }
    table.print();
    Ok(())
}

async fn rss_section(ctx: &Ctx<'_>, json: FormatSpec) -> anyhow::Result<()> {
    let spec = ctx.spec;
    let mut table = Table::new(
        format!(
            "Worker peak RSS, 3 searches at {}/s each (JSON, local)",
            thousands(spec.events_per_sec)
        ),
        &["events", "seconds", "logs/s", "peak RSS MiB"],
    );
    for &n in &spec.rss_sizes {
        let emu = emulator_for(spec, n, 0.0, None).await?;
        let r = export(ctx, &emu, &Target::Local(&ctx.archives), json, n, 3).await?;
        emu.shutdown().await;
        table.row(vec![
            thousands(n),
            format!("{:.2}", r.seconds),
            rate(n as f64 / r.seconds),
            format!("{:.1}", r.peak_rss as f64 / (1024.0 * 1024.0)),
        ]);
    }
    table.print();
    Ok(())
}
