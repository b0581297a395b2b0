//! The storage error: which store, which operation, retryable or not. Never carries credentials
//! or signed URLs. And why a local-storage download link was refused.

use std::fmt;

/// A failed storage operation.
#[derive(Debug, thiserror::Error)]
#[error("{system}: {operation} failed ({kind}): {message}")]
pub struct StorageError {
    system: String,
    operation: &'static str,
    kind: Kind,
    message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Retryable,
    Permanent,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Retryable => "retryable",
            Kind::Permanent => "permanent",
        })
    }
}

/// Longest message kept from an underlying error, so a chatty server cannot flood the job row.
const MAX_MESSAGE: usize = 500;

impl StorageError {
    /// A failure that may succeed when tried again (5xx, throttling, timeouts, connection errors).
    pub fn retryable(system: &str, operation: &'static str, message: impl fmt::Display) -> Self {
        Self::build(system, operation, Kind::Retryable, message)
    }

    /// A failure that will not go away by retrying (access denied, missing bucket, bad config).
    pub fn permanent(system: &str, operation: &'static str, message: impl fmt::Display) -> Self {
        Self::build(system, operation, Kind::Permanent, message)
    }

    fn build(
        system: &str,
        operation: &'static str,
        kind: Kind,
        message: impl fmt::Display,
    ) -> Self {
        let mut message = message.to_string();
        if message.len() > MAX_MESSAGE {
            let mut end = MAX_MESSAGE;
            while !message.is_char_boundary(end) {
                end -= 1;
            }
            message.truncate(end);
            message.push('…');
        }
        Self {
            system: system.to_owned(),
            operation,
            kind,
            message,
        }
    }

    /// Whether the operation may succeed when tried again.
    pub fn is_retryable(&self) -> bool {
        self.kind == Kind::Retryable
    }

    /// The failed operation, e.g. `upload part`.
    pub fn operation(&self) -> &'static str {
        self.operation
    }
}

/// Why a download link was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DownloadError {
    /// The signature does not match the file and expiry (403).
    #[error("the download link is invalid")]
    Tampered,
    /// The link was valid but has expired (410).
    #[error("the download link has expired")]
    Expired,
    /// The archive does not exist (any more) (404).
    #[error("the exported file does not exist")]
    NotFound,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_names_the_store_and_the_kind() {
        let e = StorageError::retryable("S3 storage (bucket b)", "upload part", "503 SlowDown");
        assert!(e.is_retryable());
        assert_eq!(
            e.to_string(),
            "S3 storage (bucket b): upload part failed (retryable): 503 SlowDown"
        );
        let long = StorageError::permanent("local storage", "write", "é".repeat(600));
        assert!(!long.is_retryable());
        assert!(long.to_string().len() < 560);
    }
}
