//! Notification delivery against a real SMTP server (`deploy/smtp_sink.py`, aiosmtpd) and a real
//! HTTP receiver (axum on 127.0.0.1:0).

pub mod harness;

use std::time::Duration;

use chrono::Utc;
use logexport::config::{CallbackConfig, EmailConfig, Secret};
use logexport::domain::AllowList;
use logexport::domain::{CallbackUrl, EmailAddress};
use logexport::notify::ssrf::GuardedResolver;
use logexport::notify::{
    CallbackSender, Delivery, FileMailer, Mailer, Outcome, SmtpMailer, callback_payload,
    mailer_from_config, signing,
};
use reqwest::dns::Resolve;

use harness::{Receiver, Reply, SmtpSink, free_port, notice, scratch_dir, success};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn smtp_config(port: u16) -> EmailConfig {
    EmailConfig {
        transport: "smtp".into(),
        smtp_url: Secret::new(format!("smtp://127.0.0.1:{port}")),
        from: "Test Registry <noreply@registry.example>".into(),
        registry_title: "Test Registry".into(),
        timeout_seconds: 5,
        ..EmailConfig::default()
    }
}

fn callback_config(allowed: &[&str], timeout_seconds: u64) -> CallbackConfig {
    CallbackConfig {
        timeout_seconds,
        signing_secret: Secret::new(SECRET),
        allowed_hosts: allowed.iter().map(|s| s.to_string()).collect(),
        ..CallbackConfig::default()
    }
}

fn to(addr: &str) -> EmailAddress {
    EmailAddress::parse(addr).unwrap()
}

fn assert_retry(delivery: &Delivery) {
    assert!(
        matches!(delivery, Delivery::Retry { .. }),
        "expected Retry, got {delivery:?}"
    );
}

fn give_up_reason(delivery: Delivery) -> String {
    match delivery {
        Delivery::GiveUp { reason } => reason,
        other => panic!("expected GiveUp, got {other:?}"),
    }
}

#[tokio::test]
async fn success_mail_reaches_the_smtp_server_with_link_in_both_parts() {
    let sink = SmtpSink::start(free_port(), &[]).await;
    let mailer = mailer_from_config(&smtp_config(sink.port)).unwrap();
    let n = notice(success(
        "https://s3.example.com/bucket/exportedactionlogs/x.json?X-Amz-Signature=abc&X-Amz-Expires=3600",
    ));

    let delivery = mailer.send(&to("admin@example.com"), &n).await;
    assert!(delivery.is_delivered(), "{delivery:?}");

    let mails = sink.messages();
    assert_eq!(mails.len(), 1, "exactly one message");
    let mail = &mails[0];
    assert_eq!(mail.envelope_to, "admin@example.com");
    assert_eq!(
        mail.header("Subject"),
        "[Test Registry] Export Action Logs Complete"
    );
    assert!(mail.header("From").contains("noreply@registry.example"));
    assert!(mail.header("Message-ID").contains(&n.webhook_id));
    let (plain, html) = (mail.part("text/plain"), mail.part("text/html"));
    let link = "https://s3.example.com/bucket/exportedactionlogs/x.json?X-Amz-Signature=abc";
    assert!(
        plain.contains(&format!("{link}&X-Amz-Expires=3600")),
        "{plain}"
    );
    assert!(
        html.contains(&format!("href=\"{link}&amp;X-Amz-Expires=3600\"")),
        "{html}"
    );
    for body in [&plain, &html] {
        assert!(body.contains(&n.export_id.to_string()));
        assert!(
            body.contains("valid until") && body.contains("(1 hour)"),
            "{body}"
        );
        assert!(body.contains("deleted"));
    }
}

#[tokio::test]
async fn unsuccessful_outcomes_are_stated_in_the_mail() {
    let sink = SmtpSink::start(free_port(), &[]).await;
    let mailer = SmtpMailer::new(&smtp_config(sink.port)).unwrap();
    let outcomes = [
        (
            Outcome::Failed {
                reason: "Splunk search failed 3 times".into(),
            },
            "failed",
        ),
        (Outcome::TimedOut, "timed out"),
        (
            Outcome::InvalidRequest {
                reason: "namespace does not exist".into(),
            },
            "invalid request",
        ),
    ];
    for (outcome, phrase) in outcomes {
        let n = notice(outcome);
        assert!(
            mailer
                .send(&to("admin@example.com"), &n)
                .await
                .is_delivered()
        );
        let mail = sink
            .messages()
            .into_iter()
            .find(|m| m.part("text/plain").contains(&n.export_id.to_string()))
            .expect("mail for this export");
        for body in [mail.part("text/plain"), mail.part("text/html")] {
            assert!(body.contains(phrase), "{phrase:?} missing in {body}");
            assert!(!body.contains("Download"), "no link for {phrase}");
        }
    }
    assert_eq!(sink.messages().len(), 3);
}

#[tokio::test]
async fn smtp_outage_is_retried_and_delivered_once_the_server_is_back() {
    let port = free_port();
    let sink = SmtpSink::start(port, &[]).await;
    let mailer = SmtpMailer::new(&smtp_config(port)).unwrap();
    let first = notice(Outcome::TimedOut);
    assert!(
        mailer
            .send(&to("admin@example.com"), &first)
            .await
            .is_delivered()
    );
    let dir = sink.dir.clone();
    drop(sink); // kills the server; the pool still holds a connection to it

    let n = notice(Outcome::TimedOut);
    assert_retry(&mailer.send(&to("admin@example.com"), &n).await);
    assert_retry(&mailer.send(&to("admin@example.com"), &n).await);

    let sink = SmtpSink::start_in(port, dir, &[]).await;
    let delivery = mailer.send(&to("admin@example.com"), &n).await;
    assert!(delivery.is_delivered(), "{delivery:?}");
    let with_id = |id: String| {
        sink.messages()
            .into_iter()
            .filter(|m| m.part("text/plain").contains(&id))
            .count()
    };
    assert_eq!(
        with_id(n.export_id.to_string()),
        1,
        "the retried notice arrives exactly once"
    );
    assert_eq!(sink.messages().len(), 2);
}

#[tokio::test]
async fn permanent_rejection_gives_up() {
    let sink = SmtpSink::start(free_port(), &["--reject-rcpt-suffix", "@rejected.example"]).await;
    let mailer = SmtpMailer::new(&smtp_config(sink.port)).unwrap();
    let reason = give_up_reason(
        mailer
            .send(&to("nobody@rejected.example"), &notice(Outcome::TimedOut))
            .await,
    );
    assert!(
        reason.contains("550") || reason.contains("mailbox unavailable"),
        "{reason}"
    );
    assert!(sink.messages().is_empty());
}

#[tokio::test]
async fn smtp_credentials_from_the_url_are_used_and_never_reported() {
    let sink = SmtpSink::start(free_port(), &["--auth", "mailer:s3cr%t pw"]).await;
    let mut cfg = smtp_config(sink.port);
    cfg.smtp_url = Secret::new(format!(
        "smtp://mailer:s3cr%25t%20pw@127.0.0.1:{}",
        sink.port
    ));
    let n = notice(Outcome::TimedOut);
    let delivery = SmtpMailer::new(&cfg)
        .unwrap()
        .send(&to("admin@example.com"), &n)
        .await;
    assert!(delivery.is_delivered(), "{delivery:?}");
    assert_eq!(sink.messages().len(), 1);

    // A wrong password is our configuration, fixable before the last retry: retried, and the
    // reason the queue stores and logs does not contain it.
    cfg.smtp_url = Secret::new(format!("smtp://mailer:wrong-pw@127.0.0.1:{}", sink.port));
    let delivery = SmtpMailer::new(&cfg)
        .unwrap()
        .send(&to("admin@example.com"), &n)
        .await;
    let Delivery::Retry { reason, .. } = delivery else {
        panic!("expected Retry, got {delivery:?}");
    };
    assert!(reason.contains("535"), "{reason}");
    assert!(!reason.contains("wrong-pw"), "{reason}");
    assert_eq!(sink.messages().len(), 1);
}

#[tokio::test]
async fn header_injection_is_impossible() {
    for bad in [
        "admin@example.com\r\nBcc: victim@example.com",
        "a@example.com\nSubject: x",
    ] {
        assert!(EmailAddress::parse(bad).is_err(), "{bad:?}");
    }
    let mut cfg = smtp_config(free_port());
    cfg.registry_title = "Quay\r\nBcc: victim@example.com".into();
    let err = SmtpMailer::new(&cfg)
        .err()
        .expect("title with CRLF refused")
        .to_string();
    assert!(err.contains("email.registry_title"), "{err}");
    cfg.registry_title = "Quay".into();
    cfg.from = "noreply@quay.local\r\nBcc: victim@example.com".into();
    let err = SmtpMailer::new(&cfg)
        .err()
        .expect("from with CRLF refused")
        .to_string();
    assert!(err.contains("email.from"), "{err}");
}

#[tokio::test]
async fn file_transport_writes_an_eml_file() {
    let dir = scratch_dir("mail-file");
    let cfg = EmailConfig {
        transport: "file".into(),
        file_dir: dir.clone(),
        ..smtp_config(1)
    };
    let mailer = FileMailer::new(&cfg).unwrap();
    let n = notice(success("https://storage.example/x"));
    let Delivery::Delivered { receipt } = mailer.send(&to("admin@example.com"), &n).await else {
        panic!("file transport failed");
    };
    assert!(receipt.ends_with(".eml"), "{receipt}");
    let text = std::fs::read_to_string(&receipt).unwrap();
    assert!(text.contains("Subject: [Test Registry] Export Action Logs Complete"));
    assert!(text.contains("To: admin@example.com"));
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
}

#[tokio::test]
async fn callback_is_retried_on_5xx_with_a_stable_signed_id() {
    let receiver = Receiver::start(vec![
        Reply::Status(500),
        Reply::Status(503),
        Reply::Status(200),
    ])
    .await;
    let sender = CallbackSender::new(&callback_config(&["127.0.0.1/32"], 5)).unwrap();
    let n = notice(success("https://s3.example.com/b/k?sig=1"));
    let url = receiver.url("/hook");

    assert_retry(&sender.send(&url, &n).await);
    assert_retry(&sender.send(&url, &n).await);
    assert!(sender.send(&url, &n).await.is_delivered());

    let calls = receiver.calls();
    assert_eq!(calls.len(), 3);
    for call in &calls {
        assert_eq!(call.path, "/hook");
        assert_eq!(call.header("webhook-id"), n.webhook_id);
        assert_eq!(call.header("content-type"), "application/json");
        assert!(call.header("user-agent").starts_with("logexport/"));
        let ts: i64 = call.header("webhook-timestamp").parse().unwrap();
        assert!((Utc::now().timestamp() - ts).abs() < 60);
        assert!(
            signing::verify(
                SECRET,
                call.header("webhook-signature"),
                &n.webhook_id,
                ts,
                &call.body
            ),
            "signature does not verify"
        );
        assert!(!signing::verify(
            "whsec_AAAA",
            call.header("webhook-signature"),
            &n.webhook_id,
            ts,
            &call.body
        ));
        let body: serde_json::Value = serde_json::from_slice(&call.body).unwrap();
        assert_eq!(body, callback_payload(&n));
        assert_eq!(body["status"], "success");
        assert_eq!(
            body["exported_data_url"],
            "https://s3.example.com/b/k?sig=1"
        );
        assert_eq!(body["start_time"], "06/01/2024");
        assert_eq!(body["end_time"], "06/18/2024");
        assert_eq!(body["namespace"], "acme");
        assert_eq!(body["repository"], "widgets");
        assert_eq!(body["logs_exported"], 1234);
        assert_eq!(body["size_bytes"], 56789);
        assert!(body["expires_at"].as_str().unwrap().ends_with('Z'));
        assert!(
            body["download_url"]
                .as_str()
                .unwrap()
                .ends_with("/download")
        );
        assert_eq!(body["sha256"].as_str().unwrap().len(), 64);
        assert_eq!(body.as_object().unwrap().len(), 12);
    }
}

#[tokio::test]
async fn callback_client_errors_give_up() {
    let receiver = Receiver::start(vec![
        Reply::Status(404),
        Reply::Status(429),
        Reply::Status(408),
    ])
    .await;
    let sender = CallbackSender::new(&callback_config(&["127.0.0.1/32"], 5)).unwrap();
    let n = notice(Outcome::TimedOut);
    let url = receiver.url("/hook");
    assert!(give_up_reason(sender.send(&url, &n).await).contains("404"));
    assert_retry(&sender.send(&url, &n).await);
    assert_retry(&sender.send(&url, &n).await);
    assert_eq!(receiver.calls().len(), 3);
}

#[tokio::test]
async fn hanging_receiver_is_retried_after_the_timeout() {
    let receiver = Receiver::start(vec![Reply::Hang(Duration::from_secs(30))]).await;
    let sender = CallbackSender::new(&callback_config(&["127.0.0.1/32"], 1)).unwrap();
    let started = std::time::Instant::now();
    let delivery = sender
        .send(&receiver.url("/hook"), &notice(Outcome::TimedOut))
        .await;
    assert_retry(&delivery);
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "timeout not applied"
    );
    assert_eq!(receiver.calls().len(), 1);
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let receiver = Receiver::start(vec![Reply::Redirect("/target".into())]).await;
    let sender = CallbackSender::new(&callback_config(&["127.0.0.1/32"], 5)).unwrap();
    let reason = give_up_reason(
        sender
            .send(&receiver.url("/hook"), &notice(Outcome::TimedOut))
            .await,
    );
    assert!(
        reason.contains("302") && reason.contains("redirect"),
        "{reason}"
    );
    let calls = receiver.calls();
    assert_eq!(calls.len(), 1);
    assert!(
        calls.iter().all(|c| c.path != "/target"),
        "redirect target was hit"
    );
}

#[tokio::test]
async fn internal_literal_addresses_are_refused_without_the_allow_list() {
    let receiver = Receiver::start(vec![Reply::Status(200)]).await;
    let sender = CallbackSender::new(&callback_config(&[], 5)).unwrap();
    let n = notice(Outcome::TimedOut);
    let port = receiver.port;
    for raw in [
        format!("http://127.0.0.1:{port}/hook"),
        format!("http://2130706433:{port}/hook"),
        format!("http://0x7f.0.0.1:{port}/hook"),
        format!("http://[::ffff:127.0.0.1]:{port}/hook"),
        format!("http://[::1]:{port}/hook"),
        format!("http://169.254.169.254:{port}/latest/meta-data"),
    ] {
        let url = CallbackUrl::from_stored(&raw).unwrap();
        let reason = give_up_reason(sender.send(&url, &n).await);
        assert!(
            reason.contains("internal address") && reason.contains("refused"),
            "{raw}: {reason}"
        );
    }
    assert!(
        receiver.calls().is_empty(),
        "an internal receiver was reached"
    );
}

#[tokio::test]
async fn host_names_resolving_internally_are_refused_at_delivery() {
    let receiver = Receiver::start(vec![Reply::Status(200)]).await;
    let sender = CallbackSender::new(&callback_config(&[], 5)).unwrap();
    let url =
        CallbackUrl::from_stored(&format!("http://localhost:{}/hook", receiver.port)).unwrap();
    let reason = give_up_reason(sender.send(&url, &notice(Outcome::TimedOut)).await);
    assert!(
        reason.contains("localhost") && reason.contains("internal address"),
        "{reason}"
    );
    assert!(receiver.calls().is_empty());

    // The resolver itself: the answer reqwest would connect to is filtered.
    let resolver = GuardedResolver::new(std::sync::Arc::new(AllowList::default()));
    let refused = resolver.resolve("localhost".parse().unwrap()).await;
    assert!(refused.is_err());
    let allowed = GuardedResolver::new(std::sync::Arc::new(AllowList::new(&["localhost".into()])));
    assert!(allowed.resolve("localhost".parse().unwrap()).await.is_ok());
}
