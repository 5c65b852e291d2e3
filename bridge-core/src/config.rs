//! Configuration shared by every side: loading (TOML plus environment), secrets, validation errors.
//!
//! Environment scheme: every key can be overridden by `COI_BRIDGE__<SECTION>__<KEY>`, e.g.
//! `COI_BRIDGE__DATABASE__URL=postgres://…` or `COI_BRIDGE__EMAIL__IMAP_HOST=mail.example.org`.
//! Secrets are given inline (`password = "…"`) or read from a file (`password_file = "/run/secrets/x"`).

use figment::Figment;
use figment::providers::{Env, Format, Toml};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use std::path::{Path, PathBuf};

/// Prefix of environment overrides.
pub const ENV_PREFIX: &str = "COI_BRIDGE__";

/// Configuration errors; each names the key and says how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file or an override did not parse or has a wrong type.
    #[error("{0}")]
    Parse(String),
    /// A key has an invalid value.
    #[error("config key `{key}`: {problem}")]
    Invalid {
        /// Dotted key.
        key: String,
        /// What is wrong and how to fix it.
        problem: String,
    },
}

impl ConfigError {
    /// An invalid-value error.
    pub fn invalid(key: &str, problem: impl Into<String>) -> Self {
        ConfigError::Invalid {
            key: key.to_owned(),
            problem: problem.into(),
        }
    }
}

/// Loads a config type from a TOML file with environment overrides.
pub fn load<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    if !path.exists() {
        return Err(ConfigError::Parse(format!(
            "config file {} does not exist (create one with `coi-bridge example-config > {}`)",
            path.display(),
            path.display()
        )));
    }
    Figment::new()
        .merge(Toml::file(path))
        .merge(Env::prefixed(ENV_PREFIX).split("__"))
        .extract()
        .map_err(|e| {
            let mut msgs = Vec::new();
            for err in e {
                let key = if err.path.is_empty() {
                    String::new()
                } else {
                    format!("config key `{}`: ", err.path.join("."))
                };
                msgs.push(format!("{key}{}", err.kind));
            }
            ConfigError::Parse(msgs.join("; "))
        })
}

/// Resolves a secret given inline or in a file; `key` is the dotted key for messages.
pub fn secret(inline: Option<&str>, file: Option<&Path>, key: &str) -> Result<String, ConfigError> {
    match (inline, file) {
        (Some(_), Some(_)) => Err(ConfigError::invalid(
            key,
            format!("set either `{key}` or `{key}_file`, not both"),
        )),
        (Some(v), None) => Ok(v.to_owned()),
        (None, Some(p)) => std::fs::read_to_string(p)
            .map(|s| s.trim_end_matches(['\n', '\r']).to_owned())
            .map_err(|e| {
                ConfigError::invalid(
                    &format!("{key}_file"),
                    format!("cannot read {}: {e}", p.display()),
                )
            }),
        (None, None) => Err(ConfigError::invalid(
            key,
            format!("missing: set `{key}` or `{key}_file`"),
        )),
    }
}

/// The `[database]` section.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://PATH` (default, embedded) or `postgres://USER@HOST/DB`.
    #[serde(default = "default_db_url")]
    pub url: String,
    /// Pool size.
    #[serde(default = "default_max_connections")]
    pub max_connections: u32,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: default_db_url(),
            max_connections: default_max_connections(),
        }
    }
}

impl DatabaseConfig {
    /// Checks the values.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let u = self.url.as_str();
        if !(u.starts_with("sqlite:")
            || u.starts_with("postgres://")
            || u.starts_with("postgresql://"))
        {
            return Err(ConfigError::invalid(
                "database.url",
                format!("{u:?} is not supported: use sqlite://PATH or postgres://USER@HOST/DB"),
            ));
        }
        if self.max_connections == 0 {
            return Err(ConfigError::invalid(
                "database.max_connections",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

fn default_db_url() -> String {
    "sqlite://coi-bridge.db".to_owned()
}

fn default_max_connections() -> u32 {
    8
}

/// The `[logging]` section.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggingConfig {
    /// A tracing filter, e.g. `info` or `coi_side=debug,info`.
    #[serde(default = "default_level")]
    pub level: String,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        Self {
            level: default_level(),
        }
    }
}

fn default_level() -> String {
    "info".to_owned()
}

/// A path relative to the config file's folder, unless absolute.
pub fn relative_to(config: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_owned()
    } else {
        config
            .parent()
            .map(|d| d.join(p))
            .unwrap_or_else(|| p.to_owned())
    }
}
