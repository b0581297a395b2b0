//! Request routing for `/services/...` and `/servicesNS/{owner}/{app}/...`, parameters from
//! the query string and form body, auth and request-level faults.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::Response;
use chrono::Utc;
use rand::Rng as _;

use super::plan::Plan;
use super::render::{self, Mode, s_dict, xml_escape};
use super::time_arg::parse_time_arg;
use super::{Counters, SearchSlot, Shared, export, ingest, jobs, spl};

/// The emulator's router.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .fallback(dispatch)
        .layer(DefaultBodyLimit::max(256 * 1024 * 1024))
        .with_state(shared)
}

struct Req {
    method: Method,
    /// Path below `services/` (or `servicesNS/o/a/`), percent-decoded segments.
    segs: Vec<String>,
    /// The path prefix the client used, for links.
    prefix: String,
    params: HashMap<String, String>,
    mode: Mode,
}

impl Req {
    fn param(&self, k: &str) -> Option<&str> {
        self.params.get(k).map(String::as_str)
    }
}

fn split_path(path: &str) -> Option<(String, Vec<String>)> {
    let segs: Vec<String> = path
        .split('/')
        .filter(|s| !s.is_empty())
        .map(|s| {
            urlencoding::decode(s)
                .map(|c| c.into_owned())
                .unwrap_or_else(|_| s.to_string())
        })
        .collect();
    match segs.first().map(String::as_str) {
        Some("services") => Some(("/services".into(), segs[1..].to_vec())),
        Some("servicesNS") if segs.len() >= 3 => Some((
            format!("/servicesNS/{}/{}", segs[1], segs[2]),
            segs[3..].to_vec(),
        )),
        _ => None,
    }
}

fn parse_params(uri: &Uri, body: &[u8], form_body: bool) -> HashMap<String, String> {
    let mut params: HashMap<String, String> =
        url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    if form_body {
        params.extend(url::form_urlencoded::parse(body).into_owned());
    }
    params
}

fn quota_message() -> String {
    "Search not executed: The maximum number of concurrent historical searches on this instance has been reached., concurrency_category=\"historical\", concurrency_context=\"instance-wide\", current_concurrency=10, concurrency_limit=10".to_string()
}

/// Splunk's answer when the user's role quota (`srchJobsQuota`) of running searches is full.
fn quota_exceeded(mode: Mode) -> Response {
    render::message(
        StatusCode::SERVICE_UNAVAILABLE,
        mode,
        "FATAL",
        "Search not executed: The maximum number of concurrent historical searches for this user based on their role quota has been reached., concurrency_category=\"historical\", concurrency_context=\"user\"",
    )
}

async fn dispatch(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    Counters::bump(&shared.counters.requests);
    let faults = shared.faults();
    if faults.latency_ms > 0 {
        tokio::time::sleep(Duration::from_millis(faults.latency_ms)).await;
    }
    let Some((prefix, segs)) = split_path(uri.path()) else {
        let mode = Mode::from_param(
            parse_params(&uri, &[], false)
                .get("output_mode")
                .map(String::as_str),
        );
        return render::message(StatusCode::NOT_FOUND, mode, "ERROR", "Not Found");
    };
    let raw_body = matches!(
        segs.iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .as_slice(),
        ["receivers", ..] | ["collector", ..]
    );
    let params = parse_params(&uri, &body, !raw_body);
    let mode = Mode::from_param(params.get("output_mode").map(String::as_str));
    let req = Req {
        method,
        segs,
        prefix,
        params,
        mode,
    };
    let s: Vec<&str> = req.segs.iter().map(String::as_str).collect();
    if s == ["auth", "login"] {
        return login(&shared, &req);
    }
    if !shared.authenticated(&headers) {
        if s.first() == Some(&"collector") {
            return ingest::hec_unauthorized();
        }
        return render::message(
            StatusCode::UNAUTHORIZED,
            mode,
            "WARN",
            "call not properly authenticated",
        );
    }
    let is_dispatch = matches!(s.as_slice(), ["search", "jobs"] | ["search", "v2", "jobs"])
        && req.method == Method::POST
        || matches!(
            s.as_slice(),
            ["search", "jobs", "export"] | ["search", "v2", "jobs", "export"]
        );
    if is_dispatch
        && faults.rate_503 > 0.0
        && rand::thread_rng().gen_bool(faults.rate_503.clamp(0.0, 1.0))
    {
        Counters::bump(&shared.counters.injected_503);
        return render::message(
            StatusCode::SERVICE_UNAVAILABLE,
            mode,
            "FATAL",
            &quota_message(),
        );
    }
    match s.as_slice() {
        ["server", "info"] => server_info(&req),
        ["data", "indexes"] => indexes(&shared, &req, None),
        ["data", "indexes", name] => indexes(&shared, &req, Some(name)),
        ["receivers", "simple"] if req.method == Method::POST => {
            ingest::simple(&shared, &body, req.param("index"), req.param("sourcetype"))
        }
        ["collector"] | ["collector", "event"] | ["collector", "event", "1.0"]
            if req.method == Method::POST =>
        {
            if faults.hec_unavailable {
                return ingest::hec_busy();
            }
            ingest::hec(&shared, &body)
        }
        ["search", "jobs", rest @ ..] => search(&shared, &req, "search/jobs", rest).await,
        ["search", "v2", "jobs", rest @ ..] => search(&shared, &req, "search/v2/jobs", rest).await,
        _ => render::message(StatusCode::NOT_FOUND, mode, "ERROR", "Not Found"),
    }
}

fn login(shared: &Shared, req: &Req) -> Response {
    let ok = req.method == Method::POST
        && shared.password_ok(
            req.param("username").unwrap_or(""),
            req.param("password").unwrap_or(""),
        );
    if !ok {
        return render::message(StatusCode::UNAUTHORIZED, req.mode, "WARN", "Login failed");
    }
    let key = shared.new_session();
    let text = match req.mode {
        Mode::Xml => format!(
            "<response>\n  <sessionKey>{key}</sessionKey>\n  <messages>\n    <msg code=\"\"></msg>\n  </messages>\n</response>\n"
        ),
        Mode::Json => serde_json::json!({"sessionKey": key, "message": "", "code": ""}).to_string(),
    };
    render::body(StatusCode::OK, req.mode, text)
}

fn now_text() -> String {
    Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
}

fn server_info(req: &Req) -> Response {
    let info = [
        ("build", "emulator"),
        ("cpu_arch", "x86_64"),
        ("host", "splunk-emulator"),
        ("os_name", "Linux"),
        ("product_type", "enterprise"),
        ("serverName", "splunk-emulator"),
        ("version", super::SPLUNK_VERSION),
    ];
    let updated = now_text();
    match req.mode {
        Mode::Xml => {
            let pairs: Vec<(&str, String)> =
                info.iter().map(|(k, v)| (*k, xml_escape(v))).collect();
            let entry = render::atom_entry(
                "server-info",
                "/services/server/info/server-info",
                &updated,
                "system",
                &s_dict(&pairs),
                false,
            );
            render::body(
                StatusCode::OK,
                Mode::Xml,
                render::atom_feed("server-info", &updated, &[entry]),
            )
        }
        Mode::Json => {
            let content: serde_json::Map<String, serde_json::Value> = info
                .iter()
                .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
                .collect();
            let entry = serde_json::json!({"name": "server-info", "id": "/services/server/info/server-info", "content": content});
            render::body(
                StatusCode::OK,
                Mode::Json,
                render::json_feed(&updated, vec![entry]),
            )
        }
    }
}

fn indexes(shared: &Shared, req: &Req, name: Option<&str>) -> Response {
    let mut names = shared.store.index_names();
    names.insert(shared.ctx.index.clone());
    names.insert("main".into());
    let selected: Vec<String> = match name {
        Some(n) if !names.contains(n) => {
            return render::message(
                StatusCode::NOT_FOUND,
                req.mode,
                "ERROR",
                &format!("Could not find object id={n}"),
            );
        }
        Some(n) => vec![n.to_string()],
        None => names.into_iter().collect(),
    };
    let updated = now_text();
    match req.mode {
        Mode::Xml => {
            let entries: Vec<String> = selected
                .iter()
                .map(|n| {
                    let content = s_dict(&[
                        ("datatype", "event".into()),
                        ("disabled", "0".into()),
                        ("eai:acl", render::acl_xml("nobody")),
                        ("totalEventCount", "0".into()),
                    ]);
                    let href = format!(
                        "/servicesNS/nobody/search/data/indexes/{}",
                        urlencoding::encode(n)
                    );
                    render::atom_entry(n, &href, &updated, "nobody", &content, false)
                })
                .collect();
            render::body(
                StatusCode::OK,
                Mode::Xml,
                render::atom_feed("indexes", &updated, &entries),
            )
        }
        Mode::Json => {
            let entries = selected
                .iter()
                .map(|n| serde_json::json!({"name": n, "content": {"datatype": "event", "disabled": false}, "acl": render::acl_json("nobody")}))
                .collect();
            render::body(
                StatusCode::OK,
                Mode::Json,
                render::json_feed(&updated, entries),
            )
        }
    }
}

fn bad_request(mode: Mode, text: &str) -> Response {
    render::message(StatusCode::BAD_REQUEST, mode, "FATAL", text)
}

/// Parses `search`, time bounds and caps into a plan; the error is Splunk's 400 text.
fn plan_from(req: &Req, cap_param: &[&str]) -> Result<(String, Plan), String> {
    let search = req.param("search").unwrap_or("").trim().to_string();
    if search.is_empty() {
        return Err("Empty search.".into());
    }
    let pipeline = spl::parse(&search).map_err(|e| e.0)?;
    let now = Utc::now().timestamp_micros();
    let time = |k: &str| -> Result<Option<i64>, String> {
        match req.param(k).map(str::trim).filter(|v| !v.is_empty()) {
            None => Ok(None),
            Some(v) => parse_time_arg(v, now)
                .map(Some)
                .ok_or_else(|| format!("Invalid {k}: '{v}'.")),
        }
    };
    let (earliest, latest) = (time("earliest_time")?, time("latest_time")?);
    let cap = cap_param
        .iter()
        .filter_map(|k| req.param(k))
        .filter_map(|v| v.trim().parse::<u64>().ok())
        .find(|v| *v > 0);
    Ok((search, Plan::new(&pipeline, earliest, latest, cap)))
}

fn num(req: &Req, k: &str, default: u64) -> u64 {
    req.param(k)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

async fn search(shared: &Arc<Shared>, req: &Req, base: &str, rest: &[&str]) -> Response {
    let base_path = format!("{}/{base}", req.prefix);
    match (rest, &req.method) {
        ([], &Method::POST) => {
            let (search, plan) = match plan_from(req, &["max_count"]) {
                Ok(x) => x,
                Err(text) => return bad_request(req.mode, &text),
            };
            let Some(slot) = SearchSlot::acquire(shared) else {
                return quota_exceeded(req.mode);
            };
            // A job dispatched with `count`/`offset` (as Quay's search client pages) is done
            // once the events up to the page's end are scanned.
            let page_end = Some(num(req, "offset", 0) + num(req, "count", 0))
                .filter(|_| req.param("count").is_some());
            let exec_mode = req.param("exec_mode").unwrap_or("normal");
            let blocking = exec_mode != "normal";
            let job = jobs::dispatch(shared, search, plan, blocking, page_end, slot).await;
            if exec_mode == "oneshot" {
                jobs::remove(shared, &job.sid);
                return jobs::results(
                    shared,
                    &job,
                    req.mode,
                    num(req, "offset", 0),
                    num(req, "count", 100),
                );
            }
            jobs::created(req.mode, &job.sid)
        }
        ([], &Method::GET) => {
            let updated = now_text();
            match req.mode {
                Mode::Xml => render::body(
                    StatusCode::OK,
                    Mode::Xml,
                    render::atom_feed("jobs", &updated, &[]),
                ),
                Mode::Json => render::body(
                    StatusCode::OK,
                    Mode::Json,
                    render::json_feed(&updated, Vec::new()),
                ),
            }
        }
        (["export"], &Method::GET | &Method::POST) => {
            let (search, plan) = match plan_from(req, &["max_count", "count"]) {
                Ok(x) => x,
                Err(text) => return bad_request(req.mode, &text),
            };
            let Some(slot) = SearchSlot::acquire(shared) else {
                return quota_exceeded(req.mode);
            };
            Counters::bump(&shared.counters.exports);
            let faults = shared.faults();
            let cut_after = faults.cut_after.or_else(|| {
                let key = format!(
                    "{search}\0{:?}\0{:?}",
                    plan.filter.earliest, plan.filter.latest
                );
                faults.cut_once_after.filter(|_| shared.first_stream(key))
            });
            export::stream(shared.clone(), plan, faults, cut_after, slot)
        }
        ([sid, tail @ ..], method) => {
            let Some(job) = jobs::find(shared, sid) else {
                return render::message(StatusCode::NOT_FOUND, req.mode, "FATAL", "Unknown sid.");
            };
            match (tail, method) {
                ([], &Method::GET | &Method::POST) => jobs::status(&job, req.mode, &base_path),
                ([], &Method::DELETE) => {
                    jobs::remove(shared, sid);
                    render::message(StatusCode::OK, req.mode, "INFO", "Search job cancelled.")
                }
                (["results" | "events" | "results_preview"], &Method::GET | &Method::POST) => {
                    jobs::results(
                        shared,
                        &job,
                        req.mode,
                        num(req, "offset", 0),
                        num(req, "count", 100),
                    )
                }
                (["control"], &Method::POST) => match req.param("action").unwrap_or("") {
                    "cancel" => {
                        jobs::remove(shared, sid);
                        render::message(StatusCode::OK, req.mode, "INFO", "Search job cancelled.")
                    }
                    "finalize" | "pause" | "unpause" | "touch" | "setttl" | "setpriority"
                    | "enablepreview" | "disablepreview" => {
                        render::message(StatusCode::OK, req.mode, "INFO", "Search job updated.")
                    }
                    other => bad_request(req.mode, &format!("Unknown action '{other}'.")),
                },
                _ => render::message(StatusCode::NOT_FOUND, req.mode, "ERROR", "Not Found"),
            }
        }
        _ => render::message(
            StatusCode::METHOD_NOT_ALLOWED,
            req.mode,
            "ERROR",
            "Method not allowed.",
        ),
    }
}
