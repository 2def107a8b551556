//! Entry point: parse the command line, load the config, run; map failures to exit codes
//! (64 for a bad config or usage, 1 for a runtime failure).
#![forbid(unsafe_code)]

use std::path::Path;
use std::process::ExitCode;

use clap::Parser;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use vault_locator::app::App;
use vault_locator::cli::{Cli, Command};
use vault_locator::config::{Config, DEFAULT_CONFIG_PATH};

/// EX_CONFIG-style code for a config the agent cannot use (sysexits EX_USAGE).
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
        Command::Run { config, log } => {
            init_tracing(log.as_deref());
            let config = match load_for_run(config.as_deref()) {
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
            match runtime.block_on(run(config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("vault-locator: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

fn load_for_run(path: Option<&Path>) -> Result<Config, vault_locator::config::ConfigError> {
    match path {
        Some(p) => Config::load(p),
        None if Path::new(DEFAULT_CONFIG_PATH).exists() => {
            Config::load(Path::new(DEFAULT_CONFIG_PATH))
        }
        None => {
            info!("no config file given and none at {DEFAULT_CONFIG_PATH}: using the embedded default");
            Ok(Config::embedded_default())
        }
    }
}

async fn run(config: Config) -> anyhow::Result<()> {
    let app = App::build(&config).await?;
    let shutdown = CancellationToken::new();
    tokio::spawn(watch_signals(shutdown.clone()));
    info!(
        version = env!("CARGO_PKG_VERSION"),
        clusters = config.clusters.len(),
        "vault-locator started"
    );
    app.run(shutdown).await
}

/// SIGTERM/SIGINT stop the agent. SIGHUP is caught so that a reload request never kills
/// it (the default action would); reloading itself is not implemented yet.
async fn watch_signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        warn!("cannot install signal handlers");
        return;
    };
    loop {
        tokio::select! {
            _ = term.recv() => { info!(signal = "SIGTERM", "stopping"); break; }
            _ = int.recv() => { info!(signal = "SIGINT", "stopping"); break; }
            _ = hup.recv() => warn!("SIGHUP: config reload is not supported yet; restart to apply changes"),
        }
    }
    shutdown.cancel();
}

fn init_tracing(filter: Option<&str>) {
    use tracing_subscriber::EnvFilter;
    // hickory-server logs every request at INFO: keep it at WARN unless asked.
    let default =
        "info,hickory_server=warn,hickory_resolver=warn,hickory_net=warn,hickory_proto=warn";
    let filter = filter
        .map(EnvFilter::new)
        .or_else(|| std::env::var("RUST_LOG").ok().map(EnvFilter::new))
        .unwrap_or_else(|| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
}
