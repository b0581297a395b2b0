//! `logexport verify-chain DIR`: checks a folder of archives and their manifests as one chain,
//! offline: every archive against its manifest, every signature against the key history, every
//! time-stamp against the TSA's CA, the sequence without gaps or duplicates, each link's
//! `previous_manifest_sha256`, and the last link against the signed head when one is given.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use x509_cert::Certificate;

use super::chain::ChainHead;
use super::manifest::{Manifest, ManifestError, PublicKey};
use super::timestamp;
use super::verify::{count_logs, digest_of};

/// The first thing wrong with a chain, as the one line the command ends with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Break {
    #[error("missing sequence {0}")]
    Missing(u64),
    #[error("duplicate sequence {0}: {1} and {2}")]
    Duplicate(u64, String, String),
    #[error("manifest {0} altered: {1}")]
    ManifestAltered(u64, String),
    #[error("manifest {0} not trusted: {1}")]
    ManifestUntrusted(u64, String),
    #[error("archive {0} altered: {1}")]
    ArchiveAltered(u64, String),
    #[error("link {0} not chained to {1}")]
    NotChained(u64, u64),
    #[error("time-stamp invalid on link {0}: {1}")]
    TimestampInvalid(u64, String),
    #[error("head says {0} but the folder ends at {1}")]
    HeadMismatch(u64, u64),
    #[error("head names another manifest for link {0} than the folder holds")]
    HeadOtherManifest(u64),
    #[error("head invalid: {0}")]
    HeadInvalid(String),
    #[error("{0}")]
    Folder(String),
}

/// What to check the folder against.
#[derive(Debug, Default)]
pub struct Trust {
    /// The signing keys, with their signing periods when known.
    pub keys: Vec<PublicKey>,
    /// The TSA's CA certificates; empty: time-stamps are not checked.
    pub tsa_ca: Vec<Certificate>,
    /// The signed head the last link must match.
    pub head: Option<ChainHead>,
}

/// One line per link, and the first break.
#[derive(Debug, Default)]
pub struct Report {
    pub lines: Vec<String>,
    pub first_break: Option<Break>,
}

impl Report {
    fn broke(&mut self, line: String, why: Break) {
        self.lines.push(line);
        self.first_break.get_or_insert(why);
    }
}

/// Verifies the chain in `dir`.
pub fn verify_dir(dir: &Path, trust: &Trust) -> Report {
    let mut report = Report::default();
    let links = match read_links(dir, &mut report) {
        Ok(links) => links,
        Err(why) => {
            report.broke(format!("FOLDER {why}"), why);
            return report;
        }
    };
    let mut previous: Option<(u64, String)> = None;
    let last = links.keys().next_back().copied().unwrap_or(0);
    for sequence in 1..=last {
        let Some((path, manifest)) = links.get(&sequence) else {
            report.broke(
                format!("link {sequence}: MISSING"),
                Break::Missing(sequence),
            );
            previous = None;
            continue;
        };
        match check_link(sequence, path, manifest, previous.as_ref(), trust) {
            Ok(summary) => report.lines.push(format!("link {sequence}: OK {summary}")),
            Err(why) => report.broke(format!("link {sequence}: BROKEN {why}"), why),
        }
        previous = Some((sequence, manifest.canonical_sha256()));
    }
    if let Some(head) = &trust.head {
        match check_head(head, last, previous.as_ref(), &links, trust) {
            Ok(()) => report.lines.push(format!(
                "head: OK sequence {} signed at {} by {}",
                head.sequence,
                head.signed_at,
                head.key_id.as_deref().unwrap_or("?")
            )),
            Err(why) => report.broke(format!("head: BROKEN {why}"), why),
        }
    }
    report
}

/// The folder's chained manifests by sequence.
fn read_links(
    dir: &Path,
    report: &mut Report,
) -> Result<BTreeMap<u64, (PathBuf, Manifest)>, Break> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| Break::Folder(format!("cannot read {}: {e}", dir.display())))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".manifest.json"))
        .collect();
    files.sort();
    let mut links: BTreeMap<u64, (PathBuf, Manifest)> = BTreeMap::new();
    let mut namespace: Option<String> = None;
    for path in files {
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let manifest: Manifest = match std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice(&b).map_err(|e| e.to_string()))
        {
            Ok(m) => m,
            Err(e) => {
                return Err(Break::Folder(format!("{name} is not a manifest: {e}")));
            }
        };
        let Some(chain) = &manifest.chain else {
            report.lines.push(format!(
                "skip {name}: made before chains (check it with `logexport verify`)"
            ));
            continue;
        };
        match &namespace {
            None => namespace = Some(chain.namespace.clone()),
            Some(ns) if *ns != chain.namespace => {
                return Err(Break::Folder(format!(
                    "the folder mixes the chains of {ns} and {}",
                    chain.namespace
                )));
            }
            Some(_) => {}
        }
        if let Some((other, _)) = links.get(&chain.sequence) {
            return Err(Break::Duplicate(
                chain.sequence,
                other
                    .file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
                name,
            ));
        }
        links.insert(chain.sequence, (path, manifest));
    }
    if links.is_empty() {
        return Err(Break::Folder(format!(
            "no chained manifest (*.manifest.json with a chain) in {}",
            dir.display()
        )));
    }
    Ok(links)
}

fn check_link(
    sequence: u64,
    manifest_path: &Path,
    manifest: &Manifest,
    previous: Option<&(u64, String)>,
    trust: &Trust,
) -> Result<String, Break> {
    // The manifest first: when it was changed, nothing it says can be relied on.
    match manifest.verify(&trust.keys) {
        Ok(()) => {}
        Err(ManifestError::BadSignature) => {
            return Err(Break::ManifestAltered(
                sequence,
                "its signature does not match its contents".into(),
            ));
        }
        Err(e) => return Err(Break::ManifestUntrusted(sequence, e.to_string())),
    }
    let archive = archive_path(manifest_path);
    match digest_of(&archive) {
        Ok((bytes, sha256)) => {
            if bytes != manifest.bytes || sha256 != manifest.sha256 {
                return Err(Break::ArchiveAltered(
                    sequence,
                    format!(
                        "{} has {bytes} bytes, SHA-256 {sha256}; the manifest says {} bytes, {}",
                        archive.display(),
                        manifest.bytes,
                        manifest.sha256
                    ),
                ));
            }
        }
        Err(e) => {
            return Err(Break::ArchiveAltered(
                sequence,
                format!("{} cannot be read: {e}", archive.display()),
            ));
        }
    }
    match count_logs(&archive, &manifest.format, &manifest.compression) {
        Ok(logs) if logs == manifest.logs => {}
        Ok(logs) => {
            return Err(Break::ArchiveAltered(
                sequence,
                format!("it holds {logs} logs, the manifest says {}", manifest.logs),
            ));
        }
        Err(e) => return Err(Break::ArchiveAltered(sequence, e.to_string())),
    }
    let named = manifest
        .chain
        .as_ref()
        .and_then(|c| c.previous_manifest_sha256.clone());
    match (sequence, previous, named) {
        (1, _, None) => {}
        (_, Some((_, sha)), Some(named)) if *sha == named => {}
        (_, None, _) if sequence > 1 => {} // the previous link is missing, reported already
        _ => return Err(Break::NotChained(sequence, sequence.saturating_sub(1))),
    }
    let stamped = match (&manifest.timestamp_token, trust.tsa_ca.is_empty()) {
        (_, true) => String::new(),
        (None, false) => {
            return Err(Break::TimestampInvalid(
                sequence,
                "the manifest has none".into(),
            ));
        }
        (Some(token), false) => {
            let der = STANDARD
                .decode(token)
                .map_err(|e| Break::TimestampInvalid(sequence, format!("not base64: {e}")))?;
            let at = timestamp::verify_token(&der, &manifest.canonical(), &trust.tsa_ca)
                .map_err(|e| Break::TimestampInvalid(sequence, e.to_string()))?;
            format!(
                ", time-stamped {}",
                at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            )
        }
    };
    Ok(format!(
        "export {} · {} logs · {} bytes · sha256 {} · signed {} by {}{stamped}",
        manifest.export_id,
        manifest.logs,
        manifest.bytes,
        &manifest.sha256[..manifest.sha256.len().min(16)],
        manifest.created_at,
        manifest.key_id.as_deref().unwrap_or("?"),
    ))
}

fn check_head(
    head: &ChainHead,
    last: u64,
    previous: Option<&(u64, String)>,
    links: &BTreeMap<u64, (PathBuf, Manifest)>,
    trust: &Trust,
) -> Result<(), Break> {
    head.verify(&trust.keys)
        .map_err(|e| Break::HeadInvalid(e.to_string()))?;
    if let Some((_, (_, first))) = links.iter().next()
        && first
            .chain
            .as_ref()
            .is_some_and(|c| c.namespace != head.namespace)
    {
        return Err(Break::HeadInvalid(format!(
            "it is the head of {}, not of this folder's chain",
            head.namespace
        )));
    }
    if head.sequence != last {
        return Err(Break::HeadMismatch(head.sequence, last));
    }
    match previous {
        Some((_, sha)) if head.manifest_sha256.as_deref() == Some(sha.as_str()) => Ok(()),
        _ => Err(Break::HeadOtherManifest(last)),
    }
}

/// `<archive>.manifest.json` → `<archive>`.
fn archive_path(manifest: &Path) -> PathBuf {
    let text = manifest.to_string_lossy();
    PathBuf::from(text.trim_end_matches(".manifest.json"))
}

/// The command line's sources of trust for [`verify_dir`].
#[derive(Debug, Default)]
pub struct Sources<'a> {
    pub public_key: Option<&'a Path>,
    pub keys_url: Option<&'a str>,
    pub head_url: Option<&'a str>,
    pub head_file: Option<&'a Path>,
    /// Bearer token for `head_url`.
    pub token: Option<&'a str>,
    pub tsa_ca: Option<&'a Path>,
}

/// `logexport verify-chain`: prints one line per link; an error naming the first break.
pub async fn command(dir: &Path, sources: &Sources<'_>) -> anyhow::Result<()> {
    use anyhow::Context;
    let keys = match (sources.public_key, sources.keys_url) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the public key {}", path.display()))?;
            match serde_json::from_str::<serde_json::Value>(&text) {
                Ok(set) if set.get("keys").is_some() => PublicKey::from_jwk_set(&set),
                _ => vec![PublicKey::parse(&text)?],
            }
        }
        (None, Some(url)) => PublicKey::from_jwk_set(&fetch_json(url, None).await?),
        (None, None) => {
            anyhow::bail!("give --keys-url or --public-key: signatures must be checked")
        }
    };
    let head = match (sources.head_file, sources.head_url) {
        (Some(path), _) => Some(
            serde_json::from_slice(
                &std::fs::read(path)
                    .with_context(|| format!("cannot read the head {}", path.display()))?,
            )
            .with_context(|| format!("{} is not a chain head", path.display()))?,
        ),
        (None, Some(url)) => Some(
            serde_json::from_value(fetch_json(url, sources.token).await?)
                .with_context(|| format!("{url} did not answer a chain head"))?,
        ),
        (None, None) => None,
    };
    let tsa_ca = match sources.tsa_ca {
        Some(path) => timestamp::load_ca(
            &std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?,
        )
        .with_context(|| format!("--tsa-ca {}", path.display()))?,
        None => Vec::new(),
    };
    let trust = Trust { keys, tsa_ca, head };
    let report = verify_dir(dir, &trust);
    for line in &report.lines {
        println!("{line}");
    }
    match report.first_break {
        None => {
            println!("chain OK");
            Ok(())
        }
        Some(why) => anyhow::bail!("chain broken: {why}"),
    }
}

async fn fetch_json(url: &str, token: Option<&str>) -> anyhow::Result<serde_json::Value> {
    use anyhow::Context;
    let mut request = reqwest::Client::new().get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .with_context(|| format!("cannot fetch {url}"))?
        .json()
        .await
        .with_context(|| format!("{url} did not answer JSON"))
}
