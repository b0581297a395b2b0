//! The TLS settings shared by every upstream client (Splunk, Quay, HEC, callbacks, S3, SMTP,
//! Postgres): the operator's CA file, read once and checked, and the words for a certificate the
//! client refused, naming the key that would fix it.

use std::path::{Path, PathBuf};

/// A CA file (`*.ssl_ca_path`) that cannot be used; `key` names the setting that points at it.
#[derive(Debug, thiserror::Error)]
pub enum CaFileError {
    /// The file cannot be read.
    #[error("{key}: {} cannot be read: {source}", path.display())]
    Unreadable {
        key: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is no PEM file.
    #[error("{key}: {} is not a PEM file: {source}", path.display())]
    NotPem {
        key: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file holds no certificate.
    #[error("{key}: {} holds no PEM certificate (-----BEGIN CERTIFICATE-----)", path.display())]
    Empty { key: String, path: PathBuf },
    /// A certificate in the file is not one the TLS library accepts.
    #[error("{key}: {} holds an unusable certificate: {source}", path.display())]
    Unusable {
        key: String,
        path: PathBuf,
        #[source]
        source: reqwest::Error,
    },
}

/// A client builder that trusts `ca_path`'s certificates besides the system's, or any
/// certificate when `verify_ssl` is off. `key` names the setting in error messages.
pub fn builder(
    verify_ssl: bool,
    ca_path: Option<&Path>,
    key: &str,
) -> Result<reqwest::ClientBuilder, CaFileError> {
    let builder = reqwest::Client::builder()
        .use_rustls_tls()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("logexport/", env!("CARGO_PKG_VERSION")));
    let builder = trust(builder, ca_path, key)?;
    Ok(if verify_ssl {
        builder
    } else {
        builder.danger_accept_invalid_certs(true)
    })
}

/// Adds `ca_path`'s certificates (when given) to what `builder` trusts.
pub fn trust(
    mut builder: reqwest::ClientBuilder,
    ca_path: Option<&Path>,
    key: &str,
) -> Result<reqwest::ClientBuilder, CaFileError> {
    if let Some(path) = ca_path {
        for cert in read_ca(path, key)? {
            let cert =
                reqwest::Certificate::from_der(&cert).map_err(|source| CaFileError::Unusable {
                    key: key.to_owned(),
                    path: path.to_owned(),
                    source,
                })?;
            builder = builder.add_root_certificate(cert);
        }
    }
    Ok(builder)
}

/// The certificates (DER) of the PEM file at `path`; an unreadable file, or one without a
/// certificate, is an error naming `key`.
pub fn read_ca(path: &Path, key: &str) -> Result<Vec<Vec<u8>>, CaFileError> {
    let pem = read(path, key)?;
    let certs = rustls_pemfile::certs(&mut pem.as_slice())
        .map(|cert| cert.map(|c| c.to_vec()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| CaFileError::NotPem {
            key: key.to_owned(),
            path: path.to_owned(),
            source,
        })?;
    if certs.is_empty() {
        return Err(CaFileError::Empty {
            key: key.to_owned(),
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// The PEM text of `path` after [`read_ca`] found certificates in it.
pub fn read_ca_pem(path: &Path, key: &str) -> Result<Vec<u8>, CaFileError> {
    read_ca(path, key)?;
    read(path, key)
}

fn read(path: &Path, key: &str) -> Result<Vec<u8>, CaFileError> {
    std::fs::read(path).map_err(|source| CaFileError::Unreadable {
        key: key.to_owned(),
        path: path.to_owned(),
        source,
    })
}

/// True when `error`, or anything in its chain, says the server's certificate was refused.
///
/// rustls' words are matched in the text: `std::io::Error` hides its inner error from
/// `source()`, and every client wraps rustls' error in one.
pub fn is_certificate_error(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if mentions_certificate(&e.to_string()) {
            return true;
        }
        current = e.source();
    }
    false
}

/// True when an error's text is rustls refusing the peer's certificate.
pub fn mentions_certificate(text: &str) -> bool {
    text.contains("invalid peer certificate") || text.contains("certificate verify failed")
}

/// What to do about a refused certificate: names the CA key of the client that refused it.
pub fn certificate_hint(key: &str) -> String {
    format!(
        "the server's TLS certificate is not trusted: set {key} to the PEM file of the CA that \
         signed it (or fix the server's certificate); nothing was sent unencrypted"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_or_empty_ca_file_names_the_key() {
        let err = read_ca(Path::new("/nonexistent/ca.pem"), "email.ssl_ca_path").unwrap_err();
        assert!(matches!(err, CaFileError::Unreadable { .. }), "{err:?}");
        assert!(
            std::error::Error::source(&err).is_some(),
            "keeps the I/O error"
        );
        let err = err.to_string();
        assert!(
            err.starts_with("email.ssl_ca_path: /nonexistent/ca.pem"),
            "{err}"
        );
        let dir = std::env::temp_dir().join(format!("ca-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let err = read_ca(&empty, "callback.ssl_ca_path").unwrap_err();
        assert!(matches!(err, CaFileError::Empty { .. }), "{err:?}");
        let err = err.to_string();
        assert!(
            err.contains("callback.ssl_ca_path") && err.contains("no PEM certificate"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn rustls_refusals_are_recognised() {
        assert!(mentions_certificate(
            "error sending request: client error (Connect): invalid peer certificate: UnknownIssuer"
        ));
        assert!(!mentions_certificate("connection refused"));
    }
}
