//! Command line: `run`, `check-config`, `status`, `reload`, `doctor`, `--version`.

pub mod doctor;
pub mod reload;
pub mod status;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// One logfmt line per event (`ts= level= target= msg=` and the fields).
    Text,
    /// One JSON object per line.
    Json,
}

/// A replication kind, as `--is-primary` takes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PrimaryKind {
    /// Performance replication.
    Perf,
    /// Disaster-recovery replication.
    Dr,
}

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
        /// Log line format.
        #[arg(long, value_enum, default_value_t = LogFormat::Text)]
        log_format: LogFormat,
    },
    /// Show what a running agent believes: each cluster's leader, members and roles.
    /// Exits 0 when every cluster has a leader and a fresh view, 5 when one does not (or
    /// a replication set has two primaries), 1 when the agent cannot be reached.
    Status {
        /// Config file to find the admin address in (default: as for `run`).
        #[arg(long, short, conflicts_with = "admin")]
        config: Option<PathBuf>,
        /// Admin address (host:port) of the agent, instead of reading the config.
        #[arg(long)]
        admin: Option<String>,
        /// Print the raw JSON from /status.
        #[arg(long)]
        json: bool,
        /// Print nothing; exit 0 while the local cluster is the primary of this
        /// replication kind, 3 while it is not, 4 when that cannot be told (agent
        /// unreachable, local view not fresh, mode unknown, two primaries). For
        /// systemd's ExecCondition=, which skips the unit on 1-254.
        #[arg(long, value_enum, value_name = "KIND")]
        is_primary: Option<PrimaryKind>,
    },
    /// Make a running agent re-read its config and wait for its verdict: exit 0 when it
    /// applied the new config, 1 when it rejected it (the running config is kept; the
    /// reason is printed) or gave no verdict in time. For systemd's ExecReload=; needs
    /// no /bin/kill.
    Reload {
        /// Config file to find the admin address in (default: as for `run`).
        #[arg(long, short, conflicts_with = "admin")]
        config: Option<PathBuf>,
        /// Admin address (host:port) of the agent, instead of reading the config.
        #[arg(long)]
        admin: Option<String>,
        /// The agent's process id (systemd: `$MAINPID`); default: the pid the agent
        /// reports in /status.
        #[arg(long)]
        pid: Option<u32>,
        /// How long to wait for the verdict.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
        timeout: std::time::Duration,
    },
    /// Check this host as an operator would: the agent up and ready, every cluster
    /// fresh, the system resolver answering the agent's names as the agent does (and
    /// which resolver or drop-in is in the way when not), client certificates, proxy
    /// listeners, the addresses replication streams dial. Prints each finding with what
    /// to fix; exits 0 when all is well, 5 when something needs fixing.
    Doctor {
        /// Config file (default: as for `run`).
        #[arg(long, short)]
        config: Option<PathBuf>,
    },
    /// Validate a config file: print a summary and exit 0, or `FILE: KEY: reason` and exit 64.
    CheckConfig {
        #[arg(long, short)]
        config: PathBuf,
    },
}
