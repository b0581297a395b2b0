//! The threads that map and encode rows: one per core, started once and shared by every export
//! a worker runs.
//!
//! A fixed set rather than the runtime's blocking pool: that pool starts a thread whenever none
//! is idle at the instant a batch is handed over, so an export soon ran on a dozen threads, each
//! with its own allocator arena and per-thread buffers, and paid a thread wake-up for nearly every
//! batch. Here the same few threads take the batches from one queue; while batches are waiting a
//! thread goes from one to the next without sleeping.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, LazyLock, Mutex};

use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send>;

/// One thread per core, at most 8 (the export's reading, compression and upload need the rest).
pub(crate) static THREADS: LazyLock<usize> = LazyLock::new(|| {
    std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 8)
});

/// The encoder threads' queue; the threads start with its first use.
static JOBS: LazyLock<Sender<Job>> = LazyLock::new(|| {
    let (jobs, queue) = mpsc::channel::<Job>();
    let queue = Arc::new(Mutex::new(queue));
    for n in 0..*THREADS {
        let queue = queue.clone();
        std::thread::Builder::new()
            .name(format!("encoder-{n}"))
            .spawn(move || run(&queue))
            .expect("starting an encoder thread");
    }
    jobs
});

fn run(queue: &Mutex<Receiver<Job>>) {
    loop {
        let job = match queue.lock() {
            Ok(queue) => queue.recv(),
            Err(poisoned) => poisoned.into_inner().recv(),
        };
        let Ok(job) = job else { return };
        // A panicking job drops its result sender, which its caller sees; the thread lives on.
        let _ = catch_unwind(AssertUnwindSafe(job));
    }
}

/// Runs `work` on an encoder thread; the receiver yields its result, or an error if it panicked.
pub(crate) fn spawn<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> oneshot::Receiver<T> {
    let (done, result) = oneshot::channel();
    let job: Job = Box::new(move || {
        // The caller may have stopped waiting (a cancelled export): nothing to do then.
        let _ = done.send(work());
    });
    // The threads never stop while the queue's sender lives, so sending cannot fail; if it did,
    // dropping the job drops `done` and the caller sees an error.
    let _ = JOBS.send(job);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_jobs_in_parallel_and_survives_a_panic() {
        let results: Vec<_> = (0..32u64).map(|n| spawn(move || n * n)).collect();
        let mut got = Vec::new();
        for result in results {
            got.push(result.await.unwrap());
        }
        assert_eq!(got, (0..32u64).map(|n| n * n).collect::<Vec<_>>());

        let panicked = spawn(|| -> u64 { panic!("boom") });
        assert!(panicked.await.is_err());
        // Every thread still takes work afterwards.
        let after: Vec<_> = (0..(*THREADS as u64 * 4))
            .map(|n| spawn(move || n + 1))
            .collect();
        for (n, result) in after.into_iter().enumerate() {
            assert_eq!(result.await.unwrap(), n as u64 + 1);
        }
    }
}
