//! IMAP ingest: one mailbox, catch up by UID, then IDLE; reconnect forever.
//!
//! Per session: connect (TLS / STARTTLS / plain), LOGIN, SELECT, compare UIDVALIDITY with the
//! stored [`Checkpoint`], then repeat { fetch everything above the checkpoint in bounded
//! batches, hand each mail to the sink in UID order, advance the checkpoint after each
//! commit; IDLE until the server reports a change }.
//!
//! Failure handling: any network/protocol error or a `Transient` verdict from the sink ends the
//! session; the next one starts after an exponential backoff (reset once a session got as far as
//! IDLE). The checkpoint only moves forward past mail the sink accepted (or durably rejected), so
//! nothing is skipped; mail accepted but not yet checkpointed when the connection died is offered
//! again (the hub dedupes by Message-ID).

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use async_imap::extensions::idle::IdleResponse;
use async_imap::imap_proto;
use async_imap::types::UnsolicitedResponse;
use async_imap::{Client, Session};
use futures::TryStreamExt as _;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use crate::transport::{
    Backoff, Checkpoint, CheckpointStore, InboundMail, InboundSink, InboundSource, IngestError,
    Security, Shutdown, one_line, tls,
};

/// IMAP ingest settings.
#[derive(Clone)]
pub struct ImapConfig {
    pub host: String,
    pub port: u16,
    pub security: Security,
    /// Trust any server certificate (self-signed test stacks). Explicit opt-in only.
    pub accept_invalid_certs: bool,
    pub user: String,
    pub password: String,
    /// Mailbox to watch (default `INBOX`).
    pub mailbox: String,
    /// IDLE is re-issued after this long without server traffic (default 25 min; RFC 2177 asks
    /// for less than 29).
    pub idle_timeout: Duration,
    /// Limit for TCP connect + TLS + greeting + LOGIN + SELECT (default 30 s).
    pub connect_timeout: Duration,
    /// Limit for every later command, including one batch fetch (default 120 s).
    pub command_timeout: Duration,
    /// First reconnect delay (default 1 s); doubles per failed attempt up to `backoff_max`.
    pub backoff_min: Duration,
    /// Longest reconnect delay (default 5 min).
    pub backoff_max: Duration,
    /// Messages per `UID FETCH … BODY.PEEK[]` round (default 50).
    pub batch_size: usize,
    /// Bytes (by `RFC822.SIZE`) per fetch round (default 16 MiB); a bigger single message is
    /// fetched alone.
    pub batch_max_bytes: u64,
    /// Poll interval for servers without IDLE (default 60 s).
    pub poll_interval: Duration,
    /// With no checkpoint yet (the first start on a mailbox): read the mail already there (`true`,
    /// the default here) or start with the next new mail (`false`, as Delta Chat does by default).
    pub fetch_existing: bool,
}

impl ImapConfig {
    /// A config with the defaults documented on each field.
    pub fn new(
        host: impl Into<String>,
        port: u16,
        security: Security,
        user: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        Self {
            host: host.into(),
            port,
            security,
            accept_invalid_certs: false,
            user: user.into(),
            password: password.into(),
            mailbox: "INBOX".to_owned(),
            idle_timeout: Duration::from_secs(25 * 60),
            connect_timeout: Duration::from_secs(30),
            command_timeout: Duration::from_secs(120),
            backoff_min: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
            batch_size: 50,
            batch_max_bytes: 16 * 1024 * 1024,
            poll_interval: Duration::from_secs(60),
            fetch_existing: true,
        }
    }
}

impl fmt::Debug for ImapConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImapConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("accept_invalid_certs", &self.accept_invalid_certs)
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .field("mailbox", &self.mailbox)
            .field("idle_timeout", &self.idle_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("command_timeout", &self.command_timeout)
            .field("backoff_min", &self.backoff_min)
            .field("backoff_max", &self.backoff_max)
            .field("batch_size", &self.batch_size)
            .field("batch_max_bytes", &self.batch_max_bytes)
            .field("poll_interval", &self.poll_interval)
            .finish()
    }
}

/// What ended an IMAP session (or, for [`ImapError::Config`], the whole ingest).
#[derive(thiserror::Error, Debug)]
pub enum ImapError {
    /// The configuration can never work (e.g. an invalid TLS server name).
    #[error("invalid IMAP configuration: {0}")]
    Config(String),
    #[error("timed out: {0}")]
    Timeout(&'static str),
    #[error("io: {0}")]
    Io(#[from] io::Error),
    #[error("imap: {0}")]
    Imap(#[from] async_imap::error::Error),
    #[error("login failed: {0}")]
    Login(String),
    #[error("protocol: {0}")]
    Protocol(String),
    #[error("sink: {0}")]
    Sink(IngestError),
    #[error("checkpoint store: {0}")]
    Checkpoint(IngestError),
}

/// Runs the ingest of `cfg.mailbox` until `shutdown` resolves; reconnects forever.
///
/// Returns `Ok(())` after shutdown, `Err(ImapError::Config)` at once if the configuration can
/// never work. Everything else (server down, wrong password, sink or checkpoint store failing)
/// is logged with `tracing::warn!` once per attempt and retried with exponential backoff.
///
/// Shutdown interrupts connecting, IDLE, fetching and the backoff sleep promptly; a running
/// `sink.accept` (and the checkpoint save after it) is allowed to finish.
pub async fn run_ingest<F>(
    cfg: ImapConfig,
    sink: Arc<dyn InboundSink>,
    checkpoints: Arc<dyn CheckpointStore>,
    shutdown: F,
) -> Result<(), ImapError>
where
    F: Future<Output = ()> + Send,
{
    let connector = Connector::new(&cfg)?;
    let mut shutdown = Shutdown::new(shutdown);
    let mut backoff = Backoff::new(cfg.backoff_min, cfg.backoff_max);
    let mut attempt: u64 = 0;
    let ctx = SessionCtx {
        cfg: &cfg,
        connector: &connector,
        sink: &*sink,
        checkpoints: &*checkpoints,
    };
    loop {
        attempt += 1;
        let mut reached_idle = false;
        match ctx.run(&mut shutdown, &mut reached_idle).await {
            Ok(()) => {
                tracing::info!(mailbox = %cfg.mailbox, "IMAP ingest stopped");
                return Ok(());
            }
            Err(e) => {
                if reached_idle {
                    backoff.reset();
                    attempt = 1;
                }
                let delay = backoff.next_delay();
                tracing::warn!(
                    host = %cfg.host,
                    port = cfg.port,
                    mailbox = %cfg.mailbox,
                    attempt,
                    retry_in_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                    error = %e,
                    "IMAP ingest session ended"
                );
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = shutdown.wait() => {
                        tracing::info!(mailbox = %cfg.mailbox, "IMAP ingest stopped");
                        return Ok(());
                    }
                }
            }
        }
    }
}

/// TLS material prepared once (a bad server name is a configuration error).
struct Connector {
    tls: Option<(TlsConnector, rustls::pki_types::ServerName<'static>)>,
}

impl Connector {
    fn new(cfg: &ImapConfig) -> Result<Self, ImapError> {
        let tls = match cfg.security {
            Security::Plain => None,
            Security::Tls | Security::StartTls => {
                let config = tls::client_config(cfg.accept_invalid_certs)
                    .map_err(|e| ImapError::Config(format!("TLS setup: {e}")))?;
                let name = tls::server_name(&cfg.host).map_err(ImapError::Config)?;
                Some((TlsConnector::from(Arc::new(config)), name))
            }
        };
        Ok(Self { tls })
    }

    async fn wrap(&self, tcp: TcpStream) -> Result<ImapStream, ImapError> {
        let Some((connector, name)) = &self.tls else {
            return Err(ImapError::Config("TLS requested without TLS setup".into()));
        };
        let tls = connector.connect(name.clone(), tcp).await?;
        Ok(ImapStream::Tls(Box::new(tls)))
    }
}

/// Plain or TLS connection under one type, as async-imap wants one stream type.
#[derive(Debug)]
enum ImapStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for ImapStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ImapStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            ImapStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for ImapStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            ImapStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            ImapStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ImapStream::Plain(s) => Pin::new(s).poll_flush(cx),
            ImapStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ImapStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            ImapStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

type ImapSession = Session<ImapStream>;

/// Awaits `fut` with a time limit.
async fn timed<T, E, Fut>(limit: Duration, what: &'static str, fut: Fut) -> Result<T, ImapError>
where
    Fut: Future<Output = Result<T, E>>,
    ImapError: From<E>,
{
    match tokio::time::timeout(limit, fut).await {
        Ok(r) => r.map_err(ImapError::from),
        Err(_) => Err(ImapError::Timeout(what)),
    }
}

/// What SELECT told about the mailbox.
#[derive(Clone, Copy, Debug)]
struct Selected {
    uidvalidity: u32,
    uid_next: Option<u32>,
    exists: u32,
}

/// One mail listed above the checkpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Listed {
    uid: u32,
    size: u64,
}

/// How a session's IDLE ended.
enum Wake {
    /// The server said something (new mail, expunge, flags…): fetch again.
    Changed,
    /// Quiet for `idle_timeout` (or poll interval): re-IDLE, after a cheap fetch.
    Timeout,
    Shutdown,
}

/// Result of one fetch round.
enum Round {
    /// This many mails were handled (0: nothing new).
    Handled(usize),
    Shutdown,
}

struct SessionCtx<'a> {
    cfg: &'a ImapConfig,
    connector: &'a Connector,
    sink: &'a dyn InboundSink,
    checkpoints: &'a dyn CheckpointStore,
}

impl SessionCtx<'_> {
    /// One session. `Ok(())` only on shutdown. Sets `reached_idle` once caught up.
    async fn run<F: Future<Output = ()>>(
        &self,
        shutdown: &mut Shutdown<F>,
        reached_idle: &mut bool,
    ) -> Result<(), ImapError> {
        let cfg = self.cfg;
        let established = tokio::select! {
            r = tokio::time::timeout(cfg.connect_timeout, self.establish()) => r,
            () = shutdown.wait() => return Ok(()),
        };
        let (mut session, selected, has_idle) = match established {
            Ok(r) => r?,
            Err(_) => return Err(ImapError::Timeout("connect, login and select")),
        };

        let uidvalidity = selected.uidvalidity;
        let mut last = self.start_uid(selected).await?;
        tracing::info!(
            host = %cfg.host,
            mailbox = %cfg.mailbox,
            uidvalidity,
            last_uid = last,
            idle = has_idle,
            "IMAP ingest session established"
        );

        loop {
            // Catch up until a round finds nothing and no EXISTS arrived meanwhile.
            loop {
                drain_exists(&session);
                let handled = match self
                    .fetch_round(&mut session, uidvalidity, &mut last, shutdown)
                    .await?
                {
                    Round::Handled(n) => n,
                    Round::Shutdown => {
                        logout(session, cfg.command_timeout).await;
                        return Ok(());
                    }
                };
                if handled == 0 && !drain_exists(&session) {
                    break;
                }
            }
            *reached_idle = true;

            let wake;
            (session, wake) = if has_idle {
                self.idle(session, shutdown).await?
            } else {
                self.poll_wait(session, shutdown).await?
            };
            match wake {
                Wake::Shutdown => {
                    logout(session, cfg.command_timeout).await;
                    return Ok(());
                }
                Wake::Changed | Wake::Timeout => {}
            }
        }
    }

    /// Connect, secure, LOGIN, SELECT. Returns the session, UIDVALIDITY and IDLE support.
    async fn establish(&self) -> Result<(ImapSession, Selected, bool), ImapError> {
        let cfg = self.cfg;
        let tcp = TcpStream::connect((cfg.host.as_str(), cfg.port)).await?;
        let _ = tcp.set_nodelay(true);
        let stream = match cfg.security {
            Security::Tls => self.connector.wrap(tcp).await?,
            Security::StartTls | Security::Plain => ImapStream::Plain(tcp),
        };
        let mut client = Client::new(stream);
        let greeting = client
            .read_response()
            .await?
            .ok_or_else(|| ImapError::Protocol("connection closed before the greeting".into()))?;
        if let Some(text) = bye_text(greeting.parsed()) {
            return Err(ImapError::Protocol(format!("server said BYE: {text}")));
        }

        if cfg.security == Security::StartTls {
            client.run_command_and_check_ok("STARTTLS", None).await?;
            let ImapStream::Plain(tcp) = client.into_inner() else {
                return Err(ImapError::Protocol("STARTTLS on a TLS stream".into()));
            };
            client = Client::new(self.connector.wrap(tcp).await?);
        }

        let mut session = client
            .login(&cfg.user, &cfg.password)
            .await
            .map_err(|(e, _client)| ImapError::Login(one_line(&e.to_string(), 300)))?;
        let caps = session.capabilities().await?;
        let has_idle = caps.has_str("IDLE");
        let mailbox = session.select(&cfg.mailbox).await?;
        let uidvalidity = mailbox
            .uid_validity
            .ok_or_else(|| ImapError::Protocol("SELECT returned no UIDVALIDITY".into()))?;
        Ok((
            session,
            Selected {
                uidvalidity,
                uid_next: mailbox.uid_next,
                exists: mailbox.exists,
            },
            has_idle,
        ))
    }

    /// The UID to continue after, from the checkpoint (0 after a UIDVALIDITY change).
    async fn start_uid(&self, selected: Selected) -> Result<u32, ImapError> {
        let uidvalidity = selected.uidvalidity;
        let mailbox = &self.cfg.mailbox;
        match self
            .checkpoints
            .load(mailbox)
            .await
            .map_err(ImapError::Checkpoint)?
        {
            Some(cp) if cp.uidvalidity == uidvalidity => Ok(cp.last_uid),
            Some(cp) => {
                tracing::warn!(
                    %mailbox,
                    old_uidvalidity = cp.uidvalidity,
                    new_uidvalidity = uidvalidity,
                    old_last_uid = cp.last_uid,
                    "IMAP UIDVALIDITY changed: re-reading the whole mailbox (the hub dedupes)"
                );
                let cp = Checkpoint {
                    uidvalidity,
                    last_uid: 0,
                };
                self.checkpoints
                    .save(mailbox, cp)
                    .await
                    .map_err(ImapError::Checkpoint)?;
                Ok(0)
            }
            None if self.cfg.fetch_existing => {
                tracing::info!(%mailbox, uidvalidity, "no IMAP checkpoint yet: reading the whole mailbox");
                Ok(0)
            }
            None => match selected.uid_next {
                Some(next) => {
                    let last_uid = next.saturating_sub(1);
                    tracing::info!(
                        %mailbox,
                        uidvalidity,
                        skipped = selected.exists,
                        "first start on this mailbox: starting with new mail; the mail already \
                         there is left alone (email.imap_fetch_existing = true reads it)"
                    );
                    self.checkpoints
                        .save(
                            mailbox,
                            Checkpoint {
                                uidvalidity,
                                last_uid,
                            },
                        )
                        .await
                        .map_err(ImapError::Checkpoint)?;
                    Ok(last_uid)
                }
                None => {
                    tracing::warn!(%mailbox, uidvalidity, "no IMAP checkpoint and no UIDNEXT from the server: reading the whole mailbox");
                    Ok(0)
                }
            },
        }
    }

    /// Lists everything above `last` once, then fetches and delivers it batch by batch.
    /// Returns how many mails it handled.
    async fn fetch_round<F: Future<Output = ()>>(
        &self,
        session: &mut ImapSession,
        uidvalidity: u32,
        last: &mut u32,
        shutdown: &mut Shutdown<F>,
    ) -> Result<Round, ImapError> {
        let cfg = self.cfg;
        // 1. What is there? (`N:*` always includes the highest message, even below N: filter.)
        let from = last.saturating_add(1);
        let listing = timed(cfg.command_timeout, "UID FETCH (list)", async {
            let fetches: Vec<_> = session
                .uid_fetch(format!("{from}:*"), "(UID RFC822.SIZE)")
                .await?
                .try_collect()
                .await?;
            Ok::<_, async_imap::error::Error>(fetches)
        });
        let listing = tokio::select! {
            r = listing => r?,
            () = shutdown.wait() => return Ok(Round::Shutdown),
        };
        let listed: Vec<Listed> = listing
            .iter()
            .filter_map(|f| {
                f.uid.map(|uid| Listed {
                    uid,
                    size: u64::from(f.size.unwrap_or(0)),
                })
            })
            .collect();
        let mut pending = pending_after(listed, *last);
        let mut handled = 0;
        while !pending.is_empty() {
            let n = batch_len(&pending, cfg.batch_size, cfg.batch_max_bytes);
            let batch: Vec<Listed> = pending.drain(..n).collect();

            // 2. Fetch one batch.
            let set = uid_set(batch.iter().map(|l| l.uid));
            let mut bodies: BTreeMap<u32, Vec<u8>> = BTreeMap::new();
            let fetching = timed(cfg.command_timeout, "UID FETCH (bodies)", async {
                let mut stream = session.uid_fetch(&set, "(UID BODY.PEEK[])").await?;
                while let Some(f) = stream.try_next().await? {
                    if let (Some(uid), Some(body)) = (f.uid, f.body()) {
                        bodies.insert(uid, body.to_vec());
                    }
                }
                Ok::<_, async_imap::error::Error>(())
            });
            tokio::select! {
                r = fetching => r?,
                () = shutdown.wait() => return Ok(Round::Shutdown),
            }
            tracing::debug!(
                mailbox = %cfg.mailbox,
                first = batch.first().map(|l| l.uid),
                last = batch.last().map(|l| l.uid),
                fetched = bodies.len(),
                "IMAP batch fetched"
            );

            // 3. Deliver in UID order; checkpoint after each commit.
            for item in &batch {
                let Some(raw) = bodies.remove(&item.uid) else {
                    // Expunged meanwhile, or the connection broke mid-response. Retry in a
                    // new session rather than skip: the next listing will tell which.
                    return Err(ImapError::Protocol(format!(
                        "UID {} listed but its body was not returned",
                        item.uid
                    )));
                };
                let mail = InboundMail {
                    raw,
                    source: InboundSource::Imap {
                        mailbox: cfg.mailbox.clone(),
                        uidvalidity,
                        uid: item.uid,
                    },
                };
                match self.sink.accept(mail).await {
                    Ok(()) => {}
                    Err(IngestError::Permanent(reason)) => {
                        tracing::warn!(
                            mailbox = %cfg.mailbox,
                            uid = item.uid,
                            reason = %one_line(&reason, 300),
                            "sink rejected mail permanently (kept as rejected); moving on"
                        );
                    }
                    Err(e @ IngestError::Transient(_)) => return Err(ImapError::Sink(e)),
                }
                self.checkpoints
                    .save(
                        &cfg.mailbox,
                        Checkpoint {
                            uidvalidity,
                            last_uid: item.uid,
                        },
                    )
                    .await
                    .map_err(ImapError::Checkpoint)?;
                *last = item.uid;
                handled += 1;
                if shutdown.is_fired() {
                    return Ok(Round::Shutdown);
                }
            }
        }
        Ok(Round::Handled(handled))
    }

    /// One IDLE cycle: IDLE, wait for news / timeout / shutdown, DONE.
    async fn idle<F: Future<Output = ()>>(
        &self,
        session: ImapSession,
        shutdown: &mut Shutdown<F>,
    ) -> Result<(ImapSession, Wake), ImapError> {
        let cfg = self.cfg;
        let mut handle = session.idle();
        timed(cfg.command_timeout, "IDLE", handle.init()).await?;
        let wake = {
            // async-imap's own timeout restarts on every server keepalive (Dovecot sends
            // "* OK Still here" every few minutes); the deadline below re-issues IDLE after
            // `idle_timeout` regardless, as RFC 2177 asks.
            let (wait, stop) = handle.wait_with_timeout(cfg.idle_timeout);
            tokio::pin!(wait);
            let mut stop = Some(stop);
            let response = tokio::select! {
                r = &mut wait => r?,
                () = tokio::time::sleep(cfg.idle_timeout) => {
                    interrupt_idle(&mut stop, &mut wait).await?;
                    IdleResponse::Timeout
                }
                () = shutdown.wait() => {
                    interrupt_idle(&mut stop, &mut wait).await?;
                    IdleResponse::ManualInterrupt
                }
            };
            match response {
                IdleResponse::NewData(data) => {
                    if let Some(text) = bye_text(data.parsed()) {
                        return Err(ImapError::Protocol(format!("server said BYE: {text}")));
                    }
                    tracing::trace!(response = ?data.parsed(), "IDLE woke up");
                    Wake::Changed
                }
                IdleResponse::Timeout => Wake::Timeout,
                // We still hold the stop source, so this is the stream ending: EOF.
                IdleResponse::ManualInterrupt if stop.is_some() => {
                    return Err(ImapError::Protocol("connection closed during IDLE".into()));
                }
                IdleResponse::ManualInterrupt => Wake::Shutdown,
            }
        };
        let session = timed(cfg.command_timeout, "DONE", handle.done()).await?;
        Ok((session, wake))
    }

    /// For servers without IDLE: wait `poll_interval`, then NOOP (which also reveals EOF).
    async fn poll_wait<F: Future<Output = ()>>(
        &self,
        mut session: ImapSession,
        shutdown: &mut Shutdown<F>,
    ) -> Result<(ImapSession, Wake), ImapError> {
        tokio::select! {
            () = tokio::time::sleep(self.cfg.poll_interval) => {}
            () = shutdown.wait() => return Ok((session, Wake::Shutdown)),
        }
        timed(self.cfg.command_timeout, "NOOP", session.noop()).await?;
        Ok((session, Wake::Timeout))
    }
}

/// Ends an IDLE wait early: dropping the stop source makes `wait` resolve (with
/// `ManualInterrupt`) as soon as it is polled.
async fn interrupt_idle<S, W>(stop: &mut Option<S>, wait: W) -> Result<(), ImapError>
where
    W: Future<Output = async_imap::error::Result<IdleResponse>>,
{
    drop(stop.take());
    match tokio::time::timeout(Duration::from_secs(5), wait).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Err(ImapError::Timeout("IDLE interrupt")),
    }
}

/// The text of an untagged `BYE`, if `resp` is one.
fn bye_text(resp: &imap_proto::Response<'_>) -> Option<String> {
    match resp {
        imap_proto::Response::Data {
            status: imap_proto::Status::Bye,
            outcome,
        } => Some(one_line(outcome.information.as_deref().unwrap_or(""), 200)),
        _ => None,
    }
}

/// Empties the unsolicited-response queue; true if it held an EXISTS (new mail may be there).
fn drain_exists(session: &ImapSession) -> bool {
    let mut exists = false;
    while let Ok(r) = session.unsolicited_responses.try_recv() {
        if matches!(r, UnsolicitedResponse::Exists(_)) {
            exists = true;
        }
    }
    exists
}

async fn logout(mut session: ImapSession, limit: Duration) {
    let limit = limit.min(Duration::from_secs(5));
    if let Err(e) = timed(limit, "LOGOUT", session.logout()).await {
        tracing::debug!(error = %e, "IMAP LOGOUT failed");
    }
}

/// The listed UIDs above `last`, ascending, without duplicates.
fn pending_after(mut listed: Vec<Listed>, last: u32) -> Vec<Listed> {
    listed.retain(|l| l.uid > last);
    listed.sort_by_key(|l| l.uid);
    listed.dedup_by_key(|l| l.uid);
    listed
}

/// How many of `pending` form the next batch: at most `max_count` mails and `max_bytes` bytes,
/// but always at least one mail (if there is one).
fn batch_len(pending: &[Listed], max_count: usize, max_bytes: u64) -> usize {
    let mut bytes = 0u64;
    let mut n = 0;
    for l in pending {
        if n >= max_count.max(1) || (n > 0 && bytes.saturating_add(l.size) > max_bytes) {
            break;
        }
        bytes = bytes.saturating_add(l.size);
        n += 1;
    }
    n
}

/// `1,3:5,9` from ascending UIDs.
fn uid_set(uids: impl IntoIterator<Item = u32>) -> String {
    let mut out = String::new();
    let mut run: Option<(u32, u32)> = None;
    let push = |out: &mut String, (a, b): (u32, u32)| {
        if !out.is_empty() {
            out.push(',');
        }
        if a == b {
            out.push_str(&a.to_string());
        } else {
            out.push_str(&format!("{a}:{b}"));
        }
    };
    for uid in uids {
        run = match run {
            Some((a, b)) if b.checked_add(1) == Some(uid) => Some((a, uid)),
            Some(r) => {
                push(&mut out, r);
                Some((uid, uid))
            }
            None => Some((uid, uid)),
        };
    }
    if let Some(r) = run {
        push(&mut out, r);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(uid: u32, size: u64) -> Listed {
        Listed { uid, size }
    }

    #[test]
    fn star_quirk_returns_nothing_new() {
        // `UID FETCH 8:*` on a mailbox whose highest UID is 7 returns UID 7.
        assert!(pending_after(vec![l(7, 10)], 7).is_empty());
    }

    #[test]
    fn pending_is_sorted_and_deduped_and_batches_bounded() {
        let listed = vec![l(9, 1), l(3, 1), l(5, 1), l(3, 1), l(2, 1), l(11, 1)];
        let pending = pending_after(listed, 2);
        let uids: Vec<u32> = pending.iter().map(|x| x.uid).collect();
        assert_eq!(uids, vec![3, 5, 9, 11]);
        assert_eq!(batch_len(&pending, 3, 1000), 3);
        assert_eq!(batch_len(&pending, 0, 1000), 1);
        assert_eq!(batch_len(&[], 3, 1000), 0);
    }

    #[test]
    fn byte_budget_but_at_least_one() {
        let pending = vec![l(1, 600), l(2, 600), l(3, 10)];
        assert_eq!(batch_len(&pending, 50, 1000), 1);
        assert_eq!(batch_len(&pending, 50, 100), 1);
        assert_eq!(batch_len(&pending, 50, 1210), 3);
    }

    #[test]
    fn uid_sets_compress_runs() {
        assert_eq!(uid_set([1, 2, 3, 5, 7, 8]), "1:3,5,7:8");
        assert_eq!(uid_set([4]), "4");
        assert_eq!(
            uid_set([u32::MAX - 1, u32::MAX]),
            format!("{}:{}", u32::MAX - 1, u32::MAX)
        );
        assert_eq!(uid_set(std::iter::empty()), "");
    }

    #[test]
    fn config_debug_hides_password() {
        let cfg = ImapConfig::new("h", 143, Security::Plain, "u", "secret");
        assert!(!format!("{cfg:?}").contains("secret"));
    }

    #[test]
    fn bad_tls_name_is_a_config_error() {
        let cfg = ImapConfig::new("not a host", 993, Security::Tls, "u", "p");
        assert!(matches!(Connector::new(&cfg), Err(ImapError::Config(_))));
    }

    #[tokio::test]
    async fn ingest_future_is_send() {
        fn assert_send<T: Send>(_: &T) {}
        struct Nop;
        #[async_trait::async_trait]
        impl InboundSink for Nop {
            async fn accept(&self, _: InboundMail) -> Result<(), IngestError> {
                Ok(())
            }
        }
        #[async_trait::async_trait]
        impl CheckpointStore for Nop {
            async fn load(&self, _: &str) -> Result<Option<Checkpoint>, IngestError> {
                Ok(None)
            }
            async fn save(&self, _: &str, _: Checkpoint) -> Result<(), IngestError> {
                Ok(())
            }
        }
        let fut = run_ingest(
            ImapConfig::new("127.0.0.1", 1, Security::Plain, "u", "p"),
            Arc::new(Nop),
            Arc::new(Nop),
            async {},
        );
        assert_send(&fut);
        // Shutdown already resolved: returns at once.
        assert!(fut.await.is_ok());
    }
}
