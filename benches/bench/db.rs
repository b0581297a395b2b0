//! The benchmark's own databases (`logexport_bench_*`): created fresh, dropped at the end.

use std::sync::Mutex;

use anyhow::Context;
use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

/// Where the bench databases live, and which ones were created.
pub struct Databases {
    server: String,
    created: Mutex<Vec<String>>,
}

impl Databases {
    /// The server from `LOGEXPORT_BENCH_DATABASE_URL` (no database name), else the local one.
    pub fn from_env() -> Self {
        let server = std::env::var("LOGEXPORT_BENCH_DATABASE_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
        Self {
            server: server.trim_end_matches('/').to_owned(),
            created: Mutex::default(),
        }
    }

    /// The URL of `logexport_bench_<suffix>`.
    pub fn url(&self, suffix: &str) -> String {
        format!("{}/logexport_bench_{suffix}", self.server)
    }

    /// Recreates `logexport_bench_<suffix>` empty and migrated; returns its URL and a pool.
    pub async fn fresh(
        &self,
        suffix: &str,
        max_connections: u32,
    ) -> anyhow::Result<(String, PgPool)> {
        let name = format!("logexport_bench_{suffix}");
        self.drop_database(&name).await?;
        let url = self.url(suffix);
        logexport::db::ensure_database(&url).await?;
        if let Ok(mut created) = self.created.lock() {
            created.push(name);
        }
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .connect(&url)
            .await
            .with_context(|| format!("connecting to Postgres database {suffix}"))?;
        logexport::db::migrate(&pool).await?;
        Ok((url, pool))
    }

    async fn drop_database(&self, name: &str) -> anyhow::Result<()> {
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .connect(&format!("{}/postgres", self.server))
            .await
            .context("connecting to Postgres (is it running on 127.0.0.1:5432?)")?;
        // Names are our own constants; FORCE ends connections a killed run left behind.
        sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
            .execute(&admin)
            .await
            .with_context(|| format!("dropping database {name}"))?;
        admin.close().await;
        Ok(())
    }

    /// Drops every database this run created; failures are reported, not fatal.
    pub async fn drop_all(&self) {
        let names = self.created.lock().map(|c| c.clone()).unwrap_or_default();
        for name in names {
            if let Err(e) = self.drop_database(&name).await {
                eprintln!("warning: {e:#}");
            }
        }
    }
}
