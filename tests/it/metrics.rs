//! `/metrics` after an export, a refused request and a notification, parsed by the Prometheus
//! project's own text parser (`tests/metrics_check.py`, PyPI prometheus-client), which also
//! checks that the alert rules and the Grafana dashboard in `deploy/` name only served metrics.

use serde_json::{Value, json};

use crate::export::{JANUARY, dataset};
use crate::helpers::{eventually, spawn_app_with, test_config, test_db, use_emulator};
use crate::notify::harness::Receiver;

#[tokio::test]
async fn the_scrape_parses_and_the_alerts_and_dashboard_name_served_metrics() {
    let dir = std::env::temp_dir().join(format!(
        "logexport-metrics-{}",
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let events: Vec<String> = dataset().iter().map(Value::to_string).collect();
    std::fs::write(dir.join("events.ndjson"), events.join("\n")).unwrap();
    let emulator = logexport::emulator::spawn(logexport::emulator::EmulatorOptions {
        token: Some("splunk-test-token".into()),
        data_files: vec![dir.join("events.ndjson")],
        ..Default::default()
    })
    .await
    .expect("emulator");
    let receiver = Receiver::start(vec![]).await;
    let (url, pool) = test_db().await;
    let mut config = test_config(&url);
    use_emulator(&mut config, &emulator, "splunk-test-token");
    config.storage.local.path = dir.join("archives");
    let app = spawn_app_with(pool.clone(), config).await;
    let stop = tokio_util::sync::CancellationToken::new();
    let workers = tokio::spawn(logexport::service::work(
        pool,
        app.config.clone(),
        stop.clone(),
    ));
    let alice = app.token("alice", &["acme"], &[], false).await;
    let path = format!("/api/v1/organization/acme/exportlogs?{JANUARY}");
    let body = json!({"callback_url": format!("http://127.0.0.1:{}/done", receiver.port)});
    let accepted = app.post_export(&alice, &path, &body.to_string()).await;
    assert_eq!(accepted.status(), 200);
    let refused = app
        .post_export(
            &alice,
            "/api/v1/organization/acme/exportlogs?starttime=13/45/2024",
            "{}",
        )
        .await;
    assert_eq!(refused.status(), 400);
    eventually(60, "the callback", || async {
        (!receiver.calls().is_empty()).then_some(())
    })
    .await;

    // The worker counts the attempt just after the commit that sends the callback: wait for it.
    let scrape = eventually(10, "the finished attempt counted", || async {
        let scrape = app.client.get(app.url("/metrics")).send().await.unwrap();
        assert!(
            scrape.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("application/openmetrics-text"),
        );
        let text = scrape.text().await.unwrap();
        let notified = "logexport_jobs_by_kind{kind=\"notification\",state=\"succeeded\"} 1";
        (text.contains("logexport_jobs_finished_total{outcome=\"succeeded\"} 1")
            && text.contains(notified))
        .then_some(text)
    })
    .await;
    let file = dir.join("scrape.txt");
    std::fs::write(&file, scrape).unwrap();
    let root = env!("CARGO_MANIFEST_DIR");
    let output = std::process::Command::new("python3")
        .arg(format!("{root}/tests/metrics_check.py"))
        .arg(&file)
        .args([
            "logexport_jobs_started",
            "logexport_jobs_finished",
            "logexport_job_duration_seconds",
            "logexport_http_responses",
            "logexport_http_request_duration_seconds",
            "logexport_export_duration_seconds",
            "logexport_export_rows",
            "logexport_export_bytes",
            "logexport_export_events_per_second",
            "logexport_export_slices",
            "logexport_notifications",
            "logexport_notification_duration_seconds",
            "logexport_queue_jobs",
            "logexport_queue_oldest_queued_seconds",
            "logexport_splunk_searches_running",
            "logexport_background_panics",
            "logexport_jobs_by_kind",
            "logexport_jobs_oldest_queued_seconds",
            "logexport_jobs_outcomes",
        ])
        .output()
        .expect("python3 runs (deploy/test.sh installs prometheus-client and PyYAML)");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = std::fs::read_to_string(&file).unwrap();
    for line in [
        "logexport_http_responses_total{status=\"400\"} 1",
        "logexport_jobs_finished_total{outcome=\"succeeded\"} 1",
        "logexport_notifications_total{outcome=\"callback_delivered\"} 1",
        "logexport_jobs_outcomes_total{kind=\"notification\",outcome=\"succeeded\"} 1",
        "logexport_jobs_by_kind{kind=\"notification\",state=\"queued\"} 0",
        "logexport_jobs_oldest_queued_seconds{kind=\"notification\"} 0",
        // Exports are a kind of the same runner.
        "logexport_jobs_outcomes_total{kind=\"export\",outcome=\"succeeded\"} 1",
        "logexport_jobs_by_kind{kind=\"export\",state=\"succeeded\"} 1",
        "logexport_jobs_by_kind{kind=\"export\",state=\"queued\"} 0",
        "logexport_jobs_oldest_queued_seconds{kind=\"export\"} 0",
    ] {
        assert!(text.contains(line), "{line} not in\n{text}");
    }
    stop.cancel();
    let _ = workers.await;
    let _ = std::fs::remove_dir_all(&dir);
}
