//! The opaque `next_page` token: an encrypted, authenticated keyset cursor bound to one query.
//!
//! Wire form: base64url(nonce ‖ ChaCha20-Poly1305 ciphertext). The associated data is a SHA-256
//! fingerprint of the query (superuser-ness, namespace, repository, performer, sorted kinds,
//! range), so a token decrypts only for the exact query it was issued for: another namespace,
//! another filter or a flipped byte all fail authentication the same way. Tokens expire
//! [`TOKEN_LIFETIME`] after issue.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::Secret;
use crate::domain::{DateRange, Namespace, Performer, RepositoryName};

/// How long a `next_page` token stays valid.
pub const TOKEN_LIFETIME: chrono::Duration = chrono::Duration::days(2);

/// Most boundary-instant hashes a token carries (see [`Cursor`]); ~11 KB of token at most.
pub const MAX_SEEN: usize = 1024;

const NONCE_LEN: usize = 12;
/// Longest token accepted before any decoding (base64 of the largest possible payload).
const MAX_TOKEN_CHARS: usize = 16 * 1024;

/// Where the previous page stopped: the millisecond of the last row returned and the tiebreak
/// hashes of every row already returned at that millisecond (a multiset: identical events
/// appear once per copy).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cursor {
    /// Epoch milliseconds of the boundary (`_time` as Splunk renders it).
    #[serde(rename = "t")]
    pub boundary_ms: i64,
    /// Tiebreak hashes of rows already returned at `boundary_ms`.
    #[serde(rename = "s")]
    pub seen: Vec<u64>,
}

#[derive(Serialize, Deserialize)]
struct Payload_ {
    #[serde(rename = "c")]
    cursor: Cursor,
    /// Issue time, epoch seconds.
    #[serde(rename = "i")]
    issued: i64,
}

/// The query a token is bound to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryBinding<'a> {
    pub superuser: bool,
    pub namespace: Option<&'a Namespace>,
    pub repository: Option<&'a RepositoryName>,
    pub performer: Option<&'a Performer>,
    /// Sorted and deduplicated by the caller.
    pub kinds: &'a [String],
    pub range: &'a DateRange,
}

impl QueryBinding<'_> {
    /// A collision-resistant fingerprint; fields are length-prefixed so none can bleed into
    /// another.
    fn fingerprint(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        let mut field = |bytes: &[u8]| {
            h.update((bytes.len() as u64).to_be_bytes());
            h.update(bytes);
        };
        field(b"logexport-logs-page-v1");
        field(&[u8::from(self.superuser)]);
        field(self.namespace.map_or("", |n| n.as_str()).as_bytes());
        field(self.repository.map_or("", |r| r.as_str()).as_bytes());
        field(self.performer.map_or("", |p| p.as_str()).as_bytes());
        field(&(self.kinds.len() as u64).to_be_bytes());
        for k in self.kinds {
            field(k.as_bytes());
        }
        field(&self.range.start.timestamp_micros().to_be_bytes());
        field(&self.range.end.timestamp_micros().to_be_bytes());
        h.finalize().into()
    }
}

/// Why a token was refused; every variant is a 400 for the client.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error(
        "next_page is not valid for this query (altered, issued for another namespace or filter, or by another server key)"
    )]
    Invalid,
    #[error("next_page has expired (tokens are valid for 2 days); start again from the first page")]
    Expired,
    #[error("the page boundary holds more than {MAX_SEEN} events with the same timestamp")]
    TooManyTies,
}

/// Seals and opens page tokens.
#[derive(Clone)]
pub struct TokenKey {
    cipher: ChaCha20Poly1305,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey(<redacted>)")
    }
}

impl TokenKey {
    /// A key derived from `logs.page_token_key`, or a random one when it is empty.
    pub fn from_secret(secret: &Secret) -> Self {
        let key: [u8; 32] = if secret.is_empty() {
            let mut k = [0u8; 32];
            rand::thread_rng().fill_bytes(&mut k);
            k
        } else {
            Sha256::new()
                .chain_update(b"logexport page token key\0")
                .chain_update(secret.expose().as_bytes())
                .finalize()
                .into()
        };
        Self {
            cipher: ChaCha20Poly1305::new(Key::from_slice(&key)),
        }
    }

    /// Seals a cursor for the given query.
    pub fn seal(
        &self,
        cursor: &Cursor,
        binding: &QueryBinding<'_>,
        now: DateTime<Utc>,
    ) -> Result<String, TokenError> {
        if cursor.seen.len() > MAX_SEEN {
            return Err(TokenError::TooManyTies);
        }
        let plain = serde_json::to_vec(&Payload_ {
            cursor: cursor.clone(),
            issued: now.timestamp(),
        })
        .map_err(|_| TokenError::Invalid)?;
        self.seal_bytes(&plain, &binding.fingerprint())
    }

    /// Encrypts `plain` bound to `aad`: only the same associated data opens it again.
    pub fn seal_bytes(&self, plain: &[u8], aad: &[u8]) -> Result<String, TokenError> {
        let mut nonce = [0u8; NONCE_LEN];
        rand::thread_rng().fill_bytes(&mut nonce);
        let sealed = self
            .cipher
            .encrypt(Nonce::from_slice(&nonce), Payload { msg: plain, aad })
            .map_err(|_| TokenError::Invalid)?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(URL_SAFE_NO_PAD.encode(out))
    }

    /// Decrypts a token sealed by [`TokenKey::seal_bytes`] with the same `aad`.
    pub fn open_bytes(&self, token: &str, aad: &[u8]) -> Result<Vec<u8>, TokenError> {
        let token = token.trim();
        if token.is_empty() || token.len() > MAX_TOKEN_CHARS {
            return Err(TokenError::Invalid);
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(token)
            .map_err(|_| TokenError::Invalid)?;
        if bytes.len() <= NONCE_LEN {
            return Err(TokenError::Invalid);
        }
        let (nonce, sealed) = bytes.split_at(NONCE_LEN);
        self.cipher
            .decrypt(Nonce::from_slice(nonce), Payload { msg: sealed, aad })
            .map_err(|_| TokenError::Invalid)
    }

    /// Opens a token issued for exactly this query and not yet expired.
    pub fn open(
        &self,
        token: &str,
        binding: &QueryBinding<'_>,
        now: DateTime<Utc>,
    ) -> Result<Cursor, TokenError> {
        let plain = self.open_bytes(token, &binding.fingerprint())?;
        let payload: Payload_ = serde_json::from_slice(&plain).map_err(|_| TokenError::Invalid)?;
        let issued = DateTime::from_timestamp(payload.issued, 0).ok_or(TokenError::Invalid)?;
        // A token "issued" in the future was not issued by this clock: refuse it too.
        if now - issued > TOKEN_LIFETIME || issued - now > chrono::Duration::minutes(5) {
            return Err(TokenError::Expired);
        }
        if payload.cursor.seen.len() > MAX_SEEN {
            return Err(TokenError::Invalid);
        }
        Ok(payload.cursor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn range() -> DateRange {
        DateRange::from_request(
            Some("2024-01-01"),
            Some("2024-01-31"),
            None,
            Utc::now(),
            366,
        )
        .unwrap()
    }

    fn cursor() -> Cursor {
        Cursor {
            boundary_ms: 1_704_448_800_123,
            seen: vec![7, 7, 42],
        }
    }

    #[test]
    fn round_trips_only_for_the_same_query() {
        let key = TokenKey::from_secret(&Secret::new("k"));
        let (a, b) = (
            Namespace::parse("acme").unwrap(),
            Namespace::parse("beta").unwrap(),
        );
        let r = range();
        let kinds = vec!["push_repo".to_string()];
        let bind = |ns, kinds: &'static [String]| QueryBinding {
            superuser: false,
            namespace: Some(ns),
            repository: None,
            performer: None,
            kinds,
            range: &r,
        };
        let now = Utc::now();
        let token = key.seal(&cursor(), &bind(&a, &[]), now).unwrap();
        assert_eq!(key.open(&token, &bind(&a, &[]), now).unwrap(), cursor());
        assert_eq!(
            key.open(&token, &bind(&b, &[]), now),
            Err(TokenError::Invalid)
        );
        let leaked: &'static [String] = Box::leak(kinds.into_boxed_slice());
        assert_eq!(
            key.open(&token, &bind(&a, leaked), now),
            Err(TokenError::Invalid)
        );
        let su = QueryBinding {
            superuser: true,
            ..bind(&a, &[])
        };
        assert_eq!(key.open(&token, &su, now), Err(TokenError::Invalid));
        let other_key = TokenKey::from_secret(&Secret::new("other"));
        assert_eq!(
            other_key.open(&token, &bind(&a, &[]), now),
            Err(TokenError::Invalid)
        );
        let later = now + TOKEN_LIFETIME + chrono::Duration::seconds(1);
        assert_eq!(
            key.open(&token, &bind(&a, &[]), later),
            Err(TokenError::Expired)
        );
    }

    proptest! {
        #[test]
        fn any_altered_character_is_refused(pos in 0usize..200, replacement in "[A-Za-z0-9_-]") {
            let key = TokenKey::from_secret(&Secret::new("k"));
            let ns = Namespace::parse("acme").unwrap();
            let r = range();
            let bind = QueryBinding { superuser: false, namespace: Some(&ns), repository: None, performer: None, kinds: &[], range: &r };
            let now = Utc::now();
            let token = key.seal(&cursor(), &bind, now).unwrap();
            let pos = pos % token.len();
            let mut altered: Vec<char> = token.chars().collect();
            let c = replacement.chars().next().unwrap();
            prop_assume!(altered[pos] != c);
            altered[pos] = c;
            let altered: String = altered.into_iter().collect();
            prop_assert!(key.open(&altered, &bind, now).is_err());
        }
    }
}
