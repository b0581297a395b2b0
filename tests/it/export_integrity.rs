//! Integrity: every archive's SHA-256 in the status, a signed manifest beside it, the signing
//! keys served as a JWK set, and `logexport verify` catching every kind of tampering.

use std::path::{Path, PathBuf};
use std::process::Command;

use logexport::archive::ManifestKey;
use logexport::config::Secret;
use logexport::storage::{S3Store, manifest_key};
use logexport::worker::Housekeeper;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::export::{ExportEnv, JANUARY, dataset, download};
use crate::helpers::garage_s3_config;

/// Runs `logexport verify`; returns whether it passed and what it printed.
fn verify(archive: &Path, manifest: &Path, key: &Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_logexport"))
        .arg("verify")
        .arg(archive)
        .arg("--manifest")
        .arg(manifest)
        .arg("--public-key")
        .arg(key)
        .output()
        .expect("run logexport verify");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

struct Exported {
    archive: PathBuf,
    manifest: PathBuf,
    status: Value,
}

async fn export(env: &ExportEnv, dir: &Path, body: Value) -> Exported {
    let id = env
        .request(
            &format!("/api/v1/organization/acme/exportlogs?{JANUARY}"),
            body,
        )
        .await;
    let status = env.finished(&id).await;
    assert_eq!(status["state"], "succeeded", "{status}");
    let bytes = download(status["exported_data_url"].as_str().unwrap())
        .await
        .bytes()
        .await
        .unwrap();
    assert_eq!(
        hex::encode(Sha256::digest(&bytes)),
        status["sha256"].as_str().unwrap(),
        "the status's sha256 is the stored bytes'"
    );
    let manifest: Value = env
        .app
        .client
        .get(status["manifest_url"].as_str().unwrap())
        .bearer_auth(&env.admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(manifest["sha256"], status["sha256"]);
    // S3 keeps the digest with the object too (`aws s3api head-object` shows it).
    let key = crate::helpers::object_key(&env.app.pool, &id).await;
    let store = S3Store::from_config(&garage_s3_config()).await.unwrap();
    assert_eq!(
        store.recorded_sha256(&key).await.unwrap().as_deref(),
        status["sha256"].as_str()
    );
    assert_eq!(manifest["logs"], status["logs_exported"]);
    let archive = dir.join(format!("{id}.archive"));
    let manifest_path = dir.join(format!("{id}.manifest.json"));
    std::fs::write(&archive, &bytes).unwrap();
    std::fs::write(&manifest_path, manifest.to_string()).unwrap();
    Exported {
        archive,
        manifest: manifest_path,
        status,
    }
}

#[tokio::test]
async fn signed_manifests_verify_and_every_tampering_is_refused() {
    let key = ManifestKey::generate();
    let old = ManifestKey::generate();
    let secret = key.secret();
    let old_public = old.public().jwk()["x"].as_str().unwrap().to_owned();
    let env = ExportEnv::start(&dataset(), |c| {
        c.export.manifest_signing_key = Secret::new(secret);
        c.export.manifest_previous_public_keys = vec![old_public];
    })
    .await;
    let dir = std::env::temp_dir().join(format!("logexport-verify-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();

    // The JWK set: the current key first, the previous one still there for old manifests.
    let keys: Value = reqwest::get(env.app.url("/api/v1/exportlogs/signing-keys"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kids: Vec<&str> = keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids, [key.key_id.as_str(), old.key_id.as_str()]);
    assert_eq!(keys["keys"][0]["crv"], "Ed25519");
    let key_file = dir.join("keys.json");
    std::fs::write(&key_file, keys.to_string()).unwrap();

    let gz = export(
        &env,
        &dir,
        json!({"callback_email": "a@example.com", "compression": "gzip"}),
    )
    .await;
    let (ok, out) = verify(&gz.archive, &gz.manifest, &key_file);
    assert!(ok, "an untouched archive verifies: {out}");
    assert!(out.contains("OK:"), "{out}");
    let zst = export(
        &env,
        &dir,
        json!({"callback_email": "a@example.com", "format": "csv", "compression": "zstd"}),
    )
    .await;
    let (ok, out) = verify(&zst.archive, &zst.manifest, &key_file);
    assert!(ok, "a zstd CSV archive verifies: {out}");

    // A changed byte.
    let mut bytes = std::fs::read(&gz.archive).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    let changed = dir.join("changed.json.gz");
    std::fs::write(&changed, &bytes).unwrap();
    let (ok, out) = verify(&changed, &gz.manifest, &key_file);
    assert!(!ok && out.contains("MISMATCH digest"), "{out}");

    // A truncated gzip.
    let bytes = std::fs::read(&gz.archive).unwrap();
    let truncated = dir.join("truncated.json.gz");
    std::fs::write(&truncated, &bytes[..bytes.len() - 100]).unwrap();
    let (ok, out) = verify(&truncated, &gz.manifest, &key_file);
    assert!(
        !ok && out.contains("MISMATCH rows") && out.contains("MISMATCH size"),
        "{out}"
    );

    // A dropped row (NDJSON: a line removed).
    let nd = export(
        &env,
        &dir,
        json!({"callback_email": "a@example.com", "format": "ndjson"}),
    )
    .await;
    let text = std::fs::read_to_string(&nd.archive).unwrap();
    let dropped_text: String = text.lines().skip(1).map(|l| format!("{l}\n")).collect();
    let dropped = dir.join("dropped.ndjson");
    std::fs::write(&dropped, dropped_text).unwrap();
    let (ok, out) = verify(&dropped, &nd.manifest, &key_file);
    assert!(!ok && out.contains("MISMATCH rows"), "{out}");

    // A swapped manifest (another export's, validly signed).
    let (ok, out) = verify(&nd.archive, &gz.manifest, &key_file);
    assert!(!ok && out.contains("MISMATCH digest"), "{out}");

    // A manifest whose contents were edited, or signed by a key nobody trusts.
    let mut edited: Value =
        serde_json::from_str(&std::fs::read_to_string(&nd.manifest).unwrap()).unwrap();
    edited["namespace"] = json!("other");
    let edited_path = dir.join("edited.manifest.json");
    std::fs::write(&edited_path, edited.to_string()).unwrap();
    let (ok, out) = verify(&nd.archive, &edited_path, &key_file);
    assert!(!ok && out.contains("MISMATCH signature"), "{out}");
    let stranger = dir.join("stranger.jwk");
    std::fs::write(
        &stranger,
        ManifestKey::generate().public().jwk().to_string(),
    )
    .unwrap();
    let (ok, out) = verify(&nd.archive, &nd.manifest, &stranger);
    assert!(!ok && out.contains("not among the trusted keys"), "{out}");
    assert_eq!(nd.status["compression"], "none");
    // LOGEXPORT_KEEP_VERIFY_DIR keeps the files, to try the README's openssl and Python recipes.
    if std::env::var_os("LOGEXPORT_KEEP_VERIFY_DIR").is_some() {
        eprintln!("verify files kept in {}", dir.display());
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
}

#[tokio::test]
async fn without_a_key_manifests_say_they_are_unsigned() {
    let env = ExportEnv::start(&dataset(), |_| {}).await;
    let dir = std::env::temp_dir().join(format!("logexport-verify-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let csv = export(
        &env,
        &dir,
        json!({"callback_email": "a@example.com", "format": "csv"}),
    )
    .await;
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(&csv.manifest).unwrap()).unwrap();
    assert_eq!(manifest["signed"], false);
    assert_eq!(manifest["signature"], Value::Null);
    let keys: Value = reqwest::get(env.app.url("/api/v1/exportlogs/signing-keys"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(keys, json!({"keys": []}));
    let any_key = dir.join("any.jwk");
    std::fs::write(&any_key, ManifestKey::generate().public().jwk().to_string()).unwrap();
    let (ok, out) = verify(&csv.archive, &csv.manifest, &any_key);
    assert!(
        !ok && out.contains("MISMATCH signature: the manifest is not signed"),
        "{out}"
    );
    // Size, digest and rows still agree.
    assert!(
        !out.contains("MISMATCH digest") && !out.contains("MISMATCH rows"),
        "{out}"
    );

    // The manifest goes with its archive when retention deletes it.
    let id = csv.status["export_id"].as_str().unwrap();
    let key: String = sqlx::query_scalar(
        "UPDATE export_jobs SET finished_at = now() - interval '2 days' WHERE id = $1::uuid
         RETURNING object_key",
    )
    .bind(id)
    .fetch_one(&env.app.pool)
    .await
    .unwrap();
    assert!(env.store.size(&manifest_key(&key)).await.unwrap().is_some());
    Housekeeper::new(
        env.app.pool.clone(),
        (*env.app.config).clone(),
        Some(env.store.clone()),
    )
    .run_once()
    .await;
    assert_eq!(env.store.size(&key).await.unwrap(), None);
    assert_eq!(env.store.size(&manifest_key(&key)).await.unwrap(), None);
    let _ = std::fs::remove_dir_all(&dir);
}
