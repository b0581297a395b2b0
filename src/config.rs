//! Service configuration: `worker-config/logexport.toml` overridden by `LOGEXPORT_*` variables.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The default configuration file, used when present and no `--config` is given.
pub const DEFAULT_CONFIG_PATH: &str = "worker-config/logexport.toml";

/// A secret value: never printed by `Debug` or `Display`, only read through [`Secret::expose`].
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself; call only where it is sent to the system that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// True when no value was configured.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("Secret(<empty>)")
        } else {
            f.write_str("Secret(<redacted>)")
        }
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        // Environment values that look like numbers or booleans are still secrets.
        struct Text;
        impl serde::de::Visitor<'_> for Text {
            type Value = Secret;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Secret, E> {
                Ok(Secret::new(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Secret, E> {
                Ok(Secret::new(v.to_string()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Secret, E> {
                Ok(Secret::new(v.to_string()))
            }
            fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<Secret, E> {
                Ok(Secret::new(v.to_string()))
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<Secret, E> {
                Ok(Secret::new(v.to_string()))
            }
        }
        deserializer.deserialize_any(Text)
    }
}

/// The whole configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub worker: WorkerConfig,
    pub export: ExportConfig,
    pub splunk: SplunkConfig,
    pub storage: StorageConfig,
    pub email: EmailConfig,
    pub callback: CallbackConfig,
    pub logs: LogsConfig,
    pub auth: AuthConfig,
    pub audit: AuditConfig,
    pub schedule: ScheduleConfig,
}

/// `[server]`: the HTTP API.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    pub bind: SocketAddr,
    /// Base URL clients reach this service at; local-storage download links start with it.
    pub public_url: String,
    pub max_body_bytes: usize,
    /// Key for signing local-storage download links; when empty, one generated once and kept in
    /// Postgres, shared by every process of the deployment.
    pub signing_key: Secret,
    /// Reverse proxies (addresses or CIDRs) whose `X-Forwarded-For` names the caller's address.
    pub trusted_proxies: Vec<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            public_url: "http://127.0.0.1:8080".into(),
            max_body_bytes: 65536,
            signing_key: Secret::default(),
            trusted_proxies: Vec::new(),
        }
    }
}

/// `[database]`: Postgres.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    pub url: Secret,
    pub max_connections: u32,
    /// How long a query waits for a connection before Postgres counts as unreachable (503).
    pub acquire_timeout_seconds: u64,
    /// PEM file of the CA that signed Postgres' certificate (else the system's roots); used with
    /// `sslmode=verify-ca` or `verify-full` in the URL (`sslrootcert=` in the URL works too).
    pub ssl_ca_path: Option<PathBuf>,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: Secret::new("postgres://postgres@127.0.0.1:5432/logexport"),
            max_connections: 10,
            acquire_timeout_seconds: 10,
            ssl_ca_path: None,
        }
    }
}

/// `[worker]`: the queue and the worker pool.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    pub concurrency: usize,
    pub lease_seconds: u64,
    pub max_attempts: u32,
    pub backoff_base_seconds: u64,
    pub backoff_max_seconds: u64,
    pub poll_interval_ms: u64,
    pub per_namespace_limit: u32,
    pub max_work_seconds: u64,
    pub shutdown_grace_seconds: u64,
    pub job_retention_days: u32,
    /// How often housekeeping (retention, object expiry, stale uploads) runs.
    pub housekeeping_interval_seconds: u64,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            concurrency: 4,
            lease_seconds: 60,
            max_attempts: 3,
            backoff_base_seconds: 30,
            backoff_max_seconds: 900,
            poll_interval_ms: 1000,
            per_namespace_limit: 1,
            max_work_seconds: 7200,
            shutdown_grace_seconds: 30,
            job_retention_days: 30,
            housekeeping_interval_seconds: 300,
        }
    }
}

/// `[export]`: request limits and the archive.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ExportConfig {
    pub default_format: String,
    pub default_compression: String,
    pub max_range_days: u32,
    pub url_expiry_seconds: u64,
    pub object_retention_seconds: u64,
    pub object_prefix: String,
    /// Incomplete multipart uploads under the prefix older than this are aborted.
    pub stale_upload_seconds: u64,
    /// Time slices an export's range is cut into, read up to `splunk.max_concurrent_searches`
    /// at once.
    pub slices: u32,
    /// Once every slice is being read, an idle search splits the busiest one when at least this
    /// many of its rows are still to come; 0: never split.
    pub split_min_rows: u64,
    /// The newest rows read by one search before an export's range is sliced, so the plan fits
    /// the export's size (a small export is read by one or two searches); 0: slice by time only.
    pub probe_rows: u64,
    /// Where slices read ahead wait for their turn (default: the system temp dir).
    pub spool_dir: Option<PathBuf>,
    /// Read-ahead slices on disk per export before their readers wait, in MiB.
    pub spool_max_mib: u64,
    /// Ed25519 seed (base64url) that signs each archive's manifest; empty: unsigned manifests.
    pub manifest_signing_key: Secret,
    /// Public keys (base64url or JWK) of earlier signing keys, still served for verification.
    pub manifest_previous_public_keys: Vec<String>,
    /// RFC 3161 time-stamp authority each manifest is time-stamped by; empty: none.
    pub timestamp_authority_url: String,
    /// PEM file of the TSA's CA: tokens are checked against it before they are accepted.
    pub timestamp_authority_ca: Option<PathBuf>,
    /// A private CA (PEM) trusted besides the system's for the TSA's HTTPS connection.
    pub timestamp_authority_ssl_ca_path: Option<PathBuf>,
    /// Connect and answer timeout of one request to the TSA.
    pub timestamp_authority_timeout_seconds: u64,
}

impl Default for ExportConfig {
    fn default() -> Self {
        Self {
            default_format: "json".into(),
            default_compression: "none".into(),
            max_range_days: 366,
            url_expiry_seconds: 3600,
            object_retention_seconds: 3600,
            object_prefix: "exportedactionlogs/".into(),
            stale_upload_seconds: 86400,
            slices: 48,
            split_min_rows: 20_000,
            probe_rows: 2_000,
            spool_dir: None,
            spool_max_mib: 2048,
            manifest_signing_key: Secret::default(),
            manifest_previous_public_keys: Vec::new(),
            timestamp_authority_url: String::new(),
            timestamp_authority_ca: None,
            timestamp_authority_ssl_ca_path: None,
            timestamp_authority_timeout_seconds: 10,
        }
    }
}

/// `[splunk]`: mirrors Quay's `LOGS_MODEL_CONFIG.splunk_config`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SplunkConfig {
    pub host: String,
    pub port: u16,
    pub url_scheme: String,
    pub bearer_token: Secret,
    pub verify_ssl: bool,
    pub ssl_ca_path: Option<PathBuf>,
    /// The exact index name searched (Quay's naming).
    pub index_prefix: String,
    pub sourcetype: Option<String>,
    pub search_timeout_seconds: u64,
    pub export_batch_size: u32,
    pub connect_timeout_seconds: u64,
    /// Longest silence tolerated on an open response before it counts as a dead connection.
    pub read_timeout_seconds: u64,
    pub max_retries: u32,
    /// Searches running at once across every worker and API process (Splunk's role quota,
    /// `srchJobsQuota`); 0 turns the cluster-wide limit off.
    pub max_concurrent_searches: u32,
}

impl Default for SplunkConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 8089,
            url_scheme: "https".into(),
            bearer_token: Secret::default(),
            verify_ssl: true,
            ssl_ca_path: None,
            index_prefix: "quay_logs".into(),
            sourcetype: None,
            search_timeout_seconds: 60,
            export_batch_size: 5000,
            connect_timeout_seconds: 10,
            read_timeout_seconds: 300,
            max_retries: 4,
            max_concurrent_searches: 3,
        }
    }
}

/// Which object store holds the archives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageKind {
    S3,
    Local,
}

/// `[storage]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    pub kind: StorageKind,
    pub local: LocalStorageConfig,
    pub s3: S3Config,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            kind: StorageKind::Local,
            local: LocalStorageConfig::default(),
            s3: S3Config::default(),
        }
    }
}

/// `[storage.local]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LocalStorageConfig {
    pub path: PathBuf,
}

impl Default for LocalStorageConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("exported-logs"),
        }
    }
}

/// `[storage.s3]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct S3Config {
    pub bucket: String,
    pub region: String,
    pub endpoint_url: Option<String>,
    pub force_path_style: bool,
    /// Static credentials; when empty the AWS environment/profile chain is used.
    pub access_key_id: Secret,
    pub secret_access_key: Secret,
    pub part_size_mib: u64,
    /// `when_required` or `when_supported`.
    pub checksum: String,
    /// PEM file of the CA that signed an `https://` endpoint's certificate, trusted besides the
    /// system's roots.
    pub ssl_ca_path: Option<PathBuf>,
}

impl Default for S3Config {
    fn default() -> Self {
        Self {
            bucket: String::new(),
            region: "us-east-1".into(),
            endpoint_url: None,
            force_path_style: false,
            access_key_id: Secret::default(),
            secret_access_key: Secret::default(),
            part_size_mib: 8,
            checksum: "when_required".into(),
            ssl_ca_path: None,
        }
    }
}

/// `[email]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EmailConfig {
    /// `smtp`, `file` or `none`.
    pub transport: String,
    /// `smtp://` (plain), `smtp://...?tls=required` (STARTTLS) or `smtps://` (implicit TLS);
    /// credentials may be given as `user:password@`.
    pub smtp_url: Secret,
    pub from: String,
    pub registry_title: String,
    pub file_dir: PathBuf,
    pub timeout_seconds: u64,
    pub max_attempts: u32,
    /// PEM file of the CA that signed the SMTP server's certificate (STARTTLS or `smtps://`),
    /// trusted besides the system's roots.
    pub ssl_ca_path: Option<PathBuf>,
}

impl Default for EmailConfig {
    fn default() -> Self {
        Self {
            transport: "smtp".into(),
            smtp_url: Secret::new("smtp://127.0.0.1:1025"),
            from: "Project Quay <noreply@quay.local>".into(),
            registry_title: "Project Quay".into(),
            file_dir: PathBuf::from("exported-mail"),
            timeout_seconds: 30,
            max_attempts: 8,
            ssl_ca_path: None,
        }
    }
}

/// `[callback]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CallbackConfig {
    pub timeout_seconds: u64,
    pub max_attempts: u32,
    pub signing_secret: Secret,
    /// Hosts or CIDRs exempt from the internal-address guard (e.g. `127.0.0.1/32` in tests).
    pub allowed_hosts: Vec<String>,
    pub backoff_base_seconds: u64,
    pub backoff_max_seconds: u64,
    /// PEM file of a CA trusted for `https://` callback receivers besides the system's roots.
    pub ssl_ca_path: Option<PathBuf>,
}

impl Default for CallbackConfig {
    fn default() -> Self {
        Self {
            timeout_seconds: 10,
            max_attempts: 8,
            signing_secret: Secret::default(),
            allowed_hosts: Vec::new(),
            backoff_base_seconds: 5,
            backoff_max_seconds: 600,
            ssl_ca_path: None,
        }
    }
}

/// `[logs]`: the read side (logs and aggregatelogs listing).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogsConfig {
    /// Key for encrypting `next_page` tokens; when empty, one generated once and kept in
    /// Postgres, so tokens survive restarts and cross replicas.
    pub page_token_key: Secret,
    pub page_size: u32,
    pub max_aggregate_days: u32,
}

impl Default for LogsConfig {
    fn default() -> Self {
        Self {
            page_token_key: Secret::default(),
            page_size: 20,
            max_aggregate_days: 32,
        }
    }
}

/// How callers authenticate.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// logexport's own bearer tokens (`logexport token create`).
    #[default]
    Tokens,
    /// The Quay instance at `auth.quay_url` vouches for each caller's own Quay credential.
    Quay,
}

/// `[auth]`: who the caller is and what it administers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    pub mode: AuthMode,
    /// Base URL of the Quay instance (quay mode), e.g. `https://quay.example.com`.
    pub quay_url: String,
    pub verify_ssl: bool,
    pub ssl_ca_path: Option<PathBuf>,
    pub timeout_seconds: u64,
    /// How long Quay's answer about one credential is reused.
    pub cache_seconds: u64,
    /// Credentials remembered at most (the cache is bounded).
    pub cache_max_entries: u64,
    /// Origins a cookie-authenticated request that changes state may come from; empty = the
    /// origin of `quay_url`.
    pub allowed_origins: Vec<String>,
    /// Quay's `FEATURE_SUPERUSERS_FULL_ACCESS`: superusers reach every namespace. Unset: on in
    /// token mode (the operator granted the flag for that), off in quay mode (Quay's default).
    pub superusers_full_access: Option<bool>,
    /// Quay mode: logexport's own Quay OAuth token, to re-check a schedule owner's rights before
    /// each run: a global read-only superuser's (any scope), or, when Quay runs with
    /// `FEATURE_SUPERUSERS_FULL_ACCESS`, a superuser's with the `super:user` scope. Tried at start.
    pub quay_service_token: Secret,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            mode: AuthMode::Tokens,
            quay_url: String::new(),
            verify_ssl: true,
            ssl_ca_path: None,
            timeout_seconds: 5,
            cache_seconds: 30,
            cache_max_entries: 10_000,
            allowed_origins: Vec::new(),
            superusers_full_access: None,
            quay_service_token: Secret::default(),
        }
    }
}

impl AuthConfig {
    /// Whether superusers reach every namespace, with the mode's default applied.
    pub fn superusers_full_access(&self) -> bool {
        self.superusers_full_access
            .unwrap_or(self.mode == AuthMode::Tokens)
    }

    /// The origins allowed for cookie-authenticated changes (see `allowed_origins`).
    pub fn origins(&self) -> Vec<String> {
        if !self.allowed_origins.is_empty() {
            return self
                .allowed_origins
                .iter()
                .map(|o| o.trim_end_matches('/').to_owned())
                .collect();
        }
        url::Url::parse(&self.quay_url)
            .map(|u| vec![u.origin().ascii_serialization()])
            .unwrap_or_default()
    }
}

/// Where the audit trail of export requests goes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditSink {
    #[default]
    None,
    /// Splunk HTTP Event Collector, in the shape Quay's Splunk log producers write.
    Hec,
}

/// `[audit]`: Quay's `export_logs_success` / `export_logs_failure` events.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    pub sink: AuditSink,
    /// e.g. `https://splunk.example.com:8088/services/collector/event`.
    pub hec_url: String,
    pub hec_token: Secret,
    /// Empty: the HEC token's default index.
    pub index: String,
    pub sourcetype: String,
    /// `host` of the events; empty: the host of `server.public_url`.
    pub host: String,
    pub verify_ssl: bool,
    pub ssl_ca_path: Option<PathBuf>,
    pub timeout_seconds: u64,
    pub backoff_base_seconds: u64,
    pub backoff_max_seconds: u64,
    /// How often idle audit delivery looks for due events when nothing wakes it.
    pub poll_interval_ms: u64,
}

impl Default for AuditConfig {
    fn default() -> Self {
        Self {
            sink: AuditSink::None,
            hec_url: String::new(),
            hec_token: Secret::default(),
            index: String::new(),
            sourcetype: "access_combined".into(),
            host: String::new(),
            verify_ssl: true,
            ssl_ca_path: None,
            timeout_seconds: 10,
            backoff_base_seconds: 2,
            backoff_max_seconds: 300,
            poll_interval_ms: 1000,
        }
    }
}

/// `[schedule]`: the scheduler of scheduled exports, run by the worker processes.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScheduleConfig {
    /// Whether this worker process runs the scheduler (any number of processes may).
    pub enabled: bool,
    /// How often the scheduler looks for closed periods.
    pub interval_seconds: u64,
    /// Most missed periods of one schedule exported after downtime; older ones are skipped and
    /// reported in the schedule's status.
    pub max_catch_up_periods: u32,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            interval_seconds: 30,
            max_catch_up_periods: 31,
        }
    }
}

/// A configuration that could not be loaded; the message names the offending key.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {0}")]
pub struct ConfigError(String);

impl Config {
    /// Loads defaults, then the TOML file (the given one, or the default path when present),
    /// then `LOGEXPORT_*` and `DATABASE_URL` from the environment.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        match path {
            Some(path) => {
                if !path.exists() {
                    return Err(ConfigError(format!(
                        "config file {} does not exist",
                        path.display()
                    )));
                }
                figment = figment.merge(Toml::file(path));
            }
            None if Path::new(DEFAULT_CONFIG_PATH).exists() => {
                figment = figment.merge(Toml::file(DEFAULT_CONFIG_PATH));
            }
            None => {}
        }
        if let Ok(url) = std::env::var("DATABASE_URL") {
            figment = figment.merge(Serialized::default("database.url", url));
        }
        // Only LOGEXPORT_<SECTION>__<KEY>: other LOGEXPORT_* variables (LOGEXPORT_LOG_FORMAT,
        // Kubernetes service links such as LOGEXPORT_API_PORT) are not configuration keys.
        figment = figment.merge(
            Env::prefixed("LOGEXPORT_")
                .filter(|key| key.as_str().contains("__"))
                .split("__"),
        );
        let config: Config = figment.extract().map_err(|e| ConfigError(describe(e)))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks the relations between keys that serde cannot express.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let fail = |key: &str, why: &str| Err(ConfigError(format!("{key}: {why}")));
        if self.worker.concurrency == 0 {
            return fail("worker.concurrency", "must be at least 1");
        }
        if self.worker.lease_seconds < 3 {
            return fail("worker.lease_seconds", "must be at least 3");
        }
        if self.worker.max_attempts == 0 {
            return fail("worker.max_attempts", "must be at least 1");
        }
        if self.worker.per_namespace_limit == 0 {
            return fail("worker.per_namespace_limit", "must be at least 1");
        }
        if !matches!(
            self.export.default_format.as_str(),
            "json" | "ndjson" | "csv"
        ) {
            return fail("export.default_format", "must be json, ndjson or csv");
        }
        if !matches!(
            self.export.default_compression.as_str(),
            "none" | "gzip" | "zstd"
        ) {
            return fail("export.default_compression", "must be none, gzip or zstd");
        }
        let signing_key = self.export.manifest_signing_key.expose();
        if !signing_key.is_empty()
            && let Err(e) = crate::archive::ManifestKey::parse(signing_key)
        {
            return fail("export.manifest_signing_key", &e.to_string());
        }
        for key in &self.export.manifest_previous_public_keys {
            if let Err(e) = crate::archive::PublicKey::parse(key) {
                return fail("export.manifest_previous_public_keys", &e.to_string());
            }
        }
        let tsa = self.export.timestamp_authority_url.trim();
        if !tsa.is_empty()
            && !url::Url::parse(tsa).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
        {
            return fail(
                "export.timestamp_authority_url",
                "must be an http(s) URL of an RFC 3161 time-stamp authority",
            );
        }
        if self.export.max_range_days == 0 {
            return fail("export.max_range_days", "must be at least 1");
        }
        if self.auth.mode == AuthMode::Quay {
            match url::Url::parse(&self.auth.quay_url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {}
                _ => {
                    return fail(
                        "auth.quay_url",
                        "an http(s) URL of the Quay instance is required when auth.mode = \"quay\"",
                    );
                }
            }
            if self.auth.timeout_seconds == 0 {
                return fail("auth.timeout_seconds", "must be at least 1");
            }
        }
        for origin in &self.auth.allowed_origins {
            if url::Url::parse(origin).map_or(true, |u| u.host().is_none()) {
                return fail(
                    "auth.allowed_origins",
                    &format!("{origin:?} is not an origin such as https://quay.example.com"),
                );
            }
        }
        for proxy in &self.server.trusted_proxies {
            if crate::domain::parse_net(proxy).is_none() {
                return fail(
                    "server.trusted_proxies",
                    &format!("{proxy:?} is not an address or CIDR"),
                );
            }
        }
        if self.audit.sink == AuditSink::Hec {
            if url::Url::parse(&self.audit.hec_url)
                .map_or(true, |u| !matches!(u.scheme(), "http" | "https"))
            {
                return fail(
                    "audit.hec_url",
                    "an http(s) URL is required when audit.sink = \"hec\"",
                );
            }
            if self.audit.hec_token.expose().is_empty() {
                return fail("audit.hec_token", "required when audit.sink = \"hec\"");
            }
        }
        self.validate_addresses()?;
        self.validate_ca_files()?;
        if !matches!(self.splunk.url_scheme.as_str(), "http" | "https") {
            return fail("splunk.url_scheme", "must be http or https");
        }
        if self.storage.kind == StorageKind::S3 {
            if self.storage.s3.bucket.is_empty() {
                return fail("storage.s3.bucket", "required when storage.kind = \"s3\"");
            }
            if self.storage.s3.part_size_mib < 5 {
                return fail(
                    "storage.s3.part_size_mib",
                    "S3 needs parts of at least 5 MiB",
                );
            }
        }
        if !matches!(
            self.storage.s3.checksum.as_str(),
            "when_required" | "when_supported"
        ) {
            return fail(
                "storage.s3.checksum",
                "must be when_required or when_supported",
            );
        }
        if !matches!(self.email.transport.as_str(), "smtp" | "file" | "none") {
            return fail("email.transport", "must be smtp, file or none");
        }
        if self.logs.page_size == 0 {
            return fail("logs.page_size", "must be at least 1");
        }
        if self.schedule.interval_seconds == 0 {
            return fail("schedule.interval_seconds", "must be at least 1");
        }
        if self.schedule.max_catch_up_periods == 0 {
            return fail("schedule.max_catch_up_periods", "must be at least 1");
        }
        Ok(())
    }
}

impl Config {
    /// Every URL, CIDR and address key, so a typo stops start-up instead of surfacing later
    /// (a housekeeping warning, a failed send, an exit after "API listening").
    fn validate_addresses(&self) -> Result<(), ConfigError> {
        let fail = |key: &str, why: String| Err(ConfigError(format!("{key}: {why}")));
        if let Err(why) = http_url(&self.server.public_url) {
            return fail("server.public_url", why);
        }
        if let Err(why) = secret_url(self.database.url.expose(), &["postgres", "postgresql"]) {
            return fail("database.url", why);
        }
        if let Err(why) = host_name(&self.splunk.host) {
            return fail("splunk.host", why);
        }
        if let Some(endpoint) = self.storage.s3.endpoint_url.as_deref()
            && !endpoint.is_empty()
            && let Err(why) = http_url(endpoint)
        {
            return fail("storage.s3.endpoint_url", why);
        }
        if self.email.transport == "smtp"
            && let Err(why) = secret_url(self.email.smtp_url.expose(), &["smtp", "smtps"])
        {
            return fail(
                "email.smtp_url",
                format!(
                    "{why}; expected smtp://host:port, smtp://host:port?tls=required or \
                     smtps://host:port"
                ),
            );
        }
        for entry in &self.callback.allowed_hosts {
            let entry = entry.trim();
            let valid = if entry.contains('/') {
                entry.parse::<ipnet::IpNet>().is_ok()
            } else {
                entry.parse::<std::net::IpAddr>().is_ok() || host_name(entry).is_ok()
            };
            if !valid {
                return fail(
                    "callback.allowed_hosts",
                    format!(
                        "{entry:?} is not a host name, an address or a CIDR such as 10.0.0.0/8"
                    ),
                );
            }
        }
        if !self.audit.hec_url.is_empty()
            && let Err(why) = http_url(&self.audit.hec_url)
        {
            return fail("audit.hec_url", why);
        }
        if !self.auth.quay_url.is_empty()
            && let Err(why) = http_url(&self.auth.quay_url)
        {
            return fail("auth.quay_url", why);
        }
        Ok(())
    }
}

impl Config {
    /// Every CA file, keyed by its setting: the TLS clients' and the time-stamp tokens' one.
    pub fn ca_files(&self) -> Vec<(&'static str, &Path)> {
        [
            ("database.ssl_ca_path", &self.database.ssl_ca_path),
            ("splunk.ssl_ca_path", &self.splunk.ssl_ca_path),
            ("storage.s3.ssl_ca_path", &self.storage.s3.ssl_ca_path),
            ("email.ssl_ca_path", &self.email.ssl_ca_path),
            ("callback.ssl_ca_path", &self.callback.ssl_ca_path),
            ("auth.ssl_ca_path", &self.auth.ssl_ca_path),
            ("audit.ssl_ca_path", &self.audit.ssl_ca_path),
            (
                "export.timestamp_authority_ca",
                &self.export.timestamp_authority_ca,
            ),
            (
                "export.timestamp_authority_ssl_ca_path",
                &self.export.timestamp_authority_ssl_ca_path,
            ),
        ]
        .into_iter()
        .filter_map(|(key, path)| path.as_deref().map(|p| (key, p)))
        .collect()
    }

    /// A CA file that is missing or holds no certificate stops start-up, not the first export.
    fn validate_ca_files(&self) -> Result<(), ConfigError> {
        for (key, path) in self.ca_files() {
            crate::http_client::read_ca(path, key).map_err(|e| ConfigError(e.to_string()))?;
        }
        Ok(())
    }
}

/// An absolute http(s) URL with a host.
fn http_url(text: &str) -> Result<(), String> {
    match url::Url::parse(text) {
        Ok(u)
            if matches!(u.scheme(), "http" | "https")
                && u.host_str().is_some_and(|h| !h.is_empty()) =>
        {
            Ok(())
        }
        Ok(_) => Err(format!(
            "{text:?} is not an http(s) URL with a host, such as https://logs.example.com"
        )),
        Err(e) => Err(format!("{text:?} is not a URL ({e})")),
    }
}

/// A URL that may carry a password: checked for its scheme and host, never echoed.
fn secret_url(text: &str, schemes: &[&str]) -> Result<(), String> {
    match url::Url::parse(text) {
        Ok(u) if schemes.contains(&u.scheme()) && u.host_str().is_some_and(|h| !h.is_empty()) => {
            Ok(())
        }
        Ok(u) => Err(format!(
            "the URL's scheme is {:?} and it {}; expected {}://host",
            u.scheme(),
            if u.host_str().is_some_and(|h| !h.is_empty()) {
                "has a host"
            } else {
                "has no host"
            },
            schemes[0]
        )),
        Err(e) => Err(format!("not a URL ({e})")),
    }
}

/// A DNS name or an IP address (no scheme, port or path).
fn host_name(text: &str) -> Result<(), String> {
    if text.parse::<std::net::IpAddr>().is_ok() {
        return Ok(());
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && !l.starts_with('-')
            && !l.ends_with('-')
            && l.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    };
    let name = text.strip_suffix('.').unwrap_or(text);
    if !name.is_empty() && name.len() <= 253 && name.split('.').all(label_ok) {
        Ok(())
    } else {
        Err(format!(
            "{text:?} is not a host name or an address (no scheme, port or path)"
        ))
    }
}

fn describe(error: figment::Error) -> String {
    let mut lines = Vec::new();
    for e in error {
        let key = if e.path.is_empty() {
            String::from("<root>")
        } else {
            e.path.join(".")
        };
        lines.push(format!("{key}: {}", e.kind));
    }
    lines.join("; ")
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closure signature is fixed
mod tests {
    use super::*;

    #[test]
    fn secrets_are_redacted_in_debug_output() {
        let mut config = Config::default();
        config.splunk.bearer_token = Secret::new("super-secret-token");
        let printed = format!("{config:?}");
        assert!(!printed.contains("super-secret-token"));
        assert!(printed.contains("<redacted>"));
    }

    #[test]
    fn defaults_are_valid() {
        Config::default().validate().expect("defaults validate");
    }

    #[test]
    fn environment_overrides_name_the_bad_key() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("LOGEXPORT_WORKER__CONCURRENCY", "lots");
            let err = Config::load(None).expect_err("non-numeric concurrency");
            assert!(err.to_string().contains("worker.concurrency"), "{err}");
            Ok(())
        });
    }

    #[test]
    fn other_logexport_variables_and_numeric_secrets_are_accepted() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("LOGEXPORT_LOG_FORMAT", "json");
            jail.set_env("LOGEXPORT_API_PORT", "tcp://10.0.0.1:8080");
            jail.set_env("LOGEXPORT_SPLUNK__BEARER_TOKEN", "123456");
            let config = Config::load(None).expect("valid");
            assert_eq!(config.splunk.bearer_token.expose(), "123456");
            Ok(())
        });
    }

    /// The message `Config::validate` gives for a configuration `change` makes from the defaults.
    fn refusal(change: impl FnOnce(&mut Config)) -> String {
        let mut config = Config::default();
        change(&mut config);
        config.validate().expect_err("refused").to_string()
    }

    #[test]
    fn a_bad_url_cidr_or_address_is_refused_at_load_naming_the_key() {
        type Change = Box<dyn FnOnce(&mut Config)>;
        let cases: Vec<(&str, Change)> = vec![
            (
                "storage.s3.endpoint_url",
                Box::new(|c| c.storage.s3.endpoint_url = Some("htp:/bad".into())),
            ),
            (
                "callback.allowed_hosts",
                Box::new(|c| c.callback.allowed_hosts = vec!["10.0.0.0/33".into()]),
            ),
            (
                "server.public_url",
                Box::new(|c| c.server.public_url = "not a url".into()),
            ),
            (
                "email.smtp_url",
                Box::new(|c| c.email.smtp_url = Secret::new("http://x")),
            ),
            (
                "database.url",
                Box::new(|c| c.database.url = Secret::new("mysql://u:hunter2@db/x")),
            ),
            (
                "splunk.host",
                Box::new(|c| c.splunk.host = "https://splunk.example.com:8089".into()),
            ),
            (
                "audit.hec_url",
                Box::new(|c| c.audit.hec_url = "splunk:8088".into()),
            ),
        ];
        for (key, change) in cases {
            let message = refusal(change);
            assert!(
                message.starts_with(&format!("invalid configuration: {key}: ")),
                "{message}"
            );
            assert!(!message.contains("hunter2"), "{message}");
        }
    }

    #[test]
    fn good_addresses_pass() {
        let mut config = Config::default();
        config.storage.s3.endpoint_url = Some("http://127.0.0.1:3900".into());
        config.callback.allowed_hosts = vec![
            "127.0.0.1/32".into(),
            "::1".into(),
            "hooks.example.com".into(),
            "10.1.2.3".into(),
        ];
        config.email.smtp_url = Secret::new("smtps://user:pw@mail.example.com:465");
        config.splunk.host = "splunk-1.internal".into();
        config.validate().expect("valid");
        // A transport that does not use SMTP does not need a usable smtp_url.
        config.email.transport = "none".into();
        config.email.smtp_url = Secret::new("http://x");
        config.validate().expect("valid without SMTP");
    }

    #[test]
    fn a_bad_address_in_the_environment_stops_loading() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("LOGEXPORT_SERVER__PUBLIC_URL", "not a url");
            let err = Config::load(None).expect_err("refused");
            assert!(
                err.to_string()
                    .starts_with("invalid configuration: server.public_url: "),
                "{err}"
            );
            Ok(())
        });
    }

    #[test]
    fn nested_environment_overrides_apply() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("LOGEXPORT_STORAGE__KIND", "s3");
            jail.set_env("LOGEXPORT_STORAGE__S3__BUCKET", "exports");
            let config = Config::load(None).expect("valid");
            assert_eq!(config.storage.kind, StorageKind::S3);
            assert_eq!(config.storage.s3.bucket, "exports");
            Ok(())
        });
    }
}

#[cfg(test)]
#[allow(clippy::result_large_err)] // figment::Jail's closure signature is fixed
mod file_tests {
    use super::*;

    #[test]
    fn shipped_config_files_parse_and_document_every_key() {
        let root = env!("CARGO_MANIFEST_DIR");
        for file in ["worker-config/logexport.toml", "worker-config/dev.toml"] {
            let path = Path::new(root).join(file);
            figment::Jail::expect_with(|_| {
                Config::load(Some(&path)).map_err(|e| e.to_string())?;
                Ok(())
            });
        }
        let documented =
            std::fs::read_to_string(Path::new(root).join("worker-config/logexport.toml")).unwrap();
        let defaults = toml_keys(&serde_json::to_value(Config::default()).unwrap(), "");
        for key in defaults {
            let leaf = key.rsplit('.').next().unwrap();
            assert!(
                documented.contains(&format!("{leaf} ="))
                    || documented.contains(&format!("# {leaf} =")),
                "worker-config/logexport.toml does not document {key}"
            );
        }
    }

    fn toml_keys(value: &serde_json::Value, prefix: &str) -> Vec<String> {
        match value {
            serde_json::Value::Object(map) => map
                .iter()
                .flat_map(|(k, v)| {
                    let path = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    match v {
                        serde_json::Value::Object(_) => toml_keys(v, &path),
                        _ => vec![path],
                    }
                })
                .collect(),
            _ => Vec::new(),
        }
    }
}
