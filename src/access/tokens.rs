//! The `api_tokens` table (token mode): creating, looking up, listing and revoking tokens, and
//! the short-lived cache of looked-up tokens that a revocation empties.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use base64::Engine;
use chrono::{DateTime, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};

use super::Caller;

/// The channel a revocation is announced on; every API process drops its cached tokens on it.
pub const REVOKED_CHANNEL: &str = "api_token_revoked";

fn hash(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Creates a token and stores only its hash; the token is returned once.
pub async fn create_token(
    pool: &PgPool,
    username: &str,
    admin_orgs: &[String],
    admin_repos: &[String],
    superuser: bool,
) -> anyhow::Result<String> {
    let mut raw = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut raw);
    let token = format!(
        "lxp_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
    );
    sqlx::query(
        "INSERT INTO api_tokens (id, token_hash, username, admin_orgs, admin_repos, superuser)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(uuid::Uuid::new_v4())
    .bind(hash(&token))
    .bind(username)
    .bind(admin_orgs)
    .bind(admin_repos)
    .bind(superuser)
    .execute(pool)
    .await?;
    Ok(token)
}

/// The caller `token` belongs to, if it is a live token: from `cache` when it knows the token,
/// else from the database (which records the use). Superusers reach every namespace when
/// `superuser_full_access` (`auth.superusers_full_access`).
pub async fn lookup(
    pool: &PgPool,
    cache: &TokenCache,
    token: &str,
    superuser_full_access: bool,
) -> sqlx::Result<Option<Caller>> {
    let key = hash(token);
    if let Some(caller) = cache.get(&key) {
        return Ok(Some(caller));
    }
    let generation = cache.generation();
    let caller: Option<Caller> = sqlx::query_as::<_, Caller>(
        "UPDATE api_tokens SET last_used_at = now()
         WHERE token_hash = $1 AND revoked_at IS NULL
         RETURNING username, admin_orgs, admin_repos, superuser",
    )
    .bind(&key)
    .fetch_optional(pool)
    .await?
    .map(|caller| Caller {
        superuser_full_access,
        ..caller
    });
    if let Some(caller) = &caller {
        cache.put(key, caller.clone(), generation);
    }
    Ok(caller)
}

/// The rights of `username` as the union of their live tokens; `None` when none is left. Read
/// into a [`Caller`] the way [`lookup`] reads one (for a schedule's owner, who sends no token).
pub async fn caller_from_tokens(
    conn: &mut PgConnection,
    username: &str,
) -> sqlx::Result<Option<Caller>> {
    sqlx::query_as(
        "SELECT $1::text AS username,
                ARRAY(SELECT DISTINCT o FROM api_tokens t, unnest(t.admin_orgs) o
                      WHERE t.username = $1 AND t.revoked_at IS NULL ORDER BY o) AS admin_orgs,
                ARRAY(SELECT DISTINCT r FROM api_tokens t, unnest(t.admin_repos) r
                      WHERE t.username = $1 AND t.revoked_at IS NULL ORDER BY r) AS admin_repos,
                EXISTS(SELECT 1 FROM api_tokens
                       WHERE username = $1 AND revoked_at IS NULL AND superuser) AS superuser
         WHERE EXISTS(SELECT 1 FROM api_tokens WHERE username = $1 AND revoked_at IS NULL)",
    )
    .bind(username)
    .fetch_optional(conn)
    .await
}

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

/// Known tokens for a few seconds, so a busy client costs no database round trip per request
/// for authentication. Entries are trusted only while this process listens for revocations
/// ([`REVOKED_CHANNEL`]): a revocation empties the cache at once, and without a
/// listening connection every request asks the database.
#[derive(Debug, Default)]
pub struct TokenCache {
    entries: Mutex<HashMap<Vec<u8>, (Caller, Instant)>>,
    /// True while the revocation listener is connected and listening.
    listening: std::sync::atomic::AtomicBool,
    /// Bumped on every revocation: a lookup that read the database before one does not cache.
    generation: std::sync::atomic::AtomicU64,
}

impl TokenCache {
    /// How long a looked-up token is trusted without asking the database again.
    pub const TTL: Duration = Duration::from_secs(10);
    const MAX_ENTRIES: usize = 10_000;

    /// A cache that listens for revocations on `pool` for as long as it is alive.
    pub fn start(pool: &PgPool) -> std::sync::Arc<Self> {
        let cache = std::sync::Arc::new(Self::default());
        let weak = std::sync::Arc::downgrade(&cache);
        let pool = pool.clone();
        // Without a runtime (never in the service) the cache simply stays unused.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(listen_for_revocations(pool, weak));
        }
        cache
    }

    fn get(&self, key: &[u8]) -> Option<Caller> {
        if !self.listening.load(std::sync::atomic::Ordering::Acquire) {
            return None;
        }
        let entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries
            .get(key)
            .filter(|(_, at)| at.elapsed() < Self::TTL)
            .map(|(caller, _)| caller.clone())
    }

    fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    fn put(&self, key: Vec<u8>, caller: Caller, generation: u64) {
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if generation != self.generation() {
            return;
        }
        if entries.len() >= Self::MAX_ENTRIES {
            entries.retain(|_, (_, at)| at.elapsed() < Self::TTL);
            if entries.len() >= Self::MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(key, (caller, Instant::now()));
    }

    /// Stops trusting entries (`listening` false) or starts again, forgetting every entry.
    fn set_listening(&self, listening: bool) {
        self.listening
            .store(false, std::sync::atomic::Ordering::Release);
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        entries.clear();
        drop(entries);
        if listening {
            self.listening
                .store(true, std::sync::atomic::Ordering::Release);
        }
    }
}

/// Empties `cache` on every revocation; while not connected, the cache is not trusted. Ends
/// when the cache is dropped.
async fn listen_for_revocations(pool: PgPool, cache: std::sync::Weak<TokenCache>) {
    use sqlx::postgres::PgListener;
    loop {
        let listener = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(REVOKED_CHANNEL).await?;
            Ok::<_, sqlx::Error>(listener)
        };
        let mut listener = match listener.await {
            Ok(listener) => listener,
            Err(e) => {
                tracing::debug!(error = %e, "token revocation listener not connected");
                if cache.upgrade().is_none() {
                    return;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        match cache.upgrade() {
            Some(c) => c.set_listening(true),
            None => return,
        }
        loop {
            let heard = tokio::select! {
                heard = listener.try_recv() => heard,
                () = tokio::time::sleep(Duration::from_secs(5)) => {
                    if cache.upgrade().is_none() {
                        return;
                    }
                    continue;
                }
            };
            let Some(c) = cache.upgrade() else { return };
            match heard {
                // A revocation: forget every token (revocations are rare).
                Ok(Some(_)) => c.set_listening(true),
                // The connection dropped and notifications may have been missed: trust nothing
                // until a new connection listens.
                Ok(None) | Err(_) => {
                    c.set_listening(false);
                    break;
                }
            }
        }
    }
}
