//! The local store behind its own download route, on an ephemeral axum server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use logexport::api::download_router;
use logexport::domain::ExportId;
use logexport::storage::{DownloadError, LocalStore, ObjectStore, object_key};
use sha2::Sha256;

use super::{MIB, http, meta, random_bytes, upload};

const SIGNING_KEY: &[u8] = b"local-test-signing-key";

struct LocalServer {
    store: Arc<LocalStore>,
    dir: PathBuf,
    addr: SocketAddr,
}

impl Drop for LocalServer {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A local store in a fresh directory, served on an ephemeral port by `download_router`.
async fn local_server() -> LocalServer {
    let dir = std::env::temp_dir().join(format!("logexport-local-{}", uuid::Uuid::new_v4()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let store = Arc::new(
        LocalStore::new(&dir.join("exports"), &format!("http://{addr}"), SIGNING_KEY).unwrap(),
    );
    let app: axum::Router = download_router(store.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    LocalServer { store, dir, addr }
}

fn files_in(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

#[tokio::test]
async fn local_store_serves_a_signed_link() {
    let server = local_server().await;
    let key = object_key("exportedactionlogs/", ExportId::new(), "csv.gz");
    let data = random_bytes(3 * MIB + 17, 9);
    assert_eq!(
        upload(server.store.as_ref(), &key, &data, 10).await,
        data.len() as u64
    );

    let url = server
        .store
        .download_url(&key, Duration::from_secs(60))
        .await
        .unwrap();
    assert!(
        url.as_str()
            .starts_with(&format!("http://{}/exportedlogs/", server.addr))
    );
    let response = http().get(url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/gzip");
    let disposition = response.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(disposition.starts_with("attachment; filename=") && disposition.ends_with(".csv.gz\""));
    assert!(response.bytes().await.unwrap()[..] == data[..]);
    assert_eq!(
        files_in(server.store.dir()).len(),
        1,
        "no partial file left behind"
    );
}

#[tokio::test]
async fn local_link_refused_when_tampered_expired_or_traversing() {
    let server = local_server().await;
    let key = object_key("exportedactionlogs/", ExportId::new(), "json");
    upload(server.store.as_ref(), &key, b"{}", 11).await;
    let client = http();

    let url = server
        .store
        .download_url(&key, Duration::from_secs(60))
        .await
        .unwrap();
    let signature = url
        .query_pairs()
        .find(|(k, _)| k == "signature")
        .unwrap()
        .1
        .into_owned();
    let expires = url
        .query_pairs()
        .find(|(k, _)| k == "expires")
        .unwrap()
        .1
        .into_owned();
    let flipped = format!(
        "{}{}",
        &signature[..signature.len() - 1],
        if signature.ends_with('0') { '1' } else { '0' }
    );
    let path = url.path().to_owned();
    let base = format!("http://{}", server.addr);
    let get = |path_and_query: String| {
        let client = client.clone();
        let base = base.clone();
        async move {
            client
                .get(format!("{base}{path_and_query}"))
                .send()
                .await
                .unwrap()
                .status()
        }
    };

    assert_eq!(
        get(format!("{path}?expires={expires}&signature={signature}")).await,
        200
    );
    assert_eq!(
        get(format!("{path}?expires={expires}&signature={flipped}")).await,
        403
    );
    let later: u64 = expires.parse::<u64>().unwrap() + 3600;
    assert_eq!(
        get(format!("{path}?expires={later}&signature={signature}")).await,
        403
    );
    assert_eq!(get(path.clone()).await, 403, "no signature at all");

    let expired = server
        .store
        .download_url(&key, Duration::ZERO)
        .await
        .unwrap();
    assert_eq!(client.get(expired).send().await.unwrap().status(), 410);

    // A file outside the directory, with a link signed by the right key: still refused.
    std::fs::write(server.dir.join("outside.json"), b"not yours").unwrap();
    let name = "../outside.json";
    let mut mac = Hmac::<Sha256>::new_from_slice(SIGNING_KEY).unwrap();
    mac.update(format!("{name}\n{expires}").as_bytes());
    let forged = hex::encode(mac.finalize().into_bytes());
    let now = SystemTime::now();
    assert_eq!(
        server.store.verify_download(name, &expires, &forged, now),
        Err(DownloadError::NotFound)
    );
    let status = get(format!(
        "/exportedlogs/..%2Foutside.json?expires={expires}&signature={forged}"
    ))
    .await;
    assert_eq!(status, 404);
    assert_ne!(
        get(format!(
            "/exportedlogs/../outside.json?expires={expires}&signature={forged}"
        ))
        .await,
        200
    );
}

#[tokio::test]
async fn local_abort_drop_and_stale_cleanup_leave_no_files() {
    let server = local_server().await;
    let store = server.store.as_ref();
    let prefix = "exportedactionlogs/";

    let mut upload = store
        .begin_upload(
            &object_key(prefix, ExportId::new(), "json"),
            &meta("a.json"),
        )
        .await
        .unwrap();
    upload.write(Bytes::from_static(b"partial")).await.unwrap();
    assert_eq!(
        store.list_incomplete_uploads(prefix).await.unwrap().len(),
        1
    );
    upload.abort().await.unwrap();
    assert!(files_in(store.dir()).is_empty());

    let mut upload = store
        .begin_upload(
            &object_key(prefix, ExportId::new(), "json"),
            &meta("b.json"),
        )
        .await
        .unwrap();
    upload.write(Bytes::from_static(b"partial")).await.unwrap();
    drop(upload);
    assert!(files_in(store.dir()).is_empty());

    // A crashed process leaves its partial file; housekeeping removes it once old enough.
    let mut upload = store
        .begin_upload(
            &object_key(prefix, ExportId::new(), "json"),
            &meta("c.json"),
        )
        .await
        .unwrap();
    upload.write(Bytes::from_static(b"partial")).await.unwrap();
    std::mem::forget(upload);
    assert_eq!(
        store
            .abort_stale_uploads("other/", Duration::ZERO)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .abort_stale_uploads(prefix, Duration::from_secs(3600))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        store
            .abort_stale_uploads(prefix, Duration::ZERO)
            .await
            .unwrap(),
        1
    );
    assert!(files_in(store.dir()).is_empty());
}
