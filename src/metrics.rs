//! Process metrics in Prometheus text format.

use std::fmt::Write;
use std::sync::LazyLock;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use std::collections::BTreeMap;

/// The process-wide metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::default);

const DURATION_BUCKETS: [f64; 12] = [
    0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 7200.0,
];

/// Counters and a histogram; label sets are small and fixed, so a map behind a mutex is enough.
#[derive(Debug, Default)]
pub struct Metrics {
    jobs_started: AtomicU64,
    labelled: Mutex<BTreeMap<(&'static str, String), u64>>,
    duration: Mutex<Histogram>,
}

#[derive(Debug, Default)]
struct Histogram {
    buckets: [u64; DURATION_BUCKETS.len()],
    count: u64,
    sum: f64,
}

impl Metrics {
    /// A job attempt started.
    pub fn job_started(&self) {
        self.jobs_started.fetch_add(1, Ordering::Relaxed);
    }

    /// A job attempt ended with `outcome` after `elapsed`.
    pub fn job_finished(&self, outcome: &str, elapsed: Duration) {
        self.incr("logexport_jobs_finished_total", outcome);
        let secs = elapsed.as_secs_f64();
        let mut h = self.duration.lock().unwrap_or_else(|p| p.into_inner());
        for (i, bound) in DURATION_BUCKETS.iter().enumerate() {
            if secs <= *bound {
                h.buckets[i] += 1;
            }
        }
        h.count += 1;
        h.sum += secs;
    }

    /// Increments a counter with one label value.
    pub fn incr(&self, name: &'static str, label: &str) {
        self.add(name, label, 1);
    }

    /// Adds `n` to a counter with one label value; a zero still makes the series appear.
    pub fn add(&self, name: &'static str, label: &str, n: u64) {
        let mut map = self.labelled.lock().unwrap_or_else(|p| p.into_inner());
        *map.entry((name, label.to_owned())).or_default() += n;
    }

    /// Renders everything plus the queue depth read at scrape time.
    pub fn render(&self, queue_depth: &[(String, i64)]) -> String {
        let mut out = String::new();
        out.push_str("# HELP logexport_queue_jobs Export jobs by state.\n# TYPE logexport_queue_jobs gauge\n");
        for state in crate::queue::JobState::ALL {
            let n = queue_depth
                .iter()
                .find(|(s, _)| s == state.as_str())
                .map_or(0, |(_, n)| *n);
            let _ = writeln!(
                out,
                "logexport_queue_jobs{{state=\"{}\"}} {n}",
                state.as_str()
            );
        }
        out.push_str("# HELP logexport_jobs_started_total Job attempts started.\n# TYPE logexport_jobs_started_total counter\n");
        let _ = writeln!(
            out,
            "logexport_jobs_started_total {}",
            self.jobs_started.load(Ordering::Relaxed)
        );
        let map = self.labelled.lock().unwrap_or_else(|p| p.into_inner());
        let mut last = "";
        for ((name, label), value) in map.iter() {
            if *name != last {
                let _ = writeln!(out, "# TYPE {name} counter");
                last = name;
            }
            let key = if name.contains("http") {
                "status"
            } else {
                "outcome"
            };
            let _ = writeln!(out, "{name}{{{key}=\"{label}\"}} {value}");
        }
        drop(map);
        let h = self.duration.lock().unwrap_or_else(|p| p.into_inner());
        out.push_str("# HELP logexport_job_duration_seconds Duration of job attempts.\n# TYPE logexport_job_duration_seconds histogram\n");
        for (i, bound) in DURATION_BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "logexport_job_duration_seconds_bucket{{le=\"{bound}\"}} {}",
                h.buckets[i]
            );
        }
        let _ = writeln!(
            out,
            "logexport_job_duration_seconds_bucket{{le=\"+Inf\"}} {}",
            h.count
        );
        let _ = writeln!(out, "logexport_job_duration_seconds_sum {}", h.sum);
        let _ = writeln!(out, "logexport_job_duration_seconds_count {}", h.count);
        out
    }
}

/// The scheduled-export gauges, read from the database at scrape time.
pub fn render_schedules(stats: &crate::schedule::storage::ScheduleStats) -> String {
    let mut out = String::new();
    out.push_str(
        "# HELP logexport_schedules Export schedules by state.\n# TYPE logexport_schedules gauge\n",
    );
    let _ = writeln!(
        out,
        "logexport_schedules{{state=\"active\"}} {}",
        stats.active
    );
    let _ = writeln!(
        out,
        "logexport_schedules{{state=\"paused\"}} {}",
        stats.paused
    );
    out.push_str("# HELP logexport_schedule_lag_seconds How long the most overdue active schedule's next period has been due.\n# TYPE logexport_schedule_lag_seconds gauge\n");
    let _ = writeln!(
        out,
        "logexport_schedule_lag_seconds {}",
        stats.max_lag_seconds
    );
    out.push_str("# HELP logexport_schedule_last_run_timestamp_seconds When a scheduler last ran a schedule.\n# TYPE logexport_schedule_last_run_timestamp_seconds gauge\n");
    let last = stats.last_run_at.map_or(0, |t| t.timestamp());
    let _ = writeln!(out, "logexport_schedule_last_run_timestamp_seconds {last}");
    out
}
