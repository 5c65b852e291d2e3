//! SMTP submission of ready-made MIME: lettre's SMTP session on our own TCP_NODELAY sockets, with
//! a small pool of idle connections.
//!
//! lettre writes the message body and the final `.` in separate writes; on a socket without
//! TCP_NODELAY, Nagle's algorithm holds the `.` until the server's delayed ACK (~40 ms per mail on
//! Linux). lettre has no option for it, so the socket (and implicit TLS) is set up here and handed
//! to [`AsyncSmtpConnection::connect_with_transport`].

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use lettre::address::{Address, Envelope};
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, AsyncTokioStream, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::Mutex;
use tokio_rustls::TlsConnector;

use crate::transport::{Security, one_line, tls};

/// Idle connections kept for reuse.
const POOL_MAX_IDLE: usize = 4;
/// Idle connections older than this are closed instead of reused.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(50);

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

/// Sends raw RFC 5322 messages over pooled SMTP connections. Cheap to share (`&self`).
pub struct SmtpSender {
    host: String,
    port: u16,
    security: Security,
    timeout: Duration,
    hello: ClientId,
    credentials: Option<Credentials>,
    /// Parameters of the STARTTLS upgrade ([`Security::StartTls`]).
    starttls: Option<TlsParameters>,
    /// Implicit TLS ([`Security::Tls`]).
    tls: Option<(TlsConnector, ServerName<'static>)>,
    /// Idle connections, newest last; `None` once shut down.
    idle: Mutex<Option<Vec<IdleConn>>>,
    target: String,
}

struct IdleConn {
    conn: AsyncSmtpConnection,
    since: Instant,
}

/// Why one attempt failed: an SMTP-level error from lettre (classified, maybe retried), or an
/// error already classified here (connect, TLS handshake, timeout).
enum Failure {
    Smtp(lettre::transport::smtp::Error),
    Other(SendError),
}

impl Failure {
    /// The connection broke (I/O error, EOF, garbled reply) rather than the server refusing
    /// something: worth one more try on a fresh connection.
    fn is_connection_level(&self) -> bool {
        matches!(self, Failure::Smtp(e) if e.status().is_none() && !e.is_client() && !e.is_timeout())
    }

    fn into_send_error(self) -> SendError {
        match self {
            Failure::Smtp(e) => classify(&e),
            Failure::Other(e) => e,
        }
    }
}

impl SmtpSender {
    /// Prepares the sender. Does not connect yet. Must be called inside a tokio runtime.
    pub fn new(cfg: SmtpConfig) -> Result<Self, SendError> {
        if tokio::runtime::Handle::try_current().is_err() {
            return Err(SendError::permanent(
                "SmtpSender::new must run inside a tokio runtime",
            ));
        }
        let (starttls, tls) = match cfg.security {
            Security::StartTls => {
                let params = TlsParameters::builder(cfg.host.clone())
                    .dangerous_accept_invalid_certs(cfg.accept_invalid_certs)
                    .dangerous_accept_invalid_hostnames(cfg.accept_invalid_certs)
                    .build_rustls()
                    .map_err(|e| SendError::permanent(format!("TLS setup: {e}")))?;
                (Some(params), None)
            }
            Security::Tls => {
                let config = tls::client_config(cfg.accept_invalid_certs)
                    .map_err(|e| SendError::permanent(format!("TLS setup: {e}")))?;
                let name = tls::server_name(&cfg.host)
                    .map_err(|e| SendError::permanent(format!("TLS setup: {e}")))?;
                (None, Some((TlsConnector::from(Arc::new(config)), name)))
            }
            Security::Plain => (None, None),
        };
        let hello = match cfg.hello_name.parse::<std::net::IpAddr>() {
            Ok(std::net::IpAddr::V4(ip)) => ClientId::Ipv4(ip),
            Ok(std::net::IpAddr::V6(ip)) => ClientId::Ipv6(ip),
            Err(_) => ClientId::Domain(cfg.hello_name.clone()),
        };
        let credentials = match (&cfg.user, &cfg.password) {
            (Some(user), Some(password)) => Some(Credentials::new(user.clone(), password.clone())),
            (None, None) => None,
            _ => {
                return Err(SendError::permanent(
                    "SMTP user and password must be set together",
                ));
            }
        };
        Ok(Self {
            target: format!("{}:{}", cfg.host, cfg.port),
            host: cfg.host,
            port: cfg.port,
            security: cfg.security,
            timeout: cfg.timeout,
            hello,
            credentials,
            starttls,
            tls,
            idle: Mutex::new(Some(Vec::new())),
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
        match self.send_pooled(&envelope, raw).await {
            Ok(code) => {
                tracing::debug!(
                    target_server = %self.target,
                    rcpts = rcpt_to.len(),
                    bytes = raw.len(),
                    %code,
                    "SMTP message sent"
                );
                Ok(())
            }
            Err(failure) => {
                let err = failure.into_send_error();
                tracing::warn!(target_server = %self.target, error = %err, "SMTP send failed");
                Err(err)
            }
        }
    }

    /// One transaction on an idle connection if there is one, else on a new one. A reused
    /// connection that turns out broken is dropped and the mail retried once on a new one.
    async fn send_pooled(&self, envelope: &Envelope, raw: &[u8]) -> Result<String, Failure> {
        if let Some(mut conn) = self.checkout().await? {
            match self.transaction(&mut conn, envelope, raw).await {
                Err(f) if f.is_connection_level() => {
                    tracing::debug!(
                        target_server = %self.target,
                        error = %f.into_send_error(),
                        "pooled SMTP connection broken, retrying on a new one"
                    );
                }
                result => return self.finish(conn, result).await,
            }
        }
        let mut conn = self.connect().await?;
        let result = self.transaction(&mut conn, envelope, raw).await;
        self.finish(conn, result).await
    }

    /// Returns the connection to the pool if it is still usable.
    async fn finish(
        &self,
        conn: AsyncSmtpConnection,
        result: Result<String, Failure>,
    ) -> Result<String, Failure> {
        // After a timeout the session is in an unknown state; after an SMTP error lettre has
        // already sent QUIT (`has_broken`), unless nothing was sent at all.
        let reusable = match &result {
            Ok(_) | Err(Failure::Smtp(_)) => !conn.has_broken(),
            Err(Failure::Other(_)) => false,
        };
        if reusable {
            let mut idle = self.idle.lock().await;
            if let Some(idle) = idle.as_mut().filter(|v| v.len() < POOL_MAX_IDLE) {
                idle.push(IdleConn {
                    conn,
                    since: Instant::now(),
                });
            }
        }
        result
    }

    /// The newest idle connection that is not too old; older ones are closed.
    async fn checkout(&self) -> Result<Option<AsyncSmtpConnection>, Failure> {
        let mut idle = self.idle.lock().await;
        let Some(idle) = idle.as_mut() else {
            return Err(Failure::Other(SendError::Transient(
                "network: transport has been shut down".to_owned(),
            )));
        };
        while let Some(c) = idle.pop() {
            if c.since.elapsed() < POOL_IDLE_TIMEOUT {
                return Ok(Some(c.conn));
            }
        }
        Ok(None)
    }

    async fn transaction(
        &self,
        conn: &mut AsyncSmtpConnection,
        envelope: &Envelope,
        raw: &[u8],
    ) -> Result<String, Failure> {
        let resp = self.timed("sending", conn.send(envelope, raw)).await?;
        Ok(resp.code().to_string())
    }

    /// A new session: TCP (TCP_NODELAY), implicit TLS or STARTTLS, EHLO, AUTH.
    async fn connect(&self) -> Result<AsyncSmtpConnection, Failure> {
        let tcp = tokio::time::timeout(
            self.timeout,
            TcpStream::connect((self.host.as_str(), self.port)),
        )
        .await
        .map_err(|_| transient(format!("timeout: connecting to {}", self.target)))?
        .map_err(|e| transient(format!("network: connecting to {}: {e}", self.target)))?;
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!(target_server = %self.target, error = %e, "cannot set TCP_NODELAY");
        }
        let stream: Box<dyn AsyncTokioStream> = match &self.tls {
            Some((connector, name)) => {
                let tls = tokio::time::timeout(self.timeout, connector.connect(name.clone(), tcp))
                    .await
                    .map_err(|_| transient(format!("timeout: TLS handshake with {}", self.target)))?
                    .map_err(|e| transient(format!("tls: {}", one_line(&error_chain(&e), 500))))?;
                Box::new(TlsTcp(tls))
            }
            None => Box::new(tcp),
        };
        let mut conn = self
            .timed(
                "greeting",
                AsyncSmtpConnection::connect_with_transport(stream, &self.hello),
            )
            .await?;
        if let Some(params) = &self.starttls {
            self.timed("STARTTLS", conn.starttls(params.clone(), &self.hello))
                .await?;
        }
        if let Some(credentials) = &self.credentials {
            self.timed(
                "AUTH",
                conn.auth(&[Mechanism::Plain, Mechanism::Login], credentials),
            )
            .await?;
        }
        Ok(conn)
    }

    /// Runs one SMTP step under the configured timeout.
    async fn timed<T>(
        &self,
        what: &str,
        step: impl Future<Output = Result<T, lettre::transport::smtp::Error>>,
    ) -> Result<T, Failure> {
        match tokio::time::timeout(self.timeout, step).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(Failure::Smtp(e)),
            Err(_) => Err(transient(format!(
                "timeout: {what} ({}, after {:?})",
                self.target, self.timeout
            ))),
        }
    }

    /// Closes the idle connections (QUIT). Later sends fail (transient).
    pub async fn shutdown(&self) {
        let conns = self.idle.lock().await.take().unwrap_or_default();
        futures::future::join_all(conns.into_iter().map(|mut c| async move {
            let _ = tokio::time::timeout(self.timeout, c.conn.quit()).await;
        }))
        .await;
    }
}

impl std::fmt::Debug for SmtpSender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpSender")
            .field("target", &self.target)
            .field("security", &self.security)
            .finish_non_exhaustive()
    }
}

fn transient(message: String) -> Failure {
    Failure::Other(SendError::Transient(message))
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let part = s.to_string();
        if !text.contains(&part) {
            text = format!("{text}: {part}");
        }
        cur = s.source();
    }
    text
}

/// An implicit-TLS stream over a TCP_NODELAY socket, in the shape lettre takes.
#[derive(Debug)]
struct TlsTcp(tokio_rustls::client::TlsStream<TcpStream>);

impl AsyncTokioStream for TlsTcp {
    fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.0.get_ref().0.peer_addr()
    }
}

impl AsyncRead for TlsTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().0).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().0).poll_shutdown(cx)
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
