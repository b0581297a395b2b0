//! Object storage against real servers: Garage for S3 (run `deploy/garage.sh` and
//! `source .test-env/garage.env`), and the local store behind its own download route.

mod local;

use std::time::Duration;

use crate::helpers::garage_s3_config;
use bytes::Bytes;
use logexport::domain::ExportId;
use logexport::storage::{ObjectMeta, ObjectStore, S3Store, Upload, object_key};
use rand::rngs::StdRng;
use rand::{Rng, RngCore, SeedableRng};

const MIB: usize = 1024 * 1024;

async fn garage() -> S3Store {
    S3Store::from_config(&garage_s3_config())
        .await
        .expect("S3 store from the Garage env")
}

/// A raw SDK client, to create uploads the store would never leave behind by itself.
pub(crate) async fn raw_client() -> (aws_sdk_s3::Client, String) {
    let env = garage_s3_config();
    let creds = aws_sdk_s3::config::Credentials::new(
        env.access_key_id.expose(),
        env.secret_access_key.expose(),
        None,
        None,
        "test",
    );
    let conf = aws_sdk_s3::config::Builder::new()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new(env.region.clone()))
        .endpoint_url(env.endpoint_url.clone().unwrap_or_default())
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

/// A freshly signed link to `key` serves exactly `data`.
async fn assert_downloads(store: &S3Store, key: &str, data: &[u8]) {
    let url = store
        .download_url(key, Duration::from_secs(60))
        .await
        .unwrap();
    let body = http().get(url).send().await.unwrap().bytes().await.unwrap();
    assert!(body[..] == data[..], "downloaded bytes differ");
}

async fn wait_until_no_incomplete(store: &dyn ObjectStore, prefix: &str) -> Vec<String> {
    let mut left = Vec::new();
    for _ in 0..50 {
        left = store
            .list_incomplete_uploads(prefix)
            .await
            .expect("list uploads");
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
    // Four full parts and a short last one: a later part is filled in the buffer of an earlier
    // one, once that was uploaded, so stale bytes in a reused buffer would show.
    let data = random_bytes(4 * 10 * MIB + 5 * MIB + 12_345, 1);

    let mut upload = store
        .begin_upload(&key, &meta("export-1.json"))
        .await
        .unwrap();
    write_random_chunks(upload.as_mut(), &data[..12 * MIB], 2).await;
    // A full part is out: this is a real multipart upload, still invisible as an object.
    assert_eq!(
        store.list_incomplete_uploads(&prefix).await.unwrap(),
        std::slice::from_ref(&key)
    );
    assert_eq!(store.size(&key).await.unwrap(), None);
    write_random_chunks(upload.as_mut(), &data[12 * MIB..], 3).await;
    assert_eq!(upload.complete().await.unwrap(), data.len() as u64);

    assert!(
        store
            .list_incomplete_uploads(&prefix)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.size(&key).await.unwrap(), Some(data.len() as u64));
    let url = store
        .download_url(&key, Duration::from_secs(60))
        .await
        .unwrap();
    let response = http().get(url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let disposition = response.headers()["content-disposition"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        disposition.starts_with("attachment; filename="),
        "{disposition}"
    );
    assert!(disposition.contains(".json"), "{disposition}");
    let body = response.bytes().await.unwrap();
    assert!(body[..] == data[..], "downloaded bytes differ");
    store.delete(&key).await.unwrap();
}

#[tokio::test]
async fn an_object_under_a_part_is_signed_with_the_hash_its_writer_gives_and_s3_checks_it() {
    use sha2::{Digest, Sha256};
    let store = garage().await;
    let prefix = prefix();
    let data = random_bytes(MIB + 7, 21);
    let put = |key: String, sha256: String| {
        let (store, data) = (&store, &data);
        async move {
            let mut upload = store
                .begin_upload(&key, &meta("export.json"))
                .await
                .unwrap();
            write_random_chunks(upload.as_mut(), data, 22).await;
            upload.body_sha256(&sha256);
            upload.complete().await
        }
    };

    // The archive's digest: the signer signs it instead of hashing the body again.
    let key = object_key(&prefix, ExportId::new(), "json");
    let size = put(key.clone(), format!("{:x}", Sha256::digest(&data)))
        .await
        .expect("the body's own hash");
    assert_eq!(size, data.len() as u64);
    assert_downloads(&store, &key, &data).await;
    store.delete(&key).await.unwrap();

    // A hash that is not the body's: S3 refuses the request, so the one given is the one signed.
    let key = object_key(&prefix, ExportId::new(), "json");
    let refused = put(key.clone(), format!("{:x}", Sha256::digest(b"other bytes"))).await;
    assert!(
        refused.is_err(),
        "S3 took a body whose hash it was not given"
    );
    assert_eq!(store.size(&key).await.unwrap(), None);
}

#[tokio::test]
async fn multipart_upload_with_checksums_when_supported() {
    let mut config = garage_s3_config();
    config.checksum = "when_supported".into();
    let store = S3Store::from_config(&config).await.unwrap();
    let key = object_key(&prefix(), ExportId::new(), "ndjson");
    let data = random_bytes(11 * MIB + 1, 12);
    assert_eq!(upload(&store, &key, &data, 13).await, data.len() as u64);
    assert_downloads(&store, &key, &data).await;
    store.delete(&key).await.unwrap();
}

/// The archive's SHA-256 is kept with the object: as user metadata always, and as S3's own
/// full-object checksum where the store computes checksums (`checksum = when_supported`).
#[tokio::test]
async fn the_sha256_is_recorded_with_the_object() {
    use base64::Engine as _;
    use sha2::{Digest, Sha256};
    for checksum in ["when_required", "when_supported"] {
        let mut config = garage_s3_config();
        config.checksum = checksum.into();
        let store = S3Store::from_config(&config).await.unwrap();
        let key = object_key(&prefix(), ExportId::new(), "json");
        let data = random_bytes(6 * MIB + 7, 21);
        upload(&store, &key, &data, 22).await;
        let digest = Sha256::digest(&data);
        store
            .record_sha256(
                &key,
                &meta("export.json"),
                data.len() as u64,
                &hex::encode(digest),
            )
            .await
            .expect("record the digest");

        let (client, bucket) = raw_client().await;
        let head = client
            .head_object()
            .bucket(&bucket)
            .key(&key)
            .checksum_mode(aws_sdk_s3::types::ChecksumMode::Enabled)
            .send()
            .await
            .unwrap();
        let metadata = head.metadata().cloned().unwrap_or_default();
        assert_eq!(
            metadata.get("sha256"),
            Some(&hex::encode(digest)),
            "{checksum}"
        );
        assert_eq!(head.content_type(), Some("application/json"));
        assert_eq!(head.content_length(), Some(data.len() as i64));
        if checksum == "when_supported" {
            assert_eq!(
                head.checksum_sha256(),
                Some(
                    base64::engine::general_purpose::STANDARD
                        .encode(digest)
                        .as_str()
                ),
                "S3's own full-object checksum"
            );
        }
        // The copy kept the bytes.
        assert_downloads(&store, &key, &data).await;
        store.delete(&key).await.unwrap();
    }
}

/// Temporary credentials (here from a `credential_process` in an AWS config file, as STS, IRSA
/// and SSO profiles hand them out): a download link is cut to what they have left, and the link
/// signed with them works.
#[tokio::test]
async fn a_link_never_outlives_temporary_credentials() {
    let env = garage_s3_config();
    let dir = std::env::temp_dir().join(format!("logexport-creds-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let expiration = (chrono::Utc::now() + chrono::Duration::seconds(600))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let process = dir.join("credentials.sh");
    std::fs::write(
        &process,
        format!(
            "#!/bin/sh\necho '{}'\n",
            serde_json::json!({
                "Version": 1,
                "AccessKeyId": env.access_key_id.expose(),
                "SecretAccessKey": env.secret_access_key.expose(),
                "Expiration": expiration,
            })
        ),
    )
    .unwrap();
    let aws_config = dir.join("config");
    std::fs::write(
        &aws_config,
        format!(
            "[default]\nregion = {}\ncredential_process = /bin/sh {}\n",
            env.region,
            process.display()
        ),
    )
    .unwrap();
    // nextest runs every test in a process of its own, so this environment is this test's.
    unsafe {
        for name in [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_SESSION_TOKEN",
            "AWS_PROFILE",
        ] {
            std::env::remove_var(name);
        }
        std::env::set_var("AWS_CONFIG_FILE", &aws_config);
        std::env::set_var("AWS_SHARED_CREDENTIALS_FILE", dir.join("none"));
        std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
    }
    let mut config = env.clone();
    config.access_key_id = logexport::config::Secret::new(String::new());
    config.secret_access_key = logexport::config::Secret::new(String::new());
    let store = S3Store::from_config(&config).await.unwrap();
    let key = object_key(&prefix(), ExportId::new(), "json");
    upload(&store, &key, b"{\"logs\": []}", 31).await;

    let (url, lifetime) = store
        .download_link(&key, Duration::from_secs(3600))
        .await
        .unwrap();
    assert!(
        lifetime <= Duration::from_secs(600) && lifetime >= Duration::from_secs(580),
        "the link lasts what the credentials have left, not an hour: {lifetime:?}"
    );
    let expires: u64 = url
        .query_pairs()
        .find(|(k, _)| k == "X-Amz-Expires")
        .map(|(_, v)| v.parse().unwrap())
        .expect("X-Amz-Expires");
    assert_eq!(expires, lifetime.as_secs());
    let response = http().get(url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(&response.bytes().await.unwrap()[..], b"{\"logs\": []}");

    // Long-lived keys from the configuration: the full hour.
    let fixed = garage().await;
    let (_, lifetime) = fixed
        .download_link(&key, Duration::from_secs(3600))
        .await
        .unwrap();
    assert_eq!(lifetime, Duration::from_secs(3600));
    store.delete(&key).await.unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn small_archive_is_one_object_with_its_content_type() {
    let store = garage().await;
    let key = object_key(&prefix(), ExportId::new(), "json");
    let data = br#"{"logs": [{"terminator": true}]}"#;
    assert_eq!(upload(&store, &key, data, 4).await, data.len() as u64);
    let url = store
        .download_url(&key, Duration::from_secs(60))
        .await
        .unwrap();
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
    let url = store
        .download_url(&key, Duration::from_secs(2))
        .await
        .unwrap();

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
    // AWS answers 403 "Request has expired", Garage 400 "Date is too old".
    let status = expired.status();
    let body = expired.text().await.unwrap();
    assert!(
        matches!(status.as_u16(), 400 | 403),
        "expired link answered {status}"
    );
    let body = body.to_lowercase();
    assert!(
        body.contains("expired") || body.contains("too old"),
        "{body}"
    );
    store.delete(&key).await.unwrap();
}

#[tokio::test]
async fn aborted_upload_leaves_neither_parts_nor_object() {
    let store = garage().await;
    let prefix = prefix();
    let key = object_key(&prefix, ExportId::new(), "json");
    let mut upload = store.begin_upload(&key, &meta("x.json")).await.unwrap();
    upload
        .write(Bytes::from(random_bytes(store.part_size() + MIB, 6)))
        .await
        .unwrap();
    assert_eq!(
        store.list_incomplete_uploads(&prefix).await.unwrap(),
        std::slice::from_ref(&key)
    );

    upload.abort().await.unwrap();
    assert!(
        store
            .list_incomplete_uploads(&prefix)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(store.size(&key).await.unwrap(), None);
}

#[tokio::test]
async fn dropped_upload_is_aborted_in_the_background() {
    let store = garage().await;
    let prefix = prefix();
    let key = object_key(&prefix, ExportId::new(), "json");
    let mut upload = store.begin_upload(&key, &meta("x.json")).await.unwrap();
    upload
        .write(Bytes::from(random_bytes(11 * MIB, 7)))
        .await
        .unwrap();
    assert_eq!(
        store.list_incomplete_uploads(&prefix).await.unwrap().len(),
        1
    );

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
    assert_eq!(
        store.abort_stale_uploads(&mine, hour).await.unwrap(),
        0,
        "too young"
    );
    assert_eq!(store.list_incomplete_uploads(&mine).await.unwrap().len(), 2);

    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        store
            .abort_stale_uploads(&mine, Duration::ZERO)
            .await
            .unwrap(),
        2
    );
    assert!(
        store
            .list_incomplete_uploads(&mine)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store.list_incomplete_uploads(&other).await.unwrap().len(),
        1,
        "other prefix"
    );
    assert_eq!(
        store
            .abort_stale_uploads(&other, Duration::ZERO)
            .await
            .unwrap(),
        1
    );
}

#[tokio::test]
async fn delete_removes_the_object_and_its_link() {
    let store = garage().await;
    let key = object_key(&prefix(), ExportId::new(), "csv");
    upload(&store, &key, b"datetime,kind\r\n", 8).await;
    let url = store
        .download_url(&key, Duration::from_secs(60))
        .await
        .unwrap();
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
