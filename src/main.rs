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
    /// List inputs kept in quarantine (mail that could not be parsed or placed), newest first;
    /// with `--raw ID`, print that input's raw bytes; with `--replay ID` / `--replay-all`, run kept
    /// mail through the bridge again with the current config (placed mail leaves the quarantine).
    Quarantine {
        /// Config file.
        #[arg(short, long, env = "COI_BRIDGE_CONFIG")]
        config: PathBuf,
        /// How many entries to list.
        #[arg(long, default_value_t = 50)]
        limit: i64,
        /// Print the raw input of this entry instead of the list.
        #[arg(long)]
        raw: Option<i64>,
        /// Replay these entries (repeatable).
        #[arg(long)]
        replay: Vec<i64>,
        /// Replay every kept mail.
        #[arg(long, conflicts_with_all = ["replay", "raw"])]
        replay_all: bool,
    },
    /// Print a fully commented example config.
    ExampleConfig,
    /// Write the appservice registration for the homeserver from the `[matrix]` section.
    ///
    /// Tokens come from the config; a token file named there that does not exist yet is created
    /// with a random token.
    GenerateRegistration {
        /// Config file.
        #[arg(short, long, env = "COI_BRIDGE_CONFIG")]
        config: PathBuf,
        /// Where to write the registration YAML.
        #[arg(short, long)]
        output: PathBuf,
    },
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
        Command::GenerateRegistration { config, output } => generate_registration(&config, &output),
        Command::Quarantine {
            config,
            limit,
            raw,
            replay,
            replay_all,
        } => runtime().and_then(|rt| {
            if replay_all || !replay.is_empty() {
                rt.block_on(replay_quarantine(config, (!replay_all).then_some(replay)))
            } else {
                rt.block_on(quarantine(config, limit, raw))
            }
        }),
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

fn generate_registration(path: &std::path::Path, output: &std::path::Path) -> anyhow::Result<()> {
    let config = Config::parse(path)?;
    let Some(mut matrix) = config.matrix else {
        anyhow::bail!(
            "{} has no [matrix] section: add one (see `coi-bridge example-config`)",
            path.display()
        );
    };
    for (inline, file, key) in [
        (
            &mut matrix.as_token,
            &matrix.as_token_file,
            "matrix.as_token",
        ),
        (
            &mut matrix.hs_token,
            &matrix.hs_token_file,
            "matrix.hs_token",
        ),
    ] {
        match (inline.as_ref(), file) {
            (Some(_), _) => {}
            (None, Some(f)) if f.exists() => {}
            (None, Some(f)) => {
                write_secret(f, &matrix_side::registration::random_token())
                    .with_context(|| format!("Cannot write `{key}_file` {}", f.display()))?;
                println!("wrote a new random token to {}", f.display());
            }
            (None, None) => anyhow::bail!(
                "config key `{key}`: set `{key}` or `{key}_file` (a missing file is created)"
            ),
        }
    }
    let settings = matrix.validate()?;
    let reg = matrix_side::Registration::from_settings(&settings);
    std::fs::write(output, reg.to_yaml())
        .with_context(|| format!("Cannot write {}", output.display()))?;
    println!(
        "wrote {}: add it to the homeserver's app_service_config_files and restart the homeserver",
        output.display()
    );
    Ok(())
}

fn write_secret(path: &std::path::Path, value: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    let mut f = opts.open(path)?;
    writeln!(f, "{value}")
}

async fn replay_quarantine(path: PathBuf, ids: Option<Vec<i64>>) -> anyhow::Result<()> {
    let v = Config::load(&path)?;
    let results = coi_bridge::app::replay_quarantine(v, ids).await?;
    if results.is_empty() {
        println!("no kept mail to replay");
    }
    let mut failed = false;
    for (id, r) in results {
        match r {
            Ok(coi_side::Replayed::Placed { message_id }) => {
                println!("{id:>6}  placed     {message_id}");
            }
            Ok(coi_side::Replayed::StillKept {
                message_id,
                reasons,
            }) => {
                println!("{id:>6}  still kept {message_id}");
                for reason in reasons {
                    println!("        reason: {reason}");
                }
            }
            Err(e) => {
                failed = true;
                println!("{id:>6}  error      {e}");
            }
        }
    }
    if failed {
        anyhow::bail!("some entries could not be replayed");
    }
    Ok(())
}

async fn quarantine(path: PathBuf, limit: i64, raw: Option<i64>) -> anyhow::Result<()> {
    let v = Config::load(&path)?;
    let store = Store::open(&v.config.database.url, 1)
        .await
        .context("Cannot open the database")?;
    if let Some(id) = raw {
        use std::io::Write as _;
        let bytes = store.quarantine_raw(id).await?.unwrap_or_default();
        std::io::stdout().write_all(&bytes)?;
        return Ok(());
    }
    let entries = store.quarantine_list(limit).await?;
    if entries.is_empty() {
        println!("quarantine is empty");
    }
    for e in entries {
        println!(
            "{:>6}  {:<6}  {}  {} bytes  kept at {} ms\n        reason: {}",
            e.id, e.side, e.remote_id, e.raw_bytes, e.created_at, e.reason
        );
    }
    Ok(())
}
