//! The signed manifest beside each archive (`<key>.manifest.json`): what was exported, how many
//! logs, the archive's size and SHA-256, and an Ed25519 signature over a canonical form of all of
//! it, so a recipient can show offline that the archive is complete and unaltered.
//!
//! Canonical form: the manifest without `signature`, as JSON with object keys sorted by their
//! UTF-16 code units and no insignificant whitespace (RFC 8785 for the values a manifest holds:
//! strings, integers, booleans, null). Key ids are RFC 7638 JWK thumbprints.
//!
//! A chained manifest (version 2) also says which link of its namespace's chain it is and the
//! SHA-256 of the previous link's canonical bytes, and may carry an RFC 3161 time-stamp token
//! over its canonical bytes. Neither `signature` nor `timestamp_token` is part of those bytes.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The manifest's fields.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Manifest {
    pub version: u32,
    pub export_id: String,
    pub namespace: String,
    pub repository: Option<String>,
    pub filters: ManifestFilters,
    pub range: ManifestRange,
    pub format: String,
    pub compression: String,
    pub logs: u64,
    pub bytes: u64,
    pub sha256: String,
    pub created_at: String,
    /// Whether `signature` holds an Ed25519 signature (false: no signing key was configured).
    pub signed: bool,
    pub key_id: Option<String>,
    pub algorithm: Option<String>,
    /// base64url (no padding) of the 64-byte signature over the canonical form.
    pub signature: Option<String>,
    /// The export's link in its namespace's chain; absent in manifests made before chains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<ManifestChain>,
    /// The schedule and period a scheduled export covers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<ManifestSchedule>,
    /// base64 DER of an RFC 3161 TimeStampToken over the SHA-256 of the canonical form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp_token: Option<String>,
}

/// One link of a namespace's chain of manifests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ManifestChain {
    pub namespace: String,
    /// 1, 2, 3, … in the order the namespace's exports completed, without gaps.
    pub sequence: u64,
    /// Lowercase hex SHA-256 of the previous link's canonical manifest bytes; null for link 1.
    pub previous_manifest_sha256: Option<String>,
}

/// The schedule that made an export, and the period it covers (RFC 3339, `[start, end)`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ManifestSchedule {
    pub id: String,
    pub period: String,
    pub period_start: String,
    pub period_end: String,
}

/// The export's filter, as requested.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ManifestFilters {
    pub performer: Option<String>,
    pub kind: Vec<String>,
}

/// The exported range: `[start, end)`, RFC 3339, and the requested time zone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ManifestRange {
    pub start: String,
    pub end: String,
    pub timezone: String,
}

/// Why a manifest or a key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("the manifest is not signed (no export.manifest_signing_key was configured)")]
    Unsigned,
    #[error("the manifest was signed by key {0}, which is not among the trusted keys")]
    UnknownKey(String),
    #[error("the manifest's signature does not match its contents (altered or swapped)")]
    BadSignature,
    #[error("{0}")]
    BadKey(String),
    #[error(
        "the manifest says it was signed at {signed_at}, outside the signing period of key {key_id} ({window})"
    )]
    OutsideKeyWindow {
        key_id: String,
        signed_at: String,
        window: String,
    },
}

impl Manifest {
    /// The bytes the signature and the time-stamp cover.
    pub fn canonical(&self) -> Vec<u8> {
        let mut value = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Value::Object(map) = &mut value {
            map.remove("signature");
            map.remove("timestamp_token");
        }
        canonical_json(&value)
    }

    /// Lowercase hex SHA-256 of [`Manifest::canonical`]: what the next link names.
    pub fn canonical_sha256(&self) -> String {
        hex::encode(Sha256::digest(self.canonical()))
    }

    /// Signs with `key` (or marks the manifest unsigned without one).
    pub fn sign(mut self, key: Option<&ManifestKey>) -> Self {
        self.signature = None;
        match key {
            Some(key) => {
                self.signed = true;
                self.key_id = Some(key.key_id.clone());
                self.algorithm = Some("Ed25519".into());
                let signature = key.signing.sign(&self.canonical());
                self.signature = Some(URL_SAFE_NO_PAD.encode(signature.to_bytes()));
            }
            None => {
                self.signed = false;
                self.key_id = None;
                self.algorithm = None;
            }
        }
        self
    }

    /// Checks the signature with whichever trusted key its `key_id` names.
    pub fn verify(&self, trusted: &[PublicKey]) -> Result<(), ManifestError> {
        let (true, Some(kid), Some(signature)) = (self.signed, &self.key_id, &self.signature)
        else {
            return Err(ManifestError::Unsigned);
        };
        verify_signed(trusted, kid, signature, &self.canonical(), &self.created_at)
    }
}

/// Checks a base64url Ed25519 `signature` by key `kid` over `canonical`, made at `signed_at`
/// (RFC 3339), against the trusted keys and their signing periods.
pub(crate) fn verify_signed(
    trusted: &[PublicKey],
    kid: &str,
    signature: &str,
    canonical: &[u8],
    signed_at: &str,
) -> Result<(), ManifestError> {
    let key = trusted
        .iter()
        .find(|k| k.key_id == kid)
        .ok_or_else(|| ManifestError::UnknownKey(kid.to_owned()))?;
    let bytes = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| ManifestError::BadSignature)?;
    let signature = Signature::from_slice(&bytes).map_err(|_| ManifestError::BadSignature)?;
    key.key
        .verify(canonical, &signature)
        .map_err(|_| ManifestError::BadSignature)?;
    if let Some(window) = &key.window {
        let at = DateTime::parse_from_rfc3339(signed_at).map(|t| t.with_timezone(&Utc));
        if !at.as_ref().is_ok_and(|at| window.contains(*at)) {
            return Err(ManifestError::OutsideKeyWindow {
                key_id: kid.to_owned(),
                signed_at: signed_at.to_owned(),
                window: window.to_string(),
            });
        }
    }
    Ok(())
}

/// The period a key signed in: from its first signature (`None`: since before the service kept
/// a key history) until its successor's first (`None` while it is the current key). Bounds are
/// whole seconds, inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyWindow {
    pub from: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

impl KeyWindow {
    /// Whether a signature made at `at` falls in the window.
    pub fn contains(&self, at: DateTime<Utc>) -> bool {
        self.from.is_none_or(|from| at >= from) && self.until.is_none_or(|until| at <= until)
    }
}

impl std::fmt::Display for KeyWindow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
        let from = self
            .from
            .map_or_else(|| "the start of the key history".to_owned(), secs);
        match self.until {
            Some(until) => write!(f, "{from} to {}", secs(until)),
            None => write!(f, "since {from}"),
        }
    }
}

/// The canonical bytes of a JSON value: sorted keys, no whitespace.
pub fn canonical_json(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    write_canonical(value, &mut out);
    out
}

/// Writes `value` canonically: sorted keys, no whitespace.
fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_by(|a, b| a.encode_utf16().cmp(b.encode_utf16()));
            out.push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(&Value::String(k.clone()), out);
                out.push(b':');
                write_canonical(&map[k], out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        scalar => out.extend_from_slice(scalar.to_string().as_bytes()),
    }
}

/// A signing key and its id.
pub struct ManifestKey {
    signing: SigningKey,
    pub key_id: String,
}

impl std::fmt::Debug for ManifestKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ManifestKey({}, <redacted>)", self.key_id)
    }
}

impl ManifestKey {
    /// A new random key.
    pub fn generate() -> Self {
        Self::from_signing(SigningKey::generate(&mut rand::rngs::OsRng))
    }

    /// The key from `export.manifest_signing_key`: base64url (or standard base64) of its 32-byte
    /// seed.
    pub fn parse(secret: &str) -> Result<Self, ManifestError> {
        let seed: [u8; 32] = decode_32(secret).ok_or_else(|| {
            ManifestError::BadKey(
                "export.manifest_signing_key must be the base64url of a 32-byte Ed25519 seed \
                 (make one with `logexport keygen`)"
                    .into(),
            )
        })?;
        Ok(Self::from_signing(SigningKey::from_bytes(&seed)))
    }

    fn from_signing(signing: SigningKey) -> Self {
        let key_id = key_id(&signing.verifying_key());
        Self { signing, key_id }
    }

    /// The Ed25519 key itself, for what else the service signs (the chain head).
    pub(crate) fn signing_key(&self) -> &SigningKey {
        &self.signing
    }

    /// The seed, base64url: the value for `export.manifest_signing_key`.
    pub fn secret(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.signing.to_bytes())
    }

    /// The public half.
    pub fn public(&self) -> PublicKey {
        PublicKey {
            key: self.signing.verifying_key(),
            key_id: self.key_id.clone(),
            window: None,
        }
    }
}

/// A trusted public key and its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    key: VerifyingKey,
    pub key_id: String,
    /// When the key signed, if known (the service's key history); `None`: any time.
    pub window: Option<KeyWindow>,
}

impl PublicKey {
    /// A public key as base64url of its 32 bytes, or as a JWK (`{"kty":"OKP","crv":"Ed25519","x":…}`,
    /// with its signing period in `signing_from` / `signing_until` when the service knows it).
    pub fn parse(text: &str) -> Result<Self, ManifestError> {
        let text = text.trim();
        let mut window = None;
        let x = match serde_json::from_str::<Value>(text) {
            Ok(jwk) if jwk["kty"] == "OKP" && jwk["crv"] == "Ed25519" => {
                let time = |field: &str| -> Result<Option<DateTime<Utc>>, ManifestError> {
                    match jwk[field].as_str() {
                        None => Ok(None),
                        Some(t) => DateTime::parse_from_rfc3339(t)
                            .map(|t| Some(t.with_timezone(&Utc)))
                            .map_err(|_| {
                                ManifestError::BadKey(format!(
                                    "{field} must be RFC 3339, not {t:?}"
                                ))
                            }),
                    }
                };
                // A key the history knows has both members (either may be null).
                if jwk.get("signing_from").is_some() || jwk.get("signing_until").is_some() {
                    window = Some(KeyWindow {
                        from: time("signing_from")?,
                        until: time("signing_until")?,
                    });
                }
                jwk["x"].as_str().unwrap_or_default().to_owned()
            }
            Ok(_) => {
                return Err(ManifestError::BadKey(
                    "a JWK for manifests must be kty OKP, crv Ed25519".into(),
                ));
            }
            Err(_) => text.to_owned(),
        };
        let bytes = decode_32(&x).ok_or_else(|| {
            ManifestError::BadKey("an Ed25519 public key is 32 bytes, base64url".into())
        })?;
        let key = VerifyingKey::from_bytes(&bytes)
            .map_err(|_| ManifestError::BadKey("not an Ed25519 public key".into()))?;
        Ok(Self {
            key_id: key_id(&key),
            key,
            window,
        })
    }

    /// The key as a JWK (RFC 8037) with its id, and its signing period when known.
    pub fn jwk(&self) -> Value {
        let mut jwk = json!({
            "kty": "OKP",
            "crv": "Ed25519",
            "x": URL_SAFE_NO_PAD.encode(self.key.to_bytes()),
            "kid": self.key_id,
            "use": "sig",
            "alg": "EdDSA",
        });
        if let Some(window) = &self.window {
            let secs = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            jwk["signing_from"] = json!(window.from.map(secs));
            jwk["signing_until"] = json!(window.until.map(secs));
        }
        jwk
    }

    /// The key with `window` as its signing period.
    pub fn with_window(mut self, window: Option<KeyWindow>) -> Self {
        self.window = window;
        self
    }

    /// The raw 32 bytes, base64url: the JWK's `x`.
    pub fn x(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.key.to_bytes())
    }

    /// The keys of a JWK set (`{"keys": [...]}`) that are Ed25519 keys.
    pub fn from_jwk_set(set: &Value) -> Vec<Self> {
        set["keys"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|k| Self::parse(&k.to_string()).ok())
            .collect()
    }
}

/// RFC 7638 thumbprint: SHA-256 of the canonical required members, base64url.
fn key_id(key: &VerifyingKey) -> String {
    let x = URL_SAFE_NO_PAD.encode(key.to_bytes());
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    URL_SAFE_NO_PAD.encode(Sha256::digest(canonical.as_bytes()))
}

fn decode_32(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    let bytes = URL_SAFE_NO_PAD
        .decode(text.trim_end_matches('='))
        .or_else(|_| base64::engine::general_purpose::STANDARD.decode(text))
        .ok()?;
    bytes.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest() -> Manifest {
        Manifest {
            version: 1,
            export_id: "6a0b9ea9-444c-4a19-9db8-113201c38cd4".into(),
            namespace: "acme".into(),
            repository: None,
            filters: ManifestFilters {
                performer: Some("alice".into()),
                kind: vec!["push_repo".into()],
            },
            range: ManifestRange {
                start: "2024-01-01T00:00:00Z".into(),
                end: "2024-02-01T00:00:00Z".into(),
                timezone: "UTC".into(),
            },
            format: "json".into(),
            compression: "gzip".into(),
            logs: 42,
            bytes: 4096,
            sha256: "ab".repeat(32),
            created_at: "2024-02-01T00:05:00Z".into(),
            signed: false,
            key_id: None,
            algorithm: None,
            signature: None,
            chain: None,
            schedule: None,
            timestamp_token: None,
        }
    }

    #[test]
    fn chain_and_timestamp_fields_only_appear_when_set() {
        let plain = String::from_utf8(manifest().canonical()).unwrap();
        assert!(!plain.contains("chain") && !plain.contains("schedule"));
        let mut chained = manifest();
        chained.chain = Some(ManifestChain {
            namespace: "acme".into(),
            sequence: 1,
            previous_manifest_sha256: None,
        });
        chained.timestamp_token = Some("AAAA".into());
        let text = String::from_utf8(chained.canonical()).unwrap();
        assert!(text.contains(
            r#""chain":{"namespace":"acme","previous_manifest_sha256":null,"sequence":1}"#
        ));
        assert!(!text.contains("timestamp_token"));
    }

    #[test]
    fn a_signature_outside_the_key_window_is_refused() {
        let key = ManifestKey::generate();
        let signed = manifest().sign(Some(&key));
        let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
        let inside = key.public().with_window(Some(KeyWindow {
            from: Some(at("2024-02-01T00:00:00Z")),
            until: Some(at("2024-02-01T00:05:00Z")),
        }));
        assert_eq!(signed.verify(std::slice::from_ref(&inside)), Ok(()));
        let jwk = inside.jwk();
        assert_eq!(jwk["signing_until"], "2024-02-01T00:05:00Z");
        assert_eq!(PublicKey::parse(&jwk.to_string()).unwrap(), inside);
        let rotated = key.public().with_window(Some(KeyWindow {
            from: None,
            until: Some(at("2024-02-01T00:04:59Z")),
        }));
        assert!(matches!(
            signed.verify(&[rotated]),
            Err(ManifestError::OutsideKeyWindow { .. })
        ));
    }

    #[test]
    fn canonical_form_sorts_keys_and_omits_the_signature() {
        let text = String::from_utf8(manifest().canonical()).unwrap();
        assert!(text.starts_with(r#"{"algorithm":null,"bytes":4096,"compression":"gzip","#));
        assert!(!text.contains("signature") && !text.contains(' '));
    }

    #[test]
    fn signed_manifests_verify_and_any_change_is_caught() {
        let key = ManifestKey::generate();
        let signed = manifest().sign(Some(&key));
        let trusted = [key.public()];
        assert_eq!(signed.verify(&trusted), Ok(()));
        let mut changed = signed.clone();
        changed.logs += 1;
        assert_eq!(changed.verify(&trusted), Err(ManifestError::BadSignature));
        let other = ManifestKey::generate();
        assert!(matches!(
            signed.verify(&[other.public()]),
            Err(ManifestError::UnknownKey(_))
        ));
        assert_eq!(
            manifest().sign(None).verify(&trusted),
            Err(ManifestError::Unsigned)
        );
    }

    #[test]
    fn keys_round_trip_through_their_text_forms() {
        let key = ManifestKey::generate();
        let again = ManifestKey::parse(&key.secret()).unwrap();
        assert_eq!(again.key_id, key.key_id);
        let jwk = key.public().jwk();
        assert_eq!(PublicKey::parse(&jwk.to_string()).unwrap(), key.public());
        let x = jwk["x"].as_str().unwrap();
        assert_eq!(PublicKey::parse(x).unwrap().key_id, key.key_id);
        assert_eq!(
            PublicKey::from_jwk_set(&json!({"keys": [jwk, {"kty": "RSA"}]})),
            vec![key.public()]
        );
        assert!(ManifestKey::parse("too-short").is_err());
    }
}
