//! The bridge's whole configuration: the sections each crate owns, put together.

use bridge_core::config::{ConfigError, DatabaseConfig, LoggingConfig};
use coi_side::EmailConfig;
use coi_side::config::EmailSecrets;
use matrix_side::{MatrixConfig, MatrixSettings};
use serde::Deserialize;
use std::path::Path;

/// The example configuration, fully commented.
pub const EXAMPLE: &str = include_str!("../deploy/example-config.toml");

/// The configuration file.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// `[database]`.
    #[serde(default)]
    pub database: DatabaseConfig,
    /// `[logging]`.
    #[serde(default)]
    pub logging: LoggingConfig,
    /// `[email]`.
    pub email: EmailConfig,
    /// `[matrix]`: the appservice side (optional; without it the bridge runs email only).
    #[serde(default)]
    pub matrix: Option<MatrixConfig>,
}

/// A validated configuration with its secrets read.
#[derive(Clone, Debug)]
pub struct Validated {
    /// The configuration.
    pub config: Config,
    /// Email secrets.
    pub email: EmailSecrets,
    /// The Matrix side, validated, if configured.
    pub matrix: Option<MatrixSettings>,
}

impl Config {
    /// Loads and validates.
    pub fn load(path: &Path) -> Result<Validated, ConfigError> {
        let config = Self::parse(path)?;
        config.database.validate()?;
        let email = config.email.validate()?;
        let matrix = config
            .matrix
            .as_ref()
            .map(MatrixConfig::validate)
            .transpose()?;
        Ok(Validated {
            config,
            email,
            matrix,
        })
    }

    /// Parses without validating (for commands that fill in missing parts, like `generate-registration`).
    pub fn parse(path: &Path) -> Result<Config, ConfigError> {
        let mut config: Config = bridge_core::config::load(path)?;
        if let Some(rest) = config.database.url.strip_prefix("sqlite://")
            && !rest.starts_with('/')
            && !rest.starts_with(':')
        {
            let abs = bridge_core::config::relative_to(path, Path::new(rest));
            config.database.url = format!("sqlite://{}", abs.display());
        }
        Ok(config)
    }
}
