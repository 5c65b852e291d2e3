//! Start-up checks against the homeserver: each failure is one clear line.

use crate::client::{ClientError, MatrixClient};
use crate::config::MatrixSettings;
use std::time::Duration;

/// Why the Matrix side cannot start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// `/versions` failed.
    #[error("cannot reach the homeserver at {url}: {error}")]
    Unreachable {
        /// Base URL.
        url: String,
        /// Cause.
        error: String,
    },
    /// The homeserver does not accept the as_token.
    #[error(
        "the homeserver rejected matrix.as_token ({0}); is the registration file loaded (app_service_config_files) and are the tokens the same?"
    )]
    BadAsToken(String),
    /// The bot is outside the registration.
    #[error(
        "the homeserver refused the bot @{localpart} ({error}); sender_localpart or namespaces in the registration differ from the config"
    )]
    Namespace {
        /// The bot localpart.
        localpart: String,
        /// Cause.
        error: String,
    },
    /// `/whoami` named somebody else.
    #[error("the as_token belongs to {got}, not to the bot {want}")]
    WrongBot {
        /// Expected.
        want: String,
        /// Actual.
        got: String,
    },
    /// The homeserver could not reach our listener.
    #[error("the homeserver cannot reach the bridge's listener at {url}: {error}")]
    Ping {
        /// Our URL.
        url: String,
        /// Cause.
        error: String,
    },
}

/// What start-up learnt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartupInfo {
    /// Spec versions the homeserver supports.
    pub versions: Vec<String>,
    /// Homeserver → bridge round trip of the ping.
    pub ping_ms: u64,
}

fn ping_error(e: &ClientError) -> String {
    match e {
        ClientError::Http {
            status,
            errcode,
            error,
        } => match errcode.as_str() {
            "M_URL_NOT_SET" => "the registration has no url".into(),
            "M_BAD_STATUS" if error.contains("403") => {
                format!(
                    "our listener refused the homeserver's hs_token ({error}); the registration's hs_token differs from matrix.hs_token"
                )
            }
            _ => format!("{status} {errcode}: {error}"),
        },
        other => other.to_string(),
    }
}

/// `/versions`, bot registration, `/whoami`, then the appservice ping with retries.
/// The listener must already be serving (the homeserver calls it during the ping).
pub async fn startup(
    client: &MatrixClient,
    settings: &MatrixSettings,
    ping_attempts: u32,
) -> Result<StartupInfo, StartupError> {
    let mut versions = Err(ClientError::Network("not tried".into()));
    for attempt in 0..3u64 {
        versions = client.versions().await;
        if versions.as_ref().is_ok() || versions.as_ref().is_err_and(|e| !e.is_retryable()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500 * (attempt + 1))).await;
    }
    // Synapse checks a token even on /versions: a wrong as_token shows up here first.
    let versions = versions.map_err(|e| match e.errcode() {
        Some("M_UNKNOWN_TOKEN" | "M_MISSING_TOKEN") => StartupError::BadAsToken(e.to_string()),
        _ => StartupError::Unreachable {
            url: settings.homeserver_url.clone(),
            error: e.to_string(),
        },
    })?;
    let bot = settings.namer.bot_user_id();
    match client.register(&settings.namer.bot_localpart).await {
        Ok(()) => {}
        Err(e) if matches!(e.errcode(), Some("M_UNKNOWN_TOKEN" | "M_MISSING_TOKEN")) => {
            return Err(StartupError::BadAsToken(e.to_string()));
        }
        Err(e) if matches!(e.errcode(), Some("M_EXCLUSIVE" | "M_INVALID_USERNAME")) => {
            return Err(StartupError::Namespace {
                localpart: settings.namer.bot_localpart.clone(),
                error: e.to_string(),
            });
        }
        // Some homeservers refuse to register the sender itself; whoami below decides.
        Err(e) => tracing::debug!(error = %e, "Bot registration answered an error."),
    }
    let me = client.whoami(None).await.map_err(|e| match e {
        ClientError::Http { .. } => StartupError::BadAsToken(e.to_string()),
        other => StartupError::Unreachable {
            url: settings.homeserver_url.clone(),
            error: other.to_string(),
        },
    })?;
    if me != bot {
        return Err(StartupError::WrongBot { want: bot, got: me });
    }
    let mut last = String::new();
    for attempt in 0..ping_attempts.max(1) {
        let txn = format!("coi-startup-{}-{attempt}", bridge_core::store::now_ms());
        match client.ping(&settings.registration_id, &txn).await {
            Ok(ms) => {
                tracing::info!(versions = ?versions.last(), ping_ms = ms, "Matrix homeserver ready.");
                return Ok(StartupInfo {
                    versions,
                    ping_ms: ms,
                });
            }
            Err(e) => {
                last = ping_error(&e);
                if matches!(e.errcode(), Some("M_URL_NOT_SET")) {
                    break;
                }
                tracing::info!(attempt, error = %last, "Appservice ping failed; retrying.");
                tokio::time::sleep(Duration::from_millis(500 * u64::from(attempt + 1))).await;
            }
        }
    }
    Err(StartupError::Ping {
        url: settings.public_url.clone(),
        error: last,
    })
}
