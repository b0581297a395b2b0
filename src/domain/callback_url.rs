//! Callback URLs: http(s), no credentials, and not an internal address (as far as that shows
//! without DNS; `notify::ssrf` resolves the host).

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use url::{Host, Url};

use super::net::{AllowList, SsrfError};

/// A callback URL that passed every check at request time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct CallbackUrl(Url);

/// Why a callback URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallbackUrlError {
    #[error("invalid callback_url: not a valid absolute URL")]
    Malformed,
    #[error("invalid callback_url: only http and https are allowed")]
    Scheme,
    #[error("invalid callback_url: must not contain credentials")]
    Credentials,
    #[error("invalid callback_url: {0}")]
    Blocked(#[from] SsrfError),
}

impl CallbackUrl {
    /// Parses the URL and checks everything that does not need DNS.
    pub fn parse(value: &str, allow: &AllowList) -> Result<Self, CallbackUrlError> {
        if value.len() > 2048 || value.chars().any(char::is_control) {
            return Err(CallbackUrlError::Malformed);
        }
        let url = Url::parse(value).map_err(|_| CallbackUrlError::Malformed)?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(CallbackUrlError::Scheme);
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(CallbackUrlError::Credentials);
        }
        // The WHATWG parser has already turned decimal, octal and hex IPv4 forms into dotted quads.
        let host = url
            .host_str()
            .ok_or(CallbackUrlError::Malformed)?
            .to_owned();
        let literal = match url.host() {
            Some(Host::Ipv4(v4)) => Some(IpAddr::V4(v4)),
            Some(Host::Ipv6(v6)) => Some(IpAddr::V6(v6)),
            _ => None,
        };
        if let Some(ip) = literal {
            allow.check(&host, ip)?;
        }
        Ok(Self(url))
    }

    /// The host part.
    pub fn host(&self) -> &str {
        self.0.host_str().unwrap_or_default()
    }

    /// The URL.
    pub fn url(&self) -> &Url {
        &self.0
    }

    /// Re-reads a URL stored by this service; the request-time checks already passed.
    pub fn from_stored(value: &str) -> Result<Self, CallbackUrlError> {
        Url::parse(value)
            .map(Self)
            .map_err(|_| CallbackUrlError::Malformed)
    }
}

impl fmt::Display for CallbackUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

impl From<CallbackUrl> for String {
    fn from(value: CallbackUrl) -> String {
        value.0.into()
    }
}

impl TryFrom<String> for CallbackUrl {
    type Error = CallbackUrlError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::from_stored(&value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_bad_schemes_credentials_and_internal_literals() {
        let none = AllowList::default();
        let cases = [
            ("ftp://example.com/x", CallbackUrlError::Scheme),
            ("http://user:pw@example.com/", CallbackUrlError::Credentials),
            ("http://user@example.com/", CallbackUrlError::Credentials),
            ("not a url", CallbackUrlError::Malformed),
        ];
        for (url, want) in cases {
            assert_eq!(CallbackUrl::parse(url, &none).unwrap_err(), want, "{url}");
        }
        for url in [
            "http://127.0.0.1/hook",
            "http://10.1.2.3/",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://2130706433/",
            "http://0x7f.0.0.1/",
            "http://0177.0.0.1/",
            "http://127.1/",
            "http://0/",
        ] {
            assert!(
                matches!(
                    CallbackUrl::parse(url, &none),
                    Err(CallbackUrlError::Blocked(_))
                ),
                "{url} accepted"
            );
        }
    }

    #[test]
    fn allow_list_permits_test_receivers() {
        let allow = AllowList::new(&["127.0.0.1/32".into()]);
        assert!(CallbackUrl::parse("http://127.0.0.1:9999/hook", &allow).is_ok());
        assert!(CallbackUrl::parse("https://hooks.example.com/x", &AllowList::default()).is_ok());
    }
}
