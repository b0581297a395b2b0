//! What an end-to-end export run writes: the archive format and the object store.

use std::path::Path;

use anyhow::Context;
use logexport::config::{Config, Secret, StorageKind};
use logexport::domain::Compression;
use logexport::domain::ExportFormat;

/// An archive format and compression, as `json`, `json+gzip`, `csv`, ...
#[derive(Debug, Clone, Copy)]
pub struct FormatSpec {
    pub format: ExportFormat,
    pub compression: Compression,
}

impl FormatSpec {
    /// Parses `format[+gzip|+zstd]`.
    pub fn parse(value: &str) -> anyhow::Result<Self> {
        let (format, compression) = match value.split_once('+') {
            Some((f, c)) => (f, c),
            None => (value, "none"),
        };
        Ok(Self {
            format: format
                .parse()
                .with_context(|| format!("--formats {value}"))?,
            compression: compression
                .parse()
                .with_context(|| format!("--formats {value}"))?,
        })
    }

    pub fn label(self) -> String {
        match self.compression {
            Compression::None => self.format.to_string(),
            c => format!("{}+{c}", self.format),
        }
    }
}

/// S3 settings from `LOGEXPORT_TEST_S3_*` (as `deploy/garage.sh` writes them), when all are set.
pub struct S3Env {
    pub endpoint: String,
    pub region: String,
    pub bucket: String,
    access_key: String,
    secret_key: String,
}

impl S3Env {
    pub fn from_env() -> Option<Self> {
        let get = |k: &str| std::env::var(format!("LOGEXPORT_TEST_S3_{k}")).ok();
        Some(Self {
            endpoint: get("ENDPOINT")?,
            region: get("REGION")?,
            bucket: get("BUCKET")?,
            access_key: get("ACCESS_KEY")?,
            secret_key: get("SECRET_KEY")?,
        })
    }
}

/// Where one export run writes.
pub enum Target<'a> {
    Local(&'a Path),
    S3(&'a S3Env),
}

impl Target<'_> {
    pub fn name(&self) -> &'static str {
        match self {
            Target::Local(_) => "local",
            Target::S3(_) => "s3",
        }
    }

    /// The worker's storage settings, as environment variables and as an in-process config.
    pub fn configure(&self, env: &mut Vec<(String, String)>, config: &mut Config) {
        let mut set = |k: &str, v: &str| env.push((k.to_owned(), v.to_owned()));
        config.export.object_prefix = "bench/exportedactionlogs/".into();
        set(
            "LOGEXPORT_EXPORT__OBJECT_PREFIX",
            &config.export.object_prefix,
        );
        match self {
            Target::Local(dir) => {
                set("LOGEXPORT_STORAGE__KIND", "local");
                set("LOGEXPORT_STORAGE__LOCAL__PATH", &dir.to_string_lossy());
                config.storage.kind = StorageKind::Local;
                config.storage.local.path = dir.to_path_buf();
            }
            Target::S3(s3) => {
                set("LOGEXPORT_STORAGE__KIND", "s3");
                set("LOGEXPORT_STORAGE__S3__BUCKET", &s3.bucket);
                set("LOGEXPORT_STORAGE__S3__REGION", &s3.region);
                set("LOGEXPORT_STORAGE__S3__ENDPOINT_URL", &s3.endpoint);
                set("LOGEXPORT_STORAGE__S3__FORCE_PATH_STYLE", "true");
                set("LOGEXPORT_STORAGE__S3__ACCESS_KEY_ID", &s3.access_key);
                set("LOGEXPORT_STORAGE__S3__SECRET_ACCESS_KEY", &s3.secret_key);
                config.storage.kind = StorageKind::S3;
                config.storage.s3.bucket = s3.bucket.clone();
                config.storage.s3.region = s3.region.clone();
                config.storage.s3.endpoint_url = Some(s3.endpoint.clone());
                config.storage.s3.force_path_style = true;
                config.storage.s3.access_key_id = Secret::new(s3.access_key.clone());
                config.storage.s3.secret_access_key = Secret::new(s3.secret_key.clone());
            }
        }
    }
}
