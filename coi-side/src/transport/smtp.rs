//! SMTP submission of ready-made MIME (lettre, pooled connections).

use std::time::Duration;

use lettre::address::{Address, Envelope};
use lettre::transport::smtp::PoolConfig;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport as _, Tokio1Executor};

use crate::transport::{Security, one_line};

/// SMTP client settings.
#[derive(Clone)]
pub struct SmtpConfig {
    pub host: String,
    pub port: u16,
    pub security: Security,
    /// Trust any server certificate, whatever its issuer or names (self-signed test stacks).
    /// Explicit opt-in only.
    pub accept_invalid_certs: bool,
    /// Log in (AUTH PLAIN/LOGIN) when both are set.
    pub user: Option<String>,
    pub password: Option<String>,
    /// Per-command timeout (connect, each SMTP reply).
    pub timeout: Duration,
    /// EHLO name; an IP literal or a domain.
    pub hello_name: String,
}

impl SmtpConfig {
    /// Defaults: no credentials, 60 s timeout, EHLO `localhost`.
    pub fn new(host: impl Into<String>, port: u16, security: Security) -> Self {
        Self {
            host: host.into(),
            port,
            security,
            accept_invalid_certs: false,
            user: None,
            password: None,
            timeout: Duration::from_secs(60),
            hello_name: "localhost".to_owned(),
        }
    }
}

impl std::fmt::Debug for SmtpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("accept_invalid_certs", &self.accept_invalid_certs)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .field("hello_name", &self.hello_name)
            .finish()
    }
}

/// Why a message was not sent.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// Retry later: a 4xx reply, a network or TLS problem, a timeout.
    #[error("transient: {0}")]
    Transient(String),
    /// Retrying the same message will not help: a 5xx reply (with the server's code and text),
    /// an invalid address, a configuration the server cannot serve.
    #[error("permanent{}: {message}", code.map(|c| format!(" ({c})")).unwrap_or_default())]
    Permanent { code: Option<u16>, message: String },
}

impl SendError {
    /// True for [`SendError::Permanent`].
    pub fn is_permanent(&self) -> bool {
        matches!(self, SendError::Permanent { .. })
    }

    fn permanent(message: impl Into<String>) -> Self {
        SendError::Permanent {
            code: None,
            message: message.into(),
        }
    }
}

/// Sends raw RFC 5322 messages over one pooled SMTP transport. Cheap to share (`&self`).
pub struct SmtpSender {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    target: String,
}

impl SmtpSender {
    /// Builds the transport. Does not connect yet. Must be called inside a tokio runtime (the
    /// connection pool spawns its housekeeping task).
    pub fn new(cfg: SmtpConfig) -> Result<Self, SendError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(SendError::permanent(
                "SmtpSender::new must run inside a tokio runtime",
            ));
        }
        let tls_params = || {
            TlsParameters::builder(cfg.host.clone())
                .dangerous_accept_invalid_certs(cfg.accept_invalid_certs)
                .dangerous_accept_invalid_hostnames(cfg.accept_invalid_certs)
                .build_rustls()
                .map_err(|e| SendError::permanent(format!("TLS setup: {e}")))
        };
        let tls = match cfg.security {
            Security::Tls => Tls::Wrapper(tls_params()?),
            Security::StartTls => Tls::Required(tls_params()?),
            Security::Plain => Tls::None,
        };
        let hello = match cfg.hello_name.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(ip)) => ClientId::Ipv4(ip),
            Ok(std::net::IpAddr::V6(ip)) => ClientId::Ipv6(ip),
            Err(_) => ClientId::Domain(cfg.hello_name.clone()),
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(cfg.host.clone())
            .port(cfg.port)
            .tls(tls)
            .timeout(Some(cfg.timeout))
            .hello_name(hello)
            .pool_config(
                PoolConfig::new()
                    .max_size(4)
                    .idle_timeout(Duration::from_secs(50)),
            );
        match (&cfg.user, &cfg.password) {
            (Some(user), Some(password)) => {
                builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
            }
            (None, None) => {}
            _ => {
                return Err(SendError::permanent(
                    "SMTP user and password must be set together",
                ));
            }
        }
        Ok(Self {
            transport: builder.build(),
            target: format!("{}:{}", cfg.host, cfg.port),
        })
    }

    /// Sends `raw` (CRLF line ends; lettre dot-stuffs it) with the given envelope. An empty
    /// `envelope_from` sends with the null sender `<>`.
    ///
    /// All-or-nothing: if the server refuses any recipient, nothing is sent and the refusal is
    /// returned.
    pub async fn send(
        &self,
        envelope_from: &str,
        rcpt_to: &[String],
        raw: &[u8],
    ) -> Result<(), SendError> {
        let from = if envelope_from.is_empty() {
            None
        } else {
            Some(parse_address(envelope_from)?)
        };
        let to = rcpt_to
            .iter()
            .map(|a| parse_address(a))
            .collect::<Result<Vec<_>, _>>()?;
        let envelope = Envelope::new(from, to)
            .map_err(|e| SendError::permanent(format!("invalid envelope: {e}")))?;
        match self.transport.send_raw(&envelope, raw).await {
            Ok(resp) => {
                tracing::debug!(
                    target_server = %self.target,
                    rcpts = rcpt_to.len(),
                    bytes = raw.len(),
                    code = %resp.code(),
                    "SMTP message sent"
                );
                Ok(())
            }
            Err(e) => {
                let err = classify(&e);
                tracing::warn!(target_server = %self.target, error = %err, "SMTP send failed");
                Err(err)
            }
        }
    }

    /// Closes the pooled connections.
    pub async fn shutdown(&self) {
        self.transport.shutdown().await;
    }
}

impl std::fmt::Debug for SmtpSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpSender")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

fn parse_address(a: &str) -> Result<Address, SendError> {
    a.parse::<Address>()
        .map_err(|e| SendError::permanent(format!("invalid address {:?}: {e}", one_line(a, 100))))
}

/// 4xx, network, timeout, TLS, protocol confusion → transient; 5xx and client-side refusals
/// (message the server cannot take, no usable AUTH mechanism) → permanent.
fn classify(e: &lettre::transport::smtp::Error) -> SendError {
    let text = source_text(e);
    if let Some(code) = e.status() {
        let code = u16::from(code);
        if e.is_permanent() {
            return SendError::Permanent {
                code: Some(code),
                message: text,
            };
        }
        return SendError::Transient(format!("{code} {text}"));
    }
    if e.is_client() {
        return SendError::Permanent {
            code: None,
            message: text,
        };
    }
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_tls() {
        "tls"
    } else {
        "network"
    };
    SendError::Transient(format!("{kind}: {text}"))
}

/// The server's reply text (for 4xx/5xx) or the error chain, on one line.
fn source_text(e: &lettre::transport::smtp::Error) -> String {
    use std::error::Error as _;
    let mut parts = Vec::new();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        // Error types often repeat their source in their own message.
        if !parts.iter().any(|p: &String| p.contains(&text)) {
            parts.push(text);
        }
        cur = s.source();
    }
    if parts.is_empty() {
        parts.push(e.to_string());
    }
    one_line(&parts.join(": "), 500)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_display_and_kind() {
        let p = SendError::Permanent {
            code: Some(550),
            message: "5.1.1 User unknown".to_owned(),
        };
        assert!(p.is_permanent());
        assert_eq!(p.to_string(), "permanent (550): 5.1.1 User unknown");
        assert_eq!(SendError::permanent("x").to_string(), "permanent: x");
        assert!(!SendError::Transient("x".to_owned()).is_permanent());
    }

    #[test]
    fn new_outside_runtime_is_an_error_not_a_panic() {
        let r = SmtpSender::new(SmtpConfig::new("127.0.0.1", 25, Security::Plain));
        assert!(matches!(r, Err(SendError::Permanent { .. })));
    }

    #[tokio::test]
    async fn bad_addresses_are_permanent() {
        let s = SmtpSender::new(SmtpConfig::new("127.0.0.1", 9, Security::Plain));
        let Ok(s) = s else {
            panic!("sender should build");
        };
        let r = s
            .send("not an address", &["a@b.test".to_owned()], b"x")
            .await;
        assert!(matches!(r, Err(SendError::Permanent { code: None, .. })));
        let r = s.send("a@b.test", &[], b"x").await;
        assert!(matches!(r, Err(SendError::Permanent { code: None, .. })));
    }

    #[tokio::test]
    async fn connection_refused_is_transient() {
        // Bind and drop to find a port with (almost certainly) nobody listening.
        let port = match std::net::TcpListener::bind("127.0.0.1:0") {
            Ok(l) => l.local_addr().map(|a| a.port()).unwrap_or(9),
            Err(_) => 9,
        };
        let mut cfg = SmtpConfig::new("127.0.0.1", port, Security::Plain);
        cfg.timeout = Duration::from_secs(5);
        let Ok(s) = SmtpSender::new(cfg) else {
            panic!("sender should build");
        };
        let r = s
            .send(
                "a@b.test",
                &["c@d.test".to_owned()],
                b"Subject: x\r\n\r\nx\r\n",
            )
            .await;
        assert!(matches!(r, Err(SendError::Transient(_))), "{r:?}");
    }
}
