//! Splunk's authentication forms: `Bearer <token>`, `Splunk <token|session key>`, HTTP basic,
//! and the `splunkd_<port>` session cookie.

use axum::http::HeaderMap;
use axum::http::header::{AUTHORIZATION, COOKIE};
use base64::Engine as _;
use rand::RngCore as _;

use super::Shared;

fn ct_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl Shared {
    fn is_token(&self, t: &str) -> bool {
        self.token.as_deref().is_some_and(|tok| ct_eq(tok, t))
    }

    fn is_session(&self, key: &str) -> bool {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(key)
    }

    /// Whether the credentials match the configured user.
    pub(crate) fn password_ok(&self, user: &str, password: &str) -> bool {
        ct_eq(user, &self.user) && ct_eq(password, &self.password)
    }

    /// Starts a session for `auth/login`.
    pub(crate) fn new_session(&self) -> String {
        let mut bytes = [0u8; 24];
        rand::thread_rng().fill_bytes(&mut bytes);
        let key = hex::encode(bytes);
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.clone());
        key
    }

    /// Whether a request carries any accepted credential.
    pub(crate) fn authenticated(&self, headers: &HeaderMap) -> bool {
        if let Some(v) = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) {
            let v = v.trim();
            let (scheme, cred) = v.split_once(' ').unwrap_or((v, ""));
            let cred = cred.trim();
            let ok = match scheme.to_ascii_lowercase().as_str() {
                "bearer" | "splunk" => self.is_token(cred) || self.is_session(cred),
                "basic" => base64::engine::general_purpose::STANDARD
                    .decode(cred)
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .and_then(|s| s.split_once(':').map(|(u, p)| self.password_ok(u, p)))
                    .unwrap_or(false),
                _ => false,
            };
            if ok {
                return true;
            }
        }
        headers
            .get_all(COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|c| c.trim().split_once('='))
            .any(|(k, v)| k.starts_with("splunkd_") && self.is_session(v))
    }
}
