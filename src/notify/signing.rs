//! Standard Webhooks signatures (<https://www.standardwebhooks.com/>) for callback requests.
//!
//! The receiver checks `webhook-signature` = `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`
//! with any Standard Webhooks library, so the byte layout here must match the reference exactly;
//! the tests hold it to the spec authors' own crate, `standardwebhooks`. That crate does not sign
//! here (README, "Code layout"): it refuses a body that is not UTF-8, and its check refuses a
//! timestamp more than five minutes from the clock.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The prefix Standard Webhooks uses for base64-encoded secrets.
const SECRET_PREFIX: &str = "whsec_";

/// A signing key parsed from `callback.signing_secret`.
#[derive(Clone)]
pub struct SigningKey(Vec<u8>);

/// A `whsec_` secret whose remainder is not valid base64.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("callback.signing_secret: starts with whsec_ but the rest is not valid base64")]
pub struct SigningKeyError;

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey(<redacted>)")
    }
}

impl SigningKey {
    /// Parses a secret: `whsec_<base64>` means the decoded bytes (as the reference libraries do);
    /// anything else is used as raw bytes, so a plain shared password also works.
    pub fn parse(secret: &str) -> Result<Self, SigningKeyError> {
        match secret.strip_prefix(SECRET_PREFIX) {
            Some(encoded) => STANDARD
                .decode(encoded.trim())
                .map(Self)
                .map_err(|_| SigningKeyError),
            None => Ok(Self(secret.as_bytes().to_vec())),
        }
    }

    fn mac(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> HmacSha256 {
        // HMAC accepts keys of any length, so this cannot fail.
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        mac.update(msg_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac
    }

    /// The `webhook-signature` header value for one request.
    pub fn sign(&self, msg_id: &str, timestamp: i64, body: &[u8]) -> String {
        let tag = self.mac(msg_id, timestamp, body).finalize().into_bytes();
        format!("v1,{}", STANDARD.encode(tag))
    }

    /// True when any `v1,` signature in the (space-separated) header matches, compared in
    /// constant time.
    pub fn verify(&self, header: &str, msg_id: &str, timestamp: i64, body: &[u8]) -> bool {
        header.split_whitespace().any(|candidate| {
            let Some(encoded) = candidate.strip_prefix("v1,") else {
                return false;
            };
            let Ok(tag) = STANDARD.decode(encoded) else {
                return false;
            };
            self.mac(msg_id, timestamp, body).verify_slice(&tag).is_ok()
        })
    }
}

/// Signs with a secret given as in the configuration (see [`SigningKey::parse`]).
pub fn sign(
    secret: &str,
    msg_id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, SigningKeyError> {
    Ok(SigningKey::parse(secret)?.sign(msg_id, timestamp, body))
}

/// Verifies a `webhook-signature` header with a secret given as in the configuration.
pub fn verify(secret: &str, header: &str, msg_id: &str, timestamp: i64, body: &[u8]) -> bool {
    SigningKey::parse(secret).is_ok_and(|key| key.verify(header, msg_id, timestamp, body))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const TS: i64 = 1_614_265_330;
    const BODY: &[u8] = br#"{"test": 2432232314}"#;

    /// The published Standard Webhooks vector (svix/standard-webhooks library tests): matching it
    /// is what proves a receiver's off-the-shelf library accepts our signatures.
    #[test]
    fn reproduces_the_standard_webhooks_test_vector() {
        let expected = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
        assert_eq!(sign(SECRET, ID, TS, BODY).unwrap(), expected);
        assert!(verify(SECRET, expected, ID, TS, BODY));
        assert!(verify(
            SECRET,
            &format!("v1,bm9wZQ== {expected}"),
            ID,
            TS,
            BODY
        ));
    }

    #[test]
    fn tampering_breaks_the_signature() {
        let header = sign(SECRET, ID, TS, BODY).unwrap();
        assert!(!verify(SECRET, &header, ID, TS + 1, BODY));
        assert!(!verify(SECRET, &header, "msg_other", TS, BODY));
        assert!(!verify(SECRET, &header, ID, TS, br#"{"test": 2432232315}"#));
        assert!(!verify("whsec_AAAA", &header, ID, TS, BODY));
        assert!(!verify(SECRET, "v2,abc", ID, TS, BODY));
    }

    #[test]
    fn raw_secrets_are_used_as_bytes() {
        let header = sign("plain shared secret", ID, TS, BODY).unwrap();
        assert!(verify("plain shared secret", &header, ID, TS, BODY));
        assert!(!verify("plain shared secreT", &header, ID, TS, BODY));
    }

    #[test]
    fn invalid_whsec_secret_is_refused() {
        assert_eq!(
            SigningKey::parse("whsec_not base64!").unwrap_err(),
            SigningKeyError
        );
        assert!(!format!("{:?}", SigningKey::parse(SECRET).unwrap()).contains("MfKQ"));
    }

    /// The spec authors' own library signs every UTF-8 body byte for byte as we do, from a
    /// `whsec_` secret and from raw bytes, and, as a receiver, accepts what we send.
    #[test]
    fn the_standard_webhooks_crate_agrees() {
        let now = chrono::Utc::now().timestamp();
        let theirs = standardwebhooks::Webhook::new(SECRET).unwrap();
        let ours = sign(SECRET, ID, now, BODY).unwrap();
        assert_eq!(theirs.sign(ID, now, BODY).unwrap(), ours);
        let mut headers = axum::http::HeaderMap::new();
        headers.insert("webhook-id", ID.parse().unwrap());
        headers.insert("webhook-timestamp", now.to_string().parse().unwrap());
        headers.insert("webhook-signature", ours.parse().unwrap());
        theirs.verify(BODY, &headers).unwrap();
        let raw = standardwebhooks::Webhook::from_bytes(b"plain shared secret".to_vec()).unwrap();
        assert_eq!(
            raw.sign(ID, TS, BODY).unwrap(),
            sign("plain shared secret", ID, TS, BODY).unwrap()
        );
    }

    proptest! {
        #[test]
        fn the_standard_webhooks_crate_signs_any_text_as_we_do(key in proptest::collection::vec(any::<u8>(), 1..64), id in "[a-z0-9_]{1,30}", ts in 0i64..4_000_000_000, body in ".{0,200}") {
            let secret = format!("whsec_{}", STANDARD.encode(&key));
            let theirs = standardwebhooks::Webhook::new(&secret).unwrap();
            prop_assert_eq!(
                theirs.sign(&id, ts, body.as_bytes()).unwrap(),
                sign(&secret, &id, ts, body.as_bytes()).unwrap()
            );
        }

        #[test]
        fn sign_then_verify_round_trips(secret in ".{1,40}", id in "[a-z0-9_]{1,30}", ts in 0i64..4_000_000_000, body in proptest::collection::vec(any::<u8>(), 0..200)) {
            let key = SigningKey::parse(&secret);
            prop_assume!(key.is_ok());
            let key = key.unwrap();
            let header = key.sign(&id, ts, &body);
            prop_assert!(header.starts_with("v1,"));
            prop_assert!(key.verify(&header, &id, ts, &body));
        }
    }
}
