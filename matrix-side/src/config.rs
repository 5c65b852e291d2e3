//! The `[matrix]` config section.

use crate::commands::Permissions;
use crate::ids::GhostNamer;
use bridge_core::config::{ConfigError, secret};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

/// The `[matrix]` section.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatrixConfig {
    /// Client-server API base URL of the homeserver, e.g. `http://127.0.0.1:8008`.
    pub homeserver_url: String,
    /// The homeserver's server name (the part after `:` in user ids), e.g. `matrix.test`.
    pub server_name: String,
    /// Token the bridge presents to the homeserver (or `as_token_file`).
    #[serde(default)]
    pub as_token: Option<String>,
    /// File holding `as_token`.
    #[serde(default)]
    pub as_token_file: Option<PathBuf>,
    /// Token the homeserver presents to the bridge (or `hs_token_file`).
    #[serde(default)]
    pub hs_token: Option<String>,
    /// File holding `hs_token`.
    #[serde(default)]
    pub hs_token_file: Option<PathBuf>,
    /// The bot's localpart (`sender_localpart` of the registration).
    #[serde(default = "default_bot")]
    pub bot_localpart: String,
    /// Localpart prefix of ghosts; must start with `_`.
    #[serde(default = "default_prefix")]
    pub ghost_prefix: String,
    /// Address the appservice listener binds.
    #[serde(default = "default_listen")]
    pub listen: String,
    /// URL the homeserver uses to reach the listener (default: `http://<listen>`).
    #[serde(default)]
    pub url: Option<String>,
    /// Appservice id of the registration.
    #[serde(default = "default_id")]
    pub registration_id: String,
    /// Who may use the bot's commands: `"*"`, a domain or an mxid → `relay` / `user` / `admin`.
    /// Default: users of `server_name` are `user`, others nothing.
    #[serde(default)]
    pub permissions: BTreeMap<String, String>,
    /// Largest file fetched from Matrix to send on (bytes); larger ones become a notice.
    #[serde(default = "default_max_file_bytes")]
    pub max_file_bytes: u64,
    /// Display name of ghosts: `{name}` (the person's name, else their address), `{address}`, `{side}`.
    #[serde(default = "default_displayname_template")]
    pub displayname_template: String,
    /// How many email people one Matrix user (below admin) may add per hour.
    #[serde(default = "default_email_adds_per_hour")]
    pub email_adds_per_hour: u32,
}

fn default_email_adds_per_hour() -> u32 {
    crate::commands::DEFAULT_EMAIL_ADDS_PER_HOUR
}

fn default_displayname_template() -> String {
    "{name} ({side})".to_owned()
}

fn default_max_file_bytes() -> u64 {
    30 * 1024 * 1024
}

fn default_bot() -> String {
    "coi_bot".to_owned()
}
fn default_prefix() -> String {
    "_coi_".to_owned()
}
fn default_listen() -> String {
    "127.0.0.1:29331".to_owned()
}
fn default_id() -> String {
    "coi".to_owned()
}

/// A validated `[matrix]` section with its secrets read.
#[derive(Clone, Debug)]
pub struct MatrixSettings {
    /// Homeserver base URL, without a trailing slash.
    pub homeserver_url: String,
    /// Token towards the homeserver.
    pub as_token: String,
    /// Token from the homeserver.
    pub hs_token: String,
    /// Ghost naming.
    pub namer: GhostNamer,
    /// Listener address.
    pub listen: SocketAddr,
    /// URL the homeserver uses for us.
    pub public_url: String,
    /// Appservice id.
    pub registration_id: String,
    /// Command permissions.
    pub permissions: Permissions,
    /// Largest file fetched from Matrix.
    pub max_file_bytes: u64,
    /// Ghost display name template.
    pub displayname_template: String,
}

fn localpart_ok(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'=' | b'-' | b'/'))
}

impl MatrixConfig {
    /// Checks every key and reads the token files.
    pub fn validate(&self) -> Result<MatrixSettings, ConfigError> {
        let url = self.homeserver_url.trim_end_matches('/');
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(ConfigError::invalid(
                "matrix.homeserver_url",
                "must start with http:// or https://",
            ));
        }
        if self.server_name.is_empty() || self.server_name.contains(['/', '@', ' ']) {
            return Err(ConfigError::invalid(
                "matrix.server_name",
                "must be the homeserver's server name, e.g. `example.org`",
            ));
        }
        if !localpart_ok(&self.bot_localpart) {
            return Err(ConfigError::invalid(
                "matrix.bot_localpart",
                "use only a-z 0-9 . _ = - /",
            ));
        }
        if !self.ghost_prefix.starts_with('_') || !localpart_ok(&self.ghost_prefix) {
            return Err(ConfigError::invalid(
                "matrix.ghost_prefix",
                "must start with `_` and use only a-z 0-9 . _ = - /",
            ));
        }
        if self.bot_localpart.starts_with(&self.ghost_prefix) {
            return Err(ConfigError::invalid(
                "matrix.bot_localpart",
                "must not start with `ghost_prefix`",
            ));
        }
        let listen: SocketAddr = self.listen.parse().map_err(|_| {
            ConfigError::invalid("matrix.listen", "must be an address like 127.0.0.1:29331")
        })?;
        if self.registration_id.is_empty() {
            return Err(ConfigError::invalid(
                "matrix.registration_id",
                "must not be empty",
            ));
        }
        let as_token = secret(
            self.as_token.as_deref(),
            self.as_token_file.as_deref(),
            "matrix.as_token",
        )?;
        let hs_token = secret(
            self.hs_token.as_deref(),
            self.hs_token_file.as_deref(),
            "matrix.hs_token",
        )?;
        if as_token.is_empty() || hs_token.is_empty() || as_token == hs_token {
            return Err(ConfigError::invalid(
                "matrix.hs_token",
                "as_token and hs_token must be set and differ (`coi-bridge generate-registration` makes them)",
            ));
        }
        if !self.displayname_template.contains("{name}")
            && !self.displayname_template.contains("{address}")
        {
            return Err(ConfigError::invalid(
                "matrix.displayname_template",
                "must contain {name} or {address}, e.g. \"{name} ({side})\"",
            ));
        }
        let mut permissions = Permissions::parse(&self.server_name, &self.permissions)
            .map_err(|e| ConfigError::invalid("matrix.permissions", e))?;
        if self.email_adds_per_hour == 0 {
            return Err(ConfigError::invalid(
                "matrix.email_adds_per_hour",
                "must be at least 1 (restrict who may add email people with [matrix.permissions])",
            ));
        }
        permissions.email_adds_per_hour = self.email_adds_per_hour;
        Ok(MatrixSettings {
            permissions,
            homeserver_url: url.to_owned(),
            as_token,
            hs_token,
            namer: GhostNamer {
                prefix: self.ghost_prefix.clone(),
                server_name: self.server_name.clone(),
                bot_localpart: self.bot_localpart.clone(),
            },
            listen,
            public_url: self
                .url
                .clone()
                .unwrap_or_else(|| format!("http://{listen}")),
            registration_id: self.registration_id.clone(),
            max_file_bytes: self.max_file_bytes,
            displayname_template: self.displayname_template.clone(),
        })
    }

    /// A config for tests and tools, with the defaults.
    pub fn new(homeserver_url: &str, server_name: &str, as_token: &str, hs_token: &str) -> Self {
        Self {
            homeserver_url: homeserver_url.to_owned(),
            server_name: server_name.to_owned(),
            as_token: Some(as_token.to_owned()),
            as_token_file: None,
            hs_token: Some(hs_token.to_owned()),
            hs_token_file: None,
            bot_localpart: default_bot(),
            ghost_prefix: default_prefix(),
            listen: default_listen(),
            url: None,
            registration_id: default_id(),
            permissions: BTreeMap::new(),
            max_file_bytes: default_max_file_bytes(),
            displayname_template: default_displayname_template(),
            email_adds_per_hour: default_email_adds_per_hour(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn validates() {
        let c = MatrixConfig::new("http://127.0.0.1:8008/", "matrix.test", "a", "h");
        let s = c.validate().unwrap();
        assert_eq!(s.homeserver_url, "http://127.0.0.1:8008");
        assert_eq!(s.public_url, "http://127.0.0.1:29331");
        let mut bad = c.clone();
        bad.ghost_prefix = "coi_".into();
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("ghost_prefix")
        );
        let mut bad = c.clone();
        bad.hs_token = Some("a".into());
        assert!(bad.validate().is_err());
        let mut bad = c;
        bad.homeserver_url = "matrix.test".into();
        assert!(bad.validate().is_err());
    }
}
