//! The Splunk search quota, shared by every process: a Splunk role runs at most `srchJobsQuota`
//! searches at once (3 by default) and answers more with 503, and every worker and the listing
//! endpoints use the one Splunk user. So each search first takes a permit here: a row in
//! `splunk_searches`, counted under an advisory lock, leased and renewed while the search runs,
//! deleted when it ends. A process that dies leaves a lease that expires.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::SplunkError;
use crate::metrics::METRICS;

/// How long a permit lives without renewal; a crashed holder frees its slot after this.
const LEASE: Duration = Duration::from_secs(15);
/// The first wait for a busy quota; doubles up to half a second.
const FIRST_PAUSE: Duration = Duration::from_millis(25);
/// Any constant: the advisory lock that serialises counting and taking permits.
const LOCK_KEY: i64 = 0x6c6f_6765_7870_7131; // "logexpq1"

/// The cluster-wide limit on concurrent Splunk searches.
#[derive(Debug, Clone)]
pub struct SearchQuota {
    inner: Arc<QuotaInner>,
}

#[derive(Debug)]
struct QuotaInner {
    pool: PgPool,
    limit: u32,
    holder: String,
    /// Woken when one of this process's permits is freed, so its own waiters need not poll.
    freed: Notify,
}

/// One running search's share of the quota; freed when dropped.
#[derive(Debug)]
pub struct SearchPermit {
    id: Uuid,
    quota: Arc<QuotaInner>,
    renew: JoinHandle<()>,
}

impl SearchQuota {
    /// A quota of `limit` searches coordinated through `pool`'s database.
    pub fn new(pool: PgPool, limit: u32) -> Self {
        let holder = format!(
            "{}:{}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "logexport".into()),
            std::process::id()
        );
        Self {
            inner: Arc::new(QuotaInner {
                pool,
                limit: limit.max(1),
                holder,
                freed: Notify::new(),
            }),
        }
    }

    /// A quota over a small lazily connected pool of its own, for clients built from
    /// configuration alone.
    pub fn connect_lazy(
        database_url: &str,
        limit: u32,
        acquire_timeout: Duration,
    ) -> Result<Self, SplunkError> {
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .acquire_timeout(acquire_timeout)
            .connect_lazy(database_url)
            .map_err(|e| {
                SplunkError::Config(format!(
                    "database.url is unusable for the Splunk search quota: {e}"
                ))
            })?;
        Ok(Self::new(pool, limit))
    }

    /// The limit.
    pub fn limit(&self) -> u32 {
        self.inner.limit
    }

    /// Searches holding a permit now, across every process.
    pub async fn running(&self) -> Result<i64, SplunkError> {
        sqlx::query_scalar(
            "SELECT count(*) FROM splunk_searches WHERE lease_expires_at > clock_timestamp()",
        )
        .fetch_one(&self.inner.pool)
        .await
        .map_err(database_error)
    }

    /// Waits for a free slot (up to `wait`) and takes it; past `wait` the answer is the retryable
    /// quota error Splunk itself would give.
    pub async fn acquire(
        &self,
        purpose: &str,
        wait: Duration,
    ) -> Result<SearchPermit, SplunkError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut pause = FIRST_PAUSE;
        loop {
            // Listening before looking: a permit freed meanwhile in this process wakes us.
            let freed = self.inner.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Some(id) = self.try_take(purpose).await? {
                METRICS.searches_running.inc();
                return Ok(SearchPermit {
                    id,
                    quota: self.inner.clone(),
                    renew: tokio::spawn(renew(self.inner.pool.clone(), id)),
                });
            }
            if pause == FIRST_PAUSE {
                METRICS.incr("logexport_splunk_quota_waits_total", "waited");
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                METRICS.incr("logexport_splunk_quota_waits_total", "gave_up");
                return Err(SplunkError::Http {
                    status: 503,
                    message: format!(
                        "all {} Splunk searches allowed at once (splunk.max_concurrent_searches) \
                         stayed busy for {} s",
                        self.inner.limit,
                        wait.as_secs()
                    ),
                    retryable: true,
                });
            }
            let jitter = rand::thread_rng().gen_range(0..=pause.as_millis() as u64 / 2);
            let sleep = (pause + Duration::from_millis(jitter)).min(deadline - now);
            // Another process's permits are only seen by looking again; this process's own are
            // taken over as soon as they are freed (a slice reader handing on to the next).
            tokio::select! {
                () = tokio::time::sleep(sleep) => pause = (pause * 2).min(Duration::from_millis(500)),
                () = freed => {}
            }
        }
    }

    async fn try_take(&self, purpose: &str) -> Result<Option<Uuid>, SplunkError> {
        let inner = &self.inner;
        let mut tx = inner.pool.begin().await.map_err(database_error)?;
        sqlx::query("SELECT pg_advisory_xact_lock($1)")
            .bind(LOCK_KEY)
            .execute(&mut *tx)
            .await
            .map_err(database_error)?;
        sqlx::query("DELETE FROM splunk_searches WHERE lease_expires_at <= clock_timestamp()")
            .execute(&mut *tx)
            .await
            .map_err(database_error)?;
        let running: i64 = sqlx::query_scalar("SELECT count(*) FROM splunk_searches")
            .fetch_one(&mut *tx)
            .await
            .map_err(database_error)?;
        if running >= i64::from(inner.limit) {
            tx.commit().await.map_err(database_error)?;
            return Ok(None);
        }
        let id = Uuid::new_v4();
        sqlx::query(
            "INSERT INTO splunk_searches (id, holder, purpose, lease_expires_at)
             VALUES ($1, $2, $3, clock_timestamp() + make_interval(secs => $4))",
        )
        .bind(id)
        .bind(&inner.holder)
        .bind(purpose)
        .bind(LEASE.as_secs_f64())
        .execute(&mut *tx)
        .await
        .map_err(database_error)?;
        tx.commit().await.map_err(database_error)?;
        Ok(Some(id))
    }
}

/// Keeps a permit's lease alive while its search runs.
async fn renew(pool: PgPool, id: Uuid) {
    loop {
        tokio::time::sleep(LEASE / 3).await;
        let renewed = sqlx::query(
            "UPDATE splunk_searches SET lease_expires_at = clock_timestamp() + make_interval(secs => $2)
             WHERE id = $1",
        )
        .bind(id)
        .bind(LEASE.as_secs_f64())
        .execute(&pool)
        .await;
        if let Err(e) = renewed {
            tracing::warn!(error = %e, "renewing a Splunk search permit failed; retrying");
        }
    }
}

impl Drop for SearchPermit {
    fn drop(&mut self) {
        METRICS.searches_running.dec();
        self.renew.abort();
        let (quota, id) = (self.quota.clone(), self.id);
        // Freed in the background: a drop cannot wait. Should it fail, the lease expires.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                match sqlx::query("DELETE FROM splunk_searches WHERE id = $1")
                    .bind(id)
                    .execute(&quota.pool)
                    .await
                {
                    Ok(_) => quota.freed.notify_waiters(),
                    Err(e) => tracing::warn!(error = %e, "freeing a Splunk search permit failed; its lease will expire"),
                }
            });
        }
    }
}

fn database_error(e: sqlx::Error) -> SplunkError {
    if crate::db::is_unavailable(&e) {
        crate::db::report_unavailable("quota", &e);
        return SplunkError::Database(e.to_string());
    }
    SplunkError::Http {
        status: 503,
        message: format!("the Splunk search quota could not be read from Postgres: {e}"),
        retryable: true,
    }
}
