//! Every SQL statement on `export_chains` and `manifest_signing_keys`, and the one write that
//! seals an export into its namespace's chain (`export_jobs.chain_sequence`), fenced like the
//! queue's other worker writes.
//!
//! Sealing happens once the archive is complete: in one transaction the namespace's head row is
//! locked (`FOR UPDATE`), the next number taken, the manifest built and signed around it, and
//! the number, the manifest and the new head written. Concurrent exports of one namespace wait
//! for each other there, so numbers are consecutive; a retried or resumed finish finds its
//! number on the export and reuses it. Nothing before sealing takes a number, so a failed or
//! cancelled export leaves no gap; after sealing the export can only succeed (see
//! [`is_sealed`] and the runner).

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::archive::Manifest;
use crate::archive::manifest::{KeyWindow, ManifestChain, ManifestSchedule, PublicKey};
use crate::domain::ExportId;

/// What the manifest of a new link is built from.
#[derive(Debug, Clone)]
pub struct Link {
    pub chain: ManifestChain,
    pub schedule: Option<ManifestSchedule>,
    /// The signing time, whole seconds, taken under the head's lock: links' times never go back.
    pub signed_at: DateTime<Utc>,
}

/// An export sealed into its chain.
#[derive(Debug, Clone)]
pub struct Sealed {
    pub manifest: Manifest,
    pub object_key: String,
    pub logs_skipped: u64,
}

/// What the archive's upload produced, recorded with the seal.
#[derive(Debug, Clone, Copy)]
pub struct Archived<'a> {
    pub object_key: &'a str,
    pub logs: u64,
    pub logs_skipped: u64,
    pub bytes: u64,
    pub sha256: &'a str,
}

/// The export's namespace, link number, manifest, object key and skipped-row count.
type SealRow = (
    String,
    Option<i64>,
    Option<serde_json::Value>,
    Option<String>,
    i64,
);

/// A scheduled export's schedule, its period length and the period's bounds.
type ScheduleRow = (Uuid, Option<String>, DateTime<Utc>, DateTime<Utc>);

/// Seals export `id` (attempt `attempt`, fenced) as the next link of `namespace`'s chain, with
/// the manifest `build` makes for the link (signed by `key`, whose use is recorded in the key
/// history). When the export was sealed already (a retried finish), returns that seal and
/// builds nothing. `None`: fenced out.
pub async fn seal(
    pool: &PgPool,
    id: ExportId,
    attempt: i32,
    archived: Archived<'_>,
    key: Option<&PublicKey>,
    build: impl FnOnce(Link) -> Manifest,
) -> sqlx::Result<Option<Sealed>> {
    let mut tx = pool.begin().await?;
    let row: Option<SealRow> = sqlx::query_as(
        "SELECT namespace, chain_sequence, manifest, object_key, logs_skipped FROM export_jobs
             WHERE id = $1 AND attempt = $2 AND state = 'running'
             FOR UPDATE",
    )
    .bind(id.0)
    .bind(attempt)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((namespace, sequence, manifest, object_key, skipped)) = row else {
        return Ok(None);
    };
    if let (Some(_), Some(manifest), Some(object_key)) = (sequence, manifest, object_key) {
        let manifest = serde_json::from_value(manifest)
            .map_err(|e| sqlx::Error::Decode(format!("the sealed manifest: {e}").into()))?;
        return Ok(Some(Sealed {
            manifest,
            object_key,
            logs_skipped: skipped.max(0) as u64,
        }));
    }
    sqlx::query("INSERT INTO export_chains (namespace) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(&namespace)
        .execute(&mut *tx)
        .await?;
    let (last, previous, signed_at): (i64, Option<String>, DateTime<Utc>) = sqlx::query_as(
        "SELECT sequence, manifest_sha256, date_trunc('second', clock_timestamp())
         FROM export_chains WHERE namespace = $1 FOR UPDATE",
    )
    .bind(&namespace)
    .fetch_one(&mut *tx)
    .await?;
    let schedule: Option<ScheduleRow> = sqlx::query_as(
        "SELECT r.schedule_id, s.period, r.period_start, r.period_end
         FROM schedule_runs r LEFT JOIN export_schedules s ON s.id = r.schedule_id
         WHERE r.export_id = $1",
    )
    .bind(id.0)
    .fetch_optional(&mut *tx)
    .await?;
    let rfc3339 = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let sequence = last + 1;
    let manifest = build(Link {
        chain: ManifestChain {
            namespace: namespace.clone(),
            sequence: sequence as u64,
            previous_manifest_sha256: previous,
        },
        schedule: schedule.map(|(id, period, start, end)| ManifestSchedule {
            id: id.to_string(),
            period: period.unwrap_or_default(),
            period_start: rfc3339(start),
            period_end: rfc3339(end),
        }),
        signed_at,
    });
    sqlx::query(
        "UPDATE export_chains SET sequence = $2, manifest_sha256 = $3, export_id = $4,
             updated_at = now()
         WHERE namespace = $1",
    )
    .bind(&namespace)
    .bind(sequence)
    .bind(manifest.canonical_sha256())
    .bind(id.0)
    .execute(&mut *tx)
    .await?;
    let value = serde_json::to_value(&manifest)
        .map_err(|e| sqlx::Error::Encode(format!("the manifest: {e}").into()))?;
    sqlx::query(
        "UPDATE export_jobs
         SET chain_sequence = $2, manifest = $3, sha256 = $4, object_key = $5,
             logs_exported = $6, logs_skipped = $7, bytes_written = $8, cancel_requested = false,
             unsealed_object_key = NULL, updated_at = now()
         WHERE id = $1",
    )
    .bind(id.0)
    .bind(sequence)
    .bind(&value)
    .bind(archived.sha256)
    .bind(archived.object_key)
    .bind(archived.logs as i64)
    .bind(archived.logs_skipped as i64)
    .bind(archived.bytes as i64)
    .execute(&mut *tx)
    .await?;
    if let Some(key) = key {
        record_key_use(&mut tx, key, signed_at).await?;
    }
    tx.commit().await?;
    Ok(Some(Sealed {
        manifest,
        object_key: archived.object_key.to_owned(),
        logs_skipped: archived.logs_skipped,
    }))
}

/// Records, before this attempt completes its upload, the key of the archive it is about to
/// make (fenced): until a seal names it, that archive is an orphan a later attempt deletes.
/// `Ok(false)` when the job is no longer this attempt's.
pub async fn completing(
    pool: &PgPool,
    id: ExportId,
    attempt: i32,
    key: &str,
) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "UPDATE export_jobs SET unsealed_object_key = $3, updated_at = now()
         WHERE id = $1 AND attempt = $2 AND state = 'running'",
    )
    .bind(id.0)
    .bind(attempt)
    .bind(key)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Forgets an unsealed archive once it is deleted (fenced).
pub async fn forget_unsealed(
    pool: &PgPool,
    id: ExportId,
    attempt: i32,
    key: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE export_jobs SET unsealed_object_key = NULL, updated_at = now()
         WHERE id = $1 AND attempt = $2 AND unsealed_object_key = $3",
    )
    .bind(id.0)
    .bind(attempt)
    .bind(key)
    .execute(pool)
    .await?;
    Ok(())
}

/// What earlier attempts of export `id` left behind, read in one round trip.
#[derive(Debug)]
pub enum LeftBehind {
    /// Nothing: this attempt writes the archive.
    Nothing,
    /// An attempt sealed its archive into the chain: only the finish is left.
    Sealed(Box<Sealed>),
    /// An attempt completed an archive (this key) but lost its seal: no export will name it.
    Unsealed(String),
}

/// What earlier attempts of export `id` left behind: a seal, or an archive completed without one.
pub async fn left_behind(pool: &PgPool, id: ExportId) -> sqlx::Result<LeftBehind> {
    type Row = (
        bool,
        Option<serde_json::Value>,
        Option<String>,
        i64,
        Option<String>,
    );
    let row: Option<Row> = sqlx::query_as(
        "SELECT chain_sequence IS NOT NULL, manifest, object_key, logs_skipped, unsealed_object_key
         FROM export_jobs WHERE id = $1",
    )
    .bind(id.0)
    .fetch_optional(pool)
    .await?;
    Ok(match row {
        Some((true, Some(manifest), Some(object_key), skipped, _)) => {
            let manifest = serde_json::from_value(manifest)
                .map_err(|e| sqlx::Error::Decode(format!("the sealed manifest: {e}").into()))?;
            LeftBehind::Sealed(Box::new(Sealed {
                manifest,
                object_key,
                logs_skipped: skipped.max(0) as u64,
            }))
        }
        Some((false, _, _, _, Some(unsealed))) => LeftBehind::Unsealed(unsealed),
        _ => LeftBehind::Nothing,
    })
}

/// Whether export `id` holds a link of its chain: it must then end `succeeded`, so the
/// runner retries it however its attempt ended.
pub async fn is_sealed(pool: &PgPool, id: ExportId) -> sqlx::Result<bool> {
    sqlx::query_scalar("SELECT chain_sequence IS NOT NULL FROM export_jobs WHERE id = $1")
        .bind(id.0)
        .fetch_optional(pool)
        .await
        .map(|s| s.unwrap_or(false))
}

/// Records in an attempt's status why its sealed export has not finished yet (fenced).
pub async fn note_waiting(
    pool: &PgPool,
    id: ExportId,
    attempt: i32,
    reason: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE export_jobs SET last_error = $3, updated_at = now()
         WHERE id = $1 AND attempt = $2 AND state = 'running'",
    )
    .bind(id.0)
    .bind(attempt)
    .bind(reason)
    .execute(pool)
    .await?;
    Ok(())
}

/// The head of `namespace`'s chain: its last link's number (0: none) and that link's canonical
/// manifest SHA-256.
pub async fn head(pool: &PgPool, namespace: &str) -> sqlx::Result<(u64, Option<String>)> {
    let row: Option<(i64, Option<String>)> =
        sqlx::query_as("SELECT sequence, manifest_sha256 FROM export_chains WHERE namespace = $1")
            .bind(namespace)
            .fetch_optional(pool)
            .await?;
    Ok(row.map_or((0, None), |(s, sha)| (s.max(0) as u64, sha)))
}

/// Records that `key` signed at `at`: its window starts at its first signature, and the first
/// signature of a new key closes the window of the key it replaces. The first key the history
/// records gets no start: it may have signed manifests before the history began (earlier
/// exports keep verifying). A signature by a key already closed (a worker still running the
/// old key during a rolling rotation) widens that key's window to cover it, so the history never
/// contradicts a signature the service made.
pub async fn record_key_use(
    conn: &mut sqlx::PgConnection,
    key: &PublicKey,
    at: DateTime<Utc>,
) -> sqlx::Result<()> {
    // The common case writes nothing (and locks nothing): the key is current and known.
    let known: Option<Bounds> = sqlx::query_as(
        "SELECT signing_from, signing_until FROM manifest_signing_keys WHERE key_id = $1",
    )
    .bind(&key.key_id)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some((from, until)) = known
        && from.is_none_or(|f| f <= at)
        && until.is_none_or(|u| u >= at)
    {
        return Ok(());
    }
    let jwk = key.clone().with_window(None).jwk();
    sqlx::query(
        "INSERT INTO manifest_signing_keys (key_id, jwk, signing_from)
         SELECT $1, $2, CASE WHEN EXISTS (SELECT 1 FROM manifest_signing_keys) THEN $3 END
         ON CONFLICT (key_id) DO UPDATE
         SET signing_from = CASE WHEN manifest_signing_keys.signing_from IS NULL THEN NULL
                                 ELSE least(manifest_signing_keys.signing_from, $3) END,
             signing_until = CASE WHEN manifest_signing_keys.signing_until IS NULL THEN NULL
                                  ELSE greatest(manifest_signing_keys.signing_until, $3) END",
    )
    .bind(&key.key_id)
    .bind(&jwk)
    .bind(at)
    .execute(&mut *conn)
    .await?;
    if known.is_none() {
        sqlx::query(
            "UPDATE manifest_signing_keys SET signing_until = $2
             WHERE key_id <> $1 AND signing_until IS NULL",
        )
        .bind(&key.key_id)
        .bind(at)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// A key's recorded signing period: its first signature and its successor's first.
type Bounds = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// A key's JWK and signing period.
type KeyRow = (
    serde_json::Value,
    Option<DateTime<Utc>>,
    Option<DateTime<Utc>>,
);

/// Every key the service has signed with, and when; newest first.
pub async fn key_history(pool: &PgPool) -> sqlx::Result<Vec<PublicKey>> {
    let rows: Vec<KeyRow> = sqlx::query_as(
        "SELECT jwk, signing_from, signing_until FROM manifest_signing_keys
         ORDER BY signing_from DESC NULLS LAST",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(jwk, from, until)| {
            PublicKey::parse(&jwk.to_string())
                .ok()
                .map(|k| k.with_window(Some(KeyWindow { from, until })))
        })
        .collect())
}
