//! The Splunk search quota, shared by every process: a Splunk role runs at most `srchJobsQuota`
//! searches at once (3 by default) and answers more with 503, and every worker and the listing
//! endpoints use the one Splunk user. So each search first takes a permit here: one of the
//! numbered places in `splunk_search_slots`, taken in one statement that skips places another
//! process is taking at that moment, leased and renewed while the search runs, freed when it
//! ends. Freeing a place notifies every process (`NOTIFY logexport_search_freed`), so a waiter
//! anywhere takes it at once instead of finding it at its next look: one waiter per process, as
//! only one can have it. A process that dies leaves a
//! lease that expires.
//!
//! A place freed while a search of the same process waits goes straight to that waiter (the
//! oldest first), without a round trip: at month-end every process has searches waiting, and
//! each trip through Postgres leaves the place idle while Splunk could be reading (3-10 ms on 6
//! processes sharing two cores, against under 1 ms handed on). So that other processes get their
//! turn, a place passes on this way for [`LOCAL_HOLD`] after it was taken from Postgres, then
//! goes back there: a time, not a number of searches, so the trips cost the same share of the
//! quota however short the searches are (at month-end an export's search takes 0.16 s), and a
//! search waiting in another process waits at most about that long more.
//!
//! Only the first of a process's waiters looks in Postgres; the others wait to be woken (by a
//! place freed, or by the one before them taking a place, as another may be free) and look
//! only now and then. At month-end on 6 processes that is about 130 statements fewer per 150
//! exports, each of which would have found every place held.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use sqlx::PgPool;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;
use uuid::Uuid;

use super::SplunkError;
use crate::metrics::METRICS;

/// How long a permit lives without renewal; a crashed holder frees its slot after this.
const LEASE: Duration = Duration::from_secs(15);
/// The first wait for a busy quota; doubles up to [`LAST_PAUSE`]. Waiters are woken when a place
/// is freed; these looks only cover a place whose holder died (its lease expired). 25 ms before
/// 2026-12-07: at month-end on one process, about 70 more looks per 150 exports, all of them
/// finding every place held.
const FIRST_PAUSE: Duration = Duration::from_millis(100);
const LAST_PAUSE: Duration = Duration::from_millis(500);
/// The looks of a waiter behind the first of its process: at month-end every process has dozens
/// waiting, and each look is a statement on the quota's rows.
const BEHIND_PAUSE: Duration = Duration::from_secs(2);
/// The channel a freed place is announced on.
const FREED_CHANNEL: &str = "logexport_search_freed";
/// How long a place passes from one search to a waiting one of the same process, from when it
/// was taken, before it is freed through Postgres for every process (see the module's
/// documentation). Four searches at most, before 2026-12-07: at month-end, a trip through
/// Postgres every 0.8 s.
pub const LOCAL_HOLD: Duration = Duration::from_secs(2);

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
    /// Woken when a place is freed, in this process or (through the listener) in another.
    freed: Arc<Notify>,
    /// The places exist and the listener runs, once the first permit is asked for.
    ready: tokio::sync::OnceCell<JoinHandle<()>>,
    /// This process's waiters, oldest first: a place freed here is handed to the first.
    waiters: Mutex<VecDeque<(u64, oneshot::Sender<SearchPermit>)>>,
    next_waiter: AtomicU64,
    /// Woken when a waiter leaves this process's line.
    line_shortened: Notify,
    /// [`LOCAL_HOLD`], or a test's.
    local_hold: Duration,
}

impl QuotaInner {
    /// Searches of this process in line for a place.
    fn waiters_len(&self) -> usize {
        self.waiters.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether `ticket` is first in this process's line.
    fn is_first(&self, ticket: u64) -> bool {
        let waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        waiters.front().is_some_and(|(first, _)| *first == ticket)
    }

    /// The oldest waiter still in line, taken out of it.
    fn first_waiter(&self) -> Option<oneshot::Sender<SearchPermit>> {
        let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        while let Some((_, tx)) = waiters.pop_front() {
            if !tx.is_closed() {
                return Some(tx);
            }
        }
        None
    }
}

/// A waiter's place in this process's line; leaving (a permit taken, or the wait given up)
/// takes it out.
struct InLine<'a> {
    inner: &'a QuotaInner,
    ticket: u64,
}

impl Drop for InLine<'_> {
    fn drop(&mut self) {
        let mut waiters = self.inner.waiters.lock().unwrap_or_else(|p| p.into_inner());
        waiters.retain(|(ticket, _)| *ticket != self.ticket);
        self.inner.line_shortened.notify_waiters();
    }
}

impl Drop for QuotaInner {
    fn drop(&mut self) {
        if let Some(listener) = self.ready.get() {
            listener.abort();
        }
    }
}

/// One running search's place in the quota; when dropped, handed to a waiter of this process or
/// freed.
#[derive(Debug)]
pub struct SearchPermit {
    id: Uuid,
    quota: Arc<QuotaInner>,
    /// Renews the place's lease; `None` once the place has moved on.
    renew: Option<JoinHandle<()>>,
    /// When this process took the place from Postgres (it passed between its searches since).
    taken_at: tokio::time::Instant,
    /// Other searches wanted a place when this one got it (see [`SearchPermit::contended`]).
    contended: bool,
}

impl SearchQuota {
    /// A quota of `limit` searches coordinated through `pool`'s database.
    pub fn new(pool: PgPool, limit: u32) -> Self {
        Self::with_local_hold(pool, limit, LOCAL_HOLD)
    }

    /// [`SearchQuota::new`], a place passing within this process for `local_hold` instead of
    /// [`LOCAL_HOLD`] (tests use a shorter one).
    pub fn with_local_hold(pool: PgPool, limit: u32, local_hold: Duration) -> Self {
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
                freed: Arc::new(Notify::new()),
                ready: tokio::sync::OnceCell::new(),
                waiters: Mutex::default(),
                next_waiter: AtomicU64::new(0),
                line_shortened: Notify::new(),
                local_hold,
            }),
        }
    }

    /// The limit.
    pub fn limit(&self) -> u32 {
        self.inner.limit
    }

    /// Searches of this process waiting for a place now.
    pub fn waiting(&self) -> usize {
        self.inner.waiters_len()
    }

    /// Returns once fewer than the limit of this process's searches wait for a place.
    pub async fn until_line_short(&self) {
        loop {
            let shortened = self.inner.line_shortened.notified();
            tokio::pin!(shortened);
            shortened.as_mut().enable();
            if self.waiting() < self.inner.limit as usize {
                return;
            }
            shortened.await;
        }
    }

    /// Searches holding a permit now, across every process.
    pub async fn running(&self) -> Result<i64, SplunkError> {
        sqlx::query_scalar(
            "SELECT count(*) FROM splunk_search_slots WHERE lease_expires_at > clock_timestamp()",
        )
        .fetch_one(&self.inner.pool)
        .await
        .map_err(database_error)
    }

    /// Waits for a free slot (up to `wait`) and takes it; past `wait` the answer is the retryable
    /// [`SplunkError::Busy`], which asked Splunk nothing.
    pub async fn acquire(
        &self,
        purpose: &str,
        wait: Duration,
    ) -> Result<SearchPermit, SplunkError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut pause = FIRST_PAUSE;
        let mut waited = false;
        self.start().await?;
        let inner = &*self.inner;
        // In line before looking: a place this process frees meanwhile comes here.
        let (tx, mut handed) = oneshot::channel();
        let ticket = inner.next_waiter.fetch_add(1, Ordering::Relaxed);
        // Behind others of this process, which found the quota full: the first look is theirs
        // (one is woken by every place freed), and this one's would only find it full too.
        let mut look = {
            let mut waiters = inner.waiters.lock().unwrap_or_else(|p| p.into_inner());
            waiters.push_back((ticket, tx));
            waiters.len() == 1
        };
        let _in_line = InLine { inner, ticket };
        let id = loop {
            // Listening before looking: a place freed meanwhile wakes us.
            let freed = inner.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            if let Ok(permit) = handed.try_recv() {
                return Ok(permit);
            }
            let looking = std::mem::replace(&mut look, true);
            if looking && let Some(id) = self.try_take(purpose).await? {
                break id;
            }
            if !waited {
                METRICS.incr("logexport_splunk_quota_waits_total", "waited");
                waited = true;
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                METRICS.incr("logexport_splunk_quota_waits_total", "gave_up");
                return Err(SplunkError::Busy {
                    limit: inner.limit,
                    seconds: wait.as_secs(),
                });
            }
            // The first in line looks again soon; the others rely on being woken, and only look
            // now and then (a place whose holder died frees when its lease expires, unannounced).
            let pause_now = if inner.is_first(ticket) {
                pause
            } else {
                BEHIND_PAUSE
            };
            let jitter = rand::thread_rng().gen_range(0..=pause_now.as_millis() as u64 / 2);
            let sleep = (pause_now + Duration::from_millis(jitter)).min(deadline - now);
            tokio::select! {
                () = tokio::time::sleep(sleep) => pause = (pause * 2).min(LAST_PAUSE),
                () = freed => {}
                permit = &mut handed => if let Ok(permit) = permit {
                    return Ok(permit);
                },
            }
        };
        METRICS.searches_running.inc();
        // A place handed over meanwhile moves on to the next waiter (its drop does).
        drop(handed.try_recv());
        // Others of this process wait behind this one (which is still in line itself): the next
        // looks now, as there may be another place free, and those behind it did not look.
        let behind = inner.waiters_len() > 1;
        if behind {
            inner.freed.notify_one();
        }
        Ok(SearchPermit {
            id,
            quota: self.inner.clone(),
            renew: Some(tokio::spawn(renew(inner.pool.clone(), id))),
            taken_at: tokio::time::Instant::now(),
            // Waited for it, or others wait behind it.
            contended: waited || behind,
        })
    }

    /// Makes sure the places below the limit exist and the listener for freed places runs; the
    /// first permit asked for does it, if a process did not at its start.
    pub async fn start(&self) -> Result<(), SplunkError> {
        let inner = &self.inner;
        inner
            .ready
            .get_or_try_init(|| async {
                sqlx::query(
                    "INSERT INTO splunk_search_slots (slot) SELECT generate_series(0, $1 - 1)
                     ON CONFLICT DO NOTHING",
                )
                .bind(inner.limit as i32)
                .execute(&inner.pool)
                .await
                .map_err(database_error)?;
                Ok::<_, SplunkError>(tokio::spawn(listen(
                    inner.pool.clone(),
                    Arc::downgrade(&inner.freed),
                )))
            })
            .await?;
        Ok(())
    }

    /// Takes the first free place below the limit, if there is one: one statement, which skips
    /// the places other processes are taking at this moment rather than waiting for them.
    async fn try_take(&self, purpose: &str) -> Result<Option<Uuid>, SplunkError> {
        let inner = &self.inner;
        let id = Uuid::new_v4();
        let taken: Option<i32> = sqlx::query_scalar(
            "UPDATE splunk_search_slots
             SET permit = $1, holder = $2, purpose = $3, acquired_at = clock_timestamp(),
                 lease_expires_at = clock_timestamp() + make_interval(secs => $4)
             WHERE slot = (
                 SELECT slot FROM splunk_search_slots
                 WHERE slot < $5
                   AND (lease_expires_at IS NULL OR lease_expires_at <= clock_timestamp())
                 ORDER BY slot
                 LIMIT 1
                 FOR UPDATE SKIP LOCKED)
             RETURNING slot",
        )
        .bind(id)
        .bind(&inner.holder)
        .bind(purpose)
        .bind(LEASE.as_secs_f64())
        .bind(inner.limit as i32)
        .fetch_optional(&inner.pool)
        .await
        .map_err(database_error)?;
        let outcome = if taken.is_some() { "taken" } else { "full" };
        METRICS.incr("logexport_splunk_quota_looks_total", outcome);
        Ok(taken.map(|_| id))
    }
}

/// Wakes one waiter of this process whenever any process frees a place; reconnects after a failure
/// (meanwhile the waiters look again on their own).
async fn listen(pool: PgPool, freed: std::sync::Weak<Notify>) {
    loop {
        let listener = async {
            let mut listener = sqlx::postgres::PgListener::connect_with(&pool).await?;
            listener.listen(FREED_CHANNEL).await?;
            // A place freed while this process was not listening: every waiter looks.
            if let Some(freed) = freed.upgrade() {
                freed.notify_waiters();
            }
            loop {
                listener.recv().await?;
                let Some(freed) = freed.upgrade() else {
                    return Ok(());
                };
                // One place: one waiter of this process looks (the others would only find it
                // taken).
                freed.notify_one();
            }
        };
        let ended: sqlx::Result<()> = listener.await;
        match ended {
            Ok(()) => return,
            Err(e) => {
                tracing::debug!(error = %e, "listening for freed Splunk search places failed; reconnecting");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Keeps a permit's lease alive while its search runs.
async fn renew(pool: PgPool, id: Uuid) {
    loop {
        tokio::time::sleep(LEASE / 3).await;
        let renewed = sqlx::query(
            "UPDATE splunk_search_slots
             SET lease_expires_at = clock_timestamp() + make_interval(secs => $2)
             WHERE permit = $1",
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

impl SearchPermit {
    /// Whether other searches wanted a place when this one got it: it waited for its place, or
    /// others of this process waited behind it. Then the quota, not this search, bounds how fast
    /// Splunk reads, and a search more for the same rows only takes a place another would use.
    pub fn contended(&self) -> bool {
        self.contended
    }
}

impl Drop for SearchPermit {
    fn drop(&mut self) {
        let Some(renew) = self.renew.take() else {
            return;
        };
        if self.taken_at.elapsed() < self.quota.local_hold
            && let Some(waiter) = self.quota.first_waiter()
        {
            let next = SearchPermit {
                id: self.id,
                quota: self.quota.clone(),
                renew: Some(renew),
                taken_at: self.taken_at,
                // Handed to a search that waited for it.
                contended: true,
            };
            // A waiter that gave up meanwhile drops it again: the next one gets it, or Postgres.
            let _ = waiter.send(next);
            return;
        }
        METRICS.searches_running.dec();
        renew.abort();
        let (quota, id) = (self.quota.clone(), self.id);
        // Freed in the background: a drop cannot wait. Should it fail, the lease expires.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                // Freed and announced in one statement: every process's waiters look at once.
                let freed = sqlx::query(
                    "WITH freed AS (
                         UPDATE splunk_search_slots
                         SET permit = NULL, holder = NULL, purpose = NULL, acquired_at = NULL,
                             lease_expires_at = NULL
                         WHERE permit = $1
                         RETURNING slot)
                     SELECT pg_notify($2, '') FROM freed",
                )
                .bind(id)
                .bind(FREED_CHANNEL)
                .execute(&quota.pool)
                .await;
                match freed
                {
                    Ok(_) => quota.freed.notify_one(),
                    Err(e) => tracing::warn!(error = %e, "freeing a Splunk search permit failed; its lease will expire"),
                }
            });
        }
    }
}

/// A failure of the quota's own database, never reported as Splunk's: an outage waits for
/// Postgres, any other failure is retried like one of Splunk's.
fn database_error(e: sqlx::Error) -> SplunkError {
    let unreachable = crate::db::is_unavailable(&e);
    if unreachable {
        crate::db::report_unavailable("quota", &e);
    }
    SplunkError::Database {
        unreachable,
        source: Arc::new(e),
    }
}

#[cfg(test)]
mod tests {
    use super::database_error;

    #[test]
    fn a_refused_statement_names_the_database_not_splunk() {
        let e = database_error(sqlx::Error::ColumnNotFound("slot".into()));
        let text = e.to_string();
        assert!(
            text.starts_with(
                "the service's database (Postgres) failed keeping the Splunk search quota"
            ),
            "{text}"
        );
        assert!(
            !text.contains("503") && !text.contains("answered"),
            "{text}"
        );
        assert!(e.is_retryable(), "retried like any failure");
        assert!(!e.is_database(), "not an outage: an attempt is spent on it");
        assert!(!e.is_quota());
        assert!(std::error::Error::source(&e).is_some(), "keeps its cause");
    }

    #[test]
    fn an_outage_names_the_unreachable_database() {
        let e = database_error(sqlx::Error::PoolTimedOut);
        assert!(e.is_database() && e.is_retryable());
        assert!(
            e.to_string()
                .starts_with("the service's database (Postgres) is unreachable"),
            "{e}"
        );
    }
}
