//! Entry point: parse the command line, load the config, run; map failures to exit codes
//! (64 for a bad config or usage, 1 for a runtime failure).
#![forbid(unsafe_code)]

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use tracing::{error, info, warn};
use vault_locator::app::Supervisor;
use vault_locator::cli::{Cli, Command, LogFormat};
use vault_locator::config::{Config, DEFAULT_CONFIG_PATH};

/// The exit code for a config the agent cannot use: 64, sysexits' EX_USAGE (not
/// EX_CONFIG, 78), as the unit, the packages and the README document it.
const EXIT_CONFIG: u8 = 64;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { config } => match Config::load(&config) {
            Ok(c) => {
                print!("{}: OK\n{}", config.display(), c.summary());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Command::Status {
            config,
            admin,
            json,
            is_primary,
        } => match admin_addr(config.as_deref(), admin) {
            Ok(Some(addr)) => {
                ExitCode::from(vault_locator::cli::status::run(&addr, json, is_primary))
            }
            Ok(None) => {
                eprintln!("the admin endpoint is disabled in this config; pass --admin");
                ExitCode::from(EXIT_CONFIG)
            }
            Err(code) => code,
        },
        Command::Reload {
            config,
            admin,
            pid,
            timeout,
        } => match admin_addr(config.as_deref(), admin) {
            Ok(admin) => ExitCode::from(vault_locator::cli::reload::run(
                admin.as_deref(),
                pid,
                timeout,
            )),
            Err(code) => code,
        },
        Command::Doctor { config } => match ConfigSource::resolve(config.as_deref()).load() {
            Ok(c) => ExitCode::from(vault_locator::cli::doctor::run(&c)),
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(EXIT_CONFIG)
            }
        },
        Command::Run {
            config,
            log,
            log_format,
        } => run_agent(config.as_deref(), log.as_deref(), log_format),
    }
}

/// `vault-locator run`: logging, the panic hook, the config, then the agent until a
/// signal stops it.
fn run_agent(config: Option<&Path>, log: Option<&str>, log_format: LogFormat) -> ExitCode {
    init_tracing(log, log_format);
    vault_locator::panic::install_hook();
    // Before anything else: the DNS sockets systemd kept across a restart.
    vault_locator::fdstore::adopt_inherited();
    let source = ConfigSource::resolve(config);
    if matches!(source, ConfigSource::Embedded) {
        info!("no config file given and none at {DEFAULT_CONFIG_PATH}: using the embedded default");
    }
    let config = match source.load() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(config, source)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vault-locator: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Where the running config came from, so SIGHUP re-reads the same source.
#[derive(Clone)]
enum ConfigSource {
    File(PathBuf),
    Embedded,
}

impl ConfigSource {
    fn resolve(path: Option<&Path>) -> Self {
        match path {
            Some(p) => ConfigSource::File(p.to_path_buf()),
            None if Path::new(DEFAULT_CONFIG_PATH).exists() => {
                ConfigSource::File(PathBuf::from(DEFAULT_CONFIG_PATH))
            }
            None => ConfigSource::Embedded,
        }
    }

    fn load(&self) -> Result<Config, vault_locator::config::ConfigError> {
        match self {
            ConfigSource::File(p) => Config::load(p),
            ConfigSource::Embedded => Ok(Config::embedded_default()),
        }
    }
}

async fn run(config: Config, source: ConfigSource) -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let prometheus = match vault_locator::telemetry::install() {
        Ok(h) => Some(h),
        Err(e) => {
            warn!(error = %e, "metrics exporter unavailable");
            None
        }
    };
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut hup = signal(SignalKind::hangup())?;
    let started = Supervisor::start(config, prometheus).await?;
    let (mut supervisor, mut fatal) = (started.supervisor, started.fatal);
    info!(version = env!("CARGO_PKG_VERSION"), "vault-locator running");
    let result = loop {
        tokio::select! {
            _ = term.recv() => { info!(signal = "SIGTERM", "stopping"); break Ok(()); }
            _ = int.recv() => { info!(signal = "SIGINT", "stopping"); break Ok(()); }
            Some(e) = fatal.recv() => break Err(e),
            _ = hup.recv() => {
                info!(signal = "SIGHUP", "reloading config");
                vault_locator::systemd::reloading();
                let outcome = match source.load() {
                    Err(e) => {
                        error!(error = %e, "reload rejected: invalid config; still running the previous one");
                        Err(e.to_string())
                    }
                    Ok(new) => match supervisor.reload(new).await {
                        Ok(()) => { info!("reload applied"); Ok(()) }
                        Err(e) => {
                            error!(error = %e, "reload failed; still running the previous config");
                            Err(format!("{e:#}"))
                        }
                    },
                };
                supervisor.observed().reloaded(outcome);
                vault_locator::systemd::reloaded(supervisor.observed());
            }
        }
    };
    supervisor.shutdown().await;
    result
}

fn init_tracing(filter: Option<&str>, format: LogFormat) {
    use tracing_subscriber::EnvFilter;
    // hickory-server logs every request at INFO: keep it at WARN unless asked.
    let default =
        "info,hickory_server=warn,hickory_resolver=warn,hickory_net=warn,hickory_proto=warn";
    let filter = filter
        .map(EnvFilter::new)
        .or_else(|| std::env::var("RUST_LOG").ok().map(EnvFilter::new))
        .unwrap_or_else(|| EnvFilter::new(default));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false);
    match format {
        LogFormat::Text => builder.event_format(vault_locator::logfmt::Logfmt).init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// The admin address `status` and `reload` talk to: `--admin`, or the config's (None:
/// the config disables the endpoint).
fn admin_addr(config: Option<&Path>, admin: Option<String>) -> Result<Option<String>, ExitCode> {
    if let Some(a) = admin {
        return Ok(Some(a));
    }
    match ConfigSource::resolve(config).load() {
        Ok(c) => Ok(c.admin.listen.map(|a| a.to_string())),
        Err(e) => {
            eprintln!("{e}");
            Err(ExitCode::from(EXIT_CONFIG))
        }
    }
}
