//! The one loop of every kind of job: claims due attempts into free slots, runs each in a task of
//! its own under a lease its heartbeat renews, and has the kind record how it ended, fenced on
//! the attempt. At shutdown it stops claiming, lets attempts in flight end within the kind's
//! grace, then asks them to stop.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use super::kind::{Kind, Recorder, Renewal, Step, Terms};
use crate::queue::QueueListener;
use crate::worker::{JobContext, StopReason, UnitError, contain};

/// How many attempts of a kind run at once in this process, and how often an idle loop looks
/// for due jobs when no wake-up came.
#[derive(Debug, Clone, Copy)]
pub struct RunnerSettings {
    pub concurrency: usize,
    pub poll_interval: Duration,
}

/// How long an attempt asked to stop at its time limit may take to end before it is dropped.
const STOP_WAIT: Duration = Duration::from_secs(30);

/// Runs the jobs of one kind `K`.
pub struct JobRunner<K: Kind> {
    pool: PgPool,
    kind: Arc<K>,
    settings: RunnerSettings,
    owner: String,
    /// The contexts of the attempts in flight, to stop them after the shutdown grace.
    running: Arc<Mutex<HashMap<u64, JobContext>>>,
    next_attempt: Arc<AtomicU64>,
    /// Cancelled once the runner stops waiting: outcomes no longer wait for the database then.
    hard_stop: CancellationToken,
}

impl<K: Kind> Clone for JobRunner<K> {
    fn clone(&self) -> Self {
        Self {
            pool: self.pool.clone(),
            kind: self.kind.clone(),
            settings: self.settings,
            owner: self.owner.clone(),
            running: self.running.clone(),
            next_attempt: self.next_attempt.clone(),
            hard_stop: self.hard_stop.clone(),
        }
    }
}

impl<K: Kind> JobRunner<K> {
    /// A runner of `kind` with a lease owner unique to it.
    pub fn new(pool: PgPool, kind: K, settings: RunnerSettings) -> Self {
        let owner = format!(
            "{}-{}-{}",
            kind.unit().label(),
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        Self::with_owner(pool, kind, settings, owner)
    }

    /// A runner of `kind` whose leases are held by `owner`.
    pub fn with_owner(pool: PgPool, kind: K, settings: RunnerSettings, owner: String) -> Self {
        Self {
            pool,
            kind: Arc::new(kind),
            settings,
            owner,
            running: Arc::default(),
            next_attempt: Arc::default(),
            hard_stop: CancellationToken::new(),
        }
    }

    /// The database its jobs are in.
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The kind it runs.
    pub fn kind(&self) -> &K {
        &self.kind
    }

    /// Claims and runs attempts until `shutdown`, woken by `listener` (a process shares one
    /// among its runners); then stops claiming, lets the attempts in flight end within the kind's
    /// shutdown grace, and asks those still running to stop.
    pub async fn run(self, listener: QueueListener, shutdown: CancellationToken) {
        let concurrency = self.settings.concurrency.max(1);
        let slots = Arc::new(Semaphore::new(concurrency));
        // An attempt past its reading from Splunk (see `JobContext::reading_done`) gives its slot
        // to the next claim and holds one of these instead: as many again at most.
        let finishing = Arc::new(Semaphore::new(concurrency));
        let tracker = TaskTracker::new();
        let unit = self.kind.unit();
        tracing::info!(kind = unit.label(), owner = %self.owner, concurrency, "runner started");

        // A few claimers side by side: one claim is several round trips, so a single claimer
        // would cap the process at 1/latency attempts per second however many slots are free.
        let claimers = concurrency.clamp(1, 4);
        let wake_up = self.kind.wake_up(&listener);
        // One claimer looks on its own every poll interval; the others wait for a wake-up (a
        // notification wakes one, see `queue::listener`): N idle claimers in M processes would
        // otherwise make N × M looks per interval. A claimer that found work looks again at
        // once, as long as a slot is free.
        futures::future::join_all((0..claimers).map(|claimer| {
            let poll = (claimer == 0).then_some(self.settings.poll_interval);
            self.claim_loop(poll, wake_up, &slots, &finishing, &tracker, &shutdown)
        }))
        .await;

        tracker.close();
        let in_flight = self.running.lock().map(|r| r.len()).unwrap_or(0);
        let grace = self.kind.terms().shutdown_grace;
        tracing::info!(kind = unit.label(), in_flight, ?grace, "runner draining");
        let ended = match grace {
            Some(grace) => tokio::time::timeout(grace, tracker.wait()).await.is_ok(),
            None => {
                // No grace: attempts run to their end, but outcomes no longer wait for the database.
                self.hard_stop.cancel();
                tracker.wait().await;
                true
            }
        };
        if !ended {
            let contexts: Vec<JobContext> = self
                .running
                .lock()
                .map(|r| r.values().cloned().collect())
                .unwrap_or_default();
            for ctx in contexts {
                ctx.stop(StopReason::Shutdown);
            }
            // Outcomes still waiting for the database are left to the leases.
            self.hard_stop.cancel();
            tracker.wait().await;
        }
        tracing::info!(kind = unit.label(), "runner stopped");
    }

    /// Claims attempts into free slots until shutdown; when none is due, looks again at a
    /// wake-up, or after `poll` when it is the claimer that polls.
    async fn claim_loop(
        &self,
        poll: Option<Duration>,
        wake_up: &tokio::sync::Notify,
        slots: &Arc<Semaphore>,
        finishing: &Arc<Semaphore>,
        tracker: &TaskTracker,
        shutdown: &CancellationToken,
    ) {
        loop {
            let permit = tokio::select! {
                _ = shutdown.cancelled() => break,
                permit = slots.clone().acquire_owned() => match permit {
                    Ok(p) => p,
                    Err(_) => break,
                },
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                () = self.kind.ready() => {}
            }
            // Register for the wake-up before claiming so a NOTIFY in between is not lost.
            let woken = wake_up.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let asked = Instant::now();
            match self.kind.claim(&self.pool, &self.owner).await {
                Ok(Some(claimed)) => {
                    crate::db::report_available();
                    let held = Arc::new(Mutex::new(vec![permit]));
                    let hand_over = SlotHandOver {
                        held: held.clone(),
                        finishing: finishing.clone(),
                    };
                    let this = self.clone();
                    let span = self.kind.span(&claimed);
                    tracker.spawn(
                        async move {
                            this.attempt(claimed, asked, Some(hand_over)).await;
                            // Freed now, whatever clones of the hand-over outlive the attempt.
                            held.lock().unwrap_or_else(|p| p.into_inner()).clear();
                        }
                        .instrument(span),
                    );
                }
                Ok(None) => {
                    crate::db::report_available();
                    drop(permit);
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = &mut woken => {}
                        _ = tokio::time::sleep(poll.unwrap_or_default()), if poll.is_some() => {}
                    }
                }
                Err(e) => {
                    drop(permit);
                    if crate::db::is_unavailable(&e) {
                        // Claiming pauses until the database is back; attempts in flight go on.
                        crate::db::report_unavailable(self.kind.component(Step::Claim), &e);
                    } else {
                        let kind = self.kind.unit().label();
                        tracing::warn!(kind, error = %e, "claiming a job failed; retrying after the poll interval");
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(self.settings.poll_interval) => {}
                    }
                }
            }
        }
    }

    /// Claims and runs one due attempt here and now; false when none was due.
    pub async fn run_next(&self) -> sqlx::Result<bool> {
        let asked = Instant::now();
        let Some(claimed) = self.kind.claim(&self.pool, &self.owner).await? else {
            return Ok(false);
        };
        let span = self.kind.span(&claimed);
        self.attempt(claimed, asked, None).instrument(span).await;
        Ok(true)
    }

    /// Runs one claimed attempt under its heartbeat and time limit, and records how it ended.
    async fn attempt(&self, claimed: K::Claimed, asked: Instant, slot: Option<SlotHandOver>) {
        let terms = self.kind.terms();
        let mut ctx = self
            .kind
            .context(&self.pool, &claimed)
            .with_lease(terms.lease_deadline(asked), terms.lease / 3);
        if let Some(slot) = slot {
            ctx = ctx.on_reading_done(move || slot.hand_over());
        }
        let key = self.next_attempt.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut running) = self.running.lock() {
            running.insert(key, ctx.clone());
        }
        let claimed = Arc::new(claimed);
        let heartbeat = tokio::spawn(
            heartbeat(
                self.pool.clone(),
                self.kind.clone(),
                claimed.clone(),
                terms,
                ctx.clone(),
            )
            .in_current_span(),
        );
        let ran = self.run_body(claimed.clone(), &ctx, terms).await;
        heartbeat.abort();
        let recorder = Recorder {
            component: self.kind.component(Step::Record),
            hard_stop: self.hard_stop.clone(),
        };
        self.kind
            .record(&self.pool, &claimed, &ctx, ran, &recorder)
            .await;
        if let Ok(mut running) = self.running.lock() {
            running.remove(&key);
        }
    }

    /// The attempt's body in a task of its own (a panic comes back as an error), asked to stop
    /// at the kind's time limit and dropped when it does not within [`STOP_WAIT`].
    async fn run_body(
        &self,
        claimed: Arc<K::Claimed>,
        ctx: &JobContext,
        terms: Terms,
    ) -> Result<K::Output, UnitError> {
        let unit = self.kind.unit();
        let mut body = contain(
            unit,
            self.kind
                .clone()
                .run(self.pool.clone(), claimed, ctx.clone()),
        );
        let Some(max_work) = terms.max_work else {
            return body.await;
        };
        tokio::select! {
            ended = &mut body => ended,
            _ = tokio::time::sleep(max_work) => {
                ctx.stop(StopReason::TimedOut);
                match tokio::time::timeout(STOP_WAIT, &mut body).await {
                    Ok(ended) => ended,
                    // Dropping the body aborts its task.
                    Err(_) => Err(UnitError::Cancelled { kind: unit }),
                }
            }
        }
    }
}

/// An attempt's slot in the process; once the attempt stops reading from Splunk it is given to
/// the next claim for a place among the finishing ones, when one is free (see
/// [`JobContext::reading_done`]).
#[derive(Clone)]
struct SlotHandOver {
    held: Arc<Mutex<Vec<OwnedSemaphorePermit>>>,
    finishing: Arc<Semaphore>,
}

impl SlotHandOver {
    fn hand_over(&self) {
        if let Ok(finishing) = self.finishing.clone().try_acquire_owned() {
            let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
            // The slot goes back to the claimers; the place among the finishing ones is kept.
            *held = vec![finishing];
        }
    }
}

/// Renews the lease (storing progress) every heartbeat; stops the attempt when its job was
/// cancelled or taken over, or when its lease runs out while the database cannot be reached
/// (another runner may take the job over once it is back).
async fn heartbeat<K: Kind>(
    pool: PgPool,
    kind: Arc<K>,
    claimed: Arc<K::Claimed>,
    terms: Terms,
    ctx: JobContext,
) {
    let mut ticker = tokio::time::interval(terms.heartbeat);
    ticker.tick().await;
    loop {
        let Some(deadline) = ctx.lease_until() else {
            return;
        };
        let deadline = tokio::time::Instant::from_std(deadline);
        tokio::select! {
            _ = ticker.tick() => {}
            _ = tokio::time::sleep_until(deadline) => return lease_ran_out(&ctx),
        }
        let sent = Instant::now();
        let renewal = kind.renew(&pool, &claimed, &ctx);
        match tokio::time::timeout_at(deadline, renewal).await {
            Ok(Ok(renewal)) => {
                crate::db::report_available();
                match renewal {
                    Renewal::Held => ctx.lease_renewed(terms.lease_deadline(sent)),
                    Renewal::CancelRequested => {
                        ctx.lease_renewed(terms.lease_deadline(sent));
                        tracing::info!("cancel requested; stopping");
                        ctx.stop(StopReason::Cancelled);
                    }
                    Renewal::Lost => {
                        tracing::warn!("the job's lease was taken over; this attempt stops");
                        ctx.stop(StopReason::LostLease);
                        return;
                    }
                }
            }
            Ok(Err(e)) if crate::db::is_unavailable(&e) => {
                crate::db::report_unavailable(kind.component(Step::Renew), &e)
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "renewing the lease failed; trying again at the next heartbeat")
            }
            Err(_) => return lease_ran_out(&ctx),
        }
    }
}

/// Past the lease another runner may already run this job: stop before duplicating it.
fn lease_ran_out(ctx: &JobContext) {
    tracing::warn!(
        "the lease ran out without a renewal (database unreachable); stopping this attempt \
         before another runner takes the job over once the database is back"
    );
    ctx.stop(StopReason::LostLease);
}
