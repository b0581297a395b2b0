//! E-mail addresses for export notices, parsed strictly.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A single mailbox address (`local@domain`), with no display name, comments or line breaks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct EmailAddress(lettre::Address);

/// An address that was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid callback_email: {0}")]
pub struct EmailAddressError(&'static str);

impl EmailAddress {
    /// Parses an address; anything but a plain `local@domain` is refused.
    pub fn parse(value: &str) -> Result<Self, EmailAddressError> {
        if value.len() > 254 {
            return Err(EmailAddressError("longer than 254 characters"));
        }
        if value.chars().any(|c| c.is_control() || c.is_whitespace()) {
            return Err(EmailAddressError(
                "contains whitespace or control characters",
            ));
        }
        if value
            .chars()
            .any(|c| matches!(c, '<' | '>' | ',' | ';' | '"' | '(' | ')' | '\\'))
        {
            return Err(EmailAddressError(
                "must be a bare address like admin@example.com",
            ));
        }
        let address = lettre::Address::from_str(value)
            .map_err(|_| EmailAddressError("not a valid address like admin@example.com"))?;
        if !address.domain().contains('.') && address.domain() != "localhost" {
            return Err(EmailAddressError("the domain must be fully qualified"));
        }
        Ok(Self(address))
    }

    /// The address as lettre needs it.
    pub fn address(&self) -> &lettre::Address {
        &self.0
    }

    /// The address as a string.
    pub fn as_str(&self) -> &str {
        self.0.as_ref()
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl TryFrom<String> for EmailAddress {
    type Error = EmailAddressError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<EmailAddress> for String {
    fn from(value: EmailAddress) -> String {
        value.as_str().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_addresses() {
        for ok in ["admin@example.com", "a.b+tag@sub.example.org"] {
            EmailAddress::parse(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
    }

    #[test]
    fn refuses_header_injection_and_malformed_addresses() {
        for bad in [
            "admin@example.com\r\nBcc: victim@example.com",
            "admin@example.com\nSubject: hi",
            "admin@example.com%0d%0aBcc:x@y.z",
            "Admin <admin@example.com>",
            "a@b.com, c@d.com",
            "no-at-sign",
            "@example.com",
            "a@",
            "a b@example.com",
            "a@nodot",
            "",
        ] {
            assert!(EmailAddress::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
