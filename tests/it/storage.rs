//! Object storage against real servers: Garage for S3 (run `deploy/garage.sh` and
//! `source .test-env/garage.env`), and the local store behind its own download route.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use hmac::{Hmac, Mac};
use logexport::config::{S3Config, Secret};
use logexport::domain::ExportId;
use logexport::storage::{
    DownloadError, LocalStore, ObjectMeta, ObjectStore, S3Store, Upload, download_router,
    object_key,
};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};
use sha2::Sha256;

const MIB: usize = 1024 * 1024;

struct GarageEnv {
    endpoint: String,
    region: String,
    bucket: String,
    access_key: String,
    secret_key: String,
}

fn garage_env() -> GarageEnv {
    let var = |name: &str| {
        std::env::var(name).unwrap_or_else(|_| {
            panic!(
                "{name} is not set: start Garage with deploy/garage.sh (or run deploy/test.sh), \
                 then `source .test-env/garage.env`"
            )
        })
    };
    GarageEnv {
        endpoint: var("LOGEXPORT_TEST_S3_ENDPOINT"),
        region: var("LOGEXPORT_TEST_S3_REGION"),
        bucket: var("LOGEXPORT_TEST_S3_BUCKET"),
        access_key: var("LOGEXPORT_TEST_S3_ACCESS_KEY"),
        secret_key: var("LOGEXPORT_TEST_S3_SECRET_KEY"),
    }
}

fn s3_config(env: &GarageEnv) -> S3Config {
    S3Config {
        bucket: env.bucket.clone(),
        region: env.region.clone(),
        endpoint_url: Some(env.endpoint.clone()),
        force_path_style: true,
        access_key_id: Secret::new(env.access_key.clone()),
        secret_access_key: Secret::new(env.secret_key.clone()),
        part_size_mib: 5,
        checksum: "when_required".into(),
    }
}

async fn garage() -> S3Store {
    S3Store::from_config(&s3_config(&garage_env()))
        .await
        .expect("S3 store from the Garage env")
}

/// A raw SDK client, to create uploads the store would never leave behind by itself.
async fn raw_client() -> (aws_sdk_s3::Client, String) {
    let env = garage_env();
    let creds =
        aws_sdk_s3::config::Credentials::new(&env.access_key, &env.secret_key, None, None, "test");
    let conf = aws_sdk_s3::config::Builder::new()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new(env.region.clone()))
        .endpoint_url(&env.endpoint)
        .force_path_style(true)
        .credentials_provider(creds)
        .build();
    (aws_sdk_s3::Client::from_conf(conf), env.bucket)
}

fn prefix() -> String {
    format!("test-{}/", uuid::Uuid::new_v4())
}

fn meta(filename: &str) -> ObjectMeta {
    ObjectMeta {
        content_type: "application/json".into(),
        filename: filename.into(),
    }
}

fn http() -> reqwest::Client {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    reqwest::Client::builder().build().expect("http client")
}

fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut data = vec![0u8; len];
    StdRng::seed_from_u64(seed).fill_bytes(&mut data);
    data
}

/// Writes `data` through a new upload in random-sized chunks and completes it.
async fn upload(store: &dyn ObjectStore, key: &str, data: &[u8], seed: u64) -> u64 {
    let mut upload = store
        .begin_upload(key, &meta("export.json"))
        .await
        .expect("begin upload");
    write_random_chunks(upload.as_mut(), data, seed).await;
    upload.complete().await.expect("complete upload")
}

async fn write_random_chunks(upload: &mut dyn Upload, data: &[u8], seed: u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut rest = data;
    while !rest.is_empty() {
        let n = rng.gen_range(1..=3 * MIB).min(rest.len());
        upload
            .write(Bytes::copy_from_slice(&rest[..n]))
            .await
            .expect("write chunk");
        rest = &rest[n..];
    }
}

async fn wait_until_no_incomplete(store: &dyn ObjectStore, prefix: &str) -> Vec<String> {
    let mut left = Vec::new();
    for _ in 0..50 {
        left = store.list_incomplete_uploads(prefix).await.expect("list uploads");
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    left
}

#[tokio::test]
async fn multipart_upload_downloads_byte_identical_through_presigned_link() {
    let store = garage().await;
    let prefix = prefix();
    let key = object_key(&prefix, ExportId::new(), "json");
    let data = random_bytes(20 * MIB + 12_345, 1);

    let mut upload = store.begin_upload(&key, &meta("export-1.json")).await.unwrap();
    write_random_chunks(upload.as_mut(), &data[..12 * MIB], 2).await;
    // Two full parts are out: this is a real multipart upload, still invisible as an object.
    assert_eq!(store.list_incomplete_uploads(&prefix).await.unwrap(), [key.clone()]);
    assert_eq!(store.size(&key).await.unwrap(), None);
    write_random_chunks(upload.as_mut(), &data[12 * MIB..], 3).await;
    assert_eq!(upload.complete().await.unwrap(), data.len() as u64);

    assert!(store.list_incomplete_uploads(&prefix).await.unwrap().is_empty());
    assert_eq!(store.size(&key).await.unwrap(), Some(data.len() as u64));
    let url = store.download_url(&key, Duration::from_secs(60)).await.unwrap();
    let response = http().get(url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let disposition = response.headers()["content-disposition"].to_str().unwrap().to_owned();
    assert!(disposition.starts_with("attachment; filename="), "{disposition}");
    assert!(disposition.contains(".json"), "{disposition}");
    let body = response.bytes().await.unwrap();
    assert!(body[..] == data[..], "downloaded bytes differ");
    store.delete(&key).await.unwrap();
}

#[tokio::test]
async fn small_archive_is_one_object_with_its_content_type() {
    let store = garage().await;
    let key = object_key(&prefix(), ExportId::new(), "json");
    let data = br#"{"logs": [{"terminator": true}]}"#;
    assert_eq!(upload(&store, &key, data, 4).await, data.len() as u64);
    let url = store.download_url(&key, Duration::from_secs(60)).await.unwrap();
    let response = http().get(url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(&response.bytes().await.unwrap()[..], data);
    store.delete(&key).await.unwrap();
}

#[tokio::test]
async fn presigned_link_is_refused_when_tampered_or_expired() {
    let store = garage().await;
    let key = object_key(&prefix(), ExportId::new(), "json");
    upload(&store, &key, b"secret audit data", 5).await;
    let url = store.download_url(&key, Duration::from_secs(2)).await.unwrap();

    let mut tampered = url.clone();
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == "X-Amz-Signature" {
                let mut s = v.into_owned();
                let last = if s.ends_with('0') { "1" } else { "0" };
                s.replace_range(s.len() - 1.., last);
                s
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    tampered.query_pairs_mut().clear().extend_pairs(pairs);
    assert_ne!(tampered, url);

    let client = http();
    assert_eq!(client.get(url.clone()).send().await.unwrap().status(), 200);
    assert_eq!(client.get(tampered).send().await.unwrap().status(), 403);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let expired = client.get(url).send().await.unwrap();
    assert_eq!(expired.status(), 403, "expired link still works");
    store.delete(&key).await.unwrap();
}

#[tokio::test]
async fn aborted_upload_leaves_neither_parts_nor_object() {
    let store = garage().await;
    let prefix = prefix();
    let key = object_key(&prefix, ExportId::new(), "json");
    let mut upload = store.begin_upload(&key, &meta("x.json")).await.unwrap();
    upload.write(Bytes::from(random_bytes(6 * MIB, 6))).await.unwrap();
    assert_eq!(store.list_incomplete_uploads(&prefix).await.unwrap(), [key.clone()]);

    upload.abort().await.unwrap();
    assert!(store.list_incomplete_uploads(&prefix).await.unwrap().is_empty());
    assert_eq!(store.size(&key).await.unwrap(), None);
}

#[tokio::test]
async fn dropped_upload_is_aborted_in_the_background() {
    let store = garage().await;
    let prefix = prefix();
    let key = object_key(&prefix, ExportId::new(), "json");
    let mut upload = store.begin_upload(&key, &meta("x.json")).await.unwrap();
    upload.write(Bytes::from(random_bytes(11 * MIB, 7))).await.unwrap();
    assert_eq!(store.list_incomplete_uploads(&prefix).await.unwrap().len(), 1);

    drop(upload);
    let left = wait_until_no_incomplete(&store, &prefix).await;
    assert!(left.is_empty(), "orphaned multipart uploads: {left:?}");
    assert_eq!(store.size(&key).await.unwrap(), None);
}

#[tokio::test]
async fn stale_upload_cleanup_respects_prefix_and_age() {
    let store = garage().await;
    let (client, bucket) = raw_client().await;
    let (mine, other) = (prefix(), prefix());
    for p in [&mine, &mine, &other] {
        client
            .create_multipart_upload()
            .bucket(&bucket)
            .key(object_key(p, ExportId::new(), "json"))
            .send()
            .await
            .expect("create multipart upload");
    }
    assert_eq!(store.list_incomplete_uploads(&mine).await.unwrap().len(), 2);

    let hour = Duration::from_secs(3600);
    assert_eq!(store.abort_stale_uploads(&mine, hour).await.unwrap(), 0, "too young");
    assert_eq!(store.list_incomplete_uploads(&mine).await.unwrap().len(), 2);

    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(store.abort_stale_uploads(&mine, Duration::ZERO).await.unwrap(), 2);
    assert!(store.list_incomplete_uploads(&mine).await.unwrap().is_empty());
    assert_eq!(store.list_incomplete_uploads(&other).await.unwrap().len(), 1, "other prefix");
    assert_eq!(store.abort_stale_uploads(&other, Duration::ZERO).await.unwrap(), 1);
}

#[tokio::test]
async fn delete_removes_the_object_and_its_link() {
    let store = garage().await;
    let key = object_key(&prefix(), ExportId::new(), "csv");
    upload(&store, &key, b"datetime,kind\r\n", 8).await;
    let url = store.download_url(&key, Duration::from_secs(60)).await.unwrap();
    store.delete(&key).await.unwrap();
    assert_eq!(store.size(&key).await.unwrap(), None);
    assert_eq!(http().get(url).send().await.unwrap().status(), 404);
    store.delete(&key).await.expect("deleting twice is fine");
}

#[tokio::test]
async fn keys_for_the_same_export_differ() {
    let id = ExportId::new();
    let (a, b) = (object_key("p/", id, "json"), object_key("p/", id, "json"));
    assert_ne!(a, b);
    assert!(a.starts_with(&format!("p/{id}-")) && b.starts_with(&format!("p/{id}-")));
}

// ---- local storage -------------------------------------------------------------------------

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
    let store =
        Arc::new(LocalStore::new(&dir.join("exports"), &format!("http://{addr}"), SIGNING_KEY).unwrap());
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
    assert_eq!(upload(server.store.as_ref(), &key, &data, 10).await, data.len() as u64);

    let url = server.store.download_url(&key, Duration::from_secs(60)).await.unwrap();
    assert!(url.as_str().starts_with(&format!("http://{}/exportedlogs/", server.addr)));
    let response = http().get(url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/gzip");
    let disposition = response.headers()["content-disposition"].to_str().unwrap().to_owned();
    assert!(disposition.starts_with("attachment; filename=") && disposition.ends_with(".csv.gz\""));
    assert!(response.bytes().await.unwrap()[..] == data[..]);
    assert_eq!(files_in(server.store.dir()).len(), 1, "no partial file left behind");
}

#[tokio::test]
async fn local_link_refused_when_tampered_expired_or_traversing() {
    let server = local_server().await;
    let key = object_key("exportedactionlogs/", ExportId::new(), "json");
    upload(server.store.as_ref(), &key, b"{}", 11).await;
    let client = http();

    let url = server.store.download_url(&key, Duration::from_secs(60)).await.unwrap();
    let signature = url.query_pairs().find(|(k, _)| k == "signature").unwrap().1.into_owned();
    let expires = url.query_pairs().find(|(k, _)| k == "expires").unwrap().1.into_owned();
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
        async move { client.get(format!("{base}{path_and_query}")).send().await.unwrap().status() }
    };

    assert_eq!(get(format!("{path}?expires={expires}&signature={signature}")).await, 200);
    assert_eq!(get(format!("{path}?expires={expires}&signature={flipped}")).await, 403);
    let later: u64 = expires.parse::<u64>().unwrap() + 3600;
    assert_eq!(get(format!("{path}?expires={later}&signature={signature}")).await, 403);
    assert_eq!(get(path.clone()).await, 403, "no signature at all");

    let expired = server.store.download_url(&key, Duration::ZERO).await.unwrap();
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
    let status = get(format!("/exportedlogs/..%2Foutside.json?expires={expires}&signature={forged}")).await;
    assert_eq!(status, 404);
    assert_ne!(get(format!("/exportedlogs/../outside.json?expires={expires}&signature={forged}")).await, 200);
}

#[tokio::test]
async fn local_abort_drop_and_stale_cleanup_leave_no_files() {
    let server = local_server().await;
    let store = server.store.as_ref();
    let prefix = "exportedactionlogs/";

    let mut upload = store.begin_upload(&object_key(prefix, ExportId::new(), "json"), &meta("a.json")).await.unwrap();
    upload.write(Bytes::from_static(b"partial")).await.unwrap();
    assert_eq!(store.list_incomplete_uploads(prefix).await.unwrap().len(), 1);
    upload.abort().await.unwrap();
    assert!(files_in(store.dir()).is_empty());

    let mut upload = store.begin_upload(&object_key(prefix, ExportId::new(), "json"), &meta("b.json")).await.unwrap();
    upload.write(Bytes::from_static(b"partial")).await.unwrap();
    drop(upload);
    assert!(files_in(store.dir()).is_empty());

    // A crashed process leaves its partial file; housekeeping removes it once old enough.
    let mut upload = store.begin_upload(&object_key(prefix, ExportId::new(), "json"), &meta("c.json")).await.unwrap();
    upload.write(Bytes::from_static(b"partial")).await.unwrap();
    std::mem::forget(upload);
    assert_eq!(store.abort_stale_uploads("other/", Duration::ZERO).await.unwrap(), 0);
    assert_eq!(store.abort_stale_uploads(prefix, Duration::from_secs(3600)).await.unwrap(), 0);
    assert_eq!(store.abort_stale_uploads(prefix, Duration::ZERO).await.unwrap(), 1);
    assert!(files_in(store.dir()).is_empty());
}
