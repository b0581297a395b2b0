//! The command line: `serve`, `work`, `run`, `migrate`, `check`, `token`, `demo`, `keygen`,
//! `verify`.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// logexport: exports registry audit logs from Splunk to object storage.
#[derive(Debug, Parser)]
#[command(version, about)]
pub struct Cli {
    /// Configuration file (default: worker-config/logexport.toml when present).
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

/// What to run.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// HTTP API only.
    Serve,
    /// Workers only (export jobs, notifications, housekeeping).
    Work,
    /// API and workers in one process.
    Run,
    /// Create the database when it is missing, apply migrations and exit.
    Migrate,
    /// Try each configured dependency once (Postgres and migrations, Splunk and its token, the
    /// bucket, SMTP, Quay, the HEC sink); one line each; non-zero exit when any fails.
    Check,
    /// Manage API tokens.
    Token {
        #[command(subcommand)]
        action: TokenCommand,
    },
    /// Zero-setup end-to-end demo against the local Postgres.
    Demo,
    /// Print a new manifest signing key (for export.manifest_signing_key) and its public JWK.
    Keygen,
    /// Check an archive against its signed manifest, offline: size, SHA-256, signature, logs.
    Verify {
        /// The downloaded archive.
        archive: PathBuf,
        /// The manifest (default: the archive's path + `.manifest.json`).
        #[arg(long)]
        manifest: Option<PathBuf>,
        /// A trusted public key: base64url, a JWK, or a JWK set, in a file.
        #[arg(long, conflicts_with = "keys_url")]
        public_key: Option<PathBuf>,
        /// The service's JWK set, e.g. https://registry.example/api/v1/exportlogs/signing-keys.
        #[arg(long)]
        keys_url: Option<String>,
        /// Check size, SHA-256 and rows even when no signature can be checked (an unsigned
        /// manifest, the default configuration's, or no key given); says so plainly.
        #[arg(long)]
        allow_unsigned: bool,
    },
    /// Check a folder of archives and manifests as one chain, offline (docs/evidence.md).
    VerifyChain(VerifyChainArgs),
}

/// `verify-chain` options.
#[derive(Debug, clap::Args)]
pub struct VerifyChainArgs {
    /// The folder holding `<archive>` and `<archive>.manifest.json` pairs.
    pub dir: PathBuf,
    /// Trusted public keys: base64url, a JWK, or a JWK set (with signing periods), in a file.
    #[arg(long, conflicts_with = "keys_url")]
    pub public_key: Option<PathBuf>,
    /// The service's JWK set, e.g. https://registry.example/api/v1/exportlogs/signing-keys.
    #[arg(long)]
    pub keys_url: Option<String>,
    /// The signed chain head, e.g. https://registry.example/api/v1/exportlogs/chain?namespace=NS.
    #[arg(long, conflicts_with = "head_file")]
    pub head: Option<String>,
    /// The signed chain head, saved in a file.
    #[arg(long)]
    pub head_file: Option<PathBuf>,
    /// API token for --head.
    #[arg(long, env = "LOGEXPORT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// The time-stamp authority's CA (PEM): every link must carry a valid time-stamp.
    #[arg(long)]
    pub tsa_ca: Option<PathBuf>,
}

/// Token actions.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print a new API token once; only its hash is stored.
    Create {
        /// The caller's user name (its own namespace for user exports).
        #[arg(long)]
        user: String,
        /// An organization this caller administers (repeatable).
        #[arg(long = "admin-org")]
        admin_orgs: Vec<String>,
        /// A repository `namespace/repo` this caller administers (repeatable).
        #[arg(long = "admin-repo")]
        admin_repos: Vec<String>,
        /// Registry-wide access.
        #[arg(long)]
        superuser: bool,
    },
    /// List every token: id, user, rights, created, last used, revoked (never the secret).
    List,
    /// Revoke a token by its id (from `token list`); every process refuses it at once.
    Revoke {
        /// The token's id.
        id: uuid::Uuid,
    },
}

/// Resolves on SIGTERM or SIGINT.
pub fn shutdown_on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let trigger = token.clone();
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot listen for SIGTERM");
                        let _ = ctrl_c.await;
                        trigger.cancel();
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutdown signal received");
        trigger.cancel();
    });
    token
}

/// Runs the parsed command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    crate::telemetry::install_crypto_provider();
    match &cli.command {
        Command::Demo => return crate::demo::run().await,
        Command::Keygen => {
            let key = crate::archive::ManifestKey::generate();
            println!("export.manifest_signing_key = \"{}\"", key.secret());
            println!("# public key (JWK), served at /api/v1/exportlogs/signing-keys:");
            println!("# {}", key.public().jwk());
            return Ok(());
        }
        Command::Verify {
            archive,
            manifest,
            public_key,
            keys_url,
            allow_unsigned,
        } => {
            return verify(
                archive,
                manifest.as_deref(),
                public_key.as_deref(),
                keys_url.as_deref(),
                *allow_unsigned,
            )
            .await;
        }
        Command::VerifyChain(args) => {
            let sources = crate::archive::verify_chain::Sources {
                public_key: args.public_key.as_deref(),
                keys_url: args.keys_url.as_deref(),
                head_url: args.head.as_deref(),
                head_file: args.head_file.as_deref(),
                token: args.token.as_deref(),
                tsa_ca: args.tsa_ca.as_deref(),
            };
            return crate::archive::verify_chain::command(&args.dir, &sources).await;
        }
        _ => {}
    }
    let config = Arc::new(Config::load(cli.config.as_deref())?);
    match cli.command {
        Command::Check => return check(&config).await,
        Command::Migrate => create_database(&config).await?,
        Command::Serve | Command::Work | Command::Run => {
            crate::check::warn_in_background(&config);
        }
        _ => {}
    }
    let pool = crate::db::connect(&config.database).await?;
    match cli.command {
        Command::Migrate => {
            crate::db::migrate(&pool).await?;
            println!("migrations applied");
            Ok(())
        }
        Command::Token {
            action:
                TokenCommand::Create {
                    user,
                    admin_orgs,
                    admin_repos,
                    superuser,
                },
        } => {
            crate::domain::Namespace::parse(&user).context("--user")?;
            for org in &admin_orgs {
                crate::domain::Namespace::parse(org).context("--admin-org")?;
            }
            for repo in &admin_repos {
                let (ns, name) = repo
                    .split_once('/')
                    .context("--admin-repo must be namespace/repository")?;
                crate::domain::Namespace::parse(ns).context("--admin-repo")?;
                crate::domain::RepositoryName::parse(name).context("--admin-repo")?;
            }
            let token =
                crate::access::create_token(&pool, &user, &admin_orgs, &admin_repos, superuser)
                    .await?;
            println!("{token}");
            Ok(())
        }
        Command::Token {
            action: TokenCommand::List,
        } => {
            let tokens = crate::access::tokens::list_tokens(&pool).await?;
            print!("{}", token_table(&tokens));
            Ok(())
        }
        Command::Token {
            action: TokenCommand::Revoke { id },
        } => match crate::access::tokens::revoke_token(&pool, id).await? {
            crate::access::tokens::Revoked::Now => {
                println!("token {id} revoked");
                Ok(())
            }
            crate::access::tokens::Revoked::Already => {
                println!("token {id} was already revoked");
                Ok(())
            }
            crate::access::tokens::Revoked::Unknown => {
                anyhow::bail!("no token has the id {id} (see `logexport token list`)")
            }
        },
        Command::Serve => {
            let shutdown = shutdown_on_signals();
            crate::service::serve(pool, config, shutdown).await
        }
        Command::Work => {
            let shutdown = shutdown_on_signals();
            crate::service::work(pool, config, shutdown).await
        }
        Command::Run => {
            let shutdown = shutdown_on_signals();
            let api = tokio::spawn(crate::service::serve(
                pool.clone(),
                config.clone(),
                shutdown.clone(),
            ));
            let work = crate::service::work(pool, config, shutdown.clone()).await;
            shutdown.cancel();
            api.await.context("API task")??;
            work
        }
        Command::Demo
        | Command::Keygen
        | Command::Verify { .. }
        | Command::VerifyChain(_)
        | Command::Check => {
            unreachable!("handled above")
        }
    }
}

/// `token list`'s table, one token a line.
fn token_table(tokens: &[crate::access::tokens::TokenInfo]) -> String {
    let time = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map_or_else(
            || "-".to_owned(),
            |t| t.format("%Y-%m-%d %H:%M:%SZ").to_string(),
        )
    };
    let mut out = format!(
        "{:<36}  {:<16}  {:<20}  {:<20}  {:<20}  RIGHTS\n",
        "ID", "USER", "CREATED", "LAST USED", "REVOKED"
    );
    for t in tokens {
        out.push_str(&format!(
            "{:<36}  {:<16}  {:<20}  {:<20}  {:<20}  {}\n",
            t.id,
            t.username,
            time(Some(t.created_at)),
            time(t.last_used_at),
            time(t.revoked_at),
            t.rights()
        ));
    }
    out
}

/// `logexport check`: one line per dependency; an error when any failed.
async fn check(config: &Config) -> anyhow::Result<()> {
    let findings = crate::check::check(config).await;
    for finding in &findings {
        println!("{finding}");
    }
    let failed = findings.iter().filter(|f| !f.is_ok()).count();
    anyhow::ensure!(
        failed == 0,
        "{failed} of {} dependencies failed the check",
        findings.len()
    );
    Ok(())
}

/// `migrate` on a database that does not exist yet: creates it, or names the command that does.
async fn create_database(config: &Config) -> anyhow::Result<()> {
    let url = config.database.url.expose();
    let options = crate::db::connect_options(&config.database)?;
    if let Err(e) = crate::db::ensure_database_at(options.clone()).await {
        // No access to the `postgres` database: fine when ours exists already.
        if sqlx::ConnectOptions::connect(&options).await.is_ok() {
            return Ok(());
        }
        let command = crate::db::createdb_command(url)
            .map(|c| format!("; create it with `{c}` and run migrate again"))
            .unwrap_or_default();
        anyhow::bail!("cannot create the database ({e:#}){command}");
    }
    Ok(())
}

/// `logexport verify`: one line per kind of mismatch; an error when there is any.
async fn verify(
    archive: &std::path::Path,
    manifest: Option<&std::path::Path>,
    public_key: Option<&std::path::Path>,
    keys_url: Option<&str>,
    allow_unsigned: bool,
) -> anyhow::Result<()> {
    use crate::archive::{Manifest, PublicKey};
    let manifest_path = manifest.map_or_else(
        || {
            let mut p = archive.as_os_str().to_owned();
            p.push(".manifest.json");
            PathBuf::from(p)
        },
        std::path::Path::to_path_buf,
    );
    let text = std::fs::read_to_string(&manifest_path)
        .with_context(|| format!("cannot read the manifest {}", manifest_path.display()))?;
    let manifest: Manifest = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a logexport manifest", manifest_path.display()))?;
    let trusted: Vec<PublicKey> = match (public_key, keys_url) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the public key {}", path.display()))?;
            match serde_json::from_str::<serde_json::Value>(&text) {
                Ok(set) if set.get("keys").is_some() => PublicKey::from_jwk_set(&set),
                _ => vec![PublicKey::parse(&text)?],
            }
        }
        (None, Some(url)) => {
            let set: serde_json::Value = reqwest::get(url)
                .await
                .and_then(reqwest::Response::error_for_status)
                .with_context(|| format!("cannot fetch the signing keys from {url}"))?
                .json()
                .await
                .with_context(|| format!("{url} did not answer a JWK set"))?;
            PublicKey::from_jwk_set(&set)
        }
        (None, None) => Vec::new(),
    };
    let mut findings = crate::archive::verify::verify(archive, &manifest, &trusted);
    // Without a signature to check (unsigned manifest, or no key given), --allow-unsigned still
    // checks everything else; a signature that was checked and failed is never waived.
    let unchecked_signature = !manifest.signed || trusted.is_empty();
    if allow_unsigned && unchecked_signature {
        findings.retain(|f| !f.0.starts_with("signature:"));
    }
    if findings.is_empty() {
        let signature = if unchecked_signature {
            format!(
                "NO SIGNATURE CHECKED ({}): this shows the archive matches this manifest, not who \
                 made either",
                if manifest.signed {
                    "no trusted key given"
                } else {
                    "the manifest is unsigned"
                }
            )
        } else {
            format!(
                "signed by key {}",
                manifest.key_id.as_deref().unwrap_or("?")
            )
        };
        println!(
            "OK: {} holds {} logs, {} bytes, SHA-256 {}, {signature}",
            archive.display(),
            manifest.logs,
            manifest.bytes,
            manifest.sha256,
        );
        return Ok(());
    }
    for finding in &findings {
        println!("MISMATCH {}", finding.0);
    }
    if unchecked_signature && !allow_unsigned {
        println!(
            "(no signature can be checked here; --allow-unsigned checks size, SHA-256 and rows alone)"
        );
    }
    anyhow::bail!(
        "{} does not match its manifest ({} problem{})",
        archive.display(),
        findings.len(),
        if findings.len() == 1 { "" } else { "s" }
    )
}
