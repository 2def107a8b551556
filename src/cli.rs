//! Command line: `run`, `check-config`, `--version`.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "vault-locator",
    version,
    about = "Finds the active Vault/OpenBao node of every cluster and answers for it in DNS"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent.
    Run {
        /// Config file (default: /etc/vault-locator/config.toml if it exists, else the
        /// embedded default: the local Vault at http://127.0.0.1:8200, DNS on 127.0.0.1:8600).
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Log filter, in RUST_LOG syntax (overrides RUST_LOG).
        #[arg(long)]
        log: Option<String>,
    },
    /// Validate a config file: print a summary and exit 0, or `FILE: KEY: reason` and exit 64.
    CheckConfig {
        #[arg(long, short)]
        config: PathBuf,
    },
}
