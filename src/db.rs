//! Postgres connection pool and migrations.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::config::DatabaseConfig;

/// The embedded migrations under `migrations/`.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The connection settings of `database.url`, trusting `database.ssl_ca_path` when set.
pub fn connect_options(config: &DatabaseConfig) -> anyhow::Result<PgConnectOptions> {
    let options: PgConnectOptions = config
        .url
        .expose()
        .parse()
        .context("database.url is not a valid Postgres URL")?;
    Ok(match &config.ssl_ca_path {
        Some(path) => {
            // Checked here too, so a file removed after start-up is named, not a TLS failure.
            crate::http_client::read_ca(path, "database.ssl_ca_path")
                .map_err(anyhow::Error::msg)?;
            options.ssl_root_cert(path)
        }
        None => options,
    })
}

/// Why a connection to Postgres failed, naming `database.ssl_ca_path` when its certificate
/// was refused.
pub fn connect_error(options: &PgConnectOptions, error: &sqlx::Error) -> Option<String> {
    crate::http_client::is_certificate_error(error).then(|| {
        format!(
            "Postgres at {}:{}: {error}; {}",
            options.get_host(),
            options.get_port(),
            crate::http_client::certificate_hint(
                "database.ssl_ca_path (or sslrootcert= in database.url)"
            )
        )
    })
}

/// Connects to Postgres with the configured pool size.
pub async fn connect(config: &DatabaseConfig) -> anyhow::Result<PgPool> {
    let options = connect_options(config)?;
    let tls_error = |e: &sqlx::Error| connect_error(&options, e);
    pool_options(config)
        .connect_with(options.clone())
        .await
        .map_err(|e| {
            if let Some(message) = tls_error(&e) {
                return anyhow::anyhow!(message);
            }
            if e.as_database_error().and_then(|d| d.code()).as_deref() == Some("3D000") {
                return anyhow::anyhow!(
                    "the database in database.url does not exist ({e}); `logexport migrate` \
                     creates it{}",
                    createdb_command(config.url.expose())
                        .map(|c| format!(", or run `{c}`"))
                        .unwrap_or_default()
                );
            }
            anyhow::anyhow!(
                "cannot connect to Postgres ({e}); is it running? start it with \
                 `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` \
                 and check database.url / DATABASE_URL"
            )
        })
}

/// A pooled connection idle for longer than this is tested with a round trip before a query
/// gets it; see [`pool_options`].
const TESTED_AFTER_IDLE: Duration = Duration::from_secs(1);

/// The pool's settings. sqlx tests a connection with a round trip (`ping`) each time it goes
/// back to the pool, and by default again each time a query takes it: every statement then cost
/// two round trips to Postgres, among them the Splunk quota's take and free, on which a search
/// waits. A connection that came back less than [`TESTED_AFTER_IDLE`] ago passed its test then;
/// only one idle for longer (which a Postgres restart may have cut) is tested again before use.
pub fn pool_options(config: &DatabaseConfig) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(config.max_connections)
        .acquire_timeout(acquire_timeout(config))
        .test_before_acquire(false)
        .before_acquire(|connection, meta| {
            Box::pin(async move {
                if meta.idle_for < TESTED_AFTER_IDLE {
                    return Ok(true);
                }
                Ok(sqlx::Connection::ping(connection).await.is_ok())
            })
        })
}

/// How long a query waits for a connection (`database.acquire_timeout_seconds`, at least 1 s).
pub fn acquire_timeout(config: &DatabaseConfig) -> Duration {
    Duration::from_secs(config.acquire_timeout_seconds.max(1))
}

/// True when `error` means Postgres could not be reached (down, restarting, refusing
/// connections, or the connection broke), as opposed to a statement it rejected: the caller
/// waits or answers 503, and counts nothing against a job.
pub fn is_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::Tls(_) => true,
        sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(e) => e.code().is_some_and(|code| {
            // Class 08: connection exception; 57P01-57P03: shut down or starting up;
            // 53300: too many connections.
            code.starts_with("08") || matches!(&*code, "57P01" | "57P02" | "57P03" | "53300")
        }),
        _ => false,
    }
}

/// When this process last found Postgres unreachable (milliseconds since the Unix epoch), or 0
/// while it answers.
static UNREACHABLE_SINCE: AtomicU64 = AtomicU64::new(0);

/// Records that `component` found Postgres unreachable: one error line per outage (not one per
/// query), and `logexport_database_unavailable_total{outcome=component}`.
pub fn report_unavailable(component: &'static str, error: &sqlx::Error) {
    crate::metrics::METRICS.incr("logexport_database_unavailable_total", component);
    let now = chrono::Utc::now().timestamp_millis().max(1) as u64;
    if UNREACHABLE_SINCE
        .compare_exchange(0, now, Ordering::AcqRel, Ordering::Acquire)
        .is_ok()
    {
        tracing::error!(
            component, %error,
            "Postgres is unreachable: requests that need it get 503 with Retry-After, workers \
             pause claiming and keep their results until it is back"
        );
    }
}

/// Records that Postgres answered again; logs once how long it was away.
pub fn report_available() {
    let since = UNREACHABLE_SINCE.swap(0, Ordering::AcqRel);
    if since != 0 {
        let now = chrono::Utc::now().timestamp_millis().max(1) as u64;
        tracing::warn!(
            unreachable_seconds = now.saturating_sub(since) as f64 / 1000.0,
            "Postgres is reachable again; workers resume"
        );
    }
}

/// Runs `op` until Postgres takes it. While Postgres is unreachable it is tried again every
/// second, so what the caller would record (an outcome, a delivered notice) waits for the
/// database instead of being lost; `give_up()` ends the wait (a process shutting down). Any
/// other error is returned at once.
pub async fn retry_while_unavailable<T, F, Fut>(
    component: &'static str,
    give_up: impl Fn() -> bool,
    mut op: F,
) -> sqlx::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = sqlx::Result<T>>,
{
    loop {
        match op().await {
            Ok(value) => {
                report_available();
                return Ok(value);
            }
            Err(e) if is_unavailable(&e) && !give_up() => {
                report_unavailable(component, &e);
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The versions of the embedded migrations not applied (successfully) to the database yet; all
/// of them when the database was never migrated.
pub async fn pending_migrations(pool: &PgPool) -> Result<Vec<i64>, sqlx::Error> {
    let applied: Vec<i64> =
        match sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(pool)
            .await
        {
            Ok(applied) => applied,
            // 42P01: no _sqlx_migrations table, nothing was ever applied.
            Err(e) if e.as_database_error().and_then(|d| d.code()).as_deref() == Some("42P01") => {
                Vec::new()
            }
            Err(e) => return Err(e),
        };
    Ok(MIGRATOR
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
        .map(|m| m.version)
        .filter(|v| !applied.contains(v))
        .collect())
}

/// The one command that creates the database named in `url` (for when we may not).
pub fn createdb_command(url: &str) -> Option<String> {
    let options: PgConnectOptions = url.parse().ok()?;
    let name = options.get_database()?;
    Some(format!(
        "createdb -h {} -p {} -U {} {name}",
        options.get_host(),
        options.get_port(),
        options.get_username()
    ))
}

/// Applies pending migrations.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    MIGRATOR
        .run(pool)
        .await
        .context("applying database migrations")
}

/// Creates the database named in `url` when it does not exist yet (for the demo and tests).
pub async fn ensure_database(url: &str) -> anyhow::Result<()> {
    ensure_database_at(url.parse().context("invalid Postgres URL")?).await
}

/// [`ensure_database`] for connection settings already made (e.g. by [`connect_options`]).
pub async fn ensure_database_at(options: PgConnectOptions) -> anyhow::Result<()> {
    let Some(name) = options.get_database().map(str::to_owned) else {
        return Ok(());
    };
    let admin = options.clone().database("postgres");
    let mut conn = sqlx::ConnectOptions::connect(&admin).await.map_err(|e| {
        if let Some(message) = connect_error(&admin, &e) {
            return anyhow::anyhow!(message);
        }
        anyhow::anyhow!(
            "cannot connect to Postgres ({e}); start it with \
             `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start`"
        )
    })?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut conn)
            .await?;
    if !exists {
        let quoted = name.replace('"', "\"\"");
        // CREATE DATABASE cannot take a bind parameter; the name is quoted as an identifier.
        let result = sqlx::query(&format!("CREATE DATABASE \"{quoted}\""))
            .execute(&mut conn)
            .await;
        if let Err(e) = result {
            // Another process may have created it concurrently.
            let code = e
                .as_database_error()
                .and_then(|d| d.code().map(|c| c.to_string()));
            if code.as_deref() != Some("42P04") {
                return Err(e).context("creating the database");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_unreachable_database_counts_as_unavailable() {
        assert!(is_unavailable(&sqlx::Error::PoolTimedOut));
        assert!(is_unavailable(&sqlx::Error::Io(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused
        ))));
        assert!(!is_unavailable(&sqlx::Error::RowNotFound));
        assert!(!is_unavailable(&sqlx::Error::PoolClosed));
        assert!(!is_unavailable(&sqlx::Error::ColumnNotFound("x".into())));
    }
}
