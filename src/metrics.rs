//! Process metrics on `prometheus-client` (the Prometheus project's Rust client), served as
//! OpenMetrics text. Counters keep their names (`…_total`); gauges read from the database are set
//! at scrape time ([`Metrics::render`]).

use std::collections::HashMap;
use std::sync::LazyLock;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The process-wide metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// Seconds, from a request (10 ms) to a long export (2 h).
const DURATION_BUCKETS: [f64; 12] = [
    0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 7200.0,
];
/// HTTP request latency, seconds.
const REQUEST_BUCKETS: [f64; 11] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0, 30.0,
];
/// Splunk events per second of one export.
const RATE_BUCKETS: [f64; 10] = [
    100.0, 1_000.0, 5_000.0, 10_000.0, 25_000.0, 50_000.0, 100_000.0, 150_000.0, 250_000.0,
    500_000.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Status {
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct State {
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Request {
    method: String,
    /// The route's template (`/api/v1/organization/{orgname}/logs`), never the raw path.
    route: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Kind {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindState {
    kind: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindOutcome {
    kind: String,
    outcome: String,
}

/// The kinds of background work whose panics are counted (exported as 0 from the start).
pub const BACKGROUND_KINDS: [&str; 5] = [
    "export",
    "notification",
    "audit_shipping",
    "schedule_tick",
    "housekeeping",
];

/// The parties a failed export attempt is counted by (`worker::Party`'s labels, in its order).
pub const ATTEMPT_FAILURE_PARTIES: [&str; 8] = [
    "splunk",
    "storage",
    "spool",
    "encoding",
    "notification",
    "database",
    "request",
    "worker",
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Notification {
    channel: String,
    outcome: String,
}

/// Counters by outcome, under their `…_total` names, with their help and the outcomes known in
/// advance (exported as 0 from the start, so `rate()` and alerts see them before the first event).
const OUTCOME_COUNTERS: [(&str, &str, &[&str]); 12] = [
    (
        "logexport_export_attempt_failures_total",
        "Failed export attempts, by the party that failed.",
        &ATTEMPT_FAILURE_PARTIES,
    ),
    (
        "logexport_jobs_finished_total",
        "Job attempts ended, by outcome.",
        &["succeeded", "failed", "timed_out", "invalid", "cancelled"],
    ),
    (
        "logexport_notifications_total",
        "Notification deliveries by channel and outcome.",
        &[
            "email_delivered",
            "email_retry",
            "email_failed",
            "callback_delivered",
            "callback_retry",
            "callback_failed",
        ],
    ),
    (
        "logexport_export_slices_total",
        "Export slices: read, read again, split, concurrency lowered.",
        &[
            "read",
            "read_again",
            "split",
            "concurrency_lowered",
            "spool_over_budget",
        ],
    ),
    (
        "logexport_export_checkpoints_total",
        "Export checkpoints saved and resumed from.",
        &["saved", "resumed"],
    ),
    (
        "logexport_splunk_quota_waits_total",
        "Searches that waited for a cluster-wide search permit.",
        &["waited", "gave_up"],
    ),
    (
        "logexport_splunk_quota_looks_total",
        "Looks for a free cluster-wide search permit in Postgres.",
        &["taken", "full"],
    ),
    (
        "logexport_logs_rows_skipped_total",
        "Listing rows dropped, by reason.",
        &["namespace"],
    ),
    (
        "logexport_search_unavailable_total",
        "Listings answered without Splunk, by reason.",
        &["not_configured", "timeout"],
    ),
    (
        "logexport_audit_events_total",
        "Audit events delivered to or retried against Splunk HEC.",
        &["delivered", "retried"],
    ),
    (
        "logexport_schedule_runs_total",
        "Scheduled periods enqueued, skipped, schedules paused, and schedule turns blocked \
         because Quay refuses auth.quay_service_token.",
        &["enqueued", "skipped", "paused", "blocked"],
    ),
    (
        "logexport_database_unavailable_total",
        "Database operations that found Postgres unreachable, by component.",
        &[
            "api",
            "claim",
            "heartbeat",
            "record",
            "notify",
            "audit",
            "schedule",
            "quota",
            "listen",
        ],
    ),
];

/// Everything this process measures.
pub struct Metrics {
    registry: Registry,
    jobs_started: Counter,
    job_duration: Histogram,
    outcomes: HashMap<&'static str, Family<Outcome, Counter>>,
    http_responses: Family<Status, Counter>,
    http_duration: Family<Request, Histogram>,
    export_duration: Histogram,
    export_rows: Counter,
    export_bytes: Counter,
    export_rate: Histogram,
    notification_duration: Family<Notification, Histogram>,
    background_panics: Family<Kind, Counter>,
    /// Splunk searches this process runs now (export slices and listings).
    pub searches_running: Gauge,
    queue_jobs: Family<State, Gauge>,
    oldest_queued: Gauge<f64, AtomicU64>,
    schedules: Family<State, Gauge>,
    schedule_lag: Gauge<f64, AtomicU64>,
    schedule_last_run: Gauge,
    runner_jobs: Family<KindState, Gauge>,
    runner_oldest_queued: Family<Kind, Gauge<f64, AtomicU64>>,
    runner_outcomes: Family<KindOutcome, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

fn histogram(buckets: &'static [f64]) -> Histogram {
    Histogram::new(buckets.iter().copied())
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::default();
        // prometheus-client appends `_total` to counters itself.
        let base = |name: &'static str| name.strip_suffix("_total").unwrap_or(name);
        let jobs_started = Counter::default();
        registry.register(
            "logexport_jobs_started",
            "Job attempts started.",
            jobs_started.clone(),
        );
        let job_duration = histogram(&DURATION_BUCKETS);
        registry.register(
            "logexport_job_duration_seconds",
            "Duration of job attempts.",
            job_duration.clone(),
        );
        let mut outcomes = HashMap::new();
        for (name, help, known) in OUTCOME_COUNTERS {
            let family = Family::<Outcome, Counter>::default();
            for outcome in known {
                let _zero = family.get_or_create(&Outcome {
                    outcome: (*outcome).to_owned(),
                });
            }
            registry.register(base(name), help, family.clone());
            outcomes.insert(name, family);
        }
        let http_responses = Family::<Status, Counter>::default();
        registry.register(
            "logexport_http_responses",
            "HTTP responses by status.",
            http_responses.clone(),
        );
        let http_duration =
            Family::<Request, Histogram>::new_with_constructor(|| histogram(&REQUEST_BUCKETS));
        registry.register(
            "logexport_http_request_duration_seconds",
            "HTTP request latency by method, route and status.",
            http_duration.clone(),
        );
        let export_duration = histogram(&DURATION_BUCKETS);
        registry.register(
            "logexport_export_duration_seconds",
            "Duration of successful export attempts.",
            export_duration.clone(),
        );
        let export_rows = Counter::default();
        registry.register(
            "logexport_export_rows",
            "Rows written to export archives.",
            export_rows.clone(),
        );
        let export_bytes = Counter::default();
        registry.register(
            "logexport_export_bytes",
            "Bytes of archives stored.",
            export_bytes.clone(),
        );
        let export_rate = histogram(&RATE_BUCKETS);
        registry.register(
            "logexport_export_events_per_second",
            "Splunk events read per second by each successful export.",
            export_rate.clone(),
        );
        let notification_duration =
            Family::<Notification, Histogram>::new_with_constructor(|| histogram(&REQUEST_BUCKETS));
        registry.register(
            "logexport_notification_duration_seconds",
            "Time of one notification delivery attempt, by channel and outcome.",
            notification_duration.clone(),
        );
        let background_panics = Family::<Kind, Counter>::default();
        for kind in BACKGROUND_KINDS {
            let _zero = background_panics.get_or_create(&Kind {
                kind: kind.to_owned(),
            });
        }
        registry.register(
            "logexport_background_panics",
            "Units of background work (an export attempt, a notification delivery, an audit \
             batch, a scheduler tick, a housekeeping pass) that panicked; their loops went on.",
            background_panics.clone(),
        );
        let searches_running = Gauge::default();
        registry.register(
            "logexport_splunk_searches_running",
            "Splunk searches this process runs now.",
            searches_running.clone(),
        );
        let queue_jobs = Family::<State, Gauge>::default();
        registry.register(
            "logexport_queue_jobs",
            "Export jobs by state.",
            queue_jobs.clone(),
        );
        let oldest_queued = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "logexport_queue_oldest_queued_seconds",
            "Age of the oldest queued export job (0 when none waits).",
            oldest_queued.clone(),
        );
        let schedules = Family::<State, Gauge>::default();
        registry.register(
            "logexport_schedules",
            "Export schedules by state.",
            schedules.clone(),
        );
        let schedule_lag = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "logexport_schedule_lag_seconds",
            "How long the most overdue active schedule's next period has been due.",
            schedule_lag.clone(),
        );
        let schedule_last_run = Gauge::default();
        registry.register(
            "logexport_schedule_last_run_timestamp_seconds",
            "When a scheduler last ran a schedule.",
            schedule_last_run.clone(),
        );
        let runner_jobs = Family::<KindState, Gauge>::default();
        registry.register(
            "logexport_jobs_by_kind",
            "Jobs of the job runner (notifications, ...) by kind and state.",
            runner_jobs.clone(),
        );
        let runner_oldest_queued = Family::<Kind, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "logexport_jobs_oldest_queued_seconds",
            "Seconds the oldest due job of each kind has waited past its due time.",
            runner_oldest_queued.clone(),
        );
        let runner_outcomes = Family::<KindOutcome, Counter>::default();
        registry.register(
            "logexport_jobs_outcomes",
            "Attempts of the job runner's jobs by kind and outcome (succeeded, retried, failed).",
            runner_outcomes.clone(),
        );
        Self {
            registry,
            jobs_started,
            job_duration,
            outcomes,
            http_responses,
            http_duration,
            export_duration,
            export_rows,
            export_bytes,
            export_rate,
            notification_duration,
            background_panics,
            searches_running,
            queue_jobs,
            oldest_queued,
            schedules,
            schedule_lag,
            schedule_last_run,
            runner_jobs,
            runner_oldest_queued,
            runner_outcomes,
        }
    }

    /// A job attempt started.
    pub fn job_started(&self) {
        self.jobs_started.inc();
    }

    /// A job attempt ended with `outcome` after `elapsed`.
    pub fn job_finished(&self, outcome: &str, elapsed: Duration) {
        self.incr("logexport_jobs_finished_total", outcome);
        self.job_duration.observe(elapsed.as_secs_f64());
    }

    /// Increments a counter of [`OUTCOME_COUNTERS`] with one outcome.
    pub fn incr(&self, name: &'static str, label: &str) {
        self.add(name, label, 1);
    }

    /// Adds `n` to a counter of [`OUTCOME_COUNTERS`].
    pub fn add(&self, name: &'static str, label: &str, n: u64) {
        match self.outcomes.get(name) {
            Some(family) => {
                family
                    .get_or_create(&Outcome {
                        outcome: label.to_owned(),
                    })
                    .inc_by(n);
            }
            None => debug_assert!(false, "unregistered counter {name}"),
        }
    }

    /// One HTTP response: its status, and its latency under the route's template.
    pub fn http_response(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let status = status.to_string();
        self.http_responses
            .get_or_create(&Status {
                status: status.clone(),
            })
            .inc();
        self.http_duration
            .get_or_create(&Request {
                method: method.to_owned(),
                route: route.to_owned(),
                status,
            })
            .observe(elapsed.as_secs_f64());
    }

    /// A successful export: its duration, rows, bytes and Splunk read rate.
    pub fn export_succeeded(&self, elapsed: Duration, rows: u64, bytes: u64) {
        let secs = elapsed.as_secs_f64();
        self.export_duration.observe(secs);
        self.export_rows.inc_by(rows);
        self.export_bytes.inc_by(bytes);
        if secs > 0.0 {
            self.export_rate.observe(rows as f64 / secs);
        }
    }

    /// One notification delivery attempt on `channel`.
    pub fn notification(&self, channel: &str, outcome: &str, elapsed: Duration) {
        self.incr(
            "logexport_notifications_total",
            &format!("{channel}_{outcome}"),
        );
        self.notification_duration
            .get_or_create(&Notification {
                channel: channel.to_owned(),
                outcome: outcome.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// An attempt of a job runner's job of `kind` ended with `outcome`.
    pub fn job_outcome(&self, kind: &str, outcome: &str) {
        self.runner_outcomes
            .get_or_create(&KindOutcome {
                kind: kind.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// A unit of background work of `kind` panicked.
    pub fn background_panic(&self, kind: &str) {
        self.background_panics
            .get_or_create(&Kind {
                kind: kind.to_owned(),
            })
            .inc();
    }

    /// Renders everything as OpenMetrics text, with the database figures read at scrape time.
    pub fn render(&self, scrape: &Scrape) -> String {
        for (state, n) in &scrape.queue_depth {
            self.queue_jobs
                .get_or_create(&State {
                    state: state.clone(),
                })
                .set(*n);
        }
        self.oldest_queued.set(scrape.oldest_queued_seconds);
        let schedules = [
            ("active", scrape.schedules_active),
            ("paused", scrape.schedules_paused),
        ];
        for (state, n) in schedules {
            self.schedules
                .get_or_create(&State {
                    state: state.to_owned(),
                })
                .set(n);
        }
        self.schedule_lag.set(scrape.schedule_max_lag_seconds);
        self.schedule_last_run.set(scrape.schedule_last_run);
        for (kind, state, n) in &scrape.jobs {
            self.runner_jobs
                .get_or_create(&KindState {
                    kind: kind.clone(),
                    state: state.clone(),
                })
                .set(*n);
        }
        for (kind, seconds) in &scrape.jobs_oldest_queued_seconds {
            self.runner_oldest_queued
                .get_or_create(&Kind { kind: kind.clone() })
                .set(*seconds);
        }
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("encoding to a String");
        out
    }
}

/// What `/metrics` reads from the database at scrape time, as plain numbers.
#[derive(Debug, Default)]
pub struct Scrape {
    /// Exports per queue state; name every state (0 when none), so one that emptied reads 0.
    pub queue_depth: Vec<(String, i64)>,
    pub oldest_queued_seconds: f64,
    pub schedules_active: i64,
    pub schedules_paused: i64,
    /// Seconds the most overdue active schedule is late.
    pub schedule_max_lag_seconds: f64,
    /// Unix time any schedule last ran; 0 when none has.
    pub schedule_last_run: i64,
    /// The job runner's jobs per (kind, state); name every pair (0 when none).
    pub jobs: Vec<(String, String, i64)>,
    /// Per kind, seconds its oldest due job has waited (0 when none waits).
    pub jobs_oldest_queued_seconds: Vec<(String, f64)>,
}

/// The OpenMetrics text format's content type.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_keep_their_names_and_histograms_their_routes() {
        let metrics = Metrics::new();
        metrics.incr("logexport_export_slices_total", "split");
        metrics.http_response(
            "GET",
            "/api/v1/organization/{orgname}/logs",
            200,
            Duration::from_millis(3),
        );
        metrics.export_succeeded(Duration::from_secs(2), 100_000, 1_000);
        let text = metrics.render(&Scrape {
            queue_depth: vec![("queued".into(), 0)],
            ..Scrape::default()
        });
        assert!(text.contains("logexport_export_slices_total{outcome=\"split\"} 1"));
        assert!(text.contains("logexport_http_responses_total{status=\"200\"} 1"));
        assert!(text.contains(
            "logexport_http_request_duration_seconds_count{method=\"GET\",route=\"/api/v1/organization/{orgname}/logs\",status=\"200\"} 1"
        ));
        assert!(text.contains("logexport_export_rows_total 100000"));
        assert!(text.contains("logexport_queue_jobs{state=\"queued\"} 0"));
        assert!(text.ends_with("# EOF\n"));
    }
}
