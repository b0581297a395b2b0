//! The guard that keeps callbacks away from internal addresses, at request time and at delivery:
//! it resolves the host and refuses internal answers. Which addresses are internal, and the
//! exceptions `callback.allowed_hosts` opens, are `domain::net`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use crate::domain::{AllowList, CallbackUrl, CallbackUrlError, SsrfError};

/// Parses a callback URL and resolves its host, refusing internal answers: the request-time
/// check. Delivery checks again ([`GuardedResolver`]), in case DNS changed since.
pub async fn parse_and_resolve(
    value: &str,
    allow: &AllowList,
) -> Result<CallbackUrl, CallbackUrlError> {
    let url = CallbackUrl::parse(value, allow)?;
    if !allow.allows_host(url.host()) {
        let port = url.url().port_or_known_default().unwrap_or(443);
        let host = url.host().trim_start_matches('[').trim_end_matches(']');
        check_host(allow, host, port).await?;
    }
    Ok(url)
}

/// Resolves `host` and checks every address it resolves to.
pub async fn check_host(
    allow: &AllowList,
    host: &str,
    port: u16,
) -> Result<Vec<SocketAddr>, SsrfError> {
    let addrs: Vec<SocketAddr> = match host.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((host, port))
            .await
            .map_err(|_| SsrfError::Unresolvable(host.to_owned()))?
            .collect(),
    };
    if addrs.is_empty() {
        return Err(SsrfError::Unresolvable(host.to_owned()));
    }
    for addr in &addrs {
        allow.check(host, addr.ip())?;
    }
    Ok(addrs)
}

/// A DNS resolver for reqwest that drops internal addresses, so the guard applies to the
/// address actually connected to, even if DNS changed since the request was accepted.
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    allow: Arc<AllowList>,
}

impl GuardedResolver {
    /// Wraps the system resolver with the guard.
    pub fn new(allow: Arc<AllowList>) -> Self {
        Self { allow }
    }
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow = self.allow.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs = check_host(&allow, &host, 0)
                .await
                .map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { Box::new(e) })?;
            let iter: reqwest::dns::Addrs = Box::new(addrs.into_iter());
            Ok(iter)
        })
    }
}
