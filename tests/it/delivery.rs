//! The notification stage end to end: exactly one notice per export, retried on its own.

use logexport::config::Secret;
use logexport::emulator::Faults;
use serde_json::{Value, json};

use crate::export::ExportEnv;
use crate::helpers::{assert_still, finished_export, test_config, test_db};
use crate::notify::harness::{Receiver, Reply, SmtpSink, free_port};

/// Long enough for a duplicate to show: a second notifier's claim, or a retry after a 1 s
/// backoff.
const QUIET: u64 = 3;
const JANUARY: &str = "starttime=01/01/2024&endtime=01/31/2024";
const ORG: &str = "/api/v1/organization/acme/exportlogs";

fn events() -> Vec<Value> {
    (0..50)
        .map(|i| {
            json!({"kind": "push_repo", "account": "acme", "repository": "web", "performer": "bob",
                        "datetime": 1_704_067_200 + i * 3600, "metadata_json": {"n": i}})
        })
        .collect()
}

async fn notification(env: &ExportEnv, id: &str) -> Value {
    env.status_until(id, 60, "notification settled", |status| {
        matches!(
            status["notification"]["state"].as_str(),
            Some("delivered" | "failed")
        )
    })
    .await
}

fn link_in(text: &str) -> String {
    let start = text
        .find("http://127.0.0.1:3900/")
        .or_else(|| text.find("http://"))
        .expect("a link");
    text[start..]
        .split_whitespace()
        .next()
        .unwrap()
        .trim_end_matches(['.', ')', '>'])
        .to_owned()
}

#[tokio::test]
async fn a_successful_export_sends_exactly_one_email_whose_link_downloads_the_archive() {
    let sink = SmtpSink::start(free_port(), &[]).await;
    let port = sink.port;
    let env = ExportEnv::start(&events(), |c| {
        c.email.transport = "smtp".into();
        c.email.smtp_url = Secret::new(format!("smtp://127.0.0.1:{port}"));
    })
    .await;
    let (stop, notifier) = env.start_notifier();
    let id = env
        .request(
            &format!("{ORG}?{JANUARY}"),
            json!({"callback_email": "admin@example.com"}),
        )
        .await;
    let status = notification(&env, &id).await;
    assert_eq!(status["notification"]["state"], "delivered", "{status}");
    assert_still(QUIET, "exactly one e-mail", || async {
        sink.messages().len() == 1
    })
    .await;
    let mails = sink.messages();
    assert_eq!(mails.len(), 1, "exactly one e-mail");
    let mail = &mails[0];
    assert!(mail.envelope_to.contains("admin@example.com"));
    assert_eq!(
        mail.header("Subject"),
        "[Project Quay] Export Action Logs Complete"
    );
    let text = mail.part("text/plain");
    assert!(text.contains(&id), "{text}");
    let doc: Value = reqwest::get(link_in(&text))
        .await
        .unwrap()
        .json()
        .await
        .expect("the mailed link downloads the archive");
    assert_eq!(doc["logs"].as_array().unwrap().len(), 51);
    stop.cancel();
    notifier.await.unwrap();
}

#[tokio::test]
async fn failed_and_timed_out_exports_send_one_notice_each() {
    let sink = SmtpSink::start(free_port(), &[]).await;
    let port = sink.port;
    let env = ExportEnv::start(&events(), |c| {
        c.email.transport = "smtp".into();
        c.email.smtp_url = Secret::new(format!("smtp://127.0.0.1:{port}"));
        c.worker.max_work_seconds = 2;
        c.splunk.bearer_token = Secret::new("rejected");
    })
    .await;
    let (stop, notifier) = env.start_notifier();
    let id = env
        .request(
            &format!("{ORG}?{JANUARY}"),
            json!({"callback_email": "failed@example.com"}),
        )
        .await;
    let status = notification(&env, &id).await;
    assert_eq!(status["state"], "failed");
    assert_eq!(status["notification"]["state"], "delivered");
    assert_still(QUIET, "exactly one notice", || async {
        sink.messages().len() == 1
    })
    .await;
    let mails = sink.messages();
    assert_eq!(mails.len(), 1);
    assert!(
        mails[0]
            .part("text/plain")
            .to_lowercase()
            .contains("failed")
    );
    stop.cancel();
    notifier.await.unwrap();

    // A stream too slow to finish within max_work_seconds.
    let sink = SmtpSink::start(free_port(), &[]).await;
    let port = sink.port;
    let env = ExportEnv::start(&events(), |c| {
        c.email.transport = "smtp".into();
        c.email.smtp_url = Secret::new(format!("smtp://127.0.0.1:{port}"));
        c.worker.max_work_seconds = 2;
    })
    .await;
    env.emulator.set_faults(Faults {
        slow_bytes_per_sec: Some(500),
        ..Faults::default()
    });
    let (stop, notifier) = env.start_notifier();
    let id = env
        .request(
            &format!("{ORG}?{JANUARY}"),
            json!({"callback_email": "slow@example.com"}),
        )
        .await;
    let status = notification(&env, &id).await;
    assert_eq!(status["state"], "timed_out", "{status}");
    assert_eq!(status["attempts"], 1);
    assert_still(QUIET, "one timed-out notice", || async {
        sink.messages().len() == 1
    })
    .await;
    let mails = sink.messages();
    assert_eq!(mails.len(), 1, "one timed-out notice, not three");
    assert!(
        mails[0]
            .part("text/plain")
            .to_lowercase()
            .contains("timed out")
    );
    stop.cancel();
    notifier.await.unwrap();
}

#[tokio::test]
async fn a_notice_pending_when_the_worker_died_is_sent_once_by_whoever_picks_it_up() {
    let sink = SmtpSink::start(free_port(), &[]).await;
    let port = sink.port;
    let env = ExportEnv::start(&events(), |c| {
        c.email.transport = "smtp".into();
        c.email.smtp_url = Secret::new(format!("smtp://127.0.0.1:{port}"));
    })
    .await;
    // No notifier runs: the export finishes and its notice waits in the table.
    let id = env
        .request(
            &format!("{ORG}?{JANUARY}"),
            json!({"callback_email": "admin@example.com"}),
        )
        .await;
    let status = env.finished(&id).await;
    assert_eq!(status["notification"]["state"], "pending");
    // Two notifier processes come up at once; the notice still goes out once.
    let (stop_a, a) = env.start_notifier();
    let (stop_b, b) = env.start_notifier();
    let status = notification(&env, &id).await;
    assert_eq!(status["notification"]["state"], "delivered");
    assert_still(QUIET, "one notice from two notifiers", || async {
        sink.messages().len() == 1
    })
    .await;
    assert_eq!(sink.messages().len(), 1);
    assert_eq!(status["attempts"], 1, "the export itself ran once");
    for (stop, handle) in [(stop_a, a), (stop_b, b)] {
        stop.cancel();
        handle.await.unwrap();
    }
}

#[tokio::test]
async fn a_callback_answering_500_twice_is_delivered_on_the_third_try_with_a_stable_signature() {
    let receiver = Receiver::start(vec![Reply::Status(500), Reply::Status(500)]).await;
    let env = ExportEnv::start(&events(), |c| {
        c.callback.signing_secret = Secret::new("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        c.callback.backoff_base_seconds = 1;
        c.callback.backoff_max_seconds = 2;
    })
    .await;
    let (stop, notifier) = env.start_notifier();
    let url = receiver.url("/hook").to_string();
    let id = env
        .request(&format!("{ORG}?{JANUARY}"), json!({"callback_url": url}))
        .await;
    let status = notification(&env, &id).await;
    assert_eq!(status["notification"]["state"], "delivered", "{status}");
    assert_eq!(status["notification"]["attempts"], 3);
    assert_eq!(status["attempts"], 1, "the export was not re-run");
    assert_still(QUIET, "three calls, no fourth", || async {
        receiver.calls().len() == 3
    })
    .await;
    let calls = receiver.calls();
    assert_eq!(calls.len(), 3);
    let ids: Vec<&str> = calls.iter().map(|c| c.header("webhook-id")).collect();
    assert!(ids.iter().all(|i| !i.is_empty() && *i == ids[0]), "{ids:?}");
    for call in &calls {
        let ts: i64 = call.header("webhook-timestamp").parse().unwrap();
        assert!(logexport::notify::signing::verify(
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            call.header("webhook-signature"),
            call.header("webhook-id"),
            ts,
            &call.body
        ));
    }
    let body: Value = serde_json::from_slice(&calls[2].body).unwrap();
    assert_eq!(body["export_id"], id.as_str());
    assert_eq!(body["status"], "success");
    assert_eq!(body["namespace"], "acme");
    assert_eq!(
        (body["start_time"].as_str(), body["end_time"].as_str()),
        (Some("01/01/2024"), Some("01/31/2024"))
    );
    assert_eq!(body["logs_exported"], 50);
    assert!(
        body["exported_data_url"]
            .as_str()
            .unwrap()
            .starts_with("http")
    );
    stop.cancel();
    notifier.await.unwrap();
}

#[tokio::test]
async fn a_callback_answering_404_is_given_up_without_rerunning_the_export() {
    let receiver = Receiver::start(vec![Reply::Status(404)]).await;
    let env = ExportEnv::start(&events(), |_| {}).await;
    let (stop, notifier) = env.start_notifier();
    let id = env
        .request(
            &format!("{ORG}?{JANUARY}"),
            json!({"callback_url": receiver.url("/gone").to_string()}),
        )
        .await;
    let status = notification(&env, &id).await;
    assert_eq!(status["notification"]["state"], "failed");
    assert!(
        status["notification"]["last_error"]
            .as_str()
            .unwrap()
            .contains("404")
    );
    assert_eq!(status["state"], "succeeded");
    assert_eq!(status["attempts"], 1);
    assert_still(
        QUIET,
        "one call to a callback that answered 404",
        || async { receiver.calls().len() == 1 },
    )
    .await;
    assert_eq!(receiver.calls().len(), 1);
    stop.cancel();
    notifier.await.unwrap();
}

#[tokio::test]
async fn mail_is_delivered_after_the_smtp_server_comes_back() {
    let port = free_port();
    let env = ExportEnv::start(&events(), |c| {
        c.email.transport = "smtp".into();
        c.email.smtp_url = Secret::new(format!("smtp://127.0.0.1:{port}"));
        c.email.timeout_seconds = 2;
        c.callback.backoff_base_seconds = 1;
        c.callback.backoff_max_seconds = 2;
    })
    .await;
    let (stop, notifier) = env.start_notifier();
    let id = env
        .request(
            &format!("{ORG}?{JANUARY}"),
            json!({"callback_email": "admin@example.com"}),
        )
        .await;
    let status = env
        .status_until(&id, 30, "a failed delivery attempt", |status| {
            status["notification"]["attempts"].as_i64().unwrap_or(0) >= 1
                && status["notification"]["last_error"].is_string()
        })
        .await;
    assert_eq!(status["notification"]["state"], "pending");
    let sink = SmtpSink::start(port, &[]).await;
    let status = notification(&env, &id).await;
    assert_eq!(status["notification"]["state"], "delivered");
    assert_eq!(status["attempts"], 1, "the export was not re-run");
    assert_still(QUIET, "one e-mail once the server is back", || async {
        sink.messages().len() == 1
    })
    .await;
    assert_eq!(sink.messages().len(), 1);
    stop.cancel();
    notifier.await.unwrap();
}

/// Log output kept in memory, for a test to read.
#[derive(Clone, Default)]
struct LogBuffer(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl LogBuffer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogBuffer {
    type Writer = LogBuffer;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

#[tokio::test]
async fn every_log_line_of_a_delivery_carries_its_export_id() {
    use tracing::instrument::WithSubscriber;

    let sink = SmtpSink::start(free_port(), &[]).await;
    let (url, pool) = test_db().await;
    let mut config = test_config(&url);
    config.email.transport = "smtp".into();
    config.email.smtp_url = Secret::new(format!("smtp://127.0.0.1:{}", sink.port));
    let id = finished_export(&pool, "acme", "admin@example.com").await;
    let mailer = logexport::notify::mailer_from_config(&config.email).unwrap();
    let notifier = logexport::worker::Notifier::new(pool.clone(), &config, mailer).unwrap();

    let logs = LogBuffer::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(logs.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let delivered = notifier.deliver_next().with_subscriber(subscriber).await;
    assert!(delivered.unwrap(), "a notification was due");
    assert_eq!(sink.messages().len(), 1);

    let text = logs.text();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("logexport::worker::notifier"))
        .collect();
    // The channel's line and the notification's.
    assert!(lines.len() >= 2, "{text}");
    assert!(
        lines.iter().any(|l| l.contains("notification delivered")),
        "{text}"
    );
    for line in lines {
        assert!(line.contains(&format!("export_id={id}")), "{line}");
    }
}
