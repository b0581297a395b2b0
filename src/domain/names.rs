//! Registry names: namespaces (users and organizations), repositories and performers.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A name that is not a valid registry name; the message says which rule it broke.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {shown}: {why}")]
pub struct InvalidName {
    what: &'static str,
    shown: String,
    why: &'static str,
}

impl InvalidName {
    fn new(what: &'static str, value: &str, why: &'static str) -> Self {
        // Quote with escapes so control characters in the input cannot forge log lines.
        let mut shown: String = value.chars().take(64).collect();
        if value.chars().count() > 64 {
            shown.push('…');
        }
        Self {
            what,
            shown: format!("{shown:?}"),
            why,
        }
    }
}

/// A user or organization name, as the registry accepts them: lowercase letters and digits,
/// single separators `.`, `_`, `-` between them, 2 to 255 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Namespace(String);

impl Namespace {
    /// Parses a namespace name.
    pub fn parse(value: &str) -> Result<Self, InvalidName> {
        let fail = |why| Err(InvalidName::new("namespace", value, why));
        if value.len() < 2 || value.len() > 255 {
            return fail("must be 2 to 255 characters long");
        }
        if !separated_alnum(value) {
            return fail(
                "must be lowercase letters and digits, separated by single '.', '_' or '-'",
            );
        }
        Ok(Self(value.to_owned()))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A repository name within a namespace: starts with a lowercase letter or digit, then
/// lowercase letters, digits, `.`, `_` or `-`, at most 255 characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RepositoryName(String);

impl RepositoryName {
    /// Parses a repository name.
    pub fn parse(value: &str) -> Result<Self, InvalidName> {
        let fail = |why| Err(InvalidName::new("repository name", value, why));
        if value.is_empty() || value.len() > 255 {
            return fail("must be 1 to 255 characters long");
        }
        let mut chars = value.chars();
        let first_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        let rest_ok = chars
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '.' | '_' | '-'));
        if !first_ok || !rest_ok {
            return fail(
                "must start with a lowercase letter or digit and contain only lowercase letters, digits, '.', '_' and '-'",
            );
        }
        Ok(Self(value.to_owned()))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A performer filter: a user name, or a robot `namespace+robot`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Performer(String);

impl Performer {
    /// Parses a performer name (user or robot account).
    pub fn parse(value: &str) -> Result<Self, InvalidName> {
        let fail = |why| Err(InvalidName::new("performer", value, why));
        if value.is_empty() || value.len() > 255 {
            return fail("must be 1 to 255 characters long");
        }
        let valid = match value.split_once('+') {
            Some((owner, robot)) => separated_alnum(owner) && robot_shortname(robot),
            None => separated_alnum(value),
        };
        if !valid {
            return fail("must be a user name or a robot name of the form namespace+robot");
        }
        Ok(Self(value.to_owned()))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn separated_alnum(value: &str) -> bool {
    let alnum = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit();
    !value.is_empty()
        && value
            .split(['.', '_', '-'])
            .all(|part| !part.is_empty() && part.chars().all(alnum))
}

fn robot_shortname(value: &str) -> bool {
    let mut chars = value.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && value.len() <= 255
}

macro_rules! string_newtype {
    ($($t:ty),*) => {$(
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl TryFrom<String> for $t {
            type Error = InvalidName;
            fn try_from(value: String) -> Result<Self, Self::Error> {
                Self::parse(&value)
            }
        }

        impl From<$t> for String {
            fn from(value: $t) -> String {
                value.0
            }
        }

        impl AsRef<str> for $t {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    )*};
}

string_newtype!(Namespace, RepositoryName, Performer);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_registry_names() {
        for ok in ["ab", "my-org", "org.name_2", "a1"] {
            Namespace::parse(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for ok in ["r", "repo", "my.repo-2_x", "9lives"] {
            RepositoryName::parse(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for ok in ["alice", "myorg+deploy_bot"] {
            Performer::parse(ok).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
    }

    #[test]
    fn refuses_injection_and_malformed_names() {
        for bad in [
            "x\" OR account=\"*",
            "a\\\" | delete",
            "*",
            "a\nb",
            "Org",
            "a",
            "-ab",
            "ab-",
            "a..b",
            "",
            "ns0 | delete",
            "ab\u{0}",
        ] {
            assert!(Namespace::parse(bad).is_err(), "{bad:?} accepted");
        }
        for bad in ["", ".repo", "Repo", "a/b", "re po", "r\"", "r*"] {
            assert!(RepositoryName::parse(bad).is_err(), "{bad:?} accepted");
        }
        for bad in ["a+", "+bot", "a+B", "a b", "a*"] {
            assert!(Performer::parse(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn error_escapes_control_characters() {
        let err = Namespace::parse("evil\r\nX-Injected: 1").unwrap_err();
        let text = err.to_string();
        assert!(!text.contains('\n') && !text.contains('\r'), "{text}");
        assert!(text.contains("namespace"));
    }
}
