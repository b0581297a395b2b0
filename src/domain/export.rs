//! Export identifiers and the per-export choices: scope, format and compression.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The public id of one export request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[serde(transparent)]
#[sqlx(transparent)]
pub struct ExportId(pub Uuid);

impl ExportId {
    /// A fresh random id.
    pub fn new() -> Self {
        Self(Uuid::new_v4())
    }
}

impl Default for ExportId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for ExportId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for ExportId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(Self)
    }
}

/// A value outside an enum's allowed set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid {what} {value:?}: expected one of {}", .allowed.join(" "))]
pub struct ParseEnumError {
    what: &'static str,
    value: String,
    allowed: &'static [&'static str],
}

macro_rules! text_enum {
    ($(#[$doc:meta])* $name:ident, $what:literal, { $($variant:ident => $text:literal),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
        #[serde(rename_all = "lowercase")]
        pub enum $name { $($variant),* }

        impl $name {
            /// The lowercase name stored in the database and used on the wire.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $text),* }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $name {
            type Err = ParseEnumError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok(Self::$variant),)*
                    _ => Err(ParseEnumError {
                        what: $what,
                        value: s.chars().take(32).collect(),
                        allowed: &[$($text),*],
                    }),
                }
            }
        }
    };
}

text_enum!(
    /// Whose logs an export covers.
    ExportScope, "scope", { User => "user", Organization => "organization", Repository => "repository" }
);
text_enum!(
    /// The archive's encoding.
    ExportFormat, "format", { Json => "json", Ndjson => "ndjson", Csv => "csv" }
);
text_enum!(
    /// Compression wrapped around the archive.
    Compression, "compression", { None => "none", Gzip => "gzip", Zstd => "zstd" }
);

impl ExportFormat {
    /// File extension, before any compression suffix.
    pub fn extension(self) -> &'static str {
        self.as_str()
    }

    /// MIME type of the uncompressed archive.
    pub fn content_type(self) -> &'static str {
        match self {
            Self::Json => "application/json",
            Self::Ndjson => "application/x-ndjson",
            Self::Csv => "text/csv; charset=utf-8",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_value_names_the_allowed_ones_without_a_stray_space() {
        let format = "xml".parse::<ExportFormat>().unwrap_err().to_string();
        assert_eq!(
            format,
            "invalid format \"xml\": expected one of json ndjson csv"
        );
        let compression = "lz4".parse::<Compression>().unwrap_err().to_string();
        assert_eq!(
            compression,
            "invalid compression \"lz4\": expected one of none gzip zstd"
        );
    }
}
