//! Audit delivery as a kind of job (`worker::jobs`): one `audit_event` job per event, enqueued in
//! the request's own transaction with the event's id as its unique key, so an event exists iff
//! its request committed and is enqueued once. An attempt posts the event to Splunk HEC; the
//! runner leases it while in flight (the lease outlives an outage of the database, so an event
//! HEC accepted is recorded by the runner that sent it, never sent again by another), retries it
//! with the `[audit]` backoff, and counts a panic as a failed attempt.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sqlx::PgPool;
use uuid::Uuid;

use super::AuditEvent;
use super::hec::{BeforePost, Hec};
use crate::config::{AuditSink, Config};
use crate::metrics::METRICS;
use crate::queue::RetryPolicy;
use crate::queue::jobs::AUDIT_EVENT;
use crate::worker::WorkKind;
use crate::worker::jobs::{Attempt, Failure, Job, JobRunner, RunnerSettings};

/// Audit events posted at once per process: HEC takes small posts quickly, and a few in flight
/// keep a backlog after an HEC outage draining without crowding the other kinds' connections.
const CONCURRENCY: usize = 4;

/// An `audit_event` job's arguments: the event as it is shipped (Quay's `log_data`) and its id.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditEventArgs {
    pub id: Uuid,
    /// HEC's `event`: a JSON object, its `datetime` is the envelope's `time`.
    pub event: Map<String, Value>,
}

impl AuditEventArgs {
    /// The arguments that ship `event`.
    pub fn of(event: &AuditEvent) -> Self {
        Self {
            id: event.id,
            event: event.log_data(),
        }
    }
}

/// The kind of job that delivers one audit event to Splunk HEC.
pub struct AuditDelivery {
    hec: Hec,
    retry: RetryPolicy,
    lease: Duration,
    settings: RunnerSettings,
}

impl AuditDelivery {
    /// The kind for `[audit]`; `None` when the sink is `none`.
    pub fn new(config: &Config) -> anyhow::Result<Option<Self>> {
        let audit = &config.audit;
        if audit.sink == AuditSink::None {
            return Ok(None);
        }
        Ok(Some(Self {
            hec: Hec::new(config)?,
            retry: RetryPolicy {
                base: Duration::from_secs(audit.backoff_base_seconds.max(1)),
                max: Duration::from_secs(audit.backoff_max_seconds.max(1)),
            },
            // Longer than a post can take, so two runners never send the same event at once.
            lease: Duration::from_secs(audit.timeout_seconds.max(1) * 2 + 30),
            settings: RunnerSettings {
                concurrency: CONCURRENCY,
                poll_interval: Duration::from_millis(audit.poll_interval_ms.max(10)),
            },
        }))
    }

    /// Installs the [`BeforePost`] test seam.
    pub fn with_before_post(mut self, hook: BeforePost) -> Self {
        self.hec.before_post = Some(hook);
        self
    }

    /// The runner of this kind, with its concurrency and `audit.poll_interval_ms`.
    pub fn into_runner(self, pool: PgPool) -> JobRunner<Self> {
        tracing::info!(url = %self.hec.url, "audit events go to Splunk HEC");
        let settings = self.settings;
        JobRunner::new(pool, self, settings)
    }
}

impl Job for AuditDelivery {
    const KIND: &'static str = AUDIT_EVENT;
    const WORK: WorkKind = WorkKind::AuditShipping;
    type Args = AuditEventArgs;
    type Progress = ();

    /// Unbounded in practice: an audit event is never given up, it waits for HEC however long
    /// HEC is away (with `backoff_max_seconds` >= 1, this many attempts outlast the service).
    fn max_attempts(&self) -> i32 {
        i32::MAX
    }

    fn retry_policy(&self) -> RetryPolicy {
        self.retry
    }

    fn lease(&self) -> Duration {
        self.lease
    }

    async fn run(&self, args: AuditEventArgs, attempt: &mut Attempt<()>) -> Result<(), Failure> {
        match self.hec.ship(&[args.id], &[&args.event]).await {
            Ok(()) => {
                METRICS.incr("logexport_audit_events_total", "delivered");
                Ok(())
            }
            Err(error) => {
                METRICS.incr("logexport_audit_events_total", "retried");
                tracing::warn!(%error, event_id = %args.id, attempt = attempt.number,
                    "audit event not delivered to Splunk HEC; kept for a retry");
                Err(Failure::Retry {
                    error: error.to_string(),
                    after: None,
                })
            }
        }
    }
}
