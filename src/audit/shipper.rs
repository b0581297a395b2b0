//! Delivers the audit outbox to Splunk HTTP Event Collector, oldest first, in batches; rows
//! are leased while in flight (taken with `SKIP LOCKED`), so any number of workers ship each
//! event once per attempt, and deleted only after HEC accepted them. The lease, unlike a row
//! lock, outlives an outage of the database: events HEC accepted meanwhile are deleted by the
//! shipper that sent them once the database is back, never sent again by another.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::{AuditSink, Config, Secret};
use crate::metrics::METRICS;
use crate::queue::RetryPolicy;
use crate::worker::{WorkKind, contain};

const BATCH: i64 = 100;

/// A test seam, called with a batch's event ids just before the batch is sent, inside the
/// batch's unit of work: a test makes it panic to show that the batch is retried later, neither
/// lost nor sent twice. Not set outside tests.
pub type BeforePost = Arc<dyn Fn(&[Uuid]) + Send + Sync>;

/// The outbox's delivery loop.
pub struct Shipper {
    pool: PgPool,
    hec: Hec,
    retry: RetryPolicy,
    poll: Duration,
    /// Longer than a delivery can take.
    lease: Duration,
    /// Events HEC accepted whose deletion waits for the database.
    delivered: Mutex<Vec<Uuid>>,
}

impl Shipper {
    /// The shipper for `[audit]`; `None` when the sink is `none`.
    pub fn new(pool: PgPool, config: &Config) -> anyhow::Result<Option<Self>> {
        let audit = &config.audit;
        if audit.sink == AuditSink::None {
            return Ok(None);
        }
        let http = crate::http_client::builder(
            audit.verify_ssl,
            audit.ssl_ca_path.as_deref(),
            "audit.ssl_ca_path",
        )
        .map_err(anyhow::Error::msg)?
        .timeout(Duration::from_secs(audit.timeout_seconds.max(1)))
        .build()?;
        let host = if audit.host.is_empty() {
            url::Url::parse(&config.server.public_url)
                .ok()
                .and_then(|u| u.host_str().map(str::to_owned))
                .unwrap_or_else(|| "logexport".into())
        } else {
            audit.host.clone()
        };
        Ok(Some(Self {
            pool,
            hec: Hec {
                http,
                url: audit.hec_url.clone(),
                token: audit.hec_token.clone(),
                index: audit.index.clone(),
                sourcetype: audit.sourcetype.clone(),
                host,
                before_post: None,
            },
            retry: RetryPolicy {
                base: Duration::from_secs(audit.backoff_base_seconds.max(1)),
                max: Duration::from_secs(audit.backoff_max_seconds.max(1)),
            },
            poll: Duration::from_millis(audit.poll_interval_ms.max(10)),
            lease: Duration::from_secs(audit.timeout_seconds.max(1) * 2 + 30),
            delivered: Mutex::default(),
        }))
    }

    /// Installs the [`BeforePost`] test seam.
    pub fn with_before_post(mut self, hook: BeforePost) -> Self {
        self.hec.before_post = Some(hook);
        self
    }

    /// Ships until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        tracing::info!(url = %self.hec.url, "audit events go to Splunk HEC");
        let this = Arc::new(self);
        loop {
            let shipper = this.clone();
            let shipped = contain(
                WorkKind::AuditShipping,
                async move { shipper.ship_once().await },
            );
            let more = match shipped.await {
                Ok(Ok(shipped)) => shipped == BATCH as usize,
                Ok(Err(e)) if crate::db::is_unavailable(&e) => {
                    crate::db::report_unavailable("audit", &e);
                    false
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "audit outbox: shipping failed");
                    false
                }
                // Outside the post (whose panic is a failed attempt, see `ship_once`): the
                // batch's lease runs out and it is shipped again.
                Err(_) => false,
            };
            if more {
                continue;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(this.poll) => {}
            }
        }
    }

    /// Tries one batch of due events; returns how many were delivered.
    pub async fn ship_once(&self) -> sqlx::Result<usize> {
        self.forget_delivered().await?;
        let mut rows: Vec<(Uuid, Value, i32, DateTime<Utc>)> = sqlx::query_as(
            "UPDATE audit_outbox SET leased_until = now() + make_interval(secs => $2)
             WHERE id IN (
                 SELECT id FROM audit_outbox
                 WHERE next_attempt_at <= now()
                   AND (leased_until IS NULL
                        OR (leased_until < now()
                            AND now() > pg_postmaster_start_time() + make_interval(secs => $3)))
                 ORDER BY created_at, id LIMIT $1 FOR UPDATE SKIP LOCKED)
             RETURNING id, event, attempts, created_at",
        )
        .bind(BATCH)
        .bind(self.lease.as_secs_f64())
        .bind(crate::queue::storage::RESTART_GRACE.as_secs_f64())
        .fetch_all(&self.pool)
        .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        rows.sort_by_key(|(id, _, _, created_at)| (*created_at, *id));
        let ids: Vec<Uuid> = rows.iter().map(|(id, _, _, _)| *id).collect();
        let attempts = rows.iter().map(|(_, _, a, _)| *a).max().unwrap_or(0) as u32 + 1;
        let events: Vec<Value> = rows.into_iter().map(|(_, event, _, _)| event).collect();
        // A unit of its own: a panic before HEC answered is a failed attempt of the batch,
        // retried with the backoff below like a refused post.
        let hec = self.hec.clone();
        let batch = ids.clone();
        let posted = contain(WorkKind::AuditShipping, async move {
            hec.ship(&batch, &events).await
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
        match posted {
            Ok(()) => {
                for _ in &ids {
                    METRICS.incr("logexport_audit_events_total", "delivered");
                }
                self.delivered
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend(&ids);
                self.forget_delivered().await?;
                Ok(ids.len())
            }
            Err(error) => {
                let delay = self.retry.delay(attempts);
                tracing::warn!(%error, events = ids.len(), attempts, retry_in = ?delay,
                    "audit events not delivered to Splunk HEC; kept for a retry");
                sqlx::query(
                    "UPDATE audit_outbox SET attempts = attempts + 1, last_error = $2,
                         next_attempt_at = now() + make_interval(secs => $3), leased_until = NULL
                     WHERE id = ANY($1)",
                )
                .bind(&ids)
                .bind(&error)
                .bind(delay.as_secs_f64())
                .execute(&self.pool)
                .await?;
                METRICS.incr("logexport_audit_events_total", "retried");
                Ok(0)
            }
        }
    }

    /// Deletes the events HEC accepted; kept for the next try while the database is away.
    async fn forget_delivered(&self) -> sqlx::Result<()> {
        let ids = self
            .delivered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        if ids.is_empty() {
            return Ok(());
        }
        sqlx::query("DELETE FROM audit_outbox WHERE id = ANY($1)")
            .bind(&ids)
            .execute(&self.pool)
            .await?;
        self.delivered
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|id| !ids.contains(id));
        Ok(())
    }
}

/// Splunk HTTP Event Collector, as the shipper posts to it.
#[derive(Clone)]
struct Hec {
    http: reqwest::Client,
    url: String,
    token: Secret,
    index: String,
    sourcetype: String,
    host: String,
    before_post: Option<BeforePost>,
}

impl Hec {
    /// Sends one batch of events (with their `ids`) in Splunk's envelope.
    async fn ship(&self, ids: &[Uuid], events: &[Value]) -> Result<(), String> {
        if let Some(hook) = &self.before_post {
            hook(ids);
        }
        let mut body = Vec::new();
        for event in events {
            let mut envelope = json!({
                "event": event,
                "time": event["datetime"],
                "host": self.host,
                "sourcetype": self.sourcetype,
            });
            if !self.index.is_empty() {
                envelope["index"] = Value::from(self.index.as_str());
            }
            serde_json::to_writer(&mut body, &envelope).expect("JSON to memory");
        }
        self.post(body).await
    }

    async fn post(&self, body: Vec<u8>) -> Result<(), String> {
        let response = self
            .http
            .post(&self.url)
            .header("authorization", format!("Splunk {}", self.token.expose()))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .map_err(|e| {
                if crate::http_client::is_certificate_error(&e) {
                    format!(
                        "HEC {}: {e}; {}",
                        self.url,
                        crate::http_client::certificate_hint("audit.ssl_ca_path")
                    )
                } else {
                    format!("HEC unreachable: {e}")
                }
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let text = response.text().await.unwrap_or_default();
        Err(format!(
            "HEC answered {status}: {}",
            text.chars().take(200).collect::<String>()
        ))
    }
}
