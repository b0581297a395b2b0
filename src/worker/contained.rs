//! The one panic policy of every background loop (exports, notifications, audit shipping, the
//! scheduler's tick, housekeeping): each unit of work runs in a task of its own, so a panic ends
//! that unit only. It comes back as an error naming the kind of work, is logged and counted
//! (`logexport_background_panics_total{kind}`), and the loop goes on to its next unit; what the
//! failed unit means (a failed attempt, a batch to retry, a tick to redo) is the loop's call.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::task::JoinHandle;
use tracing::Instrument;
use tracing::instrument::WithSubscriber;

use crate::metrics::METRICS;

/// A kind of background work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkKind {
    Export,
    Notification,
    AuditShipping,
    ScheduleTick,
    Housekeeping,
}

impl WorkKind {
    /// Every kind, in the order of [`crate::metrics::BACKGROUND_KINDS`].
    pub const ALL: [WorkKind; 5] = [
        Self::Export,
        Self::Notification,
        Self::AuditShipping,
        Self::ScheduleTick,
        Self::Housekeeping,
    ];

    /// The metric's `kind` label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Export => "export",
            Self::Notification => "notification",
            Self::AuditShipping => "audit_shipping",
            Self::ScheduleTick => "schedule_tick",
            Self::Housekeeping => "housekeeping",
        }
    }
}

impl fmt::Display for WorkKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Export => "export job",
            Self::Notification => "notification delivery",
            Self::AuditShipping => "audit event delivery",
            Self::ScheduleTick => "scheduler tick",
            Self::Housekeeping => "housekeeping pass",
        })
    }
}

/// How a unit of background work ended without its result.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnitError {
    /// The work panicked; `message` is the panic's.
    #[error("the {kind} panicked: {message}")]
    Panicked { kind: WorkKind, message: String },
    /// The task was cancelled: the runtime is shutting down.
    #[error("the {kind} was cancelled: the process is shutting down")]
    Cancelled { kind: WorkKind },
}

/// Runs `work` as one unit of `kind` in a task of its own, in the current tracing span (and
/// subscriber). Await
/// the returned future for its result; dropping it aborts the task, as dropping the work itself
/// would.
pub fn contain<F>(kind: WorkKind, work: F) -> Contained<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    Contained {
        kind,
        // The caller's subscriber too, not only its span: where a scoped subscriber records
        // (a test's), the unit's lines go with the loop's.
        task: tokio::spawn(work.in_current_span().with_current_subscriber()),
    }
}

/// One unit of background work running in its own task (see [`contain`]).
#[derive(Debug)]
pub struct Contained<T> {
    kind: WorkKind,
    task: JoinHandle<T>,
}

impl<T> Future for Contained<T> {
    type Output = Result<T, UnitError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let kind = self.kind;
        Pin::new(&mut self.task).poll(cx).map(|joined| {
            joined.map_err(|e| {
                if !e.is_panic() {
                    return UnitError::Cancelled { kind };
                }
                let message = panic_message(e.into_panic());
                METRICS.background_panic(kind.label());
                tracing::error!(kind = kind.label(), panic = %message, "the {kind} panicked; the loop goes on");
                UnitError::Panicked { kind, message }
            })
        })
    }
}

impl<T> Drop for Contained<T> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn panic_message(payload: Box<dyn Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(text) => *text,
        Err(payload) => payload.downcast_ref::<&'static str>().map_or_else(
            || "a panic without a message".to_owned(),
            |s| (*s).to_owned(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panic_is_an_error_naming_the_kind_and_the_next_unit_runs() {
        let panics = || {
            let text = METRICS.render(&crate::metrics::Scrape::default());
            let line = text
                .lines()
                .find(|l| {
                    l.starts_with("logexport_background_panics_total{kind=\"schedule_tick\"}")
                })
                .map(str::to_owned);
            line.and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
                .expect("the counter is served from the start")
        };
        let before = panics();
        let failed = contain(WorkKind::ScheduleTick, async {
            panic!("no clock");
        })
        .await;
        assert_eq!(
            failed,
            Err::<(), _>(UnitError::Panicked {
                kind: WorkKind::ScheduleTick,
                message: "no clock".into()
            })
        );
        assert_eq!(
            failed.unwrap_err().to_string(),
            "the scheduler tick panicked: no clock"
        );
        assert!(panics() > before);
        let formatted = contain(WorkKind::ScheduleTick, async {
            panic!("tick {}", 2);
        })
        .await;
        assert!(
            matches!(formatted, Err(UnitError::Panicked { message, .. }) if message == "tick 2")
        );
        assert_eq!(contain(WorkKind::ScheduleTick, async { 7 }).await, Ok(7));
    }

    #[tokio::test]
    async fn dropping_the_unit_aborts_its_task() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let unit = contain(WorkKind::Housekeeping, async move {
            let _tx = tx;
            std::future::pending::<()>().await
        });
        drop(unit);
        // The task's end drops the sender: the receiver sees it closed.
        assert!(rx.await.is_err());
    }

    #[test]
    fn every_kind_is_a_metric_label() {
        let labels: Vec<&str> = WorkKind::ALL.iter().map(|k| k.label()).collect();
        assert_eq!(labels, crate::metrics::BACKGROUND_KINDS);
    }
}
