//! The signed head of a namespace's chain of manifests: which link is the last one, signed
//! with the manifest key over the same canonical form as manifests, so a deleted last link is
//! detectable too.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::Signer;
use serde::{Deserialize, Serialize};

use super::manifest::{ManifestError, ManifestKey, PublicKey, canonical_json, verify_signed};

/// `GET /api/v1/exportlogs/chain?namespace=NS`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChainHead {
    pub namespace: String,
    /// The last link's number; 0 while the namespace has no chained export.
    pub sequence: u64,
    /// Lowercase hex SHA-256 of the last link's canonical manifest bytes; null for an empty chain.
    pub manifest_sha256: Option<String>,
    /// When the service signed this head (RFC 3339, whole seconds).
    pub signed_at: String,
    /// null when the service has no signing key.
    pub key_id: Option<String>,
    /// base64url (no padding) Ed25519 signature over the canonical form without `signature`.
    pub signature: Option<String>,
}

impl ChainHead {
    /// The bytes the signature covers.
    pub fn canonical(&self) -> Vec<u8> {
        let mut value = serde_json::to_value(self).unwrap_or(serde_json::Value::Null);
        if let serde_json::Value::Object(map) = &mut value {
            map.remove("signature");
        }
        canonical_json(&value)
    }

    /// Signs with `key` (unsigned without one).
    pub fn sign(mut self, key: Option<&ManifestKey>) -> Self {
        self.key_id = key.map(|k| k.key_id.clone());
        self.signature = None;
        if let Some(key) = key {
            let signature = key.signing_key().sign(&self.canonical());
            self.signature = Some(URL_SAFE_NO_PAD.encode(signature.to_bytes()));
        }
        self
    }

    /// Checks the signature against the trusted keys and their signing periods.
    pub fn verify(&self, trusted: &[PublicKey]) -> Result<(), ManifestError> {
        let (Some(kid), Some(signature)) = (&self.key_id, &self.signature) else {
            return Err(ManifestError::Unsigned);
        };
        verify_signed(trusted, kid, signature, &self.canonical(), &self.signed_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_head_verifies_and_a_changed_one_does_not() {
        let key = ManifestKey::generate();
        let head = ChainHead {
            namespace: "acme".into(),
            sequence: 7,
            manifest_sha256: Some("ab".repeat(32)),
            signed_at: "2026-01-01T00:00:00Z".into(),
            key_id: None,
            signature: None,
        }
        .sign(Some(&key));
        let text = String::from_utf8(head.canonical()).unwrap();
        assert!(text.starts_with(r#"{"key_id":""#) && !text.contains("signature"));
        assert_eq!(head.verify(&[key.public()]), Ok(()));
        let mut changed = head.clone();
        changed.sequence = 6;
        assert_eq!(
            changed.verify(&[key.public()]),
            Err(ManifestError::BadSignature)
        );
    }
}
