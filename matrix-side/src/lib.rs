//! coi-bridge Matrix side: an application service.
//!
//! - [`listener`]: the HTTP API the homeserver calls (transactions, ping, queries);
//! - [`client`]: the client-server API as the appservice and its ghosts;
//! - [`convert`]: Matrix content ⇄ the hub's IR (pure);
//! - [`side`]: [`MatrixSide`], the hub's `Side` (portals, ghosts, sending);
//! - [`startup`]: homeserver checks at start;
//! - [`commands`]: the management room and the bot's commands;
//! - [`registration`], [`config`], [`ids`].
//!
//! **Architecture Invariant:** every ghost user id is made and parsed by [`ids::GhostNamer`].

pub mod client;
pub mod commands;
pub mod config;
pub mod convert;
pub mod ids;
pub mod listener;
pub mod registration;
pub mod side;
pub mod startup;

pub use client::{ClientError, MatrixClient};
pub use config::{MatrixConfig, MatrixSettings};
pub use listener::ListenerState;
pub use registration::Registration;
pub use side::MatrixSide;
pub use startup::{StartupError, StartupInfo, startup};

/// The listener's state, with the bot's commands.
fn listener_state(
    settings: &MatrixSettings,
    client: MatrixClient,
    router: bridge_core::Router,
) -> std::sync::Arc<ListenerState> {
    let commands = commands::Commands::new(
        client.clone(),
        settings.namer.clone(),
        router.clone(),
        settings.permissions.clone(),
    );
    ListenerState::build(
        &settings.hs_token,
        router,
        settings.namer.clone(),
        Some(commands),
        Some(client),
    )
}

/// Binds the listener address and serves until `shutdown` completes.
pub async fn run_listener(
    settings: &MatrixSettings,
    router: bridge_core::Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(settings.listen).await?;
    let client = MatrixClient::new(&settings.homeserver_url, &settings.as_token)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    let state = listener_state(settings, client, router);
    listener::serve(listener, state, shutdown).await
}

/// Why [`start`] failed.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The listener address could not be bound.
    #[error("cannot listen for the homeserver on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// Cause.
        source: std::io::Error,
    },
    /// A homeserver check failed.
    #[error(transparent)]
    Startup(#[from] StartupError),
}

/// Binds the listener, serves it in a task until `shutdown`, then runs the start-up checks
/// (`/versions`, bot, `/whoami`, ping with retries). The task is returned for the caller to await.
pub async fn start(
    settings: &MatrixSettings,
    side: &MatrixSide,
    router: bridge_core::Router,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(tokio::task::JoinHandle<std::io::Result<()>>, StartupInfo), StartError> {
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: settings.listen,
            source,
        })?;
    let state = listener_state(settings, side.client().clone(), router);
    let task = tokio::spawn(listener::serve(listener, state, shutdown));
    match startup(side.client(), settings, 10).await {
        Ok(info) => Ok((task, info)),
        Err(e) => {
            task.abort();
            Err(e.into())
        }
    }
}
