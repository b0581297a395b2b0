//! Delivers the audit outbox to Splunk HTTP Event Collector, oldest first, in batches; rows
//! are locked while in flight (`SKIP LOCKED`), so any number of workers ship each event once
//! per attempt, and deleted only after HEC accepted them.

use std::time::Duration;

use serde_json::{Value, json};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::config::{AuditSink, Config, Secret};
use crate::metrics::METRICS;
use crate::queue::RetryPolicy;

const BATCH: i64 = 100;

/// The outbox's delivery loop.
pub struct Shipper {
    pool: PgPool,
    http: reqwest::Client,
    url: String,
    token: Secret,
    index: String,
    sourcetype: String,
    host: String,
    retry: RetryPolicy,
    poll: Duration,
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
            http,
            url: audit.hec_url.clone(),
            token: audit.hec_token.clone(),
            index: audit.index.clone(),
            sourcetype: audit.sourcetype.clone(),
            host,
            retry: RetryPolicy {
                base: Duration::from_secs(audit.backoff_base_seconds.max(1)),
                max: Duration::from_secs(audit.backoff_max_seconds.max(1)),
            },
            poll: Duration::from_millis(audit.poll_interval_ms.max(10)),
        }))
    }

    /// Ships until `shutdown`.
    pub async fn run(self, shutdown: CancellationToken) {
        tracing::info!(url = %self.url, "audit events go to Splunk HEC");
        loop {
            let more = match self.ship_once().await {
                Ok(shipped) => shipped == BATCH as usize,
                Err(e) => {
                    tracing::warn!(error = %e, "audit outbox: database unavailable");
                    false
                }
            };
            if more {
                continue;
            }
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.poll) => {}
            }
        }
    }

    /// Tries one batch of due events; returns how many were delivered.
    pub async fn ship_once(&self) -> sqlx::Result<usize> {
        let mut tx = self.pool.begin().await?;
        let rows: Vec<(Uuid, Value, i32)> = sqlx::query_as(
            "SELECT id, event, attempts FROM audit_outbox WHERE next_attempt_at <= now()
             ORDER BY created_at, id LIMIT $1 FOR UPDATE SKIP LOCKED",
        )
        .bind(BATCH)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Ok(0);
        }
        let ids: Vec<Uuid> = rows.iter().map(|(id, _, _)| *id).collect();
        let mut body = Vec::new();
        for (_, event, _) in &rows {
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
        match self.post(body).await {
            Ok(()) => {
                sqlx::query("DELETE FROM audit_outbox WHERE id = ANY($1)")
                    .bind(&ids)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
                for _ in &ids {
                    METRICS.incr("logexport_audit_events_total", "delivered");
                }
                Ok(ids.len())
            }
            Err(error) => {
                let attempts = rows.iter().map(|(_, _, a)| *a).max().unwrap_or(0) as u32 + 1;
                let delay = self.retry.delay(attempts);
                tracing::warn!(%error, events = ids.len(), attempts, retry_in = ?delay,
                    "audit events not delivered to Splunk HEC; kept for a retry");
                sqlx::query(
                    "UPDATE audit_outbox SET attempts = attempts + 1, last_error = $2,
                         next_attempt_at = now() + make_interval(secs => $3)
                     WHERE id = ANY($1)",
                )
                .bind(&ids)
                .bind(&error)
                .bind(delay.as_secs_f64())
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                METRICS.incr("logexport_audit_events_total", "retried");
                Ok(0)
            }
        }
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
            .map_err(|e| format!("HEC unreachable: {e}"))?;
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
