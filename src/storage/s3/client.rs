//! The configured S3 client and what the store and its uploads share: the bucket, the part
//! size, and how an SDK error becomes a [`StorageError`].

use std::error::Error as StdError;
use std::time::Duration;

use aws_sdk_s3::Client;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use url::Url;

use crate::config::S3Config;
use crate::storage::StorageError;

/// S3 refuses multipart parts below 5 MiB (except the last).
pub(super) const MIN_PART_SIZE: usize = 5 * 1024 * 1024;

/// What every request and upload task needs.
pub(super) struct S3Inner {
    pub(super) client: Client,
    pub(super) bucket: String,
    /// `S3 storage (bucket …)`, for error messages.
    pub(super) system: String,
    pub(super) part_size: usize,
    /// Whether parts carry a CRC32 the completion must repeat (`checksum = when_supported`).
    pub(super) part_checksums: bool,
    /// What signs requests, asked for its expiry before a link is presigned.
    pub(super) credentials: Option<aws_credential_types::provider::SharedCredentialsProvider>,
}

impl S3Inner {
    /// Builds the client from `[storage.s3]`: static credentials when both keys are set,
    /// otherwise the AWS default chain (environment, profile, web identity, IMDS).
    pub(super) async fn connect(cfg: &S3Config) -> anyhow::Result<Self> {
        if cfg.bucket.is_empty() {
            anyhow::bail!("storage.s3.bucket: required for S3 storage");
        }
        let part_size_mib = usize::try_from(cfg.part_size_mib)?;
        let part_size = part_size_mib.saturating_mul(1024 * 1024);
        if part_size < MIN_PART_SIZE {
            anyhow::bail!("storage.s3.part_size_mib: S3 needs parts of at least 5 MiB");
        }
        let (request_checksum, response_checksum, part_checksums) = match cfg.checksum.as_str() {
            "when_required" => (
                RequestChecksumCalculation::WhenRequired,
                ResponseChecksumValidation::WhenRequired,
                false,
            ),
            "when_supported" => (
                RequestChecksumCalculation::WhenSupported,
                ResponseChecksumValidation::WhenSupported,
                true,
            ),
            other => anyhow::bail!(
                "storage.s3.checksum: {other:?} is not when_required or when_supported"
            ),
        };

        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(cfg.region.clone()))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(10))
                    .read_timeout(Duration::from_secs(120))
                    .build(),
            );
        match (
            cfg.access_key_id.is_empty(),
            cfg.secret_access_key.is_empty(),
        ) {
            (false, false) => {
                loader = loader.credentials_provider(Credentials::new(
                    cfg.access_key_id.expose(),
                    cfg.secret_access_key.expose(),
                    None,
                    None,
                    "logexport-config",
                ));
            }
            (true, true) => {}
            _ => anyhow::bail!(
                "storage.s3.access_key_id / secret_access_key: set both, or neither to use the AWS default credential chain"
            ),
        }
        if let Some(path) = &cfg.ssl_ca_path {
            loader = loader.http_client(https_client_trusting(path)?);
        }
        let shared = loader.load().await;
        let credentials = shared.credentials_provider();
        let mut builder = aws_sdk_s3::config::Builder::from(&shared)
            .force_path_style(cfg.force_path_style)
            .request_checksum_calculation(request_checksum)
            .response_checksum_validation(response_checksum);
        if let Some(endpoint) = cfg.endpoint_url.as_deref().filter(|e| !e.is_empty()) {
            Url::parse(endpoint)
                .map_err(|e| anyhow::anyhow!("storage.s3.endpoint_url: not a URL ({e})"))?;
            builder = builder.endpoint_url(endpoint);
        }
        Ok(Self {
            client: Client::from_conf(builder.build()),
            bucket: cfg.bucket.clone(),
            system: format!("S3 storage (bucket {})", cfg.bucket),
            // Parts grow to at least two minimum parts before they go on their own, so that at
            // a checkpoint (a slice boundary) a minimum part is usually waiting to be flushed.
            part_size: part_size.max(2 * MIN_PART_SIZE),
            part_checksums,
            credentials,
        })
    }
}

/// The SDK's own HTTPS client (rustls with aws-lc-rs), trusting `path`'s CA besides the system's.
fn https_client_trusting(
    path: &std::path::Path,
) -> anyhow::Result<aws_smithy_runtime_api::client::http::SharedHttpClient> {
    use aws_smithy_http_client::tls;
    const KEY: &str = "storage.s3.ssl_ca_path";
    let pem = crate::http_client::read_ca_pem(path, KEY).map_err(anyhow::Error::msg)?;
    let context = tls::TlsContext::builder()
        .with_trust_store(tls::TrustStore::default().with_pem_certificate(pem))
        .build()
        .map_err(|e| anyhow::anyhow!("{KEY}: {}: {e}", path.display()))?;
    Ok(aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::AwsLc,
        ))
        .tls_context(context)
        .build_https())
}

/// Maps an SDK error to a [`StorageError`]: transport failures, timeouts, throttling and 5xx are
/// retryable; everything else (403, 404, bad request, missing credentials) is permanent.
pub(super) fn sdk_error<E>(system: &str, operation: &'static str, err: SdkError<E>) -> StorageError
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    let retryable = match &err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(service) => {
            let status = service.raw().status().as_u16();
            status >= 500 || status == 408 || status == 429
        }
        _ => false,
    };
    // The error context names the S3 error code and message; it carries no credentials.
    let mut message = DisplayErrorContext(&err).to_string();
    if crate::http_client::mentions_certificate(&message) {
        // First, so that the length limit on messages never cuts it off.
        message = format!(
            "{}: {message}",
            crate::http_client::certificate_hint("storage.s3.ssl_ca_path")
        );
    }
    if retryable {
        StorageError::retryable(system, operation, message)
    } else {
        StorageError::permanent(system, operation, message)
    }
}
