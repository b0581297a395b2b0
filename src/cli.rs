//! The command line: `serve`, `work`, `run`, `migrate`, `token create`, `demo`.

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
    /// Apply database migrations and exit.
    Migrate,
    /// Manage API tokens.
    Token {
        #[command(subcommand)]
        action: TokenCommand,
    },
    /// Zero-setup end-to-end demo against the local Postgres.
    Demo,
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
    if let Command::Demo = cli.command {
        return crate::demo::run().await;
    }
    let config = Arc::new(Config::load(cli.config.as_deref())?);
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
                crate::api::auth::create_token(&pool, &user, &admin_orgs, &admin_repos, superuser)
                    .await?;
            println!("{token}");
            Ok(())
        }
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
        Command::Demo => unreachable!("handled above"),
    }
}
