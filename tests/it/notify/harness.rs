//! The real servers the notification tests talk to: an aiosmtpd sink process and an axum receiver.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use chrono::{DateTime, Utc};
use logexport::domain::{CallbackUrl, DateRange, ExportId};
use logexport::notify::{Notice, Outcome};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A fresh, empty directory under the system temp dir.
pub fn scratch_dir(what: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("logexport-notify-{what}-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A notice for acme/widgets over 06/01/2024–06/18/2024 with a fresh export id.
pub fn notice(outcome: Outcome) -> Notice {
    let now = DateTime::parse_from_rfc3339("2024-06-18T12:00:00Z")
        .unwrap()
        .to_utc();
    let export_id = ExportId::new();
    Notice {
        export_id,
        namespace: "acme".into(),
        repository: Some("widgets".into()),
        range: DateRange::from_request(Some("06/01/2024"), Some("06/18/2024"), None, now, 366)
            .unwrap(),
        outcome,
        webhook_id: format!("msg_{}", export_id.0.simple()),
        download_url: Some("https://registry.example/api/v1/exportlogs/x/download".into()),
        sha256: Some("ab".repeat(32)),
    }
}

/// A successful outcome with `url`, valid for an hour from now.
pub fn success(url: &str) -> Outcome {
    Outcome::Succeeded {
        url: url::Url::parse(url).unwrap(),
        expires_at: Utc::now() + chrono::Duration::hours(1),
        logs_exported: 1234,
        size_bytes: 56789,
    }
}

/// `deploy/smtp_sink.py` running on a port; killed when dropped.
pub struct SmtpSink {
    pub port: u16,
    pub dir: PathBuf,
    _child: Child,
}

impl SmtpSink {
    /// Starts a sink writing into a fresh directory.
    pub async fn start(port: u16, args: &[&str]) -> Self {
        Self::start_in(port, scratch_dir("smtp"), args).await
    }

    /// Starts a sink writing into `dir` (extra `args` such as `--auth u:p`) and waits until it
    /// prints "ready".
    pub async fn start_in(port: u16, dir: PathBuf, args: &[&str]) -> Self {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/smtp_sink.py");
        let mut cmd = Command::new("python3");
        cmd.arg(script)
            .args(["--port", &port.to_string()])
            .arg("--dir")
            .arg(&dir)
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        cmd.args(args);
        let mut child = cmd
            .spawn()
            .expect("python3 deploy/smtp_sink.py (pip install aiosmtpd)");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("SMTP sink did not start within 20 s")
            .unwrap();
        assert_eq!(
            ready.as_deref(),
            Some("ready"),
            "SMTP sink failed to start (is aiosmtpd installed?)"
        );
        Self {
            port,
            dir,
            _child: child,
        }
    }

    /// Every message received so far, oldest first.
    pub fn messages(&self) -> Vec<Mail> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "eml"))
            .collect();
        names.sort();
        names
            .iter()
            .map(|p| Mail::parse(&std::fs::read_to_string(p).unwrap()))
            .collect()
    }
}

/// One received message, split just enough to check headers and the two text parts.
pub struct Mail {
    pub envelope_to: String,
    headers: Vec<(String, String)>,
    parts: Vec<(String, String)>,
}

impl Mail {
    fn parse(raw: &str) -> Self {
        let raw = raw.replace("\r\n", "\n");
        let (head, body) = raw.split_once("\n\n").unwrap();
        let headers = unfold(head);
        let envelope_to = find(&headers, "X-Envelope-To").to_owned();
        let content_type = find(&headers, "Content-Type");
        assert!(
            content_type.starts_with("multipart/alternative"),
            "{content_type}"
        );
        let boundary = content_type
            .split("boundary=")
            .nth(1)
            .unwrap()
            .trim_matches('"')
            .to_owned();
        let parts = body
            .split(&format!("--{boundary}"))
            .filter_map(|chunk| {
                let (part_head, part_body) = chunk.trim_start_matches('\n').split_once("\n\n")?;
                let part_headers = unfold(part_head);
                let kind = find(&part_headers, "Content-Type")
                    .split(';')
                    .next()?
                    .trim()
                    .to_owned();
                let encoding =
                    find(&part_headers, "Content-Transfer-Encoding").to_ascii_lowercase();
                Some((kind, decode(&encoding, part_body)))
            })
            .collect();
        Self {
            envelope_to,
            headers,
            parts,
        }
    }

    /// A header's (unfolded) value, or "" when absent.
    pub fn header(&self, name: &str) -> &str {
        find(&self.headers, name)
    }

    /// The decoded body of the part with this content type.
    pub fn part(&self, content_type: &str) -> String {
        self.parts
            .iter()
            .find(|(kind, _)| kind == content_type)
            .map(|(_, body)| body.clone())
            .unwrap_or_else(|| panic!("no {content_type} part"))
    }
}

fn unfold(head: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in head.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = out.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
        } else if let Some((k, v)) = line.split_once(':') {
            out.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    out
}

fn find<'a>(headers: &'a [(String, String)], name: &str) -> &'a str {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .unwrap_or("")
}

fn decode(encoding: &str, body: &str) -> String {
    match encoding {
        "base64" => {
            let compact: String = body.split_whitespace().collect();
            let bytes = base64::engine::general_purpose::STANDARD
                .decode(compact)
                .unwrap();
            String::from_utf8(bytes).unwrap()
        }
        "quoted-printable" => {
            let joined = body.replace("=\n", "");
            let bytes = joined.as_bytes();
            let mut out = Vec::with_capacity(bytes.len());
            let mut i = 0;
            while i < bytes.len() {
                if bytes[i] == b'=' && i + 2 < bytes.len() {
                    let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap();
                    out.push(u8::from_str_radix(hex, 16).unwrap());
                    i += 3;
                } else {
                    out.push(bytes[i]);
                    i += 1;
                }
            }
            String::from_utf8(out).unwrap()
        }
        _ => body.to_owned(),
    }
}

/// How the receiver answers the next request.
#[derive(Debug, Clone)]
pub enum Reply {
    Status(u16),
    Hang(Duration),
    Redirect(String),
}

/// One request the receiver saw.
#[derive(Debug, Clone)]
pub struct Call {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Call {
    /// A header's value, or "" when absent.
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

#[derive(Clone, Default)]
struct Shared {
    script: Arc<Mutex<VecDeque<Reply>>>,
    calls: Arc<Mutex<Vec<Call>>>,
}

/// An HTTP callback receiver on 127.0.0.1 that answers from a script and records every request.
pub struct Receiver {
    pub port: u16,
    shared: Shared,
    server: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Starts the receiver; once the script is used up it answers 200.
    pub async fn start(script: Vec<Reply>) -> Self {
        let shared = Shared {
            script: Arc::new(Mutex::new(script.into())),
            ..Shared::default()
        };
        let app = Router::new().fallback(record).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self {
            port,
            shared,
            server,
        }
    }

    /// A callback URL on this receiver.
    pub fn url(&self, path: &str) -> CallbackUrl {
        CallbackUrl::from_stored(&format!("http://127.0.0.1:{}{path}", self.port)).unwrap()
    }

    /// Every request seen so far.
    pub fn calls(&self) -> Vec<Call> {
        self.shared.calls.lock().unwrap().clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn record(State(shared): State<Shared>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    shared.calls.lock().unwrap().push(Call {
        path: parts.uri.path().to_owned(),
        headers: parts.headers,
        body,
    });
    let reply = shared
        .script
        .lock()
        .unwrap()
        .pop_front()
        .unwrap_or(Reply::Status(200));
    match reply {
        Reply::Status(code) => StatusCode::from_u16(code).unwrap().into_response(),
        Reply::Hang(duration) => {
            tokio::time::sleep(duration).await;
            StatusCode::OK.into_response()
        }
        Reply::Redirect(to) => (StatusCode::FOUND, [(header::LOCATION, to)]).into_response(),
    }
}
