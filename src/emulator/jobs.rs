//! Search jobs: dispatch in the background, status entries, result pages, cancel and delete.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use axum::response::Response;
use chrono::{DateTime, Utc};

use super::engine::{self, ResultSet};
use super::plan::Plan;
use super::render::{self, Mode, acl_json, acl_xml, s_dict, xml_escape};
use super::{Counters, SearchSlot, Shared};

/// Where a job is in its life.
#[derive(Debug, Clone)]
pub enum JobState {
    Running,
    Done(Arc<ResultSet>),
}

/// One dispatched search.
pub struct Job {
    pub sid: String,
    pub search: String,
    pub owner: String,
    pub plan: Plan,
    pub created: DateTime<Utc>,
    pub state: Mutex<JobState>,
    pub cancel: AtomicBool,
}

impl Job {
    fn state(&self) -> JobState {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Creates a job and runs it on the blocking pool, holding `slot` until it is done; waits for
/// it when `blocking`. With a scan rate set, the job is done only once the events it selects
/// (up to `scan_limit`) could have been scanned at that rate, as on an indexer.
pub async fn dispatch(
    shared: &Arc<Shared>,
    search: String,
    plan: Plan,
    blocking: bool,
    scan_limit: Option<u64>,
    slot: SearchSlot,
) -> Arc<Job> {
    Counters::bump(&shared.counters.jobs);
    let seq = shared.next_sid.fetch_add(1, Ordering::Relaxed);
    let created = Utc::now();
    let job = Arc::new(Job {
        sid: format!("{}.{seq}", created.timestamp()),
        search,
        owner: shared.user.clone(),
        plan,
        created,
        state: Mutex::new(JobState::Running),
        cancel: AtomicBool::new(false),
    });
    shared
        .jobs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(job.sid.clone(), job.clone());
    let (s, j) = (shared.clone(), job.clone());
    let rate = shared.faults().search_events_per_sec;
    let run = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let results = engine::run(&j.plan, &s.ctx, &s.store, &j.cancel);
        if let Some(rate) = rate {
            let scanned = engine::scanned(&j.plan, &s.ctx, &s.store, &results)
                .min(scan_limit.unwrap_or(u64::MAX));
            let cost = Duration::from_secs_f64(scanned as f64 / rate as f64);
            while started.elapsed() < cost && !j.cancel.load(Ordering::Relaxed) {
                std::thread::sleep((cost - started.elapsed()).min(Duration::from_millis(50)));
            }
        }
        *j.state.lock().unwrap_or_else(|e| e.into_inner()) = JobState::Done(Arc::new(results));
        drop(slot);
    });
    if blocking {
        let _ = run.await;
    }
    job
}

/// Looks a job up.
pub fn find(shared: &Shared, sid: &str) -> Option<Arc<Job>> {
    shared
        .jobs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(sid)
        .cloned()
}

/// Cancels and forgets a job (Splunk deletes a cancelled job's artifacts).
pub fn remove(shared: &Shared, sid: &str) -> bool {
    let job = shared
        .jobs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(sid);
    job.map(|j| j.cancel.store(true, Ordering::Relaxed))
        .is_some()
}

/// The `<response><sid>` / `{"sid"}` answer to a create.
pub fn created(mode: Mode, sid: &str) -> Response {
    let text = match mode {
        Mode::Xml => format!(
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<response>\n  <sid>{}</sid>\n</response>\n",
            xml_escape(sid)
        ),
        Mode::Json => serde_json::json!({ "sid": sid }).to_string(),
    };
    render::body(StatusCode::CREATED, mode, text)
}

/// The job's status entry (Atom XML by default, JSON with `output_mode=json`).
pub fn status(job: &Job, mode: Mode, base_path: &str) -> Response {
    let (done, results) = match job.state() {
        JobState::Running => (false, None),
        JobState::Done(r) => (true, Some(r)),
    };
    let count = results.as_ref().map_or(0, |r| r.len());
    let transforming = !job.plan.rest.is_empty();
    let event_count = if transforming { 0 } else { count };
    let href = format!("{base_path}/{}", job.sid);
    let published = job
        .created
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, false);
    let updated = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, false);
    let dispatch_state = if done { "DONE" } else { "RUNNING" };
    let progress = if done { "1.00000" } else { "0.50000" };
    let flag = |b: bool| if b { "1" } else { "0" }.to_string();
    match mode {
        Mode::Xml => {
            let content = s_dict(&[
                ("cursorTime", updated.clone()),
                ("dispatchState", dispatch_state.into()),
                ("doneProgress", progress.into()),
                ("earliestTime", published.clone()),
                ("eventCount", event_count.to_string()),
                ("eventIsStreaming", flag(!transforming)),
                ("isDone", flag(done)),
                ("isFailed", "0".into()),
                ("isFinalized", "0".into()),
                ("isPaused", "0".into()),
                ("isPreviewEnabled", "0".into()),
                ("isSaved", "0".into()),
                ("isZombie", "0".into()),
                ("resultCount", count.to_string()),
                ("resultIsStreaming", flag(!transforming)),
                ("runDuration", "0.001".into()),
                ("sid", xml_escape(&job.sid)),
                ("ttl", "600".into()),
                ("eai:acl", acl_xml(&job.owner)),
            ]);
            let mut entry =
                render::atom_entry(&job.search, &href, &updated, &job.owner, &content, true);
            let links = [
                "search.log",
                "events",
                "results",
                "results_preview",
                "timeline",
                "summary",
                "control",
            ]
            .iter()
            .map(|rel| {
                format!(
                    "  <link href=\"{}/{rel}\" rel=\"{rel}\"/>\n",
                    xml_escape(&href)
                )
            })
            .collect::<String>();
            entry = entry.replacen(
                "  <author>",
                &format!("{links}  <published>{published}</published>\n  <author>"),
                1,
            );
            render::body(
                StatusCode::OK,
                Mode::Xml,
                format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n{entry}\n"),
            )
        }
        Mode::Json => {
            let content = serde_json::json!({
                "dispatchState": dispatch_state, "doneProgress": if done { 1.0 } else { 0.5 },
                "eventCount": event_count, "eventIsStreaming": !transforming, "isDone": done,
                "isFailed": false, "isFinalized": false, "isPaused": false, "isSaved": false,
                "isZombie": false, "resultCount": count, "resultIsStreaming": !transforming,
                "runDuration": 0.001, "sid": job.sid, "ttl": 600, "earliestTime": published,
                "eai:acl": acl_json(&job.owner),
            });
            let entry = serde_json::json!({
                "name": job.search, "id": href, "updated": updated, "published": published,
                "links": {"alternate": href, "results": format!("{href}/results"),
                          "events": format!("{href}/events"), "control": format!("{href}/control")},
                "author": job.owner, "acl": acl_json(&job.owner), "content": content,
            });
            render::body(
                StatusCode::OK,
                Mode::Json,
                render::json_feed(&updated, vec![entry]),
            )
        }
    }
}

/// A results/events page; an unfinished job has no results yet, as in Splunk (204).
pub fn results(shared: &Shared, job: &Job, mode: Mode, offset: u64, count: u64) -> Response {
    Counters::bump(&shared.counters.results);
    match job.state() {
        JobState::Running => render::body(StatusCode::NO_CONTENT, mode, String::new()),
        JobState::Done(r) => {
            let items = r.page(offset, count);
            render::results_page(mode, offset, &items, &job.plan.row_ops, &shared.ctx)
        }
    }
}
