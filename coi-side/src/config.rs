//! The `[email]` config section.

use bridge_core::config::{ConfigError, secret};
use serde::Deserialize;
use std::path::PathBuf;

/// How a mail server connection is secured.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SecurityMode {
    /// Implicit TLS (IMAPS 993, SMTPS 465).
    Tls,
    /// Plain connection upgraded with STARTTLS (143, 587).
    Starttls,
    /// No TLS at all (loopback only).
    Plain,
}

/// How Matrix / XMPP people appear on the email side.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PuppetMode {
    /// Each person gets their own address at `mail_domain`.
    Puppets,
    /// Everyone sends from `bridge_address`; the person's name is the From display name, the bridge is `Sender`.
    Relay,
}

/// How mail reaches the bridge.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum IngestMode {
    /// IMAP IDLE on one catch-all mailbox.
    Imap,
    /// The bridge is an LMTP server its MTA delivers to.
    Lmtp,
    /// Both (each mail is taken once; duplicates are dropped by Message-ID).
    Both,
}

/// The `[email]` section.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// Domain of puppet addresses (`<escaped id>@mail_domain`); all its mail must reach the bridge.
    pub mail_domain: String,
    /// The bridge's own address (notices; the only From in relay mode).
    pub bridge_address: String,
    /// Display name of the bridge's own address.
    #[serde(default = "default_bridge_name")]
    pub bridge_name: String,
    /// `puppets` (default) or `relay`.
    #[serde(default = "default_mode")]
    pub mode: PuppetMode,
    /// `imap` (default), `lmtp` or `both`.
    #[serde(default = "default_ingest")]
    pub ingest: IngestMode,
    /// IMAP server.
    #[serde(default)]
    pub imap_host: String,
    /// IMAP port.
    #[serde(default = "default_imap_port")]
    pub imap_port: u16,
    /// `tls`, `starttls` or `plain`.
    #[serde(default = "default_security")]
    pub imap_security: SecurityMode,
    /// IMAP login.
    #[serde(default)]
    pub imap_user: String,
    /// IMAP password (or `imap_password_file`).
    pub imap_password: Option<String>,
    /// File holding the IMAP password.
    pub imap_password_file: Option<PathBuf>,
    /// The catch-all mailbox.
    #[serde(default = "default_mailbox")]
    pub imap_mailbox: String,
    /// On the first start on a mailbox (no checkpoint yet), also read the mail already in it.
    /// Off by default, as in Delta Chat: a bridge pointed at a mailbox with history does not
    /// replay all of it into Matrix.
    #[serde(default)]
    pub imap_fetch_existing: bool,
    /// LMTP listen address, e.g. `127.0.0.1:2424`.
    #[serde(default = "default_lmtp_listen")]
    pub lmtp_listen: String,
    /// SMTP submission server.
    pub smtp_host: String,
    /// SMTP port.
    #[serde(default = "default_smtp_port")]
    pub smtp_port: u16,
    /// `tls`, `starttls` or `plain`.
    #[serde(default = "default_security")]
    pub smtp_security: SecurityMode,
    /// SMTP login (empty: no AUTH).
    #[serde(default)]
    pub smtp_user: String,
    /// SMTP password (or `smtp_password_file`).
    pub smtp_password: Option<String>,
    /// File holding the SMTP password.
    pub smtp_password_file: Option<PathBuf>,
    /// Accept self-signed or otherwise invalid TLS certificates (local test setups only).
    #[serde(default)]
    pub accept_invalid_certs: bool,
    /// Addresses and domains whose new threads to the bridge open a chat (`alice@example.org`, `example.org`).
    #[serde(default)]
    pub allow_new_chats_from: Vec<String>,
    /// Largest mail accepted, bytes.
    #[serde(default = "default_max_message_bytes")]
    pub max_message_bytes: usize,
    /// Largest attachment accepted, bytes.
    #[serde(default = "default_max_attachment_bytes")]
    pub max_attachment_bytes: usize,
    /// Deepest MIME nesting accepted.
    #[serde(default = "default_max_mime_depth")]
    pub max_mime_depth: usize,
}

fn default_bridge_name() -> String {
    "coi-bridge".to_owned()
}
fn default_mode() -> PuppetMode {
    PuppetMode::Puppets
}
fn default_ingest() -> IngestMode {
    IngestMode::Imap
}
fn default_imap_port() -> u16 {
    993
}
fn default_smtp_port() -> u16 {
    465
}
fn default_security() -> SecurityMode {
    SecurityMode::Tls
}
fn default_mailbox() -> String {
    "INBOX".to_owned()
}
fn default_lmtp_listen() -> String {
    "127.0.0.1:2424".to_owned()
}
fn default_max_message_bytes() -> usize {
    40 * 1024 * 1024
}
fn default_max_attachment_bytes() -> usize {
    30 * 1024 * 1024
}
fn default_max_mime_depth() -> usize {
    16
}

/// Secrets resolved at start-up.
#[derive(Clone, Debug)]
pub struct EmailSecrets {
    /// IMAP password (empty when IMAP is not used).
    pub imap_password: String,
    /// SMTP password (empty when no AUTH).
    pub smtp_password: String,
}

impl EmailConfig {
    /// Checks the values and reads the secrets.
    pub fn validate(&self) -> Result<EmailSecrets, ConfigError> {
        let domain_ok = |d: &str| {
            !d.is_empty()
                && d.contains('.')
                && d.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
        };
        if !domain_ok(&self.mail_domain) {
            return Err(ConfigError::invalid(
                "email.mail_domain",
                "must be a domain name such as bridge.example.org",
            ));
        }
        if !self.bridge_address.contains('@') {
            return Err(ConfigError::invalid(
                "email.bridge_address",
                "must be an email address",
            ));
        }
        if self.smtp_host.is_empty() {
            return Err(ConfigError::invalid(
                "email.smtp_host",
                "missing: the SMTP submission server",
            ));
        }
        let uses_imap = matches!(self.ingest, IngestMode::Imap | IngestMode::Both);
        let imap_password = if uses_imap {
            if self.imap_host.is_empty() {
                return Err(ConfigError::invalid(
                    "email.imap_host",
                    "missing: IMAP ingest needs a server (or set ingest = \"lmtp\")",
                ));
            }
            if self.imap_user.is_empty() {
                return Err(ConfigError::invalid(
                    "email.imap_user",
                    "missing: the login of the catch-all mailbox",
                ));
            }
            secret(
                self.imap_password.as_deref(),
                self.imap_password_file.as_deref(),
                "email.imap_password",
            )?
        } else {
            String::new()
        };
        if matches!(self.ingest, IngestMode::Lmtp | IngestMode::Both)
            && self.lmtp_listen.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(ConfigError::invalid(
                "email.lmtp_listen",
                "must be IP:PORT, e.g. 127.0.0.1:2424",
            ));
        }
        let smtp_password = if self.smtp_user.is_empty() {
            String::new()
        } else {
            secret(
                self.smtp_password.as_deref(),
                self.smtp_password_file.as_deref(),
                "email.smtp_password",
            )?
        };
        if self.max_attachment_bytes > self.max_message_bytes {
            return Err(ConfigError::invalid(
                "email.max_attachment_bytes",
                "must not exceed email.max_message_bytes",
            ));
        }
        if self.max_mime_depth == 0 || self.max_mime_depth > 64 {
            return Err(ConfigError::invalid(
                "email.max_mime_depth",
                "must be between 1 and 64",
            ));
        }
        for a in &self.allow_new_chats_from {
            if a.trim().is_empty() {
                return Err(ConfigError::invalid(
                    "email.allow_new_chats_from",
                    "entries must be addresses or domains, not empty",
                ));
            }
        }
        Ok(EmailSecrets {
            imap_password,
            smtp_password,
        })
    }

    /// Whether `addr` may open a new chat.
    pub fn may_open_chat(&self, addr: &str) -> bool {
        let addr = addr.to_ascii_lowercase();
        let domain = addr.rsplit('@').next().unwrap_or("");
        self.allow_new_chats_from.iter().any(|a| {
            let a = a.trim().to_ascii_lowercase();
            if a == "*" {
                true
            } else if a.contains('@') {
                a == addr
            } else {
                a.trim_start_matches('@') == domain
            }
        })
    }

    /// Whether `addr` is a puppet address of this bridge.
    pub fn is_puppet_address(&self, addr: &str) -> bool {
        addr.to_ascii_lowercase()
            .rsplit_once('@')
            .is_some_and(|(_, d)| d == self.mail_domain.to_ascii_lowercase())
    }
}
