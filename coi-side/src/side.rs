//! The email side: wires the codec and the transports to the hub.

use crate::codec::{self, ParseLimits};
use crate::config::{EmailConfig, EmailSecrets, IngestMode, SecurityMode};
use crate::outgoing::{NotSent, Rendered, render};
use crate::receive::{Skip, fnv1a, mail_key, to_events};
use crate::transport::{
    self, Checkpoint, CheckpointStore, ImapConfig, InboundMail, InboundSink, IngestError,
    LmtpConfig, Security, SendError, SmtpConfig, SmtpSender,
};
use async_trait::async_trait;
use bridge_core::store::now_ms;
use bridge_core::{
    Capabilities, Delivered, IngestOutcome, OutboxItem, Router, Side, SideError, SideName, Store,
};
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// Errors starting the email side.
#[derive(Debug, thiserror::Error)]
pub enum EmailSideError {
    /// SMTP client setup failed.
    #[error("SMTP setup: {0}")]
    Smtp(#[from] SendError),
    /// The LMTP listener could not bind.
    #[error("cannot listen for LMTP on {addr}: {source}")]
    Bind {
        /// Address.
        addr: String,
        /// Cause.
        source: std::io::Error,
    },
}

fn security(s: SecurityMode) -> Security {
    match s {
        SecurityMode::Tls => Security::Tls,
        SecurityMode::Starttls => Security::StartTls,
        SecurityMode::Plain => Security::Plain,
    }
}

/// Parse limits from the config.
pub fn limits(cfg: &EmailConfig) -> ParseLimits {
    ParseLimits {
        max_message_bytes: cfg.max_message_bytes,
        max_mime_depth: cfg.max_mime_depth,
        max_attachment_bytes: cfg.max_attachment_bytes,
        ..ParseLimits::default()
    }
}

/// The outbound half: the `Side` the hub drains into SMTP.
pub struct EmailSide {
    cfg: Arc<EmailConfig>,
    smtp: SmtpSender,
}

impl std::fmt::Debug for EmailSide {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailSide")
            .field("mail_domain", &self.cfg.mail_domain)
            .finish()
    }
}

impl EmailSide {
    /// Builds the side (no I/O; SMTP connects on first send).
    pub fn new(cfg: Arc<EmailConfig>, secrets: &EmailSecrets) -> Result<Self, EmailSideError> {
        let mut smtp = SmtpConfig::new(
            cfg.smtp_host.clone(),
            cfg.smtp_port,
            security(cfg.smtp_security),
        );
        smtp.accept_invalid_certs = cfg.accept_invalid_certs;
        if !cfg.smtp_user.is_empty() {
            smtp.user = Some(cfg.smtp_user.clone());
            smtp.password = Some(secrets.smtp_password.clone());
        }
        Ok(Self {
            smtp: SmtpSender::new(smtp)?,
            cfg,
        })
    }
}

#[async_trait]
impl Side for EmailSide {
    fn name(&self) -> SideName {
        SideName::EMAIL
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            edits: true,
            redactions: true,
            reactions: true,
            attachments: true,
            receipts: true,
            auto_portal: false,
            multiple_reactions: false,
        }
    }

    async fn deliver(&self, item: &OutboxItem) -> Result<Delivered, SideError> {
        let mails = match render(item, &self.cfg) {
            Ok(r) => r,
            Err(NotSent::Ignored(why)) => return Err(SideError::Ignored(why)),
        };
        // Read receipts are best effort: one MDN that cannot be built or is refused must neither
        // hold back the others nor tell the chat that "a message" failed.
        let receipts = matches!(item.event, bridge_core::ir::EventKind::Receipt { .. });
        // Build everything before sending anything: a mail that cannot be built fails the item as a whole.
        let mut built = Vec::with_capacity(mails.len());
        for rendered in &mails {
            match codec::build(&rendered.mail) {
                Ok(bytes) => built.push((rendered, bytes)),
                Err(e) if receipts => {
                    tracing::warn!(message_id = %rendered.mail.message_id, error = %e, "Read receipt not built; skipped.");
                }
                Err(e) => {
                    return Err(SideError::Permanent(format!("cannot build the mail: {e}")));
                }
            }
        }
        let mut out = Delivered::default();
        for (n, (rendered, bytes)) in built.into_iter().enumerate() {
            // A retry resends earlier mails of the item with the same Message-IDs; receivers dedupe them.
            let sent = match self.send(rendered, &bytes).await {
                Err(SideError::Permanent(e)) if receipts => {
                    tracing::warn!(message_id = %rendered.mail.message_id, error = %e, "Read receipt refused; skipped.");
                    continue;
                }
                r => r?,
            };
            if !receipts {
                out.notices.extend(sent);
            }
            let part = if n == 0 {
                String::new()
            } else {
                format!("mail{n}")
            };
            out.links.push((part, rendered.mail.message_id.clone()));
            for link in &rendered.puppet_links {
                if !out.puppet_links.contains(link) {
                    out.puppet_links.push(link.clone());
                }
            }
        }
        Ok(out)
    }
}

impl EmailSide {
    /// Sends one mail; returns the recipients that refused it when others took it.
    async fn send(&self, rendered: &Rendered, bytes: &[u8]) -> Result<Vec<String>, SideError> {
        match self
            .smtp
            .send(&rendered.envelope_from, &rendered.rcpt_to, bytes)
            .await
        {
            Ok(()) => {
                tracing::debug!(message_id = %rendered.mail.message_id, rcpts = rendered.rcpt_to.len(), "Mail sent.");
                Ok(Vec::new())
            }
            // One refused recipient must not keep the mail from the others: send to each alone.
            Err(e) if e.is_permanent() && rendered.rcpt_to.len() > 1 => {
                let mut refused = Vec::new();
                for rcpt in &rendered.rcpt_to {
                    match self
                        .smtp
                        .send(&rendered.envelope_from, std::slice::from_ref(rcpt), bytes)
                        .await
                    {
                        Ok(()) => {}
                        Err(e) if e.is_permanent() => refused.push(format!("{rcpt}: {e}")),
                        Err(e) => return Err(SideError::retry(e.to_string())),
                    }
                }
                if refused.len() == rendered.rcpt_to.len() {
                    return Err(SideError::Permanent(refused.join("; ")));
                }
                tracing::warn!(message_id = %rendered.mail.message_id, ?refused, "Some recipients refused the mail.");
                Ok(refused)
            }
            Err(e) if e.is_permanent() => Err(SideError::Permanent(e.to_string())),
            Err(e) => Err(SideError::retry(e.to_string())),
        }
    }
}

/// The inbound half: parses mail and hands it to the router; keeps what it cannot place.
pub struct MailSink {
    cfg: Arc<EmailConfig>,
    router: Router,
    limits: ParseLimits,
}

impl MailSink {
    /// A sink feeding `router`.
    pub fn new(cfg: Arc<EmailConfig>, router: Router) -> Self {
        let limits = limits(&cfg);
        Self {
            cfg,
            router,
            limits,
        }
    }

    async fn keep(&self, key: &str, reason: &str, raw: &[u8]) -> Result<(), IngestError> {
        tracing::warn!(message_id = %key, %reason, "Mail kept in quarantine.");
        self.router
            .store()
            .quarantine(SideName::EMAIL, key, reason, Some(raw))
            .await
            .map(|_| ())
            .map_err(|e| IngestError::Transient(e.to_string()))
    }
}

/// What replaying a kept mail gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Replayed {
    /// It is placed now (or was already); its quarantine entries are gone.
    Placed {
        /// The mail's key (Message-ID).
        message_id: String,
    },
    /// Still kept, for these reasons.
    StillKept {
        /// The mail's key (Message-ID).
        message_id: String,
        /// Why, newest reasons included.
        reasons: Vec<String>,
    },
}

impl MailSink {
    /// Runs a kept mail through the inbound pipeline again, with today's config and code (after
    /// `allow_new_chats_from` was widened, say). When it is placed, its quarantine entries are
    /// removed; otherwise they stay (a new reason is added, the same one is not repeated).
    pub async fn replay(&self, id: i64) -> Result<Replayed, IngestError> {
        let store = self.router.store();
        let transient = |e: bridge_core::StoreError| IngestError::Transient(e.to_string());
        let (entry, raw) = store.quarantine_entry(id).await.map_err(transient)?;
        if entry.side != SideName::EMAIL.as_str() {
            return Err(IngestError::Permanent(format!(
                "entry {id} came from the {} side; only mail can be replayed",
                entry.side
            )));
        }
        let Some(raw) = raw else {
            return Err(IngestError::Permanent(format!(
                "entry {id} kept no raw mail"
            )));
        };
        self.accept(InboundMail {
            raw,
            source: crate::transport::InboundSource::Replay { quarantine_id: id },
        })
        .await?;
        let placed = store
            .message_by_link(SideName::EMAIL, &entry.remote_id)
            .await
            .map_err(transient)?;
        if placed.is_some() {
            store
                .quarantine_remove(SideName::EMAIL, &entry.remote_id)
                .await
                .map_err(transient)?;
            tracing::info!(quarantine_id = id, message_id = %entry.remote_id, "Kept mail placed on replay.");
            return Ok(Replayed::Placed {
                message_id: entry.remote_id,
            });
        }
        let reasons = store
            .quarantine_reasons(SideName::EMAIL, &entry.remote_id)
            .await
            .map_err(transient)?;
        Ok(Replayed::StillKept {
            message_id: entry.remote_id,
            reasons,
        })
    }
}

/// A stable key for a mail that does not parse.
fn raw_key(raw: &[u8]) -> String {
    format!("unparsable.{:016x}", fnv1a(raw))
}

#[async_trait]
impl InboundSink for MailSink {
    async fn accept(&self, mail: InboundMail) -> Result<(), IngestError> {
        let raw = &mail.raw;
        let parsed = match codec::parse(raw, &self.limits) {
            Ok(p) => p,
            Err(e) => {
                // Kept, and acknowledged: retrying cannot make it parse.
                return self
                    .keep(&raw_key(raw), &format!("cannot parse: {e}"), raw)
                    .await;
            }
        };
        let key = mail_key(&parsed, raw);
        // Keep the sender's Autocrypt key (only when it is for the From address, as Autocrypt requires).
        if let (Some(ac), Some(from)) = (&parsed.autocrypt, &parsed.from)
            && ac.addr.eq_ignore_ascii_case(&from.addr)
            && !ac.keydata.is_empty()
        {
            let ts = parsed.date_unix.unwrap_or_else(|| now_ms() / 1000);
            self.router
                .store()
                .save_autocrypt(
                    &from.addr.to_ascii_lowercase(),
                    &ac.keydata,
                    ac.prefer_encrypt_mutual,
                    ts,
                )
                .await
                .map_err(|e| IngestError::Transient(e.to_string()))?;
        }
        for w in &parsed.warnings {
            tracing::info!(message_id = %key, warning = %w, "Mail parsed with a warning.");
        }
        let events = match to_events(&parsed, raw, &self.cfg, now_ms()) {
            Ok(ev) => ev,
            Err(Skip::OwnAddress) => {
                let known = self
                    .router
                    .store()
                    .message_by_link(SideName::EMAIL, &key)
                    .await
                    .map_err(|e| IngestError::Transient(e.to_string()))?;
                if known.is_some() {
                    tracing::debug!(message_id = %key, "Echo of our own mail dropped.");
                    return Ok(());
                }
                return self
                    .keep(&key, "From is a bridge address, but the bridge did not send this mail (forged sender)", raw)
                    .await;
            }
            Err(Skip::Keep(reason)) => return self.keep(&key, &reason, raw).await,
        };
        for ev in events {
            match self.router.ingest(ev).await {
                Ok(IngestOutcome::Committed {
                    chat,
                    message,
                    new_chat,
                }) => {
                    tracing::info!(message_id = %key, %chat, %message, new_chat, "Mail committed.");
                }
                Ok(IngestOutcome::Duplicate { .. }) => {
                    tracing::debug!(message_id = %key, "Duplicate mail ignored.")
                }
                Ok(IngestOutcome::Quarantined { reason }) => {
                    tracing::info!(message_id = %key, %reason, "Mail kept.")
                }
                Err(e) => return Err(IngestError::Transient(e.to_string())),
            }
        }
        Ok(())
    }
}

/// IMAP checkpoints kept in the store.
pub struct StoreCheckpoints {
    store: Store,
    prefix: String,
}

impl StoreCheckpoints {
    /// Checkpoints keyed by `<user>/<mailbox>`.
    pub fn new(store: Store, user: &str) -> Self {
        Self {
            store,
            prefix: format!("{user}/"),
        }
    }
}

#[async_trait]
impl CheckpointStore for StoreCheckpoints {
    async fn load(&self, mailbox: &str) -> Result<Option<Checkpoint>, IngestError> {
        let cp = self
            .store
            .checkpoint(&format!("{}{mailbox}", self.prefix))
            .await
            .map_err(|e| IngestError::Transient(e.to_string()))?;
        Ok(cp.map(|(v, u)| Checkpoint {
            uidvalidity: u32::try_from(v).unwrap_or(0),
            last_uid: u32::try_from(u).unwrap_or(0),
        }))
    }

    async fn save(&self, mailbox: &str, cp: Checkpoint) -> Result<(), IngestError> {
        self.store
            .save_checkpoint(
                &format!("{}{mailbox}", self.prefix),
                i64::from(cp.uidvalidity),
                i64::from(cp.last_uid),
            )
            .await
            .map_err(|e| IngestError::Transient(e.to_string()))
    }
}

/// Runs the configured ingest (IMAP and/or LMTP) until `shutdown` completes.
pub async fn run_ingest(
    cfg: Arc<EmailConfig>,
    secrets: EmailSecrets,
    router: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), EmailSideError> {
    let sink: Arc<dyn InboundSink> = Arc::new(MailSink::new(cfg.clone(), router.clone()));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };
    let mut tasks = tokio::task::JoinSet::new();
    if matches!(cfg.ingest, IngestMode::Lmtp | IngestMode::Both) {
        let listener = tokio::net::TcpListener::bind(&cfg.lmtp_listen)
            .await
            .map_err(|source| EmailSideError::Bind {
                addr: cfg.lmtp_listen.clone(),
                source,
            })?;
        tracing::info!(addr = %cfg.lmtp_listen, "LMTP listener ready.");
        let mut lcfg = LmtpConfig::new(
            cfg.mail_domain.clone(),
            vec![cfg.mail_domain.clone(), domain_of(&cfg.bridge_address)],
        );
        lcfg.max_message_bytes = cfg.max_message_bytes;
        let sink = sink.clone();
        let stop = stopped(stop_rx.clone());
        tasks.spawn(async move {
            transport::serve(listener, lcfg, sink, stop).await;
        });
    }
    if matches!(cfg.ingest, IngestMode::Imap | IngestMode::Both) {
        let mut icfg = ImapConfig::new(
            cfg.imap_host.clone(),
            cfg.imap_port,
            security(cfg.imap_security),
            cfg.imap_user.clone(),
            secrets.imap_password.clone(),
        );
        icfg.accept_invalid_certs = cfg.accept_invalid_certs;
        icfg.mailbox = cfg.imap_mailbox.clone();
        icfg.fetch_existing = cfg.imap_fetch_existing;
        let checkpoints: Arc<dyn CheckpointStore> = Arc::new(StoreCheckpoints::new(
            router.store().clone(),
            &cfg.imap_user,
        ));
        let sink = sink.clone();
        let stop = stopped(stop_rx.clone());
        tasks.spawn(async move {
            run_ingest_imap(icfg, sink, checkpoints, stop).await;
        });
    }
    shutdown.await;
    let _ = stop_tx.send(true);
    let deadline = tokio::time::sleep(Duration::from_secs(10));
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            r = tasks.join_next() => if r.is_none() { break },
            _ = &mut deadline => { tasks.abort_all(); break; }
        }
    }
    Ok(())
}

async fn run_ingest_imap(
    icfg: ImapConfig,
    sink: Arc<dyn InboundSink>,
    checkpoints: Arc<dyn CheckpointStore>,
    stop: impl Future<Output = ()> + Send,
) {
    if let Err(e) = transport::run_ingest(icfg, sink, checkpoints, stop).await {
        tracing::error!(error = %e, "IMAP ingest stopped.");
    }
}

fn domain_of(addr: &str) -> String {
    addr.rsplit_once('@')
        .map(|(_, d)| d.to_ascii_lowercase())
        .unwrap_or_default()
}
