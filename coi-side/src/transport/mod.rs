//! Network transports of the email side: IMAP IDLE ingest, an LMTP listener and SMTP submission.
//!
//! The transports know nothing about the hub. Inbound mail is handed to an [`InboundSink`] as raw
//! bytes plus where it came from; the sink parses, dedupes and commits it (DESIGN §3 steps 1–2),
//! and only once [`InboundSink::accept`] has returned is the input acknowledged (step 3): the IMAP
//! checkpoint advances, the LMTP client gets its `250`.
//!
//! **Architecture Invariant:** no transport acknowledges mail (IMAP checkpoint, LMTP 250) before
//! the sink's `accept` returned `Ok` (or `Permanent`, meaning the sink durably kept the reject).
//!
//! **Architecture Invariant:** the IMAP ingest never changes the mailbox: it fetches with
//! `BODY.PEEK[]`, sets no flags and expunges nothing.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use futures::FutureExt as _;

pub mod imap;
pub mod lmtp;
pub mod smtp;
mod tls;

pub use imap::{ImapConfig, ImapError, run_ingest};
pub use lmtp::{LmtpConfig, serve};
pub use smtp::{SendError, SmtpConfig, SmtpSender};

/// Where inbound mail goes.
#[async_trait::async_trait]
pub trait InboundSink: Send + Sync + 'static {
    /// Takes one mail. Returns only once the mail is durably committed (`Ok`), or durably kept as
    /// rejected (`Err(Permanent)`). `Err(Transient)` means nothing was kept: the transport
    /// offers the same mail again later.
    ///
    /// The same mail may be offered more than once (at-least-once delivery): after a crash
    /// between commit and checkpoint, after a UIDVALIDITY change, or once per puppet recipient.
    /// The sink dedupes (by Message-ID).
    async fn accept(&self, mail: InboundMail) -> Result<(), IngestError>;
}

/// One inbound mail, exactly as received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboundMail {
    /// The RFC 5322 message (IMAP `BODY[]`, or LMTP DATA after dot-unstuffing, CRLF line ends).
    pub raw: Vec<u8>,
    /// Where the mail came from.
    pub source: InboundSource,
}

/// Where an [`InboundMail`] came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InboundSource {
    /// Fetched from an IMAP mailbox.
    Imap {
        /// Mailbox name, e.g. `INBOX`.
        mailbox: String,
        /// The mailbox's UIDVALIDITY at fetch time.
        uidvalidity: u32,
        /// The message's UID.
        uid: u32,
    },
    /// Delivered to the LMTP listener.
    Lmtp {
        /// Envelope sender (`MAIL FROM`), empty for the null sender `<>`.
        mail_from: String,
        /// Envelope recipients (`RCPT TO`) that were accepted, in order.
        rcpt_to: Vec<String>,
    },
    /// Taken from the quarantine again (`coi-bridge quarantine --replay`).
    Replay {
        /// The quarantine entry.
        quarantine_id: i64,
    },
}

/// Why a sink or checkpoint store did not take something.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum IngestError {
    /// Try again later (database down, lock timeout…). Nothing was kept.
    #[error("transient: {0}")]
    Transient(String),
    /// Never going to work (and, for a sink, the mail was durably kept as rejected).
    #[error("permanent: {0}")]
    Permanent(String),
}

/// IMAP checkpoints (per mailbox: UIDVALIDITY and last committed UID), stored by the hub.
#[async_trait::async_trait]
pub trait CheckpointStore: Send + Sync + 'static {
    /// The checkpoint of `mailbox`, if any was saved.
    async fn load(&self, mailbox: &str) -> Result<Option<Checkpoint>, IngestError>;
    /// Durably stores the checkpoint of `mailbox`.
    async fn save(&self, mailbox: &str, cp: Checkpoint) -> Result<(), IngestError>;
}

/// Position of the IMAP ingest in one mailbox: every UID `<= last_uid` under `uidvalidity` has
/// been accepted by the sink.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// UIDVALIDITY of the mailbox the UIDs refer to.
    pub uidvalidity: u32,
    /// Highest UID accepted by the sink (0: none).
    pub last_uid: u32,
}

/// How a client connection is secured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Security {
    /// Implicit TLS from the first byte (IMAP 993, SMTP 465).
    Tls,
    /// Plain connection upgraded with STARTTLS before login (IMAP 143, SMTP 587); fails if the
    /// server refuses the upgrade.
    StartTls,
    /// No TLS at all. Only for loopback or otherwise trusted links.
    Plain,
}

/// A shutdown future that can be awaited repeatedly and polled without blocking.
pub(crate) struct Shutdown<F> {
    fut: Pin<Box<F>>,
    fired: bool,
}

impl<F: Future<Output = ()>> Shutdown<F> {
    pub(crate) fn new(fut: F) -> Self {
        Self {
            fut: Box::pin(fut),
            fired: false,
        }
    }

    /// Resolves once shutdown was requested (at once if it already was). Cancel-safe.
    pub(crate) async fn wait(&mut self) {
        if !self.fired {
            (&mut self.fut).await;
            self.fired = true;
        }
    }

    /// True if shutdown was requested; never blocks.
    pub(crate) fn is_fired(&mut self) -> bool {
        if !self.fired && (&mut self.fut).now_or_never().is_some() {
            self.fired = true;
        }
        self.fired
    }
}

/// Exponential backoff without jitter: `min, 2·min, 4·min, …` capped at `max`.
#[derive(Debug)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        let min = min.max(Duration::from_millis(1));
        let max = max.max(min);
        Self {
            min,
            max,
            next: min,
        }
    }

    /// The delay to wait now; doubles the following one.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        d
    }

    pub(crate) fn reset(&mut self) {
        self.next = self.min;
    }
}

/// Makes server-provided or error text safe to log in one line or put into a protocol reply:
/// printable ASCII only, at most `max` characters.
pub(crate) fn one_line(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max));
    for c in text.chars() {
        if out.len() >= max {
            break;
        }
        out.push(if c.is_ascii_graphic() || c == ' ' {
            c
        } else {
            ' '
        });
    }
    out.trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(100), Duration::from_millis(350));
        let got: Vec<u128> = (0..5).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(got, vec![100, 200, 350, 350, 350]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(100));
    }

    #[test]
    fn one_line_strips_controls_and_truncates() {
        assert_eq!(one_line("a\r\nb\tc", 100), "a  b c");
        assert_eq!(one_line("abcdef", 3), "abc");
        assert_eq!(one_line("héllo", 10), "h llo");
    }

    #[tokio::test]
    async fn shutdown_is_sticky() {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let mut s = Shutdown::new(async move {
            let _ = rx.await;
        });
        assert!(!s.is_fired());
        let _ = tx.send(());
        s.wait().await;
        assert!(s.is_fired());
        s.wait().await; // does not poll the completed future again
    }
}
