//! The object store disappearing mid-upload: the attempt fails cleanly, the retry completes.

use logexport::emulator::Faults;
use logexport::storage::{ObjectStore, S3Store};
use logexport::worker::Housekeeper;
use serde_json::{Value, json};
use std::net::SocketAddr;
use tokio_util::sync::CancellationToken;

use crate::export::ExportEnv;
use crate::helpers::{eventually, garage_s3_config};

/// A TCP relay in front of Garage that can be switched off (dropping live connections) and on.
struct TcpProxy {
    port: u16,
    target: SocketAddr,
    stop: CancellationToken,
}

impl TcpProxy {
    async fn start(target: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = CancellationToken::new();
        tokio::spawn(relay(listener, target, stop.clone()));
        Self { port, target, stop }
    }

    fn stop(&mut self) {
        self.stop.cancel();
    }

    async fn restart(&mut self) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .unwrap();
        self.stop = CancellationToken::new();
        tokio::spawn(relay(listener, self.target, self.stop.clone()));
    }
}

async fn relay(listener: tokio::net::TcpListener, target: SocketAddr, stop: CancellationToken) {
    loop {
        let (mut inbound, _) = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted { Ok(a) => a, Err(_) => return },
        };
        let stop = stop.clone();
        tokio::spawn(async move {
            let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                return;
            };
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
            }
        });
    }
}

#[tokio::test]
async fn s3_stopping_mid_upload_fails_the_attempt_and_the_retry_succeeds() {
    let garage = garage_s3_config();
    let target: SocketAddr = garage
        .endpoint_url
        .as_deref()
        .unwrap()
        .trim_start_matches("http://")
        .parse()
        .unwrap();
    let mut proxy = TcpProxy::start(target).await;
    let endpoint = format!("http://127.0.0.1:{}", proxy.port);
    let events: Vec<Value> = (0..24_000)
        .map(|i| json!({"kind": "pull_repo", "account": "acme", "repository": "web", "performer": format!("user{}", i % 50),
                        "performer_email": format!("user{}@example.com", i % 50), "ip": "198.51.100.7",
                        "datetime": 1_704_067_200 + i * 100, "metadata_json": {"tag": format!("release-{i}"), "digest": "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"}}))
        .collect();
    let env = ExportEnv::start(&events, |c| {
        c.storage.s3.endpoint_url = Some(endpoint.clone());
        c.worker.max_attempts = 10;
        c.export.stale_upload_seconds = 0;
        // Sliced by time: many slices, each boundary a checkpoint while the rest is still being
        // read, so parts go to S3 from the start. (Three slices sized by rows would end together,
        // and with nothing left to read the archive takes no checkpoint, so its one upload would
        // begin and complete at the end.)
        c.export.probe_rows = 0;
    })
    .await;
    // Slow enough that the upload is in flight for seconds.
    env.emulator.set_faults(Faults {
        slow_bytes_per_sec: Some(4_000_000),
        ..Faults::default()
    });
    let direct = S3Store::from_config(&garage).await.unwrap();
    let id = env
        .request(
            "/api/v1/organization/acme/exportlogs?starttime=01/01/2024&endtime=01/31/2024",
            json!({"callback_email": "a@example.com"}),
        )
        .await;

    eventually(60, "a multipart upload in flight", || async {
        (!direct
            .list_incomplete_uploads(&env.prefix)
            .await
            .unwrap()
            .is_empty())
        .then_some(())
    })
    .await;
    proxy.stop();
    let failed = env
        .status_until(&id, 60, "the attempt failed on S3", |status| {
            status["attempts"].as_i64().unwrap_or(0) >= 1
                && status["last_error"]
                    .as_str()
                    .is_some_and(|e| e.contains("S3"))
        })
        .await;
    assert_ne!(failed["state"], "succeeded");
    proxy.restart().await;
    env.emulator.set_faults(Faults::default());

    let status = env.finished(&id).await;
    assert_eq!(status["state"], "succeeded", "{status}");
    assert!(status["attempts"].as_i64().unwrap() >= 2);
    let doc: Value = reqwest::get(status["exported_data_url"].as_str().unwrap())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        doc["logs"].as_array().unwrap().len(),
        24_001,
        "every event once, plus the terminator"
    );

    // The failed attempt could not abort its upload while S3 was away; housekeeping does.
    Housekeeper::new(
        env.app.pool.clone(),
        (*env.app.config).clone(),
        Some(env.store.clone()),
    )
    .run_once()
    .await;
    assert!(
        direct
            .list_incomplete_uploads(&env.prefix)
            .await
            .unwrap()
            .is_empty(),
        "orphaned multipart upload"
    );
}
