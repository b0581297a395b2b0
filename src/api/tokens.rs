//! The operator's side of API tokens: `logexport token list` and `logexport token revoke`.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// The channel a revocation is announced on; every API process drops its cached tokens on it.
pub const REVOKED_CHANNEL: &str = "api_token_revoked";

/// One token as the operator sees it; the secret itself is never stored, let alone shown.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TokenInfo {
    pub id: uuid::Uuid,
    pub username: String,
    pub admin_orgs: Vec<String>,
    pub admin_repos: Vec<String>,
    pub superuser: bool,
    pub created_at: DateTime<Utc>,
    pub last_used_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl TokenInfo {
    /// The token's rights in `token create`'s words.
    pub fn rights(&self) -> String {
        let mut rights = Vec::new();
        if self.superuser {
            rights.push("superuser".to_owned());
        }
        rights.extend(self.admin_orgs.iter().map(|o| format!("admin-org {o}")));
        rights.extend(self.admin_repos.iter().map(|r| format!("admin-repo {r}")));
        if rights.is_empty() {
            rights.push("own namespace".to_owned());
        }
        rights.join(", ")
    }
}

/// Every token, oldest first.
pub async fn list_tokens(pool: &PgPool) -> Result<Vec<TokenInfo>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, username, admin_orgs, admin_repos, superuser, created_at, last_used_at,
                revoked_at
         FROM api_tokens ORDER BY created_at, id",
    )
    .fetch_all(pool)
    .await
}

/// What `revoke_token` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Revoked {
    /// Revoked now; every API process forgets it at once.
    Now,
    /// It was revoked before.
    Already,
    /// No token has this id.
    Unknown,
}

/// Revokes the token `id` and announces it, in one transaction: the announcement goes out with
/// the commit, so no process can read the token as valid after hearing it.
pub async fn revoke_token(pool: &PgPool, id: uuid::Uuid) -> Result<Revoked, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let before: Option<Option<DateTime<Utc>>> =
        sqlx::query_scalar("SELECT revoked_at FROM api_tokens WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    let outcome = match before {
        None => Revoked::Unknown,
        Some(Some(_)) => Revoked::Already,
        Some(None) => {
            sqlx::query("UPDATE api_tokens SET revoked_at = now() WHERE id = $1")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            Revoked::Now
        }
    };
    // Announced even when it was revoked before: a process that missed that one forgets it now.
    if outcome != Revoked::Unknown {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(REVOKED_CHANNEL)
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(outcome)
}
