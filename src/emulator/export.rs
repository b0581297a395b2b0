//! `search/jobs/export`: results streamed as JSON lines while they are produced, with
//! backpressure (a small bounded channel of ~64 KiB chunks) and the stream faults.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::engine::{self, Item};
use super::plan::Plan;
use super::render::write_item_json;
use super::{Counters, Faults, SearchSlot, Shared};

const CHUNK: usize = 64 * 1024;

/// Starts streaming a planned search, holding `slot` until the stream ends; `cut_after` is the
/// row after which this stream is cut, if any.
pub fn stream(
    shared: Arc<Shared>,
    plan: Plan,
    faults: Faults,
    cut_after: Option<u64>,
    slot: SearchSlot,
) -> Response {
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::task::spawn_blocking(move || produce(&shared, &plan, &faults, cut_after, &tx, slot));
    let mut resp = Response::new(Body::from_stream(ReceiverStream::new(rx)));
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    resp
}

/// Paces output to a byte rate.
struct Throttle {
    rate: Option<u64>,
    started: Instant,
    sent: u64,
}

impl Throttle {
    fn wait(&mut self, bytes: usize) {
        self.sent += bytes as u64;
        if let Some(rate) = self.rate.filter(|r| *r > 0) {
            let due = Duration::from_secs_f64(self.sent as f64 / rate as f64);
            if let Some(sleep) = due.checked_sub(self.started.elapsed()) {
                std::thread::sleep(sleep);
            }
        }
    }
}

/// Paces rows to an indexer's scan rate.
struct ScanRate {
    per_sec: Option<u64>,
    started: Instant,
}

impl ScanRate {
    /// Sleeps until `rows` rows are due.
    fn wait(&self, rows: u64) {
        if let Some(rate) = self.per_sec.filter(|r| *r > 0) {
            let due = Duration::from_secs_f64(rows as f64 / rate as f64);
            if let Some(sleep) = due.checked_sub(self.started.elapsed()) {
                std::thread::sleep(sleep);
            }
        }
    }
}

/// Rows between two looks at the scan-rate clock.
const PACE_ROWS: u64 = 256;

fn produce(
    shared: &Shared,
    plan: &Plan,
    faults: &Faults,
    cut_after: Option<u64>,
    tx: &mpsc::Sender<Result<Bytes, std::io::Error>>,
    slot: SearchSlot,
) {
    let scan = ScanRate {
        per_sec: faults.search_events_per_sec,
        started: Instant::now(),
    };
    let streamed = &shared.counters.events_streamed;
    let ctx = &shared.ctx;
    let chunk = match faults.slow_bytes_per_sec {
        Some(r) if r > 0 => usize::try_from(r / 10).unwrap_or(CHUNK).clamp(1, CHUNK),
        _ => CHUNK,
    };
    let mut throttle = Throttle {
        rate: faults.slow_bytes_per_sec,
        started: Instant::now(),
        sent: 0,
    };
    let mut buf: Vec<u8> = Vec::with_capacity(chunk + 4096);
    let send = |buf: &mut Vec<u8>, throttle: &mut Throttle| -> bool {
        while !buf.is_empty() {
            let n = buf.len().min(chunk);
            let piece = Bytes::copy_from_slice(&buf[..n]);
            buf.drain(..n);
            throttle.wait(n);
            if tx.blocking_send(Ok(piece)).is_err() {
                return false; // client went away
            }
        }
        true
    };
    let rows;
    let mut items: Box<dyn Iterator<Item = Item<'_>>> = if plan.rest.is_empty() {
        Box::new(engine::events(plan, ctx, &shared.store).map(Item::Event))
    } else {
        rows = engine::materialise(plan, ctx, &shared.store);
        Box::new(rows.iter().map(Item::Row))
    };
    let mut next = items.next();
    let mut offset: u64 = 0;
    if next.is_none() {
        buf.extend_from_slice(b"{\"preview\":false,\"lastrow\":true}\n");
    }
    while let Some(item) = next {
        if cut_after.is_some_and(|n| offset >= n) {
            if send(&mut buf, &mut throttle) {
                let _ = tx.blocking_send(Err(std::io::Error::other(
                    "splunk emulator: injected stream cut",
                )));
            }
            return;
        }
        next = items.next();
        buf.extend_from_slice(b"{\"preview\":false,\"offset\":");
        super::synthetic::push_u64(&mut buf, offset);
        if next.is_none() {
            buf.extend_from_slice(b",\"lastrow\":true");
        }
        buf.extend_from_slice(b",\"result\":");
        write_item_json(&mut buf, &item, &plan.row_ops, ctx);
        buf.extend_from_slice(b"}\n");
        offset += 1;
        Counters::bump(streamed);
        if offset.is_multiple_of(PACE_ROWS) {
            scan.wait(offset);
        }
        // The last row waits for the send after the loop, once the search is over and its
        // place in the quota is free: a client that sees the last row may start its next search.
        if next.is_some() && buf.len() >= chunk && !send(&mut buf, &mut throttle) {
            return;
        }
    }
    scan.wait(offset);
    // The search is over once its last row is produced: like Splunk's, it stops counting
    // against the quota before the client has read the rest.
    drop(slot);
    send(&mut buf, &mut throttle);
}
