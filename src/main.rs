//! `coi-bridge`: the command line and the wiring of the hub and its sides.

use coi_bridge::app;
use coi_bridge::config::{self, Config};

use anyhow::Context as _;
use bridge_core::Store;
use clap::{Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "coi-bridge",
    version,
    about = "Bridge Matrix rooms and XMPP MUCs with COI / Delta Chat email group chats"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the bridge.
    Run {
        /// Config file.
        #[arg(short, long, env = "COI_BRIDGE_CONFIG")]
        config: PathBuf,
    },
    /// Check a config file and exit (0 = valid).
    CheckConfig {
        /// Config file.
        #[arg(short, long, env = "COI_BRIDGE_CONFIG")]
        config: PathBuf,
    },
    /// Apply database migrations and exit.
    Migrate {
        /// Config file.
        #[arg(short, long, env = "COI_BRIDGE_CONFIG")]
        config: PathBuf,
    },
    /// Print a fully commented example config.
    ExampleConfig,
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::ExampleConfig => {
            print!("{}", config::EXAMPLE);
            Ok(())
        }
        Command::CheckConfig { config } => Config::load(&config)
            .map(|_| println!("{}: OK", config.display()))
            .map_err(anyhow::Error::from),
        Command::Migrate { config } => runtime().and_then(|rt| rt.block_on(migrate(config))),
        Command::Run { config } => runtime().and_then(|rt| rt.block_on(run(config))),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("coi-bridge: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("Cannot start the async runtime")
}

async fn migrate(path: PathBuf) -> anyhow::Result<()> {
    let v = Config::load(&path)?;
    let store = Store::open(&v.config.database.url, 1)
        .await
        .context("Cannot open the database")?;
    println!(
        "migrations applied: {:?}",
        Store::migration_versions(store.dialect())
    );
    Ok(())
}

async fn run(path: PathBuf) -> anyhow::Result<()> {
    let v = Config::load(&path)?;
    app::init_logging(&v.config.logging.level)?;
    app::run(v, Vec::new(), app::shutdown_signal()).await
}
