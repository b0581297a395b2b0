//! Process-wide secrets nobody configured, generated once and kept in Postgres so every
//! process of a deployment (`serve`, `work`, `run`, on any machine) shares them.
//!
//! Without this, an empty `server.signing_key` meant a random key per opened store: in one
//! `run` process the worker signed links with one key and the API checked them with another.

use anyhow::Context;
use sqlx::PgPool;

use crate::config::{Config, Secret};

/// `server.signing_key`'s stored stand-in.
const LINK_SIGNING_KEY: &str = "server.signing_key";
/// `logs.page_token_key`'s stored stand-in.
const PAGE_TOKEN_KEY: &str = "logs.page_token_key";

/// `config` with every empty shared key replaced by the deployment's stored one (created on
/// first use). A configured key is left alone and never stored.
pub async fn with_stored_secrets(pool: &PgPool, config: &Config) -> anyhow::Result<Config> {
    let mut config = config.clone();
    if config.server.signing_key.is_empty() {
        config.server.signing_key = stored_or_new(pool, LINK_SIGNING_KEY).await?;
    }
    if config.logs.page_token_key.is_empty() {
        config.logs.page_token_key = stored_or_new(pool, PAGE_TOKEN_KEY).await?;
    }
    Ok(config)
}

/// The secret stored under `name`; the first caller's random value wins a race.
async fn stored_or_new(pool: &PgPool, name: &str) -> anyhow::Result<Secret> {
    let candidate = hex::encode(rand::random::<[u8; 32]>());
    let context = || {
        format!(
            "cannot read or store {name} in Postgres (set it in the configuration, \
             or run `logexport migrate`)"
        )
    };
    // Two statements: the SELECT then sees a row a concurrent first process committed.
    sqlx::query("INSERT INTO service_secrets (name, value) VALUES ($1, $2) ON CONFLICT DO NOTHING")
        .bind(name)
        .bind(&candidate)
        .execute(pool)
        .await
        .with_context(context)?;
    let value: String = sqlx::query_scalar("SELECT value FROM service_secrets WHERE name = $1")
        .bind(name)
        .fetch_one(pool)
        .await
        .with_context(context)?;
    Ok(Secret::new(value))
}
