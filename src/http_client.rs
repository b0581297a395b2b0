//! The HTTPS client settings shared by every upstream (Splunk, Quay, HEC): rustls, no
//! redirects, our user agent, and the operator's TLS choices.

use std::path::Path;

/// A client builder that trusts `ca_path`'s certificates besides the system's, or any
/// certificate when `verify_ssl` is off. `key` names the setting in error messages.
pub fn builder(
    verify_ssl: bool,
    ca_path: Option<&Path>,
    key: &str,
) -> Result<reqwest::ClientBuilder, String> {
    let mut builder = reqwest::Client::builder()
        .use_rustls_tls()
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("logexport/", env!("CARGO_PKG_VERSION")));
    if !verify_ssl {
        builder = builder.danger_accept_invalid_certs(true);
    }
    if let Some(path) = ca_path {
        let pem = std::fs::read(path)
            .map_err(|e| format!("{key} {} cannot be read: {e}", path.display()))?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("{key} {} holds no PEM certificate: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!("{key} {} holds no PEM certificate", path.display()));
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    Ok(builder)
}
